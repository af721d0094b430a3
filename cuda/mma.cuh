// Tensor-core building blocks for the attention kernels (sm_80+): cp.async copies into shared memory, ldmatrix, and
// mma.sync m16n8k16 bf16 x bf16 -> fp32. Device only.
//
// Fragment layouts of mma.m16n8k16 (lane = 4 * gid + tig, gid = lane / 4, tig = lane % 4), each register two bf16
// (the lower column in the low half):
//   A 16x16 (row-major):  a0 (gid, 2tig..+1)  a1 (gid+8, 2tig..+1)  a2 (gid, 8+2tig..+1)  a3 (gid+8, 8+2tig..+1)
//   B 16x8 (k x n):       b0 (k = 2tig..+1, n = gid)  b1 (k = 8+2tig..+1, n = gid)
//   C 16x8 fp32:          c0, c1 (gid, 2tig..+1)  c2, c3 (gid+8, 2tig..+1)
// ldmatrix.x4 loads four 8x8 bf16 matrices whose row addresses come from lanes 0-7, 8-15, 16-23, 24-31; lane l
// receives row l/4, columns 2(l%4)..+1 of each (with .trans: of each transposed). So an A fragment of rows r0..r0+15,
// columns c0..c0+15 of a row-major tile is ldsm_x4 at (r0 + l % 16, c0 + (l / 16) * 8); two B fragments (n-blocks
// n0, n0+8) of B = X^T with X stored row-major [n][k] (QK^T's K) are ldsm_x4 at (n0 + l % 8 + (l / 16) * 8,
// k0 + (l / 8 % 2) * 8); two B fragments of B = X stored row-major [k][n] (PV's V) are ldsm_x4_t at
// (k0 + l % 8 + (l / 8 % 2) * 8, n0 + (l / 16) * 8).
//
// Shared tiles are row-major bf16 [rows][COLS] with 16-byte chunks swizzled (chunk ^ row-dependent mask) so that the
// eight rows one ldmatrix matrix reads fall in different banks.
#pragma once
#include "common.cuh"

namespace g4 {

__device__ __forceinline__ unsigned smem_u32(const void* p) { return (unsigned) __cvta_generic_to_shared(p); }

// Byte offset of element (row, col) in a swizzled [rows][COLS] bf16 tile; col's chunk (col / 8) is permuted within
// the row, the element inside the chunk (col % 8) is not.
template <int COLS>
__host__ __device__ __forceinline__ unsigned swz(int row, int col) {
    constexpr int C = COLS / 8;
    static_assert(C == 4 || C % 8 == 0, "rows of 32 or a multiple of 64 bf16");
    const int chunk = col >> 3;
    const int phys = C >= 8 ? chunk ^ (row & 7) : chunk ^ ((row >> 1) & 3);
    return (unsigned) ((row * COLS + phys * 8 + (col & 7)) * 2);
}

// The 16-byte row lane l hands to ldmatrix.x4 (byte offset in a swizzled [rows][COLS] tile), for the four operand
// shapes of the attention kernels (the mapping spelled out at the top of this file). The host test of the fragment
// layouts (native/hostmath.cu g4_host_mma_layout_check, AttentionDeviceMathTest) emulates ldmatrix and mma.m16n8k16
// from the PTX ISA's fragment tables over these same functions.
//   frag_a:   A fragment (16 x 16) of a row-major [m][k] tile at rows r0.., columns c0.. (ldsm_x4).
//   frag_bt:  two B fragments (n-blocks n0, n0 + 8; k0..k0+15) of B = X^T, X row-major [n][k] (ldsm_x4).
//   frag_b:   two B fragments (k0..k0+15; n-blocks n0, n0 + 8) of B = X, X row-major [k][n] (ldsm_x4_t).
//   frag_at:  A fragment (m0..m0+15 x k0..k0+15) of A = X^T, X row-major [k][m] (ldsm_x4_t).
template <int COLS>
__host__ __device__ __forceinline__ unsigned frag_a(int r0, int c0, int l) { return swz<COLS>(r0 + (l & 15), c0 + (l >> 4) * 8); }

template <int COLS>
__host__ __device__ __forceinline__ unsigned frag_bt(int n0, int k0, int l) {
    return swz<COLS>(n0 + (l & 7) + (l >> 4) * 8, k0 + ((l >> 3) & 1) * 8);
}

template <int COLS>
__host__ __device__ __forceinline__ unsigned frag_b(int k0, int n0, int l) {
    return swz<COLS>(k0 + (l & 7) + ((l >> 3) & 1) * 8, n0 + (l >> 4) * 8);
}

template <int COLS>
__host__ __device__ __forceinline__ unsigned frag_at(int k0, int m0, int l) {
    return swz<COLS>(k0 + (l & 7) + (l >> 4) * 8, m0 + ((l >> 3) & 1) * 8);
}

// Byte offset of register i (0..3) of lane l's A fragment of the 16 x 16 block at (r0, c0) of a swizzled tile, for
// storing a fragment back as a tile (the inverse of frag_a): row r0 + gid + 8 (i & 1), columns c0 + 2 tig + 8 (i >> 1)
// and the next one.
template <int COLS>
__host__ __device__ __forceinline__ unsigned frag_a_reg(int r0, int c0, int l, int i) {
    return swz<COLS>(r0 + (l >> 2) + (i & 1) * 8, c0 + (l & 3) * 2 + (i >> 1) * 8);
}

#ifdef G4_EMU
#include "emu_mma.h"  // tools/kernel-emu: cp.async, ldmatrix, mma.sync and the lane id on the CPU emulator
#else
// 16 bytes global -> shared, asynchronously; zero-filled (nothing read) when !pred.
__device__ __forceinline__ void cp_async16(unsigned dst, const void* src, bool pred) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(pred ? 16 : 0));
}

// 4 bytes global -> shared, asynchronously; zero-filled when !pred.
__device__ __forceinline__ void cp_async4(unsigned dst, const void* src, bool pred) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(pred ? 4 : 0));
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldsm_x4(unsigned (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

__device__ __forceinline__ void ldsm_x4_t(unsigned (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

// d += a b (16x8x16, bf16 inputs, fp32 accumulation).
__device__ __forceinline__ void mma_bf16(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

#endif  // G4_EMU

// Two fp32 rounded to bf16 (RNE) in one register, lo in the low half.
__host__ __device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&v);
}

// The A fragment (16 rows x 16 k) of a matrix held as the C fragments of its n-blocks 2kk (c0: columns 0-7) and
// 2kk + 1 (c1: columns 8-15), rounded to bf16: FlashAttention-2's reuse of S/P (and dS) accumulators as the next
// product's A operand. a0 = (gid, 2tig..) = c0[0..1], a1 = (gid + 8, 2tig..) = c0[2..3], a2, a3 the same of c1.
__host__ __device__ __forceinline__ void c_to_a(unsigned (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
    a[0] = pack_bf16(c0[0], c0[1]);
    a[1] = pack_bf16(c0[2], c0[3]);
    a[2] = pack_bf16(c1[0], c1[1]);
    a[3] = pack_bf16(c1[2], c1[3]);
}

#ifndef G4_EMU
// The lane index read from the hardware register each time: an asm volatile result cannot be hoisted out of a loop,
// which keeps the compiler from precomputing every swizzled ldmatrix address of an unrolled tile loop into registers
// (one per (k-step, n-block): dozens of registers on top of the accumulators). Recomputed addresses cost a few
// integer instructions per ldmatrix instead.
__device__ __forceinline__ int lane_id() {
    int l;
    asm volatile("mov.u32 %0, %%laneid;\n" : "=r"(l));
    return l;
}

// threadIdx.x read from the hardware register each time, for the same reason as lane_id: a tile loader's per-thread
// row offsets are loop-invariant, and hoisted out of a tile loop they hold a 64-bit address per copy for the whole loop.
__device__ __forceinline__ int thread_x() {
    int t;
    asm volatile("mov.u32 %0, %%tid.x;\n" : "=r"(t));
    return t;
}

#endif  // G4_EMU

// The shared layout of an [R][D] bf16 tile for mma.sync's ldmatrix: rows of D columns, swizzled by swz<D>. (The
// wgmma kernels' layout, column blocks of 64, is WgLayout in wgmma.cuh.)
template <int R, int D>
struct SwzLayout {
    __host__ __device__ __forceinline__ static unsigned at(int r, int c) { return swz<D>(r, c); }
};

// Copies a [R][D] bf16 tile from global rows g + r * stride (elements) into a shared tile of layout L with NT
// threads; rows r >= valid are zero-filled and not read.
// UNROLL false: one copy at a time (a loop), for a copy issued while the registers are full of accumulators.
template <int R, int D, int NT, bool UNROLL = true, template <int, int> class L = SwzLayout>
__device__ __forceinline__ void load_tile(unsigned s, const __nv_bfloat16* g, long long stride, int valid) {
    constexpr int C = D / 8;
#pragma unroll (UNROLL ? (R * C + NT - 1) / NT : 1)
    for (int it = 0; it < (R * C + NT - 1) / NT; it++) {
        const int i = it * NT + g4::thread_x();
        if ((R * C) % NT != 0 && i >= R * C) break;
        const int r = i / C, c = i % C;
        const bool ok = r < valid;
        cp_async16(s + L<R, D>::at(r, c * 8), g + (ok ? r * stride : 0) + c * 8, ok);
    }
}

// Max and sum over the four lanes of a quad (the lanes holding one row of an mma C fragment).
__device__ __forceinline__ float quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}

__device__ __forceinline__ float quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

}  // namespace g4
