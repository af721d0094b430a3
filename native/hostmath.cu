// Host twins of the kernels' per-element math: the same __host__ __device__ functions (cuda/*.cuh), run on host
// arrays, so that the device math is unit-tested on machines without a GPU (src/test/.../DeviceMathTest.java).
#include "common.cuh"
#include "adamw.cuh"
#include "rope.cuh"
#include "swiglu.cuh"
#include "sampling.cuh"
#include "lmhead.cuh"

extern "C" {

void g4_host_bf16_round(const float* x, short* out, int n) {
    for (int i = 0; i < n; i++) {
        __nv_bfloat16 h = g4::from_f32<__nv_bfloat16>(x[i]);
        unsigned short bits;
        memcpy(&bits, &h, sizeof bits);
        out[i] = (short) bits;
    }
}

void g4_host_adamw(float* p, const float* g, float* m, float* v, short* bf16_out, int n, float decay, float beta1,
                   float beta2, float one_minus_beta1, float one_minus_beta2, float step_size, float bc2_sqrt, float eps,
                   float grad_scale) {
    g4::AdamWScalars c{decay, beta1, beta2, one_minus_beta1, one_minus_beta2, step_size, bc2_sqrt, eps, grad_scale};
    for (int i = 0; i < n; i++) {
        g4::adamw_update(p[i], g[i], m[i], v[i], c);
        if (bf16_out != nullptr) g4_host_bf16_round(&p[i], &bf16_out[i], 1);
    }
}

void g4_host_rope(const float* x, float* out, int position, const float* inv_freq, int d, int inverse) {
    int half = d / 2;
    for (int j = 0; j < half; j++) {
        float c, s;
        g4::rope_cos_sin(position, inv_freq[j], inverse ? -1.f : 1.f, &c, &s);
        g4::rope_rotate(x[j], x[j + half], c, s, &out[j], &out[j + half]);
    }
}

void g4_host_swiglu(const float* gate, const float* up, float* out, int n) {
    for (int i = 0; i < n; i++) out[i] = g4::swiglu(gate[i], up[i]);
}

void g4_host_swiglu_backward(const float* dout, const float* gate, const float* up, float* dgate, float* dup, int n) {
    for (int i = 0; i < n; i++) g4::swiglu_backward(dout[i], gate[i], up[i], &dgate[i], &dup[i]);
}

void g4_host_axpy(float* y, float alpha, const float* x, int n) {
    for (int i = 0; i < n; i++) y[i] = g4::add_rn(y[i], g4::mul_rn(alpha, x[i]));
}

// ---- sampling and the fused LM head (issue 13) ------------------------------------------------------------------------

void g4_host_philox(const int* ctr, const int* key, int* out, int n) {
    for (int i = 0; i < n; i++) {
        g4::U4 c = {(g4::u32) ctr[4 * i], (g4::u32) ctr[4 * i + 1], (g4::u32) ctr[4 * i + 2], (g4::u32) ctr[4 * i + 3]};
        g4::U4 w = g4::philox4x32_10(c, (g4::u32) key[2 * i], (g4::u32) key[2 * i + 1]);
        out[4 * i] = (int) w.x;
        out[4 * i + 1] = (int) w.y;
        out[4 * i + 2] = (int) w.z;
        out[4 * i + 3] = (int) w.w;
    }
}

double g4_host_philox_uniform(long long seed, int stream, int step) { return g4::philox_uniform((g4::u64) seed, stream, step); }

void g4_host_exp_f32(const float* x, float* out, int n) {
    for (int i = 0; i < n; i++) out[i] = g4::exp_f32(x[i]);
}

int g4_host_sample_row(const float* row, int v, float temperature, int top_k, float top_p, double u, int* token,
                       double* logprob, int* kept) {
    return g4::host_sample_row(row, v, temperature, top_k, top_p, u, token, logprob, kept);
}

int g4_host_sample_row_cap(const float* row, int v, float temperature, int top_k, float top_p, double u, int* token,
                           double* logprob, int* kept, int list_cap) {
    return g4::host_sample_row(row, v, temperature, top_k, top_p, u, token, logprob, kept, list_cap);
}

int g4_host_cand_count(const float* row, int v, float temperature, float top_p) {
    return g4::host_cand_count(row, v, temperature, top_p);
}

void g4_host_lmhead_lse(const float* z, int rows, int cols, int chunk, const int* targets, double* lse, double* logp) {
    using namespace g4::lmh;
    double part[BLOCK];
    for (int r = 0; r < rows; r++) {
        const float* zr = z + (long long) r * cols;
        float m = neg_inf(), zt = nanf("");
        double s = 0;
        for (int v0 = 0; v0 < cols; v0 += chunk) {
            int n = cols - v0 < chunk ? cols - v0 : chunk;
            float cm = neg_inf();
            for (int j = 0; j < n; j++) cm = fmaxf(cm, zr[v0 + j]);
            float m_new = fmaxf(m, cm);
            for (int t = 0; t < BLOCK; t++) {
                part[t] = 0;
                for (int j = t; j < n; j += BLOCK) part[t] = g4::dadd_rn(part[t], lse_term(zr[v0 + j], m_new));
            }
            s = g4::dadd_rn(lse_rescale(s, m, m_new), emulate_block_sum(part, BLOCK));
            m = m_new;
            int tgt = targets[r];
            if (tgt >= v0 && tgt < v0 + n) zt = zr[tgt];
        }
        lse[r] = lse_value(m, s);
        logp[r] = g4::dsub_rn((double) zt, lse[r]);
    }
}

void g4_host_lmhead_dlogits(const float* z, int rows, int cols, const int* targets, const double* lse, const double* g,
                            float* dz, short* hi, short* lo) {
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < cols; j++) {
            long long i = (long long) r * cols + j;
            float d = targets[r] >= 0 && targets[r] < cols ? g4::lmh::dlogit(z[i], lse[r], g[r], j == targets[r]) : 0.f;
            dz[i] = d;
            __nv_bfloat16 h, l;
            g4::lmh::split_bf16(d, &h, &l);
            memcpy(&hi[i], &h, 2);
            memcpy(&lo[i], &l, 2);
        }
}

float g4_host_grpo_tokens(const double* logp, const float* old, const float* ref, const float* adv, const float* w,
                          const int* targets, int vocab, int n, float eps_low, float eps_high, float beta, int kl,
                          float* lp, float* ratio, float* clipped, float* kl_out, double* g) {
    using namespace g4::lmh;
    double part[LOSS_BLOCK];
    double lo = 1.0 - (double) eps_low, hi = 1.0 + (double) eps_high;
    for (int t = 0; t < LOSS_BLOCK; t++) part[t] = 0;
    for (int t = 0; t < n; t++) {
        if (targets[t] < 0 || targets[t] >= vocab) {
            lp[t] = ratio[t] = kl_out[t] = nanf("");
            clipped[t] = 0.f;
            g[t] = 0;
            continue;
        }
        GrpoTok r = grpo_token(logp[t], old ? (double) old[t] : logp[t], ref[t], adv[t], w[t], lo, hi, (double) beta, kl);
        part[t % LOSS_BLOCK] = g4::dadd_rn(part[t % LOSS_BLOCK], r.term);
        lp[t] = (float) logp[t];
        ratio[t] = (float) r.ratio;
        clipped[t] = r.clipped ? 1.f : 0.f;
        kl_out[t] = (float) r.kl;
        g[t] = r.g;
    }
    return (float) emulate_block_sum(part, LOSS_BLOCK);
}

}  // extern "C"

// ---- attention (issue 12): host twins of cuda/attention.cu and cuda/decode.cu ----------------------------------------
// Row-level emulations of the kernels' tile algorithms in fp32 (no MMA: products summed in order with fmaf), with the
// kernels' plan, tile order, masks, online-softmax helpers (attention.cuh), per-lane partial row sums, bf16 rounding of
// P (and dS) before the second products, warp merge and split-KV combine.
#include <algorithm>
#include <vector>

#include "attention.cuh"

namespace {

float bf16r(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

float dotf(const float* a, const float* b, int d) {
    float s = 0.f;
    for (int x = 0; x < d; x++) s = fmaf(a[x], b[x], s);
    return s;
}

// One row's online-softmax state as the kernels keep it: m (base 2), a partial sum per quad lane (the lane owning
// columns 8 nb + 2 tig, +1), the unnormalized output.
struct RowState {
    float m = -INFINITY;
    float lt[4] = {0.f, 0.f, 0.f, 0.f};
    std::vector<float> o;
    explicit RowState(int d) : o(d, 0.f) {}

    // One tile of raw scores s[0..n) (-inf where masked) with value rows v(c); n a multiple of 8.
    template <typename V>
    void tile(const float* s, int n, float c, bool round_p, V v) {
        float mx = -INFINITY;
        for (int j = 0; j < n; j++) mx = fmaxf(mx, s[j]);
        const float mn = fmaxf(m, mx * c), alpha = g4::softmax_alpha(m, mn);
        m = mn;
        for (float& x : lt) x *= alpha;
        for (float& x : o) x *= alpha;
        for (int j = 0; j < n; j++) {
            const float p = g4::softmax_weight(s[j], c, mn);
            lt[(j % 8) / 2] += p;
            const float pr = round_p ? bf16r(p) : p;
            if (pr != 0.f) {
                const float* vr = v(j);
                for (size_t x = 0; x < o.size(); x++) o[x] = fmaf(pr, vr[x], o[x]);
            }
        }
    }

    float l() const { return (lt[0] + lt[1]) + (lt[2] + lt[3]); }  // quad_sum's order
};

}  // namespace

extern "C" {

int g4_host_cu_seqlens_check(const int* cu, int b, int n, int* report4) {
    int key = 0x7fffffff;
    for (int i = 0; i <= b; i++) key = std::min(key, g4::cu_seqlens_key(cu, b, n, i));
    if (key == 0x7fffffff) return 1;
    g4::cu_seqlens_problem(cu, b, n, key, report4);
    report4[0] <<= 8;  // the flag word without the op, as plan_kernel reports it
    return 0;
}

int g4_host_attention_tiled(const float* q, const float* k, const float* v, const int* cu, int b, int n, int hq, int hkv,
                            int d, float scale, int round_p, float* out, float* lse, int* report4) {
    if (!g4_host_cu_seqlens_check(cu, b, n, report4)) return 0;
    const int BM = g4::ATT_BM, BN = g4::ATT_BN, group = hq / hkv;
    const float c = scale * g4::ATT_LOG2E;
    std::vector<float> s(BN);
    for (int sq = 0; sq < b; sq++) {
        const int start = cu[sq], len = cu[sq + 1] - start, cnt = g4::tiles_of(len, BM);
        for (int kx = 0; kx < cnt; kx++) {
            const int qt = g4::tile_order(kx, cnt), row0 = qt * BM;
            for (int h = 0; h < hq; h++) {
                const int g = h / group;
                for (int r = 0; r < BM && row0 + r < len; r++) {
                    const long long qrow = (long long) (start + row0 + r) * hq + h;
                    RowState st(d);
                    for (int j = 0; j <= qt; j++) {  // key tiles up to the diagonal, in order
                        for (int col = 0; col < BN; col++) {
                            const int key = j * BN + col;
                            const bool masked = j == qt && col > r;
                            s[col] = masked ? -INFINITY
                                            : key < len ? dotf(q + qrow * d, k + ((long long) (start + key) * hkv + g) * d, d) : 0.f;
                        }
                        st.tile(s.data(), BN, c, round_p != 0,
                                [&](int col) { return v + ((long long) (start + j * BN + col) * hkv + g) * d; });
                    }
                    const float l = st.l(), inv = 1.f / l;
                    for (int x = 0; x < d; x++) out[qrow * d + x] = st.o[x] * inv;
                    lse[qrow] = g4::softmax_lse(st.m, l);
                }
            }
        }
    }
    return 1;
}

int g4_host_attention_backward_tiled(const float* q, const float* k, const float* v, const float* out, const float* dout,
                                     const float* lse, const int* cu, int b, int n, int hq, int hkv, int d, float scale,
                                     int round, float* dq, float* dk, float* dv, int* report4) {
    if (!g4_host_cu_seqlens_check(cu, b, n, report4)) return 0;
    const int BM = g4::ATT_BM, BN = g4::ATT_BN, SB = g4::att_bwd_step(d), group = hq / hkv;
    const float c = scale * g4::ATT_LOG2E;
    auto rb = [&](float x) { return round ? bf16r(x) : x; };
    std::vector<float> dsum((size_t) n * hq);
    for (long long row = 0; row < (long long) n * hq; row++) dsum[(row % hq) * n + row / hq] = dotf(dout + row * d, out + row * d, d);
    std::vector<float> gk(d), gv(d), gq(d);
    for (int sq = 0; sq < b; sq++) {
        const int start = cu[sq], len = cu[sq + 1] - start, cnt = g4::tiles_of(len, BN);
        for (int kx = 0; kx < cnt; kx++) {
            const int tile = g4::tile_order(kx, cnt);
            // dK/dV kernel: key tile `tile`, per kv head; query steps of SB rows from the tile's first key
            const int key0 = tile * BN, nsteps = (len - key0 + SB - 1) / SB;
            for (int g = 0; g < hkv; g++)
                for (int kr = key0; kr < key0 + BN && kr < len; kr++) {
                    std::fill(gk.begin(), gk.end(), 0.f);
                    std::fill(gv.begin(), gv.end(), 0.f);
                    const float* K = k + ((long long) (start + kr) * hkv + g) * d;
                    const float* V = v + ((long long) (start + kr) * hkv + g) * d;
                    for (int it = 0; it < group * nsteps; it++) {
                        const int h = g * group + it / nsteps, r0 = key0 + (it % nsteps) * SB;
                        for (int qr = r0; qr < r0 + SB; qr++) {
                            if (!(qr < len && kr <= qr)) continue;  // P = 0: adds nothing
                            const long long row = (long long) (start + qr) * hq + h;
                            const float p = g4::exp2_ftz(fmaf(dotf(K, q + row * d, d), c, -(lse[row] * g4::ATT_LOG2E)));
                            const float ds = p * (dotf(V, dout + row * d, d) - dsum[(long long) h * n + start + qr]);
                            const float pr = rb(p), dsr = rb(ds);
                            for (int x = 0; x < d; x++) {
                                gv[x] = fmaf(pr, dout[row * d + x], gv[x]);
                                gk[x] = fmaf(dsr, q[row * d + x], gk[x]);
                            }
                        }
                    }
                    for (int x = 0; x < d; x++) {
                        dk[((long long) (start + kr) * hkv + g) * d + x] = gk[x] * scale;
                        dv[((long long) (start + kr) * hkv + g) * d + x] = gv[x];
                    }
                }
            // dQ kernel: query tile `tile` (BM == BN), per query head; key tiles up to the diagonal
            const int row0 = tile * BM;
            for (int h = 0; h < hq; h++)
                for (int r = 0; r < BM && row0 + r < len; r++) {
                    const long long row = (long long) (start + row0 + r) * hq + h;
                    const float l2 = lse[row] * g4::ATT_LOG2E, dd = dsum[(long long) h * n + start + row0 + r];
                    std::fill(gq.begin(), gq.end(), 0.f);
                    for (int j = 0; j <= tile; j++)
                        for (int col = 0; col < BN; col++) {
                            const int key = j * BN + col;
                            if ((j == tile && col > r) || key >= len) continue;
                            const long long kb = ((long long) (start + key) * hkv + h / group) * d;
                            const float p = g4::exp2_ftz(fmaf(dotf(q + row * d, k + kb, d), c, -l2));
                            const float ds = rb(p * (dotf(dout + row * d, v + kb, d) - dd));
                            for (int x = 0; x < d; x++) gq[x] = fmaf(ds, k[kb + x], gq[x]);
                        }
                    for (int x = 0; x < d; x++) dq[row * d + x] = gq[x] * scale;
                }
        }
    }
    return 1;
}

void g4_host_decode_plan(int b, int hkv, int max_ctx, int block_size, int sms, int* chunk_splits) {
    g4::decode_split_plan(b, hkv, max_ctx, block_size, sms, &chunk_splits[0], &chunk_splits[1]);
}

// Returns the number of splits (>= 1), or 0 when the index data is bad (report4 = the first problem found, in
// sequence order; that sequence's output rows are not written, the others are).
int g4_host_decode_tiled(const float* q, const float* kc, const float* vc, const int* tables, const int* ctx, int b,
                         int hq, int hkv, int d, int num_blocks, int bs, int max_blocks, float scale, int sms, int round_p,
                         float* out, int* report4) {
    int chunk, splits;
    g4::decode_split_plan(b, hkv, max_blocks * bs, bs, sms, &chunk, &splits);
    const int group = hq / hkv, T = g4::DEC_TILE;
    const float c = scale * g4::ATT_LOG2E;
    bool bad = false;
    std::vector<float> s(16), pm(splits), pl(splits), po((size_t) splits * d);
    for (int sb = 0; sb < b; sb++) {
        const int* row = tables + (long long) sb * max_blocks;
        int key = g4::decode_ctx_ok(ctx[sb], max_blocks, bs) ? 0x7fffffff : 0;
        if (key) for (int j = 0, nb = g4::decode_pages(ctx[sb], bs); j < nb; j++) key = std::min(key, g4::decode_entry_key(row, j, num_blocks));
        if (key != 0x7fffffff) {
            if (!bad) {
                bad = true;
                report4[0] = key == 0 ? g4::ATT_CTX << 8 : g4::ATT_TABLE << 8 | std::min(key - 1, 0x7ffff) << 12;
                report4[1] = sb;
                report4[2] = key == 0 ? ctx[sb] : row[key - 1];
                report4[3] = key == 0 ? max_blocks * bs : num_blocks;
            }
            continue;
        }
        for (int h = 0; h < hq; h++) {
            const int g = h / group;
            const float* qv = q + ((long long) sb * hq + h) * d;
            for (int sp = 0; sp < splits; sp++) {
                const int k0 = sp * chunk, k1 = std::min(ctx[sb], k0 + chunk);
                pm[sp] = -INFINITY;
                pl[sp] = 0.f;
                if (k0 >= k1) continue;
                auto rowp = [&](int key) {
                    return ((long long) row[key / bs] * bs + key % bs) * hkv + g;
                };
                float wm[4], wl[4];
                std::vector<std::vector<float>> wo;
                for (int w = 0; w < 4; w++) {  // warp w: keys 16 w .. 16 w + 15 of every tile
                    RowState st(d);
                    for (int j = 0; j < (k1 - k0 + T - 1) / T; j++) {
                        const int kb = k0 + j * T + w * 16;
                        for (int col = 0; col < 16; col++)
                            s[col] = kb + col < k1 ? dotf(qv, kc + rowp(kb + col) * d, d) : -INFINITY;
                        st.tile(s.data(), 16, c, round_p != 0, [&](int col) { return vc + rowp(kb + col) * d; });
                    }
                    wm[w] = st.m;
                    wl[w] = st.l();
                    wo.push_back(st.o);
                }
                const float mx = g4::merge_max(wm, wl, 4, 1);
                float sum = 0.f;
                std::vector<float> acc(d, 0.f);
                for (int w = 0; w < 4; w++)
                    if (g4::merge_present(wl[w])) {
                        const float f = g4::merge_factor(wm[w], wl[w], mx);
                        sum = fmaf(f, wl[w], sum);
                        for (int x = 0; x < d; x++) acc[x] = fmaf(f, wo[w][x], acc[x]);
                    }
                pm[sp] = mx;
                pl[sp] = sum;
                for (int x = 0; x < d; x++) po[(size_t) sp * d + x] = acc[x];
            }
            float* o = out + ((long long) sb * hq + h) * d;
            if (splits == 1) {
                for (int x = 0; x < d; x++) o[x] = po[x] / pl[0];
                continue;
            }
            // combine_kernel
            const float mx = g4::merge_max(pm.data(), pl.data(), splits, 1);
            std::vector<float> f(splits);
            float total = 0.f;
            for (int sp = 0; sp < splits; sp++) f[sp] = g4::merge_factor(pm[sp], pl[sp], mx);
            for (int sp = 0; sp < splits; sp++)
                if (g4::merge_present(pl[sp])) total = fmaf(f[sp], pl[sp], total);
            for (int x = 0; x < d; x++) {
                float acc = 0.f;
                for (int sp = 0; sp < splits; sp++)
                    if (g4::merge_present(pl[sp])) acc = fmaf(f[sp], po[(size_t) sp * d + x], acc);
                o[x] = acc / total;
            }
        }
    }
    return bad ? 0 : splits;
}

// One row through the online softmax in chunks of `chunk` keys, then `parts` contiguous parts of the row merged as the
// split-KV combine does: out[d] and lse of softmax(scale s) . v.
void g4_host_online_softmax_row(const float* s, const float* v, int n, int d, float scale, int chunk, int parts,
                                float* out, float* lse) {
    const float c = scale * g4::ATT_LOG2E;
    std::vector<float> pm(parts), pl(parts), po((size_t) parts * d);
    std::vector<float> buf(chunk);
    for (int p = 0; p < parts; p++) {
        const int a = (int) ((long long) n * p / parts), e = (int) ((long long) n * (p + 1) / parts);
        RowState st(d);
        for (int j0 = a; j0 < e; j0 += chunk) {
            for (int j = 0; j < chunk; j++) buf[j] = j0 + j < e ? s[j0 + j] : -INFINITY;
            st.tile(buf.data(), chunk, c, false, [&](int j) { return v + (long long) (j0 + j) * d; });
        }
        pm[p] = st.m;
        pl[p] = st.l();
        for (int x = 0; x < d; x++) po[(size_t) p * d + x] = st.o[x];
    }
    const float mx = g4::merge_max(pm.data(), pl.data(), parts, 1);
    float total = 0.f;
    std::vector<float> acc(d, 0.f);
    for (int p = 0; p < parts; p++)
        if (g4::merge_present(pl[p])) {
            const float f = g4::merge_factor(pm[p], pl[p], mx);
            total = fmaf(f, pl[p], total);
            for (int x = 0; x < d; x++) acc[x] = fmaf(f, po[(size_t) p * d + x], acc[x]);
        }
    for (int x = 0; x < d; x++) out[x] = acc[x] / total;
    *lse = g4::softmax_lse(mx, total);
}

}  // extern "C"

// ---- attention (issue 12 review): the kernels' fragment plumbing on an emulated warp ---------------------------------
// ldmatrix.x4 (.trans) and mma.sync.m16n8k16.row.col bf16 -> fp32 emulated lane by lane from the PTX ISA's tables,
// fed with the kernels' own address helpers (mma.cuh: swz, frag_a, frag_bt, frag_b, frag_at, frag_a_reg, c_to_a) in
// the kernels' loop shapes, and compared with plain matrix products. Inputs are small integers, so every product and
// sum is exact in fp32 and a right layout matches bit for bit.
#include "mma.cuh"

namespace {

struct Warp {
    // PTX ISA, "Matrix Fragments for mma.m16n8k16" (.bf16), with gid = lane >> 2, tig = lane & 3; element e of a
    // fragment sits in register e / 2, half e % 2 (the lower index in the low half).
    static int a_row(int l, int e) { return (l >> 2) + 8 * ((e >> 1) & 1); }  // a0,a1,a4,a5: gid; a2,a3,a6,a7: gid + 8
    static int a_col(int l, int e) { return (l & 3) * 2 + (e & 1) + 8 * (e >> 2); }
    static int b_row(int l, int e) { return (l & 3) * 2 + (e & 1) + 8 * (e >> 1); }  // k
    static int b_col(int l, int) { return l >> 2; }                                   // n
    static int c_row(int l, int e) { return (l >> 2) + 8 * (e >> 1); }
    static int c_col(int l, int e) { return (l & 3) * 2 + (e & 1); }

    static float lo(unsigned r) { return bf(r & 0xffffu); }
    static float hi(unsigned r) { return bf(r >> 16); }
    static float bf(unsigned bits) {
        const unsigned short b = (unsigned short) bits;
        __nv_bfloat16 h;
        memcpy(&h, &b, 2);
        return __bfloat162float(h);
    }
    static unsigned bits(float x) {
        __nv_bfloat16 h = __float2bfloat16_rn(x);
        unsigned short b;
        memcpy(&b, &h, 2);
        return b;
    }

    std::vector<unsigned char>& sm;
    int conflicts = 0;  // shared-memory bank conflicts of the emulated ldmatrix phases and fragment stores

    // ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: row j of matrix i is the 16 bytes at the address lane 8 i + j
    // supplies; lane l receives row l / 4, elements 2 (l % 4), +1 (with .trans: of the transposed matrix).
    void ldsm(unsigned (&r)[32][4], const unsigned (&addr)[32], bool trans) {
        for (int i = 0; i < 4; i++) {
            int groups = 0;  // the 8 rows of one matrix are one 128-byte phase: free of conflicts when in 8 bank groups
            for (int j = 0; j < 8; j++) groups |= 1 << ((addr[8 * i + j] >> 4) & 7);
            conflicts += 8 - __builtin_popcount(groups);
            for (int l = 0; l < 32; l++) {
                const int a = l >> 2, b = (l & 3) * 2;
                float x, y;
                if (!trans) {
                    x = at(addr[8 * i + a] + 2 * b);
                    y = at(addr[8 * i + a] + 2 * (b + 1));
                } else {
                    x = at(addr[8 * i + b] + 2 * a);
                    y = at(addr[8 * i + b + 1] + 2 * a);
                }
                r[l][i] = bits(x) | bits(y) << 16;
            }
        }
    }

    float at(unsigned off) const {  // offsets are even and below sm.size() - 1 (tiles inside the buffer)
        unsigned short b;
        memcpy(&b, &sm.at(off), 2);
        return bf(b);
    }

    void put(unsigned off, float x) {
        const unsigned short b = (unsigned short) bits(x);
        memcpy(&sm.at(off), &b, 2);
    }

    // d += a b for one m16n8k16 (b = registers {b0, b1} of every lane).
    static void mma(float (&d)[32][4], const unsigned (&a)[32][4], const unsigned (&b)[32][2]) {
        float A[16][16], B[16][8];
        for (int l = 0; l < 32; l++) {
            for (int e = 0; e < 8; e++) A[a_row(l, e)][a_col(l, e)] = e & 1 ? hi(a[l][e >> 1]) : lo(a[l][e >> 1]);
            for (int e = 0; e < 4; e++) B[b_row(l, e)][b_col(l, e)] = e & 1 ? hi(b[l][e >> 1]) : lo(b[l][e >> 1]);
        }
        for (int l = 0; l < 32; l++)
            for (int e = 0; e < 4; e++) {
                float s = 0.f;
                for (int k = 0; k < 16; k++) s += A[c_row(l, e)][k] * B[k][c_col(l, e)];
                d[l][e] += s;
            }
    }

    // The two mma of one ldmatrix.x4 B load: n-block 2 n2 from {b0, b1}, 2 n2 + 1 from {b2, b3}.
    static void mma2(float (&d0)[32][4], float (&d1)[32][4], const unsigned (&a)[32][4], const unsigned (&b)[32][4]) {
        unsigned x[32][2], y[32][2];
        for (int l = 0; l < 32; l++) {
            x[l][0] = b[l][0], x[l][1] = b[l][1];
            y[l][0] = b[l][2], y[l][1] = b[l][3];
        }
        mma(d0, a, x);
        mma(d1, a, y);
    }
};

// A [rows][COLS] tile of small integers written into sm at byte `base` through the swizzle; returns the values.
template <int COLS>
std::vector<float> fill_tile(Warp& w, unsigned base, int rows, unsigned& seed, bool swizzle = true) {
    std::vector<float> v((size_t) rows * COLS);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < COLS; c++) {
            seed = seed * 1664525u + 1013904223u;
            v[(size_t) r * COLS + c] = (float) ((int) (seed >> 28) - 8) / 2.f;  // -4 .. 3.5 in halves: exact in bf16
            w.put(base + (swizzle ? g4::swz<COLS>(r, c) : (unsigned) (r * COLS + c) * 2), v[(size_t) r * COLS + c]);
        }
    return v;
}

// One mutation at a time (mut != 0) must make a check fail: 1 QK^T's B from frag_b, 2 c_to_a with its n-blocks swapped,
// 3 V by ldmatrix without .trans, 4 K written unswizzled, 5 dS^T stored from the wrong register order.
template <int D>
void layout_case(int mut, int* bad) {
    constexpr int BM = D == 128 ? 32 : 64;  // dK/dV query step (att_bwd_step), the fast mode's dS^T tile width
    std::vector<unsigned char> bytes(1 << 18);
    Warp w{bytes};
    unsigned seed = 12345u + D;
    const unsigned sQ = 0, sK = 64 * D * 2, sV = sK + 64 * D * 2, sS = sV + 64 * D * 2;
    const std::vector<float> Q = fill_tile<D>(w, sQ, 64, seed), K = fill_tile<D>(w, sK, 64, seed, mut != 4),
                             V = fill_tile<D>(w, sV, 64, seed);
    auto kval = [&](int r, int c) { return K[(size_t) r * D + c]; };
    for (int warp = 0; warp < 4; warp++) {
        // S = Q K^T (forward, dQ kernel; dK/dV's K Q^T and V dO^T are the same pattern): rows warp*16.., 64 keys
        float s[8][32][4] = {};
        for (int kk = 0; kk < D / 16; kk++) {
            unsigned qa[32][4], addr[32];
            for (int l = 0; l < 32; l++) addr[l] = sQ + g4::frag_a<D>(warp * 16, kk * 16, l);
            w.ldsm(qa, addr, false);
            for (int n2 = 0; n2 < 4; n2++) {
                unsigned b[32][4];
                for (int l = 0; l < 32; l++) addr[l] = sK + (mut == 1 ? g4::frag_b<D>(n2 * 16, kk * 16, l) : g4::frag_bt<D>(n2 * 16, kk * 16, l));
                w.ldsm(b, addr, false);
                Warp::mma2(s[2 * n2], s[2 * n2 + 1], qa, b);
            }
        }
        for (int nb = 0; nb < 8; nb++)
            for (int l = 0; l < 32; l++)
                for (int e = 0; e < 4; e++) {
                    const int r = warp * 16 + Warp::c_row(l, e), c = nb * 8 + Warp::c_col(l, e);
                    float want = 0.f;
                    for (int x = 0; x < D; x++) want += Q[(size_t) r * D + x] * kval(c, x);
                    if (s[nb][l][e] != want) bad[0]++;
                }
        // O = P V (forward, decode; dV += P^T dO, dK += dS^T Q, dQ += dS K alike): P = 16 x 64 held as C fragments
        float p[8][32][4], o[D / 8][32][4] = {};
        std::vector<float> P(16 * 64);
        for (int nb = 0; nb < 8; nb++)
            for (int l = 0; l < 32; l++)
                for (int e = 0; e < 4; e++) {
                    seed = seed * 1664525u + 1013904223u;
                    p[nb][l][e] = P[Warp::c_row(l, e) * 64 + nb * 8 + Warp::c_col(l, e)] = (float) ((int) (seed >> 29) - 4);
                }
        for (int kk = 0; kk < 4; kk++) {
            unsigned pa[32][4], addr[32];
            for (int l = 0; l < 32; l++) {
                unsigned a4[4];
                g4::c_to_a(a4, mut == 2 ? p[2 * kk + 1][l] : p[2 * kk][l], mut == 2 ? p[2 * kk][l] : p[2 * kk + 1][l]);
                for (int i = 0; i < 4; i++) pa[l][i] = a4[i];
            }
            for (int n2 = 0; n2 < D / 16; n2++) {
                unsigned b[32][4];
                for (int l = 0; l < 32; l++) addr[l] = sV + g4::frag_b<D>(kk * 16, n2 * 16, l);
                w.ldsm(b, addr, mut != 3);
                Warp::mma2(o[2 * n2], o[2 * n2 + 1], pa, b);
            }
        }
        for (int nd = 0; nd < D / 8; nd++)
            for (int l = 0; l < 32; l++)
                for (int e = 0; e < 4; e++) {
                    const int r = Warp::c_row(l, e), c = nd * 8 + Warp::c_col(l, e);
                    float want = 0.f;
                    for (int j = 0; j < 64; j++) want += P[r * 64 + j] * V[(size_t) j * D + c];
                    if (o[nd][l][e] != want) bad[1]++;
                }
    }
    // Fast-mode dQ (dK/dV kernel): every warp stores its dS^T (16 keys x BM queries, from C fragments via c_to_a) into
    // the [64][BM] tile with frag_a_reg; then warp (mt, dh) forms dQ rows mt*16.. , columns dh.. = dS K from frag_at
    // (dS^T by ldmatrix.trans) and frag_b (K by ldmatrix.trans).
    std::vector<float> dst(64 * BM);  // dS^T [key][query]
    for (int warp = 0; warp < 4; warp++)
        for (int kq = 0; kq < BM / 16; kq++) {
            float c0[32][4], c1[32][4];
            for (int l = 0; l < 32; l++)
                for (int e = 0; e < 4; e++) {
                    const int r = warp * 16 + Warp::c_row(l, e), c = kq * 16 + Warp::c_col(l, e);
                    seed = seed * 1664525u + 1013904223u;
                    c0[l][e] = dst[r * BM + c] = (float) ((int) (seed >> 29) - 4);
                    seed = seed * 1664525u + 1013904223u;
                    c1[l][e] = dst[r * BM + c + 8] = (float) ((int) (seed >> 29) - 4);
                }
            for (int i = 0; i < 4; i++) {
                int banks[32] = {};
                for (int l = 0; l < 32; l++) {
                    unsigned a4[4];
                    g4::c_to_a(a4, c0[l], c1[l]);
                    const unsigned off = sS + g4::frag_a_reg<BM>(warp * 16, kq * 16, l, mut == 5 ? i ^ 1 : i);
                    w.put(off, Warp::lo(a4[i]));
                    w.put(off + 2, Warp::hi(a4[i]));
                    banks[(off >> 2) & 31]++;
                }
                for (int k = 0; k < 32; k++) w.conflicts += banks[k] > 1 ? banks[k] - 1 : 0;
            }
        }
    for (int warp = 0; warp < 4; warp++) {
        const int mt = warp % (BM / 16), dh = (warp / (BM / 16)) * 64;
        float acc[8][32][4] = {};
        for (int kk = 0; kk < 4; kk++) {
            unsigned af[32][4], addr[32];
            for (int l = 0; l < 32; l++) addr[l] = sS + g4::frag_at<BM>(kk * 16, mt * 16, l);
            w.ldsm(af, addr, true);
            for (int n2 = 0; n2 < 4; n2++) {
                unsigned b[32][4];
                for (int l = 0; l < 32; l++) addr[l] = sK + g4::frag_b<D>(kk * 16, dh + n2 * 16, l);
                w.ldsm(b, addr, true);
                Warp::mma2(acc[2 * n2], acc[2 * n2 + 1], af, b);
            }
        }
        for (int nb = 0; nb < 8; nb++)
            for (int l = 0; l < 32; l++)
                for (int e = 0; e < 4; e++) {
                    const int q = mt * 16 + Warp::c_row(l, e), c = dh + nb * 8 + Warp::c_col(l, e);
                    float want = 0.f;
                    for (int j = 0; j < 64; j++) want += dst[j * BM + q] * kval(j, c);
                    if (acc[nb][l][e] != want) bad[2]++;
                }
    }
    bad[3] += mut == 4 ? 0 : w.conflicts;  // an unswizzled tile conflicts by design
}

}  // namespace

extern "C" int g4_host_mma_layout_check(int mutation, int* bad4) {
    for (int i = 0; i < 4; i++) bad4[i] = 0;
    layout_case<64>(mutation, bad4);
    layout_case<128>(mutation, bad4);
    return bad4[0] + bad4[1] + bad4[2] + bad4[3];
}
