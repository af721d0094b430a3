package org.grpo4j.internal.backend;

/**
 * bfloat16 conversions on the CPU, bit-identical to CUDA's {@code __float2bfloat16_rn} / {@code __bfloat162float}.
 *
 * <p>fp32 to bf16 keeps the top 16 bits after rounding the low 16 to nearest, ties to even:
 * {@code (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16}. NaN becomes the canonical quiet NaN 0x7FFF (as CUDA does);
 * infinities and values that round past the largest finite bf16 become infinity. bf16 to fp32 is exact.
 */
public final class Bf16 {
    private Bf16() {}

    public static short fromFloat(float f) {
        int bits = Float.floatToRawIntBits(f);
        if ((bits & 0x7FFFFFFF) > 0x7F800000) return (short) 0x7FFF; // NaN
        int rounded = bits + 0x7FFF + ((bits >>> 16) & 1);
        return (short) (rounded >>> 16);
    }

    public static float toFloat(short h) {
        return Float.intBitsToFloat((h & 0xFFFF) << 16);
    }

    /** Rounds an fp32 value to the nearest bf16 value and returns it as fp32. */
    public static float round(float f) {
        return toFloat(fromFloat(f));
    }
}
