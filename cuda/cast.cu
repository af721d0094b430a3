// fp32 <-> bf16 casts. fp32 -> bf16 rounds to nearest, ties to even (__float2bfloat16_rn; NaN -> canonical 0x7FFF);
// bf16 -> fp32 is exact (the 16 bits become the high half). CPU twin: CpuBackend.cast / Bf16 (bit-identical).
#include "common.cuh"

namespace {

// Units of 4 elements: one fp32 pack and 8 bytes of bf16, so both sides' warp requests are contiguous.
template <typename D, typename S>
__global__ void cast_kernel(D* dst, const S* src, long long n, bool vec) {
    constexpr int U = 4;
    const long long stride = gridDim.x * (long long) blockDim.x;
    const long long tid = blockIdx.x * (long long) blockDim.x + threadIdx.x;
    const long long units = vec ? n / U : 0;
    for (long long u = tid; u < units; u += stride) {
        g4::Vec<S, U> x = g4::load_vec<U>(src + u * U);
        g4::Vec<D, U> y;
#pragma unroll
        for (int j = 0; j < U; j++) y.v[j] = g4::from_f32<D>(g4::to_f32(x.v[j]));
        g4::store_vec(dst + u * U, y);
    }
    for (long long i = units * U + tid; i < n; i += stride) dst[i] = g4::from_f32<D>(g4::to_f32(src[i]));
}

template <typename D, typename S>
int cast(g4_ptr dst, g4_ptr src, long long n, g4_stream s) {
    if (n <= 0) return 0;
    bool vec = g4::aligned16(dst) && g4::aligned16(src);
    long long items = vec ? n / 4 + 4 : n;
    cast_kernel<D, S><<<g4::grid_for(items, 256), 256, 0, g4::as_stream(s)>>>(
            reinterpret_cast<D*>(dst), reinterpret_cast<const S*>(src), n, vec);
    return g4::launched();
}

}  // namespace

extern "C" int g4_cast(int dst_dtype, g4_ptr dst, int src_dtype, g4_ptr src, long long n, g4_stream s) {
    if (dst_dtype == G4_BF16 && src_dtype == G4_F32) return cast<__nv_bfloat16, float>(dst, src, n, s);
    if (dst_dtype == G4_F32 && src_dtype == G4_BF16) return cast<float, __nv_bfloat16>(dst, src, n, s);
    return (int) cudaErrorInvalidValue;  // same-dtype casts are copies (the backend never calls this for them)
}
