package org.grpo4j.internal.train;

import static org.junit.jupiter.api.Assertions.*;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.grpo4j.internal.util.TestFiles;
import org.grpo4j.train.GrpoConfig;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** What --set may change when a run resumes (ResumeChanges), end to end on the tiny model and key by key. */
class ResumeChangesTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    static List<String> run(Path out, int steps) {
        List<String> s = GrpoTrainerTest.small(out, steps);
        s.add("num_evals=0"); // evals' lines would differ with the horizon
        return s;
    }

    static Path ck(Path tmp) { return tmp.resolve("run/checkpoints/step_2"); }

    @Test
    void everyConfigKeyHasExactlyOneClass() throws Exception {
        JsonNode keys = JSON.readTree(new GrpoConfig().toJson());
        List<String> missing = new ArrayList<>(), twice = new ArrayList<>();
        keys.fieldNames().forEachRemaining(k -> {
            int in = (ResumeChanges.HOW.contains(k) ? 1 : 0) + (ResumeChanges.WHAT.contains(k) ? 1 : 0)
                    + (ResumeChanges.HORIZON.contains(k) ? 1 : 0) + (ResumeChanges.REFUSED.containsKey(k) ? 1 : 0);
            if (in == 0) missing.add(k);
            if (in > 1) twice.add(k);
        });
        assertEquals(List.of(), missing, "a new config key must say what a resumed run may do with it");
        assertEquals(List.of(), twice);
        Set<String> all = new HashSet<>();
        all.addAll(ResumeChanges.HOW);
        all.addAll(ResumeChanges.WHAT);
        all.addAll(ResumeChanges.HORIZON);
        all.addAll(ResumeChanges.REFUSED.keySet());
        for (String k : all) assertTrue(keys.has(k), k + " is not a config key");
    }

    /**
     * A 2-step run resumed with a longer horizon under its constant schedule, and with settings that change only how it
     * runs (gradient checkpointing on, smaller log-prob passes, a checkpoint every step, no prefix sharing in the
     * log-prob passes), equals a 4-step run bit for bit: the metrics and the final weights; trainer_state.json records
     * the changes at step 2, and a second resume adds to them.
     */
    @Test
    void aLongerHorizonAndHowSettingsRepeatTheLongerRun(@TempDir Path tmp) throws Exception {
        Path full = tmp.resolve("full"), part = tmp.resolve("run");
        try (Trainer t = Trainer.builder(GrpoTrainerTest.config(run(full, 4))).log(null).build()) {
            t.run(null);
        }
        try (Trainer t = Trainer.builder(GrpoTrainerTest.config(run(part, 2))).log(null).build()) {
            t.run(null);
        }
        java.io.ByteArrayOutputStream log = new java.io.ByteArrayOutputStream();
        try (Trainer t = Trainer.builder(null).resume(part).log(new java.io.PrintStream(log, true))
                .overrides(List.of("num_training_steps=3", "gradient_checkpointing=true", "local_rollout_forward_batch_size=4", "save_freq=1",
                        "logprob_prefix_sharing=false")).build()) {
            assertEquals(3, t.run(null).lastStep());
        }
        assertTrue(log.toString().contains("resuming at step 2 with gradient_checkpointing true (was false), local_rollout_forward_batch_size 4 (was 8),"
                + " logprob_prefix_sharing false (was true), num_training_steps 3 (was 2), save_freq 1 (was 2)"), log.toString());
        try (Trainer t = Trainer.builder(null).resume(part).log(null).overrides(List.of("num_training_steps=4", "save_freq=1")).build()) {
            assertEquals(4, t.run(null).lastStep());
        }
        // every metric but the count of rows the log-prob passes ran (without prefix sharing each prompt runs once a sample)
        assertEquals(withoutRows(GrpoTrainerTest.comparable(full.resolve("metrics.jsonl"))), withoutRows(GrpoTrainerTest.comparable(part.resolve("metrics.jsonl"))));
        assertTrue(GrpoTrainerTest.readMetrics(part.resolve("metrics.jsonl")).get(2).get("rollout/logprob_token_rows")
                > GrpoTrainerTest.readMetrics(full.resolve("metrics.jsonl")).get(2).get("rollout/logprob_token_rows"), "step 3 ran without prefix sharing");
        assertArrayEquals(Files.readAllBytes(full.resolve("checkpoints/step_4/model/model.safetensors")),
                Files.readAllBytes(part.resolve("checkpoints/step_4/model/model.safetensors")), "the final weights bit for bit");
        JsonNode changes = JSON.readTree(part.resolve("checkpoints/step_4/trainer_state.json").toFile()).get("config_changes");
        List<String> seen = new ArrayList<>();
        for (JsonNode c : changes) seen.add(c.get("step").asInt() + " " + c.get("key").asText() + " " + c.get("kind").asText() + " " + c.get("to"));
        assertEquals(List.of("2 gradient_checkpointing how true", "2 local_rollout_forward_batch_size how 4", "2 logprob_prefix_sharing how false",
                "2 num_training_steps how 3", "2 save_freq how 1", "3 num_training_steps how 4"), seen);
        assertEquals(6, TrainerState.read(part.resolve("checkpoints/step_4/trainer_state.json"), part.resolve("checkpoints/step_4")).configChanges().size(),
                "the state reads back with every change");
    }

    /**
     * A change of what the run trains (the learning rate) is refused without allowChanges, before anything is written;
     * with it the run goes on at the new rate (the lr metric) and trainer_state.json records it as "what".
     */
    @Test
    void aChangeOfWhatItTrainsNeedsAllowChangesAndIsRecorded(@TempDir Path tmp) throws Exception {
        Path part = tmp.resolve("run");
        try (Trainer t = Trainer.builder(GrpoTrainerTest.config(run(part, 2))).log(null).build()) {
            t.run(null);
        }
        List<String> before = TestFiles.listTree(part);
        String metrics = Files.readString(part.resolve("metrics.jsonl"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Trainer.builder(null).resume(part).log(null).overrides(List.of("learning_rate=2e-3", "num_training_steps=3")).build());
        assertTrue(e.getMessage().contains("learning_rate 0.002 (was 0.001)") && e.getMessage().contains("what the run trains from step 2 on")
                && e.getMessage().contains("--allow-changes"), e.getMessage());
        assertFalse(e.getMessage().contains("num_training_steps"), "a longer constant schedule is not a change of what it trains: " + e.getMessage());
        assertEquals(before, TestFiles.listTree(part), "nothing written");
        assertEquals(metrics, Files.readString(part.resolve("metrics.jsonl")));
        try (Trainer t = Trainer.builder(null).resume(part).log(null).allowChanges(true).overrides(List.of("learning_rate=2e-3", "num_training_steps=3")).build()) {
            t.run(null);
        }
        List<java.util.Map<String, Double>> m = GrpoTrainerTest.readMetrics(part.resolve("metrics.jsonl"));
        assertEquals(3, m.size());
        assertEquals(2e-3, m.get(2).get("lr"), 1e-12, "step 3 trains at the new rate");
        assertNotEquals(2e-3, m.get(1).get("lr"));
        JsonNode changes = JSON.readTree(part.resolve("checkpoints/step_3/trainer_state.json").toFile()).get("config_changes");
        assertEquals("learning_rate", changes.get(0).get("key").asText());
        assertEquals("what", changes.get(0).get("kind").asText());
        assertEquals(2e-3, changes.get(0).get("to").asDouble());
        assertEquals("how", changes.get(1).get("kind").asText(), "num_training_steps");
    }

    /** Key by key, without training: the refused class, the horizon's kind, same values, the micro-batch size. */
    @Test
    void eachKeyIsJudgedByItsClass(@TempDir Path tmp) throws Exception {
        GrpoConfig saved = GrpoTrainerTest.config(run(tmp.resolve("run"), 8));
        Path ck = ck(tmp);
        for (String set : List.of("seed=3", "world_size=2", "output_dir=\"elsewhere\"", "precision=\"bf16\"", "sft_warmup.steps=5",
                "local_rollout_batch_size=2", "model_name_or_path=\"other-model\"", "max_token_length=100")) {
            String key = set.substring(0, set.indexOf('=')), top = key.replaceFirst("\\..*", "");
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> ResumeChanges.apply(saved, List.of(set), ck, 2, 4, true), set);
            assertTrue(e.getMessage().contains("with --set " + key + ": " + ResumeChanges.REFUSED.get(top)), e.getMessage());
        }
        // a value equal to the saved one changes nothing (numbers compared as numbers)
        assertEquals(List.of(), ResumeChanges.apply(saved, List.of("seed=1", "learning_rate=" + saved.learningRate, "beta=1.0e-2"), ck, 2, 4, false).changes());
        // ... and so does another spelling of the same verifier semantics ("" saved; "fixed" is its name in the CLI)
        assertEquals(org.grpo4j.reward.Compat.DEFAULT, saved.compat());
        assertEquals(List.of(), ResumeChanges.apply(saved, List.of("verifier_compat=\"fixed\""), ck, 2, 4, false).changes());
        assertThrows(IllegalArgumentException.class, () -> ResumeChanges.apply(saved, List.of("verifier_compat=\"open-instruct-3f37c29\""), ck, 2, 4, false),
                "the reference's semantics are another reward: a change of what the run trains");
        // the horizon: a constant schedule extended or cut short keeps every remaining step's rate; a linear one does not
        assertEquals(ResumeChanges.Kind.HOW, kind(saved, "num_training_steps=5", 2, 4));
        assertEquals(ResumeChanges.Kind.HOW, kind(saved, "num_training_steps=20", 2, 4));
        GrpoConfig linear = saved.withOverrides(List.of("lr_scheduler_type=\"linear\""), "test");
        assertEquals(ResumeChanges.Kind.WHAT, kind(linear, "num_training_steps=20", 2, 4));
        GrpoConfig warm = saved.withOverrides(List.of("warmup_ratio=0.5"), "test"); // 16 optimizer steps: 8 warm-up
        assertEquals(ResumeChanges.Kind.WHAT, kind(warm, "num_training_steps=20", 2, 4), "the warm-up would get longer");
        GrpoConfig warmSteps = saved.withOverrides(List.of("warm_up_steps=2"), "test");
        assertEquals(ResumeChanges.Kind.HOW, kind(warmSteps, "num_training_steps=20", 2, 4), "a warm-up of fixed steps, then constant");
        // ... also in the reference's compat mode, whose schedule ends before the run's last optimizer step (it leaves
        // out the mini-batches), and past the end of a finished linear run (the rate would climb from 0 again)
        GrpoConfig compat = saved.withOverrides(List.of("lr_scheduler_type=\"linear\"", "lr_scheduler_compat=\"open-instruct-3f37c29\""), "test");
        assertEquals(8, LrSchedule.of(compat).total(), "8 steps x 1 epoch, without the 2 mini-batches a step");
        assertEquals(ResumeChanges.Kind.WHAT, kind(compat, "num_training_steps=10", 4, 8));
        assertEquals(ResumeChanges.Kind.WHAT, kind(linear, "num_training_steps=10", 8, 16));
        assertEquals(ResumeChanges.Kind.HOW, kind(saved, "num_training_steps=10", 8, 16));
        // the horizon is judged alone: beside a learning-rate change it is still how the run runs
        var both = ResumeChanges.apply(saved, List.of("learning_rate=2e-3", "num_training_steps=10"), ck, 2, 4, true).changes();
        assertEquals(List.of("learning_rate WHAT", "num_training_steps HOW"), both.stream().map(ch -> ch.key() + " " + ch.kind()).toList());
        IllegalArgumentException past = assertThrows(IllegalArgumentException.class, () -> ResumeChanges.apply(saved, List.of("num_training_steps=2"), ck, 2, 4, true));
        assertTrue(past.getMessage().contains("would end at step 2") && past.getMessage().contains("beyond 2"), past.getMessage());
        // the attention kernels and dQ mode change the last bits of what it trains (a resume keeps the saved ones)
        assertEquals(ResumeChanges.Kind.WHAT, kind(saved, "attention_dq=\"fixed\"", 2, 4));
        assertEquals(ResumeChanges.Kind.WHAT, kind(saved, "attention_kernels=\"wgmma\"", 2, 4));
        // the micro-batch: under micro_token_mean it weighs the tokens; under token_mean only the summation order moves
        assertEquals(ResumeChanges.Kind.WHAT, kind(saved, "per_device_train_batch_size=2", 2, 4));
        GrpoConfig tokenMean = saved.withOverrides(List.of("loss_aggregation=\"token_mean\""), "test");
        assertEquals(ResumeChanges.Kind.HOW, kind(tokenMean, "per_device_train_batch_size=2", 2, 4));
        GrpoConfig upper = saved.withOverrides(List.of("loss_aggregation=\"MICRO_TOKEN_MEAN\""), "test"); // valid in any case
        assertEquals(ResumeChanges.Kind.WHAT, kind(upper, "per_device_train_batch_size=2", 2, 4));
        IllegalArgumentException epochs = assertThrows(IllegalArgumentException.class, () -> ResumeChanges.apply(saved, List.of("num_epochs=2"), ck, 2, 4, true));
        assertTrue(epochs.getMessage().contains("num_epochs: the optimizer steps of a training step are fixed"), epochs.getMessage());
        // a refused key at its saved value is not blamed for another key's error
        IllegalArgumentException other = assertThrows(IllegalArgumentException.class,
                () -> ResumeChanges.apply(saved, List.of("seed=1", "kv_cache_fraction=2"), ck, 2, 4, true));
        assertTrue(other.getMessage().contains("kv_cache_fraction") && !other.getMessage().contains("seed"), other.getMessage());
        // an unknown key or a bad value is the config's own error
        IllegalArgumentException unknown = assertThrows(IllegalArgumentException.class, () -> ResumeChanges.apply(saved, List.of("bogus=1"), ck, 2, 4, true));
        assertTrue(unknown.getMessage().contains("unknown key \"bogus\""), unknown.getMessage());
        IllegalArgumentException bad = assertThrows(IllegalArgumentException.class, () -> ResumeChanges.apply(saved, List.of("kv_cache_fraction=2"), ck, 2, 4, true));
        assertTrue(bad.getMessage().contains("kv_cache_fraction"), bad.getMessage());
    }

    /**
     * Resharding keeps a device's micro-batch, so a run whose per-rank mini-batch would fall below it could not be
     * resharded; with the micro-batch lowered in the same resume it can (token_mean: a change of how it runs).
     */
    @Test
    void aReshardCanLowerTheMicroBatch(@TempDir Path tmp) throws Exception {
        List<String> sets = run(tmp.resolve("run"), 8);
        sets.addAll(List.of("world_size=2", "local_mini_batch_size=8", "per_device_train_batch_size=8", "loss_aggregation=\"token_mean\""));
        GrpoConfig saved = GrpoTrainerTest.config(sets);
        Path ck = ck(tmp);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Checkpoints.reshardConfig(saved, 4, ck));
        assertTrue(e.getMessage().contains("per_device_train_batch_size"), e.getMessage());
        ResumeChanges.Applied a = ResumeChanges.apply(saved, List.of("per_device_train_batch_size=4"), ck, 2, 2, false);
        assertEquals(ResumeChanges.Kind.HOW, a.changes().get(0).kind());
        GrpoConfig c = Checkpoints.reshardConfig(a.config(), 4, ck);
        assertEquals(List.of(4, 4, 4), List.of(c.localMiniBatchSize, c.perDeviceTrainBatchSize, c.worldSize));
    }

    private static List<String> withoutRows(List<String> lines) {
        return lines.stream().map(l -> l.replaceAll(",\"rollout/logprob_token_rows\":[0-9.E-]+", "")).toList();
    }

    private static ResumeChanges.Kind kind(GrpoConfig saved, String set, int step, long optimizerSteps) {
        List<ResumeChanges.Change> ch = ResumeChanges.apply(saved, List.of(set), Path.of("/r/run/checkpoints/step_" + step), step, optimizerSteps, true).changes();
        assertEquals(1, ch.size(), set);
        return ch.get(0).kind();
    }
}
