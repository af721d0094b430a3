package org.grpo4j.internal.model;

import org.grpo4j.internal.backend.Ref;

/**
 * A float64 Llama forward written directly from the HF definition with the Ref ops (tests only): used for
 * finite-difference gradient checks of the real model and as an independent check of its forward.
 */
final class RefLlama {
    private RefLlama() {}

    static double[] slice(double[] flat, ParameterLayout layout, String name) {
        ParameterLayout.Entry e = layout.get(name);
        return java.util.Arrays.copyOfRange(flat, (int) e.offset(), (int) (e.offset() + e.numel()));
    }

    /** Final hidden states [n, d] of one sequence. */
    static double[] hidden(LlamaConfig c, ParameterLayout lay, double[] p, int[] ids) {
        int n = ids.length, d = c.hiddenSize(), f = c.intermediateSize();
        double[] emb = slice(p, lay, "model.embed_tokens.weight");
        double[] x = new double[n * d];
        for (int t = 0; t < n; t++) System.arraycopy(emb, ids[t] * d, x, t * d, d);
        int[] pos = new int[n];
        for (int t = 0; t < n; t++) pos[t] = t;
        float[] inv = c.rope().invFreq();
        for (int l = 0; l < c.numLayers(); l++) {
            String pre = "model.layers." + l + ".";
            double[] h = java.util.Arrays.copyOf(Ref.rmsNorm(x, slice(p, lay, pre + "input_layernorm.weight"), n, d, c.rmsNormEps()), n * d);
            double[] q = Ref.matmul(h, false, slice(p, lay, pre + "self_attn.q_proj.weight"), true, null, n, c.qDim(), d, 1, 0);
            double[] k = Ref.matmul(h, false, slice(p, lay, pre + "self_attn.k_proj.weight"), true, null, n, c.kvDim(), d, 1, 0);
            double[] v = Ref.matmul(h, false, slice(p, lay, pre + "self_attn.v_proj.weight"), true, null, n, c.kvDim(), d, 1, 0);
            q = Ref.rope(q, pos, inv, n, c.numHeads(), c.headDim(), false);
            k = Ref.rope(k, pos, inv, n, c.numKvHeads(), c.headDim(), false);
            double[] att = java.util.Arrays.copyOf(Ref.attention(q, k, v, new int[] {0, n}, n, c.numHeads(), c.numKvHeads(), c.headDim(),
                    1 / Math.sqrt(c.headDim())), n * c.qDim());
            double[] o = Ref.matmul(att, false, slice(p, lay, pre + "self_attn.o_proj.weight"), true, null, n, d, c.qDim(), 1, 0);
            for (int i = 0; i < n * d; i++) x[i] += o[i];
            double[] h2 = java.util.Arrays.copyOf(Ref.rmsNorm(x, slice(p, lay, pre + "post_attention_layernorm.weight"), n, d, c.rmsNormEps()), n * d);
            double[] gt = Ref.matmul(h2, false, slice(p, lay, pre + "mlp.gate_proj.weight"), true, null, n, f, d, 1, 0);
            double[] up = Ref.matmul(h2, false, slice(p, lay, pre + "mlp.up_proj.weight"), true, null, n, f, d, 1, 0);
            double[] a = new double[n * f];
            for (int i = 0; i < a.length; i++) a[i] = Ref.silu(gt[i]) * up[i];
            double[] m = Ref.matmul(a, false, slice(p, lay, pre + "mlp.down_proj.weight"), true, null, n, d, f, 1, 0);
            for (int i = 0; i < n * d; i++) x[i] += m[i];
        }
        return java.util.Arrays.copyOf(Ref.rmsNorm(x, slice(p, lay, "model.norm.weight"), n, d, c.rmsNormEps()), n * d);
    }

    /** log p(ids[t+1] | ids[..t]) for t = 0..n-2 of one sequence (temperature 1). */
    static double[] nextTokenLogprobs(LlamaConfig c, ParameterLayout lay, double[] p, int[] ids) {
        int n = ids.length, d = c.hiddenSize();
        double[] h = hidden(c, lay, p, ids);
        double[] head = slice(p, lay, c.tieWordEmbeddings() ? "model.embed_tokens.weight" : "lm_head.weight");
        int[] tgt = java.util.Arrays.copyOfRange(ids, 1, n);
        return Ref.tokenLogprobs(java.util.Arrays.copyOf(h, (n - 1) * d), head, tgt, n - 1, d, c.vocabSize(), 1.0 - 1e-7);
    }
}
