package org.grpo4j.internal.train;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * What a run reads stays what it read: --overwrite refuses an output directory that holds the run's own model or data
 * (it would delete them), a relative local model path is saved absolute (a resume from another directory found none,
 * or another model of that name), and a resume refuses a step-0 reference whose config.json changed since.
 */
class RunInputsTest {

    /** A one-step run in {@code out}: its checkpoints/step_1/model and step_0 are the inputs the tests point at. */
    private static void oneStep(Path out, String... more) throws Exception {
        List<String> sets = GrpoTrainerTest.small(out, 1);
        sets.addAll(List.of("num_evals=0", "save_freq=1"));
        sets.addAll(List.of(more));
        try (Trainer t = Trainer.builder(GrpoTrainerTest.config(sets)).log(null).build()) {
            t.run(null);
        }
    }

    @Test
    void overwriteRefusesAnOutputDirectoryHoldingTheRunsModel(@TempDir Path tmp) throws Exception {
        Path run = tmp.resolve("run"), model = run.resolve("checkpoints/step_1/model");
        oneStep(run);
        assertTrue(Files.isRegularFile(model.resolve("config.json")));
        List<String> sets = GrpoTrainerTest.small(run, 1);
        sets.add("model_name_or_path=\"" + model + "\"");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Trainer.builder(GrpoTrainerTest.config(sets)).overwrite(true).log(null).build().close());
        assertTrue(e.getMessage().startsWith("model_name_or_path " + model + " lies inside " + run) && e.getMessage().contains("--overwrite deletes"),
                e.getMessage());
        assertTrue(Files.isRegularFile(model.resolve("model.safetensors")), "the model is still there");
        // a dataset file inside it is refused the same way (one of its outputs given as a dataset, say)
        Path data = run.resolve("metrics.jsonl");
        List<String> sets2 = GrpoTrainerTest.small(run, 1);
        sets2.add("dataset_mixer_list=[\"" + data + "\", \"1.0\"]");
        e = assertThrows(IllegalArgumentException.class, () -> Trainer.builder(GrpoTrainerTest.config(sets2)).overwrite(true).log(null).build().close());
        assertTrue(e.getMessage().startsWith("dataset_mixer_list " + data + " lies inside " + run), e.getMessage());
        assertTrue(Files.isRegularFile(data));
    }

    @Test
    void aRelativeModelPathIsSavedAbsolute(@TempDir Path tmp) throws Exception {
        oneStep(tmp.resolve("first"));
        Path model = tmp.resolve("first/checkpoints/step_1/model");
        String relative = Path.of("").toAbsolutePath().relativize(model).toString();
        assertFalse(Path.of(relative).isAbsolute());
        oneStep(tmp.resolve("second"), "model_name_or_path=\"" + relative + "\"");
        Map<?, ?> saved = new com.fasterxml.jackson.databind.ObjectMapper().readValue(tmp.resolve("second/config.json").toFile(), Map.class);
        assertEquals(model.toAbsolutePath().normalize().toString(), saved.get("model_name_or_path"));
    }

    @Test
    void aResumeRefusesAStepZeroReferenceWhoseConfigChanged(@TempDir Path tmp) throws Exception {
        Path run = tmp.resolve("run");
        oneStep(run);
        Path cfg = run.resolve("checkpoints/step_0/model/config.json");
        com.fasterxml.jackson.databind.ObjectMapper json = new com.fasterxml.jackson.databind.ObjectMapper();
        var node = (com.fasterxml.jackson.databind.node.ObjectNode) json.readTree(cfg.toFile());
        node.put("rms_norm_eps", 0.5);
        json.writeValue(cfg.toFile(), node);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> {
            try (Trainer t = Trainer.builder(null).resume(run).overrides(List.of("num_training_steps=2")).log(null).build()) {
                t.run(null);
            }
        });
        assertTrue(e.getMessage().contains(run.resolve("checkpoints/step_0/model") + ": config.json describes another model"), e.getMessage());
    }
}
