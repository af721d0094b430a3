package org.grpo4j.internal.cli;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import java.util.concurrent.Callable;
import org.grpo4j.internal.model.LlamaWeights;
import org.grpo4j.internal.tokenizer.ChatTemplate;
import org.grpo4j.internal.train.Checkpoints;
import org.grpo4j.train.GrpoConfig;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code grpo4j export}: a checkpoint's policy as an HF model directory to serve or publish (bf16 by default, as
 * Llama-3.1-Tulu-3.1-8B is released), with the chat template the run trained with in tokenizer_config.json.
 */
@Command(name = "export", mixinStandardHelpOptions = true,
        description = "Write a run's policy as an HF model directory (bf16 safetensors, config, tokenizer with the run's chat template).")
final class ExportCommand implements Callable<Integer> {
    @Option(names = "--from", required = true, description = "A run directory (its newest checkpoint), a checkpoint (checkpoints/step_N) or an HF model directory.")
    Path from;

    @Option(names = "--out", required = true, description = "Output directory (must not exist or be empty); written atomically.")
    Path out;

    @Option(names = "--dtype", defaultValue = "bf16", description = "bf16 (each fp32 weight rounded once to nearest even; the default) or fp32.")
    String dtype;

    @Option(names = "--chat-template", defaultValue = "run", description = "run (the run's chat_template_name; a model directory keeps its own;"
            + " the default), keep, tulu, llama3, r1_simple_chat or r1_simple_chat_postpend_think.")
    String chatTemplate;

    @Option(names = "--max-shard-gib", defaultValue = "5", description = "Largest weight file in GiB (default: ${DEFAULT-VALUE}, as transformers).")
    double maxShardGib;

    @Override
    public Integer call() throws Exception {
        if (from.toString().isBlank()) throw new IllegalArgumentException("--from is empty");
        if (out.toString().isBlank()) throw new IllegalArgumentException("--out is empty; name a new directory");
        String dt = dtype.trim().toLowerCase(Locale.ROOT);
        if (!dt.equals("bf16") && !dt.equals("fp32")) throw new IllegalArgumentException("--dtype must be bf16 or fp32, got " + dtype);
        if (!(maxShardGib > 0) || maxShardGib > 1024) throw new IllegalArgumentException("--max-shard-gib must be in (0, 1024], got " + maxShardGib);
        if (Files.exists(out) && !Files.isDirectory(out)) throw new IllegalArgumentException(out + ": exists and is not a directory");
        if (Files.isDirectory(out))
            try (var s = Files.list(out)) {
                if (s.findAny().isPresent()) throw new IllegalArgumentException(out + ": output directory exists and is not empty");
            }
        Path model;
        String runTemplate = null; // the run's chat_template_name, where the source is a checkpoint
        String what;
        if (isModel(from)) {
            model = from;
            what = "the model in " + from;
        } else {
            // a checkpoint (whole, or an older one whose model older_checkpoints kept), or a run's newest checkpoint
            Path ck = isModel(from.resolve("model")) ? from.toAbsolutePath() : Checkpoints.latestCheckpoint(from);
            model = ck.resolve("model");
            if (!isModel(model)) throw new IllegalArgumentException(ck + ": the checkpoint has no model/ directory");
            // only the one key it needs: a checkpoint whose config another grpo4j version wrote still exports
            if (chatTemplate.trim().equalsIgnoreCase("run") && Files.isRegularFile(ck.resolve("config.json")))
                runTemplate = runChatTemplate(ck.resolve("config.json"));
            what = ck.getFileName() + (ck.getParent() != null && ck.getParent().getParent() != null ? " of " + ck.getParent().getParent() : "");
        }
        String name = chatTemplate.trim().toLowerCase(Locale.ROOT);
        if (name.equals("run")) name = runTemplate == null ? "keep" : runTemplate.trim().toLowerCase(Locale.ROOT);
        if (name.equals("tokenizer")) name = "keep"; // the tokenizer's own template: as it is
        String template = name.equals("keep") ? null : ChatTemplate.named(name, null).source(); // names the valid ones otherwise
        long bytes = LlamaWeights.export(model, out, dt.equals("bf16") ? "BF16" : "F32", (long) (maxShardGib * (1L << 30)), template);
        System.out.printf("grpo4j: exported %s to %s: %s weights, %s; chat template %s%n", what, out, dt, org.grpo4j.internal.backend.Memory.human(bytes),
                template == null ? "as the tokenizer had it" : name);
        return 0;
    }

    /** A run config's chat_template_name (the trainer's default, tulu, where it is absent). */
    private static String runChatTemplate(Path configJson) throws java.io.IOException {
        com.fasterxml.jackson.databind.JsonNode n;
        try {
            n = new com.fasterxml.jackson.databind.ObjectMapper().readTree(configJson.toFile());
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IllegalArgumentException(configJson + ": not valid JSON: " + org.grpo4j.internal.util.JsonErrors.describe(e));
        }
        com.fasterxml.jackson.databind.JsonNode t = n == null ? null : n.get("chat_template_name");
        if (t != null && !t.isTextual()) throw new IllegalArgumentException(configJson + ": chat_template_name must be a string, got " + t);
        return t == null ? new GrpoConfig().chatTemplateName : t.textValue();
    }

    /** An HF model directory: config.json and safetensors weights (one file or an index). */
    private static boolean isModel(Path dir) {
        return Files.isRegularFile(dir.resolve("config.json"))
                && (Files.isRegularFile(dir.resolve("model.safetensors")) || Files.isRegularFile(dir.resolve("model.safetensors.index.json")));
    }
}
