// tools/kernel-emu's stand-ins for the inline-PTX helpers of cuda/mma.cuh (included by it, inside namespace g4, when
// G4_EMU is defined): cp.async through the emulator's deferred copies, ldmatrix and mma.sync as warp collectives
// computed from the PTX ISA's fragment tables (the layouts spelled out at the top of mma.cuh).

__device__ __forceinline__ void cp_async16(unsigned dst, const void* src, bool pred) { g4emu::cp_async(dst, src, 16, pred); }
__device__ __forceinline__ void cp_async4(unsigned dst, const void* src, bool pred) { g4emu::cp_async(dst, src, 4, pred); }
__device__ __forceinline__ void cp_async_commit() { g4emu::cp_commit(); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { g4emu::cp_wait(N); }

__device__ __forceinline__ void ldsm_x4(unsigned (&r)[4], unsigned addr) {
    g4emu::my_slot().in[0] = addr;
    g4emu::Slot& s = g4emu::collective(g4emu::K_LDSM, 0xffffffffu);
    for (int i = 0; i < 4; i++) r[i] = (unsigned) s.out[i];
}

__device__ __forceinline__ void ldsm_x4_t(unsigned (&r)[4], unsigned addr) {
    g4emu::my_slot().in[0] = addr;
    g4emu::Slot& s = g4emu::collective(g4emu::K_LDSM_T, 0xffffffffu);
    for (int i = 0; i < 4; i++) r[i] = (unsigned) s.out[i];
}

__device__ __forceinline__ void mma_bf16(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    g4emu::Slot& me = g4emu::my_slot();
    for (int i = 0; i < 4; i++) me.in[i] = a[i];
    me.in[4] = b0;
    me.in[5] = b1;
    for (int i = 0; i < 4; i++) memcpy(&me.in[6 + i], &d[i], 4);
    g4emu::Slot& s = g4emu::collective(g4emu::K_MMA, 0xffffffffu);
    for (int i = 0; i < 4; i++) memcpy(&d[i], &s.out[i], 4);
}

__device__ __forceinline__ int lane_id() { return (int) (threadIdx.x & 31); }
__device__ __forceinline__ int thread_x() { return (int) threadIdx.x; }

// wgmma (cuda/wgmma.cuh): each lane records its part of an issued wgmma; commit_group closes a group; wait_group N
// retires all but the newest N groups, computing each of their wgmmas then (a warp collective per wgmma: the warp's
// 16 rows), so that, as on the hardware, the accumulators change only at the wait and the shared operands are read
// as they are at the wait (a kernel that reads an accumulator, or overwrites an operand tile, before its wait sees a
// wrong result here). The A registers are taken at the issue (ptxas keeps them until the wait on the hardware).
// fence.proxy.async snapshots the async proxy's view of shared memory, and each warp's issue checks its operands
// against it (emu.cpp, async_view); a wgmma issued with no wgmma.fence since the thread's last wait_group
// (or since the kernel's start) fails, as the PTX ISA asks for the fence before the first wgmma whose registers other
// instructions wrote (the kernels fence before every batch).
struct WgPending {
    unsigned long long in[8];
};
struct WgQueue {
    WgPending ops[64];
    int n = 0, groups[16] = {}, ngroups = 0, open = 0;  // ops of the committed groups, then the open (uncommitted) ones
    bool fenced = false;
    long long block = -1;  // the block the queue was last used in (a new block starts unfenced)
};
inline WgQueue g_wgq[1024];

// Warpgroup uniformity: the four warps of a warpgroup must issue the same wgmma sequence (shape, descriptors, flags).
// Lane 0 of each warp records its n-th wgmma's signature in a ring per warpgroup; the first warp to reach the n-th
// stores it, the others compare (the emulator's collectives are per warp, so this is where a wgmma issued by some
// warps of a warpgroup but not others, or with other descriptors, shows).
struct WgSig {
    long long seq = -1;
    unsigned long long a = 0, b = 0, f = 0;
};
struct WgGroup {
    long long block = -1, count[4] = {0, 0, 0, 0};
    WgSig ring[256];
};
inline WgGroup g_wgg[8];

G4EMU_UNPROFILED inline void wgmma_uniform(unsigned long long da, unsigned long long db, unsigned long long f) {
    if ((threadIdx.x & 31) != 0) return;
    WgGroup& g = g_wgg[threadIdx.x >> 7];
    if (g.block != g4emu::block_serial()) g = WgGroup{}, g.block = g4emu::block_serial();
    const int w = (threadIdx.x >> 5) & 3;
    const long long seq = g.count[w]++;
    WgSig& e = g.ring[seq & 255];
    if (e.seq != seq) {
        e = WgSig{seq, da, db, f};
    } else if (e.a != da || e.b != db || e.f != f) {
        g4emu::fail("wgmma %lld of warp %d differs from another warp's of its warpgroup (descriptors %016llx %016llx vs "
                    "%016llx %016llx): a wgmma must be warpgroup-uniform", seq, (int) (threadIdx.x >> 5), da, db, e.a, e.b);
    }
}

G4EMU_UNPROFILED inline void wgmma_issue(float* d, int n, unsigned long long da, unsigned long long db, const unsigned* a, bool tnsp_b,
                        int scale_d, bool tnsp_a = false) {
    WgQueue& q = g_wgq[threadIdx.x];
    if (q.block != g4emu::block_serial() || !q.fenced) g4emu::fail("wgmma without a wgmma.fence since the last wait_group");
    if (q.n == 64) g4emu::fail("more than 64 wgmma in flight in one thread");
    WgPending& p = q.ops[q.n++];
    p.in[0] = (unsigned long long) d;
    p.in[1] = a ? 0 : da;
    p.in[2] = db;
    for (int i = 0; i < 4; i++) p.in[3 + i] = a ? a[i] : 0;
    p.in[7] = (unsigned long long) n | (unsigned long long) tnsp_b << 16 | (unsigned long long) (scale_d != 0) << 17 |
              (unsigned long long) (a != nullptr) << 18 | (unsigned long long) tnsp_a << 19;
    q.open++;
    wgmma_uniform(p.in[1], p.in[2], p.in[7]);
    if ((threadIdx.x & 31) == 0) g4emu::wg_check_fenced(da, a == nullptr, tnsp_a, db, tnsp_b, n, (threadIdx.x >> 5) & 3);
}

__device__ __forceinline__ void wgmma_fence() {
    WgQueue& q = g_wgq[threadIdx.x];
    if (q.block != g4emu::block_serial()) {
        if (q.n > 0) g4emu::fail("a wgmma of an earlier block (thread %u) was never retired by a wait_group", threadIdx.x);
        q = WgQueue{};
        q.block = g4emu::block_serial();
    }
    q.fenced = true;
}
__device__ __forceinline__ void fence_proxy_async() { g4emu::proxy_fence(); }
G4EMU_UNPROFILED __device__ __forceinline__ void wgmma_commit() {
    WgQueue& q = g_wgq[threadIdx.x];
    if (q.ngroups == 16) g4emu::fail("more than 16 wgmma groups in flight in one thread");
    q.groups[q.ngroups++] = q.open;
    q.open = 0;
}
template <int N>
G4EMU_UNPROFILED __device__ __forceinline__ void wgmma_wait() {
    WgQueue& q = g_wgq[threadIdx.x];
    q.fenced = false;
    int done = 0;
    while (q.ngroups > N) {
        const int cnt = q.groups[0];
        for (int i = 0; i < cnt; i++) {
            g4emu::Slot& me = g4emu::my_slot();
            memcpy(me.in, q.ops[done + i].in, sizeof q.ops[0].in);
            g4emu::collective(g4emu::K_WGMMA, 0xffffffffu);
        }
        done += cnt;
        for (int g = 1; g < q.ngroups; g++) q.groups[g - 1] = q.groups[g];
        q.ngroups--;
    }
    if (done) {
        for (int i = done; i < q.n; i++) q.ops[i - done] = q.ops[i];
        q.n -= done;
    }
}
template <int N>
__device__ __forceinline__ void fence_regs(float (&)[N]) {}
template <int N>
__device__ __forceinline__ void fence_regs(unsigned (&)[N]) {}
template <int M, int N>
__device__ __forceinline__ void fence_regs(unsigned (&)[M][N]) {}
