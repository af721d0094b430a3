package org.grpo4j.internal.backend;

/**
 * Philox4x32-10 (Salmon et al. 2011), the counter-based generator cuRAND and PyTorch use: a 10-round bijection of a
 * 128-bit counter under a 64-bit key. No state: (key, counter) always gives the same four 32-bit words, so any
 * element of any stream can be generated independently and replayed exactly.
 */
public final class Philox {
    private Philox() {}

    private static final int M0 = 0xD2511F53, M1 = 0xCD9E8D57, W0 = 0x9E3779B9, W1 = 0xBB67AE85;

    /** The four output words for counter (c0..c3) and key (k0, k1). */
    public static int[] philox4x32(int c0, int c1, int c2, int c3, int k0, int k1) {
        for (int r = 0; r < 10; r++) {
            long p0 = (M0 & 0xFFFFFFFFL) * (c0 & 0xFFFFFFFFL);
            long p1 = (M1 & 0xFFFFFFFFL) * (c2 & 0xFFFFFFFFL);
            int hi0 = (int) (p0 >>> 32), lo0 = (int) p0, hi1 = (int) (p1 >>> 32), lo1 = (int) p1;
            int n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
            c0 = n0;
            c1 = lo1;
            c2 = n2;
            c3 = lo0;
            k0 += W0;
            k1 += W1;
        }
        return new int[] {c0, c1, c2, c3};
    }

    /** A uniform double in [0, 1) from (seed, stream, step): 53 bits from the first two output words. */
    public static double uniform(long seed, int stream, int step) {
        int[] w = philox4x32(step, stream, 0, 0, (int) seed, (int) (seed >>> 32));
        long bits = ((w[0] & 0xFFFFFFFFL) << 21) ^ ((w[1] & 0xFFFFFFFFL) >>> 11);
        return (bits & ((1L << 53) - 1)) * 0x1.0p-53;
    }
}
