package org.grpo4j.train;

import org.grpo4j.internal.train.LossAggregation;
import org.grpo4j.internal.train.LrSchedule;
import org.grpo4j.internal.train.ReferenceOptions;
import com.fasterxml.jackson.annotation.JsonIgnore;
import com.fasterxml.jackson.annotation.JsonProperty;
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
import java.util.Objects;
import org.grpo4j.reward.Compat;

/**
 * GRPO configuration with the reference's flag names in snake_case (grpo-reference.md section 0), so a reference
 * command ports line by line, plus grpo4j's own keys (marked "grpo4j" below). In JSON the keys are snake_case
 * ({@code local_rollout_batch_size}); in Java they are these public fields ({@code localRolloutBatchSize}).
 * Unknown keys, wrong types and impossible batch arithmetic are rejected with one clear error before any work
 * starts. docs/trainer.md says what each key does and where grpo4j differs from the reference.
 *
 * <pre>{@code
 * GrpoConfig cfg = GrpoConfig.load(Path.of("examples/tiny-arith.json"), List.of("num_training_steps=20"));
 * // or in code:
 * GrpoConfig c = new GrpoConfig();
 * c.modelNameOrPath = "init:tiny";
 * c.datasetMixerList = List.of("examples/data/tiny-arith.jsonl", "1.0");
 * }</pre>
 *
 * <p><b>Thread safety:</b> a mutable bean, not thread-safe. {@link GrpoTrainer.Builder#build()} takes a copy, so a
 * config may be changed and reused after a trainer is built from it.
 */
public final class GrpoConfig {
    // model and data
    /** HF model directory, or "init:tiny" for a freshly initialized tiny Llama with the bundled tokenizer (grpo4j). */
    public String modelNameOrPath;
    /** Chat template of the prompts: tulu, llama3, r1_simple_chat, r1_simple_chat_postpend_think, or tokenizer (its own). */
    public String chatTemplateName = "tulu";
    /** Training data as [dataset, amount, ...] pairs: a .jsonl/.parquet file or directory (relative paths: the config file's directory first), and "1.0" for all rows, "0.5" for half, "100" for 100 rows. */
    public List<String> datasetMixerList = new ArrayList<>();
    /** Evaluation data in the same form; empty: no eval samples. An eval step samples its first 32 prompts. */
    public List<String> datasetMixerEvalList = new ArrayList<>();
    /** Split per dataset (one for all, or one each); empty: every data file of a dataset directory. */
    public List<String> datasetMixerListSplits = new ArrayList<>();
    /** Split per eval dataset (one for all, or one each). */
    public List<String> datasetMixerEvalListSplits = new ArrayList<>();
    /** Rows whose prompt (chat-templated, with the generation prompt) is longer, in tokens, are dropped. */
    public int maxPromptTokenLength = 2048;
    /** Rows whose whole chat (every message) is longer are dropped, as the reference's rlvr_filter_v1 does. */
    public int maxTokenLength = 2048;
    /** The longest response, in tokens. */
    public int responseLength = 2048;

    // batch arithmetic (per rank, as in the reference)
    /**
     * Number of data-parallel ranks (the reference's sum of actor_num_gpus_per_node). The local_* sizes are per rank,
     * so the global batch grows with it. Above 1: ZeRO-2 over NCCL (tools/launch), or in-process ranks on the CPU.
     */
    public int worldSize = 1;
    /** Prompts per step on each rank. */
    public int localRolloutBatchSize = 8;
    /** Responses sampled per prompt (the group of GRPO's advantages); at least 2. */
    public int numberSamplesPerPrompt = 16;
    /** Responses per optimizer step on each rank; divides local_rollout_batch_size x number_samples_per_prompt. */
    public int localMiniBatchSize = 64;
    /** Responses per forward/backward pass (gradients accumulate over a mini-batch); divides local_mini_batch_size. */
    public int perDeviceTrainBatchSize = 2;
    /** Responses per no-grad pass of the old and reference log-probs. */
    public int localRolloutForwardBatchSize = 2;
    /** PPO epochs over each step's responses. */
    public int numEpochs = 1;
    /** Responses in the whole run: the step count is total_episodes // (prompts per step x samples), unless num_training_steps is set. */
    public long totalEpisodes = 10_000_000L;
    /** Overrides total_episodes // (prompts per step x samples) when > 0 (grpo4j). */
    public int numTrainingSteps = 0;

    // optimization
    /** AdamW's peak learning rate. */
    public double learningRate = 5e-7;
    /** linear, cosine, cosine_with_restarts, polynomial, constant, constant_with_warmup (transformers' semantics). */
    public String lrSchedulerType = "constant";
    /** "" (grpo4j: warm_up_steps honoured, true horizon) or "open-instruct-3f37c29" (the reference exactly); see LrSchedule. */
    public String lrSchedulerCompat = "";
    /** Warm-up share of the schedule's optimizer steps (takes precedence over warm_up_steps when &gt; 0). */
    public double warmupRatio = 0.0;
    /** Warm-up optimizer steps. */
    public int warmUpSteps = 0;
    /** AdamW's decoupled weight decay. */
    public double weightDecay = 0.01;
    /** AdamW's beta1. */
    public double adamBeta1 = 0.9;
    /** AdamW's beta2. */
    public double adamBeta2 = 0.999;
    /** AdamW's epsilon. */
    public double adamEps = 1e-8;
    /** Global gradient-norm clip (Infinity: none). */
    public double maxGradNorm = 1.0;
    /** Recompute activations in the backward pass (less memory, one more forward). */
    public boolean gradientCheckpointing = true;
    /**
     * With gradient_checkpointing, how many layers are recomputed in the backward (grpo4j; Megatron's block
     * recomputation): {@code auto} (default) as few of the first layers as keep a training pass's activations within
     * 90% of the memory left after the model states (the others keep theirs and are not run twice), decided when the
     * states are allocated; {@code all}; or a number from 0 to the model's layers. The gradients are the same bits
     * whichever is chosen; only time and memory differ. In JSON a string or a number. docs/trainer.md.
     */
    public String recomputeLayers = "auto"; // JSON through the two methods below (number or string)

    @JsonProperty("recompute_layers")
    private void recomputeLayersFromJson(JsonNode v) {
        if (v == null || !(v.isTextual() || v.canConvertToExactIntegral()))
            throw new IllegalArgumentException("recompute_layers must be auto, all or a number of layers, got " + v);
        recomputeLayers = v.isTextual() ? v.textValue() : v.asText();
    }

    @JsonProperty("recompute_layers")
    private Object recomputeLayersToJson() {
        return recomputeLayers != null && recomputeLayers.matches("\\d{1,9}") ? (Object) Integer.valueOf(recomputeLayers) : recomputeLayers;
    }

    // GRPO
    /** Weight of the KL penalty against the frozen reference policy. */
    public double beta = 0.01;
    /** KL estimator of the penalty: kl1, kl2, kl3 or kl4. */
    public String klEstimator = "kl3";
    /** PPO clip epsilon (the lower one when cliprange_high is set). */
    public double cliprange = 0.2;
    /** Clip-higher upper epsilon; defaults to cliprange (grpo4j). */
    public Double cliprangeHigh = null;
    /** micro_token_mean (reference), token_mean (DAPO), seq_mean_token_mean, dr_grpo (Dr. GRPO's loss; grpo4j). */
    public String lossAggregation = "micro_token_mean";
    /**
     * standard (the reference): (R - group mean) / (unbiased group std + 1e-8); centered: R - group mean (Dr. GRPO,
     * with loss_aggregation dr_grpo; open-instruct's later advantage_normalization_type centered) (grpo4j).
     */
    public String advantageNormalization = "standard";
    /** Sampling temperature of the rollouts (&gt; 0); log-probs are taken at the same temperature. */
    public double temperature = 1.0;
    /** Nucleus sampling of the rollouts, in (0, 1]. */
    public double topP = 1.0;
    /** Responses without the stop token (or shorter than min_response_length) get penalty_reward_value instead of their reward. */
    public boolean nonStopPenalty = true;
    /** The reward of a penalized response. */
    public double penaltyRewardValue = 0.0;
    /** Must be "eos": generation stops at the tokenizer's end-of-sequence token (and at stop_token_ids). */
    public String stopToken = "eos";
    /** Generation also stops when the text completes one of these (vLLM stop strings; the reference's stop_strings). */
    public List<String> stopStrings = new ArrayList<>();
    /**
     * Generation also stops at these token ids (kept, then padded with the EOS as the reference pads every response).
     * Unset (null): the model's generation config's eos_token_id (generation_config.json, else config.json), as vLLM,
     * the reference's sampler, stops at it (Llama 3.x Instruct: 128001, 128008, 128009); [] stops at the tokenizer's
     * EOS only (grpo4j before 2026-12-02). A run saves the ids it resolved here, so its resumes stop where it did.
     */
    public List<Integer> stopTokenIds = null;
    /** The non-stop penalty also applies to responses whose sequence length is below this (the reference's min_response_length). */
    public int minResponseLength = 0;

    // rewards
    /** Must be true: grpo4j is RLVR only. */
    public boolean applyVerifiableReward = true;
    /** The reward of a response the built-in verifiers accept (0 otherwise). */
    public double verificationReward = 10.0;
    /** Must be 0: grpo4j is RLVR only. */
    public double rewardModelMultiplier = 0.0;
    /** "" (intended behaviour, bugs fixed) or "open-instruct-3f37c29" (grpo4j). */
    public String verifierCompat = "";
    /** Seconds per verification (grpo4j). */
    public double verifierTimeout = 5.0;
    /** Adds r1_style_format_reward to responses in the R1 format (open-instruct #551; reward.FormatReward). */
    public boolean addR1StyleFormatReward = false;
    /** The format reward, when add_r1_style_format_reward is on. */
    public double r1StyleFormatReward = 1.0;

    // logging
    /** "" (correct values) or "open-instruct-3f37c29" (the reference's logged numbers, 1/8 dilution included; docs/trainer.md). */
    public String metricsCompat = "";
    /** Free text about the config, e.g. how it differs from a reference command; not read by training (grpo4j). */
    public List<String> notes = new ArrayList<>();

    // run
    /** Seed of every random choice (data order, sampling, mini-batch order). */
    public long seed = 1;
    /** Eval sample rounds over the run (0: none). */
    public int numEvals = 30;
    /** A checkpoint every this many steps (0: only at the end and at step 0). */
    public int saveFreq = 40;
    /**
     * How many of the newest checkpoints the run keeps (grpo4j, with open-instruct's name): -1 (the default) keeps
     * every one; K &gt;= 1 deletes, after each checkpoint is written, those older than the newest K, never step_0 (the
     * frozen reference policy a resume reads). A run resumes from its newest checkpoint, so 1 is enough to resume; more
     * keep earlier policies to evaluate or go back to. A checkpoint takes about 12 bytes a parameter (fp32 weights and
     * AdamW's two moments): 96 GB for Llama 3.1 8B. docs/trainer.md, "The run directory".
     */
    @JsonProperty("keep_last_n_checkpoints") // Jackson's snake case would write keep_last_ncheckpoints
    public int keepLastNCheckpoints = -1;
    /**
     * What keep_last_n_checkpoints does with a checkpoint older than the newest K (grpo4j): delete (the default) removes
     * it; model keeps its model/ (the policy at that step, to evaluate or export: 4 bytes a parameter) and config.json and
     * removes the optimizer state and trainer_state.json, so it is no longer a checkpoint a resume could pick.
     */
    public String olderCheckpoints = "delete";
    /** Where the run writes (unless the trainer is given another directory). */
    public String outputDir = "runs/grpo";
    /** auto, cpu, cuda, cuda:N (grpo4j). */
    public String backend = "auto";
    /**
     * KV cache for rollouts in MiB (grpo4j); 0 (default): sized from kv_cache_fraction of the memory left after the
     * model states, capped at what the step's samples can use.
     */
    public int kvCacheMib = 0;
    /**
     * Share of the memory left after the model states, generation's working memory and the cache's pad block that the
     * KV pool may take (grpo4j). Unlike vLLM's gpu_memory_utilization (a share of the whole device) it is a share of
     * what is left; 1 leaves no room for buffers that grow after the pool is sized (the kernels' scratch, NCCL's).
     */
    public double kvCacheFraction = 0.9;
    /**
     * How rollouts get KV blocks (grpo4j): on_demand (the default, as vLLM) admits samples while the pool has room for
     * the blocks they fill now and gives each a block as its tokens reach one; when the pool runs out, the most
     * recently admitted samples are preempted and resume later, their K/V recomputed (the same tokens: bit for bit on
     * the CPU). worst_case admits a sample only when every block its prompt plus response_length could need is
     * reserved: never a preemption, but where the pool cannot hold every sample's longest completion, fewer samples
     * decode at once. docs/trainer.md.
     */
    public String kvAdmission = "on_demand";
    /**
     * How the frozen reference policy is held at world_size > 1 (grpo4j): layers (ZeRO-3 style: each rank keeps
     * 1/world_size of every decoder layer and the embeddings, final norm and LM head whole; each reference pass
     * all-gathers a layer just before it runs, the next one while it runs), none (a full replica on every rank, as at
     * world_size 1), or auto (the default: layers where that takes less memory than a replica, i.e. at world_size > 1
     * with more layers than the two gathered ones and the pieces make up for). The same log-probs bit for bit; layers
     * saves about 11 GiB a GPU for Llama 3.1 8B at 8 ranks, for the price of one all-gather of the layers per
     * reference pass. docs/distributed.md.
     */
    public String referenceSharding = "auto";
    /**
     * fp32, bf16 or auto (bf16 on CUDA, fp32 on the CPU) (grpo4j): bf16 runs the policy, rollouts, log-prob passes and
     * the reference model on bf16 weights, with fp32 master weights, AdamW moments, gradients and losses.
     */
    public String precision = "auto";
    /**
     * How a bf16 run's fused LM-head losses on CUDA (the GRPO loss, and the supervised warm-up's) feed dz = d loss / d
     * logits to their bf16 gradient GEMMs (grpo4j):
     * bf16 (the default) rounds dz to bf16 once, as every other activation gradient of the bf16 backward is and as
     * torch's autograd has it (6·N·H·V of LM-head GEMMs per micro-batch on the row path, lm_head_scratch_mib > 0;
     * 8·N·H·V in the chunk loops); split passes dz as a hi + lo bf16 pair, about 16 bits, at 12·N·H·V (the chunk loops). fp32 runs and the CPU backend compute dz exactly either way. docs/trainer.md.
     */
    public String lmHeadGrad = "bf16";
    /**
     * Device memory (MiB) the fused LM head's loss may keep for a block of tokens' logits on CUDA (grpo4j; the row
     * path, docs/kernels.md "Fused LM head"): 1024 holds 2048 tokens' fp32 logits at a vocabulary of 128,256, so the
     * backward's dLmHead GEMM reads and writes the fp32 [V, H] gradient once per 2048 tokens; 256 (the op's default,
     * issue 13's bound) holds 512. The memory plan counts it with the training activations; the trainer gives it back
     * after each training phase, so it is not held beside generation's KV pool. 0 turns the row path off.
     */
    public long lmHeadScratchMib = 1024;
    /**
     * How a CUDA run's attention backward forms dQ (grpo4j; docs/kernels.md, docs/trainer.md "Randomness and exact
     * resume"): pass (the default) runs a second, deterministic pass over each query tile's keys; fixed adds dS K in
     * 64-bit fixed point from the dK/dV pass, deterministic without the second pass (other last bits than pass); atomic
     * adds it with fp32 atomics, whose order varies run to run, so a resumed run no longer repeats the original bit
     * for bit. The CPU backend and the generic kernels have one way and ignore it. Saved with the run's config, so a
     * resume keeps it.
     */
    public String attentionDq = "pass";
    /**
     * Which attention kernels a CUDA run uses (grpo4j): mma (the default: mma.sync, every GPU from sm_80) or wgmma (the
     * Hopper kernels, docs/kernels.md "The Hopper kernels", on a compute capability 9.0 device, H100 / H200; mma.sync
     * elsewhere). Within the same tolerance of the exact result, not the same bits, so a resume keeps the saved value.
     */
    public String attentionKernels = "mma";
    /**
     * Where the PPO "old" log-probs of the first mini-batch of the first epoch come from (grpo4j): auto (the default)
     * takes each token's own log-prob of that micro-batch's training forward, detached (ratio exactly 1), since the
     * weights are still the ones the rollouts were scored with, as TRL does with per_token_logps.detach(); the no-grad
     * old pass then runs only for the rollouts of later mini-batches (none at num_mini_batches 1, whatever num_epochs:
     * later epochs take the first epoch's values).
     * recompute runs it for every rollout, as the reference does (its first-mini-batch ratios are 1 up to rounding).
     * docs/trainer.md.
     */
    public String oldLogprobs = "auto";
    /**
     * The no-grad log-prob passes (old, reference) run each prompt's tokens once per chunk for the samples of it that
     * sit next to each other in the chunk, not once per sample (grpo4j): the layers' work of a group of n samples of a
     * P-token prompt is P + n C tokens instead of n (P + C); attention still sees every sequence whole. The same
     * log-probs bit for bit on the CPU, up to the GEMMs' summation order on CUDA. docs/trainer.md.
     */
    public boolean logprobPrefixSharing = true;
    /**
     * The training passes run each prompt's tokens once for the rollouts of it in the same pass (grpo4j): each
     * mini-batch's rollouts run in passes of per_device_train_batch_size in prompt order (each prompt's together), not
     * in the order of the reference's micro-batches, while every token keeps the weight its reference micro-batch gives
     * it (loss_aggregation), so the loss and its gradient are the reference's up to floating-point summation order;
     * the layers see P + n C rows for n samples of a P-token prompt in a pass instead of n (P + C), and a shared key's
     * gradient is summed over the samples before the weight GEMMs. docs/trainer.md.
     */
    public boolean trainPrefixSharing = true;
    /**
     * How rollouts are grouped into passes through the model (grpo4j): tokens (the default) fills each pass with
     * consecutive rollouts up to the memory the plan gives a batch of the longest sequences (the data set's longest
     * prompt + response_length): a training pass up to per_device_train_batch_size of them, a no-grad log-prob pass up
     * to local_rollout_forward_batch_size; so rollouts shorter than that share passes (fewer, larger passes; more of a
     * prompt's samples in one pass; at world > 1 fewer ZeRO-2 reductions, every rank taking part in as many as the
     * rank with the most). batch_size runs exactly those counts a pass (the reference's micro-batches). Every token
     * keeps its reference micro-batch's loss weight either way; the log-probs do not depend on the chunks (bit for
     * bit on the CPU, up to the GEMMs' summation order on CUDA).
     * docs/trainer.md.
     */
    public String passPacking = "tokens";
    /**
     * At world_size > 1 with pass_packing tokens (grpo4j): tokens (the default) moves pieces of prompt groups (up to a
     * quarter of a group each) of each mini-batch from the ranks with the most tokens to those with the fewest before
     * the training passes (and before each no-grad log-prob pass), their outputs returned; each token keeps its own
     * rank's loss weight, so only the gradient's summation order changes. none runs each rank's own rollouts (the
     * reference). docs/trainer.md.
     */
    public String rankBalancing = "tokens";
    /** Gradient bucket for the ZeRO-2 reduction, in elements (DeepSpeed's reduce_bucket_size; grpo4j). */
    public long reduceBucketSize = 200_000_000L;
    /**
     * A collective not finished within this many seconds aborts the NCCL communicators and stops every rank; it also
     * bounds an NCCL communicator's formation, and an in-process CPU rank's wait for the others (grpo4j).
     */
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
        /** No warm-up: 0 steps of 32 rows at learning rate 1e-3. */
        public SftWarmup() {}

        /** Warm-up steps (0: none). */
        public int steps = 0;
        /** Rows per warm-up step. */
        public int batchSize = 32;
        /** Warm-up learning rate. */
        public double learningRate = 1e-3;
    }

    /**
     * The default configuration: the Tulu 3.1 RLVR command's values (grpo-reference.md section 0) for every key but
     * {@code model_name_or_path} and {@code dataset_mixer_list}, which must be set, and the per-rank batch keys, which
     * are the single-node variant's (local_rollout_batch_size 8, local_mini_batch_size 64) at world_size 1.
     */
    public GrpoConfig() {}

    /**
     * A deep copy (every list and the warm-up settings copied), {@link #baseDir} included. Not validated.
     *
     * @return the copy
     */
    public GrpoConfig copy() {
        GrpoConfig c = JSON.convertValue(JSON.valueToTree(this), GrpoConfig.class);
        c.baseDir = baseDir;
        return c;
    }

    /** The config file's directory: relative dataset paths are looked up there first, then in the working directory. */
    @JsonIgnore public java.nio.file.Path baseDir;

    private static final ObjectMapper JSON = JsonMapper.builder()
            .propertyNamingStrategy(PropertyNamingStrategies.SNAKE_CASE)
            .enable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
            .enable(DeserializationFeature.FAIL_ON_NULL_FOR_PRIMITIVES)
            .disable(MapperFeature.ALLOW_COERCION_OF_SCALARS)
            .disable(DeserializationFeature.ACCEPT_FLOAT_AS_INT) // num_training_steps=2.5 is an error, not 2
            // content after the value is refused (a config file with a second object pasted after it, --set
            // num_training_steps="20 00" read as 20), and so is a key given twice (the last one silently won)
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
            .enable(com.fasterxml.jackson.core.StreamReadFeature.STRICT_DUPLICATE_DETECTION)
            .build();

    /**
     * Reads a JSON config file (snake_case keys, e.g. examples/tiny-arith.json) and validates it.
     *
     * @param file the config file
     * @return the config, with {@link #baseDir} set to the file's directory
     * @throws NullPointerException     if {@code file} is null
     * @throws java.nio.file.NoSuchFileException if the file does not exist
     * @throws IOException              if it cannot be read
     * @throws IllegalArgumentException if it is not valid JSON, has an unknown key or a wrong type, or fails
     *                                  {@link #validate} (the message starts with the file)
     */
    public static GrpoConfig load(Path file) throws IOException { return load(file, List.of()); }

    /**
     * Reads a JSON config file, applies overrides and validates the result.
     *
     * @param file      the config file
     * @param overrides "key=value" strings as {@code --set} takes them: the value is parsed as JSON, else taken as a
     *                  string; nested keys with dots ({@code sft_warmup.steps=0})
     * @return the config, with {@link #baseDir} set to the file's directory
     * @throws NullPointerException     if {@code file}, {@code overrides} or an override is null
     * @throws java.nio.file.NoSuchFileException if the file does not exist
     * @throws IOException              if it cannot be read
     * @throws IllegalArgumentException if it is not valid JSON, an override has no '=', a key is unknown or has the
     *                                  wrong type, or the result fails {@link #validate}
     */
    public static GrpoConfig load(Path file, List<String> overrides) throws IOException {
        Objects.requireNonNull(file, "file");
        Objects.requireNonNull(overrides, "overrides");
        for (int i = 0; i < overrides.size(); i++) Objects.requireNonNull(overrides.get(i), "overrides[" + i + "]");
        if (java.nio.file.Files.isDirectory(file)) throw new IllegalArgumentException(file + ": is a directory (the config is a JSON file)");
        if (!java.nio.file.Files.isRegularFile(file)) throw new java.nio.file.NoSuchFileException(file.toString(), null, "config file");
        JsonNode root;
        try {
            root = JSON.readTree(file.toFile());
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IllegalArgumentException(file + ": not valid JSON: " + org.grpo4j.internal.util.JsonErrors.describe(e));
        } // (an IOException of the read itself is the caller's IOException, as documented)
        if (root == null || root.isMissingNode()) throw new IllegalArgumentException(file + ": empty (expected a JSON object)");
        if (!root.isObject()) throw new IllegalArgumentException(file + ": the config must be a JSON object, got " + root.getNodeType().toString().toLowerCase(java.util.Locale.ROOT));
        GrpoConfig c = fromJson((ObjectNode) root, overrides, file.toString());
        c.baseDir = file.toAbsolutePath().getParent();
        return c;
    }

    /**
     * A copy of this config with overrides applied as {@code --set} takes them, validated; {@link #baseDir} kept.
     * What a resumed run may change is decided by the trainer (docs/trainer.md, "Changing a resumed run").
     *
     * @param overrides "key=value" strings (see {@link #load(Path, List)})
     * @param where     what to call the result in errors
     * @return the new config
     * @throws NullPointerException     if {@code overrides} or an override is null
     * @throws IllegalArgumentException if an override has no '=', a key is unknown or has the wrong type, or the result
     *                                  fails {@link #validate}
     */
    public GrpoConfig withOverrides(List<String> overrides, String where) {
        Objects.requireNonNull(overrides, "overrides");
        for (int i = 0; i < overrides.size(); i++) Objects.requireNonNull(overrides.get(i), "overrides[" + i + "]");
        GrpoConfig c = fromJson(JSON.valueToTree(this), overrides, where);
        c.baseDir = baseDir;
        return c;
    }

    private static GrpoConfig fromJson(ObjectNode root, List<String> overrides, String where) {
        ObjectNode tree = root.deepCopy();
        Map<String, String> given = new LinkedHashMap<>(); // key path -> its --set, to name it rather than the file in errors
        for (String o : overrides == null ? List.<String>of() : overrides) {
            int eq = o.indexOf('=');
            if (eq <= 0) throw new IllegalArgumentException("--set expects key=value, got \"" + o + "\"");
            String key = o.substring(0, eq).trim(), val = o.substring(eq + 1);
            given.put(key, "--set " + o);
            JsonNode v;
            try {
                v = JSON.readTree(val);
                if (v == null || v.isMissingNode()) v = JSON.getNodeFactory().textNode(val);
            } catch (IOException e) {
                v = JSON.getNodeFactory().textNode(val);
            }
            String[] path = key.split("\\.", -1);
            for (String part : path)
                if (part.isBlank()) throw new IllegalArgumentException("--set \"" + o + "\": the key \"" + key + "\" has an empty part (expected key or a.b)");
            ObjectNode at = tree;
            for (int i = 0; i < path.length - 1; i++) {
                JsonNode child = at.get(path[i]);
                if (child == null || !child.isObject()) child = at.putObject(path[i]);
                at = (ObjectNode) child;
            }
            at.set(path[path.length - 1], v);
        }
        java.util.function.Function<String, String> by = path -> setOf(given, path, where);
        try {
            ReferenceOptions.rejectUnsupported(tree, where);
        } catch (IllegalArgumentException e) {
            throw renamed(e, where, given);
        }
        GrpoConfig c;
        try {
            c = JSON.treeToValue(tree, GrpoConfig.class);
        } catch (UnrecognizedPropertyException e) {
            throw new IllegalArgumentException(by.apply(pathOf(e)) + ": unknown key \"" + e.getPropertyName() + "\""
                    + (e.getPath().size() > 1 ? " in " + e.getPath().get(0).getFieldName() : ""));
        } catch (InvalidFormatException e) {
            throw new IllegalArgumentException(by.apply(pathOf(e)) + ": key \"" + pathOf(e) + "\" has the wrong type: " + e.getValue()
                    + " is not " + typeName(e.getTargetType(), pathOf(e)));
        } catch (MismatchedInputException e) {
            JsonNode value = valueAt(tree, e);
            throw new IllegalArgumentException(by.apply(pathOf(e)) + ": key \"" + pathOf(e) + "\" has the wrong type"
                    + (value == null ? "" : ": " + value) + " (expected " + typeName(e.getTargetType(), pathOf(e)) + ")");
        } catch (com.fasterxml.jackson.databind.JsonMappingException e) {
            // e.g. a number past an int's range ("Numeric value (99999999999) out of range of int"): name the key
            throw new IllegalArgumentException(by.apply(pathOf(e)) + ": key \"" + pathOf(e) + "\": "
                    + e.getOriginalMessage().lines().findFirst().orElse(""));
        } catch (IOException e) {
            throw new IllegalArgumentException(where + ": " + e.getMessage().lines().findFirst().orElse(""));
        }
        try {
            c.validate(where);
        } catch (IllegalArgumentException e) {
            throw renamed(e, where, given);
        }
        return c;
    }

    /**
     * The --set that gave the value at {@code path} ("a.b", "list[1]"): the longest --set key that is the path or leads
     * to it, or one under it (an unknown key's path ends at its unknown part); {@code where} (the file) otherwise.
     */
    private static String setOf(Map<String, String> given, String path, String where) {
        String best = null;
        for (String k : given.keySet())
            if ((path.equals(k) || path.startsWith(k + ".") || path.startsWith(k + "[") || k.startsWith(path + "."))
                    && (best == null || k.length() > best.length())) best = k;
        return best == null ? where : given.get(best);
    }

    /**
     * {@code e} ("WHERE: KEY ..." from validate or the reference options) named by the --set of KEY when one gave it:
     * the file's value was fine.
     */
    private static IllegalArgumentException renamed(IllegalArgumentException e, String where, Map<String, String> given) {
        String m = e.getMessage(), prefix = where + ": ";
        if (m == null || !m.startsWith(prefix)) return e;
        String rest = m.substring(prefix.length());
        java.util.regex.Matcher k = java.util.regex.Pattern.compile("^\"?([a-z_0-9.]+)\"?[ :]").matcher(rest);
        if (!k.find()) return e;
        String set = setOf(given, k.group(1), null);
        return set == null ? e : new IllegalArgumentException(set + ": " + rest, e);
    }

    /** The value a mapping error's path points at in the tree, or null where the path does not lead to one. */
    private static JsonNode valueAt(JsonNode tree, com.fasterxml.jackson.databind.JsonMappingException e) {
        JsonNode at = tree;
        for (com.fasterxml.jackson.databind.JsonMappingException.Reference r : e.getPath()) {
            if (at == null) return null;
            at = r.getFieldName() != null ? at.get(r.getFieldName()) : r.getIndex() >= 0 ? at.get(r.getIndex()) : null;
        }
        return at == tree ? null : at;
    }

    private static String typeName(Class<?> t, String key) {
        if (t == null) return "another type";
        if (t == int.class || t == Integer.class || t == long.class || t == Long.class) return "an integer";
        if (t == double.class || t == Double.class || t == float.class) return "a number";
        if (t == boolean.class || t == Boolean.class) return "true or false";
        if (t == String.class) return "a string";
        if (List.class.isAssignableFrom(t)) return key.equals("stop_token_ids") ? "a list of token ids" : "a list of strings";
        return "an object";
    }


    private static String pathOf(com.fasterxml.jackson.databind.JsonMappingException e) {
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

    /**
     * Checks every value and the batch arithmetic.
     *
     * @param where what to call the config in errors (its file, or "config")
     * @throws IllegalArgumentException naming the first key that is wrong, its value and what is allowed
     */
    public void validate(String where) {
        require(modelNameOrPath != null && !modelNameOrPath.isBlank(), where, "model_name_or_path is required");
        Object[][] objects = {{"chat_template_name", chatTemplateName}, {"dataset_mixer_list", datasetMixerList},
            {"dataset_mixer_eval_list", datasetMixerEvalList}, {"lr_scheduler_type", lrSchedulerType}, {"kl_estimator", klEstimator},
            {"loss_aggregation", lossAggregation}, {"advantage_normalization", advantageNormalization}, {"stop_token", stopToken}, {"verifier_compat", verifierCompat},
            {"output_dir", outputDir}, {"backend", backend}, {"sft_warmup", sftWarmup}, {"precision", precision},
            {"lm_head_grad", lmHeadGrad}, {"attention_dq", attentionDq}, {"attention_kernels", attentionKernels}, {"old_logprobs", oldLogprobs}, {"pass_packing", passPacking},
            {"kv_admission", kvAdmission}, {"rank_balancing", rankBalancing}, {"reference_sharding", referenceSharding},
            {"dataset_mixer_list_splits", datasetMixerListSplits}, {"dataset_mixer_eval_list_splits", datasetMixerEvalListSplits},
            {"stop_strings", stopStrings}, {"notes", notes}};
        for (Object[] o : objects) require(o[1] != null, where, o[0] + " must not be null");
        for (Object[] o : new Object[][] {{"dataset_mixer_list", datasetMixerList}, {"dataset_mixer_eval_list", datasetMixerEvalList},
                {"dataset_mixer_list_splits", datasetMixerListSplits}, {"dataset_mixer_eval_list_splits", datasetMixerEvalListSplits},
                {"stop_strings", stopStrings}})
            require(((List<?>) o[1]).stream().noneMatch(java.util.Objects::isNull), where, o[0] + " must not hold null");
        if (stopTokenIds != null)
            for (Integer id : stopTokenIds) require(id != null && id >= 0, where, "stop_token_ids entries must be token ids >= 0, got " + stopTokenIds);
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
            org.grpo4j.internal.backend.KlEstimator.parse(klEstimator);
            LossAggregation.parse(lossAggregation);
            org.grpo4j.internal.train.Advantages.isStandard(advantageNormalization);
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
        require(verifierTimeout > 0 && verifierTimeout <= org.grpo4j.reward.Rewards.MAX_TIMEOUT_SECONDS, where,
                "verifier_timeout must be in (0, " + (long) org.grpo4j.reward.Rewards.MAX_TIMEOUT_SECONDS + "] seconds, got " + verifierTimeout);
        require(numEvals >= 0 && saveFreq >= 0, where, "num_evals and save_freq must be >= 0");
        require(keepLastNCheckpoints == -1 || keepLastNCheckpoints >= 1, where,
                "keep_last_n_checkpoints must be -1 (keep every checkpoint) or >= 1, got " + keepLastNCheckpoints);
        require("delete".equals(olderCheckpoints) || "model".equals(olderCheckpoints), where,
                "older_checkpoints must be delete or model, got " + (olderCheckpoints == null ? "null" : "\"" + olderCheckpoints + "\""));
        require(maxGradNorm > 0, where, "max_grad_norm must be > 0 (Infinity: no clipping), got " + maxGradNorm);
        require(kvCacheMib >= 0, where, "kv_cache_mib must be >= 0 (0: sized from kv_cache_fraction), got " + kvCacheMib);
        require(kvCacheFraction > 0 && kvCacheFraction <= 1, where, "kv_cache_fraction must be in (0, 1], got " + kvCacheFraction);
        require(precision != null && org.grpo4j.internal.train.Precision.SPECS.contains(precision), where, "precision must be auto, fp32 or bf16, got " + precision);
        require(List.of("bf16", "split").contains(lmHeadGrad), where, "lm_head_grad must be bf16 or split, got " + lmHeadGrad);
        require(List.of("pass", "fixed", "atomic").contains(attentionDq), where, "attention_dq must be pass, fixed or atomic, got " + attentionDq);
        require(List.of("mma", "wgmma").contains(attentionKernels), where, "attention_kernels must be mma or wgmma, got " + attentionKernels);
        require(List.of("auto", "recompute").contains(oldLogprobs), where, "old_logprobs must be auto or recompute, got " + oldLogprobs);
        require(List.of("tokens", "batch_size").contains(passPacking), where, "pass_packing must be tokens or batch_size, got " + passPacking);
        require(List.of("tokens", "none").contains(rankBalancing), where, "rank_balancing must be tokens or none, got " + rankBalancing);
        require(List.of("on_demand", "worst_case").contains(kvAdmission), where, "kv_admission must be on_demand or worst_case, got " + kvAdmission);
        require(List.of("auto", "layers", "none").contains(referenceSharding), where, "reference_sharding must be auto, layers or none, got " + referenceSharding);
        require(recomputeLayers != null && (recomputeLayers.equals("auto") || recomputeLayers.equals("all") || recomputeLayers.matches("\\d{1,9}")), where,
                "recompute_layers must be auto, all or a number of layers (0 or more), got " + recomputeLayers);
        require(gradientCheckpointing || recomputeLayers.equals("auto") || recomputeLayers.matches("0+"), where,
                "recompute_layers " + recomputeLayers + " needs gradient_checkpointing true (without it no layer is recomputed)");
        require(lmHeadScratchMib >= 0 && lmHeadScratchMib <= org.grpo4j.internal.backend.CudaBackend.LM_ROWS_MAX_MIB, where,
                "lm_head_scratch_mib must be in [0, " + org.grpo4j.internal.backend.CudaBackend.LM_ROWS_MAX_MIB + "], got " + lmHeadScratchMib);
        require(reduceBucketSize >= 1024, where, "reduce_bucket_size must be >= 1024 elements, got " + reduceBucketSize);
        require(ncclTimeoutS >= 1, where, "nccl_timeout_s must be >= 1, got " + ncclTimeoutS);
        require(maxConsecutiveNonfinite >= 1, where, "max_consecutive_nonfinite must be >= 1");
        require(numTrainingSteps > 0 || totalEpisodes >= (long) rollouts * worldSize, where,
                "total_episodes " + totalEpisodes + " is less than one step of " + rollouts * worldSize + " completions");
        require(sftWarmup.steps >= 0 && sftWarmup.batchSize >= 1 && sftWarmup.learningRate >= 0, where, "sft_warmup needs steps >= 0, batch_size >= 1, learning_rate >= 0, got " + sftWarmup.steps + ", " + sftWarmup.batchSize + ", " + sftWarmup.learningRate);
        ReferenceOptions.validate(this, where);
    }

    /**
     * Prompts per step over every rank.
     *
     * @return local_rollout_batch_size x world_size
     */
    @JsonIgnore public int rolloutBatchSize() { return localRolloutBatchSize * worldSize; }

    /**
     * Responses per step over every rank.
     *
     * @return prompts per step x number_samples_per_prompt
     */
    @JsonIgnore public int completionsPerStep() { return rolloutBatchSize() * numberSamplesPerPrompt; }

    /**
     * Responses per step on one rank.
     *
     * @return local_rollout_batch_size x number_samples_per_prompt
     */
    @JsonIgnore public int localCompletions() { return localRolloutBatchSize * numberSamplesPerPrompt; }

    /**
     * Responses per optimizer step over every rank.
     *
     * @return local_mini_batch_size x world_size
     */
    @JsonIgnore public int miniBatchSize() { return localMiniBatchSize * worldSize; }

    /**
     * Mini-batches per epoch.
     *
     * @return local responses / local_mini_batch_size
     */
    @JsonIgnore public int numMiniBatches() { return localCompletions() / localMiniBatchSize; }

    /**
     * Optimizer steps per training step.
     *
     * @return num_epochs x mini-batches
     */
    @JsonIgnore public int optimizerStepsPerTrainingStep() { return numEpochs * numMiniBatches(); }

    /**
     * Forward/backward passes per optimizer step.
     *
     * @return local_mini_batch_size / per_device_train_batch_size
     */
    @JsonIgnore public int gradientAccumulationSteps() { return localMiniBatchSize / perDeviceTrainBatchSize; }

    /**
     * The run's training steps.
     *
     * @return num_training_steps when set, else total_episodes // responses per step
     */
    @JsonIgnore public int trainingSteps() { return numTrainingSteps > 0 ? numTrainingSteps : (int) Math.min(Integer.MAX_VALUE, totalEpisodes / completionsPerStep()); }

    /**
     * Steps between eval sample rounds.
     *
     * @return max(1, training steps // num_evals), or {@link Integer#MAX_VALUE} without evals
     */
    @JsonIgnore public int evalFreq() { return numEvals == 0 ? Integer.MAX_VALUE : Math.max(1, trainingSteps() / numEvals); }

    /**
     * lm_head_scratch_mib in bytes: the bound of the CUDA LM head's row blocks in the trainer's calls.
     *
     * @return lmHeadScratchMib x 2^20
     */
    @JsonIgnore public long lmHeadScratchBytes() { return lmHeadScratchMib << 20; }

    /**
     * The upper clip epsilon.
     *
     * @return cliprange_high when set, else cliprange
     */
    @JsonIgnore public double epsHigh() { return cliprangeHigh != null ? cliprangeHigh : cliprange; }

    /**
     * The verifier semantics.
     *
     * @return verifier_compat parsed
     * @throws IllegalArgumentException if verifier_compat is not "fixed" (or "", the same), or "open-instruct-3f37c29" (trimmed, any case)
     */
    @JsonIgnore public Compat compat() { return Compat.parse(verifierCompat); }

    /**
     * The derived quantities of grpo-reference.md section 0, as {@code tools/grpo4j train --dry-run} prints them.
     *
     * @return name to value (with the formula), in print order
     */
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
        LrSchedule lr = LrSchedule.of(this);
        m.put("lr schedule", lr.type() + ", " + lr.base() + ", warm-up " + lr.warmup() + ", horizon " + lr.total() + " optimizer steps"
                + (ReferenceOptions.lrCompat(this) ? " (lr_scheduler_compat " + ReferenceOptions.OPEN_INSTRUCT_3F37C29 + ")" : ""));
        return m;
    }

    /**
     * The config as JSON, snake_case keys (what is saved next to checkpoints).
     *
     * @return pretty-printed JSON
     */
    public String toJson() {
        try {
            return JSON.writerWithDefaultPrettyPrinter().writeValueAsString(this);
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }

    /**
     * Parses a config from JSON text and validates it.
     *
     * @param json a JSON object with snake_case keys
     * @return the config
     * @throws NullPointerException     if {@code json} is null
     * @throws IllegalArgumentException if it is not valid JSON, has an unknown key or a wrong type, or fails
     *                                  {@link #validate}
     * @throws IOException              never in practice (kept for callers that read files)
     */
    public static GrpoConfig fromJsonString(String json) throws IOException { return fromJsonString(json, "config"); }

    /**
     * Parses a config from JSON text and validates it; {@code where} (e.g. its file) starts every error message.
     *
     * @param json  a JSON object with snake_case keys
     * @param where what to call it in errors
     * @return the config
     * @throws NullPointerException     if {@code json} is null
     * @throws IllegalArgumentException if it is not valid JSON, has an unknown key or a wrong type, or fails
     *                                  {@link #validate}
     * @throws IOException              never in practice (kept for callers that read files)
     */
    public static GrpoConfig fromJsonString(String json, String where) throws IOException {
        Objects.requireNonNull(json, "json");
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
