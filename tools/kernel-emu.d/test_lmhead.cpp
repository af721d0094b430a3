// tools/kernel-emu: cuda/lmhead.cu through its launchers, driven as CudaBackend drives them (lmForward / lmBackward /
// grpoLossImpl: token blocks of rows, vocabulary chunks, g4_lmhead_lse per (block, chunk) with first / last flags and
// the per-token state at the block's offset; g4_grpo_terms and g4_grpo_sum on the f64 log-probs; g4_f32_to_f64 of
// dLogprobs; g4_lmhead_dlogits per (block, chunk), in place or as a bf16 hi/lo pair) and its row path
// (g4_lmhead_lse_rows and g4_lmhead_dlogits_rows over whole rows of a token block's logits). The chunk of logits
// z = h W_chunk^T / T' is what cuBLASLt would write; here each (block, chunk) gets a fresh host copy of exactly rows x
// cols floats (rows x ld for the row path), so AddressSanitizer sees any access past it.
//
// References: float64 of the contract (docs/ops.md "tokenLogprobs", "grpoLoss" rows and "CUDA against the CPU";
// grpo-reference.md section 4: ratio = exp(logp - old), PPO clip max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high)),
// d = clamp(logp - ref, +-40), kl1..kl4 with their logp-gradients, per-token weights) and, bit for bit, the host twins
// (native/hostmath.cu: the lse kernel's per-thread order and fixed tree, dlogits and its split, the GRPO kernel's tree).
#include <climits>

#include "emu_test.h"

using namespace emu_test;

namespace {

constexpr int OP = 41;  // any op code: what the flag must carry back

bool same(double a, double b) { return memcmp(&a, &b, 8) == 0 || (isnan(a) && isnan(b)); }
bool samef(float a, float b) { return memcmp(&a, &b, 4) == 0 || (isnan(a) && isnan(b)); }

// Largest |got - want| / tol over i < n (got, want, tol as functions of i); NaN in either side, unless both are
// NaN where nan_ok(i), fails. Prints the worst element.
template <typename G, typename W, typename T, typename N>
bool check_tol(const char* what, size_t n, G got, W want, T tol, N nan_ok) {
    double worst = 0;
    size_t at = 0;
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        double g = got(i), w = want(i);
        if (isnan(g) || isnan(w)) {
            if (isnan(g) && isnan(w) && nan_ok(i)) continue;
            worst = INFINITY, at = i, ok = false;
            break;
        }
        if (g == w) continue;  // equal infinities included
        double e = fabs(g - w) / tol(i);
        if (!(e <= worst)) { worst = e; at = i; }
    }
    ok = ok && worst <= 1;
    printf("    %-14s n=%-7zu worst %.3g of tolerance at %zu (got %.9g, want %.9g)%s\n", what, n, worst, at, (double) got(at),
           (double) want(at), ok ? "" : "  FAIL");
    return ok;
}
auto no_nan = [](size_t) { return false; };

// ---- the forward (lmForward) ----------------------------------------------------------------------------------------

struct Problem {
    const char* name;
    int n, vocab, chunk, block;  // rows, V, vocabulary columns per chunk, token rows per block
    std::vector<float> z;        // [n, V]: the logits / T' the GEMMs would produce
    std::vector<int> tgt;        // [n]
};

struct Fwd {
    std::vector<double> lse, logp_d;
    std::vector<float> logp_f;
    int flag[4] = {0, 0, 0, 0};
    bool ok = true;
};

// One row of z: kinds cycle over unit normals, wide (a temperature of 0.7 on sd 3), T = 0's 1/T' = 1e7 scaling, the
// max in the last chunk far above the rest (the running sums rescale by exp(m_old - m_new) ~ 0), the max in the
// first chunk with every later logit 100 below (their terms underflow), all equal, and a first chunk of -inf.
void fill_row(Rng& rng, float* z, int v, int chunk, int kind) {
    for (int j = 0; j < v; j++) {
        double g = rng.normal();
        switch (kind % 7) {
            case 0: z[j] = (float) g; break;
            case 1: z[j] = (float) (3 * g / 0.7); break;
            case 2: z[j] = (float) (g * (double) (float) (1.0 / 1e-7)); break;
            case 3: z[j] = (float) g + (j == v - 1 ? 60.f : 0.f); break;
            case 4: z[j] = j < chunk ? (float) g : (float) (g - 100); break;
            case 5: z[j] = 0.25f; break;
            default: z[j] = j < chunk && v > chunk ? -INFINITY : (float) g; break;
        }
    }
}

// Targets that visit every chunk: its first and last column, one inside, 0 and V - 1.
std::vector<int> spread_targets(Rng& rng, int n, int v, int chunk) {
    std::vector<int> c;
    for (int v0 = 0; v0 < v; v0 += chunk) {
        int cols = std::min(chunk, v - v0);
        c.push_back(v0);
        c.push_back(v0 + cols - 1);
        c.push_back(v0 + rng.below(cols));
    }
    std::vector<int> t(n);
    for (int r = 0; r < n; r++) t[r] = c[(size_t) r % c.size()];
    return t;
}

Problem make_problem(const char* name, int n, int v, int chunk, int block, uint64_t seed) {
    Rng rng(seed);
    Problem p{name, n, v, chunk, block, std::vector<float>((size_t) n * v), {}};
    for (int r = 0; r < n; r++) fill_row(rng, &p.z[(size_t) r * v], v, chunk, r);
    p.tgt = spread_targets(rng, n, v, chunk);
    return p;
}

// A fresh exact-size copy of z's (block, chunk).
std::vector<float> chunk_of(const Problem& p, int t0, int rows, int v0, int cols) {
    std::vector<float> c((size_t) rows * cols);
    for (int r = 0; r < rows; r++)
        memcpy(&c[(size_t) r * cols], &p.z[(size_t) (t0 + r) * p.vocab + v0], sizeof(float) * cols);
    return c;
}

// lmForward: every output and the per-token state start as NaN (nothing may read them before writing).
Fwd forward(const Problem& p, bool want_d, bool want_f, const int* preset_flag = nullptr) {
    Fwd f;
    const int n = p.n;
    f.lse.assign(n, NAN);
    f.logp_d.assign(n, NAN);
    f.logp_f.assign(n, NAN);
    if (preset_flag) memcpy(f.flag, preset_flag, sizeof f.flag);
    std::vector<float> m(n, NAN), zt(n, NAN);
    std::vector<double> s(n, NAN);
    for (int t0 = 0; t0 < n; t0 += p.block) {
        const int rows = std::min(p.block, n - t0);
        for (int v0 = 0; v0 < p.vocab; v0 += p.chunk) {
            const int cols = std::min(p.chunk, p.vocab - v0);
            std::vector<float> z = chunk_of(p, t0, rows, v0, cols);
            int e = g4_lmhead_lse(P(z.data()), rows, cols, v0, p.vocab, P(p.tgt.data() + t0), t0, P(m.data() + t0),
                                  P(s.data() + t0), P(zt.data() + t0), v0 == 0, v0 + cols >= p.vocab, P(f.lse.data() + t0),
                                  want_d ? P(f.logp_d.data() + t0) : 0, want_f ? P(f.logp_f.data() + t0) : 0, P(f.flag), OP, 0);
            if (e) { printf("    g4_lmhead_lse returned %d  FAIL\n", e); f.ok = false; }
        }
    }
    return f;
}

struct RefFwd {
    std::vector<double> lse, logp;
};

// float64: lse = log sum_j exp(z_j); logp = z_t - lse (NaN for a target outside [0, V)).
RefFwd ref_forward(const Problem& p) {
    RefFwd r{std::vector<double>(p.n), std::vector<double>(p.n)};
    for (int i = 0; i < p.n; i++) {
        const float* z = &p.z[(size_t) i * p.vocab];
        double mx = -INFINITY, s = 0;
        for (int j = 0; j < p.vocab; j++) mx = fmax(mx, (double) z[j]);
        for (int j = 0; j < p.vocab; j++) s += exp((double) z[j] - mx);
        r.lse[i] = mx + log(s);
        const int t = p.tgt[i];
        r.logp[i] = t >= 0 && t < p.vocab ? (double) z[t] - r.lse[i] : NAN;
    }
    return r;
}

bool valid(const Problem& p, int i) { return p.tgt[i] >= 0 && p.tgt[i] < p.vocab; }

// The forward's outputs against float64 (docs/ops.md tokenLogprobs: atol 2e-5, rtol 1e-5) and the twin (bitwise).
bool check_forward(const Problem& p, const Fwd& f, const RefFwd& r, bool want_d, bool want_f) {
    bool ok = f.ok;
    ok &= check_tol("lse", p.n, [&](size_t i) { return f.lse[i]; }, [&](size_t i) { return r.lse[i]; },
                    [&](size_t i) { return 2e-5 + 1e-5 * fabs(r.lse[i]); }, no_nan);
    auto bad_target = [&](size_t i) { return !valid(p, (int) i); };
    if (want_d)
        ok &= check_tol("logp (f64)", p.n, [&](size_t i) { return f.logp_d[i]; }, [&](size_t i) { return r.logp[i]; },
                        [&](size_t i) { return 2e-5 + 1e-5 * fabs(r.logp[i]); }, bad_target);
    if (want_f)
        ok &= check_tol("logp (fp32)", p.n, [&](size_t i) { return (double) f.logp_f[i]; }, [&](size_t i) { return r.logp[i]; },
                        [&](size_t i) { return 2e-5 + 1e-5 * fabs(r.logp[i]); }, bad_target);
    std::vector<double> tl(p.n), tp(p.n);
    g4_host_lmhead_lse(p.z.data(), p.n, p.vocab, p.chunk, p.tgt.data(), tl.data(), tp.data());
    int diff = 0;
    for (int i = 0; i < p.n; i++) {
        diff += !same(f.lse[i], tl[i]);
        if (want_d) diff += !same(f.logp_d[i], tp[i]);
        if (want_f) diff += !samef(f.logp_f[i], (float) tp[i]);
    }
    printf("    host twin: %d of %d rows' outputs differ in any bit%s\n", diff, p.n, diff ? "  FAIL" : "");
    return ok && diff == 0;
}

// ---- the backward (lmBackward's dlogits) ----------------------------------------------------------------------------

struct Dz {
    std::vector<float> dz;               // in place (fp32 operands)
    std::vector<__nv_bfloat16> hi, lo;   // the split (bf16 operands)
    bool ok = true;
};

// dlogits per (block, chunk) with the kernel's lse and the f64 upstream gradient g, both modes. In the split mode the
// chunk of z must stay as it was (the following GEMMs do not read it, but the kernel has no business writing it).
Dz dlogits(const Problem& p, const std::vector<double>& lse, const std::vector<double>& g) {
    Dz d;
    const size_t nv = (size_t) p.n * p.vocab;
    d.dz.assign(nv, NAN);
    d.hi.assign(nv, __float2bfloat16_rn(NAN));
    d.lo.assign(nv, __float2bfloat16_rn(NAN));
    for (int t0 = 0; t0 < p.n; t0 += p.block) {
        const int rows = std::min(p.block, p.n - t0);
        for (int v0 = 0; v0 < p.vocab; v0 += p.chunk) {
            const int cols = std::min(p.chunk, p.vocab - v0);
            std::vector<float> z = chunk_of(p, t0, rows, v0, cols), z0 = z;
            std::vector<__nv_bfloat16> hi((size_t) rows * cols, __float2bfloat16_rn(NAN)), lo(hi);
            int e = g4_lmhead_dlogits(P(z.data()), rows, cols, v0, p.vocab, P(p.tgt.data() + t0), P(lse.data() + t0),
                                      P(g.data() + t0), P(hi.data()), P(lo.data()), 0);
            // the single mode (lo null): hi alone, the split's hi bit for bit, z untouched
            std::vector<__nv_bfloat16> hi1((size_t) rows * cols, __float2bfloat16_rn(NAN));
            e |= g4_lmhead_dlogits(P(z.data()), rows, cols, v0, p.vocab, P(p.tgt.data() + t0), P(lse.data() + t0),
                                   P(g.data() + t0), P(hi1.data()), 0, 0);
            bool kept = memcmp(z.data(), z0.data(), sizeof(float) * z.size()) == 0;
            bool single = memcmp(hi1.data(), hi.data(), sizeof(__nv_bfloat16) * hi.size()) == 0;
            e |= g4_lmhead_dlogits(P(z.data()), rows, cols, v0, p.vocab, P(p.tgt.data() + t0), P(lse.data() + t0),
                                   P(g.data() + t0), 0, 0, 0);
            if (e || !kept || !single) {
                printf("    dlogits: error %d, z %s by the split and single modes, single-mode hi %s  FAIL\n", e,
                       kept ? "kept" : "WRITTEN", single ? "= split hi" : "DIFFERS from the split's hi");
                d.ok = false;
            }
            for (int r = 0; r < rows; r++)
                for (int j = 0; j < cols; j++) {
                    size_t at = (size_t) (t0 + r) * p.vocab + v0 + j, c = (size_t) r * cols + j;
                    d.dz[at] = z[c];
                    d.hi[at] = hi[c];
                    d.lo[at] = lo[c];
                }
        }
    }
    return d;
}

// dz against float64 g (1[v = t] - exp(z - lse_ref)), rows with a target outside [0, V) exactly 0; tol(i) is the
// allowed error of element i; the split's hi + lo gets 2^-17 |dz| more (with 2^e <= |x|: |x - hi| <= 2^(e-8), so lo
// rounds it with at most half a bf16 ulp of 2^(e-9), 2^(e-17) <= 2^-17 |x|); both bitwise against the twin.
template <typename T>
bool check_dz(const Problem& p, const Dz& d, const RefFwd& r, const std::vector<double>& g_ref,
              const std::vector<double>& lse, const std::vector<double>& g, T tol) {
    const size_t nv = (size_t) p.n * p.vocab;
    std::vector<double> want(nv);
    for (int i = 0; i < p.n; i++)
        for (int j = 0; j < p.vocab; j++) {
            size_t at = (size_t) i * p.vocab + j;
            want[at] = valid(p, i) ? g_ref[i] * ((j == p.tgt[i] ? 1.0 : 0.0) - exp((double) p.z[at] - r.lse[i])) : 0.0;
        }
    bool ok = d.ok;
    ok &= check_tol("dz (in place)", nv, [&](size_t i) { return (double) d.dz[i]; }, [&](size_t i) { return want[i]; }, tol,
                    no_nan);
    ok &= check_tol("dz (hi + lo)", nv,
                    [&](size_t i) { return (double) __bfloat162float(d.hi[i]) + (double) __bfloat162float(d.lo[i]); },
                    [&](size_t i) { return want[i]; },
                    [&](size_t i) { return tol(i) + ldexp(fabs(want[i]), -17) * 1.01; }, no_nan);
    int zero_bad = 0;
    for (int i = 0; i < p.n; i++)
        if (!valid(p, i))
            for (int j = 0; j < p.vocab; j++) zero_bad += d.dz[(size_t) i * p.vocab + j] != 0.f;
    std::vector<float> tz(nv);
    std::vector<short> th(nv), tlo(nv);
    g4_host_lmhead_dlogits(p.z.data(), p.n, p.vocab, p.tgt.data(), lse.data(), g.data(), tz.data(), th.data(), tlo.data());
    size_t diff = 0;
    for (size_t i = 0; i < nv; i++)
        diff += !samef(d.dz[i], tz[i]) || memcmp(&d.hi[i], &th[i], 2) != 0 || memcmp(&d.lo[i], &tlo[i], 2) != 0;
    printf("    host twin: %zu of %zu elements differ in any bit (dz, hi, lo); nonzero dz in rows with a bad target: %d%s\n",
           diff, nv, zero_bad, diff || zero_bad ? "  FAIL" : "");
    return ok && diff == 0 && zero_bad == 0;
}

// The kernel's own error, given its lse and the exact g: dz = fp32(g (1[t] - exp_f32(fp32(z - lse)))), so per
// element |g| p (|lse - lse_ref| + 2^-24 |z - lse| + exp_f32's error, 2 ulp asserted) plus dz's own rounding; p below
// exp_f32's flush (e^-87.33) counts as 1e-37 absolute.
auto kernel_dz_tol(const Problem& p, const RefFwd& r, const std::vector<double>& lse, const std::vector<double>& g) {
    return [&p, &r, &lse, &g](size_t at) {
        const size_t i = at / p.vocab;
        const double x = (double) p.z[at] - r.lse[i], pr = exp(x);
        const double rel = 2 * fabs(lse[i] - r.lse[i]) + ldexp(fabs(x), -24) + ldexp(1.0, -21);
        const double dz = fabs(g[i]) * fabs(((size_t) p.tgt[i] == at % p.vocab ? 1.0 : 0.0) - pr);
        return fabs(g[i]) * (pr * rel + 1e-37) + ldexp(dz, -23) + 1e-300;
    };
}

// ---- GRPO per token (grpo_terms_kernel, grpo_sum_kernel) ------------------------------------------------------------

struct Grpo {
    std::vector<double> logp;  // f64 log-probs (the lse kernel's, or synthetic)
    std::vector<float> old, ref, adv, w;
    std::vector<int> tgt;
    int vocab, kl;
    float eps_low = 0.2f, eps_high = 0.28f, beta = 0.05f;
};

struct GrpoOut {
    float loss = NAN;
    std::vector<float> lp, ratio, clipped, kl;
    std::vector<double> g;
};

// g4_grpo_terms in two launches (the row path's blocks: the first 1000 tokens, then the rest), then g4_grpo_sum.
GrpoOut run_grpo(const Grpo& q) {
    const int n = (int) q.logp.size();
    GrpoOut o;
    o.lp.assign(n, NAN);
    o.ratio.assign(n, NAN);
    o.clipped.assign(n, NAN);
    o.kl.assign(n, NAN);
    o.g.assign(n, NAN);
    std::vector<double> term(n, NAN);
    int e = 0;
    for (int t0 = 0; t0 < n; t0 += 1000) {
        const int rows = t0 == 0 ? std::min(n, 1000) : n - t0;
        e |= g4_grpo_terms(P(q.logp.data() + t0), P(q.old.data() + t0), P(q.ref.data() + t0), P(q.adv.data() + t0),
                           P(q.w.data() + t0), P(q.tgt.data() + t0), q.vocab, rows, q.eps_low, q.eps_high, q.beta, q.kl,
                           P(o.lp.data() + t0), P(o.ratio.data() + t0), P(o.clipped.data() + t0), P(o.kl.data() + t0),
                           P(o.g.data() + t0), P(term.data() + t0), 0);
        if (t0 > 0) break;
    }
    e |= g4_grpo_sum(P(term.data()), P(q.tgt.data()), q.vocab, n, P(&o.loss), 0);
    if (e) printf("    g4_grpo_terms / g4_grpo_sum returned %d  FAIL\n", e), o.loss = NAN;
    return o;
}

struct GrpoRef {
    double loss = 0, abs_sum = 0;  // abs_sum: sum |term|, the scale of the loss's rounding
    std::vector<double> ratio, kl, g;
    std::vector<int> clipped;
};

// grpo-reference.md section 4 in float64, on the given log-probs: per valid token t (a target outside [0, V) is left
// out: NaN values, clipped 0, gradient 0)
//   r = exp(logp - old), pg = max(-A r, -A clamp(r, 1 - eps_low, 1 + eps_high)), clipped = the second is larger,
//   d = clamp(logp - ref, -40, 40), kl1 = d, kl2 = d^2 / 2, kl3 = expm1(-d) + d, kl4 = r d,
//   loss = sum_t w_t (pg + beta kl), and dloss/dlogp_t = w_t (dpg + beta dkl), dpg = clipped ? 0 : -A r, with
//   dd/dlogp = 0 while the clamp is active: dkl1 = dd, dkl2 = d dd, dkl3 = (1 - exp(-d)) dd, dkl4 = r d + r dd.
GrpoRef ref_grpo(const Grpo& q, const std::vector<double>& logp) {
    const int n = (int) logp.size();
    GrpoRef r;
    r.ratio.assign(n, NAN);
    r.kl.assign(n, NAN);
    r.g.assign(n, 0);
    r.clipped.assign(n, 0);
    const double lo = 1.0 - (double) q.eps_low, hi = 1.0 + (double) q.eps_high;
    for (int t = 0; t < n; t++) {
        if (q.tgt[t] < 0 || q.tgt[t] >= q.vocab) continue;
        const double a = q.adv[t], ratio = exp(logp[t] - (double) q.old[t]);
        const double pg1 = -a * ratio, pg2 = -a * fmin(fmax(ratio, lo), hi);
        const bool clipped = pg2 > pg1;
        const double draw = logp[t] - (double) q.ref[t], d = fmin(fmax(draw, -40.0), 40.0);
        const double dd = draw < -40 || draw > 40 ? 0.0 : 1.0;
        double k, kg;
        switch (q.kl) {
            case 0: k = d; kg = dd; break;
            case 1: k = d * d / 2; kg = d * dd; break;
            case 2: k = expm1(-d) + d; kg = (1 - exp(-d)) * dd; break;
            default: k = ratio * d; kg = ratio * d + ratio * dd; break;
        }
        const double term = (double) q.w[t] * (fmax(pg1, pg2) + (double) q.beta * k);
        r.loss += term;
        r.abs_sum += fabs(term);
        r.ratio[t] = ratio;
        r.kl[t] = k;
        r.clipped[t] = clipped;
        r.g[t] = (double) q.w[t] * ((clipped ? 0.0 : -a * ratio) + (double) q.beta * kg);
    }
    return r;
}

// Inputs around given log-probs that reach every branch: ratios 0.5 .. 1.6 (both clip sides with A of either sign,
// and inside), none within 1e-3 of a clip edge (so the clip decision is stable under the forward's ~1e-7 error),
// logp - ref inside and beyond +-40, weights 0 (masked) and mask / count values.
Grpo make_grpo(Rng& rng, const std::vector<double>& logp, const std::vector<int>& tgt, int vocab, int kl) {
    const int n = (int) logp.size();
    Grpo q{logp, std::vector<float>(n), std::vector<float>(n), std::vector<float>(n), std::vector<float>(n), tgt, vocab, kl};
    const double ratios[] = {0.5, 0.79, 0.81, 0.95, 1.0, 1.05, 1.27, 1.29, 1.6};
    const double dref[] = {-60, -41, -39, -2, -0.3, 0, 1e-3, 0.5, 3, 39.5, 40.5, 70};
    for (int t = 0; t < n; t++) {
        const double lp = isnan(logp[t]) ? -3 : logp[t];
        q.old[t] = (float) (lp - log(ratios[rng.below(9)]));
        q.ref[t] = (float) (lp - dref[rng.below(12)]);
        q.adv[t] = (float) (rng.below(5) == 0 ? 0.0 : 1.5 * rng.normal());
        q.w[t] = rng.below(6) == 0 ? 0.f : 1.f / (float) n;
    }
    return q;
}

// The kernel's outputs against ref (tolerances given) and against the twin (bitwise, loss included).
bool check_grpo(const Grpo& q, const GrpoOut& o, const GrpoRef& r, const std::vector<double>& logp_ref, double v_atol,
                double v_rtol, double g_atol, double g_rtol, double loss_tol) {
    const size_t n = q.logp.size();
    auto bad = [&](size_t t) { return q.tgt[t] < 0 || q.tgt[t] >= q.vocab; };
    bool ok = true;
    ok &= check_tol("lp", n, [&](size_t t) { return (double) o.lp[t]; },
                    [&](size_t t) { return bad(t) ? NAN : logp_ref[t]; }, [&](size_t t) { return v_atol + v_rtol * fabs(logp_ref[t]); },
                    bad);
    ok &= check_tol("ratio", n, [&](size_t t) { return (double) o.ratio[t]; }, [&](size_t t) { return r.ratio[t]; },
                    [&](size_t t) { return v_atol + v_rtol * fabs(r.ratio[t]); }, bad);
    ok &= check_tol("kl", n, [&](size_t t) { return (double) o.kl[t]; }, [&](size_t t) { return r.kl[t]; },
                    [&](size_t t) { return v_atol + v_rtol * fabs(r.kl[t]); }, bad);
    ok &= check_tol("g (dloss/dlogp)", n, [&](size_t t) { return o.g[t]; }, [&](size_t t) { return r.g[t]; },
                    [&](size_t t) { return g_atol + g_rtol * fabs(r.g[t]); }, no_nan);
    int clip_diff = 0, nclipped = 0, nbad = 0;
    for (size_t t = 0; t < n; t++) {
        clip_diff += o.clipped[t] != (float) r.clipped[t];
        nclipped += r.clipped[t];
        nbad += bad(t);
    }
    const double le = fabs((double) o.loss - r.loss);
    const bool loss_ok = le <= loss_tol;
    printf("    clipped        %d of %zu tokens clipped, %d differ%s; %d with a bad target\n", nclipped, n, clip_diff,
           clip_diff ? "  FAIL" : "", nbad);
    printf("    loss           got %.9g, want %.12g, |error| %.3g <= %.3g%s\n", o.loss, r.loss, le, loss_tol,
           loss_ok ? "" : "  FAIL");
    std::vector<float> lp(n), ra(n), cl(n), kl(n);
    std::vector<double> g(n);
    float tloss = g4_host_grpo_tokens(q.logp.data(), q.old.data(), q.ref.data(), q.adv.data(), q.w.data(), q.tgt.data(),
                                      q.vocab, (int) n, q.eps_low, q.eps_high, q.beta, q.kl, lp.data(), ra.data(), cl.data(),
                                      kl.data(), g.data());
    int diff = !samef(o.loss, tloss);
    for (size_t t = 0; t < n; t++)
        diff += !samef(o.lp[t], lp[t]) || !samef(o.ratio[t], ra[t]) || !samef(o.clipped[t], cl[t]) || !samef(o.kl[t], kl[t]) ||
                !same(o.g[t], g[t]);
    printf("    host twin: %d of %zu tokens (and the loss) differ in any bit%s\n", diff, n, diff ? "  FAIL" : "");
    return ok && clip_diff == 0 && loss_ok && diff == 0;
}

const char* KL_NAMES[] = {"kl1", "kl2", "kl3", "kl4"};

}  // namespace

// lmForward's lse over chunks that do not divide V (9000 / 4096: two full chunks and 808; 1000 / 300; 7 / 3; 513 /
// 512: a last chunk of one column), one chunk (4096 / 4096, first and last at once), V = 1; token blocks with a short
// last block; targets in every chunk; each of the logp outputs CudaBackend asks for (f64 for grpoLoss, fp32 for
// tokenLogprobs, both, none for tokenLogprobsBackward).
EMU_CASE("lmhead", lse_over_chunks) {
    bool ok = true;
    struct Cfg { const char* name; int n, v, chunk, block; } cfgs[] = {
        {"V 9000 / 4096, rows 40 / 16", 40, 9000, 4096, 16}, {"V 1000 / 300, rows 23 / 7", 23, 1000, 300, 7},
        {"V 7 / 3, rows 9 / 4", 9, 7, 3, 4}, {"V 513 / 512, rows 14 / 14", 14, 513, 512, 14},
        {"V 4096 / 4096, rows 8 / 3", 8, 4096, 4096, 3}, {"V 1 / 1, rows 3 / 2", 3, 1, 1, 2},
        // chunks wider than the columns lse_kernel keeps in registers (256 threads x 16): the two-read path
        {"V 9000 / 5000, rows 6 / 4", 6, 9000, 5000, 4}};
    int k = 0;
    for (const Cfg& c : cfgs) {
        const bool want_d = k % 2 == 0 || k == 3, want_f = k % 2 == 1 || k == 0;
        k++;
        printf("  %s, logp %s\n", c.name, want_d && want_f ? "f64 + fp32" : want_d ? "f64" : want_f ? "fp32" : "none");
        Problem p = make_problem(c.name, c.n, c.v, c.chunk, c.block, 100 + k);
        Fwd f = forward(p, want_d, want_f);
        ok &= check_forward(p, f, ref_forward(p), want_d, want_f);
        if (f.flag[0]) { printf("    flag %d raised with valid targets  FAIL\n", f.flag[0]); ok = false; }
    }
    // tokenLogprobsBackward's forward asks for no log-prob: lse alone
    Problem p = make_problem("none", 10, 1000, 300, 4, 7);
    printf("  V 1000 / 300, rows 10 / 4, logp none\n");
    ok &= check_forward(p, forward(p, false, false), ref_forward(p), false, false);
    return ok;
}

// dlogits with the kernel's own lse and an exact upstream gradient (random, with zeros and negative values), in place
// and as the bf16 split, against float64 within the kernel's error model (kernel_dz_tol) and the twin.
EMU_CASE("lmhead", dlogits_in_place_and_split) {
    bool ok = true;
    struct Cfg { const char* name; int n, v, chunk, block; } cfgs[] = {
        {"V 9000 / 4096, rows 12 / 5", 12, 9000, 4096, 5}, {"V 1000 / 300, rows 17 / 6", 17, 1000, 300, 6},
        {"V 7 / 3, rows 9 / 9", 9, 7, 3, 9},
        // chunks wider than the columns dlogits_kernel loads ahead (256 threads x 16): the one-at-a-time path
        {"V 9000 / 5000, rows 5 / 3", 5, 9000, 5000, 3}};
    int k = 0;
    for (const Cfg& c : cfgs) {
        printf("  %s\n", c.name);
        Problem p = make_problem(c.name, c.n, c.v, c.chunk, c.block, 200 + k++);
        Fwd f = forward(p, true, false);
        RefFwd r = ref_forward(p);
        Rng rng(300 + k);
        std::vector<double> g(p.n);
        for (int i = 0; i < p.n; i++) g[i] = i % 4 == 3 ? 0.0 : rng.normal() * 3;
        Dz d = dlogits(p, f.lse, g);
        ok &= check_dz(p, d, r, g, f.lse, g, kernel_dz_tol(p, r, f.lse, g));
    }
    return ok;
}

// The GRPO kernel alone on synthetic float64 log-probs of 2100 tokens (two strides of its 1024 threads), each
// estimator: values within fp32 rounding of the float64 transcription (the kernel computes the same formulas in
// float64), the gradient within 1e-12, the loss within its tree's rounding (n 2^-52 sum |term|) plus its fp32 rounding;
// bitwise the twin.
EMU_CASE("lmhead", grpo_tokens_per_estimator) {
    bool ok = true;
    Rng rng(31);
    const int n = 2100, vocab = 500;
    std::vector<double> logp(n);
    std::vector<int> tgt(n);
    for (int t = 0; t < n; t++) {
        logp[t] = -fabs(rng.normal()) * 4 - (t % 50 == 0 ? 30 : 0);
        tgt[t] = rng.below(vocab);
    }
    for (int kl = 0; kl < 4; kl++) {
        Grpo q = make_grpo(rng, logp, tgt, vocab, kl);
        q.eps_high = kl == 3 ? 0.2f : 0.28f;
        printf("  n %d, %s, eps %g / %g, beta %g\n", n, KL_NAMES[kl], q.eps_low, q.eps_high, q.beta);
        GrpoRef r = ref_grpo(q, logp);
        GrpoOut o = run_grpo(q);
        ok &= check_grpo(q, o, r, logp, 1e-30, ldexp(1.0, -23), 1e-15, 1e-12,
                         n * ldexp(r.abs_sum, -52) + ldexp(fabs(r.loss), -24));
    }
    return ok;
}

// grpoLoss as CudaBackend runs it: lmForward (f64 log-probs) -> g4_grpo_terms, g4_grpo_sum -> lmBackward's dlogits on its g, fp32
// and split, against float64 end to end (the float64 log-probs, the loss of section 4 on them, dz = g_ref (1[t] - p)):
// docs/ops.md's grpoLoss tolerances (loss 1e-5 / 1e-5, logp, ratio, kl 2e-5 / 1e-4, clipped exact, gradients
// 2e-5 / 2e-4).
EMU_CASE("lmhead", grpo_loss_pipeline) {
    bool ok = true;
    Rng rng(41);
    for (int kl = 0; kl < 4; kl += 2) {
        Problem p = make_problem("grpo", 150, 9000, 4096, 64, 500 + kl);
        for (int i = 0; i < p.n; i++)  // unit-scale rows for the 1e7-scaled and the -inf-chunk kinds (the forward's case)
            if (i % 7 == 2 || i % 7 == 6) for (int j = 0; j < p.vocab; j++) p.z[(size_t) i * p.vocab + j] = (float) rng.normal() * 2;
        printf("  V 9000 / 4096, rows 150 / 64, %s\n", KL_NAMES[kl]);
        Fwd f = forward(p, true, false);
        RefFwd r = ref_forward(p);
        Grpo q = make_grpo(rng, f.logp_d, p.tgt, p.vocab, kl);
        GrpoOut o = run_grpo(q);
        GrpoRef rr = ref_grpo(q, r.logp);
        ok &= f.ok && check_grpo(q, o, rr, r.logp, 2e-5, 1e-4, 2e-5, 2e-4, 1e-5 + 1e-5 * fabs(rr.loss));
        Dz d = dlogits(p, f.lse, o.g);
        ok &= check_dz(p, d, r, rr.g, f.lse, o.g,
                       [&](size_t at) {
                           const size_t i = at / p.vocab;
                           double pr = exp((double) p.z[at] - r.lse[i]);
                           return 2e-5 + 2e-4 * fabs(rr.g[i] * (((size_t) p.tgt[i] == at % p.vocab ? 1.0 : 0.0) - pr));
                       });
    }
    return ok;
}

// tokenLogprobsBackward: lmForward without log-probs, g4_f32_to_f64 of dLogprobs into the state, dlogits on it;
// against float64 dz = dLogprobs (1[t] - p) at docs/ops.md's gradient tolerance.
EMU_CASE("lmhead", token_logprobs_backward_pipeline) {
    Problem p = make_problem("bwd", 30, 2500, 1024, 11, 600);
    printf("  V 2500 / 1024, rows 30 / 11\n");
    Fwd f = forward(p, false, false);
    RefFwd r = ref_forward(p);
    Rng rng(601);
    std::vector<float> dlp(p.n);
    for (float& x : dlp) x = (float) rng.normal();
    std::vector<double> g(p.n, NAN), g_ref(p.n);
    int e = g4_f32_to_f64(P(g.data()), P(dlp.data()), p.n, 0);
    for (int i = 0; i < p.n; i++) g_ref[i] = dlp[i];
    Dz d = dlogits(p, f.lse, g);
    bool ok = f.ok && e == 0;
    ok &= check_dz(p, d, r, g_ref, f.lse, g, [&](size_t at) {
        const size_t i = at / p.vocab;
        double pr = exp((double) p.z[at] - r.lse[i]);
        return 2e-5 + 2e-4 * fabs(g_ref[i] * (((size_t) p.tgt[i] == at % p.vocab ? 1.0 : 0.0) - pr));
    });
    return ok;
}

// Out-of-range targets (docs/ops.md "Index data"): no fault; the lse kernel's first chunk reports one of them through
// the flag (op, global row index = row0 + r, value, V) and only if no earlier report is pending; lse is still the row's;
// the log-prob, ratio and kl are NaN, clipped 0, g 0, the row is left out of the loss and its dz is 0 everywhere.
// The bad rows lie in the second token block and later, so a report without row0 would name the wrong row.
EMU_CASE("lmhead", out_of_range_targets) {
    Problem p = make_problem("bad", 12, 1000, 300, 5, 700);
    for (int i = 0; i < p.n; i++)
        for (int j = 0; j < p.vocab; j++) p.z[(size_t) i * p.vocab + j] = (float) (((i * 131 + j * 71) % 97) / 13.0);
    const int bad_rows[] = {7, 9, 11}, bad_vals[] = {-1, 1000, INT_MIN};
    for (int k = 0; k < 3; k++) p.tgt[bad_rows[k]] = bad_vals[k];
    p.tgt[10] = INT_MAX - 1;
    printf("  V 1000 / 300, rows 12 / 5, targets -1, 1000, INT_MIN, INT_MAX - 1 at rows 7, 9, 11, 10\n");
    Fwd f = forward(p, true, true);
    RefFwd r = ref_forward(p);
    bool ok = check_forward(p, f, r, true, true);
    bool named = false;
    for (int k = 0; k < 4; k++) {
        int row = k < 3 ? bad_rows[k] : 10, val = k < 3 ? bad_vals[k] : INT_MAX - 1;
        named |= f.flag[1] == row && f.flag[2] == val;
    }
    bool flag_ok = f.flag[0] == OP && named && f.flag[3] == p.vocab;
    printf("    flag {%d, %d, %d, %d}: op %s, a bad row and its value %s, limit %s%s\n", f.flag[0], f.flag[1], f.flag[2],
           f.flag[3], f.flag[0] == OP ? "yes" : "no", named ? "yes" : "no", f.flag[3] == p.vocab ? "yes" : "no",
           flag_ok ? "" : "  FAIL");
    ok &= flag_ok;
    const int earlier[4] = {3, 1, 2, 3};
    Fwd f2 = forward(p, true, false, earlier);
    bool kept = memcmp(f2.flag, earlier, sizeof earlier) == 0;
    printf("    a pending report {3, 1, 2, 3} is kept: %s%s\n", kept ? "yes" : "no", kept ? "" : "  FAIL");
    ok &= kept;
    Rng rng(701);
    Grpo q = make_grpo(rng, f.logp_d, p.tgt, p.vocab, 2);
    GrpoOut o = run_grpo(q);
    ok &= check_grpo(q, o, ref_grpo(q, r.logp), r.logp, 2e-5, 1e-4, 2e-5, 2e-4, 1e-5 + 1e-5 * fabs(ref_grpo(q, r.logp).loss));
    Dz d = dlogits(p, f.lse, o.g);
    ok &= check_dz(p, d, r, ref_grpo(q, r.logp).g, f.lse, o.g, [&](size_t at) {
        const size_t i = at / p.vocab;
        return 2e-5 + 2e-4 * fabs(o.g[i]);
    });
    // tokenLogprobsBackward: the caller's dLogprobs is not 0 on those rows, dz must be
    printf("  dlogits with dLogprobs 1.5 on every row\n");
    std::vector<double> g(p.n, 1.5);
    ok &= check_dz(p, dlogits(p, f.lse, g), r, g, f.lse, g, [&](size_t) { return 2e-5 + 2e-4 * 1.5; });
    return ok;
}

// ---- the row path (CudaBackend.lmRows) ---------------------------------------------------------------------------------

// A fresh exact-size copy of a token block's whole rows, row stride ld >= V; the padding columns hold a marker.
constexpr float PAD = 12345.f;
std::vector<float> rows_of(const Problem& p, int t0, int rows, long long ld) {
    std::vector<float> c((size_t) (rows * ld), PAD);
    for (int r = 0; r < rows; r++) memcpy(&c[(size_t) (r * ld)], &p.z[(size_t) (t0 + r) * p.vocab], sizeof(float) * p.vocab);
    return c;
}

// g4_lmhead_lse_rows per token block of p.block rows (row0 = t0): lse and the log-probs bit for bit those of the
// chunked forward (which check_forward holds to float64 and to the twin), the same flag report; a chunk wider than the
// kernel keeps in registers, or ld < V, is refused (an error, nothing written).
EMU_CASE("lmhead", lse_rows_match_chunks) {
    bool ok = true;
    struct Cfg { const char* name; int n, v, chunk, block, pad; } cfgs[] = {
        {"V 9000 / 4096, rows 40 / 16, ld V + 3", 40, 9000, 4096, 16, 3}, {"V 1000 / 300, rows 23 / 7", 23, 1000, 300, 7, 0},
        {"V 7 / 3, rows 9 / 4, ld V + 1", 9, 7, 3, 4, 1}, {"V 513 / 512, rows 14 / 14", 14, 513, 512, 14, 0},
        {"V 4096 / 4096, rows 8 / 3", 8, 4096, 4096, 3, 0}, {"V 1 / 1, rows 3 / 2", 3, 1, 1, 2, 0}};
    int k = 0;
    for (const Cfg& c : cfgs) {
        printf("  %s\n", c.name);
        Problem p = make_problem(c.name, c.n, c.v, c.chunk, c.block, 100 + ++k);
        if (k == 2) p.tgt[9] = -3, p.tgt[20] = c.v;  // reported once: the first block's bad row, with its global index
        Fwd want = forward(p, true, true);
        std::vector<double> lse(p.n, NAN), lpd(p.n, NAN);
        std::vector<float> lpf(p.n, NAN);
        int flag[4] = {0, 0, 0, 0}, e = 0;
        const long long ld = c.v + c.pad;
        for (int t0 = 0; t0 < p.n; t0 += p.block) {
            const int rows = std::min(p.block, p.n - t0);
            std::vector<float> z = rows_of(p, t0, rows, ld), z0 = z;
            e |= g4_lmhead_lse_rows(P(z.data()), rows, ld, p.vocab, p.chunk, P(p.tgt.data() + t0), t0, P(lse.data() + t0),
                                    P(lpd.data() + t0), P(lpf.data() + t0), P(flag), OP, 0);
            if (memcmp(z.data(), z0.data(), sizeof(float) * z.size())) { printf("    z written  FAIL\n"); ok = false; }
        }
        int diff = 0;
        for (int i = 0; i < p.n; i++) diff += !same(lse[i], want.lse[i]) || !same(lpd[i], want.logp_d[i]) || !samef(lpf[i], want.logp_f[i]);
        bool flag_ok = memcmp(flag, want.flag, sizeof flag) == 0;
        printf("    %d of %d rows differ from the chunked forward in any bit; flag {%d, %d, %d, %d} %s%s\n", diff, p.n, flag[0],
               flag[1], flag[2], flag[3], flag_ok ? "as the chunked forward's" : "DIFFERS", diff || !flag_ok || e ? "  FAIL" : "");
        ok &= want.ok && diff == 0 && flag_ok && e == 0;
    }
    Problem p = make_problem("refused", 3, 9000, 5000, 3, 9);
    std::vector<float> z = rows_of(p, 0, 3, 9000);
    std::vector<double> lse(3, -7.0);
    int flag[4] = {0, 0, 0, 0};
    int e1 = g4_lmhead_lse_rows(P(z.data()), 3, 9000, 9000, 5000, P(p.tgt.data()), 0, P(lse.data()), 0, 0, P(flag), OP, 0);
    int e2 = g4_lmhead_lse_rows(P(z.data()), 3, 8999, 9000, 4096, P(p.tgt.data()), 0, P(lse.data()), 0, 0, P(flag), OP, 0);
    bool refused = e1 != 0 && e2 != 0 && lse[0] == -7.0;
    printf("  chunk 5000 > 4096, ld < V: refused (errors %d, %d), nothing written%s\n", e1, e2, refused ? "" : "  FAIL");
    return ok && refused;
}

// g4_lmhead_dlogits_rows in place over whole rows: fp32 dz bit for bit the chunk kernel's (padding columns untouched),
// and bf16 packed at the start of each row (row stride 2 ld) bit for bit the chunk kernel's single-mode hi; rows with
// a bad target all 0.
EMU_CASE("lmhead", dlogits_rows_in_place) {
    bool ok = true;
    struct Cfg { const char* name; int n, v, chunk, block, pad; } cfgs[] = {
        {"V 9000 / 4096, rows 12 / 5, ld V + 4", 12, 9000, 4096, 5, 4}, {"V 1000 / 300, rows 17 / 6", 17, 1000, 300, 6, 0},
        {"V 7 / 3, rows 9 / 9, ld V + 1", 9, 7, 3, 9, 1}, {"V 8192 / 4096, rows 6 / 6", 6, 8192, 4096, 6, 0},
        {"V 1 / 1, rows 4 / 3", 4, 1, 1, 3, 0}};
    int k = 0;
    for (const Cfg& c : cfgs) {
        printf("  %s\n", c.name);
        Problem p = make_problem(c.name, c.n, c.v, c.chunk, c.block, 200 + ++k);
        p.tgt[1] = -1;
        Fwd f = forward(p, true, false);
        Rng rng(300 + k);
        std::vector<double> g(p.n);
        for (int i = 0; i < p.n; i++) g[i] = i % 4 == 3 ? 0.0 : rng.normal() * 3;
        Dz want = dlogits(p, f.lse, g);
        const long long ld = c.v + c.pad;
        size_t d32 = 0, d16 = 0, pad_bad = 0;
        int e = 0;
        for (int t0 = 0; t0 < p.n; t0 += p.block) {
            const int rows = std::min(p.block, p.n - t0);
            std::vector<float> z = rows_of(p, t0, rows, ld), zb = z;
            e |= g4_lmhead_dlogits_rows(P(z.data()), rows, ld, p.vocab, p.chunk, P(p.tgt.data() + t0), P(f.lse.data() + t0),
                                        P(g.data() + t0), 0, 0);
            e |= g4_lmhead_dlogits_rows(P(zb.data()), rows, ld, p.vocab, p.chunk, P(p.tgt.data() + t0), P(f.lse.data() + t0),
                                        P(g.data() + t0), 1, 0);
            const __nv_bfloat16* hb = reinterpret_cast<const __nv_bfloat16*>(zb.data());
            for (int r = 0; r < rows; r++) {
                for (int j = 0; j < p.vocab; j++) {
                    const size_t at = (size_t) (t0 + r) * p.vocab + j;
                    d32 += !samef(z[(size_t) (r * ld + j)], want.dz[at]);
                    d16 += memcmp(&hb[(size_t) (r * 2 * ld + j)], &want.hi[at], 2) != 0;
                }
                for (long long j = p.vocab; j < ld; j++) pad_bad += z[(size_t) (r * ld + j)] != PAD;
            }
        }
        bool good = want.ok && e == 0 && d32 == 0 && d16 == 0 && pad_bad == 0;
        printf("    differ from the chunk kernel: %zu fp32, %zu bf16 of %d; padding written: %zu%s\n", d32, d16, p.n * p.vocab,
               pad_bad, good ? "" : "  FAIL");
        ok &= good;
    }
    return ok;
}

// g4_f32_to_f64: exact widening of every class of float (normal, subnormal, +-0, +-inf, NaN), n not a multiple of the
// 256-thread block, n = 1, and n = 0 a no-op.
EMU_CASE("lmhead", f32_to_f64) {
    Rng rng(9);
    bool ok = true;
    for (int n : {2100, 1, 0}) {
        std::vector<float> x(n);
        const float special[] = {0.f, -0.f, INFINITY, -INFINITY, NAN, 1e-45f, -1e-40f, 3.4028235e38f, 1.f};
        for (int i = 0; i < n; i++) x[i] = i < 9 ? special[i] : (float) (rng.normal() * pow(10.0, rng.below(20) - 10));
        std::vector<double> y(n + 1, -7.0);
        int e = g4_f32_to_f64(P(y.data()), P(x.data()), n, 0);
        int diff = 0;
        for (int i = 0; i < n; i++) diff += !same(y[i], (double) x[i]) || (isnan(x[i]) != isnan(y[i]));
        bool good = e == 0 && diff == 0 && y[n] == -7.0;
        printf("    n=%d: %d differ from (double) x, element n untouched: %s%s\n", n, diff, y[n] == -7.0 ? "yes" : "no",
               good ? "" : "  FAIL");
        ok &= good;
    }
    return ok;
}
