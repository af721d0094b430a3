// fill and scale: x[i] = value;  x[i] = alpha * x[i].
// Memory-bound; one grid-stride loop. CPU twins: CpuBackend.fill / CpuBackend.scale.
#pragma once
#include "common.cuh"

__global__ void g4_fill_f32_kernel(float* x, long long n, float value) {
    for (long long i = blockIdx.x * (long long) blockDim.x + threadIdx.x; i < n; i += (long long) gridDim.x * blockDim.x)
        x[i] = value;
}

__global__ void g4_fill_bf16_kernel(__nv_bfloat16* x, long long n, __nv_bfloat16 value) {
    for (long long i = blockIdx.x * (long long) blockDim.x + threadIdx.x; i < n; i += (long long) gridDim.x * blockDim.x)
        x[i] = value;
}

__global__ void g4_fill_i32_kernel(int* x, long long n, int value) {
    for (long long i = blockIdx.x * (long long) blockDim.x + threadIdx.x; i < n; i += (long long) gridDim.x * blockDim.x)
        x[i] = value;
}

__global__ void g4_scale_f32_kernel(float* x, long long n, float alpha) {
    for (long long i = blockIdx.x * (long long) blockDim.x + threadIdx.x; i < n; i += (long long) gridDim.x * blockDim.x)
        x[i] = alpha * x[i];
}

// bf16 scale: computed in fp32, rounded to nearest even once.
__global__ void g4_scale_bf16_kernel(__nv_bfloat16* x, long long n, float alpha) {
    for (long long i = blockIdx.x * (long long) blockDim.x + threadIdx.x; i < n; i += (long long) gridDim.x * blockDim.x)
        x[i] = __float2bfloat16_rn(alpha * __bfloat162float(x[i]));
}

static inline int g4_fill_f32(long long x, long long n, float value, long long stream) {
    g4_fill_f32_kernel<<<g4::grid_for(n, 256), 256, 0, g4::as_stream(stream)>>>((float*) x, n, value);
    return (int) cudaGetLastError();
}

static inline int g4_fill_bf16(long long x, long long n, float value, long long stream) {
    g4_fill_bf16_kernel<<<g4::grid_for(n, 256), 256, 0, g4::as_stream(stream)>>>((__nv_bfloat16*) x, n, __float2bfloat16_rn(value));
    return (int) cudaGetLastError();
}

static inline int g4_fill_i32(long long x, long long n, int value, long long stream) {
    g4_fill_i32_kernel<<<g4::grid_for(n, 256), 256, 0, g4::as_stream(stream)>>>((int*) x, n, value);
    return (int) cudaGetLastError();
}

static inline int g4_scale_f32(long long x, long long n, float alpha, long long stream) {
    g4_scale_f32_kernel<<<g4::grid_for(n, 256), 256, 0, g4::as_stream(stream)>>>((float*) x, n, alpha);
    return (int) cudaGetLastError();
}

static inline int g4_scale_bf16(long long x, long long n, float alpha, long long stream) {
    g4_scale_bf16_kernel<<<g4::grid_for(n, 256), 256, 0, g4::as_stream(stream)>>>((__nv_bfloat16*) x, n, alpha);
    return (int) cudaGetLastError();
}
