package org.grpo4j.internal.backend;

/** Java heap arrays: fp32 in float[], bf16 bits in short[], int32 in int[], int64 in long[]. */
final class CpuStorage extends Storage {
    float[] f;
    short[] h;
    int[] i;
    long[] l;

    CpuStorage(DType dtype, long elements) {
        super(dtype, elements);
        if (elements > Integer.MAX_VALUE - 8)
            throw new IllegalArgumentException("the CPU backend holds at most 2^31 elements per tensor, asked for " + elements);
        int n = (int) elements;
        switch (dtype) {
            case FP32 -> f = new float[n];
            case BF16 -> h = new short[n];
            case INT32 -> i = new int[n];
            case INT64 -> l = new long[n];
        }
    }

    @Override
    void free() {
        f = null;
        h = null;
        i = null;
        l = null;
    }
}
