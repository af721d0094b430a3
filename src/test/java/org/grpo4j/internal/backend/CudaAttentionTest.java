package org.grpo4j.internal.backend;

import static org.junit.jupiter.api.Assertions.*;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import org.grpo4j.bindings.CudaNative;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * What only the CUDA attention kernels have (issue 12): the deterministic backward is bitwise repeatable and the fast
 * (atomic dQ) mode agrees with it; bad cuSeqlens, context lengths and block tables are reported through the device flag
 * with the CPU backend's words and nothing (or only that sequence) is left unwritten; misaligned views take the generic
 * path. Needs a GPU (tag gpu). The numeric contract is checked by AttentionConformanceTest's Cuda class.
 */
@Tag("gpu")
class CudaAttentionTest {
    static CudaBackend cuda() { return TestBackends.cuda(); }

    static short[] bf16(SplittableRandom r, int n) {
        short[] a = new short[n];
        for (int i = 0; i < n; i++) a[i] = Bf16.fromFloat((float) r.nextGaussian());
        return a;
    }

    static boolean bitwiseEqual(short[] a, short[] b) { return Arrays.equals(a, b); }

    /** One forward + backward in bf16 on the given layout; returns {out, dq, dk, dv} bits and lse. */
    static Object[] run(CudaBackend be, int[] cu, int hq, int hkv, int d, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        int n = cu[cu.length - 1];
        float scale = (float) (1 / Math.sqrt(d));
        try (Tensor q = be.uploadBf16(bf16(r, n * hq * d), n, hq, d); Tensor k = be.uploadBf16(bf16(r, n * hkv * d), n, hkv, d);
             Tensor v = be.uploadBf16(bf16(r, n * hkv * d), n, hkv, d); Tensor dy = be.uploadBf16(bf16(r, n * hq * d), n, hq, d);
             Tensor tcu = be.upload(cu, cu.length); Tensor out = be.empty(DType.BF16, n, hq, d); Tensor lse = be.empty(DType.FP32, n, hq);
             Tensor dq = be.empty(DType.BF16, n, hq, d); Tensor dk = be.empty(DType.BF16, n, hkv, d); Tensor dv = be.empty(DType.BF16, n, hkv, d)) {
            be.attention(out, lse, q, k, v, tcu, scale);
            be.attentionBackward(dq, dk, dv, dy, q, k, v, out, lse, tcu, scale);
            return new Object[] {out.toBf16Bits(), dq.toBf16Bits(), dk.toBf16Bits(), dv.toBf16Bits(), lse.toFloats()};
        }
    }

    /** Every element of y within 2^-6 of x's largest magnitude (plus 1e-4) of x's: a few bf16 ulps of the value scale. */
    static void assertNearBf16(short[] x, short[] y, String what) {
        double scaleOf = 0;
        for (short v : x) scaleOf = Math.max(scaleOf, Math.abs(Bf16.toFloat(v)));
        for (int j = 0; j < x.length; j++)
            assertEquals(Bf16.toFloat(x[j]), Bf16.toFloat(y[j]), 0x1p-6 * scaleOf + 1e-4, what + ", element " + j);
    }

    /**
     * assertNearBf16's test as a report, for a check that should say everything wrong at once: null when every element
     * of y ([tokens, heads, d]) is within the tolerance of x's; else how many are not, the first (token, head, column)
     * and the worst, which tell a misread layout (a column block, a row group, a whole head) from a rounding.
     */
    static String nearBf16Report(short[] x, short[] y, int heads, int d) {
        double scaleOf = 0;
        for (short v : x) scaleOf = Math.max(scaleOf, Math.abs(Bf16.toFloat(v)));
        double tol = 0x1p-6 * scaleOf + 1e-4, worst = 0;
        int bad = 0, first = -1, at = -1;
        for (int j = 0; j < x.length; j++) {
            double e = Math.abs((double) Bf16.toFloat(x[j]) - Bf16.toFloat(y[j]));
            if (!(e <= tol)) {
                bad++;
                if (first < 0) first = j;
                if (!(e <= worst)) {
                    worst = e;
                    at = j;
                }
            }
        }
        if (bad == 0) return null;
        return String.format("%d of %d elements off by more than %.3g: the first at %s (%g, want %g), the worst at %s (%g, want %g)",
                bad, x.length, tol, where(first, heads, d), Bf16.toFloat(y[first]), Bf16.toFloat(x[first]), where(at, heads, d),
                Bf16.toFloat(y[at]), Bf16.toFloat(x[at]));
    }

    private static String where(int j, int heads, int d) {
        return "token " + j / (heads * d) + " head " + j / d % heads + " column " + j % d;
    }

    @Test
    void deterministicBackwardIsBitwiseRepeatableAndTheFastModeAgrees() {
        CudaBackend be = cuda();
        int[] cu = AttentionConformanceTest.Suite.cu(1, 33, 200, 0, 1001, 64);
        CudaBackend.AttentionDq was = be.attentionDq();
        try {
            for (int[] h : new int[][] {{32, 8, 128}, {8, 2, 64}}) {
                be.setDeterministicAttention(true);
                Object[] a = run(be, cu, h[0], h[1], h[2], 5), b = run(be, cu, h[0], h[1], h[2], 5);
                String[] names = {"out", "dq", "dk", "dv"};
                for (int i = 0; i < 4; i++)
                    assertTrue(bitwiseEqual((short[]) a[i], (short[]) b[i]), names[i] + " repeats bitwise " + Arrays.toString(h));
                assertArrayEquals((float[]) a[4], (float[]) b[4], "lse repeats bitwise");
                be.setDeterministicAttention(false);
                Object[] f = run(be, cu, h[0], h[1], h[2], 5);
                for (int i = 1; i < 4; i++) // same math, dq summed in another order: within a few bf16 ulps of the value scale
                    assertNearBf16((short[]) a[i], (short[]) f[i], names[i] + " fast vs deterministic, " + Arrays.toString(h));
            }
        } finally {
            be.setAttentionDq(was);
        }
    }

    /**
     * The backward's kernel families (wide, 64-row, the default mix) at both fast head dims: the same bits in
     * deterministic mode; in fast mode (atomics) each within a few bf16 ulps of the deterministic result.
     */
    @Test
    void everyBackwardKernelChoiceGivesTheSameBits() {
        CudaBackend be = cuda();
        int[] cu = {0, 130, 131, 331};
        CudaBackend.AttentionBackwardKernels was = be.attentionBackwardKernels();
        CudaBackend.AttentionDq wasDet = be.attentionDq();
        String[] names = {"out", "dq", "dk", "dv"};
        try {
            for (int[] h : new int[][] {{32, 8, 128}, {8, 2, 64}}) {
                Object[] first = null;
                for (CudaBackend.AttentionBackwardKernels k : CudaBackend.AttentionBackwardKernels.values()) {
                    be.setAttentionBackwardKernels(k);
                    be.setDeterministicAttention(true);
                    Object[] o = run(be, cu, h[0], h[1], h[2], 9);
                    if (first == null) first = o;
                    for (int i = 0; i < 4; i++)
                        assertTrue(bitwiseEqual((short[]) first[i], (short[]) o[i]), names[i] + " " + k + " " + Arrays.toString(h));
                    be.setDeterministicAttention(false);
                    Object[] f = run(be, cu, h[0], h[1], h[2], 9);
                    for (int i = 1; i < 4; i++)
                        assertNearBf16((short[]) o[i], (short[]) f[i], names[i] + " fast vs deterministic, " + k + " " + Arrays.toString(h));
                }
            }
        } finally {
            be.setAttentionBackwardKernels(was);
            be.setAttentionDq(wasDet);
        }
    }

    /**
     * Fixed-point dQ (AttentionDq.FIXED), in every kernel family at both fast head dims: dq, dk and dv bitwise the same
     * run to run (its integer sums do not depend on the atomics' order); dk and dv the PASS mode's bits (the same dK/dV
     * kernel arithmetic); dq within a few bf16 ulps of PASS's (each element a sum rounded once, PASS's an fp32 sum).
     */
    @Test
    void fixedPointDqRepeatsBitwiseAndAgreesWithThePass() {
        CudaBackend be = cuda();
        int[] cu = AttentionConformanceTest.Suite.cu(1, 33, 200, 0, 131, 64);
        CudaBackend.AttentionBackwardKernels was = be.attentionBackwardKernels();
        CudaBackend.AttentionDq wasDq = be.attentionDq();
        String[] names = {"out", "dq", "dk", "dv"};
        try {
            for (int[] h : new int[][] {{32, 8, 128}, {8, 2, 64}})
                for (CudaBackend.AttentionBackwardKernels k : CudaBackend.AttentionBackwardKernels.values()) {
                    be.setAttentionBackwardKernels(k);
                    be.setAttentionDq(CudaBackend.AttentionDq.PASS);
                    Object[] pass = run(be, cu, h[0], h[1], h[2], 13);
                    be.setAttentionDq(CudaBackend.AttentionDq.FIXED);
                    Object[] a = run(be, cu, h[0], h[1], h[2], 13), b = run(be, cu, h[0], h[1], h[2], 13);
                    String where = k + " " + Arrays.toString(h);
                    for (int i = 0; i < 4; i++)
                        assertTrue(bitwiseEqual((short[]) a[i], (short[]) b[i]), names[i] + " repeats bitwise, " + where);
                    for (int i : new int[] {0, 2, 3})
                        assertTrue(bitwiseEqual((short[]) pass[i], (short[]) a[i]), names[i] + " as in PASS mode, " + where);
                    assertNearBf16((short[]) pass[1], (short[]) a[1], "dq fixed vs pass, " + where);
                }
        } finally {
            be.setAttentionBackwardKernels(was);
            be.setAttentionDq(wasDq);
        }
    }

    /**
     * The Hopper kernels (setWgmmaAttention: the wgmma forward, dK/dV and dQ kernels) at both fast head dims, on lengths
     * around their 64-row warpgroups and 128-row tiles, in every dQ mode: bitwise repeatable (out, lse, dk, dv in every
     * mode; dq in the deterministic ones, PASS and FIXED); out, dq, dk, dv within a few bf16 ulps of the mma.sync
     * kernels' results in the same mode (the same rounded operands, fp32 sums in another order) and lse within fp32
     * rounding; the forward's out not the mma.sync forward's bits (128-key tiles rescale at other points: the wgmma
     * kernel ran; that the backward ones ran, the emulator's case fwd_bwd_wgmma_sm90a counts). Where the device is not
     * Hopper the setting changes nothing: the mma.sync kernels' bits.
     */
    @Test
    void theHopperKernelsAgreeWithTheMmaKernels() {
        CudaBackend be = cuda();
        int[] cu = AttentionConformanceTest.Suite.cu(1, 65, 127, 129, 0, 200);
        boolean was = be.wgmmaAttention();
        CudaBackend.AttentionDq wasDq = be.attentionDq();
        String[] names = {"out", "dq", "dk", "dv"};
        // every comparison of every mode and head dim runs, and the failures are reported together: on the first GPU
        // that runs these kernels, one run should say which kernel, mode and layout is wrong, not only the first
        List<String> fails = new ArrayList<>();
        try {
            for (int[] h : new int[][] {{32, 8, 128}, {8, 2, 64}})
                for (CudaBackend.AttentionDq m : CudaBackend.AttentionDq.values()) {
                    be.setAttentionDq(m);
                    be.setWgmmaAttention(false);
                    Object[] mma = run(be, cu, h[0], h[1], h[2], 17);
                    be.setWgmmaAttention(true);
                    Object[] a = run(be, cu, h[0], h[1], h[2], 17), b = run(be, cu, h[0], h[1], h[2], 17);
                    boolean hopper = be.hasWgmmaAttention();
                    String where = m + " " + Arrays.toString(h) + (hopper ? " (wgmma)" : " (not Hopper: mma.sync)");
                    int[] heads = {h[0], h[0], h[1], h[1]};
                    for (int i = 0; i < 4; i++) {
                        if (i == 1 && !m.deterministic()) continue;  // fp32 atomics: dq's last bits vary
                        if (!bitwiseEqual((short[]) a[i], (short[]) b[i])) fails.add(names[i] + " does not repeat bitwise, " + where);
                        if (!hopper && !bitwiseEqual((short[]) mma[i], (short[]) a[i]))
                            fails.add(names[i] + " is not mma.sync's, " + where);
                    }
                    if (!Arrays.equals((float[]) a[4], (float[]) b[4])) fails.add("lse does not repeat bitwise, " + where);
                    if (!hopper) {
                        if (!Arrays.equals((float[]) mma[4], (float[]) a[4])) fails.add("lse is not mma.sync's, " + where);
                        String r = m.deterministic() ? null : nearBf16Report((short[]) mma[1], (short[]) a[1], h[0], h[2]);
                        if (r != null) fails.add("dq (atomics) vs mma.sync, " + where + ": " + r);
                        continue;
                    }
                    if (bitwiseEqual((short[]) mma[0], (short[]) a[0])) fails.add("out is mma.sync's, not the wgmma forward's, " + where);
                    for (int i = 0; i < 4; i++) {
                        String r = nearBf16Report((short[]) mma[i], (short[]) a[i], heads[i], h[2]);
                        if (r != null) fails.add(names[i] + " wgmma vs mma.sync, " + where + ": " + r);
                    }
                    float[] l0 = (float[]) mma[4], l1 = (float[]) a[4];
                    int bad = 0, first = -1;
                    for (int j = 0; j < l0.length; j++)
                        if (!(Math.abs(l0[j] - l1[j]) <= 1e-5 + 1e-5 * Math.abs(l0[j])) && bad++ == 0) first = j;
                    if (bad > 0)
                        fails.add("lse wgmma vs mma.sync, " + where + ": " + bad + " of " + l0.length + " off, the first at token "
                                + first / h[0] + " head " + first % h[0] + " (" + l1[first] + ", want " + l0[first] + ")");
                }
        } finally {
            be.setWgmmaAttention(was);
            be.setAttentionDq(wasDq);
        }
        assertTrue(fails.isEmpty(), fails.size() + " comparisons failed:\n" + String.join("\n", fails));
    }

    /** Every bad cuSeqlens: the CPU's message at the next synchronize, and out / lse / dq / dk / dv untouched. */
    @Test
    void badCuSeqlensIsReportedAndNothingIsWritten() {
        CudaBackend be = cuda();
        int n = 70, hq = 4, hkv = 2;
        int[][] bad = {{1, 70}, {0, 69}, {0, 71}, {0, 40, 30, 70}, {0, 71, 70}};
        for (int d : new int[] {64, 96})
            for (DType dt : new DType[] {DType.BF16, DType.FP32})
                for (int[] c : bad) {
                    String cpuMsg;
                    try (Tensor t = TestBackends.cpu().upload(c, c.length)) {
                        cpuMsg = assertThrows(IllegalArgumentException.class, () -> CpuBackend.sequenceOf(Ops.ATTENTION, t, n)).getMessage();
                    }
                    try (Tensor q = be.zeros(dt, n, hq, d); Tensor k = be.zeros(dt, n, hkv, d); Tensor v = be.zeros(dt, n, hkv, d);
                         Tensor out = be.empty(dt, n, hq, d); Tensor lse = be.empty(DType.FP32, n, hq); Tensor tcu = be.upload(c, c.length);
                         Tensor dq = be.empty(dt, n, hq, d); Tensor dk = be.empty(dt, n, hkv, d); Tensor dv = be.empty(dt, n, hkv, d)) {
                        for (Tensor t : new Tensor[] {out, lse, dq, dk, dv}) be.fill(t, 7);
                        be.attention(out, lse, q, k, v, tcu, 0.3f);
                        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, be::synchronize);
                        assertEquals(cpuMsg + " (found by the kernel; nothing was written)", e.getMessage());
                        be.attentionBackward(dq, dk, dv, q, q, k, v, q, lse, tcu, 0.3f);
                        e = assertThrows(IllegalArgumentException.class, be::synchronize);
                        assertEquals(cpuMsg.replace(Ops.ATTENTION + ":", Ops.ATTENTION_BACKWARD + ":")
                                + " (found by the kernel; nothing was written)", e.getMessage());
                        for (Tensor t : new Tensor[] {out, lse, dq, dk, dv})
                            for (float x : t.toFloatsWidened()) assertEquals(7f, x, t + " untouched, cu " + Arrays.toString(c));
                    }
                }
    }

    /** A bad context length or block-table entry: the CPU's message; that sequence's rows untouched, the others right. */
    @Test
    void badDecodeIndexDataSkipsOnlyThatSequence() {
        CudaBackend be = cuda();
        CpuBackend cpu = TestBackends.cpu();
        SplittableRandom r = new SplittableRandom(9);
        int hq = 8, hkv = 2, bs = 16;
        int[] ctx = {40, 300, 17};
        for (int d : new int[] {128, 96})
            for (DType dt : new DType[] {DType.BF16, DType.FP32}) {
                AttentionDeviceMathTest.Paged p = AttentionDeviceMathTest.paged(r, ctx, bs, 2);
                int b = ctx.length, mb = p.maxBlocks(), rows = p.numBlocks() * bs * hkv * d;
                float[] kc = Conformance.f32(Conformance.randnBf16(r, rows, 1)), vc = Conformance.f32(Conformance.randnBf16(r, rows, 1)),
                        q = Conformance.f32(Conformance.randnBf16(r, b * hq * d, 1));
                int[] good = p.tables().clone();
                for (int i = 0; i < good.length; i++) if (good[i] < 0) good[i] = 0;
                int[] badTable = good.clone();
                badTable[mb + 5] = -2;
                int[][][] cases = {{ctx, badTable}, {{40, mb * bs + 1, 17}, good}, {{40, 0, 17}, good}};
                for (int[][] cs : cases) {
                    int[] cx = cs[0], tb = cs[1];
                    String cpuMsg;
                    float[] want;
                    try (Tensor o = cpu.empty(dt, b, hq, d); Tensor tq = up(cpu, q, dt, b, hq, d);
                         Tensor tk = up(cpu, kc, dt, p.numBlocks(), bs, hkv, d); Tensor tv = up(cpu, vc, dt, p.numBlocks(), bs, hkv, d);
                         Tensor tt = cpu.upload(tb, b, mb); Tensor tc = cpu.upload(cx, b); Tensor tg = cpu.upload(good, b, mb);
                         Tensor tcg = cpu.upload(ctx, b)) {
                        cpuMsg = assertThrows(IllegalArgumentException.class, () -> cpu.decodeAttention(o, tq, tk, tv, tt, tc, 0.2f)).getMessage();
                        cpu.decodeAttention(o, tq, tk, tv, tg, tcg, 0.2f);
                        want = o.toFloatsWidened();
                    }
                    try (Tensor o = be.empty(dt, b, hq, d); Tensor tq = up(be, q, dt, b, hq, d);
                         Tensor tk = up(be, kc, dt, p.numBlocks(), bs, hkv, d); Tensor tv = up(be, vc, dt, p.numBlocks(), bs, hkv, d);
                         Tensor tt = be.upload(tb, b, mb); Tensor tc = be.upload(cx, b)) {
                        be.fill(o, 7);
                        be.decodeAttention(o, tq, tk, tv, tt, tc, 0.2f);
                        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, be::synchronize);
                        String head = e.getMessage().substring(0, e.getMessage().indexOf(" (found by the kernel"));
                        assertTrue(cpuMsg.startsWith(head), "cuda: " + e.getMessage() + "\ncpu:  " + cpuMsg);
                        float[] got = o.toFloatsWidened();
                        for (int s = 0; s < b; s++)
                            for (int i = s * hq * d; i < (s + 1) * hq * d; i++) {
                                if (s == 1) assertEquals(7f, got[i], "sequence 1 untouched: " + e.getMessage());
                                else assertEquals(want[i], got[i], 0.02 * (1 + Math.abs(want[i])), "sequence " + s + " written, element " + i);
                            }
                    }
                }
            }
    }

    /**
     * Bad prefix group rows: the CPU's words (the row and field named), the group's sequences untouched and the others
     * right, on both decode paths (bf16 hd 128: the prefix kernel; hd 96: the generic path's mark kernel).
     */
    @Test
    void badPrefixGroupsSkipOnlyTheirSequences() {
        CudaBackend be = cuda();
        CpuBackend cpu = TestBackends.cpu();
        SplittableRandom r = new SplittableRandom(10);
        int hq = 8, hkv = 2, bs = 16;
        int[] ctx = {40, 300, 17, 64};
        // {rows (first, count, shared)...}, then the sequences left unwritten
        int[][][] cases = {{{1, 2, 20}, {1, 2}}, {{2, 3, 16}, {2, 3}}, {{0, 1, 16, 3, -2, 0}, {}}};
        for (int d : new int[] {128, 96}) {
            AttentionDeviceMathTest.Paged p = AttentionDeviceMathTest.paged(r, ctx, bs, 2);
            int b = ctx.length, mb = p.maxBlocks(), rows = p.numBlocks() * bs * hkv * d;
            float[] kc = Conformance.f32(Conformance.randnBf16(r, rows, 1)), vc = Conformance.f32(Conformance.randnBf16(r, rows, 1)),
                    q = Conformance.f32(Conformance.randnBf16(r, b * hq * d, 1));
            int[] tables = p.tables().clone();
            for (int i = 0; i < tables.length; i++) if (tables[i] < 0) tables[i] = 0;
            for (int[][] cs : cases) {
                int[] groups = cs[0];
                String cpuMsg;
                float[] want;
                try (Tensor o = cpu.empty(DType.BF16, b, hq, d); Tensor tq = up(cpu, q, DType.BF16, b, hq, d);
                     Tensor tk = up(cpu, kc, DType.BF16, p.numBlocks(), bs, hkv, d); Tensor tv = up(cpu, vc, DType.BF16, p.numBlocks(), bs, hkv, d);
                     Tensor tt = cpu.upload(tables, b, mb); Tensor tc = cpu.upload(ctx, b); Tensor tg = cpu.upload(groups, groups.length / 3, 3)) {
                    cpuMsg = assertThrows(IllegalArgumentException.class, () -> cpu.decodeAttention(o, tq, tk, tv, tt, tc, tg, 0.2f)).getMessage();
                    cpu.decodeAttention(o, tq, tk, tv, tt, tc, 0.2f);
                    want = o.toFloatsWidened();
                }
                try (Tensor o = be.empty(DType.BF16, b, hq, d); Tensor tq = up(be, q, DType.BF16, b, hq, d);
                     Tensor tk = up(be, kc, DType.BF16, p.numBlocks(), bs, hkv, d); Tensor tv = up(be, vc, DType.BF16, p.numBlocks(), bs, hkv, d);
                     Tensor tt = be.upload(tables, b, mb); Tensor tc = be.upload(ctx, b); Tensor tg = be.upload(groups, groups.length / 3, 3)) {
                    be.fill(o, 7);
                    be.decodeAttention(o, tq, tk, tv, tt, tc, tg, 0.2f);
                    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, be::synchronize);
                    String head = e.getMessage().substring(0, e.getMessage().indexOf(" (found by the kernel"));
                    assertTrue(cpuMsg.startsWith(head), "cuda: " + e.getMessage() + "\ncpu:  " + cpuMsg);
                    float[] got = o.toFloatsWidened();
                    for (int s = 0; s < b; s++) {
                        boolean skipped = false;
                        for (int u : cs[1]) skipped |= u == s;
                        for (int i = s * hq * d; i < (s + 1) * hq * d; i++) {
                            if (skipped) assertEquals(7f, got[i], "sequence " + s + " untouched: " + e.getMessage());
                            else assertEquals(want[i], got[i], 0.02 * (1 + Math.abs(want[i])), "sequence " + s + " written, element " + i);
                        }
                    }
                }
            }
        }
    }

    static Tensor up(Backend be, float[] a, DType dt, int... shape) {
        if (dt == DType.FP32) return be.upload(a, shape);
        short[] s = new short[a.length];
        for (int i = 0; i < a.length; i++) s[i] = Bf16.fromFloat(a[i]);
        return be.uploadBf16(s, shape);
    }

    /** A bf16 view 2 bytes off 16-byte alignment takes the generic path and still matches the aligned tensor-core run. */
    @Test
    void misalignedViewsTakeTheGenericPathAndAgree() {
        CudaBackend be = cuda();
        SplittableRandom r = new SplittableRandom(10);
        int hq = 4, hkv = 2, d = 64;
        int[] cu = AttentionConformanceTest.Suite.cu(33, 70);
        int n = cu[cu.length - 1];
        short[] qb = bf16(r, n * hq * d), kb = bf16(r, n * hkv * d), vb = bf16(r, n * hkv * d);
        float[] aligned, shifted;
        try (Tensor q = be.uploadBf16(qb, n, hq, d); Tensor k = be.uploadBf16(kb, n, hkv, d); Tensor v = be.uploadBf16(vb, n, hkv, d);
             Tensor tcu = be.upload(cu, cu.length); Tensor out = be.empty(DType.BF16, n, hq, d); Tensor lse = be.empty(DType.FP32, n, hq)) {
            be.attention(out, lse, q, k, v, tcu, 0.125f);
            aligned = out.toFloatsWidened();
        }
        short[] qs = new short[qb.length + 1];
        System.arraycopy(qb, 0, qs, 1, qb.length);
        try (Tensor qbig = be.uploadBf16(qs, qs.length); Tensor q = qbig.view(1, n, hq, d); Tensor k = be.uploadBf16(kb, n, hkv, d);
             Tensor v = be.uploadBf16(vb, n, hkv, d); Tensor tcu = be.upload(cu, cu.length); Tensor out = be.empty(DType.BF16, n, hq, d);
             Tensor lse = be.empty(DType.FP32, n, hq)) {
            be.attention(out, lse, q, k, v, tcu, 0.125f);
            shifted = out.toFloatsWidened();
        }
        for (int i = 0; i < aligned.length; i++)
            assertEquals(aligned[i], shifted[i], 0x1p-6 * (1 + Math.abs(aligned[i])), "element " + i);
    }

    /**
     * Head dims past what the generic kernels hold in 48 KiB of shared memory (CudaBackend.MAX_GENERIC_HEAD_DIM for
     * attention and decodeAttention, MAX_GENERIC_HEAD_DIM_BACKWARD for attentionBackward) are refused before any kernel,
     * naming the op and the limit, every output untouched. One element above the backward's limit its launcher itself
     * writes dq (the dQ kernel fits) and then fails in the dK/dV kernel: what the check spares a caller. At the limits
     * the ops run and agree with the CPU.
     */
    @Test
    void headDimsPastTheGenericKernelsSharedMemoryAreRefusedBeforeAnyKernel() {
        CudaBackend be = cuda();
        CpuBackend cpu = TestBackends.cpu();
        int fwd = CudaBackend.MAX_GENERIC_HEAD_DIM, bwd = CudaBackend.MAX_GENERIC_HEAD_DIM_BACKWARD;
        SplittableRandom r = new SplittableRandom(12);
        int[] cu = {0, 1, 3};
        // at the limits (the backward's at its limit, the forward's at its own): as the CPU computes them
        for (int d : new int[] {bwd, fwd}) {
            boolean backward = d <= bwd;
            float[][] in = {randn(r, 3 * 2 * d), randn(r, 3 * d), randn(r, 3 * d), randn(r, 3 * 2 * d)}; // q, k, v, dOut
            float[][] want = attention(cpu, in, cu, d, backward), got = attention(be, in, cu, d, backward);
            String[] names = {"out", "lse", "dq", "dk", "dv"};
            for (int i = 0; i < want.length; i++)
                Conformance.assertCloseToCpu("head dim " + d + " " + names[i], want[i], got[i], false, i < 2 ? 2e-6 : 2e-5, i < 2 ? 1e-5 : 2e-4);
        }
        // one above: refused, nothing written
        int d = bwd + 1;
        try (Tensor q = be.zeros(DType.FP32, 3, 2, d); Tensor kv = be.zeros(DType.FP32, 3, 1, d); Tensor out = be.zeros(DType.FP32, 3, 2, d);
             Tensor lse = be.zeros(DType.FP32, 3, 2); Tensor tcu = be.upload(cu, 3); Tensor dq = be.empty(DType.FP32, 3, 2, d);
             Tensor dk = be.empty(DType.FP32, 3, 1, d); Tensor dv = be.empty(DType.FP32, 3, 1, d)) {
            for (Tensor t : new Tensor[] {dq, dk, dv}) be.fill(t, 7);
            Conformance.assertBadCall(Ops.ATTENTION_BACKWARD, () -> be.attentionBackward(dq, dk, dv, q, q, kv, kv, out, lse, tcu, 0.1f),
                    "head dim " + d + " exceeds " + bwd);
            for (Tensor t : new Tensor[] {dq, dk, dv}) for (float x : t.toFloats()) assertEquals(7f, x, "untouched");
            // the launcher on its own, past the Java check: dq written, then cudaErrorInvalidValue from the dK/dV kernel
            long[] bytes = new long[1];
            assertEquals(0, CudaNative.g4_attention_workspace(3, 2, 2, d, 1, 1, bytes));
            try (Tensor ws = be.empty(DType.INT32, (int) (bytes[0] / 4 + 1)); Tensor flag = be.zeros(DType.INT32, 4)) {
                int e = CudaNative.g4_attention_backward(CudaBackend.dt(q), CudaBackend.addr(dq), CudaBackend.addr(dk), CudaBackend.addr(dv),
                        CudaBackend.addr(q), CudaBackend.addr(q), CudaBackend.addr(kv), CudaBackend.addr(kv), CudaBackend.addr(out),
                        CudaBackend.addr(lse), CudaBackend.addr(tcu), 3, 2, 2, 1, d, 0.1f, 1, CudaBackend.addr(ws), bytes[0],
                        CudaBackend.addr(flag), Ops.ALL.indexOf(Ops.ATTENTION_BACKWARD) + 1, be.stream());
                assertEquals(1, e, "cudaErrorInvalidValue: the dK/dV kernel cannot take head dim " + d);
                be.synchronize();
                assertNotEquals(7f, dq.toFloats()[0], "the launcher wrote dq before it failed");
            }
        }
        int d2 = fwd + 1;
        try (Tensor q = be.zeros(DType.FP32, 3, 2, d2); Tensor kv = be.zeros(DType.FP32, 3, 1, d2); Tensor out = be.empty(DType.FP32, 3, 2, d2);
             Tensor lse = be.empty(DType.FP32, 3, 2); Tensor tcu = be.upload(cu, 3); Tensor cache = be.zeros(DType.FP32, 1, 4, 1, d2);
             Tensor q1 = be.zeros(DType.FP32, 1, 2, d2); Tensor out1 = be.empty(DType.FP32, 1, 2, d2);
             Tensor tables = be.upload(new int[] {0}, 1, 1); Tensor lens = be.upload(new int[] {3}, 1)) {
            for (Tensor t : new Tensor[] {out, lse, out1}) be.fill(t, 7);
            Conformance.assertBadCall(Ops.ATTENTION, () -> be.attention(out, lse, q, kv, kv, tcu, 0.1f), "head dim " + d2 + " exceeds " + fwd);
            Conformance.assertBadCall(Ops.DECODE_ATTENTION, () -> be.decodeAttention(out1, q1, cache, cache, tables, lens, 0.1f),
                    "head dim " + d2 + " exceeds " + fwd);
            for (Tensor t : new Tensor[] {out, lse, out1}) for (float x : t.toFloats()) assertEquals(7f, x, "untouched");
            // the launchers on their own, past the Java check: the generic kernels cannot take it either
            long[] bytes = new long[1];
            assertEquals(0, CudaNative.g4_attention_workspace(3, 2, 2, d2, 0, 1, bytes));
            try (Tensor ws = be.empty(DType.INT32, (int) (bytes[0] / 4 + 1)); Tensor flag = be.zeros(DType.INT32, 4)) {
                assertEquals(1, CudaNative.g4_attention(CudaBackend.dt(q), CudaBackend.addr(out), CudaBackend.addr(lse), CudaBackend.addr(q),
                        CudaBackend.addr(kv), CudaBackend.addr(kv), CudaBackend.addr(tcu), 3, 2, 2, 1, d2, 0.1f, 0, CudaBackend.addr(ws), bytes[0],
                        CudaBackend.addr(flag), Ops.ALL.indexOf(Ops.ATTENTION) + 1, be.stream()), "cudaErrorInvalidValue from attention");
                assertEquals(1, CudaNative.g4_decode_attention(CudaBackend.dt(q1), CudaBackend.addr(out1), CudaBackend.addr(q1),
                        CudaBackend.addr(cache), CudaBackend.addr(cache), CudaBackend.addr(tables), CudaBackend.addr(lens), 0, 0, 1, 2, 1, d2,
                        1, 4, 1, 0.1f, 1, 0, 0, CudaBackend.addr(flag), Ops.ALL.indexOf(Ops.DECODE_ATTENTION) + 1, be.stream()),
                        "cudaErrorInvalidValue from decodeAttention");
                be.synchronize();
            }
        }
        // decode at the limit: as the CPU computes it
        float[] q1 = randn(r, 2 * fwd), kc = randn(r, 4 * fwd), vc = randn(r, 4 * fwd);
        Conformance.assertCloseToCpu("decode at head dim " + fwd, decode(cpu, q1, kc, vc, fwd), decode(be, q1, kc, vc, fwd), false, 2e-6, 1e-5);
    }

    static float[] randn(SplittableRandom r, int n) { return CudaBackendTest.randn(r, n, 1); }

    /**
     * The ops' scratch buffer (here the attention backward's) is given back by releaseScratch, as the trainer does at
     * the end of a training phase, and allocated again by the next op that needs it: the same bits as before.
     */
    @Test
    void theScratchIsGivenBackAndTakenAgain() {
        CudaBackend be = cuda();
        SplittableRandom r = new SplittableRandom(5);
        int d = 64;
        int[] cu = {0, 37, 80};
        float[][] in = {randn(r, 80 * 2 * d), randn(r, 80 * d), randn(r, 80 * d), randn(r, 80 * 2 * d)};
        float[][] first = attention(be, in, cu, d, true);
        long scratch = be.scratchBytes(), live = be.liveBytes();
        assertTrue(scratch > 0, "the backward used the scratch");
        be.releaseScratch();
        assertEquals(0, be.scratchBytes());
        assertEquals(live - scratch, be.liveBytes(), "the scratch's bytes given back");
        float[][] again = attention(be, in, cu, d, true);
        assertTrue(be.scratchBytes() > 0, "taken again");
        for (int i = 0; i < first.length; i++) assertArrayEquals(first[i], again[i], "output " + i);
    }

    /** fp32 attention of 2 query heads on 1 kv head over cu; {out, lse} and with backward {.., dq, dk, dv}. */
    static float[][] attention(Backend be, float[][] in, int[] cu, int d, boolean backward) {
        int n = cu[cu.length - 1];
        float scale = (float) (1 / Math.sqrt(d));
        try (Tensor q = be.upload(in[0], n, 2, d); Tensor k = be.upload(in[1], n, 1, d); Tensor v = be.upload(in[2], n, 1, d);
             Tensor dy = be.upload(in[3], n, 2, d); Tensor tcu = be.upload(cu, cu.length); Tensor out = be.empty(DType.FP32, n, 2, d);
             Tensor lse = be.empty(DType.FP32, n, 2); Tensor dq = be.empty(DType.FP32, n, 2, d); Tensor dk = be.empty(DType.FP32, n, 1, d);
             Tensor dv = be.empty(DType.FP32, n, 1, d)) {
            be.attention(out, lse, q, k, v, tcu, scale);
            if (!backward) return new float[][] {out.toFloats(), lse.toFloats()};
            be.attentionBackward(dq, dk, dv, dy, q, k, v, out, lse, tcu, scale);
            return new float[][] {out.toFloats(), lse.toFloats(), dq.toFloats(), dk.toFloats(), dv.toFloats()};
        }
    }

    /** fp32 decode of one sequence of 3 keys (one page of 4), 2 query heads on 1 kv head. */
    static float[] decode(Backend be, float[] q, float[] kc, float[] vc, int d) {
        try (Tensor tq = be.upload(q, 1, 2, d); Tensor k = be.upload(kc, 1, 4, 1, d); Tensor v = be.upload(vc, 1, 4, 1, d);
             Tensor tables = be.upload(new int[] {0}, 1, 1); Tensor lens = be.upload(new int[] {3}, 1); Tensor out = be.empty(DType.FP32, 1, 2, d)) {
            be.decodeAttention(out, tq, k, v, tables, lens, (float) (1 / Math.sqrt(d)));
            return out.toFloats();
        }
    }
}
