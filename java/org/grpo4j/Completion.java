package org.grpo4j;

import java.util.Locale;

/**
 * One generated completion: its text, its token ids, the log-probability of each token and why generation ended.
 *
 * <p>The log-prob of token t is log softmax(logits / temperature)[t] under the distribution it was drawn from,
 * before top-k/top-p filtering (log softmax(logits) when greedy): the behaviour policy's log-probs that GRPO's
 * importance ratios need. Both arrays have one entry per generated token; when generation stopped at the
 * end-of-sequence token, that token is the last one (and the text omits it, like every special token).
 *
 * <p><b>Thread safety:</b> immutable (the accessors return copies of the arrays), so thread-safe.
 */
public final class Completion {
    /** Why generation ended. */
    public enum FinishReason {
        /** The end-of-sequence token was produced (and is the last token). */
        STOP,
        /** The text completed one of the {@link Sampling#stopStrings stop strings}. */
        STOP_STRING,
        /** {@link Sampling#maxTokens} tokens were generated without a stop. */
        LENGTH;

        /**
         * The lower-case name, as written in grpo4j's outputs.
         *
         * @return "stop", "stop_string" or "length"
         */
        public String label() { return name().toLowerCase(Locale.ROOT); }
    }

    private final String text;
    private final int[] tokenIds;
    private final float[] logprobs;
    private final FinishReason finishReason;

    /**
     * A completion.
     *
     * @param text         the decoded text, special tokens skipped
     * @param tokenIds     the generated token ids (copied)
     * @param logprobs     one log-prob per token (copied)
     * @param finishReason why generation ended
     * @throws NullPointerException     if an argument is null
     * @throws IllegalArgumentException if the arrays differ in length
     */
    public Completion(String text, int[] tokenIds, float[] logprobs, FinishReason finishReason) {
        this.text = java.util.Objects.requireNonNull(text, "text");
        this.tokenIds = java.util.Objects.requireNonNull(tokenIds, "tokenIds").clone();
        this.logprobs = java.util.Objects.requireNonNull(logprobs, "logprobs").clone();
        this.finishReason = java.util.Objects.requireNonNull(finishReason, "finishReason");
        if (this.tokenIds.length != this.logprobs.length)
            throw new IllegalArgumentException("tokenIds has " + this.tokenIds.length + " entries but logprobs has " + this.logprobs.length);
    }

    /**
     * The decoded text, special tokens skipped.
     *
     * @return the text
     */
    public String text() { return text; }

    /**
     * The generated token ids.
     *
     * @return a copy
     */
    public int[] tokenIds() { return tokenIds.clone(); }

    /**
     * The log-prob of each generated token.
     *
     * @return a copy, one entry per token
     */
    public float[] logprobs() { return logprobs.clone(); }

    /**
     * The sum of the tokens' log-probs: the log-probability of the whole completion under the sampling distribution.
     *
     * @return the sum, in float64
     */
    public double sumLogprob() {
        double s = 0;
        for (float f : logprobs) s += f;
        return s;
    }

    /**
     * The number of generated tokens.
     *
     * @return the length of {@link #tokenIds()}
     */
    public int length() { return tokenIds.length; }

    /**
     * Why generation ended.
     *
     * @return the finish reason
     */
    public FinishReason finishReason() { return finishReason; }

    /**
     * Equal when the text, the token ids, the log-probs (bit for bit) and the finish reason are.
     *
     * @param o another object
     * @return whether {@code o} is an equal completion
     */
    @Override
    public boolean equals(Object o) {
        return o instanceof Completion c && text.equals(c.text) && java.util.Arrays.equals(tokenIds, c.tokenIds)
                && java.util.Arrays.equals(logprobs, c.logprobs) && finishReason == c.finishReason;
    }

    /**
     * A hash of the token ids and the finish reason, consistent with {@link #equals}.
     *
     * @return the hash
     */
    @Override
    public int hashCode() { return 31 * java.util.Arrays.hashCode(tokenIds) + finishReason.hashCode(); }

    /** The text with its length and finish reason, for logs. */
    @Override
    public String toString() { return "Completion[" + tokenIds.length + " tokens, " + finishReason.label() + "] " + text; }
}
