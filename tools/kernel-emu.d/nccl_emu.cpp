// tools/kernel-emu's NCCL (libnccl.so.2): communicators of one or more ranks in one process, each rank on its own
// emulated device (G4EMU_DEVICES of them, cudart_emu.cpp), as one JVM per node drives its GPUs, a thread each. As on
// the GPU hosts, two ranks of a communicator on one device are refused ("Duplicate GPU detected"), so a world above
// one needs G4EMU_DEVICES >= the world. A communicator spanning processes (tools/launch's nodes) is not emulated: its
// ranks would wait for peers that never join, so ncclCommInitRank gives up after G4EMU_NCCL_TIMEOUT_S (default 120).
//
// The emulated device runs every operation when it is issued, so a collective runs when its last rank issues it:
// each rank's call waits (without holding the device) until every rank of the communicator has made the same call,
// then the last one computes every rank's output. Reductions add in fp32 in rank order (x_0 + x_1 + ...; AVG then
// divides by the world) and a bf16 result is rounded once, as LocalCommunicator does: NCCL's own bf16 sums round at
// each ring hop, so on a GPU bf16 results may differ in the last bits. Calls that do not match across the ranks (kind,
// count, type, operation, root) fail on every rank with ncclInvalidUsage, where NCCL would hang or corrupt memory. An
// aborted communicator fails its rank's waiting and later calls; its peers' waiting calls fail too (on a GPU they
// would wait for their own watchdog). Collectives on a capturing stream are refused (none are captured here).
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace {
constexpr int SUCCESS = 0, INVALID_ARGUMENT = 4, INVALID_USAGE = 5, SYSTEM_ERROR = 2;
enum Kind { ALL_REDUCE, REDUCE_SCATTER, ALL_GATHER, BROADCAST, REDUCE };
const char* kind_name[] = {"ncclAllReduce", "ncclReduceScatter", "ncclAllGather", "ncclBroadcast", "ncclReduce"};

struct UniqueId {
    char internal[128];
};

struct Call {
    Kind kind;
    const void* send;
    void* recv;
    size_t count;  // per rank: the output's elements (reduce-scatter), the input's (all-gather), else the buffer's
    int type, op, root;
};

struct Group {
    std::mutex m;
    std::condition_variable cv;
    int nranks = 0, joined = 0, members = 0;
    std::vector<int> devices;     // each rank's device (-1: not joined)
    std::vector<Call> calls;      // this round's call of each rank
    std::vector<bool> arrived;
    int arrivals = 0;
    long long round = 0;          // completed collectives
    int result = SUCCESS;         // of the last completed round
    bool broken = false;          // a rank aborted: every call fails
    std::string why;
};

struct Comm {
    Group* g;
    int rank, nranks, device;
    std::atomic<bool> aborted{false};
};

std::mutex registry_mu;
std::map<std::string, Group*> registry;
std::atomic<long long> ids{0};
thread_local std::string last_error_text;
const char* last_error = "";

void set_error(const std::string& s) {
    last_error_text = s;
    last_error = last_error_text.c_str();
}

size_t type_size(int t) {
    switch (t) {
        case 0: case 1: return 1;           // int8, uint8
        case 2: case 3: case 7: return 4;   // int32, uint32, float32
        case 4: case 5: case 8: return 8;   // int64, uint64, float64
        case 6: case 9: return 2;           // float16, bfloat16
        default: return 0;
    }
}

int timeout_s() {
    const char* e = getenv("G4EMU_NCCL_TIMEOUT_S");
    return e != nullptr && *e ? atoi(e) : 120;
}

float bf16_to_float(uint16_t h) {
    uint32_t u = (uint32_t) h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t float_to_bf16(float f) {  // round to nearest even; NaN stays NaN
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;
    return (uint16_t) ((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

double load(const void* p, size_t i, int type) {
    switch (type) {
        case 0: return ((const int8_t*) p)[i];
        case 1: return ((const uint8_t*) p)[i];
        case 2: return ((const int32_t*) p)[i];
        case 3: return ((const uint32_t*) p)[i];
        case 4: return (double) ((const int64_t*) p)[i];
        case 5: return (double) ((const uint64_t*) p)[i];
        case 7: return ((const float*) p)[i];
        case 8: return ((const double*) p)[i];
        case 9: return bf16_to_float(((const uint16_t*) p)[i]);
        default: return 0;
    }
}

void store(void* p, size_t i, int type, double v) {
    switch (type) {
        case 0: ((int8_t*) p)[i] = (int8_t) v; break;
        case 1: ((uint8_t*) p)[i] = (uint8_t) v; break;
        case 2: ((int32_t*) p)[i] = (int32_t) v; break;
        case 3: ((uint32_t*) p)[i] = (uint32_t) v; break;
        case 4: ((int64_t*) p)[i] = (int64_t) v; break;
        case 5: ((uint64_t*) p)[i] = (uint64_t) v; break;
        case 7: ((float*) p)[i] = (float) v; break;
        case 8: ((double*) p)[i] = v; break;
        case 9: ((uint16_t*) p)[i] = float_to_bf16((float) v); break;
    }
}

// Element i of the reduction over the ranks' buffers at element offset `at` (fp32 arithmetic for fp32 and bf16, in
// rank order; integers and fp64 in double).
double reduce_at(const std::vector<Call>& calls, size_t at, int type, int op) {
    bool f32 = type == 7 || type == 9;
    double acc = 0;
    float facc = 0;
    for (size_t r = 0; r < calls.size(); r++) {
        double x = load(calls[r].send, at, type);
        if (r == 0) {
            acc = x;
            facc = (float) x;
            continue;
        }
        switch (op) {
            case 0: case 4: if (f32) facc += (float) x; else acc += x; break;         // sum, avg
            case 1: if (f32) facc *= (float) x; else acc *= x; break;                 // prod
            case 2: if (f32) facc = facc > (float) x ? facc : (float) x; else acc = acc > x ? acc : x; break;  // max
            case 3: if (f32) facc = facc < (float) x ? facc : (float) x; else acc = acc < x ? acc : x; break;  // min
        }
    }
    if (op == 4) {
        if (f32) facc /= (float) calls.size();
        else acc /= (double) calls.size();
    }
    return f32 ? (double) facc : acc;
}

// Every rank's output of this round (the calls match). Outputs go through scratch first: a rank's output may be
// another's (or its own) input.
void run_round(Group* g) {
    const std::vector<Call>& c = g->calls;
    const Call& k = c[0];
    size_t n = (size_t) g->nranks, es = type_size(k.type);
    std::vector<std::vector<unsigned char>> out(n);
    for (size_t r = 0; r < n; r++) {
        size_t len = k.kind == ALL_GATHER ? k.count * n : k.count;
        if (k.kind == REDUCE && (int) r != k.root) continue;
        out[r].resize(len * es);
        void* o = out[r].data();
        switch (k.kind) {
            case ALL_REDUCE: case REDUCE:
                for (size_t i = 0; i < len; i++) store(o, i, k.type, reduce_at(c, i, k.type, k.op));
                break;
            case REDUCE_SCATTER:
                for (size_t i = 0; i < len; i++) store(o, i, k.type, reduce_at(c, r * k.count + i, k.type, k.op));
                break;
            case ALL_GATHER:
                for (size_t j = 0; j < n; j++) memcpy((unsigned char*) o + j * k.count * es, c[j].send, k.count * es);
                break;
            case BROADCAST:
                memcpy(o, c[k.root].send, k.count * es);
                break;
        }
    }
    for (size_t r = 0; r < n; r++)
        if (!out[r].empty()) memcpy(c[r].recv, out[r].data(), out[r].size());
}

int collective(Comm* comm, Call call, cudaStream_t s) {
    if (comm == nullptr || type_size(call.type) == 0 || call.op < 0 || call.op > 4) return INVALID_ARGUMENT;
    if (comm->aborted) {
        set_error("kernel-emu: the communicator was aborted");
        return INVALID_USAGE;
    }
    cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(s, &st) == cudaSuccess && st != cudaStreamCaptureStatusNone) {
        set_error("kernel-emu: a collective on a capturing stream");
        return INVALID_USAGE;
    }
    int device = -1;
    cudaGetDevice(&device);
    if (device != comm->device) {
        set_error("kernel-emu: " + std::string(kind_name[call.kind]) + " of rank " + std::to_string(comm->rank) + " issued on device "
                  + std::to_string(device) + ", its communicator's device is " + std::to_string(comm->device));
        return INVALID_USAGE;
    }
    if (comm->nranks == 1) {  // one rank: its own input is every output
        size_t es = type_size(call.type);
        size_t bytes = call.count * es;
        if (call.send != call.recv) memmove(call.recv, call.send, bytes);
        return SUCCESS;
    }
    Group* g = comm->g;
    std::unique_lock<std::mutex> l(g->m);
    if (g->broken) {
        set_error("kernel-emu: " + g->why);
        return INVALID_USAGE;
    }
    long long my_round = g->round;
    g->calls[comm->rank] = call;
    g->arrived[comm->rank] = true;
    if (++g->arrivals == g->nranks) {
        const Call& k = g->calls[0];
        std::string bad;
        for (int r = 1; r < g->nranks && bad.empty(); r++) {
            const Call& o = g->calls[r];
            if (o.kind != k.kind || o.count != k.count || o.type != k.type || (k.kind != ALL_GATHER && k.kind != BROADCAST && o.op != k.op)
                || ((k.kind == BROADCAST || k.kind == REDUCE) && o.root != k.root))
                bad = "rank 0 called " + std::string(kind_name[k.kind]) + "(count " + std::to_string(k.count) + ", type " + std::to_string(k.type)
                      + ") and rank " + std::to_string(r) + " " + kind_name[o.kind] + "(count " + std::to_string(o.count) + ", type "
                      + std::to_string(o.type) + ")";
        }
        if (bad.empty() && (k.kind == BROADCAST || k.kind == REDUCE) && (k.root < 0 || k.root >= g->nranks)) bad = "root " + std::to_string(k.root);
        if (bad.empty()) {
            run_round(g);
            g->result = SUCCESS;
        } else {
            g->result = INVALID_USAGE;
            g->why = "mismatched collectives: " + bad;
        }
        g->arrivals = 0;
        for (int r = 0; r < g->nranks; r++) g->arrived[r] = false;
        g->round++;
        g->cv.notify_all();
    } else {
        g->cv.wait(l, [&] { return g->round != my_round || g->broken || comm->aborted; });
        if (g->round == my_round) {  // broken or aborted while waiting: the round never completes
            g->broken = true;
            if (g->why.empty()) g->why = "a rank's communicator was aborted";
            set_error("kernel-emu: " + g->why);
            g->cv.notify_all();
            return INVALID_USAGE;
        }
    }
    if (g->result != SUCCESS) set_error("kernel-emu: " + g->why);
    return g->result;
}
}  // namespace

extern "C" {
int ncclGetVersion(int* v) { *v = 22800; return SUCCESS; }
int ncclGetUniqueId(UniqueId* id) {
    memset(id, 0, sizeof *id);
    snprintf(id->internal, sizeof id->internal, "kernel-emu-%lld", (long long) ++ids);
    return SUCCESS;
}

int ncclCommInitRank(Comm** comm, int nranks, UniqueId id, int rank) {
    *comm = nullptr;
    int devices = 0, device = -1;
    cudaGetDeviceCount(&devices);
    cudaGetDevice(&device);
    if (nranks < 1 || rank < 0 || rank >= nranks) {
        set_error("kernel-emu: rank " + std::to_string(rank) + " of " + std::to_string(nranks));
        return INVALID_ARGUMENT;
    }
    if (nranks > devices) {
        set_error("kernel-emu: " + std::to_string(devices) + " emulated device(s) (G4EMU_DEVICES), so at most that many ranks; a world of "
                  + std::to_string(nranks) + " needs as many GPUs");
        return INVALID_USAGE;
    }
    std::string key(id.internal, strnlen(id.internal, sizeof id.internal));
    Group* g;
    {
        std::lock_guard<std::mutex> l(registry_mu);
        auto it = registry.find(key);
        if (it == registry.end()) {
            g = new Group();
            g->nranks = nranks;
            g->devices.assign(nranks, -1);
            g->calls.resize(nranks);
            g->arrived.assign(nranks, false);
            registry[key] = g;
        } else {
            g = it->second;
        }
    }
    std::unique_lock<std::mutex> l(g->m);
    if (g->nranks != nranks) {
        set_error("kernel-emu: rank " + std::to_string(rank) + " says the world is " + std::to_string(nranks) + ", another rank said "
                  + std::to_string(g->nranks));
        return INVALID_USAGE;
    }
    if (g->devices[rank] >= 0) {
        set_error("kernel-emu: rank " + std::to_string(rank) + " joined twice");
        return INVALID_USAGE;
    }
    for (int r = 0; r < nranks; r++)
        if (g->devices[r] == device) {
            set_error("kernel-emu: Duplicate GPU detected: rank " + std::to_string(rank) + " and rank " + std::to_string(r) + " both on device "
                      + std::to_string(device));
            return INVALID_USAGE;
        }
    g->devices[rank] = device;
    g->joined++;
    g->members++;
    g->cv.notify_all();
    if (!g->cv.wait_for(l, std::chrono::seconds(timeout_s()), [&] { return g->joined == g->nranks || g->broken; }) || g->broken) {
        g->devices[rank] = -1;
        g->joined--;
        g->members--;
        set_error("kernel-emu: ncclCommInitRank: " + std::to_string(g->joined) + " of " + std::to_string(nranks)
                  + " ranks joined (a communicator across processes is not emulated)");
        return SYSTEM_ERROR;
    }
    Comm* c = new Comm();
    c->g = g;
    c->rank = rank;
    c->nranks = nranks;
    c->device = device;
    *comm = c;
    return SUCCESS;
}

static void release(Comm* c) {
    Group* g = c->g;
    bool last;
    {
        std::lock_guard<std::mutex> l(g->m);
        last = --g->members == 0;
    }
    if (last) {
        std::lock_guard<std::mutex> l(registry_mu);
        for (auto it = registry.begin(); it != registry.end(); ++it)
            if (it->second == g) {
                registry.erase(it);
                break;
            }
        delete g;
    }
    delete c;
}

int ncclCommDestroy(Comm* c) {
    if (c) release(c);
    return SUCCESS;
}

// An aborted communicator and its group stay allocated (a leak of a few bytes): another thread of its rank may be
// waiting in a collective on it, which this wakes with an error.
int ncclCommAbort(Comm* c) {
    if (!c) return SUCCESS;
    std::lock_guard<std::mutex> l(c->g->m);
    c->aborted = true;
    c->g->broken = true;
    if (c->g->why.empty()) c->g->why = "rank " + std::to_string(c->rank) + "'s communicator was aborted";
    c->g->cv.notify_all();
    return SUCCESS;
}

int ncclCommGetAsyncError(Comm* c, int* e) {
    *e = c && (c->aborted || c->g->broken) ? INVALID_USAGE : SUCCESS;
    return SUCCESS;
}
int ncclCommCount(Comm* c, int* n) { *n = c ? c->nranks : 0; return c ? SUCCESS : INVALID_ARGUMENT; }
int ncclCommUserRank(Comm* c, int* r) { *r = c ? c->rank : 0; return c ? SUCCESS : INVALID_ARGUMENT; }
int ncclCommCuDevice(Comm* c, int* d) { *d = c ? c->device : 0; return c ? SUCCESS : INVALID_ARGUMENT; }
const char* ncclGetErrorString(int r) {
    switch (r) {
        case SUCCESS: return "no error";
        case SYSTEM_ERROR: return "unhandled system error (kernel-emu)";
        case INVALID_ARGUMENT: return "invalid argument (kernel-emu)";
        case INVALID_USAGE: return "invalid usage (kernel-emu)";
        default: return "NCCL error (kernel-emu)";
    }
}
const char* ncclGetLastError(Comm*) { return last_error; }
int ncclGroupStart(void) { return SUCCESS; }
int ncclGroupEnd(void) { return SUCCESS; }

int ncclAllReduce(const void* send, void* recv, size_t count, int type, int op, Comm* c, cudaStream_t s) {
    return collective(c, Call{ALL_REDUCE, send, recv, count, type, op, 0}, s);
}
int ncclReduceScatter(const void* send, void* recv, size_t recvcount, int type, int op, Comm* c, cudaStream_t s) {
    return collective(c, Call{REDUCE_SCATTER, send, recv, recvcount, type, op, 0}, s);
}
int ncclAllGather(const void* send, void* recv, size_t sendcount, int type, Comm* c, cudaStream_t s) {
    return collective(c, Call{ALL_GATHER, send, recv, sendcount, type, 0, 0}, s);
}
int ncclBroadcast(const void* send, void* recv, size_t count, int type, int root, Comm* c, cudaStream_t s) {
    return collective(c, Call{BROADCAST, send, recv, count, type, 0, root}, s);
}
int ncclReduce(const void* send, void* recv, size_t count, int type, int op, int root, Comm* c, cudaStream_t s) {
    return collective(c, Call{REDUCE, send, recv, count, type, op, root}, s);
}
}  // extern "C"
