// RMSNorm forward and backward over rows of [N, D]: x and out/dx fp32 or bf16; weight fp32 or bf16 (widened exactly);
// rstd, dWeight fp32.
//   forward:  rstd = 1 / sqrt(mean(x^2) + eps);  out = (x * rstd) * w
//   backward: g = dOut * w;  dx = rstd * g - x * rstd^3 * mean(g * x);  dWeight += sum_n dOut * x * rstd
// Row sums are taken in float64 (as CpuBackend does), so rstd and dx agree with the CPU to the last fp32 bit or one.
// dWeight is deterministic without atomics: pass 1 writes float64 partial column sums per chunk of CHUNK rows, in row
// order; pass 2 adds each column's partials in chunk order and adds the total, rounded once, to dWeight.
#include "common.cuh"

namespace {

constexpr int CHUNK = 32;  // rows per dWeight partial (a constant: the reduction order never depends on the GPU)
constexpr int MAX_C = 4;   // columns per thread in the fused backward: D <= 4096 is fused (C = 8 spills at 1024 threads)

int threads_for(int d) {  // a multiple of 32, covering d with at most MAX_C columns per thread
    int t = (d + MAX_C - 1) / MAX_C;
    t = (t + 31) / 32 * 32;
    return t < 32 ? 32 : (t > 1024 ? 1024 : t);
}

template <typename T, typename W>
__global__ void forward_kernel(T* out, float* rstd, const T* x, const W* w, int d, float eps) {
    const long long base = (long long) blockIdx.x * d;
    double ss = 0;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        double f = g4::to_f32(x[base + j]);
        ss += f * f;
    }
    ss = g4::block_sum(ss);
    const float rs = (float) (1.0 / sqrt(ss / d + (double) eps));
    if (threadIdx.x == 0) rstd[blockIdx.x] = rs;
    for (int j = threadIdx.x; j < d; j += blockDim.x)
        out[base + j] = g4::from_f32<T>(__fmul_rn(__fmul_rn(g4::to_f32(x[base + j]), rs), g4::to_f32(w[j])));
}

// Elements a thread moves at once in the vector forward: 16 bytes of the wider of x and w (8 bf16, or 4 when either
// is fp32: then the bf16 side moves 8 bytes, and every warp request still fills its sectors).
template <typename T, typename W>
__host__ __device__ constexpr int vec_elems() { return 16 / (int) (sizeof(T) > sizeof(W) ? sizeof(T) : sizeof(W)); }

// The forward with x, out and w 16-byte aligned and d a multiple of vec_elems, at most P vectors a thread, R rows a
// block: each thread keeps its vectors of x in registers, so x is read once, in 8- or 16-byte requests (forward_kernel
// reads it twice, 2 or 4 bytes a lane). The R rows' loads and the weight's are issued together and their sums reduced
// in one block_sum_n, so that a block keeps R rows in flight and waits for the weight while its rows arrive (one row a
// block, the first GPU run found the forward at 67% of the copy bandwidth: each block's load, reduction, weight load
// and store in sequence). The same per-element math; each row's float64 sum of squares in the same order for any R
// (rstd within an ulp of forward_kernel's; bit-identical across R).
template <typename T, typename W, int P, int R>
__global__ void __launch_bounds__(256, R == 1 ? 1 : 2) forward_vec_kernel(T* out, float* rstd, const T* x, const W* w, int n, int d, float eps) {
    constexpr int N = vec_elems<T, W>();
    const int packs = d / N, r0 = blockIdx.x * R;
    g4::Vec<T, N> xv[R][P];
    g4::Vec<W, N> wv[P];
    double ss[R];
#pragma unroll
    for (int i = 0; i < R; i++) {
        if (r0 + i >= n) continue;
        const long long base = (long long) (r0 + i) * d;
#pragma unroll
        for (int k = 0; k < P; k++) {
            const int p = threadIdx.x + k * blockDim.x;
            if (p < packs) xv[i][k] = g4::load_vec<N>(x + base + (long long) p * N);
        }
    }
    if constexpr (R > 1) {  // one row a block loads w after its sum (x and w at once need up to 156 registers)
#pragma unroll
        for (int k = 0; k < P; k++) {
            const int p = threadIdx.x + k * blockDim.x;
            if (p < packs) wv[k] = g4::load_vec<N>(w + p * N);
        }
    }
#pragma unroll
    for (int i = 0; i < R; i++) {
        ss[i] = 0;
        if (r0 + i >= n) continue;
#pragma unroll
        for (int k = 0; k < P; k++) {
            const int p = threadIdx.x + k * blockDim.x;
            if (p < packs) {
#pragma unroll
                for (int j = 0; j < N; j++) {
                    const double f = g4::to_f32(xv[i][k].v[j]);
                    ss[i] += f * f;
                }
            }
        }
    }
    g4::block_sum_n<R>(ss);
#pragma unroll
    for (int i = 0; i < R; i++) {
        if (r0 + i >= n) continue;
        const long long base = (long long) (r0 + i) * d;
        const float rs = (float) (1.0 / sqrt(ss[i] / d + (double) eps));
        if (threadIdx.x == 0) rstd[r0 + i] = rs;
#pragma unroll
        for (int k = 0; k < P; k++) {
            const int p = threadIdx.x + k * blockDim.x;
            if (p < packs) {
                if constexpr (R == 1) wv[k] = g4::load_vec<N>(w + p * N);
                g4::Vec<T, N> y;
#pragma unroll
                for (int j = 0; j < N; j++)
                    y.v[j] = g4::from_f32<T>(__fmul_rn(__fmul_rn(g4::to_f32(xv[i][k].v[j]), rs), g4::to_f32(wv[k].v[j])));
                g4::store_vec(out + base + (long long) p * N, y);
            }
        }
    }
}

// Rows a block of the vector forward takes at once: 4 bf16 rows (2 fp32) where their x fits in 128 bytes a thread
// (32 registers: up to 4 vectors of 4 elements, 2 of 8) and that still makes at least 512 blocks (about 4 an SM on
// 132 SMs, so that every SM has rows to read); one otherwise (a decode step's few hundred rows keep a block a row).
template <typename T>
constexpr int FWD_ROWS = sizeof(T) == 2 ? 4 : 2;

template <typename T, typename W, int P>
void launch_forward_vec(int n, int threads, cudaStream_t st, T* o, float* r, const T* x, const W* w, int d, float eps) {
    constexpr int R = FWD_ROWS<T>;
    if constexpr (R * P * vec_elems<T, W>() * sizeof(T) <= 128) {
        const int groups = (n - 1) / R + 1;  // (n > 0; n + R - 1 could pass INT_MAX)
        if (groups >= 512) {
            forward_vec_kernel<T, W, P, R><<<groups, threads, 0, st>>>(o, r, x, w, n, d, eps);
            return;
        }
    }
    forward_vec_kernel<T, W, P, 1><<<n, threads, 0, st>>>(o, r, x, w, n, d, eps);
}

// dx for one row, given its values: float64 as in the CPU.
__device__ inline float dx_of(float dy, float w, float x, double rs, double c) {
    return (float) (rs * ((double) dy * w) - (double) x * c);
}

// Fused backward: block b owns rows [b*CHUNK, b*CHUNK + CHUNK); thread t owns columns t + k*blockDim (k < C), keeps
// dOut and x of them in registers for the row (w is re-read: L1 hits), and accumulates its columns' dWeight partial over the block's rows.
template <typename T, typename W, int C>
__global__ void __launch_bounds__(1024) backward_fused_kernel(T* dx, double* partial, const T* dout, const T* x, const W* w,
                                      const float* rstd, int n, int d) {
    double acc[C];
#pragma unroll
    for (int k = 0; k < C; k++) acc[k] = 0;
    const int r0 = blockIdx.x * CHUNK, r1 = min(n, r0 + CHUNK);
    for (int r = r0; r < r1; r++) {
        const long long base = (long long) r * d;
        const double rs = rstd[r];  // (loaded with the row: after block_sum's barrier its load would wait alone)
        float dy[C], xv[C];
        double dot = 0;
#pragma unroll
        for (int k = 0; k < C; k++) {
            int j = threadIdx.x + k * blockDim.x;
            dy[k] = j < d ? g4::to_f32(dout[base + j]) : 0.f;
            xv[k] = j < d ? g4::to_f32(x[base + j]) : 0.f;
            dot += (double) dy[k] * (j < d ? g4::to_f32(w[j]) : 0.f) * xv[k];
        }
        dot = g4::block_sum(dot);
        const double c = rs * rs * rs * dot / d;
#pragma unroll
        for (int k = 0; k < C; k++) {
            int j = threadIdx.x + k * blockDim.x;
            if (j < d) {
                dx[base + j] = g4::from_f32<T>(dx_of(dy[k], g4::to_f32(w[j]), xv[k], rs, c));
                acc[k] += (double) dy[k] * xv[k] * (float) rs;
            }
        }
    }
#pragma unroll
    for (int k = 0; k < C; k++) {
        int j = threadIdx.x + k * blockDim.x;
        if (j < d) partial[(long long) blockIdx.x * d + j] = acc[k];
    }
}

// The fused backward with vectors (dx, dOut, x, w 16-byte aligned, d a multiple of NV = vec_elems): thread t owns
// the NV columns of vectors t + k * blockDim (k < P), so its loads and stores move NV elements at once (8 or 16 bytes
// of bf16) where backward_fused_kernel moves one. Per column the same math and the same dWeight partial (its rows in
// order); the row's float64 dot in another order. At most 512 threads (8 float64 partials, 8 columns of inputs and
// the unpacked values need more than the 64 registers a thread of a 1024-thread block may have): D <= 4096.
// Rows go R at a time (R = 4 for bf16, 2 for fp32 inputs): their loads are issued together and their dots reduced in
// one block_sum_n, so R rows of dOut and x are in flight. One row at a time, the first GPU run (H200, 4096 x 4096
// bf16) found the kernel latency-bound: 128 blocks (0.97 waves, 25% occupancy), 15 cycles per issued instruction,
// DRAM 24% busy, 79.5 us. Results are bit-identical to one row at a time (the same sums in the same order).
template <typename T, typename W, int P>
__global__ void __launch_bounds__(512) backward_fused_vec_kernel(T* dx, double* partial, const T* dout, const T* x,
                                                                  const W* w, const float* rstd, int n, int d) {
    constexpr int NV = vec_elems<T, W>();
    constexpr int R = sizeof(T) == 2 ? 4 : 2;
    const int vecs = d / NV;
    double acc[P][NV];
#pragma unroll
    for (int k = 0; k < P; k++)
#pragma unroll
        for (int e = 0; e < NV; e++) acc[k][e] = 0;
    g4::Vec<W, NV> wv[P];
#pragma unroll
    for (int k = 0; k < P; k++) {
        const int q = threadIdx.x + k * blockDim.x;
        if (q < vecs) wv[k] = g4::load_vec<NV>(w + q * NV);
    }
    const int r0 = blockIdx.x * CHUNK, r1 = min(n, r0 + CHUNK);
    for (int r = r0; r < r1; r += R) {
        g4::Vec<T, NV> dy[R][P], xv[R][P];
        double dot[R];
        // the rows' rstd, loaded with the rows by R threads (into a register: a shared store here would hold the warp's
        // row loads behind it) and passed on through shared memory by the reduction's barriers (after them its load
        // would wait alone; in registers for the whole group it spills); two sets, by the group's parity, so that a set
        // is rewritten only after the barriers of the group between
        __shared__ float rsv[2][R];
        const int par = ((r - r0) / R) & 1;
        const bool loads_rs = (int) threadIdx.x < R && r + (int) threadIdx.x < r1;
        const float rs_own = loads_rs ? rstd[r + threadIdx.x] : 0.f;
#pragma unroll
        for (int i = 0; i < R; i++) {
            dot[i] = 0;
            if (r + i >= r1) continue;
            const long long base = (long long) (r + i) * d;
#pragma unroll
            for (int k = 0; k < P; k++) {
                const int q = threadIdx.x + k * blockDim.x;
                if (q < vecs) {
                    dy[i][k] = g4::load_vec<NV>(dout + base + (long long) q * NV);
                    xv[i][k] = g4::load_vec<NV>(x + base + (long long) q * NV);
                }
            }
        }
#pragma unroll
        for (int i = 0; i < R; i++) {
            if (r + i >= r1) continue;
#pragma unroll
            for (int k = 0; k < P; k++) {
                const int q = threadIdx.x + k * blockDim.x;
                if (q < vecs) {
#pragma unroll
                    for (int e = 0; e < NV; e++)
                        dot[i] += (double) g4::to_f32(dy[i][k].v[e]) * g4::to_f32(wv[k].v[e]) * g4::to_f32(xv[i][k].v[e]);
                }
            }
        }
        if (loads_rs) rsv[par][threadIdx.x] = rs_own;
        g4::block_sum_n<R>(dot);
#pragma unroll
        for (int i = 0; i < R; i++) {
            if (r + i >= r1) continue;
            const long long base = (long long) (r + i) * d;
            const double rs = rsv[par][i];
            const double c = rs * rs * rs * dot[i] / d;
#pragma unroll
            for (int k = 0; k < P; k++) {
                const int q = threadIdx.x + k * blockDim.x;
                if (q < vecs) {
                    g4::Vec<T, NV> o;
#pragma unroll
                    for (int e = 0; e < NV; e++) {
                        const float fy = g4::to_f32(dy[i][k].v[e]), fx = g4::to_f32(xv[i][k].v[e]);
                        o.v[e] = g4::from_f32<T>(dx_of(fy, g4::to_f32(wv[k].v[e]), fx, rs, c));
                        acc[k][e] += (double) fy * fx * (float) rs;
                    }
                    g4::store_vec(dx + base + (long long) q * NV, o);
                }
            }
        }
    }
#pragma unroll
    for (int k = 0; k < P; k++) {
        const int q = threadIdx.x + k * blockDim.x;
        if (q < vecs) {
            double* dst = partial + (long long) blockIdx.x * d + (long long) q * NV;
#pragma unroll
            for (int e = 0; e < NV; e += 2)
                *reinterpret_cast<double2*>(dst + e) = make_double2(acc[k][e], acc[k][e + 1]);
        }
    }
}

// Wide rows (D > 1024 * MAX_C = 4096): dx one row per block (two passes over the row), partials one column per thread.
template <typename T, typename W>
__global__ void backward_dx_kernel(T* dx, const T* dout, const T* x, const W* w, const float* rstd, int d) {
    const long long base = (long long) blockIdx.x * d;
    double dot = 0;
    for (int j = threadIdx.x; j < d; j += blockDim.x)
        dot += (double) g4::to_f32(dout[base + j]) * g4::to_f32(w[j]) * g4::to_f32(x[base + j]);
    dot = g4::block_sum(dot);
    const double rs = rstd[blockIdx.x];
    const double c = rs * rs * rs * dot / d;
    for (int j = threadIdx.x; j < d; j += blockDim.x)
        dx[base + j] = g4::from_f32<T>(dx_of(g4::to_f32(dout[base + j]), g4::to_f32(w[j]), g4::to_f32(x[base + j]), rs, c));
}

// Block (chunk, column block): the chunks in grid.x (2^31 - 1 of them), the columns in grid.y (65535 blocks of 256:
// D up to 16.7M); chunks in grid.y stopped at 65535 x 32 = 2.1M rows.
template <typename T>
__global__ void backward_partial_kernel(double* partial, const T* dout, const T* x, const float* rstd, int n, int d) {
    const int j = blockIdx.y * blockDim.x + threadIdx.x, chunk = blockIdx.x;
    if (j >= d) return;
    double acc = 0;
    for (int r = chunk * CHUNK; r < min(n, chunk * CHUNK + CHUNK); r++)
        acc += (double) g4::to_f32(dout[(long long) r * d + j]) * g4::to_f32(x[(long long) r * d + j]) * rstd[r];
    partial[(long long) chunk * d + j] = acc;
}

__global__ void dweight_kernel(float* dw, const double* partial, int chunks, int d) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= d) return;
    double acc = 0;
    // the chunks in order (the sum's order is the contract), but 8 loads in flight: the first GPU run found this
    // kernel at 16 blocks for d = 4096 waiting on one load at a time (10 us for 4 MB)
#pragma unroll 8
    for (int b = 0; b < chunks; b++) acc += partial[(long long) b * d + j];
    dw[j] = __fadd_rn(dw[j], (float) acc);
}

template <typename T, typename W>
int forward(g4_ptr out, g4_ptr rstd, g4_ptr x, g4_ptr w, int n, int d, float eps, g4_stream s) {
    if (n <= 0) return 0;
    int threads = d >= 2048 ? 256 : (d >= 256 ? 128 : 32);
    T* o = reinterpret_cast<T*>(out);
    float* r = reinterpret_cast<float*>(rstd);
    const T* xp = reinterpret_cast<const T*>(x);
    const W* wp = reinterpret_cast<const W*>(w);
    cudaStream_t st = g4::as_stream(s);
    constexpr int N = vec_elems<T, W>();
    const int per = (d / N + threads - 1) / threads;  // vectors a thread
    if (d % N == 0 && g4::aligned16(out) && g4::aligned16(x) && g4::aligned16(w) && per <= 8) {
        if (per <= 1) launch_forward_vec<T, W, 1>(n, threads, st, o, r, xp, wp, d, eps);
        else if (per <= 2) launch_forward_vec<T, W, 2>(n, threads, st, o, r, xp, wp, d, eps);
        else if (per <= 4) launch_forward_vec<T, W, 4>(n, threads, st, o, r, xp, wp, d, eps);
        else launch_forward_vec<T, W, 8>(n, threads, st, o, r, xp, wp, d, eps);
    } else {
        forward_kernel<T, W><<<n, threads, 0, st>>>(o, r, xp, wp, d, eps);
    }
    return g4::launched();
}

template <typename T, typename W, int C>
void launch_fused(int chunks, int threads, cudaStream_t st, T* dx, double* part, const T* dy, const T* x, const W* w,
                  const float* rs, int n, int d) {
    backward_fused_kernel<T, W, C><<<chunks, threads, 0, st>>>(dx, part, dy, x, w, rs, n, d);
}

template <typename T, typename W>
int backward(g4_ptr dx, g4_ptr dw, g4_ptr dout, g4_ptr x, g4_ptr w, g4_ptr rstd, int n, int d, g4_ptr ws,
             long long ws_bytes, g4_stream s) {
    if (n <= 0 || d <= 0) return 0;
    const int chunks = (n + CHUNK - 1) / CHUNK;
    if (ws_bytes < (long long) chunks * d * (long long) sizeof(double)) return (int) cudaErrorInvalidValue;
    cudaStream_t st = g4::as_stream(s);
    double* part = reinterpret_cast<double*>(ws);
    T* DX = reinterpret_cast<T*>(dx);
    const T *DY = reinterpret_cast<const T*>(dout), *X = reinterpret_cast<const T*>(x);
    const W* WT = reinterpret_cast<const W*>(w);
    const float* RS = reinterpret_cast<const float*>(rstd);
    constexpr int NV = vec_elems<T, W>();
    // the vector path: 8 columns a thread (one vector of 8 bf16, or two of 4), at most 512 threads
    constexpr int PV = 8 / NV;
    const int vecs = d / NV, vthreads = ((vecs + PV - 1) / PV + 31) / 32 * 32;
    const bool vec = d % NV == 0 && vthreads <= 512 && g4::aligned16(dx) && g4::aligned16(dout) && g4::aligned16(x) &&
                     g4::aligned16(w) && g4::aligned16(ws);
    const int threads = threads_for(d);
    const int c = (d + threads - 1) / threads;
    if (vec) backward_fused_vec_kernel<T, W, PV><<<chunks, vthreads, 0, st>>>(DX, part, DY, X, WT, RS, n, d);
    else if (c <= 1) launch_fused<T, W, 1>(chunks, threads, st, DX, part, DY, X, WT, RS, n, d);
    else if (c <= 2) launch_fused<T, W, 2>(chunks, threads, st, DX, part, DY, X, WT, RS, n, d);
    else if (c <= MAX_C) launch_fused<T, W, MAX_C>(chunks, threads, st, DX, part, DY, X, WT, RS, n, d);
    else {
        // partials first: dx may alias dOut or x
        if ((d + 255) / 256 > 65535) return (int) cudaErrorInvalidValue;  // (D past 16.7M; CudaBackend refuses it first)
        backward_partial_kernel<T><<<dim3(chunks, (d + 255) / 256), 256, 0, st>>>(part, DY, X, RS, n, d);
        int e = g4::launched();
        if (e != 0) return e;
        backward_dx_kernel<T, W><<<n, 1024, 0, st>>>(DX, DY, X, WT, RS, d);
    }
    int e = g4::launched();
    if (e != 0) return e;
    dweight_kernel<<<(d + 63) / 64, 64, 0, st>>>(reinterpret_cast<float*>(dw), part, chunks, d);
    return g4::launched();
}

}  // namespace

extern "C" int g4_rmsnorm(int dtype, int w_dtype, g4_ptr out, g4_ptr rstd, g4_ptr x, g4_ptr weight, int n, int d,
                          float eps, g4_stream s) {
    if (dtype == G4_BF16)
        return w_dtype == G4_BF16 ? forward<__nv_bfloat16, __nv_bfloat16>(out, rstd, x, weight, n, d, eps, s)
                                  : forward<__nv_bfloat16, float>(out, rstd, x, weight, n, d, eps, s);
    return w_dtype == G4_BF16 ? forward<float, __nv_bfloat16>(out, rstd, x, weight, n, d, eps, s)
                              : forward<float, float>(out, rstd, x, weight, n, d, eps, s);
}

extern "C" int g4_rmsnorm_backward_workspace(int n, int d, long long* bytes) {
    *bytes = (long long) ((n + CHUNK - 1) / CHUNK) * d * (long long) sizeof(double);
    return 0;
}

extern "C" int g4_rmsnorm_backward(int dtype, int w_dtype, g4_ptr dx, g4_ptr dweight, g4_ptr dout, g4_ptr x,
                                   g4_ptr weight, g4_ptr rstd, int n, int d, g4_ptr ws, long long ws_bytes, g4_stream s) {
    if (dtype == G4_BF16)
        return w_dtype == G4_BF16
                ? backward<__nv_bfloat16, __nv_bfloat16>(dx, dweight, dout, x, weight, rstd, n, d, ws, ws_bytes, s)
                : backward<__nv_bfloat16, float>(dx, dweight, dout, x, weight, rstd, n, d, ws, ws_bytes, s);
    return w_dtype == G4_BF16 ? backward<float, __nv_bfloat16>(dx, dweight, dout, x, weight, rstd, n, d, ws, ws_bytes, s)
                              : backward<float, float>(dx, dweight, dout, x, weight, rstd, n, d, ws, ws_bytes, s);
}
