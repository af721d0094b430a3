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

    /**
     * vLLM's text (what stop strings are matched on) skips transformers' all_special_ids only: bos, eos, pad, unk, ...
     * and additional_special_tokens. An added token that tokenizer.json marks special but that is none of those
     * (Llama 3's {@code <|eot_id|>}) stays, as its text; decode(ids, true) drops it (a review of 2026-12-03: the stop
     * string "foobar" fired on foo, <|eot_id|>, bar, where vLLM's text "foo<|eot_id|>bar" does not hold it).
     */
    @Test
    void decodeAsVllmSkipsOnlyTheAllSpecialIds(@TempDir Path tmp) throws Exception {
        String extra = ", {\"id\": 509, \"content\": \"<|x|>\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false,"
                + " \"normalized\": false, \"special\": true}, {\"id\": 510, \"content\": \"<|y|>\", \"single_word\": false,"
                + " \"lstrip\": false, \"rstrip\": false, \"normalized\": false, \"special\": true}";
        tinyCopy(tmp, t -> {
            int end = t.indexOf("]", t.indexOf("\"added_tokens\""));
            return t.substring(0, end) + extra + t.substring(end);
        });
        Path cfg = tmp.resolve("tokenizer_config.json");
        Files.writeString(cfg, Files.readString(cfg).replaceFirst("\\{", "{\n \"additional_special_tokens\": [\"<|y|>\"],"));
        try (Tokenizer t = Tokenizer.load(tmp)) {
            int[] foo = t.encode("foo"), bar = t.encode("bar");
            int x = t.tokenId("<|x|>"), y = t.tokenId("<|y|>");
            assertEquals(List.of(509, 510), List.of(x, y));
            assertTrue(t.isSpecial(x) && t.isSpecial(y));
            int[] ids = concat(new int[] {t.bosId()}, foo, new int[] {x}, bar, new int[] {y, t.padId(), t.eosId(), 9999});
            assertEquals("foo<|x|>bar", t.decodeAsVllm(ids), "bos, <|y|> (additional_special_tokens), pad, eos and 9999 skipped");
            assertEquals("foobar", t.decodeLenient(ids, true), "every token marked special skipped");
            var stop = new org.grpo4j.internal.rollout.StopStrings(List.of("foobar"), t::decodeAsVllm);
            assertFalse(stop.completedBy(ids, ids.length));
            assertTrue(new org.grpo4j.internal.rollout.StopStrings(List.of("o<|x|>b"), t::decodeAsVllm).completedBy(ids, ids.length));
            assertTrue(new org.grpo4j.internal.rollout.StopStrings(List.of("foobar"), t::decodeAsVllm)
                    .completedBy(concat(foo, new int[] {y}, bar), foo.length + 1 + bar.length), "an all_special id between: skipped, as vLLM");
        }
        // a list that is not one, named with its file
        Files.writeString(cfg, Files.readString(TINY.resolve("tokenizer_config.json")).replaceFirst("\\{", "{\n \"additional_special_tokens\": \"<|y|>\","));
        java.io.IOException e = assertThrows(java.io.IOException.class, () -> Tokenizer.load(tmp));
        assertTrue(e.getMessage().contains("tokenizer_config.json: field additional_special_tokens must be a list"), e.getMessage());
        // a config without added_tokens_decoder (written before transformers 4.34): special_tokens_map.json's values win
        Files.writeString(cfg, Files.readString(TINY.resolve("tokenizer_config.json")).replaceFirst("\\{", "{\n \"additional_special_tokens\": [\"<|y|>\"],"));
        Files.writeString(tmp.resolve("special_tokens_map.json"), "{\"additional_special_tokens\": [{\"content\": \"<|x|>\"}]}");
        int[] fooXYBar;
        try (Tokenizer t = Tokenizer.load(tmp)) {
            fooXYBar = concat(t.encode("foo"), new int[] {509, 510}, t.encode("bar"));
            assertEquals("foo<|y|>bar", t.decodeAsVllm(fooXYBar));
        }
        // one with it: tokenizer_config.json alone
        Files.writeString(cfg, Files.readString(cfg).replaceFirst("\\{", "{\n \"added_tokens_decoder\": {},"));
        try (Tokenizer t = Tokenizer.load(tmp)) {
            assertEquals("foo<|x|>bar", t.decodeAsVllm(fooXYBar));
        }
        if (Files.isRegularFile(LLAMA3.resolve("tokenizer.json")))
            try (Tokenizer t = Tokenizer.load(LLAMA3)) {
                int eot = t.tokenId("<|eot_id|>");
                assertEquals(128009, eot);
                assertEquals("foo<|eot_id|>bar", t.decodeAsVllm(concat(new int[] {128000}, t.encode("foo"), new int[] {eot}, t.encode("bar"), new int[] {128001})));
            }
    }

    static int[] concat(int[]... parts) {
        int n = 0;
        for (int[] p : parts) n += p.length;
        int[] out = new int[n];
        int k = 0;
        for (int[] p : parts) for (int v : p) out[k++] = v;
        return out;
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
        // the expected ids are read from the files themselves (the BPE model's vocabulary, its added tokens, the
        // config's special-token names), not from grpo4j's loading of them
        com.fasterxml.jackson.databind.ObjectMapper json = new com.fasterxml.jackson.databind.ObjectMapper();
        com.fasterxml.jackson.databind.JsonNode file = json.readTree(LLAMA3.resolve("tokenizer.json").toFile());
        com.fasterxml.jackson.databind.JsonNode config = json.readTree(LLAMA3.resolve("tokenizer_config.json").toFile());
        com.fasterxml.jackson.databind.JsonNode vocab = file.path("model").path("vocab");
        java.util.Map<String, Integer> added = new java.util.HashMap<>();
        for (com.fasterxml.jackson.databind.JsonNode a : file.path("added_tokens")) added.put(a.path("content").asText(), a.path("id").asInt());
        int bos = added.get(config.path("bos_token").asText()), eos = added.get(config.path("eos_token").asText());
        try (Tokenizer t = Tokenizer.load(LLAMA3)) {
            assertEquals(vocab.size() + added.size(), t.vocabSize());
            assertEquals(bos, t.bosId());
            assertEquals(eos, t.eosId());
            for (String s : CORPUS) assertEquals(s, t.decode(t.encode(s), false), "round trip of " + s);
            assertArrayEquals(new int[] {bos}, t.encode(config.path("bos_token").asText()));
            // two whole-word tokens of the vocabulary ("Ġ" is the byte-level BPE's space)
            assertArrayEquals(new int[] {vocab.path("Hello").asInt(-1), vocab.path("\u0120world").asInt(-1)}, t.encode("Hello world"));
            // speed figure (printed, not asserted)
            String text = String.join(" ", CORPUS).repeat(50);
            long t0 = System.nanoTime();
            int tokens = 0;
            for (int i = 0; i < 20; i++) tokens += t.encode(text).length;
            double s = (System.nanoTime() - t0) / 1e9;
            System.out.printf("llama3 tokenizer: %.0f tokens/s (%d chars x 20)%n", tokens / s, text.length());
        }
    }

    /** A copy of the tiny tokenizer in {@code dir}, its tokenizer.json passed through {@code edit}. */
    static void tinyCopy(Path dir, java.util.function.UnaryOperator<String> edit) throws Exception {
        Files.writeString(dir.resolve("tokenizer.json"), edit.apply(Files.readString(TINY.resolve("tokenizer.json"))));
        Files.copy(TINY.resolve("tokenizer_config.json"), dir.resolve("tokenizer_config.json"));
    }

    /**
     * The ids taken from tokenizer.json (bos, eos, pad, the vocabulary's size) are the ids HF tokenizers gives, or the
     * file is refused naming the token: "<pad>" listed under id 5 (a vocabulary id) made padId() 5 while HF encoded
     * it as 508, and an id of 2^31 - 1 made vocabSize() negative (a review of 2026-12-01).
     */
    @Test
    void addedTokenIdsAreTheOnesHfEncodes(@TempDir Path tmp) throws Exception {
        Path a = Files.createDirectory(tmp.resolve("a")), b = Files.createDirectory(tmp.resolve("b")), c = Files.createDirectory(tmp.resolve("c"));
        tinyCopy(a, t -> t.replace("\"id\": 508", "\"id\": 5"));
        java.io.IOException e = assertThrows(java.io.IOException.class, () -> Tokenizer.load(a));
        assertTrue(e.getMessage().startsWith(a.resolve("tokenizer.json") + ": added token \"<pad>\" is listed with id 5, which model.vocab gives to"),
                e.getMessage());
        tinyCopy(b, t -> t.replace("\"id\": 508", "\"id\": 2147483647"));
        e = assertThrows(java.io.IOException.class, () -> Tokenizer.load(b));
        assertTrue(e.getMessage().contains("added_tokens \"<pad>\" has id 2147483647"), e.getMessage());
        tinyCopy(c, t -> t.replace("\"id\": 508", "\"id\": 508.5"));
        e = assertThrows(java.io.IOException.class, () -> Tokenizer.load(c));
        assertTrue(e.getMessage().contains(c.resolve("tokenizer.json").toString()), e.getMessage());
        assertEquals(508, tiny.padId()); // the real file passes
        assertArrayEquals(new int[] {508}, tiny.encode("<pad>"));
    }

    /** The real Llama 3 tokenizer's 256 added tokens pass the check (when the shared copy is present). */
    @Test
    void llama3AddedTokensPassTheIdCheck() throws Exception {
        assumeTrue(Files.isRegularFile(LLAMA3.resolve("tokenizer.json")), "no ../shared/data/llama3-tokenizer");
        try (Tokenizer t = Tokenizer.load(LLAMA3)) {
            assertEquals(128256, t.vocabSize());
            assertArrayEquals(new int[] {128009}, t.encode("<|eot_id|>"));
        }
    }

    /**
     * The chat template as transformers finds it: chat_template.jinja (written beside tokenizer_config.json since
     * transformers 4.47) over the config's; the config's list of named templates gives the one named "default" (it
     * was read as "no template"), and a list without one gives none.
     */
    @Test
    void chatTemplatesInTheirNewerForms(@TempDir Path tmp) throws Exception {
        String cfg = Files.readString(TINY.resolve("tokenizer_config.json"));
        com.fasterxml.jackson.databind.ObjectMapper json = new com.fasterxml.jackson.databind.ObjectMapper();
        com.fasterxml.jackson.databind.node.ObjectNode base = (com.fasterxml.jackson.databind.node.ObjectNode) json.readTree(cfg);

        Path file = Files.createDirectory(tmp.resolve("file"));
        Files.copy(TINY.resolve("tokenizer.json"), file.resolve("tokenizer.json"));
        Files.writeString(file.resolve("tokenizer_config.json"), cfg);
        Files.writeString(file.resolve(Tokenizer.CHAT_TEMPLATE_FILE), "{{ messages[0]['content'] }}!");
        try (Tokenizer t = Tokenizer.load(file)) {
            assertEquals("{{ messages[0]['content'] }}!", t.chatTemplate(), "the file wins over the config's");
        }

        Path list = Files.createDirectory(tmp.resolve("list"));
        Files.copy(TINY.resolve("tokenizer.json"), list.resolve("tokenizer.json"));
        com.fasterxml.jackson.databind.node.ObjectNode named = base.deepCopy();
        var arr = named.putArray("chat_template");
        arr.addObject().put("name", "tool_use").put("template", "T");
        arr.addObject().put("name", "default").put("template", "D");
        Files.writeString(list.resolve("tokenizer_config.json"), json.writeValueAsString(named));
        try (Tokenizer t = Tokenizer.load(list)) {
            assertEquals("D", t.chatTemplate());
        }
        arr.remove(1);
        Files.writeString(list.resolve("tokenizer_config.json"), json.writeValueAsString(named));
        try (Tokenizer t = Tokenizer.load(list)) {
            assertNull(t.chatTemplate(), "no \"default\" among the named templates: none (a run with tulu or llama3 still loads it)");
        }
        named.put("chat_template", 3);
        Files.writeString(list.resolve("tokenizer_config.json"), json.writeValueAsString(named));
        java.io.IOException e = assertThrows(java.io.IOException.class, () -> Tokenizer.load(list));
        assertTrue(e.getMessage().contains("chat_template must be a string or a list"), e.getMessage());
    }

    /**
     * The reference scores responses decoded by transformers (batch_decode, skip_special_tokens), which applies
     * clean_up_tokenization when tokenizer_config.json sets clean_up_tokenization_spaces (Llama 3.1's files do): "Yes ,
     * I agree ." is "Yes, I agree." to its verifiers (3 words, not 5). Absent, as in transformers since 4.45, no cleanup.
     */
    @Test
    void decodeAsTransformersCleansUpWhereTheConfigSaysSo(@TempDir Path tmp) throws Exception {
        String text = "Yes , I agree . It is n't, is it ? It 's 1 ,000 ! I 'm sure , we 've seen they 're ' right '";
        String cleaned = "Yes, I agree. It isn't, is it? It's 1,000! I'm sure, we've seen they're'right '";
        assertEquals(cleaned, Tokenizer.cleanUpTokenization(text));
        int[] ids = tiny.encode(text);
        assertFalse(tiny.cleansUpTokenizationSpaces());
        assertEquals(text, tiny.decodeAsTransformers(ids, true), "no flag: the tokenizer's own text");
        Files.copy(TINY.resolve("tokenizer.json"), tmp.resolve("tokenizer.json"));
        Files.writeString(tmp.resolve("tokenizer_config.json"),
                Files.readString(TINY.resolve("tokenizer_config.json")).replaceFirst("\\{", "{\n \"clean_up_tokenization_spaces\": true,"));
        try (Tokenizer t = Tokenizer.load(tmp)) {
            assertTrue(t.cleansUpTokenizationSpaces());
            assertEquals(cleaned, t.decodeAsTransformers(ids, true));
            assertEquals(text, t.decodeLenient(ids, true), "decode itself is HF tokenizers' text");
        }
        Files.writeString(tmp.resolve("tokenizer_config.json"),
                Files.readString(TINY.resolve("tokenizer_config.json")).replaceFirst("\\{", "{\n \"clean_up_tokenization_spaces\": \"yes\","));
        java.io.IOException e = assertThrows(java.io.IOException.class, () -> Tokenizer.load(tmp));
        assertTrue(e.getMessage().contains("clean_up_tokenization_spaces must be true or false"), e.getMessage());
    }

    @Test
    void theBundledTinyTokenizerIsOneSharedDirectoryThatAKilledJvmDoesNotMultiply(@TempDir Path root) throws Exception {
        Path a = Tokenizer.extractTiny(root);
        assertTrue(a.getFileName().toString().startsWith("grpo4j-tiny-tokenizer-"), a.toString());
        assertEquals(a, Tokenizer.extractTiny(root), "a second JVM (or call) reuses it");
        byte[] json = Files.readAllBytes(a.resolve("tokenizer.json"));
        assertEquals(List.of(a.getFileName().toString()), names(root), "nothing else is left in the temporary directory");
        try (Tokenizer t = Tokenizer.load(a)) {
            assertEquals("1 + 2 = 3", t.decode(t.encode("1 + 2 = 3"), false));
        }
        // damaged (a torn copy): replaced under the same name
        Files.writeString(a.resolve("tokenizer.json"), "{");
        assertEquals(a, Tokenizer.extractTiny(root));
        assertArrayEquals(json, Files.readAllBytes(a.resolve("tokenizer.json")));
        assertEquals(List.of(a.getFileName().toString()), names(root));
        // the name taken by something that is not this user's directory: a private copy instead
        for (Path f : List.of(a.resolve("tokenizer.json"), a.resolve("tokenizer_config.json"), a)) Files.delete(f);
        Files.writeString(a, "not a directory");
        Path own = Tokenizer.extractTiny(root);
        assertNotEquals(a, own);
        assertArrayEquals(json, Files.readAllBytes(own.resolve("tokenizer.json")));
        assertEquals("not a directory", Files.readString(a), "the stranger's file is untouched");
    }

    private static List<String> names(Path dir) throws Exception {
        try (var s = Files.list(dir)) {
            return s.map(p -> p.getFileName().toString()).sorted().toList();
        }
    }
}
