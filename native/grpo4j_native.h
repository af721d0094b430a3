// The C ABI that bindings/org/grpo4j/bindings/CudaNative.java sees.
// Every function returns a cudaError_t as int (0 = success); outputs go through pointers.
// Device addresses and streams travel as 64-bit integers. Java validates every argument before calling down.
#pragma once
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <string.h>
#include <stdio.h>

#include "common.cuh"
#include "fill.cuh"
#include "cast.cuh"

// ---- versions, devices ------------------------------------------------------------------------------------------

static inline int g4_runtime_version(int* v) { return (int) cudaRuntimeGetVersion(v); }
static inline int g4_driver_version(int* v) { return (int) cudaDriverGetVersion(v); }
static inline int g4_device_count(int* n) { *n = 0; return (int) cudaGetDeviceCount(n); }
static inline const char* g4_error_string(int e) { return cudaGetErrorString((cudaError_t) e); }
static inline const char* g4_error_name(int e) { return cudaGetErrorName((cudaError_t) e); }
static inline int g4_set_device(int dev) { return (int) cudaSetDevice(dev); }

// name: caller's buffer of name_len bytes; totals in bytes.
static inline int g4_device_props(int dev, char* name, int name_len, long long* total_mem, int* sms, int* major, int* minor) {
    cudaDeviceProp p;
    cudaError_t e = cudaGetDeviceProperties(&p, dev);
    if (e != cudaSuccess) return (int) e;
    strncpy(name, p.name, name_len - 1);
    name[name_len - 1] = 0;
    *total_mem = (long long) p.totalGlobalMem;
    *sms = p.multiProcessorCount;
    *major = p.major;
    *minor = p.minor;
    return 0;
}

static inline int g4_mem_get_info(long long* free_bytes, long long* total_bytes) {
    size_t f = 0, t = 0;
    cudaError_t e = cudaMemGetInfo(&f, &t);
    *free_bytes = (long long) f;
    *total_bytes = (long long) t;
    return (int) e;
}

// dlopen probe: 0 when the shared library loads; otherwise 1 and dlerror() text in err.
static inline int g4_dlopen_probe(const char* lib, char* err, int err_len) {
    void* h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (h) { dlclose(h); err[0] = 0; return 0; }
    const char* m = dlerror();
    snprintf(err, err_len, "%s", m ? m : "unknown dlopen error");
    return 1;
}

// ---- memory -----------------------------------------------------------------------------------------------------

static inline int g4_malloc(long long bytes, long long* out) {
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, (size_t) bytes);
    *out = (long long) p;
    return (int) e;
}

static inline int g4_free(long long ptr) { return (int) cudaFree((void*) ptr); }

// Host copies are synchronous on the given stream: the JNI array is released right after the call returns.
static inline int g4_memcpy_htod(long long dst, const void* src, long long bytes, long long stream) {
    cudaError_t e = cudaMemcpyAsync((void*) dst, src, (size_t) bytes, cudaMemcpyHostToDevice, g4::as_stream(stream));
    if (e != cudaSuccess) return (int) e;
    return (int) cudaStreamSynchronize(g4::as_stream(stream));
}

static inline int g4_memcpy_dtoh(void* dst, long long src, long long bytes, long long stream) {
    cudaError_t e = cudaMemcpyAsync(dst, (const void*) src, (size_t) bytes, cudaMemcpyDeviceToHost, g4::as_stream(stream));
    if (e != cudaSuccess) return (int) e;
    return (int) cudaStreamSynchronize(g4::as_stream(stream));
}

static inline int g4_memcpy_dtod(long long dst, long long src, long long bytes, long long stream) {
    return (int) cudaMemcpyAsync((void*) dst, (const void*) src, (size_t) bytes, cudaMemcpyDeviceToDevice, g4::as_stream(stream));
}

static inline int g4_memset(long long ptr, int value, long long bytes, long long stream) {
    return (int) cudaMemsetAsync((void*) ptr, value, (size_t) bytes, g4::as_stream(stream));
}

// ---- streams and events -----------------------------------------------------------------------------------------

static inline int g4_stream_create(long long* out) {
    cudaStream_t s = nullptr;
    cudaError_t e = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    *out = (long long) s;
    return (int) e;
}
static inline int g4_stream_destroy(long long s) { return (int) cudaStreamDestroy(g4::as_stream(s)); }
static inline int g4_stream_synchronize(long long s) { return (int) cudaStreamSynchronize(g4::as_stream(s)); }
static inline int g4_stream_wait_event(long long s, long long ev) {
    return (int) cudaStreamWaitEvent(g4::as_stream(s), (cudaEvent_t) ev, 0);
}

static inline int g4_event_create(long long* out) {
    cudaEvent_t ev = nullptr;
    cudaError_t e = cudaEventCreate(&ev);
    *out = (long long) ev;
    return (int) e;
}
static inline int g4_event_destroy(long long ev) { return (int) cudaEventDestroy((cudaEvent_t) ev); }
static inline int g4_event_record(long long ev, long long s) { return (int) cudaEventRecord((cudaEvent_t) ev, g4::as_stream(s)); }
static inline int g4_event_synchronize(long long ev) { return (int) cudaEventSynchronize((cudaEvent_t) ev); }
static inline int g4_event_elapsed_ms(float* ms, long long start, long long end) {
    return (int) cudaEventElapsedTime(ms, (cudaEvent_t) start, (cudaEvent_t) end);
}
