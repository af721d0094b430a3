package org.grpo4j.bindings;

import org.bytedeco.javacpp.Loader;
import org.bytedeco.javacpp.annotation.Cast;
import org.bytedeco.javacpp.annotation.Platform;

/**
 * JNI layer over {@code native/grpo4j_native.h} (which includes the kernels in {@code cuda/}).
 *
 * <p>Built by the javacpp Maven plugin with nvcc into {@code org/grpo4j/bindings/linux-x86_64/libjniCudaNative.so}.
 * Every function returns a {@code cudaError_t} as an int; device addresses and streams are plain longs. Callers
 * (the {@code backend.cuda} package) validate every argument first: nothing here checks bounds.
 *
 * <p>There is deliberately no {@code static { Loader.load(); }}: {@link #load()} is called once by
 * {@code CudaRuntime}, which turns a missing library or driver into a reason instead of a class-init error.
 */
@Platform(value = "linux-x86_64", include = "grpo4j_native.h")
public final class CudaNative {
    private CudaNative() {}

    /** Loads the JNI library (and, through its NEEDED entries, libcudart.so.13). Throws on failure. */
    public static String load() {
        return Loader.load(CudaNative.class);
    }

    // versions and devices
    public static native int g4_runtime_version(int[] v);
    public static native int g4_driver_version(int[] v);
    public static native int g4_device_count(int[] n);
    public static native String g4_error_string(int e);
    public static native String g4_error_name(int e);
    public static native int g4_set_device(int dev);
    public static native int g4_device_props(int dev, @Cast("char*") byte[] name, int nameLen,
                                             @Cast("long long*") long[] totalMem, int[] sms, int[] major, int[] minor);
    public static native int g4_mem_get_info(@Cast("long long*") long[] free, @Cast("long long*") long[] total);
    public static native int g4_dlopen_probe(String lib, @Cast("char*") byte[] err, int errLen);

    // memory
    public static native int g4_malloc(long bytes, @Cast("long long*") long[] out);
    public static native int g4_free(long ptr);
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

    // streams and events
    public static native int g4_stream_create(@Cast("long long*") long[] out);
    public static native int g4_stream_destroy(long stream);
    public static native int g4_stream_synchronize(long stream);
    public static native int g4_stream_wait_event(long stream, long event);
    public static native int g4_event_create(@Cast("long long*") long[] out);
    public static native int g4_event_destroy(long event);
    public static native int g4_event_record(long event, long stream);
    public static native int g4_event_synchronize(long event);
    public static native int g4_event_elapsed_ms(float[] ms, long start, long end);

    // kernels: cuda/fill.cuh
    public static native int g4_fill_f32(long x, long n, float value, long stream);
    public static native int g4_fill_bf16(long x, long n, float value, long stream);
    public static native int g4_fill_i32(long x, long n, int value, long stream);
    public static native int g4_scale_f32(long x, long n, float alpha, long stream);
    public static native int g4_scale_bf16(long x, long n, float alpha, long stream);
    // kernels: cuda/cast.cuh
    public static native int g4_cast_f32_bf16(long dst, long src, long n, long stream);
    public static native int g4_cast_bf16_f32(long dst, long src, long n, long stream);
}
