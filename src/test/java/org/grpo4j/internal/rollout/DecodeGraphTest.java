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
            if (graphs && be.capture(() -> {}) != null) assertTrue(g.lastStats().graphReplays() > 0, "graphs were replayed");
            return out;
        }
    }

    static void assertSame(List<List<Completion>> a, List<List<Completion>> b) {
        assertEquals(a.size(), b.size());
        for (int i = 0; i < a.size(); i++)
            for (int j = 0; j < a.get(i).size(); j++) {
                assertArrayEquals(a.get(i).get(j).tokens(), b.get(i).get(j).tokens(), "prompt " + i + " sample " + j);
                assertArrayEquals(a.get(i).get(j).logprobs(), b.get(i).get(j).logprobs(), "prompt " + i + " sample " + j);
            }
    }

    @Test
    void bucketsAndPaddingDoNotChangeTheTokensOnTheCpu() {
        Backend be = TestBackends.cpu();
        // maxBatch 1: every step runs alone (no padding); 16: steps run in padded power-of-two buckets
        assertSame(run(be, DType.FP32, false, 1), run(be, DType.FP32, true, 16));
        assertSame(run(be, DType.BF16, false, 1), run(be, DType.BF16, false, 16));
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
}
