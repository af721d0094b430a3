// tools/kernel-emu's CUDA runtime: the calls native/runtime.cu and the launchers make, on host memory, so that the
// real runtime.cu and the Java CUDA backend run unchanged on the emulator (tools/kernel-emu --jvm). G4EMU_DEVICES
// devices (default 1, at most 8), "kernel-emu" (compute capability 9.0, 132 SMs, G4EMU_DEVICE_GIB of memory each,
// default 16), the current one per thread (cudaSetDevice), each with its own memory and default pool; all of them
// served by one CPU, one call at a time. What a GPU would refuse, this refuses the same way:
// - devices: a kernel (or cuBLAS call) issued to a stream of another device than the calling thread's current one,
//   and an event recorded on a stream of another device than the event's, fail with
//   cudaErrorInvalidResourceHandle (and a line on stderr naming them): on a GPU, the ranks' threads of one process
//   must each keep their own device current;
// - memory: cudaMalloc beyond the device's capacity fails with cudaErrorMemoryAllocation and leaves it in the
//   last-error slot (as the real runtime does: the H200 bug); new and freed memory is filled with 0xff bytes (NaN in
//   fp32 and bf16), so a kernel that reads memory nobody wrote, or memory already freed, sees NaN; the default memory
//   pool (cudaMallocAsync) keeps freed bytes reserved until a trim, as configured by g4_pool_init.
// - streams run their work at once (there is one device and it is synchronous), except while a stream is captured:
//   then kernel launches, memset / device-to-device copies and event records are recorded into the graph and run at
//   each cudaGraphLaunch. A synchronization, a host copy or a free on a capturing stream is refused
//   (cudaErrorStreamCaptureUnsupported) and invalidates the capture (cudaStreamEndCapture then fails with
//   cudaErrorStreamCaptureInvalidated), as on a GPU.
// - G4EMU_ASYNC=1: deferred streams. Each created stream queues its work and runs it only when the host must see it
//   or another stream waits for it: cudaStreamSynchronize, cudaEventSynchronize, a D2H copy to pageable memory, a
//   synchronizing free, cudaDeviceSynchronize, an NCCL collective on that stream (its inputs), a cudaStreamWaitEvent
//   node reached on the waiting stream; cudaEventQuery and cudaStreamQuery answer cudaErrorNotReady for work issued
//   less than G4EMU_ASYNC_LAG_MS (2 s) ago, and run older work (a poller sees it finish late, never early). An NCCL
//   collective's output lands when its stream reaches it (nccl_emu.cpp), not when it is issued. So the host sees what a GPU that has not got there yet would show: a copy into pinned
//   memory lands when its stream runs (read earlier, the buffer holds its 0xcd fill or older data), a copy from
//   pinned or pageable memory reads it when it runs (pinned) or when it is issued (pageable, staged as CUDA does),
//   a stream-ordered free poisons the block when its stream reaches it, and a stream that does not wait for another's
//   event reads what that stream has not yet written. The legacy stream stays synchronous (every stream here is
//   non-blocking). Missing waits and host reads without a synchronization show as wrong values or NaN.
#include <sys/time.h>

#include <chrono>
#include <cstring>
#include <deque>
#include <memory>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <vector>

#include "emu.h"
#include <cuda.h>  // (CUtensorMap and its enums only: no driver library here)

namespace g4emu {
cudaError_t take_last_error();
cudaError_t peek_last_error();
void set_last_error(cudaError_t e);
void set_smem_limit(const void* fn, int bytes);
}  // namespace g4emu

namespace {

std::recursive_mutex mu;  // the emulated device serves one caller at a time
using Lock = std::lock_guard<std::recursive_mutex>;

struct Event;

struct Graph {
    std::vector<std::function<void()>> ops;
    // per op: the event it records and its serial, or null (G4EMU_ASYNC: a replay moves the event)
    std::vector<std::pair<Event*, long long>> record_of;
    void push(std::function<void()> op, Event* record = nullptr, long long serial = 0) {
        ops.push_back(std::move(op));
        record_of.push_back({record, serial});
    }
};

struct Stream {
    Graph* capture = nullptr;  // non-null while captured
    bool invalidated = false;
    int device = -1;           // the device current when it was created (-1: the legacy stream, any device)
    // G4EMU_ASYNC: the work issued and not yet run; issued and run count the stream's operations
    std::deque<std::function<void()>> queue;
    long long issued = 0, done = 0, id = 0;
    double last_issue_ms = 0;  // G4EMU_ASYNC: when its last operation was issued
    bool running = false;
};

struct Event {
    double ms = 0;
    bool recorded = false;
    int device = 0;
    long long stream = -1, seq = 0;  // G4EMU_ASYNC: the stream (id) and operation count its last record completes at
    double issued_ms = 0;            // G4EMU_ASYNC: when its last record was issued
    long long serial = 0;            // (queued records name the event by address and serial: an address is reused)
};
long long next_event_serial = 1;

int deferred_flag = -1;  // G4EMU_ASYNC's, read at the first use; g4emu::set_deferred sets it (a case of its own)

double now_ms();

// G4EMU_ASYNC_LAG_MS (default 2000): how far behind the host a polled stream is. A query answers not-ready for work
// issued less than this long ago (running nothing), and runs work that is older: a poller (a watchdog, a staging
// buffer's check) sees the work finish a while later, and work issued meanwhile without a wait still runs first.
double lag_ms() {
    static double v = [] {
        const char* e = getenv("G4EMU_ASYNC_LAG_MS");
        return e != nullptr && *e ? atof(e) : 2000.0;
    }();
    return v;
}

bool deferred() {
    if (deferred_flag < 0) {
        const char* e = getenv("G4EMU_ASYNC");
        deferred_flag = e != nullptr && *e != 0 && strcmp(e, "0") != 0;
        if (deferred_flag) fprintf(stderr, "kernel-emu: deferred streams (G4EMU_ASYNC): work runs when the host or another stream waits for it\n");
    }
    return deferred_flag > 0;
}

constexpr int MAX_DEVICES = 8;

int num_devices() {
    static int n = [] {
        const char* e = getenv("G4EMU_DEVICES");
        int v = e != nullptr && *e ? atoi(e) : 1;
        return v < 1 ? 1 : v > MAX_DEVICES ? MAX_DEVICES : v;
    }();
    return n;
}

thread_local int cur_dev = 0;  // cudaSetDevice's, per thread as on a GPU

Stream legacy;  // stream 0
std::set<Stream*> streams;
std::map<long long, Stream*> streams_by_id;  // (G4EMU_ASYNC: an event names its stream by id, which outlives it)
long long next_stream_id = 1;
std::set<Event*> events;
std::set<Graph*> graphs;

long long capacity() {
    static long long c = [] {
        const char* e = getenv("G4EMU_DEVICE_GIB");
        double gib = e ? atof(e) : 16;
        return (long long) (gib * (1LL << 30));
    }();
    return c;
}

struct Alloc {
    size_t bytes;
    int device;
};
std::map<void*, Alloc> sync_allocs, pool_allocs;     // live allocations (cudaMalloc, cudaMallocAsync)
long long sync_used[MAX_DEVICES], pool_used[MAX_DEVICES], pool_idle[MAX_DEVICES];  // bytes a device; pool_idle: freed to its pool, not yet trimmed
// Freed pool blocks by (stream, size): the next allocation of that size on the stream that freed one gets it back
// (stream-ordered reuse, as the real pool does while the work before the free may still be queued); another stream
// never does (on a GPU it would have to wait for the free to complete), until a trim returns the block.
std::multimap<std::pair<Stream*, size_t>, std::pair<void*, int>> pool_free;

long long free_on(int d) { return capacity() - sync_used[d] - pool_used[d] - pool_idle[d]; }

size_t rounded(size_t bytes) { return bytes == 0 ? 256 : (bytes + 255) / 256 * 256; }

Stream* stream_of(cudaStream_t s) {
    if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread) return &legacy;
    Stream* st = reinterpret_cast<Stream*>(s);
    if (!streams.count(st)) g4emu::fail("an unknown stream %p", (void*) s);
    return st;
}

int device_of(Stream* st) { return st->device < 0 ? cur_dev : st->device; }

double now_ms() {
    using namespace std::chrono;
    return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

// G4EMU_ASYNC: runs stream st's queued work up to its operation count `target` (on the stream's device). A stream
// reached again while it runs (a wait on a stream that waits on it) needs only work it has already run.
void run_until(Stream* st, long long target) {
    if (st->done >= target) return;
    if (st->running) g4emu::fail("kernel-emu: a stream waits for work of its own that comes later (a dependency cycle)");
    st->running = true;
    const int saved = cur_dev;
    if (st->device >= 0) cur_dev = st->device;
    while (st->done < target && !st->queue.empty()) {
        std::function<void()> op = std::move(st->queue.front());
        st->queue.pop_front();
        op();
        st->done++;
    }
    cur_dev = saved;
    st->running = false;
}

void run_all(Stream* st) { run_until(st, st->issued); }

void run_every_stream() {
    for (auto& [id, st] : streams_by_id) run_all(st);
}

void run_device_streams(int d) {
    for (auto& [id, st] : streams_by_id)
        if (st->device == d) run_all(st);
}

// Event e's last record is the operation just issued to st (outside a capture): where its completion is.
void mark_record(Event* e, Stream* st) {
    e->stream = deferred() && st != &legacy ? st->id : -1;
    e->seq = st->issued;
    e->issued_ms = now_ms();
}

// Whether the completion of event e's last record is still queued (G4EMU_ASYNC); its stream if so.
Stream* pending_stream(const Event* e) {
    if (e->stream < 0) return nullptr;
    auto it = streams_by_id.find(e->stream);
    if (it == streams_by_id.end() || it->second->done >= e->seq) return nullptr;
    return it->second;
}

// Work a capture cannot take: refused, and the capture is dead.
cudaError_t refuse_in_capture(Stream* st) {
    st->invalidated = true;
    return cudaErrorStreamCaptureUnsupported;
}

void* device_alloc(size_t bytes) {
    size_t n = rounded(bytes);
    void* p = aligned_alloc(256, n);
    if (p) memset(p, 0xff, n);
    return p;
}

void device_free(void* p, size_t bytes) {
    memset(p, 0xff, bytes);
    free(p);
}

}  // namespace

namespace g4emu {
// The device whose memory holds p (inside a live cudaMalloc or cudaMallocAsync allocation), or -1 (host memory, or
// nothing allocated here).
int device_of_pointer(const void* p) {
    Lock l(mu);
    for (auto* m : {&sync_allocs, &pool_allocs}) {
        auto it = m->upper_bound(const_cast<void*>(p));
        if (it == m->begin()) continue;
        --it;
        if ((const char*) p < (const char*) it->first + it->second.bytes) return it->second.device;
    }
    return -1;
}

int current_device() { return cur_dev; }

// Whether `what` may be issued to stream s from this thread: the stream's device must be the current one.
bool launch_allowed(cudaStream_t s, const char* what) {
    Lock l(mu);
    Stream* st = stream_of(s);
    if (device_of(st) == cur_dev) return true;
    fprintf(stderr, "kernel-emu: %s issued to a stream of device %d while device %d is current (cudaErrorInvalidResourceHandle)\n", what,
            device_of(st), cur_dev);
    set_last_error(cudaErrorInvalidResourceHandle);
    return false;
}

void submit(cudaStream_t s, std::function<void()> op) {
    Lock l(mu);
    Stream* st = stream_of(s);
    if (st->capture) {
        st->capture->push(std::move(op));
    } else if (deferred() && st != &legacy) {
        st->queue.push_back(std::move(op));
        st->issued++;
        st->last_issue_ms = now_ms();
    } else {
        op();
    }
}

// Deferred streams on or off (G4EMU_ASYNC's setting otherwise); off runs what is queued first.
void set_deferred(bool on) {
    Lock l(mu);
    if (!on) run_every_stream();
    deferred_flag = on;
}

bool deferred_streams() { return deferred(); }

void with_runtime(const std::function<void()>& f) {
    Lock l(mu);
    f();
}

// Runs stream s's queued work (G4EMU_ASYNC; nothing otherwise): an NCCL collective reads its inputs after it.
void stream_flush(cudaStream_t s) {
    Lock l(mu);
    Stream* st = stream_of(s);
    if (!st->capture) run_all(st);
}
}  // namespace g4emu

// The multiprocessor count the device reports (an H100 / H200's 132 unless a test asks for fewer, so that persistent
// kernels' blocks go through several work items at small sizes).
static int sm_count = 0;
namespace g4emu {
void set_sm_count(int sms) { sm_count = sms; }
}  // namespace g4emu

extern "C" {

cudaError_t cudaGetLastError(void) { return g4emu::take_last_error(); }
cudaError_t cudaPeekAtLastError(void) { return g4emu::peek_last_error(); }

const char* cudaGetErrorName(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "cudaSuccess";
        case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
        case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
        case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
        case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
        case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
        case cudaErrorNotReady: return "cudaErrorNotReady";
        case cudaErrorNotSupported: return "cudaErrorNotSupported";
        case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
        case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
        case cudaErrorIllegalState: return "cudaErrorIllegalState";
        default: return "cudaErrorUnknown";
    }
}

const char* cudaGetErrorString(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: return "invalid argument";
        case cudaErrorMemoryAllocation: return "out of memory";
        case cudaErrorInvalidConfiguration: return "invalid configuration argument";
        case cudaErrorInvalidDevice: return "invalid device ordinal";
        case cudaErrorInvalidResourceHandle: return "invalid resource handle";
        case cudaErrorNotSupported: return "operation not supported (kernel-emu)";
        case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
        case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
        default: return "unknown error (kernel-emu)";
    }
}

cudaError_t cudaRuntimeGetVersion(int* v) { *v = 13000; return cudaSuccess; }
cudaError_t cudaDriverGetVersion(int* v) { *v = 13010; return cudaSuccess; }
cudaError_t cudaGetDeviceCount(int* n) { *n = num_devices(); return cudaSuccess; }
cudaError_t cudaSetDevice(int d) {
    if (d < 0 || d >= num_devices()) return cudaErrorInvalidDevice;
    cur_dev = d;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int* d) { *d = cur_dev; return cudaSuccess; }
cudaError_t cudaDeviceSynchronize(void) {
    Lock l(mu);
    run_device_streams(cur_dev);
    return cudaSuccess;
}

// Shared memory a block may opt into: an sm_90's 227 KiB, or G4EMU_SMEM_OPTIN bytes (an sm_86 / sm_89 has 99 KiB:
// 101376), so that the launchers' paths for smaller devices run too.
static int smem_optin() {
    const char* e = getenv("G4EMU_SMEM_OPTIN");
    return e != nullptr && *e != 0 ? atoi(e) : 227 * 1024;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d) {
    if (d < 0 || d >= num_devices()) return cudaErrorInvalidDevice;
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "kernel-emu (CPU emulation, sm_90)");
    p->totalGlobalMem = (size_t) capacity();
    p->multiProcessorCount = sm_count > 0 ? sm_count : 132;
    p->major = 9;
    p->minor = 0;
    p->warpSize = 32;
    p->maxThreadsPerBlock = 1024;
    p->sharedMemPerBlock = 48 * 1024;
    p->sharedMemPerBlockOptin = smem_optin();
    p->l2CacheSize = 50 * 1024 * 1024;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int d) {
    if (d < 0 || d >= num_devices()) return cudaErrorInvalidDevice;
    switch (a) {
        case cudaDevAttrMemoryPoolsSupported: *v = 1; break;
        case cudaDevAttrMultiProcessorCount: *v = sm_count > 0 ? sm_count : 132; break;
        case cudaDevAttrComputeCapabilityMajor: *v = 9; break;
        case cudaDevAttrComputeCapabilityMinor: *v = 0; break;
        case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = smem_optin(); break;
        default: *v = 0;
    }
    return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void* fn, enum cudaFuncAttribute attr, int value) {
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (value < 0 || value > smem_optin()) return cudaErrorInvalidValue;
        g4emu::set_smem_limit(fn, value);
    }
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total) {
    Lock l(mu);
    *total = (size_t) capacity();
    *free_bytes = (size_t) free_on(cur_dev);
    return cudaSuccess;
}

cudaError_t cudaMalloc(void** p, size_t bytes) {
    Lock l(mu);
    *p = nullptr;
    if ((long long) bytes > free_on(cur_dev) || !(*p = device_alloc(bytes))) {
        g4emu::set_last_error(cudaErrorMemoryAllocation);
        return cudaErrorMemoryAllocation;
    }
    sync_allocs[*p] = Alloc{bytes, cur_dev};
    sync_used[cur_dev] += (long long) bytes;
    return cudaSuccess;
}

// Page-locked host memory: plain host memory here (every copy runs when it is issued); a free of anything else fails.
static std::map<void*, size_t> host_allocs;

cudaError_t cudaHostAlloc(void** p, size_t bytes, unsigned int) {
    Lock l(mu);
    *p = malloc(bytes == 0 ? 1 : bytes);
    if (*p == nullptr) {
        g4emu::set_last_error(cudaErrorMemoryAllocation);
        return cudaErrorMemoryAllocation;
    }
    memset(*p, 0xcd, bytes);  // not zeroed, as on a GPU host: a read before the copy lands shows garbage
    host_allocs[*p] = bytes;
    return cudaSuccess;
}

cudaError_t cudaFreeHost(void* p) {
    Lock l(mu);
    if (p == nullptr) return cudaSuccess;
    run_every_stream();  // (a copy still queued would write freed memory)
    if (!host_allocs.erase(p)) {
        g4emu::set_last_error(cudaErrorInvalidValue);
        return cudaErrorInvalidValue;
    }
    free(p);
    return cudaSuccess;
}

cudaError_t cudaFree(void* p) {
    Lock l(mu);
    if (p == nullptr) return cudaSuccess;
    auto it = sync_allocs.find(p);
    if (it == sync_allocs.end()) {
        g4emu::set_last_error(cudaErrorInvalidValue);
        return cudaErrorInvalidValue;
    }
    run_device_streams(it->second.device);  // cudaFree synchronizes the device
    sync_used[it->second.device] -= (long long) it->second.bytes;
    device_free(p, it->second.bytes);
    sync_allocs.erase(it);
    return cudaSuccess;
}

static int the_pools[MAX_DEVICES];  // device d's default pool is &the_pools[d]

static int pool_device(cudaMemPool_t pool) {
    long d = reinterpret_cast<int*>(pool) - the_pools;
    if (d < 0 || d >= num_devices()) g4emu::fail("an unknown memory pool %p", (void*) pool);
    return (int) d;
}

cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int d) {
    if (d < 0 || d >= num_devices()) return cudaErrorInvalidDevice;
    *pool = reinterpret_cast<cudaMemPool_t>(&the_pools[d]);
    return cudaSuccess;
}

cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t, cudaMemPoolAttr, void*) { return cudaSuccess; }

cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t pool, cudaMemPoolAttr a, void* v) {
    Lock l(mu);
    int d = pool_device(pool);
    unsigned long long* out = static_cast<unsigned long long*>(v);
    if (a == cudaMemPoolAttrReservedMemCurrent) *out = (unsigned long long) (pool_used[d] + pool_idle[d]);
    else if (a == cudaMemPoolAttrUsedMemCurrent) *out = (unsigned long long) pool_used[d];
    else *out = 0;
    return cudaSuccess;
}

cudaError_t cudaMemPoolTrimTo(cudaMemPool_t pool, size_t keep) {
    Lock l(mu);
    int d = pool_device(pool);
    run_device_streams(d);  // (only blocks whose frees have run are idle on a GPU; here a queued poison would write freed memory)
    for (auto it = pool_free.begin(); it != pool_free.end() && pool_idle[d] > (long long) keep;) {
        if (it->second.second != d) {
            ++it;
            continue;
        }
        pool_idle[d] -= (long long) it->first.second;
        free(it->second.first);
        it = pool_free.erase(it);
    }
    return cudaSuccess;
}

// The pool serves an allocation from a block of that size its stream freed (a reuse), then from the device.
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t s) {
    Lock l(mu);
    Stream* st = stream_of(s);
    const int d = device_of(st);  // the stream's device's pool
    const size_t n = rounded(bytes);
    *p = nullptr;
    auto reuse = pool_free.end();
    for (Stream* from : {st, (Stream*) nullptr})  // its own frees, then those of destroyed streams (their work has run)
        for (auto [it, end] = pool_free.equal_range({from, n}); it != end && reuse == pool_free.end(); ++it)
            if (it->second.second == d) reuse = it;
    if (reuse != pool_free.end()) {
        *p = reuse->second.first;
        pool_free.erase(reuse);
        pool_idle[d] -= (long long) n;
        void* q = *p;
        if (st->capture) memset(q, 0xff, n);  // (not a graph's work)
        else g4emu::submit(s, [q, n]() { memset(q, 0xff, n); });  // in stream order (deferred streams: after the free)
    } else if ((long long) n > free_on(d) || !(*p = device_alloc(bytes))) {
        g4emu::set_last_error(cudaErrorMemoryAllocation);
        return cudaErrorMemoryAllocation;
    }
    pool_allocs[*p] = Alloc{n, d};
    pool_used[d] += (long long) n;
    return cudaSuccess;
}

cudaError_t cudaFreeAsync(void* p, cudaStream_t s) {
    Lock l(mu);
    Stream* st = stream_of(s);
    if (st->capture) return refuse_in_capture(st);
    if (p == nullptr) return cudaSuccess;
    auto it = pool_allocs.find(p);
    if (it == pool_allocs.end()) {
        g4emu::set_last_error(cudaErrorInvalidValue);
        return cudaErrorInvalidValue;
    }
    const Alloc a = it->second;
    pool_used[a.device] -= (long long) a.bytes;
    pool_idle[a.device] += (long long) a.bytes;
    // kept by the pool, poisoned: a kernel reading freed memory sees NaN (deferred: when the stream reaches the free)
    g4emu::submit(s, [p, a]() { memset(p, 0xff, a.bytes); });
    pool_free.insert({{st, a.bytes}, {p, a.device}});
    pool_allocs.erase(it);
    return cudaSuccess;
}

// Whether p is in page-locked host memory (cudaHostAlloc).
static bool pinned(const void* p) {
    auto it = host_allocs.upper_bound(const_cast<void*>(p));
    if (it == host_allocs.begin()) return false;
    --it;
    return (const char*) p < (const char*) it->first + it->second;
}

static bool on_device(const void* p) { return g4emu::device_of_pointer(p) >= 0; }

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, enum cudaMemcpyKind kind, cudaStream_t s) {
    Lock l(mu);
    Stream* st = stream_of(s);
    if (st->capture) {
        if (kind != cudaMemcpyDeviceToDevice) return refuse_in_capture(st);  // (host memory is pageable here)
        st->capture->push([=]() { memmove(dst, src, n); });
        return cudaSuccess;
    }
    if (!deferred() || st == &legacy || n == 0) {
        memmove(dst, src, n);
        return cudaSuccess;
    }
    const bool dst_pageable = !on_device(dst) && !pinned(dst), src_pageable = !on_device(src) && !pinned(src);
    if (dst_pageable || (!on_device(dst) && !on_device(src))) {  // to pageable memory, or host to host: CUDA returns
        run_all(st);                                                // once the copy is done
        memmove(dst, src, n);
    } else if (src_pageable) {  // from pageable memory: staged when issued
        auto staged = std::make_shared<std::vector<char>>((const char*) src, (const char*) src + n);
        g4emu::submit(s, [dst, staged, n]() { memmove(dst, staged->data(), n); });
    } else {  // device and pinned memory: read and written when the stream gets there
        g4emu::submit(s, [=]() { memmove(dst, src, n); });
    }
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, enum cudaMemcpyKind kind) {
    Lock l(mu);
    if (legacy.capture) return refuse_in_capture(&legacy);
    for (Stream* st : streams)
        if (st->capture) st->invalidated = true;  // a synchronous copy waits for every stream: no capture survives
    memmove(dst, src, n);
    (void) kind;
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* p, int value, size_t n, cudaStream_t s) {
    g4emu::submit(s, [=]() { memset(p, value, n); });
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
    Lock l(mu);
    Stream* st = new Stream();
    st->device = cur_dev;
    st->id = next_stream_id++;
    streams.insert(st);
    streams_by_id[st->id] = st;
    *s = reinterpret_cast<cudaStream_t>(st);
    return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithFlags(s, 0); }

cudaError_t cudaStreamDestroy(cudaStream_t s) {
    Lock l(mu);
    Stream* st = reinterpret_cast<Stream*>(s);
    if (!streams.count(st)) return cudaErrorInvalidResourceHandle;
    run_all(st);  // (its work completes after the destroy on a GPU)
    streams.erase(st);
    streams_by_id.erase(st->id);
    std::multimap<std::pair<Stream*, size_t>, std::pair<void*, int>> keep;  // its freed blocks stay in the pool, for any stream
    for (auto& [key, p] : pool_free) keep.insert({{key.first == st ? nullptr : key.first, key.second}, p});
    pool_free.swap(keep);
    delete st;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    Lock l(mu);
    Stream* st = stream_of(s);
    if (st->capture) return refuse_in_capture(st);
    run_all(st);
    return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t ev, unsigned) {
    Lock l(mu);
    Stream* st = stream_of(s);
    if (ev == nullptr || !events.count(reinterpret_cast<Event*>(ev))) return cudaErrorInvalidResourceHandle;
    Event* e = reinterpret_cast<Event*>(ev);
    if (st->capture || pending_stream(e) == nullptr) return cudaSuccess;
    const long long id = e->stream, seq = e->seq;  // the record this wait is for: the event's last one at this call
    if (st == &legacy) {
        run_until(pending_stream(e), seq);
        return cudaSuccess;
    }
    g4emu::submit(s, [id, seq]() {
        auto it = streams_by_id.find(id);
        if (it != streams_by_id.end()) run_until(it->second, seq);
    });
    return cudaSuccess;
}

// (G4EMU_ASYNC: pending work issued within the lag answers cudaErrorNotReady, running nothing; older work runs)
cudaError_t cudaStreamQuery(cudaStream_t s) {
    Lock l(mu);
    Stream* st = stream_of(s);
    if (st->capture || st->done >= st->issued) return cudaSuccess;
    if (now_ms() - st->last_issue_ms < lag_ms()) return cudaErrorNotReady;
    run_all(st);
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* ev, unsigned) {
    Lock l(mu);
    Event* e = new Event();
    e->device = cur_dev;
    e->serial = next_event_serial++;
    events.insert(e);
    *ev = reinterpret_cast<cudaEvent_t>(e);
    return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* ev) { return cudaEventCreateWithFlags(ev, 0); }

cudaError_t cudaEventDestroy(cudaEvent_t ev) {
    Lock l(mu);
    Event* e = reinterpret_cast<Event*>(ev);
    if (!events.erase(e)) return cudaErrorInvalidResourceHandle;
    delete e;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t ev, cudaStream_t s) {
    Lock l(mu);
    Event* e = reinterpret_cast<Event*>(ev);
    if (!events.count(e)) return cudaErrorInvalidResourceHandle;
    if (device_of(stream_of(s)) != e->device) {
        fprintf(stderr, "kernel-emu: an event of device %d recorded on a stream of device %d (cudaErrorInvalidResourceHandle)\n", e->device,
                device_of(stream_of(s)));
        return cudaErrorInvalidResourceHandle;
    }
    Stream* st = stream_of(s);
    // (an event destroyed while its record is queued: the record finds it gone)
    const long long serial = e->serial;
    std::function<void()> op = [e, serial]() {
        if (events.count(e) && e->serial == serial) {
            e->ms = now_ms();
            e->recorded = true;
        }
    };
    if (st->capture) st->capture->push(std::move(op), e, serial);
    else g4emu::submit(s, std::move(op));
    if (!st->capture) mark_record(e, st);
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t ev) {
    Lock l(mu);
    Event* e = reinterpret_cast<Event*>(ev);
    if (!events.count(e)) return cudaErrorInvalidResourceHandle;
    if (Stream* st = pending_stream(e)) run_until(st, e->seq);
    return cudaSuccess;
}

cudaError_t cudaEventQuery(cudaEvent_t ev) {
    Lock l(mu);
    Event* e = reinterpret_cast<Event*>(ev);
    if (!events.count(e)) return cudaErrorInvalidResourceHandle;
    if (Stream* st = pending_stream(e)) {
        if (now_ms() - e->issued_ms < lag_ms()) return cudaErrorNotReady;
        run_until(st, e->seq);
    }
    return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
    Lock l(mu);
    Event *x = reinterpret_cast<Event*>(a), *y = reinterpret_cast<Event*>(b);
    if (!events.count(x) || !events.count(y)) return cudaErrorInvalidResourceHandle;
    if (pending_stream(x) || pending_stream(y)) return cudaErrorNotReady;
    if (!x->recorded || !y->recorded) return cudaErrorInvalidResourceHandle;
    *ms = (float) (y->ms - x->ms);
    return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode) {
    Lock l(mu);
    Stream* st = stream_of(s);
    if (st == &legacy) return cudaErrorStreamCaptureUnsupported;  // the legacy stream cannot be captured
    if (st->capture) return cudaErrorIllegalState;
    st->capture = new Graph();
    st->invalidated = false;
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* graph) {
    Lock l(mu);
    Stream* st = stream_of(s);
    *graph = nullptr;
    if (!st->capture) return cudaErrorIllegalState;
    Graph* g = st->capture;
    st->capture = nullptr;
    if (st->invalidated) {
        st->invalidated = false;
        delete g;
        return cudaErrorStreamCaptureInvalidated;
    }
    graphs.insert(g);
    *graph = reinterpret_cast<cudaGraph_t>(g);
    return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t s, enum cudaStreamCaptureStatus* status) {
    Lock l(mu);
    Stream* st = stream_of(s);
    *status = st->capture ? (st->invalidated ? cudaStreamCaptureStatusInvalidated : cudaStreamCaptureStatusActive)
                          : cudaStreamCaptureStatusNone;
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
    Lock l(mu);
    Graph* g = reinterpret_cast<Graph*>(graph);
    if (!graphs.count(g)) return cudaErrorInvalidValue;
    Graph* copy = new Graph(*g);
    graphs.insert(copy);
    *exec = reinterpret_cast<cudaGraphExec_t>(copy);
    return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
    Lock l(mu);
    Graph* g = reinterpret_cast<Graph*>(graph);
    if (!graphs.erase(g)) return cudaErrorInvalidValue;
    delete g;
    return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) { return cudaGraphDestroy(reinterpret_cast<cudaGraph_t>(exec)); }

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
    Lock l(mu);
    Graph* g = reinterpret_cast<Graph*>(exec);
    if (!graphs.count(g)) return cudaErrorInvalidValue;
    Stream* st = stream_of(s);
    for (size_t i = 0; i < g->ops.size(); i++) {
        g4emu::submit(s, g->ops[i]);
        auto [e, serial] = g->record_of[i];
        if (e != nullptr && events.count(e) && e->serial == serial && !st->capture) mark_record(e, st);
    }
    return cudaSuccess;
}

}  // extern "C"

// ---- the driver's cuTensorMapEncodeTiled, through cudaGetDriverEntryPointByVersion (the launchers take it there, so
// that nothing links libcuda): the checks the driver documents for the kernels' cases (cuda.h), then emu.h's
// EmuTensorMap written into the opaque map for tma_load.
static CUresult emu_encode_tiled(CUtensorMap* map, CUtensorMapDataType type, cuuint32_t rank, void* addr,
                                 const cuuint64_t* dims, const cuuint64_t* strides, const cuuint32_t* box,
                                 const cuuint32_t* estrides, CUtensorMapInterleave il, CUtensorMapSwizzle sw,
                                 CUtensorMapL2promotion, CUtensorMapFloatOOBfill oob) {
    static_assert(sizeof(g4emu::EmuTensorMap) <= sizeof(CUtensorMap), "the emulated map fits the opaque one");
    int el = 0;
    switch (type) {
        case CU_TENSOR_MAP_DATA_TYPE_UINT8: el = 1; break;
        case CU_TENSOR_MAP_DATA_TYPE_UINT16: case CU_TENSOR_MAP_DATA_TYPE_FLOAT16: case CU_TENSOR_MAP_DATA_TYPE_BFLOAT16: el = 2; break;
        case CU_TENSOR_MAP_DATA_TYPE_UINT32: case CU_TENSOR_MAP_DATA_TYPE_INT32: case CU_TENSOR_MAP_DATA_TYPE_FLOAT32: el = 4; break;
        default: return CUDA_ERROR_INVALID_VALUE;  // (types the kernels do not use)
    }
    if (map == nullptr || (uintptr_t) map % 64 || rank < 1 || rank > 5 || addr == nullptr || (uintptr_t) addr % 16 ||
        il != CU_TENSOR_MAP_INTERLEAVE_NONE || oob != CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE ||
        (sw != CU_TENSOR_MAP_SWIZZLE_NONE && sw != CU_TENSOR_MAP_SWIZZLE_128B))
        return CUDA_ERROR_INVALID_VALUE;
    g4emu::EmuTensorMap m{};
    m.magic = g4emu::EMU_TMAP;
    m.rank = (int) rank;
    m.elsize = el;
    m.swizzle_bytes = sw == CU_TENSOR_MAP_SWIZZLE_128B ? 128 : 0;
    m.base = static_cast<const unsigned char*>(addr);
    for (cuuint32_t i = 0; i < rank; i++) {
        if (dims[i] < 1 || dims[i] > (1ull << 32) || box[i] < 1 || box[i] > 256 || estrides[i] != 1) return CUDA_ERROR_INVALID_VALUE;
        if (i > 0 && (strides[i - 1] % 16 || strides[i - 1] >= (1ull << 40))) return CUDA_ERROR_INVALID_VALUE;
        m.dims[i] = dims[i];
        m.strides[i] = i == 0 ? (unsigned long long) el : strides[i - 1];
        m.box[i] = box[i];
    }
    if (box[0] * el % 16 || (m.swizzle_bytes == 128 && box[0] * el > 128)) return CUDA_ERROR_INVALID_VALUE;
    memset(map, 0, sizeof *map);
    memcpy(map, &m, sizeof m);
    return CUDA_SUCCESS;
}

extern "C" cudaError_t cudaGetDriverEntryPointByVersion(const char* symbol, void** fn, unsigned int, unsigned long long,
                                                        cudaDriverEntryPointQueryResult* status) {
    const bool found = symbol != nullptr && !strcmp(symbol, "cuTensorMapEncodeTiled");
    *fn = found ? reinterpret_cast<void*>(&emu_encode_tiled) : nullptr;
    if (status) *status = found ? cudaDriverEntryPointSuccess : cudaDriverEntryPointSymbolNotFound;
    return cudaSuccess;
}
