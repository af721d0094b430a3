package org.grpo4j.internal.backend;

import jdk.incubator.vector.DoubleVector;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
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

    private static final VectorSpecies<Float> F4 = FloatVector.SPECIES_128;
    private static final VectorSpecies<Double> D4 = DoubleVector.SPECIES_256;

    /** {@link RowKernels#dot4}: its four fp32 lanes are one 128-bit vector's. */
    static double dot4(float[] a, int ao, float[] b, int bo, int d) {
        FloatVector acc = FloatVector.zero(F4);
        int x = 0;
        for (; x + 4 <= d; x += 4) acc = acc.add(FloatVector.fromArray(F4, a, ao + x).mul(FloatVector.fromArray(F4, b, bo + x)));
        double dot = ((double) acc.lane(0) + acc.lane(1)) + ((double) acc.lane(2) + acc.lane(3));
        for (; x < d; x++) dot += a[ao + x] * b[bo + x];
        return dot;
    }

    /** {@link RowKernels#axpyDouble}: four lanes at a time, b widened from fp32 (exact). */
    static void axpyDouble(double[] acc, double s, float[] b, int bo, int d) {
        int x = 0;
        for (; x + 4 <= d; x += 4) {
            DoubleVector bv = (DoubleVector) FloatVector.fromArray(F4, b, bo + x).convertShape(VectorOperators.F2D, D4, 0);
            DoubleVector.fromArray(D4, acc, x).add(bv.mul(s)).intoArray(acc, x);
        }
        for (; x < d; x++) acc[x] += s * b[bo + x];
    }
}
