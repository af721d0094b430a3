package org.grpo4j.internal.bench;

import java.util.List;
import java.util.Map;

/**
 * The problem sizes of one benchmark run. {@code llama-3.1-8b} is what the CUDA issues set their goals at (4096
 * tokens, hidden 4096, ffn 14336, vocab 128256, 32 query / 8 kv heads of 128); {@code small} is a quick pass that
 * fits a 16 GB card, whose figures are not comparable with those goals. tools/bench-peers.py holds the same two
 * presets (the test BenchPeersScriptTest checks that both sides name the same problems with the same work).
 *
 * @param gemms         (M, K, N) of each bf16 GEMM row; the last one is also the shape of the host-cost row
 * @param gemmCeiling   n of the n^3 bf16 GEMM whose rate is the compute ceiling
 * @param copyElements  fp32 elements of the device-to-device copy whose bandwidth is the memory ceiling
 * @param attention     (batch, seq) of each causal attention row
 * @param kvBlockSize   tokens per KV-cache block (kvAppend, decode)
 */
public record BenchSizes(String name, int tokens, int hidden, int ffn, int vocab, int qHeads, int kvHeads, int headDim,
                         List<int[]> gemms, int gemmCeiling, long copyElements, long adamParams, long reduceElements,
                         List<int[]> attention, int decodeBatch, int decodeContext, int kvBlockSize, int sampleBatch,
                         int lmTokens) {

    public static final BenchSizes LLAMA_3_1_8B = new BenchSizes("llama-3.1-8b", 4096, 4096, 14336, 128256, 32, 8, 128,
            List.of(new int[] {8192, 4096, 14336}, new int[] {8192, 14336, 4096}, new int[] {8192, 8192, 8192},
                    new int[] {768, 4096, 4096}),
            8192, 1L << 28, 1L << 30, 1L << 30, List.of(new int[] {8, 2048}, new int[] {2, 8192}), 768, 1024, 16, 768, 8192);

    public static final BenchSizes SMALL = new BenchSizes("small", 1024, 2048, 8192, 32768, 16, 4, 128,
            List.of(new int[] {2048, 2048, 8192}, new int[] {2048, 8192, 2048}, new int[] {4096, 4096, 4096},
                    new int[] {256, 2048, 2048}),
            4096, 1L << 26, 1L << 26, 1L << 26, List.of(new int[] {4, 1024}, new int[] {1, 4096}), 128, 1024, 16, 128, 2048);

    /** The presets by name, in the order the usage message lists them. */
    public static final Map<String, BenchSizes> PRESETS = new java.util.LinkedHashMap<>(Map.of());

    static {
        PRESETS.put(LLAMA_3_1_8B.name(), LLAMA_3_1_8B);
        PRESETS.put(SMALL.name(), SMALL);
    }

    /** A preset by name; an unknown name is an IllegalArgumentException listing the valid ones. */
    public static BenchSizes named(String name) {
        BenchSizes s = PRESETS.get(name);
        if (s == null)
            throw new IllegalArgumentException("unknown --sizes \"" + name + "\" (valid: " + String.join(", ", PRESETS.keySet()) + ")");
        return s;
    }
}
