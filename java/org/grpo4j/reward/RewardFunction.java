package org.grpo4j.reward;


/**
 * Scores one response. Registered by dataset name in {@link Rewards}; lambdas welcome:
 * <pre>{@code rewards.register("mytask", (response, truth, row) -> Score.of(response.contains(truth) ? 1 : 0));}</pre>
 * Implementations may throw: the exception is caught, counted and scored 0; they run under a time limit.
 */
@FunctionalInterface
public interface RewardFunction {
    Score score(String response, String groundTruth, RlvrRow row) throws Exception;

    /** A reward and an optional human-readable detail (which extraction matched, why it failed, ...). */
    record Score(double reward, String detail) {
        public static Score of(double reward) { return new Score(reward, null); }
    }

    /** A pass/fail check. */
    @FunctionalInterface
    interface Verifier {
        boolean verify(String response, String groundTruth) throws Exception;
    }

    /** Adapts a pass/fail verifier: {@code reward} when it passes, else 0 (the reference's verification_reward = 10). */
    static RewardFunction fromVerifier(Verifier v, double reward) {
        return (response, truth, row) -> v.verify(response, truth) ? Score.of(reward) : Score.of(0);
    }
}
