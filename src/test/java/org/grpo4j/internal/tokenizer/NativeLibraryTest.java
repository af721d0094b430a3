package org.grpo4j.internal.tokenizer;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The tokenizers library loads whatever DJL's cache holds: here a cache in which a JVM that saw a GPU of compute
 * capability 9.0 had extracted the library one level deeper ({@code <version>-cpu-<platform>/90/}), which made every
 * later JVM without a GPU fail ("Can't load library: .../cpu-linux-x86_64/libtokenizers.so": DJL's move of its
 * extraction onto the existing directory did nothing). Each case runs in a JVM of its own (DJL loads its library once
 * a process), with DJL_CACHE_DIR in a temporary directory.
 */
class NativeLibraryTest {
    /** The child: loads the bundled tokenizer, prints the tokenizers library the process mapped. */
    public static void main(String[] args) throws Exception {
        try (Tokenizer t = Tokenizer.load(Tokenizer.extractBundledTiny())) {
            if (t.encode("Tom has 2 pens.").length == 0) throw new AssertionError("no ids");
        }
        try (var lines = Files.lines(Path.of("/proc/self/maps"))) {
            lines.map(l -> l.substring(l.lastIndexOf(' ') + 1)).filter(l -> l.endsWith(System.mapLibraryName("tokenizers"))).distinct()
                    .forEach(l -> System.out.println("loaded " + l));
        }
    }

    static String run(Path cache, String... props) throws Exception {
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(), "-cp",
                System.getProperty("java.class.path"), "-DDJL_CACHE_DIR=" + cache));
        cmd.addAll(List.of(props));
        cmd.add(NativeLibraryTest.class.getName());
        ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true);
        pb.environment().remove("ENGINE_CACHE_DIR");
        pb.environment().remove("RUST_LIBRARY_PATH");
        Process p = pb.start();
        String out = new String(p.getInputStream().readAllBytes());
        assertTrue(p.waitFor(120, TimeUnit.SECONDS), "the child did not finish");
        assertEquals(0, p.exitValue(), out);
        return out;
    }

    static String djlDir() throws Exception {
        java.util.Properties v = new java.util.Properties();
        try (var in = ai.djl.huggingface.tokenizers.HuggingFaceTokenizer.class.getClassLoader().getResourceAsStream("native/lib/tokenizers.properties")) {
            v.load(in);
        }
        return v.getProperty("version") + "-cpu-" + Tokenizer.NativeLibrary.platform();
    }

    @Test
    void aCacheWhereAGpuJvmExtractedTheLibraryStillLoads(@TempDir Path tmp) throws Exception {
        assumeTrue(Files.isReadable(Path.of("/proc/self/maps")) && Tokenizer.NativeLibrary.platform() != null, "skipped: Linux with DJL's build only");
        Path gpuCopy = Files.createDirectories(tmp.resolve("tokenizers").resolve(djlDir()).resolve("90"));
        Files.writeString(gpuCopy.resolve(System.mapLibraryName("tokenizers")), "the GPU JVM's copy (unused here)");
        String out = run(tmp);
        Path mine = tmp.resolve("tokenizers").resolve("grpo4j-" + djlDir()).resolve(System.mapLibraryName("tokenizers"));
        assertTrue(out.contains("loaded " + mine), out);
        // a second process takes the copy that is there (the same file, not rewritten)
        long written = Files.getLastModifiedTime(mine).toMillis();
        assertTrue(run(tmp).contains("loaded " + mine));
        assertEquals(written, Files.getLastModifiedTime(mine).toMillis());
        try (var files = Files.list(mine.getParent())) {
            assertEquals(List.of(mine), files.toList(), "no temporary file left beside it");
        }
    }

    @Test
    void aLibraryPathTheUserSetIsKept(@TempDir Path tmp) throws Exception {
        assumeTrue(Files.isReadable(Path.of("/proc/self/maps")) && Tokenizer.NativeLibrary.platform() != null, "skipped: Linux with DJL's build only");
        Path own = Files.createDirectories(tmp.resolve("own"));
        Path lib = own.resolve(System.mapLibraryName("tokenizers"));
        try (var in = ai.djl.huggingface.tokenizers.HuggingFaceTokenizer.class.getClassLoader()
                .getResourceAsStream("native/lib/" + Tokenizer.NativeLibrary.platform() + "/cpu/" + System.mapLibraryName("tokenizers"))) {
            Files.copy(in, lib);
        }
        String out = run(tmp.resolve("cache"), "-DRUST_LIBRARY_PATH=" + lib);
        assertTrue(out.contains("loaded " + lib), out);
        assertFalse(Files.exists(tmp.resolve("cache/tokenizers")), "nothing extracted into the cache");
    }
}
