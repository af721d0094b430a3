package org.grpo4j.internal.train;

/**
 * How per-token losses become the mini-batch loss, as per-token weights passed to the fused GRPO loss:
 * <ul>
 *   <li>{@code micro_token_mean} (the reference): mean over the unmasked tokens of each micro-batch, divided by the
 *       gradient accumulation steps. w = 1 / (tokens in micro-batch * GAS).</li>
 *   <li>{@code token_mean} (DAPO): mean over every unmasked token of the mini-batch. w = 1 / tokens in mini-batch.</li>
 *   <li>{@code seq_mean_token_mean}: each sequence's token mean, averaged over the mini-batch's sequences.
 *       w = 1 / (sequence length * sequences in mini-batch).</li>
 *   <li>{@code dr_grpo} (Dr. GRPO's loss): token sums divided by a constant (response_length), averaged over
 *       sequences. w = 1 / (response_length * sequences in mini-batch). Dr. GRPO also leaves the advantages
 *       undivided by the group's std: {@code advantage_normalization: centered}.</li>
 * </ul>
 */
public enum LossAggregation {
    MICRO_TOKEN_MEAN, TOKEN_MEAN, SEQ_MEAN_TOKEN_MEAN, DR_GRPO;

    public static LossAggregation parse(String s) {
        return switch (s.trim().toLowerCase(java.util.Locale.ROOT)) {
            case "micro_token_mean" -> MICRO_TOKEN_MEAN;
            case "token_mean" -> TOKEN_MEAN;
            case "seq_mean_token_mean" -> SEQ_MEAN_TOKEN_MEAN;
            case "dr_grpo" -> DR_GRPO;
            default -> throw new IllegalArgumentException("loss_aggregation must be micro_token_mean, token_mean, seq_mean_token_mean or dr_grpo, got \"" + s + "\"");
        };
    }

    /**
     * Per-token weight for a token of a sequence with {@code seqTokens} loss tokens, in a micro-batch with
     * {@code microTokens} loss tokens, in a mini-batch with {@code miniTokens} tokens and {@code miniSeqs} sequences.
     */
    public double weight(int seqTokens, int microTokens, int gradAccumSteps, long miniTokens, int miniSeqs, int responseLength) {
        return weight(seqTokens, microTokens, gradAccumSteps, miniTokens, miniSeqs, responseLength, 1);
    }

    /**
     * The weight of a token on one of {@code world} data-parallel ranks, whose gradients are summed: the per-rank
     * aggregations are divided by the world size (DeepSpeed averages the ranks' gradients; the average is folded into
     * the weights), and token_mean divides by {@code globalMiniTokens}, the loss tokens of the global mini-batch
     * (every rank's), as TRL's dapo loss normalizes by the tokens of the whole batch. With world 1 this is the single
     * process's weight.
     */
    public double weight(int seqTokens, int microTokens, int gradAccumSteps, long globalMiniTokens, int miniSeqs, int responseLength, int world) {
        return switch (this) {
            case MICRO_TOKEN_MEAN -> 1.0 / ((double) microTokens * gradAccumSteps * world);
            case TOKEN_MEAN -> 1.0 / globalMiniTokens;
            case SEQ_MEAN_TOKEN_MEAN -> 1.0 / ((double) seqTokens * miniSeqs * world);
            case DR_GRPO -> 1.0 / ((double) responseLength * miniSeqs * world);
        };
    }
}
