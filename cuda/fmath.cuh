// Float helpers shared by the sampling and LM-head kernels and their host twins: arithmetic the device compiler may
// not contract into FMAs (so host and device round identically), bit casts, and exp_f32, an fp32 exp that is
// bit-identical on host and device.
#pragma once
#include "common.cuh"

namespace g4 {

typedef unsigned int u32;
typedef unsigned long long u64;

// ---- arithmetic that the device compiler may not contract (see common.cuh's mul_rn) -------------------------------

#ifdef __CUDA_ARCH__
__device__ inline float fma_rn(float a, float b, float c) { return __fmaf_rn(a, b, c); }
__device__ inline double dadd_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ inline double dsub_rn(double a, double b) { return __dsub_rn(a, b); }
__device__ inline double dmul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ inline double ddiv_rn(double a, double b) { return __ddiv_rn(a, b); }
__device__ inline u32 f2u(float x) { return __float_as_uint(x); }
__device__ inline float u2f(u32 x) { return __uint_as_float(x); }
__device__ inline u64 d2u64_rn(double x) { return __double2ull_rn(x); }
__device__ inline u64 d2u64_rz(double x) { return __double2ull_rz(x); }
#else
inline float fma_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double dadd_rn(double a, double b) { return a + b; }
inline double dsub_rn(double a, double b) { return a - b; }
inline double dmul_rn(double a, double b) { return a * b; }
inline double ddiv_rn(double a, double b) { return a / b; }
inline u32 f2u(float x) { u32 u; memcpy(&u, &x, 4); return u; }
inline float u2f(u32 u) { float x; memcpy(&x, &u, 4); return x; }
inline u64 d2u64_rn(double x) { return (u64) nearbyint(x); }  // default rounding mode: to nearest even
inline u64 d2u64_rz(double x) { return (u64) x; }
#endif

// ---- exp in fp32, bit-identical on host and device ----------------------------------------------------------------
// exp(x) = 2^n exp(r), n = rint(x / ln 2), r = x - n ln2 (Cody-Waite, two fma steps), |r| <= ln2/2; exp(r) by its
// degree-7 Taylor polynomial (truncation < 6e-9 relative, ~0.1 ulp) in Horner form with fma; 2^n applied in two exact
// halves so that only the last multiply rounds. Within 2 ulp of exp (SamplingDeviceMathTest; 0.9 measured). Only fma and multiplies, all
// correctly rounded on both sides, so host and device agree bit for bit (CUDA's expf and glibc's do not).
// Results below 2^-126 are flushed to 0 (x < -87.33): no caller can tell (they are below every fixed-point unit used).
__host__ __device__ inline float exp2i_f32(int e) { return u2f((u32) (e + 127) << 23); }  // 2^e, e in [-126, 127]

__host__ __device__ inline float exp_f32(float x) {
    if (x != x) return x;
    if (x < -87.33f) return 0.f;
    if (x > 88.72f) return u2f(0x7F800000u);
    const float shift = 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer
    float t = fma_rn(x, 1.44269504088896341f, shift);
    float n = sub_rn(t, shift);
    float r = fma_rn(n, -0.693145751953125f, x);       // ln2 high part (16 significant bits: n * it is exact)
    r = fma_rn(n, -1.42860682030941723e-6f, r);        // ln2 - high part
    float p = 1.98412698412698413e-4f;                 // 1/7!
    p = fma_rn(p, r, 1.38888888888888889e-3f);         // 1/6!
    p = fma_rn(p, r, 8.33333333333333333e-3f);         // 1/5!
    p = fma_rn(p, r, 4.16666666666666667e-2f);         // 1/4!
    p = fma_rn(p, r, 1.66666666666666667e-1f);         // 1/3!
    p = fma_rn(p, r, 0.5f);
    p = fma_rn(p, r, 1.f);
    p = fma_rn(p, r, 1.f);
    int e = (int) n, e1 = e / 2;
    return mul_rn(mul_rn(p, exp2i_f32(e1)), exp2i_f32(e - e1));
}

}  // namespace g4
