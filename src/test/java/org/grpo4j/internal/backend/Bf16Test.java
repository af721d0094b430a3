package org.grpo4j.internal.backend;

import static org.junit.jupiter.api.Assertions.*;

import java.math.BigDecimal;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** bf16 rounding against its definition: the nearest bf16 value, ties to the even mantissa. */
class Bf16Test {

    /** Independent reference: enumerate the two bf16 neighbours of x and pick the nearer with exact decimals. */
    static short nearestBf16(float x) {
        if (Float.isNaN(x)) return 0x7FFF;
        int bits = Float.floatToRawIntBits(x);
        short down = (short) (bits >>> 16);               // truncation toward zero in magnitude
        if ((bits & 0xFFFF) == 0) return down;            // exactly representable
        short up = (short) (down + 1);                    // next magnitude up (may become infinity)
        BigDecimal bx = new BigDecimal(x);
        BigDecimal dd = bx.subtract(new BigDecimal(Bf16.toFloat(down))).abs();
        float upF = Bf16.toFloat(up);
        if (Float.isInfinite(upF)) {
            // Round to infinity iff x >= the midpoint between the max finite and 2^128 (IEEE overflow rule).
            BigDecimal maxFinite = new BigDecimal(Bf16.toFloat(down)).abs();
            BigDecimal mid = maxFinite.add(new BigDecimal(2).pow(128)).divide(new BigDecimal(2));
            int c = bx.abs().compareTo(mid);
            if (c > 0 || (c == 0 && (down & 1) == 1)) return up;
            return down;
        }
        BigDecimal du = bx.subtract(new BigDecimal(upF)).abs();
        int c = dd.compareTo(du);
        if (c < 0) return down;
        if (c > 0) return up;
        return (down & 1) == 0 ? down : up;
    }

    @Test
    void roundingMatchesDefinitionOnRandomBitPatterns() {
        SplittableRandom r = new SplittableRandom(7);
        for (int k = 0; k < 200_000; k++) {
            float x = Float.intBitsToFloat(r.nextInt());
            short got = Bf16.fromFloat(x), want = nearestBf16(x);
            assertEquals(want, got, () -> "x=" + x + " bits=" + Integer.toHexString(Float.floatToRawIntBits(x)));
        }
    }

    @Test
    void tiesGoToEven() {
        // 1 + 2^-8 lies exactly between bf16 1.0 (even mantissa) and 1 + 2^-7 (odd): must round down to 1.0
        float tieDown = 1f + (float) Math.pow(2, -8);
        assertEquals(1f, Bf16.round(tieDown));
        // 1 + 3*2^-8 lies between 1+2^-7 (odd) and 1+2^-6 (even): must round up
        float tieUp = 1f + 3f * (float) Math.pow(2, -8);
        assertEquals(1f + (float) Math.pow(2, -6), Bf16.round(tieUp));
    }

    @Test
    void specialValues() {
        assertEquals((short) 0x7FFF, Bf16.fromFloat(Float.NaN));
        assertEquals(Float.POSITIVE_INFINITY, Bf16.round(Float.POSITIVE_INFINITY));
        assertEquals(Float.NEGATIVE_INFINITY, Bf16.round(Float.NEGATIVE_INFINITY));
        assertEquals(Float.POSITIVE_INFINITY, Bf16.round(Float.MAX_VALUE));
        assertEquals(-0f, Bf16.round(-0f));
        assertEquals(0x8000, Bf16.fromFloat(-0f) & 0xFFFF);
        for (int b = 0; b < 65536; b++) { // bf16 -> fp32 -> bf16 is the identity on every non-NaN pattern
            short h = (short) b;
            if (Float.isNaN(Bf16.toFloat(h))) continue;
            assertEquals(h, Bf16.fromFloat(Bf16.toFloat(h)));
        }
    }
}
