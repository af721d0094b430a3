package org.grpo4j.internal.bench;

import java.util.ArrayList;
import java.util.Collection;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.grpo4j.internal.backend.AdamWStep;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.CudaBackend;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.GrpoLossOutputs;
import org.grpo4j.internal.backend.GrpoLossParams;
import org.grpo4j.internal.backend.KlEstimator;
import org.grpo4j.internal.backend.Ops;
import org.grpo4j.internal.backend.Rope;
import org.grpo4j.internal.backend.SamplingSpec;
import org.grpo4j.internal.backend.Tensor;
import org.grpo4j.internal.bench.Instance.Tol;

/**
 * The benchmark problems: for each, its id, shape, the minimal work one repetition does (FLOPs or bytes, with the
 * formula, the same as tools/bench-peers.py counts), and how to build it at full size (timed) and at a small size
 * (checked against the CPU). "A" in the formulas is the activation dtype's size in bytes (2 for bf16).
 *
 * <p>Bytes are the minimum any implementation must move: every input read once, every output written once, an
 * accumulated output read and written; index arrays counted, constants (inverse frequencies, scalars) not.
 */
final class Cases {
    private Cases() {}

    enum Kind { KERNEL, HOST_COST, CEILING_COPY, CEILING_GEMM }

    interface Builder {
        Instance build(Data d);
    }

    /**
     * @param ops          the Backend ops the problem runs (a device lacking one gives a "not implemented" row)
     * @param small        the problem at the correctness-check size, or null (host cost: the gemm row checks it)
     * @param extraMemory  whether to record the device memory the backend allocates during the first run
     */
    record Case(String family, String name, String shape, String dtype, List<String> ops, double work, String workUnit,
                String formula, Kind kind, Builder big, Builder small, boolean extraMemory) {
        String id() { return family + "/" + name; }
    }

    /** The families in usage order; "ceiling" rows are always measured and are not a family one can pick. */
    static final List<String> FAMILIES = List.of("gemm", "norm", "rope", "swiglu", "embedding", "elementwise", "adamw",
            "reduce", "kvcache", "attention", "decode", "sampling", "lmhead");

    /** Back-to-back matmul calls per repetition of the host-cost row. */
    static final int HOST_CALLS = 100;

    /** Untimed matmul calls before the host-cost row's timing: the JIT's warm-up (C2 compiles after thousands). */
    static final int HOST_WARMUP_CALLS = 10_000;

    /** Rows of the correctness check for row-wise ops (odd, so no kernel gets a round count). */
    static final int CHECK_ROWS = 37;

    /** A multiplier coprime with every size used here: (n * P + c) mod m is a permutation of [0, m) for n < m. */
    static final long P = 1_000_003L;

    static final float EPS = 1e-5f;

    /** Llama 3.1's RoPE: theta 500000 with llama3 scaling (factor 8, low 1, high 4, original 8192). */
    static Rope llamaRope(int headDim) {
        return new Rope(headDim, 500_000, new Rope.Llama3Scaling(8, 1, 4, 8192));
    }

    static List<Case> plan(BenchSizes s, DType act, Collection<String> families) {
        List<Case> out = new ArrayList<>();
        ceilings(out, s, act);
        Set<String> f = new HashSet<>(families);
        if (f.contains("gemm")) gemm(out, s, act);
        if (f.contains("norm")) norm(out, s, act);
        if (f.contains("rope")) rope(out, s, act);
        if (f.contains("swiglu")) swiglu(out, s, act);
        if (f.contains("embedding")) embedding(out, s, act);
        if (f.contains("elementwise")) elementwise(out, s, act);
        if (f.contains("adamw")) adamw(out, s);
        if (f.contains("reduce")) reduce(out, s);
        if (f.contains("kvcache")) kvcache(out, s, act);
        if (f.contains("attention")) attention(out, s, act);
        if (f.contains("decode")) decode(out, s, act);
        if (f.contains("sampling")) sampling(out, s);
        if (f.contains("lmhead")) lmhead(out, s, act);
        return out;
    }

    static String dims(int... d) {
        StringBuilder b = new StringBuilder("[");
        for (int i = 0; i < d.length; i++) b.append(i == 0 ? "" : ", ").append(d[i]);
        return b.append(']').toString();
    }

    // ---- ceilings -------------------------------------------------------------------------------------------------

    /** The GEMM ceiling runs in the activation dtype: bf16 in the default run, the rate bf16 GEMM rows are held to. */
    static void ceilings(List<Case> out, BenchSizes s, DType act) {
        int n = Math.toIntExact(s.copyElements());
        out.add(new Case("ceiling", "copy fp32", dims(n), "fp32", List.of(Ops.COPY), 8.0 * n, "byte",
                "2*4*n: n fp32 read, n written", Kind.CEILING_COPY, d -> copy(d, n), d -> copy(d, 100_003), false));
        int g = s.gemmCeiling();
        out.add(gemmCase("ceiling", "matmul " + act.label() + " " + g + "^3", g, g, g, act, Kind.CEILING_GEMM));
    }

    static Instance copy(Data d, int n) {
        Instance in = new Instance(d);
        Tensor src = in.gauss(DType.FP32, 1, n), dst = in.out("dst", in.empty(DType.FP32, n), Tol.EXACT);
        return in.body(() -> d.backend().copy(dst, src));
    }

    // ---- gemm -----------------------------------------------------------------------------------------------------

    static void gemm(List<Case> out, BenchSizes s, DType act) {
        for (int[] g : s.gemms()) out.add(gemmCase("gemm", "matmul " + g[0] + "x" + g[1] + "x" + g[2], g[0], g[1], g[2], act, Kind.KERNEL));
        int[] h = s.gemms().get(s.gemms().size() - 1);
        out.add(new Case("gemm", "host cost " + h[0] + "x" + h[1] + "x" + h[2], mkn(h[0], h[1], h[2]), act.label(),
                List.of(Ops.MATMUL), 1, "call", "host wall time of " + HOST_CALLS + " back-to-back matmul calls / "
                + HOST_CALLS + " (enqueue cost: Java, JNI, cuBLASLt), before the GPU catches up, after " + HOST_WARMUP_CALLS
                + " untimed calls (the JIT's warm-up)",
                Kind.HOST_COST, d -> matmul(d, h[0], h[1], h[2], act), null, false));
        // a decode step's GEMMs at the recipe's batch per GPU (48 x 16 over 8): memory-bound, so counted in bytes
        int m = decodeGemmRows(s);
        for (int[] kn : decodeGemms(s)) {
            int k = kn[0], n = kn[1];
            out.add(new Case("gemm", "decode matmul " + m + "x" + k + "x" + n, mkn(m, k, n), act.label(), List.of(Ops.MATMUL),
                    (double) act.bytes() * ((long) m * k + (long) n * k + (long) m * n), "byte",
                    "(M*K + N*K + M*N) x " + act.bytes() + ": A, the weight B and C once each (memory-bound at this M)", Kind.KERNEL,
                    d -> matmul(d, m, k, n, act), d -> matmul(d, Math.min(m, 96), Math.min(k, 512), Math.min(n, 160), act), false));
        }
    }

    /** M of the decode GEMM rows: the benchmark's decode batch over 8 GPUs (96 at llama-3.1-8b, the Tulu rank's batch). */
    static int decodeGemmRows(BenchSizes s) { return Math.max(1, s.decodeBatch() / 8); }

    /** (K, N) of a decode step's GEMMs: q and o projections, gate or up, down, the LM head. */
    static int[][] decodeGemms(BenchSizes s) {
        return new int[][] {{s.hidden(), s.qHeads() * s.headDim()}, {s.hidden(), s.ffn()}, {s.ffn(), s.hidden()}, {s.hidden(), s.vocab()}};
    }

    static String mkn(int m, int k, int n) { return "M=" + m + " K=" + k + " N=" + n; }

    /** C [M, N] = A [M, K] x B [N, K]^T: a linear layer's weight layout ([out, in]), as the peers' a @ b.T. */
    static Case gemmCase(String family, String name, int m, int k, int n, DType dt, Kind kind) {
        return new Case(family, name, mkn(m, k, n), dt.label(), List.of(Ops.MATMUL), 2.0 * m * n * k, "flop",
                "2*M*N*K", kind, d -> matmul(d, m, k, n, dt),
                d -> matmul(d, Math.min(m, 96), Math.min(k, 512), Math.min(n, 160), dt), false);
    }

    static Instance matmul(Data d, int m, int k, int n, DType dt) {
        Instance in = new Instance(d);
        Tensor a = in.gauss(dt, 1, m, k), b = in.gauss(dt, 1, n, k);
        // fp32 accumulation over k: error ~ sqrt(k) units of fp32 rounding of |c| ~ sqrt(k); a bf16 c adds one ulp
        Tensor c = in.out("c", in.empty(dt, m, n), dt == DType.BF16 ? Tol.BF16 : new Tol(1e-6 * Math.sqrt(k), 1e-5, 1e-4));
        return in.body(() -> d.backend().matmul(c, a, false, b, true, 1f, 0f));
    }

    // ---- rmsNorm --------------------------------------------------------------------------------------------------

    /** The norm rows' check size: enough rows that the CUDA forward takes them in groups (4 a block, >= 512 blocks). */
    static final int NORM_CHECK_ROWS = 2050;

    static void norm(List<Case> out, BenchSizes s, DType act) {
        int t = s.tokens(), h = s.hidden(), a = act.bytes();
        // the weight in the activations' dtype: a bf16 run's model passes its bf16 compute copy (as the peer's HF
        // LlamaRMSNorm holds a bf16 weight), so these rows time the variant that training runs
        double fwd = 2.0 * a * t * h + a * h + 4.0 * t, bwd = 3.0 * a * t * h + (a + 8.0) * h + 4.0 * t;
        String shape = dims(t, h), dt = act.label() + " (weight " + act.label() + ", rstd fp32)";
        out.add(new Case("norm", "rmsnorm fwd", shape, dt, List.of(Ops.RMS_NORM), fwd, "byte",
                "2*A*T*H + A*H + 4*T: x read, out written; weight read; rstd written", Kind.KERNEL,
                d -> rmsNorm(d, t, h, act, true, false), d -> rmsNorm(d, NORM_CHECK_ROWS, h, act, true, false), false));
        out.add(new Case("norm", "rmsnorm bwd", shape, dt, List.of(Ops.RMS_NORM, Ops.RMS_NORM_BACKWARD), bwd, "byte",
                "3*A*T*H + (A+8)*H + 4*T: dOut, x read, dx written; weight read, dWeight read+written (fp32); rstd read",
                Kind.KERNEL, d -> rmsNorm(d, t, h, act, false, true), d -> rmsNorm(d, NORM_CHECK_ROWS, h, act, false, true), false));
        out.add(new Case("norm", "rmsnorm fwd+bwd", shape, dt, List.of(Ops.RMS_NORM, Ops.RMS_NORM_BACKWARD), fwd + bwd,
                "byte", "fwd + bwd", Kind.KERNEL, d -> rmsNorm(d, t, h, act, true, true),
                d -> rmsNorm(d, NORM_CHECK_ROWS, h, act, true, true), false));
    }

    static Instance rmsNorm(Data d, int t, int h, DType act, boolean fwd, boolean bwd) {
        Instance in = new Instance(d);
        Backend be = d.backend();
        Tensor x = in.gauss(act, 1, t, h), w = in.gauss(act, 1, h);
        Tensor y = in.empty(act, t, h), rstd = in.empty(DType.FP32, t);
        if (fwd) {
            in.out("out", y, Tol.of(act));
            in.out("rstd", rstd, Tol.FP32);
        } else {
            be.rmsNorm(y, rstd, x, w, EPS);
        }
        Tensor dOut = bwd ? in.gauss(act, 1, t, h) : null;
        Tensor dx = bwd ? in.out("dx", in.empty(act, t, h), Tol.of(act)) : null;
        Tensor dw = bwd ? in.out("dWeight", in.zeros(DType.FP32, h), Tol.FP32) : null;
        return in.body(() -> {
            if (fwd) be.rmsNorm(y, rstd, x, w, EPS);
            if (bwd) be.rmsNormBackward(dx, dw, dOut, x, w, rstd);
        });
    }

    // ---- rope -----------------------------------------------------------------------------------------------------

    static void rope(List<Case> out, BenchSizes s, DType act) {
        int t = s.tokens(), hq = s.qHeads(), hd = s.headDim(), a = act.bytes();
        double one = 2.0 * a * t * hq * hd + 4.0 * t;
        String shape = dims(t, hq, hd), f = "2*A*T*Hq*D + 4*T: x read, out written; positions read";
        // full size: packed sequences of 2048 tokens; check: positions spread over the llama3 scaling's bands
        int[] pos = new int[t], posSmall = new int[CHECK_ROWS];
        for (int i = 0; i < t; i++) pos[i] = i % 2048;
        for (int i = 0; i < CHECK_ROWS; i++) posSmall[i] = (i * 997) % 16384;
        out.add(new Case("rope", "rope fwd", shape, act.label(), List.of(Ops.ROPE), one, "byte", f, Kind.KERNEL,
                d -> rope(d, pos, hq, hd, act, true, false), d -> rope(d, posSmall, hq, hd, act, true, false), false));
        out.add(new Case("rope", "rope bwd", shape, act.label(), List.of(Ops.ROPE_BACKWARD), one, "byte",
                "2*A*T*Hq*D + 4*T: dOut read, dx written; positions read", Kind.KERNEL,
                d -> rope(d, pos, hq, hd, act, false, true), d -> rope(d, posSmall, hq, hd, act, false, true), false));
        out.add(new Case("rope", "rope fwd+bwd", shape, act.label(), List.of(Ops.ROPE, Ops.ROPE_BACKWARD), 2 * one, "byte",
                "fwd + bwd", Kind.KERNEL, d -> rope(d, pos, hq, hd, act, true, true),
                d -> rope(d, posSmall, hq, hd, act, true, true), false));
    }

    static Instance rope(Data d, int[] positions, int hq, int hd, DType act, boolean fwd, boolean bwd) {
        Instance in = new Instance(d);
        Backend be = d.backend();
        int t = positions.length;
        Rope r = llamaRope(hd);
        Tensor pos = in.ints(positions, t);
        Tensor x = fwd ? in.gauss(act, 1, t, hq, hd) : null, y = fwd ? in.out("out", in.empty(act, t, hq, hd), Tol.of(act)) : null;
        Tensor dOut = bwd ? in.gauss(act, 1, t, hq, hd) : null, dx = bwd ? in.out("dx", in.empty(act, t, hq, hd), Tol.of(act)) : null;
        return in.body(() -> {
            if (fwd) be.rope(y, x, pos, r);
            if (bwd) be.ropeBackward(dx, dOut, pos, r);
        });
    }

    // ---- swiglu ---------------------------------------------------------------------------------------------------

    static void swiglu(List<Case> out, BenchSizes s, DType act) {
        int t = s.tokens(), f = s.ffn(), a = act.bytes();
        String shape = dims(t, f);
        out.add(new Case("swiglu", "swiglu fwd", shape, act.label(), List.of(Ops.SWIGLU), 3.0 * a * t * f, "byte",
                "3*A*T*F: gate, up read, out written", Kind.KERNEL,
                d -> swiglu(d, t, f, act, true, false), d -> swiglu(d, CHECK_ROWS, f, act, true, false), false));
        out.add(new Case("swiglu", "swiglu bwd", shape, act.label(), List.of(Ops.SWIGLU_BACKWARD), 5.0 * a * t * f, "byte",
                "5*A*T*F: dOut, gate, up read, dGate, dUp written", Kind.KERNEL,
                d -> swiglu(d, t, f, act, false, true), d -> swiglu(d, CHECK_ROWS, f, act, false, true), false));
        out.add(new Case("swiglu", "swiglu fwd+bwd", shape, act.label(), List.of(Ops.SWIGLU, Ops.SWIGLU_BACKWARD),
                8.0 * a * t * f, "byte", "fwd + bwd", Kind.KERNEL,
                d -> swiglu(d, t, f, act, true, true), d -> swiglu(d, CHECK_ROWS, f, act, true, true), false));
    }

    static Instance swiglu(Data d, int t, int f, DType act, boolean fwd, boolean bwd) {
        Instance in = new Instance(d);
        Backend be = d.backend();
        Tensor gate = in.gauss(act, 2, t, f), up = in.gauss(act, 1, t, f);
        Tensor y = fwd ? in.out("out", in.empty(act, t, f), Tol.of(act)) : null;
        Tensor dOut = bwd ? in.gauss(act, 1, t, f) : null;
        Tensor dGate = bwd ? in.out("dGate", in.empty(act, t, f), Tol.of(act)) : null;
        Tensor dUp = bwd ? in.out("dUp", in.empty(act, t, f), Tol.of(act)) : null;
        return in.body(() -> {
            if (fwd) be.swiglu(y, gate, up);
            if (bwd) be.swigluBackward(dGate, dUp, dOut, gate, up);
        });
    }

    // ---- embedding ------------------------------------------------------------------------------------------------

    /** Token ids (n * P + 12345) mod V: distinct while T <= V, spread over the whole table. */
    static int[] embeddingIds(int t, int v) {
        int[] ids = new int[t];
        for (int i = 0; i < t; i++) ids[i] = (int) ((i * P + 12_345) % v);
        return ids;
    }

    static void embedding(List<Case> out, BenchSizes s, DType act) {
        int t = s.tokens(), h = s.hidden(), v = s.vocab(), a = act.bytes();
        int[] ids = embeddingIds(t, v);
        long u = java.util.Arrays.stream(ids).distinct().count();
        double fwd = 2.0 * a * t * h + 4.0 * t, bwd = (double) a * t * h + 4.0 * t + 8.0 * u * h;
        // check: a small table and repeated ids, so the backward's accumulation of equal ids is exercised
        int vs = Math.min(v, 1000);
        int[] idsSmall = new int[CHECK_ROWS];
        for (int i = 0; i < CHECK_ROWS; i++) idsSmall[i] = (i * 7) % Math.min(vs, 17);
        String shape = "V=" + v + " D=" + h + " T=" + t, dt = act.label() + " (dTable fp32)";
        out.add(new Case("embedding", "embedding fwd", shape, dt, List.of(Ops.EMBEDDING), fwd, "byte",
                "2*A*T*D + 4*T: T table rows read, out written; ids read", Kind.KERNEL,
                d -> embedding(d, v, h, ids, act, true, false), d -> embedding(d, vs, h, idsSmall, act, true, false), false));
        out.add(new Case("embedding", "embedding bwd", shape, dt, List.of(Ops.EMBEDDING_BACKWARD), bwd, "byte",
                "A*T*D + 4*T + 8*U*D: dOut, ids read; U = " + u + " distinct dTable rows read+written (fp32)", Kind.KERNEL,
                d -> embedding(d, v, h, ids, act, false, true), d -> embedding(d, vs, h, idsSmall, act, false, true), false));
        out.add(new Case("embedding", "embedding fwd+bwd", shape, dt, List.of(Ops.EMBEDDING, Ops.EMBEDDING_BACKWARD),
                fwd + bwd, "byte", "fwd + bwd", Kind.KERNEL, d -> embedding(d, v, h, ids, act, true, true),
                d -> embedding(d, vs, h, idsSmall, act, true, true), false));
    }

    static Instance embedding(Data d, int v, int h, int[] idArray, DType act, boolean fwd, boolean bwd) {
        Instance in = new Instance(d);
        Backend be = d.backend();
        int t = idArray.length;
        Tensor ids = in.ints(idArray, t);
        Tensor table = fwd ? in.gauss(act, 1, v, h) : null, y = fwd ? in.out("out", in.empty(act, t, h), Tol.EXACT) : null;
        Tensor dOut = bwd ? in.gauss(act, 1, t, h) : null, dTable = bwd ? in.out("dTable", in.zeros(DType.FP32, v, h), Tol.FP32) : null;
        return in.body(() -> {
            if (fwd) be.embedding(y, table, ids);
            if (bwd) be.embeddingBackward(dTable, dOut, ids);
        });
    }

    // ---- elementwise ----------------------------------------------------------------------------------------------

    static void elementwise(List<Case> out, BenchSizes s, DType act) {
        int a = act.bytes(), n = Math.multiplyExact(s.tokens(), s.hidden()), w = Math.multiplyExact(s.hidden(), s.ffn());
        int ns = Math.min(n, 100_003), ws = Math.min(w, 100_003);
        out.add(new Case("elementwise", "add", dims(n), act.label(), List.of(Ops.ADD), 3.0 * a * n, "byte",
                "3*A*n: a, b read, out written (the residual add, n = T*H)", Kind.KERNEL, d -> add(d, n, act), d -> add(d, ns, act), false));
        out.add(new Case("elementwise", "axpy", dims(w), "y fp32, x " + act.label(), List.of(Ops.AXPY), (8.0 + a) * w, "byte",
                "(8 + A)*n: y read+written (fp32), x read (gradient accumulation of one H x F weight)", Kind.KERNEL,
                d -> axpy(d, w, act), d -> axpy(d, ws, act), false));
        out.add(new Case("elementwise", "cast fp32->bf16", dims(w), "fp32 -> bf16", List.of(Ops.CAST), 6.0 * w, "byte",
                "6*n: 4n read, 2n written", Kind.KERNEL, d -> cast(d, w, DType.FP32, DType.BF16), d -> cast(d, ws, DType.FP32, DType.BF16), false));
        out.add(new Case("elementwise", "cast bf16->fp32", dims(w), "bf16 -> fp32", List.of(Ops.CAST), 6.0 * w, "byte",
                "6*n: 2n read, 4n written", Kind.KERNEL, d -> cast(d, w, DType.BF16, DType.FP32), d -> cast(d, ws, DType.BF16, DType.FP32), false));
    }

    static Instance add(Data d, int n, DType act) {
        Instance in = new Instance(d);
        Tensor a = in.gauss(act, 1, n), b = in.gauss(act, 1, n), y = in.out("out", in.empty(act, n), Tol.of(act));
        return in.body(() -> d.backend().add(y, a, b));
    }

    static Instance axpy(Data d, int n, DType act) {
        Instance in = new Instance(d);
        Tensor y = in.out("y", in.gauss(DType.FP32, 1, n), Tol.FP32), x = in.gauss(act, 1, n);
        return in.body(() -> d.backend().axpy(y, 0.5f, x));
    }

    static Instance cast(Data d, int n, DType from, DType to) {
        Instance in = new Instance(d);
        Tensor x = in.gauss(from, 1, n), y = in.out("out", in.empty(to, n), Tol.EXACT);
        return in.body(() -> d.backend().cast(y, x));
    }

    // ---- adamW, sumSquares ----------------------------------------------------------------------------------------

    static final AdamWStep ADAM = new AdamWStep(1e-3f, 0.9f, 0.95f, 1e-8f, 0.01f, 10);

    static void adamw(List<Case> out, BenchSizes s) {
        int n = Math.toIntExact(s.adamParams());
        out.add(new Case("adamw", "adamw", dims(n), "fp32 (bf16 copy-out)", List.of(Ops.ADAMW), 30.0 * n, "byte",
                "30*n: param, grad, m, v read (16n); param, m, v written (12n); bf16 copy written (2n)", Kind.KERNEL,
                d -> adamw(d, n), d -> adamw(d, Math.min(n, 100_003)), false));
    }

    static Instance adamw(Data d, int n) {
        Instance in = new Instance(d);
        // the step changes param by ~lr relative: the param tolerance must stay far below that (the CPU and the GPU
        // compute the same fp32 expression; a kernel that skips the update fails)
        Tensor p = in.out("param", in.gauss(DType.FP32, 1, n), new Tol(1e-7, 0, 1e-6));
        Tensor g = in.gauss(DType.FP32, 1e-2, n);
        Tensor m = in.out("m", in.gauss(DType.FP32, 1e-3, n), new Tol(0, 1e-6, 1e-5));
        Tensor v = in.out("v", in.positive(DType.FP32, 1e-5, n), new Tol(0, 1e-6, 1e-5));
        Tensor b = in.out("bf16Out", in.empty(DType.BF16, n), Tol.BF16);
        return in.body(() -> d.backend().adamW(p, g, m, v, ADAM, b));
    }

    static void reduce(List<Case> out, BenchSizes s) {
        int n = Math.toIntExact(s.reduceElements());
        out.add(new Case("reduce", "sumsquares", dims(n), "fp32", List.of(Ops.SUM_SQUARES), 4.0 * n, "byte",
                "4*n: x read once (the squared gradient norm for clipping)", Kind.KERNEL,
                d -> sumSquares(d, n), d -> sumSquares(d, Math.min(n, (1 << 20) + 3)), false));
    }

    static Instance sumSquares(Data d, int n) {
        Instance in = new Instance(d);
        Tensor x = in.gauss(DType.FP32, 1, n), y = in.out("out", in.zeros(DType.FP32, 1), new Tol(0, 0, 1e-5));
        return in.body(() -> d.backend().sumSquares(y, x));
    }

    // ---- kvAppend -------------------------------------------------------------------------------------------------

    static void kvcache(List<Case> out, BenchSizes s, DType act) {
        int t = s.tokens(), hkv = s.kvHeads(), hd = s.headDim(), bs = s.kvBlockSize(), a = act.bytes();
        out.add(new Case("kvcache", "kvappend", "T=" + t + " Hkv=" + hkv + " D=" + hd, act.label(), List.of(Ops.KV_APPEND),
                4.0 * a * t * hkv * hd + 4.0 * t, "byte",
                "4*A*T*Hkv*D + 4*T: k, v read, written into the caches at scattered slots; slots read", Kind.KERNEL,
                d -> kvAppend(d, t, hkv, hd, bs, act), d -> kvAppend(d, CHECK_ROWS, hkv, hd, bs, act), false));
    }

    static Instance kvAppend(Data d, int t, int hkv, int hd, int bs, DType act) {
        Instance in = new Instance(d);
        int blocks = (2 * t + bs - 1) / bs, cap = blocks * bs;
        int[] slots = new int[t];
        for (int i = 0; i < t; i++) slots[i] = (int) ((i * P + 7) % cap);
        Tensor kc = in.out("kCache", in.zeros(act, blocks, bs, hkv, hd), Tol.EXACT);
        Tensor vc = in.out("vCache", in.zeros(act, blocks, bs, hkv, hd), Tol.EXACT);
        Tensor k = in.gauss(act, 1, t, hkv, hd), v = in.gauss(act, 1, t, hkv, hd), sl = in.ints(slots, t);
        return in.body(() -> d.backend().kvAppend(kc, vc, k, v, sl));
    }

    // ---- attention ------------------------------------------------------------------------------------------------

    static void attention(List<Case> out, BenchSizes s, DType act) {
        int hq = s.qHeads(), hkv = s.kvHeads(), hd = s.headDim();
        for (int[] bsq : s.attention()) {
            int b = bsq[0], sq = bsq[1];
            int[] lens = new int[b];
            java.util.Arrays.fill(lens, sq);
            double fwd = 2.0 * b * hq * (double) sq * sq * hd;
            String tag = "b" + b + " s" + sq, shape = "B=" + b + " S=" + sq + " Hq=" + hq + " Hkv=" + hkv + " D=" + hd + " causal";
            int[] small = {Math.min(sq, 67), Math.min(sq, 45)};
            // (the TMA forwards' check at 312 tokens: they take 128 or more, fewer run the wgmma kernel, which the check
            // would then be of; the other rows keep the cheaper CPU reference of 112)
            int[] smallTma = {Math.min(sq, 67), Math.min(sq, 45), Math.min(sq, 200)};
            String count = "FLOPs as FlashAttention's benchmarks count them: causal fwd = 4*B*S^2*Hq*D / 2";
            out.add(new Case("attention", "fwd " + tag, shape, act.label() + " (lse fp32)", List.of(Ops.ATTENTION), fwd, "flop",
                    "2*B*Hq*S^2*D (" + count + ")", Kind.KERNEL,
                    d -> attention(d, lens, hq, hkv, hd, act, true, false), d -> attention(d, small, hq, hkv, hd, act, true, false), false));
            out.add(new Case("attention", "bwd " + tag, shape, act.label() + " (lse fp32)", List.of(Ops.ATTENTION, Ops.ATTENTION_BACKWARD),
                    2.5 * fwd, "flop", "2.5 * fwd", Kind.KERNEL,
                    d -> attention(d, lens, hq, hkv, hd, act, false, true), d -> attention(d, small, hq, hkv, hd, act, false, true), false));
            out.add(new Case("attention", "fwd+bwd " + tag, shape, act.label() + " (lse fp32)", List.of(Ops.ATTENTION, Ops.ATTENTION_BACKWARD),
                    3.5 * fwd, "flop", "3.5 * fwd", Kind.KERNEL,
                    d -> attention(d, lens, hq, hkv, hd, act, true, true), d -> attention(d, small, hq, hkv, hd, act, true, true), false));
            // The rows above run the default deterministic dQ pass (what the trainer runs). SDPA flash (FlashAttention-2)
            // adds dQ with fp32 atomics, as our fast mode does: the like-for-like rows. Then dQ in fixed point:
            // deterministic like the default rows, without their dQ pass (the trainer's default once these rows show it
            // faster on a GPU).
            for (CudaBackend.AttentionDq m : List.of(CudaBackend.AttentionDq.ATOMIC, CudaBackend.AttentionDq.FIXED)) {
                String v = m == CudaBackend.AttentionDq.ATOMIC ? FAST_DQ : FIXED_DQ;
                out.add(new Case("attention", "bwd " + tag + " " + v, shape, act.label() + " (lse fp32)",
                        List.of(Ops.ATTENTION, Ops.ATTENTION_BACKWARD), 2.5 * fwd, "flop", "2.5 * fwd", Kind.KERNEL,
                        d -> withDq(attention(d, lens, hq, hkv, hd, act, false, true), m),
                        d -> withDq(attention(d, small, hq, hkv, hd, act, false, true), m), false));
                out.add(new Case("attention", "fwd+bwd " + tag + " " + v, shape, act.label() + " (lse fp32)",
                        List.of(Ops.ATTENTION, Ops.ATTENTION_BACKWARD), 3.5 * fwd, "flop", "3.5 * fwd", Kind.KERNEL,
                        d -> withDq(attention(d, lens, hq, hkv, hd, act, true, true), m),
                        d -> withDq(attention(d, small, hq, hkv, hd, act, true, true), m), false));
            }
            // the Hopper kernels (wgmma; opt-in until these rows show them faster): the forward, the backward (dK/dV and
            // the dQ pass), both, and both with fast dQ (SDPA flash's like-for-like); on other devices the same kernels as
            // the rows above
            out.add(new Case("attention", "fwd " + tag + " " + WGMMA, shape, act.label() + " (lse fp32)", List.of(Ops.ATTENTION),
                    fwd, "flop", "2*B*Hq*S^2*D (" + count + ")", Kind.KERNEL,
                    d -> wgmma(attention(d, lens, hq, hkv, hd, act, true, false)),
                    d -> wgmma(attention(d, small, hq, hkv, hd, act, true, false)), false));
            out.add(new Case("attention", "bwd " + tag + " " + WGMMA, shape, act.label() + " (lse fp32)",
                    List.of(Ops.ATTENTION, Ops.ATTENTION_BACKWARD), 2.5 * fwd, "flop", "2.5 * fwd", Kind.KERNEL,
                    d -> wgmma(attention(d, lens, hq, hkv, hd, act, false, true)),
                    d -> wgmma(attention(d, small, hq, hkv, hd, act, false, true)), false));
            out.add(new Case("attention", "fwd+bwd " + tag + " " + WGMMA, shape, act.label() + " (lse fp32)",
                    List.of(Ops.ATTENTION, Ops.ATTENTION_BACKWARD), 3.5 * fwd, "flop", "3.5 * fwd", Kind.KERNEL,
                    d -> wgmma(attention(d, lens, hq, hkv, hd, act, true, true)),
                    d -> wgmma(attention(d, small, hq, hkv, hd, act, true, true)), false));
            out.add(new Case("attention", "fwd+bwd " + tag + " " + WGMMA_FAST_DQ, shape, act.label() + " (lse fp32)",
                    List.of(Ops.ATTENTION, Ops.ATTENTION_BACKWARD), 3.5 * fwd, "flop", "3.5 * fwd", Kind.KERNEL,
                    d -> wgmma(fastDq(attention(d, lens, hq, hkv, hd, act, true, true))),
                    d -> wgmma(fastDq(attention(d, small, hq, hkv, hd, act, true, true))), false));
            // the Hopper forward with the producer warpgroup (TMA and mbarriers; the same bits as the [wgmma] forward),
            // without and with the warpgroups' ping-pong, each also persistent; the ping-pong (FlashAttention-3's whole
            // design) with the fixed-point backward too
            for (CudaBackend.HopperForward f : CudaBackend.HopperForward.values()) {
                if (f == CudaBackend.HopperForward.WGMMA) continue;
                out.add(new Case("attention", "fwd " + tag + " " + hopperTag(f, ""), shape, act.label() + " (lse fp32)",
                        List.of(Ops.ATTENTION), fwd, "flop", "2*B*Hq*S^2*D (" + count + ")", Kind.KERNEL,
                        d -> wgmma(hopperForward(attention(d, lens, hq, hkv, hd, act, true, false), f)),
                        d -> wgmma(hopperForward(attention(d, smallTma, hq, hkv, hd, act, true, false), f)), false));
            }
            CudaBackend.HopperForward pp = CudaBackend.HopperForward.TMA_PING_PONG;
            out.add(new Case("attention", "fwd+bwd " + tag + " " + hopperTag(pp, ", fixed dQ"), shape, act.label() + " (lse fp32)",
                    List.of(Ops.ATTENTION, Ops.ATTENTION_BACKWARD), 3.5 * fwd, "flop", "3.5 * fwd", Kind.KERNEL,
                    d -> wgmma(hopperForward(fixedDq(attention(d, lens, hq, hkv, hd, act, true, true)), pp)),
                    d -> wgmma(hopperForward(fixedDq(attention(d, smallTma, hq, hkv, hd, act, true, true)), pp)), false));
            // and with fixed-point dQ: deterministic without a dQ pass, the candidate default on Hopper
            out.add(new Case("attention", "fwd+bwd " + tag + " " + WGMMA_FIXED_DQ, shape, act.label() + " (lse fp32)",
                    List.of(Ops.ATTENTION, Ops.ATTENTION_BACKWARD), 3.5 * fwd, "flop", "3.5 * fwd", Kind.KERNEL,
                    d -> wgmma(fixedDq(attention(d, lens, hq, hkv, hd, act, true, true))),
                    d -> wgmma(fixedDq(attention(d, small, hq, hkv, hd, act, true, true))), false));
            // the default backward (the wide kernels at head dim 128) against the 64-row kernels, on the same card
            out.add(new Case("attention", "bwd " + tag + " " + NARROW, shape, act.label() + " (lse fp32)",
                    List.of(Ops.ATTENTION, Ops.ATTENTION_BACKWARD), 2.5 * fwd, "flop", "2.5 * fwd", Kind.KERNEL,
                    d -> kernels(attention(d, lens, hq, hkv, hd, act, false, true), CudaBackend.AttentionBackwardKernels.NARROW),
                    d -> kernels(attention(d, small, hq, hkv, hd, act, false, true), CudaBackend.AttentionBackwardKernels.NARROW),
                    false));
        }
        // head dim 64 (llama-3.2-1b's 32 / 8 heads of 64) at the first shape: the default backward (the 64-row kernels
        // there) against the wide kernels, which the default leaves to head dim 128 until a GPU run says otherwise
        if (hd == 128 && !s.attention().isEmpty()) {
            int b = s.attention().get(0)[0], sq = s.attention().get(0)[1], d64 = 64;
            int[] lens = new int[b];
            java.util.Arrays.fill(lens, sq);
            int[] small = {Math.min(sq, 67), Math.min(sq, 45)};
            double fwd = 2.0 * b * hq * (double) sq * sq * d64;
            String tag = "b" + b + " s" + sq + " d64", shape = "B=" + b + " S=" + sq + " Hq=" + hq + " Hkv=" + hkv + " D=64 causal";
            out.add(new Case("attention", "bwd " + tag, shape, act.label() + " (lse fp32)", List.of(Ops.ATTENTION, Ops.ATTENTION_BACKWARD),
                    2.5 * fwd, "flop", "2.5 * fwd", Kind.KERNEL,
                    d -> kernels(attention(d, lens, hq, hkv, d64, act, false, true), CudaBackend.AttentionBackwardKernels.DEFAULT),
                    d -> kernels(attention(d, small, hq, hkv, d64, act, false, true), CudaBackend.AttentionBackwardKernels.DEFAULT),
                    false));
            out.add(new Case("attention", "bwd " + tag + " " + WIDE, shape, act.label() + " (lse fp32)",
                    List.of(Ops.ATTENTION, Ops.ATTENTION_BACKWARD), 2.5 * fwd, "flop", "2.5 * fwd", Kind.KERNEL,
                    d -> kernels(attention(d, lens, hq, hkv, d64, act, false, true), CudaBackend.AttentionBackwardKernels.WIDE),
                    d -> kernels(attention(d, small, hq, hkv, d64, act, false, true), CudaBackend.AttentionBackwardKernels.WIDE),
                    false));
        }
    }

    /** The variant tags of the attention rows whose backward runs the 64-row kernels, or the wide ones, everywhere. */
    static final String NARROW = "[64-row]", WIDE = "[wide]";

    static Instance kernels(Instance in, CudaBackend.AttentionBackwardKernels k) {
        return inCudaMode(in, CudaBackend::attentionBackwardKernels, CudaBackend::setAttentionBackwardKernels, k);
    }


    /** The variant tags of the attention rows that run the Hopper wgmma kernels (CudaBackend.setWgmmaAttention). */
    static final String WGMMA = "[wgmma]", WGMMA_FAST_DQ = "[wgmma, fast dQ]", WGMMA_FIXED_DQ = "[wgmma, fixed dQ]";

    /**
     * The variant tag of an attention row whose Hopper forward is {@code f} (CudaBackend.setHopperForward):
     * {@code [wgmma, tma]}, {@code [wgmma, tma-ping-pong]}, {@code [wgmma, tma-persistent]} ..., then {@code more}
     * (", fixed dQ").
     */
    static String hopperTag(CudaBackend.HopperForward f, String more) { return "[wgmma, " + f.label() + more + "]"; }

    /** The instance with the Hopper forward kernel {@code f} (with {@link #wgmma} on a Hopper device). */
    static Instance hopperForward(Instance in, CudaBackend.HopperForward f) {
        return inCudaMode(in, CudaBackend::hopperForward, CudaBackend::setHopperForward, f);
    }

    /** The instance with the Hopper wgmma attention kernels (on CUDA; where the device is not Hopper, the usual ones). */
    static Instance wgmma(Instance in) {
        return inCudaMode(in, CudaBackend::wgmmaAttention, CudaBackend::setWgmmaAttention, true);
    }

    /** The variant tag of the attention rows whose backward adds dQ with fp32 atomics (CudaBackend.AttentionDq.ATOMIC). */
    static final String FAST_DQ = "[fast dQ]";

    /** The variant tag of the attention rows whose backward adds dQ in fixed point (CudaBackend.AttentionDq.FIXED). */
    static final String FIXED_DQ = "[fixed dQ]";

    /** The variant tag of the LM-head row whose backward rounds dz to bf16 once (CudaBackend single mode). */
    static final String DZ_BF16 = "[dz bf16]";

    /**
     * The instance with its body run in one of the CUDA backend's modes, restored after each run; on another backend
     * the body as it is (the CPU has one mode), so the correctness check still compares the same op.
     */
    static <V> Instance inCudaMode(Instance in, java.util.function.Function<CudaBackend, V> get,
                                   java.util.function.BiConsumer<CudaBackend, V> set, V want) {
        if (!(in.be() instanceof CudaBackend cb)) return in;
        return in.wrap(body -> () -> {
            V was = get.apply(cb);
            set.accept(cb, want);
            try {
                body.run();
            } finally {
                set.accept(cb, was);
            }
        });
    }

    /** The instance with its attention backward in dq mode {@code m} (on CUDA; the CPU has one mode). */
    static Instance withDq(Instance in, CudaBackend.AttentionDq m) {
        return inCudaMode(in, CudaBackend::attentionDq, CudaBackend::setAttentionDq, m);
    }

    static Instance fastDq(Instance in) { return withDq(in, CudaBackend.AttentionDq.ATOMIC); }

    static Instance fixedDq(Instance in) { return withDq(in, CudaBackend.AttentionDq.FIXED); }

    /** Packed causal sequences of the given lengths (cuSeqlens), GQA hq / hkv. */
    static Instance attention(Data d, int[] lens, int hq, int hkv, int hd, DType act, boolean fwd, boolean bwd) {
        Instance in = new Instance(d);
        Backend be = d.backend();
        int[] cu = new int[lens.length + 1];
        for (int i = 0; i < lens.length; i++) cu[i + 1] = cu[i] + lens[i];
        int n = cu[lens.length];
        float scale = (float) (1 / Math.sqrt(hd));
        Tensor cuT = in.ints(cu, cu.length);
        Tensor q = in.gauss(act, 1, n, hq, hd), k = in.gauss(act, 1, n, hkv, hd), v = in.gauss(act, 1, n, hkv, hd);
        // a flash kernel multiplies bf16-rounded probabilities with V: errors up to ~2^-8 of |out| per term
        Tensor o = in.empty(act, n, hq, hd), lse = in.empty(DType.FP32, n, hq);
        if (fwd) {
            in.out("out", o, new Tol(0, 2e-2, 0x1p-6));
            in.out("lse", lse, new Tol(1e-3, 0, 1e-5));
        } else {
            be.attention(o, lse, q, k, v, cuT, scale);
        }
        Tensor dOut = bwd ? in.gauss(act, 1, n, hq, hd) : null;
        Tol g = new Tol(0, 3e-2, 0x1p-5);
        Tensor dq = bwd ? in.out("dq", in.empty(act, n, hq, hd), g) : null;
        Tensor dk = bwd ? in.out("dk", in.empty(act, n, hkv, hd), g) : null;
        Tensor dv = bwd ? in.out("dv", in.empty(act, n, hkv, hd), g) : null;
        return in.body(() -> {
            if (fwd) be.attention(o, lse, q, k, v, cuT, scale);
            if (bwd) be.attentionBackward(dq, dk, dv, dOut, q, k, v, o, lse, cuT, scale);
        });
    }

    // ---- decode ---------------------------------------------------------------------------------------------------

    static void decode(List<Case> out, BenchSizes s, DType act) {
        int b = s.decodeBatch(), ctx = s.decodeContext(), hq = s.qHeads(), hkv = s.kvHeads(), hd = s.headDim(), bs = s.kvBlockSize();
        int a = act.bytes();
        int[] ctxs = new int[b];
        java.util.Arrays.fill(ctxs, ctx);
        out.add(new Case("decode", "decode b" + b + " ctx" + ctx, "B=" + b + " ctx=" + ctx + " Hq=" + hq + " Hkv=" + hkv + " D=" + hd,
                act.label(), List.of(Ops.DECODE_ATTENTION), 2.0 * a * b * ctx * hkv * hd + 2.0 * a * b * hq * hd, "byte",
                "2*A*B*ctx*Hkv*D + 2*A*B*Hq*D: the K and V of every context token read once, q read, out written", Kind.KERNEL,
                d -> decode(d, ctxs, hq, hkv, hd, bs, act), d -> decode(d, new int[] {Math.min(ctx, 37), Math.min(ctx, 64), 1}, hq, hkv, hd, bs, act),
                false));
        // llama-3.2-1b's rollout at steady state: head dim 64, the mean context of 256 prompt + 256 new tokens (3/8 of
        // the 1024); a step of short blocks, where per-block overheads weigh more (no goal: a diagnostic)
        int ctx1b = ctx * 3 / 8, hd1b = 64;
        int[] ctxs1b = new int[b];
        java.util.Arrays.fill(ctxs1b, ctx1b);
        out.add(new Case("decode", "decode b" + b + " ctx" + ctx1b + " d" + hd1b, "B=" + b + " ctx=" + ctx1b + " Hq=" + hq + " Hkv=" + hkv + " D=" + hd1b,
                act.label(), List.of(Ops.DECODE_ATTENTION), 2.0 * a * b * ctx1b * hkv * hd1b + 2.0 * a * b * hq * hd1b, "byte",
                "2*A*B*ctx*Hkv*D + 2*A*B*Hq*D", Kind.KERNEL,
                d -> decode(d, ctxs1b, hq, hkv, hd1b, bs, act), d -> decode(d, new int[] {Math.min(ctx1b, 37), Math.min(ctx1b, 64), 1}, hq, hkv, hd1b, bs, act),
                false));
        // The same steps as a GRPO rollout runs them: groups of 16 samples sharing their prompt's 256 keys (2/3 of the
        // context), read once per group through prefix groups (cascade decoding). Work = the distinct K/V bytes: the
        // rate is against the copy bandwidth of what must be read; the time against the ungrouped row above is the gain.
        // Problems of their own, without a peer or a goal (SDPA has no shared prefixes to read once).
        int share = ctx1b * 2 / 3 / bs * bs, gs = PREFIX_GROUP;
        for (int hdx : new int[] {hd1b, hd}) {
            double kvTokens = (double) (b / gs) * share + (double) b * (ctx1b - share);
            out.add(new Case("decode", "decode b" + b + " ctx" + ctx1b + " d" + hdx + " share" + gs + "x" + share,
                    "B=" + b + " ctx=" + ctx1b + " Hq=" + hq + " Hkv=" + hkv + " D=" + hdx + ", groups of " + gs + " sharing " + share,
                    act.label(), List.of(Ops.DECODE_ATTENTION), 2.0 * a * kvTokens * hkv * hdx + 2.0 * a * b * hq * hdx, "byte",
                    "2*A*(B/" + gs + "*shared + B*(ctx-shared))*Hkv*D + 2*A*B*Hq*D: the distinct K/V read once", Kind.KERNEL,
                    d -> decodeGrouped(d, b, ctx1b, share, gs, hq, hkv, hdx, bs, act),
                    d -> decodeGrouped(d, 5, Math.min(ctx1b, 37), Math.min(share, 32), 2, hq, hkv, hdx, bs, act), false));
        }
    }

    /** Samples per prompt of the grouped decode rows: the Tulu step's 16. */
    static final int PREFIX_GROUP = 16;

    /**
     * B sequences of ctx tokens in groups of gs whose first `shared` keys (whole blocks) are one set of blocks per
     * group, named as prefix groups; the blocks scattered over the pool as {@link #decode} does.
     */
    static Instance decodeGrouped(Data d, int b, int ctx, int shared, int gs, int hq, int hkv, int hd, int bs, DType act) {
        Instance in = new Instance(d);
        int perSeq = (ctx + bs - 1) / bs, sharedBlocks = shared / bs, groups = (b + gs - 1) / gs;
        int total = groups * sharedBlocks + b * (perSeq - sharedBlocks);
        int[] ids = new int[total], tables = new int[b * perSeq], rows = new int[3 * groups], ctxs = new int[b];
        for (int i = 0; i < total; i++) ids[i] = (int) ((i * P + 11) % total);
        int next = 0;
        for (int g = 0; g < groups; g++) {
            int first = g * gs, count = Math.min(gs, b - first);
            rows[3 * g] = first;
            rows[3 * g + 1] = count;
            rows[3 * g + 2] = sharedBlocks * bs;
            int base = next;
            next += sharedBlocks;
            for (int s = first; s < first + count; s++) {
                ctxs[s] = ctx;
                for (int j = 0; j < perSeq; j++) tables[s * perSeq + j] = j < sharedBlocks ? ids[base + j] : ids[next++];
            }
        }
        Tensor kc = in.gauss(act, 1, total, bs, hkv, hd), vc = in.gauss(act, 1, total, bs, hkv, hd);
        Tensor q = in.gauss(act, 1, b, hq, hd), bt = in.ints(tables, b, perSeq), cl = in.ints(ctxs, b), pg = in.ints(rows, groups, 3);
        Tensor o = in.out("out", in.empty(act, b, hq, hd), new Tol(0, 2e-2, 0x1p-6));
        float scale = (float) (1 / Math.sqrt(hd));
        return in.body(() -> d.backend().decodeAttention(o, q, kc, vc, bt, cl, pg, scale));
    }

    /** One query per sequence against a paged cache whose blocks are scattered (a permutation of the pool). */
    static Instance decode(Data d, int[] ctxs, int hq, int hkv, int hd, int bs, DType act) {
        Instance in = new Instance(d);
        int b = ctxs.length, perSeq = 0;
        for (int c : ctxs) perSeq = Math.max(perSeq, (c + bs - 1) / bs);
        int total = b * perSeq;
        int[] tables = new int[total];
        for (int i = 0; i < total; i++) tables[i] = (int) ((i * P + 11) % total);
        Tensor kc = in.gauss(act, 1, total, bs, hkv, hd), vc = in.gauss(act, 1, total, bs, hkv, hd);
        Tensor q = in.gauss(act, 1, b, hq, hd), bt = in.ints(tables, b, perSeq), cl = in.ints(ctxs, b);
        Tensor o = in.out("out", in.empty(act, b, hq, hd), new Tol(0, 2e-2, 0x1p-6));
        float scale = (float) (1 / Math.sqrt(hd));
        return in.body(() -> d.backend().decodeAttention(o, q, kc, vc, bt, cl, scale));
    }

    // ---- sampling -------------------------------------------------------------------------------------------------

    /** Logits ~ N(0, 4^2): a peaked distribution whose top-p 0.9 nucleus is a small part of the vocabulary. */
    static final double LOGIT_SCALE = 4;

    static void sampling(List<Case> out, BenchSizes s) {
        int b = s.sampleBatch(), v = s.vocab();
        String shape = "B=" + b + " V=" + v, f = "4*B*V: one read of the fp32 logits";
        out.add(new Case("sampling", "top-p 0.9", shape, "fp32 logits", List.of(Ops.SAMPLE), 4.0 * b * v, "byte", f, Kind.KERNEL,
                d -> sample(d, b, v, 0.9f), d -> sample(d, 5, Math.min(v, 5000), 0.9f), false));
        out.add(new Case("sampling", "plain", shape, "fp32 logits", List.of(Ops.SAMPLE), 4.0 * b * v, "byte", f, Kind.KERNEL,
                d -> sample(d, b, v, 1f), d -> sample(d, 5, Math.min(v, 5000), 1f), false));
    }

    static Instance sample(Data d, int b, int v, float topP) {
        Instance in = new Instance(d);
        int[] counters = new int[2 * b];
        for (int i = 0; i < b; i++) counters[2 * i] = i;
        Tensor logits = in.out("logits", in.gauss(DType.FP32, LOGIT_SCALE, b, v), Tol.EXACT);
        Tensor tok = in.out("tokens", in.empty(DType.INT32, b), Tol.EXACT), lp = in.out("logprobs", in.empty(DType.FP32, b), Tol.FP32);
        Tensor rc = in.ints(counters, b, 2);
        SamplingSpec spec = new SamplingSpec(1f, 0, topP, 1234);
        in.checker = Checks.sampling("logits", "tokens", "logprobs", 1f, topP);
        return in.body(() -> d.backend().sample(tok, lp, logits, rc, spec));
    }

    // ---- LM head --------------------------------------------------------------------------------------------------

    static void lmhead(List<Case> out, BenchSizes s, DType act) {
        int n = s.lmTokens(), h = s.hidden(), v = s.vocab();
        String shape = "N=" + n + " H=" + h + " V=" + v, dt = act.label() + " (log-probs, dLmHead fp32)";
        int vs = Math.min(v, 3000), ns = 9;
        out.add(new Case("lmhead", "logprob fwd", shape, dt, List.of(Ops.TOKEN_LOGPROBS), 2.0 * n * h * v, "flop",
                "2*N*H*V (the logits GEMM)", Kind.KERNEL, d -> lmhead(d, n, h, v, act, false), d -> lmhead(d, ns, h, vs, act, false), true));
        out.add(new Case("lmhead", "logprob fwd+bwd", shape, dt, List.of(Ops.TOKEN_LOGPROBS, Ops.TOKEN_LOGPROBS_BACKWARD),
                6.0 * n * h * v, "flop", "6*N*H*V (three GEMMs of N x H x V)", Kind.KERNEL,
                d -> lmhead(d, n, h, v, act, true), d -> lmhead(d, ns, h, vs, act, true), true));
        // The row above splits the bf16 dz into hi + lo (the conformance suites' precision); the peer's autograd rounds
        // dz to bf16 once, as this variant does (docs/benchmarks.md, "The LM head in the training step").
        out.add(new Case("lmhead", "logprob fwd+bwd " + DZ_BF16, shape, dt, List.of(Ops.TOKEN_LOGPROBS, Ops.TOKEN_LOGPROBS_BACKWARD),
                6.0 * n * h * v, "flop", "6*N*H*V (three GEMMs of N x H x V)", Kind.KERNEL,
                d -> singleDz(lmhead(d, n, h, v, act, true)), d -> singleDz(lmhead(d, ns, h, vs, act, true)), true));
        // The same on the chunk loops: the row path above (a token block's logits kept, not computed again) against the
        // loops it replaces where dz fits in place (docs/kernels.md "Fused LM head"); the faster should be the default.
        out.add(new Case("lmhead", "logprob fwd+bwd " + DZ_BF16_CHUNKS, shape, dt, List.of(Ops.TOKEN_LOGPROBS, Ops.TOKEN_LOGPROBS_BACKWARD),
                6.0 * n * h * v, "flop", "6*N*H*V (three GEMMs of N x H x V)", Kind.KERNEL,
                d -> chunks(singleDz(lmhead(d, n, h, v, act, true))), d -> chunks(singleDz(lmhead(d, ns, h, vs, act, true))), true));
        // What the trainer calls: grpoLoss, the log-probs and their backward in one op (the two ops above compute the
        // forward twice: tokenLogprobsBackward has no log-probs to take), dz rounded once as the trainer's default.
        out.add(new Case("lmhead", "logprob fwd+bwd " + GRPO_LOSS, shape, dt, List.of(Ops.GRPO_LOSS),
                6.0 * n * h * v, "flop", "6*N*H*V (three GEMMs of N x H x V)", Kind.KERNEL,
                d -> singleDz(grpoLoss(d, n, h, v, act)), d -> singleDz(grpoLoss(d, ns, h, vs, act)), true));
        // The same with the trainer's default lm_head_scratch_mib (1024): blocks of 2048 tokens instead of 512, so the
        // dLmHead GEMM reads and writes the fp32 [V, H] gradient 4 times instead of 16 (no 256 MiB goal: it holds 1 GiB)
        out.add(new Case("lmhead", "logprob fwd+bwd " + GRPO_LOSS_TRAINER, shape, dt, List.of(Ops.GRPO_LOSS),
                6.0 * n * h * v, "flop", "6*N*H*V (three GEMMs of N x H x V)", Kind.KERNEL,
                d -> trainerRows(singleDz(grpoLoss(d, n, h, v, act))), d -> trainerRows(singleDz(grpoLoss(d, ns, h, vs, act))), true));
    }

    /** The variant tag of the grpoLoss row with the trainer's LM-head scratch (lm_head_scratch_mib, 1 GiB). */
    static final String GRPO_LOSS_TRAINER = "[grpoLoss, dz bf16, 1 GiB blocks]";

    static Instance trainerRows(Instance in) {
        return inCudaMode(in, CudaBackend::lmHeadRowsBytes, CudaBackend::setLmHeadRowsBytes, E2eBench.TRAINER_LM_ROWS_BYTES);
    }

    /** The variant tag of the LM-head row run on the chunk loops with dz rounded once (CudaBackend.LmHeadPath.CHUNKS). */
    static final String DZ_BF16_CHUNKS = "[dz bf16, chunks]";

    /** The variant tag of the LM-head row that runs grpoLoss (forward and backward in one op, dz rounded once). */
    static final String GRPO_LOSS = "[grpoLoss, dz bf16]";

    static Instance singleDz(Instance in) {
        return inCudaMode(in, CudaBackend::lmHeadBf16GradSplit, CudaBackend::setLmHeadBf16GradSplit, false);
    }

    static Instance chunks(Instance in) {
        return inCudaMode(in, CudaBackend::lmHeadPath, CudaBackend::setLmHeadPath, CudaBackend.LmHeadPath.CHUNKS);
    }

    /**
     * grpoLoss on the lmhead rows' problem: old and reference log-probs at log(1 / V) (random weights give log-probs
     * near it: ratios near 1, as in a first mini-batch), Gaussian advantages, token weights 1 / N, kl3, beta 0.01.
     */
    static Instance grpoLoss(Data d, int n, int h, int v, DType act) {
        Instance in = new Instance(d);
        Backend be = d.backend();
        int[] targets = new int[n];
        for (int i = 0; i < n; i++) targets[i] = (int) ((i * P + 5) % v);
        Tensor hidden = in.gauss(act, 1, n, h), w = in.gauss(act, 1 / Math.sqrt(h), v, h), t = in.ints(targets, n);
        Tensor old = in.empty(DType.FP32, n), ref = in.empty(DType.FP32, n), wt = in.empty(DType.FP32, n);
        Tensor adv = in.gauss(DType.FP32, 1, n);
        be.fill(old, (float) -Math.log(v));
        be.fill(ref, (float) -Math.log(v));
        be.fill(wt, 1f / n);
        GrpoLossOutputs o = new GrpoLossOutputs(in.out("loss", in.empty(DType.FP32, 1), new Tol(1e-4, 0, 1e-3)),
                in.out("logprobs", in.empty(DType.FP32, n), new Tol(1e-3, 0, 1e-4)), in.empty(DType.FP32, n),
                in.empty(DType.FP32, n), in.empty(DType.FP32, n),
                in.out("dHidden", in.empty(act, n, h), new Tol(0, 1e-2, 0x1p-6)),
                in.out("dLmHead", in.zeros(DType.FP32, v, h), new Tol(0, 1e-2, 1e-3)));
        GrpoLossParams p = new GrpoLossParams(1f, 0.2f, 0.2f, 0.01f, KlEstimator.KL3);
        return in.body(() -> be.grpoLoss(o, hidden, w, t, wt, adv, old, ref, p));
    }

    static Instance lmhead(Data d, int n, int h, int v, DType act, boolean bwd) {
        Instance in = new Instance(d);
        Backend be = d.backend();
        int[] targets = new int[n];
        for (int i = 0; i < n; i++) targets[i] = (int) ((i * P + 5) % v);
        Tensor hidden = in.gauss(act, 1, n, h), w = in.gauss(act, 1 / Math.sqrt(h), v, h), t = in.ints(targets, n);
        Tensor lp = in.out("logprobs", in.empty(DType.FP32, n), new Tol(1e-3, 0, 1e-4));
        Tensor dLp = bwd ? in.gauss(DType.FP32, 1, n) : null;
        Tensor dH = bwd ? in.out("dHidden", in.empty(act, n, h), new Tol(0, 1e-2, 0x1p-6)) : null;
        Tensor dW = bwd ? in.out("dLmHead", in.zeros(DType.FP32, v, h), new Tol(0, 1e-2, 1e-3)) : null;
        return in.body(() -> {
            be.tokenLogprobs(lp, hidden, w, t, 1f);
            if (bwd) be.tokenLogprobsBackward(dH, dW, dLp, hidden, w, t, 1f);
        });
    }
}
