package org.grpo4j.internal.dist;

import java.util.ArrayList;
import java.util.List;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.Bf16;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.Tensor;

/**
 * N ranks as threads of one JVM (each rank with its own backend, normally a CPU backend), with the semantics of
 * {@link Communicator}: how multi-rank training is tested without GPUs, and what {@code train --set world_size=N}
 * runs on the CPU.
 *
 * <p>Each collective is two barriers: when every rank has arrived, each reads what it needs of the others' inputs
 * and computes its own outputs on the host; after the second barrier (nobody reads any more) it writes them. Sums run
 * in fp32 in rank order (x_0 + x_1 + ... + x_{N-1}; AVG then divides by N) and a bf16 result is rounded once, so
 * every result is bitwise reproducible and the same on every rank.
 *
 * <p>Failure: a rank that throws calls {@link #abortGroup} (the trainer does this), or a rank that does not arrive
 * within the timeout breaks the barrier; every other rank's collective then throws a {@link CommunicatorException}
 * naming the cause, the collective and the context, instead of waiting for ever. Ranks that call different
 * collectives (or sizes) all throw, naming both calls.
 */
public final class LocalCommunicator implements Communicator {

    /** The state the ranks of one group share. */
    private static final class Hub {
        final int world;
        final long timeoutMillis;
        final Call[] calls;
        int waiting;
        long generation;
        final long[] entered;
        volatile Throwable aborted;
        volatile String context = "";

        Hub(int world, long timeoutMillis) {
            this.world = world;
            this.timeoutMillis = timeoutMillis;
            this.calls = new Call[world];
            this.entered = new long[world];
        }
    }

    /** One rank's side of a collective. */
    private record Call(String op, Tensor a, Tensor b, int root, ReduceOp reduce, double[] values) {
        String describe() {
            Tensor t = a != null ? a : b;
            return op + (t == null ? "(" + (values == null ? 0 : values.length) + " values)" : "(" + t.dtype().label() + " x " + t.numel() + ")")
                    + (root >= 0 ? " to rank " + root : "");
        }

        String signature() { return describe() + (reduce == null ? "" : " " + reduce); }
    }

    private final Hub hub;
    private final int rank;
    private boolean closed;

    private LocalCommunicator(Hub hub, int rank) {
        this.hub = hub;
        this.rank = rank;
    }

    /**
     * {@code world} communicators of one group, rank i at index i; a rank that waits more than {@code timeoutMillis}
     * for the others fails the group.
     */
    public static List<LocalCommunicator> group(int world, long timeoutMillis) {
        if (world < 1) throw new IllegalArgumentException("world size must be >= 1, got " + world);
        if (timeoutMillis < 1) throw new IllegalArgumentException("timeout must be >= 1 ms, got " + timeoutMillis);
        Hub h = new Hub(world, timeoutMillis);
        List<LocalCommunicator> out = new ArrayList<>();
        for (int r = 0; r < world; r++) out.add(new LocalCommunicator(h, r));
        return out;
    }

    @Override
    public int rank() { return rank; }

    @Override
    public int worldSize() { return hub.world; }

    @Override
    public void setContext(String what) { hub.context = what == null ? "" : what; }

    /**
     * Fails the group: every rank's current and next collective throws a {@link CommunicatorException} naming
     * {@code cause} (the first cause wins). Safe from any thread.
     */
    public void abortGroup(Throwable cause) {
        synchronized (hub) {
            if (hub.aborted == null) hub.aborted = cause;
            hub.notifyAll();
        }
    }

    // ---- the two barriers ---------------------------------------------------------------------------------------

    private CommunicatorException failure(String what) {
        Throwable a = hub.aborted;
        String ctx = hub.context.isEmpty() ? "" : " (" + hub.context + ")";
        if (a != null) return new CommunicatorException(what + ctx + " stopped: " + describe(a), a);
        return new CommunicatorException(what + ctx + " failed: another rank left the group");
    }

    static String describe(Throwable t) {
        if (t instanceof CommunicatorException) return t.getMessage();
        return (t.getMessage() == null ? t.getClass().getSimpleName() : t.getMessage());
    }

    private void await(String what) {
        if (closed) throw new IllegalStateException("communicator of rank " + rank + " used after close");
        synchronized (hub) {
            if (hub.aborted != null) throw failure(what);
            hub.entered[rank]++;
            long gen = hub.generation;
            if (++hub.waiting == hub.world) {
                hub.waiting = 0;
                hub.generation++;
                hub.notifyAll();
                return;
            }
            long deadline = System.nanoTime() + hub.timeoutMillis * 1_000_000L;
            while (gen == hub.generation && hub.aborted == null) {
                long left = deadline - System.nanoTime();
                if (left <= 0) {
                    List<Integer> missing = new ArrayList<>();
                    long max = 0;
                    for (long x : hub.entered) max = Math.max(max, x);
                    for (int r = 0; r < hub.world; r++) if (hub.entered[r] < max) missing.add(r);
                    hub.aborted = new CommunicatorException(what + (hub.context.isEmpty() ? "" : " (" + hub.context + ")") + " timed out after "
                            + hub.timeoutMillis / 1000.0 + " s waiting for rank" + (missing.size() == 1 ? " " : "s ") + missing + " (hung or dead)");
                    hub.notifyAll();
                    break;
                }
                try {
                    hub.wait(Math.max(1, left / 1_000_000L));
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    if (hub.aborted == null) hub.aborted = new CommunicatorException("rank " + rank + " was interrupted in " + what);
                    hub.notifyAll();
                }
            }
            if (hub.aborted != null) throw failure(what);
        }
    }

    /** Deposits this rank's call, waits for every rank and checks that they called the same collective. */
    private Call[] enter(Call c) {
        hub.calls[rank] = c;
        await(c.op);
        Call[] all = hub.calls.clone();
        for (int r = 0; r < all.length; r++)
            if (!all[r].signature().equals(all[0].signature())) {
                CommunicatorException e = new CommunicatorException("collective mismatch" + (hub.context.isEmpty() ? "" : " (" + hub.context + ")")
                        + ": rank 0 called " + all[0].signature() + ", rank " + r + " called " + all[r].signature());
                abortGroup(e);
                throw e;
            }
        return all;
    }

    /** Every rank has finished reading the inputs: outputs may be written. */
    private void readsDone(String op) { await(op); }

    // ---- collectives ----------------------------------------------------------------------------------------------

    @Override
    public Work allReduce(Tensor buf, ReduceOp op) {
        requireFloat("allReduce", buf);
        Call[] all = enter(new Call("allReduce", buf, null, -1, op, null));
        float[] sum = reduceRange(all, true, 0, (int) buf.numel(), op);
        readsDone("allReduce");
        write(buf, sum);
        return Work.DONE;
    }

    @Override
    public Work reduceScatter(Tensor out, Tensor in, ReduceOp op) {
        requireFloat("reduceScatter", in);
        sameDtype("reduceScatter", out, in);
        if (in.numel() != out.numel() * hub.world)
            throw new IllegalArgumentException("reduceScatter: in has " + in.numel() + " elements, expected world " + hub.world + " x out " + out.numel());
        Call[] all = enter(new Call("reduceScatter", in, null, -1, op, null));
        int n = (int) out.numel();
        float[] sum = reduceRange(all, true, (long) rank * n, n, op);
        readsDone("reduceScatter");
        write(out, sum);
        return Work.DONE;
    }

    @Override
    public Work reduce(Tensor out, Tensor in, int root, ReduceOp op) {
        requireFloat("reduce", in);
        checkRoot("reduce", root);
        if (rank == root) {
            if (out == null) throw new IllegalArgumentException("reduce: the root's out is null");
            sameDtype("reduce", out, in);
            if (out.numel() != in.numel()) throw new IllegalArgumentException("reduce: out has " + out.numel() + " elements, in " + in.numel());
        }
        Call[] all = enter(new Call("reduce", in, null, root, op, null));
        float[] sum = rank == root ? reduceRange(all, true, 0, (int) in.numel(), op) : null;
        readsDone("reduce");
        if (sum != null) write(out, sum);
        return Work.DONE;
    }

    @Override
    public Work allGather(Tensor out, Tensor in) {
        sameDtype("allGather", out, in);
        if (out.numel() != in.numel() * hub.world)
            throw new IllegalArgumentException("allGather: out has " + out.numel() + " elements, expected world " + hub.world + " x in " + in.numel());
        Call[] all = enter(new Call("allGather", in, null, -1, null, null));
        Object[] parts = new Object[hub.world];
        for (int r = 0; r < hub.world; r++) parts[r] = download(all[r].a);
        readsDone("allGather");
        writeConcat(out, parts);
        return Work.DONE;
    }

    @Override
    public Work allGatherInPlace(Tensor buffer) {
        if (buffer.numel() % hub.world != 0)
            throw new IllegalArgumentException("allGatherInPlace: " + buffer.numel() + " elements do not split over " + hub.world + " ranks");
        int n = (int) (buffer.numel() / hub.world);
        Call[] all = enter(new Call("allGatherInPlace", buffer, null, -1, null, null));
        Object[] parts = new Object[hub.world];
        for (int r = 0; r < hub.world; r++) parts[r] = r == rank ? null : download(all[r].a.view((long) r * n, n));
        readsDone("allGatherInPlace");
        for (int r = 0; r < hub.world; r++) if (parts[r] != null) write(buffer.view((long) r * n, n), parts[r]);
        return Work.DONE;
    }

    @Override
    public Work broadcast(Tensor buf, int root) {
        checkRoot("broadcast", root);
        Call[] all = enter(new Call("broadcast", buf, null, root, null, null));
        Object data = rank == root ? null : download(all[root].a);
        readsDone("broadcast");
        if (data != null) write(buf, data);
        return Work.DONE;
    }

    @Override
    public void barrier() {
        enter(new Call("barrier", null, null, -1, null, new double[0]));
        readsDone("barrier");
    }

    @Override
    public double[][] allGatherDoubles(double[] local) {
        Call[] all = enter(new Call("allGatherDoubles", null, null, -1, null, local.clone()));
        double[][] out = new double[hub.world][];
        for (int r = 0; r < hub.world; r++) out[r] = all[r].values.clone();
        readsDone("allGatherDoubles");
        return out;
    }

    @Override
    public void close() { closed = true; }

    // ---- host arithmetic ------------------------------------------------------------------------------------------

    /** Sum (in fp32, rank order) of elements [from, from + n) of every rank's first tensor; AVG divides by the world. */
    private float[] reduceRange(Call[] all, boolean first, long from, int n, ReduceOp op) {
        float[] acc = null;
        for (Call c : all) {
            Tensor t = (first ? c.a : c.b).view(from, n);
            float[] x = t.toFloatsWidened();
            if (acc == null) acc = x;
            else for (int i = 0; i < n; i++) acc[i] += x[i];
        }
        if (op == ReduceOp.AVG) for (int i = 0; i < n; i++) acc[i] /= hub.world;
        return acc;
    }


    private static Object download(Tensor t) {
        return switch (t.dtype()) {
            case FP32 -> t.toFloats();
            case BF16 -> t.toBf16Bits();
            case INT32 -> t.toInts();
            default -> throw new IllegalArgumentException("collectives move fp32, bf16 or int32 tensors, not " + t.dtype().label());
        };
    }

    /** Writes host data (float[] results are rounded to a bf16 destination) into {@code dst}. */
    private static void write(Tensor dst, Object data) {
        Backend be = dst.backend();
        if (data instanceof float[] f) {
            if (dst.dtype() == DType.FP32) {
                be.copyFromHost(dst, f);
                return;
            }
            short[] b = new short[f.length];
            for (int i = 0; i < f.length; i++) b[i] = Bf16.fromFloat(f[i]);
            data = b;
        }
        if (data instanceof short[] b) {
            try (Tensor tmp = be.uploadBf16(b, b.length)) {
                be.copy(dst, tmp);
            }
        } else {
            be.copyFromHost(dst, (int[]) data);
        }
    }

    private static void writeConcat(Tensor out, Object[] parts) {
        int n = (int) (out.numel() / parts.length);
        for (int r = 0; r < parts.length; r++) write(out.view((long) r * n, n), parts[r]);
    }

    private static void requireFloat(String op, Tensor t) {
        if (t.dtype() != DType.FP32 && t.dtype() != DType.BF16)
            throw new IllegalArgumentException(op + ": reductions take fp32 or bf16 tensors, got " + t.dtype().label());
    }

    private static void sameDtype(String op, Tensor a, Tensor b) {
        if (a.dtype() != b.dtype())
            throw new IllegalArgumentException(op + ": out is " + a.dtype().label() + ", in " + b.dtype().label() + "; they must match");
    }

    private void checkRoot(String op, int root) {
        if (root < 0 || root >= hub.world) throw new IllegalArgumentException(op + ": root " + root + " outside [0, " + hub.world + ")");
    }

    @Override
    public String toString() { return "local rank " + rank + " of " + hub.world; }
}
