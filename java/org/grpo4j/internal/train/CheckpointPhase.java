package org.grpo4j.internal.train;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.data.ShufflingIterator;
import org.grpo4j.internal.dist.Cluster;
import org.grpo4j.internal.model.LlamaWeights;
import org.grpo4j.internal.util.AtomicDir;
import org.grpo4j.internal.util.Charts;
import org.grpo4j.train.GrpoConfig;
import org.grpo4j.train.GrpoTrainer.Listener;

/**
 * A run's checkpoints, from {@link Trainer}'s step loop: checkpoints/step_N written atomically by every rank (the
 * model, the optimizer slices, trainer_state.json, config.json), the checks that keep an unsound state from becoming
 * the newest checkpoint, pruning (keep_last_n_checkpoints), the plots written with each, and the restore of a resume.
 * Its own phase, beside the step's four, so that the orchestrator stays the loop.
 */
final class CheckpointPhase {
    /**
     * The least a checkpoint's barrier waits (each process writes its ranks' optimizer moments, 8 GB a rank for 8B at
     * world 8, possibly to a slow shared filesystem), whatever the shorter rendezvous timeout.
     */
    static final int CHECKPOINT_BARRIER_S = 3600;

    private static final ObjectMapper JSON = new ObjectMapper();

    private final GrpoConfig cfg;
    private final Path out;
    private final PrintStream log;
    private final boolean writer;
    private final Cluster cluster;
    private final Ranks ranks;
    private final List<RankState> states;
    private final Setup setup;
    private final Path tokenizerDir;
    private final String dataFingerprint;
    /** What resumes with --set changed, in order (trainer_state.json's config_changes); null for a new run. */
    private final ArrayNode configChanges;
    /** The world size that wrote the checkpoint resumed from (the run's own but for a resharded resume). */
    private final int savedWorld;
    /** The run's metrics so far (the plots' data; a restore adds the resumed run's). */
    private final List<Map<String, Double>> history;
    /** The step of the newest checkpoint this run wrote or resumed from (the same in every process). */
    int checkpointed = -1;
    /** The step whose soundness was last judged (a refused checkpoint is not judged again at the run's end). */
    int judged = -1;

    CheckpointPhase(GrpoConfig cfg, Path out, PrintStream log, boolean writer, Cluster cluster, Ranks ranks, List<RankState> states, Setup setup,
                    Path tokenizerDir, String dataFingerprint, ArrayNode configChanges, int savedWorld, List<Map<String, Double>> history) {
        this.cfg = cfg;
        this.out = out;
        this.log = log;
        this.writer = writer;
        this.cluster = cluster;
        this.ranks = ranks;
        this.states = states;
        this.setup = setup;
        this.tokenizerDir = tokenizerDir;
        this.dataFingerprint = dataFingerprint;
        this.configChanges = configChanges;
        this.savedWorld = savedWorld;
        this.history = history;
    }

    /** The newest checkpoint with its trainer state in the run directory (-1: none, or a process that does not see it). */
    int lastStep() {
        try (var s = Files.list(out.resolve("checkpoints"))) {
            return s.filter(p -> p.getFileName().toString().matches("step_\\d+") && Files.isRegularFile(p.resolve("trainer_state.json"))) // not a kept model
                    .mapToInt(p -> Integer.parseInt(p.getFileName().toString().substring(5))).max().orElse(-1);
        } catch (IOException e) {
            return -1;
        }
    }

    /**
     * Checkpoints unless the state is unsound: after a skipped (non-finite) optimizer step, or with non-finite
     * weights, the last good checkpoint stays the newest one. Every rank reaches the same verdict.
     */
    void checkpointIfSound(int step, Listener l) throws IOException {
        judged = step;
        RankState r0 = states.get(0);
        String bad = r0.consecutiveNonfinite > 0 ? "its last optimizer step was non-finite" : null;
        if (bad == null) {
            String t = ranks.run(i -> i == 0 ? states.get(0).compute.firstNonFiniteTensor() : null).get(0);
            if (t != null) bad = "tensor " + t + " holds NaN or infinite values";
        }
        if (bad == null) {
            checkpoint(step, l);
            return;
        }
        if (log != null) log.println("grpo4j: no checkpoint at step " + step + ": " + bad + "; the newest checkpoint stays step_" + lastStep());
    }

    /**
     * Writes checkpoints/step_N atomically: the model (HF, the fp32 master weights), each rank's optimizer slice
     * (moments and step), the trainer state and the config. Every rank takes part (the master weights of precision
     * bf16 are gathered from the slices); the writing process renames the directory once every process has written.
     */
    void checkpoint(int step, Listener l) throws IOException {
        Path fin = out.resolve("checkpoints").resolve("step_" + step);
        if (checkpointed == step) return;
        String key = "checkpoint/" + step;
        if (!writer) {
            Path tmp = Path.of(cluster.share(key, null));
            writeParts(tmp, step);
            cluster.barrier(key, CHECKPOINT_BARRIER_S);
            checkpointed = step;
            return;
        }
        // the metrics and samples up to this step on disk before the checkpoint is: after a power loss, a checkpoint
        // that survived has its lines (a resume cuts the files back to the checkpoint's step, never forward)
        for (String f : new String[] {"metrics.jsonl", "samples.jsonl"}) {
            Path p = out.resolve(f);
            if (Files.isRegularFile(p)) AtomicDir.syncFile(p);
        }
        AtomicDir.write(fin, tmp -> {
            if (cluster != null) cluster.share(key, tmp.toAbsolutePath().toString());
            long refChecksum = writeParts(tmp, step);
            ObjectNode st = JSON.createObjectNode();
            RankState r0 = states.get(0);
            st.put("training_step", step);
            st.put("optimizer_steps", r0.optimizerSteps);
            st.put("consecutive_nonfinite", r0.consecutiveNonfinite);
            st.put("skipped_steps", r0.skippedSteps);
            ShufflingIterator.Position pos = r0.iterator.position();
            st.putObject("iterator").put("epoch", pos.epoch()).put("offset", pos.offset());
            st.put("reference_checksum", refChecksum);
            st.put("train_prompts", setup.train().size());
            st.put("data_fingerprint", dataFingerprint);
            st.put("world_size", cfg.worldSize);
            st.put("precision", Precision.label(setup.dtype()));
            st.put("rng", "stateless: every draw is a function of (seed, step, ...)");
            if (configChanges != null && !configChanges.isEmpty()) st.set("config_changes", configChanges);
            Files.writeString(tmp.resolve("trainer_state.json"), JSON.writerWithDefaultPrettyPrinter().writeValueAsString(st));
            Files.writeString(tmp.resolve("config.json"), cfg.toJson());
            if (cluster != null) cluster.barrier(key, CHECKPOINT_BARRIER_S);
        });
        checkpointed = step; // (only once written: a failure in the trainer's own files or the rename, a full disk, is tried again
        // by the next run(); one while the ranks write the model and optimizer parts is a failure of the ranks' work, after
        // which this trainer refuses to go on (Trainer#run: close it and resume from the last checkpoint))
        if (cfg.keepLastNCheckpoints > 0) { // after the new one is whole; a failure to delete costs disk, not the run
            try {
                boolean models = cfg.olderCheckpoints.equals("model");
                List<String> gone = RunDirectory.pruneCheckpoints(out, cfg.keepLastNCheckpoints, models);
                if (!gone.isEmpty() && log != null)
                    log.println("grpo4j: " + (models ? "kept only the model of " : "removed ") + String.join(", ", gone) + " (keep_last_n_checkpoints "
                            + cfg.keepLastNCheckpoints + (models ? ", older_checkpoints model" : "") + ")");
            } catch (IOException e) {
                if (log != null) log.println("grpo4j: warning: older checkpoints not removed: " + e.getMessage());
            }
        }
        if (step > 0) writePlots();
        l.onCheckpoint(step, fin);
    }

    private boolean plotsWarned;

    /** The metric charts under out/plots; where they cannot be drawn, one warning per run and the run goes on. */
    void writePlots() {
        String why = Charts.tryWrite(() -> Plots.write(out.resolve("plots"), history));
        if (why != null && !plotsWarned && log != null) log.println("grpo4j: plots not written: " + why);
        plotsWarned |= why != null;
    }

    /**
     * This process's ranks write their parts of a checkpoint into {@code tmp}: the model (rank 0) and optimizer slices.
     * Returns the checksum of the reference weights (of this process's first rank).
     */
    private long writeParts(Path tmp, int step) throws IOException {
        return ranks.run(i -> {
            RankState r = states.get(i);
            r.comm.setContext("checkpoint of step " + step);
            if (setup.dtype() == DType.BF16) { // the fp32 master weights, gathered tensor by tensor: a collective every rank takes part in
                if (r.leader()) LlamaWeights.saveFrom(setup.model(), r.optimizer.masterValues(), tmp.resolve("model"), "F32", 5L << 30, tokenizerDir);
                else for (org.grpo4j.internal.model.ParameterLayout.Entry e : r.compute.layout().entries()) r.optimizer.gatherTensor(e);
            } else if (r.leader()) {
                r.compute.save(tmp.resolve("model"), "F32", 5L << 30, tokenizerDir);
            }
            r.optimizer.save(tmp);
            return i == 0 ? r.referenceChecksum() : 0L;
        }).get(0);
    }

    /**
     * Restores every rank from checkpoint {@code ck} (its reference policy from step_0, optimizer slices, counters, data
     * position) and cuts the run's JSONL files back to its step; returns that step.
     */
    int restore(Path ck, TrainerState st) throws IOException {
        Path stateFile = ck.resolve("trainer_state.json");
        Checkpoints.requireSameData(ck, st.dataFingerprint(), st.trainPrompts(), dataFingerprint, setup.train().size());
        if (st.dataFingerprint() == null && log != null)
            log.println("grpo4j: " + stateFile + " has no data fingerprint (written by an older grpo4j): the data cannot be checked");
        Path step0 = ck.getParent().resolve("step_0").resolve("model"); // its presence checked by Checkpoints.resumed
        ranks.run(i -> {
            RankState r = states.get(i);
            r.loadReference(step0);
            r.optimizer.load(ck, savedWorld);
            if (r.optimizer.steps() != st.optimizerSteps()) // (both count the updates applied: AdamW's bias correction and the schedule)
                throw new IOException(ck + ": the optimizer files' metadata step " + r.optimizer.steps() + " differs from " + stateFile
                        + "'s optimizer_steps " + st.optimizerSteps() + ": the checkpoint is damaged");
            r.optimizerSteps = st.optimizerSteps();
            r.consecutiveNonfinite = st.consecutiveNonfinite();
            r.skippedSteps = st.skippedSteps();
            try {
                r.iterator.restore(new ShufflingIterator.Position(st.iteratorEpoch(), st.iteratorOffset()));
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException(stateFile + ": " + e.getMessage());
            }
            return null;
        });
        // every process has read its part of the checkpoint before any rank's first collective (a sharded reference's
        // checksum gathers): a node reading from a slow shared filesystem would otherwise have the others' gathers
        // time out at nccl_timeout_s, as the policy weights' "weights loaded" barrier prevents before it
        if (cluster != null) cluster.barrier("checkpoint loaded", 3600);
        List<Long> sums = ranks.run(i -> {
            RankState r = states.get(i);
            r.checksumLoadedReference(i == 0);
            return i == 0 ? r.referenceChecksum() : 0L;
        });
        if (sums.get(0) != st.referenceChecksum())
            throw new IOException(step0 + ": the reference policy does not match the checksum recorded in " + stateFile);
        int step = st.trainingStep();
        checkpointed = step;
        if (writer) {
            // keep only what the checkpoint has seen: later lines came from the interrupted run
            for (Map<String, Double> m : RunDirectory.truncateJsonl(out.resolve("metrics.jsonl"), step, log))
                history.add(java.util.Collections.unmodifiableMap(m)); // as the steps run here (Result.metrics)
            RunDirectory.truncateJsonl(out.resolve("samples.jsonl"), step, log);
        }
        if (log != null) log.printf("grpo4j: resumed from %s (step %d, %d optimizer steps)%n", ck, step, st.optimizerSteps());
        return step;
    }
}
