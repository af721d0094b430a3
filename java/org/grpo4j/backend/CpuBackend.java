package org.grpo4j.backend;

import java.util.LinkedHashSet;
import java.util.Set;

/**
 * The reference backend: pure Java, fp32 math, deterministic. Multithreaded over fixed chunks (see {@link Parallel})
 * so results do not depend on the thread count or scheduling.
 */
public final class CpuBackend extends AbstractBackend {
    private final Parallel par;

    public CpuBackend() { this(Runtime.getRuntime().availableProcessors()); }

    public CpuBackend(int threads) { this.par = new Parallel(threads); }

    @Override
    public String name() { return "cpu"; }

    @Override
    public String description() {
        return "cpu (pure Java, fp32, " + par.threads + " thread" + (par.threads == 1 ? "" : "s") + ")";
    }

    @Override
    public Set<String> implementedOps() { return new LinkedHashSet<>(Ops.ALL); }

    @Override
    public void synchronize() {}

    @Override
    public void close() {
        super.close();
        par.shutdown();
    }

    // ---- storage access for the op implementations ----------------------------------------------------------------

    static float[] f(Tensor t) { return ((CpuStorage) t.storage).f; }
    static short[] h(Tensor t) { return ((CpuStorage) t.storage).h; }
    static int[] i(Tensor t) { return ((CpuStorage) t.storage).i; }
    static int off(Tensor t) { return (int) t.offset; }

    @Override
    Storage allocateStorage(DType dtype, long elements) { return new CpuStorage(dtype, elements); }

    @Override
    void uploadImpl(Tensor dst, Object a) {
        int n = (int) dst.numel();
        switch (dst.dtype()) {
            case FP32 -> System.arraycopy((float[]) a, 0, f(dst), off(dst), n);
            case BF16 -> System.arraycopy((short[]) a, 0, h(dst), off(dst), n);
            case INT32 -> System.arraycopy((int[]) a, 0, i(dst), off(dst), n);
            case INT64 -> System.arraycopy((long[]) a, 0, ((CpuStorage) dst.storage).l, off(dst), n);
        }
    }

    @Override
    Object downloadImpl(Tensor t) {
        int n = (int) t.numel(), o = off(t);
        return switch (t.dtype()) {
            case FP32 -> java.util.Arrays.copyOfRange(f(t), o, o + n);
            case BF16 -> java.util.Arrays.copyOfRange(h(t), o, o + n);
            case INT32 -> java.util.Arrays.copyOfRange(i(t), o, o + n);
            case INT64 -> java.util.Arrays.copyOfRange(((CpuStorage) t.storage).l, o, o + n);
        };
    }

    // ---- fill / scale / copy / cast (twins of cuda/fill.cuh and cuda/cast.cuh) -------------------------------------

    @Override
    void fillImpl(Tensor x, double value) {
        int o = off(x), n = (int) x.numel();
        switch (x.dtype()) {
            case FP32 -> java.util.Arrays.fill(f(x), o, o + n, (float) value);
            case BF16 -> java.util.Arrays.fill(h(x), o, o + n, Bf16.fromFloat((float) value));
            case INT32 -> java.util.Arrays.fill(i(x), o, o + n, (int) value);
            default -> throw new IllegalStateException();
        }
    }

    @Override
    void scaleImpl(Tensor x, float alpha) {
        int o = off(x), n = (int) x.numel();
        if (x.dtype() == DType.FP32) {
            float[] a = f(x);
            par.forRange(n, 1 << 16, (s, e) -> { for (int k = s; k < e; k++) a[o + k] = alpha * a[o + k]; });
        } else {
            short[] a = h(x);
            par.forRange(n, 1 << 16, (s, e) -> {
                for (int k = s; k < e; k++) a[o + k] = Bf16.fromFloat(alpha * Bf16.toFloat(a[o + k]));
            });
        }
    }

    @Override
    void copyImpl(Tensor dst, Tensor src) {
        int n = (int) dst.numel();
        switch (dst.dtype()) {
            case FP32 -> System.arraycopy(f(src), off(src), f(dst), off(dst), n);
            case BF16 -> System.arraycopy(h(src), off(src), h(dst), off(dst), n);
            case INT32 -> System.arraycopy(i(src), off(src), i(dst), off(dst), n);
            case INT64 -> System.arraycopy(((CpuStorage) src.storage).l, off(src), ((CpuStorage) dst.storage).l, off(dst), n);
        }
    }

    @Override
    void castImpl(Tensor dst, Tensor src) {
        int n = (int) dst.numel(), od = off(dst), os = off(src);
        if (dst.dtype() == src.dtype()) {
            copyImpl(dst, src);
        } else if (dst.dtype() == DType.BF16) {
            float[] s = f(src);
            short[] d = h(dst);
            par.forRange(n, 1 << 16, (a, b) -> { for (int k = a; k < b; k++) d[od + k] = Bf16.fromFloat(s[os + k]); });
        } else {
            short[] s = h(src);
            float[] d = f(dst);
            par.forRange(n, 1 << 16, (a, b) -> { for (int k = a; k < b; k++) d[od + k] = Bf16.toFloat(s[os + k]); });
        }
    }
}
