package usage;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;
import org.grpo4j.reward.RewardFunction;
import org.grpo4j.reward.Rewards;
import org.grpo4j.train.GrpoConfig;
import org.grpo4j.train.GrpoTrainer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * What an application embedding grpo4j writes: a config in code, its own reward, a listener. This package is outside
 * org.grpo4j, so it sees only the public API.
 */
class ApiExampleTest {

    /** The model of a one-step run of {@link #tiny} in {@code dir}/run (the API tests' checkpoint to load). */
    static java.nio.file.Path trainedModel(java.nio.file.Path dir) throws Exception {
        try (org.grpo4j.train.GrpoTrainer t = org.grpo4j.train.GrpoTrainer.builder(tiny(1)).outputDir(dir.resolve("run")).log(null).build()) {
            return t.run().outputDir().resolve("checkpoints/step_1/model");
        }
    }

    static GrpoConfig tiny(int steps) {
        GrpoConfig cfg = new GrpoConfig();
        cfg.modelNameOrPath = "init:tiny";
        cfg.datasetMixerList = List.of("examples/data/tiny-arith.jsonl", "64");
        cfg.localRolloutBatchSize = 4;
        cfg.numberSamplesPerPrompt = 4;
        cfg.localMiniBatchSize = 8;
        cfg.perDeviceTrainBatchSize = 4;
        cfg.responseLength = 8;
        cfg.numTrainingSteps = steps;
        cfg.learningRate = 1e-3;
        cfg.backend = "cpu";
        cfg.numEvals = 0;
        cfg.saveFreq = 0;
        return cfg;
    }

    @Test
    void embedTheTrainer(@TempDir Path tmp) throws Exception {
        GrpoConfig cfg = tiny(2);
        cfg.nonStopPenalty = false; // the random tiny model rarely stops: the penalty would replace most rewards
        List<Double> scores = new ArrayList<>();
        AtomicInteger calls = new AtomicInteger();
        double marker = 0.375; // no built-in verifier gives this (theirs are 10 or 0)
        try (Rewards rewards = new Rewards()) {
            // the rows say dataset "gsm8k": replace that verifier by the application's own function (called from
            // several threads at once, so it is thread-safe)
            rewards.register("gsm8k", (response, truth, row) -> {
                calls.incrementAndGet();
                return RewardFunction.Score.of(marker);
            });
            try (GrpoTrainer trainer = GrpoTrainer.builder(cfg).outputDir(tmp.resolve("run")).rewards(rewards).log(null).build()) {
                GrpoTrainer.Result r = trainer.run(new GrpoTrainer.Listener() {
                    @Override
                    public void onStep(int step, Map<String, Double> metrics) { scores.add(metrics.get("objective/scores")); }
                });
                assertEquals(2, r.lastStep());
                assertEquals(2, trainer.completedSteps());
                assertFalse(r.cancelled());
                assertEquals(2, r.metrics().size());
            }
        }
        assertEquals(2, scores.size());
        assertEquals(List.of(marker, marker), scores, "the scores come from the application's reward");
        assertEquals(2 * cfg.localRolloutBatchSize * cfg.numberSamplesPerPrompt, calls.get(), "one call per rollout scored");
        assertEquals(List.of("examples/data/tiny-arith.jsonl", "64"), cfg.datasetMixerList, "the trainer works on a copy of the config");

        GrpoConfig bad = new GrpoConfig();
        bad.modelNameOrPath = "init:tiny";
        bad.datasetMixerList = List.of("examples/data/tiny-arith.jsonl", "64");
        bad.localMiniBatchSize = 7; // does not divide 8 x 16
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> GrpoTrainer.builder(bad).log(null).build());
        assertTrue(e.getMessage().contains("local_mini_batch_size 7"), e.getMessage());
    }
}
