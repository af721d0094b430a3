package org.grpo4j.internal.backend;

import static org.junit.jupiter.api.Assertions.*;

import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.Pointer;
import org.junit.jupiter.api.Test;

/**
 * The host alpha/beta that CublasGemm hands to cublasLtMatmul and cublasGemmStridedBatchedEx, both bound by the CUDA
 * presets as {@code const void*} ({@link Pointer}). Runs on any machine: {@link Pointer#memcpy} has the same binding,
 * so it reads exactly the bytes cuBLAS would read.
 */
class CublasScalarsTest {

    private static float readThroughVoidPointer(Pointer p) {
        try (FloatPointer dst = new FloatPointer(1)) {
            Pointer.memcpy(dst, p, 4);
            return dst.get(0);
        }
    }

    @Test
    void alphaAndBetaReachAVoidPointerParameterIntact() {
        CublasGemm.HostScalars s = new CublasGemm.HostScalars();
        for (float[] ab : new float[][] {{1f, 0f}, {1f, 1f}, {0.37f, -2.25f}, {-0f, Float.MIN_VALUE}}) {
            s.set(ab[0], ab[1]);
            assertEquals(Float.floatToRawIntBits(ab[0]), Float.floatToRawIntBits(readThroughVoidPointer(s.alpha)), "alpha");
            assertEquals(Float.floatToRawIntBits(ab[1]), Float.floatToRawIntBits(readThroughVoidPointer(s.beta)), "beta");
        }
    }

    /** Why beta has its own allocation: through a void* binding, a FloatPointer's position counts bytes, not floats. */
    @Test
    void aPositionedViewIsOffsetInBytesThroughAVoidPointer() {
        try (FloatPointer pair = new FloatPointer(2)) {
            pair.put(0, 1f).put(1, 0f); // alpha = 1, beta = 0 as the old code laid them out
            Pointer betaView = new FloatPointer(pair).position(1);
            float got = readThroughVoidPointer(betaView);
            assertNotEquals(0f, got, "a view at element 1 does not read beta");
            assertEquals(0x003f8000, Float.floatToRawIntBits(got), "it reads bytes 1..4: three bytes of alpha and one of beta");
        }
    }
}
