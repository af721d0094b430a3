// The CUDA runtime calls behind the C ABI: versions, devices, memory, streams, events.
// Every failed call also clears the runtime's last-error slot (through done()), so that a failure is reported once,
// by the call that caused it, and never resurfaces at the next kernel launch's cudaGetLastError() — the H200 bug where
// a failed cudaMalloc made the next fill "fail" with out of memory.
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "grpo4j_native.h"

static int done(cudaError_t e) {
    if (e != cudaSuccess) (void) cudaGetLastError();
    return (int) e;
}

static cudaStream_t as_stream(g4_stream s) { return reinterpret_cast<cudaStream_t>(s); }

extern "C" {

int g4_runtime_version(int* v) { return done(cudaRuntimeGetVersion(v)); }
int g4_driver_version(int* v) { return done(cudaDriverGetVersion(v)); }
int g4_device_count(int* n) {
    *n = 0;
    return done(cudaGetDeviceCount(n));
}
const char* g4_error_string(int e) { return cudaGetErrorString((cudaError_t) e); }
const char* g4_error_name(int e) { return cudaGetErrorName((cudaError_t) e); }
int g4_set_device(int dev) { return done(cudaSetDevice(dev)); }
int g4_get_last_error(void) { return (int) cudaGetLastError(); }

int g4_device_props(int dev, char* name, int name_len, long long* total_mem, int* sms, int* major, int* minor) {
    cudaDeviceProp p;
    cudaError_t e = cudaGetDeviceProperties(&p, dev);
    if (e != cudaSuccess) return done(e);
    strncpy(name, p.name, name_len - 1);
    name[name_len - 1] = 0;
    *total_mem = (long long) p.totalGlobalMem;
    *sms = p.multiProcessorCount;
    *major = p.major;
    *minor = p.minor;
    return 0;
}

int g4_mem_get_info(long long* free_bytes, long long* total_bytes) {
    size_t f = 0, t = 0;
    cudaError_t e = cudaMemGetInfo(&f, &t);
    *free_bytes = (long long) f;
    *total_bytes = (long long) t;
    return done(e);
}

void g4_exit_now(int status) {
    fflush(stdout);
    fflush(stderr);
    _exit(status);
}

// 0 when the shared library loads; otherwise 1 and dlerror()'s text in err.
int g4_dlopen_probe(const char* lib, char* err, int err_len) {
    void* h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (h) {
        dlclose(h);
        err[0] = 0;
        return 0;
    }
    const char* m = dlerror();
    snprintf(err, err_len, "%s", m ? m : "unknown dlopen error");
    return 1;
}

int g4_malloc(long long bytes, g4_ptr* out) {
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, (size_t) bytes);
    *out = (g4_ptr) p;
    return done(e);
}

int g4_free(g4_ptr ptr) { return done(cudaFree((void*) ptr)); }

// The stream-ordered allocator (cudaMallocAsync): allocation and free are ordered on a stream, served from the
// device's default memory pool, and never synchronize the device (cudaFree does: every temporary freed in a training
// step would otherwise wait for all work, NCCL's included). The pool keeps freed memory (release threshold: all) so
// that steady-state allocations are reuses; g4_pool_trim hands idle memory back, e.g. before retrying a failed
// allocation. *supported = 0 when the device has no memory pools (then the callers use cudaMalloc/cudaFree).
int g4_pool_init(int dev, int* supported) {
    *supported = 0;
    int v = 0;
    cudaError_t e = cudaDeviceGetAttribute(&v, cudaDevAttrMemoryPoolsSupported, dev);
    if (e != cudaSuccess) return done(e);
    if (!v) return 0;
    cudaMemPool_t pool;
    e = cudaDeviceGetDefaultMemPool(&pool, dev);
    if (e != cudaSuccess) return done(e);
    unsigned long long all = ~0ULL;
    e = cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &all);
    if (e != cudaSuccess) return done(e);
    *supported = 1;
    return 0;
}

int g4_malloc_async(long long bytes, g4_ptr* out, g4_stream s) {
    void* p = nullptr;
    cudaError_t e = cudaMallocAsync(&p, (size_t) bytes, as_stream(s));
    *out = (g4_ptr) p;
    return done(e);
}

int g4_free_async(g4_ptr ptr, g4_stream s) { return done(cudaFreeAsync((void*) ptr, as_stream(s))); }

// Waits for the stream (its pending frees return to the pool), then releases the pool's idle memory to the device.
int g4_pool_trim(int dev, g4_stream s) {
    cudaError_t e = cudaStreamSynchronize(as_stream(s));
    if (e != cudaSuccess) return done(e);
    cudaMemPool_t pool;
    e = cudaDeviceGetDefaultMemPool(&pool, dev);
    if (e != cudaSuccess) return done(e);
    return done(cudaMemPoolTrimTo(pool, 0));
}

// Bytes the default pool holds from the device, and of those the bytes in use.
int g4_pool_usage(int dev, long long* reserved, long long* used) {
    *reserved = 0;
    *used = 0;
    cudaMemPool_t pool;
    cudaError_t e = cudaDeviceGetDefaultMemPool(&pool, dev);
    if (e != cudaSuccess) return done(e);
    unsigned long long r = 0, u = 0;
    e = cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &r);
    if (e != cudaSuccess) return done(e);
    e = cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &u);
    *reserved = (long long) r;
    *used = (long long) u;
    return done(e);
}

// Host copies are synchronous on the given stream: the JNI array is released right after the call returns.
int g4_memcpy_htod(g4_ptr dst, const void* src, long long bytes, g4_stream s) {
    cudaError_t e = cudaMemcpyAsync((void*) dst, src, (size_t) bytes, cudaMemcpyHostToDevice, as_stream(s));
    if (e != cudaSuccess) return done(e);
    return done(cudaStreamSynchronize(as_stream(s)));
}

int g4_memcpy_dtoh(void* dst, g4_ptr src, long long bytes, g4_stream s) {
    cudaError_t e = cudaMemcpyAsync(dst, (const void*) src, (size_t) bytes, cudaMemcpyDeviceToHost, as_stream(s));
    if (e != cudaSuccess) return done(e);
    return done(cudaStreamSynchronize(as_stream(s)));
}

int g4_memcpy_dtod(g4_ptr dst, g4_ptr src, long long bytes, g4_stream s) {
    return done(cudaMemcpyAsync((void*) dst, (const void*) src, (size_t) bytes, cudaMemcpyDeviceToDevice, as_stream(s)));
}

int g4_host_alloc(long long bytes, long long* out) {
    void* p = nullptr;
    cudaError_t e = cudaHostAlloc(&p, (size_t) bytes, cudaHostAllocPortable);  // pinned for every device's context
    *out = e == cudaSuccess ? (long long) p : 0;
    return done(e);
}

int g4_host_free(long long ptr) { return done(cudaFreeHost((void*) ptr)); }

void g4_host_put(long long dst, const void* src, long long bytes) { memcpy((void*) dst, src, (size_t) bytes); }

void g4_host_get(void* dst, long long src, long long bytes) { memcpy(dst, (const void*) src, (size_t) bytes); }

int g4_memcpy_async(long long dst, long long src, long long bytes, g4_stream s) {
    return done(cudaMemcpyAsync((void*) dst, (const void*) src, (size_t) bytes, cudaMemcpyDefault, as_stream(s)));
}

int g4_memset(g4_ptr ptr, int value, long long bytes, g4_stream s) {
    return done(cudaMemsetAsync((void*) ptr, value, (size_t) bytes, as_stream(s)));
}

int g4_stream_create(g4_stream* out) {
    cudaStream_t s = nullptr;
    cudaError_t e = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    *out = (g4_stream) s;
    return done(e);
}
int g4_stream_destroy(g4_stream s) { return done(cudaStreamDestroy(as_stream(s))); }
int g4_stream_synchronize(g4_stream s) { return done(cudaStreamSynchronize(as_stream(s))); }
int g4_stream_wait_event(g4_stream s, long long ev) { return done(cudaStreamWaitEvent(as_stream(s), (cudaEvent_t) ev, 0)); }

int g4_event_create(long long* out) {
    cudaEvent_t ev = nullptr;
    cudaError_t e = cudaEventCreate(&ev);
    *out = (long long) ev;
    return done(e);
}

int g4_event_create_untimed(long long* out) {
    cudaEvent_t ev = nullptr;
    cudaError_t e = cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
    *out = (long long) ev;
    return done(e);
}
int g4_event_destroy(long long ev) { return done(cudaEventDestroy((cudaEvent_t) ev)); }
int g4_event_record(long long ev, g4_stream s) { return done(cudaEventRecord((cudaEvent_t) ev, as_stream(s))); }
int g4_event_synchronize(long long ev) { return done(cudaEventSynchronize((cudaEvent_t) ev)); }
int g4_event_query(long long ev) {
    cudaError_t e = cudaEventQuery((cudaEvent_t) ev);
    if (e != cudaErrorNotReady) return done(e);
    (void) cudaGetLastError();  // not an error: the work is still queued (every g4_ call leaves the slot empty)
    return -1;
}
int g4_event_elapsed_ms(float* ms, long long start, long long end) {
    return done(cudaEventElapsedTime(ms, (cudaEvent_t) start, (cudaEvent_t) end));
}

int g4_graph_begin_capture(g4_stream s) {
    return done(cudaStreamBeginCapture(as_stream(s), cudaStreamCaptureModeRelaxed));
}

int g4_graph_end_capture(g4_stream s, long long* graph_exec) {
    *graph_exec = 0;
    cudaGraph_t graph = nullptr;
    cudaError_t e = cudaStreamEndCapture(as_stream(s), &graph);
    if (e != cudaSuccess) {
        if (graph != nullptr) cudaGraphDestroy(graph);
        return done(e);
    }
    cudaGraphExec_t exec = nullptr;
    e = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);  // the executable graph keeps what it needs
    if (e != cudaSuccess) return done(e);
    *graph_exec = (long long) exec;
    return 0;
}

int g4_graph_launch(long long graph_exec, g4_stream s) {
    return done(cudaGraphLaunch((cudaGraphExec_t) graph_exec, as_stream(s)));
}

int g4_graph_destroy(long long graph_exec) { return done(cudaGraphExecDestroy((cudaGraphExec_t) graph_exec)); }

}  // extern "C"
