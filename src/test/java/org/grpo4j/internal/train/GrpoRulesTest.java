package org.grpo4j.internal.train;

import org.grpo4j.train.GrpoConfig;
import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;

/** Advantage, aggregation, schedule and config rules against hand-checked cases from grpo-reference.md. */
class GrpoRulesTest {

    @Test
    void groupAdvantagesUseTheUnbiasedStd() {
        // group [10, 0, 0, 0]: mean 2.5, unbiased std sqrt((7.5^2 + 3 * 2.5^2) / 3) = 5
        double[] a = Advantages.compute(new double[] {10, 0, 0, 0, 10, 10, 10, 10}, 4);
        assertArrayEquals(new double[] {1.5, -0.5, -0.5, -0.5}, java.util.Arrays.copyOf(a, 4), 1e-8);
        for (int i = 4; i < 8; i++) assertEquals(0.0, a[i], "an all-correct group has zero advantage");
        // section 3: k correct of 16 gives A_correct = (1 - k/16) / sqrt(k(16-k)/240)
        double[] r = new double[16];
        for (int i = 0; i < 4; i++) r[i] = 10;
        double[] g = Advantages.compute(r, 16);
        assertEquals((1 - 4 / 16.0) / Math.sqrt(4 * 12 / 240.0), g[0], 1e-7);
        assertEquals(-(4 / 16.0) / Math.sqrt(4 * 12 / 240.0), g[15], 1e-7);
        assertEquals(5.0, Advantages.meanGroupStd(new double[] {10, 0, 0, 0, 1, 1, 1, 1}, 4) * 2, 1e-12);
        assertThrows(IllegalArgumentException.class, () -> Advantages.compute(new double[] {1, 2, 3}, 2));
    }

    @Test
    void theMetricsKlIsTheRolloutsOldMinusReferenceClamped() {
        // d = old - ref per token: 0.5, -0.5, 0 and 49 (clamped to 40); the fifth token is past n and not counted
        float[] old = {-1.0f, -2.5f, -0.3f, -1f, -0.1f}, ref = {-1.5f, -2.0f, -0.3f, -50f, -60f};
        double[] d = {0.5, -0.5, 0, 40};
        double k1 = 0, k2 = 0, k3 = 0;
        for (double x : d) {
            k1 += x;
            k2 += x * x / 2;
            k3 += Math.exp(-x) - 1 + x; // (the k3 estimator: r - 1 - log r with r = p_ref / p = e^-d)
        }
        double[] kl = StepMetrics.sequenceKl(old, ref, 4);
        assertEquals(k1, kl[0], 1e-12, "kl1");
        assertEquals(k2, kl[1], 1e-12, "kl2");
        assertEquals(k3, kl[2], 1e-12 * k3, "kl3");
        assertEquals(k1, kl[3], 1e-12, "kl4 at ratio 1 (the rollout's own policy)");
        // the other side of the clamp: d = -45 counts as -40
        double[] low = StepMetrics.sequenceKl(new float[] {-50f}, new float[] {-5f}, 1);
        assertEquals(-40, low[0], 0);
        assertEquals(800, low[1], 0);
    }

    @Test
    void centeredAdvantagesOnlySubtractTheGroupMean() {
        double[] r = {10, 0, 0, 0, 3, 1, 1, 1};
        double[] c = Advantages.compute(r, 4, "centered");
        double[] s = Advantages.compute(r, 4, "standard");
        assertArrayEquals(new double[] {7.5, -2.5, -2.5, -2.5, 1.5, -0.5, -0.5, -0.5}, c, 0);
        assertArrayEquals(Advantages.compute(r, 4), s, 0, "standard is the default");
        // the same signs and the same ratios within a group: centered is standard times the group's std
        for (int i = 0; i < 8; i++) assertEquals(c[i], s[i] * (Advantages.groupStd(r, i / 4 * 4, 4) + 1e-8), 1e-12);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Advantages.compute(r, 4, "whitened"));
        assertTrue(e.getMessage().contains("advantage_normalization") && e.getMessage().contains("whitened"), e.getMessage());
    }

    @Test
    void lossAggregationWeights() {
        // a micro-batch with 5 loss tokens, 4 accumulation steps, mini-batch of 40 tokens over 8 sequences, L = 12
        assertEquals(1.0 / 20, LossAggregation.MICRO_TOKEN_MEAN.weight(3, 5, 4, 40, 8, 12), 1e-15);
        assertEquals(1.0 / 40, LossAggregation.TOKEN_MEAN.weight(3, 5, 4, 40, 8, 12), 1e-15);
        assertEquals(1.0 / 24, LossAggregation.SEQ_MEAN_TOKEN_MEAN.weight(3, 5, 4, 40, 8, 12), 1e-15);
        assertEquals(1.0 / 96, LossAggregation.DR_GRPO.weight(3, 5, 4, 40, 8, 12), 1e-15);
        // token_mean weights of a whole mini-batch sum to 1; micro_token_mean's sum to 1 over the GAS micro-batches
        assertEquals(1.0, 40 * LossAggregation.TOKEN_MEAN.weight(1, 5, 4, 40, 8, 12), 1e-12);
        assertThrows(IllegalArgumentException.class, () -> LossAggregation.parse("mean"));
    }

    @Test
    void lrScheduleWarmupAndDecay() {
        LrSchedule c = new LrSchedule("constant", 1e-3, 0, 100);
        assertEquals(1e-3, c.at(0));
        assertEquals(1e-3, c.at(99));
        LrSchedule l = new LrSchedule("linear", 1e-3, 10, 110);
        assertEquals(0.0, l.at(0));
        assertEquals(5e-4, l.at(5), 1e-15);
        assertEquals(1e-3, l.at(10), 1e-15);
        assertEquals(5e-4, l.at(60), 1e-15);
        assertEquals(0.0, l.at(110), 1e-15);
    }

    @Test
    void tuluConfigDerivesTheReferenceQuantities() throws Exception {
        GrpoConfig c = GrpoConfig.load(Path.of("configs/tulu-3.1-8b-grpo.json"), List.of());
        assertEquals(48, c.rolloutBatchSize());
        assertEquals(768, c.completionsPerStep());
        assertEquals(384, c.miniBatchSize());
        assertEquals(2, c.optimizerStepsPerTrainingStep());
        assertEquals(24, c.gradientAccumulationSteps());
        assertEquals(13020, c.trainingSteps());
        assertEquals(434, c.evalFreq());
        assertEquals(0.2, c.epsHigh(), 0);
        GrpoConfig six = GrpoConfig.load(Path.of("configs/tulu-3.1-8b-grpo.json"),
                List.of("world_size=6", "local_rollout_batch_size=8", "local_mini_batch_size=64", "cliprange_high=0.28"));
        assertEquals(48, six.rolloutBatchSize()); // the reference's single-node 6 x 8 layout, section 0
        assertEquals(32, six.gradientAccumulationSteps());
        assertEquals(0.28, six.epsHigh(), 0);
    }

    @Test
    void configErrorsAreOneClearLine() {
        Path f = Path.of("configs/tulu-3.1-8b-grpo.json");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> GrpoConfig.load(f, List.of("learning_rat=1e-6")));
        assertTrue(e.getMessage().contains("unknown key \"learning_rat\""), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> GrpoConfig.load(f, List.of("beta=\"lots\"")));
        assertTrue(e.getMessage().contains("\"beta\"") && e.getMessage().contains("wrong type"), e.getMessage());
        // a value given by --set is named by it, not by the file (whose value was fine)
        e = assertThrows(IllegalArgumentException.class, () -> GrpoConfig.load(f, List.of("num_training_steps=1.5")));
        assertTrue(e.getMessage().startsWith("--set num_training_steps=1.5: key \"num_training_steps\" has the wrong type"), e.getMessage());
        for (String[] c : new String[][] {{"advantage_normalization=whiten", "advantage_normalization must be"},
                {"sft_warmup={\"steps\": \"x\"}", "key \"sft_warmup.steps\" has the wrong type"}, {"learning_rat.x=1", "unknown key \"learning_rat\""},
                {"local_mini_batch_size=50", "local_mini_batch_size 50 must divide"}}) {
            e = assertThrows(IllegalArgumentException.class, () -> GrpoConfig.load(f, List.of(c[0])));
            assertTrue(e.getMessage().startsWith("--set " + c[0] + ": " ) && e.getMessage().contains(c[1]), e.getMessage());
        }
        e = assertThrows(IllegalArgumentException.class, () -> GrpoConfig.load(f, List.of("local_mini_batch_size=50")));
        assertTrue(e.getMessage().contains("local_mini_batch_size 50 must divide") && e.getMessage().contains("96"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> GrpoConfig.load(f, List.of("per_device_train_batch_size=5")));
        assertTrue(e.getMessage().contains("per_device_train_batch_size 5"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> GrpoConfig.load(f, List.of("kl_estimator=kl9")));
        assertTrue(e.getMessage().contains("kl9"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> GrpoConfig.load(f, List.of("advantage_normalization=whiten")));
        assertTrue(e.getMessage().contains("advantage_normalization must be standard or centered") && e.getMessage().contains("whiten"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> GrpoConfig.load(f, List.of("number_samples_per_prompt=1")));
        assertTrue(e.getMessage().contains("number_samples_per_prompt"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> GrpoConfig.load(f, List.of("sft_warmup.stepz=3")));
        assertTrue(e.getMessage().contains("stepz"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> GrpoConfig.load(f, List.of("no-equals-sign")));
        assertTrue(e.getMessage().contains("key=value"), e.getMessage());
    }
}
