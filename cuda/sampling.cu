// sample: one thread block per row of logits [B, V] (fp32 or bf16), sort-free (docs/kernels.md "Sampling").
//
// Pass A (always, one read of the row, G tiles at a time): per tile of TILE tokens the max key with its lowest index
// and the tile-relative fixed-point mass I_s; the row's max, argmax and min key.
// That settles non-finite rows (the first index of an infinite max, logprob NaN), greedy rows (the argmax) and, with
// the tiles' masses, the log-sum-exp.
// No filter: the draw's tile is found from the tiles' masses and only that tile is read again (one pass in all).
// top-k / top-p: the threshold search of sampling.cuh (histogram passes over the row in shared memory, the domain
// narrowing until one key is left; once the domain holds <= CAP tokens they are copied to shared memory and the
// remaining passes read only those), then the draw in vocabulary order (filtered_draw: one barrier-free read of the
// row in 32 contiguous parts, then the part holding the target again, narrower). top-p alone: its target from pass
// A's tiles, then one candidate pass keeps the tokens of the first search pass's bins >= b0 in a shared-memory list
// (b0 from log S and the tiles' maxima: cand_bin), and the search and the draw run from the list.
// Every reduction is over integers or keys (order-free), so the kernel is deterministic and its host twin
// (g4_host_sample_row) reproduces its tokens exactly.
#include "sampling.cuh"

namespace {

using namespace g4;
using namespace g4::smp;

constexpr int G = GROUP;  // pass A: tiles per group (G * ITEMS loads in flight a thread)
constexpr int HU = 8;  // histogram passes over the row: loads in flight a thread
static_assert(BLOCK == 1024, "pass A reduces the per-warp slots with one lane per warp: 32 warps");

struct Shared {
    u64 tile_s[MAX_TILES];   // pass A: each tile's fixed-point mass
    float tile_m[MAX_TILES];
    u64 gmax[G][BLOCK / 32], gsum[G][BLOCK / 32];  // pass A: per tile of a group, each warp's max key and mass
    u32 wkmin[BLOCK / 32];                          // and each warp's min key
    u32 cnt[BINS];
    u64 mass[BINS];
    u32 bmin[BINS], bmax[BINS];
    u32 list[CAP];
    u64 scan[32];
    // control, written by one thread between barriers
    u64 best;
    u32 kmin, list_n;
    Sel sel;
    int collect, from_list, bnd, token;
    u64 bnd_gc, bnd_gm;
    // top-p's candidate list (dynamic shared memory, one segment of seg tokens a warp): each warp's count (past seg:
    // the list is incomplete); the largest tile maximum whose tile_top_mass reaches the target (cand_bin's kq)
    u32 wcnt[32];
    u32 kq;
    // top-p alone in one read: the running mass of pass A's groups (warp 0's lane 0), the key of the group being read,
    // and the largest such key so far
    RunMass rm;
    u32 kg, kgmax;
    int lost_kc;  // some lane lost a candidate of key >= kc
    double l0;    // run_key's constants
    float bpu0;

    double u, log_s;  // the row's uniform and log S
    // the filtered draw: per-warp range sums, and the range picked (thread 0)
    u64 wmass[32];
    u32 wties[32];
    u64 pick_r;
    u32 pick_ties;
    int pick;
};

__device__ inline u64 warp_max_u64(u64 x) {
    for (int o = 16; o > 0; o >>= 1) { u64 y = __shfl_xor_sync(0xffffffffu, x, o); x = y > x ? y : x; }
    return x;
}
__device__ inline u32 warp_min_u32(u32 x) {
    for (int o = 16; o > 0; o >>= 1) { u32 y = __shfl_xor_sync(0xffffffffu, x, o); x = y < x ? y : x; }
    return x;
}
__device__ inline u64 warp_sum_u64(u64 x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}
// Inclusive prefix sum over the warp in lane order (integers: exact).
template <typename I>
__device__ inline I warp_scan(I x, int lane) {
    for (int o = 1; o < 32; o <<= 1) {
        I y = __shfl_up_sync(0xffffffffu, x, o);
        if (lane >= o) x += y;
    }
    return x;
}

// Inclusive prefix sum over the block in thread order (integers: exact); *total gets the block's sum.
__device__ u64 block_scan(u64 x, u64* total, u64* part) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int o = 1; o < 32; o <<= 1) {
        u64 y = __shfl_up_sync(0xffffffffu, x, o);
        if (lane >= o) x += y;
    }
    if (lane == 31) part[warp] = x;
    __syncthreads();
    if (warp == 0) {
        u64 p = part[lane];
        for (int o = 1; o < 32; o <<= 1) {
            u64 y = __shfl_up_sync(0xffffffffu, p, o);
            if (lane >= o) p += y;
        }
        part[lane] = p;
    }
    __syncthreads();
    u64 r = x + (warp > 0 ? part[warp - 1] : 0);
    *total = part[31];
    __syncthreads();  // part is reused by the next call
    return r;
}

template <typename T>
__device__ inline float load(const T* row, int j) { return clean(to_f32(row[j])); }

// The boundary bin of the histogram just filled (suffix sums from the top bin) and the selection's next state. The
// first pass of a mass selection over its whole domain sets its target (top_p of the domain's mass, or mass_target's
// bound on a preset one). From the candidate list's first pass (from_list 2, linear bins; the target preset, the list
// holds the bins >= b0): no boundary among those bins (a boundary under b0: the tiles' bound makes it impossible, and
// cand_b0's makes it rare) sends the search back to the row, where the next pass redoes this one over all bins.
__device__ void hist_finish(Shared& sm, const Sel& sel, int collect, int from_list, float top_p) {
    const int tid = threadIdx.x;
    const bool cand = from_list == 2 && sel.linear;
    // suffix sums from the top bin: thread tid holds bin BINS-1-tid
    int b = BINS - 1 - tid;
    u64 c = sm.cnt[b], m = sm.mass[b], tc, tm;
    u64 ec = block_scan(c, &tc, sm.scan), em = block_scan(m, &tm, sm.scan);
    Sel s2 = sel;
    if (s2.mass_mode && s2.linear && !cand) s2.t = s2.t < 0 ? dmul_rn((double) top_p, (double) tm) : mass_target(s2.t, tm);
    u64 gc = ec - c, gm = em - m;
    if (!sel_q(s2, s2.above_cnt + gc, s2.above_mass + gm) && sel_q(s2, s2.above_cnt + ec, s2.above_mass + em)) {
        sm.bnd = b;
        sm.bnd_gc = gc;
        sm.bnd_gm = gm;
    }
    __syncthreads();
    if (tid == 0) {
        int bb = sm.bnd;
        sm.sel.t = s2.t;
        if (bb < 0) {
            if (cand) sm.from_list = 0;
            else sel_fail(sm.sel);
        } else {
            sel_advance(sm.sel, sm.bnd_gc, sm.bnd_gm, sm.cnt[bb], sm.bmin[bb], sm.bmax[bb]);
            if (collect) {  // the list now holds this pass's domain, a superset of the next one
                sm.collect = 0;
                sm.from_list = 1;
            } else if (!from_list && !sm.sel.done && sm.cnt[bb] <= (u32) CAP) {
                sm.collect = 1;  // the next domain fits in shared memory: copy it during the next pass
            }
        }
    }
    __syncthreads();
}

__device__ inline void hist_clear(Shared& sm) {
    const int tid = threadIdx.x;
    sm.cnt[tid] = 0;
    sm.mass[tid] = 0;
    sm.bmin[tid] = 0xFFFFFFFFu;
    sm.bmax[tid] = 0;
}

// One token a lane of a warp-wide append: the lanes with keep take the next slots of this warp's segment in lane
// order (stored while there is room; a key without room raises *lost), and n (the same in every lane) counts them all.
__device__ inline void append_one(bool keep, u32 key, int j, u32* ckeys, u32* cidx, int seg, u32& n, u32* lost) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const unsigned bal = __ballot_sync(0xffffffffu, keep);
    if (bal) {  // (warp-uniform; on a peaked row, few warps of a pass have a candidate)
        const u32 at = n + (u32) __popc(bal & ((1u << lane) - 1u));
        if (keep && at < (u32) seg) {
            ckeys[warp * seg + at] = key;
            cidx[warp * seg + at] = (u32) j;
        } else if (keep) {
            *lost = key > *lost ? key : *lost;
        }
        n += (u32) __popc(bal);
    }
}

// Appends the tokens of [0, hi) with key >= kc to this warp's segment of the candidate list from slot n, key and
// index (warp w: the tokens j with j mod BLOCK in [32 w, 32 w + 32); slots from the warp's ballots, no atomics), and
// returns the warp's count (past seg: the segment overflowed, and the tokens past it were not stored). From the end of
// the range back to its start (a warp-uniform trip count: the ballots see whole warps): pass A has just read the row
// front to back, so its end is the likeliest part to be still in L2 (132 rows of 513 KB in flight are more than the
// H100's or H200's 50 MB; read front to back again, an LRU-like cache would have evicted each part just before it is
// wanted). The order changes nothing else: each token's slot is in its warp's segment.
template <typename T>
__device__ u32 append_range(const T* row, int hi, u32 kc, u32* ckeys, u32* cidx, int seg, u32 n) {
    const int tid = threadIdx.x;
    u32 lost = 0;  // (unused: a caller sees an overflow in the count)
    for (int base = (hi - 1) / (BLOCK * HU) * (BLOCK * HU); base >= 0; base -= BLOCK * HU) {
        float xs[HU];
#pragma unroll
        for (int u = 0; u < HU; u++) xs[u] = base + u * BLOCK + tid < hi ? load(row, base + u * BLOCK + tid) : 0.f;
#pragma unroll
        for (int u = 0; u < HU; u++) {
            const int j = base + u * BLOCK + tid;
            const u32 key = key_of(xs[u]);
            append_one(j < hi && key >= kc, key, j, ckeys, cidx, seg, n, &lost);
        }
    }
    return n;
}

// Pass A's group at tile s0 (its tokens in registers) into this warp's segment, as append_range; *lost gets the
// largest key of this lane's tokens that found no room.
template <int GG, int II>
__device__ inline u32 append_group(const float (&x)[GG][II], int s0, int nt, int v, u32 k, u32* ckeys, u32* cidx, int seg, u32 n,
                                   u32* lost) {
#pragma unroll
    for (int g = 0; g < GG; g++)
#pragma unroll
        for (int i = 0; i < II; i++) {
            const int j = (s0 + g) * TILE + i * BLOCK + threadIdx.x;
            const u32 key = key_of(x[g][i]);
            append_one(s0 + g < nt && j < v && key >= k, key, j, ckeys, cidx, seg, n, lost);
        }
    return n;
}

// Keeps the first n entries of this warp's segment with key >= k, in order, at its start; returns their count. Each
// chunk of 32 is read before any lane writes, and an entry moves only down (to a slot already read).
__device__ u32 compact_segment(u32* ckeys, u32* cidx, int seg, u32 n, u32 k) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const unsigned lower = (1u << lane) - 1u;
    ckeys += warp * seg;
    cidx += warp * seg;
    u32 out = 0;
    for (u32 base = 0; base < n; base += 32) {
        const u32 i = base + lane;
        const bool valid = i < n;
        const u32 key = valid ? ckeys[i] : 0u, id = valid ? cidx[i] : 0u;
        const bool keep = valid && key >= k;
        const unsigned bal = __ballot_sync(0xffffffffu, keep);
        __syncwarp();  // the chunk's reads before its writes
        if (keep) {
            const u32 at = out + (u32) __popc(bal & lower);
            ckeys[at] = key;
            cidx[at] = id;
        }
        out += (u32) __popc(bal);
        __syncwarp();
    }
    return out;
}

// The list's state after its last append: each warp's count (past seg: incomplete), then from_list 2 when every
// segment holds its candidates, else 0 (the search then runs over the row).
__device__ void list_finish(Shared& sm, u32 n, int seg) {
    const int tid = threadIdx.x;
    if ((tid & 31) == 0) sm.wcnt[tid >> 5] = n;
    __syncthreads();
    if (tid == 0) {
        int full = 1;
        for (int w = 0; w < BLOCK / 32; w++) full &= sm.wcnt[w] <= (u32) seg;
        sm.from_list = full ? 2 : 0;
    }
    __syncthreads();
}

// The candidate pass (top-p alone, before its search): one read of the row that keeps the tokens with key >= kc (the
// first pass's bins >= b0: cand_key) in the list. No mass is computed here: the target came from pass A's tiles, and
// the list holds whole bins. The list in hand, the first pass histograms it (from_list 2): the same bins >= b0 as
// over the row, the same target, so the same boundary. A warp with more than seg candidates leaves the list
// incomplete; the search then runs over the row.
template <typename T>
__device__ void candidate_pass(Shared& sm, const T* row, int v, u32 kc, u32* ckeys, u32* cidx, int seg) {
    list_finish(sm, append_range(row, v, kc, ckeys, cidx, seg, 0u), seg);
}

// One histogram pass of the selection over the row, the small list (from_list 1) or the candidate list (2).
template <typename T>
__device__ void hist_pass(Shared& sm, const T* row, int v, float xmax, float inv_t, float top_p, int sh, float bpu,
                          const u32* ckeys, int seg) {
    const Sel sel = sm.sel;
    const int collect = sm.collect, from_list = sm.from_list;
    int tid = threadIdx.x;
    hist_clear(sm);
    if (tid == 0) {
        if (collect) sm.list_n = 0;
        sm.bnd = -1;
    }
    __syncthreads();
    auto consider = [&](float x, u32 key) {
        if (key < sel.lo || key > sel.hi) return;
        u64 g = weight(x, xmax, inv_t, sh);
        if (!sel_in(sel, key, g)) return;
        int b = sel_bin(sel, key, x, xmax, inv_t, bpu);
        atomicAdd(&sm.cnt[b], 1u);
        atomicAdd(&sm.mass[b], g);
        atomicMin(&sm.bmin[b], key);
        atomicMax(&sm.bmax[b], key);
        if (collect) {
            u32 at = atomicAdd(&sm.list_n, 1u);
            if (at < (u32) CAP) sm.list[at] = key;  // always true: the domain holds <= CAP tokens
        }
    };
    if (from_list == 2) {  // each warp its own segment of the candidate list
        const int warp = tid >> 5, n = (int) sm.wcnt[warp];
        const u32* list = ckeys + warp * seg;
        for (int i = tid & 31; i < n; i += 32) consider(value_of(list[i]), list[i]);
    } else if (from_list) {
        const int n = (int) sm.list_n;
        for (int i = tid; i < n; i += BLOCK) consider(value_of(sm.list[i]), sm.list[i]);
    } else {
        // HU loads in flight a thread before the atomics: one at a time, a pass over the row waited on memory 125
        // times (the first GPU run: top-p 2.29 ms for 768 x 128256, DRAM 12% busy). Integer adds, mins and maxes do
        // not depend on the order: the histogram is the same.
        for (int i0 = tid; i0 < v; i0 += BLOCK * HU) {
            float xs[HU];
#pragma unroll
            for (int u = 0; u < HU; u++) xs[u] = i0 + u * BLOCK < v ? load(row, i0 + u * BLOCK) : 0.f;
#pragma unroll
            for (int u = 0; u < HU; u++)
                if (i0 + u * BLOCK < v) consider(xs[u], key_of(xs[u]));
        }
    }
    __syncthreads();
    hist_finish(sm, sel, collect, from_list, top_p);
}

// The filtered draw: kept = the tokens with key > tau, and the first c (vocabulary order) with key == tau, all of mass
// g_tau; the token is the first kept one whose running kept mass exceeds r. Found in ranges, with no barrier inside a
// walk: the current range [a, b) is split into 32 contiguous parts, warp w sums its part (mass of keys > tau, count of
// ties; coalesced, per-lane sums); thread 0 combines the parts in order (tie rank base, kept ties, kept mass) and picks
// the part holding r; twice (V = 128,256: 32 parts of 4008 tokens, then of 126). Warp 0 walks the last part with warp
// scans. One read of the row and a few small ones, where a block-wide scan per 1024 tokens took ~14 barriers each.
template <typename T>
__device__ int filtered_draw(Shared& sm, const T* row, int v, float xmax, float inv_t, int sh, u32 tau, u32 c, u64 g_tau, u64 r) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int a = 0, b = v;
    u64 rr = r;          // r relative to the kept mass before a
    u32 tie_base = 0;    // ties (key == tau) before a
    for (int level = 0; level < 2; level++) {
        const int span = (b - a + 31) / 32, wa = min(a + warp * span, b), wb = min(wa + span, b);
        u64 m = 0;
        u32 t = 0;
#pragma unroll 4
        for (int j = wa + lane; j < wb; j += 32) {
            float x = load(row, j);
            u32 key = key_of(x);
            if (key > tau) m += weight(x, xmax, inv_t, sh);
            else t += key == tau;
        }
        m = warp_sum_u64(m);
        t = (u32) warp_sum_u64(t);
        if (lane == 0) {
            sm.wmass[warp] = m;
            sm.wties[warp] = t;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            u64 before = 0;
            u32 tb = tie_base;
            int pick = -1;
            for (int w = 0; w < 32; w++) {
                u32 kt = tb >= c ? 0u : min(c - tb, sm.wties[w]);
                u64 kw = sm.wmass[w] + (u64) kt * g_tau;
                if (pick < 0 && rr < before + kw) {
                    pick = w;
                    sm.pick_r = rr - before;
                    sm.pick_ties = tb;
                }
                before += kw;
                tb += sm.wties[w];
            }
            sm.pick = pick < 0 ? 31 : pick;  // pick >= 0 always: r < the range's kept mass (the search's kept total)
        }
        __syncthreads();
        const int w = sm.pick;
        a = min(a + w * span, b);
        b = min(a + span, b);
        rr = sm.pick_r;
        tie_base = sm.pick_ties;
        // no barrier needed here: sm.w* were read (thread 0) before the one above, and sm.pick* are rewritten only
        // after the next level's first barrier, which every thread reaches after reading them
    }
    if (warp == 0) {
        u64 cum = 0;
        u32 tb = tie_base;
        for (int base = a; base < b; base += 32) {
            const int j = base + lane;
            const bool valid = j < b;
            const float x = valid ? load(row, j) : 0.f;
            const u32 key = key_of(x), tie = valid && key == tau;
            const u32 ties = warp_scan(tie, lane), rank = tb + ties - tie;
            const bool kept = valid && (key > tau || (tie && rank < c));
            const u64 wt = kept ? weight(x, xmax, inv_t, sh) : 0;
            const u64 incl = warp_scan(wt, lane) + cum;
            const unsigned hit = __ballot_sync(0xffffffffu, incl > rr && incl - wt <= rr);
            if (hit) {
                if (lane == __ffs(hit) - 1) sm.token = j;
                break;
            }
            cum = __shfl_sync(0xffffffffu, incl, 31);
            tb += __shfl_sync(0xffffffffu, ties, 31);
        }
    }
    __syncthreads();
    return sm.token;
}

// The first index j (vocabulary order) at which the running weight of the candidate list's tokens with index <= j
// exceeds r, r below the list's total weight. MODE 0 weighs the ties (key == tau) 1 each: with r = c - 1 that is the
// c-th tie. MODE 1 weighs the kept tokens (key > tau, or key == tau with index <= jc) by their masses: the filtered
// draw's token, the same as filtered_draw finds over the row. Narrowed by buckets of the index range (1024 of them,
// shared-memory integer atomics, then a block scan in index order): 128,256 tokens take two rounds.
template <int MODE>
__device__ int index_search(Shared& sm, const u32* ckeys, const u32* cidx, int seg, int v, u32 tau, int jc, float xmax,
                            float inv_t, int sh, u64 r) {
    const int tid = threadIdx.x, warp = tid >> 5, n = (int) sm.wcnt[warp];
    ckeys += warp * seg;  // this warp's segment
    cidx += warp * seg;
    int a = 0, b = v;
    while (b - a > 1) {
        const int bw = (b - a + BINS - 1) / BINS;
        sm.mass[tid] = 0;
        if (tid == 0) sm.bnd = -1;
        __syncthreads();
        for (int i = tid & 31; i < n; i += 32) {
            const int j = (int) cidx[i];
            if (j < a || j >= b) continue;
            const u32 key = ckeys[i];
            u64 w;
            if (MODE == 0) w = key == tau;
            else w = key > tau || (key == tau && j <= jc) ? weight(value_of(key), xmax, inv_t, sh) : 0;
            if (w) atomicAdd(&sm.mass[(j - a) / bw], w);
        }
        __syncthreads();
        const u64 m = sm.mass[tid];
        u64 total;
        const u64 incl = block_scan(m, &total, sm.scan);
        if (incl > r && incl - m <= r) {
            sm.bnd = tid;
            sm.bnd_gm = r - (incl - m);
        }
        __syncthreads();
        const int k = sm.bnd;
        if (k < 0) {  // r at or beyond the range's weight: a broken invariant (the token then reads -1)
            __syncthreads();  // (every thread has read sm.bnd before a next search resets it)
            return -1;
        }
        r = sm.bnd_gm;
        a += k * bw;
        b = min(a + bw, b);
        __syncthreads();  // every thread has read sm.bnd* before the next round resets them
    }
    return a;
}

// The filtered draw from the candidate list (which holds the kept set): the c-th tie first when only some of the ties
// at tau are kept, then the token.
__device__ int list_draw(Shared& sm, const u32* ckeys, const u32* cidx, int seg, int v, float xmax, float inv_t, int sh,
                         u32 tau, u32 c, u32 tau_cnt, u64 r) {
    const int jc = c < tau_cnt ? index_search<0>(sm, ckeys, cidx, seg, v, tau, 0, xmax, inv_t, sh, (u64) c - 1) : v;
    if (jc < 0) return -1;  // the c-th tie not found (a broken invariant): reported as -1 with a NaN logprob, as filtered_draw does
    return index_search<1>(sm, ckeys, cidx, seg, v, tau, jc, xmax, inv_t, sh, r);
}

// CAND (top-p alone with a list, since 2026-12-01): pass A keeps the candidates of groups 1.. under run_key, and
// group 0's and the final compaction under kc come after it, so that the search and the draw need no second read of
// the row unless that list overflowed or a group's key passed kc (then the candidate pass reads it, as without CAND).
// lcap: the candidate list's capacity in tokens (a multiple of 32: segments of lcap / 32 a warp), in 8 * lcap bytes
// of dynamic shared memory (0: no list); b0_bias moves the candidate pass's lowest bin (tests of the redo; 0
// otherwise).
// rows: block i samples row rows[i] (a group of rows sharing one spec, Backend.sample with per-row specs), or row i
// when null.
template <typename T, bool CAND>
__global__ void __launch_bounds__(BLOCK, 1)
sample_kernel(int* tokens, float* logprobs, const T* logits, const int* ctr, const int* rows, int v, Spec sp, u64 seed,
              int lcap, int b0_bias) {
    __shared__ Shared sm;
    extern __shared__ __align__(16) u32 cand_list[];
    u32* const ckeys = cand_list;
    u32* const cidx = cand_list + lcap;
    const int seg = lcap / 32;
    const int tid = threadIdx.x, lane = tid & 31;
    const int r = rows != nullptr ? rows[blockIdx.x] : (int) blockIdx.x;
    const T* row = logits + (long long) r * v;
    const int nt = (v + TILE - 1) / TILE;
    if (tid == 0) {
        sm.best = 0;
        sm.kmin = 0xFFFFFFFFu;
        sm.token = -1;
        sm.from_list = 0;
        sm.rm = run_mass_start();
        sm.kgmax = 0;
        sm.lost_kc = 0;
        if (CAND) {
            sm.l0 = cand_nats(v, sp.top_p);
            sm.bpu0 = bins_per_unit(row_shift(v));
        }
    }
    __syncthreads();
    // CAND: this warp's entries in its segment (the same in every lane), the largest key that may be missing from the
    // list by this lane (a candidate that found no room, or under a segment's compaction key; 0: none; a key is > 0),
    // and run_key's constants
    u32 n = 0, lost = 0;

    // ---- pass A: tiles, G at a time ------------------------------------------------------------------------------
    // Every thread loads its ITEMS tokens of G tiles at once (16 loads in flight), then the G tiles' max keys and
    // fixed-point masses are reduced together: warp shuffles, one slot per warp in shared memory, two barriers per G
    // tiles. One tile at a time (three barriers and 64 same-address shared atomics a tile, 4 loads in flight) kept too
    // few bytes in flight: the first GPU run timed plain sampling at 0.84 ms for 768 x 128256 fp32, 9x one read.
    // Max, min and integer sums do not depend on the grouping: the results are bit-identical.
    {
        const int warp = tid >> 5;
        u32 mn = 0xFFFFFFFFu;
        u64 best = 0;
        for (int s0 = 0; s0 < nt; s0 += G) {
            float x[G][ITEMS];
            u64 mb[G];
#pragma unroll
            for (int g = 0; g < G; g++)
#pragma unroll
                for (int i = 0; i < ITEMS; i++) {
                    const int j = (s0 + g) * TILE + i * BLOCK + tid;
                    x[g][i] = s0 + g < nt && j < v ? load(row, j) : 0.f;
                }
            if (CAND && s0 > 0 && tid == 0) {
                // this group's key, from the groups before it (read after the barrier below): the previous group's
                // tiles added to the running mass here, once this thread's loads are in flight (their exps and float64
                // steps, ~0.3 us of dependent latency a group, would hold back its next loads and the next barrier)
                for (int q = s0 - G; q < s0; q++) run_mass_add(sm.rm, sm.tile_m[q], sm.tile_s[q], sp.inv_t);
                const u32 k = run_key(sm.rm, sm.l0, sp.inv_t_d, sm.bpu0);
                sm.kg = k;
                sm.kgmax = k > sm.kgmax ? k : sm.kgmax;
            }
#pragma unroll
            for (int g = 0; g < G; g++) {
                // this thread's max key and its first index (the tokens come in index order, so a strictly larger key
                // moves it: the lowest index among equal keys), packed once a tile as (key, ~index); 0 with no token
                u32 mk = 0, mj = 0;
#pragma unroll
                for (int i = 0; i < ITEMS; i++) {
                    const int j = (s0 + g) * TILE + i * BLOCK + tid;
                    if (s0 + g < nt && j < v) {
                        const u32 key = key_of(x[g][i]);  // > 0 (NaN is cleaned to -inf, whose key is 0x007FFFFF)
                        if (key > mk) {
                            mk = key;
                            mj = (u32) j;
                        }
                        mn = key < mn ? key : mn;
                    }
                }
                mb[g] = mk == 0 ? 0 : ((u64) mk << 32) | (u64) (~mj);
                mb[g] = warp_max_u64(mb[g]);
                if (lane == 0) sm.gmax[g][warp] = mb[g];
            }
            __syncthreads();
            if (CAND && s0 > 0) {  // this group's candidates (sm.kg is rewritten only after the next barrier)
                const u32 kg = sm.kg, nb = n;
                u32 lg = 0;
                u32 nn = append_group(x, s0, nt, v, kg, ckeys, cidx, seg, nb, &lg);
                if (nn > (u32) seg && nb > 0) {
                    // full: a key that counts this group's maxima too (a new large token raises it), the earlier
                    // entries under it dropped, the group taken again under it; everything under it may be missing
                    RunMass r2 = sm.rm;
#pragma unroll
                    for (int g = 0; g < G; g++) {
                        const float mg = value_of((u32) (warp_max_u64(sm.gmax[g][lane]) >> 32));
                        if (s0 + g < nt && mg != u2f(0xFF800000u)) run_mass_add(r2, mg, 1ull << SH_TILE, sp.inv_t);
                    }
                    u32 k2 = run_key(r2, sm.l0, sp.inv_t_d, sm.bpu0);
                    k2 = k2 > kg ? k2 : kg;
                    lg = k2 > 0 ? k2 - 1 : 0;
                    nn = append_group(x, s0, nt, v, k2, ckeys, cidx, seg, compact_segment(ckeys, cidx, seg, nb, k2), &lg);
                }
                n = nn < (u32) seg ? nn : (u32) seg;  // the tokens past it are lost: the list is valid only if they are under kc
                lost = lg > lost ? lg : lost;
            }
            u64 sum[G];
#pragma unroll
            for (int g = 0; g < G; g++) {
                mb[g] = warp_max_u64(sm.gmax[g][lane]);  // the tile's max, in every thread
                const float m = value_of((u32) (mb[g] >> 32));
                sum[g] = 0;
#pragma unroll
                for (int i = 0; i < ITEMS; i++)
                    if (s0 + g < nt && (s0 + g) * TILE + i * BLOCK + tid < v) sum[g] += fixp(rel_exp(x[g][i], m, sp.inv_t), SH_TILE);
                sum[g] = warp_sum_u64(sum[g]);
                if (lane == 0) sm.gsum[g][warp] = sum[g];
                best = mb[g] > best ? mb[g] : best;
            }
            __syncthreads();
            if (warp == 0) {
#pragma unroll
                for (int g = 0; g < G; g++) {
                    const u64 total = warp_sum_u64(sm.gsum[g][lane]);
                    if (lane == 0 && s0 + g < nt) {
                        sm.tile_m[s0 + g] = value_of((u32) (mb[g] >> 32));
                        sm.tile_s[s0 + g] = total;
                    }
                }
            }
        }
        mn = warp_min_u32(mn);
        if (lane == 0) sm.wkmin[warp] = mn;
        __syncthreads();
        if (tid == 0) {
            u32 k = 0xFFFFFFFFu;
            for (int w = 0; w < BLOCK / 32; w++) k = sm.wkmin[w] < k ? sm.wkmin[w] : k;
            sm.best = best;
            sm.kmin = k;
        }
        __syncthreads();
    }
    const u32 kmax = (u32) (sm.best >> 32), kmin = sm.kmin;
    const int arg = (int) ~(u32) sm.best;
    const float xmax = value_of(kmax);
    if (is_inf(xmax) || sp.temperature == 0.f) {
        if (tid == 0) {
            tokens[r] = arg;
            logprobs[r] = is_inf(xmax) ? __int_as_float(0x7fffffff)
                    : (float) -tile_pick(sm.tile_m, sm.tile_s, nt, xmax, 1.f, 0.0).log_s;
        }
        return;
    }
    const double u = philox_uniform(seed, ctr[2 * r], ctr[2 * r + 1]);
    const TilePick pick = tile_pick(sm.tile_m, sm.tile_s, nt, xmax, sp.inv_t, u);  // every thread, same result
    if (tid == 0) {  // kept here, not in registers, across the threshold search (read after its barriers)
        sm.u = u;
        sm.log_s = pick.log_s;
    }

    if (sp.top_k == 0 && !(sp.top_p < 1.f)) {
        // ---- unfiltered: re-read the one tile the target falls in -----------------------------------------------
        const float m = sm.tile_m[pick.s];
        u64 carry = 0;
        for (int i = 0; i < ITEMS; i++) {
            int j = pick.s * TILE + i * BLOCK + tid;
            u64 w = j < v ? fixp(rel_exp(load(row, j), m, sp.inv_t), SH_TILE) : 0, total;
            u64 c = block_scan(w, &total, sm.scan) + carry;
            if (c > pick.r && c - w <= pick.r) sm.token = j;
            carry += total;
            __syncthreads();
            if (sm.token >= 0) break;
        }
    } else {
        // ---- top-k / top-p: threshold search, then the draw over the kept tokens in vocabulary order -------------
        const int sh = row_shift(v);
        const float bpu = bins_per_unit(sh);
        u32 tau, c;
        u64 kept;
        // list: 0 none, 1 the candidate pass first (key >= kc), 2 the candidate list complete already (pass A's)
        auto run = [&](Sel s0, u32 dom_cnt, int list, u32 kc) {
            __syncthreads();  // every thread has read the previous selection's result
            if (tid == 0) {
                sm.sel = s0;
                if (list != 2) sm.from_list = 0;
                sm.collect = dom_cnt <= (u32) CAP;
            }
            __syncthreads();
            if (list == 1) candidate_pass(sm, row, v, kc, ckeys, cidx, seg);
            while (!sm.sel.done) hist_pass(sm, row, v, xmax, sp.inv_t, sp.top_p, sh, bpu, ckeys, seg);
        };
        if (sp.top_k > 0) {
            run(sel_count(kmin, kmax, (u32) sp.top_k), (u32) v, 0, 0u);
            const Sel sk = sm.sel;
            tau = sk.tau;
            c = (u32) sp.top_k - sk.above_cnt;
            u64 g = weight(value_of(tau), xmax, sp.inv_t, sh);
            kept = sk.above_mass + (u64) c * g;
            if (sp.top_p < 1.f) {
                double t = dmul_rn((double) sp.top_p, (double) kept);
                if ((double) sk.above_mass >= t) {
                    run(sel_mass(tau + 1, kmax, t), 0xFFFFFFFFu, 0, 0u);
                    const Sel s2 = sm.sel;
                    u64 g2 = weight(value_of(s2.tau), xmax, sp.inv_t, sh);
                    tau = s2.tau;
                    c = min_ties(s2.above_mass, g2, t, s2.tau_cnt);
                    kept = s2.above_mass + (u64) c * g2;
                } else {
                    c = min_ties(sk.above_mass, g, t, c);
                    kept = sk.above_mass + (u64) c * g;
                }
            }
        } else {
            // top-p alone: the target from pass A's tiles (every thread), then the candidate pass first, when the
            // device gave the list room. Its lowest bin from the tiles' maxima (cand_bin): thread q < nt sums the
            // masses of the maxima at or above tile q's (held in sm.mass, free until the first histogram), and the
            // largest maximum whose sum reaches the target bounds the boundary from below.
            const double t = top_p_target(sm.tile_m, sm.tile_s, nt, xmax, sp.inv_t, sp.top_p, sh);
            u32 kc = 0;
            int list = 0;
            if (seg > 0) {
                if (tid < nt) sm.mass[tid] = weight(sm.tile_m[tid], xmax, sp.inv_t, sh);
                if (tid == 0) sm.kq = 0;
                __syncthreads();
                if (tid < nt && (double) tile_top_mass(sm.tile_m, sm.mass, nt, tid) >= t) atomicMax(&sm.kq, key_of(sm.tile_m[tid]));
                __syncthreads();
                const int b0 = min(max(cand_bin(v, sp.top_p, pick.log_s, bpu, sm.kq, xmax, sp.inv_t) + b0_bias, 0), BINS - 1);
                kc = cand_key(b0, kmin, kmax, xmax, sp.inv_t, bpu);  // (every thread: the same key)
                list = 1;
                if (CAND) {
                    // pass A's list: valid when no group's key passed kc (each group then kept every token >= kc) and
                    // every token that found no room is under kc. Its entries under kc (kept by the groups' lower
                    // keys) are dropped, so that the list holds whole bins >= b0, and group 0's candidates are added;
                    // when it is already known to fail, the candidate pass follows at once.
                    if (lost >= kc) atomicOr(&sm.lost_kc, 1);
                    __syncthreads();
                    const bool fails = sm.lost_kc || sm.kgmax > kc;
                    u32 nn = (u32) seg + 1;
                    if (!fails) nn = append_range(row, min(v, G * TILE), kc, ckeys, cidx, seg, compact_segment(ckeys, cidx, seg, n, kc));
                    list_finish(sm, nn, seg);
                    if (sm.from_list == 2) list = 2;
                }
            }
            run(sel_mass(kmin, kmax, t), 0xFFFFFFFFu, list, kc);
            const Sel s1 = sm.sel;
            u64 g = weight(value_of(s1.tau), xmax, sp.inv_t, sh);
            tau = s1.tau;
            c = min_ties(s1.above_mass, g, s1.t, s1.tau_cnt);
            kept = s1.above_mass + (u64) c * g;
            if (sm.from_list == 2) {  // the search ended in the candidate list, which holds the kept set: no more reads
                const int tok = list_draw(sm, ckeys, cidx, seg, v, xmax, sp.inv_t, sh, tau, c, s1.tau_cnt,
                                          draw_r(sm.u, kept));
                if (tid == 0) sm.token = tok;
            }
        }
        if (sm.from_list != 2)
            filtered_draw(sm, row, v, xmax, sp.inv_t, sh, tau, c, weight(value_of(tau), xmax, sp.inv_t, sh), draw_r(sm.u, kept));
    }
    if (tid == 0) {
        int tok = sm.token;  // >= 0 always (r < the kept mass); -1 with a NaN logprob would flag a broken invariant
        tokens[r] = tok;
        logprobs[r] = tok < 0 ? __int_as_float(0x7fffffff) : (float) logprob(load(row, tok), xmax, sp.inv_t_d, sm.log_s);
    }
}

}  // namespace

extern "C" int g4_sample_max_vocab(int* v) {
    *v = MAX_TILES * TILE;
    return 0;
}

// The candidate list's capacity on the current device: what its per-block opt-in shared memory holds beside Shared,
// 8 bytes a token, with 1 KiB to spare, at most LIST_MAX (sm_90: LIST_MAX; sm_80: 15,200; sm_86 / sm_89: 7,008), in
// whole warps; 0 where that is under LIST_MIN (top-p then searches over the row, as before the list).
static int list_cap() {
    int dev = 0, optin = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) {
        (void) cudaGetLastError();
        return 0;
    }
    const long long room = ((long long) optin - (long long) sizeof(Shared) - 1024) / 8;
    const int cap = (int) (room < LIST_MAX ? room : LIST_MAX) & ~31;
    return cap >= LIST_MIN ? cap : 0;
}

template <typename T>
static int launch_sample(int* tok, float* lp, const T* x, const int* c, const int* rows, int b, int v, const Spec& sp,
                         u64 seed, int lcap, int b0_bias, cudaStream_t st) {
    size_t smem = (size_t) lcap * 8;
    const bool cand = smem > 0 && top_p_alone(sp);  // (the list serves top-p alone only)
    if (smem > 0 && cudaFuncSetAttribute(cand ? sample_kernel<T, true> : sample_kernel<T, false>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int) smem) != cudaSuccess) {
        (void) cudaGetLastError();  // the device refused the list's memory: sample without the list (the same tokens)
        lcap = 0;
        smem = 0;
    }
    if (smem > 0 && cand) sample_kernel<T, true><<<b, BLOCK, smem, st>>>(tok, lp, x, c, rows, v, sp, seed, lcap, b0_bias);
    else sample_kernel<T, false><<<b, BLOCK, smem, st>>>(tok, lp, x, c, rows, v, sp, seed, lcap, b0_bias);
    return launched();
}

// b blocks: rows 0..b-1, or the b rows listed in `rows` (device int32; 0: none).
static int sample_rows(int dtype, g4_ptr tokens, g4_ptr logprobs, g4_ptr logits, g4_ptr ctr, g4_ptr rows_p, int b, int v,
                       float temperature, int top_k, float top_p, long long seed, int list_cap_override, int b0_bias,
                       g4_stream s) {
    if (b <= 0) return 0;
    if (v <= 0 || v > MAX_TILES * TILE) return (int) cudaErrorInvalidValue;
    Spec sp = make_spec(temperature, top_k, top_p, v);
    int* tok = reinterpret_cast<int*>(tokens);
    float* lp = reinterpret_cast<float*>(logprobs);
    const int* c = reinterpret_cast<const int*>(ctr);
    // the list serves top-p alone (top-k's count search and greedy rows do not use it)
    int lcap = 0;
    if (top_p_alone(sp)) {
        lcap = list_cap();
        if (list_cap_override >= 0 && list_cap_override < lcap) lcap = list_cap_override;  // never past the device's room
    }
    lcap = (lcap < LIST_MAX ? lcap : LIST_MAX) & ~31;  // whole segments
    const int* rows = reinterpret_cast<const int*>(rows_p);
    if (dtype == G4_BF16)
        return launch_sample(tok, lp, reinterpret_cast<const __nv_bfloat16*>(logits), c, rows, b, v, sp, (u64) seed, lcap,
                             b0_bias, as_stream(s));
    return launch_sample(tok, lp, reinterpret_cast<const float*>(logits), c, rows, b, v, sp, (u64) seed, lcap, b0_bias,
                         as_stream(s));
}

extern "C" int g4_sample_ex(int dtype, g4_ptr tokens, g4_ptr logprobs, g4_ptr logits, g4_ptr ctr, int b, int v,
                            float temperature, int top_k, float top_p, long long seed, int list_cap_override, int b0_bias,
                            g4_stream s) {
    return sample_rows(dtype, tokens, logprobs, logits, ctr, 0, b, v, temperature, top_k, top_p, seed, list_cap_override,
                       b0_bias, s);
}

extern "C" int g4_sample_rows(int dtype, g4_ptr tokens, g4_ptr logprobs, g4_ptr logits, g4_ptr ctr, g4_ptr rows, int n,
                              int v, float temperature, int top_k, float top_p, long long seed, g4_stream s) {
    return sample_rows(dtype, tokens, logprobs, logits, ctr, rows, n, v, temperature, top_k, top_p, seed, -1, 0, s);
}

extern "C" int g4_sample(int dtype, g4_ptr tokens, g4_ptr logprobs, g4_ptr logits, g4_ptr ctr, int b, int v,
                         float temperature, int top_k, float top_p, long long seed, g4_stream s) {
    return g4_sample_ex(dtype, tokens, logprobs, logits, ctr, b, v, temperature, top_k, top_p, seed, -1, 0, s);
}
