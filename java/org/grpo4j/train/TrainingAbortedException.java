package org.grpo4j.train;

/**
 * Training stopped because it could not go on (non-finite losses or gradients in a row): the message starts with
 * "training aborted at step N: ". The checkpoints written before are intact; none is written for the failed steps.
 */
public final class TrainingAbortedException extends IllegalStateException {
    private final int step;

    public TrainingAbortedException(int step, String why) {
        super("training aborted at step " + step + ": " + why);
        this.step = step;
    }

    /** The training step that failed. */
    public int step() { return step; }
}
