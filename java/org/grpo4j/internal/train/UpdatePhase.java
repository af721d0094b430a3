package org.grpo4j.internal.train;

import org.grpo4j.train.GrpoConfig;
import java.util.ArrayList;
import java.util.List;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.GrpoLossOutputs;
import org.grpo4j.internal.backend.GrpoLossParams;
import org.grpo4j.internal.backend.KlEstimator;
import org.grpo4j.internal.backend.Tensor;
import org.grpo4j.internal.model.LlamaModel;
import org.grpo4j.internal.model.PackedBatch;

/**
 * Phase 4 of a step: num_epochs PPO epochs over the rank's rollouts, each a permutation (a function of seed, step and
 * epoch) into local_mini_batch_size mini-batches of per_device_train_batch_size micro-batches; the fused GRPO loss
 * with per-token weights from loss_aggregation (with 1/world folded in: the ranks' gradients are summed); one
 * optimizer step of {@link ShardedAdamW} per mini-batch (every rank takes it together). A non-finite loss on any rank
 * or a non-finite global gradient norm skips the step on every rank.
 */
final class UpdatePhase {
    private UpdatePhase() {}

    /** What the phase did: the training statistics and the optimizer steps. */
    record Result(TrainStats stats, double gradNormSum, int optimizerSteps, int skipped, long tokensTrained) {}

    /** The guard's verdict: too many non-finite steps in a row (every rank throws it together). */
    static final class Abort extends RuntimeException {
        final int step, inARow;

        Abort(int step, int inARow) {
            super("aborted at step " + step, null, false, false);
            this.step = step;
            this.inARow = inARow;
        }
    }

    static Result run(RankState r, int s, List<Rollout> rs) {
        GrpoConfig cfg = r.s.cfg();
        GrpoLossParams lp = new GrpoLossParams((float) cfg.temperature, (float) cfg.cliprange, (float) cfg.epsHigh(), (float) cfg.beta, KlEstimator.parse(cfg.klEstimator));
        int mini = cfg.localMiniBatchSize, micro = cfg.perDeviceTrainBatchSize;
        TrainStats stats = new TrainStats();
        double gradNormSum = 0;
        int optSteps = 0, skipped = 0;
        long tokensTrained = 0;
        ShardedAdamW opt = r.optimizer;
        for (int e = 0; e < cfg.numEpochs; e++) {
            int[] perm = Trainer.permutation(rs.size(), Trainer.mix(cfg.seed, s, 100 + e));
            for (int mb = 0; mb < cfg.numMiniBatches(); mb++) {
                r.comm.setContext("step " + s + ", update (epoch " + e + ", mini-batch " + mb + ")");
                List<Rollout> miniRs = new ArrayList<>();
                for (int q = mb * mini; q < (mb + 1) * mini; q++) miniRs.add(rs.get(perm[q]));
                long miniTokens = 0;
                for (Rollout o : miniRs) miniTokens += o.targets.length;
                long globalTokens = LossAggregation.parse(cfg.lossAggregation) == LossAggregation.TOKEN_MEAN ? globalSum(r, miniTokens) : miniTokens;
                opt.startStep();
                boolean finite = true;
                for (int mc = 0; mc < mini; mc += micro) {
                    List<Rollout> microRs = miniRs.subList(mc, mc + micro);
                    opt.startMicroBatch();
                    MicroStats st = microStep(r, microRs, lp, globalTokens, miniRs.size(), e == 0, e == 0 && mb == 0 && cfg.oldLogprobs.equals("auto"));
                    opt.endMicroBatch();
                    tokensTrained += st.tokens;
                    finite &= Double.isFinite(st.loss);
                    stats.add(new TrainStats.Micro(e, mb, mc / micro, microRs.size(), st.lossTokens, st.loss, st.pgLoss,
                            st.ratioSum, st.clipSum, st.halfSqDiffSum, st.klSum));
                }
                if (r.s.gradientHook() != null && r.world == 1) r.s.gradientHook().accept(r.grads);
                ShardedAdamW.Norm norm = opt.gradNorm(finite);
                if (!norm.finite()) {
                    skipped++;
                    r.skippedSteps++;
                    r.consecutiveNonfinite++;
                    if (r.log() != null) r.log().printf("grpo4j: step %d: non-finite %s; optimizer step skipped (%d in a row)%n", s,
                            norm.lossesFinite() ? "gradient norm" : "loss", r.consecutiveNonfinite);
                    if (r.consecutiveNonfinite >= cfg.maxConsecutiveNonfinite) throw new Abort(s, r.consecutiveNonfinite);
                } else {
                    r.consecutiveNonfinite = 0;
                    opt.step(norm.norm(), cfg.maxGradNorm, r.s.schedule().at(r.optimizerSteps));
                    r.optimizerSteps++;
                    optSteps++;
                    gradNormSum += norm.norm();
                }
            }
        }
        return new Result(stats, gradNormSum, optSteps, skipped, tokensTrained);
    }

    /**
     * Which rollouts (by index in the rank's list) train on-policy: with old_logprobs auto, those of the first
     * mini-batch of the first epoch (the same permutation {@link #run} draws), whose weights are still the ones the
     * rollouts were scored with; none with recompute.
     */
    static boolean[] onPolicy(RankState r, int step, int rollouts) {
        GrpoConfig cfg = r.s.cfg();
        boolean[] on = new boolean[rollouts];
        if (!cfg.oldLogprobs.equals("auto") || cfg.numEpochs < 1) return on;
        int[] perm = Trainer.permutation(rollouts, Trainer.mix(cfg.seed, step, 100));
        for (int q = 0; q < Math.min(cfg.localMiniBatchSize, rollouts); q++) on[perm[q]] = true;
        return on;
    }

    /** The largest of the ranks' counts. */
    static long globalMax(RankState r, long local) {
        if (r.world == 1) return local;
        long m = local;
        for (double[] x : r.comm.allGatherDoubles(new double[] {local})) m = Math.max(m, (long) x[0]);
        return m;
    }

    /** The sum over ranks of a count (exact: counts are far below 2^53). */
    static long globalSum(RankState r, long local) {
        if (r.world == 1) return local;
        long t = 0;
        for (double[] x : r.comm.allGatherDoubles(new double[] {local})) t += (long) x[0];
        return t;
    }

    /**
     * A micro-batch's token-masked mean losses and, over its loss tokens, the sums of the ratio, the clipped indicator,
     * 0.5 (logp - old)^2 and the selected KL estimator; tokens = packed tokens run (prompts included).
     */
    record MicroStats(double loss, double pgLoss, long lossTokens, double ratioSum, double clipSum, double halfSqDiffSum, double klSum, long tokens) {}

    /**
     * Forward, fused loss and backward of one micro-batch. The LM head's inputs (the gathered hidden rows) and their
     * gradient are in the activation dtype, as the grpoLoss contract has them; the loss, log-probs, ratios and KL are
     * fp32; dHidden is gathered into an fp32 buffer (embeddingBackward accumulates in fp32) and rounded once by the
     * model's backward; the weight gradients accumulate in the fp32 buffer inside the GEMMs.
     */
    static MicroStats microStep(RankState r, List<Rollout> rs, GrpoLossParams lp, long miniTokens, int miniSeqs, boolean firstEpoch,
                                boolean onPolicy) {
        GrpoConfig cfg = r.s.cfg();
        Backend be = r.be;
        LogprobPhase.Packed pk = LogprobPhase.Packed.of(rs);
        int[] rows = pk.rows(), tgt = pk.targets();
        int nTok = rows.length;
        float[] w = new float[nTok], adv = new float[nTok], old = new float[nTok], ref = new float[nTok];
        LossAggregation agg = LossAggregation.parse(cfg.lossAggregation);
        int k = 0;
        for (Rollout o : rs) {
            double wt = agg.weight(o.targets.length, nTok, cfg.gradientAccumulationSteps(), miniTokens, miniSeqs, cfg.responseLength, r.world);
            for (int t = 0; t < o.targets.length; t++, k++) {
                w[k] = (float) wt;
                adv[k] = (float) o.advantage;
                if (!onPolicy) old[k] = o.old[t];
                ref[k] = o.ref[t];
            }
        }
        int d = r.s.model().hiddenSize();
        DType adt = r.model.activationDType();
        LlamaModel model = r.model;
        try (PackedBatch pb = PackedBatch.of(be, pk.seqs(), r.s.model().vocabSize());
             LlamaModel.Activations act = model.forward(pb, cfg.gradientCheckpointing);
             Tensor rowsT = be.upload(rows, nTok); Tensor tgtT = be.upload(tgt, nTok); Tensor wT = be.upload(w, nTok);
             Tensor advT = be.upload(adv, nTok); Tensor oldT = onPolicy ? null : be.upload(old, nTok); Tensor refT = be.upload(ref, nTok);
             Tensor sel = be.empty(adt, nTok, d); Tensor loss = be.empty(DType.FP32, 1); Tensor logp = be.empty(DType.FP32, nTok);
             Tensor ratio = be.empty(DType.FP32, nTok); Tensor clipped = be.empty(DType.FP32, nTok); Tensor kl = be.empty(DType.FP32, nTok);
             Tensor dSel = be.empty(adt, nTok, d); Tensor dHidden = be.zeros(DType.FP32, pb.tokens(), d)) {
            be.embedding(sel, act.hidden(), rowsT);
            r.lmHeadLoss(() -> be.grpoLoss(new GrpoLossOutputs(loss, logp, ratio, clipped, kl, dSel, r.lmHeadGrad()),
                    sel, r.compute.get("lm_head.weight"), tgtT, wT, advT, oldT, refT, lp));
            r.roundLmHeadGrad();
            be.embeddingBackward(dHidden, dSel, rowsT);
            model.backward(act, dHidden, r.grads, r.optimizer::gradientsReady, r.table32);
            float[] lpv = logp.toFloats(), rv = ratio.toFloats(), cv = clipped.toFloats(), kv = kl.toFloats();
            if (onPolicy) { // the old log-probs are this forward's own (the step's metrics read them)
                System.arraycopy(lpv, 0, old, 0, nTok);
                int q = 0;
                for (Rollout o : rs) {
                    o.old = java.util.Arrays.copyOfRange(lpv, q, q + o.targets.length);
                    q += o.targets.length;
                }
            }
            double rSum = 0, cSum = 0, akl = 0, pg = 0, total = 0, klSum = 0;
            for (int i = 0; i < nTok; i++) {
                rSum += rv[i];
                cSum += cv[i];
                double dl = lpv[i] - old[i];
                akl += 0.5 * dl * dl;
                double ratioI = rv[i], a = adv[i];
                double pgI = Math.max(-a * ratioI, -a * Math.min(Math.max(ratioI, 1 - cfg.cliprange), 1 + cfg.epsHigh()));
                pg += pgI;
                total += pgI + cfg.beta * kv[i];
                klSum += kv[i];
            }
            if (firstEpoch) { // the reference's objective/kl..kl4: per-sequence sums at (new - ref) of the first epoch (G:1256-1260)
                int q = 0;
                for (Rollout o : rs) {
                    java.util.Arrays.fill(o.trainKl, 0);
                    for (int t = 0; t < o.targets.length; t++, q++) {
                        double dd = Math.max(-40, Math.min(40, (double) lpv[q] - ref[q]));
                        for (KlEstimator est : KlEstimator.values()) o.trainKl[est.ordinal()] += est.value(dd, rv[q]);
                    }
                }
            }
            // micro-batch means (token-masked, no padding): the reference's loss/policy_avg is the total loss pg + beta*kl
            return new MicroStats(total / nTok, pg / nTok, nTok, rSum, cSum, akl, klSum, pb.tokens());
        }
    }
}
