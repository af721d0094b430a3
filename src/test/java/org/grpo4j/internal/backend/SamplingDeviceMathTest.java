package org.grpo4j.internal.backend;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.util.SplittableRandom;
import java.util.TreeSet;
import org.grpo4j.bindings.CudaNative;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The sampling kernel's math on the host (cuda/sampling.cuh through native/hostmath.cu) against the CPU backend's
 * sampler: Philox4x32-10 bit for bit, exp_f32's accuracy, and the whole per-row algorithm (threshold search,
 * inverse-CDF draw in vocabulary order) on many rows. The host twin reproduces the kernel's tokens exactly (every
 * reduction of the kernel is over integers, see sampling.cuh), so what is measured here is what the GPU will do:
 * the same-token rate against the CPU, exact top-k / top-p support sets, and the draws' distribution (chi-square at
 * alpha 1e-4). Needs the JNI library (built wherever nvcc is), not a GPU.
 */
class SamplingDeviceMathTest {

    @BeforeAll
    static void library() {
        assumeTrue(CudaRuntime.loadLibrary(), "skipped: the CUDA JNI library is not built or does not load here");
    }

    // ---- Philox and exp ---------------------------------------------------------------------------------------------

    @Test
    void philoxIsBitIdenticalToJava() {
        SplittableRandom r = new SplittableRandom(11);
        int n = 20_000;
        int[] ctr = new int[4 * n], key = new int[2 * n], got = new int[4 * n];
        for (int i = 0; i < ctr.length; i++) ctr[i] = i < 8 ? (i < 4 ? 0 : -1) : r.nextInt();
        for (int i = 0; i < key.length; i++) key[i] = i < 4 ? (i < 2 ? 0 : -1) : r.nextInt();
        CudaNative.g4_host_philox(ctr, key, got, n);
        for (int i = 0; i < n; i++) {
            int[] want = Philox.philox4x32(ctr[4 * i], ctr[4 * i + 1], ctr[4 * i + 2], ctr[4 * i + 3], key[2 * i], key[2 * i + 1]);
            for (int w = 0; w < 4; w++) assertEquals(want[w], got[4 * i + w], "pair " + i + " word " + w);
        }
        // the Random123 known-answer vector, through the host twin
        int[] kat = new int[4];
        CudaNative.g4_host_philox(new int[] {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, new int[] {0xa4093822, 0x299f31d0}, kat, 1);
        assertArrayEquals(new int[] {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}, kat);
        long[] seeds = {0, 1, -1, 42, 0x123456789ABCDEFL, Long.MIN_VALUE, Long.MAX_VALUE};
        for (int i = 0; i < 20_000; i++) {
            long seed = i < seeds.length ? seeds[i] : r.nextLong();
            int stream = i % 3 == 0 ? -r.nextInt(1000) : r.nextInt(), step = r.nextInt();
            double want = Philox.uniform(seed, stream, step);
            assertEquals(Double.doubleToLongBits(want), Double.doubleToLongBits(CudaNative.g4_host_philox_uniform(seed, stream, step)),
                    "uniform(" + seed + ", " + stream + ", " + step + ")");
        }
    }

    @Test
    void expF32IsWithinTwoUlpsOfExp() {
        SplittableRandom r = new SplittableRandom(12);
        int n = 400_000;
        float[] x = new float[n], got = new float[n];
        for (int i = 0; i < n; i++) {
            if (i < 100_000) x[i] = -87.3f + 175.9f * i / 100_000f;                        // a grid over the range
            else if (i < 200_000) x[i] = (float) (r.nextDouble() * 2 - 1) * 0.5f;           // around 0
            else x[i] = (float) (-87.3 + 176 * r.nextDouble());
        }
        CudaNative.g4_host_exp_f32(x, got, n);
        double worst = 0;
        for (int i = 0; i < n; i++) {
            double want = Math.exp(x[i]);
            if (want > Float.MAX_VALUE) { assertEquals(Float.POSITIVE_INFINITY, got[i], "x = " + x[i]); continue; }
            if (want < 0x1p-126) continue; // flushed to 0 by design (below every fixed-point unit the kernels use)
            double ulps = Math.abs(got[i] - want) / Math.ulp((float) want);
            worst = Math.max(worst, ulps);
            assertTrue(ulps <= 2, "exp_f32(" + x[i] + ") = " + got[i] + ", exp = " + want + " (" + ulps + " ulp)");
        }
        float[] sp = {0f, -0f, Float.NEGATIVE_INFINITY, Float.POSITIVE_INFINITY, Float.NaN, -100f, 100f, -87.5f}, o = new float[sp.length];
        CudaNative.g4_host_exp_f32(sp, o, sp.length);
        assertArrayEquals(new float[] {1f, 1f, 0f, Float.POSITIVE_INFINITY, Float.NaN, 0f, Float.POSITIVE_INFINITY, 0f}, o);
        System.out.println("exp_f32: worst error " + worst + " ulp over " + n + " inputs");
    }

    // ---- the sampler's row algorithm --------------------------------------------------------------------------------

    record Twin(int token, double logprob, boolean[] kept, int passes) {}

    static Twin twin(float[] row, SamplingSpec s, double u) {
        int[] tok = new int[1], kept = new int[row.length];
        double[] lp = new double[1];
        int passes = CudaNative.g4_host_sample_row(row, row.length, s.temperature(), s.topK(), s.topP(), u, tok, lp, kept);
        boolean[] k = new boolean[row.length];
        for (int j = 0; j < row.length; j++) k[j] = kept[j] != 0;
        return new Twin(tok[0], lp[0], k, passes);
    }

    static boolean filtered(SamplingSpec s, int v) { return s.temperature() > 0 && (s.topK() > 0 && s.topK() < v || s.topP() < 1f); }

    /** The CPU contract: Sampler for greedy and unfiltered rows; the vocabulary-order filtered draw otherwise. */
    static Sampler.Result cpu(float[] row, SamplingSpec s, int stream, int step) {
        int v = row.length;
        if (!filtered(s, v)) return Sampler.sampleRow(row, 0, v, s, stream, step);
        double invT = 1.0 / s.temperature(), lse = Sampler.logSumExp(row, 0, v, invT);
        int k = s.topK() == 0 ? v : Math.min(s.topK(), v);
        return FilteredDraw.draw(row, 0, v, k, s.topP(), invT, lse, Philox.uniform(s.seed(), stream, step));
    }

    static float[] row(SplittableRandom r, int v, int kind) {
        float[] x = new float[v];
        for (int j = 0; j < v; j++) {
            double g = r.nextGaussian();
            x[j] = switch (kind) {
                case 0 -> (float) g;                                        // N(0, 1)
                case 1 -> (float) (3 * g);                                  // N(0, 9)
                case 2 -> Bf16.round((float) (2 * g));                      // bf16 values: many exact ties
                case 3 -> (float) Math.rint(2 * g);                         // integers: huge tie groups
                default -> (float) (-Math.log(-Math.log(r.nextDouble())) * 2 + (j < 20 ? 8 : 0)); // LLM-like: a few strong tokens over a Gumbel bulk
            };
        }
        return x;
    }

    static final SamplingSpec[] SPECS = {
        new SamplingSpec(1f, 0, 1f, 1), new SamplingSpec(0.7f, 0, 1f, 2), new SamplingSpec(0f, 0, 1f, 3),
        new SamplingSpec(1f, 1, 1f, 4), new SamplingSpec(1f, 5, 1f, 5), new SamplingSpec(1.3f, 50, 1f, 6),
        new SamplingSpec(1f, 0, 0.9f, 7), new SamplingSpec(0.6f, 0, 0.5f, 8), new SamplingSpec(1f, 0, 0.95f, 9),
        new SamplingSpec(1f, 50, 0.9f, 10), new SamplingSpec(0.8f, 7, 0.3f, 11), new SamplingSpec(1f, 0, 0.01f, 12),
    };

    /**
     * Many rows (vocabularies from 1 to 9000 tokens, five logit distributions, twelve specs): the twin's token against
     * the CPU's for the same u, its log-prob against float64, and its kept set against the CPU's exactly.
     */
    @Test
    void theKernelsRowAlgorithmAgreesWithTheCpu() {
        SplittableRandom r = new SplittableRandom(13);
        int[] vocabs = {1, 2, 3, 7, 64, 100, 1001, 4095, 4096, 4097, 9000};
        int rows = 0, differ = 0, keptDiffer = 0, maxPasses = 0;
        long passes = 0, searches = 0;
        for (int rep = 0; rep < 6; rep++)
            for (int v : vocabs)
                for (int kind = 0; kind < 5; kind++) {
                    float[] x = row(r, v, kind);
                    for (SamplingSpec s : SPECS) {
                        if (s.topK() > v) continue;
                        int stream = r.nextInt(1 << 20), step = rep;
                        double u = Philox.uniform(s.seed(), stream, step);
                        Twin t = twin(x, s, u);
                        Sampler.Result c = cpu(x, s, stream, step);
                        rows++;
                        if (t.token != c.token()) differ++;
                        String what = "V=" + v + " kind " + kind + " " + s + " u=" + u;
                        assertTrue(t.token >= 0 && t.token < v, what + ": token " + t.token);
                        double invT = s.temperature() == 0 ? 1 : 1.0 / s.temperature();
                        double want = x[t.token] * invT - Sampler.logSumExp(x, 0, v, invT);
                        assertEquals(want, t.logprob, 1e-5, what + ": logprob of token " + t.token);
                        if (filtered(s, v)) {
                            int k = s.topK() == 0 ? v : s.topK();
                            boolean[] ck = FilteredDraw.keptSet(x, 0, v, k, s.topP(), invT, Sampler.logSumExp(x, 0, v, invT));
                            if (!java.util.Arrays.equals(ck, t.kept)) keptDiffer++;
                            if (s.topP() >= 1f) assertArrayEquals(ck, t.kept, what + ": the top-k set is exact");
                            assertTrue(t.kept[t.token], what + ": the drawn token is kept");
                            searches++;
                            passes += t.passes;
                            maxPasses = Math.max(maxPasses, t.passes);
                        }
                    }
                }
        System.out.printf("sampler twin vs cpu: %d rows, %d different tokens (%.4f%%), %d different kept sets;"
                + " reads of the row after pass A per filtered row (search and draw): mean %.2f, max %d%n", rows, differ, 100.0 * differ / rows, keptDiffer,
                (double) passes / searches, maxPasses);
        assertTrue(differ <= rows / 1000, differ + " of " + rows + " rows draw another token than the CPU (> 0.1%)");
        assertEquals(0, keptDiffer, "kept sets that differ from the CPU's");
    }

    /** The size: V = 128,256 (one row per distribution), every spec; the same checks. */
    @Test
    void llamaSizedRowsAgreeWithTheCpu() {
        SplittableRandom r = new SplittableRandom(14);
        int v = 128_256, differ = 0, rows = 0;
        for (int kind : new int[] {1, 2, 4}) {
            float[] x = row(r, v, kind);
            for (SamplingSpec s : SPECS) {
                Twin t = twin(x, s, Philox.uniform(s.seed(), kind, 9));
                Sampler.Result c = cpu(x, s, kind, 9);
                rows++;
                if (t.token != c.token()) differ++;
                double invT = s.temperature() == 0 ? 1 : 1.0 / s.temperature(), lse = Sampler.logSumExp(x, 0, v, invT);
                assertEquals(x[t.token] * invT - lse, t.logprob, 1e-5, "kind " + kind + " " + s);
                if (filtered(s, v))
                    assertArrayEquals(FilteredDraw.keptSet(x, 0, v, s.topK() == 0 ? v : s.topK(), s.topP(), invT, lse), t.kept,
                            "kept set, kind " + kind + " " + s);
            }
        }
        assertEquals(0, differ, differ + " of " + rows + " rows differ");
    }

    /**
     * Rows built to reach the threshold search's corner cases: all-equal rows, one finite value among -inf / NaN, top-k
     * larger than the finite tokens, tie groups straddling the top-k and top-p boundaries (more than the 2048-token
     * shared-memory list), values a few ulps apart, -0 / +0, top-p down to the smallest float and just below 1, top-k
     * = V - 1. The twin (the kernel's exact algorithm) keeps exactly the CPU's set and draws a kept token.
     */
    @Test
    void cornerCaseRowsKeepTheCpusSet() {
        SplittableRandom r = new SplittableRandom(16);
        float ninf = Float.NEGATIVE_INFINITY;
        java.util.List<float[]> rows = new java.util.ArrayList<>();
        for (int v : new int[] {1, 2, 5, 2047, 2049, 9000}) {
            float[] eq = new float[v];
            java.util.Arrays.fill(eq, 0.75f);
            rows.add(eq);
            float[] one = new float[v];
            java.util.Arrays.fill(one, ninf);
            one[v / 2] = -3f;
            if (v > 2) one[1] = Float.NaN;
            rows.add(one);
            float[] few = new float[v];
            java.util.Arrays.fill(few, ninf);
            for (int i = 0; i < Math.min(v, 3); i++) few[r.nextInt(v)] = (float) r.nextGaussian();
            rows.add(few);
            float[] ties = new float[v]; // three tie groups: 1 x 5, 3000-ish x 1.0, the rest 0
            for (int j = 0; j < v; j++) ties[j] = j < 5 ? 5f : (j % 3 == 0 ? 0f : 1f);
            rows.add(ties);
            float[] ulps = new float[v];
            for (int j = 0; j < v; j++) ulps[j] = Math.nextUp(1f) + r.nextInt(6) * Math.ulp(1f);
            rows.add(ulps);
            float[] zeros = new float[v];
            for (int j = 0; j < v; j++) zeros[j] = r.nextBoolean() ? 0f : -0f;
            rows.add(zeros);
            float[] wide = new float[v];
            for (int j = 0; j < v; j++) wide[j] = (float) (r.nextGaussian() * 60);
            rows.add(wide);
        }
        int n = 0, differ = 0;
        for (float[] x : rows) {
            int v = x.length;
            java.util.List<SamplingSpec> specs = new java.util.ArrayList<>(java.util.List.of(SPECS));
            for (int k : new int[] {2, 6, v - 1})
                if (k >= 1 && k <= v)
                    for (float p : new float[] {1f, 0.5f, Float.MIN_VALUE, Math.nextDown(1f)}) specs.add(new SamplingSpec(1f, k, p, 21));
            specs.add(new SamplingSpec(1f, 0, Float.MIN_VALUE, 22));
            specs.add(new SamplingSpec(1f, 0, Math.nextDown(1f), 23));
            for (SamplingSpec s : specs) {
                if (s.topK() > v) continue;
                for (int i = 0; i < (v > 5000 ? 1 : 2); i++) {
                    int stream = r.nextInt(1 << 20);
                    double u = Philox.uniform(s.seed(), stream, 0);
                    Twin t = twin(x, s, u);
                    String what = "V=" + v + " row " + java.util.Arrays.toString(java.util.Arrays.copyOf(x, Math.min(v, 6))) + " " + s + " u=" + u;
                    assertTrue(t.token >= 0 && t.token < v, what + ": token " + t.token);
                    if (!filtered(s, v)) continue;
                    double invT = 1.0 / s.temperature();
                    float[] clean = x.clone();
                    for (int j = 0; j < v; j++) if (Float.isNaN(clean[j])) clean[j] = ninf;
                    double lse = Sampler.logSumExp(clean, 0, v, invT);
                    int k = s.topK() == 0 ? v : s.topK();
                    // Both kept sets must be prefixes of the CPU's ranking (value descending, index ascending), compared
                    // over the tokens with p >= 1e-12: the CPU's top-p walk (even at top-p 1) stops before tokens whose
                    // mass vanishes in its float64 partial sum, and the kernel's fixed-point masses round them to 0.
                    // Their lengths may differ only where the CPU's float64 ratio rounds across top-p (the kernel's
                    // integer comparison is exact): then the shorter prefix's mass ratio is within 1e-12 of top-p.
                    boolean[] want = FilteredDraw.keptSet(clean, 0, v, k, s.topP(), invT, lse);
                    int[] order = Sampler.sortedDescending(clean, 0, v);
                    double massK = 0;
                    for (int q = 0; q < k; q++) massK += Math.exp(clean[order[q]] * invT - lse);
                    int lc = 0, lt = 0, live = 0; // kept counts, and tokens seen, among those with p >= 1e-12
                    double[] ratio = new double[v + 1];
                    for (int q = 0; q < v; q++) {
                        int j = order[q];
                        double pj = Math.exp(clean[j] * invT - lse);
                        ratio[q + 1] = ratio[q] + pj / massK;
                        if (!(pj >= 1e-12)) continue;
                        assertTrue(!want[j] || lc == live, what + ": the CPU's kept set is a prefix");
                        assertTrue(!t.kept[j] || lt == live, what + ": the kernel's kept set is a prefix of the ranking (rank " + q + ", index " + j + ")");
                        if (want[j]) lc++;
                        if (t.kept[j]) lt++;
                        live++;
                    }
                    if (lt != lc) {
                        assertTrue(s.topP() < 1f, what + ": top-k alone is exact (kernel " + lt + " tokens, CPU " + lc + ")");
                        assertEquals(s.topP(), ratio[Math.min(lt, lc)], 1e-12, what + ": kernel keeps " + lt + ", CPU " + lc + " tokens away from a rounding tie");
                    }
                    assertTrue(t.kept[t.token], what + ": the drawn token is kept");
                    if (lt == lc && cpu(clean, s, stream, 0).token() != t.token) differ++;
                    n++;
                }
            }
        }
        System.out.println("corner-case rows: " + n + " filtered draws, " + differ + " tokens differ from the CPU's");
        assertTrue(differ <= n / 1000, differ + " of " + n + " draws differ from the CPU's (> 0.1%)");
    }

    /**
     * The tokens top-k then top-p keep, from their definition: the k largest logits (ties: the lower id first), then
     * the fewest of them, largest first, whose softmax mass reaches top_p of the k's mass.
     */
    static boolean[] keptByDefinition(float[] x, int k, float topP, double invT) {
        Integer[] order = new Integer[x.length];
        for (int i = 0; i < x.length; i++) order[i] = i;
        java.util.Arrays.sort(order, (a, b) -> x[a] != x[b] ? Float.compare(x[b], x[a]) : Integer.compare(a, b));
        double max = Double.NEGATIVE_INFINITY;
        for (float v : x) max = Math.max(max, v * invT);
        double[] w = new double[x.length];
        for (int i = 0; i < x.length; i++) w[i] = Math.exp(x[i] * invT - max);
        double massK = 0;
        for (int r = 0; r < k; r++) massK += w[order[r]];
        boolean[] keep = new boolean[x.length];
        double mass = 0;
        for (int r = 0; r < k; r++) {
            keep[order[r]] = true;
            mass += w[order[r]];
            if (mass / massK >= topP) break;
        }
        return keep;
    }

    /** Draws of the twin over many u: chi-square at alpha 1e-4 against the filtered, renormalized softmax. */
    @Test
    void theTwinsDrawsFollowTheFilteredSoftmax() {
        double[] z = {0.1, 2.0, -1.0, 1.2, 0.9, 1.2, -0.3, 0.0, 1.9, 0.4, -2.5, 1.7};
        float[] x = new float[z.length];
        for (int i = 0; i < z.length; i++) x[i] = (float) z[i];
        for (SamplingSpec s : new SamplingSpec[] {new SamplingSpec(1.1f, 0, 1f, 3), new SamplingSpec(1.1f, 4, 1f, 3),
                new SamplingSpec(0.9f, 0, 0.7f, 3), new SamplingSpec(1.1f, 6, 0.8f, 3)}) {
            double invT = 1.0 / s.temperature(), lse = Sampler.logSumExp(x, 0, x.length, invT);
            int k = s.topK() == 0 ? x.length : s.topK();
            boolean[] keep = keptByDefinition(x, k, s.topP(), invT);
            assertArrayEquals(keep, FilteredDraw.keptSet(x, 0, x.length, k, s.topP(), invT, lse), "the twin's kept set, " + s);
            double[] q = new double[x.length];
            double mass = 0;
            TreeSet<Integer> sup = new TreeSet<>();
            for (int i = 0; i < x.length; i++) if (keep[i]) { q[i] = Math.exp(x[i] * invT - lse); mass += q[i]; sup.add(i); }
            for (int i = 0; i < x.length; i++) q[i] /= mass;
            int n = 40_000;
            int[] tok = new int[n];
            for (int i = 0; i < n; i++) tok[i] = twin(x, s, Philox.uniform(s.seed(), i, 0)).token;
            SampleConformanceTest.Suite.chiSquare("host twin " + s, tok, q, sup);
        }
    }

    /** Backend.sample's rule for non-finite rows (NaN = -inf; an infinite maximum: its first index, logprob NaN). */
    @Test
    void nonFiniteRowsFollowTheContract() {
        float nan = Float.NaN, inf = Float.POSITIVE_INFINITY;
        float[][] rows = {{nan, nan, nan, nan}, {-inf, nan, -inf, -inf}, {1f, inf, 2f, inf}, {nan, 3f, inf, nan}};
        int[] want = {0, 0, 1, 2};
        for (SamplingSpec s : new SamplingSpec[] {new SamplingSpec(0f, 0, 1f, 1), new SamplingSpec(1f, 0, 1f, 2),
                new SamplingSpec(0.7f, 2, 1f, 3), new SamplingSpec(1.3f, 0, 0.5f, 4)})
            for (int i = 0; i < rows.length; i++) {
                Twin t = twin(rows[i], s, 0.5);
                assertEquals(want[i], t.token, java.util.Arrays.toString(rows[i]) + " " + s);
                assertTrue(Double.isNaN(t.logprob), "NaN logprob flags the row");
            }
        // a finite maximum: NaN entries have probability 0 (and rank as -inf for top-k)
        float[] x = {nan, 0.5f, -inf, 1.5f, nan, 1.0f};
        for (int i = 0; i < 200; i++) {
            double u = Philox.uniform(5, i, 0);
            int tok = twin(x, new SamplingSpec(0.9f, 0, 1f, 5), u).token;
            assertTrue(tok == 1 || tok == 3 || tok == 5, "token " + tok);
            int top2 = twin(x, new SamplingSpec(0.9f, 2, 1f, 5), u).token;
            assertTrue(top2 == 3 || top2 == 5, "top-2 token " + top2);
            float[] clean = {-inf, 0.5f, -inf, 1.5f, -inf, 1.0f};
            assertEquals(cpu(clean, new SamplingSpec(0.9f, 0, 1f, 5), i, 0).token(), tok, "as on the row with NaN replaced by -inf");
        }
        assertEquals(3, twin(x, new SamplingSpec(0f, 0, 1f, 1), 0).token, "greedy skips NaN");
        // +0 ranks above -0 (the CPU's sort order), with equal probability
        float[] z = {-0f, 0f, -1f};
        assertArrayEquals(new boolean[] {false, true, false}, twin(z, new SamplingSpec(1f, 1, 1f, 1), 0.3).kept);
    }

    /**
     * Logits near the float range and extreme temperatures stay finite. (At 3e38 the CPU's float64 log-sum-exp absorbs
     * log 2 and gives both maxima probability 1, so the reference here is the exact distribution, not the CPU.)
     */
    @Test
    void extremeInputs() {
        float[] x = {3e38f, -3e38f, 3e38f, 0f, 1e-30f};
        for (SamplingSpec s : new SamplingSpec[] {new SamplingSpec(1f, 0, 1f, 1), new SamplingSpec(1e-30f, 0, 1f, 1),
                new SamplingSpec(1e30f, 0, 1f, 1), new SamplingSpec(1e30f, 0, 0.9f, 1)}) {
            int[] seen = new int[x.length];
            for (int i = 0; i < 100; i++) {
                Twin t = twin(x, s, Philox.uniform(9, i, 1));
                seen[t.token]++;
                assertEquals(-Math.log(2), t.logprob, 1e-6, s + ": two maxima, each with probability 1/2");
            }
            assertTrue(seen[0] > 20 && seen[2] > 20 && seen[0] + seen[2] == 100, s + ": " + java.util.Arrays.toString(seen));
        }
        Twin t = twin(x, new SamplingSpec(Float.MIN_VALUE, 2, 0.5f, 1), 0.9);
        assertEquals(0, t.token, "top-p 0.5 of two equal maxima keeps the lower index");
        assertEquals(-Math.log(2), t.logprob, 1e-6);
        // ordinary logits at extreme temperatures: as the CPU
        SplittableRandom r = new SplittableRandom(15);
        float[] y = row(r, 300, 1);
        for (SamplingSpec s : new SamplingSpec[] {new SamplingSpec(1e-6f, 0, 1f, 1), new SamplingSpec(1e6f, 0, 1f, 1),
                new SamplingSpec(1e6f, 10, 0.5f, 1), new SamplingSpec(Float.MIN_VALUE, 0, 1f, 1)})
            for (int i = 0; i < 50; i++) {
                Twin tw = twin(y, s, Philox.uniform(s.seed(), i, 1));
                Sampler.Result c = cpu(y, s, i, 1);
                assertEquals(c.token(), tw.token, s + " row " + i);
                assertEquals(c.logprob(), tw.logprob, 1e-5 * Math.max(1, Math.abs(c.logprob())), s + " row " + i);
            }
    }
}
