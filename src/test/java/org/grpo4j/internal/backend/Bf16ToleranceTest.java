package org.grpo4j.internal.backend;

import static org.junit.jupiter.api.Assertions.*;

import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * The bf16 tolerances of the conformance suite (Conformance.bf16Tolerance, Conformance.assertCloseToCpu) against their
 * derivations: worst-case fp32 errors followed by one rounding always pass; errors beyond the bound do not.
 */
class Bf16ToleranceTest {
    static final double[][] FP32_TOLS = {{1e-6, 1e-6}, {2e-6 * Math.sqrt(513), 1e-5}, {2e-5, 2e-4}, {0, 1e-6}};

    /** A value off by exactly the fp32 tolerance (either side), as fp32. */
    static float worst(double want, double atol, double rtol, int side) {
        float y = (float) (want + side * (atol + rtol * Math.abs(want)));
        // fp32 rounding may push y a hair past the bound: step back inside it
        while (Math.abs(y - want) > atol + rtol * Math.abs(want)) y = Math.nextAfter(y, want);
        return y;
    }

    @Test
    void bf16ToleranceCoversOneRoundingOfAnyValueWithinTheFp32Tolerance() {
        SplittableRandom r = new SplittableRandom(1);
        for (double[] t : FP32_TOLS) {
            double[] tol = Conformance.bf16Tolerance(t[0], t[1]);
            for (int i = 0; i < 200_000; i++) {
                double want = r.nextGaussian() * Math.pow(10, r.nextInt(-4, 4));
                float y = worst(want, t[0], t[1], r.nextBoolean() ? 1 : -1);
                double got = Bf16.round(y);
                assertTrue(Math.abs(got - want) <= tol[0] + tol[1] * Math.abs(want),
                        () -> "want " + want + " y " + y + " RNE " + got + " tol " + java.util.Arrays.toString(tol));
            }
        }
    }

    @Test
    void bf16ToleranceRejectsTwoUlps() {
        // rtol' ~ 2^-8: a value two bf16 ulps off is rejected
        double[] tol = Conformance.bf16Tolerance(1e-6, 1e-6);
        double want = 1.5, off = want + 2 * Conformance.bf16Ulp(want);
        assertTrue(Math.abs(off - want) > tol[0] + tol[1] * want);
    }

    @Test
    void crossBackendToleranceCoversTwoBackendsRoundingTheirOwnFp32Values() {
        SplittableRandom r = new SplittableRandom(2);
        for (double[] t : FP32_TOLS) {
            float[] cpu = new float[100_000], got = new float[cpu.length];
            for (int i = 0; i < cpu.length; i++) {
                double y = r.nextGaussian() * Math.pow(10, r.nextInt(-4, 4));
                cpu[i] = Bf16.round(worst(y, t[0], t[1], 1));
                got[i] = Bf16.round(worst(y, t[0], t[1], -1));
            }
            Conformance.assertCloseToCpu("worst case " + java.util.Arrays.toString(t), cpu, got, true, t[0], t[1]);
        }
    }

    @Test
    void crossBackendToleranceRejectsTwoUlpsAndRequiresEqualityForExactOps() {
        float c = 1.5f, twoUlps = (float) (1.5 + 2 * Conformance.bf16Ulp(1.5)), oneUlp = (float) (1.5 + Conformance.bf16Ulp(1.5));
        Conformance.assertCloseToCpu("one ulp", new float[] {c}, new float[] {oneUlp}, true, 1e-6, 1e-6);
        assertThrows(AssertionError.class, () -> Conformance.assertCloseToCpu("two ulps", new float[] {c}, new float[] {twoUlps}, true, 1e-6, 1e-6));
        assertThrows(AssertionError.class, () -> Conformance.assertCloseToCpu("exact op", new float[] {c}, new float[] {oneUlp}, true, 0, 0));
        assertThrows(AssertionError.class, () -> Conformance.assertCloseToCpu("NaN", new float[] {c}, new float[] {Float.NaN}, true, 1, 1));
        assertEquals(0x1p-7, Conformance.bf16Ulp(1.0));
        assertEquals(0x1p-7, Conformance.bf16Ulp(-1.99));
        assertEquals(0x1p-6, Conformance.bf16Ulp(2.0));
    }
}
