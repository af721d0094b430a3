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
 *   <li>Blocks come from a fixed pool. A sample is admitted only when every block it can still need
 *       (prompt + max_tokens) is reserved, so the engine never runs out of memory by construction; waiting samples
 *       start as finished ones free their blocks (continuous batching).</li>
 *   <li>Sample j of prompt i draws its step-t token from Philox(seed; stream = i*n + j, step = t), and every row's
 *       logits are computed independently of the rest of the batch, so the same seed and inputs give the same tokens
 *       whatever the pool size, batch size or prefix sharing (on the CPU bit for bit; on CUDA up to fp32 summation
 *       order, which the GEMM shapes, the decode attention's splits and its prefix groups move).</li>
 *   <li>With prefix sharing, each decode step groups a prompt's live samples next to each other in the batch, and the
 *       decode attention reads the prompt's shared blocks once per group (cascade decoding,
 *       {@link LlamaModel.DecodeSession#run(int[], int[], int[], int[], int, int[], int[], SamplingSpec)}).</li>
 * </ul>
 */
public final class Generator {

    /**
     * blockSize tokens per KV block; numBlocks in the pool; at most maxBatch sequences decoding at once; graphs: record
     * each decode batch bucket's step once and replay it where the backend has graphs (CUDA graphs; no effect on the
     * CPU); prefixGroups (with sharePrefix): decode attention reads each prompt's shared blocks once per group of its
     * live samples (off: once per sample, as without sharing; for measuring the difference).
     */
    public record Config(int blockSize, int numBlocks, int maxBatch, boolean sharePrefix, boolean graphs, boolean prefixGroups) {
        public Config {
            if (blockSize < 1 || numBlocks < 1 || maxBatch < 1)
                throw new IllegalArgumentException("generator: block_size, num_blocks and max_batch must be >= 1");
        }

        public Config(int blockSize, int numBlocks, int maxBatch, boolean sharePrefix, boolean graphs) {
            this(blockSize, numBlocks, maxBatch, sharePrefix, graphs, true);
        }

        public Config(int blockSize, int numBlocks, int maxBatch, boolean sharePrefix) {
            this(blockSize, numBlocks, maxBatch, sharePrefix, true);
        }

        public Config withGraphs(boolean on) { return new Config(blockSize, numBlocks, maxBatch, sharePrefix, on, prefixGroups); }

        public Config withPrefixGroups(boolean on) { return new Config(blockSize, numBlocks, maxBatch, sharePrefix, graphs, on); }

        /** A pool sized by a memory budget in bytes. */
        public static Config forBudget(LlamaModel model, long budgetBytes, int blockSize, int maxBatch) {
            long perBlock = model.kvBytesPerToken() * blockSize;
            int blocks = (int) Math.max(1, Math.min(Integer.MAX_VALUE, budgetBytes / perBlock));
            return new Config(blockSize, blocks, maxBatch, true);
        }
    }

    /**
     * Figures of the last {@link #generate} call; prefixGroupRows counts, over the decode steps, the groups of a
     * prompt's live samples whose attention read the prompt's shared blocks once per group.
     */
    public record Stats(int prompts, int sequences, long prefillTokens, long generatedTokens, int decodeSteps, double seconds,
                        int poolBlocks, int peakBlocksUsed, double meanBlocksUsed, long poolBytes, double decodeHostSeconds,
                        long graphReplays, long prefixGroupRows) {
        /** Host time to issue one decode step (upload, launches or one graph replay), before waiting for the device. */
        public double hostMillisPerDecodeStep() { return decodeSteps > 0 ? 1e3 * decodeHostSeconds / decodeSteps : 0; }

        public double tokensPerSecond() { return seconds > 0 ? generatedTokens / seconds : 0; }
        public double meanUtilization() { return poolBlocks > 0 ? meanBlocksUsed / poolBlocks : 0; }
        public double peakUtilization() { return poolBlocks > 0 ? (double) peakBlocksUsed / poolBlocks : 0; }
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

    public Config config() { return cfg; }

    private static final class Group {
        final int prompt;
        final int[] ids;
        final int[] seqIds;       // global sequence ids (stream ids) of this group's samples
        int[] fullBlocks = new int[0];
        int partialBlock = -1;
        int nextSample;           // samples admitted so far
        boolean oneReserved;      // a sample reservation taken at prefill
        int[] firstToken;
        float[] firstLogprob;

        Group(int prompt, int[] ids, int[] seqIds) {
            this.prompt = prompt;
            this.ids = ids;
            this.seqIds = seqIds;
        }
    }

    private static final class Seq {
        final Group group;
        final int sample, seqId;
        final List<Integer> blocks = new ArrayList<>();
        int reservedLeft;
        final List<Integer> tokens = new ArrayList<>();
        final List<Float> logprobs = new ArrayList<>();
        Completion.FinishReason finish;

        Seq(Group g, int sample) {
            this.group = g;
            this.sample = sample;
            this.seqId = g.seqIds[sample];
        }

        int position() { return group.ids.length + tokens.size() - 1; } // of the last token, the one fed next
    }

    /** Per prompt, {@code params.n()} completions in sample order. */
    public List<List<Completion>> generate(List<int[]> prompts, SamplingParams params) {
        long t0 = System.nanoTime();
        int bs = cfg.blockSize(), n = params.n();
        int vocab = model.config().vocabSize();
        for (int i = 0; i < prompts.size(); i++) {
            int[] p = prompts.get(i);
            if (p.length == 0) throw new IllegalArgumentException("prompt " + i + " is empty");
            for (int t : p) if (t < 0 || t >= vocab) throw new IllegalArgumentException("prompt " + i + " has token " + t + " outside the vocabulary [0, " + vocab + ")");
            if (p.length + params.maxTokens() > model.config().maxPositionEmbeddings())
                throw new IllegalArgumentException("prompt " + i + " (" + p.length + " tokens) + max_tokens " + params.maxTokens()
                        + " exceeds max_position_embeddings " + model.config().maxPositionEmbeddings());
            int need = promptBlocks(p.length) + perSample(p.length, params.maxTokens());
            if (need > cfg.numBlocks())
                throw new IllegalArgumentException("the KV pool of " + cfg.numBlocks() + " blocks x " + bs + " tokens cannot hold prompt " + i
                        + " (" + p.length + " tokens) plus one completion of " + params.maxTokens() + " tokens: it needs " + need + " blocks");
        }
        BlockPool pool = new BlockPool(cfg.numBlocks());
        Deque<Group> pending = new ArrayDeque<>();
        for (int i = 0; i < prompts.size(); i++) {
            int[] ids = prompts.get(i).clone();
            int first = (params.promptOffset() + i) * n; // stream ids: global over a batch split across ranks
            if (cfg.sharePrefix()) {
                int[] seqIds = new int[n];
                for (int j = 0; j < n; j++) seqIds[j] = first + j;
                pending.add(new Group(i, ids, seqIds));
            } else {
                for (int j = 0; j < n; j++) pending.add(new Group(i, ids, new int[] {first + j}));
            }
        }
        List<List<Completion>> out = new ArrayList<>();
        for (int i = 0; i < prompts.size(); i++) out.add(new ArrayList<>(java.util.Collections.nCopies(n, (Completion) null)));
        SamplingSpec spec = new SamplingSpec(params.temperature(), params.topK(), params.topP(), params.seed());
        List<Group> ready = new ArrayList<>();
        List<Seq> active = new ArrayList<>();
        long prefillTokens = 0, generated = 0;
        int steps = 0;
        double usedSum = 0;

        int maxSeqBlocks = 1;
        for (int[] p : prompts) maxSeqBlocks = Math.max(maxSeqBlocks, (p.length + params.maxTokens() + bs - 1) / bs);
        decodeHostNanos = 0;
        try (LlamaModel.KvCache cache = model.newKvCache(cfg.numBlocks(), bs);
             LlamaModel.DecodeSession session = model.newDecodeSession(cache, cfg.maxBatch(), maxSeqBlocks, cfg.graphs(),
                     cfg.sharePrefix() && cfg.prefixGroups() && n > 1 ? Math.min(prompts.size(), Math.max(1, cfg.maxBatch() / 2)) : 0)) {
            while (!pending.isEmpty() || !ready.isEmpty() || !active.isEmpty()) {
                boolean progress = false;
                // A. prefill as many waiting prompts as the pool allows (each with one sample's reservation)
                List<Group> toPrefill = new ArrayList<>();
                while (!pending.isEmpty() && active.size() + toPrefill.size() < cfg.maxBatch()) {
                    Group g = pending.peek();
                    int pb = promptBlocks(g.ids.length), per = perSample(g.ids.length, params.maxTokens());
                    if (pool.available() < pb + per) break;
                    pending.poll();
                    int full = g.ids.length / bs;
                    g.fullBlocks = new int[full];
                    for (int b = 0; b < full; b++) g.fullBlocks[b] = pool.allocate();
                    if (g.ids.length % bs != 0) g.partialBlock = pool.allocate();
                    pool.reserve(per);
                    g.oneReserved = true;
                    toPrefill.add(g);
                }
                if (!toPrefill.isEmpty()) {
                    prefillTokens += prefill(cache, toPrefill, spec);
                    ready.addAll(toPrefill);
                    progress = true;
                }
                // B. admit samples of prefilled prompts, oldest first
                for (var it = ready.iterator(); it.hasNext(); ) {
                    Group g = it.next();
                    while (g.nextSample < g.seqIds.length && active.size() < cfg.maxBatch()) {
                        int per = perSample(g.ids.length, params.maxTokens());
                        if (g.oneReserved) g.oneReserved = false;
                        else if (!pool.reserve(per)) break;
                        Seq s = new Seq(g, g.nextSample++);
                        s.reservedLeft = per;
                        for (int b : g.fullBlocks) {
                            pool.retain(b);
                            s.blocks.add(b);
                        }
                        if (g.partialBlock >= 0) { // copy-on-write of the shared partial block
                            int own = pool.allocateReserved();
                            s.reservedLeft--;
                            cache.copyBlock(g.partialBlock, own);
                            s.blocks.add(own);
                        }
                        s.tokens.add(g.firstToken[s.sample]);
                        s.logprobs.add(g.firstLogprob[s.sample]);
                        generated++;
                        progress = true;
                        if (!finishIfDone(s, params)) active.add(s);
                        else retire(s, pool, out);
                    }
                    if (g.nextSample == g.seqIds.length) { // every sample holds its own references now
                        for (int b : g.fullBlocks) pool.release(b);
                        if (g.partialBlock >= 0) pool.release(g.partialBlock);
                        it.remove();
                    }
                }
                // C. one decode step for every active sequence
                if (!active.isEmpty()) {
                    decode(session, active, pool, spec);
                    steps++;
                    usedSum += pool.used();
                    generated += active.size();
                    progress = true;
                    for (var it = active.iterator(); it.hasNext(); ) {
                        Seq s = it.next();
                        if (finishIfDone(s, params)) {
                            retire(s, pool, out);
                            it.remove();
                        }
                    }
                }
                if (!progress) throw new IllegalStateException("generator made no progress (pool " + pool.available() + " blocks available)");
            }
            last = new Stats(prompts.size(), prompts.size() * n, prefillTokens, generated, steps, (System.nanoTime() - t0) / 1e9,
                    cfg.numBlocks(), pool.peakUsed(), steps > 0 ? usedSum / steps : 0, model.kvBytesPerToken() * bs * cfg.numBlocks(),
                    decodeHostNanos / 1e9, session.replays(), session.prefixGroupRows());
        }
        return out;
    }

    private int promptBlocks(int promptLen) { return (promptLen + cfg.blockSize() - 1) / cfg.blockSize(); }

    /** Blocks a sample may need beyond the shared full prompt blocks: its copy of the partial block and its tokens. */
    private int perSample(int promptLen, int maxTokens) {
        int bs = cfg.blockSize();
        return (promptLen + maxTokens + bs - 1) / bs - promptLen / bs;
    }

    private static boolean finishIfDone(Seq s, SamplingParams p) {
        int last = s.tokens.get(s.tokens.size() - 1);
        if (p.stopTokenIds().contains(last)) s.finish = Completion.FinishReason.STOP;
        else if (p.stopStrings() != null && p.stopStrings().completedBy(s.tokens)) s.finish = Completion.FinishReason.STOP_STRING;
        else if (s.tokens.size() >= p.maxTokens()) s.finish = Completion.FinishReason.LENGTH;
        return s.finish != null;
    }

    private static void retire(Seq s, BlockPool pool, List<List<Completion>> out) {
        for (int b : s.blocks) pool.release(b);
        pool.unreserve(s.reservedLeft);
        int[] t = s.tokens.stream().mapToInt(Integer::intValue).toArray();
        float[] lp = new float[s.logprobs.size()];
        for (int i = 0; i < lp.length; i++) lp[i] = s.logprobs.get(i);
        out.get(s.group.prompt).set(s.seqId % out.get(s.group.prompt).size(), new Completion(t, lp, s.finish));
    }

    /** Prefills the groups' prompts (packed) and samples every sample's first token. Returns prompt tokens run. */
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
        int r = 0;
        for (int gi = 0; gi < groups.size(); gi++)
            for (int sid : groups.get(gi).seqIds) {
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
            be.sample(tok, lp, each, ctr, spec);
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

    /** Rows (first, count, shared) of each run of two or more live samples of one prompt with full prompt blocks. */
    private int[] prefixGroups(List<Seq> active) {
        int[] rows = new int[3 * (active.size() / 2)];
        int k = 0;
        for (int i = 0; i < active.size(); ) {
            Group g = active.get(i).group;
            int j = i + 1;
            while (j < active.size() && active.get(j).group == g) j++;
            if (j - i >= 2 && g.fullBlocks.length > 0) {
                rows[k++] = i;
                rows[k++] = j - i;
                rows[k++] = g.fullBlocks.length * cfg.blockSize();
            }
            i = j;
        }
        return java.util.Arrays.copyOf(rows, k);
    }

    /**
     * Feeds every active sequence's last token, samples the next one (one session step: model and sampler). With a
     * session that takes prefix groups, each prompt's live samples sit next to each other in the batch (a stable sort
     * by prompt: the order of rows changes no row's result) and form one group over the prompt's full blocks.
     */
    private void decode(LlamaModel.DecodeSession session, List<Seq> active, BlockPool pool, SamplingSpec spec) {
        if (session.prefixGroups()) active.sort(java.util.Comparator.comparingInt(s -> s.group.prompt));
        int b = active.size(), bs = cfg.blockSize();
        int[] tokens = new int[b], positions = new int[b], slots = new int[b], counters = new int[2 * b];
        int maxBlocks = 0;
        for (int i = 0; i < b; i++) {
            Seq s = active.get(i);
            int pos = s.position();
            if (pos / bs >= s.blocks.size()) {
                s.blocks.add(pool.allocateReserved());
                s.reservedLeft--;
            }
            tokens[i] = s.tokens.get(s.tokens.size() - 1);
            positions[i] = pos;
            slots[i] = s.blocks.get(pos / bs) * bs + pos % bs;
            counters[2 * i] = s.seqId;
            counters[2 * i + 1] = s.tokens.size();
            maxBlocks = Math.max(maxBlocks, s.blocks.size());
        }
        int[] table = new int[b * maxBlocks];
        for (int i = 0; i < b; i++) {
            List<Integer> bl = active.get(i).blocks;
            for (int j = 0; j < bl.size(); j++) table[i * maxBlocks + j] = bl.get(j);
        }
        int[] groups = session.prefixGroups() ? prefixGroups(active) : null;
        long h0 = System.nanoTime();
        LlamaModel.StepOutput o = session.run(tokens, positions, slots, table, maxBlocks, counters, groups, spec);
        decodeHostNanos += System.nanoTime() - h0;
        int[] t = o.tokens().toInts();
        float[] l = o.logprobs().toFloats();
        for (int i = 0; i < b; i++) {
            active.get(i).tokens.add(t[i]);
            active.get(i).logprobs.add(l[i]);
        }
    }
}
