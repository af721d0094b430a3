package org.grpo4j.train;

/**
 * HF get_scheduler semantics, stepped once per optimizer step: linear warm-up from 0 over {@code warmup} steps, then
 * constant, or linear decay to 0 at {@code total} steps. The horizon counts every optimizer step (the reference's
 * 3f37c29 horizon bug, fixed in d746b67, is not reproduced).
 */
public record LrSchedule(String type, double base, int warmup, long total) {

    /** Learning rate for optimizer step {@code step} (0-based: the first update uses step 0). */
    public double at(long step) {
        if (warmup > 0 && step < warmup) return base * (double) step / warmup;
        if (type.equals("constant")) return base;
        double rem = (double) (total - step) / Math.max(1, total - warmup);
        return base * Math.max(0, rem);
    }
}
