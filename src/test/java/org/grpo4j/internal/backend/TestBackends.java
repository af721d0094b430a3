package org.grpo4j.internal.backend;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

/** Backends under test. CUDA tests call {@link #cuda()}, which skips (with the probe's reason) without a GPU. */
public final class TestBackends {
    private TestBackends() {}

    private static CpuBackend cpu;
    private static CudaBackend cuda;

    public static synchronized CpuBackend cpu() {
        if (cpu == null) cpu = new CpuBackend();
        return cpu;
    }

    public static synchronized CudaBackend cuda() {
        CudaRuntime.Availability a = CudaRuntime.probe();
        assumeTrue(a.available(), () -> "skipped: no CUDA device (" + a.reason() + ")");
        if (cuda == null) cuda = new CudaBackend(0);
        return cuda;
    }

    /** Skips when {@code be} does not implement {@code op} yet, naming the op. */
    public static void assumeOp(Backend be, String op) {
        assumeTrue(be.implementsOp(op), () -> "skipped: op " + op + " not implemented on " + be.name() + " yet");
    }
}
