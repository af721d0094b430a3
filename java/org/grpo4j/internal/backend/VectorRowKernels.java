package org.grpo4j.internal.backend;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

/** SIMD twins of {@link RowKernels} (loaded only when jdk.incubator.vector is resolved). Multiply, then add: never fused. */
final class VectorRowKernels {
    private VectorRowKernels() {}

    private static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;

    static void axpy4(float[] acc, int n, float a0, float a1, float a2, float a3, float[] b, int off) {
        int j = 0, ub = S.loopBound(n);
        for (; j < ub; j += S.length()) {
            FloatVector bv = FloatVector.fromArray(S, b, off + j);
            FloatVector.fromArray(S, acc, j).add(bv.mul(a0)).intoArray(acc, j);
            FloatVector.fromArray(S, acc, n + j).add(bv.mul(a1)).intoArray(acc, n + j);
            FloatVector.fromArray(S, acc, 2 * n + j).add(bv.mul(a2)).intoArray(acc, 2 * n + j);
            FloatVector.fromArray(S, acc, 3 * n + j).add(bv.mul(a3)).intoArray(acc, 3 * n + j);
        }
        for (; j < n; j++) {
            float bv = b[off + j];
            acc[j] += a0 * bv;
            acc[n + j] += a1 * bv;
            acc[2 * n + j] += a2 * bv;
            acc[3 * n + j] += a3 * bv;
        }
    }

    static void axpy1(float[] acc, int accOff, int n, float a, float[] b, int off) {
        int j = 0, ub = S.loopBound(n);
        for (; j < ub; j += S.length())
            FloatVector.fromArray(S, acc, accOff + j).add(FloatVector.fromArray(S, b, off + j).mul(a)).intoArray(acc, accOff + j);
        for (; j < n; j++) acc[accOff + j] += a * b[off + j];
    }
}
