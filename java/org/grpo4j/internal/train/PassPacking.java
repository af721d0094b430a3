package org.grpo4j.internal.train;

import java.util.ArrayList;
import java.util.List;
import java.util.function.ToIntFunction;
import org.grpo4j.internal.model.MemoryEstimate;
import org.grpo4j.train.GrpoConfig;

/**
 * How rollouts become passes through the model (the trainer's {@code pass_packing}): a fixed count a pass
 * ({@code batch_size}: per_device_train_batch_size for training, local_rollout_forward_batch_size for the no-grad
 * log-prob passes), or ({@code tokens}) as many consecutive rollouts as keep a pass's estimated activations within
 * what the memory plan sized such a batch of the longest sequences for. Rollouts shorter than the plan's longest
 * (responses that stop at EOS, shorter prompts) then share passes: fewer, larger passes, more samples of a prompt in
 * one pass, and at world > 1 fewer ZeRO-2 reductions. A rollout alone always makes a pass.
 */
final class PassPacking {
    private PassPacking() {}

    /** A pass's estimated activation bytes from its tokens and its loss tokens (non-decreasing in both). */
    interface Bytes {
        double of(long tokens, long lossTokens);
    }

    /** Whether {@code pass_packing} is tokens. */
    static boolean byTokens(GrpoConfig cfg) { return cfg.passPacking.equals("tokens"); }

    /**
     * The passes of {@code order} (consecutive runs, in order): {@code count} a pass, or with {@code byTokens} as many as
     * keep {@code bytes} within its value for {@code count} rollouts of {@code longestPrompt} + response_length tokens,
     * response_length of them loss tokens.
     */
    static List<List<Rollout>> passes(List<Rollout> order, int count, boolean byTokens, Bytes bytes, int longestPrompt, int responseLength) {
        if (!byTokens) {
            List<List<Rollout>> out = new ArrayList<>();
            for (int i = 0; i < order.size(); i += count) out.add(order.subList(i, Math.min(order.size(), i + count)));
            return out;
        }
        return byMemory(order, o -> o.seq.length, o -> o.targets.length, bytes,
                bytes.of((long) count * ((long) longestPrompt + responseLength), (long) count * responseLength));
    }

    /**
     * Consecutive runs of {@code order}, each as long as keeps {@code bytes} of its summed tokens and loss tokens within
     * {@code cap} (an item alone always makes a run).
     */
    static <T> List<List<T>> byMemory(List<T> order, ToIntFunction<T> tokens, ToIntFunction<T> lossTokens, Bytes bytes, double cap) {
        List<List<T>> out = new ArrayList<>();
        long t = 0, l = 0;
        int from = 0;
        for (int i = 0; i < order.size(); i++) {
            T o = order.get(i);
            int ot = tokens.applyAsInt(o), ol = lossTokens.applyAsInt(o);
            if (i > from && bytes.of(t + ot, l + ol) > cap) {
                out.add(order.subList(from, i));
                from = i;
                t = 0;
                l = 0;
            }
            t += ot;
            l += ol;
        }
        if (from < order.size()) out.add(order.subList(from, order.size()));
        return out;
    }

    /**
     * The cap of a training pass: the estimated activations of per_device_train_batch_size sequences of
     * {@code longestPrompt} + response_length tokens, response_length of them trained on (what the memory plan sized).
     */
    static double trainingCap(GrpoConfig cfg, MemoryEstimate est, long lmRowsBytes, int longestPrompt) {
        long count = cfg.perDeviceTrainBatchSize;
        return est.trainingActivationBytes(count * ((long) longestPrompt + cfg.responseLength), count * cfg.responseLength,
                cfg.gradientCheckpointing, lmRowsBytes);
    }

    /**
     * Runs {@code passes} as ZeRO-2 micro-batches (the gradient buffer zeroed before each, its buckets reduced after
     * each at world > 1). With {@code agree}, every rank takes part in as many rounds as the rank with the most passes
     * (a collective), reducing zeros in the rounds past its own, so that every rank makes the same reductions in the
     * same order; without, every rank must have the same count. Returns the rounds run without a pass of their own.
     */
    static <P> int runPasses(RankState r, List<P> passes, boolean agree, java.util.function.Consumer<P> pass) {
        int rounds = agree ? (int) UpdatePhase.globalMax(r, passes.size()) : passes.size();
        for (int k = 0; k < rounds; k++) {
            r.optimizer.startMicroBatch();
            if (k < passes.size()) pass.accept(passes.get(k));
            r.optimizer.endMicroBatch();
        }
        return rounds - passes.size();
    }

    /** The training passes of a mini-batch's rollouts in run order (MemoryEstimate#trainingActivationBytes). */
    static List<List<Rollout>> training(GrpoConfig cfg, MemoryEstimate est, long lmRowsBytes, List<Rollout> order, int longestPrompt) {
        return passes(order, cfg.perDeviceTrainBatchSize, byTokens(cfg),
                (t, l) -> est.trainingActivationBytes(t, l, cfg.gradientCheckpointing, lmRowsBytes), longestPrompt, cfg.responseLength);
    }

    /** The chunks of a no-grad log-prob pass over rollouts in order (MemoryEstimate#noGradActivationBytes). */
    static List<List<Rollout>> logprobs(GrpoConfig cfg, MemoryEstimate est, List<Rollout> order, int longestPrompt) {
        return passes(order, cfg.localRolloutForwardBatchSize, byTokens(cfg), est::noGradActivationBytes, longestPrompt, cfg.responseLength);
    }
}
