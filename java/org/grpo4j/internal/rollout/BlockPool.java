package org.grpo4j.internal.rollout;

import java.util.ArrayDeque;

/**
 * Reference-counted KV-cache blocks from a fixed pool, with reservations: the generator's WORST_CASE admission
 * reserves every block a sequence can ever need before admitting it (so it never runs out mid-sequence); ON_DEMAND
 * allocates without reservations and preempts when the pool runs out ({@link Generator}).
 */
final class BlockPool {
    private final int[] refs;
    private final ArrayDeque<Integer> free = new ArrayDeque<>();
    private int reserved; // blocks promised to admitted sequences but not yet allocated
    private int used, peakUsed;

    BlockPool(int numBlocks) {
        refs = new int[numBlocks];
        for (int b = 0; b < numBlocks; b++) free.add(b);
    }

    int total() { return refs.length; }
    int used() { return used; }
    int peakUsed() { return peakUsed; }
    /** Blocks neither allocated nor reserved. */
    int available() { return free.size() - reserved; }

    boolean reserve(int blocks) {
        if (blocks > available()) return false;
        reserved += blocks;
        return true;
    }

    void unreserve(int blocks) {
        if (blocks < 0 || blocks > reserved) throw new IllegalStateException("unreserve " + blocks + " of " + reserved);
        reserved -= blocks;
    }

    /** Allocates a block against an earlier reservation. */
    int allocateReserved() {
        if (reserved <= 0) throw new IllegalStateException("allocation without a reservation");
        reserved--;
        return take();
    }

    /** Allocates a block that was not reserved (caller checked {@link #available()}). */
    int allocate() {
        if (available() <= 0) throw new IllegalStateException("KV block pool exhausted");
        return take();
    }

    private int take() {
        int b = free.poll();
        refs[b] = 1;
        used++;
        peakUsed = Math.max(peakUsed, used);
        return b;
    }

    void retain(int block) {
        if (refs[block] <= 0) throw new IllegalStateException("retain of free block " + block);
        refs[block]++;
    }

    void release(int block) {
        if (refs[block] <= 0) throw new IllegalStateException("double free of block " + block);
        if (--refs[block] == 0) {
            free.add(block);
            used--;
        }
    }
}
