// fp32 <-> bf16 casts. fp32 -> bf16 rounds to nearest, ties to even (__float2bfloat16_rn; NaN -> canonical 0x7FFF).
// bf16 -> fp32 is exact (the 16 bits become the high half). CPU twin: CpuBackend.cast / Bf16.
#pragma once
#include "common.cuh"

__global__ void g4_cast_f32_bf16_kernel(__nv_bfloat16* dst, const float* src, long long n) {
    for (long long i = blockIdx.x * (long long) blockDim.x + threadIdx.x; i < n; i += (long long) gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}

__global__ void g4_cast_bf16_f32_kernel(float* dst, const __nv_bfloat16* src, long long n) {
    for (long long i = blockIdx.x * (long long) blockDim.x + threadIdx.x; i < n; i += (long long) gridDim.x * blockDim.x)
        dst[i] = __bfloat162float(src[i]);
}

static inline int g4_cast_f32_bf16(long long dst, long long src, long long n, long long stream) {
    g4_cast_f32_bf16_kernel<<<g4::grid_for(n, 256), 256, 0, g4::as_stream(stream)>>>((__nv_bfloat16*) dst, (const float*) src, n);
    return (int) cudaGetLastError();
}

static inline int g4_cast_bf16_f32(long long dst, long long src, long long n, long long stream) {
    g4_cast_bf16_f32_kernel<<<g4::grid_for(n, 256), 256, 0, g4::as_stream(stream)>>>((float*) dst, (const __nv_bfloat16*) src, n);
    return (int) cudaGetLastError();
}
