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
    /**
     * The model directory {@code dir} names for a command that reads a model (or its tokenizer) directory: a run or a
     * checkpoint as {@link #resolve} reads it (a checkpoint's config.json is the run's, not a model's: it was refused as
     * "unsupported architecture (model_type \"\")"); anything else as it is, its own errors named where it is read.
     */
    static Path modelDirOf(Path dir) throws java.io.IOException {
        if (!isModel(dir) && (Files.isDirectory(dir.resolve("model")) || Files.isDirectory(dir.resolve("checkpoints"))
                || Files.isRegularFile(dir.resolve("trainer_state.json"))))
            return resolve(dir).model();
        return dir;
    }

    static ModelSource resolve(Path from) throws java.io.IOException {
        Path abs = from.toAbsolutePath().normalize(), ck;
        if (isModel(from)) {
            Path parent = abs.getParent();
            boolean inCheckpoint = abs.getFileName() != null && abs.getFileName().toString().equals("model") && parent != null && parent.getFileName() != null
                    && parent.getFileName().toString().matches("step_\\d{1,9}") && Files.isRegularFile(parent.resolve("config.json"));
            if (!inCheckpoint) return new ModelSource(from, null, "the model in " + from);
            ck = parent; // a checkpoint's model/: the checkpoint's run config applies
        } else {
            String missing = missingModelFile(from);
            if (missing != null)
                throw new java.nio.file.NoSuchFileException(from.resolve(missing).toString(), null,
                        "no " + missing + ": a model directory holds config.json and model.safetensors (or its index)");
            ck = isModel(from.resolve("model")) ? abs : Checkpoints.latestCheckpoint(from);
            if (!isModel(ck.resolve("model"))) {
                String lacks = Files.isDirectory(ck.resolve("model")) ? missingModelFile(ck.resolve("model")) : null;
                throw new IllegalArgumentException(lacks != null ? ck.resolve("model").resolve(lacks) + ": not found (the checkpoint's model is incomplete)"
                        : Files.isDirectory(ck.resolve("model")) ? ck.resolve("model") + ": lacks config.json or model.safetensors (or its index)"
                        : ck + ": the checkpoint has no model/ directory");
            }
        }
        return new ModelSource(ck.resolve("model"), ck, ck.getFileName() + (ck.getParent() != null && ck.getParent().getParent() != null
                ? " of " + ck.getParent().getParent() : ""));
    }

    /**
     * The run's chat_template_name, lower case (the trainer's default where it is absent), or null for a plain model
     * directory or a checkpoint without config.json.
     */
    String runChatTemplate() throws java.io.IOException {
        if (checkpoint == null || !Files.isRegularFile(checkpoint.resolve("config.json"))) return null;
        com.fasterxml.jackson.databind.JsonNode t = runConfig().get("chat_template_name");
        if (t != null && !t.isTextual()) throw new IllegalArgumentException(checkpoint.resolve("config.json") + ": chat_template_name must be a string, got " + t);
        return (t == null ? new GrpoConfig().chatTemplateName : t.textValue()).trim().toLowerCase(java.util.Locale.ROOT);
    }

    /**
     * The run's config.json as a JSON tree, read key by key by its callers (so that a config another grpo4j version
     * wrote still serves); an empty object for a plain model directory or a checkpoint without config.json.
     */
    com.fasterxml.jackson.databind.JsonNode runConfig() throws java.io.IOException {
        com.fasterxml.jackson.databind.ObjectMapper json = new com.fasterxml.jackson.databind.ObjectMapper();
        if (checkpoint == null || !Files.isRegularFile(checkpoint.resolve("config.json"))) return json.createObjectNode();
        Path f = checkpoint.resolve("config.json");
        com.fasterxml.jackson.databind.JsonNode n;
        try {
            n = json.readTree(f.toFile());
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IllegalArgumentException(f + ": not valid JSON: " + org.grpo4j.internal.util.JsonErrors.describe(e));
        }
        return n == null || !n.isObject() ? json.createObjectNode() : n;
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

    /**
     * What a directory that looks like half a model directory lacks (weights without config.json, or an HF config
     * without weights), or null: one that is a run or checkpoint (or neither) is left to the checkpoint lookup.
     */
    static String missingModelFile(Path dir) {
        if (!Files.isDirectory(dir) || Files.exists(dir.resolve("trainer_state.json")) || Files.isDirectory(dir.resolve("checkpoints"))
                || Files.isDirectory(dir.resolve("model"))) return null;
        boolean weights = Files.isRegularFile(dir.resolve("model.safetensors")) || Files.isRegularFile(dir.resolve("model.safetensors.index.json"));
        if (weights && !Files.isRegularFile(dir.resolve("config.json"))) return "config.json";
        if (!weights && Files.isRegularFile(dir.resolve("config.json")) && Files.isRegularFile(dir.resolve("tokenizer.json"))) return "model.safetensors";
        return null;
    }

    /** An HF model directory: config.json and safetensors weights (one file or an index). */
    static boolean isModel(Path dir) {
        return Files.isRegularFile(dir.resolve("config.json"))
                && (Files.isRegularFile(dir.resolve("model.safetensors")) || Files.isRegularFile(dir.resolve("model.safetensors.index.json")));
    }
}
