package org.grpo4j.internal.bench;

import org.grpo4j.internal.model.LlamaConfig;
import org.grpo4j.internal.model.ParameterLayout;

/**
 * The work the end-to-end benchmark counts (docs/benchmarks.md, "End to end"); tools/e2e-peers.py computes the same
 * figures independently and E2ePeersScriptTest checks that the two agree.
 *
 * <ul>
 *   <li>Training FLOPs of one step: 6 · P_mm · T + Σ_sequences 12 · L · Hq · D · S² / 2, where P_mm is the number of
 *       parameters that take part in matmuls (every projection of every layer and the LM head; the input embedding
 *       table only through the LM head when tied, norm weights never) and the second term is causal attention
 *       (QKᵀ and PV: 4 · S² · Hq · D per layer forward, ×3 with the backward, halved by the causal mask).</li>
 *   <li>Decode roofline bytes of a generation: each decode step reads every weight a decode step uses (all
 *       parameters but an untied input embedding table, which is gathered by rows) and the KV cache of every
 *       sequence up to and including the fed token. N new tokens take N - 1 decode steps (the first token comes from
 *       the prefill): bytes = (N - 1) · W + B · kv · ((N - 1) · P + N (N - 1) / 2), for B sequences of P prompt
 *       tokens and kv bytes of cache per token. Divided by the copy bandwidth measured in the same run it is the
 *       shortest time a memory-bound decoder could take.</li>
 *   <li>Decode bound of a generation: at hundreds of sequences a decode step's GEMMs are compute-bound (2 · B · P_mm
 *       FLOPs against W bytes), and one stream runs them and attention one after the other, so no decoder beats
 *       (N - 1) · max(W / bandwidth, 2 · B · P_mm / peak) + KV bytes / bandwidth (attention's FLOPs are not counted:
 *       that phase is memory-bound). The memory roofline is this bound's lower part only.</li>
 * </ul>
 */
public final class E2eWork {
    private E2eWork() {}

    /** Dense bf16 peak of an H100 / H200 SXM in TFLOP/s (the MFU denominator). */
    public static final double PEAK_TFLOPS = 989;

    /** Parameters that take part in matmuls: the layers' projections and the LM head (= the tied table, once). */
    public static long matmulParams(LlamaConfig c) {
        long h = c.hiddenSize();
        long layer = h * c.qDim() * 2 + h * c.kvDim() * 2 + 3 * h * c.intermediateSize();
        return c.numLayers() * layer + (long) c.vocabSize() * h;
    }

    /** FLOPs of one training step (forward + backward) over packed sequences of the given lengths. */
    public static double trainFlops(LlamaConfig c, int[] seqLens) {
        long tokens = 0;
        double attention = 0;
        for (int s : seqLens) {
            tokens += s;
            attention += 12.0 * c.numLayers() * c.numHeads() * c.headDim() * (double) s * s / 2;
        }
        return 6.0 * matmulParams(c) * tokens + attention;
    }

    /** Bytes of the weights one decode step reads: every parameter but an untied input embedding table. */
    public static double decodeWeightBytes(LlamaConfig c, int dtypeBytes) {
        long all = new ParameterLayout(c).totalElements();
        long embed = c.tieWordEmbeddings() ? 0 : (long) c.vocabSize() * c.hiddenSize();
        return (double) dtypeBytes * (all - embed);
    }

    /** KV-cache bytes per token: K and V of every layer. */
    public static long kvBytesPerToken(LlamaConfig c, int dtypeBytes) {
        return 2L * c.numLayers() * c.kvDim() * dtypeBytes;
    }

    /**
     * Seconds no decoder can beat when generating {@code newTokens} for each of {@code sequences} sequences of
     * {@code promptLen} tokens, at {@code copyGbs} GB/s and {@code peakTflops} TFLOP/s: every decode step's weights (or
     * its GEMMs' FLOPs, whichever take longer), then its KV read.
     */
    public static double boundSeconds(LlamaConfig c, int dtypeBytes, int sequences, int promptLen, int newTokens, double copyGbs,
                                      double peakTflops) {
        return boundSeconds(c, dtypeBytes, sequences, newTokens, rooflineBytes(c, dtypeBytes, sequences, promptLen, newTokens), copyGbs, peakTflops);
    }

    /** As above, for a decoder whose weights and KV reads come to {@code rooflineBytes} (e.g. {@link #rooflineBytesShared}). */
    public static double boundSeconds(LlamaConfig c, int dtypeBytes, int sequences, int newTokens, double rooflineBytes, double copyGbs,
                                      double peakTflops) {
        double steps = newTokens - 1, bw = copyGbs * 1e9;
        double weights = decodeWeightBytes(c, dtypeBytes) / bw, gemms = 2.0 * sequences * matmulParams(c) / (peakTflops * 1e12);
        double kv = rooflineBytes - steps * decodeWeightBytes(c, dtypeBytes);
        return steps * Math.max(weights, gemms) + kv / bw;
    }

    /**
     * Roofline bytes of the same generation when the {@code sequences} samples share their prompts in {@code groups}
     * groups, each group's attention reading its prompt's KV once per decode step (Generator's prefix groups): per
     * step the weights, {@code groups} prompts' KV, and every sample's own generated tokens' KV.
     */
    public static double rooflineBytesShared(LlamaConfig c, int dtypeBytes, int groups, int sequences, int promptLen, int newTokens) {
        double steps = newTokens - 1;
        double ownTokens = (double) newTokens * (newTokens - 1) / 2; // Σ_{s=1}^{N-1} s
        return steps * decodeWeightBytes(c, dtypeBytes)
                + kvBytesPerToken(c, dtypeBytes) * ((double) groups * promptLen * steps + (double) sequences * ownTokens);
    }

    /** Roofline bytes of generating {@code newTokens} for each of {@code sequences} sequences of {@code promptLen} tokens. */
    public static double rooflineBytes(LlamaConfig c, int dtypeBytes, int sequences, int promptLen, int newTokens) {
        double steps = newTokens - 1;
        double ctx = steps * promptLen + (double) newTokens * (newTokens - 1) / 2; // Σ_{s=1}^{N-1} (P + s)
        return steps * decodeWeightBytes(c, dtypeBytes) + (double) sequences * kvBytesPerToken(c, dtypeBytes) * ctx;
    }
}
