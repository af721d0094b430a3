package org.grpo4j.internal.model;

import static org.junit.jupiter.api.Assertions.*;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.Conformance;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.Tensor;
import org.grpo4j.internal.backend.TestBackends;
import org.junit.jupiter.api.Test;

class LlamaModelTest {
    /** A model small enough for float64 finite differences, with GQA, llama3 rope scaling and untied/tied heads. */
    static LlamaConfig micro(boolean tied) {
        return new LlamaConfig(12, 20, 2, 4, 2, 4, 17, 1e-5, 10000, new org.grpo4j.internal.backend.Rope.Llama3Scaling(8, 1, 4, 16), 64, tied, 0, List.of(1));
    }

    static LlamaWeights randomWeights(Backend be, LlamaConfig c, long seed) {
        LlamaWeights w = LlamaWeights.init(be, c, seed);
        // larger than HF's 0.02 init (and non-unit norms) so every path carries signal for the FD check
        SplittableRandom r = new SplittableRandom(seed + 1);
        float[] a = new float[(int) w.flat().numel()];
        for (int i = 0; i < a.length; i++) a[i] = (float) (r.nextGaussian() * 0.4);
        for (ParameterLayout.Entry e : w.layout().entries())
            if (e.name().endsWith("norm.weight")) for (long i = e.offset(); i < e.offset() + e.numel(); i++) a[(int) i] = (float) (1 + r.nextGaussian() * 0.1);
        be.copyFromHost(w.flat(), a);
        return w;
    }

    /** sum_t coef[t] * logp(next token) over every sequence, with gradients from the model's backward. */
    static double lossAndGrads(LlamaModel m, List<int[]> seqs, double[][] coef, LlamaWeights grads, boolean ckpt) {
        return lossAndGrads(m, seqs, coef, grads, ckpt, null);
    }

    /** {@link #lossAndGrads}; with bf16 {@code grads}, the LM head's and embeddings' fp32 gradient goes through {@code table32}. */
    static double lossAndGrads(LlamaModel m, List<int[]> seqs, double[][] coef, LlamaWeights grads, boolean ckpt, Tensor table32) {
        return lossAndGrads(m, seqs, coef, grads, ckpt ? m.config().numLayers() : 0, table32);
    }

    /** {@link #lossAndGrads} with the first {@code recomputed} layers recomputed in the backward. */
    static double lossAndGrads(LlamaModel m, List<int[]> seqs, double[][] coef, LlamaWeights grads, int recomputed, Tensor table32) {
        Backend be = m.backend();
        LlamaConfig c = m.config();
        try (PackedBatch b = PackedBatch.of(be, seqs, c.vocabSize()); LlamaModel.Activations act = m.forward(b, recomputed)) {
            List<Integer> rows = new ArrayList<>(), tgt = new ArrayList<>();
            List<Double> cf = new ArrayList<>();
            for (int s = 0; s < seqs.size(); s++)
                for (int t = 0; t + 1 < seqs.get(s).length; t++) {
                    rows.add(b.start(s) + t);
                    tgt.add(seqs.get(s)[t + 1]);
                    cf.add(coef[s][t]);
                }
            int k = rows.size();
            int[] ri = rows.stream().mapToInt(Integer::intValue).toArray(), ti = tgt.stream().mapToInt(Integer::intValue).toArray();
            float[] cfF = new float[k];
            for (int i = 0; i < k; i++) cfF[i] = (float) (double) cf.get(i);
            DType adt = m.activationDType();
            try (Tensor rT = be.upload(ri, k); Tensor tT = be.upload(ti, k); Tensor sel = be.empty(adt, k, c.hiddenSize());
                 Tensor lp = be.empty(DType.FP32, k); Tensor g = be.upload(cfF, k); Tensor dSel = be.empty(adt, k, c.hiddenSize());
                 Tensor dHidden = be.zeros(DType.FP32, b.tokens(), c.hiddenSize())) {
                be.embedding(sel, act.hidden(), rT);
                be.tokenLogprobs(lp, sel, m.weights().get("lm_head.weight"), tT, 1f);
                if (table32 != null) be.fill(table32, 0);
                be.tokenLogprobsBackward(dSel, table32 != null ? table32 : grads.get("lm_head.weight"), g, sel, m.weights().get("lm_head.weight"), tT, 1f);
                if (table32 != null && !c.tieWordEmbeddings()) be.cast(grads.get("lm_head.weight"), table32);
                be.embeddingBackward(dHidden, dSel, rT);
                m.backward(act, dHidden, grads, null, table32);
                float[] l = lp.toFloats();
                double loss = 0;
                for (int i = 0; i < k; i++) loss += cfF[i] * l[i];
                return loss;
            }
        }
    }

    /** Mean next-token log-prob of one or more sequences (no gradients). */
    static double lossAndGradsValueOnly(LlamaModel m, List<int[]> seqs) {
        double s = 0;
        int n = 0;
        for (int[] seq : seqs) {
            int[] rows = new int[seq.length - 1], tgt = new int[seq.length - 1];
            for (int t = 0; t + 1 < seq.length; t++) {
                rows[t] = t;
                tgt[t] = seq[t + 1];
            }
            try (PackedBatch b = PackedBatch.of(m.backend(), List.of(seq), m.config().vocabSize())) {
                for (float lp : m.tokenLogprobs(b, rows, tgt, 1f)) {
                    s += lp;
                    n++;
                }
            }
        }
        return s / n;
    }

    @Test
    void gradientsMatchFloat64FiniteDifferencesForEveryTensor() {
        for (boolean tied : new boolean[] {false, true}) {
            Backend be = TestBackends.cpu();
            LlamaConfig c = micro(tied);
            SplittableRandom r = new SplittableRandom(tied ? 11 : 10);
            List<int[]> seqs = List.of(r.ints(7, 0, c.vocabSize()).toArray(), r.ints(4, 0, c.vocabSize()).toArray());
            double[][] coef = new double[seqs.size()][];
            for (int s = 0; s < seqs.size(); s++) coef[s] = Conformance.randn(r, seqs.get(s).length, 1);
            try (LlamaWeights w = randomWeights(be, c, 5); LlamaWeights grads = LlamaWeights.zeros(be, c)) {
                LlamaModel m = new LlamaModel(w);
                double loss = lossAndGrads(m, seqs, coef, grads, false);
                double[] p = Conformance.f64(w.flat().toFloats());
                ParameterLayout lay = w.layout();
                java.util.function.ToDoubleFunction<double[]> f = pp -> {
                    double s = 0;
                    for (int q = 0; q < seqs.size(); q++) {
                        double[] lp = RefLlama.nextTokenLogprobs(c, lay, pp, seqs.get(q));
                        for (int t = 0; t < lp.length; t++) s += (float) coef[q][t] * lp[t];
                    }
                    return s;
                };
                assertEquals(f.applyAsDouble(p), loss, 1e-4 * (1 + Math.abs(loss)), "forward vs float64 reference");
                float[] got = grads.flat().toFloats();
                for (ParameterLayout.Entry e : lay.entries()) {
                    int[] idx = r.ints((int) e.offset(), (int) (e.offset() + e.numel())).distinct().limit(Math.min(12, e.numel())).toArray();
                    double[] fd = Conformance.fdGrad(f, p, idx);
                    Conformance.assertGradClose((tied ? "tied " : "") + e.name(), fd, got, idx, 1e-4, 2e-3);
                    double mag = 0;
                    for (int i : idx) mag += Math.abs(fd[i]);
                    assertTrue(mag > 1e-6, e.name() + " carries gradient");
                }
            }
        }
    }

    /**
     * Gradient checkpointing of no layer, of the first layers only (recompute_layers) and of every layer gives the same
     * loss and gradients, bit for bit, in fp32 and in bf16 (bf16 weights, activations and gradients); a count outside
     * [0, layers] is refused.
     */
    @Test
    void checkpointingIsBitwiseIdentical() {
        Backend be = TestBackends.cpu();
        LlamaConfig base = micro(false);
        LlamaConfig c = new LlamaConfig(base.hiddenSize(), base.intermediateSize(), 4, base.numHeads(), base.numKvHeads(), base.headDim(), base.vocabSize(),
                base.rmsNormEps(), base.ropeTheta(), base.ropeScaling(), base.maxPositionEmbeddings(), false, base.bosTokenId(), base.eosTokenIds());
        SplittableRandom r = new SplittableRandom(3);
        List<int[]> seqs = List.of(r.ints(9, 0, 17).toArray(), r.ints(3, 0, 17).toArray(), r.ints(6, 0, 17).toArray());
        double[][] coef = new double[3][];
        for (int s = 0; s < 3; s++) coef[s] = Conformance.randn(r, seqs.get(s).length, 1);
        for (DType dt : new DType[] {DType.FP32, DType.BF16}) {
            try (LlamaWeights w32 = randomWeights(be, c, 8); LlamaWeights w = dt == DType.FP32 ? null : w32.castTo(DType.BF16);
                 Tensor table32 = dt == DType.FP32 ? null : be.zeros(DType.FP32, c.vocabSize(), c.hiddenSize())) {
                LlamaModel m = new LlamaModel(w != null ? w : w32);
                double loss0 = 0;
                float[] g0 = null;
                for (int k = 0; k <= c.numLayers(); k++) {
                    try (LlamaWeights g = LlamaWeights.zeros(be, c, dt)) {
                        double l = lossAndGrads(m, seqs, coef, g, k, table32);
                        float[] gf;
                        if (dt == DType.FP32) gf = g.flat().toFloats();
                        else {
                            short[] bits = g.flat().toBf16Bits();
                            gf = new float[bits.length];
                            for (int i = 0; i < bits.length; i++) gf[i] = org.grpo4j.internal.backend.Bf16.toFloat(bits[i]);
                        }
                        if (k == 0) {
                            loss0 = l;
                            g0 = gf;
                            double mag = 0;
                            for (float x : gf) mag += Math.abs(x);
                            assertTrue(mag > 0, dt + ": the gradients carry signal");
                        } else {
                            assertEquals(loss0, l, dt + ": loss with " + k + " of " + c.numLayers() + " layers recomputed");
                            assertArrayEquals(g0, gf, dt + ": gradients with " + k + " of " + c.numLayers() + " layers recomputed");
                        }
                    }
                }
                try (PackedBatch pb = PackedBatch.of(be, seqs, c.vocabSize())) {
                    for (int k = 0; k <= c.numLayers(); k++) // the first k layers keep nothing but their input, the others all
                        try (LlamaModel.Activations act = m.forward(pb, k)) {
                            for (int l = 0; l < c.numLayers(); l++)
                                assertEquals(l < k, act.layers[l] == null, dt + ": layer " + l + " with " + k + " recomputed");
                        }
                    for (int bad : new int[] {-1, c.numLayers() + 1}) {
                        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> m.forward(pb, bad));
                        assertTrue(e.getMessage().contains("recomputed layers " + bad + " not in [0, 4]"), e.getMessage());
                    }
                }
            }
        }
    }

    @Test
    void packedSequencesDoNotInteract() {
        Backend be = TestBackends.cpu();
        LlamaConfig c = micro(false);
        SplittableRandom r = new SplittableRandom(4);
        int[] a = r.ints(8, 0, 17).toArray(), b = r.ints(5, 0, 17).toArray();
        try (LlamaWeights w = randomWeights(be, c, 9)) {
            LlamaModel m = new LlamaModel(w);
            float[] both, alone;
            try (PackedBatch pb = PackedBatch.of(be, List.of(a, b), 17)) { both = m.logits(pb); }
            try (PackedBatch pb = PackedBatch.of(be, List.of(b), 17)) { alone = m.logits(pb); }
            float[] tail = java.util.Arrays.copyOfRange(both, 8 * 17, 13 * 17);
            assertArrayEquals(alone, tail, "sequence b alone = sequence b packed after a");
        }
    }

    @Test
    void decodeStepsMatchFullForwardAtEveryPosition() {
        Backend be = TestBackends.cpu();
        LlamaConfig c = micro(false);
        SplittableRandom r = new SplittableRandom(5);
        int[] seq = r.ints(11, 0, 17).toArray();
        int promptLen = 4, bs = 3;
        try (LlamaWeights w = randomWeights(be, c, 10)) {
            LlamaModel m = new LlamaModel(w);
            float[] full;
            try (PackedBatch pb = PackedBatch.of(be, List.of(seq), 17)) { full = m.logits(pb); }
            int[] table = {5, 2, 7, 0}; // scattered blocks
            try (LlamaModel.KvCache cache = m.newKvCache(8, bs)) {
                int[] slots = new int[promptLen];
                for (int t = 0; t < promptLen; t++) slots[t] = table[t / bs] * bs + t % bs;
                float[] lg;
                try (PackedBatch pb = PackedBatch.of(be, List.of(java.util.Arrays.copyOf(seq, promptLen)), 17)) { lg = m.prefill(cache, pb, slots); }
                Conformance.assertClose("prefill last position", Conformance.f64(java.util.Arrays.copyOfRange(full, (promptLen - 1) * 17, promptLen * 17)), lg, 1e-5, 1e-5);
                for (int t = promptLen; t < seq.length; t++) {
                    lg = m.decodeStep(cache, new int[] {seq[t]}, new int[] {t}, new int[] {table[t / bs] * bs + t % bs}, table, table.length);
                    Conformance.assertClose("decode position " + t, Conformance.f64(java.util.Arrays.copyOfRange(full, t * 17, (t + 1) * 17)), lg, 1e-5, 1e-5);
                }
            }
        }
    }
}
