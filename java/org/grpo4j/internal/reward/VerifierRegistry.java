package org.grpo4j.internal.reward;

import org.grpo4j.reward.Compat;
import org.grpo4j.reward.RewardFunction;
import org.grpo4j.reward.Rewards;

/** Registers the built-in verifiers: GSM8K, MATH and IFEval. */
public final class VerifierRegistry {
    private VerifierRegistry() {}

    public static void registerBuiltins(Rewards r, Compat compat, double reward) {
        r.register("gsm8k", RewardFunction.fromVerifier((resp, gt) -> Gsm8k.verify(resp, gt, compat), reward));
        r.register("math", RewardFunction.fromVerifier((resp, gt) -> MathVerifier.verify(resp, gt, compat), reward));
        r.register("ifeval", RewardFunction.fromVerifier((resp, gt) -> IfEval.verify(resp, gt, compat), reward));
    }
}
