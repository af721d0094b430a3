/**
 * grpo4j's public API for applications that embed it: choose a {@link org.grpo4j.Backend}, load a
 * {@link org.grpo4j.Model} (a Llama-family HF model directory with its tokenizer), {@link org.grpo4j.Model#generate
 * generate} completions with their log-probs ({@link org.grpo4j.Sampling}, {@link org.grpo4j.Completion},
 * {@link org.grpo4j.ChatMessage}); score them with {@link org.grpo4j.reward.Rewards} (built-in verifiers and your own
 * {@link org.grpo4j.reward.RewardFunction}s); train with {@link org.grpo4j.train.GrpoTrainer} and
 * {@link org.grpo4j.train.GrpoConfig}.
 *
 * <p>The API is these three packages: {@code org.grpo4j}, {@code org.grpo4j.reward} and {@code org.grpo4j.train}.
 * Everything under {@code org.grpo4j.internal} (and the JNI binding {@code org.grpo4j.bindings}) is implementation:
 * public only so that its packages can reach each other, without compatibility promises, and may change in any
 * release. Each public type states its thread safety. The coordinates, layout and decisions: docs/api.md.
 */
package org.grpo4j;
