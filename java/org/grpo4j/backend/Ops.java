package org.grpo4j.backend;

import java.util.List;

/** Op names, shared by the backends, {@code grpo4j info --ops}, the conformance tests and the cuda/ files. */
public final class Ops {
    private Ops() {}

    public static final String FILL = "fill";
    public static final String SCALE = "scale";
    public static final String COPY = "copy";
    public static final String CAST = "cast";

    /** Every op in the Backend contract, in documentation order. */
    public static final List<String> ALL = List.of(FILL, SCALE, COPY, CAST);

    /** Ops that have a CUDA kernel in cuda/ (what CudaBackend implements), listed even where no GPU is present. */
    public static final java.util.Set<String> CUDA_KERNELS = java.util.Set.of(FILL, SCALE, COPY, CAST);
}
