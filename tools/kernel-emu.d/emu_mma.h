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
