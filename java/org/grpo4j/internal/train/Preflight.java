package org.grpo4j.internal.train;

import org.grpo4j.train.GrpoConfig;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.CpuBackend;
import org.grpo4j.internal.backend.Memory;
import org.grpo4j.internal.data.DatasetMixer;
import org.grpo4j.internal.data.PromptDataset;
import org.grpo4j.reward.RlvrRow;
import org.grpo4j.internal.model.LlamaConfig;
import org.grpo4j.internal.model.MemoryEstimate;
import org.grpo4j.reward.Rewards;
import org.grpo4j.ChatMessage;
import org.grpo4j.internal.tokenizer.ChatTemplate;
import org.grpo4j.internal.tokenizer.Tokenizer;

/**
 * Every check of a training config that does not need the weights, run by the trainer before it loads them and by
 * {@code train --dry-run}: the model's config.json and tokenizer, the chat template, the datasets (rows, roles,
 * prompt lengths, a verifier for every dataset name), lengths against the model's context, and memory against what
 * the backend has free. What it loads (tokenizer, tokenized datasets) is handed to the trainer.
 */
public final class Preflight implements AutoCloseable {
    private final GrpoConfig cfg;
    private final Path tokenizerDir;
    private final Tokenizer tok;
    private final LlamaConfig model;
    private final ChatTemplate template;
    private final PromptDataset train, eval;
    private final int longestPrompt, sftRows;
    private final java.util.Set<Integer> stopIds;
    private final Map<String, String> summary = new LinkedHashMap<>();

    private Preflight(GrpoConfig cfg, Path tokenizerDir, Tokenizer tok, LlamaConfig model, ChatTemplate template, PromptDataset train,
                      PromptDataset eval, int longestPrompt, int sftRows, java.util.Set<Integer> stopIds) {
        this.stopIds = java.util.Collections.unmodifiableSet(new java.util.LinkedHashSet<>(stopIds));
        this.cfg = cfg;
        this.tokenizerDir = tokenizerDir;
        this.tok = tok;
        this.model = model;
        this.template = template;
        this.train = train;
        this.eval = eval;
        this.longestPrompt = longestPrompt;
        this.sftRows = sftRows;
    }

    /**
     * Runs the checks of a validated config. {@code rewards} (may be null: the built-in verifiers) must have a
     * verifier for every dataset name in the data; {@code be} (may be null: no memory check) is where the run
     * would allocate.
     */
    public static Preflight check(GrpoConfig cfg, Backend be, Rewards rewards) throws IOException {
        return check(cfg, be, rewards, be == null ? org.grpo4j.internal.backend.DType.FP32 : Precision.resolve(cfg.precision, be), 1);
    }

    /**
     * {@link #check(GrpoConfig, Backend, Rewards)} for a run in {@code dtype} whose {@code sharers} ranks share
     * {@code be}'s memory (in-process CPU ranks share the Java heap).
     */
    public static Preflight check(GrpoConfig cfg, Backend be, Rewards rewards, org.grpo4j.internal.backend.DType dtype, int sharers) throws IOException {
        Path tokDir;
        LlamaConfig lc;
        Tokenizer tok;
        if (cfg.modelNameOrPath.startsWith("init:")) {
            tokDir = Tokenizer.extractBundledTiny();
            tok = Tokenizer.load(tokDir);
            lc = LlamaConfig.tiny(tok.vocabSize(), tok.bosId(), tok.eosId());
        } else {
            Path dir = Path.of(cfg.modelNameOrPath);
            if (Files.exists(dir) && !Files.isDirectory(dir))
                throw new IllegalArgumentException("model_name_or_path " + dir + ": is a file; it names a model directory (config.json, tokenizer, *.safetensors)");
            if (!Files.isDirectory(dir))
                throw new NoSuchFileException(dir.toString(), null, "model_name_or_path: no such model directory"
                        + (!dir.isAbsolute() && cfg.modelNameOrPath.matches("[\\w.-]+/[\\w.-]+") ? "; grpo4j never downloads: fetch it first, e.g. huggingface-cli download "
                        + cfg.modelNameOrPath + " --local-dir DIR, and set model_name_or_path to DIR" : ""));
            lc = LlamaConfig.read(dir);
            tokDir = dir;
            tok = Tokenizer.load(dir);
        }
        try {
            return check(cfg, be, rewards, tokDir, tok, lc, dtype, sharers);
        } catch (IOException | RuntimeException e) {
            tok.close();
            throw e;
        }
    }

    /**
     * Why a model of {@code parameters} cannot train at {@code world} ranks, or null: the CPU backend holds at most
     * 2^31 - 9 elements per tensor (its flat buffers are Java arrays); on a GPU the flat buffers have no such limit, but
     * each rank's optimizer slice is one tensor, so the world size must split the model into slices of at most that.
     */
    public static String tooLarge(long parameters, int world, boolean cpu) {
        long max = org.grpo4j.internal.model.LlamaWeights.MAX_ELEMENTS;
        if (parameters <= max) return null;
        if (cpu)
            return String.format(java.util.Locale.ROOT, "%,d parameters: the CPU backend holds at most 2^31 - 9 elements per tensor and keeps each"
                    + " weight set as one; a model this size trains on GPUs (backend cuda)", parameters);
        if (new org.grpo4j.internal.model.ShardLayout(parameters, world, 1 << 20).sliceElements() <= max) return null;
        int need = world;
        while (new org.grpo4j.internal.model.ShardLayout(parameters, need, 1 << 20).sliceElements() > max) need++;
        return String.format(java.util.Locale.ROOT, "%,d parameters over world_size %d: each rank's ZeRO-2 slice (fp32 master weights, AdamW"
                + " moments) is one tensor of at most 2^31 - 9 elements; use world_size >= %d", parameters, world, need);
    }

    private static Preflight check(GrpoConfig cfg, Backend be, Rewards rewards, Path tokDir, Tokenizer tok, LlamaConfig lc,
                                   org.grpo4j.internal.backend.DType dtype, int sharers) throws IOException {
        String modelName = cfg.modelNameOrPath;
        if (tok.vocabSize() > lc.vocabSize())
            throw new IllegalArgumentException(modelName + ": the tokenizer has " + tok.vocabSize() + " ids but config.json's vocab_size is " + lc.vocabSize());
        if (tok.eosId() < 0) throw new IllegalArgumentException(modelName + ": the tokenizer has no eos_token; stop_token eos needs one");
        long parameters = new org.grpo4j.internal.model.ParameterLayout(lc).totalElements();
        String big = tooLarge(parameters, cfg.worldSize, be instanceof org.grpo4j.internal.backend.CpuBackend);
        if (big != null) throw new IllegalArgumentException(modelName + ": " + big);
        ChatTemplate template;
        try {
            template = ChatTemplate.named(cfg.chatTemplateName, tok);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("chat_template_name: " + e.getMessage());
        }
        PromptDataset train = prompts(cfg.datasetMixerList, cfg.datasetMixerListSplits, "dataset_mixer_list", cfg, tok, template);
        PromptDataset eval = cfg.datasetMixerEvalList.isEmpty() ? null
                : prompts(cfg.datasetMixerEvalList, cfg.datasetMixerEvalListSplits, "dataset_mixer_eval_list", cfg, tok, template);
        if (train.size() < cfg.rolloutBatchSize())
            throw new IllegalArgumentException("dataset_mixer_list: " + train.size() + " prompts fit max_prompt_token_length " + cfg.maxPromptTokenLength
                    + " and max_token_length " + cfg.maxTokenLength
                    + (train.dropped() > 0 ? " (" + train.droppedPrompt() + " dropped for a longer prompt, " + train.droppedChat() + " for a longer chat)" : "")
                    + ", fewer than one step's " + cfg.rolloutBatchSize() + " prompts (local_rollout_batch_size " + cfg.localRolloutBatchSize + " x world_size "
                    + cfg.worldSize + ")" + (cfg.worldSize > 1 ? ": every rank samples local_rollout_batch_size whole prompts (a prompt's group never splits"
                    + " across ranks); use fewer ranks, a smaller local_rollout_batch_size or more data" : ""));

        Rewards verifiers = rewards != null ? rewards : null;
        try (Rewards builtIn = rewards == null ? new Rewards() : null) {
            if (verifiers == null) verifiers = builtIn;
            requireVerifiers(train, "dataset_mixer_list", verifiers);
            if (eval != null) requireVerifiers(eval, "dataset_mixer_eval_list", verifiers);
        }

        int longest = Math.max(longest(train), eval == null ? 0 : longest(eval));
        if ((long) longest + cfg.responseLength > lc.maxPositionEmbeddings())
            throw new IllegalArgumentException("response_length " + cfg.responseLength + " + the longest prompt (" + longest + " tokens) = "
                    + (longest + cfg.responseLength) + " exceeds the model's max_position_embeddings " + lc.maxPositionEmbeddings()
                    + "; lower response_length or max_prompt_token_length");

        int sft = 0;
        if (cfg.sftWarmup.steps > 0) {
            for (int i = 0; i < train.size(); i++) {
                List<ChatMessage> ms = train.row(i).messages();
                if (ms.size() < 2 || !ms.get(ms.size() - 1).role().equals("assistant")) continue;
                sft++;
                int len = train.prompt(i).length + tok.encode(ms.get(ms.size() - 1).content()).length + 1;
                if (len > lc.maxPositionEmbeddings())
                    throw new IllegalArgumentException(train.row(i).source() + ": the sft_warmup sequence (prompt + answer + EOS) has " + len
                            + " tokens, more than the model's max_position_embeddings " + lc.maxPositionEmbeddings());
            }
            if (sft == 0)
                throw new IllegalArgumentException("sft_warmup.steps " + cfg.sftWarmup.steps + ": no training row ends with an assistant turn to imitate"
                        + " (set sft_warmup.steps=0 or add the reference answers)");
        }
        java.util.Set<Integer> stops = stopTokenIds(cfg, cfg.modelNameOrPath.startsWith("init:") ? null : tokDir, lc, tok);
        Preflight pf = new Preflight(cfg, tokDir, tok, lc, template, train, eval, longest, sft, stops);
        pf.checkMemory(be, dtype, sharers); // without a backend (launched ranks, a GPU config on a login node): the needs alone
        pf.summary.put("model", modelName + ": " + lc.numLayers() + " layers, hidden " + lc.hiddenSize() + ", vocab " + lc.vocabSize()
                + ", context " + lc.maxPositionEmbeddings());
        pf.summary.put("training prompts", train.size() + " (dropped: " + train.droppedPrompt() + " with prompt > " + cfg.maxPromptTokenLength
                + " tokens, " + train.droppedChat() + " with chat > " + cfg.maxTokenLength + " tokens), longest " + longest(train) + " tokens");
        if (eval != null) pf.summary.put("eval prompts", String.valueOf(eval.size()));
        if (cfg.sftWarmup.steps > 0) pf.summary.put("sft warm-up rows", String.valueOf(sft));
        String lastTurn = lastTurnNotAnswer(train);
        if (lastTurn != null) pf.warnings.add(lastTurn);
        pf.summary.put("stop token ids", pf.stopSummary(tok));
        String pad = padIsEos(tok);
        if (pad != null) pf.warnings.add(pad);
        return pf;
    }

    private static PromptDataset prompts(List<String> mixer, List<String> splits, String field, GrpoConfig cfg, Tokenizer tok,
                                         ChatTemplate template) throws IOException {
        List<RlvrRow> rows = DatasetMixer.load(mixer, splits, cfg.baseDir, field);
        PromptDataset d = new PromptDataset(rows, tok, template, cfg.maxPromptTokenLength, cfg.maxTokenLength);
        if (d.size() == 0) {
            int shortest = Integer.MAX_VALUE, longest = 0;
            for (RlvrRow r : rows) {
                int n = tok.encode(template.render(r.promptMessages(), true, tok)).length;
                shortest = Math.min(shortest, n);
                longest = Math.max(longest, n);
            }
            List<String> files = new java.util.ArrayList<>();
            for (int i = 0; i < mixer.size(); i += 2) files.add(mixer.get(i));
            String why = d.droppedChat() == 0 ? "all " + rows.size() + " prompts are longer than max_prompt_token_length " + cfg.maxPromptTokenLength
                    + " (the shortest has " + shortest + " tokens, the longest " + longest + ")"
                    : "all " + rows.size() + " rows are dropped: " + d.droppedPrompt() + " for a prompt longer than max_prompt_token_length "
                    + cfg.maxPromptTokenLength + ", " + d.droppedChat() + " for a whole chat (prompt and answer) longer than max_token_length "
                    + cfg.maxTokenLength + " (prompts of " + shortest + " to " + longest + " tokens)";
            throw new IllegalArgumentException(field + ": " + (rows.isEmpty() ? "the datasets have no rows (" + String.join(", ", files) + ")" : why));
        }
        return d;
    }

    /** Refuses, naming the first row's file and line, rows whose dataset has no verifier among {@code rewards}. */
    public static void requireVerifiers(PromptDataset d, String field, Rewards rewards) {
        Map<String, String> unknown = new LinkedHashMap<>();
        for (int i = 0; i < d.size(); i++) {
            RlvrRow r = d.row(i);
            if (!rewards.handles(r.dataset())) unknown.putIfAbsent(r.dataset(), r.source());
        }
        if (unknown.isEmpty()) return;
        var first = unknown.entrySet().iterator().next();
        throw new IllegalArgumentException(first.getValue() + ": dataset \"" + first.getKey() + "\" has no verifier"
                + (unknown.size() > 1 ? " (nor do " + String.join(", ", new ArrayList<>(unknown.keySet()).subList(1, unknown.size())) + ")" : "")
                + "; the row's \"dataset\" field picks the verifier, one of " + String.join(", ", rewards.names())
                + " (register others with Rewards.register in the Java API)");
    }

    private static int longest(PromptDataset d) {
        int m = 0;
        for (int i = 0; i < d.size(); i++) m = Math.max(m, d.prompt(i).length);
        return m;
    }

    /**
     * One rank's allocations ({@link MemoryEstimate}: model states in the run's precision and ZeRO-2 layout) plus the
     * larger of the activations of the largest training or log-prob pass and generation's working memory with the
     * KV cache (kv_cache_mib, or the one-sequence minimum when the pool is sized from kv_cache_fraction; the pool
     * and the activations are never live together), times the ranks sharing the memory, against what {@code be} has
     * free. A refusal says what fits and what to change.
     */
    /**
     * The bound of the LM head's row path in the trainer's calls: lm_head_scratch_mib, or 0 where the row path cannot
     * run (a bf16 run with lm_head_grad split keeps the chunk loops; the plan then counts their buffers).
     */
    static long lmRowsBytes(GrpoConfig cfg, org.grpo4j.internal.backend.DType dtype) {
        return dtype == org.grpo4j.internal.backend.DType.BF16 && cfg.lmHeadGrad.equals("split") ? 0 : cfg.lmHeadScratchBytes();
    }

    /**
     * Refuses, naming what to change, a run whose model states, activations or generation (with the smallest KV pool)
     * do not fit what {@code be} can still allocate ({@code sharers} ranks sharing it). Launched ranks (one JVM, a GPU
     * each) call it on their own device once it is open.
     */
    void checkMemory(Backend be, org.grpo4j.internal.backend.DType dtype, int sharers) {
        MemoryEstimate est = new MemoryEstimate(model, cfg.worldSize, dtype, cfg.reduceBucketSize,
                MemoryEstimate.shardsReference(cfg.referenceSharding, model, cfg.worldSize));
        double states = est.statesBytes(), update = est.updateBytes();
        long seq = (long) longestPrompt + cfg.responseLength;
        // the training passes at their fewest recomputed layers: a count the config gives, or every layer (auto keeps
        // more only where the memory it finds once the states exist allows; without checkpointing none)
        int recomputed = recomputedAtMost();
        // a training pass beside the update phase's buffers (the gradients, the optimizer's phase buffers), a no-grad pass without
        double acts = Math.max(RankState.largestPassBytes(cfg, est, model.numLayers(), recomputed, longestPrompt, lmRowsBytes(cfg, dtype)) + update,
                est.noGradActivationBytes(cfg.localRolloutForwardBatchSize * seq, (long) cfg.localRolloutForwardBatchSize * cfg.responseLength));
        int maxBatch = Math.max(1, cfg.localCompletions());
        double gen = est.generationBytes(maxBatch, RankState.prefillTokens(cfg, longestPrompt));
        long kvMin = ((seq + 15) / 16 + 1) * 16 * est.kvBytesPerToken();
        long pad = RankState.KV_BLOCK * est.kvBytesPerToken(); // the block the cache allocates beyond its pool (a decode graph's padded rows)
        long kv = (cfg.kvCacheMib > 0 ? (long) cfg.kvCacheMib << 20 : kvMin) + pad;
        double perRank = states + Math.max(acts, gen + kv), total = perRank * sharers;
        long free = be == null ? -1 : Memory.available(be);
        String where = be == null ? "" : Memory.describe(be);
        if (free >= 0 && total > free && be instanceof CpuBackend) {
            System.gc();
            free = Memory.available(be);
        }
        String per = sharers > 1 ? " per rank (" + sharers + " ranks share it)" : "";
        if (free >= 0 && total > free) {
            double room = free / (double) sharers - states - gen - pad;
            if (cfg.kvCacheMib > 0 && states + Math.max(acts, gen + kvMin + pad) <= free / (double) sharers)
                throw new IllegalArgumentException("kv_cache_mib " + cfg.kvCacheMib + " does not fit: the KV cache needs " + Memory.human(kv) + " next to "
                        + Memory.human(states) + " of model states and " + Memory.human(gen) + " of generation buffers" + per + ", but only " + Memory.human(free)
                        + " " + where + "; at most kv_cache_mib=" + ((long) room >> 20) + " fits (or kv_cache_mib=0 to size the pool from kv_cache_fraction)");
            throw new IllegalArgumentException("the run needs about " + Memory.human(total) + " (" + Memory.human(perRank) + per + ": model states "
                    + Memory.human(states) + " for " + String.format("%,d", est.parameters()) + " parameters in " + Precision.label(dtype) + " over " + cfg.worldSize
                    + " rank" + (cfg.worldSize == 1 ? "" : "s") + ", activations (the larger of a training pass with the update buffers and a no-grad pass) " + Memory.human(acts) + ", generation " + Memory.human(gen) + " + KV cache "
                    + Memory.human(kv) + "), but only " + Memory.human(free) + " " + where + "; to fit: fewer samples in flight (per_device_train_batch_size, "
                    + "local_rollout_forward_batch_size, local_rollout_batch_size x number_samples_per_prompt), " + (cfg.kvCacheMib > 0 ? "a smaller kv_cache_mib, " : "")
                    + "gradient_checkpointing true (recompute_layers auto or all), " + (dtype == org.grpo4j.internal.backend.DType.BF16 ? "" : "precision bf16, ")
                    + "or more GPUs (world_size: ZeRO-2 shards the optimizer state)");
        }
        // a pool sized from kv_cache_fraction: what the run will find once the states exist must give it one sequence
        // (the same check and message as the run's own, RankState.kvPoolBytes, which comes after the weights load and
        // any SFT warm-up)
        if (free >= 0 && cfg.kvCacheMib == 0) {
            try {
                RankState.kvPoolBytes(cfg, est, (long) (free - states * sharers), sharers, longestPrompt, maxBatch, where);
            } catch (IllegalArgumentException e) {
                if (!(be instanceof CpuBackend)) throw e;
                System.gc(); // the Java heap's free bytes count garbage until a collection: refuse only on what is really free
                RankState.kvPoolBytes(cfg, est, (long) (Memory.available(be) - states * sharers), sharers, longestPrompt, maxBatch, where);
            }
        }
        synchronized (summary) {
            summary.put("training passes", PassPacking.byTokens(cfg)
                    ? "as many rollouts as fit the activations of " + cfg.perDeviceTrainBatchSize + " x " + seq + " tokens (pass_packing tokens"
                            + (cfg.trainPrefixSharing ? "; a prompt's tokens once per pass, train_prefix_sharing" : "") + ")"
                    : cfg.perDeviceTrainBatchSize + " rollouts each (pass_packing batch_size"
                            + (cfg.trainPrefixSharing ? "; a prompt's tokens once per pass, train_prefix_sharing" : "") + ")");
            summary.put("gradient checkpointing", recomputeSummary(est, lmRowsBytes(cfg, dtype)));
            if (cfg.worldSize > 1)
                summary.put("rank balancing", RankBalance.on(cfg, cfg.worldSize)
                        ? "tokens (pieces of prompt groups move from the ranks with the most tokens to those with the fewest, for each log-prob"
                                + " pass and each mini-batch's training passes)"
                        : "none (each rank trains its own rollouts" + (cfg.rankBalancing.equals("tokens") ? ": passes of per_device_train_batch_size run in lockstep)" : ")"));
            if (cfg.worldSize > 1)
                summary.put("reference", est.referenceSharded()
                        ? "1/" + cfg.worldSize + " of every layer on each rank, gathered layer by layer in its passes (reference_sharding " + cfg.referenceSharding + ")"
                        : "a replica on every rank (reference_sharding " + cfg.referenceSharding + ")");
            summary.put("kv admission", cfg.kvAdmission.equals("on_demand")
                    ? "on_demand (samples take KV blocks as they fill them; the youngest are preempted and resume when the pool runs out)"
                    : "worst_case (a sample starts only with blocks for its prompt + " + cfg.responseLength + " tokens reserved)");
            summary.put("memory", "about " + Memory.human(total) + " (model states " + Memory.human(states) + per + ", activations (the larger of a training pass with the update buffers and a no-grad pass) " + Memory.human(acts)
                    + ", generation " + Memory.human(gen) + " + KV cache " + (cfg.kvCacheMib > 0 ? Memory.human(kv) : "from kv_cache_fraction " + cfg.kvCacheFraction
                    + ", at least " + Memory.human(kvMin)) + ")" + (free >= 0 ? "; " + Memory.human(free) + " " + where : ""));
        }
    }

    /**
     * The fewest layers a training pass recomputes as the config says: none without gradient_checkpointing, the count
     * it gives, all for all and auto (auto's own choice comes later, from the free memory). A count above the model's
     * layers is refused.
     */
    private int recomputedAtMost() {
        int layers = model.numLayers();
        if (!cfg.gradientCheckpointing) return 0;
        if (cfg.recomputeLayers.equals("auto") || cfg.recomputeLayers.equals("all")) return layers;
        long n = Long.parseLong(cfg.recomputeLayers);
        if (n > layers)
            throw new IllegalArgumentException("recompute_layers " + n + " is more than the " + layers + " layers of model_name_or_path " + cfg.modelNameOrPath
                    + " (auto, all or 0 to " + layers + ")");
        return (int) n;
    }

    /** The dry run's line on recompute_layers: what it decides, and a training pass's activations at either end. */
    private String recomputeSummary(MemoryEstimate est, long lmRows) {
        if (!cfg.gradientCheckpointing) return "off (every layer keeps its activations)";
        int layers = model.numLayers();
        String ends = "a training pass's activations " + Memory.human(RankState.largestPassBytes(cfg, est, layers, layers, longestPrompt, lmRows))
                + " with all " + layers + " layers recomputed, " + Memory.human(RankState.largestPassBytes(cfg, est, layers, 0, longestPrompt, lmRows)) + " with none";
        if (cfg.recomputeLayers.equals("auto"))
            return "recompute_layers auto: the first layers recomputed in the backward, as few as keep a training pass's activations within "
                    + Math.round(RankState.RECOMPUTE_BUDGET * 100) + "% of the memory the model states and the update buffers leave, decided once the states are allocated ("
                    + ends + ")";
        return "recompute_layers " + cfg.recomputeLayers + ": " + recomputedAtMost() + " of " + layers + " layers recomputed (" + ends + ")";
    }

    /**
     * A SHA-256 of the training data as the trainer sees it (each kept row's dataset, ground truth and prompt token
     * ids, in order): a resumed run refuses data that changed since its checkpoint.
     */
    public String dataFingerprint() {
        try {
            MessageDigest md = MessageDigest.getInstance("SHA-256");
            for (int i = 0; i < train.size(); i++) {
                RlvrRow r = train.row(i);
                md.update((r.dataset() + "\u0000" + r.groundTruth() + "\u0000").getBytes(StandardCharsets.UTF_8));
                for (int t : train.prompt(i)) {
                    md.update((byte) (t >>> 24));
                    md.update((byte) (t >>> 16));
                    md.update((byte) (t >>> 8));
                    md.update((byte) t);
                }
                md.update((byte) 0xFF);
            }
            return java.util.HexFormat.of().formatHex(md.digest());
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e); // every JDK has SHA-256
        }
    }

    public Path tokenizerDir() { return tokenizerDir; }
    public Tokenizer tokenizer() { return tok; }
    public LlamaConfig modelConfig() { return model; }
    public ChatTemplate template() { return template; }
    public PromptDataset train() { return train; }
    /** The eval prompts, or null without dataset_mixer_eval_list. */
    public PromptDataset eval() { return eval; }
    public int longestPrompt() { return longestPrompt; }
    /** The token ids generation stops at (the tokenizer's EOS among them). */
    public java.util.Set<Integer> stopIds() { return stopIds; }
    /** Rows the supervised warm-up imitates (0 without a warm-up). */
    public int sftRows() { return sftRows; }
    /** What was checked, name to value (for dry runs). */
    public Map<String, String> summary() { return summary; }

    private final List<String> warnings = new ArrayList<>();

    /** What the run will do that a user may not expect, one sentence each (logged at the start and by --dry-run). */
    public List<String> warnings() { return warnings; }

    /**
     * The token ids the run's generation stops at: the tokenizer's EOS and stop_token_ids, or, with stop_token_ids
     * unset, the model's generation config's eos_token_id, as vLLM (the reference's sampler) stops at each of them
     * (Llama 3.x Instruct lists 128001, 128008 and 128009). A response that stops at an id other than the EOS is
     * padded with the EOS as the reference pads it, so it counts as stopped and that EOS is trained on.
     */
    static java.util.Set<Integer> stopTokenIds(GrpoConfig cfg, Path modelDir, LlamaConfig lc, Tokenizer tok) throws IOException {
        // read either way: a broken file is named now, not copied into every checkpoint (generate on one would fail)
        java.util.Set<Integer> fromModel = org.grpo4j.internal.model.GenerationStops.of(modelDir, lc, tok.eosId());
        if (cfg.stopTokenIds == null) return fromModel;
        java.util.Set<Integer> ids = new java.util.LinkedHashSet<>();
        ids.add(tok.eosId());
        for (int id : cfg.stopTokenIds) {
            if (id >= lc.vocabSize())
                throw new IllegalArgumentException("stop_token_ids: " + id + " is not a token id of model_name_or_path " + cfg.modelNameOrPath
                        + " (vocab_size " + lc.vocabSize() + ")");
            ids.add(id);
        }
        return ids;
    }

    /** The stop ids as the dry run prints them: each id with its text, and where the ones past the EOS come from. */
    private String stopSummary(Tokenizer tok) {
        List<String> named = new ArrayList<>();
        for (int id : stopIds) {
            String text;
            try {
                text = tok.decode(new int[] {id}, false);
            } catch (RuntimeException e) {
                text = null;
            }
            named.add(id + (text == null || text.isEmpty() ? "" : " " + text));
        }
        return String.join(", ", named) + (stopIds.size() == 1 ? " (the tokenizer's EOS)"
                : cfg.stopTokenIds != null ? " (the tokenizer's EOS and stop_token_ids)"
                : " (the tokenizer's EOS and the model's generation config eos_token_id, as vLLM stops; stop_token_ids [] for the EOS alone)");
    }

    /**
     * A tokenizer whose pad token is its EOS: the reference then finds a response's length at its first pad, the EOS,
     * and leaves the EOS out of the loss (its Tulu tokenizer adds a distinct {@code <pad>}); grpo4j trains on the EOS
     * as it would with a distinct pad. Null otherwise.
     */
    static String padIsEos(Tokenizer tok) {
        if (tok.padToken() == null || !tok.padToken().equals(tok.eosToken())) return null;
        return "the tokenizer's pad token is its EOS (" + tok.eosToken() + "): the reference (open-instruct) would then count"
                + " each response one token shorter and leave its EOS out of the loss and the KL; grpo4j trains on the EOS as with"
                + " a distinct pad (Tulu's tokenizer adds <pad>)";
    }

    /**
     * The rows of several messages whose last is not an assistant turn: their prompt is every message but the last, as
     * the reference's (messages[:-1]), so that turn (a question, usually) is never shown to the model; null when none.
     */
    static String lastTurnNotAnswer(PromptDataset d) {
        int n = 0;
        String first = null;
        for (int i = 0; i < d.size(); i++) {
            List<org.grpo4j.ChatMessage> ms = d.row(i).messages();
            if (ms.size() > 1 && !ms.get(ms.size() - 1).role().equals("assistant")) {
                if (first == null) first = d.row(i).source() + " (its last turn is " + ms.get(ms.size() - 1).role() + ")";
                n++;
            }
        }
        return n == 0 ? null : n + " training rows of several messages end with a turn other than assistant, first " + first
                + ": as the reference's, their prompt is every message but the last, which the model never sees; put the answer"
                + " last, or keep such rows to one message";
    }

    /** Closes the tokenizer (unless the trainer took it). */
    @Override
    public void close() { tok.close(); }
}
