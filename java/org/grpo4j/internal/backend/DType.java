package org.grpo4j.internal.backend;

/** Element types of device tensors. */
public enum DType {
    FP32(4), BF16(2), INT32(4), INT64(8);

    private final int bytes;

    DType(int bytes) { this.bytes = bytes; }

    /** Size of one element in bytes. */
    public int bytes() { return bytes; }

    /** Lower-case name as used in messages and configs ("fp32", "bf16", ...). */
    public String label() { return name().toLowerCase(java.util.Locale.ROOT); }
}
