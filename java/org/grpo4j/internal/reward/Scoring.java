package org.grpo4j.internal.reward;

import java.util.function.Supplier;

/**
 * Whether the current thread is inside a reward function's call ({@link org.grpo4j.reward.Rewards} marks its workers'
 * calls), so that work which would wait for the caller of the scoring (a {@link org.grpo4j.Model} on the backend a
 * training run holds while it waits for its rewards) can fail at once instead of at the reward's time limit.
 */
public final class Scoring {
    private Scoring() {}

    private static final ThreadLocal<Boolean> IN_CALL = ThreadLocal.withInitial(() -> false);

    /** True inside a reward function's call on a verifier worker. */
    public static boolean inRewardCall() { return IN_CALL.get(); }

    /** Runs {@code body} marked as a reward function's call. */
    public static <T> T call(Supplier<T> body) {
        boolean outer = IN_CALL.get();
        IN_CALL.set(true);
        try {
            return body.get();
        } finally {
            IN_CALL.set(outer);
        }
    }
}
