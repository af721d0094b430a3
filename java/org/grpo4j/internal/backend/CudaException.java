package org.grpo4j.internal.backend;

/** A CUDA (or cuBLAS / NCCL) call failed: names the call and the library's error string. */
public final class CudaException extends RuntimeException {
    private final int code;

    public CudaException(String call, int code, String name, String description) {
        super(call + " failed: " + description + " (" + name + ", error " + code + ")");
        this.code = code;
    }

    public int code() { return code; }
}
