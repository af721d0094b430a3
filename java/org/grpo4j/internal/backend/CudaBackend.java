package org.grpo4j.internal.backend;

import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import org.grpo4j.bindings.CudaNative;
import org.grpo4j.internal.util.Closing;

/**
 * Runs ops on one GPU through grpo4j's kernels ({@code cuda/*.cu}, bound by {@link CudaNative}) and cuBLASLt GEMMs
 * ({@link CublasGemm}).
 *
 * <p>Memory: every tensor owns a cudaMalloc'd block freed by {@link Tensor#close()}; views share it. Work is ordered
 * on the backend's stream; host copies synchronize that stream. Every CUDA status is checked and becomes a
 * {@link CudaException} naming the call. Ops not yet ported to CUDA throw {@link UnsupportedOperationException}
 * naming the op (see {@link #implementedOps()}).
 *
 * <p>Index data (ids, positions, slots) lives on the device, so it is checked there: a kernel skips an out-of-range
 * element and records it in a small device flag; the backend reads the flag at its next {@link #synchronize()} or
 * download and throws {@link IllegalArgumentException} naming the op, the element and the value, as the CPU backend
 * does at the call.
 */
public final class CudaBackend extends AbstractBackend {
    private final int device;
    private final long stream;
    private final CudaRuntime.Device props;
    private final Tensor flag;        // int32[4]: op code, element, value, limit (cuda/common.cuh: g4::report)
    private boolean flagArmed;        // an op that can report ran since the flag was last read
    private Tensor scratch;           // grown on demand; ops on the one stream use it one after another
    private final java.util.Map<Rope, Tensor> invFreqs = new java.util.HashMap<>();
    private CublasGemm gemm;
    private boolean tf32 = Boolean.getBoolean("grpo4j.tf32");
    private boolean released;
    /** Allocations come from the device's stream-ordered pool (cudaMallocAsync on {@link #stream}); else cudaMalloc. */
    private final boolean pooled;
    private volatile boolean streamAlive;

    /**
     * The allocator: {@code -Dgrpo4j.cuda.alloc=async} (the default: cudaMallocAsync / cudaFreeAsync on the backend's
     * stream from the device's default pool, which keeps freed memory for reuse; freeing never synchronizes the
     * device) or {@code sync} (cudaMalloc / cudaFree: every free waits for all work on the device, NCCL's included).
     */
    public static final String ALLOC_PROPERTY = "grpo4j.cuda.alloc";

    /** Opens device {@code device}; throws {@link IllegalStateException} with the reason when CUDA is unavailable. */
    public CudaBackend(int device) {
        CudaRuntime.Availability a = CudaRuntime.probe();
        if (!a.available()) throw new IllegalStateException("cuda unavailable: " + a.reason());
        if (device < 0 || device >= a.deviceCount())
            throw new IllegalStateException("cuda:" + device + " does not exist (" + a.deviceCount() + " device(s) visible)");
        this.device = device;
        this.props = CudaRuntime.devices().get(device);
        String alloc = System.getProperty(ALLOC_PROPERTY, "async");
        if (!alloc.equals("async") && !alloc.equals("sync"))
            throw new IllegalArgumentException("-D" + ALLOC_PROPERTY + " must be async or sync, got \"" + alloc + "\"");
        CudaRuntime.check(CudaNative.g4_set_device(device), "cudaSetDevice(" + device + ")");
        long[] s = new long[1];
        CudaRuntime.check(CudaNative.g4_stream_create(s), "cudaStreamCreateWithFlags");
        this.stream = s[0];
        this.streamAlive = true;
        int[] sup = new int[1];
        this.pooled = alloc.equals("async") && CudaNative.g4_pool_init(device, sup) == 0 && sup[0] == 1;
        Tensor f = null;
        try {
            f = empty(DType.INT32, 4);
            CudaRuntime.check(CudaNative.g4_memset(addr(f), 0, 16, stream), "cudaMemsetAsync(error flag)");
        } catch (RuntimeException | Error e) {
            // a half-built backend gives back what it holds: auto goes on with the CPU in this process
            released = true;
            if (f != null)
                try {
                    f.close();
                } catch (RuntimeException | Error closing) {
                    e.addSuppressed(closing);
                }
            streamAlive = false;
            CudaNative.g4_stream_destroy(stream);
            throw e;
        }
        this.flag = f;
    }

    @Override
    public String name() { return "cuda:" + device; }

    @Override
    public String description() {
        return name() + " (" + props.name() + ", " + (props.totalMemory() >> 20) + " MiB, " + props.smCount()
                + " SMs, sm_" + props.major() + props.minor() + ")";
    }

    /** The kernels in cuda/, plus matmul when cuBLAS and cuBLASLt load. */
    @Override
    public Set<String> implementedOps() {
        Set<String> s = new LinkedHashSet<>();
        for (String op : Ops.ALL) if (Ops.CUDA_KERNELS.contains(op) || (op.equals(Ops.MATMUL) && CudaRuntime.cublasLoads())) s.add(op);
        if (!CudaRuntime.cublasLoads()) s.removeAll(LM_HEAD_OPS); // their GEMMs run on cuBLASLt
        return s;
    }

    /**
     * TF32 tensor cores for fp32 x fp32 matmuls (about 10 mantissa bits per product): off by default, so fp32 GEMMs are
     * exact to fp32 accumulation as the conformance suite checks; also {@code -Dgrpo4j.tf32=true}. bf16 GEMMs are not
     * affected.
     */
    public void setTf32(boolean on) { this.tf32 = on; }

    public int device() { return device; }

    /** The CUDA stream (cudaStream_t as a long) every op of this backend is ordered on. */
    public long stream() { return stream; }

    /**
     * Makes this backend's device the calling thread's current CUDA device. Ops launch on the current device, which is
     * device 0 on a new thread: a thread other than the one that built the backend calls this first.
     */
    public void useOnThisThread() { onDevice(); }

    private void onDevice() {
        CudaRuntime.check(CudaNative.g4_set_device(device), "cudaSetDevice(" + device + ")");
    }

    @Override
    public boolean queuesOps() { return true; }

    @Override
    public void synchronize() {
        checkOpen();
        CudaRuntime.check(CudaNative.g4_stream_synchronize(stream), "cudaStreamSynchronize");
        readFlag();
    }

    /** After the stream is idle: throws for the first out-of-range index a kernel reported, and clears the flag. */
    private void readFlag() {
        if (!flagArmed) return;
        flagArmed = false;
        int[] f = new int[4];
        CudaRuntime.check(CudaNative.g4_memcpy_dtoh(f, addr(flag), 16, stream), "cudaMemcpy(error flag)");
        if (f[0] == 0) return;
        CudaRuntime.check(CudaNative.g4_memset(addr(flag), 0, 16, stream), "cudaMemsetAsync(error flag)");
        flagReads++;
        throw flagError(f);
    }

    /** Reports read from the flag (and cleared) so far: a snapshot's copy of the flag is news only if none was since. */
    private long flagReads;

    /** The exception for the flag's words f (op code, element, value, limit). */
    private IllegalArgumentException flagError(int[] f) {
        if ((f[0] >>> 8) != 0) return new IllegalArgumentException(attentionFlagMessage(f)); // attention kernels (issue 12)
        String op = f[0] >= 1 && f[0] <= Ops.ALL.size() ? Ops.ALL.get(f[0] - 1) : "op #" + f[0];
        String what = switch (op) {
            case Ops.ROPE, Ops.ROPE_BACKWARD -> "positions[" + f[1] + "] = " + f[2] + " is negative";
            case Ops.KV_APPEND -> "slots[" + f[1] + "] = " + f[2] + " is outside [0, " + f[3] + ")";
            case Ops.GATHER_TOKENS -> "index[" + f[1] + "] = " + f[2] + " is outside [0, " + f[3] + ")";
            case Ops.TOKEN_LOGPROBS, Ops.TOKEN_LOGPROBS_BACKWARD, Ops.GRPO_LOSS -> "targets[" + f[1] + "] = " + f[2] + " is outside [0, " + f[3] + ")";
            default -> "ids[" + f[1] + "] = " + f[2] + " is outside [0, " + f[3] + ")";
        };
        return new IllegalArgumentException(op + ": " + what + " (found by the kernel; that element was skipped)");
    }

    /** The op code a kernel reports with (1-based index in {@link Ops#ALL}); arms the flag check. */
    private int opCode(String op) {
        flagArmed = true;
        return Ops.ALL.indexOf(op) + 1;
    }

    /**
     * CUDA graphs: the body's ops are captured on this backend's stream (relaxed mode) and instantiated. While
     * capturing, nothing may allocate, copy to or from the host or synchronize (scratch growth is refused with a
     * message: run the body eagerly once first). A graph keeps the scratch address it was recorded with: scratch that
     * later eager ops outgrow while graphs are live stays allocated until the last graph is closed.
     */
    @Override
    public boolean capturesGraphs() { return true; }

    @Override
    public Replay capture(Runnable body) {
        checkOpen();
        onDevice();
        CudaRuntime.check(CudaNative.g4_graph_begin_capture(stream), "cudaStreamBeginCapture");
        capturing = true;
        long[] exec = new long[1];
        java.util.Set<Storage> touched = java.util.Collections.newSetFromMap(new java.util.IdentityHashMap<>());
        CAPTURED.set(touched);
        try {
            body.run();
        } catch (RuntimeException | Error e) {
            CAPTURED.remove();
            capturing = false;
            CudaNative.g4_graph_end_capture(stream, exec);
            if (exec[0] != 0) CudaNative.g4_graph_destroy(exec[0]);
            throw e;
        }
        CAPTURED.remove();
        capturing = false;
        CudaRuntime.check(CudaNative.g4_graph_end_capture(stream, exec), "cudaStreamEndCapture / cudaGraphInstantiate");
        long handle = exec[0];
        Storage[] recorded = touched.toArray(new Storage[0]);
        liveGraphs++;
        return new Replay() {
            private boolean closed;

            @Override
            public void run() {
                if (closed) throw new IllegalStateException("graph used after close");
                checkOpen();  // (the backend's stream is gone with it)
                // the graph's kernels hold the addresses they were recorded with: memory freed since would be written
                for (Storage st : recorded)
                    if (st.released())
                        throw new IllegalStateException("a CUDA graph was replayed after a tensor it was recorded with had been closed ("
                                + st.dtype.label() + ", " + st.capacity + " elements): every tensor a graph touches must outlive it");
                flagArmed = true; // recorded ops may report index errors like eager ones
                CudaRuntime.check(CudaNative.g4_graph_launch(handle, stream), "cudaGraphLaunch");
            }

            @Override
            public void close() {
                if (!closed) {
                    closed = true;
                    CudaNative.g4_graph_destroy(handle); // an in-flight launch completes first (freed on completion)
                    if (--liveGraphs == 0) freeRetiredScratch();
                }
            }
        };
    }

    private boolean capturing;
    /** Graphs captured and not yet closed: their kernels hold the scratch address of their capture. */
    private int liveGraphs;
    /** Scratch buffers outgrown while graphs were live: a graph may still use them, so they are freed with the last one. */
    private final java.util.List<Tensor> retiredScratch = new java.util.ArrayList<>();

    /**
     * Frees one of the backend's own buffers (scratch, the LM head's) after the queued work that uses it (the pool's
     * free is ordered after it; cudaFree needs the stream idle). A captured graph bakes the addresses it was recorded
     * with: while one is live, the buffer stays allocated (freed with the last graph), or a replay would write into
     * freed memory.
     */
    private void retire(Tensor t) {
        if (liveGraphs > 0) {
            retiredScratch.add(t);
            return;
        }
        if (!pooled) CudaRuntime.check(CudaNative.g4_stream_synchronize(stream), "cudaStreamSynchronize");
        t.close();
    }

    private void freeRetiredScratch() {
        if (retiredScratch.isEmpty()) return;
        CudaRuntime.check(CudaNative.g4_stream_synchronize(stream), "cudaStreamSynchronize");
        for (Tensor t : retiredScratch) t.close();
        retiredScratch.clear();
    }

    /** Bytes held by scratch buffers kept alive for live graphs (tests). */
    long retiredScratchBytes() {
        long b = 0;
        for (Tensor t : retiredScratch) b += t.bytes();
        return b;
    }

    /**
     * Gives back the ops' shared scratch buffer (after the queued work that uses it; kept while a graph recorded on
     * it is live); the next op that needs scratch allocates it again. The buffer only grows otherwise: a training
     * phase's attention backward (its dQ accumulator in the atomic and fixed-point modes, hundreds of MiB at 8B) kept
     * it beside the next generation's KV pool, which was sized before it existed.
     */
    public void releaseScratch() {
        if (scratch == null) return;
        Tensor s = scratch;
        scratch = null;
        retire(s);
    }

    /** Bytes of the ops' scratch buffer now (0 after {@link #releaseScratch}). */
    long scratchBytes() { return scratch == null ? 0 : scratch.bytes(); }

    /** A device buffer of at least {@code bytes}, reused by every op (they run one after another on the stream). */
    private long scratch(long bytes) {
        if (scratch == null || scratch.bytes() < bytes) {
            if (capturing)
                throw new IllegalStateException("an op needs " + bytes + " bytes of scratch while a CUDA graph is being captured: "
                        + "run the captured work eagerly once first");
            long old = scratch == null ? 0 : scratch.bytes();
            if (scratch != null) {
                Tensor old0 = scratch;
                scratch = null; // a failed allocation below must not leave a closed buffer in use
                retire(old0);
            }
            long grown = Math.max(bytes, old == 0 ? 1 << 20 : old * 2);
            scratch = flat(DType.INT32, (grown + 3) / 4);
        }
        return addr(scratch);
    }

    @Override
    public void close() {
        if (released) return;
        released = true;
        // step by step, each one also after one that failed (after a sticky fault every CUDA call fails): the backend
        // ends closed and its stream destroyed whatever happens on the way
        Closing.closeAll(name(), List.<AutoCloseable>of(
                () -> {
                    onDevice(); // its stream, handles and memory are on its device, whichever the closing thread used last
                    CudaNative.g4_stream_synchronize(stream);
                },
                () -> {
                    CublasGemm g = gemm;
                    gemm = null;
                    if (g != null) g.close();
                },
                () -> {
                    Tensor t = scratch;
                    scratch = null;
                    if (t != null) t.close();
                },
                () -> {
                    List<Tensor> retired = new ArrayList<>(retiredScratch);
                    retiredScratch.clear();
                    Closing.closeAll("scratch", retired);
                },
                this::closeLmHead,
                () -> Closing.closeAll("rope tables", invFreqs.values()),
                flag::close,
                this::freeStaging,
                () -> {
                    if (liveTensors() > 0)
                        System.getLogger("org.grpo4j").log(System.Logger.Level.WARNING,
                                name() + " closed with " + liveTensors() + " live tensors (" + liveBytes() + " bytes)");
                },
                super::close,
                () -> {
                    if (pooled) CudaNative.g4_pool_trim(device, stream); // the pool's idle memory back to the device (other users of it)
                },
                () -> {
                    streamAlive = false; // tensors closed from now on are freed on the default stream
                    CudaNative.g4_stream_destroy(stream);
                }));
    }

    // ---- events ---------------------------------------------------------------------------------------------------

    /** A CUDA event; close it when done. */
    public final class Event implements AutoCloseable {
        final long handle;
        private boolean closed;

        private Event() {
            long[] e = new long[1];
            CudaRuntime.check(CudaNative.g4_event_create(e), "cudaEventCreate");
            handle = e[0];
        }

        /** Records this event on the backend's stream. */
        public Event record() {
            usable();
            CudaRuntime.check(CudaNative.g4_event_record(handle, stream), "cudaEventRecord");
            return this;
        }

        public void synchronize() {
            usable();
            CudaRuntime.check(CudaNative.g4_event_synchronize(handle), "cudaEventSynchronize");
        }

        /** Refuses a closed event, or one of a closed backend (CUDA calls on a destroyed handle are undefined). */
        private void usable() {
            if (closed) throw new IllegalStateException("the event is closed");
            checkOpen();
        }

        /** Milliseconds between {@code start} (recorded earlier) and this event. */
        public float elapsedSince(Event start) {
            usable();
            start.usable();
            float[] ms = new float[1];
            CudaRuntime.check(CudaNative.g4_event_elapsed_ms(ms, start.handle, handle), "cudaEventElapsedTime");
            return ms[0];
        }

        @Override
        public void close() {
            if (closed) return;
            closed = true;
            CudaNative.g4_event_destroy(handle);
        }
    }

    public Event newEvent() {
        checkOpen();
        onDevice();
        return new Event();
    }

    // ---- op profile: where a step's device time goes (a diagnostic; issue 14) ---------------------------------------

    /** Events a profile holds before it synchronizes once to read and reuse them. */
    static final int PROFILE_EVENTS = 4096;

    private OpProfile profile;

    /**
     * Starts an op profile: from now on every op call records an event on the stream before its work, and op i's
     * device time is the interval from its event to the next op's (so it includes a device idle gap when the host was
     * slower than the device; in a device-bound loop there is none). Ops inside a captured graph are not seen (profile
     * an eager run), nor are the internal kernels of an op apart from it (attention's plan kernel counts as attention,
     * the LM head's GEMMs as its loss op). Every {@link #PROFILE_EVENTS} calls the profile synchronizes once.
     */
    public void startOpProfile() {
        if (profile != null) throw new IllegalStateException("an op profile is already running");
        profile = new OpProfile();
    }

    /**
     * Ends the profile started by {@link #startOpProfile}: records a last event, waits for it, and returns each op's
     * device milliseconds and call count, in order of first call ({@code [ms, calls]}).
     */
    public java.util.LinkedHashMap<String, double[]> stopOpProfile() {
        if (profile == null) throw new IllegalStateException("no op profile is running");
        OpProfile p = profile;
        profile = null;
        try {
            p.mark(null);
            p.flush(true);
            return p.totals;
        } finally {
            p.close();
        }
    }

    @Override
    void onOp(String op) {
        if (profile != null && !capturing) profile.mark(op);
    }

    private final class OpProfile implements AutoCloseable {
        final java.util.LinkedHashMap<String, double[]> totals = new java.util.LinkedHashMap<>();
        final List<Event> pool = new ArrayList<>(), used = new ArrayList<>();
        final List<String> ops = new ArrayList<>();

        /** Records the event that starts {@code op} (null: the end of the last one). */
        void mark(String op) {
            if (used.size() == PROFILE_EVENTS) flush(false);
            Event e = pool.isEmpty() ? newEvent() : pool.remove(pool.size() - 1);
            used.add(e.record());
            ops.add(op);
        }

        /** Adds every finished interval to the totals; keeps the last event (the open op's start) unless {@code all}. */
        void flush(boolean all) {
            if (used.isEmpty()) return;
            used.get(used.size() - 1).synchronize();
            for (int i = 0; i + 1 < used.size(); i++) {
                double[] t = totals.computeIfAbsent(ops.get(i), k -> new double[2]);
                t[0] += used.get(i + 1).elapsedSince(used.get(i));
                t[1]++;
            }
            int done = all ? used.size() : used.size() - 1;
            pool.addAll(used.subList(0, done));
            used.subList(0, done).clear();
            ops.subList(0, done).clear();
        }

        @Override
        public void close() {
            for (Event e : pool) e.close();
            for (Event e : used) e.close();
            pool.clear();
            used.clear();
        }
    }

    /** Makes this backend's stream wait (on the GPU, without blocking the host) until {@code e} has completed. */
    public void waitFor(Event e) {
        checkOpen();
        e.usable();
        CudaRuntime.check(CudaNative.g4_stream_wait_event(stream, e.handle), "cudaStreamWaitEvent");
    }

    // ---- memory ---------------------------------------------------------------------------------------------------

    static final class CudaStorage extends Storage {
        final long address;
        private final CudaBackend pool; // null: cudaMalloc'd

        CudaStorage(DType dtype, long elements, long address, CudaBackend pool) {
            super(dtype, elements);
            this.address = address;
            this.pool = pool;
        }

        @Override
        void checkFree() {
            if (pool != null && pool.streamAlive && pool.capturing)
                throw new IllegalStateException("a tensor was freed while a CUDA graph is being captured: free it after capturing");
        }

        /** What must finish before this memory may be freed: collectives in flight on another stream (see holdForCollective). */
        private final List<Runnable> collectives = new ArrayList<>();

        @Override
        void free() {
            if (address == 0) return;
            List<Runnable> waits;
            synchronized (collectives) {
                waits = new ArrayList<>(collectives);
            }
            for (Runnable w : waits) {
                try {
                    w.run();
                } catch (RuntimeException e) {
                    return; // not known to be done with it: the memory is leaked rather than handed to another allocation
                }
            }
            if (pool != null && pool.streamAlive) {
                pool.onDevice();
                // ordered after every op already issued on the stream: a later allocation may reuse it only after them
                CudaRuntime.check(CudaNative.g4_free_async(address, pool.stream), "cudaFreeAsync");
            } else if (pool != null) {
                // a tensor that outlived its backend: the pool's allocation back on the default stream (the backend's
                // stream is destroyed, and its close synchronized it), not with cudaFree, which is for cudaMalloc's
                pool.onDevice();
                CudaRuntime.check(CudaNative.g4_free_async(address, 0), "cudaFreeAsync");
            } else {
                CudaRuntime.check(CudaNative.g4_free(address), "cudaFree");
            }
        }
    }

    /**
     * Hands the pool's idle memory back to the device (waits for the stream first, so that queued frees have
     * returned), so that allocations outside the pool (NCCL's buffers, cuBLAS, graph instantiation, another process)
     * can use it; the pool grows again on demand. A no-op without a pool.
     */
    public void trimPool() {
        if (!pooled || released) return;
        onDevice();
        CudaRuntime.check(CudaNative.g4_pool_trim(device, stream), "cudaMemPoolTrimTo");
    }

    /**
     * Ties {@code t}'s memory to a collective in flight on another stream (NcclCommunicator): freeing it first runs
     * {@code waitDone}, which returns once the collective no longer uses it. A free is ordered on this backend's stream
     * only, so without this the memory could go back to the pool (and to the next allocation, or to the device at a
     * trim) while NCCL still reads or writes it. Closing the handle unties it: once the compute stream waits for the
     * collective, frees on it are ordered after the collective anyway.
     */
    public AutoCloseable holdForCollective(Tensor t, Runnable waitDone) {
        Check.tensor("holdForCollective", this, "t", t);
        CudaStorage st = (CudaStorage) t.storage;
        synchronized (st.collectives) {
            st.collectives.add(waitDone);
        }
        return () -> {
            synchronized (st.collectives) {
                st.collectives.remove(waitDone);
            }
        };
    }

    /** Whether tensors come from the stream-ordered pool ({@link #ALLOC_PROPERTY}). */
    public boolean pooledAllocator() { return pooled; }

    /** Bytes the device's pool holds and does not use (free for this process's next allocations), 0 without a pool. */
    public static long poolIdleBytes(int device) {
        long[] reserved = new long[1], used = new long[1];
        if (CudaNative.g4_pool_usage(device, reserved, used) != 0) return 0;
        return Math.max(0, reserved[0] - used[0]);
    }

    /** The storages a capture on this thread has handed to kernels so far (null when not capturing). */
    private static final ThreadLocal<java.util.Set<Storage>> CAPTURED = new ThreadLocal<>();

    /** t's device address; a freed tensor is an exception here, never an address for a kernel to write through. */
    static long addr(Tensor t) {
        t.checkLive();
        java.util.Set<Storage> captured = CAPTURED.get();
        if (captured != null) captured.add(t.storage);
        return ((CudaStorage) t.storage).address + t.offset * t.dtype().bytes();
    }

    @Override
    Storage allocateStorage(DType dtype, long elements) {
        if (capturing)
            throw new IllegalStateException("a tensor was allocated while a CUDA graph is being captured: allocate before capturing");
        onDevice();
        long bytes = Math.max(1, elements * dtype.bytes());
        long[] p = new long[1];
        int e = pooled ? CudaNative.g4_malloc_async(bytes, p, stream) : CudaNative.g4_malloc(bytes, p);
        if (e != 0 && pooled) { // the pool's idle memory back to the device (fragmentation, other allocators), then once more
            CudaNative.g4_pool_trim(device, stream);
            e = CudaNative.g4_malloc_async(bytes, p, stream);
        }
        if (e != 0) {
            long[] free = new long[1], total = new long[1];
            CudaNative.g4_mem_get_info(free, total);
            throw new CudaException((pooled ? "cudaMallocAsync(" : "cudaMalloc(") + bytes + " bytes; " + (free[0] >> 20) + " MiB free of "
                    + (total[0] >> 20) + " MiB on " + name() + (pooled ? ", " + (poolIdleBytes(device) >> 20) + " MiB idle in its pool" : "") + ")",
                    e, CudaNative.g4_error_name(e), CudaNative.g4_error_string(e));
        }
        return new CudaStorage(dtype, elements, p[0], pooled ? this : null);
    }

    @Override
    void uploadImpl(Tensor dst, Object a) {
        long bytes = dst.bytes();
        int e = switch (dst.dtype()) {
            case FP32 -> CudaNative.g4_memcpy_htod(addr(dst), (float[]) a, bytes, stream);
            case BF16 -> CudaNative.g4_memcpy_htod(addr(dst), (short[]) a, bytes, stream);
            case INT32 -> CudaNative.g4_memcpy_htod(addr(dst), (int[]) a, bytes, stream);
            case INT64 -> CudaNative.g4_memcpy_htod(addr(dst), (long[]) a, bytes, stream);
        };
        CudaRuntime.check(e, "cudaMemcpyAsync(host to device, " + bytes + " bytes)");
    }

    @Override
    Object downloadImpl(Tensor t) {
        int n = Math.toIntExact(t.numel());
        long bytes = t.bytes();
        Object out;
        int e;
        switch (t.dtype()) {
            case FP32 -> { float[] a = new float[n]; e = CudaNative.g4_memcpy_dtoh(a, addr(t), bytes, stream); out = a; }
            case BF16 -> { short[] a = new short[n]; e = CudaNative.g4_memcpy_dtoh(a, addr(t), bytes, stream); out = a; }
            case INT32 -> { int[] a = new int[n]; e = CudaNative.g4_memcpy_dtoh(a, addr(t), bytes, stream); out = a; }
            default -> { long[] a = new long[n]; e = CudaNative.g4_memcpy_dtoh(a, addr(t), bytes, stream); out = a; }
        }
        CudaRuntime.check(e, "cudaMemcpyAsync(device to host, " + bytes + " bytes)");
        readFlag();
        return out;
    }

    /**
     * A page-locked host buffer for stream-ordered copies, and the event recorded after the last copy that used it: it
     * is taken again only once that event is done (and, for a snapshot, once the host has read it).
     */
    private static final class Staging {
        final long ptr, capacity, event;
        boolean taken;

        Staging(long ptr, long capacity, long event) {
            this.ptr = ptr;
            this.capacity = capacity;
            this.event = event;
        }
    }

    private final java.util.List<Staging> staging = new java.util.ArrayList<>();
    /**
     * Staging buffers at most; past it a busy one is waited for (a caller queueing many uploads without reading
     * anything back), and only snapshots never read nor discarded can exhaust them.
     */
    static final int MAX_STAGING = 64;

    private Staging stage(long bytes) {
        if (released) throw new IllegalStateException("backend " + name() + " is closed");
        if (capturing) throw new IllegalStateException("a host copy while a CUDA graph is being captured");
        Staging best = null;
        for (Staging s : staging) { // the smallest free buffer that fits and whose last copy is done
            if (s.taken || s.capacity < bytes || (best != null && best.capacity <= s.capacity)) continue;
            int q = CudaNative.g4_event_query(s.event);
            if (q == -1) continue; // its last copy is still queued
            CudaRuntime.check(q, "cudaEventQuery(staging)");
            best = s;
        }
        if (best != null) {
            best.taken = true;
            return best;
        }
        if (staging.size() >= MAX_STAGING) { // wait for the first buffer not held by a snapshot, grown if too small
            for (int i = 0; i < staging.size(); i++) {
                Staging s = staging.get(i);
                if (s.taken) continue;
                CudaRuntime.check(CudaNative.g4_event_synchronize(s.event), "cudaEventSynchronize(staging)");
                if (s.capacity >= bytes) {
                    s.taken = true;
                    return s;
                }
                staging.remove(i);
                CudaNative.g4_event_destroy(s.event);
                CudaNative.g4_host_free(s.ptr);
                break;
            }
            if (staging.size() >= MAX_STAGING)
                throw new IllegalStateException(MAX_STAGING + " page-locked staging buffers are held by snapshots (fetch) never read nor discarded");
        }
        long cap = Math.max(64 << 10, (bytes + 4095) & ~4095L);
        long[] p = new long[1], ev = new long[1];
        CudaRuntime.check(CudaNative.g4_host_alloc(cap, p), "cudaHostAlloc(" + cap + " bytes)");
        int e = CudaNative.g4_event_create_untimed(ev);
        if (e != 0) {
            CudaNative.g4_host_free(p[0]);
            CudaRuntime.check(e, "cudaEventCreate(staging)");
        }
        Staging s = new Staging(p[0], cap, ev[0]);
        s.taken = true;
        staging.add(s);
        return s;
    }

    private void freeStaging() {
        for (Staging s : staging) {
            CudaNative.g4_event_destroy(s.event);
            CudaNative.g4_host_free(s.ptr);
        }
        staging.clear();
    }

    @Override
    void copyFromHostAsyncImpl(Tensor dst, int[] src) {
        long bytes = dst.bytes();
        if (bytes == 0) return;
        Staging s = stage(bytes);
        try {
            CudaNative.g4_host_put(s.ptr, src, bytes);
            CudaRuntime.check(CudaNative.g4_memcpy_async(addr(dst), s.ptr, bytes, stream), "cudaMemcpyAsync(staged host to device, " + bytes + " bytes)");
            CudaRuntime.check(CudaNative.g4_event_record(s.event, stream), "cudaEventRecord(staging)");
        } finally {
            s.taken = false; // free again once its event is done
        }
    }

    /** Also snapshots the error flag, so that a kernel's report reaches the host with the values, not later. */
    @Override
    Fetched fetchImpl(Tensor ints, Tensor floats) {
        long ib = ints.bytes(), fb = floats.bytes();
        Staging s = stage(ib + fb + 16);
        try {
            if (ib > 0) CudaRuntime.check(CudaNative.g4_memcpy_async(s.ptr, addr(ints), ib, stream), "cudaMemcpyAsync(snapshot, " + ib + " bytes)");
            if (fb > 0) CudaRuntime.check(CudaNative.g4_memcpy_async(s.ptr + ib, addr(floats), fb, stream), "cudaMemcpyAsync(snapshot, " + fb + " bytes)");
            CudaRuntime.check(CudaNative.g4_memcpy_async(s.ptr + ib + fb, addr(flag), 16, stream), "cudaMemcpyAsync(error flag snapshot)");
            CudaRuntime.check(CudaNative.g4_event_record(s.event, stream), "cudaEventRecord(snapshot)");
        } catch (RuntimeException e) {
            s.taken = false;
            throw e;
        }
        int ni = Math.toIntExact(ints.numel()), nf = Math.toIntExact(floats.numel());
        long reads = flagReads;
        return new Fetched() {
            private int[] a;
            private float[] b;
            private boolean discarded;

            @Override
            public void discard() {
                if (a != null || discarded) return;
                discarded = true;
                s.taken = false; // its event guards the reuse
            }

            private void read() {
                if (a != null) return;
                if (discarded) throw new IllegalStateException("a discarded snapshot was read");
                if (released) throw new IllegalStateException("backend " + name() + " is closed");
                CudaRuntime.check(CudaNative.g4_event_synchronize(s.event), "cudaEventSynchronize(snapshot)");
                int[] x = new int[ni], f = new int[4];
                float[] y = new float[nf];
                CudaNative.g4_host_get(x, s.ptr, ib);
                CudaNative.g4_host_get(y, s.ptr + ib, fb);
                CudaNative.g4_host_get(f, s.ptr + ib + fb, 16);
                s.taken = false;
                a = x;
                b = y;
                if (f[0] != 0 && reads == flagReads) { // a kernel before the snapshot reported, and nobody has said so yet
                    flagArmed = true;
                    synchronize(); // reads (and clears) the flag, throwing for its first report: this one
                    throw flagError(f);
                }
            }

            @Override
            public int[] ints() {
                read();
                return a;
            }

            @Override
            public float[] floats() {
                read();
                return b;
            }
        };
    }

    // ---- ops ------------------------------------------------------------------------------------------------------

    /** The kernels' dtype code. */
    static int dt(Tensor t) { return t.dtype() == DType.BF16 ? CudaNative.BF16 : CudaNative.F32; }

    private static void ok(int e, String what) { CudaRuntime.check(e, what); }

    @Override
    void fillImpl(Tensor x, double value) {
        if (x.numel() == 0) return;
        ok(x.dtype() == DType.INT32 ? CudaNative.g4_fill_i32(addr(x), x.numel(), (int) value, stream)
                : CudaNative.g4_fill(dt(x), addr(x), x.numel(), (float) value, stream), "fill kernel");
    }

    @Override
    void scaleImpl(Tensor x, float alpha) {
        ok(CudaNative.g4_scale(dt(x), addr(x), x.numel(), alpha, stream), "scale kernel");
    }

    @Override
    void copyImpl(Tensor dst, Tensor src) {
        if (dst.numel() == 0 || addr(dst) == addr(src)) return; // (a copy onto itself: cudaMemcpy leaves overlap undefined)
        ok(CudaNative.g4_memcpy_dtod(addr(dst), addr(src), dst.bytes(), stream), "cudaMemcpyAsync(device to device)");
    }

    @Override
    void castImpl(Tensor dst, Tensor src) {
        if (dst.dtype() == src.dtype()) {
            copyImpl(dst, src);
            return;
        }
        ok(CudaNative.g4_cast(dt(dst), addr(dst), dt(src), addr(src), dst.numel(), stream), "cast kernel");
    }

    @Override
    void addImpl(Tensor out, Tensor a, Tensor b) {
        ok(CudaNative.g4_add(dt(out), addr(out), addr(a), addr(b), out.numel(), stream), "add kernel");
    }

    @Override
    void axpyImpl(Tensor y, float alpha, Tensor x) {
        ok(CudaNative.g4_axpy(addr(y), alpha, dt(x), addr(x), y.numel(), stream), "axpy kernel");
    }

    /** The most a CUDA kernel counts in an int: 2^31 - 1 less a block's stride of headroom past the last element. */
    static final int MAX_KERNEL_COUNT = Integer.MAX_VALUE - 1024;

    /**
     * Refuses a count past {@link #MAX_KERNEL_COUNT} before any launch: the kernels count rows, columns and grid
     * blocks in an int and step past the last one by up to a block, so larger counts would wrap negative and address
     * memory before their buffers.
     */
    static void countable(String op, String what, long value) {
        Check.check(value <= MAX_KERNEL_COUNT, op, what + " = " + value + " exceeds 2^31 - 1025, the most the CUDA kernels count");
    }

    @Override
    void embeddingImpl(Tensor out, Tensor table, Tensor ids) {
        countable(Ops.EMBEDDING, "row width table.dim(1)", table.dim(1));
        ok(CudaNative.g4_embedding(dt(table), addr(out), addr(table), addr(ids), ids.dim(0), table.dim(1), table.dim(0),
                addr(flag), opCode(Ops.EMBEDDING), stream), "embedding kernel");
    }

    @Override
    void embeddingBackwardImpl(Tensor dTable, Tensor dOut, Tensor ids) {
        int n = ids.dim(0), v = dTable.dim(0);
        countable(Ops.EMBEDDING_BACKWARD, "row width dTable.dim(1)", dTable.dim(1));
        countable(Ops.EMBEDDING_BACKWARD, "tokens ids.dim(0)", n);
        long[] bytes = new long[1];
        ok(CudaNative.g4_embedding_backward_workspace(n, v, bytes), "embeddingBackward workspace");
        ok(CudaNative.g4_embedding_backward(addr(dTable), dt(dOut), addr(dOut), addr(ids), n, dTable.dim(1), v,
                scratch(bytes[0]), bytes[0], addr(flag), opCode(Ops.EMBEDDING_BACKWARD), stream), "embeddingBackward kernels");
    }

    @Override
    void rmsNormImpl(Tensor out, Tensor rstd, Tensor x, Tensor weight, float eps) {
        countable(Ops.RMS_NORM, "row width x.dim(1)", x.dim(1));
        ok(CudaNative.g4_rmsnorm(dt(x), dt(weight), addr(out), addr(rstd), addr(x), addr(weight), x.dim(0), x.dim(1), eps, stream),
                "rmsNorm kernel");
    }

    @Override
    void rmsNormBackwardImpl(Tensor dx, Tensor dWeight, Tensor dOut, Tensor x, Tensor weight, Tensor rstd) {
        int n = x.dim(0), d = x.dim(1);
        Check.check(d <= GRID_Y_MAX * 256, Ops.RMS_NORM_BACKWARD, "rows of " + d + " elements exceed " + GRID_Y_MAX * 256
                + ", the widest the CUDA backend's dWeight partials cover (65535 blocks of 256 columns)");
        // (its row chunks are counted in an int, rounded up: rows past 2^31 - 1025 would wrap the count)
        countable(Ops.RMS_NORM_BACKWARD, "rows", n);
        long[] bytes = new long[1];
        ok(CudaNative.g4_rmsnorm_backward_workspace(n, d, bytes), "rmsNormBackward workspace");
        ok(CudaNative.g4_rmsnorm_backward(dt(x), dt(weight), addr(dx), addr(dWeight), addr(dOut), addr(x), addr(weight), addr(rstd),
                n, d, scratch(bytes[0]), bytes[0], stream), "rmsNormBackward kernels");
    }

    @Override
    void matmulImpl(Tensor c, Tensor a, boolean transA, Tensor b, boolean transB, float alpha, float beta,
                    int batch, int m, int n, int k) {
        if (c.numel() == 0) return;
        if (k == 0) { // op(A) op(B) is all zeros: C = beta * C (beta 0 overwrites, NaN included)
            if (beta == 0f) fillImpl(c, 0);
            else scaleImpl(c, beta);
            return;
        }
        if (gemm == null) gemm = new CublasGemm(this);
        gemm.matmul(c, a, transA, b, transB, alpha, beta, batch, m, n, k, tf32);
    }

    /** Host cost counters of the GEMM wrapper: cached plans and how many use the cuBLAS fallback. */
    int[] gemmPlanCounts() { return gemm == null ? new int[2] : gemm.planCounts(); }

    @Override
    void ropeImpl(Tensor out, Tensor x, Tensor positions, Rope rope, boolean inverse) {
        String op = inverse ? Ops.ROPE_BACKWARD : Ops.ROPE;
        // (the kernel keeps a token's cos/sin, 4 bytes a head-dim element, in 48 KiB of shared memory)
        Check.check(x.dim(2) <= MAX_ROPE_HEAD_DIM, op, "head dim " + x.dim(2) + " exceeds " + MAX_ROPE_HEAD_DIM + ", the most the CUDA rope kernel holds");
        // (the kernel counts a token's rotated pairs, heads x head dim / 2, in an int)
        // (and its loop steps by a block of 256 past the last pair: 1024 of headroom keeps the index from wrapping)
        countable(op, "heads x head dim / 2 (a token's rotated pairs)", (long) x.dim(1) * x.dim(2) / 2);
        Tensor inv = invFreqs.computeIfAbsent(rope, r -> upload(r.invFreq(), r.headDim() / 2));
        ok(CudaNative.g4_rope(dt(x), addr(out), addr(x), addr(positions), addr(inv), x.dim(0), x.dim(1), x.dim(2),
                inverse ? 1 : 0, addr(flag), opCode(inverse ? Ops.ROPE_BACKWARD : Ops.ROPE), stream), "rope kernel");
    }

    @Override
    void kvAppendImpl(Tensor kCache, Tensor vCache, Tensor k, Tensor v, Tensor slots) {
        long width = (long) k.dim(1) * k.dim(2), capacity = (long) kCache.dim(0) * kCache.dim(1);
        countable(Ops.KV_APPEND, "kv heads x head dim", width);
        Check.check(capacity <= Integer.MAX_VALUE, Ops.KV_APPEND, "blocks x block size " + capacity
                + " must be at most 2^31 - 1 (the CUDA kernel's int slot count)");
        ok(CudaNative.g4_kv_append(dt(kCache), addr(kCache), addr(vCache), addr(k), addr(v), addr(slots), k.dim(0),
                (int) width, (int) capacity, addr(flag), opCode(Ops.KV_APPEND), stream), "kvAppend kernel");
    }

    @Override
    void gatherTokensImpl(Tensor ids, Tensor src, Tensor index) {
        // (index data: out-of-range rows are skipped and reported through the flag; the CPU checks them all first)
        countable(Ops.GATHER_TOKENS, "ids.dim(0)", ids.dim(0));
        ok(CudaNative.g4_gather_tokens(addr(ids), addr(src), addr(index), ids.dim(0), src.dim(0), addr(flag),
                opCode(Ops.GATHER_TOKENS), stream), "gatherTokens kernel");
    }

    @Override
    void swigluImpl(Tensor out, Tensor gate, Tensor up) {
        ok(CudaNative.g4_swiglu(dt(out), addr(out), addr(gate), addr(up), out.numel(), stream), "swiglu kernel");
    }

    @Override
    void swigluBackwardImpl(Tensor dGate, Tensor dUp, Tensor dOut, Tensor gate, Tensor up) {
        ok(CudaNative.g4_swiglu_backward(dt(gate), addr(dGate), addr(dUp), addr(dOut), addr(gate), addr(up), gate.numel(),
                stream), "swigluBackward kernel");
    }

    @Override
    void adamWImpl(Tensor param, Tensor grad, Tensor m, Tensor v, AdamWStep st, Tensor bf16Out) {
        float[] c = adamWScalars(st);
        ok(CudaNative.g4_adamw(addr(param), addr(grad), addr(m), addr(v), bf16Out == null ? 0 : addr(bf16Out), param.numel(),
                c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], stream), "adamW kernel");
    }

    /**
     * The adamW kernel's scalars {decay, beta1, beta2, 1-beta1, 1-beta2, lr/bc1, sqrt(bc2), eps, gradScale}, computed exactly as
     * CpuBackend.adamWImpl computes them, so that the update is bit-identical (DeviceMathTest checks it).
     */
    static float[] adamWScalars(AdamWStep st) {
        double bc1 = 1 - Math.pow(st.beta1(), st.step()), bc2 = 1 - Math.pow(st.beta2(), st.step());
        return new float[] {1f - st.lr() * st.weightDecay(), st.beta1(), st.beta2(), 1 - st.beta1(), 1 - st.beta2(),
                (float) (st.lr() / bc1), (float) Math.sqrt(bc2), st.eps(), st.gradScale()};
    }

    @Override
    void sumSquaresImpl(Tensor out, Tensor x) {
        long[] bytes = new long[1];
        ok(CudaNative.g4_sum_squares_workspace(x.numel(), bytes), "sumSquares workspace");
        ok(CudaNative.g4_sum_squares(addr(out), dt(x), addr(x), x.numel(), scratch(bytes[0]), bytes[0], stream), "sumSquares kernels");
    }

    // ---- attention (issue 12: cuda/attention.cu, cuda/decode.cu) ----------------------------------------------------

    /**
     * How attentionBackward forms dq on the tensor-core path (bf16, head dims 64 and 128; cuda/attention.cu, DqMode).
     * Every mode computes the same dK and dV bits.
     */
    public enum AttentionDq {
        /** Deterministic (the default, and what the trainer runs): a separate dQ pass per query tile over its key
         *  tiles, so dq is bitwise the same run to run and a resumed run repeats the original exactly. */
        PASS(1),
        /** Deterministic too, without the second pass: the dK/dV pass adds dS K into a 64-bit fixed-point accumulator
         *  with integer atomics, whose sums do not depend on their order (docs/kernels.md, "Fixed-point dQ"); other
         *  bits than PASS's (each element a sum at a resolution of 2^-60 to 2^-59 of its row's bound, rounded once). */
        FIXED(1 | 8),
        /** Fast: the dK/dV pass adds dS K into an fp32 accumulator with atomics; the order of the additions, and so
         *  dq's last bits, vary run to run. */
        ATOMIC(0);

        final int bits;

        AttentionDq(int bits) { this.bits = bits; }

        /** Deterministic modes give the same dq bits run to run. */
        public boolean deterministic() { return this != ATOMIC; }
    }

    private AttentionDq attentionDq = attentionDqProperty();

    /**
     * The dQ mode this JVM's properties choose ({@code -Dgrpo4j.attentionDq}, or {@code
     * -Dgrpo4j.deterministicAttention=false} for ATOMIC; PASS without either): a new backend's default.
     */
    public static AttentionDq attentionDqProperty() {
        String v = System.getProperty("grpo4j.attentionDq");
        if (v == null) return "false".equals(System.getProperty("grpo4j.deterministicAttention")) ? AttentionDq.ATOMIC : AttentionDq.PASS;
        try {
            return AttentionDq.valueOf(v.trim().toUpperCase(java.util.Locale.ROOT));
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("-Dgrpo4j.attentionDq: \"" + v + "\" is not one of pass, fixed, atomic");
        }
    }

    /** Also {@code -Dgrpo4j.attentionDq=pass|fixed|atomic}. */
    public void setAttentionDq(AttentionDq mode) { this.attentionDq = java.util.Objects.requireNonNull(mode, "attention dq mode"); }

    public AttentionDq attentionDq() { return attentionDq; }

    /**
     * Deterministic ({@link AttentionDq#PASS}) or fast ({@link AttentionDq#ATOMIC}) dq; also
     * {@code -Dgrpo4j.deterministicAttention=false} (fast).
     */
    public void setDeterministicAttention(boolean on) { this.attentionDq = on ? AttentionDq.PASS : AttentionDq.ATOMIC; }

    public boolean deterministicAttention() { return attentionDq.deterministic(); }

    private boolean wgmmaAttention = Boolean.getBoolean("grpo4j.attentionWgmma");

    /**
     * The Hopper attention kernels (cuda/attention.cu {@code fwd_wgmma_kernel}, {@code dkdv_wgmma_kernel},
     * {@code dq_wgmma_kernel}: wgmma, two warpgroups) for attention and attentionBackward on a compute capability
     * 9.0 device (H100, H200), bf16 at head dims 64 and 128; elsewhere the setting changes nothing. Every dQ mode keeps
     * its meaning (PASS and FIXED bitwise repeatable). Off by default until a GPU run has timed them against the
     * mma.sync kernels (docs/kernels.md, "The Hopper kernels"); their outputs are within the same tolerance of the
     * exact result, not the same bits. Also {@code -Dgrpo4j.attentionWgmma=true}.
     */
    public void setWgmmaAttention(boolean on) { this.wgmmaAttention = on; }

    /** Whether this device runs the Hopper kernels when they are asked for (compute capability 9.0). */
    public boolean hasWgmmaAttention() { return props.major() == 9 && props.minor() == 0; }

    public boolean wgmmaAttention() { return wgmmaAttention; }

    /**
     * Which Hopper forward kernel attention runs with the Hopper kernels on ({@link #setWgmmaAttention}): all of them
     * have the same blocks, products and bits (docs/kernels.md, "The Hopper kernels" and "The forward with a producer
     * warpgroup"), so a run may switch at any step (an exact resume holds).
     */
    public enum HopperForward {
        /** {@code fwd_wgmma_kernel}: every thread copies its part of K and V (cp.async), one block barrier a tile. */
        WGMMA("wgmma", 1),
        /** {@code fwd_tma_kernel}: FlashAttention-3's producer warpgroup loads Q, K and V by TMA into mbarrier stages. */
        TMA("tma", 3),
        /** {@code fwd_tma_kernel} with the two computing warpgroups issuing their products in turn (ping-pong). */
        TMA_PING_PONG("tma-ping-pong", 7),
        /**
         * {@link #TMA}, persistent: a block an SM going through the work items (query tile, head), the producer loading
         * the next item's Q, K and V under this one's last products and epilogue.
         */
        TMA_PERSISTENT("tma-persistent", 11),
        /** {@link #TMA_PING_PONG}, persistent (as {@link #TMA_PERSISTENT}). */
        TMA_PING_PONG_PERSISTENT("tma-ping-pong-persistent", 15);

        private final String label;
        final int modeBits;  // g4_attention's mode bits

        HopperForward(String label, int modeBits) {
            this.label = label;
            this.modeBits = modeBits;
        }

        public String label() { return label; }

        /** The kernel named by {@code s} (one of the labels); {@code where} names the setting in the error. */
        public static HopperForward parse(String s, String where) {
            for (HopperForward f : values()) if (f.label.equals(s)) return f;
            throw new IllegalArgumentException(where + ": unknown Hopper forward \"" + s + "\" (valid: "
                    + java.util.Arrays.stream(values()).map(HopperForward::label).collect(java.util.stream.Collectors.joining(", ")) + ")");
        }
    }

    private HopperForward hopperForward = HopperForward.parse(System.getProperty("grpo4j.attentionHopperForward", "wgmma"),
            "-Dgrpo4j.attentionHopperForward");

    /**
     * The Hopper forward kernel (with {@link #setWgmmaAttention}; elsewhere nothing changes): {@link HopperForward#WGMMA}
     * by default until a GPU run has timed the others. With a TMA kernel, where the driver gives no tensor map encoder,
     * attention fails with a CudaException (cudaErrorNotSupported); a call of fewer than 128 tokens in all runs the
     * wgmma kernel. Also {@code -Dgrpo4j.attentionHopperForward=wgmma|tma|tma-ping-pong|tma-persistent|tma-ping-pong-persistent}.
     */
    public void setHopperForward(HopperForward f) { this.hopperForward = java.util.Objects.requireNonNull(f, "hopperForward"); }

    public HopperForward hopperForward() { return hopperForward; }

    /**
     * Runs {@code body} with the attention dQ mode {@code dq} and the Hopper kernels {@code wgmma} (as
     * {@link #setAttentionDq} and {@link #setWgmmaAttention}), then puts this backend's own settings back: the trainer
     * runs its steps so, from its config's attention_dq and attention_kernels.
     */
    public <T> T withAttention(AttentionDq dq, boolean wgmma, java.util.function.Supplier<T> body) {
        AttentionDq dqBefore = attentionDq;
        boolean wgmmaBefore = wgmmaAttention;
        setAttentionDq(dq);
        wgmmaAttention = wgmma;
        try {
            return body.get();
        } finally {
            attentionDq = dqBefore;
            wgmmaAttention = wgmmaBefore;
        }
    }

    /**
     * Which kernels attentionBackward runs on the tensor-core path. All give the same bits in deterministic mode; the
     * choice exists to time one against the other (the benchmark's {@code [64-row]} and {@code [wide]} rows).
     */
    public enum AttentionBackwardKernels {
        /** The wide kernels (128 keys or query rows a block, 8 warps) at head dim 128 where the device's shared memory
         *  allows them, the 64-row kernels (three blocks of 4 warps an SM) at head dim 64. */
        DEFAULT(0),
        /** The 64-row kernels at both head dims. */
        NARROW(2),
        /** The wide kernels at both head dims, where the shared memory allows. */
        WIDE(4);

        final int bits;

        AttentionBackwardKernels(int bits) { this.bits = bits; }
    }

    private AttentionBackwardKernels attentionBackwardKernels = kernelsProperty();

    private static AttentionBackwardKernels kernelsProperty() {
        String v = System.getProperty("grpo4j.attentionBackwardKernels", "default");
        try {
            return AttentionBackwardKernels.valueOf(v.trim().toUpperCase(java.util.Locale.ROOT));
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("-Dgrpo4j.attentionBackwardKernels: \"" + v + "\" is not one of default, narrow, wide");
        }
    }

    /** Also {@code -Dgrpo4j.attentionBackwardKernels=default|narrow|wide}. */
    public void setAttentionBackwardKernels(AttentionBackwardKernels k) {
        this.attentionBackwardKernels = java.util.Objects.requireNonNull(k, "attention backward kernels");
    }

    public AttentionBackwardKernels attentionBackwardKernels() { return attentionBackwardKernels; }

    /**
     * The shared memory the generic attention kernels (every head dim but the tensor-core path's bf16 64 and 128) give
     * a block without opting in: each warp keeps its row's vectors there, fp32 and float64 ones of the head dim, and a
     * block shrinks to one warp before it gives up (cuda/attention.cu gen_warps, cuda/decode.cu).
     */
    static final int GENERIC_ATTENTION_SMEM = 48 * 1024;
    /** attention and decodeAttention: one fp32 and one float64 vector a warp, 12 bytes per head-dim element: 4096. */
    static final int MAX_GENERIC_HEAD_DIM = GENERIC_ATTENTION_SMEM / (4 + 8);
    /**
     * attentionBackward: its dK/dV kernel holds two fp32 and two float64 vectors a warp, 24 bytes per element: 2048
     * (its dQ kernel, 16 bytes, would take 3072 and runs first: above 2048 it used to write dq, then fail).
     */
    static final int MAX_GENERIC_HEAD_DIM_BACKWARD = GENERIC_ATTENTION_SMEM / (2 * 4 + 2 * 8);

    /** The largest head dim the rope kernel takes (a token's cos/sin, 4 bytes an element, in 48 KiB of shared memory). */
    static final int MAX_ROPE_HEAD_DIM = 12288;

    /** A CUDA grid's y (and z) dimension: the attention kernels put heads there, RMSNorm's backward columns. */
    static final int GRID_Y_MAX = 65535;

    /**
     * Refuses head counts past a grid's y dimension, and more (token, head) rows than the row kernels' grids count,
     * before any kernel of the op runs.
     */
    private static void checkHeads(String op, int n, int hq, int hkv, int b) {
        Check.check(hq <= GRID_Y_MAX && hkv <= GRID_Y_MAX, op, hq + " query and " + hkv + " kv heads: the CUDA backend's attention"
                + " kernels take at most " + GRID_Y_MAX + " of each (a grid's y dimension)");
        // (tokens and sequences are counted in ints that step up to a tile or a block past the last one)
        countable(op, "tokens", n);
        countable(op, "tokens x query heads", (long) n * hq);
        countable(op, "sequences (cuSeqlens entries - 1)", b);
    }

    /** Refuses a head dim the generic kernels cannot hold, before any kernel of the op runs (docs/ops.md). */
    private static void checkHeadDim(String op, int d, int max) {
        Check.check(d <= max, op, "head dim " + d + " exceeds " + max + ", the most the CUDA backend's generic attention kernels hold"
                + " (a warp's vectors of " + GENERIC_ATTENTION_SMEM / max + " bytes per element in 48 KiB of shared memory)");
    }

    @Override
    void attentionImpl(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor cuSeqlens, float scale) {
        int n = q.dim(0), hq = q.dim(1), d = q.dim(2), hkv = k.dim(1), b = cuSeqlens.dim(0) - 1;
        checkHeadDim(Ops.ATTENTION, d, MAX_GENERIC_HEAD_DIM);
        checkHeads(Ops.ATTENTION, n, hq, hkv, b);
        long[] bytes = new long[1];
        ok(CudaNative.g4_attention_workspace(n, b, hq, d, 0, 1, bytes), "attention workspace");
        ok(CudaNative.g4_attention(dt(q), addr(out), addr(lse), addr(q), addr(k), addr(v), addr(cuSeqlens), n, b, hq, hkv, d,
                scale, wgmmaAttention ? hopperForward.modeBits : 0, scratch(bytes[0]), bytes[0], addr(flag), opCode(Ops.ATTENTION),
                stream),
                "attention kernels");
    }

    @Override
    void attentionBackwardImpl(Tensor dq, Tensor dk, Tensor dv, Tensor dOut, Tensor q, Tensor k, Tensor v, Tensor out,
                               Tensor lse, Tensor cuSeqlens, float scale) {
        int n = q.dim(0), hq = q.dim(1), d = q.dim(2), hkv = k.dim(1), b = cuSeqlens.dim(0) - 1;
        checkHeadDim(Ops.ATTENTION_BACKWARD, d, MAX_GENERIC_HEAD_DIM_BACKWARD);
        checkHeads(Ops.ATTENTION_BACKWARD, n, hq, hkv, b);
        int det = attentionDq.bits | attentionBackwardKernels.bits | (wgmmaAttention ? 16 : 0);  // g4_attention_backward's mode bits
        long[] bytes = new long[1];
        ok(CudaNative.g4_attention_workspace(n, b, hq, d, 1, det, bytes), "attentionBackward workspace");
        ok(CudaNative.g4_attention_backward(dt(q), addr(dq), addr(dk), addr(dv), addr(dOut), addr(q), addr(k), addr(v),
                addr(out), addr(lse), addr(cuSeqlens), n, b, hq, hkv, d, scale, det, scratch(bytes[0]), bytes[0], addr(flag),
                opCode(Ops.ATTENTION_BACKWARD), stream), "attentionBackward kernels");
    }

    @Override
    void decodeAttentionImpl(Tensor out, Tensor q, Tensor kCache, Tensor vCache, Tensor blockTables, Tensor contextLens,
                             Tensor prefixGroups, float scale) {
        int b = q.dim(0), hq = q.dim(1), d = q.dim(2), numBlocks = kCache.dim(0), bs = kCache.dim(1), hkv = kCache.dim(2);
        int maxBlocks = blockTables.dim(1), sms = props.smCount();
        checkHeadDim(Ops.DECODE_ATTENTION, d, MAX_GENERIC_HEAD_DIM);
        // the kernels count a sequence's keys (and report its bound, maxBlocks x blockSize) in an int
        countable(Ops.DECODE_ATTENTION, "the keys a table row can hold, blockTables.dim(1) " + maxBlocks + " x blockSize " + bs,
                (long) maxBlocks * bs);
        if (b == 0 || hq == 0 || d == 0) return; // nothing to write (and no split plan for zero blocks)
        int groups = prefixGroups == null ? 0 : prefixGroups.dim(0);
        long[] bytes = new long[1];
        ok(CudaNative.g4_decode_attention_workspace(b, hq, hkv, d, maxBlocks, bs, sms, groups, bytes),
                "decodeAttention workspace");
        long ws = bytes[0] > 0 ? scratch(bytes[0]) : 0;
        ok(CudaNative.g4_decode_attention(dt(q), addr(out), addr(q), addr(kCache), addr(vCache), addr(blockTables),
                addr(contextLens), groups > 0 ? addr(prefixGroups) : 0, groups, b, hq, hkv, d, numBlocks, bs, maxBlocks,
                scale, sms, ws, bytes[0], addr(flag), opCode(Ops.DECODE_ATTENTION), stream), "decodeAttention kernels");
    }

    /**
     * The message of an attention kernel's report (flag word = op | kind << 8 | extra << 12, cuda/attention.cuh
     * AttentionError), in the CPU backend's words.
     */
    static String attentionFlagMessage(int[] f) {
        int code = f[0] & 0xFF, kind = (f[0] >>> 8) & 0xF, extra = f[0] >>> 12;
        String op = code >= 1 && code <= Ops.ALL.size() ? Ops.ALL.get(code - 1) : "op #" + code;
        String what = switch (kind) {
            case 1 -> "cuSeqlens[0] must be 0, got " + f[2];
            case 2 -> "cuSeqlens[" + f[1] + "] = " + f[2] + " must equal the token count " + f[3];
            case 3 -> "cuSeqlens must be non-decreasing, but cuSeqlens[" + f[1] + "] = " + f[2] + " < cuSeqlens["
                    + (f[1] - 1) + "] = " + f[3];
            case 4 -> "contextLens[" + f[1] + "] = " + f[2] + " is outside [1, " + f[3] + "]";
            case 5 -> "blockTables[" + f[1] + ", " + extra + "] = " + f[2] + " is outside [0, " + f[3] + ")";
            case 6 -> prefixGroupMessage(f[1], extra & 3, extra >>> 2, f[2], f[3]);
            case 7 -> "dq element " + (f[1] & 0xFFFFFFFFL) + " (mod 2^32): a dS K contribution reached 2^" + f[3]
                    + ", 4 times the fixed-point dQ's bound (the lse passed is not the forward's log-sum-exp of these q and k,"
                    + " so P's rows do not sum to 1); dq is not valid; dk and dv were written (attention dq mode FIXED)";
            default -> "index error " + kind + " at " + f[1] + " (value " + f[2] + ", limit " + f[3] + ")";
        };
        if (kind == 7) return op + ": " + what + " (found by the kernel)";
        String effect = kind <= 3 ? "nothing was written" : kind == 5 ? "that sequence's output (and, for a prefix group's first "
                + "sequence, its group's) was not written" : kind != 6 ? "that sequence's output was not written"
                : (extra & 3) == 3 ? "that sequence's output was not written"
                : (extra & 3) == 0 || f[3] == 0 ? "the row names no sequence: every output was written"
                : "the outputs of the row's sequences were not written";
        return op + ": " + what + " (found by the kernel; " + effect + ")";
    }

    // ---- fused LM head, GRPO loss, sampling (issue 13; cuda/lmhead.cu, cuda/sampling.cu) -----------------------------

    /** The ops whose GEMMs run on cuBLASLt: implemented only where cuBLAS loads. */
    static final Set<String> LM_HEAD_OPS = Set.of(Ops.TOKEN_LOGPROBS, Ops.TOKEN_LOGPROBS_BACKWARD, Ops.GRPO_LOSS);

    /** Token rows per block and vocabulary columns per chunk of the fused LM head (docs/kernels.md). */
    static final int LM_TOKEN_BLOCK = 2048, LM_VOCAB_CHUNK = 4096;
    private int lmTokenBlock = lmBlocksProperty(System.getProperty(LM_BLOCKS_PROPERTY))[0];
    private int lmVocabChunk = lmBlocksProperty(System.getProperty(LM_BLOCKS_PROPERTY))[1];

    /**
     * {@code -Dgrpo4j.lmheadBlocks=TOKENS,VOCAB}: the fused LM head's token rows per block and vocabulary columns per
     * chunk, for trying other sizes on a GPU (extra memory grows with their product: {@link #lmHeadBytes}). Larger
     * token blocks mean fewer dLmHead GEMMs, each reading and writing its fp32 [chunk, H] slice of dLmHead once.
     */
    static final String LM_BLOCKS_PROPERTY = "grpo4j.lmheadBlocks";

    /** The blocks a {@link #LM_BLOCKS_PROPERTY} value asks for (null: the defaults); a clear error naming it otherwise. */
    static int[] lmBlocksProperty(String v) {
        if (v == null) return new int[] {LM_TOKEN_BLOCK, LM_VOCAB_CHUNK};
        String[] p = v.split(",", -1);
        try {
            if (p.length == 2) {
                int t = Integer.parseInt(p[0].trim()), c = Integer.parseInt(p[1].trim());
                if (t >= 1 && c >= 1 && (long) t * c <= Integer.MAX_VALUE) return new int[] {t, c};
            }
        } catch (NumberFormatException e) {
            // the message below
        }
        throw new IllegalArgumentException("-D" + LM_BLOCKS_PROPERTY + " must be TOKENS,VOCAB (two positive integers, their product at most 2^31 - 1: an 8 GiB fp32 chunk; e.g. "
                + LM_TOKEN_BLOCK + "," + LM_VOCAB_CHUNK + "), got \"" + v + "\"");
    }
    /**
     * Which loops the fused LM head's backward runs (docs/kernels.md "Fused LM head"). {@code ROWS}: per token block, one
     * GEMM writes the block's logits over the whole vocabulary (fp32, kept: at most {@link #setLmHeadRowsBytes}'s bound with the
     * per-token state), and the backward reads them instead of computing them again: 6·N·H·V of GEMMs for
     * tokenLogprobsBackward and grpoLoss where the chunk loops spend 8. It needs dz in place: fp32 operands, or bf16
     * with dz rounded once ({@link #setLmHeadBf16GradSplit}(false), the trainer's default); the split's hi + lo do not
     * fit. {@code CHUNKS}: the (token block, vocabulary chunk) loops. {@code AUTO} (the default): rows wherever they
     * apply and a block of at least 64 rows fits. Also {@code -Dgrpo4j.lmheadPath=auto|rows|chunks}.
     */
    public enum LmHeadPath { AUTO, ROWS, CHUNKS }

    static final String LM_PATH_PROPERTY = "grpo4j.lmheadPath";

    /**
     * The row path's default bound on its extra memory: a block's fp32 logits plus the per-token state (the issue's 256
     * MiB at N = 8192, V = 128,256: blocks of 512 tokens). {@link #setLmHeadRowsBytes} raises it: larger blocks mean
     * fewer dLmHead GEMMs, each reading and writing the whole fp32 [V, H] gradient (16 at N = 8192 with 512-token blocks,
     * 4 with 2048), and a dHidden GEMM with more rows. The trainer's lm_head_scratch_mib sets it for its own calls.
     */
    static final long LM_ROWS_BYTES = 256L << 20;

    static final String LM_ROWS_PROPERTY = "grpo4j.lmheadRowsMib";

    /** The bound a {@link #LM_ROWS_PROPERTY} value asks for (null: the default); a clear error naming it otherwise. */
    static long lmRowsProperty(String v) {
        if (v == null) return LM_ROWS_BYTES;
        try {
            long mib = Long.parseLong(v.trim());
            if (mib >= 0 && mib <= LM_ROWS_MAX_MIB) return mib << 20;
        } catch (NumberFormatException e) {
            // the message below
        }
        throw new IllegalArgumentException("-D" + LM_ROWS_PROPERTY + " must be a whole number of MiB in [0, " + LM_ROWS_MAX_MIB + "], got \"" + v + "\"");
    }

    /** The largest row-path bound (MiB): a block's logits stay one tensor of at most 2^31 - 1 floats. */
    public static final long LM_ROWS_MAX_MIB = 8191;

    private long lmRowsBytes = lmRowsProperty(System.getProperty(LM_ROWS_PROPERTY));

    /**
     * Sets the row path's bound on its extra memory in bytes (default {@link #LM_ROWS_BYTES}; also {@code
     * -Dgrpo4j.lmheadRowsMib}). Where a block of at least 64 rows does not fit, AUTO takes the chunk loops.
     */
    public void setLmHeadRowsBytes(long bytes) {
        if (bytes < 0 || bytes > LM_ROWS_MAX_MIB << 20)
            throw new IllegalArgumentException("LM-head row bound must be in [0, " + LM_ROWS_MAX_MIB + "] MiB, got " + bytes + " bytes");
        this.lmRowsBytes = bytes;
    }

    public long lmHeadRowsBytes() { return lmRowsBytes; }

    /** Runs {@code body} with the row path's bound {@code bytes} ({@link #setLmHeadRowsBytes}), then puts it back. */
    public <T> T withLmHeadRowsBytes(long bytes, java.util.function.Supplier<T> body) {
        long before = lmRowsBytes;
        setLmHeadRowsBytes(bytes);
        try {
            return body.get();
        } finally {
            lmRowsBytes = before;
        }
    }

    /** Per-token state of the fused LM head (bytes): m, zt fp32; s, lse, logp, g, the GRPO loss term f64. */
    static final int LM_STATE_BYTES = 48;

    /** The largest vocabulary chunk the row kernels walk (their threads keep a chunk in registers: 256 x 16). */
    static final int LM_ROWS_MAX_CHUNK = 4096;

    static LmHeadPath lmPathProperty(String v) {
        if (v == null) return LmHeadPath.AUTO;
        for (LmHeadPath p : LmHeadPath.values()) if (p.name().equalsIgnoreCase(v.trim())) return p;
        throw new IllegalArgumentException("-D" + LM_PATH_PROPERTY + " must be auto, rows or chunks, got \"" + v + "\"");
    }

    private LmHeadPath lmPath = lmPathProperty(System.getProperty(LM_PATH_PROPERTY));

    /** Sets which loops the LM head's backward runs ({@link LmHeadPath}). */
    public void setLmHeadPath(LmHeadPath path) { this.lmPath = java.util.Objects.requireNonNull(path, "path"); }

    public LmHeadPath lmHeadPath() { return lmPath; }

    /**
     * Token rows per block of the row path for a backward over n tokens of a vocabulary of v (0: the chunk loops run):
     * min(n, tokenBlock) rows, fewer when their fp32 logits and the state of n tokens would pass the default bound
     * {@link #LM_ROWS_BYTES} (or the bound given)
     * (then a multiple of 64, for the GEMMs' tiles); under 64 rows that fit, AUTO takes the chunk loops and ROWS the
     * rows that fit.
     */
    static int lmRowBlock(int n, int v, DType dtype, boolean split, LmHeadPath path, int tokenBlock, int vocabChunk) {
        return lmRowBlock(n, v, dtype, split, path, tokenBlock, vocabChunk, LM_ROWS_BYTES);
    }

    /** As above, within {@code rowsBytes} instead of the default bound. */
    static int lmRowBlock(int n, int v, DType dtype, boolean split, LmHeadPath path, int tokenBlock, int vocabChunk, long rowsBytes) {
        if (path == LmHeadPath.CHUNKS || (dtype == DType.BF16 && split) || Math.min(v, vocabChunk) > LM_ROWS_MAX_CHUNK || v == 0)
            return 0;
        long fit = Math.max(0, rowsBytes - (long) LM_STATE_BYTES * n) / (4L * v), want = Math.min(n, tokenBlock);
        if (fit >= want) return (int) want;
        if (fit >= 64) return (int) (fit / 64 * 64);
        return path == LmHeadPath.ROWS && fit >= 1 ? (int) fit : 0;
    }

    private Tensor lmZ, lmHiLo, lmAcc, lmTok;   // grown on demand, freed by close()
    private boolean lmZRows;                     // lmZ was last grown for the row path's block of logits
    private int sampleMaxVocab;
    private boolean lmSplitGrad = splitGradProperty();

    private static boolean splitGradProperty() {
        String v = System.getProperty("grpo4j.lmheadBf16Grad", "split");
        if (!v.equals("split") && !v.equals("single"))
            throw new IllegalArgumentException("-Dgrpo4j.lmheadBf16Grad must be split or single, got \"" + v + "\"");
        return v.equals("split");
    }

    /**
     * How the bf16 backward feeds dz to its bf16 GEMMs: split (the default) as hi + lo, two GEMMs each, ~16 bits of dz
     * as the bf16 contract asks (fp32 math on the widened inputs); single: hi alone, one GEMM each (dz rounded to bf16
     * as torch's autograd does through a .float() cast): 6NHV instead of 10NHV backward FLOPs, dz to 8 bits. Also
     * {@code -Dgrpo4j.lmheadBf16Grad=single} (the backend's default). fp32 operands are not affected. The trainer sets
     * the mode for each of its own LM-head calls from the config's lm_head_grad and puts this setting back after.
     */
    public void setLmHeadBf16GradSplit(boolean split) { this.lmSplitGrad = split; }

    /** Whether the bf16 backward splits dz into hi + lo ({@link #setLmHeadBf16GradSplit}). */
    public boolean lmHeadBf16GradSplit() { return lmSplitGrad; }

    /** Runs {@code body} with the dz mode {@code split} ({@link #setLmHeadBf16GradSplit}), then puts the mode back. */
    public <T> T withLmHeadBf16GradSplit(boolean split, java.util.function.Supplier<T> body) {
        boolean before = lmSplitGrad;
        lmSplitGrad = split;
        try {
            return body.get();
        } finally {
            lmSplitGrad = before;
        }
    }

    /** Smaller blocks and chunks, so that tests reach every path of the chunk loops at small sizes. */
    void setLmHeadBlocks(int tokenBlock, int vocabChunk) {
        if (tokenBlock < 1 || vocabChunk < 1 || (long) tokenBlock * vocabChunk > Integer.MAX_VALUE)
            throw new IllegalArgumentException("blocks must be >= 1, their product at most 2^31 - 1");
        lmTokenBlock = tokenBlock;
        lmVocabChunk = vocabChunk;
    }

    /**
     * Extra device memory of the fused LM head (bytes) for n tokens, hidden size h and a vocabulary of v, on the path
     * {@link #lmRowBlock} picks: the row path holds a block's fp32 logits [rows, v] (dz in place); the chunk loops one
     * chunk of logits (fp32 [tb, vc], tb = min(n, tokenBlock), vc = min(v, vocabChunk)) and, for a bf16 backward, the
     * chunk's gradient as a bf16 hi/lo pair (2 x [tb, vc]) and the fp32 dHidden accumulator [tb, h]. Both: 48 bytes of
     * state per token. The 32 MiB cuBLASLt workspace is shared with matmul and not counted.
     */
    static long lmHeadBytes(int n, int h, int v, DType dtype, boolean backward, boolean split, LmHeadPath path,
                            int tokenBlock, int vocabChunk) {
        return lmHeadBytes(n, h, v, dtype, backward, split, path, tokenBlock, vocabChunk, LM_ROWS_BYTES);
    }

    /** As above, with the row path within {@code rowsBytes}. */
    static long lmHeadBytes(int n, int h, int v, DType dtype, boolean backward, boolean split, LmHeadPath path,
                            int tokenBlock, int vocabChunk, long rowsBytes) {
        int rows = backward ? lmRowBlock(n, v, dtype, split, path, tokenBlock, vocabChunk, rowsBytes) : 0;
        if (rows > 0) return (long) rows * v * 4 + (long) LM_STATE_BYTES * n;
        long tb = Math.min(n, tokenBlock), vc = Math.min(v, vocabChunk), bytes = tb * vc * 4 + (long) LM_STATE_BYTES * n;
        if (backward && dtype == DType.BF16) bytes += tb * vc * 4 + tb * h * 4;
        return bytes;
    }

    /**
     * t if it holds numel, else a new buffer (t retired). A t that a failed growth left closed (the allocation threw
     * after the retirement, and the field kept it) counts as none.
     */
    private Tensor grow(Tensor t, DType d, long numel) {
        boolean retired = t != null && retiredScratch.contains(t); // (a growth that failed after retiring it)
        if (t != null && t.isLive() && !retired && t.numel() >= numel) return t;
        if (t != null && t.isLive() && !retired) retire(t);
        return flat(d, Math.max(1, numel));
    }

    /**
     * A new buffer of at least numel elements (the op buffers take its address or views of it): one row up to 2^31 - 1
     * elements (a shape's dims are ints), else rows of 2^20 (a workspace past 8 GiB of fp32 is rare but legal).
     */
    private Tensor flat(DType d, long numel) {
        return empty(d, flatShape(numel));
    }

    /** {@link #flat}'s shape for numel elements. */
    static int[] flatShape(long numel) {
        if (numel < 0) throw new IllegalArgumentException("a buffer of " + numel + " elements");
        if (numel <= Integer.MAX_VALUE) return new int[] {(int) numel};
        long rows = (numel + (1 << 20) - 1) >> 20;
        if (rows > Integer.MAX_VALUE) throw new IllegalArgumentException("a device buffer of " + numel + " elements is past what a tensor holds");
        return new int[] {(int) rows, 1 << 20};
    }

    private void lmBuffers(int n, int h, int v, boolean bf16Backward) {
        long tb = Math.min(n, lmTokenBlock), vc = Math.min(v, lmVocabChunk);
        // a row path's block of logits is far larger than any chunk: give it back before the split's buffers come,
        // so that the two paths' buffers together never pass the bound one of them may hold (a backend that
        // switches dz modes; the forward alone adds nothing to it)
        if (bf16Backward && lmZRows && lmZ != null) lmZ = shrink(lmZ);
        lmZRows = false;
        lmZ = grow(lmZ, DType.FP32, tb * vc);
        lmState(n);
        if (bf16Backward) {
            lmHiLo = grow(lmHiLo, DType.BF16, 2 * tb * vc);
            lmAcc = grow(lmAcc, DType.FP32, tb * h);
        }
    }

    /** Frees t (after the queued work that uses it) and returns null. */
    private Tensor shrink(Tensor t) {
        if (t.isLive() && !retiredScratch.contains(t)) retire(t);
        return null;
    }

    private void lmState(int n) {
        lmTok = grow(lmTok, DType.FP32, (long) LM_STATE_BYTES / 4 * n);
    }

    private void closeLmHead() {
        for (Tensor t : new Tensor[] {lmZ, lmHiLo, lmAcc, lmTok}) if (t != null) t.close();
        lmZ = lmHiLo = lmAcc = lmTok = null;
    }

    /** Bytes the fused LM head's buffers hold now (0 after {@link #releaseLmHeadBuffers}). */
    public long lmHeadBufferBytes() {
        long b = 0;
        for (Tensor t : new Tensor[] {lmZ, lmHiLo, lmAcc, lmTok}) if (t != null && t.isLive()) b += t.numel() * t.dtype().bytes();
        return b;
    }

    /**
     * Frees the fused LM head's buffers (after the queued work that uses them); the next LM-head call allocates what it
     * needs again. The kernel benchmark calls it before it measures an LM-head row's extra memory, which the buffers
     * an earlier row left would otherwise hide.
     */
    public void releaseLmHeadBuffers() {
        if (lmZ != null) lmZ = shrink(lmZ);
        if (lmHiLo != null) lmHiLo = shrink(lmHiLo);
        if (lmAcc != null) lmAcc = shrink(lmAcc);
        if (lmTok != null) lmTok = shrink(lmTok);
    }

    /** Per-token state in lmTok (bytes): m fp32, zt fp32, s f64, lse f64, logp f64, g f64, term f64. */
    private long lmState(int n, int slot) {
        long[] at = {0, 4L * n, 8L * n, 16L * n, 24L * n, 32L * n, 40L * n};
        return addr(lmTok) + at[slot];
    }

    private static final int M = 0, ZT = 1, S = 2, LSE = 3, LOGP = 4, G = 5, TERM = 6;

    private static void nonEmptyVocabulary(String op, Tensor hidden, Tensor lmHead) {
        if (lmHead.dim(0) == 0 && hidden.dim(0) > 0)
            throw new IllegalArgumentException(op + ": lmHead " + lmHead.shapeString() + " has an empty vocabulary: no target is valid");
    }

    /** The forward over every (token block, vocabulary chunk): lse (and log-probs, f64 and/or fp32, when non-zero). */
    private void lmForward(Tensor hidden, Tensor lmHead, Tensor targets, float temperature, String op, long logpD, long logpF) {
        int n = hidden.dim(0), h = hidden.dim(1), v = lmHead.dim(0);
        float invT = (float) (1.0 / (temperature + 1e-7)); // CpuBackend's 1 / T' in float64, rounded once
        int tb = Math.min(n, lmTokenBlock), vc = Math.min(v, lmVocabChunk), code = opCode(op);
        long tg = addr(targets);
        for (int t0 = 0; t0 < n; t0 += tb) {
            int rows = Math.min(tb, n - t0);
            Tensor hb = hidden.view((long) t0 * h, rows, h);
            for (int v0 = 0; v0 < v; v0 += vc) {
                int cols = Math.min(vc, v - v0);
                Tensor z = lmZ.view(0, rows, cols);
                matmulImpl(z, hb, false, lmHead.view((long) v0 * h, cols, h), true, invT, 0f, 1, rows, cols, h);
                ok(CudaNative.g4_lmhead_lse(addr(z), rows, cols, v0, v, tg + 4L * t0, t0, lmState(n, M) + 4L * t0,
                        lmState(n, S) + 8L * t0, lmState(n, ZT) + 4L * t0, v0 == 0 ? 1 : 0, v0 + cols >= v ? 1 : 0,
                        lmState(n, LSE) + 8L * t0, logpD == 0 ? 0 : logpD + 8L * t0, logpF == 0 ? 0 : logpF + 4L * t0,
                        addr(flag), code, stream), op + " lse kernel");
            }
        }
    }

    /**
     * The backward, after {@link #lmForward} left lse in the state: per (token block, chunk) the logits again, dz (in
     * place, or as bf16 hi/lo), then dHidden (+)= dz W_chunk / T' (overwritten at the first chunk; through the fp32
     * accumulator for bf16) and dLmHead[chunk] += dz^T h / T'. g: the f64 upstream gradient per token (device).
     */
    private void lmBackward(Tensor dHidden, Tensor dLmHead, Tensor hidden, Tensor lmHead, Tensor targets, float temperature, long g) {
        int n = hidden.dim(0), h = hidden.dim(1), v = lmHead.dim(0);
        boolean bf16 = hidden.dtype() == DType.BF16;
        float invT = (float) (1.0 / (temperature + 1e-7));
        int tb = Math.min(n, lmTokenBlock), vc = Math.min(v, lmVocabChunk);
        long tg = addr(targets);
        for (int t0 = 0; t0 < n; t0 += tb) {
            int rows = Math.min(tb, n - t0);
            Tensor hb = hidden.view((long) t0 * h, rows, h);
            Tensor dh = bf16 ? lmAcc.view(0, rows, h) : dHidden.view((long) t0 * h, rows, h);
            for (int v0 = 0; v0 < v; v0 += vc) {
                int cols = Math.min(vc, v - v0);
                Tensor z = lmZ.view(0, rows, cols), w = lmHead.view((long) v0 * h, cols, h), dw = dLmHead.view((long) v0 * h, cols, h);
                matmulImpl(z, hb, false, w, true, invT, 0f, 1, rows, cols, h);
                float beta = v0 == 0 ? 0f : 1f;
                if (bf16) {
                    Tensor hi = lmHiLo.view(0, rows, cols), lo = lmHiLo.view((long) rows * cols, rows, cols);
                    ok(CudaNative.g4_lmhead_dlogits(addr(z), rows, cols, v0, v, tg + 4L * t0, lmState(n, LSE) + 8L * t0,
                            g + 8L * t0, addr(hi), lmSplitGrad ? addr(lo) : 0, stream), "lm-head dlogits kernel"); // single: hi alone
                    matmulImpl(dh, hi, false, w, false, invT, beta, 1, rows, h, cols);
                    if (lmSplitGrad) matmulImpl(dh, lo, false, w, false, invT, 1f, 1, rows, h, cols);
                    matmulImpl(dw, hi, true, hb, false, invT, 1f, 1, cols, h, rows);
                    if (lmSplitGrad) matmulImpl(dw, lo, true, hb, false, invT, 1f, 1, cols, h, rows);
                } else {
                    ok(CudaNative.g4_lmhead_dlogits(addr(z), rows, cols, v0, v, tg + 4L * t0, lmState(n, LSE) + 8L * t0,
                            g + 8L * t0, 0, 0, stream), "lm-head dlogits kernel");
                    matmulImpl(dh, z, false, w, false, invT, beta, 1, rows, h, cols);
                    matmulImpl(dw, z, true, hb, false, invT, 1f, 1, cols, h, rows);
                }
            }
            if (bf16 && (long) rows * h > 0)
                ok(CudaNative.g4_cast(CudaNative.BF16, addr(dHidden) + 2L * t0 * h, CudaNative.F32, addr(dh), (long) rows * h, stream),
                        "cast kernel (dHidden)");
        }
    }

    /**
     * The row path's forward and backward over token blocks of {@code rows} (from {@link #lmRowBlock}): per block one
     * GEMM writes its logits z = h W^T / T' over the whole vocabulary into lmZ ([rows, V] fp32), g4_lmhead_lse_rows
     * walks each row's chunks (lse and log-probs bit for bit those of {@link #lmForward} on the same logits), then
     * {@code upstream} writes the block's f64 upstream gradient into the state's G slot (grpoLoss's per-token math; a
     * no-op when it is already there), g4_lmhead_dlogits_rows turns the logits into dz in place (fp32, or bf16 packed at
     * the start of each row: a bf16 [rows, V] matrix with row stride 2V), and two GEMMs read it: dHidden = dz W / T'
     * (overwritten, rounded once to its dtype) and dLmHead += dz^T h / T'. The logits are computed once where the chunk
     * loops compute them twice; dLmHead is read and written once per block (K = rows) instead of once per 2048 tokens.
     */
    private void lmRows(int rows, Tensor dHidden, Tensor dLmHead, Tensor hidden, Tensor lmHead, Tensor targets,
                        float temperature, String op, long logpD, java.util.function.BiConsumer<Integer, Integer> upstream) {
        int n = hidden.dim(0), h = hidden.dim(1), v = lmHead.dim(0), vc = Math.min(v, lmVocabChunk), code = opCode(op);
        boolean bf16 = hidden.dtype() == DType.BF16;
        float invT = (float) (1.0 / (temperature + 1e-7)); // CpuBackend's 1 / T' in float64, rounded once
        if (lmHiLo != null) lmHiLo = shrink(lmHiLo); // the chunk loops' buffers: not needed here, and with them the
        if (lmAcc != null) lmAcc = shrink(lmAcc);     // row path's block would pass the bound
        lmZ = grow(lmZ, DType.FP32, (long) rows * v);
        lmZRows = true;
        long tg = addr(targets);
        if (gemm == null) gemm = new CublasGemm(this);
        for (int t0 = 0; t0 < n; t0 += rows) {
            int r = Math.min(rows, n - t0);
            Tensor hb = hidden.view((long) t0 * h, r, h), z = lmZ.view(0, r, v);
            matmulImpl(z, hb, false, lmHead, true, invT, 0f, 1, r, v, h);
            ok(CudaNative.g4_lmhead_lse_rows(addr(z), r, v, v, vc, tg + 4L * t0, t0, lmState(n, LSE) + 8L * t0,
                    logpD == 0 ? 0 : logpD + 8L * t0, 0, addr(flag), code, stream), op + " lse kernel (rows)");
            upstream.accept(t0, r);
            ok(CudaNative.g4_lmhead_dlogits_rows(addr(z), r, v, v, vc, tg + 4L * t0, lmState(n, LSE) + 8L * t0,
                    lmState(n, G) + 8L * t0, bf16 ? 1 : 0, stream), op + " dlogits kernel (rows)");
            DType dzType = bf16 ? DType.BF16 : DType.FP32;
            long lda = bf16 ? 2L * v : v;
            if (h > 0) {
                gemm.matmulStridedA(dHidden.view((long) t0 * h, r, h), addr(z), dzType, lda, false, lmHead, false, invT, 0f, r, h, v, tf32);
                gemm.matmulStridedA(dLmHead, addr(z), dzType, lda, true, hb, false, invT, 1f, v, h, r, tf32);
            }
        }
    }

    @Override
    void tokenLogprobsImpl(Tensor out, Tensor hidden, Tensor lmHead, Tensor targets, float temperature) {
        int n = hidden.dim(0);
        if (n == 0) return;
        nonEmptyVocabulary(Ops.TOKEN_LOGPROBS, hidden, lmHead);
        lmBuffers(n, hidden.dim(1), lmHead.dim(0), false);
        lmForward(hidden, lmHead, targets, temperature, Ops.TOKEN_LOGPROBS, 0, addr(out));
    }

    int lmTokenBlock() { return lmTokenBlock; }

    int lmVocabChunk() { return lmVocabChunk; }

    /** Token rows per block of the row path for this backward (0: the chunk loops). */
    private int lmRowBlock(Tensor hidden, Tensor lmHead) {
        return lmRowBlock(hidden.dim(0), lmHead.dim(0), hidden.dtype(), lmSplitGrad, lmPath, lmTokenBlock, lmVocabChunk, lmRowsBytes);
    }

    @Override
    void tokenLogprobsBackwardImpl(Tensor dHidden, Tensor dLmHead, Tensor dLogprobs, Tensor hidden, Tensor lmHead,
                                   Tensor targets, float temperature) {
        int n = hidden.dim(0);
        if (n == 0) return;
        nonEmptyVocabulary(Ops.TOKEN_LOGPROBS_BACKWARD, hidden, lmHead);
        int rows = lmRowBlock(hidden, lmHead);
        if (rows > 0) {
            lmState(n);
            ok(CudaNative.g4_f32_to_f64(lmState(n, G), addr(dLogprobs), n, stream), "f32_to_f64 kernel");
            lmRows(rows, dHidden, dLmHead, hidden, lmHead, targets, temperature, Ops.TOKEN_LOGPROBS_BACKWARD, 0, (t0, r) -> {});
            return;
        }
        lmBuffers(n, hidden.dim(1), lmHead.dim(0), hidden.dtype() == DType.BF16);
        lmForward(hidden, lmHead, targets, temperature, Ops.TOKEN_LOGPROBS_BACKWARD, 0, 0);
        ok(CudaNative.g4_f32_to_f64(lmState(n, G), addr(dLogprobs), n, stream), "f32_to_f64 kernel");
        lmBackward(dHidden, dLmHead, hidden, lmHead, targets, temperature, lmState(n, G));
    }

    @Override
    void grpoLossImpl(GrpoLossOutputs out, Tensor hidden, Tensor lmHead, Tensor targets, Tensor weights, Tensor advantages,
                      Tensor oldLogprobs, Tensor refLogprobs, GrpoLossParams p) {
        int n = hidden.dim(0), v = lmHead.dim(0);
        if (n == 0) {
            fillImpl(out.loss(), 0);
            return;
        }
        nonEmptyVocabulary(Ops.GRPO_LOSS, hidden, lmHead);
        countable(Ops.GRPO_LOSS, "tokens", n); // (the loss kernels' int token loops and grid: refused before any launch)
        // the per-token math of tokens [t0, t0 + r): outputs, the upstream gradient g and each token's loss term
        java.util.function.BiConsumer<Integer, Integer> terms = (t0, r) -> ok(CudaNative.g4_grpo_terms(
                lmState(n, LOGP) + 8L * t0, oldLogprobs == null ? 0 : addr(oldLogprobs) + 4L * t0, addr(refLogprobs) + 4L * t0, addr(advantages) + 4L * t0,
                addr(weights) + 4L * t0, addr(targets) + 4L * t0, v, r, p.epsLow(), p.epsHigh(), p.beta(), p.kl().ordinal(),
                addr(out.logprobs()) + 4L * t0, addr(out.ratio()) + 4L * t0, addr(out.clipped()) + 4L * t0, addr(out.kl()) + 4L * t0,
                lmState(n, G) + 8L * t0, lmState(n, TERM) + 8L * t0, stream), "grpo per-token kernel");
        int rows = lmRowBlock(hidden, lmHead);
        if (rows > 0) {
            lmState(n);
            lmRows(rows, out.dHidden(), out.dLmHead(), hidden, lmHead, targets, p.temperature(), Ops.GRPO_LOSS, lmState(n, LOGP), terms);
        } else {
            lmBuffers(n, hidden.dim(1), v, hidden.dtype() == DType.BF16);
            lmForward(hidden, lmHead, targets, p.temperature(), Ops.GRPO_LOSS, lmState(n, LOGP), 0);
            terms.accept(0, n);
            lmBackward(out.dHidden(), out.dLmHead(), hidden, lmHead, targets, p.temperature(), lmState(n, G));
        }
        // the loss after every block's terms: the same fixed order whichever path wrote them
        ok(CudaNative.g4_grpo_sum(lmState(n, TERM), addr(targets), v, n, addr(out.loss()), stream), "grpo loss kernel");
    }

    /** The largest vocabulary the CUDA sampler takes per row (its tile table lives in shared memory). */
    int sampleMaxVocab() {
        if (sampleMaxVocab == 0) {
            int[] v = new int[1];
            ok(CudaNative.g4_sample_max_vocab(v), "g4_sample_max_vocab");
            sampleMaxVocab = v[0];
        }
        return sampleMaxVocab;
    }

    @Override
    void sampleImpl(Tensor tokens, Tensor logprobs, Tensor logits, Tensor rngCounters, SamplingSpec spec) {
        int b = logits.dim(0);
        if (b == 0) return; // (no rows: nothing to refuse, as on the CPU)
        int v = sampleVocab(logits);
        ok(CudaNative.g4_sample(dt(logits), addr(tokens), addr(logprobs), addr(logits), addr(rngCounters), b, v,
                spec.temperature(), spec.topK(), spec.topP(), spec.seed(), stream), "sample kernel");
    }

    /** The logits' V, refused beyond what the CUDA sampler takes. */
    private int sampleVocab(Tensor logits) {
        int v = logits.dim(1);
        if (v > sampleMaxVocab())
            throw new IllegalArgumentException("sample: logits " + logits.shapeString() + " has V = " + v
                    + " tokens per row, more than the CUDA sampler takes (" + sampleMaxVocab() + ")");
        return v;
    }

    /**
     * Per-row specs: one launch for each group of rows sharing a spec (in the order each spec first appears), its
     * blocks mapped to the group's rows through an index list; one spec for every row is the plain launch.
     */
    @Override
    void sampleRowsImpl(Tensor tokens, Tensor logprobs, Tensor logits, Tensor rngCounters, SamplingSpec[] specs) {
        java.util.LinkedHashMap<SamplingSpec, java.util.List<Integer>> groups = new java.util.LinkedHashMap<>();
        for (int r = 0; r < specs.length; r++) groups.computeIfAbsent(specs[r], k -> new java.util.ArrayList<>()).add(r);
        if (groups.size() <= 1) {
            if (specs.length > 0) sampleImpl(tokens, logprobs, logits, rngCounters, specs[0]);
            return;
        }
        int v = sampleVocab(logits);
        int[] all = new int[specs.length]; // every group's rows, one after the other: one staged copy, no host wait
        int k = 0;
        for (java.util.List<Integer> rows : groups.values()) for (int r : rows) all[k++] = r;
        try (Tensor lists = empty(DType.INT32, all.length)) { // freed in stream order: the launches read it first
            copyFromHostAsync(lists, all);
            int first = 0;
            for (var g : groups.entrySet()) {
                int n = g.getValue().size();
                SamplingSpec spec = g.getKey();
                ok(CudaNative.g4_sample_rows(dt(logits), addr(tokens), addr(logprobs), addr(logits), addr(rngCounters), addr(lists) + 4L * first, n, v,
                        spec.temperature(), spec.topK(), spec.topP(), spec.seed(), stream), "sample kernel (" + n + " rows of one spec)");
                first += n;
            }
        }
    }

    // ---- NCCL (org.grpo4j.internal.dist.NcclCommunicator; issue 15) ---------------------------------------------------------

    /** The device address of tensor {@code t} of this backend, for NCCL calls on its memory. */
    public long deviceAddress(Tensor t) {
        Check.tensor("deviceAddress", this, "t", t);
        return addr(t);
    }
}
