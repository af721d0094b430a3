// tools/kernel-emu: cuda/attention.cu (g4_attention, g4_attention_backward) against a float64 reference, on the
// tensor-core path (bf16, head dims 64 and 128: plan, fwd, dsum, dK/dV, dQ, the fast mode's atomics and convert) and
// the generic path (fp32, head dim 96), packed sequences of odd lengths (1, 3, 33, 70, 130 and an empty one), GQA.
// Tolerances are docs/ops.md's "CUDA attention" rule per element: atol + slack + rtol |y| and one bf16 ulp, with the
// slack of rounding P and dS to bf16 (2^-8 times the sum of the magnitudes of the terms) on the tensor-core path.
#include "emu_test.h"

using namespace emu_test;

namespace {

struct Problem {
    std::vector<int> lens;
    int hq, hkv, d;
    bool bf16;
    int n() const { int s = 0; for (int l : lens) s += l; return s; }
    std::vector<int> cu() const {
        std::vector<int> c{0};
        for (int l : lens) c.push_back(c.back() + l);
        return c;
    }
};

// Host arrays of one dtype holding bf16- or fp32-valued data; widened view for the reference.
struct Buf {
    bool bf16;
    std::vector<__nv_bfloat16> b;
    std::vector<float> f;
    Buf(bool is_bf16, size_t n, float fill) : bf16(is_bf16) {
        if (bf16) b.assign(n, __float2bfloat16_rn(fill)); else f.assign(n, fill);
    }
    Buf(bool is_bf16, const std::vector<float>& x) : bf16(is_bf16) {
        if (bf16) b = to_bf16(x); else f = x;
    }
    g4_ptr ptr() { return bf16 ? P(b.data()) : P(f.data()); }
    std::vector<float> values() const { return bf16 ? widen(b) : f; }
    size_t size() const { return bf16 ? b.size() : f.size(); }
};

// Per element: |got - want| <= atol + slack + rtol |want| (+ one bf16 ulp when the output is bf16).
bool check(const char* what, const std::vector<float>& got, const std::vector<double>& want,
           const std::vector<double>& slack, double atol, double rtol, bool bf16) {
    double worst = 0;
    size_t at = 0;
    for (size_t i = 0; i < got.size(); i++) {
        double tol = atol + slack[i] + rtol * fabs(want[i]) + (bf16 ? ulp_bf16(fmax(fabs(got[i]), fabs(want[i]))) : 0);
        double e = fabs(got[i] - want[i]) / tol;
        if (!(e <= worst)) { worst = e; at = i; }
        if (isnan(e)) break;
    }
    bool ok = worst <= 1;
    if (!got.empty())
        printf("    %-4s n=%-7zu worst %.3f of tolerance at %zu (got %.6g, want %.6g)%s\n", what, got.size(), worst, at,
               got[at], want[at], ok ? "" : "  FAIL");
    return ok;
}

struct Ref {
    std::vector<double> out, lse, dq, dk, dv, s_out, s_dq, s_dk, s_dv;
};

// float64 attention and its analytic gradient; D_i from the given out (the kernel's own, as the backward reads it).
Ref reference(const Problem& p, const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
              const std::vector<float>* dout, const std::vector<float>* out_used, double scale) {
    const int n = p.n(), hq = p.hq, hkv = p.hkv, d = p.d, grp = hq / hkv;
    Ref r;
    r.out.assign((size_t) n * hq * d, 0);
    r.s_out = r.out;
    r.lse.assign((size_t) n * hq, 0);
    r.dq.assign((size_t) n * hq * d, 0);
    r.s_dq = r.dq;
    r.dk.assign((size_t) n * hkv * d, 0);
    r.dv = r.dk;
    r.s_dk = r.dk;
    r.s_dv = r.dk;
    std::vector<int> cu = p.cu();
    const double u = ldexp(1.0, -8) * 1.01;
    for (size_t b = 0; b < p.lens.size(); b++)
        for (int h = 0; h < hq; h++) {
            const int g = h / grp;
            for (int i = cu[b]; i < cu[b + 1]; i++) {
                const float* qi = &q[((size_t) i * hq + h) * d];
                std::vector<double> s(i - cu[b] + 1);
                double mx = -INFINITY;
                for (int j = cu[b]; j <= i; j++) {
                    const float* kj = &k[((size_t) j * hkv + g) * d];
                    double acc = 0;
                    for (int x = 0; x < d; x++) acc += (double) qi[x] * kj[x];
                    s[j - cu[b]] = acc * scale;
                    mx = fmax(mx, s[j - cu[b]]);
                }
                double l = 0;
                for (double& e : s) { e = exp(e - mx); l += e; }
                r.lse[(size_t) i * hq + h] = mx + log(l);
                for (double& e : s) e /= l;  // P
                double* oi = &r.out[((size_t) i * hq + h) * d];
                double* si = &r.s_out[((size_t) i * hq + h) * d];
                for (int j = cu[b]; j <= i; j++) {
                    const float* vj = &v[((size_t) j * hkv + g) * d];
                    for (int x = 0; x < d; x++) {
                        oi[x] += s[j - cu[b]] * vj[x];
                        si[x] += u * s[j - cu[b]] * fabs(vj[x]);
                    }
                }
                if (dout == nullptr) continue;
                const float* doi = &(*dout)[((size_t) i * hq + h) * d];
                const float* ou = &(*out_used)[((size_t) i * hq + h) * d];
                double D = 0;
                for (int x = 0; x < d; x++) D += (double) doi[x] * ou[x];
                for (int j = cu[b]; j <= i; j++) {
                    const float* kj = &k[((size_t) j * hkv + g) * d];
                    const float* vj = &v[((size_t) j * hkv + g) * d];
                    double dp = 0;
                    for (int x = 0; x < d; x++) dp += (double) doi[x] * vj[x];
                    const double pij = s[j - cu[b]], ds = pij * (dp - D);
                    double* dvj = &r.dv[((size_t) j * hkv + g) * d];
                    double* sdvj = &r.s_dv[((size_t) j * hkv + g) * d];
                    double* dkj = &r.dk[((size_t) j * hkv + g) * d];
                    double* sdkj = &r.s_dk[((size_t) j * hkv + g) * d];
                    double* dqi = &r.dq[((size_t) i * hq + h) * d];
                    double* sdqi = &r.s_dq[((size_t) i * hq + h) * d];
                    for (int x = 0; x < d; x++) {
                        dvj[x] += pij * doi[x];
                        sdvj[x] += u * pij * fabs(doi[x]);
                        dkj[x] += scale * ds * qi[x];
                        sdkj[x] += u * scale * fabs(ds) * fabs(qi[x]);
                        dqi[x] += scale * ds * kj[x];
                        sdqi[x] += u * scale * fabs(ds) * fabs(kj[x]);
                    }
                }
            }
        }
    return r;
}

// fps (optional): the forward's and the deterministic backward's fingerprints. kernels: g4_attention_backward's kernel
// choice bits (2: the 64-row kernels everywhere; 4: the wide kernels at head dim 64 too).
// fwd_mode: g4_attention's mode bits (1: the sm_90a wgmma forward; the emulated device is compute capability 9.0).
bool run_problem(const Problem& p, uint64_t seed, bool backward, bool deterministic_too, bool fast_too,
                 uint64_t* fps = nullptr, int kernels = 0, int fwd_mode = 0) {
    Rng rng(seed);
    const int n = p.n(), b = (int) p.lens.size();
    const double scale = 1.0 / sqrt((double) p.d);
    const bool tc = p.bf16 && (p.d == 64 || p.d == 128);  // the tensor-core path takes these
    printf("  lens {");
    for (size_t i = 0; i < p.lens.size(); i++) printf("%s%d", i ? "," : "", p.lens[i]);
    printf("} hq %d hkv %d d %d %s (%s path)\n", p.hq, p.hkv, p.d, p.bf16 ? "bf16" : "fp32", tc ? "tensor-core" : "generic");
    Buf q(p.bf16, rng.normals((size_t) n * p.hq * p.d)), k(p.bf16, rng.normals((size_t) n * p.hkv * p.d)),
            v(p.bf16, rng.normals((size_t) n * p.hkv * p.d));
    Buf out(p.bf16, (size_t) n * p.hq * p.d, NAN);
    std::vector<float> lse((size_t) n * p.hq, NAN);
    std::vector<int> cu = p.cu();
    int flag[4] = {0, 0, 0, 0};
    long long ws_bytes = 0;
    g4_attention_workspace(n, b, p.hq, p.d, 0, 0, &ws_bytes);
    std::vector<unsigned char> ws((size_t) ws_bytes + 1);
    int e = g4_attention(p.bf16 ? G4_BF16 : G4_F32, out.ptr(), P(lse.data()), q.ptr(), k.ptr(), v.ptr(), P(cu.data()), n, b,
                         p.hq, p.hkv, p.d, (float) scale, fwd_mode, P(ws.data()), ws_bytes, P(flag), 7, 0);
    if (e || flag[0]) { printf("    g4_attention returned %d, flag %d\n  FAIL\n", e, flag[0]); return false; }
    Fingerprint ffp;  // the forward's bits: a rewritten kernel that keeps each row's arithmetic must keep them
    if (p.bf16) ffp.add(out.b); else ffp.add(out.f);
    ffp.add(lse);
    printf("    forward fingerprint %016llx\n", (unsigned long long) ffp.h);
    if (fps) fps[0] = ffp.h;
    const std::vector<float> qv = q.values(), kv = k.values(), vv = v.values(), ov = out.values();
    const std::vector<float> dov = Buf(p.bf16, rng.normals((size_t) n * p.hq * p.d)).values();
    Ref r = reference(p, qv, kv, vv, backward ? &dov : nullptr, &ov, scale);
    std::vector<double> none(r.out.size(), 0), none_l(r.lse.size(), 0);
    bool ok = check("out", ov, r.out, tc ? r.s_out : none, 2e-6, 1e-5, p.bf16);
    ok &= check("lse", lse, r.lse, none_l, 2e-6, 1e-5, false);
    if (!backward) return ok;
    Buf dout(p.bf16, dov);
    // modes: 1 deterministic (the dQ pass), 9 dQ in fixed point (deterministic: run again with the blocks reversed and
    // shuffled, the same bits), 0 fast (fp32 atomics)
    for (int mode : {1, 9, 0}) {
        const bool det = mode != 0, fixed = mode == 9;
        if (mode != 1 && !(fast_too && tc)) continue;  // fixed and fast: the tensor-core path's atomics modes
        if (mode == 1 && !deterministic_too && tc) continue;
        std::vector<std::vector<float>> first;
        const int reps = det && tc ? (fixed ? 3 : 2) : 1;
        for (int rep = 0; rep < reps; rep++) {
            Buf dq(p.bf16, (size_t) n * p.hq * p.d, NAN), dk(p.bf16, (size_t) n * p.hkv * p.d, NAN),
                    dv(p.bf16, (size_t) n * p.hkv * p.d, NAN);
            const int bits = mode | kernels;
            g4_attention_workspace(n, b, p.hq, p.d, 1, bits, &ws_bytes);
            std::vector<unsigned char> wsb((size_t) ws_bytes + 1);
            if (fixed && rep > 0) g4emu::set_block_order(rep == 1 ? "reverse" : "4242");
            e = g4_attention_backward(p.bf16 ? G4_BF16 : G4_F32, dq.ptr(), dk.ptr(), dv.ptr(), dout.ptr(), q.ptr(), k.ptr(),
                                      v.ptr(), out.ptr(), P(lse.data()), P(cu.data()), n, b, p.hq, p.hkv, p.d, (float) scale,
                                      bits, P(wsb.data()), ws_bytes, P(flag), 7, 0);
            if (fixed && rep > 0) g4emu::set_block_order(getenv("G4EMU_BLOCKS"));
            if (e || flag[0]) { printf("    g4_attention_backward returned %d, flag %d\n", e, flag[0]); return false; }
            const std::vector<float> g1 = dq.values(), g2 = dk.values(), g3 = dv.values();
            if (rep >= 1) {
                bool same = first[0] == g1 && first[1] == g2 && first[2] == g3;
                printf("    %s backward bitwise repeatable%s: %s\n", fixed ? "fixed-point dQ" : "deterministic",
                       fixed ? (rep == 1 ? " (blocks in reverse order)" : " (blocks shuffled)") : "", same ? "yes" : "NO  FAIL");
                ok &= same;
                continue;
            }
            if (det && tc) first = {g1, g2, g3};
            if (det && tc) {  // (fixed point: its own bits, the same whatever order the dQ sums run in)
                Fingerprint bfp;
                bfp.add(dq.b);
                bfp.add(dk.b);
                bfp.add(dv.b);
                printf("    %s backward fingerprint %016llx\n", fixed ? "fixed-point dQ" : "deterministic", (unsigned long long) bfp.h);
                if (fps && !fixed) fps[1] = bfp.h;
            }
            printf("   %s backward:\n", tc ? (fixed ? " fixed-point dQ" : det ? " deterministic" : " fast (atomics)") : "");
            std::vector<double> zq(r.dq.size(), 0), zk(r.dk.size(), 0);
            // fp32 tolerance 2e-5, 2e-4 for the gradients (docs/ops.md); the fast mode's atomics reorder fp32 sums
            ok &= check("dq", g1, r.dq, tc ? r.s_dq : zq, 2e-5, 2e-4, p.bf16);
            ok &= check("dk", g2, r.dk, tc ? r.s_dk : zk, 2e-5, 2e-4, p.bf16);
            ok &= check("dv", g3, r.dv, tc ? r.s_dv : zk, 2e-5, 2e-4, p.bf16);
        }
    }
    return ok;
}

}  // namespace

EMU_CASE("attention", fwd_bwd_tensor_core_d64) {
    return run_problem({{33, 1, 70, 0, 3}, 4, 1, 64, true}, 1, true, true, true);
}

EMU_CASE("attention", fwd_bwd_tensor_core_d128) {
    return run_problem({{130, 3}, 4, 2, 128, true}, 2, true, true, true);
}

// Lengths around the forward's 128-row and the key tiles' 64-key boundaries (a row block whose second half is partly
// or wholly past the sequence's end), several sequences packed, GQA 4/2 at both fast head dims.
EMU_CASE("attention", fwd_bwd_tensor_core_tile_edges) {
    bool ok = run_problem({{1, 64, 65, 127, 128, 129, 200, 257}, 4, 2, 128, true}, 8, true, true, true);
    ok &= run_problem({{63, 191, 2, 320}, 4, 1, 64, true}, 9, true, true, false);
    return ok;
}

// The sm_90a wgmma kernels (the emulated device is compute capability 9.0; wgmma.cuh's swizzled tiles read through
// matrix descriptors): the forward (g4_attention mode 1; fwd_wgmma_kernel: 2 warpgroups x 64 rows, 128-key tiles),
// the dK/dV kernel (g4_attention_backward mode bit 16; dkdv_wgmma_kernel: 2 warpgroups x 64 keys, 64-query steps) and
// the pass mode's dQ kernel (dq_wgmma_kernel), in every dQ mode (the pass, fixed point with the blocks reversed and
// shuffled: the same bits, fp32 atomics), at both fast head dims, lengths around the 64-row warpgroups and 128-row
// tiles (a warpgroup wholly past the end, a diagonal tile partly past it), several sequences packed, GQA 4/2 and 4/1.
// Each of the three kernels must have run (launch counts), not a fallback.
EMU_CASE("attention", fwd_bwd_wgmma_sm90a) {
    const long long f0 = g4emu::launches("fwd_wgmma_kernel"), k0 = g4emu::launches("dkdv_wgmma_kernel"),
                    q0 = g4emu::launches("dq_wgmma_kernel");
    g4emu::set_proxy_check(false);  // (wgmma_small checks the fences: here a snapshot a thread a fence doubles the time)
    bool ok = run_problem({{1, 64, 65, 127, 128, 129, 200, 257}, 4, 2, 128, true}, 8, true, true, true, nullptr, 16, 1);
    ok &= run_problem({{63, 191, 2, 320}, 4, 1, 64, true}, 9, true, true, true, nullptr, 16, 1);
    ok &= run_problem({{130, 3}, 4, 2, 128, true}, 2, false, false, false, nullptr, 0, 1);
    g4emu::set_proxy_check(true);
    const long long f = g4emu::launches("fwd_wgmma_kernel") - f0, k = g4emu::launches("dkdv_wgmma_kernel") - k0,
                    q = g4emu::launches("dq_wgmma_kernel") - q0;
    printf("  launches: fwd_wgmma_kernel %lld, dkdv_wgmma_kernel %lld, dq_wgmma_kernel %lld\n", f, k, q);
    // 3 forwards; backward: 2 problems x (pass 2 + fixed 3 + fast 1) dK/dV launches, 2 x 2 of dQ (the pass mode's)
    ok &= f == 3 && k == 12 && q == 4;
    return ok;
}

// The wgmma kernels at small sizes, for the race check (KernelEmulatorTest, --race) and the fence.proxy.async check:
// both head dims, every dQ mode, a second warpgroup partly and wholly past the end, and sequences of three and four
// key tiles of 128 (the forward's K copies run two tiles ahead, into the buffer of the tile the products have just
// left: both buffers so recycled), which are five and seven of the dQ kernel's 64-key tiles in the pass mode (its
// copies go two tiles ahead into three buffers: each recycled).
EMU_CASE("attention", wgmma_small) {
    bool ok = run_problem({{65, 130}, 2, 1, 128, true}, 31, true, true, true, nullptr, 16, 1);
    ok &= run_problem({{70}, 2, 2, 64, true}, 32, true, true, true, nullptr, 16, 1);
    const long long f0 = g4emu::launches("fwd_wgmma_kernel"), q0 = g4emu::launches("dq_wgmma_kernel");
    ok &= run_problem({{260, 400}, 1, 1, 64, true}, 33, true, true, false, nullptr, 16, 1);  // the pass mode alone
    ok &= g4emu::launches("fwd_wgmma_kernel") == f0 + 1 && g4emu::launches("dq_wgmma_kernel") == q0 + 2;
    return ok;
}

// The sm_90a forward with the producer warpgroup (g4_attention mode 3; fwd_tma_kernel: TMA loads, mbarriers,
// setmaxnreg): fwd_wgmma_kernel's bits (forward fingerprints), with the loads landing late (at the wait that needs
// them: a read before it sees the old bytes) and early (at the issue: a stage overwritten while a wgmma may still read
// it shows), without and with the warpgroups' ping-pong (mode 7), each also persistent (11, 15). Each problem runs
// nine times.
bool tma_same_bits(std::initializer_list<Problem> ps) {
    const long long t0 = g4emu::launches("fwd_tma_kernel");
    bool ok = true;
    int runs = 0;
    for (const Problem& p : ps) {
        uint64_t wg[2] = {};
        ok &= run_problem(p, 41, false, false, false, wg, 0, 1);
        // without and with the ping-pong; then both persistent on a device of 3 (late) and 2 (early) SMs, so that each
        // block goes through several work items (the stages' phases and Q's buffer carried from one to the next)
        for (int mode : {3, 7, 11, 15}) {
            uint64_t late[2] = {}, early[2] = {};
            if (mode & 8) g4emu::set_sm_count(3);
            ok &= run_problem(p, 41, false, false, false, late, 0, mode);
            g4emu::set_tma_landing(true);
            if (mode & 8) g4emu::set_sm_count(2);
            ok &= run_problem(p, 41, false, false, false, early, 0, mode);
            g4emu::set_tma_landing(getenv("G4EMU_TMA") != nullptr && !strcmp(getenv("G4EMU_TMA"), "early"));
            g4emu::set_sm_count(0);
            runs += p.n() >= 128 ? 2 : 0;  // (fewer tokens than a box: fwd_wgmma_kernel runs)
            const bool same = wg[0] == late[0] && wg[0] == early[0];
            printf("  fwd_tma_kernel%s%s's bits (loads landing late, early) = fwd_wgmma_kernel's: %s\n",
                   mode & 4 ? " (ping-pong)" : "", mode & 8 ? " (persistent)" : "", same ? "yes" : "NO  FAIL");
            ok &= same;
        }
    }
    const long long t = g4emu::launches("fwd_tma_kernel") - t0;
    printf("  launches: fwd_tma_kernel %lld (of %d)\n", t, runs);
    return ok && t == runs;
}

// fwd_bwd_wgmma_sm90a's forward problems: both fast head dims, a warpgroup wholly or partly past a sequence's end
EMU_CASE("attention", fwd_tma_sm90a) {
    return tma_same_bits({{{1, 64, 65, 127, 128, 129, 200, 257}, 4, 2, 128, true}, {{63, 191, 2, 320}, 4, 1, 64, true}});
}

// For the race check too (KernelEmulatorTest, --race): sequences of one to four key tiles (both stages of K and of V
// recycled; the last tile past the tensor's end: TMA's zeros), and a problem shorter than a box (the wgmma kernel).
EMU_CASE("attention", fwd_tma_small) {
    return tma_same_bits({{{65, 130, 400, 500}, 2, 1, 128, true}, {{3}, 2, 2, 64, true}});
}

// A sequence's output does not depend on the next one's values: fwd_tma_kernel's boxes read whole 128-key tiles, past a
// sequence's end into the next sequence, whose infinite V would meet P's zeros (0 x inf = NaN) unless the kernel zeroes
// those rows. Sequence 0 (100 tokens) before one whose V is all +inf: its rows the same bits in modes 1, 3 and 15,
// finite.
EMU_CASE("attention", fwd_tma_next_sequence_infinite) {
    const Problem p{{100, 60}, 2, 1, 64, true};
    const int n = p.n(), d = p.d;
    Rng rng(43);
    Buf q(true, rng.normals((size_t) n * p.hq * d)), k(true, rng.normals((size_t) n * p.hkv * d));
    std::vector<float> vv = rng.normals((size_t) n * p.hkv * d);
    for (size_t i = (size_t) 100 * p.hkv * d; i < vv.size(); i++) vv[i] = INFINITY;
    Buf v(true, vv);
    std::vector<int> cu = p.cu();
    long long ws_bytes = 0;
    g4_attention_workspace(n, 2, p.hq, d, 0, 0, &ws_bytes);
    std::vector<std::vector<float>> outs;
    for (int mode : {1, 3, 15}) {  // (15: persistent with the ping-pong, one SM: one block takes every item)
        g4emu::set_sm_count(mode & 8 ? 1 : 0);
        Buf out(true, (size_t) n * p.hq * d, NAN);
        std::vector<float> lse((size_t) n * p.hq, NAN);
        std::vector<unsigned char> ws((size_t) ws_bytes + 1);
        int flag[4] = {0, 0, 0, 0};
        const int e = g4_attention(G4_BF16, out.ptr(), P(lse.data()), q.ptr(), k.ptr(), v.ptr(), P(cu.data()), n, 2, p.hq, p.hkv,
                                   d, (float) (1 / sqrt((double) d)), mode, P(ws.data()), ws_bytes, P(flag), 7, 0);
        if (e || flag[0]) {
            printf("  mode %d: g4_attention returned %d, flag %d  FAIL\n", mode, e, flag[0]);
            g4emu::set_sm_count(0);
            return false;
        }
        std::vector<float> o = out.values();
        o.resize((size_t) 100 * p.hq * d);  // sequence 0's rows
        outs.push_back(o);
    }
    g4emu::set_sm_count(0);
    size_t finite = 0;
    for (size_t m = 1; m < outs.size(); m++)
        for (float x : outs[m]) finite += std::isfinite(x);
    const bool same = outs[0] == outs[1] && outs[0] == outs[2], ok = same && finite == 2 * outs[1].size();
    printf("  sequence 0: modes 3 and 15 = mode 1 bit for bit: %s; finite %zu of %zu%s\n", same ? "yes" : "no", finite,
           2 * outs[1].size(), ok ? "" : "  FAIL");
    return ok;
}

// A device whose blocks may opt into 99 KiB of shared memory (sm_86, sm_89; G4EMU_SMEM_OPTIN): the backward at head
// dim 128 runs the 64-row kernels instead of the wide ones, with the same bits.
EMU_CASE("attention", fwd_bwd_tensor_core_d128_small_shared_memory_device) {
    const Problem p{{130, 64, 3}, 4, 2, 128, true};
    uint64_t wide[2] = {0, 0}, narrow[2] = {1, 1};
    const long long b0 = g4emu::stat_blocks();
    bool ok = run_problem(p, 10, true, true, true, wide);
    const long long b1 = g4emu::stat_blocks();
    setenv("G4EMU_SMEM_OPTIN", "101376", 1);
    ok &= run_problem(p, 10, true, true, true, narrow);
    unsetenv("G4EMU_SMEM_OPTIN");
    const long long b2 = g4emu::stat_blocks();
    // the 64-row kernels launch other grids (more, smaller blocks): the path did change
    const bool other = b2 - b1 != b1 - b0, same = wide[0] == narrow[0] && wide[1] == narrow[1];
    printf("    blocks launched: %lld (227 KiB) vs %lld (99 KiB)%s\n", b1 - b0, b2 - b1, other ? "" : "  FAIL (same path)");
    printf("    99 KiB device: forward and deterministic backward bit-identical to the 227 KiB device's: %s\n",
           same ? "yes" : "NO  FAIL");
    return ok && same && other;
}

// The default kernels (wide at head dim 128, 64-row at 64) against the other family asked for by the mode bits (the
// 64-row kernels at 128, the wide ones at 64), on the same device: the same bits in deterministic mode, other grids;
// the fast mode's atomics checked against float64 on both paths.
EMU_CASE("attention", fwd_bwd_tensor_core_wide_and_narrow_same_bits) {
    bool ok = true;
    for (const Problem& p : {Problem{{130, 64, 3}, 4, 2, 128, true}, Problem{{200, 1, 64, 129}, 4, 1, 64, true}}) {
        uint64_t def[2] = {0, 0}, other_fp[2] = {1, 1};
        const long long b0 = g4emu::stat_blocks();
        ok &= run_problem(p, 12, true, true, true, def);
        const long long b1 = g4emu::stat_blocks();
        ok &= run_problem(p, 12, true, true, true, other_fp, p.d == 128 ? 2 : 4);
        const long long b2 = g4emu::stat_blocks();
        const bool other = b2 - b1 != b1 - b0, same = def[0] == other_fp[0] && def[1] == other_fp[1];
        printf("    d %d: blocks launched %lld (default) vs %lld (%s)%s; deterministic backward bit-identical: %s\n", p.d,
               b1 - b0, b2 - b1, p.d == 128 ? "64-row" : "wide", other ? "" : "  FAIL (same path)", same ? "yes" : "NO  FAIL");
        ok &= same && other;
    }
    {   // the wide kernels at head dim 64 fit a 99 KiB device (sm_86, sm_89): 97 and 80 KiB a block
        const Problem p{{200, 1, 64, 129}, 4, 1, 64, true};
        uint64_t big[2] = {0, 0}, small[2] = {1, 1};
        const long long b0 = g4emu::stat_blocks();
        ok &= run_problem(p, 13, true, true, false, big, 4);
        const long long b1 = g4emu::stat_blocks();
        setenv("G4EMU_SMEM_OPTIN", "101376", 1);
        ok &= run_problem(p, 13, true, true, false, small, 4);
        unsetenv("G4EMU_SMEM_OPTIN");
        const long long b2 = g4emu::stat_blocks();
        const bool same_path = b2 - b1 == b1 - b0, same = big[0] == small[0] && big[1] == small[1];
        printf("    d 64 wide on a 99 KiB device: blocks %lld vs %lld (227 KiB)%s; bit-identical: %s\n", b2 - b1, b1 - b0,
               same_path ? "" : "  FAIL (another path)", same ? "yes" : "NO  FAIL");
        ok &= same && same_path;
    }
    return ok;
}

// A bf16 problem on the tensor-core path for the fixed-point dQ cases: its inputs, the forward's out and lse, and a
// backward in any mode with a given lse and K.
struct Small {
    int n, hq, hkv, d;
    float scale;
    std::vector<int> cu;
    Buf q, k, v, dout, out;
    std::vector<float> lse;
    int flag[4] = {0, 0, 0, 0};

    Small(std::vector<int> cu_, int hq_, int hkv_, int d_, float scale_, const std::vector<float>& qf,
          const std::vector<float>& kf, const std::vector<float>& vf, const std::vector<float>& of)
        : n(cu_.back()), hq(hq_), hkv(hkv_), d(d_), scale(scale_), cu(std::move(cu_)), q(true, qf), k(true, kf),
          v(true, vf), dout(true, of), out(true, (size_t) n * hq_ * d_, 0.f), lse((size_t) n * hq_) {}

    // A problem of normal inputs (seed) over the given sequences.
    static Small random(std::vector<int> cu, int hq, int hkv, int d, float scale, uint64_t seed) {
        Rng rng(seed);
        const size_t n = cu.back();
        std::vector<float> qf = rng.normals(n * hq * d), kf = rng.normals(n * hkv * d), vf = rng.normals(n * hkv * d);
        return Small(std::move(cu), hq, hkv, d, scale, qf, kf, vf, rng.normals(n * hq * d));
    }

    int b() const { return (int) cu.size() - 1; }

    bool forward() {
        long long wb = 0;
        g4_attention_workspace(n, b(), hq, d, 0, 0, &wb);
        std::vector<unsigned char> ws((size_t) wb + 1);
        return g4_attention(G4_BF16, out.ptr(), P(lse.data()), q.ptr(), k.ptr(), v.ptr(), P(cu.data()), n, b(), hq, hkv, d,
                            scale, 0, P(ws.data()), wb, P(flag), 7, 0) == 0 && flag[0] == 0;
    }

    struct Grads {
        int rc;
        std::vector<float> dq, dk;
    };

    // The backward in mode bits `mode` with lse `l` and keys `kk` (the problem's own when null); flag holds its report.
    Grads backward(int mode, const std::vector<float>& l, Buf* kk = nullptr) {
        Buf dq(true, (size_t) n * hq * d, NAN), dk(true, (size_t) n * hkv * d, NAN), dv(true, (size_t) n * hkv * d, NAN);
        long long wb = 0;
        g4_attention_workspace(n, b(), hq, d, 1, mode, &wb);
        std::vector<unsigned char> w((size_t) wb + 1);
        flag[0] = flag[1] = flag[2] = flag[3] = 0;
        const int e = g4_attention_backward(G4_BF16, dq.ptr(), dk.ptr(), dv.ptr(), dout.ptr(), q.ptr(), (kk ? kk : &k)->ptr(),
                                            v.ptr(), out.ptr(), P(l.data()), P(cu.data()), n, b(), hq, hkv, d, scale, mode,
                                            P(w.data()), wb, P(flag), 7, 0);
        return Grads{e, dq.values(), dk.values()};
    }

    int kind() const { return (flag[0] >> 8) & 0xF; }

    // dq element `at` of the PASS and the fixed-point modes (lse `l`): equal, neither reporting anything.
    bool fixed_matches_pass(const std::vector<float>& l, size_t at) {
        bool ok = true;
        float got[2];
        for (int i = 0; i < 2; i++) {
            const Grads g = backward(i ? 9 : 1, l);
            got[i] = g.dq[at];
            printf("    mode %d: rc %d, flag kind %d, dq element %zu = %g\n", i ? 9 : 1, g.rc, kind(), at, got[i]);
            ok &= g.rc == 0 && flag[0] == 0;
        }
        return ok && got[1] == got[0];
    }
};

// Fixed-point dQ outside its bound's premise: an lse far below the forward's (P sums to e^50, not 1) makes the
// contributions exceed the bound: reported through the device flag (kind 7), not wrapped silently. A NaN in one kv
// head's K: the rows whose contributions it reaches get a NaN dq (here every row of that kv head's query heads: the
// masked zeros of dS times the NaN key are NaN too, as in the PASS mode), the other kv head's rows finite and as in
// deterministic mode (the bounds are maxima over finite values).
EMU_CASE("attention", fixed_point_dq_bound_violations_reported) {
    Small s = Small::random({0, 70}, 4, 2, 64, 0.125f, 21);
    bool ok = s.forward();
    std::vector<float> low = s.lse;
    for (float& x : low) x -= 50.f;
    ok &= s.backward(9, low).rc == 0;
    const bool reported = (s.flag[0] & 0xFF) == 7 && s.kind() == 7;
    printf("    lse - 50: flag op %d kind %d element %d: %s\n", s.flag[0] & 0xFF, s.kind(), s.flag[1],
           reported ? "reported" : "NOT reported  FAIL");
    ok &= reported;
    Buf knan = s.k;
    knan.b[(size_t) 5 * s.hkv * s.d + 0 * s.d + 3] = __float2bfloat16_rn(NAN);  // token 5, kv head 0
    const Small::Grads g1 = s.backward(9, s.lse, &knan);
    ok &= g1.rc == 0 && s.flag[0] == 0;
    const Small::Grads g2 = s.backward(1, s.lse, &knan);
    ok &= g2.rc == 0 && s.flag[0] == 0;
    const int group = s.hq / s.hkv;
    size_t nan0 = 0, bad1 = 0;
    for (int t = 0; t < s.n; t++)
        for (int h = 0; h < s.hq; h++)
            for (int x = 0; x < s.d; x++) {
                const size_t i = ((size_t) t * s.hq + h) * s.d + x;
                if (h / group == 0) nan0 += std::isnan(g1.dq[i]);
                else bad1 += !(g1.dq[i] == g1.dq[i]) || fabs(g1.dq[i] - g2.dq[i]) > 1e-2 * (1 + fabs(g2.dq[i]));
            }
    const size_t all0 = (size_t) s.n * group * s.d;
    printf("    NaN in kv head 0's K: head 0's dq NaN %zu of %zu, head 1's dq off deterministic mode's: %zu%s\n", nan0, all0,
           bad1, nan0 == all0 && bad1 == 0 ? "" : "  FAIL");
    return ok && nan0 == all0 && bad1 == 0;
}

// Fixed-point dQ at a tight bound (found by review): the computed bound (sqrtf(2) rounds down) lies just under the true
// dq element, 2; the scale's margin keeps it from being reported, and dq is 2, in the default and the 64-row kernels.
// Two tokens, one sequence; Q = 0 so row 1's P = (1/2, 1/2); K = +-e0, V = +-(e0 + e1), dO_1 = e0 + e1.
EMU_CASE("attention", fixed_dq_tight_bound_not_reported) {
    const int n = 2, d = 64;
    std::vector<float> qf((size_t) n * d, 0.f), kf((size_t) n * d, 0.f), vf((size_t) n * d, 0.f), of((size_t) n * d, 0.f);
    kf[0] = 1.f, kf[d] = -1.f;
    vf[0] = vf[1] = 1.f, vf[d] = vf[d + 1] = -1.f;
    of[d] = of[d + 1] = 1.f;  // dO of row 1; row 0's dO = 0
    Small s({0, n}, 1, 1, d, 1.f, qf, kf, vf, of);
    bool ok = s.forward();
    for (int mode : {1, 9, 9 | 2}) {
        const Small::Grads g = s.backward(mode, s.lse);
        printf("    mode %d: rc %d, flag kind %d, dq[1][0] = %g\n", mode, g.rc, s.kind(), g.dq[d]);
        ok &= g.rc == 0 && s.flag[0] == 0 && g.dq[d] == 2.f;
    }
    return ok;
}

// Fixed-point dQ with non-finite contributions (found by review): lse 200 below the forward's makes P overflow to inf;
// the rows whose contributions are not finite get a NaN dq, as the PASS mode's dq is not finite there.
EMU_CASE("attention", fixed_dq_nonfinite_contributions_give_nan_rows) {
    Small s = Small::random({0, 70}, 4, 2, 64, 0.125f, 21);
    bool ok = s.forward();
    std::vector<float> low = s.lse;
    for (float& x : low) x -= 200.f;
    for (int mode : {1, 9}) {
        const Small::Grads g = s.backward(mode, low);
        size_t fin = 0, finK = 0;
        for (float x : g.dq) fin += std::isfinite(x);
        for (float x : g.dk) finK += std::isfinite(x);
        printf("    mode %d: rc %d flag kind %d; finite dq %zu of %zu, finite dk %zu of %zu\n", mode, g.rc, s.kind(), fin,
               g.dq.size(), finK, g.dk.size());
        ok &= g.rc == 0;
        if (mode == 9) ok &= fin == 0;
    }
    return ok;
}

// Fixed-point dQ's precision is per row (found by review: with one binary point a head, a second sequence whose dO is
// 2^-60 of the first's got dq = 0): every element within 5% of the PASS mode's.
EMU_CASE("attention", fixed_dq_small_rows_keep_their_precision) {
    Small s = Small::random({0, 64, 128}, 2, 1, 64, 0.125f, 5);
    for (size_t i = (size_t) 64 * s.hq * s.d; i < s.dout.b.size(); i++)
        s.dout.b[i] = __float2bfloat16_rn(ldexpf(__bfloat162float(s.dout.b[i]), -60));
    bool ok = s.forward();
    const Small::Grads pass = s.backward(1, s.lse);
    ok &= pass.rc == 0 && s.flag[0] == 0;
    const Small::Grads fixed = s.backward(9, s.lse);
    ok &= fixed.rc == 0 && s.flag[0] == 0;
    size_t far = 0, from = (size_t) 64 * s.hq * s.d;
    for (size_t j = from; j < pass.dq.size(); j++) far += fabs(pass.dq[j] - fixed.dq[j]) > 0.05 * fabs(pass.dq[j]) + 1e-40;
    printf("    sequence 2 (dO x 2^-60): off the PASS mode's by > 5%%: %zu of %zu (e.g. %g vs %g)\n", far, pass.dq.size() - from,
           pass.dq[(size_t) 100 * s.hq * s.d + 3], fixed.dq[(size_t) 100 * s.hq * s.d + 3]);
    return ok && far == 0;
}

// Fixed-point dQ's margin (found by review: with a factor 2, one row's lse lowered by ln 6.5, so that its P sums to
// 6.5, made six contributions under the report's threshold sum past 2^63 and wrap): the bound leaves a factor 8, so
// such a row's dq equals the PASS mode's; rows whose P sum to more than about 8 may still wrap (docs/kernels.md).
EMU_CASE("attention", fixed_dq_margin_holds_a_row_whose_p_sums_to_6_5) {
    const int n = 384, d = 64;
    std::vector<float> qf((size_t) n * d, 0.f), kf((size_t) n * d, 0.f), vf((size_t) n * d, 0.f), of((size_t) n * d, 0.f);
    for (int j = 0; j < n; j++) kf[(size_t) j * d] = vf[(size_t) j * d] = j % 2 ? -1.f : 1.f;
    of[(size_t) (n - 1) * d] = 1.5f;
    Small s({0, n}, 1, 1, d, 1.f, qf, kf, vf, of);
    bool ok = s.forward();
    std::vector<float> l = s.lse;
    l[n - 1] -= logf(6.5f);
    return ok && s.fixed_matches_pass(l, (size_t) (n - 1) * d);
}

// Fixed-point dQ's norms in float64 (found by review: as fp32 sums of squares ||dO_t||^2 underflowed to 0 for |dO| ~
// 2^-80, the row's bound was 0 and its scale 2^60 rounded the true dq, 2^-79, to 0). The tight-bound problem with dO
// scaled by 2^-80 and 2^-120: dq exact, as the PASS mode's.
EMU_CASE("attention", fixed_dq_tiny_do_norm_does_not_underflow) {
    const int n = 2, d = 64;
    bool ok = true;
    for (int p : {-80, -120}) {  // -120: a binary point past 2^127, applied as two factors
        std::vector<float> qf((size_t) n * d, 0.f), kf((size_t) n * d, 0.f), vf((size_t) n * d, 0.f), of((size_t) n * d, 0.f);
        kf[0] = 1.f, kf[d] = -1.f;
        vf[0] = vf[1] = 1.f, vf[d] = vf[d + 1] = -1.f;
        of[d] = of[d + 1] = ldexpf(1.f, p);
        Small s({0, n}, 1, 1, d, 1.f, qf, kf, vf, of);
        ok &= s.forward();
        float got[3];
        int i = 0;
        for (int mode : {1, 9, 9 | 2}) {
            const Small::Grads g = s.backward(mode, s.lse);
            got[i++] = g.dq[d];
            printf("    dO 2^%d, mode %d: rc %d, flag kind %d, dq[1][0] = %g (2^%d = %g)\n", p, mode, g.rc, s.kind(), g.dq[d],
                   p + 1, ldexpf(1.f, p + 1));
            ok &= g.rc == 0 && s.flag[0] == 0;
        }
        ok &= got[0] == ldexpf(1.f, p + 1) && got[1] == got[0] && got[2] == got[0];
    }
    return ok;
}

// The same with V tiny (found by review: ||V_j||^2 underflowed in fp32, max ||V|| was 0, the row's bound |D| alone,
// and the forward's own lse was reported as not the forward's). dO_1 = 2^20 (e0 + e1), V_0 = a (e0 + e1), V_1 = -a e0
// - a (1 - 2^-8) e1, a = 2^-80: no report, dq as the PASS mode's.
EMU_CASE("attention", fixed_dq_tiny_v_norm_does_not_underflow) {
    const int n = 2, d = 64;
    const float a = ldexpf(1.f, -80);
    std::vector<float> qf((size_t) n * d, 0.f), kf((size_t) n * d, 0.f), vf((size_t) n * d, 0.f), of((size_t) n * d, 0.f);
    kf[0] = 1.f, kf[d] = -1.f;
    vf[0] = vf[1] = a, vf[d] = -a, vf[d + 1] = -a * (1.f - 1.f / 256);
    of[d] = of[d + 1] = ldexpf(1.f, 20);
    Small s({0, n}, 1, 1, d, 1.f, qf, kf, vf, of);
    return s.forward() && s.fixed_matches_pass(s.lse, (size_t) d);
}


// A finite V row whose ||V||^2 overflows fp32 (|V| = 2^70; found by review: it was dropped from max ||V|| as if it
// were non-finite, and the forward's lse reported): in float64 it counts, no report, dq as the PASS mode's. Q = 0,
// three keys, row 2 sees all.
EMU_CASE("attention", fixed_dq_large_v_norm_counts_in_the_bound) {
    const int n = 3, d = 64;
    std::vector<float> qf((size_t) n * d, 0.f), kf((size_t) n * d, 0.f), vf((size_t) n * d, 0.f), of((size_t) n * d, 0.f);
    kf[0] = 1.f, kf[d] = -1.f;
    vf[0] = ldexpf(1.f, 70), vf[d] = -ldexpf(1.f, 70), vf[2 * d + 1] = 1.f;
    of[2 * d] = ldexpf(1.f, -70);
    Small s({0, n}, 1, 1, d, 1.f, qf, kf, vf, of);
    return s.forward() && s.fixed_matches_pass(s.lse, (size_t) 2 * d);
}

EMU_CASE("attention", fwd_bwd_generic_fp32) {
    return run_problem({{33, 0, 5}, 4, 2, 64, false}, 3, true, true, false);
}

EMU_CASE("attention", fwd_bwd_generic_bf16_d96) {
    return run_problem({{17, 40}, 2, 1, 96, true}, 4, true, true, false);
}

EMU_CASE("attention", bad_cu_seqlens_reported_nothing_written) {
    const int n = 10, hq = 2, hkv = 1, d = 64;
    std::vector<__nv_bfloat16> q((size_t) n * hq * d, __float2bfloat16_rn(0.5f)), k((size_t) n * hkv * d), v(k.size());
    std::vector<__nv_bfloat16> out(q.size(), __float2bfloat16_rn(-7.f));
    std::vector<float> lse((size_t) n * hq, -7.f);
    bool ok = true;
    struct Bad { std::vector<int> cu; int kind, index, value; } cases[] = {
        {{1, 4, 10}, 1, 0, 1},   // cu[0] != 0
        {{0, 4, 9}, 2, 2, 9},    // cu[b] != n
        {{0, 6, 4, 10}, 3, 2, 4} // decreasing
    };
    for (auto& c : cases) {
        int flag[4] = {0, 0, 0, 0};
        const int b = (int) c.cu.size() - 1;
        long long ws_bytes;
        g4_attention_workspace(n, b, hq, d, 0, 0, &ws_bytes);
        std::vector<unsigned char> ws((size_t) ws_bytes);
        int e = g4_attention(G4_BF16, P(out.data()), P(lse.data()), P(q.data()), P(k.data()), P(v.data()), P(c.cu.data()), n, b,
                             hq, hkv, d, 0.125f, 0, P(ws.data()), ws_bytes, P(flag), 7, 0);
        bool untouched = true;
        for (auto x : out) untouched &= __bfloat162float(x) == -7.f;
        for (float x : lse) untouched &= x == -7.f;
        bool good = e == 0 && flag[0] == (7 | c.kind << 8) && flag[1] == c.index && flag[2] == c.value && untouched;
        printf("    cu {%d..%d}: flag op %d kind %d index %d value %d, outputs untouched: %s%s\n", c.cu[0], c.cu[b],
               flag[0] & 255, flag[0] >> 8, flag[1], flag[2], untouched ? "yes" : "no", good ? "" : "  FAIL");
        ok &= good;
    }
    return ok;
}

// Head dims that are not a multiple of 32 (8, 20, 40): every lane takes part in every shuffle of the generic kernels'
// value loops, also the lanes past d.
EMU_CASE("attention", fwd_bwd_generic_head_dims_below_and_between_warps) {
    bool ok = run_problem({{5, 37}, 2, 1, 8, false}, 5, true, true, false);
    ok &= run_problem({{33, 1}, 4, 2, 20, true}, 6, true, true, false);
    ok &= run_problem({{40}, 2, 2, 40, false}, 7, true, true, false);
    return ok;
}

// One short sequence (9 tokens: one partial tile), six seeds: the AttentionConformanceTest shape whose CUDA-vs-CPU check
// exposed the backends' different forward outputs (now shared by the test).
EMU_CASE("attention", fwd_bwd_tensor_core_short_sequence_seeds) {
    bool ok = true;
    for (int s = 0; s < 6; s++) ok &= run_problem({{9}, 2, 1, 64, true}, 100 + s, true, true, false);
    return ok;
}
