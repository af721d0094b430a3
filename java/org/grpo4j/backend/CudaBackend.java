package org.grpo4j.backend;

import java.util.LinkedHashSet;
import java.util.Set;
import org.grpo4j.bindings.CudaNative;

/**
 * Runs ops on one GPU through grpo4j's kernels (cuda/*.cuh, bound by {@link CudaNative}).
 *
 * <p>Memory: every tensor owns a cudaMalloc'd block freed by {@link Tensor#close()}; views share it. Work is ordered
 * on the backend's stream; host copies synchronize that stream. Every CUDA status is checked and becomes a
 * {@link CudaException} naming the call. Ops not yet ported to CUDA throw {@link UnsupportedOperationException}
 * naming the op (see {@link #implementedOps()}).
 */
public final class CudaBackend extends AbstractBackend {
    private static final Set<String> IMPLEMENTED = Ops.CUDA_KERNELS;

    private final int device;
    private final long stream;
    private final CudaRuntime.Device props;

    /** Opens device {@code device}; throws {@link IllegalStateException} with the reason when CUDA is unavailable. */
    public CudaBackend(int device) {
        CudaRuntime.Availability a = CudaRuntime.probe();
        if (!a.available()) throw new IllegalStateException("cuda unavailable: " + a.reason());
        if (device < 0 || device >= a.deviceCount())
            throw new IllegalArgumentException("cuda:" + device + " does not exist (" + a.deviceCount() + " device(s) visible)");
        this.device = device;
        this.props = CudaRuntime.devices().get(device);
        CudaRuntime.check(CudaNative.g4_set_device(device), "cudaSetDevice(" + device + ")");
        long[] s = new long[1];
        CudaRuntime.check(CudaNative.g4_stream_create(s), "cudaStreamCreateWithFlags");
        this.stream = s[0];
    }

    @Override
    public String name() { return "cuda:" + device; }

    @Override
    public String description() {
        return name() + " (" + props.name() + ", " + (props.totalMemory() >> 20) + " MiB, " + props.smCount()
                + " SMs, sm_" + props.major() + props.minor() + ")";
    }

    @Override
    public Set<String> implementedOps() {
        Set<String> s = new LinkedHashSet<>();
        for (String op : Ops.ALL) if (IMPLEMENTED.contains(op)) s.add(op);
        return s;
    }

    public int device() { return device; }

    /** The CUDA stream (cudaStream_t as a long) every op of this backend is ordered on. */
    public long stream() { return stream; }

    private void onDevice() {
        CudaRuntime.check(CudaNative.g4_set_device(device), "cudaSetDevice(" + device + ")");
    }

    @Override
    public void synchronize() {
        CudaRuntime.check(CudaNative.g4_stream_synchronize(stream), "cudaStreamSynchronize");
    }

    @Override
    public void close() {
        if (liveTensors() > 0)
            System.getLogger("org.grpo4j").log(System.Logger.Level.WARNING,
                    name() + " closed with " + liveTensors() + " live tensors (" + liveBytes() + " bytes)");
        super.close();
        CudaNative.g4_stream_synchronize(stream);
        CudaNative.g4_stream_destroy(stream);
    }

    // ---- events ---------------------------------------------------------------------------------------------------

    /** A CUDA event; close it when done. */
    public final class Event implements AutoCloseable {
        final long handle;

        private Event() {
            long[] e = new long[1];
            CudaRuntime.check(CudaNative.g4_event_create(e), "cudaEventCreate");
            handle = e[0];
        }

        /** Records this event on the backend's stream. */
        public Event record() {
            CudaRuntime.check(CudaNative.g4_event_record(handle, stream), "cudaEventRecord");
            return this;
        }

        public void synchronize() { CudaRuntime.check(CudaNative.g4_event_synchronize(handle), "cudaEventSynchronize"); }

        /** Milliseconds between {@code start} (recorded earlier) and this event. */
        public float elapsedSince(Event start) {
            float[] ms = new float[1];
            CudaRuntime.check(CudaNative.g4_event_elapsed_ms(ms, start.handle, handle), "cudaEventElapsedTime");
            return ms[0];
        }

        @Override
        public void close() { CudaNative.g4_event_destroy(handle); }
    }

    public Event newEvent() {
        onDevice();
        return new Event();
    }

    /** Makes this backend's stream wait (on the GPU, without blocking the host) until {@code e} has completed. */
    public void waitFor(Event e) {
        CudaRuntime.check(CudaNative.g4_stream_wait_event(stream, e.handle), "cudaStreamWaitEvent");
    }

    // ---- memory ---------------------------------------------------------------------------------------------------

    static final class CudaStorage extends Storage {
        final long address;

        CudaStorage(DType dtype, long elements, long address) {
            super(dtype, elements);
            this.address = address;
        }

        @Override
        void free() {
            if (address != 0) CudaRuntime.check(CudaNative.g4_free(address), "cudaFree");
        }
    }

    static long addr(Tensor t) {
        return ((CudaStorage) t.storage).address + t.offset * t.dtype().bytes();
    }

    @Override
    Storage allocateStorage(DType dtype, long elements) {
        onDevice();
        long bytes = Math.max(1, elements * dtype.bytes());
        long[] p = new long[1];
        int e = CudaNative.g4_malloc(bytes, p);
        if (e != 0) {
            long[] free = new long[1], total = new long[1];
            CudaNative.g4_mem_get_info(free, total);
            throw new CudaException("cudaMalloc(" + bytes + " bytes; " + (free[0] >> 20) + " MiB free of "
                    + (total[0] >> 20) + " MiB on " + name() + ")", e, CudaNative.g4_error_name(e), CudaNative.g4_error_string(e));
        }
        return new CudaStorage(dtype, elements, p[0]);
    }

    @Override
    void uploadImpl(Tensor dst, Object a) {
        long bytes = dst.bytes();
        int e = switch (dst.dtype()) {
            case FP32 -> CudaNative.g4_memcpy_htod(addr(dst), (float[]) a, bytes, stream);
            case BF16 -> CudaNative.g4_memcpy_htod(addr(dst), (short[]) a, bytes, stream);
            case INT32 -> CudaNative.g4_memcpy_htod(addr(dst), (int[]) a, bytes, stream);
            case INT64 -> CudaNative.g4_memcpy_htod(addr(dst), (long[]) a, bytes, stream);
        };
        CudaRuntime.check(e, "cudaMemcpyAsync(host to device, " + bytes + " bytes)");
    }

    @Override
    Object downloadImpl(Tensor t) {
        int n = Math.toIntExact(t.numel());
        long bytes = t.bytes();
        Object out;
        int e;
        switch (t.dtype()) {
            case FP32 -> { float[] a = new float[n]; e = CudaNative.g4_memcpy_dtoh(a, addr(t), bytes, stream); out = a; }
            case BF16 -> { short[] a = new short[n]; e = CudaNative.g4_memcpy_dtoh(a, addr(t), bytes, stream); out = a; }
            case INT32 -> { int[] a = new int[n]; e = CudaNative.g4_memcpy_dtoh(a, addr(t), bytes, stream); out = a; }
            default -> { long[] a = new long[n]; e = CudaNative.g4_memcpy_dtoh(a, addr(t), bytes, stream); out = a; }
        }
        CudaRuntime.check(e, "cudaMemcpyAsync(device to host, " + bytes + " bytes)");
        return out;
    }

    // ---- ops ------------------------------------------------------------------------------------------------------

    @Override
    void fillImpl(Tensor x, double value) {
        if (x.numel() == 0) return;
        int e = switch (x.dtype()) {
            case FP32 -> CudaNative.g4_fill_f32(addr(x), x.numel(), (float) value, stream);
            case BF16 -> CudaNative.g4_fill_bf16(addr(x), x.numel(), (float) value, stream);
            case INT32 -> CudaNative.g4_fill_i32(addr(x), x.numel(), (int) value, stream);
            default -> throw new IllegalStateException();
        };
        CudaRuntime.check(e, "fill kernel");
    }

    @Override
    void scaleImpl(Tensor x, float alpha) {
        if (x.numel() == 0) return;
        int e = x.dtype() == DType.FP32 ? CudaNative.g4_scale_f32(addr(x), x.numel(), alpha, stream)
                : CudaNative.g4_scale_bf16(addr(x), x.numel(), alpha, stream);
        CudaRuntime.check(e, "scale kernel");
    }

    @Override
    void copyImpl(Tensor dst, Tensor src) {
        if (dst.numel() == 0) return;
        CudaRuntime.check(CudaNative.g4_memcpy_dtod(addr(dst), addr(src), dst.bytes(), stream), "cudaMemcpyAsync(device to device)");
    }

    @Override
    void castImpl(Tensor dst, Tensor src) {
        if (dst.numel() == 0) return;
        if (dst.dtype() == src.dtype()) {
            copyImpl(dst, src);
            return;
        }
        int e = dst.dtype() == DType.BF16 ? CudaNative.g4_cast_f32_bf16(addr(dst), addr(src), dst.numel(), stream)
                : CudaNative.g4_cast_bf16_f32(addr(dst), addr(src), dst.numel(), stream);
        CudaRuntime.check(e, "cast kernel");
    }

    // ---- ops not yet ported to CUDA: requireOp() stops every call before it gets here -------------------------------

    private static UnsupportedOperationException notPorted(String op) {
        return new UnsupportedOperationException(op + " is not implemented on cuda yet");
    }

    @Override
    void addImpl(Tensor out, Tensor a, Tensor b) { throw notPorted("add"); }

    @Override
    void axpyImpl(Tensor y, float alpha, Tensor x) { throw notPorted("axpy"); }

    @Override
    void embeddingImpl(Tensor out, Tensor table, Tensor ids) { throw notPorted("embedding"); }

    @Override
    void embeddingBackwardImpl(Tensor dTable, Tensor dOut, Tensor ids) { throw notPorted("embeddingBackward"); }

    @Override
    void rmsNormImpl(Tensor out, Tensor rstd, Tensor x, Tensor weight, float eps) { throw notPorted("rmsNorm"); }

    @Override
    void rmsNormBackwardImpl(Tensor dx, Tensor dWeight, Tensor dOut, Tensor x, Tensor weight, Tensor rstd) { throw notPorted("rmsNormBackward"); }

    @Override
    void matmulImpl(Tensor c, Tensor a, boolean transA, Tensor b, boolean transB, float alpha, float beta, int batch, int m, int n, int k) { throw notPorted("matmul"); }

    @Override
    void ropeImpl(Tensor out, Tensor x, Tensor positions, Rope rope, boolean inverse) { throw notPorted("rope"); }

    @Override
    void attentionImpl(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor cuSeqlens, float scale) { throw notPorted("attention"); }

    @Override
    void attentionBackwardImpl(Tensor dq, Tensor dk, Tensor dv, Tensor dOut, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor cuSeqlens, float scale) { throw notPorted("attentionBackward"); }

    @Override
    void kvAppendImpl(Tensor kCache, Tensor vCache, Tensor k, Tensor v, Tensor slots) { throw notPorted("kvAppend"); }

    @Override
    void decodeAttentionImpl(Tensor out, Tensor q, Tensor kCache, Tensor vCache, Tensor blockTables, Tensor contextLens, float scale) { throw notPorted("decodeAttention"); }

    @Override
    void swigluImpl(Tensor out, Tensor gate, Tensor up) { throw notPorted("swiglu"); }

    @Override
    void swigluBackwardImpl(Tensor dGate, Tensor dUp, Tensor dOut, Tensor gate, Tensor up) { throw notPorted("swigluBackward"); }

    @Override
    void tokenLogprobsImpl(Tensor out, Tensor hidden, Tensor lmHead, Tensor targets, float temperature) { throw notPorted("tokenLogprobs"); }

    @Override
    void tokenLogprobsBackwardImpl(Tensor dHidden, Tensor dLmHead, Tensor dLogprobs, Tensor hidden, Tensor lmHead, Tensor targets, float temperature) { throw notPorted("tokenLogprobsBackward"); }

    @Override
    void grpoLossImpl(GrpoLossOutputs out, Tensor hidden, Tensor lmHead, Tensor targets, Tensor weights, Tensor advantages, Tensor oldLogprobs, Tensor refLogprobs, GrpoLossParams p) { throw notPorted("grpoLoss"); }

    @Override
    void sampleImpl(Tensor tokens, Tensor logprobs, Tensor logits, Tensor rngCounters, SamplingSpec spec) { throw notPorted("sample"); }

    @Override
    void adamWImpl(Tensor param, Tensor grad, Tensor m, Tensor v, AdamWStep step, Tensor bf16Out) { throw notPorted("adamW"); }

    @Override
    void sumSquaresImpl(Tensor out, Tensor x) { throw notPorted("sumSquares"); }
}
