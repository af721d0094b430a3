package org.grpo4j.internal.backend;

/**
 * The extra error of the CUDA tensor-core attention kernels over the fp32 tolerance, per element, in float64.
 *
 * <p>FlashAttention-2 rounds the probabilities P (forward, and dV += P^T dO in the backward) and dS (dK += dS^T Q,
 * dQ += dS K) to bf16 before those tensor-core products, which accumulate in fp32. Rounding to nearest moves each by at
 * most 2^-8 of its own magnitude, so the product sum moves by at most 2^-8 times the sum of the magnitudes of its
 * terms:
 * <ul>
 * <li>out_ix: 2^-8 sum_j P_ij |v_jx| (l, the softmax denominator, sums the unrounded fp32 P), i.e. 2^-8 times the
 * attention of |v|;</li>
 * <li>dv_jx: 2^-8 sum_i P_ij |dO_ix|; dk_jx: 2^-8 scale sum_i |dS_ij| |q_ix|; dq_ix: 2^-8 scale sum_j |dS_ij| |k_jx|.</li>
 * </ul>
 * The rounded values are the kernel's fp32 P and dS, themselves within the fp32 tolerance of the exact ones; the 1%
 * margin covers 2^-8 times that difference. Everything else the kernels compute (QK^T, dO V^T, D_i, the online
 * softmax) is fp32 and stays within the op's fp32 tolerance.
 */
final class AttentionBounds {
    private AttentionBounds() {}

    /** bf16's unit roundoff. */
    static final double U = 0x1p-8;
    static final double MARGIN = 1.01;

    static double[] abs(double[] a) {
        double[] r = new double[a.length];
        for (int i = 0; i < a.length; i++) r[i] = Math.abs(a[i]);
        return r;
    }

    /** Slack of out [n, hq, d]: 2^-8 * 1.01 * attention(q, k, |v|). */
    static double[] forward(double[] q, double[] k, double[] v, int[] cu, int n, int hq, int hkv, int d, double scale) {
        double[] r = Ref.attention(q, k, abs(v), cu, n, hq, hkv, d, scale);
        double[] s = new double[n * hq * d];
        for (int i = 0; i < s.length; i++) s[i] = U * MARGIN * r[i];
        return s;
    }

    /** Slack of dq [n, hq, d], dk and dv [n, hkv, d], concatenated, given the forward output {@code out} the kernel reads. */
    static double[] backward(double[] q, double[] k, double[] v, double[] out, double[] dOut, int[] cu, int n, int hq,
                             int hkv, int d, double scale) {
        double[] g = Ref.attentionBackward(q, k, v, out, dOut, cu, n, hq, hkv, d, scale, true);
        for (int i = 0; i < g.length; i++) g[i] *= U * MARGIN;
        return g;
    }

    /** {atol[i] + slack[i], ...}: a per-element absolute tolerance. */
    static double[] plus(double atol, double[] slack) {
        double[] r = new double[slack.length];
        for (int i = 0; i < r.length; i++) r[i] = atol + slack[i];
        return r;
    }
}
