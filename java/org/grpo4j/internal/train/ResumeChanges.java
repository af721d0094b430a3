package org.grpo4j.internal.train;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.grpo4j.train.GrpoConfig;

/**
 * What {@code --set} may change when a run resumes ({@code train --resume DIR --set key=value}; {@code
 * GrpoTrainer.resume(dir).overrides(...)}). Every config key is in one of three classes:
 * <ul>
 *   <li>{@link Kind#HOW} changes how the run runs, not what it trains: memory and speed settings (the KV pool, layer
 *       recomputation, pass packing, prefix sharing, reference sharding, buckets), checkpoint and eval cadence,
 *       timeouts, logging. The run goes on as it would have, bit for bit on the CPU where the key's documentation says
 *       so, otherwise up to floating-point summation order. Allowed.</li>
 *   <li>{@link Kind#WHAT} changes what the run trains from the resumed step on (learning rate and schedule, KL weight,
 *       clipping, sampling, rewards, ...). Allowed only when asked for ({@code --allow-changes}): the run then no longer
 *       repeats the one its checkpoints began, and trainer_state.json records each change and its step. The horizon
 *       ({@code num_training_steps}, {@code total_episodes}) is HOW where every optimizer step it plans from the
 *       checkpoint on keeps the rate the run's own schedule gives it (a constant schedule extended or cut short), WHAT
 *       otherwise.</li>
 *   <li>Refused: what makes a run the run it is: the model, the training data and how it is read (chat template,
 *       length filters, seed), the batch and the optimizer steps of a training step, the precision, the warm-up (run before step 0), the world size
 *       ({@code --world-size} reshards instead) and the output directory.</li>
 * </ul>
 * A {@code --set} that gives a key its saved value changes nothing and is allowed.
 */
final class ResumeChanges {
    private ResumeChanges() {}

    enum Kind { HOW, WHAT }

    /** Keys that change how the run runs, not what it trains. */
    static final Set<String> HOW = Set.of("save_freq", "keep_last_n_checkpoints", "older_checkpoints", "num_evals", "dataset_mixer_eval_list", "dataset_mixer_eval_list_splits", "kv_cache_mib",
            "kv_cache_fraction", "kv_admission", "recompute_layers", "gradient_checkpointing", "reference_sharding", "lm_head_scratch_mib",
            "logprob_prefix_sharing", "train_prefix_sharing", "pass_packing", "rank_balancing", "local_rollout_forward_batch_size",
            "reduce_bucket_size", "nccl_timeout_s", "max_consecutive_nonfinite", "metrics_compat", "notes", "old_logprobs");

    /** The horizon: HOW where the learning rate of every step still planned stays, WHAT otherwise. */
    static final Set<String> HORIZON = Set.of("num_training_steps", "total_episodes");

    /** Keys that change what the run trains from the resumed step on. */
    static final Set<String> WHAT = Set.of("learning_rate", "lr_scheduler_type", "lr_scheduler_compat", "warmup_ratio", "warm_up_steps",
            "weight_decay", "adam_beta1", "adam_beta2", "adam_eps", "max_grad_norm", "beta", "kl_estimator", "cliprange", "cliprange_high",
            "loss_aggregation", "advantage_normalization", "temperature", "top_p", "non_stop_penalty", "penalty_reward_value", "stop_token", "stop_strings", "stop_token_ids",
            "min_response_length", "response_length", "apply_verifiable_reward", "verification_reward", "reward_model_multiplier",
            "verifier_compat", "verifier_timeout", "add_r1_style_format_reward", "r1_style_format_reward", "lm_head_grad", "attention_dq", "attention_kernels", "backend",
            "per_device_train_batch_size");

    /** Keys a resumed run cannot change, and why. */
    static final Map<String, String> REFUSED = refused();

    private static Map<String, String> refused() {
        Map<String, String> m = new LinkedHashMap<>();
        String data = "the training data of a run is fixed (its prompts as the run read them; trainer_state.json holds their fingerprint)";
        for (String k : List.of("model_name_or_path", "chat_template_name", "dataset_mixer_list", "dataset_mixer_list_splits",
                "max_prompt_token_length", "max_token_length")) m.put(k, data);
        m.put("seed", "the run's data order and samples follow its seed");
        String batch = "the batch of a step is fixed for a run (--world-size reshards a run and keeps it)";
        for (String k : List.of("local_rollout_batch_size", "number_samples_per_prompt", "local_mini_batch_size")) m.put(k, batch);
        m.put("num_epochs", "the optimizer steps of a training step are fixed for a run (the learning-rate schedule and the optimizer's step count follow them)");
        m.put("precision", "a run keeps its precision (trainer_state.json records it)");
        m.put("sft_warmup", "the supervised warm-up ran before step 0");
        m.put("world_size", "a resumed run goes on at another world size with --world-size M (resharded), not --set world_size");
        m.put("output_dir", "a resumed run goes on in its own directory (to write elsewhere, copy the run and resume the copy)");
        return m;
    }

    /** One changed key: its saved and its new value (JSON), and its kind. */
    record Change(String key, JsonNode from, JsonNode to, Kind kind) {
        ObjectNode toJson(int step) {
            ObjectNode o = JSON.createObjectNode();
            o.put("step", step).put("key", key).put("kind", kind.name().toLowerCase(java.util.Locale.ROOT));
            o.set("from", from == null ? JSON.nullNode() : from);
            o.set("to", to == null ? JSON.nullNode() : to);
            return o;
        }

        String describe() { return key + " " + show(to) + " (was " + show(from) + ")"; }
    }

    private static final ObjectMapper JSON = org.grpo4j.internal.util.JsonFiles.MAPPER; // (content after a --set value refused, as GrpoConfig does)

    /** The class of a top-level key (a nested key is its object's: sft_warmup.steps is sft_warmup's). */
    static Object classOf(String key) {
        String top = key.contains(".") ? key.substring(0, key.indexOf('.')) : key;
        if (HOW.contains(top)) return Kind.HOW;
        if (WHAT.contains(top) || HORIZON.contains(top)) return Kind.WHAT;
        String why = REFUSED.get(top);
        return why != null ? why : null;
    }

    /**
     * The saved config with the overrides applied, and what they change. Refuses (IllegalArgumentException naming the
     * key) a key of the refused class, a WHAT change unless {@code allowChanges}, and a horizon the run has passed.
     *
     * @param saved          the checkpoint's config
     * @param overrides      "key=value" as --set takes them
     * @param ck             the checkpoint (for messages)
     * @param step           its training step
     * @param optimizerSteps its optimizer steps
     * @param allowChanges   whether WHAT changes are allowed
     */
    static Applied apply(GrpoConfig saved, List<String> overrides, Path ck, int step, long optimizerSteps, boolean allowChanges) {
        String where = "resuming " + ck.toAbsolutePath().getParent().getParent() + " with --set";
        GrpoConfig c;
        try {
            c = saved.withOverrides(overrides, where);
        } catch (IllegalArgumentException e) { // a refused key given another value is named for what it is, not for another key's error
            JsonNode was = toTree(saved);
            for (String o : overrides) {
                int eq = o.indexOf('=');
                String key = eq > 0 ? o.substring(0, eq).trim() : "";
                if (classOf(key) instanceof String why && !equalValues(at(was, key), parse(o.substring(eq + 1))))
                    throw new IllegalArgumentException(where + " " + key + ": " + why);
            }
            throw e;
        }
        List<Change> changes = new ArrayList<>();
        diff("", toTree(saved), toTree(c), changes);
        for (Change ch : changes)
            if (classOf(ch.key()) instanceof String why) throw new IllegalArgumentException(where + " " + ch.key() + ": " + why);
        // the horizon alone against the saved config: its class must not depend on the other keys changed beside it
        List<String> horizonSets = overrides.stream().filter(o -> o.indexOf('=') > 0 && HORIZON.contains(o.substring(0, o.indexOf('=')).trim())).toList();
        Kind horizon = changes.stream().anyMatch(ch -> HORIZON.contains(ch.key()))
                ? horizonKind(saved, saved.withOverrides(horizonSets, where), step, optimizerSteps, where) : null;
        boolean microWeights = LossAggregation.parse(c.lossAggregation) == LossAggregation.MICRO_TOKEN_MEAN
                || LossAggregation.parse(saved.lossAggregation) == LossAggregation.MICRO_TOKEN_MEAN;
        List<Change> out = new ArrayList<>();
        for (Change ch : changes) {
            Kind kind = (Kind) classOf(ch.key());
            if (ch.key().equals("per_device_train_batch_size") && !microWeights) kind = Kind.HOW; // the weights do not follow the micro-batches
            if (HORIZON.contains(ch.key())) kind = horizon;
            out.add(new Change(ch.key(), ch.from(), ch.to(), kind));
        }
        if (!allowChanges) {
            List<String> what = out.stream().filter(ch -> ch.kind() == Kind.WHAT).map(Change::describe).toList();
            if (!what.isEmpty())
                throw new IllegalArgumentException(where + ": " + String.join(", ", what) + " change" + (what.size() == 1 ? "s" : "")
                        + " what the run trains from step " + step + " on, so it would no longer repeat the run its checkpoints began: add"
                        + " --allow-changes to go on so (trainer_state.json records each change), or leave " + (what.size() == 1 ? "it" : "them")
                        + " out to resume the run as it was");
        }
        return new Applied(c, out);
    }

    /** The overridden config and its changes, in key order. */
    record Applied(GrpoConfig config, List<Change> changes) {}

    private static JsonNode toTree(GrpoConfig c) {
        try {
            return JSON.readTree(c.toJson());
        } catch (java.io.IOException e) {
            throw new IllegalStateException(e);
        }
    }

    private static void diff(String prefix, JsonNode a, JsonNode b, List<Change> out) {
        if (a != null && b != null && a.isObject() && b.isObject()) {
            java.util.TreeSet<String> keys = new java.util.TreeSet<>();
            a.fieldNames().forEachRemaining(keys::add);
            b.fieldNames().forEachRemaining(keys::add);
            for (String k : keys) diff(prefix + k + ".", a.get(k), b.get(k), out);
            return;
        }
        if (!equalValues(a, b) && !sameCompat(prefix, a, b)) out.add(new Change(prefix.substring(0, prefix.length() - 1), a, b, Kind.HOW));
    }

    /** Two spellings of one verifier semantics ("" and "fixed", any case or spaces): not a change. */
    private static boolean sameCompat(String prefix, JsonNode a, JsonNode b) {
        if (!prefix.equals("verifier_compat.") || a == null || b == null || !a.isTextual() || !b.isTextual()) return false;
        try {
            return org.grpo4j.reward.Compat.parse(a.textValue()) == org.grpo4j.reward.Compat.parse(b.textValue());
        } catch (IllegalArgumentException e) {
            return false; // (a bad value is refused by the config's own check)
        }
    }

    /** JSON values equal as values: 1e-6 and 0.000001, 10 and 10.0 alike. */
    private static boolean equalValues(JsonNode a, JsonNode b) {
        if (a == null || b == null) return a == b;
        if (a.isNumber() && b.isNumber()) return a.decimalValue().compareTo(b.decimalValue()) == 0;
        if (a.isArray() && b.isArray()) {
            if (a.size() != b.size()) return false;
            Iterator<JsonNode> i = a.elements(), j = b.elements();
            while (i.hasNext()) if (!equalValues(i.next(), j.next())) return false;
            return true;
        }
        return a.equals(b);
    }

    /**
     * HOW where every optimizer step the new horizon plans from the checkpoint on has the learning rate the run's own
     * schedule gives it (its formula beyond its end included: a linear decay extended past it would climb from 0 again),
     * WHAT otherwise; a horizon at or before the checkpoint's step is refused.
     */
    private static Kind horizonKind(GrpoConfig saved, GrpoConfig c, int step, long optimizerSteps, String where) {
        if (c.trainingSteps() <= step)
            throw new IllegalArgumentException(where + ": the run would end at step " + c.trainingSteps() + ", but its checkpoint is at step " + step
                    + " already: a horizon (num_training_steps, or total_episodes) beyond " + step + " trains on");
        LrSchedule was = LrSchedule.of(saved), now = LrSchedule.of(c);
        long until = (long) c.trainingSteps() * c.optimizerStepsPerTrainingStep();
        for (long s = optimizerSteps; s < until; s++) if (was.at(s) != now.at(s)) return Kind.WHAT;
        return Kind.HOW;
    }

    /** The saved value of a (dotted) key, or null. */
    private static JsonNode at(JsonNode tree, String key) {
        JsonNode n = tree;
        for (String part : key.split("\\.")) n = n == null ? null : n.get(part);
        return n;
    }

    /** A --set value as GrpoConfig reads it: JSON, else a string. */
    private static JsonNode parse(String v) {
        try {
            JsonNode n = JSON.readTree(v);
            return n == null || n.isMissingNode() ? JSON.getNodeFactory().textNode(v) : n;
        } catch (java.io.IOException e) {
            return JSON.getNodeFactory().textNode(v);
        }
    }

    /** Shows a JSON value as --set would take it. */
    static String show(JsonNode v) {
        return v == null || v.isNull() ? "unset" : v.isTextual() ? v.textValue() : v.toString();
    }

    /** The changes of earlier resumes (trainer_state.json's config_changes) followed by these, at {@code step}. */
    static ArrayNode record(ArrayNode earlier, List<Change> changes, int step) {
        ArrayNode a = earlier == null ? JSON.createArrayNode() : earlier.deepCopy();
        for (Change ch : changes) a.add(ch.toJson(step));
        return a;
    }
}
