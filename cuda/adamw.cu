// AdamW on a flat fp32 shard in one launch (16-byte packs), with an optional bf16 copy of the updated parameters.
// Bit-identical to CpuBackend.adamW (see cuda/adamw.cuh).
#include "common.cuh"
#include "adamw.cuh"

namespace {

__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, __nv_bfloat16* h, long long n, bool vec,
                             g4::AdamWScalars c) {
    constexpr int N = 4;
    const long long stride = gridDim.x * (long long) blockDim.x;
    const long long tid = blockIdx.x * (long long) blockDim.x + threadIdx.x;
    const long long packs = vec ? n / N : 0;
    for (long long q = tid; q < packs; q += stride) {
        g4::Pack<float> pv = g4::load_pack(p + q * N), gv = g4::load_pack(g + q * N);
        g4::Pack<float> mv = g4::load_pack(m + q * N), vv = g4::load_pack(v + q * N);
#pragma unroll
        for (int j = 0; j < N; j++) g4::adamw_update(pv.v[j], gv.v[j], mv.v[j], vv.v[j], c);
        g4::store_pack(p + q * N, pv);
        g4::store_pack(m + q * N, mv);
        g4::store_pack(v + q * N, vv);
        if (h != nullptr) {
            // 4 bf16 = 8 bytes: one 8-byte store (h is 8-byte aligned when vec)
            __nv_bfloat162 lo = __floats2bfloat162_rn(pv.v[0], pv.v[1]), hi = __floats2bfloat162_rn(pv.v[2], pv.v[3]);
            uint2 bits;
            bits.x = *reinterpret_cast<unsigned*>(&lo);
            bits.y = *reinterpret_cast<unsigned*>(&hi);
            *reinterpret_cast<uint2*>(h + q * N) = bits;
        }
    }
    for (long long i = packs * N + tid; i < n; i += stride) {
        float pp = p[i], mm = m[i], vv = v[i];
        g4::adamw_update(pp, g[i], mm, vv, c);
        p[i] = pp;
        m[i] = mm;
        v[i] = vv;
        if (h != nullptr) h[i] = __float2bfloat16_rn(pp);
    }
}

}  // namespace

extern "C" int g4_adamw(g4_ptr p, g4_ptr g, g4_ptr m, g4_ptr v, g4_ptr bf16_out, long long n, float decay, float beta1,
                        float beta2, float one_minus_beta1, float one_minus_beta2, float step_size, float bc2_sqrt,
                        float eps, float grad_scale, g4_stream s) {
    if (n <= 0) return 0;
    g4::AdamWScalars c{decay, beta1, beta2, one_minus_beta1, one_minus_beta2, step_size, bc2_sqrt, eps, grad_scale};
    bool vec = g4::aligned16(p) && g4::aligned16(g) && g4::aligned16(m) && g4::aligned16(v) && (bf16_out & 7) == 0;
    long long items = vec ? n / 4 + 4 : n;
    adamw_kernel<<<g4::grid_for(items, 256), 256, 0, g4::as_stream(s)>>>(
            reinterpret_cast<float*>(p), reinterpret_cast<const float*>(g), reinterpret_cast<float*>(m),
            reinterpret_cast<float*>(v), reinterpret_cast<__nv_bfloat16*>(bf16_out), n, vec, c);
    return g4::launched();
}
