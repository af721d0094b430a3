// Host stand-in for cuda/common.cuh, used only by tools/sampler-emu: the few helpers sampling.cuh, fmath.cuh and
// sample_kernel use, plus a CUDA-thread emulation (one pthread per thread of the block): __syncthreads is a barrier of
// the block's threads, a warp shuffle goes through per-warp slots between two barriers of the warp, shared-memory
// atomics are std::atomic_ref. Enough to run the kernel's own source text, in its own order, on the CPU.
#pragma once
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <atomic>
#include <barrier>
#undef __global__
#undef __launch_bounds__
#undef __shared__
#define __global__
#define __launch_bounds__(...)
#define __shared__ static
namespace g4 {
inline float mul_rn(float a, float b) { return a * b; }
inline float add_rn(float a, float b) { return a + b; }
inline float sub_rn(float a, float b) { return a - b; }
inline float div_rn(float a, float b) { return a / b; }
inline float to_f32(float x) { return x; }
inline float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
}  // namespace g4

struct Dim { unsigned x, y, z; };
extern thread_local Dim threadIdx;
extern Dim blockIdx;
extern std::barrier<>* g_block_barrier;
extern std::barrier<>* g_warp_barrier[32];
extern unsigned long long g_slot[32][32];

inline void __syncthreads() { g_block_barrier->arrive_and_wait(); }
template <typename T> inline T emu_shfl(T x, int src) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    g_slot[warp][lane] = (unsigned long long) x;
    g_warp_barrier[warp]->arrive_and_wait();
    T y = (T) g_slot[warp][src];
    g_warp_barrier[warp]->arrive_and_wait();  // nobody overwrites a slot before every lane has read
    return y;
}
template <typename T> inline T __shfl_xor_sync(unsigned, T x, int o) { return emu_shfl(x, (threadIdx.x & 31) ^ o); }
template <typename T> inline T __shfl_up_sync(unsigned, T x, int o) {
    int lane = threadIdx.x & 31;
    return emu_shfl(x, lane >= o ? lane - o : lane);
}
template <typename T> inline T __shfl_sync(unsigned, T x, int src) { return emu_shfl(x, src); }
inline unsigned __ballot_sync(unsigned, int pred) {
    unsigned bits = 0;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    g_slot[warp][lane] = pred != 0;
    g_warp_barrier[warp]->arrive_and_wait();
    for (int l = 0; l < 32; l++) bits |= (g_slot[warp][l] ? 1u : 0u) << l;
    g_warp_barrier[warp]->arrive_and_wait();
    return bits;
}
inline int __ffs(unsigned x) { return __builtin_ffs((int) x); }
inline int min(int a, int b) { return a < b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
template <typename T> inline T atomicAdd(T* p, T v) { return std::atomic_ref<T>(*p).fetch_add(v); }
template <typename T> inline T atomicMin(T* p, T v) {
    std::atomic_ref<T> a(*p);
    T o = a.load();
    while (v < o && !a.compare_exchange_weak(o, v)) {}
    return o;
}
template <typename T> inline T atomicMax(T* p, T v) {
    std::atomic_ref<T> a(*p);
    T o = a.load();
    while (v > o && !a.compare_exchange_weak(o, v)) {}
    return o;
}
inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
