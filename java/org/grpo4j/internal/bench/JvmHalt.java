package org.grpo4j.internal.bench;

import java.io.IOException;

/**
 * The end of a benchmark JVM whose device may still run a kernel that never finishes (a row past its timeout, or a
 * lost CUDA context): {@code _exit} with the given status through the JNI library where it is loaded (no atexit
 * handlers: the CUDA runtime's teardown, which waits for the device, is skipped), else {@link Runtime#halt}, whose
 * exit runs them; and a SIGKILL 20 s later in case either blocks (then the status is 137, which tools/gpu-check and
 * tools/e2e-bench also resume from when the report is incomplete).
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
        try {
            org.grpo4j.internal.backend.CudaRuntime.exitNow(status);
        } catch (Throwable t) { // (an UnsatisfiedLinkError from a library built before g4_exit_now: the JVM's halt)
            System.err.println(who + ": (no immediate exit: " + t + ")");
        }
        Runtime.getRuntime().halt(status);
    }
}
