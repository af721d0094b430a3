package org.grpo4j.internal.cli;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.Backends;
import org.grpo4j.internal.backend.Memory;
import org.grpo4j.internal.model.LlamaConfig;
import org.grpo4j.internal.model.LlamaWeights;
import org.grpo4j.internal.model.ParameterLayout;
import org.grpo4j.internal.tokenizer.Tokenizer;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code grpo4j init-model}: a randomly initialized Llama in HF layout, with a tokenizer. */
@Command(name = "init-model", mixinStandardHelpOptions = true,
        description = "Write a randomly initialized Llama (HF layout: config.json, safetensors, tokenizer files).")
final class InitModelCommand implements Callable<Integer> {
    @Option(names = "--preset", defaultValue = "tiny", description = "tiny (2 layers, hidden 64, GQA 4/2; the default), llama-3.2-1b, "
            + "llama-3.1-8b (with --config-only) or llama-3.1-8b-4l (8B truncated to 4 layers, for one-GPU benchmarks).")
    String preset;

    @Option(names = "--out", required = true, description = "Output directory (must not exist or be empty).")
    Path out;

    @Option(names = "--seed", defaultValue = "0", description = "Initialization seed (default: ${DEFAULT-VALUE}).")
    long seed;

    @Option(names = "--tokenizer", description = "Tokenizer directory to copy (default: the bundled tiny tokenizer).")
    Path tokenizer;

    @Option(names = "--dtype", defaultValue = "F32", description = "Weight dtype on disk: F32 or BF16 (default: ${DEFAULT-VALUE}).")
    String dtype;

    @Option(names = "--config-only", description = "Write config.json only (for memory estimates of large presets).")
    boolean configOnly;

    @Override
    public Integer call() throws Exception {
        if (out.toString().isBlank()) throw new IllegalArgumentException("--out is empty; name a new directory");
        String dt = dtype.toUpperCase(java.util.Locale.ROOT);
        if (!dt.equals("F32") && !dt.equals("BF16")) throw new IllegalArgumentException("--dtype must be F32 or BF16, got " + dtype);
        if (tokenizer != null && tokenizer.toString().isBlank()) throw new IllegalArgumentException("--tokenizer is empty");
        if (Files.exists(out) && !Files.isDirectory(out)) throw new IllegalArgumentException(out + ": exists and is not a directory");
        if (Files.isDirectory(out) && !configOnly) {
            try (var s = Files.list(out)) {
                if (s.findAny().isPresent()) throw new IllegalArgumentException(out + ": output directory exists and is not empty");
            }
        }
        LlamaConfig cfg;
        Path tokDir;
        if (preset.equals("tiny")) {
            tokDir = tokenizer != null ? tokenizer : Tokenizer.extractBundledTiny();
            try (Tokenizer t = Tokenizer.load(tokDir)) {
                if (t.eosId() < 0)
                    throw new IllegalArgumentException(tokDir + ": the tokenizer names no eos_token (tokenizer_config.json), which the model's"
                            + " eos_token_id needs (generation stops at it)");
                cfg = LlamaConfig.tiny(t.vocabSize(), t.bosId(), t.eosId());
            }
        } else if (LlamaConfig.NAMED_PRESETS.contains(preset)) {
            cfg = LlamaConfig.preset(preset);
            long params = new ParameterLayout(cfg).totalElements();
            if (!configOnly && params > Integer.MAX_VALUE - 8)
                throw new IllegalArgumentException("--preset " + preset + " needs --config-only (" + String.format(java.util.Locale.ROOT, "%.2fB", params / 1e9)
                        + " random weights would need " + Memory.human(4.0 * params) + " of fp32 on the CPU)");
            // the bundled tiny tokenizer does not cover a Llama 3 vocabulary: tokenizer files only when given
            tokDir = tokenizer;
            if (tokDir != null) {
                try (Tokenizer t = Tokenizer.load(tokDir)) {
                    if (t.vocabSize() > cfg.vocabSize())
                        throw new IllegalArgumentException(tokDir + ": the tokenizer has " + t.vocabSize() + " tokens, more than the " + preset
                                + " vocabulary of " + cfg.vocabSize());
                }
            }
            if (!configOnly) {
                long largest = 0;
                for (ParameterLayout.Entry e : new ParameterLayout(cfg).entries()) largest = Math.max(largest, e.numel());
                // the fp32 flat buffer, its host copy while saving, and one tensor's initial values
                Memory.requireHeap(8 * params + 4 * largest, "--preset " + preset + " with random weights",
                        "use --config-only, or raise the heap (GRPO4J_JAVA_OPTS=-Xmx...)");
            }
        } else {
            throw new IllegalArgumentException("unknown preset \"" + preset + "\" (expected tiny, " + String.join(", ", LlamaConfig.NAMED_PRESETS) + ")");
        }
        if (configOnly) {
            Files.createDirectories(out);
            Path f = out.resolve("config.json");
            if (Files.exists(f)) throw new IllegalArgumentException(f + " already exists");
            // through a synced temporary renamed into place: a failed write leaves no half a config.json (which the next
            // try refused as existing)
            org.grpo4j.internal.util.AtomicDir.writeFile(f, new com.fasterxml.jackson.databind.ObjectMapper().writerWithDefaultPrettyPrinter()
                    .writeValueAsString(cfg.toJson("bfloat16")));
            System.out.println("wrote " + f);
            return 0;
        }
        try (Backend be = Backends.open("cpu"); LlamaWeights w = LlamaWeights.init(be, cfg, seed)) {
            w.save(out, dtype.toUpperCase(java.util.Locale.ROOT), 5L << 30, tokDir);
            System.out.printf("wrote %s: %s preset, %,d parameters, seed %d%s%n", out, preset, w.layout().totalElements(), seed,
                    tokDir == null ? " (no tokenizer files: pass --tokenizer DIR with the Llama 3 tokenizer)" : "");
        }
        return 0;
    }
}
