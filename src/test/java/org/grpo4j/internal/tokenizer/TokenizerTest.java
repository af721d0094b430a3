package org.grpo4j.internal.tokenizer;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class TokenizerTest {
    static final Path TINY = Path.of("examples/tiny-tokenizer");
    static final Path LLAMA3 = Path.of("../shared/data/llama3-tokenizer");

    static final List<String> CORPUS = List.of(
            "Mia has 3 apples and gets 4 more. How many apples does Mia have?",
            "Grüße aus München! Ça va? ¿Qué tal? Привет, мир. こんにちは世界。 你好，世界！ 안녕하세요",
            "emoji: 👩‍👩‍👧‍👦 🚀✨ 🇯🇵 and ligatures ﬁ ﬂ, superscripts x² ³√8, Arabic-Indic ٣٤٥ digits",
            "odd   whitespace\t\ttabs\n\n\nnewlines\r\n  trailing   \u00a0nbsp\u00a0\u00a0 and \u2003em\u2003\u2003spaces ",
            "code: for (int i = 0; i < n; i++) { sum += a[i]; } // 12345678901234",
            "<|user|>\nWhat is 2+2?\n<|assistant|>\n4<|end_of_text|>",
            "", " ", "\n", "a");

    static Tokenizer tiny;

    @BeforeAll
    static void load() throws Exception { tiny = Tokenizer.load(TINY); }

    @AfterAll
    static void close() { tiny.close(); }

    @Test
    void tinyTokenizerRoundTripsEverything() {
        for (String s : CORPUS) {
            int[] ids = tiny.encode(s);
            assertEquals(s, tiny.decode(ids, false), "round trip of " + s);
            for (int id : ids) assertTrue(id >= 0 && id < tiny.vocabSize());
        }
    }

    @Test
    void theNativeLibraryIsTheJarsCpuBuildEvenWhereThereIsAGpu() {
        // DJL would pick a CUDA build on a GPU host and download it (the first GPU loan's demo failed so); with the
        // flavor set it takes the CPU build from its jar (ai.djl.huggingface.tokenizers.jni.LibUtils, DJL 0.38)
        for (String f : Tokenizer.FLAVORS) {
            assumeTrue(System.getenv(f) == null, "the user set " + f);
            assertEquals("cpu", System.getProperty(f), f);
        }
        assertNull(System.getProperty("ai.djl.offline"), "DJL's global offline mode is the application's choice");
    }

    @Test
    void aLoadFailureNamesEveryCauseOnce() {
        Exception inner = new java.io.IOException("Cannot download jni files: https://x/libtokenizers.so");
        RuntimeException outer = new RuntimeException("Failed to load Huggingface native library.", inner);
        assertEquals("Failed to load Huggingface native library.: Cannot download jni files: https://x/libtokenizers.so",
                Tokenizer.causes(outer));
        // a wrapper that repeats its cause's text, and a cause without a message
        RuntimeException repeat = new RuntimeException("java.io.IOException: disk", new java.io.IOException("disk"));
        assertEquals("java.io.IOException: disk", Tokenizer.causes(repeat));
        assertEquals("IllegalStateException", Tokenizer.causes(new IllegalStateException()));
    }

    @Test
    void specialTokensAreSingleIdsAndSkippable() {
        int eos = tiny.eosId(), bos = tiny.bosId(), pad = tiny.padId();
        assertTrue(eos >= 0 && bos >= 0 && pad >= 0);
        assertEquals(3, java.util.Set.of(eos, bos, pad).size());
        assertArrayEquals(new int[] {eos}, tiny.encode("<|end_of_text|>"));
        assertTrue(tiny.isSpecial(eos) && !tiny.isSpecial(tiny.encode("a")[0]));
        int[] ids = tiny.encode("The answer is 7.<|end_of_text|>");
        assertEquals(eos, ids[ids.length - 1]);
        assertEquals("The answer is 7.", tiny.decode(ids, true));
        assertEquals("The answer is 7.<|end_of_text|>", tiny.decode(ids, false));
    }

    @Test
    void digitsSplitInGroupsOfAtMostThree() {
        // the Llama 3 pre-tokenizer regex \p{N}{1,3}: no token spans more than three digits
        int[] ids = tiny.encode("1234567");
        StringBuilder joined = new StringBuilder();
        for (int id : ids) {
            String piece = tiny.decode(new int[] {id}, false);
            assertTrue(piece.length() <= 3, piece);
            joined.append(piece);
        }
        assertEquals("1234567", joined.toString());
    }

    @Test
    void badIdsAndFilesGiveClearErrors(@TempDir Path tmp) throws Exception {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> tiny.decode(new int[] {1, 99999}, false));
        assertTrue(e.getMessage().contains("99999") && e.getMessage().contains("position 1"), e.getMessage());
        java.io.IOException io = assertThrows(java.io.IOException.class, () -> Tokenizer.load(tmp));
        assertTrue(io.getMessage().contains("tokenizer.json"), io.getMessage());
        Files.writeString(tmp.resolve("tokenizer.json"), "{not json");
        io = assertThrows(java.io.IOException.class, () -> Tokenizer.load(tmp));
        assertTrue(io.getMessage().contains("tokenizer.json") && io.getMessage().contains("not valid JSON"), io.getMessage());
        Files.copy(TINY.resolve("tokenizer.json"), tmp.resolve("tokenizer.json"), java.nio.file.StandardCopyOption.REPLACE_EXISTING);
        Files.writeString(tmp.resolve("tokenizer_config.json"), "{\"eos_token\": \"<|no_such_token|>\"}");
        io = assertThrows(java.io.IOException.class, () -> Tokenizer.load(tmp));
        assertTrue(io.getMessage().contains("tokenizer_config.json") && io.getMessage().contains("<|no_such_token|>"), io.getMessage());
    }

    @Test
    void realLlama3TokenizerWhenPresent() throws Exception {
        assumeTrue(Files.isRegularFile(LLAMA3.resolve("tokenizer.json")), "skipped: ../shared/data/llama3-tokenizer not present");
        try (Tokenizer t = Tokenizer.load(LLAMA3)) {
            assertEquals(128256, t.vocabSize());
            assertEquals(128000, t.bosId());
            assertEquals(128001, t.eosId());
            for (String s : CORPUS) assertEquals(s, t.decode(t.encode(s), false), "round trip of " + s);
            assertArrayEquals(new int[] {128000}, t.encode("<|begin_of_text|>"));
            // well-known Llama 3 ids: "Hello" = 9906, " world" = 1917
            assertArrayEquals(new int[] {9906, 1917}, t.encode("Hello world"));
            // speed figure (printed, not asserted)
            String text = String.join(" ", CORPUS).repeat(50);
            long t0 = System.nanoTime();
            int tokens = 0;
            for (int i = 0; i < 20; i++) tokens += t.encode(text).length;
            double s = (System.nanoTime() - t0) / 1e9;
            System.out.printf("llama3 tokenizer: %.0f tokens/s (%d chars x 20)%n", tokens / s, text.length());
        }
    }
}
