package org.grpo4j.internal.train;

import static org.junit.jupiter.api.Assertions.*;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.model.LlamaConfig;
import org.grpo4j.internal.model.MemoryEstimate;
import org.grpo4j.train.GrpoConfig;
import org.junit.jupiter.api.Test;

/**
 * {@link PassPacking} and {@link UpdatePhase#byPrompt}: how rollouts become passes through the model.
 */
class TrainPassesTest {
    static Rollout rollout(int promptLen, int targets, int promptSeed) {
        Rollout o = new Rollout();
        o.promptLen = promptLen;
        o.seq = new int[promptLen + targets];
        SplittableRandom r = new SplittableRandom(promptSeed);
        for (int i = 0; i < promptLen; i++) o.seq[i] = r.nextInt(1000);
        for (int i = promptLen; i < o.seq.length; i++) o.seq[i] = 1000 + i;
        o.targets = new int[targets];
        return o;
    }

    /**
     * tokens: the passes cover the rollouts in order; each pass's estimated activations stay within the cap (a micro-batch
     * of the longest sequences the plan allows), except a rollout alone; and each pass but the last is maximal (its
     * next rollout would not fit). batch_size: slices of per_device_train_batch_size. The no-grad log-prob chunks the
     * same way against their own estimate and count.
     */
    @Test
    void passesFillThePlannedMemoryInOrder() {
        LlamaConfig c = LlamaConfig.llama31_8b().withLayers(4);
        for (DType dt : new DType[] {DType.BF16, DType.FP32})
            for (boolean ckpt : new boolean[] {false, true}) {
                MemoryEstimate est = new MemoryEstimate(c, 1, dt, 200_000_000L);
                GrpoConfig cfg = new GrpoConfig();
                cfg.perDeviceTrainBatchSize = 2;
                cfg.responseLength = 512;
                cfg.gradientCheckpointing = ckpt;
                int longest = 300;
                SplittableRandom r = new SplittableRandom(ckpt ? 1 : 2);
                List<Rollout> order = new ArrayList<>();
                for (int i = 0; i < 40; i++) order.add(rollout(20 + r.nextInt(281), 1 + r.nextInt(512), i / 8));
                order.add(rollout(2000, 512, 99)); // longer than the plan (a pass of its own)
                for (int i = 0; i < 10; i++) order.add(rollout(30, 5, 100 + i));
                long lm = 1L << 30;
                double cap = est.trainingActivationBytes(2L * (longest + 512), 2L * 512, ckpt, lm);
                List<List<Rollout>> passes = PassPacking.training(cfg, est, lm, order, longest);
                List<Rollout> seen = new ArrayList<>();
                for (int p = 0; p < passes.size(); p++) {
                    List<Rollout> pass = passes.get(p);
                    assertFalse(pass.isEmpty());
                    seen.addAll(pass);
                    if (pass.size() > 1) assertTrue(bytes(est, pass, null, ckpt, lm) <= cap, "pass " + p + " over the cap");
                    if (p + 1 < passes.size())
                        assertTrue(bytes(est, pass, passes.get(p + 1).get(0), ckpt, lm) > cap, "pass " + p + " could have taken one more");
                }
                assertEquals(order, seen, "every rollout once, in order");
                assertTrue(passes.size() < (order.size() + 1) / 2, passes.size() + " passes: no fewer than micro-batches of 2");
                assertTrue(passes.stream().anyMatch(p -> p.size() == 1 && p.get(0).seq.length == 2512), "the over-long rollout alone");

                cfg.passPacking = "batch_size";
                List<List<Rollout>> micro = PassPacking.training(cfg, est, lm, order, longest);
                assertEquals((order.size() + 1) / 2, micro.size());
                for (int p = 0; p < micro.size(); p++) assertEquals(order.subList(2 * p, Math.min(order.size(), 2 * p + 2)), micro.get(p));
                cfg.localRolloutForwardBatchSize = 3;
                List<List<Rollout>> chunks = PassPacking.logprobs(cfg, est, order, longest);
                assertEquals((order.size() + 2) / 3, chunks.size());
                for (int p = 0; p < chunks.size(); p++) assertEquals(order.subList(3 * p, Math.min(order.size(), 3 * p + 3)), chunks.get(p));

                cfg.passPacking = "tokens";
                double fwdCap = est.noGradActivationBytes(3L * (longest + 512), 3L * 512);
                chunks = PassPacking.logprobs(cfg, est, order, longest);
                seen.clear();
                for (int p = 0; p < chunks.size(); p++) {
                    List<Rollout> chunk = chunks.get(p);
                    seen.addAll(chunk);
                    long[] tl = totals(chunk, null);
                    if (chunk.size() > 1) assertTrue(est.noGradActivationBytes(tl[0], tl[1]) <= fwdCap, "chunk " + p + " over the cap");
                    if (p + 1 < chunks.size()) {
                        tl = totals(chunk, chunks.get(p + 1).get(0));
                        assertTrue(est.noGradActivationBytes(tl[0], tl[1]) > fwdCap, "chunk " + p + " could have taken one more");
                    }
                }
                assertEquals(order, seen, "every rollout once, in order (log-prob chunks)");
                assertTrue(chunks.size() < (order.size() + 2) / 3, chunks.size() + " chunks: no fewer than 3 a chunk");
            }
    }

    static double bytes(MemoryEstimate est, List<Rollout> pass, Rollout plus, boolean ckpt, long lm) {
        long[] tl = totals(pass, plus);
        return est.trainingActivationBytes(tl[0], tl[1], ckpt, lm);
    }

    /** {tokens, loss tokens} of the rollouts, and of {@code plus} when not null. */
    static long[] totals(List<Rollout> rs, Rollout plus) {
        long tokens = 0, loss = 0;
        List<Rollout> all = new ArrayList<>(rs);
        if (plus != null) all.add(plus);
        for (Rollout o : all) {
            tokens += o.seq.length;
            loss += o.targets.length;
        }
        return new long[] {tokens, loss};
    }

    /** Rollouts grouped by prompt tokens (not by prompt length), prompts in order of first appearance, stable inside. */
    @Test
    void byPromptGroupsEqualPromptsStably() {
        Rollout a1 = rollout(5, 3, 1), b1 = rollout(5, 4, 2), a2 = rollout(5, 2, 1), c1 = rollout(7, 1, 1), b2 = rollout(5, 1, 2), a3 = rollout(5, 9, 1);
        assertEquals(List.of(a1, a2, a3, b1, b2, c1), UpdatePhase.byPrompt(List.of(a1, b1, a2, c1, b2, a3)));
    }
}
