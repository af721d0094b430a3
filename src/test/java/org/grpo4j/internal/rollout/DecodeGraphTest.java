package org.grpo4j.internal.rollout;

import static org.junit.jupiter.api.Assertions.*;

import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.SplittableRandom;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.TestBackends;
import org.grpo4j.internal.model.LlamaConfig;
import org.grpo4j.internal.model.LlamaModel;
import org.grpo4j.internal.model.LlamaWeights;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * Decode sessions (fixed per-bucket buffers, padding rows on the pad block) and decode graphs: the same tokens and
 * log-probs as plain eager decoding. On the CPU graphs are not available, so the session runs eagerly (padding and
 * buckets are still exercised); on CUDA (tag gpu) graphs are recorded and replayed and must give identical results.
 */
class DecodeGraphTest {
    static LlamaConfig small() {
        return new LlamaConfig(32, 48, 2, 4, 2, 8, 61, 1e-5, 10000, null, 256, false, 0, List.of(60));
    }

    static List<int[]> prompts(int count, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        List<int[]> out = new ArrayList<>();
        for (int i = 0; i < count; i++) out.add(r.ints(3 + r.nextInt(9), 0, 60).toArray());
        return out;
    }

    static List<List<Completion>> run(Backend be, DType dtype, boolean graphs, int maxBatch) {
        try (LlamaWeights w32 = LlamaWeights.init(be, small(), 7); LlamaWeights w = w32.castTo(dtype)) {
            Generator g = new Generator(new LlamaModel(w), new Generator.Config(4, 256, maxBatch, true, graphs));
            // 5 prompts x 3 samples with a stop token: the live batch shrinks and crosses bucket sizes as sequences end
            List<List<Completion>> out = g.generate(prompts(5, 3), new SamplingParams(3, 1f, 1f, 0, 12, Set.of(60, 59), 11));
            Generator.Stats st = g.lastStats();
            if (graphs && be.capturesGraphs()) {
                assertTrue(st.graphReplays() > 0, "graphs were replayed");
                // each bucket used: an eager warm-up, then the capture; counted apart from the issue cost per step
                assertTrue(st.graphSetupSteps() >= 2 && st.graphSetupSteps() < st.decodeSteps(), "set-up steps " + st.graphSetupSteps() + " of " + st.decodeSteps());
            } else assertEquals(0, st.graphSetupSteps(), "no graphs, no set-up steps");
            return out;
        }
    }

    static void assertSame(List<List<Completion>> a, List<List<Completion>> b) { GeneratorTest.assertSameCompletions(a, b, "decode"); }

    @Test
    void bucketsAndPaddingDoNotChangeTheTokensOnTheCpu() {
        Backend be = TestBackends.cpu();
        // maxBatch 1: every step runs alone (no padding); 16: steps run in padded power-of-two buckets
        assertSame(run(be, DType.FP32, false, 1), run(be, DType.FP32, true, 16));
        assertSame(run(be, DType.BF16, false, 1), run(be, DType.BF16, false, 16));
    }

    /**
     * A session's buckets share one set of working buffers sized for its largest bucket: after steps in every bucket
     * (1, 2, 4, 8 and 16 rows) the session holds one set of logits, not one a bucket (which held 31 rows' worth for a
     * largest bucket of 16, the memory estimate counting one set of 16). The same tokens as before either way
     * (bucketsAndPaddingDoNotChangeTheTokensOnTheCpu).
     */
    @Test
    void bucketsShareOneSetOfWorkingBuffers() {
        Backend be = TestBackends.cpu();
        LlamaConfig cfg = small();
        try (LlamaWeights w = LlamaWeights.init(be, cfg, 5)) {
            LlamaModel m = new LlamaModel(w);
            long start = be.liveBytes();
            try (LlamaModel.KvCache cache = m.newKvCache(40, 4); LlamaModel.DecodeSession s = m.newDecodeSession(cache, 16, 2, false)) {
                long before = be.liveBytes();
                long afterFirst = -1;
                for (int b : new int[] {16, 8, 4, 2, 1}) {
                    int[] tokens = new int[b], positions = new int[b], slots = new int[b], table = new int[2 * b];
                    for (int i = 0; i < b; i++) {
                        tokens[i] = i + 1;
                        slots[i] = i * 4; // block i, position 0
                        table[2 * i] = i;
                        table[2 * i + 1] = i;
                    }
                    s.run(tokens, positions, slots, table, 2, null, null);
                    if (afterFirst < 0) afterFirst = be.liveBytes();
                }
                long logitsSet = 16L * cfg.vocabSize() * 4;
                assertTrue(afterFirst - before >= logitsSet, "the largest bucket's buffers: " + (afterFirst - before) + " bytes");
                // the smaller buckets add their small integer buffers only (no second set of logits, 8 + 4 + 2 + 1 rows)
                long added = be.liveBytes() - afterFirst;
                assertTrue(added < 15L * cfg.vocabSize() * 4, "the smaller buckets added " + added + " bytes");
            }
            assertEquals(start, be.liveBytes(), "the session and its cache gave back every buffer");
        }
    }

    /**
     * Three sequences sharing their first block (written once by the first): session steps that name them as a prefix
     * group give the logits of ungrouped steps on a second cache, bit for bit on the CPU (the same keys, in the same
     * order, read through the first row) and within rounding on CUDA (other tiles: tol of the largest logit); with
     * graphs on CUDA.
     */
    static void prefixGroupedStepsMatchUngroupedOnes(Backend be, LlamaConfig cfg, DType dtype, double tol) {
        try (LlamaWeights w32 = LlamaWeights.init(be, cfg, 13); LlamaWeights w = w32.castTo(dtype)) {
            LlamaModel m = new LlamaModel(w);
            int[] table = {3, 1, 6, 3, 2, 5, 3, 4, 8}; // block 3 shared: {3,1,6}, {3,2,5}, {3,4,8}
            try (LlamaModel.KvCache a = m.newKvCache(9, 4); LlamaModel.KvCache b = m.newKvCache(9, 4);
                 LlamaModel.DecodeSession grouped = m.newDecodeSession(a, 4, 3, true, 1);
                 LlamaModel.DecodeSession plain = m.newDecodeSession(b, 4, 3, true, 0)) {
                for (int pos = 0; pos < 4; pos++) { // the shared block, once, on both caches
                    int[] one = {pos + 5}, p = {pos}, sl = {3 * 4 + pos}, t = {3, 1, 6};
                    grouped.run(one, p, sl, t, 3, null, null);
                    plain.run(one, p, sl, t, 3, null, null);
                }
                for (int pos = 4; pos < 12; pos++) {
                    int[] tokens = {pos + 1, 2 * pos + 3, 59 - pos}, positions = {pos, pos, pos}, slots = new int[3];
                    for (int r = 0; r < 3; r++) slots[r] = table[3 * r + pos / 4] * 4 + pos % 4;
                    float[] got = grouped.run(tokens, positions, slots, table, 3, null, new int[] {0, 3, 4}, null).logits().toFloatsWidened();
                    float[] want = plain.run(tokens, positions, slots, table, 3, null, null).logits().toFloatsWidened();
                    if (tol == 0) assertArrayEquals(want, got, "step at position " + pos);
                    else { // tol of the largest logit: reading another sequence's keys would move them by about that much
                        double scale = 0;
                        for (float x : want) scale = Math.max(scale, Math.abs(x));
                        for (int i = 0; i < want.length; i++)
                            assertEquals(want[i], got[i], tol * scale, "step at position " + pos + ", logit " + i);
                    }
                }
                assertEquals(8, grouped.prefixGroupRows());
                assertThrows(IllegalArgumentException.class, () -> plain.run(new int[] {1, 2}, new int[] {0, 0}, new int[] {0, 4},
                        new int[] {0, 1}, 1, null, new int[] {0, 2, 0}, null), "a session made without groups refuses them");
                assertThrows(IllegalArgumentException.class, () -> grouped.run(new int[] {1, 2}, new int[] {0, 0}, new int[] {0, 4},
                        new int[] {0, 1}, 1, null, new int[] {0, 1, 0, 1, 1, 0}, null), "more rows than the session's bound");
            }
        }
    }

    @Test
    void prefixGroupedStepsMatchUngroupedOnesOnTheCpu() {
        prefixGroupedStepsMatchUngroupedOnes(TestBackends.cpu(), small(), DType.FP32, 0);
        prefixGroupedStepsMatchUngroupedOnes(TestBackends.cpu(), small(), DType.BF16, 0);
    }

    /** Head dim 64 in bf16 (the prefix kernel on tensor cores) and the small model's 8 (the generic path). */
    @Test
    @Tag("gpu")
    void prefixGroupedStepsMatchUngroupedOnesOnCuda() {
        Backend be = TestBackends.cuda();
        LlamaConfig hd64 = new LlamaConfig(256, 128, 2, 4, 2, 64, 61, 1e-5, 10000, null, 256, false, 0, List.of(60));
        prefixGroupedStepsMatchUngroupedOnes(be, hd64, DType.BF16, 0.02);
        prefixGroupedStepsMatchUngroupedOnes(be, small(), DType.BF16, 0.02);
        prefixGroupedStepsMatchUngroupedOnes(be, small(), DType.FP32, 1e-4);
    }

    /** 3 live rows in a bucket of 4 (one padding row on the pad block) vs plain 3-row decode steps on another cache. */
    @Test
    void paddedSessionStepsEqualPlainDecodeSteps() {
        Backend be = TestBackends.cpu();
        try (LlamaWeights w = LlamaWeights.init(be, small(), 9)) {
            LlamaModel m = new LlamaModel(w);
            int[] table = {3, 1, 6, 0, 2, 5, 7, 4, 8}; // rows' blocks: {3,1,6}, {0,2,5}, {7,4,8}
            try (LlamaModel.KvCache a = m.newKvCache(9, 4); LlamaModel.KvCache b = m.newKvCache(9, 4);
                 LlamaModel.DecodeSession s = m.newDecodeSession(a, 4, 3, true)) {
                for (int pos = 0; pos < 9; pos++) {
                    int[] tokens = {pos + 1, 2 * pos + 3, 59 - pos}, positions = {pos, pos, pos}, slots = new int[3];
                    for (int r = 0; r < 3; r++) slots[r] = table[3 * r + pos / 4] * 4 + pos % 4;
                    float[] got = s.run(tokens, positions, slots, table, 3, null, null).logits().toFloats();
                    float[] want = m.decodeStep(b, tokens, positions, slots, table, 3);
                    assertArrayEquals(want, got, "step at position " + pos);
                }
            }
        }
    }

    @Test
    @Tag("gpu")
    void cudaGraphsGiveTheEagerTokens() {
        Backend be = TestBackends.cuda();
        assertSame(run(be, DType.BF16, false, 16), run(be, DType.BF16, true, 16));
        assertSame(run(be, DType.FP32, false, 16), run(be, DType.FP32, true, 16));
    }

    /**
     * A sampling params per prompt with different specs (greedy, top-p, top-k, another seed): decode steps record their
     * graphs up to the logits and sample each spec's rows after the replay; the tokens are the eager steps', bit for
     * bit (the same shapes and kernels); on the CPU (no graphs) the eager session against maxBatch 1.
     */
    static void mixedSpecsGiveTheEagerTokens(Backend be, DType dtype, boolean graphs, int maxBatch, List<List<Completion>> want) {
        try (LlamaWeights w32 = LlamaWeights.init(be, small(), 7); LlamaWeights w = w32.castTo(dtype)) {
            List<SamplingParams> each = List.of(new SamplingParams(3, 1f, 1f, 0, 12, Set.of(60, 59), 11),
                    new SamplingParams(2, 0f, 1f, 0, 9, Set.of(60), 11), new SamplingParams(3, 0.8f, 0.7f, 0, 12, Set.of(60, 59), 11),
                    new SamplingParams(1, 1.2f, 1f, 5, 10, Set.of(60), 4), new SamplingParams(3, 1f, 1f, 0, 12, Set.of(60, 59), 11));
            Generator g = new Generator(new LlamaModel(w), new Generator.Config(4, 256, maxBatch, true, graphs));
            List<List<Completion>> got = g.generate(prompts(5, 3), each);
            if (graphs && be.capture(() -> {}) != null) assertTrue(g.lastStats().graphReplays() > 0, "graphs were replayed");
            for (int i = 0; i < 5; i++) assertEquals(each.get(i).n(), got.get(i).size());
            if (want != null) assertSame(want, got);
            else mixedSpecsGiveTheEagerTokens(be, dtype, false, graphs ? maxBatch : 1, got);
        }
    }

    @Test
    void mixedSpecsGiveTheEagerTokensOnTheCpu() { mixedSpecsGiveTheEagerTokens(TestBackends.cpu(), DType.FP32, false, 16, null); }

    @Test
    @Tag("gpu")
    void mixedSpecsGiveTheEagerTokensOnCuda() {
        mixedSpecsGiveTheEagerTokens(TestBackends.cuda(), DType.BF16, true, 16, null);
        mixedSpecsGiveTheEagerTokens(TestBackends.cuda(), DType.FP32, true, 16, null);
    }

    /**
     * ON_DEMAND admission in a pool of 24 blocks of 4 tokens for 15 sequences of up to 5 + 20 tokens: samples are
     * preempted and resumed (their K/V recomputed by a prefill; decode steps graph-replayed on CUDA). On the CPU the
     * completions of a pool with room for all, bit for bit. On CUDA in fp32 the same except where a recomputed K/V's
     * last bits (other GEMM shapes) move a sampling boundary (at most 1 of 15 sequences); in bf16 it runs, preempts and
     * every completion is well formed.
     */
    static void preemptedSamplesResume(Backend be, boolean exact) {
        for (DType dt : new DType[] {DType.FP32, DType.BF16})
            try (LlamaWeights w32 = LlamaWeights.init(be, small(), 7); LlamaWeights w = w32.castTo(dt)) {
                LlamaModel m = new LlamaModel(w);
                SamplingParams p = new SamplingParams(3, 1f, 1f, 0, 20, Set.of(60), 11);
                Generator tight = new Generator(m, new Generator.Config(4, 24, 16, true, true));
                List<List<Completion>> a = tight.generate(prompts(5, 3), p);
                List<List<Completion>> b = new Generator(m, new Generator.Config(4, 256, 16, true, true)).generate(prompts(5, 3), p);
                assertTrue(tight.lastStats().preemptions() > 0 && tight.lastStats().recomputedTokens() > 0, dt + ": " + tight.lastStats());
                if (exact) {
                    assertSame(b, a);
                    continue;
                }
                int same = 0;
                for (int i = 0; i < a.size(); i++)
                    for (int j = 0; j < 3; j++) {
                        Completion c = a.get(i).get(j);
                        assertTrue(c.tokens().length >= 1 && c.tokens().length <= 20 && c.logprobs().length == c.tokens().length, dt + ": " + i + "/" + j);
                        for (int k = 0; k < c.tokens().length - 1; k++) assertNotEquals(60, c.tokens()[k], "a stop token before the end");
                        if (java.util.Arrays.equals(c.tokens(), b.get(i).get(j).tokens())) same++;
                    }
                if (dt == DType.FP32) assertTrue(same >= 14, same + " of 15 sequences as in a roomy pool");
            }
    }

    @Test
    void preemptedSamplesResumeOnTheCpu() { preemptedSamplesResume(TestBackends.cpu(), true); }

    @Test
    @Tag("gpu")
    void preemptedSamplesResumeOnCuda() { preemptedSamplesResume(TestBackends.cuda(), false); }

    /**
     * Pipelined decode steps (a step takes the tokens the step before sampled on the device, and is issued before the
     * host reads them; the default on CUDA, forced on the CPU), with stop tokens, so rows of stopped samples are computed and dropped, and the live
     * batch crosses buckets: each completion's log-probs are the model's teacher-forced ones for its tokens to
     * {@code tol} (a token fed in the wrong row moves later log-probs by far more, see the check against shifted
     * histories), and the completions are a serial run's: bit for bit on the CPU, on CUDA all but at most 1 of 15
     * (another bucket's GEMM shapes may move a sampling boundary in the last bits).
     */
    static void pipelinedStepsFeedTheSampledTokens(Backend be, boolean exact, double tol) {
        try (LlamaWeights w = LlamaWeights.init(be, small(), 7)) {
            LlamaModel m = new LlamaModel(w);
            SamplingParams p = new SamplingParams(3, 1f, 1f, 0, 16, Set.of(60, 59), 11);
            Generator piped = new Generator(m, new Generator.Config(4, 256, 16, true, true).withPipelined(true));
            List<List<Completion>> a = piped.generate(prompts(5, 3), p);
            assertTrue(piped.lastStats().overlappedSteps() > 5 && piped.lastStats().droppedRows() > 0, piped.lastStats().toString());
            List<List<Completion>> b = new Generator(m, new Generator.Config(4, 256, 16, true, true).withPipelined(false)).generate(prompts(5, 3), p);
            List<int[]> prompts = prompts(5, 3);
            double worst = 0, shifted = Double.MAX_VALUE;
            int same = 0;
            for (int i = 0; i < 5; i++)
                for (int j = 0; j < 3; j++) {
                    Completion c = a.get(i).get(j);
                    if (java.util.Arrays.equals(c.tokens(), b.get(i).get(j).tokens())) same++;
                    int n = c.tokens().length, pl = prompts.get(i).length;
                    if (n < 3) continue;
                    int[] seq = new int[pl + n], rows = new int[n], targets = c.tokens();
                    System.arraycopy(prompts.get(i), 0, seq, 0, pl);
                    System.arraycopy(c.tokens(), 0, seq, pl, n);
                    for (int k = 0; k < n; k++) rows[k] = pl - 1 + k;
                    float[] want = teacherForced(m, seq, rows, targets);
                    for (int k = 0; k < n; k++) worst = Math.max(worst, Math.abs(want[k] - c.logprobs()[k]));
                    // the same tokens fed one row late (what a wrong gather would do): far from the sampled log-probs
                    int[] late = seq.clone();
                    for (int k = pl + n - 1; k > pl; k--) late[k] = late[k - 1];
                    float[] off = teacherForced(m, late, rows, targets);
                    double d = 0;
                    for (int k = 2; k < n; k++) d = Math.max(d, Math.abs(off[k] - c.logprobs()[k]));
                    shifted = Math.min(shifted, d);
                }
            System.out.println(be.name() + " pipelined decode: sampled vs teacher-forced log-probs within " + worst + "; a shifted history moves them by >= " + shifted);
            assertTrue(worst <= tol, "sampled vs teacher-forced log-probs differ by " + worst);
            assertTrue(shifted > 10 * tol, "a shifted history moves them by only " + shifted);
            if (exact) assertSame(b, a);
            else assertTrue(same >= 14, same + " of 15 completions as the serial run's");
        }
    }

    private static float[] teacherForced(LlamaModel m, int[] seq, int[] rows, int[] targets) {
        try (org.grpo4j.internal.model.PackedBatch pb = org.grpo4j.internal.model.PackedBatch.of(m.backend(), List.of(seq), small().vocabSize())) {
            return m.tokenLogprobs(pb, rows, targets, 1f);
        }
    }

    @Test
    void pipelinedStepsFeedTheSampledTokensOnTheCpu() { pipelinedStepsFeedTheSampledTokens(TestBackends.cpu(), true, 1e-5); }

    @Test
    @Tag("gpu")
    void pipelinedStepsFeedTheSampledTokensOnCuda() { pipelinedStepsFeedTheSampledTokens(TestBackends.cuda(), false, 1e-4); }
}
