// Shared helpers for the grpo4j kernels: launch geometry, bf16 <-> fp32, 16-byte packs, reductions, the device error
// flag. Everything here is header-only; each cuda/*.cu includes it and compiles to its own object.
#pragma once
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "grpo4j_native.h"

namespace g4 {

// ---- launch geometry ---------------------------------------------------------------------------------------------

// Grid for a grid-stride loop over n items: enough blocks to fill any GPU, never more than needed. The cap is a fixed
// number (not the device's SM count) so that a kernel's work split, and any reduction order, is the same on every GPU.
static inline dim3 grid_for(long long n, int threads, long long cap = 65535LL * 8) {
    long long blocks = (n + threads - 1) / threads;
    if (blocks > cap) blocks = cap;
    if (blocks < 1) blocks = 1;
    return dim3((unsigned) blocks);
}

static inline cudaStream_t as_stream(long long s) { return reinterpret_cast<cudaStream_t>(s); }

// Every launcher returns through this: the launch's own error (cudaGetLastError also clears the runtime's last-error
// slot, so a failure is reported once, by the op that caused it).
static inline int launched() { return (int) cudaGetLastError(); }

static inline bool aligned16(long long p) { return (p & 15) == 0; }

// ---- bf16 and fp32 ---------------------------------------------------------------------------------------------
// Loads widen exactly; stores round to nearest even once (the CPU backend's Bf16.fromFloat is bit-identical).

__host__ __device__ inline float to_f32(float x) { return x; }
__host__ __device__ inline float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __host__ __device__ inline T from_f32(float x);
template <> __host__ __device__ inline float from_f32<float>(float x) { return x; }
template <> __host__ __device__ inline __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// ---- fp32 arithmetic without contraction ---------------------------------------------------------------------------
// Where a kernel promises bit-identical results to the CPU backend (Java rounds every float operation), it uses these:
// on the device the _rn intrinsics, which nvcc never fuses into an FMA; on the host plain operators (native/Makefile
// compiles host code with -ffp-contract=off).

#ifdef __CUDA_ARCH__
__device__ inline float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ inline float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ inline float sub_rn(float a, float b) { return __fsub_rn(a, b); }
__device__ inline float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ inline float sqrt_rn(float a) { return __fsqrt_rn(a); }
#else
inline float mul_rn(float a, float b) { return a * b; }
inline float add_rn(float a, float b) { return a + b; }
inline float sub_rn(float a, float b) { return a - b; }
inline float div_rn(float a, float b) { return a / b; }
inline float sqrt_rn(float a) { return sqrtf(a); }
#endif

// ---- vectors and 16-byte packs ------------------------------------------------------------------------------------
// A Vec<T, N> is N consecutive T moved as one access of N * sizeof(T) bytes (ld.global.v2 / v4), aligned to its size.
// A Pack<T> is the 16-byte one (4 fp32 or 8 bf16). Kernels that mix fp32 and bf16 (casts, axpy) move 4 elements a
// thread, a Pack of fp32 and an 8-byte Vec of bf16, as PyTorch's vectorized elementwise kernels do: 8 a thread (a bf16
// Pack, two fp32 Packs 32 bytes apart across the lanes) would let each fp32 request use half of every sector it
// touches (tools/kernel-emu --profile).

template <typename T, int NV>
struct alignas(sizeof(T) * NV) Vec {
    static constexpr int N = NV;
    T v[NV];
};

template <typename T>
using Pack = Vec<T, 16 / sizeof(T)>;

template <int NV, typename T>
__device__ inline Vec<T, NV> load_vec(const T* p) { return *reinterpret_cast<const Vec<T, NV>*>(p); }

template <int NV, typename T>
__device__ inline void store_vec(T* p, const Vec<T, NV>& x) { *reinterpret_cast<Vec<T, NV>*>(p) = x; }

template <typename T>
__device__ inline Pack<T> load_pack(const T* p) { return load_vec<Pack<T>::N>(p); }

template <typename T>
__device__ inline void store_pack(T* p, const Pack<T>& x) { store_vec(p, x); }

// ---- elementwise maps --------------------------------------------------------------------------------------------
// out_o[i] = f(in_0[i], ..., in_{NI-1}[i]) for NO outputs of the same dtype T, computed in fp32 by the functor
// (f(const float* in, float* out)), each output rounded once. With vec (every pointer 16-byte aligned) the bulk moves
// in 16-byte packs and the last n % Pack<T>::N elements go one by one; otherwise every element goes one by one.
// Outputs may alias inputs element for element (each element is read before it is written, by the same thread).

template <typename T, int NI, int NO>
struct MapArgs {
    const T* in[NI];
    T* out[NO];
};

template <typename T, int NI, int NO, typename F>
__global__ void map_kernel(MapArgs<T, NI, NO> a, long long n, bool vec, F f) {
    constexpr int N = Pack<T>::N;
    const long long stride = gridDim.x * (long long) blockDim.x;
    const long long tid = blockIdx.x * (long long) blockDim.x + threadIdx.x;
    const long long packs = vec ? n / N : 0;
    for (long long p = tid; p < packs; p += stride) {
        Pack<T> x[NI], y[NO];
#pragma unroll
        for (int k = 0; k < NI; k++) x[k] = load_pack(a.in[k] + p * N);
#pragma unroll
        for (int j = 0; j < N; j++) {
            float in[NI], out[NO];
#pragma unroll
            for (int k = 0; k < NI; k++) in[k] = to_f32(x[k].v[j]);
            f(in, out);
#pragma unroll
            for (int k = 0; k < NO; k++) y[k].v[j] = from_f32<T>(out[k]);
        }
#pragma unroll
        for (int k = 0; k < NO; k++) store_pack(a.out[k] + p * N, y[k]);
    }
    for (long long i = packs * N + tid; i < n; i += stride) {
        float in[NI], out[NO];
#pragma unroll
        for (int k = 0; k < NI; k++) in[k] = to_f32(a.in[k][i]);
        f(in, out);
#pragma unroll
        for (int k = 0; k < NO; k++) a.out[k][i] = from_f32<T>(out[k]);
    }
}

template <typename T, int NI, int NO, typename F>
static int launch_map(const g4_ptr (&in)[NI], const g4_ptr (&out)[NO], long long n, F f, g4_stream s) {
    if (n <= 0) return 0;
    MapArgs<T, NI, NO> a;
    bool vec = true;
    for (int k = 0; k < NI; k++) { a.in[k] = reinterpret_cast<const T*>(in[k]); vec = vec && aligned16(in[k]); }
    for (int k = 0; k < NO; k++) { a.out[k] = reinterpret_cast<T*>(out[k]); vec = vec && aligned16(out[k]); }
    long long items = vec ? n / Pack<T>::N + Pack<T>::N : n;
    map_kernel<T, NI, NO, F><<<grid_for(items, 256), 256, 0, as_stream(s)>>>(a, n, vec, f);
    return launched();
}

// Dispatches a map on the dtype code (G4_F32 or G4_BF16).
template <int NI, int NO, typename F>
static int launch_map_dt(int dtype, const g4_ptr (&in)[NI], const g4_ptr (&out)[NO], long long n, F f, g4_stream s) {
    return dtype == G4_BF16 ? launch_map<__nv_bfloat16>(in, out, n, f, s) : launch_map<float>(in, out, n, f, s);
}

// ---- reductions ------------------------------------------------------------------------------------------------
// Fixed shuffle trees: the order of additions depends only on the block shape, so results repeat run to run.

template <typename A>
__device__ inline A warp_sum(A x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

// Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the total. Uses 32 A of shared memory.
template <typename A>
__device__ inline A block_sum(A x) {
    __shared__ A part[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    x = warp_sum(x);
    __syncthreads();  // part[] may still be read by a previous call
    if (lane == 0) part[warp] = x;
    __syncthreads();
    A y = lane < warps ? part[lane] : A(0);
    return warp_sum(y);
}

// R sums over the block at once, each by block_sum's tree (so each total is bit-identical to block_sum's), with
// two barriers for all R instead of two each: rows processed R at a time keep R rows of loads in flight.
template <int R, typename A>
__device__ inline void block_sum_n(A (&x)[R]) {
    __shared__ A part[R][32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
    for (int i = 0; i < R; i++) x[i] = warp_sum(x[i]);
    __syncthreads();  // part[] may still be read by a previous call
    if (lane == 0) {
#pragma unroll
        for (int i = 0; i < R; i++) part[i][warp] = x[i];
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < R; i++) x[i] = warp_sum(lane < warps ? part[i][lane] : A(0));
}

// ---- device error flag -------------------------------------------------------------------------------------------
// Index data (ids, positions, slots) that is out of range must not fault the GPU: the kernel skips that element and
// reports here. flag[0] = the op code of the first report (0 = none), flag[1] = element index, flag[2] = the value,
// flag[3] = the limit it broke. The backend reads and clears the flag at its next synchronize and throws naming the
// op. The first report wins (atomicCAS); the details of later ones are dropped.
__device__ inline void report(int* flag, int op, long long index, long long value, long long limit) {
    if (flag == nullptr) return;
    if (atomicCAS(flag, 0, op) == 0) {
        flag[1] = (int) index;
        flag[2] = (int) value;
        flag[3] = (int) limit;
        __threadfence();
    }
}

}  // namespace g4
