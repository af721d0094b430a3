// tools/kernel-emu's runtime: the fiber scheduler behind emu.h (one fiber per CUDA thread of a block), warp
// collectives, deferred cp.async, the shared-memory arena and the few CUDA runtime calls the launchers make.
#include "emu.h"

#include <sys/mman.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#else
#define EMU_ASAN 0
#endif

// The race check (tools/kernel-emu --race): the kernels are built with -fsanitize=thread, this file without (its own
// bookkeeping is invisible to ThreadSanitizer) but with G4EMU_TSAN: every CUDA thread is a ThreadSanitizer fiber,
// switched to without synchronization, and the only happens-before edges are the ones CUDA gives: __syncthreads and
// warp collectives (release on arrival, acquire on leaving), block start (after the host's writes and the previous
// block) and block end. So an access to shared memory by two threads of a block with no barrier between them is
// reported as a data race, with both source lines: racecheck's job on a GPU. Blocks of a grid are ordered one after
// another (their shared memory and the fiber stacks are reused), so races between blocks are not looked for.
#ifdef G4EMU_TSAN
#include <sanitizer/tsan_interface.h>
extern "C" void __tsan_read16(void*);  // the instrumentation's own entry points (libtsan)
extern "C" void __tsan_read2(void*);
extern "C" void __tsan_write16(void*);
extern "C" void __tsan_write4(void*);
extern "C" void __tsan_func_entry(void*);
extern "C" void __tsan_func_exit();
#define TSAN(x) x
// This file is not instrumented, so a report would not show which kernel line called into it: each entry point the
// kernels call pushes its call site on the fiber's ThreadSanitizer stack.
struct TsanFrame {
    explicit TsanFrame(void* pc) { __tsan_func_entry(pc); }
    ~TsanFrame() { __tsan_func_exit(); }
};
#define TSAN_CALLER() TsanFrame tsan_frame_(__builtin_return_address(0))
#else
#define TSAN_CALLER()
#define TSAN(x)
#endif

// The memory profile (tools/kernel-emu --profile, prof.cpp): cp.async and ldmatrix, which this file performs, are
// reported to it as accesses of their calling lane; warps are flushed into requests whenever they meet.
#ifdef G4EMU_PROFILE
#include "prof.h"
#define PROF(x) x
#else
#define PROF(x)
#endif

// Saves the callee-saved registers on the current stack, stores its pointer in *save, and continues on stack `to`
// (System V x86-64: rbx, rbp, r12-r15; the return address is on the stack).
extern "C" void g4emu_switch(void** save, void* to);
asm(R"(
    .text
    .globl g4emu_switch
    .type g4emu_switch, @function
g4emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size g4emu_switch, .-g4emu_switch
)");

namespace g4emu {

enum State { READY, AT_BAR, AT_WARP, AT_MBAR, DONE };

struct Pending {
    unsigned dst;
    int bytes;
    unsigned char data[16];
};

struct BulkOp {
    void* dst;
    unsigned src;
    int bytes, type;
    std::vector<unsigned char> data;  // the source at the issue
};

struct Fiber {
    void* sp = nullptr;
    char* stack = nullptr;
    uint3 tid{};
    int lin = 0;
    State state = READY;
    Slot slot{};
    std::vector<Pending> open;
    std::vector<std::vector<Pending>> groups;  // committed, oldest first
    std::vector<BulkOp> bopen;                 // bulk reductions, as open and groups;
    std::vector<std::vector<BulkOp>> bgroups;
    std::vector<BulkOp> bread;                 // and those whose source was waited for, their adds not yet made
    void* fake_stack = nullptr;
    void* tsan = nullptr;  // ThreadSanitizer fiber (race check)
    int wait_named = 0;          // what an AT_MBAR thread waits for (a deadlock's report): a named barrier's id, or
    unsigned wait_mbar = 0;      // an mbarrier's shared byte and the parity it waits on
    int wait_parity = 0;
};

namespace {

constexpr size_t ARENA = 256 * 1024;  // more than any GPU's shared memory per block (227 KiB)
constexpr size_t STACK = 512 * 1024;  // per fiber (AddressSanitizer's frames are large)
constexpr int MAX_THREADS = 1024;
constexpr size_t DEFAULT_SMEM = 48 * 1024;
constexpr size_t MAX_SMEM = 227 * 1024;

struct Warp {
    int arrived = 0;
    int kind = 0;
    unsigned mask = 0;
    int first = 0;     // the lane that arrived first (for messages)
    int expected = 0;  // lanes the collective waits for (counted at the first arrival)
    unsigned gen = 0;  // collectives completed (their parity picks the race check's sync object)
};

alignas(128) unsigned char arena_storage[ARENA];
Fiber fibers[MAX_THREADS];
Warp warps[MAX_THREADS / 32];
int nthreads, nlive, bar_arrived;
void* sched_sp;
const char* kernel_name = "?";
size_t smem_bytes;
const std::function<void()>* body;
std::map<const void*, int> smem_limit;  // cudaFuncSetAttribute(MaxDynamicSharedMemorySize)
thread_local cudaError_t last_error = cudaSuccess;  // per host thread, as CUDA keeps it
const void* main_stack_bottom;
size_t main_stack_size;
long long blocks_run, threads_run;
unsigned bar_gen;  // barriers completed (any block)
#ifdef G4EMU_TSAN
void* tsan_main;
// sync_bar: one per barrier generation's parity. A thread can be at most one barrier ahead of another, so a fast
// thread's release into the next barrier is not acquired by a slow thread leaving this one (one object for every
// barrier would hand it that later release: a false happens-before edge, hiding a race with what the fast thread did
// in between).
// sync_warp: a warp's per collective, by the parity of the warp's collectives completed (as sync_bar: the lane that
// completes one goes on at once and may release into the next before the others have left this one)
char sync_block_start, sync_block_end, sync_bar[2], sync_warp[MAX_THREADS / 32][2];
// one per possible mbarrier (8-byte aligned shared address; their pipelines order a phase's acquires before the next
// phase's releases), then two per named barrier, by the parity of the phase (a warpgroup's arrival on the next phase
// may come before the other's threads have left this one)
char sync_mbar[ARENA / 8 + 32];
#endif

// mbarriers of the running block by shared address (emu.h), and the TMA loads not yet landed on each
struct TmaOp {
    unsigned dst;
    std::vector<unsigned char> image;  // the box as it lands in shared memory (swizzled), read from global at the issue
};
struct MBar {
    int count = 0, pending = 0;
    unsigned phase = 0;
    long long tx = 0;  // bytes expected and not yet landed
    std::vector<TmaOp> ops;
};
std::map<unsigned, MBar> mbars;
MBar named[16];  // named barriers 1-15 (count 0: not used yet in this block); phase and arrivals as an mbarrier's
// Arrivals on mbarriers and named barriers and waits passed so far: a thread that was waiting, went on and waits again
// (on another barrier, or the same one's next phase) has made progress, which its state alone does not show.
long long barrier_events = 0;
bool tma_early = getenv("G4EMU_TMA") != nullptr && !strcmp(getenv("G4EMU_TMA"), "early");

const char* kind_name(int k) {
    switch (k) {
        case K_SHFL: return "a shuffle";
        case K_BALLOT: return "__ballot_sync";
        case K_SYNCWARP: return "__syncwarp";
        case K_LDSM: return "ldmatrix";
        case K_LDSM_T: return "ldmatrix.trans";
        case K_MMA: return "mma.sync";
        case K_WGMMA: return "wgmma (at its wait_group)";
    }
    return "?";
}

// ---- context switches (with AddressSanitizer's fiber annotations) ------------------------------------------------

void to_fiber(Fiber& f) {
    g_cur = &f;
    g_thread_idx = f.tid;
    TSAN(__tsan_switch_to_fiber(f.tsan, __tsan_switch_to_fiber_no_sync));
#if EMU_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, f.stack, STACK);
    g4emu_switch(&sched_sp, f.sp);
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
    g4emu_switch(&sched_sp, f.sp);
#endif
    g_cur = nullptr;
}

void arrived_on_fiber(Fiber& f) {
#if EMU_ASAN
    const void* bottom;
    size_t size;
    __sanitizer_finish_switch_fiber(f.fake_stack, &bottom, &size);
    main_stack_bottom = bottom;
    main_stack_size = size;
#else
    (void) f;
#endif
}

// Back to the scheduler; returns when the scheduler switches to this fiber again.
void yield(bool dying = false) {
    Fiber& f = *g_cur;
#if EMU_ASAN
    __sanitizer_start_switch_fiber(dying ? nullptr : &f.fake_stack, main_stack_bottom, main_stack_size);
#else
    (void) dying;
#endif
    TSAN(__tsan_switch_to_fiber(tsan_main, __tsan_switch_to_fiber_no_sync));
    g4emu_switch(&f.sp, sched_sp);
    arrived_on_fiber(f);
}

[[noreturn]] void fiber_entry();

void thread_exit() {
    Fiber& f = *g_cur;
    cp_wait(0);  // copies still in flight land anyway
    if (!f.bopen.empty() || !f.bgroups.empty())
        fail("thread %d exits with a bulk reduction (cp.reduce.async.bulk) not waited for: its shared source may be "
             "reused by the next block before it is read (cp.async.bulk.wait_group)", f.lin);
    bulk_wait(0, true);  // (the adds of those waited for with .read)
    f.state = DONE;
    TSAN(__tsan_release(&sync_block_end));
    TSAN(__tsan_release(&sync_bar[0]));  // (an exited thread counts as arrived at later barriers)
    TSAN(__tsan_release(&sync_bar[1]));
    nlive--;
    Warp& w = warps[f.lin >> 5];
    if (w.arrived > 0 && (w.mask >> (f.lin & 31) & 1))
        fail("thread %d exits while lanes of its warp wait for it at %s (first: thread %d)", f.lin, kind_name(w.kind),
             (f.lin & ~31) + w.first);
    if (nlive > 0 && bar_arrived == nlive) {  // the last thread the barrier waited for has exited
        PROF(prof_flush_all());
        for (int i = 0; i < nthreads; i++)
            if (fibers[i].state == AT_BAR) fibers[i].state = READY;
        bar_arrived = 0;
        bar_gen++;
    }
    yield(true);
    fail("an exited thread was resumed");
}

void fiber_entry() {
    arrived_on_fiber(*g_cur);
    TSAN(__tsan_acquire(&sync_block_start));
    (*body)();
    thread_exit();
    __builtin_unreachable();
}

void prepare(Fiber& f) {
    if (f.stack == nullptr) {
        void* p = mmap(nullptr, STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) fail("cannot map a fiber stack");
        f.stack = (char*) p;
    }
#if EMU_ASAN
    // frames of the previous block's fiber never returned: those of its last switch (fiber_entry, thread_exit,
    // yield), above the stack pointer it saved there; every frame below returned and unpoisoned itself. Not the whole
    // stack: its shadow is 64 KiB a fiber, 16 MiB a block of 256 threads, which were a tenth of the attention cases'
    // time. (Less unpoisoned can only report more, never hide a bad access.)
    else if (f.sp != nullptr) {
        const uintptr_t lo = ((uintptr_t) f.sp - 256) & ~(uintptr_t) 7, top = (uintptr_t) f.stack + STACK;
        if (lo >= (uintptr_t) f.stack && lo < top) ASAN_UNPOISON_MEMORY_REGION((void*) lo, top - lo);
        else ASAN_UNPOISON_MEMORY_REGION(f.stack, STACK);
    }
#endif
    uintptr_t top = ((uintptr_t) f.stack + STACK) & ~(uintptr_t) 15;
    void** sp = (void**) top;
    *--sp = nullptr;                    // fiber_entry's return address (it never returns)
    *--sp = (void*) &fiber_entry;       // g4emu_switch's ret lands here
    for (int i = 0; i < 6; i++) *--sp = nullptr;  // rbp, rbx, r12-r15
    f.sp = sp;
    f.state = READY;
    f.open.clear();
    f.groups.clear();
    f.fake_stack = nullptr;
#ifdef G4EMU_TSAN
    if (f.tsan == nullptr) {
        f.tsan = __tsan_create_fiber(0);
        char name[32];
        snprintf(name, sizeof name, "CUDA thread %d", f.lin);
        __tsan_set_fiber_name(f.tsan, name);
    }
#endif
}

// An order read from an environment variable: forward (default), reverse, or a seed (mode 2: shuffled).
struct Order {
    int mode = 0;
    std::mt19937 rng;
    explicit Order(const char* var) {
        const char* e = var ? getenv(var) : nullptr;
        if (e == nullptr || !*e || !strcmp(e, "forward")) return;
        if (!strcmp(e, "reverse")) { mode = 1; return; }
        mode = 2;
        rng.seed((unsigned) strtoul(e, nullptr, 10));
    }
};

// Schedule order of the block's threads: G4EMU_ORDER (a fresh shuffle at every pass), to show results that depend on
// the order threads run between two barriers.
Order order("G4EMU_ORDER");

// Order of a grid's blocks: G4EMU_BLOCKS (a fresh shuffle per launch; forward is the linear block index, x fastest).
// A GPU runs blocks concurrently in an order nothing guarantees, so a kernel whose results depend on which block goes
// first (a first-report-wins flag, an atomic whose order moves bits, one block reading another's writes) shows it here.
Order block_order("G4EMU_BLOCKS");

void run_block(std::vector<int>& idx) {
#ifdef G4EMU_TSAN
    if (tsan_main == nullptr) tsan_main = __tsan_get_current_fiber();
    __tsan_release(&sync_block_start);
#endif
    for (int i = 0; i < nthreads; i++) prepare(fibers[i]);
    for (int i = 0; i < (nthreads + 31) / 32; i++) warps[i] = Warp{};
    nlive = nthreads;
    bar_arrived = 0;
    mbars.clear();
    for (MBar& b : named) b = MBar{};
    for (;;) {
        if (order.mode == 2) std::shuffle(idx.begin(), idx.end(), order.rng);
        // a thread waiting on an mbarrier runs again at every pass to look at it; a pass in which every thread that
        // ran was such a waiter and went back to the same wait (no arrival, no wait passed) changed nothing: a deadlock
        bool ran = false;
        for (int i : idx)
            if (fibers[i].state == READY || fibers[i].state == AT_MBAR) {
                const bool waiting = fibers[i].state == AT_MBAR;
                const long long events = barrier_events;
                fibers[i].state = READY;
                to_fiber(fibers[i]);
                if (!waiting || fibers[i].state != AT_MBAR || barrier_events != events) ran = true;
            }
        if (nlive == 0) {
            TSAN(__tsan_acquire(&sync_block_end));
            for (const auto& [a, b] : mbars)
                if (!b.ops.empty() || b.tx != 0)
                    fail("the block ends with a TMA load (cp.async.bulk.tensor) on the mbarrier at shared byte %u not landed "
                         "(%zu loads, %lld bytes expected): nothing waited for it", a, b.ops.size(), b.tx);
            for (int id = 1; id < 16; id++)
                if (named[id].count > 0 && named[id].pending != named[id].count)
                    fail("the block ends with %d of %d arrivals on named barrier %d: a phase that never completed (an "
                         "unmatched bar.arrive or bar.sync)", named[id].count - named[id].pending, named[id].count, id);
            return;
        }
        if (!ran) {
            std::string who;
            int shown = 0;
            int warp_shown = -1;
            for (int i = 0; i < nthreads && shown < 12; i++) {  // each warp's first live thread
                const Fiber& f = fibers[i];
                if (f.state == DONE || i / 32 == warp_shown) continue;
                warp_shown = i / 32;
                char b[128];
                if (f.state == AT_MBAR && f.wait_named > 0) {
                    const MBar& m = named[f.wait_named];
                    snprintf(b, sizeof b, " t%d:bar.sync %d (%d of %d arrived; phase %u, waits for the end of %d)", i,
                             f.wait_named, m.count - m.pending, m.count, m.phase, f.wait_parity);
                } else if (f.state == AT_MBAR) {
                    const auto it = mbars.find(f.wait_mbar);
                    const int got = it == mbars.end() ? -1 : it->second.count - it->second.pending;
                    snprintf(b, sizeof b, " t%d:mbarrier %u parity %d (%d of %d arrived, phase %u)", i, f.wait_mbar,
                             f.wait_parity, got, it == mbars.end() ? -1 : it->second.count,
                             it == mbars.end() ? 0u : it->second.phase);
                } else {
                    snprintf(b, sizeof b, " t%d:%s", i, f.state == AT_BAR ? "__syncthreads" : kind_name(f.slot.kind));
                }
                who += b;
                shown++;
            }
            fail("deadlock: no thread can go on (%d of %d live, %d at __syncthreads);%s%s", nlive, nthreads, bar_arrived,
                 who.c_str(), nlive > shown ? " ..." : "");
        }
    }
}

unsigned char* shared_range(unsigned addr, int bytes, const char* what) {
    long long a = (int) addr;
    if (a < 0 || a + bytes > (long long) smem_bytes)
        fail("%s touches shared bytes [%lld, %lld), outside the launch's %zu bytes of dynamic shared memory", what, a,
             a + bytes, smem_bytes);
    if (a % (bytes >= 16 ? 16 : bytes)) fail("%s at shared byte %lld is not %d-byte aligned", what, a, bytes >= 16 ? 16 : bytes);
    return g_arena + a;
}

// ---- warp collectives ------------------------------------------------------------------------------------------

float bf16_lo(unsigned r) { unsigned u = r << 16; float f; memcpy(&f, &u, 4); return f; }
float bf16_hi(unsigned r) { unsigned u = r & 0xffff0000u; float f; memcpy(&f, &u, 4); return f; }

// ---- wgmma (sm_90a): one warp's 16 rows of D = A B (+ D), at the wait_group that retires it ----------------------
// Shared-memory operands are read through their matrix descriptors as the PTX ISA defines them for the 128-byte
// swizzle (the only layout the kernels use; anything else fails): start address bits 0-13 (>> 4), leading byte
// offset 16-29 (>> 4), stride byte offset 32-45 (>> 4), base offset 49-51 (must be 0), layout 62-63 (1 = 128B).
// K-major (CUTLASS's canonical ((8,m),(T,2)):((8T,SBO),(1,T)), T = 8 bf16): element (i, k) of an M/N x 16 operand
// at start + (i / 8) SBO + (i % 8) 128 + 2 k. MN-major (((T,8,m),(8,k)):((1,T,LBO),(8T,SBO))): element (k, j) at
// start + (j / 64) LBO + 2 (j % 64) + (k / 8) SBO + (k % 8) 128. Then the swizzle of the address bits: the 16-byte
// chunk (bits 4-6) XOR the 128-byte row within 1024 (bits 7-9), which is why the atoms must be 1024-byte aligned.
// K-major: (x, y) = (i, k); MN-major: (x, y) = (k, j).
unsigned wg_addr(unsigned long long desc, bool mn_major, int x, int y) {
    const unsigned start = (unsigned) (desc & 0x3fff) << 4, lbo = (unsigned) (desc >> 16 & 0x3fff) << 4,
                   sbo = (unsigned) (desc >> 32 & 0x3fff) << 4;
    if ((desc >> 62) != 1) fail("wgmma descriptor %016llx: layout %llu is not the 128-byte swizzle", desc, desc >> 62);
    if ((desc >> 49 & 7) != 0) fail("wgmma descriptor %016llx: base offset %llu (the kernels keep 0)", desc, desc >> 49 & 7);
    if (start & 0x380) fail("wgmma descriptor %016llx: start %u is not within the first 128 bytes of a 1024-byte atom", desc, start);
    unsigned a = mn_major ? start + (unsigned) (y / 64) * lbo + 2u * (unsigned) (y % 64) + (unsigned) (x / 8) * sbo + (unsigned) (x % 8) * 128u
                          : start + (unsigned) (x / 8) * sbo + (unsigned) (x % 8) * 128u + 2u * (unsigned) y;
    return a ^ (((a >> 7) & 7u) << 4);
}

float wg_load(unsigned a) {
    unsigned short h;
    const unsigned char* p = shared_range(a, 2, "wgmma operand");
    TSAN(__tsan_read2(const_cast<unsigned char*>(p)));  // (--race: the retiring lane reads, after the warp collective)
    memcpy(&h, p, 2);
    unsigned u = (unsigned) h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// The shared operand elements one warp's wgmma reads, as f(address, operand, x, y): A's rows 16 wq .. 16 wq + 15 (of
// the warpgroup's 64) x 16 k when A is in shared memory (element (row, k)), then B's 16 k x n (element (k, column)).
template <class F>
void wg_operands(unsigned long long da, bool a_smem, bool tnsp_a, unsigned long long db, bool tnsp_b, int n, int wq, F f) {
    if (a_smem)
        for (int r = 0; r < 16; r++)
            for (int k = 0; k < 16; k++)
                f(tnsp_a ? wg_addr(da, true, k, wq * 16 + r) : wg_addr(da, false, wq * 16 + r, k), 'A', r, k);
    for (int k = 0; k < 16; k++)
        for (int j = 0; j < n; j++) f(tnsp_b ? wg_addr(db, true, k, j) : wg_addr(db, false, j, k), 'B', k, j);
}

// The async proxy's view of shared memory. A wgmma reads its shared operands through the async proxy, which sees a
// generic-proxy write (a store, a cp.async that landed) only after a fence.proxy.async (then a barrier for other
// threads' writes). Here the view is the block's shared memory as it was at the last fence.proxy.async of any of its
// threads (at the block's start: all 0xff, as the arena), and a wgmma whose operand bytes differ from the view at its
// issue fails: they were written after the last fence. Coarse (a fence by any thread counts for every thread's
// writes; the barrier's part is --race's): a missing fence, or one before the cp.async wait, fails every time; a
// fence after the barrier that should follow it passes here (the first thread past the barrier snapshots every
// thread's writes), as does a fence by some threads only, when one of them runs after the writers.
alignas(128) unsigned char async_view[ARENA];
long long view_block = -1;
// (a snapshot a fence, every thread's: a case of many blocks turns it off, set_proxy_check). Off under --race, whose
// cases the AddressSanitizer run checks too: ThreadSanitizer intercepts memcpy even here and would count the
// snapshot as the running CUDA thread's read of every shared byte.
#ifdef G4EMU_TSAN
bool proxy_check = false;
#else
bool proxy_check = true;
#endif

void view_for_block() {
    if (view_block == blocks_run) return;
    memset(async_view, 0xff, smem_bytes);
    view_block = blocks_run;
}

// A tensor-core product's dot product of 16 (mma.sync, wgmma) in float64 from acc, in k order: outside
// AddressSanitizer, as its operands are its callers' own tiles (each filled, and each result stored, by instrumented
// code), whose checks on every element took most of the attention cases' emulated mma time.
__attribute__((no_sanitize_address, noinline)) double dot16(double acc, const float* a_row, const float* b_col, int ldb) {
    for (int k = 0; k < 16; k++) acc += (double) a_row[k] * b_col[(size_t) k * ldb];
    return acc;
}

// in[]: 0 D (float*), 1 A descriptor, 2 B descriptor, 3-6 A registers, 7 N | tnspB << 16 | scale-d << 17 | A from
// registers << 18 | tnspA << 19 (A MN-major: stored [k][m]). Warp w of the block is warp w % 4 of its warpgroup: rows 16 (w % 4) .. + 15 of the 64.
void wgmma(int w, Fiber** lane) {
    const unsigned long long* in0 = lane[0] ? lane[0]->slot.in : nullptr;
    if (!in0) fail("wgmma with lane 0 of warp %d absent", w);
    const int n = (int) (in0[7] & 0xffff);
    const bool tnsp_b = in0[7] >> 16 & 1, scale_d = in0[7] >> 17 & 1, a_regs = in0[7] >> 18 & 1, tnsp_a = in0[7] >> 19 & 1;
    float A[16][16];
    static float B[16][256];
    for (int l = 0; l < 32; l++) {
        if (!lane[l]) fail("wgmma with lane %d of warp %d absent", l, w);
        const unsigned long long* in = lane[l]->slot.in;
        if (in[1] != in0[1] || in[2] != in0[2] || in[7] != in0[7])
            fail("wgmma: lane %d of warp %d has other descriptors or shape than lane 0 (not warp-uniform)", l, w);
        if (a_regs) {
            int g = l >> 2, t = l & 3;
            for (int i = 0; i < 4; i++) {
                int r = g + (i & 1) * 8, c = 2 * t + (i >> 1) * 8;
                A[r][c] = bf16_lo((unsigned) in[3 + i]);
                A[r][c + 1] = bf16_hi((unsigned) in[3 + i]);
            }
        }
    }
    wg_operands(in0[1], !a_regs, tnsp_a, in0[2], tnsp_b, n, w % 4,
                [&](unsigned a, char op, int x, int y) { (op == 'A' ? A[x][y] : B[x][y]) = wg_load(a); });
    // D fragment: per 8 columns the mma.m16n8 C layout; register 4 c + e: row gid + 8 (e >> 1), column 8 c + 2 tig + (e & 1)
    for (int l = 0; l < 32; l++) {
        float* d = reinterpret_cast<float*>(lane[l]->slot.in[0]);
        int g = l >> 2, t = l & 3;
        for (int i = 0; i < n / 2; i++) {
            int r = g + ((i & 3) >> 1) * 8, c = 8 * (i >> 2) + 2 * t + (i & 1);
            d[i] = (float) dot16(scale_d ? (double) d[i] : 0.0, A[r], &B[0][c], 256);
        }
    }
}

void compute(int w, int kind, unsigned mask) {
    Fiber* lane[32];
    for (int l = 0; l < 32; l++) {
        int i = w * 32 + l;
        lane[l] = i < nthreads && fibers[i].state == AT_WARP && (mask >> l & 1) ? &fibers[i] : nullptr;
    }
    switch (kind) {
        case K_SHFL:
            for (int l = 0; l < 32; l++)
                if (lane[l]) {
                    int src = (int) lane[l]->slot.in[1];
                    lane[l]->slot.out[0] = lane[src] ? lane[src]->slot.in[0] : ~0ull;  // an absent lane: garbage
                }
            break;
        case K_BALLOT: {
            unsigned bits = 0;
            for (int l = 0; l < 32; l++)
                if (lane[l] && lane[l]->slot.in[0]) bits |= 1u << l;
            for (int l = 0; l < 32; l++)
                if (lane[l]) lane[l]->slot.out[0] = bits;
            break;
        }
        case K_SYNCWARP: break;
        case K_LDSM:
        case K_LDSM_T:
            for (int l = 0; l < 32; l++) {
                if (!lane[l]) fail("ldmatrix with lane %d of warp %d absent", l, w);
                unsigned char* row = shared_range((unsigned) lane[l]->slot.in[0], 16, "ldmatrix");
                TSAN(__tsan_read16(row));
                (void) row;
            }
            for (int l = 0; l < 32; l++)
                for (int j = 0; j < 4; j++) {
                    unsigned v;
                    if (kind == K_LDSM) {
                        memcpy(&v, g_arena + (int) lane[8 * j + l / 4]->slot.in[0] + 4 * (l % 4), 4);
                    } else {
                        unsigned short lo, hi;
                        memcpy(&lo, g_arena + (int) lane[8 * j + 2 * (l % 4)]->slot.in[0] + 2 * (l / 4), 2);
                        memcpy(&hi, g_arena + (int) lane[8 * j + 2 * (l % 4) + 1]->slot.in[0] + 2 * (l / 4), 2);
                        v = lo | (unsigned) hi << 16;
                    }
                    lane[l]->slot.out[j] = v;
                }
            break;
        case K_MMA: {
            float A[16][16], B[16][8];
            for (int l = 0; l < 32; l++) {
                if (!lane[l]) fail("mma.sync with lane %d of warp %d absent", l, w);
                const unsigned long long* in = lane[l]->slot.in;
                int g = l >> 2, t = l & 3;
                for (int i = 0; i < 4; i++) {
                    int r = g + (i & 1) * 8, c = 2 * t + (i >> 1) * 8;
                    A[r][c] = bf16_lo((unsigned) in[i]);
                    A[r][c + 1] = bf16_hi((unsigned) in[i]);
                }
                B[2 * t][g] = bf16_lo((unsigned) in[4]);
                B[2 * t + 1][g] = bf16_hi((unsigned) in[4]);
                B[8 + 2 * t][g] = bf16_lo((unsigned) in[5]);
                B[8 + 2 * t + 1][g] = bf16_hi((unsigned) in[5]);
            }
            for (int l = 0; l < 32; l++) {
                int g = l >> 2, t = l & 3;
                for (int i = 0; i < 4; i++) {
                    int r = g + (i >> 1) * 8, c = 2 * t + (i & 1);
                    float cin;
                    memcpy(&cin, &lane[l]->slot.in[6 + i], 4);
                    float d = (float) dot16(cin, A[r], &B[0][c], 8);
                    lane[l]->slot.out[i] = 0;
                    memcpy(&lane[l]->slot.out[i], &d, 4);
                }
            }
            break;
        }
        case K_WGMMA: wgmma(w, lane); break;
        default: fail("unknown collective %d", kind);
    }
}

}  // namespace

Fiber* g_cur;
uint3 g_block_idx;
dim3 g_block_dim, g_grid_dim;
unsigned char* g_arena = arena_storage;

uint3 g_thread_idx;
Slot& my_slot() { return g_cur->slot; }

void fail(const char* fmt, ...) {
    fflush(stdout);
    fprintf(stderr, "kernel-emu: %s, block (%u,%u,%u)", kernel_name, g_block_idx.x, g_block_idx.y, g_block_idx.z);
    if (g_cur) fprintf(stderr, ", thread %d", g_cur->lin);
    fprintf(stderr, ": ");
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    abort();
}

Slot& collective(int kind, unsigned mask) {
    TSAN_CALLER();
    Fiber& f = *g_cur;
    const int w = f.lin >> 5, me = f.lin & 31;
    Warp& W = warps[w];
    if (!(mask >> me & 1)) fail("%s with a mask (%08x) that leaves out the calling lane %d", kind_name(kind), mask, me);
    f.slot.kind = kind;
    if (W.arrived == 0) {
        W.kind = kind;
        W.mask = mask;
        W.first = me;
        // every lane of the mask that exists must take part; one that has exited never will (and one that exits
        // while the others wait is reported by thread_exit)
        W.expected = 0;
        for (int l = 0; l < 32; l++) {
            int i = w * 32 + l;
            if (!(mask >> l & 1) || i >= nthreads) continue;
            if (fibers[i].state == DONE) fail("%s names lane %d, which has exited", kind_name(kind), l);
            W.expected++;
        }
    } else if (W.kind != kind || W.mask != mask) {
        fail("warp divergence: lane %d is at %s (mask %08x) while lane %d waits at %s (mask %08x)", me, kind_name(kind), mask,
             W.first, kind_name(W.kind), W.mask);
    }
    const int expected = W.expected;
    f.state = AT_WARP;
    [[maybe_unused]] const unsigned par = W.gen & 1;
    TSAN(__tsan_release(&sync_warp[w][par]));
    PROF(if (kind == K_LDSM || kind == K_LDSM_T) prof_access(__builtin_return_address(0), P_LD,
                                                             g_arena + (int) f.slot.in[0], 16, me / 8));
    if (++W.arrived == expected) {
        TSAN(__tsan_acquire(&sync_warp[w][par]));
        PROF(prof_flush_warp(w));
        compute(w, kind, mask);
        // (the collective's own accesses, made here by the last lane for the warp, belong to every lane: the others
        // acquire this release when they go on, so that a lane's later release, an mbarrier arrival after its wgmma
        // wait, covers the operand reads that wait made)
        TSAN(__tsan_release(&sync_warp[w][par]));
        for (int l = 0; l < 32; l++) {
            int i = w * 32 + l;
            if (i < nthreads && fibers[i].state == AT_WARP) fibers[i].state = READY;
        }
        W.arrived = 0;
        W.gen++;
        return f.slot;  // the last lane goes on at once; the others when the scheduler reaches them
    }
    yield();
    TSAN(__tsan_acquire(&sync_warp[w][par]));
    return f.slot;
}

void syncthreads() {
    TSAN_CALLER();
    Fiber& f = *g_cur;
    f.state = AT_BAR;
    [[maybe_unused]] const unsigned gen = bar_gen & 1;
    TSAN(__tsan_release(&sync_bar[gen]));
    if (++bar_arrived == nlive) {
        for (int i = 0; i < nthreads; i++)
            if (fibers[i].state == AT_BAR) fibers[i].state = READY;
        bar_arrived = 0;
        bar_gen++;
        PROF(prof_flush_all());
        TSAN(__tsan_acquire(&sync_bar[gen]));
        return;
    }
    yield();
    TSAN(__tsan_acquire(&sync_bar[gen]));
}

void cp_async(unsigned dst, const void* src, int bytes, bool pred) {
    TSAN_CALLER();
    Fiber& f = *g_cur;
    shared_range(dst, bytes, "cp.async");
    Pending p{dst, bytes, {}};
    // The copy may land any time from now to its wait: the race check sees a write at both ends (this one finds a
    // tile overwritten while another warp may still read it; the one at the wait, a read before the wait + barrier).
    TSAN(bytes == 16 ? __tsan_write16(g_arena + dst) : __tsan_write4(g_arena + dst));
    if (pred) {
        if ((uintptr_t) src % bytes) fail("cp.async from a global address not %d-byte aligned", bytes);
        memcpy(p.data, src, bytes);  // read at issue: an out-of-bounds source is reported here, with its caller
        PROF(prof_access(__builtin_return_address(0), P_LD, src, bytes, 0));
    }
    PROF(prof_access(__builtin_return_address(0), P_ST, g_arena + dst, bytes, 0));
    f.open.push_back(p);
}

void cp_commit() {
    TSAN_CALLER();
    Fiber& f = *g_cur;
    f.groups.push_back(std::move(f.open));
    f.open.clear();
}

void cp_wait(int n) {
    TSAN_CALLER();
    Fiber& f = *g_cur;
    while ((int) f.groups.size() > n) {
        for (const Pending& p : f.groups.front()) {
            TSAN(p.bytes == 16 ? __tsan_write16(g_arena + p.dst) : __tsan_write4(g_arena + p.dst));  // the copy lands now, written by the thread that issued it
            memcpy(g_arena + p.dst, p.data, p.bytes);
        }
        f.groups.erase(f.groups.begin());
    }
}

// A bulk reduction's adds: its source as copied at the issue, element by element into dst.
template <typename T>
void bulk_add_into(const BulkOp& op) {
    for (int i = 0; i < op.bytes / (int) sizeof(T); i++) {
        T x;
        memcpy(&x, op.data.data() + sizeof(T) * i, sizeof(T));
        std::atomic_ref<T>(static_cast<T*>(op.dst)[i]).fetch_add(x, std::memory_order_relaxed);
    }
}

void bulk_reduce(void* dst, unsigned src, int bytes, int type) {
    TSAN_CALLER();
    Fiber& f = *g_cur;
    if (bytes <= 0 || bytes % 16 || (uintptr_t) dst % 16 || src % 16)
        fail("cp.reduce.async.bulk of %d bytes from shared byte %u to %p: the size must be a positive multiple of 16 and "
             "both addresses 16-byte aligned", bytes, src, dst);
    const unsigned char* p = shared_range(src, bytes, "cp.reduce.async.bulk");
    for (int i = 0; i < bytes; i += 16) TSAN(__tsan_read16(const_cast<unsigned char*>(p) + i));  // may read from now on
    if (proxy_check) {  // the async proxy reads the source: a generic-proxy store after the last fence may be missed
        view_for_block();
        for (int i = 0; i < bytes; i++)
            if (p[i] != async_view[src + i])
                fail("cp.reduce.async.bulk reads shared byte %u that a generic-proxy write changed after the last "
                     "fence.proxy.async: the async proxy may read the old value", src + i);
    }
    PROF(prof_access(__builtin_return_address(0), P_ATOM, dst, bytes, 0));
    f.bopen.push_back(BulkOp{dst, src, bytes, type, std::vector<unsigned char>(p, p + bytes)});
}

void bulk_commit() {
    Fiber& f = *g_cur;
    f.bgroups.push_back(std::move(f.bopen));
    f.bopen.clear();
}

void bulk_wait(int n, bool full) {
    TSAN_CALLER();
    Fiber& f = *g_cur;
    while ((int) f.bgroups.size() > n) {
        for (BulkOp& op : f.bgroups.front()) {
            const unsigned char* p = shared_range(op.src, op.bytes, "cp.reduce.async.bulk");
            for (int i = 0; i < op.bytes; i += 16) TSAN(__tsan_read16(const_cast<unsigned char*>(p) + i));  // read by now
            for (int i = 0; i < op.bytes; i++)
                if (p[i] != op.data[i])
                    fail("shared byte %u, the source of a cp.reduce.async.bulk, changed between the reduction's issue and "
                         "the cp.async.bulk.wait_group that retires it: the reduction may read either value", op.src + i);
            f.bread.push_back(std::move(op));
        }
        f.bgroups.erase(f.bgroups.begin());
    }
    if (!full) return;  // (.read: the adds may still be in flight)
    for (const BulkOp& op : f.bread) {  // (every group waited for with .read is older than those still pending)
        if (op.type == 0) bulk_add_into<float>(op);
        else bulk_add_into<unsigned long long>(op);
    }
    f.bread.clear();
}

std::map<std::string, long long> launch_counts;  // kernel name (as launched) -> launches that ran

long long launches(const char* prefix) {
    long long n = 0;
    for (const auto& [k, v] : launch_counts)
        if (k.compare(0, strlen(prefix), prefix) == 0) n += v;
    return n;
}

// A launch's configuration as the GPU checks it when the kernel is launched (not when it runs: a deferred stream,
// G4EMU_ASYNC, runs it later): false, with the error in the launching thread's slot, for one it refuses.
bool launch_ok(const char* name, const void* fn, dim3 grid, dim3 block, size_t smem) {
    const long long threads = (long long) block.x * block.y * block.z;
    if (threads < 1 || threads > MAX_THREADS || grid.x < 1 || grid.y < 1 || grid.z < 1 || grid.y > 65535 || grid.z > 65535 ||
        block.z > 64) {
        last_error = cudaErrorInvalidConfiguration;
        return false;
    }
    auto lim = smem_limit.find(fn);
    size_t allowed = lim == smem_limit.end() ? DEFAULT_SMEM : (size_t) lim->second;
    if (allowed < DEFAULT_SMEM) allowed = DEFAULT_SMEM;
    if (smem > allowed) {
        fprintf(stderr, "kernel-emu: %s launched with %zu bytes of dynamic shared memory, above its limit %zu"
                        " (cudaFuncSetAttribute)\n", name, smem, allowed);
        last_error = cudaErrorInvalidValue;
        return false;
    }
    return true;
}

void run_grid(const char* name, const void* fn, dim3 grid, dim3 block, size_t smem, const std::function<void()>& b) {
    const long long threads = (long long) block.x * block.y * block.z;
    if (!launch_ok(name, fn, grid, block, smem)) return;  // (checked at the launch too: a graph replays what it took)
    kernel_name = name;
    launch_counts[name]++;
    PROF(prof_launch_begin(fn));
    smem_bytes = smem;
    body = &b;
    g_grid_dim = grid;
    g_block_dim = block;
    nthreads = (int) threads;
    for (int i = 0; i < nthreads; i++) {
        fibers[i].lin = i;
        fibers[i].tid = uint3{(unsigned) (i % block.x), (unsigned) (i / block.x % block.y), (unsigned) (i / (block.x * block.y))};
    }
    std::vector<int> idx(nthreads);
    for (int i = 0; i < nthreads; i++) idx[i] = order.mode == 1 ? nthreads - 1 - i : i;
    const long long nblocks = (long long) grid.x * grid.y * grid.z;
    std::vector<long long> blocks;
    if (block_order.mode != 0) {
        blocks.resize(nblocks);
        for (long long i = 0; i < nblocks; i++) blocks[i] = block_order.mode == 1 ? nblocks - 1 - i : i;
        if (block_order.mode == 2) std::shuffle(blocks.begin(), blocks.end(), block_order.rng);
    }
    for (long long bi = 0; bi < nblocks; bi++) {
        const long long lin = blocks.empty() ? bi : blocks[bi];
        g_block_idx = uint3{(unsigned) (lin % grid.x), (unsigned) (lin / grid.x % grid.y), (unsigned) (lin / ((long long) grid.x * grid.y))};
        memset(g_arena, 0xff, smem);  // uninitialized shared memory reads as bf16 / fp32 NaN
#if EMU_ASAN
        ASAN_POISON_MEMORY_REGION(g_arena + smem, ARENA - smem);
#endif
        run_block(idx);
        PROF(prof_flush_all());
#if EMU_ASAN
        ASAN_UNPOISON_MEMORY_REGION(g_arena, ARENA);
#endif
        blocks_run++;
        threads_run += threads;
    }
    PROF(prof_launch_end());
    kernel_name = "?";
}

void set_proxy_check(bool on) {
#ifndef G4EMU_TSAN
    proxy_check = on;
#endif
}

void proxy_fence() {
    if (!proxy_check) return;
    view_for_block();
    memcpy(async_view, g_arena, smem_bytes);
}

// ---- mbarriers and TMA (emu.h) ----------------------------------------------------------------------------------

namespace {

MBar& mbar_at(unsigned addr, const char* what) {
    shared_range(addr, 8, what);
    auto it = mbars.find(addr);
    if (it == mbars.end()) fail("%s on shared byte %u, which holds no initialized mbarrier (mbarrier.init)", what, addr);
    return it->second;
}

// The phase completes once its arrivals are in and its expected bytes have landed; the next phase expects the count.
void settle(MBar& b, unsigned addr) {
    if (b.pending == 0 && b.tx < 0)
        fail("mbarrier at shared byte %u: %lld bytes landed beyond those its phase expected (mbarrier.expect_tx)", addr, -b.tx);
    if (b.pending == 0 && b.tx == 0) {
        b.phase++;
        b.pending = b.count;
    }
}

// A TMA load lands: its bytes written into the arena, by the async proxy (so into the async proxy's view too), and
// counted against its barrier's expected bytes. (Copied byte by byte: ThreadSanitizer, which intercepts memcpy, saw
// the load's writes at its issue, by the issuing thread.)
void land(MBar& b, const TmaOp& op) {
    unsigned char* d = g_arena + op.dst;
    for (size_t i = 0; i < op.image.size(); i++) d[i] = op.image[i];
    if (proxy_check) {
        view_for_block();
        for (size_t i = 0; i < op.image.size(); i++) async_view[op.dst + i] = op.image[i];
    }
    b.tx -= (long long) op.image.size();
}

}  // namespace

void set_tma_landing(bool early) { tma_early = early; }

namespace {
MBar& named_at(int id, int count, const char* what) {
    if (id < 1 || id > 15 || count < 32 || count % 32 || count > nthreads)
        fail("%s %d, %d: ids 1-15 (0 is __syncthreads'), a count of whole warps of the block", what, id, count);
    MBar& b = named[id];
    if (b.count == 0) b = MBar{count, count, 0, 0, {}};
    else if (b.count != count) fail("%s %d, %d: the barrier was used with a count of %d in this block", what, id, count, b.count);
    return b;
}
}  // namespace

void named_arrive(int id, int count) {
    TSAN_CALLER();
    MBar& b = named_at(id, count, "bar.arrive");
    barrier_events++;
    TSAN(__tsan_release(&sync_mbar[ARENA / 8 + 2 * id + (b.phase & 1)]));
    if (--b.pending == 0) {
        b.phase++;
        b.pending = b.count;
    }
}

void named_sync(int id, int count) {
    TSAN_CALLER();
    Fiber& f = *g_cur;
    MBar& b = named_at(id, count, "bar.sync");
    const unsigned phase = b.phase;
    named_arrive(id, count);
    f.wait_named = id;
    f.wait_parity = (int) phase;
    while (b.phase == phase) {
        f.state = AT_MBAR;
        yield();
    }
    barrier_events++;
    TSAN(__tsan_acquire(&sync_mbar[ARENA / 8 + 2 * id + (phase & 1)]));
}

void mbar_init(unsigned addr, int count) {
    TSAN_CALLER();
    shared_range(addr, 8, "mbarrier.init");
    if (count < 1 || count > (1 << 20) - 1) fail("mbarrier.init at shared byte %u with count %d (1 .. 2^20 - 1)", addr, count);
    MBar& b = mbars[addr];
    if (!b.ops.empty() || b.tx != 0) fail("mbarrier.init at shared byte %u while a TMA load is in flight on it", addr);
    b = MBar{count, count, 0, 0, {}};
}

void mbar_arrive(unsigned addr, int tx) {
    TSAN_CALLER();
    MBar& b = mbar_at(addr, tx ? "mbarrier.arrive.expect_tx" : "mbarrier.arrive");
    if (tx < 0) fail("mbarrier.expect_tx of %d bytes", tx);
    b.tx += tx;
    if (--b.pending < 0) fail("mbarrier at shared byte %u: more arrivals than its count %d", addr, b.count);
    barrier_events++;
    TSAN(__tsan_release(&sync_mbar[addr >> 3]));
    settle(b, addr);
}

void mbar_wait(unsigned addr, int parity) {
    TSAN_CALLER();
    Fiber& f = *g_cur;
    for (;;) {
        MBar& b = mbar_at(addr, "mbarrier.try_wait.parity");
        if ((int) (b.phase & 1) != (parity & 1)) break;
        if (b.pending == 0 && !b.ops.empty()) {  // (late landing: the arrivals are in, the loads land now)
            // (the issuer made each load's image, which this thread frees: the issue's release, acquired first)
            TSAN(__tsan_acquire(&sync_mbar[addr >> 3]));
            for (const TmaOp& op : b.ops) land(b, op);
            b.ops.clear();
            settle(b, addr);
            continue;
        }
        f.wait_named = 0;
        f.wait_mbar = addr;
        f.wait_parity = parity & 1;
        f.state = AT_MBAR;
        yield();
    }
    barrier_events++;
    TSAN(__tsan_acquire(&sync_mbar[addr >> 3]));
}

void tma_load(unsigned dst, const void* map, int rank, const int* coords, unsigned mbar) {
    TSAN_CALLER();
    const EmuTensorMap& m = *static_cast<const EmuTensorMap*>(map);
    if (m.magic != EMU_TMAP) fail("cp.async.bulk.tensor with a tensor map the emulated cuTensorMapEncodeTiled did not write");
    if (m.rank != rank) fail("cp.async.bulk.tensor.%dd with a tensor map of rank %d", rank, m.rank);
    if (m.swizzle_bytes == 128 && (dst % 1024 || m.box[0] * m.elsize != 128))
        fail("cp.async.bulk.tensor with the 128-byte swizzle to shared byte %u: the kernels' boxes are 128-byte rows into "
             "1024-byte aligned tiles (box row %u bytes)", dst, m.box[0] * m.elsize);
    if (dst % 128) fail("cp.async.bulk.tensor to shared byte %u, not 128-byte aligned", dst);
    long long n = 1;
    for (int i = 0; i < rank; i++) n *= m.box[i];
    const int bytes = (int) (n * m.elsize);
    unsigned char* d = shared_range(dst, bytes, "cp.async.bulk.tensor");
    TmaOp op{dst, std::vector<unsigned char>((size_t) bytes)};
    for (long long e = 0; e < n; e++) {  // box element e (dimension 0 fastest); out of the tensor: zeros
        long long r = e, off = 0;
        bool in = true;
        for (int i = 0; i < rank; i++) {
            const long long c = (long long) coords[i] + r % m.box[i];
            r /= m.box[i];
            if (c < 0 || c >= (long long) m.dims[i]) in = false;
            else off += c * (long long) m.strides[i];
        }
        unsigned p = (unsigned) (e * m.elsize);
        if (m.swizzle_bytes == 128) p ^= ((p >> 7) & 7u) << 4;  // the 16-byte chunk XOR the 128-byte row within 1024
        if (in) memcpy(op.image.data() + p, m.base + off, (size_t) m.elsize);  // (a bad map or coordinate: ASan, here)
        else memset(op.image.data() + p, 0, (size_t) m.elsize);
    }
    for (int i = 0; i < bytes; i += 16) TSAN(__tsan_write16(d + i));  // written from now to the landing
    (void) d;  // (--profile does not count TMA's traffic)
    for (const auto& [at, other] : mbars)
        if (at + 8 > dst && at < dst + (unsigned) bytes)
            fail("cp.async.bulk.tensor to shared bytes [%u, %u) would overwrite the mbarrier at %u", dst, dst + bytes, at);
    MBar& b = mbar_at(mbar, "cp.async.bulk.tensor's mbarrier");
    TSAN(__tsan_release(&sync_mbar[mbar >> 3]));  // (its landing completes on the barrier after these writes)
    if (tma_early) {
        land(b, op);
        settle(b, mbar);
    } else {
        b.ops.push_back(std::move(op));
    }
}

// wq: the issuing warp within its warpgroup (the A rows it reads: 16 wq .. 16 wq + 15 of the 64).
void wg_check_fenced(unsigned long long da, bool a_smem, bool tnsp_a, unsigned long long db, bool tnsp_b, int n, int wq) {
    if (!proxy_check) return;
    view_for_block();
    wg_operands(da, a_smem, tnsp_a, db, tnsp_b, n, wq, [&](unsigned a, char op, int x, int y) {
        if (memcmp(shared_range(a, 2, "wgmma operand"), async_view + a, 2) != 0)
            fail("wgmma reads shared byte %u (operand %c, element %d, %d) that a generic-proxy write (a store or a landed "
                 "cp.async) changed after the last fence.proxy.async: the async proxy may read the old value", a, op,
                 op == 'A' ? wq * 16 + x : x, y);
    });
}

long long stat_blocks() { return blocks_run; }
long long block_serial() { return blocks_run; }
// The order of the next launches' blocks, as G4EMU_BLOCKS names it (forward, reverse or a seed): a case that checks
// that a result does not depend on the order sets it between two runs.
void set_block_order(const char* spec) {
    Order o(nullptr);
    if (spec != nullptr && !strcmp(spec, "reverse")) o.mode = 1;
    else if (spec != nullptr && *spec && strcmp(spec, "forward")) {
        o.mode = 2;
        o.rng.seed((unsigned) strtoul(spec, nullptr, 10));
    }
    block_order = o;
}
int cur_thread() { return g_cur ? g_cur->lin : -1; }
bool on_fiber_stack(const void* p) {
    return g_cur && (const char*) p >= g_cur->stack && (const char*) p < g_cur->stack + STACK;
}
const char* cur_kernel() { return kernel_name; }
bool emulator_state(const void* p) {  // the fibers (their collective slots, which emu.h's stand-ins fill)
    return (const char*) p >= (const char*) fibers && (const char*) p < (const char*) (fibers + MAX_THREADS);
}
size_t arena_bytes() { return ARENA; }
long long stat_threads() { return threads_run; }

cudaError_t take_last_error() {
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}
cudaError_t peek_last_error() { return last_error; }
void set_last_error(cudaError_t e) { last_error = e; }
void set_smem_limit(const void* fn, int bytes) { smem_limit[fn] = bytes; }

}  // namespace g4emu
