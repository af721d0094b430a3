package org.grpo4j.bindings;

import org.bytedeco.javacpp.Loader;
import org.bytedeco.javacpp.annotation.Cast;
import org.bytedeco.javacpp.annotation.Platform;

/**
 * JNI layer over the C ABI in {@code native/grpo4j_native.h}: the CUDA runtime calls ({@code native/runtime.cu}), the
 * kernel launchers ({@code cuda/*.cu}) and the host twins of the device math ({@code native/hostmath.cu}).
 *
 * <p>Built by Maven: {@code native/Makefile} compiles the CUDA sources into {@code libgrpo4j_kernels.a}, then the
 * javacpp plugin links this class's JNI glue against it into
 * {@code org/grpo4j/bindings/linux-x86_64/libjniCudaNative.so}. Every launcher returns a {@code cudaError_t} as an int;
 * device addresses and streams are plain longs; dtype codes are {@link #F32} and {@link #BF16}. Callers (the
 * {@code backend} package) validate every argument first: nothing here checks bounds, sizes or alignment.
 *
 * <p>There is deliberately no {@code static { Loader.load(); }}: {@link #load()} is called once by
 * {@code CudaRuntime}, which turns a missing library or driver into a reason instead of a class-init error.
 */
@Platform(value = "linux-x86_64", include = "grpo4j_native.h")
public final class CudaNative {
    private CudaNative() {}

    public static final int F32 = 0;
    public static final int BF16 = 1;

    /** Loads the JNI library (and, through its NEEDED entries, libcudart.so.13). Throws on failure. */
    public static String load() {
        return Loader.load(CudaNative.class);
    }

    // ---- runtime: versions and devices
    public static native int g4_runtime_version(int[] v);
    public static native int g4_driver_version(int[] v);
    public static native int g4_device_count(int[] n);
    public static native String g4_error_string(int e);
    public static native String g4_error_name(int e);
    public static native int g4_set_device(int dev);
    /** Ends the process with {@code status} at once: stdio flushed, no atexit handlers (the CUDA runtime's teardown). */
    public static native void g4_exit_now(int status);
    public static native int g4_device_props(int dev, @Cast("char*") byte[] name, int nameLen,
                                             @Cast("long long*") long[] totalMem, int[] sms, int[] major, int[] minor);
    public static native int g4_mem_get_info(@Cast("long long*") long[] free, @Cast("long long*") long[] total);
    public static native int g4_dlopen_probe(String lib, @Cast("char*") byte[] err, int errLen);
    public static native int g4_get_last_error();

    // ---- runtime: memory
    public static native int g4_malloc(long bytes, @Cast("long long*") long[] out);
    public static native int g4_free(long ptr);
    public static native int g4_pool_init(int dev, int[] supported);
    public static native int g4_malloc_async(long bytes, @Cast("long long*") long[] out, long stream);
    public static native int g4_free_async(long ptr, long stream);
    public static native int g4_pool_trim(int dev, long stream);
    public static native int g4_pool_usage(int dev, @Cast("long long*") long[] reserved, @Cast("long long*") long[] used);
    public static native int g4_memcpy_htod(long dst, @Cast("const void*") float[] src, long bytes, long stream);
    public static native int g4_memcpy_htod(long dst, @Cast("const void*") short[] src, long bytes, long stream);
    public static native int g4_memcpy_htod(long dst, @Cast("const void*") int[] src, long bytes, long stream);
    public static native int g4_memcpy_htod(long dst, @Cast("const void*") long[] src, long bytes, long stream);
    public static native int g4_memcpy_dtoh(@Cast("void*") float[] dst, long src, long bytes, long stream);
    public static native int g4_memcpy_dtoh(@Cast("void*") short[] dst, long src, long bytes, long stream);
    public static native int g4_memcpy_dtoh(@Cast("void*") int[] dst, long src, long bytes, long stream);
    public static native int g4_memcpy_dtoh(@Cast("void*") long[] dst, long src, long bytes, long stream);
    public static native int g4_memcpy_dtod(long dst, long src, long bytes, long stream);
    public static native int g4_memset(long ptr, int value, long bytes, long stream);
    public static native int g4_host_alloc(long bytes, @Cast("long long*") long[] out);
    public static native int g4_host_free(long ptr);
    public static native void g4_host_put(long dst, @Cast("const void*") int[] src, long bytes);
    public static native void g4_host_get(@Cast("void*") int[] dst, long src, long bytes);
    public static native void g4_host_get(@Cast("void*") float[] dst, long src, long bytes);
    public static native int g4_memcpy_async(long dst, long src, long bytes, long stream);

    // ---- runtime: streams and events
    public static native int g4_stream_create(@Cast("long long*") long[] out);
    public static native int g4_stream_destroy(long stream);
    public static native int g4_stream_synchronize(long stream);
    public static native int g4_stream_wait_event(long stream, long event);
    public static native int g4_event_create(@Cast("long long*") long[] out);
    public static native int g4_event_create_untimed(@Cast("long long*") long[] out);
    public static native int g4_event_destroy(long event);
    public static native int g4_event_record(long event, long stream);
    public static native int g4_event_synchronize(long event);
    public static native int g4_event_query(long event);
    public static native int g4_event_elapsed_ms(float[] ms, long start, long end);

    // ---- runtime: CUDA graphs
    public static native int g4_graph_begin_capture(long stream);
    public static native int g4_graph_end_capture(long stream, @Cast("long long*") long[] graphExec);
    public static native int g4_graph_launch(long graphExec, long stream);
    public static native int g4_graph_destroy(long graphExec);

    // ---- kernels: cuda/fill.cu, cuda/cast.cu, cuda/elementwise.cu
    public static native int g4_fill(int dtype, long x, long n, float value, long stream);
    public static native int g4_fill_i32(long x, long n, int value, long stream);
    public static native int g4_scale(int dtype, long x, long n, float alpha, long stream);
    public static native int g4_cast(int dstDtype, long dst, int srcDtype, long src, long n, long stream);
    public static native int g4_add(int dtype, long out, long a, long b, long n, long stream);
    public static native int g4_axpy(long y, float alpha, int xDtype, long x, long n, long stream);

    // ---- kernels: cuda/embedding.cu
    public static native int g4_embedding(int dtype, long out, long table, long ids, int n, int d, int v, long flag,
                                          int op, long stream);
    public static native int g4_gather_tokens(long ids, long src, long index, int n, int m, long flag, int op, long stream);
    public static native int g4_embedding_backward_workspace(int n, int v, @Cast("long long*") long[] bytes);
    public static native int g4_embedding_backward(long dTable, int dOutDtype, long dOut, long ids, int n, int d, int v,
                                                   long ws, long wsBytes, long flag, int op, long stream);

    // ---- kernels: cuda/rmsnorm.cu
    public static native int g4_rmsnorm(int dtype, int wDtype, long out, long rstd, long x, long weight, int n, int d,
                                        float eps, long stream);
    public static native int g4_rmsnorm_backward_workspace(int n, int d, @Cast("long long*") long[] bytes);
    public static native int g4_rmsnorm_backward(int dtype, int wDtype, long dx, long dWeight, long dOut, long x,
                                                 long weight, long rstd, int n, int d, long ws, long wsBytes, long stream);

    // ---- kernels: cuda/rope.cu, cuda/swiglu.cu
    public static native int g4_rope(int dtype, long out, long x, long positions, long invFreq, int n, int h, int d,
                                     int inverse, long flag, int op, long stream);
    public static native int g4_swiglu(int dtype, long out, long gate, long up, long n, long stream);
    public static native int g4_swiglu_backward(int dtype, long dGate, long dUp, long dOut, long gate, long up, long n,
                                                long stream);

    // ---- kernels: cuda/adamw.cu, cuda/sumsq.cu, cuda/kvcache.cu
    public static native int g4_adamw(long p, long g, long m, long v, long bf16Out, long n, float decay, float beta1,
                                      float beta2, float oneMinusBeta1, float oneMinusBeta2, float stepSize,
                                      float bc2Sqrt, float eps, float gradScale, long stream);
    public static native int g4_sum_squares_workspace(long n, @Cast("long long*") long[] bytes);
    public static native int g4_sum_squares(long out, int dtype, long x, long n, long ws, long wsBytes, long stream);
    public static native int g4_kv_append(int dtype, long kCache, long vCache, long k, long v, long slots, int n,
                                          int row, int capacity, long flag, int op, long stream);

    // ---- kernels: cuda/attention.cu, cuda/decode.cu (issue 12)
    public static native int g4_attention_workspace(int n, int b, int hq, int d, int backward, int deterministic,
                                                    @Cast("long long*") long[] bytes);
    public static native int g4_attention(int dtype, long out, long lse, long q, long k, long v, long cu, int n, int b,
                                          int hq, int hkv, int d, float scale, int mode, long ws, long wsBytes, long flag,
                                          int op, long stream);
    public static native int g4_attention_backward(int dtype, long dq, long dk, long dv, long dOut, long q, long k,
                                                   long v, long out, long lse, long cu, int n, int b, int hq, int hkv,
                                                   int d, float scale, int deterministic, long ws, long wsBytes,
                                                   long flag, int op, long stream);
    public static native int g4_decode_attention_workspace(int b, int hq, int hkv, int d, int maxBlocks, int blockSize,
                                                           int sms, int numGroups, @Cast("long long*") long[] bytes);
    public static native int g4_decode_attention(int dtype, long out, long q, long kCache, long vCache, long tables,
                                                 long ctx, long groups, int numGroups, int b, int hq, int hkv, int d,
                                                 int numBlocks, int blockSize, int maxBlocks, float scale, int sms,
                                                 long ws, long wsBytes, long flag, int op, long stream);

    // ---- host twins of the device math (native/hostmath.cu)
    public static native void g4_host_bf16_round(float[] x, short[] out, int n);
    public static native void g4_host_adamw(float[] p, float[] g, float[] m, float[] v, short[] bf16Out, int n,
                                            float decay, float beta1, float beta2, float oneMinusBeta1,
                                            float oneMinusBeta2, float stepSize, float bc2Sqrt, float eps, float gradScale);
    public static native void g4_host_rope(float[] x, float[] out, int position, float[] invFreq, int d, int inverse);
    public static native void g4_host_swiglu(float[] gate, float[] up, float[] out, int n);
    public static native void g4_host_swiglu_backward(float[] dOut, float[] gate, float[] up, float[] dGate, float[] dUp,
                                                      int n);
    public static native void g4_host_axpy(float[] y, float alpha, float[] x, int n);

    // ---- host twins: attention (issue 12)
    public static native int g4_host_cu_seqlens_check(int[] cu, int b, int n, int[] report4);
    public static native int g4_host_attention_tiled(float[] q, float[] k, float[] v, int[] cu, int b, int n, int hq,
                                                     int hkv, int d, float scale, int roundP, float[] out, float[] lse,
                                                     int[] report4);
    public static native int g4_host_attention_backward_tiled(float[] q, float[] k, float[] v, float[] out, float[] dOut,
                                                              float[] lse, int[] cu, int b, int n, int hq, int hkv,
                                                              int d, float scale, int round, float[] dq, float[] dk,
                                                              float[] dv, int[] report4);
    public static native void g4_host_decode_plan(int b, int hkv, int maxCtx, int blockSize, int sms, int[] chunkSplits);
    public static native int g4_host_decode_tiled(float[] q, float[] kc, float[] vc, int[] tables, int[] ctx, int b,
                                                  int hq, int hkv, int d, int numBlocks, int bs, int maxBlocks,
                                                  float scale, int sms, int roundP, float[] out, int[] report4);
    public static native void g4_host_online_softmax_row(float[] s, float[] v, int n, int d, float scale, int chunk,
                                                         int parts, float[] out, float[] lse);
    // ---- cuda/sampling.cu, cuda/lmhead.cu and their host twins (issue 13)
    public static native int g4_sample(int dtype, long tokens, long logprobs, long logits, long ctr, int b, int v,
                                       float temperature, int topK, float topP, long seed, long stream);
    public static native int g4_sample_rows(int dtype, long tokens, long logprobs, long logits, long ctr, long rows, int n,
                                            int v, float temperature, int topK, float topP, long seed, long stream);
    public static native int g4_sample_max_vocab(int[] v);
    public static native int g4_lmhead_lse(long z, int rows, int cols, int v0, int vocab, long targets, int row0, long m,
                                           long s, long zt, int first, int last, long lse, long logpD, long logpF,
                                           long flag, int op, long stream);
    public static native int g4_lmhead_dlogits(long z, int rows, int cols, int v0, int vocab, long targets, long lse,
                                               long g, long hi, long lo, long stream);
    public static native int g4_lmhead_lse_rows(long z, int rows, long ld, int vocab, int chunk, long targets, int row0,
                                                long lse, long logpD, long logpF, long flag, int op, long stream);
    public static native int g4_lmhead_dlogits_rows(long z, int rows, long ld, int vocab, int chunk, long targets, long lse,
                                                    long g, int bf16, long stream);
    public static native int g4_grpo_terms(long logpD, long old, long ref, long adv, long w, long targets, int vocab, int n,
                                           float epsLow, float epsHigh, float beta, int kl, long lp, long ratio,
                                           long clipped, long klOut, long g, long term, long stream);
    public static native int g4_grpo_sum(long term, long targets, int vocab, int n, long loss, long stream);
    public static native int g4_f32_to_f64(long dst, long src, long n, long stream);
    public static native void g4_host_philox(int[] ctr, int[] key, int[] out, int n);
    public static native double g4_host_philox_uniform(long seed, int stream, int step);
    public static native void g4_host_exp_f32(float[] x, float[] out, int n);
    public static native int g4_host_sample_row(float[] row, int v, float temperature, int topK, float topP, double u,
                                                int[] token, double[] logprob, int[] kept);
    public static native void g4_host_lmhead_lse(float[] z, int rows, int cols, int chunk, int[] targets, double[] lse,
                                                 double[] logp);
    public static native void g4_host_lmhead_dlogits(float[] z, int rows, int cols, int[] targets, double[] lse,
                                                     double[] g, float[] dz, short[] hi, short[] lo);
    public static native float g4_host_grpo_tokens(double[] logp, float[] old, float[] ref, float[] adv, float[] w,
                                                   int[] targets, int vocab, int n, float epsLow, float epsHigh,
                                                   float beta, int kl, float[] lp, float[] ratio, float[] clipped,
                                                   float[] klOut, double[] g);
    public static native int g4_host_mma_layout_check(int mutation, int[] bad4);
}
