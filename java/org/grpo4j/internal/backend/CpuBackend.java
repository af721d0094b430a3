package org.grpo4j.internal.backend;

import java.util.LinkedHashSet;
import java.util.Set;

/**
 * The reference backend: pure Java, fp32 math, deterministic. Multithreaded over fixed chunks (see {@link Parallel})
 * so results do not depend on the thread count or scheduling. bf16 variants of the ops (see the table in
 * {@link Backend}) widen their bf16 inputs exactly, run the fp32 code and round each bf16 output once to nearest
 * even ({@link Bf16Scope}); ops that only move elements (embedding, kvAppend, copy) copy bf16 bits as they are.
 */
public final class CpuBackend extends AbstractBackend {
    private final Parallel par;

    public CpuBackend() { this(Runtime.getRuntime().availableProcessors()); }

    public CpuBackend(int threads) { this.par = new Parallel(threads); }

    @Override
    public String name() { return "cpu"; }

    @Override
    public String description() {
        return "cpu (pure Java, fp32, " + par.threads + " thread" + (par.threads == 1 ? "" : "s")
                + (RowKernels.VECTOR ? ", SIMD matmul" : ", scalar matmul: add --add-modules jdk.incubator.vector for SIMD") + ")";
    }

    @Override
    public Set<String> implementedOps() { return new LinkedHashSet<>(Ops.ALL); }

    Parallel parallel() { return par; }

    @Override
    public void synchronize() {}

    @Override
    public void close() {
        super.close();
        par.shutdown();
    }

    // ---- storage access for the op implementations ----------------------------------------------------------------

    static float[] f(Tensor t) { return ((CpuStorage) t.storage).f; }
    static short[] h(Tensor t) { return ((CpuStorage) t.storage).h; }
    static int[] i(Tensor t) { return ((CpuStorage) t.storage).i; }
    static int off(Tensor t) { return (int) t.offset; }

    @Override
    Storage allocateStorage(DType dtype, long elements) { return new CpuStorage(dtype, elements); }

    @Override
    void uploadImpl(Tensor dst, Object a) {
        int n = (int) dst.numel();
        switch (dst.dtype()) {
            case FP32 -> System.arraycopy((float[]) a, 0, f(dst), off(dst), n);
            case BF16 -> System.arraycopy((short[]) a, 0, h(dst), off(dst), n);
            case INT32 -> System.arraycopy((int[]) a, 0, i(dst), off(dst), n);
            case INT64 -> System.arraycopy((long[]) a, 0, ((CpuStorage) dst.storage).l, off(dst), n);
        }
    }

    @Override
    Object downloadImpl(Tensor t) {
        int n = (int) t.numel(), o = off(t);
        return switch (t.dtype()) {
            case FP32 -> java.util.Arrays.copyOfRange(f(t), o, o + n);
            case BF16 -> java.util.Arrays.copyOfRange(h(t), o, o + n);
            case INT32 -> java.util.Arrays.copyOfRange(i(t), o, o + n);
            case INT64 -> java.util.Arrays.copyOfRange(((CpuStorage) t.storage).l, o, o + n);
        };
    }

    /**
     * The bf16 variant of an op: {@code body} calls the fp32 implementation on the scope's stand-ins; on success the
     * bf16 outputs are rounded once (see {@link Bf16Scope}); on failure nothing is written.
     */
    private void widened(String op, java.util.function.Consumer<Bf16Scope> body) {
        try (Bf16Scope s = new Bf16Scope(this, op)) {
            body.accept(s);
            s.commit();
        }
    }

    /** The heap array behind an fp32 or bf16 tensor, for ops that only move elements (bits copied, no rounding). */
    private static Object data(Tensor t) { return t.dtype() == DType.BF16 ? h(t) : f(t); }

    // ---- fill / scale / copy / cast (twins of cuda/fill.cuh and cuda/cast.cuh) -------------------------------------

    @Override
    void fillImpl(Tensor x, double value) {
        int o = off(x), n = (int) x.numel();
        switch (x.dtype()) {
            case FP32 -> java.util.Arrays.fill(f(x), o, o + n, (float) value);
            case BF16 -> java.util.Arrays.fill(h(x), o, o + n, Bf16.fromFloat((float) value));
            case INT32 -> java.util.Arrays.fill(i(x), o, o + n, (int) value);
            default -> throw new IllegalStateException();
        }
    }

    @Override
    void scaleImpl(Tensor x, float alpha) {
        int o = off(x), n = (int) x.numel();
        if (x.dtype() == DType.FP32) {
            float[] a = f(x);
            par.forRange(n, 1 << 16, (s, e) -> { for (int k = s; k < e; k++) a[o + k] = alpha * a[o + k]; });
        } else {
            short[] a = h(x);
            par.forRange(n, 1 << 16, (s, e) -> {
                for (int k = s; k < e; k++) a[o + k] = Bf16.fromFloat(alpha * Bf16.toFloat(a[o + k]));
            });
        }
    }

    @Override
    void copyImpl(Tensor dst, Tensor src) {
        int n = (int) dst.numel();
        switch (dst.dtype()) {
            case FP32 -> System.arraycopy(f(src), off(src), f(dst), off(dst), n);
            case BF16 -> System.arraycopy(h(src), off(src), h(dst), off(dst), n);
            case INT32 -> System.arraycopy(i(src), off(src), i(dst), off(dst), n);
            case INT64 -> System.arraycopy(((CpuStorage) src.storage).l, off(src), ((CpuStorage) dst.storage).l, off(dst), n);
        }
    }

    @Override
    void castImpl(Tensor dst, Tensor src) {
        int n = (int) dst.numel(), od = off(dst), os = off(src);
        if (dst.dtype() == src.dtype()) {
            copyImpl(dst, src);
        } else if (dst.dtype() == DType.BF16) {
            float[] s = f(src);
            short[] d = h(dst);
            par.forRange(n, 1 << 16, (a, b) -> { for (int k = a; k < b; k++) d[od + k] = Bf16.fromFloat(s[os + k]); });
        } else {
            short[] s = h(src);
            float[] d = f(dst);
            par.forRange(n, 1 << 16, (a, b) -> { for (int k = a; k < b; k++) d[od + k] = Bf16.toFloat(s[os + k]); });
        }
    }

    // ---- elementwise ----------------------------------------------------------------------------------------------

    @Override
    void addImpl(Tensor out, Tensor a, Tensor b) {
        if (Bf16Scope.any(out, a, b)) {
            widened(Ops.ADD, s -> addImpl(s.out(out), s.in(a), s.in(b)));
            return;
        }
        float[] o = f(out), x = f(a), y = f(b);
        int oo = off(out), oa = off(a), ob = off(b);
        par.forRange((int) out.numel(), 1 << 15, (s, e) -> { for (int k = s; k < e; k++) o[oo + k] = x[oa + k] + y[ob + k]; });
    }

    @Override
    void axpyImpl(Tensor y, float alpha, Tensor x) {
        if (Bf16Scope.any(x)) { // bf16 gradients accumulated into an fp32 y
            widened(Ops.AXPY, s -> axpyImpl(y, alpha, s.in(x)));
            return;
        }
        float[] a = f(y), b = f(x);
        int oy = off(y), ox = off(x);
        par.forRange((int) y.numel(), 1 << 15, (s, e) -> { for (int k = s; k < e; k++) a[oy + k] += alpha * b[ox + k]; });
    }

    // ---- embedding ------------------------------------------------------------------------------------------------

    /** Reads int32 ids and checks each is in [0, limit). */
    static int[] checkedIds(String op, String name, Tensor ids, int limit) {
        int[] a = i(ids);
        int o = off(ids), n = (int) ids.numel();
        for (int k = 0; k < n; k++) {
            int id = a[o + k];
            if (id < 0 || id >= limit)
                throw new IllegalArgumentException(op + ": " + name + "[" + k + "] = " + id + " is outside [0, " + limit + ")");
        }
        return a;
    }

    @Override
    void embeddingImpl(Tensor out, Tensor table, Tensor ids) {
        int n = ids.dim(0), d = table.dim(1);
        int[] id = checkedIds(Ops.EMBEDDING, "ids", ids, table.dim(0));
        Object o = data(out), w = data(table); // a gather copies bf16 bits as they are: no rounding involved
        int oo = off(out), ow = off(table), oi = off(ids);
        par.forRange(n, Math.max(1, 8192 / Math.max(1, d)), (s, e) -> {
            for (int t = s; t < e; t++) System.arraycopy(w, ow + id[oi + t] * d, o, oo + t * d, d);
        });
    }

    @Override
    void embeddingBackwardImpl(Tensor dTable, Tensor dOut, Tensor ids) {
        if (Bf16Scope.any(dOut)) {
            widened(Ops.EMBEDDING_BACKWARD, s -> embeddingBackwardImpl(dTable, s.in(dOut), ids));
            return;
        }
        int n = ids.dim(0), d = dTable.dim(1);
        int[] id = checkedIds(Ops.EMBEDDING_BACKWARD, "ids", ids, dTable.dim(0));
        int oi = off(ids);
        // group tokens by id (stable: token order within an id), then each id's row is summed by one thread
        long[] keys = new long[n];
        for (int t = 0; t < n; t++) keys[t] = ((long) id[oi + t] << 32) | t;
        java.util.Arrays.sort(keys);
        int[] starts = new int[n + 1];
        int groups = 0;
        for (int t = 0; t < n; t++) if (t == 0 || (keys[t] >>> 32) != (keys[t - 1] >>> 32)) starts[groups++] = t;
        starts[groups] = n;
        float[] g = f(dTable), dy = f(dOut);
        int og = off(dTable), od = off(dOut);
        final int ng = groups;
        par.forRange(ng, Math.max(1, 4096 / Math.max(1, d)), (s, e) -> {
            for (int q = s; q < e; q++) {
                int row = (int) (keys[starts[q]] >>> 32);
                int base = og + row * d;
                for (int t = starts[q]; t < starts[q + 1]; t++) {
                    int src = od + (int) keys[t] * d;
                    for (int j = 0; j < d; j++) g[base + j] += dy[src + j];
                }
            }
        });
    }

    // ---- RMSNorm --------------------------------------------------------------------------------------------------

    @Override
    void rmsNormImpl(Tensor out, Tensor rstd, Tensor x, Tensor weight, float eps) {
        if (Bf16Scope.any(out, x, weight)) {
            widened(Ops.RMS_NORM, s -> rmsNormImpl(s.out(out), rstd, s.in(x), s.in(weight), eps));
            return;
        }
        int n = x.dim(0), d = x.dim(1);
        float[] o = f(out), r = f(rstd), a = f(x), w = f(weight);
        int oo = off(out), or = off(rstd), ox = off(x), ow = off(weight);
        par.forRange(n, Math.max(1, 8192 / Math.max(1, d)), (s, e) -> {
            for (int t = s; t < e; t++) {
                int base = ox + t * d;
                double ss = 0;
                for (int j = 0; j < d; j++) ss += (double) a[base + j] * a[base + j];
                float rs = (float) (1.0 / Math.sqrt(ss / d + eps));
                r[or + t] = rs;
                for (int j = 0; j < d; j++) o[oo + t * d + j] = a[base + j] * rs * w[ow + j];
            }
        });
    }

    @Override
    void rmsNormBackwardImpl(Tensor dx, Tensor dWeight, Tensor dOut, Tensor x, Tensor weight, Tensor rstd) {
        if (Bf16Scope.any(dx, dOut, x, weight)) {
            widened(Ops.RMS_NORM_BACKWARD, s -> rmsNormBackwardImpl(s.out(dx), dWeight, s.in(dOut), s.in(x), s.in(weight), rstd));
            return;
        }
        int n = x.dim(0), d = x.dim(1);
        float[] gx = f(dx), gw = f(dWeight), gy = f(dOut), a = f(x), w = f(weight), r = f(rstd);
        int odx = off(dx), odw = off(dWeight), ody = off(dOut), ox = off(x), ow = off(weight), or = off(rstd);
        // dWeight first (it reads x and dOut, which dx may alias): columns in blocks, rows in order; no rows add nothing
        // (not even + 0, which turned a -0 entry into +0 where CUDA leaves dWeight untouched)
        if (n > 0) par.forRange(d, 64, (s, e) -> {
            double[] acc = new double[e - s];
            for (int t = 0; t < n; t++) {
                float rs = r[or + t];
                for (int j = s; j < e; j++) acc[j - s] += (double) gy[ody + t * d + j] * a[ox + t * d + j] * rs;
            }
            for (int j = s; j < e; j++) gw[odw + j] += (float) acc[j - s];
        });
        par.forRange(n, Math.max(1, 8192 / Math.max(1, d)), (s, e) -> {
            for (int t = s; t < e; t++) {
                float rs = r[or + t];
                double dot = 0;
                for (int j = 0; j < d; j++) dot += (double) gy[ody + t * d + j] * w[ow + j] * a[ox + t * d + j];
                double c = (double) rs * rs * rs * dot / d;
                for (int j = 0; j < d; j++) {
                    double g = (double) gy[ody + t * d + j] * w[ow + j];
                    gx[odx + t * d + j] = (float) (rs * g - a[ox + t * d + j] * c);
                }
            }
        });
    }

    // ---- matmul ---------------------------------------------------------------------------------------------------

    /**
     * dst[dOff + p * rows + j] = src[off + j * cols + p]: the [rows, cols] matrix at off, transposed, in 32 x 32 tiles
     * (the element-by-element copy wrote each element a cache line from the last: 13 ns an element at [1536, 512], a
     * 16-row decode GEMM's whole time six times over); bf16 sources (short[]) are widened on the way, exactly. The
     * tiles' row bands are split over the pool.
     */
    private void transpose(float[] dst, int dOff, Object src, int off, int rows, int cols) {
        final int tile = 32;
        float[] sf = src instanceof float[] x ? x : null;
        short[] sh = src instanceof short[] x ? x : null;
        par.forRange((cols + tile - 1) / tile, Math.max(1, (1 << 16) / Math.max(1, tile * rows)), (s, e) -> {
            for (int pb = s * tile; pb < Math.min(cols, e * tile); pb += tile)
                for (int jb = 0; jb < rows; jb += tile) {
                    int jEnd = Math.min(rows, jb + tile), pEnd = Math.min(cols, pb + tile);
                    for (int p = pb; p < pEnd; p++) {
                        int to = dOff + p * rows, from = off + p;
                        if (sf != null) for (int j = jb; j < jEnd; j++) dst[to + j] = sf[from + j * cols];
                        else for (int j = jb; j < jEnd; j++) dst[to + j] = Bf16.toFloat(sh[from + j * cols]);
                    }
                }
        });
    }

    /** Up to this many rows of op(a), a transposed b is read in place ({@link #matmulFewRows}), not transposed first. */
    static final int SMALL_M = 4;

    /**
     * c = alpha * a * b^T + beta * c for a few rows of op(a) (decoding's batch): b's rows are read where they are,
     * four at a time, against op(a) as [k, m], so that b (a weight, n x k) is read once and never copied; the
     * transposing path reads it, writes it and reads it again. Each element sums its products in p order from 0, as
     * the main path does, so both give the same bits. c and a fp32 here; b fp32 or bf16 (widened exactly, four rows
     * at a time).
     */
    private void matmulFewRows(Tensor c, Tensor a, boolean transA, Tensor b, float alpha, float beta,
                               int batch, int m, int n, int k) {
        float[] C = f(c), A = f(a);
        float[] bf = b.dtype() == DType.BF16 ? null : f(b);
        short[] bh = bf == null ? h(b) : null;
        int oc = off(c), oa = off(a), ob = off(b);
        boolean aBatched = a.rank() == 3, bBatched = b.rank() == 3;
        int grain = Math.max(1, 65536 / Math.max(1, 4 * m * k)); // groups of 4 rows of b a task: >= ~64K multiply-adds
        for (int q = 0; q < batch; q++) {
            int aBase = oa + (aBatched ? q * m * k : 0), bBase = ob + (bBatched ? q * n * k : 0), cBase = oc + q * m * n;
            float[] at; // op(a) as [k, m] row-major
            int atOff;
            if (transA) {
                at = A;
                atOff = aBase;
            } else {
                at = new float[k * m];
                atOff = 0;
                for (int i = 0; i < m; i++) for (int p = 0; p < k; p++) at[p * m + i] = A[aBase + i * k + p];
            }
            par.forRange((n + 3) / 4, grain, (s, e) -> {
                float[] acc = new float[4 * m];
                float[] rows = bf != null ? bf : new float[4 * k];
                for (int g = s; g < e; g++) {
                    int j = 4 * g, h = Math.min(4, n - j);
                    int r0; // rows j.. of b in `rows`, k apart
                    if (bf != null) r0 = bBase + j * k;
                    else {
                        r0 = 0;
                        for (int x = 0, o = bBase + j * k; x < h * k; x++) rows[x] = Bf16.toFloat(bh[o + x]);
                    }
                    java.util.Arrays.fill(acc, 0f);
                    if (h == 4) {
                        for (int p = 0; p < k; p++) {
                            float b0 = rows[r0 + p], b1 = rows[r0 + k + p], b2 = rows[r0 + 2 * k + p], b3 = rows[r0 + 3 * k + p];
                            int ap = atOff + p * m;
                            for (int i = 0; i < m; i++) {
                                float av = at[ap + i];
                                acc[i] += av * b0;
                                acc[m + i] += av * b1;
                                acc[2 * m + i] += av * b2;
                                acc[3 * m + i] += av * b3;
                            }
                        }
                    } else {
                        for (int x = 0; x < h; x++)
                            for (int p = 0; p < k; p++) {
                                float bv = rows[r0 + x * k + p];
                                int ap = atOff + p * m;
                                for (int i = 0; i < m; i++) acc[x * m + i] += at[ap + i] * bv;
                            }
                    }
                    for (int x = 0; x < h; x++)
                        for (int i = 0; i < m; i++) {
                            int ci = cBase + i * n + j + x;
                            C[ci] = beta == 0f ? alpha * acc[x * m + i] : alpha * acc[x * m + i] + beta * C[ci];
                        }
                }
            });
        }
    }

    @Override
    void matmulImpl(Tensor c, Tensor a, boolean transA, Tensor b, boolean transB, float alpha, float beta,
                    int batch, int m, int n, int k) {
        if (transB && m <= SMALL_M) {
            if (Bf16Scope.any(c, a)) // b stays as it is (bf16 rows are widened four at a time)
                widened(Ops.MATMUL, s -> matmulFewRows(beta == 0f ? s.out(c) : s.inOut(c), s.in(a), transA, b, alpha, beta, batch, m, n, k));
            else matmulFewRows(c, a, transA, b, alpha, beta, batch, m, n, k);
            return;
        }
        if (transB && b.dtype() == DType.BF16) { // widened and transposed in one pass, as the fp32 path transposes
            int nb = b.rank() == 3 ? batch : 1;
            try (Tensor bt = empty(DType.FP32, nb, k, n)) {
                for (int q = 0; q < nb; q++) transpose(f(bt), q * k * n, h(b), off(b) + q * n * k, n, k);
                matmulImpl(c, a, transA, b.rank() == 3 ? bt : bt.reshape(k, n), false, alpha, beta, batch, m, n, k);
            }
            return;
        }
        if (Bf16Scope.any(c, a, b)) { // bf16 products are exact in fp32; the sums are the fp32 kernel's
            widened(Ops.MATMUL, s -> matmulImpl(beta == 0f ? s.out(c) : s.inOut(c), s.in(a), transA, s.in(b), transB,
                    alpha, beta, batch, m, n, k));
            return;
        }
        float[] C = f(c), A = f(a), B = f(b);
        int oc = off(c), oa = off(a), ob = off(b);
        boolean aBatched = a.rank() == 3, bBatched = b.rank() == 3;
        // B as [k, n] row-major for each batch (transposed copy when transB), so the inner loop is contiguous
        float[][] bk = new float[bBatched ? batch : 1][];
        for (int q = 0; q < bk.length; q++) {
            int base = ob + q * k * n;
            if (!transB) {
                bk[q] = null; // read B in place
            } else {
                float[] t = new float[k * n];
                transpose(t, 0, B, base, n, k);
                bk[q] = t;
            }
        }
        int rows = batch * m;
        // tasks of >= ~64K multiply-adds, cut at multiples of 4 rows (the micro-kernel's height)
        int grain = Math.max(4, (65536 / Math.max(1, n * Math.max(1, k))) / 4 * 4);
        par.forRange(rows, grain, (s, e) -> {
            float[] acc = new float[4 * n];
            for (int r = s; r < e; ) {
                int q = r / m, i = r % m;
                int h = Math.min(4, Math.min(e - r, m - i)); // rows of this batch handled together
                int aBase = oa + (aBatched ? q * m * k : 0);
                int bq = bBatched ? q : 0;
                float[] bm = bk[bq] != null ? bk[bq] : B;
                int bBase = bk[bq] != null ? 0 : ob + bq * k * n;
                java.util.Arrays.fill(acc, 0f);
                if (h == 4) {
                    // 4 x n register block: every element still sums its products in p order (deterministic)
                    for (int p = 0; p < k; p++) {
                        float a0, a1, a2, a3;
                        if (transA) {
                            int o = aBase + p * m + i;
                            a0 = A[o]; a1 = A[o + 1]; a2 = A[o + 2]; a3 = A[o + 3];
                        } else {
                            int o = aBase + i * k + p;
                            a0 = A[o]; a1 = A[o + k]; a2 = A[o + 2 * k]; a3 = A[o + 3 * k];
                        }
                        RowKernels.axpy4(acc, n, a0, a1, a2, a3, bm, bBase + p * n);
                    }
                } else {
                    for (int x = 0; x < h; x++)
                        for (int p = 0; p < k; p++) {
                            float aip = transA ? A[aBase + p * m + i + x] : A[aBase + (i + x) * k + p];
                            RowKernels.axpy1(acc, x * n, n, aip, bm, bBase + p * n);
                        }
                }
                for (int x = 0; x < h; x++) {
                    int cBase = oc + q * m * n + (i + x) * n;
                    if (beta == 0f) for (int j = 0; j < n; j++) C[cBase + j] = alpha * acc[x * n + j];
                    else for (int j = 0; j < n; j++) C[cBase + j] = alpha * acc[x * n + j] + beta * C[cBase + j];
                }
                r += h;
            }
        });
    }

    // ---- RoPE -----------------------------------------------------------------------------------------------------

    @Override
    void ropeImpl(Tensor out, Tensor x, Tensor positions, Rope rope, boolean inverse) {
        if (Bf16Scope.any(out, x)) {
            widened(inverse ? Ops.ROPE_BACKWARD : Ops.ROPE, s -> ropeImpl(s.out(out), s.in(x), positions, rope, inverse));
            return;
        }
        int n = x.dim(0), h = x.dim(1), d = x.dim(2), half = d / 2;
        int[] pos = i(positions);
        int op = off(positions);
        for (int t = 0; t < n; t++)
            if (pos[op + t] < 0) throw new IllegalArgumentException((inverse ? Ops.ROPE_BACKWARD : Ops.ROPE)
                    + ": positions[" + t + "] = " + pos[op + t] + " is negative");
        float[] inv = rope.invFreq();
        float[] o = f(out), a = f(x);
        int oo = off(out), ox = off(x);
        float sign = inverse ? -1f : 1f;
        par.forRange(n, Math.max(1, 4096 / Math.max(1, h * d)), (s, e) -> {
            float[] cs = new float[half], sn = new float[half];
            for (int t = s; t < e; t++) {
                float p = pos[op + t];
                for (int j = 0; j < half; j++) {
                    float ang = p * inv[j];
                    cs[j] = (float) Math.cos(ang);
                    sn[j] = sign * (float) Math.sin(ang);
                }
                for (int hh = 0; hh < h; hh++) {
                    int base = (t * h + hh) * d;
                    for (int j = 0; j < half; j++) {
                        float x1 = a[ox + base + j], x2 = a[ox + base + j + half];
                        o[oo + base + j] = x1 * cs[j] - x2 * sn[j];
                        o[oo + base + j + half] = x2 * cs[j] + x1 * sn[j];
                    }
                }
            }
        });
    }

    // ---- attention ------------------------------------------------------------------------------------------------

    /** Validates cuSeqlens (0 = c[0] <= c[1] <= ... = n) and returns the sequence index of every token. */
    static int[] sequenceOf(String op, Tensor cuSeqlens, int n) {
        int[] c = i(cuSeqlens);
        int o = off(cuSeqlens), b = cuSeqlens.dim(0) - 1;
        if (c[o] != 0) throw new IllegalArgumentException(op + ": cuSeqlens[0] must be 0, got " + c[o]);
        if (c[o + b] != n) throw new IllegalArgumentException(op + ": cuSeqlens[" + b + "] = " + c[o + b] + " must equal the token count " + n);
        for (int q = 0; q < b; q++) // all of it before any use: an entry above n (then a smaller one) must not index past n
            if (c[o + q + 1] < c[o + q])
                throw new IllegalArgumentException(op + ": cuSeqlens must be non-decreasing, but cuSeqlens[" + (q + 1) + "] = "
                        + c[o + q + 1] + " < cuSeqlens[" + q + "] = " + c[o + q]);
        int[] seq = new int[n];
        for (int q = 0; q < b; q++)
            for (int t = c[o + q]; t < c[o + q + 1]; t++) seq[t] = q;
        return seq;
    }

    @Override
    void attentionImpl(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor cuSeqlens, float scale) {
        if (Bf16Scope.any(out, q, k, v)) {
            widened(Ops.ATTENTION, s -> attentionImpl(s.out(out), lse, s.in(q), s.in(k), s.in(v), cuSeqlens, scale));
            return;
        }
        int n = q.dim(0), hq = q.dim(1), d = q.dim(2), hkv = k.dim(1), group = hq / hkv;
        int[] seq = sequenceOf(Ops.ATTENTION, cuSeqlens, n);
        int[] cu = i(cuSeqlens);
        int oc = off(cuSeqlens);
        float[] O = f(out), L = f(lse), Q = f(q), K = f(k), V = f(v);
        int oo = off(out), ol = off(lse), oq = off(q), ok = off(k), ov = off(v);
        par.forRange(n * hq, 4, (s, e) -> {
            double[] sc = new double[n];
            double[] acc = new double[d];
            for (int w = s; w < e; w++) {
                int t = w / hq, h = w % hq, g = h / group;
                int start = cu[oc + seq[t]];
                int qb = oq + (t * hq + h) * d;
                double mx = Double.NEGATIVE_INFINITY;
                for (int j = start; j <= t; j++) {
                    int kb = ok + (j * hkv + g) * d;
                    double dot = 0;
                    for (int x = 0; x < d; x++) dot += (double) Q[qb + x] * K[kb + x];
                    sc[j - start] = dot * scale;
                    mx = Math.max(mx, sc[j - start]);
                }
                double sum = 0;
                java.util.Arrays.fill(acc, 0);
                for (int j = start; j <= t; j++) {
                    double p = Math.exp(sc[j - start] - mx);
                    sum += p;
                    int vb = ov + (j * hkv + g) * d;
                    for (int x = 0; x < d; x++) acc[x] += p * V[vb + x];
                }
                int obase = oo + (t * hq + h) * d;
                for (int x = 0; x < d; x++) O[obase + x] = (float) (acc[x] / sum);
                L[ol + t * hq + h] = (float) (mx + Math.log(sum));
            }
        });
    }

    @Override
    void attentionBackwardImpl(Tensor dq, Tensor dk, Tensor dv, Tensor dOut, Tensor q, Tensor k, Tensor v,
                               Tensor out, Tensor lse, Tensor cuSeqlens, float scale) {
        if (Bf16Scope.any(dq, dk, dv, dOut, q, k, v, out)) {
            widened(Ops.ATTENTION_BACKWARD, s -> attentionBackwardImpl(s.out(dq), s.out(dk), s.out(dv), s.in(dOut),
                    s.in(q), s.in(k), s.in(v), s.in(out), lse, cuSeqlens, scale));
            return;
        }
        int n = q.dim(0), hq = q.dim(1), d = q.dim(2), hkv = k.dim(1), group = hq / hkv, b = cuSeqlens.dim(0) - 1;
        sequenceOf(Ops.ATTENTION_BACKWARD, cuSeqlens, n);
        int[] cu = i(cuSeqlens);
        int oc = off(cuSeqlens);
        float[] DQ = f(dq), DK = f(dk), DV = f(dv), DO = f(dOut), Q = f(q), K = f(k), V = f(v), O = f(out), L = f(lse);
        int odq = off(dq), odk = off(dk), odv = off(dv), odo = off(dOut), oq = off(q), ok = off(k), ov = off(v), oo = off(out), ol = off(lse);
        // one task per (sequence, kv head): it owns dk/dv rows of that head and dq rows of the heads in its group
        par.forRange(b * hkv, 1, (s, e) -> {
            for (int w = s; w < e; w++) {
                int sq = w / hkv, g = w % hkv;
                int start = cu[oc + sq], end = cu[oc + sq + 1], len = end - start;
                double[] gk = new double[len * d], gv = new double[len * d], gq = new double[d];
                double[] pRow = new double[len], dsRow = new double[len];
                for (int h = g * group; h < (g + 1) * group; h++) {
                    for (int i = start; i < end; i++) {
                        int qb = oq + (i * hq + h) * d, dob = odo + (i * hq + h) * d, ob = oo + (i * hq + h) * d;
                        double lsei = L[ol + i * hq + h];
                        double di = 0;
                        for (int x = 0; x < d; x++) di += (double) DO[dob + x] * O[ob + x];
                        for (int j = start; j <= i; j++) {
                            int kb = ok + (j * hkv + g) * d, vb = ov + (j * hkv + g) * d;
                            double sdot = 0, pdot = 0;
                            for (int x = 0; x < d; x++) {
                                sdot += (double) Q[qb + x] * K[kb + x];
                                pdot += (double) DO[dob + x] * V[vb + x];
                            }
                            double p = Math.exp(sdot * scale - lsei);
                            pRow[j - start] = p;
                            dsRow[j - start] = p * (pdot - di);
                        }
                        java.util.Arrays.fill(gq, 0);
                        for (int j = start; j <= i; j++) {
                            int kb = ok + (j * hkv + g) * d, jb = (j - start) * d;
                            double p = pRow[j - start], ds = dsRow[j - start] * scale;
                            for (int x = 0; x < d; x++) {
                                gq[x] += ds * K[kb + x];
                                gk[jb + x] += ds * Q[qb + x];
                                gv[jb + x] += p * DO[dob + x];
                            }
                        }
                        int dqb = odq + (i * hq + h) * d;
                        for (int x = 0; x < d; x++) DQ[dqb + x] = (float) gq[x];
                    }
                }
                for (int j = start; j < end; j++) {
                    int kb = (j * hkv + g) * d, jb = (j - start) * d;
                    for (int x = 0; x < d; x++) {
                        DK[odk + kb + x] = (float) gk[jb + x];
                        DV[odv + kb + x] = (float) gv[jb + x];
                    }
                }
            }
        });
    }

    @Override
    void kvAppendImpl(Tensor kCache, Tensor vCache, Tensor k, Tensor v, Tensor slots) {
        int n = k.dim(0), row = k.dim(1) * k.dim(2), capacity = kCache.dim(0) * kCache.dim(1);
        int[] sl = checkedIds(Ops.KV_APPEND, "slots", slots, capacity);
        int os = off(slots);
        Object KC = data(kCache), VC = data(vCache), K = data(k), V = data(v); // bf16 bits copied as they are
        int okc = off(kCache), ovc = off(vCache), ok = off(k), ov = off(v);
        for (int t = 0; t < n; t++) {
            int slot = sl[os + t];
            System.arraycopy(K, ok + t * row, KC, okc + slot * row, row);
            System.arraycopy(V, ov + t * row, VC, ovc + slot * row, row);
        }
    }

    @Override
    void gatherTokensImpl(Tensor ids, Tensor src, Tensor index) {
        int n = ids.dim(0), m = src.dim(0);
        int[] I = i(index), S = i(src), D = i(ids);
        int oi = off(index), os = off(src), od = off(ids);
        for (int t = 0; t < n; t++)
            if (I[oi + t] >= m)
                throw new IllegalArgumentException(Ops.GATHER_TOKENS + ": index[" + t + "] = " + I[oi + t] + " is outside [0, " + m + ")");
        for (int t = 0; t < n; t++) if (I[oi + t] >= 0) D[od + t] = S[os + I[oi + t]];
    }

    /**
     * The table entries {@code keys} keys take: keys / blockSize rounded up, without forming keys + blockSize - 1 (it
     * wraps for a block size near 2^31); g4::decode_pages in cuda/attention.cuh.
     */
    private static int decodePages(int keys, int blockSize) { return keys / blockSize + (keys % blockSize != 0 ? 1 : 0); }

    @Override
    void decodeAttentionImpl(Tensor out, Tensor q, Tensor kCache, Tensor vCache, Tensor blockTables, Tensor contextLens,
                             Tensor prefixGroups, float scale) {
        if (Bf16Scope.any(out, q)) { // q and out widened; bf16 caches are read in place below (widening a whole pool per call
            // cost a layer's pool of copying every decode step)
            widened(Ops.DECODE_ATTENTION, s -> decodeAttentionImpl(s.out(out), s.in(q), kCache, vCache,
                    blockTables, contextLens, prefixGroups, scale));
            return;
        }
        int b = q.dim(0), hq = q.dim(1), d = q.dim(2), bs = kCache.dim(1), hkv = kCache.dim(2), group = hq / hkv;
        int maxBlocks = blockTables.dim(1), numBlocks = kCache.dim(0);
        int[] ctx = i(contextLens), bt = i(blockTables);
        int octx = off(contextLens), obt = off(blockTables);
        // keys t < shared[s] through row lead[s] of the tables (its prefix group's first sequence), the rest its own.
        // The groups first, as CUDA checks them (its prefix kernels run before the per-sequence ones)
        int[] shared = new int[b], lead = new int[b];
        for (int s = 0; s < b; s++) lead[s] = s;
        if (prefixGroups != null) prefixGroups(i(prefixGroups), off(prefixGroups), prefixGroups.dim(0), ctx, octx, bt, obt,
                b, maxBlocks, bs, numBlocks, shared, lead);
        for (int s = 0; s < b; s++) {
            int c = ctx[octx + s];
            if (c < 1 || c > (long) maxBlocks * bs) // (long: tables 2^31 / blockSize columns wide are valid here; CUDA refuses them)
                throw new IllegalArgumentException(Ops.DECODE_ATTENTION + ": contextLens[" + s + "] = " + c + " is outside [1, "
                        + ((long) maxBlocks * bs) + "] (maxBlocks " + maxBlocks + " x blockSize " + bs + ")");
            for (int blk = 0, nb = decodePages(c, bs); blk < nb; blk++) {
                int id = bt[obt + s * maxBlocks + blk];
                if (id < 0 || id >= numBlocks)
                    throw new IllegalArgumentException(Ops.DECODE_ATTENTION + ": blockTables[" + s + ", " + blk + "] = " + id
                            + " is outside [0, " + numBlocks + ")");
            }
        }
        float[] O = f(out), Q = f(q);
        // the caches as they are stored: a bf16 element widened exactly where it is read (as Bf16Scope would)
        boolean kb16 = kCache.dtype() == DType.BF16, vb16 = vCache.dtype() == DType.BF16;
        float[] KC = kb16 ? null : f(kCache), VC = vb16 ? null : f(vCache);
        short[] KH = kb16 ? h(kCache) : null, VH = vb16 ? h(vCache) : null;
        int oo = off(out), oq = off(q), okc = off(kCache), ovc = off(vCache);
        int longest = 0;
        for (int s = 0; s < b; s++) longest = Math.max(longest, ctx[octx + s]);
        int scores = longest;
        par.forRange(b * hq, 2, (s, e) -> {
            double[] acc = new double[d];
            double[] sc = new double[scores]; // (the longest context, not maxBlocks x blockSize: that product may pass 2^31)
            for (int w = s; w < e; w++) {
                int sq = w / hq, h = w % hq, g = h / group, c = ctx[octx + sq];
                int qb = oq + (sq * hq + h) * d;
                double mx = Double.NEGATIVE_INFINITY;
                for (int t = 0; t < c; t++) {
                    int slot = bt[obt + (t < shared[sq] ? lead[sq] : sq) * maxBlocks + t / bs] * bs + t % bs;
                    int kb = okc + (slot * hkv + g) * d;
                    double dot = 0;
                    if (kb16) for (int x = 0; x < d; x++) dot += (double) Q[qb + x] * Bf16.toFloat(KH[kb + x]);
                    else for (int x = 0; x < d; x++) dot += (double) Q[qb + x] * KC[kb + x];
                    sc[t] = dot * scale;
                    mx = Math.max(mx, sc[t]);
                }
                double sum = 0;
                java.util.Arrays.fill(acc, 0);
                for (int t = 0; t < c; t++) {
                    double p = Math.exp(sc[t] - mx);
                    sum += p;
                    int slot = bt[obt + (t < shared[sq] ? lead[sq] : sq) * maxBlocks + t / bs] * bs + t % bs;
                    int vb = ovc + (slot * hkv + g) * d;
                    if (vb16) for (int x = 0; x < d; x++) acc[x] += p * Bf16.toFloat(VH[vb + x]);
                    else for (int x = 0; x < d; x++) acc[x] += p * VC[vb + x];
                }
                int ob = oo + (sq * hq + h) * d;
                for (int x = 0; x < d; x++) O[ob + x] = (float) (acc[x] / sum);
            }
        });
    }

    /**
     * Checks decodeAttention's prefix groups row by row (in the CUDA kernel's order of checks, with its words) and fills
     * each member's shared key count and the row whose table serves them.
     */
    private static void prefixGroups(int[] gr, int og, int rows, int[] ctx, int octx, int[] bt, int obt, int b, int maxBlocks,
                                     int bs, int numBlocks, int[] shared, int[] lead) {
        boolean[] taken = new boolean[b];
        for (int g = 0; g < rows; g++) {
            int first = gr[og + 3 * g], count = gr[og + 3 * g + 1], sh = gr[og + 3 * g + 2];
            if (count < 0) throw prefixError(g, 1, 0, count, 0);
            if (count == 0) continue;
            if (first < 0 || first >= b) throw prefixError(g, 0, 0, first, b);
            if (count > b - first) throw prefixError(g, 1, 0, count, b - first);
            if (sh < 0 || (long) sh > (long) maxBlocks * bs) throw prefixError(g, 2, 0, sh, (long) maxBlocks * bs);
            if (sh == 0) continue;
            for (int m = 0; m < count; m++)
                if (ctx[octx + first + m] < sh) throw prefixError(g, 2, m + 1, sh, ctx[octx + first + m]);
            for (int j = 0, pages = decodePages(sh, bs); j < pages; j++) {
                int id = bt[obt + first * maxBlocks + j];
                if (id < 0 || id >= numBlocks)
                    throw new IllegalArgumentException(Ops.DECODE_ATTENTION + ": blockTables[" + first + ", " + j + "] = " + id
                            + " is outside [0, " + numBlocks + ")");
            }
            for (int m = 0; m < count; m++) {
                int s = first + m;
                if (taken[s]) throw prefixError(g, 3, 0, s, 0);
                taken[s] = true;
                shared[s] = sh;
                lead[s] = first;
            }
        }
    }

    private static IllegalArgumentException prefixError(int g, int field, int member, int value, long limit) {
        return new IllegalArgumentException(Ops.DECODE_ATTENTION + ": " + prefixGroupMessage(g, field, member, value, limit));
    }

    // ---- SwiGLU ---------------------------------------------------------------------------------------------------

    @Override
    void swigluImpl(Tensor out, Tensor gate, Tensor up) {
        if (Bf16Scope.any(out, gate, up)) {
            widened(Ops.SWIGLU, s -> swigluImpl(s.out(out), s.in(gate), s.in(up)));
            return;
        }
        float[] o = f(out), g = f(gate), u = f(up);
        int oo = off(out), og = off(gate), ou = off(up);
        par.forRange((int) out.numel(), 1 << 14, (s, e) -> {
            for (int k = s; k < e; k++) {
                double x = g[og + k];
                o[oo + k] = (float) (x / (1 + Math.exp(-x)) * u[ou + k]);
            }
        });
    }

    @Override
    void swigluBackwardImpl(Tensor dGate, Tensor dUp, Tensor dOut, Tensor gate, Tensor up) {
        if (Bf16Scope.any(dGate, dUp, dOut, gate, up)) {
            widened(Ops.SWIGLU_BACKWARD, s -> swigluBackwardImpl(s.out(dGate), s.out(dUp), s.in(dOut), s.in(gate), s.in(up)));
            return;
        }
        float[] dg = f(dGate), du = f(dUp), dy = f(dOut), g = f(gate), u = f(up);
        int odg = off(dGate), odu = off(dUp), ody = off(dOut), og = off(gate), ou = off(up);
        par.forRange((int) gate.numel(), 1 << 14, (s, e) -> {
            for (int k = s; k < e; k++) {
                double x = g[og + k], sig = 1 / (1 + Math.exp(-x)), y = dy[ody + k], uu = u[ou + k];
                dg[odg + k] = (float) (y * uu * sig * (1 + x * (1 - sig)));
                du[odu + k] = (float) (y * x * sig);
            }
        });
    }

    // ---- LM head --------------------------------------------------------------------------------------------------

    @Override
    void tokenLogprobsImpl(Tensor out, Tensor hidden, Tensor lmHead, Tensor targets, float temperature) {
        if (Bf16Scope.any(hidden, lmHead)) {
            widened(Ops.TOKEN_LOGPROBS, s -> tokenLogprobsImpl(out, s.in(hidden), s.in(lmHead), targets, temperature));
            return;
        }
        LmHead lm = new LmHead(this, hidden, lmHead, targets, temperature, Ops.TOKEN_LOGPROBS);
        float[] o = f(out);
        int oo = off(out);
        lm.forward();
        for (int t = 0; t < lm.n; t++) o[oo + t] = (float) lm.logp[t];
    }

    @Override
    void tokenLogprobsBackwardImpl(Tensor dHidden, Tensor dLmHead, Tensor dLogprobs, Tensor hidden, Tensor lmHead,
                                   Tensor targets, float temperature) {
        if (Bf16Scope.any(dHidden, hidden, lmHead)) {
            widened(Ops.TOKEN_LOGPROBS_BACKWARD, s -> tokenLogprobsBackwardImpl(s.out(dHidden), dLmHead, dLogprobs,
                    s.in(hidden), s.in(lmHead), targets, temperature));
            return;
        }
        LmHead lm = new LmHead(this, hidden, lmHead, targets, temperature, Ops.TOKEN_LOGPROBS_BACKWARD);
        lm.forward();
        float[] g = f(dLogprobs);
        double[] dl = new double[lm.n];
        for (int t = 0; t < lm.n; t++) dl[t] = g[off(dLogprobs) + t];
        lm.backward(dl, dHidden, dLmHead);
    }

    @Override
    void grpoLossImpl(GrpoLossOutputs out, Tensor hidden, Tensor lmHead, Tensor targets, Tensor weights, Tensor advantages,
                      Tensor oldLogprobs, Tensor refLogprobs, GrpoLossParams p) {
        if (Bf16Scope.any(out.dHidden(), hidden, lmHead)) {
            widened(Ops.GRPO_LOSS, s -> grpoLossImpl(new GrpoLossOutputs(out.loss(), out.logprobs(), out.ratio(),
                    out.clipped(), out.kl(), s.out(out.dHidden()), out.dLmHead()), s.in(hidden), s.in(lmHead), targets,
                    weights, advantages, oldLogprobs, refLogprobs, p));
            return;
        }
        LmHead lm = new LmHead(this, hidden, lmHead, targets, p.temperature(), Ops.GRPO_LOSS);
        lm.forward();
        int n = lm.n;
        float[] w = f(weights), adv = f(advantages), old = oldLogprobs == null ? null : f(oldLogprobs), ref = f(refLogprobs);
        int ow = off(weights), oa = off(advantages), oo = oldLogprobs == null ? 0 : off(oldLogprobs), orf = off(refLogprobs);
        float[] lp = f(out.logprobs()), ra = f(out.ratio()), cl = f(out.clipped()), kl = f(out.kl());
        int olp = off(out.logprobs()), ora = off(out.ratio()), ocl = off(out.clipped()), okl = off(out.kl());
        double[] dl = new double[n];
        double loss = 0;
        double lo = 1.0 - p.epsLow(), hi = 1.0 + p.epsHigh();
        for (int t = 0; t < n; t++) {
            double logp = lm.logp[t], a = adv[oa + t];
            double ratio = Math.exp(logp - (old == null ? logp : old[oo + t])); // on-policy: exp(0) = 1
            double pg1 = -a * ratio, pg2 = -a * Math.min(Math.max(ratio, lo), hi);
            boolean clipped = pg2 > pg1;
            double pg = Math.max(pg1, pg2);
            double dRaw = logp - ref[orf + t];
            boolean clampActive = KlEstimator.clamped(dRaw);
            double dd = KlEstimator.clamp(dRaw);
            double k = p.kl().value(dd, ratio);
            double wt = w[ow + t];
            loss += wt * (pg + p.beta() * k);
            double dpg = clipped ? 0 : -a * ratio;
            dl[t] = wt * (dpg + p.beta() * p.kl().grad(dd, clampActive, ratio));
            lp[olp + t] = (float) logp;
            ra[ora + t] = (float) ratio;
            cl[ocl + t] = clipped ? 1f : 0f;
            kl[okl + t] = (float) k;
        }
        f(out.loss())[off(out.loss())] = (float) loss;
        lm.backward(dl, out.dHidden(), out.dLmHead());
    }

    // ---- sampling -------------------------------------------------------------------------------------------------

    @Override
    void sampleImpl(Tensor tokens, Tensor logprobs, Tensor logits, Tensor rngCounters, SamplingSpec spec) {
        sampleRows(tokens, logprobs, logits, rngCounters, r -> spec);
    }

    @Override
    void sampleRowsImpl(Tensor tokens, Tensor logprobs, Tensor logits, Tensor rngCounters, SamplingSpec[] specs) {
        sampleRows(tokens, logprobs, logits, rngCounters, r -> specs[r]);
    }

    private void sampleRows(Tensor tokens, Tensor logprobs, Tensor logits, Tensor rngCounters, java.util.function.IntFunction<SamplingSpec> spec) {
        if (Bf16Scope.any(logits)) {
            widened(Ops.SAMPLE, s -> sampleRows(tokens, logprobs, s.in(logits), rngCounters, spec));
            return;
        }
        int b = logits.dim(0), v = logits.dim(1);
        float[] z = f(logits), lp = f(logprobs);
        int[] tok = i(tokens), rc = i(rngCounters);
        int oz = off(logits), olp = off(logprobs), ot = off(tokens), orc = off(rngCounters);
        par.forRange(b, 1, (s, e) -> {
            for (int r = s; r < e; r++) {
                Sampler.Result res = Sampler.sampleRow(z, oz + r * v, v, spec.apply(r), rc[orc + 2 * r], rc[orc + 2 * r + 1]);
                tok[ot + r] = res.token();
                lp[olp + r] = (float) res.logprob();
            }
        });
    }

    // ---- optimizer and reductions ---------------------------------------------------------------------------------

    @Override
    void adamWImpl(Tensor param, Tensor grad, Tensor m, Tensor v, AdamWStep st, Tensor bf16Out) {
        float[] P = f(param), G = f(grad), M = f(m), V = f(v);
        short[] H = bf16Out == null ? null : h(bf16Out);
        int op = off(param), og = off(grad), om = off(m), ov = off(v), oh = bf16Out == null ? 0 : off(bf16Out);
        double bc1 = 1 - Math.pow(st.beta1(), st.step()), bc2 = 1 - Math.pow(st.beta2(), st.step());
        float stepSize = (float) (st.lr() / bc1);
        float bc2Sqrt = (float) Math.sqrt(bc2);
        float decay = 1f - st.lr() * st.weightDecay();
        float b1 = st.beta1(), b2 = st.beta2(), eps = st.eps(), gs = st.gradScale();
        par.forRange((int) param.numel(), 1 << 14, (s, e) -> {
            for (int k = s; k < e; k++) {
                float g = gs * G[og + k]; // scale()'s product, rounded once
                float p = P[op + k] * decay;
                float mm = M[om + k] + (1 - b1) * (g - M[om + k]);
                float vv = V[ov + k] * b2 + (1 - b2) * g * g;
                float denom = (float) Math.sqrt(vv) / bc2Sqrt + eps;
                p -= stepSize * (mm / denom);
                M[om + k] = mm;
                V[ov + k] = vv;
                P[op + k] = p;
                if (H != null) H[oh + k] = Bf16.fromFloat(p);
            }
        });
    }

    @Override
    void sumSquaresImpl(Tensor out, Tensor x) {
        if (Bf16Scope.any(x)) {
            widened(Ops.SUM_SQUARES, s -> sumSquaresImpl(out, s.in(x)));
            return;
        }
        int n = (int) x.numel(), grain = 1 << 15;
        float[] a = f(x);
        int ox = off(x);
        double[] part = new double[Parallel.chunks(n, grain)];
        par.forRange(n, grain, (s, e) -> {
            double acc = 0;
            for (int k = s; k < e; k++) acc += (double) a[ox + k] * a[ox + k];
            part[s / grain] = acc; // forRange chunks start at multiples of grain
        });
        double total = 0;
        for (double p : part) total += p;
        f(out)[off(out)] += (float) total;
    }
}
