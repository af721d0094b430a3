package org.grpo4j.internal.backend;

import static org.bytedeco.cuda.global.cublas.*;
import static org.bytedeco.cuda.global.cudart.CUDA_R_16BF;
import static org.bytedeco.cuda.global.cudart.CUDA_R_32F;

import java.nio.FloatBuffer;
import java.util.HashMap;
import java.util.Map;
import org.bytedeco.cuda.cublas.cublasContext;
import org.bytedeco.cuda.cublas.cublasLtContext;
import org.bytedeco.cuda.cublas.cublasLtMatmulAlgo_t;
import org.bytedeco.cuda.cublas.cublasLtMatmulDescOpaque_t;
import org.bytedeco.cuda.cublas.cublasLtMatmulHeuristicResult_t;
import org.bytedeco.cuda.cublas.cublasLtMatmulPreferenceOpaque_t;
import org.bytedeco.cuda.cublas.cublasLtMatrixLayoutOpaque_t;
import org.bytedeco.cuda.cudart.CUstream_st;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.IntPointer;
import org.bytedeco.javacpp.LongPointer;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.PointerPointer;

/**
 * The GEMMs of {@link CudaBackend#matmul}: cuBLASLt through the JavaCPP CUDA presets, with cuBLAS's
 * {@code cublasGemmStridedBatchedEx} as the fallback when cuBLASLt's heuristic offers no algorithm for a shape.
 *
 * <p>One cuBLASLt handle, one cuBLAS handle and one 32 MiB workspace per backend, all on the backend's stream. Each
 * distinct problem (dtypes, transposes, sizes, batch strides, pointer alignments, TF32) is planned once: its matmul
 * descriptor, matrix layouts and the heuristic's algorithm are cached, so a call costs one map lookup and one
 * {@code cublasLtMatmul} JNI call.
 *
 * <p>Row-major to column-major: grpo4j's C[m, n] = op(A) op(B), all row-major, is cuBLAS's column-major
 * C'[n, m] = op(B)' op(A)' where X' is X's memory read column-major. So cuBLASLt's "A" is our B and its "B" is our A:
 * our B [k, n] (or [n, k] when transB) is read as n x k with ld n (or k x n with ld k, transposed), our A [m, k] (or
 * [k, m]) as k x m with ld k (or m x k with ld m, transposed), and C as n x m with ld n.
 *
 * <p>Precision: bf16 operands use fp32 accumulation (CUBLAS_COMPUTE_32F) with an fp32 or bf16 C. fp32 operands use
 * CUBLAS_COMPUTE_32F too, so they are true fp32 GEMMs (what the conformance suite checks); TF32 tensor cores
 * (CUBLAS_COMPUTE_32F_FAST_TF32, ~10 mantissa bits per product) are an explicit switch: {@link CudaBackend#setTf32}
 * or {@code -Dgrpo4j.tf32=true}.
 */
final class CublasGemm implements AutoCloseable {
    static final long WORKSPACE_BYTES = 32L << 20; // what NVIDIA recommends for Hopper

    private final CudaBackend backend;
    private final cublasLtContext lt = new cublasLtContext();
    private final cublasContext blas = new cublasContext();
    private final CUstream_st stream;
    private final Tensor workspace;
    private final Pointer workspacePtr;
    private final HostScalars scalars = new HostScalars();
    private final Map<Key, Plan> plans = new HashMap<>();

    /** A device address as a JavaCPP pointer (no deallocator: the memory belongs to a Tensor). */
    static final class Raw extends Pointer {
        Raw(long address) { this.address = address; }
    }

    CublasGemm(CudaBackend backend) {
        this.backend = backend;
        this.stream = new CUstream_st(new Raw(backend.stream()));
        check(cublasLtCreate(lt), "cublasLtCreate");
        Tensor ws = null;
        boolean blasMade = false;
        try {
            check(cublasCreate_v2(blas), "cublasCreate");
            blasMade = true;
            check(cublasSetStream_v2(blas, stream), "cublasSetStream");
            // the fallback's split-K partial sums in fp32 also for a bf16 C (the contract: accumulate in fp32, round once)
            check(cublasSetMathMode(blas, CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION), "cublasSetMathMode");
            ws = backend.empty(DType.BF16, (int) (WORKSPACE_BYTES / 2));
            check(cublasSetWorkspace_v2(blas, new Raw(CudaBackend.addr(ws)), WORKSPACE_BYTES), "cublasSetWorkspace");
        } catch (RuntimeException | Error e) {
            // what a failed start holds goes back (the backend builds a new one at its next matmul: each failure leaked)
            try {
                if (ws != null) ws.close();
            } catch (RuntimeException | Error closing) {
                e.addSuppressed(closing);
            }
            if (blasMade) cublasDestroy_v2(blas);
            cublasLtDestroy(lt);
            throw e;
        }
        this.workspace = ws;
        this.workspacePtr = new Raw(CudaBackend.addr(ws));
    }

    /**
     * alpha and beta in host memory (the default CUBLAS_POINTER_MODE_HOST: read by the enqueueing call, so one pair
     * serves every call, captured ones included). Two separate allocations, not one FloatPointer(2) with a view at
     * position 1: the presets bind alpha/beta as {@code const void*}, for which JavaCPP adds a Pointer's position in
     * bytes, so such a view would point one byte into alpha.
     */
    static final class HostScalars {
        final FloatPointer alpha = new FloatPointer(1), beta = new FloatPointer(1);
        private final FloatBuffer a = alpha.asBuffer(), b = beta.asBuffer();

        void set(float alphaValue, float betaValue) {
            a.put(0, alphaValue);
            b.put(0, betaValue);
        }
    }

    /**
     * Everything that selects a plan. Alignments are the largest power of two (<= 256) dividing each address; lda is
     * A's row stride in elements (k, or m when transposed, unless A is a strided view: {@link #matmulStridedA}).
     */
    record Key(int abType, int cType, boolean transA, boolean transB, int m, int n, int k, int batch,
               long strideA, long strideB, int alignA, int alignB, int alignC, boolean tf32, long lda) {}

    /** The cached descriptors and algorithm of one problem; algo == null means "use the cuBLAS fallback". */
    static final class Plan {
        cublasLtMatmulDescOpaque_t desc;
        cublasLtMatrixLayoutOpaque_t layoutA, layoutB, layoutC; // cuBLASLt's A (our B), B (our A), C = D
        cublasLtMatmulHeuristicResult_t heuristic;
        cublasLtMatmulAlgo_t algo;
    }

    static int alignment(long address) {
        long a = address == 0 ? 256 : Long.lowestOneBit(address);
        return (int) Math.min(256, a);
    }

    /**
     * C = alpha * op(A) op(B) + beta * C for validated tensors (see {@link Backend#matmul}); batch, m, n, k resolved.
     */
    void matmul(Tensor c, Tensor a, boolean transA, Tensor b, boolean transB, float alpha, float beta,
                int batch, int m, int n, int k, boolean tf32) {
        boolean aBatched = a.rank() == 3, bBatched = b.rank() == 3;
        // a shared B with a batched, untransposed A is one GEMM over batch*m rows: no batch strides at all
        if (batch > 1 && aBatched && !bBatched && !transA) {
            m = Math.multiplyExact(m, batch);  // (cuBLASLt's int rows; a product past 2^31 is refused, never wrapped)
            batch = 1;
            aBatched = false;
        }
        long strideA = batch > 1 && aBatched ? (long) m * k : 0, strideB = batch > 1 && bBatched ? (long) k * n : 0;
        long pa = CudaBackend.addr(a), pb = CudaBackend.addr(b), pc = CudaBackend.addr(c);
        int abType = a.dtype() == DType.BF16 ? CUDA_R_16BF : CUDA_R_32F, cType = c.dtype() == DType.BF16 ? CUDA_R_16BF : CUDA_R_32F;
        boolean useTf32 = tf32 && abType == CUDA_R_32F;
        run(new Key(abType, cType, transA, transB, m, n, k, batch, strideA, strideB, alignment(pa), alignment(pb),
                alignment(pc), useTf32, transA ? m : k), pa, pb, pc, alpha, beta);
    }

    /**
     * One GEMM (batch 1) whose A is not a tensor but a strided view of device memory: {@code aType} elements at
     * {@code pa}, op(A) [m, k], stored row-major with a row stride of {@code lda} elements (>= its row length: k, or m
     * when transA). The fused LM head's row path reads dz this way, packed in place at the start of each fp32 logits
     * row. B and C as {@link #matmul}, validated by the caller.
     */
    void matmulStridedA(Tensor c, long pa, DType aType, long lda, boolean transA, Tensor b, boolean transB, float alpha,
                        float beta, int m, int n, int k, boolean tf32) {
        if (aType != b.dtype() || lda < (transA ? m : k))
            throw new IllegalArgumentException("matmulStridedA: A " + aType + " with lda " + lda + " against B " + b.dtype()
                    + " for m=" + m + " k=" + k + (transA ? " (A^T)" : ""));
        long pb = CudaBackend.addr(b), pc = CudaBackend.addr(c);
        int abType = aType == DType.BF16 ? CUDA_R_16BF : CUDA_R_32F, cType = c.dtype() == DType.BF16 ? CUDA_R_16BF : CUDA_R_32F;
        int alignA = Math.min(alignment(pa), alignment(lda * aType.bytes())); // every row's start, not just the first
        run(new Key(abType, cType, transA, transB, m, n, k, 1, 0, 0, alignA, alignment(pb), alignment(pc),
                tf32 && abType == CUDA_R_32F, lda), pa, pb, pc, alpha, beta);
    }

    private void run(Key key, long pa, long pb, long pc, float alpha, float beta) {
        Plan plan = plans.get(key);
        if (plan == null) {
            plan = plan(key);
            plans.put(key, plan);
        }
        scalars.set(alpha, beta);
        Raw A = new Raw(pa), B = new Raw(pb), C = new Raw(pc);
        int m = key.m(), n = key.n(), k = key.k();
        boolean transA = key.transA(), transB = key.transB();
        if (plan.algo != null) {
            int st = cublasLtMatmul(lt, plan.desc, scalars.alpha, B, plan.layoutA, A, plan.layoutB, scalars.beta, C, plan.layoutC, C,
                    plan.layoutC, plan.algo, workspacePtr, WORKSPACE_BYTES, stream);
            if (st != CUBLAS_STATUS_SUCCESS) check(st, "cublasLtMatmul " + describe(key)); // the message only on failure
        } else {
            int computeType = key.tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
            int st = cublasGemmStridedBatchedEx(blas, transB ? CUBLAS_OP_T : CUBLAS_OP_N, transA ? CUBLAS_OP_T : CUBLAS_OP_N,
                    n, m, k, scalars.alpha, B, key.abType(), transB ? k : n, key.strideB(), A, key.abType(), (int) key.lda(),
                    key.strideA(), scalars.beta, C, key.cType(), n, (long) m * n, key.batch(), computeType, CUBLAS_GEMM_DEFAULT);
            if (st != CUBLAS_STATUS_SUCCESS) check(st, "cublasGemmStridedBatchedEx " + describe(key));
        }
    }

    private Plan plan(Key key) {
        Plan p = new Plan();
        int computeType = key.tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
        PointerPointer<Pointer> out = new PointerPointer<>(1);
        check(cublasLtMatmulDescCreate(out, computeType, CUDA_R_32F), "cublasLtMatmulDescCreate");
        p.desc = new cublasLtMatmulDescOpaque_t(out.get(0));
        IntPointer op = new IntPointer(1);
        op.put(key.transB() ? CUBLAS_OP_T : CUBLAS_OP_N);
        check(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, op, 4), "cublasLtMatmulDescSetAttribute(TRANSA)");
        op.put(key.transA() ? CUBLAS_OP_T : CUBLAS_OP_N);
        check(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, op, 4), "cublasLtMatmulDescSetAttribute(TRANSB)");
        int m = key.m(), n = key.n(), k = key.k();
        // cuBLASLt's A = our B: stored n x k (ld n) or, transposed, k x n (ld k); its B = our A: k x m (ld k) or m x k (ld m)
        p.layoutA = layout(key.abType(), key.transB() ? k : n, key.transB() ? n : k, key.transB() ? k : n, key.batch(), key.strideB());
        p.layoutB = layout(key.abType(), key.transA() ? m : k, key.transA() ? k : m, key.lda(), key.batch(), key.strideA());
        p.layoutC = layout(key.cType(), n, m, n, key.batch(), (long) m * n);

        check(cublasLtMatmulPreferenceCreate(out), "cublasLtMatmulPreferenceCreate");
        cublasLtMatmulPreferenceOpaque_t pref = new cublasLtMatmulPreferenceOpaque_t(out.get(0));
        LongPointer ws = new LongPointer(1);
        ws.put(WORKSPACE_BYTES);
        check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, ws, 8), "preference workspace");
        IntPointer al = new IntPointer(1);
        int[][] aligns = {{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.alignB()}, {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.alignA()},
                {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.alignC()}, {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.alignC()}};
        for (int[] x : aligns) {
            al.put(x[1]);
            check(cublasLtMatmulPreferenceSetAttribute(pref, x[0], al, 4), "preference alignment");
        }
        if (key.cType() == CUDA_R_16BF) {
            // split-K partial sums in the compute type (fp32) only: the in-place and output-type schemes would add them
            // in bf16, rounding a bf16 C more than once (the bf16 contract: fp32 accumulation, one rounding); a large
            // K with few output tiles (the LM head's dHidden, K = V) is where the heuristic picks split-K
            al.put(CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE);
            check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, al, 4), "preference reduction scheme");
        }
        p.heuristic = new cublasLtMatmulHeuristicResult_t();
        int[] found = new int[1];
        int st = cublasLtMatmulAlgoGetHeuristic(lt, p.desc, p.layoutA, p.layoutB, p.layoutC, p.layoutC, pref, 1, p.heuristic, found);
        cublasLtMatmulPreferenceDestroy(pref);
        if (st == CUBLAS_STATUS_SUCCESS && found[0] > 0) p.algo = p.heuristic.algo();
        else if (st != CUBLAS_STATUS_SUCCESS && st != CUBLAS_STATUS_NOT_SUPPORTED) check(st, "cublasLtMatmulAlgoGetHeuristic " + describe(key));
        return p;
    }

    private static cublasLtMatrixLayoutOpaque_t layout(int type, long rows, long cols, long ld, int batch, long stride) {
        PointerPointer<Pointer> out = new PointerPointer<>(1);
        check(cublasLtMatrixLayoutCreate(out, type, rows, cols, ld), "cublasLtMatrixLayoutCreate");
        cublasLtMatrixLayoutOpaque_t l = new cublasLtMatrixLayoutOpaque_t(out.get(0));
        if (batch > 1) {
            IntPointer count = new IntPointer(1);
            count.put(batch);
            check(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, count, 4), "layout batch count");
            LongPointer s = new LongPointer(1);
            s.put(stride);
            check(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, s, 8), "layout batch stride");
        }
        return l;
    }

    static String describe(Key k) {
        return "(" + (k.abType() == CUDA_R_16BF ? "bf16" : "fp32") + " -> " + (k.cType() == CUDA_R_16BF ? "bf16" : "fp32")
                + ", m=" + k.m() + " n=" + k.n() + " k=" + k.k() + " batch=" + k.batch() + (k.transA() ? " A^T" : "")
                + (k.lda() != (k.transA() ? k.m() : k.k()) ? " lda=" + k.lda() : "")
                + (k.transB() ? " B^T" : "") + (k.tf32() ? " tf32" : "") + ")";
    }

    /** Number of cached plans, and how many use the cuBLAS fallback. */
    int[] planCounts() {
        int fallback = 0;
        for (Plan p : plans.values()) if (p.algo == null) fallback++;
        return new int[] {plans.size(), fallback};
    }

    static void check(int status, String call) {
        if (status != CUBLAS_STATUS_SUCCESS)
            throw new CudaException(call, status, "CUBLAS_STATUS_" + statusName(status), cublasGetStatusString(status).getString());
    }

    static String statusName(int s) {
        if (s == CUBLAS_STATUS_NOT_INITIALIZED) return "NOT_INITIALIZED";
        if (s == CUBLAS_STATUS_ALLOC_FAILED) return "ALLOC_FAILED";
        if (s == CUBLAS_STATUS_INVALID_VALUE) return "INVALID_VALUE";
        if (s == CUBLAS_STATUS_ARCH_MISMATCH) return "ARCH_MISMATCH";
        if (s == CUBLAS_STATUS_EXECUTION_FAILED) return "EXECUTION_FAILED";
        if (s == CUBLAS_STATUS_INTERNAL_ERROR) return "INTERNAL_ERROR";
        if (s == CUBLAS_STATUS_NOT_SUPPORTED) return "NOT_SUPPORTED";
        return String.valueOf(s);
    }

    @Override
    public void close() {
        for (Plan p : plans.values()) {
            cublasLtMatmulDescDestroy(p.desc);
            cublasLtMatrixLayoutDestroy(p.layoutA);
            cublasLtMatrixLayoutDestroy(p.layoutB);
            cublasLtMatrixLayoutDestroy(p.layoutC);
        }
        plans.clear();
        cublasLtDestroy(lt);
        cublasDestroy_v2(blas);
        workspace.close();
    }
}
