package org.grpo4j;

import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Objects;
import java.util.Optional;
import java.util.Set;
import org.grpo4j.internal.ApiAccess;
import org.grpo4j.internal.backend.Backends;
import org.grpo4j.internal.backend.Ops;

/**
 * Where the work runs: the CPU (pure Java, every op, any machine) or one CUDA device (grpo4j's kernels; needs the
 * NVIDIA driver and the CUDA libraries at run time, docs in the README).
 *
 * <pre>{@code
 * try (Backend backend = Backend.open("auto");                 // CUDA device 0 when usable, else the CPU
 *      Model model = Model.load(Path.of("my-model"), backend)) {
 *     ...
 * }
 * }</pre>
 *
 * <p>A backend owns device memory: the {@link Model}s loaded on it live until they or the backend are closed, and
 * closing the backend closes them. A {@link org.grpo4j.train.GrpoTrainer} given a backend uses it but does not close
 * it.
 *
 * <p><b>Thread safety:</b> thread-safe. Work on one backend is serialized: each call of a {@link Model} and each
 * {@link org.grpo4j.train.GrpoTrainer#run run} of a trainer built on it hold the backend's lock, so models and a
 * trainer may share a backend across threads and take turns. {@link #close()} waits for the work in progress.
 */
public final class Backend implements AutoCloseable {
    static {
        ApiAccess.register(b -> {
            synchronized (b) {
                b.requireOpen();
                return b.impl;
            }
        });
    }

    private final org.grpo4j.internal.backend.Backend impl;
    private final String fallbackReason;
    private final Set<Model> models = new LinkedHashSet<>(); // guarded by this
    private volatile boolean closed; // written under this; read without the lock (isClosed while a run holds it)

    private Backend(org.grpo4j.internal.backend.Backend impl, String fallbackReason) {
        this.impl = impl;
        this.fallbackReason = fallbackReason;
    }

    /**
     * Opens a backend.
     *
     * @param spec {@code "auto"} (CUDA device 0 when the CUDA backend loads, a device is visible and it implements
     *             every op; otherwise the CPU, with the reason in {@link #fallbackReason()}), {@code "cpu"},
     *             {@code "cuda"} (device 0) or {@code "cuda:N"}
     * @return the open backend; close it when done
     * @throws NullPointerException     if {@code spec} is null
     * @throws IllegalArgumentException if {@code spec} is not one of the forms above
     * @throws IllegalStateException    if an explicitly requested CUDA device cannot be used (the message says why)
     */
    public static Backend open(String spec) {
        Objects.requireNonNull(spec, "spec");
        Backends.Choice c = Backends.choose(spec, Ops.ALL);
        return new Backend(c.backend(), c.reason());
    }

    /**
     * The backend's name.
     *
     * @return {@code "cpu"} or {@code "cuda:N"}
     */
    public String name() { return impl.name(); }

    /**
     * A one-line description of the device.
     *
     * @return the CPU threads, or the GPU's name and memory
     */
    public String description() { return impl.description(); }

    /**
     * Whether this is a CUDA device.
     *
     * @return true for {@code cuda:N}
     */
    public boolean isCuda() { return impl.name().startsWith("cuda"); }

    /**
     * Why {@code "auto"} did not pick CUDA.
     *
     * @return the reason (e.g. "cuda unavailable: no NVIDIA driver ...; using cpu"), or empty when CUDA was chosen or
     *         a backend was named explicitly
     */
    public Optional<String> fallbackReason() { return Optional.ofNullable(fallbackReason); }

    /**
     * Whether {@link #close()} has been called.
     *
     * @return true once closed
     */
    public boolean isClosed() { return closed; }

    /** Closes the models loaded on this backend, then frees the device. Idempotent. */
    @Override
    public void close() {
        List<Model> open;
        synchronized (this) {
            if (closed) return;
            closed = true;
            open = new ArrayList<>(models);
            models.clear();
        }
        // every model and then the device freed even when one fails (the first failure rethrown after)
        List<AutoCloseable> parts = new ArrayList<>(open);
        parts.add(() -> {
            synchronized (this) {
                impl.close();
            }
        });
        org.grpo4j.internal.util.Closing.closeAll("the backend", parts);
    }

    /** The backend's name. */
    @Override
    public String toString() { return impl.name(); }

    // ---- for Model (same package) -------------------------------------------------------------------------------

    /** The internal backend, for a model being loaded on it; registers the model so that {@link #close()} closes it. */
    synchronized org.grpo4j.internal.backend.Backend attach(Model m) {
        requireOpen();
        models.add(m);
        return impl;
    }

    synchronized void detach(Model m) { models.remove(m); }

    /** Fails with "backend NAME is closed" once closed. Callers hold the lock. */
    void requireOpen() {
        if (closed) throw new IllegalStateException("backend " + impl.name() + " is closed");
    }
}
