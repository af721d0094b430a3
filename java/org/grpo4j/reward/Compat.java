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
     * @param s "fixed" (the name the CLI shows), "", "default", "none" or null for {@link #DEFAULT}; "open-instruct-3f37c29" (any case)
     * @return the semantics
     * @throws IllegalArgumentException for any other value
     */
    public static Compat parse(String s) { return parse(s, "verifier_compat"); }

    /**
     * {@link #parse(String)}, naming the setting {@code what} in its error (a command-line option, a config key).
     *
     * @param s the value
     * @param what the setting's name, for the error
     * @return the semantics
     * @throws IllegalArgumentException for a value {@link #parse(String)} refuses
     */
    public static Compat parse(String s, String what) {
        String t = s == null ? "" : s.trim();
        if (t.isEmpty() || t.equalsIgnoreCase("fixed") || t.equalsIgnoreCase("default") || t.equalsIgnoreCase("none")) return DEFAULT;
        if (t.equalsIgnoreCase("open-instruct-3f37c29")) return OPEN_INSTRUCT_3F37C29;
        throw new IllegalArgumentException(what + " must be \"fixed\" (the default: the known bugs fixed; also empty) or \"open-instruct-3f37c29\""
                + " (the reference's exact behaviour), got \"" + s + "\"");
    }
}
