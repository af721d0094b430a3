// Embedding lookup and its deterministic backward.
//   forward:  out[t, :] = table[ids[t], :]                       (a row copy in 16-byte packs when aligned)
//   backward: dTable[r, :] += sum over tokens t with ids[t] = r of dOut[t, :], in token order
// gatherTokens: ids[i] = src[index[i]] where index[i] >= 0 (the decode step's tokens taken from the previous step's
// sampled ones on the device, docs/kernels.md "Pipelined decode"); rows with index < 0 keep their value.
// The backward never uses atomics whose order varies: token indices are stably sorted by id (CUB radix sort), then
// one block per distinct id sums that id's rows in token order, starting from dTable's old value. fp32 adds in the
// same order as CpuBackend.embeddingBackward, so the two are bit-identical. Out-of-range ids are skipped and reported
// through the device error flag (cuda/common.cuh).
#include <cub/cub.cuh>

#include "common.cuh"

namespace {

template <typename T>
__global__ void gather_kernel(T* out, const T* table, const int* ids, int n, int d, int v, bool vec, int* flag, int op) {
    const int t = blockIdx.x;
    const int id = ids[t];
    if (id < 0 || id >= v) {
        if (threadIdx.x == 0) g4::report(flag, op, t, id, v);
        return;
    }
    const T* src = table + (long long) id * d;
    T* dst = out + (long long) t * d;
    constexpr int N = g4::Pack<T>::N, U = 4;
    const int packs = vec ? d / N : 0;
    // U packs a thread loaded before any is stored: the compiler may not move a load above a store that might alias it,
    // so one pack at a time kept a single 16-byte load in flight per thread (the first GPU run: 73% of the copy
    // bandwidth at 4096 x 4096 bf16, 4 packs a thread). A bf16 row of 4096 is one trip of 128 threads.
    for (int q0 = threadIdx.x; q0 < packs; q0 += U * blockDim.x) {
        g4::Pack<T> p[U];
#pragma unroll
        for (int u = 0; u < U; u++)
            if (q0 + u * (int) blockDim.x < packs) p[u] = g4::load_pack(src + (q0 + u * blockDim.x) * N);
#pragma unroll
        for (int u = 0; u < U; u++)
            if (q0 + u * (int) blockDim.x < packs) g4::store_pack(dst + (q0 + u * blockDim.x) * N, p[u]);
    }
    for (int j = packs * N + threadIdx.x; j < d; j += blockDim.x) dst[j] = src[j];
}

__global__ void gather_tokens_kernel(int* ids, const int* src, const int* index, int n, int m, int* flag, int op) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const int k = index[i];
    if (k < 0) return;
    if (k >= m) {
        g4::report(flag, op, i, k, m);
        return;
    }
    ids[i] = src[k];
}

__global__ void keys_kernel(int* keys, int* vals, const int* ids, int n, int v, int* flag, int op) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n) return;
    int id = ids[t];
    if (id < 0 || id >= v) {
        g4::report(flag, op, t, id, v);
        id = v;  // sentinel: sorts last, skipped below
    }
    keys[t] = id;
    vals[t] = t;
}

// The id whose run of sorted positions starts at i, its end in *end; -1 when i is inside a run, or the id is the
// sentinel v (an out-of-range id, reported when the keys were made).
__device__ inline int run_at(const int* keys, int i, int n, int v, int* end) {
    const int key = keys[i];
    if (key >= v || (i > 0 && keys[i - 1] == key)) return -1;
    int e = i + 1;
    while (e < n && keys[e] == key) e++;
    *end = e;
    return key;
}

// One block per sorted position; only the first position of each id's run does work.
template <typename T>
__global__ void segment_sum_kernel(float* dtable, const T* dout, const int* keys, const int* vals, int n, int d, int v) {
    const int i = blockIdx.x;
    int end;
    const int key = run_at(keys, i, n, v, &end);
    if (key < 0) return;
    float* row = dtable + (long long) key * d;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float acc = row[j];
        for (int q = i; q < end; q++) acc = __fadd_rn(acc, g4::to_f32(dout[(long long) vals[q] * d + j]));
        row[j] = acc;
    }
}

// The same with 4 columns a thread (a float4 of dTable, 8 or 16 bytes of dOut) when d % 4 == 0 and both are 16- and
// 8-byte aligned: the scalar kernel made 16 dependent passes a thread over 2-byte loads (the first GPU run: 54 us for
// 4096 tokens x 4096, 45 cycles per issued instruction, DRAM 55% busy). Per column the same adds in the same order.
template <typename T>
__global__ void segment_sum_vec_kernel(float* dtable, const T* dout, const int* keys, const int* vals, int n, int d, int v) {
    const int i = blockIdx.x;
    int end;
    const int key = run_at(keys, i, n, v, &end);
    if (key < 0) return;
    float* row = dtable + (long long) key * d;
    for (int j = threadIdx.x * 4; j < d; j += blockDim.x * 4) {
        g4::Vec<float, 4> acc = g4::load_vec<4>(row + j);
        for (int q = i; q < end; q++) {
            const g4::Vec<T, 4> g = g4::load_vec<4>(dout + (long long) vals[q] * d + j);
#pragma unroll
            for (int e = 0; e < 4; e++) acc.v[e] = __fadd_rn(acc.v[e], g4::to_f32(g.v[e]));
        }
        g4::store_vec(row + j, acc);
    }
}

// Token counts up to which the vector backward finds each id's tokens by scanning the ids instead of sorting them.
constexpr int SCAN_MAX_TOKENS = 8192;

// The vector backward without a sort (n <= SCAN_MAX_TOKENS; d % 4 == 0, aligned as segment_sum_vec_kernel's, at most
// P packs of 4 columns a thread): block t owns token t. It loads its dTable row and its own dOut row at once, then
// scans the ids while they arrive: if an earlier token has the same id, that token's block sums this one and the block
// stops; otherwise it adds its own row and, in token order, the rows of the later tokens with its id, each warp finding
// them 128 ids at a time by ballots. The same fp32 adds in the same order as segment_sum_vec_kernel after the stable
// sort (the old value, then the id's tokens in token order), so the same bits. A block of a repeated id's later
// token has loaded the row (and its own dOut row) before it finds it is not the first: it discards both (the owner
// may be writing the row meanwhile; the value is never used), a wasted read a repeat, the price of starting every
// block's loads before its scan where ids are distinct. Each block reads all n ids (L1 hits
// after the first block on an SM: 32 KB at 8192 tokens); the sort it replaces was two launches and a single-block CUB
// radix sort (the first GPU run: 2.3 + 8.5 us of 73 us at 4096 tokens, besides the gaps between launches).
template <typename T, int P>
__global__ void __launch_bounds__(256, P <= 4 ? 4 : 2) scan_sum_vec_kernel(float* dtable, const T* dout, const int* ids, int n, int d,
                                                           int v, int* flag, int op) {
    const int t = blockIdx.x, id = ids[t];
    if (id < 0 || id >= v) {  // block-uniform: skipped and reported, as keys_kernel does
        if (threadIdx.x == 0) g4::report(flag, op, t, id, v);
        return;
    }
    float* row = dtable + (long long) id * d;
    const T* own = dout + (long long) t * d;
    g4::Vec<float, 4> acc[P];
    g4::Vec<T, 4> g[P];
#pragma unroll
    for (int k = 0; k < P; k++) {
        const int j = (threadIdx.x + k * blockDim.x) * 4;
        if (j < d) {
            acc[k] = g4::load_vec<4>(row + j);
            g[k] = g4::load_vec<4>(own + j);
        }
    }
    bool earlier = false, later = false;
#pragma unroll 4
    for (int q = threadIdx.x; q < n; q += blockDim.x) {
        const bool same = ids[q] == id;
        earlier |= same && q < t;
        later |= same && q > t;
    }
    // the block's OR of both, one barrier (blockDim is a multiple of 32, at most 256)
    __shared__ int warp_any[8];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const unsigned we = __ballot_sync(~0u, earlier), wl = __ballot_sync(~0u, later);
    if (lane == 0) warp_any[warp] = (we != 0 ? 1 : 0) | (wl != 0 ? 2 : 0);
    __syncthreads();
    int any = 0;
    for (int w = 0; w < (int) (blockDim.x >> 5); w++) any |= warp_any[w];
    if (any & 1) return;
#pragma unroll
    for (int k = 0; k < P; k++) {
        const int j = (threadIdx.x + k * blockDim.x) * 4;
        if (j < d) {
#pragma unroll
            for (int e = 0; e < 4; e++) acc[k].v[e] = __fadd_rn(acc[k].v[e], g4::to_f32(g[k].v[e]));
        }
    }
    if (any & 2) {
        // the later tokens with this id, in order: every warp takes the same 128 ids a window (4 loads in flight a
        // lane), so the masks are warp-uniform and no barrier is needed
        for (int base = t + 1; base < n; base += 128) {
            unsigned m[4];
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const int q = base + u * 32 + lane;
                m[u] = __ballot_sync(~0u, q < n && ids[q] == id);
            }
#pragma unroll
            for (int u = 0; u < 4; u++) {
                while (m[u] != 0) {
                    const int q = base + u * 32 + __ffs(m[u]) - 1;
                    m[u] &= m[u] - 1;
                    const T* src = dout + (long long) q * d;
#pragma unroll
                    for (int k = 0; k < P; k++) {
                        const int j = (threadIdx.x + k * blockDim.x) * 4;
                        if (j < d) {
                            const g4::Vec<T, 4> h = g4::load_vec<4>(src + j);
#pragma unroll
                            for (int e = 0; e < 4; e++) acc[k].v[e] = __fadd_rn(acc[k].v[e], g4::to_f32(h.v[e]));
                        }
                    }
                }
            }
        }
    }
#pragma unroll
    for (int k = 0; k < P; k++) {
        const int j = (threadIdx.x + k * blockDim.x) * 4;
        if (j < d) g4::store_vec(row + j, acc[k]);
    }
}

template <typename T>
bool launch_scan_sum(int packs, int vt, cudaStream_t st, float* dtable, const T* dout, const int* ids, int n, int d,
                     int v, int* flag, int op) {
    const int per = (packs + vt - 1) / vt;
    if (n > SCAN_MAX_TOKENS || per > 8) return false;
    if (per <= 1) scan_sum_vec_kernel<T, 1><<<n, vt, 0, st>>>(dtable, dout, ids, n, d, v, flag, op);
    else if (per <= 2) scan_sum_vec_kernel<T, 2><<<n, vt, 0, st>>>(dtable, dout, ids, n, d, v, flag, op);
    else if (per <= 4) scan_sum_vec_kernel<T, 4><<<n, vt, 0, st>>>(dtable, dout, ids, n, d, v, flag, op);
    else scan_sum_vec_kernel<T, 8><<<n, vt, 0, st>>>(dtable, dout, ids, n, d, v, flag, op);
    return true;
}

int bits_for(int v) {  // radix bits that cover 0..v (v itself is the sentinel)
    int b = 1;
    while (b < 31 && (1LL << b) <= v) b++;
    return b;
}

size_t align256(size_t x) { return (x + 255) & ~(size_t) 255; }

size_t cub_bytes(int n, int v) {
    size_t bytes = 0;
    cub::DeviceRadixSort::SortPairs(nullptr, bytes, (const int*) nullptr, (int*) nullptr, (const int*) nullptr,
                                    (int*) nullptr, n, 0, bits_for(v));
    return bytes;
}

template <typename T>
int gather(g4_ptr out, g4_ptr table, g4_ptr ids, int n, int d, int v, g4_ptr flag, int op, g4_stream s) {
    if (n <= 0 || d <= 0) return 0;
    bool vec = g4::aligned16(out) && g4::aligned16(table) && (d * sizeof(T)) % 16 == 0;
    int threads = d >= 1024 ? 128 : 64;
    gather_kernel<T><<<n, threads, 0, g4::as_stream(s)>>>(reinterpret_cast<T*>(out), reinterpret_cast<const T*>(table),
            reinterpret_cast<const int*>(ids), n, d, v, vec, reinterpret_cast<int*>(flag), op);
    return g4::launched();
}

}  // namespace

extern "C" int g4_embedding(int dtype, g4_ptr out, g4_ptr table, g4_ptr ids, int n, int d, int v, g4_ptr flag, int op,
                            g4_stream s) {
    return dtype == G4_BF16 ? gather<__nv_bfloat16>(out, table, ids, n, d, v, flag, op, s)
                            : gather<float>(out, table, ids, n, d, v, flag, op, s);
}

extern "C" int g4_gather_tokens(g4_ptr ids, g4_ptr src, g4_ptr index, int n, int m, g4_ptr flag, int op, g4_stream s) {
    if (n <= 0) return 0;
    gather_tokens_kernel<<<(n + 255) / 256, 256, 0, g4::as_stream(s)>>>(reinterpret_cast<int*>(ids),
            reinterpret_cast<const int*>(src), reinterpret_cast<const int*>(index), n, m, reinterpret_cast<int*>(flag), op);
    return g4::launched();
}

extern "C" int g4_embedding_backward_workspace(int n, int v, long long* bytes) {
    *bytes = (long long) (4 * align256((size_t) n * sizeof(int)) + cub_bytes(n, v));
    return 0;
}

extern "C" int g4_embedding_backward(g4_ptr dtable, int dout_dtype, g4_ptr dout, g4_ptr ids, int n, int d, int v,
                                     g4_ptr ws, long long ws_bytes, g4_ptr flag, int op, g4_stream s) {
    if (n <= 0 || d <= 0) return 0;
    long long need = 0;
    g4_embedding_backward_workspace(n, v, &need);
    if (ws_bytes < need) return (int) cudaErrorInvalidValue;
    cudaStream_t st = g4::as_stream(s);
    const bool vec = d % 4 == 0 && g4::aligned16(dtable) && (dout & 7) == 0 && (dout_dtype == G4_BF16 || g4::aligned16(dout));
    const int vt = d / 4 >= 256 ? 256 : (d / 4 + 31) / 32 * 32;
    if (vec) {
        float* dt = reinterpret_cast<float*>(dtable);
        const int* id = reinterpret_cast<const int*>(ids);
        int* fl = reinterpret_cast<int*>(flag);
        const bool scanned = dout_dtype == G4_BF16
                ? launch_scan_sum(d / 4, vt, st, dt, reinterpret_cast<const __nv_bfloat16*>(dout), id, n, d, v, fl, op)
                : launch_scan_sum(d / 4, vt, st, dt, reinterpret_cast<const float*>(dout), id, n, d, v, fl, op);
        if (scanned) return g4::launched();
    }
    char* w = reinterpret_cast<char*>(ws);
    size_t a = align256((size_t) n * sizeof(int));
    int *keys_in = (int*) w, *vals_in = (int*) (w + a), *keys_out = (int*) (w + 2 * a), *vals_out = (int*) (w + 3 * a);
    void* temp = w + 4 * a;
    size_t temp_bytes = cub_bytes(n, v);
    keys_kernel<<<(n + 255) / 256, 256, 0, st>>>(keys_in, vals_in, reinterpret_cast<const int*>(ids), n, v,
                                                reinterpret_cast<int*>(flag), op);
    int e = g4::launched();
    if (e != 0) return e;
    e = (int) cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys_in, keys_out, vals_in, vals_out, n, 0, bits_for(v), st);
    if (e != 0) { (void) cudaGetLastError(); return e; }
    int threads = d >= 1024 ? 256 : (d >= 256 ? 128 : 32);
    if (vec) {
        if (dout_dtype == G4_BF16)
            segment_sum_vec_kernel<__nv_bfloat16><<<n, vt, 0, st>>>(reinterpret_cast<float*>(dtable),
                    reinterpret_cast<const __nv_bfloat16*>(dout), keys_out, vals_out, n, d, v);
        else
            segment_sum_vec_kernel<float><<<n, vt, 0, st>>>(reinterpret_cast<float*>(dtable),
                    reinterpret_cast<const float*>(dout), keys_out, vals_out, n, d, v);
        return g4::launched();
    }
    if (dout_dtype == G4_BF16)
        segment_sum_kernel<__nv_bfloat16><<<n, threads, 0, st>>>(reinterpret_cast<float*>(dtable),
                reinterpret_cast<const __nv_bfloat16*>(dout), keys_out, vals_out, n, d, v);
    else
        segment_sum_kernel<float><<<n, threads, 0, st>>>(reinterpret_cast<float*>(dtable),
                reinterpret_cast<const float*>(dout), keys_out, vals_out, n, d, v);
    return g4::launched();
}
