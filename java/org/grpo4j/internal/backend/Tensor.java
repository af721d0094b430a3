package org.grpo4j.internal.backend;

import java.util.Arrays;

/**
 * A handle to a contiguous, row-major block of device memory: backend, dtype, shape.
 *
 * <p>Host data never leaks out of a tensor except through explicit copies ({@link #toFloats()}, {@link #toInts()},
 * {@link Backend#copyFromHost}). A tensor either owns its memory ({@link Backend#empty}) or is a view of another
 * tensor's memory ({@link #view}, {@link #reshape}): closing the owner frees the memory, closing a view does nothing,
 * and using any tensor whose memory was freed throws {@link IllegalStateException}.
 */
public final class Tensor implements AutoCloseable {
    private final AbstractBackend backend;
    private final DType dtype;
    private final int[] shape;
    private final long numel;
    final Storage storage;
    final long offset; // in elements, into storage
    private final boolean owner;

    Tensor(AbstractBackend backend, Storage storage, long offset, int[] shape, boolean owner) {
        this.backend = backend;
        this.storage = storage;
        this.dtype = storage.dtype;
        this.offset = offset;
        this.shape = shape.clone();
        this.numel = numel(shape);
        this.owner = owner;
        if (offset < 0 || offset > storage.capacity - numel)  // (numel <= capacity - offset: no sum to overflow)
            throw new IllegalArgumentException("view [" + offset + ", " + (offset + numel) + ") outside storage of "
                    + storage.capacity + " elements");
    }

    static long numel(int[] shape) {
        long n = 1;
        for (int d : shape) {
            if (d < 0) throw new IllegalArgumentException("negative dimension in shape " + Arrays.toString(shape));
            n = Math.multiplyExact(n, d);
        }
        return n;
    }

    public Backend backend() { return backend; }
    public DType dtype() { return dtype; }
    public int[] shape() { return shape.clone(); }
    public int rank() { return shape.length; }
    public long numel() { return numel; }
    public long bytes() { return numel * dtype.bytes(); }
    public boolean isView() { return !owner; }

    /** Size of dimension {@code i}; negative {@code i} counts from the end. */
    public int dim(int i) {
        int j = i < 0 ? shape.length + i : i;
        if (j < 0 || j >= shape.length)
            throw new IllegalArgumentException("dimension " + i + " out of range for shape " + shapeString());
        return shape[j];
    }

    public String shapeString() { return Arrays.toString(shape); }

    @Override
    public String toString() { return dtype.label() + shapeString() + "@" + backend.name(); }

    /** Whether this tensor and {@code o} share any element of memory. */
    public boolean overlaps(Tensor o) { // (an empty view inside another tensor shares none of its elements)
        return numel > 0 && o.numel > 0 && storage == o.storage && offset < o.offset + o.numel && o.offset < offset + numel;
    }

    /** A view of {@code numel(shape)} elements starting {@code elementOffset} elements into this tensor. */
    public Tensor view(long elementOffset, int... newShape) {
        checkLive();
        long n = numel(newShape);
        if (elementOffset < 0 || n > numel || elementOffset > numel - n)  // (no sum to overflow: Long.MAX_VALUE offsets wrapped)
            throw new IllegalArgumentException("view of " + n + " elements at offset " + elementOffset
                    + " does not fit in " + this);
        return new Tensor(backend, storage, offset + elementOffset, newShape, false);
    }

    /** The same elements under another shape with the same element count. */
    public Tensor reshape(int... newShape) {
        if (numel(newShape) != numel)
            throw new IllegalArgumentException("cannot reshape " + this + " to " + Arrays.toString(newShape));
        return view(0, newShape);
    }

    /** Row {@code i} (or rows {@code i..i+count}) along the first dimension, as a view. */
    public Tensor rows(int first, int count) {
        if (shape.length == 0) throw new IllegalArgumentException("rows() of a scalar " + this);
        if (first < 0 || count < 0 || first + count > shape[0])
            throw new IllegalArgumentException("rows [" + first + ", " + (first + count) + ") out of range for " + this);
        long rowSize = numel / Math.max(1, shape[0]);
        int[] s = shape.clone();
        s[0] = count;
        return view(first * rowSize, s);
    }

    public float[] toFloats() { return backend.downloadFloats(this); }
    public int[] toInts() { return backend.downloadInts(this); }
    public short[] toBf16Bits() { return backend.downloadBf16(this); }

    /** The values as floats whatever the float dtype: fp32 as stored, bf16 widened exactly ({@link #toFloats()} is fp32 only). */
    public float[] toFloatsWidened() {
        if (dtype == DType.FP32) return toFloats();
        short[] b = toBf16Bits();
        float[] f = new float[b.length];
        for (int i = 0; i < b.length; i++) f[i] = Bf16.toFloat(b[i]);
        return f;
    }

    /** Reads a single fp32 element (synchronizes; meant for scalars such as a loss). */
    public float item() {
        if (numel != 1) throw new IllegalArgumentException("item() needs a one-element tensor, got " + this);
        return toFloats()[0];
    }

    void checkLive() {
        if (storage.released()) throw new IllegalStateException("tensor " + this + " used after its memory was freed");
    }

    boolean isLive() { return !storage.released(); }

    /** Frees the memory if this tensor owns it; a no-op for views and for tensors already closed. */
    @Override
    public void close() {
        if (owner && !storage.released()) backend.release(this);
    }
}
