package org.grpo4j.internal.backend;

import static org.junit.jupiter.api.Assertions.*;

import java.util.SplittableRandom;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/** fill, scale, copy, cast and the tensor lifecycle, on every backend (CUDA under the gpu tag). */
class BasicOpsTest {

    abstract static class Suite {
        abstract Backend be();

        /** A new backend of the suite's kind, for tests that close it. */
        abstract Backend fresh();

        static float[] randoms(int n, long seed) {
            SplittableRandom r = new SplittableRandom(seed);
            float[] a = new float[n];
            for (int i = 0; i < n; i++) a[i] = (float) (r.nextGaussian() * 3);
            return a;
        }

        @Test
        void fillWritesEveryElement() {
            Backend be = be();
            for (int n : new int[] {1, 7, 1000, 65537}) {
                try (Tensor t = be.upload(randoms(n, n), n)) {
                    be.fill(t, 2.5);
                    for (float v : t.toFloats()) assertEquals(2.5f, v);
                }
                try (Tensor t = be.upload(new int[n], n)) {
                    be.fill(t, -3);
                    for (int v : t.toInts()) assertEquals(-3, v);
                }
                try (Tensor t = be.empty(DType.BF16, n)) {
                    be.fill(t, 1.0 / 3);
                    for (short v : t.toBf16Bits()) assertEquals(Bf16.fromFloat(1f / 3), v);
                }
            }
        }

        @Test
        void scaleIsElementwiseProduct() {
            Backend be = be();
            float[] a = randoms(1237, 1);
            try (Tensor t = be.upload(a, 1237)) {
                be.scale(t, -0.37f);
                float[] got = t.toFloats();
                for (int i = 0; i < a.length; i++) assertEquals(-0.37f * a[i], got[i]);
            }
        }

        @Test
        void castRoundsToNearestEvenAndBack() {
            Backend be = be();
            float[] a = randoms(3001, 2);
            a[0] = Float.NaN;
            a[1] = Float.POSITIVE_INFINITY;
            a[2] = 1f + (float) Math.pow(2, -8);
            try (Tensor f = be.upload(a, 3001); Tensor h = be.empty(DType.BF16, 3001); Tensor back = be.empty(DType.FP32, 3001)) {
                be.cast(h, f);
                short[] bits = h.toBf16Bits();
                for (int i = 0; i < a.length; i++) assertEquals(Bf16.fromFloat(a[i]), bits[i], "element " + i);
                be.cast(back, h);
                float[] b = back.toFloats();
                for (int i = 0; i < a.length; i++) assertEquals(Bf16.toFloat(bits[i]), b[i], 0f, "element " + i);
            }
        }

        @Test
        void copyAndViews() {
            Backend be = be();
            float[] a = randoms(60, 3);
            try (Tensor t = be.upload(a, 6, 10); Tensor u = be.zeros(DType.FP32, 3, 10)) {
                Tensor rows = t.rows(2, 3);
                be.copy(u, rows);
                float[] got = u.toFloats();
                for (int i = 0; i < 30; i++) assertEquals(a[20 + i], got[i]);
                // writing through a view changes only that range
                be.fill(t.view(5, 2), 9);
                float[] all = t.toFloats();
                for (int i = 0; i < 60; i++) assertEquals(i == 5 || i == 6 ? 9f : a[i], all[i]);
            }
        }

        @Test
        void lifecycleAndAccounting() {
            Backend be = be();
            long before = be.liveBytes();
            Tensor t = be.empty(DType.FP32, 100);
            assertEquals(before + 400, be.liveBytes());
            Tensor v = t.view(10, 5);
            v.close(); // views own nothing
            assertEquals(before + 400, be.liveBytes());
            t.close();
            t.close(); // idempotent
            assertEquals(before, be.liveBytes());
            assertThrows(IllegalStateException.class, v::toFloats);
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> be.fill(v, 1));
            assertTrue(e.getMessage().contains("already freed"), e.getMessage());
        }

        @Test
        void badCallsNameTheOpAndShapes() {
            Backend be = be();
            try (Tensor a = be.empty(DType.FP32, 4, 5); Tensor b = be.empty(DType.FP32, 3, 5);
                 Tensor i = be.empty(DType.INT32, 20); Tensor h = be.empty(DType.BF16, 20)) {
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> be.copy(a, b));
                assertTrue(e.getMessage().startsWith("copy: ") && e.getMessage().contains("[4, 5]") && e.getMessage().contains("[3, 5]"), e.getMessage());
                e = assertThrows(IllegalArgumentException.class, () -> be.copy(a, i));
                assertTrue(e.getMessage().contains("dtype"), e.getMessage());
                e = assertThrows(IllegalArgumentException.class, () -> be.cast(i, a));
                assertTrue(e.getMessage().startsWith("cast: dst has dtype int32"), e.getMessage());
                e = assertThrows(IllegalArgumentException.class, () -> be.scale(i, 2f));
                assertTrue(e.getMessage().startsWith("scale: "), e.getMessage());
                e = assertThrows(IllegalArgumentException.class, () -> be.fill(i, 0.5));
                assertTrue(e.getMessage().contains("0.5"), e.getMessage());
                e = assertThrows(IllegalArgumentException.class, () -> a.view(15, 2, 3));
                assertTrue(e.getMessage().contains("does not fit"), e.getMessage());
                e = assertThrows(IllegalArgumentException.class, () -> be.upload(new float[5], 2, 3));
                assertTrue(e.getMessage().contains("5 elements"), e.getMessage());
                assertThrows(IllegalArgumentException.class, () -> be.downloadInts(h));
            }
        }

        /**
         * Offsets and sizes whose sums or byte counts would wrap a long are refused: a view at Long.MAX_VALUE - 4 passed
         * an "offset + n > numel" check (the sum wrapped negative) and pointed before its storage, and a shape of
         * 2^31 x 2^31 fp32 elements allocated 1 byte (the byte count wrapped) that a fill then wrote far past.
         */
        @Test
        void overflowingViewsAndSizesAreRefused() {
            Backend be = be();
            try (Tensor t = be.zeros(DType.FP32, 16); Tensor one = be.zeros(DType.FP32, 1)) {
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> t.view(Long.MAX_VALUE - 4, 10));
                assertTrue(e.getMessage().contains("does not fit"), e.getMessage());
                e = assertThrows(IllegalArgumentException.class, () -> one.view(Long.MAX_VALUE - 999_999, 2_000_000));
                assertTrue(e.getMessage().contains("does not fit"), e.getMessage());
                e = assertThrows(IllegalArgumentException.class, () -> t.view(0, 17));
                assertTrue(e.getMessage().contains("does not fit"), e.getMessage());
                assertEquals(16, t.view(0, 16).numel());
                assertEquals(1, t.view(15, 1).numel());
            }
            long live = be.liveBytes();
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> be.empty(DType.FP32, Integer.MAX_VALUE, Integer.MAX_VALUE, 2));
            assertTrue(e.getMessage().startsWith("empty: [2147483647, 2147483647, 2]"), e.getMessage());
            assertEquals(live, be.liveBytes(), "nothing allocated or counted");
        }

        /** A closed backend refuses every op on tensors that outlived it (its stream, handles and buffers are gone). */
        @Test
        void aClosedBackendRefusesItsOps() {
            Backend be = fresh();
            Tensor a = be.upload(randoms(8, 1), 8), b = be.zeros(DType.FP32, 8), out = be.empty(DType.FP32, 8);
            Tensor bf = be.empty(DType.BF16, 8);
            be.close();
            for (Runnable op : new Runnable[] {() -> be.fill(a, 1), () -> be.add(out, a, b), () -> be.copy(out, a), () -> be.cast(bf, a),
                    () -> be.scale(a, 2f)}) {
                IllegalStateException e = assertThrows(IllegalStateException.class, op::run);
                assertTrue(e.getMessage().contains("is closed"), e.getMessage());
            }
            assertThrows(IllegalStateException.class, () -> be.empty(DType.FP32, 4));
            for (Tensor t : new Tensor[] {a, b, out, bf}) t.close(); // (after the backend: still freed)
        }

        @Test
        void tensorsFromAnotherBackendAreRejected() {
            Backend be = be();
            try (CpuBackend other = new CpuBackend(1); Tensor foreign = other.empty(DType.FP32, 3); Tensor mine = be.empty(DType.FP32, 3)) {
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> be.copy(mine, foreign));
                assertTrue(e.getMessage().contains("lives on"), e.getMessage());
            }
        }
    }

    @Nested
    class Cpu extends Suite {
        @Override
        Backend be() { return TestBackends.cpu(); }

        @Override
        Backend fresh() { return new CpuBackend(); }
    }

    @Nested
    @Tag("gpu")
    class Cuda extends Suite {
        @Override
        Backend be() { return TestBackends.cuda(); }

        @Override
        Backend fresh() {
            TestBackends.cuda(); // skips without a GPU
            return new CudaBackend(0);
        }

        @Test
        void eventsTimeWork() {
            CudaBackend be = TestBackends.cuda();
            try (Tensor t = be.empty(DType.FP32, 1 << 24); CudaBackend.Event a = be.newEvent(); CudaBackend.Event b = be.newEvent()) {
                a.record();
                be.fill(t, 1);
                b.record();
                b.synchronize();
                assertTrue(b.elapsedSince(a) >= 0);
            }
        }

        @Test
        void hugeAllocationFailsWithACudaError() {
            CudaBackend be = TestBackends.cuda();
            CudaException e = assertThrows(CudaException.class, () -> be.empty(DType.FP32, 1 << 30, 1 << 10));
            assertTrue(e.getMessage().contains("cudaMalloc"), e.getMessage());
        }
    }
}
