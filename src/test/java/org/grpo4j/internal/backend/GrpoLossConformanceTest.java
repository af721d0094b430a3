package org.grpo4j.internal.backend;

import static org.junit.jupiter.api.Assertions.*;

import java.util.SplittableRandom;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * The fused GRPO loss against a direct float64 implementation of grpo-reference.md section 4 (Ref.grpo on
 * Ref.tokenLogprobs), for every KL estimator, with ratios on both sides of the clip range and positive and negative
 * advantages. loss: atol 1e-5, rtol 1e-5; logprobs/ratio/kl: atol 2e-5, rtol 1e-4; clipped: exact;
 * gradients vs FD of the float64 loss: atol 2e-5, rtol 2e-4.
 */
class GrpoLossConformanceTest {

    abstract static class Suite extends Conformance {

        record Case(int n, int d, int vocab, double[] h, double[] w, int[] tgt, double[] old, double[] ref, double[] adv, double[] wt) {}

        static Case makeCase(SplittableRandom r, int n, int d, int vocab, float temp) {
            return makeCase(r, n, d, vocab, temp, randn(r, n * d, 1), randn(r, vocab * d, 0.5));
        }

        /** A case on the given hidden states and LM head (bf16 values for the bf16 cases). */
        static Case makeCase(SplittableRandom r, int n, int d, int vocab, float temp, double[] h, double[] w) {
            int[] tgt = r.ints(n, 0, vocab).toArray();
            double[] logp = Ref.tokenLogprobs(h, w, tgt, n, d, vocab, temp);
            double[] old = new double[n], ref = new double[n], adv = new double[n], wt = new double[n];
            double maskSum = 0;
            for (int t = 0; t < n; t++) {
                // ratios spread over [0.5, 1.6], kept at least 0.02 away from the clip bounds 0.8 and 1.2
                double ratio;
                do ratio = 0.5 + 1.1 * r.nextDouble(); while (Math.abs(ratio - 0.8) < 0.02 || Math.abs(ratio - 1.2) < 0.02);
                old[t] = (float) (logp[t] - Math.log(ratio));
                // every 7th token past the KL clamp (d = logp - ref = 45 > 40): its KL is the clamp's, its KL gradient 0
                // (only d > 40: at d < -40 kl3 is e^40, which no finite difference resolves)
                ref[t] = (float) (t % 7 == 3 ? logp[t] - 45 : logp[t] + r.nextGaussian() * 0.5);
                adv[t] = (float) ((t % 2 == 0 ? 1 : -1) * (0.2 + r.nextDouble()));
                wt[t] = t % 5 == 4 ? 0 : 1; // some masked tokens
                maskSum += wt[t];
            }
            for (int t = 0; t < n; t++) wt[t] = (float) (wt[t] / maskSum); // token-masked mean
            return new Case(n, d, vocab, h, w, tgt, old, ref, adv, wt);
        }

        @Test
        void matchesReferenceFormulasForEveryEstimator() {
            Backend be = be(Ops.GRPO_LOSS);
            SplittableRandom r = new SplittableRandom(1);
            for (KlEstimator est : KlEstimator.values())
                for (int[] s : new int[][] {{1, 3, 5}, {23, 16, 300}, {40, 8, 1031}}) {
                    int n = s[0], d = s[1], vocab = s[2];
                    float temp = 0.9f, epsLow = 0.2f, epsHigh = 0.28f, beta = 0.05f;
                    Case c = makeCase(r, n, d, vocab, temp);
                    double[] logp = Ref.tokenLogprobs(c.h, c.w, c.tgt, n, d, vocab, temp);
                    double[] want = Ref.grpo(logp, c.old, c.ref, c.adv, c.wt, epsLow, epsHigh, beta, est);
                    double[] dW0 = randn(r, vocab * d, 1);
                    GrpoLossOutputs out = new GrpoLossOutputs(poisoned(1), poisoned(n), poisoned(n), poisoned(n), poisoned(n),
                            poisoned(n, d), up(dW0, vocab, d));
                    be.grpoLoss(out, up(c.h, n, d), up(c.w, vocab, d), up(c.tgt, n), up(c.wt, n), up(c.adv, n), up(c.old, n),
                            up(c.ref, n), new GrpoLossParams(temp, epsLow, epsHigh, beta, est));
                    String what = est.label() + " n=" + n + " V=" + vocab;
                    assertClose(what + " loss", new double[] {want[0]}, out.loss().toFloats(), 1e-5, 1e-5);
                    assertClose(what + " logprobs", logp, out.logprobs().toFloats(), 2e-5, 1e-4);
                    assertClose(what + " ratio", java.util.Arrays.copyOfRange(want, 1, 1 + n), out.ratio().toFloats(), 2e-5, 1e-4);
                    assertClose(what + " clipped", java.util.Arrays.copyOfRange(want, 1 + n, 1 + 2 * n), out.clipped().toFloats(), 0, 0);
                    assertClose(what + " kl", java.util.Arrays.copyOfRange(want, 1 + 2 * n, 1 + 3 * n), out.kl().toFloats(), 2e-5, 1e-4);

                    int[] ih = someIndices(r, c.h.length, 120);
                    double[] fh = fdGrad(x -> Ref.grpo(Ref.tokenLogprobs(x, c.w, c.tgt, n, d, vocab, temp), c.old, c.ref, c.adv, c.wt,
                            epsLow, epsHigh, beta, est)[0], c.h, ih);
                    int[] iw = someIndices(r, c.w.length, 120);
                    double[] fw = fdGrad(x -> Ref.grpo(Ref.tokenLogprobs(c.h, x, c.tgt, n, d, vocab, temp), c.old, c.ref, c.adv, c.wt,
                            epsLow, epsHigh, beta, est)[0], c.w, iw);
                    for (int i = 0; i < fw.length; i++) fw[i] += dW0[i];
                    assertGradClose(what + " dHidden", fh, out.dHidden().toFloats(), ih, 2e-5, 2e-4);
                    assertGradClose(what + " dLmHead (accumulated)", fw, out.dLmHead().toFloats(), iw, 2e-5, 2e-4);
                }
        }

        /** bf16 hidden, lmHead and dHidden; dLmHead and every per-token tensor fp32. */
        @Test
        void bf16HiddenAndLmHead() {
            be(Ops.GRPO_LOSS);
            SplittableRandom r = new SplittableRandom(2);
            for (KlEstimator est : new KlEstimator[] {KlEstimator.KL3, KlEstimator.KL4})
                for (int[] s : new int[][] {{1, 3, 5}, {23, 16, 300}}) {
                    int n = s[0], d = s[1], vocab = s[2];
                    float temp = 0.9f, epsLow = 0.2f, epsHigh = 0.28f, beta = 0.05f;
                    Case c = makeCase(r, n, d, vocab, temp, randnBf16(r, n * d, 1), randnBf16(r, vocab * d, 0.5));
                    double[] logp = Ref.tokenLogprobs(c.h, c.w, c.tgt, n, d, vocab, temp);
                    double[] want = Ref.grpo(logp, c.old, c.ref, c.adv, c.wt, epsLow, epsHigh, beta, est);
                    double[] dW0 = randn(r, vocab * d, 1);
                    GrpoLossParams p = new GrpoLossParams(temp, epsLow, epsHigh, beta, est);
                    Mixed m = mixed(est.label() + " n=" + n + " V=" + vocab).bf16("hidden", c.h, n, d).bf16("lmHead", c.w, vocab, d)
                            .ints("targets", c.tgt, n).fp32("weights", c.wt, n).fp32("adv", c.adv, n).fp32("old", c.old, n)
                            .fp32("ref", c.ref, n).out(DType.FP32, "loss", 1).out(DType.FP32, "logprobs", n).out(DType.FP32, "ratio", n)
                            .out(DType.FP32, "clipped", n).out(DType.FP32, "kl", n).out(DType.BF16, "dHidden", n, d)
                            .fp32("dLmHead", dW0, vocab, d)
                            .run((be, t) -> be.grpoLoss(new GrpoLossOutputs(t.get("loss"), t.get("logprobs"), t.get("ratio"), t.get("clipped"),
                                    t.get("kl"), t.get("dHidden"), t.get("dLmHead")), t.get("hidden"), t.get("lmHead"), t.get("targets"),
                                    t.get("weights"), t.get("adv"), t.get("old"), t.get("ref"), p));
                    m.expect("loss", new double[] {want[0]}, 1e-5, 1e-5);
                    m.expect("logprobs", logp, 2e-5, 1e-4);
                    m.expect("ratio", java.util.Arrays.copyOfRange(want, 1, 1 + n), 2e-5, 1e-4);
                    m.expect("clipped", java.util.Arrays.copyOfRange(want, 1 + n, 1 + 2 * n), 0, 0);
                    m.expect("kl", java.util.Arrays.copyOfRange(want, 1 + 2 * n, 1 + 3 * n), 2e-5, 1e-4);
                    int[] ih = someIndices(r, c.h.length, 120), iw = someIndices(r, c.w.length, 120);
                    double[] fh = fdGrad(x -> Ref.grpo(Ref.tokenLogprobs(x, c.w, c.tgt, n, d, vocab, temp), c.old, c.ref, c.adv, c.wt,
                            epsLow, epsHigh, beta, est)[0], c.h, ih);
                    double[] fw = fdGrad(x -> Ref.grpo(Ref.tokenLogprobs(c.h, x, c.tgt, n, d, vocab, temp), c.old, c.ref, c.adv, c.wt,
                            epsLow, epsHigh, beta, est)[0], c.w, iw);
                    for (int i = 0; i < fw.length; i++) fw[i] += dW0[i];
                    m.expect("dHidden", fh, ih, 2e-5, 2e-4);
                    m.expect("dLmHead", fw, iw, 2e-5, 2e-4);
                }
        }

        /** Past the CUDA backend's default vocabulary chunk (4096) and token block (2048), with partial last ones. */
        @Test
        void spansVocabularyChunksAndTokenBlocks() {
            Backend be = be(Ops.GRPO_LOSS);
            SplittableRandom r = new SplittableRandom(4);
            for (int[] s : new int[][] {{7, 8, 9000}, {2100, 4, 30}}) {
                int n = s[0], d = s[1], vocab = s[2];
                float temp = 1f, epsLow = 0.2f, epsHigh = 0.2f, beta = 0.1f;
                Case c = makeCase(r, n, d, vocab, temp);
                double[] logp = Ref.tokenLogprobs(c.h, c.w, c.tgt, n, d, vocab, temp);
                double[] want = Ref.grpo(logp, c.old, c.ref, c.adv, c.wt, epsLow, epsHigh, beta, KlEstimator.KL3);
                GrpoLossOutputs out = new GrpoLossOutputs(poisoned(1), poisoned(n), poisoned(n), poisoned(n), poisoned(n),
                        poisoned(n, d), zeros(vocab, d));
                be.grpoLoss(out, up(c.h, n, d), up(c.w, vocab, d), up(c.tgt, n), up(c.wt, n), up(c.adv, n), up(c.old, n),
                        up(c.ref, n), new GrpoLossParams(temp, epsLow, epsHigh, beta, KlEstimator.KL3));
                String what = "n=" + n + " V=" + vocab;
                assertClose(what + " loss", new double[] {want[0]}, out.loss().toFloats(), 1e-5, 1e-5);
                assertClose(what + " logprobs", logp, out.logprobs().toFloats(), 2e-5, 1e-4);
                assertClose(what + " clipped", java.util.Arrays.copyOfRange(want, 1 + n, 1 + 2 * n), out.clipped().toFloats(), 0, 0);
                int[] ih = someIndices(r, c.h.length, 40), iw = someIndices(r, c.w.length, 40);
                double[] fh = fdGrad(x -> Ref.grpo(Ref.tokenLogprobs(x, c.w, c.tgt, n, d, vocab, temp), c.old, c.ref, c.adv, c.wt,
                        epsLow, epsHigh, beta, KlEstimator.KL3)[0], c.h, ih);
                double[] fw = fdGrad(x -> Ref.grpo(Ref.tokenLogprobs(c.h, x, c.tgt, n, d, vocab, temp), c.old, c.ref, c.adv, c.wt,
                        epsLow, epsHigh, beta, KlEstimator.KL3)[0], c.w, iw);
                assertGradClose(what + " dHidden", fh, out.dHidden().toFloats(), ih, 2e-5, 2e-4);
                assertGradClose(what + " dLmHead", fw, out.dLmHead().toFloats(), iw, 2e-5, 2e-4);
            }
        }

        /**
         * oldLogprobs null (on-policy): each token's old log-prob is its own, so every ratio is exactly 1, nothing is
         * clipped, and the loss and gradients are the reference formulas' with old = logp; fp32 and bf16, one vocabulary
         * chunk and several.
         */
        @Test
        void onPolicyWithoutOldLogprobs() {
            be(Ops.GRPO_LOSS);
            SplittableRandom r = new SplittableRandom(5);
            for (boolean bf16 : new boolean[] {false, true})
                for (int[] s : new int[][] {{23, 16, 300}, {7, 8, 9000}}) {
                    int n = s[0], d = s[1], vocab = s[2];
                    float temp = 0.9f, epsLow = 0.2f, epsHigh = 0.28f, beta = 0.05f;
                    KlEstimator est = KlEstimator.KL3;
                    Case c = bf16 ? makeCase(r, n, d, vocab, temp, randnBf16(r, n * d, 1), randnBf16(r, vocab * d, 0.5))
                            : makeCase(r, n, d, vocab, temp);
                    double[] logp = Ref.tokenLogprobs(c.h, c.w, c.tgt, n, d, vocab, temp);
                    double[] want = Ref.grpo(logp, logp, c.ref, c.adv, c.wt, epsLow, epsHigh, beta, est);
                    double[] dW0 = randn(r, vocab * d, 1);
                    GrpoLossParams p = new GrpoLossParams(temp, epsLow, epsHigh, beta, est);
                    DType dt = bf16 ? DType.BF16 : DType.FP32;
                    Mixed m = mixed((bf16 ? "bf16" : "fp32") + " on-policy n=" + n + " V=" + vocab);
                    m = bf16 ? m.bf16("hidden", c.h, n, d).bf16("lmHead", c.w, vocab, d) : m.fp32("hidden", c.h, n, d).fp32("lmHead", c.w, vocab, d);
                    m = m.ints("targets", c.tgt, n).fp32("weights", c.wt, n).fp32("adv", c.adv, n).fp32("ref", c.ref, n)
                            .out(DType.FP32, "loss", 1).out(DType.FP32, "logprobs", n).out(DType.FP32, "ratio", n)
                            .out(DType.FP32, "clipped", n).out(DType.FP32, "kl", n).out(dt, "dHidden", n, d).fp32("dLmHead", dW0, vocab, d)
                            .run((be, t) -> be.grpoLoss(new GrpoLossOutputs(t.get("loss"), t.get("logprobs"), t.get("ratio"), t.get("clipped"),
                                    t.get("kl"), t.get("dHidden"), t.get("dLmHead")), t.get("hidden"), t.get("lmHead"), t.get("targets"),
                                    t.get("weights"), t.get("adv"), null, t.get("ref"), p));
                    double[] ones = new double[n], zeros = new double[n];
                    java.util.Arrays.fill(ones, 1);
                    m.expect("ratio", ones, 0, 0);
                    m.expect("clipped", zeros, 0, 0);
                    m.expect("loss", new double[] {want[0]}, 1e-5, 1e-5);
                    m.expect("logprobs", logp, 2e-5, 1e-4);
                    m.expect("kl", java.util.Arrays.copyOfRange(want, 1 + 2 * n, 1 + 3 * n), 2e-5, 1e-4);
                    // the gradient of the on-policy loss: old held at the forward's value (detached) while logp moves
                    int[] ih = someIndices(r, c.h.length, 60), iw = someIndices(r, c.w.length, 60);
                    double[] fh = fdGrad(x -> Ref.grpo(Ref.tokenLogprobs(x, c.w, c.tgt, n, d, vocab, temp), logp, c.ref, c.adv, c.wt,
                            epsLow, epsHigh, beta, est)[0], c.h, ih);
                    double[] fw = fdGrad(x -> Ref.grpo(Ref.tokenLogprobs(c.h, x, c.tgt, n, d, vocab, temp), logp, c.ref, c.adv, c.wt,
                            epsLow, epsHigh, beta, est)[0], c.w, iw);
                    for (int i = 0; i < fw.length; i++) fw[i] += dW0[i];
                    m.expect("dHidden", fh, ih, 2e-5, 2e-4);
                    m.expect("dLmHead", fw, iw, 2e-5, 2e-4);
                }
        }

        @Test
        void clippingFiresOnBothSides() {
            Backend be = be(Ops.GRPO_LOSS);
            // positive advantage, ratio 1.5 > 1.2: clipped; negative advantage, ratio 0.5 < 0.8: clipped;
            // positive advantage, ratio 0.5: not clipped (pessimistic max keeps -A*ratio); negative, 1.5: not clipped
            SplittableRandom r = new SplittableRandom(3);
            int n = 4, d = 4, vocab = 9;
            double[] h = randn(r, n * d, 1), w = randn(r, vocab * d, 1);
            int[] tgt = {1, 2, 3, 4};
            double[] logp = Ref.tokenLogprobs(h, w, tgt, n, d, vocab, 1);
            double[] ratios = {1.5, 0.5, 0.5, 1.5}, adv = {1, -1, 1, -1};
            double[] old = new double[n];
            for (int t = 0; t < n; t++) old[t] = (float) (logp[t] - Math.log(ratios[t]));
            GrpoLossOutputs out = new GrpoLossOutputs(poisoned(1), poisoned(n), poisoned(n), poisoned(n), poisoned(n), poisoned(n, d), zeros(vocab, d));
            be.grpoLoss(out, up(h, n, d), up(w, vocab, d), up(tgt, n), up(new double[] {1, 1, 1, 1}, n), up(adv, n), up(old, n),
                    up(logp, n), new GrpoLossParams(1f, 0.2f, 0.2f, 0f, KlEstimator.KL3));
            assertArrayEquals(new float[] {1, 1, 0, 0}, out.clipped().toFloats());
            // clipped tokens carry no policy gradient: with beta 0 their rows of dHidden are exactly zero
            float[] dh = out.dHidden().toFloats();
            for (int t = 0; t < 2; t++) for (int x = 0; x < d; x++) assertEquals(0f, dh[t * d + x]);
            double nonzero = 0;
            for (int t = 2; t < 4; t++) for (int x = 0; x < d; x++) nonzero += Math.abs(dh[t * d + x]);
            assertTrue(nonzero > 0);
        }

        @Test
        void badCalls() {
            Backend be = be(Ops.GRPO_LOSS);
            GrpoLossParams p = new GrpoLossParams(1f, 0.2f, 0.2f, 0.01f, KlEstimator.KL3);
            GrpoLossOutputs out = new GrpoLossOutputs(zeros(1), zeros(3), zeros(3), zeros(3), zeros(3), zeros(3, 4), zeros(10, 4));
            assertBadCall(Ops.GRPO_LOSS, () -> be.grpoLoss(out, zeros(3, 4), zeros(10, 4), up(new int[3], 3), zeros(2), zeros(3), zeros(3), zeros(3), p),
                    "weights", "[2]");
            GrpoLossOutputs badGrad = new GrpoLossOutputs(zeros(1), zeros(3), zeros(3), zeros(3), zeros(3), zeros(3, 4), zeros(9, 4));
            assertBadCall(Ops.GRPO_LOSS, () -> be.grpoLoss(badGrad, zeros(3, 4), zeros(10, 4), up(new int[3], 3), zeros(3), zeros(3), zeros(3), zeros(3), p),
                    "dLmHead", "[9, 4]");
            assertThrows(IllegalArgumentException.class, () -> new GrpoLossParams(1f, 1.2f, 0.2f, 0.01f, KlEstimator.KL3));
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
