package org.grpo4j.internal.train;

import org.grpo4j.train.GrpoConfig;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The open-instruct 3f37c29 options that grpo4j added for fidelity (docs/trainer.md, "Reference options"): their
 * validation, the compat switches, and one-line refusals for reference flags grpo4j does not have, so that a ported
 * command fails with a reason rather than "unknown key".
 */
public final class ReferenceOptions {
    private ReferenceOptions() {}

    /** The one compat target grpo4j knows. */
    public static final String OPEN_INSTRUCT_3F37C29 = "open-instruct-3f37c29";

    private static final String RLVR_ONLY = "needs a reward model; grpo4j is RLVR only (verifiable rewards). Remove it";
    private static final String LAUNCHER = "is an open-instruct launcher flag (Ray, vLLM, DeepSpeed, tracking or hub) with no grpo4j equivalent. Remove it";

    /** Reference Args (and launcher flags of the Tulu command) that grpo4j refuses, with the reason. */
    static final Map<String, String> REFUSED = new LinkedHashMap<>();

    static {
        REFUSED.put("reward_model_path", RLVR_ONLY);
        REFUSED.put("reward_model_revision", RLVR_ONLY);
        REFUSED.put("async_mode", "grpo4j generates synchronously with the current policy (docs/trainer.md); the reference's one-step-stale async mode is not reproduced. Remove it");
        REFUSED.put("whiten_rewards", "is never read by the reference's GRPO trainer at 3f37c29 (advantages are group z-scores). Remove it");
        REFUSED.put("gamma", "is never read by the reference's GRPO trainer at 3f37c29. Remove it");
        REFUSED.put("eps", "is never passed to the reference's optimizer (torch AdamW keeps eps 1e-8); grpo4j's is adam_eps");
        REFUSED.put("num_mini_batches", "is derived in grpo4j (local rollouts / local_mini_batch_size); at 3f37c29 it only sizes the reference's stats tensors");
        REFUSED.put("stop_token_id", "is derived from stop_token (eos)");
        for (String k : List.of("gradient_accumulation_steps", "micro_batch_size", "rollout_batch_size", "mini_batch_size", "eval_freq", "local_dataloader_batch_size"))
            REFUSED.put(k, "is derived from the batch sizes, as in the reference (train --dry-run prints it)");
        REFUSED.put("num_train_epochs", "only multiplies the reference's LR horizon (G:645); grpo4j's run length is num_training_steps or total_episodes");
        REFUSED.put("per_device_eval_batch_size", "is never read by the reference's GRPO trainer at 3f37c29. Remove it");
        for (String k : List.of("actor_num_gpus_per_node", "vllm_num_engines", "vllm_tensor_parallel_size", "vllm_enforce_eager", "vllm_sync_backend",
                "enable_prefix_caching", "deepspeed_stage", "gather_whole_model", "with_tracking", "wandb_project_name", "wandb_entity", "push_to_hub",
                "hf_entity", "hf_repo_id", "hf_repo_revision", "hf_repo_url", "checkpoint_output_dir", "cache_dataset_only", "try_launch_beaker_eval_jobs",
                "try_launch_beaker_eval_jobs_on_weka", "try_auto_save_to_beaker", "oe_eval_tasks", "hf_metadata_dataset", "exp_name", "run_name",
                "eval_max_length"))
            REFUSED.put(k, LAUNCHER);
    }

    /** Throws for a refused reference key, naming it and the reason. */
    public static void rejectUnsupported(ObjectNode tree, String where) {
        for (var it = tree.fieldNames(); it.hasNext(); ) {
            String k = it.next();
            String why = REFUSED.get(k);
            if (why != null) throw new IllegalArgumentException(where + ": \"" + k + "\" " + why);
        }
    }

    /** Parses a compat value: "" / "none" / "default" = false, "open-instruct-3f37c29" = true. */
    static boolean parseCompat(String key, String value) {
        String s = value == null ? "" : value.trim();
        if (s.isEmpty() || s.equalsIgnoreCase("none") || s.equalsIgnoreCase("default")) return false;
        if (s.equalsIgnoreCase(OPEN_INSTRUCT_3F37C29)) return true;
        throw new IllegalArgumentException(key + " must be \"" + OPEN_INSTRUCT_3F37C29 + "\" or empty, got \"" + value + "\"");
    }

    /** Does the config log the reference's numbers (metrics_compat)? */
    public static boolean metricsCompat(GrpoConfig c) { return parseCompat("metrics_compat", c.metricsCompat); }

    /** Does the config reproduce the reference's LR schedule (lr_scheduler_compat)? */
    public static boolean lrCompat(GrpoConfig c) { return parseCompat("lr_scheduler_compat", c.lrSchedulerCompat); }

    public static void validate(GrpoConfig c, String where) {
        try {
            lrCompat(c);
            LrSchedule.of(c);
            if (metricsCompat(c) && c.numMiniBatches() > c.numberSamplesPerPrompt)
                throw new IllegalArgumentException("metrics_compat " + OPEN_INSTRUCT_3F37C29 + " needs at most number_samples_per_prompt (" + c.numberSamplesPerPrompt
                        + ") mini-batches per step, got " + c.numMiniBatches() + ": the reference's stats tensors have number_samples_per_prompt rows"
                        + " (num_mini_batches 1 x nspp, G:939-943) and more mini-batches raise an IndexError there");
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(where + ": " + e.getMessage());
        }
        if (!Double.isFinite(c.r1StyleFormatReward)) throw new IllegalArgumentException(where + ": r1_style_format_reward must be a finite number");
        if (c.minResponseLength < 0) throw new IllegalArgumentException(where + ": min_response_length must be >= 0");
        for (String s : c.stopStrings)
            if (s == null || s.isEmpty()) throw new IllegalArgumentException(where + ": stop_strings entries must be non-empty strings");
        try {
            org.grpo4j.internal.data.DatasetMixer.parse(c.datasetMixerList);
            if (!c.datasetMixerEvalList.isEmpty()) org.grpo4j.internal.data.DatasetMixer.parse(c.datasetMixerEvalList);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(where + ": " + e.getMessage());
        }
        splits(where, "dataset_mixer_list", c.datasetMixerList, c.datasetMixerListSplits);
        splits(where, "dataset_mixer_eval_list", c.datasetMixerEvalList, c.datasetMixerEvalListSplits);
    }

    private static void splits(String where, String key, List<String> mixer, List<String> splits) {
        int datasets = mixer.size() / 2;
        if (!(splits.isEmpty() || splits.size() == 1 || splits.size() == datasets))
            throw new IllegalArgumentException(where + ": " + key + "_splits has " + splits.size() + " entries for " + datasets
                    + " datasets (give one split for all, or one per dataset)");
        for (String s : splits)
            if (s == null || s.isBlank()) throw new IllegalArgumentException(where + ": " + key + "_splits entries must be non-empty");
    }
}
