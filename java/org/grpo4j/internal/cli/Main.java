package org.grpo4j.internal.cli;

import java.io.PrintWriter;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.ScopeType;

/**
 * {@code tools/grpo4j}: the command-line entry point. Each subcommand is a thin layer over the Java API.
 *
 * <p>Exit codes: 0 done; 1 the work failed (training aborted, out of memory, an internal error); 2 bad input (usage,
 * config, files); 128 + N stopped by signal N (130 Ctrl-C, 143 SIGTERM) after writing a checkpoint; train's 5, stopped
 * because another process of its run was; bench's 3 and 4, a hung row and a lost device (docs/cli.md). Every failure is
 * one line on stderr, "grpo4j COMMAND: what went wrong"; the stack trace only with {@code --debug} (or GRPO4J_DEBUG=1).
 */
@Command(name = "grpo4j", mixinStandardHelpOptions = true, version = "grpo4j 0.1.0",
        description = "GRPO post-training of Llama-family models on verifiable rewards.",
        subcommands = {InfoCommand.class, TokenizeCommand.class, InitModelCommand.class, GenerateCommand.class, TrainCommand.class, LaunchCommand.class,
                RewardCommand.class, BenchCommand.class, ExportCommand.class, EvalCommand.class})
public final class Main implements java.util.concurrent.Callable<Integer> {

    /** Exit code of a failure that is not the input's fault. */
    static final int FAILED = 1;
    /** Exit code of bad input. */
    static final int BAD_INPUT = 2;

    @Option(names = "--debug", scope = ScopeType.INHERIT, description = "Print the stack trace of a failure.")
    boolean debug;

    public static void main(String[] args) {
        // the command line draws its charts without a display (a library user's JVM keeps its own setting)
        if (System.getProperty("java.awt.headless") == null) System.setProperty("java.awt.headless", "true");
        configureLogging();
        utf8Console();
        System.exit(execute(args));
    }

    /**
     * Standard output and error in UTF-8 whatever the locale: the commands print JSON (UTF-8 by definition) and model
     * text, which a C/POSIX locale's ASCII would turn into '?' (batch jobs and containers often run with LANG=C).
     */
    static void utf8Console() {
        System.setOut(new java.io.PrintStream(new java.io.BufferedOutputStream(new java.io.FileOutputStream(java.io.FileDescriptor.out), 1 << 16), true,
                java.nio.charset.StandardCharsets.UTF_8));
        System.setErr(new java.io.PrintStream(new java.io.FileOutputStream(java.io.FileDescriptor.err), true, java.nio.charset.StandardCharsets.UTF_8));
    }

    /** Runs one command line in this JVM and returns its exit code; never throws. */
    public static int execute(String... args) {
        CommandLine cl = newCommandLine();
        try {
            return cl.execute(args);
        } catch (Throwable t) { // Errors (out of memory, stack overflow) pass through picocli's handler
            return report(t, cl.getErr(), "grpo4j", debugRequested(args));
        }
    }

    /** One line per log record: "grpo4j: message". */
    public static void configureLogging() {
        if (System.getProperty("java.util.logging.SimpleFormatter.format") == null)
            System.setProperty("java.util.logging.SimpleFormatter.format", "grpo4j: %5$s%6$s%n");
    }

    static CommandLine newCommandLine() { return newCommandLine(new Main()); }

    /** A command line for {@code command} (Main, or one subcommand's object) with grpo4j's error handling. */
    static CommandLine newCommandLine(Object command) {
        CommandLine cl = new CommandLine(command);
        cl.setExpandAtFiles(false); // "@file" values belong to the commands (tokenize --chat-json @chat.json)
        cl.setExecutionExceptionHandler((ex, cmd, parsed) -> report(ex, cmd.getErr(), "grpo4j " + cmd.getCommandName(), debugRequested(parsed)));
        cl.setParameterExceptionHandler((ex, args) -> {
            CommandLine cmd = ex.getCommandLine();
            String name = cmd.getCommandSpec().qualifiedName();
            PrintWriter err = cmd.getErr();
            // a misspelled required option ("export --to DIR") is first a missing one to picocli, which then never names
            // the word it did not know: that word, with picocli's suggestions, is the news
            if (ex instanceof CommandLine.MissingParameterException && !cmd.getUnmatchedArguments().isEmpty())
                ex = new CommandLine.UnmatchedArgumentException(cmd, cmd.getUnmatchedArguments());
            err.println(name + ": " + firstLine(ex.getMessage()).replaceFirst("^Error: ", ""));
            // (launch's train options without the "--" before "train" were unknown options of launch, and said only that)
            java.util.List<String> given = java.util.Arrays.asList(args);
            if (cmd.getCommand() instanceof LaunchCommand && given.contains("train") && !given.contains("--"))
                err.println("The train command and its options follow a \"--\": " + name + " [launch options] -- train --config F ...");
            else if (!CommandLine.UnmatchedArgumentException.printSuggestions(ex, err))
                err.println("Try '" + name + " --help' for the options.");
            return BAD_INPUT;
        });
        return cl;
    }

    /** Prints the one-line message of a failure (and its stack trace when asked) and returns its exit code. */
    static int report(Throwable t, PrintWriter err, String who, boolean debug) {
        err.println(who + ": " + Errors.describe(t)
                + (Errors.isInternal(t) && !debug ? " (a bug in grpo4j: rerun with --debug for the stack trace and report it)" : ""));
        if (debug) t.printStackTrace(err);
        err.flush();
        return Errors.isBadInput(t) ? BAD_INPUT : FAILED;
    }

    static boolean debugRequested(CommandLine.ParseResult pr) {
        for (CommandLine.ParseResult p = pr; p != null; p = p.subcommand())
            if (p.hasMatchedOption("--debug")) return true;
        return envDebug();
    }

    private static boolean debugRequested(String[] args) {
        for (String a : args) {
            if (a.equals("--")) break;
            if (a.equals("--debug")) return true;
        }
        return envDebug();
    }

    private static boolean envDebug() {
        String e = System.getenv("GRPO4J_DEBUG");
        return e != null && !e.isEmpty() && !e.equals("0");
    }

    static String firstLine(String s) {
        return s == null ? "" : s.lines().findFirst().orElse("").trim();
    }

    /** No command: the usage on stderr and exit status 2, as every usage error (docs/cli.md). */
    @Override
    public Integer call() {
        CommandLine.usage(this, System.err);
        System.err.println("grpo4j: no command given (one of the commands above; grpo4j --help shows this list)");
        return BAD_INPUT;
    }
}
