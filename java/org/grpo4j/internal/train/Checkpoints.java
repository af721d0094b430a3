package org.grpo4j.internal.train;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.grpo4j.train.GrpoConfig;

/**
 * A run's checkpoints as a resume (and an export) reads them: the newest one, its config (with the defaults of keys
 * added since it was written), the config of a resume at another world size or with overrides. Reads no weights.
 */
public final class Checkpoints {
    private Checkpoints() {}

    /**
     * What a resume of {@code resumeDir} goes on from and with: its newest checkpoint and trainer state, the saved config
     * with the overrides applied ({@link ResumeChanges}) and resharded for {@code reshard} ranks (0: its own), and the
     * world size that wrote it. Reads no weights.
     */
    record Resumed(Path checkpoint, TrainerState state, GrpoConfig config, List<ResumeChanges.Change> changes, int savedWorld) {}

    static Resumed resumed(Path resumeDir, int reshard, List<String> overrides, boolean allowChanges) throws IOException {
        Path ck = latestCheckpoint(resumeDir);
        Path newest = latestCheckpoint(ck.getParent());
        if (!newest.equals(ck))
            throw new IllegalArgumentException(ck + " is not the run's newest checkpoint (" + newest.getFileName() + " is): going on from it would mix"
                    + " two histories in one run; resume the run directory, or copy the run and delete the later checkpoints in the copy");
        TrainerState st = TrainerState.read(ck.resolve("trainer_state.json"), ck);
        GrpoConfig c = savedConfig(ck);
        List<ResumeChanges.Change> changes = List.of();
        if (!overrides.isEmpty()) {
            ResumeChanges.Applied applied = ResumeChanges.apply(c, overrides, ck, st.trainingStep(), st.optimizerSteps(), allowChanges);
            c = applied.config();
            changes = applied.changes();
        }
        int savedWorld = c.worldSize;
        if (st.worldSize() != savedWorld)
            throw new IllegalArgumentException(ck.resolve("trainer_state.json") + ": written by " + st.worldSize() + " ranks, but the run's config says world_size "
                    + savedWorld + ": the checkpoint's optimizer slices belong to " + st.worldSize() + " ranks");
        // the reference policy is the step-0 policy (the model after warm-up): every resume reads it
        if (!Files.isDirectory(ck.getParent().resolve("step_0").resolve("model"))) throw new IOException(ck.getParent() + ": step_0 (the reference policy) is missing");
        if (reshard != 0 && reshard != c.worldSize) c = reshardConfig(c, reshard, ck);
        c.validate("config");
        return new Resumed(ck, st, c, changes, savedWorld);
    }

    /**
     * Refuses a resume from {@code ck} (whose trainer state recorded {@code savedFingerprint} over {@code savedPrompts}
     * prompts; null: written by an older grpo4j, nothing to compare) when the training data now has another fingerprint.
     */
    static void requireSameData(Path ck, String savedFingerprint, int savedPrompts, String fingerprint, int prompts) {
        if (savedFingerprint != null && !savedFingerprint.equals(fingerprint))
            throw new IllegalArgumentException("the training data changed since " + ck + " (" + savedPrompts + " prompts then, " + prompts
                    + " now, different rows or prompts): an exact resume is impossible. To go on with the new data, start a new run from that"
                    + " checkpoint's weights (model_name_or_path " + ck.resolve("model") + ")");
    }

    /**
     * What a resume goes on from and with, for the CLI's checks before any work: the checkpoint, its step and precision,
     * the config, and the training data its trainer state recorded.
     */
    public record ResumePlan(Path checkpoint, int step, String precision, GrpoConfig config, String dataFingerprint, int trainPrompts) {
        /** Refuses, as the resume would, training data whose fingerprint differs from the recorded one. */
        public void requireSameData(String fingerprint, int prompts) {
            Checkpoints.requireSameData(checkpoint, dataFingerprint, trainPrompts, fingerprint, prompts);
        }
    }

    /**
     * The plan of a resume (its newest checkpoint, with the overrides and the reshard applied and checked), without
     * loading anything else: for {@code tools/launch --dry-run} and {@code train --resume DIR --dry-run}.
     *
     * @throws IllegalArgumentException naming what a resume would refuse
     */
    public static ResumePlan plan(Path resumeDir, int reshard, List<String> overrides, boolean allowChanges) throws IOException {
        Resumed r = resumed(resumeDir, reshard, overrides, allowChanges);
        return new ResumePlan(r.checkpoint(), r.state().trainingStep(), r.state().precision(), r.config(), r.state().dataFingerprint(), r.state().trainPrompts());
    }

    /** The newest complete checkpoint under a run directory, checkpoints/ directory, or the checkpoint itself. */
    public static Path latestCheckpoint(Path given) throws IOException {
        if (given.toString().isBlank()) throw new IllegalArgumentException("the resume directory is empty (\"\")");
        Path p = given.toAbsolutePath().normalize(); // a relative checkpoints/step_N still has its run directory two levels up
        if (!Files.exists(p)) throw new java.nio.file.NoSuchFileException(p.toString(), null, "no such run directory or checkpoint");
        if (Files.isRegularFile(p.resolve("trainer_state.json"))) return p;
        if (p.getFileName() != null && p.getFileName().toString().matches("step_\\d{1,9}") && Files.isDirectory(p.resolve("model")))
            throw new IllegalArgumentException(p + ": pruned to its model (older_checkpoints model), no longer a checkpoint to resume: resume the run"
                    + " directory " + (p.getParent() != null ? p.getParent().getParent() : "") + " (its newest checkpoint), or export this policy with"
                    + " tools/grpo4j export --from " + p);
        if (!Files.isDirectory(p)) throw new IllegalArgumentException(p + ": not a run directory or checkpoint (it is a file)");
        Path dir = Files.isDirectory(p.resolve("checkpoints")) ? p.resolve("checkpoints") : p;
        Path newest = newestComplete(dir);
        if (newest == null)
            throw new IllegalArgumentException(p + ": no complete checkpoint (checkpoints/step_N with trainer_state.json)"
                    + (RunDirectory.heldByARun(p) ? "; the run is in progress and has not written its first checkpoint yet (step_0, after"
                    + " loading and any warm-up): try again once it has"
                    : Files.exists(p.resolve(RunDirectory.LOCK)) || Files.exists(p.resolve("metrics.jsonl"))
                    ? "; the run stopped before its first checkpoint: start it again with --overwrite" : ""));
        // a checkpoint is renamed into place whole and pruning takes only older ones: a newer step_N without its state
        // was damaged (a copy cut short, a file deleted); resuming before it would train over it
        int n = stepOf(newest);
        try (var s = Files.list(dir)) {
            for (Path q : s.filter(q -> isStepDir(q) && stepOf(q) > n && !Files.exists(q.resolve("trainer_state.json"))).toList())
                throw new IllegalArgumentException(q + ": has no trainer_state.json, yet it is newer than the newest complete checkpoint "
                        + newest.getFileName() + ": restore its trainer_state.json, or move " + q.getFileName() + " out of " + dir
                        + " to go on from " + newest.getFileName() + " (or name a checkpoint directory)");
        }
        return newest;
    }

    /** The newest step_N under a checkpoints directory that holds its trainer_state.json, or null. */
    static Path newestComplete(Path checkpointsDir) throws IOException {
        if (!Files.isDirectory(checkpointsDir)) return null;
        try (var s = Files.list(checkpointsDir)) {
            return s.filter(q -> isStepDir(q) && Files.isRegularFile(q.resolve("trainer_state.json")))
                    .max(java.util.Comparator.comparingInt(Checkpoints::stepOf)).orElse(null);
        }
    }

    private static boolean isStepDir(Path q) {
        return q.getFileName().toString().matches("step_\\d{1,9}") && Files.isDirectory(q);
    }

    /** N of a step_N directory. */
    static int stepOf(Path stepDir) {
        return Integer.parseInt(stepDir.getFileName().toString().substring(5));
    }

    /**
     * The config of a run resumed at {@code world} ranks instead of its own: the same global batch (prompts per step and
     * mini-batch size), so the per-rank local_rollout_batch_size and local_mini_batch_size are rescaled by old / new world
     * size; per_device_train_batch_size and local_rollout_forward_batch_size, a device's passes, stay. The data order,
     * the samples (their random streams follow the prompt's place in the global batch) and the learning-rate schedule
     * go on as before. With one mini-batch a step the sums over ranks only regroup, so the run equals the uninterrupted
     * one up to floating-point summation order (with loss_aggregation micro_token_mean, up to its per-rank micro-batch
     * weights); with several, each rank shuffles its own rollouts into them (the reference's rank-local permutation), so
     * the mini-batches hold other rollouts than at the old size and the run goes on as a run of {@code world} ranks
     * would. Refused, naming the key, where a per-rank size does not divide.
     */
    static GrpoConfig reshardConfig(GrpoConfig saved, int world, Path ck) {
        if (world < 1) throw new IllegalArgumentException("--world-size must be >= 1, got " + world);
        GrpoConfig c = saved.copy();
        long prompts = (long) saved.localRolloutBatchSize * saved.worldSize, mini = (long) saved.localMiniBatchSize * saved.worldSize;
        String where = "resharding " + ck.getParent().getParent() + " from " + saved.worldSize + " to " + world + " ranks";
        if (prompts % world != 0)
            throw new IllegalArgumentException(where + ": its " + prompts + " prompts a step (local_rollout_batch_size " + saved.localRolloutBatchSize + " x "
                    + saved.worldSize + ") do not split over " + world + " ranks; a world size dividing " + prompts + " keeps the run's batch");
        if (mini % world != 0)
            throw new IllegalArgumentException(where + ": its mini-batch of " + mini + " rollouts (local_mini_batch_size " + saved.localMiniBatchSize + " x "
                    + saved.worldSize + ") does not split over " + world + " ranks");
        c.worldSize = world;
        c.localRolloutBatchSize = (int) (prompts / world);
        c.localMiniBatchSize = (int) (mini / world);
        try {
            c.validate("config");
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(where + " (local_rollout_batch_size " + c.localRolloutBatchSize + ", local_mini_batch_size "
                    + c.localMiniBatchSize + " a rank): " + e.getMessage().replaceFirst("^config: ", ""));
        }
        return c;
    }

    /** When resuming, the config saved with the checkpoint is the run's config. */
    public static GrpoConfig savedConfig(Path ck) throws IOException {
        Path f = ck.resolve("config.json");
        if (!Files.isRegularFile(f)) throw new java.nio.file.NoSuchFileException(f.toString(), null, "the checkpoint's config");
        String json = Files.readString(f, StandardCharsets.UTF_8);
        GrpoConfig c = GrpoConfig.fromJsonString(json, f.toString());
        // a checkpoint written before lm_head_grad existed trained with dz split into hi + lo: its run goes on so, bit
        // for bit, rather than with the new default
        com.fasterxml.jackson.databind.JsonNode keys = new com.fasterxml.jackson.databind.ObjectMapper().readTree(json);
        if (!keys.has("lm_head_grad")) c.lmHeadGrad = "split";
        // likewise one written before old_logprobs existed recomputed every old log-prob
        if (!keys.has("old_logprobs")) c.oldLogprobs = "recompute";
        // and one written before lm_head_scratch_mib existed ran the LM head in blocks within 256 MiB
        if (!keys.has("lm_head_scratch_mib")) c.lmHeadScratchMib = 256;
        // and one written before logprob_prefix_sharing ran every sequence whole through the log-prob passes
        if (!keys.has("logprob_prefix_sharing")) c.logprobPrefixSharing = false;
        // and one written before train_prefix_sharing trained in the reference's micro-batches, every sequence whole
        if (!keys.has("train_prefix_sharing")) c.trainPrefixSharing = false;
        // and one written before pass_packing trained in passes of per_device_train_batch_size rollouts
        if (!keys.has("pass_packing")) c.passPacking = "batch_size";
        // and one written before kv_admission reserved each sample's every block before admitting it
        if (!keys.has("kv_admission")) c.kvAdmission = "worst_case";
        // and one written before rank_balancing trained each rank's own rollouts
        if (!keys.has("rank_balancing")) c.rankBalancing = "none";
        // and one written before reference_sharding held the reference whole on every rank (the same bits either way,
        // but the memory, and so the KV pool and recompute_layers auto, stay as the run had them)
        if (!keys.has("reference_sharding")) c.referenceSharding = "none";
        // and one written before attention_dq and attention_kernels ran the attention that the CUDA backend's JVM
        // properties chose, which the documentation asked a run and its resumes to keep: its resume takes them from
        // this JVM's properties, as before
        // and one written before stop_token_ids stopped its rollouts at the tokenizer's EOS alone
        if (!keys.has("stop_token_ids")) c.stopTokenIds = java.util.List.of();
        if (!keys.has("attention_dq"))
            c.attentionDq = org.grpo4j.internal.backend.CudaBackend.attentionDqProperty().name().toLowerCase(java.util.Locale.ROOT);
        if (!keys.has("attention_kernels")) c.attentionKernels = Boolean.getBoolean("grpo4j.attentionWgmma") ? "wgmma" : "mma";
        return c;
    }

    /**
     * Notes for a resume of checkpoint {@code ck} whose config was written before attention_dq and attention_kernels
     * existed: the values the resume runs ({@code cfg}: {@link #savedConfig} took them from this JVM's properties, or
     * --set named them), so that a resume whose JVM was not given the original run's properties says what it runs.
     * Empty when the config has both keys (or cannot be read: savedConfig reports that).
     */
    static java.util.List<String> attentionFromProperties(Path ck, GrpoConfig cfg) {
        try {
            com.fasterxml.jackson.databind.JsonNode keys = new com.fasterxml.jackson.databind.ObjectMapper()
                    .readTree(Files.readString(ck.resolve("config.json"), StandardCharsets.UTF_8));
            if (keys.has("attention_dq") && keys.has("attention_kernels")) return java.util.List.of();
        } catch (IOException | RuntimeException e) {
            return java.util.List.of();
        }
        return java.util.List.of(ck.resolve("config.json") + " was written before attention_dq and attention_kernels existed: this resume runs"
                + " attention_dq " + cfg.attentionDq + ", attention_kernels " + cfg.attentionKernels + " (this JVM's -Dgrpo4j.attentionDq /"
                + " -Dgrpo4j.attentionWgmma chose them, unless --set did: the original run's for an exact resume; its checkpoints record them"
                + " from here on)");
    }

    /**
     * What a run's checkpoints take on disk: each about {@link #BYTES_PER_PARAMETER} bytes a parameter (the fp32
     * weights, and AdamW's two fp32 moments over the ranks' slices), {@code written} of them over the run (step_0,
     * every save_freq steps, the last step), at most {@code kept} on disk at once (with keep_last_n_checkpoints K: step_0,
     * the newest K and the one being written; with older_checkpoints model, the others' models besides), against
     * {@code free} bytes where they go (-1: unknown).
     */
    public record DiskPlan(long bytesEach, int written, int kept, int keepLast, long olderModelBytes, long free) {
        /** The peak: the whole checkpoints kept at once and, with older_checkpoints model, the older ones' models. */
        public long keptBytes() { return bytesEach * kept + olderModelBytes; }

        /** Whether the checkpoints kept at once fit in the free space (true when it is unknown). */
        public boolean fits() { return free < 0 || keptBytes() <= free; }

        public String describe() {
            return "about " + org.grpo4j.internal.backend.Memory.human(bytesEach) + " each (fp32 weights and AdamW moments), " + written
                    + " over the run, " + (keepLast > 0 ? "at most " + kept + " whole on disk at once (keep_last_n_checkpoints " + keepLast + ")"
                    + (olderModelBytes > 0 ? " and the others' models" : "") : "all kept (keep_last_n_checkpoints -1)") + ": " + org.grpo4j.internal.backend.Memory.human(keptBytes())
                    + (free >= 0 ? "; " + org.grpo4j.internal.backend.Memory.human(free) + " free there" : "");
        }
    }

    /** Bytes a parameter a checkpoint holds: 4 (fp32 weights) + 8 (AdamW's m and v in fp32). */
    public static final long BYTES_PER_PARAMETER = 12;

    /** {@link DiskPlan} of a run of {@code cfg} over a model of {@code parameters}, writing under {@code out}. */
    public static DiskPlan diskPlan(GrpoConfig cfg, long parameters, Path out) {
        int t = Math.max(1, cfg.trainingSteps());
        int written = 1 + (cfg.saveFreq > 0 ? t / cfg.saveFreq : 0) + (cfg.saveFreq == 0 || t % cfg.saveFreq != 0 ? 1 : 0);
        int kept = cfg.keepLastNCheckpoints > 0 ? Math.min(written, cfg.keepLastNCheckpoints + 2) : written;
        // older_checkpoints model: the others keep their fp32 model, a third of a checkpoint
        long models = cfg.keepLastNCheckpoints > 0 && "model".equals(cfg.olderCheckpoints)
                ? Math.max(0L, written - 2 - cfg.keepLastNCheckpoints) * parameters * 4 : 0; // at the peak the oldest kept is still whole
        long free = -1;
        try {
            Path p = out.toAbsolutePath();
            while (p != null && !Files.exists(p)) p = p.getParent();
            if (p != null) free = Files.getFileStore(p).getUsableSpace();
        } catch (IOException | SecurityException e) {
            free = -1;
        }
        return new DiskPlan(parameters * BYTES_PER_PARAMETER, written, kept, cfg.keepLastNCheckpoints, models, free);
    }
}
