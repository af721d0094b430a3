package org.grpo4j.cli;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import org.grpo4j.backend.Backend;
import org.grpo4j.backend.Backends;
import org.grpo4j.model.LlamaConfig;
import org.grpo4j.model.LlamaWeights;
import org.grpo4j.tokenizer.Tokenizer;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code grpo4j init-model}: a randomly initialized Llama in HF layout, with a tokenizer. */
@Command(name = "init-model", mixinStandardHelpOptions = true,
        description = "Write a randomly initialized Llama (HF layout: config.json, safetensors, tokenizer files).")
final class InitModelCommand implements Callable<Integer> {
    @Option(names = "--preset", defaultValue = "tiny", description = "tiny (2 layers, hidden 64, GQA 4/2) or llama-3.1-8b (with --config-only).")
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
        Path tokDir = tokenizer != null ? tokenizer : Tokenizer.extractBundledTiny();
        LlamaConfig cfg;
        switch (preset) {
            case "tiny" -> {
                try (Tokenizer t = Tokenizer.load(tokDir)) {
                    cfg = LlamaConfig.tiny(t.vocabSize(), t.bosId(), t.eosId());
                }
            }
            case "llama-3.1-8b" -> {
                if (!configOnly) throw new IllegalArgumentException("--preset llama-3.1-8b needs --config-only (8B random weights would need 32 GB of fp32 on the CPU)");
                cfg = LlamaConfig.llama31_8b();
            }
            default -> throw new IllegalArgumentException("unknown preset \"" + preset + "\" (expected tiny or llama-3.1-8b)");
        }
        if (configOnly) {
            Files.createDirectories(out);
            Path f = out.resolve("config.json");
            if (Files.exists(f)) throw new IllegalArgumentException(f + " already exists");
            new com.fasterxml.jackson.databind.ObjectMapper().writerWithDefaultPrettyPrinter().writeValue(f.toFile(), cfg.toJson("bfloat16"));
            System.out.println("wrote " + f);
            return 0;
        }
        try (Backend be = Backends.open("cpu"); LlamaWeights w = LlamaWeights.init(be, cfg, seed)) {
            w.save(out, dtype.toUpperCase(java.util.Locale.ROOT), 5L << 30, tokDir);
            System.out.printf("wrote %s: %s preset, %,d parameters, seed %d%n", out, preset, w.layout().totalElements(), seed);
        }
        return 0;
    }
}
