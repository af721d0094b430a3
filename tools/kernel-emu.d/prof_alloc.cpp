// tools/kernel-emu --profile (prof.cpp): host allocations (the drivers' buffers, which stand for device memory) start
// on 256-byte boundaries, as cudaMalloc's do, so that a request's sectors are counted as they fall on a GPU. (Its own
// file: where these are inlined next to the standard containers, GCC takes free() for a mismatched deallocation.)
#include <cstdlib>
#include <new>

void* operator new(size_t n) {
    void* p = aligned_alloc(256, (n + 255) / 256 * 256);
    if (!p) throw std::bad_alloc();
    return p;
}
void* operator new[](size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { free(p); }
void operator delete[](void* p) noexcept { free(p); }
void operator delete(void* p, size_t) noexcept { free(p); }
void operator delete[](void* p, size_t) noexcept { free(p); }

