package org.grpo4j.internal;

import java.util.Objects;

/**
 * The API classes' door into their implementation across packages (the JDK's SharedSecrets pattern): the public
 * {@link org.grpo4j.Backend} registers how to reach its internal backend here, so that
 * {@link org.grpo4j.train.GrpoTrainer} can hand it to the trainer without a public method on the API type.
 */
public final class ApiAccess {
    private ApiAccess() {}

    /** What {@link org.grpo4j.Backend} exposes to the implementation. */
    public interface BackendAccess {
        /** The internal backend; {@link IllegalStateException} when the API backend is closed. */
        org.grpo4j.internal.backend.Backend impl(org.grpo4j.Backend b);
    }

    private static volatile BackendAccess backends;

    /** Called once by {@link org.grpo4j.Backend}'s static initializer. */
    public static void register(BackendAccess a) { backends = Objects.requireNonNull(a); }

    /** API backends a {@link org.grpo4j.train.GrpoTrainer} run holds now, with how many runs (nested from a listener). */
    private static final java.util.Map<org.grpo4j.Backend, Integer> RUNNING = new java.util.concurrent.ConcurrentHashMap<>();

    /** A trainer's run took {@code b} (it holds b's lock until {@link #runEnded}). */
    public static void runStarted(org.grpo4j.Backend b) { RUNNING.merge(b, 1, Integer::sum); }

    /** The run that took {@code b} returned. */
    public static void runEnded(org.grpo4j.Backend b) { RUNNING.computeIfPresent(b, (k, n) -> n == 1 ? null : n - 1); }

    /** Whether a trainer's run holds {@code b} now. */
    public static boolean running(org.grpo4j.Backend b) { return RUNNING.containsKey(b); }

    /** The internal backend behind {@code b}. */
    public static org.grpo4j.internal.backend.Backend backend(org.grpo4j.Backend b) {
        Objects.requireNonNull(b, "backend");
        return backends.impl(b); // an instance exists, so its class has been initialized and has registered
    }
}
