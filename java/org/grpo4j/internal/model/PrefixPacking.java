package org.grpo4j.internal.model;

import java.util.Arrays;
import java.util.List;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.Tensor;

/**
 * Packed sequences whose consecutive members may share a prefix (a GRPO group's samples share their prompt), for
 * {@link LlamaModel#tokenLogprobsSharedPrefix}: every token's work except attention is row by row, so a shared prefix
 * needs to run through the layers once, not once per sequence. Two packings of the same sequences:
 * <ul>
 *   <li>compact: each group's shared prefix once, then each sequence's own tokens (ids and positions);</li>
 *   <li>full: every sequence whole, end to end, as {@link PackedBatch} packs them (the attention's packing).</li>
 * </ul>
 * {@code fullToCompact[f]} is the compact row of full row f (where the attention's q, k and v rows are gathered from);
 * {@code compactToFull[c]} a full row that holds compact row c (where its attention output is gathered back from: a
 * shared prefix row's output is the same in every sequence of its group, as causal attention over the prefix alone);
 * {@code fullToRep[f]} is c where f = compactToFull[c] and compactRows elsewhere (the backward sends a compact row's
 * output gradient to that one full row and reads a zero row for the others); {@code fullToCompactTwice} is
 * fullToCompact followed by fullToCompact + compactRows (two gradients of the full rows, k's and v's, summed per
 * compact row in one pass).
 */
public final class PrefixPacking implements AutoCloseable {
    final int compactRows, fullRows;
    final int[] compactIds, compactPositions, fullToCompact, compactToFull, cu;
    final Tensor idsT, positionsT, fullToCompactT, compactToFullT, fullToRepT, fullToCompactTwiceT, cuT;

    /**
     * @param seqs   the sequences (each non-empty), in packing order
     * @param shared per sequence, how many leading tokens it shares with the sequence before it (0 starts a new group;
     *               a sequence continuing a group must share the same count as the group's first continuation, and
     *               those tokens must equal the group's first sequence's)
     */
    public static PrefixPacking of(Backend be, List<int[]> seqs, int[] shared, int vocabSize) {
        int b = seqs.size();
        if (b == 0) throw new IllegalArgumentException("empty batch");
        if (shared.length != b) throw new IllegalArgumentException("shared has " + shared.length + " entries for " + b + " sequences");
        int full = 0, compact = 0;
        int groupShared = 0, leader = -1;
        for (int i = 0; i < b; i++) {
            int[] s = seqs.get(i);
            if (s.length == 0) throw new IllegalArgumentException("empty sequence " + i + " in batch");
            for (int j = 0; j < s.length; j++)
                if (s[j] < 0 || s[j] >= vocabSize)
                    throw new IllegalArgumentException("token id " + s[j] + " (sequence " + i + ", position " + j + ") is outside the vocabulary [0, " + vocabSize + ")");
            int sh = shared[i];
            if (sh < 0 || (i == 0 && sh != 0))
                throw new IllegalArgumentException("shared[" + i + "] = " + sh + ": must be >= 0, and 0 for the first sequence");
            if (sh > 0) {
                if (groupShared != 0 && sh != groupShared)
                    throw new IllegalArgumentException("shared[" + i + "] = " + sh + " differs from its group's " + groupShared);
                int[] lead = seqs.get(leader);
                if (sh > s.length || sh > lead.length || !Arrays.equals(s, 0, sh, lead, 0, sh))
                    throw new IllegalArgumentException("sequence " + i + " does not share its first " + sh + " tokens with sequence " + leader);
                groupShared = sh;
            } else {
                leader = i;
                groupShared = 0;
            }
            full += s.length;
            compact += s.length - sh;
        }
        int[] ids = new int[compact], pos = new int[compact], f2c = new int[full], c2f = new int[compact], cu = new int[b + 1];
        int f = 0, c = 0, leaderStart = 0; // compact row where the current group's first sequence starts
        for (int i = 0; i < b; i++) {
            int[] s = seqs.get(i);
            int sh = shared[i];
            if (sh == 0) leaderStart = c;
            for (int j = 0; j < s.length; j++, f++) {
                if (j < sh) {
                    f2c[f] = leaderStart + j; // the group's first sequence's row of this shared token
                } else {
                    ids[c] = s[j];
                    pos[c] = j;
                    c2f[c] = f;
                    f2c[f] = c++;
                }
            }
            cu[i + 1] = f;
        }
        return new PrefixPacking(be, ids, pos, f2c, c2f, cu);
    }

    private PrefixPacking(Backend be, int[] ids, int[] pos, int[] f2c, int[] c2f, int[] cu) {
        this.compactRows = ids.length;
        this.fullRows = f2c.length;
        this.compactIds = ids;
        this.compactPositions = pos;
        this.fullToCompact = f2c;
        this.compactToFull = c2f;
        this.cu = cu;
        int[] fullToRep = new int[fullRows];
        Arrays.fill(fullToRep, compactRows);
        for (int c = 0; c < compactRows; c++) fullToRep[c2f[c]] = c;
        int[] twice = new int[2 * fullRows];
        for (int f = 0; f < fullRows; f++) {
            twice[f] = f2c[f];
            twice[fullRows + f] = f2c[f] + compactRows;
        }
        Tensor[] made = new Tensor[7];
        try {
            made[0] = be.upload(ids, ids.length);
            made[1] = be.upload(pos, pos.length);
            made[2] = be.upload(f2c, f2c.length);
            made[3] = be.upload(c2f, c2f.length);
            made[4] = be.upload(cu, cu.length);
            made[5] = be.upload(fullToRep, fullToRep.length);
            made[6] = be.upload(twice, twice.length);
        } catch (RuntimeException e) {
            for (Tensor t : made) if (t != null) t.close();
            throw e;
        }
        this.idsT = made[0];
        this.positionsT = made[1];
        this.fullToCompactT = made[2];
        this.compactToFullT = made[3];
        this.cuT = made[4];
        this.fullToRepT = made[5];
        this.fullToCompactTwiceT = made[6];
    }

    /** Rows the layers run: each shared prefix once, then each sequence's own tokens. */
    public int compactRows() { return compactRows; }

    /** Rows of the full packing (every sequence whole). */
    public int fullRows() { return fullRows; }

    /** The compact row of full row f. */
    public int compactRow(int f) { return fullToCompact[f]; }

    /** The compact rows of full rows (each checked to lie in the packing, named {@code what} in the error). */
    public int[] compactRows(int[] full, String what) {
        int[] out = new int[full.length];
        for (int i = 0; i < full.length; i++) {
            if (full[i] < 0 || full[i] >= fullRows)
                throw new IllegalArgumentException(what + "[" + i + "] = " + full[i] + " is outside the packing's " + fullRows + " rows");
            out[i] = fullToCompact[full[i]];
        }
        return out;
    }

    @Override
    public void close() {
        // (the others are still freed when one fails)
        org.grpo4j.internal.util.Closing.closeAll("prefix packing", java.util.List.of(idsT, positionsT, fullToCompactT, compactToFullT, fullToRepT,
                fullToCompactTwiceT, cuT));
    }
}
