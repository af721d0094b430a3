package org.grpo4j.rollout;

import java.util.Set;

/**
 * What to generate per prompt: {@code n} completions of at most {@code maxTokens} tokens, stopping at any of
 * {@code stopTokenIds} (the stop token is kept in the output) or when the text completes one of {@code stopStrings}
 * (null: none). temperature 0 = greedy; topK 0 = off; topP 1 = off.
 */
public record SamplingParams(int n, float temperature, float topP, int topK, int maxTokens, Set<Integer> stopTokenIds, long seed,
                             StopStrings stopStrings) {
    /** Without stop strings. */
    public SamplingParams(int n, float temperature, float topP, int topK, int maxTokens, Set<Integer> stopTokenIds, long seed) {
        this(n, temperature, topP, topK, maxTokens, stopTokenIds, seed, null);
    }

    public SamplingParams {
        if (n < 1) throw new IllegalArgumentException("n must be >= 1, got " + n);
        if (maxTokens < 1) throw new IllegalArgumentException("max_tokens must be >= 1, got " + maxTokens);
        if (!(temperature >= 0) || !Float.isFinite(temperature)) throw new IllegalArgumentException("temperature must be >= 0, got " + temperature);
        if (!(topP > 0 && topP <= 1)) throw new IllegalArgumentException("top_p must be in (0, 1], got " + topP);
        if (topK < 0) throw new IllegalArgumentException("top_k must be >= 0 (0 = off), got " + topK);
        stopTokenIds = Set.copyOf(stopTokenIds);
    }
}
