package org.grpo4j.internal.train;

import org.grpo4j.train.GrpoConfig;
import java.util.ArrayList;
import java.util.List;
import org.grpo4j.internal.model.LlamaModel;

/**
 * Phase 3 of a step: the old (current policy) and reference log-probs of the loss tokens, in no-grad passes over
 * chunks of rollouts ({@link PassPacking}), logits divided by (temperature + 1e-7). With rank_balancing, each pass
 * first moves pieces of prompt groups among the ranks ({@link RankBalance}) and returns their log-probs. The models run in the
 * precision's dtype; the log-probs are fp32. With old_logprobs auto, the rollouts that the first mini-batch of the
 * first epoch trains get no old pass: their old log-probs are their training forward's own (UpdatePhase), taken with
 * the same weights; their {@code old} stays null until then.
 */
final class LogprobPhase {
    private LogprobPhase() {}

    /**
     * How many rollouts had the no-grad old pass, and the token rows both passes ran through the layers (with
     * logprob_prefix_sharing, each prompt once per run of its samples in a chunk).
     */
    record Result(int oldPasses, long rows, long rolloutsMoved) {}

    /**
     * @param longestPrompt the data set's longest prompt (the memory plan's): with pass_packing tokens, a chunk's
     *                      activations stay within those of local_rollout_forward_batch_size such sequences
     *                      ({@link PassPacking})
     */
    static Result run(RankState r, int step, List<Rollout> rs, int longestPrompt) {
        GrpoConfig cfg = r.s.cfg();
        float temp = (float) cfg.temperature;
        boolean[] onPolicy = UpdatePhase.onPolicy(r, step, rs.size());
        List<Rollout> needOld = new ArrayList<>();
        for (int i = 0; i < rs.size(); i++) {
            rs.get(i).old = null;
            if (!onPolicy[i]) needOld.add(rs.get(i));
        }
        long[] moved = {0};
        long rows = pass(r, r.refModel, rs, temp, longestPrompt, (x, lp) -> x.ref = lp, moved);
        // the old pass in chunks of its own rollouts (with recompute, every rollout: the same chunks as the reference pass)
        rows += pass(r, r.model, needOld, temp, longestPrompt, (x, lp) -> x.old = lp, moved);
        return new Result(needOld.size(), rows, moved[0]);
    }

    /**
     * One model's log-probs of the rollouts' loss tokens, in chunks ({@link PassPacking#logprobs}: of
     * local_rollout_forward_batch_size, or filled up to its planned memory), each rollout's to {@code into}; returns the
     * token rows run through the layers.
     */
    private static long pass(RankState r, LlamaModel m, List<Rollout> rs, float temp, int longestPrompt,
                             java.util.function.BiConsumer<Rollout, float[]> into, long[] moved) {
        // rank_balancing: pieces of prompt groups to the ranks with the fewest tokens, their log-probs sent back
        List<Rollout> order = rs;
        List<List<Rollout>> units = null;
        RankBalance.Exchange ex = null;
        java.util.Set<Rollout> guests = java.util.Collections.newSetFromMap(new java.util.IdentityHashMap<>());
        java.util.Map<Rollout, float[][]> back = new java.util.IdentityHashMap<>(); // the guests' log-probs, for giveBack
        if (RankBalance.on(r.s.cfg(), r.world)) {
            units = RankBalance.units(rs, r.s.cfg().numberSamplesPerPrompt);
            ex = RankBalance.forLogprobs(r, units);
            if (ex != null) {
                order = ex.run();
                moved[0] += ex.moved();
                guests.addAll(ex.guests());
            }
        }
        long rows = 0;
        List<List<Rollout>> chunks = PassPacking.logprobs(r.s.cfg(), r.estimate(), order, longestPrompt);
        ShardedReference shards = m == r.refModel ? r.refShards : null;
        int rounds = chunks.size();
        if (shards != null) // the layers' all-gathers: every rank takes part in as many passes as the rank with the most
            for (double[] other : r.comm.allGatherDoubles(new double[] {chunks.size()})) rounds = Math.max(rounds, (int) other[0]);
        for (List<Rollout> chunk : chunks) {
            long[] run = new long[1];
            float[] lp = logprobs(r, m, chunk, temp, run);
            if (shards != null) shards.endPass();
            rows += run[0];
            int k = 0;
            for (Rollout x : chunk) {
                float[] mine = java.util.Arrays.copyOfRange(lp, k, k + x.targets.length);
                if (guests.contains(x)) back.put(x, new float[][] {mine});
                else into.accept(x, mine);
                k += x.targets.length;
            }
        }
        for (int i = chunks.size(); i < rounds; i++) {
            shards.idlePass();
            r.referenceIdlePasses++;
        }
        if (ex != null) RankBalance.giveBack(r, ex, units, back, (x, a) -> into.accept(x, a[0]));
        return rows;
    }

    /**
     * Log-probs of every rollout's loss tokens under a model, concatenated in order; rowsRun[0] = the token rows run
     * through the layers. With logprob_prefix_sharing, the rollouts of one prompt that sit next to each other share its
     * tokens' pass through the layers.
     */
    static float[] logprobs(RankState r, LlamaModel m, List<Rollout> rs, float temp, long[] rowsRun) {
        Packed pk = Packed.of(rs);
        int[] shared = r.s.cfg().logprobPrefixSharing ? sharedPrompts(rs) : null;
        return m.tokenLogprobs(pk.seqs(), shared, pk.rows(), pk.targets(), temp, rowsRun);
    }

    /**
     * Per rollout, its prompt length when it continues a run of rollouts with the same prompt tokens (0 when it starts
     * one), or null when no rollout continues a run (nothing to share).
     */
    static int[] sharedPrompts(List<Rollout> rs) {
        int[] shared = new int[rs.size()];
        boolean any = false;
        Rollout lead = null;
        for (int i = 0; i < rs.size(); i++) {
            Rollout x = rs.get(i);
            if (lead != null && x.promptLen == lead.promptLen && x.promptLen > 0
                    && java.util.Arrays.equals(x.seq, 0, x.promptLen, lead.seq, 0, lead.promptLen)) {
                shared[i] = x.promptLen;
                any = true;
            } else {
                lead = x;
            }
        }
        return any ? shared : null;
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
