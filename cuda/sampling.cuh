// Sampling math shared by the kernel (cuda/sampling.cu) and its host twin (native/hostmath.cu): Philox4x32-10,
// order-preserving keys, fixed-point probability masses (exp_f32 from fmath.cuh), and the per-row decisions of the
// sort-free sampler (tile combination, the threshold search's binning and boundary rule, tie counts). See
// docs/kernels.md "Sampling" for the design.
//
// Why fixed point: every reduction of the sampler is over integers (counts, masses as round(p * 2^sh), maxima of
// keys), so its result does not depend on the order in which a block adds them. The host twin therefore reproduces
// the kernel exactly without emulating any thread order; the only floating-point combinations (over tiles, and the
// targets) are done by one thread in a fixed order, the same code on both sides.
#pragma once
#include "fmath.cuh"

namespace g4 {

// ---- Philox4x32-10 (Salmon et al. 2011), as java/org/grpo4j/internal/backend/Philox.java --------------------------------------

struct U4 { u32 x, y, z, w; };

__host__ __device__ inline U4 philox4x32_10(U4 c, u32 k0, u32 k1) {
    for (int r = 0; r < 10; r++) {
        u64 p0 = (u64) 0xD2511F53u * c.x, p1 = (u64) 0xCD9E8D57u * c.z;
        U4 n = {(u32) (p1 >> 32) ^ c.y ^ k0, (u32) p1, (u32) (p0 >> 32) ^ c.w ^ k1, (u32) p0};
        c = n;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    return c;
}

// U[0, 1) from key = seed, counter = (step, stream, 0, 0): 53 bits from the first two words (Philox.uniform).
__host__ __device__ inline double philox_uniform(u64 seed, int stream, int step) {
    U4 w = philox4x32_10(U4{(u32) step, (u32) stream, 0u, 0u}, (u32) seed, (u32) (seed >> 32));
    u64 bits = ((u64) w.x << 21) ^ ((u64) w.y >> 11);
    return (double) (bits & ((1ull << 53) - 1)) * 0x1p-53;
}

// ---- keys and fixed-point masses ------------------------------------------------------------------------------------

// NaN logits count as -inf (Backend.sample's contract for non-finite rows).
__host__ __device__ inline float clean(float x) { return x != x ? u2f(0xFF800000u) : x; }

// Order-preserving key: key(a) < key(b) iff a < b, with -0 just below +0, -inf = 0x007FFFFF, +inf = 0xFF800000. The same
// total order as the CPU sampler's sort (Sampler.sortedDescending), so ranks and ties agree.
__host__ __device__ inline u32 key_of(float x) {
    u32 b = f2u(x);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__host__ __device__ inline float value_of(u32 k) { return u2f((k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k); }

__host__ __device__ inline bool is_inf(float x) { return (f2u(x) & 0x7FFFFFFFu) == 0x7F800000u; }

// Smallest L with 2^L >= v.
__host__ __device__ inline int ceil_log2(u32 v) {
    int l = 0;
    while (l < 32 && (1ull << l) < v) l++;
    return l;
}

// round(e * 2^sh) for 0 <= e <= 1, sh <= 62 (exact scaling, one rounding to nearest even).
__host__ __device__ inline u64 fixp(float e, int sh) { return d2u64_rn(dmul_rn((double) e, (double) (1ull << sh))); }

// exp((x - m) / T) in fp32 with the operations fixed: x and m cleaned, m >= x; x == m gives 1 exactly (even when
// 1/T overflowed to infinity); -inf gives 0.
__host__ __device__ inline float rel_exp(float x, float m, float inv_t) {
    if (x == u2f(0xFF800000u)) return 0.f;
    return exp_f32(x == m ? 0.f : mul_rn(sub_rn(x, m), inv_t));
}

namespace smp {

constexpr int BLOCK = 1024;           // threads per row
constexpr int ITEMS = 4;              // slices of BLOCK tokens per tile
constexpr int TILE = BLOCK * ITEMS;   // tokens per tile of the first pass
constexpr int MAX_TILES = 1024;       // so V <= 4,194,304 on CUDA
constexpr int BINS = 1024;            // histogram bins of one search pass (== BLOCK: one bin per thread)
constexpr int CAP = 2048;             // candidates kept in shared memory once the search interval is that small
constexpr int SH_TILE = 62 - 12;      // tile-relative masses: round(p * 2^50), a tile sums to <= 2^62
constexpr int LIST_MAX = 20480;       // top-p's candidate list (key, index) in dynamic shared memory: 160 KiB at most
constexpr int LIST_MIN = 1024;        // a smaller list than this (a device with little shared memory): no list
constexpr int GROUP = 4;              // pass A's tiles a group (the kernel's loads in flight); top-p's one-read unit
static_assert(MAX_TILES <= BLOCK && MAX_TILES <= BINS, "cand_bin's step: a thread a tile, the tiles' weights in the bins' array");

// Fixed-point shift of the row-relative masses: a whole row sums to at most 2^62.
__host__ __device__ inline int row_shift(int v) { return 62 - ceil_log2((u32) v); }

// g_j = round(exp((x_j - xmax) / T) * 2^sh): the mass of token j in the threshold search and the filtered draw.
__host__ __device__ inline u64 weight(float x, float xmax, float inv_t, int sh) { return fixp(rel_exp(x, xmax, inv_t), sh); }

// ---- the unfiltered draw over tiles ---------------------------------------------------------------------------------
// Tile s (TILE consecutive tokens) holds its max m_s and I_s = sum_j round(exp((x_j - m_s)/T) * 2^SH_TILE). Its mass
// relative to the row max is W_s = I_s f_s, f_s = exp((m_s - xmax)/T), and S = sum_j exp((x_j - xmax)/T) =
// 2^-SH_TILE sum_s W_s. The draw target u sum_s W_s falls in the first tile whose running W-sum exceeds it; inside
// it, R = floor((target - prefix) / f_s) in the tile's integer units, and the token is the first whose running
// integer sum exceeds R (exact).
__host__ __device__ inline double tile_factor(float m, float xmax, float inv_t) { return (double) rel_exp(m, xmax, inv_t); }

struct TilePick { int s; u64 r; double log_s; };

// sum_s W_s in tile units (2^SH_TILE), in tile order.
__host__ __device__ inline double tile_total(const float* tm, const u64* ts, int nt, float xmax, float inv_t) {
    double total = 0;
    for (int s = 0; s < nt; s++) total = dadd_rn(total, dmul_rn((double) ts[s], tile_factor(tm[s], xmax, inv_t)));
    return total;
}

__host__ __device__ inline TilePick tile_pick(const float* tm, const u64* ts, int nt, float xmax, float inv_t, double u) {
    const double total = tile_total(tm, ts, nt, xmax, inv_t);
    TilePick p;
    p.log_s = dsub_rn(log(total), SH_TILE * 0.69314718055994530942);
    double target = dmul_rn(u, total), prefix = 0;
    int last = -1;
    for (int s = 0; s < nt; s++) {
        double f = tile_factor(tm[s], xmax, inv_t), w = dmul_rn((double) ts[s], f);
        if (!(w > 0)) continue;
        last = s;
        double next = dadd_rn(prefix, w);
        if (next > target) {
            double q = ddiv_rn(dsub_rn(target, prefix), f);
            p.s = s;
            p.r = q >= (double) ts[s] ? ts[s] - 1 : d2u64_rz(q);
            return p;
        }
        prefix = next;
    }
    p.s = last;  // rounding left the running sum at or below the target: the last token with mass
    p.r = ts[last] - 1;
    return p;
}

// ---- the threshold search -------------------------------------------------------------------------------------------
// A selection finds the key tau at which a running aggregate over the domain, taken from the largest key down,
// reaches its target: count mode (top-k) counts tokens (target k); mass mode (top-p) sums masses g_j (target t, a
// double, with only tokens of mass > 0 in the domain). "above" aggregates the domain's tokens with key > hi, which are
// on the kept side for sure; the invariant is q(above) false, q(above + everything in [lo, hi]) true. Each pass bins
// the domain's tokens (monotone binning, so each bin is a key interval [kmin_b, kmax_b]); the boundary bin b is the
// one with q(above + gt_b) false and q(above + gt_b + bin_b) true (exactly one: q is monotone and the sums are
// integers); the domain narrows to [kmin_b, kmax_b] until that interval is one key, which is tau. The first mass-mode
// pass bins linearly in (xmax - x)/T (where the mass is), later passes linearly in the key (ceil(32 / 10) passes at
// most).
struct Sel {
    u32 lo, hi;          // domain: keys in [lo, hi]
    u32 above_cnt;       // tokens of the domain's original range above hi, and their mass
    u64 above_mass;
    u32 k;               // count target
    double t;            // mass target (< 0: set from the first pass's total, as top_p * total)
    int mass_mode, linear, done;
    u32 tau;             // when done: the threshold key; above_* then aggregate the keys > tau
    u32 tau_cnt;         // when done: the domain's tokens with key tau
};

__host__ __device__ inline Sel sel_count(u32 lo, u32 hi, u32 k) {
    Sel s = {lo, hi, 0u, 0ull, k, 0.0, 0, 0, 0, 0u, 0u};
    return s;
}

__host__ __device__ inline Sel sel_mass(u32 lo, u32 hi, double t) {
    Sel s = {lo, hi, 0u, 0ull, 0u, t, 1, 1, 0, 0u, 0u};
    return s;
}

__host__ __device__ inline bool sel_q(const Sel& s, u64 cnt, u64 mass) {
    return s.mass_mode ? (double) mass >= s.t : cnt >= (u64) s.k;
}

// Whether token (key, x, g) belongs to the current domain.
__host__ __device__ inline bool sel_in(const Sel& s, u32 key, u64 g) {
    return key >= s.lo && key <= s.hi && (!s.mass_mode || g > 0);
}

// (xmax - x)/T bins over [0, D) with D = (sh + 1) ln2 + 1 (beyond it a mass rounds to 0), the largest x on top.
__host__ __device__ inline float bins_per_unit(int sh) {
    return div_rn((float) BINS, add_rn(mul_rn((float) (sh + 1), 0.693147182f), 1.f));
}

__host__ __device__ inline int sel_bin(const Sel& s, u32 key, float x, float xmax, float inv_t, float bpu) {
    if (s.linear) {
        float dn = x == xmax ? 0.f : mul_rn(sub_rn(xmax, x), inv_t);
        float f = mul_rn(dn, bpu);
        int from_top = f < (float) (BINS - 1) ? (int) f : BINS - 1;
        return BINS - 1 - from_top;
    }
    return (int) (((u64) (key - s.lo) * BINS) / ((u64) (s.hi - s.lo) + 1));
}

// top-p alone: the lowest bin of the first (linear) pass whose tokens the candidate pass keeps in its list. A token
// with p_j = e_j / S < (1 - top_p) / V is never kept: the tokens above that level carry at least top_p of the mass,
// so the nucleus, the smallest such top set, lies among them. In bins, (xmax - x)/T < ln V - ln(1 - top_p) - ln S,
// with two bins of margin for the rounding of d and of the binning. The kernel checks the boundary bin does lie at
// or above b0 and redoes the pass over all bins when it does not, so b0 steers only the speed, never the result.
__host__ __device__ inline int cand_b0(int v, float top_p, double log_s, float bpu) {
    const double d = dsub_rn(dsub_rn(log((double) v), log(dsub_rn(1.0, (double) top_p))), log_s);
    const double from_top = dadd_rn(dmul_rn(d, (double) bpu), 2.0);
    if (!(from_top < (double) BINS)) return 0;   // also for a NaN
    return from_top >= 0 ? BINS - 1 - (int) from_top : BINS - 1;  // (from_top < 0 only for a top_p outside (0, 1))
}

// top-p alone: the mass target t = top_p x S in the row's units (2^sh), S from pass A's tiles (tile_total, rescaled by
// a power of two: exact). Every token's mass is computed once, in pass A; the search's own sum over the row would
// differ from S in rounding only (each token's fp32 exp taken relative to its tile's max instead of the row's, a few
// ulps of fp32 a token), and a search pass whose domain holds less than t (top_p
// within rounding of 1) takes its total as the target (mass_target).
__host__ __device__ inline double top_p_target(const float* tm, const u64* ts, int nt, float xmax, float inv_t, float top_p, int sh) {
    const double total = dmul_rn(tile_total(tm, ts, nt, xmax, inv_t), ldexp(1.0, sh - SH_TILE));
    return dmul_rn((double) top_p, total);
}

// The target of a mass selection's first pass over its whole domain (the row, or a copy of the domain) of mass
// total: t, or total where rounding put t above it (then every token is kept, as top_p -> 1 keeps them).
__host__ __device__ inline double mass_target(double t, u64 total) { return t > (double) total ? (double) total : t; }

// The mass of the tiles' maxima at or above tile s's maximum: sum of e[r] over the tiles r with key(tm[r]) >=
// key(tm[s]), e[r] = weight(tm[r], xmax, inv_t, sh).
__host__ __device__ inline u64 tile_top_mass(const float* tm, const u64* e, int nt, int s) {
    const u32 ks = key_of(tm[s]);
    u64 m = 0;
    for (int r = 0; r < nt; r++) m += key_of(tm[r]) >= ks ? e[r] : 0;
    return m;
}

// top-p alone: the candidate list's lowest bin of the first (linear) pass. The larger of two bounds:
// - cand_b0's, from log S (a token below (1 - top_p) / V of the mass is never kept);
// - the tiles' maxima: kq, the largest key among the tiles' maxima whose tile_top_mass reaches t (0: none). Those
//   maxima are distinct tokens, so the mass at or above kq is at least t, and the boundary bin of the first pass is
//   at or above bin(kq). On a peaked row (an LLM's, or N(0, 4^2) at V = 128,256, whose 0.9-nucleus is ~24 tokens) it
//   is a few bins from the top, where cand_b0 keeps ~10,000 tokens.
// Either way the kernel checks that the boundary lies in the list and redoes the pass over the row when it does not.
__host__ __device__ inline int cand_bin(int v, float top_p, double log_s, float bpu, u32 kq, float xmax, float inv_t) {
    int b0 = cand_b0(v, top_p, log_s, bpu);
    if (kq != 0) {
        const Sel first = sel_mass(0u, 0u, 0.0);  // (a first mass-mode pass: linear bins)
        const int bq = sel_bin(first, kq, value_of(kq), xmax, inv_t, bpu);
        b0 = bq > b0 ? bq : b0;
    }
    return b0;
}

// The smallest key in [kmin, kmax] whose linear bin is >= b0 (kmax's bin is BINS - 1): the candidate pass keeps the
// tokens with key >= it, exactly the tokens of bins >= b0 (the bin is monotone in the key), with one integer compare a
// token.
__host__ __device__ inline u32 cand_key(int b0, u32 kmin, u32 kmax, float xmax, float inv_t, float bpu) {
    const Sel first = sel_mass(0u, 0u, 0.0);
    u32 lo = kmin, hi = kmax;  // invariant: bin(hi) >= b0
    while (lo < hi) {
        const u32 mid = lo + (hi - lo) / 2;
        if (sel_bin(first, mid, value_of(mid), xmax, inv_t, bpu) >= b0) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

// ---- top-p alone in one read: candidates kept during pass A ---------------------------------------------------------
// Pass A keeps, in each group g >= 1 of GROUP tiles, the tokens with key >= run_key of the groups before it (group 0
// after pass A, under the final kc). The groups so far: their max m and S = sum I_s f(m_s -> m) in tile units.
struct RunMass { float m; double s; };

__host__ __device__ inline RunMass run_mass_start() { return RunMass{u2f(0xFF800000u), 0.0}; }

// Adds a tile of max ms and tile-relative mass is (0: a tile of -inf only).
__host__ __device__ inline void run_mass_add(RunMass& r, float ms, u64 is, float inv_t) {
    if (is == 0) return;
    if (!(ms > r.m)) {
        r.s = dadd_rn(r.s, dmul_rn((double) is, tile_factor(ms, r.m, inv_t)));
    } else {
        r.s = dadd_rn(dmul_rn(r.s, tile_factor(r.m, ms, inv_t)), (double) is);
        r.m = ms;
    }
}

// ln(V / (1 - top_p)), cand_b0's bound in nats (before log S).
__host__ __device__ inline double cand_nats(int v, float top_p) {
    return dsub_rn(log((double) v), log(dsub_rn(1.0, (double) top_p)));
}

// A key below which no token of the next groups can be in the nucleus, by cand_b0's bound with the mass known so far
// (the row's mass only grows, so the bound only rises): x < m - T (l0 - ln S + 4 / bpu) with S = r.s 2^-SH_TILE, ln S
// taken from below ((e + f) ln 2 <= ln(2^e (1 + f))), the key rounded down. The 4 bins: cand_b0's margin of 2, its
// bin's width and one for rounding, so that the final kc (the lowest key of bin b0) is not below a group's key. 0
// (every token) when nothing finite was seen. The kernel checks at the end that no group's key exceeded the final kc
// (else it reads the row again).
__host__ __device__ inline u32 run_key(const RunMass& r, double l0, double inv_t_d, float bpu) {
    if (!(r.s > 0) || is_inf(r.m)) return 0;
    int e;
    const double mant = frexp(r.s, &e);  // r.s = mant 2^e, mant in [0.5, 1)
    const double ln_s = dmul_rn(dadd_rn((double) (e - 1 - SH_TILE), dsub_rn(dmul_rn(2.0, mant), 1.0)), 0.69314718055994530942);
    const double d = dadd_rn(dsub_rn(l0, ln_s), ddiv_rn(4.0, (double) bpu));
    if (!(d > 0)) return key_of(r.m) - 1;
    const float thr = (float) dsub_rn((double) r.m, ddiv_rn(d, inv_t_d));
    const u32 k = key_of(thr);
    return k > 0 ? k - 1 : 0;
}

// The boundary bin found: narrows the domain or finishes.
__host__ __device__ inline void sel_advance(Sel& s, u64 gt_cnt, u64 gt_mass, u32 cnt_b, u32 kmin_b, u32 kmax_b) {
    s.above_cnt += (u32) gt_cnt;
    s.above_mass += gt_mass;
    s.linear = 0;
    if (kmin_b == kmax_b) {
        s.done = 1;
        s.tau = kmin_b;
        s.tau_cnt = cnt_b;
    } else {
        s.lo = kmin_b;
        s.hi = kmax_b;
    }
}

// No boundary bin: impossible while the invariant holds (see Sel); ends the search with the domain's top key rather
// than loop forever if it ever broke.
__host__ __device__ inline void sel_fail(Sel& s) {
    s.done = 1;
    s.tau = s.hi;
    s.tau_cnt = 1;
}

// The smallest c in [1, cmax] with above + c g >= t (it exists: the boundary rule guarantees c = cmax qualifies).
__host__ __device__ inline u32 min_ties(u64 above, u64 g, double t, u32 cmax) {
    u32 lo = 1, hi = cmax;
    while (lo < hi) {
        u32 mid = lo + (hi - lo) / 2;
        if ((double) (above + (u64) mid * g) >= t) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

// The filtered draw: R = floor(u * kept) in integer mass units (at most kept - 1); the token is the first kept one,
// in vocabulary order, whose running kept mass exceeds R.
__host__ __device__ inline u64 draw_r(double u, u64 kept) {
    u64 r = d2u64_rz(dmul_rn(u, (double) kept));
    return r >= kept ? kept - 1 : r;
}

// log p(token) under the unfiltered softmax(x / T): (x - xmax)/T - log S, in float64.
__host__ __device__ inline double logprob(float x, float xmax, double inv_t, double log_s) {
    return x == xmax ? -log_s : dsub_rn(dmul_rn(dsub_rn((double) x, (double) xmax), inv_t), log_s);
}


// The spec's scalars as the kernel uses them.
struct Spec {
    float temperature, top_p;
    int top_k;                 // 0 or >= v: no top-k
    float inv_t;               // fp32 1/T (1 at T = 0)
    double inv_t_d;            // float64 1/T (what the CPU uses)
};

__host__ __device__ inline Spec make_spec(float temperature, int top_k, float top_p, int v) {
    Spec s;
    s.temperature = temperature;
    s.top_p = top_p;
    s.top_k = top_k > 0 && top_k < v ? top_k : 0;
    s.inv_t_d = temperature > 0 ? ddiv_rn(1.0, (double) temperature) : 1.0;
    s.inv_t = (float) s.inv_t_d;
    return s;
}

// top-p alone (the candidate list's spec): a temperature, no top-k, top_p < 1.
__host__ __device__ inline bool top_p_alone(const Spec& s) { return s.temperature > 0 && s.top_k == 0 && s.top_p < 1.f; }

}  // namespace smp

// ---- the host twin of one row ----------------------------------------------------------------------------------------
// Pass A on the host: each tile's max (tm) and fixed-point mass (ts), the row's max key packed with its lowest index
// (*best) and its min key (*kmin).
inline void host_tiles(const float* row, int v, float inv_t, float* tm, u64* ts, u64* best, u32* kmin) {
    using namespace smp;
    const int nt = (v + TILE - 1) / TILE;
    *best = 0;
    *kmin = 0xFFFFFFFFu;
    for (int s = 0; s < nt; s++) {
        int a = s * TILE, b = a + TILE < v ? a + TILE : v;
        u64 tb = 0;
        for (int j = a; j < b; j++) {
            u32 key = key_of(clean(row[j]));
            u64 packed = ((u64) key << 32) | (u64) (~(u32) j);
            if (packed > tb) tb = packed;
            if (key < *kmin) *kmin = key;
        }
        float m = value_of((u32) (tb >> 32));
        u64 sum = 0;
        for (int j = a; j < b; j++) sum += fixp(rel_exp(clean(row[j]), m, inv_t), SH_TILE);
        tm[s] = m;
        ts[s] = sum;
        if (tb > *best) *best = tb;
    }
}

// top-p alone, on a row with a finite max: the candidate pass's key kc (the kernel's, before b0_bias): cand_bin from
// log S and the tiles' maxima, then cand_key.
inline u32 host_cand_key(const float* tm, const u64* ts, int nt, int v, const smp::Spec& sp, float xmax, u32 kmin, u32 kmax) {
    using namespace smp;
    const int sh = row_shift(v);
    const float bpu = bins_per_unit(sh);
    const double t = top_p_target(tm, ts, nt, xmax, sp.inv_t, sp.top_p, sh);
    u64* e = new u64[nt];
    for (int q = 0; q < nt; q++) e[q] = weight(tm[q], xmax, sp.inv_t, sh);
    u32 kq = 0;
    for (int q = 0; q < nt; q++)
        if ((double) tile_top_mass(tm, e, nt, q) >= t && key_of(tm[q]) > kq) kq = key_of(tm[q]);
    delete[] e;
    const int b0 = cand_bin(v, sp.top_p, tile_pick(tm, ts, nt, xmax, sp.inv_t, 0.0).log_s, bpu, kq, xmax, sp.inv_t);
    return cand_key(b0, kmin, kmax, xmax, sp.inv_t, bpu);
}

// top-p alone: how many tokens the kernel's candidate pass keeps in its list (key >= host_cand_key; -1 for a row with
// no finite max or a spec that is not top-p alone). A count for tests of the list's size, which sets the list
// passes' work and whether the list fits.
inline int host_cand_count(const float* row, int v, float temperature, float top_p) {
    using namespace smp;
    const Spec sp = make_spec(temperature, 0, top_p, v);
    if (!top_p_alone(sp)) return -1;
    const int nt = (v + TILE - 1) / TILE;
    float* tm = new float[nt];
    u64* ts = new u64[nt];
    u64 best;
    u32 kmin;
    host_tiles(row, v, sp.inv_t, tm, ts, &best, &kmin);
    const u32 kmax = (u32) (best >> 32);
    int n = -1;
    if (!is_inf(value_of(kmax))) {
        const u32 kc = host_cand_key(tm, ts, nt, v, sp, value_of(kmax), kmin, kmax);
        n = 0;
        for (int j = 0; j < v; j++) n += key_of(clean(row[j])) >= kc;
    }
    delete[] tm;
    delete[] ts;
    return n;
}

// The kernel's algorithm with sequential loops in place of the block's passes. Every reduction is over integers (or a
// max), so this reproduces the kernel's token exactly; the log-prob may differ in its last float64 bit (log). kept,
// if not null, receives 1 for the tokens of the kept set (all with mass > 0 when there is no filter), else 0.
// Returns how many times the kernel reads the whole row after pass A, the draw included (shared-memory passes not
// counted; 0 without a filter, whose draw re-reads one tile; 0 for top-p alone when pass A kept the list, whose group 0
// is read again). The keys b0 and run_key come from log, whose host and device results may differ in the last bit: on
// a bin's edge the count may differ from the kernel's, never the token.
// list_cap: the device's candidate list in tokens (the count of reads depends on it; the token does not).
inline int host_sample_row(const float* row, int v, float temperature, int top_k, float top_p, double u, int* token,
                           double* lp, int* kept, int list_cap = smp::LIST_MAX) {
    using namespace smp;
    Spec sp = make_spec(temperature, top_k, top_p, v);
    int nt = (v + TILE - 1) / TILE;
    float* tm = new float[nt];
    u64* ts = new u64[nt];
    u64 best;
    u32 kmin;
    host_tiles(row, v, sp.inv_t, tm, ts, &best, &kmin);
    u32 kmax = (u32) (best >> 32);
    int arg = (int) ~(u32) best;
    float xmax = value_of(kmax);
    int passes = 0;
    if (kept) for (int j = 0; j < v; j++) kept[j] = 0;
    if (is_inf(xmax)) {  // no softmax: the first index of the largest value, logprob NaN
        *token = arg;
        *lp = nan("");
        if (kept) kept[arg] = 1;
    } else if (temperature == 0.f) {
        TilePick p = tile_pick(tm, ts, nt, xmax, 1.f, 0.0);
        *token = arg;
        *lp = -p.log_s;
        if (kept) kept[arg] = 1;
    } else if (sp.top_k == 0 && !(top_p < 1.f)) {
        TilePick p = tile_pick(tm, ts, nt, xmax, sp.inv_t, u);
        int a = p.s * TILE, b = a + TILE < v ? a + TILE : v;
        u64 c = 0;
        *token = -1;
        for (int j = a; j < b && *token < 0; j++) {
            c += fixp(rel_exp(clean(row[j]), tm[p.s], sp.inv_t), SH_TILE);
            if (c > p.r) *token = j;
        }
        *lp = logprob(clean(row[*token]), xmax, sp.inv_t_d, p.log_s);
        if (kept) for (int j = 0; j < v; j++) kept[j] = rel_exp(clean(row[j]), xmax, sp.inv_t) > 0;
    } else {
        int sh = row_shift(v);
        float bpu = bins_per_unit(sh);
        u32* cnt = new u32[BINS];
        u64* mass = new u64[BINS];
        u32* bmin = new u32[BINS];
        u32* bmax = new u32[BINS];
        // The kernel's passes: over the row, or over the shared-memory list once a domain of <= CAP tokens was
        // copied there during a pass (collect), as hist_pass does; only row passes are counted.
        u32* list = new u32[CAP];
        int first_bnd = -2;  // the boundary bin of the first pass of the last run (-1: none)
        auto run = [&](Sel& sel, u32 dom_cnt) {
            first_bnd = -2;
            int collect = dom_cnt <= (u32) CAP, from_list = 0, list_n = 0;
            while (!sel.done) {
                if (!from_list) passes++;
                for (int b = 0; b < BINS; b++) { cnt[b] = 0; mass[b] = 0; bmin[b] = 0xFFFFFFFFu; bmax[b] = 0; }
                int n = from_list ? list_n : v, appended = 0;
                for (int i = 0; i < n; i++) {
                    float x = from_list ? value_of(list[i]) : clean(row[i]);
                    u32 key = key_of(x);
                    if (key < sel.lo || key > sel.hi) continue;
                    u64 g = weight(x, xmax, sp.inv_t, sh);
                    if (!sel_in(sel, key, g)) continue;
                    int b = sel_bin(sel, key, x, xmax, sp.inv_t, bpu);
                    cnt[b]++;
                    mass[b] += g;
                    if (key < bmin[b]) bmin[b] = key;
                    if (key > bmax[b]) bmax[b] = key;
                    if (collect && appended < CAP) list[appended++] = key;
                }
                if (collect) list_n = appended;
                if (sel.mass_mode && sel.linear) {  // a mass selection's first pass, over its whole domain
                    u64 total = 0;
                    for (int b = 0; b < BINS; b++) total += mass[b];
                    sel.t = sel.t < 0 ? dmul_rn((double) sp.top_p, (double) total) : mass_target(sel.t, total);
                }
                u64 gc = 0, gm = 0;
                int bnd = -1;
                for (int b = BINS - 1; b >= 0 && bnd < 0; b--) {
                    u64 ec = gc + cnt[b], em = gm + mass[b];
                    if (!sel_q(sel, sel.above_cnt + gc, sel.above_mass + gm) && sel_q(sel, sel.above_cnt + ec, sel.above_mass + em)) {
                        sel_advance(sel, gc, gm, cnt[b], bmin[b], bmax[b]);
                        bnd = b;
                    }
                    gc = ec;
                    gm = em;
                }
                if (first_bnd == -2) first_bnd = bnd;
                if (bnd < 0) {
                    sel_fail(sel);
                } else if (collect) {
                    collect = 0;
                    from_list = 1;
                } else if (!from_list && !sel.done && cnt[bnd] <= (u32) CAP) {
                    collect = 1;
                }
            }
        };
        u32 tau, c;
        u64 kept_mass;
        if (sp.top_k > 0) {
            Sel sk = sel_count(kmin, kmax, (u32) sp.top_k);
            run(sk, (u32) v);
            tau = sk.tau;
            c = (u32) sp.top_k - sk.above_cnt;
            u64 g = weight(value_of(tau), xmax, sp.inv_t, sh);
            kept_mass = sk.above_mass + (u64) c * g;
            if (top_p < 1.f) {
                double t = dmul_rn((double) top_p, (double) kept_mass);
                if ((double) sk.above_mass >= t) {
                    Sel sp2 = sel_mass(tau + 1, kmax, t);
                    run(sp2, 0xFFFFFFFFu);
                    u64 g2 = weight(value_of(sp2.tau), xmax, sp.inv_t, sh);
                    tau = sp2.tau;
                    c = min_ties(sp2.above_mass, g2, t, sp2.tau_cnt);
                    kept_mass = sp2.above_mass + (u64) c * g2;
                } else {
                    c = min_ties(sk.above_mass, g, t, c);
                    kept_mass = sk.above_mass + (u64) c * g;
                }
            }
        } else {
            // top-p alone: the target from pass A's tiles
            const double t = top_p_target(tm, ts, nt, xmax, sp.inv_t, top_p, sh);
            Sel s1 = sel_mass(kmin, kmax, t);
            run(s1, 0xFFFFFFFFu);
            // The kernel's reads of the row (on a device with room for LIST_MAX; the tokens are the same either way).
            // Its candidate list holds the tokens of the first pass's bins >= b0 (key >= kc), one segment of
            // LIST_MAX / 32 a warp (warp w: the tokens j with j mod BLOCK in [32 w, 32 w + 32)). Pass A fills it
            // (CAND): group g >= 1 under run_key of the groups before it (a full segment takes a key that counts the
            // group's tile maxima too, drops its earlier entries under it and takes the group again under it;
            // everything under that key, and the tokens still without room, may be missing: their largest key is
            // kept); after pass A, when no group's key passed kc and nothing missing reaches kc, the entries under kc
            // are dropped and group 0's added. Complete, and the boundary bin among them, the search and the draw read no
            // more of the row than group 0 again; else the candidate pass reads the row once more (complete then: the
            // only read before the draw, which reads the list too), or the search runs over the row as here.
            const u32 kc = host_cand_key(tm, ts, nt, v, sp, xmax, kmin, kmax);
            const int b0 = sel_bin(sel_mass(0u, 0u, 0.0), kc, value_of(kc), xmax, sp.inv_t, bpu);  // (kc's bin is b0)
            const int cap = list_cap / 32;
            u32* seg = new u32[BLOCK / 32 * cap];  // the warps' stored keys
            u32 wn[BLOCK / 32] = {}, lost[BLOCK / 32] = {};
            // one warp's appends of [a, b) with key >= k in index order, as the kernel's (stored while there is room;
            // *lg: the largest key without room), counting past the room
            auto append = [&](int w, int a, int b, u32 k, u32* lg) {
                for (int j = a; j < b; j++)
                    if ((j % BLOCK) / 32 == w) {
                        const u32 key = key_of(clean(row[j]));
                        if (key < k) continue;
                        if (wn[w] < (u32) cap) seg[w * cap + wn[w]] = key;
                        else *lg = key > *lg ? key : *lg;
                        wn[w]++;
                    }
            };
            auto compact = [&](int w, u32 n, u32 k) {
                u32 out = 0;
                for (u32 i = 0; i < n; i++)
                    if (seg[w * cap + i] >= k) seg[w * cap + out++] = seg[w * cap + i];
                wn[w] = out;
            };
            const double l0 = cand_nats(v, top_p);
            RunMass rm = run_mass_start();
            u32 kgmax = 0;
            for (int s0 = 0; s0 < nt; s0 += GROUP) {
                const int a = s0 * TILE, b = (s0 + GROUP) * TILE < v ? (s0 + GROUP) * TILE : v;
                if (s0 > 0) {
                    const u32 kg = run_key(rm, l0, sp.inv_t_d, bpu);
                    kgmax = kg > kgmax ? kg : kgmax;
                    RunMass r2 = rm;  // the groups before it and this group's tile maxima
                    for (int q = s0; q < s0 + GROUP && q < nt; q++)
                        if (tm[q] != u2f(0xFF800000u)) run_mass_add(r2, tm[q], 1ull << SH_TILE, sp.inv_t);
                    u32 k2 = run_key(r2, l0, sp.inv_t_d, bpu);
                    k2 = k2 > kg ? k2 : kg;
                    for (int w = 0; w < BLOCK / 32; w++) {
                        const u32 nb = wn[w];
                        u32 lg = 0;
                        append(w, a, b, kg, &lg);
                        if (wn[w] > (u32) cap && nb > 0) {
                            wn[w] = nb;
                            compact(w, nb, k2);
                            lg = k2 > 0 ? k2 - 1 : 0;
                            append(w, a, b, k2, &lg);
                        }
                        if (wn[w] > (u32) cap) wn[w] = cap;
                        lost[w] = lg > lost[w] ? lg : lost[w];
                    }
                }
                for (int q = s0; q < s0 + GROUP && q < nt; q++) run_mass_add(rm, tm[q], ts[q], sp.inv_t);
            }
            bool one_read = kgmax <= kc;
            for (int w = 0; w < BLOCK / 32; w++) one_read &= lost[w] < kc;
            for (int w = 0; w < BLOCK / 32 && one_read; w++) {
                u32 lg = 0;
                compact(w, wn[w], kc);
                append(w, 0, GROUP * TILE < v ? GROUP * TILE : v, kc, &lg);
                one_read &= wn[w] <= (u32) cap;
            }
            delete[] seg;
            bool complete = true;  // the candidate pass's list, when pass A's is not complete
            for (int w = 0; w < BLOCK / 32; w++) wn[w] = 0;
            for (int j = 0; j < v; j++) wn[(j % BLOCK) / 32] += key_of(clean(row[j])) >= kc;
            for (u32 n : wn) complete &= n <= (u32) cap;
            // a target above the row's mass (clamped by the first row pass) is never reached in the list
            const bool in_list = first_bnd >= b0 && s1.t == t;
            if (one_read) passes = in_list ? -1 : passes;    // + the draw's, below
            else passes = complete && in_list ? 0 : 1 + passes;
            u64 g = weight(value_of(s1.tau), xmax, sp.inv_t, sh);
            tau = s1.tau;
            c = min_ties(s1.above_mass, g, s1.t, s1.tau_cnt);
            kept_mass = s1.above_mass + (u64) c * g;
        }
        passes++;  // the draw: over the row, or over the list when nothing else read the row since the candidate pass
        u64 r = draw_r(u, kept_mass), cum = 0;
        u32 tie_rank = 0;
        *token = -1;
        for (int j = 0; j < v; j++) {
            float x = clean(row[j]);
            u32 key = key_of(x);
            bool k = key > tau || (key == tau && tie_rank < c);
            if (key == tau) tie_rank++;
            if (!k) continue;
            if (kept) kept[j] = 1;
            cum += weight(x, xmax, sp.inv_t, sh);
            if (*token < 0 && cum > r) *token = j;
        }
        const double log_s = tile_pick(tm, ts, nt, xmax, sp.inv_t, 0.0).log_s;
        *lp = logprob(clean(row[*token]), xmax, sp.inv_t_d, log_s);
        delete[] cnt;
        delete[] mass;
        delete[] bmin;
        delete[] bmax;
        delete[] list;
    }
    delete[] tm;
    delete[] ts;
    return passes;
}

}  // namespace g4
