package org.grpo4j.internal.backend;

/** A CUDA (or cuBLAS / NCCL) call failed: names the call and the library's error string. */
public final class CudaException extends RuntimeException {
    private final int code;

    public CudaException(String call, int code, String name, String description) {
        super(call + " failed: " + description + " (" + name + ", error " + code + ")");
        this.code = code;
    }

    private CudaException(String message, int code, CudaException cause) {
        super(message, cause);
        this.code = code;
    }

    public int code() { return code; }

    /** This failure with where it happened before it and what to do after it ("step 3: ...; the last checkpoint is ..."). */
    public CudaException at(String where, String then) {
        return new CudaException(where + ": " + getMessage() + (then.isEmpty() ? "" : "; " + then), code, this);
    }
}
