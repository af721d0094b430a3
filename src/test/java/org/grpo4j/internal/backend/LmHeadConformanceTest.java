package org.grpo4j.internal.backend;

import java.util.SplittableRandom;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * tokenLogprobs vs float64 full-logits reference: atol 2e-5, rtol 1e-5 (vocabularies larger than one chunk, odd sizes,
 * temperatures 1, 0.7 and 0). Backward vs FD: atol 2e-5, rtol 2e-4.
 */
class LmHeadConformanceTest {

    abstract static class Suite extends Conformance {
        @Test
        void forward() {
            Backend be = be(Ops.TOKEN_LOGPROBS);
            SplittableRandom r = new SplittableRandom(1);
            for (int[] s : new int[][] {{1, 1, 2}, {9, 7, 13}, {37, 16, 1001}, {5, 64, 3000}}) {
                int n = s[0], d = s[1], vocab = s[2];
                for (float temp : new float[] {1f, 0.7f}) {
                    double[] h = randn(r, n * d, 1), w = randn(r, vocab * d, 0.5);
                    int[] tgt = r.ints(n, 0, vocab).toArray();
                    Tensor out = poisoned(n);
                    be.tokenLogprobs(out, up(h, n, d), up(w, vocab, d), up(tgt, n), temp);
                    assertClose("tokenLogprobs n=" + n + " d=" + d + " V=" + vocab + " T=" + temp,
                            Ref.tokenLogprobs(h, w, tgt, n, d, vocab, temp), out.toFloats(), 2e-5, 1e-5);
                }
            }
        }

        @Test
        void temperatureZeroGivesArgmaxDistribution() {
            Backend be = be(Ops.TOKEN_LOGPROBS);
            // logits / 1e-7: the argmax token gets logprob ~0, every other token a huge negative number
            double[] h = {1, 0}, w = {0.5, 0, 0.25, 0, -1, 0};
            Tensor out = poisoned(1);
            be.tokenLogprobs(out, up(h, 1, 2), up(w, 3, 2), up(new int[] {0}, 1), 0f);
            assertClose("T=0 argmax", new double[] {0}, out.toFloats(), 1e-6, 0);
        }

        @Test
        void backwardMatchesFiniteDifferences() {
            Backend be = be(Ops.TOKEN_LOGPROBS_BACKWARD);
            SplittableRandom r = new SplittableRandom(2);
            for (int[] s : new int[][] {{1, 3, 2}, {7, 5, 300}, {12, 8, 513}}) {
                int n = s[0], d = s[1], vocab = s[2];
                double[] h = randn(r, n * d, 1), w = randn(r, vocab * d, 0.5), g = randn(r, n, 1), w0 = randn(r, vocab * d, 1);
                int[] tgt = r.ints(n, 0, vocab).toArray();
                float temp = 0.8f;
                Tensor dh = poisoned(n, d), dw = up(w0, vocab, d);
                be.tokenLogprobsBackward(dh, dw, up(g, n), up(h, n, d), up(w, vocab, d), up(tgt, n), temp);
                double[] fh = fdGrad(x -> dot(g, Ref.tokenLogprobs(x, w, tgt, n, d, vocab, temp)), h, null);
                int[] iw = someIndices(r, w.length, 300);
                double[] fw = fdGrad(x -> dot(g, Ref.tokenLogprobs(h, x, tgt, n, d, vocab, temp)), w, iw);
                for (int i = 0; i < fw.length; i++) fw[i] += w0[i];
                assertGradClose("dHidden", fh, dh.toFloats(), null, 2e-5, 2e-4);
                assertGradClose("dLmHead (accumulated)", fw, dw.toFloats(), iw, 2e-5, 2e-4);
            }
        }

        @Test
        void forwardBf16() {
            be(Ops.TOKEN_LOGPROBS);
            SplittableRandom r = new SplittableRandom(3);
            for (int[] s : new int[][] {{1, 1, 2}, {9, 7, 13}, {37, 16, 1001}}) {
                int n = s[0], d = s[1], vocab = s[2];
                double[] h = randnBf16(r, n * d, 1), w = randnBf16(r, vocab * d, 0.5);
                int[] tgt = r.ints(n, 0, vocab).toArray();
                mixed("tokenLogprobs n=" + n + " d=" + d + " V=" + vocab).bf16("hidden", h, n, d).bf16("lmHead", w, vocab, d)
                        .ints("targets", tgt, n).out(DType.FP32, "out", n)
                        .run((be, t) -> be.tokenLogprobs(t.get("out"), t.get("hidden"), t.get("lmHead"), t.get("targets"), 0.7f))
                        .expect("out", Ref.tokenLogprobs(h, w, tgt, n, d, vocab, 0.7f), 2e-5, 1e-5);
            }
        }

        @Test
        void backwardBf16MatchesFiniteDifferences() {
            be(Ops.TOKEN_LOGPROBS_BACKWARD);
            SplittableRandom r = new SplittableRandom(4);
            for (int[] s : new int[][] {{1, 3, 2}, {7, 5, 300}}) {
                int n = s[0], d = s[1], vocab = s[2];
                double[] h = randnBf16(r, n * d, 1), w = randnBf16(r, vocab * d, 0.5), g = randn(r, n, 1), w0 = randn(r, vocab * d, 1);
                int[] tgt = r.ints(n, 0, vocab).toArray();
                float temp = 0.8f;
                Mixed m = mixed("tokenLogprobsBackward n=" + n + " d=" + d + " V=" + vocab).bf16("hidden", h, n, d)
                        .bf16("lmHead", w, vocab, d).ints("targets", tgt, n).fp32("dLogprobs", g, n).fp32("dLmHead", w0, vocab, d)
                        .out(DType.BF16, "dHidden", n, d)
                        .run((be, t) -> be.tokenLogprobsBackward(t.get("dHidden"), t.get("dLmHead"), t.get("dLogprobs"), t.get("hidden"),
                                t.get("lmHead"), t.get("targets"), temp));
                double[] fh = fdGrad(x -> dot(g, Ref.tokenLogprobs(x, w, tgt, n, d, vocab, temp)), h, null);
                int[] iw = someIndices(r, w.length, 200);
                double[] fw = fdGrad(x -> dot(g, Ref.tokenLogprobs(h, x, tgt, n, d, vocab, temp)), w, iw);
                for (int i = 0; i < fw.length; i++) fw[i] += w0[i];
                m.expect("dHidden", fh, 2e-5, 2e-4);
                m.expect("dLmHead", fw, iw, 2e-5, 2e-4);
            }
        }

        /**
         * Sizes past the CUDA backend's default token block (2048 rows) and vocabulary chunk (4096 columns), so that
         * its loops run several blocks and chunks with partial last ones; forward vs float64, backward vs FD.
         */
        @Test
        void spansVocabularyChunksAndTokenBlocks() {
            Backend be = be(Ops.TOKEN_LOGPROBS_BACKWARD);
            SplittableRandom r = new SplittableRandom(5);
            for (int[] s : new int[][] {{2100, 8, 50}, {5, 8, 9000}}) {
                int n = s[0], d = s[1], vocab = s[2];
                double[] h = randn(r, n * d, 1), w = randn(r, vocab * d, 0.5), g = randn(r, n, 1);
                int[] tgt = r.ints(n, 0, vocab).toArray();
                Tensor out = poisoned(n);
                be.tokenLogprobs(out, up(h, n, d), up(w, vocab, d), up(tgt, n), 0.9f);
                assertClose("tokenLogprobs n=" + n + " V=" + vocab, Ref.tokenLogprobs(h, w, tgt, n, d, vocab, 0.9f), out.toFloats(), 2e-5, 1e-5);
                Tensor dh = poisoned(n, d), dw = zeros(vocab, d);
                be.tokenLogprobsBackward(dh, dw, up(g, n), up(h, n, d), up(w, vocab, d), up(tgt, n), 0.9f);
                int[] ih = someIndices(r, h.length, 60), iw = someIndices(r, w.length, 60);
                double[] fh = fdGrad(x -> dot(g, Ref.tokenLogprobs(x, w, tgt, n, d, vocab, 0.9f)), h, ih);
                double[] fw = fdGrad(x -> dot(g, Ref.tokenLogprobs(h, x, tgt, n, d, vocab, 0.9f)), w, iw);
                assertGradClose("dHidden n=" + n + " V=" + vocab, fh, dh.toFloats(), ih, 2e-5, 2e-4);
                assertGradClose("dLmHead n=" + n + " V=" + vocab, fw, dw.toFloats(), iw, 2e-5, 2e-4);
            }
        }

        @Test
        void badCalls() {
            Backend be = be(Ops.TOKEN_LOGPROBS);
            assertBadCall(Ops.TOKEN_LOGPROBS, () -> be.tokenLogprobs(zeros(3), zeros(3, 4), zeros(10, 5), up(new int[3], 3), 1f), "hidden size");
            assertBadCall(Ops.TOKEN_LOGPROBS, () -> be.tokenLogprobs(zeros(3), zeros(3, 4), zeros(10, 4), up(new int[2], 2), 1f), "targets");
            assertBadCall(Ops.TOKEN_LOGPROBS, () -> be.tokenLogprobs(zeros(3), zeros(3, 4), zeros(10, 4), up(new int[3], 3), -1f), "temperature");
            if (be instanceof CpuBackend)
                assertBadCall(Ops.TOKEN_LOGPROBS, () -> be.tokenLogprobs(zeros(1), zeros(1, 4), zeros(10, 4), up(new int[] {10}, 1), 1f), "targets[0] = 10");
            Backend bb = be(Ops.TOKEN_LOGPROBS_BACKWARD);
            String op = Ops.TOKEN_LOGPROBS_BACKWARD;
            Tensor t3 = up(new int[3], 3);
            // (dHidden, dLmHead, dLogprobs, hidden, lmHead, targets) with hidden [3, 4], lmHead [10, 4]
            assertBadCall(op, () -> bb.tokenLogprobsBackward(zeros(2, 4), zeros(10, 4), zeros(3), zeros(3, 4), zeros(10, 4), t3, 1f),
                    "dHidden has shape [2, 4]", "[3, 4]");
            assertBadCall(op, () -> bb.tokenLogprobsBackward(zeros(3, 4), zeros(10, 5), zeros(3), zeros(3, 4), zeros(10, 4), t3, 1f),
                    "dLmHead has shape [10, 5]", "[10, 4]");
            assertBadCall(op, () -> bb.tokenLogprobsBackward(zeros(3, 4), zeros(10, 4), zeros(4), zeros(3, 4), zeros(10, 4), t3, 1f),
                    "dLogprobs has shape [4]", "[3]");
            assertBadCall(op, () -> bb.tokenLogprobsBackward(zeros(3, 4), zeros(10, 5), zeros(3), zeros(3, 4), zeros(10, 5), t3, 1f),
                    "hidden size");
            assertBadCall(op, () -> bb.tokenLogprobsBackward(zeros(3, 4), zeros(10, 4), zeros(3), zeros(3, 4), zeros(10, 4),
                    up(new int[2], 2), 1f), "targets has shape [2]", "[3]");
            if (bb instanceof CpuBackend)
                assertBadCall(op, () -> bb.tokenLogprobsBackward(zeros(1, 4), zeros(10, 4), zeros(1), zeros(1, 4), zeros(10, 4),
                        up(new int[] {10}, 1), 1f), "targets[0] = 10");
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
