package org.grpo4j.internal.train;

import org.grpo4j.train.GrpoConfig;
import java.io.IOException;
import java.nio.file.Path;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.Memory;
import org.grpo4j.internal.backend.Tensor;
import org.grpo4j.internal.data.ShufflingIterator;
import org.grpo4j.internal.dist.Communicator;
import org.grpo4j.internal.model.LlamaModel;
import org.grpo4j.internal.model.LlamaWeights;
import org.grpo4j.internal.model.MemoryEstimate;
import org.grpo4j.internal.model.ShardLayout;
import org.grpo4j.internal.rollout.Generator;

/**
 * One data-parallel rank: its backend and communicator, the policy's compute weights (a full replica in the
 * precision's dtype, padded to the ZeRO-2 slices), the frozen reference, the fp32 gradient buffer, the sharded
 * optimizer, the generator and its copy of the data iterator. Everything here runs on the rank's own thread.
 *
 * <p>The guard counters ({@link #optimizerSteps}, {@link #consecutiveNonfinite}, {@link #skippedSteps}) are decided
 * from gathered values, so they are the same on every rank.
 */
final class RankState implements AutoCloseable {
    final Setup s;
    final int rank, world;
    final Backend be;
    final Communicator comm;
    final ShardLayout layout;
    final ShufflingIterator iterator;
    /** Ranks sharing this rank's memory (in-process CPU ranks share the Java heap). */
    final int memorySharers;
    LlamaWeights compute, reference, grads;
    /** The reference sharded over the ranks (reference_sharding; {@link #reference} is then null), or null. */
    ShardedReference refShards;
    /** Reference passes this rank took part in without rollouts of its own (another rank had more). */
    long referenceIdlePasses;
    /**
     * With bf16 gradients (world > 1 in precision bf16): the fp32 [V, D] gradient of the LM head and of the
     * embeddings, rounded once into {@link #grads} (see {@link LlamaModel#backward}); null otherwise.
     */
    Tensor table32;
    LlamaModel model, refModel;
    ShardedAdamW optimizer;
    Generator generator;
    long optimizerSteps;
    int consecutiveNonfinite, skippedSteps;
    /** Training passes this rank ran, and the rounds it only took part in (reducing zeros: another rank had more passes). */
    long trainingPasses, paddingRounds, tokensRun;
    /** The first reward error of this rank's last step (null when none), for the step's report. */
    String lastRewardError;

    RankState(Setup s, Backend be, Communicator comm, int memorySharers) {
        this.s = s;
        this.be = be;
        this.comm = comm;
        this.rank = comm.rank();
        this.world = comm.worldSize();
        this.memorySharers = memorySharers;
        this.layout = shardLayout(s.model(), world, s.cfg().reduceBucketSize);
        this.iterator = new ShufflingIterator(s.train().size(), s.cfg().rolloutBatchSize(), s.cfg().seed);
    }

    /**
     * Runs one LM-head loss call (grpoLoss, tokenLogprobsBackward) with the CUDA backend's dz mode set from
     * lm_head_grad, and puts the backend's own mode back after it: a backend shared with other callers keeps theirs.
     * The mode is read when the call enqueues its GEMMs. Other backends compute dz exactly and ignore it.
     */
    void lmHeadLoss(Runnable call) {
        if (be instanceof org.grpo4j.internal.backend.CudaBackend cb) {
            cb.withLmHeadBf16GradSplit(s.cfg().lmHeadGrad.equals("split"), () -> cb.withLmHeadRowsBytes(s.cfg().lmHeadScratchBytes(), () -> {
                call.run();
                return null;
            }));
        } else {
            call.run();
        }
    }

    /**
     * Runs {@code body} (a step, the supervised warm-up) with the CUDA backend's attention set from the config's
     * attention_dq and attention_kernels, and puts the backend's own settings back after it, as {@link #lmHeadLoss}.
     * Other backends have one attention and ignore them.
     */
    <T> T withAttention(java.util.function.Supplier<T> body) {
        if (be instanceof org.grpo4j.internal.backend.CudaBackend cb)
            return cb.withAttention(attentionDq(s.cfg()), s.cfg().attentionKernels.equals("wgmma"), body);
        return body.get();
    }

    /**
     * Notes for a CUDA run whose backend was set to another attention than its default (by the JVM's properties,
     * -Dgrpo4j.attentionDq, -Dgrpo4j.deterministicAttention=false, -Dgrpo4j.attentionWgmma=true, e.g. through
     * GRPO4J_JAVA_OPTS, or by an application's CudaBackend.setAttentionDq / setWgmmaAttention) that the config does not
     * ask for: the trainer runs the config's attention, which its checkpoints keep for a resume.
     *
     * @param backendDq    the backend's own dQ mode
     * @param backendWgmma the backend's own choice of the Hopper kernels
     */
    static java.util.List<String> attentionNotes(GrpoConfig cfg, org.grpo4j.internal.backend.CudaBackend.AttentionDq backendDq, boolean backendWgmma) {
        java.util.List<String> out = new java.util.ArrayList<>();
        String dq = backendDq.name().toLowerCase(java.util.Locale.ROOT);
        String resume = " on a resume with --allow-changes)";
        if (backendDq != org.grpo4j.internal.backend.CudaBackend.AttentionDq.PASS && !dq.equals(cfg.attentionDq))
            out.add("the CUDA backend was set to attention dQ mode " + dq + " (-Dgrpo4j.attentionDq, -Dgrpo4j.deterministicAttention=false or"
                    + " CudaBackend.setAttentionDq), which this run"
                    + " does not use: the trainer runs its config's attention_dq (" + cfg.attentionDq + "; --set attention_dq=" + dq + " for that mode,"
                    + resume);
        if (backendWgmma && !cfg.attentionKernels.equals("wgmma"))
            out.add("the CUDA backend was set to the Hopper attention kernels (-Dgrpo4j.attentionWgmma or CudaBackend.setWgmmaAttention), which this"
                    + " run does not use: the trainer runs its config's attention_kernels (" + cfg.attentionKernels
                    + "; --set attention_kernels=wgmma for those," + resume);
        return out;
    }

    /** The config's attention_dq as the backend's mode. */
    static org.grpo4j.internal.backend.CudaBackend.AttentionDq attentionDq(GrpoConfig cfg) {
        return org.grpo4j.internal.backend.CudaBackend.AttentionDq.valueOf(cfg.attentionDq.toUpperCase(java.util.Locale.ROOT));
    }

    /**
     * Gives back the fused LM head's buffers (on CUDA, up to lm_head_scratch_mib of logits) and the ops' scratch (the
     * attention backward's dQ accumulator among others) once a training phase is over: the memory plan has them live
     * with the training activations only, not beside generation's KV pool. With the pooled allocator the next
     * phase's allocations reuse that memory, and the next call that needs them takes it back.
     */
    void releasePhaseBuffers() {
        if (be instanceof org.grpo4j.internal.backend.CudaBackend cb) {
            cb.releaseLmHeadBuffers();
            cb.releaseScratch();
        }
    }

    boolean leader() { return rank == 0; }

    /** The progress stream on the rank that prints (rank 0), null elsewhere. */
    java.io.PrintStream log() { return rank == 0 ? s.log() : null; }

    MemoryEstimate estimate() { return new MemoryEstimate(s.model(), world, s.dtype(), s.cfg().reduceBucketSize, shardsReference()); }

    /** Whether this run shards the reference over the ranks (reference_sharding, {@link MemoryEstimate#shardsReference}). */
    boolean shardsReference() { return MemoryEstimate.shardsReference(s.cfg().referenceSharding, s.model(), world); }

    /**
     * Allocates the model states from HF's random init with {@code seed} ({@link LlamaWeights#init}): the compute
     * weights (rounded once in precision bf16), the gradient buffer and the optimizer with this rank's fp32 master
     * slice, never holding the fp32 weights whole.
     */
    void initWeights(long seed, double weightDecay) {
        compute = LlamaWeights.init(be, s.model(), seed, s.dtype(), layout.padded());
        makeOptimizer(weightDecay);
        optimizer.setMasterInit(seed);
        finishLoading();
    }

    /**
     * Allocates the model states from the HF model directory (or checkpoint model) {@code dir}, never holding its
     * fp32 weights whole: the compute weights read tensor by tensor in their dtype (bf16: each piece read in fp32 and
     * rounded once, as a cast of the fp32 weights), the fp32 master slice read from the
     * files for this rank's range. So loading peaks below the model states. Refuses weights holding NaN or infinity.
     */
    void initWeights(java.nio.file.Path dir, double weightDecay) throws java.io.IOException {
        compute = LlamaWeights.load(be, dir, s.dtype(), layout.padded());
        requireRunsModel(dir, compute.config());
        String bad = compute.firstNonFiniteTensor();
        if (bad != null)
            throw new IllegalArgumentException(dir + ": tensor " + bad + " holds NaN or infinite values; the model is damaged (a diverged run?): start from an"
                    + " earlier checkpoint");
        makeOptimizer(weightDecay);
        optimizer.setMaster(dir);
        finishLoading();
    }

    private void makeOptimizer(double weightDecay) {
        GrpoConfig c = s.cfg();
        optimizer = new ShardedAdamW(be, comm, layout, compute, gradientDType(world, s.dtype()), c.adamBeta1, c.adamBeta2, c.adamEps, weightDecay, false);
    }

    private void finishLoading() {
        model = new LlamaModel(compute);
        // loading's temporaries sit idle in the CUDA pool: back to the device, for NCCL's buffers and cuBLAS
        if (be instanceof org.grpo4j.internal.backend.CudaBackend cb) cb.trimPool();
    }

    /**
     * Starts an update phase (the SFT warm-up, a step's training): allocates the gradients the backward writes and the
     * optimizer's phase buffers, which generation and the log-prob passes never need ({@link #endUpdate} frees them):
     * ZeRO-2 in precision bf16 writes bf16 gradients (2 bytes a parameter) group by group into a window of two slabs,
     * reduced per micro-batch into each owner's fp32 slice; at world 1 the full fp32 buffer is the accumulator across
     * micro-batches. Idempotent.
     */
    void beginUpdate() {
        if (grads != null) return;
        DType gradType = gradientDType(world, s.dtype());
        grads = world > 1 ? LlamaWeights.gradientWindow(be, s.model(), gradType) : LlamaWeights.zeros(be, s.model(), gradType);
        try {
            // the LM head's and embeddings' fp32 gradient: with bf16 gradients (rounded once from it), and in a window with
            // tied embeddings (the LM head's part, written before the backward, cannot wait in the embeddings' slab)
            if (gradType == DType.BF16 || (grads.windowed() && s.model().tieWordEmbeddings()))
                table32 = be.zeros(DType.FP32, s.model().vocabSize(), s.model().hiddenSize());
            optimizer.attachGradients(grads);
        } catch (RuntimeException e) {
            endUpdate();
            throw e;
        }
    }

    /** Ends an update phase: the gradients and the optimizer's phase buffers are freed (see {@link #beginUpdate}). Idempotent. */
    void endUpdate() {
        if (optimizer != null) optimizer.detachGradients();
        if (grads != null) grads.close();
        if (table32 != null) table32.close();
        grads = null;
        table32 = null;
    }

    /** ZeRO-2's layout, its buckets cut at the backward pass's gradient groups (each bucket in one group of the window). */
    static ShardLayout shardLayout(org.grpo4j.internal.model.LlamaConfig model, int world, long bucketElements) {
        org.grpo4j.internal.model.ParameterLayout p = new org.grpo4j.internal.model.ParameterLayout(model);
        return new ShardLayout(p.totalElements(), world, bucketElements, p.backwardGroups());
    }

    /** The gradient buffer's dtype: bf16 on the sharded path in precision bf16, else fp32. */
    static DType gradientDType(int world, DType compute) { return world > 1 && compute == DType.BF16 ? DType.BF16 : DType.FP32; }

    /**
     * Where the LM head's weight gradient goes for a micro-batch: the fp32 gradient itself, or {@link #table32}
     * (zeroed) with bf16 gradients; {@link #roundLmHeadGrad()} after the loss's backward.
     */
    Tensor lmHeadGrad() {
        if (table32 == null) return grads.get("lm_head.weight");
        be.fill(table32, 0);
        return table32;
    }

    /** bf16 gradients, untied LM head: its fp32 gradient rounded once into the buffer (tied: the backward does it). */
    void roundLmHeadGrad() {
        if (table32 != null && !s.model().tieWordEmbeddings()) be.cast(grads.get("lm_head.weight"), table32);
    }

    /**
     * The frozen reference: the current policy (after the warm-up), in the compute dtype; sharded over the ranks with
     * reference_sharding (every rank calls it). {@code hashes}: this rank takes the reference's checksum now (the
     * process's first rank, which writes it into checkpoints), while the whole policy is at hand.
     */
    void freezeReference(boolean hashes) {
        closeReference();
        if (shardsReference()) {
            if (hashes) referenceChecksum = checksumOf(compute); // the same bits as the reference's
            refShards = ShardedReference.of(comm, compute);
            refModel = refShards.model();
        } else {
            reference = compute.copy();
            refModel = new LlamaModel(reference);
        }
    }

    /**
     * The reference from the step-0 checkpoint's fp32 weights, cast to the compute dtype as at the run's start; sharded,
     * each rank reads its pieces only, with no collective (then every rank calls {@link #checksumLoadedReference}, whose
     * checksum gathers the layers).
     */
    void loadReference(Path step0Model) throws IOException {
        closeReference();
        // (the weights' checksum leaves the config out: a config.json edited since, its eps or rope, changes the reference)
        requireRunsModel(step0Model, org.grpo4j.internal.model.LlamaConfig.read(step0Model));
        if (shardsReference()) {
            refShards = ShardedReference.load(be, comm, step0Model, s.model(), s.dtype());
            refModel = refShards.model();
        } else {
            reference = LlamaWeights.load(be, step0Model, s.dtype());
            refModel = new LlamaModel(reference);
        }
    }

    /**
     * After {@link #loadReference}: a sharded reference's checksum, which gathers its layers (every rank calls it);
     * {@code hashes}: this rank keeps it ({@link #referenceChecksum}). Nothing to do for a whole reference.
     */
    void checksumLoadedReference(boolean hashes) {
        if (refShards == null) return;
        long h = refShards.checksum(hashes, CHECKSUM_SEED);
        if (hashes) referenceChecksum = h;
    }

    /** Refuses the model in {@code dir}, whose config.json says {@code c}, unless it is the run's model. */
    private void requireRunsModel(Path dir, org.grpo4j.internal.model.LlamaConfig c) {
        if (!c.equals(s.model()))
            throw new IllegalArgumentException(dir + ": config.json describes another model than the run's (" + c + " against " + s.model() + ")");
    }

    private void closeReference() {
        if (reference != null) reference.close();
        if (refShards != null) refShards.close();
        reference = null;
        refShards = null;
        refModel = null;
        referenceChecksum = null;
    }

    /**
     * The generator with its KV pool, sized now that the model states are allocated; its prefills held to what the
     * memory plan counts ({@link #prefillTokens}).
     */
    void createGenerator(int maxBatch, long poolBytes, int longestPrompt) {
        generator = new Generator(model, Generator.Config.forBudget(model, poolBytes, KV_BLOCK, maxBatch)
                .withAdmission(Generator.Admission.named(s.cfg().kvAdmission)).withPrefillTokens(prefillTokens(s.cfg(), longestPrompt)));
    }

    static final int KV_BLOCK = 16;

    /** The layers the training passes recompute in their backward (the first ones; LlamaModel.forward): {@link #planRecompute}. */
    int recomputeLayers = -1;

    /** The layers a GRPO training pass recomputes: as planned; before the plan as the config gives them, auto recomputing all. */
    int recompute() { return recomputeLayers >= 0 ? recomputeLayers : recomputeLayers(s.cfg(), null, s.model().numLayers(), -1, 1, 0, 0); }

    /** The share of the memory left after the model states that recompute_layers auto lets a training pass's activations take. */
    static final double RECOMPUTE_BUDGET = 0.9;

    /** Decides {@link #recomputeLayers} from the memory the backend has free now (the model states allocated, no update phase on). */
    void planRecompute(int longestPrompt) {
        if (be instanceof org.grpo4j.internal.backend.CpuBackend) System.gc(); // the heap's free bytes count the freed update buffers only after a collection
        recomputeLayers = recomputeLayers(s.cfg(), estimate(), s.model().numLayers(), Memory.available(be), memorySharers, longestPrompt,
                Preflight.lmRowsBytes(s.cfg(), s.dtype()));
    }

    /**
     * The layers a training pass recomputes: none without gradient_checkpointing; all, or the number recompute_layers
     * gives; for auto the fewest (the first layers) that keep the largest pass's estimated activations
     * ({@link #largestPassBytes}) within {@link #RECOMPUTE_BUDGET} of {@code free} (shared by {@code sharers} ranks),
     * all of them when that is unknown (-1; {@code est} is then not used) or even all do not fit (the memory check
     * before the run has the last word on that).
     */
    static int recomputeLayers(GrpoConfig c, MemoryEstimate est, int layers, long free, int sharers, int longestPrompt, long lmRowsBytes) {
        if (!c.gradientCheckpointing) return 0;
        if (c.recomputeLayers.equals("all")) return layers;
        if (!c.recomputeLayers.equals("auto")) {
            long n = Long.parseLong(c.recomputeLayers);
            if (n > layers) throw new IllegalArgumentException("recompute_layers " + n + " is more than the model's " + layers + " layers");
            return (int) n;
        }
        if (free < 0) return layers;
        // the memory left once the states exist, less the update phase's buffers, which a training pass runs beside
        double budget = RECOMPUTE_BUDGET * (free / (double) sharers - est.updateBytes());
        for (int k = 0; k < layers; k++)
            if (largestPassBytes(c, est, layers, k, longestPrompt, lmRowsBytes) <= budget) return k;
        return layers;
    }

    /**
     * An upper bound of a training pass's activations when {@code recomputed} layers are recomputed. The passes are
     * packed as the memory plan sized them, with every layer recomputed under gradient_checkpointing and none without
     * (PassPacking, whatever is recomputed, so that they do not depend on free memory): with pass_packing batch_size per_device_train_batch_size rollouts of the
     * longest; with tokens any run of rollouts whose all-recomputed estimate stays within that cap, so at most the
     * tokens {@code t} for which the packing's estimate of t tokens and no loss tokens reaches the cap, and the bound
     * adds what keeping the layers costs for t tokens to the cap.
     */
    static double largestPassBytes(GrpoConfig c, MemoryEstimate est, int layers, int recomputed, int longestPrompt, long lmRowsBytes) {
        long count = c.perDeviceTrainBatchSize, seq = (long) longestPrompt + c.responseLength;
        if (!PassPacking.byTokens(c)) return est.trainingActivationBytes(count * seq, count * c.responseLength, recomputed, lmRowsBytes);
        double cap = PassPacking.trainingCap(c, est, lmRowsBytes, longestPrompt);
        int packed = c.gradientCheckpointing ? layers : 0; // what the packing's estimate recomputes
        long lo = count * seq, hi = lo;
        while (est.trainingActivationBytes(hi, 0, packed, lmRowsBytes) <= cap) hi *= 2;
        while (hi - lo > 1) { // the most tokens with the packing's estimate within the cap
            long mid = (lo + hi) >>> 1;
            if (est.trainingActivationBytes(mid, 0, packed, lmRowsBytes) <= cap) lo = mid;
            else hi = mid;
        }
        return cap + Math.max(0, est.trainingActivationBytes(lo, 0, recomputed, lmRowsBytes) - est.trainingActivationBytes(lo, 0, packed, lmRowsBytes));
    }

    /**
     * The most tokens one prefill of generation holds, as the memory plan counts them: the rank's prompts
     * (local_rollout_batch_size of the longest); with kv_admission on_demand at least one sequence, what a preempted
     * sample prefills again when it resumes (its prompt and up to response_length - 1 tokens). worst_case counts as
     * before kv_admission existed, so that such a run's pool, and so its bits, stay as they were. The
     * generator holds its prefills to this under both admissions (eval steps' 32 prompts in several calls where they
     * exceed it: under worst_case they went into one prefill of up to 32 prompts, past what the plan counts).
     */
    static long prefillTokens(GrpoConfig c, int longestPrompt) {
        long prompts = (long) c.localRolloutBatchSize * longestPrompt;
        return c.kvAdmission.equals("worst_case") ? prompts : Math.max(prompts, (long) longestPrompt + c.responseLength - 1);
    }

    /**
     * The KV pool's bytes for this rank: kv_cache_mib when set; else kv_cache_fraction of what the backend has free
     * (shared by the ranks on this memory) after generation's working memory, capped at what the step's samples can
     * use at once (each sample's longest prompt plus response_length, in blocks). Refused, with what to change, when
     * not even one sequence fits.
     */
    long kvPoolBytes(int longestPrompt, int maxBatch) {
        return kvPoolBytes(s.cfg(), estimate(), Memory.available(be), memorySharers, longestPrompt, maxBatch, Memory.describe(be));
    }

    /** {@link #kvPoolBytes(int, int)} for {@code free} bytes (-1: unknown) shared by {@code sharers} ranks. */
    static long kvPoolBytes(GrpoConfig c, MemoryEstimate est, long free, int sharers, int longestPrompt, int maxBatch, String where) {
        long perBlock = est.kvBytesPerToken() * KV_BLOCK;
        long seqBlocks = (longestPrompt + c.responseLength + KV_BLOCK - 1) / KV_BLOCK + 1;
        long minimum = seqBlocks * perBlock;
        if (c.kvCacheMib > 0) return (long) c.kvCacheMib << 20;
        long useful = (long) maxBatch * seqBlocks * perBlock;
        if (free < 0) return useful; // unknown: what the samples can use
        double working = est.generationBytes(maxBatch, prefillTokens(c, longestPrompt));
        double mine = free / (double) sharers;
        // the cache allocates one block more than its pool (the pad block of a decode graph's padded rows): taken
        // from what is left before the fraction, so that even kv_cache_fraction 1 allocates no more than is free
        long left = (long) ((mine - working - perBlock) * c.kvCacheFraction);
        if (left < minimum) {
            java.util.List<String> fixes = new java.util.ArrayList<>(java.util.List.of("fewer samples in flight (local_rollout_batch_size x number_samples_per_prompt = " + maxBatch + ")"));
            if (c.kvCacheFraction < 1) fixes.add("a larger kv_cache_fraction");
            fixes.add("shorter sequences (response_length, max_prompt_token_length)");
            if (est.compute() != DType.BF16) fixes.add("precision bf16");
            fixes.add("more GPUs (world_size: ZeRO-2 shards the optimizer state)");
            throw new IllegalArgumentException("the KV cache does not fit: one sequence of " + (longestPrompt + c.responseLength) + " tokens needs "
                    + Memory.human(minimum) + " of KV cache (" + Memory.human(est.kvBytesPerToken()) + " per token) and generation " + Memory.human(working)
                    + " of working memory, but " + Memory.human(Math.max(0, mine)) + " " + where + (sharers > 1 ? " per rank (" + sharers + " ranks share it)" : "")
                    + " after the model states, of which kv_cache_fraction " + c.kvCacheFraction + " may hold the cache; to fit: "
                    + String.join(", ", fixes.subList(0, fixes.size() - 1)) + ", or " + fixes.get(fixes.size() - 1));
        }
        return Math.min(useful, left);
    }

    /**
     * A 64-bit checksum of the reference weights (recorded in checkpoints, checked on resume): of the whole replica; a
     * sharded reference's only on the rank that took it when the reference was made (freezeReference, loadReference).
     */
    long referenceChecksum() {
        if (referenceChecksum == null) {
            if (reference == null) throw new IllegalStateException("rank " + rank + " holds a piece of the reference and did not take its checksum");
            referenceChecksum = checksumOf(reference); // the reference never changes
        }
        return referenceChecksum;
    }

    private Long referenceChecksum;

    /** The checksum of weights {@code w}: of the flat buffer, tensor by tensor in layout order (padding not included). */
    private static long checksumOf(LlamaWeights w) {
        long h = CHECKSUM_SEED; // the checksum of the flat buffer, tensor by tensor in layout order (contiguous)
        for (org.grpo4j.internal.model.ParameterLayout.Entry e : w.layout().entries()) h = checksum(h, w, e);
        return h;
    }

    /** {@code h} continued over tensor {@code e} of {@code w}, in pieces of 2^24 elements (the checksum of checkpoints). */
    static long checksum(long h, LlamaWeights w, org.grpo4j.internal.model.ParameterLayout.Entry e) {
        for (long from = 0; from < e.numel(); from += 1 << 24)
            h = checksum(h, w.range(e.offset() + from, (int) Math.min(1 << 24, e.numel() - from)));
        return h;
    }

    private static final long CHECKSUM_SEED = 1125899906842597L;

    static long checksum(long h, Tensor t) {
        if (t.dtype() == DType.FP32) {
            for (float x : t.toFloats()) h = 31 * h + Float.floatToRawIntBits(x);
        } else {
            for (short x : t.toBf16Bits()) h = 31 * h + x;
        }
        return h;
    }

    @Override
    public void close() {
        if (compute != null) compute.close();
        if (grads != null) grads.close();
        if (table32 != null) table32.close();
        closeReference();
        if (optimizer != null) optimizer.close();
    }
}
