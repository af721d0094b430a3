package org.grpo4j.internal.backend;

import java.util.Arrays;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Validation and bookkeeping shared by every backend. Each public op checks its arguments here (so the checks and
 * their messages are identical on every backend) and then calls the backend's {@code ...Impl} method.
 */
public abstract class AbstractBackend implements Backend {
    private final AtomicLong liveBytes = new AtomicLong();
    private final AtomicLong peakBytes = new AtomicLong();
    private final AtomicLong liveTensors = new AtomicLong();
    private volatile boolean closed;

    // ---- subclass hooks -------------------------------------------------------------------------------------------

    abstract Storage allocateStorage(DType dtype, long elements);

    abstract void uploadImpl(Tensor dst, Object hostArray);

    abstract Object downloadImpl(Tensor src);

    abstract void fillImpl(Tensor x, double value);

    abstract void scaleImpl(Tensor x, float alpha);

    abstract void copyImpl(Tensor dst, Tensor src);

    abstract void castImpl(Tensor dst, Tensor src);

    abstract void addImpl(Tensor out, Tensor a, Tensor b);

    abstract void axpyImpl(Tensor y, float alpha, Tensor x);

    abstract void embeddingImpl(Tensor out, Tensor table, Tensor ids);

    abstract void embeddingBackwardImpl(Tensor dTable, Tensor dOut, Tensor ids);

    abstract void rmsNormImpl(Tensor out, Tensor rstd, Tensor x, Tensor weight, float eps);

    abstract void rmsNormBackwardImpl(Tensor dx, Tensor dWeight, Tensor dOut, Tensor x, Tensor weight, Tensor rstd);

    /** Shapes already resolved: batch, m, n, k and whether A/B/C are batched (rank 3). */
    abstract void matmulImpl(Tensor c, Tensor a, boolean transA, Tensor b, boolean transB, float alpha, float beta,
                             int batch, int m, int n, int k);

    abstract void ropeImpl(Tensor out, Tensor x, Tensor positions, Rope rope, boolean inverse);

    abstract void attentionImpl(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor cuSeqlens, float scale);

    abstract void attentionBackwardImpl(Tensor dq, Tensor dk, Tensor dv, Tensor dOut, Tensor q, Tensor k, Tensor v,
                                        Tensor out, Tensor lse, Tensor cuSeqlens, float scale);

    abstract void kvAppendImpl(Tensor kCache, Tensor vCache, Tensor k, Tensor v, Tensor slots);

    abstract void gatherTokensImpl(Tensor ids, Tensor src, Tensor index);

    /** The stream-ordered upload; by default at once. */
    void copyFromHostAsyncImpl(Tensor dst, int[] src) { uploadImpl(dst, src); }

    /** The stream-ordered snapshot; by default read at once. */
    Fetched fetchImpl(Tensor ints, Tensor floats) {
        int[] a = (int[]) downloadImpl(ints);
        float[] b = (float[]) downloadImpl(floats);
        return new Fetched() {
            @Override
            public int[] ints() { return a; }

            @Override
            public float[] floats() { return b; }
        };
    }

    abstract void decodeAttentionImpl(Tensor out, Tensor q, Tensor kCache, Tensor vCache, Tensor blockTables,
                                      Tensor contextLens, Tensor prefixGroups, float scale);

    abstract void swigluImpl(Tensor out, Tensor gate, Tensor up);

    abstract void swigluBackwardImpl(Tensor dGate, Tensor dUp, Tensor dOut, Tensor gate, Tensor up);

    abstract void tokenLogprobsImpl(Tensor out, Tensor hidden, Tensor lmHead, Tensor targets, float temperature);

    abstract void tokenLogprobsBackwardImpl(Tensor dHidden, Tensor dLmHead, Tensor dLogprobs, Tensor hidden,
                                            Tensor lmHead, Tensor targets, float temperature);

    abstract void grpoLossImpl(GrpoLossOutputs out, Tensor hidden, Tensor lmHead, Tensor targets, Tensor weights,
                               Tensor advantages, Tensor oldLogprobs, Tensor refLogprobs, GrpoLossParams p);

    abstract void sampleImpl(Tensor tokens, Tensor logprobs, Tensor logits, Tensor rngCounters, SamplingSpec spec);
    /** sample with per-row specs (checked: one a row, none null, each top_k within V; a copy the caller cannot change). */
    abstract void sampleRowsImpl(Tensor tokens, Tensor logprobs, Tensor logits, Tensor rngCounters, SamplingSpec[] specs);

    abstract void adamWImpl(Tensor param, Tensor grad, Tensor m, Tensor v, AdamWStep step, Tensor bf16Out);

    abstract void sumSquaresImpl(Tensor out, Tensor x);

    // ---- memory ---------------------------------------------------------------------------------------------------

    @Override
    public final Tensor empty(DType dtype, int... shape) {
        checkOpen();
        Check.notNull("empty", "dtype", dtype);
        Check.notNull("empty", "shape", shape);
        long n = Tensor.numel(shape);
        if (n > Long.MAX_VALUE / 8)  // (bytes = n x dtype size must not wrap: a huge shape would allocate 1 byte)
            throw new IllegalArgumentException("empty: " + Arrays.toString(shape) + " of " + dtype.label() + " is " + n
                    + " elements, more bytes than a long counts");
        Storage s = allocateStorage(dtype, n);
        long live = liveBytes.addAndGet(n * dtype.bytes());
        peakBytes.accumulateAndGet(live, Math::max);
        liveTensors.incrementAndGet();
        return new Tensor(this, s, 0, shape, true);
    }

    final void release(Tensor t) {
        Storage s = t.storage;
        if (!s.released()) {
            s.release();
            liveBytes.addAndGet(-s.capacity * s.dtype.bytes());
            liveTensors.decrementAndGet();
        }
    }

    @Override
    public long liveBytes() { return liveBytes.get(); }

    @Override
    public long liveTensors() { return liveTensors.get(); }

    /** The most bytes held by live tensors at any time since the backend opened or {@link #resetPeakBytes()}. */
    public long peakBytes() { return peakBytes.get(); }

    /** Starts a new high-water mark at the bytes live now. */
    public void resetPeakBytes() { peakBytes.set(liveBytes.get()); }

    @Override
    public final Tensor upload(float[] data, int... shape) {
        return uploadArray("upload", DType.FP32, data, data == null ? 0 : data.length, shape);
    }

    @Override
    public final Tensor upload(int[] data, int... shape) {
        return uploadArray("upload", DType.INT32, data, data == null ? 0 : data.length, shape);
    }

    @Override
    public final Tensor uploadBf16(short[] bits, int... shape) {
        return uploadArray("uploadBf16", DType.BF16, bits, bits == null ? 0 : bits.length, shape);
    }

    private Tensor uploadArray(String op, DType dtype, Object data, int length, int[] shape) {
        Check.notNull(op, "data", data);
        if (Tensor.numel(shape) != length)
            throw Check.fail(op, "array of " + length + " elements does not match shape " + java.util.Arrays.toString(shape));
        Tensor t = empty(dtype, shape);
        uploadImpl(t, data);
        return t;
    }

    @Override
    public final void copyFromHost(Tensor dst, float[] src) {
        checkHostCopy("copyFromHost", dst, DType.FP32, src, src == null ? 0 : src.length);
        uploadImpl(dst, src);
    }

    @Override
    public final void copyFromHost(Tensor dst, int[] src) {
        checkHostCopy("copyFromHost", dst, DType.INT32, src, src == null ? 0 : src.length);
        uploadImpl(dst, src);
    }

    @Override
    public final void copyFromHostAsync(Tensor dst, int[] src) {
        checkHostCopy("copyFromHostAsync", dst, DType.INT32, src, src == null ? 0 : src.length);
        copyFromHostAsyncImpl(dst, src);
    }

    private void checkHostCopy(String op, Tensor dst, DType dtype, Object src, int length) {
        Check.tensor(op, this, "dst", dst);
        Check.dtype(op, "dst", dst, dtype);
        Check.notNull(op, "src", src);
        Check.check(length == dst.numel(), op, "src has " + length + " elements, dst " + dst);
    }

    @Override
    public final Fetched fetch(Tensor ints, Tensor floats) {
        Check.tensor("fetch", this, "ints", ints);
        Check.dtype("fetch", "ints", ints, DType.INT32);
        Check.tensor("fetch", this, "floats", floats);
        Check.dtype("fetch", "floats", floats, DType.FP32);
        // (the host arrays hold them: checked before any staging buffer is taken or copy queued)
        Check.check(ints.numel() <= Integer.MAX_VALUE - 8 && floats.numel() <= Integer.MAX_VALUE - 8, "fetch", "ints " + ints
                + " or floats " + floats + " has more elements than a Java array holds (2^31 - 9)");
        return fetchImpl(ints, floats);
    }

    @Override
    public final float[] downloadFloats(Tensor t) {
        Check.tensor("downloadFloats", this, "t", t);
        Check.dtype("downloadFloats", "t", t, DType.FP32);
        return (float[]) downloadImpl(t);
    }

    @Override
    public final int[] downloadInts(Tensor t) {
        Check.tensor("downloadInts", this, "t", t);
        Check.dtype("downloadInts", "t", t, DType.INT32);
        return (int[]) downloadImpl(t);
    }

    @Override
    public final short[] downloadBf16(Tensor t) {
        Check.tensor("downloadBf16", this, "t", t);
        Check.dtype("downloadBf16", "t", t, DType.BF16);
        return (short[]) downloadImpl(t);
    }

    // ---- ops ------------------------------------------------------------------------------------------------------

    @Override
    public final void fill(Tensor x, double value) {
        Check.tensor(Ops.FILL, this, "x", x);
        Check.dtype(Ops.FILL, "x", x, DType.FP32, DType.BF16, DType.INT32);
        if (x.dtype() == DType.INT32)
            Check.check(value == Math.rint(value) && Math.abs(value) <= Integer.MAX_VALUE, Ops.FILL,
                    "int32 fill value must be an int, got " + value);
        requireOp(Ops.FILL);
        fillImpl(x, value);
    }

    @Override
    public final void scale(Tensor x, float alpha) {
        Check.tensor(Ops.SCALE, this, "x", x);
        Check.dtype(Ops.SCALE, "x", x, DType.FP32, DType.BF16);
        requireOp(Ops.SCALE);
        scaleImpl(x, alpha);
    }

    @Override
    public final void copy(Tensor dst, Tensor src) {
        Check.tensor(Ops.COPY, this, "dst", dst);
        Check.tensor(Ops.COPY, this, "src", src);
        Check.check(dst.dtype() == src.dtype(), Ops.COPY,
                "dst " + dst + " and src " + src + " differ in dtype; expected the same dtype (cast converts)");
        Check.sameNumel(Ops.COPY, "dst", dst, "src", src);
        // (a device-to-device copy between partly overlapping ranges is undefined on CUDA; the CPU's arraycopy is not)
        Check.sameOrApart(Ops.COPY, "dst", dst, "src", src);
        requireOp(Ops.COPY);
        copyImpl(dst, src);
    }

    @Override
    public final void cast(Tensor dst, Tensor src) {
        Check.tensor(Ops.CAST, this, "dst", dst);
        Check.tensor(Ops.CAST, this, "src", src);
        Check.dtype(Ops.CAST, "dst", dst, DType.FP32, DType.BF16);
        Check.dtype(Ops.CAST, "src", src, DType.FP32, DType.BF16);
        Check.sameNumel(Ops.CAST, "dst", dst, "src", src);
        // (a same-dtype cast is a copy: partly overlapping ranges are refused as copy refuses them)
        Check.sameOrApart(Ops.CAST, "dst", dst, "src", src);
        requireOp(Ops.CAST);
        castImpl(dst, src);
    }

    @Override
    public final void add(Tensor out, Tensor a, Tensor b) {
        String op = Ops.ADD;
        sameFloat(op, "out, a, b", out, a, b);
        Check.sameNumel(op, "out", out, "a", a);
        Check.sameNumel(op, "out", out, "b", b);
        Check.sameOrApart(op, "out", out, "a", a);
        Check.sameOrApart(op, "out", out, "b", b);
        requireOp(op);
        addImpl(out, a, b);
    }

    @Override
    public final void axpy(Tensor y, float alpha, Tensor x) {
        String op = Ops.AXPY;
        fp32(op, "y", y);
        fp32OrBf16(op, "x", x);
        Check.sameNumel(op, "y", y, "x", x);
        Check.apart(op, "y", new Tensor[] {y}, "x", x);
        requireOp(op);
        axpyImpl(y, alpha, x);
    }

    @Override
    public final void embedding(Tensor out, Tensor table, Tensor ids) {
        String op = Ops.EMBEDDING;
        sameFloat(op, "table, out", table, out);
        int32(op, "ids", ids);
        Check.rank(op, "table", table, 2);
        Check.rank(op, "ids", ids, 1);
        Check.shape(op, "out", out, ids.dim(0), table.dim(1));
        Check.apart(op, "out", new Tensor[] {out}, "table, ids", table, ids);
        requireOp(op);
        embeddingImpl(out, table, ids);
    }

    @Override
    public final void embeddingBackward(Tensor dTable, Tensor dOut, Tensor ids) {
        String op = Ops.EMBEDDING_BACKWARD;
        fp32(op, "dTable", dTable);
        fp32OrBf16(op, "dOut", dOut);
        int32(op, "ids", ids);
        Check.rank(op, "dTable", dTable, 2);
        Check.rank(op, "ids", ids, 1);
        Check.shape(op, "dOut", dOut, ids.dim(0), dTable.dim(1));
        Check.apart(op, "dTable", new Tensor[] {dTable}, "dOut, ids", dOut, ids);
        requireOp(op);
        embeddingBackwardImpl(dTable, dOut, ids);
    }

    @Override
    public final void rmsNorm(Tensor out, Tensor rstd, Tensor x, Tensor weight, float eps) {
        String op = Ops.RMS_NORM;
        sameFloat(op, "x, out", x, out);
        fp32OrBf16(op, "weight", weight);
        fp32(op, "rstd", rstd);
        Check.rank(op, "x", x, 2);
        Check.shape(op, "weight", weight, x.dim(1));
        Check.shape(op, "out", out, x.dim(0), x.dim(1));
        Check.shape(op, "rstd", rstd, x.dim(0));
        Check.positive(op, "eps", eps);
        Check.apart(op, "out, rstd", new Tensor[] {out, rstd}, "x, weight", x, weight);
        requireOp(op);
        rmsNormImpl(out, rstd, x, weight, eps);
    }

    @Override
    public final void rmsNormBackward(Tensor dx, Tensor dWeight, Tensor dOut, Tensor x, Tensor weight, Tensor rstd) {
        String op = Ops.RMS_NORM_BACKWARD;
        sameFloat(op, "dx, dOut, x", dx, dOut, x);
        fp32OrBf16(op, "weight", weight);
        fp32(op, "dWeight", dWeight);
        fp32(op, "rstd", rstd);
        Check.rank(op, "x", x, 2);
        int n = x.dim(0), d = x.dim(1);
        Check.shape(op, "dx", dx, n, d);
        Check.shape(op, "dOut", dOut, n, d);
        Check.shape(op, "weight", weight, d);
        Check.shape(op, "dWeight", dWeight, d);
        Check.shape(op, "rstd", rstd, n);
        Check.sameOrApart(op, "dx", dx, "dOut", dOut); // (in place: dx may be dOut's memory)
        Check.apart(op, "dx, dWeight", new Tensor[] {dx, dWeight}, "x, weight, rstd", x, weight, rstd);
        Check.apart(op, "dWeight", new Tensor[] {dWeight}, "dOut", dOut);
        requireOp(op);
        rmsNormBackwardImpl(dx, dWeight, dOut, x, weight, rstd);
    }

    @Override
    public final void matmul(Tensor c, Tensor a, boolean transA, Tensor b, boolean transB, float alpha, float beta) {
        String op = Ops.MATMUL;
        DType ab = sameFloat(op, "a, b", a, b);
        Check.tensor(op, this, "c", c);
        if (ab == DType.FP32)
            Check.check(c.dtype() == DType.FP32, op, "c has dtype " + c.dtype().label()
                    + " but a, b are fp32; expected an fp32 c (a bf16 c needs bf16 a and b)");
        else Check.dtype(op, "c", c, DType.FP32, DType.BF16);
        Check.rank(op, "a", a, 2, 3);
        Check.rank(op, "b", b, 2, 3);
        Check.rank(op, "c", c, 2, 3);
        int m = transA ? a.dim(-1) : a.dim(-2), ka = transA ? a.dim(-2) : a.dim(-1);
        int kb = transB ? b.dim(-1) : b.dim(-2), n = transB ? b.dim(-2) : b.dim(-1);
        if (ka != kb)
            throw Check.fail(op, "inner dimensions differ: op(a) of " + a.shapeString() + (transA ? "^T" : "")
                    + " has " + ka + " columns, op(b) of " + b.shapeString() + (transB ? "^T" : "") + " has " + kb + " rows");
        int batch = c.rank() == 3 ? c.dim(0) : 1;
        if (c.rank() == 2 && (a.rank() == 3 || b.rank() == 3))
            throw Check.fail(op, "batched a " + a.shapeString() + " or b " + b.shapeString() + " needs a rank-3 c, got " + c.shapeString());
        if (a.rank() == 3 && a.dim(0) != batch) throw Check.fail(op, "a " + a.shapeString() + " and c " + c.shapeString() + " differ in batch");
        if (b.rank() == 3 && b.dim(0) != batch) throw Check.fail(op, "b " + b.shapeString() + " and c " + c.shapeString() + " differ in batch");
        if (c.dim(-2) != m || c.dim(-1) != n)
            throw Check.fail(op, "c " + c.shapeString() + " should be [" + m + ", " + n + "] for a " + a.shapeString()
                    + (transA ? "^T" : "") + " times b " + b.shapeString() + (transB ? "^T" : ""));
        Check.finite(op, "alpha", alpha);
        Check.finite(op, "beta", beta);
        Check.apart(op, "c", new Tensor[] {c}, "a, b", a, b);
        requireOp(op);
        matmulImpl(c, a, transA, b, transB, alpha, beta, batch, m, n, ka);
    }

    @Override
    public final void rope(Tensor out, Tensor x, Tensor positions, Rope rope) {
        checkRope(Ops.ROPE, out, x, positions, rope);
        requireOp(Ops.ROPE);
        ropeImpl(out, x, positions, rope, false);
    }

    @Override
    public final void ropeBackward(Tensor dx, Tensor dOut, Tensor positions, Rope rope) {
        checkRope(Ops.ROPE_BACKWARD, dx, dOut, positions, rope);
        requireOp(Ops.ROPE_BACKWARD);
        ropeImpl(dx, dOut, positions, rope, true);
    }

    private void checkRope(String op, Tensor out, Tensor x, Tensor positions, Rope rope) {
        boolean bw = op.equals(Ops.ROPE_BACKWARD);
        String outName = bw ? "dx" : "out", xName = bw ? "dOut" : "x";
        sameFloat(op, outName + ", " + xName, out, x);
        int32(op, "positions", positions);
        Check.notNull(op, "rope", rope);
        Check.rank(op, xName, x, 3);
        Check.shape(op, outName, out, x.dim(0), x.dim(1), x.dim(2));
        Check.shape(op, "positions", positions, x.dim(0));
        Check.check(x.dim(2) == rope.headDim(), op, xName + " " + x.shapeString() + " has head dim " + x.dim(2) + " but rope has " + rope.headDim());
        Check.sameOrApart(op, outName, out, xName, x); // (in place: out may be x's memory)
        Check.apart(op, outName, new Tensor[] {out}, "positions", positions);
    }

    @Override
    public final void attention(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor cuSeqlens, float scale) {
        String op = Ops.ATTENTION;
        sameFloat(op, "q, k, v, out", q, k, v, out);
        fp32(op, "lse", lse);
        checkAttention(op, q, k, v, cuSeqlens, scale);
        Check.shape(op, "out", out, q.dim(0), q.dim(1), q.dim(2));
        Check.shape(op, "lse", lse, q.dim(0), q.dim(1));
        Check.apart(op, "out, lse", new Tensor[] {out, lse}, "q, k, v, cuSeqlens", q, k, v, cuSeqlens);
        requireOp(op);
        attentionImpl(out, lse, q, k, v, cuSeqlens, scale);
    }

    @Override
    public final void attentionBackward(Tensor dq, Tensor dk, Tensor dv, Tensor dOut, Tensor q, Tensor k, Tensor v,
                                        Tensor out, Tensor lse, Tensor cuSeqlens, float scale) {
        String op = Ops.ATTENTION_BACKWARD;
        sameFloat(op, "dq, dk, dv, dOut, q, k, v, out", dq, dk, dv, dOut, q, k, v, out);
        fp32(op, "lse", lse);
        checkAttention(op, q, k, v, cuSeqlens, scale);
        Check.shape(op, "dq", dq, q.dim(0), q.dim(1), q.dim(2));
        Check.shape(op, "dOut", dOut, q.dim(0), q.dim(1), q.dim(2));
        Check.shape(op, "out", out, q.dim(0), q.dim(1), q.dim(2));
        Check.shape(op, "dk", dk, k.dim(0), k.dim(1), k.dim(2));
        Check.shape(op, "dv", dv, k.dim(0), k.dim(1), k.dim(2));
        Check.shape(op, "lse", lse, q.dim(0), q.dim(1));
        Check.apart(op, "dq, dk, dv", new Tensor[] {dq, dk, dv}, "dOut, q, k, v, out, lse, cuSeqlens", dOut, q, k, v, out, lse, cuSeqlens);
        requireOp(op);
        attentionBackwardImpl(dq, dk, dv, dOut, q, k, v, out, lse, cuSeqlens, scale);
    }

    /** Shapes and cuSeqlens; q, k, v were already checked for dtype (and liveness) by the caller. */
    private void checkAttention(String op, Tensor q, Tensor k, Tensor v, Tensor cuSeqlens, float scale) {
        int32(op, "cuSeqlens", cuSeqlens);
        Check.rank(op, "q", q, 3);
        Check.rank(op, "k", k, 3);
        Check.shape(op, "k", k, q.dim(0), -1, q.dim(2));
        Check.shape(op, "v", v, k.dim(0), k.dim(1), k.dim(2));
        Check.check(k.dim(1) > 0 && q.dim(1) % k.dim(1) == 0, op,
                "query heads " + q.dim(1) + " must be a multiple of kv heads " + k.dim(1) + " (q " + q.shapeString() + ", k " + k.shapeString() + ")");
        Check.rank(op, "cuSeqlens", cuSeqlens, 1);
        Check.check(cuSeqlens.dim(0) >= 2, op, "cuSeqlens " + cuSeqlens.shapeString() + " needs at least 2 entries (B+1)");
        Check.positive(op, "scale", scale);
    }

    @Override
    public final void kvAppend(Tensor kCache, Tensor vCache, Tensor k, Tensor v, Tensor slots) {
        String op = Ops.KV_APPEND;
        sameFloat(op, "kCache, vCache, k, v", kCache, vCache, k, v);
        int32(op, "slots", slots);
        Check.rank(op, "kCache", kCache, 4);
        Check.shape(op, "vCache", vCache, kCache.dim(0), kCache.dim(1), kCache.dim(2), kCache.dim(3));
        Check.rank(op, "k", k, 3);
        Check.shape(op, "k", k, -1, kCache.dim(2), kCache.dim(3));
        Check.shape(op, "v", v, k.dim(0), k.dim(1), k.dim(2));
        Check.shape(op, "slots", slots, k.dim(0));
        Check.apart(op, "kCache, vCache", new Tensor[] {kCache, vCache}, "k, v, slots", k, v, slots);
        requireOp(op);
        kvAppendImpl(kCache, vCache, k, v, slots);
    }

    @Override
    public final void gatherTokens(Tensor ids, Tensor src, Tensor index) {
        String op = Ops.GATHER_TOKENS;
        int32(op, "ids", ids);
        int32(op, "src", src);
        int32(op, "index", index);
        Check.rank(op, "ids", ids, 1);
        Check.rank(op, "src", src, 1);
        Check.shape(op, "index", index, ids.dim(0));
        Check.apart(op, "ids", new Tensor[] {ids}, "src, index", src, index);
        requireOp(op);
        gatherTokensImpl(ids, src, index);
    }

    @Override
    public final void decodeAttention(Tensor out, Tensor q, Tensor kCache, Tensor vCache, Tensor blockTables,
                                      Tensor contextLens, Tensor prefixGroups, float scale) {
        String op = Ops.DECODE_ATTENTION;
        sameFloat(op, "out, q, kCache, vCache", out, q, kCache, vCache);
        int32(op, "blockTables", blockTables);
        int32(op, "contextLens", contextLens);
        Check.rank(op, "q", q, 3);
        Check.rank(op, "kCache", kCache, 4);
        Check.shape(op, "vCache", vCache, kCache.dim(0), kCache.dim(1), kCache.dim(2), kCache.dim(3));
        Check.check(q.dim(2) == kCache.dim(3), op, "q " + q.shapeString() + " and kCache " + kCache.shapeString() + " differ in head dim");
        Check.check(kCache.dim(2) > 0 && q.dim(1) % kCache.dim(2) == 0, op,
                "query heads " + q.dim(1) + " must be a multiple of kv heads " + kCache.dim(2));
        Check.shape(op, "out", out, q.dim(0), q.dim(1), q.dim(2));
        Check.rank(op, "blockTables", blockTables, 2);
        Check.shape(op, "blockTables", blockTables, q.dim(0), -1);
        Check.shape(op, "contextLens", contextLens, q.dim(0));
        if (prefixGroups != null) {
            int32(op, "prefixGroups", prefixGroups);
            Check.rank(op, "prefixGroups", prefixGroups, 2);
            Check.shape(op, "prefixGroups", prefixGroups, -1, 3);
            if (prefixGroups.dim(0) == 0) prefixGroups = null;
        }
        Check.positive(op, "scale", scale);
        Check.apart(op, "out", new Tensor[] {out}, "q, kCache, vCache, blockTables, contextLens, prefixGroups", q, kCache, vCache,
                blockTables, contextLens, prefixGroups);
        requireOp(op);
        decodeAttentionImpl(out, q, kCache, vCache, blockTables, contextLens, prefixGroups, scale);
    }

    /**
     * What is wrong with row g of decodeAttention's prefixGroups, in the words both backends use (the CPU when it
     * checks, CUDA when its kernel reports): field 0 first, 1 count, 2 shared (member 0: outside [0, limit]; m + 1:
     * above member m's context length), 3 a sequence (value) in two groups.
     */
    static String prefixGroupMessage(int g, int field, int member, int value, long limit) {
        String row = "prefixGroups[" + g + ", " + field + "]";
        return switch (field) {
            case 0 -> row + " (first sequence) = " + value + " is outside [0, " + limit + ")";
            case 1 -> limit == 0 ? row + " (count) = " + value + " is negative"
                    : row + " (count) = " + value + " runs past the batch: " + limit + " sequences from the first one on";
            case 2 -> member == 0 ? row + " (shared keys) = " + value + " is outside [0, " + limit + "] (maxBlocks x blockSize)"
                    : row + " (shared keys) = " + value + " exceeds the context length " + limit + " of its sequence #"
                    + (member - 1) + " (counted from the first)";
            default -> "sequence " + value + " is in more than one prefix group (prefixGroups[" + g + "] is one of them)";
        };
    }

    @Override
    public final void swiglu(Tensor out, Tensor gate, Tensor up) {
        String op = Ops.SWIGLU;
        sameFloat(op, "out, gate, up", out, gate, up);
        Check.sameNumel(op, "gate", gate, "up", up);
        Check.sameNumel(op, "out", out, "gate", gate);
        Check.apart(op, "out", new Tensor[] {out}, "gate, up", gate, up);
        requireOp(op);
        swigluImpl(out, gate, up);
    }

    @Override
    public final void swigluBackward(Tensor dGate, Tensor dUp, Tensor dOut, Tensor gate, Tensor up) {
        String op = Ops.SWIGLU_BACKWARD;
        sameFloat(op, "dGate, dUp, dOut, gate, up", dGate, dUp, dOut, gate, up);
        Check.sameNumel(op, "gate", gate, "up", up);
        Check.sameNumel(op, "dOut", dOut, "gate", gate);
        Check.sameNumel(op, "dGate", dGate, "gate", gate);
        Check.sameNumel(op, "dUp", dUp, "gate", gate);
        Check.apart(op, "dGate, dUp", new Tensor[] {dGate, dUp}, "dOut, gate, up", dOut, gate, up);
        requireOp(op);
        swigluBackwardImpl(dGate, dUp, dOut, gate, up);
    }

    /** Shapes, targets and temperature; hidden and lmHead were already checked for dtype by the caller. */
    private void checkLmHead(String op, Tensor hidden, Tensor lmHead, Tensor targets, float temperature) {
        int32(op, "targets", targets);
        Check.rank(op, "hidden", hidden, 2);
        Check.rank(op, "lmHead", lmHead, 2);
        Check.check(hidden.dim(1) == lmHead.dim(1), op,
                "hidden " + hidden.shapeString() + " and lmHead " + lmHead.shapeString() + " differ in hidden size");
        Check.shape(op, "targets", targets, hidden.dim(0));
        Check.check(temperature >= 0 && Float.isFinite(temperature), op, "temperature must be >= 0, got " + temperature);
    }

    @Override
    public final void tokenLogprobs(Tensor out, Tensor hidden, Tensor lmHead, Tensor targets, float temperature) {
        String op = Ops.TOKEN_LOGPROBS;
        sameFloat(op, "hidden, lmHead", hidden, lmHead);
        fp32(op, "out", out);
        checkLmHead(op, hidden, lmHead, targets, temperature);
        Check.shape(op, "out", out, hidden.dim(0));
        Check.apart(op, "out", new Tensor[] {out}, "hidden, lmHead, targets", hidden, lmHead, targets);
        requireOp(op);
        tokenLogprobsImpl(out, hidden, lmHead, targets, temperature);
    }

    @Override
    public final void tokenLogprobsBackward(Tensor dHidden, Tensor dLmHead, Tensor dLogprobs, Tensor hidden,
                                            Tensor lmHead, Tensor targets, float temperature) {
        String op = Ops.TOKEN_LOGPROBS_BACKWARD;
        sameFloat(op, "hidden, lmHead, dHidden", hidden, lmHead, dHidden);
        fp32(op, "dLmHead", dLmHead);
        fp32(op, "dLogprobs", dLogprobs);
        checkLmHead(op, hidden, lmHead, targets, temperature);
        Check.shape(op, "dHidden", dHidden, hidden.dim(0), hidden.dim(1));
        Check.shape(op, "dLmHead", dLmHead, lmHead.dim(0), lmHead.dim(1));
        Check.shape(op, "dLogprobs", dLogprobs, hidden.dim(0));
        Check.apart(op, "dHidden, dLmHead", new Tensor[] {dHidden, dLmHead}, "dLogprobs, hidden, lmHead, targets", dLogprobs, hidden, lmHead, targets);
        requireOp(op);
        tokenLogprobsBackwardImpl(dHidden, dLmHead, dLogprobs, hidden, lmHead, targets, temperature);
    }

    @Override
    public final void grpoLoss(GrpoLossOutputs out, Tensor hidden, Tensor lmHead, Tensor targets, Tensor weights,
                               Tensor advantages, Tensor oldLogprobs, Tensor refLogprobs, GrpoLossParams params) {
        String op = Ops.GRPO_LOSS;
        Check.notNull(op, "out", out);
        Check.notNull(op, "params", params);
        sameFloat(op, "hidden, lmHead, out.dHidden", hidden, lmHead, out.dHidden());
        fp32(op, "out.dLmHead", out.dLmHead());
        checkLmHead(op, hidden, lmHead, targets, params.temperature());
        int n = hidden.dim(0);
        for (Object[] a : new Object[][] {{"weights", weights}, {"advantages", advantages}, {"oldLogprobs", oldLogprobs},
                {"refLogprobs", refLogprobs}, {"out.logprobs", out.logprobs()}, {"out.ratio", out.ratio()},
                {"out.clipped", out.clipped()}, {"out.kl", out.kl()}}) {
            if (a[1] == null && a[0].equals("oldLogprobs")) continue; // on-policy: the op's own log-probs
            fp32(op, (String) a[0], (Tensor) a[1]);
            Check.shape(op, (String) a[0], (Tensor) a[1], n);
        }
        fp32(op, "out.loss", out.loss());
        Check.shape(op, "out.loss", out.loss(), 1);
        Check.shape(op, "out.dHidden", out.dHidden(), n, hidden.dim(1));
        Check.shape(op, "out.dLmHead", out.dLmHead(), lmHead.dim(0), lmHead.dim(1));
        Check.apart(op, "out.logprobs, out.ratio, out.clipped, out.kl, out.loss, out.dHidden, out.dLmHead",
                new Tensor[] {out.logprobs(), out.ratio(), out.clipped(), out.kl(), out.loss(), out.dHidden(), out.dLmHead()},
                "hidden, lmHead, targets, weights, advantages, oldLogprobs, refLogprobs", hidden, lmHead, targets, weights, advantages,
                oldLogprobs, refLogprobs);
        requireOp(op);
        grpoLossImpl(out, hidden, lmHead, targets, weights, advantages, oldLogprobs, refLogprobs, params);
    }

    @Override
    public final void sample(Tensor tokens, Tensor logprobs, Tensor logits, Tensor rngCounters, SamplingSpec spec) {
        String op = Ops.SAMPLE;
        Check.notNull(op, "spec", spec);
        checkSample(tokens, logprobs, logits, rngCounters);
        checkTopK("", spec, logits);
        requireOp(op);
        sampleImpl(tokens, logprobs, logits, rngCounters, spec);
    }

    @Override
    public final void sample(Tensor tokens, Tensor logprobs, Tensor logits, Tensor rngCounters, SamplingSpec[] specs) {
        String op = Ops.SAMPLE;
        Check.notNull(op, "specs", specs);
        checkSample(tokens, logprobs, logits, rngCounters);
        Check.check(specs.length == logits.dim(0), op, specs.length + " specs for the " + logits.dim(0) + " rows of logits " + logits.shapeString()
                + " (one a row)");
        for (int r = 0; r < specs.length; r++) {
            Check.check(specs[r] != null, op, "specs[" + r + "] is null");
            checkTopK("specs[" + r + "]: ", specs[r], logits);
        }
        requireOp(op);
        sampleRowsImpl(tokens, logprobs, logits, rngCounters, specs.clone());
    }

    private static void checkTopK(String which, SamplingSpec spec, Tensor logits) {
        Check.check(spec.topK() <= logits.dim(1), Ops.SAMPLE, which + "top_k = " + spec.topK() + " exceeds the vocabulary of logits "
                + logits.shapeString() + " (0 turns top-k off)");
    }

    private void checkSample(Tensor tokens, Tensor logprobs, Tensor logits, Tensor rngCounters) {
        String op = Ops.SAMPLE;
        fp32OrBf16(op, "logits", logits);
        Check.rank(op, "logits", logits, 2);
        Check.check(logits.dim(1) > 0, op, "logits " + logits.shapeString() + " has an empty vocabulary");
        int b = logits.dim(0);
        int32(op, "tokens", tokens);
        Check.shape(op, "tokens", tokens, b);
        fp32(op, "logprobs", logprobs);
        Check.shape(op, "logprobs", logprobs, b);
        int32(op, "rngCounters", rngCounters);
        Check.shape(op, "rngCounters", rngCounters, b, 2);
        Check.apart(op, "tokens, logprobs", new Tensor[] {tokens, logprobs}, "logits, rngCounters", logits, rngCounters);
    }

    @Override
    public final void adamW(Tensor param, Tensor grad, Tensor m, Tensor v, AdamWStep step, Tensor bf16Out) {
        String op = Ops.ADAMW;
        Check.notNull(op, "step", step);
        for (Object[] a : new Object[][] {{"param", param}, {"grad", grad}, {"m", m}, {"v", v}}) {
            fp32(op, (String) a[0], (Tensor) a[1]);
            Check.sameNumel(op, "param", param, (String) a[0], (Tensor) a[1]);
        }
        if (bf16Out != null) {
            Check.tensor(op, this, "bf16Out", bf16Out);
            Check.dtype(op, "bf16Out", bf16Out, DType.BF16);
            Check.sameNumel(op, "param", param, "bf16Out", bf16Out);
        }
        Check.apart(op, "param, m, v, bf16Out", new Tensor[] {param, m, v, bf16Out}, "grad", grad);
        requireOp(op);
        adamWImpl(param, grad, m, v, step, bf16Out);
    }

    @Override
    public final void sumSquares(Tensor out, Tensor x) {
        String op = Ops.SUM_SQUARES;
        fp32(op, "out", out);
        fp32OrBf16(op, "x", x);
        Check.shape(op, "out", out, 1);
        Check.apart(op, "out", new Tensor[] {out}, "x", x);
        requireOp(op);
        sumSquaresImpl(out, x);
    }

    private void fp32(String op, String name, Tensor t) {
        Check.tensor(op, this, name, t);
        Check.dtype(op, name, t, DType.FP32);
    }

    private void fp32OrBf16(String op, String name, Tensor t) {
        Check.tensor(op, this, name, t);
        Check.dtype(op, name, t, DType.FP32, DType.BF16);
    }

    /** Each tensor live and on this backend, then all of them fp32 or all bf16 (see {@link Check#sameFloat}). */
    private DType sameFloat(String op, String names, Tensor... ts) {
        checkOpen();
        for (int i = 0; i < ts.length; i++) // (the name, for Check.tensor's message, only where it fails)
            if (ts[i] == null || ts[i].backend() != this || !ts[i].isLive()) Check.tensor(op, this, Check.nameAt(names, i), ts[i]);
        return Check.sameFloat(op, names, ts);
    }

    private void int32(String op, String name, Tensor t) {
        Check.tensor(op, this, name, t);
        Check.dtype(op, name, t, DType.INT32);
    }

    // ---- lifecycle ------------------------------------------------------------------------------------------------

    final void requireOp(String op) {
        checkOpen();  // (a closed backend's stream, handles and buffers are freed: no op may reach them)
        if (!implementsOp(op))
            throw new UnsupportedOperationException(op + " is not implemented on " + name() + " yet");
        onOp(op);
    }

    /** Called once per op call, after its checks passed and before its work is enqueued (CudaBackend's op profile). */
    void onOp(String op) {}

    /** Whether {@link #close} has run: no op may reach a closed backend's stream, handles or buffers. */
    public final boolean isClosed() { return closed; }

    final void checkOpen() {
        if (closed) throw new IllegalStateException("backend " + name() + " is closed");
    }

    @Override
    public void close() { closed = true; }
}
