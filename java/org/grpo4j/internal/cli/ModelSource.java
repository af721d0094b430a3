package org.grpo4j.internal.cli;

import java.nio.file.Files;
import java.nio.file.Path;
import org.grpo4j.internal.train.Checkpoints;
import org.grpo4j.train.GrpoConfig;

/**
 * What {@code export} and {@code eval} read a model from: an HF model directory, a checkpoint (whole, or an older one
 * whose model older_checkpoints kept), or a run directory (its newest checkpoint); with a checkpoint, its run's
 * config.json.
 *
 * @param model       the HF model directory
 * @param checkpoint  the checkpoint directory, or null for a plain model directory
 * @param description how to name it in messages ("step_40 of runs/x", "the model in DIR")
 */
record ModelSource(Path model, Path checkpoint, String description) {
    static ModelSource resolve(Path from) throws java.io.IOException {
        Path abs = from.toAbsolutePath().normalize();
        if (isModel(from) && abs.getFileName() != null && abs.getFileName().toString().equals("model") && abs.getParent() != null
                && abs.getParent().getFileName() != null && abs.getParent().getFileName().toString().matches("step_\\d{1,9}")
                && Files.isRegularFile(abs.getParent().resolve("config.json"))) // a checkpoint's model/: the checkpoint's run config applies
            return new ModelSource(from, abs.getParent(), abs.getParent().getFileName() + (abs.getParent().getParent() != null
                    && abs.getParent().getParent().getParent() != null ? " of " + abs.getParent().getParent().getParent() : ""));
        if (isModel(from)) return new ModelSource(from, null, "the model in " + from);
        Path ck = isModel(from.resolve("model")) ? from.toAbsolutePath().normalize() : Checkpoints.latestCheckpoint(from);
        Path model = ck.resolve("model");
        if (!isModel(model)) throw new IllegalArgumentException(ck + ": the checkpoint has no model/ directory");
        return new ModelSource(model, ck, ck.getFileName() + (ck.getParent() != null && ck.getParent().getParent() != null
                ? " of " + ck.getParent().getParent() : ""));
    }

    /**
     * The run's chat_template_name (only that key is read, so that a config another grpo4j version wrote still serves;
     * the trainer's default where it is absent), or null for a plain model directory or a checkpoint without config.json.
     */
    String runChatTemplate() throws java.io.IOException {
        com.fasterxml.jackson.databind.JsonNode t = runKey("chat_template_name");
        if (checkpoint == null || !Files.isRegularFile(checkpoint.resolve("config.json"))) return null;
        if (t != null && !t.isTextual()) throw new IllegalArgumentException(checkpoint.resolve("config.json") + ": chat_template_name must be a string, got " + t);
        return (t == null ? new GrpoConfig().chatTemplateName : t.textValue()).trim().toLowerCase(java.util.Locale.ROOT);
    }

    /**
     * One key of the run's config.json, read alone (null: no checkpoint, no config.json, or the key is absent), so that
     * a config another grpo4j version wrote still serves.
     */
    com.fasterxml.jackson.databind.JsonNode runKey(String key) throws java.io.IOException {
        if (checkpoint == null || !Files.isRegularFile(checkpoint.resolve("config.json"))) return null;
        Path f = checkpoint.resolve("config.json");
        com.fasterxml.jackson.databind.JsonNode n;
        try {
            n = new com.fasterxml.jackson.databind.ObjectMapper().readTree(f.toFile());
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IllegalArgumentException(f + ": not valid JSON: " + org.grpo4j.internal.util.JsonErrors.describe(e));
        }
        return n == null ? null : n.get(key);
    }

    /**
     * The run's precision ("fp32" or "bf16") as trainer_state.json records it: the checkpoint's, or for one pruned to its
     * model another checkpoint's of the run (a run keeps its precision); null where none says.
     */
    String runPrecision() throws java.io.IOException {
        if (checkpoint == null) return null;
        Path state = checkpoint.resolve("trainer_state.json");
        if (!Files.isRegularFile(state) && checkpoint.getParent() != null && Files.isDirectory(checkpoint.getParent()))
            try (var s = Files.list(checkpoint.getParent())) {
                state = s.filter(p -> p.getFileName().toString().matches("step_\\d{1,9}")).map(p -> p.resolve("trainer_state.json"))
                        .filter(Files::isRegularFile).findFirst().orElse(state);
            }
        if (!Files.isRegularFile(state)) return null;
        try {
            com.fasterxml.jackson.databind.JsonNode p = new com.fasterxml.jackson.databind.ObjectMapper().readTree(state.toFile()).path("precision");
            return p.isTextual() && (p.textValue().equals("fp32") || p.textValue().equals("bf16")) ? p.textValue() : null;
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            return null; // a damaged state: the default applies (eval reads no other field of it)
        }
    }

    /** An HF model directory: config.json and safetensors weights (one file or an index). */
    static boolean isModel(Path dir) {
        return Files.isRegularFile(dir.resolve("config.json"))
                && (Files.isRegularFile(dir.resolve("model.safetensors")) || Files.isRegularFile(dir.resolve("model.safetensors.index.json")));
    }
}
