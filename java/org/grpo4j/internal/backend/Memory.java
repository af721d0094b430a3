package org.grpo4j.internal.backend;

import org.grpo4j.bindings.CudaNative;

/**
 * What can still be allocated on a backend, so that sizes a user asks for (KV cache, batches) are checked before
 * anything is allocated: free Java heap for the CPU backend (its tensors are heap arrays), free device memory for
 * CUDA (cudaMemGetInfo, plus the memory the stream-ordered pool holds idle for this backend). A request that does
 * not fit fails at once with a message saying what fits, instead of an OutOfMemoryError after minutes of garbage
 * collection.
 */
public final class Memory {
    private Memory() {}

    /** Bytes that can still be allocated for tensors of {@code be}, or -1 when unknown (no check is then made). */
    public static long available(Backend be) {
        if (be instanceof CpuBackend) return freeHeap();
        if (be instanceof CudaBackend cb) {
            // what the callers size (KV caches, batches) are this backend's own allocations, which the stream-ordered
            // pool's idle memory serves too; no trim here: this is asked at every generate call, and a trim would
            // make the next step's allocations map memory anew (the pool is trimmed after loading, at close, and
            // before retrying a failed allocation)
            long free = freeDevice(cb.device());
            return free < 0 || !cb.pooledAllocator() ? free : free + CudaBackend.poolIdleBytes(cb.device());
        }
        return -1;
    }

    /** Java heap that can still be allocated: the limit (-Xmx) minus what live and not yet collected objects use. */
    public static long freeHeap() {
        Runtime rt = Runtime.getRuntime();
        return rt.maxMemory() - (rt.totalMemory() - rt.freeMemory());
    }

    /**
     * The device-memory hook: free bytes on CUDA device {@code device} (cudaMemGetInfo through the JNI library), or
     * -1 when it cannot be asked.
     */
    static long freeDevice(int device) {
        try {
            if (CudaNative.g4_set_device(device) != 0) return -1;
            long[] free = new long[1], total = new long[1];
            return CudaNative.g4_mem_get_info(free, total) == 0 ? free[0] : -1;
        } catch (LinkageError e) {
            return -1;
        }
    }

    /**
     * Fails with {@code what + " needs X, but only Y ... are free" + hint} unless {@code bytes} fit on {@code be}.
     * On the CPU a full garbage collection runs before a refusal, so that uncollected garbage does not count as used.
     */
    public static void require(Backend be, long bytes, String what, String hint) { require(be, bytes, what, free -> hint); }

    /**
     * {@link #require(Backend, long, String, String)} with a hint written from the bytes found free (after the
     * garbage collection on the CPU), e.g. how much of the request would fit.
     */
    public static void require(Backend be, long bytes, String what, java.util.function.LongFunction<String> hint) {
        long free = available(be);
        if (free < 0 || bytes <= free) return;
        if (be instanceof CpuBackend) {
            System.gc();
            free = available(be);
            if (bytes <= free) return;
        }
        String h = hint.apply(Math.max(0, free));
        throw new Shortfall(what + " needs " + human(bytes) + ", but only " + human(Math.max(0, free)) + " " + describe(be)
                + (h == null || h.isEmpty() ? "" : "; " + h));
    }

    /**
     * {@link #require}'s refusal: a size that does not fit in what is free now (an IllegalArgumentException, so that
     * callers that refuse bad sizes need not tell the two apart; a caller that sized it from memory it measured earlier
     * can say so).
     */
    public static final class Shortfall extends IllegalArgumentException {
        public Shortfall(String message) { super(message); }

        public Shortfall(String message, Throwable cause) { super(message, cause); }
    }

    /** Like {@link #require} for host memory (Java heap) whatever the backend. */
    public static void requireHeap(long bytes, String what, String hint) {
        long free = freeHeap();
        if (bytes <= free) return;
        System.gc();
        free = freeHeap();
        if (bytes <= free) return;
        throw new IllegalArgumentException(what + " needs " + human(bytes) + ", but only " + human(Math.max(0, free)) + " of Java heap are free (limit "
                + human(Runtime.getRuntime().maxMemory()) + ", -Xmx)" + (hint == null || hint.isEmpty() ? "" : "; " + hint));
    }

    /** Where the free bytes are, for messages. */
    public static String describe(Backend be) {
        if (be instanceof CpuBackend) return "of Java heap are free (limit " + human(Runtime.getRuntime().maxMemory()) + ", -Xmx; GRPO4J_JAVA_OPTS for tools/grpo4j)";
        return "are free on " + be.name();
    }

    public static String human(double bytes) {
        String[] u = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
        int i = 0;
        while (bytes >= 1024 && i < u.length - 1) {
            bytes /= 1024;
            i++;
        }
        return String.format(java.util.Locale.ROOT, i == 0 ? "%.0f %s" : "%.1f %s", bytes, u[i]);
    }
}
