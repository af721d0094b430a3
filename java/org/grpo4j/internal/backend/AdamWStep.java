package org.grpo4j.internal.backend;

/**
 * One AdamW step, torch.optim.AdamW semantics; {@code step} counts from 1 (bias correction uses it).
 * {@code gradScale} multiplies each gradient element (one fp32 multiply, as {@link Backend#scale} rounds it) before the
 * update: gradient clipping's coefficient folded into the step, so that clipping costs no pass of its own over the
 * gradients. 1 (the 6-argument constructor) leaves them as they are. The gradient buffer itself is not written.
 */
public record AdamWStep(float lr, float beta1, float beta2, float eps, float weightDecay, int step, float gradScale) {
    public AdamWStep {
        if (step < 1) throw new IllegalArgumentException("adamW: step counts from 1, got " + step);
        if (!(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1)) throw new IllegalArgumentException("adamW: betas must be in [0, 1), got " + beta1 + ", " + beta2);
        if (!(eps > 0)) throw new IllegalArgumentException("adamW: eps must be > 0, got " + eps);
        if (!(lr >= 0) || !Float.isFinite(lr)) throw new IllegalArgumentException("adamW: lr must be >= 0, got " + lr);
        if (!(weightDecay >= 0) || !Float.isFinite(weightDecay)) throw new IllegalArgumentException("adamW: weight_decay must be >= 0, got " + weightDecay);
        if (!(gradScale >= 0) || !Float.isFinite(gradScale)) throw new IllegalArgumentException("adamW: grad_scale must be finite and >= 0, got " + gradScale);
    }

    /** A step that leaves the gradients unscaled. */
    public AdamWStep(float lr, float beta1, float beta2, float eps, float weightDecay, int step) {
        this(lr, beta1, beta2, eps, weightDecay, step, 1f);
    }
}
