package org.grpo4j.internal.backend;

import java.util.concurrent.ForkJoinPool;
import java.util.concurrent.RecursiveAction;

/**
 * Deterministic data parallelism for the CPU backend: [0, n) is cut into fixed chunks of {@code grain} indices and
 * each chunk runs on one thread (chunk boundaries are multiples of {@code grain}, whatever the thread count). Which thread runs a chunk never changes a result, because every output element is
 * written by exactly one chunk and reductions combine per-chunk partials in chunk order.
 */
final class Parallel {
    interface RangeBody { void run(int from, int to); }

    private final ForkJoinPool pool;
    final int threads;

    Parallel(int threads) {
        this.threads = Math.max(1, threads);
        this.pool = this.threads == 1 ? null : new ForkJoinPool(this.threads);
    }

    void forRange(int n, int grain, RangeBody body) {
        if (n <= 0) return;
        int g = Math.max(1, grain);
        if (pool == null || n <= g) {
            for (int s = 0; s < n; s += g) body.run(s, Math.min(n, s + g)); // same chunks as the parallel path
            return;
        }
        pool.invoke(new Task(0, n, g, body));
    }

    /** Number of chunks forRange would make; used to size per-chunk partial buffers for deterministic reductions. */
    static int chunks(int n, int grain) {
        return n <= 0 ? 0 : (n + grain - 1) / grain;
    }

    void shutdown() {
        if (pool != null) pool.shutdown();
    }

    private static final class Task extends RecursiveAction {
        final int from, to, grain;
        final RangeBody body;

        Task(int from, int to, int grain, RangeBody body) {
            this.from = from;
            this.to = to;
            this.grain = grain;
            this.body = body;
        }

        @Override
        protected void compute() {
            int chunksHere = (to - from + grain - 1) / grain;
            if (chunksHere <= 1) {
                body.run(from, to);
                return;
            }
            int mid = from + (chunksHere / 2) * grain;
            invokeAll(new Task(from, mid, grain, body), new Task(mid, to, grain, body));
        }
    }
}
