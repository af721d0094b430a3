package org.grpo4j.internal.train;

import org.grpo4j.train.GrpoConfig;
import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.grpo4j.internal.backend.AbstractBackend;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.TestBackends;
import org.grpo4j.internal.dist.Cluster;
import org.grpo4j.internal.dist.Communicator;
import org.grpo4j.internal.model.LlamaWeights;
import org.grpo4j.internal.model.MemoryEstimate;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * world_size > 1 on the CPU: ranks as threads of this JVM with the in-process communicator, through the same ZeRO-2
 * code as NCCL ranks.
 */
class DistributedTrainingTest {
    /** The global batch of {@link GrpoTrainerTest#small} (4 prompts x 4 samples), split over {@code world} ranks. */
    static List<String> split(Path out, int steps, int world) {
        List<String> s = GrpoTrainerTest.small(out, steps);
        int local = 4 / world;
        s.addAll(List.of("world_size=" + world, "local_rollout_batch_size=" + local, "local_mini_batch_size=" + 4 * local,
                "per_device_train_batch_size=" + Math.min(4, 4 * local), "local_rollout_forward_batch_size=" + 4 * local,
                "loss_aggregation=token_mean", "num_evals=0"));
        return s;
    }

    /** The first 64 rows of the demo's data, row i's question repeated {@code times(i)} times (prompts of several lengths). */
    static Path repeatedQuestions(Path tmp, java.util.function.IntUnaryOperator times) throws Exception {
        Path data = tmp.resolve("repeated-questions.jsonl");
        List<String> rows = new ArrayList<>();
        List<String> arith = Files.readAllLines(Path.of("examples/data/tiny-arith.jsonl"));
        for (int i = 0; i < 64; i++)
            rows.add(arith.get(i).replaceFirst("\"content\": \"([^\"]*)\"", "\"content\": \"" + "$1 ".repeat(times.applyAsInt(i)).trim() + "\""));
        Files.write(data, rows);
        return data;
    }

    static float[] weights(Path model) throws Exception {
        try (LlamaWeights w = LlamaWeights.load(TestBackends.cpu(), model)) {
            return w.flat().toFloats();
        }
    }

    /**
     * Tied embeddings at world 2 against world 1, in fp32 and bf16 precision: the LM head's gradient (written before
     * the backward, into the embeddings' gradient) must survive the ZeRO-2 gradient window, whose embeddings slab holds
     * other layers' gradients while the backward runs (a review found it lost there in fp32, and those layers' gradients
     * polluted: median 4e-3 lr, max 0.97 lr). Weights after two steps, in units of the learning rate: fp32 within
     * rounding of the passes' other summation order (the median 4e-6 lr, the largest 5e-4 lr before the window), bf16
     * within the bf16 reduction's rounding (median 2e-4 lr).
     */
    @Test
    void tiedEmbeddingsTrainLikeOneRank(@TempDir Path tmp) throws Exception {
        Path tokDir = org.grpo4j.internal.tokenizer.Tokenizer.extractBundledTiny();
        org.grpo4j.internal.model.LlamaConfig c;
        try (org.grpo4j.internal.tokenizer.Tokenizer tok = org.grpo4j.internal.tokenizer.Tokenizer.load(tokDir)) {
            c = new org.grpo4j.internal.model.LlamaConfig(64, 192, 2, 4, 2, 16, tok.vocabSize(), 1e-5, 10000, null, 2048, true, tok.bosId(),
                    List.of(tok.eosId()));
        }
        Path m = tmp.resolve("tied");
        try (LlamaWeights w = LlamaWeights.init(TestBackends.cpu(), c, 5)) {
            w.save(m, "F32", 1L << 40, tokDir);
        }
        double lr = GrpoTrainerTest.config(List.of()).learningRate;
        for (String precision : List.of("fp32", "bf16")) {
            List<float[]> w = new ArrayList<>();
            for (int world : new int[] {1, 2}) {
                Path out = tmp.resolve(precision + "-w" + world);
                List<String> sets = split(out, 2, world);
                sets.addAll(List.of("model_name_or_path=\"" + m + "\"", "precision=" + precision, "save_freq=2"));
                try (Trainer t = Trainer.builder(GrpoTrainerTest.config(sets)).log(null).build()) {
                    t.run(null);
                }
                w.add(weights(out.resolve("checkpoints/step_2/model")));
            }
            float[] a = w.get(0), b = w.get(1);
            double[] d = new double[a.length];
            for (int i = 0; i < a.length; i++) d[i] = Math.abs(a[i] - b[i]) / lr;
            java.util.Arrays.sort(d);
            String at = String.format("%s, tied, world 1 vs 2: median %.2e lr, max %.2e lr", precision, d[a.length / 2], d[a.length - 1]);
            System.out.println(at);
            if (precision.equals("fp32")) assertTrue(d[a.length / 2] <= 1e-4 && d[a.length - 1] <= 1e-2, at);
            else assertTrue(d[a.length / 2] <= 2e-3, at);
        }
    }

    /**
     * pass_packing tokens at world 2 with ranks whose rollouts differ in length (a data set of short and long prompts):
     * the ranks run different numbers of training passes, the one with fewer takes part in the other's extra ZeRO-2
     * reductions with zeros, and the run trains like one rank over the same global batch (token_mean), within the
     * tolerances of {@link #fourRanksTrainLikeOne}.
     */
    @Test
    void ranksWithDifferentPassCountsTrainLikeOne(@TempDir Path tmp) throws Exception {
        Path data = repeatedQuestions(tmp, i -> i % 2 == 1 ? 3 : 1); // every other prompt long: the question three times over
        int steps = 2;
        List<float[]> w = new ArrayList<>();
        long[][] counts = null;
        for (int world : new int[] {1, 2}) {
            List<String> sets = split(tmp.resolve("w" + world), steps, world);
            sets.addAll(List.of("per_device_train_batch_size=2", "pass_packing=\"tokens\"", "dataset_mixer_list=[\"" + data + "\", \"1.0\"]",
                    "rank_balancing=\"none\"", // (balancing would even the passes out: rankBalancingMovesPromptGroupsAndTrainsAlike)
                    "dataset_mixer_eval_list=[\"" + data + "\", \"4\"]"));
            try (Trainer t = Trainer.builder(GrpoTrainerTest.config(sets)).log(null).build()) {
                t.run(null);
                if (world == 2) counts = t.passCounts();
            }
            w.add(weights(tmp.resolve("w" + world + "/checkpoints/step_" + steps + "/model")));
        }
        assertTrue(counts[0][0] != counts[1][0] && counts[0][1] + counts[1][1] > 0,
                "the ranks ran different numbers of passes (rank 0 " + java.util.Arrays.toString(counts[0]) + ", rank 1 "
                        + java.util.Arrays.toString(counts[1]) + ": passes, rounds of zeros)");
        double lr = GrpoTrainerTest.config(List.of()).learningRate;
        float[] a = w.get(0), b = w.get(1);
        double[] d = new double[a.length];
        for (int i = 0; i < a.length; i++) d[i] = Math.abs(a[i] - b[i]) / lr;
        java.util.Arrays.sort(d);
        assertTrue(d[a.length / 2] <= 1e-4, "median difference " + d[a.length / 2] + " lr");
        assertTrue(d[a.length * 999 / 1000] <= 1e-2, "99.9th percentile " + d[a.length * 999 / 1000] + " lr");
        assertTrue(d[a.length - 1] <= 2.5 * steps, "largest difference " + d[a.length - 1] + " lr");
    }

    /**
     * rank_balancing tokens against none at world 2, on prompts of four lengths (a question once to four times), over
     * two epochs (the first trains on-policy, the second sends old log-probs with the moved groups): prompt groups move
     * (training/rollouts_moved > 0, and for the log-prob passes rollout/logprob_rollouts_moved > 0: the KL and entropy
     * metrics read the log-probs sent back), the rank with the most tokens has fewer of them in every step and in all
     * (training/rank_tokens_max_over_mean, Trainer.passCounts), the completions and every metric of them are the same,
     * the losses agree to 1e-5, and the weights agree within the tolerances of {@link #fourRanksTrainLikeOne} (moving a
     * group changes only the order in which its tokens' gradients are summed), and no more ZeRO-2 rounds run. With
     * pass_packing batch_size (passes in lockstep) nothing moves. The balanced run also shares prompts in its training
     * passes (train_prefix_sharing), and the loss is seq_mean_token_mean, whose weights differ rollout by rollout: a
     * moved rollout that arrived with another's weight would change the loss (under token_mean every token weighs
     * the same, and such a swap passed).
     */
    @Test
    void rankBalancingMovesPromptGroupsAndTrainsAlike(@TempDir Path tmp) throws Exception {
        Path data = repeatedQuestions(tmp, i -> 1 + i % 4);
        int steps = 4;
        Map<String, List<Map<String, Double>>> ms = new java.util.LinkedHashMap<>();
        Map<String, long[][]> counts = new java.util.LinkedHashMap<>();
        Map<String, float[]> w = new java.util.LinkedHashMap<>();
        for (String mode : List.of("none", "tokens", "tokens/batch_size")) {
            Path out = tmp.resolve(mode.replace('/', '-'));
            List<Map<String, Double>> seen = new ArrayList<>();
            List<String> sets = GrpoTrainerTest.small(out, steps);
            sets.addAll(List.of("world_size=2", "local_rollout_batch_size=4", "local_mini_batch_size=16", "per_device_train_batch_size=4",
                    "local_rollout_forward_batch_size=16", "loss_aggregation=\"seq_mean_token_mean\"", "num_evals=0", "num_epochs=2", "save_freq=" + steps,
                    "pass_packing=\"" + (mode.endsWith("batch_size") ? "batch_size" : "tokens") + "\"", "rank_balancing=\"" + mode.split("/")[0] + "\"",
                    "train_prefix_sharing=" + mode.equals("tokens"),
                    "dataset_mixer_list=[\"" + data + "\", \"1.0\"]",
                    "max_prompt_token_length=200"));
            try (Trainer t = Trainer.builder(GrpoTrainerTest.config(sets)).log(null).build()) {
                t.run(new org.grpo4j.train.GrpoTrainer.Listener() {
                    @Override
                    public void onStep(int step, Map<String, Double> m) { seen.add(m); }
                });
                counts.put(mode, t.passCounts());
            }
            ms.put(mode, seen);
            w.put(mode, weights(out.resolve("checkpoints/step_" + steps + "/model")));
        }
        List<Map<String, Double>> none = ms.get("none");
        double moved = 0, lpMoved = 0, worst = 0, best = 0;
        for (int s = 0; s < steps; s++) for (List<Map<String, Double>> bal : List.of(ms.get("tokens"), ms.get("tokens/batch_size"))) {
            for (String k : List.of("objective/scores", "objective/verifiable_correct_rate", "val/sequence_lengths", "val/sequence_lengths_max",
                    "val/num_stop_token_ids", "objective/reward_std", "val/response_length"))
                assertEquals(none.get(s).get(k), bal.get(s).get(k), k + " of step " + (s + 1) + ": the same completions");
            for (String k : List.of("loss/policy_avg", "objective/kl", "val/ratio", "policy/clipfrac_avg", "objective/entropy"))
                assertEquals(none.get(s).get(k), bal.get(s).get(k), 1e-5, k + " of step " + (s + 1));
            assertEquals(0, none.get(s).get("training/rollouts_moved"));
            double a = none.get(s).get("training/rank_tokens_max_over_mean"), b = bal.get(s).get("training/rank_tokens_max_over_mean");
            assertTrue(b <= a, "step " + (s + 1) + ": the busiest rank's share " + b + " balanced, " + a + " not");
            if (bal != ms.get("tokens")) { // batch_size passes run in lockstep: nothing to gain, nothing moves
                assertEquals(0, bal.get(s).get("training/rollouts_moved"));
                continue;
            }
            assertTrue(bal.get(s).get("training/token_rows") < none.get(s).get("training/token_rows"), "step " + (s + 1)
                    + ": the balanced run's passes share their prompts: " + bal.get(s).get("training/token_rows") + " rows against "
                    + none.get(s).get("training/token_rows"));
            moved += bal.get(s).get("training/rollouts_moved");
            lpMoved += bal.get(s).get("rollout/logprob_rollouts_moved");
            assertEquals(0, none.get(s).get("rollout/logprob_rollouts_moved"));
            worst += a;
            best += b;
        }
        System.out.printf("rank_balancing at world 2: %.0f rollouts moved for training and %.0f for log-probs in %d steps; busiest rank's"
                + " training tokens over the mean %.3f -> %.3f (mean of steps)%n", moved, lpMoved, steps, worst / steps, best / steps);
        assertTrue(moved > 0 && lpMoved > 0 && best < worst, moved + " and " + lpMoved + " rollouts moved; imbalance " + worst / steps + " -> " + best / steps);
        long[][] c0 = counts.get("none"), c1 = counts.get("tokens");
        assertTrue(Math.max(c1[0][2], c1[1][2]) < Math.max(c0[0][2], c0[1][2]), "the busiest rank's tokens over the run: "
                + Math.max(c1[0][2], c1[1][2]) + " balanced, " + Math.max(c0[0][2], c0[1][2]) + " not");
        assertEquals(c0[0][2] + c0[1][2], c1[0][2] + c1[1][2], "the same tokens in all");
        assertTrue(c1[0][0] + c1[0][1] <= c0[0][0] + c0[0][1], "ZeRO-2 rounds (every rank's passes and rounds of zeros): "
                + (c1[0][0] + c1[0][1]) + " balanced, " + (c0[0][0] + c0[0][1]) + " not");
        double lr = GrpoTrainerTest.config(List.of()).learningRate;
        for (String mode : List.of("tokens", "tokens/batch_size")) {
            float[] a = w.get("none"), b = w.get(mode);
            double[] d = new double[a.length];
            for (int i = 0; i < a.length; i++) d[i] = Math.abs(a[i] - b[i]) / lr;
            java.util.Arrays.sort(d);
            assertTrue(d[a.length / 2] <= 1e-4, mode + ": median difference " + d[a.length / 2] + " lr");
            assertTrue(d[a.length * 999 / 1000] <= 1e-2, mode + ": 99.9th percentile " + d[a.length * 999 / 1000] + " lr");
            assertTrue(d[a.length - 1] <= 2.5 * steps, mode + ": largest difference " + d[a.length - 1] + " lr");
        }
    }

    /**
     * The same global batch on 1 and on 4 ranks. token_mean over the whole mini-batch makes the loss the same function
     * and the random streams are indexed by global prompt, so the rollouts are the same; the weights agree to rounding,
     * not bitwise, for two reasons: each rank permutes only its own rollouts into micro-batches, so tokens are packed
     * (and their gradient contributions summed) in another order, and the CPU's embedding backward adds token rows into
     * the gradient one by one, so (a + b) + c on one rank becomes a + (b + c) over ranks. After the first step the
     * weights differ by at most 1e-5 lr (measured: 1e-6 lr; fp32 gradients differing in the last bits, and AdamW's first
     * update is lr g / (|g| + eps), lr sign(g) but for gradients near eps). Later steps start from weights an ulp apart and AdamW's update lr m / (sqrt(v) + eps) amplifies
     * relative gradient differences where successive gradients cancel, so the differences grow, measured here (3 steps,
     * lr 1e-3) to a median of 3e-6 lr, a 99.9th percentile of 5e-4 lr and a maximum of 6e-3 lr. The assertions allow
     * ten times that (1e-4 lr for half the weights, 1e-2 lr for 99.9%, 2.5 lr x steps for all): a missing rank's
     * gradient, a wrong weight or a lost bucket moves most weights by about lr.
     */
    @Test
    void fourRanksTrainLikeOne(@TempDir Path tmp) throws Exception {
        int steps = 3;
        List<List<Map<String, Double>>> ms = new ArrayList<>();
        for (int world : new int[] {1, 4}) {
            List<Map<String, Double>> seen = new ArrayList<>();
            List<String> sets = split(tmp.resolve("w" + world), steps, world);
            sets.add("save_freq=1");
            try (Trainer t = Trainer.builder(GrpoTrainerTest.config(sets)).log(null).build()) {
                t.run(new org.grpo4j.train.GrpoTrainer.Listener() {
                    @Override
                    public void onStep(int step, Map<String, Double> m) { seen.add(m); }
                });
            }
            ms.add(seen);
        }
        for (int s = 0; s < steps; s++) {
            for (String k : List.of("objective/scores", "objective/verifiable_correct_rate", "val/sequence_lengths", "val/sequence_lengths_min",
                    "val/sequence_lengths_max", "val/num_stop_token_ids", "objective/reward_std", "val/response_length"))
                assertEquals(ms.get(0).get(s).get(k), ms.get(1).get(s).get(k), k + " of step " + (s + 1) + ": the same completions");
            assertEquals(ms.get(0).get(s).get("objective/entropy"), ms.get(1).get(s).get("objective/entropy"), 1e-4, "old log-probs");
            assertEquals(ms.get(0).get(s).get("loss/policy_avg"), ms.get(1).get(s).get("loss/policy_avg"), 1e-5);
        }
        float[] a1 = weights(tmp.resolve("w1/checkpoints/step_1/model")), b1 = weights(tmp.resolve("w4/checkpoints/step_1/model"));
        double lr = GrpoTrainerTest.config(List.of()).learningRate;
        for (int i = 0; i < a1.length; i++) assertEquals(a1[i], b1[i], 1e-5 * lr, "weight " + i + " after step 1");
        float[] a = weights(tmp.resolve("w1/checkpoints/step_" + steps + "/model")), b = weights(tmp.resolve("w4/checkpoints/step_" + steps + "/model"));
        double[] d = new double[a.length];
        for (int i = 0; i < a.length; i++) d[i] = Math.abs(a[i] - b[i]) / lr;
        java.util.Arrays.sort(d);
        double median = d[a.length / 2], p999 = d[a.length * 999 / 1000], max = d[a.length - 1];
        System.out.printf("world 1 vs 4 after %d steps, weight differences in units of lr: median %.2e, 99.9%% %.2e, max %.2e%n", steps, median, p999, max);
        assertTrue(median <= 1e-4, "median difference " + median + " lr");
        assertTrue(p999 <= 1e-2, "99.9th percentile " + p999 + " lr");
        assertTrue(max <= 2.5 * steps, "largest difference " + max + " lr");
        assertTrue(Files.isRegularFile(tmp.resolve("w4/checkpoints/step_" + steps + "/optimizer_rank_00003_of_00004.safetensors")));
    }

    /**
     * Weight sets over 2^31 elements (forced here on the tiny model: {@link LlamaWeights#SPLIT_PROPERTY}) and the bf16
     * gradient buffer of ZeRO-2 in precision bf16. At world 2 a run with split buffers, cancelled after step 1 and
     * resumed, gives bit for bit the metrics, checkpointed master weights (gathered tensor by tensor) and optimizer
     * slices of an uninterrupted run with flat buffers, in bf16 and fp32. And the bf16 run's first step agrees with
     * world 1's (fp32 gradient accumulation, nothing rounded to bf16) per tensor: the median weight difference of
     * every tensor is below 0.05 lr (measured: at most 1e-6 lr; a tensor whose gradient were lost or doubled would
     * differ by about lr, since AdamW's first update is about lr sign(g)).
     */
    @Test
    void splitBuffersAndBf16GradientsTrainAndResumeBitForBit(@TempDir Path tmp) throws Exception {
        int steps = 2;
        for (String precision : List.of("bf16", "fp32")) {
            Path flat = tmp.resolve(precision + "-flat"), cut = tmp.resolve(precision + "-split");
            List<String> a = split(flat, steps, 2), b = split(cut, steps, 2);
            for (List<String> x : List.of(a, b)) x.addAll(List.of("precision=" + precision, "save_freq=1", "reduce_bucket_size=5000"));
            try (Trainer t = Trainer.builder(GrpoTrainerTest.config(a)).log(null).build()) {
                t.run(null);
            }
            String old = System.getProperty(LlamaWeights.SPLIT_PROPERTY);
            System.setProperty(LlamaWeights.SPLIT_PROPERTY, "4096");
            try {
                try (Trainer t = Trainer.builder(GrpoTrainerTest.config(b)).log(null).build()) {
                    assertFalse(t.rankStates().get(0).compute.hasFlat(), "split buffers");
                    t.run(new org.grpo4j.train.GrpoTrainer.Listener() {
                        @Override
                        public void onStep(int step, Map<String, Double> m) { if (step == 1) t.cancel(); }
                    });
                }
                assertFalse(Files.exists(cut.resolve("checkpoints/step_2")));
                try (Trainer t = Trainer.builder(null).resume(cut).log(null).build()) {
                    t.run(null);
                }
            } finally {
                if (old == null) System.clearProperty(LlamaWeights.SPLIT_PROPERTY);
                else System.setProperty(LlamaWeights.SPLIT_PROPERTY, old);
            }
            assertEquals(GrpoTrainerTest.comparable(flat.resolve("metrics.jsonl")), GrpoTrainerTest.comparable(cut.resolve("metrics.jsonl")), precision);
            for (int s = 1; s <= steps; s++) {
                String ck = "checkpoints/step_" + s + "/";
                assertArrayEquals(Files.readAllBytes(flat.resolve(ck + "model/model.safetensors")), Files.readAllBytes(cut.resolve(ck + "model/model.safetensors")),
                        precision + " step " + s);
                for (int r = 0; r < 2; r++) {
                    String f = ck + ShardedAdamW.fileName(r, 2);
                    assertArrayEquals(Files.readAllBytes(flat.resolve(f)), Files.readAllBytes(cut.resolve(f)), precision + " " + f);
                }
            }
        }
        // bf16: world 2 (bf16 gradients reduced per micro-batch) against world 1 (fp32 accumulation), first step
        Path one = tmp.resolve("bf16-one");
        List<String> c = split(one, 1, 1);
        c.addAll(List.of("precision=bf16", "save_freq=1"));
        try (Trainer t = Trainer.builder(GrpoTrainerTest.config(c)).log(null).build()) {
            t.run(null);
        }
        double worst = largestTensorMedian(one.resolve("checkpoints/step_1/model"), tmp.resolve("bf16-flat/checkpoints/step_1/model"), 0.05,
                "between world 1 and world 2 in bf16");
        System.out.printf("bf16 world 1 vs 2 after one step: largest per-tensor median difference %.2e lr%n", worst);
    }

    /**
     * The median difference of each tensor's weights between two models, in units of the learning rate, each asserted
     * below {@code bound} ({@code what} in the message); returns the largest. A tensor whose gradient or moments were
     * lost, doubled or misplaced differs by about lr (AdamW's update is about lr sign(m / sqrt(v))), which a median over
     * the whole model would hide for a small tensor such as a norm's weight.
     */
    static double largestTensorMedian(Path a, Path b, double bound, String what) throws Exception {
        double lr = GrpoTrainerTest.config(List.of()).learningRate, worst = 0;
        try (LlamaWeights w1 = LlamaWeights.load(TestBackends.cpu(), a); LlamaWeights w2 = LlamaWeights.load(TestBackends.cpu(), b)) {
            for (org.grpo4j.internal.model.ParameterLayout.Entry e : w1.layout().entries()) {
                float[] x = w1.get(e.name()).toFloats(), y = w2.get(e.name()).toFloats();
                double[] d = new double[x.length];
                for (int i = 0; i < x.length; i++) d[i] = Math.abs(x[i] - y[i]) / lr;
                java.util.Arrays.sort(d);
                worst = Math.max(worst, d[d.length / 2]);
                assertTrue(d[d.length / 2] < bound, e.name() + ": median difference " + d[d.length / 2] + " lr " + what);
            }
        }
        return worst;
    }

    /**
     * The SFT warm-up reduces every micro-batch at world > 1, and every rank takes part in as many reductions as the
     * rank with the most micro-batches: with 3 sequences per step and one per micro-batch, rank 0 runs 2 and rank 1 runs
     * 1 and reduces zeros once. The warmed-up weights (step 0) agree with world 1's: fp32 to a few fp32 ulps of the
     * update (measured: at most 2e-5 lr; asserted 1e-3 lr), bf16 to its gradient rounding (measured median 6e-4 lr;
     * asserted 0.05 lr). A rank missing a reduction would hang here (the collective timeout fails the test), a lost
     * micro-batch would move weights by about lr.
     */
    @Test
    void sftWarmupWithUnevenMicroBatchesTrainsLikeOneRank(@TempDir Path tmp) throws Exception {
        for (String precision : List.of("fp32", "bf16")) {
            float[][] w = new float[2][];
            for (int world : new int[] {1, 2}) {
                Path out = tmp.resolve(precision + world);
                List<String> s = split(out, 1, world);
                s.addAll(List.of("precision=" + precision, "sft_warmup.steps=2", "sft_warmup.batch_size=3", "per_device_train_batch_size=1",
                        "max_prompt_token_length=40", "reduce_bucket_size=5000", "save_freq=1"));
                try (Trainer t = Trainer.builder(GrpoTrainerTest.config(s)).log(null).build()) {
                    t.run(null);
                    assertEquals(world == 1 ? 6 : 4, t.sftMicroBatches, precision + " world " + world + ": rank 0's warm-up micro-batches");
                }
                try (LlamaWeights lw = LlamaWeights.load(TestBackends.cpu(), out.resolve("checkpoints/step_0/model"))) {
                    w[world - 1] = lw.flat().toFloats();
                }
            }
            double lr = GrpoTrainerTest.config(List.of()).sftWarmup.learningRate;
            double[] d = new double[w[0].length];
            for (int i = 0; i < d.length; i++) d[i] = Math.abs(w[0][i] - w[1][i]) / lr;
            java.util.Arrays.sort(d);
            System.out.printf("sft warm-up, %s, world 1 vs 2: median %.2e lr, max %.2e lr%n", precision, d[d.length / 2], d[d.length - 1]);
            if (precision.equals("fp32")) assertTrue(d[d.length - 1] <= 1e-3, "fp32: largest difference " + d[d.length - 1] + " lr");
            else assertTrue(d[d.length / 2] <= 0.05, "bf16: median difference " + d[d.length / 2] + " lr");
        }
    }

    /**
     * Four ranks, cancelled after step 1 and resumed, against an uninterrupted run: the same metrics, model and optimizer
     * slices bit for bit. The model has a parameter count that 4 does not divide (hidden 62, an untied head: the flat
     * buffer's padding and the last rank's short slice) and buckets of 1,100 elements, which straddle tensors and slices.
     * Another world size is refused, from the launch and from an edited checkpoint config.
     */
    @Test
    void fourRanksResumeBitForBitAndOtherWorldSizesAreRefused(@TempDir Path tmp) throws Exception {
        int steps = 3;
        Path full = tmp.resolve("full"), cut = tmp.resolve("cut"), odd = tmp.resolve("odd");
        Path tokDir = org.grpo4j.internal.tokenizer.Tokenizer.extractBundledTiny();
        org.grpo4j.internal.model.LlamaConfig c;
        try (org.grpo4j.internal.tokenizer.Tokenizer tok = org.grpo4j.internal.tokenizer.Tokenizer.load(tokDir)) {
            c = new org.grpo4j.internal.model.LlamaConfig(62, 190, 2, 4, 2, 16, tok.vocabSize(), 1e-5, 10000, null, 2048, false, tok.bosId(),
                    List.of(tok.eosId()));
        }
        long count = new org.grpo4j.internal.model.ParameterLayout(c).totalElements();
        assertNotEquals(0, count % 4, count + " parameters");
        try (LlamaWeights w = LlamaWeights.init(TestBackends.cpu(), c, 5)) {
            w.save(odd, "F32", 1L << 40, tokDir);
        }
        List<String> a = split(full, steps, 4), b = split(cut, steps, 4);
        for (List<String> x : List.of(a, b)) x.addAll(List.of("save_freq=0", "model_name_or_path=\"" + odd + "\"", "reduce_bucket_size=1100"));
        try (Trainer t = Trainer.builder(GrpoTrainerTest.config(a)).log(null).build()) {
            t.run(null);
        }
        try (Trainer t = Trainer.builder(GrpoTrainerTest.config(b)).log(null).build()) {
            t.run(new org.grpo4j.train.GrpoTrainer.Listener() {
                @Override
                public void onStep(int step, Map<String, Double> m) { if (step == 1) t.cancel(); }
            });
        }
        assertFalse(Files.exists(cut.resolve("checkpoints/step_2")));
        // a launch with another number of ranks than the run's
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Trainer.builder(null).resume(cut).cluster(new FakeCluster(2)).log(null).build());
        assertTrue(e.getMessage().contains("was trained with world_size 4") && e.getMessage().contains("resume it with 4 ranks")
                && e.getMessage().contains("reshard it for 2 with --world-size 2"), e.getMessage());
        try (Trainer t = Trainer.builder(null).resume(cut).log(null).build()) {
            t.run(null);
        }
        assertEquals(GrpoTrainerTest.comparable(full.resolve("metrics.jsonl")), GrpoTrainerTest.comparable(cut.resolve("metrics.jsonl")));
        String last = "checkpoints/step_" + steps + "/";
        assertArrayEquals(Files.readAllBytes(full.resolve(last + "model/model.safetensors")), Files.readAllBytes(cut.resolve(last + "model/model.safetensors")));
        for (int r = 0; r < 4; r++) {
            String f = last + ShardedAdamW.fileName(r, 4);
            assertArrayEquals(Files.readAllBytes(full.resolve(f)), Files.readAllBytes(cut.resolve(f)), f);
        }
        // a checkpoint whose config was edited to another world size: its optimizer slices belong to 4 ranks
        Path cfg = cut.resolve(last + "config.json");
        Files.writeString(cfg, Files.readString(cfg).replace("\"world_size\" : 4", "\"world_size\" : 2").replace("\"local_rollout_batch_size\" : 1",
                "\"local_rollout_batch_size\" : 2").replace("\"local_mini_batch_size\" : 4", "\"local_mini_batch_size\" : 8")
                .replace("\"local_rollout_forward_batch_size\" : 4", "\"local_rollout_forward_batch_size\" : 8"));
        e = assertThrows(IllegalArgumentException.class, () -> Trainer.builder(null).resume(cut).log(null).build());
        assertTrue(e.getMessage().contains("written by 4 ranks, but the run's config says world_size 2"), e.getMessage());
    }

    /**
     * reference_sharding layers against none at world 2, with ranks whose rollouts differ in length (so that one rank
     * runs fewer reference passes and takes part in the other's layer gathers without rollouts): the same metrics, model
     * and optimizer slices bit for bit (the gathered layers are the replica's bits), also when the sharded run is
     * cancelled after step 1 and resumed (each rank reads its pieces of the step-0 model). The resume checks the sharded
     * reference's checksum, gathered from the ranks' pieces: one changed weight of a layer is refused.
     */
    @Test
    void aShardedReferenceTrainsAsTheReplicaBitForBit(@TempDir Path tmp) throws Exception {
        Path data = repeatedQuestions(tmp, i -> i % 2 == 1 ? 3 : 1);
        int steps = 3;
        long[] idle = null;
        for (String mode : List.of("none", "layers", "cut")) {
            List<String> sets = split(tmp.resolve(mode), steps, 2);
            sets.addAll(List.of("pass_packing=\"tokens\"", "rank_balancing=\"none\"", "local_rollout_forward_batch_size=2", "save_freq=1",
                    "dataset_mixer_list=[\"" + data + "\", \"1.0\"]", "reference_sharding=\"" + (mode.equals("none") ? "none" : "layers") + "\""));
            try (Trainer t = Trainer.builder(GrpoTrainerTest.config(sets)).log(null).build()) {
                t.run(new org.grpo4j.train.GrpoTrainer.Listener() {
                    @Override
                    public void onStep(int step, Map<String, Double> m) { if (step == 1 && mode.equals("cut")) t.cancel(); }
                });
                if (mode.equals("layers")) idle = t.referenceIdlePasses();
                if (mode.equals("none")) assertArrayEquals(new long[2], t.referenceIdlePasses());
            }
        }
        assertTrue(idle[0] + idle[1] > 0, "a rank took part in the other's reference passes: " + java.util.Arrays.toString(idle));
        Path none = tmp.resolve("none"), layers = tmp.resolve("layers"), cut = tmp.resolve("cut"), tampered = tmp.resolve("tampered");
        org.grpo4j.internal.util.TestFiles.copyTree(cut, tampered);
        try (Trainer t = Trainer.builder(null).resume(cut).log(null).build()) { // its reference: pieces of step_0, read by each rank
            t.run(null);
        }
        String last = "checkpoints/step_" + steps + "/";
        for (Path run : List.of(layers, cut)) {
            assertEquals(GrpoTrainerTest.comparable(none.resolve("metrics.jsonl")), GrpoTrainerTest.comparable(run.resolve("metrics.jsonl")), run.toString());
            for (String f : List.of("model/model.safetensors", ShardedAdamW.fileName(0, 2), ShardedAdamW.fileName(1, 2)))
                assertArrayEquals(Files.readAllBytes(none.resolve(last + f)), Files.readAllBytes(run.resolve(last + f)), run + ": " + f);
        }
        // the reference of a resume: step_0's model, one weight of layer 1 changed
        Path step0 = tampered.resolve("checkpoints/step_0/model"), edited = tmp.resolve("edited");
        try (LlamaWeights w = LlamaWeights.load(TestBackends.cpu(), step0)) {
            org.grpo4j.internal.backend.Tensor t = w.get("model.layers.1.mlp.up_proj.weight");
            float[] x = t.toFloats();
            x[7] += 0.5f;
            TestBackends.cpu().copyFromHost(t, x);
            w.save(edited, "F32", 1L << 40, step0);
        }
        Files.copy(edited.resolve("model.safetensors"), step0.resolve("model.safetensors"), java.nio.file.StandardCopyOption.REPLACE_EXISTING);
        Exception e = assertThrows(Exception.class, () -> {
            try (Trainer t = Trainer.builder(null).resume(tampered).log(null).build()) {
                t.run(null);
            }
        });
        assertTrue(String.valueOf(e.getMessage()).contains("the reference policy does not match the checksum"), String.valueOf(e));
    }

    /**
     * A run of 2 ranks (one mini-batch a step) cancelled after step 1 and resumed at another world size (--world-size):
     * at 4 and at 1 rank in fp32, and at 4 in bf16, each against the uninterrupted 2-rank run in the same precision. The global batch is kept
     * (the per-rank sizes rescaled; the config of the new checkpoints says so), each rank's moments are put together
     * from the saved slices ({@code ShardedAdamWTest.momentsReshardBitForBit}), so the completions are the same and the
     * fp32 weights agree within {@link #fourRanksTrainLikeOne}'s tolerances (summation order only; measured: median 0,
     * largest 1.2e-4 lr); bf16 within the rounding of its bf16 gradients, which 4 ranks round from other partial sums
     * than 2 (median 2e-3 lr; measured 8.5e-4 lr, which bf16 compute weights amplify where a master weight crosses a
     * rounding boundary, up to about 1 lr); and each tensor's median difference below 0.05 lr (measured: 0 in fp32, at
     * most 2.8e-3 lr in bf16); a world size that does not divide the batch is refused naming it.
     */
    @Test
    void aRunResumesAtAnotherWorldSize(@TempDir Path tmp) throws Exception {
        int steps = 3;
        double lr = GrpoTrainerTest.config(List.of()).learningRate;
        for (String variant : List.of("fp32/4", "fp32/1", "bf16/4")) {
            String precision = variant.split("/")[0];
            int to = Integer.parseInt(variant.split("/")[1]);
            Path full = tmp.resolve(precision + "-full" + to), cut = tmp.resolve(precision + "-cut" + to);
            for (Path out : List.of(full, cut)) {
                List<String> sets = split(out, steps, 2);
                sets.addAll(List.of("precision=" + precision, "save_freq=1"));
                try (Trainer t = Trainer.builder(GrpoTrainerTest.config(sets)).log(null).build()) {
                    t.run(new org.grpo4j.train.GrpoTrainer.Listener() {
                        @Override
                        public void onStep(int step, Map<String, Double> m) { if (step == 1 && out == cut) t.cancel(); }
                    });
                }
            }
            if (to != 1) {
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Trainer.builder(null).resume(cut).reshard(3).log(null).build());
                assertTrue(e.getMessage().contains("its 4 prompts a step (local_rollout_batch_size 2 x 2) do not split over 3 ranks"), e.getMessage());
                // resharded for 4 but 1 rank launched: the run's own size and the reshard are named as they are
                e = assertThrows(IllegalArgumentException.class, () -> Trainer.builder(null).resume(cut).reshard(4).cluster(new FakeCluster(1)).log(null).build());
                assertTrue(e.getMessage().contains("was trained with world_size 2") && e.getMessage().contains("is being resharded for 4"), e.getMessage());
            }
            java.io.ByteArrayOutputStream said = new java.io.ByteArrayOutputStream();
            try (Trainer t = Trainer.builder(null).resume(cut).reshard(to).log(new java.io.PrintStream(said, true)).build()) {
                t.run(null);
            }
            assertTrue(said.toString().contains("resharding the run from 2 to " + to + " ranks: local_rollout_batch_size " + 4 / to), said.toString());
            String last = "checkpoints/step_" + steps + "/";
            GrpoConfig saved = Checkpoints.savedConfig(cut.resolve(last));
            assertEquals(to, saved.worldSize);
            assertEquals(4, saved.localRolloutBatchSize * to, "the global batch");
            List<Map<String, Double>> a = GrpoTrainerTest.readMetrics(full.resolve("metrics.jsonl")), b = GrpoTrainerTest.readMetrics(cut.resolve("metrics.jsonl"));
            assertEquals(steps, b.size());
            for (int s = 0; s < steps; s++) {
                for (String k : List.of("objective/scores", "objective/verifiable_correct_rate", "val/sequence_lengths", "val/num_stop_token_ids",
                        "val/response_length"))
                    assertEquals(a.get(s).get(k), b.get(s).get(k), variant + ": " + k + " of step " + (s + 1) + ": the same completions");
                assertEquals(a.get(s).get("loss/policy_avg"), b.get(s).get("loss/policy_avg"), 1e-5, variant + ": loss of step " + (s + 1));
            }
            float[] x = weights(full.resolve(last + "model")), y = weights(cut.resolve(last + "model"));
            double[] d = new double[x.length];
            for (int i = 0; i < x.length; i++) d[i] = Math.abs(x[i] - y[i]) / lr;
            java.util.Arrays.sort(d);
            System.out.printf("%s: 2 ranks, resumed at %d after step 1, against 2 throughout: weight differences in lr median %.2e, 99.9%% %.2e, max %.2e%n",
                    variant, to, d[x.length / 2], d[x.length * 999 / 1000], d[x.length - 1]);
            if (precision.equals("fp32"))
                assertTrue(d[x.length / 2] <= 1e-4 && d[x.length * 999 / 1000] <= 1e-2 && d[x.length - 1] <= 2.5 * steps,
                        variant + ": median " + d[x.length / 2] + ", 99.9% " + d[x.length * 999 / 1000] + ", max " + d[x.length - 1] + " lr");
            else // bf16 gradients rounded per rank's micro-batch before the reduction: 4 ranks round other partial sums than 2
                assertTrue(d[x.length / 2] <= 2e-3, variant + ": median " + d[x.length / 2] + " lr");
            // and tensor by tensor: moments resharded into the wrong place for one small tensor (a norm's 64 weights)
            // would move it by about lr and pass the whole model's percentiles above
            System.out.printf("%s: largest per-tensor median difference %.2e lr%n", variant,
                    largestTensorMedian(full.resolve(last + "model"), cut.resolve(last + "model"), 0.05, variant + ": resumed at " + to + " ranks"));
            assertTrue(Files.isRegularFile(cut.resolve(last + ShardedAdamW.fileName(to - 1, to))), "the new checkpoint's optimizer slices");
        }
    }

    /**
     * The memory of each rank against {@link MemoryEstimate}: after the run the backend holds exactly the model states
     * the estimate lists (bf16 and fp32, two ranks; the reference sharded, and in bf16 also whole as auto keeps it here), and its high-water mark during training stays within the states
     * plus the estimate of the largest pass's activations or of generation's buffers and the KV pool.
     */
    @Test
    void eachRanksAllocationsFollowTheMemoryEstimate(@TempDir Path tmp) throws Exception {
        for (String precision : List.of("bf16/layers", "fp32/layers", "bf16/auto")) { // (auto: the tiny model's 2 layers keep a replica)
            List<String> sets = split(tmp.resolve(precision.replace('/', '-')), 2, 2);
            sets.addAll(List.of("precision=" + precision.split("/")[0], "save_freq=0", "reduce_bucket_size=5000",
                    "reference_sharding=" + precision.split("/")[1]));
            GrpoConfig c = GrpoTrainerTest.config(sets);
            try (Trainer t = Trainer.builder(c).log(null).build()) {
                for (int r = 0; r < 2; r++) // loading frees the fp32 weights it read before the gradient buffers exist
                    assertTrue(((AbstractBackend) t.rankBackends().get(r)).peakBytes() <= t.rankEstimates().get(r).statesBytes(),
                            precision + " rank " + r + ": loading peaked at " + ((AbstractBackend) t.rankBackends().get(r)).peakBytes()
                                    + " bytes, above the model states " + t.rankEstimates().get(r).statesBytes());
                t.run(null);
                List<Backend> bes = t.rankBackends();
                List<MemoryEstimate> est = t.rankEstimates();
                assertEquals(2, bes.size());
                for (int r = 0; r < 2; r++) {
                    AbstractBackend be = (AbstractBackend) bes.get(r);
                    MemoryEstimate e = est.get(r);
                    assertEquals((long) e.statesBytes(), be.liveBytes(), precision + " rank " + r + ": live bytes after the run = the estimate's model states"
                            + " (the update phase's buffers freed)");
                    assertTrue(e.updateBytes() > 0 && be.peakBytes() >= e.statesBytes() + e.updateBytes(),
                            precision + " rank " + r + ": the update phase's buffers existed during training");
                    // and the update phase's buffers are exactly the estimate's (an estimate that leaves one out, or
                    // counts it short, stays under the loose bound below; this finds it)
                    RankState s = t.rankStates().get(r);
                    long before = be.liveBytes();
                    s.beginUpdate();
                    try {
                        assertEquals((long) e.updateBytes(), be.liveBytes() - before, precision + " rank " + r
                                + ": an update phase's buffers (gradients or their window, the fp32 [V, D] gradient, the accumulated slice, the buckets)");
                    } finally {
                        s.endUpdate();
                    }
                    assertEquals(before, be.liveBytes(), precision + " rank " + r + ": the update phase's buffers freed");
                    long seq = 64 + c.responseLength; // max_prompt_token_length bounds the longest prompt
                    // a training pass runs beside the update phase's buffers (gradients, accumulated slice, buckets)
                    double acts = Math.max(e.trainingActivationBytes(c.perDeviceTrainBatchSize * seq, (long) c.perDeviceTrainBatchSize * c.responseLength, false)
                            + e.updateBytes(),
                            e.noGradActivationBytes(c.localRolloutForwardBatchSize * seq, (long) c.localRolloutForwardBatchSize * c.responseLength));
                    double gen = e.generationBytes(c.localCompletions(), (long) c.localRolloutBatchSize * 64)
                            + (double) c.localCompletions() * ((seq + 15) / 16 + 1) * 16 * e.kvBytesPerToken();
                    double bound = e.statesBytes() + Math.max(acts, gen);
                    System.out.printf("%s rank %d: states %,d B (formula 2P+2P+12P/N: %,.0f B), peak %,d B, bound %,.0f B%n", precision, r,
                            be.liveBytes(), e.zeroFormulaBytes(), be.peakBytes(), bound);
                    assertTrue(be.peakBytes() <= bound, precision + " rank " + r + ": peak " + be.peakBytes() + " > estimate " + bound);
                }
            }
        }
    }

    /**
     * A process of a multi-process run that fails while starting (here: its communicator cannot be made) aborts the
     * rendezvous rather than closing it as a clean exit, so that the other processes' launchers stop them instead of
     * leaving them in ncclCommInitRank for ever; with one rank in the process the rank's failure aborts too.
     */
    @Test
    void aProcessThatFailsToStartAbortsTheRun(@TempDir Path tmp) throws Exception {
        List<String> reasons = java.util.Collections.synchronizedList(new java.util.ArrayList<>());
        FakeCluster fake = new FakeCluster(2);
        Cluster recording = new Cluster() {
            public int worldSize() { return fake.worldSize(); }
            public int[] localRanks() { return fake.localRanks(); }
            public int[] localDevices() { return fake.localDevices(); }
            public Communicator communicator(int localIndex, Backend backend, int timeoutSeconds) { return fake.communicator(localIndex, backend, timeoutSeconds); }
            public void agreeOnConfig(String json) {}
            public String share(String key, String value) { return value; }
            public void barrier(String name) {}
            public void abort(String reason) { reasons.add(reason); }
            public void close() {}
        };
        assertThrows(RuntimeException.class, () -> Trainer.builder(GrpoTrainerTest.config(split(tmp.resolve("run"), 1, 2))).cluster(recording).log(null).build());
        assertFalse(reasons.isEmpty(), "the rendezvous was aborted");
        assertTrue(reasons.get(0).contains("failed"), reasons.toString());
    }

    /**
     * A rank whose GPU is missing stops the launch naming the rank and the device: here CUDA is unavailable (this
     * machine), on a host with one GPU the device is beyond the visible ones.
     */
    @Test
    void aRankWhoseGpuIsMissingStopsNamingIt(@TempDir Path tmp) throws Exception {
        org.grpo4j.internal.backend.CudaRuntime.Availability a = org.grpo4j.internal.backend.CudaRuntime.probe();
        org.junit.jupiter.api.Assumptions.assumeTrue(a.deviceCount() < 2, "this host has cuda:1");
        List<String> sets = GrpoTrainerTest.small(tmp.resolve("run"), 1);
        sets.addAll(List.of("world_size=2", "backend=\"cuda\""));
        GrpoConfig cfg = GrpoTrainerTest.config(sets);
        IllegalStateException e = assertThrows(IllegalStateException.class,
                () -> Trainer.builder(cfg).cluster(new FakeCluster(2, 1, 1)).log(null).build().close());
        assertTrue(e.getMessage().startsWith("rank 1 needs cuda:1, but ") && e.getMessage().contains(a.available()
                ? "only 1 device is visible (CUDA_VISIBLE_DEVICES, --gpus)" : "CUDA is unavailable here: " + a.reason()), e.getMessage());
    }

    /** A launch of {@code world} ranks that never gets as far as its communicators; this process runs one rank on one device. */
    record FakeCluster(int worldSize, int rank, int device) implements Cluster {
        FakeCluster(int worldSize) { this(worldSize, 0, 0); }
        public int[] localRanks() { return new int[] {rank}; }
        public int[] localDevices() { return new int[] {device}; }
        public Communicator communicator(int localIndex, Backend backend, int timeoutSeconds) { throw new UnsupportedOperationException(); }
        public void agreeOnConfig(String json) {}
        public String share(String key, String value) { return value; }
        public void barrier(String name) {}
        public void close() {}
    }
}
