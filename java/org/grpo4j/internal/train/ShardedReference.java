package org.grpo4j.internal.train;

import java.io.IOException;
import java.nio.file.Path;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.Tensor;
import org.grpo4j.internal.dist.Communicator;
import org.grpo4j.internal.model.LlamaConfig;
import org.grpo4j.internal.model.LlamaModel;
import org.grpo4j.internal.model.LlamaWeights;
import org.grpo4j.internal.model.ParameterLayout;

/**
 * The frozen reference policy sharded over the ranks, ZeRO-3 style (reference_sharding layers): each rank keeps
 * 1/world of every decoder layer (a piece of {@link LlamaWeights#layerPieceElements} elements; the layer's flat range cut into
 * world equal pieces, the last ones zero-padded), and the embeddings, the final norm and an untied LM head whole;
 * a no-grad pass gathers each layer from the ranks into one of two slabs just before it runs
 * ({@link LlamaModel.LayerFeed}), and gathers the next layer into the other slab while it runs (on CUDA the
 * all-gather runs on NCCL's stream beside the layer's compute). Llama 3.1 8B at 8 ranks keeps 1.6 GiB of layer pieces
 * and 0.8 GiB of slabs instead of a 13 GiB replica of its layers; each pass moves a layer's (world - 1) / world
 * through NCCL once.
 *
 * <p>The gathered weights are the same bits as the replica's, so the log-probs are too. Every rank issues the same
 * all-gathers in the same order: each pass gathers every layer once, in order ({@link #endPass} completes a pass
 * that stopped early or had no tokens), and a rank with fewer passes than another takes part in the others' passes
 * with {@link #idlePass}.
 */
final class ShardedReference implements LlamaModel.LayerFeed, AutoCloseable {
    private final Communicator comm;
    private final LlamaWeights weights;
    private final Tensor[] pieces;
    private final long piece, layer;
    private final LlamaModel model;
    private int issued; // layers issued in this pass: 0 .. L
    private int acquired = -1; // the last layer acquired in this pass
    private Communicator.Work pending; // the gather of layer issued - 1, not yet awaited
    private long gathers;

    private ShardedReference(Backend be, Communicator comm, LlamaConfig config, DType dtype) {
        this.comm = comm;
        this.layer = LlamaWeights.layerElements(config);
        this.piece = LlamaWeights.layerPieceElements(config, comm.worldSize());
        this.pieces = new Tensor[config.numLayers()];
        LlamaWeights w = LlamaWeights.layerWindow(be, config, dtype, piece * comm.worldSize());
        try {
            for (int l = 0; l < pieces.length; l++) pieces[l] = be.zeros(dtype, Math.toIntExact(piece));
        } catch (RuntimeException e) {
            for (Tensor t : pieces) if (t != null) t.close();
            w.close();
            throw e;
        }
        this.weights = w;
        this.model = new LlamaModel(w, this);
    }

    /** This rank's share of the {@code source} weights (the policy after the warm-up: a full replica on every rank). */
    static ShardedReference of(Communicator comm, LlamaWeights source) {
        ShardedReference r = new ShardedReference(source.backend(), comm, source.config(), source.dtype());
        try {
            Backend be = source.backend();
            for (ParameterLayout.Entry e : resident(source.layout())) be.copy(r.weights.get(e.name()), source.get(e.name()));
            for (int l = 0; l < r.pieces.length; l++) {
                long[] span = r.span(l);
                if (span[1] > 0) be.copy(r.pieces[l].view(0, (int) span[1]), source.range(span[0], (int) span[1]));
            }
        } catch (RuntimeException e) {
            r.close();
            throw e;
        }
        return r;
    }

    /**
     * This rank's share of the model in HF directory {@code dir} (a checkpoint's fp32 step-0 model), in {@code dtype}
     * (bf16: each fp32 value rounded once, as a cast of the whole model): the whole tensors read in pieces, the layer
     * pieces read for their flat ranges only.
     */
    static ShardedReference load(Backend be, Communicator comm, Path dir, LlamaConfig config, DType dtype) throws IOException {
        ShardedReference r = new ShardedReference(be, comm, config, dtype);
        try {
            for (ParameterLayout.Entry e : resident(r.weights.layout())) LlamaWeights.readRange(be, dir, config, e.offset(), r.weights.get(e.name()));
            for (int l = 0; l < r.pieces.length; l++) {
                long[] span = r.span(l);
                if (span[1] > 0) LlamaWeights.readRange(be, dir, config, span[0], r.pieces[l].view(0, (int) span[1]));
            }
        } catch (IOException | RuntimeException e) {
            r.close();
            throw e;
        }
        return r;
    }

    /** The tensors every rank holds whole: the embeddings, the final norm, an untied LM head. */
    private static java.util.List<ParameterLayout.Entry> resident(ParameterLayout lay) {
        return lay.entries().stream().filter(e -> !e.name().startsWith("model.layers.")).toList();
    }

    /** Layer l's flat range that this rank's piece holds: {start, length} (length 0 for a piece of padding only). */
    private long[] span(int l) {
        long from = (long) comm.rank() * piece, to = Math.min(layer, from + piece);
        return new long[] {weights.layerStart(l) + from, Math.max(0, to - from)};
    }

    /** The no-grad model over these weights (its passes gather the layers). */
    LlamaModel model() { return model; }

    /** All-gathers issued so far (every rank issues as many). */
    long gathers() { return gathers; }

    @Override
    public void acquire(int l) {
        if (l != acquired + 1) throw new IllegalStateException("layer " + l + " requested after layer " + acquired + ": a pass runs its layers in order, once");
        while (issued <= l) issueNext();
        if (pending != null && issued == l + 1) {
            pending.await();
            pending = null;
        }
        acquired = l;
        if (issued < pieces.length) issueNext(); // the next layer into the other slab while this one runs
    }

    /**
     * Ends a pass: gathers the layers it did not reach (a pass without loss tokens runs none), so that every rank has
     * issued a gather of every layer, then readies the next pass.
     */
    void endPass() {
        while (issued < pieces.length) issueNext();
        if (pending != null) pending.await();
        pending = null;
        issued = 0;
        acquired = -1;
    }

    /** A pass this rank has no rollouts for: it gathers every layer with the ranks that run one. */
    void idlePass() {
        if (issued != 0) throw new IllegalStateException("an idle pass inside a pass");
        endPass();
    }

    private void issueNext() {
        if (pending != null) pending.await(); // (endPass: gathers back to back) one not awaited at a time
        int l = issued++;
        pending = comm.allGather(weights.layerSlab(l), pieces[l]);
        gathers++;
    }

    /**
     * The checksum of the reference's weights, tensor by tensor in layout order ({@link RankState#checksum}), the same
     * value as for the whole replica: every rank gathers each layer (a collective), the rank that {@code hashes} reads
     * it back; 0 on the others.
     */
    long checksum(boolean hashes, long seed) {
        long h = seed;
        int gathered = -1;
        for (ParameterLayout.Entry e : weights.layout().entries()) {
            int l = layerOf(e.name());
            if (l >= 0 && l != gathered) {
                comm.allGather(weights.layerSlab(l), pieces[l]).await();
                gathers++;
                gathered = l;
            }
            if (hashes) h = RankState.checksum(h, weights, e);
        }
        return hashes ? h : 0L;
    }

    private static int layerOf(String name) {
        if (!name.startsWith("model.layers.")) return -1;
        int dot = name.indexOf('.', "model.layers.".length());
        return Integer.parseInt(name.substring("model.layers.".length(), dot));
    }

    @Override
    public void close() {
        for (Tensor t : pieces) if (t != null) t.close();
        weights.close();
    }
}
