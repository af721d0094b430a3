// tools/kernel-emu: cuda/sampling.cu through its launcher g4_sample (sample_kernel, fp32 and bf16 logits, B rows per
// call, each row its own (stream, step) counter) against the host twin g4_host_sample_row (sampling.cuh's
// host_sample_row, which SamplingDeviceMathTest holds against the CPU sampler). The checks of the former sampler-emu, through
// the real launcher: its spec table (temperature / top-k / top-p incl. greedy, k = 1, tiny p, k beyond V), vocabularies
// 1 .. 20000 (one and several tiles of 4096, around the shared-memory list's 2048), its six logit kinds. Every row's
// token and log-prob must be bit-equal to the twin's: the kernel's reductions are over integers and keys (order-free)
// and its few floating-point steps are the twin's code, run here on the same host libm. On top, the contract itself
// (docs/ops.md): a row whose maximum is infinite returns its first index holding it with log-prob NaN, T = 0 returns
// the first argmax, and a finite log-prob is within 1e-5 of the float64 log-softmax(x / T) (T = 0: of softmax(x)).
#include "emu_test.h"

using namespace emu_test;

namespace {

struct Spec {
    float t;
    int k;
    float p;
};
// The former sampler-emu's table: unfiltered (T 1, 0.7), greedy, k = 1, small and mid k, top-p alone, both, tiny p,
// k = 3000 (beyond V for the small vocabularies: the launcher's "no top-k"), p = 1e-30 (only the top token's mass).
const Spec SPECS[] = {{1, 0, 1},    {0.7f, 0, 1},    {0, 0, 1},       {1, 1, 1},        {1, 5, 1},
                      {1.3f, 50, 1}, {1, 0, 0.9f},   {0.6f, 0, 0.5f}, {1, 50, 0.9f},    {0.8f, 7, 0.3f},
                      {1, 0, 0.01f}, {1, 3000, 1},   {1, 3000, 0.95f}, {1, 0, 1e-30f}};
constexpr int NSPECS = sizeof SPECS / sizeof *SPECS;
const int VOCABS[] = {1, 3, 100, 2047, 2049, 4096, 4097, 9000, 20000};
constexpr int NVOCABS = sizeof VOCABS / sizeof *VOCABS;
const char* KIND_NAMES[] = {"normal", "wide", "ties", "llm", "nonfinite", "ulp-ties"};
constexpr int NKINDS = 6;

// One row of logits of the given kind (the former sampler-emu's generator).
std::vector<float> make_row(Rng& rng, int v, int kind) {
    std::vector<float> x(v);
    for (int j = 0; j < v; j++) {
        double g = rng.normal();
        switch (kind) {
            case 0: x[j] = (float) g; break;
            case 1: x[j] = (float) (3 * g); break;
            case 2: x[j] = (float) rint(2 * g); break;                                             // big tie groups
            case 3: x[j] = (float) (-log(-log(rng.uniform())) * 2 + (j < 20 ? 8 : 0)); break;      // LLM-like
            case 4: x[j] = j % 7 == 0 ? -INFINITY : (j % 11 == 0 ? NAN : (float) g); break;        // non-finite entries
            default: x[j] = 1.0f + (float) rng.below(5) * 1.1920929e-7f; break;                   // ulp-close ties
        }
    }
    return x;
}

bool same_bits(float a, float b) { return memcmp(&a, &b, 4) == 0; }

struct Tally {
    int rows = 0, filtered = 0, bf16 = 0, nonfinite_max = 0, greedy = 0, bad = 0, calls = 0;
    double worst_lp = 0;  // largest |lp - float64| over finite rows
};

// The contract's float64 log-prob of token tok: (x_t - xmax)/T - log sum_j exp((x_j - xmax)/T), NaN as -inf.
double lp_reference(const std::vector<float>& x, int tok, float t) {
    double inv = t > 0 ? 1.0 / (double) t : 1.0, mx = -INFINITY;
    for (float e : x) if (e == e) mx = fmax(mx, (double) e);
    double s = 0;
    for (float e : x) if (e == e) s += exp(((double) e - mx) * inv);
    return ((double) x[tok] - mx) * inv - log(s);
}

// One g4_sample call of b rows (kinds kind0, kind0 + 1, ...), each against the twin and the contract.
// list_cap and b0_bias: g4_sample_ex's (-1 and 0: g4_sample's own).
void run_call(Rng& rng, Tally& tl, int v, const Spec& s, bool bf16, int b, int kind0, bool verbose, int list_cap = -1,
              int b0_bias = 0) {
    std::vector<float> x((size_t) b * v);
    std::vector<int> kinds(b);
    for (int r = 0; r < b; r++) {
        kinds[r] = (kind0 + r) % NKINDS;
        std::vector<float> row = make_row(rng, v, kinds[r]);
        std::copy(row.begin(), row.end(), x.begin() + (size_t) r * v);
    }
    std::vector<__nv_bfloat16> xb;
    if (bf16) {
        xb = to_bf16(x);
        x = widen(xb);  // the twin and the reference see the kernel's values
    }
    std::vector<int> ctr(2 * b), tok(b, -7);
    for (int r = 0; r < b; r++) {
        ctr[2 * r] = rng.below(100000);  // stream
        ctr[2 * r + 1] = rng.below(1000); // step
    }
    std::vector<float> lp(b, 12345.f);
    const long long seed = (long long) rng.g();
    int e = g4_sample_ex(bf16 ? G4_BF16 : G4_F32, P(tok.data()), P(lp.data()), bf16 ? P(xb.data()) : P(x.data()),
                         P(ctr.data()), b, v, s.t, s.k, s.p, seed, list_cap, b0_bias, 0);
    tl.calls++;
    const bool filtered = s.t > 0 && ((s.k > 0 && s.k < v) || s.p < 1);
    for (int r = 0; r < b; r++) {
        const std::vector<float> row(x.begin() + (size_t) r * v, x.begin() + (size_t) (r + 1) * v);
        int ttok = -9;
        double tlp;
        g4_host_sample_row(row.data(), v, s.t, s.k, s.p, g4_host_philox_uniform(seed, ctr[2 * r], ctr[2 * r + 1]), &ttok,
                           &tlp, nullptr);
        // contract: the first index of the largest value (NaN as -inf) for infinite maxima and for T = 0
        int arg = 0;
        float mx = -INFINITY;
        for (int j = 0; j < v; j++) if (row[j] > mx) { mx = row[j]; arg = j; }
        const bool inf_max = isinf(mx);
        bool ok = e == 0 && tok[r] == ttok && (same_bits(lp[r], (float) tlp) || (isnan(lp[r]) && isnan(tlp)));
        const char* why = e ? "launcher error" : (tok[r] != ttok ? "token differs from the twin"
                                                                 : (!ok ? "log-prob differs from the twin" : ""));
        if (ok && (inf_max || s.t == 0) && tok[r] != arg) { ok = false; why = "not the first argmax"; }
        if (ok && inf_max && !isnan(lp[r])) { ok = false; why = "infinite maximum without a NaN log-prob"; }
        if (ok && !inf_max) {
            const double err = fabs((double) lp[r] - lp_reference(row, tok[r], s.t));
            tl.worst_lp = fmax(tl.worst_lp, err);
            if (!(err <= 1e-5)) { ok = false; why = "log-prob beyond 1e-5 of float64"; }
        }
        tl.rows++;
        tl.filtered += filtered && !inf_max;
        tl.bf16 += bf16;
        tl.nonfinite_max += inf_max;
        tl.greedy += s.t == 0 && !inf_max;
        if (!ok) tl.bad++;
        if (verbose || !ok)
            printf("    V=%-5d %s %-9s T=%g k=%d p=%g row %d/%d: kernel %d %.9g, twin %d %.9g%s%s\n", v, bf16 ? "bf16" : "fp32",
                   KIND_NAMES[kinds[r]], s.t, s.k, s.p, r, b, tok[r], lp[r], ttok, tlp, ok ? "" : "  FAIL: ", why);
    }
}

void summary(const Tally& tl) {
    printf("    %d calls, %d rows (%d filtered, %d greedy, %d with an infinite maximum; %d bf16): %d differ from the twin "
           "or the contract; worst |logprob - float64| %.3g\n",
           tl.calls, tl.rows, tl.filtered, tl.greedy, tl.nonfinite_max, tl.bf16, tl.bad, tl.worst_lp);
}

}  // namespace

// Every (spec, vocabulary) pair: call i takes spec i mod 14 and vocabulary i mod 9 (coprime: 126 calls meet every
// pair once), rows of consecutive kinds (i, i + 1: every (spec, kind) pair is met), bf16 in every other run of 9
// calls (both dtypes meet every spec and every vocabulary).
EMU_CASE("sampling", rows_match_host_twin) {
    Rng rng(20260311);
    Tally tl;
    for (int i = 0; i < NSPECS * NVOCABS; i++) {
        const int v = VOCABS[i % NVOCABS], b = v >= 9000 ? 1 : 2;
        run_call(rng, tl, v, SPECS[i % NSPECS], (i / NVOCABS) % 2 == 1, b, i, false);
    }
    summary(tl);
    return tl.bad == 0;
}

// Top-p alone through each of the kernel's paths (the tokens are the same on all): the candidate list as the device
// sizes it (the other cases), no list (the row passes), a list of 1024 that the wide rows overflow (the search goes
// on over the row after the candidate pass), the list's lowest bin forced to the top one (the boundary lies under it
// on most rows: the first pass is redone over all bins) and to bin 0 (every token a candidate). Every vocabulary and
// kind, fp32 and bf16, against the twin.
EMU_CASE("sampling", top_p_paths_match_host_twin) {
    Rng rng(77);
    Tally tl;
    const Spec specs[] = {{1, 0, 0.9f}, {0.6f, 0, 0.5f}, {1, 0, 0.01f}, {1.3f, 0, 0.95f}, {1, 0, 1e-30f}};
    const struct { int cap, bias; } paths[] = {{0, 0}, {1024, 0}, {-1, 1024}, {-1, -1024}};
    int i = 0;
    for (const auto& path : paths)
        for (int vi = 2; vi < NVOCABS; vi++, i++)
            run_call(rng, tl, VOCABS[vi], specs[i % 5], i % 2 == 1, VOCABS[vi] >= 9000 ? 1 : 2, i, false, path.cap, path.bias);
    summary(tl);
    return tl.bad == 0;
}

// The candidate list's size (top-p 0.9 alone, V = 128,256), from the kernel's own helpers (sampling.cuh), each row's
// token through the kernel against the twin, and the twin's count of the kernel's reads of the row after pass A. On a
// row whose nucleus is a few tokens in distinct tiles, the tiles' maxima carry top_p of the mass, so the list is the
// top bins (a few tokens); where the top tokens share a tile or the nucleus is wide (the benchmark's N(0, 4^2) logits,
// a 0.9-nucleus of ~24 tokens over ~10 tiles), only cand_b0's bound applies: ~12,000 tokens on the benchmark's row,
// which pass A keeps itself (0 more reads), and ~19,500 on a N(0, 1) row whose 8 dominant tokens share a tile, which
// overflow some warps' segments (the search then reads the row: the limitation, written down in docs/kernels.md).
// On the flat N(0, 1) background pass A's running bound (the mass so far, not the tiles' maxima) keeps nearly all of
// a group until the dominant token's group: the segments fill, and that group's compaction key (which counts its
// tile maxima) drops the background, so the dominant tokens find room and the short list is pass A's (0 more reads).
EMU_CASE("sampling", candidate_list_sizes) {
    const int v = 128256;
    Rng rng(31);
    struct Row { const char* name; std::vector<float> x; int most, least, reads; } rows[4];
    rows[0] = {"one dominant token (p ~ 0.94)", rng.normals(v), 1, 1, 0};
    rows[0].x[77777] = 15.f;
    rows[1] = {"8 dominant tokens in 8 tiles", rng.normals(v), 32, 8, 0};
    for (int i = 0; i < 8; i++) rows[1].x[1000 + 16000 * i] = 13.f + 0.01f * (float) i;
    rows[2] = {"the same 8 tokens in one tile", rows[1].x, 25000, 15000, 3};
    for (int i = 0; i < 8; i++) std::swap(rows[2].x[1000 + 16000 * i], rows[2].x[1000 + 100 * i]);
    rows[3] = {"N(0, 4^2), the benchmark's", rng.normals(v, 4.0), 16000, 8000, 0};
    bool ok = true;
    std::vector<float> all;
    for (auto& r : rows) {
        const int n = g4_host_cand_count(r.x.data(), v, 1.f, 0.9f);
        const bool good = n >= r.least && n <= r.most;
        printf("    %-34s list %6d tokens (want %d..%d)%s\n", r.name, n, r.least, r.most, good ? "" : "  FAIL");
        ok &= good;
        all.insert(all.end(), r.x.begin(), r.x.end());
    }
    Tally tl;
    std::vector<int> ctr(8), tok(4, -1);
    std::vector<float> lp(4);
    for (int i = 0; i < 8; i++) ctr[i] = 3 + i;
    int e = g4_sample(G4_F32, P(tok.data()), P(lp.data()), P(all.data()), P(ctr.data()), 4, v, 1.f, 0, 0.9f, 5, 0);
    for (int i = 0; i < 4; i++) {
        int ttok;
        double tlp;
        const double u = g4_host_philox_uniform(5, ctr[2 * i], ctr[2 * i + 1]);
        const int reads = g4_host_sample_row(&all[(size_t) i * v], v, 1.f, 0, 0.9f, u, &ttok, &tlp, nullptr);
        const bool good = e == 0 && tok[i] == ttok && same_bits(lp[i], (float) tlp) && reads == rows[i].reads;
        printf("    row %d: kernel %d %.6f, twin %d %.6f, the twin's reads after pass A %d (want %d)%s\n", i, tok[i], lp[i], ttok, tlp,
               reads, rows[i].reads, good ? "" : "  FAIL");
        ok &= good;
    }
    return ok;
}

// How often pass A keeps the whole candidate list (top-p alone), by the host twin's emulation of the kernel's segments
// (0 reads of the whole row after pass A): the benchmark's shape (V = 128,256, N(0, 4^2) logits, top-p 0.9) on 40
// rows must keep it on at least 38; top-p 0.95 and N(0, 2^2) rows are printed (a nucleus of ~72,000 tokens at the
// latter: no list holds it). Host only (the twin), about a second.
EMU_CASE("sampling", one_read_rate) {
    const int v = 128256, rows = 40;
    struct Shape { float p; double sd; int least; } shapes[] = {{0.9f, 4.0, 38}, {0.95f, 4.0, 0}, {0.9f, 2.0, 0}};
    bool ok = true;
    for (const Shape& sh : shapes) {
        Rng rng(101);
        int zero = 0, worst = 0;
        for (int i = 0; i < rows; i++) {
            const std::vector<float> x = rng.normals(v, sh.sd);
            int tok;
            double lp;
            const int reads = g4_host_sample_row(x.data(), v, 1.f, 0, sh.p, 0.5, &tok, &lp, nullptr);
            zero += reads == 0;
            worst = reads > worst ? reads : worst;
        }
        const bool good = zero >= sh.least;
        printf("    top-p %g, N(0, %g^2): pass A kept the list on %d of %d rows (want >= %d); most reads after pass A %d%s\n", sh.p, sh.sd,
               zero, rows, sh.least, worst, good ? "" : "  FAIL");
        ok &= good;
    }
    return ok;
}

// Pass A's compactions that succeed: the benchmark's N(0, 4^2) rows (V = 128,256, top-p 0.9) with a list of 14,336
// (448 a warp, sm_80-sized) fill some segments during pass A; each drops its entries under the group's key and takes
// the group again, and the list stays valid. Kernel tokens and log-probs against the twin at the same list size, and
// the twin's reads after pass A (0: pass A kept the list) on most rows.
EMU_CASE("sampling", pass_a_compactions) {
    const int v = 128256, b = 4, cap = 14336;
    Rng rng(23);
    const std::vector<float> x = rng.normals((size_t) b * v, 4.0);
    std::vector<int> ctr(2 * b), tok(b, -1);
    std::vector<float> lp(b);
    for (int i = 0; i < 2 * b; i++) ctr[i] = 7 + i;
    const int e = g4_sample_ex(G4_F32, P(tok.data()), P(lp.data()), P(x.data()), P(ctr.data()), b, v, 1.f, 0, 0.9f, 9, cap, 0, 0);
    bool ok = e == 0;
    int zero = 0;
    for (int i = 0; i < b; i++) {
        int ttok;
        double tlp;
        const double u = g4_host_philox_uniform(9, ctr[2 * i], ctr[2 * i + 1]);
        const int reads = g4_host_sample_row_cap(&x[(size_t) i * v], v, 1.f, 0, 0.9f, u, &ttok, &tlp, nullptr, cap);
        const bool good = tok[i] == ttok && same_bits(lp[i], (float) tlp);
        zero += reads == 0;
        printf("    row %d: kernel %d %.6f, twin %d %.6f, the twin's reads after pass A %d%s\n", i, tok[i], lp[i], ttok, tlp, reads,
               good ? "" : "  FAIL");
        ok &= good;
    }
    printf("    pass A kept the list on %d of %d rows (want >= 3)%s\n", zero, b, zero >= 3 ? "" : "  FAIL");
    return ok && zero >= 3;
}

// Rows without a softmax (docs/ops.md): every entry NaN, every entry -inf, NaN and -inf mixed, +inf entries (the
// first one wins) among NaNs, +inf at index 0, and +inf in the second tile; greedy, unfiltered, top-k, top-p, both;
// fp32 and bf16. The twin and the contract agree: the first index of the maximum, log-prob NaN.
EMU_CASE("sampling", non_finite_rows) {
    Tally tl;
    const int v = 5000;
    std::vector<std::vector<float>> rows;
    rows.push_back(std::vector<float>(v, NAN));
    rows.push_back(std::vector<float>(v, -INFINITY));
    std::vector<float> r(v);
    for (int j = 0; j < v; j++) r[j] = j % 2 ? NAN : -INFINITY;
    rows.push_back(r);
    for (int j = 0; j < v; j++) r[j] = j % 3 ? NAN : (float) j;
    r[5] = r[9] = INFINITY;
    rows.push_back(r);
    for (int j = 0; j < v; j++) r[j] = (float) (j % 17);
    r[0] = INFINITY;
    rows.push_back(r);
    r[0] = 3;
    r[4500] = r[4700] = INFINITY;
    rows.push_back(r);
    const int b = (int) rows.size();
    std::vector<float> x;
    for (auto& row : rows) x.insert(x.end(), row.begin(), row.end());
    const int want[] = {0, 0, 0, 5, 0, 4500};
    const Spec specs[] = {{0, 0, 1}, {1, 0, 1}, {1, 5, 1}, {0.7f, 0, 0.9f}, {1, 50, 0.5f}};
    bool ok = true;
    for (int bf = 0; bf < 2; bf++)
        for (const Spec& s : specs) {
            std::vector<int> ctr(2 * b, 3), tok(b, -7);
            std::vector<float> lp(b, 0.f);
            std::vector<__nv_bfloat16> xb = to_bf16(x);
            int e = g4_sample(bf ? G4_BF16 : G4_F32, P(tok.data()), P(lp.data()), bf ? P(xb.data()) : P(x.data()), P(ctr.data()),
                              b, v, s.t, s.k, s.p, 11, 0);
            for (int i = 0; i < b; i++) {
                int ttok;
                double tlp;
                g4_host_sample_row(&x[(size_t) i * v], v, s.t, s.k, s.p, 0.5, &ttok, &tlp, nullptr);
                bool good = e == 0 && tok[i] == want[i] && ttok == want[i] && isnan(lp[i]) && isnan(tlp);
                tl.rows++;
                tl.nonfinite_max++;
                tl.bf16 += bf;
                if (!good) {
                    tl.bad++;
                    printf("    %s T=%g k=%d p=%g row %d: kernel %d %g, twin %d %g, want %d NaN  FAIL\n", bf ? "bf16" : "fp32",
                           s.t, s.k, s.p, i, tok[i], lp[i], ttok, tlp, want[i]);
                }
            }
            tl.calls++;
        }
    summary(tl);
    return ok && tl.bad == 0;
}

// Every logit kind under a top-k + top-p spec and an unfiltered one, at a vocabulary of one tile plus one token.
EMU_CASE("sampling", every_kind_both_dtypes) {
    Rng rng(5);
    Tally tl;
    for (int bf = 0; bf < 2; bf++) {
        run_call(rng, tl, 4097, {1, 50, 0.9f}, bf, NKINDS, 0, false);
        run_call(rng, tl, 4097, {0.7f, 0, 1}, bf, NKINDS, 0, false);
    }
    summary(tl);
    return tl.bad == 0;
}

// The launcher's contract for sizes (no device-side checks exist: logits are data, any counter is valid): b <= 0 is a
// no-op, v <= 0 or v > g4_sample_max_vocab is cudaErrorInvalidValue before any launch; nothing is written either way.
EMU_CASE("sampling", bad_sizes_nothing_written) {
    int maxv = 0;
    g4_sample_max_vocab(&maxv);
    std::vector<float> x(8, 1.f);
    std::vector<int> ctr(8, 0), tok(4, -7);
    std::vector<float> lp(4, -7.f);
    struct Bad { int b, v, want; } cases[] = {{0, 8, 0}, {-1, 8, 0}, {1, 0, (int) cudaErrorInvalidValue},
                                               {1, -3, (int) cudaErrorInvalidValue}, {1, maxv + 1, (int) cudaErrorInvalidValue}};
    bool ok = maxv == 1024 * 4096;
    printf("    g4_sample_max_vocab = %d%s\n", maxv, ok ? "" : "  FAIL (want 4194304)");
    for (const Bad& c : cases) {
        int e = g4_sample(G4_F32, P(tok.data()), P(lp.data()), P(x.data()), P(ctr.data()), c.b, c.v, 1.f, 0, 1.f, 1, 0);
        bool untouched = true;
        for (int t : tok) untouched &= t == -7;
        for (float f : lp) untouched &= f == -7.f;
        bool good = e == c.want && untouched;
        printf("    b=%d v=%d: returned %d (want %d), outputs untouched: %s%s\n", c.b, c.v, e, c.want, untouched ? "yes" : "no",
               good ? "" : "  FAIL");
        ok &= good;
    }
    return ok;
}
