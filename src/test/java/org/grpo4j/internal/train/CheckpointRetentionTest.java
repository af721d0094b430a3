package org.grpo4j.internal.train;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.grpo4j.train.GrpoConfig;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** keep_last_n_checkpoints: which checkpoints a run keeps, that it still resumes, and the disk plan it prints. */
class CheckpointRetentionTest {
    static List<String> checkpoints(Path run) throws Exception {
        try (var s = Files.list(run.resolve("checkpoints"))) {
            return s.map(p -> p.getFileName().toString()).sorted().toList();
        }
    }

    @Test
    void theNewestKAndStepZeroAreKeptAndTheRunResumes(@TempDir Path tmp) throws Exception {
        Path run = tmp.resolve("run");
        List<String> sets = GrpoTrainerTest.small(run, 5);
        sets.addAll(List.of("save_freq=1", "keep_last_n_checkpoints=2", "num_evals=0"));
        java.io.ByteArrayOutputStream log = new java.io.ByteArrayOutputStream();
        try (Trainer t = Trainer.builder(GrpoTrainerTest.config(sets)).log(new java.io.PrintStream(log, true)).build()) {
            t.run(null);
        }
        assertEquals(List.of("step_0", "step_4", "step_5"), checkpoints(run), "step_0 (the reference policy) and the newest 2");
        String out = log.toString();
        assertTrue(out.contains("grpo4j: removed step_1 (keep_last_n_checkpoints 2)") && out.contains("grpo4j: removed step_3 (keep_last_n_checkpoints 2)"), out);
        assertTrue(out.contains("checkpoints                          about ") && out.contains(" each (fp32 weights and AdamW moments), 6 over the run,"
                + " at most 4 whole on disk at once (keep_last_n_checkpoints 2)"), out);
        // the same metrics as a run that keeps everything
        Path all = tmp.resolve("all");
        List<String> keepAll = GrpoTrainerTest.small(all, 5);
        keepAll.addAll(List.of("save_freq=1", "num_evals=0"));
        try (Trainer t = Trainer.builder(GrpoTrainerTest.config(keepAll)).log(null).build()) {
            t.run(null);
        }
        assertEquals(List.of("step_0", "step_1", "step_2", "step_3", "step_4", "step_5"), checkpoints(all));
        assertEquals(GrpoTrainerTest.comparable(all.resolve("metrics.jsonl")), GrpoTrainerTest.comparable(run.resolve("metrics.jsonl")));
        // a deletion a kill interrupted is cleared at the next start, and the run resumes from its newest checkpoint
        Path stale = Files.createDirectories(run.resolve("checkpoints/.step_3.deleting-1f/model"));
        Files.writeString(stale.resolve("model.safetensors"), "half deleted");
        try (Trainer t = Trainer.builder(null).resume(run).log(null).overrides(List.of("num_training_steps=6")).build()) {
            assertEquals(6, t.run(null).lastStep());
        }
        assertEquals(List.of("step_0", "step_5", "step_6"), checkpoints(run));
        assertArrayEquals(Files.readAllBytes(run.resolve("checkpoints/step_0/model/model.safetensors")),
                Files.readAllBytes(all.resolve("checkpoints/step_0/model/model.safetensors")), "step_0 untouched");
    }

    /**
     * older_checkpoints model: the checkpoints beyond the newest keep their model/ and config.json only; they are no
     * longer checkpoints a resume could pick, but their policies can be exported.
     */
    @Test
    void olderCheckpointsCanKeepTheirModels(@TempDir Path tmp) throws Exception {
        Path run = tmp.resolve("run");
        List<String> sets = GrpoTrainerTest.small(run, 3);
        sets.addAll(List.of("save_freq=1", "keep_last_n_checkpoints=1", "older_checkpoints=\"model\"", "num_evals=0"));
        try (Trainer t = Trainer.builder(GrpoTrainerTest.config(sets)).log(null).build()) {
            t.run(null);
        }
        assertEquals(List.of("step_0", "step_1", "step_2", "step_3"), checkpoints(run));
        for (String old : List.of("step_1", "step_2")) {
            try (var s = Files.list(run.resolve("checkpoints").resolve(old))) {
                assertEquals(List.of("config.json", "model"), s.map(p -> p.getFileName().toString()).sorted().toList(), old);
            }
            assertTrue(Files.isRegularFile(run.resolve("checkpoints").resolve(old).resolve("model/model.safetensors")), old);
        }
        assertTrue(Files.isRegularFile(run.resolve("checkpoints/step_0/trainer_state.json")), "step_0 whole");
        assertEquals(run.resolve("checkpoints/step_3").toAbsolutePath(), Checkpoints.latestCheckpoint(run));
        IllegalArgumentException pruned = assertThrows(IllegalArgumentException.class, () -> Checkpoints.latestCheckpoint(run.resolve("checkpoints/step_1")));
        assertTrue(pruned.getMessage().contains("pruned to its model (older_checkpoints model)") && pruned.getMessage().contains("export --from"),
                pruned.getMessage());
        // a pruning a kill interrupted (trainer_state.json gone, the optimizer state not yet): the next start finishes it
        Path half = run.resolve("checkpoints/step_2");
        Files.writeString(half.resolve("optimizer.safetensors"), "left behind");
        try (Trainer t = Trainer.builder(null).resume(run).log(null).overrides(List.of("num_training_steps=3")).build()) {
            assertEquals(3, t.run(null).lastStep(), "nothing left to train");
        }
        try (var s = Files.list(half)) {
            assertEquals(List.of("config.json", "model"), s.map(p -> p.getFileName().toString()).sorted().toList());
        }
        Path out = tmp.resolve("step1-bf16");
        org.grpo4j.internal.cli.CliTestAccess.Run r = org.grpo4j.internal.cli.CliTestAccess.run("export", "--from",
                run.resolve("checkpoints/step_1").toString(), "--out", out.toString());
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("exported step_1 of " + run.toAbsolutePath()) && r.out().contains("chat template tulu"), r.out());
        assertTrue(Files.isRegularFile(out.resolve("model.safetensors")));
    }

    @Test
    void theDiskPlanCountsTheSavesAndTheRetention(@TempDir Path tmp) throws Exception {
        GrpoConfig c = GrpoTrainerTest.config(GrpoTrainerTest.small(tmp.resolve("run"), 7)); // save_freq 2: steps 0, 2, 4, 6, 7
        Checkpoints.DiskPlan all = Checkpoints.diskPlan(c, 1000, tmp.resolve("run"));
        assertEquals(List.of(12_000L, 5L, 5L), List.of(all.bytesEach(), (long) all.written(), (long) all.kept()));
        assertTrue(all.free() > 0, "the free space of the nearest existing directory");
        assertTrue(all.fits());
        c.keepLastNCheckpoints = 1;
        assertEquals(3, Checkpoints.diskPlan(c, 1000, tmp.resolve("run")).kept(), "step_0, the newest and the one being written");
        c.numTrainingSteps = 8; // steps 0, 2, 4, 6, 8: the last save is the end
        c.keepLastNCheckpoints = -1;
        assertEquals(5, Checkpoints.diskPlan(c, 1000, tmp).written());
        c.keepLastNCheckpoints = 2;
        c.olderCheckpoints = "model"; // saves 0, 2, 4, 6, 8: the peak is right after step 8 is written, step_0 and 4, 6, 8 whole
        Checkpoints.DiskPlan models = Checkpoints.diskPlan(c, 1000, tmp); // beside the model step 2 was pruned to (4 bytes a parameter)
        assertEquals(List.of(4L, 4_000L, 52_000L), List.of((long) models.kept(), models.olderModelBytes(), models.keptBytes()));
        c.keepLastNCheckpoints = -1;
        Checkpoints.DiskPlan huge = Checkpoints.diskPlan(c, Long.MAX_VALUE / 64, tmp);
        assertFalse(huge.fits(), huge.describe());
        c.keepLastNCheckpoints = 0;
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> c.validate("config"));
        assertTrue(e.getMessage().contains("keep_last_n_checkpoints must be -1 (keep every checkpoint) or >= 1, got 0"), e.getMessage());
    }
}
