package org.grpo4j.reward;

/**
 * Scores one response. Registered by dataset name in {@link Rewards}; lambdas welcome:
 * <pre>{@code rewards.register("mytask", (response, truth, row) -> Score.of(response.contains(truth) ? 1 : 0));}</pre>
 *
 * <p>An implementation may throw: the exception is caught, its message recorded, and the row scores 0; so does a
 * null score or a NaN or infinite reward. It runs under a time limit (5 s by default, at most a day): a call that
 * returns past it scores 0, and one still running a second after it is interrupted and scored 0 (a call that ignores
 * the interrupt keeps its worker thread, which the registry replaces, up to 64 such threads, so the rows behind it
 * still run).
 *
 * <p><b>Thread safety:</b> {@link Rewards} calls a function from several worker threads at once, so
 * implementations must be thread-safe (a pure function of its arguments is).
 */
@FunctionalInterface
public interface RewardFunction {
    /**
     * Scores a response.
     *
     * @param response    the response text (special tokens skipped)
     * @param groundTruth the row's ground truth, never null (rows without one score 0 without a call)
     * @param row         the whole row (its prompt messages, dataset, IFEval constraint, source), or null when the
     *                    caller of {@link Rewards#score} gave none
     * @return the reward
     * @throws Exception anything: the row then scores 0 and the error is counted
     */
    Score score(String response, String groundTruth, RlvrRow row) throws Exception;

    /**
     * A reward and an optional human-readable detail (which extraction matched, why it failed, ...).
     *
     * @param reward the reward; must be finite
     * @param detail a note for the samples and the {@code reward} command's output, or null
     */
    record Score(double reward, String detail) {
        /**
         * A reward without detail.
         *
         * @param reward the reward
         * @return the score
         */
        public static Score of(double reward) { return new Score(reward, null); }
    }

    /** A pass/fail check. */
    @FunctionalInterface
    interface Verifier {
        /**
         * Checks a response.
         *
         * @param response    the response text
         * @param groundTruth the expected answer
         * @return whether the response is correct
         * @throws Exception anything: the row then scores 0
         */
        boolean verify(String response, String groundTruth) throws Exception;
    }

    /**
     * Adapts a pass/fail verifier.
     *
     * @param verifier the check
     * @param reward   the reward when it passes (the reference's verification_reward is 10); 0 when it fails
     * @return the reward function
     * @throws NullPointerException if {@code verifier} is null
     */
    static RewardFunction fromVerifier(Verifier verifier, double reward) {
        java.util.Objects.requireNonNull(verifier, "verifier");
        return (response, truth, row) -> verifier.verify(response, truth) ? Score.of(reward) : Score.of(0);
    }
}
