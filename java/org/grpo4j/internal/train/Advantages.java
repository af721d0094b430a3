package org.grpo4j.internal.train;

/**
 * GRPO group advantages (grpo-reference.md section 3): rewards come in contiguous groups of {@code groupSize}
 * (one prompt's samples); A = (R - mean_g) / (std_g + 1e-8) with the unbiased (n - 1) standard deviation
 * ({@code advantage_normalization: standard}, the reference's), or A = R - mean_g ({@code centered}: Dr. GRPO's
 * advantage, open-instruct's later {@code advantage_normalization_type centered}).
 */
public final class Advantages {
    private Advantages() {}

    /** Standard (reference) advantages. */
    public static double[] compute(double[] rewards, int groupSize) {
        return compute(rewards, groupSize, "standard");
    }

    /**
     * @param normalization "standard" (divide by the group's unbiased std + 1e-8) or "centered" (subtract the mean only)
     */
    public static double[] compute(double[] rewards, int groupSize, String normalization) {
        boolean standard = isStandard(normalization);
        if (groupSize < 2) throw new IllegalArgumentException("group size must be >= 2, got " + groupSize);
        if (rewards.length % groupSize != 0)
            throw new IllegalArgumentException(rewards.length + " rewards do not split into groups of " + groupSize);
        double[] a = new double[rewards.length];
        for (int g = 0; g < rewards.length; g += groupSize) {
            double mean = groupMean(rewards, g, groupSize), div = standard ? groupStd(rewards, g, groupSize) + 1e-8 : 1;
            for (int i = g; i < g + groupSize; i++) a[i] = (rewards[i] - mean) / div;
        }
        return a;
    }

    /**
     * Whether {@code normalization} divides by the group's std.
     *
     * @throws IllegalArgumentException naming advantage_normalization when it is neither standard nor centered
     */
    public static boolean isStandard(String normalization) {
        return switch (String.valueOf(normalization)) {
            case "standard" -> true;
            case "centered" -> false;
            default -> throw new IllegalArgumentException("advantage_normalization must be standard or centered, got \"" + normalization + "\"");
        };
    }

    static double groupMean(double[] r, int from, int n) {
        double s = 0;
        for (int i = from; i < from + n; i++) s += r[i];
        return s / n;
    }

    /** Unbiased standard deviation (torch.std default). */
    static double groupStd(double[] r, int from, int n) {
        double m = groupMean(r, from, n), s = 0;
        for (int i = from; i < from + n; i++) s += (r[i] - m) * (r[i] - m);
        return Math.sqrt(s / (n - 1));
    }

    /** Mean over groups of the group standard deviation (objective/reward_std). */
    public static double meanGroupStd(double[] rewards, int groupSize) {
        double s = 0;
        int groups = rewards.length / groupSize;
        for (int g = 0; g < groups; g++) s += groupStd(rewards, g * groupSize, groupSize);
        return s / groups;
    }
}
