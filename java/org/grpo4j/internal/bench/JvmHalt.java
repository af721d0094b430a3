package org.grpo4j.internal.bench;

import java.io.IOException;

/**
 * The end of a benchmark JVM whose device may still run a kernel that never finishes (a row past its timeout, or a
 * lost CUDA context): {@link Runtime#halt} with the given status, and a SIGKILL 20 s later in case the exit blocks in
 * the CUDA runtime's teardown (its atexit handlers wait for the device).
 */
public final class JvmHalt {
    private JvmHalt() {}

    /** Flushes stdout and stderr and halts the JVM with {@code status}; {@code who} prefixes the one line on failure. */
    public static void halt(int status, String who) {
        System.err.flush();
        System.out.flush();
        try {
            long pid = ProcessHandle.current().pid();  // (killed only if it is still this JVM: no pid reused by another)
            new ProcessBuilder("sh", "-c", "sleep 20; [ -d /proc/" + pid + " ] && [ \"$(cat /proc/" + pid + "/comm)\" = java ] && kill -9 "
                    + pid).start();
        } catch (IOException | RuntimeException e) {
            System.err.println(who + ": (no fallback kill: " + e.getMessage() + ")");
        }
        Runtime.getRuntime().halt(status);
    }
}
