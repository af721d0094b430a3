package org.grpo4j.internal.cli;

import static org.junit.jupiter.api.Assertions.*;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code grpo4j eval}: generation, verification and the per-dataset table, end to end on the tiny model; bad input. */
class EvalCommandTest {
    @TempDir
    static Path root;
    static Path model;
    static final ObjectMapper JSON = new ObjectMapper();

    @BeforeAll
    static void initModel() {
        model = root.resolve("m");
        CliTest.Run r = CliTest.run("init-model", "--out", model.toString(), "--seed", "3");
        assertEquals(0, r.code(), r.err());
    }

    static List<JsonNode> lines(Path f) throws Exception {
        List<JsonNode> out = new ArrayList<>();
        for (String l : Files.readAllLines(f)) out.add(JSON.readTree(l));
        return out;
    }

    /** GSM8K's extraction (grpo-reference.md 6.1, the fixed semantics): the last number, separators dropped, else the whole text. */
    static String lastNumber(String response) {
        String r = response.replaceAll("(\\d),(\\d)", "$1$2");
        Matcher m = Pattern.compile("[-+]?\\d*\\.\\d+|[-+]?\\d+", Pattern.UNICODE_CHARACTER_CLASS).matcher(r);
        String last = null;
        while (m.find()) last = m.group();
        return last != null ? last : r;
    }

    /**
     * Greedy responses of the (random) tiny model, then the same prompts with ground truths the responses satisfy: the
     * second run repeats the responses bit for bit and every one passes; the table counts them per dataset.
     */
    @Test
    void responsesAreVerifiedAndCountedPerDataset() throws Exception {
        Path first = root.resolve("first.jsonl");
        CliTest.Run r = CliTest.run("eval", "--model", model.toString(), "--data", "examples/data/tiny-arith.jsonl:12", "--max-tokens", "12",
                "--output", first.toString(), "--backend", "cpu");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("chat template tulu, 12 prompts (0 left out: prompt over 2036 tokens (the context of 2048 less --max-tokens 12)),"
                + " 1 response each, greedy, max 12 tokens, verifiers fixed"), r.out());
        List<JsonNode> a = lines(first);
        assertEquals(12, a.size());
        long passedFirst = a.stream().filter(n -> n.get("passed").asBoolean()).count();
        assertTrue(r.out().matches("(?s).*\\ngsm8k +12 +" + passedFirst + " .*\\nall +12 +" + passedFirst + " .*"), r.out());
        // ground truths that the greedy responses satisfy, on the same prompts, as a gsm8k and an ifeval-free second set
        Path data = root.resolve("satisfied.jsonl");
        List<String> rows = new ArrayList<>();
        List<String> src = Files.readAllLines(Path.of("examples/data/tiny-arith.jsonl")).subList(0, 12);
        for (int i = 0; i < 12; i++) {
            ObjectNode row = (ObjectNode) JSON.readTree(src.get(i));
            row.put("ground_truth", lastNumber(a.get(i).get("response").asText()));
            rows.add(JSON.writeValueAsString(row));
        }
        Files.write(data, rows);
        Path second = root.resolve("second.jsonl");
        CliTest.Run r2 = CliTest.run("eval", "--model", model.toString(), "--data", data.toString(), "--max-tokens", "12", "--output", second.toString(),
                "--backend", "cpu");
        assertEquals(0, r2.code(), r2.err());
        List<JsonNode> b = lines(second);
        for (int i = 0; i < 12; i++) {
            assertEquals(a.get(i).get("response"), b.get(i).get("response"), "greedy: the same response " + i);
            assertTrue(b.get(i).get("passed").asBoolean(), b.get(i).toString());
            assertEquals(10.0, b.get(i).get("reward").asDouble());
        }
        assertTrue(r2.out().contains("\nall                   12        12    100.0%       10.000"), r2.out());
    }

    @Test
    void samplesPerPromptAndTheRunsTemplate() throws Exception {
        Path out = root.resolve("samples.jsonl");
        CliTest.Run r = CliTest.run("eval", "--model", model.toString(), "--data", "examples/data/tiny-arith.jsonl:3", "--max-tokens", "4", "--samples", "3",
                "--temperature", "1", "--chat-template", "llama3", "--output", out.toString(), "--backend", "cpu");
        assertEquals(0, r.code(), r.err());
        List<JsonNode> l = lines(out);
        assertEquals(9, l.size());
        assertEquals(List.of(0, 1, 2, 0, 1, 2, 0, 1, 2), l.stream().map(n -> n.get("sample").asInt()).toList());
        assertTrue(l.get(0).get("prompt").asText().contains("<|start_header_id|>user<|end_header_id|>"), l.get(0).toString());
        assertTrue(r.out().contains("3 responses each, temperature 1.0"), r.out());
    }

    /**
     * DATA:N takes the first N rows (1 is one row, not the trainer's "all"); a checkpoint's run settings are the
     * defaults: its chat template, verification reward, stop strings and verifiers (only those keys of its config.json
     * are read), and its precision.
     */
    @Test
    void firstRowsAndTheRunsSettings() throws Exception {
        // (a model directory's --max-tokens: 2048, at most half its context: the tiny model's 2048 gives 1024)
        CliTest.Run one = CliTest.run("eval", "--model", model.toString(), "--data", "examples/data/tiny-arith.jsonl:1", "--backend", "cpu");
        assertEquals(0, one.code(), one.err());
        assertTrue(one.out().contains(", 1 prompts (0 left out: prompt over 1024 tokens (the context of 2048 less --max-tokens 1024))"), one.out());
        Path ck = Files.createDirectories(root.resolve("run/checkpoints/step_7"));
        org.grpo4j.internal.util.TestFiles.copyTree(model, ck.resolve("model"));
        Files.writeString(ck.resolve("config.json"), "{\"chat_template_name\": \"llama3\", \"verification_reward\": 5.0, \"stop_strings\": [\"a\"],"
                + " \"max_prompt_token_length\": 200, \"response_length\": 24,"
                + " \"verifier_compat\": \"open-instruct-3f37c29\", \"some_future_key\": 1}");
        Files.writeString(ck.resolve("trainer_state.json"), "{\"precision\": \"bf16\"}"); // the run's precision: eval's auto on any backend
        Path out = root.resolve("run-settings.jsonl");
        CliTest.Run r = CliTest.run("eval", "--model", ck.resolve("model").toString(), "--data", "examples/data/tiny-arith.jsonl:6",
                "--output", out.toString(), "--backend", "cpu");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("(0 left out: prompt over 200 tokens (the run's max_prompt_token_length))"), r.out());
        assertTrue(r.out().contains("step_7 of " + root.resolve("run").toAbsolutePath() + ", bf16, chat template llama3")
                && r.out().contains("verifiers open-instruct-3f37c29") && r.out().contains("passed = reward >= --verification-reward 5.0"), r.out());
        for (JsonNode n : lines(out)) // a response ends once its text holds the stop string "a", or at the run's response_length
            assertTrue(n.get("finish_reason").asText().equals("stop_string") ? n.get("response").asText().contains("a")
                    : n.get("tokens").asInt() == 24 && !n.get("response").asText().contains("a"), n.toString());
    }

    /**
     * An existing --output is kept unless --overwrite (a second eval, or a path into a live run's files, replaced it);
     * with it the new results replace it whole, and no hidden temporary is left beside it.
     */
    @Test
    void anExistingOutputIsKeptUnlessOverwriteIsGiven() throws Exception {
        Path dir = Files.createDirectories(root.resolve("keep")), out = dir.resolve("results.jsonl");
        Files.writeString(out, "earlier results\n");
        String[] base = {"eval", "--model", model.toString(), "--data", "examples/data/tiny-arith.jsonl:2", "--max-tokens", "4", "--backend", "cpu",
                "--output", out.toString()};
        CliTest.Run refused = CliTest.run(base);
        assertEquals(2, refused.code(), refused.out() + refused.err());
        assertTrue(refused.err().contains("--output " + out + " exists (earlier results, or a run's file): give another file, or --overwrite"),
                refused.err());
        assertEquals("earlier results\n", Files.readString(out));
        List<String> again = new ArrayList<>(List.of(base));
        again.add("--overwrite");
        CliTest.Run r = CliTest.run(again.toArray(String[]::new));
        assertEquals(0, r.code(), r.err());
        assertEquals(2, lines(out).size());
        try (var s = Files.list(dir)) {
            assertEquals(List.of("results.jsonl"), s.map(p -> p.getFileName().toString()).toList());
        }
    }

    /**
     * The KV pool check counts as the generator does: a sample's last token takes no block (one block more was asked
     * for a response that fills the prompt's last block and takes one token more, and such a pool was refused).
     */
    @Test
    void aResponsesLastTokenNeedsNoKvBlock() throws Exception {
        int p;
        try (org.grpo4j.internal.tokenizer.Tokenizer tok = org.grpo4j.internal.tokenizer.Tokenizer.load(model)) {
            org.grpo4j.reward.RlvrRow row = org.grpo4j.internal.data.DatasetReader.readJsonl(Path.of("examples/data/tiny-arith.jsonl")).get(0);
            p = tok.encode(org.grpo4j.internal.tokenizer.ChatTemplate.named("tulu", tok).render(row.promptMessages(), true, tok)).length;
        }
        // a response that fills the prompt's last block (a whole block when the prompt ends one) and one token more
        int r = p % 16, max = r == 0 ? 17 : 17 - r, blocks = (p + 15) / 16 + 1; // the prompt's blocks and one of the sample's
        CliTest.Run run = CliTest.run("eval", "--model", model.toString(), "--data", "examples/data/tiny-arith.jsonl:1", "--max-tokens", String.valueOf(max),
                "--backend", "cpu", "--kv-blocks", String.valueOf(blocks));
        assertEquals(0, run.code(), "a prompt of " + p + " tokens, --max-tokens " + max + ", --kv-blocks " + blocks + ": " + run.err());
        CliTest.Run less = CliTest.run("eval", "--model", model.toString(), "--data", "examples/data/tiny-arith.jsonl:1", "--max-tokens", String.valueOf(max),
                "--backend", "cpu", "--kv-blocks", String.valueOf(blocks - 1));
        assertEquals(2, less.code(), less.out());
        assertTrue(less.err().contains("need " + blocks + " KV blocks of 16 tokens, more than --kv-blocks " + (blocks - 1)), less.err());
    }

    /** DATA:N past the file's rows is refused, as the trainer refuses a dataset amount past its rows (it took them all). */
    @Test
    void moreRowsThanTheDataHasAreRefused() throws Exception {
        int rows = org.grpo4j.internal.data.DatasetReader.readJsonl(Path.of("examples/data/tiny-arith.jsonl")).size();
        CliTest.Run r = CliTest.run("eval", "--model", model.toString(), "--data", "examples/data/tiny-arith.jsonl:" + (rows + 1), "--max-tokens", "4",
                "--backend", "cpu");
        assertEquals(2, r.code(), r.out() + r.err());
        assertTrue(r.err().contains("--data examples/data/tiny-arith.jsonl:" + (rows + 1) + " asks for the first " + (rows + 1) + " rows of "
                + "examples/data/tiny-arith.jsonl, which has " + rows), r.err());
    }

    /**
     * generate takes a checkpoint or a run as eval does (a checkpoint's config.json is its run's, and it was refused
     * as an "unsupported architecture"): the same completions as from the checkpoint's model/ directory.
     */
    @Test
    void generateTakesACheckpointOrARun() throws Exception {
        Path run = root.resolve("gen-run"), ck = Files.createDirectories(run.resolve("checkpoints/step_3"));
        org.grpo4j.internal.util.TestFiles.copyTree(model, ck.resolve("model"));
        Files.writeString(ck.resolve("config.json"), "{\"output_dir\": \"" + run + "\"}");
        Files.writeString(ck.resolve("trainer_state.json"), "{\"training_step\": 3}");
        String want = null;
        for (Path m : List.of(ck.resolve("model"), ck, run)) {
            CliTest.Run r = CliTest.run("generate", "--model", m.toString(), "--backend", "cpu", "--prompt", "Tom has 2 pens.", "-n", "2",
                    "--max-tokens", "6", "--seed", "5");
            assertEquals(0, r.code(), m + ": " + r.err());
            if (want == null) want = r.out();
            else assertEquals(want, r.out(), m.toString());
        }
    }

    @Test
    void badInputIsRefused() throws Exception {
        Path dir = Files.createDirectories(root.resolve("datadir"));
        Files.copy(Path.of("examples/data/tiny-arith.jsonl"), dir.resolve("a.jsonl"));
        Path foo = root.resolve("foo.jsonl");
        Files.writeString(foo, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"ground_truth\": \"1\", \"dataset\": \"foo\"}\n");
        String m = model.toString(), d = "examples/data/tiny-arith.jsonl:2";
        Path noEos = root.resolve("m-no-eos"); // the tokenizer without eos_token: no response would stop before --max-tokens
        org.grpo4j.internal.util.TestFiles.copyTree(model, noEos);
        ObjectNode tc = (ObjectNode) JSON.readTree(noEos.resolve("tokenizer_config.json").toFile());
        tc.remove("eos_token");
        Files.writeString(noEos.resolve("tokenizer_config.json"), JSON.writeValueAsString(tc));
        String[][] cases = {
                {"--model", noEos.toString(), "--data", d, "m-no-eos: the tokenizer has no eos_token (tokenizer_config.json), so no response would stop"},
                {"--model", m, "--data", foo.toString(), "--max-tokens", "8", foo + ":1", "dataset \"foo\" has no verifier", "picks the verifier, one of gsm8k"},
                {"--model", m, "--data", d, "--samples", "0", "--samples must be >= 1, got 0"},
                {"--model", m, "--data", d, "--temperature", "-1", "--temperature must be a finite number >= 0"},
                {"--model", m, "--data", d, "--chat-template", "chatml", "unknown chat template \"chatml\""},
                {"--model", m, "--data", d, "--kv-blocks", "1", "--max-tokens", "8", "need", "KV blocks of 16 tokens, more than --kv-blocks 1"},
                {"--model", m, "--data", d, "--max-tokens", "2048", "--max-tokens 2048 leaves no room for a prompt in the model's context of 2048"},
                {"--model", m, "--data", d, "--max-tokens", "8", "--max-prompt-tokens", "3", "none of the 2 rows has a prompt of at most 3 tokens (--max-prompt-tokens)"},
                {"--model", m, "--data", "examples/data/tiny-arith.jsonl:0", "the rows to take must be >= 1"},
                {"--model", m, "--data", d, "--data", d, "--data", d, "--split", "a", "--split", "b", "--split given 2 times for 3 --data"},
                {"--model", m, "--data", dir.toString(), "--output", dir.resolve("new.jsonl").toString(), "lies in the --data directory"},
                {"--model", m, "--data", foo.toString(), "--output", foo.toString(), "is the --data file"},
                {"--model", root.resolve("nonexist").toString(), "--data", d, "nonexist"},
                {"--model", m, "--data", root.resolve("none.jsonl").toString(), "none.jsonl"},
        };
        for (String[] c : cases) {
            int n = 0;
            while (n + 1 < c.length && c[n].startsWith("--")) n += 2;
            List<String> args = new ArrayList<>(List.of("eval", "--backend", "cpu"));
            args.addAll(List.of(c).subList(0, n));
            if (!args.contains("--max-tokens")) args.addAll(List.of("--max-tokens", "8")); // the tiny model's context is 2048
            CliTest.Run r = CliTest.run(args.toArray(String[]::new));
            assertEquals(2, r.code(), args + ": " + r.out() + r.err());
            for (String s : List.of(c).subList(n, c.length)) assertTrue(r.err().contains(s), "\"" + s + "\" in: " + r.err());
        }
        assertEquals(1, Files.readAllLines(foo).size(), "the data file untouched");
        try (var s = Files.list(dir)) {
            assertEquals(List.of("a.jsonl"), s.map(p -> p.getFileName().toString()).toList(), "nothing written into the data directory");
        }
    }

    /**
     * eval stops where the trainer's rollouts stopped: a model directory at its generation config's ids, a checkpoint
     * at its run's stop_token_ids, a run older than that key at the EOS alone; a malformed value or an id past the vocabulary is named.
     */
    @Test
    void evalStopsWhereTheRunsRolloutsStopped(@TempDir Path tmp) throws Exception {
        Path m = tmp.resolve("m"), ck = tmp.resolve("ck");
        org.grpo4j.internal.util.TestFiles.copyTree(model, m);
        Files.createDirectories(ck);
        try (org.grpo4j.internal.tokenizer.Tokenizer tok = org.grpo4j.internal.tokenizer.Tokenizer.load(m)) {
            org.grpo4j.internal.model.LlamaConfig lc = org.grpo4j.internal.model.LlamaConfig.read(m);
            int eos = tok.eosId();
            Files.writeString(m.resolve("generation_config.json"), "{\"eos_token_id\": [" + eos + ", 11]}");
            ModelSource dir = new ModelSource(m, null, "m"), run = new ModelSource(m, ck, "ck");
            ObjectNode none = JSON.createObjectNode(), older = JSON.createObjectNode().put("seed", 1), listed = older.deepCopy();
            listed.putArray("stop_token_ids").add(7);
            assertEquals(List.of(eos, 11), List.copyOf(EvalCommand.stopIds(dir, none, null, tok, lc)), "a model directory: its generation config");
            assertEquals(List.of(eos, 7), List.copyOf(EvalCommand.stopIds(run, listed, listed.get("stop_token_ids"), tok, lc)), "the run's ids");
            assertEquals(List.of(eos), List.copyOf(EvalCommand.stopIds(run, older, null, tok, lc)), "a run older than the key: the EOS alone");
            ObjectNode bad = older.deepCopy();
            bad.putArray("stop_token_ids").add("x");
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> EvalCommand.stopIds(run, bad, bad.get("stop_token_ids"), tok, lc));
            assertEquals(ck.resolve("config.json") + ": stop_token_ids must be a list of token ids >= 0, got [\"x\"]", e.getMessage());
            ObjectNode past = older.deepCopy();
            past.putArray("stop_token_ids").add(lc.vocabSize());
            e = assertThrows(IllegalArgumentException.class, () -> EvalCommand.stopIds(run, past, past.get("stop_token_ids"), tok, lc));
            assertEquals(ck.resolve("config.json") + ": stop_token_ids: " + lc.vocabSize() + " is not a token id of the model (vocab_size "
                    + lc.vocabSize() + ")", e.getMessage());
        }
    }
}
