package org.grpo4j.internal.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.Callable;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.Backends;
import org.grpo4j.internal.backend.CpuBackend;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.Memory;
import org.grpo4j.internal.data.DatasetMixer;
import org.grpo4j.internal.data.PromptDataset;
import org.grpo4j.internal.model.LlamaConfig;
import org.grpo4j.internal.model.LlamaModel;
import org.grpo4j.internal.model.LlamaWeights;
import org.grpo4j.internal.rollout.Completion;
import org.grpo4j.internal.rollout.Generator;
import org.grpo4j.internal.rollout.SamplingParams;
import org.grpo4j.internal.rollout.StopStrings;
import org.grpo4j.internal.tokenizer.ChatTemplate;
import org.grpo4j.internal.tokenizer.Tokenizer;
import org.grpo4j.internal.train.Precision;
import org.grpo4j.reward.Compat;
import org.grpo4j.reward.Rewards;
import org.grpo4j.reward.RlvrRow;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code grpo4j eval}: how often a model's responses pass the verifiers on RLVR data (the trainer's data format: each
 * row's chat up to its last user turn is the prompt, its {@code dataset} picks the verifier, {@code ground_truth} is
 * what it checks against). One batch through the rollout engine (greedy by default), scored as the trainer scores,
 * reported per dataset: accuracy (the share of responses the verifier accepts), mean reward, responses cut at
 * --max-tokens. What the reference's authors measured after training with other tools (oe-eval), on the same verifiers.
 */
@Command(name = "eval", mixinStandardHelpOptions = true,
        description = "Accuracy of a model (HF directory, checkpoint or run) on RLVR data: generate, verify, report per dataset.")
final class EvalCommand implements Callable<Integer> {
    @Option(names = "--model", required = true, description = "HF model directory, a checkpoint (checkpoints/step_N) or a run directory (its newest checkpoint).")
    Path model;

    @Option(names = "--data", required = true, description = "Data as the trainer reads it: a .jsonl/.parquet file or a directory of them"
            + " (repeatable); DATA:N takes its first N rows.")
    List<String> data = new ArrayList<>();

    @Option(names = "--split", description = "Split of a dataset directory (default: every data file): one for every --data, or one per --data in"
            + " order, as the trainer's dataset_mixer_list_splits.") List<String> split = new ArrayList<>();
    @Option(names = "--samples", defaultValue = "1", description = "Responses per prompt (default: ${DEFAULT-VALUE}); accuracy is their mean (pass@1).") int samples;
    @Option(names = "--temperature", defaultValue = "0", description = "0 = greedy (default: ${DEFAULT-VALUE}).") float temperature;
    @Option(names = "--top-p", defaultValue = "1.0", description = "(default: ${DEFAULT-VALUE})") float topP;
    @Option(names = "--max-tokens", description = "Longest response (default: the run's response_length for a checkpoint or run; for a model"
            + " directory 2048, the Tulu recipe's response_length, or half the model's context where that is less).") Integer maxTokensOption;
    /** --max-tokens, or the run's response_length, or 2048 (at most half the context). */
    private int maxTokens;
    @Option(names = "--max-prompt-tokens", description = "Rows whose prompt is longer are left out, as the trainer's max_prompt_token_length"
            + " (default: the run's for a checkpoint or run, else 2048).") Integer maxPromptOption;
    /** --max-prompt-tokens, or the run's max_prompt_token_length, or 2048. */
    private int maxPromptTokens;
    @Option(names = {"--chat-template", "--template"}, defaultValue = "run", description = "run (the run's chat_template_name for a checkpoint or run, tulu for a model"
            + " directory; the default), tulu, llama3, r1_simple_chat, r1_simple_chat_postpend_think or tokenizer.") String chatTemplate;
    @Option(names = "--seed", defaultValue = "0", description = "Sampling seed (default: ${DEFAULT-VALUE}).") long seed;
    @Option(names = "--stop", description = "Stop string (repeatable; default: the run's stop_strings for a checkpoint or run, none otherwise).")
    List<String> stop;
    @Option(names = "--verifier-compat", description = "open-instruct-3f37c29 for the reference's verifiers (default: the run's verifier_compat,"
            + " else fixed).") String compat;
    @Option(names = "--verification-reward", description = "Reward of a passing verification (default: the run's, else 10).") Double reward;
    @Option(names = "--timeout", defaultValue = "5.0", description = "Seconds per verification (default: ${DEFAULT-VALUE}).") double timeout;
    @Option(names = "--backend", defaultValue = "auto", description = "auto, cpu, cuda[:N] (default: ${DEFAULT-VALUE}).") String backend;
    @Option(names = "--precision", defaultValue = "auto", description = "auto (a checkpoint's: the run's precision; else bf16 on CUDA, fp32 on the"
            + " CPU), fp32 or bf16 (default: ${DEFAULT-VALUE}).") String precision;
    @Option(names = "--kv-blocks", defaultValue = "4096", description = "KV pool size in blocks of 16 tokens (default: ${DEFAULT-VALUE}).") int kvBlocks;
    @Option(names = "--output", description = "JSONL of every response (prompt, response, ground truth, dataset, reward, finish reason), written when"
            + " complete; a new file unless --overwrite.") Path output;
    @Option(names = "--overwrite", description = "Replace an existing --output file (when the new one is complete).") boolean overwrite;

    @Override
    public Integer call() throws Exception {
        if (model.toString().isBlank()) throw new IllegalArgumentException("--model is empty");
        if (samples < 1) throw new IllegalArgumentException("--samples must be >= 1, got " + samples);
        if (!(temperature >= 0) || !Float.isFinite(temperature)) throw new IllegalArgumentException("--temperature must be a finite number >= 0, got " + temperature);
        if (!(topP > 0 && topP <= 1)) throw new IllegalArgumentException("--top-p must be in (0, 1], got " + topP);
        if (maxTokensOption != null && maxTokensOption < 1) throw new IllegalArgumentException("--max-tokens must be >= 1, got " + maxTokensOption);
        if (maxPromptOption != null && maxPromptOption < 1) throw new IllegalArgumentException("--max-prompt-tokens must be >= 1, got " + maxPromptOption);
        if (kvBlocks < 1) throw new IllegalArgumentException("--kv-blocks must be >= 1, got " + kvBlocks);
        if (reward != null && (!(reward > 0) || !Double.isFinite(reward)))
            throw new IllegalArgumentException("--verification-reward must be a finite number > 0, got " + reward);
        if (!(timeout > 0) || !Double.isFinite(timeout)) throw new IllegalArgumentException("--timeout must be a finite number of seconds > 0, got " + timeout);
        if (stop != null) for (String x : stop) if (x.isEmpty()) throw new IllegalArgumentException("--stop must be a non-empty string");
        Precision.check(precision, "--precision");
        Backends.checkSpec(backend);
        Path cwd = Path.of("").toAbsolutePath();
        if (output != null) {
            if (output.toString().isBlank()) throw new IllegalArgumentException("--output is empty (leave it out to print the table only)");
            if (Files.isDirectory(output)) throw new IllegalArgumentException(output + ": is a directory (--output takes a file)");
        }
        // the data as the trainer reads it (paths relative to the working directory); DATA:N its first N rows
        if (split.size() > 1 && split.size() != data.size())
            throw new IllegalArgumentException("--split given " + split.size() + " times for " + data.size() + " --data: give one for all, or one per --data");
        List<RlvrRow> rows = new ArrayList<>();
        for (int di = 0; di < data.size(); di++) {
            String d = data.get(di);
            int colon = d.lastIndexOf(':');
            boolean counted = colon > 0 && d.substring(colon + 1).matches("\\d{1,9}");
            String path = counted ? d.substring(0, colon) : d;
            int first = counted ? Integer.parseInt(d.substring(colon + 1)) : Integer.MAX_VALUE;
            if (first < 1) throw new IllegalArgumentException("--data " + d + ": the rows to take must be >= 1 (DATA:N takes the first N)");
            if (output != null) {
                Path res = org.grpo4j.internal.data.DatasetMixer.resolve(path, cwd).toAbsolutePath().normalize(), o = output.toAbsolutePath().normalize();
                if (o.equals(res) || Files.isDirectory(res) && o.startsWith(res) || Files.exists(o) && Files.isSameFile(o, res))
                    throw new IllegalArgumentException("--output " + output + (o.equals(res) || Files.isRegularFile(res) ? " is" : " lies in") + " the --data "
                            + (Files.isDirectory(res) ? "directory " : "file ") + res + ": writing it would change the data; choose another output file");
            }
            List<RlvrRow> got = DatasetMixer.load(List.of(path, "1.0"), split.isEmpty() ? List.of() : List.of(split.get(split.size() == 1 ? 0 : di)), cwd,
                    "--data");
            if (counted && first > got.size()) // (as the trainer refuses a dataset amount past its rows)
                throw new IllegalArgumentException("--data " + d + " asks for the first " + first + " rows of " + path + ", which has " + got.size()
                        + " (--data " + path + " takes them all)");
            rows.addAll(got.subList(0, Math.min(first, got.size())));
        }
        if (output != null && Files.exists(output) && !overwrite) // (after the --data checks: writing a data file is refused even with --overwrite)
            throw new IllegalArgumentException("--output " + output + " exists (earlier results, or a run's file): give another file, or --overwrite to"
                    + " replace it");
        String name = ChatTemplate.requireKnown("--chat-template", chatTemplate, "run");
        ModelSource src = ModelSource.resolve(model);
        // the run's own settings where the model is a checkpoint or run: what the trainer generated and scored with
        if (name.equals("run")) {
            String runTemplate = src.runChatTemplate();
            name = runTemplate == null ? "tulu" : runTemplate;
        }
        com.fasterxml.jackson.databind.JsonNode run = src.runConfig(), runCompat = run.get("verifier_compat"), runReward = run.get("verification_reward"),
                runStops = run.get("stop_strings"), runMaxTokenLength = run.get("max_token_length"), runMaxPrompt = run.get("max_prompt_token_length"),
                runResponse = run.get("response_length"), runStopIds = run.get("stop_token_ids");
        maxPromptTokens = maxPromptOption != null ? maxPromptOption : runMaxPrompt != null && runMaxPrompt.canConvertToInt() && runMaxPrompt.asInt() > 0
                ? runMaxPrompt.asInt() : 2048;
        Compat cp = compat != null ? Compat.parse(compat, "--verifier-compat")
                : Compat.parse(runCompat != null && runCompat.isTextual() ? runCompat.textValue() : "", "the run's verifier_compat");
        passReward = reward != null ? reward : runReward != null && runReward.isNumber() ? runReward.asDouble() : 10.0;
        List<String> stops = new ArrayList<>();
        if (stop != null) stops.addAll(stop);
        else if (runStops != null && runStops.isArray()) runStops.forEach(x -> { if (x.isTextual() && !x.textValue().isEmpty()) stops.add(x.textValue()); });
        int maxChat = runMaxTokenLength != null && runMaxTokenLength.canConvertToInt() ? runMaxTokenLength.asInt() : Integer.MAX_VALUE;
        LlamaConfig lc = LlamaConfig.read(src.model());
        maxTokens = maxTokensOption != null ? maxTokensOption : runResponse != null && runResponse.canConvertToInt() && runResponse.asInt() > 0
                ? runResponse.asInt() : Math.max(1, Math.min(2048, lc.maxPositionEmbeddings() / 2));
        if (maxTokens >= lc.maxPositionEmbeddings())
            throw new IllegalArgumentException("--max-tokens " + maxTokens + (maxTokensOption == null ? " (the run's response_length)" : "")
                    + " leaves no room for a prompt in the model's context of " + lc.maxPositionEmbeddings() + ": give a smaller --max-tokens");
        int promptLimit = Math.min(maxPromptTokens, lc.maxPositionEmbeddings() - maxTokens);
        // an empty temporary sibling of --output, before the work: a directory that cannot be written fails now, not after it
        Path tmp = output == null ? null : org.grpo4j.internal.util.AtomicDir.temporaryFileFor(output);
        if (tmp != null) tmp.toFile().deleteOnExit(); // (an eval stopped by Ctrl-C leaves no hidden file; the finally below covers the rest)
        try (Tokenizer tok = Tokenizer.load(src.model()); Rewards rewards = new Rewards(cp, passReward, timeout, Runtime.getRuntime().availableProcessors());
             Backend be = Backends.choose(backend, org.grpo4j.internal.backend.Ops.ALL).backend()) {
            if (tok.eosId() < 0) // (the trainer refuses such a tokenizer too: every response would run to --max-tokens)
                throw new IllegalArgumentException(src.model() + ": the tokenizer has no eos_token (tokenizer_config.json), so no response would stop"
                        + " before --max-tokens; the trainer's rollouts stop at it");
            Set<Integer> eos = stopIds(src, run, runStopIds, tok, lc);  // (a bad entry is named before the prompts are tokenized and the weights load)
            ChatTemplate template = ChatTemplate.named(name, tok);
            PromptDataset prompts = new PromptDataset(rows, tok, template, promptLimit, maxChat);
            org.grpo4j.internal.train.Preflight.requireVerifiers(prompts, "--data", rewards);
            String limit = promptLimit < maxPromptTokens ? promptLimit + " tokens (the context of " + lc.maxPositionEmbeddings() + " less --max-tokens "
                    + maxTokens + ")" : promptLimit + " tokens (" + (maxPromptOption == null && runMaxPrompt != null ? "the run's max_prompt_token_length"
                    : "--max-prompt-tokens") + ")";
            if (rows.isEmpty()) throw new IllegalArgumentException("--data " + String.join(", ", data) + ": no rows");
            if (prompts.size() == 0)
                throw new IllegalArgumentException("--data: none of the " + rows.size() + " rows has a prompt of at most " + limit
                        + (maxChat < Integer.MAX_VALUE ? " and a chat of at most the run's max_token_length " + maxChat : ""));
            List<int[]> ids = new ArrayList<>(prompts.size());
            for (int i = 0; i < prompts.size(); i++) {
                int[] p = prompts.prompt(i);
                int need = (p.length + 15) / 16 + (p.length + maxTokens - 1 + 15) / 16 - p.length / 16; // as the generator counts
                if (need > kvBlocks)
                    throw new IllegalArgumentException(prompts.row(i).source() + ": the prompt's " + p.length + " tokens plus a response of --max-tokens "
                            + maxTokens + " need " + need + " KV blocks of 16 tokens, more than --kv-blocks " + kvBlocks);
                ids.add(p);
            }
            Memory.requireHeap((long) prompts.size() * samples * maxTokens * 48 + 200L * prompts.size() * samples,
                    prompts.size() + " prompts x --samples " + samples + " x --max-tokens " + maxTokens, "use fewer rows (DATA:N), samples or tokens");
            String runPrecision = src.runPrecision();
            DType dtype = precision.equals("auto") && runPrecision != null ? DType.valueOf(runPrecision.toUpperCase(Locale.ROOT)) : Precision.resolve(precision, be);
            if (dtype == DType.BF16) Precision.requireBf16Generation(be, precision.equals("auto") ? "--precision auto (bf16 on " + be.name() + ")" : "--precision bf16",
                    "use --precision fp32");
            long blockBytes = 2L * lc.numLayers() * lc.kvDim() * dtype.bytes() * 16, kvBytes = blockBytes * kvBlocks, weights = LlamaWeights.loadBytes(lc, dtype);
            Memory.require(be, kvBytes + weights, "--kv-blocks " + kvBlocks + " (a KV cache of " + Memory.human(kvBytes) + ") next to the " + Precision.label(dtype)
                    + " weights (" + Memory.human(weights) + ")", free -> GenerateCommand.kvBlocksHint(free, weights, blockBytes, dtype, be instanceof CpuBackend));
            try (LlamaWeights w = LlamaWeights.load(be, src.model(), dtype)) {
                String bad = w.firstNonFiniteTensor();
                if (bad != null) throw new IllegalArgumentException(src.model() + ": tensor " + bad + " holds NaN or infinite values; the model is damaged");
                Generator g = new Generator(new LlamaModel(w), new Generator.Config(16, kvBlocks, 256, true));
                List<List<Completion>> all = g.generate(ids, new SamplingParams(samples, temperature, topP, 0, maxTokens, eos, seed,
                        stops.isEmpty() ? null : new StopStrings(stops, tok::decodeAsVllm)));
                Generator.Stats st = g.lastStats();
                List<Rewards.Item> items = new ArrayList<>();
                for (int i = 0; i < all.size(); i++)
                    for (Completion c : all.get(i))
                        items.add(new Rewards.Item(tok.decodeAsTransformers(c.tokens(), true), prompts.row(i).groundTruth(), prompts.row(i).dataset(), prompts.row(i)));
                List<Rewards.Result> res = rewards.scoreAll(items);
                report(src, name, cp, prompts, all, items, res, rows.size(), limit, st, w.dtype());
                if (output != null) write(tmp, prompts, all, items, res, tok);
            }
        } finally {
            if (tmp != null) Files.deleteIfExists(tmp);
        }
        return 0;
    }

    /** The reward a response must reach to pass: --verification-reward, else the run's, else 10. */
    private double passReward;

    /** Accuracy, mean reward and cut responses per dataset and in all. */
    private void report(ModelSource src, String template, Compat cp, PromptDataset prompts, List<List<Completion>> all, List<Rewards.Item> items,
                        List<Rewards.Result> res, int rows, String limit, Generator.Stats st, DType dtype) {
        Map<String, double[]> by = new java.util.TreeMap<>(); // dataset -> {responses, passed, reward sum, cut, errors}
        double[] total = new double[5];
        int k = 0;
        for (int i = 0; i < all.size(); i++)
            for (Completion c : all.get(i)) {
                Rewards.Result r = res.get(k);
                String ds = items.get(k++).dataset().toLowerCase(Locale.ROOT);
                for (double[] a : List.of(by.computeIfAbsent(ds, x -> new double[5]), total)) {
                    a[0]++;
                    if (r.reward() >= passReward) a[1]++;
                    a[2] += r.reward();
                    if (c.finishReason() == Completion.FinishReason.LENGTH) a[3]++;
                    if (r.error() != null || r.timedOut()) a[4]++;
                }
            }
        System.out.printf("grpo4j eval: %s, %s, chat template %s, %d prompts (%d left out: prompt over %s%s), %d response%s each, %s, max %d tokens,"
                        + " verifiers %s%n", src.description(), Precision.label(dtype), template, prompts.size(), rows - prompts.size(), limit,
                prompts.dropped() > prompts.droppedPrompt() ? ", or chat over the run's max_token_length" : "", samples, samples == 1 ? "" : "s",
                temperature == 0 ? "greedy" : "temperature " + temperature + (topP < 1 ? ", top_p " + topP : ""), maxTokens,
                cp == Compat.DEFAULT ? "fixed" : cp.name().toLowerCase(Locale.ROOT).replace('_', '-'));
        System.out.printf("%-14s %9s %9s %9s %12s %9s %7s%n", "dataset", "responses", "passed", "accuracy", "mean reward", "cut", "errors");
        List<Map.Entry<String, double[]>> table = new ArrayList<>(by.entrySet()); // the datasets in name order, then all
        table.add(Map.entry("all", total));
        for (var e : table) {
            double[] a = e.getValue();
            System.out.printf(Locale.ROOT, "%-14s %9.0f %9.0f %8.1f%% %12.3f %9.0f %7.0f%n", e.getKey(), a[0], a[1], 100 * a[1] / a[0], a[2] / a[0], a[3], a[4]);
        }
        System.out.printf(Locale.ROOT, "grpo4j eval: %d tokens in %.2f s (%.0f tokens/s); passed = reward >= --verification-reward %s; cut = stopped at --max-tokens%n",
                st.generatedTokens(), st.seconds(), st.tokensPerSecond(), passReward);
    }

    /** The responses as JSONL, written to a temporary sibling and renamed when complete. */
    private void write(Path tmp, PromptDataset prompts, List<List<Completion>> all, List<Rewards.Item> items, List<Rewards.Result> res, Tokenizer tok)
            throws java.io.IOException {
        ObjectMapper m = RewardCommand.exactJson();
        try (java.nio.channels.FileChannel ch = java.nio.channels.FileChannel.open(tmp, java.nio.file.StandardOpenOption.WRITE,
                java.nio.file.StandardOpenOption.TRUNCATE_EXISTING);
             BufferedWriter wr = new BufferedWriter(new java.io.OutputStreamWriter(java.nio.channels.Channels.newOutputStream(ch), StandardCharsets.UTF_8))) {
            int k = 0;
            for (int i = 0; i < all.size(); i++)
                for (int j = 0; j < all.get(i).size(); j++, k++) {
                    Completion c = all.get(i).get(j);
                    ObjectNode o = m.createObjectNode();
                    o.put("index", i);
                    o.put("sample", j);
                    o.put("source", prompts.row(i).source());
                    o.put("dataset", items.get(k).dataset());
                    o.put("prompt", tok.decode(prompts.prompt(i), false));
                    o.put("response", items.get(k).response());
                    o.put("ground_truth", items.get(k).groundTruth());
                    o.put("reward", res.get(k).reward());
                    o.put("passed", res.get(k).reward() >= passReward);
                    o.put("finish_reason", c.finishReason().label());
                    o.put("tokens", c.tokens().length);
                    if (res.get(k).error() != null) o.put("error", res.get(k).error());
                    if (res.get(k).timedOut()) o.put("timed_out", true);
                    wr.write(m.writeValueAsString(o));
                    wr.newLine();
                }
            wr.flush();
            ch.force(true); // on disk before the rename: after a power loss, the earlier file or this one, never an empty one
        } catch (java.io.IOException e) {
            throw new java.io.IOException(output + ": cannot write: " + e.getMessage(), e);
        }
        try { // without --overwrite, put in place only where nothing is: a file made meanwhile (another eval, a run) is kept
            org.grpo4j.internal.util.AtomicDir.moveIntoPlace(tmp, output, overwrite);
        } catch (java.nio.file.FileAlreadyExistsException e) {
            throw new IllegalArgumentException("--output " + output + " was made while the eval ran: its results are kept, these are not written"
                    + " (--overwrite replaces it)");
        }
    }

    /**
     * Where eval's generation stops, as the trainer's rollouts stopped: the tokenizer's EOS and, for a checkpoint or
     * run, its config's stop_token_ids (a run written before that key stopped at the EOS alone), for a model
     * directory its generation config's eos_token_id (GenerationStops).
     */
    static Set<Integer> stopIds(ModelSource src, com.fasterxml.jackson.databind.JsonNode run, com.fasterxml.jackson.databind.JsonNode runStopIds,
                                Tokenizer tok, LlamaConfig lc) throws java.io.IOException {
        Set<Integer> ids = new java.util.LinkedHashSet<>(List.of(tok.eosId()));
        if (run.size() == 0) {
            ids.addAll(org.grpo4j.internal.model.GenerationStops.generationConfigIds(src.model(), lc));
            return ids;
        }
        if (runStopIds == null || runStopIds.isNull()) return ids;
        if (!runStopIds.isArray()) throw new IllegalArgumentException(src.checkpoint().resolve("config.json") + ": stop_token_ids must be a list of token ids, got " + runStopIds);
        for (com.fasterxml.jackson.databind.JsonNode x : runStopIds) {
            if (!x.isIntegralNumber() || !x.canConvertToInt() || x.asInt() < 0)
                throw new IllegalArgumentException(src.checkpoint().resolve("config.json") + ": stop_token_ids must be a list of token ids >= 0, got " + runStopIds);
            if (x.asInt() >= lc.vocabSize())  // (as the trainer's preflight refuses it: an id no sample can ever hold)
                throw new IllegalArgumentException(src.checkpoint().resolve("config.json") + ": stop_token_ids: " + x.asInt()
                        + " is not a token id of the model (vocab_size " + lc.vocabSize() + ")");
            ids.add(x.asInt());
        }
        return ids;
    }
}
