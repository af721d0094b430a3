package org.grpo4j.internal.cli;

import static org.junit.jupiter.api.Assertions.*;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.grpo4j.internal.backend.TestBackends;
import org.grpo4j.internal.model.LlamaWeights;
import org.grpo4j.internal.util.AtomicDir;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.io.TempDir;

/**
 * The bad-input sweep of issue 19 as a table: every command with missing, empty, damaged, mistyped, huge and NaN
 * inputs, run in-process through the CLI entry point. Each case asserts the exit code, that the failure is one line
 * "grpo4j COMMAND: ..." naming the file, field or value, that no stack trace or Java class name reaches the user,
 * and that no file under the fixture directory changed (except the ones a case is expected to write, which it
 * checks). Signals and the run-directory lock need other processes: {@link SignalsAndLockTest}.
 */
class BadInputTest {
    @TempDir static Path root;

    /** A small, fast training config: tiny model, 64 rows, 2 steps of 4 prompts x 4 samples, a checkpoint per step. */
    static final String CONFIG = """
            {"model_name_or_path": "init:tiny", "chat_template_name": "tulu",
             "dataset_mixer_list": ["data/tiny.jsonl", "1.0"], "dataset_mixer_eval_list": ["data/tiny.jsonl", "8"],
             "max_prompt_token_length": 64, "response_length": 8, "local_rollout_batch_size": 4, "number_samples_per_prompt": 4,
             "local_mini_batch_size": 8, "per_device_train_batch_size": 4, "local_rollout_forward_batch_size": 8,
             "num_training_steps": 2, "learning_rate": 0.001, "save_freq": 1, "num_evals": 1, "backend": "cpu",
             "kv_cache_mib": 4, "output_dir": "runs/unused", "sft_warmup": {"steps": 0}}
            """;

    static String row(String role, String dataset) {
        return "{\"messages\": [{\"role\": \"" + role + "\", \"content\": \"Zoe has 5 pens and gets 1 more. How many pens now?\"}, "
                + "{\"role\": \"assistant\", \"content\": \"5 + 1 = 6\"}], \"ground_truth\": \"6\", \"dataset\": \"" + dataset + "\"}";
    }

    @BeforeAll
    static void fixtures() throws Exception {
        List<String> rows = Files.readAllLines(Path.of("examples/data/tiny-arith.jsonl")).subList(0, 64);
        Path data = Files.createDirectories(root.resolve("data"));
        Files.write(data.resolve("tiny.jsonl"), rows);
        List<String> user = new ArrayList<>(rows.subList(0, 8));
        user.add(row("User", "gsm8k"));
        Files.write(data.resolve("User.jsonl"), user);
        List<String> foo = new ArrayList<>(rows.subList(0, 8));
        foo.add(row("user", "foo"));
        Files.write(data.resolve("foo.jsonl"), foo);
        List<String> broken = new ArrayList<>(rows.subList(0, 8));
        broken.add(2, "{\"messages\": [");
        Files.write(data.resolve("broken.jsonl"), broken);
        Files.writeString(data.resolve("empty.jsonl"), "");
        Files.write(data.resolve("noanswer.jsonl"), rows.stream().map(r -> r.replace(", {\"role\": \"assistant\"", ", {\"role\": \"user\"")).toList());
        Files.writeString(root.resolve("t.json"), CONFIG);
        Files.writeString(root.resolve("empty.json"), "");
        Files.writeString(root.resolve("array.json"), "[1]");
        Files.writeString(root.resolve("broken.json"), "{\"model_name_or_path\": ");
        Files.writeString(root.resolve("unknown.json"), CONFIG.replace("\"chat_template_name\"", "\"foo\": 1, \"chat_template_name\""));
        Files.writeString(root.resolve("chat-User.json"), "[{\"role\": \"User\", \"content\": \"Hi\"}]");
        Files.writeString(root.resolve("chat.json"), "[{\"role\": \"user\", \"content\": \"Hi\"}]");
        Files.writeString(root.resolve("chat-broken.json"), "[{\"role\": ");

        Path m = root.resolve("m");
        assertEquals(0, CliTest.run("init-model", "--out", m.toString()).code());
        try (LlamaWeights w = LlamaWeights.load(TestBackends.cpu(), m)) { // the same model with NaN weights (a diverged run)
            w.backend().fill(w.get("model.layers.0.mlp.up_proj.weight"), Double.NaN);
            w.save(root.resolve("mnan"), "F32", 1L << 40, m);
        }
        org.grpo4j.internal.util.TestFiles.copyTree(m, root.resolve("mdamaged"));
        Path st = root.resolve("mdamaged/model.safetensors");
        Files.write(st, Arrays.copyOf(Files.readAllBytes(st), (int) Files.size(st) / 2)); // truncated by a full disk
        org.grpo4j.internal.util.TestFiles.copyTree(m, root.resolve("mbadtok"));
        Files.writeString(root.resolve("mbadtok/tokenizer.json"), "{\"model\": {\"vocab\": ");
        org.grpo4j.internal.util.TestFiles.copyTree(m, root.resolve("m8b")); // the tiny model's files under Llama 3.1 8B's config.json: over the flat-buffer limit
        new com.fasterxml.jackson.databind.ObjectMapper().writeValue(root.resolve("m8b/config.json").toFile(),
                org.grpo4j.internal.model.LlamaConfig.llama31_8b().toJson("bfloat16"));
        org.grpo4j.internal.util.TestFiles.copyTree(m, root.resolve("m1b")); // ... under Llama 3.2 1B's: its fp32 model states (about 20 GB) exceed the test JVM's heap
        new com.fasterxml.jackson.databind.ObjectMapper().writeValue(root.resolve("m1b/config.json").toFile(),
                org.grpo4j.internal.model.LlamaConfig.llama32_1b().toJson("bfloat16"));
        org.grpo4j.internal.util.TestFiles.copyTree(m, root.resolve("mbadgen")); // generation stops at its eos_token_id: a broken file is named
        Files.writeString(root.resolve("mbadgen/generation_config.json"), "{\"eos_token_id\": [1, ");
        Files.createDirectories(root.resolve("data/empty-dir"));
        Files.createDirectories(root.resolve("mbadconfig"));
        Files.writeString(root.resolve("mbadconfig/config.json"), "{\"hidden_size\": ");

        // reward inputs: a lone surrogate (a legal JSON escape), an unknown dataset, invalid UTF-8, broken JSON
        Files.write(root.resolve("rows.jsonl"), ("{\"dataset\":\"gsm8k\",\"ground_truth\":\"7\",\"response\":\"so 7 \\ud800 x\"}\n"
                + "{\"dataset\":\"foo\",\"ground_truth\":\"1\",\"response\":\"1\"}\n").getBytes(StandardCharsets.UTF_8));
        byte[] bad = "{\"dataset\":\"gsm8k\",\"ground_truth\":\"7\",\"response\":\"\u00ff 7\"}\n{\"dataset\": \n".getBytes(StandardCharsets.ISO_8859_1);
        Files.write(root.resolve("rows.jsonl"), bad, java.nio.file.StandardOpenOption.APPEND);
        Files.writeString(root.resolve("other.jsonl"), "keep me\n");
        Files.writeString(root.resolve("two.jsonl"), "{\"dataset\":\"gsm8k\",\"ground_truth\":\"7\",\"response\":\"7\"} {}\n");

        // a finished 2-step run (checkpoints step_0..2) that resume cases copy and damage
        CliTest.Run r = CliTest.run("train", "--config", root.resolve("t.json").toString(), "--output", root.resolve("run").toString());
        assertEquals(0, r.code(), r.err());
    }

    // ---- the table ------------------------------------------------------------------------------------------------

    /** One probe: arguments ($R = the fixture directory), expected exit code and message fragments, file effects. */
    static final class Case {
        final String name;
        final String[] args;
        int exit = 2;
        String[] says = {};
        String[] neverSays = {};
        boolean trace;
        IoAction before = r -> {};
        IoAction after = r -> {};
        final List<String> writes = new ArrayList<>();

        Case(String name, String... args) {
            this.name = name;
            this.args = args;
        }

        Case exit(int code) { exit = code; return this; }
        /** The error line (or, for exit 0, stdout + stderr) contains each fragment. */
        Case says(String... fragments) { says = fragments; return this; }
        Case neverSays(String... fragments) { neverSays = fragments; return this; }
        /** --debug: the stack trace is expected after the error line. */
        Case trace() { trace = true; return this; }
        Case before(IoAction a) { before = a; return this; }
        /** Checks after the run; paths under {@code writes} may change, everything else must not. */
        Case after(IoAction a) { after = a; return this; }
        Case writes(String... paths) { writes.addAll(List.of(paths)); return this; }
    }

    @FunctionalInterface
    interface IoAction {
        void run(Path root) throws Exception;
    }

    static Case c(String name, String... args) { return new Case(name, args); }

    static final String T = "$R/t.json";

    static List<Case> table() {
        List<Case> t = new ArrayList<>();
        // usage
        t.add(c("unknown command", "nosuchcommand").says("Unmatched argument", "nosuchcommand"));
        t.add(c("unknown option", "train", "--bogus").says("Unknown option", "--bogus"));
        t.add(c("missing required option", "generate", "--prompt", "hi").says("Missing required option", "--model"));
        t.add(c("mistyped number", "generate", "--model", "$R/m", "--prompt", "hi", "-n", "abc").says("-n", "abc"));
        t.add(c("version", "--version").exit(0).says("grpo4j 0.1.0"));
        t.add(c("--debug shows the stack trace", "train", "--config", "$R/empty.json", "--debug").says("$R/empty.json", "empty").trace());
        t.add(c("--debug before the command", "--debug", "info", "--world", "0").says("--world must be >= 1").trace());

        // info
        t.add(c("info --world 0", "info", "--world", "0").says("--world must be >= 1, got 0"));
        t.add(c("info --world without --model", "info", "--world", "8").says("--world 8 sizes --model's memory estimate: give --model DIR"));
        t.add(c("no command", new String[0]).says("grpo4j: no command given"));
        t.add(c("info missing model", "info", "--model", "$R/nonexist").says("$R/nonexist", "not found"));
        t.add(c("info unknown backend", "info", "--backend", "foo").says("unknown backend \"foo\""));
        t.add(c("info broken config.json", "info", "--model", "$R/mbadconfig").says("$R/mbadconfig/config.json", "not valid JSON"));
        t.add(c("info model", "info", "--backend", "cpu", "--model", "$R/m").exit(0).says("params    163,776"));

        // init-model
        t.add(c("init-model into a model", "init-model", "--out", "$R/m").says("$R/m", "not empty"));
        t.add(c("init-model --out empty", "init-model", "--out", "").says("--out is empty"));
        // a misspelled required option is named (picocli saw a missing --out first, and said only that)
        t.add(c("init-model --outt", "init-model", "--preset", "tiny", "--outt", "$R/x").says("Unknown options: '--outt'"));
        t.add(c("export --to", "export", "--from", "$R/run", "--to", "$R/x").says("Unknown options: '--to'"));
        // each command's template choices, its own included, in one list
        t.add(c("export unknown template", "export", "--from", "$R/run", "--out", "$R/x", "--chat-template", "chatml")
                .says("--chat-template: unknown chat template \"chatml\" (expected tulu, llama3, r1_simple_chat, r1_simple_chat_postpend_think, tokenizer, run or keep)"));
        t.add(c("eval unknown template", "eval", "--model", "$R/run", "--data", "$R/data/tiny.jsonl:1", "--chat-template", "chatml")
                .says("--chat-template: unknown chat template \"chatml\" (expected", "tokenizer or run)"));
        t.add(c("init-model bad dtype", "init-model", "--out", "$R/x", "--dtype", "F16").says("--dtype", "F16")
                .after(r -> assertFalse(Files.exists(r.resolve("x")))));
        t.add(c("init-model bad preset", "init-model", "--out", "$R/x", "--preset", "big").says("unknown preset \"big\""));
        t.add(c("init-model missing tokenizer", "init-model", "--out", "$R/x", "--tokenizer", "$R/nonexist").says("$R/nonexist", "not found"));
        t.add(c("init-model 8b without --config-only", "init-model", "--out", "$R/x", "--preset", "llama-3.1-8b").says("--config-only"));
        t.add(c("init-model", "init-model", "--out", "$R/new-model").exit(0).writes("new-model")
                .after(r -> assertTrue(Files.isRegularFile(r.resolve("new-model/model.safetensors")))));

        // tokenize
        String userChat = "[{\"role\":\"User\",\"content\":\"Hi\"}]";
        t.add(c("tokenize role User", "tokenize", "--model", "$R/m", "--chat-json", userChat).says("--chat-json", "\"User\"", "system, user, assistant"));
        t.add(c("tokenize @file role User", "tokenize", "--model", "$R/m", "--chat-json", "@$R/chat-User.json").says("$R/chat-User.json", "\"User\""));
        t.add(c("tokenize two chats", "tokenize", "--model", "$R/m", "--chat-json", "[{\"role\": \"user\", \"content\": \"a\"}] [{\"role\": \"user\", \"content\": \"b\"}]")
                .says("--chat-json", "not valid JSON: more than one JSON value"));
        t.add(c("tokenize @file missing", "tokenize", "--model", "$R/m", "--chat-json", "@$R/nonexist.json").says("$R/nonexist.json", "not found"));
        t.add(c("tokenize @file broken", "tokenize", "--model", "$R/m", "--chat-json", "@$R/chat-broken.json").says("$R/chat-broken.json", "not valid JSON"));
        t.add(c("tokenize @file (not picocli's @-expansion)", "tokenize", "--model", "$R/m", "--chat-json", "@$R/chat.json", "--template", "tulu")
                .exit(0).says("<|user|>\\nHi\\n<|assistant|>\\n"));
        t.add(c("tokenize empty chat", "tokenize", "--model", "$R/m", "--chat-json", "[]").says("--chat-json: the chat must be a non-empty list"));
        // a run or a checkpoint stands for its model, as in generate, eval and export (its config.json is the run's)
        t.add(c("tokenize a checkpoint", "tokenize", "--model", "$R/run/checkpoints/step_1", "--chat-json", "@$R/chat.json", "--template", "tulu")
                .exit(0).says("<|user|>\\nHi\\n<|assistant|>\\n"));
        t.add(c("info a run", "info", "--backend", "cpu", "--model", "$R/run").exit(0).says("params    163,776"));
        t.add(c("tokenize broken chat", "tokenize", "--model", "$R/m", "--chat-json", "[{").says("--chat-json", "not valid JSON"));
        t.add(c("tokenize unknown template", "tokenize", "--model", "$R/m", "--chat-json", "[{\"role\":\"user\",\"content\":\"Hi\"}]", "--template", "nope")
                .says("--template: unknown chat template \"nope\"", "tokenizer)"));
        t.add(c("tokenize --model empty", "tokenize", "--model", "", "--text", "x").says("--model is empty"));
        t.add(c("tokenize missing model", "tokenize", "--model", "$R/nonexist", "--text", "x").says("$R/nonexist", "not found"));
        t.add(c("tokenize text and chat", "tokenize", "--model", "$R/m", "--text", "x", "--chat-json", "[]").says("mutually exclusive"));

        // generate
        String[] gen = {"generate", "--model", "$R/m", "--prompt", "Tom has 2 pens.", "--backend", "cpu"};
        t.add(c("generate -n 0", cat(gen, "-n", "0")).says("-n must be >= 1, got 0"));
        t.add(c("generate huge -n", cat(gen, "-n", "2000000000", "--max-tokens", "1")).says("-n 2000000000", "needs", "heap"));
        t.add(c("generate huge --kv-blocks", cat(gen, "--kv-blocks", "2000000000")).says("--kv-blocks 2000000000", "fits"));
        t.add(c("generate --kv-blocks 0", cat(gen, "--kv-blocks", "0")).says("--kv-blocks must be >= 1, got 0"));
        t.add(c("generate --kv-admission lazy", cat(gen, "--kv-admission", "lazy")).says("--kv-admission must be on_demand or worst_case, got lazy"));
        t.add(c("generate --max-tokens 0", cat(gen, "--max-tokens", "0")).says("--max-tokens must be >= 1, got 0"));
        t.add(c("generate --max-tokens beyond the context", cat(gen, "--max-tokens", "100000")).says("--max-tokens 100000", "max_position_embeddings 2048"));
        t.add(c("generate --temperature NaN", cat(gen, "--temperature", "NaN")).says("--temperature", "NaN"));
        t.add(c("generate --top-p 0", cat(gen, "--top-p", "0")).says("--top-p must be in (0, 1], got 0.0"));
        t.add(c("generate --top-k -1", cat(gen, "--top-k", "-1")).says("--top-k must be >= 0"));
        t.add(c("generate unknown backend", "generate", "--model", "$R/m", "--prompt", "x", "--backend", "gpu").says("unknown backend \"gpu\""));
        t.add(c("generate NaN model", "generate", "--model", "$R/mnan", "--prompt", "x", "--backend", "cpu")
                .says("$R/mnan", "model.layers.0.mlp.up_proj.weight", "NaN"));
        t.add(c("generate truncated safetensors", "generate", "--model", "$R/mdamaged", "--prompt", "x", "--backend", "cpu")
                .says("$R/mdamaged/model.safetensors"));
        t.add(c("generate broken config.json", "generate", "--model", "$R/mbadconfig", "--prompt", "x").says("$R/mbadconfig/config.json", "not valid JSON"));
        t.add(c("generate broken generation_config.json", "generate", "--model", "$R/mbadgen", "--prompt", "x", "--backend", "cpu")
                .says("$R/mbadgen/generation_config.json: not valid JSON", "generation stops at its eos_token_id"));
        t.add(c("eval broken generation_config.json", "eval", "--model", "$R/mbadgen", "--data", "$R/data/tiny.jsonl:1", "--max-tokens", "2")
                .says("$R/mbadgen/generation_config.json: not valid JSON"));
        t.add(c("tokenize broken tokenizer.json", "tokenize", "--model", "$R/mbadtok", "--text", "x").says("$R/mbadtok/tokenizer.json", "not valid JSON"));
        t.add(c("generate missing model", "generate", "--model", "$R/nonexist", "--prompt", "x").says("$R/nonexist", "not found"));
        t.add(c("generate --model empty", "generate", "--model", "", "--prompt", "x").says("--model is empty"));
        t.add(c("generate unknown template", cat(gen, "--template", "nope")).says("--template: unknown chat template \"nope\"", "tokenizer or none)"));
        t.add(c("generate", cat(gen, "-n", "2", "--max-tokens", "4", "--json")).exit(0).says("\"finish_reason\""));

        // reward
        t.add(c("reward output = input", "reward", "--input", "$R/rows.jsonl", "--output", "$R/rows.jsonl").says("--output", "$R/rows.jsonl", "--input"));
        t.add(c("reward missing input", "reward", "--input", "$R/nonexist.jsonl").says("$R/nonexist.jsonl", "not found"));
        t.add(c("reward input is a directory", "reward", "--input", "$R/data").says("$R/data", "directory"));
        t.add(c("reward --timeout NaN", "reward", "--input", "$R/rows.jsonl", "--output", "$R/other.jsonl", "--timeout", "NaN").says("--timeout", "NaN"));
        t.add(c("reward --timeout 0", "reward", "--input", "$R/rows.jsonl", "--timeout", "0").says("--timeout", "got 0.0"));
        t.add(c("reward --verification-reward -1", "reward", "--input", "$R/rows.jsonl", "--verification-reward", "-1").says("--verification-reward", "-1.0"));
        t.add(c("reward unknown compat", "reward", "--input", "$R/rows.jsonl", "--verifier-compat", "bogus")
                .says("--verifier-compat must be \"fixed\"", "\"open-instruct-3f37c29\"", "got \"bogus\""));
        // "fixed", the default --help names, is a value too
        t.add(c("reward --verifier-compat fixed", "reward", "--input", "$R/rows.jsonl", "--output", "$R/fixed.jsonl", "--verifier-compat", "fixed")
                .exit(0).says("4 rows").writes("fixed.jsonl"));
        t.add(c("reward existing output", "reward", "--input", "$R/rows.jsonl", "--output", "$R/other.jsonl")
                .says("--output $R/other.jsonl exists", "--overwrite to replace it")); // (other.jsonl unchanged: checked for every case)
        t.add(c("reward --overwrite", "reward", "--input", "$R/rows.jsonl", "--output", "$R/other.jsonl", "--overwrite").exit(0).says("4 rows")
                .writes("other.jsonl"));
        t.add(c("reward output directory missing", "reward", "--input", "$R/rows.jsonl", "--output", "$R/nodir/out.jsonl").says("$R/nodir", "not found"));
        // a line of two JSON values is a bad line (the second one was dropped), its position a column of that line
        t.add(c("reward two values a line", "reward", "--input", "$R/two.jsonl", "--output", "$R/two-scored.jsonl").exit(0).says("1 rows", "bad lines 1")
                .writes("two-scored.jsonl").after(r -> {
                    String out = Files.readString(r.resolve("two-scored.jsonl"));
                    assertTrue(out.contains("two.jsonl:1: not valid JSON: more than one JSON value: something follows the first one (column 55)"), out);
                }));
        t.add(c("reward rows", "reward", "--input", "$R/rows.jsonl", "--output", "$R/scored.jsonl").exit(0).says("4 rows", "bad lines 2").writes("scored.jsonl")
                .after(r -> {
                    List<String> out = Files.readAllLines(r.resolve("scored.jsonl"));
                    assertEquals(4, out.size(), String.join("\n", out));
                    assertTrue(out.get(0).contains("so 7 \\ud800 x") && out.get(0).contains("\"reward\":10.0"), "a lone surrogate survives: " + out.get(0));
                    assertTrue(out.get(1).contains("no verifier for dataset \\\"foo\\\" (known: gsm8k, ifeval, math)"), out.get(1));
                    assertTrue(out.get(2).contains("rows.jsonl:3: not valid UTF-8"), out.get(2));
                    assertTrue(out.get(3).contains("rows.jsonl:4: not valid JSON"), out.get(3));
                    try (Stream<Path> s = Files.list(r)) { assertTrue(s.noneMatch(p -> p.toString().endsWith(".tmp")), "no temporary file left"); }
                }));

        // train: config problems, reported by --dry-run and by a real start alike
        t.add(c("train without config", "train").says("--config is required"));
        t.add(c("train missing config", "train", "--config", "$R/nonexist.json").says("$R/nonexist.json", "not found"));
        t.add(c("train empty config", "train", "--config", "$R/empty.json").says("$R/empty.json", "empty"));
        t.add(c("train config [1]", "train", "--config", "$R/array.json").says("$R/array.json", "JSON object", "array"));
        t.add(c("train broken config", "train", "--config", "$R/broken.json").says("$R/broken.json", "not valid JSON", "line 1"));
        t.add(c("train unknown key", "train", "--config", "$R/unknown.json").says("$R/unknown.json", "unknown key \"foo\""));
        t.add(c("train --set without =", "train", "--config", T, "--set", "learning_rate").says("--set expects key=value", "learning_rate"));
        t.add(c("train --set on a non-object", "train", "--config", T, "--set", "sft_warmup=3", "--dry-run").says("sft_warmup", "wrong type"));
        for (String[] kv : new String[][] {
            {"num_training_steps=2.5", "num_training_steps", "2.5"},
            {"verification_reward=NaN", "verification_reward", "NaN"},
            {"learning_rate=Infinity", "learning_rate", "Infinity"},
            {"adam_eps=0", "adam_eps", "0.0"},
            {"adam_beta2=1.5", "adam_beta2", "1.5"},
            {"weight_decay=-1", "weight_decay", "-1.0"},
            {"temperature=0", "temperature", "0.0"},
            {"top_p=NaN", "top_p", "NaN"},
            {"cliprange=NaN", "cliprange", "NaN"},
            {"penalty_reward_value=NaN", "penalty_reward_value", "NaN"},
            {"num_training_steps=-1", "num_training_steps", "-1"},
            {"num_training_steps=0&&total_episodes=5", "total_episodes 5", "16 completions"},
            {"local_mini_batch_size=7", "local_mini_batch_size 7", "16"},
            {"local_rollout_batch_size=10000000", "40000000 completions per step"},
            {"kl_estimator=kl9", "kl9"},
            {"lr_scheduler_type=inverse_sqrt", "lr_scheduler_type", "inverse_sqrt", "cosine_with_restarts"},
            {"output_dir=", "output_dir is empty"},
            {"chat_template_name=foo", "chat_template_name", "\"foo\""},
            {"backend=tpu", "unknown backend \"tpu\""},
            {"model_name_or_path=init:huge", "init:huge"},
            {"response_length=100000", "response_length 100000", "max_position_embeddings 2048"},
            {"dataset_mixer_list=[\"data/tiny.jsonl\"]", "dataset_mixer_list must alternate", "1 items"},
            {"dataset_mixer_list=[\"data/tiny.jsonl\",\"\"]", "dataset_mixer_list[1]", "empty"},
            {"dataset_mixer_eval_list=[\"data/tiny.jsonl\",\"x\"]", "dataset_mixer_eval_list", "\"x\""},
            {"dataset_mixer_eval_list=[\"data/tiny.jsonl\",\"100\"]", "dataset_mixer_eval_list asks for 100 rows", "64"},
            {"dataset_mixer_list=[\"data/nonexist.jsonl\",\"1.0\"]", "data/nonexist.jsonl", "looked for"},
            {"dataset_mixer_list=[\"nobody/nodata\",\"1.0\"]", "nobody/nodata", "never downloads"},
            {"dataset_mixer_list=[\"data/User.jsonl\",\"1.0\"]", "User.jsonl:9", "\"User\"", "system, user, assistant"},
            {"dataset_mixer_list=[\"data/foo.jsonl\",\"1.0\"]", "foo.jsonl:9", "dataset \"foo\" has no verifier", "gsm8k, ifeval, math"},
            {"dataset_mixer_list=[\"data/broken.jsonl\",\"1.0\"]", "broken.jsonl:3", "not valid JSON"},
            {"dataset_mixer_list=[\"data/empty-dir\",\"1.0\"]", "data/empty-dir", "no .jsonl or .parquet files"},
            {"dataset_mixer_list=null", "dataset_mixer_list must not be null"},
            {"sft_warmup=null", "sft_warmup must not be null"},
            {"max_prompt_token_length=3", "all 64 prompts are longer than max_prompt_token_length 3", "shortest has"},
            {"max_token_length=3", "all 64 rows are dropped: 0 for a prompt longer than max_prompt_token_length 64, 64 for a whole chat",
                    "longer than max_token_length 3"},
            {"local_rollout_batch_size=100", "64 prompts fit", "fewer than one step's 100"},
            {"kv_cache_mib=" + Math.max(20000, 2 * (Runtime.getRuntime().maxMemory() >> 20)), "kv_cache_mib", "does not fit", "fits"},
            {"kv_cache_mib=100000000", "kv_cache_mib 100000000 does not fit"},
            {"precision=fp16", "precision must be auto, fp32 or bf16, got fp16"},
            {"lm_head_grad=fp8", "lm_head_grad must be bf16 or split, got fp8"},
            {"attention_dq=fast", "attention_dq must be pass, fixed or atomic, got fast"},
            {"attention_kernels=fa3", "attention_kernels must be mma or wgmma, got fa3"},
            {"old_logprobs=never", "old_logprobs must be auto or recompute, got never"},
            {"pass_packing=micro_batch", "pass_packing must be tokens or batch_size, got micro_batch"},
            {"kv_admission=lazy", "kv_admission must be on_demand or worst_case, got lazy"},
            {"recompute_layers=-1", "recompute_layers must be auto, all or a number of layers (0 or more), got -1"},
            {"recompute_layers=2.5", "recompute_layers must be auto, all or a number of layers, got 2.5"},
            {"recomputeLayers=3", "unknown key \"recomputeLayers\""},
            {"rank_balancing=rollouts", "rank_balancing must be tokens or none, got rollouts"},
            {"train_prefix_sharing=maybe", "key \"train_prefix_sharing\" has the wrong type: \"maybe\" (expected true or false)"},
            {"num_training_steps=abc", "key \"num_training_steps\" has the wrong type", "abc"},
            {"dataset_mixer_list=[\"data/empty.jsonl\",\"1.0\"]", "dataset_mixer_list: the datasets have no rows (", "data/empty.jsonl)"},
            {"lm_head_scratch_mib=-1", "lm_head_scratch_mib must be in [0, 8191], got -1"},
            {"kv_cache_fraction=0", "kv_cache_fraction must be in (0, 1], got 0.0"},
            {"kv_cache_mib=0&&kv_cache_fraction=1e-9", "the KV cache does not fit", "kv_cache_fraction 1.0E-9 may hold the cache", "a larger kv_cache_fraction"},
            {"reduce_bucket_size=10", "reduce_bucket_size must be >= 1024 elements, got 10"},
            {"nccl_timeout_s=0", "nccl_timeout_s must be >= 1, got 0"},
            {"keep_last_n_checkpoints=0", "keep_last_n_checkpoints must be -1 (keep every checkpoint) or >= 1, got 0"},
            {"older_checkpoints=optimizer", "older_checkpoints must be delete or model, got \"optimizer\""},
            {"model_name_or_path=$R/mbadgen", "$R/mbadgen/generation_config.json: not valid JSON"},
            {"stop_token_ids=[5,-1]", "stop_token_ids entries must be token ids >= 0, got [5, -1]"},
            {"stop_token_ids=\"abc\"", "key \"stop_token_ids\" has the wrong type", "(expected a list of token ids)"},
            {"stop_token_ids=[100000]", "stop_token_ids: 100000 is not a token id of model_name_or_path", "(vocab_size "},
            {"model_name_or_path=$R/nonexist", "$R/nonexist", "no such model directory"},
            {"model_name_or_path=nobody/model", "nobody/model", "never downloads"},
            {"model_name_or_path=$R/m8b", "$R/m8b: 8,030,261,248 parameters", "at most 2^31 - 9 elements per tensor"}, // cpu: refused; cuda: world_size >= 4
            {"model_name_or_path=$R/m1b", "the run needs about", "model states", "1,235,814,400 parameters", "to fit: fewer samples in flight",
                    "gradient_checkpointing true", "more GPUs"},
        }) {
            String[] says = Arrays.copyOfRange(kv, 1, kv.length);
            List<String> sets = new ArrayList<>();
            for (String x : kv[0].split("&&")) sets.addAll(List.of("--set", x));
            String out = "out-" + t.size();
            t.add(c("dry-run " + kv[0], cat(cat(new String[] {"train", "--config", T}, sets.toArray(String[]::new)), "--dry-run")).says(says)
                    .neverSays(kv[0].contains("nonexist.jsonl") ? "huggingface-cli" : "\u0000"));
            t.add(c("train " + kv[0], cat(cat(new String[] {"train", "--config", T}, sets.toArray(String[]::new)), "--output", "$R/" + out)).says(says)
                    .after(r -> assertFalse(Files.exists(r.resolve(out)), "no run directory is created")));
        }
        t.add(c("dry-run sft warm-up without answers", "train", "--config", T, "--set", "dataset_mixer_list=[\"data/noanswer.jsonl\",\"1.0\"]",
                "--set", "sft_warmup.steps=5", "--dry-run").says("sft_warmup.steps 5", "no training row ends with an assistant turn"));
        t.add(c("dry-run", "train", "--config", T, "--dry-run", "--output", "$R/never").exit(0).says("config OK", "training prompts", "64", "memory",
                "checkpoints                          about ", " each (fp32 weights and AdamW moments), 3 over the run, all kept",
                "training passes", "as many rollouts as fit the activations of", "kv admission", "on_demand")
                .after(r -> assertFalse(Files.exists(r.resolve("never")))));
        if (!org.grpo4j.internal.backend.CudaRuntime.probe().available()) // a GPU config checked on a machine without a GPU (a login node)
            t.add(c("dry-run of a cuda config without a GPU", "train", "--config", T, "--set", "backend=cuda", "--dry-run", "--output", "$R/never").exit(0)
                    .says("no CUDA device here", "the memory below is per GPU", "memory", "model states", "config OK but for the device")
                    .after(r -> assertFalse(Files.exists(r.resolve("never")))));
        t.add(c("dry-run into a model directory", "train", "--config", T, "--dry-run", "--output", "$R/m").says("$R/m", "not a grpo4j run directory"));
        t.add(c("dry-run --resume", "train", "--resume", "$R/run", "--dry-run", "--world-size", "2", "--set", "keep_last_n_checkpoints=1").exit(0)
                .says("derived quantities of resuming $R/run/checkpoints/step_2 (step 2)", "world_size                           2",
                        "(keep_last_n_checkpoints 1)", "output directory                     $R/run (the run's own)", "config OK for 2 ranks"));
        t.add(c("dry-run --resume after the data changed", "train", "--resume", "$R/rdd", "--dry-run").writes("rdd", "data/tiny2.jsonl").before(r -> {
            copyRun(r, "rdd");
            List<String> rows = new ArrayList<>(Files.readAllLines(r.resolve("data/tiny.jsonl")));
            rows.add(rows.get(0)); // one more row: another fingerprint
            Files.write(r.resolve("data/tiny2.jsonl"), rows);
            Path cfg = r.resolve("rdd/checkpoints/step_2/config.json");
            Files.writeString(cfg, Files.readString(cfg).replace("data/tiny.jsonl", "data/tiny2.jsonl"));
        }).says("the training data changed since $R/rdd/checkpoints/step_2", "an exact resume is impossible"));
        java.nio.channels.FileChannel[] held = {null}; // another run's lock, taken through a channel of this JVM
        t.add(c("dry-run --resume of a run in use", "train", "--resume", "$R/run", "--dry-run").before(r -> {
            held[0] = java.nio.channels.FileChannel.open(r.resolve("run/.grpo4j.lock"), java.nio.file.StandardOpenOption.READ,
                    java.nio.file.StandardOpenOption.WRITE);
            assertNotNull(held[0].tryLock());
        }).after(r -> held[0].close()).says("$R/run: in use by another grpo4j run (pid ", "wait for it to end"));
        t.add(c("dry-run --resume with a refused --set", "train", "--resume", "$R/run", "--dry-run", "--set", "seed=5").says("with --set seed", "data order"));
        t.add(c("dry-run --resume elsewhere", "train", "--resume", "$R/run", "--dry-run", "--output", "$R/elsewhere").says("in its own directory", "$R/elsewhere"));
        t.add(c("train world_size 20", "train", "--config", T, "--set", "world_size=20", "--output", "$R/ws")
                .says("64 prompts fit", "fewer than one step's 80 prompts", "world_size 20", "never splits across ranks"));
        t.add(c("train world_size 2 on cuda", "train", "--config", T, "--set", "world_size=2", "--set", "backend=cuda", "--output", "$R/ws")
                .says("world_size 2 on cuda", "tools/launch"));

        // train: run directories
        t.add(c("train into an earlier run", "train", "--config", T, "--output", "$R/run").says("$R/run", "holds an earlier run", "continue it with --resume $R/run, replace it with --overwrite, or"));
        t.add(c("train into an HF model directory", "train", "--config", T, "--output", "$R/m").says("$R/m", "not a grpo4j run directory"));
        t.add(c("train --overwrite into an HF model directory", "train", "--config", T, "--output", "$R/m", "--overwrite").says("$R/m", "not a grpo4j run directory"));
        t.add(c("train --output empty", "train", "--config", T, "--output", "").says("output directory is empty")
                .after(r -> assertFalse(Files.exists(Path.of("config.json")), "nothing written to the working directory")));
        t.add(c("train --output a file", "train", "--config", T, "--output", "$R/t.json").says("$R/t.json", "not a directory"));
        t.add(c("train --overwrite", "train", "--config", T, "--set", "num_training_steps=1", "--output", "$R/over", "--overwrite").exit(0).writes("over")
                .before(r -> org.grpo4j.internal.util.TestFiles.copyTree(r.resolve("run"), r.resolve("over")))
                .after(r -> {
                    assertEquals(1, Files.readAllLines(r.resolve("over/metrics.jsonl")).size(), "the earlier run's metrics are gone, not appended to");
                    assertFalse(Files.exists(r.resolve("over/checkpoints/step_2")), "the earlier run's checkpoints are gone");
                    assertTrue(Files.isRegularFile(r.resolve("over/checkpoints/step_1/trainer_state.json")));
                    assertTrue(Files.readString(r.resolve("over/config.json")).contains("\"num_training_steps\" : 1"));
                    assertEquals(Files.getPosixFilePermissions(r.resolve("over/plots")), Files.getPosixFilePermissions(r.resolve("over/checkpoints/step_1")),
                            "checkpoints are as readable as the run's other outputs");
                }));
        // a directory where a file belongs and the other way round, and half a model directory: said as such, not "not found"
        t.add(c("train --config a directory", "train", "--config", "$R/data").says("$R/data: is a directory (the config is a JSON file)"));
        t.add(c("train model_name_or_path a file", "train", "--config", T, "--set", "model_name_or_path=$R/t.json", "--dry-run")
                .says("model_name_or_path $R/t.json: is a file"));
        t.add(c("generate --model a file", "generate", "--model", "$R/t.json", "--prompt", "x").says("$R/t.json: is a file; --model names a model directory"));
        t.add(c("tokenize @directory", "tokenize", "--model", "$R/m", "--chat-json", "@$R/data").says("$R/data: is a directory (--chat-json @FILE"));
        IoAction noConfig = r -> {
            if (Files.exists(r.resolve("mnocfg"))) return;
            org.grpo4j.internal.util.TestFiles.copyTree(r.resolve("m"), r.resolve("mnocfg"));
            Files.delete(r.resolve("mnocfg/config.json"));
        };
        t.add(c("eval of an empty file", "eval", "--model", "$R/m", "--data", "$R/data/empty.jsonl").says("--data $R/data/empty.jsonl: no rows"));
        t.add(c("eval a model without config.json", "eval", "--model", "$R/mnocfg", "--data", "$R/data/tiny.jsonl:1").before(noConfig).writes("mnocfg")
                .says("$R/mnocfg/config.json: not found (no config.json: a model directory holds config.json and model.safetensors"));
        t.add(c("export a model without config.json", "export", "--from", "$R/mnocfg", "--out", "$R/exp-nocfg").before(noConfig).writes("mnocfg")
                .says("$R/mnocfg/config.json: not found (no config.json"));
        // outputs that cannot be created (/proc takes no new files): the message names the user's path, never a temporary
        t.add(c("train into /proc", "train", "--config", T, "--output", "/proc/grpo4j-run")
                .says("the output directory /proc/grpo4j-run cannot be created: no such file or directory (in /proc)"));
        t.add(c("dry-run into /proc", "train", "--config", T, "--dry-run", "--output", "/proc/grpo4j-run")
                .says("the output directory /proc/grpo4j-run cannot be created"));
        t.add(c("init-model into /proc", "init-model", "--out", "/proc/grpo4j-model").says("/proc/grpo4j-model: cannot write: no such file or directory in /proc")
                .neverSays(".tmp"));
        t.add(c("reward --output in /proc", "reward", "--input", "$R/rows.jsonl", "--output", "/proc/grpo4j-scored.jsonl")
                .says("/proc/grpo4j-scored.jsonl: cannot write").neverSays(".tmp"));
        t.add(c("eval --output in /proc", "eval", "--model", "$R/m", "--data", "$R/data/tiny.jsonl:1", "--max-tokens", "2", "--output",
                "/proc/grpo4j-eval.jsonl").says("/proc/grpo4j-eval.jsonl: cannot write").neverSays(".tmp"));
        // a start that fails while loading the weights (after taking the new directory's lock) leaves no directory behind
        t.add(c("train truncated model", "train", "--config", T, "--set", "model_name_or_path=$R/mdamaged", "--output", "$R/damagedrun")
                .says("$R/mdamaged/model.safetensors").after(r -> assertFalse(Files.exists(r.resolve("damagedrun")), "no run directory is left")));
        t.add(c("train truncated model, nested output", "train", "--config", T, "--set", "model_name_or_path=$R/mdamaged", "--output",
                "$R/made/for/it").says("$R/mdamaged/model.safetensors")
                .after(r -> assertFalse(Files.exists(r.resolve("made")), "the parents it created are removed with the run directory")));
        t.add(c("train NaN model", "train", "--config", T, "--set", "model_name_or_path=$R/mnan", "--output", "$R/nanrun")
                .says("$R/mnan", "model.layers.0.mlp.up_proj.weight", "NaN"));
        t.add(c("train diverging", "train", "--config", T, "--set", "learning_rate=1e30", "--set", "num_training_steps=6", "--output", "$R/diverged")
                .exit(1).says("training aborted at step", "non-finite", "checkpoints/step_0").writes("diverged")
                .after(r -> {
                    try (Stream<Path> s = Files.list(r.resolve("diverged/checkpoints"))) {
                        assertEquals(List.of("step_0"), s.map(p -> p.getFileName().toString()).sorted().toList(),
                                "no checkpoint of a non-finite state; the last good one stays");
                    }
                    assertTrue(Files.isRegularFile(r.resolve("diverged/checkpoints/step_0/model/model.safetensors")));
                }));

        // train: resume
        t.add(c("resume with --config", "train", "--resume", "$R/run", "--config", T).says("--config cannot be combined with --resume"));
        t.add(c("resume with --set seed", "train", "--resume", "$R/run", "--set", "seed=2").says("$R/run", "with --set seed", "data order"));
        t.add(c("resume with --set world_size", "train", "--resume", "$R/run", "--set", "world_size=2").says("--world-size M"));
        t.add(c("resume with --set learning_rate", "train", "--resume", "$R/run", "--set", "learning_rate=1e-4")
                .says("learning_rate 1.0E-4 (was ", "what the run trains from step 2 on", "--allow-changes"));
        t.add(c("resume with a horizon already passed", "train", "--resume", "$R/run", "--set", "num_training_steps=1")
                .says("would end at step 1", "at step 2 already"));
        t.add(c("resume with --set of an unknown key", "train", "--resume", "$R/run", "--set", "bogus_key=1").says("unknown key \"bogus_key\""));
        t.add(c("--allow-changes without --resume", "train", "--config", T, "--allow-changes").says("--allow-changes lets --set change a resumed run"));
        t.add(c("resume a finished run for longer", "train", "--resume", "$R/rx", "--set", "num_training_steps=3", "--set", "save_freq=2").exit(0)
                .says("resuming at step 2 with num_training_steps 3 (was 2), save_freq 2 (was 1)", "finished at step 3").writes("rx")
                .before(r -> copyRun(r, "rx")).after(r -> {
                    String st = Files.readString(r.resolve("rx/checkpoints/step_3/trainer_state.json"));
                    assertTrue(st.contains("\"config_changes\"") && st.contains("\"key\" : \"num_training_steps\"") && st.contains("\"kind\" : \"how\""), st);
                    assertTrue(Files.readString(r.resolve("rx/checkpoints/step_3/config.json")).contains("\"num_training_steps\" : 3"));
                }));
        t.add(c("resume with --overwrite", "train", "--resume", "$R/run", "--overwrite").says("--overwrite and --resume"));
        t.add(c("resume into another directory", "train", "--resume", "$R/run", "--output", "$R/elsewhere").says("$R/run", "$R/elsewhere", "copy"));
        t.add(c("info --reference-sharding bogus", "info", "--model", "$R/m", "--reference-sharding", "bogus").says("--reference-sharding must be auto, layers or none",
                "bogus"));
        t.add(c("train --world-size without --resume", "train", "--config", T, "--world-size", "2").says("--world-size reshards a resumed run", "--set world_size=N"));
        t.add(c("resume --world-size 0", "train", "--resume", "$R/run", "--world-size", "0").says("--world-size must be >= 1, got 0"));
        t.add(c("resume --world-size that splits no batch", "train", "--resume", "$R/rr", "--world-size", "3").writes("rr").before(r -> copyRun(r, "rr"))
                .says("resharding", "$R/rr", "from 1 to 3 ranks", "do not split over 3 ranks"));
        t.add(c("resume missing", "train", "--resume", "$R/nonexist").says("$R/nonexist", "not found"));
        t.add(c("resume a model directory", "train", "--resume", "$R/m").says("$R/m", "no complete checkpoint"));
        t.add(c("resume a finished run", "train", "--resume", "$R/rr").exit(0).says("already finished at step 2: nothing to train",
                "--set num_training_steps=N (N > 2)").writes("rr").before(r -> copyRun(r, "rr")));
        t.add(resumeDamaged("resume empty config.json", "checkpoints/step_2/config.json", "", "checkpoints/step_2/config.json", "empty"));
        t.add(resumeDamaged("resume config.json [1]", "checkpoints/step_2/config.json", "[1]", "checkpoints/step_2/config.json", "JSON object", "array"));
        t.add(resumeDamaged("resume negative step", "checkpoints/step_2/trainer_state.json", "{\"training_step\": -3}", "trainer_state.json", "training_step", "-3"));
        t.add(resumeDamaged("resume non-numeric step", "checkpoints/step_2/trainer_state.json", "{\"training_step\": \"x\"}", "trainer_state.json", "training_step", "\"x\""));
        t.add(resumeDamaged("resume broken trainer_state", "checkpoints/step_2/trainer_state.json", "{", "trainer_state.json", "not valid JSON"));
        t.add(c("resume with a step that does not match its directory", "train", "--resume", "$R/rr").writes("rr").before(r -> {
            copyRun(r, "rr");
            Path f = r.resolve("rr/checkpoints/step_2/trainer_state.json");
            Files.writeString(f, Files.readString(f).replace("\"training_step\" : 2", "\"training_step\" : 1"));
        }).says("trainer_state.json", "training_step 1", "step_2"));
        t.add(c("resume without the reference policy", "train", "--resume", "$R/rr").writes("rr")
                .before(r -> { copyRun(r, "rr"); AtomicDir.deleteTree(r.resolve("rr/checkpoints/step_0")); }).says("step_0", "reference policy", "missing"));
        t.add(c("resume a damaged checkpoint model", "train", "--resume", "$R/rr").writes("rr").before(r -> {
            copyRun(r, "rr");
            Path st = r.resolve("rr/checkpoints/step_2/model/model.safetensors");
            Files.write(st, Arrays.copyOf(Files.readAllBytes(st), 100));
        }).says("checkpoints/step_2/model/model.safetensors"));
        t.add(c("resume from an older checkpoint", "train", "--resume", "$R/rr/checkpoints/step_1").writes("rr").before(r -> copyRun(r, "rr"))
                .says("step_1", "not the run's newest checkpoint", "step_2"));
        t.add(c("resume a run stopped before its first checkpoint", "train", "--resume", "$R/rr").writes("rr").before(r -> {
            copyRun(r, "rr");
            AtomicDir.deleteTree(r.resolve("rr/checkpoints"));
        }).says("no complete checkpoint", "--overwrite"));
        // the newest checkpoint without its state (a copy cut short): refused, nothing deleted (it was taken for an
        // interrupted pruning, its optimizer file removed, and step 2 trained again onto it)
        t.add(c("resume a newest checkpoint without its state", "train", "--resume", "$R/rs").before(r -> {
            copyRun(r, "rs");
            Files.delete(r.resolve("rs/checkpoints/step_2/trainer_state.json"));
        }).says("$R/rs/checkpoints/step_2: has no trainer_state.json", "newest complete checkpoint step_1", "move step_2 out of"));
        // optimizer moments and step that a copy or an editor damaged: refused naming the file (the moments were
        // accepted and the run stopped steps later blaming the learning rate; the step silently broke exact resume)
        t.add(c("resume with a NaN moment", "train", "--resume", "$R/rs").before(r -> {
            copyRun(r, "rs");
            patchSafetensors(r.resolve("rs/checkpoints/step_2/optimizer.safetensors"), "exp_avg", 3, Float.NaN, null);
        }).says("$R/rs/checkpoints/step_2/optimizer.safetensors: tensor exp_avg element 3 is NaN"));
        t.add(c("resume with a negative second moment", "train", "--resume", "$R/rs").before(r -> {
            copyRun(r, "rs");
            patchSafetensors(r.resolve("rs/checkpoints/step_2/optimizer.safetensors"), "exp_avg_sq", 0, -1f, null);
        }).says("optimizer.safetensors: tensor exp_avg_sq element 0 is -1.0 (it cannot be negative)"));
        t.add(c("resume with the optimizer's step changed", "train", "--resume", "$R/rs").before(r -> {
            copyRun(r, "rs");
            patchSafetensors(r.resolve("rs/checkpoints/step_2/optimizer.safetensors"), null, 0, 0, new String[] {"\"step\":\"4\"", "\"step\":\"3\""});
        }).says("the optimizer files' metadata step 3 differs from", "optimizer_steps 4"));
        // export and eval of a checkpoint whose model lost a file: named, nothing written (export wrote a model without
        // its tokenizer, exit 0; a missing config.json was "the checkpoint has no model/ directory")
        t.add(c("export a checkpoint without its tokenizer", "export", "--from", "$R/rs", "--out", "$R/ex-notok").before(r -> {
            copyRun(r, "rs");
            Files.delete(r.resolve("rs/checkpoints/step_2/model/tokenizer.json"));
        }).says("$R/rs/checkpoints/step_2/model/tokenizer.json", "not found").after(r -> assertFalse(Files.exists(r.resolve("ex-notok")))));
        t.add(c("export a checkpoint without its model config", "export", "--from", "$R/rs", "--out", "$R/ex-nocfg").before(r -> {
            copyRun(r, "rs");
            Files.delete(r.resolve("rs/checkpoints/step_2/model/config.json"));
        }).says("$R/rs/checkpoints/step_2/model/config.json: not found"));
        t.add(c("resume after the data changed", "train", "--resume", "$R/rd").writes("rd", "data-rd.jsonl").before(r -> {
            Files.copy(r.resolve("data/tiny.jsonl"), r.resolve("data-rd.jsonl"));
            assertEquals(0, CliTest.run("train", "--config", r.resolve("t.json").toString(), "--set", "num_training_steps=1", "--set",
                    "dataset_mixer_list=[\"data-rd.jsonl\",\"1.0\"]", "--output", r.resolve("rd").toString()).code());
            List<String> rows = new ArrayList<>(Files.readAllLines(r.resolve("data-rd.jsonl")));
            rows.set(5, rows.get(5).replace("\"ground_truth\": \"", "\"ground_truth\": \"1"));
            Files.write(r.resolve("data-rd.jsonl"), rows);
        }).says("the training data changed since", "step_1", "exact resume is impossible", "model_name_or_path"));
        t.add(c("resume keeps good metrics around a torn line", "train", "--resume", "$R/rr").exit(0).writes("rr").before(r -> {
            copyRun(r, "rr");
            Path m = r.resolve("rr/metrics.jsonl");
            Files.writeString(m, "{\"training_step\": 1, \"objec\n" + Files.readString(m));
            Files.createDirectories(r.resolve("rr/checkpoints/.step_3.tmp-abc/model")); // a killed checkpoint write
        }).says("not a JSON object with a training_step", "metrics.jsonl.dropped").after(r -> {
            List<String> lines = Files.readAllLines(r.resolve("rr/metrics.jsonl"));
            assertEquals(2, lines.size(), "both valid lines survive the torn one: " + lines);
            assertTrue(lines.get(0).contains("\"training_step\":1.0") && lines.get(1).contains("\"training_step\":2.0"), lines.toString());
            assertEquals(List.of("{\"training_step\": 1, \"objec"), Files.readAllLines(r.resolve("rr/metrics.jsonl.dropped")), "the torn line is kept aside");
            assertFalse(Files.exists(r.resolve("rr/checkpoints/.step_3.tmp-abc")), "the killed write's temporary directory is removed");
        }));
        return t;
    }

    static Case resumeDamaged(String name, String file, String content, String... says) {
        return c(name, "train", "--resume", "$R/rr").writes("rr").before(r -> {
            copyRun(r, "rr");
            Files.writeString(r.resolve("rr").resolve(file), content);
        }).says(says);
    }

    /**
     * Damages a safetensors file in place: element {@code index} of fp32 tensor {@code tensor} set to {@code value}, or
     * (tensor null) the header's text {@code replace[0]} replaced by {@code replace[1]} of the same length.
     */
    static void patchSafetensors(Path file, String tensor, int index, float value, String[] replace) throws IOException {
        byte[] b = Files.readAllBytes(file);
        java.nio.ByteBuffer bb = java.nio.ByteBuffer.wrap(b).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        int n = (int) bb.getLong(0);
        String header = new String(b, 8, n, StandardCharsets.UTF_8);
        if (tensor == null) {
            assertTrue(header.contains(replace[0]), header);
            byte[] h = header.replace(replace[0], replace[1]).getBytes(StandardCharsets.UTF_8);
            assertEquals(n, h.length);
            System.arraycopy(h, 0, b, 8, n);
        } else {
            long begin = new com.fasterxml.jackson.databind.ObjectMapper().readTree(header).get(tensor).get("data_offsets").get(0).asLong();
            bb.putFloat((int) (8 + n + begin + 4L * index), value);
        }
        Files.write(file, b);
    }

    static void copyRun(Path r, String name) throws IOException {
        AtomicDir.deleteTree(r.resolve(name));
        org.grpo4j.internal.util.TestFiles.copyTree(r.resolve("run"), r.resolve(name));
    }

    static String[] cat(String[] a, String... b) {
        String[] c = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, c, a.length, b.length);
        return c;
    }

    // ---- the runner ---------------------------------------------------------------------------------------------------

    /** A Java class name or a stack frame: what a user must never see without --debug. */
    static final Pattern LEAK = Pattern.compile("(\\tat |Exception in thread|\\b(java|javax|com|org|picocli)\\.[\\w.$]*(Exception|Error)\\b"
            + "|\\b\\w+(Exception|Error): )");

    @TestFactory
    Stream<DynamicTest> everyCase() {
        List<Case> all = table();
        List<String> names = all.stream().map(x -> x.name).toList();
        assertEquals(names.size(), names.stream().distinct().count(), "case names are unique");
        return all.stream().map(k -> DynamicTest.dynamicTest(k.name, () -> check(k)));
    }

    static void check(Case k) throws Exception {
        String r = root.toString();
        k.before.run(root);
        Map<String, String> before = snapshot(root, k.writes);
        String[] args = Arrays.stream(k.args).map(a -> a.replace("$R", r)).toArray(String[]::new);
        CliTest.Run run = CliTest.run(args);
        String all = run.out() + run.err();
        String ctx = k.name + ": " + String.join(" ", args) + "\n--- stdout\n" + run.out() + "--- stderr\n" + run.err();
        assertEquals(k.exit, run.code(), "exit code of " + ctx);
        assertEquals(k.trace, LEAK.matcher(all).find(), (k.trace ? "a stack trace with --debug: " : "no stack trace or Java class name: ") + ctx);
        String where;
        if (k.exit != 0) {
            List<String> errors = run.err().lines().filter(l -> l.matches("grpo4j( [\\w-]+)?: .*") && !l.startsWith("grpo4j: cuda unavailable")).toList();
            var subcommands = Main.newCommandLine().getSubcommands().keySet();
            String command = Arrays.stream(args).filter(subcommands::contains).findFirst().map(a -> "grpo4j " + a).orElse("grpo4j");
            List<String> mine = errors.stream().filter(l -> l.startsWith(command + ": ")).toList();
            assertEquals(1, mine.size(), "exactly one error line \"" + command + ": ...\": " + ctx);
            where = mine.get(0);
            System.out.println(k.name + " -> " + run.code() + ": " + where.replace(r, "$R")); // the sweep's answers, for review
        } else {
            where = all;
        }
        for (String s : k.says) assertTrue(where.contains(s.replace("$R", r)), "message contains \"" + s.replace("$R", r) + "\": " + ctx);
        for (String s : k.neverSays) assertFalse(where.contains(s), "message does not contain \"" + s + "\": " + ctx);
        assertEquals(before, snapshot(root, k.writes), "files outside " + k.writes + " are unchanged: " + ctx);
        k.after.run(root);
    }

    /** Path to SHA-256 of every file under root (lock files aside: a failed start may leave an empty locked directory). */
    static Map<String, String> snapshot(Path root, List<String> except) throws Exception {
        Map<String, String> m = new TreeMap<>();
        MessageDigest md = MessageDigest.getInstance("SHA-256");
        try (Stream<Path> s = Files.walk(root)) {
            for (Path p : s.sorted().toList()) {
                String rel = root.relativize(p).toString().replace('\\', '/');
                if (rel.isEmpty() || p.getFileName().toString().equals(".grpo4j.lock")) continue;
                if (except.stream().anyMatch(e -> rel.equals(e) || rel.startsWith(e + "/"))) continue;
                m.put(rel, Files.isDirectory(p) ? "dir" : HexFormat.of().formatHex(md.digest(Files.readAllBytes(p))));
            }
        }
        // directories created and left empty except for a lock (a failed start after locking) do not count
        m.entrySet().removeIf(e -> e.getValue().equals("dir") && isLockOnly(root.resolve(e.getKey())));
        return m;
    }

    static boolean isLockOnly(Path dir) {
        try (Stream<Path> s = Files.list(dir)) {
            return s.allMatch(p -> p.getFileName().toString().equals(".grpo4j.lock"));
        } catch (IOException e) {
            return false;
        }
    }

    static String readQuietly(Path p) {
        try {
            return Files.readString(p);
        } catch (IOException e) {
            return "";
        }
    }
}
