package org.grpo4j.internal.model;

import static org.junit.jupiter.api.Assertions.*;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.TestBackends;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * Log-probs over sequences that share prefixes ({@link LlamaModel#tokenLogprobsSharedPrefix}): each shared prefix runs
 * through the layers once, yet every row's log-prob is the full packing's. On the CPU bit for bit (every op but
 * attention works row by row, and attention runs on the same full packing); on CUDA within the GEMMs' rounding.
 */
class PrefixPackingTest {
    static final int V = 512;

    /** Two groups (a 21-token prompt with three samples, a 9-token one with two), a sequence alone, ragged lengths. */
    record Case(List<int[]> seqs, int[] shared) {}

    static Case sample(long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        List<int[]> seqs = new ArrayList<>();
        List<Integer> shared = new ArrayList<>();
        int[][] groups = {{21, 3}, {0, 1}, {9, 2}}; // {prompt length, samples}; prompt 0: a sequence of its own
        for (int[] g : groups) {
            int[] prompt = r.ints(Math.max(g[0], 1), 0, V).toArray();
            for (int s = 0; s < g[1]; s++) {
                int own = 1 + r.nextInt(17);
                int[] seq = java.util.Arrays.copyOf(prompt, prompt.length + own);
                for (int j = prompt.length; j < seq.length; j++) seq[j] = r.nextInt(V);
                seqs.add(seq);
                shared.add(s == 0 || g[0] == 0 ? 0 : g[0]);
            }
        }
        return new Case(seqs, shared.stream().mapToInt(Integer::intValue).toArray());
    }

    /** Every row of every sequence, each with a random target. */
    static int[][] rowsAndTargets(Case c, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        int n = 0;
        for (int[] s : c.seqs()) n += s.length;
        int[] rows = new int[n], tgt = new int[n];
        for (int i = 0; i < n; i++) {
            rows[i] = i;
            tgt[i] = r.nextInt(V);
        }
        return new int[][] {rows, tgt};
    }

    static void sharedEqualsFull(Backend be, DType dtype, double tol) {
        Case c = sample(5);
        int[][] rt = rowsAndTargets(c, 6);
        try (LlamaWeights w32 = LlamaWeights.init(be, LlamaConfig.tiny(V, 1, 2), 3); LlamaWeights w = w32.castTo(dtype)) {
            LlamaModel m = new LlamaModel(w);
            float[] want, got;
            try (PackedBatch pb = PackedBatch.of(be, c.seqs(), V)) {
                want = m.tokenLogprobs(pb, rt[0], rt[1], 0.7f);
            }
            try (PrefixPacking pp = PrefixPacking.of(be, c.seqs(), c.shared(), V)) {
                // the layers' rows: 21 + 9 prompt tokens once, not 3 x 21 + 2 x 9
                assertEquals(want.length - 2 * 21 - 9, pp.compactRows());
                assertEquals(want.length, pp.fullRows());
                got = m.tokenLogprobsSharedPrefix(pp, rt[0], rt[1], 0.7f);
            }
            if (tol == 0) assertArrayEquals(want, got);
            else for (int i = 0; i < want.length; i++) assertEquals(want[i], got[i], tol * (1 + Math.abs(want[i])), "row " + i);
        }
    }

    @Test
    void sharedPrefixLogprobsEqualTheFullPackingsOnTheCpu() {
        sharedEqualsFull(TestBackends.cpu(), DType.FP32, 0);
        sharedEqualsFull(TestBackends.cpu(), DType.BF16, 0);
    }

    @Test
    @Tag("gpu")
    void sharedPrefixLogprobsMatchTheFullPackingsOnCuda() {
        sharedEqualsFull(TestBackends.cuda(), DType.BF16, 2e-2);
        sharedEqualsFull(TestBackends.cuda(), DType.FP32, 1e-4);
    }

    /**
     * Random batches (1-4 groups, prompts of 1-12 tokens, 1-4 samples, often a sample that is its prompt alone) with
     * random loss rows, in fp32 and bf16: the shared log-probs equal the full packing's bit for bit on the CPU, and the
     * maps hold (each full row's compact row has its token and position; compactToFull inverts fullToCompact).
     */
    @Test
    void randomBatchesAgreeBitForBitAndTheMapsHold() {
        Backend be = TestBackends.cpu();
        SplittableRandom r = new SplittableRandom(11);
        for (DType dt : new DType[] {DType.FP32, DType.BF16})
            try (LlamaWeights w32 = LlamaWeights.init(be, LlamaConfig.tiny(V, 1, 2), 3); LlamaWeights w = w32.castTo(dt)) {
                LlamaModel m = new LlamaModel(w);
                for (int iter = 0; iter < 30; iter++) {
                    List<int[]> seqs = new ArrayList<>();
                    List<Integer> sh = new ArrayList<>();
                    for (int g = 0, groups = 1 + r.nextInt(4); g < groups; g++) {
                        int p = 1 + r.nextInt(12), n = 1 + r.nextInt(4);
                        int[] prompt = r.ints(p, 0, V).toArray();
                        for (int s = 0; s < n; s++) {
                            int own = r.nextInt(4) == 0 ? 0 : r.nextInt(9);
                            int[] seq = java.util.Arrays.copyOf(prompt, p + own);
                            for (int j = p; j < seq.length; j++) seq[j] = r.nextInt(V);
                            seqs.add(seq);
                            sh.add(s == 0 ? 0 : p);
                        }
                    }
                    int nf = 0;
                    for (int[] s : seqs) nf += s.length;
                    int k = 1 + r.nextInt(nf);
                    int[] rows = new int[k], tgt = new int[k];
                    for (int i = 0; i < k; i++) {
                        rows[i] = r.nextInt(nf);
                        tgt[i] = r.nextInt(V);
                    }
                    float[] want, got;
                    try (PackedBatch pb = PackedBatch.of(be, seqs, V)) {
                        want = m.tokenLogprobs(pb, rows, tgt, 0.9f);
                    }
                    try (PrefixPacking pp = PrefixPacking.of(be, seqs, sh.stream().mapToInt(Integer::intValue).toArray(), V)) {
                        got = m.tokenLogprobsSharedPrefix(pp, rows, tgt, 0.9f);
                        int f = 0;
                        for (int i = 0; i < seqs.size(); i++)
                            for (int j = 0; j < seqs.get(i).length; j++, f++) {
                                int c = pp.fullToCompact[f];
                                assertEquals(seqs.get(i)[j], pp.compactIds[c], "token of full row " + f);
                                assertEquals(j, pp.compactPositions[c], "position of full row " + f);
                            }
                        for (int c = 0; c < pp.compactRows; c++) assertEquals(c, pp.fullToCompact[pp.compactToFull[c]], "compact row " + c);
                    }
                    assertArrayEquals(want, got, dt + " batch " + iter);
                }
            }
    }

    /**
     * A training forward and backward over the full packing, or over the prefix packing when {@code pp} is given:
     * loss = sum_i coef[i] * <dirs[i], hidden at rows[i]> (a linear read of the final hidden states at the loss rows,
     * as the LM head's gradient is), its gradient scattered to the rows, the model's backward into fp32 gradients.
     * Returns the hidden states read at the rows (flattened) and the gradients (every tensor, in layout order).
     */
    static float[][] trainOnce(LlamaModel m, List<int[]> seqs, PrefixPacking pp, int[] rows, float[] dirs, boolean ckpt) {
        Backend be = m.backend();
        int d = m.config().hiddenSize(), k = rows.length;
        try (LlamaWeights grads = LlamaWeights.zeros(be, m.config());
             PackedBatch pb = pp == null ? PackedBatch.of(be, seqs, V) : null;
             LlamaModel.Activations act = pp == null ? m.forward(pb, ckpt) : m.forward(pp, ckpt)) {
            int[] own = pp == null ? rows : pp.compactRows(rows, "rows");
            int n = act.hidden().dim(0);
            DType adt = m.activationDType();
            try (org.grpo4j.internal.backend.Tensor rT = be.upload(own, k); org.grpo4j.internal.backend.Tensor sel = be.empty(adt, k, d);
                 org.grpo4j.internal.backend.Tensor dSel32 = be.upload(dirs, k, d); org.grpo4j.internal.backend.Tensor dSel = be.empty(adt, k, d);
                 org.grpo4j.internal.backend.Tensor dHidden = be.zeros(DType.FP32, n, d)) {
                be.embedding(sel, act.hidden(), rT);
                be.cast(dSel, dSel32);
                be.embeddingBackward(dHidden, dSel, rT);
                m.backward(act, dHidden, grads);
                List<float[]> out = new ArrayList<>();
                out.add(sel.toFloatsWidened());
                for (ParameterLayout.Entry e : grads.layout().entries()) out.add(grads.get(e.name()).toFloats());
                return out.toArray(new float[0][]);
            }
        }
    }

    /**
     * Training over the prefix packing: the same final hidden states at every row (bit for bit on the CPU: the forward
     * is the log-prob pass's), and the same weight gradients up to summation order (a shared key's and value's
     * gradients are summed over its group before the weight GEMMs), with and without checkpointing, in fp32 and in
     * bf16 (where the group's sum is rounded once instead of each sequence's gradient).
     */
    static void sharedTrainingMatchesFull(Backend be, DType dtype, double hiddenTol, double gradTol) {
        Case c = sample(7);
        SplittableRandom r = new SplittableRandom(8);
        int nf = 0;
        for (int[] s : c.seqs()) nf += s.length;
        int k = nf + 5, d = LlamaConfig.tiny(V, 1, 2).hiddenSize();
        int[] rows = new int[k];
        for (int i = 0; i < k; i++) rows[i] = i < nf ? i : r.nextInt(nf); // every row, five of them twice, out of order
        for (int i = k - 1; i > 0; i--) {
            int j = r.nextInt(i + 1), x = rows[i];
            rows[i] = rows[j];
            rows[j] = x;
        }
        float[] dirs = new float[k * d];
        for (int i = 0; i < dirs.length; i++) dirs[i] = (float) r.nextGaussian();
        for (boolean tied : new boolean[] {false, true}) {
            LlamaConfig t = LlamaConfig.tiny(V, 1, 2);
            LlamaConfig cfg = new LlamaConfig(t.hiddenSize(), t.intermediateSize(), t.numLayers(), t.numHeads(), t.numKvHeads(), t.headDim(),
                    V, t.rmsNormEps(), t.ropeTheta(), null, t.maxPositionEmbeddings(), tied, 1, List.of(2));
            try (LlamaWeights w32 = LlamaWeights.init(be, cfg, 4); LlamaWeights w = w32.castTo(dtype)) {
                LlamaModel m = new LlamaModel(w);
                for (boolean ckpt : new boolean[] {false, true}) {
                    float[][] want = trainOnce(m, c.seqs(), null, rows, dirs, ckpt), got;
                    try (PrefixPacking pp = PrefixPacking.of(be, c.seqs(), c.shared(), V)) {
                        got = trainOnce(m, c.seqs(), pp, rows, dirs, ckpt);
                    }
                    String what = dtype + (tied ? " tied" : "") + (ckpt ? " checkpointed" : "");
                    if (hiddenTol == 0) assertArrayEquals(want[0], got[0], what + ": hidden states");
                    else assertClose(want[0], got[0], hiddenTol, what + ": hidden states");
                    int zeros = 0;
                    for (int q = 1; q < want.length; q++) {
                        assertClose(want[q], got[q], gradTol, what + ": gradient tensor " + (q - 1));
                        boolean zero = true;
                        for (float x : want[q]) zero &= x == 0;
                        if (zero) zeros++;
                    }
                    assertEquals(tied ? 0 : 1, zeros, what + ": gradient tensors that are all zeros (only an untied LM head's)");
                }
            }
        }
    }

    /** |a - b| <= tol * max|a| elementwise (all zeros where a is: the untied LM head, which this loss does not reach). */
    static void assertClose(float[] want, float[] got, double tol, String what) {
        assertEquals(want.length, got.length, what);
        double max = 0;
        for (float x : want) max = Math.max(max, Math.abs(x));
        if (max == 0) assertArrayEquals(want, got, what);
        for (int i = 0; i < want.length; i++)
            assertEquals(want[i], got[i], tol * max, what + " [" + i + "]");
    }

    @Test
    void sharedPrefixTrainingMatchesTheFullPackingOnTheCpu() {
        sharedTrainingMatchesFull(TestBackends.cpu(), DType.FP32, 0, 1e-5);
        sharedTrainingMatchesFull(TestBackends.cpu(), DType.BF16, 0, 3e-2);
    }

    @Test
    @Tag("gpu")
    void sharedPrefixTrainingMatchesTheFullPackingOnCuda() {
        sharedTrainingMatchesFull(TestBackends.cuda(), DType.FP32, 1e-4, 1e-4);
        sharedTrainingMatchesFull(TestBackends.cuda(), DType.BF16, 2e-2, 5e-2);
    }

    @Test
    void packingMapsRowsAndRefusesWhatIsNotShared() {
        Backend be = TestBackends.cpu();
        List<int[]> seqs = List.of(new int[] {7, 8, 9, 1}, new int[] {7, 8, 9, 2, 3}, new int[] {4, 5});
        try (PrefixPacking pp = PrefixPacking.of(be, seqs, new int[] {0, 3, 0}, V)) {
            assertEquals(11, pp.fullRows());
            assertEquals(8, pp.compactRows()); // 7 8 9 1 | 2 3 | 4 5
            int[] want = {0, 1, 2, 3, 0, 1, 2, 4, 5, 6, 7};
            for (int f = 0; f < want.length; f++) assertEquals(want[f], pp.compactRow(f), "full row " + f);
        }
        assertThrows(IllegalArgumentException.class, () -> PrefixPacking.of(be, seqs, new int[] {0, 3, 1}, V), "4 5 shares nothing with 7 8 9");
        assertThrows(IllegalArgumentException.class, () -> PrefixPacking.of(be, seqs, new int[] {2, 3, 0}, V), "the first shares with no one");
        assertThrows(IllegalArgumentException.class, () -> PrefixPacking.of(be, seqs, new int[] {0, 5, 0}, V), "past the first's length");
        List<int[]> three = List.of(new int[] {7, 8, 9, 1}, new int[] {7, 8, 9, 2}, new int[] {7, 8, 9, 3});
        assertThrows(IllegalArgumentException.class, () -> PrefixPacking.of(be, three, new int[] {0, 3, 2}, V), "one group, one count");
        assertThrows(IllegalArgumentException.class, () -> PrefixPacking.of(be, List.of(new int[] {V}), new int[] {0}, V), "token id");
        try (LlamaWeights w = LlamaWeights.init(be, LlamaConfig.tiny(V, 1, 2), 3); PrefixPacking pp = PrefixPacking.of(be, three, new int[] {0, 3, 3}, V)) {
            LlamaModel m = new LlamaModel(w);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> m.tokenLogprobsSharedPrefix(pp, new int[] {12}, new int[] {1}, 1f));
            assertTrue(e.getMessage().contains("rows[0] = 12"), e.getMessage());
        }
    }
}
