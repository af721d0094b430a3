// tools/kernel-emu --profile's own check (test_profile.cpp): small kernels whose memory behaviour is known from the
// hardware's rules, compiled like cuda/*.cu (emu.h force-included, the profile's instrumentation on).
#include "emu.h"

namespace {

__global__ void copy_coalesced(const float* in, float* out) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    out[i] = in[i];
}
// each lane of a warp in its own 32-byte sector: 8 sectors where 4 would hold the warp's 128 bytes... per 32 lanes:
// 32 sectors against ceil(128 / 32) = 4
__global__ void read_strided(const float* in, float* out) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    out[i] = in[8 * i];
}
// the same words read twice by every thread: two requests per warp, one footprint
__global__ void read_twice(const float* in, float* out) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    float a = in[i];
    __syncthreads();
    float b = *(volatile const float*) &in[i];
    out[i] = a + b;
}
__global__ void shared_patterns(float* out, int stride) {
    __shared__ float s[32 * 33];
    const int lane = threadIdx.x & 31;
    s[lane * stride] = (float) lane;  // stride 32: one bank for all lanes (32 wavefronts); 33: all banks (1); 2: 2
    __syncthreads();
    out[blockIdx.x * blockDim.x + threadIdx.x] = s[0];  // every lane the same word: a broadcast, one wavefront
}

}  // namespace

void prof_check_launch(int which, const float* in, float* out, int stride) {
    switch (which) {
        case 0: g4emu::launch("copy_coalesced", copy_coalesced, dim3(2), dim3(64))(in, out); break;
        case 1: g4emu::launch("read_strided", read_strided, dim3(2), dim3(64))(in, out); break;
        case 2: g4emu::launch("read_twice", read_twice, dim3(2), dim3(64))(in, out); break;
        case 3: g4emu::launch("shared_patterns", shared_patterns, dim3(1), dim3(64))(out, stride); break;
    }
}
