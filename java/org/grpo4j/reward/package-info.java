/**
 * Rewards: the {@link org.grpo4j.reward.Rewards} registry of reward functions by dataset name, with the built-in
 * GSM8K, MATH and IFEval verifiers, and {@link org.grpo4j.reward.RewardFunction} for your own.
 */
package org.grpo4j.reward;
