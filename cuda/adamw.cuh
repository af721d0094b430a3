// AdamW's per-element update (torch semantics), shared by the kernel (cuda/adamw.cu) and its host twin
// (native/hostmath.cu). Every operation is a separately rounded fp32 operation, in the order CpuBackend.adamW
// evaluates it, so GPU and CPU updates are bit-identical given the same host-computed scalars:
//   g *= grad_scale (clipping's coefficient, or 1);  p *= 1 - lr*wd;  m += (1-b1) * (g - m);  v = v*b2 + ((1-b2)*g)*g;  p -= step * (m / (sqrt(v)/sqrt(bc2) + eps))
#pragma once
#include "common.cuh"

namespace g4 {

struct AdamWScalars {
    float decay, beta1, beta2, one_minus_beta1, one_minus_beta2, step_size, bc2_sqrt, eps, grad_scale;
};

__host__ __device__ inline void adamw_update(float& p, float g_in, float& m, float& v, const AdamWScalars& c) {
    float g = mul_rn(c.grad_scale, g_in);
    float pp = mul_rn(p, c.decay);
    float mm = add_rn(m, mul_rn(c.one_minus_beta1, sub_rn(g, m)));
    float vv = add_rn(mul_rn(v, c.beta2), mul_rn(mul_rn(c.one_minus_beta2, g), g));
    float denom = add_rn(div_rn(sqrt_rn(vv), c.bc2_sqrt), c.eps);
    p = sub_rn(pp, mul_rn(c.step_size, div_rn(mm, denom)));
    m = mm;
    v = vv;
}

}  // namespace g4
