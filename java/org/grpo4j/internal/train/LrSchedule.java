package org.grpo4j.internal.train;

import org.grpo4j.train.GrpoConfig;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * Learning-rate schedules with the semantics of transformers' {@code get_scheduler(type, optimizer,
 * num_warmup_steps=warmup, num_training_steps=total)} (optimization.py), stepped once per optimizer step: the rate of
 * 0-based optimizer step s is {@code base * lambda(s)} with, for w = warmup, T = total,
 * <pre>
 *   warm-up (every type but constant), s &lt; w:  s / max(1, w)
 *   constant:                 1                              (num_warmup_steps is not used)
 *   constant_with_warmup:     1
 *   linear:                   max(0, (T - s) / max(1, T - w))
 *   cosine:                   max(0, (1 + cos(pi * p)) / 2),              p = (s - w) / max(1, T - w)
 *   cosine_with_restarts:     p &gt;= 1 ? 0 : max(0, (1 + cos(pi * (p mod 1))) / 2)   (num_cycles = 1)
 *   polynomial:               s &gt; T ? e / base : ((base - e) * (1 - (s - w) / (T - w))^1 + e) / base   (lr_end e = 1e-7, power 1)
 * </pre>
 * Which warm-up and horizon a config gets is decided by {@link #of(GrpoConfig)}.
 */
public record LrSchedule(String type, double base, int warmup, long total) {

    /** The scheduler types the reference accepts (grpo_vllm_thread_ray_gtrl.py Args.lr_scheduler_type). */
    public static final List<String> TYPES = List.of("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup");
    /** transformers' defaults for the polynomial schedule. */
    public static final double POLYNOMIAL_LR_END = 1e-7, POLYNOMIAL_POWER = 1.0;

    public LrSchedule {
        if (!TYPES.contains(type)) throw new IllegalArgumentException("lr_scheduler_type must be one of " + TYPES + ", got \"" + type + "\"");
        if (warmup < 0 || total < 0) throw new IllegalArgumentException("warm-up and horizon must be >= 0");
        if (type.equals("polynomial") && !(base > POLYNOMIAL_LR_END))
            throw new IllegalArgumentException("lr_scheduler_type polynomial decays to lr_end " + POLYNOMIAL_LR_END + " and needs learning_rate > it, got " + base);
        if (type.equals("polynomial") && total <= warmup)
            throw new IllegalArgumentException("lr_scheduler_type polynomial needs more optimizer steps (" + total + ") than warm-up steps (" + warmup + ")");
    }

    /** Learning rate for optimizer step {@code step} (0-based: the first update uses step 0). */
    public double at(long step) { return base * lambda(step); }

    /** The multiplier of the base rate (transformers' lr_lambda). */
    public double lambda(long step) {
        if (type.equals("constant")) return 1.0;
        if (step < warmup) return (double) step / Math.max(1, warmup);
        double progress = (double) (step - warmup) / Math.max(1, total - warmup);
        return switch (type) {
            case "constant_with_warmup" -> 1.0;
            case "linear" -> Math.max(0.0, (double) (total - step) / Math.max(1, total - warmup));
            case "cosine" -> Math.max(0.0, 0.5 * (1.0 + Math.cos(Math.PI * 0.5 * 2.0 * progress)));
            case "cosine_with_restarts" -> progress >= 1.0 ? 0.0 : Math.max(0.0, 0.5 * (1.0 + Math.cos(Math.PI * ((1.0 * progress) % 1.0))));
            case "polynomial" -> {
                if (step > total) yield POLYNOMIAL_LR_END / base;
                double remaining = 1 - (double) (step - warmup) / (total - warmup);
                yield ((base - POLYNOMIAL_LR_END) * Math.pow(remaining, POLYNOMIAL_POWER) + POLYNOMIAL_LR_END) / base;
            }
            default -> throw new IllegalStateException(type);
        };
    }

    private static boolean compat(GrpoConfig c) { return ReferenceOptions.lrCompat(c); }

    /**
     * The schedule a config trains with.
     * <ul>
     *   <li>{@code lr_scheduler_compat: "open-instruct-3f37c29"}: exactly the reference (G:645-654). Horizon =
     *       num_training_steps x num_epochs (it leaves out the mini-batches: the 3f37c29 bug fixed in d746b67);
     *       warm-up = int(horizon x warmup_ratio), warm_up_steps ignored (`if args.warmup_ratio >= 0.0` always holds);
     *       the HF type as given, so "constant" never warms up.</li>
     *   <li>Otherwise (grpo4j): horizon = every optimizer step of the run; warm-up = int(horizon x warmup_ratio)
     *       when warmup_ratio &gt; 0 (it takes precedence, as the reference's Args document), else warm_up_steps;
     *       "constant" with a warm-up warms up (as constant_with_warmup).</li>
     * </ul>
     */
    public static LrSchedule of(GrpoConfig c) {
        String type = c.lrSchedulerType;
        if (compat(c)) {
            long horizon = (long) c.trainingSteps() * c.numEpochs;
            return new LrSchedule(type, c.learningRate, (int) (horizon * c.warmupRatio), horizon);
        }
        long horizon = (long) c.trainingSteps() * c.optimizerStepsPerTrainingStep();
        int warm = c.warmupRatio > 0 ? (int) (horizon * c.warmupRatio) : c.warmUpSteps;
        if (type.equals("constant") && warm > 0) type = "constant_with_warmup";
        return new LrSchedule(type, c.learningRate, warm, horizon);
    }

    /**
     * Lines worth logging at start-up (empty when there is nothing to say). Without compat: each warm-up that
     * open-instruct 3f37c29 would have ignored and grpo4j honours, so that a ported command's schedule never changes
     * silently. With compat: each schedule setting that the reference (and so this run) ignores.
     */
    public static List<String> notes(GrpoConfig c) {
        List<String> out = new ArrayList<>();
        LrSchedule s = of(c);
        if (compat(c)) {
            if (c.warmUpSteps > 0)
                out.add("warm_up_steps " + c.warmUpSteps + " is ignored, as open-instruct 3f37c29 ignores it (lr_scheduler_compat; warm-up = int(horizon x warmup_ratio) = " + s.warmup + ")");
            if (c.lrSchedulerType.equals("constant") && c.warmupRatio > 0)
                out.add("lr_scheduler_type constant: warmup_ratio " + c.warmupRatio + " has no effect (HF's constant schedule has no warm-up; lr_scheduler_compat)");
            if (!c.lrSchedulerType.startsWith("constant") && c.optimizerStepsPerTrainingStep() != c.numEpochs)
                out.add(String.format(Locale.ROOT, "the %s schedule runs over the reference's horizon of %d optimizer steps, not the run's %d (the 3f37c29 horizon bug; lr_scheduler_compat)",
                        c.lrSchedulerType, s.total, (long) c.trainingSteps() * c.optimizerStepsPerTrainingStep()));
            return out;
        }
        if (c.warmupRatio <= 0 && c.warmUpSteps > 0)
            out.add("warm_up_steps " + c.warmUpSteps + " is honoured; open-instruct 3f37c29 ignores it (it always uses int(steps x warmup_ratio), G:646-648)."
                    + " Set lr_scheduler_compat to \"open-instruct-3f37c29\" to reproduce that");
        if (c.warmupRatio > 0 && c.warmUpSteps > 0)
            out.add("warm_up_steps " + c.warmUpSteps + " is ignored: warmup_ratio " + c.warmupRatio + " takes precedence");
        if (c.lrSchedulerType.equals("constant") && s.warmup > 0)
            out.add("lr_scheduler_type constant warms up over " + s.warmup + " optimizer steps; HF's constant schedule (the reference's) ignores warm-up."
                    + " Use constant_with_warmup to say so, or lr_scheduler_compat \"open-instruct-3f37c29\" to reproduce the reference");
        if (s.warmup >= s.total && s.total > 0)
            out.add("the warm-up (" + s.warmup + " optimizer steps) covers the whole run (" + s.total + " optimizer steps): the learning rate never"
                    + " reaches learning_rate " + c.learningRate + " (at most " + String.format(Locale.ROOT, "%.3g", s.at(s.total - 1))
                    + "); lower warm_up_steps or warmup_ratio, or train longer");
        return out;
    }
}
