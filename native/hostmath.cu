// Host twins of the kernels' per-element math: the same __host__ __device__ functions (cuda/*.cuh), run on host
// arrays, so that the device math is unit-tested on machines without a GPU (src/test/.../DeviceMathTest.java).
#include "common.cuh"
#include "adamw.cuh"
#include "rope.cuh"
#include "swiglu.cuh"

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

}  // extern "C"
