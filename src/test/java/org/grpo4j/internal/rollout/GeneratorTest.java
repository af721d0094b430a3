package org.grpo4j.internal.rollout;

import static org.junit.jupiter.api.Assertions.*;

import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.SplittableRandom;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.TestBackends;
import org.grpo4j.internal.model.LlamaConfig;
import org.grpo4j.internal.model.LlamaModel;
import org.grpo4j.internal.model.LlamaWeights;
import org.grpo4j.internal.model.PackedBatch;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

class GeneratorTest {
    static final int V = 13;
    static LlamaWeights weights;
    static LlamaModel model;

    @BeforeAll
    static void setUp() {
        Backend be = TestBackends.cpu();
        LlamaConfig c = new LlamaConfig(16, 32, 2, 4, 2, 4, V, 1e-5, 10000, null, 256, false, 0, List.of(1));
        weights = LlamaWeights.init(be, c, 3);
        // scale the random weights up so the distribution over the 13 tokens is far from uniform
        float[] a = weights.flat().toFloats();
        SplittableRandom r = new SplittableRandom(4);
        for (int i = 0; i < a.length; i++) a[i] = (float) (r.nextGaussian() * 0.5);
        for (var e : weights.layout().entries())
            if (e.name().endsWith("norm.weight")) java.util.Arrays.fill(a, (int) e.offset(), (int) (e.offset() + e.numel()), 1f);
        be.copyFromHost(weights.flat(), a);
        model = new LlamaModel(weights);
    }

    @AfterAll
    static void tearDown() { weights.close(); }

    static List<int[]> prompts() {
        return List.of(new int[] {2, 3, 4, 5, 6}, new int[] {7}, new int[] {8, 9, 10, 11, 12, 2, 3, 4, 5}, new int[] {2, 2});
    }

    static Generator gen(int blockSize, int blocks, int maxBatch, boolean share) {
        return new Generator(model, new Generator.Config(blockSize, blocks, maxBatch, share));
    }

    static float[] fullLogitsLastRow(int[] seq) {
        try (PackedBatch b = PackedBatch.of(model.backend(), List.of(seq), V)) {
            float[] all = model.logits(b);
            return java.util.Arrays.copyOfRange(all, (seq.length - 1) * V, seq.length * V);
        }
    }

    @Test
    void greedyEqualsAnArgmaxLoopOverFullForwards() {
        SamplingParams p = new SamplingParams(1, 0f, 1f, 0, 7, Set.of(), 1);
        List<List<Completion>> out = gen(4, 64, 8, true).generate(prompts(), p);
        for (int i = 0; i < prompts().size(); i++) {
            int[] seq = prompts().get(i);
            List<Integer> want = new ArrayList<>();
            for (int step = 0; step < 7; step++) {
                float[] lg = fullLogitsLastRow(seq);
                int best = 0;
                for (int j = 1; j < V; j++) if (lg[j] > lg[best]) best = j;
                want.add(best);
                seq = java.util.Arrays.copyOf(seq, seq.length + 1);
                seq[seq.length - 1] = best;
            }
            Completion c = out.get(i).get(0);
            assertArrayEquals(want.stream().mapToInt(Integer::intValue).toArray(), c.tokens(), "prompt " + i);
            assertEquals(Completion.FinishReason.LENGTH, c.finishReason());
        }
    }

    /** A call without a decode step (one token each: the prefill samples it) has no host time per step, not 0 ms. */
    @Test
    void aCallWithoutDecodeStepsHasNoHostTimePerStep() {
        Generator g = gen(4, 64, 8, true);
        g.generate(prompts(), new SamplingParams(2, 1f, 1f, 0, 1, Set.of(), 3));
        assertEquals(0, g.lastStats().decodeSteps());
        assertTrue(Double.isNaN(g.lastStats().hostMillisPerDecodeStep()), "host ms per step " + g.lastStats().hostMillisPerDecodeStep());
        g.generate(prompts(), new SamplingParams(2, 1f, 1f, 0, 4, Set.of(), 3));
        assertTrue(g.lastStats().decodeSteps() > 0 && g.lastStats().hostMillisPerDecodeStep() >= 0, g.lastStats().toString());
    }

    @Test
    void prefixSharingPoolSizeAndBatchSizeDoNotChangeTokens() {
        SamplingParams p = new SamplingParams(5, 1f, 0.9f, 0, 9, Set.of(1), 77);
        Generator shared = gen(4, 200, 64, true);
        List<List<Completion>> a = shared.generate(prompts(), p);
        // prompts 0 and 2 have full blocks of 4: their samples' decode attention read them as prefix groups
        assertTrue(shared.lastStats().prefixGroupRows() > 0, "prefix groups were used");
        Generator unshared = gen(4, 200, 64, false);
        List<List<Completion>> b = unshared.generate(prompts(), p);
        assertEquals(0, unshared.lastStats().prefixGroupRows());
        Generator small = gen(3, 8, 2, true); // far fewer blocks than 20 sequences need at once
        List<List<Completion>> c = small.generate(prompts(), p);
        assertTrue(small.lastStats().peakBlocksUsed() <= 8);
        for (int i = 0; i < a.size(); i++)
            for (int j = 0; j < 5; j++) {
                assertArrayEquals(a.get(i).get(j).tokens(), b.get(i).get(j).tokens(), "sharing on/off, prompt " + i + " sample " + j);
                assertArrayEquals(a.get(i).get(j).logprobs(), b.get(i).get(j).logprobs(), "sharing on/off, prompt " + i + " sample " + j);
                assertArrayEquals(a.get(i).get(j).tokens(), c.get(i).get(j).tokens(), "small pool, prompt " + i + " sample " + j);
                assertArrayEquals(a.get(i).get(j).logprobs(), c.get(i).get(j).logprobs());
            }
    }

    @Test
    void stopTokensEndCompletionsAndAreKept() {
        SamplingParams p = new SamplingParams(16, 1f, 1f, 0, 12, Set.of(1, 5), 5);
        List<List<Completion>> out = gen(4, 200, 64, true).generate(prompts(), p);
        int stops = 0;
        for (List<Completion> cs : out)
            for (Completion c : cs) {
                int[] t = c.tokens();
                for (int k = 0; k < t.length - 1; k++) assertFalse(t[k] == 1 || t[k] == 5, "stop token before the end");
                if (c.finishReason() == Completion.FinishReason.STOP) {
                    stops++;
                    assertTrue(t[t.length - 1] == 1 || t[t.length - 1] == 5);
                } else assertEquals(12, t.length);
                assertEquals(t.length, c.logprobs().length);
            }
        assertTrue(stops > 0);
    }

    /**
     * Stop strings (vLLM semantics): with a decoder that spells token t as one letter ('a' + t, token 0 decoding to
     * nothing like a skipped special token), each completion is the stop-free completion (same Philox streams) cut
     * right after the first token whose text completes a stop string, that token kept; a stop token still wins.
     */
    @Test
    void stopStringsEndCompletionsAfterTheCompletingToken() {
        java.util.function.Function<int[], String> decode = ids -> {
            StringBuilder sb = new StringBuilder();
            for (int t : ids) if (t != 0) sb.append((char) ('a' + t));
            return sb.toString();
        };
        List<String> stops = List.of("dc", "hh", "l");
        SamplingParams free = new SamplingParams(16, 1f, 1f, 0, 40, Set.of(1), 21);
        SamplingParams stopped = new SamplingParams(16, 1f, 1f, 0, 40, Set.of(1), 21, new StopStrings(stops, decode));
        List<List<Completion>> a = gen(4, 400, 64, true).generate(prompts(), free);
        List<List<Completion>> b = gen(4, 400, 64, true).generate(prompts(), stopped);
        int byString = 0;
        for (int i = 0; i < a.size(); i++)
            for (int j = 0; j < 16; j++) {
                int[] full = a.get(i).get(j).tokens();
                int cut = full.length;
                Completion.FinishReason want = a.get(i).get(j).finishReason();
                for (int k = 1; k <= full.length; k++) {
                    String text = decode.apply(java.util.Arrays.copyOf(full, k));
                    if (full[k - 1] != 1 && stops.stream().anyMatch(text::contains)) {
                        cut = k;
                        want = Completion.FinishReason.STOP_STRING;
                        break;
                    }
                }
                Completion c = b.get(i).get(j);
                assertArrayEquals(java.util.Arrays.copyOf(full, cut), c.tokens(), "prompt " + i + " sample " + j);
                assertEquals(want, c.finishReason(), "prompt " + i + " sample " + j);
                if (want == Completion.FinishReason.STOP_STRING) byString++;
            }
        assertTrue(byString > 8, "stop strings ended " + byString + " of 64 completions");
        assertThrows(IllegalArgumentException.class, () -> new StopStrings(List.of(""), decode));
    }

    @Test
    void samplesFollowTheModelDistributionAndTopKIsRespected() {
        int[] prompt = {3, 4, 5};
        float[] lg = fullLogitsLastRow(prompt);
        double mx = Double.NEGATIVE_INFINITY, s = 0;
        for (float x : lg) mx = Math.max(mx, x);
        double[] pr = new double[V];
        for (int j = 0; j < V; j++) s += pr[j] = Math.exp(lg[j] - mx);
        int n = 6000;
        List<List<Completion>> out = gen(4, 4000, 512, true).generate(List.of(prompt), new SamplingParams(n, 1f, 1f, 0, 1, Set.of(), 9));
        int[] counts = new int[V];
        for (Completion c : out.get(0)) counts[c.tokens()[0]]++;
        // cells of {observed, expected} draws; tokens expecting fewer than 5 are pooled (the chi-square approximation
        // needs about 5 per cell), a pool still under 5 joins the smallest cell
        List<double[]> cells = new java.util.ArrayList<>();
        double[] pool = new double[2];
        for (int j = 0; j < V; j++) {
            double e = pr[j] / s * n;
            double[] cell = e < 5 ? pool : new double[2];
            if (cell != pool) cells.add(cell);
            cell[0] += counts[j];
            cell[1] += e;
        }
        if (pool[1] >= 5) cells.add(pool);
        else if (pool[1] > 0) {
            double[] least = java.util.Collections.min(cells, java.util.Comparator.comparingDouble(c -> c[1]));
            least[0] += pool[0];
            least[1] += pool[1];
        }
        double chi = 0;
        for (double[] c : cells) chi += (c[0] - c[1]) * (c[0] - c[1]) / c[1];
        int df = cells.size() - 1;
        assertTrue(df >= 8, "cells " + cells.size());
        double p = chiSquareSurvival(chi, df);
        assertTrue(p > 1e-4, "chi-square " + chi + " (df " + df + "): p = " + p + " <= alpha 1e-4");
        for (Completion c : out.get(0)) assertEquals(Math.log(pr[c.tokens()[0]] / s), c.logprobs()[0], 1e-5);
        // top-k 3: only the three most likely tokens ever appear
        Integer[] order = new Integer[V];
        for (int j = 0; j < V; j++) order[j] = j;
        java.util.Arrays.sort(order, (x, y) -> Float.compare(lg[y], lg[x]));
        Set<Integer> top3 = Set.of(order[0], order[1], order[2]);
        List<List<Completion>> k3 = gen(4, 4000, 512, true).generate(List.of(prompt), new SamplingParams(600, 1f, 1f, 3, 1, Set.of(), 9));
        java.util.Set<Integer> seen = new java.util.HashSet<>();
        for (Completion c : k3.get(0)) seen.add(c.tokens()[0]);
        assertEquals(top3, seen);
    }

    /**
     * P(X >= x) for X chi-square with {@code df} degrees of freedom: 1 - P(df/2, x/2), the regularized lower incomplete
     * gamma function by its series h^a e^-h / Gamma(a + 1) * sum over n of h^n / ((a + 1) ... (a + n)), with Gamma(a + 1)
     * exact for integer and half-integer a.
     */
    static double chiSquareSurvival(double x, int df) {
        if (df < 1) throw new IllegalArgumentException("df " + df);
        double a = df / 2.0, h = x / 2;
        double gamma = df % 2 == 0 ? 1 : Math.sqrt(Math.PI); // Gamma(1), Gamma(1/2)
        for (double g = df % 2 == 0 ? 1 : 0.5; g <= a; g++) gamma *= g;
        double term = 1, sum = 1;
        for (int k = 1; term > 1e-17 * sum; k++) sum += term *= h / (a + k);
        return 1 - Math.pow(h, a) * Math.exp(-h) / gamma * sum;
    }

    @Test
    void chiSquareSurvivalMatchesTheTable() {
        // closed forms: df 2 is e^(-x/2), df 4 is e^(-x/2) (1 + x/2)
        assertEquals(Math.exp(-1.5), chiSquareSurvival(3, 2), 1e-12);
        assertEquals(Math.exp(-10) * 11, chiSquareSurvival(20, 4), 1e-15);
        // SampleConformanceTest.CHI2_CRIT, the critical values at alpha 1e-4 for df 1..12 (to two decimals)
        double[] crit = {15.14, 18.42, 21.11, 23.51, 25.74, 27.86, 29.88, 31.83, 33.72, 35.56, 37.37, 39.13};
        for (int df = 1; df <= 12; df++) assertEquals(1e-4, chiSquareSurvival(crit[df - 1], df), 0.005e-4, "df " + df);
    }

    @Test
    void sameSeedRepeatsAndAnotherSeedDiffers() {
        SamplingParams p = new SamplingParams(4, 1f, 1f, 0, 10, Set.of(), 123);
        var a = gen(4, 100, 16, true).generate(prompts(), p);
        var b = gen(4, 100, 16, true).generate(prompts(), p);
        var c = gen(4, 100, 16, true).generate(prompts(), new SamplingParams(4, 1f, 1f, 0, 10, Set.of(), 124));
        boolean differs = false;
        for (int i = 0; i < a.size(); i++)
            for (int j = 0; j < 4; j++) {
                assertArrayEquals(a.get(i).get(j).tokens(), b.get(i).get(j).tokens());
                differs |= !java.util.Arrays.equals(a.get(i).get(j).tokens(), c.get(i).get(j).tokens());
            }
        assertTrue(differs);
    }

    @Test
    void poolTooSmallForOnePromptIsAClearError() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> gen(2, 3, 4, true).generate(prompts(), new SamplingParams(2, 1f, 1f, 0, 8, Set.of(), 1)));
        assertTrue(e.getMessage().contains("KV pool of 3 blocks"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> gen(4, 100, 4, true).generate(List.of(new int[] {99}), new SamplingParams(1, 1f, 1f, 0, 2, Set.of(), 1)));
    }

    /**
     * ON_DEMAND in pools far too small for the samples' worst case: samples are preempted (their K/V recomputed by a
     * prefill of their prompt and tokens when they resume) and prefilled prompts are given up and prefilled again, and
     * every completion is still the one a pool of plenty samples, token and log-prob bit for bit (the CPU computes
     * every row independently of the batch, and a prefill's K/V as a decode step's).
     */
    @Test
    void preemptedSamplesResumeWithTheSameTokens() {
        int pools = 0, preempted = 0, recomputed = 0, groups = 0;
        for (int maxTokens : new int[] {9, 20})
            for (int blockSize : new int[] {2, 3, 4})
                for (int blocks : new int[] {8, 10, 12, 16})
                    for (int maxBatch : new int[] {2, 4, 64}) {
                        SamplingParams p = new SamplingParams(5, 1f, 0.9f, 0, maxTokens, Set.of(1), 77);
                        int need = 0;
                        for (int[] q : prompts()) need = Math.max(need, (q.length + blockSize - 1) / blockSize + (q.length + maxTokens + blockSize - 1) / blockSize - q.length / blockSize);
                        if (need > blocks) continue; // refused up front (poolTooSmallForOnePromptIsAClearError)
                        List<List<Completion>> plenty = gen(blockSize, 400, 64, true).generate(prompts(), p);
                        Generator g = gen(blockSize, blocks, maxBatch, true);
                        List<List<Completion>> tight = g.generate(prompts(), p);
                        String at = "max_tokens " + maxTokens + ", blocks of " + blockSize + ", " + blocks + " blocks, max batch " + maxBatch;
                        assertSameCompletions(plenty, tight, at);
                        Generator.Stats st = g.lastStats();
                        pools++;
                        preempted += st.preemptions();
                        recomputed += (int) st.recomputedTokens();
                        groups += g.lastGroupsGivenUp;
                    }
        System.out.printf("%d tight pools: %d preemptions, %d tokens recomputed, %d prefilled prompts given up%n", pools, preempted, recomputed, groups);
        assertTrue(pools > 40 && preempted > 0 && recomputed > 0 && groups > 0, "every path of the scheduler ran");
    }

    /**
     * A GRPO-like rollout (6 prompts x 16 samples, most stopping early) in a pool that holds 24 worst-case
     * completions: ON_DEMAND decodes more samples at once and finishes in fewer decode steps than WORST_CASE, with the
     * same completions, and a pool that holds every worst case gives WORST_CASE the same steps as ON_DEMAND.
     */
    @Test
    void onDemandDecodesMoreSamplesAtOnceThanWorstCase() {
        List<int[]> prompts = new ArrayList<>();
        SplittableRandom r = new SplittableRandom(5);
        for (int i = 0; i < 6; i++) {
            int[] q = new int[10 + r.nextInt(12)];
            for (int j = 0; j < q.length; j++) q[j] = 2 + r.nextInt(11);
            prompts.add(q);
        }
        SamplingParams p = new SamplingParams(16, 0.7f, 1f, 0, 64, Set.of(1, 5), 77);
        int seqBlocks = (21 + 64 + 3) / 4 + 1;
        Generator onDemand = gen(4, 24 * seqBlocks, 96, true);
        Generator worst = new Generator(model, new Generator.Config(4, 24 * seqBlocks, 96, true).withAdmission(Generator.Admission.WORST_CASE));
        Generator roomy = new Generator(model, new Generator.Config(4, 96 * seqBlocks, 96, true).withAdmission(Generator.Admission.WORST_CASE));
        var a = onDemand.generate(prompts, p);
        var b = worst.generate(prompts, p);
        var c = roomy.generate(prompts, p);
        assertSameCompletions(c, a, "on demand");
        assertSameCompletions(c, b, "worst case");
        Generator.Stats od = onDemand.lastStats(), wc = worst.lastStats();
        System.out.printf("96 samples, a pool of 24 worst cases: %d decode steps on demand (mean batch %.1f, %d preemptions), %d worst case (mean batch %.1f); %d with room for all%n",
                od.decodeSteps(), od.meanBatch(), od.preemptions(), wc.decodeSteps(), wc.meanBatch(), roomy.lastStats().decodeSteps());
        assertTrue(od.decodeSteps() < wc.decodeSteps() && od.peakBatch() > wc.peakBatch(), od + " vs " + wc);
        assertEquals(roomy.lastStats().decodeSteps(), od.decodeSteps());
        assertEquals(0, od.preemptions(), "the early stops leave room for all");
        assertEquals(0, wc.preemptions());
    }

    /**
     * Samples that never stop (16 of up to 20 + 200 tokens) in pools of 2 to 8 worst cases: ON_DEMAND preempts, and
     * recomputes by prefills, yet runs fewer decode steps than WORST_CASE, with the completions of a pool of plenty.
     */
    @Test
    void onDemandRunsFewerDecodeStepsEvenWhenItPreempts() {
        SplittableRandom r = new SplittableRandom(1);
        List<int[]> prompts = new ArrayList<>();
        for (int i = 0; i < 2; i++) prompts.add(r.ints(20, 2, 13).toArray());
        SamplingParams p = new SamplingParams(8, 1f, 1f, 0, 200, Set.of(), 3);
        int per = (20 + 200 + 15) / 16;
        List<List<Completion>> plenty = gen(16, 64 * per, 16, true).generate(prompts, p);
        for (int k : new int[] {2, 3, 5, 8}) {
            Generator od = gen(16, k * per + 2, 16, true);
            Generator wc = new Generator(model, new Generator.Config(16, k * per + 2, 16, true).withAdmission(Generator.Admission.WORST_CASE));
            assertSameCompletions(plenty, od.generate(prompts, p), "on demand, a pool of " + k + " worst cases");
            assertSameCompletions(plenty, wc.generate(prompts, p), "worst case, a pool of " + k + " worst cases");
            Generator.Stats a = od.lastStats(), b = wc.lastStats();
            System.out.printf("a pool of %d worst cases: %d decode steps on demand (%d preemptions, %d tokens recomputed), %d worst case%n", k,
                    a.decodeSteps(), a.preemptions(), a.recomputedTokens(), b.decodeSteps());
            assertTrue(a.preemptions() > 0 && a.decodeSteps() < b.decodeSteps(), a + " vs " + b);
        }
    }

    /**
     * Random calls (1-24 prompts of 1-12 tokens, some whole blocks; 1-8 samples; 1-30 tokens; blocks of 1-11; pools
     * from the smallest the call accepts; max batch 1-8 or 64; stop tokens; prefix sharing and groups on or off;
     * greedy or sampled) in both admissions: every completion is the one a pool of plenty gives, bit for bit, and
     * nothing throws (the scheduler's preemptions, recomputes and prompts given up included).
     */
    @Test
    void randomCallsInTightPoolsGiveThePlentyPoolsCompletions() {
        long preemptions = 0;
        for (int seed = 0; seed < 120; seed++) {
            SplittableRandom r = new SplittableRandom(seed);
            int np = r.nextInt(5) == 0 ? 10 + r.nextInt(15) : 1 + r.nextInt(6);
            int bs = r.nextInt(5) == 0 ? 6 + r.nextInt(6) : 1 + r.nextInt(5);
            List<int[]> prompts = new ArrayList<>();
            for (int i = 0; i < np; i++) prompts.add(r.ints(r.nextInt(4) == 0 ? bs * (1 + r.nextInt(3)) : 1 + r.nextInt(12), 0, V).toArray());
            int n = r.nextInt(4) == 0 ? 1 : 1 + r.nextInt(8), maxTokens = r.nextInt(5) == 0 ? 1 + r.nextInt(2) : 1 + r.nextInt(30);
            Set<Integer> stop = switch (r.nextInt(3)) { case 0 -> Set.of(); case 1 -> Set.of(1); default -> Set.of(1, 5); };
            boolean share = r.nextBoolean(), groups = r.nextBoolean();
            int maxBatch = r.nextInt(4) == 0 ? 64 : 1 + r.nextInt(8);
            int need = 0;
            for (int[] q : prompts) need = Math.max(need, (q.length + bs - 1) / bs + (q.length + maxTokens - 1 + bs - 1) / bs - q.length / bs);
            int blocks = need + (r.nextBoolean() ? r.nextInt(3) : r.nextInt(40));
            SamplingParams p = new SamplingParams(n, r.nextInt(4) == 0 ? 0f : 1f, 0.9f, 0, maxTokens, stop, seed);
            String at = "seed " + seed + ": " + np + " prompts, n " + n + ", max_tokens " + maxTokens + ", blocks of " + bs + ", " + blocks
                    + " blocks, max batch " + maxBatch + ", share " + share + ", groups " + groups;
            List<List<Completion>> plenty = new Generator(model, new Generator.Config(bs, 4000, 64, share, true, groups)).generate(prompts, p);
            for (Generator.Admission a : Generator.Admission.values()) {
                Generator g = new Generator(model, new Generator.Config(bs, blocks, maxBatch, share, true, groups, a));
                assertSameCompletions(plenty, g.generate(prompts, p), at + ", " + a);
                preemptions += g.lastStats().preemptions();
            }
        }
        assertTrue(preemptions > 100, preemptions + " preemptions");
    }

    /**
     * ON_DEMAND with a prefill bound (the trainer's memory plan): prompts of 5 + 1 + 9 + 2 tokens with max_tokens 2
     * are prefilled in calls of at most 10 tokens (one prompt and max_tokens - 1 is the least a bound can be), with the
     * completions of an unbounded call; in a tight pool the resumes' recompute prefills keep to it too.
     */
    @Test
    void onDemandPrefillsKeepToTheirBound() {
        SamplingParams p = new SamplingParams(3, 1f, 1f, 0, 2, Set.of(), 5);
        Generator free = gen(4, 200, 64, true), bounded = new Generator(model, new Generator.Config(4, 200, 64, true).withPrefillTokens(4));
        assertSameCompletions(free.generate(prompts(), p), bounded.generate(prompts(), p), "prefills of at most 10 tokens");
        assertEquals(17, free.lastLargestPrefill, "unbounded: every prompt in one prefill");
        // the bound 4 is raised to one sequence, 9 + 2 - 1 = 10: prompts 0 and 1 (6 tokens), then 2 alone (9), then 3 (2)
        assertEquals(9, bounded.lastLargestPrefill, "prompts 0 and 1, then 2, then 3");
        SamplingParams longer = new SamplingParams(5, 1f, 0.9f, 0, 20, Set.of(1), 77);
        Generator tight = new Generator(model, new Generator.Config(2, 16, 64, true).withPrefillTokens(12));
        assertSameCompletions(gen(2, 400, 64, true).generate(prompts(), longer), tight.generate(prompts(), longer), "tight and bounded");
        assertTrue(tight.lastStats().preemptions() > 0, tight.lastStats().toString());
        assertTrue(tight.lastLargestPrefill <= 9 + 20 - 1, tight.lastLargestPrefill + " tokens in one prefill");
    }

    /**
     * A sample's K/V stop one position short of its prompt plus max_tokens (its last token is never fed back): a
     * prompt of whole blocks and one token to sample needs no block of its own, and the pool's check and the
     * worst-case reservations count so (they asked one block more whenever prompt + max_tokens - 1 filled a block).
     */
    @Test
    void theLastSampledTokenTakesNoKvBlock() {
        List<int[]> whole = List.of(new int[] {2, 3, 4, 5}, new int[] {6, 7, 8, 9});
        for (Generator.Admission a : Generator.Admission.values()) {
            // block size 4: the prompt's one block; response_length 1 adds none, 5 adds one (positions 4..7)
            for (int[] mb : new int[][] {{1, 1}, {5, 2}, {6, 3}}) {
                SamplingParams p = new SamplingParams(3, 1f, 1f, 0, mb[0], Set.of(), 11);
                Generator exact = new Generator(model, new Generator.Config(4, mb[1], 64, true, false, true, a));
                assertSameCompletions(gen(4, 400, 64, true).generate(whole, p), exact.generate(whole, p),
                        a + ": max_tokens " + mb[0] + " in a pool of " + mb[1] + " blocks");
                if (mb[1] > 1) {
                    Generator tooSmall = new Generator(model, new Generator.Config(4, mb[1] - 1, 64, true, false, true, a));
                    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> tooSmall.generate(whole, p));
                    assertTrue(e.getMessage().contains("it needs " + mb[1] + " blocks"), e.getMessage());
                }
            }
        }
    }

    /**
     * on_demand admits a sample only where its first block fits beside what the running samples' next step takes: a
     * prompt that ends a block takes nothing at admission, and every waiting sample was admitted, only for the first
     * step to preempt the ones just admitted (recomputing their prompts). Here each sample needs exactly one block of
     * its own for its whole life, so a pool that runs fewer at once never has to preempt.
     */
    @Test
    void onDemandAdmitsNoSampleTheNextStepMustPreempt() {
        List<int[]> whole = List.of(new int[] {2, 3, 4, 5});
        for (int blocks = 3; blocks <= 6; blocks++) {
            SamplingParams p = new SamplingParams(6, 1f, 1f, 0, 4, Set.of(), 3); // positions 4..6: one block each
            Generator g = new Generator(model, new Generator.Config(4, blocks, 64, true, false, true, Generator.Admission.ON_DEMAND));
            assertSameCompletions(gen(4, 400, 64, true).generate(whole, p), g.generate(whole, p), blocks + " blocks");
            assertEquals(0, g.lastStats().preemptions(), blocks + " blocks: " + g.lastStats());
        }
        // a resumed sample is held to the same rule: samples that grow past their first block in a tight pool
        List<int[]> two = List.of(new int[] {2, 3, 4, 5}, new int[] {6, 7, 8, 9, 10, 11, 12, 1});
        SamplingParams longer = new SamplingParams(4, 1f, 1f, 0, 9, Set.of(), 4);
        Generator tight = new Generator(model, new Generator.Config(4, 7, 64, true, false, true, Generator.Admission.ON_DEMAND));
        assertSameCompletions(gen(4, 400, 64, true).generate(two, longer), tight.generate(two, longer), "7 blocks");
    }

    /**
     * worst_case admission keeps its prefills to the bound too (an eval step's 32 prompts went into one prefill of
     * up to 32 prompts, past the local_rollout_batch_size prompts the memory plan counts), with the same completions.
     */
    @Test
    void worstCasePrefillsKeepToTheirBoundToo() {
        SamplingParams p = new SamplingParams(3, 1f, 1f, 0, 2, Set.of(), 5);
        Generator free = new Generator(model, new Generator.Config(4, 200, 64, true, false, true, Generator.Admission.WORST_CASE));
        Generator bounded = new Generator(model, new Generator.Config(4, 200, 64, true, false, true, Generator.Admission.WORST_CASE, 4));
        assertSameCompletions(free.generate(prompts(), p), bounded.generate(prompts(), p), "worst_case prefills of at most 9 tokens");
        assertEquals(17, free.lastLargestPrefill, "unbounded: every prompt in one prefill");
        assertEquals(9, bounded.lastLargestPrefill, "prompts 0 and 1, then 2, then 3");
        // the bound's floor is the longest prompt (no worst_case sample is ever resumed), not a prompt and its
        // max_tokens - 1 (16 here: prompts 0, 1 and 2 together, 15 tokens, past the plan's 4)
        SamplingParams longer = new SamplingParams(3, 1f, 1f, 0, 8, Set.of(), 5);
        assertSameCompletions(free.generate(prompts(), longer), bounded.generate(prompts(), longer), "max_tokens 8");
        assertEquals(9, bounded.lastLargestPrefill, "prompts 0 and 1, then 2, then 3");
    }

    /**
     * Pipelined decode steps (each step issued before the host takes in the one before; the default on CUDA, forced
     * here on the CPU, where nothing overlaps but the scheduling is the same) give a serial run's completions, token and log-prob bit for bit, over random calls: stop tokens and stop strings, pools tight
     * enough to preempt, both admissions, prefix groups on and off, batches smaller than the samples.
     */
    @Test
    void pipelinedStepsGiveTheSerialCompletions() {
        java.util.function.Function<int[], String> decode = ids -> {
            StringBuilder sb = new StringBuilder();
            for (int t : ids) sb.append((char) ('a' + t % 26));
            return sb.toString();
        };
        long overlapped = 0, dropped = 0;
        for (int seed = 0; seed < 80; seed++) {
            SplittableRandom r = new SplittableRandom(1000 + seed);
            int np = 1 + r.nextInt(6), bs = 1 + r.nextInt(5);
            List<int[]> prompts = new ArrayList<>();
            for (int i = 0; i < np; i++) prompts.add(r.ints(1 + r.nextInt(12), 0, V).toArray());
            int n = 1 + r.nextInt(6), maxTokens = 1 + r.nextInt(24);
            Set<Integer> stop = switch (r.nextInt(3)) { case 0 -> Set.of(); case 1 -> Set.of(1); default -> Set.of(1, 5); };
            StopStrings strings = r.nextInt(3) == 0 ? new StopStrings(List.of("dc", "hh"), decode) : null;
            boolean share = r.nextBoolean(), groups = r.nextBoolean();
            int maxBatch = r.nextInt(3) == 0 ? 64 : 1 + r.nextInt(8);
            int need = 0;
            for (int[] q : prompts) need = Math.max(need, (q.length + bs - 1) / bs + (q.length + maxTokens - 1 + bs - 1) / bs - q.length / bs);
            int blocks = need + (r.nextBoolean() ? r.nextInt(3) : 400);
            SamplingParams p = new SamplingParams(n, 1f, 0.9f, 0, maxTokens, stop, seed, strings);
            Generator.Admission a = r.nextBoolean() ? Generator.Admission.ON_DEMAND : Generator.Admission.WORST_CASE;
            Generator.Config c = new Generator.Config(bs, blocks, maxBatch, share, true, groups, a);
            String at = "seed " + seed + ": " + c;
            Generator serial = new Generator(model, c.withPipelined(false)), piped = new Generator(model, c.withPipelined(true));
            assertSameCompletions(serial.generate(prompts, p), piped.generate(prompts, p), at);
            assertEquals(0, serial.lastStats().overlappedSteps(), at);
            overlapped += piped.lastStats().overlappedSteps();
            dropped += piped.lastStats().droppedRows();
        }
        assertTrue(overlapped > 500 && dropped > 20, overlapped + " steps overlapped, " + dropped + " rows dropped");
        // the default (AUTO) pipelines only where the backend queues its ops: not on the CPU
        Generator auto = gen(4, 400, 64, true);
        auto.generate(prompts(), new SamplingParams(4, 1f, 1f, 0, 12, Set.of(1), 3));
        assertEquals(0, auto.lastStats().overlappedSteps(), auto.lastStats().toString());
    }

    /**
     * Where every sample runs at once, a pipelined call issues every decode step but the first before taking in the
     * one before; it computes the serial call's rows plus one for each sample that a decode step stopped on a token
     * before max_tokens (the step after its stop was already issued), and at most one step more (when the last
     * samples all stop on a token).
     */
    @Test
    void pipelinedCallsComputeOneRowMoreForEachSampleThatStops() {
        for (long seed : new long[] {3, 4, 5}) {
            SamplingParams p = new SamplingParams(8, 1f, 1f, 0, 30, Set.of(1, 5), seed);
            Generator serial = new Generator(model, new Generator.Config(4, 400, 64, true).withPipelined(false));
            Generator piped = new Generator(model, new Generator.Config(4, 400, 64, true).withPipelined(true));
            List<List<Completion>> out = piped.generate(prompts(), p);
            assertSameCompletions(serial.generate(prompts(), p), out, "seed " + seed);
            Generator.Stats s = serial.lastStats(), q = piped.lastStats();
            long stopped = 0;
            for (List<Completion> cs : out)
                for (Completion c : cs) // (a sample whose first token, sampled by the prefill, stops is never in a step)
                    if (c.finishReason() == Completion.FinishReason.STOP && c.tokens().length > 1 && c.tokens().length < 30) stopped++;
            assertTrue(stopped > 5, stopped + " samples stopped early");
            assertEquals(stopped, q.droppedRows(), "seed " + seed);
            assertEquals(s.decodeRows() + stopped, q.decodeRows(), "seed " + seed);
            assertTrue(q.decodeSteps() - s.decodeSteps() == 0 || q.decodeSteps() - s.decodeSteps() == 1, s + " / " + q);
            assertEquals(q.decodeSteps() - 1, q.overlappedSteps(), "every step but the first overlaps: " + q);
        }
    }

    static void assertSameCompletions(List<List<Completion>> want, List<List<Completion>> got, String at) {
        assertEquals(want.size(), got.size(), at);
        for (int i = 0; i < want.size(); i++)
            for (int j = 0; j < want.get(i).size(); j++) {
                assertArrayEquals(want.get(i).get(j).tokens(), got.get(i).get(j).tokens(), at + ": prompt " + i + " sample " + j);
                assertArrayEquals(want.get(i).get(j).logprobs(), got.get(i).get(j).logprobs(), at + ": prompt " + i + " sample " + j);
                assertEquals(want.get(i).get(j).finishReason(), got.get(i).get(j).finishReason(), at);
            }
    }

    /**
     * A sampling params per prompt: each prompt's completions are those of generating it alone with its params (n,
     * max_tokens, temperature, top-p, top-k, seed, stop tokens), its random streams placed where the call puts them
     * (after the samples of the prompts before it, here through the prompt offset); so in the call's decode steps rows
     * with different specs sample side by side. With and without prefix sharing, in a pool far too small for all
     * samples at once (preemptions), and pipelined.
     */
    @Test
    void eachPromptSamplesWithItsOwnParams() {
        List<int[]> ps = prompts();
        // n 2, 2, 4, 4: stream bases 0, 2, 4, 8 = offsets 0, 1, 1, 2 times n
        List<SamplingParams> each = List.of(
                new SamplingParams(2, 1f, 1f, 0, 9, Set.of(1), 77),
                new SamplingParams(2, 0f, 1f, 0, 5, Set.of(), 3),             // greedy
                new SamplingParams(4, 0.7f, 0.8f, 0, 12, Set.of(1, 5), 77),   // top-p
                new SamplingParams(4, 1.3f, 1f, 3, 7, Set.of(), 9));          // top-k
        int[] offsets = {0, 1, 1, 2};
        List<List<List<Completion>>> alone = new ArrayList<>();
        for (int i = 0; i < ps.size(); i++) {
            SamplingParams p = each.get(i);
            SamplingParams at = new SamplingParams(p.n(), p.temperature(), p.topP(), p.topK(), p.maxTokens(), p.stopTokenIds(), p.seed(), null, offsets[i]);
            alone.add(gen(4, 200, 64, true).generate(List.of(ps.get(i)), at));
        }
        Generator[] gens = {gen(4, 200, 64, true), gen(4, 200, 64, false), gen(3, 9, 3, true),
                new Generator(model, new Generator.Config(4, 200, 64, true).withPipelined(true))};
        String[] names = {"shared", "unshared", "small pool", "pipelined"};
        for (int g = 0; g < gens.length; g++) {
            List<List<Completion>> got = gens[g].generate(ps, each);
            assertEquals(ps.size(), got.size());
            for (int i = 0; i < ps.size(); i++) {
                assertEquals(each.get(i).n(), got.get(i).size(), names[g] + ": completions of prompt " + i);
                for (int j = 0; j < each.get(i).n(); j++) {
                    Completion want = alone.get(i).get(0).get(j), c = got.get(i).get(j);
                    String at = names[g] + ": prompt " + i + " sample " + j;
                    assertArrayEquals(want.tokens(), c.tokens(), at);
                    assertArrayEquals(want.logprobs(), c.logprobs(), at);
                    assertEquals(want.finishReason(), c.finishReason(), at);
                    assertTrue(c.tokens().length <= each.get(i).maxTokens(), at);
                }
            }
            if (g == 2) assertTrue(gens[g].lastStats().preemptions() > 0, "the small pool preempted samples");
        }
        // the specs took effect: greedy samples are all alike, top-k 3 rows draw from at most 3 tokens a step
        assertArrayEquals(alone.get(1).get(0).get(0).tokens(), alone.get(1).get(0).get(1).tokens());
        List<List<Completion>> free = gen(4, 200, 64, true).generate(List.of(ps.get(1)), new SamplingParams(2, 1f, 1f, 0, 5, Set.of(), 3, null, 1));
        assertFalse(java.util.Arrays.equals(free.get(0).get(0).tokens(), alone.get(1).get(0).get(0).tokens())
                && java.util.Arrays.equals(free.get(0).get(1).tokens(), alone.get(1).get(0).get(1).tokens()), "temperature 1 differs from greedy");
    }

    @Test
    void oneParamsPerPromptIsRequired() {
        Generator g = gen(4, 200, 64, true);
        SamplingParams p = new SamplingParams(1, 1f, 1f, 0, 4, Set.of(), 1);
        var e = assertThrows(IllegalArgumentException.class, () -> g.generate(prompts(), List.of(p, p)));
        assertEquals("generator: 2 sampling params for 4 prompts (one per prompt)", e.getMessage());
        List<SamplingParams> withNull = new ArrayList<>(List.of(p, p, p, p));
        withNull.set(2, null);
        var n = assertThrows(NullPointerException.class, () -> g.generate(prompts(), withNull));
        assertEquals("generator: sampling params of prompt 2", n.getMessage());
    }
}

