package org.grpo4j.internal.rollout;

import java.util.Set;

/**
 * What to generate per prompt: {@code n} completions of at most {@code maxTokens} tokens, stopping at any of
 * {@code stopTokenIds} (the stop token is kept in the output) or when the text completes one of {@code stopStrings}
 * (null: none). temperature 0 = greedy; topK 0 = off; topP 1 = off. {@code promptOffset}: the index of the first
 * prompt in a larger batch that was split (over data-parallel ranks): sample j of prompt i draws from random stream
 * (promptOffset + i) x n + j, so a prompt's completions do not depend on how the batch was split.
 */
public record SamplingParams(int n, float temperature, float topP, int topK, int maxTokens, Set<Integer> stopTokenIds, long seed,
                             StopStrings stopStrings, int promptOffset) {
    /** Without stop strings. */
    public SamplingParams(int n, float temperature, float topP, int topK, int maxTokens, Set<Integer> stopTokenIds, long seed) {
        this(n, temperature, topP, topK, maxTokens, stopTokenIds, seed, null, 0);
    }

    /** Prompt offset 0. */
    public SamplingParams(int n, float temperature, float topP, int topK, int maxTokens, Set<Integer> stopTokenIds, long seed,
                          StopStrings stopStrings) {
        this(n, temperature, topP, topK, maxTokens, stopTokenIds, seed, stopStrings, 0);
    }

    public SamplingParams {
        if (n < 1) throw new IllegalArgumentException("n must be >= 1, got " + n);
        if (maxTokens < 1) throw new IllegalArgumentException("max_tokens must be >= 1, got " + maxTokens);
        if (!(temperature >= 0) || !Float.isFinite(temperature)) throw new IllegalArgumentException("temperature must be >= 0, got " + temperature);
        if (!(topP > 0 && topP <= 1)) throw new IllegalArgumentException("top_p must be in (0, 1], got " + topP);
        if (topK < 0) throw new IllegalArgumentException("top_k must be >= 0 (0 = off), got " + topK);
        if (promptOffset < 0) throw new IllegalArgumentException("prompt offset must be >= 0, got " + promptOffset);
        stopTokenIds = Set.copyOf(stopTokenIds);
    }
}
