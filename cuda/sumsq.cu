// sumSquares: out[0] += sum(x^2), deterministic: pass 1 has a fixed number of blocks (a function of n only) that
// each sum a fixed grid-stride slice in float64 and write one partial; pass 2, one block, sums the partials in a fixed
// tree and adds the total, rounded to fp32, to out[0] (as CpuBackend does: float64 sums, one fp32 rounding).
#include "common.cuh"

namespace {

constexpr int THREADS = 256;
constexpr long long MAX_PARTIALS = 1024;

long long partials_for(long long n) {
    long long blocks = (n + THREADS * 16 - 1) / (THREADS * 16);  // >= 16 elements per thread
    return blocks < 1 ? 1 : (blocks > MAX_PARTIALS ? MAX_PARTIALS : blocks);
}

template <typename T>
__global__ void partial_kernel(double* part, const T* x, long long n, bool vec) {
    constexpr int N = g4::Pack<T>::N;
    const long long stride = gridDim.x * (long long) blockDim.x;
    const long long tid = blockIdx.x * (long long) blockDim.x + threadIdx.x;
    const long long packs = vec ? n / N : 0;
    double acc = 0;
    for (long long q = tid; q < packs; q += stride) {
        g4::Pack<T> p = g4::load_pack(x + q * N);
#pragma unroll
        for (int j = 0; j < N; j++) {
            double f = g4::to_f32(p.v[j]);
            acc += f * f;
        }
    }
    for (long long i = packs * N + tid; i < n; i += stride) {
        double f = g4::to_f32(x[i]);
        acc += f * f;
    }
    double total = g4::block_sum(acc);
    if (threadIdx.x == 0) part[blockIdx.x] = total;
}

__global__ void final_kernel(float* out, const double* part, int count) {
    double acc = 0;
    for (int i = threadIdx.x; i < count; i += blockDim.x) acc += part[i];
    double total = g4::block_sum(acc);
    if (threadIdx.x == 0) out[0] = __fadd_rn(out[0], (float) total);
}

}  // namespace

extern "C" int g4_sum_squares_workspace(long long n, long long* bytes) {
    *bytes = partials_for(n) * (long long) sizeof(double);
    return 0;
}

extern "C" int g4_sum_squares(g4_ptr out, int dtype, g4_ptr x, long long n, g4_ptr ws, long long ws_bytes, g4_stream s) {
    long long blocks = partials_for(n);
    if (ws_bytes < blocks * (long long) sizeof(double)) return (int) cudaErrorInvalidValue;
    cudaStream_t st = g4::as_stream(s);
    double* part = reinterpret_cast<double*>(ws);
    bool vec = g4::aligned16(x);
    if (dtype == G4_BF16)
        partial_kernel<__nv_bfloat16><<<(unsigned) blocks, THREADS, 0, st>>>(part, reinterpret_cast<const __nv_bfloat16*>(x), n, vec);
    else
        partial_kernel<float><<<(unsigned) blocks, THREADS, 0, st>>>(part, reinterpret_cast<const float*>(x), n, vec);
    int e = g4::launched();
    if (e != 0) return e;
    final_kernel<<<1, 1024, 0, st>>>(reinterpret_cast<float*>(out), part, (int) blocks);
    return g4::launched();
}
