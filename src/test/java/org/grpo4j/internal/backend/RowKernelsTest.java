package org.grpo4j.internal.backend;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * The CPU's inner loops give, bit for bit, the plain loops their javadocs define, at lengths around the vector widths
 * and at offsets: the SIMD kernels in the test JVM (the build resolves jdk.incubator.vector), the scalar ones with
 * -Dgrpo4j.noVector.
 */
class RowKernelsTest {
    static final int[] LENGTHS = {0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64, 127, 256, 1001};

    @Test
    void theTestJvmRunsTheSimdKernels() {
        assertTrue(RowKernels.VECTOR || Boolean.getBoolean("grpo4j.noVector"),
                "jdk.incubator.vector is not resolved in the test JVM: the SIMD kernels are not what these tests compare");
    }

    @Test
    void dot4SumsFourLanesInOrder() {
        SplittableRandom r = new SplittableRandom(1);
        for (int d : LENGTHS)
            for (int off : new int[] {0, 3}) {
                float[] a = values(r, d + off), b = values(r, d + 2 * off);
                float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
                int x = 0;
                for (; x + 4 <= d; x += 4) {
                    s0 += a[off + x] * b[2 * off + x];
                    s1 += a[off + x + 1] * b[2 * off + x + 1];
                    s2 += a[off + x + 2] * b[2 * off + x + 2];
                    s3 += a[off + x + 3] * b[2 * off + x + 3];
                }
                double want = ((double) s0 + s1) + ((double) s2 + s3);
                for (; x < d; x++) want += a[off + x] * b[2 * off + x];
                double got = RowKernels.dot4(a, off, b, 2 * off, d);
                assertEquals(Double.doubleToLongBits(want), Double.doubleToLongBits(got), "dot4 d=" + d + " off=" + off + ": " + got + " vs " + want);
            }
    }

    @Test
    void axpyDoubleMultipliesThenAddsInDouble() {
        SplittableRandom r = new SplittableRandom(2);
        for (int d : LENGTHS) {
            float[] b = values(r, d + 5);
            double[] acc = new double[d], want = new double[d];
            for (int x = 0; x < d; x++) acc[x] = want[x] = r.nextGaussian();
            double s = r.nextGaussian();
            for (int x = 0; x < d; x++) want[x] += s * b[5 + x];
            RowKernels.axpyDouble(acc, s, b, 5, d);
            for (int x = 0; x < d; x++)
                assertEquals(Double.doubleToLongBits(want[x]), Double.doubleToLongBits(acc[x]), "axpyDouble d=" + d + " x=" + x);
        }
    }

    @Test
    void axpy4AndAxpy1MultiplyThenAddInFp32() {
        SplittableRandom r = new SplittableRandom(3);
        for (int n : LENGTHS) {
            float[] b = values(r, n + 2), acc = values(r, 4 * n), want = acc.clone();
            float[] a = values(r, 4);
            for (int x = 0; x < 4; x++) for (int j = 0; j < n; j++) want[x * n + j] += a[x] * b[2 + j];
            RowKernels.axpy4(acc, n, a[0], a[1], a[2], a[3], b, 2);
            for (int j = 0; j < 4 * n; j++)
                assertEquals(Float.floatToIntBits(want[j]), Float.floatToIntBits(acc[j]), "axpy4 n=" + n + " element " + j);
            float[] acc1 = values(r, n + 1), want1 = acc1.clone();
            for (int j = 0; j < n; j++) want1[1 + j] += a[0] * b[2 + j];
            RowKernels.axpy1(acc1, 1, n, a[0], b, 2);
            for (int j = 0; j <= n; j++)
                assertEquals(Float.floatToIntBits(want1[j]), Float.floatToIntBits(acc1[j]), "axpy1 n=" + n + " element " + j);
        }
    }

    /** Values whose products and sums round (mixed magnitudes), so that another order or a fused multiply-add shows. */
    private static float[] values(SplittableRandom r, int n) {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) v[i] = (float) (r.nextGaussian() * Math.pow(10, r.nextInt(-3, 4)));
        return v;
    }
}
