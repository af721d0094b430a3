package org.grpo4j.internal.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.List;
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
import org.grpo4j.ChatMessage;
import org.grpo4j.internal.tokenizer.ChatTemplate;
import org.grpo4j.internal.tokenizer.Tokenizer;
import org.grpo4j.internal.train.Precision;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code grpo4j generate}: sample completions for one prompt with the rollout engine. */
@Command(name = "generate", mixinStandardHelpOptions = true, description = "Sample completions of a prompt (chat-templated).")
final class GenerateCommand implements Callable<Integer> {
    @Option(names = "--model", required = true, description = "HF model directory.") Path model;
    @Option(names = "--prompt", required = true, description = "User message.") String prompt;
    @Option(names = "--template", defaultValue = "tokenizer", description = "tulu, llama3, r1_simple_chat, r1_simple_chat_postpend_think, tokenizer or none (raw text) (default: ${DEFAULT-VALUE}).") String template;
    @Option(names = {"-n"}, defaultValue = "1", description = "Completions (default: ${DEFAULT-VALUE}).") int n;
    @Option(names = "--max-tokens", defaultValue = "64", description = "Max new tokens (default: ${DEFAULT-VALUE}).") int maxTokens;
    @Option(names = "--temperature", defaultValue = "1.0", description = "0 = greedy (default: ${DEFAULT-VALUE}).") float temperature;
    @Option(names = "--top-p", defaultValue = "1.0", description = "(default: ${DEFAULT-VALUE})") float topP;
    @Option(names = "--top-k", defaultValue = "0", description = "0 = off (default: ${DEFAULT-VALUE})") int topK;
    @Option(names = "--seed", defaultValue = "0", description = "(default: ${DEFAULT-VALUE})") long seed;
    @Option(names = "--json", description = "Print ids and log-probs as JSON.") boolean json;
    @Option(names = "--backend", defaultValue = "auto", description = "auto, cpu, cuda[:N] (default: ${DEFAULT-VALUE}).") String backend;
    @Option(names = "--kv-blocks", defaultValue = "4096", description = "KV pool size in blocks of 16 tokens (default: ${DEFAULT-VALUE}).") int kvBlocks;
    @Option(names = "--precision", defaultValue = "auto", description = "auto (bf16 on CUDA, fp32 on the CPU, as the trainer's precision), fp32 or bf16:"
            + " the weights, activations and KV cache; log-probs are fp32 either way (default: ${DEFAULT-VALUE}).") String precision;
    @Option(names = "--kv-admission", defaultValue = "on_demand", description = "on_demand (completions take KV blocks as they fill them; the youngest"
            + " are preempted and recomputed when the pool runs out) or worst_case (a completion starts only with blocks for its prompt + --max-tokens"
            + " reserved), as the trainer's kv_admission (default: ${DEFAULT-VALUE}).") String kvAdmission;

    @Override
    public Integer call() throws Exception {
        if (model.toString().isBlank()) throw new IllegalArgumentException("--model is empty");
        if (n < 1) throw new IllegalArgumentException("-n must be >= 1, got " + n);
        if (maxTokens < 1) throw new IllegalArgumentException("--max-tokens must be >= 1, got " + maxTokens);
        if (!(temperature >= 0) || !Float.isFinite(temperature)) throw new IllegalArgumentException("--temperature must be a finite number >= 0, got " + temperature);
        if (!(topP > 0 && topP <= 1)) throw new IllegalArgumentException("--top-p must be in (0, 1], got " + topP);
        if (topK < 0) throw new IllegalArgumentException("--top-k must be >= 0 (0 = off), got " + topK);
        if (kvBlocks < 1) throw new IllegalArgumentException("--kv-blocks must be >= 1, got " + kvBlocks);
        if (!kvAdmission.equals("on_demand") && !kvAdmission.equals("worst_case"))
            throw new IllegalArgumentException("--kv-admission must be on_demand or worst_case, got " + kvAdmission);
        Precision.check(precision, "--precision");
        Backends.checkSpec(backend);
        if (!Files.isDirectory(model)) throw new java.nio.file.NoSuchFileException(model.toString(), null, "--model: no such model directory");
        LlamaConfig lc = LlamaConfig.read(model);
        // the results: per completion its ids and log-probs (boxed while generating: about 48 bytes a token)
        Memory.requireHeap((long) n * maxTokens * 48, "-n " + n + " x --max-tokens " + maxTokens, "ask for fewer or shorter completions");
        try (Tokenizer tok = Tokenizer.load(model); Backend be = Backends.choose(backend, org.grpo4j.internal.backend.Ops.ALL).backend()) {
            DType dtype = Precision.resolve(precision, be);
            if (dtype == DType.BF16) Precision.requireBf16Generation(be, precision.equals("auto") ? "--precision auto (bf16 on " + be.name() + ")" : "--precision bf16",
                    "use --precision fp32");
            long blockBytes = 2L * lc.numLayers() * lc.kvDim() * dtype.bytes() * 16, kvBytes = blockBytes * kvBlocks;
            long weights = LlamaWeights.loadBytes(lc, dtype);
            Memory.require(be, kvBytes + weights, "--kv-blocks " + kvBlocks + " (a KV cache of " + Memory.human(kvBytes) + ") next to the " + Precision.label(dtype)
                    + " weights (" + Memory.human(weights) + ")", free -> kvBlocksHint(free, weights, blockBytes, dtype, be instanceof CpuBackend));
            try (LlamaWeights w = LlamaWeights.load(be, model, dtype)) {
                return generate(tok, be, w);
            }
        }
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

    private int generate(Tokenizer tok, Backend be, LlamaWeights w) throws Exception {
        {   // one scope for the generation and its output
            String bad = w.firstNonFiniteTensor();
            if (bad != null)
                throw new IllegalArgumentException(model + ": tensor " + bad + " holds NaN or infinite values; the model is damaged (a diverged run?)");
            String text = template.equals("none") ? prompt
                    : ChatTemplate.named(template, tok).render(List.of(new ChatMessage("user", prompt)), true, tok);
            int[] ids = tok.encode(text);
            if (ids.length == 0) throw new IllegalArgumentException("the prompt is empty after templating (--template none with an empty --prompt)");
            if ((long) ids.length + maxTokens > w.config().maxPositionEmbeddings())
                throw new IllegalArgumentException("--max-tokens " + maxTokens + " + the prompt's " + ids.length + " tokens exceed the model's max_position_embeddings "
                        + w.config().maxPositionEmbeddings());
            Set<Integer> stops = new HashSet<>(w.config().eosTokenIds());
            if (tok.eosId() >= 0) stops.add(tok.eosId());
            SamplingParams sp = new SamplingParams(n, temperature, topP, topK, maxTokens, stops, seed);
            Generator g = new Generator(new LlamaModel(w), new Generator.Config(16, kvBlocks, 256, true).withAdmission(Generator.Admission.named(kvAdmission)));
            List<Completion> cs = g.generate(List.of(ids), sp).get(0);
            Generator.Stats st = g.lastStats();
            if (json) {
                ObjectMapper m = new ObjectMapper();
                ObjectNode o = m.createObjectNode();
                o.put("prompt", text);
                o.putPOJO("prompt_ids", ids);
                ArrayNode arr = o.putArray("completions");
                for (Completion c : cs) {
                    ObjectNode e = arr.addObject();
                    e.put("text", tok.decodeLenient(c.tokens(), true));
                    e.putPOJO("ids", c.tokens());
                    e.putPOJO("logprobs", c.logprobs());
                    e.put("tokens", c.tokens().length);
                    e.put("finish_reason", c.finishReason().label());
                }
                System.out.println(m.writerWithDefaultPrettyPrinter().writeValueAsString(o));
            } else {
                for (int i = 0; i < cs.size(); i++) {
                    Completion c = cs.get(i);
                    System.out.printf("[%d] (%d tokens, %s) %s%n", i, c.tokens().length, c.finishReason().label(), tok.decodeLenient(c.tokens(), true));
                }
            }
            System.err.printf("grpo4j generate: %s, %d tokens in %.2f s (%.0f tokens/s), %d decode steps, KV pool peak %d of %d blocks%s%n",
                    Precision.label(w.dtype()), st.generatedTokens(), st.seconds(), st.tokensPerSecond(), st.decodeSteps(), st.peakBlocksUsed(), st.poolBlocks(),
                    st.preemptions() > 0 ? ", " + st.preemptions() + " preemptions (" + st.recomputedTokens() + " tokens recomputed)" : "");
        }
        return 0;
    }
}
