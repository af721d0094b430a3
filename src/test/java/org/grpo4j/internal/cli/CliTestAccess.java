package org.grpo4j.internal.cli;

/** The CLI in-process ({@link CliTest#run}) for tests in other packages. */
public final class CliTestAccess {
    private CliTestAccess() {}

    /** Exit code, stdout and stderr of one command. */
    public record Run(int code, String out, String err) {}

    public static Run run(String... args) {
        CliTest.Run r = CliTest.run(args);
        return new Run(r.code(), r.out(), r.err());
    }
}
