// tools/kernel-emu: the memory-bound launchers (fill, fill_i32, scale, cast, add, axpy, embedding and its backward,
// rmsnorm and its backward, rope forward and inverse, swiglu and its backward, sum_squares, adamw, kv_append) against
// the CPU backend's contract (java/.../CpuBackend.java, docs/ops.md):
// - bit-identical ops (fill, scale, cast, add, axpy, adamW, embedding and its backward, kvAppend) bitwise against a
//   C++ transcription of CpuBackend's float arithmetic (Java rounds every float operation; Bf16.fromFloat transcribed
//   below, independent of cuda_bf16.h) and, where there is one, the host twin (g4_host_adamw);
// - the others against float64 with docs/ops.md's tolerances (bf16 outputs: bf16(atol, rtol) = (atol (1 + 2^-8),
//   rtol (1 + 2^-8) + 2^-8)); rope and swiglu also bitwise against the CPU transcription / host twin, which holds
//   here because the emulated kernel and the reference call the same libm (on a GPU CUDA's cos/expf may differ).
// Sizes make the 16-byte vector path and its scalar tail both run (n % 8 != 0 for bf16, n % 4 for fp32); views one
// element off force the scalar path; every array is an exact-size allocation that ends where the view ends, so
// AddressSanitizer reports any access past it, and the elements before a shifted view are guards checked unchanged.
// Outputs are NaN-poisoned before each call. Index data out of range (embedding ids, rope positions, kv slots) must
// raise the device flag (op, index, value, limit: cuda/common.cuh report) and touch nothing. The deterministic
// reductions (sum_squares, rmsnorm's rstd / dWeight, embedding backward) are called twice and compared bitwise; each
// case prints a fingerprint of all its outputs, which must not change under `tools/kernel-emu --order reverse` or
// `--order SEED`.
#include <stdarg.h>
#include <stdlib.h>

#include <climits>
#include <type_traits>

#include "emu_test.h"

using namespace emu_test;

namespace {

using u16 = uint16_t;  // bf16 storage: the raw bits

uint32_t bits_of(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
float of_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

// Bf16.fromFloat / Bf16.toFloat (the CPU's rounding: nearest even, NaN -> 0x7FFF), transcribed.
u16 f2bf(float f) {
    uint32_t b = bits_of(f);
    if ((b & 0x7fffffffu) > 0x7f800000u) return 0x7fff;
    return (u16) ((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}
float bf2f(u16 h) { return of_bits((uint32_t) h << 16); }

float wid(float x) { return x; }
float wid(u16 x) { return bf2f(x); }
template <typename T> T nar(float x) { if constexpr (std::is_same_v<T, u16>) return f2bf(x); else return x; }
template <typename T> constexpr bool is_bf = std::is_same_v<T, u16>;
template <typename T> int dt() { return is_bf<T> ? G4_BF16 : G4_F32; }
template <typename T> const char* dname() { return is_bf<T> ? "bf16" : std::is_same_v<T, int> ? "int32" : "fp32"; }

// Output poison (a quiet NaN with a payload) and guard values in front of shifted views.
template <typename T> T poison() {
    if constexpr (is_bf<T>) return (u16) 0x7fd1;
    else if constexpr (std::is_same_v<T, int>) return 0x5a5a5a5a;
    else return of_bits(0x7fc0deadu);
}
template <typename T> T guard() {
    if constexpr (is_bf<T>) return (u16) 0xbeef;
    else if constexpr (std::is_same_v<T, int>) return 0x7eadbeef;
    else return of_bits(0x7fbeef01u);
}
template <typename T> bool same(const T& a, const T& b) { return memcmp(&a, &b, sizeof(T)) == 0; }

std::string fmt(const char* f, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return buf;
}

// An exact-size, 64-byte aligned host allocation holding a view of n elements at element offset off (0: 16-byte
// aligned; 1: misaligned). The view ends where the allocation ends, so ASan reports any access past it; the off
// elements in front are guards. The view starts poisoned.
template <typename T>
struct View {
    T* base = nullptr;
    size_t off = 0, n = 0;
    explicit View(size_t count, size_t offset = 0) : off(offset), n(count) {
        void* q = nullptr;
        if (posix_memalign(&q, 64, (off + n) * sizeof(T) + (off + n == 0)) != 0) abort();
        base = (T*) q;
        for (size_t i = 0; i < off; i++) base[i] = guard<T>();
        for (size_t i = 0; i < n; i++) base[off + i] = poison<T>();
    }
    View(const View&) = delete;
    View& operator=(const View&) = delete;
    View(View&& o) noexcept : base(o.base), off(o.off), n(o.n) { o.base = nullptr; }
    ~View() { free(base); }
    T* p() { return base + off; }
    T& operator[](size_t i) { return base[off + i]; }
    const T& operator[](size_t i) const { return base[off + i]; }
    g4_ptr ptr() { return P(base + off); }
    bool guards_ok() const {
        for (size_t i = 0; i < off; i++) if (!same(base[i], guard<T>())) return false;
        return true;
    }
    void poison_all() { for (size_t i = 0; i < n; i++) base[off + i] = poison<T>(); }
    template <typename V> void set(const std::vector<V>& v) { for (size_t i = 0; i < n; i++) base[off + i] = v[i]; }
    std::vector<float> widened() const {
        std::vector<float> w(n);
        for (size_t i = 0; i < n; i++) w[i] = wid(base[off + i]);
        return w;
    }
};

// Random data of a dtype: normals (sd) rounded to it.
template <typename T> std::vector<T> randoms(Rng& r, size_t n, double sd = 1) {
    std::vector<T> v(n);
    for (auto& x : v) x = nar<T>((float) (sd * r.normal()));
    return v;
}

// One op's checks: calls made, elements compared bitwise or by tolerance, failures (the first described).
struct Tally {
    std::string what;
    long calls = 0, elems = 0, bad = 0;
    double worst = -1;  // of tolerance, -1 when no tolerance check
    std::string first;
    explicit Tally(std::string w) : what(std::move(w)) {}
    void fail(const std::string& why) {
        if (bad++ == 0) first = why;
    }
    void expect(bool c, const std::string& why) { if (!c) fail(why); }
    template <typename T>
    void bits(const std::string& ctx, const T* got, const T* want, size_t n) {
        elems += n;
        for (size_t i = 0; i < n; i++)
            if (!same(got[i], want[i])) {
                uint64_t g = 0, w = 0;
                memcpy(&g, &got[i], sizeof(T));
                memcpy(&w, &want[i], sizeof(T));
                fail(fmt("%s: [%zu] bits %llx, want %llx", ctx.c_str(), i, (unsigned long long) g, (unsigned long long) w));
                return;
            }
    }
    // |got - want| <= atol + rtol |want| per element; NaN or infinity fails.
    void close(const std::string& ctx, const float* got, const double* want, size_t n, double atol, double rtol) {
        elems += n;
        if (worst < 0) worst = 0;
        for (size_t i = 0; i < n; i++) {
            double e = fabs((double) got[i] - want[i]) / (atol + rtol * fabs(want[i]));
            if (!(e <= 1) || !std::isfinite(got[i])) {
                fail(fmt("%s: [%zu] got %.9g, want %.9g (%.3g of tolerance)", ctx.c_str(), i, got[i], want[i], e));
                worst = INFINITY;
                return;
            }
            if (e > worst) worst = e;
        }
    }
    bool print() const {
        printf("    %-34s %4ld calls %9ld elements", what.c_str(), calls, elems);
        if (worst >= 0) printf("  worst %.3f of tolerance", worst);
        printf("%s\n", bad ? "  FAIL" : "");
        if (bad) printf("      %ld failures; first: %s\n", bad, first.c_str());
        return bad == 0;
    }
};

// bf16(atol, rtol) of docs/ops.md: an fp32 tolerance widened by one rounding of the output.
struct Tol {
    double atol, rtol;
    Tol out(bool bf16) const {
        const double u = ldexp(1.0, -8);
        return bf16 ? Tol{atol * (1 + u), rtol * (1 + u) + u} : *this;
    }
};

// Element counts: odd ones leave a scalar tail after the 16-byte packs (n % 4 != 0 and n % 8 != 0), 1024 none.
const long long SIZES[] = {1, 7, 13, 1001, 1024, 2053};

struct Flag {
    int f[4] = {0, 0, 0, 0};
    g4_ptr ptr() { return P(f); }
    bool clear() const { return f[0] == 0 && f[1] == 0 && f[2] == 0 && f[3] == 0; }
};

// ---- fill, fill_i32, scale ------------------------------------------------------------------------------------------

template <typename T>
void fill_one(Tally& t, long long n, int off, float value) {
    View<T> x((size_t) n, off);
    int e = g4_fill(dt<T>(), x.ptr(), n, value, 0);
    t.calls++;
    t.expect(e == 0 && x.guards_ok(), fmt("fill %s n=%lld off %d: rc %d or guard overwritten", dname<T>(), n, off, e));
    std::vector<T> want((size_t) n, nar<T>(value));  // CpuBackend.fill: Bf16.fromFloat((float) value)
    t.bits(fmt("fill %s n=%lld off %d", dname<T>(), n, off), x.p(), want.data(), (size_t) n);
}

template <typename T>
void scale_one(Tally& t, Rng& rng, Fingerprint& fp, long long n, int off, float alpha) {
    View<T> x((size_t) n, off);
    std::vector<T> in = randoms<T>(rng, (size_t) n);
    x.set(in);
    int e = g4_scale(dt<T>(), x.ptr(), n, alpha, 0);
    t.calls++;
    t.expect(e == 0 && x.guards_ok(), fmt("scale %s n=%lld: rc %d or guard overwritten", dname<T>(), n, e));
    std::vector<T> want((size_t) n);
    for (size_t i = 0; i < want.size(); i++) want[i] = nar<T>(alpha * wid(in[i]));  // one fp32 product, one rounding
    t.bits(fmt("scale %s n=%lld off %d", dname<T>(), n, off), x.p(), want.data(), (size_t) n);
    fp.add(x);
}

// ---- cast --------------------------------------------------------------------------------------------------------

// fp32 inputs that probe the rounding: NaNs (both signs, payloads), infinities, zeros, subnormals, ties to even both
// ways, the largest finite values (0x7f7f8000 is a tie that rounds to infinity), then random bit patterns and normals.
std::vector<float> cast_inputs(Rng& r, size_t n) {
    const uint32_t special[] = {0x7fc00000, 0xffc00000, 0x7f800001, 0xff812345, 0x7f800000, 0xff800000, 0x00000000,
                                0x80000000, 0x00000001, 0x80007fff, 0x00008000, 0x00018000, 0x007fffff, 0x3f808000,
                                0x3f818000, 0x3f808001, 0xbf80ffff, 0x7f7f7fff, 0x7f7f8000, 0x7f7fffff, 0xff7fffff,
                                0x3f800000, 0x3dcccccd};
    std::vector<float> v(n);
    for (size_t i = 0; i < n; i++) {
        if (i < sizeof special / 4) v[i] = of_bits(special[i]);
        else if (i % 2) v[i] = of_bits((uint32_t) r.g());
        else v[i] = (float) r.normal();
    }
    return v;
}

void cast_one(Tally& t, Rng& rng, Fingerprint& fp, bool to_bf16, long long n, int doff, int soff) {
    const std::string ctx = fmt("cast %s n=%lld dst+%d src+%d", to_bf16 ? "fp32->bf16" : "bf16->fp32", n, doff, soff);
    int e;
    t.calls++;
    if (to_bf16) {
        View<float> src((size_t) n, soff);
        View<u16> dst((size_t) n, doff);
        std::vector<float> in = cast_inputs(rng, (size_t) n);
        src.set(in);
        e = g4_cast(G4_BF16, dst.ptr(), G4_F32, src.ptr(), n, 0);
        std::vector<u16> want((size_t) n);
        for (size_t i = 0; i < want.size(); i++) want[i] = f2bf(in[i]);
        t.bits(ctx, dst.p(), want.data(), (size_t) n);
        t.expect(dst.guards_ok(), ctx + ": guard overwritten");
        fp.add(dst);
    } else {
        View<u16> src((size_t) n, soff);
        View<float> dst((size_t) n, doff);
        std::vector<u16> in((size_t) n);
        for (size_t i = 0; i < in.size(); i++) in[i] = n >= 65536 ? (u16) i : (u16) rng.g();  // every pattern when n allows
        src.set(in);
        e = g4_cast(G4_F32, dst.ptr(), G4_BF16, src.ptr(), n, 0);
        std::vector<float> want((size_t) n);
        for (size_t i = 0; i < want.size(); i++) want[i] = bf2f(in[i]);  // exact: the 16 bits become the high half
        t.bits(ctx, dst.p(), want.data(), (size_t) n);
        t.expect(dst.guards_ok(), ctx + ": guard overwritten");
        fp.add(dst);
    }
    t.expect(e == 0, fmt("%s: rc %d", ctx.c_str(), e));
}

}  // namespace

EMU_CASE("membound", fill_scale_cast) {
    Rng rng(101);
    Fingerprint fp;
    Tally tf("fill fp32 / bf16 / int32"), ts("scale fp32 / bf16"), tc("cast fp32 <-> bf16");
    for (long long n : SIZES)
        for (int off : {0, 1}) {
            for (float value : {0.1f, of_bits(0xbf808000u) /* a tie: to even */}) {
                fill_one<float>(tf, n, off, value);
                fill_one<u16>(tf, n, off, value);
            }
            View<int> xi((size_t) n, off);
            int e = g4_fill_i32(xi.ptr(), n, -123456789, 0);
            tf.calls++;
            std::vector<int> want((size_t) n, -123456789);
            tf.bits(fmt("fill_i32 n=%lld off %d", n, off), xi.p(), want.data(), (size_t) n);
            tf.expect(e == 0 && xi.guards_ok(), "fill_i32: rc or guard");
            scale_one<float>(ts, rng, fp, n, off, 0.37f);
            scale_one<u16>(ts, rng, fp, n, off, -1.3f);
            for (bool to_bf16 : {true, false}) {
                cast_one(tc, rng, fp, to_bf16, n, off, off);
                if (off) cast_one(tc, rng, fp, to_bf16, n, 0, 1);  // one operand misaligned: scalar path
            }
        }
    cast_one(tc, rng, fp, false, 65536, 0, 0);  // every bf16 bit pattern
    cast_one(tc, rng, fp, true, 65536, 0, 0);
    // same-dtype casts are copies: the launcher refuses them
    float a[4] = {0, 0, 0, 0}, b[4] = {1, 2, 3, 4};
    int e = g4_cast(G4_F32, P(a), G4_F32, P(b), 4, 0);
    tc.calls++;
    tc.expect(e == (int) cudaErrorInvalidValue && a[0] == 0, fmt("same-dtype cast: rc %d, want cudaErrorInvalidValue", e));
    bool ok = tf.print() & ts.print() & tc.print();
    printf("    fingerprint %016llx\n", (unsigned long long) fp.h);
    return ok;
}

// ---- add, axpy -------------------------------------------------------------------------------------------------------

namespace {

// Operand offsets for (out, a, b): aligned, all shifted, one input shifted; and out aliasing a or b.
struct AddLayout { const char* name; int oo, oa, ob, alias; };  // alias: 0 none, 1 out == a, 2 out == b
const AddLayout ADD_LAYOUTS[] = {{"aligned", 0, 0, 0, 0}, {"misaligned", 1, 1, 1, 0}, {"b+1", 0, 0, 1, 0},
                                 {"out==a", 0, 0, 0, 1}, {"out==b+1", 1, 0, 1, 2}};

template <typename T>
void add_one(Tally& t, Rng& rng, Fingerprint& fp, long long n, const AddLayout& L) {
    View<T> a((size_t) n, L.oa), b((size_t) n, L.ob), o((size_t) n, L.oo);
    std::vector<T> av = randoms<T>(rng, (size_t) n), bv = randoms<T>(rng, (size_t) n);
    a.set(av);
    b.set(bv);
    View<T>& out = L.alias == 1 ? a : L.alias == 2 ? b : o;
    int e = g4_add(dt<T>(), out.ptr(), a.ptr(), b.ptr(), n, 0);
    t.calls++;
    const std::string ctx = fmt("add %s n=%lld %s", dname<T>(), n, L.name);
    t.expect(e == 0 && a.guards_ok() && b.guards_ok() && o.guards_ok(), ctx + ": rc or guard");
    std::vector<T> want((size_t) n);
    for (size_t i = 0; i < want.size(); i++) want[i] = nar<T>(wid(av[i]) + wid(bv[i]));
    t.bits(ctx, out.p(), want.data(), (size_t) n);
    fp.add(out);
}

template <typename T>
void axpy_one(Tally& t, Rng& rng, Fingerprint& fp, long long n, int oy, int ox, float alpha) {
    View<float> y((size_t) n, oy);
    View<T> x((size_t) n, ox);
    std::vector<float> yv = randoms<float>(rng, (size_t) n);
    std::vector<T> xv = randoms<T>(rng, (size_t) n);
    y.set(yv);
    x.set(xv);
    int e = g4_axpy(y.ptr(), alpha, dt<T>(), x.ptr(), n, 0);
    t.calls++;
    const std::string ctx = fmt("axpy x %s n=%lld y+%d x+%d", dname<T>(), n, oy, ox);
    t.expect(e == 0 && y.guards_ok() && x.guards_ok(), ctx + ": rc or guard");
    std::vector<float> want((size_t) n);
    for (size_t i = 0; i < want.size(); i++) want[i] = yv[i] + alpha * wid(xv[i]);  // Java: y += alpha * x, no FMA
    t.bits(ctx, y.p(), want.data(), (size_t) n);
    fp.add(y);
}

}  // namespace

EMU_CASE("membound", add_axpy) {
    Rng rng(202);
    Fingerprint fp;
    Tally ta("add fp32 / bf16 (aliasing too)"), tx("axpy y fp32, x fp32 / bf16");
    for (long long n : SIZES) {
        for (const AddLayout& L : ADD_LAYOUTS) {
            add_one<float>(ta, rng, fp, n, L);
            add_one<u16>(ta, rng, fp, n, L);
        }
        for (int oy : {0, 1})
            for (int ox : {0, 1}) {
                axpy_one<float>(tx, rng, fp, n, oy, ox, -0.7f);
                axpy_one<u16>(tx, rng, fp, n, oy, ox, 3e-3f);
            }
    }
    bool ok = ta.print() & tx.print();
    printf("    fingerprint %016llx\n", (unsigned long long) fp.h);
    return ok;
}

// ---- swiglu ----------------------------------------------------------------------------------------------------------

namespace {

// float64 SwiGLU and its analytic gradient (CpuBackend evaluates the same formulas in float64).
void swiglu64(double g, double u, double dy, double* out, double* dg, double* du) {
    double s = 1 / (1 + exp(-g));
    *out = g * s * u;
    *dg = dy * u * s * (1 + g * (1 - s));
    *du = dy * g * s;
}

template <typename T>
void swiglu_one(Tally& tf, Tally& tb, Rng& rng, Fingerprint& fp, long long n, int layout) {
    // layout 0: aligned; 1: every pointer shifted; 2: only up shifted; 3: outputs alias inputs (out == gate;
    // dgate == gate, dup == up)
    const int og = layout == 1 ? 1 : 0, ou = layout == 1 || layout == 2 ? 1 : 0, oo = layout == 1 ? 1 : 0;
    const char* lname[] = {"aligned", "misaligned", "up+1", "in place"};
    const std::string ctx = fmt("%s n=%lld %s", dname<T>(), n, lname[layout]);
    const size_t N = (size_t) n;
    std::vector<T> gv = randoms<T>(rng, N, 2), uv = randoms<T>(rng, N), dyv = randoms<T>(rng, N);
    std::vector<float> gw(N), uw(N), dyw(N), hf(N), hdg(N), hdu(N);
    for (size_t i = 0; i < N; i++) { gw[i] = wid(gv[i]); uw[i] = wid(uv[i]); dyw[i] = wid(dyv[i]); }
    g4_host_swiglu(gw.data(), uw.data(), hf.data(), (int) n);
    g4_host_swiglu_backward(dyw.data(), gw.data(), uw.data(), hdg.data(), hdu.data(), (int) n);
    std::vector<double> wf(N), wdg(N), wdu(N);
    for (size_t i = 0; i < N; i++) swiglu64(gw[i], uw[i], dyw[i], &wf[i], &wdg[i], &wdu[i]);
    const bool bf = is_bf<T>;
    {   // forward
        View<T> g(N, og), u(N, ou), o(N, oo);
        g.set(gv);
        u.set(uv);
        View<T>& out = layout == 3 ? g : o;
        int e = g4_swiglu(dt<T>(), out.ptr(), g.ptr(), u.ptr(), n, 0);
        tf.calls++;
        tf.expect(e == 0 && g.guards_ok() && u.guards_ok() && o.guards_ok(), ctx + ": rc or guard");
        std::vector<T> twin(N);
        for (size_t i = 0; i < N; i++) twin[i] = nar<T>(hf[i]);
        tf.bits(ctx + " vs host twin", out.p(), twin.data(), N);
        Tol t = Tol{1e-6, 1e-5}.out(bf);
        tf.close(ctx, out.widened().data(), wf.data(), N, t.atol, t.rtol);
        fp.add(out);
    }
    {   // backward
        View<T> dy(N, og), g(N, og), u(N, ou), dg(N, oo), du(N, oo);
        dy.set(dyv);
        g.set(gv);
        u.set(uv);
        View<T>& DG = layout == 3 ? g : dg;
        View<T>& DU = layout == 3 ? u : du;
        int e = g4_swiglu_backward(dt<T>(), DG.ptr(), DU.ptr(), dy.ptr(), g.ptr(), u.ptr(), n, 0);
        tb.calls++;
        tb.expect(e == 0 && dy.guards_ok() && g.guards_ok() && u.guards_ok() && dg.guards_ok() && du.guards_ok(),
                  ctx + ": rc or guard");
        std::vector<T> t1(N), t2(N);
        for (size_t i = 0; i < N; i++) { t1[i] = nar<T>(hdg[i]); t2[i] = nar<T>(hdu[i]); }
        tb.bits(ctx + " dgate vs host twin", DG.p(), t1.data(), N);
        tb.bits(ctx + " dup vs host twin", DU.p(), t2.data(), N);
        Tol t = Tol{1e-5, 1e-4}.out(bf);
        tb.close(ctx + " dgate", DG.widened().data(), wdg.data(), N, t.atol, t.rtol);
        tb.close(ctx + " dup", DU.widened().data(), wdu.data(), N, t.atol, t.rtol);
        fp.add(DG);
        fp.add(DU);
    }
}

}  // namespace

EMU_CASE("membound", swiglu_fwd_bwd) {
    Rng rng(303);
    Fingerprint fp;
    Tally tf("swiglu fp32 / bf16"), tb("swiglu_backward fp32 / bf16");
    for (long long n : SIZES)
        for (int layout = 0; layout < 4; layout++) {
            swiglu_one<float>(tf, tb, rng, fp, n, layout);
            swiglu_one<u16>(tf, tb, rng, fp, n, layout);
        }
    bool ok = tf.print() & tb.print();
    printf("    fingerprint %016llx\n", (unsigned long long) fp.h);
    return ok;
}

// ---- embedding -------------------------------------------------------------------------------------------------------

namespace {

const int EMB_OP = 5, ROPE_OP = 9, KV_OP = 12;  // op codes the launchers echo into the flag

// ids[t] in [0, v), with the given bad entries planted at their positions
std::vector<int> make_ids(Rng& rng, int n, int v, const std::vector<std::pair<int, int>>& bad) {
    std::vector<int> ids(n);
    for (int& i : ids) i = rng.below(v);
    for (auto& b : bad) ids[b.first] = b.second;
    return ids;
}

bool bad_at(const std::vector<std::pair<int, int>>& bad, int t) {
    for (auto& b : bad) if (b.first == t) return true;
    return false;
}

// The flag after a call with bad index data: op, and (index, value) one of the bad entries, and the limit.
void expect_flag(Tally& t, const std::string& ctx, const Flag& f, int op, const std::vector<std::pair<int, int>>& bad,
                 int limit) {
    if (bad.empty()) { t.expect(f.clear(), fmt("%s: flag raised (%d %d %d %d) on good data", ctx.c_str(), f.f[0], f.f[1], f.f[2], f.f[3])); return; }
    bool known = false;
    for (auto& b : bad) known |= f.f[1] == b.first && f.f[2] == b.second;
    t.expect(f.f[0] == op && known && f.f[3] == limit,
             fmt("%s: flag {%d, %d, %d, %d}, want {%d, a bad (index, value), %d}", ctx.c_str(), f.f[0], f.f[1], f.f[2],
                 f.f[3], op, limit));
}

template <typename T>
void embedding_one(Tally& t, Rng& rng, Fingerprint& fp, int n, int d, int v, int toff, int ooff,
                   const std::vector<std::pair<int, int>>& bad) {
    const std::string ctx = fmt("embedding %s n=%d d=%d v=%d table+%d out+%d bad %zu", dname<T>(), n, d, v, toff, ooff,
                                bad.size());
    View<T> table((size_t) v * d, toff), out((size_t) n * d, ooff);
    std::vector<T> tv = randoms<T>(rng, (size_t) v * d);
    tv[(size_t) d / 2] = is_bf<T> ? (T) 0x7f81 : (T) of_bits(0xff800123u);  // a NaN payload: bits are copied as they are
    table.set(tv);
    std::vector<int> idv = make_ids(rng, n, v, bad);
    View<int> ids((size_t) n);
    ids.set(idv);
    Flag f;
    int e = g4_embedding(dt<T>(), out.ptr(), table.ptr(), ids.ptr(), n, d, v, f.ptr(), EMB_OP, 0);
    t.calls++;
    t.expect(e == 0 && table.guards_ok() && out.guards_ok(), ctx + ": rc or guard");
    expect_flag(t, ctx, f, EMB_OP, bad, v);
    std::vector<T> want((size_t) n * d);
    for (int r = 0; r < n; r++)  // a bad id's row is not written: it keeps the poison
        for (int j = 0; j < d; j++) want[(size_t) r * d + j] = bad_at(bad, r) ? poison<T>() : tv[(size_t) idv[r] * d + j];
    t.bits(ctx, out.p(), want.data(), want.size());
    fp.add(out);
}

// dTable (fp32) += dOut rows by id; CpuBackend sums each id's tokens in token order into the old row, one fp32 add at
// a time: per element that is the plain loop over tokens in order.
template <typename T>
void embedding_backward_one(Tally& t, Rng& rng, Fingerprint& fp, int n, int d, int v, int off,
                            const std::vector<std::pair<int, int>>& bad) {
    const std::string ctx = fmt("embedding_backward dOut %s n=%d d=%d v=%d off %d bad %zu", dname<T>(), n, d, v, off,
                                bad.size());
    std::vector<float> t0 = randoms<float>(rng, (size_t) v * d);
    std::vector<T> dyv = randoms<T>(rng, (size_t) n * d);
    std::vector<int> idv = make_ids(rng, n, v, bad);
    std::vector<float> want = t0;
    for (int r = 0; r < n; r++)
        if (!bad_at(bad, r))
            for (int j = 0; j < d; j++) want[(size_t) idv[r] * d + j] += wid(dyv[(size_t) r * d + j]);
    View<T> dy((size_t) n * d, off);
    dy.set(dyv);
    View<int> ids((size_t) n);
    ids.set(idv);
    long long ws_bytes = 0;
    g4_embedding_backward_workspace(n, v, &ws_bytes);
    std::vector<float> first;
    for (int rep = 0; rep < 2; rep++) {  // deterministic: a second call gives the same bits
        View<float> dtable((size_t) v * d, off);
        dtable.set(t0);
        View<unsigned char> ws((size_t) ws_bytes);
        Flag f;
        int e = g4_embedding_backward(dtable.ptr(), dt<T>(), dy.ptr(), ids.ptr(), n, d, v, ws.ptr(), ws_bytes, f.ptr(),
                                      EMB_OP + 1, 0);
        t.calls++;
        t.expect(e == 0 && dtable.guards_ok() && dy.guards_ok(), ctx + ": rc or guard");
        expect_flag(t, ctx, f, EMB_OP + 1, bad, v);
        t.bits(ctx + (rep ? " (repeat)" : ""), dtable.p(), want.data(), want.size());
        if (rep == 0) { first.assign(dtable.p(), dtable.p() + dtable.n); fp.add(dtable); }
        else t.bits(ctx + " repeat vs first", dtable.p(), first.data(), first.size());
    }
}

}  // namespace

EMU_CASE("membound", embedding_fwd_bwd) {
    Rng rng(404);
    Fingerprint fp;
    Tally tf("embedding fp32 / bf16"), tb("embedding_backward dOut fp32 / bf16");
    // d 64 (16-byte rows: packs), 13 (no packs), 1032 (packs, 128 threads), 1030 (no packs), 4104 (fp32: 1026 packs,
    // three trips of 4 packs a thread); table + 1: scalar path
    for (int d : {64, 13, 1032, 1030, 4104}) {
        const int n = d > 1000 ? 9 : 40, v = 23;
        embedding_one<float>(tf, rng, fp, n, d, v, 0, 0, {});
        embedding_one<u16>(tf, rng, fp, n, d, v, 0, 0, {});
        embedding_one<float>(tf, rng, fp, n, d, v, 1, 1, {});
        embedding_one<u16>(tf, rng, fp, n, d, v, 1, 0, {});
    }
    // out-of-range ids: reported, that token's row not written, no access outside the table
    embedding_one<u16>(tf, rng, fp, 12, 64, 23, 0, 0, {{3, -1}, {7, 23}, {11, INT_MAX}});
    embedding_one<float>(tf, rng, fp, 12, 13, 23, 1, 1, {{0, INT_MIN}});
    // backward: many repeats (v small against n), thread counts 32 / 128 / 256 (d 13, 300, 1030)
    for (int d : {13, 300, 1030}) {
        const int n = d > 1000 ? 40 : 200, v = 37;
        embedding_backward_one<float>(tb, rng, fp, n, d, v, 0, {});
        embedding_backward_one<u16>(tb, rng, fp, n, d, v, 1, {});
    }
    embedding_backward_one<float>(tb, rng, fp, 60, 33, 7, 0, {{0, -5}, {31, 7}, {59, 1 << 30}});
    embedding_backward_one<u16>(tb, rng, fp, 1, 5, 1, 0, {});  // one token, one row
    // the vector path's columns a thread (P = 1, 4 and 8 packs of 4; 9 takes the sorted path), runs of a few hundred
    // tokens whose later tokens sit across many 32- and 128-token windows, out-of-range ids among packs, and token
    // counts on both sides of the scan's limit (8192: above it the ids are sorted)
    // (under ThreadSanitizer, the race run, the scan's long runs are shorter: each token's block reads the ids of the
    // tokens before it, n^2 / 2 reads that TSan instruments one by one; 600 and 1000 tokens still cross many windows,
    // and the 8192-token scan and its 3000-token run stay with the AddressSanitizer run)
#if defined(__SANITIZE_THREAD__)
    const bool race = true;
#else
    const bool race = false;
#endif
    embedding_backward_one<u16>(tb, rng, fp, race ? 600 : 3000, 64, 40, 0, {});
    embedding_backward_one<float>(tb, rng, fp, 300, 2056, 50, 0, {});
    embedding_backward_one<u16>(tb, rng, fp, 100, 4104, 30, 0, {});
    embedding_backward_one<u16>(tb, rng, fp, 20, 8200, 5, 0, {});
    embedding_backward_one<u16>(tb, rng, fp, 60, 64, 7, 0, {{0, -5}, {31, 7}, {59, 1 << 30}});
    // P = 2 (fp32 and bf16, bad ids at the first and last token), P = 4 bf16, P = 8 fp32, 224 threads, one id
    // throughout (a single run of every token)
    embedding_backward_one<float>(tb, rng, fp, 70, 1032, 9, 0, {{0, -1}, {69, 9}});
    embedding_backward_one<u16>(tb, rng, fp, 70, 2048, 9, 0, {{0, 9}, {69, -7}});
    embedding_backward_one<u16>(tb, rng, fp, 60, 2056, 11, 0, {});
    embedding_backward_one<float>(tb, rng, fp, 40, 4104, 6, 0, {});
    embedding_backward_one<float>(tb, rng, fp, 90, 888, 13, 0, {});
    embedding_backward_one<u16>(tb, rng, fp, 129, 64, 1, 0, {});
    if (race) embedding_backward_one<float>(tb, rng, fp, 1000, 4, 300, 0, {{999, -1}});
    else embedding_backward_one<float>(tb, rng, fp, 8192, 4, 3000, 0, {{8191, -1}});
    embedding_backward_one<u16>(tb, rng, fp, 8193, 8, 100, 0, {{4, 100}});
    {   // a workspace smaller than asked for is refused before anything runs
        long long need = 0;
        g4_embedding_backward_workspace(4, 3, &need);
        std::vector<float> dtab(6, 1.f), dy(8, 1.f);
        std::vector<unsigned char> ws((size_t) need);
        int ids[4] = {0, 1, 2, 0};
        Flag f;
        int e = g4_embedding_backward(P(dtab.data()), G4_F32, P(dy.data()), P(ids), 4, 2, 3, P(ws.data()), need - 1,
                                      f.ptr(), EMB_OP + 1, 0);
        tb.calls++;
        tb.expect(e == (int) cudaErrorInvalidValue && dtab[0] == 1.f, fmt("short workspace: rc %d", e));
    }
    bool ok = tf.print() & tb.print();
    printf("    fingerprint %016llx\n", (unsigned long long) fp.h);
    return ok;
}

// ---- kv_append -------------------------------------------------------------------------------------------------------

namespace {

template <typename T>
void kv_one(Tally& t, Rng& rng, Fingerprint& fp, int n, int row, int capacity, int off,
            const std::vector<std::pair<int, int>>& bad) {
    const std::string ctx = fmt("kv_append %s n=%d row=%d capacity=%d off %d bad %zu", dname<T>(), n, row, capacity, off,
                                bad.size());
    // distinct slots (a permutation's prefix), then the bad ones planted
    std::vector<int> perm(capacity);
    for (int i = 0; i < capacity; i++) perm[i] = i;
    for (int i = capacity - 1; i > 0; i--) std::swap(perm[i], perm[rng.below(i + 1)]);
    std::vector<int> sl(perm.begin(), perm.begin() + n);
    for (auto& b : bad) sl[b.first] = b.second;
    const size_t cs = (size_t) capacity * row, ks = (size_t) n * row;
    std::vector<T> kc0 = randoms<T>(rng, cs), vc0 = randoms<T>(rng, cs), kv = randoms<T>(rng, ks), vv = randoms<T>(rng, ks);
    View<T> kc(cs, off), vc(cs, off), k(ks, off), v(ks, off);
    kc.set(kc0);
    vc.set(vc0);
    k.set(kv);
    v.set(vv);
    View<int> slots((size_t) n);
    slots.set(sl);
    Flag f;
    int e = g4_kv_append(dt<T>(), kc.ptr(), vc.ptr(), k.ptr(), v.ptr(), slots.ptr(), n, row, capacity, f.ptr(), KV_OP, 0);
    t.calls++;
    t.expect(e == 0 && kc.guards_ok() && vc.guards_ok() && k.guards_ok() && v.guards_ok(), ctx + ": rc or guard");
    expect_flag(t, ctx, f, KV_OP, bad, capacity);
    std::vector<T> wk = kc0, wv = vc0;  // every other row untouched
    for (int i = 0; i < n; i++)
        if (!bad_at(bad, i))
            for (int j = 0; j < row; j++) {
                wk[(size_t) sl[i] * row + j] = kv[(size_t) i * row + j];
                wv[(size_t) sl[i] * row + j] = vv[(size_t) i * row + j];
            }
    t.bits(ctx + " kCache", kc.p(), wk.data(), cs);
    t.bits(ctx + " vCache", vc.p(), wv.data(), cs);
    fp.add(kc);
    fp.add(vc);
}

}  // namespace

EMU_CASE("membound", kv_append) {
    Rng rng(505);
    Fingerprint fp;
    Tally t("kv_append fp32 / bf16");
    // rows of 64 bf16 / 36 fp32 (16-byte multiples: packs), 12 bf16 (24 bytes: no packs), 1032 bf16 (packs, 128
    // threads), 1030 fp32 (no packs); shifted views: scalar path
    kv_one<u16>(t, rng, fp, 6, 64, 11, 0, {});
    kv_one<float>(t, rng, fp, 6, 36, 11, 0, {});
    kv_one<u16>(t, rng, fp, 6, 12, 11, 0, {});
    kv_one<u16>(t, rng, fp, 3, 1032, 5, 0, {});
    kv_one<float>(t, rng, fp, 3, 1030, 5, 0, {});
    kv_one<u16>(t, rng, fp, 6, 64, 11, 1, {});
    kv_one<float>(t, rng, fp, 6, 36, 11, 1, {});
    kv_one<float>(t, rng, fp, 11, 8, 11, 0, {});  // fills every slot
    // out-of-range slots: reported, skipped, nothing else written
    kv_one<u16>(t, rng, fp, 6, 64, 11, 0, {{1, -1}, {4, 11}});
    kv_one<float>(t, rng, fp, 5, 36, 11, 1, {{4, INT_MAX}});
    kv_one<float>(t, rng, fp, 3, 1030, 5, 0, {{0, INT_MIN}});
    bool ok = t.print();
    printf("    fingerprint %016llx\n", (unsigned long long) fp.h);
    return ok;
}

// ---- rope --------------------------------------------------------------------------------------------------------

namespace {

// Rope.invFreq with Llama 3.1 scaling (rope_theta 500000, factor 8, low 1, high 4, original 8192), transcribed.
std::vector<float> inv_freq_llama31(int head_dim) {
    const double theta = 500000, factor = 8, low = 1, high = 4, old = 8192;
    const int half = head_dim / 2;
    std::vector<float> inv(half);
    for (int i = 0; i < half; i++) {
        float expo = (float) (2 * i) / (float) head_dim;
        inv[i] = (float) (1.0 / pow(theta, (double) expo));
    }
    const double low_wl = old / low, high_wl = old / high;
    for (int i = 0; i < half; i++) {
        double f = inv[i], wl = 2 * M_PI / f, o;
        if (wl > low_wl) o = f / factor;
        else if (wl < high_wl) o = f;
        else {
            double smooth = (old / wl - low) / (high - low);
            o = (1 - smooth) * f / factor + smooth * f;
        }
        inv[i] = (float) o;
    }
    return inv;
}

template <typename T>
void rope_one(Tally& t, Rng& rng, Fingerprint& fp, int h, int d, bool inverse, int off, bool in_place,
              const std::vector<std::pair<int, int>>& bad) {
    const std::vector<int> pos0 = {0, 1, 17, 8191, 65000, 131071, 3};
    const int n = (int) pos0.size(), half = d / 2, maxpos = 131071;
    const std::string ctx = fmt("rope%s %s h=%d d=%d off %d%s bad %zu", inverse ? " inverse" : "", dname<T>(), h, d, off,
                                in_place ? " in place" : "", bad.size());
    const size_t N = (size_t) n * h * d;
    std::vector<float> inv = inv_freq_llama31(d);
    std::vector<int> pos = pos0;
    for (auto& b : bad) pos[b.first] = b.second;
    std::vector<T> xv = randoms<T>(rng, N);
    View<T> x(N, off), o(N, off);
    x.set(xv);
    View<int> positions((size_t) n);
    positions.set(pos);
    View<float> invf((size_t) half);
    invf.set(inv);
    View<T>& out = in_place ? x : o;
    Flag f;
    int e = g4_rope(dt<T>(), out.ptr(), x.ptr(), positions.ptr(), invf.ptr(), n, h, d, inverse ? 1 : 0, f.ptr(),
                    ROPE_OP + inverse, 0);
    t.calls++;
    t.expect(e == 0 && x.guards_ok() && o.guards_ok(), ctx + ": rc or guard");
    expect_flag(t, ctx, f, ROPE_OP + inverse, bad, 0);
    // CpuBackend.rope transcribed (fp32 angle, float64 cos/sin rounded once, rotate_half without FMA), and float64
    std::vector<T> want(N);
    std::vector<double> want64(N);
    std::vector<float> got = out.widened(), got_ok;
    std::vector<double> want64_ok;
    const float sign = inverse ? -1.f : 1.f;
    for (int tk = 0; tk < n; tk++) {
        const bool skip = bad_at(bad, tk);
        for (int hh = 0; hh < h; hh++)
            for (int j = 0; j < half; j++) {
                const size_t a = ((size_t) tk * h + hh) * d + j, b = a + half;
                if (skip) {  // not written: out keeps what it held (x itself when in place)
                    want[a] = in_place ? xv[a] : poison<T>();
                    want[b] = in_place ? xv[b] : poison<T>();
                    continue;
                }
                float p = (float) pos[tk], ang = p * inv[j];
                float c = (float) cos((double) ang), s = sign * (float) sin((double) ang);
                float x1 = wid(xv[a]), x2 = wid(xv[b]);
                want[a] = nar<T>(x1 * c - x2 * s);
                want[b] = nar<T>(x2 * c + x1 * s);
                double c64 = cos((double) ang), s64 = sign * sin((double) ang);
                want64_ok.push_back(x1 * c64 - x2 * s64);
                want64_ok.push_back(x2 * c64 + x1 * s64);
                got_ok.push_back(got[a]);
                got_ok.push_back(got[b]);
            }
    }
    t.bits(ctx + " vs CPU transcription", out.p(), want.data(), N);
    // docs/ops.md: float64 rotation of the fp32 angle, atol 2e-7 (1 + max position) + 1e-6, rtol 1e-5
    Tol tol = Tol{2e-7 * (1 + maxpos) + 1e-6, 1e-5}.out(is_bf<T>);
    t.close(ctx, got_ok.data(), want64_ok.data(), got_ok.size(), tol.atol, tol.rtol);
    fp.add(out);
}

}  // namespace

EMU_CASE("membound", rope_fwd_inverse) {
    Rng rng(606);
    Fingerprint fp;
    Tally t("rope / inverse fp32 / bf16 (llama3.1)");
    // pairs h * d/2 of 96, 320, 2560: 32, 128, 256 threads
    const int shapes[][2] = {{3, 64}, {5, 128}, {40, 128}};
    for (auto& s : shapes)
        for (bool inverse : {false, true}) {
            rope_one<float>(t, rng, fp, s[0], s[1], inverse, 0, false, {});
            rope_one<u16>(t, rng, fp, s[0], s[1], inverse, 0, false, {});
        }
    rope_one<float>(t, rng, fp, 3, 64, false, 1, true, {});
    rope_one<u16>(t, rng, fp, 5, 128, true, 1, true, {});
    rope_one<u16>(t, rng, fp, 3, 96, false, 1, false, {});
    // a negative position: reported (limit 0), that token not written
    rope_one<float>(t, rng, fp, 3, 64, false, 0, false, {{2, -1}});
    rope_one<u16>(t, rng, fp, 5, 128, true, 0, true, {{6, INT_MIN}});
    bool ok = t.print();
    printf("    fingerprint %016llx\n", (unsigned long long) fp.h);
    return ok;
}

// ---- rmsnorm -------------------------------------------------------------------------------------------------------

namespace {

const float EPS = 1e-5f;

// rmsnorm forward and backward against float64. Backward's reference takes the rstd it is given (the exact one rounded
// to fp32, as a forward stores it): dx = r g - x r^3 mean(g x) with g = dOut w, dWeight += sum_t dOut x r.
template <typename T, typename W>
void rmsnorm_one(Tally& tf, Tally& tb, Rng& rng, Fingerprint& fp, int n, int d, int off, bool alias, bool backward = true) {
    const std::string ctx = fmt("rmsnorm %s w %s n=%d d=%d off %d%s", dname<T>(), dname<W>(), n, d, off,
                                alias ? " dx==dOut" : "");
    const size_t N = (size_t) n * d;
    std::vector<T> xv = randoms<T>(rng, N, 1.5), dyv = randoms<T>(rng, N);
    std::vector<W> wv = randoms<W>(rng, (size_t) d);
    for (auto& w : wv) w = nar<W>(1 + 0.3f * wid(w));
    std::vector<float> xw(N), dyw(N), ww(d);
    for (size_t i = 0; i < N; i++) { xw[i] = wid(xv[i]); dyw[i] = wid(dyv[i]); }
    for (int j = 0; j < d; j++) ww[j] = wid(wv[j]);
    std::vector<double> rs64(n), out64(N);
    std::vector<float> rs32(n);
    for (int r = 0; r < n; r++) {
        double ss = 0;
        for (int j = 0; j < d; j++) ss += (double) xw[(size_t) r * d + j] * xw[(size_t) r * d + j];
        rs64[r] = 1 / sqrt(ss / d + (double) EPS);
        rs32[r] = (float) rs64[r];
        for (int j = 0; j < d; j++) out64[(size_t) r * d + j] = xw[(size_t) r * d + j] * rs64[r] * ww[j];
    }
    View<T> x(N, off), out(N, off);
    View<W> w((size_t) d, off);
    View<float> rstd((size_t) n, off);
    x.set(xv);
    w.set(wv);
    {   // forward
        int e = g4_rmsnorm(dt<T>(), dt<W>(), out.ptr(), rstd.ptr(), x.ptr(), w.ptr(), n, d, EPS, 0);
        tf.calls++;
        tf.expect(e == 0 && out.guards_ok() && rstd.guards_ok(), ctx + ": rc or guard");
        Tol to = Tol{1e-6, 1e-5}.out(is_bf<T>);
        tf.close(ctx + " out", out.widened().data(), out64.data(), N, to.atol, to.rtol);
        tf.close(ctx + " rstd", rstd.p(), rs64.data(), (size_t) n, 1e-6, 1e-5);
        fp.add(out);
        fp.add(rstd);
    }
    if (!backward) return;
    // backward, on the exact rstd rounded to fp32
    std::vector<double> dx64(N), dw64(d, 0);
    std::vector<float> dw0 = randoms<float>(rng, (size_t) d, 0.1);
    for (int j = 0; j < d; j++) dw64[j] = dw0[j];
    for (int r = 0; r < n; r++) {
        const double rs = rs32[r];
        double dot = 0;
        for (int j = 0; j < d; j++) dot += (double) dyw[(size_t) r * d + j] * ww[j] * xw[(size_t) r * d + j];
        const double c = rs * rs * rs * dot / d;
        for (int j = 0; j < d; j++) {
            const size_t i = (size_t) r * d + j;
            dx64[i] = rs * dyw[i] * ww[j] - xw[i] * c;
            dw64[j] += (double) dyw[i] * xw[i] * rs;
        }
    }
    long long ws_bytes = 0;
    g4_rmsnorm_backward_workspace(n, d, &ws_bytes);
    View<float> rsv((size_t) n, off);
    rsv.set(rs32);
    std::vector<T> first_dx;
    std::vector<float> first_dw;
    for (int rep = 0; rep < 2; rep++) {  // deterministic: a second call gives the same bits
        View<T> dy(N, off), dxo(N, off);
        dy.set(dyv);
        View<T>& dx = alias ? dy : dxo;
        View<float> dw((size_t) d, off);
        dw.set(dw0);
        View<unsigned char> ws((size_t) ws_bytes);
        int e = g4_rmsnorm_backward(dt<T>(), dt<W>(), dx.ptr(), dw.ptr(), dy.ptr(), x.ptr(), w.ptr(), rsv.ptr(), n, d,
                                    ws.ptr(), ws_bytes, 0);
        tb.calls++;
        tb.expect(e == 0 && dx.guards_ok() && dw.guards_ok() && dy.guards_ok(), ctx + " backward: rc or guard");
        if (rep == 0) {
            Tol tx = Tol{1e-5, 1e-4}.out(is_bf<T>);
            tb.close(ctx + " dx", dx.widened().data(), dx64.data(), N, tx.atol, tx.rtol);
            tb.close(ctx + " dWeight", dw.p(), dw64.data(), (size_t) d, 1e-5, 1e-4);
            first_dx.assign(dx.p(), dx.p() + N);
            first_dw.assign(dw.p(), dw.p() + d);
            fp.add(dx);
            fp.add(dw);
        } else {
            tb.bits(ctx + " dx repeat", dx.p(), first_dx.data(), N);
            tb.bits(ctx + " dWeight repeat", dw.p(), first_dw.data(), (size_t) d);
        }
    }
}

}  // namespace

// The forward's row groups: with at least 512 blocks of them, a block takes 4 rows (2 when x is fp32) at once, their
// loads issued together and their sums reduced in one block_sum_n. Row counts that leave a partial last group, 1 to 4
// vectors a thread, all four dtype pairs (aligned: offset 0), and an unaligned call (the scalar kernel); the same bits
// as one row a block (the sums in the same order).
EMU_CASE("membound", rmsnorm_forward_row_groups) {
    Rng rng(708);
    Fingerprint fp;
    Tally tf("rmsnorm forward, row groups"), tb("unused");
    rmsnorm_one<u16, u16>(tf, tb, rng, fp, 2051, 64, 0, false, false);      // 8 bf16 a vector, 32 threads, 1 a thread
    rmsnorm_one<u16, float>(tf, tb, rng, fp, 2050, 1024, 0, false, false);   // 4 a vector, 128 threads, 2 a thread
    rmsnorm_one<u16, float>(tf, tb, rng, fp, 2049, 3076, 0, false, false);   // 4 a vector, 256 threads, 4 a thread (partial)
    rmsnorm_one<u16, u16>(tf, tb, rng, fp, 2049, 1536, 0, false, false);     // 8 a vector, 2 a thread (a partial round)
    rmsnorm_one<float, float>(tf, tb, rng, fp, 1025, 1536, 0, false, false); // 4 a vector, 4 a thread (a partial round)
    rmsnorm_one<float, u16>(tf, tb, rng, fp, 1027, 300, 0, false, false);   // 4 a vector, 128 threads, 1 a thread
    rmsnorm_one<float, u16>(tf, tb, rng, fp, 1026, 2000, 0, false, false);  // 4 a vector, 256 threads, 2 a thread
    rmsnorm_one<u16, float>(tf, tb, rng, fp, 2050, 64, 1, false, false);     // unaligned: the scalar kernel, as before
    rmsnorm_one<u16, u16>(tf, tb, rng, fp, 2043, 512, 0, false, false);      // under 512 groups: one row a block
    bool ok = tf.print();
    printf("    fingerprint %016llx\n", (unsigned long long) fp.h);
    return ok;
}

EMU_CASE("membound", rmsnorm_fwd_bwd) {
    Rng rng(707);
    Fingerprint fp;
    Tally tf("rmsnorm (x fp32/bf16 x w fp32/bf16)"), tb("rmsnorm_backward");
    // d 20: fused C = 1; 50: C = 2; 300: C = 4 (and forward 128 threads); 2100: C = 4 (forward 256 threads); 4100:
    // wide rows (partials + a dx kernel of 1024 threads). n > 32 rows: several dWeight chunks, the last one partial.
    const int shapes[][2] = {{70, 20}, {40, 50}, {33, 300}, {3, 2100}, {33, 4100}};
    for (auto& s : shapes) {
        const int n = s[0], d = s[1];
        rmsnorm_one<float, float>(tf, tb, rng, fp, n, d, 0, false);
        rmsnorm_one<u16, u16>(tf, tb, rng, fp, n, d, 1, false);
        if (d <= 300) {
            rmsnorm_one<u16, float>(tf, tb, rng, fp, n, d, 0, false);
            rmsnorm_one<float, u16>(tf, tb, rng, fp, n, d, 1, false);
        }
    }
    // the forward's vector path (aligned; vectors of 8 elements when x and w are bf16, else of 4): 1 to 8 vectors a
    // thread at 256 threads (2048 .. 16384), a partial last round (8200: 1025 bf16 vectors), and past 8 vectors a
    // thread (16384 with fp32 in it, 16392) the scalar kernel
    for (int d : {2048, 4096, 8192, 16384, 16392, 8200}) {
        rmsnorm_one<u16, float>(tf, tb, rng, fp, 3, d, 0, false);
        rmsnorm_one<u16, u16>(tf, tb, rng, fp, 2, d, 0, false);
        rmsnorm_one<float, float>(tf, tb, rng, fp, 2, d, 0, false);
        rmsnorm_one<float, u16>(tf, tb, rng, fp, 2, d, 0, false);
    }
    // dx == dOut (in place) on the fused and the wide path
    rmsnorm_one<u16, float>(tf, tb, rng, fp, 40, 300, 0, true);
    rmsnorm_one<float, float>(tf, tb, rng, fp, 33, 4100, 0, true);
    {   // a workspace smaller than asked for is refused
        long long need = 0;
        g4_rmsnorm_backward_workspace(2, 4, &need);
        std::vector<float> v(8, 1.f), dw(4, 0.f), rs(2, 1.f);
        std::vector<unsigned char> ws((size_t) need);
        int e = g4_rmsnorm_backward(G4_F32, G4_F32, P(v.data()), P(dw.data()), P(v.data()), P(v.data()), P(v.data()),
                                    P(rs.data()), 2, 4, P(ws.data()), need - 1, 0);
        tb.calls++;
        tb.expect(e == (int) cudaErrorInvalidValue && dw[0] == 0.f, fmt("short workspace: rc %d", e));
    }
    bool ok = tf.print() & tb.print();
    printf("    fingerprint %016llx\n", (unsigned long long) fp.h);
    return ok;
}

// ---- sum_squares ---------------------------------------------------------------------------------------------------

namespace {

template <typename T>
void sumsq_one(Tally& t, Rng& rng, Fingerprint& fp, long long n, int off) {
    const std::string ctx = fmt("sum_squares %s n=%lld off %d", dname<T>(), n, off);
    View<T> x((size_t) n, off);
    std::vector<T> xv = randoms<T>(rng, (size_t) n, 0.5);
    x.set(xv);
    long double exact = 0;
    for (T v : xv) exact += (long double) wid(v) * wid(v);
    long long ws_bytes = 0;
    g4_sum_squares_workspace(n, &ws_bytes);
    float first = 0;
    for (int rep = 0; rep < 2; rep++) {
        View<float> out(1);
        out[0] = 0.75f;  // accumulated into
        View<unsigned char> ws((size_t) ws_bytes);
        int e = g4_sum_squares(out.ptr(), dt<T>(), x.ptr(), n, ws.ptr(), ws_bytes, 0);
        t.calls++;
        t.expect(e == 0 && x.guards_ok(), ctx + ": rc or guard");
        if (rep == 0) {
            double want = 0.75 + (double) exact;
            t.close(ctx, out.p(), &want, 1, 0, 1e-6);  // docs/ops.md: atol 0, rtol 1e-6
            first = out[0];
            fp.add(out);
        } else {
            t.bits(ctx + " repeat", out.p(), &first, 1);
        }
    }
}

}  // namespace

EMU_CASE("membound", sum_squares) {
    Rng rng(808);
    Fingerprint fp;
    Tally t("sum_squares fp32 / bf16");
    // 70001: 18 partial blocks; 300001: 74
    for (long long n : {1LL, 7LL, 13LL, 1001LL, 1024LL, 70001LL})
        for (int off : {0, 1}) {
            sumsq_one<float>(t, rng, fp, n, off);
            sumsq_one<u16>(t, rng, fp, n, off);
        }
    sumsq_one<float>(t, rng, fp, 300001, 0);
    {   // a workspace smaller than asked for is refused
        long long need = 0;
        g4_sum_squares_workspace(5000, &need);
        std::vector<float> x(5000, 1.f);
        std::vector<unsigned char> ws((size_t) need);
        float out = 0.25f;
        int e = g4_sum_squares(P(&out), G4_F32, P(x.data()), 5000, P(ws.data()), need - 1, 0);
        t.calls++;
        t.expect(e == (int) cudaErrorInvalidValue && out == 0.25f, fmt("short workspace: rc %d", e));
    }
    bool ok = t.print();
    printf("    fingerprint %016llx\n", (unsigned long long) fp.h);
    return ok;
}

// ---- adamw -------------------------------------------------------------------------------------------------------

namespace {

struct AdamW {
    float lr, beta1, beta2, eps, wd;
    // CudaBackend.adamWScalars: {decay, beta1, beta2, 1-beta1, 1-beta2, lr/bc1, sqrt(bc2), eps, gradScale}, as the CPU
    // computes them
    std::vector<float> scalars(int step, float grad_scale) const {
        double bc1 = 1 - pow((double) beta1, step), bc2 = 1 - pow((double) beta2, step);
        return {1.f - lr * wd, beta1, beta2, 1 - beta1, 1 - beta2, (float) (lr / bc1), (float) sqrt(bc2), eps, grad_scale};
    }
};

// CpuBackend.adamWImpl's loop body, transcribed (every float operation rounded, no FMA).
void adamw_cpu(float* P_, const float* G, float* M, float* V, u16* H, size_t n, const std::vector<float>& c) {
    const float decay = c[0], b1 = c[1], b2 = c[2], stepSize = c[5], bc2Sqrt = c[6], eps = c[7], gs = c[8];
    for (size_t k = 0; k < n; k++) {
        float g = gs * G[k];
        float p = P_[k] * decay;
        float mm = M[k] + (1 - b1) * (g - M[k]);
        float vv = V[k] * b2 + (1 - b2) * g * g;
        float denom = (float) sqrt((double) vv) / bc2Sqrt + eps;
        p -= stepSize * (mm / denom);
        M[k] = mm;
        V[k] = vv;
        P_[k] = p;
        if (H != nullptr) H[k] = f2bf(p);
    }
}

// Three steps on one shard; hoff: the bf16 copy's element offset (-1: none; 4 = 8 bytes: the 8-byte store of the
// packed path; 1: scalar path).
void adamw_one(Tally& t, Rng& rng, Fingerprint& fp, long long n, int off, int hoff) {
    const std::string ctx = fmt("adamw n=%lld off %d bf16 copy %s", n, off,
                                hoff < 0 ? "none" : hoff == 0 ? "aligned" : hoff == 4 ? "+4 (8-byte)" : "+1");
    const size_t N = (size_t) n;
    const AdamW hp{1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f};
    View<float> p(N, off), g(N, off), m(N, off), v(N, off);
    View<u16> h(N, hoff < 0 ? 0 : hoff);
    std::vector<float> pc = randoms<float>(rng, N), mc = randoms<float>(rng, N, 1e-2), vc(N), hc;
    for (auto& x : vc) x = (float) (1e-4 * rng.uniform());
    std::vector<float> pt = pc, mt = mc, vt = vc;  // the host twin's copy
    std::vector<u16> hcpu(N), htwin(N);
    p.set(pc);
    m.set(mc);
    v.set(vc);
    for (int step = 1; step <= 3; step++) {
        std::vector<float> gv = randoms<float>(rng, N, 1e-2);
        if (N > 3) gv[3] = 0;
        g.set(gv);
        h.poison_all();
        std::vector<float> c = hp.scalars(step, step == 2 ? 0.37f : 1.f);  // step 2: clipping's coefficient folded in
        int e = g4_adamw(p.ptr(), g.ptr(), m.ptr(), v.ptr(), hoff < 0 ? 0 : h.ptr(), n, c[0], c[1], c[2], c[3], c[4], c[5],
                         c[6], c[7], c[8], 0);
        t.calls++;
        t.expect(e == 0 && p.guards_ok() && g.guards_ok() && m.guards_ok() && v.guards_ok() && h.guards_ok(),
                 ctx + ": rc or guard");
        adamw_cpu(pc.data(), gv.data(), mc.data(), vc.data(), hcpu.data(), N, c);
        g4_host_adamw(pt.data(), gv.data(), mt.data(), vt.data(), (short*) htwin.data(), (int) n, c[0], c[1], c[2], c[3],
                      c[4], c[5], c[6], c[7], c[8]);
        const std::string s = fmt("%s step %d", ctx.c_str(), step);
        t.bits(s + " gradient not written", g.p(), gv.data(), N);
        t.bits(s + " param vs CPU", p.p(), pc.data(), N);
        t.bits(s + " m vs CPU", m.p(), mc.data(), N);
        t.bits(s + " v vs CPU", v.p(), vc.data(), N);
        t.bits(s + " param vs host twin", p.p(), pt.data(), N);
        if (hoff >= 0) {
            t.bits(s + " bf16 copy vs CPU", h.p(), hcpu.data(), N);
            t.bits(s + " bf16 copy vs host twin", h.p(), htwin.data(), N);
        } else {
            std::vector<u16> untouched(N, poison<u16>());
            t.bits(s + " no bf16 copy", h.p(), untouched.data(), N);
        }
    }
    fp.add(p);
    fp.add(m);
    fp.add(v);
}

}  // namespace

EMU_CASE("membound", adamw) {
    Rng rng(909);
    Fingerprint fp;
    Tally t("adamw (3 steps; bf16 copy-out)");
    for (long long n : SIZES)
        for (int off : {0, 1})
            for (int hoff : {-1, 0, 1, 4}) {
                if (off && hoff == 4) continue;
                adamw_one(t, rng, fp, n, off, hoff);
            }
    bool ok = t.print();
    printf("    fingerprint %016llx\n", (unsigned long long) fp.h);
    return ok;
}

// ---- empty calls ---------------------------------------------------------------------------------------------------

// n = 0 (or a zero dimension): rc 0 and nothing touched. Every array has no elements (any access is outside an
// allocation: ASan), except sum_squares' accumulator, which must keep its value, and the flag, which must stay clear.
EMU_CASE("membound", empty_calls) {
    Tally t("n = 0 on every launcher");
    View<float> f0(0), o0(0);
    View<u16> h0(0);
    View<int> i0(0);
    View<float> acc(1);
    acc[0] = 0.75f;
    Flag flag;
    View<unsigned char> ws(64);
    auto ok = [&](const char* what, int e) { t.calls++; t.expect(e == 0, fmt("%s: rc %d", what, e)); };
    for (int d : {G4_F32, G4_BF16}) {
        g4_ptr x = d == G4_BF16 ? h0.ptr() : f0.ptr();
        ok("fill", g4_fill(d, x, 0, 1.f, 0));
        ok("scale", g4_scale(d, x, 0, 2.f, 0));
        ok("add", g4_add(d, x, x, x, 0, 0));
        ok("axpy", g4_axpy(f0.ptr(), 1.f, d, x, 0, 0));
        ok("swiglu", g4_swiglu(d, x, x, x, 0, 0));
        ok("swiglu_backward", g4_swiglu_backward(d, x, x, x, x, x, 0, 0));
        ok("embedding n=0", g4_embedding(d, x, x, i0.ptr(), 0, 8, 4, flag.ptr(), 1, 0));
        ok("embedding d=0", g4_embedding(d, x, x, i0.ptr(), 0, 0, 4, flag.ptr(), 1, 0));
        ok("embedding_backward", g4_embedding_backward(f0.ptr(), d, x, i0.ptr(), 0, 8, 4, ws.ptr(), 0, flag.ptr(), 1, 0));
        ok("rmsnorm", g4_rmsnorm(d, d, x, f0.ptr(), x, x, 0, 8, EPS, 0));
        ok("rmsnorm_backward", g4_rmsnorm_backward(d, d, x, f0.ptr(), x, x, x, f0.ptr(), 0, 8, ws.ptr(), 0, 0));
        ok("rope", g4_rope(d, x, x, i0.ptr(), f0.ptr(), 0, 2, 8, 0, flag.ptr(), 1, 0));
        ok("rope h=0", g4_rope(d, x, x, i0.ptr(), f0.ptr(), 0, 0, 8, 1, flag.ptr(), 1, 0));
        ok("kv_append", g4_kv_append(d, x, x, x, x, i0.ptr(), 0, 16, 4, flag.ptr(), 1, 0));
        long long need = -1;
        g4_sum_squares_workspace(0, &need);
        ok("sum_squares", g4_sum_squares(acc.ptr(), d, x, 0, ws.ptr(), need, 0));
    }
    ok("fill_i32", g4_fill_i32(i0.ptr(), 0, 7, 0));
    ok("cast fp32->bf16", g4_cast(G4_BF16, h0.ptr(), G4_F32, f0.ptr(), 0, 0));
    ok("cast bf16->fp32", g4_cast(G4_F32, f0.ptr(), G4_BF16, h0.ptr(), 0, 0));
    ok("adamw", g4_adamw(f0.ptr(), f0.ptr(), f0.ptr(), f0.ptr(), h0.ptr(), 0, 1, .9f, .99f, .1f, .01f, 1e-3f, 1, 1e-8f, 1, 0));
    t.expect(acc[0] == 0.75f, fmt("sum_squares n=0 changed its accumulator to %g", acc[0]));
    t.expect(flag.clear(), "flag raised by an empty call");
    return t.print();
}
