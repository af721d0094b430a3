package org.grpo4j.internal.model;

import java.util.List;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.Tensor;

/**
 * Sequences packed end to end (no padding): token ids [N], position ids [N] (0.. within each sequence) and
 * cu_seqlens [B+1]. Attention is causal within each sequence and never crosses sequences, so a packed sequence
 * computes exactly what it would alone, with no pad tokens computed.
 */
public final class PackedBatch implements AutoCloseable {
    private final int[] ids, positions, cu;
    final Tensor idsT, positionsT, cuT;

    private PackedBatch(Backend be, int[] ids, int[] positions, int[] cu) {
        this.ids = ids;
        this.positions = positions;
        this.cu = cu;
        this.idsT = be.upload(ids, ids.length);
        this.positionsT = be.upload(positions, positions.length);
        this.cuT = be.upload(cu, cu.length);
    }

    /** Packs the sequences (each non-empty) with positions 0..len-1. */
    public static PackedBatch of(Backend be, List<int[]> sequences, int vocabSize) {
        if (sequences.isEmpty()) throw new IllegalArgumentException("empty batch");
        int n = 0;
        for (int[] s : sequences) {
            if (s.length == 0) throw new IllegalArgumentException("empty sequence in batch");
            n += s.length;
        }
        int[] ids = new int[n], pos = new int[n], cu = new int[sequences.size() + 1];
        int t = 0;
        for (int b = 0; b < sequences.size(); b++) {
            int[] s = sequences.get(b);
            for (int i = 0; i < s.length; i++) {
                if (s[i] < 0 || s[i] >= vocabSize)
                    throw new IllegalArgumentException("token id " + s[i] + " (sequence " + b + ", position " + i + ") is outside the vocabulary [0, " + vocabSize + ")");
                ids[t] = s[i];
                pos[t++] = i;
            }
            cu[b + 1] = t;
        }
        return new PackedBatch(be, ids, pos, cu);
    }

    public int tokens() { return ids.length; }
    public int sequences() { return cu.length - 1; }
    public int start(int seq) { return cu[seq]; }
    public int length(int seq) { return cu[seq + 1] - cu[seq]; }
    public int[] ids() { return ids.clone(); }

    @Override
    public void close() {
        idsT.close();
        positionsT.close();
        cuT.close();
    }
}
