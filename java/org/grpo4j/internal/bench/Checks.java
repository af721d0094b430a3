package org.grpo4j.internal.bench;

import java.util.Arrays;
import java.util.Locale;
import java.util.Map;
import org.grpo4j.internal.backend.Bf16;
import org.grpo4j.internal.backend.Tensor;

/**
 * The correctness check run before a kernel is timed: the same problem at a small size on the device and on the CPU
 * reference backend, from bit-identical inputs, outputs compared element by element. Its tolerances are loose enough
 * for legitimate fp32 reordering and one bf16 rounding step, and far below what a wrong kernel produces (a wrong mask,
 * head mapping, index or formula is off by O(1)); the strict per-op tolerances are the conformance suite's.
 */
final class Checks {
    private Checks() {}

    /** ok, the largest |device - reference| over all outputs, and on failure where and by how much. */
    record Result(boolean ok, double maxError, String detail) {}

    static Result compare(Instance device, Instance reference) {
        if (device.checker != null) return device.checker.check(device, reference);
        double maxErr = 0;
        String worst = null;
        double worstRatio = 1;
        for (Map.Entry<String, Instance.Out> e : reference.outs.entrySet()) {
            Instance.Out want = e.getValue(), got = device.outs.get(e.getKey());
            double[] w = values(want.tensor()), g = values(got.tensor());
            double maxWant = 0;
            for (double v : w) if (Double.isFinite(v)) maxWant = Math.max(maxWant, Math.abs(v));
            Instance.Tol tol = want.tol();
            for (int i = 0; i < w.length; i++) {
                double err, bound = tol.abs() + tol.relMax() * maxWant + tol.rel() * Math.abs(w[i]);
                if (!Double.isFinite(w[i])) err = Double.compare(w[i], g[i]) == 0 || (Double.isNaN(w[i]) && Double.isNaN(g[i])) ? 0 : Double.POSITIVE_INFINITY;
                else err = Double.isFinite(g[i]) ? Math.abs(g[i] - w[i]) : Double.POSITIVE_INFINITY;
                if (err > maxErr) maxErr = err;
                if (err > bound) {
                    double ratio = bound == 0 ? Double.POSITIVE_INFINITY : err / bound;
                    if (worst == null || ratio > worstRatio) {
                        worstRatio = ratio;
                        worst = String.format(Locale.ROOT, "%s[%d] = %s, CPU %s (tolerance %.3g)", e.getKey(), i, fmt(g[i]), fmt(w[i]), bound);
                    }
                }
            }
        }
        return new Result(worst == null, maxErr, worst);
    }

    static String fmt(double v) { return String.format(Locale.ROOT, "%.6g", v); }

    /** A tensor's elements as doubles (bf16 widened exactly). */
    static double[] values(Tensor t) {
        return switch (t.dtype()) {
            case FP32 -> {
                float[] f = t.toFloats();
                double[] d = new double[f.length];
                for (int i = 0; i < f.length; i++) d[i] = f[i];
                yield d;
            }
            case BF16 -> {
                short[] s = t.toBf16Bits();
                double[] d = new double[s.length];
                for (int i = 0; i < s.length; i++) d[i] = Bf16.toFloat(s[i]);
                yield d;
            }
            case INT32 -> Arrays.stream(t.toInts()).asDoubleStream().toArray();
            default -> throw new IllegalArgumentException("bench check: unsupported dtype " + t.dtype().label());
        };
    }

    /**
     * Sampling from softmax(logits / temperature) restricted to the top-p nucleus: the device's token must be in the
     * nucleus (computed in float64 from the same logits, with a 1e-6 slack on the probability threshold for ties and
     * rounding) and its log-prob must equal float64 log softmax(logits / T)[token] within 1e-4 + 1e-5 |logprob|.
     * Tokens are not compared with the CPU's: two correct samplers may map the same random stream differently.
     */
    static Instance.Checker sampling(String logits, String tokens, String logprobs, float temperature, float topP) {
        return (dev, ref) -> {
            double[] z = values(ref.outs.get(logits).tensor());
            int[] tok = dev.outs.get(tokens).tensor().toInts();
            double[] lp = values(dev.outs.get(logprobs).tensor());
            int b = tok.length, v = z.length / b;
            double maxErr = 0;
            for (int r = 0; r < b; r++) {
                double[] p = new double[v];
                double mx = Double.NEGATIVE_INFINITY;
                for (int i = 0; i < v; i++) mx = Math.max(mx, z[r * v + i] / temperature);
                double sum = 0;
                for (int i = 0; i < v; i++) sum += p[i] = Math.exp(z[r * v + i] / temperature - mx);
                for (int i = 0; i < v; i++) p[i] /= sum;
                if (tok[r] < 0 || tok[r] >= v)
                    return new Result(false, Double.POSITIVE_INFINITY, "row " + r + ": token " + tok[r] + " outside [0, " + v + ")");
                double[] sorted = p.clone();
                Arrays.sort(sorted);
                double cum = 0, threshold = 0;
                for (int i = v - 1; i >= 0; i--) {
                    cum += sorted[i];
                    threshold = sorted[i];
                    if (cum >= topP) break;
                }
                if (p[tok[r]] < threshold * (1 - 1e-6))
                    return new Result(false, Double.POSITIVE_INFINITY, String.format(Locale.ROOT,
                            "row %d: token %d has probability %.3g, outside the top-p %.2f nucleus (smallest kept %.3g)", r, tok[r], p[tok[r]], topP, threshold));
                double want = Math.log(p[tok[r]]), err = Math.abs(lp[r] - want);
                if (!(err <= 1e-4 + 1e-5 * Math.abs(want)))
                    return new Result(false, Double.isFinite(err) ? err : Double.POSITIVE_INFINITY,
                            "row " + r + ": logprob " + fmt(lp[r]) + " of token " + tok[r] + ", float64 " + fmt(want));
                maxErr = Math.max(maxErr, err);
            }
            return new Result(true, maxErr, null);
        };
    }
}
