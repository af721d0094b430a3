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
                   float beta2, float one_minus_beta1, float one_minus_beta2, float step_size, float bc2_sqrt, float eps) {
    g4::AdamWScalars c{decay, beta1, beta2, one_minus_beta1, one_minus_beta2, step_size, bc2_sqrt, eps};
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
        GrpoTok r = grpo_token(logp[t], old[t], ref[t], adv[t], w[t], lo, hi, (double) beta, kl);
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
                            const float p = exp2f(fmaf(dotf(K, q + row * d, d), c, -(lse[row] * g4::ATT_LOG2E)));
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
                            const float p = exp2f(fmaf(dotf(q + row * d, k + kb, d), c, -l2));
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
        if (key) for (int j = 0; j < (ctx[sb] + bs - 1) / bs; j++) key = std::min(key, g4::decode_entry_key(row, j, num_blocks));
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
                    if (wl[w] > 0.f) {
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
                if (pl[sp] > 0.f) total = fmaf(f[sp], pl[sp], total);
            for (int x = 0; x < d; x++) {
                float acc = 0.f;
                for (int sp = 0; sp < splits; sp++)
                    if (pl[sp] > 0.f) acc = fmaf(f[sp], po[(size_t) sp * d + x], acc);
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
        if (pl[p] > 0.f) {
            const float f = g4::merge_factor(pm[p], pl[p], mx);
            total = fmaf(f, pl[p], total);
            for (int x = 0; x < d; x++) acc[x] = fmaf(f, po[(size_t) p * d + x], acc[x]);
        }
    for (int x = 0; x < d; x++) out[x] = acc[x] / total;
    *lse = g4::softmax_lse(mx, total);
}

}  // extern "C"
