package org.grpo4j.internal.backend;

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
            String op = Ops.SWIGLU_BACKWARD;
            // (dGate, dUp, dOut, gate, up) of 12 elements (any shapes): one argument's count off at a time
            assertBadCall(op, () -> be.swigluBackward(zeros(12), zeros(12), zeros(12), zeros(4, 3), zeros(11)), "gate [4, 3] and up [11]");
            assertBadCall(op, () -> be.swigluBackward(zeros(12), zeros(12), zeros(13), zeros(12), zeros(12)), "dOut [13] and gate [12]");
            assertBadCall(op, () -> be.swigluBackward(zeros(4, 2), zeros(12), zeros(12), zeros(12), zeros(12)), "dGate [4, 2] and gate [12]");
            assertBadCall(op, () -> be.swigluBackward(zeros(12), zeros(2, 7), zeros(12), zeros(12), zeros(12)), "dUp [2, 7] and gate [12]");
        }

        // ---- bf16: the fp32 tolerances above, widened for bf16 outputs (Conformance.bf16Tolerance) ----

        @Test
        void addBf16InPlaceToo() {
            be(Ops.ADD);
            SplittableRandom r = new SplittableRandom(11);
            for (int n : SIZES) {
                double[] a = randnBf16(r, n, 2), b = randnBf16(r, n, 2), want = new double[n];
                for (int i = 0; i < n; i++) want[i] = a[i] + b[i];
                mixed("add n=" + n).bf16("a", a, n).bf16("b", b, n).out(DType.BF16, "out", n)
                        .run((be, t) -> be.add(t.get("out"), t.get("a"), t.get("b"))).expect("out", want, 1e-6, 1e-6);
                mixed("add in place n=" + n).bf16("a", a, n).bf16("b", b, n)
                        .run((be, t) -> be.add(t.get("a"), t.get("a"), t.get("b"))).expect("a", want, 1e-6, 1e-6);
            }
        }

        @Test
        void axpyAccumulatesBf16IntoFp32() {
            be(Ops.AXPY);
            SplittableRandom r = new SplittableRandom(12);
            for (int n : SIZES) {
                double[] y = randn(r, n, 1), x = randnBf16(r, n, 1), want = new double[n];
                for (int i = 0; i < n; i++) want[i] = y[i] + (double) -0.3f * x[i];
                mixed("axpy n=" + n).fp32("y", y, n).bf16("x", x, n)
                        .run((be, t) -> be.axpy(t.get("y"), -0.3f, t.get("x"))).expect("y", want, 1e-6, 1e-6);
            }
        }

        @Test
        void swigluBf16() {
            be(Ops.SWIGLU);
            SplittableRandom r = new SplittableRandom(13);
            for (int n : SIZES) {
                double[] g = randnBf16(r, n, 3), u = randnBf16(r, n, 1), want = new double[n];
                for (int i = 0; i < n; i++) want[i] = Ref.silu(g[i]) * u[i];
                mixed("swiglu n=" + n).bf16("gate", g, n).bf16("up", u, n).out(DType.BF16, "out", n)
                        .run((be, t) -> be.swiglu(t.get("out"), t.get("gate"), t.get("up"))).expect("out", want, 1e-6, 1e-5);
            }
        }

        @Test
        void swigluBackwardBf16MatchesFiniteDifferences() {
            be(Ops.SWIGLU_BACKWARD);
            SplittableRandom r = new SplittableRandom(14);
            for (int n : new int[] {1, 13, 257}) {
                double[] g = randnBf16(r, n, 3), u = randnBf16(r, n, 1), dy = randnBf16(r, n, 1);
                Mixed m = mixed("swigluBackward n=" + n).bf16("gate", g, n).bf16("up", u, n).bf16("dOut", dy, n)
                        .out(DType.BF16, "dGate", n).out(DType.BF16, "dUp", n)
                        .run((be, t) -> be.swigluBackward(t.get("dGate"), t.get("dUp"), t.get("dOut"), t.get("gate"), t.get("up")));
                m.expect("dGate", fdGrad(x -> { double s = 0; for (int i = 0; i < n; i++) s += dy[i] * Ref.silu(x[i]) * u[i]; return s; }, g, null), 1e-5, 1e-4);
                m.expect("dUp", fdGrad(x -> { double s = 0; for (int i = 0; i < n; i++) s += dy[i] * Ref.silu(g[i]) * x[i]; return s; }, u, null), 1e-5, 1e-4);
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
