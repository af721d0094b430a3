// tools/kernel-emu's cuBLAS (built with -DG4EMU_BLAS into libcublas.so.13) and cuBLASLt (-DG4EMU_LT, into
// libcublasLt.so.13): the calls CublasGemm makes, on host memory, ordered on the emulated streams (captured into graphs
// like every other stream operation). A GEMM is computed in float64 from the stored operands (fp32 or bf16; fp32
// operands rounded to TF32 first when the compute type asks for it) and rounded once to the output type, with
// alpha and beta read at the call (host pointer mode) and C not read when beta is 0, as cuBLAS does. Column-major
// throughout, as in cuBLAS. G4EMU_LT_HEURISTIC=none makes the heuristic find no algorithm (CUBLAS_STATUS_NOT_SUPPORTED)
// so that the cublasGemmStridedBatchedEx fallback runs.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <functional>
#include <initializer_list>
#include <vector>

namespace g4emu {
void submit(cudaStream_t stream, std::function<void()> op);
bool launch_allowed(cudaStream_t stream, const char* what);
int device_of_pointer(const void* p);
int current_device();
}

namespace {
// Whether every operand is host memory or the current device's (another device's is an illegal access on a GPU).
bool operands_on_device(const char* what, std::initializer_list<const void*> ps) {
    int cur = g4emu::current_device();
    for (const void* p : ps) {
        int d = p == nullptr ? -1 : g4emu::device_of_pointer(p);
        if (d >= 0 && d != cur) {
            fprintf(stderr, "kernel-emu: %s on device %d reads or writes memory of device %d\n", what, cur, d);
            return false;
        }
    }
    return true;
}
}  // namespace

namespace {

constexpr int OK = 0, INVALID_VALUE = 7, EXECUTION_FAILED = 13, NOT_SUPPORTED = 15;
constexpr int R_32F = 0, R_16BF = 14;
constexpr int COMPUTE_32F = 68, COMPUTE_32F_FAST_TF32 = 77;

struct Operand {
    const void* p;
    int type;
    long long ld, stride;
};

double load(const Operand& o, long long b, long long i, long long j) {
    long long at = b * o.stride + i + j * o.ld;
    if (o.type == R_16BF) return __bfloat162float(static_cast<const __nv_bfloat16*>(o.p)[at]);
    return static_cast<const float*>(o.p)[at];
}

float tf32(float x) {  // round to nearest even at 10 mantissa bits
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) == 0x7f800000u) return x;
    u = (u + 0xfffu + ((u >> 13) & 1u)) & ~0x1fffu;
    memcpy(&x, &u, 4);
    return x;
}

// D[i, j] = alpha sum_l op(A)[i, l] op(B)[l, j] + beta C[i, j] for i < m, j < n, each batch. The operands are first
// widened (and rounded to TF32 where asked) into rows of op(A) and columns of op(B), so that each output is one
// contiguous dot product, summed in fp32 in 16 lanes (vectorized; cuBLAS also accumulates in fp32, in an order of its
// own), then scaled and rounded once to the output type.
void gemm(bool ta, bool tb, long long m, long long n, long long k, float alpha, Operand A, Operand B, float beta,
          Operand C, Operand D, long long batch, bool use_tf32) {
    std::vector<float> ar((size_t) (m * k)), bc((size_t) (n * k));
    for (long long b = 0; b < batch; b++) {
        for (long long i = 0; i < m; i++)
            for (long long l = 0; l < k; l++) {
                float a = (float) (ta ? load(A, b, l, i) : load(A, b, i, l));
                ar[(size_t) (i * k + l)] = use_tf32 ? tf32(a) : a;
            }
        for (long long j = 0; j < n; j++)
            for (long long l = 0; l < k; l++) {
                float x = (float) (tb ? load(B, b, j, l) : load(B, b, l, j));
                bc[(size_t) (j * k + l)] = use_tf32 ? tf32(x) : x;
            }
        for (long long j = 0; j < n; j++)
            for (long long i = 0; i < m; i++) {
                const float* x = &ar[(size_t) (i * k)];
                const float* y = &bc[(size_t) (j * k)];
                float lane[16] = {};
                long long l = 0;
                for (; l + 16 <= k; l += 16)
#pragma omp simd
                    for (int u = 0; u < 16; u++) lane[u] += x[l + u] * y[l + u];
                float acc = 0;
                for (int u = 0; u < 16; u++) acc += lane[u];
                for (; l < k; l++) acc += x[l] * y[l];
                double out = (double) alpha * acc;
                if (beta != 0.f) out += (double) beta * load(C, b, i, j);
                long long at = b * D.stride + i + j * D.ld;
                if (D.type == R_16BF) static_cast<__nv_bfloat16*>(const_cast<void*>(D.p))[at] = __float2bfloat16_rn((float) out);
                else static_cast<float*>(const_cast<void*>(D.p))[at] = (float) out;
            }
    }
}

bool known_type(int t) { return t == R_32F || t == R_16BF; }

}  // namespace

extern "C" {

#ifdef G4EMU_BLAS
struct Handle {
    cudaStream_t stream = nullptr;
};

int cublasCreate_v2(Handle** h) { *h = new Handle(); return OK; }
int cublasDestroy_v2(Handle* h) { delete h; return OK; }
int cublasSetStream_v2(Handle* h, cudaStream_t s) { h->stream = s; return OK; }
int cublasSetWorkspace_v2(Handle*, void*, size_t) { return OK; }
int cublasSetMathMode(Handle*, int) { return OK; }  // every GEMM here sums in fp32 (TF32 only by compute type)
int cublasGetVersion_v2(Handle*, int* v) { *v = 130100; return OK; }

const char* cublasGetStatusString(int s) {
    switch (s) {
        case OK: return "the operation completed successfully";
        case INVALID_VALUE: return "an invalid value was used as an argument";
        case NOT_SUPPORTED: return "the functionality requested is not supported (kernel-emu)";
        default: return "cuBLAS error (kernel-emu)";
    }
}
const char* cublasGetStatusName(int s) {
    return s == OK ? "CUBLAS_STATUS_SUCCESS" : s == INVALID_VALUE ? "CUBLAS_STATUS_INVALID_VALUE" : "CUBLAS_STATUS_NOT_SUPPORTED";
}

int cublasGemmStridedBatchedEx(Handle* h, int transa, int transb, int m, int n, int k, const void* alpha, const void* A,
                               int Atype, int lda, long long strideA, const void* B, int Btype, int ldb,
                               long long strideB, const void* beta, void* C, int Ctype, int ldc, long long strideC,
                               int batch, int compute, int /*algo*/) {
    if (m < 0 || n < 0 || k < 0 || batch < 0 || !known_type(Atype) || Atype != Btype || !known_type(Ctype)) return INVALID_VALUE;
    if (compute != COMPUTE_32F && compute != COMPUTE_32F_FAST_TF32) return NOT_SUPPORTED;
    const bool ta = transa != 0, tb = transb != 0;
    if (lda < (ta ? k : m) || ldb < (tb ? n : k) || ldc < m) return INVALID_VALUE;
    const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
    Operand a{A, Atype, lda, strideA}, b{B, Btype, ldb, strideB}, c{C, Ctype, ldc, strideC};
    const bool t32 = compute == COMPUTE_32F_FAST_TF32 && Atype == R_32F;
    if (!g4emu::launch_allowed(h->stream, "cublasGemmStridedBatchedEx") || !operands_on_device("cublasGemmStridedBatchedEx", {A, B, C}))
        return EXECUTION_FAILED;
    g4emu::submit(h->stream, [=]() { gemm(ta, tb, m, n, k, al, a, b, be, c, c, batch, t32); });
    return OK;
}
#endif  // G4EMU_BLAS

#ifdef G4EMU_LT
struct Desc {
    int compute, scale, transa = 0, transb = 0, pointer_mode = 0, epilogue = 1;
};
struct Layout {
    int type;
    long long rows, cols, ld, batch = 1, stride = 0;
    int order = 0;
};
struct Pref {};
struct HeuristicResult {  // cublasLtMatmulHeuristicResult_t
    uint64_t algo[8];
    size_t workspaceSize;
    int state;
    float wavesCount;
    int reserved[4];
};

int cublasLtCreate(void** h) { *h = malloc(16); return OK; }
int cublasLtDestroy(void* h) { free(h); return OK; }
size_t cublasLtGetVersion(void) { return 130100; }

int cublasLtMatmulDescCreate(Desc** d, int compute, int scale) {
    if (compute != COMPUTE_32F && compute != COMPUTE_32F_FAST_TF32) return NOT_SUPPORTED;
    if (scale != R_32F) return NOT_SUPPORTED;
    *d = new Desc{compute, scale};
    return OK;
}
int cublasLtMatmulDescDestroy(Desc* d) { delete d; return OK; }
int cublasLtMatmulDescSetAttribute(Desc* d, int attr, const void* buf, size_t size) {
    int v = 0;
    if (size >= 4) memcpy(&v, buf, 4);
    switch (attr) {
        case 2: d->pointer_mode = v; return v == 0 ? OK : NOT_SUPPORTED;  // host pointers only
        case 3: d->transa = v; return OK;
        case 4: d->transb = v; return OK;
        case 7: d->epilogue = v; return v == 1 ? OK : NOT_SUPPORTED;  // CUBLASLT_EPILOGUE_DEFAULT only
        default: return NOT_SUPPORTED;
    }
}

int cublasLtMatrixLayoutCreate(Layout** l, int type, uint64_t rows, uint64_t cols, int64_t ld) {
    if (!known_type(type) || ld < (int64_t) rows) return INVALID_VALUE;
    *l = new Layout{type, (long long) rows, (long long) cols, (long long) ld};
    return OK;
}
int cublasLtMatrixLayoutDestroy(Layout* l) { delete l; return OK; }
int cublasLtMatrixLayoutSetAttribute(Layout* l, int attr, const void* buf, size_t size) {
    switch (attr) {
        case 1: { int v; memcpy(&v, buf, 4); l->order = v; return v == 0 ? OK : NOT_SUPPORTED; }  // column-major only
        case 5: { int v; memcpy(&v, buf, 4); l->batch = v; return v >= 1 ? OK : INVALID_VALUE; }
        case 6: { long long v; memcpy(&v, buf, size >= 8 ? 8 : size); l->stride = v; return OK; }
        default: return NOT_SUPPORTED;
    }
}

int cublasLtMatmulPreferenceCreate(Pref** p) { *p = new Pref(); return OK; }
int cublasLtMatmulPreferenceDestroy(Pref* p) { delete p; return OK; }
int cublasLtMatmulPreferenceSetAttribute(Pref*, int, const void*, size_t) { return OK; }

// The shapes must agree: D m x n, op(A) m x k, op(B) k x n, one batch count (or 1 for a shared operand).
static bool shapes(const Desc* d, const Layout* a, const Layout* b, const Layout* c, const Layout* dd, long long* m,
                   long long* n, long long* k) {
    *m = dd->rows;
    *n = dd->cols;
    *k = d->transa ? a->rows : a->cols;
    const long long am = d->transa ? a->cols : a->rows, bk = d->transb ? b->cols : b->rows, bn = d->transb ? b->rows : b->cols;
    if (am != *m || bk != *k || bn != *n || c->rows != *m || c->cols != *n) return false;
    if (c->type != dd->type || a->type != b->type) return false;
    long long batch = dd->batch;
    return (a->batch == batch || a->batch == 1) && (b->batch == batch || b->batch == 1) && c->batch == batch;
}

int cublasLtMatmulAlgoGetHeuristic(void*, Desc* d, Layout* a, Layout* b, Layout* c, Layout* dd, Pref*, int requested,
                                   HeuristicResult* results, int* returned) {
    *returned = 0;
    long long m, n, k;
    if (requested < 1 || !shapes(d, a, b, c, dd, &m, &n, &k)) return INVALID_VALUE;
    const char* e = getenv("G4EMU_LT_HEURISTIC");
    if (e && !strcmp(e, "none")) return NOT_SUPPORTED;
    memset(&results[0], 0, sizeof results[0]);
    results[0].algo[0] = 0x6b656d75;  // "kemu": any opaque value
    results[0].state = OK;
    results[0].wavesCount = 1;
    *returned = 1;
    return OK;
}

int cublasLtMatmul(void*, Desc* d, const void* alpha, const void* A, Layout* al, const void* B, Layout* bl,
                   const void* beta, const void* C, Layout* cl, void* D, Layout* dl, const void* algo, void*, size_t,
                   cudaStream_t stream) {
    long long m, n, k;
    if (algo == nullptr || !shapes(d, al, bl, cl, dl, &m, &n, &k)) return INVALID_VALUE;
    const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);
    Operand oa{A, al->type, al->ld, al->batch > 1 ? al->stride : 0}, ob{B, bl->type, bl->ld, bl->batch > 1 ? bl->stride : 0},
            oc{C, cl->type, cl->ld, cl->stride}, od{D, dl->type, dl->ld, dl->stride};
    const bool ta = d->transa != 0, tb = d->transb != 0, t32 = d->compute == COMPUTE_32F_FAST_TF32 && al->type == R_32F;
    const long long batch = dl->batch;
    if (!g4emu::launch_allowed(stream, "cublasLtMatmul") || !operands_on_device("cublasLtMatmul", {A, B, C, D})) return EXECUTION_FAILED;
    g4emu::submit(stream, [=]() { gemm(ta, tb, m, n, k, a, oa, ob, b, oc, od, batch, t32); });
    return OK;
}
#endif  // G4EMU_LT

}  // extern "C"
