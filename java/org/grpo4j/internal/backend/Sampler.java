package org.grpo4j.internal.backend;

/**
 * One row of {@link Backend#sample} on the CPU. Exact semantics (a CUDA kernel must reproduce the distribution):
 * <ol>
 *   <li>temperature 0: argmax (lowest index on ties); logprob from softmax(logits).</li>
 *   <li>otherwise z = logits / temperature, p = softmax(z). Rank tokens by z descending (index ascending on ties);
 *       keep the first topK (all when 0); renormalize; keep the shortest prefix whose cumulative probability
 *       reaches topP (at least one token). Draw u ~ U[0, 1) from Philox(seed, stream, step) and take the first kept
 *       token in vocabulary order ({@link FilteredDraw}) whose cumulative kept mass exceeds u times the kept mass.</li>
 *   <li>Both walks, filtered or not, run in vocabulary order (the order a sort-free GPU sampler walks); the sort only
 *       ranks the kept set.</li>
 * </ol>
 * The returned logprob is log p(token) under the unfiltered softmax(z).
 *
 * <p>Non-finite rows (the contract of {@link Backend#sample}): NaN counts as -inf. A row whose largest value is
 * +inf or -inf (some +inf entry, or no finite entry at all) has no softmax; it returns the lowest index holding that
 * largest value (the first +inf; token 0 when every entry is -inf or NaN) with logprob NaN, whatever the temperature,
 * top-k and top-p. A row with a finite maximum samples as above, its NaN and -inf entries having probability 0.
 * On a GPU this is the (max, argmax) reduction that softmax needs anyway plus one branch on the maximum.
 */
final class Sampler {
    private Sampler() {}

    record Result(int token, double logprob) {}

    static Result sampleRow(float[] logits, int off, int v, SamplingSpec spec, int stream, int step) {
        int arg = 0;
        float max = orNegInf(logits[off]);
        boolean anyNaN = Float.isNaN(logits[off]);
        for (int j = 1; j < v; j++) {
            float x = logits[off + j];
            if (Float.isNaN(x)) anyNaN = true;
            else if (Float.compare(x, max) > 0) { // (-0 below +0: the total order of the top-k ranking and the CUDA keys)
                max = x;
                arg = j;
            }
        }
        if (Float.isInfinite(max)) return new Result(arg, Double.NaN);
        if (anyNaN) { // the rules below on a copy where NaN is -inf (probability 0)
            float[] clean = new float[v];
            for (int j = 0; j < v; j++) clean[j] = orNegInf(logits[off + j]);
            logits = clean;
            off = 0;
        }
        if (spec.temperature() == 0f) return new Result(arg, max - logSumExp(logits, off, v, 1.0));
        double invT = 1.0 / spec.temperature();
        double lse = logSumExp(logits, off, v, invT);
        double u = Philox.uniform(spec.seed(), stream, step);
        int k = spec.topK() == 0 ? v : Math.min(spec.topK(), v);
        if (k == v && spec.topP() >= 1f) {
            double target = u, c = 0;
            int last = -1;
            for (int j = 0; j < v; j++) {
                double p = Math.exp(logits[off + j] * invT - lse);
                if (p > 0) last = j;
                c += p;
                if (c > target) return new Result(j, logits[off + j] * invT - lse);
            }
            return new Result(last, logits[off + last] * invT - lse); // rounding left c just below u
        }
        return FilteredDraw.draw(logits, off, v, k, spec.topP(), invT, lse, u);
    }

    private static float orNegInf(float x) { return Float.isNaN(x) ? Float.NEGATIVE_INFINITY : x; }

    static double logSumExp(float[] a, int off, int n, double scale) {
        double mx = Double.NEGATIVE_INFINITY;
        for (int j = 0; j < n; j++) mx = Math.max(mx, a[off + j] * scale);
        double s = 0;
        for (int j = 0; j < n; j++) s += Math.exp(a[off + j] * scale - mx);
        return mx + Math.log(s);
    }

    /** Token indices sorted by value descending, ties by index ascending (primitive sort of packed keys). */
    static int[] sortedDescending(float[] a, int off, int n) {
        long[] keys = new long[n];
        for (int j = 0; j < n; j++) {
            int bits = Float.floatToIntBits(a[off + j]);
            int ord = bits >= 0 ? bits : bits ^ 0x7FFFFFFF; // signed int, monotone in the float value
            keys[j] = ((long) ~ord << 32) | j;               // ~ord reverses the order: larger value first
        }
        java.util.Arrays.sort(keys);
        int[] out = new int[n];
        for (int j = 0; j < n; j++) out[j] = (int) keys[j];
        return out;
    }
}
