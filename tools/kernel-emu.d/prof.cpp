// tools/kernel-emu --profile: the memory behaviour of each kernel, measured on the emulator, without a GPU: how well its
// global accesses coalesce, how much it re-reads, and its shared-memory bank conflicts (what Nsight Compute's
// memory tables report on a GPU; the second and fifth causes in the tool library's METHOD.md list).
//
// How: the kernels are compiled with -fsanitize=thread (its instrumentation only: a call before every load and store
// with the address and size) and this file provides the entry points the instrumentation calls, instead of
// ThreadSanitizer's runtime. emu.cpp reports cp.async and ldmatrix, which it performs itself. Each access of a CUDA
// thread is recorded with its call site (the return address into the kernel) and how many times that thread has
// passed that site since its warp last met (a collective, a barrier, the block's end). The n-th pass of each lane of
// a warp over one site is one warp-wide request, as it is on the GPU while the warp runs converged; the requests are
// formed and counted when the warp next meets.
//
// What is counted per request:
// - global (anything outside shared memory and the stacks): the 32-byte sectors it touches, against the fewest that
//   could hold its bytes (ceil(bytes / 32)): sectors / ideal is 1 for a coalesced request, up to 8 for 4-byte accesses
//   scattered one per sector.
// - shared (the dynamic arena and the kernels' static __shared__ variables): wavefronts, the number of passes the 32
//   banks of 4 bytes need (the most distinct 4-byte words any one bank must deliver; the same word to several lanes is
//   a broadcast), against ceil(distinct words / 32). ldmatrix is one request per 8x8 matrix (8 rows of 16 bytes).
// - per launch, the footprint: the distinct global sectors read and written. Sector traffic over footprint is the
//   re-read factor: on a GPU re-reads are served by L1 or L2 only while the working set fits there.
// Divergent code is approximated (lanes that pass a site at different times are still grouped by pass number).
#include "emu.h"
#include "prof.h"

#include <dlfcn.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace g4emu {
int cur_thread();                       // emu.cpp: the running CUDA thread's linear index in its block, -1 on the host
bool on_fiber_stack(const void* p);     // emu.cpp: p lies on the running CUDA thread's own stack
const char* cur_kernel();               // emu.cpp
bool emulator_state(const void* p);     // emu.cpp: p lies in the emulator's own bookkeeping
size_t arena_bytes();                   // emu.cpp: the dynamic shared-memory arena's size
}  // namespace g4emu

extern "C" char __data_start[], _end[];

namespace {

using namespace g4emu;  // the spaces (prof.h)
const char* space_name[NSPACE] = {"global load", "global store", "global atomic", "shared load", "shared store",
                                  "shared atomic"};

struct Acc {
    const void* pc;
    uint32_t pass;
    uint8_t sub, lane, space;
    uint32_t bytes;
    uintptr_t addr;
};

struct Tally {
    unsigned long long req = 0, units = 0, ideal = 0, bytes = 0;
    void add(const Tally& o) { req += o.req; units += o.units; ideal += o.ideal; bytes += o.bytes; }
};

struct Kernel {
    long long launches = 0;
    Tally t[NSPACE];
    unsigned long long foot_r = 0, foot_w = 0;  // distinct global sectors per launch, summed over launches
    std::map<std::pair<const void*, int>, Tally> sites;
};

struct PassCount {
    uint32_t epoch, n;
};

constexpr int MAX_THREADS = 1024;
std::vector<Acc> buf[MAX_THREADS / 32];
std::unordered_map<const void*, PassCount> passes[MAX_THREADS];
uint32_t epoch[MAX_THREADS / 32];
std::map<std::string, Kernel> kernels;  // of the current case
std::vector<std::string> order;         // kernels in order of first launch
Kernel* cur = nullptr;
std::unordered_set<uintptr_t> launch_r, launch_w;
uintptr_t main_lo, main_hi;

bool host_stack(uintptr_t a) {
    if (main_hi == 0) {
        pthread_attr_t at;
        void* lo;
        size_t sz;
        pthread_getattr_np(pthread_self(), &at);
        pthread_attr_getstack(&at, &lo, &sz);
        pthread_attr_destroy(&at);
        main_lo = (uintptr_t) lo;
        main_hi = main_lo + sz;
    }
    return a >= main_lo && a < main_hi;
}

// The emulator's own variables that the kernels touch through emu.h's stand-ins (threadIdx and friends, the lanes'
// collective slots): not device memory.
bool emulator_variable(uintptr_t a) {
    auto in = [a](const void* p, size_t n) { return a >= (uintptr_t) p && a < (uintptr_t) p + n; };
    return in(&g4emu::g_thread_idx, sizeof g4emu::g_thread_idx) || in(&g4emu::g_block_idx, sizeof g4emu::g_block_idx) ||
           in(&g4emu::g_block_dim, sizeof g4emu::g_block_dim) || in(&g4emu::g_grid_dim, sizeof g4emu::g_grid_dim) ||
           in(&g4emu::g_arena, sizeof g4emu::g_arena) || in(&g4emu::g_cur, sizeof g4emu::g_cur) ||
           g4emu::emulator_state((const void*) a);
}

void account(const Acc* a, const Acc* e) {
    const int space = a->space;
    Tally r;
    r.req = 1;
    if (space <= GATOM) {
        std::vector<uintptr_t> sectors, starts;
        for (const Acc* p = a; p != e; p++) {
            for (uintptr_t s = p->addr >> 5; s <= (p->addr + p->bytes - 1) >> 5; s++) sectors.push_back(s);
            starts.push_back(p->addr);
        }
        std::sort(sectors.begin(), sectors.end());
        r.units = std::unique(sectors.begin(), sectors.end()) - sectors.begin();
        // bytes: each distinct address once (several lanes reading one word is one read)
        std::vector<std::pair<uintptr_t, uint32_t>> d;
        for (const Acc* p = a; p != e; p++) d.push_back({p->addr, p->bytes});
        std::sort(d.begin(), d.end());
        d.erase(std::unique(d.begin(), d.end()), d.end());
        for (auto& x : d) r.bytes += x.second;
        r.ideal = (r.bytes + 31) / 32;
    } else {
        std::vector<uintptr_t> words;
        for (const Acc* p = a; p != e; p++)
            for (uintptr_t w = p->addr >> 2; w <= (p->addr + p->bytes - 1) >> 2; w++) words.push_back(w);
        std::sort(words.begin(), words.end());
        words.erase(std::unique(words.begin(), words.end()), words.end());
        int per_bank[32] = {0};
        int most = 1;
        for (uintptr_t w : words) most = std::max(most, ++per_bank[w & 31]);
        r.units = most;
        r.ideal = std::max<unsigned long long>(1, (words.size() + 31) / 32);
        r.bytes = 4 * words.size();
    }
    cur->t[space].add(r);
    cur->sites[{a->pc, space}].add(r);
}

std::string self_exe() {
    char b[4096];
    ssize_t n = readlink("/proc/self/exe", b, sizeof b - 1);
    return n > 0 ? std::string(b, (size_t) n) : std::string("/proc/self/exe");
}

// The object file holding code address pc and pc's offset in it, for addr2line; false if dladdr does not know it.
bool object_of(const void* pc, std::string* file, uintptr_t* off) {
    Dl_info info;
    if (pc == nullptr || !dladdr(pc, &info)) return false;
    const char* f = info.dli_fname;
    *file = f && strchr(f, '/') ? std::string(f) : self_exe();
    *off = (uintptr_t) pc - (uintptr_t) info.dli_fbase;
    return true;
}

// The kernel's name with its template arguments (the launch's source text has only their names): addr2line on the
// function, once per kernel, without the anonymous namespace and the parameter list; the source text if that fails.
std::string kernel_name_of(const void* fn, const char* fallback) {
    static std::map<const void*, std::string> cache;
    auto it = cache.find(fn);
    if (it != cache.end()) return it->second;
    std::string name = fallback;
    std::string file;
    uintptr_t off;
    if (object_of(fn, &file, &off)) {
        char cmd[4600];
        snprintf(cmd, sizeof cmd, "addr2line -f -C -e '%s' 0x%lx", file.c_str(), (unsigned long) off);
        if (FILE* p = popen(cmd, "r")) {
            char line[2048];
            if (fgets(line, sizeof line, p) && line[0] != '?') {
                std::string s(line);
                while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
                for (size_t a; (a = s.find("(anonymous namespace)::")) != std::string::npos;) s.erase(a, 23);
                // drop the parameter list: the last top-level '(' (template arguments may hold parentheses too)
                int depth = 0;
                for (size_t i = 0; i < s.size(); i++) {
                    if (s[i] == '<') depth++;
                    else if (s[i] == '>') depth--;
                    else if (s[i] == '(' && depth == 0) { s.resize(i); break; }
                }
                if (s.rfind("void ", 0) == 0) s.erase(0, 5);
                if (!s.empty()) name = s;
            }
            pclose(p);
        }
    }
    cache[fn] = name;
    return name;
}

}  // namespace

namespace g4emu {

void prof_access(const void* pc, int kind, const void* addr, int bytes, int sub) {
    const int t = cur_thread();
    if (t < 0 || cur == nullptr || bytes <= 0) return;
    const uintptr_t a = (uintptr_t) addr;
    int space;
    if (a >= (uintptr_t) g_arena && a < (uintptr_t) g_arena + arena_bytes()) {
        space = SLD + kind;
    } else if (a >= (uintptr_t) __data_start && a < (uintptr_t) _end) {
        if (emulator_variable(a)) return;
        space = SLD + kind;  // a static __shared__ variable (the kernels have no other writable globals)
    } else {
        if (on_fiber_stack(addr) || host_stack(a)) return;  // registers / local memory, or the launch's own plumbing
        space = GLD + kind;
        auto& set = kind == P_LD ? launch_r : launch_w;
        for (uintptr_t s = a >> 5; s <= (a + bytes - 1) >> 5; s++) set.insert(s);
        if (kind == P_ATOM) for (uintptr_t s = a >> 5; s <= (a + bytes - 1) >> 5; s++) launch_r.insert(s);
    }
    const int w = t >> 5;
    PassCount& pcnt = passes[t][pc];
    if (pcnt.epoch != epoch[w]) pcnt = PassCount{epoch[w], 0};
    buf[w].push_back(Acc{pc, pcnt.n++, (uint8_t) sub, (uint8_t) (t & 31), (uint8_t) space, (uint32_t) bytes, a});
}

void prof_flush_warp(int w) {
    std::vector<Acc>& b = buf[w];
    epoch[w]++;
    if (b.empty() || cur == nullptr) { b.clear(); return; }
    std::sort(b.begin(), b.end(), [](const Acc& x, const Acc& y) {
        if (x.pc != y.pc) return x.pc < y.pc;
        if (x.space != y.space) return x.space < y.space;
        if (x.pass != y.pass) return x.pass < y.pass;
        return x.sub < y.sub;
    });
    for (size_t i = 0; i < b.size();) {
        size_t j = i + 1;
        while (j < b.size() && b[j].pc == b[i].pc && b[j].space == b[i].space && b[j].pass == b[i].pass && b[j].sub == b[i].sub) j++;
        account(&b[i], &b[j - 1] + 1);
        i = j;
    }
    b.clear();
}

void prof_flush_all() {
    for (int w = 0; w < MAX_THREADS / 32; w++) prof_flush_warp(w);
}

void prof_launch_begin(const void* fn) {
    std::string name = kernel_name_of(fn, cur_kernel());
    auto it = kernels.find(name);
    if (it == kernels.end()) {
        order.push_back(name);
        it = kernels.emplace(name, Kernel{}).first;
    }
    cur = &it->second;
    cur->launches++;
    launch_r.clear();
    launch_w.clear();
}

void prof_launch_end() {
    if (cur == nullptr) return;
    prof_flush_all();
    cur->foot_r += launch_r.size();
    cur->foot_w += launch_w.size();
    cur = nullptr;
}

bool prof_tally(const char* kernel, int space, unsigned long long out[4]) {
    auto it = kernels.find(kernel);
    if (it == kernels.end() || space < 0 || space >= NSPACE) return false;
    const Tally& t = it->second.t[space];
    out[0] = t.req, out[1] = t.units, out[2] = t.ideal, out[3] = t.bytes;
    return true;
}
bool prof_footprint(const char* kernel, unsigned long long out[3]) {
    auto it = kernels.find(kernel);
    if (it == kernels.end()) return false;
    out[0] = it->second.foot_r, out[1] = it->second.foot_w, out[2] = it->second.t[GLD].units + it->second.t[GATOM].units;
    return true;
}
void prof_reset() {
    kernels.clear();
    order.clear();
}

void prof_report(const char* title) {
    if (kernels.empty()) return;
    auto ratio = [](const Tally& t) { return t.ideal ? (double) t.units / t.ideal : 0.0; };
    printf("  profile %s (requests, sectors or wavefronts per request over the ideal; footprint = distinct sectors per launch)\n", title);
    printf("  %-52s %5s | %9s %5s | %9s %5s | %9s %5s | %9s %9s %6s | %9s %5s | %9s %5s\n", "kernel", "runs", "gld req",
           "x", "gst req", "x", "gatom req", "x", "fp read", "fp write", "reread", "sld req", "x", "sst req", "x");
    for (const std::string& n : order) {
        const Kernel& k = kernels[n];
        std::string shown = n.size() > 52 ? n.substr(0, 49) + "..." : n;
        unsigned long long traffic = k.t[GLD].units + k.t[GATOM].units;
        printf("  %-52s %5lld | %9llu %5.2f | %9llu %5.2f | %9llu %5.2f | %8.1fK %8.1fK %6.2f | %9llu %5.2f | %9llu %5.2f\n",
               shown.c_str(), k.launches, k.t[GLD].req, ratio(k.t[GLD]), k.t[GST].req, ratio(k.t[GST]), k.t[GATOM].req,
               ratio(k.t[GATOM]), k.foot_r * 32 / 1024.0, k.foot_w * 32 / 1024.0,
               k.foot_r ? (double) traffic / k.foot_r : 0.0, k.t[SLD].req, ratio(k.t[SLD]), k.t[SST].req, ratio(k.t[SST]));
    }
    // the sites with the most excess (units beyond the ideal), by source line: one addr2line per object file, at
    // the return address - 1 (inside the call instruction); a line's instantiations and inlined copies are merged
    struct Site {
        std::string kernel;
        const void* pc;
        int space;
        Tally t;
        std::string where = "?";
    };
    std::vector<Site> all;
    for (const std::string& n : order)
        for (const auto& [key, t] : kernels[n].sites)
            if (t.units > t.ideal) all.push_back({n, key.first, key.second, t});
    std::map<std::string, std::vector<size_t>> by_file;
    std::vector<uintptr_t> off(all.size());
    for (size_t i = 0; i < all.size(); i++) {
        std::string file;
        if (object_of(all[i].pc, &file, &off[i])) {
            off[i] -= 1;  // the return address - 1: inside the call instruction
            by_file[file].push_back(i);
        }
    }
    for (auto& [file, idx] : by_file) {
        std::string cmd = "addr2line -i -a -e '" + file + "'";
        char hex[32];
        for (size_t i : idx) {
            snprintf(hex, sizeof hex, " 0x%lx", (unsigned long) off[i]);
            cmd += hex;
        }
        FILE* p = popen(cmd.c_str(), "r");
        if (!p) continue;
        // -a: each address's line, then its frames innermost first; the site shown is the innermost frame in a kernel
        // source (the first that is not the emulator's stand-ins or a CUDA or C++ header)
        char line[1024];
        long cur_i = -1;
        bool chosen = false;
        size_t n = 0;
        while (fgets(line, sizeof line, p)) {
            std::string s(line);
            while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
            if (s.rfind("0x", 0) == 0) {
                cur_i = n < idx.size() ? (long) idx[n++] : -1;
                chosen = false;
                continue;
            }
            if (cur_i < 0 || chosen) continue;
            size_t disc = s.find(" (discriminator");
            if (disc != std::string::npos) s.erase(disc);
            size_t cut = s.rfind('/');
            std::string base = cut == std::string::npos ? s : s.substr(cut + 1);
            bool kernel_source = s.find("/src/") != std::string::npos && base.rfind("emu", 0) != 0;
            if (kernel_source || all[cur_i].where == "?") all[cur_i].where = base;
            chosen = kernel_source;
        }
        pclose(p);
    }
    std::map<std::tuple<std::string, std::string, int>, Tally> merged;
    for (const Site& x : all) merged[{x.where, x.kernel, x.space}].add(x.t);
    std::vector<std::pair<std::tuple<std::string, std::string, int>, Tally>> worst;
    for (const auto& m : merged)
        if ((double) m.second.units > 1.05 * m.second.ideal) worst.push_back(m);
    std::sort(worst.begin(), worst.end(),
              [](const auto& a, const auto& b) { return a.second.units - a.second.ideal > b.second.units - b.second.ideal; });
    if (worst.size() > 12) worst.resize(12);
    if (!worst.empty()) printf("  worst lines (excess = sectors or wavefronts beyond the ideal):\n");
    for (const auto& [key, t] : worst) {
        const std::string& k = std::get<1>(key);
        std::string shown = k.size() > 48 ? k.substr(0, 45) + "..." : k;
        printf("    %-26s %-14s %-48s %9llu req  %6.2f / ideal  (%.1f bytes/req)\n", std::get<0>(key).c_str(),
               space_name[std::get<2>(key)], shown.c_str(), t.req, ratio(t), (double) t.bytes / t.req);
    }
    kernels.clear();
    order.clear();
}

}  // namespace g4emu

// ---- the instrumentation's entry points (what libtsan would provide) ---------------------------------------------

#define G4_PC __builtin_return_address(0)
#define ACCESS(kind, n)                                                                                               \
    extern "C" void __tsan_##kind##n(void* p) { g4emu::prof_access(G4_PC, g4emu::P_##kind##_K, p, n, 0); }           \
    extern "C" void __tsan_unaligned_##kind##n(void* p) { g4emu::prof_access(G4_PC, g4emu::P_##kind##_K, p, n, 0); }
#define P_read_K P_LD
#define P_write_K P_ST
ACCESS(read, 1) ACCESS(read, 2) ACCESS(read, 4) ACCESS(read, 8) ACCESS(read, 16)
ACCESS(write, 1) ACCESS(write, 2) ACCESS(write, 4) ACCESS(write, 8) ACCESS(write, 16)
extern "C" void __tsan_read_range(void* p, unsigned long n) {
    for (unsigned long i = 0; i < n; i += 16) g4emu::prof_access(G4_PC, g4emu::P_LD, (char*) p + i, (int) std::min(16ul, n - i), 0);
}
extern "C" void __tsan_write_range(void* p, unsigned long n) {
    for (unsigned long i = 0; i < n; i += 16) g4emu::prof_access(G4_PC, g4emu::P_ST, (char*) p + i, (int) std::min(16ul, n - i), 0);
}
extern "C" void __tsan_init() {}
extern "C" void __tsan_func_entry(void*) {}
extern "C" void __tsan_func_exit() {}
extern "C" void __tsan_vptr_update(void**, void*) {}
extern "C" void __tsan_vptr_read(void**) {}

// atomics (std::atomic_ref in emu.h's atomicAdd & co.): performed, and counted as atomic accesses (loads as loads)
#define ATOMICS(n, T)                                                                                                  \
    extern "C" T __tsan_atomic##n##_load(const volatile T* a, int) {                                                  \
        g4emu::prof_access(G4_PC, g4emu::P_LD, (const void*) a, sizeof(T), 0);                                        \
        return __atomic_load_n(a, __ATOMIC_RELAXED);                                                                  \
    }                                                                                                                  \
    extern "C" void __tsan_atomic##n##_store(volatile T* a, T v, int) {                                               \
        g4emu::prof_access(G4_PC, g4emu::P_ST, (const void*) a, sizeof(T), 0);                                        \
        __atomic_store_n(a, v, __ATOMIC_RELAXED);                                                                     \
    }                                                                                                                  \
    extern "C" T __tsan_atomic##n##_exchange(volatile T* a, T v, int) {                                               \
        g4emu::prof_access(G4_PC, g4emu::P_ATOM, (const void*) a, sizeof(T), 0);                                      \
        return __atomic_exchange_n(a, v, __ATOMIC_RELAXED);                                                           \
    }                                                                                                                  \
    extern "C" T __tsan_atomic##n##_fetch_add(volatile T* a, T v, int) {                                              \
        g4emu::prof_access(G4_PC, g4emu::P_ATOM, (const void*) a, sizeof(T), 0);                                      \
        return __atomic_fetch_add(a, v, __ATOMIC_RELAXED);                                                            \
    }                                                                                                                  \
    extern "C" T __tsan_atomic##n##_fetch_sub(volatile T* a, T v, int) {                                              \
        g4emu::prof_access(G4_PC, g4emu::P_ATOM, (const void*) a, sizeof(T), 0);                                      \
        return __atomic_fetch_sub(a, v, __ATOMIC_RELAXED);                                                            \
    }                                                                                                                  \
    extern "C" T __tsan_atomic##n##_fetch_and(volatile T* a, T v, int) {                                              \
        g4emu::prof_access(G4_PC, g4emu::P_ATOM, (const void*) a, sizeof(T), 0);                                      \
        return __atomic_fetch_and(a, v, __ATOMIC_RELAXED);                                                            \
    }                                                                                                                  \
    extern "C" T __tsan_atomic##n##_fetch_or(volatile T* a, T v, int) {                                               \
        g4emu::prof_access(G4_PC, g4emu::P_ATOM, (const void*) a, sizeof(T), 0);                                      \
        return __atomic_fetch_or(a, v, __ATOMIC_RELAXED);                                                             \
    }                                                                                                                  \
    extern "C" T __tsan_atomic##n##_fetch_xor(volatile T* a, T v, int) {                                              \
        g4emu::prof_access(G4_PC, g4emu::P_ATOM, (const void*) a, sizeof(T), 0);                                      \
        return __atomic_fetch_xor(a, v, __ATOMIC_RELAXED);                                                            \
    }                                                                                                                  \
    extern "C" int __tsan_atomic##n##_compare_exchange_strong(volatile T* a, T* c, T v, int, int) {                   \
        g4emu::prof_access(G4_PC, g4emu::P_ATOM, (const void*) a, sizeof(T), 0);                                      \
        return __atomic_compare_exchange_n(a, c, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);                       \
    }                                                                                                                  \
    extern "C" int __tsan_atomic##n##_compare_exchange_weak(volatile T* a, T* c, T v, int, int) {                     \
        g4emu::prof_access(G4_PC, g4emu::P_ATOM, (const void*) a, sizeof(T), 0);                                      \
        return __atomic_compare_exchange_n(a, c, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);                       \
    }                                                                                                                  \
    extern "C" T __tsan_atomic##n##_compare_exchange_val(volatile T* a, T c, T v, int, int) {                         \
        g4emu::prof_access(G4_PC, g4emu::P_ATOM, (const void*) a, sizeof(T), 0);                                      \
        __atomic_compare_exchange_n(a, &c, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);                             \
        return c;                                                                                                      \
    }
ATOMICS(8, char)
ATOMICS(16, short)
ATOMICS(32, int)
ATOMICS(64, long)
extern "C" void __tsan_atomic_thread_fence(int) {}
extern "C" void __tsan_atomic_signal_fence(int) {}
