package org.grpo4j.internal.backend;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.util.SplittableRandom;
import org.grpo4j.bindings.CudaNative;
import org.junit.jupiter.api.Test;

/**
 * The fused LM head's device math on the host (cuda/lmhead.cuh through native/hostmath.cu) against the CPU backend:
 * the online log-sum-exp over vocabulary chunks in the lse kernel's exact order, the logits' gradient and its bf16
 * hi/lo split, and the GRPO per-token kernel (ratio, clip, kl1..kl4 with the clamp, loss, upstream gradient).
 *
 * <p>The CPU computes logits itself from hidden and lmHead; to give both sides the same logits the CPU gets hidden =
 * the identity (D = N) and lmHead[v][n] = z[n][v], so its logit of (n, v) is exactly z[n][v] / T'. The kernels see
 * what cuBLAS would hand them: z / T' rounded once to fp32. Tolerances are the conformance suite's CUDA-vs-CPU ones
 * (docs/ops.md). The memory plan test needs nothing native.
 */
class LmHeadDeviceMathTest {
    static final CpuBackend cpu = TestBackends.cpu();

    static void library() {
        assumeTrue(CudaRuntime.loadLibrary(), "skipped: the CUDA JNI library is not built or does not load here");
    }

    /** Random logits [n, v], some large, some strongly negative. */
    static float[] logits(SplittableRandom r, int n, int v) {
        float[] z = new float[n * v];
        for (int i = 0; i < z.length; i++) z[i] = (float) (r.nextGaussian() * (i % 7 == 0 ? 6 : 2));
        return z;
    }

    /** lmHead [v, n] with lmHead[v][t] = z[t][v]: with an identity hidden the CPU's logits are z. */
    static float[] transpose(float[] z, int n, int v) {
        float[] w = new float[v * n];
        for (int t = 0; t < n; t++) for (int j = 0; j < v; j++) w[j * n + t] = z[t * v + j];
        return w;
    }

    static float[] identity(int n) {
        float[] h = new float[n * n];
        for (int i = 0; i < n; i++) h[i * n + i] = 1f;
        return h;
    }

    /** What the kernels read: z / T' rounded once to fp32 (cuBLAS's alpha = fp32 1 / T'). */
    static float[] scaled(float[] z, float temperature) {
        float invT = (float) (1.0 / (temperature + 1e-7));
        float[] s = new float[z.length];
        for (int i = 0; i < z.length; i++) s[i] = z[i] * invT;
        return s;
    }

    static float[] cpuLogprobs(float[] z, int n, int v, int[] tgt, float temperature) {
        try (Tensor h = cpu.upload(identity(n), n, n); Tensor w = cpu.upload(transpose(z, n, v), v, n);
             Tensor t = cpu.upload(tgt, n); Tensor out = cpu.empty(DType.FP32, n)) {
            cpu.tokenLogprobs(out, h, w, t, temperature);
            return out.toFloats();
        }
    }

    @Test
    void onlineLogSumExpOverChunksMatchesTheCpu() {
        library();
        SplittableRandom r = new SplittableRandom(21);
        double worst = 0;
        for (int[] s : new int[][] {{1, 1}, {3, 2}, {5, 300}, {17, 1001}, {9, 5000}}) {
            int n = s[0], v = s[1];
            float[] z = logits(r, n, v);
            int[] tgt = r.ints(n, 0, v).toArray();
            for (float temp : new float[] {1f, 0.7f, 0f}) {
                float[] want = cpuLogprobs(z, n, v, tgt, temp);
                float[] zs = scaled(z, temp);
                double[] first = null;
                for (int chunk : new int[] {1, 7, 256, 4096, v}) {
                    double[] lse = new double[n], lp = new double[n];
                    CudaNative.g4_host_lmhead_lse(zs, n, v, chunk, tgt, lse, lp);
                    for (int t = 0; t < n; t++) {
                        double tol = 2 * (2e-5 + 1e-5 * Math.abs(want[t]));
                        worst = Math.max(worst, Math.abs(lp[t] - want[t]) / tol);
                        assertEquals(want[t], lp[t], tol, "n=" + n + " V=" + v + " T=" + temp + " chunk " + chunk + " row " + t);
                        // lse against float64 of the same fp32 logits
                        double mx = Double.NEGATIVE_INFINITY, sum = 0;
                        for (int j = 0; j < v; j++) mx = Math.max(mx, zs[t * v + j]);
                        for (int j = 0; j < v; j++) sum += Math.exp(zs[t * v + j] - mx);
                        assertEquals(mx + Math.log(sum), lse[t], 1e-6 * Math.max(1, Math.abs(mx)), "lse row " + t);
                    }
                    if (first == null) first = lp;
                    else for (int t = 0; t < n; t++) // chunking moves only roundings
                        assertEquals(first[t], lp[t], 1e-6 * Math.max(1, Math.abs(first[t])), "chunk " + chunk + " vs 1, row " + t);
                }
            }
        }
        System.out.println("lse twin vs cpu: worst |diff| / tolerance = " + worst);
    }

    @Test
    void logitGradientAndItsBf16Split() {
        library();
        SplittableRandom r = new SplittableRandom(22);
        int n = 6, v = 777;
        float[] z = scaled(logits(r, n, v), 0.9f);
        int[] tgt = r.ints(n, 0, v).toArray();
        tgt[4] = v;   // out of range: no gradient
        tgt[5] = -1;
        double[] lse = new double[n], lp = new double[n], g = new double[n];
        CudaNative.g4_host_lmhead_lse(z, n, v, 256, tgt, lse, lp);
        for (int t = 0; t < n; t++) g[t] = r.nextGaussian() * 3;
        g[3] = 0;
        float[] dz = new float[n * v];
        short[] hi = new short[n * v], lo = new short[n * v];
        CudaNative.g4_host_lmhead_dlogits(z, n, v, tgt, lse, g, dz, hi, lo);
        for (int t = 0; t < n; t++)
            for (int j = 0; j < v; j++) {
                int i = t * v + j;
                boolean valid = tgt[t] >= 0 && tgt[t] < v;
                double e = z[i] - lse[t], p = Math.exp(e);
                double want = valid ? g[t] * ((j == tgt[t] ? 1 : 0) - p) : 0;
                // exp_f32 of the fp32-rounded exponent: |dp| <= p (1.2e-7 + 6e-8 |e|); the result rounded once
                double tol = Math.abs(g[t]) * p * (2.4e-7 + 1.2e-7 * Math.abs(e)) + 6e-8 * Math.abs(want);
                assertEquals(want, dz[i], valid ? tol : 0, "dz[" + t + ", " + j + "]");
                double split = (double) Bf16.toFloat(hi[i]) + Bf16.toFloat(lo[i]);
                assertEquals(dz[i], split, 0x1p-17 * Math.abs(dz[i]), "hi + lo carries 16 bits of dz[" + t + ", " + j + "]");
            }
    }

    /**
     * The GRPO per-token kernel on the twin's float64 log-probs against the CPU's grpoLoss (every estimator, clipping
     * both ways, the KL clamp), and its upstream gradient g against the CPU: the CPU's tokenLogprobsBackward with
     * dLogprobs = g must reproduce the CPU grpoLoss's own dHidden and dLmHead.
     */
    @Test
    void grpoPerTokenMathMatchesTheCpu() {
        library();
        SplittableRandom r = new SplittableRandom(23);
        int n = 41, v = 97;
        float temp = 0.9f, epsLow = 0.2f, epsHigh = 0.28f, beta = 0.05f;
        float[] z = logits(r, n, v);
        int[] tgt = r.ints(n, 0, v).toArray();
        double[] lse = new double[n], logp = new double[n];
        CudaNative.g4_host_lmhead_lse(scaled(z, temp), n, v, 32, tgt, lse, logp);
        float[] old = new float[n], ref = new float[n], adv = new float[n], w = new float[n];
        for (int t = 0; t < n; t++) {
            double ratio;
            do ratio = 0.5 + 1.1 * r.nextDouble(); while (Math.abs(ratio - 0.8) < 0.02 || Math.abs(ratio - 1.28) < 0.02);
            old[t] = (float) (logp[t] - Math.log(ratio));
            ref[t] = (float) (logp[t] + (t % 6 == 0 ? (t % 12 == 0 ? 45 : -45) : r.nextGaussian() * 0.5)); // some beyond the +-40 clamp
            adv[t] = (float) ((t % 2 == 0 ? 1 : -1) * (0.2 + r.nextDouble()));
            w[t] = t % 5 == 4 ? 0f : 1f / n;
        }
        for (KlEstimator est : KlEstimator.values()) {
            GrpoLossParams p = new GrpoLossParams(temp, epsLow, epsHigh, beta, est);
            float[] lp = new float[n], ra = new float[n], cl = new float[n], kl = new float[n];
            double[] g = new double[n];
            float loss = CudaNative.g4_host_grpo_tokens(logp, old, ref, adv, w, tgt, v, n, epsLow, epsHigh, beta, est.ordinal(),
                    lp, ra, cl, kl, g);
            try (Tensor h = cpu.upload(identity(n), n, n); Tensor wt = cpu.upload(transpose(z, n, v), v, n);
                 Tensor tt = cpu.upload(tgt, n); Tensor tw = cpu.upload(w, n); Tensor ta = cpu.upload(adv, n);
                 Tensor to = cpu.upload(old, n); Tensor tr = cpu.upload(ref, n)) {
                GrpoLossOutputs out = new GrpoLossOutputs(cpu.empty(DType.FP32, 1), cpu.empty(DType.FP32, n), cpu.empty(DType.FP32, n),
                        cpu.empty(DType.FP32, n), cpu.empty(DType.FP32, n), cpu.empty(DType.FP32, n, n), cpu.zeros(DType.FP32, v, n));
                cpu.grpoLoss(out, h, wt, tt, tw, ta, to, tr, p);
                String what = est.label();
                Conformance.assertCloseToCpu(what + " loss", out.loss().toFloats(), new float[] {loss}, false, 1e-5, 1e-5);
                Conformance.assertCloseToCpu(what + " logprobs", out.logprobs().toFloats(), lp, false, 2e-5, 1e-4);
                Conformance.assertCloseToCpu(what + " ratio", out.ratio().toFloats(), ra, false, 2e-5, 1e-4);
                Conformance.assertCloseToCpu(what + " kl", out.kl().toFloats(), kl, false, 2e-5, 1e-4);
                assertArrayEquals(out.clipped().toFloats(), cl, what + " clipped");
                float[] g32 = new float[n];
                for (int t = 0; t < n; t++) g32[t] = (float) g[t];
                try (Tensor dl = cpu.upload(g32, n); Tensor dh = cpu.empty(DType.FP32, n, n); Tensor dw = cpu.zeros(DType.FP32, v, n)) {
                    cpu.tokenLogprobsBackward(dh, dw, dl, h, wt, tt, temp);
                    Conformance.assertCloseToCpu(what + " dHidden from the twin's g", out.dHidden().toFloats(), dh.toFloats(), false, 2e-5, 2e-4);
                    Conformance.assertCloseToCpu(what + " dLmHead from the twin's g", out.dLmHead().toFloats(), dw.toFloats(), false, 2e-5, 2e-4);
                }
                for (Tensor x : new Tensor[] {out.loss(), out.logprobs(), out.ratio(), out.clipped(), out.kl(), out.dHidden(), out.dLmHead()}) x.close();
            }
            if (est != KlEstimator.KL4) // beyond the clamp kl1..kl3 have no gradient: g is the policy term alone (kl4 keeps d ratio)
                for (int t = 0; t < n; t += 6)
                    assertEquals(cl[t] == 1f ? 0 : -w[t] * (double) adv[t] * Math.exp(logp[t] - old[t]), g[t], 1e-12,
                            est.label() + ": clamped KL carries no gradient (token " + t + ")");
        }
        // on-policy (old null): ratio exactly 1, nothing clipped, the loss and g of the CPU's on-policy grpoLoss
        {
            GrpoLossParams p = new GrpoLossParams(temp, epsLow, epsHigh, beta, KlEstimator.KL3);
            float[] lp = new float[n], ra = new float[n], cl = new float[n], kl = new float[n];
            double[] g = new double[n];
            float loss = CudaNative.g4_host_grpo_tokens(logp, null, ref, adv, w, tgt, v, n, epsLow, epsHigh, beta, 2, lp, ra, cl, kl, g);
            for (int t = 0; t < n; t++) {
                assertEquals(1f, ra[t], "on-policy ratio, token " + t);
                assertEquals(0f, cl[t], "on-policy clipped, token " + t);
            }
            try (Tensor h = cpu.upload(identity(n), n, n); Tensor wt = cpu.upload(transpose(z, n, v), v, n);
                 Tensor tt = cpu.upload(tgt, n); Tensor tw = cpu.upload(w, n); Tensor ta = cpu.upload(adv, n); Tensor tr = cpu.upload(ref, n);
                 Tensor l = cpu.empty(DType.FP32, 1); Tensor olp = cpu.empty(DType.FP32, n); Tensor ora = cpu.empty(DType.FP32, n);
                 Tensor ocl = cpu.empty(DType.FP32, n); Tensor okl = cpu.empty(DType.FP32, n); Tensor dh = cpu.empty(DType.FP32, n, n);
                 Tensor dw = cpu.zeros(DType.FP32, v, n)) {
                cpu.grpoLoss(new GrpoLossOutputs(l, olp, ora, ocl, okl, dh, dw), h, wt, tt, tw, ta, null, tr, p);
                Conformance.assertCloseToCpu("on-policy loss", l.toFloats(), new float[] {loss}, false, 1e-5, 1e-5);
                Conformance.assertCloseToCpu("on-policy kl", okl.toFloats(), kl, false, 2e-5, 1e-4);
                assertArrayEquals(ora.toFloats(), ra, "on-policy ratio: CPU and twin");
            }
        }
        // an out-of-range target: NaN outputs, no loss term, no gradient
        int[] bad = tgt.clone();
        bad[3] = v;
        float[] lp = new float[n], ra = new float[n], cl = new float[n], kl = new float[n];
        double[] g = new double[n];
        CudaNative.g4_host_grpo_tokens(logp, old, ref, adv, w, bad, v, n, epsLow, epsHigh, beta, 2, lp, ra, cl, kl, g);
        assertTrue(Float.isNaN(lp[3]) && Float.isNaN(ra[3]) && Float.isNaN(kl[3]));
        assertEquals(0, g[3]);
    }

    /**
     * The bound: at N = 8192, H = 4096, V = 128,256 the fused LM head needs at most 256 MiB beyond its inputs, on
     * either path: the chunk loops (the bf16 split, or forced) and the row path (fp32 operands, or bf16 with dz rounded
     * once), whose token blocks shrink to what fits (512 rows: 250.5 MiB of logits).
     */
    @Test
    void extraMemoryOfTheFusedLmHeadIsBounded() {
        int n = 8192, h = 4096, v = 128_256, tb = CudaBackend.LM_TOKEN_BLOCK, vc = CudaBackend.LM_VOCAB_CHUNK;
        CudaBackend.LmHeadPath auto = CudaBackend.LmHeadPath.AUTO, chunks = CudaBackend.LmHeadPath.CHUNKS;
        long bf16Backward = CudaBackend.lmHeadBytes(n, h, v, DType.BF16, true, true, auto, tb, vc);
        long fp32Backward = CudaBackend.lmHeadBytes(n, h, v, DType.FP32, true, true, chunks, tb, vc);
        long forward = CudaBackend.lmHeadBytes(n, h, v, DType.BF16, false, true, auto, tb, vc);
        long rowsBf16 = CudaBackend.lmHeadBytes(n, h, v, DType.BF16, true, false, auto, tb, vc);
        long rowsFp32 = CudaBackend.lmHeadBytes(n, h, v, DType.FP32, true, true, auto, tb, vc);
        assertTrue(bf16Backward <= 256L << 20, "bf16 backward needs " + (bf16Backward >> 20) + " MiB");
        assertTrue(fp32Backward <= bf16Backward && forward <= fp32Backward);
        assertTrue(bf16Backward < (long) n * v * 2 / 20, "far below the [N, V] bf16 logits (" + ((long) n * v * 2 >> 20) + " MiB)");
        assertEquals(512, CudaBackend.lmRowBlock(n, v, DType.BF16, false, auto, tb, vc), "the row path's block at this size");
        assertEquals(512L * v * 4 + 48L * n, rowsBf16);
        assertEquals(rowsBf16, rowsFp32);
        assertTrue(rowsBf16 <= 256L << 20, "the row path needs " + (rowsBf16 >> 20) + " MiB");
        System.out.printf("fused LM head extra memory at N=8192 H=4096 V=128256: forward %d MiB, fp32 backward (chunks) %d MiB, "
                + "bf16 backward (split, chunks) %d MiB, row path %.1f MiB%n", forward >> 20, fp32Backward >> 20, bf16Backward >> 20,
                rowsBf16 / 1048576.0);
        // the larger token block a GPU run may try (-Dgrpo4j.lmheadBlocks=4096,4096) stays inside the bound
        assertTrue(CudaBackend.lmHeadBytes(n, h, v, DType.BF16, true, true, auto, 4096, 4096) <= 256L << 20);
    }

    /**
     * Which loops run: the bf16 split always takes the chunks (hi + lo do not fit in place), as do vocabulary chunks
     * wider than the row kernels walk and CHUNKS; fp32 and the single bf16 dz take rows, the token block capped by the
     * memory bound (a multiple of 64 when capped) and by the token block setting; when the bound leaves under 64 rows
     * AUTO takes the chunks and ROWS what fits.
     */
    @Test
    void theRowPathAppliesWhereDzFitsInPlaceAndTheBlockFits() {
        CudaBackend.LmHeadPath auto = CudaBackend.LmHeadPath.AUTO, rows = CudaBackend.LmHeadPath.ROWS, chunks = CudaBackend.LmHeadPath.CHUNKS;
        assertEquals(0, CudaBackend.lmRowBlock(8192, 128_256, DType.BF16, true, auto, 2048, 4096));
        assertEquals(0, CudaBackend.lmRowBlock(8192, 128_256, DType.BF16, true, rows, 2048, 4096));
        assertEquals(0, CudaBackend.lmRowBlock(8192, 128_256, DType.FP32, true, chunks, 2048, 4096));
        assertEquals(0, CudaBackend.lmRowBlock(8192, 128_256, DType.FP32, true, auto, 2048, 5000));
        assertEquals(512, CudaBackend.lmRowBlock(8192, 128_256, DType.FP32, true, auto, 2048, 4096));
        assertEquals(2048, CudaBackend.lmRowBlock(8192, 32_000, DType.BF16, false, auto, 2048, 4096)); // 2048 x 32000 x 4 = 250 MiB
        assertEquals(23, CudaBackend.lmRowBlock(23, 1031, DType.BF16, false, auto, 2048, 4096));
        assertEquals(5, CudaBackend.lmRowBlock(23, 1031, DType.BF16, false, auto, 5, 7)); // the token block setting
        assertEquals(0, CudaBackend.lmRowBlock(8192, 4_000_000, DType.FP32, true, auto, 2048, 4096)); // 16 rows fit: < 64
        assertEquals(16, CudaBackend.lmRowBlock(8192, 4_000_000, DType.FP32, true, rows, 2048, 4096));
        assertEquals(0, CudaBackend.lmRowBlock(8192, 0, DType.FP32, true, rows, 2048, 4096));
        assertEquals(CudaBackend.LmHeadPath.AUTO, CudaBackend.lmPathProperty(null));
        assertEquals(CudaBackend.LmHeadPath.CHUNKS, CudaBackend.lmPathProperty(" Chunks"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> CudaBackend.lmPathProperty("row"));
        assertTrue(e.getMessage().contains("grpo4j.lmheadPath") && e.getMessage().contains("\"row\""), e.getMessage());
    }

    /**
     * A larger bound (the trainer's lm_head_scratch_mib, 1 GiB by default) gives the row path blocks of the full token
     * block at V = 128,256, 2048 rows: four dLmHead GEMMs at N = 8192 instead of sixteen; the plan's bytes follow; a
     * bound of 0 turns the row path off; the property names itself on a bad value.
     */
    @Test
    void theRowBoundSetsTheBlock() {
        CudaBackend.LmHeadPath auto = CudaBackend.LmHeadPath.AUTO;
        int n = 8192, h = 4096, v = 128_256, tb = CudaBackend.LM_TOKEN_BLOCK, vc = CudaBackend.LM_VOCAB_CHUNK;
        long gib = 1024L << 20;
        assertEquals(2048, CudaBackend.lmRowBlock(n, v, DType.BF16, false, auto, tb, vc, gib));
        assertEquals(2048L * v * 4 + 48L * n, CudaBackend.lmHeadBytes(n, h, v, DType.BF16, true, false, auto, tb, vc, gib));
        assertTrue(CudaBackend.lmHeadBytes(n, h, v, DType.BF16, true, false, auto, tb, vc, gib) <= gib);
        assertEquals(1600, CudaBackend.lmRowBlock(n, v, DType.BF16, false, auto, tb, vc, 800L << 20)); // 1634 fit: a multiple of 64
        assertEquals(0, CudaBackend.lmRowBlock(n, v, DType.BF16, false, auto, tb, vc, 0));
        assertEquals(0, CudaBackend.lmRowBlock(n, v, DType.BF16, false, CudaBackend.LmHeadPath.ROWS, tb, vc, 0));
        assertEquals(CudaBackend.lmHeadBytes(n, h, v, DType.BF16, true, false, CudaBackend.LmHeadPath.CHUNKS, tb, vc),
                CudaBackend.lmHeadBytes(n, h, v, DType.BF16, true, false, auto, tb, vc, 0), "bound 0: the chunk loops' buffers");
        assertEquals(512, CudaBackend.lmRowBlock(n, v, DType.BF16, false, auto, tb, vc, CudaBackend.lmRowsProperty(null)));
        assertEquals(1024L << 20, CudaBackend.lmRowsProperty(" 1024"));
        for (String bad : new String[] {"", "-1", "1.5", "8192", "a"}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> CudaBackend.lmRowsProperty(bad));
            assertEquals("-Dgrpo4j.lmheadRowsMib must be a whole number of MiB in [0, 8191], got \"" + bad + "\"", e.getMessage());
        }
    }

    @Test
    void theBlocksPropertyTakesTwoPositiveIntegersAndNamesItselfOtherwise() {
        assertArrayEquals(new int[] {CudaBackend.LM_TOKEN_BLOCK, CudaBackend.LM_VOCAB_CHUNK}, CudaBackend.lmBlocksProperty(null));
        assertArrayEquals(new int[] {4096, 2048}, CudaBackend.lmBlocksProperty("4096, 2048"));
        assertArrayEquals(new int[] {65536, 32767}, CudaBackend.lmBlocksProperty("65536,32767"));  // 2^31 - 65536 elements
        for (String bad : new String[] {"", "4096", "4096,", "0,4096", "4096,-1", "a,b", "1,2,3", "65536,32768", "2147483647,2"}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> CudaBackend.lmBlocksProperty(bad));
            assertEquals("-Dgrpo4j.lmheadBlocks must be TOKENS,VOCAB (two positive integers, their product at most 2^31 - 1: an 8 GiB"
                    + " fp32 chunk; e.g. 2048,4096), got \"" + bad + "\"", e.getMessage());
        }
    }

    /**
     * The device buffers the ops grow (scratch, the LM head's chunks) past 2^31 - 1 elements, which one int dimension
     * cannot count: rows of 2^20 covering them (Math.toIntExact threw an ArithmeticException at an 8 GiB workspace).
     */
    @Test
    void buffersPastAnIntOfElementsAreRowsOfAMebi() {
        assertArrayEquals(new int[] {1}, CudaBackend.flatShape(1));
        assertArrayEquals(new int[] {Integer.MAX_VALUE}, CudaBackend.flatShape(Integer.MAX_VALUE));
        assertArrayEquals(new int[] {2048, 1 << 20}, CudaBackend.flatShape(1L << 31));
        int[] odd = CudaBackend.flatShape((1L << 33) + 5);
        assertArrayEquals(new int[] {8193, 1 << 20}, odd);
        assertTrue((long) odd[0] * odd[1] >= (1L << 33) + 5);
        assertThrows(IllegalArgumentException.class, () -> CudaBackend.flatShape(Long.MAX_VALUE / 4));
        assertThrows(IllegalArgumentException.class, () -> CudaBackend.flatShape(-1));
    }
}
