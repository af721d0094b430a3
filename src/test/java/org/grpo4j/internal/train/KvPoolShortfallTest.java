package org.grpo4j.internal.train;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Path;
import org.grpo4j.internal.backend.Memory;
import org.grpo4j.train.GrpoConfig;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A step whose KV pool no longer fits (memory taken after the pool was sized before step 1: the kernels' scratch,
 * NCCL's buffers) fails naming the settings that size the pool; the backend's refusal alone named neither.
 */
class KvPoolShortfallTest {
    @Test
    void aPoolThatNoLongerFitsNamesItsSettings(@TempDir Path tmp) throws Exception {
        GrpoConfig c = GrpoTrainerTest.config(GrpoTrainerTest.small(tmp.resolve("run"), 1));
        try (Trainer t = Trainer.builder(c).log(null).build()) {
            RankState r = t.rankStates().get(0);
            // a pool as large as one layer tensor may be (2^30 elements with its pad block), far past the 6 GiB heap:
            // what the sizing would have given had that much been free before step 1
            long blocks = (1L << 30) / (RankState.KV_BLOCK * (long) r.model.config().kvDim()) - 1;
            long bytes = blocks * RankState.KV_BLOCK * r.model.kvBytesPerToken();
            assertTrue(bytes > Runtime.getRuntime().maxMemory(), bytes + " bytes of pool vs the heap's " + Runtime.getRuntime().maxMemory());
            r.createGenerator(Math.max(c.localCompletions(), 1), bytes, 64);
            Memory.Shortfall e = assertThrows(Memory.Shortfall.class, () -> RolloutPhase.run(r, 2));
            String m = e.getMessage();
            assertTrue(m.startsWith("step 2's generation: a KV cache of " + blocks + " blocks"), m);
            assertTrue(m.contains("the KV pool was sized before the first step, kv_cache_fraction " + c.kvCacheFraction + " of what was free then")
                    && m.endsWith("resume with a smaller kv_cache_fraction, or a kv_cache_mib)"), m);
        }
    }
}
