package org.grpo4j.internal.bench;

import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.SplittableRandom;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.CpuBackend;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.Tensor;
import org.grpo4j.internal.model.LlamaConfig;
import org.grpo4j.internal.model.LlamaModel;
import org.grpo4j.internal.model.LlamaWeights;
import org.grpo4j.internal.rollout.Generator;
import org.grpo4j.internal.rollout.SamplingParams;

/**
 * The CPU backend's hot loops, printed figures and not a test. The matmul with a transposed b (a weight, as every
 * projection of the model uses it): best of 12 rounds per shape, fp32 and bf16, with a checksum of c (the same bits
 * whichever path runs). The LM head's log-probs and their backward (tokenLogprobs, tokenLogprobsBackward) at N = 128,
 * D = 256, V = 8192: best of 8, checksums of out, dHidden and dLmHead. Decoding on a 120M-parameter model (hidden
 * 1024, 4 layers, vocabulary 32,000) at 1, 4 and 16 sequences.
 * Run: tools/bench CpuBench [matmul] [lmhead] [decode] (all three by default)
 */
public final class CpuBench {
    public static void main(String[] args) {
        java.util.Set<String> parts = args.length == 0 ? java.util.Set.of("matmul", "lmhead", "decode") : java.util.Set.of(args);
        if (parts.contains("matmul")) matmuls();
        if (parts.contains("lmhead")) lmHead();
        if (parts.contains("decode")) decoding();
    }

    static void matmuls() {
        try (Backend be = new CpuBackend()) {
            SplittableRandom r = new SplittableRandom(1);
            // (m, k, n): decoding's few rows and a prefill's many, against [n, k] weights
            int[][] shapes = {{1, 512, 1536}, {2, 512, 1536}, {4, 512, 1536}, {8, 512, 1536}, {16, 512, 1536}, {32, 512, 1536},
                    {256, 512, 1536}, {1, 2048, 2048}, {4, 2048, 2048}, {16, 2048, 2048}, {32, 2048, 2048}};
            for (DType dt : new DType[] {DType.FP32, DType.BF16})
                for (int[] s : shapes) {
                    int m = s[0], k = s[1], n = s[2];
                    float[] av = new float[m * k], bv = new float[n * k];
                    for (int i = 0; i < av.length; i++) av[i] = (float) r.nextGaussian();
                    for (int i = 0; i < bv.length; i++) bv[i] = (float) r.nextGaussian();
                    try (Tensor a32 = be.upload(av, m, k); Tensor b32 = be.upload(bv, n, k);
                         Tensor a = be.zeros(dt, m, k); Tensor b = be.zeros(dt, n, k); Tensor c = be.zeros(dt, m, n);
                         Tensor cf = be.zeros(DType.FP32, m, n)) {
                        be.cast(a, a32);
                        be.cast(b, b32);
                        int reps = Math.max(5, (int) (4e8 / (2.0 * m * n * k)));
                        double best = Double.MAX_VALUE;
                        for (int round = 0; round < 12; round++) {
                            long t0 = System.nanoTime();
                            for (int w = 0; w < reps; w++) be.matmul(c, a, false, b, true, 1f, 0f);
                            best = Math.min(best, (System.nanoTime() - t0) / 1e9 / reps);
                        }
                        be.cast(cf, c);
                        System.out.printf("%s m=%d k=%d n=%d, b transposed: best %.3f ms, %.2f GFLOP/s, checksum %08x%n", dt.label(), m, k, n,
                                best * 1e3, 2.0 * m * n * k / best / 1e9, java.util.Arrays.hashCode(be.downloadFloats(cf)));
                    }
                }
        }
    }

    static void lmHead() {
        try (Backend be = new CpuBackend()) {
            SplittableRandom r = new SplittableRandom(1);
            int n = 128, d = 256, v = 8192;
            float[] h = new float[n * d], w = new float[v * d], g = new float[n];
            int[] t = new int[n];
            for (int i = 0; i < h.length; i++) h[i] = (float) r.nextGaussian();
            for (int i = 0; i < w.length; i++) w[i] = (float) (r.nextGaussian() * 0.1);
            for (int i = 0; i < n; i++) { t[i] = r.nextInt(v); g[i] = (float) r.nextGaussian(); }
            try (Tensor H = be.upload(h, n, d); Tensor W = be.upload(w, v, d); Tensor T = be.upload(t, n); Tensor G = be.upload(g, n);
                 Tensor out = be.zeros(DType.FP32, n); Tensor dH = be.zeros(DType.FP32, n, d); Tensor dW = be.zeros(DType.FP32, v, d)) {
                double bf = Double.MAX_VALUE, bb = Double.MAX_VALUE;
                for (int round = 0; round < 8; round++) {
                    long t0 = System.nanoTime();
                    be.tokenLogprobs(out, H, W, T, 0.9f);
                    long t1 = System.nanoTime();
                    be.fill(dW, 0);
                    long t2 = System.nanoTime();
                    be.tokenLogprobsBackward(dH, dW, G, H, W, T, 0.9f);
                    long t3 = System.nanoTime();
                    bf = Math.min(bf, (t1 - t0) / 1e6);
                    bb = Math.min(bb, (t3 - t2) / 1e6);
                }
                System.out.printf("lm head N=%d D=%d V=%d: forward %.2f ms, backward %.2f ms; checksums %08x %08x %08x%n", n, d, v, bf, bb,
                        java.util.Arrays.hashCode(out.toFloats()), java.util.Arrays.hashCode(dH.toFloats()), java.util.Arrays.hashCode(dW.toFloats()));
            }
        }
    }

    static void decoding() {
        try (Backend be = new CpuBackend()) {
            LlamaConfig c = new LlamaConfig(1024, 3584, 4, 16, 4, 64, 32000, 1e-5, 500000, null, 4096, false, 0, List.of(1));
            try (LlamaWeights w = LlamaWeights.init(be, c, 3)) {
                LlamaModel m = new LlamaModel(w);
                for (int seqs : new int[] {1, 4, 16}) {
                    SplittableRandom r = new SplittableRandom(1);
                    List<int[]> prompts = new ArrayList<>();
                    prompts.add(r.ints(64, 2, 31999).toArray());
                    SamplingParams p = new SamplingParams(seqs, 1f, 1f, 0, 24, Set.of(), 3);
                    Generator g = new Generator(m, new Generator.Config(16, 4096, 64, true, false));
                    g.generate(prompts, p); // warm-up
                    double best = Double.MAX_VALUE;
                    long tok = 0;
                    for (int rep = 0; rep < 3; rep++) {
                        g.generate(prompts, p);
                        Generator.Stats st = g.lastStats();
                        best = Math.min(best, st.seconds());
                        tok = st.generatedTokens();
                    }
                    System.out.printf("hidden 1024 x 4 layers, vocab 32000 (%,d params): %d sequences, %d tokens in %.3f s = %.1f tokens/s%n", w.layout().totalElements(), seqs, tok, best, tok / best);
                }
            }
        }
    }
}
