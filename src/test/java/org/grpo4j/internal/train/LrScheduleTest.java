package org.grpo4j.internal.train;

import org.grpo4j.train.GrpoConfig;
import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * Each scheduler type against transformers' published lr_lambda formulas (optimization.py: get_linear_schedule_with_warmup,
 * get_cosine_schedule_with_warmup with num_cycles 0.5, get_cosine_with_hard_restarts_schedule_with_warmup with
 * num_cycles 1, get_polynomial_decay_schedule_with_warmup with lr_end 1e-7 and power 1, get_constant_schedule,
 * get_constant_schedule_with_warmup), written out here in float64; and which warm-up and horizon a config gets.
 */
class LrScheduleTest {
    static final double BASE = 3e-4;
    static final int W = 10;
    static final long T = 110;
    static final long[] STEPS = {0, 1, 5, 9, 10, 11, 35, 60, 84, 109, 110, 111, 150, 250};

    /** transformers' lambdas, as published (the base rate multiplies them in LambdaLR). */
    static double hf(String type, long s, int w, long t) {
        double warm = (double) s / Math.max(1, w);
        double progress = (double) (s - w) / Math.max(1, t - w);
        switch (type) {
            case "constant": return 1.0;
            case "constant_with_warmup": return s < w ? (double) s / Math.max(1.0, w) : 1.0;
            case "linear": return s < w ? warm : Math.max(0.0, (double) (t - s) / Math.max(1, t - w));
            case "cosine": return s < w ? warm : Math.max(0.0, 0.5 * (1.0 + Math.cos(Math.PI * 0.5 * 2.0 * progress)));
            case "cosine_with_restarts":
                if (s < w) return warm;
                if (progress >= 1.0) return 0.0;
                return Math.max(0.0, 0.5 * (1.0 + Math.cos(Math.PI * ((1 * progress) % 1.0))));
            case "polynomial": {
                double lrEnd = 1e-7, power = 1.0;
                if (s < w) return warm;
                if (s > t) return lrEnd / BASE;
                double pctRemaining = 1 - (double) (s - w) / (t - w);
                return ((BASE - lrEnd) * Math.pow(pctRemaining, power) + lrEnd) / BASE;
            }
            default: throw new AssertionError(type);
        }
    }

    @Test
    void everyTypeFollowsItsFormula() {
        assertEquals(List.of("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"), LrSchedule.TYPES);
        for (String type : LrSchedule.TYPES) {
            LrSchedule s = new LrSchedule(type, BASE, W, T);
            for (long step : STEPS) assertEquals(BASE * hf(type, step, W, T), s.at(step), 1e-18, type + " at step " + step);
            LrSchedule noWarm = new LrSchedule(type, BASE, 0, T);
            for (long step : STEPS) assertEquals(BASE * hf(type, step, 0, T), noWarm.at(step), 1e-18, type + " without warm-up at step " + step);
        }
    }

    @Test
    void landmarksOfTheFormulas() {
        // values that follow from the formulas by hand, as a check on the test's own transcription
        assertEquals(0.0, new LrSchedule("linear", BASE, W, T).at(0));
        assertEquals(BASE / 2, new LrSchedule("linear", BASE, W, T).at(5), 1e-18);
        assertEquals(BASE / 2, new LrSchedule("linear", BASE, W, T).at(60), 1e-18);
        assertEquals(BASE / 2, new LrSchedule("cosine", BASE, W, T).at(60), 1e-18);       // half-way: (1 + cos(pi/2)) / 2
        assertEquals(0.0, new LrSchedule("cosine", BASE, W, T).at(110), 1e-18);
        assertEquals(BASE / 2, new LrSchedule("cosine", BASE, W, T).at(160), 1e-18);      // HF's cosine rises again past the horizon
        assertEquals(0.0, new LrSchedule("cosine_with_restarts", BASE, W, T).at(160));
        assertEquals(1e-7, new LrSchedule("polynomial", BASE, W, T).at(110), 1e-18);      // lr_end at the horizon and beyond
        assertEquals(1e-7, new LrSchedule("polynomial", BASE, W, T).at(500), 1e-18);
        assertEquals(BASE, new LrSchedule("constant", BASE, W, T).at(0), "HF's constant schedule ignores num_warmup_steps");
        assertEquals(0.0, new LrSchedule("constant_with_warmup", BASE, W, T).at(0));
    }

    @Test
    void invalidSchedulesAreRefused() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> new LrSchedule("inverse_sqrt", BASE, 0, T));
        assertTrue(e.getMessage().contains("constant_with_warmup"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> new LrSchedule("polynomial", 1e-7, 0, T));
        assertTrue(e.getMessage().contains("lr_end"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> new LrSchedule("polynomial", BASE, 10, 10));
        e = assertThrows(IllegalArgumentException.class, () -> load("lr_scheduler_type=\"cosine_warm\""));
        assertTrue(e.getMessage().contains("lr_scheduler_type must be one of linear, cosine"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> load("lr_scheduler_compat=\"open-instruct\""));
        assertTrue(e.getMessage().contains("lr_scheduler_compat"), e.getMessage());
    }

    /** examples/tiny-arith.json: 160 steps x 2 optimizer steps (128 completions / mini-batch 64), num_epochs 1. */
    static GrpoConfig load(String... sets) throws Exception {
        return GrpoConfig.load(Path.of("examples/tiny-arith.json"), new ArrayList<>(List.of(sets)));
    }

    @Test
    void compatReproducesTheReference() throws Exception {
        String compat = "lr_scheduler_compat=open-instruct-3f37c29";
        // G:645-648: horizon = num_training_steps x num_train_epochs x num_epochs; warm-up = int(horizon x warmup_ratio), always
        LrSchedule s = LrSchedule.of(load(compat, "lr_scheduler_type=linear", "warm_up_steps=10"));
        assertEquals(new LrSchedule("linear", 1e-3, 0, 160), s, "warm_up_steps ignored, horizon without the mini-batches");
        s = LrSchedule.of(load(compat, "lr_scheduler_type=linear", "warmup_ratio=0.1"));
        assertEquals(new LrSchedule("linear", 1e-3, 16, 160), s);
        s = LrSchedule.of(load(compat, "lr_scheduler_type=constant", "warmup_ratio=0.1"));
        assertEquals(1e-3, s.at(0), "constant ignores warm-up in HF");
        List<String> notes = LrSchedule.notes(load(compat, "lr_scheduler_type=linear", "warm_up_steps=10"));
        assertTrue(notes.stream().anyMatch(n -> n.contains("warm_up_steps 10 is ignored")), notes.toString());
        assertTrue(notes.stream().anyMatch(n -> n.contains("horizon of 160 optimizer steps, not the run's 320")), notes.toString());
    }

    @Test
    void grpo4jHonoursWarmUpAndSaysWhereTheReferenceWouldNot() throws Exception {
        GrpoConfig c = load("lr_scheduler_type=constant", "warm_up_steps=10");
        assertEquals(new LrSchedule("constant_with_warmup", 1e-3, 10, 320), LrSchedule.of(c), "true horizon; constant warms up");
        assertEquals(5e-4, LrSchedule.of(c).at(5), 1e-18);
        List<String> notes = LrSchedule.notes(c);
        assertEquals(2, notes.size(), notes.toString());
        assertTrue(notes.get(0).contains("warm_up_steps 10 is honoured; open-instruct 3f37c29 ignores it"), notes.get(0));
        assertTrue(notes.get(1).contains("HF's constant schedule (the reference's) ignores warm-up"), notes.get(1));
        assertEquals(32, LrSchedule.of(load("lr_scheduler_type=linear", "warmup_ratio=0.1", "warm_up_steps=10")).warmup(),
                "warmup_ratio takes precedence over warm_up_steps, as the reference's Args say");
        assertTrue(LrSchedule.notes(load()).isEmpty(), "the demo's constant schedule without warm-up is the reference's");
        assertTrue(LrSchedule.notes(GrpoConfig.load(Path.of("configs/tulu-3.1-8b-grpo.json"), List.of())).isEmpty());
        // a warm-up as long as the run: the rate never reaches learning_rate, said with the most it reaches
        List<String> whole = LrSchedule.notes(load("lr_scheduler_type=linear", "warm_up_steps=1000000"));
        assertTrue(whole.stream().anyMatch(n -> n.startsWith("the warm-up (1000000 optimizer steps) covers the whole run (320 optimizer steps):"
                + " the learning rate never reaches learning_rate 0.001 (at most 3.19e-07)")), whole.toString()); // 0.001 x 319 / 1e6
        assertTrue(LrSchedule.notes(load("lr_scheduler_type=linear", "warm_up_steps=319")).stream().noneMatch(n -> n.contains("covers the whole run")),
                "a warm-up that ends before the last step");
    }
}
