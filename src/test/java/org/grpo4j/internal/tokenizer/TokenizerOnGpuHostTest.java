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
import org.junit.jupiter.api.io.TempDir;

/**
 * The tokenizer on a host where DJL sees a GPU (docs/gpu-runs.md, 2026-11-28, "Failure 2"): DJL then picks a CUDA
 * build of its native tokenizers library, which its jar does not hold, and downloads it, so the first GPU runs could
 * not load a tokenizer (GPU hosts reach no network). {@link Tokenizer}'s static initializer chooses the jar's CPU
 * build; this test loads a tokenizer with a GPU visible to DJL and an empty DJL cache, and checks that the CPU build
 * was taken from the jar.
 *
 * <p>gpu-tagged: it means something only where DJL finds a CUDA runtime with a device (a GPU host, or
 * {@code tools/kernel-emu --jvm}, whose emulated runtime DJL loads as {@code libcudart.so}). It must be the first
 * tokenizer load of its JVM (DJL loads its native library once, with the cache directory of that moment), as
 * tools/gpu-check runs it: each class in its own JVM.
 */
@Tag("gpu")
class TokenizerOnGpuHostTest {
    @Test
    void loadsTheJarsCpuBuildWhereDjlSeesAGpu(@TempDir Path tmp) throws Exception {
        CudaRuntime.Availability a = CudaRuntime.probe();
        assumeTrue(a.available(), () -> "skipped: no CUDA device (" + a.reason() + ")");
        int seen = ai.djl.util.cuda.CudaUtils.getGpuCount();
        assumeTrue(seen > 0, "skipped: DJL finds no GPU through its own CUDA runtime lookup (libcudart.so), so the case cannot arise");
        for (String f : Tokenizer.FLAVORS)
            assumeTrue(System.getenv(f) == null, () -> "skipped: the environment chooses DJL's flavor (" + f + "=" + System.getenv(f) + ")");

        Path cache = tmp.resolve("djl-cache");
        System.setProperty("DJL_CACHE_DIR", cache.toString());
        try (Tokenizer t = Tokenizer.load(Tokenizer.extractBundledTiny())) {
            assertTrue(t.encode("Tom has 2 pens.").length > 0);
        } finally {
            System.clearProperty("DJL_CACHE_DIR");
        }
        for (String f : Tokenizer.FLAVORS) assertEquals("cpu", System.getProperty(f), f);
        Path libs = cache.resolve("tokenizers");
        assertTrue(Files.isDirectory(libs), () -> "DJL loaded its library from another cache than " + cache
                + " (not this JVM's first tokenizer load?)");
        try (Stream<Path> s = Files.list(libs)) {
            List<String> builds = s.map(p -> p.getFileName().toString()).toList();
            assertFalse(builds.isEmpty(), "no DJL build in " + libs);
            for (String b : builds) assertTrue(b.contains("-cpu-"), () -> "DJL " + seen + " GPU(s): took build " + b + " in " + libs);
        }
    }
}
