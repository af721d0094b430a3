package org.grpo4j.internal.train;

import org.grpo4j.train.GrpoConfig;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.grpo4j.internal.backend.KlEstimator;
import org.grpo4j.internal.rollout.Generator;

/**
 * The metrics of one step (docs/trainer.md, "Metrics"): each rank computes them over its own rollouts and micro-batches,
 * then they are reduced across ranks, so that every rank ends with the same map.
 *
 * <p>Reduction: the reference's MetricsTracker all-reduces the mean over ranks, which for grpo4j's per-rollout and
 * per-micro-batch means is the mean over the whole step (every rank has as many rollouts and micro-batches). Without
 * {@code metrics_compat} the rest is exact too: minima and maxima over all rollouts, counts summed,
 * {@code val/ratio_var} the unbiased variance over every rank's micro-batches, times the slowest rank's, throughputs
 * summed, pool utilization and decode steps the highest. With {@code metrics_compat} the reference's keys are the plain mean over
 * ranks of the per-rank values, as MetricsTracker computes them (val/sequence_lengths_min is then a mean of minima);
 * grpo4j's own keys reduce as without it.
 */
final class StepMetrics {
    private StepMetrics() {}

    /** Keys grpo4j adds to the reference's (reduced the same way in both modes). */
    private static boolean added(String k) {
        return k.startsWith("time/") || k.startsWith("throughput/") || k.startsWith("optim/") || k.startsWith("rewards/") || k.startsWith("rollout/")
                || k.startsWith("training/") || k.equals("val/response_length") || k.equals("objective/scores_over_10") || k.equals("loss/pg_avg");
    }

    private static final Set<String> SAME_ON_EVERY_RANK = Set.of("training_step", "episode", "epoch", "lr", "optim/grad_norm", "optim/skipped_steps");

    /** Local metrics of this rank for step {@code s}. */
    static Map<String, Double> local(RankState r, int s, List<Rollout> rs, Generator.Stats gs, UpdatePhase.Result up, ScoringPhase.Result sc,
                                     LogprobPhase.Result lpr, long t0, long tGen, long tReward, long tTrain0, long tEnd) {
        GrpoConfig cfg = r.s.cfg();
        Map<String, Double> m = new LinkedHashMap<>();
        int k = rs.size(), L = cfg.responseLength;
        boolean compat = r.s.metricsCompat();
        double[] reward = new double[k];
        double scores = 0, correct = 0, stops = 0, lenSum = 0, lenMin = Double.MAX_VALUE, lenMax = 0, respLen = 0, stopIds = 0, format = 0;
        double[] klSum = new double[4];
        double entropy = 0, nonScore = 0;
        KlEstimator sel = KlEstimator.parse(cfg.klEstimator);
        for (int i = 0; i < k; i++) {
            Rollout o = rs.get(i);
            reward[i] = o.reward;
            scores += o.reward;
            correct += o.correct ? 1 : 0;
            stops += o.hasStop ? 1 : 0;
            lenSum += o.seqLen;
            lenMin = Math.min(lenMin, o.seqLen);
            lenMax = Math.max(lenMax, o.seqLen);
            respLen += o.targets.length;
            format += o.formatScore;
            // one per stopped response: the EOS or the other stop id that ended it; the reference counts its stop token
            // (the EOS) in the responses padded with it to response_length (G:1297)
            for (int t : o.generated) if (compat ? t == r.s.eos() : r.s.stopIds().contains(t)) stopIds++;
            if (compat) stopIds += L - o.generated.length;
            double[] seqKl = sequenceKl(o.old, o.ref, o.targets.length);
            for (int t = 0; t < o.targets.length; t++) entropy -= o.old[t];
            // the reference's padded slots hold log-prob 1.0, so its "entropy" subtracts one per padding slot (G:1302)
            if (compat) entropy -= L - o.targets.length;
            double[] kls = compat ? o.trainKl : seqKl;
            for (int e = 0; e < 4; e++) klSum[e] += kls[e];
            nonScore += -cfg.beta * seqKl[sel.ordinal()];
        }
        Map<String, Double> st = new LinkedHashMap<>();
        double compatNonScore = up.stats().put(st, compat, cfg.numEpochs, cfg.numberSamplesPerPrompt, cfg.gradientAccumulationSteps(), L, cfg.beta);
        double ns = compat ? compatNonScore : nonScore / k;
        long opt = r.optimizerSteps;
        m.put("training_step", (double) s);
        m.put("episode", (double) cfg.completionsPerStep() * s);
        // the reference divides episodes (completions) by the dataset's rows (G:1324)
        m.put("epoch", compat ? (double) cfg.completionsPerStep() * s / r.s.train().size() : (double) s * cfg.rolloutBatchSize() / r.s.train().size());
        // the rate of this step's last optimizer update; the reference logs get_last_lr() after it, i.e. the next update's rate (G:1323)
        m.put("lr", r.s.schedule().at(compat ? opt : Math.max(0, opt - 1)));
        m.put("objective/scores", scores / k);
        m.put("objective/scores_mean", scores / k);
        m.put("objective/scores_over_10", scores / k / cfg.verificationReward);
        m.put("objective/reward_std", Advantages.meanGroupStd(reward, cfg.numberSamplesPerPrompt));
        m.put("objective/verifiable_correct_rate", correct / k);
        m.put("objective/kl", klSum[0] / k);
        m.put("objective/kl2", klSum[1] / k);
        m.put("objective/kl3", klSum[2] / k);
        m.put("objective/kl4", klSum[3] / k);
        m.put("objective/entropy", entropy / k);
        m.put("objective/non_score_reward", ns);
        m.put("objective/rlhf_reward", scores / k + ns);
        m.put("val/sequence_lengths", lenSum / k);
        m.put("val/sequence_lengths_min", lenMin);
        m.put("val/sequence_lengths_max", lenMax);
        m.put("val/response_length", respLen / k);
        m.put("val/num_stop_token_ids", stopIds);
        m.put("val/stop_token_rate", stops / k);
        if (cfg.addR1StyleFormatReward) m.put("val/format_scores", format / k);
        for (String key : List.of("val/ratio", "val/ratio_var", "loss/policy_avg", "loss/pg_avg", "policy/approxkl_avg", "policy/clipfrac_avg"))
            m.put(key, st.get(key));
        if (compat) m.put("policy/entropy_avg", 0.0); // never filled in the reference (G:1313)
        m.put("optim/grad_norm", up.optimizerSteps() > 0 ? up.gradNormSum() / up.optimizerSteps() : Double.NaN);
        m.put("optim/skipped_steps", (double) up.skipped());
        m.put("rewards/errors", (double) sc.errors());
        m.put("rewards/timeouts", (double) sc.timeouts());
        m.put("time/generation", (tGen - t0) / 1e9);
        m.put("time/reward", (tReward - tGen) / 1e9);
        m.put("time/logprobs", (tTrain0 - tReward) / 1e9);
        m.put("time/training", (tEnd - tTrain0) / 1e9);
        m.put("time/step", (tEnd - t0) / 1e9);
        m.put("throughput/generation_tokens_per_s", gs.tokensPerSecond());
        m.put("throughput/training_tokens_per_s", up.tokensTrained() / Math.max(1e-9, (tEnd - tTrain0) / 1e9));
        m.put("rollout/kv_pool_peak_utilization", gs.peakUtilization());
        m.put("rollout/decode_steps", (double) gs.decodeSteps());
        m.put("rollout/preemptions", (double) gs.preemptions());
        m.put("rollout/old_logprob_passes", (double) lpr.oldPasses());
        m.put("rollout/logprob_token_rows", (double) lpr.rows());
        m.put("training/token_rows", (double) up.rowsRun());
        m.put("training/passes", (double) up.passes());
        m.put("training/rollouts_moved", (double) up.rolloutsMoved());
        m.put("rollout/logprob_rollouts_moved", (double) lpr.rolloutsMoved());
        // the most tokens a rank's training passes ran over the ranks' mean (reduce() makes the ratio of each rank's tokens)
        m.put("training/rank_tokens_max_over_mean", r.world == 1 ? 1.0 : (double) up.tokensTrained());
        return m;
    }

    /**
     * One response's KL to the reference as the metrics count it, by estimator (kl1..kl4 in KlEstimator order): the sum
     * over its first n tokens of the estimator at d = clamp(old - ref, -40, 40), with ratio 1 (the rollout's own
     * log-probs: old is the policy that sampled it).
     */
    static double[] sequenceKl(float[] old, float[] ref, int n) {
        double[] kl = new double[4];
        for (int t = 0; t < n; t++) {
            double d = KlEstimator.clamp(old[t] - ref[t]); // (the difference in fp32, as the reference takes it)
            for (KlEstimator e : KlEstimator.values()) kl[e.ordinal()] += e.value(d, 1.0);
        }
        return kl;
    }

    /** The step's metrics over every rank (a collective; see the class comment). */
    static Map<String, Double> reduce(RankState r, Map<String, Double> local, TrainStats stats) {
        if (r.world == 1) return local;
        List<String> keys = new ArrayList<>(local.keySet());
        double[] ratios = stats.ratioMeans();
        double[] mine = new double[keys.size() + ratios.length];
        for (int i = 0; i < keys.size(); i++) mine[i] = local.get(keys.get(i)) == null ? Double.NaN : local.get(keys.get(i));
        System.arraycopy(ratios, 0, mine, keys.size(), ratios.length);
        double[][] all = r.comm.allGatherDoubles(mine);
        boolean compat = r.s.metricsCompat();
        Map<String, Double> out = new LinkedHashMap<>();
        for (int i = 0; i < keys.size(); i++) {
            String k = keys.get(i);
            double v;
            if (SAME_ON_EVERY_RANK.contains(k)) v = all[0][i];
            else if (compat && !added(k)) v = mean(all, i);
            else if (k.equals("val/sequence_lengths_min")) v = fold(all, i, Math::min);
            else if (k.equals("val/sequence_lengths_max") || k.startsWith("time/") || k.equals("rollout/kv_pool_peak_utilization")
                    || k.equals("rollout/decode_steps")) v = fold(all, i, Math::max);
            else if (k.equals("val/num_stop_token_ids") || k.startsWith("rewards/") || k.startsWith("throughput/")
                    || k.equals("rollout/old_logprob_passes") || k.equals("rollout/logprob_token_rows") || k.equals("rollout/preemptions")
                    || k.equals("training/token_rows") || k.equals("training/passes") || k.equals("training/rollouts_moved")
                    || k.equals("rollout/logprob_rollouts_moved"))
                v = fold(all, i, Double::sum);
            else if (k.equals("training/rank_tokens_max_over_mean")) v = fold(all, i, Math::max) / mean(all, i);
            else if (k.equals("val/ratio_var")) v = unbiasedVariance(all, keys.size());
            else v = mean(all, i);
            out.put(k, v);
        }
        return out;
    }

    private static double mean(double[][] all, int i) {
        double s = 0;
        for (double[] x : all) s += x[i];
        return s / all.length;
    }

    private static double fold(double[][] all, int i, java.util.function.DoubleBinaryOperator f) {
        double v = all[0][i];
        for (int r = 1; r < all.length; r++) v = f.applyAsDouble(v, all[r][i]);
        return v;
    }

    /** torch.var (N - 1) of every rank's micro-batch ratio means, which follow the keys in each rank's row. */
    private static double unbiasedVariance(double[][] all, int from) {
        int n = 0;
        double s = 0;
        for (double[] x : all) for (int j = from; j < x.length; j++, n++) s += x[j];
        if (n < 2) return Double.NaN;
        double mu = s / n, ss = 0;
        for (double[] x : all) for (int j = from; j < x.length; j++) ss += (x[j] - mu) * (x[j] - mu);
        return ss / (n - 1);
    }
}
