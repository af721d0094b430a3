package org.grpo4j.internal.backend;

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
    public static Choice choose(String spec) { return choose(spec, java.util.Set.of()); }

    /**
     * Like {@link #choose(String)}, for work that needs {@code requiredOps}: "auto" takes CUDA only when it implements
     * all of them (else the CPU, with the missing ops in the reason); an explicit "cuda" that lacks some is an error
     * naming them, before any work starts.
     */
    public static Choice choose(String spec, java.util.Collection<String> requiredOps) { return choose(spec, requiredOps, true); }

    /**
     * Like {@link #choose(String, java.util.Collection)}; {@code announce} false leaves the fallback's line to the
     * caller (the trainer writes it to its own log: the CLI printed it twice).
     */
    public static Choice choose(String spec, java.util.Collection<String> requiredOps, boolean announce) {
        Choice c = chooseAny(spec, announce);
        java.util.List<String> missing = new java.util.ArrayList<>();
        for (String op : requiredOps) if (!c.backend().implementsOp(op)) missing.add(op);
        if (missing.isEmpty()) return c;
        String name = c.backend().name();
        c.backend().close();
        String s = spec == null ? "auto" : spec.trim().toLowerCase(Locale.ROOT);
        if (!s.equals("auto"))
            throw new IllegalStateException(name + " does not implement " + missing + " yet; use --backend cpu (or backend \"auto\")");
        String reason = name + " does not implement " + missing.size() + " of the needed ops yet (" + String.join(", ", missing.subList(0, Math.min(4, missing.size())))
                + (missing.size() > 4 ? ", ..." : "") + "); using cpu";
        if (announce) LOG.log(System.Logger.Level.INFO, reason);
        return new Choice(new CpuBackend(), reason);
    }

    /** Checks the syntax of a backend name without opening anything (config validation, dry runs). */
    public static void checkSpec(String spec) {
        String s = spec == null ? "auto" : spec.trim().toLowerCase(Locale.ROOT);
        if (s.equals("cpu") || s.equals("auto") || s.equals("cuda")) return;
        if (s.startsWith("cuda:")) {
            try {
                if (Integer.parseInt(s.substring(5)) >= 0) return;
            } catch (NumberFormatException e) {
                // below
            }
            throw new IllegalArgumentException("backend \"" + spec + "\": expected cuda:N with N a device index");
        }
        throw new IllegalArgumentException("unknown backend \"" + spec + "\" (expected auto, cpu, cuda or cuda:N)");
    }

    private static Choice chooseAny(String spec, boolean announce) {
        checkSpec(spec);
        String s = spec == null ? "auto" : spec.trim().toLowerCase(Locale.ROOT);
        if (s.equals("cpu")) return new Choice(new CpuBackend(), null);
        if (s.equals("auto")) {
            CudaRuntime.Availability a = CudaRuntime.probe();
            String why = a.reason();
            if (a.available()) {
                try {
                    return new Choice(new CudaBackend(0), null);
                } catch (CudaException | IllegalStateException e) { // a device that is present but refuses a context (busy, exclusive)
                    why = "cuda:0 could not be opened (" + e.getMessage() + ")";
                }
            }
            String reason = "cuda unavailable: " + why + "; using cpu";
            if (announce) LOG.log(System.Logger.Level.INFO, reason);
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
