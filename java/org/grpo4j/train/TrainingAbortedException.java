package org.grpo4j.train;

/**
 * Training stopped because it could not go on (non-finite losses or gradients in a row): the message starts with
 * "training aborted at step N: ". The checkpoints written before are intact; none is written for the failed steps.
 *
 * <p><b>Thread safety:</b> immutable.
 */
public final class TrainingAbortedException extends IllegalStateException {
    private static final long serialVersionUID = 1L;

    /** The failed step. */
    private final int step;

    /**
     * An abort.
     *
     * @param step the training step that failed
     * @param why  what went wrong and where the last checkpoint is
     */
    public TrainingAbortedException(int step, String why) {
        super("training aborted at step " + step + ": " + why);
        this.step = step;
    }

    /**
     * The training step that failed.
     *
     * @return the step
     */
    public int step() { return step; }
}
