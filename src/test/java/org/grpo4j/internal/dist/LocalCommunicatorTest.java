package org.grpo4j.internal.dist;

import static org.junit.jupiter.api.Assertions.*;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.function.Function;
import org.grpo4j.internal.backend.Bf16;
import org.grpo4j.internal.backend.CpuBackend;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.Tensor;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;

/**
 * The in-process communicator against its definition: every collective in fp32 and bf16 (int32 for the movements),
 * sums and averages added in fp32 in rank order and rounded once (so results are bitwise reproducible), mismatched
 * calls and failing or missing ranks turned into errors on every rank.
 */
class LocalCommunicatorTest {
    static final int W = 3, N = 7;
    static final ExecutorService POOL = Executors.newCachedThreadPool();
    static final CpuBackend[] BE = {new CpuBackend(1), new CpuBackend(1), new CpuBackend(1)};

    @AfterAll
    static void stop() { POOL.shutdownNow(); }

    /** Runs f on W ranks (threads) of a fresh group; the results in rank order. */
    static <T> List<T> onRanks(long timeoutMs, Function<LocalCommunicator, T> f) throws Exception {
        List<LocalCommunicator> g = LocalCommunicator.group(W, timeoutMs);
        List<Future<T>> fs = new ArrayList<>();
        for (LocalCommunicator c : g) fs.add(POOL.submit((Callable<T>) () -> f.apply(c)));
        List<T> out = new ArrayList<>();
        for (Future<T> x : fs) out.add(x.get());
        return out;
    }

    /** Rank r's input: deterministic values, different per rank. */
    static float[] input(int r, int n) {
        SplittableRandom rnd = new SplittableRandom(100 + r);
        float[] a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float) rnd.nextGaussian();
        return a;
    }

    static Tensor tensor(int r, float[] a, DType dt) {
        try (Tensor f = BE[r].upload(a, a.length)) {
            Tensor t = BE[r].empty(dt, a.length);
            BE[r].cast(t, f);
            return t;
        }
    }

    /** The definition: x_0 + x_1 + ... in fp32 (inputs as stored), / W for AVG, rounded once to the dtype. */
    static float[] expectedSum(int n, int offset, DType dt, ReduceOp op) {
        float[] acc = new float[n];
        for (int r = 0; r < W; r++) {
            float[] x = input(r, offset + n);
            for (int i = 0; i < n; i++) acc[i] += dt == DType.BF16 ? Bf16.round(x[offset + i]) : x[offset + i];
        }
        for (int i = 0; i < n; i++) {
            if (op == ReduceOp.AVG) acc[i] /= W;
            if (dt == DType.BF16) acc[i] = Bf16.round(acc[i]);
        }
        return acc;
    }

    @Test
    void reductionsAreTheRankOrderSumRoundedOnce() throws Exception {
        for (DType dt : new DType[] {DType.FP32, DType.BF16})
            for (ReduceOp op : ReduceOp.values()) {
                String what = dt.label() + " " + op;
                List<float[]> all = onRanks(5000, c -> {
                    try (Tensor t = tensor(c.rank(), input(c.rank(), N), dt)) {
                        c.allReduce(t, op).await();
                        return t.toFloatsWidened();
                    }
                });
                for (float[] got : all) assertArrayEquals(expectedSum(N, 0, dt, op), got, 0f, "allReduce " + what);
                List<float[]> rs = onRanks(5000, c -> {
                    try (Tensor in = tensor(c.rank(), input(c.rank(), W * N), dt); Tensor out = BE[c.rank()].empty(dt, N)) {
                        c.reduceScatter(out, in, op).await();
                        return out.toFloatsWidened();
                    }
                });
                for (int r = 0; r < W; r++) assertArrayEquals(expectedSum(N, r * N, dt, op), rs.get(r), 0f, "reduceScatter " + what + " rank " + r);
                List<float[]> red = onRanks(5000, c -> {
                    try (Tensor in = tensor(c.rank(), input(c.rank(), N), dt); Tensor out = c.rank() == 1 ? BE[1].empty(dt, N) : null) {
                        c.reduce(out, in, 1, op).await();
                        return out == null ? null : out.toFloatsWidened();
                    }
                });
                assertNull(red.get(0));
                assertArrayEquals(expectedSum(N, 0, dt, op), red.get(1), 0f, "reduce to rank 1, " + what);
            }
    }

    @Test
    void movementsCopyBitsExactly() throws Exception {
        for (DType dt : new DType[] {DType.FP32, DType.BF16}) {
            List<float[]> ag = onRanks(5000, c -> {
                try (Tensor in = tensor(c.rank(), input(c.rank(), N), dt); Tensor out = BE[c.rank()].empty(dt, W * N)) {
                    c.allGather(out, in).await();
                    return out.toFloatsWidened();
                }
            });
            List<float[]> inPlace = onRanks(5000, c -> {
                try (Tensor buf = BE[c.rank()].zeros(dt, W * N); Tensor mine = tensor(c.rank(), input(c.rank(), N), dt)) {
                    BE[c.rank()].copy(buf.view((long) c.rank() * N, N), mine);
                    c.allGatherInPlace(buf).await();
                    return buf.toFloatsWidened();
                }
            });
            List<float[]> bc = onRanks(5000, c -> {
                try (Tensor t = tensor(c.rank(), input(c.rank(), N), dt)) {
                    c.broadcast(t, 2).await();
                    return t.toFloatsWidened();
                }
            });
            for (int r = 0; r < W; r++) {
                for (int k = 0; k < W; k++) {
                    float[] want = input(k, N);
                    for (int i = 0; i < N; i++) {
                        float w = dt == DType.BF16 ? Bf16.round(want[i]) : want[i];
                        assertEquals(w, ag.get(r)[k * N + i], 0f, "allGather " + dt.label());
                        assertEquals(w, inPlace.get(r)[k * N + i], 0f, "allGatherInPlace " + dt.label());
                    }
                }
                float[] root = input(2, N);
                for (int i = 0; i < N; i++) assertEquals(dt == DType.BF16 ? Bf16.round(root[i]) : root[i], bc.get(r)[i], 0f, "broadcast");
            }
        }
        List<int[]> ints = onRanks(5000, c -> {
            try (Tensor in = BE[c.rank()].upload(new int[] {c.rank(), -c.rank()}, 2); Tensor out = BE[c.rank()].empty(DType.INT32, 2 * W)) {
                c.allGather(out, in).await();
                return out.toInts();
            }
        });
        for (int[] x : ints) assertArrayEquals(new int[] {0, 0, 1, -1, 2, -2}, x);
        List<double[][]> d = onRanks(5000, c -> c.allGatherDoubles(new double[] {Math.PI * c.rank(), Double.NaN, -0.0}));
        for (double[][] x : d)
            for (int r = 0; r < W; r++) {
                assertEquals(Math.PI * r, x[r][0], 0.0);
                assertTrue(Double.isNaN(x[r][1]));
                assertEquals(Double.doubleToRawLongBits(-0.0), Double.doubleToRawLongBits(x[r][2]));
            }
    }

    @Test
    void mismatchedCallsFailEveryRankNamingBoth() throws Exception {
        List<String> msgs = onRanks(5000, c -> {
            c.setContext("step 3, update");
            try (Tensor t = BE[c.rank()].zeros(DType.FP32, c.rank() == 2 ? 5 : 4)) {
                c.allReduce(t, ReduceOp.SUM);
                return "no error";
            } catch (CommunicatorException e) {
                return e.getMessage();
            }
        });
        for (String m : msgs) {
            assertTrue(m.contains("collective mismatch (step 3, update)"), m);
            assertTrue(m.contains("rank 0 called allReduce(fp32 x 4)") && m.contains("rank 2 called allReduce(fp32 x 5)"), m);
        }
    }

    @Test
    void aFailingRankStopsTheOthersAndAMissingOneTimesOut() throws Exception {
        List<LocalCommunicator> g = LocalCommunicator.group(W, 60_000);
        List<Future<String>> fs = new ArrayList<>();
        for (LocalCommunicator c : g)
            fs.add(POOL.submit(() -> {
                if (c.rank() == 1) {
                    c.abortGroup(new IllegalStateException("rank 1 ran out of memory"));
                    return "failed";
                }
                try {
                    c.barrier();
                    return "passed";
                } catch (CommunicatorException e) {
                    return e.getMessage();
                }
            }));
        for (int r : new int[] {0, 2}) assertTrue(fs.get(r).get().contains("rank 1 ran out of memory"), fs.get(r).get());
        // rank 2 never arrives: the others give up after the timeout, naming it
        List<LocalCommunicator> h = LocalCommunicator.group(W, 300);
        List<Future<String>> gs = new ArrayList<>();
        for (LocalCommunicator c : h)
            gs.add(POOL.submit(() -> {
                if (c.rank() == 2) return "absent";
                c.setContext("step 7, rollout");
                try {
                    c.barrier();
                    return "passed";
                } catch (CommunicatorException e) {
                    return e.getMessage();
                }
            }));
        for (int r : new int[] {0, 1}) {
            String m = gs.get(r).get();
            assertTrue(m.contains("barrier (step 7, rollout)") && m.contains("timed out after 0.3 s waiting for rank [2]"), m);
        }
    }
}
