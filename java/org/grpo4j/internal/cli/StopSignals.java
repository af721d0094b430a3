package org.grpo4j.internal.cli;

import java.io.PrintStream;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicInteger;
import sun.misc.Signal;
import sun.misc.SignalHandler;

/**
 * Ctrl-C (SIGINT) and SIGTERM while training: the first asks the trainer to stop at the next step boundary, which
 * writes a checkpoint, and the command then exits with 128 + the signal's number; a second one exits at once (the
 * checkpoints already written stay complete: they appear by rename).
 *
 * <p>Why sun.misc.Signal and not only a shutdown hook: while shutdown hooks run, the JVM ignores further SIGINT and
 * SIGTERM (the signal thread blocks in Runtime.exit), so a hook alone could never honour "a second signal exits at
 * once". sun.misc.Signal is in the jdk.unsupported module, which every JDK since 9 exports. A shutdown hook remains
 * for the other ways the JVM is asked to end (SIGHUP when the terminal closes, System.exit elsewhere): it cancels
 * and waits for the checkpoint. Where the handlers cannot be installed (java -Xrs), only the hook is used.
 */
final class StopSignals implements AutoCloseable {
    private final Runnable cancel;
    private final PrintStream log;
    private final AtomicInteger received = new AtomicInteger();
    private final CountDownLatch done = new CountDownLatch(1);
    private final Thread hook;
    private volatile String firstSignal;
    private volatile int firstNumber;
    private SignalHandler oldInt, oldTerm;

    private StopSignals(Runnable cancel, PrintStream log) {
        this.cancel = cancel;
        this.log = log;
        this.hook = new Thread(() -> {
            cancel.run();
            try {
                done.await();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }, "grpo4j-shutdown");
    }

    /** Installs the handlers; {@link #close} restores the previous ones. */
    static StopSignals install(Runnable cancel, PrintStream log) {
        StopSignals s = new StopSignals(cancel, log);
        s.oldInt = s.handle("INT");
        s.oldTerm = s.handle("TERM");
        Runtime.getRuntime().addShutdownHook(s.hook);
        return s;
    }

    private SignalHandler handle(String name) {
        try {
            return Signal.handle(new Signal(name), this::onSignal);
        } catch (IllegalArgumentException e) { // reserved by the VM (-Xrs) or the OS
            return null;
        }
    }

    private void onSignal(Signal sig) {
        if (received.incrementAndGet() == 1) {
            firstSignal = "SIG" + sig.getName();
            firstNumber = sig.getNumber();
            log.println("grpo4j: " + firstSignal + ": stopping at the end of this step with a checkpoint (send it again to exit at once)");
            log.flush();
            cancel.run();
        } else {
            log.println("grpo4j: second signal (SIG" + sig.getName() + "): exiting at once; the checkpoints written so far are complete");
            log.flush();
            Runtime.getRuntime().halt(128 + sig.getNumber());
        }
    }

    /** The exit code for a run stopped by a signal (128 + its number), or -1 when no signal came. */
    int exitCode() { return firstSignal == null ? -1 : 128 + firstNumber; }

    @Override
    public void close() {
        done.countDown();
        try {
            Runtime.getRuntime().removeShutdownHook(hook);
        } catch (IllegalStateException ignored) {
            // the JVM is already shutting down; the hook returns now that done is counted down
        }
        if (oldInt != null) Signal.handle(new Signal("INT"), oldInt);
        if (oldTerm != null) Signal.handle(new Signal("TERM"), oldTerm);
    }
}
