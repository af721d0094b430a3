package org.grpo4j.internal.backend;

import static org.junit.jupiter.api.Assertions.*;

import java.util.SplittableRandom;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * rope with Llama 3.1 scaling. The angle is computed in fp32 (as HF does), so the tolerance grows with the position:
 * atol 2e-7 * (1 + max position) + 1e-6, rtol 1e-5. Backward vs FD: atol 1e-5, rtol 1e-4.
 */
class RopeConformanceTest {
    static final Rope LLAMA31 = new Rope(128, 500000, new Rope.Llama3Scaling(8, 1, 4, 8192));

    @Test
    void llama3InverseFrequenciesFollowTheHfFormula() {
        float[] got = LLAMA31.invFreq();
        double[] want = Ref.llama3InvFreq(128, 500000, 8, 1, 4, 8192);
        assertClose(want, got);
        // all three regimes are present for the real Llama 3.1 parameters
        double low = 8192.0 / 1, high = 8192.0 / 4;
        boolean kept = false, divided = false, smoothed = false;
        for (int i = 0; i < 64; i++) {
            double base = Math.pow(500000, -(2.0 * i) / 128), wl = 2 * Math.PI / base;
            kept |= wl < high;
            divided |= wl > low;
            smoothed |= wl >= high && wl <= low;
        }
        assertTrue(kept && divided && smoothed);
        float[] plain = new Rope(64, 10000, null).invFreq();
        for (int i = 0; i < 32; i++) assertEquals(Math.pow(10000, -(2.0 * i) / 64), plain[i], 1e-6 * plain[i]);
    }

    private static void assertClose(double[] want, float[] got) {
        Conformance.assertClose("invFreq", want, got, 0, 1e-6);
    }

    abstract static class Suite extends Conformance {
        @Test
        void forwardAtPositionsUpTo8k() {
            Backend be = be(Ops.ROPE);
            SplittableRandom r = new SplittableRandom(1);
            for (Object[] c : new Object[][] {{LLAMA31, 5, 3, 8191}, {new Rope(64, 10000, null), 33, 4, 2000}, {new Rope(6, 10000, null), 7, 1, 50}}) {
                Rope rope = (Rope) c[0];
                int n = (int) c[1], h = (int) c[2], maxPos = (int) c[3], d = rope.headDim();
                double[] x = randn(r, n * h * d, 1);
                int[] pos = r.ints(n, 0, maxPos + 1).toArray();
                pos[0] = maxPos;
                double[] want = Ref.rope(x, pos, rope.invFreq(), n, h, d, false);
                Tensor out = poisoned(n, h, d);
                be.rope(out, up(x, n, h, d), up(pos, n), rope);
                assertClose("rope d=" + d, want, out.toFloats(), 2e-7 * (1 + maxPos) + 1e-6, 1e-5);
                Tensor inPlace = up(x, n, h, d);
                be.rope(inPlace, inPlace, up(pos, n), rope);
                assertClose("rope in place d=" + d, want, inPlace.toFloats(), 2e-7 * (1 + maxPos) + 1e-6, 1e-5);
            }
        }

        @Test
        void backwardMatchesFiniteDifferences() {
            Backend be = be(Ops.ROPE_BACKWARD);
            SplittableRandom r = new SplittableRandom(2);
            Rope rope = new Rope(8, 10000, new Rope.Llama3Scaling(8, 1, 4, 64));
            int n = 5, h = 3, d = 8;
            double[] x = randn(r, n * h * d, 1), dy = randn(r, n * h * d, 1);
            int[] pos = {0, 3, 17, 100, 1000};
            Tensor dx = poisoned(n, h, d);
            be.ropeBackward(dx, up(dy, n, h, d), up(pos, n), rope);
            float[] inv = rope.invFreq();
            double[] fd = fdGrad(xx -> dot(dy, Ref.rope(xx, pos, inv, n, h, d, false)), x, null);
            assertGradClose("ropeBackward", fd, dx.toFloats(), null, 1e-5, 1e-4);
        }

        @Test
        void forwardBf16InPlaceToo() {
            be(Ops.ROPE);
            SplittableRandom r = new SplittableRandom(3);
            for (Object[] c : new Object[][] {{LLAMA31, 5, 3, 8191}, {new Rope(6, 10000, null), 7, 1, 50}}) {
                Rope rope = (Rope) c[0];
                int n = (int) c[1], h = (int) c[2], maxPos = (int) c[3], d = rope.headDim();
                double[] x = randnBf16(r, n * h * d, 1);
                int[] pos = r.ints(n, 0, maxPos + 1).toArray();
                pos[0] = maxPos;
                double[] want = Ref.rope(x, pos, rope.invFreq(), n, h, d, false);
                Mixed m = mixed("rope d=" + d).bf16("x", x, n, h, d).bf16("y", x, n, h, d).ints("pos", pos, n).out(DType.BF16, "out", n, h, d)
                        .run((be, t) -> be.rope(t.get("out"), t.get("x"), t.get("pos"), rope),
                                (be, t) -> be.rope(t.get("y"), t.get("y"), t.get("pos"), rope));
                m.expect("out", want, 2e-7 * (1 + maxPos) + 1e-6, 1e-5);
                m.expect("y", want, 2e-7 * (1 + maxPos) + 1e-6, 1e-5);
            }
        }

        @Test
        void backwardBf16MatchesFiniteDifferences() {
            be(Ops.ROPE_BACKWARD);
            SplittableRandom r = new SplittableRandom(4);
            Rope rope = new Rope(8, 10000, new Rope.Llama3Scaling(8, 1, 4, 64));
            int n = 5, h = 3, d = 8;
            double[] x = randnBf16(r, n * h * d, 1), dy = randnBf16(r, n * h * d, 1);
            int[] pos = {0, 3, 17, 100, 1000};
            float[] inv = rope.invFreq();
            mixed("ropeBackward").bf16("dOut", dy, n, h, d).ints("pos", pos, n).out(DType.BF16, "dx", n, h, d)
                    .run((be, t) -> be.ropeBackward(t.get("dx"), t.get("dOut"), t.get("pos"), rope))
                    .expect("dx", fdGrad(xx -> dot(dy, Ref.rope(xx, pos, inv, n, h, d, false)), x, null), 1e-5, 1e-4);
        }

        @Test
        void badCalls() {
            Backend be = be(Ops.ROPE);
            Rope rope = new Rope(8, 10000, null);
            assertBadCall(Ops.ROPE, () -> be.rope(zeros(2, 3, 6), zeros(2, 3, 6), up(new int[] {0, 1}, 2), rope), "head dim 6", "8");
            assertBadCall(Ops.ROPE, () -> be.rope(zeros(2, 3, 8), zeros(2, 3, 8), up(new int[] {0, 1, 2}, 3), rope), "positions", "[3]");
            if (be instanceof CpuBackend)
                assertBadCall(Ops.ROPE, () -> be.rope(zeros(2, 1, 8), zeros(2, 1, 8), up(new int[] {0, -1}, 2), rope), "positions[1] = -1");
            assertThrows(IllegalArgumentException.class, () -> new Rope(7, 10000, null));
            Backend bb = be(Ops.ROPE_BACKWARD);
            String op = Ops.ROPE_BACKWARD;
            // the backward names its own arguments: dx (the output) and dOut (the input)
            assertBadCall(op, () -> bb.ropeBackward(zeros(2, 3, 6), zeros(2, 3, 6), up(new int[] {0, 1}, 2), rope), "dOut [2, 3, 6] has head dim 6", "8");
            assertBadCall(op, () -> bb.ropeBackward(zeros(2, 2, 8), zeros(2, 3, 8), up(new int[] {0, 1}, 2), rope), "dx has shape [2, 2, 8]", "[2, 3, 8]");
            assertBadCall(op, () -> bb.ropeBackward(zeros(2, 3, 8), zeros(2, 3, 8), up(new int[] {0, 1, 2}, 3), rope), "positions has shape [3]", "[2]");
            assertBadCall(op, () -> bb.ropeBackward(zeros(2, 8), zeros(2, 8), up(new int[] {0, 1}, 2), rope), "dOut [2, 8] has rank 2");
            if (bb instanceof CpuBackend)
                assertBadCall(op, () -> bb.ropeBackward(zeros(2, 1, 8), zeros(2, 1, 8), up(new int[] {0, -1}, 2), rope), "positions[1] = -1");
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
