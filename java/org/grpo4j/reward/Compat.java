package org.grpo4j.reward;

/**
 * The built-in verifiers' semantics: the reference's intended behaviour (default), or its exact behaviour at a
 * commit (docs/verifiers.md lists the differences).
 *
 * <p><b>Thread safety:</b> an enum, immutable.
 */
public enum Compat {
    /** Intended behaviour with the known bugs fixed (see docs/verifiers.md). */
    DEFAULT,
    /** open-instruct at 3f37c29 exactly, bugs included, for reward parity with the Tulu 3.1 run. */
    OPEN_INSTRUCT_3F37C29;

    /**
     * Parses the {@code verifier_compat} config value.
     *
     * @param s "", "default", "none" or null for {@link #DEFAULT}; "open-instruct-3f37c29" (any case)
     * @return the semantics
     * @throws IllegalArgumentException for any other value
     */
    public static Compat parse(String s) {
        if (s == null || s.isBlank() || s.equalsIgnoreCase("default") || s.equalsIgnoreCase("none")) return DEFAULT;
        if (s.equalsIgnoreCase("open-instruct-3f37c29")) return OPEN_INSTRUCT_3F37C29;
        throw new IllegalArgumentException("verifier_compat must be \"open-instruct-3f37c29\" or empty, got \"" + s + "\"");
    }
}
