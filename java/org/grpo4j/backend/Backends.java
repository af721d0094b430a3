package org.grpo4j.backend;

import java.util.Locale;

/** Opens a backend by name: "auto", "cpu", "cuda" (= "cuda:0") or "cuda:N". */
public final class Backends {
    private Backends() {}

    private static final System.Logger LOG = System.getLogger("org.grpo4j");

    /** The reason "auto" did not pick CUDA, or null when it did (or was not asked). */
    public record Choice(Backend backend, String reason) {}

    public static Backend open(String spec) { return choose(spec).backend(); }

    /**
     * Like {@link #open} but also returns why CUDA was not chosen. "auto" picks CUDA device 0 when the JNI library
     * loads and a device exists, else the CPU, logging one line with the reason (never a stack trace).
     */
    public static Choice choose(String spec) {
        String s = spec == null ? "auto" : spec.trim().toLowerCase(Locale.ROOT);
        if (s.equals("cpu")) return new Choice(new CpuBackend(), null);
        if (s.equals("auto")) {
            CudaRuntime.Availability a = CudaRuntime.probe();
            if (a.available()) return new Choice(new CudaBackend(0), null);
            String reason = "cuda unavailable: " + a.reason() + "; using cpu";
            LOG.log(System.Logger.Level.INFO, reason);
            return new Choice(new CpuBackend(), reason);
        }
        if (s.equals("cuda") || s.startsWith("cuda:")) {
            int dev = 0;
            if (s.startsWith("cuda:")) {
                try {
                    dev = Integer.parseInt(s.substring(5));
                } catch (NumberFormatException e) {
                    throw new IllegalArgumentException("backend \"" + spec + "\": expected cuda:N with N a device index");
                }
            }
            return new Choice(new CudaBackend(dev), null);
        }
        throw new IllegalArgumentException("unknown backend \"" + spec + "\" (expected auto, cpu, cuda or cuda:N)");
    }
}
