package org.grpo4j.internal.backend;

import java.util.Set;

/**
 * The seam between grpo4j's model, rollout and trainer code and the hardware: memory, transfers and the ops on
 * device tensors. {@link CpuBackend} (pure Java, fp32) is the reference; {@link CudaBackend} runs the custom kernels.
 *
 * <p>Every op validates dtypes, shapes and devices before computing and throws {@link IllegalArgumentException}
 * naming the op and the shapes; nothing invalid ever reaches native code. Ops are asynchronous on CUDA (ordered on
 * the backend's stream); host copies synchronize.
 *
 * <h2>Mixed precision</h2>
 * Activations, their gradients, GEMM operands and a model's bf16 compute copy of its weights (norm weights included)
 * may be bf16; master weights, optimizer state, reductions (rstd, lse, log-probs, losses, squared norms) and
 * accumulated weight gradients stay fp32. Every op
 * computes in fp32 (float64 for some reductions on the CPU) on the exact widening of its bf16 inputs and rounds each
 * bf16 output once, to nearest even: {@link CpuBackend} produces exactly RNE(its fp32 op on the widened inputs), the
 * oracle the GPU kernels are compared with (tolerances in docs/ops.md). Index tensors are int32.
 * <table>
 * <caption>dtypes each op accepts (anything else is an IllegalArgumentException naming the op, the tensors, their
 * dtypes and what is allowed)</caption>
 * <tr><th>op</th><th>dtypes</th></tr>
 * <tr><td>fill, scale, copy, cast</td><td>as before: fill fp32/bf16/int32; scale fp32/bf16; copy any, same dtype;
 *     cast between fp32 and bf16</td></tr>
 * <tr><td>add</td><td>out, a, b all fp32 or all bf16</td></tr>
 * <tr><td>axpy</td><td>y fp32; x fp32 or bf16 (bf16 gradients accumulated in fp32)</td></tr>
 * <tr><td>embedding</td><td>table and out both fp32 or both bf16; ids int32</td></tr>
 * <tr><td>embeddingBackward</td><td>dTable fp32; dOut fp32 or bf16</td></tr>
 * <tr><td>rmsNorm</td><td>x and out both fp32 or both bf16; weight fp32 or bf16 (widened exactly); rstd fp32</td></tr>
 * <tr><td>rmsNormBackward</td><td>dx, dOut, x all fp32 or all bf16; weight fp32 or bf16; dWeight, rstd fp32</td></tr>
 * <tr><td>matmul</td><td>a, b the same dtype; fp32 a/b give an fp32 c; bf16 a/b give an fp32 or bf16 c (fp32
 *     accumulation either way)</td></tr>
 * <tr><td>rope, ropeBackward</td><td>x and out (dOut and dx) the same dtype, fp32 or bf16</td></tr>
 * <tr><td>attention</td><td>q, k, v, out the same dtype; lse fp32</td></tr>
 * <tr><td>attentionBackward</td><td>dq, dk, dv, dOut, q, k, v, out the same dtype; lse fp32</td></tr>
 * <tr><td>kvAppend</td><td>kCache, vCache, k, v the same dtype</td></tr>
 * <tr><td>decodeAttention</td><td>out, q, kCache, vCache the same dtype</td></tr>
 * <tr><td>swiglu, swigluBackward</td><td>every tensor the same dtype</td></tr>
 * <tr><td>tokenLogprobs</td><td>hidden, lmHead the same dtype; out fp32</td></tr>
 * <tr><td>tokenLogprobsBackward</td><td>hidden, lmHead, dHidden the same dtype; dLmHead fp32; dLogprobs fp32</td></tr>
 * <tr><td>grpoLoss</td><td>hidden, lmHead, out.dHidden the same dtype; out.dLmHead fp32; every other tensor fp32
 *     (targets int32)</td></tr>
 * <tr><td>sample</td><td>logits fp32 or bf16</td></tr>
 * <tr><td>adamW</td><td>param, grad, m, v fp32; bf16Out bf16</td></tr>
 * <tr><td>sumSquares</td><td>x fp32 or bf16; out fp32</td></tr>
 * <tr><td>gatherTokens</td><td>ids, src, index int32</td></tr>
 * </table>
 * "The same dtype" always means fp32 or bf16. Ops that only move elements (copy, embedding, kvAppend) copy bf16 bits
 * unchanged. An fp32 result accumulated into (axpy's y, dWeight, dTable, dLmHead, sumSquares' out) is fp32 in every
 * mode: low-precision accumulation would lose small gradients.
 *
 * <h2>Aliasing</h2>
 * An op's output never shares memory with another of its arguments (refused with an IllegalArgumentException naming
 * both), except where the op runs in place on the same elements: copy and cast (dst = src), add (out = a or b), rope
 * (out = x), ropeBackward (dx = dOut), rmsNormBackward (dx = dOut). Inputs may share memory among themselves (on the
 * CPU backend, bf16 inputs only as the same elements or disjoint: its widened copies could not hold a partial overlap).
 */
public interface Backend extends AutoCloseable {

    /** "cpu" or "cuda:N". */
    String name();

    /** A short description of the device (CPU threads, or GPU name and memory). */
    String description();

    /** The ops this backend implements (the names of {@link Ops}), for {@code grpo4j info --ops}. */
    Set<String> implementedOps();

    default boolean implementsOp(String op) { return implementedOps().contains(op); }

    // ---- memory ---------------------------------------------------------------------------------------------------

    /** A new tensor whose contents are unspecified (zero on the CPU, garbage on CUDA). */
    Tensor empty(DType dtype, int... shape);

    /** A new tensor filled with zeros. */
    default Tensor zeros(DType dtype, int... shape) {
        Tensor t = empty(dtype, shape);
        fill(t, 0);
        return t;
    }

    Tensor upload(float[] data, int... shape);

    Tensor upload(int[] data, int... shape);

    Tensor uploadBf16(short[] bits, int... shape);

    void copyFromHost(Tensor dst, float[] src);

    void copyFromHost(Tensor dst, int[] src);

    float[] downloadFloats(Tensor t);

    int[] downloadInts(Tensor t);

    short[] downloadBf16(Tensor t);

    /**
     * {@link #copyFromHost(Tensor, int[])} ordered after the ops issued so far, without waiting for them: {@code src}
     * may be reused as soon as this returns (CUDA stages it in page-locked memory and copies on its stream; the CPU
     * copies at once). Not while a graph is being captured.
     */
    void copyFromHostAsync(Tensor dst, int[] src);

    /**
     * Snapshots an int32 and an fp32 tensor as they will be once the ops issued so far are done, without waiting for
     * them (CUDA: copies to page-locked memory on its stream; the CPU copies at once): later ops may overwrite the
     * tensors. The host reads the snapshot, waiting for it then, through {@link Fetched}, or discards it. Like every
     * op, from one thread at a time.
     */
    Fetched fetch(Tensor ints, Tensor floats);

    /** A snapshot from {@link #fetch}. */
    interface Fetched {
        /** The int32 tensor's values; the first call of either method waits for the snapshot. */
        int[] ints();

        /** The fp32 tensor's values. */
        float[] floats();

        /**
         * Gives up a snapshot that will not be read (a caller unwinding after an error), so that its host buffer is
         * reused; reading it afterwards is an error. Nothing to do once it was read.
         */
        default void discard() {}
    }

    /** Waits until every op issued so far has finished. */
    void synchronize();

    /**
     * Whether ops are queued for a device and return before they are done (CUDA), so that host work can overlap them;
     * false where each op is done when it returns (the CPU).
     */
    default boolean queuesOps() { return false; }

    /**
     * Records the ops that {@code body} issues as a graph to replay, where the backend has graphs (CUDA graphs), or
     * returns null (the CPU): the caller then simply runs {@code body} each time. Rules for the body: it allocates
     * nothing, reads nothing back to the host and does not synchronize; every tensor it touches outlives the graph;
     * and it must have run eagerly once with the same tensors first (so that per-shape plans, caches and scratch space
     * exist). A replay does exactly the recorded work on the recorded addresses; data changes between replays go
     * through the tensors' contents.
     */
    default Replay capture(Runnable body) { return null; }

    /** Whether {@link #capture} records graphs here (false: it returns null, and a caller runs its steps eagerly). */
    default boolean capturesGraphs() { return false; }

    /** A recorded graph of ops. */
    interface Replay extends AutoCloseable {
        /** Issues the recorded ops (asynchronously, like any op). */
        void run();

        @Override
        void close();
    }

    /** Bytes currently held by tensors this backend allocated and that are not yet closed. */
    long liveBytes();

    /** Number of live owning tensors. */
    long liveTensors();

    // ---- elementwise basics ---------------------------------------------------------------------------------------

    /** x[i] = value (fp32, bf16 rounded to nearest even, int32 truncated). */
    void fill(Tensor x, double value);

    /** x[i] = alpha * x[i] (fp32, bf16). */
    void scale(Tensor x, float alpha);

    /** dst = src, same dtype and element count (shapes may differ). */
    void copy(Tensor dst, Tensor src);

    /** dst = (dtype of dst) src: fp32 to bf16 rounds to nearest even; bf16 to fp32 is exact. Same element count. */
    void cast(Tensor dst, Tensor src);

    // ---- elementwise ----------------------------------------------------------------------------------------------

    /** out = a + b (all fp32 or all bf16; out may alias a or b): the residual add. */
    void add(Tensor out, Tensor a, Tensor b);

    /** y += alpha * x (y fp32; x fp32 or bf16): gradient accumulation. */
    void axpy(Tensor y, float alpha, Tensor x);

    // ---- embedding ------------------------------------------------------------------------------------------------

    /** out[n, :] = table[ids[n], :]. out [N, D] and table [V, D] both fp32 or both bf16; ids [N] int32 in [0, V). */
    void embedding(Tensor out, Tensor table, Tensor ids);

    /** dTable[ids[n], :] += dOut[n, :], deterministically (rows summed in token order). dTable fp32; dOut fp32 or bf16. */
    void embeddingBackward(Tensor dTable, Tensor dOut, Tensor ids);

    // ---- RMSNorm --------------------------------------------------------------------------------------------------

    /**
     * out = x * rstd * weight with rstd = 1 / sqrt(mean(x^2) + eps), per row. x, out [N, D] (both fp32 or both
     * bf16); weight [D] fp32 or bf16; rstd [N] fp32 is saved for the backward.
     */
    void rmsNorm(Tensor out, Tensor rstd, Tensor x, Tensor weight, float eps);

    /**
     * dx = rstd * (w*dOut - x * rstd^2 * mean(w*dOut*x)) (overwritten); dWeight += sum_n dOut * x * rstd.
     * dx, dOut, x all fp32 or all bf16; weight fp32 or bf16; dWeight, rstd fp32.
     */
    void rmsNormBackward(Tensor dx, Tensor dWeight, Tensor dOut, Tensor x, Tensor weight, Tensor rstd);

    // ---- matmul ---------------------------------------------------------------------------------------------------

    /**
     * C = alpha * op(A) * op(B) + beta * C with fp32 accumulation. op(A) is [M, K] (A is [K, M] when transA),
     * op(B) is [K, N] (B is [N, K] when transB). Rank-3 operands [batch, ., .] give strided batches; a rank-2
     * A or B is shared by every batch. beta = 0 ignores C's old contents (NaN included). A and B have one dtype;
     * fp32 A/B give an fp32 C, bf16 A/B an fp32 or bf16 C (products and sums in fp32, one rounding of the result).
     */
    void matmul(Tensor c, Tensor a, boolean transA, Tensor b, boolean transB, float alpha, float beta);

    // ---- RoPE -----------------------------------------------------------------------------------------------------

    /** out = rotary(x) at the given positions. x, out [N, H, headDim], both fp32 or both bf16; positions [N] int32 >= 0. */
    void rope(Tensor out, Tensor x, Tensor positions, Rope rope);

    /** dx = rotary^T(dOut): the inverse rotation (sin negated). */
    void ropeBackward(Tensor dx, Tensor dOut, Tensor positions, Rope rope);

    // ---- attention ------------------------------------------------------------------------------------------------

    /**
     * Causal grouped-query attention over packed sequences. q [N, Hq, D], k and v [N, Hkv, D] (Hq a multiple of
     * Hkv; query head h reads kv head h / (Hq/Hkv)); cuSeqlens [B+1] int32 with cuSeqlens[0] = 0 and
     * cuSeqlens[B] = N: token t of sequence b attends to tokens cuSeqlens[b]..t. out [N, Hq, D];
     * lse [N, Hq] = log sum exp of the scaled scores (saved for the backward). q, k, v, out one dtype; lse fp32.
     */
    void attention(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor cuSeqlens, float scale);

    /** Gradients of {@link #attention}: dq, dk, dv overwritten. Every tensor but lse (fp32) of one dtype. */
    void attentionBackward(Tensor dq, Tensor dk, Tensor dv, Tensor dOut, Tensor q, Tensor k, Tensor v,
                           Tensor out, Tensor lse, Tensor cuSeqlens, float scale);

    /**
     * Writes k[n], v[n] ([N, Hkv, D]) into the paged caches ([numBlocks, blockSize, Hkv, D]) at slot slots[n]
     * (block = slot / blockSize, offset = slot % blockSize). Caches and k, v of one dtype. Slots should be distinct:
     * where two tokens name one slot, the CPU keeps the last one's row, while CUDA writes them concurrently (one of
     * them, or a mix of their 16-byte pieces, lands); the decode graph's padding rows share one slot but write equal rows.
     */
    void kvAppend(Tensor kCache, Tensor vCache, Tensor k, Tensor v, Tensor slots);

    /**
     * ids[i] = src[index[i]] where index[i] >= 0; ids[i] is left as it is where index[i] < 0 (all int32, rank 1; index
     * as long as ids; ids and src apart). An index at or past src's length is an error naming it. A decode step takes
     * the tokens its previous step sampled this way, on the device (docs/kernels.md, "Pipelined decode").
     */
    void gatherTokens(Tensor ids, Tensor src, Tensor index);

    /**
     * One query token per sequence against its paged KV cache: q, out [B, Hq, D]; blockTables [B, maxBlocks] int32;
     * contextLens [B] int32 (the number of cached tokens to attend to, including the current one). out, q and the
     * caches of one dtype.
     */
    default void decodeAttention(Tensor out, Tensor q, Tensor kCache, Tensor vCache, Tensor blockTables, Tensor contextLens,
                                 float scale) {
        decodeAttention(out, q, kCache, vCache, blockTables, contextLens, null, scale);
    }

    /**
     * {@link #decodeAttention} where groups of sequences share a prefix of their keys (cascade decoding): prefixGroups
     * [G, 3] int32, or null; row g = (first, count, shared) says that sequences first .. first + count - 1 read their
     * first {@code shared} keys through sequence first's block-table row (their own rows from key {@code shared} on).
     * Where those rows hold the same blocks, as a prompt's samples do, the result is decodeAttention's up to fp32
     * summation order (and, on CUDA, where P is rounded to bf16); CUDA reads the shared keys once per group and kv head
     * instead of once per sequence. A row with count 0 is padding; a row with shared 0 is checked but shares nothing. A
     * sequence may be in one sharing row at most; shared must not exceed a member's context length. Every table entry
     * a member's context covers must be a valid block id, those below shared included (they are checked, not read).
     * Bad rows: IllegalArgumentException on the CPU (the rows are checked before the sequences); CUDA reports them
     * through the device flag (the members' outputs are not written; a row whose first sequence is outside the batch
     * names none).
     */
    void decodeAttention(Tensor out, Tensor q, Tensor kCache, Tensor vCache, Tensor blockTables, Tensor contextLens,
                         Tensor prefixGroups, float scale);

    // ---- SwiGLU ---------------------------------------------------------------------------------------------------

    /** out = silu(gate) * up, silu(x) = x * sigmoid(x). All [N, F], all fp32 or all bf16. */
    void swiglu(Tensor out, Tensor gate, Tensor up);

    /** dGate = dOut * up * silu'(gate), dUp = dOut * silu(gate) (overwritten). All fp32 or all bf16. */
    void swigluBackward(Tensor dGate, Tensor dUp, Tensor dOut, Tensor gate, Tensor up);

    // ---- LM head: log-probs and the fused GRPO loss ---------------------------------------------------------------

    /**
     * out[n] = log softmax(hidden[n] . lmHead^T / (temperature + 1e-7))[targets[n]], computed over vocabulary chunks
     * with an online log-sum-exp: the [N, V] logits matrix is never held. hidden [N, D] and lmHead [V, D] of one
     * dtype; targets [N] int32; out [N] fp32.
     */
    void tokenLogprobs(Tensor out, Tensor hidden, Tensor lmHead, Tensor targets, float temperature);

    /**
     * Backward of {@link #tokenLogprobs} for upstream gradients dLogprobs [N]: dHidden overwritten, dLmHead
     * accumulated. dlogit[n, v] = dLogprobs[n] * (1[v = target] - p[n, v]) / (temperature + 1e-7). hidden, lmHead,
     * dHidden of one dtype; dLmHead and dLogprobs fp32.
     */
    void tokenLogprobsBackward(Tensor dHidden, Tensor dLmHead, Tensor dLogprobs, Tensor hidden, Tensor lmHead,
                               Tensor targets, float temperature);

    /**
     * The GRPO loss fused with the LM head (grpo-reference.md section 4), never materializing the logits:
     * logp = tokenLogprobs(...); ratio = exp(logp - oldLogprobs); pg = max(-A*ratio, -A*clamp(ratio, 1-epsLow,
     * 1+epsHigh)); d = clamp(logp - refLogprobs, -40, 40); loss = sum_n weights[n] * (pg[n] + beta * kl(d, ratio)).
     * {@code weights} [N] carries the mask and the aggregation (weights = mask / sum(mask) gives the token-masked
     * mean). advantages, oldLogprobs, refLogprobs [N]. Gradients w.r.t. hidden (overwritten) and lmHead (accumulated).
     * hidden, lmHead and out.dHidden of one dtype; out.dLmHead and every other float tensor fp32.
     *
     * <p>{@code oldLogprobs} may be null: on-policy, each token's old log-prob is its own log-prob as this call computes
     * it (float64 inside the op), detached, so every ratio is exactly 1 (TRL's per_token_logps.detach(); the trainer's
     * first mini-batch, whose weights are still the ones the rollouts were scored with).
     */
    void grpoLoss(GrpoLossOutputs out, Tensor hidden, Tensor lmHead, Tensor targets, Tensor weights, Tensor advantages,
                  Tensor oldLogprobs, Tensor refLogprobs, GrpoLossParams params);

    // ---- sampling -------------------------------------------------------------------------------------------------

    /**
     * Samples one token per row of logits [B, V] from softmax(logits / temperature) restricted to the top-k and then
     * the top-p nucleus, renormalized. The uniform variate of row b comes from Philox(seed; rngCounters[b, 0] =
     * stream, rngCounters[b, 1] = step), so a row's token depends only on its logits, the seed and its counter,
     * never on the rest of the batch. tokens [B] int32; logprobs [B] = log softmax(logits / temperature)[token]
     * (the unfiltered temperature-scaled distribution; at temperature 0, of softmax(logits)). logits fp32 or bf16
     * (bf16 logits sample exactly as their fp32 widening).
     *
     * <p>Non-finite logits have a defined result, the same on every backend: NaN counts as -inf. A row whose largest
     * logit is +inf or -inf (an +inf entry, or no finite entry) returns the lowest index holding that largest value
     * (the first +inf entry; token 0 when every entry is -inf or NaN) with logprob NaN, at any temperature, top-k and
     * top-p; callers detect such rows by the NaN logprob. A row with a finite maximum samples normally, its NaN and
     * -inf entries having probability 0.
     */
    void sample(Tensor tokens, Tensor logprobs, Tensor logits, Tensor rngCounters, SamplingSpec spec);

    /**
     * {@link #sample} with each row's own parameters: row b draws with {@code specs[b]} (its temperature, top-k, top-p
     * and seed) exactly the token and log-prob that {@link #sample} with that one spec draws for it, since a row's draw
     * never depends on the other rows. {@code specs.length} == B, no element null. (A serving batch mixes its requests'
     * parameters; the GRPO rollout samples every row alike and calls the one-spec form.)
     */
    void sample(Tensor tokens, Tensor logprobs, Tensor logits, Tensor rngCounters, SamplingSpec[] specs);

    // ---- optimizer and reductions ---------------------------------------------------------------------------------

    /**
     * AdamW (torch semantics) on a flat fp32 shard: p *= 1 - lr*wd; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
     * p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps). Optionally writes bf16(p) to bf16Out.
     */
    void adamW(Tensor param, Tensor grad, Tensor m, Tensor v, AdamWStep step, Tensor bf16Out);

    /** out[0] += sum(x^2) for fp32 or bf16 x (out is fp32 [1]): squared norms for gradient clipping. */
    void sumSquares(Tensor out, Tensor x);

    @Override
    void close();
}
