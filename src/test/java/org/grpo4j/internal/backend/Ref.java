package org.grpo4j.internal.backend;

/** Float64 reference implementations of the ops, written directly from their definitions (for the tests). */
public final class Ref {
    private Ref() {}

    /** C = alpha op(A) op(B) + beta C for one batch; A is [m,k] ([k,m] if tA), B is [k,n] ([n,k] if tB). */
    public static double[] matmul(double[] a, boolean tA, double[] b, boolean tB, double[] c, int m, int n, int k, double alpha, double beta) {
        double[] out = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                double s = 0;
                for (int p = 0; p < k; p++) s += (tA ? a[p * m + i] : a[i * k + p]) * (tB ? b[j * k + p] : b[p * n + j]);
                out[i * n + j] = alpha * s + (beta == 0 ? 0 : beta * c[i * n + j]);
            }
        return out;
    }

    /** Returns out (n*d) followed by rstd (n). */
    public static double[] rmsNorm(double[] x, double[] w, int n, int d, double eps) {
        double[] out = new double[n * d + n];
        for (int t = 0; t < n; t++) {
            double ss = 0;
            for (int j = 0; j < d; j++) ss += x[t * d + j] * x[t * d + j];
            double r = 1 / Math.sqrt(ss / d + eps);
            out[n * d + t] = r;
            for (int j = 0; j < d; j++) out[t * d + j] = x[t * d + j] * r * w[j];
        }
        return out;
    }

    /** HF rotate_half rotation with angle = position * invFreq[i] (in float64). */
    public static double[] rope(double[] x, int[] pos, float[] invFreq, int n, int h, int d, boolean inverse) {
        double[] out = new double[x.length];
        int half = d / 2;
        for (int t = 0; t < n; t++)
            for (int hh = 0; hh < h; hh++)
                for (int i = 0; i < half; i++) {
                    double ang = pos[t] * (double) invFreq[i];
                    double c = Math.cos(ang), s = inverse ? -Math.sin(ang) : Math.sin(ang);
                    int b = (t * h + hh) * d;
                    double x1 = x[b + i], x2 = x[b + i + half];
                    out[b + i] = x1 * c - x2 * s;
                    out[b + i + half] = x2 * c + x1 * s;
                }
        return out;
    }

    /** Llama 3.1 inverse frequencies from the HF formula, in float64 throughout. */
    public static double[] llama3InvFreq(int d, double theta, double factor, double low, double high, int old) {
        double[] inv = new double[d / 2];
        for (int i = 0; i < d / 2; i++) {
            double f = Math.pow(theta, -(2.0 * i) / d);
            double wl = 2 * Math.PI / f;
            if (wl < old / high) inv[i] = f;
            else if (wl > old / low) inv[i] = f / factor;
            else {
                double sm = (old / wl - low) / (high - low);
                inv[i] = (1 - sm) * f / factor + sm * f;
            }
        }
        return inv;
    }

    /** Causal GQA attention over packed sequences: out (n*hq*d) followed by lse (n*hq). */
    public static double[] attention(double[] q, double[] k, double[] v, int[] cu, int n, int hq, int hkv, int d, double scale) {
        double[] out = new double[n * hq * d + n * hq];
        int group = hq / hkv;
        for (int b = 0; b + 1 < cu.length; b++)
            for (int t = cu[b]; t < cu[b + 1]; t++)
                for (int h = 0; h < hq; h++) {
                    int g = h / group;
                    double[] s = new double[t - cu[b] + 1];
                    double mx = Double.NEGATIVE_INFINITY;
                    for (int j = cu[b]; j <= t; j++) {
                        double dot = 0;
                        for (int x = 0; x < d; x++) dot += q[(t * hq + h) * d + x] * k[(j * hkv + g) * d + x];
                        s[j - cu[b]] = dot * scale;
                        mx = Math.max(mx, s[j - cu[b]]);
                    }
                    double sum = 0;
                    for (double si : s) sum += Math.exp(si - mx);
                    for (int j = cu[b]; j <= t; j++) {
                        double p = Math.exp(s[j - cu[b]] - mx) / sum;
                        for (int x = 0; x < d; x++) out[(t * hq + h) * d + x] += p * v[(j * hkv + g) * d + x];
                    }
                    out[n * hq * d + t * hq + h] = mx + Math.log(sum);
                }
        return out;
    }

    /**
     * Gradients of {@link #attention} for upstream dOut, analytically in float64, reading the forward output the
     * way a FlashAttention backward does: P = softmax(scale q k^T) over the causal window, D_i = dOut_i . out_i,
     * dS = P (dOut v^T - D), dq = scale dS k, dk = scale dS^T q, dv = P^T dOut. With the exact out this is the true
     * gradient; with a bf16-rounded out it is what a backward given that out computes. Returns dq (n*hq*d), dk and dv
     * (n*hkv*d each), concatenated.
     */
    public static double[] attentionBackward(double[] q, double[] k, double[] v, double[] out, double[] dOut, int[] cu,
                                             int n, int hq, int hkv, int d, double scale) {
        return attentionBackward(q, k, v, out, dOut, cu, n, hq, hkv, d, scale, false);
    }

    /**
     * {@link #attentionBackward}, or with {@code magnitudes} the same sums over the absolute values of every term
     * (|dS|, |k|, |q|, |dOut|): the scale of the rounding error of each gradient element (AttentionBounds).
     */
    static double[] attentionBackward(double[] q, double[] k, double[] v, double[] out, double[] dOut, int[] cu,
                                      int n, int hq, int hkv, int d, double scale, boolean magnitudes) {
        int oK = n * hq * d, oV = oK + n * hkv * d, group = hq / hkv;
        double[] g = new double[oV + n * hkv * d];
        for (int b = 0; b + 1 < cu.length; b++)
            for (int t = cu[b]; t < cu[b + 1]; t++)
                for (int h = 0; h < hq; h++) {
                    int kh = h / group, qb = (t * hq + h) * d, len = t - cu[b] + 1;
                    double[] p = new double[len];
                    double mx = Double.NEGATIVE_INFINITY, sum = 0, dd = 0;
                    for (int j = 0; j < len; j++) {
                        int kb = ((cu[b] + j) * hkv + kh) * d;
                        double dot = 0;
                        for (int x = 0; x < d; x++) dot += q[qb + x] * k[kb + x];
                        p[j] = dot * scale;
                        mx = Math.max(mx, p[j]);
                    }
                    for (int j = 0; j < len; j++) sum += p[j] = Math.exp(p[j] - mx);
                    for (int x = 0; x < d; x++) dd += dOut[qb + x] * out[qb + x];
                    for (int j = 0; j < len; j++) {
                        int kb = ((cu[b] + j) * hkv + kh) * d;
                        double pj = p[j] / sum, dp = 0;
                        for (int x = 0; x < d; x++) dp += dOut[qb + x] * v[kb + x];
                        double ds = pj * (dp - dd) * scale;
                        if (magnitudes) ds = Math.abs(ds);
                        for (int x = 0; x < d; x++) {
                            g[qb + x] += ds * (magnitudes ? Math.abs(k[kb + x]) : k[kb + x]);
                            g[oK + kb + x] += ds * (magnitudes ? Math.abs(q[qb + x]) : q[qb + x]);
                            g[oV + kb + x] += pj * (magnitudes ? Math.abs(dOut[qb + x]) : dOut[qb + x]);
                        }
                    }
                }
        return g;
    }

    public static double silu(double x) { return x / (1 + Math.exp(-x)); }

    /** log softmax(h W^T / (T + 1e-7))[target] per token. */
    public static double[] tokenLogprobs(double[] h, double[] w, int[] tgt, int n, int d, int vocab, double temperature) {
        double[] out = new double[n];
        double tt = temperature + 1e-7;
        for (int t = 0; t < n; t++) {
            double[] z = new double[vocab];
            double mx = Double.NEGATIVE_INFINITY;
            for (int v = 0; v < vocab; v++) {
                double s = 0;
                for (int x = 0; x < d; x++) s += h[t * d + x] * w[v * d + x];
                z[v] = s / tt;
                mx = Math.max(mx, z[v]);
            }
            double sum = 0;
            for (double zv : z) sum += Math.exp(zv - mx);
            out[t] = z[tgt[t]] - mx - Math.log(sum);
        }
        return out;
    }

    /**
     * The reference trainer's per-token GRPO objective (grpo-reference.md section 4.2), float64:
     * returns {loss, then per token: ratio, clipped, kl} laid out as [1 + 3n].
     */
    public static double[] grpo(double[] logp, double[] old, double[] ref, double[] adv, double[] w, double epsLow, double epsHigh,
                                double beta, KlEstimator est) {
        int n = logp.length;
        double[] out = new double[1 + 3 * n];
        for (int t = 0; t < n; t++) {
            double ratio = Math.exp(logp[t] - old[t]);
            double pgLoss = -adv[t] * ratio;
            double pgLoss2 = -adv[t] * Math.max(1 - epsLow, Math.min(1 + epsHigh, ratio));
            double pgMax = Math.max(pgLoss, pgLoss2);
            double d = Math.max(-40, Math.min(40, logp[t] - ref[t]));
            double kl = switch (est) {
                case KL1 -> d;
                case KL2 -> d * d / 2;
                case KL3 -> Math.expm1(-d) + d;
                case KL4 -> ratio * d;
            };
            out[0] += w[t] * (pgMax + beta * kl);
            out[1 + t] = ratio;
            out[1 + n + t] = pgLoss2 > pgLoss ? 1 : 0;
            out[1 + 2 * n + t] = kl;
        }
        return out;
    }
}
