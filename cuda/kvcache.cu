// kvAppend: writes the new tokens' keys and values into the paged KV cache.
//   kCache[slot] = k[t], vCache[slot] = v[t] with slot = slots[t] (a cache row = Hkv * D elements; block = slot /
//   blockSize, offset = slot % blockSize is the same flat row index). One block per token, 16-byte packs when aligned.
// A slot outside [0, capacity) is skipped and reported through the error flag.
#include "common.cuh"

namespace {

template <typename T>
__global__ void append_kernel(T* kc, T* vc, const T* k, const T* v, const int* slots, int row, int capacity, bool vec,
                              int* flag, int op) {
    const int t = blockIdx.x;
    const long long src = (long long) t * row;
    constexpr int N = g4::Pack<T>::N;
    const int packs = vec ? row / N : 0;
    // The first trip's k and v before the slot (they do not depend on it; a block's only other wait): their latency and
    // the slot's overlap. Then both loads before either store: the compiler may not move v's load above kc's store
    // (they might alias). The first GPU run found this kernel waiting on memory (97 cycles per issued instruction, DRAM
    // 36% busy).
    int q = threadIdx.x;
    g4::Pack<T> a, b;
    if (q < packs) a = g4::load_pack(k + src + q * N), b = g4::load_pack(v + src + q * N);
    const int slot = slots[t];
    if (slot < 0 || slot >= capacity) {
        if (threadIdx.x == 0) g4::report(flag, op, t, slot, capacity);
        return;
    }
    const long long dst = (long long) slot * row;
    for (; q < packs; q += blockDim.x) {
        if (q != (int) threadIdx.x) a = g4::load_pack(k + src + q * N), b = g4::load_pack(v + src + q * N);
        g4::store_pack(kc + dst + q * N, a);
        g4::store_pack(vc + dst + q * N, b);
    }
    for (int j = packs * N + threadIdx.x; j < row; j += blockDim.x) {
        const T x = k[src + j], y = v[src + j];
        kc[dst + j] = x;
        vc[dst + j] = y;
    }
}

template <typename T>
int append(g4_ptr kc, g4_ptr vc, g4_ptr k, g4_ptr v, g4_ptr slots, int n, int row, int capacity, g4_ptr flag, int op,
           g4_stream s) {
    if (n <= 0 || row <= 0) return 0;
    bool vec = g4::aligned16(kc) && g4::aligned16(vc) && g4::aligned16(k) && g4::aligned16(v) && (row * sizeof(T)) % 16 == 0;
    // a thread per 16-byte pack (or element), 32 to 128 a block: one trip each for the Llama rows (bf16: 64 packs at
    // 8 x 64 = llama-3.2-1b, 128 at 8 x 128), where a fixed 32 gave the 1B's rows two trips with their loads apart
    const int units = vec ? row / g4::Pack<T>::N : row;
    const int threads = units >= 128 ? 128 : (units + 31) / 32 * 32;
    append_kernel<T><<<n, threads, 0, g4::as_stream(s)>>>(reinterpret_cast<T*>(kc), reinterpret_cast<T*>(vc),
            reinterpret_cast<const T*>(k), reinterpret_cast<const T*>(v), reinterpret_cast<const int*>(slots), row,
            capacity, vec, reinterpret_cast<int*>(flag), op);
    return g4::launched();
}

}  // namespace

extern "C" int g4_kv_append(int dtype, g4_ptr kcache, g4_ptr vcache, g4_ptr k, g4_ptr v, g4_ptr slots, int n, int row,
                            int capacity, g4_ptr flag, int op, g4_stream s) {
    return dtype == G4_BF16 ? append<__nv_bfloat16>(kcache, vcache, k, v, slots, n, row, capacity, flag, op, s)
                            : append<float>(kcache, vcache, k, v, slots, n, row, capacity, flag, op, s);
}
