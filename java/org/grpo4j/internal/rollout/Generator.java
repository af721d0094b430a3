package org.grpo4j.internal.rollout;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Deque;
import java.util.List;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.SamplingSpec;
import org.grpo4j.internal.backend.Tensor;
import org.grpo4j.internal.model.LlamaModel;
import org.grpo4j.internal.model.PackedBatch;

/**
 * Batched sampling with a paged KV cache whose prompt blocks are shared by each prompt's samples.
 *
 * <ul>
 *   <li>Each prompt is prefilled once; its full KV blocks are shared (reference-counted) by its n samples, and a
 *       partially filled last prompt block is copied into each sample's first private block (copy-on-write).</li>
 *   <li>Blocks come from a fixed pool, handed out one of two ways ({@link Admission}). ON_DEMAND (the default, as
 *       vLLM's scheduler): a prompt is prefilled, and a sample admitted, when the pool has the blocks it needs now, less
 *       a watermark of 1% of the pool while others run; a sample takes a block when its tokens reach one. When a decode
 *       step needs more blocks than are free, the most recently admitted samples are preempted: every block they
 *       hold is released, and they resume, oldest first and before any new sample, once blocks for the tokens they
 *       have fit again (less the watermark while others run). A resumed sample's K/V are recomputed by one prefill of its prompt and the tokens it has
 *       (vLLM's recompute; nothing is sampled again) into blocks of its own, so it no longer shares its prompt's blocks.
 *       Prefilled prompts whose samples are not all admitted yet are given up (and prefilled again later) only when the
 *       oldest sample could not go on otherwise. WORST_CASE: a sample is admitted only when every block it can still
 *       need (prompt + max_tokens) is reserved, so nothing is ever preempted, but only as many samples run at once as
 *       could all reach max_tokens.</li>
 *   <li>Sample j of prompt i draws its step-t token from Philox(seed; stream = i*n + j, step = t), and every row's
 *       logits are computed independently of the rest of the batch, so the same seed and inputs give the same tokens
 *       whatever the pool size, admission, preemptions, batch size or prefix sharing (on the CPU bit for bit; on CUDA
 *       up to fp32 summation order, which the GEMM shapes, the decode attention's splits and its prefix groups move,
 *       and a recomputed token's K/V may differ from the first ones in the last bits).</li>
 *   <li>With prefix sharing, each decode step groups a prompt's live samples next to each other in the batch, and the
 *       decode attention reads the prompt's shared blocks once per group (cascade decoding,
 *       {@link LlamaModel.DecodeSession#run(int[], int[], int[], int[], int, int[], int[], SamplingSpec)}).</li>
 *   <li>Pipelined decode ({@link Config#pipelining()}, where the backend queues its ops): while no sample waits for
 *       room it could get, each decode step is issued before the host takes in the step before, and takes that step's
 *       tokens on the device, so the host's work between steps overlaps the device's. A sample that stopped on a token
 *       is computed one step too many (that row is dropped); the completions are the serial ones (bit for bit on the
 *       CPU; on CUDA up to the other batch shapes' rounding).</li>
 * </ul>
 */
public final class Generator {

    /**
     * Pipelined decode (see the class comment): AUTO where the backend queues its ops ({@link Backend#queuesOps()}:
     * CUDA), not on the CPU, where every op is done before the host goes on, so nothing would overlap and the rows of
     * stopped samples would only cost; ON and OFF regardless. The default is AUTO, OFF with
     * {@code -Dgrpo4j.pipelinedDecode=false} (for measuring, or ruling it out).
     */
    public enum Pipelining {
        AUTO, ON, OFF;

        static final Pipelining DEFAULT = "false".equals(System.getProperty("grpo4j.pipelinedDecode")) ? OFF : AUTO;
    }

    /**
     * How samples get KV blocks (see the class comment): ON_DEMAND as they fill them, preempting the youngest samples
     * when the pool runs out; WORST_CASE all they could ever need, up front.
     */
    public enum Admission {
        ON_DEMAND, WORST_CASE;

        /** By the trainer's spelling (kv_admission): on_demand, worst_case. */
        public static Admission named(String label) { return valueOf(label.toUpperCase(java.util.Locale.ROOT)); }
    }

    /**
     * blockSize tokens per KV block; numBlocks in the pool; at most maxBatch sequences decoding at once; graphs: record
     * each decode batch bucket's step once and replay it where the backend has graphs (CUDA graphs; no effect on the
     * CPU); prefixGroups (with sharePrefix): decode attention reads each prompt's shared blocks once per group of its
     * live samples (off: once per sample, as without sharing; for measuring the difference); admission: how samples
     * get blocks; prefillTokens (0: no bound): the most tokens one prefill holds (what the caller's memory plan counts),
     * never less than one sequence of the call (ON_DEMAND: a prompt and max_tokens - 1 tokens, what a resumed sample
     * prefills; WORST_CASE: the longest prompt), so that prompts are prefilled in several calls where they exceed it; pipelining ({@link Pipelining}):
     * while no sample waits for room it could get, each decode step is issued before the host takes in the one before
     * it, whose tokens it reads on the device, so the host's work between steps overlaps the device's (a sample that
     * stopped is then computed one step too many, and that row dropped).
     */
    public record Config(int blockSize, int numBlocks, int maxBatch, boolean sharePrefix, boolean graphs, boolean prefixGroups,
                         Admission admission, long prefillTokens, Pipelining pipelining) {
        public Config {
            if (blockSize < 1 || numBlocks < 1 || maxBatch < 1 || prefillTokens < 0)
                throw new IllegalArgumentException("generator: block_size, num_blocks and max_batch must be >= 1, prefill_tokens >= 0");
            java.util.Objects.requireNonNull(admission, "generator: admission");
            java.util.Objects.requireNonNull(pipelining, "generator: pipelining");
        }

        public Config(int blockSize, int numBlocks, int maxBatch, boolean sharePrefix, boolean graphs, boolean prefixGroups, Admission admission,
                      long prefillTokens) {
            this(blockSize, numBlocks, maxBatch, sharePrefix, graphs, prefixGroups, admission, prefillTokens, Pipelining.DEFAULT);
        }

        public Config(int blockSize, int numBlocks, int maxBatch, boolean sharePrefix, boolean graphs, boolean prefixGroups, Admission admission) {
            this(blockSize, numBlocks, maxBatch, sharePrefix, graphs, prefixGroups, admission, 0);
        }

        public Config(int blockSize, int numBlocks, int maxBatch, boolean sharePrefix, boolean graphs, boolean prefixGroups) {
            this(blockSize, numBlocks, maxBatch, sharePrefix, graphs, prefixGroups, Admission.ON_DEMAND);
        }

        public Config(int blockSize, int numBlocks, int maxBatch, boolean sharePrefix, boolean graphs) {
            this(blockSize, numBlocks, maxBatch, sharePrefix, graphs, true);
        }

        public Config(int blockSize, int numBlocks, int maxBatch, boolean sharePrefix) {
            this(blockSize, numBlocks, maxBatch, sharePrefix, true);
        }

        public Config withGraphs(boolean on) {
            return new Config(blockSize, numBlocks, maxBatch, sharePrefix, on, prefixGroups, admission, prefillTokens, pipelining);
        }

        public Config withPrefixGroups(boolean on) {
            return new Config(blockSize, numBlocks, maxBatch, sharePrefix, graphs, on, admission, prefillTokens, pipelining);
        }

        public Config withAdmission(Admission a) {
            return new Config(blockSize, numBlocks, maxBatch, sharePrefix, graphs, prefixGroups, a, prefillTokens, pipelining);
        }

        public Config withPrefillTokens(long tokens) {
            return new Config(blockSize, numBlocks, maxBatch, sharePrefix, graphs, prefixGroups, admission, tokens, pipelining);
        }

        /** Pipelining on (also on a backend that runs each op at once: for tests) or off. */
        public Config withPipelined(boolean on) {
            return new Config(blockSize, numBlocks, maxBatch, sharePrefix, graphs, prefixGroups, admission, prefillTokens,
                    on ? Pipelining.ON : Pipelining.OFF);
        }

        /** A pool sized by a memory budget in bytes. */
        public static Config forBudget(LlamaModel model, long budgetBytes, int blockSize, int maxBatch) {
            long perBlock = model.kvBytesPerToken() * blockSize;
            int blocks = (int) Math.max(1, Math.min(Integer.MAX_VALUE, budgetBytes / perBlock));
            return new Config(blockSize, blocks, maxBatch, true);
        }
    }

    /**
     * Figures of the last {@link #generate} call; prefixGroupRows counts, over the decode steps, the groups of a
     * prompt's live samples whose attention read the prompt's shared blocks once per group; preemptions the samples
     * set aside for blocks (ON_DEMAND), recomputedTokens the tokens prefilled again to resume them (prefillTokens
     * counts them too, and prompts prefilled again), decodeRows the sequences over all decode steps, peakBatch the
     * most in one, bookkeepingSeconds the generator's host time in decode steps beside the issue and the device's
     * outputs; overlappedSteps the decode steps issued before the host took in the step before (pipelined), droppedRows
     * the rows they computed for samples that had stopped.
     */
    public record Stats(int prompts, int sequences, long prefillTokens, long generatedTokens, int decodeSteps, double seconds,
                        int poolBlocks, int peakBlocksUsed, double meanBlocksUsed, long poolBytes, double decodeHostSeconds,
                        long graphReplays, long prefixGroupRows, int preemptions, long recomputedTokens, long decodeRows, int peakBatch,
                        double bookkeepingSeconds, int overlappedSteps, long droppedRows, int graphSetupSteps, double graphSetupSeconds) {
        /**
         * Host time to issue one decode step (upload, launches or one graph replay, the outputs' snapshot), before
         * waiting for the device; the steps that set a graph up (a bucket's eager warm-up, its capture:
         * graphSetupSteps, graphSetupSeconds) are not in it. NaN when no decode step was left to measure (none ran, or
         * every one set a graph up): not a measured 0.
         */
        public double hostMillisPerDecodeStep() {
            int n = decodeSteps - graphSetupSteps;
            return n > 0 ? 1e3 * decodeHostSeconds / n : Double.NaN;
        }

        /**
         * The generator's own host time per decode step around the issue (the batch's order, inputs and block tables
         * before it; the tokens' bookkeeping after the device's outputs arrived): with the issue time, what the host
         * adds to each step, since the device waits for it.
         */
        public double bookkeepingMillisPerDecodeStep() { return decodeSteps > 0 ? 1e3 * bookkeepingSeconds / decodeSteps : 0; }

        public double tokensPerSecond() { return seconds > 0 ? generatedTokens / seconds : 0; }
        public double meanUtilization() { return poolBlocks > 0 ? meanBlocksUsed / poolBlocks : 0; }
        public double peakUtilization() { return poolBlocks > 0 ? (double) peakBlocksUsed / poolBlocks : 0; }
        /** Mean sequences per decode step. */
        public double meanBatch() { return decodeSteps > 0 ? (double) decodeRows / decodeSteps : 0; }
    }

    private final LlamaModel model;
    private final Backend be;
    private final Config cfg;
    private Stats last;

    public Generator(LlamaModel model, Config cfg) {
        this.model = model;
        this.be = model.backend();
        this.cfg = cfg;
    }

    public Stats lastStats() { return last; }

    /** Last call: prefilled prompts given up, the most tokens in one prefill (tests). */
    int lastGroupsGivenUp;
    long lastLargestPrefill;

    public Config config() { return cfg; }

    private static final class Group {
        final int prompt;
        final int[] ids;
        final int[] seqIds;       // global sequence ids (stream ids) of this group's samples
        final int firstSample;    // the prompt's sample that is this group's first (0 with prefix sharing)
        final SamplingParams params; // its prompt's
        final SamplingSpec spec;
        final int[] stopIds;
        int[] fullBlocks = new int[0];
        int partialBlock = -1;
        int epoch;                // prefills so far (a group given up is prefilled again into other blocks)
        int nextSample;           // samples admitted so far
        boolean oneReserved;      // a sample reservation taken at prefill (WORST_CASE)
        int[] firstToken;
        float[] firstLogprob;

        Group(int prompt, int[] ids, int[] seqIds, int firstSample, SamplingParams params, SamplingSpec spec, int[] stopIds) {
            this.prompt = prompt;
            this.ids = ids;
            this.seqIds = seqIds;
            this.firstSample = firstSample;
            this.params = params;
            this.spec = spec;
            this.stopIds = stopIds;
        }

        int maxTokens() { return params.maxTokens(); }
    }

    private static final class Seq {
        final Group group;
        final int sample, seqId;
        final long order;         // admission order: the youngest is preempted first, the oldest resumed first
        int[] shared;             // the group's full prompt blocks this sample reads (held), null: its own (resumed)
        int epoch;                // the group's prefill those blocks came from (OWN: its prompt in blocks of its own)
        final Ints blocks = new Ints(); // its block table: the shared blocks, then its own
        int reservedLeft;
        int kvLen;                // positions whose K/V are in its blocks, or will be once the steps issued are done
        int inflight;             // tokens sampled by issued steps that the host has not taken in yet (0 or 1)
        int row;                  // its row in the last step issued
        final Ints tokens = new Ints();
        float[] logprobs = new float[8]; // one per token
        Completion.FinishReason finish;

        Seq(Group g, int sample, long order) {
            this.group = g;
            this.sample = sample;
            this.seqId = g.seqIds[sample];
            this.order = order;
        }

        /** Positions [0, length) hold its K/V between steps: the prompt and every token but the last, fed next. */
        int length() { return group.ids.length + tokens.size() - 1; }

        /** The prompt and the tokens but the last: what a resume prefills. */
        int[] known() {
            int[] ids = Arrays.copyOf(group.ids, length());
            System.arraycopy(tokens.a, 0, ids, group.ids.length, tokens.n - 1);
            return ids;
        }

        void add(int token, float logprob) {
            if (tokens.n == logprobs.length) logprobs = Arrays.copyOf(logprobs, 2 * logprobs.length);
            logprobs[tokens.n] = logprob;
            tokens.add(token);
        }
    }

    /** A growable int array (the decode loop's per-step bookkeeping without boxing). */
    private static final class Ints {
        int[] a = new int[8];
        int n;

        void add(int v) {
            if (n == a.length) a = Arrays.copyOf(a, 2 * a.length);
            a[n++] = v;
        }

        int size() { return n; }
        int get(int i) { return a[i]; }
        int last() { return a[n - 1]; }
        void clear() { n = 0; }
        void truncate(int size) { n = size; }
    }

    private static final int OWN = Integer.MAX_VALUE;
    private static final SamplingSpec GREEDY = new SamplingSpec(0f, 0, 1f, 0);

    /** A decode step's order with prefix groups: each prompt's samples together, those reading the same blocks adjacent. */
    private static final java.util.Comparator<Seq> BY_PROMPT = (x, y) -> x.group.prompt != y.group.prompt
            ? Integer.compare(x.group.prompt, y.group.prompt) : Integer.compare(x.epoch, y.epoch);

    /** Whether the batch is already in {@link #BY_PROMPT} order (most steps: no sample started, resumed or ended). */
    private static boolean sorted(List<Seq> active) {
        for (int i = 1; i < active.size(); i++) if (BY_PROMPT.compare(active.get(i - 1), active.get(i)) > 0) return false;
        return true;
    }

    /** Per prompt, {@code params.n()} completions in sample order. */
    public List<List<Completion>> generate(List<int[]> prompts, SamplingParams params) {
        return generate(prompts, java.util.Collections.nCopies(prompts.size(), params));
    }

    /**
     * Per prompt, its own params' {@code n()} completions in sample order: prompt i samples with {@code perPrompt.get(i)}
     * (n, max_tokens, temperature, top-p, top-k, seed, stop tokens and strings). Sample j of prompt i draws from random
     * stream {@code first + (the samples of prompts 0..i-1) + j}, {@code first} being the first params'
     * {@code promptOffset() x n()}: with every prompt's params equal, {@code (promptOffset + i) x n + j}, as
     * {@link #generate(List, SamplingParams)} (the other params' prompt offsets are not read; a batch split over ranks
     * by prompt offsets, as the trainer's, needs one n for all prompts, or the ranks' streams would overlap). When every
     * prompt has one spec (temperature, top-k, top-p, seed; greedy prompts share one whatever their other fields), each
     * decode step samples inside its graph in one launch; otherwise after the graph, one launch per spec in the step.
     */
    public List<List<Completion>> generate(List<int[]> prompts, List<SamplingParams> perPrompt) {
        long t0 = System.nanoTime();
        if (perPrompt.size() != prompts.size())
            throw new IllegalArgumentException("generator: " + perPrompt.size() + " sampling params for " + prompts.size() + " prompts (one per prompt)");
        int bs = cfg.blockSize();
        int vocab = model.config().vocabSize();
        long sequences = 0;
        boolean several = false;
        int maxSeqBlocks = 1;
        for (int i = 0; i < prompts.size(); i++) {
            int[] p = prompts.get(i);
            SamplingParams params = java.util.Objects.requireNonNull(perPrompt.get(i), "generator: sampling params of prompt " + i);
            if (p.length == 0) throw new IllegalArgumentException("prompt " + i + " is empty");
            for (int t : p) if (t < 0 || t >= vocab) throw new IllegalArgumentException("prompt " + i + " has token " + t + " outside the vocabulary [0, " + vocab + ")");
            if (p.length + params.maxTokens() > model.config().maxPositionEmbeddings())
                throw new IllegalArgumentException("prompt " + i + " (" + p.length + " tokens) + max_tokens " + params.maxTokens()
                        + " exceeds max_position_embeddings " + model.config().maxPositionEmbeddings());
            int need = promptBlocks(p.length) + perSample(p.length, params.maxTokens());
            if (need > cfg.numBlocks())
                throw new IllegalArgumentException("the KV pool of " + cfg.numBlocks() + " blocks x " + bs + " tokens cannot hold prompt " + i
                        + " (" + p.length + " tokens) plus one completion of " + params.maxTokens() + " tokens: it needs " + need + " blocks");
            sequences += params.n();
            several |= params.n() > 1;
            maxSeqBlocks = Math.max(maxSeqBlocks, (p.length + params.maxTokens() + bs - 1) / bs);
        }
        long first = perPrompt.isEmpty() ? 0 : (long) perPrompt.get(0).promptOffset() * perPrompt.get(0).n();
        if (first + sequences - 1 > Integer.MAX_VALUE)
            throw new IllegalArgumentException("generator: random streams up to " + (first + sequences - 1) + " exceed the counters' int range");
        decodeHostNanos = 0;
        try (LlamaModel.KvCache cache = model.newKvCache(cfg.numBlocks(), bs);
             // (no step runs more rows than the call's sequences: the session's buffers sized for those, not the config's bound)
             LlamaModel.DecodeSession session = model.newDecodeSession(cache, (int) Math.min(cfg.maxBatch(), Math.max(1, sequences)), maxSeqBlocks, cfg.graphs(),
                     cfg.sharePrefix() && cfg.prefixGroups() && several ? Math.min(prompts.size(), Math.max(1, cfg.maxBatch() / 2)) : 0)) {
            Run run = new Run(prompts, perPrompt, (int) first, cache, session);
            run.loop();
            if (run.pool.used() != 0) throw new IllegalStateException("generator: " + run.pool.used() + " KV blocks still held after the last sample");
            lastGroupsGivenUp = run.groupsGivenUp;
            lastLargestPrefill = run.largestPrefill;
            last = new Stats(prompts.size(), (int) sequences, run.prefillTokens, run.generated, run.steps, (System.nanoTime() - t0) / 1e9,
                    cfg.numBlocks(), run.pool.peakUsed(), run.steps > 0 ? run.usedSum / run.steps : 0, model.kvBytesPerToken() * bs * cfg.numBlocks(),
                    decodeHostNanos / 1e9, session.replays(), session.prefixGroupRows(), run.preemptions, run.recomputed, run.rows, run.peakBatch,
                    run.bookkeepingNanos / 1e9, run.overlapped, run.dropped, run.setupSteps, run.setupNanos / 1e9);
            return run.out;
        }
    }

    /** One generate call's scheduling state: prompts waiting, prefilled, samples running and set aside. */
    private final class Run {
        final int bs = cfg.blockSize();
        final boolean onDemand = cfg.admission() == Admission.ON_DEMAND;
        final boolean pipelined = cfg.pipelining() == Pipelining.ON || (cfg.pipelining() == Pipelining.AUTO && be.queuesOps());
        final int watermark = Math.max(1, cfg.numBlocks() / 100);
        final BlockPool pool = new BlockPool(cfg.numBlocks());
        final LlamaModel.KvCache cache;
        final LlamaModel.DecodeSession session;
        final SamplingSpec spec;                             // every prompt's, where they share one; else null
        final long prefillCap;                               // the most tokens one prefill holds (>= one sequence)
        final Deque<Group> pending = new ArrayDeque<>();     // not prefilled (or given up)
        final List<Group> ready = new ArrayList<>();         // prefilled, samples left to admit (holding the prompt's blocks)
        final List<Seq> active = new ArrayList<>();
        final Deque<Seq> preempted = new ArrayDeque<>();     // oldest first; every one younger than every active sample
        final List<List<Completion>> out = new ArrayList<>();
        long prefillTokens, generated, recomputed, admitted, rows, largestPrefill, bookkeepingNanos, dropped, setupNanos;
        int steps, preemptions, peakBatch, groupsGivenUp, overlapped, setupSteps;
        double usedSum;

        Run(List<int[]> prompts, List<SamplingParams> perPrompt, int firstStream, LlamaModel.KvCache cache, LlamaModel.DecodeSession session) {
            this.cache = cache;
            this.session = session;
            long all = 0, one = 0;
            int first = firstStream; // stream ids: global over a batch split across ranks
            SamplingSpec common = null;
            boolean mixed = false;
            java.util.Map<SamplingParams, SamplingSpec> specs = new java.util.HashMap<>();
            java.util.Map<java.util.Set<Integer>, int[]> stops = new java.util.HashMap<>();
            for (int i = 0; i < prompts.size(); i++) {
                SamplingParams params = perPrompt.get(i);
                int n = params.n();
                int[] ids = prompts.get(i).clone();
                all += ids.length;
                // the floor of a prefill: what a resumed sample prefills (ON_DEMAND), a prompt (WORST_CASE: none resumes)
                one = Math.max(one, onDemand ? ids.length + params.maxTokens() - 1L : ids.length);
                // greedy ignores top-k, top-p and the seed (the same tokens and log-probs): one spec for every greedy prompt
                SamplingSpec spec = specs.computeIfAbsent(params, q -> q.temperature() == 0 ? GREEDY : new SamplingSpec(q.temperature(), q.topK(), q.topP(), q.seed()));
                int[] stopIds = stops.computeIfAbsent(params.stopTokenIds(), q -> q.stream().mapToInt(Integer::intValue).toArray());
                if (common == null) common = spec;
                mixed |= !spec.equals(common);
                if (cfg.sharePrefix()) {
                    int[] seqIds = new int[n];
                    for (int j = 0; j < n; j++) seqIds[j] = first + j;
                    pending.add(new Group(i, ids, seqIds, 0, params, spec, stopIds));
                } else {
                    for (int j = 0; j < n; j++) pending.add(new Group(i, ids, new int[] {first + j}, j, params, spec, stopIds));
                }
                first += n;
                out.add(new ArrayList<>(java.util.Collections.nCopies(n, (Completion) null)));
            }
            prefillCap = Math.max(cfg.prefillTokens() > 0 ? cfg.prefillTokens() : all, one);
            spec = mixed ? null : common;
        }

        /** The step issued and not yet taken in (pipelined). */
        private Step inFlight;

        void loop() {
            try {
                steps();
            } finally {
                if (inFlight != null) inFlight.out().discard(); // after a failure: its snapshot's buffer back to the backend
            }
        }

        private void steps() {
            while (inFlight != null || !pending.isEmpty() || !ready.isEmpty() || !active.isEmpty() || !preempted.isEmpty()) {
                if (inFlight != null) { // pipelined: the next step first where nothing but decoding would happen, then this one's tokens
                    List<Seq> next = overlapRows();
                    Step issued = next == null ? null : issue(next);
                    if (issued != null) overlapped++;
                    try {
                        complete(inFlight);
                    } catch (RuntimeException e) {
                        if (issued != null) issued.out().discard();
                        throw e; // (loop() discards inFlight)
                    }
                    inFlight = issued;
                    continue;
                }
                boolean progress = resume();
                // new prompts and samples only once every preempted sample runs again (as vLLM)
                if (preempted.isEmpty()) progress |= prefillPrompts() | admitSamples();
                if (!active.isEmpty()) {
                    if (onDemand) makeRoomForStep();
                    if (session.prefixGroups() && !sorted(active)) active.sort(BY_PROMPT);
                    Step st = issue(active);
                    if (pipelined) inFlight = st;
                    else {
                        try {
                            complete(st);
                        } catch (RuntimeException e) {
                            st.out().discard();
                            throw e;
                        }
                    }
                    progress = true;
                }
                if (!progress) throw new IllegalStateException("generator made no progress (pool " + pool.available() + " blocks available)");
            }
        }

        /**
         * The rows of a step issued before the one in flight is taken in, or null where the host must see its tokens
         * first: a preempted sample waits, a waiting prompt or sample could be admitted now, or the pool lacks a block
         * the step needs (ON_DEMAND). The active samples, less those the step in flight
         * brings to max_tokens; one that stops on a token there is computed once more, and that row dropped.
         */
        private List<Seq> overlapRows() {
            if (!preempted.isEmpty()) return null;
            List<Seq> rows = new ArrayList<>(active.size());
            for (Seq s : active) if (s.tokens.size() + s.inflight < s.group.maxTokens()) rows.add(s);
            int need = blocksFor(rows);
            if (rows.isEmpty() || (onDemand && pool.available() < need)) return null;
            if ((!pending.isEmpty() || !ready.isEmpty()) && couldAdmit(onDemand ? need : 0)) return null;
            return rows;
        }

        /**
         * Whether the next waiting sample or prompt could be admitted now, the step about to be issued holding
         * {@code taken} more blocks (WORST_CASE: its blocks come from reservations). As the admission checks of
         * {@link #admitSamples} and {@link #prefillPrompts}; an answer that errs either way costs one step's overlap or
         * one step's delay of an admission, never a different completion.
         */
        private boolean couldAdmit(int taken) {
            if (active.size() >= cfg.maxBatch()) return false;
            int avail = pool.available() - taken;
            if (!ready.isEmpty()) {
                Group g = ready.get(0);
                if (onDemand ? avail - firstBlock(g) >= watermark : g.oneReserved || avail >= perSample(g.ids.length, g.maxTokens())) return true;
            }
            if (!pending.isEmpty()) {
                Group g = pending.peek();
                int pb = promptBlocks(g.ids.length), per = perSample(g.ids.length, g.maxTokens());
                return onDemand ? avail - pb - firstBlock(g) >= watermark : avail >= pb + per;
            }
            return false;
        }

        /** A. Prefills as many waiting prompts as the pool allows (WORST_CASE: each with one sample's reservation). */
        boolean prefillPrompts() {
            List<Group> toPrefill = new ArrayList<>();
            int firstBlocks = 0; // ON_DEMAND: room kept for each new prompt's first sample
            int owed = onDemand ? blocksFor(active) : 0; // ON_DEMAND: what the running samples' next step takes
            long tokens = 0;
            // ON_DEMAND: no more prompts than the batch has room for their samples (WORST_CASE's reservations bound it)
            int waiting = 0;
            if (onDemand) for (Group g : ready) waiting += g.seqIds.length - g.nextSample;
            while (!pending.isEmpty() && active.size() + (onDemand ? waiting : toPrefill.size()) < cfg.maxBatch()) {
                Group g = pending.peek();
                int pb = promptBlocks(g.ids.length), per = perSample(g.ids.length, g.maxTokens());
                if (!toPrefill.isEmpty() && tokens + g.ids.length > prefillCap) break; // the rest in a later call
                if (onDemand) {
                    boolean alone = active.isEmpty() && ready.isEmpty() && toPrefill.isEmpty();
                    int first = firstBlock(g);
                    // the watermark against what is free now (as before); the running samples' next step must still fit
                    if (pool.available() - firstBlocks - pb - first < (alone ? 0 : watermark)
                            || pool.available() - owed - firstBlocks - pb - first < 0) break;
                    firstBlocks += first;
                } else if (pool.available() < pb + per) break;
                pending.poll();
                int full = g.ids.length / bs;
                g.fullBlocks = new int[full];
                for (int b = 0; b < full; b++) g.fullBlocks[b] = pool.allocate();
                if (g.ids.length % bs != 0) g.partialBlock = pool.allocate();
                if (!onDemand) {
                    pool.reserve(per);
                    g.oneReserved = true;
                }
                g.epoch++;
                toPrefill.add(g);
                tokens += g.ids.length;
                waiting += g.seqIds.length - g.nextSample;
            }
            if (toPrefill.isEmpty()) return false;
            largestPrefill = Math.max(largestPrefill, tokens);
            prefillTokens += prefill(cache, toPrefill, spec);
            ready.addAll(toPrefill);
            return true;
        }

        /** B. Admits samples of prefilled prompts, oldest first. */
        boolean admitSamples() {
            boolean progress = false;
            // ON_DEMAND: the blocks the next step takes for the running samples and those admitted now (a sample whose
            // prompt ends a block takes its first block there, not here): admitting past them only preempts again
            int owed = onDemand ? blocksFor(active) : 0;
            for (var it = ready.iterator(); it.hasNext(); ) {
                Group g = it.next();
                while (g.nextSample < g.seqIds.length && active.size() < cfg.maxBatch()) {
                    int per = perSample(g.ids.length, g.maxTokens());
                    if (onDemand) {
                        int first = firstBlock(g);
                        if (pool.available() - first < (active.isEmpty() ? 0 : watermark) || pool.available() - owed - first < 0) break; // its first block
                        if (g.partialBlock < 0) owed += first;
                    } else if (g.oneReserved) g.oneReserved = false;
                    else if (!pool.reserve(per)) break;
                    Seq s = new Seq(g, g.nextSample++, admitted++);
                    if (!onDemand) s.reservedLeft = per;
                    s.shared = g.fullBlocks;
                    s.epoch = g.epoch;
                    for (int b : g.fullBlocks) {
                        pool.retain(b);
                        s.blocks.add(b);
                    }
                    if (g.partialBlock >= 0) { // copy-on-write of the shared partial block
                        int own = takeBlock(s);
                        cache.copyBlock(g.partialBlock, own);
                        s.blocks.add(own);
                    }
                    s.kvLen = g.ids.length;
                    s.add(g.firstToken[s.sample], g.firstLogprob[s.sample]);
                    generated++;
                    progress = true;
                    if (!finishIfDone(s)) active.add(s);
                    else retire(s);
                }
                if (g.nextSample == g.seqIds.length) { // every sample holds its own references now
                    unpin(g);
                    it.remove();
                }
            }
            return progress;
        }

        /** Marks {@code s} finished after its newest token: a stop token, a stop string, or max_tokens. */
        private boolean finishIfDone(Seq s) {
            SamplingParams p = s.group.params;
            int last = s.tokens.last();
            boolean stop = false;
            for (int id : s.group.stopIds) stop |= id == last;
            if (stop) s.finish = Completion.FinishReason.STOP;
            else if (p.stopStrings() != null && p.stopStrings().completedBy(s.tokens.a, s.tokens.n)) s.finish = Completion.FinishReason.STOP_STRING;
            else if (s.tokens.size() >= p.maxTokens()) s.finish = Completion.FinishReason.LENGTH;
            return s.finish != null;
        }

        private int takeBlock(Seq s) {
            if (onDemand) return pool.allocate();
            if (s.reservedLeft <= 0) throw new IllegalStateException("generator: sample " + s.seqId + " needs more KV blocks than it reserved"); // (a bug)
            s.reservedLeft--;
            return pool.allocateReserved();
        }

        private void unpin(Group g) {
            for (int b : g.fullBlocks) pool.release(b);
            if (g.partialBlock >= 0) pool.release(g.partialBlock);
        }

        /**
         * ON_DEMAND: brings preempted samples back, oldest first, once blocks for the tokens they have fit, and
         * recomputes their K/V by one packed prefill of their prompts and tokens (at most prefillCap tokens a call).
         */
        boolean resume() {
            List<Seq> back = new ArrayList<>();
            long tokens = 0;
            int owed = blocksFor(active); // the running samples' next step, and the resumed ones' (as admitSamples)
            while (!preempted.isEmpty() && active.size() + back.size() < cfg.maxBatch()) {
                Seq s = preempted.peek();
                if (!back.isEmpty() && tokens + s.length() > prefillCap) break;
                boolean alone = active.isEmpty() && back.isEmpty();
                int need = (s.length() + bs - 1) / bs, next = s.length() % bs == 0 ? 1 : 0; // next: its next step starts a block
                if (alone) giveUpPrompts(need + next, s); // nothing else can finish and free blocks
                if (pool.available() - need < (alone ? 0 : watermark) || pool.available() - owed - need - next < 0) break;
                owed += next;
                preempted.poll();
                for (int i = 0; i < need; i++) s.blocks.add(pool.allocate());
                s.kvLen = s.length();
                tokens += s.length();
                back.add(s);
            }
            if (back.isEmpty()) return false;
            largestPrefill = Math.max(largestPrefill, tokens);
            prefillTokens += recompute(back);
            recomputed += tokens;
            active.addAll(back);
            return true;
        }

        /**
         * ON_DEMAND: the block a new sample of {@code g} takes first, at its admission (its copy of the prompt's
         * partial block) or at its first step (the prompt ends a block); none when it samples one token only.
         */
        private int firstBlock(Group g) { return Math.min(1, perSample(g.ids.length, g.maxTokens())); }

        /** Blocks a decode step of {@code rows} must take: one for each sequence whose next position starts a block. */
        private int blocksFor(List<Seq> rows) {
            int need = 0;
            for (Seq s : rows) if (s.kvLen / bs >= s.blocks.size()) need++;
            return need;
        }

        /** ON_DEMAND: preempts the youngest samples until the step's new blocks fit (the oldest always goes on). */
        void makeRoomForStep() {
            while (pool.available() < blocksFor(active)) {
                if (active.size() > 1) {
                    Seq y = active.get(0);
                    for (Seq s : active) if (s.order > y.order) y = s;
                    preempt(y);
                } else giveUpPrompts(blocksFor(active), active.get(0));
            }
        }

        private void preempt(Seq s) {
            active.remove(s);
            for (int i = 0; i < s.blocks.n; i++) pool.release(s.blocks.a[i]); // the shared prompt blocks too: it resumes in its own
            s.blocks.clear();
            s.shared = null;
            s.epoch = OWN;
            s.kvLen = 0;
            preempted.addFirst(s); // older than every one preempted before (they were younger than every active)
            preemptions++;
        }

        /**
         * Frees the blocks of prefilled prompts whose samples are not all admitted (youngest first; prefilled again
         * later) until {@code need} blocks are available for {@code keep}, the oldest sample, when nothing else could
         * finish and free some.
         */
        private void giveUpPrompts(int need, Seq keep) {
            while (pool.available() < need && !ready.isEmpty()) {
                Group g = ready.remove(ready.size() - 1);
                unpin(g);
                g.fullBlocks = new int[0];
                g.partialBlock = -1;
                pending.addFirst(g);
                groupsGivenUp++;
            }
            if (pool.available() < need)
                throw new IllegalStateException("the KV pool of " + cfg.numBlocks() + " blocks cannot hold sample " + (keep.group.firstSample + keep.sample) + " of prompt "
                        + keep.group.prompt + " (" + keep.length() + " tokens)"); // the call's first check rules this out
        }

        /** A decode step issued: its rows in batch order, and the snapshot of what it sampled. */
        private record Step(Seq[] rows, Backend.Fetched out) {}

        /**
         * C. Issues one decode step for {@code rows} (in prefix-group order where groups are on): each row's next
         * position gets a block where it starts one; a row whose last token a step in flight samples takes it on the
         * device.
         */
        Step issue(List<Seq> rowList) {
            long start = System.nanoTime();
            int b = rowList.size();
            Seq[] rowSeqs = rowList.toArray(new Seq[0]);
            int[] tokens = new int[b], from = null, positions = new int[b], slots = new int[b], counters = new int[2 * b];
            int maxBlocks = 0;
            for (int i = 0; i < b; i++) {
                Seq s = rowSeqs[i];
                int pos = s.kvLen;
                if (pos / bs >= s.blocks.size()) s.blocks.add(takeBlock(s));
                if (s.inflight > 0) {
                    if (from == null) {
                        from = new int[b];
                        Arrays.fill(from, -1);
                    }
                    from[i] = s.row;
                } else tokens[i] = s.tokens.last();
                positions[i] = pos;
                slots[i] = s.blocks.get(pos / bs) * bs + pos % bs;
                counters[2 * i] = s.seqId;
                counters[2 * i + 1] = s.tokens.size() + s.inflight;
                maxBlocks = Math.max(maxBlocks, s.blocks.size());
            }
            int[] table = new int[b * maxBlocks];
            for (int i = 0; i < b; i++) {
                Seq s = rowSeqs[i];
                System.arraycopy(s.blocks.a, 0, table, i * maxBlocks, s.blocks.n);
                s.row = i;
                s.inflight++;
                s.kvLen++;
            }
            int[] groups = session.prefixGroups() ? prefixGroups(rowList, session.groupRowsFor(b)) : null;
            long h0 = System.nanoTime();
            SamplingSpec[] rowSpecs = null;
            if (spec == null) { // prompts with different specs: each row its own
                rowSpecs = new SamplingSpec[b];
                for (int i = 0; i < b; i++) rowSpecs[i] = rowSeqs[i].group.spec;
            }
            LlamaModel.StepOutput o = session.run(tokens, from, positions, slots, table, maxBlocks, counters, groups, spec, rowSpecs);
            Backend.Fetched out = be.fetch(o.tokens(), o.logprobs());
            long h1 = System.nanoTime();
            if (session.lastStepSetUpAGraph()) { // a bucket's warm-up or capture: not a step's issue cost
                setupSteps++;
                setupNanos += h1 - h0;
            } else decodeHostNanos += h1 - h0;
            steps++;
            usedSum += pool.used();
            peakBatch = Math.max(peakBatch, b);
            rows += b;
            bookkeepingNanos += h0 - start;
            return new Step(rowSeqs, out);
        }

        /** Takes in a step's tokens (waiting for them): a row whose sample finished in the step before is dropped. */
        void complete(Step st) {
            int[] t = st.out().ints(); // waits for the device
            float[] l = st.out().floats();
            long h2 = System.nanoTime();
            boolean ended = false;
            for (int i = 0; i < st.rows().length; i++) {
                Seq s = st.rows()[i];
                if (s.finish != null) { // stopped a step before: retired, this row computed in vain
                    dropped++;
                    continue;
                }
                s.inflight--;
                s.add(t[i], l[i]);
                generated++;
                if (finishIfDone(s)) {
                    retire(s);
                    ended = true;
                }
            }
            if (ended) active.removeIf(s -> s.finish != null);
            bookkeepingNanos += System.nanoTime() - h2;
        }

        private void retire(Seq s) {
            for (int i = 0; i < s.blocks.n; i++) pool.release(s.blocks.a[i]);
            if (!onDemand) pool.unreserve(s.reservedLeft);
            int[] t = Arrays.copyOf(s.tokens.a, s.tokens.n);
            float[] lp = Arrays.copyOf(s.logprobs, s.tokens.n);
            out.get(s.group.prompt).set(s.group.firstSample + s.sample, new Completion(t, lp, s.finish));
        }

        /** Prefills resumed samples' prompts and tokens into their own blocks (the K/V only). Returns the tokens run. */
        private long recompute(List<Seq> seqs) {
            List<int[]> ids = new ArrayList<>();
            int total = 0;
            for (Seq s : seqs) {
                ids.add(s.known());
                total += s.length();
            }
            int[] slots = new int[total];
            int k = 0;
            for (Seq s : seqs)
                for (int p = 0; p < s.length(); p++) slots[k++] = s.blocks.get(p / bs) * bs + p % bs;
            try (PackedBatch pb = PackedBatch.of(be, ids, model.config().vocabSize()); Tensor logits = model.prefillLogits(cache, pb, slots)) {
                return total;
            }
        }
    }

    private int promptBlocks(int promptLen) { return (promptLen + cfg.blockSize() - 1) / cfg.blockSize(); }

    /**
     * Blocks a sample may need beyond the shared full prompt blocks: its copy of the partial block and its tokens. Its
     * K/V fill positions [0, promptLen + maxTokens - 1): the last token it samples is never fed back (a row dropped
     * from a pipelined step writes no further either).
     */
    private int perSample(int promptLen, int maxTokens) {
        int bs = cfg.blockSize();
        return (promptLen + maxTokens - 1 + bs - 1) / bs - promptLen / bs;
    }


    /**
     * Prefills the groups' prompts (packed) and samples every sample's first token, with {@code spec} (null: each
     * group's own). Returns prompt tokens run.
     */
    private long prefill(LlamaModel.KvCache cache, List<Group> groups, SamplingSpec spec) {
        int bs = cfg.blockSize();
        List<int[]> seqs = new ArrayList<>();
        int total = 0;
        for (Group g : groups) {
            seqs.add(g.ids);
            total += g.ids.length;
        }
        int[] slots = new int[total];
        int k = 0;
        for (Group g : groups)
            for (int t = 0; t < g.ids.length; t++) {
                int blk = t / bs < g.fullBlocks.length ? g.fullBlocks[t / bs] : g.partialBlock;
                slots[k++] = blk * bs + t % bs;
            }
        int samples = 0;
        for (Group g : groups) samples += g.seqIds.length;
        int[] rows = new int[samples], counters = new int[2 * samples];
        SamplingSpec[] rowSpecs = spec == null ? new SamplingSpec[samples] : null;
        int r = 0;
        for (int gi = 0; gi < groups.size(); gi++)
            for (int sid : groups.get(gi).seqIds) {
                if (rowSpecs != null) rowSpecs[r] = groups.get(gi).spec;
                rows[r] = gi;
                counters[2 * r] = sid;
                counters[2 * r + 1] = 0;
                r++;
            }
        int vocab = model.config().vocabSize();
        try (PackedBatch pb = PackedBatch.of(be, seqs, vocab); Tensor logits = model.prefillLogits(cache, pb, slots);
             Tensor rowsT = be.upload(rows, samples); Tensor each = be.empty(DType.FP32, samples, vocab);
             Tensor ctr = be.upload(counters, samples, 2); Tensor tok = be.empty(DType.INT32, samples); Tensor lp = be.empty(DType.FP32, samples)) {
            be.embedding(each, logits, rowsT); // row gather: each sample gets its prompt's last logits
            if (spec != null) be.sample(tok, lp, each, ctr, spec);
            else be.sample(tok, lp, each, ctr, rowSpecs);
            int[] t = tok.toInts();
            float[] l = lp.toFloats();
            r = 0;
            for (Group g : groups) {
                g.firstToken = Arrays.copyOfRange(t, r, r + g.seqIds.length);
                g.firstLogprob = Arrays.copyOfRange(l, r, r + g.seqIds.length);
                r += g.seqIds.length;
            }
        }
        return total;
    }

    private long decodeHostNanos;

    /**
     * Rows (first, count, shared) of each run of two or more live samples of one prompt reading the same full prompt
     * blocks, at most {@code limit} (the others read the prompt through their own tables, as without groups).
     */
    private int[] prefixGroups(List<Seq> active, int limit) {
        int[] rows = new int[3 * Math.min(limit, active.size() / 2)];
        int k = 0;
        for (int i = 0; i < active.size() && k < rows.length; ) {
            int[] shared = active.get(i).shared;
            int j = i + 1;
            while (j < active.size() && shared != null && active.get(j).shared == shared) j++;
            if (j - i >= 2 && shared.length > 0) {
                rows[k++] = i;
                rows[k++] = j - i;
                rows[k++] = shared.length * cfg.blockSize();
            }
            i = j;
        }
        return java.util.Arrays.copyOf(rows, k);
    }
}
