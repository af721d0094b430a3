package org.grpo4j.internal.train;

import org.grpo4j.train.GrpoConfig;
import org.grpo4j.train.GrpoTrainer.Listener;
import org.grpo4j.train.GrpoTrainer.Result;
import org.grpo4j.train.TrainingAbortedException;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedWriter;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.Consumer;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.Backends;
import org.grpo4j.internal.backend.CpuBackend;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.Memory;
import org.grpo4j.reward.RlvrRow;
import org.grpo4j.internal.data.ShufflingIterator;
import org.grpo4j.internal.dist.Cluster;
import org.grpo4j.internal.dist.Communicator;
import org.grpo4j.internal.dist.LocalCommunicator;
import org.grpo4j.internal.model.LlamaWeights;
import org.grpo4j.internal.model.MemoryEstimate;
import org.grpo4j.reward.Rewards;
import org.grpo4j.internal.rollout.Completion;
import org.grpo4j.internal.rollout.SamplingParams;
import org.grpo4j.internal.rollout.StopStrings;
import org.grpo4j.internal.tokenizer.Tokenizer;

/**
 * The GRPO trainer: the Tulu 3.1 RLVR step of grpo-reference.md sections 1-5 over {@code world_size} data-parallel
 * ranks with ZeRO-2 (one rank: a single process), colocated generation, metrics, plots, samples, atomic checkpoints
 * and exact resume.
 *
 * Behind the public {@link org.grpo4j.train.GrpoTrainer} (which documents the behaviour) and {@code tools/grpo4j
 * train}; this class adds what only the implementation and its tests use (the cluster of a multi-process run, test
 * hooks).
 *
 * A step is four phases on every rank ({@link RolloutPhase}, {@link ScoringPhase}, {@link LogprobPhase},
 * {@link UpdatePhase}) and the metrics ({@link StepMetrics}), checkpoints and resume in {@link CheckpointPhase}; the ranks are threads of this JVM
 * ({@link LocalCommunicator} on the CPU for {@code world_size} > 1 without a launcher) or of several JVMs
 * ({@link Cluster}: NCCL, started by tools/launch). Every random choice is a pure function of (seed, step, ...), so a
 * resumed run repeats an uninterrupted one bit for bit on the CPU backend. {@link #cancel()} stops at the next step
 * boundary and checkpoints.
 */
public final class Trainer implements AutoCloseable {

    public static Builder builder(GrpoConfig cfg) { return new Builder(cfg); }

    /** Builder: output directory, resume directory, backend, reward registry, log stream, cluster. */
    public static final class Builder {
        private final GrpoConfig cfg;
        private Path outputDir, resume;
        private Backend backend;
        private Rewards rewards;
        private PrintStream log = System.out;
        private Consumer<LlamaWeights> gradientHook;
        private boolean overwrite;
        private Cluster cluster;
        private Long collectiveTimeoutMillis; // null: the config's nccl_timeout_s
        private int reshard; // 0: resume at the run's own world size
        private List<String> overrides = List.of();
        private boolean allowChanges;

        Builder(GrpoConfig cfg) { this.cfg = cfg; }

        /**
         * Start even when the output directory holds an earlier run, whose outputs are deleted when this run starts
         * (default: refuse a non-empty directory). A directory holding other files is refused either way.
         */
        public Builder overwrite(boolean b) { overwrite = b; return this; }

        public Builder outputDir(Path p) { outputDir = p; return this; }
        /** Continue the run whose output directory (or one of its checkpoints) is {@code p}. */
        public Builder resume(Path p) { resume = p; return this; }
        /**
         * Resume at {@code worldSize} ranks rather than the run's own number ({@link Checkpoints#reshardConfig}: the same global
         * batch, the per-rank batch sizes rescaled, the optimizer state resharded); 0: the run's own.
         */
        public Builder reshard(int worldSize) { reshard = worldSize; return this; }
        /**
         * Changes to a resumed run's saved config, as {@code --set} takes them ({@link ResumeChanges}: how the run runs
         * always; what it trains only with {@link #allowChanges}); empty: none.
         */
        public Builder overrides(List<String> sets) { overrides = List.copyOf(sets); return this; }
        /** Whether overrides may change what a resumed run trains from its step on (recorded in trainer_state.json). */
        public Builder allowChanges(boolean b) { allowChanges = b; return this; }
        /** The backend of a single-rank run (default: the config's {@code backend}). */
        public Builder backend(Backend b) { backend = b; return this; }
        /** Reward registry (default: the built-in verifiers with the config's compat/reward/timeout). */
        public Builder rewards(Rewards r) { rewards = r; return this; }
        /** Progress lines (null: silent). */
        public Builder log(PrintStream p) { log = p; return this; }
        /** This JVM's ranks of a multi-process run (tools/launch); without it world_size ranks run in this JVM on the CPU. */
        public Builder cluster(Cluster c) { cluster = c; return this; }
        /** Test hook: runs on the accumulated gradients before each optimizer step (world 1). */
        Builder gradientHook(Consumer<LlamaWeights> h) { gradientHook = h; return this; }
        /** How long an in-process rank waits for the others in a collective (default: the config's nccl_timeout_s). */
        Builder collectiveTimeoutMillis(long ms) { collectiveTimeoutMillis = ms; return this; }

        public Trainer build() throws IOException { return new Trainer(this); }
    }

    private static final ObjectMapper JSON = new ObjectMapper();

    private final GrpoConfig cfg;
    private final Path out;
    private final PrintStream log;
    private final boolean ownRewards, writer;
    private final List<Backend> ownBackends = new ArrayList<>();
    private final Cluster cluster;
    private Tokenizer tok;
    private Rewards rewards;
    private Ranks ranks;
    private final List<RankState> states = new ArrayList<>();
    private final List<Communicator> comms = new ArrayList<>();
    private Setup setup;
    private Path tokenizerDir;
    private RunDirectory runDir;
    private String dataFingerprint;
    private int longestPrompt;
    private boolean overwritePending;
    private final AtomicBoolean cancelled = new AtomicBoolean();
    private final List<Map<String, Double>> history = new ArrayList<>();
    private volatile int step; // last completed training step (read from any thread: completedSteps)
    private volatile int resumedAt = -1; // the checkpoint's step a resumed run started from; -1 for a new run
    /** Checkpoints, their plots and the restore of a resume (null until the ranks exist). */
    private CheckpointPhase checkpoints;
    private boolean warmupDone, generatorsReady;
    /** Forward/backward passes the warm-up ran on the first rank (for tests of its micro-batching). */
    long sftMicroBatches;

    /**
     * Per rank: {training passes run, rounds only taken part in, tokens its training passes ran} (for tests of the
     * passes at world > 1).
     */
    long[][] passCounts() {
        long[][] out = new long[states.size()][];
        for (int i = 0; i < out.length; i++)
            out[i] = new long[] {states.get(i).trainingPasses, states.get(i).paddingRounds, states.get(i).tokensRun};
        return out;
    }

    /** Per rank: the reference passes it took part in without rollouts of its own (reference_sharding; for tests). */
    long[] referenceIdlePasses() {
        long[] out = new long[states.size()];
        for (int i = 0; i < out.length; i++) out[i] = states.get(i).referenceIdlePasses;
        return out;
    }

    private Trainer(Builder b) throws IOException {
        GrpoConfig c = b.cfg;
        Path resumeDir = b.resume;
        if (c == null && resumeDir == null) throw new IllegalArgumentException("a config or a resume directory is required");
        if (c != null && resumeDir != null)
            throw new IllegalArgumentException("a resumed run uses the config saved with its checkpoint: give a config or a resume directory, not both");
        if (resumeDir == null && b.reshard != 0) throw new IllegalArgumentException("resharding (a world size of " + b.reshard + ") needs a run to resume");
        if (resumeDir == null && !b.overrides.isEmpty())
            throw new IllegalArgumentException("overrides change a resumed run's saved config; a new run's config is changed directly");
        Checkpoints.Resumed res = resumeDir == null ? null : Checkpoints.resumed(resumeDir, b.reshard, b.overrides, b.allowChanges);
        Path ck = res == null ? null : res.checkpoint();
        TrainerState saved = res == null ? null : res.state();
        List<ResumeChanges.Change> changes = res == null ? List.of() : res.changes();
        if (res != null) c = res.config();
        int savedWorld = res == null ? c.worldSize : res.savedWorld();
        c.validate("config");
        this.cfg = c;
        this.cluster = b.cluster;
        this.writer = cluster == null || cluster.hostsRankZero();
        // what resumes with --set changed, in order (trainer_state.json's config_changes); null for a new run
        com.fasterxml.jackson.databind.node.ArrayNode configChanges = saved == null ? null
                : ResumeChanges.record(saved.configChanges(), changes, saved.trainingStep());
        int launched = cluster != null ? cluster.worldSize() : cfg.worldSize;
        if (launched != cfg.worldSize) throw new IllegalArgumentException(worldSizeMismatch(cfg, launched, ck, savedWorld));
        Path runOfCheckpoint = ck == null ? null : ck.getParent().getParent();
        if (runOfCheckpoint != null && b.outputDir != null && !sameDirectory(b.outputDir, runOfCheckpoint))
            throw new IllegalArgumentException("--resume continues a run in its own directory (" + runOfCheckpoint + "); writing it to "
                    + b.outputDir + " would leave both incomplete: copy " + runOfCheckpoint + " to " + b.outputDir + " and resume the copy instead");
        this.out = b.outputDir != null ? b.outputDir : runOfCheckpoint != null ? runOfCheckpoint : Path.of(cfg.outputDir);
        if (ck == null && writer) RunDirectory.checkNewRun(out, b.overwrite); // before any work; again under the lock below
        // local dataset paths become absolute in the saved config, so that a resume finds them from any directory
        cfg.datasetMixerList = absolutize(cfg.datasetMixerList, cfg.baseDir);
        cfg.datasetMixerEvalList = absolutize(cfg.datasetMixerEvalList, cfg.baseDir);
        if (ck == null && writer && b.overwrite) RunDirectory.checkOverwriteSparesInputs(out, inputs(cfg));
        this.overwritePending = ck == null && b.overwrite;
        this.log = writer ? b.log : null;
        if (!changes.isEmpty() && log != null)
            log.printf("grpo4j: resuming at step %d with %s%n", saved.trainingStep(), String.join(", ", changes.stream().map(ch -> ch.describe()
                    + (ch.kind() == ResumeChanges.Kind.WHAT ? ": changes what the run trains from here on" : "")).toList()));
        if (ck != null && log != null) for (String n : Checkpoints.attentionFromProperties(ck, cfg)) log.println("grpo4j: note: " + n);
        if (savedWorld != cfg.worldSize && log != null)
            log.printf("grpo4j: resharding the run from %d to %d ranks: local_rollout_batch_size %d, local_mini_batch_size %d a rank (the same global"
                    + " batch); the optimizer state resharded%n", savedWorld, cfg.worldSize, cfg.localRolloutBatchSize, cfg.localMiniBatchSize);
        this.ownRewards = b.rewards == null;
        try {
            if (cluster != null) cluster.agreeOnConfig(cfg.toJson());
            // the saved config names the directory the run is in (a resumed copy's kept the original's, and a config
            // loaded from it wrote there); after the agreement, which a path spelled per node would fail
            cfg.outputDir = out.toString();
            // and a local model directory, read from the current directory (as Preflight reads it), is saved absolute:
            // a resume from elsewhere found none, or another directory's model of the same name
            if (!cfg.modelNameOrPath.startsWith("init:") && !Path.of(cfg.modelNameOrPath).isAbsolute() && Files.isDirectory(Path.of(cfg.modelNameOrPath)))
                cfg.modelNameOrPath = Path.of(cfg.modelNameOrPath).toAbsolutePath().normalize().toString();
            // the first rank's backend: preflight checks memory and precision on it
            int local = cluster != null ? cluster.localRanks().length : cfg.worldSize;
            Backends.Choice choice = firstBackend(b.backend);
            Backend first = choice == null ? null : choice.backend();
            String reason = choice == null ? null : choice.reason();
            DType dtype = saved != null && saved.precision() != null ? DType.valueOf(saved.precision().toUpperCase(java.util.Locale.ROOT))
                    : first != null ? Precision.resolve(cfg.precision, first) : cfg.precision.equals("fp32") ? DType.FP32 : DType.BF16;
            if (dtype == DType.BF16 && first != null) Precision.requireBf16(first);
            this.rewards = b.rewards != null ? b.rewards
                    : new Rewards(cfg.compat(), cfg.verificationReward, cfg.verifierTimeout, Runtime.getRuntime().availableProcessors());
            // config.json, tokenizer, template, data, verifiers, lengths and memory: all checked before the weights load
            Preflight pf = Preflight.check(cfg, first, rewards, dtype, cluster == null ? cfg.worldSize : 1);
            this.tok = pf.tokenizer();
            if (cfg.stopTokenIds == null) { // the saved config names the ids the generation config gave: its resumes stop there too
                List<Integer> extra = new ArrayList<>(pf.stopIds());
                extra.remove((Integer) tok.eosId());
                extra.removeIf(id -> id >= pf.modelConfig().vocabSize()); // (never sampled; a resume would refuse them)
                cfg.stopTokenIds = extra;
                // each node read its own model directory: the ids must be rank 0's everywhere
                if (cluster != null) {
                    String mine = extra.toString(), rankZero = cluster.share("stop_token_ids", mine);
                    if (!rankZero.equals(mine))
                        throw new IllegalArgumentException("stop_token_ids: the generation config of model_name_or_path " + cfg.modelNameOrPath + " on "
                                + org.grpo4j.internal.dist.Rendezvous.hostName() + " gives " + mine + ", rank 0's node " + rankZero
                                + ": the nodes hold different copies of the model; make them the same, or set stop_token_ids");
                }
            }
            this.tokenizerDir = pf.tokenizerDir();
            this.longestPrompt = pf.longestPrompt();
            this.dataFingerprint = pf.dataFingerprint();
            if (writer) {
                this.runDir = RunDirectory.lock(out);
                if (ck == null) RunDirectory.checkNewRun(out, b.overwrite);
                // the checkpoint was chosen before the lock: a run still writing its last one (stopped, not yet gone)
                // may have added a newer one since, and going on from the older would repeat steps
                if (ck != null && !Checkpoints.latestCheckpoint(ck.getParent()).equals(ck))
                    throw new IllegalStateException(ck + " is no longer the run's newest checkpoint (" + Checkpoints.latestCheckpoint(ck.getParent()).getFileName()
                            + " appeared while this run prepared: the run it belongs to was still saving); resume again");
                for (Path p : runDir.removeStaleTemporaries())
                    if (log != null) log.println("grpo4j: removed " + p + " (left by a run that was killed)");
            }
            StopStrings stop = cfg.stopStrings.isEmpty() ? null : new StopStrings(cfg.stopStrings, tok::decodeAsVllm);
            this.setup = new Setup(cfg, tok, pf.train(), pf.eval(), rewards, stop, tok.eosId(), pf.stopIds(), pf.modelConfig(), tokenizerDir, dtype, LrSchedule.of(cfg),
                    ReferenceOptions.metricsCompat(cfg), log, b.gradientHook);

            // the ranks: backends, communicators, model states
            this.ranks = new Ranks(local, "grpo4j");
            if (cluster == null) comms.addAll(LocalCommunicator.group(cfg.worldSize,
                    b.collectiveTimeoutMillis != null ? b.collectiveTimeoutMillis : cfg.ncclTimeoutS * 1000L));
            else for (int i = 0; i < local; i++) comms.add(null);
            ranks.onFailure(t -> {
                abortCommunicators(t);
                if (cluster != null) // the store keeps the first reason it hears
                    cluster.abort("a rank failed on " + org.grpo4j.internal.dist.Rendezvous.hostName() + ": " + (t.getMessage() == null ? t.getClass().getSimpleName() : t.getMessage()));
            });
            if (cluster != null) cluster.onAbort(why -> abortCommunicators(new org.grpo4j.internal.dist.CommunicatorException(why)));
            List<RankState> made = ranks.run(i -> {
                Backend be = cluster == null ? (cfg.worldSize == 1 ? first : ownBackends.get(i)) : openClusterBackend(i);
                // registered while it forms, so that a failure of another rank or process aborts its wait for the others
                java.util.function.Consumer<Communicator> register = forming -> {
                    Throwable late;
                    synchronized (comms) {
                        comms.set(i, forming);
                        late = abortCause;
                    }
                    // a failure before it was registered: abortCommunicators did not see it, so it is aborted here
                    // (or it would wait for the others until nccl_timeout_s)
                    if (late != null) abortCommunicator(forming, late);
                };
                Communicator comm = cluster == null ? comms.get(i) : cluster.communicator(i, be, cfg.ncclTimeoutS, register);
                register.accept(comm);
                // after the communicator exists, so that a refusal aborts it and every other rank fails in its next
                // collective (before it, the others would wait for this rank's join until nccl_timeout_s)
                if (cluster != null) pf.checkMemory(be, dtype, 1); // preflight had no device to ask: each rank asks its own
                if (cluster != null && dtype == DType.BF16) Precision.requireBf16(be);
                RankState r = new RankState(setup, be, comm, cluster == null && be instanceof CpuBackend ? cfg.worldSize : 1);
                synchronized (states) {
                    states.add(r);
                }
                // weights are read (or HF-initialized) straight into the states, never the whole fp32 model
                if (ck != null) r.initWeights(ck.resolve("model"), cfg.weightDecay);
                else if (cfg.modelNameOrPath.startsWith("init:")) r.initWeights(cfg.seed, cfg.weightDecay);
                else r.initWeights(tokenizerDir, cfg.weightDecay);
                return r;
            });
            states.clear();
            states.addAll(made);
            // every process has its weights before any rank starts a collective (the first one is the resume's checksum
            // gather or the first step's agreement): the watchdog times a collective from this rank's call, and a node
            // still reading the model from a shared filesystem nccl_timeout_s later would have aborted the others
            if (cluster != null) cluster.barrier("weights loaded", 3600);
            if (log != null) logStart(pf, dtype, reason, ck != null);
            this.checkpoints = new CheckpointPhase(cfg, out, log, writer, cluster, ranks, states, setup, tokenizerDir, dataFingerprint, configChanges,
                    savedWorld, history);
            if (ck != null) {
                step = checkpoints.restore(ck, saved);
                resumedAt = step;
                warmupDone = true;
            }
        } catch (IOException | RuntimeException | Error e) {
            abortCluster("failed to start", e);
            if (runDir != null) runDir.discardIfUnused();
            try {
                close();
            } catch (RuntimeException | Error closing) {
                e.addSuppressed(closing); // the failure to start is the news
            }
            throw e;
        }
    }

    /** Why a run of world_size cfg.worldSize cannot go on with the launched ranks; ck: the resumed checkpoint, or null. */
    private static String worldSizeMismatch(GrpoConfig cfg, int launched, Path ck, int savedWorld) {
        return ck != null
                ? "the run in " + ck.getParent().getParent() + " was trained with world_size " + savedWorld + " (its batch sizes are per rank and its optimizer state is in "
                + savedWorld + " slices)" + (cfg.worldSize != savedWorld ? " and is being resharded for " + cfg.worldSize : "") + "; resume it with "
                + cfg.worldSize + " ranks, or reshard it for " + launched + " with --world-size " + launched
                + " (the same global batch over " + launched + " ranks; the optimizer state resharded)"
                : "the config says world_size " + cfg.worldSize + " but " + launched + " ranks were launched: pass --set world_size=" + launched
                + " (the local_* batch sizes are per rank, so the global batch becomes " + launched + " x " + cfg.localRolloutBatchSize + " prompts per step),"
                + " or launch " + cfg.worldSize + (cfg.worldSize == 1 ? " rank" : " ranks");
    }

    /**
     * The first rank's backend, with the reason a fallback was taken (null: none): the builder's, or one this trainer
     * opens and owns, for a run in this process; null for a cluster's, whose CUDA backends are made on their ranks'
     * threads. A run of several in-process ranks opens a CPU backend for each (owned; the first returned).
     */
    private Backends.Choice firstBackend(Backend given) {
        if (cluster != null) return null;
        if (cfg.worldSize == 1) {
            if (given != null) return new Backends.Choice(given, null);
            // (the fallback's reason goes to this trainer's log, not also through the logger)
            Backends.Choice choice = Backends.choose(cfg.backend, org.grpo4j.internal.backend.Ops.ALL, log == null);
            ownBackends.add(choice.backend());
            return choice;
        }
        if (given != null)
            throw new IllegalArgumentException("world_size " + cfg.worldSize + " with a backend given to the builder: a given backend serves"
                    + " world_size 1; in-process ranks run on CPU backends of their own (leave backend(...) out)");
        String spec = cfg.backend.trim().toLowerCase(java.util.Locale.ROOT);
        if (spec.equals("auto") && org.grpo4j.internal.backend.CudaRuntime.probe().available())
            throw new IllegalArgumentException("world_size " + cfg.worldSize + " with backend auto on a machine with GPUs: one rank per GPU runs through"
                    + " tools/launch (tools/launch --gpus " + cfg.worldSize + " -- train --config ...); for ranks in this process on the CPU set backend cpu");
        if (spec.startsWith("cuda"))
            throw new IllegalArgumentException("world_size " + cfg.worldSize + " on " + spec
                    + ": ranks in one process run on the CPU; GPUs take one NCCL rank each, started by tools/launch (tools/launch --gpus "
                    + cfg.worldSize + " -- train --config ...), or set backend cpu");
        int threads = Math.max(1, Runtime.getRuntime().availableProcessors() / cfg.worldSize);
        for (int i = 0; i < cfg.worldSize; i++) ownBackends.add(new CpuBackend(threads));
        return new Backends.Choice(ownBackends.get(0), null);
    }
    /** The start of the run's log, once the ranks' states exist: backend, model, data, derived settings, memory, disk, notes. */
    private void logStart(Preflight pf, DType dtype, String reason, boolean resumed) {
        if (reason != null) log.println("grpo4j: " + reason);
        RankState r0 = states.get(0);
        log.printf("grpo4j: %s%s | model %,d params | precision %s | %d prompts (dropped: %d with prompt > %d tokens, %d with chat > %d tokens) | longest prompt %d tokens%n",
                r0.be.description(), cfg.worldSize > 1 ? " x " + cfg.worldSize + " ranks (ZeRO-2" + (cluster == null ? ", in-process" : ", NCCL") + ")" : "",
                r0.layout.parameters(), Precision.label(dtype), pf.train().size(), pf.train().droppedPrompt(), cfg.maxPromptTokenLength,
                pf.train().droppedChat(), cfg.maxTokenLength, pf.longestPrompt());
        for (var e : cfg.derived().entrySet()) log.printf("grpo4j:   %-36s %s%n", e.getKey(), e.getValue());
        // the estimate before any work (the warm-up, the rollouts); the report of what was allocated follows once
        // the states exist and the KV pool is sized
        String mem = pf.summary().get("memory");
        if (mem != null) log.printf("grpo4j:   %-36s %s%n", "memory per rank (estimate)", mem);
        for (String w : pf.warnings()) log.println("grpo4j: warning: " + w);
        Checkpoints.DiskPlan disk = Checkpoints.diskPlan(cfg, r0.layout.parameters(), out);
        log.printf("grpo4j:   %-36s %s%n", "checkpoints", disk.describe());
        if (!disk.fits())
            log.println("grpo4j: warning: the checkpoints this run keeps need " + Memory.human(disk.keptBytes()) + " but " + Memory.human(disk.free())
                    + " are free under " + out + (resumed ? " (counting those already there again)" : "") + ": set keep_last_n_checkpoints"
                    + " (1 keeps what a resume needs), a larger save_freq, or another output directory");
        for (String note : LrSchedule.notes(cfg)) log.println("grpo4j: note: " + note);
        if (r0.be instanceof org.grpo4j.internal.backend.CudaBackend cb)
            for (String note : RankState.attentionNotes(cfg, cb.attentionDq(), cb.wgmmaAttention())) log.println("grpo4j: note: " + note);
    }
    /**
     * Tells the other processes of a multi-process run that this one failed (before it closes its end of the
     * rendezvous, which would otherwise read as a clean exit): their launchers stop them, where they could wait in
     * the communicator's formation or a collective for this process until nccl_timeout_s. The store keeps the first
     * reason it hears.
     */
    private void abortCluster(String what, Throwable e) { abortCluster(cluster, what, e); }

    /** {@link #abortCluster(String, Throwable)} for a cluster without a trainer (the CLI's: a failure before or around it); null: nothing. */
    public static void abortCluster(org.grpo4j.internal.dist.Cluster cluster, String what, Throwable e) {
        if (cluster == null) return;
        try {
            // (clusters are the CLI's: an earlier run is named in its words on every node, not the API's)
            String why = e instanceof EarlierRunException x ? x.cliMessage() : e.getMessage() == null ? e.getClass().getSimpleName() : e.getMessage();
            cluster.abort("a process " + what + " on " + org.grpo4j.internal.dist.Rendezvous.hostName() + ": " + why);
        } catch (RuntimeException ignored) { // the store may be gone already: nothing more to tell
        }
    }

    /** A CUDA backend for local rank i of a cluster, opened on that rank's thread. */
    private Backend openClusterBackend(int i) {
        int dev = cluster.localDevices()[i];
        org.grpo4j.internal.backend.CudaRuntime.Availability a = org.grpo4j.internal.backend.CudaRuntime.probe();
        if (!a.available())
            throw new IllegalStateException("rank " + cluster.localRanks()[i] + " needs cuda:" + dev + ", but CUDA is unavailable here: " + a.reason());
        if (dev >= a.deviceCount())
            throw new IllegalStateException("rank " + cluster.localRanks()[i] + " needs cuda:" + dev + ", but only " + a.deviceCount() + " device"
                    + (a.deviceCount() == 1 ? " is" : "s are") + " visible (CUDA_VISIBLE_DEVICES, --gpus)");
        Backends.Choice ch = Backends.choose("cuda:" + dev, org.grpo4j.internal.backend.Ops.ALL);
        synchronized (ownBackends) {
            ownBackends.add(ch.backend());
        }
        return ch.backend();
    }

    /** The first failure that aborted the communicators (under comms' lock): a communicator registered later is aborted too. */
    private Throwable abortCause;

    private void abortCommunicators(Throwable cause) {
        List<Communicator> now;
        synchronized (comms) {
            if (abortCause == null) abortCause = cause;
            now = new ArrayList<>(comms);
        }
        for (Communicator c : now) if (c instanceof LocalCommunicator) abortCommunicator(c, cause);
        for (Communicator c : now) if (!(c instanceof LocalCommunicator)) abortCommunicator(c, cause);
    }

    private static void abortCommunicator(Communicator c, Throwable cause) {
        if (c instanceof LocalCommunicator l) l.abortGroup(cause);
        else if (c instanceof org.grpo4j.internal.dist.NcclCommunicator n) n.abort(cause);
    }

    /** Whether two paths name one directory (the same file where both exist, else the same absolute names). */
    public static boolean sameDirectory(Path a, Path b) {
        try {
            if (Files.exists(a) && Files.exists(b)) return Files.isSameFile(a, b);
        } catch (IOException e) {
            // compare the names
        }
        return a.toAbsolutePath().normalize().equals(b.toAbsolutePath().normalize());
    }

    /**
     * Fails unless a new run may start in {@code dir}: it is missing or empty, or (with {@code overwrite}) holds only
     * an earlier run's outputs. The trainer checks this itself; dry runs call it to report the same.
     */
    public static void checkRunDirectory(Path dir, boolean overwrite) throws IOException { RunDirectory.checkNewRun(dir, overwrite); }

    /** Refuses a resume's run directory that another run holds or that cannot be written to, writing nothing (a dry run). */
    public static void checkResumable(Path dir) throws IOException { RunDirectory.checkResumable(dir); }

    /** The dtype {@code cfg.precision} resolves to on {@code be} (for dry runs). */
    public static DType precisionOf(GrpoConfig cfg, Backend be) { return Precision.resolve(cfg.precision, be); }

    /** Stops at the next step boundary, writing a checkpoint. Safe from any thread. */
    public void cancel() { cancelled.set(true); }

    public int completedSteps() { return step; }

    /** The step of the checkpoint this run resumed from, once run() has restored it; -1 for a new run. */
    public int resumedAtStep() { return resumedAt; }

    /** The ranks' backends, in rank order (tests: allocation high-water marks). */
    List<Backend> rankBackends() {
        List<Backend> out = new ArrayList<>();
        for (RankState r : states) out.add(r.be);
        return out;
    }

    /** The ranks' states, in rank order (tests). */
    List<RankState> rankStates() { return List.copyOf(states); }

    /** The ranks' memory estimates, in rank order (tests). */
    List<MemoryEstimate> rankEstimates() {
        List<MemoryEstimate> out = new ArrayList<>();
        for (RankState r : states) out.add(r.estimate());
        return out;
    }

    /**
     * Runs the (remaining) warm-up and training steps. Refused after a run whose ranks' work failed or was interrupted
     * (the states may be partly updated); a listener's failure between steps leaves the trainer usable.
     */
    public Result run(Listener listener) throws IOException {
        Throwable failed = ranks.failure();
        if (failed != null) {
            int last = checkpoints.lastStep();
            throw new IllegalStateException("an earlier run() failed in the ranks' work after step " + step + " ("
                    + (failed.getMessage() == null ? failed.getClass().getName() : failed.getMessage()) + "): the model states may be partly"
                    + " updated, so this trainer cannot go on; close it and "
                    + (last < 0 ? "start the run again (no checkpoint was written yet: --overwrite, or GrpoTrainer.Builder.overwrite)"
                    : "resume the run from its last checkpoint (" + out.resolve("checkpoints").resolve("step_" + last) + ") with --resume " + out
                    + " or GrpoTrainer.resume"), failed);
        }
        try {
            return runSteps(listener);
        } catch (IOException | RuntimeException | Error e) {
            abortCluster("failed", e);
            throw e;
        }
    }

    /** Whether step s of total writes a checkpoint: every save_freq steps, and the last. */
    private boolean saveStep(int s, int total) { return (cfg.saveFreq > 0 && s % cfg.saveFreq == 0) || s == total; }

    private Result runSteps(Listener listener) throws IOException {
        Listener l = listener == null ? new Listener() {} : listener;
        if (writer) {
            if (overwritePending) {
                runDir.clearOutputs();
                overwritePending = false;
                if (log != null) log.println("grpo4j: --overwrite: deleted the earlier run's outputs in " + out);
            }
            Files.createDirectories(out);
            org.grpo4j.internal.util.AtomicDir.writeFile(out.resolve("config.json"), cfg.toJson());
        }
        if (!warmupDone) {
            if (cfg.sftWarmup.steps > 0) {
                long[] micro = new long[1];
                List<Boolean> done = ranks.run(i -> {
                    try {
                        return states.get(i).withAttention(() -> SftWarmup.run(states.get(i), cancelled::get, i == 0 && writer ? l::onSftStep : null,
                                i == 0 ? micro : new long[1], longestPrompt));
                    } finally {
                        states.get(i).releasePhaseBuffers();
                    }
                });
                sftMicroBatches = micro[0];
                if (!done.get(0)) {
                    if (log != null) log.println("grpo4j: stopped during the supervised warm-up, before the first checkpoint: nothing to resume");
                    return new Result(0, true, out, List.of());
                }
            }
            warmupDone = true;
            ranks.run(i -> {
                states.get(i).freezeReference(i == 0); // the process's first rank writes the checksum into checkpoints
                return null;
            });
            checkpoints.checkpoint(step, l); // step 0: the initial policy (after warm-up), so a resume never repeats the warm-up
        }
        if (!generatorsReady) {
            int maxBatch = Math.max(cfg.localCompletions(), 1);
            ranks.run(i -> {
                RankState r = states.get(i);
                r.planRecompute(longestPrompt); // both from the memory free after the model states: the activations and the pool take turns
                r.createGenerator(maxBatch, r.kvPoolBytes(longestPrompt, maxBatch), longestPrompt);
                return null;
            });
            generatorsReady = true;
            if (log != null) reportMemory(states.get(0));
        }
        int total = cfg.trainingSteps();
        // a save step whose listener threw before its checkpoint (that run() ended there): this run() writes it first
        if (step > 0 && saveStep(step, total) && checkpoints.checkpointed != step && checkpoints.judged != step) checkpoints.checkpointIfSound(step, l);
        long runStart = System.nanoTime();
        int firstStep = step + 1;
        while (step < total) {
            int s = step + 1;
            List<Map<String, Double>> ms = ranks.run(i -> states.get(i).withAttention(() -> rankStep(states.get(i), s)));
            Map<String, Double> m = ms.get(0);
            if (m == null) break; // cancelled (every rank agreed)
            step = s;
            m = java.util.Collections.unmodifiableMap(m); // what the listener and the Result see, and the plots read
            history.add(m);
            if (writer) {
                appendJsonl(out.resolve("metrics.jsonl"), m);
                progress(m, total, runStart, firstStep);
                reportRewardErrors(s, m, l);
                l.onStep(s, m);
            }
            if (saveStep(s, total)) checkpoints.checkpointIfSound(step, l);
        }
        boolean stopped = step < total;
        // (also after a completed run whose last step's listener threw before its checkpoint: run() again writes it)
        if (checkpoints.checkpointed != step && checkpoints.judged != step) checkpoints.checkpointIfSound(step, l);
        if (writer) checkpoints.writePlots();
        return new Result(step, stopped, out, List.copyOf(history));
    }

    // ---- one GRPO step ------------------------------------------------------------------------------------------

    /**
     * One step on one rank: the four phases and the metrics (the same map on every rank, but for the eval metrics the
     * leader of the writing process adds at eval steps), or null when cancelled.
     */
    private Map<String, Double> rankStep(RankState r, int s) {
        try {
            return rankStepOf(r, s);
        } catch (org.grpo4j.internal.backend.CudaException e) { // the device failed mid-step: say where, and where to go on from
            int last = checkpoints.lastStep(); // -1: none here (a process whose node does not see the run directory)
            throw e.at("training step " + s, last < 0 ? "resume the run from its last checkpoint (--resume " + out + ")"
                    : "the last checkpoint is " + out.resolve("checkpoints").resolve("step_" + last) + " (--resume " + out + " goes on from it)");
        }
    }

    private Map<String, Double> rankStepOf(RankState r, int s) {
        if (SftWarmup.agreed(r, cancelled.get())) return null;
        long t0 = System.nanoTime();
        r.comm.setContext("step " + s + ", rollout");
        RolloutPhase.Result roll = RolloutPhase.run(r, s);
        long tGen = System.nanoTime();
        r.comm.setContext("step " + s + ", scoring");
        ScoringPhase.Result sc = ScoringPhase.run(r, roll.rollouts());
        r.lastRewardError = sc.firstError();
        long tReward = System.nanoTime();
        r.comm.setContext("step " + s + ", log-probs");
        LogprobPhase.Result lpr = LogprobPhase.run(r, s, roll.rollouts(), longestPrompt);
        long tTrain0 = System.nanoTime();
        UpdatePhase.Result up;
        try {
            up = UpdatePhase.run(r, s, roll.rollouts(), longestPrompt);
        } catch (UpdatePhase.Abort a) {
            throw new TrainingAbortedException(a.step, a.inARow + " consecutive optimizer steps had a non-finite loss or gradient norm"
                    + " (learning_rate " + cfg.learningRate + "); the last checkpoint is " + out.resolve("checkpoints").resolve("step_" + checkpoints.lastStep()));
        } finally {
            r.releasePhaseBuffers();
        }
        long tEnd = System.nanoTime();
        r.comm.setContext("step " + s + ", metrics");
        Map<String, Double> m = StepMetrics.reduce(r, StepMetrics.local(r, s, roll.rollouts(), roll.stats(), up, sc, lpr, t0, tGen, tReward, tTrain0, tEnd), up.stats());
        if (r.leader() && writer && setup.eval() != null && cfg.numEvals > 0 && (s - 1) % cfg.evalFreq() == 0) {
            Map<String, Double> ev = writeSamples(r, s);
            if (m != null) {
                m = new LinkedHashMap<>(m);
                m.putAll(ev);
            }
        }
        return m;
    }

    /** The eval prompts an eval step samples (the first ones of the eval set). */
    static final int EVAL_SAMPLES = 32;

    /**
     * Eval prompts at eval steps: one completion each (temperature as in training), appended to samples.jsonl; returns
     * the step's eval metrics over those prompts: eval/verifiable_correct_rate (the share the verifier rewards, as
     * objective/verifiable_correct_rate counts), eval/verifier_scores (the mean verifier reward: no format reward, no
     * non-stop penalty, unlike objective/scores) and eval/response_length (the mean response tokens, as
     * val/response_length).
     */
    private Map<String, Double> writeSamples(RankState r, int s) {
        List<int[]> ps = new ArrayList<>();
        for (int i = 0; i < Math.min(EVAL_SAMPLES, setup.eval().size()); i++) ps.add(setup.eval().prompt(i));
        SamplingParams sp = new SamplingParams(1, (float) cfg.temperature, (float) cfg.topP, 0, cfg.responseLength, setup.stopIds(), mix(cfg.seed, s, 7),
                setup.stopStrings());
        List<List<Completion>> cs = r.generator.generate(ps, sp);
        List<Rewards.Item> items = new ArrayList<>();
        for (int i = 0; i < ps.size(); i++) {
            RlvrRow row = setup.eval().row(i);
            items.add(new Rewards.Item(tok.decodeAsTransformers(cs.get(i).get(0).tokens(), true), row.groundTruth(), row.dataset(), row));
        }
        List<Rewards.Result> res = rewards.scoreAll(items);
        double passed = 0, score = 0, tokens = 0;
        for (int i = 0; i < ps.size(); i++) {
            if (res.get(i).reward() > 0) passed++; // as ScoringPhase counts verifiable_correct_rate
            score += res.get(i).reward();
            tokens += cs.get(i).get(0).tokens().length;
        }
        Map<String, Double> ev = new LinkedHashMap<>();
        ev.put("eval/verifiable_correct_rate", passed / ps.size());
        ev.put("eval/verifier_scores", score / ps.size());
        ev.put("eval/response_length", tokens / ps.size());
        try (BufferedWriter wr = Files.newBufferedWriter(out.resolve("samples.jsonl"), StandardCharsets.UTF_8, StandardOpenOption.CREATE, StandardOpenOption.APPEND)) {
            for (int i = 0; i < ps.size(); i++) {
                ObjectNode o = JSON.createObjectNode();
                o.put("training_step", s);
                o.put("prompt", tok.decode(ps.get(i), false));
                o.put("response", items.get(i).response());
                o.put("ground_truth", items.get(i).groundTruth());
                o.put("reward", res.get(i).reward());
                o.put("finish_reason", cs.get(i).get(0).finishReason().label());
                o.put("tokens", cs.get(i).get(0).tokens().length);
                if (res.get(i).error() != null) o.put("error", res.get(i).error());
                if (res.get(i).timedOut()) o.put("timed_out", true);
                wr.write(JSON.writeValueAsString(o));
                wr.newLine();
            }
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
        return ev;
    }

    private void progress(Map<String, Double> m, int total, long runStart, int firstStep) {
        if (log == null) return;
        int done = step - firstStep + 1;
        double elapsed = (System.nanoTime() - runStart) / 1e9, eta = elapsed / done * (total - step);
        log.printf(java.util.Locale.ROOT, "step %d/%d | reward %.2f | correct %.3f | kl %.4f | len %.1f | gen %.0f tok/s | train %.0f tok/s | %.2f s/step | ETA %s%n",
                step, total, m.get("objective/scores"), m.get("objective/verifiable_correct_rate"), m.get("objective/kl"),
                m.get("val/response_length"), m.get("throughput/generation_tokens_per_s"), m.get("throughput/training_tokens_per_s"),
                m.get("time/step"), duration(eta));
    }

    /**
     * Once per step with failed rewards (each scored 0, the run goes on): one log line and the listener, with the
     * count over every rank and the first error of this process's ranks.
     */
    private void reportRewardErrors(int s, Map<String, Double> m, Listener l) {
        int errors = (int) Math.round(m.getOrDefault("rewards/errors", 0.0));
        if (errors <= 0) return;
        String example = null;
        for (RankState r : states) if (example == null) example = r.lastRewardError;
        if (example == null) example = "on a rank of another process (see its samples)";
        if (log != null)
            log.printf("grpo4j: step %d: %d reward%s failed and scored 0 (%s)%n", s, errors, errors == 1 ? "" : "s", example);
        l.onRewardErrors(s, errors, example);
    }

    /** The memory of one rank before the first step: model states by kind, then the activation and KV budgets. */
    private void reportMemory(RankState r) {
        MemoryEstimate est = r.estimate();
        long seq = (long) longestPrompt + cfg.responseLength;
        long fwdTokens = (long) cfg.localRolloutForwardBatchSize * seq;
        int layers = r.s.model().numLayers(), recomputed = r.recompute();
        double train = RankState.largestPassBytes(cfg, est, layers, recomputed, longestPrompt, Preflight.lmRowsBytes(cfg, r.s.dtype()));
        double acts = Math.max(train, est.noGradActivationBytes(fwdTokens, (long) cfg.localRolloutForwardBatchSize * cfg.responseLength));
        StringBuilder sb = new StringBuilder("grpo4j: memory per rank (" + r.be.name() + ", " + Precision.label(setup.dtype()) + "):");
        String row = "%n  %-52s %12s%s";
        for (MemoryEstimate.Line line : est.perRank())
            if (!line.update()) sb.append(String.format(java.util.Locale.ROOT, row, line.what(), Memory.human(line.bytes()), ""));
        sb.append(String.format(java.util.Locale.ROOT, row, "model states", Memory.human(est.statesBytes()), "  (allocated now: " + Memory.human(r.be.liveBytes()) + ")"));
        for (MemoryEstimate.Line line : est.perRank())
            if (line.update()) sb.append(String.format(java.util.Locale.ROOT, row, line.what(), Memory.human(line.bytes()), "  (update phases only)"));
        sb.append(String.format(java.util.Locale.ROOT, row, "activations of the largest pass (estimate)", Memory.human(acts),
                "  (gradient checkpointing: " + (cfg.gradientCheckpointing ? recomputed + " of " + layers + " layers recomputed, recompute_layers "
                        + cfg.recomputeLayers + (!cfg.recomputeLayers.equals("auto") ? ""
                        : recomputed == layers ? ": the free memory is unknown or too little to keep any layer's activations"
                        : ": the others keep their activations within " + Math.round(RankState.RECOMPUTE_BUDGET * 100) + "% of what the states and the update buffers leave free")
                        : "off") + ")"));
        // what the cache allocates: its blocks (the sizing's budget in whole blocks) and the pad block
        int blocks = r.generator.config().numBlocks();
        long perBlock = r.model.kvBytesPerToken() * RankState.KV_BLOCK;
        sb.append(String.format(java.util.Locale.ROOT, row, "KV cache pool", Memory.human((blocks + 1L) * perBlock), "  (" + blocks + " blocks of "
                + RankState.KV_BLOCK + " tokens and a pad block, during rollouts; " + (cfg.kvCacheMib > 0 ? "kv_cache_mib"
                : "kv_cache_fraction " + cfg.kvCacheFraction + ", at most what the samples use") + ")"));
        int maxBatch = Math.max(cfg.localCompletions(), 1);
        sb.append(String.format(java.util.Locale.ROOT, row, "generation's working memory (estimate)",
                Memory.human(est.generationBytes(maxBatch, RankState.prefillTokens(cfg, longestPrompt))), "  (during rollouts)"));
        long free = Memory.available(r.be);
        if (free >= 0) sb.append(String.format(java.util.Locale.ROOT, "%n  free now: %s %s", Memory.human(free), Memory.describe(r.be)));
        log.println(sb);
    }

    static String duration(double s) {
        long t = Math.round(s);
        return t >= 3600 ? String.format("%dh%02dm", t / 3600, t / 60 % 60) : t >= 60 ? String.format("%dm%02ds", t / 60, t % 60) : t + "s";
    }

    // ---- checkpoints and resume ---------------------------------------------------------------------------------

    // ---- helpers ------------------------------------------------------------------------------------------------

    private static void appendJsonl(Path f, Map<String, Double> m) throws IOException {
        ObjectNode o = JSON.createObjectNode();
        m.forEach((k, v) -> {
            if (v == null || !Double.isFinite(v)) o.putNull(k);
            else o.put(k, v);
        });
        try {
            Files.writeString(f, JSON.writeValueAsString(o) + "\n", StandardCharsets.UTF_8, StandardOpenOption.CREATE, StandardOpenOption.APPEND);
        } catch (IOException e) {
            throw new IOException(f + ": cannot append: " + org.grpo4j.internal.util.AtomicDir.describe(e), e);
        }
    }

    /** The run's input paths as (config key, path): the model and each dataset of the (absolutized) mixer lists. */
    private static List<String[]> inputs(GrpoConfig c) {
        List<String[]> in = new ArrayList<>();
        in.add(new String[] {"model_name_or_path", c.modelNameOrPath});
        for (int i = 0; i + 1 < c.datasetMixerList.size(); i += 2) in.add(new String[] {"dataset_mixer_list", c.datasetMixerList.get(i)});
        for (int i = 0; i + 1 < c.datasetMixerEvalList.size(); i += 2) in.add(new String[] {"dataset_mixer_eval_list", c.datasetMixerEvalList.get(i)});
        return in;
    }

    /** A copy of a mixer list with each local dataset path (even positions) made absolute. */
    private static List<String> absolutize(List<String> in, Path baseDir) {
        List<String> mixer = new ArrayList<>(in);
        for (int i = 0; i + 1 < mixer.size(); i += 2) {
            String d = mixer.get(i);
            Path p = Path.of(d);
            if (p.isAbsolute()) continue;
            if (baseDir != null && Files.exists(baseDir.resolve(p))) mixer.set(i, baseDir.resolve(p).normalize().toString());
            else if (Files.exists(p)) mixer.set(i, p.toAbsolutePath().normalize().toString());
        }
        return mixer;
    }

    static int[] concat(int[] a, int[] b) {
        int[] c = java.util.Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, c, a.length, b.length);
        return c;
    }

    /** A 64-bit seed from (seed, step, salt): SplitMix64 finalizer over their combination. */
    static long mix(long seed, long step, long salt) {
        long z = seed * 0x9E3779B97F4A7C15L + step * 0xBF58476D1CE4E5B9L + salt * 0x94D049BB133111EBL;
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    static int[] permutation(int n, long seed) { return ShufflingIterator.permutation(n, seed); }

    @Override
    public void close() {
        // every part closed even when one fails (the first failure rethrown after): a leaked lock would refuse the next
        // run in this directory, leaked backends their memory
        // the rank threads first: after an interrupted run their work may still be going on, and the states,
        // communicators and backends it uses are freed only once it has stopped (left allocated if it never does)
        RuntimeException ranksRunning = null;
        try {
            if (ranks != null) ranks.close();
        } catch (RuntimeException e) {
            ranksRunning = e;
        }
        List<AutoCloseable> parts = new ArrayList<>();
        if (ranksRunning == null) {
            parts.addAll(states);
            states.clear();
            List<Communicator> open = new ArrayList<>();
            for (Communicator c : comms) if (c != null) open.add(c);
            if (!open.isEmpty()) parts.add(() -> closeTogether(open));
        }
        if (tok != null && ranksRunning == null) parts.add(tok);
        if (ownRewards && rewards != null) parts.add(rewards);
        if (ranksRunning == null) parts.addAll(ownBackends);
        if (runDir != null && ranksRunning == null) parts.add(runDir); // (kept locked while a rank may still write into it)
        try {
            org.grpo4j.internal.util.Closing.closeAll("the trainer", parts);
        } catch (RuntimeException | Error e) {
            if (ranksRunning != null) e.addSuppressed(ranksRunning);
            throw e;
        }
        if (ranksRunning != null) throw ranksRunning;
    }

    /**
     * Closes this process's communicators at once, each on a thread of its own: NCCL's finalize waits at a barrier of
     * every rank on the node, so closing eight local ranks one after another left each finalize to wait out its grace
     * period (30 s) for ranks not yet closing, and end in an abort. The first failure is thrown, the others suppressed.
     */
    static void closeTogether(List<Communicator> cs) {
        if (cs.size() == 1) {
            cs.get(0).close();
            return;
        }
        List<Throwable> failed = java.util.Collections.synchronizedList(new ArrayList<>());
        List<Thread> threads = new ArrayList<>();
        for (int i = 0; i < cs.size(); i++) {
            Communicator c = cs.get(i);
            Thread t = new Thread(() -> {
                try {
                    c.close();
                } catch (Throwable e) {
                    failed.add(e);
                }
            }, "grpo4j-comm-close-" + i);
            t.setDaemon(true);
            t.start();
            threads.add(t);
        }
        boolean interrupted = false;
        // each close is bounded by its own grace periods (about two minutes at most); past five, the rest is left to its
        // daemon thread and said so
        long deadline = System.nanoTime() + java.util.concurrent.TimeUnit.MINUTES.toNanos(5);
        for (Thread t : threads)
            while (t.isAlive() && System.nanoTime() < deadline) {
                try {
                    t.join(Math.max(1, java.util.concurrent.TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime())));
                } catch (InterruptedException e) {
                    interrupted = true; // (restored below)
                }
            }
        if (interrupted) Thread.currentThread().interrupt();
        for (Thread t : threads)
            if (t.isAlive()) failed.add(new IllegalStateException(t.getName() + ": a communicator did not close within 5 minutes; left closing"));
        if (failed.isEmpty()) return;
        Throwable first = failed.get(0);
        for (Throwable t : failed.subList(1, failed.size())) first.addSuppressed(t);
        if (first instanceof RuntimeException re) throw re;
        if (first instanceof Error er) throw er;
        throw new IllegalStateException(first);
    }
}
