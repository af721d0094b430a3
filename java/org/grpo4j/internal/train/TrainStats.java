package org.grpo4j.internal.train;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * The training statistics of one step, one record per micro-batch of every PPO epoch, and the metrics made from them
 * in both modes of {@code metrics_compat} (docs/trainer.md, "Metrics").
 *
 * <p>Correct values (default): means over all micro-batches of all epochs of the per-micro-batch, token-masked
 * means; {@code val/ratio_var} is the unbiased (N - 1) variance of the micro-batch ratio means, as torch.var.
 *
 * <p>open-instruct 3f37c29 ({@code metrics_compat}): the reference writes each micro-batch's value into
 * {@code stats[epoch, mini_batch, accumulation_step]} of a zero-initialised tensor of shape
 * (num_epochs, num_mini_batches x number_samples_per_prompt, GAS) = (E, nspp, GAS), because num_mini_batches stays at
 * its default of 1 (G:939-956, 1270-1282), and logs the mean (and torch.var, unbiased) of the whole tensor. Only
 * M = rollouts / local_mini_batch_size of its nspp rows are written, so the means are the correct ones times
 * M / nspp (1/8 for the Tulu command: 2 of 16 rows). Its ratio and approxkl are also means over every position of the
 * padded (micro-batch, response_length) tensor, padding (ratio 1, difference 0) included, and non_score_reward is the
 * mean over the micro-batch's sequences of the summed -beta x kl of the training forward (G:1256-1282).
 */
final class TrainStats {

    /**
     * One micro-batch: its indices, sequence and loss-token counts, its token-masked mean losses, and the sums over
     * its loss tokens of ratio, clipped indicator, 0.5 (logp - old)^2 and the selected KL estimator.
     */
    record Micro(int epoch, int mini, int accumulation, int seqs, long lossTokens, double loss, double pgLoss,
                 double ratioSum, double clipSum, double halfSqDiffSum, double klSum) {}

    private final List<Micro> micros = new ArrayList<>();

    void add(Micro m) { micros.add(m); }

    int size() { return micros.size(); }

    /**
     * Puts val/ratio, val/ratio_var, loss/policy_avg, loss/pg_avg, policy/approxkl_avg and policy/clipfrac_avg, and
     * with compat also objective/non_score_reward (returned, for rlhf_reward; NaN without compat).
     *
     * @param responseLength the reference's padded response length (compat only)
     * @param nspp number_samples_per_prompt: the rows of the reference's stats tensor (compat only)
     * @param gas gradient accumulation steps (compat only)
     */
    double put(Map<String, Double> m, boolean compat, int numEpochs, int nspp, int gas, int responseLength, double beta) {
        int n = micros.size();
        double[] ratio = new double[n], loss = new double[n], pg = new double[n], akl = new double[n], clip = new double[n], nonScore = new double[n];
        for (int i = 0; i < n; i++) {
            Micro mc = micros.get(i);
            double tok = Math.max(1, mc.lossTokens()), all = (double) mc.seqs() * responseLength;
            loss[i] = mc.loss();
            pg[i] = mc.pgLoss();
            clip[i] = mc.clipSum() / tok;
            if (compat) {
                ratio[i] = (mc.ratioSum() + (all - mc.lossTokens())) / all; // padding ratios are exp(1 - 1) = 1
                akl[i] = mc.halfSqDiffSum() / all;                          // padding differences are 0
                nonScore[i] = -beta * mc.klSum() / mc.seqs();
            } else {
                ratio[i] = mc.ratioSum() / tok;
                akl[i] = mc.halfSqDiffSum() / tok;
            }
        }
        if (!compat) {
            m.put("val/ratio", mean(ratio, n));
            m.put("val/ratio_var", unbiasedVar(ratio, n));
            m.put("loss/policy_avg", mean(loss, n));
            m.put("loss/pg_avg", mean(pg, n));
            m.put("policy/approxkl_avg", mean(akl, n));
            m.put("policy/clipfrac_avg", mean(clip, n));
            return Double.NaN;
        }
        long cells = (long) numEpochs * nspp * gas;
        for (Micro mc : micros)
            if (mc.epoch() >= numEpochs || mc.mini() >= nspp || mc.accumulation() >= gas)
                throw new IllegalStateException("micro-batch (" + mc.epoch() + ", " + mc.mini() + ", " + mc.accumulation() + ") outside the reference's stats tensor ("
                        + numEpochs + ", " + nspp + ", " + gas + ")");
        m.put("val/ratio", mean(ratio, cells));
        m.put("val/ratio_var", unbiasedVar(ratio, cells));
        m.put("loss/policy_avg", mean(loss, cells)); // the key is written twice in the reference; the total loss is the one kept
        m.put("loss/pg_avg", mean(pg, n));          // grpo4j's own key: not diluted
        m.put("policy/approxkl_avg", mean(akl, cells));
        m.put("policy/clipfrac_avg", mean(clip, cells));
        double ns = mean(nonScore, cells);
        m.put("objective/non_score_reward", ns);
        return ns;
    }

    /** Each micro-batch's token-masked mean ratio (the values val/ratio_var is the variance of, without compat). */
    double[] ratioMeans() {
        double[] out = new double[micros.size()];
        for (int i = 0; i < out.length; i++) out[i] = micros.get(i).ratioSum() / Math.max(1, micros.get(i).lossTokens());
        return out;
    }

    /** Mean of the written values over {@code cells} cells, the unwritten ones being 0. */
    static double mean(double[] written, long cells) {
        if (cells == 0) return Double.NaN;
        double s = 0;
        for (double x : written) s += x;
        return s / cells;
    }

    /** Unbiased variance over {@code cells} cells, the unwritten ones being 0 (torch.var; NaN for fewer than 2). */
    static double unbiasedVar(double[] written, long cells) {
        if (cells < 2) return Double.NaN;
        double mu = mean(written, cells), ss = (cells - written.length) * mu * mu;
        for (double x : written) ss += (x - mu) * (x - mu);
        return ss / (cells - 1);
    }
}
