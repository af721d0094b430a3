package org.grpo4j.internal.backend;

import static org.junit.jupiter.api.Assertions.*;

import java.util.SplittableRandom;
import org.grpo4j.bindings.CudaNative;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * What only the CUDA sampler and fused LM head have (issue 13): the sampling kernel against its host twin token for
 * token (the twin is exact, SamplingDeviceMathTest checks it against the CPU), the same-token rate against the CPU
 * contract, the device error flag for out-of-range targets, bitwise run-to-run determinism, the LM head's chunk and
 * token-block loops at small block sizes against the CPU, and its extra device memory. Needs a GPU (tag gpu).
 */
@Tag("gpu")
class CudaSamplingLmHeadTest {
    static CudaBackend cuda() { return TestBackends.cuda(); }

    static final CpuBackend cpu = TestBackends.cpu();

    record Drawn(int[] tokens, float[] logprobs) {}

    static Drawn sample(CudaBackend be, float[] logits, int b, int v, int[] ctr, SamplingSpec spec, boolean bf16) {
        Tensor x;
        if (bf16) {
            short[] bits = new short[logits.length];
            for (int i = 0; i < bits.length; i++) bits[i] = Bf16.fromFloat(logits[i]);
            x = be.uploadBf16(bits, b, v);
        } else x = be.upload(logits, b, v);
        try (x; Tensor c = be.upload(ctr, b, 2); Tensor t = be.empty(DType.INT32, b); Tensor lp = be.empty(DType.FP32, b)) {
            be.sample(t, lp, x, c, spec);
            return new Drawn(t.toInts(), lp.toFloats());
        }
    }

    static final SamplingSpec[] SPECS = SamplingDeviceMathTest.SPECS;

    /** The kernel's tokens equal the host twin's on every row (every spec, five logit shapes, fp32 and bf16 logits). */
    @Test
    void samplingKernelMatchesItsHostTwinExactly() {
        CudaBackend be = cuda();
        SplittableRandom r = new SplittableRandom(31);
        int mismatches = 0, rows = 0;
        for (int v : new int[] {1, 7, 4097, 9000, 128_256})
            for (boolean bf16 : new boolean[] {false, true}) {
                int b = v > 10_000 ? 6 : 40;
                float[] x = new float[b * v];
                for (int row = 0; row < b; row++) {
                    float[] one = SamplingDeviceMathTest.row(r, v, row % 5);
                    if (bf16) for (int j = 0; j < v; j++) one[j] = Bf16.round(one[j]);
                    System.arraycopy(one, 0, x, row * v, v);
                }
                int[] ctr = new int[2 * b];
                for (int i = 0; i < b; i++) { ctr[2 * i] = 100 + i; ctr[2 * i + 1] = i * 7; }
                for (SamplingSpec s : SPECS) {
                    if (s.topK() > v) continue;
                    Drawn d = sample(be, x, b, v, ctr, s, bf16);
                    for (int row = 0; row < b; row++) {
                        float[] one = java.util.Arrays.copyOfRange(x, row * v, (row + 1) * v);
                        SamplingDeviceMathTest.Twin t = SamplingDeviceMathTest.twin(one, s, Philox.uniform(s.seed(), ctr[2 * row], ctr[2 * row + 1]));
                        rows++;
                        if (t.token() != d.tokens[row]) {
                            mismatches++;
                            System.out.println("mismatch V=" + v + " bf16=" + bf16 + " " + s + " row " + row + ": kernel " + d.tokens[row] + ", twin " + t.token());
                        }
                        assertEquals((float) t.logprob(), d.logprobs[row], Math.max(1e-6f, Math.ulp((float) t.logprob())),
                                "logprob V=" + v + " " + s + " row " + row);
                    }
                }
            }
        assertEquals(0, mismatches, mismatches + " of " + rows + " rows: kernel and host twin draw different tokens");
    }

    /** The same-token rate against the CPU contract on conformance-like rows; the bound is 0.1%. */
    @Test
    void sameTokenRateAgainstTheCpu() {
        CudaBackend be = cuda();
        SplittableRandom r = new SplittableRandom(32);
        int b = 128, v = 32_000, rows = 0, differ = 0;
        float[] x = new float[b * v];
        for (int row = 0; row < b; row++) System.arraycopy(SamplingDeviceMathTest.row(r, v, row % 5), 0, x, row * v, v);
        int[] ctr = new int[2 * b];
        for (int i = 0; i < b; i++) { ctr[2 * i] = i; ctr[2 * i + 1] = 3; }
        for (SamplingSpec s : SPECS) {
            Drawn d = sample(be, x, b, v, ctr, s, false);
            for (int row = 0; row < b; row++) {
                rows++;
                float[] one = java.util.Arrays.copyOfRange(x, row * v, (row + 1) * v);
                if (SamplingDeviceMathTest.cpu(one, s, ctr[2 * row], ctr[2 * row + 1]).token() != d.tokens[row]) differ++;
            }
        }
        System.out.printf("cuda vs cpu sampling: %d of %d rows differ (%.4f%%)%n", differ, rows, 100.0 * differ / rows);
        assertTrue(differ * 1000 <= rows, differ + " of " + rows + " rows differ (> 0.1%)");
    }

    @Test
    void samplingIsDeterministicAndRejectsHugeVocabularies() {
        CudaBackend be = cuda();
        SplittableRandom r = new SplittableRandom(33);
        int b = 64, v = 50_000;
        float[] x = new float[b * v];
        for (int row = 0; row < b; row++) System.arraycopy(SamplingDeviceMathTest.row(r, v, 4), 0, x, row * v, v);
        int[] ctr = new int[2 * b];
        for (int i = 0; i < b; i++) { ctr[2 * i] = i; ctr[2 * i + 1] = 1; }
        for (SamplingSpec s : new SamplingSpec[] {new SamplingSpec(1f, 0, 0.9f, 5), new SamplingSpec(1f, 0, 1f, 5), new SamplingSpec(0.7f, 40, 0.8f, 5)}) {
            Drawn a = sample(be, x, b, v, ctr, s, false), c = sample(be, x, b, v, ctr, s, false);
            assertArrayEquals(a.tokens, c.tokens, "tokens repeat " + s);
            assertArrayEquals(a.logprobs, c.logprobs, "logprobs repeat bit for bit " + s);
        }
        int max = be.sampleMaxVocab();
        try (Tensor big = be.empty(DType.BF16, 1, max + 1); Tensor t = be.empty(DType.INT32, 1); Tensor lp = be.empty(DType.FP32, 1);
             Tensor c = be.upload(new int[] {0, 0}, 1, 2)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> be.sample(t, lp, big, c, new SamplingSpec(1f, 0, 1f, 1)));
            assertTrue(e.getMessage().startsWith("sample: "), e.getMessage());
        }
    }

    // ---- fused LM head ----------------------------------------------------------------------------------------------

    @Test
    void outOfRangeTargetsRaiseTheFlagNamingTheOp() {
        CudaBackend be = cuda();
        int n = 3, d = 4, v = 10;
        SplittableRandom r = new SplittableRandom(34);
        float[] h = SamplingDeviceMathTest.row(r, n * d, 0), w = SamplingDeviceMathTest.row(r, v * d, 0);
        int[] tgt = {1, 10, 2};
        try (Tensor th = be.upload(h, n, d); Tensor tw = be.upload(w, v, d); Tensor tt = be.upload(tgt, n); Tensor out = be.empty(DType.FP32, n);
             Tensor dh = be.empty(DType.FP32, n, d); Tensor dw = be.zeros(DType.FP32, v, d); Tensor g = be.upload(new float[] {1, 1, 1}, n)) {
            be.tokenLogprobs(out, th, tw, tt, 1f);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, be::synchronize);
            assertTrue(e.getMessage().startsWith("tokenLogprobs: targets[1] = 10 is outside [0, 10)"), e.getMessage());
            float[] lp = out.toFloats(); // the flag was cleared; the valid rows are right, the bad one is NaN
            assertTrue(Float.isNaN(lp[1]));
            try (Tensor ch = cpu.upload(h, n, d); Tensor cw = cpu.upload(w, v, d); Tensor ct = cpu.upload(new int[] {1, 0, 2}, n);
                 Tensor co = cpu.empty(DType.FP32, n)) {
                cpu.tokenLogprobs(co, ch, cw, ct, 1f);
                float[] want = co.toFloats();
                assertEquals(want[0], lp[0], 4e-5);
                assertEquals(want[2], lp[2], 4e-5);
            }
            be.tokenLogprobsBackward(dh, dw, g, th, tw, tt, 1f);
            e = assertThrows(IllegalArgumentException.class, dw::toFloats);
            assertTrue(e.getMessage().startsWith("tokenLogprobsBackward: targets[1] = 10 is outside [0, 10)"), e.getMessage());
            for (float f : dh.toFloatsWidened()) assertTrue(Float.isFinite(f), "the bad row contributes no NaN");
            for (float f : dw.toFloats()) assertTrue(Float.isFinite(f), "the bad row contributes no NaN to dLmHead");
            GrpoLossOutputs o = new GrpoLossOutputs(be.empty(DType.FP32, 1), be.empty(DType.FP32, n), be.empty(DType.FP32, n),
                    be.empty(DType.FP32, n), be.empty(DType.FP32, n), be.empty(DType.FP32, n, d), be.zeros(DType.FP32, v, d));
            try (Tensor z = be.zeros(DType.FP32, n); Tensor ones = be.upload(new float[] {1, 1, 1}, n)) {
                be.grpoLoss(o, th, tw, tt, ones, ones, z, z, new GrpoLossParams(1f, 0.2f, 0.2f, 0.1f, KlEstimator.KL3));
                e = assertThrows(IllegalArgumentException.class, be::synchronize);
                assertTrue(e.getMessage().startsWith("grpoLoss: targets[1] = 10 is outside [0, 10)"), e.getMessage());
                assertTrue(Float.isFinite(o.loss().item()), "the bad token is left out of the loss");
            } finally {
                for (Tensor t : new Tensor[] {o.loss(), o.logprobs(), o.ratio(), o.clipped(), o.kl(), o.dHidden(), o.dLmHead()}) t.close();
            }
            be.synchronize(); // clean again
        }
    }

    /** Every output of the three LM-head ops repeats bit for bit (fixed trees, no atomics, fixed GEMM plans). */
    @Test
    void lmHeadOpsAreBitwiseRepeatable() {
        CudaBackend be = cuda();
        SplittableRandom r = new SplittableRandom(35);
        int n = 300, d = 64, v = 9001;
        try {
            // fp32 (the row path), bf16 split (the chunk loops), bf16 single dz (the row path)
            for (int mode = 0; mode < 3; mode++) {
                DType dt = mode == 0 ? DType.FP32 : DType.BF16;
                be.setLmHeadBf16GradSplit(mode != 2);
                float[] h = SamplingDeviceMathTest.row(r, n * d, 0), w = SamplingDeviceMathTest.row(r, v * d, 0);
                int[] tgt = r.ints(n, 0, v).toArray();
                float[][] first = null;
                for (int rep = 0; rep < 2; rep++) {
                    float[][] got = lmHeadAll(be, dt, h, w, tgt, n, d, v);
                    if (first == null) first = got;
                    else for (int i = 0; i < got.length; i++) assertArrayEquals(first[i], got[i], dt + " mode " + mode + " output " + i + " repeats bit for bit");
                }
            }
        } finally {
            be.setLmHeadBf16GradSplit(true);
        }
    }

    /** tokenLogprobs, tokenLogprobsBackward and grpoLoss outputs on one backend (dLmHead accumulated from zeros). */
    static float[][] lmHeadAll(Backend be, DType dt, float[] h, float[] w, int[] tgt, int n, int d, int v) {
        try (Tensor th = up(be, dt, h, n, d); Tensor tw = up(be, dt, w, v, d); Tensor tt = be.upload(tgt, n);
             Tensor out = be.empty(DType.FP32, n); Tensor dh = be.empty(dt, n, d); Tensor dw = be.zeros(DType.FP32, v, d);
             Tensor g = be.upload(SamplingDeviceMathTest.row(new SplittableRandom(1), n, 0), n);
             Tensor wt = be.upload(filled(n, 1f / n), n); Tensor adv = be.upload(SamplingDeviceMathTest.row(new SplittableRandom(2), n, 0), n);
             Tensor old = be.empty(DType.FP32, n); Tensor ref = be.empty(DType.FP32, n)) {
            be.tokenLogprobs(out, th, tw, tt, 0.8f);
            be.copy(old, out);
            be.copy(ref, out);
            be.scale(ref, 1.01f);
            be.tokenLogprobsBackward(dh, dw, g, th, tw, tt, 0.8f);
            float[] lp = out.toFloats(), dH = dh.toFloatsWidened(), dW = dw.toFloats();
            GrpoLossOutputs o = new GrpoLossOutputs(be.empty(DType.FP32, 1), be.empty(DType.FP32, n), be.empty(DType.FP32, n),
                    be.empty(DType.FP32, n), be.empty(DType.FP32, n), be.empty(dt, n, d), be.zeros(DType.FP32, v, d));
            try {
                be.grpoLoss(o, th, tw, tt, wt, adv, old, ref, new GrpoLossParams(0.8f, 0.2f, 0.28f, 0.05f, KlEstimator.KL3));
                return new float[][] {lp, dH, dW, o.loss().toFloats(), o.logprobs().toFloats(), o.ratio().toFloats(),
                        o.clipped().toFloats(), o.kl().toFloats(), o.dHidden().toFloatsWidened(), o.dLmHead().toFloats()};
            } finally {
                for (Tensor t : new Tensor[] {o.loss(), o.logprobs(), o.ratio(), o.clipped(), o.kl(), o.dHidden(), o.dLmHead()}) t.close();
            }
        }
    }

    static float[] filled(int n, float x) {
        float[] a = new float[n];
        java.util.Arrays.fill(a, x);
        return a;
    }

    static Tensor up(Backend be, DType dt, float[] a, int... shape) {
        if (dt == DType.FP32) return be.upload(a, shape);
        short[] bits = new short[a.length];
        for (int i = 0; i < a.length; i++) bits[i] = Bf16.fromFloat(a[i]);
        return be.uploadBf16(bits, shape);
    }

    /**
     * Small token blocks and vocabulary chunks (5 x 7, 64 x 1000) reach every path of the chunk loops (partial last
     * chunk and block, first-chunk overwrite of dHidden, bf16 accumulation through the fp32 buffer) and of the row path
     * (fp32 operands: blocks of 5 rows, the last one short; chunks of 7 walked inside each row) at sizes the CPU checks
     * quickly: every output against the CPU's with the conformance suite's CUDA-vs-CPU tolerance. (The bf16 split takes
     * the chunk loops on either setting.)
     */
    @Test
    void chunkAndBlockLoopsMatchTheCpu() {
        CudaBackend be = cuda();
        SplittableRandom r = new SplittableRandom(36);
        int n = 23, d = 16, v = 1031;
        try {
            for (int[] blocks : new int[][] {{5, 7}, {64, 1000}, {CudaBackend.LM_TOKEN_BLOCK, CudaBackend.LM_VOCAB_CHUNK}})
            for (CudaBackend.LmHeadPath path : new CudaBackend.LmHeadPath[] {CudaBackend.LmHeadPath.CHUNKS, CudaBackend.LmHeadPath.ROWS}) {
                be.setLmHeadBlocks(blocks[0], blocks[1]);
                be.setLmHeadPath(path);
                for (DType dt : new DType[] {DType.FP32, DType.BF16}) {
                    float[] h = SamplingDeviceMathTest.row(r, n * d, 0), w = SamplingDeviceMathTest.row(r, v * d, 0);
                    for (int i = 0; i < w.length; i++) w[i] *= 0.5f;
                    if (dt == DType.BF16) { h = roundAll(h); w = roundAll(w); }
                    int[] tgt = r.ints(n, 0, v).toArray();
                    float[][] got = lmHeadAll(be, dt, h, w, tgt, n, d, v), want = lmHeadAll(cpu, dt, h, w, tgt, n, d, v);
                    String[] names = {"tokenLogprobs", "dHidden", "dLmHead", "loss", "logprobs", "ratio", "clipped", "kl", "grpo dHidden", "grpo dLmHead"};
                    double[][] tol = {{2e-5, 1e-5}, {2e-5, 2e-4}, {2e-5, 2e-4}, {1e-5, 1e-5}, {2e-5, 1e-4}, {2e-5, 1e-4}, {0, 0}, {2e-5, 1e-4},
                            {2e-5, 2e-4}, {2e-5, 2e-4}};
                    for (int i = 0; i < names.length; i++) {
                        boolean bf = dt == DType.BF16 && (i == 1 || i == 8);
                        Conformance.assertCloseToCpu(names[i] + " " + dt + " blocks " + blocks[0] + "x" + blocks[1] + " " + path,
                                want[i], got[i], bf, tol[i][0], tol[i][1]);
                    }
                }
            }
        } finally {
            be.setLmHeadBlocks(CudaBackend.LM_TOKEN_BLOCK, CudaBackend.LM_VOCAB_CHUNK);
            be.setLmHeadPath(CudaBackend.LmHeadPath.AUTO);
        }
    }

    /**
     * The single-bf16 dz mode (CudaBackend.setLmHeadBf16GradSplit(false), -Dgrpo4j.lmheadBf16Grad=single: dz rounded to
     * bf16 once, as torch's autograd has it) on both paths, at the default and at small blocks: the gradients stay
     * within bf16 rounding of the CPU's (the error norm under 2^-6 of the gradient's norm: dz to 8 bits, far from a wrong
     * kernel's O(1)) and differ from the split mode's (the switch takes effect). The forward outputs (log-probs, loss,
     * ratio, KL) are the split mode's bit for bit on the chunk loops, which the split also runs; on the row path
     * (grpoLoss's logits from one GEMM over the whole vocabulary, which cuBLASLt may sum in another order than the
     * chunks' GEMMs) they are within the CUDA-vs-CPU tolerance of the CPU's.
     */
    @Test
    void singleBf16DzGradientsAreWithinBf16RoundingOfTheCpu() {
        CudaBackend be = cuda();
        SplittableRandom r = new SplittableRandom(38);
        int n = 23, d = 16, v = 1031;
        float[] h = roundAll(SamplingDeviceMathTest.row(r, n * d, 0)), w = SamplingDeviceMathTest.row(r, v * d, 0);
        for (int i = 0; i < w.length; i++) w[i] = Bf16.round(0.5f * w[i]);
        int[] tgt = r.ints(n, 0, v).toArray();
        float[][] want = lmHeadAll(cpu, DType.BF16, h, w, tgt, n, d, v);
        try {
            for (int[] blocks : new int[][] {{5, 7}, {CudaBackend.LM_TOKEN_BLOCK, CudaBackend.LM_VOCAB_CHUNK}})
            for (CudaBackend.LmHeadPath path : new CudaBackend.LmHeadPath[] {CudaBackend.LmHeadPath.CHUNKS, CudaBackend.LmHeadPath.ROWS}) {
                be.setLmHeadBlocks(blocks[0], blocks[1]);
                be.setLmHeadPath(path);
                float[][] split = lmHeadAll(be, DType.BF16, h, w, tgt, n, d, v), single;
                be.setLmHeadBf16GradSplit(false);
                try {
                    single = lmHeadAll(be, DType.BF16, h, w, tgt, n, d, v);
                } finally {
                    be.setLmHeadBf16GradSplit(true);
                }
                String at = " blocks " + blocks[0] + "x" + blocks[1] + " " + path;
                String[] fwd = {"tokenLogprobs", "", "", "loss", "logprobs", "ratio", "clipped", "kl"};
                double[][] tol = {{2e-5, 1e-5}, {}, {}, {1e-5, 1e-5}, {2e-5, 1e-4}, {2e-5, 1e-4}, {0, 0}, {2e-5, 1e-4}};
                for (int i : new int[] {0, 3, 4, 5, 6, 7}) {
                    if (path == CudaBackend.LmHeadPath.CHUNKS || i == 0)
                        assertArrayEquals(split[i], single[i], "output " + i + " (forward) is the split mode's" + at);
                    else
                        Conformance.assertCloseToCpu(fwd[i] + at, want[i], single[i], false, tol[i][0], tol[i][1]);
                }
                String[] names = {"", "dHidden", "dLmHead", "", "", "", "", "", "grpo dHidden", "grpo dLmHead"};
                for (int i : new int[] {1, 2, 8, 9}) {
                    double err = 0, norm = 0;
                    for (int j = 0; j < want[i].length; j++) {
                        err += Math.pow((double) single[i][j] - want[i][j], 2);
                        norm += Math.pow(want[i][j], 2);
                    }
                    double rel = Math.sqrt(err / norm);
                    assertTrue(rel < 1.0 / 64, names[i] + at + ": error norm " + rel + " of the gradient's");
                    assertFalse(java.util.Arrays.equals(split[i], single[i]), names[i] + at + ": the single mode gave the split mode's bits");
                }
            }
        } finally {
            be.setLmHeadBlocks(CudaBackend.LM_TOKEN_BLOCK, CudaBackend.LM_VOCAB_CHUNK);
            be.setLmHeadPath(CudaBackend.LmHeadPath.AUTO);
        }
    }

    static float[] roundAll(float[] a) {
        float[] b = new float[a.length];
        for (int i = 0; i < a.length; i++) b[i] = Bf16.round(a[i]);
        return b;
    }

    /**
     * Extra device memory of the fused LM head at a moderate size (N = 3000, H = 512, V = 20,000; bf16 grpoLoss with
     * its backward, in the split mode (the chunk loops) and with dz rounded once (the row path, in blocks of 2048
     * rows)): the backend's own buffers are exactly CudaBackend.lmHeadBytes, and the device's free memory drops by no
     * more than that plus allocation granularity, measured over a second call (the first's buffers released), so that
     * what loads on first use is not counted.
     */
    @Test
    void extraDeviceMemoryOfTheFusedLmHead() {
        int n = 3000, h = 512, v = 20_000;
        cuda(); // skips without a GPU
        for (boolean split : new boolean[] {true, false})
        try (CudaBackend be = new CudaBackend(0)) {
            be.setLmHeadBf16GradSplit(split);
            SplittableRandom r = new SplittableRandom(37);
            float[] hid = roundAll(SamplingDeviceMathTest.row(r, n * h, 0)), w = roundAll(SamplingDeviceMathTest.row(r, v * h, 0));
            try (Tensor a = be.zeros(DType.BF16, 64, 64); Tensor c = be.zeros(DType.FP32, 64, 64);
                 Tensor th = up(be, DType.BF16, hid, n, h); Tensor tw = up(be, DType.BF16, w, v, h); Tensor tt = be.upload(r.ints(n, 0, v).toArray(), n);
                 Tensor z = be.zeros(DType.FP32, n); Tensor ones = be.upload(filled(n, 1f / n), n)) {
                be.matmul(c, a, false, a, false, 1f, 0f); // the cuBLASLt handle and workspace exist before we measure
                GrpoLossOutputs o = new GrpoLossOutputs(be.empty(DType.FP32, 1), be.empty(DType.FP32, n), be.empty(DType.FP32, n),
                        be.empty(DType.FP32, n), be.empty(DType.FP32, n), be.empty(DType.BF16, n, h), be.zeros(DType.FP32, v, h));
                // an untimed call first, its buffers handed back: what loads on first use (the row path's kernels,
                // cuBLASLt's algorithms for its strided GEMMs, lazily loaded modules) is not counted as the op's
                be.grpoLoss(o, th, tw, tt, ones, ones, z, z, new GrpoLossParams(1f, 0.2f, 0.2f, 0.05f, KlEstimator.KL3));
                be.releaseLmHeadBuffers();
                be.synchronize();
                long live = be.liveBytes();
                // what can still be allocated (free device memory + the stream-ordered pool's idle memory), before and after
                long free0 = Memory.available(be);
                be.grpoLoss(o, th, tw, tt, ones, ones, z, z, new GrpoLossParams(1f, 0.2f, 0.2f, 0.05f, KlEstimator.KL3));
                be.synchronize();
                long free1 = Memory.available(be);
                long expected = CudaBackend.lmHeadBytes(n, h, v, DType.BF16, true, split, be.lmHeadPath(), be.lmTokenBlock(),
                        be.lmVocabChunk(), be.lmHeadRowsBytes()); // the backend's settings (-Dgrpo4j.lmheadPath, lmheadBlocks, lmheadRowsMib)
                long own = be.liveBytes() - live, device = free0 - free1;
                System.out.printf("fused LM head at N=%d H=%d V=%d (bf16 grpoLoss, %s): buffers %.1f MiB (plan %.1f MiB), device free memory -%.1f MiB; [N, V] fp32 logits would be %.1f MiB%n",
                        n, h, v, split ? "split dz, chunk loops" : "single dz, row path", own / 1048576.0, expected / 1048576.0,
                        device / 1048576.0, (double) n * v * 4 / 1048576.0);
                assertEquals(expected, own, "the LM head's buffers are what lmHeadBytes plans");
                assertTrue(device <= expected + (16L << 20), "device memory dropped by " + (device >> 20) + " MiB, planned " + (expected >> 20));
                for (Tensor t : new Tensor[] {o.loss(), o.logprobs(), o.ratio(), o.clipped(), o.kl(), o.dHidden(), o.dLmHead()}) t.close();
            }
        }
    }

    /**
     * A backend that switches dz modes (split: the chunk loops' hi/lo pair and fp32 accumulator; single: the row path's
     * block of logits) holds one path's buffers at a time, never both: after split, single, split, single its own
     * buffers stay within the larger plan; releaseLmHeadBuffers gives all of them back.
     */
    @Test
    void switchingDzModesHoldsOnePathsBuffersAtATime() {
        int n = 3000, h = 512, v = 20_000;
        cuda(); // skips without a GPU
        try (CudaBackend be = new CudaBackend(0)) {
            SplittableRandom r = new SplittableRandom(39);
            float[] hid = roundAll(SamplingDeviceMathTest.row(r, n * h, 0)), w = roundAll(SamplingDeviceMathTest.row(r, v * h, 0));
            try (Tensor a = be.zeros(DType.BF16, 64, 64); Tensor c = be.zeros(DType.FP32, 64, 64);
                 Tensor th = up(be, DType.BF16, hid, n, h); Tensor tw = up(be, DType.BF16, w, v, h); Tensor tt = be.upload(r.ints(n, 0, v).toArray(), n);
                 Tensor z = be.zeros(DType.FP32, n); Tensor ones = be.upload(filled(n, 1f / n), n)) {
                be.matmul(c, a, false, a, false, 1f, 0f);
                GrpoLossOutputs o = new GrpoLossOutputs(be.empty(DType.FP32, 1), be.empty(DType.FP32, n), be.empty(DType.FP32, n),
                        be.empty(DType.FP32, n), be.empty(DType.FP32, n), be.empty(DType.BF16, n, h), be.zeros(DType.FP32, v, h));
                be.synchronize();
                long live = be.liveBytes(), most = 0;
                for (boolean split : new boolean[] {true, false, true, false}) {
                    be.setLmHeadBf16GradSplit(split);
                    be.grpoLoss(o, th, tw, tt, ones, ones, z, z, new GrpoLossParams(1f, 0.2f, 0.2f, 0.05f, KlEstimator.KL3));
                    be.synchronize();
                    most = Math.max(most, be.liveBytes() - live);
                }
                long plan = Math.max(CudaBackend.lmHeadBytes(n, h, v, DType.BF16, true, true, be.lmHeadPath(), be.lmTokenBlock(), be.lmVocabChunk(),
                                be.lmHeadRowsBytes()),
                        CudaBackend.lmHeadBytes(n, h, v, DType.BF16, true, false, be.lmHeadPath(), be.lmTokenBlock(), be.lmVocabChunk(), be.lmHeadRowsBytes()));
                assertTrue(most <= plan, "switching modes held " + most + " bytes, more than one path's " + plan);
                be.releaseLmHeadBuffers(); // what the kernel benchmark does before it measures a row's extra memory
                be.synchronize();
                assertEquals(live, be.liveBytes(), "released, the LM head holds nothing");
                for (Tensor t : new Tensor[] {o.loss(), o.logprobs(), o.ratio(), o.clipped(), o.kl(), o.dHidden(), o.dLmHead()}) t.close();
            }
        }
    }
}
