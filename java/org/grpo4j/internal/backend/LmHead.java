package org.grpo4j.internal.backend;

/**
 * CPU LM-head log-probabilities and their backward, never holding the [N, V] logits: tokens are processed in
 * blocks and the vocabulary in chunks with an online log-sum-exp (max and scaled sum updated chunk by chunk).
 *
 * <p>z[n, v] = hidden[n] . lmHead[v] / (temperature + 1e-7); logp[n] = z[n, target] - logsumexp_v z[n, v].
 * Backward for upstream g[n]: dz[n, v] = g[n] (1[v = target] - exp(z - lse)); dHidden[n] = sum_v dz W[v] / T';
 * dW[v] += sum_n dz h[n] / T'. dHidden is computed per token block, dW per vocabulary chunk, so each output element
 * is written by one thread in a fixed order (deterministic).
 */
final class LmHead {
    static final int TOKEN_BLOCK = 8, VOCAB_CHUNK = 256;

    final int n, d, vocab;
    final double invT;
    final float[] H, W;
    final int oh, ow;
    final int[] tgt;
    final int ot;
    final double[] lse, logp;
    private final Parallel par;

    LmHead(CpuBackend be, Tensor hidden, Tensor lmHead, Tensor targets, float temperature, String op) {
        this.par = be.parallel();
        this.n = hidden.dim(0);
        this.d = hidden.dim(1);
        this.vocab = lmHead.dim(0);
        this.invT = 1.0 / (temperature + 1e-7);
        this.H = CpuBackend.f(hidden);
        this.W = CpuBackend.f(lmHead);
        this.oh = CpuBackend.off(hidden);
        this.ow = CpuBackend.off(lmHead);
        this.tgt = CpuBackend.checkedIds(op, "targets", targets, vocab);
        this.ot = CpuBackend.off(targets);
        this.lse = new double[n];
        this.logp = new double[n];
    }

    /** h[t] . W[v] / T' with fp32 products summed in four fp32 lanes (then combined in double). */
    private double logit(int t, int v) {
        return RowKernels.dot4(H, oh + t * d, W, ow + v * d, d) * invT;
    }

    /** Fills lse and logp. */
    void forward() {
        par.forRange(n, TOKEN_BLOCK, (s, e) -> {
            int nb = e - s;
            double[] mx = new double[nb], sum = new double[nb];
            java.util.Arrays.fill(mx, Double.NEGATIVE_INFINITY);
            double[] z = new double[VOCAB_CHUNK * nb];
            for (int v0 = 0; v0 < vocab; v0 += VOCAB_CHUNK) {
                int v1 = Math.min(vocab, v0 + VOCAB_CHUNK);
                for (int v = v0; v < v1; v++) for (int t = s; t < e; t++) z[(v - v0) * nb + (t - s)] = logit(t, v);
                for (int t = s; t < e; t++) {
                    int c = t - s;
                    double cm = mx[c];
                    for (int v = v0; v < v1; v++) cm = Math.max(cm, z[(v - v0) * nb + c]);
                    double acc = sum[c] * Math.exp(mx[c] - cm);
                    if (mx[c] == Double.NEGATIVE_INFINITY) acc = 0;
                    for (int v = v0; v < v1; v++) acc += Math.exp(z[(v - v0) * nb + c] - cm);
                    mx[c] = cm;
                    sum[c] = acc;
                }
            }
            for (int t = s; t < e; t++) {
                lse[t] = mx[t - s] + Math.log(sum[t - s]);
                logp[t] = logit(t, tgt[ot + t]) - lse[t];
            }
        });
    }

    /** Needs {@link #forward()} first. dHidden overwritten, dLmHead accumulated. */
    void backward(double[] g, Tensor dHidden, Tensor dLmHead) {
        float[] DH = CpuBackend.f(dHidden), DW = CpuBackend.f(dLmHead);
        int odh = CpuBackend.off(dHidden), odw = CpuBackend.off(dLmHead);
        par.forRange(n, TOKEN_BLOCK, (s, e) -> {
            double[] acc = new double[d];
            for (int t = s; t < e; t++) {
                java.util.Arrays.fill(acc, 0);
                if (g[t] != 0) {
                    int target = tgt[ot + t];
                    for (int v = 0; v < vocab; v++) {
                        double dz = g[t] * ((v == target ? 1 : 0) - Math.exp(logit(t, v) - lse[t])) * invT;
                        int wb = ow + v * d;
                        RowKernels.axpyDouble(acc, dz, W, wb, d);
                    }
                }
                for (int x = 0; x < d; x++) DH[odh + t * d + x] = (float) acc[x];
            }
        });
        par.forRange(vocab, 16, (s, e) -> {
            double[] acc = new double[d];
            for (int v = s; v < e; v++) {
                java.util.Arrays.fill(acc, 0);
                boolean any = false;
                for (int t = 0; t < n; t++) {
                    if (g[t] == 0) continue;
                    double dz = g[t] * ((v == tgt[ot + t] ? 1 : 0) - Math.exp(logit(t, v) - lse[t])) * invT;
                    int hb = oh + t * d;
                    RowKernels.axpyDouble(acc, dz, H, hb, d);
                    any = true;
                }
                if (any) for (int x = 0; x < d; x++) DW[odw + v * d + x] += (float) acc[x];
            }
        });
    }
}
