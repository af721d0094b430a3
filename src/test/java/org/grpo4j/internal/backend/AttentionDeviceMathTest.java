package org.grpo4j.internal.backend;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.util.Arrays;
import java.util.SplittableRandom;
import org.grpo4j.bindings.CudaNative;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The attention kernels' algorithms on the host (native/hostmath.cu over cuda/attention.cuh): the online softmax and
 * the merge of partial states, the forward and backward tile walks (plan, tile order, causal skip, diagonal mask,
 * packed sequences, GQA, per-lane row sums, P and dS rounded to bf16), the decode kernel's warps, split-KV plan and
 * combine, and the index checks, against float64 references and the CPU backend's error messages. Needs the JNI
 * library, not a GPU.
 */
class AttentionDeviceMathTest {
    static final CpuBackend cpu = TestBackends.cpu();

    @BeforeAll
    static void library() {
        assumeTrue(CudaRuntime.loadLibrary(), "skipped: the CUDA JNI library is not built or does not load here");
    }

    static int[] cu(int... lens) { return AttentionConformanceTest.Suite.cu(lens); }

    static float[] f32(double[] a) { return Conformance.f32(a); }

    /** out and lse of softmax(scale s) v in float64. */
    static double[] softmaxRow(double[] s, double[] v, int n, int d, double scale) {
        double mx = Double.NEGATIVE_INFINITY, sum = 0;
        for (double x : s) mx = Math.max(mx, x * scale);
        double[] r = new double[d + 1];
        for (int j = 0; j < n; j++) {
            double p = Math.exp(s[j] * scale - mx);
            sum += p;
            for (int x = 0; x < d; x++) r[x] += p * v[j * d + x];
        }
        for (int x = 0; x < d; x++) r[x] /= sum;
        r[d] = mx + Math.log(sum);
        return r;
    }

    /**
     * The kernels' fragment plumbing (mma.cuh: the swizzle, every operand shape's ldmatrix addresses, the C-to-A
     * repacking of P and dS, the fast mode's dS^T stores), in the kernels' loop shapes at head dims 64 and 128, on a
     * warp emulated from the PTX ISA's ldmatrix and mma.m16n8k16 fragment tables: every product exact (small-integer
     * inputs) and no shared-memory bank conflict; each of five planted layout errors is caught.
     */
    @Test
    void fragmentLayoutsMatchThePtxTables() {
        int[] bad = new int[4];
        assertEquals(0, CudaNative.g4_host_mma_layout_check(0, bad),
                "wrong S, wrong PV, wrong fast dQ elements, bank conflicts: " + Arrays.toString(bad));
        for (int mutation = 1; mutation <= 5; mutation++)
            assertTrue(CudaNative.g4_host_mma_layout_check(mutation, bad) > 0, "planted layout error " + mutation + " is caught");
    }

    /**
     * Online softmax in chunks, merged from parts (empty parts included), against float64. Derived bound: each weight
     * 2^(c s - m) carries the exp2f error (2 ulp = 2^-22) and the rounding of its argument (2^-24 |c s - m|, at most
     * 2^-24 c (max s - min s), i.e. 2^-24 scale range / ln 2 in the exponent: relative 2^-24 scale range); sums of n
     * terms, n / chunk rescales, the merge of the parts and the division add at most (n + n / chunk + parts + 4) 2^-24
     * relative; so |out - exact| <= e (sum_j p_j |v_j| + |out|) with e the sum of those, and |lse - exact| <= e +
     * 2^-24 (|m| + |lse|).
     */
    @Test
    void onlineSoftmaxAndMergeMatchFloat64() {
        SplittableRandom r = new SplittableRandom(11);
        int d = 7;
        for (int n : new int[] {1, 3, 33, 1001})
            for (int chunk : new int[] {1, 8, 64})
                for (int parts : new int[] {1, 2, 5}) {
                    double scale = 0.3;
                    double[] s = Conformance.randn(r, n, 4), v = Conformance.randn(r, n * d, 1);
                    double[] ref = softmaxRow(s, v, n, d, scale), aref = softmaxRow(s, AttentionBounds.abs(v), n, d, scale);
                    float[] out = new float[d], lse = new float[1];
                    CudaNative.g4_host_online_softmax_row(f32(s), f32(v), n, d, (float) scale, chunk, parts, out, lse);
                    double range = Arrays.stream(s).max().orElse(0) - Arrays.stream(s).min().orElse(0);
                    double e = 0x1p-22 + 0x1p-24 * scale * range + (n + (double) n / chunk + parts + 4) * 0x1p-24;
                    String what = "n " + n + " chunk " + chunk + " parts " + parts;
                    for (int x = 0; x < d; x++)
                        assertEquals(ref[x], out[x], e * (aref[x] + Math.abs(ref[x])), what + " out " + x);
                    double m = Arrays.stream(s).max().orElse(0) * scale;
                    assertEquals(ref[d], lse[0], e + 0x1p-24 * (Math.abs(m) + Math.abs(ref[d])), what + " lse");
                }
    }

    // {hq, hkv, d, lengths...}: odd lengths, tile edges (64, 65, 128, 130), empty sequences, GQA 4/2, 8/2, 3/1, MHA
    static final int[][] CASES = {{4, 2, 16, 1, 3, 0, 33, 64, 65, 130}, {2, 1, 8, 1001}, {8, 2, 64, 70, 5, 128},
            {3, 1, 128, 129}, {4, 4, 6, 2, 0, 0, 7}};

    /** Many short sequences packed together (lengths 0..9). */
    static int[] manyShort(SplittableRandom r) {
        int[] c = new int[3 + 60];
        c[0] = 2;
        c[1] = 1;
        c[2] = 8;
        for (int i = 3; i < c.length; i++) c[i] = r.nextInt(10);
        return c;
    }

    /**
     * The forward kernel's tile walk in fp32 against float64: with P unrounded within the fp32 tolerance (2e-6, 1e-5),
     * with P rounded to bf16 and the output rounded to bf16 within bf16(2e-6 + slack, 1e-5), slack =
     * {@link AttentionBounds#forward} (the CUDA bf16 tolerance of docs/ops.md). Every row written.
     */
    @Test
    void forwardTileWalkMatchesFloat64() {
        SplittableRandom r = new SplittableRandom(12);
        int[][] cases = Arrays.copyOf(CASES, CASES.length + 1);
        cases[CASES.length] = manyShort(r);
        for (int[] c : cases)
            for (int round = 0; round <= 1; round++) {
                int hq = c[0], hkv = c[1], d = c[2];
                int[] cu = cu(Arrays.copyOfRange(c, 3, c.length));
                int n = cu[cu.length - 1], b = cu.length - 1;
                double scale = 1 / Math.sqrt(d);
                double[] q = Conformance.randn(r, n * hq * d, 1), k = Conformance.randn(r, n * hkv * d, 1),
                        v = Conformance.randn(r, n * hkv * d, 1);
                if (round == 1) {
                    q = Conformance.roundBf16(q);
                    k = Conformance.roundBf16(k);
                    v = Conformance.roundBf16(v);
                }
                double[] ref = Ref.attention(q, k, v, cu, n, hq, hkv, d, scale);
                float[] out = new float[n * hq * d], lse = new float[n * hq];
                Arrays.fill(out, Float.NaN);
                Arrays.fill(lse, Float.NaN);
                int[] rep = new int[4];
                assertEquals(1, CudaNative.g4_host_attention_tiled(f32(q), f32(k), f32(v), cu, b, n, hq, hkv, d, (float) scale,
                        round, out, lse, rep));
                String what = "tiled forward hq=" + hq + " hkv=" + hkv + " d=" + d + " cu=" + Arrays.toString(cu) + " roundP=" + round;
                double[] want = Arrays.copyOf(ref, n * hq * d);
                if (round == 0) Conformance.assertClose(what + " out", want, out, 2e-6, 1e-5);
                else {
                    for (int i = 0; i < out.length; i++) out[i] = Bf16.round(out[i]);
                    assertClosePerElement(what + " out", want, out,
                            AttentionBounds.plus(2e-6, AttentionBounds.forward(q, k, v, cu, n, hq, hkv, d, scale)), 1e-5, true);
                }
                Conformance.assertClose(what + " lse", Arrays.copyOfRange(ref, n * hq * d, ref.length), lse, 2e-6, 1e-5);
            }
    }

    /** bf16(atol_i, rtol) when bf16 (Conformance.bf16Tolerance per element), else (atol_i, rtol). */
    static void assertClosePerElement(String what, double[] want, float[] got, double[] atol, double rtol, boolean bf16) {
        for (int i = 0; i < want.length; i++) {
            double[] t = bf16 ? Conformance.bf16Tolerance(atol[i], rtol) : new double[] {atol[i], rtol};
            if (!(Math.abs(got[i] - want[i]) <= t[0] + t[1] * Math.abs(want[i])))
                fail(what + ": element " + i + " got " + got[i] + " want " + want[i] + " (|diff| " + Math.abs(got[i] - want[i])
                        + " > " + (t[0] + t[1] * Math.abs(want[i])) + ")");
        }
    }

    /**
     * The dK/dV and dQ kernels' loops in fp32 against the analytic float64 gradient given the same (bf16-rounded) out:
     * unrounded within the fp32 backward tolerance (2e-5, 2e-4); with P and dS rounded to bf16 and the outputs rounded,
     * within bf16(2e-5 + slack, 2e-4), slack = {@link AttentionBounds#backward}.
     */
    @Test
    void backwardLoopsMatchFloat64() {
        SplittableRandom r = new SplittableRandom(13);
        int[][] cases = {{4, 2, 16, 1, 3, 0, 33, 64, 65, 130}, {2, 1, 8, 300}, {8, 2, 64, 70, 5}, {3, 1, 128, 129}, {4, 4, 6, 2, 0, 7}};
        for (int[] c : cases)
            for (int round = 0; round <= 1; round++) {
                int hq = c[0], hkv = c[1], d = c[2];
                int[] cu = cu(Arrays.copyOfRange(c, 3, c.length));
                int n = cu[cu.length - 1], b = cu.length - 1, nq = n * hq * d, nk = n * hkv * d;
                double scale = 1 / Math.sqrt(d);
                double[] q = Conformance.randnBf16(r, nq, 1), k = Conformance.randnBf16(r, nk, 1), v = Conformance.randnBf16(r, nk, 1),
                        dy = Conformance.randnBf16(r, nq, 1);
                double[] fw = Ref.attention(q, k, v, cu, n, hq, hkv, d, scale);
                double[] out = Conformance.roundBf16(Arrays.copyOf(fw, nq));
                float[] lse = f32(Arrays.copyOfRange(fw, nq, fw.length));
                double[] want = Ref.attentionBackward(q, k, v, out, dy, cu, n, hq, hkv, d, scale);
                float[] dq = new float[nq], dk = new float[nk], dv = new float[nk];
                Arrays.fill(dq, Float.NaN);
                Arrays.fill(dk, Float.NaN);
                Arrays.fill(dv, Float.NaN);
                assertEquals(1, CudaNative.g4_host_attention_backward_tiled(f32(q), f32(k), f32(v), f32(out), f32(dy), lse, cu, b, n,
                        hq, hkv, d, (float) scale, round, dq, dk, dv, new int[4]));
                String what = "tiled backward hq=" + hq + " hkv=" + hkv + " d=" + d + " cu=" + Arrays.toString(cu) + " round=" + round;
                double[] slack = round == 1 ? AttentionBounds.backward(q, k, v, out, dy, cu, n, hq, hkv, d, scale) : new double[nq + 2 * nk];
                float[][] got = {dq, dk, dv};
                String[] names = {"dq", "dk", "dv"};
                int[] off = {0, nq, nq + nk}, len = {nq, nk, nk};
                for (int t = 0; t < 3; t++) {
                    if (round == 1) for (int i = 0; i < got[t].length; i++) got[t][i] = Bf16.round(got[t][i]);
                    assertClosePerElement(what + " " + names[t], Arrays.copyOfRange(want, off[t], off[t] + len[t]), got[t],
                            AttentionBounds.plus(2e-5, Arrays.copyOfRange(slack, off[t], off[t] + len[t])), 2e-4, round == 1);
                }
            }
    }

    /** The slack is not vacuous: rounding P does move the output by a visible fraction of it. */
    @Test
    void roundingPIsVisibleAndWithinTheSlack() {
        SplittableRandom r = new SplittableRandom(14);
        int hq = 2, hkv = 1, d = 64, n = 200;
        int[] cu = {0, n};
        double scale = 1 / Math.sqrt(d);
        double[] q = Conformance.randnBf16(r, n * hq * d, 1), k = Conformance.randnBf16(r, n * hkv * d, 1),
                v = Conformance.randnBf16(r, n * hkv * d, 1);
        float[] a = new float[n * hq * d], b = new float[n * hq * d], lse = new float[n * hq];
        CudaNative.g4_host_attention_tiled(f32(q), f32(k), f32(v), cu, 1, n, hq, hkv, d, (float) scale, 0, a, lse, new int[4]);
        CudaNative.g4_host_attention_tiled(f32(q), f32(k), f32(v), cu, 1, n, hq, hkv, d, (float) scale, 1, b, lse, new int[4]);
        double[] slack = AttentionBounds.forward(q, k, v, cu, n, hq, hkv, d, scale);
        double worst = 0;
        for (int i = 0; i < a.length; i++) {
            double diff = Math.abs(a[i] - b[i]);
            assertTrue(diff <= slack[i] + 1e-6, "element " + i + ": rounding P moved it by " + diff + " > slack " + slack[i]);
            worst = Math.max(worst, diff / slack[i]);
        }
        assertTrue(worst > 0.05, "rounding P should use a visible part of the slack, used at most " + worst);
    }

    /** cuSeqlens problems: the kernel's report, turned into the backend's message, is the CPU backend's message. */
    @Test
    void cuSeqlensChecksReportWhatTheCpuSays() {
        int[][] bad = {{1, 4}, {0, 3}, {0, 5}, {0, 3, 2, 4}, {0, 1, 3, 2, 2, 4}, {2, 1, 4}, {0, -1, 4}, {0, 4, 5}};
        int n = 4;
        for (int[] c : bad) {
            int b = c.length - 1;
            String cpuMsg = assertThrows(IllegalArgumentException.class, () -> {
                try (Tensor t = cpu.upload(c, c.length)) {
                    CpuBackend.sequenceOf(Ops.ATTENTION, t, n);
                }
            }).getMessage();
            int[] rep = new int[4];
            assertEquals(0, CudaNative.g4_host_cu_seqlens_check(c, b, n, rep), Arrays.toString(c));
            rep[0] |= Ops.ALL.indexOf(Ops.ATTENTION) + 1;
            String msg = CudaBackend.attentionFlagMessage(rep);
            assertTrue(msg.endsWith("(found by the kernel; nothing was written)"), msg);
            assertEquals(cpuMsg, msg.substring(0, msg.indexOf(" (found by the kernel")), Arrays.toString(c));
        }
        for (int[] c : new int[][] {{0, 4}, {0, 0, 4, 4}, {0, 2, 2, 4}})
            assertEquals(1, CudaNative.g4_host_cu_seqlens_check(c, c.length - 1, n, new int[4]), Arrays.toString(c));
    }

    /** The fixed-point dQ's bound report (kind 7, cuda/attention.cu dq_add): names the element, the cause and the mode. */
    @Test
    void fixedPointDqBoundReportNamesTheCause() {
        int op = Ops.ALL.indexOf(Ops.ATTENTION_BACKWARD) + 1;
        String msg = CudaBackend.attentionFlagMessage(new int[] {op | 7 << 8, 768, 0, 62});
        assertTrue(msg.startsWith("attentionBackward: dq element 768 (mod 2^32): a dS K contribution reached 2^62, 4 times the fixed-point dQ's bound"), msg);
        assertTrue(msg.contains("not the forward's log-sum-exp") && msg.endsWith("(found by the kernel)"), msg);
    }

    /** float64 decode of every (sequence, head): softmax over the context through the block table. */
    static double[] decodeRef(double[] q, double[] kc, double[] vc, int[] tables, int[] ctx, int b, int hq, int hkv, int d,
                              int bs, int maxBlocks, double scale, boolean absV) {
        double[] out = new double[b * hq * d];
        int group = hq / hkv;
        for (int s = 0; s < b; s++)
            for (int h = 0; h < hq; h++) {
                int g = h / group, c = ctx[s];
                double[] sc = new double[c];
                double mx = Double.NEGATIVE_INFINITY, sum = 0;
                for (int t = 0; t < c; t++) {
                    int slot = tables[s * maxBlocks + t / bs] * bs + t % bs;
                    double dot = 0;
                    for (int x = 0; x < d; x++) dot += q[(s * hq + h) * d + x] * kc[(slot * hkv + g) * d + x];
                    sc[t] = dot * scale;
                    mx = Math.max(mx, sc[t]);
                }
                for (int t = 0; t < c; t++) sum += Math.exp(sc[t] - mx);
                for (int t = 0; t < c; t++) {
                    int slot = tables[s * maxBlocks + t / bs] * bs + t % bs;
                    double p = Math.exp(sc[t] - mx) / sum;
                    for (int x = 0; x < d; x++) {
                        double vv = vc[(slot * hkv + g) * d + x];
                        out[(s * hq + h) * d + x] += p * (absV ? Math.abs(vv) : vv);
                    }
                }
            }
        return out;
    }

    record Paged(int[] tables, int[] ctx, int numBlocks, int maxBlocks) {}

    /** Scattered block tables for the given context lengths (unused entries -1: never read). */
    static Paged paged(SplittableRandom r, int[] ctx, int bs, int spare) {
        int maxBlocks = 0, total = 0;
        for (int c : ctx) {
            maxBlocks = Math.max(maxBlocks, (c + bs - 1) / bs);
            total += (c + bs - 1) / bs;
        }
        int numBlocks = total + spare;
        int[] perm = r.ints(0, Integer.MAX_VALUE).limit(numBlocks).toArray();
        Integer[] idx = new Integer[numBlocks];
        for (int i = 0; i < numBlocks; i++) idx[i] = i;
        Arrays.sort(idx, (x, y) -> Integer.compare(perm[x], perm[y]));
        int[] tables = new int[ctx.length * maxBlocks];
        Arrays.fill(tables, -1);
        int next = 0;
        for (int s = 0; s < ctx.length; s++)
            for (int j = 0; j < (ctx[s] + bs - 1) / bs; j++) tables[s * maxBlocks + j] = idx[next++];
        return new Paged(tables, ctx, numBlocks, maxBlocks);
    }

    /**
     * The decode kernel's walk (4 warps x 16 keys per tile, warp merge, split-KV plan and combine) against float64, one
     * split and many, pages of 16, 5 and 1 (the page-prefetch cap forces splits), P unrounded (2e-6, 1e-5) and rounded
     * (bf16(2e-6 + slack, 1e-5) after rounding the output).
     */
    @Test
    void decodeWalkAndSplitCombineMatchFloat64() {
        SplittableRandom r = new SplittableRandom(15);
        boolean sawOne = false, sawMany = false;
        // {hq, hkv, d, bs, sms, contexts...}
        int[][] cases = {{8, 2, 64, 16, 1, 1, 13, 64, 65, 200, 700}, {8, 2, 64, 16, 132, 1, 13, 64, 65, 200, 700},
                {4, 1, 128, 5, 132, 3, 130}, {2, 2, 8, 1, 1, 1500, 1}, {32, 8, 16, 16, 132, 33, 1001}};
        for (int[] c : cases)
            for (int round = 0; round <= 1; round++) {
                int hq = c[0], hkv = c[1], d = c[2], bs = c[3], sms = c[4];
                int[] ctx = Arrays.copyOfRange(c, 5, c.length);
                int b = ctx.length;
                Paged p = paged(r, ctx, bs, 3);
                int rows = p.numBlocks() * bs * hkv * d;
                double[] kc = Conformance.randn(r, rows, 1), vc = Conformance.randn(r, rows, 1), q = Conformance.randn(r, b * hq * d, 1);
                if (round == 1) {
                    kc = Conformance.roundBf16(kc);
                    vc = Conformance.roundBf16(vc);
                    q = Conformance.roundBf16(q);
                }
                double scale = 1 / Math.sqrt(d);
                float[] out = new float[b * hq * d];
                Arrays.fill(out, Float.NaN);
                int splits = CudaNative.g4_host_decode_tiled(f32(q), f32(kc), f32(vc), p.tables(), ctx, b, hq, hkv, d, p.numBlocks(),
                        bs, p.maxBlocks(), (float) scale, sms, round, out, new int[4]);
                assertTrue(splits >= 1, "splits " + splits);
                int[] plan = new int[2];
                CudaNative.g4_host_decode_plan(b, hkv, p.maxBlocks() * bs, bs, sms, plan);
                assertEquals(plan[1], splits);
                assertTrue(plan[0] % 64 == 0 && (long) plan[0] * plan[1] >= (long) p.maxBlocks() * bs
                        && plan[0] / bs + 1 <= 512, "plan " + Arrays.toString(plan));
                sawOne |= splits == 1;
                sawMany |= splits > 1;
                double[] want = decodeRef(q, kc, vc, p.tables(), ctx, b, hq, hkv, d, bs, p.maxBlocks(), scale, false);
                String what = "decode " + Arrays.toString(c) + " splits " + splits + " roundP " + round;
                if (round == 0) Conformance.assertClose(what, want, out, 2e-6, 1e-5);
                else {
                    double[] a = decodeRef(q, kc, vc, p.tables(), ctx, b, hq, hkv, d, bs, p.maxBlocks(), scale, true);
                    double[] atol = new double[a.length];
                    for (int i = 0; i < a.length; i++) atol[i] = 2e-6 + AttentionBounds.U * AttentionBounds.MARGIN * a[i];
                    for (int i = 0; i < out.length; i++) out[i] = Bf16.round(out[i]);
                    assertClosePerElement(what, want, out, atol, 1e-5, true);
                }
            }
        assertTrue(sawOne && sawMany, "both one split and several were exercised");
    }

    /** Bad context lengths and block-table entries: the CPU's message, that sequence unwritten, the others written. */
    @Test
    void decodeChecksReportWhatTheCpuSaysAndSkipOnlyThatSequence() {
        SplittableRandom r = new SplittableRandom(16);
        int hq = 4, hkv = 2, d = 8, bs = 4;
        int[] ctx = {5, 7, 3};
        Paged p = paged(r, ctx, bs, 2);
        int b = ctx.length, maxBlocks = p.maxBlocks(), rows = p.numBlocks() * bs * hkv * d;
        float[] kc = f32(Conformance.randn(r, rows, 1)), vc = f32(Conformance.randn(r, rows, 1)), q = f32(Conformance.randn(r, b * hq * d, 1));
        record Bad(int[] ctx, int[] tables, int seq) {}
        int[] t1 = p.tables().clone();
        t1[maxBlocks + 1] = p.numBlocks(); // sequence 1, entry 1
        int[] t2 = p.tables().clone();
        t2[2 * maxBlocks] = -3;           // sequence 2, entry 0
        Bad[] bads = {new Bad(new int[] {5, 0, 3}, p.tables(), 1), new Bad(new int[] {5, 7, maxBlocks * bs + 1}, p.tables(), 2),
                new Bad(ctx, t1, 1), new Bad(ctx, t2, 2)};
        for (Bad bad : bads) {
            String cpuMsg;
            try (Tensor o = cpu.empty(DType.FP32, b, hq, d); Tensor tq = cpu.upload(q, b, hq, d);
                 Tensor tk = cpu.upload(kc, p.numBlocks(), bs, hkv, d); Tensor tv = cpu.upload(vc, p.numBlocks(), bs, hkv, d);
                 Tensor tt = cpu.upload(bad.tables(), b, maxBlocks); Tensor tc = cpu.upload(bad.ctx(), b)) {
                cpuMsg = assertThrows(IllegalArgumentException.class, () -> cpu.decodeAttention(o, tq, tk, tv, tt, tc, 0.3f)).getMessage();
            }
            float[] out = new float[b * hq * d];
            Arrays.fill(out, Float.NaN);
            int[] rep = new int[4];
            assertEquals(0, CudaNative.g4_host_decode_tiled(q, kc, vc, bad.tables(), bad.ctx(), b, hq, hkv, d, p.numBlocks(), bs,
                    maxBlocks, 0.3f, 1, 0, out, rep));
            rep[0] |= Ops.ALL.indexOf(Ops.DECODE_ATTENTION) + 1;
            String msg = CudaBackend.attentionFlagMessage(rep);
            String head = msg.substring(0, msg.indexOf(" (found by the kernel"));
            assertTrue(cpuMsg.startsWith(head), "kernel: " + msg + "\ncpu:    " + cpuMsg);
            for (int s = 0; s < b; s++)
                for (int i = s * hq * d; i < (s + 1) * hq * d; i++)
                    assertEquals(s == bad.seq(), Float.isNaN(out[i]), "sequence " + s + " element " + i + " (" + msg + ")");
        }
    }
}
