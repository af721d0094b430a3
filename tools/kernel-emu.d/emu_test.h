// tools/kernel-emu's test drivers: each test_*.cpp registers cases that call the real launchers (the extern "C" g4_*
// functions of grpo4j_native.h, compiled from cuda/ by the emulator) on host memory and compare the results with a
// plain reference written in the driver. Device pointers are host pointers here.
#pragma once
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "grpo4j_native.h"

namespace g4emu {
long long stat_blocks();   // blocks emulated so far (emu.cpp)
void set_block_order(const char* spec);  // forward, reverse or a seed: the next launches' block order (emu.cpp)
void set_proxy_check(bool on);  // the fence.proxy.async check (emu.cpp async_view; on by default): off for a big case
long long launches(const char* prefix);  // launches so far of kernels whose source name starts with prefix (emu.cpp)
long long stat_threads();  // threads emulated so far
void set_tma_landing(bool early);  // TMA loads land at their issue (true) or at the wait that needs them (emu.cpp)
void set_sm_count(int sms);  // the device's multiprocessor count as cudaDeviceGetAttribute tells it (0: 132; cudart_emu.cpp)
}  // namespace g4emu

namespace emu_test {

struct Case {
    const char* family;
    const char* name;
    std::function<bool()> run;  // true = pass; prints its own figures
};
std::vector<Case>& registry();
struct Register {
    Register(const char* family, const char* name, std::function<bool()> f) { registry().push_back({family, name, f}); }
};
#define EMU_CASE(family, name) \
    static bool name(); \
    static emu_test::Register reg_##name(family, #name, name); \
    static bool name()

inline g4_ptr P(const void* p) { return (g4_ptr) (uintptr_t) p; }

inline float bf16_round(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }
inline std::vector<__nv_bfloat16> to_bf16(const std::vector<float>& x) {
    std::vector<__nv_bfloat16> y(x.size());
    for (size_t i = 0; i < x.size(); i++) y[i] = __float2bfloat16_rn(x[i]);
    return y;
}
inline std::vector<float> widen(const std::vector<__nv_bfloat16>& x) {
    std::vector<float> y(x.size());
    for (size_t i = 0; i < x.size(); i++) y[i] = __bfloat162float(x[i]);
    return y;
}

// FNV-1a over the bytes of every output a case produced: printed, so that runs under other thread orders, and kernels
// rewritten to compute the same values another way, can be compared bit for bit.
struct Fingerprint {
    uint64_t h = 1469598103934665603ull;
    void add(const void* p, size_t bytes) {
        const unsigned char* c = (const unsigned char*) p;
        for (size_t i = 0; i < bytes; i++) h = (h ^ c[i]) * 1099511628211ull;
    }
    template <typename T> void add(const std::vector<T>& v) { add(v.data(), v.size() * sizeof(T)); }
    // a strided test view (test_membound.cpp's View): its n elements from base + off
    template <typename V> auto add(const V& v) -> decltype((void) v.base, (void) v.off, void()) {
        add(v.base + v.off, v.n * sizeof(*v.base));
    }
};

struct Rng {
    std::mt19937_64 g;
    explicit Rng(uint64_t seed) : g(seed) {}
    double normal() { return std::normal_distribution<double>(0, 1)(g); }
    double uniform() { return std::uniform_real_distribution<double>(0, 1)(g); }
    int below(int n) { return (int) (g() % (uint64_t) n); }
    std::vector<float> normals(size_t n, double sd = 1) {
        std::vector<float> v(n);
        for (auto& x : v) x = (float) (sd * normal());
        return v;
    }
};

// One bf16 ulp at |y| (8 significant bits), 0 at 0: the output's own rounding in the per-element tolerances.
inline double ulp_bf16(double y) {
    double a = fabs(y);
    if (a < 1e-30) return 0;
    int e;
    frexp(a, &e);              // a = m 2^e, m in [0.5, 1)
    return ldexp(1.0, e - 8);
}

}  // namespace emu_test
