package org.grpo4j.internal.backend;

import static org.junit.jupiter.api.Assertions.*;

import java.util.SplittableRandom;
import java.util.TreeSet;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * sample: frequencies against softmax by a chi-square test (critical value at alpha = 1e-4), exact top-k/top-p
 * support, log-probs vs float64 (atol 1e-5), greedy, determinism by seed and independence of batch composition.
 */
class SampleConformanceTest {

    @Test
    void philoxKnownAnswerVectors() {
        // Random123 kat_vectors for philox4x32_10
        assertArrayEquals(new int[] {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}, Philox.philox4x32(0, 0, 0, 0, 0, 0));
        assertArrayEquals(new int[] {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}, Philox.philox4x32(-1, -1, -1, -1, -1, -1));
        assertArrayEquals(new int[] {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1},
                Philox.philox4x32(0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0));
    }

    /** Chi-square critical values at alpha = 1e-4 for df = 1..12. */
    static final double[] CHI2_CRIT = {15.14, 18.42, 21.11, 23.51, 25.74, 27.86, 29.88, 31.83, 33.72, 35.56, 37.37, 39.13};

    abstract static class Suite extends Conformance {

        static double[] softmax(double[] z, double t) {
            double mx = Double.NEGATIVE_INFINITY;
            for (double x : z) mx = Math.max(mx, x / t);
            double s = 0;
            double[] p = new double[z.length];
            for (int i = 0; i < z.length; i++) s += p[i] = Math.exp(z[i] / t - mx);
            for (int i = 0; i < z.length; i++) p[i] /= s;
            return p;
        }

        /** Draws rows identical logits with counters (stream = row + offset, step = 3); returns the tokens. */
        int[] draw(double[] logits, int rows, SamplingSpec spec, int offset, float[] logprobsOut) {
            int v = logits.length;
            double[] all = new double[rows * v];
            int[] ctr = new int[rows * 2];
            for (int r = 0; r < rows; r++) {
                System.arraycopy(logits, 0, all, r * v, v);
                ctr[2 * r] = r + offset;
                ctr[2 * r + 1] = 3;
            }
            Tensor tok = poisonedInt(rows), lp = poisoned(rows);
            be().sample(tok, lp, up(all, rows, v), up(ctr, rows, 2), spec);
            if (logprobsOut != null) System.arraycopy(lp.toFloats(), 0, logprobsOut, 0, rows);
            return tok.toInts();
        }

        static void chiSquare(String what, int[] tokens, double[] p, TreeSet<Integer> support) {
            int[] counts = new int[p.length];
            for (int t : tokens) counts[t]++;
            double chi = 0;
            int df = -1;
            for (int i = 0; i < p.length; i++) {
                if (!support.contains(i)) {
                    assertEquals(0, counts[i], what + ": token " + i + " is outside the allowed set " + support);
                    continue;
                }
                double e = p[i] * tokens.length;
                chi += (counts[i] - e) * (counts[i] - e) / e;
                df++;
            }
            for (int i : support) assertTrue(counts[i] > 0, what + ": allowed token " + i + " never drawn");
            if (df >= 1) assertTrue(chi < CHI2_CRIT[df - 1], what + ": chi-square " + chi + " >= " + CHI2_CRIT[df - 1] + " (df " + df + ")");
        }

        @Test
        void frequenciesFollowSoftmax() {
            be(Ops.SAMPLE);
            double[] z = {1.0, -0.5, 2.0, 0.3, 0.3, -2.0, 1.5};
            float temp = 0.8f;
            float[] lps = new float[30000];
            int[] tok = draw(z, 30000, new SamplingSpec(temp, 0, 1f, 42), 0, lps);
            double[] p = softmax(z, temp);
            TreeSet<Integer> all = new TreeSet<>();
            for (int i = 0; i < z.length; i++) all.add(i);
            chiSquare("plain T=0.8", tok, p, all);
            for (int r = 0; r < 50; r++) assertEquals(Math.log(p[tok[r]]), lps[r], 1e-5, "logprob of row " + r);
        }

        @Test
        void topKAndTopPRestrictTheSupportExactly() {
            be(Ops.SAMPLE);
            double[] z = {0.1, 2.0, -1.0, 1.2, 0.9, 1.2, -0.3, 0.0, 1.9, 0.4};
            float temp = 1.1f;
            double[] p = softmax(z, temp);
            Integer[] order = new Integer[z.length];
            for (int i = 0; i < z.length; i++) order[i] = i;
            java.util.Arrays.sort(order, (a, b) -> z[a] != z[b] ? Double.compare(z[b], z[a]) : Integer.compare(a, b));
            for (int k : new int[] {1, 3, 4}) {
                TreeSet<Integer> sup = new TreeSet<>();
                double mass = 0;
                for (int i = 0; i < k; i++) { sup.add(order[i]); mass += p[order[i]]; }
                double[] q = new double[z.length];
                for (int i : sup) q[i] = p[i] / mass;
                float[] lps = new float[20000];
                int[] tok = draw(z, 20000, new SamplingSpec(temp, k, 1f, 7), 100, lps);
                chiSquare("top-k " + k, tok, q, sup);
                assertEquals(Math.log(p[tok[0]]), lps[0], 1e-5, "logprob is under the unfiltered distribution");
            }
            for (float topP : new float[] {0.3f, 0.6f, 0.95f}) {
                TreeSet<Integer> sup = new TreeSet<>();
                double mass = 0;
                for (int i = 0; i < z.length && mass < topP; i++) { sup.add(order[i]); mass += p[order[i]]; }
                double[] q = new double[z.length];
                for (int i : sup) q[i] = p[i] / mass;
                chiSquare("top-p " + topP, draw(z, 20000, new SamplingSpec(temp, 0, topP, 9), 0, null), q, sup);
            }
            // top-k then top-p
            TreeSet<Integer> sup = new TreeSet<>();
            double massK = p[order[0]] + p[order[1]] + p[order[2]] + p[order[3]], mass = 0;
            for (int i = 0; i < 4 && mass / massK < 0.5; i++) { sup.add(order[i]); mass += p[order[i]]; }
            double[] q = new double[z.length];
            for (int i : sup) q[i] = p[i] / mass;
            chiSquare("top-k 4 + top-p 0.5", draw(z, 20000, new SamplingSpec(temp, 4, 0.5f, 11), 0, null), q, sup);
        }

        @Test
        void greedyIsArgmax() {
            be(Ops.SAMPLE);
            double[] z = {0.5, 3.0, -1.0, 3.0, 2.9};
            float[] lps = new float[5];
            int[] tok = draw(z, 5, new SamplingSpec(0f, 0, 1f, 1), 0, lps);
            double[] p = softmax(z, 1);
            for (int i = 0; i < 5; i++) {
                assertEquals(1, tok[i], "argmax, lowest index on ties");
                assertEquals(Math.log(p[1]), lps[i], 1e-5);
            }
        }

        @Test
        void deterministicBySeedAndIndependentOfBatch() {
            Backend be = be(Ops.SAMPLE);
            SplittableRandom r = new SplittableRandom(5);
            int b = 17, v = 101;
            double[] logits = randn(r, b * v, 2);
            int[] ctr = new int[2 * b];
            for (int i = 0; i < b; i++) { ctr[2 * i] = 1000 + i; ctr[2 * i + 1] = i * 3; }
            SamplingSpec spec = new SamplingSpec(1f, 50, 0.9f, 123);
            Tensor t1 = poisonedInt(b), t2 = poisonedInt(b), l1 = poisoned(b), l2 = poisoned(b);
            be.sample(t1, l1, up(logits, b, v), up(ctr, b, 2), spec);
            be.sample(t2, l2, up(logits, b, v), up(ctr, b, 2), spec);
            int[] a1 = t1.toInts();
            assertArrayEquals(a1, t2.toInts());
            for (int row : new int[] {0, 8, 16}) { // the same row alone gives the same token
                Tensor t = poisonedInt(1), l = poisoned(1);
                be.sample(t, l, up(java.util.Arrays.copyOfRange(logits, row * v, (row + 1) * v), 1, v),
                        up(new int[] {ctr[2 * row], ctr[2 * row + 1]}, 1, 2), spec);
                assertEquals(a1[row], t.toInts()[0], "row " + row + " alone");
            }
            Tensor t3 = poisonedInt(b), l3 = poisoned(b);
            be.sample(t3, l3, up(logits, b, v), up(ctr, b, 2), new SamplingSpec(1f, 50, 0.9f, 124));
            assertFalse(java.util.Arrays.equals(a1, t3.toInts()), "another seed gives other tokens");
        }

        /** bf16 logits sample exactly as their fp32 widening on the same backend: same tokens, same log-probs. */
        @Test
        void bf16LogitsSampleAsTheirFp32Widening() {
            be(Ops.SAMPLE);
            SplittableRandom r = new SplittableRandom(6);
            int b = 17, v = 101;
            double[] logits = randnBf16(r, b * v, 2);
            int[] ctr = new int[2 * b];
            for (int i = 0; i < b; i++) { ctr[2 * i] = 7 + i; ctr[2 * i + 1] = 2 * i; }
            for (SamplingSpec spec : new SamplingSpec[] {new SamplingSpec(1f, 50, 0.9f, 123), new SamplingSpec(0.7f, 0, 1f, 5),
                    new SamplingSpec(0f, 0, 1f, 1)}) {
                Mixed m = mixed("sample " + spec).bf16("logits", logits, b, v).fp32("logits32", logits, b, v).ints("ctr", ctr, b, 2)
                        .out(DType.INT32, "tokens", b).out(DType.FP32, "logprobs", b).out(DType.INT32, "tokens32", b).out(DType.FP32, "logprobs32", b)
                        .run((be, t) -> be.sample(t.get("tokens"), t.get("logprobs"), t.get("logits"), t.get("ctr"), spec),
                                (be, t) -> be.sample(t.get("tokens32"), t.get("logprobs32"), t.get("logits32"), t.get("ctr"), spec));
                int[] tok = m.ints("tokens");
                assertArrayEquals(m.ints("tokens32"), tok, "tokens of bf16 logits vs their fp32 widening");
                assertArrayEquals(m.get("logprobs32"), m.get("logprobs"), "logprobs of bf16 logits vs their fp32 widening");
                double[] want = new double[b];
                for (int row = 0; row < b; row++) {
                    double[] p = softmax(java.util.Arrays.copyOfRange(logits, row * v, (row + 1) * v), spec.temperature() == 0 ? 1 : spec.temperature());
                    want[row] = Math.log(p[tok[row]]);
                }
                assertClose("sample " + spec + " logprobs", want, m.get("logprobs"), 1e-5, 0);
                assertTrue(java.util.Arrays.stream(tok).distinct().count() > 1, "rows draw different tokens");
            }
        }

        /** The contract of Backend.sample for non-finite rows, at every temperature / top-k / top-p. */
        @Test
        void nonFiniteRowsHaveTheDefinedResult() {
            be(Ops.SAMPLE);
            double nan = Double.NaN, inf = Double.POSITIVE_INFINITY;
            double[][] rows = {
                {nan, nan, nan, nan},          // all NaN: token 0
                {-inf, nan, -inf, -inf},       // no finite entry: token 0
                {1.0, inf, 2.0, inf},          // +inf entries: the first one
                {nan, 3.0, inf, nan},          // +inf wins over NaN and finite values
            };
            int[] want = {0, 0, 1, 2};
            SamplingSpec[] specs = {new SamplingSpec(0f, 0, 1f, 1), new SamplingSpec(1f, 0, 1f, 2),
                new SamplingSpec(0.7f, 2, 1f, 3), new SamplingSpec(1.3f, 0, 0.5f, 4)};
            for (SamplingSpec spec : specs)
                for (int i = 0; i < rows.length; i++) {
                    float[] lp = new float[3];
                    int[] tok = draw(rows[i], 3, spec, 7, lp);
                    for (int r = 0; r < 3; r++) {
                        assertEquals(want[i], tok[r], "row " + java.util.Arrays.toString(rows[i]) + " at " + spec);
                        assertTrue(Float.isNaN(lp[r]), "logprob NaN flags the row " + java.util.Arrays.toString(rows[i]) + ": " + lp[r]);
                    }
                }
            // a finite maximum: NaN and -inf entries have probability 0, the rest follow the softmax
            double[] z = {nan, 0.5, -inf, 1.5, nan, 1.0};
            float temp = 0.9f;
            double[] zf = {-inf, 0.5, -inf, 1.5, -inf, 1.0};
            double[] p = softmax(zf, temp);
            float[] lps = new float[20000];
            int[] tok = draw(z, 20000, new SamplingSpec(temp, 0, 1f, 5), 0, lps);
            chiSquare("NaN as -inf", tok, p, new TreeSet<>(java.util.List.of(1, 3, 5)));
            for (int r = 0; r < 20; r++) assertEquals(Math.log(p[tok[r]]), lps[r], 1e-5, "logprob of row " + r);
            tok = draw(z, 200, new SamplingSpec(temp, 2, 1f, 6), 0, null);
            for (int t : tok) assertTrue(t == 3 || t == 5, "top-2 of the finite entries: " + t);
            float[] g = new float[1];
            assertEquals(3, draw(z, 1, new SamplingSpec(0f, 0, 1f, 1), 0, g)[0], "greedy skips NaN");
            assertEquals(Math.log(softmax(zf, 1)[3]), g[0], 1e-5);
        }

        /**
         * Greedy's "lowest index among the maxima" ranks -0 below +0, as the top-k ranking does (one total order, the
         * CUDA kernel's keys): greedy, top-k 1 and a top-p that keeps one token pick the same +0 entry. (The CPU's
         * greedy compared with {@code >}, where -0 == +0, and took the -0 before it.)
         */
        @Test
        void signedZeroTiesFollowOneOrderInEveryMode() {
            be(Ops.SAMPLE);
            double[] row = {-0.0, 0.0, -1.0, -0.0};
            for (SamplingSpec spec : new SamplingSpec[] {new SamplingSpec(0f, 0, 1f, 1), new SamplingSpec(1f, 1, 1f, 2),
                    new SamplingSpec(1f, 0, 1e-6f, 3)})
                assertEquals(1, draw(row, 1, spec, 0, null)[0], "the +0 entry at " + spec);
        }

        /**
         * Per-row specs (a batch mixing greedy, top-k, top-p alone, top-k with top-p and plain rows, each spec with its
         * own seed, interleaved): every row draws bit for bit what the one-spec call with its spec draws for it, on fp32
         * and bf16 logits. (On CUDA each spec's rows are one launch through a row list.)
         */
        @Test
        void perRowSpecsDrawWhatEachRowsOwnSpecDraws() {
            Backend be = be(Ops.SAMPLE);
            int b = 23, v = 3000;
            SamplingSpec[] kinds = {new SamplingSpec(0f, 0, 1f, 1), new SamplingSpec(0.8f, 7, 1f, 2), new SamplingSpec(1f, 0, 0.9f, 3),
                    new SamplingSpec(1.2f, 50, 0.8f, 4), new SamplingSpec(1f, 0, 1f, 2)};
            SamplingSpec[] specs = new SamplingSpec[b];
            SplittableRandom rnd = new SplittableRandom(17);
            double[] logits = new double[b * v];
            int[] ctr = new int[2 * b];
            for (int r = 0; r < b; r++) {
                specs[r] = kinds[(r * 3 + r / 5) % kinds.length];
                for (int i = 0; i < v; i++) logits[r * v + i] = 3 * rnd.nextGaussian();
                ctr[2 * r] = 100 + r;
                ctr[2 * r + 1] = 9;
            }
            for (DType dt : new DType[] {DType.FP32, DType.BF16}) {
                Tensor x = dt == DType.BF16 ? track(uploadBf16(be, logits, b, v)) : up(logits, b, v), c = up(ctr, b, 2);
                Tensor tok = poisonedInt(b), lp = poisoned(b);
                be.sample(tok, lp, x, c, specs);
                int[] got = tok.toInts();
                float[] gotLp = lp.toFloats();
                java.util.Set<SamplingSpec> seen = new java.util.HashSet<>();
                for (SamplingSpec k : kinds) {
                    Tensor t1 = poisonedInt(b), l1 = poisoned(b);
                    be.sample(t1, l1, x, c, k);
                    int[] want = t1.toInts();
                    float[] wantLp = l1.toFloats();
                    for (int r = 0; r < b; r++)
                        if (specs[r].equals(k)) {
                            seen.add(k);
                            assertEquals(want[r], got[r], dt + " row " + r + " (" + k + ")");
                            assertEquals(Float.floatToIntBits(wantLp[r]), Float.floatToIntBits(gotLp[r]), dt + " row " + r + " logprob (" + k + ")");
                        }
                }
                assertEquals(kinds.length, seen.size(), "every kind of row occurs");
            }
        }

        @Test
        void badCalls() {
            Backend be = be(Ops.SAMPLE);
            SamplingSpec s = new SamplingSpec(1f, 0, 1f, 1);
            assertBadCall(Ops.SAMPLE, () -> be.sample(poisonedInt(2), zeros(2), zeros(2, 5), up(new int[4], 2, 2), new SamplingSpec[] {s}), "1 specs", "2 rows");
            assertBadCall(Ops.SAMPLE, () -> be.sample(poisonedInt(2), zeros(2), zeros(2, 5), up(new int[4], 2, 2), new SamplingSpec[] {s, null}), "specs[1] is null");
            assertBadCall(Ops.SAMPLE, () -> be.sample(poisonedInt(2), zeros(2), zeros(2, 5), up(new int[4], 2, 2),
                    new SamplingSpec[] {s, new SamplingSpec(1f, 6, 1f, 1)}), "specs[1]: top_k = 6", "[2, 5]");
            assertBadCall(Ops.SAMPLE, () -> be.sample(poisonedInt(2), zeros(2), zeros(2, 5), poisonedInt(2), s), "rngCounters", "[2]", "[2, 2]");
            assertBadCall(Ops.SAMPLE, () -> be.sample(poisonedInt(3), zeros(2), zeros(2, 5), poisonedInt(2, 2), s), "tokens", "[3]");
            assertThrows(IllegalArgumentException.class, () -> new SamplingSpec(1f, 0, 0f, 1));
            assertThrows(IllegalArgumentException.class, () -> new SamplingSpec(-1f, 0, 1f, 1));
        }
    }

    /** top_k beyond the vocabulary is refused before any kernel (0 turns top-k off; negative values never get a spec). */
    abstract static class BadSpecs extends Conformance {
        @Test
        void topKBeyondTheVocabularyIsRejected() {
            Backend be = be(Ops.SAMPLE);
            assertBadCall(Ops.SAMPLE, () -> be.sample(poisonedInt(2), poisoned(2), zeros(2, 5), up(new int[4], 2, 2),
                    new SamplingSpec(1f, 6, 1f, 1)), "top_k = 6", "[2, 5]");
            be.sample(poisonedInt(2), poisoned(2), zeros(2, 5), up(new int[4], 2, 2), new SamplingSpec(1f, 5, 1f, 1)); // k = V is fine
            assertThrows(IllegalArgumentException.class, () -> new SamplingSpec(1f, -1, 1f, 1));
            assertThrows(IllegalArgumentException.class, () -> new SamplingSpec(1f, 0, 1.01f, 1));
            assertThrows(IllegalArgumentException.class, () -> new SamplingSpec(1f, 0, Float.NaN, 1));
            assertThrows(IllegalArgumentException.class, () -> new SamplingSpec(Float.NaN, 0, 1f, 1));
            assertThrows(IllegalArgumentException.class, () -> new SamplingSpec(Float.POSITIVE_INFINITY, 0, 1f, 1));
        }
    }

    @Nested
    class CpuBadSpecs extends BadSpecs {
        @Override
        protected Backend be() { return TestBackends.cpu(); }
    }

    @Nested
    @Tag("gpu")
    class CudaBadSpecs extends BadSpecs {
        @Override
        protected Backend be() { return TestBackends.cuda(); }
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
