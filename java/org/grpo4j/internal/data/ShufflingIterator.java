package org.grpo4j.internal.data;

import java.util.SplittableRandom;

/**
 * The reference's ShufflingIterator: yields global batches of {@code batchSize} dataset indices from a seeded
 * permutation, drops the {@code size % batchSize} tail of each pass and reshuffles for the next. Every rank builds it
 * with the same seed and so sees the same global batches; {@link #rankSlice} cuts a rank's share. The permutation of
 * epoch e comes from a generator seeded by (seed, e), so {@link #position()} / {@link #restore} resume exactly.
 */
public final class ShufflingIterator {
    private final int size, batchSize;
    private final long seed;
    private int epoch;
    private int offset; // index of the next batch's first element within the epoch's permutation
    private int[] perm;

    public ShufflingIterator(int size, int batchSize, long seed) {
        if (batchSize < 1) throw new IllegalArgumentException("batch size must be >= 1, got " + batchSize);
        if (size < batchSize)
            throw new IllegalArgumentException("the dataset has " + size + " prompts, fewer than one batch of " + batchSize);
        this.size = size;
        this.batchSize = batchSize;
        this.seed = seed;
        this.perm = permutation(0);
    }

    /** Saved position: epoch and offset (plus the constructor arguments, which must match on restore). */
    public record Position(int epoch, int offset) {}

    public Position position() { return new Position(epoch, offset); }

    /**
     * Goes on from a saved position. The offset after the last whole batch of an epoch (batchesPerEpoch() x batchSize)
     * is a position too: a checkpoint at an epoch's end saves it, and the next batch starts the next epoch.
     */
    public void restore(Position p) {
        if (p.epoch() < 0 || p.offset() < 0 || p.offset() > batchesPerEpoch() * batchSize || p.offset() % batchSize != 0)
            throw new IllegalArgumentException("invalid iterator position (epoch " + p.epoch() + ", offset " + p.offset() + ") for " + size
                    + " prompts in batches of " + batchSize + " (the offset must be a multiple of " + batchSize + " in [0, " + batchesPerEpoch() * batchSize + "])");
        epoch = p.epoch();
        offset = p.offset();
        perm = permutation(epoch);
    }

    public int batchesPerEpoch() { return size / batchSize; }

    public int epoch() { return epoch; }

    /** The next global batch of dataset indices. */
    public int[] next() {
        if (offset + batchSize > size) {
            epoch++;
            offset = 0;
            perm = permutation(epoch);
        }
        int[] b = java.util.Arrays.copyOfRange(perm, offset, offset + batchSize);
        offset += batchSize;
        return b;
    }

    private int[] permutation(int ep) { return permutation(size, seed * 0x9E3779B97F4A7C15L + ep); }

    /** A Fisher-Yates permutation of 0..n-1 drawn from SplittableRandom(seed). */
    public static int[] permutation(int size, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        int[] p = new int[size];
        for (int i = 0; i < size; i++) p[i] = i;
        for (int i = size - 1; i > 0; i--) {
            int j = r.nextInt(i + 1);
            int t = p[i];
            p[i] = p[j];
            p[j] = t;
        }
        return p;
    }

    /** Rank {@code rank}'s contiguous share of a global batch (rows [rank*k, (rank+1)*k) with k = batch / world). */
    public static int[] rankSlice(int[] global, int rank, int world) {
        if (world < 1 || rank < 0 || rank >= world) throw new IllegalArgumentException("rank " + rank + " outside world " + world);
        if (global.length % world != 0)
            throw new IllegalArgumentException("global batch of " + global.length + " does not split over " + world + " ranks");
        int k = global.length / world;
        return java.util.Arrays.copyOfRange(global, rank * k, (rank + 1) * k);
    }
}
