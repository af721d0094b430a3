// The fused LM head's kernels (docs/kernels.md "Fused LM head"): CudaBackend runs the vocabulary in chunks, each a
// cuBLASLt GEMM z = (h W_chunk^T) / T' into an fp32 scratch of [token block, chunk] followed by one of these kernels,
// so the [N, V] logits never exist.
//  - lse_kernel: one block per token row; the chunk's max (order-free), its float64 sum of exp(z - m) (per-thread
//    sums, then common.cuh's fixed tree) merged into the row's running (m, s); captures the target's logit; the last
//    chunk writes lse and the log-prob. Out-of-range targets are reported through the device flag (first chunk) and
//    give a NaN log-prob.
//  - dlogits_kernel: dz = g (1[v = target] - exp(z - lse)) in place (fp32 operands), as a bf16 hi/lo pair (bf16
//    operands, split mode), or as hi = RNE(dz) alone (bf16, single mode: lo is null and never written, a quarter of
//    the kernel's traffic); rows with an out-of-range target get dz = 0 (they contribute no gradient).
//  - grpo_kernel: the per-token GRPO math on the float64 log-probs, one block, the loss summed in a fixed order.
// All deterministic: fixed trees, no atomics.
#include "lmhead.cuh"

namespace {

using namespace g4;
using namespace g4::lmh;

__device__ inline float block_max(float x) {
    __shared__ float part[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    __syncthreads();
    if (lane == 0) part[warp] = x;
    __syncthreads();
    float y = lane < warps ? part[lane] : neg_inf();
    for (int o = 16; o > 0; o >>= 1) y = fmaxf(y, __shfl_xor_sync(0xffffffffu, y, o));
    return y;
}

// dz at element i in the caller's mode: a bf16 hi/lo pair (lo non-null), hi alone, or in place into z (both null).
__device__ inline void store_dz(float dz, float* z, __nv_bfloat16* hi, __nv_bfloat16* lo, long long i) {
    if (lo) split_bf16(dz, &hi[i], &lo[i]);
    else if (hi) hi[i] = __float2bfloat16_rn(dz);
    else z[i] = dz;
}

constexpr int KEEP = 16;  // lse_kernel: chunk columns a thread keeps in registers (BLOCK * KEEP = 4096, CudaBackend's chunk)

__global__ void __launch_bounds__(BLOCK)
lse_kernel(const float* z, int cols, int v0, int vocab, const int* targets, int row0, float* m_st, double* s_st,
           float* zt_st, int first, int last, double* lse_out, double* logp_d, float* logp_f, int* flag, int op) {
    const int r = blockIdx.x, tid = threadIdx.x;
    const float* zr = z + (long long) r * cols;
    const float m_old = first ? neg_inf() : m_st[r];
    // a chunk of up to BLOCK * KEEP columns stays in registers between the max and the sum: one read of the chunk
    // where two were (the first GPU run: 22.9 us per 2048 x 4096 chunk, DRAM 32% busy); the same values in the same
    // order either way
    const bool keep = cols <= BLOCK * KEEP;
    float zv[KEEP];
    float cm = neg_inf();
    if (keep) {
#pragma unroll
        for (int k = 0; k < KEEP; k++) {
            const int j = tid + k * BLOCK;
            zv[k] = j < cols ? zr[j] : neg_inf();
            cm = fmaxf(cm, zv[k]);
        }
    } else {
        for (int j = tid; j < cols; j += BLOCK) cm = fmaxf(cm, zr[j]);
    }
    cm = block_max(cm);
    const float m_new = fmaxf(m_old, cm);
    double part = 0;
    if (keep) {
#pragma unroll
        for (int k = 0; k < KEEP; k++)
            if (tid + k * BLOCK < cols) part = dadd_rn(part, lse_term(zv[k], m_new));
    } else {
        for (int j = tid; j < cols; j += BLOCK) part = dadd_rn(part, lse_term(zr[j], m_new));
    }
    double cs = block_sum(part);
    if (tid == 0) {
        double s = dadd_rn(lse_rescale(first ? 0.0 : s_st[r], m_old, m_new), cs);
        int tgt = targets[r];
        float zt = first ? __int_as_float(0x7fffffff) : zt_st[r];
        if (first && (tgt < 0 || tgt >= vocab)) report(flag, op, row0 + r, tgt, vocab);
        if (tgt >= v0 && tgt < v0 + cols) zt = zr[tgt - v0];
        if (last) {
            double lse = lse_value(m_new, s), lp = dsub_rn((double) zt, lse);
            lse_out[r] = lse;
            if (logp_d) logp_d[r] = lp;
            if (logp_f) logp_f[r] = (float) lp;
        } else {
            m_st[r] = m_new;
            s_st[r] = s;
            zt_st[r] = zt;
        }
    }
}

__global__ void __launch_bounds__(BLOCK)
dlogits_kernel(float* z, int cols, int v0, int vocab, const int* targets, const double* lse, const double* g,
               __nv_bfloat16* hi, __nv_bfloat16* lo) {
    const int r = blockIdx.x;
    const int tgt = targets[r];
    const bool valid = tgt >= 0 && tgt < vocab;
    const double gr = g[r], l = lse[r];
    const long long base = (long long) r * cols;
    if (cols <= BLOCK * KEEP) {
        // all of a thread's loads before its stores: the compiler may not move a load above a store that might alias
        // it (z is written in place, or hi and lo might overlap z), so one element at a time waited on memory each
        // time (the first GPU run: 28 us per 2048 x 4096 chunk, DRAM 35% busy). The same value per element.
        float zv[KEEP];
#pragma unroll
        for (int k = 0; k < KEEP; k++) {
            const int j = threadIdx.x + k * BLOCK;
            zv[k] = j < cols ? z[base + j] : 0.f;
        }
#pragma unroll
        for (int k = 0; k < KEEP; k++) {
            const int j = threadIdx.x + k * BLOCK;
            if (j >= cols) continue;
            const float dz = valid ? dlogit(zv[k], l, gr, v0 + j == tgt) : 0.f;
            store_dz(dz, z, hi, lo, base + j);
        }
        return;
    }
    for (int j = threadIdx.x; j < cols; j += BLOCK) {
        float dz = valid ? dlogit(z[base + j], l, gr, v0 + j == tgt) : 0.f;
        store_dz(dz, z, hi, lo, base + j);
    }
}

__global__ void __launch_bounds__(LOSS_BLOCK)
grpo_kernel(const double* logp, const float* old, const float* ref, const float* adv, const float* w, const int* targets,
            int vocab, int n, double lo, double hi, double beta, int kl, float* loss, float* lp_out, float* ratio,
            float* clipped, float* kl_out, double* g) {
    double part = 0;
    const float nan = __int_as_float(0x7fffffff);
    for (int t = threadIdx.x; t < n; t += LOSS_BLOCK) {
        if (targets[t] < 0 || targets[t] >= vocab) {  // reported by lse_kernel; skipped here
            lp_out[t] = ratio[t] = kl_out[t] = nan;
            clipped[t] = 0.f;
            g[t] = 0;
            continue;
        }
        GrpoTok r = grpo_token(logp[t], old[t], ref[t], adv[t], w[t], lo, hi, beta, kl);
        part = dadd_rn(part, r.term);
        lp_out[t] = (float) logp[t];
        ratio[t] = (float) r.ratio;
        clipped[t] = r.clipped ? 1.f : 0.f;
        kl_out[t] = (float) r.kl;
        g[t] = r.g;
    }
    double total = block_sum(part);
    if (threadIdx.x == 0) loss[0] = (float) total;
}

__global__ void f32_to_f64_kernel(double* dst, const float* src, long long n) {
    for (long long i = blockIdx.x * (long long) blockDim.x + threadIdx.x; i < n; i += gridDim.x * (long long) blockDim.x)
        dst[i] = src[i];
}

}  // namespace

extern "C" int g4_lmhead_lse(g4_ptr z, int rows, int cols, int v0, int vocab, g4_ptr targets, int row0, g4_ptr m,
                             g4_ptr s, g4_ptr zt, int first, int last, g4_ptr lse, g4_ptr logp_d, g4_ptr logp_f,
                             g4_ptr flag, int op, g4_stream st) {
    if (rows <= 0) return 0;
    lse_kernel<<<rows, BLOCK, 0, as_stream(st)>>>(reinterpret_cast<const float*>(z), cols, v0, vocab,
            reinterpret_cast<const int*>(targets), row0, reinterpret_cast<float*>(m), reinterpret_cast<double*>(s),
            reinterpret_cast<float*>(zt), first, last, reinterpret_cast<double*>(lse), reinterpret_cast<double*>(logp_d),
            reinterpret_cast<float*>(logp_f), reinterpret_cast<int*>(flag), op);
    return launched();
}

extern "C" int g4_lmhead_dlogits(g4_ptr z, int rows, int cols, int v0, int vocab, g4_ptr targets, g4_ptr lse, g4_ptr g,
                                 g4_ptr hi, g4_ptr lo, g4_stream st) {
    if (rows <= 0) return 0;
    dlogits_kernel<<<rows, BLOCK, 0, as_stream(st)>>>(reinterpret_cast<float*>(z), cols, v0, vocab,
            reinterpret_cast<const int*>(targets), reinterpret_cast<const double*>(lse), reinterpret_cast<const double*>(g),
            reinterpret_cast<__nv_bfloat16*>(hi), reinterpret_cast<__nv_bfloat16*>(lo));
    return launched();
}

extern "C" int g4_grpo_tokens(g4_ptr logp_d, g4_ptr old, g4_ptr ref, g4_ptr adv, g4_ptr w, g4_ptr targets, int vocab,
                              int n, float eps_low, float eps_high, float beta, int kl, g4_ptr loss, g4_ptr lp,
                              g4_ptr ratio, g4_ptr clipped, g4_ptr kl_out, g4_ptr g, g4_stream st) {
    grpo_kernel<<<1, LOSS_BLOCK, 0, as_stream(st)>>>(reinterpret_cast<const double*>(logp_d),
            reinterpret_cast<const float*>(old), reinterpret_cast<const float*>(ref), reinterpret_cast<const float*>(adv),
            reinterpret_cast<const float*>(w), reinterpret_cast<const int*>(targets), vocab, n, 1.0 - (double) eps_low,
            1.0 + (double) eps_high, (double) beta, kl, reinterpret_cast<float*>(loss), reinterpret_cast<float*>(lp),
            reinterpret_cast<float*>(ratio), reinterpret_cast<float*>(clipped), reinterpret_cast<float*>(kl_out),
            reinterpret_cast<double*>(g));
    return launched();
}

extern "C" int g4_f32_to_f64(g4_ptr dst, g4_ptr src, long long n, g4_stream st) {
    if (n <= 0) return 0;
    f32_to_f64_kernel<<<grid_for(n, 256), 256, 0, as_stream(st)>>>(reinterpret_cast<double*>(dst),
            reinterpret_cast<const float*>(src), n);
    return launched();
}
