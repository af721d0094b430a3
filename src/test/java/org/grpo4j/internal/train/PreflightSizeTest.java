package org.grpo4j.internal.train;

import static org.junit.jupiter.api.Assertions.*;

import org.grpo4j.internal.model.LlamaConfig;
import org.grpo4j.internal.model.ParameterLayout;
import org.junit.jupiter.api.Test;

/** Which models preflight lets train where: over 2^31 parameters only on GPUs, with enough ranks for the slices. */
class PreflightSizeTest {
    @Test
    void modelsOver2To31ParametersNeedAGpuAndSlicesOfAtMost2To31() {
        long p8b = new ParameterLayout(LlamaConfig.preset("llama-3.1-8b")).totalElements();
        assertEquals(8_030_261_248L, p8b);
        assertNull(Preflight.tooLarge(2_000_000_000L, 1, true), "below 2^31: anywhere");
        String cpu = Preflight.tooLarge(p8b, 8, true);
        assertTrue(cpu.contains("8,030,261,248 parameters: the CPU backend holds at most 2^31 - 9 elements per tensor"), cpu);
        for (int world = 1; world <= 3; world++) {
            String why = Preflight.tooLarge(p8b, world, false);
            assertNotNull(why, "world " + world);
            assertTrue(why.contains("over world_size " + world) && why.endsWith("use world_size >= 4"), why);
        }
        for (int world : new int[] {4, 8, 16}) assertNull(Preflight.tooLarge(p8b, world, false), "world " + world);
    }
}
