package org.grpo4j.reward;

/** Registers the MATH and IFEval verifiers. */
final class VerifierRegistry {
    private VerifierRegistry() {}

    static void registerMathAndIfEval(Rewards r, Compat compat, double reward) {
        r.register("math", RewardFunction.fromVerifier((resp, gt) -> MathVerifier.verify(resp, gt, compat), reward));
        r.register("ifeval", RewardFunction.fromVerifier((resp, gt) -> IfEval.verify(resp, gt, compat), reward));
    }
}
