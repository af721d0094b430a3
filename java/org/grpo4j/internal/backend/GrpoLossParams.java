package org.grpo4j.internal.backend;

/**
 * Scalars of the fused GRPO loss: logits are divided by (temperature + 1e-7); the PPO ratio is clipped to
 * [1 - epsLow, 1 + epsHigh]; the KL term is beta * estimator.
 */
public record GrpoLossParams(float temperature, float epsLow, float epsHigh, float beta, KlEstimator kl) {
    public GrpoLossParams {
        if (!(temperature >= 0) || !Float.isFinite(temperature)) throw new IllegalArgumentException("grpoLoss: temperature must be >= 0, got " + temperature);
        if (!(epsLow >= 0 && epsLow < 1)) throw new IllegalArgumentException("grpoLoss: eps_low must be in [0, 1), got " + epsLow);
        if (!(epsHigh >= 0) || !Float.isFinite(epsHigh)) throw new IllegalArgumentException("grpoLoss: eps_high must be >= 0, got " + epsHigh);
        if (!(beta >= 0) || !Float.isFinite(beta)) throw new IllegalArgumentException("grpoLoss: beta must be >= 0, got " + beta);
        if (kl == null) throw new IllegalArgumentException("grpoLoss: kl estimator is null");
    }
}
