// tools/kernel-emu: runs the kernels of cuda/*.cu, their own source text, on the CPU. This header is force-included
// (g++ -include) ahead of each cuda/*.cu, which the build script has rewritten only where C++ cannot read CUDA: a
// launch `k<<<g, b, smem, s>>>(args)` becomes `g4emu::launch("k", k, g, b, smem, s)(args)` (submitted to the stream,
// so that a captured stream records it) and `extern __shared__ T x[]` a pointer into the block's dynamic shared memory. Everything else compiles as written, through these stand-ins:
//
// - CUDA threads are fibers (own stacks, a hand-written x86-64 context switch), one OS thread, a block at a time, its
//   threads run until they block on __syncthreads or a warp collective; blocks of a grid run one after another.
// - __syncthreads: a barrier of the block's live threads (an exited thread counts as arrived, as on sm_70+).
// - warp collectives (shfl, ballot, __syncwarp, ldmatrix, mma.sync, and each warp's 16 rows of a wgmma at its
//   wgmma.wait_group): every live lane of the warp must arrive at the
//   same collective; the last to arrive computes every lane's result. Lanes at different collectives, a lane that
//   exits while its warp waits, or a block whose threads all wait on something that cannot complete are reported as
//   errors (divergence, deadlock) naming the kernel, block and threads.
// - cp.async is deferred: a copy happens only when cp.async.wait_group retires its group (the latest the hardware may
//   do it), so a read of a tile before its wait sees the previous contents. Copies and ldmatrix must be 16-byte
//   aligned (checked).
// - dynamic shared memory is one arena, filled with 0xff bytes (bf16 NaN) before each block, the bytes past the
//   launch's size poisoned for AddressSanitizer; a launch above 48 KiB needs cudaFuncSetAttribute first, as on a GPU.
// - device memory is host memory: drivers pass host pointers as the g4_ptr arguments. Built with -fsanitize=address
//   an out-of-bounds global or shared access is reported with the kernel's source line (memcheck's job on a GPU);
//   built with --race (ThreadSanitizer, emu.cpp's G4EMU_TSAN), a shared-memory race between two threads of a block.
// - the CUDA runtime calls (memory, streams, events, graphs) are cudart_emu.cpp's.
#pragma once
#define G4_EMU 1
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <atomic>
#include <functional>
#include <type_traits>

#undef __global__
#undef __launch_bounds__
#undef __shared__
#undef __grid_constant__
#define __global__
#define __launch_bounds__(...)
#define __shared__ static
#define __grid_constant__

#define G4EMU_UNPROFILED __attribute__((no_sanitize("thread")))

namespace g4emu {

struct CpCopy {
    unsigned dst;
    const void* src;
    int bytes;
    bool zero;
};

// One lane's part in a warp collective.
struct Slot {
    int kind;
    unsigned long long in[12];
    unsigned long long out[4];
};

struct Fiber;
extern Fiber* g_cur;
extern uint3 g_block_idx;
extern dim3 g_block_dim, g_grid_dim;
extern unsigned char* g_arena;  // dynamic shared memory (and the base of shared-memory addresses)

extern uint3 g_thread_idx;  // the running CUDA thread's threadIdx (set at every switch to it)
[[noreturn]] void fail(const char* fmt, ...);

// Warp collectives: the lane's in-slot is filled by the caller; returns the lane's slot with out[] filled.
enum Kind { K_SHFL = 1, K_BALLOT, K_SYNCWARP, K_LDSM, K_LDSM_T, K_MMA, K_WGMMA };
Slot& my_slot();
Slot& collective(int kind, unsigned mask);
void syncthreads();
long long block_serial();  // a number of the running block, different for every block run (any launch)

// The async proxy (wgmma's operand reads): fence.proxy.async, and the check at a wgmma's issue that its shared
// operands were not changed by a generic-proxy write (a store, a landed cp.async) after the last fence (emu.cpp).
void proxy_fence();
void wg_check_fenced(unsigned long long da, bool a_smem, bool tnsp_a, unsigned long long db, bool tnsp_b, int n, int wq);

// cp.async
void cp_async(unsigned dst, const void* src, int bytes, bool pred);
void cp_commit();
void cp_wait(int n);

// cp.reduce.async.bulk (shared::cta -> global, .add; type 0 f32, 1 u64) and its .bulk_group commit and waits. At the
// issue: alignment, the async proxy's view of the source, and a copy of it; the hardware may read the source any time
// until the wait that retires the group for reading (full: false, wait_group.read; true, wait_group), so that wait
// fails if the source changed since the issue; the adds are made at the full wait (or the thread's exit). A thread
// may not exit with a reduction whose source has not been waited for.
void bulk_reduce(void* dst, unsigned src, int bytes, int type);
void bulk_commit();
void bulk_wait(int n, bool full);

// mbarriers (mbarrier.* on shared::cta objects of 8 bytes at shared addresses; the state is kept here, beside the
// arena) and TMA (cp.async.bulk.tensor, global -> shared::cta, completing bytes on an mbarrier). mbar_arrive: expect_tx
// `tx` bytes (0: none), then one arrival; a phase completes when its arrivals are in and its expected bytes have
// landed. mbar_wait blocks the thread until the phase of parity `parity` has completed (try_wait.parity in a loop).
// TMA loads land late by default, when a thread waits on their barrier and every arrival of the phase is in (the
// latest the hardware may land them: a read before the wait sees the old bytes), or at their issue with
// set_tma_landing(true) (the earliest: an overwrite of a tile that another thread still reads shows). A block that ends
// with a load not landed fails. The tensor maps are EmuTensorMap, written into a CUtensorMap by the emulated
// cuTensorMapEncodeTiled (cudart_emu.cpp, through cudaGetDriverEntryPointByVersion).
struct EmuTensorMap {
    unsigned magic;  // EMU_TMAP
    int rank, elsize, swizzle_bytes;  // swizzle: 0 (none) or 128
    const unsigned char* base;
    unsigned long long dims[5], strides[5];  // strides in bytes, strides[0] = elsize
    unsigned box[5];
};
constexpr unsigned EMU_TMAP = 0x70616d74u;
void mbar_init(unsigned addr, int count);
void mbar_arrive(unsigned addr, int tx);
void mbar_wait(unsigned addr, int parity);
void tma_load(unsigned dst, const void* map, int rank, const int* coords, unsigned mbar);
void set_tma_landing(bool early);
// Named barriers (bar.sync / bar.arrive with an id of 1-15 and a thread count, a multiple of 32): sync arrives and
// waits for the barrier's current phase to complete (`count` arrivals), arrive only arrives. The count of an id must
// be the same at every use in a block; a block that ends with arrivals on a phase that never completed fails.
void named_sync(int id, int count);
void named_arrive(int id, int count);

// Launching: the grid's blocks run one after another (run_grid). A launch, like every other stream operation of the
// emulated runtime (cudart_emu.cpp), goes through submit: run now, or recorded into the graph when its stream is
// being captured (cudaStreamBeginCapture) and run at each cudaGraphLaunch. Streams are otherwise synchronous.
void run_grid(const char* name, const void* fn, dim3 grid, dim3 block, size_t smem, const std::function<void()>& body);
void submit(cudaStream_t stream, std::function<void()> op);
bool launch_allowed(cudaStream_t stream, const char* what);  // the stream is on the calling thread's device (cudart_emu.cpp)
bool launch_ok(const char* name, const void* fn, dim3 grid, dim3 block, size_t smem);  // its configuration (emu.cpp)

template <typename K>
struct Bound {
    const char* name;
    K kernel;
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;
    template <typename... A>
    void operator()(A... args) const {  // kernel parameters by value, as CUDA copies them at the launch
        const char* n = name;
        K k = kernel;
        dim3 g = grid, b = block;
        size_t sm = smem;
        if (!launch_allowed(stream, n)) return;  // another device's stream: the launch fails, as on a GPU
        if (!launch_ok(n, (const void*) k, g, b, sm)) return;  // refused at the launch, as on a GPU (not when it runs)
        // (not instrumented: the copies of the arguments are the launch's, not the kernel's accesses; --profile)
        submit(stream, [=]() G4EMU_UNPROFILED {
            run_grid(n, (const void*) k, g, b, sm, [&]() G4EMU_UNPROFILED { k(args...); });
        });
    }
};

template <typename K>
Bound<K> launch(const char* name, K kernel, dim3 grid, dim3 block, size_t smem = 0, cudaStream_t stream = 0) {
    return Bound<K>{name, kernel, grid, block, smem, stream};
}


}  // namespace g4emu

#define threadIdx (g4emu::g_thread_idx)
#define blockIdx (g4emu::g_block_idx)
#define blockDim (g4emu::g_block_dim)
#define gridDim (g4emu::g_grid_dim)

// ---- device intrinsics ----------------------------------------------------------------------------------------------

inline void __syncthreads() { g4emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { g4emu::collective(g4emu::K_SYNCWARP, mask); }
inline void __threadfence() {}  // one OS thread: every write is already visible

template <typename T>
inline T emu_shfl(unsigned mask, T x, int src) {
    static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
    g4emu::Slot& s = g4emu::my_slot();
    s.in[0] = 0;
    memcpy(&s.in[0], &x, sizeof(T));
    s.in[1] = (unsigned long long) src;
    g4emu::Slot& r = g4emu::collective(g4emu::K_SHFL, mask);
    T y;
    memcpy(&y, &r.out[0], sizeof(T));
    return y;
}
template <typename T> inline T __shfl_xor_sync(unsigned m, T x, int o) { return emu_shfl(m, x, (int) (threadIdx.x & 31) ^ o); }
template <typename T> inline T __shfl_sync(unsigned m, T x, int src) { return emu_shfl(m, x, src & 31); }
template <typename T> inline T __shfl_up_sync(unsigned m, T x, int o) {
    int lane = threadIdx.x & 31;
    return emu_shfl(m, x, lane >= o ? lane - o : lane);
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
    g4emu::my_slot().in[0] = pred != 0;
    return (unsigned) g4emu::collective(g4emu::K_BALLOT, mask).out[0];
}

// Atomics: one OS thread runs every fiber and never switches inside one, so these are atomic anyway; they go through
// std::atomic_ref (relaxed, as CUDA's atomics are) so that the race check (--race) sees atomic operations, not races.
template <typename T> inline T atomicAdd(T* p, T v) { return std::atomic_ref<T>(*p).fetch_add(v, std::memory_order_relaxed); }
template <typename T> inline T atomicMin(T* p, T v) {
    std::atomic_ref<T> a(*p);
    T o = a.load(std::memory_order_relaxed);
    while (v < o && !a.compare_exchange_weak(o, v, std::memory_order_relaxed)) {}
    return o;
}
template <typename T> inline T atomicMax(T* p, T v) {
    std::atomic_ref<T> a(*p);
    T o = a.load(std::memory_order_relaxed);
    while (v > o && !a.compare_exchange_weak(o, v, std::memory_order_relaxed)) {}
    return o;
}
template <typename T> inline T atomicOr(T* p, T v) { return std::atomic_ref<T>(*p).fetch_or(v, std::memory_order_relaxed); }
template <typename T> inline T atomicExch(T* p, T v) { return std::atomic_ref<T>(*p).exchange(v, std::memory_order_relaxed); }
template <typename T> inline T atomicCAS(T* p, T cmp, T v) {
    std::atomic_ref<T>(*p).compare_exchange_strong(cmp, v, std::memory_order_relaxed);
    return cmp;  // the old value (compare_exchange stores it into cmp on failure; on success it equals cmp)
}

inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned i; memcpy(&i, &f, 4); return i; }
inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
inline int __ffs(unsigned x) { return __builtin_ffs((int) x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __clz(unsigned x) { return x ? __builtin_clz(x) : 32; }

// fp arithmetic: host code is compiled with -ffp-contract=off, so these round once each, like the _rn intrinsics.
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline unsigned long long __double2ull_rz(double x) { return x <= 0 ? 0ull : (unsigned long long) x; }
inline unsigned long long __double2ull_rn(double x) { return x <= 0 ? 0ull : (unsigned long long) nearbyint(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }

template <typename A, typename B>
inline std::common_type_t<A, B> min(A a, B b) { return a < b ? a : b; }
template <typename A, typename B>
inline std::common_type_t<A, B> max(A a, B b) { return a > b ? a : b; }

inline size_t __cvta_generic_to_shared(const void* p) {
    return (size_t) (unsigned) (int) ((const unsigned char*) p - g4emu::g_arena);
}

// cuda_runtime.h's typed overload (declared only for nvcc)
template <typename T>
inline cudaError_t cudaFuncSetAttribute(T* entry, enum cudaFuncAttribute attr, int value) {
    return ::cudaFuncSetAttribute((const void*) entry, attr, value);
}
