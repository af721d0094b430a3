// tools/kernel-emu's NCCL (libnccl.so.2): a communicator of one rank on the one emulated device, what the GPU hosts'
// NCCL allows there too (two ranks on one GPU are refused: "Duplicate GPU detected"). Every collective of one rank is
// a copy of its input into its output (sum, avg, max, min and prod of one value are the value), ordered on the
// stream like any other work. A world above one is refused with ncclInvalidUsage.
#include <cuda_runtime.h>
#include <stdio.h>
#include <string.h>

#include <functional>

namespace g4emu {
void submit(cudaStream_t stream, std::function<void()> op);
}

namespace {
constexpr int SUCCESS = 0, INVALID_ARGUMENT = 4, INVALID_USAGE = 5;

struct UniqueId {
    char internal[128];
};

struct Comm {
    bool aborted = false;
};

size_t type_size(int t) {
    switch (t) {
        case 0: case 1: return 1;           // int8, uint8
        case 2: case 3: case 7: return 4;   // int32, uint32, float32
        case 4: case 5: case 8: return 8;   // int64, uint64, float64
        case 6: case 9: return 2;           // float16, bfloat16
        default: return 0;
    }
}

const char* last_error = "";

int copy(const void* send, void* recv, size_t count, int type, Comm* comm, cudaStream_t s) {
    size_t es = type_size(type);
    if (es == 0 || comm == nullptr) return INVALID_ARGUMENT;
    if (comm->aborted) return INVALID_USAGE;
    size_t bytes = count * es;
    if (send != recv) g4emu::submit(s, [=]() { memmove(recv, send, bytes); });
    return SUCCESS;
}
}  // namespace

extern "C" {
int ncclGetVersion(int* v) { *v = 22800; return SUCCESS; }
int ncclGetUniqueId(UniqueId* id) {
    memset(id, 0, sizeof *id);
    snprintf(id->internal, sizeof id->internal, "kernel-emu");
    return SUCCESS;
}
int ncclCommInitRank(Comm** comm, int nranks, UniqueId, int rank) {
    *comm = nullptr;
    if (nranks != 1 || rank != 0) {
        last_error = "kernel-emu: one device, so one rank (a world above 1 needs as many GPUs)";
        return INVALID_USAGE;
    }
    *comm = new Comm();
    return SUCCESS;
}
int ncclCommDestroy(Comm* c) { delete c; return SUCCESS; }
int ncclCommAbort(Comm* c) { delete c; return SUCCESS; }
int ncclCommGetAsyncError(Comm* c, int* e) { *e = c && c->aborted ? INVALID_USAGE : SUCCESS; return SUCCESS; }
int ncclCommCount(Comm*, int* n) { *n = 1; return SUCCESS; }
int ncclCommUserRank(Comm*, int* r) { *r = 0; return SUCCESS; }
int ncclCommCuDevice(Comm*, int* d) { *d = 0; return SUCCESS; }
const char* ncclGetErrorString(int r) {
    switch (r) {
        case SUCCESS: return "no error";
        case INVALID_ARGUMENT: return "invalid argument (kernel-emu)";
        case INVALID_USAGE: return "invalid usage (kernel-emu)";
        default: return "NCCL error (kernel-emu)";
    }
}
const char* ncclGetLastError(Comm*) { return last_error; }
int ncclGroupStart(void) { return SUCCESS; }
int ncclGroupEnd(void) { return SUCCESS; }

int ncclAllReduce(const void* send, void* recv, size_t count, int type, int, Comm* c, cudaStream_t s) {
    return copy(send, recv, count, type, c, s);
}
int ncclReduceScatter(const void* send, void* recv, size_t recvcount, int type, int, Comm* c, cudaStream_t s) {
    return copy(send, recv, recvcount, type, c, s);
}
int ncclAllGather(const void* send, void* recv, size_t sendcount, int type, Comm* c, cudaStream_t s) {
    return copy(send, recv, sendcount, type, c, s);
}
int ncclBroadcast(const void* send, void* recv, size_t count, int type, int root, Comm* c, cudaStream_t s) {
    return root != 0 ? INVALID_ARGUMENT : copy(send, recv, count, type, c, s);
}
int ncclReduce(const void* send, void* recv, size_t count, int type, int, int root, Comm* c, cudaStream_t s) {
    return root != 0 ? INVALID_ARGUMENT : copy(send, recv, count, type, c, s);
}
}  // extern "C"
