// Math of the fused LM head (cuda/lmhead.cu) shared with its host twins (native/hostmath.cu): the online log-sum-exp
// update of one row over one vocabulary chunk, the logits' gradient, and the GRPO per-token math of
// grpo-reference.md section 4 (as CpuBackend.grpoLossImpl and KlEstimator compute it).
#pragma once
#include "fmath.cuh"

namespace g4 {
namespace lmh {

constexpr int BLOCK = 256;        // threads per row of a chunk (lse and dlogits kernels)
constexpr int LOSS_BLOCK = 1024;  // the one block of the per-token GRPO kernel

__host__ __device__ inline float neg_inf() { return u2f(0xFF800000u); }

// ---- online log-sum-exp ----------------------------------------------------------------------------------------------
// Row state over the chunks seen so far: m = max z, s = sum exp(z - m) (float64). A chunk with max cm and partial
// sum cs = sum exp(z - m') (m' = max(m, cm)) gives s' = s exp(m - m') + cs. exp in fp32 (exp_f32), sums in float64.

// exp(z - m) of one logit of a chunk, given the new running max m (m = -inf only when every z so far is -inf).
__host__ __device__ inline double lse_term(float z, float m) { return m == neg_inf() ? 0.0 : (double) exp_f32(sub_rn(z, m)); }

__host__ __device__ inline double lse_rescale(double s, float m_old, float m_new) {
    return m_old == neg_inf() ? 0.0 : dmul_rn(s, (double) exp_f32(sub_rn(m_old, m_new)));
}

__host__ __device__ inline double lse_value(float m, double s) { return dadd_rn((double) m, log(s)); }

// ---- backward ------------------------------------------------------------------------------------------------------------
// dz = g (1[v = target] - exp(z - lse)), in fp32; the 1/T' factor is the GEMMs' alpha.
__host__ __device__ inline float dlogit(float z, double lse, double g, bool is_target) {
    float p = exp_f32((float) dsub_rn((double) z, lse));
    return (float) dmul_rn(g, dsub_rn(is_target ? 1.0 : 0.0, (double) p));
}

// A float as hi + lo, both bf16: hi = RNE(x), lo = RNE(x - hi) (x - hi is exact in fp32). With 2^e <= |x|:
// |x - hi| <= 2^(e-8), so lo's rounding is at most half a bf16 ulp of 2^(e-9): |x - hi - lo| <= 2^(e-17) <= 2^-17 |x|
// (reached: tools/kernel-emu measures 7.6e-6 relative). Two bf16 GEMMs over hi and lo then carry dz to ~16
// significant bits where one would carry 8.
__host__ __device__ inline void split_bf16(float x, __nv_bfloat16* hi, __nv_bfloat16* lo) {
    *hi = __float2bfloat16_rn(x);
    *lo = __float2bfloat16_rn(sub_rn(x, __bfloat162float(*hi)));
}

// ---- GRPO per token (grpo-reference.md section 4) -------------------------------------------------------------------------

// Java's Math.max / Math.min (NaN if either is NaN).
__host__ __device__ inline double jmax(double a, double b) { return a != a || b != b ? a + b : (a >= b ? a : b); }
__host__ __device__ inline double jmin(double a, double b) { return a != a || b != b ? a + b : (a <= b ? a : b); }

struct GrpoTok {
    double ratio, kl, term, g;
    bool clipped;
};

// kl: 0..3 = kl1..kl4 (KlEstimator order). lo = 1 - epsLow, hi = 1 + epsHigh (float64 of the float params).
__host__ __device__ inline GrpoTok grpo_token(double logp, double old, float ref, float adv, float w, double lo, double hi,
                                             double beta, int kl) {
    GrpoTok r;
    double a = adv;
    double ratio = exp(dsub_rn(logp, old)); // on-policy (old = logp itself): exp(0) = 1 exactly
    double pg1 = dmul_rn(-a, ratio), pg2 = dmul_rn(-a, jmin(jmax(ratio, lo), hi));
    r.clipped = pg2 > pg1;
    double pg = jmax(pg1, pg2);
    double d_raw = dsub_rn(logp, (double) ref);
    bool clamp_active = d_raw < -40 || d_raw > 40;
    double d = jmin(jmax(d_raw, -40.0), 40.0), dd = clamp_active ? 0.0 : 1.0, k, kg;
    switch (kl) {
        case 0: k = d; kg = dd; break;
        case 1: k = ddiv_rn(dmul_rn(d, d), 2.0); kg = dmul_rn(d, dd); break;
        case 2: k = dadd_rn(expm1(-d), d); kg = dmul_rn(dsub_rn(1.0, exp(-d)), dd); break;
        default: k = dmul_rn(ratio, d); kg = dadd_rn(dmul_rn(ratio, d), dmul_rn(ratio, dd)); break;
    }
    double wt = w;
    r.ratio = ratio;
    r.kl = k;
    r.term = dmul_rn(wt, dadd_rn(pg, dmul_rn(beta, k)));
    double dpg = r.clipped ? 0.0 : dmul_rn(-a, ratio);
    r.g = dmul_rn(wt, dadd_rn(dpg, dmul_rn(beta, kg)));
    return r;
}

// The sum that common.cuh's block_sum computes over LOSS_BLOCK threads' partials, in its exact order: a butterfly
// within each warp (lane i adds lane i^o's value; the add is commutative, so every lane holds the same sum), then the
// same butterfly over the warps' sums. The host twins use it to reproduce the kernels' float64 reductions bit for bit.
inline double emulate_block_sum(const double* part, int threads) {
    double warp[32];
    int warps = threads / 32;
    for (int w = 0; w < 32; w++) {
        if (w >= warps) { warp[w] = 0; continue; }
        double x[32];
        for (int l = 0; l < 32; l++) x[l] = part[w * 32 + l];
        for (int o = 16; o > 0; o >>= 1) {
            double y[32];
            for (int l = 0; l < 32; l++) y[l] = x[l] + x[l ^ o];
            for (int l = 0; l < 32; l++) x[l] = y[l];
        }
        warp[w] = x[0];
    }
    for (int o = 16; o > 0; o >>= 1) {
        double y[32];
        for (int l = 0; l < 32; l++) y[l] = warp[l] + warp[l ^ o];
        for (int l = 0; l < 32; l++) warp[l] = y[l];
    }
    return warp[0];
}

}  // namespace lmh
}  // namespace g4
