package org.grpo4j.train;

import org.grpo4j.internal.train.LossAggregation;
import org.grpo4j.internal.train.LrSchedule;
import org.grpo4j.internal.train.ReferenceOptions;
import com.fasterxml.jackson.annotation.JsonIgnore;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.MapperFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.PropertyNamingStrategies;
import com.fasterxml.jackson.databind.exc.InvalidFormatException;
import com.fasterxml.jackson.databind.exc.MismatchedInputException;
import com.fasterxml.jackson.databind.exc.UnrecognizedPropertyException;
import com.fasterxml.jackson.databind.json.JsonMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.grpo4j.internal.backend.KlEstimator;
import org.grpo4j.reward.Compat;

/**
 * GRPO configuration with the reference's flag names in snake_case (grpo-reference.md section 0), so a reference
 * command ports line by line, plus grpo4j's own keys (marked "grpo4j" below). Unknown keys, wrong types and
 * impossible batch arithmetic are rejected with one clear error before any work starts.
 */
public final class GrpoConfig {
    // model and data
    /** HF model directory, or "init:tiny" for a freshly initialized tiny Llama with the bundled tokenizer (grpo4j). */
    public String modelNameOrPath;
    public String chatTemplateName = "tulu";
    public List<String> datasetMixerList = new ArrayList<>();
    public List<String> datasetMixerEvalList = new ArrayList<>();
    /** Split per dataset (one for all, or one each); empty: every data file of a dataset directory. */
    public List<String> datasetMixerListSplits = new ArrayList<>();
    public List<String> datasetMixerEvalListSplits = new ArrayList<>();
    public int maxPromptTokenLength = 2048;
    /** Rows whose whole chat (every message) is longer are dropped, as the reference's rlvr_filter_v1 does. */
    public int maxTokenLength = 4096;
    public int responseLength = 2048;

    // batch arithmetic (per rank, as in the reference)
    /**
     * Number of data-parallel ranks (the reference's sum of actor_num_gpus_per_node). The local_* sizes are per rank,
     * so the global batch grows with it. Above 1: ZeRO-2 over NCCL (tools/launch), or in-process ranks on the CPU.
     */
    public int worldSize = 1;
    public int localRolloutBatchSize = 8;
    public int numberSamplesPerPrompt = 16;
    public int localMiniBatchSize = 64;
    public int perDeviceTrainBatchSize = 2;
    public int localRolloutForwardBatchSize = 2;
    public int numEpochs = 1;
    public long totalEpisodes = 10_000_000L;
    /** Overrides total_episodes // (prompts per step x samples) when > 0 (grpo4j). */
    public int numTrainingSteps = 0;

    // optimization
    public double learningRate = 5e-7;
    /** linear, cosine, cosine_with_restarts, polynomial, constant, constant_with_warmup (transformers' semantics). */
    public String lrSchedulerType = "constant";
    /** "" (grpo4j: warm_up_steps honoured, true horizon) or "open-instruct-3f37c29" (the reference exactly); see LrSchedule. */
    public String lrSchedulerCompat = "";
    public double warmupRatio = 0.0;
    public int warmUpSteps = 0;
    public double weightDecay = 0.01;
    public double adamBeta1 = 0.9;
    public double adamBeta2 = 0.999;
    public double adamEps = 1e-8;
    public double maxGradNorm = 1.0;
    public boolean gradientCheckpointing = true;

    // GRPO
    public double beta = 0.01;
    public String klEstimator = "kl3";
    public double cliprange = 0.2;
    /** Clip-higher upper epsilon; defaults to cliprange (grpo4j). */
    public Double cliprangeHigh = null;
    /** micro_token_mean (reference), token_mean (DAPO), seq_mean_token_mean, dr_grpo (grpo4j). */
    public String lossAggregation = "micro_token_mean";
    public double temperature = 1.0;
    public double topP = 1.0;
    public boolean nonStopPenalty = true;
    public double penaltyRewardValue = 0.0;
    public String stopToken = "eos";
    /** Generation also stops when the text completes one of these (vLLM stop strings; the reference's stop_strings). */
    public List<String> stopStrings = new ArrayList<>();
    /** The non-stop penalty also applies to responses whose sequence length is below this (the reference's min_response_length). */
    public int minResponseLength = 0;

    // rewards
    public boolean applyVerifiableReward = true;
    public double verificationReward = 10.0;
    public double rewardModelMultiplier = 0.0;
    /** "" (intended behaviour, bugs fixed) or "open-instruct-3f37c29" (grpo4j). */
    public String verifierCompat = "";
    /** Seconds per verification (grpo4j). */
    public double verifierTimeout = 5.0;
    /** Adds r1_style_format_reward to responses in the R1 format (open-instruct #551; reward.FormatReward). */
    public boolean addR1StyleFormatReward = false;
    public double r1StyleFormatReward = 1.0;

    // logging
    /** "" (correct values) or "open-instruct-3f37c29" (the reference's logged numbers, 1/8 dilution included; docs/trainer.md). */
    public String metricsCompat = "";
    /** Free text about the config, e.g. how it differs from a reference command; not read by training (grpo4j). */
    public List<String> notes = new ArrayList<>();

    // run
    public long seed = 1;
    public int numEvals = 30;
    public int saveFreq = 40;
    public String outputDir = "runs/grpo";
    /** auto, cpu, cuda, cuda:N (grpo4j). */
    public String backend = "auto";
    /**
     * KV cache for rollouts in MiB (grpo4j); 0 (default): sized from kv_cache_fraction of the memory left after the
     * model states, capped at what the step's samples can use.
     */
    public int kvCacheMib = 0;
    /** Share of the memory left after model states and activations that the KV pool may take (like vLLM's gpu_memory_utilization; grpo4j). */
    public double kvCacheFraction = 0.9;
    /**
     * fp32, bf16 or auto (bf16 on CUDA, fp32 on the CPU) (grpo4j): bf16 runs the policy, rollouts, log-prob passes and
     * the reference model on bf16 weights, with fp32 master weights, AdamW moments, gradients and losses.
     */
    public String precision = "auto";
    /** Gradient bucket for the ZeRO-2 reduction, in elements (DeepSpeed's reduce_bucket_size; grpo4j). */
    public long reduceBucketSize = 200_000_000L;
    /** A collective not finished within this many seconds aborts the NCCL communicators and stops every rank (grpo4j). */
    public int ncclTimeoutS = 600;
    /** Abort after this many consecutive steps with a non-finite loss or gradient norm (grpo4j). */
    public int maxConsecutiveNonfinite = 3;
    /** Optional supervised warm-up before GRPO (grpo4j; see docs/trainer.md). */
    public SftWarmup sftWarmup = new SftWarmup();

    /**
     * Supervised warm-up before GRPO on the training rows whose last message is an assistant turn (the reference
     * solution; the prompt is the turns before it): mean next-token NLL of that turn plus EOS, AdamW with its own
     * learning rate and fresh moments. The GRPO reference policy is the model after warm-up.
     */
    public static final class SftWarmup {
        public int steps = 0;
        public int batchSize = 32;
        public double learningRate = 1e-3;
    }

    /** The config file's directory: relative dataset paths are looked up there first, then in the working directory. */
    @JsonIgnore public java.nio.file.Path baseDir;

    private static final ObjectMapper JSON = JsonMapper.builder()
            .propertyNamingStrategy(PropertyNamingStrategies.SNAKE_CASE)
            .enable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
            .enable(DeserializationFeature.FAIL_ON_NULL_FOR_PRIMITIVES)
            .disable(MapperFeature.ALLOW_COERCION_OF_SCALARS)
            .disable(DeserializationFeature.ACCEPT_FLOAT_AS_INT) // num_training_steps=2.5 is an error, not 2
            .build();

    /** Reads a JSON config file and applies "key=value" overrides (value parsed as JSON, else taken as a string). */
    public static GrpoConfig load(Path file, List<String> overrides) throws IOException {
        if (!java.nio.file.Files.isRegularFile(file)) throw new java.nio.file.NoSuchFileException(file.toString(), null, "config file");
        JsonNode root;
        try {
            root = JSON.readTree(file.toFile());
        } catch (IOException e) {
            throw new IllegalArgumentException(file + ": not valid JSON: " + (e instanceof com.fasterxml.jackson.core.JsonProcessingException j
                    ? org.grpo4j.internal.util.JsonErrors.describe(j) : e.getMessage().lines().findFirst().orElse("")));
        }
        if (root == null || root.isMissingNode()) throw new IllegalArgumentException(file + ": empty (expected a JSON object)");
        if (!root.isObject()) throw new IllegalArgumentException(file + ": the config must be a JSON object, got " + root.getNodeType().toString().toLowerCase(java.util.Locale.ROOT));
        GrpoConfig c = fromJson((ObjectNode) root, overrides, file.toString());
        c.baseDir = file.toAbsolutePath().getParent();
        return c;
    }

    public static GrpoConfig fromJson(ObjectNode root, List<String> overrides, String where) {
        ObjectNode tree = root.deepCopy();
        for (String o : overrides == null ? List.<String>of() : overrides) {
            int eq = o.indexOf('=');
            if (eq <= 0) throw new IllegalArgumentException("--set expects key=value, got \"" + o + "\"");
            String key = o.substring(0, eq).trim(), val = o.substring(eq + 1);
            JsonNode v;
            try {
                v = JSON.readTree(val);
                if (v == null || v.isMissingNode()) v = JSON.getNodeFactory().textNode(val);
            } catch (IOException e) {
                v = JSON.getNodeFactory().textNode(val);
            }
            String[] path = key.split("\\.");
            ObjectNode at = tree;
            for (int i = 0; i < path.length - 1; i++) {
                JsonNode child = at.get(path[i]);
                if (child == null || !child.isObject()) child = at.putObject(path[i]);
                at = (ObjectNode) child;
            }
            at.set(path[path.length - 1], v);
        }
        ReferenceOptions.rejectUnsupported(tree, where);
        GrpoConfig c;
        try {
            c = JSON.treeToValue(tree, GrpoConfig.class);
        } catch (UnrecognizedPropertyException e) {
            throw new IllegalArgumentException(where + ": unknown key \"" + e.getPropertyName() + "\""
                    + (e.getPath().size() > 1 ? " in " + e.getPath().get(0).getFieldName() : ""));
        } catch (InvalidFormatException e) {
            throw new IllegalArgumentException(where + ": key \"" + pathOf(e) + "\" has the wrong type: " + e.getValue()
                    + " is not " + typeName(e.getTargetType()));
        } catch (MismatchedInputException e) {
            throw new IllegalArgumentException(where + ": key \"" + pathOf(e) + "\" has the wrong type (expected " + typeName(e.getTargetType()) + ")");
        } catch (IOException e) {
            throw new IllegalArgumentException(where + ": " + e.getMessage().lines().findFirst().orElse(""));
        }
        c.validate(where);
        return c;
    }

    private static String typeName(Class<?> t) {
        if (t == null) return "another type";
        if (t == int.class || t == Integer.class || t == long.class || t == Long.class) return "an integer";
        if (t == double.class || t == Double.class || t == float.class) return "a number";
        if (t == boolean.class || t == Boolean.class) return "true or false";
        if (t == String.class) return "a string";
        if (List.class.isAssignableFrom(t)) return "a list of strings";
        return "an object";
    }


    private static String pathOf(MismatchedInputException e) {
        StringBuilder sb = new StringBuilder();
        for (var r : e.getPath()) {
            if (r.getFieldName() != null) sb.append(sb.length() > 0 ? "." : "").append(r.getFieldName());
            else sb.append('[').append(r.getIndex()).append(']');
        }
        return sb.toString();
    }

    // ---- validation and derived quantities ----------------------------------------------------------------------

    private static void require(boolean cond, String where, String msg) {
        if (!cond) throw new IllegalArgumentException(where + ": " + msg);
    }

    public void validate(String where) {
        require(modelNameOrPath != null && !modelNameOrPath.isBlank(), where, "model_name_or_path is required");
        Object[][] objects = {{"chat_template_name", chatTemplateName}, {"dataset_mixer_list", datasetMixerList},
            {"dataset_mixer_eval_list", datasetMixerEvalList}, {"lr_scheduler_type", lrSchedulerType}, {"kl_estimator", klEstimator},
            {"loss_aggregation", lossAggregation}, {"stop_token", stopToken}, {"verifier_compat", verifierCompat},
            {"output_dir", outputDir}, {"backend", backend}, {"sft_warmup", sftWarmup}, {"precision", precision}};
        for (Object[] o : objects) require(o[1] != null, where, o[0] + " must not be null");
        require(!datasetMixerList.isEmpty(), where, "dataset_mixer_list is required");
        require(worldSize >= 1, where, "world_size must be >= 1");
        require(localRolloutBatchSize >= 1, where, "local_rollout_batch_size must be >= 1");
        require(numberSamplesPerPrompt >= 2, where, "number_samples_per_prompt must be >= 2 (group advantages need a standard deviation)");
        require(perDeviceTrainBatchSize >= 1, where, "per_device_train_batch_size must be >= 1");
        require(localRolloutForwardBatchSize >= 1, where, "local_rollout_forward_batch_size must be >= 1");
        require(numEpochs >= 1, where, "num_epochs must be >= 1");
        require((long) localRolloutBatchSize * numberSamplesPerPrompt * worldSize <= 1 << 24, where, "local_rollout_batch_size x number_samples_per_prompt x world_size = "
                + (long) localRolloutBatchSize * numberSamplesPerPrompt * worldSize + " completions per step is more than grpo4j supports (2^24)");
        int rollouts = localRolloutBatchSize * numberSamplesPerPrompt;
        require(localMiniBatchSize >= 1 && rollouts % localMiniBatchSize == 0, where, "local_mini_batch_size " + localMiniBatchSize
                + " must divide local_rollout_batch_size x number_samples_per_prompt = " + localRolloutBatchSize + " x " + numberSamplesPerPrompt + " = " + rollouts);
        require(localMiniBatchSize % perDeviceTrainBatchSize == 0, where, "per_device_train_batch_size " + perDeviceTrainBatchSize
                + " must divide local_mini_batch_size " + localMiniBatchSize);
        require(responseLength >= 1, where, "response_length must be >= 1, got " + responseLength);
        require(maxPromptTokenLength >= 1, where, "max_prompt_token_length must be >= 1, got " + maxPromptTokenLength);
        require(!modelNameOrPath.startsWith("init:") || modelNameOrPath.equals("init:tiny"), where,
                "model_name_or_path \"" + modelNameOrPath + "\": the only init: preset is init:tiny");
        require(chatTemplateName != null && !chatTemplateName.isBlank(), where, "chat_template_name is empty (tulu, llama3 or tokenizer)");
        require(outputDir != null && !outputDir.isBlank(), where, "output_dir is empty");
        try {
            org.grpo4j.internal.data.DatasetMixer.parse(datasetMixerList, "dataset_mixer_list");
            if (!datasetMixerEvalList.isEmpty()) org.grpo4j.internal.data.DatasetMixer.parse(datasetMixerEvalList, "dataset_mixer_eval_list");
            org.grpo4j.internal.backend.Backends.checkSpec(backend);
            KlEstimator.parse(klEstimator);
            LossAggregation.parse(lossAggregation);
            Compat.parse(verifierCompat);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(where + ": " + e.getMessage());
        }
        require(maxTokenLength >= 1, where, "max_token_length must be >= 1");
        require(totalEpisodes >= 1, where, "total_episodes must be >= 1");
        require(numTrainingSteps >= 0, where, "num_training_steps must be >= 0 (0: from total_episodes), got " + numTrainingSteps);
        require(learningRate >= 0 && Double.isFinite(learningRate), where, "learning_rate must be a finite number >= 0, got " + learningRate);
        require(warmUpSteps >= 0, where, "warm_up_steps must be >= 0, got " + warmUpSteps);
        require(adamBeta1 >= 0 && adamBeta1 < 1 && adamBeta2 >= 0 && adamBeta2 < 1, where,
                "adam_beta1 and adam_beta2 must be in [0, 1), got " + adamBeta1 + " and " + adamBeta2);
        require(adamEps > 0 && Double.isFinite(adamEps), where, "adam_eps must be a finite number > 0, got " + adamEps);
        require(weightDecay >= 0 && Double.isFinite(weightDecay), where, "weight_decay must be a finite number >= 0, got " + weightDecay);
        require(Double.isFinite(beta), where, "beta must be finite, got " + beta);
        require(cliprangeHigh == null || Double.isFinite(cliprangeHigh), where, "cliprange_high must be finite, got " + cliprangeHigh);
        require(Double.isFinite(temperature), where, "temperature must be finite, got " + temperature);
        require(Double.isFinite(penaltyRewardValue), where, "penalty_reward_value must be finite, got " + penaltyRewardValue);
        require(verificationReward > 0 && Double.isFinite(verificationReward), where, "verification_reward must be a finite number > 0, got " + verificationReward);
        require(Double.isFinite(verifierTimeout), where, "verifier_timeout must be finite, got " + verifierTimeout);
        require(Double.isFinite(sftWarmup.learningRate), where, "sft_warmup.learning_rate must be finite, got " + sftWarmup.learningRate);
        require(LrSchedule.TYPES.contains(lrSchedulerType), where, "lr_scheduler_type must be one of " + String.join(", ", LrSchedule.TYPES) + ", got " + lrSchedulerType);
        require(warmupRatio >= 0 && warmupRatio < 1, where, "warmup_ratio must be in [0, 1), got " + warmupRatio);
        require(beta >= 0, where, "beta must be >= 0, got " + beta);
        require(cliprange >= 0 && cliprange < 1, where, "cliprange must be in [0, 1), got " + cliprange);
        require(cliprangeHigh == null || cliprangeHigh >= 0, where, "cliprange_high must be >= 0, got " + cliprangeHigh);
        require(temperature > 0, where, "temperature must be > 0 for GRPO sampling, got " + temperature);
        require(topP > 0 && topP <= 1, where, "top_p must be in (0, 1], got " + topP);
        require(stopToken.equals("eos"), where, "stop_token must be \"eos\"");
        require(rewardModelMultiplier == 0.0, where, "reward_model_multiplier must be 0: grpo4j is RLVR only (verifiable rewards, no reward model)");
        require(applyVerifiableReward, where, "apply_verifiable_reward must be true: grpo4j is RLVR only (verifiable rewards, no reward model)");
        require(verifierTimeout > 0, where, "verifier_timeout must be > 0 seconds, got " + verifierTimeout);
        require(numEvals >= 0 && saveFreq >= 0, where, "num_evals and save_freq must be >= 0");
        require(maxGradNorm > 0, where, "max_grad_norm must be > 0 (Infinity: no clipping), got " + maxGradNorm);
        require(kvCacheMib >= 0, where, "kv_cache_mib must be >= 0 (0: sized from kv_cache_fraction), got " + kvCacheMib);
        require(kvCacheFraction > 0 && kvCacheFraction <= 1, where, "kv_cache_fraction must be in (0, 1], got " + kvCacheFraction);
        require(precision != null && List.of("auto", "fp32", "bf16").contains(precision), where, "precision must be auto, fp32 or bf16, got " + precision);
        require(reduceBucketSize >= 1024, where, "reduce_bucket_size must be >= 1024 elements, got " + reduceBucketSize);
        require(ncclTimeoutS >= 1, where, "nccl_timeout_s must be >= 1, got " + ncclTimeoutS);
        require(maxConsecutiveNonfinite >= 1, where, "max_consecutive_nonfinite must be >= 1");
        require(numTrainingSteps > 0 || totalEpisodes >= (long) rollouts * worldSize, where,
                "total_episodes " + totalEpisodes + " is less than one step of " + rollouts * worldSize + " completions");
        require(sftWarmup.steps >= 0 && sftWarmup.batchSize >= 1 && sftWarmup.learningRate >= 0, where, "sft_warmup needs steps >= 0, batch_size >= 1, learning_rate >= 0, got " + sftWarmup.steps + ", " + sftWarmup.batchSize + ", " + sftWarmup.learningRate);
        ReferenceOptions.validate(this, where);
    }

    @JsonIgnore public int rolloutBatchSize() { return localRolloutBatchSize * worldSize; }
    @JsonIgnore public int completionsPerStep() { return rolloutBatchSize() * numberSamplesPerPrompt; }
    @JsonIgnore public int localCompletions() { return localRolloutBatchSize * numberSamplesPerPrompt; }
    @JsonIgnore public int miniBatchSize() { return localMiniBatchSize * worldSize; }
    @JsonIgnore public int numMiniBatches() { return localCompletions() / localMiniBatchSize; }
    @JsonIgnore public int optimizerStepsPerTrainingStep() { return numEpochs * numMiniBatches(); }
    @JsonIgnore public int gradientAccumulationSteps() { return localMiniBatchSize / perDeviceTrainBatchSize; }
    @JsonIgnore public int trainingSteps() { return numTrainingSteps > 0 ? numTrainingSteps : (int) Math.min(Integer.MAX_VALUE, totalEpisodes / completionsPerStep()); }
    @JsonIgnore public int evalFreq() { return numEvals == 0 ? Integer.MAX_VALUE : Math.max(1, trainingSteps() / numEvals); }
    @JsonIgnore public double epsHigh() { return cliprangeHigh != null ? cliprangeHigh : cliprange; }
    @JsonIgnore public KlEstimator kl() { return KlEstimator.parse(klEstimator); }
    @JsonIgnore public LossAggregation aggregation() { return LossAggregation.parse(lossAggregation); }
    @JsonIgnore public Compat compat() { return Compat.parse(verifierCompat); }
    /** Warm-up optimizer steps of the schedule this config trains with (see {@link LrSchedule#of}). */
    @JsonIgnore public int warmupSteps() { return LrSchedule.of(this).warmup(); }
    /** The learning-rate schedule (see {@link LrSchedule#of}). */
    @JsonIgnore public LrSchedule lrSchedule() { return LrSchedule.of(this); }

    /** The derived quantities of grpo-reference.md section 0, name to value. */
    public Map<String, String> derived() {
        Map<String, String> m = new LinkedHashMap<>();
        m.put("world_size", String.valueOf(worldSize));
        m.put("rollout_batch_size (prompts/step)", localRolloutBatchSize + " x " + worldSize + " = " + rolloutBatchSize());
        m.put("completions/step", rolloutBatchSize() + " x " + numberSamplesPerPrompt + " = " + completionsPerStep() + " (" + localCompletions() + " per rank)");
        m.put("mini_batch_size (global)", localMiniBatchSize + " x " + worldSize + " = " + miniBatchSize());
        m.put("optimizer steps per training step", numEpochs + " x " + localCompletions() + "/" + localMiniBatchSize + " = " + optimizerStepsPerTrainingStep());
        m.put("gradient_accumulation_steps", localMiniBatchSize + "/" + perDeviceTrainBatchSize + " = " + gradientAccumulationSteps());
        m.put("num_training_steps", numTrainingSteps > 0 ? numTrainingSteps + " (num_training_steps)"
                : totalEpisodes + " // " + completionsPerStep() + " = " + trainingSteps());
        m.put("eval_freq", numEvals == 0 ? "never" : "max(1, " + trainingSteps() + " // " + numEvals + ") = " + evalFreq());
        m.put("optimizer steps in total", String.valueOf((long) trainingSteps() * optimizerStepsPerTrainingStep()));
        LrSchedule lr = lrSchedule();
        m.put("lr schedule", lr.type() + ", " + lr.base() + ", warm-up " + lr.warmup() + ", horizon " + lr.total() + " optimizer steps"
                + (ReferenceOptions.lrCompat(this) ? " (lr_scheduler_compat " + ReferenceOptions.OPEN_INSTRUCT_3F37C29 + ")" : ""));
        return m;
    }

    /** The config as JSON (what is saved next to checkpoints). */
    public String toJson() {
        try {
            return JSON.writerWithDefaultPrettyPrinter().writeValueAsString(this);
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }

    public static GrpoConfig fromJsonString(String json) throws IOException { return fromJsonString(json, "saved config"); }

    /** Parses a saved config; {@code where} (its file) names it in errors. */
    public static GrpoConfig fromJsonString(String json, String where) throws IOException {
        JsonNode root;
        try {
            root = JSON.readTree(json);
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IllegalArgumentException(where + ": not valid JSON: " + org.grpo4j.internal.util.JsonErrors.describe(e));
        }
        if (root == null || root.isMissingNode()) throw new IllegalArgumentException(where + ": empty (expected the run's config as a JSON object)");
        if (!root.isObject()) throw new IllegalArgumentException(where + ": the config must be a JSON object, got " + root.getNodeType().toString().toLowerCase(java.util.Locale.ROOT));
        return fromJson((ObjectNode) root, List.of(), where);
    }
}
