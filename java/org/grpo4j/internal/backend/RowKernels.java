package org.grpo4j.internal.backend;

/**
 * The CPU matmul's inner loops: acc[x*n + j] += a_x * b[off + j] for 4 rows (or 1) of acc. When the JDK's
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
}
