package org.grpo4j.internal.cli;

import static org.junit.jupiter.api.Assertions.*;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Iterator;
import java.util.List;
import java.util.stream.Stream;
import org.grpo4j.internal.tokenizer.Tokenizer;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code generate --prompts FILE} (a JSONL batch, each line with its own sampling settings, one generator call) and
 * {@code --stop}, in-process on the tiny model: per line the completions of its own settings, the stream rule, the
 * JSON Lines and text output, stop strings, and bad files refused by file, line and key before the model loads.
 */
class GenerateBatchTest {
    @TempDir static Path root;
    static Path m;
    static final ObjectMapper JSON = new ObjectMapper();

    static final String P0 = "{\"prompt\": \"Tom has 2 pens.\", \"n\": 3, \"max_tokens\": 5, \"temperature\": 0.8, \"seed\": 4}";
    static final String P1 = "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Zoe has 5 pens.\"}],"
            + " \"n\": 2, \"max_tokens\": 7, \"temperature\": 0}";
    static final String P2 = "{\"prompt\": \"How many pens now?\", \"top_k\": 5, \"seed\": 11}"; // n and max_tokens from -n 2 --max-tokens 9

    @BeforeAll
    static void model() {
        m = root.resolve("tiny");
        CliTest.Run r = CliTest.run("init-model", "--preset", "tiny", "--out", m.toString());
        assertEquals(0, r.code(), r.err());
    }

    static CliTest.Run gen(String... args) {
        List<String> a = new ArrayList<>(List.of("generate", "--model", m.toString(), "--backend", "cpu"));
        a.addAll(List.of(args));
        return CliTest.run(a.toArray(String[]::new));
    }

    static Path file(String name, String... lines) throws Exception {
        Path f = root.resolve(name);
        Files.writeString(f, String.join("\n", lines) + "\n");
        return f;
    }

    /** The JSON Lines of a --prompts --json run (every stdout line one object). */
    static List<JsonNode> jsonl(CliTest.Run r) throws Exception {
        assertEquals(0, r.code(), r.err());
        List<JsonNode> out = new ArrayList<>();
        for (String l : r.out().split("\n", -1)) {
            if (l.isEmpty()) continue;
            JsonNode o = JSON.readTree(l);
            assertTrue(o.isObject(), l);
            out.add(o);
        }
        return out;
    }

    static List<String> fields(JsonNode o) {
        List<String> f = new ArrayList<>();
        for (Iterator<String> it = o.fieldNames(); it.hasNext(); ) f.add(it.next());
        return f;
    }

    static int[] ints(JsonNode a) {
        int[] x = new int[a.size()];
        for (int i = 0; i < x.length; i++) x[i] = a.get(i).intValue();
        return x;
    }

    /**
     * (a) Three lines with different n, max_tokens, temperature, seed (and a chat, and a line that takes the options'
     * defaults) in one batch: each line gets its n completions of at most its max_tokens; the first line's equal a
     * --prompt run with its settings (its streams start at 0 either way); the greedy line's samples are identical; the
     * last line's equal it behind a line of as many samples as the lines before it (the stream rule), and differ from it
     * alone (streams from 0).
     */
    @Test
    void eachLineSamplesWithItsOwnSettings() throws Exception {
        Path f = file("three.jsonl", P0, "", P1, "   ", P2); // blank lines are skipped
        List<JsonNode> out = jsonl(gen("--prompts", f.toString(), "-n", "2", "--max-tokens", "9", "--temperature", "1.0", "--json"));
        assertEquals(3, out.size(), out.toString());
        int[][] nMax = {{3, 5}, {2, 7}, {2, 9}};
        for (int i = 0; i < 3; i++) {
            JsonNode cs = out.get(i).get("completions");
            assertEquals(nMax[i][0], cs.size(), "line " + i + ": n");
            for (JsonNode c : cs) {
                assertTrue(c.get("tokens").intValue() >= 1 && c.get("tokens").intValue() <= nMax[i][1], "line " + i + ": at most max_tokens: " + c);
                assertEquals(c.get("tokens").intValue(), c.get("ids").size());
                assertEquals(c.get("ids").size(), c.get("logprobs").size());
            }
        }
        // the first line's completions are the --prompt run's with the same settings
        CliTest.Run one = gen("--prompt", "Tom has 2 pens.", "-n", "3", "--max-tokens", "5", "--temperature", "0.8", "--seed", "4", "--json");
        assertEquals(0, one.code(), one.err());
        JsonNode single = JSON.readTree(one.out());
        assertEquals(single.get("completions"), out.get(0).get("completions"));
        assertEquals(single.get("prompt"), out.get(0).get("prompt"));
        assertEquals(single.get("prompt_ids"), out.get(0).get("prompt_ids"));
        // sampled at temperature 0.8, three samples of up to 5 tokens are not all the same
        JsonNode c0 = out.get(0).get("completions");
        assertFalse(c0.get(0).get("ids").equals(c0.get(1).get("ids")) && c0.get(1).get("ids").equals(c0.get(2).get("ids")), c0.toString());
        // greedy: identical samples
        JsonNode c1 = out.get(1).get("completions");
        assertEquals(c1.get(0).get("ids"), c1.get(1).get("ids"));
        assertEquals(c1.get(0).get("logprobs"), c1.get(1).get("logprobs"));
        // the stream rule: the last line draws from streams 5, 6 (3 + 2 samples before it), as behind one line of 5 samples
        Path behind = file("behind.jsonl", "{\"prompt\": \"x\", \"n\": 5, \"max_tokens\": 1}", P2);
        List<JsonNode> b = jsonl(gen("--prompts", behind.toString(), "-n", "2", "--max-tokens", "9", "--json"));
        assertEquals(out.get(2).get("completions"), b.get(1).get("completions"));
        Path alone = file("alone.jsonl", P2);
        List<JsonNode> a = jsonl(gen("--prompts", alone.toString(), "-n", "2", "--max-tokens", "9", "--json"));
        assertNotEquals(out.get(2).get("completions"), a.get(0).get("completions"), "alone, its streams start at 0");
        assertEquals(out.get(2).get("prompt_ids"), a.get(0).get("prompt_ids"));
    }

    /** (b) --json with --prompts: JSON Lines, one object per line in input order, with the one-prompt output's fields. */
    @Test
    void jsonLinesInInputOrder() throws Exception {
        Path f = file("order.jsonl", P1, P2, "{\"prompt\": \"Tom has 2 pens.\", \"n\": 1, \"max_tokens\": 3}");
        CliTest.Run r = gen("--prompts", f.toString(), "-n", "2", "--max-tokens", "4", "--json");
        List<JsonNode> out = jsonl(r);
        assertEquals(3, out.size());
        assertEquals(3, r.out().lines().count(), "one line per object: " + r.out());
        try (Tokenizer tok = Tokenizer.load(m)) {
            for (int i = 0; i < 3; i++) {
                JsonNode o = out.get(i);
                assertEquals(List.of("index", "prompt", "prompt_ids", "completions"), fields(o));
                assertEquals(i, o.get("index").intValue());
                assertArrayEquals(tok.encode(o.get("prompt").asText()), ints(o.get("prompt_ids")), "prompt_ids are the rendered prompt's ids");
                for (JsonNode c : o.get("completions")) {
                    assertEquals(List.of("text", "ids", "logprobs", "tokens", "finish_reason"), fields(c));
                    assertEquals(tok.decodeLenient(ints(c.get("ids")), true), c.get("text").asText());
                }
            }
        }
        assertTrue(out.get(0).get("prompt").asText().contains("Be brief.") && out.get(0).get("prompt").asText().contains("Zoe has 5 pens."),
                out.get(0).get("prompt").asText());
        assertTrue(out.get(1).get("prompt").asText().contains("How many pens now?"));
        assertTrue(out.get(2).get("prompt").asText().contains("Tom has 2 pens."));
        assertEquals(List.of(2, 2, 1), out.stream().map(o -> o.get("completions").size()).toList());
        // --template none: "prompt" is the raw text
        List<JsonNode> raw = jsonl(gen("--prompts", file("raw.jsonl", "{\"prompt\": \"Tom has 2 pens.\"}").toString(), "--template", "none",
                "--max-tokens", "2", "--json"));
        assertEquals("Tom has 2 pens.", raw.get(0).get("prompt").asText());
        // the text output: a header per prompt, then its completions
        CliTest.Run t = gen("--prompts", f.toString(), "-n", "2", "--max-tokens", "4");
        assertEquals(0, t.code(), t.err());
        List<String> lines = t.out().lines().toList();
        List<String> headers = lines.stream().filter(l -> l.startsWith("== prompt ")).toList();
        assertEquals(List.of("== prompt 0 ==", "== prompt 1 ==", "== prompt 2 =="), headers);
        assertTrue(lines.get(0).equals("== prompt 0 ==") && lines.get(1).startsWith("[0] (") && lines.get(2).startsWith("[1] ("), t.out());
        assertTrue(t.err().contains("3 prompts, 5 completions"), t.err());
        // the one-prompt output has no header
        CliTest.Run p = gen("--prompt", "Tom has 2 pens.", "-n", "2", "--max-tokens", "4");
        assertEquals(0, p.code(), p.err());
        assertTrue(p.out().startsWith("[0] (") && !p.out().contains("== prompt"), p.out());
    }

    /**
     * (d) --stop: the greedy completion's text gains a string at its k-th token; with that string as --stop the
     * completion is its first k tokens, finish reason stop_string; in a --prompts file, lines inherit --stop and
     * "stop": [] clears it.
     */
    @Test
    void stopStringsEndACompletion() throws Exception {
        String[] greedy = {"--prompt", "Tom has 2 pens.", "--temperature", "0", "--max-tokens", "16", "--json"};
        CliTest.Run r = gen(greedy);
        assertEquals(0, r.code(), r.err());
        JsonNode full = JSON.readTree(r.out()).get("completions").get(0);
        int[] ids = ints(full.get("ids"));
        String stop = null;
        int k = 0;
        try (Tokenizer tok = Tokenizer.load(m)) {
            for (int j = 2; j <= ids.length && stop == null; j++) {
                String before = tok.decodeLenient(Arrays.copyOf(ids, j - 1), true), now = tok.decodeLenient(Arrays.copyOf(ids, j), true);
                if (now.startsWith(before) && now.length() > before.length() && !before.contains(now.substring(before.length()))) {
                    stop = now.substring(before.length());
                    k = j;
                }
            }
        }
        assertNotNull(stop, "the greedy completion gains new text at some token: " + full);
        assertTrue(k < ids.length || !full.get("finish_reason").asText().equals("stop_string"));
        String[] withStop = Arrays.copyOf(greedy, greedy.length + 2);
        withStop[greedy.length] = "--stop";
        withStop[greedy.length + 1] = stop;
        r = gen(withStop);
        assertEquals(0, r.code(), r.err());
        JsonNode c = JSON.readTree(r.out()).get("completions").get(0);
        assertEquals("stop_string", c.get("finish_reason").asText(), c.toString());
        assertArrayEquals(Arrays.copyOf(ids, k), ints(c.get("ids")), "the tokens up to the one that completed \"" + stop + "\"");
        assertTrue(c.get("text").asText().endsWith(stop), c.toString());
        // --prompts: the default --stop, a line's own stop, and "stop": [] (none)
        String line = "{\"prompt\": \"Tom has 2 pens.\", \"temperature\": 0, \"max_tokens\": 16";
        Path f = file("stops.jsonl", line + "}", line + ", \"stop\": []}", line + ", \"stop\": [\"no such text\", " + JSON.writeValueAsString(stop) + "]}");
        List<JsonNode> out = jsonl(gen("--prompts", f.toString(), "--stop", stop, "--json"));
        assertEquals(c, out.get(0).get("completions").get(0));
        assertEquals(full, out.get(1).get("completions").get(0));
        assertEquals(c, out.get(2).get("completions").get(0));
        out = jsonl(gen("--prompts", f.toString(), "--json"));
        assertEquals(full, out.get(0).get("completions").get(0), "without --stop the first line runs to its end");
    }

    // ---- (c) bad input --------------------------------------------------------------------------------------------

    record Bad(String name, String content, String[] args, String... says) {}

    static Bad bad(String name, String content, String... says) { return new Bad(name, content, new String[0], says); }

    static final String OK = "{\"prompt\": \"Tom has 2 pens.\"}";

    static List<Bad> badFiles() {
        List<Bad> t = new ArrayList<>();
        t.add(bad("not JSON", OK + "\n{\"prompt\": ", "$F:2: not valid JSON"));
        t.add(bad("two objects on a line", OK + " " + OK, "$F:1: more than one JSON value"));
        t.add(bad("trailing text", OK + " x", "$F:1: not valid JSON"));
        t.add(bad("not an object", OK + "\n\n[\"hi\"]", "$F:3: expected a JSON object, got array"));
        t.add(bad("neither prompt nor messages", "{\"n\": 2}", "$F:1: missing \"prompt\"", "\"messages\""));
        t.add(bad("prompt and messages", "{\"prompt\": \"a\", \"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}", "$F:1: both \"prompt\" and \"messages\""));
        t.add(bad("unknown key", OK + "\n{\"prompt\": \"a\", \"max_new_tokens\": 3}", "$F:2: unknown key \"max_new_tokens\"",
                "valid keys: prompt, messages, n, max_tokens, temperature, top_p, top_k, seed, stop"));
        t.add(bad("duplicate key", "{\"prompt\": \"a\", \"n\": 1, \"n\": 2}", "$F:1: not valid JSON", "Duplicate field 'n'"));
        t.add(bad("prompt not a string", "{\"prompt\": 3}", "$F:1: \"prompt\" must be a string, got 3"));
        t.add(bad("n a string", "{\"prompt\": \"a\", \"n\": \"4\"}", "$F:1: \"n\" must be an integer >= 1, got \"4\""));
        t.add(bad("n 0", "{\"prompt\": \"a\", \"n\": 0}", "$F:1: \"n\" must be an integer >= 1, got 0"));
        t.add(bad("n fractional", "{\"prompt\": \"a\", \"n\": 1.5}", "\"n\" must be an integer >= 1, got 1.5"));
        t.add(bad("n beyond int", "{\"prompt\": \"a\", \"n\": 3000000000}", "\"n\" must be an integer >= 1, got 3000000000"));
        t.add(bad("max_tokens 0", OK + "\n" + OK + "\n{\"prompt\": \"a\", \"max_tokens\": 0}", "$F:3: \"max_tokens\" must be an integer >= 1, got 0"));
        t.add(bad("max_tokens null", "{\"prompt\": \"a\", \"max_tokens\": null}", "$F:1: \"max_tokens\" must be an integer >= 1, got null"));
        t.add(bad("temperature negative", "{\"prompt\": \"a\", \"temperature\": -1}", "$F:1: \"temperature\" must be a finite number >= 0, got -1"));
        t.add(bad("temperature a string", "{\"prompt\": \"a\", \"temperature\": \"hot\"}", "$F:1: \"temperature\" must be a number, got \"hot\""));
        t.add(bad("temperature infinite", "{\"prompt\": \"a\", \"temperature\": 1e39}", "$F:1: \"temperature\" must be a finite number >= 0"));
        t.add(bad("temperature below float", "{\"prompt\": \"a\", \"temperature\": 1e-60}", "$F:1: \"temperature\" 1.0E-60 is too small for a float"));
        t.add(bad("top_p below float", "{\"prompt\": \"a\", \"top_p\": 1e-50}", "$F:1: \"top_p\" 1.0E-50 is too small for a float"));
        t.add(bad("top_p 0", "{\"prompt\": \"a\", \"top_p\": 0}", "$F:1: \"top_p\" must be a number in (0, 1], got 0"));
        t.add(bad("top_p 1.5", "{\"prompt\": \"a\", \"top_p\": 1.5}", "$F:1: \"top_p\" must be a number in (0, 1], got 1.5"));
        t.add(bad("top_k -1", "{\"prompt\": \"a\", \"top_k\": -1}", "$F:1: \"top_k\" must be an integer >= 0 (0 = off), got -1"));
        t.add(bad("seed fractional", "{\"prompt\": \"a\", \"seed\": 0.5}", "$F:1: \"seed\" must be a 64-bit integer, got 0.5"));
        t.add(bad("stop a string", "{\"prompt\": \"a\", \"stop\": \"\\n\"}", "$F:1: \"stop\" must be a list of non-empty strings"));
        t.add(bad("stop empty string", "{\"prompt\": \"a\", \"stop\": [\"x\", \"\"]}", "$F:1: \"stop\"[1] must be a non-empty string, got \"\""));
        t.add(bad("stop a number", "{\"prompt\": \"a\", \"stop\": [7]}", "$F:1: \"stop\"[0] must be a non-empty string, got 7"));
        t.add(bad("empty file", "", "$F: no prompts"));
        t.add(bad("blank lines only", "\n  \n\t\n", "$F: no prompts"));
        t.add(bad("messages empty", "{\"messages\": []}", "$F:1: field \"messages\" must be a non-empty list of {role, content}"));
        t.add(bad("messages a string", "{\"messages\": \"hi\"}", "$F:1: field \"messages\" must be a non-empty list"));
        t.add(bad("messages bad role", OK + "\n{\"messages\": [{\"role\": \"bot\", \"content\": \"a\"}]}",
                "$F:2: messages[0].role \"bot\" is not one of system, user, assistant"));
        t.add(bad("messages content missing", "{\"messages\": [{\"role\": \"user\"}]}", "$F:1: messages[0].content must be a string"));
        t.add(new Bad("messages with --template none", "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}", new String[] {"--template", "none"},
                "$F:1: \"messages\" needs a chat template", "--template is none"));
        t.add(new Bad("empty raw prompt", OK + "\n{\"prompt\": \"\"}", new String[] {"--template", "none"}, "$F:2: the prompt is empty"));
        t.add(bad("max_tokens beyond the context", OK + "\n{\"prompt\": \"a\", \"max_tokens\": 100000}",
                "$F:2: max_tokens 100000 leaves no room for a prompt in the model's max_position_embeddings 2048"));
        t.add(bad("prompt and max_tokens beyond the context", OK + "\n{\"prompt\": \"a\", \"max_tokens\": 2047}",
                "$F:2: max_tokens 2047 + the prompt's", "max_position_embeddings 2048"));
        t.add(bad("top_k beyond the vocabulary", OK + "\n{\"prompt\": \"a\", \"top_k\": 100000}",
                "$F:2: top_k 100000 exceeds the model's vocabulary of", "(0 turns top-k off)"));
        t.add(bad("more completions than random streams", "{\"prompt\": \"a\", \"n\": 2000000000}\n{\"prompt\": \"a\", \"n\": 2000000000}",
                "$F:2: the completions asked for up to this line (the sum of n) exceed 2147483647"));
        t.add(new Bad("a line beyond the KV pool", OK + "\n{\"prompt\": \"a\", \"max_tokens\": 200}", new String[] {"--kv-blocks", "8"},
                "$F:2: the prompt's", "max_tokens 200", "more than --kv-blocks 8"));
        t.add(bad("n x max_tokens beyond the heap", OK + "\n{\"prompt\": \"a\", \"n\": 2000000000, \"max_tokens\": 1000}",
                "--prompts $F", "the most: $F:2, n 2000000000 x max_tokens 1000", "needs", "heap"));
        t.add(new Bad("bad default --stop", OK, new String[] {"--stop", ""}, "--stop must be a non-empty string"));
        return t;
    }

    @TestFactory
    Stream<DynamicTest> badPromptFiles() {
        return badFiles().stream().map(b -> DynamicTest.dynamicTest(b.name(), () -> {
            Path f = root.resolve("bad-" + b.name().replace(' ', '_').replaceAll("[^\\w.-]", "") + ".jsonl");
            Files.writeString(f, b.content());
            List<String> args = new ArrayList<>(List.of("--prompts", f.toString()));
            args.addAll(List.of(b.args()));
            expectError(gen(args.toArray(String[]::new)), b.says(), f);
        }));
    }

    /** The one error line "grpo4j generate: ..." with each fragment ($F: the file), exit 2, no stack trace or class name. */
    static void expectError(CliTest.Run r, String[] says, Path f) {
        String ctx = "\n--- stdout\n" + r.out() + "--- stderr\n" + r.err();
        assertEquals(2, r.code(), "exit code" + ctx);
        assertEquals("", r.out(), "nothing on stdout" + ctx);
        List<String> lines = r.err().lines().toList();
        assertEquals(1, lines.size(), "one error line" + ctx);
        assertTrue(lines.get(0).startsWith("grpo4j generate: "), ctx);
        assertFalse(BadInputTest.LEAK.matcher(r.err()).find(), "no stack trace or Java class name" + ctx);
        for (String s : says) {
            String want = f == null ? s : s.replace("$F", f.toString());
            assertTrue(lines.get(0).contains(want), "message contains \"" + want + "\"" + ctx);
        }
        System.out.println(lines.get(0).replace(root.toString(), "$R"));
    }

    /**
     * Output is UTF-8 whatever the locale: the command in its own JVM under LANG=C (whose default charset is ASCII,
     * which turned every non-ASCII character into '?') prints the prompt's "café 日" (read from a UTF-8 file: the
     * locale also decides how the JVM decodes its arguments) as UTF-8 bytes.
     */
    @Test
    void outputIsUtf8UnderACLocale() throws Exception {
        Path f = file("accents.jsonl", "{\"prompt\": \"caf\u00e9 \u65e5\", \"max_tokens\": 1}");
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(), "-cp",
                System.getProperty("java.class.path"), Main.class.getName(), "generate", "--model", m.toString(), "--backend", "cpu", "--template", "none",
                "--prompts", f.toString(), "--json"));
        ProcessBuilder pb = new ProcessBuilder(cmd);
        pb.environment().put("LANG", "C");
        pb.environment().put("LC_ALL", "C");
        pb.environment().remove("JAVA_TOOL_OPTIONS");
        Process p = pb.redirectErrorStream(true).start();
        byte[] out = p.getInputStream().readAllBytes();
        assertTrue(p.waitFor(120, java.util.concurrent.TimeUnit.SECONDS));
        String text = new String(out, StandardCharsets.UTF_8);
        assertEquals(0, p.exitValue(), text);
        assertTrue(text.contains("\"prompt\":\"caf\u00e9 \u65e5\""), text);
    }

    /** Missing, a directory, not UTF-8; --prompt and --prompts together, neither. */
    @Test
    void unreadableFilesAndTheExclusiveOptions() throws Exception {
        Path missing = root.resolve("nosuch.jsonl");
        expectError(gen("--prompts", missing.toString()), new String[] {missing + ": not found (--prompts)"}, null);
        Path dir = Files.createDirectories(root.resolve("adir"));
        expectError(gen("--prompts", dir.toString()), new String[] {dir + ": is a directory (--prompts takes a JSONL file)"}, null);
        Path huge = root.resolve("huge.jsonl"); // sparse: no disk used
        try (var raf = new java.io.RandomAccessFile(huge.toFile(), "rw")) {
            raf.setLength(3L << 30);
        }
        expectError(gen("--prompts", huge.toString()), new String[] {huge + ": 3221225472 bytes; --prompts reads files of up to 2 GiB"}, null);
        Files.delete(huge);
        expectError(gen("--prompt", "hi", "--top-k", "100000"), new String[] {"--top-k 100000 exceeds the model's vocabulary of"}, null);
        Path latin = root.resolve("latin1.jsonl");
        Files.write(latin, (OK + "\n{\"prompt\": \"caf\u00e9\"}\n").getBytes(StandardCharsets.ISO_8859_1));
        expectError(gen("--prompts", latin.toString()), new String[] {latin + ":2: not valid UTF-8"}, null);
        Path ok = file("ok.jsonl", OK);
        CliTest.Run both = gen("--prompt", "hi", "--prompts", ok.toString());
        assertEquals(2, both.code(), both.err());
        assertTrue(both.err().contains("mutually exclusive"), both.err());
        CliTest.Run neither = gen("-n", "2");
        assertEquals(2, neither.code(), neither.err());
        assertTrue(neither.err().contains("Missing required argument") && neither.err().contains("--prompt") && neither.err().contains("--prompts"),
                neither.err());
    }

    /**
     * The whole file is checked before the model loads: a bad last line is reported (not the damaged weights), and
     * so is a line beyond the context (the tokenizer and config load, the weights do not).
     */
    @Test
    void theFileIsCheckedBeforeTheWeightsLoad() throws Exception {
        Path damaged = root.resolve("damaged");
        Files.createDirectories(damaged);
        try (Stream<Path> s = Files.list(m)) {
            for (Path p : s.toList()) Files.copy(p, damaged.resolve(p.getFileName()));
        }
        Path st = damaged.resolve("model.safetensors");
        Files.write(st, Arrays.copyOf(Files.readAllBytes(st), (int) Files.size(st) / 2));
        Path f = file("last-bad.jsonl", OK, OK, "{\"prompt\": \"a\", \"top_p\": 2}");
        expectError(CliTest.run("generate", "--model", damaged.toString(), "--backend", "cpu", "--prompts", f.toString()),
                new String[] {f + ":3: \"top_p\" must be a number in (0, 1], got 2"}, null);
        Path g = file("long.jsonl", OK, "{\"prompt\": \"a\", \"max_tokens\": 5000}");
        expectError(CliTest.run("generate", "--model", damaged.toString(), "--backend", "cpu", "--prompts", g.toString()),
                new String[] {g + ":2: max_tokens 5000"}, null);
        // and the damaged weights are what fails once the file is good
        CliTest.Run r = CliTest.run("generate", "--model", damaged.toString(), "--backend", "cpu", "--prompts", file("good.jsonl", OK).toString());
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains("model.safetensors"), r.err());
    }
}
