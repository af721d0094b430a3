package org.grpo4j.internal.train;

/** One completion of one prompt and what the step computes for it (its rank's data; nothing is shared). */
final class Rollout {
    int row, promptLen;
    int[] seq;          // prompt + loss tokens
    int[] targets;      // loss tokens
    int[] generated;    // the generated tokens (through the stop token or stop string)
    boolean hasStop, correct;
    int seqLen;
    double reward, advantage, formatScore;
    float[] old, ref;
    final double[] trainKl = new double[4]; // per-sequence sums of kl1..kl4 in the first epoch's training forward
}
