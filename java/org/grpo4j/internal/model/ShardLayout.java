package org.grpo4j.internal.model;

import java.util.ArrayList;
import java.util.List;

/**
 * How ZeRO-2 cuts the flat parameter buffer of {@code parameters} elements over {@code world} ranks.
 *
 * <ul>
 *   <li><b>Norm chunks</b> of {@link #normChunk()} elements, a power of two that depends on the parameter count only
 *       (about 4096 chunks, between 2^10 and 2^21 elements). The squared gradient norm is the sum, in chunk order, of
 *       the chunks' fp32 squared sums; a chunk never straddles two ranks, so the norm is bitwise the same at any world
 *       size.</li>
 *   <li><b>Slices</b>: the buffer is padded with zeros to {@link #padded()} = world x slice elements, slice a multiple
 *       of the norm chunk (so of 8 elements: every slice starts 16-byte aligned in bf16). Rank r owns the contiguous
 *       range [r slice, (r + 1) slice), whose first {@link #realLength(int)} elements are parameters; it keeps their
 *       fp32 master weights, AdamW moments and accumulated gradients.</li>
 *   <li><b>Buckets</b> of at most {@code bucketElements} gradients cut [0, parameters) at multiples of the bucket
 *       size (they straddle tensors freely) and are reduced from the top down, the order in which the backward pass
 *       completes gradients; each bucket is split at slice boundaries into pieces, one per owner.</li>
 * </ul>
 */
public final class ShardLayout {
    /** A bucket's part owned by one rank: flat range [from, from + length). */
    public record Piece(int owner, long from, int length) {}

    /** One gradient bucket: flat range [from, to) and its pieces, one per owning rank. */
    public record Bucket(long from, long to, List<Piece> pieces) {}

    private final long parameters;
    private final int world, normChunk;
    private final long slice;
    private final List<Bucket> buckets;

    public ShardLayout(long parameters, int world, long bucketElements) { this(parameters, world, bucketElements, new long[0]); }

    /**
     * Buckets that never straddle a cut: {@code cuts} are flat offsets (any order; 0 and offsets outside (0,
     * parameters) are ignored) that split [0, parameters) into segments, each cut into buckets as the whole buffer is
     * without cuts (at multiples of the bucket size from the segment's start). The ZeRO-2 trainer cuts at the backward
     * pass's gradient groups ({@link ParameterLayout#backwardGroups()}), so that each bucket lies in one group's window
     * ({@link LlamaWeights#gradientWindow}). Slices and norm chunks do not depend on the cuts.
     */
    public ShardLayout(long parameters, int world, long bucketElements, long[] cuts) {
        if (parameters < 1) throw new IllegalArgumentException("no parameters to shard");
        if (world < 1) throw new IllegalArgumentException("world size must be >= 1, got " + world);
        if (bucketElements < 8) throw new IllegalArgumentException("bucket of " + bucketElements + " elements is too small");
        this.parameters = parameters;
        this.world = world;
        this.normChunk = normChunk(parameters);
        long perRank = (parameters + world - 1) / world;
        this.slice = (perRank + normChunk - 1) / normChunk * normChunk;
        long b = Math.max(8, bucketElements / 8 * 8);
        java.util.TreeSet<Long> bounds = new java.util.TreeSet<>(java.util.Comparator.reverseOrder());
        bounds.add(parameters);
        bounds.add(0L);
        for (long c : cuts) if (c > 0 && c < parameters) bounds.add(c);
        List<Bucket> bs = new ArrayList<>();
        Long hi = null;
        for (long lo : bounds) { // segments [lo, hi), from the top down
            if (hi != null) addBuckets(bs, lo, hi, b);
            hi = lo;
        }
        this.buckets = List.copyOf(bs);
    }

    /** Buckets of segment [lo, hi), from its top down, at multiples of b from lo; each split at slice boundaries. */
    private void addBuckets(List<Bucket> bs, long lo, long hi, long b) {
        for (long from = lo + (hi - 1 - lo) / b * b; from >= lo; from -= b) {
            long to = Math.min(hi, from + b);
            List<Piece> pieces = new ArrayList<>();
            for (long a = from; a < to; ) {
                int owner = (int) (a / slice);
                long end = Math.min(to, (owner + 1) * slice);
                pieces.add(new Piece(owner, a, (int) (end - a)));
                a = end;
            }
            bs.add(new Bucket(from, to, List.copyOf(pieces)));
        }
    }

    /** The norm chunk for a parameter count: the smallest power of two >= parameters / 4096, within [2^10, 2^21]. */
    public static int normChunk(long parameters) {
        long target = Math.max(1, parameters / 4096);
        int c = 1 << 10;
        while (c < target && c < (1 << 21)) c <<= 1;
        return c;
    }

    public long parameters() { return parameters; }
    public int world() { return world; }
    public int normChunk() { return normChunk; }

    /** Elements per rank slice (parameters and padding), as a tensor size: at most 2^31 - 9. */
    public int slice() {
        if (slice > Integer.MAX_VALUE - 8)
            throw new IllegalArgumentException(parameters + " parameters over " + world + " ranks: a slice of " + slice
                    + " elements exceeds one tensor's 2^31 limit; use more ranks");
        return (int) slice;
    }

    /** Elements per rank slice, for estimates of any size. */
    public long sliceElements() { return slice; }

    /** world x slice: the padded length of the flat buffer. */
    public long padded() { return slice * world; }

    /** First flat index of rank r's slice. */
    public long sliceStart(int r) { return r * slice; }

    /** Parameters (not padding) in rank r's slice. */
    public int realLength(int r) { return (int) Math.max(0, Math.min(slice(), parameters - r * slice)); }

    /** Buckets in reduction order (from the top of the buffer down). */
    public List<Bucket> buckets() { return buckets; }

    /** The largest piece any rank receives (the size of its receive buffer). */
    public int largestPiece() {
        int m = 0;
        for (Bucket b : buckets) for (Piece p : b.pieces()) m = Math.max(m, p.length());
        return m;
    }

    /** The largest bucket (the size of a bf16 staging buffer). */
    public int largestBucket() {
        long m = 0;
        for (Bucket b : buckets) m = Math.max(m, b.to() - b.from());
        return (int) m;
    }
}
