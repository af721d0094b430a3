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
