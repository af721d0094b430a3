package org.grpo4j.internal.train;

import org.grpo4j.train.GrpoConfig;
import java.util.ArrayList;
import java.util.List;
import org.grpo4j.internal.data.ShufflingIterator;
import org.grpo4j.internal.reward.FormatReward;
import org.grpo4j.internal.rollout.Completion;
import org.grpo4j.internal.rollout.Generator;
import org.grpo4j.internal.rollout.SamplingParams;
import org.grpo4j.internal.rollout.Truncation;

/**
 * Phase 1 of a step: the rank samples number_samples_per_prompt completions for its slice of the step's global
 * prompt batch (rank r takes prompts [r x local, (r + 1) x local): a prompt's group never splits across ranks) and
 * post-processes them with the reference's rules (grpo-reference.md section 2). Sample j of global prompt i draws
 * from random stream i x n + j, so the completions do not depend on the world size.
 */
final class RolloutPhase {
    private RolloutPhase() {}

    record Result(List<Rollout> rollouts, Generator.Stats stats) {}

    static Result run(RankState r, int step) {
        GrpoConfig cfg = r.s.cfg();
        int local = cfg.localRolloutBatchSize, n = cfg.numberSamplesPerPrompt, eos = r.s.eos();
        int[] batch = ShufflingIterator.rankSlice(r.iterator.next(), r.rank, r.world);
        List<int[]> prompts = new ArrayList<>();
        for (int i : batch) prompts.add(r.s.train().prompt(i));
        SamplingParams sp = new SamplingParams(n, (float) cfg.temperature, (float) cfg.topP, 0, cfg.responseLength, r.s.stopIds(),
                Trainer.mix(cfg.seed, step, 1), r.s.stopStrings(), r.rank * local);
        List<List<Completion>> comps;
        try {
            comps = r.generator.generate(prompts, sp);
        } catch (org.grpo4j.internal.backend.Memory.Shortfall e) {
            // the pool was sized from what was free before the first step: say which settings size it
            throw new org.grpo4j.internal.backend.Memory.Shortfall("step " + step + "'s generation: " + e.getMessage() + " (the KV pool was sized before"
                    + " the first step, " + (cfg.kvCacheMib > 0 ? "kv_cache_mib " + cfg.kvCacheMib : "kv_cache_fraction " + cfg.kvCacheFraction
                    + " of what was free then") + "; memory taken since, such as the kernels' scratch or NCCL's buffers, leaves less now: resume with a"
                    + " smaller " + (cfg.kvCacheMib > 0 ? "kv_cache_mib" : "kv_cache_fraction, or a kv_cache_mib") + ")", e);
        }
        List<Rollout> rs = new ArrayList<>();
        for (int p = 0; p < batch.length; p++)
            for (int j = 0; j < n; j++) {
                Rollout o = new Rollout();
                o.row = batch[p];
                o.promptLen = prompts.get(p).length;
                o.generated = comps.get(p).get(j).tokens();
                Truncation.Response resp = Truncation.apply(o.generated, eos, cfg.responseLength);
                o.targets = resp.lossTokens();
                o.seqLen = resp.sequenceLength();
                // the reference's contain_stop_token: a stop token, and a sequence length of at least min_response_length (G:1170-1173)
                o.hasStop = resp.hasStop() && o.seqLen >= cfg.minResponseLength;
                // the R1 format reward scores the response decoded with its special tokens (G:1082-1086, 1138-1139)
                if (cfg.addR1StyleFormatReward) o.formatScore = FormatReward.score(r.s.tok().decodeLenient(o.generated, false), cfg.r1StyleFormatReward);
                o.seq = Trainer.concat(prompts.get(p), o.targets);
                rs.add(o);
            }
        return new Result(rs, r.generator.lastStats());
    }
}
