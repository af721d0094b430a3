/**
 * GRPO training: {@link org.grpo4j.train.GrpoTrainer} runs the Tulu 3.1 RLVR recipe configured by a
 * {@link org.grpo4j.train.GrpoConfig}.
 */
package org.grpo4j.train;
