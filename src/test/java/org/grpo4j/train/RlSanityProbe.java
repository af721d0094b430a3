package org.grpo4j.train;

import java.nio.file.Path;
import java.util.List;
import org.grpo4j.reward.RewardFunction;
import org.grpo4j.reward.Rewards;

/** Manual probe: GRPO on an easy reward (the response contains a given digit). */
public final class RlSanityProbe {
    public static void main(String[] a) throws Exception {
        GrpoConfig cfg = GrpoConfig.load(Path.of("examples/tiny-arith.json"), List.of("num_training_steps=" + a[0], "sft_warmup.steps=" + a[1],
                "learning_rate=" + a[2], "output_dir=/tmp/probe" + System.nanoTime()));
        try (Rewards r = new Rewards()) {
            r.register("gsm8k", (resp, gt, row) -> RewardFunction.Score.of(resp.contains("7") ? 10 : 0));
            try (GrpoTrainer t = GrpoTrainer.builder(cfg).rewards(r).build()) {
                t.run(null);
            }
        }
    }
}
