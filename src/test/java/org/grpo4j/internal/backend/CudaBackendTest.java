package org.grpo4j.internal.backend;

import static org.junit.jupiter.api.Assertions.*;

import java.util.SplittableRandom;
import org.grpo4j.bindings.CudaNative;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * What only the CUDA backend has: failure hygiene, the device error flag for index data, bit-identity with the CPU
 * where the kernels promise it, run-to-run determinism of the reductions, and the GEMM wrapper's plan cache and paths.
 * Needs a GPU (tag gpu); skips with the probe's reason elsewhere. The numeric contract of each op is checked by the
 * conformance suites' Cuda classes.
 */
@Tag("gpu")
class CudaBackendTest {
    static CudaBackend cuda() { return TestBackends.cuda(); }

    static final CpuBackend cpu = TestBackends.cpu();

    static float[] randn(SplittableRandom r, int n, double scale) {
        float[] a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float) (r.nextGaussian() * scale);
        return a;
    }

    /**
     * Events outlive nothing: an event of a closed backend, or a closed one, is refused before any CUDA call (a
     * destroyed stream or event handle is undefined behaviour), and closing an event twice destroys it once.
     */
    /** A storage held for a collective runs the hold's wait before it is freed; a released hold does not. */
    @Test
    void aStorageHeldForACollectiveWaitsBeforeItIsFreed() throws Exception {
        CudaBackend be = cuda();
        int[] waited = {0};
        Tensor held = be.zeros(DType.FP32, 64), released = be.zeros(DType.FP32, 64);
        AutoCloseable h = be.holdForCollective(held.view(8, 8), () -> waited[0]++);
        be.holdForCollective(released, () -> waited[0] += 100).close();
        released.close();
        assertEquals(0, waited[0], "a released hold is not run");
        held.close();
        assertEquals(1, waited[0], "the free waited for the collective");
        h.close();
        // a wait that fails leaves the memory allocated (leaked), not handed to another allocation
        Tensor failing = be.zeros(DType.FP32, 64);
        be.holdForCollective(failing, () -> { throw new IllegalStateException("not done"); });
        failing.close();
        assertFalse(failing.isLive(), "closed for Java (its memory leaked on the device)");
    }

    @Test
    void eventsOfAClosedBackendAreRefused() {
        CudaBackend be = new CudaBackend(cuda().device());
        CudaBackend.Event e = be.newEvent().record(), gone = be.newEvent();
        gone.close();
        gone.close();
        IllegalStateException closed = assertThrows(IllegalStateException.class, gone::record);
        assertTrue(closed.getMessage().contains("the event is closed"), closed.getMessage());
        assertThrows(IllegalStateException.class, () -> be.waitFor(gone));
        e.synchronize();
        be.close();
        for (org.junit.jupiter.api.function.Executable x : new org.junit.jupiter.api.function.Executable[] {e::record, e::synchronize,
                be::newEvent, () -> be.waitFor(e)}) {
            IllegalStateException refused = assertThrows(IllegalStateException.class, x);
            assertTrue(refused.getMessage().contains("is closed"), refused.getMessage());
        }
        e.close();
    }

    /** The H200 bug: a failed cudaMalloc left its error in the runtime's last-error slot and the next fill "failed". */
    @Test
    void aLaunchAfterAFailedAllocationSucceeds() {
        CudaBackend be = cuda();
        CudaException e = assertThrows(CudaException.class, () -> be.empty(DType.FP32, Integer.MAX_VALUE, 64)); // 512 GiB
        assertTrue(e.getMessage().contains("cudaMalloc"), e.getMessage());
        assertEquals(0, CudaNative.g4_get_last_error(), "the runtime's last-error slot is clean after the failure");
        try (Tensor t = be.empty(DType.FP32, 1 << 20)) {
            be.fill(t, 1.5);
            float[] got = t.toFloats();
            assertEquals(1.5f, got[0]);
            assertEquals(1.5f, got[got.length - 1]);
        }
    }

    /**
     * The stream-ordered pool (cudaMallocAsync): a tensor freed while work that reads it is still queued is reused by
     * the next allocation of its size on the same stream (the same address), only after that work; another backend on
     * the same device (another stream) that allocates and writes right after the free never corrupts what the queued
     * work reads; {@link Memory#available} counts the pool's idle memory, which {@link CudaBackend#trimPool} hands
     * back to the device; {@code
     * -Dgrpo4j.cuda.alloc=sync} gives cudaMalloc.
     */
    @Test
    void freedMemoryIsReusedInStreamOrder() {
        CudaBackend be = cuda();
        assertTrue(be.pooledAllocator(), "Ampere and Hopper devices have memory pools");
        int n = 1 << 26; // 256 MiB of fp32
        // other is closed first (resources close in reverse order): its close trims the device's pool, and the frees of
        // c and c2 after it are what the idle-memory checks below see
        try (Tensor c = be.empty(DType.FP32, n); Tensor c2 = be.empty(DType.FP32, n); CudaBackend other = new CudaBackend(be.device())) {
            Tensor a = be.empty(DType.FP32, n);
            long addrA = CudaBackend.addr(a);
            be.fill(a, 2.5);
            for (int k = 0; k < 50; k++) be.scale(a, 1f); // queued work on a, then copies that read it
            be.copy(c, a);
            be.copy(c2, a);
            a.close(); // cudaFreeAsync: after the copies
            try (Tensor d = other.empty(DType.FP32, n); Tensor b = be.empty(DType.FP32, n)) {
                other.fill(d, -2); // another stream, right after the free: the pool must not hand it a's memory early
                assertEquals(addrA, CudaBackend.addr(b), "the next allocation of the same size on the same stream reuses the freed block");
                be.fill(b, -1);
                float[] got = c.toFloats(), got2 = c2.toFloats();
                for (int i = 0; i < n; i += 4099) {
                    assertEquals(2.5f, got[i], "element " + i + " of the first copy of the freed tensor");
                    assertEquals(2.5f, got2[i], "element " + i + " of the second copy of the freed tensor");
                }
                assertEquals(-1f, b.toFloats()[n - 1]);
                assertEquals(-2f, d.toFloats()[n - 1]);
            }
        }
        be.synchronize();
        long idle = CudaBackend.poolIdleBytes(be.device());
        assertTrue(idle >= 4L * n, "the pool keeps the freed memory: " + idle + " bytes idle");
        long[] free = new long[1], total = new long[1];
        assertEquals(0, CudaNative.g4_mem_get_info(free, total));
        assertEquals(free[0] + idle, Memory.available(be), 64 << 20, "available = free on the device + idle in the pool (this backend's to reuse)");
        be.trimPool();
        // the pool reserves in chunks (32 MiB on an H200) and cannot hand back a chunk that a live allocation shares
        // (the first GPU run kept 31 MiB: a chunk holding 1 MiB of live buffers)
        long kept = CudaBackend.poolIdleBytes(be.device());
        assertTrue(kept <= 64L << 20, "trimPool hands the idle memory back, but for the chunks live buffers share: " + kept
                + " bytes still idle of " + idle);
        assertEquals(0, CudaNative.g4_mem_get_info(free, total));
        assertEquals(free[0], Memory.available(be), 64 << 20, "after a trim, available is the device's free memory");
        String old = System.getProperty(CudaBackend.ALLOC_PROPERTY);
        System.setProperty(CudaBackend.ALLOC_PROPERTY, "sync");
        try (CudaBackend sync = new CudaBackend(be.device()); Tensor t = sync.empty(DType.FP32, 1000)) {
            assertFalse(sync.pooledAllocator());
            sync.fill(t, 3);
            assertEquals(3f, t.toFloats()[999]);
        } finally {
            if (old == null) System.clearProperty(CudaBackend.ALLOC_PROPERTY);
            else System.setProperty(CudaBackend.ALLOC_PROPERTY, old);
        }
    }

    /** A free while a graph is being captured is refused and leaves the tensor allocated and accounted for. */
    @Test
    void aFreeDuringCaptureIsRefusedWithoutLeaking() {
        CudaBackend be = cuda();
        Tensor t = be.empty(DType.FP32, 1000);
        long live = be.liveBytes();
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> be.capture(t::close));
        assertTrue(e.getMessage().contains("freed while a CUDA graph is being captured"), e.getMessage());
        assertEquals(live, be.liveBytes(), "still accounted for");
        be.fill(t, 1); // still usable
        assertEquals(1f, t.toFloats()[999]);
        t.close();
        assertEquals(live - 4000, be.liveBytes());
    }

    /**
     * A graph replayed after a tensor it was recorded with was closed is refused before the launch (its kernels would
     * write memory the pool has handed out again); while every tensor lives it replays.
     */
    @Test
    void aGraphIsNotReplayedOverAClosedTensor() {
        CudaBackend be = cuda();
        Tensor kept = be.empty(DType.FP32, 256), gone = be.empty(DType.FP32, 256);
        try (Backend.Replay g = be.capture(() -> {
            be.fill(kept, 2);
            be.fill(gone, 3);
        })) {
            g.run();
            be.synchronize();
            assertEquals(3f, gone.toFloats()[255]);
            gone.close();
            be.fill(kept, 0);
            IllegalStateException e = assertThrows(IllegalStateException.class, g::run);
            assertTrue(e.getMessage().contains("replayed after a tensor it was recorded with had been closed"), e.getMessage());
            assertEquals(0f, kept.toFloats()[0], "nothing ran");
        } finally {
            kept.close();
        }
    }

    @Test
    void outOfRangeIndicesAreReportedAtTheNextSynchronizeNamingTheOp() {
        CudaBackend be = cuda();
        try (Tensor table = be.zeros(DType.FP32, 10, 4); Tensor out = be.zeros(DType.FP32, 2, 4);
             Tensor ids = be.upload(new int[] {1, 10}, 2)) {
            be.embedding(out, table, ids); // asynchronous: no error yet
            IllegalArgumentException x = assertThrows(IllegalArgumentException.class, be::synchronize);
            assertTrue(x.getMessage().startsWith("embedding: ids[1] = 10 is outside [0, 10)"), x.getMessage());
            be.synchronize(); // the flag was cleared: the next synchronize is clean
        }
        try (Tensor x = be.zeros(DType.FP32, 2, 1, 4); Tensor pos = be.upload(new int[] {0, -3}, 2);
             Tensor out = be.zeros(DType.FP32, 2, 1, 4)) {
            be.rope(out, x, pos, new Rope(4, 10000, null));
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, out::toFloats);
            assertTrue(e.getMessage().startsWith("rope: positions[1] = -3 is negative"), e.getMessage());
        }
        try (Tensor kc = be.zeros(DType.FP32, 2, 4, 1, 8); Tensor vc = be.zeros(DType.FP32, 2, 4, 1, 8);
             Tensor k = be.zeros(DType.FP32, 1, 1, 8); Tensor v = be.zeros(DType.FP32, 1, 1, 8);
             Tensor slots = be.upload(new int[] {8}, 1)) {
            be.kvAppend(kc, vc, k, v, slots);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, be::synchronize);
            assertTrue(e.getMessage().startsWith("kvAppend: slots[0] = 8 is outside [0, 8)"), e.getMessage());
        }
    }

    /**
     * embeddingBackward's ids (keys_kernel, cuda/embedding.cu): an out-of-range id, above the vocabulary or negative,
     * is reported at the next synchronize naming the op, and only that token is skipped: the other tokens' rows are
     * summed as the CPU sums the call without it (bit-identical), every other row keeps its value.
     */
    @Test
    void embeddingBackwardSkipsAndReportsAnOutOfRangeId() {
        CudaBackend be = cuda();
        SplittableRandom r = new SplittableRandom(4);
        int vocab = 10, d = 8;
        float[] init = randn(r, vocab * d, 1), dy = randn(r, 4 * d, 1);
        int[] ids = {1, 10, 2, 1};
        try (Tensor table = be.upload(init, vocab, d); Tensor dOut = be.upload(dy, 4, d); Tensor tid = be.upload(ids, 4)) {
            be.embeddingBackward(table, dOut, tid); // asynchronous: no error yet
            IllegalArgumentException x = assertThrows(IllegalArgumentException.class, be::synchronize);
            assertTrue(x.getMessage().startsWith("embeddingBackward: ids[1] = 10 is outside [0, 10)"), x.getMessage());
            be.synchronize(); // the flag was cleared: the next synchronize is clean
            // the CPU on the three valid tokens (0, 2, 3), in token order
            float[] valid = new float[3 * d];
            System.arraycopy(dy, 0, valid, 0, d);
            System.arraycopy(dy, 2 * d, valid, d, 2 * d);
            float[] want = embeddingBackward(cpu, init, valid, new int[] {1, 2, 1}, vocab, d);
            assertFalse(java.util.Arrays.equals(init, want), "the valid tokens change their rows");
            assertArrayEquals(want, table.toFloats(), "the valid tokens summed, the out-of-range one skipped");
        }
        try (Tensor table = be.upload(init, vocab, d); Tensor dOut = be.upload(dy, 4, d);
             Tensor tid = be.upload(new int[] {3, 3, -4, 9}, 4)) {
            be.embeddingBackward(table, dOut, tid);
            IllegalArgumentException x = assertThrows(IllegalArgumentException.class, table::toFloats);
            assertTrue(x.getMessage().startsWith("embeddingBackward: ids[2] = -4 is outside [0, 10)"), x.getMessage());
            float[] valid = new float[3 * d];
            System.arraycopy(dy, 0, valid, 0, 2 * d);
            System.arraycopy(dy, 3 * d, valid, 2 * d, d);
            assertArrayEquals(embeddingBackward(cpu, init, valid, new int[] {3, 3, 9}, vocab, d), table.toFloats());
        }
    }

    /**
     * The pipelined decode's host copies: staged uploads and snapshots are ordered on the stream (a snapshot holds the
     * values of its moment, not later ones; an upload's host array may change once it returns), staging buffers are
     * reused once done, and an index error before a snapshot is reported when the snapshot is read, naming the op,
     * once; snapshots never read hold their buffers until discarded.
     */
    @Test
    void stagedCopiesAreStreamOrderedAndSnapshotsReportIndexErrors() {
        CudaBackend be = cuda();
        int n = 5000;
        try (Tensor a = be.zeros(DType.INT32, n); Tensor f = be.zeros(DType.FP32, n); Tensor src = be.upload(new int[] {7, 8, 9}, 3);
             Tensor idx = be.zeros(DType.INT32, n)) {
            java.util.List<Backend.Fetched> snaps = new java.util.ArrayList<>();
            int[] host = new int[n];
            for (int round = 0; round < 100; round++) { // more rounds than staging buffers: they are reused
                java.util.Arrays.fill(host, round);
                be.copyFromHostAsync(a, host);
                java.util.Arrays.fill(host, -5); // after the call: not uploaded
                be.fill(f, round * 0.5);
                snaps.add(be.fetch(a, f));
                if (snaps.size() > 3) {
                    Backend.Fetched s = snaps.remove(0);
                    int want = round - 3;
                    assertEquals(want, s.ints()[n - 1], "round " + want);
                    assertEquals(want * 0.5f, s.floats()[0], "round " + want);
                }
            }
            for (Backend.Fetched s : snaps) s.ints();
            int[] index = new int[n];
            java.util.Arrays.fill(index, -1);
            index[17] = 3;
            be.copyFromHostAsync(idx, index);
            be.gatherTokens(a, src, idx);
            Backend.Fetched bad = be.fetch(a, f);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, bad::ints);
            assertTrue(e.getMessage().startsWith("gatherTokens: index[17] = 3 is outside [0, 3)"), e.getMessage());
            be.synchronize(); // the flag was read and cleared
            // a report read elsewhere first (here by synchronize) is not thrown again by the snapshot that also holds it
            be.gatherTokens(a, src, idx);
            Backend.Fetched late = be.fetch(a, f);
            assertThrows(IllegalArgumentException.class, be::synchronize);
            assertEquals(n, late.ints().length);
            // snapshots never read hold their buffers until discarded; then the buffers serve again
            java.util.List<Backend.Fetched> held = new java.util.ArrayList<>();
            IllegalStateException full = assertThrows(IllegalStateException.class, () -> {
                for (int i = 0; i <= CudaBackend.MAX_STAGING; i++) held.add(be.fetch(a, f));
            });
            assertTrue(full.getMessage().contains("held by snapshots (fetch) never read nor discarded"), full.getMessage());
            assertEquals(CudaBackend.MAX_STAGING, held.size());
            for (Backend.Fetched h : held) h.discard();
            assertThrows(IllegalStateException.class, held.get(0)::ints, "a discarded snapshot is not read");
            be.fill(f, 2.5);
            assertEquals(2.5f, be.fetch(a, f).floats()[n - 1]);
        }
    }

    /** Kernels written without fused multiply-adds, in the CPU's order, give the CPU's bits (fp32 and bf16). */
    @Test
    void elementwiseKernelsAreBitIdenticalToTheCpu() {
        CudaBackend be = cuda();
        SplittableRandom r = new SplittableRandom(1);
        for (int n : new int[] {1, 7, 4099, 1 << 20}) {
            float[] a = randn(r, n, 1), b = randn(r, n, 2);
            for (DType dt : new DType[] {DType.FP32, DType.BF16}) {
                float[] want = run(cpu, dt, a, b, n), got = run(be, dt, a, b, n);
                assertArrayEquals(want, got, "add, axpy, scale " + dt + " n=" + n);
            }
        }
    }

    private static float[] run(Backend be, DType dt, float[] a, float[] b, int n) {
        try (Tensor ta = cast(be, a, dt); Tensor tb = cast(be, b, dt); Tensor out = be.empty(dt, n); Tensor y = be.upload(a, n);
             Tensor res = be.empty(DType.FP32, 2 * n)) {
            be.add(out, ta, tb);
            be.scale(out, 0.7f);
            be.axpy(y, -1.3f, tb);
            be.cast(res.view(0, n), out);
            be.copy(res.view(n, n), y);
            return res.toFloats();
        }
    }

    private static Tensor cast(Backend be, float[] a, DType dt) {
        Tensor f = be.upload(a, a.length);
        if (dt == DType.FP32) return f;
        try (f) {
            Tensor h = be.empty(DType.BF16, a.length);
            be.cast(h, f);
            return h;
        }
    }

    @Test
    void adamWAndEmbeddingBackwardAreBitIdenticalToTheCpu() {
        CudaBackend be = cuda();
        SplittableRandom r = new SplittableRandom(2);
        int n = 100_003;
        float[] p = randn(r, n, 1), g = randn(r, n, 1);
        float[][] want = adamW(cpu, p, g, n), got = adamW(be, p, g, n);
        for (int i = 0; i < want.length; i++) assertArrayEquals(want[i], got[i], "adamW output " + i);

        int tokens = 513, vocab = 97, d = 300;
        float[] init = randn(r, vocab * d, 1), dy = randn(r, tokens * d, 1);
        int[] ids = r.ints(tokens, 0, vocab).toArray();
        assertArrayEquals(embeddingBackward(cpu, init, dy, ids, vocab, d), embeddingBackward(be, init, dy, ids, vocab, d));
    }

    private static float[][] adamW(Backend be, float[] p, float[] g, int n) {
        try (Tensor tp = be.upload(p, n); Tensor tg = be.upload(g, n); Tensor m = be.zeros(DType.FP32, n);
             Tensor v = be.zeros(DType.FP32, n); Tensor h = be.empty(DType.BF16, n)) {
            for (int step = 1; step <= 3; step++) be.adamW(tp, tg, m, v, new AdamWStep(1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, step), h);
            short[] bits = h.toBf16Bits();
            float[] hf = new float[n];
            for (int i = 0; i < n; i++) hf[i] = Bf16.toFloat(bits[i]);
            return new float[][] {tp.toFloats(), m.toFloats(), v.toFloats(), hf};
        }
    }

    private static float[] embeddingBackward(Backend be, float[] init, float[] dy, int[] ids, int vocab, int d) {
        try (Tensor t = be.upload(init, vocab, d); Tensor g = be.upload(dy, ids.length, d); Tensor i = be.upload(ids, ids.length)) {
            be.embeddingBackward(t, g, i);
            return t.toFloats();
        }
    }

    /** The reductions have a fixed order: the same inputs give the same bits on every run. */
    @Test
    void reductionsRepeatBitwise() {
        CudaBackend be = cuda();
        SplittableRandom r = new SplittableRandom(3);
        int n = 1000, d = 4096;
        float[] x = randn(r, n * d, 1), w = randn(r, d, 1), dy = randn(r, n * d, 1);
        try (Tensor tx = be.upload(x, n, d); Tensor tw = be.upload(w, d); Tensor tdy = be.upload(dy, n, d);
             Tensor out = be.empty(DType.FP32, n, d); Tensor rstd = be.empty(DType.FP32, n); Tensor dx = be.empty(DType.FP32, n, d);
             Tensor dw = be.zeros(DType.FP32, d); Tensor ss = be.zeros(DType.FP32, 1)) {
            float[][] first = null;
            for (int run = 0; run < 3; run++) {
                be.fill(dw, 0);
                be.fill(ss, 0);
                be.rmsNorm(out, rstd, tx, tw, 1e-5f);
                be.rmsNormBackward(dx, dw, tdy, tx, tw, rstd);
                be.sumSquares(ss, tx);
                float[][] now = {out.toFloats(), rstd.toFloats(), dx.toFloats(), dw.toFloats(), ss.toFloats()};
                if (first == null) first = now;
                else for (int i = 0; i < now.length; i++) assertArrayEquals(first[i], now[i], "output " + i + " on run " + run);
            }
        }
    }

    /**
     * A graph bakes in the scratch address of its capture: when a later eager op outgrows the scratch, the old buffer
     * must stay allocated until the graph is closed, or the replay writes into freed memory (memcheck reports it; the
     * decode graphs meet this when a prefill's attention grows the scratch between decode steps).
     */
    @Test
    void aGraphReplaysCorrectlyAfterTheScratchHasGrown() {
        cuda(); // skips without a GPU; the test itself needs a fresh backend (its scratch starts empty)
        SplittableRandom r = new SplittableRandom(5);
        int n = 64, d = 256, bigN = 4096, bigD = 4096; // ws: 2 x 256 doubles, then 128 x 4096 doubles (> the 1 MiB first scratch)
        try (CudaBackend be = new CudaBackend(0);
             Tensor x = be.upload(randn(r, n * d, 1), n, d); Tensor w = be.upload(randn(r, d, 1), d);
             Tensor dy = be.upload(randn(r, n * d, 1), n, d); Tensor out = be.empty(DType.FP32, n, d);
             Tensor rstd = be.empty(DType.FP32, n); Tensor dx = be.empty(DType.FP32, n, d); Tensor dw = be.empty(DType.FP32, d)) {
            be.rmsNorm(out, rstd, x, w, 1e-5f);
            Runnable body = () -> {
                be.fill(dw, 0);
                be.rmsNormBackward(dx, dw, dy, x, w, rstd);
            };
            body.run(); // eager: makes the scratch the capture will use
            float[] wantDx = dx.toFloats(), wantDw = dw.toFloats();
            try (Backend.Replay g = be.capture(body)) {
                try (Tensor bx = be.zeros(DType.FP32, bigN, bigD); Tensor bw = be.zeros(DType.FP32, bigD);
                     Tensor br = be.zeros(DType.FP32, bigN); Tensor bdx = be.empty(DType.FP32, bigN, bigD);
                     Tensor bdw = be.zeros(DType.FP32, bigD)) {
                    be.rmsNormBackward(bdx, bdw, bx, bx, bw, br); // grows the scratch while the graph is live
                }
                assertTrue(be.retiredScratchBytes() > 0, "the outgrown scratch is kept for the live graph");
                be.fill(dx, Float.NaN);
                be.fill(dw, Float.NaN);
                g.run();
                assertArrayEquals(wantDx, dx.toFloats(), "dx from the replay");
                assertArrayEquals(wantDw, dw.toFloats(), "dWeight from the replay");
            }
            assertEquals(0, be.retiredScratchBytes(), "freed with the last graph");
        }
    }

    /**
     * The fused LM head's own buffers (logits chunk, per-token state) are baked into a graph as the scratch is: an eager
     * call that outgrows them while a graph is live keeps the old ones until the graph is closed (they were freed at
     * once, and the replay's kernels wrote into freed memory).
     */
    @Test
    void aGraphReplaysCorrectlyAfterTheLmHeadBuffersHaveGrown() {
        cuda(); // skips without a GPU; a fresh backend (no LM-head buffers yet)
        SplittableRandom r = new SplittableRandom(6);
        int n = 8, bigN = 1024, d = 64, v = 3000;
        int[] tgt = r.ints(n, 0, v).toArray(), bigTgt = r.ints(bigN, 0, v).toArray();
        try (CudaBackend be = new CudaBackend(0);
             Tensor h = be.upload(randn(r, n * d, 1), n, d); Tensor w = be.upload(randn(r, v * d, 0.1), v, d);
             Tensor t = be.upload(tgt, n); Tensor out = be.empty(DType.FP32, n);
             Tensor bh = be.upload(randn(r, bigN * d, 1), bigN, d); Tensor bt = be.upload(bigTgt, bigN); Tensor bout = be.empty(DType.FP32, bigN)) {
            Runnable body = () -> be.tokenLogprobs(out, h, w, t, 1f);
            body.run(); // eager: makes the buffers the capture records
            float[] want = out.toFloats();
            long small = be.lmHeadBufferBytes();
            try (Backend.Replay g = be.capture(body)) {
                be.tokenLogprobs(bout, bh, w, bt, 1f); // grows the LM head's buffers while the graph is live
                assertTrue(be.lmHeadBufferBytes() > small, "the buffers grew: " + small + " -> " + be.lmHeadBufferBytes());
                assertTrue(be.retiredScratchBytes() > 0, "the outgrown buffers are kept for the live graph");
                be.fill(out, Float.NaN);
                g.run();
                assertArrayEquals(want, out.toFloats(), "log-probs from the replay");
            }
            assertEquals(0, be.retiredScratchBytes(), "freed with the last graph");
            be.releaseLmHeadBuffers();
            assertEquals(0, be.lmHeadBufferBytes());
        }
    }

    /** A shared rank-2 A against batched B (stride 0 for A), the folded shared-B path, and plans cached per shape. */
    @Test
    void gemmPathsAndPlanCache() {
        CudaBackend be = cuda();
        TestBackends.assumeOp(be, Ops.MATMUL);
        SplittableRandom r = new SplittableRandom(4);
        int batch = 3, m = 33, n = 17, k = 65;
        float[] a = randn(r, m * k, 1), b = randn(r, batch * k * n, 1);
        float[] want, got;
        try (Tensor ta = cpu.upload(a, m, k); Tensor tb = cpu.upload(b, batch, k, n); Tensor c = cpu.empty(DType.FP32, batch, m, n)) {
            cpu.matmul(c, ta, false, tb, false, 1f, 0f);
            want = c.toFloats();
        }
        int before = be.gemmPlanCounts()[0];
        try (Tensor ta = be.upload(a, m, k); Tensor tb = be.upload(b, batch, k, n); Tensor c = be.empty(DType.FP32, batch, m, n)) {
            be.matmul(c, ta, false, tb, false, 1f, 0f);
            be.matmul(c, ta, false, tb, false, 1f, 0f);
            got = c.toFloats();
        }
        assertEquals(before + 1, be.gemmPlanCounts()[0], "the second call reuses the first call's plan");
        for (int i = 0; i < want.length; i++) assertEquals(want[i], got[i], 2e-6 * Math.sqrt(k) + 1e-5 * Math.abs(want[i]), "element " + i);
    }

    /**
     * The op profile: one entry per op name in order of first call, with its calls counted and a positive device
     * time; the events' pool is reused past PROFILE_EVENTS calls (a flush in the middle); ops inside a captured
     * graph are not seen; a second start while running, or a stop without a start, is an error.
     */
    @Test
    void opProfileCountsEveryOpCall() {
        CudaBackend be = cuda();
        try (Tensor x = be.empty(DType.FP32, 1 << 20); Tensor a = be.empty(DType.FP32, 64, 64); Tensor c = be.empty(DType.FP32, 64, 64)) {
            be.fill(a, 1);
            be.synchronize();
            be.startOpProfile();
            assertThrows(IllegalStateException.class, be::startOpProfile);
            int fills = CudaBackend.PROFILE_EVENTS + 7;
            for (int i = 0; i < fills; i++) be.fill(x, i);
            be.matmul(c, a, false, a, true, 1f, 0f);
            be.scale(x, 0.5f);
            try (Backend.Replay g = be.capture(() -> be.scale(x, 2f))) {
                if (g != null) g.run();
            }
            java.util.LinkedHashMap<String, double[]> ops = be.stopOpProfile();
            assertEquals(java.util.List.of(Ops.FILL, Ops.MATMUL, Ops.SCALE), java.util.List.copyOf(ops.keySet()));
            assertEquals(fills, ops.get(Ops.FILL)[1]);
            assertEquals(1, ops.get(Ops.MATMUL)[1]);
            assertEquals(1, ops.get(Ops.SCALE)[1], "the captured scale is not an op call of its own");
            for (double[] v : ops.values()) assertTrue(v[0] > 0, "device time of every op");
            assertThrows(IllegalStateException.class, be::stopOpProfile);
            be.fill(x, 0); // no profile running: nothing recorded, nothing fails
        }
    }
}
