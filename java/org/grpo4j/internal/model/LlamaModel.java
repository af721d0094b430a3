package org.grpo4j.internal.model;

import java.util.ArrayList;
import java.util.List;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.Rope;
import org.grpo4j.internal.backend.Tensor;

/**
 * Llama forward and backward, written out layer by layer in the style of llm.c: each layer's forward says what it
 * saves ({@link LayerActs}) and its backward consumes exactly that. With gradient checkpointing only each layer's
 * input is kept and the layer's forward is recomputed inside its backward (bitwise identical on the CPU), for every
 * layer or only the first few (the trainer's recompute_layers).
 *
 * <pre>
 * layer:  h = rmsnorm(x) ; q,k,v = h Wq^T, h Wk^T, h Wv^T ; q,k = rope(q,k) ; att = attention(q,k,v)
 *         y = x + att Wo^T ; h2 = rmsnorm(y) ; a = silu(h2 Wg^T) * (h2 Wu^T) ; out = y + a Wd^T
 * model:  x0 = embed(ids) ; x_{l+1} = layer_l(x_l) ; hidden = rmsnorm(x_L) ; logits = hidden Wlm^T (never whole)
 * </pre>
 * Also: prefill and single-token decode steps against a paged KV cache for generation.
 *
 * <p>Precision follows the weights: fp32 weights run everything in fp32; bf16 weights (precision bf16) run bf16
 * activations, their gradients and the KV cache, with fp32 rstd/lse, logits and log-probs. Weight gradients are always
 * accumulated in an fp32 {@link LlamaWeights} by the backward GEMMs themselves (bf16 operands, fp32 accumulation and
 * output, beta 1: Megatron's "gradient accumulation fusion"), so bf16 mode never rounds a gradient to bf16.
 */
public final class LlamaModel {
    private final LlamaConfig c;
    private final Backend be;
    private final LlamaWeights w;
    private final Rope rope;
    private final float scale;
    private final float eps;
    private final DType adt; // activations, their gradients, the KV cache
    private final LayerFeed feed; // null: every layer's weights are always there

    /**
     * Fills a layer's weights before it runs, for weights whose layers are not all held at once
     * ({@link LlamaWeights#layerWindow}; the trainer's sharded reference, whose layers are gathered from the ranks).
     */
    public interface LayerFeed {
        /** Layer {@code layer}'s weights are needed now: every op issued afterwards sees them. */
        void acquire(int layer);
    }

    public LlamaModel(LlamaWeights weights) { this(weights, null); }

    /**
     * A model whose layers {@code feed} fills before each runs (null: the weights are whole). Such a model runs the
     * no-grad passes only ({@link #tokenLogprobs}, {@link #forwardNoGrad}, {@link #logits}); training and generation
     * are refused.
     */
    public LlamaModel(LlamaWeights weights, LayerFeed feed) {
        if (weights.windowed() && feed == null) throw new IllegalArgumentException("weights held in a window need a LayerFeed");
        this.feed = feed;
        this.w = weights;
        this.c = weights.config();
        this.be = weights.backend();
        this.rope = c.rope();
        this.scale = (float) (1 / Math.sqrt(c.headDim()));
        this.eps = (float) c.rmsNormEps();
        this.adt = weights.dtype();
    }

    public LlamaConfig config() { return c; }
    public LlamaWeights weights() { return w; }
    public Backend backend() { return be; }

    /** The dtype of activations, their gradients (e.g. the dHidden that {@link #backward} takes) and the KV cache. */
    public DType activationDType() { return adt; }

    /** Refuses {@code what} on a model whose layers are fed one at a time (it would need them all, or again). */
    private void requireWhole(String what) {
        if (feed != null) throw new IllegalStateException(what + " needs every layer's weights; this model's layers are gathered one at a time (no-grad passes only)");
    }

    private Tensor p(int layer, String name) { return w.get("model.layers." + layer + "." + name); }

    private Tensor f32(int... shape) { return be.empty(DType.FP32, shape); }

    /** An activation (or activation gradient) tensor: the weights' dtype. */
    private Tensor act(int... shape) { return be.empty(adt, shape); }

    /** y = x W^T (+ beta y). */
    private void linear(Tensor y, Tensor x, Tensor weight, float beta) { be.matmul(y, x, false, weight, true, 1f, beta); }

    /**
     * y[0] = x W_a^T and y[1] = x W_b^T for two weights of one shape that lie back to back in the flat buffer (k_proj
     * then v_proj, gate_proj then up_proj): one batched GEMM sharing x, so that a decode step's small GEMMs fill
     * twice the thread blocks in one launch (at 768 rows, k_proj alone is 48 tiles of 128 x 128 on 132 SMs). y is
     * [2, n, out]. Two GEMMs when the weights are not adjacent (a layout that ever changes).
     */
    private void linear2(Tensor y, Tensor x, int layer, String a, String b) {
        Tensor wa = p(layer, a), wb = p(layer, b);
        int n = x.dim(0), out = wa.dim(0), in = wa.dim(1);
        ParameterLayout lay = w.layout();
        long oa = lay.get("model.layers." + layer + "." + a).offset(), ob = lay.get("model.layers." + layer + "." + b).offset();
        if (ob == oa + (long) out * in && wb.dim(0) == out) {
            be.matmul(y, x, false, w.range(oa, 2 * out * in).reshape(2, out, in), true, 1f, 0f);
        } else {
            linear(y.view(0, n, out), x, wa, 0);
            linear(y.view((long) n * out, n, out), x, wb, 0);
        }
    }

    // ---- training forward / backward ----------------------------------------------------------------------------

    /** Saved by one layer's forward for its backward. */
    static final class LayerActs implements AutoCloseable {
        Tensor h, rstd1, q, k, v, att, lse, mid, h2, rstd2, g, u, a;

        @Override
        public void close() {
            for (Tensor t : new Tensor[] {h, rstd1, q, k, v, att, lse, mid, h2, rstd2, g, u, a}) if (t != null) t.close();
        }
    }

    /**
     * The rows a forward runs and what its attention needs: token ids and positions of the rows the layers run,
     * cu_seqlens of the attention's packing, and the prefix packing whose gathers connect the two (null: the rows are
     * the attention's own, a {@link PackedBatch}).
     */
    record Rows(int tokens, Tensor idsT, Tensor positionsT, Tensor cuT, PrefixPacking pp) {
        static Rows of(PackedBatch b) { return new Rows(b.tokens(), b.idsT, b.positionsT, b.cuT, null); }

        static Rows of(PrefixPacking pp) { return new Rows(pp.compactRows, pp.idsT, pp.positionsT, pp.cuT, pp); }
    }

    /** The result of {@link #forward}: final hidden states [N, D] and whatever the backward needs. */
    public final class Activations implements AutoCloseable {
        final Rows rows;
        final int recomputed;       // layers 0 .. recomputed - 1 run again in the backward (gradient checkpointing)
        final Tensor[] layerInputs; // x_0 .. x_{L}; x_L is the final norm's input
        final LayerActs[] layers;   // null for the recomputed layers
        final Tensor rstdFinal;
        final Tensor hidden;

        Activations(Rows rows, int recomputed) {
            this.rows = rows;
            this.recomputed = recomputed;
            this.layerInputs = new Tensor[c.numLayers() + 1];
            this.layers = new LayerActs[c.numLayers()];
            int n = rows.tokens();
            this.rstdFinal = f32(n);
            this.hidden = act(n, c.hiddenSize());
        }

        /**
         * Final normalized hidden states [N, D] (the LM head's input): one per row the layers ran, so for a
         * {@link PrefixPacking} one per compact row ({@link PrefixPacking#compactRow} maps a full row to it).
         */
        public Tensor hidden() { return hidden; }

        @Override
        public void close() {
            for (Tensor t : layerInputs) if (t != null) t.close();
            for (LayerActs a : layers) if (a != null) a.close();
            rstdFinal.close();
            hidden.close();
        }
    }

    /** Forward over a packed batch, keeping what {@link #backward} needs (only layer inputs when checkpointing). */
    public Activations forward(PackedBatch batch, boolean checkpointing) { return forward(Rows.of(batch), checkpointing ? c.numLayers() : 0); }

    /**
     * {@link #forward(PackedBatch, boolean)} with gradient checkpointing of the first {@code recomputed} layers only
     * (Megatron's block recomputation): those keep their input and run again in the backward, the others keep
     * everything their backward needs. 0 is no checkpointing, the layer count is full checkpointing; the gradients
     * are the same bits whichever is chosen (a layer recomputed from the same input computes the same values).
     */
    public Activations forward(PackedBatch batch, int recomputed) { return forward(Rows.of(batch), recomputed); }

    /**
     * {@link #forward(PackedBatch, boolean)} over sequences that share prefixes: the layers run on the compact rows
     * (each shared prefix once), attention on the full sequences through row gathers, as
     * {@link #tokenLogprobsSharedPrefix}; {@link #backward} then sums the gradients that the shared rows' keys and
     * values get from every sequence of their group. The same loss and gradients as the full packing's, up to
     * floating-point summation order (a shared key's gradient is summed over the group before the weight GEMMs).
     */
    public Activations forward(PrefixPacking pp, boolean checkpointing) { return forward(Rows.of(pp), checkpointing ? c.numLayers() : 0); }

    /** {@link #forward(PrefixPacking, boolean)} recomputing the first {@code recomputed} layers in the backward. */
    public Activations forward(PrefixPacking pp, int recomputed) { return forward(Rows.of(pp), recomputed); }

    private Activations forward(Rows rows, int recomputed) {
        requireWhole("a training forward");
        if (recomputed < 0 || recomputed > c.numLayers())
            throw new IllegalArgumentException("recomputed layers " + recomputed + " not in [0, " + c.numLayers() + "] (the model's layers)");
        int n = rows.tokens();
        Activations act = new Activations(rows, recomputed);
        try {
            Tensor x = act(n, c.hiddenSize());
            be.embedding(x, w.get("model.embed_tokens.weight"), rows.idsT());
            act.layerInputs[0] = x;
            for (int l = 0; l < c.numLayers(); l++) {
                Tensor out = act(n, c.hiddenSize());
                act.layerInputs[l + 1] = out; // closed with act if the layer fails
                LayerActs la = layerForward(l, act.layerInputs[l], out, rows);
                if (l < recomputed) la.close();
                else act.layers[l] = la;
            }
            be.rmsNorm(act.hidden, act.rstdFinal, act.layerInputs[c.numLayers()], w.get("model.norm.weight"), eps);
            return act;
        } catch (RuntimeException e) {
            act.close();
            throw e;
        }
    }

    private LayerActs layerForward(int l, Tensor x, Tensor out, Rows rows) {
        int n = x.dim(0), d = c.hiddenSize(), f = c.intermediateSize();
        LayerActs a = new LayerActs();
        try {
            a.h = act(n, d);
            a.rstd1 = f32(n);
            a.q = act(n, c.numHeads(), c.headDim());
            a.k = act(n, c.numKvHeads(), c.headDim());
            a.v = act(n, c.numKvHeads(), c.headDim());
            qkv(l, x, a.h, a.rstd1, a.q, a.k, a.v, rows.positionsT());
            a.att = act(n, c.numHeads(), c.headDim());
            a.lse = f32(n, c.numHeads());
            attention(a.att, a.lse, a.q, a.k, a.v, rows);
            a.mid = act(n, d);
            be.copy(a.mid, x);
            linear(a.mid, a.att.reshape(n, c.qDim()), p(l, "self_attn.o_proj.weight"), 1f);
            a.h2 = act(n, d);
            a.rstd2 = f32(n);
            a.g = act(n, f);
            a.u = act(n, f);
            a.a = act(n, f);
            mlp(l, a.mid, out, a.h2, a.rstd2, a.g, a.u, a.a);
            return a;
        } catch (RuntimeException e) {
            a.close();
            throw e;
        }
    }

    /** A layer's attention input: h = rmsNorm(x), q, k, v = its projections, RoPE on q and k at the given positions. */
    private void qkv(int l, Tensor x, Tensor h, Tensor rstd, Tensor q, Tensor k, Tensor v, Tensor positions) {
        int n = x.dim(0);
        be.rmsNorm(h, rstd, x, p(l, "input_layernorm.weight"), eps);
        linear(q.reshape(n, c.qDim()), h, p(l, "self_attn.q_proj.weight"), 0);
        linear(k.reshape(n, c.kvDim()), h, p(l, "self_attn.k_proj.weight"), 0);
        linear(v.reshape(n, c.kvDim()), h, p(l, "self_attn.v_proj.weight"), 0);
        be.rope(q, q, positions, rope);
        be.rope(k, k, positions, rope);
    }

    /** A layer's MLP with its residual: out = mid + down(swiglu(gate(h2), up(h2))), h2 = rmsNorm(mid). */
    private void mlp(int l, Tensor mid, Tensor out, Tensor h2, Tensor rstd2, Tensor g, Tensor u, Tensor a) {
        be.rmsNorm(h2, rstd2, mid, p(l, "post_attention_layernorm.weight"), eps);
        linear(g, h2, p(l, "mlp.gate_proj.weight"), 0);
        linear(u, h2, p(l, "mlp.up_proj.weight"), 0);
        be.swiglu(a, g, u);
        be.copy(out, mid);
        linear(out, a, p(l, "mlp.down_proj.weight"), 1f);
    }

    /**
     * Causal attention of the rows' q, k and v: directly, or for a {@link PrefixPacking} on the full sequences, q, k
     * and v gathered there and the output and log-sum-exp gathered back (a shared prefix row's are the same in every
     * sequence of its group: causal attention over the prefix alone).
     */
    private void attention(Tensor att, Tensor lse, Tensor q, Tensor k, Tensor v, Rows rows) {
        PrefixPacking pp = rows.pp();
        if (pp == null) {
            be.attention(att, lse, q, k, v, rows.cuT(), scale);
            return;
        }
        int nf = pp.fullRows, hq = c.numHeads(), hd = c.headDim();
        try (Tensor qf = gather(q, nf, pp.fullToCompactT); Tensor kf = gather(k, nf, pp.fullToCompactT); Tensor vf = gather(v, nf, pp.fullToCompactT);
             Tensor attF = act(nf, hq, hd); Tensor lseF = f32(nf, hq)) {
            be.attention(attF, lseF, qf, kf, vf, pp.cuT, scale);
            gatherInto(att, attF, pp.compactToFullT);
            gatherInto(lse, lseF, pp.compactToFullT);
        }
    }

    /**
     * {@link #attention}'s backward. For a {@link PrefixPacking}: on the full sequences, each compact row's output
     * gradient at the one full row its output came from (the others get zeros: {@code dattWithZeroRow} has a zero row
     * after the n compact rows, where {@link PrefixPacking#fullToRepT} sends them); dq is gathered back from those rows
     * (a full row with no output gradient gets no query gradient), dk and dv are summed over every full row of a
     * compact row (a shared key is attended by every sequence of its group), in fp32 (one embeddingBackward for both,
     * {@link PrefixPacking#fullToCompactTwiceT}), rounded once.
     */
    private void attentionBackward(Tensor dq, Tensor dk, Tensor dv, Tensor dattWithZeroRow, LayerActs a, Rows rows) {
        PrefixPacking pp = rows.pp();
        int n = rows.tokens();
        if (pp == null) {
            be.attentionBackward(dq, dk, dv, dattWithZeroRow, a.q, a.k, a.v, a.att, a.lse, rows.cuT(), scale);
            return;
        }
        int nf = pp.fullRows, hq = c.numHeads(), hkv = c.numKvHeads(), hd = c.headDim(), kd = c.kvDim();
        be.fill(dattWithZeroRow.rows(n, 1), 0);
        try (Tensor qf = gather(a.q, nf, pp.fullToCompactT); Tensor kf = gather(a.k, nf, pp.fullToCompactT); Tensor vf = gather(a.v, nf, pp.fullToCompactT);
             Tensor attF = gather(a.att, nf, pp.fullToCompactT); Tensor lseF = gather(a.lse, nf, pp.fullToCompactT);
             Tensor dattF = gather(dattWithZeroRow, nf, pp.fullToRepT);
             Tensor dqF = act(nf, hq, hd); Tensor dkvF = act(2 * nf, hkv, hd); Tensor acc = be.zeros(DType.FP32, 2 * n, kd)) {
            be.attentionBackward(dqF, dkvF.rows(0, nf), dkvF.rows(nf, nf), dattF, qf, kf, vf, attF, lseF, pp.cuT, scale);
            gatherInto(dq, dqF, pp.compactToFullT);
            // dk and dv summed over each compact row's full rows in one deterministic pass, in fp32, then rounded to the
            // activation dtype (in bf16 a second rounding: attention's backward gave each full row's in bf16)
            be.embeddingBackward(acc, dkvF.reshape(2 * nf, kd), pp.fullToCompactTwiceT);
            Tensor dkSum = acc.rows(0, n), dvSum = acc.rows(n, n);
            if (adt == DType.FP32) {
                be.copy(dk.reshape(n, kd), dkSum);
                be.copy(dv.reshape(n, kd), dvSum);
            } else {
                be.cast(dk.reshape(n, kd), dkSum);
                be.cast(dv.reshape(n, kd), dvSum);
            }
        }
    }

    /** t's rows at {@code idx} ([rows] int32) as a new tensor of {@code rows} rows (t's other dimensions). */
    private Tensor gather(Tensor t, int rows, Tensor idx) {
        int[] shape = t.shape();
        shape[0] = rows;
        Tensor out = be.empty(t.dtype(), shape);
        try {
            gatherInto(out, t, idx);
            return out;
        } catch (RuntimeException e) {
            out.close();
            throw e;
        }
    }

    /** out[i] = t[idx[i]], row by row (an embedding lookup over rows flattened to 2-D). */
    private void gatherInto(Tensor out, Tensor t, Tensor idx) {
        long width = t.numel() / t.dim(0);
        be.embedding(out.reshape(out.dim(0), (int) width), t.reshape(t.dim(0), (int) width), idx);
    }

    /**
     * Backward from dHidden [N, D] (the LM head's gradient w.r.t. the final hidden states; fp32, or the activation
     * dtype); gradients are accumulated into {@code grads} (fp32, same config, typically zeroed first). Does not close
     * {@code act}.
     */
    public void backward(Activations act, Tensor dHidden, LlamaWeights grads) { backward(act, dHidden, grads, null); }

    /**
     * {@link #backward(Activations, Tensor, LlamaWeights)} that also reports its progress: {@code ready.accept(f)}
     * after the final norm, after each layer and after the embedding says that every gradient at flat offset >= f is
     * complete for this pass (backward runs from the top of the flat layout down; an untied LM head, written before
     * this call, is above everything). ZeRO-2 starts reducing gradient buckets at these points, while the rest of the
     * backward runs. {@code ready} may be null.
     */
    public void backward(Activations act, Tensor dHidden, LlamaWeights grads, java.util.function.LongConsumer ready) {
        backward(act, dHidden, grads, ready, null);
    }

    /**
     * {@link #backward(Activations, Tensor, LlamaWeights, java.util.function.LongConsumer)} into fp32 gradients
     * (accumulated), or into bf16 gradients (ZeRO-2's gradient buffer in precision bf16, 2 bytes a parameter): then
     * each weight gradient is produced in fp32 and rounded once into a buffer that must hold zeros (written, not
     * accumulated): the GEMMs accumulate in fp32 and round their output, a norm weight's gradient goes through a [D]
     * fp32 scratch, and the embedding's through {@code table32}, fp32 [V, D], which is cast into the buffer at the
     * end. With tied embeddings {@code table32} holds the LM head's gradient on entry (the caller's loss wrote it there)
     * and the embedding's is added to it; untied, it is zeroed here. A gradient window ({@link
     * LlamaWeights#gradientWindow}) with tied embeddings needs {@code table32} in fp32 gradients too: the embeddings'
     * slab holds other groups while the backward runs, so the LM head's gradient cannot wait there.
     */
    public void backward(Activations act, Tensor dHidden, LlamaWeights grads, java.util.function.LongConsumer ready, Tensor table32) {
        int n = act.rows.tokens(), d = c.hiddenSize();
        ParameterLayout lay = grads.layout();
        boolean half = grads.dtype() == DType.BF16;
        if (grads.dtype() != DType.FP32 && !half)
            throw new IllegalArgumentException("backward: gradients are fp32 or bf16, got " + grads.dtype());
        if (half && adt != DType.BF16) throw new IllegalArgumentException("backward: bf16 gradients need bf16 activations, the model's are " + adt);
        boolean viaTable = half || (grads.windowed() && c.tieWordEmbeddings());
        if (viaTable && (table32 == null || table32.dtype() != DType.FP32 || table32.numel() != (long) c.vocabSize() * d))
            throw new IllegalArgumentException("backward: " + (half ? "bf16 gradients" : "a gradient window with tied embeddings") + " need an fp32 ["
                    + c.vocabSize() + ", " + d + "] embedding gradient, got " + table32);
        if (dHidden.dtype() != adt && dHidden.dtype() != DType.FP32)
            throw new IllegalArgumentException("backward: dHidden is " + dHidden.dtype() + "; expected fp32 or " + adt);
        try (Tensor dx = act(n, d); Tensor dh = dHidden.dtype() == adt ? null : act(n, d); Tensor norm32 = half ? be.empty(DType.FP32, d) : null) {
            if (viaTable && !c.tieWordEmbeddings()) be.fill(table32, 0);
            if (dh != null) be.cast(dh, dHidden); // an fp32 dHidden (e.g. scattered rows) rounded once to the activations' dtype
            be.rmsNormBackward(dx, normGrad(grads, "model.norm.weight", norm32), dh != null ? dh : dHidden, act.layerInputs[c.numLayers()],
                    w.get("model.norm.weight"), act.rstdFinal);
            roundNormGrad(grads, "model.norm.weight", norm32);
            if (ready != null) ready.accept(lay.get("model.norm.weight").offset());
            for (int l = c.numLayers() - 1; l >= 0; l--) {
                if (act.layers[l] == null) { // recomputed from its input
                    try (Tensor scratch = act(n, d); LayerActs la = layerForward(l, act.layerInputs[l], scratch, act.rows)) {
                        layerBackward(l, la, act.layerInputs[l], dx, grads, act.rows, norm32);
                    }
                } else {
                    layerBackward(l, act.layers[l], act.layerInputs[l], dx, grads, act.rows, norm32);
                }
                if (ready != null) ready.accept(lay.get(g(l, "input_layernorm.weight")).offset());
            }
            be.embeddingBackward(viaTable ? table32 : grads.get("model.embed_tokens.weight"), dx, act.rows.idsT());
            if (half) be.cast(grads.get("model.embed_tokens.weight"), table32);
            else if (viaTable) be.copy(grads.get("model.embed_tokens.weight"), table32);
            if (ready != null) ready.accept(0);
        }
    }

    /** Where a norm weight's gradient accumulates: the fp32 gradient itself, or the zeroed fp32 scratch (bf16 gradients). */
    private Tensor normGrad(LlamaWeights grads, String name, Tensor norm32) {
        if (norm32 == null) return grads.get(name);
        be.fill(norm32, 0);
        return norm32;
    }

    /** bf16 gradients: the norm weight's fp32 gradient rounded once into the buffer. */
    private void roundNormGrad(LlamaWeights grads, String name, Tensor norm32) {
        if (norm32 != null) be.cast(grads.get(name), norm32);
    }

    private String g(int l, String name) { return "model.layers." + l + "." + name; }

    /** dx holds d(out) on entry and d(x) on exit. */
    private void layerBackward(int l, LayerActs a, Tensor x, Tensor dx, LlamaWeights grads, Rows rows, Tensor norm32) {
        int n = x.dim(0), d = c.hiddenSize(), f = c.intermediateSize();
        try (Tensor da = act(n, f); Tensor dg = act(n, f); Tensor du = act(n, f); Tensor dh = act(n, d); Tensor tmp = act(n, d)) {
            // MLP: out = mid + a Wd^T
            be.matmul(da, dx, false, p(l, "mlp.down_proj.weight"), false, 1f, 0f);
            be.matmul(grads.get(g(l, "mlp.down_proj.weight")), dx, true, a.a, false, 1f, 1f);
            be.swigluBackward(dg, du, da, a.g, a.u);
            be.matmul(dh, dg, false, p(l, "mlp.gate_proj.weight"), false, 1f, 0f);
            be.matmul(dh, du, false, p(l, "mlp.up_proj.weight"), false, 1f, 1f);
            be.matmul(grads.get(g(l, "mlp.gate_proj.weight")), dg, true, a.h2, false, 1f, 1f);
            be.matmul(grads.get(g(l, "mlp.up_proj.weight")), du, true, a.h2, false, 1f, 1f);
            be.rmsNormBackward(tmp, normGrad(grads, g(l, "post_attention_layernorm.weight"), norm32), dh, a.mid,
                    p(l, "post_attention_layernorm.weight"), a.rstd2);
            roundNormGrad(grads, g(l, "post_attention_layernorm.weight"), norm32);
            be.add(dx, dx, tmp); // d(mid)
        }
        int hq = c.numHeads(), hkv = c.numKvHeads(), hd = c.headDim();
        // a prefix packing's attention backward reads a zero row after the n rows of datt
        try (Tensor dattAll = act(n + (rows.pp() == null ? 0 : 1), hq, hd); Tensor dq = act(n, hq, hd); Tensor dk = act(n, hkv, hd);
             Tensor dv = act(n, hkv, hd); Tensor dh = act(n, d); Tensor tmp = act(n, d)) {
            // attention: mid = x + att Wo^T
            be.matmul(dattAll.rows(0, n).reshape(n, c.qDim()), dx, false, p(l, "self_attn.o_proj.weight"), false, 1f, 0f);
            be.matmul(grads.get(g(l, "self_attn.o_proj.weight")), dx, true, a.att.reshape(n, c.qDim()), false, 1f, 1f);
            attentionBackward(dq, dk, dv, dattAll, a, rows);
            be.ropeBackward(dq, dq, rows.positionsT(), rope);
            be.ropeBackward(dk, dk, rows.positionsT(), rope);
            Tensor dq2 = dq.reshape(n, c.qDim()), dk2 = dk.reshape(n, c.kvDim()), dv2 = dv.reshape(n, c.kvDim());
            be.matmul(dh, dq2, false, p(l, "self_attn.q_proj.weight"), false, 1f, 0f);
            be.matmul(dh, dk2, false, p(l, "self_attn.k_proj.weight"), false, 1f, 1f);
            be.matmul(dh, dv2, false, p(l, "self_attn.v_proj.weight"), false, 1f, 1f);
            be.matmul(grads.get(g(l, "self_attn.q_proj.weight")), dq2, true, a.h, false, 1f, 1f);
            be.matmul(grads.get(g(l, "self_attn.k_proj.weight")), dk2, true, a.h, false, 1f, 1f);
            be.matmul(grads.get(g(l, "self_attn.v_proj.weight")), dv2, true, a.h, false, 1f, 1f);
            be.rmsNormBackward(tmp, normGrad(grads, g(l, "input_layernorm.weight"), norm32), dh, x, p(l, "input_layernorm.weight"), a.rstd1);
            roundNormGrad(grads, g(l, "input_layernorm.weight"), norm32);
            be.add(dx, dx, tmp); // d(x)
        }
    }

    // ---- log-probabilities without gradients ----------------------------------------------------------------------

    /**
     * log p(targets[i] | prefix) at the given rows of a packed batch (row r predicts the token after it), with logits
     * divided by (temperature + 1e-7); no activations are kept.
     */
    public float[] tokenLogprobs(PackedBatch batch, int[] rows, int[] targets, float temperature) {
        if (rows.length != targets.length) throw new IllegalArgumentException("rows and targets differ in length");
        return logprobs(Rows.of(batch), rows, targets, temperature);
    }

    /** log p(targets[i]) at the forward's own rows {@code rows} (no activations kept). */
    private float[] logprobs(Rows r, int[] rows, int[] targets, float temperature) {
        if (rows.length == 0) return new float[0];
        try (Activations act = forwardNoGrad(r); Tensor rowsT = be.upload(rows, rows.length); Tensor tgt = be.upload(targets, targets.length);
             Tensor sel = act(rows.length, c.hiddenSize()); Tensor out = f32(rows.length)) {
            be.embedding(sel, act.hidden, rowsT); // row gather
            be.tokenLogprobs(out, sel, w.get("lm_head.weight"), tgt, temperature);
            return out.toFloats();
        }
    }

    /**
     * {@link #tokenLogprobs} over sequences that share prefixes ({@link PrefixPacking}: a group's samples share their
     * prompt). The layers run on the compact rows, each shared prefix once; attention gathers its q, k and v rows into
     * the full packing, runs there, and gathers its outputs back. {@code rows} index the full packing, as for
     * tokenLogprobs. The same log-probs as tokenLogprobs on the full packing, bit for bit where every op but attention
     * works row by row independently of the row count (the CPU backend), up to the GEMMs' summation order otherwise
     * (their shapes change). A group of n samples of a P-token prompt with C-token completions runs P + n C rows
     * through the GEMMs instead of n (P + C).
     */
    public float[] tokenLogprobsSharedPrefix(PrefixPacking pp, int[] rows, int[] targets, float temperature) {
        if (rows.length != targets.length) throw new IllegalArgumentException("rows and targets differ in length");
        return logprobs(Rows.of(pp), pp.compactRows(rows, "rows"), targets, temperature);
    }

    /**
     * {@link #tokenLogprobs} over sequences packed end to end, through {@link #tokenLogprobsSharedPrefix} where
     * {@code shared} (as {@link PrefixPacking#of}; null or all zeros: nothing shared) has a run to share, through a
     * plain {@link PackedBatch} otherwise. {@code rowsRun[0]} = the token rows the layers ran.
     */
    public float[] tokenLogprobs(List<int[]> seqs, int[] shared, int[] rows, int[] targets, float temperature, long[] rowsRun) {
        boolean any = false;
        if (shared != null) for (int x : shared) any |= x != 0;
        if (!any) {
            try (PackedBatch pb = PackedBatch.of(be, seqs, c.vocabSize())) {
                rowsRun[0] = pb.tokens();
                return tokenLogprobs(pb, rows, targets, temperature);
            }
        }
        try (PrefixPacking pp = PrefixPacking.of(be, seqs, shared, c.vocabSize())) {
            rowsRun[0] = pp.compactRows();
            return tokenLogprobsSharedPrefix(pp, rows, targets, temperature);
        }
    }

    /** Forward keeping only the final hidden states (layer inputs are freed as soon as the next layer has run). */
    public Activations forwardNoGrad(PackedBatch batch) { return forwardNoGrad(Rows.of(batch)); }

    private Activations forwardNoGrad(Rows rows) {
        int n = rows.tokens();
        Activations act = new Activations(rows, c.numLayers());
        try {
            // the live layer input sits in act.layerInputs[L] (closed with act if a layer fails) until replaced
            act.layerInputs[c.numLayers()] = act(n, c.hiddenSize());
            be.embedding(act.layerInputs[c.numLayers()], w.get("model.embed_tokens.weight"), rows.idsT());
            for (int l = 0; l < c.numLayers(); l++) {
                if (feed != null) feed.acquire(l);
                Tensor x = act.layerInputs[c.numLayers()], out = act(n, c.hiddenSize());
                try (LayerActs la = layerForward(l, x, out, rows)) {
                    // nothing kept: the layer's activations are closed here
                } catch (RuntimeException e) {
                    out.close();
                    throw e;
                }
                act.layerInputs[c.numLayers()] = out;
                x.close();
            }
            Tensor x = act.layerInputs[c.numLayers()];
            be.rmsNorm(act.hidden, act.rstdFinal, x, w.get("model.norm.weight"), eps);
            return act;
        } catch (RuntimeException e) {
            act.close();
            throw e;
        }
    }

    /** Full logits [N, V] of a packed batch (tests and small vocabularies only: it materializes every logit). */
    public float[] logits(PackedBatch batch) {
        try (Activations act = forwardNoGrad(batch); Tensor out = f32(batch.tokens(), c.vocabSize())) {
            be.matmul(out, act.hidden, false, w.get("lm_head.weight"), true, 1f, 0f);
            return out.toFloats();
        }
    }

    // ---- generation: paged KV cache -------------------------------------------------------------------------------

    /**
     * Per-layer K and V caches [numBlocks + 1, blockSize, Hkv, headDim]. Slot s = block * blockSize + offset. Blocks
     * 0..numBlocks-1 belong to the caller's pool; the extra last block ({@link #padBlock}) is where padded rows of a
     * fixed-size decode batch write and read, so that a replayed decode graph never touches a real sequence's cache.
     */
    public final class KvCache implements AutoCloseable {
        final Tensor[] k, v;
        public final int numBlocks, blockSize;

        KvCache(int numBlocks, int blockSize) {
            if (numBlocks < 1 || blockSize < 1) throw new IllegalArgumentException("KV cache needs >= 1 block of >= 1 slot");
            long perTensor = (long) (numBlocks + 1) * blockSize * c.kvDim(); // + the pad block (padBlock)
            if (perTensor > Integer.MAX_VALUE - 8)
                throw new IllegalArgumentException("a KV cache of " + numBlocks + " blocks x " + blockSize + " tokens is too large (" + perTensor
                        + " elements per layer tensor with its pad block; at most " + ((Integer.MAX_VALUE - 8) / ((long) blockSize * c.kvDim()) - 1) + " blocks)");
            org.grpo4j.internal.backend.Memory.require(be, 2L * c.numLayers() * perTensor * adt.bytes(), "a KV cache of " + numBlocks + " blocks x " + blockSize + " tokens",
                    "at most " + kvBlocksThatFit(be, blockSize) + " blocks fit");
            this.numBlocks = numBlocks;
            this.blockSize = blockSize;
            k = new Tensor[c.numLayers()];
            v = new Tensor[c.numLayers()];
            try {
                for (int l = 0; l < c.numLayers(); l++) {
                    k[l] = be.zeros(adt, numBlocks + 1, blockSize, c.numKvHeads(), c.headDim());
                    v[l] = be.zeros(adt, numBlocks + 1, blockSize, c.numKvHeads(), c.headDim());
                }
            } catch (RuntimeException e) {
                close();
                throw e;
            }
        }

        /** The block padded decode rows use (not part of the caller's pool). */
        public int padBlock() { return numBlocks; }

        /** Copies block {@code src} onto block {@code dst} in every layer (copy-on-write of a shared partial block). */
        public void copyBlock(int src, int dst) {
            int per = blockSize * c.numKvHeads() * c.headDim(), all = numBlocks + 1;
            for (int l = 0; l < c.numLayers(); l++) {
                be.copy(k[l].reshape(all * per).view((long) dst * per, per), k[l].reshape(all * per).view((long) src * per, per));
                be.copy(v[l].reshape(all * per).view((long) dst * per, per), v[l].reshape(all * per).view((long) src * per, per));
            }
        }

        /** Bytes held by the cache (the pad block included). */
        public long bytes() { return 2L * c.numLayers() * (numBlocks + 1L) * blockSize * c.kvDim() * adt.bytes(); }

        @Override
        public void close() {
            for (Tensor t : k) if (t != null) t.close();
            for (Tensor t : v) if (t != null) t.close();
        }
    }

    public KvCache newKvCache(int numBlocks, int blockSize) { return new KvCache(numBlocks, blockSize); }

    /** KV blocks of {@code blockSize} tokens that the backend's free memory can hold now, beside the pad block (0 when unknown). */
    public long kvBlocksThatFit(Backend backend, int blockSize) {
        long free = org.grpo4j.internal.backend.Memory.available(backend);
        return free < 0 ? 0 : Math.max(0, free / (kvBytesPerToken() * blockSize) - 1);
    }

    /** Bytes of KV cache per token slot (the activation dtype: 4 in fp32, 2 in bf16). */
    public long kvBytesPerToken() { return 2L * c.numLayers() * c.kvDim() * adt.bytes(); }

    /**
     * Prefill: runs the packed prompts, writes every prompt token's K/V at {@code slots[token]}, and returns the
     * logits [B, V] of each sequence's last token.
     */
    public float[] prefill(KvCache cache, PackedBatch prompts, int[] slots) {
        try (Tensor t = prefillLogits(cache, prompts, slots)) {
            return t.toFloats();
        }
    }

    /** {@link #prefill} returning the logits [B, V] as a device tensor (the caller closes it). */
    public Tensor prefillLogits(KvCache cache, PackedBatch prompts, int[] slots) {
        int n = prompts.tokens(), b = prompts.sequences();
        if (slots.length != n) throw new IllegalArgumentException("prefill: " + slots.length + " slots for " + n + " tokens");
        requireWhole("prefill");
        try (Tensor slotsT = be.upload(slots, n)) {
            Tensor x = act(n, c.hiddenSize());
            be.embedding(x, w.get("model.embed_tokens.weight"), prompts.idsT);
            for (int l = 0; l < c.numLayers(); l++) {
                Tensor out = act(n, c.hiddenSize());
                try (LayerActs la = layerForward(l, x, out, Rows.of(prompts))) {
                    be.kvAppend(cache.k[l], cache.v[l], la.k, la.v, slotsT);
                }
                x.close();
                x = out;
            }
            int[] last = new int[b];
            for (int s = 0; s < b; s++) last[s] = prompts.start(s) + prompts.length(s) - 1;
            try (Tensor xf = x; Tensor lastT = be.upload(last, b); Tensor sel = act(b, c.hiddenSize())) {
                be.embedding(sel, xf, lastT);
                return finalLogitsTensor(sel);
            }
        }
    }

    private Tensor finalLogitsTensor(Tensor xLast) {
        int b = xLast.dim(0);
        Tensor logits = f32(b, c.vocabSize());
        try (Tensor h = act(b, c.hiddenSize()); Tensor r = f32(b)) {
            be.rmsNorm(h, r, xLast, w.get("model.norm.weight"), eps);
            be.matmul(logits, h, false, w.get("lm_head.weight"), true, 1f, 0f);
            return logits;
        } catch (RuntimeException e) {
            logits.close();
            throw e;
        }
    }

    /**
     * One decode step for B sequences: token[b] at position[b] is written to slots[b], then attends to its first
     * position[b] + 1 cached tokens through blockTables [B, maxBlocks]. Returns logits [B, V].
     */
    public float[] decodeStep(KvCache cache, int[] tokens, int[] positions, int[] slots, int[] blockTables, int maxBlocks) {
        try (Tensor t = decodeStepLogits(cache, tokens, positions, slots, blockTables, maxBlocks)) {
            return t.toFloats();
        }
    }

    /** {@link #decodeStep} returning the logits [B, V] as a device tensor (the caller closes it). */
    public Tensor decodeStepLogits(KvCache cache, int[] tokens, int[] positions, int[] slots, int[] blockTables, int maxBlocks) {
        int b = tokens.length;
        try (DecodeSession session = newDecodeSession(cache, b, maxBlocks, false)) {
            Tensor logits = f32(b, c.vocabSize());
            try {
                be.copy(logits, session.run(tokens, positions, slots, blockTables, maxBlocks, null, null).logits());
                return logits;
            } catch (RuntimeException e) {
                logits.close();
                throw e;
            }
        }
    }

    /**
     * A decode session: every buffer one decode step needs, allocated once per batch-size bucket (powers of two up to
     * {@code maxBatch}), so that steps allocate nothing; with {@code graphs}, each bucket's step (the model and the
     * sampler) is recorded once as a graph ({@link Backend#capture}: CUDA graphs) and replayed, which replaces some
     * 13 x layers kernel launches, each a JNI call, by one. Rows beyond the live batch are padding: token 0 at position
     * 0, writing and reading the cache's pad block, so they never touch a real sequence. On a backend without graphs
     * the same buffers are used eagerly.
     */
    public DecodeSession newDecodeSession(KvCache cache, int maxBatch, int maxBlocks, boolean graphs) {
        return newDecodeSession(cache, maxBatch, maxBlocks, graphs, 0);
    }

    /**
     * {@link #newDecodeSession(KvCache, int, int, boolean)} whose steps may name up to {@code maxPrefixGroups} prefix
     * groups (0: none; see
     * {@link DecodeSession#run(int[], int[], int[], int[], int, int[], int[], org.grpo4j.internal.backend.SamplingSpec)}):
     * sequences that share their first KV blocks, whose attention then reads those blocks once per group
     * ({@link Backend#decodeAttention(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, float)}). Each step's
     * attention launches a block per group row and kv head, used or not (a decode graph's rows are fixed), so the bound
     * should be what the caller can use: its prompts in flight.
     */
    public DecodeSession newDecodeSession(KvCache cache, int maxBatch, int maxBlocks, boolean graphs, int maxPrefixGroups) {
        requireWhole("a decode session");
        return new DecodeSession(cache, maxBatch, maxBlocks, graphs, maxPrefixGroups);
    }

    /**
     * What one step of a {@link DecodeSession} produced (device tensors owned by the session: logits, logprobs and
     * tokens valid until the session's next step, whose buckets share their buffers; {@link Backend#fetch} snapshots tokens and
     * logprobs without waiting).
     */
    public record StepOutput(Tensor logits, Tensor tokens, Tensor logprobs) {}

    public final class DecodeSession implements AutoCloseable {
        private final KvCache cache;
        private final int maxBatch, maxBlocks;
        private final boolean graphs;
        private final int maxPrefixGroups;
        private final java.util.Map<Integer, Bucket> buckets = new java.util.HashMap<>();
        /**
         * The buckets' working buffers, one of each role at the session's largest bucket, every bucket's tensors views
         * of them at offset 0: a bucket's steps and graphs use fixed addresses, and the steps of two buckets follow
         * each other in stream order, as two steps of one bucket do. (A set per bucket held 1 + 2 + ... + 512 + 768 =
         * 1,791 rows of logits and activations for a batch of 768, 2.3x the one set the memory estimate counts.)
         */
        private final java.util.Map<String, Tensor> arena = new java.util.HashMap<>();
        private long replays, eagerSteps, groupRows;
        private boolean lastSetUp;
        /** The last step's sampled tokens (its live rows first), which the next step may take on the device. */
        private Tensor sampled;
        private int sampledRows; // live rows of the last step that sampled; 0: none since the session opened

        DecodeSession(KvCache cache, int maxBatch, int maxBlocks, boolean graphs, int maxPrefixGroups) {
            if (maxBatch < 1 || maxBlocks < 1) throw new IllegalArgumentException("decode session: max batch and max blocks must be >= 1");
            this.cache = cache;
            this.maxBatch = maxBatch;
            this.maxBlocks = maxBlocks;
            this.graphs = graphs && be.capturesGraphs(); // (elsewhere every step is eager: no warm-up or capture to count)
            if (maxPrefixGroups < 0) throw new IllegalArgumentException("decode session: max prefix groups must be >= 0");
            this.maxPrefixGroups = maxPrefixGroups;
        }

        /** Whether steps take prefix groups. */
        public boolean prefixGroups() { return maxPrefixGroups > 0; }

        /** Group rows a step of b live sequences may name: one per two of its bucket's rows, at most the session's bound. */
        public int groupRowsFor(int b) { return maxPrefixGroups == 0 ? 0 : Math.max(1, Math.min(bucketFor(b) / 2, maxPrefixGroups)); }

        /** Prefix group rows passed so far, over all steps. */
        public long prefixGroupRows() { return groupRows; }

        /**
         * Whether the last step set a graph up: its bucket's eager warm-up before a capture, or the capture (then the
         * first replay). Host time of such steps is not a replay's or an eager step's (the generator counts it apart).
         */
        public boolean lastStepSetUpAGraph() { return lastSetUp; }

        /** Steps run by replaying a recorded graph, and eagerly. */
        public long replays() { return replays; }
        public long eagerSteps() { return eagerSteps; }

        /** The bucket (padded batch size) a live batch of b sequences runs in. */
        int bucketFor(int b) {
            int p = Integer.highestOneBit(Math.max(1, b));
            if (p < b) p <<= 1;
            return Math.min(p, maxBatch);
        }

        /**
         * One step for the live batch (block tables [b, blocks] with blocks <= maxBlocks; counters [b, 2] and spec
         * may be null for logits only). Returns the bucket's outputs; rows 0..b-1 are the live ones.
         */
        public StepOutput run(int[] tokens, int[] positions, int[] slots, int[] blockTables, int blocks, int[] counters,
                              org.grpo4j.internal.backend.SamplingSpec spec) {
            return run(tokens, null, positions, slots, blockTables, blocks, counters, null, spec);
        }

        /** {@link #run(int[], int[], int[], int[], int, int[], int[], org.grpo4j.internal.backend.SamplingSpec)} with every token from the host. */
        public StepOutput run(int[] tokens, int[] positions, int[] slots, int[] blockTables, int blocks, int[] counters,
                              int[] groups, org.grpo4j.internal.backend.SamplingSpec spec) {
            return run(tokens, null, positions, slots, blockTables, blocks, counters, groups, spec);
        }

        /**
         * {@link #run(int[], int[], int[], int[], int, int[], org.grpo4j.internal.backend.SamplingSpec)} with prefix
         * groups (a session made with them; null or empty: none this step): rows (first, count, shared) of live
         * sequences first .. first + count - 1 whose first {@code shared} keys are read through sequence first's table
         * row ({@link Backend#decodeAttention(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, float)}), at most
         * one row per two live sequences (a row of one sequence saves nothing).
         */
        public StepOutput run(int[] tokens, int[] from, int[] positions, int[] slots, int[] blockTables, int blocks, int[] counters,
                              int[] groups, org.grpo4j.internal.backend.SamplingSpec spec) {
            return run(tokens, from, positions, slots, blockTables, blocks, counters, groups, spec, null);
        }

        /**
         * {@link #run(int[], int[], int[], int[], int[], int, int[], int[], org.grpo4j.internal.backend.SamplingSpec)}
         * with a spec per live row ({@code rowSpecs}, spec null) instead of one for all: the rows sample after the step
         * (recorded as a graph up to the logits), in one launch per distinct spec
         * ({@link Backend#sample(Tensor, Tensor, Tensor, Tensor, org.grpo4j.internal.backend.SamplingSpec[])}), even
         * where this step's rows happen to share one, so that a call whose rows' specs differ keeps one graph per bucket.
         */
        public StepOutput run(int[] tokens, int[] from, int[] positions, int[] slots, int[] blockTables, int blocks, int[] counters,
                              int[] groups, org.grpo4j.internal.backend.SamplingSpec spec, org.grpo4j.internal.backend.SamplingSpec[] rowSpecs) {
            int b = tokens.length;
            if (b < 1 || b > maxBatch) throw new IllegalArgumentException("decode: batch " + b + " outside [1, " + maxBatch + "]");
            if (rowSpecs != null) {
                if (spec != null || rowSpecs.length != b)
                    throw new IllegalArgumentException("decode: a spec per row (" + rowSpecs.length + " for " + b + " rows) or one spec, not both");
                for (int i = 0; i < b; i++) java.util.Objects.requireNonNull(rowSpecs[i], "decode: the spec of row " + i);
            }
            boolean samples = spec != null || rowSpecs != null;
            if (positions.length != b || slots.length != b || blockTables.length != b * blocks || blocks > maxBlocks || blocks < 1)
                throw new IllegalArgumentException("decode: tokens, positions, slots and block tables disagree on the batch size " + b
                        + " (or blocks " + blocks + " outside [1, " + maxBlocks + "])");
            if ((counters == null) == samples || (counters != null && counters.length != 2 * b))
                throw new IllegalArgumentException("decode: counters [b, 2] and spec go together");
            if (from != null) {
                if (from.length != b) throw new IllegalArgumentException("decode: from has " + from.length + " rows, the batch " + b);
                for (int i = 0; i < b; i++)
                    if (from[i] < -1 || from[i] >= sampledRows)
                        throw new IllegalArgumentException("decode: from[" + i + "] = " + from[i] + " must be -1 (the host's token) or a row of the last step's "
                                + sampledRows + " sampled tokens");
            }
            for (int i = 0; i < b; i++)
                if ((from == null || from[i] < 0) && (tokens[i] < 0 || tokens[i] >= c.vocabSize()))
                    throw new IllegalArgumentException("decodeStep: token " + tokens[i] + " outside the vocabulary");
            if (groups != null && groups.length > 0) {
                if (maxPrefixGroups == 0) throw new IllegalArgumentException("decode: prefix groups given to a session made without them");
                if (groups.length % 3 != 0 || groups.length / 3 > groupRowsFor(b))
                    throw new IllegalArgumentException("decode: prefix groups must be rows of (first, count, shared), at most "
                            + groupRowsFor(b) + " for " + b + " sequences; got " + groups.length + " values");
                for (int g = 0; g < groups.length; g += 3) // the live rows only (the bucket's padding rows are not a group's)
                    if (groups[g] < 0 || groups[g + 1] < 0 || groups[g + 2] < 0 || (long) groups[g] + groups[g + 1] > b)
                        throw new IllegalArgumentException("decode: prefix group " + g / 3 + " (" + groups[g] + ", " + groups[g + 1]
                                + ", " + groups[g + 2] + ") must name live sequences of the " + b + " and share >= 0 keys");
            }
            if (sampled == null) sampled = be.zeros(DType.INT32, maxBatch);
            Bucket k = buckets.computeIfAbsent(bucketFor(b), Bucket::new);
            k.load(tokens, from, positions, slots, blockTables, blocks, counters, groups);
            if (groups != null) groupRows += groups.length / 3;
            k.step(spec);
            if (rowSpecs != null) // after the step's logits, before the next step's gather (stream order)
                be.sample(k.tok.rows(0, b), k.lp.rows(0, b), k.logits.rows(0, b), k.ctr.rows(0, b), rowSpecs);
            sampledRows = samples ? b : 0;
            return new StepOutput(k.logits.rows(0, b), k.tok.rows(0, b), k.lp.rows(0, b));
        }

        final class Bucket implements AutoCloseable {
            final int n, groupRows;
            // tokens | positions | slots | context lengths | counters [n, 2] | block tables [n, maxBlocks]
            // | from [n] (the last step's row whose sampled token a row takes, -1: the host's) | prefix groups
            // [groupRows, 3] (a session with them)
            final Tensor ints;
            final Tensor ids, pos, sl, ctx, ctr, table, from, groups;
            final Tensor h, r, q, k, v, att, gate, up, act, x, hf, rf, logits, tok, lp;
            final Tensor kv, gu; // [2, n, ...]: k then v, gate then up (one batched GEMM each, see body)
            final int[] host;
            org.grpo4j.internal.backend.SamplingSpec recordedSpec;
            Backend.Replay graph;
            boolean warm, noGraphs;

            Bucket(int n) {
                this.n = n;
                int d = c.hiddenSize(), f = c.intermediateSize(), hq = c.numHeads(), hkv = c.numKvHeads(), hd = c.headDim();
                groupRows = groupRowsFor(n);
                host = new int[n * (7 + maxBlocks) + 3 * groupRows];
                List<Tensor> made = new ArrayList<>();
                try {
                    ints = keep(made, be.zeros(DType.INT32, host.length));
                    ids = ints.view(0, n);
                    pos = ints.view(n, n);
                    sl = ints.view(2L * n, n);
                    ctx = ints.view(3L * n, n);
                    ctr = ints.view(4L * n, n, 2);
                    table = ints.view(6L * n, n, maxBlocks);
                    from = ints.view((long) n * (6 + maxBlocks), n);
                    groups = groupRows > 0 ? ints.view((long) n * (7 + maxBlocks), groupRows, 3) : null;
                    h = shared("h", adt, n, d); r = shared("r", DType.FP32, n); q = shared("q", adt, n, hq, hd);
                    kv = shared("kv", adt, 2, n, hkv * hd); k = kv.view(0, n, hkv, hd); v = kv.view((long) n * hkv * hd, n, hkv, hd);
                    att = shared("att", adt, n, hq, hd);
                    gu = shared("gu", adt, 2, n, f); gate = gu.view(0, n, f); up = gu.view((long) n * f, n, f);
                    act = shared("act", adt, n, f); x = shared("x", adt, n, d); hf = shared("hf", adt, n, d); rf = shared("rf", DType.FP32, n);
                    logits = shared("logits", DType.FP32, n, c.vocabSize()); lp = shared("lp", DType.FP32, n);
                    tok = sampled.view(0, n); // every bucket samples into the session's buffer, which the next step gathers from
                } catch (RuntimeException e) {
                    for (Tensor t : made) t.close();
                    throw e;
                }
            }

            private Tensor keep(List<Tensor> made, Tensor t) {
                made.add(t);
                return t;
            }

            /**
             * This bucket's view of the session's buffer for {@code role}, whose shape holds n (this bucket's rows)
             * once: the buffer is [maxBatch, the rest], the view {@code shape} at offset 0.
             */
            private Tensor shared(String role, DType dt, int... shape) {
                long each = 1;
                for (int x : shape) each *= x;
                int perRow = Math.toIntExact(each / n);
                Tensor buf = arena.computeIfAbsent(role, key -> be.empty(dt, maxBatch, perRow));
                return buf.view(0, shape);
            }

            /**
             * One upload of every per-step integer, ordered after the steps before without waiting for them: live
             * rows, then padding rows on the pad block.
             */
            void load(int[] tokens, int[] fromRows, int[] positions, int[] slots, int[] blockTables, int blocks, int[] counters, int[] groupRowsOf) {
                int b = tokens.length, padSlot = cache.padBlock() * cache.blockSize, pad = cache.padBlock();
                int f0 = n * (6 + maxBlocks);
                for (int i = 0; i < n; i++) {
                    boolean live = i < b;
                    boolean taken = live && fromRows != null && fromRows[i] >= 0;
                    host[i] = live && !taken ? tokens[i] : 0;
                    host[f0 + i] = taken ? fromRows[i] : -1;
                    host[n + i] = live ? positions[i] : 0;
                    host[2 * n + i] = live ? slots[i] : padSlot;
                    host[3 * n + i] = live ? positions[i] + 1 : 1;
                    host[4 * n + 2 * i] = live && counters != null ? counters[2 * i] : 0;
                    host[4 * n + 2 * i + 1] = live && counters != null ? counters[2 * i + 1] : 0;
                    int row = 6 * n + i * maxBlocks, have = live ? blocks : 0; // the table row, then the pad block
                    if (have > 0) System.arraycopy(blockTables, i * blocks, host, row, have);
                    java.util.Arrays.fill(host, row + have, row + maxBlocks, pad);
                }
                int g = n * (7 + maxBlocks); // group rows, the rest (0, 0, 0)
                java.util.Arrays.fill(host, g, host.length, 0);
                if (groupRowsOf != null) System.arraycopy(groupRowsOf, 0, host, g, groupRowsOf.length);
                be.copyFromHostAsync(ints, host);
            }

            void step(org.grpo4j.internal.backend.SamplingSpec spec) {
                lastSetUp = graphs && !noGraphs && !warm; // the warm-up before a capture
                if (graphs && warm && !noGraphs) {
                    if (graph == null || !java.util.Objects.equals(spec, recordedSpec)) {
                        lastSetUp = true;
                        if (graph != null) graph.close();
                        graph = null; // (a capture that throws leaves no closed graph to be replayed)
                        recordedSpec = null;
                        try {
                            graph = be.capture(() -> body(spec));
                        } catch (RuntimeException | Error e) {
                            noGraphs = true; // the bucket's later steps run eagerly
                            throw e;
                        }
                        recordedSpec = spec;
                        noGraphs = graph == null; // the backend has no graphs: stay eager
                    }
                    if (graph != null) {
                        graph.run();
                        replays++;
                        return;
                    }
                }
                body(spec);
                eagerSteps++;
                warm = true; // the eager run made every plan, cache and scratch buffer that a capture needs
            }

            /** The decode step on this bucket's buffers: no allocation, no host reads. */
            void body(org.grpo4j.internal.backend.SamplingSpec spec) {
                be.gatherTokens(ids, sampled, from); // rows whose token the last step sampled take it here
                be.embedding(x, w.get("model.embed_tokens.weight"), ids);
                for (int l = 0; l < c.numLayers(); l++) {
                    be.rmsNorm(h, r, x, p(l, "input_layernorm.weight"), eps);
                    linear(q.reshape(n, c.qDim()), h, p(l, "self_attn.q_proj.weight"), 0);
                    linear2(kv, h, l, "self_attn.k_proj.weight", "self_attn.v_proj.weight");
                    be.rope(q, q, pos, rope);
                    be.rope(k, k, pos, rope);
                    be.kvAppend(cache.k[l], cache.v[l], k, v, sl);
                    be.decodeAttention(att, q, cache.k[l], cache.v[l], table, ctx, groups, scale);
                    linear(x, att.reshape(n, c.qDim()), p(l, "self_attn.o_proj.weight"), 1f);
                    be.rmsNorm(h, r, x, p(l, "post_attention_layernorm.weight"), eps);
                    linear2(gu, h, l, "mlp.gate_proj.weight", "mlp.up_proj.weight");
                    be.swiglu(act, gate, up);
                    linear(x, act, p(l, "mlp.down_proj.weight"), 1f);
                }
                be.rmsNorm(hf, rf, x, w.get("model.norm.weight"), eps);
                be.matmul(logits, hf, false, w.get("lm_head.weight"), true, 1f, 0f);
                if (spec != null) be.sample(tok, lp, logits, ctr, spec); // after this step's gather read the last step's
            }

            @Override
            public void close() {
                if (graph != null) graph.close();
                ints.close(); // (the working buffers are the session's: closed with it)
            }
        }

        @Override
        public void close() {
            for (Bucket k : buckets.values()) k.close();
            buckets.clear();
            for (Tensor t : arena.values()) t.close();
            arena.clear();
            if (sampled != null) sampled.close();
            sampled = null;
            sampledRows = 0;
        }
    }
}
