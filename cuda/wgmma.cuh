// Warpgroup tensor-core building blocks for the sm_90a attention forward (wgmma.mma_async, Hopper only): matrix
// descriptors of 128-byte-swizzled shared tiles, the three wgmma shapes the kernel issues, and the fences around them.
// The device code is compiled only where __CUDA_ARCH_FEAT_SM90_ALL is defined (the sm_90a pass of native/Makefile);
// tools/kernel-emu supplies stand-ins (emu_mma.h) that compute each wgmma at the wait_group that retires it.
//
// Shared tiles: a [R][D] bf16 tile is stored as D / 64 column blocks of [R][64], each R x 128 bytes, its rows' 16-byte
// chunks swizzled as swz<64> (chunk ^ (row & 7)): exactly the 128-byte swizzle atom of the PTX ISA (8 rows x 128
// bytes, the chunk index XOR the row within 1024 bytes), given 1024-byte aligned blocks. So
//   K-major operand (A = Q [m][k], B = K [n][k], k contiguous): descriptor start = block + 128 (first row) + 32 (k-step
//     within the block's 64 columns), SBO = 1024 (8 rows), LBO unused (1);
//   MN-major operand (B = V [k][n], n contiguous): start = block + 128 (first k row), SBO = 1024 (8 k rows),
//     LBO = R x 128 (the next column block: n + 64).
// Fragments: D of m64nNk16 (fp32) gives warp w of the warpgroup rows 16 w .. 16 w + 15 with, for each 8 columns c,
// registers 4 c .. 4 c + 3 laid out as mma.m16n8k16's C (row gid: columns 8 c + 2 tig, + 1; row gid + 8: the same); A
// from registers is mma.m16n8k16's A fragment of the warp's 16 rows. So S's accumulators become P's A fragments as in
// FlashAttention-2 (c_to_a), and FlashAttention-3 does.
#pragma once
#include <cuda.h>  // (CUtensorMap: the TMA loads' tensor maps; nothing of the driver library is linked)
#include "mma.cuh"

namespace g4 {

// The descriptor of a 128-byte-swizzled operand at shared address s (16-byte aligned; its atom 1024-byte aligned).
__host__ __device__ __forceinline__ unsigned long long wg_desc(unsigned s, unsigned lbo_bytes, unsigned sbo_bytes) {
    return (unsigned long long) ((s & 0x3ffff) >> 4) | (unsigned long long) ((lbo_bytes >> 4) & 0x3fff) << 16 |
           (unsigned long long) ((sbo_bytes >> 4) & 0x3fff) << 32 | 1ull << 62;
}

// Byte offset of element (r, c) in a [R][D] tile stored as above.
template <int R>
__host__ __device__ __forceinline__ unsigned wg_off(int r, int c) {
    return (unsigned) ((c >> 6) * R * 128) + swz<64>(r, c & 63);
}

// That layout as load_tile's layout parameter: g4::load_tile<R, D, NT, true, WgLayout>.
template <int R, int D>
struct WgLayout {
    __host__ __device__ __forceinline__ static unsigned at(int r, int c) { return wg_off<R>(r, c); }
};

// The start of a kernel's dynamic shared memory rounded up to 1024 bytes, where the 128-byte swizzle atoms must start
// (the kernels ask for 1 KiB more than their tiles).
__device__ __forceinline__ unsigned char* wg_base(unsigned char* smem) {
    return smem + ((1024u - (smem_u32(smem) & 1023u)) & 1023u);
}

#ifdef G4_EMU
// (stand-ins in tools/kernel-emu.d/emu_mma.h, included by mma.cuh)
__device__ __forceinline__ void wgmma_ss_n128(float (&d)[64], unsigned long long da, unsigned long long db, int scale_d) {
    wgmma_issue(d, 128, da, db, nullptr, false, scale_d);
}
__device__ __forceinline__ void wgmma_rs_n128_t(float (&d)[64], const unsigned (&a)[4], unsigned long long db, int scale_d) {
    wgmma_issue(d, 128, 0, db, a, true, scale_d);
}
__device__ __forceinline__ void wgmma_ss_n64(float (&d)[32], unsigned long long da, unsigned long long db, int scale_d) {
    wgmma_issue(d, 64, da, db, nullptr, false, scale_d);
}
__device__ __forceinline__ void wgmma_ss_n64_tt(float (&d)[32], unsigned long long da, unsigned long long db, int scale_d) {
    wgmma_issue(d, 64, da, db, nullptr, true, scale_d, true);
}
__device__ __forceinline__ void wgmma_ss_n64_z(float (&d)[32], unsigned long long da, unsigned long long db) {
    wgmma_issue(d, 64, da, db, nullptr, false, 0);
}
__device__ __forceinline__ void wgmma_rs_n64_t(float (&d)[32], const unsigned (&a)[4], unsigned long long db, int scale_d) {
    wgmma_issue(d, 64, 0, db, a, true, scale_d);
}
__device__ __forceinline__ void sync_block_any() { __syncthreads(); }  // (the emulator's barrier counts arrivals, wherever)
// (mbarriers and TMA: emu.cpp keeps the barriers' state and lands each load late, at the wait that needs it, or at
// its issue: G4EMU_TMA=early)
__device__ __forceinline__ void mbar_init(unsigned b, unsigned count) { g4emu::mbar_init(b, (int) count); }
__device__ __forceinline__ void fence_mbar_init() {}
template <int N, bool INC>
__device__ __forceinline__ void set_max_regs() {}
__device__ __forceinline__ void bar_sync_named(int id, int count) { g4emu::named_sync(id, count); }
__device__ __forceinline__ void bar_arrive_named(int id, int count) { g4emu::named_arrive(id, count); }
__device__ __forceinline__ void mbar_arrive_tx(unsigned b, unsigned bytes) { g4emu::mbar_arrive(b, (int) bytes); }
__device__ __forceinline__ void mbar_arrive(unsigned b) { g4emu::mbar_arrive(b, 0); }
__device__ __forceinline__ void mbar_wait(unsigned b, unsigned parity) { g4emu::mbar_wait(b, (int) parity); }
__device__ __forceinline__ void tma_load_3d(unsigned dst, const CUtensorMap* map, int c0, int c1, int c2, unsigned b,
                                            unsigned long long) {
    const int c[3] = {c0, c1, c2};
    g4emu::tma_load(dst, map, 3, c, b);
}
__device__ __forceinline__ unsigned long long l2_evict_first() { return 0; }  // (the emulator has no L2)
__device__ __forceinline__ unsigned long long l2_evict_last() { return 0; }
__device__ __forceinline__ void prefetch_tensor_map(const CUtensorMap*) {}
// (the bulk reductions: emu.cpp checks them at the issue and performs them at the wait that retires their group)
__device__ __forceinline__ void bulk_add(float* dst, unsigned s, unsigned bytes) { g4emu::bulk_reduce(dst, s, (int) bytes, 0); }
__device__ __forceinline__ void bulk_add(unsigned long long* dst, unsigned s, unsigned bytes) {
    g4emu::bulk_reduce(dst, s, (int) bytes, 1);
}
__device__ __forceinline__ void bulk_commit() { g4emu::bulk_commit(); }
template <int N>
__device__ __forceinline__ void bulk_wait_read() { g4emu::bulk_wait(N, false); }
template <int N>
__device__ __forceinline__ void bulk_wait() { g4emu::bulk_wait(N, true); }
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define G4_WGMMA 1

// Bulk reductions (cp.reduce.async.bulk, shared::cta -> global, .add, .bulk_group; FlashAttention-3's dQ): `bytes` (a
// multiple of 16) at shared address s added element-wise into global dst, both 16-byte aligned, by the async proxy
// (the shared bytes need fence.proxy.async after their stores, and a barrier for other threads' stores). bulk_commit
// closes this thread's group; bulk_wait_read<N> returns when all but the newest N groups have read their shared
// bytes (which may then be written again), bulk_wait<N> when they are also done.
__device__ __forceinline__ void bulk_add(float* dst, unsigned s, unsigned bytes) {
    asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;\n" ::"l"(__cvta_generic_to_global(dst)), "r"(s), "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void bulk_add(unsigned long long* dst, unsigned s, unsigned bytes) {
    asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.u64 [%0], [%1], %2;\n" ::"l"(__cvta_generic_to_global(dst)), "r"(s), "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void bulk_commit() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void bulk_wait_read() { asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(N) : "memory"); }
template <int N>
__device__ __forceinline__ void bulk_wait() { asm volatile("cp.async.bulk.wait_group %0;\n" ::"n"(N) : "memory"); }

// mbarriers (shared::cta, 8 bytes at shared address b, 8-byte aligned) and TMA loads (CUTLASS's ClusterTransactionBarrier
// and SM90_TMA_LOAD_3D, for one CTA). mbar_init: `count` arrivals a phase (one thread, then fence_mbar_init and a
// barrier before any use); mbar_arrive_tx: this thread's arrival, after adding `bytes` to the bytes the phase waits
// for (the TMA loads that complete on it); mbar_wait: until the phase of parity `parity` has completed (the first
// phase has parity 0; a wait on parity 1 before it returns at once); tma_load_3d: the box at coordinates (c0, c1, c2)
// (innermost first) of the tensor map's tensor into shared memory at dst (128-byte aligned; 1024 for the 128-byte
// swizzle), its bytes counted on barrier b as they land, zeros for elements outside the tensor, with the L2 cache
// policy `policy` (l2_evict_first / l2_evict_last: createpolicy's, as FlashAttention-3 reads Q once and keeps K and V);
// prefetch_tensor_map: the map into the copy engine's cache before its first use.
__device__ __forceinline__ void mbar_init(unsigned b, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(b), "r"(count) : "memory");
}
__device__ __forceinline__ void fence_mbar_init() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }
// setmaxnreg: the warpgroup's registers a thread raised (INC) or lowered to N (a multiple of 8 in 24 .. 256), every
// warp of the warpgroup at once; a raise waits for registers another warpgroup lowered (the kernel's
// __launch_bounds__(threads, 1) fixes the count at the start, which ptxas needs to honour it).
template <int N, bool INC>
__device__ __forceinline__ void set_max_regs() {
    static_assert(N % 8 == 0 && N >= 24 && N <= 256, "setmaxnreg takes multiples of 8 from 24 to 256");
    if constexpr (INC) asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
    else asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}
__device__ __forceinline__ void mbar_arrive_tx(unsigned b, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(b), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(unsigned b) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(b) : "memory");
}
// A phase that has not completed after 2^24 tries traps (each try suspends the thread for at most 1 us, the hint: at
// most ~17 s in all, at least ~0.4 s if every try returned at once; a real wait here lasts microseconds, a few
// hundred under compute-sanitizer): a count, parity or transaction byte count that never completes becomes a launch failure
// at the next synchronize instead of a hang that only the test's class timeout ends (never yet run on a GPU). The
// counter lives inside the asm block: one register during the wait, which the 240-register consumers can spare (a
// clock64() deadline spilled them and serialized their wgmma).
__device__ __forceinline__ void mbar_wait(unsigned b, unsigned parity) {
    asm volatile(
        "{\n.reg .pred p;\n.reg .u32 n;\nmov.u32 n, 0;\nG4_MBAR_WAIT:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1, 1000;\n"
        "@p bra G4_MBAR_DONE;\n"
        "add.u32 n, n, 1;\n"
        "setp.lt.u32 p, n, 16777216;\n"
        "@p bra G4_MBAR_WAIT;\n"
        "trap;\n"
        "G4_MBAR_DONE:\n}\n" ::"r"(b), "r"(parity) : "memory");
}
__device__ __forceinline__ void tma_load_3d(unsigned dst, const CUtensorMap* map, int c0, int c1, int c2, unsigned b,
                                            unsigned long long policy) {
    asm volatile(
        "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1, {%2, %3, %4}], "
        "[%5], %6;\n" ::"r"(dst), "l"(reinterpret_cast<unsigned long long>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(b), "l"(policy)
        : "memory");
}
__device__ __forceinline__ unsigned long long l2_evict_first() {
    unsigned long long p;
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(p));
    return p;
}
__device__ __forceinline__ unsigned long long l2_evict_last() {
    unsigned long long p;
    asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;\n" : "=l"(p));
    return p;
}
__device__ __forceinline__ void prefetch_tensor_map(const CUtensorMap* map) {
    asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<unsigned long long>(map)) : "memory");
}

// Named barriers (ids 1-15; 0 is __syncthreads'): bar_sync_named arrives and waits until `count` threads (whole warps)
// have arrived at barrier id; bar_arrive_named arrives without waiting (FlashAttention-3's warpgroup scheduling). The
// .aligned forms, as CUTLASS's NamedBarrier and FlashAttention-3 use them: the warps that take part reach them at
// different instructions (sync here, arrive there), as in the PTX ISA's own producer / consumer example, each warp
// converged.
__device__ __forceinline__ void bar_sync_named(int id, int count) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}
__device__ __forceinline__ void bar_arrive_named(int id, int count) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}

// Orders this thread's generic-proxy shared writes (cp.async, stores) before later async-proxy reads (wgmma).
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// Before the first wgmma of a batch whose accumulators or A registers other instructions wrote.
// (the .aligned wgmma instructions need the warp converged: __syncwarp first, as insurance after per-lane branches such
// as the dK/dV kernel's bulk reductions and dQ staging; nvcc reconverges structured branches anyway)
__device__ __forceinline__ void wgmma_fence() {
    __syncwarp();
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
// Keeps the compiler from moving reads or writes of these registers across the asynchronous wgmma (CUTLASS's
// warpgroup_fence_operand).
template <int N>
__device__ __forceinline__ void fence_regs(float (&r)[N]) {
#pragma unroll
    for (int i = 0; i < N; i++) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N>
__device__ __forceinline__ void fence_regs(unsigned (&r)[N]) {
#pragma unroll
    for (int i = 0; i < N; i++) asm volatile("" : "+r"(r[i])::"memory");
}
template <int M, int N>
__device__ __forceinline__ void fence_regs(unsigned (&r)[M][N]) {  // (A fragments, a k-step a row)
#pragma unroll
    for (int i = 0; i < M; i++) fence_regs(r[i]);
}
// __syncthreads for code where the block's threads reach the barrier at different instructions (different paths
// through a kernel, each arriving the same number of times): barrier.sync without .aligned. (__syncthreads' bar.sync
// is barrier.sync.aligned, which the PTX ISA asks every thread of the block to reach at the same instruction.)
__device__ __forceinline__ void sync_block_any() { asm volatile("barrier.sync 0;\n" ::: "memory"); }

// The accumulator operands of a wgmma: its PTX register list and the matching asm outputs (32 or 64 floats).
#define G4_WG_R32 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, " \
                  "%24, %25, %26, %27, %28, %29, %30, %31}"
#define G4_WG_R64 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, " \
                  "%24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, " \
                  "%45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
#define G4_WG_D8(d, i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
                       "+f"(d[i + 6]), "+f"(d[i + 7])
#define G4_WG_D32(d) G4_WG_D8(d, 0), G4_WG_D8(d, 8), G4_WG_D8(d, 16), G4_WG_D8(d, 24)
#define G4_WG_D64(d) G4_WG_D32(d), G4_WG_D8(d, 32), G4_WG_D8(d, 40), G4_WG_D8(d, 48), G4_WG_D8(d, 56)
#define G4_WG_O8(d, i) "=f"(d[i]), "=f"(d[i + 1]), "=f"(d[i + 2]), "=f"(d[i + 3]), "=f"(d[i + 4]), "=f"(d[i + 5]), \
                       "=f"(d[i + 6]), "=f"(d[i + 7])
#define G4_WG_O32(d) G4_WG_O8(d, 0), G4_WG_O8(d, 8), G4_WG_O8(d, 16), G4_WG_O8(d, 24)

// d (64 x 128) = A B + scale_d d; A [64][16] K-major at descriptor da, B as [128][16] K-major (B^T stored row-major,
// QK^T's K) at db.
__device__ __forceinline__ void wgmma_ss_n128(float (&d)[64], unsigned long long da, unsigned long long db, int scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " G4_WG_R64 ", %64, %65, p, 1, 1, 0, 0;\n}\n"
        : G4_WG_D64(d)
        : "l"(da), "l"(db), "r"(scale_d));
}

// d (64 x 128) = A B + scale_d d; A [64][16] from registers (the mma.m16n8k16 A fragment of the warp's 16 rows),
// B [16][128] MN-major (stored row-major [k][n], PV's V) at db.
__device__ __forceinline__ void wgmma_rs_n128_t(float (&d)[64], const unsigned (&a)[4], unsigned long long db, int scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " G4_WG_R64 ", {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
        : G4_WG_D64(d)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(scale_d));
}

// d (64 x 64) = A B + scale_d d; A [64][16] from registers (the mma.m16n8k16 A fragment of the warp's 16 rows),
// B [16][64] MN-major (stored row-major [k][n], PV's V) at db.
__device__ __forceinline__ void wgmma_rs_n64_t(float (&d)[32], const unsigned (&a)[4], unsigned long long db, int scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " G4_WG_R32 ", {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
        : G4_WG_D32(d)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(scale_d));
}

// d (64 x 64) = A B + scale_d d; A [64][16] K-major at da, B as [64][16] K-major at db (S^T = K Q^T, dP^T = V dO^T).
__device__ __forceinline__ void wgmma_ss_n64(float (&d)[32], unsigned long long da, unsigned long long db, int scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " G4_WG_R32 ", %32, %33, p, 1, 1, 0, 0;\n}\n"
        : G4_WG_D32(d)
        : "l"(da), "l"(db), "r"(scale_d));
}

// d (64 x 64) = A B (wgmma_ss_n64 with scale-d 0): d's old values are not operands (outputs only), so that the
// registers of a product's last use may be taken before its first k-step is issued.
__device__ __forceinline__ void wgmma_ss_n64_z(float (&d)[32], unsigned long long da, unsigned long long db) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " G4_WG_R32 ", %32, %33, p, 1, 1, 0, 0;\n}\n"
        : G4_WG_O32(d)
        : "l"(da), "l"(db), "r"(0));
}

// d (64 x 64) = A B + scale_d d; A MN-major at da (stored [k][m]: dS^T for dS), B [16][64] MN-major at db (stored [k][n]).
__device__ __forceinline__ void wgmma_ss_n64_tt(float (&d)[32], unsigned long long da, unsigned long long db, int scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " G4_WG_R32 ", %32, %33, p, 1, 1, 1, 1;\n}\n"
        : G4_WG_D32(d)
        : "l"(da), "l"(db), "r"(scale_d));
}
#endif

#if defined(G4_EMU) || defined(G4_WGMMA)
// x = A B^T over D columns (16 a k-step), 64 x 64, issued and neither fenced nor committed (the caller does both, with
// whatever else goes in its batches): A a tile of RA rows, the warpgroup's 64 rows from row arow; B a tile of RB = 64
// rows; both K-major in the layout above.
template <int D, int RA, int RB>
__device__ __forceinline__ void wg_abt(float (&x)[32], unsigned a, unsigned b, int arow) {
    static_assert(RB == 64, "64 columns (n64)");
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        const unsigned ao = (kk >> 2) * (RA * 128) + arow * 128 + (kk & 3) * 32, bo = (kk >> 2) * (RB * 128) + (kk & 3) * 32;
        if (kk == 0) wgmma_ss_n64_z(x, wg_desc(a + ao, 16, 1024), wg_desc(b + bo, 16, 1024));
        else wgmma_ss_n64(x, wg_desc(a + ao, 16, 1024), wg_desc(b + bo, 16, 1024), 1);
    }
}

// x = A1 B1^T and y = A2 B2^T (wg_abt), fenced and committed as two groups (so that x can be used after
// wgmma_wait<1> while y still runs).
template <int D, int RA, int RB>
__device__ __forceinline__ void wg_two_abt(float (&x)[32], float (&y)[32], unsigned a1, unsigned b1, unsigned a2,
                                           unsigned b2, int arow) {
    fence_regs(x);
    fence_regs(y);
    wgmma_fence();
    wg_abt<D, RA, RB>(x, a1, b1, arow);
    wgmma_commit();
    wg_abt<D, RA, RB>(y, a2, b2, arow);
    wgmma_commit();
}

// d (64 x D) += sum over KS k-steps kk of A_kk B_kk: A_kk a[kk] (register fragments of the warp's 16 rows x 16 k),
// B_kk the rows 16 kk .. of a [rows][D] tile at b read MN-major (2048 bytes a k-step; lbo = rows x 128, the next 64
// columns). Fenced, not committed: the caller commits (and waits) with whatever else goes in the group.
template <int D, int KS, bool FENCE = true>
__device__ __forceinline__ void wg_acc_rs(float (&d)[D / 2], const unsigned (&a)[KS][4], unsigned b, unsigned lbo) {
    static_assert(D == 64 || D == 128, "head dims 64 and 128");
    if constexpr (FENCE) {
        fence_regs(d);
        wgmma_fence();
    }
#pragma unroll
    for (int kk = 0; kk < KS; kk++) {
        const unsigned long long bd = wg_desc(b + kk * 2048, lbo, 1024);
        if constexpr (D == 128) wgmma_rs_n128_t(d, a[kk], bd, 1);
        else wgmma_rs_n64_t(d, a[kk], bd, 1);
    }
}
#endif

}  // namespace g4
