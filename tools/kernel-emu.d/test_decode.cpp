// tools/kernel-emu: cuda/decode.cu (g4_decode_attention, g4_decode_attention_workspace) against float64 attention
// through the block table. Paged caches [numBlocks, blockSize, Hkv, D] behind a shuffled block table, contexts of
// uneven lengths in one batch, GQA; the tensor-core path (bf16, head dims 64 and 128) with one split and with several
// (the `sms` argument moves decode_split_plan; the combine kernel runs), and with splits forced by the page cap; the
// generic path (fp32; bf16 head dim 96; a group over 16; a misaligned pointer). Bad index data (context length 0 or past
// maxBlocks * blockSize, a needed table entry outside [0, numBlocks)) sets the device flag and leaves that sequence's
// output as it was, the others right.
//
// Everything the kernel must not read is poisoned: outputs and the split workspace with NaN before each call, the
// cache slots past each context (the tail of its last page, the unused pages) with NaN, the table entries past each
// context with out-of-range ids. A kernel that reads them, or leaves an output unwritten, fails.
// Tolerance per element (docs/ops.md): 2e-6 + slack + 1e-5 |y| + one bf16 ulp for a bf16 output, with the slack of
// rounding P to bf16 (1.01 2^-8 sum_j P_j |v_jx|) on the tensor-core path only.
#include <algorithm>
#include <cstdlib>

#include "emu_test.h"

using namespace emu_test;

namespace {

constexpr int OP = 9;  // any op code: the flag word carries it back

struct Problem {
    std::vector<int> ctx;
    int hq, hkv, d, bs;
    bool bf16;
    int spare_tables = 2;  // table columns past the longest context
    int spare_blocks = 3;  // cache blocks no sequence uses
    bool past_fast_limits = false;  // a tensor-core problem whose plan the fast path cannot launch: the generic path
};

// A paged KV cache behind a shuffled block table, filled for the problem's contexts.
struct Paged {
    int b, max_blocks, num_blocks;
    std::vector<int> table, ctx;
    std::vector<float> q, kc, vc;  // bf16-valued when the problem is bf16; unused slots NaN
    std::vector<int> groups;       // prefix groups, rows (first, count, shared); empty: none
    std::vector<int> shared, lead; // per sequence: keys t < shared[s] through table row lead[s]
};

// Prefix groups: the members' keys below `shared` come through the first member's table row. Each member's own slots
// of those keys (all but the first member's) are poisoned with NaN: a kernel that reads them instead fails.
void apply_groups(const Problem& p, Paged& g, const std::vector<int>& rows) {
    g.groups = rows;
    const size_t row = (size_t) p.hkv * p.d;
    for (size_t r = 0; r + 2 < rows.size(); r += 3) {
        const int first = rows[r], count = rows[r + 1], sh = rows[r + 2];
        if (sh == 0) continue;
        for (int s = first; s < first + count; s++) {
            g.shared[s] = sh;
            g.lead[s] = first;
            if (s == first) continue;
            for (int t = 0; t < sh; t++) {
                const size_t slot = (size_t) g.table[(size_t) s * g.max_blocks + t / p.bs] * p.bs + t % p.bs;
                for (size_t x = 0; x < row; x++) g.kc[slot * row + x] = g.vc[slot * row + x] = NAN;
            }
        }
    }
}

Paged make_paged(const Problem& p, Rng& rng) {
    Paged g;
    g.b = (int) p.ctx.size();
    g.ctx = p.ctx;
    int longest = 1, used = 0;
    for (int c : p.ctx) {
        longest = std::max(longest, c);
        used += (c + p.bs - 1) / p.bs;
    }
    g.max_blocks = (longest + p.bs - 1) / p.bs + p.spare_tables;
    g.num_blocks = used + p.spare_blocks;
    std::vector<int> ids(g.num_blocks);
    for (int i = 0; i < g.num_blocks; i++) ids[i] = i;
    std::shuffle(ids.begin(), ids.end(), rng.g);
    g.table.assign((size_t) g.b * g.max_blocks, 0);
    const size_t row = (size_t) p.hkv * p.d, slots = (size_t) g.num_blocks * p.bs;
    g.kc.assign(slots * row, NAN);
    g.vc.assign(slots * row, NAN);
    int next = 0;
    for (int s = 0; s < g.b; s++) {
        const int nb = (p.ctx[s] + p.bs - 1) / p.bs;
        for (int j = 0; j < g.max_blocks; j++)  // entries past the context: out of range, never to be read
            g.table[(size_t) s * g.max_blocks + j] = j < nb ? ids[next++] : (j % 2 ? -5 : g.num_blocks + 100);
        for (int t = 0; t < p.ctx[s]; t++) {
            const size_t slot = (size_t) g.table[(size_t) s * g.max_blocks + t / p.bs] * p.bs + t % p.bs;
            for (size_t x = 0; x < row; x++) {
                g.kc[slot * row + x] = (float) rng.normal();
                g.vc[slot * row + x] = (float) rng.normal();
            }
        }
    }
    g.q = rng.normals((size_t) g.b * p.hq * p.d);
    g.shared.assign(g.b, 0);
    g.lead.resize(g.b);
    for (int s = 0; s < g.b; s++) g.lead[s] = s;
    if (p.bf16)
        for (auto* v : {&g.q, &g.kc, &g.vc})
            for (float& x : *v) x = bf16_round(x);
    return g;
}

// float64 attention of each sequence's one query over its context through the block table; slack = the tensor-core
// path's extra error from rounding P to bf16.
void reference(const Problem& p, const Paged& g, double scale, std::vector<double>& out, std::vector<double>& slack) {
    const int grp = p.hq / p.hkv, d = p.d;
    out.assign((size_t) g.b * p.hq * d, 0);
    slack = out;
    const double u = ldexp(1.0, -8) * 1.01;
    for (int s = 0; s < g.b; s++) {
        const int c = g.ctx[s];
        if (c < 1 || c > g.max_blocks * p.bs) continue;
        bool bad = false;
        for (int j = 0; j < (c + p.bs - 1) / p.bs; j++) {
            const int id = g.table[(size_t) s * g.max_blocks + j];
            bad |= id < 0 || id >= g.num_blocks;
        }
        if (bad) continue;
        auto at = [&](int t, int h) {
            const size_t tr = (size_t) (t < g.shared[s] ? g.lead[s] : s) * g.max_blocks;
            const size_t slot = (size_t) g.table[tr + t / p.bs] * p.bs + t % p.bs;
            return (slot * p.hkv + h / grp) * d;
        };
        for (int h = 0; h < p.hq; h++) {
            const float* q = &g.q[((size_t) s * p.hq + h) * d];
            std::vector<double> w(c);
            double mx = -INFINITY, l = 0;
            for (int t = 0; t < c; t++) {
                double dot = 0;
                for (int x = 0; x < d; x++) dot += (double) q[x] * g.kc[at(t, h) + x];
                w[t] = dot * scale;
                mx = fmax(mx, w[t]);
            }
            for (double& e : w) { e = exp(e - mx); l += e; }
            double* o = &out[((size_t) s * p.hq + h) * d];
            double* sl = &slack[((size_t) s * p.hq + h) * d];
            for (int t = 0; t < c; t++)
                for (int x = 0; x < d; x++) {
                    const double v = g.vc[at(t, h) + x];
                    o[x] += w[t] / l * v;
                    sl[x] += u * w[t] / l * fabs(v);
                }
        }
    }
}

// One call's result: the output widened, the flag, the launcher's return code.
struct Result {
    std::vector<float> out;
    std::vector<uint16_t> out_bits;  // bf16 outputs: the raw bits (to check untouched rows)
    int flag[4] = {0, 0, 0, 0};
    int rc = 0;
    int splits = 0;
};

const uint16_t POISON_BF16 = 0x7fc1;     // a NaN of bf16 that no kernel computes
const uint32_t POISON_F32 = 0x7fc00001u;

// Calls the launcher with outputs and workspace poisoned. `misalign` offsets q by one element (2 or 4 bytes).
Result call(const Problem& p, const Paged& g, double scale, int sms, bool misalign = false) {
    Result r;
    const size_t nq = (size_t) g.b * p.hq * p.d;
    long long ws_bytes = -1;
    const int ng = (int) g.groups.size() / 3;
    const g4_ptr gp = ng ? P(g.groups.data()) : 0;
    g4_decode_attention_workspace(g.b, p.hq, p.hkv, p.d, g.max_blocks, p.bs, sms, ng, &ws_bytes);
    int plan[2];
    g4_host_decode_plan(g.b, p.hkv, g.max_blocks * p.bs, p.bs, sms, plan);
    r.splits = plan[1];
    std::vector<unsigned char> ws((size_t) ws_bytes, 0xff);  // exact size: AddressSanitizer catches an overrun
    const g4_ptr wsp = ws_bytes > 0 ? P(ws.data()) : 0;
    if (p.bf16) {
        std::vector<__nv_bfloat16> q = to_bf16(g.q), kc = to_bf16(g.kc), vc = to_bf16(g.vc);
        std::vector<__nv_bfloat16> qm;
        if (misalign) { qm.resize(nq + 1); std::copy(q.begin(), q.end(), qm.begin() + 1); }
        std::vector<uint16_t> out(nq, POISON_BF16);
        r.rc = g4_decode_attention(G4_BF16, P(out.data()), misalign ? P(qm.data() + 1) : P(q.data()), P(kc.data()),
                                   P(vc.data()), P(g.table.data()), P(g.ctx.data()), gp, ng, g.b, p.hq, p.hkv, p.d, g.num_blocks,
                                   p.bs, g.max_blocks, (float) scale, sms, wsp, ws_bytes, P(r.flag), OP, 0);
        r.out_bits = out;
        r.out.resize(nq);
        for (size_t i = 0; i < nq; i++) {
            uint32_t w = (uint32_t) out[i] << 16;
            memcpy(&r.out[i], &w, 4);
        }
    } else {
        std::vector<float> qm;
        if (misalign) { qm.resize(nq + 1); std::copy(g.q.begin(), g.q.end(), qm.begin() + 1); }
        float poison;
        memcpy(&poison, &POISON_F32, 4);
        r.out.assign(nq, poison);
        r.rc = g4_decode_attention(G4_F32, P(r.out.data()), misalign ? P(qm.data() + 1) : P(g.q.data()), P(g.kc.data()),
                                   P(g.vc.data()), P(g.table.data()), P(g.ctx.data()), gp, ng, g.b, p.hq, p.hkv, p.d, g.num_blocks,
                                   p.bs, g.max_blocks, (float) scale, sms, wsp, ws_bytes, P(r.flag), OP, 0);
    }
    return r;
}

bool untouched(const Problem& p, const Result& r, size_t i) {
    if (p.bf16) return r.out_bits[i] == POISON_BF16;
    uint32_t w;
    memcpy(&w, &r.out[i], 4);
    return w == POISON_F32;
}

// Checks the rows of the good sequences against the reference (skipping sequence `skip`); prints the worst.
bool check_out(const Problem& p, const Paged& g, const Result& r, const std::vector<double>& want,
               const std::vector<double>& slack, bool tc, int skip = -1) {
    const size_t per = (size_t) p.hq * p.d;
    double worst = 0;
    size_t at = 0;
    const size_t n = (g.b - (skip >= 0)) * per;
    for (int s = 0; s < g.b; s++) {
        if (s == skip) continue;
        for (size_t i = s * per; i < (s + 1) * per; i++) {
            const double tol = 2e-6 + (tc ? slack[i] : 0) + 1e-5 * fabs(want[i]) +
                               (p.bf16 ? ulp_bf16(fmax(fabs(r.out[i]), fabs(want[i]))) : 0);
            const double e = fabs(r.out[i] - want[i]) / tol;
            if (!(e <= worst)) { worst = e; at = i; }
            if (isnan(e)) break;
        }
        if (isnan(worst)) break;
    }
    const bool ok = worst <= 1;
    printf("    out n=%-6zu worst %.3f of tolerance at [%zu, %zu, %zu] (got %.6g, want %.6g)%s\n", n, worst,
           at / per, at % per / p.d, at % p.d, r.out[at], want[at], ok ? "" : "  FAIL");
    return ok;
}

bool tensor_core(const Problem& p) {
    return p.bf16 && (p.d == 64 || p.d == 128) && p.hq / p.hkv <= 16;
}

void describe(const Problem& p, const Paged& g, const char* path) {
    printf("  ctx {");
    for (size_t i = 0; i < p.ctx.size(); i++) printf("%s%d", i ? "," : "", p.ctx[i]);
    printf("} hq %d hkv %d d %d %s, pages of %d (%d blocks, table %d wide), %s path\n", p.hq, p.hkv, p.d,
           p.bf16 ? "bf16" : "fp32", p.bs, g.num_blocks, g.max_blocks, path);
}

// Runs the problem once per sms value; each must match the reference. want_splits[i] (0: any) is the plan expected.
bool run_problem(const Problem& p, uint64_t seed, const std::vector<int>& sms, const std::vector<int>& want_splits = {},
                 bool misalign = false, const std::vector<int>& groups = {}) {
    Rng rng(seed);
    Paged g = make_paged(p, rng);
    if (!groups.empty()) {
        apply_groups(p, g, groups);
        printf("  prefix groups (first, count, shared):");
        for (size_t i = 0; i + 2 < groups.size(); i += 3) printf(" (%d, %d, %d)", groups[i], groups[i + 1], groups[i + 2]);
        printf("\n");
    }
    const double scale = 1.0 / sqrt((double) p.d);
    const bool tc = tensor_core(p) && !misalign && !p.past_fast_limits;
    describe(p, g, tc ? "tensor-core" : misalign ? "generic (q misaligned)" : "generic");
    std::vector<double> want, slack;
    reference(p, g, scale, want, slack);
    bool ok = true;
    std::vector<float> first;
    for (size_t i = 0; i < sms.size(); i++) {
        const long long blocks0 = g4emu::stat_blocks();
        Result r = call(p, g, scale, sms[i], misalign);
        const long long blocks = g4emu::stat_blocks() - blocks0;
        int plan[2];
        g4_host_decode_plan(g.b, p.hkv, g.max_blocks * p.bs, p.bs, sms[i], plan);
        // The path taken, as far as the grids tell: tensor-core (sequence, kv head, split) blocks plus a combine block
        // per (sequence, head) when split; generic blocks of 4 warps, one per (sequence, head).
        // With prefix groups: prefix blocks per (group, kv head) (tensor-core: one, or with fewer such pairs than SMs
        // up to 8, each taking every PS-th tile of the shared keys), a mark block per group (generic).
        const long long rows = (long long) g.b * p.hq, ng = (long long) groups.size() / 3;
        const bool combine = plan[1] > 1;
        const long long pairs = ng * p.hkv;
        const long long pre = ng == 0 || pairs >= sms[i] ? 1 : std::min(8LL, (2LL * sms[i] + pairs - 1) / pairs);
        const long long want_blocks = tc ? (long long) g.b * p.hkv * plan[1] + (combine ? rows : 0) + pairs * pre
                                         : (rows + 3) / 4 + ng;
        if (tc && ng > 0) printf("   %lld prefix block%s per (group, kv head)\n", pre, pre > 1 ? "s" : "");
        if (tc) printf("   sms %d: plan chunk %d, %d split%s, %lld blocks\n", sms[i], plan[0], plan[1], plan[1] > 1 ? "s" : "",
                       blocks);
        else printf("   sms %d: %lld blocks\n", sms[i], blocks);
        if (blocks != want_blocks) {
            printf("    expected %lld blocks on the %s path  FAIL\n", want_blocks, tc ? "tensor-core" : "generic");
            ok = false;
        }
        if (r.rc || r.flag[0]) {
            printf("    g4_decode_attention returned %d, flag %d  FAIL\n", r.rc, r.flag[0]);
            ok = false;
            continue;
        }
        if (tc && i < want_splits.size() && want_splits[i] && plan[1] != want_splits[i]) {
            printf("    expected %d splits  FAIL\n", want_splits[i]);
            ok = false;
        }
        ok &= check_out(p, g, r, want, slack, tc);
        if (i == 0) {
            first = r.out;
        } else {  // information only: splitting reorders fp32 sums, so a rounded output may move by an ulp
            size_t differ = 0;
            double most = 0;
            for (size_t k = 0; k < first.size(); k++)
                if (first[k] != r.out[k]) { differ++; most = fmax(most, fabs(first[k] - r.out[k])); }
            printf("    vs sms %d: %zu of %zu elements differ, by at most %.3g\n", sms[0], differ, first.size(), most);
        }
    }
    return ok;
}

// A bad context length or table entry in sequence `bad`: the flag names it, its rows stay poisoned, the rest is right.
struct Bad {
    const char* what;
    int ctx = -1;                     // >= 0 (or < -1): replaces ctx[bad]; -1: unchanged
    std::vector<std::pair<int, int>> entries;  // (j, id) written into the bad sequence's table row
    int kind, j;                      // expected report (j: the table column, for ATT_TABLE)
};

bool run_bad(const Problem& p, uint64_t seed, int bad, const std::vector<int>& sms) {
    Rng rng(seed);
    const Paged good = make_paged(p, rng);
    const double scale = 1.0 / sqrt((double) p.d);
    const bool tc = tensor_core(p);
    describe(p, good, tc ? "tensor-core" : "generic");
    const int limit = good.max_blocks * p.bs, nb = (p.ctx[bad] + p.bs - 1) / p.bs;
    const std::vector<Bad> cases = {
        {"ctx 0", 0, {}, 4, 0},
        {"ctx -3", -3, {}, 4, 0},
        {"ctx past the table", limit + 1, {}, 4, 0},
        {"entry = numBlocks", -1, {{nb - 1, good.num_blocks}}, 5, nb - 1},
        {"entry < 0", -1, {{1, -1}}, 5, 1},
        {"two bad entries: the first", -1, {{nb - 1, good.num_blocks + 7}, {1, -2}}, 5, 1},
    };
    std::vector<double> want, slack;
    reference(p, good, scale, want, slack);
    bool ok = true;
    for (int s : sms) {
        int plan[2];
        g4_host_decode_plan(good.b, p.hkv, limit, p.bs, s, plan);
        if (tc) printf("   sms %d: plan chunk %d, %d split%s\n", s, plan[0], plan[1], plan[1] > 1 ? "s" : "");
        for (const Bad& c : cases) {
            Paged g = good;
            if (c.ctx != -1) g.ctx[bad] = c.ctx;
            int value = g.ctx[bad];
            for (auto [j, id] : c.entries) g.table[(size_t) bad * g.max_blocks + j] = id;
            if (c.kind == 5) value = g.table[(size_t) bad * g.max_blocks + c.j];
            Result r = call(p, g, scale, s);
            const int want_flag = OP | c.kind << 8 | (c.kind == 5 ? c.j << 12 : 0);
            const int want_limit = c.kind == 4 ? limit : g.num_blocks;
            bool rows_untouched = true;
            const size_t per = (size_t) p.hq * p.d;
            for (size_t i = bad * per; i < (bad + 1) * per; i++) rows_untouched &= untouched(p, r, i);
            const bool good_flag = r.rc == 0 && r.flag[0] == want_flag && r.flag[1] == bad && r.flag[2] == value &&
                                   r.flag[3] == want_limit;
            printf("    %-27s flag op %d kind %d j %d [%d, %d, %d], sequence %d untouched: %s%s\n", c.what,
                   r.flag[0] & 255, (r.flag[0] >> 8) & 15, r.flag[0] >> 12, r.flag[1], r.flag[2], r.flag[3], bad,
                   rows_untouched ? "yes" : "NO", good_flag && rows_untouched ? "" : "  FAIL");
            ok &= good_flag && rows_untouched;
            ok &= check_out(p, g, r, want, slack, tc, bad);
        }
    }
    return ok;
}

}  // namespace

// One split (sms 1: 6 blocks already fill 2 per SM) and several (sms 64): 6 chunks of one tile, most of them past the
// short contexts (empty states merged by the combine kernel).
EMU_CASE("decode", tensor_core_d64_gqa4_pages16) {
    return run_problem({{1, 3, 17, 64, 65, 300}, 4, 1, 64, 16, true}, 11, {1, 64}, {1, 6});
}

EMU_CASE("decode", tensor_core_d128_gqa4_pages5) {
    return run_problem({{300, 1, 65, 17, 3, 64}, 8, 2, 128, 5, true}, 12, {1, 16}, {1, 3});
}

// Longer contexts at an H200's SM count (132): 32 splits of one tile each.
EMU_CASE("decode", tensor_core_d128_long_contexts_132_sms) {
    return run_problem({{2000, 513, 1}, 8, 2, 128, 16, true}, 16, {1, 132}, {1, 32});
}

// Group 16 fills the mma tile's rows; group 1 (MHA) uses one of them.
EMU_CASE("decode", tensor_core_group16_and_mha) {
    bool ok = run_problem({{70, 5}, 16, 1, 64, 16, true}, 13, {1, 8}, {1, 2});
    ok &= run_problem({{129, 2}, 2, 2, 64, 7, true}, 14, {1, 8}, {1, 3});
    return ok;
}

// Pages of one key: a split may prefetch at most DEC_PAGE_CAP page ids, so the plan splits a long context even when the
// SMs are busy (sms 1) - the chunk is capped at 448 keys.
EMU_CASE("decode", tensor_core_page_cap_splits) {
    return run_problem({{1000, 3}, 4, 1, 64, 1, true}, 15, {1}, {3});
}

// A block table 5.4M pages of one key wide: 12,054 splits of 448 keys, more partial states per (sequence, head) than
// the combine kernel holds in 48 KiB of shared memory (its launch failed): the generic path takes it, and the
// workspace asked for is the marks' alone.
EMU_CASE("decode", tensor_core_plan_past_the_combine_goes_generic) {
    Problem p{{100, 3}, 4, 1, 64, 1, true};
    p.spare_tables = 5'400'000;
    p.past_fast_limits = true;
    long long ws = -1;
    g4_decode_attention_workspace(2, 4, 1, 64, 100 + p.spare_tables, 1, 1, 0, &ws);
    int plan[2];
    g4_host_decode_plan(2, 1, 100 + p.spare_tables, 1, 1, plan);
    printf("  plan: %d splits of %d keys; workspace %lld bytes\n", plan[1], plan[0], ws);
    bool ok = plan[1] > 12000 && ws == 0;
    if (!ok) printf("  expected more than 12000 splits and no workspace  FAIL\n");
    return run_problem(p, 17, {1}) && ok;
}

EMU_CASE("decode", generic_fp32_d64_gqa4_pages16) {
    return run_problem({{1, 3, 17, 64, 65, 300}, 4, 1, 64, 16, false}, 21, {1, 64});
}

EMU_CASE("decode", generic_bf16_d96_gqa4_pages5) {
    return run_problem({{300, 1, 65, 17, 3, 64}, 8, 2, 96, 5, true}, 22, {1});
}

// bf16 head dim 64 that the tensor-core path declines: a group of 17, a misaligned q.
EMU_CASE("decode", generic_bf16_group17_and_misaligned) {
    bool ok = run_problem({{40, 1, 9}, 17, 1, 64, 16, true}, 23, {1});
    ok &= run_problem({{65, 3}, 8, 1, 64, 16, true}, 24, {1}, {}, true);  // 4 generic blocks, 2 tensor-core
    return ok;
}

EMU_CASE("decode", bad_index_data_tensor_core) {
    return run_bad({{17, 300, 65, 3}, 4, 1, 64, 16, true}, 31, 2, {1, 64});
}

EMU_CASE("decode", bad_index_data_generic) {
    bool ok = run_bad({{17, 70, 65, 3}, 4, 2, 96, 5, true}, 32, 1, {1});
    ok &= run_bad({{40, 3, 33}, 2, 1, 64, 16, false}, 33, 2, {1});
    return ok;
}

// A block size near 2^31 with one table column and an empty pool (numBlocks 0: no page is valid). The page count of a
// context was (ctx + bs - 1) / bs, which wrapped negative past 2^31: no entry was checked and the kernels read the
// unchecked page (an out-of-bounds read here, a fault on a GPU). Every sequence's entry 0 must be reported, nothing
// read. The caches are one element each (the 1-byte allocation of an empty tensor, rounded up).
template <typename T>
bool huge_block_size(const char* what, int dtype, int d, int bs, int ctx) {
    T* kc = (T*) malloc(sizeof(T));
    T* vc = (T*) malloc(sizeof(T));
    std::vector<T> q(d, T(1.0f)), out(d, T(0.0f));
    int table[1] = {0}, ctxs[1] = {ctx}, flag[4] = {0, 0, 0, 0};
    long long ws_bytes = 0;
    g4_decode_attention_workspace(1, 1, 1, d, 1, bs, 132, 0, &ws_bytes);
    std::vector<unsigned char> ws((size_t) ws_bytes + 1);
    const int rc = g4_decode_attention(dtype, P(out.data()), P(q.data()), P(kc), P(vc), P(table), P(ctxs), 0, 0, 1, 1, 1, d,
                                       /*num_blocks*/ 0, bs, /*max_blocks*/ 1, 1.0f, 132, P(ws.data()), ws_bytes, P(flag), OP, 0);
    free(kc);
    free(vc);
    const int want = OP | 5 << 8;  // ATT_TABLE, column 0
    const bool ok = rc == 0 && flag[0] == want && flag[1] == 0 && flag[2] == 0 && flag[3] == 0;
    printf("    %-18s bs %d ctx %d: rc %d flag kind %d [%d, %d, %d]%s\n", what, bs, ctx, rc, (flag[0] >> 8) & 15, flag[1], flag[2],
           flag[3], ok ? "" : "  FAIL");
    return ok;
}

EMU_CASE("decode", block_size_near_2p31_checks_the_table) {
    bool ok = huge_block_size<float>("generic fp32", G4_F32, 1, 0x7fffffff, 2);
    ok &= huge_block_size<float>("generic fp32", G4_F32, 1, 0x7fffffff - 1024, 0x7fffffff - 1024);
    ok &= huge_block_size<__nv_bfloat16>("tensor core bf16", G4_BF16, 64, 0x7fffffff, 2);
    ok &= huge_block_size<__nv_bfloat16>("tensor core bf16", G4_BF16, 64, 0x7fffffff - 1024, 0x7fffffff - 1024);
    return ok;
}

// Head dims that are not a multiple of 32: the lanes past d still take part in every shuffle of the value loop (a
// full-mask shuffle inside a loop only some lanes run is undefined on a GPU, and the emulator reports it).
EMU_CASE("decode", generic_head_dims_below_and_between_warps) {
    bool ok = run_problem({{1, 40, 9}, 4, 2, 8, 16, false}, 25, {1});
    ok &= run_problem({{33, 2}, 2, 1, 20, 5, true}, 26, {1});
    ok &= run_problem({{70}, 2, 2, 40, 16, false}, 27, {1});
    return ok;
}

// ---- shared prefixes (prefix groups) ---------------------------------------------------------------------------------

// Groups of several sizes: shared counts on and off page boundaries (20 of pages of 16), a whole context shared
// (sequence 3: shared = ctx, no keys of its own), a group of one, an empty row and a row sharing nothing (both no
// effect), and sequences in no group; one split and several (the prefix's slot merged with the splits').
EMU_CASE("decode", prefix_groups_tensor_core_d128) {
    return run_problem({{40, 37, 100, 16, 64, 300, 17, 5}, 8, 2, 128, 16, true}, 41, {1, 64}, {}, false,
                       {0, 3, 20, /**/ 3, 3, 16, /**/ 6, 1, 17, /**/ 0, 0, 0, /**/ 4, 2, 0});
}

// 17 members at GQA 4: one pass of 16 members (64 rows) and one of a single member; head dim 64.
EMU_CASE("decode", prefix_groups_two_passes_d64) {
    std::vector<int> ctx;
    for (int i = 0; i < 19; i++) ctx.push_back(70 + 3 * i);
    return run_problem({ctx, 8, 2, 64, 16, true}, 42, {1, 132}, {}, false, {1, 17, 64});
}

// A group of 16 query heads per kv head: 4 members a pass, 9 members in 3 passes; pages of 5 (shared off the pages).
EMU_CASE("decode", prefix_groups_gqa16_pages5) {
    return run_problem({{90, 91, 92, 93, 94, 95, 96, 97, 98, 13}, 16, 1, 128, 5, true}, 43, {1}, {}, false,
                       {0, 9, 87});
}

// Long shared prefixes (13 and 7 tiles) with few groups: at 132 SMs each (group, kv head) gets 8 prefix blocks, each
// taking every 8th tile (one or two each, some none), whose states the decode blocks (one split) or the combine
// (several) merge; at 1 SM one block takes them all.
EMU_CASE("decode", prefix_groups_split_over_shared_keys) {
    bool ok = run_problem({{900, 870, 845, 833, 1000}, 8, 2, 128, 16, true}, 48, {1, 132}, {}, false, {0, 4, 832});
    ok &= run_problem({{500, 420, 469}, 16, 1, 64, 5, true}, 49, {1, 132}, {}, false, {0, 3, 410});
    // one split (10 sequences x 2 kv heads fill 8 SMs twice) but one group: the decode blocks merge 8 prefix states
    ok &= run_problem({{260, 231, 250, 240, 210, 229, 90, 70, 300, 5}, 8, 2, 128, 16, true}, 50, {8}, {1}, false, {0, 6, 208});
    return ok;
}

// The generic path (fp32; bf16 head dim 96) reads the shared keys through the first member's row, per key.
EMU_CASE("decode", prefix_groups_generic) {
    bool ok = run_problem({{40, 37, 100, 16, 64}, 4, 2, 64, 16, false}, 44, {1}, {}, false, {0, 3, 20, 3, 2, 16});
    ok &= run_problem({{40, 37, 100}, 8, 2, 96, 5, true}, 45, {1}, {}, false, {0, 3, 33});
    return ok;
}

namespace {

// A bad prefix group row: the flag names it (one of `indexes`), the listed sequences stay poisoned, the rest is right.
struct BadGroup {
    const char* what;
    std::vector<int> rows;
    int kind, extra;                 // expected op word: OP | kind << 8 | extra << 12
    std::vector<int> indexes;        // the reported index: any of these (two groups holding one sequence: either)
    int value, limit;
    std::vector<int> untouched;      // sequences whose outputs must not be written
    std::vector<int> ctx_change = {};    // {sequence, context length}: a member's own bad length
    std::vector<int> entry_change = {};  // {sequence, column, id}: a bad table entry
};

bool run_bad_groups(const Problem& p, uint64_t seed, const std::vector<int>& sms) {
    Rng rng(seed);
    Paged base = make_paged(p, rng);
    const double scale = 1.0 / sqrt((double) p.d);
    const bool tc = tensor_core(p);
    describe(p, base, tc ? "tensor-core" : "generic");
    const int limit = base.max_blocks * p.bs, B = base.b;
    // ctx {17, 300, 65, 40, 33}: sequence 0's 17 keys cap what its groups may share
    const std::vector<BadGroup> cases = {
        {"count < 0 (after a good row)", {0, 2, 16, 2, -1, 16}, 6, 1, {1}, -1, 0, {}},
        {"first = B", {B, 1, 16}, 6, 0, {0}, B, B, {}},
        {"first + count > B", {3, 3, 16}, 6, 1, {0}, 3, B - 3, {3, 4}},
        {"shared past the table", {1, 2, limit + 1}, 6, 2, {0}, limit + 1, limit, {1, 2}},
        {"shared above member 0's context", {0, 3, 20}, 6, 2 | 1 << 2, {0}, 20, 17, {0, 1, 2}},
        {"two groups, one sequence", {0, 3, 16, 2, 2, 16}, 6, 3, {0, 1}, 2, 0, {2}},
        // a member whose own context length is bad: the row's check (run first) names it, as the CPU's does
        {"member 1's context length 0", {0, 2, 16}, 6, 2 | 2 << 2, {0}, 16, 0, {0, 1}, {1, 0}},
        // the first member's entry below shared: ATT_TABLE for that sequence and column; the whole group unwritten
        {"first's entry below shared", {1, 3, 32}, 5, 1, {1}, -7, 0, {1, 2, 3}, {}, {1, 1, -7}},
    };
    bool ok = true;
    for (int s : sms) {
        for (const BadGroup& c : cases) {
            Paged g = base;
            g.groups = c.rows;
            if (!c.ctx_change.empty()) g.ctx[c.ctx_change[0]] = c.ctx_change[1];
            if (!c.entry_change.empty()) g.table[(size_t) c.entry_change[0] * g.max_blocks + c.entry_change[1]] = c.entry_change[2];
            const int want_limit = c.kind == 5 ? g.num_blocks : c.limit;
            // the reference without groups: the members of every row are skipped below
            std::vector<double> want, slack;
            reference(p, base, scale, want, slack);
            Result r = call(p, g, scale, s);
            const int want_word = OP | c.kind << 8 | c.extra << 12;
            bool idx = false;
            for (int i : c.indexes) idx |= r.flag[1] == i;
            const bool good_flag = r.rc == 0 && r.flag[0] == want_word && idx && r.flag[2] == c.value && r.flag[3] == want_limit;
            const size_t per = (size_t) p.hq * p.d;
            bool rows_untouched = true;
            for (int b : c.untouched)
                for (size_t i = b * per; i < (b + 1) * per; i++) rows_untouched &= untouched(p, r, i);
            printf("   sms %-3d %-32s flag kind %d extra %d [%d, %d, %d], members untouched: %s%s\n", s, c.what,
                   (r.flag[0] >> 8) & 15, r.flag[0] >> 12, r.flag[1], r.flag[2], r.flag[3], rows_untouched ? "yes" : "NO",
                   good_flag && rows_untouched ? "" : "  FAIL");
            ok &= good_flag && rows_untouched;
            // every sequence in no row is right
            for (int b = 0; b < B; b++) {
                bool skip = false;
                for (int u : c.untouched) skip |= u == b;
                for (size_t i = 0; i + 2 < c.rows.size(); i += 3)
                    skip |= b >= c.rows[i] && b < c.rows[i] + c.rows[i + 1];
                if (skip) continue;
                for (size_t i = b * per; i < (b + 1) * per; i++) {
                    const double tol = 2e-6 + (tc ? slack[i] : 0) + 1e-5 * fabs(want[i]) +
                                       (p.bf16 ? ulp_bf16(fmax(fabs(r.out[i]), fabs(want[i]))) : 0);
                    if (!(fabs(r.out[i] - want[i]) <= tol)) {
                        printf("    sequence %d element %zu: got %.6g, want %.6g  FAIL\n", b, i % per, r.out[i], want[i]);
                        ok = false;
                        break;
                    }
                }
            }
        }
    }
    return ok;
}

}  // namespace

EMU_CASE("decode", prefix_groups_bad_rows_tensor_core) {
    return run_bad_groups({{17, 300, 65, 40, 33}, 4, 1, 64, 16, true}, 46, {1, 64});
}

EMU_CASE("decode", prefix_groups_bad_rows_generic) {
    return run_bad_groups({{17, 300, 65, 40, 33}, 4, 2, 96, 5, false}, 47, {1});
}

namespace {

// Two sequences (contexts ctx0 and 40), Hkv 1, identity block table; K[sequence 0, key 5][element 0] = bad (and every
// query's element 0 set to q0 when non-zero, so that an infinite key gives an infinite score). Backend.decodeAttention's
// contract (the CPU's float64 softmax): a NaN score, or an infinite one, makes every output of that sequence's heads
// NaN, and the other sequence's stay finite. Returns whether both held.
bool non_finite_key(bool bf16, int d, int ctx0, int sms, float bad, float q0) {
    const int hq = 4, hkv = 1, bs = 16, b = 2;
    std::vector<int> ctx{ctx0, 40};
    const int max_blocks = (std::max(ctx0, 40) + bs - 1) / bs, num_blocks = b * max_blocks;
    std::vector<int> table(b * max_blocks);
    for (int i = 0; i < b * max_blocks; i++) table[i] = i;
    Rng rng(71);
    const size_t row = (size_t) hkv * d, slots = (size_t) num_blocks * bs, nq = (size_t) b * hq * d;
    std::vector<float> kc = rng.normals(slots * row), vc = rng.normals(slots * row), q = rng.normals(nq);
    for (auto* a : {&q, &kc, &vc})
        for (float& x : *a) x = bf16_round(x);
    if (q0 != 0)
        for (int h = 0; h < b * hq; h++) q[(size_t) h * d] = q0;
    kc[(size_t) 5 * row] = bad;  // sequence 0's page 0, key 5, kv head 0, element 0
    long long ws_bytes = 0;
    g4_decode_attention_workspace(b, hq, hkv, d, max_blocks, bs, sms, 0, &ws_bytes);
    int plan[2];
    g4_host_decode_plan(b, hkv, max_blocks * bs, bs, sms, plan);
    std::vector<unsigned char> ws((size_t) ws_bytes + 16, 0);
    int flag[4] = {0, 0, 0, 0}, rc;
    std::vector<float> out;
    if (bf16) {
        auto qb = to_bf16(q), kb = to_bf16(kc), vb = to_bf16(vc);
        std::vector<__nv_bfloat16> ob(nq);
        rc = g4_decode_attention(G4_BF16, P(ob.data()), P(qb.data()), P(kb.data()), P(vb.data()), P(table.data()), P(ctx.data()), 0, 0, b,
                                 hq, hkv, d, num_blocks, bs, max_blocks, 0.125f, sms, ws_bytes ? P(ws.data()) : 0, ws_bytes, P(flag), OP, 0);
        out = widen(ob);
    } else {
        out.assign(nq, 0.f);
        rc = g4_decode_attention(G4_F32, P(out.data()), P(q.data()), P(kc.data()), P(vc.data()), P(table.data()), P(ctx.data()), 0, 0, b,
                                 hq, hkv, d, num_blocks, bs, max_blocks, 0.125f, sms, ws_bytes ? P(ws.data()) : 0, ws_bytes, P(flag), OP, 0);
    }
    size_t nan0 = 0, finite1 = 0;
    for (size_t i = 0; i < nq / 2; i++) nan0 += std::isnan(out[i]);
    for (size_t i = nq / 2; i < nq; i++) finite1 += std::isfinite(out[i]);
    const bool ok = rc == 0 && flag[0] == 0 && nan0 == nq / 2 && finite1 == nq / 2;
    printf("    %s d %d ctx %d (%d split%s) K = %g%s: sequence 0 NaN %zu of %zu, sequence 1 finite %zu of %zu%s\n", bf16 ? "bf16" : "fp32",
           d, ctx0, plan[1], plan[1] == 1 ? "" : "s", bad, q0 != 0 ? ", q[.][0] = 1" : "", nan0, nq / 2, finite1, nq / 2, ok ? "" : "  FAIL");
    return ok;
}

}  // namespace

// A NaN or infinite key reaches the output as NaN on every path (the CPU's result; the sampler's non-finite rule and
// the trainer's guard see a diverged model by it): the tensor-core kernel's merge of its four warps' states and the
// combine of the splits dropped a state whose l was NaN as if it were empty (l > 0 false), giving finite rows without
// those keys.
EMU_CASE("decode", non_finite_keys_give_nan_rows) {
    bool ok = true;
    for (float bad : {NAN, INFINITY}) {
        const float q0 = std::isinf(bad) ? 1.f : 0.f;
        ok &= non_finite_key(true, 64, 64, 1, bad, q0);    // tensor cores, one split: the warps' merge
        ok &= non_finite_key(true, 128, 256, 64, bad, q0);  // several splits: the combine kernel
        ok &= non_finite_key(false, 64, 64, 1, bad, q0);    // the generic path
    }
    return ok;
}
