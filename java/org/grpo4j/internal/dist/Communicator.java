package org.grpo4j.internal.dist;

import org.grpo4j.internal.backend.Tensor;

/**
 * Collectives between the data-parallel ranks of a run, on tensors of each rank's own backend: fp32 and bf16 for the
 * reductions, fp32, bf16 and int32 for the data movements. Every rank calls the same collectives in the same order
 * with the same sizes; a mismatch, a dead peer or a timeout throws {@link CommunicatorException} on every rank.
 *
 * <p>Ordering: a collective reads its inputs after every op already issued on the backend and its outputs are
 * visible to every op issued after {@link Work#await()}; its tensors must stay allocated until then (NCCL issues it
 * later, from another thread). {@link LocalCommunicator} (threads as ranks, the CPU) runs
 * each collective to completion before returning; {@link NcclCommunicator} queues it on its own CUDA stream, ordered
 * after the compute stream by an event, so that the caller can overlap it with compute until it awaits the result.
 *
 * <p>Reductions over ranks are sums (or sums divided by the world size for {@link ReduceOp#AVG}) accumulated in
 * fp32; bf16 results are rounded to nearest even. {@link LocalCommunicator} adds in rank order, so its results are
 * bitwise reproducible; NCCL's ring order and per-hop bf16 rounding may differ from it in the last bits.
 */
public interface Communicator extends AutoCloseable {

    /** A queued collective. */
    interface Work {
        /** Makes later compute (on the caller's backend) wait until this collective's outputs are complete. */
        void await();

        Work DONE = () -> {};
    }

    int rank();

    int worldSize();

    /** In place: every rank's {@code buf} becomes the reduction over ranks of the {@code buf}s. */
    Work allReduce(Tensor buf, ReduceOp op);

    /** {@code out} [n] = reduction over ranks of {@code in}[rank n, (rank + 1) n); {@code in} has world x n elements. */
    Work reduceScatter(Tensor out, Tensor in, ReduceOp op);

    /**
     * {@code out} on rank {@code root} = reduction over ranks of {@code in} (same size on every rank); other ranks
     * pass {@code out} null. The ZeRO-2 gradient buckets go to their owners this way (DeepSpeed's reduce path).
     */
    Work reduce(Tensor out, Tensor in, int root, ReduceOp op);

    /** {@code out} [world x n] = the ranks' {@code in} [n], in rank order. */
    Work allGather(Tensor out, Tensor in);

    /** {@code buffer} [world x n] in which rank r has filled [r n, (r + 1) n): afterwards every rank holds every piece. */
    Work allGatherInPlace(Tensor buffer);

    /** Every rank's {@code buf} becomes rank {@code root}'s. */
    Work broadcast(Tensor buf, int root);

    /** Returns when every rank has called it (and every collective issued before it has completed). */
    void barrier();

    /** What the ranks are doing (e.g. "step 12, update"), named by errors and by the watchdog. */
    void setContext(String what);

    /**
     * Host values of every rank, [rank][i], the same on every rank (for norms, token counts, flags and metrics; sent as
     * raw bits, so exact). Every rank passes the same number of values.
     */
    double[][] allGatherDoubles(double[] local);

    /**
     * Throws if the communicator has failed (a timeout, NCCL's error, an abort), naming why; call it after reading on
     * the host what a collective wrote. An abort ends the collectives NCCL was running without their results, and
     * {@link Work#await()} may have returned before it: the host read then returns what the buffer held, and only
     * this check tells that apart (a failure is recorded before NCCL's kernels are released, so a read that returned
     * before any failure was recorded read finished collectives). {@code what} names the read in the message.
     */
    default void check(String what) {}

    /** Releases the communicator's resources (it cannot be used afterwards). */
    @Override
    void close();
}
