package org.grpo4j.backend;

import static org.junit.jupiter.api.Assertions.*;

import java.util.SplittableRandom;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/** add, axpy, swiglu (+ backward). Tolerances: fp32 rounding of one op, atol 1e-6, rtol 1e-6; FD: atol 1e-5, rtol 1e-4. */
class ElementwiseConformanceTest {
    static final int[] SIZES = {1, 7, 1000, 40_001};

    abstract static class Suite extends Conformance {
        @Test
        void add() {
            Backend be = be(Ops.ADD);
            SplittableRandom r = new SplittableRandom(1);
            for (int n : SIZES) {
                double[] a = randn(r, n, 2), b = randn(r, n, 2), want = new double[n];
                for (int i = 0; i < n; i++) want[i] = a[i] + b[i];
                Tensor out = poisoned(n);
                be.add(out, up(a, n), up(b, n));
                assertClose("add n=" + n, want, out.toFloats(), 1e-6, 1e-6);
                Tensor ta = up(a, n); // in place: out aliases a
                be.add(ta, ta, up(b, n));
                assertClose("add in place n=" + n, want, ta.toFloats(), 1e-6, 1e-6);
            }
            assertBadCall(Ops.ADD, () -> be.add(zeros(3), zeros(3), zeros(4)), "[3]", "[4]");
        }

        @Test
        void axpy() {
            Backend be = be(Ops.AXPY);
            SplittableRandom r = new SplittableRandom(2);
            for (int n : SIZES) {
                double[] y = randn(r, n, 1), x = randn(r, n, 1), want = new double[n];
                for (int i = 0; i < n; i++) want[i] = y[i] + (double) -0.3f * x[i];
                Tensor ty = up(y, n);
                be.axpy(ty, -0.3f, up(x, n));
                assertClose("axpy n=" + n, want, ty.toFloats(), 1e-6, 1e-6);
            }
            assertBadCall(Ops.AXPY, () -> be.axpy(zeros(3), 1f, track(be.empty(DType.INT32, 3))), "int32");
        }

        @Test
        void swiglu() {
            Backend be = be(Ops.SWIGLU);
            SplittableRandom r = new SplittableRandom(3);
            for (int n : SIZES) {
                double[] g = randn(r, n, 3), u = randn(r, n, 1), want = new double[n];
                for (int i = 0; i < n; i++) want[i] = Ref.silu(g[i]) * u[i];
                Tensor out = poisoned(n);
                be.swiglu(out, up(g, n), up(u, n));
                assertClose("swiglu n=" + n, want, out.toFloats(), 1e-6, 1e-5);
            }
            assertBadCall(Ops.SWIGLU, () -> be.swiglu(zeros(4, 3), zeros(12), zeros(11)), "[12]", "[11]");
        }

        @Test
        void swigluBackwardMatchesFiniteDifferences() {
            Backend be = be(Ops.SWIGLU_BACKWARD);
            SplittableRandom r = new SplittableRandom(4);
            for (int n : new int[] {1, 13, 257}) {
                double[] g = randn(r, n, 3), u = randn(r, n, 1), dy = randn(r, n, 1);
                Tensor dg = poisoned(n), du = poisoned(n);
                be.swigluBackward(dg, du, up(dy, n), up(g, n), up(u, n));
                double[] fdG = fdGrad(x -> { double s = 0; for (int i = 0; i < n; i++) s += dy[i] * Ref.silu(x[i]) * u[i]; return s; }, g, null);
                double[] fdU = fdGrad(x -> { double s = 0; for (int i = 0; i < n; i++) s += dy[i] * Ref.silu(g[i]) * x[i]; return s; }, u, null);
                assertGradClose("swiglu dGate n=" + n, fdG, dg.toFloats(), null, 1e-5, 1e-4);
                assertGradClose("swiglu dUp n=" + n, fdU, du.toFloats(), null, 1e-5, 1e-4);
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
