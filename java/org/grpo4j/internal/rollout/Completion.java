package org.grpo4j.internal.rollout;

/**
 * One generated completion: token ids (through the stop token, when one was produced), the log-prob of each sampled
 * token under the distribution it was sampled from before top-k/top-p filtering, log softmax(logits / temperature)
 * (log softmax(logits) when greedy), and why generation ended.
 */
public record Completion(int[] tokens, float[] logprobs, FinishReason finishReason) {
    public enum FinishReason {
        /** A stop token was produced (and is the last token). */
        STOP,
        /** The text completed one of the stop strings (the token that completed it is the last one). */
        STOP_STRING,
        /** max_tokens was reached without a stop token. */
        LENGTH;

        public String label() { return name().toLowerCase(java.util.Locale.ROOT); }
    }
}
