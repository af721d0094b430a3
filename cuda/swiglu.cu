// SwiGLU forward and backward over [N, F] (elementwise; 16-byte packs). Math in cuda/swiglu.cuh.
// CPU twins: CpuBackend.swiglu / swigluBackward.
#include "common.cuh"
#include "swiglu.cuh"

namespace {

struct Fwd {
    __device__ void operator()(const float* in, float* out) const { out[0] = g4::swiglu(in[0], in[1]); }
};

struct Bwd {  // in: dout, gate, up; out: dgate, dup
    __device__ void operator()(const float* in, float* out) const { g4::swiglu_backward(in[0], in[1], in[2], &out[0], &out[1]); }
};

}  // namespace

extern "C" int g4_swiglu(int dtype, g4_ptr out, g4_ptr gate, g4_ptr up, long long n, g4_stream s) {
    return g4::launch_map_dt<2, 1>(dtype, {gate, up}, {out}, n, Fwd{}, s);
}

extern "C" int g4_swiglu_backward(int dtype, g4_ptr dgate, g4_ptr dup, g4_ptr dout, g4_ptr gate, g4_ptr up, long long n,
                                  g4_stream s) {
    return g4::launch_map_dt<3, 2>(dtype, {dout, gate, up}, {dgate, dup}, n, Bwd{}, s);
}
