package org.grpo4j.cli;

import picocli.CommandLine;
import picocli.CommandLine.Command;

/** {@code tools/grpo4j}: the command-line entry point. Each subcommand is a thin layer over the Java API. */
@Command(name = "grpo4j", mixinStandardHelpOptions = true, version = "grpo4j 0.1.0",
        description = "GRPO post-training of Llama-family models on verifiable rewards.",
        subcommands = {InfoCommand.class, TokenizeCommand.class, InitModelCommand.class, GenerateCommand.class, TrainCommand.class, RewardCommand.class, BenchCommand.class})
public final class Main implements Runnable {

    public static void main(String[] args) {
        configureLogging();
        int code = newCommandLine().execute(args);
        System.exit(code);
    }

    /** One line per log record: "grpo4j: message". */
    public static void configureLogging() {
        if (System.getProperty("java.util.logging.SimpleFormatter.format") == null)
            System.setProperty("java.util.logging.SimpleFormatter.format", "grpo4j: %5$s%6$s%n");
    }

    static CommandLine newCommandLine() {
        CommandLine cl = new CommandLine(new Main());
        cl.setExecutionExceptionHandler((ex, cmd, parsed) -> {
            // expected failures (bad input) get one line; anything else keeps its stack trace
            if (ex instanceof IllegalArgumentException || ex instanceof IllegalStateException
                    || ex instanceof java.io.IOException || ex instanceof java.io.UncheckedIOException) {
                String msg = ex.getMessage();
                if (ex instanceof java.nio.file.NoSuchFileException nf)
                    msg = nf.getFile() + ": not found" + (nf.getReason() == null ? "" : " (" + nf.getReason() + ")");
                else if (ex instanceof java.nio.file.AccessDeniedException ad) msg = ad.getFile() + ": permission denied";
                cmd.getErr().println("grpo4j " + cmd.getCommandName() + ": " + msg);
                return 2;
            }
            throw ex;
        });
        return cl;
    }

    @Override
    public void run() {
        CommandLine.usage(this, System.out);
    }
}
