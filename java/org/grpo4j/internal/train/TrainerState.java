package org.grpo4j.internal.train;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;

/** A checkpoint's trainer_state.json, read strictly: every field present, of its type and in its range. */
record TrainerState(int trainingStep, long optimizerSteps, int consecutiveNonfinite, int skippedSteps, int iteratorEpoch,
                    int iteratorOffset, long referenceChecksum, int trainPrompts, String dataFingerprint, int worldSize, String precision,
                    com.fasterxml.jackson.databind.node.ArrayNode configChanges) {

    private static final ObjectMapper JSON = org.grpo4j.internal.util.JsonFiles.MAPPER;

    /** Reads {@code file}, the state of checkpoint directory {@code ck} (whose name step_N must match training_step). */
    static TrainerState read(Path file, Path ck) throws IOException {
        if (!Files.isRegularFile(file)) throw new NoSuchFileException(file.toString(), null, "the checkpoint's trainer state");
        JsonNode n;
        try {
            n = JSON.readTree(file.toFile());
        } catch (JsonProcessingException e) {
            throw new IllegalArgumentException(file + ": not valid JSON: " + org.grpo4j.internal.util.JsonErrors.describe(e));
        }
        if (n == null || !n.isObject()) throw new IllegalArgumentException(file + ": expected a JSON object");
        int step = (int) count(n, "training_step", file, Integer.MAX_VALUE);
        String name = ck.getFileName().toString();
        if (name.matches("step_\\d+") && !name.equals("step_" + step))
            throw new IllegalArgumentException(file + ": training_step " + step + " does not match its directory " + name);
        JsonNode it = n.path("iterator");
        if (!it.isObject()) throw new IllegalArgumentException(file + ": field \"iterator\" must be an object {epoch, offset}");
        JsonNode fp = n.get("data_fingerprint");
        if (fp != null && !fp.isTextual()) throw new IllegalArgumentException(file + ": field \"data_fingerprint\" must be a string, got " + fp);
        JsonNode sum = n.get("reference_checksum");
        if (sum == null || !sum.isIntegralNumber() || !sum.canConvertToLong())
            throw new IllegalArgumentException(file + ": field \"reference_checksum\" must be a 64-bit integer, got " + sum);
        JsonNode prec = n.get("precision");
        if (prec != null && !(prec.isTextual() && (prec.asText().equals("fp32") || prec.asText().equals("bf16"))))
            throw new IllegalArgumentException(file + ": field \"precision\" must be \"fp32\" or \"bf16\", got " + prec);
        // checkpoints written before multi-rank training and precision bf16 are world 1, fp32
        int world = n.has("world_size") ? (int) count(n, "world_size", file, 1 << 20) : 1;
        if (world < 1) throw new IllegalArgumentException(file + ": field \"world_size\" must be >= 1, got " + world);
        // what resumes with --set changed (ResumeChanges); absent before the first such resume
        JsonNode changes = n.get("config_changes");
        if (changes != null && !(changes.isArray() && allChanges(changes)))
            throw new IllegalArgumentException(file + ": field \"config_changes\" must be an array of {step, key, kind, from, to}, got " + changes);
        return new TrainerState(step, count(n, "optimizer_steps", file, Long.MAX_VALUE),
                (int) count(n, "consecutive_nonfinite", file, Integer.MAX_VALUE), (int) count(n, "skipped_steps", file, Integer.MAX_VALUE),
                index(it, "iterator.epoch", "epoch", file), index(it, "iterator.offset", "offset", file), sum.asLong(),
                n.has("train_prompts") ? (int) count(n, "train_prompts", file, Integer.MAX_VALUE) : -1, fp == null ? null : fp.asText(), world,
                prec == null ? "fp32" : prec.asText(), changes == null ? JSON.createArrayNode() : (com.fasterxml.jackson.databind.node.ArrayNode) changes);
    }

    private static boolean allChanges(JsonNode a) {
        for (JsonNode c : a)
            if (!c.isObject() || !(c.path("step").isIntegralNumber() && c.path("step").canConvertToInt()) || !c.path("key").isTextual() || !c.has("from") || !c.has("to")
                    || !(c.path("kind").asText().equals("how") || c.path("kind").asText().equals("what"))) return false;
        return true;
    }

    private static long count(JsonNode n, String key, Path file, long max) {
        JsonNode v = n.get(key);
        if (v == null || !v.isIntegralNumber() || !v.canConvertToLong() || v.asLong() < 0 || v.asLong() > max)
            throw new IllegalArgumentException(file + ": field \"" + key + "\" must be an integer in [0, " + max + "], got " + v);
        return v.asLong();
    }

    private static int index(JsonNode n, String name, String key, Path file) {
        JsonNode v = n.get(key);
        if (v == null || !v.isIntegralNumber() || !v.canConvertToInt() || v.asInt() < 0)
            throw new IllegalArgumentException(file + ": field \"" + name + "\" must be a non-negative integer, got " + v);
        return v.asInt();
    }
}
