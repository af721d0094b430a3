package org.grpo4j.backend;

import java.util.concurrent.atomic.AtomicLong;

/**
 * Validation and bookkeeping shared by every backend. Each public op checks its arguments here (so the checks and
 * their messages are identical on every backend) and then calls the backend's {@code ...Impl} method.
 */
public abstract class AbstractBackend implements Backend {
    private final AtomicLong liveBytes = new AtomicLong();
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

    // ---- memory ---------------------------------------------------------------------------------------------------

    @Override
    public final Tensor empty(DType dtype, int... shape) {
        checkOpen();
        Check.notNull("empty", "dtype", dtype);
        Check.notNull("empty", "shape", shape);
        long n = Tensor.numel(shape);
        Storage s = allocateStorage(dtype, n);
        liveBytes.addAndGet(n * dtype.bytes());
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
        Check.tensor("copyFromHost", this, "dst", dst);
        Check.dtype("copyFromHost", "dst", dst, DType.FP32);
        Check.notNull("copyFromHost", "src", src);
        Check.check(src.length == dst.numel(), "copyFromHost", "src has " + src.length + " elements, dst " + dst);
        uploadImpl(dst, src);
    }

    @Override
    public final void copyFromHost(Tensor dst, int[] src) {
        Check.tensor("copyFromHost", this, "dst", dst);
        Check.dtype("copyFromHost", "dst", dst, DType.INT32);
        Check.notNull("copyFromHost", "src", src);
        Check.check(src.length == dst.numel(), "copyFromHost", "src has " + src.length + " elements, dst " + dst);
        uploadImpl(dst, src);
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
                "dst " + dst + " and src " + src + " differ in dtype (use cast)");
        Check.sameNumel(Ops.COPY, "dst", dst, "src", src);
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
        requireOp(Ops.CAST);
        castImpl(dst, src);
    }

    // ---- lifecycle ------------------------------------------------------------------------------------------------

    final void requireOp(String op) {
        if (!implementsOp(op))
            throw new UnsupportedOperationException(op + " is not implemented on " + name() + " yet");
    }

    final void checkOpen() {
        if (closed) throw new IllegalStateException("backend " + name() + " is closed");
    }

    @Override
    public void close() { closed = true; }
}
