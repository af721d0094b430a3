// fill and scale: x[i] = value; x[i] = alpha * x[i] (fp32 math, bf16 rounded once).
// Memory-bound grid-stride loops over 16-byte packs. CPU twins: CpuBackend.fill / CpuBackend.scale (bit-identical).
#include "common.cuh"

namespace {

template <typename T>
__global__ void fill_kernel(T* x, long long n, T value, bool vec) {
    constexpr int N = g4::Pack<T>::N;
    const long long stride = gridDim.x * (long long) blockDim.x;
    const long long tid = blockIdx.x * (long long) blockDim.x + threadIdx.x;
    const long long packs = vec ? n / N : 0;
    g4::Pack<T> p;
#pragma unroll
    for (int j = 0; j < N; j++) p.v[j] = value;
    for (long long q = tid; q < packs; q += stride) g4::store_pack(x + q * N, p);
    for (long long i = packs * N + tid; i < n; i += stride) x[i] = value;
}

template <typename T>
int fill(g4_ptr x, long long n, T value, g4_stream s) {
    if (n <= 0) return 0;
    bool vec = g4::aligned16(x);
    long long items = vec ? n / g4::Pack<T>::N + g4::Pack<T>::N : n;
    fill_kernel<T><<<g4::grid_for(items, 256), 256, 0, g4::as_stream(s)>>>(reinterpret_cast<T*>(x), n, value, vec);
    return g4::launched();
}

struct Scale {
    float alpha;
    __device__ void operator()(const float* in, float* out) const { out[0] = __fmul_rn(alpha, in[0]); }
};

}  // namespace

extern "C" int g4_fill(int dtype, g4_ptr x, long long n, float value, g4_stream s) {
    return dtype == G4_BF16 ? fill<__nv_bfloat16>(x, n, __float2bfloat16_rn(value), s) : fill<float>(x, n, value, s);
}

extern "C" int g4_fill_i32(g4_ptr x, long long n, int value, g4_stream s) { return fill<int>(x, n, value, s); }

extern "C" int g4_scale(int dtype, g4_ptr x, long long n, float alpha, g4_stream s) {
    return g4::launch_map_dt<1, 1>(dtype, {x}, {x}, n, Scale{alpha}, s);
}
