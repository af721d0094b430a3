package org.grpo4j.internal.cli;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.concurrent.Callable;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.Backends;
import org.grpo4j.internal.backend.CpuBackend;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.Memory;
import org.grpo4j.internal.model.LlamaConfig;
import org.grpo4j.internal.model.LlamaModel;
import org.grpo4j.internal.model.LlamaWeights;
import org.grpo4j.internal.rollout.Completion;
import org.grpo4j.internal.rollout.Generator;
import org.grpo4j.internal.rollout.SamplingParams;
import org.grpo4j.internal.rollout.StopStrings;
import org.grpo4j.ChatMessage;
import org.grpo4j.internal.tokenizer.ChatTemplate;
import org.grpo4j.internal.tokenizer.Tokenizer;
import org.grpo4j.internal.train.Precision;
import org.grpo4j.internal.util.JsonErrors;
import picocli.CommandLine.ArgGroup;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code grpo4j generate}: sample completions with the rollout engine, of one prompt ({@code --prompt}) or of a JSONL
 * file of requests ({@code --prompts}, vLLM's offline batch style), each line with its own sampling settings, all in
 * one batch (one {@link Generator#generate(List, List)} call).
 */
@Command(name = "generate", mixinStandardHelpOptions = true, description = "Sample completions of a prompt, or of a JSONL file of prompts in one batch (chat-templated).")
final class GenerateCommand implements Callable<Integer> {
    @Option(names = "--model", required = true, description = "HF model directory, a checkpoint (checkpoints/step_N: its model/) or a run directory"
            + " (its newest checkpoint's model).") Path model;

    static final class Input {
        @Option(names = "--prompt", description = "User message.") String prompt;

        @Option(names = "--prompts", description = "JSONL file, one request a line: {\"prompt\": user message} or {\"messages\": [{role, content}, ...]},"
                + " optionally with n, max_tokens, temperature, top_p, top_k, seed, stop (default: -n, --max-tokens, --temperature, --top-p, --top-k, --seed,"
                + " --stop); all in one batch.")
        Path file;
    }

    @ArgGroup(exclusive = true, multiplicity = "1") Input input;
    @Option(names = {"--template", "--chat-template"}, defaultValue = "tokenizer", description = "tulu, llama3, r1_simple_chat, r1_simple_chat_postpend_think, tokenizer or none (raw text) (default: ${DEFAULT-VALUE}).") String template;
    @Option(names = {"-n"}, defaultValue = "1", description = "Completions (default: ${DEFAULT-VALUE}).") int n;
    @Option(names = "--max-tokens", defaultValue = "64", description = "Max new tokens (default: ${DEFAULT-VALUE}).") int maxTokens;
    @Option(names = "--temperature", defaultValue = "1.0", description = "0 = greedy (default: ${DEFAULT-VALUE}).") float temperature;
    @Option(names = "--top-p", defaultValue = "1.0", description = "(default: ${DEFAULT-VALUE})") float topP;
    @Option(names = "--top-k", defaultValue = "0", description = "0 = off (default: ${DEFAULT-VALUE})") int topK;
    @Option(names = "--seed", defaultValue = "0", description = "(default: ${DEFAULT-VALUE})") long seed;
    @Option(names = "--stop", description = "Stop string (repeatable): a completion ends once its text (special tokens skipped) contains one; its tokens"
            + " are kept, finish reason stop_string.") List<String> stop = new ArrayList<>();
    @Option(names = "--json", description = "Print ids and log-probs as JSON (with --prompts: JSON Lines, one object per request).") boolean json;
    @Option(names = "--backend", defaultValue = "auto", description = "auto, cpu, cuda[:N] (default: ${DEFAULT-VALUE}).") String backend;
    @Option(names = "--kv-blocks", defaultValue = "4096", description = "KV pool size in blocks of 16 tokens (default: ${DEFAULT-VALUE}).") int kvBlocks;
    @Option(names = "--precision", defaultValue = "auto", description = "auto (bf16 on CUDA, fp32 on the CPU, as the trainer's precision), fp32 or bf16:"
            + " the weights, activations and KV cache; log-probs are fp32 either way (default: ${DEFAULT-VALUE}).") String precision;
    @Option(names = "--kv-admission", defaultValue = "on_demand", description = "on_demand (completions take KV blocks as they fill them; the youngest"
            + " are preempted and recomputed when the pool runs out) or worst_case (a completion starts only with blocks for its prompt + --max-tokens"
            + " reserved), as the trainer's kv_admission (default: ${DEFAULT-VALUE}).") String kvAdmission;

    /**
     * One request: a user message ({@code prompt}; raw text with --template none) or a chat ({@code messages}), with
     * its sampling settings; {@code where} names it in errors ("FILE:LINE", or the options for --prompt).
     */
    record Request(String where, String prompt, List<ChatMessage> messages, int n, int maxTokens, float temperature, float topP, int topK, long seed,
                   List<String> stop) {}

    /** The keys of a --prompts line. */
    static final List<String> KEYS = List.of("prompt", "messages", "n", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop");

    @Override
    public Integer call() throws Exception {
        if (model.toString().isBlank()) throw new IllegalArgumentException("--model is empty");
        if (n < 1) throw new IllegalArgumentException("-n must be >= 1, got " + n);
        if (maxTokens < 1) throw new IllegalArgumentException("--max-tokens must be >= 1, got " + maxTokens);
        if (!(temperature >= 0) || !Float.isFinite(temperature)) throw new IllegalArgumentException("--temperature must be a finite number >= 0, got " + temperature);
        if (!(topP > 0 && topP <= 1)) throw new IllegalArgumentException("--top-p must be in (0, 1], got " + topP);
        if (topK < 0) throw new IllegalArgumentException("--top-k must be >= 0 (0 = off), got " + topK);
        for (String s : stop) if (s.isEmpty()) throw new IllegalArgumentException("--stop must be a non-empty string (an empty one would end every completion at once)");
        if (kvBlocks < 1) throw new IllegalArgumentException("--kv-blocks must be >= 1, got " + kvBlocks);
        if (!kvAdmission.equals("on_demand") && !kvAdmission.equals("worst_case"))
            throw new IllegalArgumentException("--kv-admission must be on_demand or worst_case, got " + kvAdmission);
        Precision.check(precision, "--precision");
        Backends.checkSpec(backend);
        String name = ChatTemplate.requireKnown("--template", template, "none"); // (the trainer's names, and none)
        Request defaults = new Request("the options", input.prompt, null, n, maxTokens, temperature, topP, topK, seed, List.copyOf(stop));
        boolean batch = input.file != null;
        // the whole file is read and checked before anything is loaded
        List<Request> requests = batch ? readPrompts(input.file, defaults, name.equals("none")) : List.of(defaults);
        if (Files.exists(model) && !Files.isDirectory(model))
            throw new IllegalArgumentException(model + ": is a file; --model names a model directory (config.json, tokenizer, *.safetensors)");
        if (!Files.isDirectory(model)) throw new java.nio.file.NoSuchFileException(model.toString(), null, "--model: no such model directory");
        model = ModelSource.modelDirOf(model); // (a checkpoint or a run as eval and export take them)
        LlamaConfig lc = LlamaConfig.read(model);
        // what the model's config bounds, per request, before any size is estimated: top-k within the vocabulary,
        // max_tokens within the context (the prompt's own length is checked once it is tokenized), the samples' random
        // streams within the counters' int range
        long samples = 0;
        for (Request r : requests) {
            String what = batch ? r.where() + ": " : "--";
            if (r.topK() > lc.vocabSize())
                throw new IllegalArgumentException(what + (batch ? "top_k" : "top-k") + " " + r.topK() + " exceeds the model's vocabulary of " + lc.vocabSize()
                        + " tokens (0 turns top-k off)");
            if (r.maxTokens() >= lc.maxPositionEmbeddings())
                throw new IllegalArgumentException(what + (batch ? "max_tokens" : "max-tokens") + " " + r.maxTokens() + " leaves no room for a prompt in the"
                        + " model's max_position_embeddings " + lc.maxPositionEmbeddings());
            samples += r.n();
            if (samples > Integer.MAX_VALUE)
                throw new IllegalArgumentException((batch ? r.where() + ": the completions asked for up to this line (the sum of n)" : "-n " + r.n())
                        + " exceed " + Integer.MAX_VALUE + ", the most one call draws random streams for");
        }
        // the results: per completion its ids and log-probs (boxed while generating: about 48 bytes a token) and about 200
        // bytes of its own (the completion, its arrays, its scheduling state)
        if (!batch) {
            Memory.requireHeap((long) n * maxTokens * 48 + 200L * n, "-n " + n + " x --max-tokens " + maxTokens, "ask for fewer or shorter completions");
        } else {
            long tokens = 0, most = -1;
            Request big = null;
            for (Request r : requests) {
                long t = (long) r.n() * r.maxTokens(); // each below 2^31: no overflow
                tokens = tokens > Long.MAX_VALUE / 64 - t ? Long.MAX_VALUE / 64 : tokens + t; // saturates: never near a real heap
                if (t > most) {
                    most = t;
                    big = r;
                }
            }
            Memory.requireHeap(tokens * 48 + 200L * samples, "--prompts " + input.file + ": " + tokens + " tokens of completions at most (the sum of n x max_tokens; the most: "
                    + big.where() + ", n " + big.n() + " x max_tokens " + big.maxTokens() + ")", "ask for fewer or shorter completions");
        }
        try (Tokenizer tok = Tokenizer.load(model); Backend be = Backends.choose(backend, org.grpo4j.internal.backend.Ops.ALL).backend()) {
            // the prompts' text and ids, checked against the context (and, for --prompts, the KV pool) before the weights load
            List<String> texts = new ArrayList<>(requests.size());
            List<int[]> ids = new ArrayList<>(requests.size());
            ChatTemplate chat;
            try {
                chat = name.equals("none") ? null : ChatTemplate.named(name, tok);
            } catch (IllegalArgumentException e) { // (the tokenizer's template is missing)
                throw new IllegalArgumentException("--template: " + e.getMessage());
            }
            for (Request r : requests) {
                String text = chat == null ? r.prompt()
                        : chat.render(r.messages() != null ? r.messages() : List.of(new ChatMessage("user", r.prompt())), true, tok);
                int[] p = tok.encode(text);
                if (p.length == 0) throw new IllegalArgumentException(batch ? r.where() + ": the prompt is empty (\"prompt\": \"\" with --template none)"
                        : "the prompt is empty after templating (--template none with an empty --prompt)");
                if ((long) p.length + r.maxTokens() > lc.maxPositionEmbeddings())
                    throw new IllegalArgumentException((batch ? r.where() + ": max_tokens " : "--max-tokens ") + r.maxTokens() + " + the prompt's " + p.length
                            + " tokens exceed the model's max_position_embeddings " + lc.maxPositionEmbeddings());
                if (batch) {
                    int need = (p.length + 15) / 16 + (p.length + r.maxTokens() - 1 + 15) / 16 - p.length / 16; // as the generator counts
                    if (need > kvBlocks)
                        throw new IllegalArgumentException(r.where() + ": the prompt's " + p.length + " tokens plus one completion of max_tokens " + r.maxTokens()
                                + " need " + need + " KV blocks of 16 tokens, more than --kv-blocks " + kvBlocks);
                }
                texts.add(text);
                ids.add(p);
            }
            DType dtype = Precision.resolve(precision, be);
            if (dtype == DType.BF16) Precision.requireBf16Generation(be, precision.equals("auto") ? "--precision auto (bf16 on " + be.name() + ")" : "--precision bf16",
                    "use --precision fp32");
            long blockBytes = 2L * lc.numLayers() * lc.kvDim() * dtype.bytes() * 16, kvBytes = blockBytes * kvBlocks;
            long weights = LlamaWeights.loadBytes(lc, dtype);
            Memory.require(be, kvBytes + weights, "--kv-blocks " + kvBlocks + " (a KV cache of " + Memory.human(kvBytes) + ") next to the " + Precision.label(dtype)
                    + " weights (" + Memory.human(weights) + ")", free -> kvBlocksHint(free, weights, blockBytes, dtype, be instanceof CpuBackend));
            try (LlamaWeights w = LlamaWeights.load(be, model, dtype)) {
                return generate(tok, w, requests, texts, ids, batch);
            }
        }
    }

    /**
     * Reads and checks a --prompts file: one JSON object a line (blank lines skipped), every key it does not set taken
     * from {@code defaults}; {@code raw} (--template none): "messages" is refused. Every error names the file, the line
     * and the key.
     */
    static List<Request> readPrompts(Path file, Request defaults, boolean raw) throws IOException {
        if (file.toString().isBlank()) throw new IllegalArgumentException("--prompts is empty");
        if (!Files.exists(file)) throw new java.nio.file.NoSuchFileException(file.toString(), null, "--prompts");
        if (Files.isDirectory(file)) throw new IllegalArgumentException(file + ": is a directory (--prompts takes a JSONL file)");
        if (Files.size(file) > Integer.MAX_VALUE - 8)
            throw new IllegalArgumentException(file + ": " + Files.size(file) + " bytes; --prompts reads files of up to 2 GiB (split it into several runs)");
        ObjectMapper m = new ObjectMapper().enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION);
        List<Request> out = new ArrayList<>();
        try (java.io.InputStream in = Files.newInputStream(file)) {
            org.grpo4j.internal.util.Utf8Lines lines = new org.grpo4j.internal.util.Utf8Lines(in); // (bad UTF-8 named at its line)
            while (true) {
                String line;
                try {
                    line = lines.next(); // (a byte order mark dropped)
                } catch (CharacterCodingException e) {
                    throw new IllegalArgumentException(file + ":" + lines.number() + ": not valid UTF-8");
                }
                if (line == null) break;
                int no = lines.number();
                if (line.isBlank()) continue;
                String where = file + ":" + no;
                JsonNode node;
                try (JsonParser jp = m.createParser(line)) {
                    node = m.readTree(jp);
                    if (jp.nextToken() != null) throw new IllegalArgumentException(where + ": more than one JSON value (--prompts takes one object a line)");
                } catch (JsonProcessingException e) {
                    throw new IllegalArgumentException(where + ": not valid JSON: " + JsonErrors.describeLine(e));
                }
                out.add(request(node, where, defaults, raw));
            }
        }
        if (out.isEmpty())
            throw new IllegalArgumentException(file + ": no prompts (the file is empty or blank; --prompts takes one JSON object a line, e.g. {\"prompt\": \"...\"})");
        return out;
    }

    private static Request request(JsonNode o, String where, Request d, boolean raw) throws IOException {
        if (!o.isObject()) throw new IllegalArgumentException(where + ": expected a JSON object, got " + o.getNodeType().toString().toLowerCase(Locale.ROOT));
        for (Iterator<String> it = o.fieldNames(); it.hasNext(); ) {
            String k = it.next();
            if (!KEYS.contains(k)) throw new IllegalArgumentException(where + ": unknown key \"" + k + "\" (valid keys: " + String.join(", ", KEYS) + ")");
        }
        boolean hasPrompt = o.has("prompt"), hasMessages = o.has("messages");
        if (hasPrompt && hasMessages) throw new IllegalArgumentException(where + ": both \"prompt\" and \"messages\"; give one");
        if (!hasPrompt && !hasMessages)
            throw new IllegalArgumentException(where + ": missing \"prompt\" (a user message) or \"messages\" (a list of {role, content})");
        String prompt = null;
        List<ChatMessage> messages = null;
        if (hasPrompt) {
            if (!o.get("prompt").isTextual()) throw new IllegalArgumentException(where + ": \"prompt\" must be a string, got " + o.get("prompt"));
            prompt = o.get("prompt").asText();
        } else {
            if (raw) throw new IllegalArgumentException(where + ": \"messages\" needs a chat template, and --template is none (raw text): give \"prompt\" or a --template");
            messages = org.grpo4j.internal.data.DatasetReader.parseMessages(o.get("messages"), where, "field \"messages\"", "messages");
        }
        int n = intKey(o, "n", d.n(), 1, "", where), maxTokens = intKey(o, "max_tokens", d.maxTokens(), 1, "", where);
        float temperature = floatKey(o, "temperature", d.temperature(), where);
        if (!(temperature >= 0) || !Float.isFinite(temperature))
            throw new IllegalArgumentException(where + ": \"temperature\" must be a finite number >= 0, got " + o.get("temperature"));
        float topP = floatKey(o, "top_p", d.topP(), where);
        if (!(topP > 0 && topP <= 1)) throw new IllegalArgumentException(where + ": \"top_p\" must be a number in (0, 1], got " + o.get("top_p"));
        int topK = intKey(o, "top_k", d.topK(), 0, " (0 = off)", where);
        long seed = d.seed();
        JsonNode s = o.get("seed");
        if (s != null) {
            if (!s.isIntegralNumber() || !s.canConvertToLong()) throw new IllegalArgumentException(where + ": \"seed\" must be a 64-bit integer, got " + s);
            seed = s.longValue();
        }
        List<String> stops = d.stop();
        JsonNode st = o.get("stop");
        if (st != null) {
            if (!st.isArray()) throw new IllegalArgumentException(where + ": \"stop\" must be a list of non-empty strings (e.g. [\"\\n\\n\"]), got " + st);
            List<String> l = new ArrayList<>();
            for (int i = 0; i < st.size(); i++) {
                JsonNode e = st.get(i);
                if (!e.isTextual() || e.asText().isEmpty())
                    throw new IllegalArgumentException(where + ": \"stop\"[" + i + "] must be a non-empty string, got " + e);
                l.add(e.asText());
            }
            stops = List.copyOf(l);
        }
        return new Request(where, prompt, messages, n, maxTokens, temperature, topP, topK, seed, stops);
    }

    private static int intKey(JsonNode o, String key, int dflt, int min, String note, String where) {
        JsonNode v = o.get(key);
        if (v == null) return dflt;
        if (!v.isIntegralNumber() || !v.canConvertToInt() || v.intValue() < min)
            throw new IllegalArgumentException(where + ": \"" + key + "\" must be an integer >= " + min + note + ", got " + v);
        return v.intValue();
    }

    private static float floatKey(JsonNode o, String key, float dflt, String where) {
        JsonNode v = o.get(key);
        if (v == null) return dflt;
        if (!v.isNumber()) throw new IllegalArgumentException(where + ": \"" + key + "\" must be a number, got " + v);
        float f = v.floatValue();
        // (sampling runs in float: a nonzero value that rounds to 0 would change meaning silently, temperature to greedy;
        // one that rounds to infinity the callers refuse as not finite)
        if (f == 0 && v.doubleValue() != 0)
            throw new IllegalArgumentException(where + ": \"" + key + "\" " + v + " is too small for a float (it would be 0)");
        return f;
    }

    /**
     * What to do when --kv-blocks and the weights do not fit in {@code free} bytes: the blocks that fit beside the
     * weights, or, when not even one does (--kv-blocks must be >= 1), what would make room.
     */
    static String kvBlocksHint(long free, long weights, long blockBytes, DType dtype, boolean cpu) {
        if (free - weights >= blockBytes) return "at most --kv-blocks " + (free - weights) / blockBytes + " fits";
        return "the weights leave no room for one KV block (16 tokens, " + Memory.human(blockBytes) + ")"
                + (dtype == DType.FP32 ? "; --precision bf16 halves the weights and the KV cache" : "")
                + (cpu ? "; raise -Xmx" : "; use a GPU with more free memory");
    }

    private int generate(Tokenizer tok, LlamaWeights w, List<Request> requests, List<String> texts, List<int[]> ids, boolean batch) throws Exception {
        String bad = w.firstNonFiniteTensor();
        if (bad != null)
            throw new IllegalArgumentException(model + ": tensor " + bad + " holds NaN or infinite values; the model is damaged (a diverged run?)");
        Set<Integer> stops = org.grpo4j.internal.model.GenerationStops.of(model, w.config(), tok.eosId());
        // one params per request; sample j of request i draws from stream (its seed, the samples of requests 0..i-1 + j)
        List<SamplingParams> sps = new ArrayList<>(requests.size());
        for (Request r : requests)
            sps.add(new SamplingParams(r.n(), r.temperature(), r.topP(), r.topK(), r.maxTokens(), stops, r.seed(),
                    r.stop().isEmpty() ? null : new StopStrings(r.stop(), tok::decodeAsVllm)));
        Generator g = new Generator(new LlamaModel(w), new Generator.Config(16, kvBlocks, 256, true).withAdmission(Generator.Admission.named(kvAdmission)));
        List<List<Completion>> all = g.generate(ids, sps);
        Generator.Stats st = g.lastStats();
        ObjectMapper m = new ObjectMapper();
        if (!batch) {
            List<Completion> cs = all.get(0);
            if (json) {
                ObjectNode o = m.createObjectNode();
                o.put("prompt", texts.get(0));
                o.putPOJO("prompt_ids", ids.get(0));
                completions(o.putArray("completions"), cs, tok);
                System.out.println(m.writerWithDefaultPrettyPrinter().writeValueAsString(o));
            } else {
                printCompletions(cs, tok);
            }
        } else {
            for (int i = 0; i < all.size(); i++) {
                if (json) { // JSON Lines: one compact object per request, in input order
                    ObjectNode o = m.createObjectNode();
                    o.put("index", i);
                    o.put("prompt", texts.get(i));
                    o.putPOJO("prompt_ids", ids.get(i));
                    completions(o.putArray("completions"), all.get(i), tok);
                    System.out.println(m.writeValueAsString(o));
                } else {
                    System.out.println("== prompt " + i + " ==");
                    printCompletions(all.get(i), tok);
                }
            }
        }
        System.out.flush();
        System.err.printf("grpo4j generate: %s, %s%d tokens in %.2f s (%.0f tokens/s), %d decode steps, KV pool peak %d of %d blocks%s%n",
                Precision.label(w.dtype()), batch ? st.prompts() + " prompts, " + st.sequences() + " completions, " : "", st.generatedTokens(), st.seconds(),
                st.tokensPerSecond(), st.decodeSteps(), st.peakBlocksUsed(), st.poolBlocks(),
                st.preemptions() > 0 ? ", " + st.preemptions() + " preemptions (" + st.recomputedTokens() + " tokens recomputed)" : "");
        return 0;
    }

    /** The completions' fields, as --json prints them. */
    private static void completions(ArrayNode arr, List<Completion> cs, Tokenizer tok) {
        for (Completion c : cs) {
            ObjectNode e = arr.addObject();
            e.put("text", tok.decodeLenient(c.tokens(), true));
            e.putPOJO("ids", c.tokens());
            e.putPOJO("logprobs", c.logprobs());
            e.put("tokens", c.tokens().length);
            e.put("finish_reason", c.finishReason().label());
        }
    }

    private static void printCompletions(List<Completion> cs, Tokenizer tok) {
        for (int i = 0; i < cs.size(); i++) {
            Completion c = cs.get(i);
            System.out.printf("[%d] (%d tokens, %s) %s%n", i, c.tokens().length, c.finishReason().label(), tok.decodeLenient(c.tokens(), true));
        }
    }
}
