package org.grpo4j.train;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedWriter;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.Consumer;
import org.grpo4j.backend.Backend;
import org.grpo4j.backend.Backends;
import org.grpo4j.backend.DType;
import org.grpo4j.backend.GrpoLossOutputs;
import org.grpo4j.backend.GrpoLossParams;
import org.grpo4j.backend.KlEstimator;
import org.grpo4j.backend.Tensor;
import org.grpo4j.data.PromptDataset;
import org.grpo4j.data.RlvrRow;
import org.grpo4j.data.ShufflingIterator;
import org.grpo4j.model.LlamaConfig;
import org.grpo4j.model.LlamaModel;
import org.grpo4j.model.LlamaWeights;
import org.grpo4j.model.PackedBatch;
import org.grpo4j.reward.FormatReward;
import org.grpo4j.reward.Rewards;
import org.grpo4j.rollout.Completion;
import org.grpo4j.rollout.Generator;
import org.grpo4j.rollout.SamplingParams;
import org.grpo4j.rollout.StopStrings;
import org.grpo4j.rollout.Truncation;
import org.grpo4j.tokenizer.ChatMessage;
import org.grpo4j.tokenizer.ChatTemplate;
import org.grpo4j.tokenizer.Tokenizer;
import org.grpo4j.util.AtomicDir;

/**
 * The GRPO trainer (one process): the Tulu 3.1 RLVR step of grpo-reference.md sections 1-5, colocated generation,
 * metrics, plots, samples, atomic checkpoints and exact resume.
 *
 * <pre>{@code
 * try (GrpoTrainer t = GrpoTrainer.builder(config).outputDir(dir).build()) {
 *     t.run(new GrpoTrainer.Listener() { public void onStep(int step, Map<String, Double> m) { ... } });
 * }
 * }</pre>
 * Every random choice is a pure function of (seed, step, ...), so a resumed run repeats an uninterrupted one bit
 * for bit on the CPU backend. {@link #cancel()} stops at the next step boundary and checkpoints.
 */
public final class GrpoTrainer implements AutoCloseable {

    /** Callbacks (all optional). */
    public interface Listener {
        default void onSftStep(int step, int steps, double loss) {}

        default void onStep(int step, Map<String, Double> metrics) {}

        default void onCheckpoint(int step, Path dir) {}
    }

    /** How a run ended. */
    public record Result(int lastStep, boolean cancelled, Path outputDir, List<Map<String, Double>> metrics) {}

    public static Builder builder(GrpoConfig cfg) { return new Builder(cfg); }

    /** Builder: output directory, resume directory, backend, reward registry, log stream. */
    public static final class Builder {
        private final GrpoConfig cfg;
        private Path outputDir, resume;
        private Backend backend;
        private Rewards rewards;
        private PrintStream log = System.out;
        private Consumer<LlamaWeights> gradientHook;
        private boolean overwrite;

        Builder(GrpoConfig cfg) { this.cfg = cfg; }

        /**
         * Start even when the output directory holds an earlier run, whose outputs are deleted when this run starts
         * (default: refuse a non-empty directory). A directory holding other files is refused either way.
         */
        public Builder overwrite(boolean b) { overwrite = b; return this; }

        public Builder outputDir(Path p) { outputDir = p; return this; }
        /** Continue the run whose output directory (or one of its checkpoints) is {@code p}. */
        public Builder resume(Path p) { resume = p; return this; }
        public Builder backend(Backend b) { backend = b; return this; }
        /** Reward registry (default: the built-in verifiers with the config's compat/reward/timeout). */
        public Builder rewards(Rewards r) { rewards = r; return this; }
        /** Progress lines (null: silent). */
        public Builder log(PrintStream p) { log = p; return this; }
        /** Test hook: runs on the accumulated gradients before each optimizer step. */
        Builder gradientHook(Consumer<LlamaWeights> h) { gradientHook = h; return this; }

        public GrpoTrainer build() throws IOException { return new GrpoTrainer(this); }
    }

    private static final ObjectMapper JSON = new ObjectMapper();

    private final GrpoConfig cfg;
    private final Path out;
    private final PrintStream log;
    private final boolean ownBackend, ownRewards;
    private final Backend be;
    private final Tokenizer tok;
    private final ChatTemplate template;
    private final PromptDataset train, eval;
    private final ShufflingIterator iterator;
    private final LlamaWeights policy, grads;
    private LlamaWeights reference;
    private final LlamaModel model;
    private LlamaModel refModel;
    private final Rewards rewards;
    private final Generator generator;
    private final StopStrings stopStrings;
    private final boolean metricsCompat;
    private final int eos;
    private final Path tokenizerDir;
    private final Consumer<LlamaWeights> gradientHook;
    private final RunDirectory runDir;
    private final String dataFingerprint;
    private boolean overwritePending;
    private final AtomicBoolean cancelled = new AtomicBoolean();
    private final List<Map<String, Double>> history = new ArrayList<>();
    private final LrSchedule schedule;
    private AdamW optimizer;
    private int step; // last completed training step
    private long optimizerSteps;
    private int consecutiveNonfinite, skippedSteps;
    private boolean warmupDone;
    /** Forward/backward passes the warm-up ran (for tests of its micro-batching). */
    long sftMicroBatches;

    private GrpoTrainer(Builder b) throws IOException {
        GrpoConfig c = b.cfg;
        Path resumeDir = b.resume;
        if (c == null && resumeDir == null) throw new IllegalArgumentException("a config or a resume directory is required");
        if (c != null && resumeDir != null)
            throw new IllegalArgumentException("a resumed run uses the config saved with its checkpoint: give a config or a resume directory, not both");
        Path ck = resumeDir != null ? latestCheckpoint(resumeDir) : null;
        if (ck != null) c = savedConfig(ck);
        c.validate("config");
        this.cfg = c;
        this.schedule = LrSchedule.of(cfg);
        if (cfg.worldSize != 1)
            throw new IllegalArgumentException("world_size " + cfg.worldSize + ": multi-GPU training (NCCL + ZeRO-2) is not implemented yet; "
                    + "this trainer runs one process (world_size 1). tools/grpo4j train --dry-run prints the derived quantities.");
        if (ck != null) {
            Path newest = latestCheckpoint(ck.getParent());
            if (!newest.equals(ck))
                throw new IllegalArgumentException(ck + " is not the run's newest checkpoint (" + newest.getFileName() + " is): going on from it would mix"
                        + " two histories in one run; resume the run directory, or copy the run and delete the later checkpoints in the copy");
        }
        Path runOfCheckpoint = ck == null ? null : ck.getParent().getParent();
        if (runOfCheckpoint != null && b.outputDir != null && !sameDirectory(b.outputDir, runOfCheckpoint))
            throw new IllegalArgumentException("--resume continues a run in its own directory (" + runOfCheckpoint + "); writing it to "
                    + b.outputDir + " would leave both incomplete: copy " + runOfCheckpoint + " to " + b.outputDir + " and resume the copy instead");
        this.out = b.outputDir != null ? b.outputDir : runOfCheckpoint != null ? runOfCheckpoint : Path.of(cfg.outputDir);
        if (ck == null) RunDirectory.checkNewRun(out, b.overwrite); // before any work; again under the lock below
        this.overwritePending = ck == null && b.overwrite;
        this.log = b.log;
        this.gradientHook = b.gradientHook;
        this.ownBackend = b.backend == null;
        this.ownRewards = b.rewards == null;
        // local dataset paths become absolute in the saved config, so that a resume finds them from any directory
        cfg.datasetMixerList = absolutize(cfg.datasetMixerList, cfg.baseDir);
        cfg.datasetMixerEvalList = absolutize(cfg.datasetMixerEvalList, cfg.baseDir);
        Backends.Choice choice = b.backend == null ? Backends.choose(cfg.backend, org.grpo4j.backend.Ops.ALL) : null;
        this.be = b.backend != null ? b.backend : choice.backend();
        try {
            this.rewards = b.rewards != null ? b.rewards
                    : new Rewards(cfg.compat(), cfg.verificationReward, cfg.verifierTimeout, Runtime.getRuntime().availableProcessors());
            // config.json, tokenizer, template, data, verifiers, lengths and memory: all checked before the weights load
            Preflight pf = Preflight.check(cfg, be, rewards);
            this.tok = pf.tokenizer();
            this.tokenizerDir = pf.tokenizerDir();
            this.template = pf.template();
            this.train = pf.train();
            this.eval = pf.eval();
            this.stopStrings = cfg.stopStrings.isEmpty() ? null : new StopStrings(cfg.stopStrings, ids -> tok.decodeLenient(ids, true));
            this.metricsCompat = ReferenceOptions.metricsCompat(cfg);
            this.dataFingerprint = pf.dataFingerprint();
            this.runDir = RunDirectory.lock(out);
            if (ck == null) RunDirectory.checkNewRun(out, b.overwrite);
            for (Path p : runDir.removeStaleTemporaries())
                if (log != null) log.println("grpo4j: removed " + p + " (left by a run that was killed)");

            // model
            LlamaConfig lc = pf.modelConfig();
            this.policy = cfg.modelNameOrPath.startsWith("init:") ? LlamaWeights.init(be, lc, cfg.seed) : LlamaWeights.load(be, tokenizerDir);
            String bad = ck == null ? policy.firstNonFiniteTensor() : null;
            if (bad != null)
                throw new IllegalArgumentException(cfg.modelNameOrPath + ": tensor " + bad + " holds NaN or infinite values; the model is damaged"
                        + " (a diverged run?): start from an earlier checkpoint");
            this.eos = tok.eosId();
            this.grads = LlamaWeights.zeros(be, policy.config());
            this.model = new LlamaModel(policy);
            this.iterator = new ShufflingIterator(train.size(), cfg.rolloutBatchSize(), cfg.seed);
            Generator.Config gc = Generator.Config.forBudget(model, (long) cfg.kvCacheMib << 20, 16, Math.max(cfg.localCompletions(), 1));
            this.generator = new Generator(model, gc);
            if (log != null) {
                if (choice != null && choice.reason() != null) log.println("grpo4j: " + choice.reason());
                log.printf("grpo4j: %s | model %,d params | %d prompts (dropped: %d with prompt > %d tokens, %d with chat > %d tokens) | longest prompt %d tokens%n",
                        be.description(), policy.layout().totalElements(), train.size(), train.droppedPrompt(), cfg.maxPromptTokenLength,
                        train.droppedChat(), cfg.maxTokenLength, pf.longestPrompt());
                for (var e : cfg.derived().entrySet()) log.printf("grpo4j:   %-36s %s%n", e.getKey(), e.getValue());
                for (String note : LrSchedule.notes(cfg)) log.println("grpo4j: note: " + note);
            }
            if (ck != null) restore(ck);
        } catch (IOException | RuntimeException | Error e) {
            close();
            throw e;
        }
    }

    private static boolean sameDirectory(Path a, Path b) {
        try {
            if (Files.exists(a) && Files.exists(b)) return Files.isSameFile(a, b);
        } catch (IOException e) {
            // compare the names
        }
        return a.toAbsolutePath().normalize().equals(b.toAbsolutePath().normalize());
    }

    /**
     * Fails unless a new run may start in {@code dir}: it is missing or empty, or (with {@code overwrite}) holds only
     * an earlier run's outputs. The trainer checks this itself; dry runs call it to report the same.
     */
    public static void checkRunDirectory(Path dir, boolean overwrite) throws IOException { RunDirectory.checkNewRun(dir, overwrite); }

    /** Stops at the next step boundary, writing a checkpoint. Safe from any thread. */
    public void cancel() { cancelled.set(true); }

    public int completedSteps() { return step; }

    /** Runs the (remaining) warm-up and training steps. */
    public Result run(Listener listener) throws IOException {
        Listener l = listener == null ? new Listener() {} : listener;
        if (overwritePending) {
            runDir.clearOutputs();
            overwritePending = false;
            if (log != null) log.println("grpo4j: --overwrite: deleted the earlier run's outputs in " + out);
        }
        Files.createDirectories(out);
        writeAtomically(out.resolve("config.json"), cfg.toJson());
        if (!warmupDone) {
            if (cfg.sftWarmup.steps > 0 && !sftWarmup(l)) {
                if (log != null) log.println("grpo4j: stopped during the supervised warm-up, before the first checkpoint: nothing to resume");
                return new Result(0, true, out, List.of());
            }
            warmupDone = true;
            reference = policy.copy();
            refModel = new LlamaModel(reference);
            optimizer = new AdamW(be, policy.layout().totalElements(), cfg.adamBeta1, cfg.adamBeta2, cfg.adamEps, cfg.weightDecay);
            checkpoint(l); // step 0: the initial policy (after warm-up), so a resume never repeats the warm-up
        }
        int total = cfg.trainingSteps();
        long runStart = System.nanoTime();
        int firstStep = step + 1;
        while (step < total && !cancelled.get()) {
            int s = step + 1;
            Map<String, Double> m = trainingStep(s);
            step = s;
            history.add(m);
            appendJsonl(out.resolve("metrics.jsonl"), m);
            progress(m, total, runStart, firstStep);
            l.onStep(s, m);
            if ((cfg.saveFreq > 0 && s % cfg.saveFreq == 0) || s == total) checkpointIfSound(l);
        }
        if (cancelled.get() && lastCheckpointStep() != step) checkpointIfSound(l);
        Plots.write(out.resolve("plots"), history);
        return new Result(step, cancelled.get(), out, List.copyOf(history));
    }

    // ---- one GRPO step ------------------------------------------------------------------------------------------

    /** Per-rollout data of one step. */
    private static final class Rollout {
        int row, promptLen;
        int[] seq;          // prompt + loss tokens
        int[] targets;      // loss tokens
        int[] generated;    // the generated tokens (through the stop token or stop string)
        boolean hasStop, correct;
        int seqLen;
        double reward, advantage, formatScore;
        float[] old, ref;
        final double[] trainKl = new double[4]; // per-sequence sums of kl1..kl4 in the first epoch's training forward
    }

    private Map<String, Double> trainingStep(int s) throws IOException {
        long t0 = System.nanoTime();
        int[] batch = ShufflingIterator.rankSlice(iterator.next(), 0, cfg.worldSize);
        int n = cfg.numberSamplesPerPrompt;
        List<int[]> prompts = new ArrayList<>();
        for (int i : batch) prompts.add(train.prompt(i));
        SamplingParams sp = new SamplingParams(n, (float) cfg.temperature, (float) cfg.topP, 0, cfg.responseLength, Set.of(eos), mix(cfg.seed, s, 1), stopStrings);
        List<List<Completion>> comps = generator.generate(prompts, sp);
        Generator.Stats gs = generator.lastStats();
        long tGen = System.nanoTime();

        // rewards (10/0), non-stop penalty, group advantages
        List<Rollout> rs = new ArrayList<>();
        List<Rewards.Item> items = new ArrayList<>();
        for (int p = 0; p < batch.length; p++)
            for (int j = 0; j < n; j++) {
                Rollout r = new Rollout();
                r.row = batch[p];
                r.promptLen = prompts.get(p).length;
                r.generated = comps.get(p).get(j).tokens();
                Truncation.Response resp = Truncation.apply(r.generated, eos, cfg.responseLength);
                r.targets = resp.lossTokens();
                r.seqLen = resp.sequenceLength();
                // the reference's contain_stop_token: a stop token, and a sequence length of at least min_response_length (G:1170-1173)
                r.hasStop = resp.hasStop() && r.seqLen >= cfg.minResponseLength;
                // the R1 format reward scores the response decoded with its special tokens (G:1082-1086, 1138-1139)
                if (cfg.addR1StyleFormatReward) r.formatScore = FormatReward.score(tok.decodeLenient(r.generated, false), cfg.r1StyleFormatReward);
                r.seq = concat(prompts.get(p), r.targets);
                RlvrRow row = train.row(batch[p]);
                items.add(new Rewards.Item(tok.decodeLenient(r.targets, true), row.groundTruth(), row.dataset(), row));
                rs.add(r);
            }
        List<Rewards.Result> res = rewards.scoreAll(items);
        double[] R = new double[rs.size()];
        int errors = 0, timeouts = 0;
        for (int k = 0; k < rs.size(); k++) {
            Rollout r = rs.get(k);
            r.reward = res.get(k).reward();
            r.correct = r.reward > 0; // verifiable_correct_rate counts the verifier's reward only
            r.reward += r.formatScore;
            if (res.get(k).error() != null) errors++;
            if (res.get(k).timedOut()) timeouts++;
            if (cfg.nonStopPenalty && !r.hasStop) r.reward = cfg.penaltyRewardValue;
            R[k] = r.reward;
        }
        double[] A = Advantages.compute(R, n);
        for (int k = 0; k < rs.size(); k++) rs.get(k).advantage = A[k];
        long tReward = System.nanoTime();

        // old (current policy) and reference log-probs, no gradients, in chunks
        float temp = (float) cfg.temperature;
        for (int from = 0; from < rs.size(); from += cfg.localRolloutForwardBatchSize) {
            List<Rollout> chunk = rs.subList(from, Math.min(rs.size(), from + cfg.localRolloutForwardBatchSize));
            float[] o = logprobs(model, chunk, temp), rf = logprobs(refModel, chunk, temp);
            int k = 0;
            for (Rollout r : chunk) {
                r.old = java.util.Arrays.copyOfRange(o, k, k + r.targets.length);
                r.ref = java.util.Arrays.copyOfRange(rf, k, k + r.targets.length);
                k += r.targets.length;
            }
        }

        // PPO epochs over mini-batches of micro-batches
        GrpoLossParams lp = new GrpoLossParams(temp, (float) cfg.cliprange, (float) cfg.epsHigh(), (float) cfg.beta, cfg.kl());
        int mini = cfg.localMiniBatchSize, micro = cfg.perDeviceTrainBatchSize;
        TrainStats stats = new TrainStats();
        double gradNormSum = 0;
        int optSteps = 0, skipped = 0;
        long tokensTrained = 0;
        long tTrain0 = System.nanoTime();
        for (int e = 0; e < cfg.numEpochs; e++) {
            int[] perm = permutation(rs.size(), mix(cfg.seed, s, 100 + e));
            for (int mb = 0; mb < cfg.numMiniBatches(); mb++) {
                List<Rollout> miniRs = new ArrayList<>();
                for (int q = mb * mini; q < (mb + 1) * mini; q++) miniRs.add(rs.get(perm[q]));
                long miniTokens = 0;
                for (Rollout r : miniRs) miniTokens += r.targets.length;
                boolean finite = true;
                for (int mc = 0; mc < mini; mc += micro) {
                    List<Rollout> microRs = miniRs.subList(mc, mc + micro);
                    MicroStats st = microStep(microRs, lp, miniTokens, miniRs.size(), e == 0);
                    tokensTrained += st.tokens;
                    finite &= Double.isFinite(st.loss);
                    stats.add(new TrainStats.Micro(e, mb, mc / micro, microRs.size(), st.lossTokens, st.loss, st.pgLoss,
                            st.ratioSum, st.clipSum, st.halfSqDiffSum, st.klSum));
                }
                if (gradientHook != null) gradientHook.accept(grads);
                double norm = optimizer.gradNorm(grads.flat());
                if (!finite || !Double.isFinite(norm)) {
                    skipped++;
                    skippedSteps++;
                    consecutiveNonfinite++;
                    if (log != null) log.printf("grpo4j: step %d: non-finite %s; optimizer step skipped (%d in a row)%n", s,
                            finite ? "gradient norm" : "loss", consecutiveNonfinite);
                    if (consecutiveNonfinite >= cfg.maxConsecutiveNonfinite) {
                        int last = lastCheckpointStep();
                        throw new TrainingAbortedException(s, consecutiveNonfinite + " consecutive optimizer steps had a non-finite loss or gradient norm"
                                + " (learning_rate " + cfg.learningRate + "); the last checkpoint is " + out.resolve("checkpoints").resolve("step_" + last));
                    }
                } else {
                    consecutiveNonfinite = 0;
                    optimizer.step(policy.flat(), grads.flat(), norm, cfg.maxGradNorm, schedule.at(optimizerSteps));
                    optimizerSteps++;
                    optSteps++;
                    gradNormSum += norm;
                }
                be.fill(grads.flat(), 0);
            }
        }
        long tEnd = System.nanoTime();
        return metrics(s, rs, gs, stats, gradNormSum, optSteps, skipped, errors, timeouts, tokensTrained, t0, tGen, tReward, tTrain0, tEnd);
    }

    /**
     * A micro-batch's token-masked mean losses and, over its loss tokens, the sums of the ratio, the clipped indicator,
     * 0.5 (logp - old)^2 and the selected KL estimator; tokens = packed tokens run (prompts included).
     */
    private record MicroStats(double loss, double pgLoss, long lossTokens, double ratioSum, double clipSum, double halfSqDiffSum, double klSum, long tokens) {}

    /** Rollouts packed for a forward pass: sequences, and for each loss token its row in the packing and its target. */
    private record Packed(List<int[]> seqs, int[] rows, int[] targets) {
        static Packed of(List<Rollout> rs) {
            List<int[]> seqs = new ArrayList<>();
            int nTok = 0;
            for (Rollout r : rs) {
                seqs.add(r.seq);
                nTok += r.targets.length;
            }
            int[] rows = new int[nTok], tgt = new int[nTok];
            int k = 0, start = 0;
            for (Rollout r : rs) {
                for (int t = 0; t < r.targets.length; t++, k++) {
                    rows[k] = start + r.promptLen - 1 + t; // the hidden state before target t predicts it
                    tgt[k] = r.targets[t];
                }
                start += r.seq.length;
            }
            return new Packed(seqs, rows, tgt);
        }
    }

    private MicroStats microStep(List<Rollout> rs, GrpoLossParams lp, long miniTokens, int miniSeqs, boolean firstEpoch) {
        Packed pk = Packed.of(rs);
        List<int[]> seqs = pk.seqs();
        int[] rows = pk.rows(), tgt = pk.targets();
        int nTok = rows.length;
        float[] w = new float[nTok], adv = new float[nTok], old = new float[nTok], ref = new float[nTok];
        LossAggregation agg = cfg.aggregation();
        int k = 0;
        for (Rollout r : rs) {
            double wt = agg.weight(r.targets.length, nTok, cfg.gradientAccumulationSteps(), miniTokens, miniSeqs, cfg.responseLength);
            for (int t = 0; t < r.targets.length; t++, k++) {
                w[k] = (float) wt;
                adv[k] = (float) r.advantage;
                old[k] = r.old[t];
                ref[k] = r.ref[t];
            }
        }
        int d = policy.config().hiddenSize();
        try (PackedBatch pb = PackedBatch.of(be, seqs, policy.config().vocabSize());
             LlamaModel.Activations act = model.forward(pb, cfg.gradientCheckpointing);
             Tensor rowsT = be.upload(rows, nTok); Tensor tgtT = be.upload(tgt, nTok); Tensor wT = be.upload(w, nTok);
             Tensor advT = be.upload(adv, nTok); Tensor oldT = be.upload(old, nTok); Tensor refT = be.upload(ref, nTok);
             Tensor sel = be.empty(DType.FP32, nTok, d); Tensor loss = be.empty(DType.FP32, 1); Tensor logp = be.empty(DType.FP32, nTok);
             Tensor ratio = be.empty(DType.FP32, nTok); Tensor clipped = be.empty(DType.FP32, nTok); Tensor kl = be.empty(DType.FP32, nTok);
             Tensor dSel = be.empty(DType.FP32, nTok, d); Tensor dHidden = be.zeros(DType.FP32, pb.tokens(), d)) {
            be.embedding(sel, act.hidden(), rowsT);
            be.grpoLoss(new GrpoLossOutputs(loss, logp, ratio, clipped, kl, dSel, grads.get("lm_head.weight")),
                    sel, policy.get("lm_head.weight"), tgtT, wT, advT, oldT, refT, lp);
            be.embeddingBackward(dHidden, dSel, rowsT);
            model.backward(act, dHidden, grads);
            float[] lpv = logp.toFloats(), rv = ratio.toFloats(), cv = clipped.toFloats(), kv = kl.toFloats();
            double rSum = 0, cSum = 0, akl = 0, pg = 0, total = 0, klSum = 0;
            for (int i = 0; i < nTok; i++) {
                rSum += rv[i];
                cSum += cv[i];
                double dl = lpv[i] - old[i];
                akl += 0.5 * dl * dl;
                double ratioI = rv[i], a = adv[i];
                double pgI = Math.max(-a * ratioI, -a * Math.min(Math.max(ratioI, 1 - cfg.cliprange), 1 + cfg.epsHigh()));
                pg += pgI;
                total += pgI + cfg.beta * kv[i];
                klSum += kv[i];
            }
            if (firstEpoch) { // the reference's objective/kl..kl4: per-sequence sums at (new - ref) of the first epoch (G:1256-1260)
                int q = 0;
                for (Rollout r : rs) {
                    java.util.Arrays.fill(r.trainKl, 0);
                    for (int t = 0; t < r.targets.length; t++, q++) {
                        double dd = Math.max(-40, Math.min(40, (double) lpv[q] - ref[q]));
                        for (KlEstimator e : KlEstimator.values()) r.trainKl[e.ordinal()] += e.value(dd, rv[q]);
                    }
                }
            }
            // micro-batch means (token-masked, no padding): the reference's loss/policy_avg is the total loss pg + beta*kl
            return new MicroStats(total / nTok, pg / nTok, nTok, rSum, cSum, akl, klSum, pb.tokens());
        }
    }

    /** Log-probs of every rollout's loss tokens under a model, concatenated in order. */
    private float[] logprobs(LlamaModel m, List<Rollout> rs, float temp) {
        Packed pk = Packed.of(rs);
        try (PackedBatch pb = PackedBatch.of(be, pk.seqs(), policy.config().vocabSize())) {
            return m.tokenLogprobs(pb, pk.rows(), pk.targets(), temp);
        }
    }

    // ---- metrics ------------------------------------------------------------------------------------------------

    private Map<String, Double> metrics(int s, List<Rollout> rs, Generator.Stats gs, TrainStats stats, double gradNormSum, int optSteps, int skipped,
                                        int errors, int timeouts, long tokensTrained, long t0, long tGen, long tReward, long tTrain0, long tEnd) {
        Map<String, Double> m = new LinkedHashMap<>();
        int k = rs.size(), L = cfg.responseLength;
        boolean compat = metricsCompat;
        double[] R = new double[k];
        double scores = 0, correct = 0, stops = 0, lenSum = 0, lenMin = Double.MAX_VALUE, lenMax = 0, respLen = 0, stopIds = 0, format = 0;
        double[] klSum = new double[4];
        double entropy = 0, nonScore = 0;
        KlEstimator sel = cfg.kl();
        for (int i = 0; i < k; i++) {
            Rollout r = rs.get(i);
            R[i] = r.reward;
            scores += r.reward;
            correct += r.correct ? 1 : 0;
            stops += r.hasStop ? 1 : 0;
            lenSum += r.seqLen;
            lenMin = Math.min(lenMin, r.seqLen);
            lenMax = Math.max(lenMax, r.seqLen);
            respLen += r.targets.length;
            format += r.formatScore;
            for (int t : r.generated) if (t == eos) stopIds++;
            // the reference counts stop ids in the responses padded with the stop token to response_length (G:1297)
            if (compat) stopIds += L - r.generated.length;
            double[] seqKl = new double[4];
            for (int t = 0; t < r.targets.length; t++) {
                double dd = Math.max(-40, Math.min(40, r.old[t] - r.ref[t]));
                for (KlEstimator e : KlEstimator.values()) seqKl[e.ordinal()] += e.value(dd, 1.0);
                entropy -= r.old[t];
            }
            // the reference's padded slots hold log-prob 1.0, so its "entropy" subtracts one per padding slot (G:1302)
            if (compat) entropy -= L - r.targets.length;
            double[] kls = compat ? r.trainKl : seqKl;
            for (int e = 0; e < 4; e++) klSum[e] += kls[e];
            nonScore += -cfg.beta * seqKl[sel.ordinal()];
        }
        Map<String, Double> st = new LinkedHashMap<>();
        double compatNonScore = stats.put(st, compat, cfg.numEpochs, cfg.numberSamplesPerPrompt, cfg.gradientAccumulationSteps(), L, cfg.beta);
        double ns = compat ? compatNonScore : nonScore / k;
        m.put("training_step", (double) s);
        m.put("episode", (double) cfg.completionsPerStep() * s);
        // the reference divides episodes (completions) by the dataset's rows (G:1324)
        m.put("epoch", compat ? (double) cfg.completionsPerStep() * s / train.size() : (double) s * cfg.rolloutBatchSize() / train.size());
        // the rate of this step's last optimizer update; the reference logs get_last_lr() after it, i.e. the next update's rate (G:1323)
        m.put("lr", schedule.at(compat ? optimizerSteps : Math.max(0, optimizerSteps - 1)));
        m.put("objective/scores", scores / k);
        m.put("objective/scores_mean", scores / k);
        m.put("objective/scores_over_10", scores / k / cfg.verificationReward);
        m.put("objective/reward_std", Advantages.meanGroupStd(R, cfg.numberSamplesPerPrompt));
        m.put("objective/verifiable_correct_rate", correct / k);
        m.put("objective/kl", klSum[0] / k);
        m.put("objective/kl2", klSum[1] / k);
        m.put("objective/kl3", klSum[2] / k);
        m.put("objective/kl4", klSum[3] / k);
        m.put("objective/entropy", entropy / k);
        m.put("objective/non_score_reward", ns);
        m.put("objective/rlhf_reward", scores / k + ns);
        m.put("val/sequence_lengths", lenSum / k);
        m.put("val/sequence_lengths_min", lenMin);
        m.put("val/sequence_lengths_max", lenMax);
        m.put("val/response_length", respLen / k);
        m.put("val/num_stop_token_ids", stopIds);
        m.put("val/stop_token_rate", stops / k);
        if (cfg.addR1StyleFormatReward) m.put("val/format_scores", format / k);
        for (String key : List.of("val/ratio", "val/ratio_var", "loss/policy_avg", "loss/pg_avg", "policy/approxkl_avg", "policy/clipfrac_avg"))
            m.put(key, st.get(key));
        if (compat) m.put("policy/entropy_avg", 0.0); // never filled in the reference (G:1313)
        m.put("optim/grad_norm", optSteps > 0 ? gradNormSum / optSteps : Double.NaN);
        m.put("optim/skipped_steps", (double) skipped);
        m.put("rewards/errors", (double) errors);
        m.put("rewards/timeouts", (double) timeouts);
        m.put("time/generation", (tGen - t0) / 1e9);
        m.put("time/reward", (tReward - tGen) / 1e9);
        m.put("time/training", (tEnd - tTrain0) / 1e9);
        m.put("time/step", (tEnd - t0) / 1e9);
        m.put("throughput/generation_tokens_per_s", gs.tokensPerSecond());
        m.put("throughput/training_tokens_per_s", tokensTrained / Math.max(1e-9, (tEnd - tTrain0) / 1e9));
        m.put("rollout/kv_pool_peak_utilization", gs.peakUtilization());
        if (eval != null && cfg.numEvals > 0 && (s - 1) % cfg.evalFreq() == 0) writeSamples(s);
        return m;
    }

    /** Eval prompts at eval steps: one completion each (temperature as in training), appended to samples.jsonl. */
    private void writeSamples(int s) {
        List<int[]> ps = new ArrayList<>();
        for (int i = 0; i < Math.min(32, eval.size()); i++) ps.add(eval.prompt(i));
        SamplingParams sp = new SamplingParams(1, (float) cfg.temperature, (float) cfg.topP, 0, cfg.responseLength, Set.of(eos), mix(cfg.seed, s, 7), stopStrings);
        List<List<Completion>> cs = generator.generate(ps, sp);
        List<Rewards.Item> items = new ArrayList<>();
        for (int i = 0; i < ps.size(); i++) {
            RlvrRow row = eval.row(i);
            items.add(new Rewards.Item(tok.decodeLenient(cs.get(i).get(0).tokens(), true), row.groundTruth(), row.dataset(), row));
        }
        List<Rewards.Result> res = rewards.scoreAll(items);
        try (BufferedWriter wr = Files.newBufferedWriter(out.resolve("samples.jsonl"), StandardCharsets.UTF_8, StandardOpenOption.CREATE, StandardOpenOption.APPEND)) {
            for (int i = 0; i < ps.size(); i++) {
                ObjectNode o = JSON.createObjectNode();
                o.put("training_step", s);
                o.put("prompt", tok.decode(ps.get(i), false));
                o.put("response", items.get(i).response());
                o.put("ground_truth", items.get(i).groundTruth());
                o.put("reward", res.get(i).reward());
                o.put("finish_reason", cs.get(i).get(0).finishReason().label());
                if (res.get(i).error() != null) o.put("error", res.get(i).error());
                if (res.get(i).timedOut()) o.put("timed_out", true);
                wr.write(JSON.writeValueAsString(o));
                wr.newLine();
            }
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    private void progress(Map<String, Double> m, int total, long runStart, int firstStep) {
        if (log == null) return;
        int done = step - firstStep + 1;
        double elapsed = (System.nanoTime() - runStart) / 1e9, eta = elapsed / done * (total - step);
        log.printf(java.util.Locale.ROOT, "step %d/%d | reward %.2f | correct %.3f | kl %.4f | len %.1f | gen %.0f tok/s | train %.0f tok/s | %.2f s/step | ETA %s%n",
                step, total, m.get("objective/scores"), m.get("objective/verifiable_correct_rate"), m.get("objective/kl"),
                m.get("val/response_length"), m.get("throughput/generation_tokens_per_s"), m.get("throughput/training_tokens_per_s"),
                m.get("time/step"), duration(eta));
    }

    static String duration(double s) {
        long t = Math.round(s);
        return t >= 3600 ? String.format("%dh%02dm", t / 3600, t / 60 % 60) : t >= 60 ? String.format("%dm%02ds", t / 60, t % 60) : t + "s";
    }

    // ---- supervised warm-up -------------------------------------------------------------------------------------

    /**
     * Runs the warm-up; false when cancelled before its end. A step's batch is split into micro-batches of at most
     * per_device_train_batch_size x (max_prompt_token_length + response_length) tokens (at least one sequence
     * each), the largest a GRPO micro-batch can hold, so a large sft_warmup.batch_size costs time, not memory.
     * Each token's gradient weight is -1 / (tokens of the whole batch), so the step is that of the whole batch.
     */
    private boolean sftWarmup(Listener l) {
        List<int[]> seqs = new ArrayList<>();
        List<Integer> promptLens = new ArrayList<>();
        for (int i = 0; i < train.size(); i++) {
            List<ChatMessage> ms = train.row(i).messages();
            ChatMessage last = ms.get(ms.size() - 1);
            if (ms.size() < 2 || !last.role().equals("assistant")) continue;
            int[] p = train.prompt(i), a = tok.encode(last.content());
            int[] full = concat(p, concat(a, new int[] {eos}));
            seqs.add(full);
            promptLens.add(p.length);
        }
        if (seqs.isEmpty()) throw new IllegalArgumentException("sft_warmup: no training row ends with an assistant turn to imitate");
        int steps = cfg.sftWarmup.steps, bsz = cfg.sftWarmup.batchSize;
        long budget = (long) cfg.perDeviceTrainBatchSize * (cfg.maxPromptTokenLength + cfg.responseLength);
        try (AdamW opt = new AdamW(be, policy.layout().totalElements(), cfg.adamBeta1, cfg.adamBeta2, cfg.adamEps, 0.0)) {
            SplittableRandom rnd = new SplittableRandom(mix(cfg.seed, 0, 3));
            long t0 = System.nanoTime(), lastLog = t0;
            for (int st = 1; st <= steps; st++) {
                if (cancelled.get()) return false;
                int[] pick = new int[bsz];
                long nTok = 0;
                for (int i = 0; i < bsz; i++) {
                    pick[i] = rnd.nextInt(seqs.size());
                    nTok += seqs.get(pick[i]).length - promptLens.get(pick[i]);
                }
                double loss = 0;
                List<int[]> b = new ArrayList<>();
                List<Integer> pl = new ArrayList<>();
                long bTok = 0;
                for (int i = 0; i <= bsz; i++) {
                    int len = i < bsz ? seqs.get(pick[i]).length : 0;
                    if (!b.isEmpty() && (i == bsz || bTok + len > budget)) {
                        loss += sftMicroStep(b, pl, nTok);
                        sftMicroBatches++;
                        b.clear();
                        pl.clear();
                        bTok = 0;
                    }
                    if (i < bsz) {
                        b.add(seqs.get(pick[i]));
                        pl.add(promptLens.get(pick[i]));
                        bTok += len;
                    }
                }
                double norm = opt.gradNorm(grads.flat());
                if (Double.isFinite(norm) && Double.isFinite(loss))
                    opt.step(policy.flat(), grads.flat(), norm, cfg.maxGradNorm, cfg.sftWarmup.learningRate);
                be.fill(grads.flat(), 0);
                l.onSftStep(st, steps, loss);
                long now = System.nanoTime();
                if (log != null && (st % 25 == 0 || st == steps || now - lastLog > 10_000_000_000L)) { // and at least every 10 s
                    log.printf(java.util.Locale.ROOT, "sft warm-up %d/%d | nll %.4f | %.1f s%n", st, steps, loss, (now - t0) / 1e9);
                    lastLog = now;
                }
            }
        }
        return true;
    }

    /** Accumulates the gradient of sum(-logp) / totalTokens over the assistant tokens (incl. EOS); returns that part of the mean NLL. */
    private double sftMicroStep(List<int[]> seqs, List<Integer> promptLens, long totalTokens) {
        int nTok = 0;
        for (int i = 0; i < seqs.size(); i++) nTok += seqs.get(i).length - promptLens.get(i);
        int[] rows = new int[nTok], tgt = new int[nTok];
        float[] g = new float[nTok];
        int k = 0, start = 0;
        for (int i = 0; i < seqs.size(); i++) {
            int[] s = seqs.get(i);
            for (int t = promptLens.get(i); t < s.length; t++, k++) {
                rows[k] = start + t - 1;
                tgt[k] = s[t];
                g[k] = -1f / totalTokens;
            }
            start += s.length;
        }
        int d = policy.config().hiddenSize();
        try (PackedBatch pb = PackedBatch.of(be, seqs, policy.config().vocabSize()); LlamaModel.Activations act = model.forward(pb, cfg.gradientCheckpointing);
             Tensor rowsT = be.upload(rows, nTok); Tensor tgtT = be.upload(tgt, nTok); Tensor gT = be.upload(g, nTok);
             Tensor sel = be.empty(DType.FP32, nTok, d); Tensor lp = be.empty(DType.FP32, nTok); Tensor dSel = be.empty(DType.FP32, nTok, d);
             Tensor dHidden = be.zeros(DType.FP32, pb.tokens(), d)) {
            be.embedding(sel, act.hidden(), rowsT);
            be.tokenLogprobs(lp, sel, policy.get("lm_head.weight"), tgtT, 1f);
            be.tokenLogprobsBackward(dSel, grads.get("lm_head.weight"), gT, sel, policy.get("lm_head.weight"), tgtT, 1f);
            be.embeddingBackward(dHidden, dSel, rowsT);
            model.backward(act, dHidden, grads);
            double s = 0;
            for (float x : lp.toFloats()) s -= x;
            return s / totalTokens;
        }
    }

    // ---- checkpoints and resume ---------------------------------------------------------------------------------

    private int lastCheckpointStep() {
        try (var s = Files.list(out.resolve("checkpoints"))) {
            return s.map(p -> p.getFileName().toString()).filter(n -> n.matches("step_\\d+")).mapToInt(n -> Integer.parseInt(n.substring(5))).max().orElse(-1);
        } catch (IOException e) {
            return -1;
        }
    }

    /**
     * Checkpoints unless the state is unsound: after a skipped (non-finite) optimizer step, or with non-finite
     * weights, the last good checkpoint stays the newest one.
     */
    private void checkpointIfSound(Listener l) throws IOException {
        String bad = consecutiveNonfinite > 0 ? "its last optimizer step was non-finite" : null;
        if (bad == null) {
            String t = policy.firstNonFiniteTensor();
            if (t != null) bad = "tensor " + t + " holds NaN or infinite values";
        }
        if (bad == null) {
            checkpoint(l);
            return;
        }
        if (log != null) log.println("grpo4j: no checkpoint at step " + step + ": " + bad + "; the newest checkpoint stays step_" + lastCheckpointStep());
    }

    /** Writes checkpoints/step_N atomically: model (HF, fp32), optimizer moments, trainer state. */
    private void checkpoint(Listener l) throws IOException {
        Path fin = out.resolve("checkpoints").resolve("step_" + step);
        if (Files.exists(fin)) return;
        AtomicDir.write(fin, tmp -> {
            policy.save(tmp.resolve("model"), "F32", 5L << 30, tokenizerDir);
            optimizer.save(tmp.resolve("optimizer.safetensors"));
            ObjectNode st = JSON.createObjectNode();
            st.put("training_step", step);
            st.put("optimizer_steps", optimizerSteps);
            st.put("consecutive_nonfinite", consecutiveNonfinite);
            st.put("skipped_steps", skippedSteps);
            ShufflingIterator.Position pos = iterator.position();
            st.putObject("iterator").put("epoch", pos.epoch()).put("offset", pos.offset());
            st.put("reference_checksum", checksum(reference.flat()));
            st.put("train_prompts", train.size());
            st.put("data_fingerprint", dataFingerprint);
            st.put("rng", "stateless: every draw is a function of (seed, step, ...)");
            Files.writeString(tmp.resolve("trainer_state.json"), JSON.writerWithDefaultPrettyPrinter().writeValueAsString(st));
            Files.writeString(tmp.resolve("config.json"), cfg.toJson());
        });
        if (step > 0) Plots.write(out.resolve("plots"), history);
        l.onCheckpoint(step, fin);
    }

    private void restore(Path ck) throws IOException {
        Path stateFile = ck.resolve("trainer_state.json");
        TrainerState st = TrainerState.read(stateFile, ck);
        if (st.dataFingerprint() != null && !st.dataFingerprint().equals(dataFingerprint))
            throw new IllegalArgumentException("the training data changed since " + ck + " (" + st.trainPrompts() + " prompts then, " + train.size()
                    + " now, different rows or prompts): an exact resume is impossible. To go on with the new data, start a new run from that"
                    + " checkpoint's weights (model_name_or_path " + ck.resolve("model") + ")");
        if (st.dataFingerprint() == null && log != null)
            log.println("grpo4j: " + stateFile + " has no data fingerprint (written by an older grpo4j): the data cannot be checked");
        // the reference policy is the step-0 policy (the model after warm-up)
        Path step0 = ck.getParent().resolve("step_0").resolve("model");
        if (!Files.isDirectory(step0)) throw new IOException(ck.getParent() + ": step_0 (the reference policy) is missing");
        try (LlamaWeights w0 = LlamaWeights.load(be, step0); LlamaWeights wk = LlamaWeights.load(be, ck.resolve("model"))) {
            be.copy(policy.flat(), wk.flat());
            reference = w0.copy();
        }
        if (checksum(reference.flat()) != st.referenceChecksum())
            throw new IOException(step0 + ": the reference policy does not match the checksum recorded in " + stateFile);
        refModel = new LlamaModel(reference);
        optimizer = new AdamW(be, policy.layout().totalElements(), cfg.adamBeta1, cfg.adamBeta2, cfg.adamEps, cfg.weightDecay);
        optimizer.load(ck.resolve("optimizer.safetensors"));
        step = st.trainingStep();
        optimizerSteps = st.optimizerSteps();
        consecutiveNonfinite = st.consecutiveNonfinite();
        skippedSteps = st.skippedSteps();
        try {
            iterator.restore(new ShufflingIterator.Position(st.iteratorEpoch(), st.iteratorOffset()));
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(stateFile + ": " + e.getMessage());
        }
        warmupDone = true;
        // keep only what the checkpoint has seen: later lines came from the interrupted run
        history.addAll(truncateJsonl(out.resolve("metrics.jsonl"), step, log));
        truncateJsonl(out.resolve("samples.jsonl"), step, log);
        if (log != null) log.printf("grpo4j: resumed from %s (step %d, %d optimizer steps)%n", ck, step, optimizerSteps);
    }

    /** The newest complete checkpoint under a run directory, checkpoints/ directory, or the checkpoint itself. */
    static Path latestCheckpoint(Path p) throws IOException {
        if (p.toString().isBlank()) throw new IllegalArgumentException("the resume directory is empty (\"\")");
        if (!Files.exists(p)) throw new java.nio.file.NoSuchFileException(p.toString(), null, "no such run directory or checkpoint");
        if (Files.isRegularFile(p.resolve("trainer_state.json"))) return p;
        if (!Files.isDirectory(p)) throw new IllegalArgumentException(p + ": not a run directory or checkpoint (it is a file)");
        Path dir = Files.isDirectory(p.resolve("checkpoints")) ? p.resolve("checkpoints") : p;
        try (var s = Files.list(dir)) {
            return s.filter(q -> q.getFileName().toString().matches("step_\\d{1,9}") && Files.isRegularFile(q.resolve("trainer_state.json")))
                    .max(java.util.Comparator.comparingInt(q -> Integer.parseInt(q.getFileName().toString().substring(5))))
                    .orElseThrow(() -> new IllegalArgumentException(p + ": no complete checkpoint (checkpoints/step_N with trainer_state.json)"
                            + (Files.exists(p.resolve(RunDirectory.LOCK)) || Files.exists(p.resolve("metrics.jsonl"))
                            ? "; the run stopped before its first checkpoint: start it again with --overwrite" : "")));
        }
    }

    /** When resuming, the config saved with the checkpoint is the run's config. */
    private static GrpoConfig savedConfig(Path ck) throws IOException {
        Path f = ck.resolve("config.json");
        if (!Files.isRegularFile(f)) throw new java.nio.file.NoSuchFileException(f.toString(), null, "the checkpoint's config");
        return GrpoConfig.fromJsonString(Files.readString(f, StandardCharsets.UTF_8), f.toString());
    }

    /**
     * Keeps the lines of a run's JSONL whose training_step is at most {@code lastStep} (later ones came from the
     * interrupted run). A line that is not a JSON object with an integer training_step (a torn write, or damage) is
     * moved to FILE.dropped with a note, wherever it is; the lines around it are kept.
     */
    static List<Map<String, Double>> truncateJsonl(Path file, int lastStep, PrintStream log) throws IOException {
        List<Map<String, Double>> kept = new ArrayList<>();
        if (!Files.exists(file)) return kept;
        String text = new String(Files.readAllBytes(file), StandardCharsets.UTF_8); // a torn multi-byte character becomes U+FFFD
        List<String> keep = new ArrayList<>(), dropped = new ArrayList<>();
        List<Integer> droppedNo = new ArrayList<>();
        int no = 0;
        for (String line : text.split("\n", -1)) {
            no++;
            if (line.isBlank()) continue;
            JsonNode n;
            try {
                n = JSON.readTree(line);
            } catch (IOException e) {
                n = null;
            }
            if (n == null || !n.isObject() || !n.path("training_step").canConvertToExactIntegral()) {
                dropped.add(line);
                droppedNo.add(no);
                continue;
            }
            if (n.path("training_step").asLong() > lastStep) continue;
            keep.add(line);
            if (file.getFileName().toString().equals("metrics.jsonl")) {
                Map<String, Double> m = new LinkedHashMap<>();
                n.fields().forEachRemaining(e -> m.put(e.getKey(), e.getValue().isNumber() ? e.getValue().asDouble() : Double.NaN));
                kept.add(m);
            }
        }
        if (!dropped.isEmpty()) {
            Path side = file.resolveSibling(file.getFileName() + ".dropped");
            Files.write(side, dropped, StandardCharsets.UTF_8, StandardOpenOption.CREATE, StandardOpenOption.APPEND);
            if (log != null) log.println("grpo4j: " + file + ": line" + (dropped.size() > 1 ? "s " : " ") + droppedNo
                    + " not a JSON object with a training_step (a torn write?); moved to " + side);
        }
        writeAtomically(file, keep.isEmpty() ? "" : String.join("\n", keep) + "\n");
        return kept;
    }

    /** Writes a file through a temporary sibling that is synced and renamed over it: readers see old or new. */
    static void writeAtomically(Path file, String content) throws IOException {
        Path tmp = file.resolveSibling(file.getFileName() + ".tmp");
        try (java.nio.channels.FileChannel ch = java.nio.channels.FileChannel.open(tmp, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                StandardOpenOption.TRUNCATE_EXISTING)) {
            java.nio.ByteBuffer buf = java.nio.ByteBuffer.wrap(content.getBytes(StandardCharsets.UTF_8));
            while (buf.hasRemaining()) ch.write(buf);
            ch.force(true);
        } catch (IOException e) {
            Files.deleteIfExists(tmp);
            throw new IOException(file + ": cannot write: " + describe(e), e);
        }
        Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }

    /** The reason of an I/O failure without the Java class name ("No space left on device"). */
    static String describe(IOException e) {
        if (e instanceof java.nio.file.FileSystemException f && f.getReason() != null) return f.getReason();
        return e.getMessage() == null ? "I/O error" : e.getMessage();
    }

    // ---- helpers ------------------------------------------------------------------------------------------------

    private static void appendJsonl(Path f, Map<String, Double> m) throws IOException {
        ObjectNode o = JSON.createObjectNode();
        m.forEach((k, v) -> {
            if (v == null || !Double.isFinite(v)) o.putNull(k);
            else o.put(k, v);
        });
        try {
            Files.writeString(f, JSON.writeValueAsString(o) + "\n", StandardCharsets.UTF_8, StandardOpenOption.CREATE, StandardOpenOption.APPEND);
        } catch (IOException e) {
            throw new IOException(f + ": cannot append: " + describe(e), e);
        }
    }

    /** A copy of a mixer list with each local dataset path (even positions) made absolute. */
    private static List<String> absolutize(List<String> in, Path baseDir) {
        List<String> mixer = new ArrayList<>(in);
        for (int i = 0; i + 1 < mixer.size(); i += 2) {
            String d = mixer.get(i);
            Path p = Path.of(d);
            if (p.isAbsolute()) continue;
            if (baseDir != null && Files.exists(baseDir.resolve(p))) mixer.set(i, baseDir.resolve(p).normalize().toString());
            else if (Files.exists(p)) mixer.set(i, p.toAbsolutePath().normalize().toString());
        }
        return mixer;
    }

    static int[] concat(int[] a, int[] b) {
        int[] c = java.util.Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, c, a.length, b.length);
        return c;
    }

    /** A 64-bit seed from (seed, step, salt): SplitMix64 finalizer over their combination. */
    static long mix(long seed, long step, long salt) {
        long z = seed * 0x9E3779B97F4A7C15L + step * 0xBF58476D1CE4E5B9L + salt * 0x94D049BB133111EBL;
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    static int[] permutation(int n, long seed) { return ShufflingIterator.permutation(n, seed); }

    static long checksum(Tensor t) {
        float[] a = t.toFloats();
        long h = 1125899906842597L;
        for (float x : a) h = 31 * h + Float.floatToRawIntBits(x);
        return h;
    }

    @Override
    public void close() {
        if (policy != null) policy.close();
        if (grads != null) grads.close();
        if (reference != null) reference.close();
        if (optimizer != null) optimizer.close();
        if (tok != null) tok.close();
        if (ownRewards && rewards != null) rewards.close();
        if (ownBackend && be != null) be.close();
        if (runDir != null) runDir.close();
    }
}
