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
