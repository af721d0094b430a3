// tools/kernel-emu's stand-in for the one CUB call the kernels make (cuda/embedding.cu): a stable radix sort of
// (key, value) pairs on bits [begin_bit, end_bit), done on the host. Like CUB, a null temp pointer asks for the
// scratch size (here one byte: the emulator needs none, but the caller's sizing logic runs as on a GPU).
#pragma once
#include <algorithm>
#include <numeric>
#include <vector>

namespace cub {
struct DeviceRadixSort {
    template <typename K, typename V>
    static cudaError_t SortPairs(void* temp, size_t& temp_bytes, const K* keys_in, K* keys_out, const V* vals_in,
                                 V* vals_out, int n, int begin_bit = 0, int end_bit = (int) sizeof(K) * 8,
                                 cudaStream_t stream = 0, bool = false) {
        if (temp == nullptr) {
            temp_bytes = 1;
            return cudaSuccess;
        }
        const unsigned long long mask =
                (end_bit >= 64 ? ~0ull : (1ull << end_bit) - 1) & ~((1ull << begin_bit) - 1);
        // on the stream, as CUB's kernels run: after the work queued before it (deferred streams, G4EMU_ASYNC)
        g4emu::submit(stream, [=]() {
            std::vector<int> idx(n);
            std::iota(idx.begin(), idx.end(), 0);
            std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) {
                return ((unsigned long long) keys_in[a] & mask) < ((unsigned long long) keys_in[b] & mask);
            });
            std::vector<K> k(n);
            std::vector<V> v(n);
            for (int i = 0; i < n; i++) { k[i] = keys_in[idx[i]]; v[i] = vals_in[idx[i]]; }
            std::copy(k.begin(), k.end(), keys_out);
            std::copy(v.begin(), v.end(), vals_out);
        });
        return cudaSuccess;
    }
};
}  // namespace cub
