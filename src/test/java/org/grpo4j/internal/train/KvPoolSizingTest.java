package org.grpo4j.internal.train;

import org.grpo4j.train.GrpoConfig;
import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Path;
import java.util.List;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.model.LlamaConfig;
import org.grpo4j.internal.model.MemoryEstimate;
import org.junit.jupiter.api.Test;

/** The KV pool sized from what is left (kv_cache_fraction), capped at what the samples can use, or kv_cache_mib. */
class KvPoolSizingTest {
    static final LlamaConfig C = LlamaConfig.tiny(300, 1, 2);

    static GrpoConfig cfg(String... sets) throws Exception {
        return GrpoConfig.load(Path.of("examples/tiny-arith.json"), List.of(sets));
    }

    @Test
    void thePoolTakesAFractionOfWhatIsLeftUpToWhatTheSamplesCanUse() throws Exception {
        GrpoConfig c = cfg("kv_cache_fraction=0.5");
        MemoryEstimate est = new MemoryEstimate(C, 1, DType.BF16, 1 << 20);
        int longest = 40, batch = c.localCompletions();
        long perBlock = est.kvBytesPerToken() * RankState.KV_BLOCK;
        long seqBlocks = (longest + c.responseLength + 15) / 16 + 1;
        long useful = batch * seqBlocks * perBlock;
        double working = est.generationBytes(batch, (long) c.localRolloutBatchSize * longest);
        // plenty free: what the samples can use
        assertEquals(useful, RankState.kvPoolBytes(c, est, 1L << 40, 1, longest, batch, "free"));
        // little free: half (kv_cache_fraction) of what is left after generation's working memory and the cache's pad
        // block; two ranks share it
        long free = (long) working + useful / 2;
        assertEquals((long) ((free - working - perBlock) * 0.5), RankState.kvPoolBytes(c, est, free, 1, longest, batch, "free"));
        long two = 2 * ((long) working + useful / 2);
        assertEquals((long) ((two / 2.0 - working - perBlock) * 0.5), RankState.kvPoolBytes(c, est, two, 2, longest, batch, "free"));
        // kv_cache_fraction 1: the pool, its pad block and the working memory together fit in what is free
        long pool = RankState.kvPoolBytes(cfg("kv_cache_fraction=1"), est, free, 1, longest, batch, "free");
        assertTrue(pool / perBlock * perBlock + perBlock + working <= free, "pool " + pool + " + pad block " + perBlock + " + working " + working + " vs free " + free);
        // unknown free memory: what the samples can use; kv_cache_mib: exactly that
        assertEquals(useful, RankState.kvPoolBytes(c, est, -1, 1, longest, batch, "free"));
        assertEquals(3L << 20, RankState.kvPoolBytes(cfg("kv_cache_mib=3"), est, 1L << 40, 1, longest, batch, "free"));
    }

    @Test
    void notEvenOneSequenceIsRefusedSayingWhatToChange() throws Exception {
        GrpoConfig c = cfg();
        MemoryEstimate est = new MemoryEstimate(C, 1, DType.BF16, 1 << 20);
        long working = (long) est.generationBytes(c.localCompletions(), (long) c.localRolloutBatchSize * 40);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> RankState.kvPoolBytes(c, est, working + 1000, 1, 40, c.localCompletions(), "are free on cuda:0"));
        String m = e.getMessage();
        assertTrue(m.startsWith("the KV cache does not fit: one sequence of 52 tokens needs"), m);
        for (String s : List.of("are free on cuda:0", "fewer samples in flight", "a larger kv_cache_fraction", "response_length", "more GPUs (world_size"))
            assertTrue(m.contains(s), s + " in: " + m);
        assertFalse(m.contains("precision bf16"), "the run is in bf16 already: " + m);
        // at kv_cache_fraction 1 a larger one is no way out; in fp32, bf16 is
        GrpoConfig whole = cfg("kv_cache_fraction=1");
        MemoryEstimate fp32 = new MemoryEstimate(C, 1, DType.FP32, 1 << 20);
        long w32 = (long) fp32.generationBytes(whole.localCompletions(), (long) whole.localRolloutBatchSize * 40);
        m = assertThrows(IllegalArgumentException.class,
                () -> RankState.kvPoolBytes(whole, fp32, w32 + 1000, 1, 40, whole.localCompletions(), "are free on cuda:0")).getMessage();
        assertFalse(m.contains("a larger kv_cache_fraction"), m);
        assertTrue(m.contains("precision bf16"), m);
    }
}
