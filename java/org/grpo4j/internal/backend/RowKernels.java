package org.grpo4j.internal.backend;

/**
 * The CPU's inner loops: the matmul's acc[x*n + j] += a_x * b[off + j] for 4 rows (or 1) of acc, and the LM head's
 * four-lane dot product and double-precision axpy. When the JDK's
 * jdk.incubator.vector module is resolved (tools/grpo4j and the tests pass --add-modules jdk.incubator.vector) the
 * loops run on SIMD lanes; otherwise in plain Java. Both compute each element as fl(acc + fl(a * b)) — a multiply
 * then an add, never fused — so results are bitwise identical either way.
 */
final class RowKernels {
    private RowKernels() {}

    /** True when the SIMD kernels are in use. */
    static final boolean VECTOR = ModuleLayer.boot().findModule("jdk.incubator.vector").isPresent()
            && !Boolean.getBoolean("grpo4j.noVector");

    static void axpy4(float[] acc, int n, float a0, float a1, float a2, float a3, float[] b, int off) {
        if (VECTOR) {
            VectorRowKernels.axpy4(acc, n, a0, a1, a2, a3, b, off);
            return;
        }
        for (int j = 0; j < n; j++) {
            float bv = b[off + j];
            acc[j] += a0 * bv;
            acc[n + j] += a1 * bv;
            acc[2 * n + j] += a2 * bv;
            acc[3 * n + j] += a3 * bv;
        }
    }

    static void axpy1(float[] acc, int accOff, int n, float a, float[] b, int off) {
        if (VECTOR) {
            VectorRowKernels.axpy1(acc, accOff, n, a, b, off);
            return;
        }
        for (int j = 0; j < n; j++) acc[accOff + j] += a * b[off + j];
    }

    /**
     * a[ao..ao+d) . b[bo..bo+d) as the LM head sums it: fp32 products in four fp32 lanes (element x into lane x mod 4,
     * in order), the lanes combined in double as (l0 + l1) + (l2 + l3), then the last d mod 4 products added in double.
     */
    static double dot4(float[] a, int ao, float[] b, int bo, int d) {
        if (VECTOR) return VectorRowKernels.dot4(a, ao, b, bo, d);
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        int x = 0;
        for (; x + 4 <= d; x += 4) {
            s0 += a[ao + x] * b[bo + x];
            s1 += a[ao + x + 1] * b[bo + x + 1];
            s2 += a[ao + x + 2] * b[bo + x + 2];
            s3 += a[ao + x + 3] * b[bo + x + 3];
        }
        double dot = ((double) s0 + s1) + ((double) s2 + s3);
        for (; x < d; x++) dot += a[ao + x] * b[bo + x];
        return dot;
    }

    /** acc[0..d) += s * b[bo..bo+d), in double (each b widened exactly, a double multiply, then a double add). */
    static void axpyDouble(double[] acc, double s, float[] b, int bo, int d) {
        if (VECTOR) {
            VectorRowKernels.axpyDouble(acc, s, b, bo, d);
            return;
        }
        for (int x = 0; x < d; x++) acc[x] += s * b[bo + x];
    }
}
