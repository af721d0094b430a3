// Decode attention: one query token per sequence against its paged KV cache ([numBlocks, blockSize, Hkv, D]) through
// blockTables [B, maxBlocks] and contextLens [B].
//
// Tensor-core path (bf16 caches, head dim 64 or 128, GQA group <= 16, 16-byte aligned): block = (sequence, kv head,
// split), 4 warps. The group's query heads are the rows of one 16-row mma tile (rows >= group are zero), so each K/V
// tile is read from memory once per group. A split covers `chunk` keys of the context (Flash-Decoding: more splits when
// batch * Hkv leaves SMs idle, see decode_split_plan); its page indices are prefetched into shared memory, then K/V tiles
// of 64 keys stream through shared memory with cp.async double buffering, each warp taking 16 keys of a tile with its
// own online softmax state (P rounded to bf16 for the PV product). The warps' states merge in shared memory; with one
// split that is the output, otherwise (max, sum, unnormalized o) per split go to scratch and a combine kernel merges
// them per (sequence, head).
// Generic path (fp32 caches, other head dims, larger groups): one warp per (sequence, query head), float64 accumulation.
// It also takes plans past the tensor-core path's launch limits: more partial-state slots per (sequence, head) than the
// combine kernel holds in 48 KiB of shared memory (COMBINE_SLOTS_MAX: block tables millions of entries wide), or more
// kv heads than a grid's y dimension (65535).
//
// Shared prefixes (cascade decoding; Hydragen, FlashInfer's cascade attention): prefixGroups [G, 3] rows (first, count,
// shared) say that sequences first .. first + count - 1 attend to their first `shared` keys through sequence first's
// table row (a GRPO step's 16 samples of one prompt share its KV blocks). On the tensor-core path prefix_kernel reads
// those keys once per (group, kv head) for all members' query heads together (64 rows of mma tiles: 16 members x 4
// heads at GQA 4, where the per-sequence kernel fills 4 of its 16 rows), and writes each member's partial state into
// prefix slots (one per prefix block of the pair: with few groups several blocks take strided tiles); decode_kernel
// then covers keys [shared, ctx) only and, with one split, merges those slots into its own state and writes the output
// (no combine); with several the combine merges every slot. The groups
// are checked on the device (a bad row or a sequence in two groups is reported, ATT_PREFIX; the members' outputs are
// not written). Per-sequence marks in the workspace ([B]: the group's row + 1, 0 for none, -1 for a bad row), zeroed at
// the start of each call, carry the groups to the per-sequence kernels. The prefix states' slots start at `pslot`: 0
// when the block writes its output itself (one split: no split slots), after the splits' slots otherwise.
//
// Bad index data never faults: a context length outside [1, maxBlocks * blockSize] or a needed block-table entry
// outside [0, numBlocks) is reported through the device flag (attention.cuh: ATT_CTX, ATT_TABLE) and that sequence's
// output is not written.
#include "common.cuh"
#include "attention.cuh"
#include "mma.cuh"

namespace {

using bf16 = __nv_bfloat16;
constexpr int NT = 128;
constexpr int TK = g4::DEC_TILE;
constexpr int NO_PROBLEM = 0x7fffffff;

struct DecArgs {
    void* out;
    const void *q, *kc, *vc;
    const int *tables, *ctx;
    float* part_o;   // [B * Hq][slots][D]
    float* part_ml;  // [B * Hq][slots][2]: base-2 max, sum (-1: the sequence's index data is bad)
    const int* groups;  // prefix groups [num_groups][3] (first, count, shared), or null
    int* marks;         // [B] with groups: the sequence's group row + 1 (0 none, -1 a bad row)
    int hq, hkv, group, d, bs, max_blocks, num_blocks, chunk, splits;
    int slots;       // partial states per (sequence, head): the splits' (with several), plus the prefix's with groups
    int pslot;       // the first prefix state's slot
    int psplits;     // prefix states per (sequence, head): prefix_kernel's blocks per (group, kv head), strided tiles
    float scale, c;  // c = scale * log2(e)
    int* flag;
    int op;
};

// The smallest of the block's threads' keys (every thread calls it; shared_key is one int of shared memory).
__device__ int block_min_key(int key, int* shared_key) {
    if (threadIdx.x == 0) *shared_key = NO_PROBLEM;
    __syncthreads();
    if (key != NO_PROBLEM) atomicMin(shared_key, key);
    __syncthreads();
    return *shared_key;
}

// The first problem with sequence b's index data (priority key of attention.cuh), found by all threads of the block
// (or of the warp when WARP) together.
template <bool WARP>
__device__ int sequence_problem(const DecArgs& a, int b, int* shared_key) {
    const int ctx = a.ctx[b];
    if (!g4::decode_ctx_ok(ctx, a.max_blocks, a.bs)) return 0;
    const int* row = a.tables + (long long) b * a.max_blocks;
    const int nb = g4::decode_pages(ctx, a.bs);
    const int tid = WARP ? (threadIdx.x & 31) : threadIdx.x, nt = WARP ? 32 : blockDim.x;
    int key = NO_PROBLEM;
    for (int j = tid; j < nb; j += nt) key = min(key, g4::decode_entry_key(row, j, a.num_blocks));
    if (WARP) {
        for (int o = 16; o > 0; o >>= 1) key = min(key, __shfl_xor_sync(0xffffffffu, key, o));
        return key;
    }
    return block_min_key(key, shared_key);
}

__device__ void report_problem(const DecArgs& a, int b, int key) {
    if (key == 0) {
        g4::report(a.flag, a.op | g4::ATT_CTX << 8, b, a.ctx[b], (long long) a.max_blocks * a.bs);
    } else {
        const int j = key - 1;
        g4::report(a.flag, a.op | g4::ATT_TABLE << 8 | min(j, 0x7ffff) << 12, b,
                   a.tables[(long long) b * a.max_blocks + j], a.num_blocks);
    }
}

// One key tile's online-softmax step for a warp's 16 query rows, as C fragments s[NB][4] of NB n-blocks of 8 keys
// (key of n-block nb, element e: kbase + 8 nb + 2 tig + e): keys at or past `limit` masked, the rows' running maxima m
// and sums l (this lane's share) moved on, o rescaled, and s turned into the unnormalized weights P in place.
template <int NB, int ND>
__device__ __forceinline__ void online_softmax_tile(float (&s)[NB][4], float (&o)[ND][4], float (&m)[2], float (&l)[2],
                                                    int kbase, int limit, int tig, float c) {
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nb = 0; nb < NB; nb++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            if (kbase + nb * 8 + tig * 2 + e >= limit) s[nb][e] = s[nb][2 + e] = -INFINITY;
            mx[0] = fmaxf(mx[0], s[nb][e]);
            mx[1] = fmaxf(mx[1], s[nb][2 + e]);
        }
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const float mn = fmaxf(m[i], g4::quad_max(mx[i]) * c);
        const float alpha = g4::softmax_alpha(m[i], mn);
        m[i] = mn;
        l[i] *= alpha;
#pragma unroll
        for (int nd = 0; nd < ND; nd++) {
            o[nd][2 * i] *= alpha;
            o[nd][2 * i + 1] *= alpha;
        }
#pragma unroll
        for (int nb = 0; nb < NB; nb++) {  // s becomes P (unnormalized weights) in place
            s[nb][2 * i] = g4::softmax_weight(s[nb][2 * i], c, mn);
            s[nb][2 * i + 1] = g4::softmax_weight(s[nb][2 * i + 1], c, mn);
            l[i] += s[nb][2 * i];
            l[i] += s[nb][2 * i + 1];
        }
    }
}

// The first problem with prefix group gi (a priority key, NO_PROBLEM when fine), found by all threads of the block:
// 0 count < 0, 1 first outside [0, batch) (count > 0), 2 first + count > batch, 3 shared outside [0, maxBlocks * bs],
// 4 + m member m's context length below shared, 4 + count + j the first sequence's table entry j (< ceil(shared / bs))
// outside [0, numBlocks). An empty row (count 0) and a row sharing nothing (shared 0) have no further checks.
__device__ int group_problem(const DecArgs& a, int gi, int batch, int* shared_key) {
    const int* gr = a.groups + 3LL * gi;
    const int first = gr[0], count = gr[1], shared = gr[2];
    if (count < 0) return 0;
    if (count == 0) return NO_PROBLEM;
    if (first < 0 || first >= batch) return 1;
    if (count > batch - first) return 2;
    if (shared < 0 || (long long) shared > (long long) a.max_blocks * a.bs) return 3;
    if (shared == 0) return NO_PROBLEM;
    const int pages = g4::decode_pages(shared, a.bs);
    const int* row = a.tables + (long long) first * a.max_blocks;
    int key = NO_PROBLEM;
    for (int m = threadIdx.x; m < count; m += blockDim.x)
        if (a.ctx[first + m] < shared) key = min(key, 4 + m);
    for (int j = threadIdx.x; j < pages; j += blockDim.x) {
        const int ek = g4::decode_entry_key(row, j, a.num_blocks);  // 1 + j when bad
        if (ek != NO_PROBLEM) key = min(key, 3 + count + ek);
    }
    return block_min_key(key, shared_key);
}

__device__ void report_group(const DecArgs& a, int gi, int batch, int key) {
    const int* gr = a.groups + 3LL * gi;
    const int first = gr[0], count = gr[1], shared = gr[2];
    const int prefix = a.op | g4::ATT_PREFIX << 8;
    if (key == 0) g4::report(a.flag, prefix | g4::PREFIX_COUNT << 12, gi, count, 0);
    else if (key == 1) g4::report(a.flag, prefix | g4::PREFIX_FIRST << 12, gi, first, batch);
    else if (key == 2) g4::report(a.flag, prefix | g4::PREFIX_COUNT << 12, gi, count, batch - first);
    else if (key == 3) g4::report(a.flag, prefix | g4::PREFIX_SHARED << 12, gi, shared, (long long) a.max_blocks * a.bs);
    else if (key < 4 + count) {
        const int m = key - 4;
        g4::report(a.flag, prefix | g4::PREFIX_SHARED << 12 | min(m + 1, 0x1ffff) << 14, gi, shared, a.ctx[first + m]);
    } else {
        const int j = key - 4 - count;
        g4::report(a.flag, a.op | g4::ATT_TABLE << 8 | min(j, 0x7ffff) << 12, first,
                   a.tables[(long long) first * a.max_blocks + j], a.num_blocks);
    }
}

// Marks group gi's members for the per-sequence kernels (all threads of one block, after group_problem): shared + 1
// and the first sequence, or -1 (with a report) for the members of a bad row and for a sequence already marked.
__device__ void mark_group(const DecArgs& a, int gi, int batch, int key) {
    const int* gr = a.groups + 3LL * gi;
    const int first = gr[0], count = gr[1], shared = gr[2];
    if (key != NO_PROBLEM) {
        if (threadIdx.x == 0) report_group(a, gi, batch, key);
        if (count > 0 && first >= 0 && first < batch)
            for (int m = threadIdx.x; m < min(count, batch - first); m += blockDim.x) atomicExch(a.marks + first + m, -1);
        return;
    }
    if (count <= 0 || shared == 0) return;
    for (int m = threadIdx.x; m < count; m += blockDim.x) {
        const long long b = first + m;
        if (atomicExch(a.marks + b, gi + 1) != 0) {  // another group holds it
            atomicExch(a.marks + b, -1);
            g4::report(a.flag, a.op | g4::ATT_PREFIX << 8 | g4::PREFIX_OVERLAP << 12, gi, b, 0);
        }
    }
}

// The generic path's marks: one block per group.
__global__ void mark_kernel(DecArgs a, int batch) {
    __shared__ int problem;
    const int key = group_problem(a, blockIdx.x, batch, &problem);
    mark_group(a, blockIdx.x, batch, key);
}

// Query rows of a prefix block: 4 warps x 16 (members x the group's query heads).
constexpr int PRE_ROWS = 64;

template <int D>
constexpr int prefix_smem() { return PRE_ROWS * D * 2 + 4 * TK * D * 2; }

// Block = (prefix group, kv head, ps): the group's shared keys (tiles ps, ps + PS, ...: with few groups PS blocks share
// a group's keys, each with a state slot of its own) against the query heads of kv head g of every member, 64
// rows at a time (64 / group members a pass; the K/V tiles of a later pass come from L2), K/V tiles of 64 keys through
// shared memory with cp.async double buffering; each warp owns 16 rows over the whole tile (FlashAttention-2's
// forward: S = Q K^T 16 x 64, online softmax, O += P V with P rounded to bf16). The state (m, l, unnormalized o) of
// each row goes to the member's prefix slot. Blocks of kv head 0 also check the row and mark its members.
template <int D>
__global__ void __launch_bounds__(NT) prefix_kernel(DecArgs a, int batch) {
    constexpr int KD = D / 16, ND = D / 8, NB = TK / 8, C = D / 8;
    const int gi = blockIdx.x, g = blockIdx.y, ps = blockIdx.z, PS = gridDim.z;
    __shared__ int problem;
    const int key = group_problem(a, gi, batch, &problem);
    if (g == 0 && ps == 0) mark_group(a, gi, batch, key);
    const int* gr = a.groups + 3LL * gi;
    const int first = gr[0], count = gr[1], shared = gr[2];
    if (key != NO_PROBLEM || count <= 0 || shared == 0) return;
    // this block's tiles of the shared keys: ps, ps + PS, ... (with few groups, PS blocks share a group's keys)
    const int all = (shared + TK - 1) / TK, ntiles = all > ps ? (all - ps + PS - 1) / PS : 0;
    if (ntiles == 0) {  // no tile of its own: an empty state in its slot for every row of the group
        for (int r = threadIdx.x; r < count * a.group; r += NT) {
            const long long pr = ((long long) (first + r / a.group) * a.hq + g * a.group + r % a.group) * a.slots + a.pslot + ps;
            a.part_ml[pr * 2] = -INFINITY;
            a.part_ml[pr * 2 + 1] = 0.f;
        }
        return;
    }
    extern __shared__ __align__(128) unsigned char smem[];
    const unsigned sQ = g4::smem_u32(smem), sK = sQ + PRE_ROWS * D * 2, sV = sK + 2 * TK * D * 2;
    const int* row = a.tables + (long long) first * a.max_blocks;
    const bf16 *Q = static_cast<const bf16*>(a.q), *KC = static_cast<const bf16*>(a.kc), *VC = static_cast<const bf16*>(a.vc);
    const auto load_kv = [&](int tile, int stage) {
#pragma unroll
        for (int it = 0; it < TK * C / NT; it++) {
            const int i = it * NT + threadIdx.x, r = i / C, c = i % C, key = (ps + tile * PS) * TK + r;
            const bool ok = key < shared;
            const long long slot = ok ? (long long) row[key / a.bs] * a.bs + key % a.bs : 0;
            const long long off = (slot * a.hkv + g) * D + c * 8;
            g4::cp_async16(sK + stage * TK * D * 2 + g4::swz<D>(r, c * 8), KC + off, ok);
            g4::cp_async16(sV + stage * TK * D * 2 + g4::swz<D>(r, c * 8), VC + off, ok);
        }
    };
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
    const int per = PRE_ROWS / a.group;
    for (int m0 = 0; m0 < count; m0 += per) {
        const int rows = min(count - m0, per) * a.group;  // row r: member m0 + r / group, query head g * group + r % group
        for (int i = threadIdx.x; i < PRE_ROWS * C; i += NT) {
            const int r = i / C, c = i % C;
            const bool ok = r < rows;
            const long long qrow = ok ? (long long) (first + m0 + r / a.group) * a.hq + g * a.group + r % a.group : 0;
            g4::cp_async16(sQ + g4::swz<D>(r, c * 8), Q + qrow * D + c * 8, ok);
        }
        load_kv(0, 0);
        g4::cp_async_commit();
        const bool active = warp * 16 < rows;  // a warp whose 16 rows are all past the members computes nothing
        unsigned qf[KD][4];
        float o[ND][4];
#pragma unroll
        for (int i = 0; i < ND; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
        float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
        for (int j = 0; j < ntiles; j++) {
            const int st = j & 1;
            if (j + 1 < ntiles) load_kv(j + 1, st ^ 1);
            g4::cp_async_commit();
            g4::cp_async_wait<1>();
            __syncthreads();
            if (active) {
                const int ln = g4::lane_id();
                if (j == 0) {
#pragma unroll
                    for (int kk = 0; kk < KD; kk++) g4::ldsm_x4(qf[kk], sQ + g4::frag_a<D>(warp * 16, kk * 16, ln));
                }
                const unsigned kb = sK + st * TK * D * 2, vb = sV + st * TK * D * 2;
                float s[NB][4];
#pragma unroll
                for (int i = 0; i < NB; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
                for (int kk = 0; kk < KD; kk++)
#pragma unroll
                    for (int n2 = 0; n2 < NB / 2; n2++) {
                        unsigned bf[4];
                        g4::ldsm_x4(bf, kb + g4::frag_bt<D>(n2 * 16, kk * 16, ln));
                        g4::mma_bf16(s[2 * n2], qf[kk], bf[0], bf[1]);
                        g4::mma_bf16(s[2 * n2 + 1], qf[kk], bf[2], bf[3]);
                    }
                online_softmax_tile(s, o, m, l, (ps + j * PS) * TK, shared, tig, a.c);
#pragma unroll
                for (int kk = 0; kk < TK / 16; kk++) {  // 16 keys per k-step of O += P V
                    unsigned pa[4];
                    g4::c_to_a(pa, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
                    for (int n2 = 0; n2 < ND / 2; n2++) {
                        unsigned bf[4];
                        g4::ldsm_x4_t(bf, vb + g4::frag_b<D>(kk * 16, n2 * 16, ln));
                        g4::mma_bf16(o[2 * n2], pa, bf[0], bf[1]);
                        g4::mma_bf16(o[2 * n2 + 1], pa, bf[2], bf[3]);
                    }
                }
            }
            __syncthreads();  // the stage just read is the next iteration's copy target
        }
        if (active) {
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const float li = g4::quad_sum(l[i]);
                const int r = warp * 16 + gid + 8 * i;
                if (r < rows) {
                    const long long prow = (long long) (first + m0 + r / a.group) * a.hq + g * a.group + r % a.group;
                    const long long pr = prow * a.slots + a.pslot + ps;
#pragma unroll
                    for (int nd = 0; nd < ND; nd++)
                        *reinterpret_cast<float2*>(a.part_o + pr * D + nd * 8 + tig * 2) = make_float2(o[nd][2 * i], o[nd][2 * i + 1]);
                    if (tig == 0) {
                        a.part_ml[pr * 2] = m[i];
                        a.part_ml[pr * 2 + 1] = li;
                    }
                }
            }
        }
        // the next pass's Q copy overwrites sQ: every warp has read it (its first tile's barrier); the K/V stages are
        // free after the loop's last barrier
    }
}

template <int D>
constexpr int decode_smem() { return 16 * D * 2 + 4 * TK * D * 2 + g4::DEC_PAGE_CAP * 4; }

template <int D>
__global__ void __launch_bounds__(NT) decode_kernel(DecArgs a) {
    constexpr int KD = D / 16, ND = D / 8;
    const int b = blockIdx.x, g = blockIdx.y, split = blockIdx.z, h0 = g * a.group;
    __shared__ int problem;
    const int key = sequence_problem<false>(a, b, &problem);
    const long long prow = (long long) b * a.hq + h0;  // first partial row of this group
    if (key != NO_PROBLEM) {
        if (threadIdx.x == 0) report_problem(a, b, key);
        if (a.splits > 1 && (int) threadIdx.x < a.group) a.part_ml[((prow + threadIdx.x) * a.slots + split) * 2 + 1] = -1.f;
        return;
    }
    // With one split the block writes the output itself, merging the prefix slot (prefix_kernel's state of the
    // shared keys) into its own; with several, each split writes its slot and the combine merges them all.
    const bool direct = a.splits == 1;
    int start = 0;  // keys before it come from the sequence's prefix group (prefix_kernel's slot)
    if (a.marks) {
        const int mk = a.marks[b];
        if (mk < 0 && direct) return;  // a bad prefix group (reported by prefix_kernel): not written
        if (!direct && split == 0 && mk <= 0)  // the prefix slots of a sequence in no group or a bad one
            for (int i = threadIdx.x; i < a.group * a.psplits; i += NT) {
                float* pml = a.part_ml + ((prow + i % a.group) * a.slots + a.pslot + i / a.group) * 2;
                if (mk < 0) pml[1] = -1.f;
                else pml[0] = -INFINITY, pml[1] = 0.f;
            }
        if (mk > 0) start = a.groups[3LL * (mk - 1) + 2];
    }
    // in 64 bits: start + split * chunk can pass 2^31 in a table of that many keys; past the context, an empty split
    const int ctx = a.ctx[b];
    const long long k0l = (long long) start + (long long) split * a.chunk;
    const int k0 = (int) min(k0l, (long long) ctx), k1 = (int) min(k0l + a.chunk, (long long) ctx);
    // a split past this context (several splits only: a direct block with no keys of its own, all of them shared,
    // still merges the prefix state and writes the output): an empty state
    if (k0 >= k1 && !direct) {
        if ((int) threadIdx.x < a.group) {
            a.part_ml[((prow + threadIdx.x) * a.slots + split) * 2] = -INFINITY;
            a.part_ml[((prow + threadIdx.x) * a.slots + split) * 2 + 1] = 0.f;
        }
        return;
    }
    extern __shared__ __align__(128) unsigned char smem[];
    const unsigned sQ = g4::smem_u32(smem), sK = sQ + 16 * D * 2, sV = sK + 2 * TK * D * 2;
    int* spage = reinterpret_cast<int*>(smem + 16 * D * 2 + 4 * TK * D * 2);
    const int* row = a.tables + (long long) b * a.max_blocks;
    const int p0 = k0 / a.bs, np = (k1 - 1) / a.bs - p0 + 1;  // np <= DEC_PAGE_CAP by the split plan
    for (int i = threadIdx.x; i < np; i += NT) spage[i] = row[p0 + i];
    const bf16 *KC = static_cast<const bf16*>(a.kc), *VC = static_cast<const bf16*>(a.vc);
    g4::load_tile<16, D, NT>(sQ, static_cast<const bf16*>(a.q) + prow * D, D, a.group);
    __syncthreads();  // spage
    auto load_kv = [&](int tile, int stage) {
        constexpr int C = D / 8;
        const int kb = k0 + tile * TK;
#pragma unroll
        for (int it = 0; it < TK * C / NT; it++) {
            const int i = it * NT + threadIdx.x, r = i / C, c = i % C, key = kb + r;
            const bool ok = key < k1;
            const long long slot = ok ? (long long) spage[key / a.bs - p0] * a.bs + key % a.bs : 0;
            const long long off = (slot * a.hkv + g) * D + c * 8;
            g4::cp_async16(sK + stage * TK * D * 2 + g4::swz<D>(r, c * 8), KC + off, ok);
            g4::cp_async16(sV + stage * TK * D * 2 + g4::swz<D>(r, c * 8), VC + off, ok);
        }
    };
    load_kv(0, 0);
    g4::cp_async_commit();

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
    const int ntiles = (k1 - k0 + TK - 1) / TK;
    unsigned qf[KD][4];
    float o[ND][4];
#pragma unroll
    for (int i = 0; i < ND; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
    for (int j = 0; j < ntiles; j++) {
        const int st = j & 1;
        if (j + 1 < ntiles) load_kv(j + 1, st ^ 1);
        g4::cp_async_commit();
        g4::cp_async_wait<1>();
        __syncthreads();
        const int ln = g4::lane_id();
        if (j == 0) {
#pragma unroll
            for (int kk = 0; kk < KD; kk++) g4::ldsm_x4(qf[kk], sQ + g4::frag_a<D>(0, kk * 16, ln));
        }
        const unsigned kb = sK + st * TK * D * 2, vb = sV + st * TK * D * 2;
        float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
        for (int kk = 0; kk < KD; kk++) {
            unsigned bf[4];
            g4::ldsm_x4(bf, kb + g4::frag_bt<D>(warp * 16, kk * 16, ln));
            g4::mma_bf16(s[0], qf[kk], bf[0], bf[1]);
            g4::mma_bf16(s[1], qf[kk], bf[2], bf[3]);
        }
        online_softmax_tile(s, o, m, l, k0 + j * TK + warp * 16, k1, tig, a.c);
        unsigned pa[4];  // P (16 rows x the warp's 16 keys) as the A operand of O += P V
        g4::c_to_a(pa, s[0], s[1]);
#pragma unroll
        for (int n2 = 0; n2 < ND / 2; n2++) {
            unsigned bf[4];
            g4::ldsm_x4_t(bf, vb + g4::frag_b<D>(warp * 16, n2 * 16, ln));
            g4::mma_bf16(o[2 * n2], pa, bf[0], bf[1]);
            g4::mma_bf16(o[2 * n2 + 1], pa, bf[2], bf[3]);
        }
        __syncthreads();
    }

    // merge the four warps' states: o as fp32 [warp][row][MS] over the K/V buffers, (m, l) [warp][row] over spage.
    // Rows MS = D + 8 floats apart start 8 banks apart, so a warp's float2 stores (a quad's 8 columns in each of up to
    // 8 rows) take the fewest wavefronts (a row stride of D put every row on the same 8 banks: 4-way conflicts at a
    // group of 4, 8-way at 8; tools/kernel-emu --profile). 64 rows of MS floats fit in the K/V buffers.
    constexpr int MS = D + 8;
    static_assert(64 * MS * 4 <= 4 * TK * D * 2, "the merge buffer fits over the K/V tiles");
    if (ntiles == 0) {  // a direct block with every key shared: its first (empty) tile's copies land before the merge
        g4::cp_async_wait<0>();
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 2; i++) l[i] = g4::quad_sum(l[i]);
    float* mo = reinterpret_cast<float*>(smem + 16 * D * 2);
    float* ml = reinterpret_cast<float*>(spage);
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int r = gid + 8 * i;
        if (r < a.group) {
#pragma unroll
            for (int nd = 0; nd < ND; nd++)
                *reinterpret_cast<float2*>(mo + (warp * 16 + r) * MS + nd * 8 + tig * 2) =
                    make_float2(o[nd][2 * i], o[nd][2 * i + 1]);
            if (tig == 0) {
                ml[(warp * 16 + r) * 2] = m[i];
                ml[(warp * 16 + r) * 2 + 1] = l[i];
            }
        }
    }
    __syncthreads();
    const bool prefix = direct && start > 0;
    for (int i = threadIdx.x; i < a.group * D; i += NT) {
        const int r = i / D, x = i % D;
        float mx = g4::merge_max(ml + r * 2, ml + r * 2 + 1, 4, 16 * 2);
        const long long ps = (prow + r) * a.slots + a.pslot;  // the prefix states' slots (direct blocks in a group)
        if (prefix) mx = fmaxf(mx, g4::merge_max(a.part_ml + ps * 2, a.part_ml + ps * 2 + 1, a.psplits, 2));
        float sum = 0.f, acc = 0.f;
#pragma unroll
        for (int w = 0; w < 4; w++) {
            const float lw = ml[(w * 16 + r) * 2 + 1];
            if (g4::merge_present(lw)) {
                const float f = g4::merge_factor(ml[(w * 16 + r) * 2], lw, mx);
                sum = fmaf(f, lw, sum);
                acc = fmaf(f, mo[(w * 16 + r) * MS + x], acc);
            }
        }
        if (prefix)
            for (int k = 0; k < a.psplits; k++) {
                const float pl = a.part_ml[(ps + k) * 2 + 1];
                if (g4::merge_present(pl)) {
                    const float f = g4::merge_factor(a.part_ml[(ps + k) * 2], pl, mx);
                    sum = fmaf(f, pl, sum);
                    acc = fmaf(f, a.part_o[(ps + k) * D + x], acc);
                }
            }
        if (direct) {
            static_cast<bf16*>(a.out)[(prow + r) * D + x] = __float2bfloat16_rn(acc / sum);
        } else {
            const long long pr = (prow + r) * a.slots + split;
            a.part_o[pr * D + x] = acc;
            if (x == 0) {
                a.part_ml[pr * 2] = mx;
                a.part_ml[pr * 2 + 1] = sum;
            }
        }
    }
}

// out[b, h] = merge of the slots' partial states (the splits', then the prefix's); nothing when the sequence's index
// data (or its prefix group) was bad.
template <typename T>
__global__ void combine_kernel(DecArgs a) {
    extern __shared__ float factor[];  // [slots]
    __shared__ float total;
    const long long row = blockIdx.x;
    const float* ml = a.part_ml + row * a.slots * 2;
    for (int s = 0; s < a.slots; s++)
        if (ml[s * 2 + 1] < 0.f) return;
    const float mx = g4::merge_max(ml, ml + 1, a.slots, 2);
    for (int s = threadIdx.x; s < a.slots; s += blockDim.x) factor[s] = g4::merge_factor(ml[s * 2], ml[s * 2 + 1], mx);
    __syncthreads();
    if (threadIdx.x == 0) {
        float sum = 0.f;
        for (int s = 0; s < a.slots; s++)
            if (g4::merge_present(ml[s * 2 + 1])) sum = fmaf(factor[s], ml[s * 2 + 1], sum);
        total = sum;
    }
    __syncthreads();
    for (int x = threadIdx.x; x < a.d; x += blockDim.x) {
        float acc = 0.f;
        for (int s = 0; s < a.slots; s++)
            if (g4::merge_present(ml[s * 2 + 1])) acc = fmaf(factor[s], a.part_o[(row * a.slots + s) * a.d + x], acc);
        static_cast<T*>(a.out)[row * a.d + x] = g4::from_f32<T>(acc / total);
    }
}

// Generic path: one warp per (sequence, query head), lanes over 32 keys at a time, float64 accumulation.
template <typename T>
__global__ void gen_decode_kernel(DecArgs a, int batch) {
    extern __shared__ double gsm[];
    const int W = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31, d = a.d;
    const long long row = (long long) blockIdx.x * W + warp;
    if (row >= (long long) batch * a.hq) return;
    const int b = (int) (row / a.hq), h = (int) (row % a.hq), g = h / a.group;
    const int key = sequence_problem<true>(a, b, nullptr);
    if (key != NO_PROBLEM) {
        if (lane == 0) report_problem(a, b, key);
        return;
    }
    int shared = 0;  // keys below it through the prefix group's first sequence's table row
    const int* tr = a.tables + (long long) b * a.max_blocks;
    const int* lr = tr;
    if (a.marks) {
        const int mk = a.marks[b];
        if (mk < 0) return;  // a bad prefix group (reported by mark_kernel)
        if (mk > 0) shared = a.groups[3LL * (mk - 1) + 2], lr = a.tables + (long long) a.groups[3LL * (mk - 1)] * a.max_blocks;
    }
    double* acc = gsm + (long long) warp * d;
    float* qv = reinterpret_cast<float*>(gsm + (long long) W * d) + (long long) warp * d;
    const T *Q = static_cast<const T*>(a.q), *KC = static_cast<const T*>(a.kc), *VC = static_cast<const T*>(a.vc);
    for (int x = lane; x < d; x += 32) {
        qv[x] = g4::to_f32(Q[row * d + x]);
        acc[x] = 0;
    }
    __syncwarp();
    const int ctx = a.ctx[b];
    double m = -INFINITY, l = 0;
    for (int j0 = 0; j0 < ctx; j0 += 32) {
        const int j = j0 + lane, cnt = min(32, ctx - j0);
        long long base = 0;  // element offset of key j's (kv head g) row
        double s = -INFINITY;
        if (j < ctx) {
            base = (((long long) (j < shared ? lr : tr)[j / a.bs] * a.bs + j % a.bs) * a.hkv + g) * d;
            double dot = 0;
            for (int x = 0; x < d; x++) dot = fma((double) qv[x], (double) g4::to_f32(KC[base + x]), dot);
            s = dot * (double) a.scale;
        }
        double mx = s;
        for (int o = 16; o > 0; o >>= 1) mx = fmax(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        const double mn = fmax(m, mx);
        const double alpha = exp(m - mn), p = j < ctx ? exp(s - mn) : 0.0;
        l = l * alpha + g4::warp_sum(p);
        g4::warp_accumulate_rows(acc, alpha, p, base, cnt, VC, d, lane);
        m = mn;
    }
    T* O = static_cast<T*>(a.out);
    for (int x = lane; x < d; x += 32) O[row * d + x] = g4::from_f32<T>((float) (acc[x] / l));
}

// The largest context the block tables can describe, maxBlocks * blockSize (clamped to int: contextLens are int32).
static int max_context(int max_blocks, int block_size) {
    const long long m = (long long) max_blocks * block_size;
    return m > 0x7fffffffLL ? 0x7fffffff : (int) m;
}

template <int D>
static int decode_fast(const DecArgs& a, int batch, int num_groups, cudaStream_t st) {
    int e;
    if (a.groups) {
        constexpr int psmem = prefix_smem<D>();
        if ((e = (int) cudaFuncSetAttribute(prefix_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, psmem))) return e;
        prefix_kernel<D><<<dim3(num_groups, a.hkv, a.psplits), NT, psmem, st>>>(a, batch);
        if ((e = g4::launched())) return e;
    }
    constexpr int smem = decode_smem<D>();
    if ((e = (int) cudaFuncSetAttribute(decode_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem))) return e;
    decode_kernel<D><<<dim3(batch, a.hkv, a.splits), NT, smem, st>>>(a);
    if ((e = g4::launched()) || a.splits == 1) return e;
    combine_kernel<bf16><<<batch * a.hq, D, a.slots * sizeof(float), st>>>(a);
    return g4::launched();
}

// The combine kernel's factors live in shared memory, one float a slot, under the 48 KiB a launch gets without
// cudaFuncSetAttribute (less its own `total`): a plan with more slots goes to the generic path instead. Only block
// tables millions of entries wide get there (pages of one key: 448 keys a split, so 5.4M keys of table).
constexpr int COMBINE_SLOTS_MAX = 12000;
constexpr int GRID_Y_MAX = 65535;

// Whether the tensor-core launches of a plan fit CUDA's limits: decode_kernel's grid (batch, hkv, splits) and
// prefix_kernel's (groups, hkv, psplits), the combine kernel's slots.
static bool fast_plan_fits(int hkv, int splits, int slots) {
    return hkv <= GRID_Y_MAX && splits <= GRID_Y_MAX && slots <= COMBINE_SLOTS_MAX;
}

// The workspace: the marks ([b] ints, with groups) rounded up to 256 bytes, then the partial states when a
// (sequence, head) has more than one slot.
static long long marks_bytes(int b, bool groups) { return groups ? ((long long) b * 4 + 255) / 256 * 256 : 0; }

// Blocks per (group, kv head) of prefix_kernel: with fewer (group, kv head) pairs than SMs, enough that the groups'
// keys are spread over about two blocks an SM (at most PRE_SPLITS_MAX, each taking every PS-th tile).
constexpr int PRE_SPLITS_MAX = 8;
static int prefix_splits(int num_groups, int hkv, int sms) {
    const long long blocks = (long long) num_groups * hkv;
    if (num_groups <= 0 || blocks >= sms) return 1;
    return (int) min((long long) PRE_SPLITS_MAX, (2LL * sms + blocks - 1) / blocks);
}

// The split plan and the partial-state slots per (sequence, head): none with one split and no groups (the block writes
// the output), the prefix's alone (slots 0 .. psplits - 1) with one split and groups, else the splits' then the
// prefix's (from slot splits).
static int decode_slots(int b, int hkv, int max_blocks, int block_size, int sms, int num_groups, int* chunk, int* splits,
                        int* pslot, int* psplits) {
    g4::decode_split_plan(b, hkv, max_context(max_blocks, block_size), block_size, sms, chunk, splits);
    *psplits = num_groups > 0 ? prefix_splits(num_groups, hkv, sms) : 0;
    *pslot = *splits == 1 ? 0 : *splits;
    return (*splits == 1 ? 0 : *splits) + *psplits;
}

}  // namespace

extern "C" int g4_decode_attention_workspace(int b, int hq, int hkv, int d, int max_blocks, int block_size, int sms,
                                             int num_groups, long long* bytes) {
    int chunk, splits, pslot, psplits;
    const int slots = decode_slots(b, hkv, max_blocks, block_size, sms, num_groups, &chunk, &splits, &pslot, &psplits);
    // (a plan the tensor-core path cannot launch runs on the generic path: marks only)
    *bytes = marks_bytes(b, num_groups > 0) + (fast_plan_fits(hkv, splits, slots) ? (long long) b * hq * slots * (d + 2) * 4 : 0);
    return 0;
}

extern "C" int g4_decode_attention(int dtype, g4_ptr out, g4_ptr q, g4_ptr kcache, g4_ptr vcache, g4_ptr tables,
                                   g4_ptr ctx, g4_ptr groups, int num_groups, int b, int hq, int hkv, int d,
                                   int num_blocks, int block_size, int max_blocks, float scale, int sms, g4_ptr ws,
                                   long long ws_bytes, g4_ptr flag, int op, g4_stream s) {
    if (b <= 0 || hq <= 0 || d <= 0) return 0;
    if (hkv < 1 || hq % hkv || num_groups < 0) return (int) cudaErrorInvalidValue;
    cudaStream_t st = g4::as_stream(s);
    DecArgs a{};
    a.out = reinterpret_cast<void*>(out);
    a.q = reinterpret_cast<const void*>(q);
    a.kc = reinterpret_cast<const void*>(kcache);
    a.vc = reinterpret_cast<const void*>(vcache);
    a.tables = reinterpret_cast<const int*>(tables);
    a.ctx = reinterpret_cast<const int*>(ctx);
    a.hq = hq, a.hkv = hkv, a.group = hq / hkv, a.d = d, a.bs = block_size, a.max_blocks = max_blocks;
    a.num_blocks = num_blocks, a.scale = scale, a.c = scale * g4::ATT_LOG2E;
    a.flag = reinterpret_cast<int*>(flag), a.op = op;
    const bool grouped = groups != 0 && num_groups > 0;
    const long long mb = marks_bytes(b, grouped);
    if (grouped) {
        if (ws_bytes < mb) return (int) cudaErrorInvalidValue;
        a.groups = reinterpret_cast<const int*>(groups);
        a.marks = reinterpret_cast<int*>(ws);
        int e = (int) cudaMemsetAsync(a.marks, 0, (size_t) b * 4, st);
        if (e) return e;
    }
    bool fast = dtype == G4_BF16 && (d == 64 || d == 128) && a.group <= 16 && g4::aligned16(out) &&
                g4::aligned16(q) && g4::aligned16(kcache) && g4::aligned16(vcache);
    if (fast) {
        a.slots = decode_slots(b, hkv, max_blocks, block_size, sms, grouped ? num_groups : 0, &a.chunk, &a.splits, &a.pslot,
                               &a.psplits);
        fast = fast_plan_fits(hkv, a.splits, a.slots);
    }
    if (fast) {
        if (a.slots > 0) {
            const long long need = mb + (long long) b * hq * a.slots * (d + 2) * 4;
            if (ws_bytes < need) return (int) cudaErrorInvalidValue;
            a.part_o = reinterpret_cast<float*>(ws + mb);
            a.part_ml = a.part_o + (long long) b * hq * a.slots * d;
        }
        return d == 64 ? decode_fast<64>(a, b, num_groups, st) : decode_fast<128>(a, b, num_groups, st);
    }
    a.splits = 1, a.slots = 0, a.psplits = 0, a.pslot = 0;  // (a tensor-core plan that did not fit: none of it)
    if (grouped) {
        mark_kernel<<<num_groups, NT, 0, st>>>(a, b);
        int e = g4::launched();
        if (e) return e;
    }
    const long long per = (long long) d * (8 + 4);
    int w = 4;
    while (w > 1 && per * w > 48 * 1024) w--;
    if (per * w > 48 * 1024) return (int) cudaErrorInvalidValue;
    const long long rows = (long long) b * hq;
    if (dtype == G4_BF16)
        gen_decode_kernel<bf16><<<(unsigned) ((rows + w - 1) / w), 32 * w, (size_t) (per * w), st>>>(a, b);
    else
        gen_decode_kernel<float><<<(unsigned) ((rows + w - 1) / w), 32 * w, (size_t) (per * w), st>>>(a, b);
    return g4::launched();
}
