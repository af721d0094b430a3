package org.grpo4j.internal.cli;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.Backends;
import org.grpo4j.train.GrpoConfig;
import org.grpo4j.internal.train.Trainer;
import org.grpo4j.internal.train.Preflight;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code grpo4j train}: a thin layer over {@link Trainer}. */
@Command(name = "train", mixinStandardHelpOptions = true, description = "Train with GRPO (the Tulu 3.1 RLVR recipe).")
final class TrainCommand implements Callable<Integer> {
    @Option(names = "--config", description = "JSON config (reference flag names in snake_case).") Path config;
    @Option(names = "--set", description = "Override a config key: --set learning_rate=1e-6 (repeatable; nested: sft_warmup.steps=0). With --resume:"
            + " keys that change how the run runs (memory, speed, cadence; e.g. kv_cache_fraction, save_freq, num_training_steps under a constant"
            + " schedule); keys that change what it trains need --allow-changes.") List<String> set = new ArrayList<>();
    @Option(names = "--allow-changes", description = "With --resume and --set: let the overrides change what the run trains from its step on"
            + " (learning rate, beta, ...); trainer_state.json records each change.") boolean allowChanges;
    @Option(names = "--output", description = "Run directory (default: the config's output_dir). Must be new or empty.") Path output;
    @Option(names = "--overwrite", description = "Replace the earlier run in the run directory (its outputs are deleted when training starts).") boolean overwrite;
    @Option(names = "--resume", description = "Continue the run in this directory (or from this checkpoint), with its saved config.") Path resume;
    @Option(names = "--world-size", description = "With --resume: go on at this many ranks (the same global batch; the per-rank batch sizes"
            + " rescaled and the optimizer state resharded). Launched ranks: tools/launch's number.") Integer worldSize;
    @Option(names = "--dry-run", description = "Run every check that does not need the weights, print the derived quantities; train nothing.") boolean dryRun;
    @Option(names = "--rdzv-timeout", defaultValue = "300", description = "One process per rank (RANK/WORLD_SIZE, or srun with several tasks a node):"
            + " seconds to wait for every process to join (default: ${DEFAULT-VALUE}).") int rdzvTimeout;

    /** This JVM's ranks of a multi-process run (set by launch), or null. */
    org.grpo4j.internal.dist.Cluster cluster;
    /** The environment (tests replace it). */
    java.util.Map<String, String> env = System.getenv();
    /** Whether the run returned (finished or stopped at a step boundary) before anything failed. */
    private boolean trained;

    @Override
    public Integer call() throws Exception {
        // a process of one rank joins the run's rendezvous first, so that whatever fails below (a config that does not
        // load here, a world size that differs, a missing checkpoint) stops the other processes at once with the reason,
        // instead of leaving them waiting for this one until the rendezvous timeout
        org.grpo4j.internal.dist.Rendezvous own = cluster == null && !dryRun ? perRankLaunch() : null;
        org.grpo4j.internal.dist.Cluster run = cluster != null ? cluster : own;
        try (own) {
            try {
                return train(run);
            } catch (Exception | Error e) {
                // (a clean exit of this process would read as "done" to the others); a failure after the run finished
                // (closing it) leaves the others to finish theirs
                if (!trained) Trainer.abortCluster(run, "failed", e);
                throw e;
            }
        }
    }

    private int train(org.grpo4j.internal.dist.Cluster run) throws Exception {
        if (config == null && resume == null) throw new IllegalArgumentException("--config is required (or --resume DIR)");
        if (resume != null && config != null)
            throw new IllegalArgumentException("--config cannot be combined with --resume: a resumed run goes on with the config saved in its checkpoint");
        if (allowChanges && (resume == null || set.isEmpty()))
            throw new IllegalArgumentException("--allow-changes lets --set change a resumed run (with --resume and --set)");
        if (resume != null && overwrite) throw new IllegalArgumentException("--overwrite and --resume exclude each other: resume continues the run, overwrite replaces it");
        if (worldSize != null && resume == null)
            throw new IllegalArgumentException("--world-size reshards a resumed run (with --resume); a new run takes world_size from its config (--set world_size=N)");
        if (worldSize != null && worldSize < 1) throw new IllegalArgumentException("--world-size must be >= 1, got " + worldSize);
        GrpoConfig cfg = config != null ? GrpoConfig.load(config, set) : null;
        if (dryRun && resume != null) { // the resume's config (overrides, reshard) checked as a new run's would be, its precision kept
            org.grpo4j.internal.train.Checkpoints.ResumePlan p = org.grpo4j.internal.train.Checkpoints.plan(resume, worldSize != null ? worldSize : 0, set,
                    allowChanges);
            Path runDir = p.checkpoint().getParent().getParent();
            if (output != null && !Trainer.sameDirectory(output, runDir))
                throw new IllegalArgumentException("--resume continues a run in its own directory (" + runDir + "), not " + output);
            return dryRun(p.config(), "resuming " + p.checkpoint() + " (step " + p.step() + ")", runDir,
                    org.grpo4j.internal.backend.DType.valueOf(p.precision().toUpperCase(java.util.Locale.ROOT)), p);
        }
        if (dryRun) return dryRun(cfg, config.toString(), output != null ? output : Path.of(cfg.outputDir), null, null);
        Trainer.Builder b = Trainer.builder(cfg).outputDir(output).overwrite(overwrite);
        if (resume != null) b.resume(resume).reshard(worldSize != null ? worldSize : 0).overrides(set).allowChanges(allowChanges);
        if (run != null) b.cluster(run);
        try (Trainer t = b.build(); StopSignals signals = StopSignals.install(t::cancel, System.err)) {
            org.grpo4j.train.GrpoTrainer.Result r = t.run(null);
            trained = true;
            if (resume != null && !r.cancelled() && r.lastStep() == t.resumedAtStep())
                System.out.println("grpo4j: the run had already finished at step " + r.lastStep() + ": nothing to train; to go on, raise its"
                        + " horizon: --resume " + resume + " --set num_training_steps=N (N > " + r.lastStep() + ")");
            else
                System.out.println("grpo4j: " + (r.cancelled() ? "stopped" : "finished") + " at step " + r.lastStep() + "; outputs in " + r.outputDir());
            return exitCode(r.cancelled(), signals.exitCode());
        }
    }

    /** The exit status of a run stopped before its horizon by another process of the run (docs/cli.md). */
    static final int STOPPED_BY_ANOTHER_PROCESS = 5;

    /**
     * A run's exit status: 0 when it trained to its horizon; 128 + N when signal N to this process stopped it; when it
     * stopped early with no signal of its own (another node's process was signalled and every rank agreed to stop),
     * {@link #STOPPED_BY_ANOTHER_PROCESS}: not 0, which a script (`tools/launch ... && upload`) would read as done.
     */
    static int exitCode(boolean cancelled, int signalExitCode) {
        if (!cancelled) return 0;
        return signalExitCode > 0 ? signalExitCode : STOPPED_BY_ANOTHER_PROCESS;
    }

    /**
     * This process's rank of a one-JVM-per-rank launch of more than one rank (torchrun-style RANK and WORLD_SIZE, or
     * srun with several tasks a node: SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID; {@link org.grpo4j.internal.dist.DistEnv}),
     * or null (a run of its own).
     */
    static org.grpo4j.internal.dist.DistEnv perRankEnv(java.util.Map<String, String> env) {
        if (!org.grpo4j.internal.dist.DistEnv.perRankLaunch(env)) {
            // (a launcher that sets these but not RANK, or a typo in RANK, started N runs of their own at world size 1)
            for (String k : new String[] {"WORLD_SIZE", "LOCAL_RANK"}) {
                String v = env.get(k);
                if (v != null && !v.isBlank() && !v.trim().equals(k.equals("WORLD_SIZE") ? "1" : "0"))
                    throw new IllegalArgumentException(k + "=" + v.trim() + " is set but RANK is not: a launch of one process per rank sets RANK"
                            + " (and WORLD_SIZE, LOCAL_RANK, MASTER_ADDR) for each; unset " + k + " to train alone, or launch per node with tools/launch");
            }
            return null;
        }
        org.grpo4j.internal.dist.DistEnv d = org.grpo4j.internal.dist.DistEnv.fromEnvironment(env, 1);
        return d.worldSize() > 1 ? d : null;
    }

    /** A one-JVM-per-rank launch ({@link #perRankEnv}) joins the run's rendezvous; otherwise null. */
    private org.grpo4j.internal.dist.Rendezvous perRankLaunch() throws java.io.IOException {
        org.grpo4j.internal.dist.DistEnv d = perRankEnv(env);
        if (d == null) return null;
        if (rdzvTimeout < 1) throw new IllegalArgumentException("--rdzv-timeout must be >= 1 s, got " + rdzvTimeout);
        org.grpo4j.internal.dist.Rendezvous r = new org.grpo4j.internal.dist.Rendezvous(d, env.getOrDefault(org.grpo4j.internal.dist.Rendezvous.SECRET_ENV, ""),
                rdzvTimeout * 1000L, 3000);
        r.onAbort(reason -> {
            System.err.println("grpo4j train: the run was aborted: " + reason);
            LaunchCommand.haltIfStillRunning("grpo4j train", 60_000);
        });
        return r;
    }

    /**
     * The derived quantities first (useful even when a check fails, e.g. for a config meant for another machine), then
     * every check. {@code what} names the config (its file, or the resume); {@code precision} is a resumed run's own
     * (null: the config's on this backend); a new run's output directory must be new or empty.
     */
    private int dryRun(GrpoConfig cfg, String what, Path out, org.grpo4j.internal.backend.DType precision,
                       org.grpo4j.internal.train.Checkpoints.ResumePlan plan) throws Exception {
        System.out.println("derived quantities of " + what + ":");
        for (var e : cfg.derived().entrySet()) System.out.printf("  %-36s %s%n", e.getKey(), e.getValue());
        for (String note : org.grpo4j.internal.train.LrSchedule.notes(cfg)) System.out.println("  note: " + note);
        System.out.flush();
        if (resume == null) Trainer.checkRunDirectory(out, overwrite);
        else Trainer.checkResumable(out);
        String spec = cfg.backend == null ? "auto" : cfg.backend.trim().toLowerCase(java.util.Locale.ROOT);
        org.grpo4j.internal.backend.CudaRuntime.Availability cuda = org.grpo4j.internal.backend.CudaRuntime.probe();
        // a GPU config checked on a machine without one (a login node): everything but the device, memory needs per GPU
        // (no driver, no device, or no CUDA runtime; a GPU host whose CUDA is broken still fails below)
        boolean noDevice = spec.startsWith("cuda") && !cuda.available()
                && (!cuda.libraryLoaded() || cuda.reason().contains("no NVIDIA driver") || cuda.reason().equals("no CUDA device visible"));
        try (Backend be = noDevice ? null : Backends.choose(cfg.backend, org.grpo4j.internal.backend.Ops.ALL).backend();
             Preflight pf = Preflight.check(cfg, be, null, precision != null ? precision : org.grpo4j.internal.train.Trainer.precisionOf(cfg, be), // no device: a GPU's
                     cfg.worldSize > 1 && be instanceof org.grpo4j.internal.backend.CpuBackend ? cfg.worldSize : 1)) {
            if (noDevice) System.out.println("  (no CUDA device here: " + cuda.reason() + "; checked everything but the device: the memory below is per GPU,"
                    + " compared with none)");
            if (plan != null) plan.requireSameData(pf.dataFingerprint(), pf.train().size());
            if (plan != null && precision == org.grpo4j.internal.backend.DType.BF16 && be != null) org.grpo4j.internal.train.Precision.requireBf16(be);
            for (var e : pf.summary().entrySet()) System.out.printf("  %-36s %s%n", e.getKey(), e.getValue());
            for (String w : pf.warnings()) System.out.println("  warning: " + w);
            System.out.printf("  %-36s %s%n", "output directory", out + (overwrite ? " (its earlier run would be replaced)" : resume != null ? " (the run's own)" : ""));
            org.grpo4j.internal.train.Checkpoints.DiskPlan disk = org.grpo4j.internal.train.Checkpoints.diskPlan(cfg,
                    new org.grpo4j.internal.model.ParameterLayout(pf.modelConfig()).totalElements(), out);
            System.out.printf("  %-36s %s%s%n", "checkpoints", disk.describe(), disk.fits() ? "" : plan != null
                    ? " -- may not fit (those already there counted again): set keep_last_n_checkpoints or a larger save_freq (--set)"
                    : " -- DOES NOT FIT: set keep_last_n_checkpoints, a larger save_freq, or another output directory");
            if (cfg.worldSize != 1) {
                System.out.println("config OK for " + cfg.worldSize + " ranks (ZeRO-2): on GPUs start it with tools/launch (one rank per GPU); on the CPU, "
                        + "train runs the " + cfg.worldSize + " ranks in this process: " + what);
                return 0;
            }
            System.out.println(noDevice ? "config OK but for the device, which this machine lacks (run the dry run on a GPU host to compare the memory): "
                    + what : "config OK: " + what);
        }
        return 0;
    }
}
