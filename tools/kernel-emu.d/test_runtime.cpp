// tools/kernel-emu: the emulated runtime's deferred streams (G4EMU_ASYNC, cudart_emu.cpp), the mode that runs the
// Java GPU tests (tools/kernel-emu --jvm --async) with streams that lag behind the host: each property it must have
// for a missing wait or an unsynchronized host read to show, checked on the runtime API itself.
#include "emu.h"  // (first, as the kernels' sources get it: a kernel of this file's own is launched below)

#include <cuda_runtime.h>
#include <unistd.h>

#include "emu_test.h"

using namespace emu_test;

namespace g4emu {
void set_deferred(bool on);  // cudart_emu.cpp
}

namespace {
__global__ void runtime_nothing_kernel(int) {}

bool all_bytes(const void* p, size_t n, unsigned char v) {
    const unsigned char* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; i++)
        if (b[i] != v) return false;
    return true;
}

#define CHECK(cond, what)                                          \
    do {                                                           \
        if (!(cond)) {                                             \
            printf("  runtime/deferred_streams: %s\n", what);      \
            ok = false;                                            \
        }                                                          \
    } while (0)
}  // namespace

EMU_CASE("runtime", deferred_streams) {
    bool ok = true;
    g4emu::set_deferred(true);
    const size_t n = 4096;
    cudaStream_t a, b;
    cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking);
    cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking);
    void *x, *y, *z;
    cudaMalloc(&x, n);
    cudaMalloc(&y, n);
    cudaMalloc(&z, n);
    void* pinned;
    cudaHostAlloc(&pinned, n, 0);
    cudaEvent_t ev;
    cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);

    // work queued on a has not run: the host sees the old bytes until it synchronizes
    cudaMemsetAsync(x, 0x3f, n, a);
    CHECK(all_bytes(x, n, 0xff), "a memset ran before anything waited for its stream");
    cudaMemcpyAsync(pinned, x, n, cudaMemcpyDeviceToHost, a);
    CHECK(all_bytes(pinned, n, 0xcd), "a copy into pinned memory landed before its stream was synchronized");
    cudaEventRecord(ev, a);
    CHECK(cudaEventQuery(ev) == cudaErrorNotReady, "an event with work before it was ready at once");
    CHECK(all_bytes(pinned, n, 0xcd), "a not-ready answer ran the work");
    int polls = 0;  // (the stream lags G4EMU_ASYNC_LAG_MS behind a poller, 2 s by default)
    while (cudaEventQuery(ev) == cudaErrorNotReady && polls < 100000) {
        CHECK(all_bytes(pinned, n, 0xcd), "a not-ready answer ran the work");
        usleep(100);
        polls++;
    }
    CHECK(polls > 1 && polls < 100000, "an event did not turn ready after its lag, or at once");
    CHECK(all_bytes(pinned, n, 0x3f), "the pinned copy did not land by its event");

    // a stream that does not wait for another's event reads what that one has not written yet; one that waits does not
    cudaMemsetAsync(x, 0x11, n, a);
    cudaMemcpyAsync(y, x, n, cudaMemcpyDeviceToDevice, b);  // no wait: runs on b before a's memset
    cudaStreamSynchronize(b);
    CHECK(all_bytes(y, n, 0x3f), "a copy on b without a wait saw a's later memset");
    cudaEventRecord(ev, a);
    cudaStreamWaitEvent(b, ev, 0);
    cudaMemsetAsync(x, 0x22, n, a);  // after the record: the wait must not include it
    cudaMemcpyAsync(z, x, n, cudaMemcpyDeviceToDevice, b);
    cudaStreamSynchronize(b);
    CHECK(all_bytes(z, n, 0x11), "a copy on b after a wait did not see exactly the work recorded before the event");
    cudaStreamSynchronize(a);
    CHECK(all_bytes(x, n, 0x22), "a's last memset did not run at its synchronization");

    // a copy from pageable memory reads it when issued (CUDA stages it); one from pinned memory when its stream runs
    std::vector<unsigned char> pageable(n, 0x44);
    memset(pinned, 0x55, n);
    cudaMemcpyAsync(y, pageable.data(), n, cudaMemcpyHostToDevice, a);
    cudaMemcpyAsync(z, pinned, n, cudaMemcpyHostToDevice, a);
    memset(pageable.data(), 0x66, n);
    memset(pinned, 0x77, n);  // before the stream ran: the copy takes this
    cudaStreamSynchronize(a);
    CHECK(all_bytes(y, n, 0x44), "a copy from pageable memory read it after the call returned");
    CHECK(all_bytes(z, n, 0x77), "a copy from pinned memory read it before its stream ran");

    // a stream-ordered free poisons the block when its stream gets there, not before
    void* p;
    cudaMallocAsync(&p, n, a);
    cudaMemsetAsync(p, 0x12, n, a);
    cudaStreamSynchronize(a);
    cudaMemsetAsync(x, 0, n, a);
    cudaFreeAsync(p, a);
    CHECK(all_bytes(p, n, 0x12), "a free poisoned the block before its stream reached it");
    cudaStreamSynchronize(a);
    CHECK(all_bytes(p, n, 0xff), "a free did not poison the block when its stream ran it");

    // a launch the GPU refuses fails at the launch, not when its stream runs it
    cudaGetLastError();
    cudaMemsetAsync(x, 1, n, a);
    g4emu::launch("runtime_nothing_kernel", runtime_nothing_kernel, dim3(1), dim3(2048), 0, a)(0);  // (2048 threads a block)
    cudaError_t at_launch = cudaGetLastError();
    cudaStreamSynchronize(a);
    CHECK(at_launch == cudaErrorInvalidConfiguration, "a block of 2048 threads was not refused at its launch");
    CHECK(cudaGetLastError() == cudaSuccess, "a refused launch left an error for the synchronization");

    // a D2H copy to pageable memory returns with the stream's work before it done
    cudaMemsetAsync(x, 0x5a, n, a);
    std::vector<unsigned char> back(n, 0);
    cudaMemcpyAsync(back.data(), x, n, cudaMemcpyDeviceToHost, a);
    CHECK(all_bytes(back.data(), n, 0x5a), "a copy to pageable memory returned before its stream's earlier work ran");

    cudaEventDestroy(ev);
    cudaFreeHost(pinned);
    cudaFree(x);
    cudaFree(y);
    cudaFree(z);
    cudaStreamDestroy(a);
    cudaStreamDestroy(b);
    g4emu::set_deferred(false);
    printf("  runtime/deferred_streams: %s\n", ok ? "queued work, waits, copies and frees as a lagging GPU shows them" : "FAILED");
    return ok;
}
