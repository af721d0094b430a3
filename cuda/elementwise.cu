// Residual add and gradient accumulation: out = a + b; y += alpha * x.
// fp32 math without fused multiply-add (__fmul_rn/__fadd_rn), so each result is bit-identical to CpuBackend's
// (Java float arithmetic rounds every product and sum); bf16 operands widen exactly and results round once.
#include "common.cuh"

namespace {

struct Add {
    __device__ void operator()(const float* in, float* out) const { out[0] = __fadd_rn(in[0], in[1]); }
};

// y (fp32) += alpha * x (T): x widened, the product and the sum each rounded to fp32 (no FMA), as the CPU does.
template <typename T>
__global__ void axpy_kernel(float* y, float alpha, const T* x, long long n, bool vec) {
    constexpr int N = g4::Pack<float>::N;  // 4 elements a thread: a pack of y, 8 or 16 bytes of x (common.cuh, Vec)
    const long long stride = gridDim.x * (long long) blockDim.x;
    const long long tid = blockIdx.x * (long long) blockDim.x + threadIdx.x;
    const long long packs = vec ? n / N : 0;
    for (long long p = tid; p < packs; p += stride) {
        g4::Vec<T, N> xv = g4::load_vec<N>(x + p * N);
        g4::Pack<float> yv = g4::load_pack(y + p * N);
#pragma unroll
        for (int j = 0; j < N; j++) yv.v[j] = __fadd_rn(yv.v[j], __fmul_rn(alpha, g4::to_f32(xv.v[j])));
        g4::store_pack(y + p * N, yv);
    }
    for (long long i = packs * N + tid; i < n; i += stride) y[i] = __fadd_rn(y[i], __fmul_rn(alpha, g4::to_f32(x[i])));
}

template <typename T>
int axpy(g4_ptr y, float alpha, g4_ptr x, long long n, g4_stream s) {
    if (n <= 0) return 0;
    bool vec = g4::aligned16(y) && g4::aligned16(x);
    long long items = vec ? n / 4 + 4 : n;
    axpy_kernel<T><<<g4::grid_for(items, 256), 256, 0, g4::as_stream(s)>>>(
            reinterpret_cast<float*>(y), alpha, reinterpret_cast<const T*>(x), n, vec);
    return g4::launched();
}

}  // namespace

extern "C" int g4_add(int dtype, g4_ptr out, g4_ptr a, g4_ptr b, long long n, g4_stream s) {
    return g4::launch_map_dt<2, 1>(dtype, {a, b}, {out}, n, Add{}, s);
}

extern "C" int g4_axpy(g4_ptr y, float alpha, int x_dtype, g4_ptr x, long long n, g4_stream s) {
    return x_dtype == G4_BF16 ? axpy<__nv_bfloat16>(y, alpha, x, n, s) : axpy<float>(y, alpha, x, n, s);
}
