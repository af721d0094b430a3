// Shared helpers for the grpo4j kernels: launch geometry and bf16 conversions.
#pragma once
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <stdint.h>

namespace g4 {

// Grid for a grid-stride loop over n elements: enough blocks to fill the GPU, never more than needed.
static inline dim3 grid_for(long long n, int threads) {
    long long blocks = (n + threads - 1) / threads;
    if (blocks > 65535LL * 8) blocks = 65535LL * 8;
    if (blocks < 1) blocks = 1;
    return dim3((unsigned) blocks);
}

static inline cudaStream_t as_stream(long long s) { return reinterpret_cast<cudaStream_t>(s); }

}  // namespace g4
