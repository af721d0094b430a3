package org.grpo4j.internal.backend;

import java.util.SplittableRandom;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/** rmsNorm: atol 1e-6, rtol 1e-5 vs float64. Backward vs FD: atol 1e-5, rtol 1e-4. */
class RmsNormConformanceTest {
    // (2050 rows: enough for the CUDA forward to take its rows in groups, 4 a block for bf16 x and 2 for fp32)
    static final int[][] SHAPES = {{1, 1}, {3, 5}, {17, 64}, {33, 4099}, {2050, 64}};

    abstract static class Suite extends Conformance {
        @Test
        void forward() {
            Backend be = be(Ops.RMS_NORM);
            SplittableRandom r = new SplittableRandom(1);
            for (int[] s : SHAPES) {
                int n = s[0], d = s[1];
                double[] x = randn(r, n * d, 2), w = randn(r, d, 1);
                double[] ref = Ref.rmsNorm(x, w, n, d, 1e-5);
                Tensor out = poisoned(n, d), rstd = poisoned(n);
                be.rmsNorm(out, rstd, up(x, n, d), up(w, d), 1e-5f);
                assertClose("rmsNorm out " + n + "x" + d, java.util.Arrays.copyOf(ref, n * d), out.toFloats(), 1e-6, 1e-5);
                assertClose("rmsNorm rstd " + n + "x" + d, java.util.Arrays.copyOfRange(ref, n * d, n * d + n), rstd.toFloats(), 1e-6, 1e-5);
            }
        }

        @Test
        void backwardMatchesFiniteDifferences() {
            Backend be = be(Ops.RMS_NORM_BACKWARD);
            SplittableRandom r = new SplittableRandom(2);
            for (int[] s : new int[][] {{1, 1}, {3, 5}, {9, 31}}) {
                int n = s[0], d = s[1];
                double[] x = randn(r, n * d, 2), w = randn(r, d, 1), dy = randn(r, n * d, 1), w0 = randn(r, d, 1);
                Tensor tx = up(x, n, d), tw = up(w, d), out = zeros(n, d), rstd = zeros(n);
                be.rmsNorm(out, rstd, tx, tw, 1e-5f);
                Tensor dx = poisoned(n, d), dw = up(w0, d);
                be.rmsNormBackward(dx, dw, up(dy, n, d), tx, tw, rstd);
                double[] fdx = fdGrad(xx -> dot(dy, java.util.Arrays.copyOf(Ref.rmsNorm(xx, w, n, d, 1e-5), n * d)), x, null);
                double[] fdw = fdGrad(ww -> dot(dy, java.util.Arrays.copyOf(Ref.rmsNorm(x, ww, n, d, 1e-5), n * d)), w, null);
                for (int j = 0; j < d; j++) fdw[j] += w0[j];
                assertGradClose("rmsNorm dx " + n + "x" + d, fdx, dx.toFloats(), null, 1e-5, 1e-4);
                assertGradClose("rmsNorm dWeight (accumulated) " + n + "x" + d, fdw, dw.toFloats(), null, 1e-5, 1e-4);
            }
        }

        @Test
        void forwardBf16() {
            be(Ops.RMS_NORM);
            SplittableRandom r = new SplittableRandom(3);
            for (int[] s : SHAPES) for (DType wd : new DType[] {DType.FP32, DType.BF16}) { // norm weights: fp32 or bf16
                int n = s[0], d = s[1];
                double[] x = randnBf16(r, n * d, 2), w = randnBf16(r, d, 1);
                double[] ref = Ref.rmsNorm(x, w, n, d, 1e-5);
                Mixed m = mixed("rmsNorm " + n + "x" + d + " weight " + wd).bf16("x", x, n, d).in(wd, "weight", w, d)
                        .out(DType.BF16, "out", n, d).out(DType.FP32, "rstd", n)
                        .run((be, t) -> be.rmsNorm(t.get("out"), t.get("rstd"), t.get("x"), t.get("weight"), 1e-5f));
                m.expect("out", java.util.Arrays.copyOf(ref, n * d), 1e-6, 1e-5);
                m.expect("rstd", java.util.Arrays.copyOfRange(ref, n * d, n * d + n), 1e-6, 1e-5);
            }
        }

        @Test
        void backwardBf16MatchesFiniteDifferencesInPlaceToo() {
            be(Ops.RMS_NORM_BACKWARD);
            SplittableRandom r = new SplittableRandom(4);
            for (int[] s : new int[][] {{1, 1}, {3, 5}, {9, 31}}) {
                int n = s[0], d = s[1];
                double[] x = randnBf16(r, n * d, 2), w = randnBf16(r, d, 1), dy = randnBf16(r, n * d, 1), w0 = randn(r, d, 1);
                DType wd = d == 5 ? DType.FP32 : DType.BF16; // norm weights: fp32 or bf16
                double[] fdx = fdGrad(xx -> dot(dy, java.util.Arrays.copyOf(Ref.rmsNorm(xx, w, n, d, 1e-5), n * d)), x, null);
                double[] fdw = fdGrad(ww -> dot(dy, java.util.Arrays.copyOf(Ref.rmsNorm(x, ww, n, d, 1e-5), n * d)), w, null);
                for (int j = 0; j < d; j++) fdw[j] += w0[j];
                for (boolean inPlace : new boolean[] {false, true}) { // in place: dx is dOut's memory
                    Mixed m = mixed("rmsNormBackward " + n + "x" + d + (inPlace ? " in place" : "")).bf16("x", x, n, d)
                            .in(wd, "weight", w, d).bf16("dOut", dy, n, d).fp32("dWeight", w0, d)
                            .out(DType.BF16, "y", n, d).out(DType.FP32, "rstd", n).out(DType.BF16, "dx", n, d)
                            .run((be, t) -> be.rmsNorm(t.get("y"), t.get("rstd"), t.get("x"), t.get("weight"), 1e-5f),
                                    (be, t) -> be.rmsNormBackward(t.get(inPlace ? "dOut" : "dx"), t.get("dWeight"), t.get("dOut"), t.get("x"),
                                            t.get("weight"), t.get("rstd")));
                    m.expect(inPlace ? "dOut" : "dx", fdx, 1e-5, 1e-4);
                    m.expect("dWeight", fdw, 1e-5, 1e-4);
                }
            }
        }

        /** A backward over no rows leaves dWeight bit for bit, -0 entries too (the CPU added + 0: -0 became +0). */
        @Test
        void backwardOfNoRowsLeavesDWeightAsItWas() {
            Backend be = be(Ops.RMS_NORM_BACKWARD);
            double[] w0 = {-0.0, 1.5, -2.0, 0.0};
            Tensor dWeight = up(w0, 4);
            be.rmsNormBackward(zeros(0, 4), dWeight, zeros(0, 4), zeros(0, 4), up(new double[] {1, 1, 1, 1}, 4), zeros(0));
            float[] got = dWeight.toFloats();
            for (int j = 0; j < 4; j++)
                org.junit.jupiter.api.Assertions.assertEquals(Float.floatToRawIntBits((float) w0[j]), Float.floatToRawIntBits(got[j]), "dWeight[" + j + "] = " + got[j]);
        }

        @Test
        void badCalls() {
            Backend be = be(Ops.RMS_NORM);
            assertBadCall(Ops.RMS_NORM, () -> be.rmsNorm(zeros(3, 4), zeros(3), zeros(3, 4), zeros(5), 1e-5f), "weight", "[5]", "[4]");
            assertBadCall(Ops.RMS_NORM, () -> be.rmsNorm(zeros(3, 4), zeros(2), zeros(3, 4), zeros(4), 1e-5f), "rstd", "[2]");
            assertBadCall(Ops.RMS_NORM, () -> be.rmsNorm(zeros(3, 4), zeros(3), zeros(3, 4), zeros(4), 0f), "eps");
            Backend bb = be(Ops.RMS_NORM_BACKWARD);
            String op = Ops.RMS_NORM_BACKWARD;
            // (dx, dWeight, dOut, x, weight, rstd) with x [3, 4]: one argument off at a time
            assertBadCall(op, () -> bb.rmsNormBackward(zeros(3, 5), zeros(4), zeros(3, 4), zeros(3, 4), zeros(4), zeros(3)), "dx has shape [3, 5]", "[3, 4]");
            assertBadCall(op, () -> bb.rmsNormBackward(zeros(3, 4), zeros(5), zeros(3, 4), zeros(3, 4), zeros(4), zeros(3)), "dWeight has shape [5]", "[4]");
            assertBadCall(op, () -> bb.rmsNormBackward(zeros(3, 4), zeros(4), zeros(4, 4), zeros(3, 4), zeros(4), zeros(3)), "dOut has shape [4, 4]", "[3, 4]");
            assertBadCall(op, () -> bb.rmsNormBackward(zeros(3, 4), zeros(4), zeros(3, 4), zeros(3, 4), zeros(5), zeros(3)), "weight has shape [5]", "[4]");
            assertBadCall(op, () -> bb.rmsNormBackward(zeros(3, 4), zeros(4), zeros(3, 4), zeros(3, 4), zeros(4), zeros(2)), "rstd has shape [2]", "[3]");
            assertBadCall(op, () -> bb.rmsNormBackward(zeros(12), zeros(4), zeros(12), zeros(12), zeros(4), zeros(3)), "x [12] has rank 1");
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

        /**
         * Every path of the CUDA backward against the CPU on the same inputs (the same rstd too): 1, 2 and 4 columns
         * per thread, the wide-row path (D > 4096), several 32-row dWeight chunks with a partial last one, fp32 and
         * bf16, dx in dOut's memory. The finite-difference checks above reach only the 1-column path. Both compute dx
         * and the dWeight sums in float64 and round once; only the order of the float64 sums differs.
         */
        @Test
        void backwardMatchesTheCpuOnEveryKernelPath() {
            Backend be = be(Ops.RMS_NORM_BACKWARD), cpu = TestBackends.cpu();
            SplittableRandom r = new SplittableRandom(5);
            for (int[] s : new int[][] {{40, 64}, {70, 100}, {40, 1000}, {33, 4096}, {33, 4099}, {65, 5000}}) {
                int n = s[0], d = s[1];
                double[] x = randnBf16(r, n * d, 2), w = randnBf16(r, d, 1), dy = randnBf16(r, n * d, 1), w0 = randn(r, d, 1);
                float[] rstd;
                try (Tensor tx = cpu.upload(f32(x), n, d); Tensor tw = cpu.upload(f32(w), d); Tensor y = cpu.empty(DType.FP32, n, d);
                     Tensor rs = cpu.empty(DType.FP32, n)) {
                    cpu.rmsNorm(y, rs, tx, tw, 1e-5f);
                    rstd = rs.toFloats();
                }
                for (DType dt : new DType[] {DType.FP32, DType.BF16})
                    for (boolean inPlace : new boolean[] {false, true}) {
                        String what = "rmsNormBackward " + n + "x" + d + " " + dt.label() + (inPlace ? " in place" : "");
                        float[][] want = backward(cpu, dt, inPlace, x, w, dy, w0, rstd, n, d);
                        float[][] got = backward(be, dt, inPlace, x, w, dy, w0, rstd, n, d);
                        assertCloseToCpu(what + " dx", want[0], got[0], dt == DType.BF16, 1e-6, 1e-6);
                        assertCloseToCpu(what + " dWeight", want[1], got[1], false, 1e-6, 1e-6);
                    }
            }
        }

        private static float[][] backward(Backend b, DType dt, boolean inPlace, double[] x, double[] w, double[] dy, double[] w0,
                                          float[] rstd, int n, int d) {
            try (Tensor tx = as(b, dt, x, n, d); Tensor tw = as(b, dt, w, d); Tensor tdy = as(b, dt, dy, n, d);
                 Tensor dw = b.upload(f32(w0), d); Tensor rs = b.upload(rstd, n); Tensor dx = b.empty(dt, n, d);
                 Tensor wide = b.empty(DType.FP32, n, d)) {
                Tensor out = inPlace ? tdy : dx;
                b.fill(dx, Float.NaN);
                b.rmsNormBackward(out, dw, tdy, tx, tw, rs);
                b.cast(wide, out);
                return new float[][] {wide.toFloats(), dw.toFloats()};
            }
        }

        /** values (bf16 values already) as a tensor of dtype dt. */
        private static Tensor as(Backend b, DType dt, double[] values, int... shape) {
            Tensor f = b.upload(f32(values), shape);
            if (dt == DType.FP32) return f;
            try (f) {
                Tensor h = b.empty(DType.BF16, shape);
                b.cast(h, f);
                return h;
            }
        }
    }
}
