// SwiGLU math shared by the kernels (cuda/swiglu.cu) and their host twins (native/hostmath.cu).
//   forward:  out = silu(g) * u,  silu(g) = g * sigmoid(g)
//   backward: dg = dout * u * sigmoid(g) * (1 + g * (1 - sigmoid(g))),  du = dout * silu(g)
// fp32 with expf (CpuBackend evaluates the same formulas in float64; the difference is a few fp32 ulps).
#pragma once
#include <math.h>

namespace g4 {

__host__ __device__ inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

__host__ __device__ inline float swiglu(float g, float u) { return g * sigmoidf(g) * u; }

__host__ __device__ inline void swiglu_backward(float dout, float g, float u, float* dg, float* du) {
    float s = sigmoidf(g);
    *dg = dout * u * s * (1.0f + g * (1.0f - s));
    *du = dout * g * s;
}

}  // namespace g4
