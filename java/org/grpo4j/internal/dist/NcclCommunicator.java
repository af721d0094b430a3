package org.grpo4j.internal.dist;

import static org.bytedeco.cuda.global.cudart.cudaErrorNotReady;
import static org.bytedeco.cuda.global.cudart.cudaEventCreateWithFlags;
import static org.bytedeco.cuda.global.cudart.cudaEventDestroy;
import static org.bytedeco.cuda.global.cudart.cudaEventDisableTiming;
import static org.bytedeco.cuda.global.cudart.cudaEventQuery;
import static org.bytedeco.cuda.global.cudart.cudaEventRecord;
import static org.bytedeco.cuda.global.cudart.cudaEventSynchronize;
import static org.bytedeco.cuda.global.cudart.cudaGetDevice;
import static org.bytedeco.cuda.global.cudart.cudaGetErrorString;
import static org.bytedeco.cuda.global.cudart.cudaSetDevice;
import static org.bytedeco.cuda.global.cudart.cudaStreamCreateWithFlags;
import static org.bytedeco.cuda.global.cudart.cudaStreamDestroy;
import static org.bytedeco.cuda.global.cudart.cudaStreamNonBlocking;
import static org.bytedeco.cuda.global.cudart.cudaStreamQuery;
import static org.bytedeco.cuda.global.cudart.cudaStreamWaitEvent;
import static org.bytedeco.cuda.global.cudart.cudaSuccess;
import static org.bytedeco.cuda.global.nccl.*;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;
import java.util.concurrent.locks.ReentrantLock;
import org.bytedeco.cuda.cudart.CUevent_st;
import org.bytedeco.cuda.cudart.CUstream_st;
import org.bytedeco.cuda.nccl.ncclComm;
import org.bytedeco.cuda.nccl.ncclConfig_t;
import org.bytedeco.cuda.nccl.ncclUniqueId;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Pointer;
import org.grpo4j.internal.backend.CudaBackend;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.Tensor;

/**
 * One rank's NCCL communicator (the JavaCPP CUDA presets' NCCL), for a rank whose compute runs on a
 * {@link CudaBackend}.
 *
 * <ul>
 *   <li>Created on the rank's own thread (its device current) with {@code ncclCommInitRankConfig} from the unique id
 *       that rank 0's process made and the rendezvous store passed on; every local rank does this at once.</li>
 *   <li>Non-blocking (NCCL's {@code blocking = 0}): every NCCL call returns at once, {@code ncclInProgress} while NCCL
 *       finishes it in the background, and the state is polled with {@code ncclCommGetAsyncError}; so no thread waits
 *       inside NCCL, and {@code ncclCommAbort}, which NCCL supports only on non-blocking communicators and only while no
 *       other call on the communicator runs, can stop it at any point: while it forms, while a collective is issued,
 *       while one runs. A communicator that does not form within {@code timeoutSeconds} is aborted. NCCL reads
 *       {@code NCCL_COMM_BLOCKING=1} from the environment to override this (then a call stuck in NCCL, e.g. on a dead
 *       peer during a lazy connection, may not return from the abort; {@link #awaitIssued} gives up on it).</li>
 *   <li>Collectives run on the communicator's own CUDA stream, issued by one worker thread in call order (so every
 *       rank issues them in the same order) and back to back: the worker issues the next as soon as NCCL has taken
 *       the last one's kernels, without waiting for it to finish, so the NCCL stream holds every collective called so
 *       far and never idles between two of them. Each waits for an event recorded on the compute stream when it was
 *       called (its inputs are then complete), and {@link Work#await()} makes the compute stream wait for its done
 *       event, so the caller overlaps it with compute until it needs the result; the host is not blocked.</li>
 *   <li>Every NCCL and CUDA status is checked; a failure names the call, NCCL's last error, the collective and the
 *       context ("step 12, update").</li>
 *   <li>Watchdog: a thread of its own watches the issued collectives in order (they finish in order on the one
 *       stream), polling each one's done event and {@code ncclCommGetAsyncError}; a collective not finished
 *       {@code timeoutSeconds} after it could start (its inputs ready and the one before it done) aborts the communicator ({@code ncclCommAbort},
 *       which unblocks the kernels) and fails this and every later call with a message naming the collective and the
 *       context. The trainer then stops every local rank; the rendezvous store stops the other processes.</li>
 * </ul>
 * Sums of bf16 follow NCCL (ring order, per-hop rounding); AVG is ncclAvg.
 */
public final class NcclCommunicator implements Communicator {
    /** A device address as a JavaCPP pointer (no deallocator: the memory belongs to a tensor). */
    private static final class Raw extends Pointer {
        Raw(long address) { this.address = address; }
    }

    /** One collective as the worker issues it. */
    private interface Call {
        int issue(CUstream_st stream);
    }

    private final int rank, world, device;
    private final CudaBackend be;
    private final CUstream_st compute, stream = new CUstream_st();
    private final ncclComm comm = new ncclComm();
    private final long timeoutNanos;
    private final ExecutorService worker, watchdog;
    /** Collectives issued whose end the watchdog has not yet seen (for tests and diagnostics). */
    private final java.util.concurrent.atomic.AtomicInteger inFlight = new java.util.concurrent.atomic.AtomicInteger();
    /** Test hook: when set, the watchdog waits for it before it watches each collective (issuing must not wait for it). */
    volatile java.util.concurrent.CountDownLatch watchGate;
    private volatile Throwable failure;
    private volatile String context = "";
    /** When the worker entered NCCL to issue a collective (System.nanoTime), 0 when it is not in an issue; and which. */
    private volatile long issuingSince;
    private volatile String issuingWhat = "";
    private volatile boolean closed;
    /**
     * Held around every call on {@code comm} (issuing, polling its async error, destroying or aborting it):
     * ncclCommAbort frees the communicator, so no other call on it may run at the same time or after it.
     */
    private final ReentrantLock commLock = new ReentrantLock();
    private volatile boolean commGone; // aborted or destroyed (set under commLock)
    private static final long DESTROY_GRACE_NANOS = 30_000_000_000L;

    private NcclCommunicator(CudaBackend be, int rank, int world, long timeoutNanos) {
        this.be = be;
        this.rank = rank;
        this.world = world;
        this.device = be.device();
        this.timeoutNanos = timeoutNanos;
        this.compute = new CUstream_st(new Raw(be.stream()));
        this.worker = daemonThread("grpo4j-nccl-rank-" + rank);
        this.watchdog = daemonThread("grpo4j-nccl-watch-rank-" + rank);
    }

    private static ExecutorService daemonThread(String name) {
        return Executors.newSingleThreadExecutor(r -> {
            Thread t = new Thread(r, name);
            t.setDaemon(true);
            return t;
        });
    }

    /** A fresh unique id (128 bytes): rank 0's process makes it and the rendezvous store hands it to the others. */
    public static byte[] newUniqueId() {
        ncclUniqueId id = new ncclUniqueId();
        checkStatic(ncclGetUniqueId(id), "ncclGetUniqueId");
        byte[] b = new byte[NCCL_UNIQUE_ID_BYTES];
        id.internal().get(b);
        return b;
    }

    /** NCCL's version as "2.28.3", or the reason it does not load. */
    public static String version() {
        try {
            int[] v = new int[1];
            if (ncclGetVersion(v) != ncclSuccess) return "unknown";
            return v[0] / 10000 + "." + v[0] / 100 % 100 + "." + v[0] % 100;
        } catch (Throwable t) {
            return "does not load: " + t.getMessage();
        }
    }

    /**
     * Joins the communicator of {@code world} ranks as {@code rank}, on the calling thread (which owns {@code be}'s
     * device); returns when every rank has joined.
     */
    public static NcclCommunicator create(byte[] uniqueId, int world, int rank, CudaBackend be, int timeoutSeconds) {
        return create(uniqueId, world, rank, be, timeoutSeconds, c -> {});
    }

    /**
     * {@link #create(byte[], int, int, CudaBackend, int)}, handing the communicator to {@code forming} as soon as NCCL
     * has it, before every rank has joined: an {@link #abort} from another thread (the trainer's, when a sibling rank
     * or another process failed) then stops the wait for the others at once, instead of at the timeout.
     */
    public static NcclCommunicator create(byte[] uniqueId, int world, int rank, CudaBackend be, int timeoutSeconds,
                                          java.util.function.Consumer<? super NcclCommunicator> forming) {
        if (uniqueId.length != NCCL_UNIQUE_ID_BYTES)
            throw new IllegalArgumentException("an NCCL unique id has " + NCCL_UNIQUE_ID_BYTES + " bytes, got " + uniqueId.length);
        if (be.isClosed()) throw new IllegalStateException("NCCL communicator: backend " + be.name() + " is closed");
        NcclCommunicator c = new NcclCommunicator(be, rank, world, timeoutSeconds * 1_000_000_000L);
        try {
            c.cuda(cudaSetDevice(c.device), "cudaSetDevice(" + c.device + ")");
            c.cuda(cudaStreamCreateWithFlags(c.stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
            ncclUniqueId id = new ncclUniqueId();
            id.internal().put(uniqueId);
            String what = "ncclCommInitRankConfig(rank " + rank + " of " + world + ", cuda:" + c.device + ")";
            int res;
            c.commLock.lock();
            try (ncclConfig_t config = nonBlocking()) {
                res = ncclCommInitRankConfig(c.comm, world, id, rank, config);
            } finally {
                c.commLock.unlock();
            }
            if (!c.comm.isNull()) forming.accept(c);
            if (res == ncclInProgress) res = c.awaitFormed(what);
            if (res != ncclSuccess)
                throw new CommunicatorException(what + " failed: " + ncclGetErrorString(res).getString() + lastError(c.comm.isNull() ? null : c.comm)
                        + (res == ncclInvalidUsage ? " (two ranks on one GPU are refused by NCCL: one rank per GPU)" : ""));
            c.worker.submit(() -> cudaSetDevice(c.device)).get();
            c.watchdog.submit(() -> cudaSetDevice(c.device)).get();
            return c;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            c.close();
            throw new CommunicatorException("interrupted while creating the NCCL communicator of rank " + rank);
        } catch (ExecutionException | RuntimeException e) {
            c.close();
            throw e instanceof RuntimeException re ? re : new CommunicatorException(e.getMessage(), e);
        }
    }

    /**
     * NCCL_CONFIG_INITIALIZER (a C macro, which JavaCPP cannot expand) with {@code blocking = 0}: the size and version of
     * the preset's nccl.h, NCCL's magic, every other attribute undefined (NCCL's defaults). An older NCCL reads only the
     * fields it knows (it copies at most its own size and resets what its version predates).
     */
    static ncclConfig_t nonBlocking() {
        ncclConfig_t c = new ncclConfig_t();
        int undef = Integer.MIN_VALUE; // NCCL_CONFIG_UNDEF_INT (INT_MIN); NCCL_CONFIG_UNDEF_PTR is NULL
        c.size(c.sizeof()).magic(NCCL_API_MAGIC).version(NCCL_VERSION_CODE);
        c.cgaClusterSize(undef).minCTAs(undef).maxCTAs(undef).netName(null).splitShare(undef).trafficClass(undef).commName(null)
                .collnetEnable(undef).CTAPolicy(undef).shrinkShare(undef).nvlsCTAs(undef).nChannelsPerNetPeer(undef)
                .nvlinkCentricSched(undef).graphUsageMode(undef).numRmaCtx(undef);
        return c.blocking(0);
    }

    /**
     * Polls a forming communicator until every rank has joined (its state leaves ncclInProgress); returns the state. One
     * that has not formed within the timeout is aborted: a rank died, hung before joining, or has another unique id.
     */
    private int awaitFormed(String what) {
        long t0 = System.nanoTime(), pause = 10_000;
        while (true) {
            int state = asyncState(what); // throws once aborted (by the timeout below, or from another thread)
            if (state != ncclInProgress) return state;
            if (System.nanoTime() - t0 > timeoutNanos)
                abort(new CommunicatorException("the communicator did not form within " + timeoutNanos / 1_000_000_000L
                        + " s (nccl_timeout_s): communicator aborted; a rank died, hung before joining, or was given another unique id"));
            else if (Thread.currentThread().isInterrupted())
                abort(new CommunicatorException("interrupted while the communicator formed"));
            else {
                LockSupport.parkNanos(pause);
                pause = Math.min(pause * 2, 10_000_000);
            }
        }
    }

    @Override
    public int rank() { return rank; }

    @Override
    public int worldSize() { return world; }

    @Override
    public void setContext(String what) { context = what == null ? "" : what; }

    /**
     * Fails the communicator from any thread: {@code ncclCommAbort} stops its kernels, and this and every later
     * collective throws naming {@code cause}.
     */
    public void abort(Throwable cause) {
        synchronized (this) {
            if (failure != null || closed) return;
            failure = cause;
        }
        releaseComm(true);
    }

    /**
     * Aborts ({@code abort}) or destroys the communicator once. Waits for a call on it in progress to return; one that
     * is stuck inside NCCL (a dead peer during a lazy connection) is what ncclCommAbort is there to unblock, so after
     * a grace period it aborts regardless. Destroying waits for the stream's collectives to finish, up to a grace
     * period too: one that never finishes (a peer gone) would make ncclCommDestroy wait for ever, and a concurrent
     * abort() finds the communicator already being released, so this aborts it instead.
     */
    private void releaseComm(boolean abort) {
        boolean interrupted = Thread.interrupted(); // waits below are not cut short by an interrupt (restored after)
        boolean locked = lockFor(abort ? 5 : 30);
        // a non-blocking communicator's calls return at once, so its lock is free within a poll; one held longer is a
        // call stuck inside NCCL, which only a blocking communicator (NCCL_COMM_BLOCKING=1) can be, and which only the
        // abort can return: abort it without the lock then (NCCL's documented risk), else wait for the lock a while more
        if (!locked && !BLOCKING_OVERRIDE) locked = lockFor(60);
        try {
            if (commGone || comm.isNull()) return;
            commGone = true;
            if (abort || !locked) {
                ncclCommAbort(comm);
            } else {
                long deadline = System.nanoTime() + DESTROY_GRACE_NANOS;
                int st;
                while ((st = cudaStreamQuery(stream)) == cudaErrorNotReady && System.nanoTime() < deadline)
                    LockSupport.parkNanos(1_000_000);
                if (st != cudaErrorNotReady && finalized(deadline)) ncclCommDestroy(comm);
                else ncclCommAbort(comm);
            }
        } finally {
            if (locked) commLock.unlock();
            if (interrupted) Thread.currentThread().interrupt();
        }
    }

    /** Whether NCCL_COMM_BLOCKING=1 (which NCCL reads) made the communicators blocking despite the config. */
    private static final boolean BLOCKING_OVERRIDE = "1".equals(System.getenv("NCCL_COMM_BLOCKING"));

    /** commLock within {@code seconds}, not cut short by an interrupt. */
    private boolean lockFor(int seconds) {
        long deadline = System.nanoTime() + seconds * 1_000_000_000L;
        while (true) {
            try {
                return commLock.tryLock(Math.max(0, deadline - System.nanoTime()), TimeUnit.NANOSECONDS);
            } catch (InterruptedException e) {
                Thread.interrupted(); // the caller restores it
            }
        }
    }

    /**
     * {@code ncclCommFinalize}, then its state polled until it leaves ncclInProgress (a non-blocking communicator
     * finalizes in the background) or the deadline passes: true when it ended in ncclSuccess, so that ncclCommDestroy
     * will not block (NCCL's documentation).
     */
    private boolean finalized(long deadline) {
        int res = ncclCommFinalize(comm);
        if (res != ncclSuccess && res != ncclInProgress) return false;
        int[] state = {ncclInProgress};
        while (ncclCommGetAsyncError(comm, state) == ncclSuccess && state[0] == ncclInProgress && System.nanoTime() < deadline)
            LockSupport.parkNanos(1_000_000);
        return state[0] == ncclSuccess;
    }

    // ---- collectives ----------------------------------------------------------------------------------------------

    private static int type(Tensor t) {
        return switch (t.dtype()) {
            case FP32 -> ncclFloat32;
            case BF16 -> ncclBfloat16;
            case INT32 -> ncclInt32;
            default -> throw new IllegalArgumentException("NCCL collectives take fp32, bf16 or int32 tensors, not " + t.dtype().label());
        };
    }

    private static int op(ReduceOp op) { return op == ReduceOp.AVG ? ncclAvg : ncclSum; }

    private Pointer ptr(Tensor t) { return new Raw(be.deviceAddress(t)); }

    /**
     * NCCL defines buffers that overlap only in its in-place form: {@code part} (the rank's piece: allGather's in,
     * reduceScatter's out) at {@code whole + offset} elements (the same buffer for reduce).
     */
    private void requireInPlaceOrDisjoint(String op, Tensor whole, Tensor part, long offset) {
        if (whole.overlaps(part) && be.deviceAddress(part) != be.deviceAddress(whole) + offset * part.dtype().bytes())
            throw new IllegalArgumentException(op + ": " + whole + " and " + part + " overlap, but not in NCCL's in-place form");
    }

    private static void requireFloat(String op, Tensor t) {
        if (t.dtype() != DType.FP32 && t.dtype() != DType.BF16)
            throw new IllegalArgumentException(op + ": reductions take fp32 or bf16 tensors, got " + t.dtype().label());
    }

    @Override
    public Work allReduce(Tensor buf, ReduceOp op) {
        requireFloat("allReduce", buf);
        Pointer p = ptr(buf);
        int dt = type(buf);
        return submit("allReduce", s -> ncclAllReduce(p, p, buf.numel(), dt, op(op), comm, s), buf);
    }

    @Override
    public Work reduceScatter(Tensor out, Tensor in, ReduceOp op) {
        requireFloat("reduceScatter", in);
        if (in.numel() != out.numel() * world || in.dtype() != out.dtype())
            throw new IllegalArgumentException("reduceScatter: in " + in + " must be world " + world + " x out " + out);
        requireInPlaceOrDisjoint("reduceScatter", in, out, rank * out.numel());
        Pointer i = ptr(in), o = ptr(out);
        int dt = type(in);
        return submit("reduceScatter", s -> ncclReduceScatter(i, o, out.numel(), dt, op(op), comm, s), in, out);
    }

    @Override
    public Work reduce(Tensor out, Tensor in, int root, ReduceOp op) {
        requireFloat("reduce", in);
        if (root < 0 || root >= world) throw new IllegalArgumentException("reduce: root " + root + " outside [0, " + world + ")");
        if (rank == root && (out == null || out.numel() != in.numel() || out.dtype() != in.dtype()))
            throw new IllegalArgumentException("reduce: the root's out must match in " + in);
        if (rank == root) requireInPlaceOrDisjoint("reduce", out, in, 0);
        Pointer i = ptr(in), o = rank == root ? ptr(out) : null;
        int dt = type(in);
        return submit("reduce", s -> ncclReduce(i, o, in.numel(), dt, op(op), root, comm, s), rank == root ? new Tensor[] {in, out} : new Tensor[] {in});
    }

    @Override
    public Work allGather(Tensor out, Tensor in) {
        if (out.numel() != in.numel() * world || in.dtype() != out.dtype())
            throw new IllegalArgumentException("allGather: out " + out + " must be world " + world + " x in " + in);
        requireInPlaceOrDisjoint("allGather", out, in, rank * in.numel());
        Pointer i = ptr(in), o = ptr(out);
        int dt = type(in);
        return submit("allGather", s -> ncclAllGather(i, o, in.numel(), dt, comm, s), in, out);
    }

    @Override
    public Work allGatherInPlace(Tensor buffer) {
        if (buffer.numel() % world != 0)
            throw new IllegalArgumentException("allGatherInPlace: " + buffer.numel() + " elements do not split over " + world + " ranks");
        long n = buffer.numel() / world;
        if (n > Integer.MAX_VALUE)
            throw new IllegalArgumentException("allGatherInPlace: " + n + " elements a rank exceed 2^31 - 1; gather in parts");
        int dt = type(buffer);
        Pointer all = ptr(buffer), mine = ptr(buffer.view(rank * n, (int) n)); // NCCL's in-place form: sendbuff = recvbuff + rank x count
        return submit("allGatherInPlace", s -> ncclAllGather(mine, all, n, dt, comm, s), buffer);
    }

    @Override
    public Work broadcast(Tensor buf, int root) {
        if (root < 0 || root >= world) throw new IllegalArgumentException("broadcast: root " + root + " outside [0, " + world + ")");
        Pointer p = ptr(buf);
        int dt = type(buf);
        return submit("broadcast", s -> ncclBroadcast(p, p, buf.numel(), dt, root, comm, s), buf);
    }

    @Override
    public void barrier() {
        try (Tensor one = be.zeros(DType.FP32, 1)) {
            allReduce(one, ReduceOp.SUM).await();
            be.synchronize();
            check("barrier"); // (an abort also ends the all-reduce)
        }
    }

    @Override
    public void check(String what) { checkOpen(what); }

    @Override
    public double[][] allGatherDoubles(double[] local) {
        int n = local.length, stride = Math.max(1, 2 * n); // an empty gather still moves one word per rank
        int[] bits = new int[stride];
        for (int i = 0; i < n; i++) {
            long b = Double.doubleToRawLongBits(local[i]);
            bits[2 * i] = (int) (b >>> 32);
            bits[2 * i + 1] = (int) b;
        }
        try (Tensor in = be.upload(bits, stride); Tensor out = be.empty(DType.INT32, world * stride)) {
            allGather(out, in).await();
            int[] all = out.toInts();
            check("allGatherDoubles"); // (after an abort the buffer holds what it held: not the ranks' values)
            double[][] res = new double[world][n];
            for (int r = 0; r < world; r++)
                for (int i = 0; i < n; i++)
                    res[r][i] = Double.longBitsToDouble(((long) all[r * stride + 2 * i] << 32) | (all[r * stride + 2 * i + 1] & 0xFFFFFFFFL));
            return res;
        }
    }

    // ---- the worker and the watchdog -----------------------------------------------------------------------------

    /**
     * Queues {@code call}: an event on the compute stream marks its inputs ready; the worker makes the NCCL stream
     * wait for it, issues the call, records a done event and watches it. Until the Work is awaited, freeing one of
     * {@code uses} first waits for the collective (CudaBackend.holdForCollective): a free is ordered on the compute
     * stream only, and the memory must not go to another allocation while NCCL still uses it.
     */
    private Work submit(String name, Call call, Tensor... uses) {
        checkOpen(name);
        checkBackend(name);
        // the events belong to the compute stream's device, whichever device this thread had current
        cuda(cudaSetDevice(device), "cudaSetDevice(" + device + ")");
        CUevent_st ready = new CUevent_st(), done = new CUevent_st();
        cuda(cudaEventCreateWithFlags(ready, cudaEventDisableTiming), "cudaEventCreateWithFlags");
        cuda(cudaEventCreateWithFlags(done, cudaEventDisableTiming), "cudaEventCreateWithFlags");
        cuda(cudaEventRecord(ready, compute), "cudaEventRecord(compute)");
        String what = name + (context.isEmpty() ? "" : " (" + context + ")");
        CompletableFuture<Void> issued = new CompletableFuture<>();
        // why a call NCCL took then failed while it was issued (the communicator failed or was closed meanwhile)
        java.util.concurrent.atomic.AtomicReference<Throwable> takenThenFailed = new java.util.concurrent.atomic.AtomicReference<>();
        // the done event's users, the watchdog, await() and (with tensors to hold) the holds: the last one to let go
        // destroys it
        java.util.concurrent.atomic.AtomicInteger holders = new java.util.concurrent.atomic.AtomicInteger(uses.length > 0 ? 3 : 2);
        Runnable release = () -> {
            if (holders.decrementAndGet() == 0) cudaEventDestroy(done);
        };
        // a free of a tensor in use before the Work is awaited: wait until the call is issued (or never will be), then
        // for its done event (an event never recorded is complete at once)
        Runnable waitDone = () -> {
            try {
                issued.get(timeoutNanos, java.util.concurrent.TimeUnit.NANOSECONDS);
            } catch (ExecutionException e) {
                return; // not issued: NCCL never had the memory
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new CommunicatorException("interrupted waiting for " + name + " before freeing its tensor");
            } catch (java.util.concurrent.TimeoutException e) {
                throw new CommunicatorException(name + " was not issued within the timeout; its tensor is not freed");
            }
            cuda(cudaEventSynchronize(done), "cudaEventSynchronize(" + name + " done)");
        };
        List<AutoCloseable> holds = new ArrayList<>();
        boolean[] unheld = {uses.length == 0};
        Runnable unhold = () -> {
            if (unheld[0]) return;
            unheld[0] = true;
            for (AutoCloseable h : holds) {
                try {
                    h.close();
                } catch (Exception ignored) {
                    // (removing a hold does not fail)
                }
            }
            release.run();
        };
        worker.submit(() -> {
            boolean watched = false; // handed to the watchdog, which then releases the events
            boolean taken = false; // NCCL accepted the call: its kernels may be on the stream
            try {
                checkOpen(name);
                cuda(cudaStreamWaitEvent(stream, ready, 0), "cudaStreamWaitEvent(nccl stream)");
                int res;
                commLock.lock();
                try {
                    checkOpen(name); // an abort may have freed the communicator meanwhile
                    issuingWhat = what;
                    issuingSince = System.nanoTime();
                    try {
                        nccl(res = call.issue(stream), "nccl " + what);
                        taken = true;
                    } finally {
                        issuingSince = 0;
                    }
                } finally {
                    commLock.unlock();
                }
                // non-blocking: NCCL issues the kernels in the background; the done event must follow them
                if (res == ncclInProgress) awaitEnqueued(name, what);
                cuda(cudaEventRecord(done, stream), "cudaEventRecord(nccl stream)");
                inFlight.incrementAndGet();
                try {
                    watchdog.execute(() -> {
                        try {
                            java.util.concurrent.CountDownLatch gate = watchGate;
                            if (gate != null) gate.await();
                            watch(what, ready, done);
                        } catch (InterruptedException e) {
                            Thread.currentThread().interrupt();
                        } finally {
                            inFlight.decrementAndGet();
                            cudaEventDestroy(ready);
                            release.run();
                        }
                    });
                    watched = true;
                } catch (java.util.concurrent.RejectedExecutionException e) {
                    inFlight.decrementAndGet(); // closing: nothing watches it any more
                }
                // the next collective is issued at once: this one runs on the stream meanwhile, watched in order
                issued.complete(null);
            } catch (Throwable t) {
                // taken by NCCL, then the communicator failed while it issued (an abort from the watchdog or another
                // thread): its kernels may have run on the buffers, so it counts as issued; await() then throws with
                // the failure, after ordering the compute stream (and the tensors' frees) after the NCCL stream's end
                // (closed meanwhile, failure unset: the same, its tensors must not be freed before the stream's end)
                if (taken && !watched && cudaEventRecord(done, stream) == cudaSuccess) {
                    takenThenFailed.set(t);
                    issued.complete(null);
                } else {
                    issued.completeExceptionally(t);
                }
            } finally {
                if (!watched) {
                    cudaEventDestroy(ready);
                    release.run();
                }
            }
        });
        // (registered once the call is queued: a refused submit leaves nothing held)
        for (Tensor t : uses) holds.add(be.holdForCollective(t, waitDone));
        boolean[] awaited = {false};
        return () -> {
            if (awaited[0]) return;
            awaited[0] = true;
            try {
                awaitIssued(issued);
                // issued, but the communicator failed since (its watchdog's timeout, NCCL's error, an abort from another
                // thread): this collective may not have finished, so its output is not to be read (an all-gather's
                // buffer held whatever memory it was given: a caller took garbage for the step's agreement)
                Throwable f = failure != null ? failure : takenThenFailed.get();
                if (f != null) {
                    // the abort may still be on its way to NCCL (it waits for the lock): frees stay ordered after the
                    // collective's end on the compute stream, which the abort's end of NCCL's kernels brings
                    if (!be.isClosed()) cudaStreamWaitEvent(compute, done, 0);
                    unhold.run();
                    throw new CommunicatorException(what + " stopped: " + reason(f), f);
                }
                checkBackend(name);  // (a closed backend's stream is destroyed: no wait may be enqueued on it)
                // enqueued before the event can be destroyed; CUDA keeps what a pending wait needs
                cuda(cudaStreamWaitEvent(compute, done, 0), "cudaStreamWaitEvent(compute stream)");
                unhold.run(); // frees on the compute stream now follow the collective
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new CommunicatorException("interrupted waiting for " + what);
            } catch (ExecutionException e) {
                unhold.run(); // never issued: NCCL does not have the memory
                Throwable c = e.getCause(), f = failure;
                if (f != null && !(c instanceof CommunicatorException ce && ce.getMessage().contains(" stopped: "))) {
                    CommunicatorException stopped = new CommunicatorException(what + " stopped: " + reason(f), f);
                    stopped.addSuppressed(c); // the collective's own error (NCCL's text)
                    throw stopped;
                }
                throw c instanceof RuntimeException re ? re : new CommunicatorException(what + " failed: " + c.getMessage(), c);
            } finally {
                release.run();
            }
        };
    }

    /**
     * Waits for the worker to have issued a collective. The watchdog ({@link #watch}) runs once a collective is issued,
     * and {@link #awaitEnqueued} while a non-blocking one is being issued; a call stuck inside NCCL (as a blocking one can
     * be, under NCCL_COMM_BLOCKING=1: e.g. a lazy connection to a dead peer; the emulated NCCL's blocking calls wait there
     * for the last rank) is timed here: past nccl_timeout_s in the call, the communicator is aborted, which should return
     * it.
     */
    private void awaitIssued(CompletableFuture<Void> issued) throws InterruptedException, ExecutionException {
        long failedAt = 0;
        while (true) {
            try {
                issued.get(200, TimeUnit.MILLISECONDS);
                return;
            } catch (java.util.concurrent.TimeoutException e) {
                long since = issuingSince, now = System.nanoTime();
                if (since != 0 && now - since > timeoutNanos)
                    abort(new CommunicatorException("NCCL " + issuingWhat + " did not finish within " + timeoutNanos / 1_000_000_000L
                            + " s (nccl_timeout_s) on rank " + rank + ", still being issued: communicator aborted; a rank died, hung or called a different collective"));
                Throwable f = failure;
                if (f != null) {
                    if (failedAt == 0) failedAt = now;
                    // the abort should have returned the call; one that stays inside NCCL is left behind
                    else if (now - failedAt > ISSUE_GRACE_NANOS)
                        throw new ExecutionException(new CommunicatorException("NCCL " + issuingWhat + " on rank " + rank + " stopped: "
                                + reason(f) + " (the call did not return from NCCL after the abort)", f));
                }
            }
        }
    }

    /** How long a collective's await waits for its call to return from NCCL once the communicator was aborted. */
    static final long ISSUE_GRACE_NANOS = 30_000_000_000L;

    /**
     * Polls a non-blocking communicator's state until NCCL has issued the collective's kernels to the stream (its state
     * leaves ncclInProgress), aborting the communicator when that fails or overruns the timeout.
     */
    private void awaitEnqueued(String name, String what) {
        long t0 = System.nanoTime(), pause = 1_000;
        while (true) {
            int state = asyncState(name);
            if (state == ncclSuccess) return;
            if (state != ncclInProgress)
                abort(new CommunicatorException("NCCL " + what + " failed on rank " + rank + ": " + ncclGetErrorString(state).getString() + lastError(comm)));
            else if (System.nanoTime() - t0 > timeoutNanos)
                abort(new CommunicatorException("NCCL " + what + " did not finish within " + timeoutNanos / 1_000_000_000L
                        + " s (nccl_timeout_s) on rank " + rank + ", still being issued: communicator aborted; a rank died, hung or called a different collective"));
            else if (Thread.currentThread().isInterrupted())
                abort(new CommunicatorException("NCCL " + what + " on rank " + rank + ": interrupted while NCCL issued it"));
            checkOpen(name);
            LockSupport.parkNanos(pause);
            pause = Math.min(pause * 2, 1_000_000);
        }
    }

    /** The communicator's state ({@code ncclCommGetAsyncError}, or its own error), under the lock; throws once it failed. */
    private int asyncState(String name) {
        commLock.lock();
        try {
            checkOpen(name);
            if (commGone) throw new CommunicatorException("NCCL " + name + " on rank " + rank + ": the communicator is gone");
            int[] state = new int[1];
            int res = ncclCommGetAsyncError(comm, state);
            return res != ncclSuccess ? res : state[0];
        } finally {
            commLock.unlock();
        }
    }

    /** How many issued collectives the watchdog has not yet seen end. */
    int inFlight() { return inFlight.get(); }

    /**
     * Polls until the collective is done, aborting the communicator when it overruns the timeout; on the watchdog's
     * thread, after the collectives issued before it ended, so the timeout counts from when it could start.
     */
    private void watch(String what, CUevent_st ready, CUevent_st done) {
        long started = -1, pause = 1_000;
        while (true) {
            if (failure != null) return; // aborted from another thread: the collective's work is over
            int q = cudaEventQuery(done);
            if (q == cudaSuccess) return;
            if (q != cudaErrorNotReady) {
                abort(new CommunicatorException("NCCL " + what + " on rank " + rank + ": cudaEventQuery failed: " + cudaGetErrorString(q).getString()));
                return;
            }
            int[] async = new int[1];
            int res;
            commLock.lock();
            try {
                if (failure != null || commGone) return;
                res = ncclCommGetAsyncError(comm, async);
            } finally {
                commLock.unlock();
            }
            if (res != ncclSuccess || (async[0] != ncclSuccess && async[0] != ncclInProgress)) {
                int code = res != ncclSuccess ? res : async[0];
                // (the communicator's error: this collective's, or one issued after it while it ran)
                abort(new CommunicatorException("NCCL " + what + " (or a collective issued after it) failed on rank " + rank + ": "
                        + ncclGetErrorString(code).getString() + lastError(comm)));
                return;
            }
            if (started < 0 && cudaEventQuery(ready) == cudaSuccess) started = System.nanoTime();
            if (started >= 0 && System.nanoTime() - started > timeoutNanos) {
                abort(new CommunicatorException("NCCL " + what + " did not finish within " + timeoutNanos / 1_000_000_000L + " s (nccl_timeout_s) on rank "
                        + rank + ": communicator aborted; a rank died, hung or called a different collective"));
                return;
            }
            LockSupport.parkNanos(pause);
            pause = Math.min(pause * 2, 1_000_000);
        }
    }

    /** What a failure says: its message, else its class. */
    private static String reason(Throwable f) { return f.getMessage() == null ? f.getClass().getSimpleName() : f.getMessage(); }

    private void checkBackend(String name) {
        if (be.isClosed())
            throw new IllegalStateException(name + (context.isEmpty() ? "" : " (" + context + ")") + ": backend " + be.name() + " is closed");
    }

    private void checkOpen(String name) {
        Throwable f = failure;
        if (f != null) throw new CommunicatorException(name + (context.isEmpty() ? "" : " (" + context + ")") + " stopped: "
                + reason(f), f);
        if (closed) throw new IllegalStateException("NCCL communicator of rank " + rank + " used after close");
    }

    private static String lastError(ncclComm c) {
        try {
            BytePointer p = ncclGetLastError(c);
            String s = p == null ? "" : p.getString();
            return s.isBlank() ? "" : " (" + s.trim() + ")";
        } catch (Throwable t) {
            return "";
        }
    }

    private void nccl(int res, String call) {
        if (res != ncclSuccess && res != ncclInProgress)
            throw new CommunicatorException(call + " failed on rank " + rank + ": " + ncclGetErrorString(res).getString() + lastError(comm));
    }

    private static void checkStatic(int res, String call) {
        if (res != ncclSuccess) throw new CommunicatorException(call + " failed: " + ncclGetErrorString(res).getString());
    }

    private void cuda(int res, String call) {
        if (res != cudaSuccess) throw new CommunicatorException(call + " failed on rank " + rank + ": " + cudaGetErrorString(res).getString());
    }

    @Override
    public void close() {
        synchronized (this) {
            if (closed) return;
            closed = true;
        }
        // the worker's queued calls fail (closed), then the watchdog sees the issued collectives end: up to 10 s for both
        long deadline = System.nanoTime() + 10_000_000_000L;
        worker.shutdown();
        try {
            worker.awaitTermination(10, TimeUnit.SECONDS);
            watchdog.shutdown();
            watchdog.awaitTermination(Math.max(0, deadline - System.nanoTime()), TimeUnit.NANOSECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } finally {
            watchdog.shutdown();
        }
        int[] current = {-1}; // close() may come from another thread (the trainer's): work on this device, then restore
        cudaGetDevice(current);
        cudaSetDevice(device);
        try {
            releaseComm(failure != null);
            if (!stream.isNull()) cudaStreamDestroy(stream);
        } finally {
            if (current[0] >= 0) cudaSetDevice(current[0]);
        }
    }
}
