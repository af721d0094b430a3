package org.grpo4j.internal.backend;

import static org.junit.jupiter.api.Assertions.*;

import java.util.SplittableRandom;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * adamW vs a float64 transcription of torch.optim.AdamW over several steps (atol 1e-6, rtol 1e-5; bf16 copy-out exact
 * rounding of the fp32 result) and sumSquares vs float64 (rtol 1e-6, deterministic).
 */
class OptimizerConformanceTest {

    abstract static class Suite extends Conformance {
        @Test
        void adamWFollowsTorchOverSteps() {
            Backend be = be(Ops.ADAMW);
            SplittableRandom r = new SplittableRandom(1);
            for (int n : new int[] {1, 7, 10_007}) {
                double[] p = randn(r, n, 1), m = new double[n], v = new double[n];
                Tensor tp = up(p, n), tm = zeros(n), tv = zeros(n);
                Tensor bf = track(be.empty(DType.BF16, n));
                float lr = 1e-2f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.01f;
                for (int step = 1; step <= 4; step++) {
                    double[] g = randn(r, n, step);
                    be.adamW(tp, up(g, n), tm, tv, new AdamWStep(lr, b1, b2, eps, wd, step), bf);
                    double bc1 = 1 - Math.pow(b1, step), bc2 = 1 - Math.pow(b2, step);
                    for (int i = 0; i < n; i++) {
                        p[i] *= 1 - (double) lr * wd;
                        m[i] = b1 * m[i] + (1 - (double) b1) * g[i];
                        v[i] = b2 * v[i] + (1 - (double) b2) * g[i] * g[i];
                        p[i] -= lr / bc1 * m[i] / (Math.sqrt(v[i]) / Math.sqrt(bc2) + eps);
                    }
                    assertClose("adamW p n=" + n + " step " + step, p, tp.toFloats(), 1e-6, 1e-5);
                    assertClose("adamW m n=" + n + " step " + step, m, tm.toFloats(), 1e-6, 1e-5);
                    assertClose("adamW v n=" + n + " step " + step, v, tv.toFloats(), 1e-6, 1e-5);
                }
                float[] pf = tp.toFloats();
                short[] bits = bf.toBf16Bits();
                for (int i = 0; i < n; i++) assertEquals(Bf16.fromFloat(pf[i]), bits[i]);
            }
            assertThrows(IllegalArgumentException.class, () -> new AdamWStep(1e-3f, 0.9f, 0.999f, 1e-8f, 0f, 0));
            assertBadCall(Ops.ADAMW, () -> be.adamW(zeros(3), zeros(4), zeros(3), zeros(3), new AdamWStep(1, 0.9f, 0.9f, 1e-8f, 0, 1), null), "grad", "[4]");
        }

        /**
         * A step with gradScale (clipping's coefficient folded in) gives the bits of scale() followed by a step with
         * gradScale 1, and leaves the gradient as it was.
         */
        @Test
        void adamWGradScaleIsScaleThenStep() {
            Backend be = be(Ops.ADAMW);
            SplittableRandom r = new SplittableRandom(4);
            for (int n : new int[] {1, 7, 10_007}) {
                double[] p0 = randn(r, n, 1), g = randn(r, n, 3), m0 = randn(r, n, 0.1), v0 = new double[n];
                for (int i = 0; i < n; i++) v0[i] = 0.01 * (1 + r.nextDouble());
                float scale = 0.2371f;
                Tensor pa = up(p0, n), ma = up(m0, n), va = up(v0, n), ga = up(g, n), ba = track(be.empty(DType.BF16, n));
                Tensor pb = up(p0, n), mb = up(m0, n), vb = up(v0, n), gb = up(g, n), bb = track(be.empty(DType.BF16, n));
                be.adamW(pa, ga, ma, va, new AdamWStep(1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f, 3, scale), ba);
                be.scale(gb, scale);
                be.adamW(pb, gb, mb, vb, new AdamWStep(1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f, 3), bb);
                String at = " n=" + n;
                assertArrayEquals(pb.toFloats(), pa.toFloats(), "p" + at);
                assertArrayEquals(mb.toFloats(), ma.toFloats(), "m" + at);
                assertArrayEquals(vb.toFloats(), va.toFloats(), "v" + at);
                assertArrayEquals(bb.toBf16Bits(), ba.toBf16Bits(), "bf16 copy" + at);
                assertArrayEquals(up(g, n).toFloats(), ga.toFloats(), "the gradient is not written" + at);
                assertFalse(java.util.Arrays.equals(pa.toFloats(), up(p0, n).toFloats()), "the step moved p" + at);
            }
            for (float bad : new float[] {-1f, Float.NaN, Float.POSITIVE_INFINITY}) {
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> new AdamWStep(1e-3f, 0.9f, 0.999f, 1e-8f, 0f, 1, bad));
                assertTrue(e.getMessage().contains("grad_scale"), e.getMessage());
            }
        }

        @Test
        void sumSquaresAccumulates() {
            Backend be = be(Ops.SUM_SQUARES);
            SplittableRandom r = new SplittableRandom(2);
            for (int n : new int[] {1, 33, 100_003}) {
                double[] x = randn(r, n, 1);
                double want = 0.25;
                for (double a : x) want += a * a;
                Tensor out = up(new double[] {0.25}, 1);
                Tensor tx = up(x, n);
                be.sumSquares(out, tx);
                assertClose("sumSquares n=" + n, new double[] {want}, out.toFloats(), 0, 1e-6);
                Tensor again = up(new double[] {0.25}, 1);
                be.sumSquares(again, tx);
                assertArrayEquals(out.toFloats(), again.toFloats(), "deterministic");
            }
            assertBadCall(Ops.SUM_SQUARES, () -> be.sumSquares(zeros(2), zeros(3)), "out", "[2]");
        }

        @Test
        void sumSquaresOfBf16IntoFp32() {
            be(Ops.SUM_SQUARES);
            SplittableRandom r = new SplittableRandom(3);
            for (int n : new int[] {1, 33, 100_003}) {
                double[] x = randnBf16(r, n, 1);
                double want = 0.25;
                for (double a : x) want += a * a;
                mixed("sumSquares n=" + n).fp32("out", new double[] {0.25}, 1).bf16("x", x, n)
                        .run((be, t) -> be.sumSquares(t.get("out"), t.get("x"))).expect("out", new double[] {want}, 0, 1e-6);
            }
        }
    }

    @Nested
    class Cpu extends Suite {
        @Override
        protected Backend be() { return TestBackends.cpu(); }
    }

    @Nested
    @Tag("gpu")
    class Cuda extends Suite {
        @Override
        protected Backend be() { return TestBackends.cuda(); }
    }
}
