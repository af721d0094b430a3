package org.grpo4j.internal.bench;

import static org.junit.jupiter.api.Assertions.*;

import org.grpo4j.internal.model.LlamaConfig;
import org.junit.jupiter.api.Test;

/**
 * The end-to-end benchmark's work formulas against the figures issue 14 states for its harness check on an H200
 * (HF transformers: 50,000 tokens/s = 39.5% MFU on llama-3.2-1b, 55,400 tokens/s = 48% MFU on llama-3.1-8b-4l; HF
 * generate at 11,300 and 14,300 tokens/s "about 4% of the roofline", with issue 16's 4,280 GB/s copy bandwidth on the
 * same card). A formula that counts the embedding table twice, forgets the LM head or the causal halving, or
 * counts KV reads per prompt instead of per sequence, misses these by several points.
 */
class E2eWorkTest {
    static final int[] FOUR_2048 = {2048, 2048, 2048, 2048};

    static double mfuPct(LlamaConfig c, double tokensPerS) {
        double stepSeconds = 8192 / tokensPerS;
        return 100 * E2eWork.trainFlops(c, FOUR_2048) / stepSeconds / 1e12 / E2eWork.PEAK_TFLOPS;
    }

    @Test
    void mfuFormulaReproducesTheIssuesFigures() {
        assertEquals(39.5, mfuPct(LlamaConfig.llama32_1b(), 50_000), 0.1);
        assertEquals(48.0, mfuPct(LlamaConfig.preset("llama-3.1-8b-4l"), 55_400), 0.5);
    }

    @Test
    void matmulParametersCountATiedTableOnceAndAnUntiedInputTableNever() {
        LlamaConfig tied = LlamaConfig.llama32_1b(), untied = LlamaConfig.preset("llama-3.1-8b-4l");
        // every parameter but the 2 norms per layer and the final norm (tied: the table is the LM head)
        long norms1b = 2L * 16 * 2048 + 2048;
        assertEquals(1_235_814_400L - norms1b, E2eWork.matmulParams(tied));
        long table = 128256L * 4096, all8b4l = new org.grpo4j.internal.model.ParameterLayout(untied).totalElements();
        assertEquals(all8b4l - table - (2L * 4 * 4096 + 4096), E2eWork.matmulParams(untied));
    }

    @Test
    void rooflineMakesHfGenerateAboutFourPercent() {
        double copyGbs = 4280; // issue 16's H200 copy bandwidth
        for (Object[] c : new Object[][] {{LlamaConfig.llama32_1b(), 11_300.0}, {LlamaConfig.preset("llama-3.1-8b-4l"), 14_300.0}}) {
            LlamaConfig cfg = (LlamaConfig) c[0];
            double hfSeconds = 768 * 256 / (double) c[1];
            double roofSeconds = E2eWork.rooflineBytes(cfg, 2, 768, 256, 256) / (copyGbs * 1e9);
            double pct = 100 * roofSeconds / hfSeconds;
            assertTrue(pct > 3 && pct < 5, cfg.numLayers() + " layers: HF generate at " + pct + "% of the roofline");
        }
    }

    @Test
    void rooflineBytesSumTheDecodeSteps() {
        // brute force over the decode steps of a small problem
        LlamaConfig c = LlamaConfig.tiny(100, 1, 2);
        int b = 3, p = 5, n = 7;
        double want = 0;
        for (int s = 1; s < n; s++) want += E2eWork.decodeWeightBytes(c, 2) + (double) b * (p + s) * E2eWork.kvBytesPerToken(c, 2);
        assertEquals(want, E2eWork.rooflineBytes(c, 2, b, p, n), 1e-9 * want);
        // an untied input table is gathered by rows, not read whole; a tied one is the LM head
        long all = new org.grpo4j.internal.model.ParameterLayout(c).totalElements();
        assertEquals(2.0 * (all - 100L * 64), E2eWork.decodeWeightBytes(c, 2));
        assertEquals(0, E2eWork.rooflineBytes(c, 2, b, p, 1)); // one new token: prefill only, no decode step
    }

    @Test
    void theDecodeBoundIsTheRooflineForOneSequenceAndTheGemmsAtSevenHundredSixtyEight() {
        double copyGbs = 4209, peak = E2eWork.PEAK_TFLOPS;
        for (LlamaConfig c : new LlamaConfig[] {LlamaConfig.llama32_1b(), LlamaConfig.preset("llama-3.1-8b-4l")}) {
            double w = E2eWork.decodeWeightBytes(c, 2);
            // one sequence: a step's GEMMs (2 P_mm FLOPs) take far less than its weights' read: the bound is the roofline
            double roof1 = E2eWork.rooflineBytes(c, 2, 1, 256, 256) / (copyGbs * 1e9);
            assertEquals(roof1, E2eWork.boundSeconds(c, 2, 1, 256, 256, copyGbs, peak), 1e-12 * roof1);
            // 768 sequences: the GEMMs take longer than the weights' read, so the bound is their time plus the KV read
            double kv = E2eWork.rooflineBytes(c, 2, 768, 256, 256) - 255 * w;
            double gemms = 255 * 2.0 * 768 * E2eWork.matmulParams(c) / (peak * 1e12);
            assertTrue(gemms > 255 * w / (copyGbs * 1e9), c.numLayers() + " layers: the decode GEMMs are compute-bound at 768");
            double bound = E2eWork.boundSeconds(c, 2, 768, 256, 256, copyGbs, peak);
            assertEquals(gemms + kv / (copyGbs * 1e9), bound, 1e-12 * bound);
            assertTrue(bound > E2eWork.rooflineBytes(c, 2, 768, 256, 256) / (copyGbs * 1e9));
        }
    }
}
