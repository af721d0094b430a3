package org.grpo4j.internal.backend;

/**
 * The top-k / top-p draw of {@link Backend#sample} walking the kept tokens in <em>vocabulary order</em>, the order a
 * sort-free GPU sampler can walk (cuda/sampling.cu), so that the CPU and CUDA draw the same token for the same u.
 *
 * <p>The kept set is unchanged from {@link Sampler}: tokens ranked by z = logits / T descending (index ascending on
 * ties), the first k kept (all when there is no top-k), then the shortest prefix of those whose mass reaches
 * topP times their mass (at least one token). The draw: target = u * (kept mass); the first kept token, in vocabulary
 * order, whose running kept mass exceeds the target (the last kept token of positive probability if rounding leaves
 * the running mass at or below it). The distribution is the same as walking in rank order: each kept token owns an
 * interval of u of length p / (kept mass) either way; only which token a given u maps to changes.
 *
 * <p>To merge into {@link Sampler#sampleRow}: its filtered branch (from {@code int[] order = sortedDescending(...)} to
 * the end) becomes {@code return FilteredDraw.draw(logits, off, v, k, spec.topP(), invT, lse, u);}.
 */
final class FilteredDraw {
    private FilteredDraw() {}

    /**
     * The filtered draw on a row without NaN (the caller has replaced NaN by -inf and handled rows whose maximum is
     * infinite). {@code k} in [1, v]; {@code lse} = log sum exp(logits * invT); u in [0, 1).
     */
    static Sampler.Result draw(float[] logits, int off, int v, int k, float topP, double invT, double lse, double u) {
        boolean[] keep = keptSet(logits, off, v, k, topP, invT, lse);
        double mass = 0;
        for (int j = 0; j < v; j++) if (keep[j]) mass += Math.exp(logits[off + j] * invT - lse);
        double target = u * mass, c = 0;
        int last = -1;
        for (int j = 0; j < v; j++) {
            if (!keep[j]) continue;
            double p = Math.exp(logits[off + j] * invT - lse);
            if (p > 0) last = j;
            c += p;
            if (c > target) return new Sampler.Result(j, logits[off + j] * invT - lse);
        }
        return new Sampler.Result(last, logits[off + last] * invT - lse);
    }

    /** The kept set of the filtered draw (see the class comment), as a mask over the row. */
    static boolean[] keptSet(float[] logits, int off, int v, int k, float topP, double invT, double lse) {
        int[] order = Sampler.sortedDescending(logits, off, v);
        double massK = 0;
        for (int r = 0; r < k; r++) massK += Math.exp(logits[off + order[r]] * invT - lse);
        int kept = 0;
        double mass = 0;
        while (kept < k) {
            mass += Math.exp(logits[off + order[kept]] * invT - lse);
            kept++;
            if (mass / massK >= topP) break;
        }
        boolean[] keep = new boolean[v];
        for (int r = 0; r < kept; r++) keep[order[r]] = true;
        return keep;
    }
}
