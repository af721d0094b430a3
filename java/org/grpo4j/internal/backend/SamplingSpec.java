package org.grpo4j.internal.backend;

/**
 * Per-call sampling parameters. temperature 0 means greedy (argmax, lowest index on ties); topK 0 means no top-k;
 * topP 1 means no top-p. Random numbers come from Philox4x32-10 keyed by {@code seed} with a per-row counter.
 */
public record SamplingSpec(float temperature, int topK, float topP, long seed) {
    public SamplingSpec {
        if (!(temperature >= 0) || !Float.isFinite(temperature)) throw new IllegalArgumentException("sample: temperature must be >= 0, got " + temperature);
        if (topK < 0) throw new IllegalArgumentException("sample: top_k must be >= 0 (0 = off), got " + topK);
        if (!(topP > 0 && topP <= 1)) throw new IllegalArgumentException("sample: top_p must be in (0, 1], got " + topP);
    }
}
