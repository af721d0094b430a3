package org.grpo4j.internal.bench;

import java.util.function.IntConsumer;

/** Times repetitions of an operation on a device. */
public interface Timer {
    /**
     * Runs {@code op.accept(i)} for i = 0 .. warmup-1 untimed, then for i = warmup .. warmup+reps-1 timed, and returns
     * the {@code reps} times in milliseconds. {@code i} picks the buffer set, so the caller rotates inputs with it.
     */
    double[] time(IntConsumer op, int warmup, int reps);
}
