package org.grpo4j.internal.tokenizer;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;
import org.grpo4j.internal.backend.CudaRuntime;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * The tokenizer on a host where DJL sees a GPU (docs/gpu-runs.md, 2026-11-28, "Failure 2"): DJL then picks a CUDA
 * build of its native tokenizers library, which its jar does not hold, and downloads it, so the first GPU runs could
 * not load a tokenizer (GPU hosts reach no network). {@link Tokenizer}'s static initializer chooses the jar's CPU
 * build; this test loads a tokenizer with a GPU visible to DJL and checks, in the process's own map of loaded
 * libraries, that the tokenizers library DJL loaded is its CPU build (so it holds however many tokenizers this JVM
 * loaded before, and whatever cache directory DJL uses).
 *
 * <p>gpu-tagged: it means something only where DJL finds a CUDA runtime with a device (a GPU host, or
 * {@code tools/kernel-emu --jvm}, whose emulated runtime DJL loads as {@code libcudart.so}). Linux only (it reads
 * /proc/self/maps; the GPU hosts are Linux).
 */
@Tag("gpu")
class TokenizerOnGpuHostTest {
    @Test
    void loadsTheJarsCpuBuildWhereDjlSeesAGpu() throws Exception {
        CudaRuntime.Availability a = CudaRuntime.probe();
        assumeTrue(a.available(), () -> "skipped: no CUDA device (" + a.reason() + ")");
        int seen = ai.djl.util.cuda.CudaUtils.getGpuCount();
        assumeTrue(seen > 0, "skipped: DJL finds no GPU through its own CUDA runtime lookup (libcudart.so), so the case cannot arise");
        for (String f : Tokenizer.FLAVORS) {
            assumeTrue(System.getenv(f) == null, () -> "skipped: the environment chooses DJL's flavor (" + f + "=" + System.getenv(f) + ")");
            String set = System.getProperty(f);
            assumeTrue(set == null || set.equals("cpu"), () -> "skipped: a system property chooses DJL's flavor (" + f + "=" + set + ")");
        }
        Path maps = Path.of("/proc/self/maps");
        assumeTrue(Files.isReadable(maps), "skipped: no /proc/self/maps to read the loaded libraries from");

        try (Tokenizer t = Tokenizer.load(Tokenizer.extractBundledTiny())) {
            assertTrue(t.encode("Tom has 2 pens.").length > 0);
        }
        for (String f : Tokenizer.FLAVORS) assertEquals("cpu", System.getProperty(f), f);
        List<String> libs;
        try (Stream<String> lines = Files.lines(maps)) {
            libs = lines.map(l -> l.substring(l.lastIndexOf(' ') + 1))
                    .filter(l -> l.endsWith(".so") && l.substring(l.lastIndexOf('/') + 1).contains("tokenizers")).distinct().toList();
        }
        assertFalse(libs.isEmpty(), "no tokenizers library among the loaded libraries (/proc/self/maps)");
        for (String l : libs)
            assertTrue(l.contains("-cpu-") || l.contains("/cpu/"), () -> "DJL saw " + seen + " GPU(s) and loaded " + l + ", not its cpu build");
    }
}
