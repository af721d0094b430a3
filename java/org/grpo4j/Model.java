package org.grpo4j;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Objects;
import java.util.Set;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.Memory;
import org.grpo4j.internal.model.LlamaConfig;
import org.grpo4j.internal.model.LlamaModel;
import org.grpo4j.internal.model.LlamaWeights;
import org.grpo4j.internal.rollout.Generator;
import org.grpo4j.internal.rollout.SamplingParams;
import org.grpo4j.internal.rollout.StopStrings;
import org.grpo4j.internal.tokenizer.ChatTemplate;
import org.grpo4j.internal.tokenizer.Tokenizer;
import org.grpo4j.internal.train.Precision;

/**
 * A Llama-family model and its tokenizer, loaded from a Hugging Face model directory ({@code config.json},
 * {@code model.safetensors} or its shards with {@code model.safetensors.index.json}, {@code tokenizer.json},
 * {@code tokenizer_config.json}): what {@code save_pretrained} writes, and what grpo4j writes into each checkpoint
 * ({@code OUTPUT/checkpoints/step_N/model}).
 *
 * <pre>{@code
 * try (Backend backend = Backend.open("auto");
 *      Model model = Model.load(Path.of("runs/demo/checkpoints/step_20/model"), backend)) {
 *     List<List<Completion>> out = model.generateChats(
 *             List.of(List.of(new ChatMessage("user", "Mia has 3 pens and gets 4 more. How many pens now?"))),
 *             Sampling.defaults().samples(4).maxTokens(16));
 *     for (Completion c : out.get(0)) System.out.println(c.text() + "  logp=" + c.sumLogprob());
 * }
 * }</pre>
 *
 * <p>Generation batches every prompt's samples on a paged KV cache (each prompt's blocks are shared by its samples),
 * sized for the request from the backend's free memory; a request that cannot fit even one sequence is refused
 * before anything is allocated. The weights, the activations and the KV cache are held in the load's precision: by
 * default bf16 on CUDA and fp32 on the CPU, as the trainer's {@code precision: auto}; {@link #load(Path, Backend,
 * String, String)} chooses it. Log-probabilities are fp32 either way.
 *
 * <p><b>Thread safety:</b> thread-safe. Each generation holds the {@link Backend}'s lock, so generations from several
 * threads (and other work on the same backend, such as a {@link org.grpo4j.train.GrpoTrainer#run run}) take turns.
 * {@link #encode}, {@link #decode} and {@link #renderChat} use the tokenizer alone and do not wait for the backend. A
 * reward function of a run that holds the backend cannot generate with (or load) a model on it, since the run waits
 * for the reward: that call fails at once with {@link IllegalStateException} (load the reward model on another
 * backend). {@link #close()} waits for a call in progress; any call after it throws {@link IllegalStateException}.
 */
public final class Model implements AutoCloseable {
    /** Tokens per KV-cache block (the trainer's and the CLI's size). */
    private static final int BLOCK = 16;
    /** Sequences decoding at once at most (the CLI's figure); more wait for a slot. */
    private static final int MAX_BATCH = 256;
    private static final Set<String> ROLES = Set.of("system", "user", "assistant");

    private final Backend backend;
    private final Path dir;
    private final Tokenizer tok;
    private final LlamaWeights weights;
    private final String precision; // the weights' dtype: fp32 or bf16
    private final LlamaModel model;
    private final ChatTemplate template;
    private final Set<Integer> stopIds;
    /** Held by the tokenizer-only calls and by close (after the backend's lock): they do not wait for a generation. */
    private final Object tokLock = new Object();
    private boolean closed; // written holding backend and tokLock; read holding either

    private Model(Backend backend, Path dir, Tokenizer tok, LlamaWeights weights, ChatTemplate template, Set<Integer> stopIds) {
        this.backend = backend;
        this.dir = dir;
        this.tok = tok;
        this.weights = weights;
        this.precision = Precision.label(weights.dtype());
        this.model = new LlamaModel(weights);
        this.template = template;
        this.stopIds = Set.copyOf(stopIds);
    }

    /**
     * Loads a model with the chat template of its tokenizer ({@code chat_template} in {@code tokenizer_config.json};
     * without one, {@link #generateChats} is refused and {@link #generate} with raw text still works), in precision
     * {@code "auto"} (bf16 on CUDA, fp32 on the CPU).
     *
     * @param dir     the model directory
     * @param backend where the weights live and generation runs
     * @return the loaded model; close it (or its backend) when done
     * @throws NullPointerException     if an argument is null
     * @throws NoSuchFileException      if {@code dir} is not a directory, or a required file is missing
     * @throws IOException              if a file cannot be read
     * @throws IllegalArgumentException if a file is malformed, the architecture is not one grpo4j computes, the
     *                                  weights hold NaN or infinity, they do not fit in the backend's memory, or
     *                                  (bf16 on CUDA) the backend lacks a bf16 op (named)
     * @throws IllegalStateException    if the backend is closed
     */
    public static Model load(Path dir, Backend backend) throws IOException { return load(dir, backend, null, "auto"); }

    /**
     * Loads a model with a named chat template, in precision {@code "auto"} (bf16 on CUDA, fp32 on the CPU).
     *
     * @param dir          the model directory
     * @param backend      where the weights live and generation runs
     * @param chatTemplate {@code "tulu"}, {@code "llama3"}, {@code "r1_simple_chat"},
     *                     {@code "r1_simple_chat_postpend_think"}, {@code "tokenizer"} (the tokenizer's own), or
     *                     null for the tokenizer's own when it has one
     * @return the loaded model; close it (or its backend) when done
     * @throws NullPointerException     if {@code dir} or {@code backend} is null
     * @throws NoSuchFileException      if {@code dir} is not a directory, or a required file is missing
     * @throws IOException              if a file cannot be read
     * @throws IllegalArgumentException if the template name is unknown (or "tokenizer" and it has none), a file is
     *                                  malformed, the architecture is not one grpo4j computes, the weights hold NaN
     *                                  or infinity, they do not fit in the backend's memory, or (bf16 on CUDA) the
     *                                  backend lacks a bf16 op (named)
     * @throws IllegalStateException    if the backend is closed
     */
    public static Model load(Path dir, Backend backend, String chatTemplate) throws IOException { return load(dir, backend, chatTemplate, "auto"); }

    /**
     * Loads a model with a named chat template in a chosen precision.
     *
     * @param dir          the model directory
     * @param backend      where the weights live and generation runs
     * @param chatTemplate as in {@link #load(Path, Backend, String)}; null for the tokenizer's own when it has one
     * @param precision    the dtype of the weights, the activations and the KV cache: {@code "auto"} (bf16 on CUDA,
     *                     fp32 on the CPU, as the trainer's {@code precision: auto} and the other overloads),
     *                     {@code "fp32"} or {@code "bf16"} (half the memory; the CPU runs it too, slower); the weights
     *                     are read in fp32 and rounded to bf16 once; log-probabilities are fp32 either way
     * @return the loaded model; close it (or its backend) when done
     * @throws NullPointerException     if {@code dir}, {@code backend} or {@code precision} is null
     * @throws NoSuchFileException      if {@code dir} is not a directory, or a required file is missing
     * @throws IOException              if a file cannot be read
     * @throws IllegalArgumentException if the precision is not one of the three, it is bf16 and the backend lacks a
     *                                  bf16 op (named), the template name is unknown (or "tokenizer" and it has
     *                                  none), a file is malformed, the architecture is not one grpo4j computes, the
     *                                  weights hold NaN or infinity, or they do not fit in the backend's memory
     * @throws IllegalStateException    if the backend is closed
     */
    public static Model load(Path dir, Backend backend, String chatTemplate, String precision) throws IOException {
        Objects.requireNonNull(dir, "dir");
        Objects.requireNonNull(backend, "backend");
        Objects.requireNonNull(precision, "precision");
        Precision.check(precision, "precision");
        if (dir.toString().isBlank()) throw new IllegalArgumentException("dir is empty");
        if (!Files.isDirectory(dir)) throw new NoSuchFileException(dir.toString(), null, "no such model directory");
        refuseInItsRunsRewardCall(backend, "Model.load(" + dir + ")");
        synchronized (backend) {
            backend.requireOpen();
            LlamaConfig lc = LlamaConfig.read(dir);
            Tokenizer tok = Tokenizer.load(dir);
            LlamaWeights w = null;
            try {
                // where generation stops: the tokenizer's EOS and the generation config's eos_token_id, as HF and vLLM
                Set<Integer> stops = org.grpo4j.internal.model.GenerationStops.of(dir, lc, tok.eosId());
                ChatTemplate t = chatTemplate != null ? ChatTemplate.named(chatTemplate, tok)
                        : tok.chatTemplate() != null ? ChatTemplate.named("tokenizer", tok) : null;
                org.grpo4j.internal.backend.Backend be = org.grpo4j.internal.ApiAccess.backend(backend);
                DType dtype = Precision.resolve(precision, be);
                if (dtype == DType.BF16)
                    Precision.requireBf16Generation(be, precision.equals("auto") ? "precision \"auto\" (bf16 on " + be.name() + ")" : "precision \"bf16\"",
                            "load with precision \"fp32\"");
                boolean cpu = be instanceof org.grpo4j.internal.backend.CpuBackend;
                String smaller = dtype == DType.FP32 ? "load in precision \"bf16\" (half the bytes)" : null;
                Memory.require(be, LlamaWeights.loadBytes(lc, dtype), dir + ": the " + Precision.label(dtype) + " weights",
                        cpu ? "use a larger -Xmx" + (smaller == null ? "" : ", or " + smaller)
                                : (smaller == null ? "" : smaller + ", or ") + "use a device with more free memory");
                w = LlamaWeights.load(be, dir, dtype);
                String bad = w.firstNonFiniteTensor();
                if (bad != null)
                    throw new IllegalArgumentException(dir + ": tensor " + bad + " holds NaN or infinite values; the model is damaged (a diverged run?)");
                Model m = new Model(backend, dir, tok, w, t, stops);
                backend.attach(m);
                return m;
            } catch (IOException | RuntimeException | Error e) {
                if (w != null) w.close();
                tok.close();
                throw e;
            }
        }
    }

    /**
     * Samples completions of raw text prompts (no chat template; special tokens written in the text are
     * recognized, none is added).
     *
     * @param prompts  the prompt texts
     * @param sampling how to sample
     * @return per prompt, {@link Sampling#samples()} completions in sample order
     * @throws NullPointerException     if an argument or a prompt is null
     * @throws IllegalArgumentException if a prompt is empty, or a prompt plus {@code maxTokens} exceeds the model's
     *                                  context or the backend's free memory
     * @throws IllegalStateException    if the model or its backend is closed
     */
    public List<List<Completion>> generate(List<String> prompts, Sampling sampling) {
        Objects.requireNonNull(sampling, "sampling");
        return generate(prompts, Collections.nCopies(Objects.requireNonNull(prompts, "prompts").size(), sampling));
    }

    /**
     * Samples completions of raw text prompts, each prompt with its own settings (as vLLM takes a list of sampling
     * params): prompt i has {@code samplings.get(i).samples()} completions of at most its {@code maxTokens}, drawn
     * at its temperature, top-p, top-k and seed, and stopped by its stop strings, in one batch with the others.
     * Sample j of prompt i draws from the stream (seed of prompt i, k + j), k being the samples of the prompts before
     * it: with every sampling equal, {@link #generate(List, Sampling)}'s streams and tokens.
     *
     * @param prompts   the prompt texts
     * @param samplings how to sample each prompt, one per prompt
     * @return per prompt, its sampling's {@link Sampling#samples()} completions in sample order
     * @throws NullPointerException     if an argument, a prompt or a sampling is null
     * @throws IllegalArgumentException if the lists differ in size, a prompt is empty, or a prompt plus its
     *                                  {@code maxTokens} exceeds the model's context or the backend's free memory
     * @throws IllegalStateException    if the model or its backend is closed
     */
    public List<List<Completion>> generate(List<String> prompts, List<Sampling> samplings) {
        Objects.requireNonNull(prompts, "prompts");
        checkSamplings(samplings, prompts.size(), "prompts");
        refuseInItsRunsRewardCall(backend, "generate");
        synchronized (backend) {
            requireOpen();
            List<int[]> ids = new ArrayList<>(prompts.size());
            for (int i = 0; i < prompts.size(); i++) {
                String p = Objects.requireNonNull(prompts.get(i), "prompts[" + i + "]");
                int[] t = tok.encode(p);
                if (t.length == 0) throw new IllegalArgumentException("prompts[" + i + "] is empty");
                ids.add(t);
            }
            return generateIds(ids, samplings, "prompts");
        }
    }

    /**
     * Samples the assistant's reply to each chat, rendered with the model's chat template and its generation prompt.
     *
     * @param chats    the conversations; roles are "system", "user" or "assistant"
     * @param sampling how to sample
     * @return per chat, {@link Sampling#samples()} completions in sample order
     * @throws NullPointerException     if an argument, a chat or a message is null
     * @throws IllegalArgumentException if a chat is empty, a role is not one of the three, or a prompt plus
     *                                  {@code maxTokens} exceeds the model's context or the backend's free memory
     * @throws IllegalStateException    if the model or its backend is closed, or the model has no chat template
     */
    public List<List<Completion>> generateChats(List<List<ChatMessage>> chats, Sampling sampling) {
        Objects.requireNonNull(sampling, "sampling");
        return generateChats(chats, Collections.nCopies(Objects.requireNonNull(chats, "chats").size(), sampling));
    }

    /**
     * Samples the assistant's reply to each chat with that chat's own settings, as {@link #generate(List, List)} does
     * for raw text.
     *
     * @param chats     the conversations; roles are "system", "user" or "assistant"
     * @param samplings how to sample each chat's reply, one per chat
     * @return per chat, its sampling's {@link Sampling#samples()} completions in sample order
     * @throws NullPointerException     if an argument, a chat, a message or a sampling is null
     * @throws IllegalArgumentException if the lists differ in size, a chat is empty, a role is not one of the three,
     *                                  or a prompt plus its {@code maxTokens} exceeds the model's context or the
     *                                  backend's free memory
     * @throws IllegalStateException    if the model or its backend is closed, or the model has no chat template
     */
    public List<List<Completion>> generateChats(List<List<ChatMessage>> chats, List<Sampling> samplings) {
        Objects.requireNonNull(chats, "chats");
        checkSamplings(samplings, chats.size(), "chats");
        refuseInItsRunsRewardCall(backend, "generateChats");
        synchronized (backend) {
            requireOpen();
            List<int[]> ids = new ArrayList<>(chats.size());
            for (int i = 0; i < chats.size(); i++) ids.add(tok.encode(render(chats.get(i), "chats[" + i + "]")));
            return generateIds(ids, samplings, "chats");
        }
    }

    private static void checkSamplings(List<Sampling> samplings, int inputs, String name) {
        Objects.requireNonNull(samplings, "samplings");
        for (int i = 0; i < samplings.size(); i++) Objects.requireNonNull(samplings.get(i), "samplings[" + i + "]");
        if (samplings.size() != inputs)
            throw new IllegalArgumentException(samplings.size() + " samplings for " + inputs + " " + name + ": give one per " + name.substring(0, name.length() - 1));
    }

    /**
     * The prompt text {@link #generateChats} samples from for one chat.
     *
     * @param chat the conversation
     * @return the rendered text, ending with the template's generation prompt
     * @throws NullPointerException     if {@code chat} or a message is null
     * @throws IllegalArgumentException if the chat is empty or a role is not system, user or assistant
     * @throws IllegalStateException    if the model is closed or has no chat template
     */
    public String renderChat(List<ChatMessage> chat) {
        synchronized (tokLock) {
            requireOpen();
            return render(chat, "chat");
        }
    }

    /**
     * Token ids of a text, with no special token added.
     *
     * @param text the text
     * @return its ids
     * @throws NullPointerException  if {@code text} is null
     * @throws IllegalStateException if the model is closed
     */
    public int[] encode(String text) {
        Objects.requireNonNull(text, "text");
        synchronized (tokLock) {
            requireOpen();
            return tok.encode(text);
        }
    }

    /**
     * The text of token ids, special tokens skipped.
     *
     * @param ids token ids in [0, vocabulary size)
     * @return the text
     * @throws NullPointerException     if {@code ids} is null
     * @throws IllegalArgumentException if an id is outside the vocabulary
     * @throws IllegalStateException    if the model is closed
     */
    public String decode(int[] ids) {
        Objects.requireNonNull(ids, "ids");
        synchronized (tokLock) {
            requireOpen();
            int vocab = weights.config().vocabSize();
            for (int i = 0; i < ids.length; i++)
                if (ids[i] < 0 || ids[i] >= vocab) throw new IllegalArgumentException("ids[" + i + "] = " + ids[i] + " is outside the vocabulary [0, " + vocab + ")");
            return tok.decodeLenient(ids, true);
        }
    }

    /**
     * The directory the model was loaded from.
     *
     * @return the directory, as given
     */
    public Path directory() { return dir; }

    /**
     * The backend the model lives on.
     *
     * @return the backend
     */
    public Backend backend() { return backend; }

    /**
     * The number of parameters.
     *
     * @return the count of weights, embeddings included
     */
    public long parameters() { return weights.layout().totalElements(); }

    /**
     * The model's context length.
     *
     * @return {@code max_position_embeddings}: prompt plus completion tokens may not exceed it
     */
    public int maxPositions() { return weights.config().maxPositionEmbeddings(); }

    /**
     * The precision the model was loaded in ({@code "auto"} resolved).
     *
     * @return {@code "fp32"} or {@code "bf16"}: the dtype of the weights, the activations and the KV cache
     */
    public String precision() { return precision; }

    /**
     * Frees the weights and the tokenizer; waits for a call in progress. Idempotent. Both are freed and the model leaves
     * its backend even when freeing one of them fails (the first failure is rethrown, a later one suppressed in it).
     */
    @Override
    public void close() {
        refuseInItsRunsRewardCall(backend, "Model.close(" + dir + ")");
        try {
            synchronized (backend) {
                synchronized (tokLock) {
                    if (closed) return;
                    closed = true;
                    org.grpo4j.internal.util.Closing.closeAll(dir.toString(), List.<AutoCloseable>of(weights::close, tok::close));
                }
            }
        } finally {
            backend.detach(this);
        }
    }

    /** The directory, backend and precision, for logs. */
    @Override
    public String toString() { return "Model[" + dir + " on " + backend + ", " + precision() + "]"; }

    // ---- implementation -----------------------------------------------------------------------------------------

    /**
     * Fails at once where the backend's lock would be waited for until a reward's time limit: in a reward function's
     * call while a trainer's run holds the backend (the run waits for that reward). Any run's: a reward function scored
     * outside that run (another trainer's, or {@code Rewards.score} from another thread) would wait for the run's end.
     */
    private static void refuseInItsRunsRewardCall(Backend backend, String what) {
        if (org.grpo4j.internal.reward.Scoring.inRewardCall() && !Thread.holdsLock(backend) && org.grpo4j.internal.ApiAccess.running(backend))
            throw new IllegalStateException(what + " on backend " + backend + " from a reward function while a GrpoTrainer run holds that"
                    + " backend: the run waits for the reward, so the call would wait until the reward's time limit. Load the model the reward"
                    + " function generates with on another Backend (Backend.open(\"cpu\") or another device); encode, decode and renderChat"
                    + " work from a reward function");
    }

    private void requireOpen() {
        if (closed) throw new IllegalStateException("model " + dir + " is closed");
        backend.requireOpen(); // a closed backend closes its models first, so this holds while the model is open
    }

    private String render(List<ChatMessage> chat, String name) {
        Objects.requireNonNull(chat, name);
        if (chat.isEmpty()) throw new IllegalArgumentException(name + " is empty");
        for (int j = 0; j < chat.size(); j++) {
            ChatMessage m = Objects.requireNonNull(chat.get(j), name + "[" + j + "]");
            if (!ROLES.contains(m.role()))
                throw new IllegalArgumentException(name + "[" + j + "].role \"" + m.role() + "\" is not one of system, user, assistant (the chat templates render only these)");
        }
        if (template == null)
            throw new IllegalStateException("model " + dir + " has no chat template (its tokenizer_config.json has no chat_template, and there is no chat_template.jinja): load it with"
                    + " Model.load(dir, backend, \"tulu\") (or llama3, r1_simple_chat), or use generate with raw text");
        return template.render(chat, true, tok);
    }

    private List<List<Completion>> generateIds(List<int[]> prompts, List<Sampling> samplings, String name) {
        if (prompts.isEmpty()) return List.of();
        long total = 0, perBlockBytes = model.kvBytesPerToken() * BLOCK;
        int most = 0, mostAt = 0;
        for (int i = 0; i < prompts.size(); i++) {
            int p = prompts.get(i).length, n = samplings.get(i).samples(), max = samplings.get(i).maxTokens();
            int vocab = weights.config().vocabSize();
            if (samplings.get(i).topK() > vocab) // (refused here, before the prefill, not by the sampler after it)
                throw new IllegalArgumentException("samplings[" + i + "].topK " + samplings.get(i).topK() + " exceeds the vocabulary of " + vocab + " tokens");
            if ((long) p + max > maxPositions())
                throw new IllegalArgumentException(name + "[" + i + "] (" + p + " tokens) + maxTokens " + max + " exceeds the model's context of " + maxPositions()
                        + " tokens (max_position_embeddings)");
            // the prompt's blocks (shared by its samples) and each sample's own: its part of the last prompt block
            // onwards
            int need = ceilDiv(p, BLOCK) + n * ceilDiv(p % BLOCK + max - 1, BLOCK);
            total += need;
            int one = ceilDiv(p, BLOCK) + ceilDiv(p % BLOCK + max - 1, BLOCK);
            if (one > most) {
                most = one;
                mostAt = i;
            }
        }
        org.grpo4j.internal.backend.Backend be = org.grpo4j.internal.ApiAccess.backend(backend);
        // all sequences at once when they fit in half of what is free (the rest is for activations and logits);
        // otherwise a smaller pool and continuous batching; at least one sequence
        long free = Memory.available(be);
        long fit = free < 0 ? total : free / 2 / perBlockBytes;
        long blocks = Math.max(most, Math.min(total, fit));
        Memory.require(be, blocks * perBlockBytes, "the KV cache for " + name + "[" + mostAt + "] (" + prompts.get(mostAt).length + " tokens) plus one completion of "
                + samplings.get(mostAt).maxTokens() + " tokens", "ask for a smaller maxTokens");
        java.util.Map<Sampling, SamplingParams> made = new java.util.IdentityHashMap<>(); // one per distinct Sampling object
        List<SamplingParams> sp = new ArrayList<>(samplings.size());
        for (Sampling s : samplings)
            sp.add(made.computeIfAbsent(s, q -> new SamplingParams(q.samples(), (float) q.temperature(), (float) q.topP(), q.topK(), q.maxTokens(), stopIds,
                    q.seed(), q.stopStrings().isEmpty() ? null : new StopStrings(q.stopStrings(), tok::decodeAsVllm), 0)));
        Generator g = new Generator(model, new Generator.Config(BLOCK, (int) Math.min(Integer.MAX_VALUE, blocks), MAX_BATCH, true));
        List<List<org.grpo4j.internal.rollout.Completion>> raw = g.generate(prompts, sp);
        List<List<Completion>> out = new ArrayList<>(raw.size());
        for (List<org.grpo4j.internal.rollout.Completion> cs : raw) {
            List<Completion> row = new ArrayList<>(cs.size());
            for (org.grpo4j.internal.rollout.Completion c : cs)
                row.add(new Completion(tok.decodeLenient(c.tokens(), true), c.tokens(), c.logprobs(), Completion.FinishReason.valueOf(c.finishReason().name())));
            out.add(List.copyOf(row));
        }
        return List.copyOf(out);
    }

    private static int ceilDiv(long a, int b) { return (int) ((a + b - 1) / b); }
}
