package org.grpo4j.internal.rollout;

import static org.junit.jupiter.api.Assertions.*;

import java.util.Set;
import org.junit.jupiter.api.Test;

/** Hand-checked cases of grpo-reference.md section 1.5 (EOS = 9, response_length = 6). */
class TruncationTest {
    @Test
    void stoppedResponseKeepsItsEos() {
        Truncation.Response r = Truncation.apply(new int[] {4, 5, 9}, 9, 6);
        assertArrayEquals(new int[] {4, 5, 9}, r.lossTokens());
        assertTrue(r.hasStop());
        assertEquals(2, r.sequenceLength()); // index of the EOS
    }

    @Test
    void truncatedResponseHasNoStopAndLengthMinusOne() {
        Truncation.Response r = Truncation.apply(new int[] {1, 2, 3, 4, 5, 6}, 9, 6);
        assertArrayEquals(new int[] {1, 2, 3, 4, 5, 6}, r.lossTokens());
        assertFalse(r.hasStop());
        assertEquals(5, r.sequenceLength());
    }

    @Test
    void shortResponseWithoutEosCountsAsStoppedBecauseOfEosPadding() {
        // the reference pads with EOS: a 3-token response that stopped on another id gets an EOS appended and trained
        Truncation.Response r = Truncation.apply(new int[] {1, 2, 3}, 9, 6);
        assertArrayEquals(new int[] {1, 2, 3, 9}, r.lossTokens());
        assertTrue(r.hasStop());
        assertEquals(3, r.sequenceLength());
    }

    @Test
    void tokensAfterTheFirstStopAreDropped() {
        assertArrayEquals(new int[] {1, 9}, Truncation.keepThroughFirstStop(new int[] {1, 9, 2, 9}, Set.of(9)));
        assertArrayEquals(new int[] {1, 2}, Truncation.keepThroughFirstStop(new int[] {1, 2}, Set.of(9)));
        assertArrayEquals(new int[] {7, 9, 9, 9}, Truncation.padTo(new int[] {7}, 4, 9));
        assertThrows(IllegalArgumentException.class, () -> Truncation.padTo(new int[] {1, 2, 3}, 2, 9));
    }
}
