package org.grpo4j.internal.model;

import java.util.ArrayList;
import java.util.List;
import org.grpo4j.internal.backend.DType;

/**
 * What one rank allocates, in bytes, for a Llama config under grpo4j's layout: the policy's compute weights in the
 * precision's dtype (a full replica, padded to the ZeRO-2 slices), the frozen reference in the same dtype, the gradient
 * buffer the backward pass writes (at world > 1 a window of two slabs of its largest group, {@link
 * LlamaWeights#gradientWindow}, bf16 in precision bf16 with an fp32 [V, D] buffer for the LM head's and embeddings'
 * gradients; at world 1 every parameter in fp32, the accumulator), and per rank slice the fp32 master weights (bf16 only: in fp32 the
 * compute weights are the master), AdamW's m and v, the accumulated gradients (world > 1) and the two gradient
 * buckets' receive buffers (world > 1); plus activations and the rollouts' KV cache. The gradients, the [V, D]
 * gradient, the accumulated slice and the buckets exist only during update phases ({@link Line#update()},
 * {@link #updateBytes()}): the model states ({@link #statesBytes()}) are the rest. {@code DistributedTrainingTest}
 * checks the states against what the backend really allocates, byte for byte.
 *
 * <p>DeepSpeed's ZeRO-2 figure for mixed-precision Adam is 2Ψ (bf16 weights) + 2Ψ (bf16 gradients) + 12Ψ/N (fp32
 * master and moments) ({@link #zeroFormulaBytes}); grpo4j adds the frozen reference (2Ψ), the fp32 accumulated
 * gradient slice (4Ψ/N) and the [V, D] fp32 gradient, and holds the bf16 gradients in a window of two groups instead
 * of 2Ψ (docs/distributed.md).
 */
public record MemoryEstimate(LlamaConfig config, int world, DType compute, long bucketElements, boolean referenceSharded) {

    /** bf16 compute weights and the default bucket (200M elements); the reference as reference_sharding auto holds it. */
    public MemoryEstimate(LlamaConfig config, int world) { this(config, world, DType.BF16, 200_000_000L); }

    /** The reference as reference_sharding auto (the default) holds it. */
    public MemoryEstimate(LlamaConfig config, int world, DType compute, long bucketElements) {
        this(config, world, compute, bucketElements, shardsReference("auto", config, world));
    }

    /**
     * Whether reference_sharding {@code mode} shards the reference of a {@code config} model over {@code world} ranks:
     * never at world 1 or with none; always with layers; with auto where it takes fewer elements than a replica (each
     * rank's layer pieces and the two gathered layers against every layer: more than 2 world / (world - 1) layers).
     */
    public static boolean shardsReference(String mode, LlamaConfig config, int world) {
        if (world == 1 || mode.equals("none")) return false;
        if (!mode.equals("auto") && !mode.equals("layers")) throw new IllegalArgumentException("reference_sharding must be auto, layers or none, got " + mode);
        long piece = LlamaWeights.layerPieceElements(config, world);
        if (piece * world > LlamaWeights.MAX_ELEMENTS) { // a gathered layer is one tensor
            if (mode.equals("auto")) return false;
            throw new IllegalArgumentException(String.format(java.util.Locale.ROOT, "reference_sharding layers: a layer of this model has %,d elements,"
                    + " more than one tensor holds (2^31 - 9); use reference_sharding none", LlamaWeights.layerElements(config)));
        }
        if (mode.equals("layers")) return true;
        return config.numLayers() * piece + LlamaWeights.layerWindowElements(config, piece * world)
                < LlamaWeights.allocatedElements(new ParameterLayout(config).totalElements());
    }

    public MemoryEstimate {
        if (world < 1) throw new IllegalArgumentException("world must be >= 1, got " + world);
        if (compute != DType.FP32 && compute != DType.BF16) throw new IllegalArgumentException("compute dtype fp32 or bf16, got " + compute);
        referenceSharded &= world > 1; // one rank holds the whole reference
    }

    public long parameters() { return new ParameterLayout(config).totalElements(); }

    /** The trainer's layout: its buckets cut at the backward pass's gradient groups. */
    public ShardLayout layout() { return new ShardLayout(parameters(), world, bucketElements, new ParameterLayout(config).backwardGroups()); }

    /**
     * Bytes of one row, by name; {@code update}: allocated only during an update phase (the SFT warm-up, a step's
     * training passes and optimizer steps), not beside generation's KV pool or the log-prob passes.
     */
    public record Line(String what, double bytes, boolean update) {
        public Line(String what, double bytes) { this(what, bytes, false); }
    }

    /** The model states of one rank, as allocated (see the class comment). */
    public List<Line> perRank() {
        ShardLayout s = layout();
        long p = parameters(), slice = s.sliceElements();
        int c = compute.bytes();
        String dt = compute == DType.BF16 ? "bf16" : "fp32";
        DType g = gradientDType();
        List<Line> l = new ArrayList<>();
        l.add(new Line("policy weights, " + dt + " (full replica)", (double) LlamaWeights.allocatedElements(s.padded()) * c));
        if (referenceSharded) {
            long piece = LlamaWeights.layerPieceElements(config, world);
            l.add(new Line("reference, " + dt + ": 1/" + world + " of every layer (sharded)", (double) config.numLayers() * piece * c));
            l.add(new Line("reference, " + dt + (config.tieWordEmbeddings() ? ": tied embeddings, 2 layer slabs" : ": embeddings, LM head, 2 layer slabs"),
                    (double) LlamaWeights.layerWindowElements(config, piece * world) * c));
        } else {
            l.add(new Line("reference policy, " + dt + " (frozen replica)", (double) LlamaWeights.allocatedElements(p) * c));
        }
        if (compute == DType.BF16) l.add(new Line("fp32 master weights (ZeRO-2 slice)", 4.0 * slice));
        l.add(new Line("AdamW moments m + v, fp32 (ZeRO-2 slice)", 8.0 * slice));
        l.add(new Line("gradient-norm chunk sums, fp32", 4.0 * Math.max(1, slice / s.normChunk())));
        // the update phase's (RankState.beginUpdate)
        if (world > 1)
            l.add(new Line("gradient window, " + (g == DType.BF16 ? "bf16" : "fp32") + " (2 slabs of its largest group)",
                    (double) LlamaWeights.gradientWindowElements(config) * g.bytes(), true));
        else
            l.add(new Line("gradient buffer, fp32 (full: the accumulator)", (double) LlamaWeights.allocatedElements(p) * g.bytes(), true));
        if (g == DType.BF16 || (world > 1 && config.tieWordEmbeddings())) // (RankState: bf16, or a window with tied embeddings)
            l.add(new Line("LM head + embedding gradient, fp32 [V, D]", 4.0 * config.vocabSize() * config.hiddenSize(), true));
        if (world > 1) {
            l.add(new Line("accumulated gradients, fp32 (ZeRO-2 slice)", 4.0 * slice, true));
            l.add(new Line("gradient buckets, 2 x " + dt + " receive", bucketBytes(), true));
        }
        return l;
    }

    /**
     * The gradient buffer's dtype: bf16 when world > 1 in precision bf16 (what ZeRO-2 reduces, per micro-batch, into
     * the fp32 slices), else fp32 (at world 1 the buffer is the fp32 accumulator across micro-batches).
     */
    public DType gradientDType() { return world > 1 && compute == DType.BF16 ? DType.BF16 : DType.FP32; }

    /** The two bucket slots' receive buffers for the owned piece (the gradient buffer is already in the compute dtype). */
    public double bucketBytes() {
        if (world == 1) return 0;
        return 2.0 * layout().largestPiece() * compute.bytes();
    }

    /** The model states: the sum of {@link #perRank()}'s lines that live for the whole run. */
    public double statesBytes() {
        double t = 0;
        for (Line x : perRank()) if (!x.update()) t += x.bytes();
        return t;
    }

    /** The update phase's buffers: the sum of {@link #perRank()}'s lines allocated only while it runs. */
    public double updateBytes() {
        double t = 0;
        for (Line x : perRank()) if (x.update()) t += x.bytes();
        return t;
    }

    /** DeepSpeed's ZeRO-2 model states per GPU, 2Ψ + 2Ψ + 12Ψ/N (no reference model). */
    public double zeroFormulaBytes() {
        double p = parameters();
        return 2 * p + 2 * p + 12 * p / world;
    }

    /** Elements one layer saves per token for its backward (see LlamaModel.LayerActs) plus its input. */
    public long savedPerTokenPerLayer() {
        LlamaConfig c = config;
        return c.hiddenSize() /* input */ + c.hiddenSize() /* h */ + 1 /* rstd1 */ + c.qDim() /* q */ + 2L * c.kvDim() /* k, v */
                + c.qDim() /* att */ + c.numHeads() /* lse */ + c.hiddenSize() /* mid */ + c.hiddenSize() /* h2 */ + 1 /* rstd2 */
                + 3L * c.intermediateSize() /* gate, up, act */;
    }

    /** Activation elements per token: all layers saved, or (checkpointing) layer inputs plus one layer recomputed. */
    public long activationElementsPerToken(boolean checkpointing) { return activationElementsPerToken(checkpointing ? config.numLayers() : 0); }

    /**
     * Activation elements per token when the first {@code recomputed} layers are recomputed in the backward (gradient
     * checkpointing of those layers; LlamaModel.forward) and the others keep what their backward needs: every layer's
     * input, the kept layers' saved values, and while a recomputed layer runs again its saved values and output.
     */
    public long activationElementsPerToken(int recomputed) {
        int layers = config.numLayers();
        if (recomputed < 0 || recomputed > layers) throw new IllegalArgumentException("recomputed layers " + recomputed + " not in [0, " + layers + "]");
        long layer = savedPerTokenPerLayer(), h = config.hiddenSize();
        long fin = 2L * h + 1; // final norm input/output + rstd
        return layers * h + (layers - recomputed) * (layer - h) + (recomputed > 0 ? layer : 0) + fin;
    }

    /** The layers whose saved values are held at once at the backward's peak: the kept ones, and one recomputed. */
    private long liveLayers(int recomputed) { return config.numLayers() - recomputed + (recomputed > 0 ? 1 : 0); }

    /**
     * Bytes of one training micro-batch of {@code tokens} packed tokens, {@code lossTokens} of them trained on: the
     * saved activations, the LM head's gathered rows and their gradient, the fp32 dHidden, the fused LM head's scratch
     * on CUDA (the larger of its two paths: a token block's logits within {@code lmRowsBytes}, or a chunk of logits, its
     * bf16 hi/lo pair and the fp32 dHidden accumulator; 48 bytes of state a token; the CPU needs less), and the
     * backward's largest per-layer temporaries (with checkpointing, the recomputed layer too): the MLP's, or the
     * attention's, counted for a prefix packing (the trainer's train_prefix_sharing), whose backward also holds the full
     * rows' q, k, v, output, their gradients and lse, and the fp32 sums of k's and v's gradients (at most {@code tokens} full rows; the compact rows it saves are
     * never more). For Llama shapes the MLP's are the larger either way.
     */
    public double trainingActivationBytes(long tokens, long lossTokens, boolean checkpointing, long lmRowsBytes) {
        return trainingActivationBytes(tokens, lossTokens, checkpointing ? config.numLayers() : 0, lmRowsBytes);
    }

    /**
     * {@link #trainingActivationBytes(long, long, boolean, long)} with the first {@code recomputed} layers recomputed
     * in the backward and the others' activations kept (all: gradient checkpointing; none: without).
     */
    public double trainingActivationBytes(long tokens, long lossTokens, int recomputed, long lmRowsBytes) {
        LlamaConfig c = config;
        int a = compute.bytes();
        long fp32PerLayer = 2 + c.numHeads(); // rstd1, rstd2, lse
        long layers = liveLayers(recomputed);
        double saved = tokens * ((activationElementsPerToken(recomputed) - layers * fp32PerLayer - 1) * (double) a + (layers * fp32PerLayer + 1) * 4.0);
        long block = Math.min(lossTokens, 2048), chunk = Math.min(c.vocabSize(), 4096);
        double lmScratch = Math.max(Math.min((double) lmRowsBytes, 4.0 * c.vocabSize() * block),
                8.0 * block * chunk + 4.0 * block * c.hiddenSize()) + 48.0 * lossTokens;
        double head = lossTokens * (2.0 * c.hiddenSize() * a + 6 * 4.0) + tokens * 4.0 * c.hiddenSize() + lmScratch;
        long mlp = 3L * c.intermediateSize() + 2L * c.hiddenSize();
        long att = 2L * c.qDim() + 2L * c.kvDim() + 2L * c.hiddenSize() + 4L * c.qDim() + 4L * c.kvDim() + (4L / a) * (c.numHeads() + 2L * c.kvDim());
        double backward = tokens * (double) a * (2L * c.hiddenSize() + Math.max(mlp, att) + (recomputed > 0 ? c.hiddenSize() : 0));
        return saved + head + backward;
    }

    /** As {@link #trainingActivationBytes(long, long, boolean, long)} with the LM head's default bound, 256 MiB. */
    public double trainingActivationBytes(long tokens, long lossTokens, boolean checkpointing) {
        return trainingActivationBytes(tokens, lossTokens, checkpointing, 256L << 20);
    }

    /** Bytes of a no-grad log-prob pass over {@code tokens} packed tokens: two layer inputs and one layer's temporaries. */
    public double noGradActivationBytes(long tokens, long lossTokens) {
        int a = compute.bytes();
        return tokens * ((2.0 * config.hiddenSize() + savedPerTokenPerLayer()) * a + 4.0 * (2 + config.numHeads())) + lossTokens * (config.hiddenSize() * (double) a + 8);
    }

    /**
     * Working memory of generation besides the KV pool, for {@code maxBatch} sequences decoding at once and
     * {@code prefillTokens} prompt tokens prefilled together: the decode buffers (logits fp32; the decode attention's
     * partial states, two per query head with prefix groups, and their marks) and the prefill's layer temporaries and
     * per-sample logits.
     */
    public double generationBytes(int maxBatch, long prefillTokens) {
        LlamaConfig c = config;
        int a = compute.bytes();
        double partials = 2.0 * c.numHeads() * (c.headDim() + 2) * 4 + 8;
        double decode = maxBatch * (4.0 * c.vocabSize() + (6.0 * c.hiddenSize() + 3.0 * c.intermediateSize() + 2.0 * c.qDim() + 2.0 * c.kvDim()) * a
                + 64 + partials);
        double prefill = prefillTokens * (2.0 * c.hiddenSize() + savedPerTokenPerLayer()) * a + 2.0 * maxBatch * 4.0 * c.vocabSize();
        return decode + prefill;
    }

    /** Bytes of KV cache per token slot in the compute dtype. */
    public long kvBytesPerToken() { return 2L * config.numLayers() * config.kvDim() * compute.bytes(); }

    public static String human(double bytes) {
        String[] u = {"B", "KiB", "MiB", "GiB", "TiB"};
        int i = 0;
        while (bytes >= 1024 && i < u.length - 1) {
            bytes /= 1024;
            i++;
        }
        return String.format(java.util.Locale.ROOT, "%.2f %s", bytes, u[i]);
    }
}
