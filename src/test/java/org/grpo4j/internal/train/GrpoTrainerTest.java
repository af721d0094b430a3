package org.grpo4j.internal.train;

import org.grpo4j.train.GrpoConfig;
import org.grpo4j.train.TrainingAbortedException;
import static org.junit.jupiter.api.Assertions.*;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The trainer end to end on the tiny model: short runs, exact resume after kill -9, guards, cancel. */
class GrpoTrainerTest {
    /** A small, fast configuration (no warm-up): 4 prompts x 4 samples, 8 new tokens. */
    static List<String> small(Path out, int steps) {
        return new ArrayList<>(List.of("output_dir=" + out, "num_training_steps=" + steps, "sft_warmup.steps=0", "local_rollout_batch_size=4",
                "number_samples_per_prompt=4", "local_mini_batch_size=8", "per_device_train_batch_size=4", "local_rollout_forward_batch_size=8",
                "response_length=8", "save_freq=2", "num_evals=2", "backend=\"cpu\"", "temperature=1.0"));
    }

    static GrpoConfig config(List<String> sets) throws Exception {
        return GrpoConfig.load(Path.of("examples/tiny-arith.json"), sets);
    }

    /** A run's metrics.jsonl, a map per step. */
    static List<java.util.Map<String, Double>> readMetrics(Path metrics) throws Exception {
        ObjectMapper json = new ObjectMapper();
        List<java.util.Map<String, Double>> out = new ArrayList<>();
        for (String line : Files.readAllLines(metrics)) {
            java.util.Map<String, Double> m = new java.util.LinkedHashMap<>();
            json.readTree(line).fields().forEachRemaining(e -> m.put(e.getKey(), e.getValue().asDouble()));
            out.add(m);
        }
        return out;
    }

    /** Metrics lines without the wall-clock entries. */
    static List<String> comparable(Path metrics) throws Exception {
        ObjectMapper json = new ObjectMapper();
        List<String> out = new ArrayList<>();
        for (String line : Files.readAllLines(metrics)) {
            var o = (com.fasterxml.jackson.databind.node.ObjectNode) json.readTree(line);
            List<String> drop = new ArrayList<>();
            o.fieldNames().forEachRemaining(k -> { if (k.startsWith("time/") || k.startsWith("throughput/")) drop.add(k); });
            o.remove(drop);
            out.add(o.toString());
        }
        return out;
    }

    @Test
    void twoStepRunWritesEverything(@TempDir Path tmp) throws Exception {
        Path out = tmp.resolve("run");
        List<Map<String, Double>> seen = new ArrayList<>();
        try (Trainer t = Trainer.builder(config(small(out, 2))).log(null).build()) {
            org.grpo4j.train.GrpoTrainer.Result r = t.run(new org.grpo4j.train.GrpoTrainer.Listener() {
                @Override
                public void onStep(int step, Map<String, Double> m) { seen.add(m); }
            });
            assertEquals(2, r.lastStep());
            assertFalse(r.cancelled());
        }
        assertEquals(2, seen.size());
        Map<String, Double> m = seen.get(1);
        for (String k : List.of("episode", "training_step", "lr", "objective/kl", "objective/kl3", "objective/scores", "objective/reward_std",
                "objective/verifiable_correct_rate", "val/sequence_lengths", "val/stop_token_rate", "val/ratio", "loss/policy_avg",
                "policy/approxkl_avg", "policy/clipfrac_avg", "time/generation", "time/training", "throughput/generation_tokens_per_s"))
            assertTrue(m.containsKey(k), k);
        assertEquals(2.0, m.get("training_step"));
        assertEquals(2.0 * 16, m.get("episode"));
        assertEquals(1.0, seen.get(0).get("val/ratio"), 1e-5, "the first mini-batch of a step sees ratio 1");
        assertEquals(0.0, seen.get(0).get("objective/kl"), 1e-6, "step 1: policy = reference");
        assertEquals(2, Files.readAllLines(out.resolve("metrics.jsonl")).size());
        for (String p : List.of("reward.png", "kl.png", "response_length.png", "loss.png")) assertTrue(Files.size(out.resolve("plots/" + p)) > 1000, p);
        assertTrue(Files.isDirectory(out.resolve("checkpoints/step_0/model")));
        assertTrue(Files.isRegularFile(out.resolve("checkpoints/step_2/trainer_state.json")));
        assertTrue(Files.isRegularFile(out.resolve("checkpoints/step_2/model/model.safetensors")));
        assertTrue(Files.readString(out.resolve("samples.jsonl")).contains("\"response\""));
    }

    /**
     * Eval steps (every step here) log the eval samples' scores: the numbers samples.jsonl holds. A reward with three
     * levels (10, a partial 4, and 0) by the response's length tells the counting rules apart: the correct rate counts
     * every rewarded response (as objective/verifiable_correct_rate), not only full ones.
     */
    @Test
    void evalStepsLogTheEvalSamplesScores(@TempDir Path tmp) throws Exception {
        Path out = tmp.resolve("run");
        List<Map<String, Double>> seen = new ArrayList<>();
        try (org.grpo4j.reward.Rewards r = new org.grpo4j.reward.Rewards()) {
            r.register("gsm8k", (resp, gt, row) -> org.grpo4j.reward.RewardFunction.Score.of(resp.length() % 3 == 0 ? 10 : resp.length() % 3 == 1 ? 4 : 0));
            try (Trainer t = Trainer.builder(config(small(out, 2))).rewards(r).log(null).build()) {
                t.run(new org.grpo4j.train.GrpoTrainer.Listener() {
                    @Override
                    public void onStep(int step, Map<String, Double> m) { seen.add(m); }
                });
            }
        }
        ObjectMapper json = new ObjectMapper();
        int full = 0, partial = 0, none = 0;
        for (int step = 1; step <= 2; step++) {
            double rewarded = 0, score = 0, tokens = 0, n = 0;
            for (String line : Files.readAllLines(out.resolve("samples.jsonl"))) {
                JsonNode o = json.readTree(line);
                if (o.get("training_step").asInt() != step) continue;
                n++;
                double rw = o.get("reward").asDouble();
                score += rw;
                tokens += o.get("tokens").asInt();
                if (rw > 0) rewarded++;
                if (rw == 10) full++;
                else if (rw == 4) partial++;
                else none++;
            }
            assertTrue(n > 0);
            Map<String, Double> m = seen.get(step - 1);
            assertEquals(rewarded / n, m.get("eval/verifiable_correct_rate"), 1e-12, "step " + step);
            assertEquals(score / n, m.get("eval/verifier_scores"), 1e-12, "step " + step);
            assertEquals(tokens / n, m.get("eval/response_length"), 1e-12, "step " + step);
        }
        assertTrue(full > 0 && partial > 0 && none > 0, "every level seen: " + full + " full, " + partial + " partial, " + none + " none");
    }

    /**
     * old_logprobs auto skips the no-grad old pass for the first mini-batch's rollouts (8 of the 16 here: 2 mini-batches)
     * and takes their training forward's own log-probs instead, ratio exactly 1; recompute runs it for all 16, as the
     * reference does. Same weights in mini-batch 1, so the runs agree to rounding: the same rewards and lengths (the first
     * step's rollouts are identical), the losses and the weights after two steps close.
     */
    @Test
    void oldLogprobsAutoSkipsTheFirstMiniBatchsOldPass(@TempDir Path tmp) throws Exception {
        Map<String, List<Map<String, Double>>> runs = new java.util.LinkedHashMap<>();
        for (String mode : List.of("auto", "recompute")) {
            List<String> sets = small(tmp.resolve(mode), 2);
            sets.addAll(List.of("old_logprobs=\"" + mode + "\"", "num_evals=0"));
            runs.put(mode, stepMetrics(sets));
        }
        List<Map<String, Double>> auto = runs.get("auto"), rec = runs.get("recompute");
        for (int s = 0; s < 2; s++) {
            assertEquals(8.0, auto.get(s).get("rollout/old_logprob_passes"), "auto: the second mini-batch's rollouts only");
            assertEquals(16.0, rec.get(s).get("rollout/old_logprob_passes"), "recompute: every rollout");
            assertTrue(auto.get(s).get("time/logprobs") >= 0);
        }
        Map<String, Double> a = auto.get(0), b = rec.get(0);
        for (String k : List.of("objective/scores", "val/sequence_lengths", "objective/kl"))
            assertEquals(b.get(k), a.get(k), 1e-6, k + " (step 1's rollouts and the old log-probs the metrics read)");
        for (String k : List.of("loss/policy_avg", "val/ratio", "policy/approxkl_avg"))
            assertEquals(b.get(k), a.get(k), 1e-5, k);
        assertEquals(0.0, a.get("policy/clipfrac_avg"), 0.0);
        float[] wa = allFloats(tmp.resolve("auto/checkpoints/step_2/model/model.safetensors"));
        float[] wb = allFloats(tmp.resolve("recompute/checkpoints/step_2/model/model.safetensors"));
        assertEquals(wb.length, wa.length);
        double maxDiff = 0, maxW = 0;
        for (int i = 0; i < wa.length; i++) {
            maxDiff = Math.max(maxDiff, Math.abs(wa[i] - wb[i]));
            maxW = Math.max(maxW, Math.abs(wb[i]));
        }
        assertTrue(maxDiff <= 1e-5 * maxW, "weights after 2 steps: max |auto - recompute| " + maxDiff + " against max |w| " + maxW);
    }

    /**
     * logprob_prefix_sharing runs each prompt once per chunk through the no-grad passes (the reference's, and the old
     * one with recompute): on the CPU the same log-probs bit for bit, so the same metrics and the same weights after
     * two steps, bit for bit. The run's chunks of 8 rollouts hold two prompts' 4 samples each.
     */
    @Test
    void logprobPrefixSharingChangesNoBitOnTheCpu(@TempDir Path tmp) throws Exception {
        Map<Boolean, List<Map<String, Double>>> runs = new java.util.LinkedHashMap<>();
        for (boolean on : new boolean[] {true, false}) {
            List<String> sets = small(tmp.resolve("share-" + on), 2);
            sets.addAll(List.of("logprob_prefix_sharing=" + on, "old_logprobs=\"recompute\"", "num_evals=0"));
            runs.put(on, stepMetrics(sets));
        }
        for (int s = 0; s < 2; s++) {
            for (String k : List.of("objective/kl", "loss/policy_avg", "val/ratio", "policy/approxkl_avg", "objective/scores"))
                assertEquals(runs.get(false).get(s).get(k), runs.get(true).get(s).get(k), 0.0, "step " + (s + 1) + " " + k);
            // the passes ran fewer rows: each prompt once per chunk, not once per sample
            double on = runs.get(true).get(s).get("rollout/logprob_token_rows"), off = runs.get(false).get(s).get("rollout/logprob_token_rows");
            assertTrue(on < off, "step " + (s + 1) + ": " + on + " rows shared vs " + off);
        }
        float[] on = allFloats(tmp.resolve("share-true/checkpoints/step_2/model/model.safetensors"));
        float[] off = allFloats(tmp.resolve("share-false/checkpoints/step_2/model/model.safetensors"));
        assertArrayEquals(off, on, "weights after 2 steps");
    }

    /**
     * Two two-step runs that differ in one setting that must not change the loss (only the grouping of the training
     * passes), with rewards that differ within groups (non-zero advantages): the first mini-batch's gradient (the same weights and rollouts) within 1e-5 of its largest element, the
     * same rewards and losses up to rounding (the per-micro-batch metrics are the reference's micro-batches'), and the
     * weights after two steps within a tenth of the learning rate (AdamW's normalized update turns rounding in a
     * near-zero gradient into up to one learning rate; a wrong gradient moves many weights by that). Returns each
     * run's step metrics, keyed by the setting.
     */
    static Map<String, List<Map<String, Double>>> sameLossTwoWays(Path tmp, List<String> extra, String a, String b) throws Exception {
        Map<String, List<Map<String, Double>>> runs = new java.util.LinkedHashMap<>();
        Map<String, float[]> firstGrad = new java.util.HashMap<>();
        for (String set : List.of(a, b)) {
            List<String> sets = small(tmp.resolve(set.replaceAll("[^a-z_]", "")), 2);
            // a short supervised warm-up (the model learns to stop) and a penalty for responses without a stop token make
            // the rewards, and so the advantages, differ within groups from the first step on
            sets.addAll(List.of(set, "num_evals=0", "sft_warmup.steps=30", "non_stop_penalty=true", "penalty_reward_value=-3.0"));
            sets.addAll(extra);
            List<Map<String, Double>> seen = new ArrayList<>();
            int[] calls = {0};
            try (Trainer t = Trainer.builder(config(sets)).log(null).gradientHook(g -> {
                if (calls[0]++ != 30) return; // the hook's calls 0-29 are the warm-up's steps, call 30 the first mini-batch's
                List<float[]> parts = new ArrayList<>();
                int n = 0;
                for (var e : g.layout().entries()) {
                    float[] x = g.get(e.name()).toFloats();
                    parts.add(x);
                    n += x.length;
                }
                float[] all = new float[n];
                int at = 0;
                for (float[] x : parts) {
                    System.arraycopy(x, 0, all, at, x.length);
                    at += x.length;
                }
                firstGrad.put(set, all);
            }).build()) {
                t.run(new org.grpo4j.train.GrpoTrainer.Listener() {
                    @Override
                    public void onStep(int step, Map<String, Double> m) { seen.add(m); }
                });
            }
            runs.put(set, seen);
        }
        float[] ga = firstGrad.get(a), gb = firstGrad.get(b);
        double gDiff = 0, gMax = 0;
        for (int i = 0; i < ga.length; i++) {
            gDiff = Math.max(gDiff, Math.abs(ga[i] - gb[i]));
            gMax = Math.max(gMax, Math.abs(gb[i]));
        }
        System.out.printf("%s vs %s: first mini-batch's gradient, max difference %.3e of its largest element%n", a, b, gDiff / gMax);
        assertTrue(gMax > 0 && gDiff <= 1e-5 * gMax, "first mini-batch's gradient: max |" + a + " - " + b + "| " + gDiff + " against max " + gMax);
        for (int s = 0; s < 2; s++) {
            Map<String, Double> x = runs.get(a).get(s), y = runs.get(b).get(s);
            assertTrue(y.get("objective/reward_std") > 0, "step " + (s + 1) + ": the advantages are not all zero");
            assertEquals(y.get("objective/scores"), x.get("objective/scores"), s == 0 ? 0.0 : 1e-9, "step " + (s + 1) + " scores");
            for (String k : List.of("loss/policy_avg", "val/ratio", "val/ratio_var", "policy/approxkl_avg", "objective/kl"))
                assertEquals(y.get(k), x.get(k), 1e-5 * (1 + Math.abs(y.get(k))), "step " + (s + 1) + " " + k);
        }
        float[] wa = allFloats(tmp.resolve(a.replaceAll("[^a-z_]", "")).resolve("checkpoints/step_2/model/model.safetensors"));
        float[] wb = allFloats(tmp.resolve(b.replaceAll("[^a-z_]", "")).resolve("checkpoints/step_2/model/model.safetensors"));
        double maxDiff = 0, lr = config(small(tmp, 1)).learningRate;
        for (int i = 0; i < wa.length; i++) maxDiff = Math.max(maxDiff, Math.abs(wa[i] - wb[i]));
        assertTrue(maxDiff <= 0.1 * lr, "weights after 2 steps: max |" + a + " - " + b + "| " + maxDiff + " against the learning rate " + lr);
        return runs;
    }

    /**
     * train_prefix_sharing runs each mini-batch's rollouts in prompt order, a prompt's tokens once per training pass,
     * every token weighted by its reference micro-batch: the same loss ({@link #sameLossTwoWays}), fewer rows through
     * the layers. Under seq_mean_token_mean, whose weights differ rollout by rollout (1 / its own length), over two
     * epochs of micro-batches of 2: a weight attached to another rollout after the reordering would change the gradient
     * (under token_mean or micro_token_mean the rollouts of a micro-batch share one weight, and such a swap passed).
     */
    @Test
    void trainPrefixSharingKeepsTheLossAndRunsFewerRows(@TempDir Path tmp) throws Exception {
        var runs = sameLossTwoWays(tmp, List.of("loss_aggregation=\"seq_mean_token_mean\"", "num_epochs=2", "per_device_train_batch_size=2"),
                "train_prefix_sharing=true", "train_prefix_sharing=false");
        for (int s = 0; s < 2; s++) {
            double on = runs.get("train_prefix_sharing=true").get(s).get("training/token_rows");
            double off = runs.get("train_prefix_sharing=false").get(s).get("training/token_rows");
            assertTrue(on < off, "step " + (s + 1) + ": " + on + " rows shared vs " + off);
        }
    }

    /**
     * pass_packing tokens fills each pass up to the memory a micro-batch was planned for: the same loss
     * ({@link #sameLossTwoWays}) in fewer passes than the reference's micro-batches. The data set is the demo's with one
     * long prompt added, so the plan's longest prompt (which sizes a pass) is about twice the others.
     */
    @Test
    void passPackingByTokensKeepsTheLossInFewerPasses(@TempDir Path tmp) throws Exception {
        Path data = tmp.resolve("arith-and-a-long-prompt.jsonl");
        List<String> rows = new ArrayList<>(Files.readAllLines(Path.of("examples/data/tiny-arith.jsonl")).subList(0, 200));
        rows.add("{\"messages\": [{\"role\": \"user\", \"content\": \"Zoe has 5 red pens and 3 blue pens in her bag, and her friend Leo"
                + " gives her 1 more red pen after school today. How many red pens does Zoe have now?\"}], \"ground_truth\": \"6\","
                + " \"dataset\": \"gsm8k\", \"constraint_type\": null, \"constraint\": null}");
        Files.write(data, rows);
        List<String> extra = List.of("dataset_mixer_list=[\"" + data + "\", \"1.0\"]", "dataset_mixer_eval_list=[\"" + data + "\", \"4\"]");
        var runs = sameLossTwoWays(tmp, extra, "pass_packing=\"tokens\"", "pass_packing=\"batch_size\"");
        for (int s = 0; s < 2; s++) {
            double tokens = runs.get("pass_packing=\"tokens\"").get(s).get("training/passes");
            double micro = runs.get("pass_packing=\"batch_size\"").get(s).get("training/passes");
            assertEquals(4, micro, "step " + (s + 1) + ": 16 rollouts in micro-batches of 4");
            assertTrue(tokens < micro, "step " + (s + 1) + ": " + tokens + " passes packed by tokens vs " + micro);
        }
    }

    /**
     * kv_admission on_demand against worst_case in a KV pool that holds only a few completions of response_length:
     * the same tokens, so the same metrics, in fewer decode steps (a short supervised warm-up teaches the model to
     * stop well before response_length, so that samples need far fewer blocks than their worst case).
     */
    @Test
    void onDemandKvAdmissionSamplesTheSameTokensInFewerDecodeSteps(@TempDir Path tmp) throws Exception {
        var runs = bothAdmissions(tmp, "sft_warmup.steps=30");
        for (int s = 0; s < 2; s++) {
            Map<String, Double> on = runs.get("on_demand").get(s), wc = runs.get("worst_case").get(s);
            assertTrue(on.get("rollout/decode_steps") < wc.get("rollout/decode_steps"), "step " + (s + 1) + ": decode steps " + on + " vs " + wc);
            assertEquals(0.0, on.get("rollout/preemptions"), "step " + (s + 1) + ": the early stops leave room for all");
        }
    }

    /**
     * Without the warm-up no sample stops before response_length, so 32 samples of up to 200 tokens outgrow the 1 MiB
     * pool: on_demand preempts samples and recomputes them when they resume, and trains exactly as worst_case.
     */
    @Test
    void onDemandKvAdmissionPreemptsAndTrainsAsWorstCase(@TempDir Path tmp) throws Exception {
        var runs = bothAdmissions(tmp, "sft_warmup.steps=0");
        for (int s = 0; s < 2; s++)
            assertTrue(runs.get("on_demand").get(s).get("rollout/preemptions") > 0, "step " + (s + 1) + ": " + runs.get("on_demand").get(s));
    }

    /**
     * Two steps of 32 samples of up to 200 tokens in a 1 MiB KV pool (a few completions of response_length) with each
     * kv_admission: every metric equal but the decode steps, preemptions, pool utilization and times.
     */
    static Map<String, List<Map<String, Double>>> bothAdmissions(Path tmp, String warmUp) throws Exception {
        Map<String, List<Map<String, Double>>> runs = new java.util.LinkedHashMap<>();
        for (String a : List.of("on_demand", "worst_case")) {
            List<String> sets = small(tmp.resolve(a), 2);
            sets.addAll(List.of("kv_admission=\"" + a + "\"", "kv_cache_mib=1", "response_length=200", "local_rollout_batch_size=8", "num_evals=0",
                    warmUp));
            runs.put(a, stepMetrics(sets));
        }
        for (int s = 0; s < 2; s++) {
            Map<String, Double> on = runs.get("on_demand").get(s), wc = runs.get("worst_case").get(s);
            System.out.printf("%s, step %d: decode steps %.0f on demand (%.0f preemptions), %.0f worst case; mean response length %.1f%n", warmUp,
                    s + 1, on.get("rollout/decode_steps"), on.get("rollout/preemptions"), wc.get("rollout/decode_steps"), on.get("val/response_length"));
            assertEquals(0.0, wc.get("rollout/preemptions"));
            for (String k : on.keySet()) {
                if (k.startsWith("time/") || k.startsWith("throughput/") || k.equals("rollout/decode_steps") || k.equals("rollout/preemptions")
                        || k.equals("rollout/kv_pool_peak_utilization")) continue;
                assertEquals(wc.get(k), on.get(k), "step " + (s + 1) + ": " + k);
            }
        }
        return runs;
    }

    /** Trains a run of the given config and returns each step's metrics. */
    static List<Map<String, Double>> stepMetrics(List<String> sets) throws Exception {
        List<Map<String, Double>> seen = new ArrayList<>();
        try (Trainer t = Trainer.builder(config(sets)).log(null).build()) {
            t.run(new org.grpo4j.train.GrpoTrainer.Listener() {
                @Override
                public void onStep(int step, Map<String, Double> m) { seen.add(m); }
            });
        }
        return seen;
    }

    private static int count(int[] shape) {
        int n = 1;
        for (int d : shape) n *= d;
        return n;
    }

    /** Every tensor of a safetensors file, widened to float and concatenated in the header's order. */
    static float[] allFloats(Path file) throws Exception {
        try (org.grpo4j.internal.model.SafeTensors st = org.grpo4j.internal.model.SafeTensors.open(file)) {
            int n = 0;
            for (var e : st.tensors().values()) n += count(e.shape());
            float[] all = new float[n];
            int at = 0;
            for (var e : st.tensors().values()) {
                st.readFloats(e.name(), all, at);
                at += count(e.shape());
            }
            return all;
        }
    }

    /**
     * A run copied elsewhere and resumed there: its config.json names the copy's directory (it kept the original's, so
     * train --config COPY/config.json wrote into the original run), and the original is left as it was.
     */
    @Test
    void aResumedCopyOfARunNamesItsOwnDirectory(@TempDir Path tmp) throws Exception {
        Path first = tmp.resolve("first"), copy = tmp.resolve("copy");
        List<String> sets = small(first, 2);
        sets.add("num_evals=0");
        sets.add("save_freq=1");
        try (Trainer t = Trainer.builder(config(sets)).log(null).build()) {
            assertEquals(1, t.run(new org.grpo4j.train.GrpoTrainer.Listener() {
                @Override
                public void onStep(int step, Map<String, Double> m) { t.cancel(); }
            }).lastStep());
        }
        byte[] original = Files.readAllBytes(first.resolve("config.json"));
        org.grpo4j.internal.util.TestFiles.copyTree(first, copy);
        try (Trainer t = Trainer.builder(null).resume(copy).log(null).build()) {
            assertEquals(2, t.run(null).lastStep());
        }
        ObjectMapper json = new ObjectMapper();
        assertEquals(copy.toString(), json.readTree(copy.resolve("config.json").toFile()).get("output_dir").asText());
        assertEquals(first.toString(), json.readTree(first.resolve("config.json").toFile()).get("output_dir").asText());
        assertArrayEquals(original, Files.readAllBytes(first.resolve("config.json")));
        assertFalse(Files.exists(first.resolve("checkpoints/step_2")));
    }

    @Test
    void resumeAfterKillDashNineRepeatsTheUninterruptedRunExactly(@TempDir Path tmp) throws Exception {
        int steps = 7;
        Path full = tmp.resolve("full"), killed = tmp.resolve("killed");
        try (Trainer t = Trainer.builder(config(small(full, steps))).log(null).build()) {
            t.run(null);
        }
        // the same run in a child JVM, killed with SIGKILL once three steps are logged (wherever it is by then)
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-cp", System.getProperty("java.class.path"), "org.grpo4j.internal.cli.Main", "train", "--config", "examples/tiny-arith.json"));
        for (String s : small(killed, steps)) {
            cmd.add("--set");
            cmd.add(s);
        }
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(tmp.resolve("child.log").toFile()).start();
        Path metrics = killed.resolve("metrics.jsonl");
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
        while (System.nanoTime() < deadline && p.isAlive()
                && (!Files.exists(metrics) || Files.readAllLines(metrics).size() < 3)) Thread.sleep(20);
        assertTrue(p.isAlive(), () -> "the child finished before it could be killed: " + readQuietly(tmp.resolve("child.log")));
        p.destroyForcibly().waitFor(); // SIGKILL: no shutdown hooks, no cleanup
        assertTrue(Files.readAllLines(metrics).size() < steps);
        try (Trainer t = Trainer.builder(null).resume(killed).log(null).build()) {
            t.run(null);
        }
        assertEquals(comparable(full.resolve("metrics.jsonl")), comparable(metrics), "resumed metrics equal the uninterrupted run's");
        assertArrayEquals(Files.readAllBytes(full.resolve("checkpoints/step_" + steps + "/model/model.safetensors")),
                Files.readAllBytes(killed.resolve("checkpoints/step_" + steps + "/model/model.safetensors")), "final weights bitwise equal");
    }

    static String readQuietly(Path p) {
        try {
            return Files.readString(p);
        } catch (Exception e) {
            return "";
        }
    }

    /**
     * Trains {@code sets} with a shaped reward a random tiny model can climb (the share of the response's characters
     * that are digits, times 10, for the gsm8k rows) and returns each step's metrics.
     */
    private static List<Map<String, Double>> digitRewardRun(List<String> sets) throws Exception {
        List<Map<String, Double>> seen = new ArrayList<>();
        try (org.grpo4j.reward.Rewards r = new org.grpo4j.reward.Rewards()) {
            r.register("gsm8k", (resp, gt, row) -> org.grpo4j.reward.RewardFunction.Score.of(
                    10.0 * resp.chars().filter(Character::isDigit).count() / Math.max(1, resp.length())));
            try (Trainer t = Trainer.builder(config(sets)).rewards(r).log(null).build()) {
                t.run(new org.grpo4j.train.GrpoTrainer.Listener() {
                    @Override
                    public void onStep(int step, Map<String, Double> m) { seen.add(m); }
                });
            }
        }
        return seen;
    }

    @Test
    void grpoRaisesAnEasyRewardFromARandomModel(@TempDir Path tmp) throws Exception {
        // reward: how many of the response's characters are digits (a shaped reward a random tiny model can climb)
        List<String> sets = small(tmp.resolve("easy"), 24);
        sets.addAll(List.of("learning_rate=3e-3", "num_evals=0", "save_freq=0", "beta=0.0", "non_stop_penalty=false"));
        List<Double> rewards = digitRewardRun(sets).stream().map(m -> m.get("objective/scores")).toList();
        double first = rewards.subList(0, 6).stream().mapToDouble(Double::doubleValue).average().orElse(0);
        double last = rewards.subList(18, 24).stream().mapToDouble(Double::doubleValue).average().orElse(0);
        System.out.printf("easy reward: steps 1-6 %.3f, steps 19-24 %.3f%n", first, last);
        assertTrue(last > first + 1.0, "mean reward of steps 1-6 " + first + ", of steps 19-24 " + last + ": " + rewards);
    }

    /**
     * advantage_normalization reaches the loss: the same seed gives the same rollouts and rewards, and centered
     * advantages (R - mean, not divided by the groups' std) give another policy loss than standard ones.
     */
    @Test
    void centeredAdvantagesChangeTheLossButNotTheRollouts(@TempDir Path tmp) throws Exception {
        Map<String, Map<String, Double>> runs = new java.util.LinkedHashMap<>();
        for (String mode : List.of("standard", "centered")) {
            List<String> sets = small(tmp.resolve(mode), 1);
            sets.addAll(List.of("advantage_normalization=\"" + mode + "\"", "num_evals=0", "save_freq=0", "non_stop_penalty=false"));
            runs.put(mode, digitRewardRun(sets).get(0));
        }
        Map<String, Double> s = runs.get("standard"), c = runs.get("centered");
        assertEquals(s.get("objective/scores"), c.get("objective/scores"), 0.0, "the same rollouts and rewards");
        assertTrue(s.get("objective/reward_std") > 0, "the rewards vary within some group: " + s);
        assertNotEquals(s.get("loss/policy_avg"), c.get("loss/policy_avg"), "the policy loss follows the advantages");
    }

    @Test
    void nonFiniteGradientsSkipStepsAndThreeInARowAbort(@TempDir Path tmp) throws Exception {
        int[] calls = {0};
        Trainer.Builder b = Trainer.builder(config(small(tmp.resolve("nan"), 4))).log(null).gradientHook(g -> {
            if (++calls[0] >= 2) g.backend().fill(g.flat(), Double.NaN); // the first optimizer step is fine
        });
        try (Trainer t = b.build()) {
            TrainingAbortedException e = assertThrows(TrainingAbortedException.class, () -> t.run(null));
            assertTrue(e.getMessage().startsWith("training aborted at step 2: 3 consecutive"), e.getMessage());
            assertTrue(e.getMessage().endsWith("checkpoints/step_0"), "the last good checkpoint is named: " + e.getMessage());
        }
        try (var s = Files.list(tmp.resolve("nan/checkpoints"))) {
            assertEquals(List.of("step_0"), s.map(p -> p.getFileName().toString()).toList(), "no checkpoint of the failing steps");
        }
        List<String> lines = Files.readAllLines(tmp.resolve("nan/metrics.jsonl"));
        assertEquals(1, lines.size());
        JsonNode m = new ObjectMapper().readTree(lines.get(0));
        assertEquals(1.0, m.get("optim/skipped_steps").asDouble(), "step 1: its second optimizer step was skipped");
    }

    /**
     * A device error mid-step (an illegal address, as a CUDA kernel would raise it, thrown here from inside step 3's
     * second optimizer step): the run stops with the error, naming the step and the last checkpoint; that checkpoint
     * (step 2) is intact and nothing of step 3 was written; resuming from it repeats the uninterrupted run exactly.
     */
    @Test
    void aDeviceErrorMidStepStopsTheRunAndItResumesExactlyFromTheLastCheckpoint(@TempDir Path tmp) throws Exception {
        Path full = tmp.resolve("full"), failed = tmp.resolve("failed");
        try (Trainer t = Trainer.builder(config(small(full, 4))).log(null).build()) {
            t.run(null);
        }
        int[] calls = {0};
        try (Trainer t = Trainer.builder(config(small(failed, 4))).log(null).gradientHook(g -> {
            if (++calls[0] == 6) // two optimizer steps a training step: the 6th is step 3's second
                throw new org.grpo4j.internal.backend.CudaException("cudaStreamSynchronize", 700, "cudaErrorIllegalAddress", "an illegal memory access was encountered");
        }).build()) {
            org.grpo4j.internal.backend.CudaException e = assertThrows(org.grpo4j.internal.backend.CudaException.class, () -> t.run(null));
            assertTrue(e.getMessage().startsWith("training step 3: cudaStreamSynchronize failed: an illegal memory access"), e.getMessage());
            assertTrue(e.getMessage().endsWith("the last checkpoint is " + failed.resolve("checkpoints/step_2") + " (--resume " + failed + " goes on from it)"),
                    e.getMessage());
            assertEquals(700, e.code());
        }
        try (var s = Files.list(failed.resolve("checkpoints"))) {
            assertEquals(List.of("step_0", "step_2"), s.map(p -> p.getFileName().toString()).sorted().toList());
        }
        assertEquals(2, Files.readAllLines(failed.resolve("metrics.jsonl")).size(), "steps 1 and 2 logged, not the failed step");
        try (Trainer t = Trainer.builder(null).resume(failed).log(null).build()) {
            t.run(null);
        }
        assertEquals(comparable(full.resolve("metrics.jsonl")), comparable(failed.resolve("metrics.jsonl")), "resumed metrics equal the uninterrupted run's");
        assertArrayEquals(Files.readAllBytes(full.resolve("checkpoints/step_4/model/model.safetensors")),
                Files.readAllBytes(failed.resolve("checkpoints/step_4/model/model.safetensors")), "final weights bitwise equal");
    }

    /** The memory estimate is printed before any work (the warm-up here), the report of the allocated states after it. */
    @Test
    void theMemoryEstimateComesBeforeTheWarmUpAndTheReportAfterIt(@TempDir Path tmp) throws Exception {
        List<String> sets = small(tmp.resolve("m"), 1);
        sets.add("sft_warmup.steps=1");
        java.io.ByteArrayOutputStream bytes = new java.io.ByteArrayOutputStream();
        int[] warmUpAt = {-1};
        try (java.io.PrintStream ps = new java.io.PrintStream(bytes, true); Trainer t = Trainer.builder(config(sets)).log(ps).build()) {
            t.run(new org.grpo4j.train.GrpoTrainer.Listener() {
                @Override
                public void onSftStep(int step, int total, double nll) { if (warmUpAt[0] < 0) warmUpAt[0] = bytes.size(); }
            });
        }
        String out = bytes.toString();
        int estimate = out.indexOf("memory per rank (estimate)"), report = out.indexOf("grpo4j: memory per rank (");
        assertTrue(estimate >= 0 && out.substring(estimate).lines().findFirst().orElse("").contains("model states"), out);
        assertTrue(warmUpAt[0] > estimate, "the estimate comes before the warm-up's first step: " + out);
        assertTrue(report > warmUpAt[0], "the allocated report after the warm-up (the pool is sized then): " + out);
    }

    @Test
    void cancelStopsAtAStepBoundaryWithACheckpoint(@TempDir Path tmp) throws Exception {
        Path out = tmp.resolve("c");
        List<String> sets = small(out, 5);
        sets.add("save_freq=0");
        try (Trainer t = Trainer.builder(config(sets)).log(null).build()) {
            org.grpo4j.train.GrpoTrainer.Result r = t.run(new org.grpo4j.train.GrpoTrainer.Listener() {
                @Override
                public void onStep(int step, Map<String, Double> m) { if (step == 2) t.cancel(); }
            });
            assertTrue(r.cancelled());
            assertEquals(2, r.lastStep());
        }
        assertTrue(Files.isRegularFile(out.resolve("checkpoints/step_2/trainer_state.json")));
        assertFalse(Files.exists(out.resolve("checkpoints/step_3")));
    }

    @Test
    void theWarmUpIsMicroBatchedWithoutChangingItsStep(@TempDir Path tmp) throws Exception {
        // one step of 24 sequences (~33 tokens each): a micro-batch holds what the memory plan sized
        // per_device_train_batch_size sequences of the longest prompt + response_length for: one pass at 8 x (longest +
        // 100) tokens, 24 passes at 1 x (longest + 8)
        float[][] after = new float[2][];
        long[] passes = new long[2];
        double[] nll = new double[2];
        int k = 0;
        for (String[] v : new String[][] {{"8", "200", "100"}, {"1", "40", "8"}}) {
            List<String> sets = small(tmp.resolve("w" + k), 1);
            sets.addAll(List.of("sft_warmup.steps=1", "sft_warmup.batch_size=24", "per_device_train_batch_size=" + v[0], "max_prompt_token_length=" + v[1],
                    "response_length=" + v[2]));
            int kk = k;
            try (Trainer t = Trainer.builder(config(sets)).log(null).build()) {
                t.run(new org.grpo4j.train.GrpoTrainer.Listener() {
                    @Override
                    public void onSftStep(int step, int steps, double loss) { nll[kk] = loss; }
                });
                passes[k] = t.sftMicroBatches;
            }
            try (org.grpo4j.internal.model.LlamaWeights w = org.grpo4j.internal.model.LlamaWeights.load(org.grpo4j.internal.backend.TestBackends.cpu(),
                    tmp.resolve("w" + k + "/checkpoints/step_0/model"))) {
                after[k] = w.flat().toFloats();
            }
            k++;
        }
        assertEquals(1, passes[0]);
        assertEquals(24, passes[1]);
        // the mean NLL over all 24 sequences' answer tokens: each token weighted 1 / (tokens of the whole batch)
        assertEquals(nll[0], nll[1], 1e-6 * nll[0], "the batch's loss, split or not");
        // AdamW's first step is about lr x sign(g), so summation-order differences in tiny gradients move a weight by a
        // small fraction of lr (0.003 here); a missing sequence would move many by up to 2 lr
        double maxDiff = 0;
        for (int i = 0; i < after[0].length; i++) maxDiff = Math.max(maxDiff, Math.abs(after[0][i] - after[1][i]));
        assertTrue(maxDiff <= 0.01 * 0.003, "the same step, split or not: max weight difference " + maxDiff);
    }

    @Test
    void cancelDuringTheWarmUpStopsBeforeAnyCheckpoint(@TempDir Path tmp) throws Exception {
        List<String> sets = small(tmp.resolve("c"), 3);
        sets.addAll(List.of("sft_warmup.steps=50", "sft_warmup.batch_size=4"));
        try (Trainer t = Trainer.builder(config(sets)).log(null).build()) {
            org.grpo4j.train.GrpoTrainer.Result r = t.run(new org.grpo4j.train.GrpoTrainer.Listener() {
                @Override
                public void onSftStep(int step, int steps, double loss) { if (step == 2) t.cancel(); }
            });
            assertTrue(r.cancelled());
            assertEquals(0, r.lastStep());
        }
        assertFalse(Files.exists(tmp.resolve("c/checkpoints")), "a half-done warm-up is not checkpointed");
    }

    @Test
    void twoTrainersCannotShareARunDirectory(@TempDir Path tmp) throws Exception {
        Path out = tmp.resolve("shared");
        try (Trainer first = Trainer.builder(config(small(out, 1))).log(null).build()) {
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> Trainer.builder(config(small(out, 1))).log(null).build());
            assertTrue(e.getMessage().contains(out + ": in use by another grpo4j run"), e.getMessage());
            first.run(null);
        }
        try (Trainer again = Trainer.builder(null).resume(out).log(null).build()) { // the lock went with close()
            assertEquals(1, again.completedSteps());
        }
    }

    /**
     * A checkpoint written before a key existed resumes as it ran, not with the key's new default: lm_head_grad split
     * (dz as hi + lo), old_logprobs recompute (every old log-prob from the no-grad pass), lm_head_scratch_mib 256 (the
     * LM head's 256 MiB blocks), logprob_prefix_sharing off (every sequence whole through the log-prob passes),
     * train_prefix_sharing off (every sequence whole), pass_packing batch_size (the reference's micro-batches as
     * passes), kv_admission worst_case (every sample's blocks reserved before it starts), rank_balancing none (each
     * rank trains its own rollouts), reference_sharding none (the reference whole on every rank), so that
     * the run goes on bit for bit; a checkpoint with the key keeps its value.
     */
    /**
     * A checkpoint at the end of a data epoch resumes, and the run goes on exactly as the uninterrupted one: its
     * iterator position (the offset after the epoch's last batch) was refused on restore (a review, 2026-12-01).
     */
    @Test
    void aCheckpointAtAnEpochsEndResumesExactly(@TempDir Path tmp) throws Exception {
        Path full = tmp.resolve("full"), part = tmp.resolve("part");
        java.util.function.Function<Path, List<String>> sets = out -> {
            List<String> s = small(out, 4);
            s.add("dataset_mixer_list=[\"data/tiny-arith.jsonl\",\"8\"]"); // 8 prompts, 4 a step: an epoch ends at step 2
            s.add("num_evals=0");
            return s;
        };
        try (Trainer t = Trainer.builder(config(sets.apply(full))).log(null).build()) {
            t.run(null);
        }
        try (Trainer t = Trainer.builder(config(sets.apply(part))).log(null).build()) {
            t.run(null);
        }
        assertTrue(Files.isDirectory(part.resolve("checkpoints/step_2")), "a checkpoint at the epoch's end");
        org.grpo4j.internal.util.AtomicDir.deleteTree(part.resolve("checkpoints/step_4")); // as if killed after step 2's checkpoint
        try (Trainer t = Trainer.builder(null).resume(part).log(null).build()) {
            t.run(null);
        }
        assertEquals(comparable(full.resolve("metrics.jsonl")), comparable(part.resolve("metrics.jsonl")));
    }

    @Test
    void aCheckpointWithoutNewerKeysResumesAsItRan(@TempDir Path tmp) throws Exception {
        GrpoConfig c = config(small(tmp.resolve("run"), 1));
        assertEquals(List.of("bf16", "auto", 1024L, true, true, "tokens", "on_demand", "tokens", "auto"), List.of(c.lmHeadGrad, c.oldLogprobs,
                c.lmHeadScratchMib, c.logprobPrefixSharing, c.trainPrefixSharing, c.passPacking, c.kvAdmission, c.rankBalancing, c.referenceSharding),
                "the defaults");
        Map<String, Object> before = Map.of("lm_head_grad", "split", "old_logprobs", "recompute", "lm_head_scratch_mib", 256L,
                "logprob_prefix_sharing", false, "train_prefix_sharing", false, "pass_packing", "batch_size", "kv_admission", "worst_case",
                "rank_balancing", "none", "reference_sharding", "none");
        Map<String, java.util.function.Function<GrpoConfig, Object>> read = Map.of("lm_head_grad", x -> x.lmHeadGrad,
                "old_logprobs", x -> x.oldLogprobs, "lm_head_scratch_mib", x -> x.lmHeadScratchMib,
                "logprob_prefix_sharing", x -> x.logprobPrefixSharing, "train_prefix_sharing", x -> x.trainPrefixSharing,
                "pass_packing", x -> x.passPacking, "kv_admission", x -> x.kvAdmission, "rank_balancing", x -> x.rankBalancing,
                "reference_sharding", x -> x.referenceSharding);
        for (String key : before.keySet()) {
            var withKey = (com.fasterxml.jackson.databind.node.ObjectNode) new ObjectMapper().readTree(c.toJson());
            assertTrue(withKey.has(key), "a new checkpoint records " + key);
            Path ck = Files.createDirectories(tmp.resolve("ck-" + key));
            Files.writeString(ck.resolve("config.json"), withKey.toString());
            assertEquals(read.get(key).apply(c), read.get(key).apply(Checkpoints.savedConfig(ck)), key + " present: its value");
            withKey.remove(key);
            Files.writeString(ck.resolve("config.json"), withKey.toString());
            assertEquals(before.get(key), read.get(key).apply(Checkpoints.savedConfig(ck)), key + " absent: the value the run had");
        }
    }
}
