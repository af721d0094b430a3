package org.grpo4j.internal.backend;

import java.util.List;
import java.util.Set;

/** Op names, shared by the backends, {@code grpo4j info --ops}, the conformance tests and the cuda/ files. */
public final class Ops {
    private Ops() {}

    public static final String FILL = "fill";
    public static final String SCALE = "scale";
    public static final String COPY = "copy";
    public static final String CAST = "cast";
    public static final String ADD = "add";
    public static final String AXPY = "axpy";
    public static final String EMBEDDING = "embedding";
    public static final String EMBEDDING_BACKWARD = "embeddingBackward";
    public static final String RMS_NORM = "rmsNorm";
    public static final String RMS_NORM_BACKWARD = "rmsNormBackward";
    public static final String MATMUL = "matmul";
    public static final String ROPE = "rope";
    public static final String ROPE_BACKWARD = "ropeBackward";
    public static final String ATTENTION = "attention";
    public static final String ATTENTION_BACKWARD = "attentionBackward";
    public static final String KV_APPEND = "kvAppend";
    public static final String GATHER_TOKENS = "gatherTokens";
    public static final String DECODE_ATTENTION = "decodeAttention";
    public static final String SWIGLU = "swiglu";
    public static final String SWIGLU_BACKWARD = "swigluBackward";
    public static final String TOKEN_LOGPROBS = "tokenLogprobs";
    public static final String TOKEN_LOGPROBS_BACKWARD = "tokenLogprobsBackward";
    public static final String GRPO_LOSS = "grpoLoss";
    public static final String SAMPLE = "sample";
    public static final String ADAMW = "adamW";
    public static final String SUM_SQUARES = "sumSquares";

    /** Every op in the Backend contract, in documentation order. */
    public static final List<String> ALL = List.of(FILL, SCALE, COPY, CAST, ADD, AXPY, EMBEDDING, EMBEDDING_BACKWARD,
            RMS_NORM, RMS_NORM_BACKWARD, MATMUL, ROPE, ROPE_BACKWARD, ATTENTION, ATTENTION_BACKWARD, KV_APPEND,
            DECODE_ATTENTION, SWIGLU, SWIGLU_BACKWARD, TOKEN_LOGPROBS, TOKEN_LOGPROBS_BACKWARD, GRPO_LOSS, SAMPLE,
            ADAMW, SUM_SQUARES, GATHER_TOKENS);

    /**
     * Ops that have a CUDA kernel in cuda/ (what CudaBackend implements), listed even where no GPU is present. matmul
     * is not here: it runs on cuBLASLt and is available where cuBLAS loads ({@link CudaBackend#implementedOps()}); the
     * fused LM-head ops (tokenLogprobs, tokenLogprobsBackward, grpoLoss) are here but also need cuBLAS for their GEMMs.
     */
    public static final Set<String> CUDA_KERNELS = Set.of(FILL, SCALE, COPY, CAST, ADD, AXPY, EMBEDDING,
            EMBEDDING_BACKWARD, RMS_NORM, RMS_NORM_BACKWARD, ROPE, ROPE_BACKWARD, KV_APPEND, SWIGLU, SWIGLU_BACKWARD,
            ADAMW, SUM_SQUARES, GATHER_TOKENS,
            ATTENTION, ATTENTION_BACKWARD, DECODE_ATTENTION, // issue 12
            TOKEN_LOGPROBS, TOKEN_LOGPROBS_BACKWARD, GRPO_LOSS, SAMPLE); // issue 13
}
