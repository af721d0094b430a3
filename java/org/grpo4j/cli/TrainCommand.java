package org.grpo4j.cli;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import org.grpo4j.train.GrpoConfig;
import org.grpo4j.train.GrpoTrainer;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code grpo4j train}: a thin layer over {@link GrpoTrainer}. */
@Command(name = "train", mixinStandardHelpOptions = true, description = "Train with GRPO (the Tulu 3.1 RLVR recipe).")
final class TrainCommand implements Callable<Integer> {
    @Option(names = "--config", description = "JSON config (reference flag names in snake_case).") Path config;
    @Option(names = "--set", description = "Override a config key: --set learning_rate=1e-6 (repeatable; nested: sft_warmup.steps=0).") List<String> set = new ArrayList<>();
    @Option(names = "--output", description = "Run directory (default: the config's output_dir).") Path output;
    @Option(names = "--resume", description = "Continue the run in this directory (or from this checkpoint).") Path resume;
    @Option(names = "--dry-run", description = "Validate the config and print the derived quantities; train nothing.") boolean dryRun;

    @Override
    public Integer call() throws Exception {
        if (config == null && resume == null) throw new IllegalArgumentException("--config is required (or --resume DIR)");
        GrpoConfig cfg = config != null ? GrpoConfig.load(config, set) : null;
        if (dryRun) {
            if (cfg == null) throw new IllegalArgumentException("--dry-run needs --config");
            System.out.println("config OK: " + config);
            for (var e : cfg.derived().entrySet()) System.out.printf("  %-36s %s%n", e.getKey(), e.getValue());
            for (String note : org.grpo4j.train.LrSchedule.notes(cfg)) System.out.println("  note: " + note);
            return 0;
        }
        if (resume != null && !set.isEmpty()) throw new IllegalArgumentException("--set cannot change a resumed run (its saved config is used)");
        GrpoTrainer.Builder b = GrpoTrainer.builder(cfg).outputDir(output);
        if (resume != null) b.resume(resume);
        try (GrpoTrainer t = b.build()) {
            Thread hook = new Thread(t::cancel);
            Runtime.getRuntime().addShutdownHook(hook);
            GrpoTrainer.Result r = t.run(null);
            try {
                Runtime.getRuntime().removeShutdownHook(hook);
            } catch (IllegalStateException ignored) {
                // already shutting down
            }
            System.out.println("grpo4j: " + (r.cancelled() ? "stopped" : "finished") + " at step " + r.lastStep() + "; outputs in " + r.outputDir());
        }
        return 0;
    }
}
