package org.grpo4j.internal.cli;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Files;
import java.nio.file.Path;
import org.grpo4j.internal.model.LlamaConfig;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * init-model's Llama presets: llama-3.2-1b, llama-3.1-8b and llama-3.1-8b-4l write their config with --config-only;
 * without it, random weights are refused with a one-line reason when they cannot fit (the 8B: the CPU backend's
 * tensor limit; the others: the Java heap of this test JVM, -Xmx6g, named with the heap needed), and nothing is
 * written.
 */
class InitModelPresetsTest {

    @Test
    void configOnlyWritesEachPreset(@TempDir Path tmp) throws Exception {
        for (String p : LlamaConfig.NAMED_PRESETS) {
            Path out = tmp.resolve(p);
            CliTest.Run r = CliTest.run("init-model", "--preset", p, "--config-only", "--out", out.toString());
            assertEquals(0, r.code(), r.err());
            assertEquals(LlamaConfig.preset(p), LlamaConfig.read(out), p);
            try (var s = Files.list(out)) {
                assertEquals(1, s.count(), p + ": config.json only");
            }
        }
        assertEquals(4, LlamaConfig.read(tmp.resolve("llama-3.1-8b-4l")).numLayers());
    }

    @Test
    void weightsThatCannotFitAreRefusedBeforeAnythingIsWritten(@TempDir Path tmp) {
        CliTest.Run r = CliTest.run("init-model", "--preset", "llama-3.1-8b", "--out", tmp.resolve("a").toString());
        assertEquals(2, r.code());
        assertTrue(r.err().contains("--preset llama-3.1-8b needs --config-only (8.03B random weights"), r.err());
        long heap = Runtime.getRuntime().maxMemory();
        for (String p : new String[] {"llama-3.2-1b", "llama-3.1-8b-4l"}) {
            org.junit.jupiter.api.Assumptions.assumeTrue(heap < 10L << 30, "this JVM's heap could hold the weights");
            r = CliTest.run("init-model", "--preset", p, "--out", tmp.resolve(p).toString());
            assertEquals(2, r.code(), r.err());
            assertTrue(r.err().contains("--preset " + p + " with random weights needs") && r.err().contains("Java heap")
                    && r.err().contains("use --config-only"), r.err());
            assertEquals(1, r.err().strip().lines().count(), r.err());
            assertFalse(Files.exists(tmp.resolve(p)));
        }
    }

    /**
     * The output path is taken as the directory it names: "new/." is the directory new (it was refused as existing,
     * leaving an empty new behind), and a link to an empty directory is written through (the link was replaced by the
     * model, the directory it pointed at left empty).
     */
    @Test
    void theOutputIsTheDirectoryThePathNames(@TempDir Path tmp) throws Exception {
        CliTest.Run r = CliTest.run("init-model", "--out", tmp.resolve("new") + "/.");
        assertEquals(0, r.code(), r.err());
        assertTrue(Files.isRegularFile(tmp.resolve("new/model.safetensors")), r.err());
        Path real = Files.createDirectories(tmp.resolve("big-disk/m")), link = Files.createSymbolicLink(tmp.resolve("link"), real);
        r = CliTest.run("init-model", "--out", link.toString());
        assertEquals(0, r.code(), r.err());
        assertTrue(Files.isSymbolicLink(link), "the link is kept");
        assertTrue(Files.isRegularFile(real.resolve("model.safetensors")), "the model is where the link points");
    }

    /** A tokenizer without an eos_token is refused naming it, not written into a model grpo4j refuses to read back. */
    @Test
    void aTokenizerWithoutAnEosTokenIsRefusedNamingIt(@TempDir Path tmp) throws Exception {
        Path tok = Files.createDirectories(tmp.resolve("tok"));
        Files.copy(Path.of("examples/tiny-tokenizer/tokenizer.json"), tok.resolve("tokenizer.json"));
        Files.writeString(tok.resolve("tokenizer_config.json"), Files.readString(Path.of("examples/tiny-tokenizer/tokenizer_config.json"))
                .replace("\"eos_token\"", "\"unused_eos_token\""));
        Path out = tmp.resolve("m");
        CliTest.Run r = CliTest.run("init-model", "--out", out.toString(), "--tokenizer", tok.toString());
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains(tok + ": the tokenizer names no eos_token"), r.err());
        assertFalse(Files.exists(out.resolve("config.json")), "nothing written");
    }

    @Test
    void unknownPresetListsTheValidOnes(@TempDir Path tmp) {
        CliTest.Run r = CliTest.run("init-model", "--preset", "llama-70b", "--out", tmp.resolve("x").toString());
        assertEquals(2, r.code());
        assertTrue(r.err().contains("unknown preset \"llama-70b\" (expected tiny, llama-3.2-1b, llama-3.1-8b, llama-3.1-8b-4l)"), r.err());
    }
}
