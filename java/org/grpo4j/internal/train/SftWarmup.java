package org.grpo4j.internal.train;

import org.grpo4j.train.GrpoConfig;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.function.BooleanSupplier;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.Tensor;
import org.grpo4j.internal.model.LlamaModel;
import org.grpo4j.internal.model.PackedBatch;
import org.grpo4j.ChatMessage;

/**
 * The supervised warm-up (docs/trainer.md): next-token NLL of the rows' reference answers, AdamW with its own learning
 * rate, no weight decay and fresh moments. Every rank draws the same batch; rank r runs picks r, r + world, ... in
 * micro-batches within the memory plan's activations for a GRPO micro-batch ({@link PassPacking#trainingCap}), each
 * token weighted -1 / (tokens of the whole batch), and the ranks' gradients are summed once per step.
 */
final class SftWarmup {
    private SftWarmup() {}

    /** Reports the loss of each warm-up step (on the leader). */
    interface Progress {
        void step(int step, int steps, double loss);
    }

    /** Runs the warm-up on one rank; false when cancelled before its end (every rank stops at the same step). */
    /**
     * @param longestPrompt the data set's longest prompt (the memory plan's): a micro-batch holds as many sequences as
     *                      keep its estimated activations within the plan's for per_device_train_batch_size sequences of
     *                      longestPrompt + response_length tokens ({@link PassPacking#byMemory})
     */
    static boolean run(RankState r, BooleanSupplier cancelled, Progress progress, long[] microBatches, int longestPrompt) {
        r.beginUpdate(); // the gradients and the optimizer's phase buffers, for the warm-up only (a failure leaves them to close())
        boolean done = warmUp(r, cancelled, progress, microBatches, longestPrompt);
        r.endUpdate();
        return done;
    }

    private static boolean warmUp(RankState r, BooleanSupplier cancelled, Progress progress, long[] microBatches, int longestPrompt) {
        GrpoConfig cfg = r.s.cfg();
        int eos = r.s.eos();
        List<int[]> seqs = new ArrayList<>();
        List<Integer> promptLens = new ArrayList<>();
        for (int i = 0; i < r.s.train().size(); i++) {
            List<ChatMessage> ms = r.s.train().row(i).messages();
            ChatMessage last = ms.get(ms.size() - 1);
            if (ms.size() < 2 || !last.role().equals("assistant")) continue;
            int[] p = r.s.train().prompt(i), a = r.s.tok().encode(last.content());
            seqs.add(Trainer.concat(p, Trainer.concat(a, new int[] {eos})));
            promptLens.add(p.length);
        }
        if (seqs.isEmpty()) throw new IllegalArgumentException("sft_warmup: no training row ends with an assistant turn to imitate");
        int steps = cfg.sftWarmup.steps, bsz = cfg.sftWarmup.batchSize;
        org.grpo4j.internal.model.MemoryEstimate est = r.estimate();
        long lmRows = Preflight.lmRowsBytes(cfg, r.s.dtype());
        double cap = PassPacking.trainingCap(cfg, est, lmRows, longestPrompt);
        PassPacking.Bytes bytes = (t, l) -> est.trainingActivationBytes(t, l, cfg.gradientCheckpointing, lmRows);
        ShardedAdamW opt = r.optimizer;
        opt.reset(0.0);
        SplittableRandom rnd = new SplittableRandom(Trainer.mix(cfg.seed, 0, 3));
        long t0 = System.nanoTime(), lastLog = t0;
        for (int st = 1; st <= steps; st++) {
            if (agreed(r, cancelled.getAsBoolean())) return false;
            r.comm.setContext("sft warm-up step " + st);
            int[] pick = new int[bsz];
            long nTok = 0;
            for (int i = 0; i < bsz; i++) {
                pick[i] = rnd.nextInt(seqs.size());
                nTok += seqs.get(pick[i]).length - promptLens.get(pick[i]);
            }
            opt.startStep();
            // this rank's rows (every world-th of the batch) in micro-batches within the planned activations
            List<Integer> mine = new ArrayList<>();
            for (int i = r.rank; i < bsz; i += r.world) mine.add(pick[i]);
            List<List<Integer>> micro = PassPacking.byMemory(mine, q -> seqs.get(q).length, q -> seqs.get(q).length - promptLens.get(q), bytes, cap);
            // ZeRO-2 reduces every micro-batch: every rank takes part in as many reductions as the rank with the most
            // (a rank with fewer reduces zeros)
            double[] lossSum = {0};
            long batchTokens = nTok;
            PassPacking.runPasses(r, micro, true, mb -> {
                List<int[]> b = new ArrayList<>();
                List<Integer> pl = new ArrayList<>();
                for (int q : mb) {
                    b.add(seqs.get(q));
                    pl.add(promptLens.get(q));
                }
                lossSum[0] += microStep(r, b, pl, batchTokens);
                microBatches[0]++;
            });
            double loss = lossSum[0];
            double total = loss;
            if (r.world > 1) {
                total = 0;
                for (double[] x : r.comm.allGatherDoubles(new double[] {loss})) total += x[0];
            }
            if (r.s.gradientHook() != null && r.world == 1) r.s.gradientHook().accept(r.grads); // as UpdatePhase: before the norm
            ShardedAdamW.Norm norm = opt.gradNorm(Double.isFinite(total));
            if (norm.finite()) opt.step(norm.norm(), cfg.maxGradNorm, cfg.sftWarmup.learningRate);
            if (progress != null) progress.step(st, steps, total);
            long now = System.nanoTime();
            if (r.log() != null && (st % 25 == 0 || st == steps || now - lastLog > 10_000_000_000L)) { // and at least every 10 s
                r.log().printf(java.util.Locale.ROOT, "sft warm-up %d/%d | nll %.4f | %.1f s%n", st, steps, total, (now - t0) / 1e9);
                lastLog = now;
            }
        }
        opt.reset(cfg.weightDecay);
        return true;
    }

    /** Whether any rank asks to stop (every rank gets the same answer). */
    static boolean agreed(RankState r, boolean mine) {
        if (r.world == 1) return mine;
        for (double[] x : r.comm.allGatherDoubles(new double[] {mine ? 1 : 0})) if (x[0] != 0) return true;
        return false;
    }

    /** Accumulates the gradient of sum(-logp) / totalTokens over the assistant tokens (incl. EOS); returns that part of the mean NLL. */
    private static double microStep(RankState r, List<int[]> seqs, List<Integer> promptLens, long totalTokens) {
        Backend be = r.be;
        int nTok = 0;
        for (int i = 0; i < seqs.size(); i++) nTok += seqs.get(i).length - promptLens.get(i);
        int[] rows = new int[nTok], tgt = new int[nTok];
        float[] g = new float[nTok];
        int k = 0, start = 0;
        for (int i = 0; i < seqs.size(); i++) {
            int[] s = seqs.get(i);
            for (int t = promptLens.get(i); t < s.length; t++, k++) {
                rows[k] = start + t - 1;
                tgt[k] = s[t];
                g[k] = -1f / totalTokens;
            }
            start += s.length;
        }
        int d = r.s.model().hiddenSize();
        DType adt = r.model.activationDType();
        LlamaModel model = r.model;
        try (PackedBatch pb = PackedBatch.of(be, seqs, r.s.model().vocabSize()); LlamaModel.Activations act = model.forward(pb, r.s.cfg().gradientCheckpointing);
             Tensor rowsT = be.upload(rows, nTok); Tensor tgtT = be.upload(tgt, nTok); Tensor gT = be.upload(g, nTok);
             Tensor sel = be.empty(adt, nTok, d); Tensor lp = be.empty(DType.FP32, nTok); Tensor dSel = be.empty(adt, nTok, d);
             Tensor dHidden = be.zeros(DType.FP32, pb.tokens(), d)) {
            be.embedding(sel, act.hidden(), rowsT);
            be.tokenLogprobs(lp, sel, r.compute.get("lm_head.weight"), tgtT, 1f);
            r.lmHeadLoss(() -> be.tokenLogprobsBackward(dSel, r.lmHeadGrad(), gT, sel, r.compute.get("lm_head.weight"), tgtT, 1f));
            r.roundLmHeadGrad();
            be.embeddingBackward(dHidden, dSel, rowsT);
            model.backward(act, dHidden, r.grads, r.optimizer::gradientsReady, r.table32);
            double s = 0;
            for (float x : lp.toFloats()) s -= x;
            return s / totalTokens;
        }
    }
}
