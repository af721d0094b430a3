package org.grpo4j.internal.dist;

/** Reductions of {@link Communicator}: the sum, or the sum divided by the world size. */
public enum ReduceOp { SUM, AVG }
