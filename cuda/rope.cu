// Rotary position embedding over x [N, H, D] (rotate_half pairs j, j + D/2), forward and inverse (the backward).
// One block per token: its D/2 cos/sin values are computed once into shared memory, then every head is rotated.
// Math in cuda/rope.cuh; bit-identical to CpuBackend.rope except where float64 cos/sin round differently (rare).
// A negative position is skipped (that token's output is not written) and reported through the error flag.
#include "common.cuh"
#include "rope.cuh"

namespace {

template <typename T>
__global__ void rope_kernel(T* out, const T* x, const int* positions, const float* inv_freq, int h, int d, float sign,
                            int* flag, int op) {
    extern __shared__ float cs[];  // [half] cos, then [half] sin
    const int t = blockIdx.x, half = d / 2;
    const int pos = positions[t];
    if (pos < 0) {
        if (threadIdx.x == 0) g4::report(flag, op, t, pos, 0);
        return;
    }
    for (int j = threadIdx.x; j < half; j += blockDim.x) g4::rope_cos_sin(pos, inv_freq[j], sign, &cs[j], &cs[half + j]);
    __syncthreads();
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

template <typename T>
int rope(g4_ptr out, g4_ptr x, g4_ptr positions, g4_ptr inv_freq, int n, int h, int d, int inverse, g4_ptr flag, int op,
         g4_stream s) {
    if (n <= 0 || h <= 0 || d <= 0) return 0;
    int pairs = h * (d / 2);
    int threads = pairs >= 2048 ? 256 : (pairs >= 256 ? 128 : 32);
    rope_kernel<T><<<n, threads, d * sizeof(float), g4::as_stream(s)>>>(reinterpret_cast<T*>(out),
            reinterpret_cast<const T*>(x), reinterpret_cast<const int*>(positions),
            reinterpret_cast<const float*>(inv_freq), h, d, inverse ? -1.f : 1.f, reinterpret_cast<int*>(flag), op);
    return g4::launched();
}

}  // namespace

extern "C" int g4_rope(int dtype, g4_ptr out, g4_ptr x, g4_ptr positions, g4_ptr inv_freq, int n, int h, int d,
                       int inverse, g4_ptr flag, int op, g4_stream s) {
    return dtype == G4_BF16 ? rope<__nv_bfloat16>(out, x, positions, inv_freq, n, h, d, inverse, flag, op, s)
                            : rope<float>(out, x, positions, inv_freq, n, h, d, inverse, flag, op, s);
}
