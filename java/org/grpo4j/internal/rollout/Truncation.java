package org.grpo4j.internal.rollout;

import java.util.Arrays;
import java.util.Set;

/**
 * The reference trainer's response post-processing (grpo-reference.md section 1.5), on unpadded token lists:
 * responses are padded with the stop token (DUMMY_PAD_TOKEN = stop id) to response_length, truncated after the first
 * stop token (kept: it is trained on), and the logged sequence length is the stop token's index, or
 * response_length - 1 without one.
 */
public final class Truncation {
    private Truncation() {}

    /** The tokens through the first stop token (inclusive), or all of them when none occurs. */
    public static int[] keepThroughFirstStop(int[] tokens, Set<Integer> stopIds) {
        for (int i = 0; i < tokens.length; i++) if (stopIds.contains(tokens[i])) return Arrays.copyOf(tokens, i + 1);
        return tokens.clone();
    }

    /** Right-pads with {@code padToken} to {@code length} (the reference pads with the stop token). */
    public static int[] padTo(int[] tokens, int length, int padToken) {
        if (tokens.length > length) throw new IllegalArgumentException("response of " + tokens.length + " tokens is longer than " + length);
        int[] out = Arrays.copyOf(tokens, length);
        Arrays.fill(out, tokens.length, length, padToken);
        return out;
    }

    /**
     * What the trainer needs of one response after the reference's rules: the loss tokens (through the first stop,
     * which is included), whether a stop token is present (else the non-stop penalty applies), and the reference's
     * logged sequence length (index of the stop token, or responseLength - 1).
     */
    public record Response(int[] lossTokens, boolean hasStop, int sequenceLength) {}

    /**
     * Applies the rules to a generated response of at most {@code responseLength} tokens. Reproduces the reference's
     * quirk that padding with the stop token makes every response shorter than responseLength count as stopped.
     */
    public static Response apply(int[] generated, int stopId, int responseLength) {
        int[] padded = padTo(generated, responseLength, stopId);
        int[] kept = keepThroughFirstStop(padded, Set.of(stopId));
        boolean hasStop = kept[kept.length - 1] == stopId;
        int seqLen = hasStop ? kept.length - 1 : responseLength - 1;
        return new Response(kept, hasStop, seqLen);
    }
}
