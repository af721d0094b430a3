package org.grpo4j.internal.train;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.grpo4j.internal.backend.AdamWStep;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.Tensor;
import org.grpo4j.internal.dist.Communicator;
import org.grpo4j.internal.dist.ReduceOp;
import org.grpo4j.internal.model.LlamaWeights;
import org.grpo4j.internal.model.SafeTensors;
import org.grpo4j.internal.model.ShardLayout;

/**
 * AdamW with ZeRO-2 sharding over the ranks of a {@link Communicator} (world 1: plain AdamW on the whole buffer).
 *
 * <p>Rank r owns slice r of {@link ShardLayout}: its fp32 master weights (in precision fp32 the compute weights are
 * the master: the slice is a view of them), AdamW's m and v, and the fp32 accumulated gradient of the slice. Per
 * micro-batch the backward pass writes this rank's full gradient buffer, in the compute dtype (bf16 in precision bf16,
 * DeepSpeed's 2 bytes a parameter; each weight gradient accumulated in fp32 and rounded once, see
 * LlamaModel.backward); as it completes gradients ({@link #gradientsReady}) the buckets above the frontier are reduced
 * to their owners straight from that buffer, and each owner adds its piece to its fp32 slice ({@link #endMicroBatch}).
 * Two bucket slots alternate, so a bucket's reduction overlaps the backward pass (on NCCL) until its slot is needed
 * again. The trainer's gradient buffer is a window ({@link LlamaWeights#gradientWindow}): two slabs, the backward
 * pass's gradient groups taking turns, each zeroed for its next group once the reductions reading it are done. It
 * and the phase's own buffers exist only during update phases ({@link #attachGradients} to {@link #detachGradients}).
 * At world 1 nothing is communicated: the backward pass accumulates the micro-batches straight into an fp32
 * gradient buffer, which is the accumulator (unless the sharded path is forced, which is how a one-GPU test drives the
 * bucket reductions and the in-place all-gather through NCCL at world 1; fp32 gradients are then cast to the compute
 * dtype in a staging buffer per bucket).
 *
 * <p>Each rank's per-rank gradient contributions are weighted by the trainer with 1/world folded in (the loss
 * aggregation's weights), so the reduction is a plain sum, as DeepSpeed's pre-divided buckets are.
 *
 * <p>The step: the squared global norm is the sum over {@link ShardLayout#normChunk() norm chunks}, in order, of each
 * chunk's fp32 squared sum (every rank computes its chunks', then all are gathered), the same bits at any world
 * size; clipping as torch's clip_grad_norm_; AdamW on the slice, writing the bf16 compute copy of the slice
 * (precision bf16); then an in-place all-gather of the compute weights.
 */
final class ShardedAdamW implements AutoCloseable {
    private final Backend be;
    private final Communicator comm;
    private final ShardLayout layout;
    private final LlamaWeights compute;
    private LlamaWeights grads; // attached after construction (see attachGradients)
    private final DType gradType;
    private final DType commType;
    private final int rank, world, real;
    /** The ZeRO-2 path (bucket reductions, fp32 accumulator, in-place all-gather): world > 1, or forced. */
    private final boolean sharded;
    private final long start;
    private final double beta1, beta2, eps;
    private double weightDecay;
    private final Tensor master; // bf16 precision: fp32 slice; fp32 precision: null (the compute slice is the master)
    private final Tensor m, v, partials;
    private Tensor acc; // the update phase's: allocated with the gradients (attachGradients), freed with them (detachGradients)
    private final Tensor[] staging = new Tensor[2], recv = new Tensor[2];
    private final List<List<Pending>> inflight = List.of(new ArrayList<>(), new ArrayList<>());
    private int nextBucket, bucketsIssued;
    /** A gradient window's groups (their first offsets, descending), the next one to complete, each slot's bucket's group. */
    private long[] groupStarts;
    private int nextGroup;
    private final int[] slotGroup = {-1, -1};
    private int step;

    /** A queued reduction of a bucket piece; {@code accumulate} when this rank owns it. */
    private record Pending(Communicator.Work work, ShardLayout.Piece piece, boolean accumulate) {}

    /**
     * @param compute the policy's compute weights, padded to {@code layout.padded()} elements
     * @param grads this rank's gradient buffer (what the backward pass writes): fp32, or on the sharded path the compute
     *              dtype
     */
    ShardedAdamW(Backend be, Communicator comm, ShardLayout layout, LlamaWeights compute, LlamaWeights grads, double beta1, double beta2,
                 double eps, double weightDecay) {
        this(be, comm, layout, compute, grads, beta1, beta2, eps, weightDecay, false);
    }

    /**
     * {@code alwaysShard}: take the ZeRO-2 path even at world 1, where each bucket's reduction is a copy to its one
     * owner (tests: the only way to run the reductions and the in-place all-gather through NCCL on one GPU).
     */
    ShardedAdamW(Backend be, Communicator comm, ShardLayout layout, LlamaWeights compute, LlamaWeights grads, double beta1, double beta2,
                 double eps, double weightDecay, boolean alwaysShard) {
        this(be, comm, layout, compute, grads.dtype(), beta1, beta2, eps, weightDecay, alwaysShard);
        try {
            attachGradients(grads);
        } catch (RuntimeException e) {
            close(); // the moments and master slice made above: nothing is left allocated by a refused construction
            throw e;
        }
    }

    /**
     * Without the gradient buffer yet: the trainer attaches one for each update phase ({@link #attachGradients}, before
     * its first step) and detaches it after the phase ({@link #detachGradients}).
     */
    ShardedAdamW(Backend be, Communicator comm, ShardLayout layout, LlamaWeights compute, DType gradType, double beta1, double beta2,
                 double eps, double weightDecay, boolean alwaysShard) {
        this.be = be;
        this.comm = comm;
        this.layout = layout;
        this.compute = compute;
        this.gradType = gradType;
        this.rank = comm.rank();
        this.world = comm.worldSize();
        this.sharded = world > 1 || alwaysShard;
        if (layout.world() != world) throw new IllegalArgumentException("layout for " + layout.world() + " ranks, communicator of " + world);
        if (compute.padded().numel() != layout.padded())
            throw new IllegalArgumentException("compute weights hold " + compute.padded().numel() + " elements, the layout " + layout.padded());
        this.commType = compute.dtype();
        if (gradType != DType.FP32 && !(sharded && gradType == commType))
            throw new IllegalArgumentException("gradients are fp32, or in the compute dtype on the sharded path; got " + gradType);
        this.real = layout.realLength(rank);
        this.start = layout.sliceStart(rank);
        this.beta1 = beta1;
        this.beta2 = beta2;
        this.eps = eps;
        this.weightDecay = weightDecay;
        int s = layout.slice();
        List<Tensor> made = new ArrayList<>();
        try {
            this.master = compute.dtype() == DType.BF16 ? keep(made, be.zeros(DType.FP32, s)) : null;
            this.m = keep(made, be.zeros(DType.FP32, s));
            this.v = keep(made, be.zeros(DType.FP32, s));
            this.partials = keep(made, be.zeros(DType.FP32, Math.max(1, s / layout.normChunk())));
        } catch (RuntimeException e) {
            for (Tensor t : made) t.close();
            throw e;
        }
    }

    /**
     * The gradient buffer the backward pass writes, of the dtype given at construction, for an update phase: with it
     * the phase's own buffers (the sharded path's fp32 accumulated slice and the bucket slots' receive and staging
     * buffers) are allocated, until {@link #detachGradients}.
     */
    void attachGradients(LlamaWeights g) {
        if (grads != null) throw new IllegalStateException("gradients already attached");
        if (g.dtype() != gradType) throw new IllegalArgumentException("gradients are " + g.dtype() + ", the optimizer was made for " + gradType);
        if (!g.config().equals(compute.config())) throw new IllegalArgumentException("gradients of another model config");
        if (g.windowed()) {
            if (!sharded) throw new IllegalArgumentException("a gradient window needs the sharded path (it is no accumulator)");
            for (ShardLayout.Bucket b : layout.buckets())
                if (g.groupOf(b.from()) != g.groupOf(b.to() - 1))
                    throw new IllegalArgumentException("bucket [" + b.from() + ", " + b.to() + ") straddles two backward groups of the gradient window:"
                            + " the layout must be cut at them (ShardLayout with ParameterLayout.backwardGroups())");
            groupStarts = g.groupStarts();
        }
        if (sharded) {
            List<Tensor> made = new ArrayList<>();
            try {
                acc = keep(made, be.zeros(DType.FP32, layout.slice()));
                for (int k = 0; k < 2; k++) {
                    if (commType != gradType) staging[k] = keep(made, be.empty(commType, layout.largestBucket()));
                    recv[k] = keep(made, be.empty(commType, Math.max(1, layout.largestPiece())));
                }
            } catch (RuntimeException e) {
                for (Tensor t : made) t.close();
                acc = staging[0] = staging[1] = recv[0] = recv[1] = null;
                throw e;
            }
        }
        this.grads = g;
    }

    /**
     * Ends an update phase (after its last optimizer step, every reduction done): frees the phase's buffers and lets go
     * of the gradients (the caller frees them), so that generation finds that memory free.
     */
    void detachGradients() {
        if (grads == null) return;
        for (int k = 0; k < 2; k++) if (!inflight.get(k).isEmpty()) throw new IllegalStateException("detachGradients with reductions in flight");
        for (Tensor t : new Tensor[] {acc, staging[0], staging[1], recv[0], recv[1]}) if (t != null) t.close();
        acc = staging[0] = staging[1] = recv[0] = recv[1] = null;
        grads = null;
        groupStarts = null;
    }

    /** Whether gradients are attached (an update phase is on). */
    boolean attached() { return grads != null; }

    private static Tensor keep(List<Tensor> made, Tensor t) {
        made.add(t);
        return t;
    }

    int steps() { return step; }

    /** Fresh moments and step count, and a new weight decay (the GRPO optimizer after the warm-up's). */
    void reset(double weightDecay) {
        this.weightDecay = weightDecay;
        be.fill(m, 0);
        be.fill(v, 0);
        step = 0;
    }

    ShardLayout layout() { return layout; }

    /** This rank's slice of the fp32 master weights from the full fp32 weights {@code w} (bf16 precision). */
    void setMaster(LlamaWeights w) {
        if (master == null || real == 0) return;
        be.copy(master.view(0, real), w.range(start, real));
    }

    /** This rank's slice of the fp32 master weights read from the HF model directory {@code dir} (bf16 precision). */
    void setMaster(Path dir) throws IOException {
        if (master == null || real == 0) return;
        LlamaWeights.readRange(be, dir, compute.config(), start, master.view(0, real));
    }

    /** This rank's slice of the fp32 master weights from {@link LlamaWeights#init}'s values with {@code seed} (bf16 precision). */
    void setMasterInit(long seed) {
        if (master == null || real == 0) return;
        LlamaWeights.initRange(be, compute.config(), seed, start, master.view(0, real));
    }

    /** The fp32 master weights of this rank's slice (its parameters only). */
    private Tensor masterSlice() { return master != null ? master.view(0, real) : compute.padded().view(start, real); }

    /** The accumulated gradient of this rank's slice (its parameters only). */
    private Tensor gradSlice() { return acc != null ? acc.view(0, real) : grads.range(start, real); }

    // ---- gradients ----------------------------------------------------------------------------------------------

    /** Zeroes the accumulated gradients (a new optimizer step begins). */
    void startStep() {
        grads.zero();
        if (acc != null) be.fill(acc, 0);
    }

    /** Before a micro-batch's backward passes: at world > 1 the gradient buffer starts from zero. */
    void startMicroBatch() {
        if (!sharded) return;
        grads.zero(); // a window: both slabs, for groups 0 and 1
        nextBucket = 0;
        nextGroup = 0;
    }

    /**
     * Every gradient at flat offset >= {@code frontier} is complete: reduce the buckets above it (world > 1). With a
     * gradient window, group by group: once group g is complete and its buckets issued, the slab group g + 1 is about to
     * be written into is made ready (group g - 1's reductions from it finished, then zeroed).
     */
    void gradientsReady(long frontier) {
        if (!sharded) return;
        List<ShardLayout.Bucket> bs = layout.buckets();
        if (groupStarts == null) {
            while (nextBucket < bs.size() && bs.get(nextBucket).from() >= frontier) issue(bs.get(nextBucket++), -1);
            return;
        }
        while (nextGroup < groupStarts.length && groupStarts[nextGroup] >= frontier) {
            int g = nextGroup++;
            while (nextBucket < bs.size() && bs.get(nextBucket).from() >= groupStarts[g]) issue(bs.get(nextBucket++), g);
            int next = g + 1;
            if (next >= 2 && next < groupStarts.length) {
                for (int k = 0; k < 2; k++) if (slotGroup[k] == next - 2) finish(k);
                grads.zeroGroup(next);
            }
        }
    }

    /** After a micro-batch's backward: reduce what is left, wait, and add the owned pieces to the slice (world > 1). */
    void endMicroBatch() {
        if (!sharded) return;
        gradientsReady(0);
        for (int k = 0; k < 2; k++) finish((bucketsIssued + k) % 2);
    }

    private void issue(ShardLayout.Bucket b, int group) {
        int slot = bucketsIssued++ % 2;
        finish(slot); // the slot's buffers are free once its previous bucket is reduced and accumulated
        slotGroup[slot] = group;
        int len = (int) (b.to() - b.from());
        Tensor src = grads.range(b.from(), len);
        if (staging[slot] != null) {
            be.cast(staging[slot].view(0, len), src);
            src = staging[slot].view(0, len);
        }
        for (ShardLayout.Piece p : b.pieces()) {
            Tensor in = src.view(p.from() - b.from(), p.length());
            boolean mine = p.owner() == rank;
            Communicator.Work w = comm.reduce(mine ? recv[slot].view(0, p.length()) : null, in, p.owner(), ReduceOp.SUM);
            inflight.get(slot).add(new Pending(w, p, mine));
        }
    }

    private void finish(int slot) {
        List<Pending> ps = inflight.get(slot);
        for (Pending p : ps) {
            p.work().await();
            if (p.accumulate()) be.axpy(acc.view(p.piece().from() - start, p.piece().length()), 1f, recv[slot].view(0, p.piece().length()));
        }
        ps.clear();
        slotGroup[slot] = -1;
    }

    // ---- the step -----------------------------------------------------------------------------------------------

    /** The global gradient norm and whether every rank's loss was finite. */
    record Norm(double norm, boolean lossesFinite) {
        boolean finite() { return lossesFinite && Double.isFinite(norm); }
    }

    /**
     * The global L2 norm of the accumulated gradients (a collective: every rank calls it), gathered with each rank's
     * {@code lossFinite} flag.
     */
    Norm gradNorm(boolean lossFinite) {
        int c = layout.normChunk(), chunks = (int) partials.numel();
        be.fill(partials, 0);
        Tensor g = gradSlice();
        for (int k = 0; k < chunks && (long) k * c < real; k++)
            be.sumSquares(partials.view(k, 1), g.view((long) k * c, (int) Math.min(c, real - (long) k * c)));
        float[] p = partials.toFloats();
        double[] mine = new double[p.length + 1];
        mine[0] = lossFinite ? 1 : 0;
        for (int k = 0; k < p.length; k++) mine[k + 1] = p[k];
        double[][] all = comm.allGatherDoubles(mine);
        double total = 0;
        boolean finite = true;
        for (double[] r : all) {
            finite &= r[0] == 1;
            for (int k = 1; k < r.length; k++) total += r[k];
        }
        return new Norm(Math.sqrt(total), finite);
    }

    /**
     * Clips the accumulated gradients to {@code maxNorm} (torch's clip_grad_norm_: coefficient maxNorm / (norm +
     * 1e-6), when below 1) and applies one AdamW step with learning rate {@code lr} to this rank's slice, then
     * all-gathers the compute weights. The step reads the gradients times the coefficient; the gradient buffer keeps
     * the unclipped values (it is zeroed before the next accumulation). The caller has checked that the norm is finite.
     */
    void step(double norm, double maxNorm, double lr) {
        double coef = maxNorm / (norm + 1e-6);
        step++;
        if (real > 0) {
            Tensor out = master != null ? compute.padded().view(start, real) : null;
            // the clipping coefficient is folded into the step (AdamWStep.gradScale): no pass of its own
            be.adamW(masterSlice(), gradSlice(), m.view(0, real), v.view(0, real), new AdamWStep((float) lr, (float) beta1, (float) beta2,
                    (float) eps, (float) weightDecay, step, coef < 1 ? (float) coef : 1f), out);
        }
        if (sharded) comm.allGatherInPlace(compute.padded()).await();
    }

    // ---- checkpoints ----------------------------------------------------------------------------------------------

    /** The optimizer file of this rank in a checkpoint ({@code optimizer.safetensors} at world 1). */
    static String fileName(int rank, int world) {
        return world == 1 ? "optimizer.safetensors" : String.format("optimizer_rank_%05d_of_%05d.safetensors", rank, world);
    }

    /** Writes this rank's moments (its parameters only) and the step into {@code dir}. */
    void save(Path dir) throws IOException {
        SafeTensors.write(dir.resolve(fileName(rank, world)), List.of(new SafeTensors.Out("exp_avg", new int[] {real}, LlamaWeights.download(m.view(0, real))),
                new SafeTensors.Out("exp_avg_sq", new int[] {real}, LlamaWeights.download(v.view(0, real)))), "F32",
                Map.of("step", String.valueOf(step), "rank", String.valueOf(rank), "world_size", String.valueOf(world),
                        "first_parameter", String.valueOf(start), "parameters", String.valueOf(layout.parameters())));
    }

    /**
     * Reads this rank's moments and step from checkpoint {@code dir}, written by {@code savedWorld} ranks: at another
     * world size (a resharded resume) this rank's range of the flat moments is put together from the saved slices it
     * overlaps, each file's range read from its metadata (first_parameter and its tensors' length); the files, in rank
     * order, must follow each other from parameter 0 to the last and agree on the step.
     */
    void load(Path dir, int savedWorld) throws IOException {
        if (savedWorld == world) {
            load(dir);
            return;
        }
        Integer savedStep = null;
        long end = start + real, next = 0; // next: where rank r's slice must begin (the slices follow each other)
        for (int r = 0; r < savedWorld; r++) {
            Path file = dir.resolve(fileName(r, savedWorld));
            if (!java.nio.file.Files.isRegularFile(file))
                throw new java.nio.file.NoSuchFileException(file.toString(), null, "the optimizer state of rank " + r + " of the checkpoint's " + savedWorld);
            try (SafeTensors st = SafeTensors.open(file)) {
                // (a world-1 file written before the slices named their first parameter starts at 0)
                long first = st.metadata().containsKey("first_parameter") ? metadataLong(st, file, "first_parameter") : next, n = -1;
                if (st.metadata().containsKey("rank") && metadataLong(st, file, "rank") != r)
                    throw new IOException(file + ": metadata rank " + st.metadata().get("rank") + ", but its name says rank " + r);
                for (String k : new String[] {"exp_avg", "exp_avg_sq"}) {
                    if (!st.tensors().containsKey(k)) throw new IOException(file + ": tensor " + k + " is missing");
                    long kn = st.tensors().get(k).numel();
                    if (n >= 0 && kn != n) throw new IOException(file + ": exp_avg and exp_avg_sq differ in length (" + n + ", " + kn + ")");
                    n = kn;
                }
                // (a slice of padding only holds nothing and may start past the parameters)
                if (metadataLong(st, file, "parameters") != layout.parameters() || first < 0 || n > 0 && first + n > layout.parameters())
                    throw new IOException(file + ": its slice [" + first + ", " + (first + n) + ") of " + metadataLong(st, file, "parameters")
                            + " parameters does not fit this model's " + layout.parameters());
                if (n > 0 && first != next)
                    throw new IOException(file + ": its slice starts at parameter " + first + ", but the slices before it end at " + next
                            + " (each rank's slice follows the one before)");
                if (n > 0) next = first + n;
                int step = metadataStep(st, file);
                if (savedStep != null && step != savedStep)
                    throw new IOException(file + ": step " + step + ", but rank 0's file says " + savedStep);
                savedStep = step;
                long a = Math.max(start, first), b = Math.min(end, first + n);
                if (a < b) {
                    LlamaWeights.uploadFinite(be, st, file, "exp_avg", a - first, m.view(a - start, (int) (b - a)), false);
                    LlamaWeights.uploadFinite(be, st, file, "exp_avg_sq", a - first, v.view(a - start, (int) (b - a)), true);
                }
            }
        }
        if (next != layout.parameters()) // (slices that follow each other over every parameter cover this rank's range)
            throw new IOException(dir + ": the " + savedWorld + " optimizer slices end at parameter " + next + " of " + layout.parameters() + " (a slice missing"
                    + " or cut short)");
        step = savedStep;
    }

    /** The file's metadata step (an int). */
    private static int metadataStep(SafeTensors st, Path file) throws IOException {
        long step = metadataLong(st, file, "step");
        if (step != (int) step) throw new IOException(file + ": metadata step \"" + step + "\" is not an integer");
        return (int) step;
    }

    private static long metadataLong(SafeTensors st, Path file, String key) throws IOException {
        String s = st.metadata().get(key);
        if (s == null) throw new IOException(file + ": metadata " + key + " is missing");
        try {
            return Long.parseLong(s);
        } catch (NumberFormatException e) {
            throw new IOException(file + ": metadata " + key + " \"" + s + "\" is not an integer");
        }
    }

    /** Reads this rank's moments and step from checkpoint {@code dir} (written at the same world size). */
    void load(Path dir) throws IOException {
        Path file = dir.resolve(fileName(rank, world));
        if (!java.nio.file.Files.isRegularFile(file))
            throw new java.nio.file.NoSuchFileException(file.toString(), null, "the optimizer state of rank " + rank + " of " + world);
        try (SafeTensors st = SafeTensors.open(file)) {
            for (String k : new String[] {"exp_avg", "exp_avg_sq"}) {
                if (!st.tensors().containsKey(k)) throw new IOException(file + ": tensor " + k + " is missing");
                if (st.tensors().get(k).numel() != real)
                    throw new IOException(file + ": tensor " + k + " has " + st.tensors().get(k).numel() + " elements, rank " + rank + "'s slice of the model "
                            + real);
            }
            // (a file of the same world size written for another rank or model: refused like a resharded one)
            for (String[] kv : new String[][] {{"rank", String.valueOf(rank)}, {"world_size", String.valueOf(world)},
                    {"first_parameter", String.valueOf(start)}, {"parameters", String.valueOf(layout.parameters())}})
                if (st.metadata().containsKey(kv[0]) && metadataLong(st, file, kv[0]) != Long.parseLong(kv[1]))
                    throw new IOException(file + ": metadata " + kv[0] + " " + st.metadata().get(kv[0]) + ", but rank " + rank + " of " + world
                            + " of this model needs " + kv[1]);
            if (real > 0) { // in pieces: a rank's moments are 4 GB each for 8B at world 8, and a process loads all its ranks at once
                LlamaWeights.uploadFinite(be, st, file, "exp_avg", 0, m.view(0, real), false);
                LlamaWeights.uploadFinite(be, st, file, "exp_avg_sq", 0, v.view(0, real), true);
            }
            step = metadataStep(st, file);
        }
    }

    /**
     * One parameter tensor of the fp32 master weights on rank 0's host, null on the other ranks: a collective every
     * rank calls for the same tensors in the same order. In precision fp32 the compute weights are the master and a
     * full replica on every rank, so rank 0 reads its own (nothing is communicated); in bf16 each owner of a part of
     * the tensor broadcasts it through a staging buffer of at most 2^22 elements.
     */
    float[] gatherTensor(org.grpo4j.internal.model.ParameterLayout.Entry e) {
        int n = Math.toIntExact(e.numel());
        float[] host = rank == 0 ? new float[n] : null;
        if (master == null || world == 1) {
            if (host != null) LlamaWeights.readInto(master == null ? compute.range(e.offset(), n) : master.view(e.offset(), n), host);
            return host;
        }
        long s = layout.sliceElements();
        int chunk = 1 << 22;
        try (Tensor stage = be.empty(DType.FP32, (int) Math.min(chunk, n))) {
            for (long a = e.offset(); a < e.offset() + n; ) {
                int owner = (int) (a / s);
                long end = Math.min(e.offset() + n, Math.min((owner + 1) * s, a + chunk));
                int len = (int) (end - a);
                Tensor st = stage.view(0, len);
                if (owner == rank) be.copy(st, master.view(a - start, len));
                comm.broadcast(st, owner).await();
                if (host != null) {
                    System.arraycopy(st.toFloats(), 0, host, (int) (a - e.offset()), len);
                    comm.check("the checkpoint's gather of " + e.name()); // (an aborted broadcast leaves st as it was)
                }
                a = end;
            }
        }
        return host;
    }

    /**
     * The full fp32 master weights on rank 0's host, null on the other ranks (a collective; models below 2^31
     * parameters): {@link #gatherTensor} over every tensor.
     */
    float[] gatherMaster() {
        float[] host = rank == 0 ? new float[Math.toIntExact(layout.parameters())] : null;
        for (org.grpo4j.internal.model.ParameterLayout.Entry e : compute.layout().entries()) {
            float[] t = gatherTensor(e);
            if (host != null) System.arraycopy(t, 0, host, (int) e.offset(), t.length);
        }
        return host;
    }

    /**
     * Rank 0's source of the master weights for {@link LlamaWeights#saveFrom}: each tensor is gathered
     * ({@link #gatherTensor}) when its first piece is asked for and dropped after its last, so the host holds one
     * tensor at a time.
     */
    LlamaWeights.Values masterValues() {
        return e -> new SafeTensors.Source() {
            private float[] held;

            @Override
            public void read(long from, float[] into, int length) {
                if (held == null) held = gatherTensor(e);
                System.arraycopy(held, (int) from, into, 0, length);
                if (from + length == e.numel()) held = null;
            }
        };
    }

    @Override
    public void close() {
        for (Tensor t : new Tensor[] {master, m, v, acc, partials, staging[0], staging[1], recv[0], recv[1]}) if (t != null) t.close();
    }
}
