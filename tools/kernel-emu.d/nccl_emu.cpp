// tools/kernel-emu's NCCL (libnccl.so.2): communicators of one or more ranks, each on its own emulated device
// (G4EMU_DEVICES of them a process, cudart_emu.cpp), in one process (one JVM per node drives its GPUs, a thread each)
// or in several on this machine (tools/launch's nodes: `--nnodes 2 --node-rank K`). As on the GPU hosts, two ranks of
// a communicator on one device of one process are refused ("Duplicate GPU detected").
//
// A communicator is a POSIX shared-memory segment named after its unique id ("/g4emu-nccl-<pid>-<n>"): a header with
// a process-shared mutex and condition variable, each rank's call, and an input and an output slot a rank
// (G4EMU_NCCL_SLOT_MIB each, default 64, sparse). The emulated device runs every operation when it is issued, so a
// collective runs when its last rank issues it: each rank copies its input into its slot and waits (without holding
// the device) until every rank has made the same call; the last one computes every rank's output into the output
// slots, and each rank copies its own out. Reductions add in fp32 in rank order (x_0 + x_1 + ...; AVG then divides by
// the world) and a bf16 result is rounded once, as LocalCommunicator does: NCCL's own bf16 sums round at each ring
// hop, so on a GPU bf16 results may differ in the last bits. Calls that do not match across the ranks (kind, count,
// type, operation, root) fail on every rank with ncclInvalidUsage, where NCCL would hang or corrupt memory. An aborted
// communicator fails every rank's waiting and later calls (on a GPU the others would wait for their own watchdog).
// Joining and waiting give up after G4EMU_NCCL_TIMEOUT_S (default 600). Collectives on a capturing stream are refused.
//
// Non-blocking communicators (ncclCommInitRankConfig with config.blocking = 0, or NCCL_COMM_BLOCKING=0 in the
// environment, which overrides the config as NCCL's does): the join and each collective run on the communicator's
// own thread; the call returns ncclInProgress after its argument checks, and ncclCommGetAsyncError says
// ncclInProgress until it is done, then ncclSuccess or its error. ncclCommAbort then stops a join or a collective
// waiting for the other ranks (within a second) and waits for that thread, as NCCL's abort does for its own.
#include <cuda_runtime.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <initializer_list>
#include <utility>
#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <memory>
#include <vector>

namespace g4emu {
int device_of_pointer(const void* p);  // cudart_emu.cpp
void stream_flush(cudaStream_t s);      // cudart_emu.cpp: runs the stream's deferred work (G4EMU_ASYNC)
bool deferred_streams();                 // cudart_emu.cpp: whether streams defer their work (G4EMU_ASYNC)
void with_runtime(const std::function<void()>& f);  // cudart_emu.cpp: f under the runtime's lock
void submit(cudaStream_t stream, std::function<void()> op);  // cudart_emu.cpp
}

namespace {
constexpr int SUCCESS = 0, SYSTEM_ERROR = 2, INVALID_ARGUMENT = 4, INVALID_USAGE = 5, IN_PROGRESS = 7;
constexpr unsigned API_MAGIC = 0xcafebeef;
constexpr int MAX_RANKS = 64;
enum Kind { ALL_REDUCE, REDUCE_SCATTER, ALL_GATHER, BROADCAST, REDUCE };
const char* kind_name[] = {"ncclAllReduce", "ncclReduceScatter", "ncclAllGather", "ncclBroadcast", "ncclReduce"};

struct UniqueId {
    char internal[128];
};

struct CallDesc {
    int kind;
    size_t count;  // per rank: the output's elements (reduce-scatter), the input's (all-gather), else the buffer's
    int type, op, root;
};

struct Shared {
    pthread_mutex_t m;
    pthread_cond_t cv;
    int nranks, joined;
    long long pid[MAX_RANKS];
    int device[MAX_RANKS];
    CallDesc calls[MAX_RANKS];
    int arrivals;
    long long round;  // completed collectives
    int result;       // of the last completed round
    int broken;       // a rank aborted or died: every call fails
    char why[512];
    size_t slot;      // bytes of each input and output slot
    std::atomic<int> ready;  // set last by the segment's creator
};

struct Comm {
    Shared* sh = nullptr;
    unsigned char* base = nullptr;  // the slots: nranks inputs, then nranks outputs
    size_t bytes = 0;               // the mapping's
    int rank, nranks, device;
    bool nonblocking = false;
    std::atomic<int> state{SUCCESS};  // a non-blocking communicator's: IN_PROGRESS while its thread works, then the result
    std::atomic<bool> aborted{false};
    std::thread worker;               // a non-blocking communicator's join or collective in progress
    std::mutex error_m;
    std::string error;                // the last error of a call on this communicator (ncclGetLastError)
};

// The prefix of ncclConfig_t that every NCCL version has (nccl.h).
struct ConfigHead {
    size_t size;
    unsigned magic, version;
    int blocking;
};

std::atomic<long long> ids{0};
thread_local std::string last_error_text;
thread_local const char* last_error = "";

void set_error(const std::string& s) {
    last_error_text = s;
    last_error = last_error_text.c_str();
}

void set_error(Comm* c, const std::string& s) {
    set_error(s);
    std::lock_guard<std::mutex> g(c->error_m);
    c->error = s;
}

int env_int(const char* name, int dflt) {
    const char* e = getenv(name);
    return e != nullptr && *e ? atoi(e) : dflt;
}

size_t header_bytes() { return (sizeof(Shared) + 4095) / 4096 * 4096; }
unsigned char* in_slot(Comm* c, int r) { return c->base + (size_t) r * c->sh->slot; }
unsigned char* out_slot(Comm* c, int r) { return c->base + (size_t) (c->nranks + r) * c->sh->slot; }

size_t type_size(int t) {
    switch (t) {
        case 0: case 1: return 1;           // int8, uint8
        case 2: case 3: case 7: return 4;   // int32, uint32, float32
        case 4: case 5: case 8: return 8;   // int64, uint64, float64
        case 6: case 9: return 2;           // float16, bfloat16
        default: return 0;
    }
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

// Element `at` of the reduction over the ranks' inputs (fp32 arithmetic for fp32 and bf16, in rank order; integers
// and fp64 in double).
double reduce_at(Comm* c, size_t at, int type, int op) {
    bool f32 = type == 7 || type == 9;
    double acc = 0;
    float facc = 0;
    for (int r = 0; r < c->nranks; r++) {
        double x = load(in_slot(c, r), at, type);
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
        if (f32) facc /= (float) c->nranks;
        else acc /= (double) c->nranks;
    }
    return f32 ? (double) facc : acc;
}

size_t in_elems(const CallDesc& k, int n) { return k.kind == REDUCE_SCATTER ? k.count * n : k.count; }
size_t out_elems(const CallDesc& k, int n) { return k.kind == ALL_GATHER ? k.count * n : k.count; }

// Every rank's output of this round (the calls match) into the output slots.
void run_round(Comm* c) {
    const CallDesc& k = c->sh->calls[0];
    size_t es = type_size(k.type);
    for (int r = 0; r < c->nranks; r++) {
        if (k.kind == REDUCE && r != k.root) continue;
        unsigned char* o = out_slot(c, r);
        size_t len = out_elems(k, c->nranks);
        switch (k.kind) {
            case ALL_REDUCE: case REDUCE:
                for (size_t i = 0; i < len; i++) store(o, i, k.type, reduce_at(c, i, k.type, k.op));
                break;
            case REDUCE_SCATTER:
                for (size_t i = 0; i < len; i++) store(o, i, k.type, reduce_at(c, (size_t) r * k.count + i, k.type, k.op));
                break;
            case ALL_GATHER:
                for (int j = 0; j < c->nranks; j++) memcpy(o + (size_t) j * k.count * es, in_slot(c, j), k.count * es);
                break;
            case BROADCAST:
                memcpy(o, in_slot(c, k.root), k.count * es);
                break;
        }
    }
}

// Locks the shared mutex; a holder that died leaves it consistent and the communicator broken.
void lock(Shared* sh) {
    int e = pthread_mutex_lock(&sh->m);
    if (e == EOWNERDEAD) {
        pthread_mutex_consistent(&sh->m);
        sh->broken = 1;
        snprintf(sh->why, sizeof sh->why, "a process of the communicator died");
    }
}

// Marks the communicator broken when the process of a joined rank is gone (a killed node: its waiting peers would
// otherwise wait for the timeout).
void check_peers(Shared* sh) {
    for (int r = 0; r < sh->nranks && !sh->broken; r++)
        if (sh->device[r] >= 0 && sh->pid[r] > 0 && kill((pid_t) sh->pid[r], 0) != 0 && errno == ESRCH) {
            sh->broken = 1;
            snprintf(sh->why, sizeof sh->why, "the process of rank %d (pid %lld) died", r, sh->pid[r]);
            pthread_cond_broadcast(&sh->cv);
        }
}

// Waits on the condition until `done` or the timeout (G4EMU_NCCL_TIMEOUT_S), checking every second that the joined
// ranks' processes live; false on timeout.
template <typename F>
bool wait(Shared* sh, F done) {
    timespec start;
    clock_gettime(CLOCK_REALTIME, &start);
    const long long limit = env_int("G4EMU_NCCL_TIMEOUT_S", 600);
    while (!done()) {
        timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        if (until.tv_sec - start.tv_sec >= limit) return done();
        until.tv_sec += 1;
        int e = pthread_cond_timedwait(&sh->cv, &sh->m, &until);
        if (e == EOWNERDEAD) {
            pthread_mutex_consistent(&sh->m);
            sh->broken = 1;
            snprintf(sh->why, sizeof sh->why, "a process of the communicator died");
        }
        if (e == ETIMEDOUT) check_peers(sh);
    }
    return true;
}

// The shared part of a collective: this rank's input into its slot, then the wait for the round (the last rank to
// arrive computes every output), then this rank's output.
int exchange(Comm* c, CallDesc call, const void* send, void* recv, size_t in, size_t out) {
    Shared* sh = c->sh;
    lock(sh);
    if (sh->broken) {
        set_error("kernel-emu: " + std::string(sh->why));
        pthread_mutex_unlock(&sh->m);
        return INVALID_USAGE;
    }
    long long my_round = sh->round;
    if (call.kind != REDUCE && call.kind != BROADCAST) memcpy(in_slot(c, c->rank), send, in);
    else if (call.kind == REDUCE || c->rank == call.root) memcpy(in_slot(c, c->rank), send, in);  // (a broadcast reads its root's alone)
    sh->calls[c->rank] = call;
    int result;
    if (++sh->arrivals == c->nranks) {
        const CallDesc& k = sh->calls[0];
        std::string bad;
        for (int r = 1; r < c->nranks && bad.empty(); r++) {
            const CallDesc& o = sh->calls[r];
            if (o.kind != k.kind || o.count != k.count || o.type != k.type || (k.kind != ALL_GATHER && k.kind != BROADCAST && o.op != k.op)
                || ((k.kind == BROADCAST || k.kind == REDUCE) && o.root != k.root))
                bad = "rank 0 called " + std::string(kind_name[k.kind]) + "(count " + std::to_string(k.count) + ", type " + std::to_string(k.type)
                      + ") and rank " + std::to_string(r) + " " + kind_name[o.kind] + "(count " + std::to_string(o.count) + ", type "
                      + std::to_string(o.type) + ")";
        }
        if (bad.empty() && (k.kind == BROADCAST || k.kind == REDUCE) && (k.root < 0 || k.root >= c->nranks)) bad = "root " + std::to_string(k.root);
        if (bad.empty()) {
            run_round(c);
            sh->result = SUCCESS;
        } else {
            sh->result = INVALID_USAGE;
            snprintf(sh->why, sizeof sh->why, "mismatched collectives: %s", bad.c_str());
        }
        sh->arrivals = 0;
        sh->round++;
        pthread_cond_broadcast(&sh->cv);
    } else if (!wait(sh, [&] { return sh->round != my_round || sh->broken || c->aborted; }) || sh->round == my_round) {
        // timed out, aborted, or broken while waiting: the round never completes
        if (!sh->broken) {
            sh->broken = 1;
            if (c->aborted)
                snprintf(sh->why, sizeof sh->why, "rank %d's communicator was aborted", c->rank);
            else
                snprintf(sh->why, sizeof sh->why, "%s waited %d s for the other ranks (G4EMU_NCCL_TIMEOUT_S)", kind_name[call.kind],
                         env_int("G4EMU_NCCL_TIMEOUT_S", 600));
        }
        set_error("kernel-emu: " + std::string(sh->why));
        pthread_cond_broadcast(&sh->cv);
        pthread_mutex_unlock(&sh->m);
        return INVALID_USAGE;
    }
    result = sh->result;
    if (result == SUCCESS && (call.kind != REDUCE || c->rank == call.root)) memcpy(recv, out_slot(c, c->rank), out);
    if (result != SUCCESS) set_error("kernel-emu: " + std::string(sh->why));
    pthread_mutex_unlock(&sh->m);
    return result;
}

// Runs `f` now (a blocking communicator) or on the communicator's thread (a non-blocking one: returns IN_PROGRESS, and
// the result goes to the state that ncclCommGetAsyncError reads). A failed call's error stays with the communicator.
int run(Comm* c, std::function<int()> f) {
    if (!c->nonblocking) {
        int r = f();
        if (r != SUCCESS) set_error(c, last_error_text);
        return r;
    }
    int s = c->state.load();
    if (s == IN_PROGRESS) {  // as NCCL: a call before the previous one's state left ncclInProgress is refused
        set_error(c, "kernel-emu: attempt to use the communicator before the previous operation returned ncclSuccess");
        return INVALID_ARGUMENT;
    }
    if (s != SUCCESS) {
        set_error(c, "kernel-emu: the communicator's state is " + std::to_string(s) + " (a call failed)");
        return s;
    }
    if (c->worker.joinable()) c->worker.join();  // the previous call's thread, done (its state says so)
    c->state.store(IN_PROGRESS);
    c->worker = std::thread([c, f] {
        int r = f();
        if (r != SUCCESS) set_error(c, last_error_text);
        c->state.store(r);
    });
    return IN_PROGRESS;
}

int collective(Comm* c, CallDesc call, const void* send, void* recv, cudaStream_t s) {
    if (c == nullptr || c->sh == nullptr || type_size(call.type) == 0 || call.op < 0 || call.op > 4) return INVALID_ARGUMENT;
    cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(s, &st) == cudaSuccess && st != cudaStreamCaptureStatusNone) {
        set_error(c, "kernel-emu: a collective on a capturing stream");
        return INVALID_USAGE;
    }
    int device = -1;
    cudaGetDevice(&device);
    if (device != c->device) {
        set_error(c, "kernel-emu: " + std::string(kind_name[call.kind]) + " of rank " + std::to_string(c->rank) + " issued on device "
                  + std::to_string(device) + ", its communicator's device is " + std::to_string(c->device));
        return INVALID_USAGE;
    }
    // NCCL reads and writes its own device's memory: a buffer of another device is an illegal access on a GPU
    bool reads = call.kind != BROADCAST || c->rank == call.root, writes = call.kind != REDUCE || c->rank == call.root;
    for (auto [ptr, role] : {std::pair<const void*, const char*>{reads ? send : nullptr, "send"}, {writes ? recv : nullptr, "receive"}}) {
        int d = ptr == nullptr ? -1 : g4emu::device_of_pointer(ptr);
        if (d >= 0 && d != c->device) {
            set_error(c, "kernel-emu: " + std::string(kind_name[call.kind]) + " of rank " + std::to_string(c->rank) + " (device " + std::to_string(c->device)
                      + "): its " + role + " buffer is on device " + std::to_string(d));
            fprintf(stderr, "%s\n", last_error);
            return INVALID_USAGE;
        }
    }
    Shared* sh = c->sh;
    size_t es = type_size(call.type), in = in_elems(call, c->nranks) * es, out = out_elems(call, c->nranks) * es;
    if (in > sh->slot || out > sh->slot) {
        set_error(c, "kernel-emu: " + std::string(kind_name[call.kind]) + " of " + std::to_string(std::max(in, out)) + " bytes is more than a slot of "
                  + std::to_string(sh->slot) + " (G4EMU_NCCL_SLOT_MIB)");
        return INVALID_USAGE;
    }
    // the collective follows the work queued on its stream before it (G4EMU_ASYNC defers it; the stream's waits for
    // other streams' events run those first): its inputs are then written, as on a GPU
    g4emu::stream_flush(s);
    if (!g4emu::deferred_streams()) return run(c, [=] { return exchange(c, call, send, recv, in, out); });
    // deferred streams: the output lands in the receive buffer when the stream reaches the collective, not when it is
    // issued, so that work reading it without waiting for the collective (a missing await) reads the old bytes. The
    // ranks exchange into a staging copy; the landing, queued on the stream now, copies it once the exchange is done.
    // A stream that reaches the landing before the exchange is done (a synchronization of every stream while the
    // peers have not issued yet) does not wait there, holding the runtime a peer needs to issue: the exchange's
    // thread lands it when it is done, before the call's state says done (so before the caller records its event).
    struct Landing {
        std::vector<unsigned char> buf;
        std::atomic<int> state{0};  // 0 exchanging, 1 done, 2 failed, 3 reached by its stream while exchanging
    };
    auto landing = std::make_shared<Landing>();
    landing->buf.resize(out);
    const bool writes_recv = call.kind != REDUCE || c->rank == call.root;
    auto land = [landing, recv, out, writes_recv] {
        if (writes_recv && out > 0) memcpy(recv, landing->buf.data(), out);
    };
    // (refused at once, as by run(), before anything is queued: a call while the previous one is in progress)
    if (c->nonblocking && c->state.load() == IN_PROGRESS) return run(c, [] { return SUCCESS; });
    g4emu::submit(s, [landing, land] {
        int st = 0;
        if (landing->state.compare_exchange_strong(st, 3)) return;  // the exchange's thread lands it
        if (st == 1) land();
    });
    return run(c, [=] {
        int e = exchange(c, call, send, landing->buf.data(), in, out);
        int st = 0;
        if (!landing->state.compare_exchange_strong(st, e == SUCCESS ? 1 : 2) && e == SUCCESS) g4emu::with_runtime(land);
        return e;
    });
}
// Maps the communicator's segment and joins it as c->rank, waiting for every rank (or the timeout, or an abort).
int join(Comm* c, const std::string& name) {
    int nranks = c->nranks, rank = c->rank, device = c->device;
    size_t slot = (size_t) env_int("G4EMU_NCCL_SLOT_MIB", 64) << 20;
    size_t bytes = header_bytes() + 2 * (size_t) nranks * slot;
    bool creator = false;
    int fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd >= 0) {
        creator = true;
        if (ftruncate(fd, (off_t) bytes) != 0) {
            set_error("kernel-emu: ftruncate of " + name + ": " + strerror(errno));
            close(fd);
            shm_unlink(name.c_str());
            return SYSTEM_ERROR;
        }
    } else if (errno == EEXIST) {
        fd = shm_open(name.c_str(), O_RDWR, 0600);
        struct stat stt;
        for (int i = 0; fd >= 0 && fstat(fd, &stt) == 0 && (size_t) stt.st_size < bytes && i < 10000; i++) usleep(1000);  // its creator sizes it
    }
    if (fd < 0) {
        set_error("kernel-emu: shm_open of " + name + ": " + strerror(errno));
        return SYSTEM_ERROR;
    }
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        set_error("kernel-emu: mmap of " + name + ": " + strerror(errno));
        return SYSTEM_ERROR;
    }
    Shared* sh = static_cast<Shared*>(p);
    if (creator) {
        pthread_mutexattr_t ma;
        pthread_mutexattr_init(&ma);
        pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
        pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
        pthread_mutex_init(&sh->m, &ma);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
        pthread_cond_init(&sh->cv, &ca);
        sh->nranks = nranks;
        for (int r = 0; r < MAX_RANKS; r++) sh->device[r] = -1;
        sh->slot = slot;
        sh->ready.store(1);
    } else {
        for (int i = 0; sh->ready.load() == 0 && i < 10000; i++) usleep(1000);
        if (sh->ready.load() == 0 || sh->slot != slot) {
            bool never = sh->ready.load() == 0;
            munmap(p, bytes);
            set_error("kernel-emu: " + name + (never ? " was never initialized" : ": its ranks were started with different G4EMU_NCCL_SLOT_MIB"));
            return SYSTEM_ERROR;
        }
    }
    lock(sh);
    std::string bad;
    if (sh->nranks != nranks) bad = "rank " + std::to_string(rank) + " says the world is " + std::to_string(nranks) + ", another rank said " + std::to_string(sh->nranks);
    else if (sh->device[rank] >= 0) bad = "rank " + std::to_string(rank) + " joined twice";
    for (int r = 0; r < nranks && bad.empty(); r++)
        if (sh->device[r] == device && sh->pid[r] == (long long) getpid())
            bad = "Duplicate GPU detected: rank " + std::to_string(rank) + " and rank " + std::to_string(r) + " both on device " + std::to_string(device);
    if (!bad.empty()) {
        pthread_mutex_unlock(&sh->m);
        munmap(p, bytes);
        set_error("kernel-emu: " + bad);
        return INVALID_USAGE;
    }
    sh->device[rank] = device;
    sh->pid[rank] = (long long) getpid();
    sh->joined++;
    pthread_cond_broadcast(&sh->cv);
    bool all = wait(sh, [&] { return sh->joined == nranks || sh->broken || c->aborted; }) && !sh->broken && !c->aborted;
    if (all && sh->joined == nranks) shm_unlink(name.c_str());  // every rank has it mapped: the name can go (idempotent)
    int joined = sh->joined;
    pthread_mutex_unlock(&sh->m);
    if (!all) {
        lock(sh);
        if (!sh->broken)
            snprintf(sh->why, sizeof sh->why, c->aborted ? "rank %d's communicator was aborted while joining" : "not every rank joined within G4EMU_NCCL_TIMEOUT_S",
                     rank);
        sh->broken = 1;  // a late joiner must not find a communicator missing this rank
        pthread_cond_broadcast(&sh->cv);
        pthread_mutex_unlock(&sh->m);
        shm_unlink(name.c_str());
        munmap(p, bytes);
        set_error("kernel-emu: ncclCommInitRank: " + std::to_string(joined) + " of " + std::to_string(nranks) + " ranks joined"
                  + (c->aborted ? " before the abort" : " within G4EMU_NCCL_TIMEOUT_S"));
        return c->aborted ? INVALID_USAGE : SYSTEM_ERROR;
    }
    c->sh = sh;
    c->base = static_cast<unsigned char*>(p) + header_bytes();
    c->bytes = bytes;
    return SUCCESS;
}

// ncclCommInitRank and ncclCommInitRankConfig: the argument checks, then the join, now or on the communicator's thread.
int init(Comm** comm, int nranks, UniqueId id, int rank, int blocking) {
    *comm = nullptr;
    int device = -1;
    cudaGetDevice(&device);
    if (nranks < 1 || nranks > MAX_RANKS || rank < 0 || rank >= nranks) {
        set_error("kernel-emu: rank " + std::to_string(rank) + " of " + std::to_string(nranks) + " (at most " + std::to_string(MAX_RANKS) + " ranks)");
        return INVALID_ARGUMENT;
    }
    std::string name(id.internal, strnlen(id.internal, sizeof id.internal));
    if (name.rfind("/g4emu-nccl-", 0) != 0) {
        set_error("kernel-emu: not a unique id of ncclGetUniqueId");
        return INVALID_ARGUMENT;
    }
    const char* env = getenv("NCCL_COMM_BLOCKING");  // overrides the config, as in NCCL
    if (env != nullptr && (strcmp(env, "0") == 0 || strcmp(env, "1") == 0)) blocking = atoi(env);
    Comm* c = new Comm();
    c->rank = rank;
    c->nranks = nranks;
    c->device = device;
    c->nonblocking = blocking == 0;
    int r = run(c, [c, name] { return join(c, name); });  // non-blocking: IN_PROGRESS, the join on the communicator's thread
    if (!c->nonblocking && r != SUCCESS) {
        delete c;
        return r;
    }
    *comm = c;
    return r;
}
}  // namespace

extern "C" {
int ncclGetVersion(int* v) { *v = 22800; return SUCCESS; }
int ncclGetUniqueId(UniqueId* id) {
    memset(id, 0, sizeof *id);
    snprintf(id->internal, sizeof id->internal, "/g4emu-nccl-%ld-%lld", (long) getpid(), (long long) ++ids);
    return SUCCESS;
}

int ncclCommInitRank(Comm** comm, int nranks, UniqueId id, int rank) { return init(comm, nranks, id, rank, 1); }

int ncclCommInitRankConfig(Comm** comm, int nranks, UniqueId id, int rank, const ConfigHead* config) {
    int blocking = 1;
    if (config != nullptr) {
        if (config->magic != API_MAGIC) {
            *comm = nullptr;
            set_error("kernel-emu: ncclConfig_t argument not initialized via NCCL_CONFIG_INITIALIZER (magic " + std::to_string(config->magic) + ")");
            return INVALID_ARGUMENT;
        }
        if (config->size >= sizeof(ConfigHead) && config->blocking != INT32_MIN) {
            if (config->blocking != 0 && config->blocking != 1) {
                *comm = nullptr;
                set_error("kernel-emu: invalid config blocking attribute value " + std::to_string(config->blocking));
                return INVALID_ARGUMENT;
            }
            blocking = config->blocking;
        }
    }
    return init(comm, nranks, id, rank, blocking);
}

int ncclCommDestroy(Comm* c) {
    if (c) {
        if (c->worker.joinable()) c->worker.join();
        if (c->sh != nullptr) munmap(c->sh, c->bytes);
        delete c;
    }
    return SUCCESS;
}

// Every operation is complete when its call or its thread returns: nothing to flush (a non-blocking communicator says
// ncclInProgress until its thread has run).
int ncclCommFinalize(Comm* c) {
    if (!c) return INVALID_ARGUMENT;
    return run(c, [] { return SUCCESS; });
}

// Stops a non-blocking communicator's join or collective waiting for the other ranks and waits for its thread; the
// mapping stays (a few bytes of address space): on a blocking communicator another thread of the rank may be waiting
// in a collective on it, which this wakes with an error, as it does every other rank's.
int ncclCommAbort(Comm* c) {
    if (!c) return SUCCESS;
    c->aborted = true;
    if (c->worker.joinable()) c->worker.join();
    if (c->sh == nullptr) return SUCCESS;  // it never joined
    lock(c->sh);
    if (!c->sh->broken) snprintf(c->sh->why, sizeof c->sh->why, "rank %d's communicator was aborted", c->rank);
    c->sh->broken = 1;
    pthread_cond_broadcast(&c->sh->cv);
    pthread_mutex_unlock(&c->sh->m);
    return SUCCESS;
}

int ncclCommGetAsyncError(Comm* c, int* e) {
    if (!c) return INVALID_ARGUMENT;
    int s = c->state.load();
    *e = s != SUCCESS ? s : c->sh != nullptr && c->sh->broken ? INVALID_USAGE : SUCCESS;
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
        case IN_PROGRESS: return "NCCL operation in progress (kernel-emu)";
        default: return "NCCL error (kernel-emu)";
    }
}
const char* ncclGetLastError(Comm* c) {
    if (c == nullptr) return last_error;
    std::lock_guard<std::mutex> g(c->error_m);
    if (c->error.empty()) return last_error;
    set_error(c->error);  // a copy of this thread's: the communicator's own may change under another thread
    return last_error;
}
int ncclGroupStart(void) { return SUCCESS; }
int ncclGroupEnd(void) { return SUCCESS; }

int ncclAllReduce(const void* send, void* recv, size_t count, int type, int op, Comm* c, cudaStream_t s) {
    return collective(c, CallDesc{ALL_REDUCE, count, type, op, 0}, send, recv, s);
}
int ncclReduceScatter(const void* send, void* recv, size_t recvcount, int type, int op, Comm* c, cudaStream_t s) {
    return collective(c, CallDesc{REDUCE_SCATTER, recvcount, type, op, 0}, send, recv, s);
}
int ncclAllGather(const void* send, void* recv, size_t sendcount, int type, Comm* c, cudaStream_t s) {
    return collective(c, CallDesc{ALL_GATHER, sendcount, type, 0, 0}, send, recv, s);
}
int ncclBroadcast(const void* send, void* recv, size_t count, int type, int root, Comm* c, cudaStream_t s) {
    return collective(c, CallDesc{BROADCAST, count, type, 0, root}, send, recv, s);
}
int ncclReduce(const void* send, void* recv, size_t count, int type, int op, int root, Comm* c, cudaStream_t s) {
    return collective(c, CallDesc{REDUCE, count, type, op, root}, send, recv, s);
}
}  // extern "C"
