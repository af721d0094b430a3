// Causal grouped-query attention over packed sequences (cuSeqlens), forward and backward: FlashAttention-2.
//
// Tensor-core path (bf16, head dim 64 or 128, 16-byte aligned tensors):
//   plan     one block validates cuSeqlens (the CPU backend's checks, first problem reported through the device flag;
//            then nothing is written at all) and lists the row tiles (64 or 128 rows, as the kernels below take them)
//            of every sequence, heaviest first, so that the grid needs no host read of the lengths: grid.x =
//            ceil(N / rows) + B tile slots, slots past the list exit.
//   forward  block = (query tile of 128 rows, query head), 4 warps x 32 rows (two m-tiles of 16, FlashAttention-2's
//            128 x 64); Q stays in shared memory and its fragments are read per k-step, so that the registers hold O;
//            K/V tiles of 64 keys stream through one K and one V buffer (64 KiB: two blocks an SM on sm_80 and sm_90),
//            V_j copied during S = Q K_j^T and K_j+1 during the softmax and PV, each fragment feeding both m-tiles;
//            S = QK^T and O += PV on mma.sync m16n8k16 (fp32 accumulation); online softmax in fp32 in base 2
//            (attention.cuh); key tiles above an m-tile's diagonal, and an m-tile wholly past the sequence, are
//            skipped, and the diagonal tile is masked. P is rounded to bf16 for the PV product. Each row's arithmetic
//            is the same as with 64-row tiles (the host twin's), so the tile size does not change a bit of the output.
//   backward D_i = dOut_i . out_i (fp32, scratch). At head dim 128 on devices whose blocks may take 161 KiB of
//            shared memory (sm_80, sm_90), and at head dim 64 when asked for (mode bit 4; 97 KiB, any sm_80+),
//            FlashAttention-2's backward tiling: dK/dV block = (key tile of 128, kv head), 8 warps
//            (dkdv_wide_kernel: P^T and dS^T through shared memory between the products); dQ (deterministic) block =
//            (query tile of 128, query head), 8 warps (dq_wide_kernel). Otherwise (head dim 64 by default: three
//            blocks of 4 warps an SM where the wide kernel holds one of 8; 128 on sm_86 / sm_89; or mode bit 2):
//            dK/dV block = (key tile of 64, kv head), 4 warps x 16 keys (dkdv_kernel); dQ block = (query tile of
//            64, query head), 4 warps x 16 rows (dq_kernel). dK/dV blocks iterate over the query heads of the group and the query steps that see the
//            tile (P recomputed from the saved lse); dQ blocks over their key tiles. Deterministic mode (the default)
//            runs dQ as that second kernel; fast mode adds dS K with fp32 atomics into a scratch accumulator from the
//            dK/dV kernel, then a convert kernel scales and rounds it; fixed-point mode (deterministic too) adds it as
//            64-bit integers at a per-row binary point (DqMode below). Every kernel variant gives the same bits in
//            deterministic mode.
// Hopper kernels (opt-in: g4_attention mode 1, g4_attention_backward mode bit 16; compute capability 9.0, sm_90a image):
//   fwd_wgmma_kernel, dkdv_wgmma_kernel, dq_wgmma_kernel take the blocks and plans of fwd_kernel, dkdv_wide_kernel and
//   dq_wide_kernel with 2 warpgroups and wgmma.mma_async products (wgmma.cuh); the same rounded operands, other sums.
//   fwd_tma_kernel (mode 3, or 7 with ping-pong; 11 and 15 persistent): fwd_wgmma_kernel's bits, its loads by a
//   producer warpgroup's TMA.
// Generic path (fp32, any other even head dim, unaligned views): one warp per (row, head), the lanes taking 32 keys
//   (or queries) at a time, float64 accumulation: slower, never a wrong answer.
#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <type_traits>

#include "common.cuh"
#include "attention.cuh"
#include "mma.cuh"
#include "wgmma.cuh"

#include <cudaTypedefs.h>  // (PFN_cuTensorMapEncodeTiled_v12000: the driver function the TMA forward encodes its maps with)

namespace {

using bf16 = __nv_bfloat16;
using g4::ATT_BM;
using g4::ATT_BN;
using g4::TileRef;

constexpr int NT = 128;        // threads of the tensor-core kernels (4 warps)
constexpr int PLAN_NT = 1024;  // threads of the plan kernel

// ---- scratch layout -----------------------------------------------------------------------------------------------

struct Layout {
    long long status, map, dsum, dqacc, bounds, urow, nfrow, total;
};

// How the tensor-core backward forms dQ (g4_attention_backward's mode bits 1 and 8):
//   DQ_PASS   deterministic: a second kernel per query tile over its key tiles (dq_kernel, dq_wide_kernel);
//   DQ_FP32   fast: the dK/dV kernel adds dS K into an fp32 accumulator with atomics (order, and so bits, vary);
//   DQ_FIXED  deterministic: the dK/dV kernel adds dS K as 64-bit fixed-point integers with atomics. Integer sums do
//             not depend on their order, so the bits repeat run to run without the second kernel's recomputation of
//             QK^T and dO V^T. Each row (token t, head h) has its own binary point, where none of its partial sums
//             can overflow: every contribution to dQ[t, h, x] is a sum of dS[t, j] K[j, x], and sum_j |dS[t, j]| <=
//             sum_j P[t, j] (|dO_t . V_j| + |D_t|) <= ||dO_t|| max_j ||V_j|| + |D_t| (the P of a row sum to 1 when
//             lse is the forward's), so |any partial sum| <= B = max_j,x |K[j, x]| (||dO_t|| max_j ||V_j|| + |D_t|)
//             (maxima over the kv head's finite values; norms summed in float64 and rounded up); with B < 2^e the
//             scale is 2^(60 - e) (two float factors past 2^127): partial sums stay
//             below 2^60 by the bound, a factor 8 under 2^63 for its roundings (bf16 dS, P summing a little over 1), and the
//             resolution is 2^(e - 60) <= 2^-59 B (an fp32 sum keeps 2^-24 of its own size). A contribution of 2^62
//             or more (lse not the forward's) is reported through the device flag (kind 7); a non-finite input or
//             contribution makes its row's dq NaN (urow inf, nfrow set), and so does a bound past a float's range
//             (urow >= 2^128, B >= 2^186, a finite V row's norm >= 2^128: not representable).
enum DqMode { DQ_PASS = 0, DQ_FP32 = 1, DQ_FIXED = 2 };

static DqMode dq_mode(int mode_bits) {
    return (mode_bits & 8) ? DQ_FIXED : (mode_bits & 1) ? DQ_PASS : DQ_FP32;
}

static long long align256(long long x) { return (x + 255) / 256 * 256; }

// status: [0] tiles in the plan, [1] 1 when cuSeqlens is valid; map: TileRef per slot; dsum: fp32 [Hq][N]; dqacc:
// fp32 [N, Hq, D] (DQ_FP32) or int64 [N, Hq, D] (DQ_FIXED); bounds (DQ_FIXED): float bits, [Hkv] max |K|, [Hkv]
// max ||V_j|| over finite values; urow (DQ_FIXED): fp32 [Hq][N], ||dO_t|| max ||V_j|| + |D_t| per (head, token), inf
// for a row with a non-finite input; nfrow (DQ_FIXED): u32 [Hq][N], nonzero for a row with a non-finite contribution
// (set by the dK/dV kernel with atomics; a NaN row in either marks its dq NaN).
static Layout layout(int n, int b, int hq, int hkv, int d, bool backward, DqMode dq) {
    Layout l;
    l.status = 0;
    l.map = 256;
    long long slots = ((long long) n + ATT_BM - 1) / ATT_BM + b;  // (widened before the sum: n near 2^31 - 1 wrapped)
    const bool fixed = backward && dq == DQ_FIXED;
    l.dsum = align256(l.map + slots * (long long) sizeof(TileRef));
    l.dqacc = align256(l.dsum + (backward ? (long long) n * hq * 4 : 0));
    l.bounds = align256(l.dqacc + (backward && dq != DQ_PASS ? (long long) n * hq * d * (fixed ? 8 : 4) : 0));
    l.urow = align256(l.bounds + (fixed ? (long long) (2 * hkv) * 4 : 0));
    l.nfrow = align256(l.urow + (fixed ? (long long) n * hq * 4 : 0));
    l.total = align256(l.nfrow + (fixed ? (long long) n * hq * 4 : 0));
    return l;
}

// ---- plan ---------------------------------------------------------------------------------------------------------

__global__ void __launch_bounds__(PLAN_NT) plan_kernel(const int* cu, int b, int n, int rows, int* status, TileRef* map,
                                                       int* flag, int op) {
    __shared__ int first_bad;
    __shared__ int scan[PLAN_NT];
    __shared__ int carry;
    if (threadIdx.x == 0) { first_bad = 0x7fffffff; carry = 0; }
    __syncthreads();
    int key = 0x7fffffff;
    for (int i = threadIdx.x; i <= b; i += PLAN_NT) key = min(key, g4::cu_seqlens_key(cu, b, n, i));
    if (key != 0x7fffffff) atomicMin(&first_bad, key);
    __syncthreads();
    if (first_bad != 0x7fffffff) {
        if (threadIdx.x == 0) {
            int r[4];
            g4::cu_seqlens_problem(cu, b, n, first_bad, r);
            g4::report(flag, op | r[0] << 8, r[1], r[2], r[3]);
            status[0] = 0;
            status[1] = 0;
        }
        return;
    }
    // exclusive prefix sum of the tile counts, PLAN_NT sequences at a time (Hillis-Steele in shared memory)
    for (int base = 0; base < b; base += PLAN_NT) {
        const int s = base + threadIdx.x;
        const int cnt = s < b ? g4::tiles_of(cu[s + 1] - cu[s], rows) : 0;
        scan[threadIdx.x] = cnt;
        __syncthreads();
        for (int o = 1; o < PLAN_NT; o <<= 1) {
            int add = threadIdx.x >= o ? scan[threadIdx.x - o] : 0;
            __syncthreads();
            scan[threadIdx.x] += add;
            __syncthreads();
        }
        const int first = carry + scan[threadIdx.x] - cnt;
        for (int k = 0; k < cnt; k++) map[first + k] = TileRef{s, g4::tile_order(k, cnt)};
        __syncthreads();
        if (threadIdx.x == PLAN_NT - 1) carry += scan[PLAN_NT - 1];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        status[0] = carry;
        status[1] = 1;
    }
}

// ---- forward (tensor cores) ---------------------------------------------------------------------------------------

struct FwdArgs {
    bf16* out;
    float* lse;
    const bf16 *q, *k, *v;
    const int* cu;
    const int* status;
    const TileRef* map;
    int hq, hkv, group;
    float c;  // scale * log2(e)
};

// Query rows per forward block: 4 warps x 32 rows, FlashAttention-2's 128 x 64 tiles for head dim 128 on sm_90. A
// warp holds two m-tiles, rows warp * 16 + mt * 64 (interleaved as FlashAttention-2's, so that the causal diagonal
// falls on every warp alike), and each K/V fragment it loads from shared memory feeds both: half the ldmatrix traffic
// per mma of 16 rows a warp, twice the independent mma between loads.
constexpr int FWD_BM = 2 * ATT_BN;
constexpr int FWD_MT = FWD_BM / 64;  // m-tiles per warp

template <int D>
constexpr int fwd_smem() { return (FWD_BM + 2 * ATT_BN) * D * 2; }  // Q, one K tile, one V tile: 64 KiB at head dim 128

template <int D>
__global__ void __launch_bounds__(NT, 2) fwd_kernel(FwdArgs a) {
    constexpr int KD = D / 16, ND = D / 8, NB = ATT_BN / 8, MT = FWD_MT;
    if ((int) blockIdx.x >= a.status[0]) return;
    const TileRef t = a.map[blockIdx.x];
    const int start = a.cu[t.seq], len = a.cu[t.seq + 1] - start;
    const int h = blockIdx.y, g = h / a.group, row0 = t.tile * FWD_BM;
    extern __shared__ __align__(128) unsigned char smem[];
    const unsigned sQ = g4::smem_u32(smem), sK = sQ + FWD_BM * D * 2, sV = sK + ATT_BN * D * 2;
    // K/V rows of key tile j start at element (start + 64 j) hkv D + g D of k and v, recomputed from the kernel's
    // parameters at each use rather than held as two 64-bit pointers through the loop (the registers are that tight)
    const auto kv_off = [&](int j) { return ((long long) (start + j * ATT_BN) * a.hkv + g) * D; };
    // Key tile 2 t.tile + mt is m-tile mt's diagonal (masked above it) and tiles after it are wholly masked for it: an
    // m-tile skips them (exactly what the masked weights 0 would add). Tiles past the sequence's end are not visited.
    const int diag0 = 2 * t.tile, ntiles = min(diag0 + MT, g4::tiles_of(len, ATT_BN));
    g4::load_tile<FWD_BM, D, NT>(sQ, a.q + ((long long) (start + row0) * a.hq + h) * D, (long long) a.hq * D, len - row0);
    g4::load_tile<ATT_BN, D, NT>(sK, a.k + kv_off(0), (long long) a.hkv * D, len);
    g4::cp_async_commit();
    // m-tile 1 (rows row0 + 64 ..) wholly past the sequence's end: it is skipped (nothing of it is stored)
    const bool act1 = row0 + 64 < len;

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
    float o[MT][ND][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int i = 0; i < ND; i++) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.f;
    float m[MT][2], l[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) m[mt][0] = m[mt][1] = -INFINITY, l[mt][0] = l[mt][1] = 0.f;

    // One K and one V buffer, FlashAttention-2's pipeline: V_j is copied while S = Q K_j^T is computed, K_j+1 while
    // the softmax and O += P V_j are; two barriers a tile (K_j in and V_j-1 released; V_j in and K_j released).
    for (int j = 0; j < ntiles; j++) {
        g4::cp_async_wait<0>();
        __syncthreads();
        g4::load_tile<ATT_BN, D, NT>(sV, a.v + kv_off(j), (long long) a.hkv * D, len - j * ATT_BN);
        g4::cp_async_commit();
        const int ln = g4::lane_id();
        const bool act0 = j <= diag0;  // m-tile 0 sees this key tile; m-tile 1 every visited one unless past the end
        float s[MT][NB][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int i = 0; i < NB; i++) s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < KD; kk++) {
            unsigned qa[MT][4];  // Q's A fragments, read again from shared memory each k-step (registers go to O)
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
                if (mt > 0 ? act1 : act0) g4::ldsm_x4(qa[mt], sQ + g4::frag_a<D>(warp * 16 + mt * 64, kk * 16, ln));
#pragma unroll
            for (int n2 = 0; n2 < NB / 2; n2++) {
                unsigned b[4];
                g4::ldsm_x4(b, sK + g4::frag_bt<D>(n2 * 16, kk * 16, ln));
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
                    if (mt > 0 ? act1 : act0) {
                        g4::mma_bf16(s[mt][2 * n2], qa[mt], b[0], b[1]);
                        g4::mma_bf16(s[mt][2 * n2 + 1], qa[mt], b[2], b[3]);
                    }
            }
        }
        g4::cp_async_wait<0>();
        __syncthreads();  // V_j in; every warp is done with K_j
        if (j + 1 < ntiles) {
            g4::load_tile<ATT_BN, D, NT, false>(sK, a.k + kv_off(j + 1), (long long) a.hkv * D, len - (j + 1) * ATT_BN);
            g4::cp_async_commit();
        }
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            if (j == diag0 + mt) {  // the m-tile's diagonal: key (tile column) > row (m-tile row) is masked
                const int r = warp * 16 + gid;
#pragma unroll
                for (int nb = 0; nb < NB; nb++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        const int col = nb * 8 + tig * 2 + e;
                        if (col > r) s[mt][nb][e] = -INFINITY;
                        if (col > r + 8) s[mt][nb][2 + e] = -INFINITY;
                    }
            }
        }
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            if (!(mt > 0 ? act1 : act0)) continue;
            float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
            for (int nb = 0; nb < NB; nb++) {
                mx[0] = fmaxf(mx[0], fmaxf(s[mt][nb][0], s[mt][nb][1]));
                mx[1] = fmaxf(mx[1], fmaxf(s[mt][nb][2], s[mt][nb][3]));
            }
            float alpha[2];
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const float mn = fmaxf(m[mt][i], g4::quad_max(mx[i]) * a.c);
                alpha[i] = g4::softmax_alpha(m[mt][i], mn);
                m[mt][i] = mn;
                l[mt][i] *= alpha[i];
            }
#pragma unroll
            for (int i = 0; i < ND; i++) {
                o[mt][i][0] *= alpha[0];
                o[mt][i][1] *= alpha[0];
                o[mt][i][2] *= alpha[1];
                o[mt][i][3] *= alpha[1];
            }
        }
#pragma unroll
        for (int kk = 0; kk < ATT_BN / 16; kk++) {  // 16 keys per k-step of O += P V
            unsigned pa[MT][4];  // P (16 rows x these 16 keys) of each m-tile as the A operand of O += P V
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                if (!(mt > 0 ? act1 : act0)) continue;
                float w[2][4];  // P of n-blocks 2kk, 2kk + 1 (C layout)
#pragma unroll
                for (int hb = 0; hb < 2; hb++) {
                    const int nb = 2 * kk + hb;
                    w[hb][0] = g4::softmax_weight(s[mt][nb][0], a.c, m[mt][0]);
                    w[hb][1] = g4::softmax_weight(s[mt][nb][1], a.c, m[mt][0]);
                    w[hb][2] = g4::softmax_weight(s[mt][nb][2], a.c, m[mt][1]);
                    w[hb][3] = g4::softmax_weight(s[mt][nb][3], a.c, m[mt][1]);
                    l[mt][0] += w[hb][0];
                    l[mt][0] += w[hb][1];
                    l[mt][1] += w[hb][2];
                    l[mt][1] += w[hb][3];
                }
                g4::c_to_a(pa[mt], w[0], w[1]);
            }
#pragma unroll
            for (int n2 = 0; n2 < ND / 2; n2++) {
                unsigned b[4];
                g4::ldsm_x4_t(b, sV + g4::frag_b<D>(kk * 16, n2 * 16, ln));
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
                    if (mt > 0 ? act1 : act0) {
                        g4::mma_bf16(o[mt][2 * n2], pa[mt], b[0], b[1]);
                        g4::mma_bf16(o[mt][2 * n2 + 1], pa[mt], b[2], b[3]);
                    }
            }
        }
    }

    // epilogue: l over the quad, out = o / l staged in the warp's own rows of sQ (only this warp read them), then
    // 16-byte stores of valid rows
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        const float l0 = g4::quad_sum(l[mt][0]), l1 = g4::quad_sum(l[mt][1]);
        const float inv0 = 1.f / l0, inv1 = 1.f / l1;
        const int r0 = warp * 16 + mt * 64 + gid;
#pragma unroll
        for (int nd = 0; nd < ND; nd++) {
            const int col = nd * 8 + tig * 2;
            *reinterpret_cast<unsigned*>(smem + g4::swz<D>(r0, col)) =
                    g4::pack_bf16(o[mt][nd][0] * inv0, o[mt][nd][1] * inv0);
            *reinterpret_cast<unsigned*>(smem + g4::swz<D>(r0 + 8, col)) =
                    g4::pack_bf16(o[mt][nd][2] * inv1, o[mt][nd][3] * inv1);
        }
        if (tig == 0) {
            if (row0 + r0 < len) a.lse[(long long) (start + row0 + r0) * a.hq + h] = g4::softmax_lse(m[mt][0], l0);
            if (row0 + r0 + 8 < len) a.lse[(long long) (start + row0 + r0 + 8) * a.hq + h] = g4::softmax_lse(m[mt][1], l1);
        }
    }
    __syncwarp();
    for (int i = lane; i < MT * 16 * ND; i += 32) {
        const int rr = i / ND, c = i % ND, r = warp * 16 + (rr & 15) + (rr >> 4) * 64;
        if (row0 + r < len)
            *reinterpret_cast<uint4*>(a.out + ((long long) (start + row0 + r) * a.hq + h) * D + c * 8) =
                    *reinterpret_cast<const uint4*>(smem + g4::swz<D>(r, c * 8));
    }
}

// ---- forward on Hopper (sm_90a: wgmma) -----------------------------------------------------------------------------
//
// The same blocks as fwd_kernel (query tile of 128 rows, query head; the same plan), FlashAttention-3's tiling without
// its producer warpgroup: 2 warpgroups of 4 warps, each 64 query rows; key tiles of 128; S = Q K_j^T as 8 (head dim
// 128) or 4 (64) wgmma m64n128k16 with both operands in shared memory, O += P V_j as 8 wgmma m64nDk16 with P from
// registers (S's accumulators rounded to bf16, as in fwd_kernel) and V in shared memory (MN-major). Tiles in
// wgmma.cuh's 128-byte-swizzled layout; two K and two V buffers (Q 32 + 2 x 64 KiB at head dim 128: one block an
// SM), copied by every thread (cp.async) K two tiles ahead of the products and V one; one barrier a tile.
// FlashAttention-3's intra-warpgroup overlap: S_{j+1} is issued before P_j V_j and its softmax runs while that
// product is in flight; and the two warpgroups drift apart within a tile (one's softmax under the other's wgmma).
// Each row's arithmetic is FlashAttention-2's online softmax in base 2 (attention.cuh's helpers) over 128-key tiles
// where fwd_kernel takes 64, so the output is not fwd_kernel's bits; its accuracy is the same bound (docs/ops.md).
// Compiled into the sm_90a image only (elsewhere the kernel is empty and never launched: g4_attention takes it only
// on a compute capability 9.0 device, when asked).
constexpr int WG_NT = 256;  // two warpgroups
constexpr int WG_BN = 128;  // keys per tile

template <int D>
constexpr int fwd_wg_smem() { return (FWD_BM + 4 * WG_BN) * D * 2 + 1024; }  // Q, 2 x (K, V); 1 KiB to align to 1024

// A tile copy of the Hopper kernels: all their threads, into wgmma.cuh's layout.
template <int R, int D>
__device__ __forceinline__ void load_tile_wg(unsigned s, const bf16* g, long long stride, int valid) {
    g4::load_tile<R, D, WG_NT, true, g4::WgLayout>(s, g, stride, valid);
}

// A thread's part of an m64 accumulator (rows r and r + 8, ND blocks of 8 columns), times s0 (row r) and s8 (row r + 8),
// rounded to bf16 into a [R][8 ND] tile in wgmma.cuh's layout.
template <int R, int ND>
__device__ __forceinline__ void wg_stage(unsigned char* tile, const float* acc, float s0, float s8, int r, int tig) {
#pragma unroll
    for (int nd = 0; nd < ND; nd++) {
        const int col = nd * 8 + tig * 2;
        *reinterpret_cast<unsigned*>(tile + g4::wg_off<R>(r, col)) = g4::pack_bf16(acc[4 * nd] * s0, acc[4 * nd + 1] * s0);
        *reinterpret_cast<unsigned*>(tile + g4::wg_off<R>(r + 8, col)) = g4::pack_bf16(acc[4 * nd + 2] * s8, acc[4 * nd + 3] * s8);
    }
}

// The store after wg_stage: a warp's own 16 staged rows (tile rows r0 .. r0 + 15, the [R][8 ND] tile in wgmma.cuh's
// layout) as 16-byte stores to out[tile row r] at dst + r * stride (elements), rows r < valid only.
template <int R, int ND>
__device__ __forceinline__ void wg_store_rows(bf16* dst, long long stride, const unsigned char* tile, int r0, int valid,
                                              int lane) {
    for (int i = lane; i < 16 * ND; i += 32) {
        const int r = r0 + i / ND, c = i % ND;
        if (r < valid) *reinterpret_cast<uint4*>(dst + r * stride + c * 8) = *reinterpret_cast<const uint4*>(tile + g4::wg_off<R>(r, c * 8));
    }
}

// One warpgroup's 64 query rows in the Hopper forwards (fwd_wgmma_kernel, fwd_tma_kernel): the accumulators, the
// online softmax's state and P_j as A fragments, and the steps of FlashAttention-3's intra-warpgroup overlap. A
// thread holds rows r and r + 8 of the block (r = 64 wg + 16 warp + gid), columns as wgmma.cuh's D fragments.
// (In the sm_90a image and the emulator only.)
#if defined(G4_WGMMA) || defined(G4_EMU)

// The order in which the two warpgroups issue their products: take() before a warpgroup issues a batch, give(last)
// after it (last: its final batch). NoTurn leaves it to the warpgroups' drift; fwd_tma_kernel's PingPong takes turns.
struct NoTurn {
    __device__ __forceinline__ void take() const {}
    __device__ __forceinline__ void give(bool) const {}
};

template <int D>
struct WgFwdRows {
    static constexpr int NS = WG_BN / 8, ND = D / 8;  // 8-column blocks of S and of O
    float o[4 * ND], s[4 * NS];
    float m[2], l[2];
    unsigned pa[WG_BN / 16][4];  // P_j (the warp's 16 rows x 16 keys a k-step) as the A operand of O += P_j V_j

    __device__ __forceinline__ void init() {
#pragma unroll
        for (int i = 0; i < 4 * ND; i++) o[i] = 0.f;
        m[0] = m[1] = -INFINITY;
        l[0] = l[1] = 0.f;
    }

    // S = Q K^T into s, issued and committed (not waited): Q the block's [FWD_BM][D] tile at sq (the warpgroup's 64
    // rows), K a [WG_BN][D] tile at kb; k-step kk reads columns 16 kk .. (column block kk / 4, 32 bytes a step in it)
    __device__ __forceinline__ void issue_s(unsigned sq, unsigned kb, int wg) {
        g4::fence_regs(s);
        g4::wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            const unsigned qa = sq + (kk >> 2) * (FWD_BM * 128) + wg * (64 * 128) + (kk & 3) * 32;
            const unsigned ka = kb + (kk >> 2) * (WG_BN * 128) + (kk & 3) * 32;
            g4::wgmma_ss_n128(s, g4::wg_desc(qa, 16, 1024), g4::wg_desc(ka, 16, 1024), kk > 0);
        }
        g4::wgmma_commit();
    }

    // The online softmax of S_j (in s, retired): on the diagonal (diag) key column > row r is masked; the new row maxima
    // m, alpha = 2^(m_old - m) (l scaled by it here; o by rescale_and_pack, once O += P_{j-1} V_{j-1} has retired),
    // P_j's weights in place in s and their sums added to l, in fwd_kernel's order.
    __device__ __forceinline__ void softmax(bool diag, int r, int tig, float c, float (&alpha)[2]) {
        if (diag) {
#pragma unroll
            for (int nb = 0; nb < NS; nb++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int col = nb * 8 + tig * 2 + e;
                    if (col > r) s[4 * nb + e] = -INFINITY;
                    if (col > r + 8) s[4 * nb + 2 + e] = -INFINITY;
                }
        }
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int nb = 0; nb < NS; nb++) {
            mx[0] = fmaxf(mx[0], fmaxf(s[4 * nb], s[4 * nb + 1]));
            mx[1] = fmaxf(mx[1], fmaxf(s[4 * nb + 2], s[4 * nb + 3]));
        }
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const float mn = fmaxf(m[i], g4::quad_max(mx[i]) * c);
            alpha[i] = g4::softmax_alpha(m[i], mn);
            m[i] = mn;
            l[i] *= alpha[i];
        }
#pragma unroll
        for (int nb = 0; nb < NS; nb++) {
            s[4 * nb] = g4::softmax_weight(s[4 * nb], c, m[0]);
            s[4 * nb + 1] = g4::softmax_weight(s[4 * nb + 1], c, m[0]);
            s[4 * nb + 2] = g4::softmax_weight(s[4 * nb + 2], c, m[1]);
            s[4 * nb + 3] = g4::softmax_weight(s[4 * nb + 3], c, m[1]);
            l[0] += s[4 * nb];
            l[0] += s[4 * nb + 1];
            l[1] += s[4 * nb + 2];
            l[1] += s[4 * nb + 3];
        }
    }

    // o *= alpha (after O += P_{j-1} V_{j-1} retired), then P_j rounded to bf16 into pa (its wgmma retired too)
    __device__ __forceinline__ void rescale_and_pack(const float (&alpha)[2]) {
#pragma unroll
        for (int i = 0; i < ND; i++) {
            o[4 * i] *= alpha[0];
            o[4 * i + 1] *= alpha[0];
            o[4 * i + 2] *= alpha[1];
            o[4 * i + 3] *= alpha[1];
        }
#pragma unroll
        for (int kk = 0; kk < WG_BN / 16; kk++) {
            const float w0[4] = {s[8 * kk], s[8 * kk + 1], s[8 * kk + 2], s[8 * kk + 3]};
            const float w1[4] = {s[8 * kk + 4], s[8 * kk + 5], s[8 * kk + 6], s[8 * kk + 7]};
            g4::c_to_a(pa[kk], w0, w1);
        }
    }

    // S_0 (K_0 at kb) and its softmax; s_done() once S_0 has retired (its K tile may be reused)
    template <class SDone, class Turn = NoTurn>
    __device__ __forceinline__ void first(unsigned sq, unsigned kb, int wg, bool diag, int r, int tig, float c, SDone s_done,
                                          const Turn& turn = {}) {
        float alpha[2];
        turn.take();
        issue_s(sq, kb, wg);
        turn.give(false);
        g4::wgmma_wait<0>();
        g4::fence_regs(s);
        s_done();
        softmax(diag, r, tig, c, alpha);
        rescale_and_pack(alpha);
    }

    // FlashAttention-3's intra-warpgroup overlap: S_{j+1} = Q K_{j+1}^T (K at kb) is issued before O += P_j V_j (V at vb:
    // k-step kk reads V's rows 16 kk .., two 8-row groups of 1024 bytes, both column blocks by the LBO), and its
    // softmax runs while that product is in flight; s_done() once S_{j+1} has retired, pv_done() once P_j V_j has.
    // Every element sees fwd_kernel's operations in its order. (One batch from fence to wait, whole in one branch of
    // the caller: a batch across a branch is serialized by ptxas.)
    template <class SDone, class PvDone, class Turn = NoTurn>
    __device__ __forceinline__ void step(unsigned sq, unsigned kb, unsigned vb, int wg, bool diag, int r, int tig, float c,
                                         SDone s_done, PvDone pv_done, const Turn& turn = {}) {
        g4::fence_regs(o);
        g4::fence_regs(pa);  // P_j, packed: this batch's A operand
        turn.take();
        issue_s(sq, kb, wg);  // (its wgmma.fence covers the product's registers too)
        g4::wg_acc_rs<D, WG_BN / 16, false>(o, pa, vb, WG_BN * 128);
        g4::wgmma_commit();
        turn.give(false);
        float alpha[2];
        g4::wgmma_wait<1>();  // S_{j+1} in (P_j V_j may still run)
        g4::fence_regs(s);
        s_done();
        softmax(diag, r, tig, c, alpha);
        g4::wgmma_wait<0>();
        g4::fence_regs(o);
        g4::fence_regs(pa);  // P_j V_j retired: P_{j+1} may take pa
        pv_done();
        rescale_and_pack(alpha);
    }

    // The last tile's O += P_j V_j; pv_done() once it has retired
    template <class PvDone, class Turn = NoTurn>
    __device__ __forceinline__ void last(unsigned vb, PvDone pv_done, const Turn& turn = {}) {
        turn.take();
        g4::wg_acc_rs<D, WG_BN / 16>(o, pa, vb, WG_BN * 128);
        g4::wgmma_commit();
        turn.give(true);
        g4::wgmma_wait<0>();
        g4::fence_regs(o);
        pv_done();
    }

    // out = o / l staged in the warpgroup's own rows of the Q tile at sq (only it read them), then 16-byte stores of
    // the rows before the sequence's end; lse
    __device__ __forceinline__ void epilogue(const FwdArgs& a, unsigned char* sq, int start, int row0, int len, int h,
                                             int wg, int warp, int lane, int gid, int tig) {
        const float l0 = g4::quad_sum(l[0]), l1 = g4::quad_sum(l[1]);
        const float inv0 = 1.f / l0, inv1 = 1.f / l1;
        const int r0 = wg * 64 + warp * 16 + gid;
        __syncwarp();  // the warp's reads of its rows by an epilogue before (a persistent block's) are done
        wg_stage<FWD_BM, ND>(sq, o, inv0, inv1, r0, tig);
        if (tig == 0) {
            if (row0 + r0 < len) a.lse[(long long) (start + row0 + r0) * a.hq + h] = g4::softmax_lse(m[0], l0);
            if (row0 + r0 + 8 < len) a.lse[(long long) (start + row0 + r0 + 8) * a.hq + h] = g4::softmax_lse(m[1], l1);
        }
        __syncwarp();
        wg_store_rows<FWD_BM, ND>(a.out + ((long long) (start + row0) * a.hq + h) * D, (long long) a.hq * D, sq,
                                  wg * 64 + warp * 16, len - row0, lane);
    }
};
#endif

template <int D>
__global__ void __launch_bounds__(WG_NT, 1) fwd_wgmma_kernel(FwdArgs a) {
#if defined(G4_WGMMA) || defined(G4_EMU)
    if ((int) blockIdx.x >= a.status[0]) return;
    const TileRef t = a.map[blockIdx.x];
    const int start = a.cu[t.seq], len = a.cu[t.seq + 1] - start;
    const int h = blockIdx.y, g = h / a.group, row0 = t.tile * FWD_BM;
    extern __shared__ __align__(128) unsigned char smem[];  // (one declaration for every kernel of this file)
    unsigned char* const sq = g4::wg_base(smem);  // the swizzle atoms need 1024-byte alignment
    const unsigned sQ = g4::smem_u32(sq);
    constexpr unsigned KV = WG_BN * D * 2;  // bytes of one K or V tile
    const auto sK = [&](int b) { return sQ + FWD_BM * D * 2 + (unsigned) b * 2 * KV; };
    const auto kv_off = [&](int j) { return ((long long) (start + j * WG_BN) * a.hkv + g) * D; };
    // key tile t.tile is the block's diagonal (masked above it); tiles past the sequence's end are not visited
    const int ntiles = min(t.tile + 1, g4::tiles_of(len, WG_BN));
    const long long ks = (long long) a.hkv * D;
    load_tile_wg<FWD_BM, D>(sQ, a.q + ((long long) (start + row0) * a.hq + h) * D, (long long) a.hq * D, len - row0);
    load_tile_wg<WG_BN, D>(sK(0), a.k + kv_off(0), ks, len);
    load_tile_wg<WG_BN, D>(sK(0) + KV, a.v + kv_off(0), ks, len);
    g4::cp_async_commit();
    if (ntiles > 1) {  // its own group: S_0 need not wait for it
        load_tile_wg<WG_BN, D>(sK(1), a.k + kv_off(1), ks, len - WG_BN);
        g4::cp_async_commit();
    }

    const int wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
    const int r = wg * 64 + warp * 16 + gid;  // the thread's first row in the block
    // the warpgroup's 64 rows wholly past the sequence's end: it only copies (a warpgroup-uniform choice, as wgmma needs)
    const bool active = row0 + wg * 64 < len;
    WgFwdRows<D> w;
    w.init();
    const auto none = [] {};

    // K runs two tiles ahead of the products, V one: a tile's copies (K_{j+2} into K_j's buffer, V_{j+1} into
    // V_{j-1}'s) are issued after the barrier that follows both warpgroups' waits on the wgmmas that read those
    // buffers. The same bits as one tile at a time.
    if (ntiles > 1) g4::cp_async_wait<1>();
    else g4::cp_async_wait<0>();
    g4::fence_proxy_async();  // this thread's copies of Q, K_0, V_0, before the wgmma (async proxy) reads them
    __syncthreads();
    // S_0 and its softmax (the loop's first barrier then keeps K_0's buffer until both have read it)
    if (active) w.first(sQ, sK(0), wg, t.tile == 0, r, tig, a.c, none);
    for (int j = 0; j < ntiles; j++) {
        g4::cp_async_wait<0>();
        g4::fence_proxy_async();  // this thread's copies of K_{j+1} (and V_j), before the wgmma reads them
        __syncthreads();          // everyone's copies in; both warpgroups' S_j (and P_{j-1} V_{j-1}) retired
        if (j + 2 < ntiles) load_tile_wg<WG_BN, D>(sK(j & 1), a.k + kv_off(j + 2), ks, len - (j + 2) * WG_BN);
        if (j + 1 < ntiles) load_tile_wg<WG_BN, D>(sK((j + 1) & 1) + KV, a.v + kv_off(j + 1), ks, len - (j + 1) * WG_BN);
        if (j + 1 < ntiles) g4::cp_async_commit();
        if (!active) continue;
        if (j + 1 < ntiles) w.step(sQ, sK((j + 1) & 1), sK(j & 1) + KV, wg, j + 1 == t.tile, r, tig, a.c, none, none);
        else w.last(sK(j & 1) + KV, none);
    }
    if (active) w.epilogue(a, sq, start, row0, len, h, wg, warp, lane, gid, tig);
#else
    __trap();  // an image without sm_90a code on a device that launched it (a build that dropped native/Makefile's sm_90a)
#endif
}

// ---- forward on Hopper with a producer warpgroup (sm_90a: TMA, mbarriers, wgmma) -----------------------------------
//
// fwd_wgmma_kernel's blocks, products and arithmetic (the same bits), with FlashAttention-3's warp specialization in
// place of the consumers' own copies and block-wide barriers: a third warpgroup, the producer, whose one thread loads Q,
// and K and V tile by tile, with TMA (cp.async.bulk.tensor: one instruction a 64-column box, 128-byte swizzled by the
// copy engine into wgmma.cuh's layout) into TMA_ST stages each of K and V, each stage with a full barrier (the
// producer's arrival with the tile's bytes, complete when they have landed) and an empty one (one arrival by each warp
// of each computing warpgroup once the wgmma that read the tile has retired: CUTLASS's PipelineTmaAsync). So the two
// warpgroups meet no block barrier, only their data, and drift apart as far as the stages allow; the copies
// take no consumer issue slots and no registers. Q: one load and barrier. A warpgroup whose 64 rows are wholly past
// the sequence's end computes nothing but follows the stages (the empty barriers count both warpgroups' 8 warps). The
// boxes read whole tiles of 128
// rows, past a sequence's end into the next (zeros past the tensor's): Q's extra rows are never stored and K's extra
// keys are masked by the diagonal, but V's extra rows meet P's zeros in P V, where an infinite value of another
// sequence would make NaN, so the last tile's rows past the end are zeroed first (both warpgroups' threads, then
// named barrier 3 of them). 384 threads, 168 registers a thread at the start; then, as FlashAttention-3, the producer gives
// up all but 24 (setmaxnreg) and the two computing warpgroups take 240. (A single producer warp, 288 threads, would
// leave them 168: nine warps put three on one of the SM's four register files of 16 K.)
constexpr int TMA_NT = WG_NT + 128;  // two warpgroups and the producer's
constexpr int TMA_ST = 2;           // stages of K and of V (FlashAttention-3's two at head dim 128)
// setmaxnreg's budget (ptxas does not check it: a raise that the lowered registers cannot cover waits forever), and
// the last tile visited being the diagonal (so K's rows past a sequence's end are masked, and V's zeroed from v0 > 0)
static_assert(WG_NT == 256 && 24 + 2 * 240 <= 3 * ((65536 / TMA_NT) & ~7), "setmaxnreg 24 / 240 within 168 x 3");
static_assert(WG_BN == FWD_BM, "key tiles as long as the query tile");

template <int D, bool PS>
constexpr int fwd_tma_smem() { return ((PS ? 2 : 1) * FWD_BM + 2 * TMA_ST * WG_BN) * D * 2 + 1024 + 128; }  // + the barriers
static_assert(fwd_tma_smem<128, true>() <= 227 * 1024, "the persistent TMA forward within an sm_90 block's shared memory");

// The TMA tensor maps of q, k and v (as kernel parameters: __grid_constant__, read by the copy engine in place).
struct FwdMaps {
    CUtensorMap q, k, v;
};

#if defined(G4_WGMMA) || defined(G4_EMU)
// FlashAttention-3's ping-pong: the two warpgroups issue their batches of products in turn, each between a bar.sync on
// its own named barrier (1 + wg) and a bar.arrive on the other's (2 - wg), both of the 256 threads; warpgroup 1
// arrives once at the start, so that warpgroup 0 goes first, and skips its last arrival, which nothing would wait for.
// So one warpgroup's softmax runs while the other's products hold the tensor cores, by schedule rather than drift.
// Off (on = false) where only one warpgroup computes.
struct PingPong {
    int wg;
    bool on;
    __device__ __forceinline__ void take() const {
        if (on) g4::bar_sync_named(1 + wg, 256);
    }
    __device__ __forceinline__ void give(bool last) const {
        if (on && !(last && wg == 1)) g4::bar_arrive_named(2 - wg, 256);
    }
};
#endif

// PP: with PingPong (g4_attention mode bit 4). PS: persistent (mode bit 8): a grid of one block an SM, each block
// taking work items (map entry, query head) blockIdx.x, blockIdx.x + gridDim.x, ... in the order of the entries
// (plan's: the heaviest tiles first) with a tile's heads together (a GQA group's heads share K and V in L2). The
// producer loads the next item's Q, K and V while the computing warpgroups finish this one's last products and
// epilogue: Q's buffer is released after the item's last S (empty barrier q_empty), and the epilogue stages its
// output in a buffer of its own. The K and V stages go on across items (their phases count key tiles since the
// block's start). Without PS, a block is one item (blockIdx.x, blockIdx.y) and its output is staged in Q's buffer.
// A warpgroup whose 64 rows are wholly past an item's sequence end computes nothing for it but follows the stages
// (waits for each tile's load, then releases it), so that every empty barrier counts both warpgroups' 8 warps.
template <int D, bool PP, bool PS>
__global__ void __launch_bounds__(TMA_NT, 1) fwd_tma_kernel(FwdArgs a, const __grid_constant__ FwdMaps maps) {
#if defined(G4_WGMMA) || defined(G4_EMU)
    const int entries = a.status[0];
    // work item `it` of the block: map entry i, query head h; false past the last
    const auto entry = [&](int it, int& i, int& h) {
        if constexpr (PS) {
            const long long w = (long long) blockIdx.x + (long long) it * gridDim.x;
            i = (int) (w / a.hq);
            h = (int) (w % a.hq);
        } else {
            i = it == 0 ? (int) blockIdx.x : entries;
            h = (int) blockIdx.y;
        }
        return i < entries;
    };
    // an item's tile, as both the producer and the computing warpgroups walk it: its sequence, first row and key tiles
    // (the last of them the diagonal, masked above it; tiles past the sequence's end not visited)
    struct Item {
        TileRef t;
        int h, start, len, row0, ntiles;
    };
    const auto item = [&](int it, Item& x) {
        int i;
        if (!entry(it, i, x.h)) return false;
        x.t = a.map[i];
        x.start = a.cu[x.t.seq];
        x.len = a.cu[x.t.seq + 1] - x.start;
        x.row0 = x.t.tile * FWD_BM;
        x.ntiles = min(x.t.tile + 1, g4::tiles_of(x.len, WG_BN));
        return true;
    };
    {
        int i, h;
        if (!entry(0, i, h)) return;
    }
    extern __shared__ __align__(128) unsigned char smem[];
    unsigned char* const sq = g4::wg_base(smem);  // the swizzle atoms (and TMA's swizzled boxes) need 1024-byte alignment
    const unsigned sQ = g4::smem_u32(sq);
    constexpr unsigned KV = WG_BN * D * 2, QB = FWD_BM * D * 2;  // bytes of a K or V tile, of the Q tile
    // the buffers of the block's key tile number i (counted from the block's start), the output's staging (PS; Q's
    // buffer otherwise), the barriers (Q full, Q empty, then per stage K full, K empty, V full, V empty) and the
    // parity of tile i's phase of its stage's barriers
    const auto sK = [&](int i) { return sQ + QB + (unsigned) (i % TMA_ST) * KV; };
    const auto sV = [&](int i) { return sQ + QB + (unsigned) (TMA_ST + i % TMA_ST) * KV; };
    unsigned char* const so = PS ? sq + QB + 2 * TMA_ST * KV : sq;
    const unsigned bar = sQ + QB + 2 * TMA_ST * KV + (PS ? QB : 0), q_full = bar, q_empty = bar + 8;
    const auto barrier = [&](int kind, int i) { return bar + 16 + 8 * (unsigned) (kind * TMA_ST + i % TMA_ST); };
    const auto k_full = [&](int i) { return barrier(0, i); };
    const auto k_empty = [&](int i) { return barrier(1, i); };
    const auto v_full = [&](int i) { return barrier(2, i); };
    const auto v_empty = [&](int i) { return barrier(3, i); };
    const auto phase = [](int i) { return (unsigned) (i / TMA_ST) & 1u; };
    if (threadIdx.x == 0) {
        g4::mbar_init(q_full, 1);
        if (PS) g4::mbar_init(q_empty, 8);
        for (int s = 0; s < TMA_ST; s++) {
            g4::mbar_init(k_full(s), 1);
            g4::mbar_init(v_full(s), 1);
            g4::mbar_init(k_empty(s), 8);
            g4::mbar_init(v_empty(s), 8);
        }
        g4::fence_mbar_init();
    }
    __syncthreads();

    if (threadIdx.x >= WG_NT) {  // the producer warpgroup: its first thread issues every load, in the order they are used
        g4::set_max_regs<24, false>();
        if (threadIdx.x == WG_NT) {
            // Q is read by this block alone; K and V by the group's other query heads and the sequence's later query
            // tiles too: kept in L2 ahead of Q (FlashAttention-3's hints)
            const unsigned long long once = g4::l2_evict_first(), kept = g4::l2_evict_last();
            g4::prefetch_tensor_map(&maps.q);
            g4::prefetch_tensor_map(&maps.k);
            g4::prefetch_tensor_map(&maps.v);
            // key tile j of a sequence at `start` (kv head g) into the stage of the block's tile number i, once the tile
            // TMA_ST before it there has been released (the first round at once)
            const auto load = [&](const CUtensorMap* m, unsigned dst, unsigned full, unsigned empty, int i, int g, int row) {
                g4::mbar_wait(empty, phase(i) ^ 1u);
                g4::mbar_arrive_tx(full, KV);
                for (int cb = 0; cb < D / 64; cb++) g4::tma_load_3d(dst + cb * (WG_BN * 128), m, cb * 64, g, row, full, kept);
            };
            int base = 0;  // key tiles loaded for the items before
            Item x;
            for (int it = 0; item(it, x); it++) {
                const int h = x.h, start = x.start, g = h / a.group, row0 = x.row0, ntiles = x.ntiles;
                if (PS && it > 0) g4::mbar_wait(q_empty, (unsigned) (it - 1) & 1u);  // the item before has read Q
                g4::mbar_arrive_tx(q_full, QB);
                for (int cb = 0; cb < D / 64; cb++)
                    g4::tma_load_3d(sQ + cb * (FWD_BM * 128), &maps.q, cb * 64, h, start + row0, q_full, once);
                load(&maps.k, sK(base), k_full(base), k_empty(base), base, g, start);
                for (int j = 0; j < ntiles; j++) {  // K_{j+1} before V_j: S_{j+1} is issued before P_j V_j
                    const int b = base + j;
                    if (j + 1 < ntiles) load(&maps.k, sK(b + 1), k_full(b + 1), k_empty(b + 1), b + 1, g, start + (j + 1) * WG_BN);
                    load(&maps.v, sV(b), v_full(b), v_empty(b), b, g, start + j * WG_BN);
                }
                base += ntiles;
            }
        }
        return;
    }

    const int wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
    g4::set_max_regs<240, true>();
    const int r = wg * 64 + warp * 16 + gid;  // the thread's first row in the block
    // a warp's arrival on a tile's empty barrier, after its own wait on the wgmma that read the tile
    const auto release = [&](unsigned empty) {
        if (lane == 0) g4::mbar_arrive(empty);
    };
    // The last key tile j of a sequence of len tokens, in V's buffer at vb: its rows past the sequence's end are zeroed
    // (both warpgroups' threads, then their named barrier 3)
    const auto zero_tail = [&](unsigned vb, int len, int j) {
        const int v0 = len - j * WG_BN;  // V's rows from v0 are past the sequence's end
        if (v0 < WG_BN) {
            unsigned char* const vt = sq + (vb - sQ);
            for (int e = threadIdx.x; e < (WG_BN - v0) * (D / 8); e += WG_NT)
                *reinterpret_cast<uint4*>(vt + g4::wg_off<WG_BN>(v0 + e / (D / 8), e % (D / 8) * 8)) = make_uint4(0, 0, 0, 0);
            g4::fence_proxy_async();  // (generic stores, before the async proxy's wgmma reads them)
            g4::bar_sync_named(3, WG_NT);
        }
    };
    WgFwdRows<D> w;
    int base = 0;  // key tiles of the items before
    Item x;
    for (int it = 0; item(it, x); it++) {
        const TileRef t = x.t;
        const int h = x.h, start = x.start, len = x.len, row0 = x.row0, ntiles = x.ntiles;
        const int nact = row0 + 64 < len ? 2 : 1;  // warpgroups with rows before the sequence's end
        g4::mbar_wait(q_full, (unsigned) it & 1u);
        if (wg >= nact) {  // its 64 rows wholly past the sequence's end (a warpgroup-uniform choice, as wgmma needs)
            if (PS) release(q_empty);
            for (int j = 0; j < ntiles; j++) {
                g4::mbar_wait(k_full(base + j), phase(base + j));
                release(k_empty(base + j));
                g4::mbar_wait(v_full(base + j), phase(base + j));
                if (j + 1 == ntiles) zero_tail(sV(base + j), len, j);
                release(v_empty(base + j));
            }
            base += ntiles;
            continue;
        }
        w.init();
        const PingPong turn{wg, PP && nact == 2};
        if (turn.on && wg == 1) g4::bar_arrive_named(1, 256);  // warpgroup 0 first
        // K tile j read (its S retired): its stage released, and after the item's last S, Q's buffer (PS)
        const auto k_done = [&](int j) {
            release(k_empty(base + j));
            if (PS && j + 1 == ntiles) release(q_empty);
        };
        g4::mbar_wait(k_full(base), phase(base));
        w.first(sQ, sK(base), wg, t.tile == 0, r, tig, a.c, [&] { k_done(0); }, turn);
        for (int j = 0; j < ntiles; j++) {
            const int b = base + j;
            if (j + 1 < ntiles) {
                g4::mbar_wait(k_full(b + 1), phase(b + 1));
                g4::mbar_wait(v_full(b), phase(b));
                w.step(sQ, sK(b + 1), sV(b), wg, j + 1 == t.tile, r, tig, a.c, [&] { k_done(j + 1); },
                       [&] { release(v_empty(b)); }, turn);
            } else {
                g4::mbar_wait(v_full(b), phase(b));
                zero_tail(sV(b), len, j);
                w.last(sV(b), [&] { release(v_empty(b)); }, turn);
            }
        }
        w.epilogue(a, so, start, row0, len, h, wg, warp, lane, gid, tig);
        base += ntiles;
    }
#else
    __trap();  // (as fwd_wgmma_kernel)
#endif
}

// ---- backward: D_i, dK/dV, dQ, convert (tensor cores) ------------------------------------------------------------

struct BwdArgs {
    bf16 *dq, *dk, *dv;
    const bf16 *dout, *q, *k, *v;
    const float* lse;   // [N, Hq]
    const float* dsum;  // [Hq][N]
    float* dqacc;       // [N, Hq, D] (DQ_FP32; DQ_FIXED: unsigned long long)
    const unsigned* bounds;  // DQ_FIXED: see Layout
    const float* urow;       // DQ_FIXED: see Layout
    unsigned* nfrow;         // DQ_FIXED: see Layout
    int* flag;
    int op;
    const int* cu;
    const int* status;
    const TileRef* map;
    int n, hq, hkv, group;
    float scale, c;
};

__host__ __device__ inline float bits_f32(unsigned u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// DQ_FIXED: the binary point of a row: 2^f with f = 60 - e, B = maxk * u < 2^e (maxk: the kv head's max |K|; u: the
// row's urow), f clamped at 254 (applied as two float powers of 2; a B below 2^-194 only loses resolution no bf16
// result needs); false when B is not finite or f would be below -126 (B >= 2^186, beyond a float's range of scales):
// the row's dq is then NaN.
__host__ __device__ inline bool dq_fixed_exponent(float maxk, float u, int* f) {
    const double b = (double) maxk * (double) u;
    *f = 0;
    if (!(b <= 1.7e308)) return false;  // NaN or inf
    int e = 0;
    (void) frexp(b, &e);  // b = m 2^e, 0.5 <= m < 1 (e = 0 for b = 0)
    const int x = 60 - e;
    if (x < -126) return false;
    *f = x > 254 ? 254 : x;
    return true;
}

// One row's fixed-point scale: 2^f = p2 p2b (two factors: f may pass 127; p2 = 0 when the row's dq will be NaN) and
// where its row's entries are.
struct RowScale {
    float p2, p2b;
    long long u;
};

// A finite dS K contribution x to dQ element i as a fixed-point integer in its row's scale (DQ_FIXED).
__device__ __forceinline__ unsigned long long dq_fixed(const BwdArgs& a, long long i, float x, const RowScale& rs) {
    const float y = x * rs.p2 * rs.p2b;  // (exact: powers of 2, and |x| 2^f stays within a float's range)
    if (!(fabsf(y) < 0x1p62f)) g4::report(a.flag, a.op | (7 << 8), i, 0, 62);
    return (unsigned long long) llrintf(y);
}

// Adds one dS K contribution to dQ's accumulator in the kernel's mode (fp32 or fixed point).
template <int DQM>
__device__ __forceinline__ void dq_add(const BwdArgs& a, long long i, float x, const RowScale& rs) {
    if (DQM == DQ_FP32) {
        atomicAdd(a.dqacc + i, x);
    } else if (rs.p2 != 0.f) {
        if (!(fabsf(x) < INFINITY)) atomicOr(a.nfrow + rs.u, 1u);  // a NaN or inf contribution: the row's dq is NaN
        else atomicAdd(reinterpret_cast<unsigned long long*>(a.dqacc) + i, dq_fixed(a, i, x, rs));
    }
}

// What dq_add would add, as a value to stage for a bulk reduction: x (DQ_FP32), or its fixed-point integer, 0 where
// dq_add adds nothing (the row's dq will be NaN: p2 = 0; x NaN or inf, which marks the row).
template <int DQM>
__device__ __forceinline__ auto dq_value(const BwdArgs& a, long long i, float x, const RowScale& rs) {
    if constexpr (DQM == DQ_FP32) {
        return x;
    } else {
        if (rs.p2 == 0.f) return 0ull;
        if (!(fabsf(x) < INFINITY)) {
            atomicOr(a.nfrow + rs.u, 1u);
            return 0ull;
        }
        return dq_fixed(a, i, x, rs);
    }
}

// 2^f as a float (f in [-126, 127]: a normal float, so x * 2^f is exact).
__device__ __forceinline__ float pow2f(int f) { return __int_as_float((f + 127) << 23); }

// The scale of row (token t, head h, kv head g) in DQ_FIXED; unused otherwise.
template <int DQM>
__device__ __forceinline__ RowScale row_scale(const BwdArgs& a, long long t, int h, int g) {
    if (DQM != DQ_FIXED) return RowScale{1.f, 1.f, 0};
    const long long u = (long long) h * a.n + t;
    int f;
    if (!dq_fixed_exponent(bits_f32(a.bounds[g]), a.urow[u], &f)) return RowScale{0.f, 1.f, u};
    const int f1 = min(f, 127);
    return RowScale{pow2f(f1), pow2f(f - f1), u};
}

// Adds a thread's part of an m16 accumulator (rows q0 and q0 + 8 of head h, NB blocks of 8 columns from c0, 4 floats a
// block in mma.m16n8's C layout) into dQ's accumulator in mode DQM; rows past the sequence's end are not added.
template <int DQM, int D, int NB>
__device__ __forceinline__ void dq_add_rows(const BwdArgs& a, const float* acc, int q0, int c0, int start, int len, int h,
                                            int g, int tig) {
    const RowScale s0 = row_scale<DQM>(a, start + min(q0, len - 1), h, g),
                   s8 = row_scale<DQM>(a, start + min(q0 + 8, len - 1), h, g);
#pragma unroll
    for (int nb = 0; nb < NB; nb++) {
        const int col = c0 + nb * 8 + tig * 2;
        if (q0 < len) {
            const long long i = ((long long) (start + q0) * a.hq + h) * D + col;
            dq_add<DQM>(a, i, acc[4 * nb], s0);
            dq_add<DQM>(a, i + 1, acc[4 * nb + 1], s0);
        }
        if (q0 + 8 < len) {
            const long long i = ((long long) (start + q0 + 8) * a.hq + h) * D + col;
            dq_add<DQM>(a, i, acc[4 * nb + 2], s8);
            dq_add<DQM>(a, i + 1, acc[4 * nb + 3], s8);
        }
    }
}

// Bytes a row of a dQ staging tile for the Hopper dK/dV kernel's bulk reductions: 64 values of dQ's accumulator type
// and a pad of 8 banks (fp32: a half-warp's 8-byte stores cover 4 rows x 32 bytes) or 16 (fixed point: a quarter-warp's
// 16-byte stores cover 2 rows x 64 bytes), so that the rows of one wavefront fall on distinct banks.
template <int DQM>
__host__ __device__ constexpr int dq_stage_row_bytes() { return DQM == DQ_FIXED ? 64 * 8 + 64 : 64 * 4 + 32; }

// dq_add_rows staged for bulk reductions (DQ_FP32, DQ_FIXED): a thread's part of an m64n64 accumulator of dQ (rows q0
// and q0 + 8 of head h, columns c0 + 8 nb + 2 tig, + 1; mma.m16n8's C layout), as dq_value gives each value, at rows rl
// and rl + 8 of the staging tile stg (its columns from c0). Rows past the sequence's end are not reduced (the caller
// skips them; fixed point stages zeros there, without dq_value's marks and reports).
template <int DQM, int D>
__device__ __forceinline__ void dq_stage_rows(const BwdArgs& a, unsigned char* stg, const float* acc, int rl, int q0, int c0,
                                              int start, int len, int h, int g, int tig) {
    constexpr int RSB = dq_stage_row_bytes<DQM>();
    const RowScale s0 = row_scale<DQM>(a, start + min(q0, len - 1), h, g),
                   s8 = row_scale<DQM>(a, start + min(q0 + 8, len - 1), h, g);
#pragma unroll
    for (int half = 0; half < 2; half++) {
        const int q = q0 + half * 8;
        unsigned char* const row = stg + (rl + half * 8) * RSB;
#pragma unroll
        for (int nb = 0; nb < 8; nb++) {
            const int col = nb * 8 + tig * 2;
            const float x0 = acc[4 * nb + 2 * half], x1 = acc[4 * nb + 2 * half + 1];
            if constexpr (DQM == DQ_FP32) {
                *reinterpret_cast<float2*>(row + col * 4) = make_float2(x0, x1);
            } else {
                ulonglong2 v = make_ulonglong2(0ull, 0ull);
                if (q < len) {
                    const long long i = ((long long) (start + q) * a.hq + h) * D + c0 + col;
                    const RowScale& rs = half ? s8 : s0;
                    v = make_ulonglong2(dq_value<DQM>(a, i, x0, rs), dq_value<DQM>(a, i + 1, x1, rs));
                }
                *reinterpret_cast<ulonglong2*>(row + col * 8) = v;
            }
        }
    }
}

// x rounded up to a float (an upper bound stays one); inf past a float's range.
__host__ __device__ inline float up_f32(double x) {
    float f = (float) x;
    if ((double) f < x) f = nextafterf(f, INFINITY);
    return f;
}

// D[h][t] = sum_x dOut[t, h, x] * out[t, h, x] in fp32, one warp per (t, h); any dtype and head dim. BOUND
// (DQ_FIXED, after kv_bound_kernel): also urow[h][t] = ||dOut[t, h]|| max_j ||V[j, g]|| + |D[h][t]| (inf when not
// finite, as for a NaN).
template <typename T, bool BOUND>
__global__ void dsum_kernel(float* dsum, const T* dout, const T* out, int n, int hq, int d, float* urow,
                            const unsigned* bounds, int hkv) {
    const long long row = (long long) blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= (long long) n * hq) return;
    const T *a = dout + row * d, *b = out + row * d;
    float acc = 0.f;
    double ss = 0.0;  // the bound's squared norm in float64: an fp32 one underflows below 2^-75 and overflows past 2^64
    for (int x = lane; x < d; x += 32) {
        const float y = g4::to_f32(a[x]);
        acc = fmaf(y, g4::to_f32(b[x]), acc);
        if (BOUND) ss = fma((double) y, (double) y, ss);
    }
    acc = g4::warp_sum(acc);
    if (BOUND) ss = g4::warp_sum(ss);
    const long long h = row % hq, t = row / hq;
    if (lane == 0) dsum[h * n + t] = acc;
    if (BOUND && lane == 0) {
        const float u = up_f32(sqrt(ss) * (double) bits_f32(bounds[hkv + (int) (h / (hq / hkv))]) + fabs((double) acc));
        urow[h * n + t] = u < INFINITY ? u : INFINITY;  // (NaN too: the row's dq is NaN)
    }
}

// The largest of a warp's unsigned values.
__device__ inline unsigned warp_max_u(unsigned x) {
    for (int o = 16; o > 0; o >>= 1) x = max(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}

// The block's maxima of x0 and x1 (256 threads) atomically into *m0 and *m1 (bits of non-negative floats, which order
// as the floats do).
__device__ inline void block_max_into(unsigned x0, unsigned x1, unsigned* m0, unsigned* m1) {
    __shared__ unsigned part[2][8];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    x0 = warp_max_u(x0);
    x1 = warp_max_u(x1);
    if (lane == 0) part[0][warp] = x0, part[1][warp] = x1;
    __syncthreads();
    if (warp == 0) {
        x0 = warp_max_u(lane < 8 ? part[0][lane] : 0u);
        x1 = warp_max_u(lane < 8 ? part[1][lane] : 0u);
        if (lane == 0) {
            atomicMax(m0, x0);
            atomicMax(m1, x1);
        }
    }
}

// DQ_FIXED's bounds: per kv head g (blockIdx.y), max |K[t, g, x]| and max_t ||V[t, g]|| over finite values (a NaN
// or inf makes the contributions of the rows that see it non-finite, which marks those rows); 256 threads, a warp per
// token.
template <int D>
__global__ void __launch_bounds__(256) kv_bound_kernel(unsigned* bounds, const bf16* k, const bf16* v, int n, int hkv) {
    const int g = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    unsigned mk = 0, mv = 0;
    for (long long t = (long long) blockIdx.x * 8 + warp; t < n; t += (long long) gridDim.x * 8) {
        const bf16 *kr = k + (t * hkv + g) * D, *vr = v + (t * hkv + g) * D;
        double ss = 0.0;  // float64: finite bf16 values cannot overflow it, nor underflow it to 0
#pragma unroll
        for (int x = lane; x < D; x += 32) {
            const float ak = fabsf(__bfloat162float(kr[x])), y = __bfloat162float(vr[x]);
            if (ak < INFINITY) mk = max(mk, __float_as_uint(ak));
            if (fabsf(y) < INFINITY) ss = fma((double) y, (double) y, ss);
        }
        // rounded up to a float; a finite row's norm past a float's range counts as inf (its kv head's rows' dq NaN)
        mv = max(mv, __float_as_uint(up_f32(sqrt(g4::warp_sum(ss)))));
    }
    block_max_into(mk, mv, bounds + g, bounds + hkv + g);
}

template <int D, int DQM>
constexpr int dkdv_smem() {
    constexpr int BM = D == 128 ? 32 : 64;
    return 2 * ATT_BN * D * 2 + 2 * 2 * BM * D * 2 + 2 * 2 * BM * 4 + (DQM != DQ_PASS ? ATT_BN * BM * 2 : 0);
}

// dK/dV where the device lacks the wide kernel's shared memory (dkdv_wide_kernel below), or where asked for:
// block = (key tile of 64, kv head), 4 warps x 16 keys.
template <int D, int DQM>
__global__ void __launch_bounds__(NT) dkdv_kernel(BwdArgs a) {
    constexpr int BM = D == 128 ? 32 : 64;  // == g4::att_bwd_step(D)
    constexpr int KD = D / 16, ND = D / 8, NM = BM / 8;
    if ((int) blockIdx.x >= a.status[0]) return;
    const TileRef t = a.map[blockIdx.x];
    const int start = a.cu[t.seq], len = a.cu[t.seq + 1] - start;
    // The plan orders each sequence's tiles heaviest first for query tiles (the last has the most keys). For key tiles
    // the first is the heaviest (every query of the sequence sees it), so dK/dV takes the plan's order reversed: with
    // the plan's order the longest blocks ran last (the first GPU run: 11% of dkdv_kernel's time with SMs idle).
    static_assert(ATT_BM == ATT_BN, "the plan's tiles serve as key tiles");
    const int g = blockIdx.y, key0 = (g4::tiles_of(len, ATT_BN) - 1 - t.tile) * ATT_BN;
    extern __shared__ __align__(128) unsigned char smem[];
    const unsigned sK = g4::smem_u32(smem), sV = sK + ATT_BN * D * 2, sQ = sV + ATT_BN * D * 2, sO = sQ + 2 * BM * D * 2;
    float* sL = reinterpret_cast<float*>(smem + 2 * ATT_BN * D * 2 + 4 * BM * D * 2);  // [2][BM] lse
    float* sD = sL + 2 * BM;                                                             // [2][BM] D_i
    const unsigned sLa = g4::smem_u32(sL), sDa = g4::smem_u32(sD), sS = g4::smem_u32(sD + 2 * BM);
    const long long qs = (long long) a.hq * D, ks = (long long) a.hkv * D;
    g4::load_tile<ATT_BN, D, NT>(sK, a.k + ((long long) (start + key0) * a.hkv + g) * D, ks, len - key0);
    g4::load_tile<ATT_BN, D, NT>(sV, a.v + ((long long) (start + key0) * a.hkv + g) * D, ks, len - key0);
    // query steps: rows key0, key0 + BM, ... < len (rows below key0 see none of these keys), for each head of the group
    const int nsteps = (len - key0 + BM - 1) / BM, total = a.group * nsteps;
    auto load_step = [&](int it, int stage) {
        const int h = g * a.group + it / nsteps, r0 = key0 + (it % nsteps) * BM;
        const long long row = (long long) (start + r0) * a.hq + h;
        g4::load_tile<BM, D, NT>(sQ + stage * BM * D * 2, a.q + row * D, qs, len - r0);
        g4::load_tile<BM, D, NT>(sO + stage * BM * D * 2, a.dout + row * D, qs, len - r0);
        if (threadIdx.x < BM) {
            const bool ok = r0 + (int) threadIdx.x < len;
            g4::cp_async4(sLa + (stage * BM + threadIdx.x) * 4, a.lse + (ok ? row + threadIdx.x * a.hq : row), ok);
            g4::cp_async4(sDa + (stage * BM + threadIdx.x) * 4, a.dsum + (long long) h * a.n + start + (ok ? r0 + threadIdx.x : r0), ok);
        }
    };
    load_step(0, 0);
    g4::cp_async_commit();

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
    float dk[ND][4], dv[ND][4];
#pragma unroll
    for (int i = 0; i < ND; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) dk[i][e] = dv[i][e] = 0.f;
    const int kr = key0 + warp * 16 + gid;  // this lane's keys: kr and kr + 8 (sequence positions)

    for (int it = 0; it < total; it++) {
        const int stage = it & 1;
        if (it + 1 < total) load_step(it + 1, stage ^ 1);
        g4::cp_async_commit();
        g4::cp_async_wait<1>();
        __syncthreads();
        const int ln = g4::lane_id();
        const int h = g * a.group + it / nsteps, r0 = key0 + (it % nsteps) * BM;
        const unsigned qb = sQ + stage * BM * D * 2, ob = sO + stage * BM * D * 2;
        const float* L = sL + stage * BM;
        const float* Dv = sD + stage * BM;
        // S^T = K Q^T (this warp's 16 keys x BM queries)
        float p[NM][4];
#pragma unroll
        for (int i = 0; i < NM; i++) p[i][0] = p[i][1] = p[i][2] = p[i][3] = 0.f;
#pragma unroll 2  // two k-steps in flight: their fragment loads overlap the mma (229 / 239 registers, as with 1)
        for (int kk = 0; kk < KD; kk++) {
            unsigned ka[4];
            g4::ldsm_x4(ka, sK + g4::frag_a<D>(warp * 16, kk * 16, ln));
#pragma unroll
            for (int n2 = 0; n2 < NM / 2; n2++) {
                unsigned b[4];
                g4::ldsm_x4(b, qb + g4::frag_bt<D>(n2 * 16, kk * 16, ln));
                g4::mma_bf16(p[2 * n2], ka, b[0], b[1]);
                g4::mma_bf16(p[2 * n2 + 1], ka, b[2], b[3]);
            }
        }
        // P^T = 2^(c s - lse log2 e), 0 where the query does not see the key (query < key) or is past the sequence
#pragma unroll
        for (int nb = 0; nb < NM; nb++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int qc = nb * 8 + tig * 2 + e, qr = r0 + qc;
                const float l2 = L[qc] * g4::ATT_LOG2E;
                const bool ok = qr < len;
                p[nb][e] = ok && kr <= qr ? g4::exp2_ftz(fmaf(p[nb][e], a.c, -l2)) : 0.f;
                p[nb][2 + e] = ok && kr + 8 <= qr ? g4::exp2_ftz(fmaf(p[nb][2 + e], a.c, -l2)) : 0.f;
            }
        // dV += P^T dO
#pragma unroll
        for (int kq = 0; kq < BM / 16; kq++) {
            unsigned af[4];
            g4::c_to_a(af, p[2 * kq], p[2 * kq + 1]);
#pragma unroll
            for (int n2 = 0; n2 < ND / 2; n2++) {
                unsigned b[4];
                g4::ldsm_x4_t(b, ob + g4::frag_b<D>(kq * 16, n2 * 16, ln));
                g4::mma_bf16(dv[2 * n2], af, b[0], b[1]);
                g4::mma_bf16(dv[2 * n2 + 1], af, b[2], b[3]);
            }
        }
        // dP^T = V dO^T, then dS^T = P^T (dP^T - D) in place
        float ds[NM][4];
#pragma unroll
        for (int i = 0; i < NM; i++) ds[i][0] = ds[i][1] = ds[i][2] = ds[i][3] = 0.f;
#pragma unroll 2
        for (int kk = 0; kk < KD; kk++) {
            unsigned va[4];
            g4::ldsm_x4(va, sV + g4::frag_a<D>(warp * 16, kk * 16, ln));
#pragma unroll
            for (int n2 = 0; n2 < NM / 2; n2++) {
                unsigned b[4];
                g4::ldsm_x4(b, ob + g4::frag_bt<D>(n2 * 16, kk * 16, ln));
                g4::mma_bf16(ds[2 * n2], va, b[0], b[1]);
                g4::mma_bf16(ds[2 * n2 + 1], va, b[2], b[3]);
            }
        }
#pragma unroll
        for (int nb = 0; nb < NM; nb++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const float di = Dv[nb * 8 + tig * 2 + e];
                ds[nb][e] = p[nb][e] * (ds[nb][e] - di);
                ds[nb][2 + e] = p[nb][2 + e] * (ds[nb][2 + e] - di);
            }
        // dK += dS^T Q (scaled at the end)
#pragma unroll
        for (int kq = 0; kq < BM / 16; kq++) {
            unsigned af[4];
            g4::c_to_a(af, ds[2 * kq], ds[2 * kq + 1]);
            if (DQM != DQ_PASS) {  // keep dS^T (bf16, [keys][queries]) for the block's dQ product below
                unsigned char* base = reinterpret_cast<unsigned char*>(sD + 2 * BM);
#pragma unroll
                for (int i = 0; i < 4; i++) *reinterpret_cast<unsigned*>(base + g4::frag_a_reg<BM>(warp * 16, kq * 16, lane, i)) = af[i];
            }
#pragma unroll
            for (int n2 = 0; n2 < ND / 2; n2++) {
                unsigned b[4];
                g4::ldsm_x4_t(b, qb + g4::frag_b<D>(kq * 16, n2 * 16, ln));
                g4::mma_bf16(dk[2 * n2], af, b[0], b[1]);
                g4::mma_bf16(dk[2 * n2 + 1], af, b[2], b[3]);
            }
        }
        if (DQM != DQ_PASS) {  // dQ[queries] += dS K: warp = (16-row block of the step, 64-column half of D at hd 128)
            __syncthreads();
            constexpr int WM = BM / 16;                 // 2 (hd 128) or 4 (hd 64) row blocks
            const int mt = warp % WM, dh = (warp / WM) * 64;
            float acc[8][4];
#pragma unroll
            for (int i = 0; i < 8; i++) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
#pragma unroll
            for (int kk = 0; kk < ATT_BN / 16; kk++) {
                unsigned af[4];
                g4::ldsm_x4_t(af, sS + g4::frag_at<BM>(kk * 16, mt * 16, ln));
#pragma unroll
                for (int n2 = 0; n2 < 4; n2++) {
                    unsigned b[4];
                    g4::ldsm_x4_t(b, sK + g4::frag_b<D>(kk * 16, dh + n2 * 16, ln));
                    g4::mma_bf16(acc[2 * n2], af, b[0], b[1]);
                    g4::mma_bf16(acc[2 * n2 + 1], af, b[2], b[3]);
                }
            }
            dq_add_rows<DQM, D, 8>(a, &acc[0][0], r0 + mt * 16 + gid, dh, start, len, h, g, tig);
        }
        __syncthreads();
    }

    // epilogue: dK (scaled) and dV staged in the warp's own rows of sK / sV, then 16-byte stores of valid keys
    const int r0 = warp * 16 + gid;
#pragma unroll
    for (int nd = 0; nd < ND; nd++) {
        const int col = nd * 8 + tig * 2;
        *reinterpret_cast<unsigned*>(smem + g4::swz<D>(r0, col)) = g4::pack_bf16(dk[nd][0] * a.scale, dk[nd][1] * a.scale);
        *reinterpret_cast<unsigned*>(smem + g4::swz<D>(r0 + 8, col)) = g4::pack_bf16(dk[nd][2] * a.scale, dk[nd][3] * a.scale);
        *reinterpret_cast<unsigned*>(smem + ATT_BN * D * 2 + g4::swz<D>(r0, col)) = g4::pack_bf16(dv[nd][0], dv[nd][1]);
        *reinterpret_cast<unsigned*>(smem + ATT_BN * D * 2 + g4::swz<D>(r0 + 8, col)) = g4::pack_bf16(dv[nd][2], dv[nd][3]);
    }
    __syncwarp();
    for (int i = lane; i < 16 * ND; i += 32) {
        const int r = warp * 16 + i / ND, c = i % ND;
        if (key0 + r < len) {
            const long long dst = ((long long) (start + key0 + r) * a.hkv + g) * D + c * 8;
            *reinterpret_cast<uint4*>(a.dk + dst) = *reinterpret_cast<const uint4*>(smem + g4::swz<D>(r, c * 8));
            *reinterpret_cast<uint4*>(a.dv + dst) = *reinterpret_cast<const uint4*>(smem + ATT_BN * D * 2 + g4::swz<D>(r, c * 8));
        }
    }
}

// Warp tiles of the wide backward kernels: a warp's two m-tiles (32 rows) against 32 columns (the S-like products,
// k over the head dim) or a block of columns (the dV / dK / dQ products, k over 16 rows of a shared P-like tile).
template <int M, int N>
__device__ __forceinline__ void zero_tile(float (&acc)[M][N][4]) {
#pragma unroll
    for (int m = 0; m < M; m++)
#pragma unroll
        for (int i = 0; i < N; i++) acc[m][i][0] = acc[m][i][1] = acc[m][i][2] = acc[m][i][3] = 0.f;
}

// acc (32 x 32) += A[a0.., :] B[b0.., :]^T over the D columns of two row-major [rows][D] shared tiles, 16 a k-step.
template <int D>
__device__ __forceinline__ void warp_abt(float (&acc)[2][4][4], unsigned A, int a0, unsigned B, int b0) {
#pragma unroll 2
    for (int kk = 0; kk < D / 16; kk++) {
        const int ln = g4::lane_id();
        unsigned af[2][4];
#pragma unroll
        for (int mt = 0; mt < 2; mt++) g4::ldsm_x4(af[mt], A + g4::frag_a<D>(a0 + mt * 16, kk * 16, ln));
#pragma unroll
        for (int n2 = 0; n2 < 2; n2++) {
            unsigned b[4];
            g4::ldsm_x4(b, B + g4::frag_bt<D>(b0 + n2 * 16, kk * 16, ln));
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
                g4::mma_bf16(acc[mt][2 * n2], af[mt], b[0], b[1]);
                g4::mma_bf16(acc[mt][2 * n2 + 1], af[mt], b[2], b[3]);
            }
        }
    }
}

// acc (32 x 8 NB) += A[a0.., 0..K) B[0..K, c0..): A a row-major [rows][KC] shared tile of bf16 P-like values (its 32
// rows from a0), B a row-major [K][D] shared tile (its columns from c0), 16 of K a k-step.
// TA: A is stored transposed ([K][KC], its rows the k index) and read with the transposing ldmatrix.
template <int KC, int K, int D, int NB, bool TA = false>
__device__ __forceinline__ void warp_ab(float (&acc)[2][NB][4], unsigned A, int a0, unsigned B, int c0) {
#pragma unroll
    for (int kq = 0; kq < K / 16; kq++) {
        const int ln = g4::lane_id();
        unsigned af[2][4];
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
            if (TA) g4::ldsm_x4_t(af[mt], A + g4::frag_at<KC>(kq * 16, a0 + mt * 16, ln));
            else g4::ldsm_x4(af[mt], A + g4::frag_a<KC>(a0 + mt * 16, kq * 16, ln));
        }
#pragma unroll
        for (int n2 = 0; n2 < NB / 2; n2++) {
            unsigned b[4];
            g4::ldsm_x4_t(b, B + g4::frag_b<D>(kq * 16, c0 + n2 * 16, ln));
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
                g4::mma_bf16(acc[mt][2 * n2], af[mt], b[0], b[1]);
                g4::mma_bf16(acc[mt][2 * n2 + 1], af[mt], b[2], b[3]);
            }
        }
    }
}

// Stores a warp's 32 x 32 C tile rounded to bf16 into a swizzled [rows][COLS] shared tile at (r0, c0), laid out as
// the A operand it becomes (c_to_a; frag_a reads it back).
template <int COLS>
__device__ __forceinline__ void store_a_tile(unsigned char* tile, const float (&c)[2][4][4], int r0, int c0, int lane) {
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int kq = 0; kq < 2; kq++) {
            unsigned af[4];
            g4::c_to_a(af, c[mt][2 * kq], c[mt][2 * kq + 1]);
#pragma unroll
            for (int i = 0; i < 4; i++)
                *reinterpret_cast<unsigned*>(tile + g4::frag_a_reg<COLS>(r0 + mt * 16, c0 + kq * 16, lane, i)) = af[i];
        }
}

// Stages a warp's (32 rows x 8 NB columns) accumulator, times `scale`, as bf16 into a swizzled [rows][D] shared tile
// at (r0, c0), for the epilogue's 16-byte stores.
template <int D, int NB>
__device__ __forceinline__ void stage_tile(unsigned char* tile, const float (&acc)[2][NB][4], float scale, int r0, int c0,
                                           int lane) {
    const int gid = lane >> 2, tig = lane & 3;
#pragma unroll
    for (int mt = 0; mt < 2; mt++) {
        const int r = r0 + mt * 16 + gid;
#pragma unroll
        for (int nd = 0; nd < NB; nd++) {
            const int col = c0 + nd * 8 + tig * 2;
            *reinterpret_cast<unsigned*>(tile + g4::swz<D>(r, col)) = g4::pack_bf16(acc[mt][nd][0] * scale, acc[mt][nd][1] * scale);
            *reinterpret_cast<unsigned*>(tile + g4::swz<D>(r + 8, col)) = g4::pack_bf16(acc[mt][nd][2] * scale, acc[mt][nd][3] * scale);
        }
    }
}

// ---- dK/dV at head dims 128 and 64: 128 keys a block, 8 warps (FlashAttention-2's backward tiling) ----------------
//
// Block = (key tile of 128, kv head), 8 warps; query steps of 64 rows. The products are tiled differently, as
// FlashAttention-2's are, and P^T and dS^T go through shared memory between them:
//   S^T = K Q^T and dP^T = V dO^T (128 keys x 64 queries): warp (wk, wq) = (warp % 4, warp / 4) takes keys wk * 32
//     (two m-tiles) by queries wq * 32, so each fragment it loads feeds two or four mma;
//   P^T and dS^T are rounded to bf16 (as the A operands they were) and stored in shared memory;
//   dV += P^T dO and dK += dS^T Q (128 keys x 128 columns): warp (wk, wq) takes keys wk * 32 by columns wq * 64, so its
//     dK and dV accumulators are the same 128 registers as 16 keys by 128 columns, and each fragment feeds more mma;
//   fast mode, dQ += dS K (64 queries x 128 columns): warp (warp % 2, warp / 2) takes queries (warp % 2) * 32 by
//     columns (warp / 2) * 32, added with fp32 atomics.
//   (At head dim 64 the column counts halve: dK and dV 32 columns a warp, dQ 16; 97 KiB of shared memory.)
// Per key and column the sums run over the same queries in the same order (heads of the group, then queries, 16 at a
// time) with the same P and dS as dkdv_kernel's, and queries that do not see a key add exact zeros: dK and dV are
// bit-identical to the 64-key kernel's (tools/kernel-emu's fingerprints). Against it, per mma: 0.44 ldmatrix instead of
// 0.63, and Q, dO, lse and D are copied once per 128 keys instead of 64.
constexpr int WK_BN = 128;  // keys per block
constexpr int WK_QS = 64;   // query rows per step
constexpr int WK_NT = 256;  // threads (8 warps)

template <int D, int DQM>  // (the same in every mode: the dS for dQ is the dS^T tile already there)
constexpr int dkdv_wide_smem() {
    return 2 * WK_BN * D * 2 + 2 * 2 * WK_QS * D * 2 + 2 * WK_BN * WK_QS * 2 + 2 * 2 * WK_QS * 4;
}

// A dK/dV query step's lse and D_i (QS rows from r0 of head h, whose first q/dO element is row * D; rows past the end
// zero-filled) into stage `stage` of the [stages][QS] staging arrays at sLa / sDa, by the block's first QS threads.
template <int QS>
__device__ __forceinline__ void load_lse_dsum(const BwdArgs& a, unsigned sLa, unsigned sDa, int stage, long long row,
                                              int start, int r0, int h, int len) {
    const int tx = g4::thread_x();
    if (tx < QS) {
        const bool ok = r0 + tx < len;
        g4::cp_async4(sLa + (stage * QS + tx) * 4, a.lse + (ok ? row + tx * a.hq : row), ok);
        g4::cp_async4(sDa + (stage * QS + tx) * 4, a.dsum + (long long) h * a.n + start + (ok ? r0 + tx : r0), ok);
    }
}

template <int D, int DQM>
__global__ void __launch_bounds__(WK_NT, 1) dkdv_wide_kernel(BwdArgs a) {
    constexpr int QS = WK_QS;
    constexpr int DW = D / 2;   // columns per warp in the dK/dV products
    constexpr int DQ = D / 4;   // columns per warp in the dQ product
    if ((int) blockIdx.x >= a.status[0]) return;
    const TileRef t = a.map[blockIdx.x];
    const int start = a.cu[t.seq], len = a.cu[t.seq + 1] - start;
    // key tiles heaviest (first) first: the plan's order reversed, as dkdv_kernel
    const int g = blockIdx.y, key0 = (g4::tiles_of(len, WK_BN) - 1 - t.tile) * WK_BN;
    extern __shared__ __align__(128) unsigned char smem[];
    const unsigned sK = g4::smem_u32(smem), sV = sK + WK_BN * D * 2, sQ = sV + WK_BN * D * 2, sO = sQ + 2 * QS * D * 2;
    const unsigned sP = sO + 2 * QS * D * 2, sS = sP + WK_BN * QS * 2;  // P^T, dS^T: bf16 [128 keys][64 queries]
    float* sL = reinterpret_cast<float*>(smem + (sS + WK_BN * QS * 2 - sK));  // [2][QS] lse
    float* sD = sL + 2 * QS;                                                   // [2][QS] D_i
    const unsigned sLa = g4::smem_u32(sL), sDa = g4::smem_u32(sD);
    g4::load_tile<WK_BN, D, WK_NT>(sK, a.k + ((long long) (start + key0) * a.hkv + g) * D, (long long) a.hkv * D, len - key0);
    g4::load_tile<WK_BN, D, WK_NT>(sV, a.v + ((long long) (start + key0) * a.hkv + g) * D, (long long) a.hkv * D, len - key0);
    // query steps: rows key0, key0 + QS, ... < len (rows below key0 see none of these keys), for each head of the group
    const int nsteps = (len - key0 + QS - 1) / QS, total = a.group * nsteps;
    auto load_step = [&](int it, int stage) {
        const int h = g * a.group + it / nsteps, r0 = key0 + (it % nsteps) * QS;
        const long long row = (long long) (start + r0) * a.hq + h, qs = (long long) a.hq * D;
        g4::load_tile<QS, D, WK_NT>(sQ + stage * QS * D * 2, a.q + row * D, qs, len - r0);
        g4::load_tile<QS, D, WK_NT>(sO + stage * QS * D * 2, a.dout + row * D, qs, len - r0);
        load_lse_dsum<QS>(a, sLa, sDa, stage, row, start, r0, h, len);
    };
    load_step(0, 0);
    g4::cp_async_commit();

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
    const int wk = warp & 3, wq = warp >> 2;
    float dk[2][DW / 8][4], dv[2][DW / 8][4];
    zero_tile(dk);
    zero_tile(dv);
    const int kr = key0 + wk * 32 + gid;  // this lane's keys: kr + 16 mt and kr + 16 mt + 8 (sequence positions)

    for (int it = 0; it < total; it++) {
        const int stage = it & 1;
        if (it + 1 < total) load_step(it + 1, stage ^ 1);
        g4::cp_async_commit();
        g4::cp_async_wait<1>();
        __syncthreads();
        const int h = g * a.group + it / nsteps, r0 = key0 + (it % nsteps) * QS;
        const unsigned qb = sQ + stage * QS * D * 2, ob = sO + stage * QS * D * 2;
        const float* L = sL + stage * QS;
        const float* Dv = sD + stage * QS;
        // S^T = K Q^T: this warp's 32 keys x 32 queries
        float p[2][4][4];
        zero_tile(p);
        warp_abt<D>(p, sK, wk * 32, qb, wq * 32);
        // P^T = 2^(c s - lse log2 e), 0 where the query does not see the key (query < key) or is past the sequence;
        // stored rounded to bf16 as the A operand of dV += P^T dO
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
#pragma unroll
            for (int nb = 0; nb < 4; nb++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int qc = wq * 32 + nb * 8 + tig * 2 + e, qr = r0 + qc;
                    const float l2 = L[qc] * g4::ATT_LOG2E;
                    const bool ok = qr < len;
                    p[mt][nb][e] = ok && kr + mt * 16 <= qr ? g4::exp2_ftz(fmaf(p[mt][nb][e], a.c, -l2)) : 0.f;
                    p[mt][nb][2 + e] = ok && kr + mt * 16 + 8 <= qr ? g4::exp2_ftz(fmaf(p[mt][nb][2 + e], a.c, -l2)) : 0.f;
                }
        }
        store_a_tile<QS>(smem + (sP - sK), p, wk * 32, wq * 32, lane);
        // dP^T = V dO^T, then dS^T = P^T (dP^T - D), stored rounded to bf16
        float ds[2][4][4];
        zero_tile(ds);
        warp_abt<D>(ds, sV, wk * 32, ob, wq * 32);
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
#pragma unroll
            for (int nb = 0; nb < 4; nb++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const float di = Dv[wq * 32 + nb * 8 + tig * 2 + e];
                    ds[mt][nb][e] = p[mt][nb][e] * (ds[mt][nb][e] - di);
                    ds[mt][nb][2 + e] = p[mt][nb][2 + e] * (ds[mt][nb][2 + e] - di);
                }
        }
        store_a_tile<QS>(smem + (sS - sK), ds, wk * 32, wq * 32, lane);
        __syncthreads();  // P^T and dS^T complete
        // dV += P^T dO and dK += dS^T Q (scaled at the end): this warp's 32 keys x DW columns, 16 queries a k-step
        warp_ab<QS, QS, D, DW / 8>(dv, sP, wk * 32, ob, wq * DW);
        warp_ab<QS, QS, D, DW / 8>(dk, sS, wk * 32, qb, wq * DW);
        if (DQM != DQ_PASS) {  // dQ[queries] += dS K: warp = (32 queries, DQ columns), 16 keys a k-step, atomics
            const int mq = warp & 1, dq0 = (warp >> 1) * DQ;
            float acc[2][DQ / 8][4];
            zero_tile(acc);
            warp_ab<QS, WK_BN, D, DQ / 8, true>(acc, sS, mq * 32, sK, dq0);  // dS^T read transposed: dS
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
                const int q0 = r0 + mq * 32 + mt * 16 + gid;
                dq_add_rows<DQM, D, DQ / 8>(a, &acc[mt][0][0], q0, dq0, start, len, h, g, tig);
            }
        }
        __syncthreads();  // before the next step's copies and P^T / dS^T stores
    }

    // epilogue: dK (scaled) and dV staged in sK / sV (rows = keys), then 16-byte stores of valid keys
    stage_tile<D>(smem, dk, a.scale, wk * 32, wq * DW, lane);
    stage_tile<D>(smem + WK_BN * D * 2, dv, 1.f, wk * 32, wq * DW, lane);
    __syncthreads();
    constexpr int ND = D / 8;
    for (int i = threadIdx.x; i < WK_BN * ND; i += WK_NT) {
        const int r = i / ND, c = i % ND;
        if (key0 + r < len) {
            const long long o = ((long long) (start + key0 + r) * a.hkv + g) * D + c * 8;
            *reinterpret_cast<uint4*>(a.dk + o) = *reinterpret_cast<const uint4*>(smem + g4::swz<D>(r, c * 8));
            *reinterpret_cast<uint4*>(a.dv + o) = *reinterpret_cast<const uint4*>(smem + WK_BN * D * 2 + g4::swz<D>(r, c * 8));
        }
    }
}

// ---- backward dK/dV on Hopper (sm_90a: wgmma) -------------------------------------------------------------------
//
// dkdv_wide_kernel's blocks (key tile of 128, kv head; the same plan; query steps of 64 rows of each head of the group,
// Q / dO / lse / D in three stages in DQ_PASS, two in the atomics modes) with FlashAttention-3's products: each of 2
// warpgroups takes 64 keys;
// S^T = K Q^T and dP^T = V dO^T as wgmma m64n64k16 from shared memory (K-major), P^T and dS^T = P^T (dP^T - D) in
// registers, then dV += P^T dO and dK += dS^T Q as wgmma m64nDk16 with P^T / dS^T from registers and dO / Q from shared
// memory (MN-major). dQ: in the atomics modes (DQ_FP32, DQ_FIXED) dS^T goes to shared memory and dQ += dS K is one more
// wgmma (A = dS^T read MN-major, i.e. transposed; B = K MN-major) per warpgroup, columns 64 wg .. at head dim 128 (all
// keys), keys 64 wg .. at head dim 64 (all columns; both add into dQ), staged in shared memory and added by bulk
// reductions, a row each (the values dq_add would add); in DQ_PASS dq_wgmma_kernel runs after it. Tiles in wgmma.cuh's
// layout. DQ_PASS: one barrier a step, after the next step's copies (then the copies of the step after next, into the
// stage of the step before), with the step's dV and dK running across it. The atomics modes: one
// after the dS^T stores (and the next step's copies) and one after dQ's staging (then the copies of the step after
// next), with the next step's S^T and dP^T running across the second (the loops below say how). P^T and dS^T are
// rounded to bf16 as in dkdv_wide_kernel, so the products have the same operands; the sums run in the tensor cores'
// order, not the mma.sync kernels': not their bits.
constexpr int WB_QS = 64;  // query rows per step (the key tile is WK_BN = 128: 2 warpgroups x 64)

// Stages of the query steps' tiles: three in the pass mode (one barrier a step), two in the atomics modes (whose dQ
// staging takes the room).
template <int DQM>
__host__ __device__ constexpr int dkdv_wg_stages() { return DQM == DQ_PASS ? 3 : 2; }

// K, V; stages x (Q, dO); dS^T [128][64] and 2 x dQ staging [64][64] (the atomics modes); stages x (lse, D); 1 KiB to
// align
template <int D, int DQM>
constexpr int dkdv_wg_smem() {
    constexpr int st = dkdv_wg_stages<DQM>();
    return 2 * WK_BN * D * 2 + st * 2 * WB_QS * D * 2 + st * 2 * WB_QS * 4 +
           (DQM == DQ_PASS ? 0 : WK_BN * WB_QS * 2 + 2 * 64 * dq_stage_row_bytes<DQM>()) + 1024;
}
static_assert(dkdv_wg_smem<128, DQ_FIXED>() <= 227 * 1024 && dkdv_wg_smem<128, DQ_PASS>() <= 227 * 1024,
              "the Hopper dK/dV kernel's shared memory");

#if defined(G4_WGMMA) || defined(G4_EMU)
// c_to_a over flat accumulator arrays: k-step kk's A fragment from 8-column blocks 2 kk and 2 kk + 1.
__device__ __forceinline__ void c_to_a_at(unsigned (&a)[4], const float* c, int kk) {
    a[0] = g4::pack_bf16(c[8 * kk], c[8 * kk + 1]);
    a[1] = g4::pack_bf16(c[8 * kk + 2], c[8 * kk + 3]);
    a[2] = g4::pack_bf16(c[8 * kk + 4], c[8 * kk + 5]);
    a[3] = g4::pack_bf16(c[8 * kk + 6], c[8 * kk + 7]);
}
#endif

template <int D, int DQM>
__global__ void __launch_bounds__(WG_NT, 1) dkdv_wgmma_kernel(BwdArgs a) {
#if defined(G4_WGMMA) || defined(G4_EMU)
    constexpr int QS = WB_QS, NQ = QS / 8, ND = D / 8, KS = QS / 16;
    if ((int) blockIdx.x >= a.status[0]) return;
    const TileRef t = a.map[blockIdx.x];
    const int start = a.cu[t.seq], len = a.cu[t.seq + 1] - start;
    // key tiles heaviest (first) first: the plan's order reversed, as dkdv_wide_kernel
    const int g = blockIdx.y, key0 = (g4::tiles_of(len, WK_BN) - 1 - t.tile) * WK_BN;
    extern __shared__ __align__(128) unsigned char smem[];  // (one declaration for every kernel of this file)
    unsigned char* const sk = g4::wg_base(smem);  // the swizzle atoms need 1024-byte alignment
    const unsigned sK = g4::smem_u32(sk);
    constexpr unsigned T1 = WK_BN * D * 2, T2 = QS * D * 2;
    constexpr int NST = dkdv_wg_stages<DQM>();
    // Q, dO [NST stages]; dS^T [128][64] (the atomics modes)
    const unsigned sV = sK + T1, sQ = sV + T1, sO = sQ + NST * T2, sS = sO + NST * T2;
    float* sL = reinterpret_cast<float*>(sk + (sS + (DQM == DQ_PASS ? 0 : WK_BN * QS * 2) - sK));  // [NST][QS] lse
    float* sD = sL + NST * QS;                                                                     // [NST][QS] D_i
    // the atomics modes: dQ's 64 query rows x 64 columns, a tile per warpgroup, staged for the bulk reductions
    unsigned char* const stg = reinterpret_cast<unsigned char*>(sD + NST * QS) + (threadIdx.x >> 7) * 64 * dq_stage_row_bytes<DQM>();
    const unsigned sLa = g4::smem_u32(sL), sDa = g4::smem_u32(sD);
    load_tile_wg<WK_BN, D>(sK, a.k + ((long long) (start + key0) * a.hkv + g) * D, (long long) a.hkv * D, len - key0);
    load_tile_wg<WK_BN, D>(sV, a.v + ((long long) (start + key0) * a.hkv + g) * D, (long long) a.hkv * D, len - key0);
    // query steps: rows key0, key0 + QS, ... < len (rows below key0 see none of these keys), for each head of the group
    const int nsteps = (len - key0 + QS - 1) / QS, total = a.group * nsteps;
    auto load_step = [&](int it, int stage) {
        const int h = g * a.group + it / nsteps, r0 = key0 + (it % nsteps) * QS;
        const long long row = (long long) (start + r0) * a.hq + h, qs = (long long) a.hq * D;
        load_tile_wg<QS, D>(sQ + stage * T2, a.q + row * D, qs, len - r0);
        load_tile_wg<QS, D>(sO + stage * T2, a.dout + row * D, qs, len - r0);
        load_lse_dsum<QS>(a, sLa, sDa, stage, row, start, r0, h, len);
    };
    load_step(0, 0);
    g4::cp_async_commit();

    // (the warpgroup through a shuffle: ptxas then knows the branches on it warp-uniform, as in dq_wgmma_kernel)
    const int wg = __shfl_sync(0xffffffffu, (int) threadIdx.x >> 7, 0);
    const int warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
    float dk[4 * ND], dv[4 * ND];
#pragma unroll
    for (int i = 0; i < 4 * ND; i++) dk[i] = dv[i] = 0.f;
    const int kr = key0 + wg * 64 + warp * 16 + gid;  // this thread's keys: kr and kr + 8 (sequence positions)
    // the warpgroup's 64 keys wholly past the end: no products of its own (a warpgroup-uniform choice); it still
    // copies, writes zero dS^T rows and takes its share of dQ
    const bool active = key0 + wg * 64 < len;
    float st[4 * NQ], dp[4 * NQ];   // S^T, dP^T: the warpgroup's 64 keys x a step's 64 queries
    unsigned pa[KS][4], sa[KS][4];  // P^T and dS^T (the warp's 16 keys x 16 queries a k-step) as A fragments
    // Step it's P^T and dS^T, from S^T and dP^T (the newest two wgmma groups), into pa and sa.
    const auto p_ds = [&](int it) {
        const int stage = it % NST, r0 = key0 + (it % nsteps) * QS;
        const float* L = sL + stage * QS;
        const float* Dv = sD + stage * QS;
        g4::wgmma_wait<1>();  // S^T in (dP^T may still run)
        g4::fence_regs(st);
        // P^T = 2^(c s - lse log2 e), 0 where the query does not see the key (query < key) or is past the end
#pragma unroll
        for (int nb = 0; nb < NQ; nb++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int qc = nb * 8 + tig * 2 + e, qr = r0 + qc;
                const float l2 = L[qc] * g4::ATT_LOG2E;
                const bool ok = qr < len;
                st[4 * nb + e] = ok && kr <= qr ? g4::exp2_ftz(fmaf(st[4 * nb + e], a.c, -l2)) : 0.f;
                st[4 * nb + 2 + e] = ok && kr + 8 <= qr ? g4::exp2_ftz(fmaf(st[4 * nb + 2 + e], a.c, -l2)) : 0.f;
            }
        g4::wgmma_wait<0>();
        g4::fence_regs(dp);
        // dS^T = P^T (dP^T - D)
#pragma unroll
        for (int nb = 0; nb < NQ; nb++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const float di = Dv[nb * 8 + tig * 2 + e];
                dp[4 * nb + e] = st[4 * nb + e] * (dp[4 * nb + e] - di);
                dp[4 * nb + 2 + e] = st[4 * nb + 2 + e] * (dp[4 * nb + 2 + e] - di);
            }
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
            c_to_a_at(pa[kk], st, kk);
            c_to_a_at(sa[kk], dp, kk);
        }
    };
    // dV += P^T dO, dK += dS^T Q (scaled at the end) for step it, one group: k-step kk reads rows 16 kk .. of dO / Q
    // (MN-major)
    const auto issue_dvdk = [&](int it) {
        const unsigned qb = sQ + (it % NST) * T2, ob = sO + (it % NST) * T2;
        g4::fence_regs(dv);
        g4::fence_regs(dk);
        g4::fence_regs(pa);
        g4::fence_regs(sa);
        g4::wgmma_fence();
        g4::wg_acc_rs<D, KS, false>(dv, pa, ob, QS * 128);
        g4::wg_acc_rs<D, KS, false>(dk, sa, qb, QS * 128);
        g4::wgmma_commit();
    };
    // S^T and dP^T of step it (its stage's Q and dO), a group each
    const auto issue_sdp = [&](int it) {
        const unsigned qb = sQ + (it % NST) * T2, ob = sO + (it % NST) * T2;
        g4::fence_regs(st);
        g4::fence_regs(dp);
        g4::wgmma_fence();
        g4::wg_abt<D, WK_BN, QS>(st, sK, qb, wg * 64);
        g4::wgmma_commit();
        g4::wg_abt<D, WK_BN, QS>(dp, sV, ob, wg * 64);
        g4::wgmma_commit();
    };
    // Every mode's start: step 1's copies issued, step 0's (and K's, V's) in and visible to every thread
    const auto first_steps = [&]() {
        if (total > 1) load_step(1, 1);
        g4::cp_async_commit();
        g4::cp_async_wait<1>();
        g4::fence_proxy_async();
        __syncthreads();
    };

    if constexpr (DQM == DQ_PASS) {
        // One barrier a step, in three stages: step it + 1's copies in (and visible), then step it + 2's into the stage
        // of step it - 1, whose products every warpgroup retired before the barrier. An active warpgroup issues dV and
        // dK of step it before the barrier, so that they run across it, and S^T and dP^T of step it + 1 after it.
        // Each warpgroup runs its own loop (sync_block_any), as in the atomics modes.
        const auto advance = [&](int it) {
            g4::cp_async_wait<0>();   // step it + 1's copies
            g4::fence_proxy_async();  // before the wgmma (async proxy) reads them
            g4::sync_block_any();
            if (it + 2 < total) load_step(it + 2, (it + 2) % NST);
            g4::cp_async_commit();
        };
        first_steps();
        if (active) {
            issue_sdp(0);
            p_ds(0);
            int it = 0;
            for (; it + 1 < total; it++) {
                issue_dvdk(it);
                advance(it);
                // dV and dK ran across the barrier; retired before S^T and dP^T take the registers (with them and
                // their A registers still live, head dim 128 spilled)
                g4::wgmma_wait<0>();
                g4::fence_regs(pa);
                g4::fence_regs(sa);
                issue_sdp(it + 1);
                p_ds(it + 1);
            }
            issue_dvdk(it);  // the last step
            g4::wgmma_wait<0>();
            g4::fence_regs(pa);
            g4::fence_regs(sa);
            g4::fence_regs(dv);
            g4::fence_regs(dk);
        } else {
            for (int it = 0; it + 1 < total; it++) advance(it);
        }
    } else {
        // The atomics modes: dS^T through shared memory for dQ += dS K, whose rows go to the staging tile and out by
        // bulk reductions. Two barriers a step: (1) every warpgroup's dS^T stored, and the next step's Q, dO, lse and
        // D in (its copies were waited for just before); (2) the dQ rows staged, and every product of the step retired
        // (so the step after next may be copied into its buffers). Between them an active warpgroup issues dQ_it and
        // then the next step's S^T and dP^T, which run while it stages dQ_it and waits at the second barrier; it waits
        // for them only when it computes P^T. Each warpgroup runs its own loop (an active one has the next step's
        // products in flight across the loop's back edge, which an inactive one has not: a branch merging the two
        // would make ptxas serialize the wgmma), so the barriers are barrier.sync without .aligned (sync_block_any).
        constexpr int KK = D == 128 ? WK_BN / 16 : 64 / 16;
        const int k0 = D == 128 ? 0 : wg * KK, coff = D == 128 ? wg * 64 : 0;
        // dS^T (bf16) to shared memory: the warp's keys (rows) x the step's queries, from the A fragments, before the
        // dK wgmma takes them (PTX: no access to an in-flight wgmma's A registers until its wait)
        const auto store_ds = [&]() {
            const int rk = wg * 64 + warp * 16 + gid;
#pragma unroll
            for (int kk = 0; kk < KS; kk++)
#pragma unroll
                for (int i = 0; i < 4; i++)
                    *reinterpret_cast<unsigned*>(sk + (sS - sK) + g4::wg_off<WK_BN>(rk + (i & 1) * 8, kk * 16 + tig * 2 + (i >> 1) * 8)) =
                            sa[kk][i];
        };
        // barrier (1)
        const auto sync_ds = [&](int it) {
            g4::bulk_wait_read<0>();                   // the last step's bulk reductions have read the staging tile
            if (it + 1 < total) g4::cp_async_wait<0>();  // the next step's copies
            g4::fence_proxy_async();                   // the dS^T stores and the copies, before the wgmma reads them
            g4::sync_block_any();
        };
        // dQ (the step's 64 queries) += dS K: A = dS^T read transposed (MN-major), B = K (MN-major); head dim 128:
        // this warpgroup's 64 columns over the 128 keys; 64: all 64 columns over its 64 keys (an inactive warpgroup at
        // head dim 64 adds zeros for its keys). Not fenced, not committed. (acc is each step's own: an accumulator
        // carried from step to step had the compiler copy it between the k-steps, which ptxas serializes.)
        const auto dq_batch = [&](float (&acc)[32]) {
#pragma unroll
            for (int kk = 0; kk < KK; kk++)
                g4::wgmma_ss_n64_tt(acc, g4::wg_desc(sS + (k0 + kk) * 2048, WK_BN * 128, 1024),
                                    g4::wg_desc(sK + (coff >> 6) * (WK_BN * 128) + (k0 + kk) * 2048, WK_BN * 128, 1024), kk > 0);
        };
        // dQ_it retired: its rows to the staging tile (FlashAttention-3's dQ: the same sums in fixed point, integers in
        // any order; fp32's in another order)
        const auto stage_rows = [&](int it, float (&acc)[32]) {
            const int h = g * a.group + it / nsteps, r0 = key0 + (it % nsteps) * QS;
            g4::fence_regs(acc);
            dq_stage_rows<DQM, D>(a, stg, acc, warp * 16 + gid, r0 + warp * 16 + gid, coff, start, len, h, g, tig);
            g4::fence_proxy_async();  // the staged rows, before the async proxy reads them
        };
        // barrier (2), one bulk reduction a row, then the copies of step it + 2 into step it's buffers
        const auto finish_step = [&](int it) {
            const int h = g * a.group + it / nsteps, r0 = key0 + (it % nsteps) * QS;
            g4::fence_regs(dv);
            g4::fence_regs(dk);
            g4::sync_block_any();
            const int wt = threadIdx.x & 127;  // threads 0-63 of each warpgroup: a row each
            // (at head dim 64 a warpgroup whose keys are all past the end has only zeros to add)
            if (wt < 64 && r0 + wt < len && (D == 128 || active)) {
                const long long i = ((long long) (start + r0 + wt) * a.hq + h) * D + coff;
                const unsigned src = g4::smem_u32(stg + wt * dq_stage_row_bytes<DQM>());
                if constexpr (DQM == DQ_FP32) g4::bulk_add(a.dqacc + i, src, 64 * 4);
                else g4::bulk_add(reinterpret_cast<unsigned long long*>(a.dqacc) + i, src, 64 * 8);
            }
            g4::bulk_commit();
            if (it + 2 < total) load_step(it + 2, it & 1);
            g4::cp_async_commit();
        };
        // step it's dQ product, retired with everything before it (dV and dK of the step)
        const auto dq_step = [&](int it) {
            float acc[32];
            g4::fence_regs(acc);
            g4::wgmma_fence();
            dq_batch(acc);
            g4::wgmma_commit();
            g4::wgmma_wait<0>();
            g4::fence_regs(pa);  // (the A registers of dV and dK kept to the wait: ptxas must not reuse them earlier)
            g4::fence_regs(sa);
            stage_rows(it, acc);
        };

        first_steps();
        if (active) {
            issue_sdp(0);
            p_ds(0);
            int it = 0;
            // (P^T and dS^T of step it + 1 at the end of the body: no wgmma in flight at the loop's back edge, which
            // had the compiler copy S^T's accumulators between k-steps, and ptxas serialize them)
            for (; it + 1 < total; it++) {
                store_ds();
                issue_dvdk(it);
                sync_ds(it);
                dq_step(it);
                // S^T and dP^T of step it + 1, running across barrier (2) and the bulk reductions' issue (issued
                // after the staging, not before: at head dim 128 their accumulators and dQ's would not fit the
                // registers together)
                issue_sdp(it + 1);
                finish_step(it);
                p_ds(it + 1);
            }
            store_ds();  // the last step
            issue_dvdk(it);
            sync_ds(it);
            dq_step(it);
            finish_step(it);
        } else {
#pragma unroll
            for (int kk = 0; kk < KS; kk++)
#pragma unroll
                for (int i = 0; i < 4; i++) sa[kk][i] = pa[kk][i] = 0u;
            for (int it = 0; it < total; it++) {
                store_ds();
                sync_ds(it);
                dq_step(it);
                finish_step(it);
            }
        }
    }

    // epilogue: dK (scaled) and dV staged in the K and V tiles (every read of them is done), then 16-byte stores
    {
        const int r = wg * 64 + warp * 16 + gid;
        wg_stage<WK_BN, ND>(sk, dk, a.scale, a.scale, r, tig);
        wg_stage<WK_BN, ND>(sk + T1, dv, 1.f, 1.f, r, tig);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < WK_BN * ND; i += WG_NT) {
        const int r = i / ND, c = i % ND;
        if (key0 + r < len) {
            const long long o = ((long long) (start + key0 + r) * a.hkv + g) * D + c * 8;
            *reinterpret_cast<uint4*>(a.dk + o) = *reinterpret_cast<const uint4*>(sk + g4::wg_off<WK_BN>(r, c * 8));
            *reinterpret_cast<uint4*>(a.dv + o) = *reinterpret_cast<const uint4*>(sk + T1 + g4::wg_off<WK_BN>(r, c * 8));
        }
    }
    if constexpr (DQM != DQ_PASS) g4::bulk_wait<0>();  // the last bulk reductions done (their shared source read) before the exit
#else
    __trap();  // (as fwd_wgmma_kernel)
#endif
}

template <int D>
constexpr int dq_smem() { return (2 * ATT_BM + 4 * ATT_BN) * D * 2; }

// Deterministic dQ without the wide kernels' shared memory (dq_wide_kernel below), or where asked for: block =
// (query tile, query head), 4 warps x 16 rows, key tiles 0..diagonal in order.
template <int D>
__global__ void __launch_bounds__(NT) dq_kernel(BwdArgs a) {
    constexpr int KD = D / 16, ND = D / 8, NB = ATT_BN / 8;
    if ((int) blockIdx.x >= a.status[0]) return;
    const TileRef t = a.map[blockIdx.x];
    const int start = a.cu[t.seq], len = a.cu[t.seq + 1] - start;
    const int h = blockIdx.y, g = h / a.group, row0 = t.tile * ATT_BM;
    extern __shared__ __align__(128) unsigned char smem[];
    const unsigned sQ = g4::smem_u32(smem), sO = sQ + ATT_BM * D * 2, sK = sO + ATT_BM * D * 2, sV = sK + 2 * ATT_BN * D * 2;
    const long long qs = (long long) a.hq * D, ks = (long long) a.hkv * D;
    const bf16* Kg = a.k + ((long long) start * a.hkv + g) * D;
    const bf16* Vg = a.v + ((long long) start * a.hkv + g) * D;
    const int ntiles = t.tile + 1;
    const long long qrow = (long long) (start + row0) * a.hq + h;
    g4::load_tile<ATT_BM, D, NT>(sQ, a.q + qrow * D, qs, len - row0);
    g4::load_tile<ATT_BM, D, NT>(sO, a.dout + qrow * D, qs, len - row0);
    g4::load_tile<ATT_BN, D, NT>(sK, Kg, ks, len);
    g4::load_tile<ATT_BN, D, NT>(sV, Vg, ks, len);
    g4::cp_async_commit();

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
    const int r = warp * 16 + gid;  // this lane's rows r and r + 8 of the tile
    float l2[2], dd[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int row = row0 + r + 8 * i;
        const bool ok = row < len;
        l2[i] = ok ? a.lse[(long long) (start + row) * a.hq + h] * g4::ATT_LOG2E : 0.f;
        dd[i] = ok ? a.dsum[(long long) h * a.n + start + row] : 0.f;
    }
    const bool ok0 = row0 + r < len, ok1 = row0 + r + 8 < len;
    float dq[ND][4];
#pragma unroll
    for (int i = 0; i < ND; i++) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.f;

    for (int j = 0; j < ntiles; j++) {
        const int st = j & 1;
        if (j + 1 < ntiles) {
            const long long off = (long long) (j + 1) * ATT_BN * ks;
            g4::load_tile<ATT_BN, D, NT>(sK + (st ^ 1) * ATT_BN * D * 2, Kg + off, ks, len - (j + 1) * ATT_BN);
            g4::load_tile<ATT_BN, D, NT>(sV + (st ^ 1) * ATT_BN * D * 2, Vg + off, ks, len - (j + 1) * ATT_BN);
        }
        g4::cp_async_commit();
        g4::cp_async_wait<1>();
        __syncthreads();
        const int ln = g4::lane_id();
        const unsigned kb = sK + st * ATT_BN * D * 2, vb = sV + st * ATT_BN * D * 2;
        float p[NB][4], ds[NB][4];
#pragma unroll
        for (int i = 0; i < NB; i++)
#pragma unroll
            for (int e = 0; e < 4; e++) p[i][e] = ds[i][e] = 0.f;
// head dim 128 (the fallback on devices without the wide kernels' shared memory): all k-steps unrolled, the next
// fragments loading under the mma, at the same 168 registers; 64: one at a time (unrolled, 168 registers instead of
// 128: three blocks an SM instead of four)
#pragma unroll (D == 128 ? KD : 1)
        for (int kk = 0; kk < KD; kk++) {
            unsigned qa[4], oa[4];
            g4::ldsm_x4(qa, sQ + g4::frag_a<D>(warp * 16, kk * 16, ln));
            g4::ldsm_x4(oa, sO + g4::frag_a<D>(warp * 16, kk * 16, ln));
#pragma unroll
            for (int n2 = 0; n2 < NB / 2; n2++) {
                const unsigned bo = g4::frag_bt<D>(n2 * 16, kk * 16, lane);
                unsigned b[4];
                g4::ldsm_x4(b, kb + bo);
                g4::mma_bf16(p[2 * n2], qa, b[0], b[1]);
                g4::mma_bf16(p[2 * n2 + 1], qa, b[2], b[3]);
                g4::ldsm_x4(b, vb + bo);
                g4::mma_bf16(ds[2 * n2], oa, b[0], b[1]);
                g4::mma_bf16(ds[2 * n2 + 1], oa, b[2], b[3]);
            }
        }
        const bool diag = j == t.tile;
#pragma unroll
        for (int nb = 0; nb < NB; nb++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int col = nb * 8 + tig * 2 + e;  // key within the tile; masked above the diagonal
                const float p0 = ok0 && !(diag && col > r) ? g4::exp2_ftz(fmaf(p[nb][e], a.c, -l2[0])) : 0.f;
                const float p1 = ok1 && !(diag && col > r + 8) ? g4::exp2_ftz(fmaf(p[nb][2 + e], a.c, -l2[1])) : 0.f;
                ds[nb][e] = p0 * (ds[nb][e] - dd[0]);
                ds[nb][2 + e] = p1 * (ds[nb][2 + e] - dd[1]);
            }
#pragma unroll
        for (int kk = 0; kk < ATT_BN / 16; kk++) {
            unsigned af[4];
            g4::c_to_a(af, ds[2 * kk], ds[2 * kk + 1]);
#pragma unroll
            for (int n2 = 0; n2 < ND / 2; n2++) {
                unsigned b[4];
                g4::ldsm_x4_t(b, kb + g4::frag_b<D>(kk * 16, n2 * 16, ln));
                g4::mma_bf16(dq[2 * n2], af, b[0], b[1]);
                g4::mma_bf16(dq[2 * n2 + 1], af, b[2], b[3]);
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int nd = 0; nd < ND; nd++) {
        const int col = nd * 8 + tig * 2;
        *reinterpret_cast<unsigned*>(smem + g4::swz<D>(r, col)) = g4::pack_bf16(dq[nd][0] * a.scale, dq[nd][1] * a.scale);
        *reinterpret_cast<unsigned*>(smem + g4::swz<D>(r + 8, col)) = g4::pack_bf16(dq[nd][2] * a.scale, dq[nd][3] * a.scale);
    }
    __syncwarp();
    for (int i = lane; i < 16 * ND; i += 32) {
        const int rr = warp * 16 + i / ND, c = i % ND;
        if (row0 + rr < len)
            *reinterpret_cast<uint4*>(a.dq + ((long long) (start + row0 + rr) * a.hq + h) * D + c * 8) =
                    *reinterpret_cast<const uint4*>(smem + g4::swz<D>(rr, c * 8));
    }
}

// Deterministic dQ at head dims 128 and 64: block = (query tile of 128, query head), 8 warps, the mirror of
// dkdv_wide_kernel.
// Per key tile of 64 (double-buffered): S = Q K^T and dP = dO V^T (128 x 64) as 32 rows x 32 keys a warp (warp % 4,
// warp / 4), dS = P (dP - D) rounded to bf16 into shared memory, then dQ += dS K (128 x 128) as 32 rows x 64 columns
// a warp. Each row's sum runs over the same keys in the same order with the same dS as dq_kernel's (a key tile past a
// row's diagonal adds exact zeros), so dQ is bit-identical. Against dq_kernel: 0.44 ldmatrix per mma instead of 0.63,
// and K/V copied once per 128 query rows instead of 64.
constexpr int WQ_BM = 128;  // query rows per block
static_assert(WQ_BM == WK_BN, "dK/dV's key tiles and dQ's query tiles come from one plan");

template <int D>
constexpr int dq_wide_smem() {
    return 2 * WQ_BM * D * 2 + 4 * ATT_BN * D * 2 + WQ_BM * ATT_BN * 2;
}

template <int D>
__global__ void __launch_bounds__(WK_NT, 1) dq_wide_kernel(BwdArgs a) {
    constexpr int DW = D / 2, BN = ATT_BN;
    if ((int) blockIdx.x >= a.status[0]) return;
    const TileRef t = a.map[blockIdx.x];
    const int start = a.cu[t.seq], len = a.cu[t.seq + 1] - start;
    const int h = blockIdx.y, g = h / a.group, row0 = t.tile * WQ_BM;
    extern __shared__ __align__(128) unsigned char smem[];
    const unsigned sQ = g4::smem_u32(smem), sO = sQ + WQ_BM * D * 2, sK = sO + WQ_BM * D * 2, sV = sK + 2 * BN * D * 2;
    const unsigned sS = sV + 2 * BN * D * 2;  // dS: bf16 [128 rows][64 keys]
    const auto kv_off = [&](int j) { return ((long long) (start + j * BN) * a.hkv + g) * D; };
    // key tiles 0 .. the second half's diagonal, not past the sequence's end
    const int ntiles = min(2 * t.tile + 2, g4::tiles_of(len, BN));
    const long long qrow = (long long) (start + row0) * a.hq + h;
    g4::load_tile<WQ_BM, D, WK_NT>(sQ, a.q + qrow * D, (long long) a.hq * D, len - row0);
    g4::load_tile<WQ_BM, D, WK_NT>(sO, a.dout + qrow * D, (long long) a.hq * D, len - row0);
    g4::load_tile<BN, D, WK_NT>(sK, a.k + kv_off(0), (long long) a.hkv * D, len);
    g4::load_tile<BN, D, WK_NT>(sV, a.v + kv_off(0), (long long) a.hkv * D, len);
    g4::cp_async_commit();

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
    const int wm = warp & 3, wn = warp >> 2;
    // this lane's rows in the S / dP products: wm * 32 + 16 mt + gid (+ 8), tile-relative
    float l2[2][2], dd[2][2];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const int row = row0 + wm * 32 + mt * 16 + gid + 8 * i;
            const bool ok = row < len;
            l2[mt][i] = ok ? a.lse[(long long) (start + row) * a.hq + h] * g4::ATT_LOG2E : 0.f;
            dd[mt][i] = ok ? a.dsum[(long long) h * a.n + start + row] : 0.f;
        }
    float dq[2][DW / 8][4];
    zero_tile(dq);

    for (int j = 0; j < ntiles; j++) {
        const int st = j & 1;
        if (j + 1 < ntiles) {
            const long long ks = (long long) a.hkv * D;
            g4::load_tile<BN, D, WK_NT>(sK + (st ^ 1) * BN * D * 2, a.k + kv_off(j + 1), ks, len - (j + 1) * BN);
            g4::load_tile<BN, D, WK_NT>(sV + (st ^ 1) * BN * D * 2, a.v + kv_off(j + 1), ks, len - (j + 1) * BN);
        }
        g4::cp_async_commit();
        g4::cp_async_wait<1>();
        __syncthreads();
        const unsigned kb = sK + st * BN * D * 2, vb = sV + st * BN * D * 2;
        // this warp's 32 rows see a key of the tile and are not all past the sequence's end: else every dS of theirs
        // is 0 and they skip the tile (the warps sharing their rows skip it alike)
        const bool live = row0 + wm * 32 < len && j * BN <= row0 + wm * 32 + 31;
        if (live) {
            float p[2][4][4], ds[2][4][4];
            zero_tile(p);
            zero_tile(ds);
            warp_abt<D>(p, sQ, wm * 32, kb, wn * 32);   // S = Q K^T
            warp_abt<D>(ds, sO, wm * 32, vb, wn * 32);  // dP = dO V^T
            // P = 2^(c s - lse log2 e) (0 above the diagonal and past the sequence), dS = P (dP - D), rounded to
            // bf16 into shared memory as the A operand of dQ += dS K
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
                const int r = row0 + wm * 32 + mt * 16 + gid;  // sequence positions r and r + 8
#pragma unroll
                for (int nb = 0; nb < 4; nb++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        const int key = j * BN + wn * 32 + nb * 8 + tig * 2 + e;
                        const float p0 = r < len && key <= r ? g4::exp2_ftz(fmaf(p[mt][nb][e], a.c, -l2[mt][0])) : 0.f;
                        const float p1 = r + 8 < len && key <= r + 8 ? g4::exp2_ftz(fmaf(p[mt][nb][2 + e], a.c, -l2[mt][1])) : 0.f;
                        ds[mt][nb][e] = p0 * (ds[mt][nb][e] - dd[mt][0]);
                        ds[mt][nb][2 + e] = p1 * (ds[mt][nb][2 + e] - dd[mt][1]);
                    }
            }
            store_a_tile<BN>(smem + (sS - sQ), ds, wm * 32, wn * 32, lane);
        }
        __syncthreads();  // dS complete
        // dQ += dS K: this warp's 32 rows x DW columns, 16 keys a k-step
        if (live) warp_ab<BN, BN, D, DW / 8>(dq, sS, wm * 32, kb, wn * DW);
        __syncthreads();  // before the next tile's copies and dS stores
    }
    // epilogue: dQ (scaled) staged in sQ (rows = queries), then 16-byte stores of valid rows
    stage_tile<D>(smem, dq, a.scale, wm * 32, wn * DW, lane);
    __syncthreads();
    constexpr int ND = D / 8;
    for (int i = threadIdx.x; i < WQ_BM * ND; i += WK_NT) {
        const int rr = i / ND, c = i % ND;
        if (row0 + rr < len)
            *reinterpret_cast<uint4*>(a.dq + ((long long) (start + row0 + rr) * a.hq + h) * D + c * 8) =
                    *reinterpret_cast<const uint4*>(smem + g4::swz<D>(rr, c * 8));
    }
}

// ---- backward dQ on Hopper (sm_90a: wgmma): the PASS mode's second pass after dkdv_wgmma_kernel -------------------
//
// dq_wide_kernel's blocks (query tile of 128 rows, query head; the same plan) with 2 warpgroups of 64 rows; key tiles
// of 64 up to the block's diagonal, K and V in three buffers. Per tile and warpgroup: S = Q K^T and dP = dO V^T as
// wgmma m64n64k16 from shared memory, dS = P (dP - D_i) in registers (rounded to bf16 as dq_wide_kernel rounds it),
// dQ += dS K as wgmma m64nDk16 with dS from registers and K read MN-major. dS never leaves the registers: one barrier
// a tile. Deterministic (no atomics). FlashAttention-3's intra-warpgroup overlap, as in fwd_wgmma_kernel: tile j + 1's
// products are issued around tile j's dQ (S_{j+1}, then dQ_j, then dP_{j+1}, a commit group each), so that P_{j+1}
// (the exp2s) is computed while dQ_j and dP_{j+1} run; the wait for dP_{j+1} retires dQ_j, which frees dS_j's A
// registers for dS_{j+1}. Tile j + 2's copies go, after the barrier that follows every warpgroup's wait for
// dQ_{j-1}, into the buffer tile j - 1 used (three buffers: 161 KiB at head dim 128). Each dQ element sees the same
// products in the same order as one tile at a time: the same bits.
template <int D>
constexpr int dq_wg_smem() { return 2 * WQ_BM * D * 2 + 3 * 2 * ATT_BN * D * 2 + 1024; }  // Q, dO; 3 x (K, V); align

template <int D>
__global__ void __launch_bounds__(WG_NT, 1) dq_wgmma_kernel(BwdArgs a) {
#if defined(G4_WGMMA) || defined(G4_EMU)
    constexpr int BN = ATT_BN, NS = BN / 8, ND = D / 8, KS = BN / 16;
    if ((int) blockIdx.x >= a.status[0]) return;
    const TileRef t = a.map[blockIdx.x];
    const int start = a.cu[t.seq], len = a.cu[t.seq + 1] - start;
    const int h = blockIdx.y, g = h / a.group, row0 = t.tile * WQ_BM;
    extern __shared__ __align__(128) unsigned char smem[];  // (one declaration for every kernel of this file)
    unsigned char* const sq = g4::wg_base(smem);  // the swizzle atoms need 1024-byte alignment
    const unsigned sQ = g4::smem_u32(sq);
    constexpr unsigned TQ = WQ_BM * D * 2, TK = BN * D * 2;
    const unsigned sO = sQ + TQ;
    const auto sK = [&](int j) { return sO + TQ + (unsigned) (j % 3) * 2 * TK; };  // tile j's K; its V at sK(j) + TK
    const long long ks = (long long) a.hkv * D;
    const auto load_kv = [&](int j) {
        const long long o = ((long long) (start + j * BN) * a.hkv + g) * D;
        load_tile_wg<BN, D>(sK(j), a.k + o, ks, len - j * BN);
        load_tile_wg<BN, D>(sK(j) + TK, a.v + o, ks, len - j * BN);
        g4::cp_async_commit();
    };
    // key tiles 0 .. the second half's diagonal, not past the sequence's end
    const int ntiles = min(2 * t.tile + 2, g4::tiles_of(len, BN));
    const long long qrow = (long long) (start + row0) * a.hq + h;
    load_tile_wg<WQ_BM, D>(sQ, a.q + qrow * D, (long long) a.hq * D, len - row0);
    load_tile_wg<WQ_BM, D>(sO, a.dout + qrow * D, (long long) a.hq * D, len - row0);
    load_kv(0);
    if (ntiles > 1) load_kv(1);

    // (the warpgroup through a shuffle from lane 0: ptxas then knows it, and the branches on it, warp-uniform, and
    // keeps the wgmma asynchronous across them, as CUTLASS's canonical_warp_group_idx)
    const int wg = __shfl_sync(0xffffffffu, (int) threadIdx.x >> 7, 0);
    const int warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
    const int r = row0 + wg * 64 + warp * 16 + gid;  // this thread's rows: r and r + 8 (sequence positions)
    float l2[2], dd[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const bool ok = r + 8 * i < len;
        l2[i] = ok ? a.lse[(long long) (start + r + 8 * i) * a.hq + h] * g4::ATT_LOG2E : 0.f;
        dd[i] = ok ? a.dsum[(long long) h * a.n + start + r + 8 * i] : 0.f;
    }
    // the tiles the warpgroup computes: those whose first key its last row sees (past them every dS of its rows is 0),
    // none when its 64 rows are wholly past the sequence's end (it only copies); warpgroup-uniform
    const int nmine = row0 + wg * 64 < len ? min(ntiles, (row0 + wg * 64 + 63) / BN + 1) : 0;
    float dq[4 * ND], s[4 * NS], dp[4 * NS];  // dQ; S and dP: the warpgroup's 64 rows x a tile's 64 keys
    unsigned sa[KS][4];                        // dS = P (dP - D) as A fragments (the warp's 16 rows x 16 keys a k-step)
#pragma unroll
    for (int i = 0; i < 4 * ND; i++) dq[i] = 0.f;

    if (ntiles > 1) g4::cp_async_wait<1>();  // Q, dO and tile 0 (tile 1 may still be in flight)
    else g4::cp_async_wait<0>();
    g4::fence_proxy_async();  // this thread's copies, before the wgmma (async proxy) reads them
    __syncthreads();
    // Tile j's P and dS (after S_j, then dP_j and the dQ before it, have retired; FIRST: tile 0, no dQ before it).
    const auto p_ds = [&](int j, auto first) {
        if constexpr (decltype(first)::value) g4::wgmma_wait<1>();  // S_0 in (dP_0 may still run)
        else g4::wgmma_wait<2>();                                   // S_j in (dQ_{j-1} and dP_j may still run)
        g4::fence_regs(s);
        // P = 2^(c s - lse log2 e), 0 above the diagonal and past the sequence
#pragma unroll
        for (int nb = 0; nb < NS; nb++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int key = j * BN + nb * 8 + tig * 2 + e;
                s[4 * nb + e] = r < len && key <= r ? g4::exp2_ftz(fmaf(s[4 * nb + e], a.c, -l2[0])) : 0.f;
                s[4 * nb + 2 + e] = r + 8 < len && key <= r + 8 ? g4::exp2_ftz(fmaf(s[4 * nb + 2 + e], a.c, -l2[1])) : 0.f;
            }
        g4::wgmma_wait<0>();  // dP_j, and dQ_{j-1}: its A registers (dS_{j-1}) are free, and tile j - 1's buffer
        g4::fence_regs(dp);
        g4::fence_regs(sa);
#pragma unroll
        for (int nb = 0; nb < NS; nb++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                dp[4 * nb + e] = s[4 * nb + e] * (dp[4 * nb + e] - dd[0]);
                dp[4 * nb + 2 + e] = s[4 * nb + 2 + e] * (dp[4 * nb + 2 + e] - dd[1]);
            }
#pragma unroll
        for (int kk = 0; kk < KS; kk++) c_to_a_at(sa[kk], dp, kk);
    };
    // Tile j + 1 in and visible, and tile j + 2's copies into tile j - 1's buffer: every thread, once for each j in
    // order, but from different places in the code (the warpgroups' loops differ), so not __syncthreads.
    const auto advance = [&](int j) {
        if (j + 1 < ntiles) {
            g4::cp_async_wait<0>();   // tile j + 1
            g4::fence_proxy_async();  // this thread's copies of it, before the wgmma (async proxy) reads them
            g4::sync_block_any();     // everyone's copies in; every warpgroup's products of tile j - 1 retired
            if (j + 2 < ntiles) load_kv(j + 2);
        }
    };
    // The warpgroup's tiles, in code where every branch is warp-uniform (wg from a shuffle) and no branch merges two
    // definitions of a register a wgmma in flight owns: ptxas would serialize the wgmma there.
    int j = 0;
    if (nmine > 0) {
        g4::fence_regs(dq);  // (its zeros set here, not next to a wgmma in flight)
        g4::wg_two_abt<D, WQ_BM, BN>(s, dp, sQ, sK(0), sO, sK(0) + TK, wg * 64);  // S_0, dP_0
        p_ds(0, std::true_type{});
        for (; j + 1 < nmine; j++) {
            advance(j);
            // S_{j+1}, dQ_j += dS_j K_j (K MN-major: both column blocks through LBO), dP_{j+1}: a group each
            g4::fence_regs(s);
            g4::fence_regs(dp);
            g4::fence_regs(sa);
            g4::wgmma_fence();
            g4::wg_abt<D, WQ_BM, BN>(s, sQ, sK(j + 1), wg * 64);
            g4::wgmma_commit();
            g4::wg_acc_rs<D, KS, false>(dq, sa, sK(j), BN * 128);
            g4::wgmma_commit();
            g4::wg_abt<D, WQ_BM, BN>(dp, sO, sK(j + 1) + TK, wg * 64);
            g4::wgmma_commit();
            p_ds(j + 1, std::false_type{});
        }
        advance(j);  // the last tile: its dQ
        g4::fence_regs(sa);
        g4::wgmma_fence();
        g4::wg_acc_rs<D, KS, false>(dq, sa, sK(j), BN * 128);
        g4::wgmma_commit();
        g4::wgmma_wait<0>();
        g4::fence_regs(dq);
        g4::fence_regs(sa);
        j++;
    }
    for (; j < ntiles; j++) advance(j);  // the block's tiles past the warpgroup's last (or all: no rows in the sequence)

    // epilogue: dQ (scaled) staged in the warp's own rows of the Q tile (only its warpgroup read them), 16-byte stores
    if (nmine > 0) {
        wg_stage<WQ_BM, ND>(sq, dq, a.scale, a.scale, wg * 64 + warp * 16 + gid, tig);
        __syncwarp();
        wg_store_rows<WQ_BM, ND>(a.dq + ((long long) (start + row0) * a.hq + h) * D, (long long) a.hq * D, sq,
                                 wg * 64 + warp * 16, len - row0, lane);
    }
#else
    __trap();  // (as fwd_wgmma_kernel)
#endif
}

// DQ_FIXED: dq = bf16(scale * accumulator * 2^-f) from float64 (one rounding), NaN for a row marked non-finite;
// nothing when cuSeqlens was invalid.
__global__ void dq_fixed_convert_kernel(bf16* dq, const unsigned long long* acc, long long total, int n, int hq, int hkv,
                                        int d, float scale, const unsigned* bounds, const float* urow, const unsigned* nfrow,
                                        const int* status) {
    if (!status[1]) return;
    const int group = hq / hkv;
    for (long long i = blockIdx.x * (long long) blockDim.x + threadIdx.x; i < total; i += (long long) gridDim.x * blockDim.x) {
        const long long row = i / d, t = row / hq;
        const int h = (int) (row % hq);
        int f;
        const long long u = (long long) h * n + t;
        const bool ok = dq_fixed_exponent(bits_f32(bounds[h / group]), urow[u], &f) && nfrow[u] == 0;
        dq[i] = __double2bfloat16(ok ? (double) (long long) acc[i] * ldexp((double) scale, -f) : (double) NAN);
    }
}

// DQ_FP32: dq = bf16(scale * accumulator), nothing when cuSeqlens was invalid.
__global__ void dq_convert_kernel(bf16* dq, const float* acc, long long n, float scale, const int* status) {
    if (!status[1]) return;
    for (long long i = blockIdx.x * (long long) blockDim.x + threadIdx.x; i < n; i += (long long) gridDim.x * blockDim.x)
        dq[i] = __float2bfloat16_rn(acc[i] * scale);
}

// ---- generic path: one warp per row, float64 accumulation -----------------------------------------------------------

struct GenArgs {
    const void *q, *k, *v, *dout;
    void *out, *dq, *dk, *dv;
    float* lse;
    const float* lse_in;
    const float* dsum;
    const int* cu;
    const int* status;
    int n, b, hq, hkv, group, d;
    double scale;
};

// The sequence holding token t: the last s with cu[s] <= t (cuSeqlens already validated by the plan).
__device__ inline int sequence_of(const int* cu, int b, int t) {
    int lo = 0, hi = b - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (cu[mid] <= t) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

__device__ inline double warp_max_d(double x) {
    for (int o = 16; o > 0; o >>= 1) x = fmax(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}

template <typename T>
__device__ inline double dot_row(const float* a, const T* b, int d) {
    double s = 0;
    for (int x = 0; x < d; x++) s = fma((double) a[x], (double) g4::to_f32(b[x]), s);
    return s;
}

// Per warp: shared floats of `rows` vectors of d, then doubles of `acc` vectors of d.
__device__ inline void warp_smem(int rows, int acc, int d, float** f, double** dbl) {
    extern __shared__ double gsm[];
    const int W = blockDim.x >> 5, warp = threadIdx.x >> 5;
    *dbl = gsm + (long long) warp * acc * d;
    *f = reinterpret_cast<float*>(gsm + (long long) W * acc * d) + (long long) warp * rows * d;
}

template <typename T>
__global__ void gen_fwd_kernel(GenArgs a) {
    if (!a.status[1]) return;
    const long long row = (long long) blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= (long long) a.n * a.hq) return;
    const int lane = threadIdx.x & 31, d = a.d;
    const int t = (int) (row / a.hq), h = (int) (row % a.hq), g = h / a.group;
    const int start = a.cu[sequence_of(a.cu, a.b, t)];
    float* qv;
    double* acc;
    warp_smem(1, 1, d, &qv, &acc);
    const T *Q = static_cast<const T*>(a.q), *K = static_cast<const T*>(a.k), *V = static_cast<const T*>(a.v);
    for (int x = lane; x < d; x += 32) {
        qv[x] = g4::to_f32(Q[row * d + x]);
        acc[x] = 0;
    }
    __syncwarp();
    double m = -INFINITY, l = 0;
    for (int j0 = start; j0 <= t; j0 += 32) {
        const int j = j0 + lane, cnt = min(32, t - j0 + 1);
        const double s = j <= t ? dot_row(qv, K + ((long long) j * a.hkv + g) * d, d) * a.scale : -INFINITY;
        const double mn = fmax(m, warp_max_d(s));  // finite: key j0 <= t is in every chunk
        const double alpha = exp(m - mn), p = j <= t ? exp(s - mn) : 0.0;
        l = l * alpha + g4::warp_sum(p);
        g4::warp_accumulate_rows(acc, alpha, p, ((long long) j * a.hkv + g) * d, cnt, V, d, lane);
        m = mn;
    }
    T* O = static_cast<T*>(a.out);
    for (int x = lane; x < d; x += 32) O[row * d + x] = g4::from_f32<T>((float) (acc[x] / l));
    if (lane == 0) a.lse[row] = (float) (m + log(l));
}

template <typename T>
__global__ void gen_dq_kernel(GenArgs a) {
    if (!a.status[1]) return;
    const long long row = (long long) blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= (long long) a.n * a.hq) return;
    const int lane = threadIdx.x & 31, d = a.d;
    const int t = (int) (row / a.hq), h = (int) (row % a.hq), g = h / a.group;
    const int start = a.cu[sequence_of(a.cu, a.b, t)];
    float* f;
    double* acc;
    warp_smem(2, 1, d, &f, &acc);
    float *qv = f, *ov = f + d;
    const T *Q = static_cast<const T*>(a.q), *K = static_cast<const T*>(a.k), *V = static_cast<const T*>(a.v),
            *DO = static_cast<const T*>(a.dout);
    for (int x = lane; x < d; x += 32) {
        qv[x] = g4::to_f32(Q[row * d + x]);
        ov[x] = g4::to_f32(DO[row * d + x]);
        acc[x] = 0;
    }
    __syncwarp();
    const double lse = a.lse_in[row], di = a.dsum[(long long) h * a.n + t];
    for (int j0 = start; j0 <= t; j0 += 32) {
        const int j = j0 + lane, cnt = min(32, t - j0 + 1);
        double ds = 0;
        if (j <= t) {
            const long long kb = ((long long) j * a.hkv + g) * d;
            const double p = exp(dot_row(qv, K + kb, d) * a.scale - lse);
            ds = p * (dot_row(ov, V + kb, d) - di);
        }
        g4::warp_accumulate_rows(acc, 1.0, ds, ((long long) j * a.hkv + g) * d, cnt, K, d, lane);
    }
    T* DQ = static_cast<T*>(a.dq);
    for (int x = lane; x < d; x += 32) DQ[row * d + x] = g4::from_f32<T>((float) (acc[x] * a.scale));
}

// dK, dV of key row (j, kv head g): over the group's query heads and the queries i >= j of j's sequence.
template <typename T>
__global__ void gen_dkdv_kernel(GenArgs a) {
    if (!a.status[1]) return;
    const long long row = (long long) blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= (long long) a.n * a.hkv) return;
    const int lane = threadIdx.x & 31, d = a.d;
    const int j = (int) (row / a.hkv), g = (int) (row % a.hkv);
    const int end = a.cu[sequence_of(a.cu, a.b, j) + 1];
    float* f;
    double* acc;
    warp_smem(2, 2, d, &f, &acc);
    float *kv = f, *vv = f + d;
    double *dk = acc, *dv = acc + d;
    const T *Q = static_cast<const T*>(a.q), *K = static_cast<const T*>(a.k), *V = static_cast<const T*>(a.v),
            *DO = static_cast<const T*>(a.dout);
    for (int x = lane; x < d; x += 32) {
        kv[x] = g4::to_f32(K[row * d + x]);
        vv[x] = g4::to_f32(V[row * d + x]);
        dk[x] = dv[x] = 0;
    }
    __syncwarp();
    for (int h = g * a.group; h < (g + 1) * a.group; h++)
        for (int i0 = j; i0 < end; i0 += 32) {
            const int i = i0 + lane, cnt = min(32, end - i0);
            const long long qb = ((long long) i * a.hq + h) * d;  // (read only for i < end)
            double p = 0, ds = 0;
            if (i < end) {
                p = exp(dot_row(kv, Q + qb, d) * a.scale - (double) a.lse_in[(long long) i * a.hq + h]);
                ds = p * (dot_row(vv, DO + qb, d) - (double) a.dsum[(long long) h * a.n + i]);
            }
            g4::warp_accumulate_rows(dk, 1.0, ds, qb, cnt, Q, d, lane);
            g4::warp_accumulate_rows(dv, 1.0, p, qb, cnt, DO, d, lane);
        }
    T *DK = static_cast<T*>(a.dk), *DV = static_cast<T*>(a.dv);
    for (int x = lane; x < d; x += 32) {
        DK[row * d + x] = g4::from_f32<T>((float) (dk[x] * a.scale));
        DV[row * d + x] = g4::from_f32<T>((float) dv[x]);
    }
}

// Warps per block of the generic kernels and their shared bytes: 4 warps while that fits in 48 KiB.
static int gen_warps(int rows, int acc, int d) {
    long long per = (long long) d * (rows * 4 + acc * 8);
    int w = 4;
    while (w > 1 && per * w > 48 * 1024) w--;
    return per * w > 48 * 1024 ? 0 : w;
}

template <typename K>
static int launch_gen(K kernel, const GenArgs& a, long long rows, int nrows, int nacc, cudaStream_t st) {
    if (rows <= 0) return 0;
    const int w = gen_warps(nrows, nacc, a.d);
    if (w == 0) return (int) cudaErrorInvalidValue;  // head dim too large for the generic path's shared vectors
    const long long blocks = (rows + w - 1) / w;
    kernel<<<(unsigned) blocks, 32 * w, (size_t) w * a.d * (nrows * 4 + nacc * 8), st>>>(a);
    return g4::launched();
}

// ---- launchers ----------------------------------------------------------------------------------------------------

static bool fast_path(int dtype, int d, std::initializer_list<g4_ptr> ptrs) {
    if (dtype != G4_BF16 || (d != 64 && d != 128)) return false;
    for (g4_ptr p : ptrs)
        if (!g4::aligned16(p)) return false;
    return true;
}

template <typename K>
static int set_smem(K kernel, int bytes) {
    return (int) cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
}

// The tile list of rows-row tiles (FWD_BM for the forward, ATT_BM for the backward's dQ and dK/dV); the map holds
// ATT_BM tiles, the most there can be.
static int plan(const int* cu, int b, int n, int rows, unsigned char* ws, const Layout& L, int* flag, int op,
                cudaStream_t st) {
    plan_kernel<<<1, PLAN_NT, 0, st>>>(cu, b, n, rows, reinterpret_cast<int*>(ws + L.status),
                                       reinterpret_cast<TileRef*>(ws + L.map), flag, op);
    return g4::launched();
}

template <int D>
static int forward_fast(const FwdArgs& a, unsigned slots, cudaStream_t st) {
    constexpr int smem = fwd_smem<D>();
    int e = set_smem(fwd_kernel<D>, smem);
    if (e) return e;
    fwd_kernel<D><<<dim3(slots, a.hq), NT, smem, st>>>(a);
    return g4::launched();
}

// The sm_90a forward: on a device of compute capability 9.0 (H100, H200: the sm_90a image's devices), when asked.
// Asked on every call, not cached: cudaDeviceGetAttribute reads the runtime's own copy of the device's attributes (it
// is the fast query, unlike cudaGetDeviceProperties), and the emulator's cases change a device's attributes between
// calls (G4EMU_SMEM_OPTIN, in wide_backward's query below).
static bool wgmma_device() {
    int dev = 0, major = 0, minor = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev)) {
        (void) cudaGetLastError();
        return false;
    }
    return major == 9 && minor == 0;
}

template <int D>
static int forward_wgmma(const FwdArgs& a, unsigned slots, cudaStream_t st) {
    constexpr int smem = fwd_wg_smem<D>();
    int e = set_smem(fwd_wgmma_kernel<D>, smem);
    if (e) return e;
    fwd_wgmma_kernel<D><<<dim3(slots, a.hq), WG_NT, smem, st>>>(a);
    return g4::launched();
}

// cuTensorMapEncodeTiled from the driver, through the runtime (nothing links libcuda); null where it has none (asked
// once a process: a driver without it stays without it).
static PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
    static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
        void* p = nullptr;
        cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) != cudaSuccess) {
            (void) cudaGetLastError();  // (the call's own error only)
            p = nullptr;
        } else if (q != cudaDriverEntryPointSuccess) {
            p = nullptr;
        }
        return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
    }();
    return fn;
}

// A [n][heads][d] bf16 tensor (16-byte aligned: fast_path) as TMA's 3-D tensor (d, heads, n), innermost first, read
// in boxes of 64 columns x 1 head x `rows` rows, 128-byte swizzled (wgmma.cuh's layout); zeros past its n rows.
static bool encode_rows(CUtensorMap* m, const bf16* base, int n, int heads, int d, int rows) {
    const PFN_cuTensorMapEncodeTiled_v12000 enc = tensor_map_encoder();
    if (enc == nullptr) return false;
    const cuuint64_t dims[3] = {(cuuint64_t) d, (cuuint64_t) heads, (cuuint64_t) n};
    const cuuint64_t strides[2] = {(cuuint64_t) d * 2, (cuuint64_t) heads * d * 2};  // bytes, of dimensions 1 and 2
    const cuuint32_t box[3] = {64, 1, (cuuint32_t) rows}, step[3] = {1, 1, 1};
    return enc(m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<bf16*>(base), dims, strides, box, step,
               CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
               CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

// The sm_90a forward with the producer warpgroup (fwd_tma_kernel); cudaErrorNotSupported where the driver gives no
// tensor map encoder or refuses a map. Fewer than 128 tokens in all: fwd_wgmma_kernel (the same bits), as the boxes of
// 128 rows would be longer than the tensor (which cuda.h does not forbid, but CCCL's checks do). PS: a block an SM
// (at most one a work item), each going through its items.
template <int D, bool PP, bool PS>
static int forward_tma(const FwdArgs& a, int n, unsigned slots, cudaStream_t st) {
    if (n < FWD_BM) return forward_wgmma<D>(a, slots, st);
    FwdMaps m;
    if (!encode_rows(&m.q, a.q, n, a.hq, D, FWD_BM) || !encode_rows(&m.k, a.k, n, a.hkv, D, WG_BN) ||
        !encode_rows(&m.v, a.v, n, a.hkv, D, WG_BN))
        return (int) cudaErrorNotSupported;
    constexpr int smem = fwd_tma_smem<D, PS>();
    int e = set_smem(fwd_tma_kernel<D, PP, PS>, smem);
    if (e) return e;
    dim3 grid(slots, a.hq);
    if (PS) {
        int dev = 0, sms = 0;
        cudaError_t err = cudaGetDevice(&dev);
        if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
        if (err != cudaSuccess) {
            (void) cudaGetLastError();  // (the runtime left clean)
            return (int) err;
        }
        grid = dim3((unsigned) std::min<long long>((long long) slots * a.hq, std::max(sms, 1)), 1);
    }
    fwd_tma_kernel<D, PP, PS><<<grid, TMA_NT, smem, st>>>(a, m);
    return g4::launched();
}

template <typename T>
static int forward_generic(GenArgs& a, cudaStream_t st) {
    return launch_gen(gen_fwd_kernel<T>, a, (long long) a.n * a.hq, 1, 1, st);
}

// Whether the tensor-core backward runs the wide kernels: on a device whose blocks may take their shared memory (head
// dim 128: 161 and 144 KiB, which sm_80 and sm_90 have and sm_86 and sm_89, 99 KiB a block, do not; head dim 64: 97
// and 80 KiB, which all have). Otherwise dkdv_kernel and dq_kernel, whose results are the same bits.
static bool wide_backward(int d) {
    if (d != 64 && d != 128) return false;
    int dev = 0, optin = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) {
        (void) cudaGetLastError();  // leave the runtime clean; the 64-row kernels need no attribute
        return false;
    }
    return d == 64 ? optin >= dkdv_wide_smem<64, DQ_FP32>() && optin >= dq_wide_smem<64>()
                   : optin >= dkdv_wide_smem<128, DQ_FP32>() && optin >= dq_wide_smem<128>();
}

// The dK/dV kernel of the dQ mode DQM: the Hopper one (its plan: the wide one's), the wide one or the 64-row one.
template <int D, int DQM>
static int launch_dkdv(const BwdArgs& a, unsigned slots, bool wide, bool hopper, cudaStream_t st) {
    int e;
    if (hopper) {
        constexpr int s1 = dkdv_wg_smem<D, DQM>();
        if ((e = set_smem(dkdv_wgmma_kernel<D, DQM>, s1))) return e;
        dkdv_wgmma_kernel<D, DQM><<<dim3(slots, a.hkv), WG_NT, s1, st>>>(a);
    } else if (wide) {
        constexpr int s1 = dkdv_wide_smem<D, DQM>();
        if ((e = set_smem(dkdv_wide_kernel<D, DQM>, s1))) return e;
        dkdv_wide_kernel<D, DQM><<<dim3(slots, a.hkv), WK_NT, s1, st>>>(a);
    } else {
        constexpr int s1 = dkdv_smem<D, DQM>();
        if ((e = set_smem(dkdv_kernel<D, DQM>, s1))) return e;
        dkdv_kernel<D, DQM><<<dim3(slots, a.hkv), NT, s1, st>>>(a);
    }
    return g4::launched();
}

// The tensor-core backward after dsum_kernel (and, for DQ_FIXED, kv_bound_kernel before it). The plan in the workspace
// lists tiles of 128 rows for the wide kernels (dkdv_wide_kernel, dq_wide_kernel) and of 64 for dkdv_kernel and
// dq_kernel.
template <int D>
static int backward_fast(const BwdArgs& a, int n, int b, DqMode dq, bool wide, bool hopper, cudaStream_t st) {
    int e;
    const int rows = wide ? WK_BN : ATT_BM;
    const unsigned slots = (unsigned) ((n + rows - 1) / rows + b);
    if (dq == DQ_PASS) {
        if ((e = launch_dkdv<D, DQ_PASS>(a, slots, wide, hopper, st))) return e;
        if (hopper) {
            constexpr int s2 = dq_wg_smem<D>();
            if ((e = set_smem(dq_wgmma_kernel<D>, s2))) return e;
            dq_wgmma_kernel<D><<<dim3(slots, a.hq), WG_NT, s2, st>>>(a);
        } else if (wide) {
            constexpr int s2 = dq_wide_smem<D>();
            if ((e = set_smem(dq_wide_kernel<D>, s2))) return e;
            dq_wide_kernel<D><<<dim3(slots, a.hq), WK_NT, s2, st>>>(a);
        } else {
            constexpr int s2 = dq_smem<D>();
            if ((e = set_smem(dq_kernel<D>, s2))) return e;
            dq_kernel<D><<<dim3(slots, a.hq), NT, s2, st>>>(a);
        }
        return g4::launched();
    }
    const long long total = (long long) a.n * a.hq * D;
    if ((e = (int) cudaMemsetAsync(a.dqacc, 0, total * (dq == DQ_FIXED ? 8 : 4), st))) return e;
    if ((e = dq == DQ_FIXED ? launch_dkdv<D, DQ_FIXED>(a, slots, wide, hopper, st)
                            : launch_dkdv<D, DQ_FP32>(a, slots, wide, hopper, st)))
        return e;
    if (dq == DQ_FIXED)
        dq_fixed_convert_kernel<<<g4::grid_for(total, 256), 256, 0, st>>>(
                a.dq, reinterpret_cast<const unsigned long long*>(a.dqacc), total, a.n, a.hq, a.hkv, D, a.scale, a.bounds,
                a.urow, a.nfrow, a.status);
    else
        dq_convert_kernel<<<g4::grid_for(total, 256), 256, 0, st>>>(a.dq, a.dqacc, total, a.scale, a.status);
    return g4::launched();
}

template <typename T>
static int backward_generic(GenArgs& a, cudaStream_t st) {
    int e = launch_gen(gen_dq_kernel<T>, a, (long long) a.n * a.hq, 2, 1, st);
    if (e) return e;
    return launch_gen(gen_dkdv_kernel<T>, a, (long long) a.n * a.hkv, 2, 2, st);
}

}  // namespace

extern "C" int g4_attention_workspace(int n, int b, int hq, int d, int backward, int deterministic, long long* bytes) {
    // (hkv is not an argument: the bounds are sized for hkv = hq, the most it can be)
    *bytes = layout(n, b, hq, hq, d, backward != 0, dq_mode(deterministic)).total;
    return 0;
}

// mode (value) 1: the sm_90a wgmma forward (fwd_wgmma_kernel) where the device has it (compute capability 9.0);
// 3: fwd_tma_kernel, 7: with its ping-pong, 11 and 15: those persistent (the same bits as 1); elsewhere, and by
// default, fwd_kernel.
extern "C" int g4_attention(int dtype, g4_ptr out, g4_ptr lse, g4_ptr q, g4_ptr k, g4_ptr v, g4_ptr cu, int n, int b,
                            int hq, int hkv, int d, float scale, int mode, g4_ptr ws, long long ws_bytes, g4_ptr flag,
                            int op, g4_stream s) {
    const Layout L = layout(n, b, hq, hkv, d, false, DQ_PASS);
    if (ws_bytes < L.total || b < 1 || hkv < 1 || hq % hkv) return (int) cudaErrorInvalidValue;
    cudaStream_t st = g4::as_stream(s);
    unsigned char* w = reinterpret_cast<unsigned char*>(ws);
    const int* CU = reinterpret_cast<const int*>(cu);
    const bool fast = hq > 0 && fast_path(dtype, d, {out, q, k, v});
    int e = plan(CU, b, n, fast ? FWD_BM : ATT_BM, w, L, reinterpret_cast<int*>(flag), op, st);
    if (e || n == 0) return e;
    const int* status = reinterpret_cast<const int*>(w + L.status);
    if (fast) {  // hq = 0: no query rows (grid.y would be 0); generic no-op
        FwdArgs a{reinterpret_cast<bf16*>(out), reinterpret_cast<float*>(lse), reinterpret_cast<const bf16*>(q),
                  reinterpret_cast<const bf16*>(k), reinterpret_cast<const bf16*>(v), CU, status,
                  reinterpret_cast<const TileRef*>(w + L.map), hq, hkv, hq / hkv, scale * g4::ATT_LOG2E};
        const unsigned slots = (unsigned) ((n + FWD_BM - 1) / FWD_BM + b);
        if ((mode & 1) && wgmma_device()) {
            if ((mode & 6) && (mode & 8)) {  // (bit 8 only with a TMA forward: bit 2 or 4)
                if (mode & 4) return d == 64 ? forward_tma<64, true, true>(a, n, slots, st) : forward_tma<128, true, true>(a, n, slots, st);
                return d == 64 ? forward_tma<64, false, true>(a, n, slots, st) : forward_tma<128, false, true>(a, n, slots, st);
            }
            if (mode & 4) return d == 64 ? forward_tma<64, true, false>(a, n, slots, st) : forward_tma<128, true, false>(a, n, slots, st);
            if (mode & 2) return d == 64 ? forward_tma<64, false, false>(a, n, slots, st) : forward_tma<128, false, false>(a, n, slots, st);
            return d == 64 ? forward_wgmma<64>(a, slots, st) : forward_wgmma<128>(a, slots, st);
        }
        return d == 64 ? forward_fast<64>(a, slots, st) : forward_fast<128>(a, slots, st);
    }
    GenArgs a{};
    a.q = reinterpret_cast<const void*>(q);
    a.k = reinterpret_cast<const void*>(k);
    a.v = reinterpret_cast<const void*>(v);
    a.out = reinterpret_cast<void*>(out);
    a.lse = reinterpret_cast<float*>(lse);
    a.cu = CU;
    a.status = status;
    a.n = n, a.b = b, a.hq = hq, a.hkv = hkv, a.group = hq / hkv, a.d = d, a.scale = scale;
    return dtype == G4_BF16 ? forward_generic<bf16>(a, st) : forward_generic<float>(a, st);
}

extern "C" int g4_attention_backward(int dtype, g4_ptr dq, g4_ptr dk, g4_ptr dv, g4_ptr dout, g4_ptr q, g4_ptr k,
                                     g4_ptr v, g4_ptr out, g4_ptr lse, g4_ptr cu, int n, int b, int hq, int hkv, int d,
                                     float scale, int deterministic, g4_ptr ws, long long ws_bytes, g4_ptr flag, int op,
                                     g4_stream s) {
    // hq = 0 (no query rows): the generic path, whose dK/dV kernel writes the zero gradients
    const bool fast = hq > 0 && fast_path(dtype, d, {dq, dk, dv, dout, q, k, v, out});
    // mode bits: 1 deterministic; 2 the 64-row kernels everywhere; 4 the wide kernels at head dim 64 too (2 wins);
    // 8 dQ in fixed point (deterministic, DQ_FIXED; 1 is then implied); 16 the Hopper kernels (dkdv_wgmma_kernel, and
    // dq_wgmma_kernel in the pass mode) on a compute capability 9.0 device (then the wide plan; 2 and 4 do not apply)
    const bool narrow = (deterministic & 2) != 0, wide64 = (deterministic & 4) != 0;
    const DqMode dqm = fast ? dq_mode(deterministic) : DQ_PASS;
    const Layout L = layout(n, b, hq, hq, d, true, dqm);  // (sized as the workspace query: hkv <= hq)
    if (ws_bytes < L.total || b < 1 || hkv < 1 || hq % hkv) return (int) cudaErrorInvalidValue;
    cudaStream_t st = g4::as_stream(s);
    unsigned char* w = reinterpret_cast<unsigned char*>(ws);
    const int* CU = reinterpret_cast<const int*>(cu);
    const bool hopper = fast && (deterministic & 16) && wgmma_device();
    const bool wide = fast && (hopper || (!narrow && (d == 128 || wide64) && wide_backward(d)));
    int e = plan(CU, b, n, wide ? WK_BN : ATT_BM, w, L, reinterpret_cast<int*>(flag), op, st);
    if (e || n == 0) return e;
    const int* status = reinterpret_cast<const int*>(w + L.status);
    float* dsum = reinterpret_cast<float*>(w + L.dsum);
    unsigned* bounds = reinterpret_cast<unsigned*>(w + L.bounds);
    float* urow = reinterpret_cast<float*>(w + L.urow);
    const long long rows = (long long) n * hq;
    if (dqm == DQ_FIXED) {  // the bounds: max |K| and max ||V|| per kv head (fast path: rows > 0, bf16, d 64 or 128)
        const unsigned bx = (unsigned) std::min<long long>((n + 7) / 8, 256);
        if ((e = (int) cudaMemsetAsync(bounds, 0, (size_t) (2 * hkv) * 4, st))) return e;
        if ((e = (int) cudaMemsetAsync(w + L.nfrow, 0, (size_t) rows * 4, st))) return e;
        if (d == 64) kv_bound_kernel<64><<<dim3(bx, hkv), 256, 0, st>>>(bounds, reinterpret_cast<const bf16*>(k), reinterpret_cast<const bf16*>(v), n, hkv);
        else kv_bound_kernel<128><<<dim3(bx, hkv), 256, 0, st>>>(bounds, reinterpret_cast<const bf16*>(k), reinterpret_cast<const bf16*>(v), n, hkv);
        if ((e = g4::launched())) return e;
    }
    if (rows > 0) {  // (no query rows, no D_i: a grid of 0 blocks would be a launch error)
        const unsigned grid = (unsigned) ((rows + 7) / 8);
        if (dqm == DQ_FIXED)
            dsum_kernel<bf16, true><<<grid, 256, 0, st>>>(dsum, reinterpret_cast<const bf16*>(dout),
                                                          reinterpret_cast<const bf16*>(out), n, hq, d, urow, bounds, hkv);
        else if (dtype == G4_BF16)
            dsum_kernel<bf16, false><<<grid, 256, 0, st>>>(dsum, reinterpret_cast<const bf16*>(dout),
                                                           reinterpret_cast<const bf16*>(out), n, hq, d, nullptr, nullptr, hkv);
        else
            dsum_kernel<float, false><<<grid, 256, 0, st>>>(dsum, reinterpret_cast<const float*>(dout),
                                                            reinterpret_cast<const float*>(out), n, hq, d, nullptr, nullptr, hkv);
        if ((e = g4::launched())) return e;
    }
    if (fast) {
        BwdArgs a{reinterpret_cast<bf16*>(dq), reinterpret_cast<bf16*>(dk), reinterpret_cast<bf16*>(dv),
                  reinterpret_cast<const bf16*>(dout), reinterpret_cast<const bf16*>(q), reinterpret_cast<const bf16*>(k),
                  reinterpret_cast<const bf16*>(v), reinterpret_cast<const float*>(lse), dsum,
                  reinterpret_cast<float*>(w + L.dqacc), bounds, urow, reinterpret_cast<unsigned*>(w + L.nfrow),
                  reinterpret_cast<int*>(flag), op, CU, status,
                  reinterpret_cast<const TileRef*>(w + L.map), n, hq, hkv, hq / hkv, scale, scale * g4::ATT_LOG2E};
        return d == 64 ? backward_fast<64>(a, n, b, dqm, wide, hopper, st) : backward_fast<128>(a, n, b, dqm, wide, hopper, st);
    }
    GenArgs a{};
    a.q = reinterpret_cast<const void*>(q);
    a.k = reinterpret_cast<const void*>(k);
    a.v = reinterpret_cast<const void*>(v);
    a.dout = reinterpret_cast<const void*>(dout);
    a.dq = reinterpret_cast<void*>(dq);
    a.dk = reinterpret_cast<void*>(dk);
    a.dv = reinterpret_cast<void*>(dv);
    a.lse_in = reinterpret_cast<const float*>(lse);
    a.dsum = dsum;
    a.cu = CU;
    a.status = status;
    a.n = n, a.b = b, a.hq = hq, a.hkv = hkv, a.group = hq / hkv, a.d = d, a.scale = scale;
    return dtype == G4_BF16 ? backward_generic<bf16>(a, st) : backward_generic<float>(a, st);
}
