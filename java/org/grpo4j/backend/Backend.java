package org.grpo4j.backend;

import java.util.Set;

/**
 * The seam between grpo4j's model, rollout and trainer code and the hardware: memory, transfers and the ops on
 * device tensors. {@link CpuBackend} (pure Java, fp32) is the reference; {@link CudaBackend} runs the custom kernels.
 *
 * <p>Every op validates dtypes, shapes and devices before computing and throws {@link IllegalArgumentException}
 * naming the op and the shapes; nothing invalid ever reaches native code. Ops are asynchronous on CUDA (ordered on
 * the backend's stream); host copies synchronize.
 */
public interface Backend extends AutoCloseable {

    /** "cpu" or "cuda:N". */
    String name();

    /** A short description of the device (CPU threads, or GPU name and memory). */
    String description();

    /** The ops this backend implements (the names of {@link Ops}), for {@code grpo4j info --ops}. */
    Set<String> implementedOps();

    default boolean implementsOp(String op) { return implementedOps().contains(op); }

    // ---- memory ---------------------------------------------------------------------------------------------------

    /** A new tensor whose contents are unspecified (zero on the CPU, garbage on CUDA). */
    Tensor empty(DType dtype, int... shape);

    /** A new tensor filled with zeros. */
    default Tensor zeros(DType dtype, int... shape) {
        Tensor t = empty(dtype, shape);
        fill(t, 0);
        return t;
    }

    Tensor upload(float[] data, int... shape);

    Tensor upload(int[] data, int... shape);

    Tensor uploadBf16(short[] bits, int... shape);

    void copyFromHost(Tensor dst, float[] src);

    void copyFromHost(Tensor dst, int[] src);

    float[] downloadFloats(Tensor t);

    int[] downloadInts(Tensor t);

    short[] downloadBf16(Tensor t);

    /** Waits until every op issued so far has finished. */
    void synchronize();

    /** Bytes currently held by tensors this backend allocated and that are not yet closed. */
    long liveBytes();

    /** Number of live owning tensors. */
    long liveTensors();

    // ---- elementwise basics ---------------------------------------------------------------------------------------

    /** x[i] = value (fp32, bf16 rounded to nearest even, int32 truncated). */
    void fill(Tensor x, double value);

    /** x[i] = alpha * x[i] (fp32, bf16). */
    void scale(Tensor x, float alpha);

    /** dst = src, same dtype and element count (shapes may differ). */
    void copy(Tensor dst, Tensor src);

    /** dst = (dtype of dst) src: fp32 to bf16 rounds to nearest even; bf16 to fp32 is exact. Same element count. */
    void cast(Tensor dst, Tensor src);

    @Override
    void close();
}
