// Attention math shared by the kernels (cuda/attention.cu, cuda/decode.cu) and their host twins (native/hostmath.cu):
// the online softmax in the base-2 domain, the merge of partial softmax states (cross-warp and split-KV combine), the
// tile plan over packed sequences, and the checks of index data (cuSeqlens, block tables, context lengths).
//
// Online softmax (FlashAttention-2). For one query row, raw scores s_j = q . k_j arrive tile by tile. With c =
// scale * log2(e) the row keeps m = max_j (c s_j) over the keys seen so far (base-2 units, -inf before any) and
// l = sum_j 2^(c s_j - m), and an unnormalized output o = sum_j w_j v_j with w_j = 2^(c s_j - m). A new tile with
// maximum t moves the maximum to m' = max(m, t); everything kept so far is rescaled by alpha = 2^(m - m') (0 when m is
// -inf), and the tile's keys add w_j = 2^(c s_j - m'). At the end out = o / l and lse = ln(sum_j e^(scale s_j)) =
// m ln 2 + ln l. Two partial states (m1, l1, o1), (m2, l2, o2) over disjoint key sets merge exactly the same way:
// M = max(m1, m2), l = 2^(m1 - M) l1 + 2^(m2 - M) l2, o = 2^(m1 - M) o1 + 2^(m2 - M) o2. An empty state (m = -inf,
// l = 0, o = 0) is neutral.
#pragma once
#include "common.cuh"

namespace g4 {

constexpr float ATT_LOG2E = 1.4426950408889634f;
constexpr float ATT_LN2 = 0.6931471805599453f;

// The reference point for exponentials: a running maximum that is still -inf (no key seen, or all masked) is
// replaced by 0, so that 2^(-inf - ref) = 0 and never NaN.
__host__ __device__ inline float softmax_ref(float m) { return m == -INFINITY ? 0.f : m; }

// 2^x as every attention kernel computes it. On the device one ex2.approx.ftz instruction: FlashAttention's kernels
// (built with --use_fast_math) compute exp2f so, while the default exp2f spends three more instructions a call
// (ex2.approx without .ftz: a compare and two multiplies that keep results below 2^-126 out of the flush), in the
// loops that compute one per score. The same approximation otherwise (max relative error 2^-22.5); the only
// difference is that weights below 2^-126 of the row's maximum become 0. On the host (twins, emulator): exp2f with
// the same flush of results below 2^-126.
__host__ __device__ inline float exp2_ftz(float x) {
#ifdef __CUDA_ARCH__
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
#else
    const float y = exp2f(x);
    return y < 1.17549435e-38f ? 0.f : y;
#endif
}

// alpha = 2^(m_old - m_new): the factor applied to l and o when the running maximum moves from m_old to m_new.
__host__ __device__ inline float softmax_alpha(float m_old, float m_new) { return exp2_ftz(m_old - softmax_ref(m_new)); }

// w = 2^(c s - m) for a raw score s (-inf for a masked key gives 0), one fused multiply-add then exp2.
__host__ __device__ inline float softmax_weight(float s, float c, float m) { return exp2_ftz(fmaf(s, c, -softmax_ref(m))); }

// lse = m ln 2 + ln l (natural log of sum_j e^(scale s_j)).
__host__ __device__ inline float softmax_lse(float m, float l) { return fmaf(m, ATT_LN2, logf(l)); }

// A partial state takes part in a merge when it has weight (l > 0) or is NaN: a NaN or +inf score makes its l NaN, and
// that NaN must reach the output, as on the CPU (a test l > 0 alone dropped the state as if it were empty: a diverged
// model's decode gave finite rows without those keys). An empty state has l = 0; the split workspace's bad-data marker
// is negative.
__host__ __device__ inline bool merge_present(float l) { return l > 0.f || l != l; }

// Merging n partial states (m_i, l_i, o_i): M = max of m_i over the present states (merge_present), then each state's
// factor a_i = 2^(m_i - M) (0 for an empty state, whose o_i is never read: it may be garbage), l = sum a_i l_i and
// o = sum a_i o_i, summed in state order i = 0..n-1 by the caller. (fmaxf passes over a NaN m_i; that state's factor is
// NaN then, and so is the merge.)
__host__ __device__ inline float merge_max(const float* m, const float* l, int n, int stride) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++)
        if (merge_present(l[i * stride])) mx = fmaxf(mx, m[i * stride]);
    return mx;
}

__host__ __device__ inline float merge_factor(float m, float l, float mx) {
    return merge_present(l) ? exp2_ftz(m - softmax_ref(mx)) : 0.f;
}

// ---- the generic kernels' value loop (one warp per row, float64) -----------------------------------------------------

// acc[x] = keep acc[x] + sum_{jj < cnt} w_jj rows[off_jj + x] for x < d, where lane jj holds the weight w_jj and the
// element offset off_jj of its row (a key's V or K row, a query's Q or dOut row). Every lane takes every trip of the x
// loop: the shuffles need the whole warp, and with a head dim that is not a multiple of 32 some lanes have no x in the
// last trip. Per element the products are added in jj order, one fma each.
template <typename T>
__device__ inline void warp_accumulate_rows(double* acc, double keep, double w, long long off, int cnt, const T* rows,
                                            int d, int lane) {
    for (int x0 = 0; x0 < d; x0 += 32) {
        const int x = x0 + lane;
        double o = x < d ? acc[x] * keep : 0.0;
        for (int jj = 0; jj < cnt; jj++) {
            const double wj = __shfl_sync(0xffffffffu, w, jj);
            const long long oj = __shfl_sync(0xffffffffu, off, jj);
            if (x < d) o = fma(wj, (double) to_f32(rows[oj + x]), o);
        }
        if (x < d) acc[x] = o;
    }
}

// ---- tile sizes of the tensor-core kernels (the host twins walk the same tiles) ---------------------------------------

constexpr int ATT_BM = 64;  // query rows per tile of the host twins and of dq_kernel (the forward takes 128: same rows' sums)
constexpr int ATT_BN = 64;  // keys per KV tile (forward, dQ) and per dkdv_kernel block (4 warps x 16)
// Query rows per step of the 64-key dK/dV kernel (dkdv_kernel): 32 at head dim 128 (register budget: dK and dV
// accumulators take 128 of them), 64 at 64. The device runs it at head dim 64, and at 128 where the wide kernels do
// not fit (sm_86, sm_89); elsewhere at 128 dkdv_wide_kernel (128 keys, steps of 64) adds the same terms in the same
// order. The host twin walks these steps at both.
__host__ __device__ inline int att_bwd_step(int d) { return d == 128 ? 32 : 64; }

// ---- tile plan over packed sequences ------------------------------------------------------------------------------

// Report codes: the device flag's op word is op | kind << 8 (| block << 12 for a block-table entry), so the backend
// can name the field (CudaBackend.readFlag). flag[1..3] = index, value, limit as documented per kind.
enum AttentionError {
    ATT_CU_FIRST = 1,  // cuSeqlens[0] != 0:                index 0, value cuSeqlens[0]
    ATT_CU_LAST = 2,   // cuSeqlens[B] != N:                index B, value cuSeqlens[B], limit N
    ATT_CU_ORDER = 3,  // cuSeqlens[i] < cuSeqlens[i - 1]:  index i, value cuSeqlens[i], limit cuSeqlens[i - 1]
    ATT_CTX = 4,       // contextLens[b] outside [1, maxBlocks * blockSize]: index b, value, limit maxBlocks * blockSize
    ATT_TABLE = 5,     // blockTables[b, j] outside [0, numBlocks): index b, value, limit numBlocks; j in bits 12..30
    ATT_PREFIX = 6,    // prefixGroups[g] of decode: index g; bits 12..13 the field (PREFIX_*), bits 14..30 a member offset
};

// The fields of an ATT_PREFIX report (decode's prefix groups, rows (first, count, shared)).
enum PrefixField {
    PREFIX_FIRST = 0,   // first outside [0, B) while count > 0: value first, limit B
    PREFIX_COUNT = 1,   // count < 0 (limit 0) or first + count > B (limit B - first): value count
    PREFIX_SHARED = 2,  // shared outside [0, maxBlocks * blockSize] (member offset 0, limit that), or above the context
                        // length of member m (member offset m + 1, limit contextLens[first + m]): value shared
    PREFIX_OVERLAP = 3, // a sequence in two groups: value the sequence, limit 0
};

// The first problem with cuSeqlens (0 = c[0] <= c[1] <= ... <= c[b] = n), in the CPU backend's order of checks, as a
// priority key: 0 = c[0] != 0, 1 = c[b] != n, 2 + i = c[i] < c[i - 1]; INT_MAX when valid. checked_cu_key(i) is the
// key of the checks that involve entry i alone, so that threads can each take some entries and a min-reduction finds
// the first problem.
__host__ __device__ inline int cu_seqlens_key(const int* cu, int b, int n, int i) {
    int key = 0x7fffffff;
    if (i == 0 && cu[0] != 0) key = 0;
    if (i == b && cu[b] != n) key = key < 1 ? key : 1;
    if (i >= 1 && cu[i] < cu[i - 1]) key = key < 2 + i ? key : 2 + i;
    return key;
}

// The report (kind, index, value, limit) of a problem key from cu_seqlens_key.
__host__ __device__ inline void cu_seqlens_problem(const int* cu, int b, int n, int key, int* out4) {
    if (key == 0) { out4[0] = ATT_CU_FIRST; out4[1] = 0; out4[2] = cu[0]; out4[3] = 0; }
    else if (key == 1) { out4[0] = ATT_CU_LAST; out4[1] = b; out4[2] = cu[b]; out4[3] = n; }
    else { int i = key - 2; out4[0] = ATT_CU_ORDER; out4[1] = i; out4[2] = cu[i]; out4[3] = cu[i - 1]; }
}

// Tiles of `tile` rows covering a sequence of len tokens.
__host__ __device__ inline int tiles_of(int len, int tile) { return (len + tile - 1) / tile; }

// A tile plan entry: the sequence and the tile within it.
struct TileRef {
    int seq;
    int tile;
};

// Where the k-th of a sequence's cnt tiles goes: the heaviest (last, most keys under the causal mask) first, so that
// the long blocks start early and the short ones fill the tail.
__host__ __device__ inline int tile_order(int k, int cnt) { return cnt - 1 - k; }

// ---- decode: split-KV plan and index checks ----------------------------------------------------------------------

constexpr int DEC_TILE = 64;        // keys per KV tile in the decode kernel (4 warps x 16)
constexpr int DEC_PAGE_CAP = 512;   // page indices per split prefetched into shared memory

// The split-KV plan for a decode call: keys per split (a multiple of DEC_TILE) and the number of splits, from the
// largest possible context (maxBlocks * blockSize; the real lengths live on the device) and how many (sequence, kv
// head) blocks there are against the SM count: enough splits to give every SM two blocks, never a split under one tile,
// and few enough pages per split to prefetch them into shared memory (DEC_PAGE_CAP).
__host__ __device__ inline void decode_split_plan(int batch, int hkv, int max_ctx, int block_size, int sms, int* chunk_out,
                                                  int* splits_out) {
    int tiles = (int) (((long long) max_ctx + DEC_TILE - 1) / DEC_TILE);
    if (tiles < 1) tiles = 1;
    long long blocks = (long long) batch * hkv;
    int want = blocks <= 0 || blocks >= 2LL * sms ? 1 : (int) ((2LL * sms + blocks - 1) / blocks);  // (no blocks: no divide)
    if (want > tiles) want = tiles;
    int chunk = (tiles + want - 1) / want * DEC_TILE;
    long long cap = (long long) (DEC_PAGE_CAP - 1) * block_size / DEC_TILE * DEC_TILE;  // pages of [k0, k0 + chunk)
    if (cap < DEC_TILE) cap = DEC_TILE;
    if (chunk > cap) chunk = (int) cap;
    *chunk_out = chunk;
    const long long splits = ((long long) max_ctx + chunk - 1) / chunk;
    *splits_out = splits < 1 ? 1 : (int) splits;
}

// The first problem with sequence b's context length and block-table row (entries 0 .. ceil(ctx / bs) - 1), as a
// priority key: 0 = context length out of range, 1 + j = entry j out of range; INT_MAX when valid. decode_entry_key(j)
// checks entry j alone (for a parallel min-reduction); decode_ctx_ok checks the length.
__host__ __device__ inline bool decode_ctx_ok(int ctx, int max_blocks, int block_size) {
    return ctx >= 1 && (long long) ctx <= (long long) max_blocks * block_size;
}

// The pages (table entries) that `keys` keys of a sequence take: keys / block_size rounded up, without forming
// keys + block_size - 1 (which wraps past 2^31 for a block size near it, and then no entry was checked).
__host__ __device__ inline int decode_pages(int keys, int block_size) { return keys / block_size + (keys % block_size != 0); }

__host__ __device__ inline int decode_entry_key(const int* table_row, int j, int num_blocks) {
    int id = table_row[j];
    return id < 0 || id >= num_blocks ? 1 + j : 0x7fffffff;
}

}  // namespace g4
