package org.grpo4j.internal.bench;

import java.util.Random;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.Bf16;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.Tensor;

/**
 * Makes the input tensors of benchmark problems on one backend.
 *
 * <p>Exact mode (correctness checks at small sizes): every value comes from a seeded host generator and is uploaded,
 * bf16 rounded on the host ({@link Bf16}), so two backends built from the same seed get bit-identical inputs.
 * Timing mode (full sizes, up to gigabytes): a 4 Mi-element Gaussian chunk is uploaded once and tiled over each tensor
 * by device copies, starting at a different offset per tensor; the kernels' speed does not depend on which values they
 * read, only on their distribution where it matters (sampling, which gets Gaussian logits like the peers').
 */
final class Data implements AutoCloseable {
    static final int CHUNK = 1 << 22;

    private final Backend be;
    private final boolean exact;
    private final Random rnd;
    private Tensor chunk32, chunk16;
    private int tile;
    private final java.util.List<Instance> instances = new java.util.ArrayList<>();

    Data(Backend be, boolean exact, long seed) {
        this.be = be;
        this.exact = exact;
        this.rnd = new Random(seed);
    }

    Backend backend() { return be; }

    /** Called by every Instance built on this Data, so that a build that throws half-way leaks nothing. */
    void register(Instance in) { instances.add(in); }

    /** Closes every instance built so far (closing twice is harmless). */
    void closeInstances() {
        for (Instance in : instances) in.close();
        instances.clear();
    }

    /** Gaussian values with standard deviation {@code scale}. */
    Tensor gauss(DType dt, double scale, int... shape) {
        if (exact) {
            float[] h = new float[Math.toIntExact(numel(shape))];
            for (int i = 0; i < h.length; i++) h[i] = (float) (rnd.nextGaussian() * scale);
            return upload(dt, h, shape);
        }
        Tensor t = be.empty(dt, shape);
        try {
            tileInto(t);
            if (scale != 1) be.scale(t, (float) scale);
        } catch (RuntimeException e) {
            t.close();
            throw e;
        }
        return t;
    }

    /** Non-negative values of about {@code scale} (second moments): |Gaussian| * scale, or the constant in timing mode. */
    Tensor positive(DType dt, double scale, int... shape) {
        if (exact) {
            float[] h = new float[Math.toIntExact(numel(shape))];
            for (int i = 0; i < h.length; i++) h[i] = (float) (Math.abs(rnd.nextGaussian()) * scale);
            return upload(dt, h, shape);
        }
        Tensor t = be.empty(dt, shape);
        be.fill(t, scale);
        return t;
    }

    Tensor zeros(DType dt, int... shape) { return be.zeros(dt, shape); }

    /** Contents unspecified: an output that the op overwrites. */
    Tensor empty(DType dt, int... shape) { return be.empty(dt, shape); }

    Tensor ints(int[] values, int... shape) { return be.upload(values, shape); }

    static long numel(int... shape) {
        long n = 1;
        for (int d : shape) n = Math.multiplyExact(n, d);
        return n;
    }

    private Tensor upload(DType dt, float[] h, int[] shape) {
        if (dt == DType.FP32) return be.upload(h, shape);
        if (dt != DType.BF16) throw new IllegalArgumentException("bench inputs are fp32 or bf16, not " + dt.label());
        short[] b = new short[h.length];
        for (int i = 0; i < h.length; i++) b[i] = Bf16.fromFloat(h[i]);
        return be.uploadBf16(b, shape);
    }

    private Tensor chunk(DType dt) {
        if (chunk32 == null) {
            float[] h = new float[CHUNK];
            for (int i = 0; i < CHUNK; i++) h[i] = (float) rnd.nextGaussian();
            chunk32 = be.upload(h, CHUNK);
            short[] b = new short[CHUNK];
            for (int i = 0; i < CHUNK; i++) b[i] = Bf16.fromFloat(h[i]);
            chunk16 = be.uploadBf16(b, CHUNK);
        }
        return dt == DType.BF16 ? chunk16 : chunk32;
    }

    private void tileInto(Tensor t) {
        Tensor c = chunk(t.dtype());
        long n = t.numel(), off = 0;
        int start = (int) ((tile++ * 104_729L) % (CHUNK / 2));
        while (off < n) {
            int len = (int) Math.min(n - off, CHUNK - start);
            be.copy(t.view(off, len), c.view(start, len));
            off += len;
            start = 0;
        }
    }

    @Override
    public void close() {
        closeInstances();
        if (chunk32 != null) chunk32.close();
        if (chunk16 != null) chunk16.close();
        chunk32 = chunk16 = null;
    }
}
