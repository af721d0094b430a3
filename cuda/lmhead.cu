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
//  - lse_rows_kernel, dlogits_rows_kernel: the same per element on whole rows of [rows, V] logits (CudaBackend's row
//    path, which keeps a token block's logits instead of computing them again for the backward), the chunks walked
//    in order inside the block; dz in place, as fp32 or bf16 packed at the start of each row.
//  - grpo_terms_kernel: the per-token GRPO math on the float64 log-probs (outputs, g, each token's loss term);
//    grpo_sum_kernel: one block, the loss summed in a fixed order.
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

// The online log-sum-exp over one chunk of a row (lse_kernel and lse_rows_kernel): the chunk's max (order-free) and its
// float64 sum of exp(z - m_new) by the fixed tree, merged into the running (m, s). Every thread leaves with m = m_new;
// thread 0 alone holds s and the target's logit zt (captured when the target is in this chunk). A chunk of up to
// BLOCK * KEEP columns is read once, each thread keeping its values in registers between the max and the sum (zv,
// loaded by the caller: the first GPU run measured 22.9 us per 2048 x 4096 chunk, DRAM 32% busy, when it was read
// twice); the same values in the same order either way.
__device__ inline void lse_chunk(const float* zr, const float (&zv)[KEEP], int cols, int v0, int tgt, bool first, float& m,
                                 double& s, float& zt) {
    const int tid = threadIdx.x;
    const bool keep = cols <= BLOCK * KEEP;
    const float m_old = first ? neg_inf() : m;
    float cm = neg_inf();
    if (keep) {
#pragma unroll
        for (int k = 0; k < KEEP; k++) cm = fmaxf(cm, zv[k]);
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
        s = dadd_rn(lse_rescale(first ? 0.0 : s, m_old, m_new), cs);
        if (first) zt = __int_as_float(0x7fffffff);
        if (tgt >= v0 && tgt < v0 + cols) zt = zr[tgt - v0];
    }
    m = m_new;
}

// A thread's KEEP values of a chunk (-inf past its end; nothing read when the chunk is wider than BLOCK * KEEP).
__device__ inline void load_keep(float (&zv)[KEEP], const float* zr, int cols) {
#pragma unroll
    for (int k = 0; k < KEEP; k++) {
        const int j = threadIdx.x + k * BLOCK;
        zv[k] = j < cols && cols <= BLOCK * KEEP ? zr[j] : neg_inf();
    }
}

// dz of a chunk of a row (columns v0 .. v0 + cols) from the thread's KEEP values of it, stored by store_dz at elements
// at + j (j the column in the chunk).
__device__ inline void dz_keep(const float (&zv)[KEEP], int cols, int v0, int tgt, bool valid, double l, double gr,
                               float* z, __nv_bfloat16* hi, __nv_bfloat16* lo, long long at) {
#pragma unroll
    for (int k = 0; k < KEEP; k++) {
        const int j = threadIdx.x + k * BLOCK;
        if (j >= cols) continue;
        const float dz = valid ? dlogit(zv[k], l, gr, v0 + j == tgt) : 0.f;
        store_dz(dz, z, hi, lo, at + j);
    }
}

// Walks a whole row's chunks in order, body(v0, cols, zv) for each with the thread's values of the chunk; the next
// chunk's values are loaded before body runs for this one (chunk <= BLOCK * KEEP).
template <typename F>
__device__ inline void walk_chunks(const float* zr, int vocab, int chunk, F&& body) {
    float zv[KEEP], nx[KEEP];
    load_keep(nx, zr, min(chunk, vocab));
    for (int v0 = 0; v0 < vocab; v0 += chunk) {
#pragma unroll
        for (int k = 0; k < KEEP; k++) zv[k] = nx[k];
        if (v0 + chunk < vocab) load_keep(nx, zr + v0 + chunk, min(chunk, vocab - v0 - chunk));
        body(v0, min(chunk, vocab - v0), zv);
    }
}

// lse and the log-probs from the running state (thread 0).
__device__ inline void lse_finish(float m, double s, float zt, int r, double* lse_out, double* logp_d, float* logp_f) {
    double lse = lse_value(m, s), lp = dsub_rn((double) zt, lse);
    lse_out[r] = lse;
    if (logp_d) logp_d[r] = lp;
    if (logp_f) logp_f[r] = (float) lp;
}

__global__ void __launch_bounds__(BLOCK)
lse_kernel(const float* z, int cols, int v0, int vocab, const int* targets, int row0, float* m_st, double* s_st,
           float* zt_st, int first, int last, double* lse_out, double* logp_d, float* logp_f, int* flag, int op) {
    const int r = blockIdx.x;
    const float* zr = z + (long long) r * cols;
    const int tgt = targets[r];
    float m = first ? neg_inf() : m_st[r], zt = first ? 0.f : zt_st[r];
    double s = first ? 0.0 : s_st[r];
    float zv[KEEP];
    load_keep(zv, zr, cols);
    lse_chunk(zr, zv, cols, v0, tgt, first, m, s, zt);
    if (threadIdx.x == 0) {
        if (first && (tgt < 0 || tgt >= vocab)) report(flag, op, row0 + r, tgt, vocab);
        if (last) {
            lse_finish(m, s, zt, r, lse_out, logp_d, logp_f);
        } else {
            m_st[r] = m;
            s_st[r] = s;
            zt_st[r] = zt;
        }
    }
}

// Whole rows (CudaBackend's row path): row r of z holds all V logits (row stride ld); the block walks its chunks in
// order with lse_chunk, so lse and the log-probs are bit for bit those of lse_kernel over the same chunks. The next
// chunk's values are loaded before this chunk's reductions (chunk <= BLOCK * KEEP).
__global__ void __launch_bounds__(BLOCK, 4)  // 4 blocks an SM: a block of 512 rows is one wave on 132 SMs
lse_rows_kernel(const float* z, long long ld, int vocab, int chunk, const int* targets, int row0, double* lse_out,
                double* logp_d, float* logp_f, int* flag, int op) {
    const int r = blockIdx.x;
    const float* zr = z + (long long) r * ld;
    const int tgt = targets[r];
    if (threadIdx.x == 0 && (tgt < 0 || tgt >= vocab)) report(flag, op, row0 + r, tgt, vocab);
    float m = neg_inf(), zt = 0.f;
    double s = 0.0;
    walk_chunks(zr, vocab, chunk, [&](int v0, int cols, const float (&zv)[KEEP]) {
        lse_chunk(zr + v0, zv, cols, v0, tgt, v0 == 0, m, s, zt);
    });
    if (threadIdx.x == 0) lse_finish(m, s, zt, r, lse_out, logp_d, logp_f);
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
        for (int k = 0; k < KEEP; k++) {  // 0 past the end: load_keep's -inf costs this kernel 9 registers
            const int j = threadIdx.x + k * BLOCK;
            zv[k] = j < cols ? z[base + j] : 0.f;
        }
        dz_keep(zv, cols, v0, tgt, valid, l, gr, z, hi, lo, base);
        return;
    }
    for (int j = threadIdx.x; j < cols; j += BLOCK) {
        float dz = valid ? dlogit(z[base + j], l, gr, v0 + j == tgt) : 0.f;
        store_dz(dz, z, hi, lo, base + j);
    }
}

// dz of whole rows (CudaBackend's row path), in place: row r of z (stride ld floats) holds the V logits; dz overwrites
// them as fp32 (bf16 = 0) or as bf16 packed at the start of the row (bf16 = 1: element v at byte 4 ld r + 2 v, a bf16
// matrix [rows, V] with row stride 2 ld for the GEMMs that follow). The block walks the chunks in order; a chunk's
// bf16 stores land on fp32 elements [floor(v0 / 2), ceil((v0 + cols) / 2)), which every thread has read before this
// chunk's barrier (this chunk when v0 = 0, earlier ones otherwise), and never on a later chunk's. The barrier is
// needed every chunk, not only the first: without it a thread could run chunks ahead of one that has not yet loaded
// the chunk its stores land on. Each element's value is
// dlogits_kernel's (hi of the single mode). The next chunk is loaded before this chunk's stores (chunk <= BLOCK *
// KEEP): it lies past every store of this chunk.
__global__ void __launch_bounds__(BLOCK)
dlogits_rows_kernel(float* z, long long ld, int vocab, int chunk, const int* targets, const double* lse, const double* g,
                    int bf16) {
    const int r = blockIdx.x;
    const int tgt = targets[r];
    const bool valid = tgt >= 0 && tgt < vocab;
    const double gr = g[r], l = lse[r];
    float* zr = z + (long long) r * ld;
    __nv_bfloat16* hr = bf16 ? reinterpret_cast<__nv_bfloat16*>(zr) : nullptr;
    walk_chunks(zr, vocab, chunk, [&](int v0, int cols, const float (&zv)[KEEP]) {
        if (hr) __syncthreads();  // the chunk's loads, every thread's, before its bf16 stores
        dz_keep(zv, cols, v0, tgt, valid, l, gr, zr, hr, nullptr, v0);
    });
}

// The GRPO per-token math, a thread per token: the outputs, the upstream gradient g and the token's loss term (0 and
// NaN outputs for a target outside [0, V), which lse_kernel reported). old == nullptr: on-policy, each token's own
// float64 log-prob is its old one (ratio exactly 1).
__global__ void grpo_terms_kernel(const double* logp, const float* old, const float* ref, const float* adv, const float* w,
                                  const int* targets, int vocab, int n, double lo, double hi, double beta, int kl,
                                  float* lp_out, float* ratio, float* clipped, float* kl_out, double* g, double* term) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n) return;
    if (targets[t] < 0 || targets[t] >= vocab) {
        const float nan = __int_as_float(0x7fffffff);
        lp_out[t] = ratio[t] = kl_out[t] = nan;
        clipped[t] = 0.f;
        g[t] = term[t] = 0;
        return;
    }
    GrpoTok r = grpo_token(logp[t], old ? (double) old[t] : logp[t], ref[t], adv[t], w[t], lo, hi, beta, kl);
    lp_out[t] = (float) logp[t];
    ratio[t] = (float) r.ratio;
    clipped[t] = r.clipped ? 1.f : 0.f;
    kl_out[t] = (float) r.kl;
    g[t] = r.g;
    term[t] = r.term;
}

// loss = the terms of the tokens with a valid target, in a fixed order: thread i adds tokens i, i + LOSS_BLOCK, ...,
// then block_sum's tree (the host twin's emulate_block_sum), whatever launches wrote the terms.
__global__ void __launch_bounds__(LOSS_BLOCK)
grpo_sum_kernel(const double* term, const int* targets, int vocab, int n, float* loss) {
    double part = 0;
    for (int t = threadIdx.x; t < n; t += LOSS_BLOCK)
        if (targets[t] >= 0 && targets[t] < vocab) part = dadd_rn(part, term[t]);
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

extern "C" int g4_lmhead_lse_rows(g4_ptr z, int rows, long long ld, int vocab, int chunk, g4_ptr targets, int row0,
                                  g4_ptr lse, g4_ptr logp_d, g4_ptr logp_f, g4_ptr flag, int op, g4_stream st) {
    if (rows <= 0) return 0;
    if (chunk < 1 || chunk > BLOCK * KEEP || ld < vocab) return (int) cudaErrorInvalidValue;
    lse_rows_kernel<<<rows, BLOCK, 0, as_stream(st)>>>(reinterpret_cast<const float*>(z), ld, vocab, chunk,
            reinterpret_cast<const int*>(targets), row0, reinterpret_cast<double*>(lse), reinterpret_cast<double*>(logp_d),
            reinterpret_cast<float*>(logp_f), reinterpret_cast<int*>(flag), op);
    return launched();
}

extern "C" int g4_lmhead_dlogits_rows(g4_ptr z, int rows, long long ld, int vocab, int chunk, g4_ptr targets, g4_ptr lse,
                                      g4_ptr g, int bf16, g4_stream st) {
    if (rows <= 0) return 0;
    if (chunk < 1 || chunk > BLOCK * KEEP || ld < vocab) return (int) cudaErrorInvalidValue;
    dlogits_rows_kernel<<<rows, BLOCK, 0, as_stream(st)>>>(reinterpret_cast<float*>(z), ld, vocab, chunk,
            reinterpret_cast<const int*>(targets), reinterpret_cast<const double*>(lse), reinterpret_cast<const double*>(g),
            bf16);
    return launched();
}

extern "C" int g4_grpo_terms(g4_ptr logp_d, g4_ptr old, g4_ptr ref, g4_ptr adv, g4_ptr w, g4_ptr targets, int vocab,
                             int n, float eps_low, float eps_high, float beta, int kl, g4_ptr lp, g4_ptr ratio,
                             g4_ptr clipped, g4_ptr kl_out, g4_ptr g, g4_ptr term, g4_stream st) {
    if (n <= 0) return 0;
    grpo_terms_kernel<<<(n + 255) / 256, 256, 0, as_stream(st)>>>(reinterpret_cast<const double*>(logp_d),
            reinterpret_cast<const float*>(old), reinterpret_cast<const float*>(ref), reinterpret_cast<const float*>(adv),
            reinterpret_cast<const float*>(w), reinterpret_cast<const int*>(targets), vocab, n, 1.0 - (double) eps_low,
            1.0 + (double) eps_high, (double) beta, kl, reinterpret_cast<float*>(lp), reinterpret_cast<float*>(ratio),
            reinterpret_cast<float*>(clipped), reinterpret_cast<float*>(kl_out), reinterpret_cast<double*>(g),
            reinterpret_cast<double*>(term));
    return launched();
}

extern "C" int g4_grpo_sum(g4_ptr term, g4_ptr targets, int vocab, int n, g4_ptr loss, g4_stream st) {
    grpo_sum_kernel<<<1, LOSS_BLOCK, 0, as_stream(st)>>>(reinterpret_cast<const double*>(term),
            reinterpret_cast<const int*>(targets), vocab, n, reinterpret_cast<float*>(loss));
    return launched();
}

extern "C" int g4_f32_to_f64(g4_ptr dst, g4_ptr src, long long n, g4_stream st) {
    if (n <= 0) return 0;
    f32_to_f64_kernel<<<grid_for(n, 256), 256, 0, as_stream(st)>>>(reinterpret_cast<double*>(dst),
            reinterpret_cast<const float*>(src), n);
    return launched();
}
