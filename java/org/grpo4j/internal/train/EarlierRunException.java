package org.grpo4j.internal.train;

/**
 * A new run's output directory holds an earlier run. Its message says how to go on in the Java API
 * (GrpoTrainer.resume, Builder.overwrite(true)); {@link #cliMessage()} says it in the command line's words (--resume,
 * --overwrite), which the CLI shows instead.
 */
public final class EarlierRunException extends IllegalArgumentException {
    private final String cli;

    EarlierRunException(String api, String cli) {
        super(api);
        this.cli = cli;
    }

    /** The message in the command line's words. */
    public String cliMessage() { return cli; }
}
