package org.grpo4j.internal.backend;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.util.SplittableRandom;
import org.grpo4j.bindings.CudaNative;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The kernels' per-element math, run on the host: cuda/*.cuh's {@code __host__ __device__} functions, compiled by nvcc
 * into the JNI library (native/hostmath.cu), against the CPU backend on the same inputs. Needs the JNI library (built
 * wherever nvcc is), not a GPU. Where a kernel promises bit-identical results (bf16 rounding, adamW, rope, axpy) the
 * comparison is bitwise; swiglu is fp32 math against the CPU's float64 and gets a derived tolerance.
 */
class DeviceMathTest {
    static final CpuBackend cpu = TestBackends.cpu();

    @BeforeAll
    static void library() {
        assumeTrue(CudaRuntime.loadLibrary(), "skipped: the CUDA JNI library is not built or does not load here");
    }

    static float[] randn(SplittableRandom r, int n, double scale) {
        float[] a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float) (r.nextGaussian() * scale);
        return a;
    }

    @Test
    void bf16RoundingMatchesTheCpuOnEveryBf16ValueAndRandomFloats() {
        SplittableRandom r = new SplittableRandom(1);
        int n = 65536 + 200_000;
        float[] x = new float[n];
        for (int i = 0; i < 65536; i++) x[i] = Float.intBitsToFloat(i << 16 | (i & 0xFFFF) >>> 3); // every bf16 value, perturbed
        for (int i = 65536; i < n; i++) x[i] = Float.intBitsToFloat(r.nextInt());
        x[0] = Float.NaN;
        x[1] = Float.POSITIVE_INFINITY;
        x[2] = 3.3895314e38f; // rounds past the largest finite bf16
        short[] got = new short[n];
        CudaNative.g4_host_bf16_round(x, got, n);
        for (int i = 0; i < n; i++) assertEquals(Bf16.fromFloat(x[i]), got[i], "element " + i + " = " + x[i]);
    }

    @Test
    void adamWIsBitIdenticalToTheCpu() {
        SplittableRandom r = new SplittableRandom(2);
        int n = 4099;
        float[] p = randn(r, n, 1), m = new float[n], v = new float[n];
        try (Tensor tp = cpu.upload(p.clone(), n); Tensor tm = cpu.zeros(DType.FP32, n); Tensor tv = cpu.zeros(DType.FP32, n);
             Tensor tb = cpu.empty(DType.BF16, n)) {
            short[] hb = new short[n];
            for (int step = 1; step <= 5; step++) {
                float[] g = randn(r, n, step == 3 ? 1e-4 : 3);
                // step 4: clipping's coefficient folded into the step
                AdamWStep st = new AdamWStep(step == 2 ? 0f : 3e-3f, 0.9f, 0.999f, 1e-8f, 0.01f * step, step, step == 4 ? 0.37f : 1f);
                try (Tensor tg = cpu.upload(g, n)) {
                    cpu.adamW(tp, tg, tm, tv, st, tb);
                }
                float[] c = CudaBackend.adamWScalars(st);
                CudaNative.g4_host_adamw(p, g, m, v, hb, n, c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8]);
                assertArrayEquals(tp.toFloats(), p, "p after step " + step);
                assertArrayEquals(tm.toFloats(), m, "m after step " + step);
                assertArrayEquals(tv.toFloats(), v, "v after step " + step);
                assertArrayEquals(tb.toBf16Bits(), hb, "bf16 copy after step " + step);
            }
        }
    }

    @Test
    void ropeIsBitIdenticalToTheCpu() {
        SplittableRandom r = new SplittableRandom(3);
        Rope rope = new Rope(128, 500000, new Rope.Llama3Scaling(8, 1, 4, 8192));
        float[] inv = rope.invFreq();
        int[] positions = {0, 1, 7, 1000, 8191, 8192, 40_000, 131_071};
        int h = 3, d = 128, n = positions.length;
        float[] x = randn(r, n * h * d, 2);
        for (boolean inverse : new boolean[] {false, true}) {
            float[] want;
            try (Tensor tx = cpu.upload(x, n, h, d); Tensor tp = cpu.upload(positions, n); Tensor out = cpu.empty(DType.FP32, n, h, d)) {
                if (inverse) cpu.ropeBackward(out, tx, tp, rope);
                else cpu.rope(out, tx, tp, rope);
                want = out.toFloats();
            }
            for (int t = 0; t < n; t++)
                for (int hh = 0; hh < h; hh++) {
                    float[] head = java.util.Arrays.copyOfRange(x, (t * h + hh) * d, (t * h + hh + 1) * d), got = new float[d];
                    CudaNative.g4_host_rope(head, got, positions[t], inv, d, inverse ? 1 : 0);
                    assertArrayEquals(java.util.Arrays.copyOfRange(want, (t * h + hh) * d, (t * h + hh + 1) * d), got,
                            "position " + positions[t] + " head " + hh + (inverse ? " (inverse)" : ""));
                }
        }
    }

    @Test
    void axpyIsBitIdenticalToTheCpu() {
        SplittableRandom r = new SplittableRandom(4);
        int n = 1001;
        float[] y = randn(r, n, 1), x = randn(r, n, 3);
        try (Tensor ty = cpu.upload(y.clone(), n); Tensor tx = cpu.upload(x, n)) {
            cpu.axpy(ty, -0.37f, tx);
            CudaNative.g4_host_axpy(y, -0.37f, x, n);
            assertArrayEquals(ty.toFloats(), y);
        }
    }

    /**
     * swiglu in fp32 (expf, within 2 ulps) vs the CPU's float64. Each output is a short chain of fp32 operations on the
     * sigmoid s, so its error is a small multiple of 2^-24 times the size of its terms: |g s u| for out, |dy g s| for
     * dUp, and |dy u s| (1 + |g|) for dGate, whose factor 1 + g (1 - s) cancels near g = -1.28 (the error of s, times
     * g, stays while the value shrinks). Tolerance: 16 * 2^-24 * that size.
     */
    @Test
    void swigluIsWithinItsFp32ErrorOfTheCpu() {
        SplittableRandom r = new SplittableRandom(5);
        int n = 20_000;
        float[] g = randn(r, n, 4), u = randn(r, n, 2), dy = randn(r, n, 1);
        g[0] = 88f; g[1] = -88f; g[2] = 0f; g[3] = -1e-30f; g[4] = -1.2784645f;
        float[] out = new float[n], dg = new float[n], du = new float[n];
        CudaNative.g4_host_swiglu(g, u, out, n);
        CudaNative.g4_host_swiglu_backward(dy, g, u, dg, du, n);
        try (Tensor tg = cpu.upload(g, n); Tensor tu = cpu.upload(u, n); Tensor tdy = cpu.upload(dy, n);
             Tensor o = cpu.empty(DType.FP32, n); Tensor a = cpu.empty(DType.FP32, n); Tensor b = cpu.empty(DType.FP32, n)) {
            cpu.swiglu(o, tg, tu);
            cpu.swigluBackward(a, b, tdy, tg, tu);
            float[] wo = o.toFloats(), wa = a.toFloats(), wb = b.toFloats();
            double eps = 16 * Math.pow(2, -24);
            for (int i = 0; i < n; i++) {
                double s = 1 / (1 + Math.exp(-(double) g[i]));
                double tiny = Float.MIN_NORMAL;
                assertNear("swiglu", i, wo[i], out[i], eps * Math.abs(g[i] * s * u[i]) + tiny);
                assertNear("swiglu dUp", i, wb[i], du[i], eps * Math.abs(dy[i] * g[i] * s) + tiny);
                assertNear("swiglu dGate", i, wa[i], dg[i], eps * Math.abs(dy[i] * u[i] * s) * (1 + Math.abs(g[i])) + tiny);
            }
        }
    }

    static void assertNear(String what, int i, float want, float got, double tol) {
        assertTrue(Math.abs(want - got) <= tol, what + " element " + i + ": got " + got + " want " + want + " (tolerance " + tol + ")");
    }
}
