package org.grpo4j.internal.train;

import org.grpo4j.train.GrpoConfig;
import java.util.ArrayList;
import java.util.List;
import org.grpo4j.internal.model.LlamaModel;
import org.grpo4j.internal.model.PackedBatch;

/**
 * Phase 3 of a step: the old (current policy) and reference log-probs of the loss tokens, in no-grad passes over
 * chunks of local_rollout_forward_batch_size rollouts, logits divided by (temperature + 1e-7). The models run in the
 * precision's dtype; the log-probs are fp32. With old_logprobs auto, the rollouts that the first mini-batch of the
 * first epoch trains get no old pass: their old log-probs are their training forward's own (UpdatePhase), taken with
 * the same weights; their {@code old} stays null until then.
 */
final class LogprobPhase {
    private LogprobPhase() {}

    /** Returns how many rollouts had the no-grad old pass. */
    static int run(RankState r, int step, List<Rollout> rs) {
        GrpoConfig cfg = r.s.cfg();
        float temp = (float) cfg.temperature;
        boolean[] onPolicy = UpdatePhase.onPolicy(r, step, rs.size());
        List<Rollout> needOld = new ArrayList<>();
        for (int i = 0; i < rs.size(); i++) {
            rs.get(i).old = null;
            if (!onPolicy[i]) needOld.add(rs.get(i));
        }
        pass(r, r.refModel, rs, temp, (x, lp) -> x.ref = lp);
        // the old pass in chunks of its own rollouts (with recompute, every rollout: the same chunks as the reference pass)
        pass(r, r.model, needOld, temp, (x, lp) -> x.old = lp);
        return needOld.size();
    }

    /** One model's log-probs of the rollouts' loss tokens, in chunks of local_rollout_forward_batch_size, each rollout's to {@code into}. */
    private static void pass(RankState r, LlamaModel m, List<Rollout> rs, float temp, java.util.function.BiConsumer<Rollout, float[]> into) {
        int chunkSize = r.s.cfg().localRolloutForwardBatchSize;
        for (int from = 0; from < rs.size(); from += chunkSize) {
            List<Rollout> chunk = rs.subList(from, Math.min(rs.size(), from + chunkSize));
            float[] lp = logprobs(r, m, chunk, temp);
            int k = 0;
            for (Rollout x : chunk) {
                into.accept(x, java.util.Arrays.copyOfRange(lp, k, k + x.targets.length));
                k += x.targets.length;
            }
        }
    }

    /** Log-probs of every rollout's loss tokens under a model, concatenated in order. */
    static float[] logprobs(RankState r, LlamaModel m, List<Rollout> rs, float temp) {
        Packed pk = Packed.of(rs);
        try (PackedBatch pb = PackedBatch.of(r.be, pk.seqs(), r.s.model().vocabSize())) {
            return m.tokenLogprobs(pb, pk.rows(), pk.targets(), temp);
        }
    }

    /** Rollouts packed for a forward pass: sequences, and for each loss token its row in the packing and its target. */
    record Packed(List<int[]> seqs, int[] rows, int[] targets) {
        static Packed of(List<Rollout> rs) {
            List<int[]> seqs = new ArrayList<>();
            int nTok = 0;
            for (Rollout x : rs) {
                seqs.add(x.seq);
                nTok += x.targets.length;
            }
            int[] rows = new int[nTok], tgt = new int[nTok];
            int k = 0, start = 0;
            for (Rollout x : rs) {
                for (int t = 0; t < x.targets.length; t++, k++) {
                    rows[k] = start + x.promptLen - 1 + t; // the hidden state before target t predicts it
                    tgt[k] = x.targets[t];
                }
                start += x.seq.length;
            }
            return new Packed(seqs, rows, tgt);
        }
    }
}
