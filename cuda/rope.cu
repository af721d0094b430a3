// Rotary position embedding over x [N, H, D] (rotate_half pairs j, j + D/2), forward and inverse (the backward).
// One block per token: its D/2 cos/sin values are computed once into shared memory, then every head is rotated
// (16-byte vectors where the layout allows: rope_vec_kernel).
// Math in cuda/rope.cuh; bit-identical to CpuBackend.rope except where float64 cos/sin round differently (rare).
// A negative position is skipped (that token's output is not written) and reported through the error flag.
#include "common.cuh"
#include "rope.cuh"

namespace {

// Block blockIdx.x's token: its half cos/sin values into cs ([half] cos, then [half] sin), then a barrier. False (the
// whole block, nothing written) for a negative position, which is reported.
__device__ inline bool token_cos_sin(float* cs, const int* positions, const float* inv_freq, int half, float sign,
                                     int* flag, int op) {
    const int t = blockIdx.x, pos = positions[t];
    if (pos < 0) {
        if (threadIdx.x == 0) g4::report(flag, op, t, pos, 0);
        return false;
    }
    for (int j = threadIdx.x; j < half; j += blockDim.x) g4::rope_cos_sin(pos, inv_freq[j], sign, &cs[j], &cs[half + j]);
    __syncthreads();
    return true;
}

template <typename T>
__global__ void rope_kernel(T* out, const T* x, const int* positions, const float* inv_freq, int h, int d, float sign,
                            int* flag, int op) {
    extern __shared__ float cs[];  // [half] cos, then [half] sin
    const int t = blockIdx.x, half = d / 2;
    if (!token_cos_sin(cs, positions, inv_freq, half, sign, flag, op)) return;
    const long long base = (long long) t * h * d;
    for (int i = threadIdx.x; i < h * half; i += blockDim.x) {
        const int head = i / half, j = i % half;
        const long long a = base + (long long) head * d + j;
        float o1, o2;
        g4::rope_rotate(g4::to_f32(x[a]), g4::to_f32(x[a + half]), cs[j], cs[half + j], &o1, &o2);
        out[a] = g4::from_f32<T>(o1);
        out[a + half] = g4::from_f32<T>(o2);
    }
}

// The vector path (x and out 16-byte aligned, D/2 a multiple of NV = 16 / sizeof(T)): thread v rotates NV consecutive
// pairs of one head with two 16-byte loads and two 16-byte stores, where rope_kernel moves one element a load. A thread
// issues the loads of its K vectors before any store (out may be x itself, and a store would otherwise order the next
// load after it). The first GPU run (H200, 4096 x 32 x 128 bf16) found rope_kernel latency-bound at 40% of the copy
// bandwidth: 20 cycles per issued instruction, DRAM 30% busy. The first round's loads are issued before the token's
// cos/sin (float64 trigonometry, then a barrier: the longest wait of a block), so that the two overlap; at Llama's
// shapes (H x D/2 / NV <= 2 x 256 vectors) that is every load of the block. Same math per element: bit-identical
// results.
template <typename T>
__global__ void rope_vec_kernel(T* out, const T* x, const int* positions, const float* inv_freq, int h, int d,
                                float sign, int* flag, int op) {
    constexpr int NV = 16 / sizeof(T), K = 2;
    extern __shared__ float4 cs4[];  // [half] cos, then [half] sin
    float* cs = reinterpret_cast<float*>(cs4);
    const int t = blockIdx.x, half = d / 2, hv = half / NV, total = h * hv;
    const long long base = (long long) t * h * d;
    g4::Vec<T, NV> x1[K], x2[K];
    long long at[K];
    const auto load = [&](int v0) {
#pragma unroll
        for (int k = 0; k < K; k++) {
            const int v = v0 + threadIdx.x + k * blockDim.x;
            if (v < total) {
                const int head = v / hv, j0 = (v - head * hv) * NV;
                at[k] = base + (long long) head * d + j0;
                x1[k] = g4::load_vec<NV>(x + at[k]);
                x2[k] = g4::load_vec<NV>(x + at[k] + half);
            }
        }
    };
    load(0);
    if (!token_cos_sin(cs, positions, inv_freq, half, sign, flag, op)) return;
    for (int v0 = 0; v0 < total; v0 += K * blockDim.x) {
        if (v0 > 0) load(v0);
#pragma unroll
        for (int k = 0; k < K; k++) {
            const int v = v0 + threadIdx.x + k * blockDim.x;
            if (v < total) {
                const int jv = v % hv, q0 = jv * NV / 4, qs = (half + jv * NV) / 4;
                float c[NV], sn[NV];
                if constexpr (NV == 8) {
                    // two float4 of cos (and of sin) a lane, 32 bytes apart from the next lane's: lanes four vectors
                    // apart would hit the same banks (2-way). Odd groups of four lanes read their pair in the other
                    // order, so each request's eight float4 fall on distinct banks.
                    const int sw = (jv >> 2) & 1;
                    const float4 ca = cs4[q0 + sw], cb = cs4[q0 + 1 - sw], sa = cs4[qs + sw], sb = cs4[qs + 1 - sw];
                    const float4 c0 = sw ? cb : ca, c1 = sw ? ca : cb, s0 = sw ? sb : sa, s1 = sw ? sa : sb;
                    c[0] = c0.x, c[1] = c0.y, c[2] = c0.z, c[3] = c0.w, c[4] = c1.x, c[5] = c1.y, c[6] = c1.z, c[7] = c1.w;
                    sn[0] = s0.x, sn[1] = s0.y, sn[2] = s0.z, sn[3] = s0.w, sn[4] = s1.x, sn[5] = s1.y, sn[6] = s1.z, sn[7] = s1.w;
                } else {
                    const float4 c0 = cs4[q0], s0 = cs4[qs];
                    c[0] = c0.x, c[1] = c0.y, c[2] = c0.z, c[3] = c0.w;
                    sn[0] = s0.x, sn[1] = s0.y, sn[2] = s0.z, sn[3] = s0.w;
                }
                g4::Vec<T, NV> o1, o2;
#pragma unroll
                for (int e = 0; e < NV; e++) {
                    float r1, r2;
                    g4::rope_rotate(g4::to_f32(x1[k].v[e]), g4::to_f32(x2[k].v[e]), c[e], sn[e], &r1, &r2);
                    o1.v[e] = g4::from_f32<T>(r1);
                    o2.v[e] = g4::from_f32<T>(r2);
                }
                g4::store_vec(out + at[k], o1);
                g4::store_vec(out + at[k] + half, o2);
            }
        }
    }
}

template <typename T>
int rope(g4_ptr out, g4_ptr x, g4_ptr positions, g4_ptr inv_freq, int n, int h, int d, int inverse, g4_ptr flag, int op,
         g4_stream s) {
    if (n <= 0 || h <= 0 || d <= 0) return 0;
    int pairs = h * (d / 2);
    constexpr int NV = 16 / sizeof(T);
    const float sign = inverse ? -1.f : 1.f;
    const int* pp = reinterpret_cast<const int*>(positions);
    const float* iv = reinterpret_cast<const float*>(inv_freq);
    int* fl = reinterpret_cast<int*>(flag);
    if (d % 2 == 0 && (d / 2) % NV == 0 && g4::aligned16(out) && g4::aligned16(x)) {
        const int total = pairs / NV, threads = total >= 256 ? 256 : (total + 31) / 32 * 32;
        rope_vec_kernel<T><<<n, threads, d * sizeof(float), g4::as_stream(s)>>>(reinterpret_cast<T*>(out),
                reinterpret_cast<const T*>(x), pp, iv, h, d, sign, fl, op);
        return g4::launched();
    }
    int threads = pairs >= 2048 ? 256 : (pairs >= 256 ? 128 : 32);
    rope_kernel<T><<<n, threads, d * sizeof(float), g4::as_stream(s)>>>(reinterpret_cast<T*>(out),
            reinterpret_cast<const T*>(x), pp, iv, h, d, sign, fl, op);
    return g4::launched();
}

}  // namespace

extern "C" int g4_rope(int dtype, g4_ptr out, g4_ptr x, g4_ptr positions, g4_ptr inv_freq, int n, int h, int d,
                       int inverse, g4_ptr flag, int op, g4_stream s) {
    return dtype == G4_BF16 ? rope<__nv_bfloat16>(out, x, positions, inv_freq, n, h, d, inverse, flag, op, s)
                            : rope<float>(out, x, positions, inv_freq, n, h, d, inverse, flag, op, s);
}
