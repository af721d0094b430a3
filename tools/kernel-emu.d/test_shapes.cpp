// tools/kernel-emu: the hot kernels at the real inner sizes of llama-3.1-8b (vocabulary 128,256, hidden 4096, 32/8
// heads of 128, contexts of 1024), a few rows each, for the memory profile (`tools/kernel-emu --profile shapes`): how
// many times a kernel reads its input (the table's "reread": read sectors over distinct sectors) and how its
// requests coalesce at the sizes the benchmark times, where the other families' cases use small, odd sizes. Family
// "shapes" runs only when named. Each case checks its outputs only loosely (finite, in range, the sampled token inside
// the filter): correctness is the other families' job.
#include <algorithm>

#include "emu_test.h"

using namespace emu_test;

namespace {

constexpr int V = 128256, H = 4096, HQ = 32, HKV = 8, D = 128;

// Samples B rows of N(0, 4^2) logits (the benchmark's distribution: a peaked softmax whose top-p 0.9 nucleus is a
// small part of the vocabulary) and checks each token is a valid index with a finite log-prob.
bool sample_rows(float t, int k, float p) {
    const int b = 2;
    Rng rng(7);
    std::vector<float> x = rng.normals((size_t) b * V, 4.0);
    std::vector<int> tok(b, -1), ctr(2 * b);
    std::vector<float> lp(b, NAN);
    for (int r = 0; r < b; r++) ctr[2 * r] = r, ctr[2 * r + 1] = 3;
    int e = g4_sample(G4_F32, P(tok.data()), P(lp.data()), P(x.data()), P(ctr.data()), b, V, t, k, p, 11, 0);
    bool ok = e == 0;
    for (int r = 0; r < b; r++) {
        ok &= tok[r] >= 0 && tok[r] < V && std::isfinite(lp[r]) && lp[r] <= 0;
        printf("    row %d: token %d, logprob %.4f\n", r, tok[r], lp[r]);
    }
    printf("    B %d, V %d, T %g, top-k %d, top-p %g: rc %d  %s\n", b, V, t, k, p, e, ok ? "ok" : "WRONG");
    return ok;
}

}  // namespace

EMU_CASE("shapes", shapes_sample_plain) { return sample_rows(1.f, 0, 1.f); }
EMU_CASE("shapes", shapes_sample_top_p) { return sample_rows(1.f, 0, 0.9f); }
EMU_CASE("shapes", shapes_sample_top_k_top_p) { return sample_rows(1.f, 50, 0.9f); }

// One 64-block sequence of 1024 keys in a paged bf16 cache (pages of 16 in a scattered order), 32 query heads over 8
// KV heads: sms 1 gives one split (as a batch of hundreds of sequences does), sms 132 the split-KV plan of a lone one.
EMU_CASE("shapes", shapes_decode_ctx1024) {
    const int bs = 16, ctx = 1024, nb = ctx / bs;
    Rng rng(3);
    std::vector<__nv_bfloat16> q = to_bf16(rng.normals((size_t) HQ * D)), kc = to_bf16(rng.normals((size_t) nb * bs * HKV * D)),
                               vc = to_bf16(rng.normals((size_t) nb * bs * HKV * D));
    std::vector<int> table(nb), len{ctx};
    for (int i = 0; i < nb; i++) table[i] = (i * 37 + 5) % nb;  // 37 is prime to 64: a permutation
    bool ok = true;
    for (int sms : {1, 132}) {
        long long ws_bytes = 0;
        g4_decode_attention_workspace(1, HQ, HKV, D, nb, bs, sms, 0, &ws_bytes);
        std::vector<unsigned char> ws((size_t) std::max(ws_bytes, 1ll));
        std::vector<__nv_bfloat16> out((size_t) HQ * D);
        int flag[4] = {0, 0, 0, 0};
        int e = g4_decode_attention(G4_BF16, P(out.data()), P(q.data()), P(kc.data()), P(vc.data()), P(table.data()),
                                    P(len.data()), 0, 0, 1, HQ, HKV, D, nb, bs, nb, 1.f / sqrtf((float) D), sms,
                                    ws_bytes ? P(ws.data()) : 0, ws_bytes, P(flag), 1, 0);
        bool finite = true;
        for (auto& o : out) finite &= std::isfinite(__bfloat162float(o));
        printf("    sms %d: rc %d, flag %d, outputs finite: %s\n", sms, e, flag[0], finite ? "yes" : "NO");
        ok &= e == 0 && flag[0] == 0 && finite;
    }
    return ok;
}

// One vocabulary chunk of the fused LM head (CudaBackend's 4096 columns) for 16 rows: the running log-sum-exp, then
// the chunk's dlogits in place.
EMU_CASE("shapes", shapes_lmhead_chunk) {
    const int rows = 16, cols = 4096;
    Rng rng(5);
    std::vector<float> z = rng.normals((size_t) rows * cols, 2.0), m(rows), zt(rows), logp(rows, NAN);
    std::vector<double> s(rows), lse(rows, NAN), g(rows, 1.0);  // g: float64, as the GRPO terms hand it over
    std::vector<int> tgt(rows);
    for (int r = 0; r < rows; r++) tgt[r] = (r * 1000003 + 5) % cols;
    int flag[4] = {0, 0, 0, 0};
    int e = g4_lmhead_lse(P(z.data()), rows, cols, 0, cols, P(tgt.data()), 0, P(m.data()), P(s.data()), P(zt.data()), 1, 1,
                          P(lse.data()), 0, P(logp.data()), P(flag), 1, 0);
    std::vector<double> lse_f(lse);
    e |= g4_lmhead_dlogits(P(z.data()), rows, cols, 0, cols, P(tgt.data()), P(lse.data()), P(g.data()), 0, 0, 0);
    bool ok = e == 0 && flag[0] == 0;
    for (int r = 0; r < rows; r++) ok &= std::isfinite(lse[r]) && logp[r] <= 0;
    printf("    rows %d, cols %d: rc %d, flag %d, lse[0] %.4f  %s\n", rows, cols, e, flag[0], lse[0], ok ? "ok" : "WRONG");
    return ok;
}

// RMSNorm forward and backward over 16 rows of the hidden size, bf16 activations, fp32 weight.
EMU_CASE("shapes", shapes_rmsnorm_4096) {
    const int n = 16;
    Rng rng(9);
    std::vector<__nv_bfloat16> x = to_bf16(rng.normals((size_t) n * H)), dy = to_bf16(rng.normals((size_t) n * H)),
                               out((size_t) n * H), dx((size_t) n * H);
    std::vector<float> w = rng.normals(H), rstd(n), dw(H, 0.f);
    int e = g4_rmsnorm(G4_BF16, G4_F32, P(out.data()), P(rstd.data()), P(x.data()), P(w.data()), n, H, 1e-5f, 0);
    long long ws_bytes = 0;
    g4_rmsnorm_backward_workspace(n, H, &ws_bytes);
    std::vector<unsigned char> ws((size_t) std::max(ws_bytes, 1ll));
    e |= g4_rmsnorm_backward(G4_BF16, G4_F32, P(dx.data()), P(dw.data()), P(dy.data()), P(x.data()), P(w.data()),
                             P(rstd.data()), n, H, ws_bytes ? P(ws.data()) : 0, ws_bytes, 0);
    bool ok = e == 0;
    for (int i = 0; i < n; i++) ok &= std::isfinite(rstd[i]) && rstd[i] > 0;
    printf("    rows %d, hidden %d: rc %d  %s\n", n, H, e, ok ? "ok" : "WRONG");
    return ok;
}

// ---- the memory-bound rows of the benchmark (docs/benchmarks.md), at sizes that are multiples of the real ones' -----

namespace {
constexpr int NE = 16 * H;  // 16 rows of the hidden size
constexpr int F = 14336;

bool rc_ok(const char* what, int e) {
    printf("    %-40s rc %d  %s\n", what, e, e == 0 ? "ok" : "WRONG");
    return e == 0;
}
}  // namespace

EMU_CASE("shapes", shapes_cast) {
    Rng rng(1);
    std::vector<float> f = rng.normals(NE), back(NE);
    std::vector<__nv_bfloat16> b(NE);
    bool ok = rc_ok("cast fp32 -> bf16", g4_cast(G4_BF16, P(b.data()), G4_F32, P(f.data()), NE, 0));
    return ok & rc_ok("cast bf16 -> fp32", g4_cast(G4_F32, P(back.data()), G4_BF16, P(b.data()), NE, 0));
}

EMU_CASE("shapes", shapes_add_axpy) {
    Rng rng(2);
    std::vector<__nv_bfloat16> a = to_bf16(rng.normals(NE)), b = to_bf16(rng.normals(NE)), out(NE);
    std::vector<float> y = rng.normals(NE);
    bool ok = rc_ok("add bf16 (residual)", g4_add(G4_BF16, P(out.data()), P(a.data()), P(b.data()), NE, 0));
    return ok & rc_ok("axpy y fp32 += x bf16", g4_axpy(P(y.data()), 0.5f, G4_BF16, P(a.data()), NE, 0));
}

EMU_CASE("shapes", shapes_swiglu) {
    const long long n = 16LL * F;
    Rng rng(3);
    std::vector<__nv_bfloat16> gate = to_bf16(rng.normals(n)), up = to_bf16(rng.normals(n)), out(n), dg(n), du(n);
    bool ok = rc_ok("swiglu fwd bf16", g4_swiglu(G4_BF16, P(out.data()), P(gate.data()), P(up.data()), n, 0));
    return ok & rc_ok("swiglu bwd bf16", g4_swiglu_backward(G4_BF16, P(dg.data()), P(du.data()), P(out.data()),
                                                             P(gate.data()), P(up.data()), n, 0));
}

EMU_CASE("shapes", shapes_rope) {
    const int n = 16;
    Rng rng(4);
    std::vector<__nv_bfloat16> x = to_bf16(rng.normals((size_t) n * HQ * D)), out((size_t) n * HQ * D);
    std::vector<int> pos(n);
    std::vector<float> inv(D / 2);
    for (int i = 0; i < n; i++) pos[i] = 100 + i;
    for (int i = 0; i < D / 2; i++) inv[i] = powf(500000.f, -2.f * i / D);
    int flag[4] = {0, 0, 0, 0};
    return rc_ok("rope bf16, 32 heads of 128", g4_rope(G4_BF16, P(out.data()), P(x.data()), P(pos.data()), P(inv.data()),
                                                       n, HQ, D, 0, P(flag), 1, 0)) && flag[0] == 0;
}

EMU_CASE("shapes", shapes_embedding) {
    const int n = 16, v = 1024;
    Rng rng(5);
    std::vector<__nv_bfloat16> table = to_bf16(rng.normals((size_t) v * H)), out((size_t) n * H);
    std::vector<int> ids(n);
    for (int i = 0; i < n; i++) ids[i] = (i * 1000003 + 12345) % v;
    int flag[4] = {0, 0, 0, 0};
    bool ok = rc_ok("embedding fwd bf16", g4_embedding(G4_BF16, P(out.data()), P(table.data()), P(ids.data()), n, H, v,
                                                       P(flag), 1, 0));
    std::vector<float> dtable((size_t) v * H, 0.f);
    long long ws_bytes = 0;
    g4_embedding_backward_workspace(n, v, &ws_bytes);
    std::vector<unsigned char> ws((size_t) std::max(ws_bytes, 1ll));
    ok &= rc_ok("embedding bwd (fp32 dTable)", g4_embedding_backward(P(dtable.data()), G4_BF16, P(out.data()), P(ids.data()),
                                                                     n, H, v, P(ws.data()), ws_bytes, P(flag), 1, 0));
    return ok && flag[0] == 0;
}

EMU_CASE("shapes", shapes_kv_append) {
    const int n = 16, row = HKV * D, cap = 64;
    Rng rng(6);
    std::vector<__nv_bfloat16> k = to_bf16(rng.normals((size_t) n * row)), v = to_bf16(rng.normals((size_t) n * row)),
                               kc((size_t) cap * row), vc((size_t) cap * row);
    std::vector<int> slots(n);
    for (int i = 0; i < n; i++) slots[i] = (i * 1000003 + 7) % cap;
    int flag[4] = {0, 0, 0, 0};
    return rc_ok("kvAppend bf16, 8 heads of 128", g4_kv_append(G4_BF16, P(kc.data()), P(vc.data()), P(k.data()), P(v.data()),
                                                               P(slots.data()), n, row, cap, P(flag), 1, 0)) && flag[0] == 0;
}

EMU_CASE("shapes", shapes_adamw_sum_squares) {
    const long long n = 1 << 18;
    Rng rng(7);
    std::vector<float> p = rng.normals(n), g = rng.normals(n), m = rng.normals(n, 0.1), v(n, 0.01f), ss(1, 0.f);
    std::vector<__nv_bfloat16> pb(n);
    bool ok = rc_ok("adamW with the bf16 copy", g4_adamw(P(p.data()), P(g.data()), P(m.data()), P(v.data()), P(pb.data()),
                                                         n, 0.99999f, 0.9f, 0.999f, 0.1f, 0.001f, 5e-7f, 0.03f, 1e-8f, 1, 0));
    long long ws_bytes = 0;
    g4_sum_squares_workspace(n, &ws_bytes);
    std::vector<unsigned char> ws((size_t) std::max(ws_bytes, 1ll));
    return ok & rc_ok("sumSquares fp32", g4_sum_squares(P(ss.data()), G4_F32, P(g.data()), n, P(ws.data()), ws_bytes, 0));
}

// Causal attention over one sequence of 1024 tokens at head dim 128, 2 query heads over 1 KV head: the forward, the
// deterministic backward, the fast one and the fixed-point one, for the profile of the tensor-core kernels at a length where the causal
// diagonal is a small part of the work (the attention family's cases are short sequences, mostly diagonal). Family
// "shapes-attention", apart from "shapes" (whose profile mvn test checks) because it takes a minute. Checks only that
// every output is finite.
EMU_CASE("shapes-attention", shapes_attention_s1024) {
    const int n = 1024, hq = 2, hkv = 1;
    Rng rng(5);
    std::vector<__nv_bfloat16> q = to_bf16(rng.normals((size_t) n * hq * D)), k = to_bf16(rng.normals((size_t) n * hkv * D)),
                               v = to_bf16(rng.normals((size_t) n * hkv * D)), dout = to_bf16(rng.normals((size_t) n * hq * D));
    std::vector<__nv_bfloat16> out(q.size()), dq(q.size()), dk(k.size()), dv(k.size());
    std::vector<float> lse((size_t) n * hq);
    std::vector<int> cu{0, n};
    int flag[4] = {0, 0, 0, 0};
    long long ws_bytes = 0;
    g4_attention_workspace(n, 1, hq, D, 1, 9, &ws_bytes);  // the fixed-point mode's, the largest
    std::vector<unsigned char> ws((size_t) ws_bytes);
    const float scale = 0.08838834764831845f;
    int e = g4_attention(G4_BF16, P(out.data()), P(lse.data()), P(q.data()), P(k.data()), P(v.data()), P(cu.data()), n, 1, hq,
                         hkv, D, scale, 0, P(ws.data()), ws_bytes, P(flag), 7, 0);
    bool ok = e == 0 && flag[0] == 0;
    for (int det : {1, 0, 9}) {
        e = g4_attention_backward(G4_BF16, P(dq.data()), P(dk.data()), P(dv.data()), P(dout.data()), P(q.data()), P(k.data()),
                                  P(v.data()), P(out.data()), P(lse.data()), P(cu.data()), n, 1, hq, hkv, D, scale, det,
                                  P(ws.data()), ws_bytes, P(flag), 7, 0);
        ok &= e == 0 && flag[0] == 0;
        for (auto* t : {&dq, &dk, &dv})
            for (auto x : *t) ok &= std::isfinite(__bfloat162float(x));
    }
    for (auto x : out) ok &= std::isfinite(__bfloat162float(x));
    printf("    1024 tokens, 2/1 heads, d 128: forward, deterministic, fast and fixed-point backward %s\n", ok ? "finite" : "WRONG");
    return ok;
}
