package org.grpo4j.internal.train;

import org.grpo4j.train.GrpoConfig;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.GrpoLossOutputs;
import org.grpo4j.internal.backend.GrpoLossParams;
import org.grpo4j.internal.backend.KlEstimator;
import org.grpo4j.internal.backend.Tensor;
import org.grpo4j.internal.model.LlamaModel;
import org.grpo4j.internal.model.MemoryEstimate;
import org.grpo4j.internal.model.PackedBatch;
import org.grpo4j.internal.model.PrefixPacking;

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
    record Result(TrainStats stats, double gradNormSum, int optimizerSteps, int skipped, long tokensTrained, long rowsRun, int passes,
                  long rolloutsMoved) {}

    /** The guard's verdict: too many non-finite steps in a row (every rank throws it together). */
    static final class Abort extends RuntimeException {
        final int step, inARow;

        Abort(int step, int inARow) {
            super("aborted at step " + step, null, false, false);
            this.step = step;
            this.inARow = inARow;
        }
    }

    /**
     * @param longestPrompt the dataset's longest prompt (the memory plan's): with pass_packing tokens, a pass's
     *                      activations stay within those of per_device_train_batch_size x (longestPrompt +
     *                      response_length) tokens ({@link PassPacking})
     */
    static Result run(RankState r, int s, List<Rollout> rs, int longestPrompt) {
        r.beginUpdate(); // the gradients and the optimizer's phase buffers, for this phase only (a failure leaves them to close())
        Result res = update(r, s, rs, longestPrompt);
        r.endUpdate();
        return res;
    }

    private static Result update(RankState r, int s, List<Rollout> rs, int longestPrompt) {
        GrpoConfig cfg = r.s.cfg();
        GrpoLossParams lp = new GrpoLossParams((float) cfg.temperature, (float) cfg.cliprange, (float) cfg.epsHigh(), (float) cfg.beta, KlEstimator.parse(cfg.klEstimator));
        int mini = cfg.localMiniBatchSize, micro = cfg.perDeviceTrainBatchSize;
        TrainStats stats = new TrainStats();
        double gradNormSum = 0;
        int optSteps = 0, skipped = 0;
        long[] trained = {0, 0}; // tokens (prompts included), rows run through the layers
        int passes = 0;
        long moved = 0;
        ShardedAdamW opt = r.optimizer;
        MemoryEstimate est = r.estimate();
        long lmRows = Preflight.lmRowsBytes(cfg, r.s.dtype());
        for (int e = 0; e < cfg.numEpochs; e++) {
            int[] perm = Trainer.permutation(rs.size(), Trainer.mix(cfg.seed, s, 100 + e));
            for (int mb = 0; mb < cfg.numMiniBatches(); mb++) {
                r.comm.setContext("step " + s + ", update (epoch " + e + ", mini-batch " + mb + ")");
                List<Rollout> miniRs = new ArrayList<>();
                for (int q = mb * mini; q < (mb + 1) * mini; q++) miniRs.add(rs.get(perm[q]));
                long miniTokens = 0;
                for (Rollout o : miniRs) miniTokens += o.targets.length;
                LossAggregation agg = LossAggregation.parse(cfg.lossAggregation);
                long globalTokens = agg == LossAggregation.TOKEN_MEAN ? globalSum(r, miniTokens) : miniTokens;
                // each token's weight from its micro-batch (the reference's: consecutive slices of the permutation)
                Map<Rollout, Double> weight = new IdentityHashMap<>();
                for (int mc = 0; mc < mini; mc += micro) {
                    int microTokens = 0;
                    for (Rollout o : miniRs.subList(mc, mc + micro)) microTokens += o.targets.length;
                    for (Rollout o : miniRs.subList(mc, mc + micro))
                        weight.put(o, agg.weight(o.targets.length, microTokens, cfg.gradientAccumulationSteps(), globalTokens, mini,
                                cfg.responseLength, r.world));
                }
                // the passes (pass_packing) take the rollouts in run order, with train_prefix_sharing a prompt's next to each
                // other (the weights above keep the reference's loss: a gradient is a sum over tokens, whatever the grouping)
                List<Rollout> runOrder = cfg.trainPrefixSharing ? byPrompt(miniRs) : miniRs;
                Map<Rollout, TokenOut> outs = new IdentityHashMap<>();
                boolean onPolicy = e == 0 && mb == 0 && cfg.oldLogprobs.equals("auto");
                // rank_balancing: pieces of prompt groups to the ranks with the fewest tokens (their weights with them)
                List<List<Rollout>> units = null;
                RankBalance.Exchange ex = null;
                if (RankBalance.on(cfg, r.world)) {
                    units = RankBalance.units(runOrder, cfg.numberSamplesPerPrompt);
                    ex = RankBalance.forTraining(r, units, weight, onPolicy);
                    if (ex != null) {
                        runOrder = ex.run();
                        moved += ex.moved();
                    }
                }
                List<List<Rollout>> plan = PassPacking.training(cfg, est, lmRows, runOrder, longestPrompt);
                // ZeRO-2 reduces after every pass: every rank takes part in as many as the rank with the most (a rank with
                // fewer reduces zeros), as the supervised warm-up does
                opt.startStep();
                long tokensBefore = trained[0];
                r.paddingRounds += PassPacking.runPasses(r, plan, PassPacking.byTokens(cfg), pass -> {
                    long[] run = microStep(r, pass, weight, lp, onPolicy, cfg.trainPrefixSharing, outs);
                    trained[0] += run[0];
                    trained[1] += run[1];
                });
                r.trainingPasses += plan.size();
                r.tokensRun += trained[0] - tokensBefore;
                passes += plan.size();
                if (ex != null) { // the guests' token outputs back to their ranks, for their micro-batches' metrics
                    Map<Rollout, float[][]> back = new IdentityHashMap<>();
                    for (Rollout g : ex.guests()) {
                        TokenOut t = outs.remove(g);
                        back.put(g, new float[][] {t.logp(), t.ratio(), t.clipped(), t.kl()});
                    }
                    RankBalance.giveBack(r, ex, units, back, (o, a) -> {
                        TokenOut t = new TokenOut(a[0], a[1], a[2], a[3]);
                        outs.put(o, t);
                        if (onPolicy) o.old = t.logp().clone(); // its old log-probs are its training forward's own
                    });
                }
                boolean finite = true;
                for (int mc = 0; mc < mini; mc += micro) {
                    List<Rollout> microRs = miniRs.subList(mc, mc + micro);
                    MicroStats st = microStats(cfg, microRs, outs, e == 0);
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
        return new Result(stats, gradNormSum, optSteps, skipped, trained[0], trained[1], passes, moved);
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
     * The rollouts in prompt order: each prompt's rollouts together, the prompts in the order of their first rollout,
     * each prompt's rollouts in their order (a stable grouping by prompt tokens).
     */
    static List<Rollout> byPrompt(List<Rollout> rs) {
        List<Rollout> out = new ArrayList<>(rs.size());
        for (List<Rollout> g : promptGroups(rs)) out.addAll(g);
        return out;
    }

    /** The rollouts grouped by prompt tokens, as {@link #byPrompt} orders them. */
    static java.util.Collection<List<Rollout>> promptGroups(List<Rollout> rs) {
        Map<java.nio.IntBuffer, List<Rollout>> groups = new LinkedHashMap<>();
        for (Rollout o : rs) groups.computeIfAbsent(java.nio.IntBuffer.wrap(o.seq, 0, o.promptLen), k -> new ArrayList<>()).add(o);
        return groups.values();
    }

    /** A rollout's per-token outputs of its training forward: log-prob, ratio, clipped indicator, KL estimate. */
    record TokenOut(float[] logp, float[] ratio, float[] clipped, float[] kl) {}

    /**
     * A micro-batch's token-masked mean losses and, over its loss tokens, the sums of the ratio, the clipped indicator,
     * 0.5 (logp - old)^2 and the selected KL estimator.
     */
    record MicroStats(double loss, double pgLoss, long lossTokens, double ratioSum, double clipSum, double halfSqDiffSum, double klSum) {}

    /**
     * The statistics of one of the reference's micro-batches from its rollouts' token outputs, and in the first epoch
     * each rollout's per-sequence KL sums (the reference's objective/kl..kl4 at new - ref).
     */
    static MicroStats microStats(GrpoConfig cfg, List<Rollout> rs, Map<Rollout, TokenOut> outs, boolean firstEpoch) {
        double rSum = 0, cSum = 0, akl = 0, pg = 0, total = 0, klSum = 0;
        long nTok = 0;
        for (Rollout o : rs) {
            TokenOut t = outs.get(o);
            for (int i = 0; i < o.targets.length; i++) {
                rSum += t.ratio[i];
                cSum += t.clipped[i];
                double dl = t.logp[i] - o.old[i];
                akl += 0.5 * dl * dl;
                double ratioI = t.ratio[i], a = (float) o.advantage; // the advantage as the loss saw it (fp32)
                double pgI = Math.max(-a * ratioI, -a * Math.min(Math.max(ratioI, 1 - cfg.cliprange), 1 + cfg.epsHigh()));
                pg += pgI;
                total += pgI + cfg.beta * t.kl[i];
                klSum += t.kl[i];
            }
            nTok += o.targets.length;
            if (firstEpoch) { // G:1256-1260
                java.util.Arrays.fill(o.trainKl, 0);
                for (int i = 0; i < o.targets.length; i++) {
                    double dd = KlEstimator.clamp((double) t.logp[i] - o.ref[i]);
                    for (KlEstimator est : KlEstimator.values()) o.trainKl[est.ordinal()] += est.value(dd, t.ratio[i]);
                }
            }
        }
        // micro-batch means (token-masked, no padding): the reference's loss/policy_avg is the total loss pg + beta*kl
        return new MicroStats(total / nTok, pg / nTok, nTok, rSum, cSum, akl, klSum);
    }

    /**
     * Forward, fused loss and backward of one pass over some rollouts, each token weighted by its rollout's
     * {@code weight}; each rollout's token outputs go to {@code outs} (and, on-policy, its old log-probs are its own).
     * With {@code share}, rollouts of one prompt next to each other run the prompt's tokens once through the layers
     * ({@link LlamaModel#forward(PrefixPacking, boolean)}). The LM head's inputs (the gathered hidden rows) and their
     * gradient are in the activation dtype, as the grpoLoss contract has them; the loss, log-probs, ratios and KL are
     * fp32; dHidden is gathered into an fp32 buffer (embeddingBackward accumulates in fp32) and rounded once by the
     * model's backward; the weight gradients accumulate in the fp32 buffer inside the GEMMs. Returns {packed tokens
     * (prompts included), rows run through the layers}.
     */
    static long[] microStep(RankState r, List<Rollout> rs, Map<Rollout, Double> weight, GrpoLossParams lp, boolean onPolicy,
                            boolean share, Map<Rollout, TokenOut> outs) {
        GrpoConfig cfg = r.s.cfg();
        Backend be = r.be;
        LogprobPhase.Packed pk = LogprobPhase.Packed.of(rs);
        int[] tgt = pk.targets();
        int nTok = tgt.length;
        float[] w = new float[nTok], adv = new float[nTok], old = new float[nTok], ref = new float[nTok];
        int k = 0;
        for (Rollout o : rs) {
            float wt = (float) (double) weight.get(o);
            for (int t = 0; t < o.targets.length; t++, k++) {
                w[k] = wt;
                adv[k] = (float) o.advantage;
                if (!onPolicy) old[k] = o.old[t];
                ref[k] = o.ref[t];
            }
        }
        int[] shared = share ? LogprobPhase.sharedPrompts(rs) : null;
        int d = r.s.model().hiddenSize(), vocab = r.s.model().vocabSize();
        DType adt = r.model.activationDType();
        LlamaModel model = r.model;
        try (PackedBatch pb = shared == null ? PackedBatch.of(be, pk.seqs(), vocab) : null;
             PrefixPacking pp = shared == null ? null : PrefixPacking.of(be, pk.seqs(), shared, vocab);
             LlamaModel.Activations act = pp == null ? model.forward(pb, r.recompute()) : model.forward(pp, r.recompute())) {
            int[] rows = pp == null ? pk.rows() : pp.compactRows(pk.rows(), "rows");
            int n = act.hidden().dim(0);
            try (Tensor rowsT = be.upload(rows, nTok); Tensor tgtT = be.upload(tgt, nTok); Tensor wT = be.upload(w, nTok);
                 Tensor advT = be.upload(adv, nTok); Tensor oldT = onPolicy ? null : be.upload(old, nTok); Tensor refT = be.upload(ref, nTok);
                 Tensor sel = be.empty(adt, nTok, d); Tensor loss = be.empty(DType.FP32, 1); Tensor logp = be.empty(DType.FP32, nTok);
                 Tensor ratio = be.empty(DType.FP32, nTok); Tensor clipped = be.empty(DType.FP32, nTok); Tensor kl = be.empty(DType.FP32, nTok);
                 Tensor dSel = be.empty(adt, nTok, d); Tensor dHidden = be.zeros(DType.FP32, n, d)) {
                be.embedding(sel, act.hidden(), rowsT);
                r.lmHeadLoss(() -> be.grpoLoss(new GrpoLossOutputs(loss, logp, ratio, clipped, kl, dSel, r.lmHeadGrad()),
                        sel, r.compute.get("lm_head.weight"), tgtT, wT, advT, oldT, refT, lp));
                r.roundLmHeadGrad();
                be.embeddingBackward(dHidden, dSel, rowsT);
                model.backward(act, dHidden, r.grads, r.optimizer::gradientsReady, r.table32);
                float[] lpv = logp.toFloats(), rv = ratio.toFloats(), cv = clipped.toFloats(), kv = kl.toFloats();
                int q = 0;
                for (Rollout o : rs) {
                    int to = q + o.targets.length;
                    TokenOut t = new TokenOut(Arrays.copyOfRange(lpv, q, to), Arrays.copyOfRange(rv, q, to), Arrays.copyOfRange(cv, q, to),
                            Arrays.copyOfRange(kv, q, to));
                    outs.put(o, t);
                    if (onPolicy) o.old = t.logp.clone(); // the old log-probs are this forward's own (the step's metrics read them)
                    q = to;
                }
                return new long[] {pk.seqs().stream().mapToLong(x -> x.length).sum(), n};
            }
        }
    }
}
