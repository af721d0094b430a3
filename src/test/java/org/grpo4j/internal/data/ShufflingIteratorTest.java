package org.grpo4j.internal.data;

import static org.junit.jupiter.api.Assertions.*;

import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.Test;

class ShufflingIteratorTest {

    @Test
    void epochsAreTailDroppingPermutations() {
        ShufflingIterator it = new ShufflingIterator(103, 10, 1);
        assertEquals(10, it.batchesPerEpoch());
        List<int[]> e0 = new ArrayList<>(), e1 = new ArrayList<>();
        for (int b = 0; b < 10; b++) e0.add(it.next());
        for (int b = 0; b < 10; b++) e1.add(it.next());
        for (List<int[]> epoch : List.of(e0, e1)) {
            Set<Integer> seen = new HashSet<>();
            for (int[] batch : epoch) for (int i : batch) assertTrue(seen.add(i), "index repeated within an epoch");
            assertEquals(100, seen.size(), "the 3-row tail is dropped");
        }
        assertFalse(java.util.Arrays.equals(e0.get(0), e1.get(0)), "each epoch is reshuffled");
        assertEquals(2, it.epoch() + 1);
    }

    @Test
    void sameSeedSameBatchesOnEveryRankAndDifferentSeedsDiffer() {
        ShufflingIterator a = new ShufflingIterator(50, 8, 7), b = new ShufflingIterator(50, 8, 7), c = new ShufflingIterator(50, 8, 8);
        boolean differs = false;
        for (int i = 0; i < 20; i++) {
            int[] x = a.next(), y = b.next(), z = c.next();
            assertArrayEquals(x, y);
            differs |= !java.util.Arrays.equals(x, z);
        }
        assertTrue(differs);
    }

    @Test
    void restoreResumesExactly() {
        ShufflingIterator a = new ShufflingIterator(50, 8, 3);
        for (int i = 0; i < 13; i++) a.next(); // into the third epoch
        ShufflingIterator.Position p = a.position();
        List<int[]> rest = new ArrayList<>();
        for (int i = 0; i < 9; i++) rest.add(a.next());
        ShufflingIterator b = new ShufflingIterator(50, 8, 3);
        b.restore(p);
        for (int[] want : rest) assertArrayEquals(want, b.next());
        assertThrows(IllegalArgumentException.class, () -> b.restore(new ShufflingIterator.Position(0, 3)));
    }

    @Test
    void rankSlicesPartitionTheGlobalBatch() {
        int[] g = {5, 3, 9, 1, 0, 7};
        assertArrayEquals(new int[] {5, 3}, ShufflingIterator.rankSlice(g, 0, 3));
        assertArrayEquals(new int[] {0, 7}, ShufflingIterator.rankSlice(g, 2, 3));
        assertThrows(IllegalArgumentException.class, () -> ShufflingIterator.rankSlice(g, 0, 4));
        assertThrows(IllegalArgumentException.class, () -> new ShufflingIterator(5, 8, 1));
    }

    /**
     * The position after an epoch's last whole batch (a checkpoint at the epoch's end saves it) restores, and the next
     * batch is the next epoch's first: restore() refused it, so such a checkpoint could not be resumed (a review).
     */
    @Test
    void thePositionAtAnEpochsEndRestores() {
        ShufflingIterator a = new ShufflingIterator(50, 8, 3);
        for (int i = 0; i < 6; i++) a.next(); // the whole first epoch: offset 48, 2 prompts dropped
        ShufflingIterator.Position p = a.position();
        assertEquals(new ShufflingIterator.Position(0, 48), p);
        int[] want = a.next();
        assertEquals(1, a.epoch());
        ShufflingIterator b = new ShufflingIterator(50, 8, 3);
        b.restore(p);
        assertArrayEquals(want, b.next());
        assertThrows(IllegalArgumentException.class, () -> new ShufflingIterator(50, 8, 3).restore(new ShufflingIterator.Position(0, 56)));
    }
}
