package org.grpo4j.internal.train;

import org.grpo4j.train.GrpoConfig;
import java.util.ArrayList;
import java.util.List;
import org.grpo4j.reward.RlvrRow;
import org.grpo4j.reward.Rewards;

/**
 * Phase 2 of a step: verifiable rewards (10/0, plus the optional R1 format reward), the non-stop penalty and the
 * group advantages, computed by each rank over its own rollouts exactly as the reference does per rank (its groups
 * are whole).
 */
final class ScoringPhase {
    private ScoringPhase() {}

    /** Verifier errors and timeouts of the step, and the first error (null when none) as "dataset \"x\": what". */
    record Result(int errors, int timeouts, String firstError) {}

    static Result run(RankState r, List<Rollout> rs) {
        GrpoConfig cfg = r.s.cfg();
        List<Rewards.Item> items = new ArrayList<>();
        for (Rollout o : rs) {
            RlvrRow row = r.s.train().row(o.row);
            items.add(new Rewards.Item(r.s.tok().decodeAsTransformers(o.targets, true), row.groundTruth(), row.dataset(), row));
        }
        List<Rewards.Result> res = r.s.rewards().scoreAll(items);
        double[] reward = new double[rs.size()];
        int errors = 0, timeouts = 0;
        String first = null;
        for (int k = 0; k < rs.size(); k++) {
            Rollout o = rs.get(k);
            o.reward = res.get(k).reward();
            o.correct = o.reward > 0; // verifiable_correct_rate counts the verifier's reward only
            o.reward += o.formatScore;
            if (res.get(k).error() != null) {
                errors++;
                if (first == null) first = "dataset \"" + items.get(k).dataset() + "\": " + res.get(k).error();
            }
            if (res.get(k).timedOut()) timeouts++;
            if (cfg.nonStopPenalty && !o.hasStop) o.reward = cfg.penaltyRewardValue;
            reward[k] = o.reward;
        }
        double[] a = Advantages.compute(reward, cfg.numberSamplesPerPrompt, cfg.advantageNormalization);
        for (int k = 0; k < rs.size(); k++) rs.get(k).advantage = a[k];
        return new Result(errors, timeouts, first);
    }
}
