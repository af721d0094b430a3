package org.grpo4j.internal.backend;

/**
 * Outputs of {@link Backend#grpoLoss}: loss [1] (overwritten), per-token logprobs, ratio, clipped (1 where the
 * clipped branch was taken) and kl [N] (overwritten), dHidden [N, D] (overwritten) and dLmHead [V, D] (accumulated).
 */
public record GrpoLossOutputs(Tensor loss, Tensor logprobs, Tensor ratio, Tensor clipped, Tensor kl, Tensor dHidden, Tensor dLmHead) {}
