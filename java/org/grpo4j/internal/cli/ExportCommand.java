package org.grpo4j.internal.cli;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import java.util.concurrent.Callable;
import org.grpo4j.internal.model.LlamaWeights;
import org.grpo4j.internal.tokenizer.ChatTemplate;
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

    @Option(names = {"--chat-template", "--template"}, defaultValue = "run", description = "run (the run's chat_template_name; a model directory keeps its own;"
            + " the default), keep, tulu, llama3, r1_simple_chat, r1_simple_chat_postpend_think or tokenizer (as keep).")
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
        String name = ChatTemplate.requireKnown("--chat-template", chatTemplate, "run", "keep");
        ModelSource src = ModelSource.resolve(from);
        removeKilledExports();
        if (name.equals("run")) {
            String run = src.runChatTemplate();
            name = run == null ? "keep" : run;
        }
        if (name.equals("tokenizer")) name = "keep"; // the tokenizer's own template: as it is
        String template = name.equals("keep") ? null : ChatTemplate.named(name, null).source(); // names the valid ones otherwise
        long bytes = LlamaWeights.export(src.model(), out, dt.equals("bf16") ? "BF16" : "F32", (long) (maxShardGib * (1L << 30)), template);
        System.out.printf("grpo4j export: exported %s to %s: %s weights, %s; chat template %s%n", src.description(), out, dt, org.grpo4j.internal.backend.Memory.human(bytes),
                template == null ? "as the tokenizer had it" : name);
        return 0;
    }

    /** A temporary directory untouched this long (no file in it written) belongs to an export that is gone. */
    static final long QUIET_MILLIS = 120_000;

    /**
     * Deletes what an export to the same --out that was killed left beside it: the hidden {@code .OUT.tmp-*} directory
     * it was writing (an export renames it into place only when complete; --out is missing or empty, so no export to it
     * can have finished since), once nothing in it has been written for {@link #QUIET_MILLIS}: a newer one may be
     * another export to the same --out, still running (it writes its shards continuously), and is left alone.
     */
    private void removeKilledExports() throws java.io.IOException {
        Path abs = out.toAbsolutePath().normalize();
        if (abs.getParent() == null || !Files.isDirectory(abs.getParent())) return;
        String prefix = "." + abs.getFileName() + ".tmp-";
        try (var s = Files.list(abs.getParent())) {
            for (Path p : s.filter(q -> q.getFileName().toString().startsWith(prefix) && Files.isDirectory(q)).toList()) {
                if (System.currentTimeMillis() - newestWrite(p) < QUIET_MILLIS) {
                    System.err.println("grpo4j export: left " + p + " alone: written in the last " + QUIET_MILLIS / 1000
                            + " s (another export to " + out + " still running?)");
                    continue;
                }
                org.grpo4j.internal.util.AtomicDir.deleteTree(p);
                System.err.println("grpo4j export: removed " + p + ", left by an export to " + out + " that did not finish");
            }
        }
    }

    /** The latest modification time (ms) of a directory and everything in it. */
    private static long newestWrite(Path dir) throws java.io.IOException {
        try (var w = Files.walk(dir)) {
            return w.mapToLong(q -> {
                try {
                    return Files.getLastModifiedTime(q).toMillis();
                } catch (java.io.IOException e) {
                    return System.currentTimeMillis(); // (vanishing under us: in use)
                }
            }).max().orElse(0);
        }
    }
}
