package org.grpo4j.internal.backend;

/**
 * KL(pi || pi_ref) estimators of the reference trainer, with d = clamp(logp - logp_ref, -40, 40):
 * kl1 = d, kl2 = d^2/2, kl3 = expm1(-d) + d, kl4 = ratio * d (ratio = exp(logp - logp_old)).
 */
public enum KlEstimator {
    KL1, KL2, KL3, KL4;

    /** Parses "kl1".."kl4" (the reference's flag values) or 0..3 (its later numeric form). */
    public static KlEstimator parse(String s) {
        String t = s.trim().toLowerCase(java.util.Locale.ROOT);
        return switch (t) {
            case "kl1", "0" -> KL1;
            case "kl2", "1" -> KL2;
            case "kl3", "2" -> KL3;
            case "kl4", "3" -> KL4;
            default -> throw new IllegalArgumentException("kl_estimator must be kl1, kl2, kl3 or kl4, got \"" + s + "\"");
        };
    }

    /** The bound of d = logp - logp_ref, as the reference clamps it. */
    public static final double CLAMP = 40;

    /** d clamped to [-CLAMP, CLAMP]. */
    public static double clamp(double d) { return Math.max(-CLAMP, Math.min(CLAMP, d)); }

    /** Whether d lies outside the clamp (where the KL term's gradient is 0). */
    public static boolean clamped(double d) { return d < -CLAMP || d > CLAMP; }

    /** The estimator's value for d (already clamped) and ratio. */
    public double value(double d, double ratio) {
        return switch (this) {
            case KL1 -> d;
            case KL2 -> d * d / 2;
            case KL3 -> Math.expm1(-d) + d;
            case KL4 -> ratio * d;
        };
    }

    /** d(value)/d(logp), where d = clamp(logp - ref) (its derivative is 0 outside the clamp) and d ratio/d logp = ratio. */
    public double grad(double d, boolean clampActive, double ratio) {
        double dd = clampActive ? 0 : 1;
        return switch (this) {
            case KL1 -> dd;
            case KL2 -> d * dd;
            case KL3 -> (1 - Math.exp(-d)) * dd;
            case KL4 -> ratio * d + ratio * dd;
        };
    }

    public String label() { return name().toLowerCase(java.util.Locale.ROOT); }
}
