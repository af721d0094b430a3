// RoPE math shared by the kernel (cuda/rope.cu) and its host twin (native/hostmath.cu), in CpuBackend.rope's order:
//   angle = fp32(position) * inv_freq[j]            (one fp32 multiply, as HF computes it)
//   c = fp32(cos(angle)), s = sign * fp32(sin(angle))  (float64 cos/sin of the fp32 angle, rounded once; sign = -1
//                                                    for the backward, the inverse rotation)
//   out[j] = x[j]*c - x[j+half]*s;  out[j+half] = x[j+half]*c + x[j]*s   (rotate_half pairs; no FMA)
#pragma once
#include "common.cuh"

namespace g4 {

__host__ __device__ inline void rope_cos_sin(int position, float inv_freq, float sign, float* c, float* s) {
    float angle = mul_rn((float) position, inv_freq);
    *c = (float) cos((double) angle);
    *s = mul_rn(sign, (float) sin((double) angle));
}

__host__ __device__ inline void rope_rotate(float x1, float x2, float c, float s, float* o1, float* o2) {
    *o1 = sub_rn(mul_rn(x1, c), mul_rn(x2, s));
    *o2 = add_rn(mul_rn(x2, c), mul_rn(x1, s));
}

}  // namespace g4
