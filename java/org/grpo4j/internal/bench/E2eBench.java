package org.grpo4j.internal.bench;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.concurrent.Callable;
import org.grpo4j.internal.backend.AdamWStep;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.Backends;
import org.grpo4j.internal.backend.CudaBackend;
import org.grpo4j.internal.backend.CudaRuntime;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.GrpoLossOutputs;
import org.grpo4j.internal.backend.GrpoLossParams;
import org.grpo4j.internal.backend.KlEstimator;
import org.grpo4j.internal.backend.Memory;
import org.grpo4j.internal.backend.Tensor;
import org.grpo4j.internal.model.LlamaConfig;
import org.grpo4j.internal.model.LlamaModel;
import org.grpo4j.internal.model.LlamaWeights;
import org.grpo4j.internal.model.PackedBatch;
import org.grpo4j.internal.model.PrefixPacking;
import org.grpo4j.internal.model.ParameterLayout;
import org.grpo4j.reward.Compat;
import org.grpo4j.reward.Rewards;
import org.grpo4j.internal.rollout.Completion;
import org.grpo4j.internal.rollout.Generator;
import org.grpo4j.internal.rollout.SamplingParams;
import org.grpo4j.internal.train.Advantages;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/**
 * Issue 14's end-to-end benchmark (docs/benchmarks.md, "End to end"), on random weights:
 * <ul>
 *   <li><b>train</b>: one training step (forward, the LM-head loss's backward through
 *       {@link Backend#tokenLogprobsBackward} on every token with random targets, the model's backward, gradient
 *       clipping and AdamW) on sequences packed end to end, in precision bf16: bf16 compute weights, fp32 master
 *       weights, gradients and moments, AdamW writing the bf16 copy. Tokens/s and MFU ({@link E2eWork}).</li>
 *   <li><b>rollout</b>: {@link Generator} on prompts × samples at temperature 1 without stop tokens, with and without
 *       decode graphs: tokens/s, the same as a percentage of the memory roofline (weights + KV read per decode step ÷
 *       the copy bandwidth measured in this run) and of the decode bound (the longer of weights and GEMMs per step,
 *       plus the KV read: {@link E2eWork#boundSeconds}), the steady-state (decode-only) rate, host ms per decode step.</li>
 *   <li><b>grpo</b>: one whole GRPO step built from the trainer's pieces: generation, GSM8K rewards on synthetic
 *       responses (random weights emit random ids, so the texts are made from them), group advantages, old and
 *       reference log-probs, and mini-batches of micro-batches through the fused GRPO loss, each mini-batch ending
 *       in one optimizer step. Seconds per phase.</li>
 * </ul>
 * Presets {@code llama-3.2-1b} and {@code llama-3.1-8b-4l} run the issue's shapes (CUDA); {@code tiny} runs the same
 * code at toy shapes in seconds (the CPU test). Run: {@code tools/bench E2eBench [cuda|cpu|auto] [options]}, or
 * {@code tools/bench E2eBench --compare OURS.json PEERS.json [--out DIR]} with tools/e2e-peers.py's JSON.
 */
@Command(name = "E2eBench", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Issue 14's end-to-end benchmark: training step, rollout and one GRPO step on random weights (docs/benchmarks.md)."})
public final class E2eBench implements Callable<Integer> {

    /** The presets the benchmark knows, in usage order. */
    public static final List<String> PRESETS = List.of("llama-3.2-1b", "llama-3.1-8b-4l", "tiny");

    /** The presets a CUDA run measures by default (the issue's table). */
    public static final List<String> GPU_PRESETS = List.of("llama-3.2-1b", "llama-3.1-8b-4l");

    /** Presets on which the GRPO step runs (the issue asks for it on the 1B preset; tiny is the CPU test). */
    static final Set<String> GRPO_PRESETS = Set.of("llama-3.2-1b", "tiny");

    static final int BLOCK_SIZE = 16;
    static final float LR = 1e-6f, WEIGHT_DECAY = 0.01f;
    static final double MAX_GRAD_NORM = 1.0;

    /**
     * The problem shapes of a preset. Training: {@code trainSeqs} sequences of {@code trainLen} tokens packed. Rollout:
     * {@code prompts} prompts of {@code promptLen} tokens × {@code samples} samples, for each of {@code newTokens}.
     * GRPO: the rollout shape with {@code grpoNewTokens}, trained in {@code miniBatches} mini-batches (one optimizer
     * step each) of micro-batches of {@code microSeqs} sequences; log-probs in chunks of {@code microSeqs}.
     */
    public record Shapes(int trainSeqs, int trainLen, int prompts, int samples, int promptLen, List<Integer> newTokens,
                         int grpoNewTokens, int microSeqs, int miniBatches) {
        public Shapes {
            newTokens = List.copyOf(newTokens);
            if ((prompts * samples) % (miniBatches * microSeqs) != 0)
                throw new IllegalArgumentException("GRPO: " + prompts * samples + " sequences do not split into " + miniBatches
                        + " mini-batches of micro-batches of " + microSeqs);
        }

        String trainKey() { return trainSeqs + "x" + trainLen; }
        String trainShape() { return trainSeqs + " x " + trainLen + " tokens, packed"; }
        String rolloutShape(int n) { return prompts + " prompts x " + samples + " samples, prompt " + promptLen + ", " + n + " new"; }
        String grpoKey() { return prompts + "x" + samples; }
        String grpoShape() {
            int seqs = prompts * samples;
            return prompts + " prompts x " + samples + " samples, prompt " + promptLen + ", " + grpoNewTokens + " new; "
                    + miniBatches + " mini-batches of " + seqs / miniBatches + ", micro-batches of " + microSeqs;
        }
    }

    /**
     * The issue's shapes: 4 × 2048 training tokens; 48 prompts × 16 samples of 256-token prompts, 256 and 512 new
     * tokens. The GRPO step keeps the Tulu 3.1 step's 48 × 16 rollouts and its 2 optimizer steps, with 256 new
     * tokens instead of up to 2048 (time, not memory: the loan's benchmark budget is minutes), micro-batches of 16
     * sequences = 8192 tokens (the training step's size) and no gradient checkpointing unless asked.
     */
    public static final Shapes ISSUE = new Shapes(4, 2048, 48, 16, 256, List.of(256, 512), 256, 16, 2);

    /** Toy shapes for the tiny preset (the CPU test). */
    public static final Shapes TINY = new Shapes(4, 64, 4, 4, 16, List.of(8, 16), 8, 4, 2);

    /** A preset's architecture: the tiny one with a 512-token vocabulary (ids are random; no tokenizer is needed). */
    public static LlamaConfig config(String preset) {
        if (preset.equals("tiny")) return LlamaConfig.tiny(512, 1, 2);
        if (!PRESETS.contains(preset)) {
            String hint = preset.equals("llama-3.1-8b") ? " (the whole 8B does not fit one GPU with its optimizer state: llama-3.1-8b-4l is it truncated to 4 layers)" : "";
            throw new IllegalArgumentException("unknown --preset \"" + preset + "\" (valid: " + String.join(", ", PRESETS) + ")" + hint);
        }
        return LlamaConfig.preset(preset);
    }

    public static Shapes shapes(String preset) { return preset.equals("tiny") ? TINY : ISSUE; }

    // ---- options --------------------------------------------------------------------------------------------------

    @Parameters(index = "0", arity = "0..1", paramLabel = "BACKEND", defaultValue = "auto",
            description = "auto, cpu, cuda or cuda:N (default: ${DEFAULT-VALUE}).")
    String backendName;

    @Option(names = "--preset", split = ",", paramLabel = "NAME",
            description = "llama-3.2-1b, llama-3.1-8b-4l or tiny; repeatable or comma-separated (default: both llama presets on CUDA, tiny on the CPU).")
    List<String> presetNames;

    @Option(names = "--sections", split = ",", paramLabel = "NAME", description = "train, rollout, grpo (default: all).")
    List<String> sectionNames;

    @Option(names = "--json", paramLabel = "FILE", description = "Also write the results as JSON (schema grpo4j-e2e/1).")
    Path json;

    @Option(names = "--reps", defaultValue = "5", description = "Timed training steps per preset, >= 5 (default: ${DEFAULT-VALUE}).")
    int reps;

    @Option(names = "--warmup", defaultValue = "2", description = "Untimed training steps first, >= 1 (default: ${DEFAULT-VALUE}).")
    int warmup;

    @Option(names = "--rollout-reps", defaultValue = "1", description = "Timed generate calls per rollout row (default: ${DEFAULT-VALUE}).")
    int rolloutReps;

    @Option(names = "--precision", defaultValue = "bf16", description = "bf16 (compute weights, activations, KV cache; fp32 master weights) or fp32 (default: ${DEFAULT-VALUE}).")
    String precisionName;

    @Option(names = "--checkpointing", description = "Gradient checkpointing in the training step and the GRPO step.")
    boolean checkpointing;

    @Option(names = "--lmhead-grad", split = ",", defaultValue = "split", paramLabel = "MODE",
            description = "The LM head's bf16 dz in the training step on CUDA: split (hi + lo, the Backend contract's default: 12·N·H·V of GEMMs), "
                    + "single (rounded to bf16 once, as torch's autograd and the trainer's default lm_head_grad: bf16: 8·N·H·V), or split,single:"
                    + " a training row for each, as tools/gpu-loan asks (default: ${DEFAULT-VALUE}).")
    List<String> lmGradNames;

    @Option(names = "--attention-kernels", split = ",", defaultValue = "mma", paramLabel = "KERNELS",
            description = "The attention kernels of the training rows on CUDA: mma (mma.sync, the trainer's default), or mma,wgmma: also"
                    + " a training row per preset with the Hopper kernels and dQ in fixed point (the trainer's attention_kernels=wgmma,"
                    + " attention_dq=fixed; skipped off compute capability 9.0) (default: ${DEFAULT-VALUE}).")
    List<String> attentionNames;

    @Option(names = "--profile-ops", paramLabel = "DIR",
            description = "On CUDA: after each training row, one more step with the backend's op profile (device ms per op), and the same"
                    + " for one call of each eager rollout row; a markdown table per row in DIR, the largest shares in the row's note.")
    Path profileDir;

    @Option(names = "--budget", defaultValue = "0", paramLabel = "SECONDS",
            description = "Skip the rows that would start after this many seconds (estimated from rows already measured); 0 = no limit.")
    double budget;

    @Option(names = "--deadline", defaultValue = "0", paramLabel = "SECONDS",
            description = "Stop the run when a row is still running this many seconds after the start: that row is written as an"
                    + " error after the rows before it (--json) and the exit status is 3 (a hung kernel never returns); 0 = never.")
    double deadline;

    @Option(names = "--row-timeout", defaultValue = "0", paramLabel = "SECONDS",
            description = "Stop the run when one row has been running this many seconds, as --deadline does (exit status 3, that row"
                    + " an error after the rows before it): a hung kernel found long before the deadline; 0 = never.")
    double rowTimeout;

    @Option(names = "--resume", paramLabel = "FILE",
            description = "Keep the measured and error rows of FILE (the --json of an earlier run on the same card at the same precision,"
                    + " stopped by --deadline or by a lost device) that this run's plan has, with its copy bandwidth, and run only the"
                    + " others; --json gets them all. A row that errored is not run again (it would hang or fault again).")
    Path resume;

    @Option(names = "--seed", defaultValue = "1", description = "Seed of the random weights, ids and sampling (default: ${DEFAULT-VALUE}).")
    long seed;

    @Option(names = "--compare", arity = "2", paramLabel = "FILE", description = "Merge OURS.json and PEERS.json (tools/e2e-peers.py) instead of measuring.")
    List<Path> compare;

    @Option(names = "--out", paramLabel = "DIR", description = "With --compare: also write DIR/e2e-compare.md.")
    Path out;

    private final PrintStream stdout, stderr;

    E2eBench(PrintStream stdout, PrintStream stderr) {
        this.stdout = stdout;
        this.stderr = stderr;
    }

    public static void main(String[] args) { System.exit(run(System.out, System.err, args)); }

    /**
     * Runs one command line and returns the exit status: 0, 1 (a row errored), 2 (bad input); 3 (--deadline) and 4 (a
     * row's error left the device unusable) halt the JVM, the rows so far in --json for --resume.
     */
    public static int run(PrintStream out, PrintStream err, String... args) {
        CommandLine cl = new CommandLine(new E2eBench(out, err));
        cl.setOut(new java.io.PrintWriter(out, true));
        cl.setErr(new java.io.PrintWriter(err, true));
        cl.setExecutionExceptionHandler((ex, cmd, parsed) -> {
            if (ex instanceof java.io.UncheckedIOException u) ex = u.getCause();
            if (ex instanceof IllegalArgumentException || ex instanceof IOException) {
                String m = ex.getMessage() == null ? ex.getClass().getSimpleName() : ex.getMessage();
                if (ex instanceof java.nio.file.NoSuchFileException) m = m + ": not found";
                err.println("E2eBench: " + m);
                return 2;
            }
            throw ex;
        });
        return cl.execute(args);
    }

    @Override
    public Integer call() throws IOException {
        if (compare != null) return compare();
        if (out != null) throw new IllegalArgumentException("--out goes with --compare (a run writes its results with --json)");
        if (reps < 5) throw new IllegalArgumentException("--reps must be >= 5 (the issue asks for the median of at least 5 steps), got " + reps);
        if (warmup < 1) throw new IllegalArgumentException("--warmup must be >= 1, got " + warmup);
        if (rolloutReps < 1) throw new IllegalArgumentException("--rollout-reps must be >= 1, got " + rolloutReps);
        if (!(budget >= 0)) throw new IllegalArgumentException("--budget must be >= 0 seconds, got " + budget);
        Deadline.checkSeconds("--deadline", deadline);
        Deadline.checkSeconds("--row-timeout", rowTimeout);
        DType precision = switch (precisionName.toLowerCase(Locale.ROOT)) {
            case "bf16" -> DType.BF16;
            case "fp32" -> DType.FP32;
            default -> throw new IllegalArgumentException("unknown --precision \"" + precisionName + "\" (valid: bf16, fp32)");
        };
        List<String> sections = new ArrayList<>();
        for (String s : sectionNames == null ? E2eReport.SECTIONS : sectionNames) {
            String n = s.trim().toLowerCase(Locale.ROOT);
            if (!E2eReport.SECTIONS.contains(n))
                throw new IllegalArgumentException("unknown --sections \"" + s + "\" (valid: " + String.join(", ", E2eReport.SECTIONS) + ")");
            if (!sections.contains(n)) sections.add(n);
        }
        List<String> lmGrads = new ArrayList<>();
        for (String g : lmGradNames) {
            String m = g.trim().toLowerCase(Locale.ROOT);
            if (!LM_GRADS.contains(m)) throw new IllegalArgumentException("unknown --lmhead-grad \"" + g + "\" (valid: " + String.join(", ", LM_GRADS) + ")");
            if (!lmGrads.contains(m)) lmGrads.add(m);
        }
        List<String> attentions = new ArrayList<>();
        for (String a : attentionNames) {
            String m = a.trim().toLowerCase(Locale.ROOT);
            if (!ATTENTIONS.contains(m))
                throw new IllegalArgumentException("unknown --attention-kernels \"" + a + "\" (valid: " + String.join(", ", ATTENTIONS) + ")");
            if (!attentions.contains(m)) attentions.add(m);
        }
        if (!attentions.contains("mma"))
            throw new IllegalArgumentException("--attention-kernels must include mma (the rows the others are compared with), got " + String.join(",", attentionNames));
        if (presetNames != null) for (String p : presetNames) config(p); // validates the names before a backend opens
        E2eReport prior = null;
        if (resume != null) {
            if (!Files.isRegularFile(resume)) throw new IllegalArgumentException("--resume " + resume + ": no such file");
            prior = E2eReport.read(resume);
            if (!"grpo4j".equals(prior.tool()))
                throw new IllegalArgumentException("--resume " + resume + ": a report of \"" + prior.tool() + "\", not of E2eBench");
            if (!precision.label().equals(prior.precision()))
                throw new IllegalArgumentException("--resume " + resume + ": measured at precision " + prior.precision() + ", this run's is "
                        + precision.label());
        }
        Backends.checkSpec(backendName);
        String spec = backendName.trim().toLowerCase(Locale.ROOT);
        if (spec.startsWith("cuda") && !CudaRuntime.probe().available()) {
            stdout.println("E2eBench: no GPU (" + CudaRuntime.probe().reason() + "); nothing measured (use cpu with --preset tiny to check the harness)");
            return 0;
        }
        try (Backend be = Backends.choose(backendName).backend()) {
            boolean gpu = be instanceof CudaBackend;
            List<String> presets = presetNames != null ? presetNames.stream().map(String::trim).distinct().toList() : gpu ? GPU_PRESETS : List.of("tiny");
            if (!gpu)
                for (String p : presets)
                    if (!p.equals("tiny"))
                        throw new IllegalArgumentException("--preset " + p + " on " + be.name() + " would take hours per step; it is a GPU benchmark (use --preset tiny on the CPU)");
            Settings st = new Settings(presets, sections, precision, warmup, reps, rolloutReps, checkpointing, budget, seed,
                    gpu ? 1L << 28 : 1L << 22, lmGrads, profileDir, attentions);
            Card card = card(be);
            if (prior != null && !card.name().equals(prior.card()))
                throw new IllegalArgumentException("--resume " + resume + ": measured on \"" + prior.card() + "\", this device is \"" + card.name() + "\"");
            Deadline dl = new Deadline(json, deadline, rowTimeout, 1000, stderr, () -> JvmHalt.halt(3, "E2eBench"));
            E2eReport rep;
            try {
                rep = measure(be, st, card, stderr, dl, prior);
            } catch (DeviceLost e) {
                // the rows so far, that row last, are in --json already (the watch writes after every row); the exit now,
                // status 4: closing the backend on a lost context would throw, and that exception would replace the status
                dl.stop();
                stderr.println("E2eBench: " + e.getMessage() + ": stopping" + (json == null ? "" : "; the rows so far are in " + json
                        + " (--resume " + json + " runs the others in a new process)"));
                JvmHalt.halt(4, "E2eBench");
                return 4;  // (not reached)
            } finally {
                dl.stop();
            }
            dl.complete(rep);
            E2eCompare.Result t = E2eCompare.table(rep);
            stdout.print(t.markdown());
            if (json != null) stdout.println("wrote " + json);
            return t.failed() ? 1 : 0;
        }
    }

    private int compare() throws IOException {
        Path ours = compare.get(0), peers = compare.get(1);
        E2eCompare.Result res = E2eCompare.merge(E2eReport.read(ours), E2eReport.read(peers), ours.toString(), peers.toString());
        String partial = "";
        for (Path f : compare) {
            com.fasterxml.jackson.databind.JsonNode c = ReportJson.read(f).get("complete");
            if (c != null && c.isBoolean() && !c.asBoolean())
                partial += "Note: " + f.getFileName() + " is partial (\"complete\": false): its run stopped before its last row.\n\n";
        }
        String md0 = partial + res.markdown();
        stdout.print(md0);
        if (out != null) {
            Files.createDirectories(out);
            Path md = out.resolve("e2e-compare.md"), tmp = out.resolve(".e2e-compare.md.tmp");
            Files.writeString(tmp, md0);
            Files.move(tmp, md, java.nio.file.StandardCopyOption.REPLACE_EXISTING, java.nio.file.StandardCopyOption.ATOMIC_MOVE);
            stdout.println("wrote " + md);
        }
        return res.failed() ? 1 : 0;
    }

    /** Where a run happened: device name, driver, CUDA runtime. */
    public record Card(String name, String driver, String runtime) {}

    static Card card(Backend be) {
        if (be instanceof CudaBackend cb) {
            return new Card(CudaRuntime.devices().get(cb.device()).name(), CudaRuntime.driverLabel(), CudaRuntime.runtimeVersion());
        }
        return new Card(be.description(), "n/a", "n/a");
    }

    // ---- the measurement ------------------------------------------------------------------------------------------

    /** The LM head's bf16 dz modes of the training rows (--lmhead-grad; CudaBackend.setLmHeadBf16GradSplit). */
    static final List<String> LM_GRADS = List.of("split", "single");

    /** The attention kernels of the training rows (--attention-kernels; CudaBackend.withAttention). */
    static final List<String> ATTENTIONS = List.of("mma", "wgmma");

    /**
     * What one run measures (see the options). {@code copyElements}: fp32 elements of the copy-bandwidth measurement;
     * {@code lmGrads}: a training row per LM-head dz mode ("split", "single"); {@code attentions}: "mma", and "wgmma" for
     * a training row per preset with the Hopper attention kernels (see {@link Task#wgmma}).
     */
    public record Settings(List<String> presets, List<String> sections, DType precision, int warmup, int reps, int rolloutReps,
                           boolean checkpointing, double budgetSeconds, long seed, long copyElements, List<String> lmGrads, Path profileDir,
                           List<String> attentions) {
        public Settings {
            presets = List.copyOf(presets);
            sections = List.copyOf(sections);
            lmGrads = List.copyOf(lmGrads);
            attentions = List.copyOf(attentions);
        }

        /** The mma.sync attention kernels only. */
        public Settings(List<String> presets, List<String> sections, DType precision, int warmup, int reps, int rolloutReps,
                        boolean checkpointing, double budgetSeconds, long seed, long copyElements, List<String> lmGrads, Path profileDir) {
            this(presets, sections, precision, warmup, reps, rolloutReps, checkpointing, budgetSeconds, seed, copyElements, lmGrads, profileDir,
                    List.of("mma"));
        }

        /** No op profiles. */
        public Settings(List<String> presets, List<String> sections, DType precision, int warmup, int reps, int rolloutReps,
                        boolean checkpointing, double budgetSeconds, long seed, long copyElements, List<String> lmGrads) {
            this(presets, sections, precision, warmup, reps, rolloutReps, checkpointing, budgetSeconds, seed, copyElements, lmGrads, null);
        }

        /** The default LM-head mode (split) only. */
        public Settings(List<String> presets, List<String> sections, DType precision, int warmup, int reps, int rolloutReps,
                        boolean checkpointing, double budgetSeconds, long seed, long copyElements) {
            this(presets, sections, precision, warmup, reps, rolloutReps, checkpointing, budgetSeconds, seed, copyElements, List.of("split"));
        }
    }

    /**
     * One unit of work, in the order a run takes them (most wanted first, so that a budget cuts the least wanted).
     * {@code singleDz}: a training row with the LM head's dz rounded to bf16 once (--lmhead-grad single).
     * {@code streams}: 2 for the rollout row that runs two halves of the batch at once, each on a backend of its own
     * (see {@link #rolloutStreams}); 1 otherwise. {@code wgmma}: a training row with the Hopper attention kernels and dQ in
     * fixed point, the trainer's {@code attention_kernels: wgmma, attention_dq: fixed} (the candidate default on Hopper).
     */
    record Task(String preset, String section, int newTokens, boolean graphs, boolean singleDz, int streams, boolean noPrefixGroups,
                boolean serial, boolean wgmma) {
        Task(String preset, String section, int newTokens, boolean graphs, boolean singleDz, int streams, boolean noPrefixGroups,
             boolean serial) {
            this(preset, section, newTokens, graphs, singleDz, streams, noPrefixGroups, serial, false);
        }
        Task(String preset, String section, int newTokens, boolean graphs, boolean singleDz, int streams, boolean noPrefixGroups) {
            this(preset, section, newTokens, graphs, singleDz, streams, noPrefixGroups, false);
        }
        Task(String preset, String section, int newTokens, boolean graphs, boolean singleDz, int streams) {
            this(preset, section, newTokens, graphs, singleDz, streams, false);
        }
        Task(String preset, String section, int newTokens, boolean graphs, boolean singleDz) { this(preset, section, newTokens, graphs, singleDz, 1); }
        Task(String preset, String section, int newTokens, boolean graphs) { this(preset, section, newTokens, graphs, false, 1); }
    }

    /** The rollout variant whose decode attention reads each sample's prompt blocks itself (Generator.Config.prefixGroups off). */
    static final String NO_PREFIX_GROUPS = "graphs, no prefix groups";

    /** The training variant with the Hopper attention kernels and fixed-point dQ ({@link Task#wgmma}). */
    static final String WGMMA = "wgmma, fixed dQ";

    /** The rollout variant whose host takes in each decode step before issuing the next (Generator.Config.pipelined off). */
    static final String SERIAL = "graphs, serial steps";

    static List<Task> plan(Settings st) {
        List<Task> t = new ArrayList<>();
        if (st.sections().contains(E2eReport.TRAIN))
            for (String p : st.presets()) {
                for (String g : st.lmGrads()) t.add(new Task(p, E2eReport.TRAIN, 0, false, g.equals("single")));
                // the Hopper kernels beside the preset's last dz mode (the trainer's default, single, when both are asked)
                if (st.attentions().contains("wgmma"))
                    t.add(new Task(p, E2eReport.TRAIN, 0, false, st.lmGrads().get(st.lmGrads().size() - 1).equals("single"), 1, false, false, true));
            }
        if (st.sections().contains(E2eReport.ROLLOUT)) {
            for (String p : st.presets()) t.add(new Task(p, E2eReport.ROLLOUT, shapes(p).newTokens().get(0), true));
            for (String p : st.presets()) t.add(new Task(p, E2eReport.ROLLOUT, shapes(p).newTokens().get(0), true, false, 1, true));
            for (String p : st.presets()) t.add(new Task(p, E2eReport.ROLLOUT, shapes(p).newTokens().get(0), true, false, 1, false, true));
            for (String p : st.presets()) t.add(new Task(p, E2eReport.ROLLOUT, shapes(p).newTokens().get(0), true, false, 2));
            for (String p : st.presets()) t.add(new Task(p, E2eReport.ROLLOUT, shapes(p).newTokens().get(0), false));
            for (String p : st.presets())
                for (int n : shapes(p).newTokens().subList(1, shapes(p).newTokens().size())) t.add(new Task(p, E2eReport.ROLLOUT, n, true));
        }
        if (st.sections().contains(E2eReport.GRPO))
            for (String p : st.presets()) if (GRPO_PRESETS.contains(p)) t.add(new Task(p, E2eReport.GRPO, shapes(p).grpoNewTokens(), true));
        return t;
    }

    /** Runs every planned task on {@code be}; progress lines go to {@code log}. */
    public static E2eReport measure(Backend be, Settings st, Card card, PrintStream log) { return measure(be, st, card, log, Watch.NONE); }

    /**
     * Sees a run between its rows: before each task, the report so far and the row that task gets if it never ends;
     * after each row, the report so far. A JVM that dies or is stopped mid-run then leaves the rows measured.
     */
    public interface Watch {
        void starting(E2eReport soFar, E2eReport.Row ifHung);

        void finished(E2eReport soFar);

        /** Whether no task should start any more (a deadline passed): the rest are skipped, with the reason. */
        default String expired() { return null; }

        Watch NONE = new Watch() {
            @Override
            public void starting(E2eReport soFar, E2eReport.Row ifHung) {}

            @Override
            public void finished(E2eReport soFar) {}
        };
    }

    /** As {@link #measure(Backend, Settings, Card, PrintStream)}, telling {@code watch} of each row. */
    public static E2eReport measure(Backend be, Settings st, Card card, PrintStream log, Watch watch) {
        return measure(be, st, card, log, watch, null);
    }

    /**
     * A run stopped because a row's error left the device unusable (on CUDA a fault, an illegal address or a trap ends
     * the context: every later call would fail too): {@link #soFar()} has the rows so far, that row last as an error, as
     * the watch was last told. The command line exits with status 4; {@code --resume} runs the others in a new process.
     */
    public static final class DeviceLost extends RuntimeException {
        private final transient E2eReport soFar;

        DeviceLost(String row, E2eReport soFar) {
            super("the device was unusable after " + row + "'s error");
            this.soFar = soFar;
        }

        public E2eReport soFar() { return soFar; }
    }

    /** The key of a row among a run's rows: its problem and variant (an id alone has several variants). */
    private static String rowKey(E2eReport.Row r) { return r.id() + (r.variant() == null ? "" : " [" + r.variant() + "]"); }

    /**
     * As {@link #measure(Backend, Settings, Card, PrintStream, Watch)}, keeping the rows of {@code prior} (an earlier
     * run's report on the same card and precision, checked by the caller; or null) that this plan has, measured or
     * errored, with its copy bandwidth, and running only the others: how a run stopped by a hung row or a lost device goes
     * on in a new process. Rows {@code prior} skipped (a budget or a passed deadline) run now. The report keeps the
     * plan's order.
     *
     * @throws DeviceLost when a row's error leaves the device unusable
     */
    public static E2eReport measure(Backend be, Settings st, Card card, PrintStream log, Watch watch, E2eReport prior) {
        long t0 = System.nanoTime();
        Progress pr = new Progress(log, t0);
        pr.say("backend " + be.description() + "; precision " + st.precision().label() + "; presets " + String.join(", ", st.presets())
                + "; sections " + String.join(", ", st.sections()) + (st.budgetSeconds() > 0 ? "; budget " + st.budgetSeconds() + " s" : ""));
        List<Task> tasks = plan(st);
        E2eReport.Row[] rows = new E2eReport.Row[tasks.size()];
        Map<String, Double> trainTokS = new HashMap<>(), rolloutS = new HashMap<>();
        if (prior != null) {
            Map<String, E2eReport.Row> kept = new HashMap<>();
            for (E2eReport.Row r : prior.rows()) if (!E2eReport.SKIPPED.equals(r.status())) kept.put(rowKey(r), r);
            int n = 0;
            for (int i = 0; i < tasks.size(); i++) {
                Task task = tasks.get(i);
                Shapes sh = shapes(task.preset());
                E2eReport.Row r = kept.get(rowKey(skipped(task, sh, st, null)));
                if (r == null) continue;
                if (!r.shape().equals(shape(task, sh)))
                    throw new IllegalArgumentException("--resume: " + rowKey(r) + " was measured at " + r.shape() + "; this run's is " + shape(task, sh));
                rows[i] = r;
                noteRate(task, sh, r, trainTokS, rolloutS);
                n++;
            }
            pr.say(String.format(Locale.ROOT, "--resume: %d of the plan's %d rows kept", n, tasks.size()));
        }
        double copyGbs;
        if (prior != null && prior.copyGbs() != null) {
            copyGbs = prior.copyGbs();  // (the kept rows' roofline figures were counted with it)
            pr.say(String.format(Locale.ROOT, "copy bandwidth %.1f GB/s (kept from the resumed run)", copyGbs));
        } else {
            copyGbs = copyBandwidth(be, st.copyElements());
            pr.say(String.format(Locale.ROOT, "copy bandwidth %.1f GB/s (Backend.copy of %,d fp32, read + written)", copyGbs, st.copyElements()));
        }
        Rig rig = null;
        try {
            for (int i = 0; i < tasks.size(); i++) {
                if (rows[i] != null) continue;
                Task task = tasks.get(i);
                Shapes sh = shapes(task.preset());
                double est = estimate(task, sh, trainTokS, rolloutS);
                double elapsed = (System.nanoTime() - t0) / 1e9;
                if (st.budgetSeconds() > 0 && elapsed + est > st.budgetSeconds()) {
                    E2eReport.Row r = skipped(task, sh, st, String.format(Locale.ROOT, "--budget %.0f s: %.0f s elapsed%s", st.budgetSeconds(), elapsed,
                            est > 0 ? String.format(Locale.ROOT, ", about %.0f s more needed", est) : ""));
                    rows[i] = r;
                    watch.finished(report(be, card, st, copyGbs, rows));
                    pr.say(r.id() + (r.variant() == null ? "" : " [" + r.variant() + "]") + ": skipped (" + r.note() + ")");
                    continue;
                }
                String expired = watch.expired();
                if (expired != null) {
                    E2eReport.Row r = skipped(task, sh, st, expired);
                    rows[i] = r;
                    watch.finished(report(be, card, st, copyGbs, rows));
                    pr.say(r.id() + (r.variant() == null ? "" : " [" + r.variant() + "]") + ": skipped (" + r.note() + ")");
                    continue;
                }
                watch.starting(report(be, card, st, copyGbs, rows), errorRow(task, sh, st, "did not finish (stopped by --deadline or --row-timeout: a hung"
                        + " kernel, or a row far over its estimate)"));
                E2eReport.Row r;
                try {
                    if (rig == null || !rig.preset.equals(task.preset())) {
                        if (rig != null) rig.close();
                        rig = null;
                        pr.say(task.preset() + ": building random weights, gradients and optimizer state");
                        rig = new Rig(be, task.preset(), config(task.preset()), st.precision(), st.seed());
                    }
                    r = switch (task.section()) {
                        case E2eReport.TRAIN -> train(rig, sh, st, task, pr);
                        case E2eReport.ROLLOUT -> task.streams() == 2 ? rolloutStreams(rig, sh, st, task.newTokens(), copyGbs, pr)
                                : rollout(rig, sh, st, task, copyGbs, pr);
                        default -> grpo(rig, sh, st, pr);
                    };
                } catch (RuntimeException e) {
                    String m = e.getMessage() == null ? e.getClass().getSimpleName() : e.getMessage().lines().findFirst().orElse("");
                    r = errorRow(task, sh, st, e.getClass().getSimpleName() + ": " + m);
                    // a failure may leave the device state (or memory) unusable for the rest of this preset: rebuild
                    if (rig != null) {
                        try {
                            rig.close();
                        } catch (RuntimeException ignored) {
                            // reported by the row already
                        }
                        rig = null;
                    }
                }
                rows[i] = r;
                watch.finished(report(be, card, st, copyGbs, rows));
                noteRate(task, sh, r, trainTokS, rolloutS);
                pr.say(summary(r));
                if (E2eReport.ERROR.equals(r.status()) && !KernelBench.usable(be))  // (the error closed the rig)
                    throw new DeviceLost(rowKey(r), report(be, card, st, copyGbs, rows));
            }
        } finally {
            if (rig != null) rig.close();
        }
        pr.say(String.format(Locale.ROOT, "done in %.1f s", (System.nanoTime() - t0) / 1e9));
        return report(be, card, st, copyGbs, rows);
    }

    /** The rates the estimates of later tasks come from: a measured training row's tokens/s, the first rollout's seconds. */
    private static void noteRate(Task task, Shapes sh, E2eReport.Row r, Map<String, Double> trainTokS, Map<String, Double> rolloutS) {
        if (!r.ok()) return;
        if (task.section().equals(E2eReport.TRAIN) && !task.singleDz() && !task.wgmma()) trainTokS.put(task.preset(), r.fig("tokens_per_s"));
        if (task.section().equals(E2eReport.ROLLOUT) && task.graphs() && task.streams() == 1 && !task.noPrefixGroups() && !task.serial()
                && task.newTokens() == sh.newTokens().get(0))
            rolloutS.put(task.preset(), r.medianMs() / 1e3);
    }

    /** The rows so far (null: not yet run) in the plan's order. */
    private static E2eReport report(Backend be, Card card, Settings st, double copyGbs, E2eReport.Row[] rows) {
        List<E2eReport.Row> list = new ArrayList<>();
        for (E2eReport.Row r : rows) if (r != null) list.add(r);
        return new E2eReport("grpo4j", card.name(), card.driver(), card.runtime(), null, null, be.name(), st.precision().label(),
                java.time.Instant.now().truncatedTo(java.time.temporal.ChronoUnit.SECONDS).toString(), false, copyGbs,
                E2eWork.PEAK_TFLOPS, List.copyOf(list));
    }

    /**
     * The run's {@link Watch} from the command line: the report so far to {@code json} after every row ("complete":
     * false; null: none), and, {@code deadlineSeconds} after it was made (0: never), the running task's error row
     * after the rows before it, then {@code stop} (the JVM's end, exit status 3: a kernel that never finishes blocks its
     * CUDA call for good, and the caller's timeout would kill the run with every row lost). Between rows nothing is
     * stopped: the next task starts, and the deadline stops it.
     */
    static final class Deadline implements Watch {
        private record Running(E2eReport soFar, E2eReport.Row ifHung, long startedNs) {}

        private final Path json;
        private final long startNs, limitNs, rowLimitNs, pollMs;
        private final double seconds, rowSeconds;
        private final PrintStream log;
        private final Runnable stop;
        private final Thread thread;
        // under this object's lock: the row running (null between rows), whether the deadline fired, whether the run ended
        private Running running;
        private boolean fired, ended;

        Deadline(Path json, double deadlineSeconds, long pollMs, PrintStream log, Runnable stop) {
            this(json, deadlineSeconds, 0, pollMs, log, stop);
        }

        /** As above, also stopping a row that has run {@code rowTimeoutSeconds} (0: no limit). */
        Deadline(Path json, double deadlineSeconds, double rowTimeoutSeconds, long pollMs, PrintStream log, Runnable stop) {
            checkSeconds("--deadline", deadlineSeconds);
            checkSeconds("--row-timeout", rowTimeoutSeconds);
            this.json = json;
            this.startNs = System.nanoTime();
            this.seconds = deadlineSeconds;
            this.rowSeconds = rowTimeoutSeconds;
            this.limitNs = (long) Math.min(deadlineSeconds * 1e9, (double) Long.MAX_VALUE / 2);
            this.rowLimitNs = (long) Math.min(rowTimeoutSeconds * 1e9, (double) Long.MAX_VALUE / 2);
            this.pollMs = pollMs;
            this.log = log;
            this.stop = stop;
            thread = deadlineSeconds > 0 || rowTimeoutSeconds > 0 ? new Thread(this::watch, "e2e-deadline") : null;
            if (thread != null) {
                thread.setDaemon(true);
                thread.start();
            }
        }

        /** A time limit's option: seconds >= 0 and finite (0: none). */
        static void checkSeconds(String option, double seconds) {
            if (!(seconds >= 0) || Double.isInfinite(seconds))
                throw new IllegalArgumentException(option + " must be >= 0 seconds and finite, got " + seconds);
        }

        private boolean past() { return limitNs > 0 && System.nanoTime() - startNs >= limitNs; }

        @Override
        public String expired() {
            return past() ? String.format(Locale.ROOT, "--deadline %.0f s passed before it could start", seconds) : null;
        }

        @Override
        public synchronized void starting(E2eReport soFar, E2eReport.Row ifHung) {
            if (!fired) running = new Running(soFar, ifHung, System.nanoTime());
        }

        @Override
        public synchronized void finished(E2eReport soFar) {
            if (fired) return;  // the deadline's file stays: the JVM is ending
            running = null;
            write(soFar, false);
        }

        /** The run's last write (complete), unless the deadline fired first. */
        synchronized void complete(E2eReport rep) {
            ended = true;
            if (!fired) write(rep, true);
        }

        private void write(E2eReport r, boolean complete) {
            if (json == null) return;
            try {
                r.write(json, complete);
            } catch (IOException e) {
                throw new java.io.UncheckedIOException(json + ": " + e.getMessage(), e);
            }
        }

        private void watch() {
            for (;;) {
                try {
                    Thread.sleep(pollMs);
                } catch (InterruptedException e) {
                    return;
                }
                String where = "";
                Running r;
                boolean rowOver;
                synchronized (this) {
                    if (ended) return;
                    r = running;
                    // (between rows: the next task is skipped, not started)
                    if (r == null) continue;
                    rowOver = rowLimitNs > 0 && System.nanoTime() - r.startedNs() >= rowLimitNs;
                    if (!past() && !rowOver) continue;
                    if (json != null) {
                        List<E2eReport.Row> rows = new ArrayList<>(r.soFar().rows());
                        rows.add(r.ifHung());
                        E2eReport s = r.soFar();
                        try {
                            new E2eReport(s.tool(), s.card(), s.driver(), s.runtime(), s.torch(), s.transformers(), s.backend(), s.precision(),
                                    s.date(), s.fake(), s.copyGbs(), s.peakTflops(), rows).write(json, false);
                            where = "; the rows before it are in " + json;
                        } catch (IOException | RuntimeException e) {
                            where = "; " + json + " could not be written: " + e.getMessage();
                        }
                    }
                    fired = true;
                    running = null;
                }
                log.println("E2eBench: " + r.ifHung().id() + (r.ifHung().variant() == null ? "" : " [" + r.ifHung().variant() + "]")
                        + (rowOver ? " still running after --row-timeout " + (rowSeconds == Math.rint(rowSeconds) ? String.valueOf((long) rowSeconds)
                        : String.valueOf(rowSeconds)) + " s" : " still running at --deadline")
                        + ": stopping" + where);
                log.flush();
                stop.run();
                return;
            }
        }

        /** The run ended: the watcher stops at its next look (no interrupt: it may be writing). */
        synchronized void stop() { ended = true; }

        synchronized boolean fired() { return fired; }
    }

    /** Seconds a task should take, from rows already measured (0 when unknown: the task runs unless the budget is spent). */
    static double estimate(Task t, Shapes sh, Map<String, Double> trainTokS, Map<String, Double> rolloutS) {
        Double roll = rolloutS.get(t.preset()), train = trainTokS.get(t.preset());
        return switch (t.section()) {
            case E2eReport.ROLLOUT -> {
                if (roll == null) yield 0;
                int n0 = sh.newTokens().get(0);
                // the eager run is at most a few times slower; a longer run grows with its tokens and its longer contexts
                yield t.graphs() ? roll * t.newTokens() / n0 * (1 + (double) t.newTokens() / (2.0 * (sh.promptLen() + n0))) : 2 * roll;
            }
            case E2eReport.GRPO -> {
                if (roll == null || train == null) yield 0;
                double tokens = (double) sh.prompts() * sh.samples() * (sh.promptLen() + sh.grpoNewTokens());
                yield roll + 1.7 * tokens / train; // training ≈ tokens at the training rate, log-probs ≈ 2 forwards ≈ 2/3 of that
            }
            default -> 0;
        };
    }

    static String summary(E2eReport.Row r) {
        String head = r.id() + (r.variant() == null ? "" : " [" + r.variant() + "]") + ": ";
        if (!r.ok()) return head + r.status() + (r.note() == null ? "" : " (" + r.note() + ")");
        return head + switch (r.section()) {
            case E2eReport.TRAIN -> String.format(Locale.ROOT, "%.1f ms/step, %.0f tokens/s, %.1f%% MFU", r.medianMs(), r.fig("tokens_per_s"), r.fig("mfu_pct"));
            case E2eReport.ROLLOUT -> String.format(Locale.ROOT, "%.2f s, %.0f tokens/s, %.1f%% of roofline; steady %s tokens/s, %s; host %s ms/step",
                    r.medianMs() / 1e3, r.fig("tokens_per_s"), r.fig("roofline_pct"),
                    r.fig("steady_tokens_per_s") == null ? "-" : String.format(Locale.ROOT, "%.0f", r.fig("steady_tokens_per_s")),
                    r.fig("steady_roofline_pct") == null ? "-" : String.format(Locale.ROOT, "%.1f%% of roofline, %.1f%% of bound",
                            r.fig("steady_roofline_pct"), r.fig("steady_bound_pct")),
                    r.fig("host_ms_per_step") == null ? "-" : String.format(Locale.ROOT, "%.3f", r.fig("host_ms_per_step")));
            default -> String.format(Locale.ROOT, "generation %.2f s, reward %.2f s, log-probs %.2f s, training %.2f s, total %.2f s",
                    r.fig("generation_s"), r.fig("reward_s"), r.fig("logprobs_s"), r.fig("training_s"), r.fig("total_s"));
        };
    }

    private static final class Progress {
        final PrintStream log;
        final long t0;

        Progress(PrintStream log, long t0) {
            this.log = log;
            this.t0 = t0;
        }

        void say(String s) {
            if (log != null) log.printf(Locale.ROOT, "e2e [%6.1f s] %s%n", (System.nanoTime() - t0) / 1e9, s);
        }
    }

    // ---- rows -----------------------------------------------------------------------------------------------------

    private static String key(Task t, Shapes sh) {
        return switch (t.section()) {
            case E2eReport.TRAIN -> sh.trainKey();
            case E2eReport.ROLLOUT -> "new" + t.newTokens();
            default -> sh.grpoKey();
        };
    }

    private static String shape(Task t, Shapes sh) {
        return switch (t.section()) {
            case E2eReport.TRAIN -> sh.trainShape();
            case E2eReport.ROLLOUT -> sh.rolloutShape(t.newTokens());
            default -> sh.grpoShape();
        };
    }

    private static String variant(Task t, Settings st) {
        return switch (t.section()) {
            case E2eReport.ROLLOUT -> t.streams() == 2 ? "graphs, 2 streams" : t.noPrefixGroups() ? NO_PREFIX_GROUPS : t.serial() ? SERIAL : t.graphs() ? "graphs" : "eager";
            case E2eReport.TRAIN -> {
                List<String> v = new ArrayList<>();
                if (st.checkpointing()) v.add("checkpointing");
                if (t.singleDz()) v.add("dz bf16");
                if (t.wgmma()) v.add(WGMMA);
                yield v.isEmpty() ? null : String.join(", ", v);
            }
            default -> st.checkpointing() ? "checkpointing" : null;
        };
    }

    static E2eReport.Row row(Task t, Shapes sh, Settings st, String status, String note, double[] ms, Map<String, Double> figs) {
        Double med = null, min = null, max = null;
        if (ms != null) {
            med = median(ms);
            min = Arrays.stream(ms).min().getAsDouble();
            max = Arrays.stream(ms).max().getAsDouble();
        }
        return new E2eReport.Row(t.section() + "/" + t.preset() + "/" + key(t, sh), t.section(), t.preset(), shape(t, sh), variant(t, st),
                "grpo4j", status, note, med, min, max, ms == null ? 0 : ms.length, figs);
    }

    private static E2eReport.Row skipped(Task t, Shapes sh, Settings st, String note) {
        return row(t, sh, st, E2eReport.SKIPPED, note, null, null);
    }

    private static E2eReport.Row errorRow(Task t, Shapes sh, Settings st, String note) {
        return row(t, sh, st, E2eReport.ERROR, note, null, null);
    }

    static double median(double[] v) {
        double[] s = v.clone();
        Arrays.sort(s);
        int n = s.length;
        return n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
    }

    // ---- copy bandwidth -------------------------------------------------------------------------------------------

    /**
     * Device-to-device copy bandwidth in GB/s (bytes read + written): {@link Backend#copy} of n fp32, timed with CUDA
     * events on CUDA (GPU time of back-to-back copies) or synchronized wall time elsewhere; median of 20 after 3.
     */
    static double copyBandwidth(Backend be, long n) {
        int len = Math.toIntExact(n);
        try (Tensor a = be.zeros(DType.FP32, len); Tensor b = be.empty(DType.FP32, len)) {
            Timer timer = be instanceof CudaBackend cb ? new CudaEventTimer(cb, null) : wallTimer(be);
            double[] ms = timer.time(i -> be.copy(i % 2 == 0 ? b : a, i % 2 == 0 ? a : b), 3, 20);
            return 8.0 * n / (median(ms) * 1e6);
        }
    }

    /** Times each repetition by wall clock, synchronizing the backend after it (the CPU backend is synchronous anyway). */
    static Timer wallTimer(Backend be) {
        return (op, warmup, reps) -> {
            for (int i = 0; i < warmup; i++) op.accept(i);
            be.synchronize();
            double[] ms = new double[reps];
            for (int r = 0; r < reps; r++) {
                long t = System.nanoTime();
                op.accept(warmup + r);
                be.synchronize();
                ms[r] = (System.nanoTime() - t) / 1e6;
            }
            return ms;
        };
    }

    // ---- the model, its gradients and optimizer state -------------------------------------------------------------

    /**
     * Random weights and everything a training step needs: fp32 master weights, the compute copy (bf16 in precision
     * bf16, else the master itself), fp32 gradients (backward accumulates into them) and the AdamW moments.
     */
    static final class Rig implements AutoCloseable {
        final String preset;
        final LlamaConfig cfg;
        final Backend be;
        final LlamaWeights master, compute, grads;
        final Tensor m, v;
        final LlamaModel model;
        int steps;

        Rig(Backend be, String preset, LlamaConfig cfg, DType precision, long seed) {
            this.preset = preset;
            this.cfg = cfg;
            this.be = be;
            long p = new ParameterLayout(cfg).totalElements();
            boolean bf16 = precision == DType.BF16;
            Memory.require(be, p * (16L + (bf16 ? 2 : 0)), preset + " (" + String.format(Locale.ROOT, "%,d", p) + " parameters: fp32 master weights, "
                    + (bf16 ? "their bf16 copy, " : "") + "fp32 gradients, AdamW moments)", "pick a smaller --preset");
            List<AutoCloseable> made = new ArrayList<>();
            try {
                master = keep(made, LlamaWeights.zeros(be, cfg));
                randomize(master, seed);
                compute = bf16 ? keep(made, master.castTo(DType.BF16)) : master;
                grads = keep(made, LlamaWeights.zeros(be, cfg));
                m = keep(made, be.zeros(DType.FP32, Math.toIntExact(p)));
                v = keep(made, be.zeros(DType.FP32, Math.toIntExact(p)));
            } catch (RuntimeException e) {
                for (AutoCloseable c : made) closeQuietly(c);
                throw e;
            }
            model = new LlamaModel(compute);
        }

        private static <T extends AutoCloseable> T keep(List<AutoCloseable> made, T t) {
            made.add(t);
            return t;
        }

        /**
         * Clips the accumulated gradients to {@link #MAX_GRAD_NORM} (torch clip_grad_norm_), applies one AdamW step to the
         * master weights (writing the bf16 compute copy in the same pass) and zeroes the gradients. Returns the norm;
         * a non-finite one is an error (the run is meaningless from there).
         */
        double optimizerStep() {
            double norm;
            try (Tensor acc = be.zeros(DType.FP32, 1)) {
                be.sumSquares(acc, grads.flat());
                norm = Math.sqrt(acc.item());
            }
            if (!Double.isFinite(norm)) throw new IllegalStateException("non-finite gradient norm (" + norm + ") on " + preset);
            double coef = MAX_GRAD_NORM / (norm + 1e-6);
            be.adamW(master.flat(), grads.flat(), m, v, new AdamWStep(LR, 0.9f, 0.999f, 1e-8f, WEIGHT_DECAY, ++steps, coef < 1 ? (float) coef : 1f),
                    compute == master ? null : compute.flat()); // clipping folded into the step (gradScale)
            be.fill(grads.flat(), 0);
            return norm;
        }

        @Override
        public void close() {
            if (compute != master) compute.close();
            master.close();
            grads.close();
            m.close();
            v.close();
        }
    }

    private static void closeQuietly(AutoCloseable c) {
        try {
            c.close();
        } catch (Exception ignored) {
            // cleaning up after a failure that is being reported
        }
    }

    /** A prime number of N(0, 0.02) values, so that tiled copies do not line up with any matrix's rows. */
    static final int INIT_CHUNK = 1_048_573;

    /**
     * HF-like random weights without generating billions of host values: one chunk of N(0, 0.02) tiled over the flat
     * buffer by device copies (from a seed-dependent offset), RMSNorm weights 1. Throughput does not depend on the
     * values; their scale keeps activations, logits and the sampler's distribution ordinary.
     */
    static void randomize(LlamaWeights w, long seed) {
        Backend be = w.backend();
        Tensor flat = w.flat();
        long n = flat.numel();
        int chunk = (int) Math.min(INIT_CHUNK, n);
        SplittableRandom r = new SplittableRandom(seed);
        float[] h = new float[chunk];
        for (int i = 0; i < chunk; i++) h[i] = (float) (r.nextGaussian() * 0.02);
        try (Tensor c = be.upload(h, chunk)) {
            long off = 0;
            int start = (int) Math.floorMod(seed * 7919, (long) chunk);
            while (off < n) {
                int len = (int) Math.min(n - off, chunk - start);
                be.copy(flat.view(off, len), c.view(start, len));
                off += len;
                start = 0;
            }
        }
        for (ParameterLayout.Entry e : w.layout().entries()) if (e.name().endsWith("norm.weight")) be.fill(w.get(e.name()), 1);
    }

    // ---- training step --------------------------------------------------------------------------------------------

    static List<int[]> randomSequences(SplittableRandom r, int count, int len, int vocab) {
        List<int[]> s = new ArrayList<>();
        for (int i = 0; i < count; i++) s.add(r.ints(len, 0, vocab).toArray());
        return s;
    }

    /**
     * One training step on a packed batch: forward (keeping activations, or layer inputs only with checkpointing),
     * d(mean NLL of the targets)/d(hidden) and the LM head's gradient through the fused LM-head backward, the model's
     * backward into the fp32 gradients, then {@link Rig#optimizerStep}.
     */
    static double trainStep(Rig rig, PackedBatch pb, Tensor targets, Tensor dLogprobs, boolean checkpointing) {
        Backend be = rig.be;
        LlamaModel model = rig.model;
        try (LlamaModel.Activations act = model.forward(pb, checkpointing);
             Tensor dHidden = be.empty(model.activationDType(), pb.tokens(), rig.cfg.hiddenSize())) {
            be.tokenLogprobsBackward(dHidden, rig.grads.get("lm_head.weight"), dLogprobs, act.hidden(), rig.compute.get("lm_head.weight"), targets, 1f);
            model.backward(act, dHidden, rig.grads);
        }
        return rig.optimizerStep();
    }

    /** The training row of {@code t} (a {@link E2eReport#TRAIN} task of {@code rig}'s preset), in the modes its variant names. */
    static E2eReport.Row train(Rig rig, Shapes sh, Settings st, Task t, Progress pr) {
        Backend be = rig.be;
        if (!(be instanceof CudaBackend cb)) {
            if (t.singleDz())
                return skipped(t, sh, st, "--lmhead-grad single is a mode of the CUDA backend's bf16 LM head (this run: " + be.name() + ")");
            if (t.wgmma())
                return skipped(t, sh, st, "--attention-kernels wgmma is a mode of the CUDA backend on compute capability 9.0 (this run: " + be.name() + ")");
            return trainTimed(rig, sh, st, t, pr);
        }
        if (t.singleDz() && st.precision() != DType.BF16)
            return skipped(t, sh, st, "--lmhead-grad single is a mode of the bf16 LM head (this run: " + st.precision().label() + ")");
        if (t.wgmma() && !cb.hasWgmmaAttention())
            return skipped(t, sh, st, "the Hopper attention kernels need compute capability 9.0 (this device: " + cb.name() + ")");
        if (t.wgmma() && st.precision() != DType.BF16)
            return skipped(t, sh, st, "the Hopper attention kernels are bf16 kernels (this run: " + st.precision().label() + ")");
        // each row in the modes its variant names, whatever -Dgrpo4j.lmheadBf16Grad, -Dgrpo4j.attentionWgmma and
        // -Dgrpo4j.attentionDq say; the LM head's blocks as the trainer's (lm_head_scratch_mib)
        CudaBackend.AttentionDq dq = t.wgmma() ? CudaBackend.AttentionDq.FIXED : cb.attentionDq();
        return cb.withAttention(dq, t.wgmma(), () -> cb.withLmHeadBf16GradSplit(!t.singleDz(),
                () -> cb.withLmHeadRowsBytes(TRAINER_LM_ROWS_BYTES, () -> trainTimed(rig, sh, st, t, pr))));
    }

    private static E2eReport.Row trainTimed(Rig rig, Shapes sh, Settings st, Task t, Progress pr) {
        Backend be = rig.be;
        SplittableRandom r = new SplittableRandom(st.seed() * 31 + 1);
        List<int[]> seqs = randomSequences(r, sh.trainSeqs(), sh.trainLen(), rig.cfg.vocabSize());
        int n = sh.trainSeqs() * sh.trainLen();
        double[] ms = new double[st.reps()];
        String profileNote;
        try (PackedBatch pb = PackedBatch.of(be, seqs, rig.cfg.vocabSize()); Tensor tgt = be.upload(r.ints(n, 0, rig.cfg.vocabSize()).toArray(), n);
             Tensor dlp = be.empty(DType.FP32, n)) {
            be.fill(dlp, -1.0 / n); // d(mean over tokens of -log p)/d(log p)
            for (int i = 0; i < st.warmup(); i++) {
                trainStep(rig, pb, tgt, dlp, st.checkpointing());
                be.synchronize();
                pr.say(rig.preset + " train: warm-up step " + (i + 1) + "/" + st.warmup());
            }
            for (int i = 0; i < st.reps(); i++) {
                long t0 = System.nanoTime();
                trainStep(rig, pb, tgt, dlp, st.checkpointing());
                be.synchronize();
                ms[i] = (System.nanoTime() - t0) / 1e6;
            }
            profileNote = profiled(be, st, t, sh, () -> trainStep(rig, pb, tgt, dlp, st.checkpointing()));
        }
        int[] lens = new int[sh.trainSeqs()];
        Arrays.fill(lens, sh.trainLen());
        double flops = E2eWork.trainFlops(rig.cfg, lens), sec = median(ms) / 1e3;
        Map<String, Double> f = new LinkedHashMap<>();
        f.put("tokens", (double) n);
        f.put("tokens_per_s", n / sec);
        f.put("flops", flops);
        f.put("tflops", flops / sec / 1e12);
        f.put("mfu_pct", 100 * flops / sec / 1e12 / E2eWork.PEAK_TFLOPS);
        return row(t, sh, st, E2eReport.OK, "median of " + st.reps() + " steps after " + st.warmup() + "; wall time, device synchronized" + profileNote, ms, f);
    }

    /**
     * --profile-ops: one more untimed run of {@code body} under the CUDA backend's op profile; writes the table to
     * DIR/<row>.md and returns "; ops: ..." (the largest shares) for the row's note, or "" (no profile asked, or not CUDA).
     */
    static String profiled(Backend be, Settings st, Task t, Shapes sh, Runnable body) {
        if (st.profileDir() == null || !(be instanceof CudaBackend cb)) return "";
        be.synchronize();
        cb.startOpProfile();
        java.util.LinkedHashMap<String, double[]> ops;
        try {
            body.run();
        } finally {
            ops = cb.stopOpProfile();
        }
        double total = 0;
        for (double[] v : ops.values()) total += v[0];
        List<Map.Entry<String, double[]>> sorted = new ArrayList<>(ops.entrySet());
        sorted.sort((a, b) -> Double.compare(b.getValue()[0], a.getValue()[0]));
        StringBuilder md = new StringBuilder();
        String name = t.section() + "/" + t.preset() + "/" + key(t, sh) + (variant(t, st) == null ? "" : " [" + variant(t, st) + "]");
        md.append(String.format(Locale.ROOT, "Op profile of %s: one untimed run, %.3f ms of device time in all (the interval from each op's"
                + " event to the next op's; CudaBackend.startOpProfile)%n%n| op | ms | calls | ms/call | share |%n|---|---|---|---|---|%n", name, total));
        StringBuilder note = new StringBuilder(String.format(Locale.ROOT, "; ops (%.1f ms profiled):", total));
        int shown = 0;
        for (Map.Entry<String, double[]> e : sorted) {
            double ms = e.getValue()[0], calls = e.getValue()[1];
            md.append(String.format(Locale.ROOT, "| %s | %.3f | %.0f | %.4f | %.1f%% |%n", e.getKey(), ms, calls, ms / calls, 100 * ms / total));
            if (shown++ < 5) note.append(String.format(Locale.ROOT, " %s %.0f%%", e.getKey(), 100 * ms / total));
        }
        try {
            Files.createDirectories(st.profileDir());
            Files.writeString(st.profileDir().resolve(name.replace(" [", "-").replace("]", "").replaceAll("[^A-Za-z0-9._-]+", "_") + ".md"), md);
        } catch (IOException e) {
            note.append(" (the table could not be written: ").append(e.getMessage()).append(')');
        }
        return note.toString();
    }

    // ---- rollout --------------------------------------------------------------------------------------------------

    /** A pool that holds every sequence at once: each prompt's blocks (shared) plus each sample's own. */
    static Generator.Config generatorConfig(Shapes sh, int newTokens, boolean graphs) {
        return generatorConfig(sh.prompts(), sh.samples(), sh.promptLen(), newTokens, graphs);
    }

    /** KV blocks for {@code prompts} prompts of {@code p} tokens (shared by their samples) and each sample's new tokens. */
    static Generator.Config generatorConfig(int prompts, int samples, int p, int newTokens, boolean graphs) {
        int bs = BLOCK_SIZE;
        int promptBlocks = (p + bs - 1) / bs, perSample = (p + newTokens + bs - 1) / bs - p / bs;
        int seqs = prompts * samples;
        return new Generator.Config(bs, prompts * promptBlocks + seqs * perSample, seqs, true, graphs);
    }

    static SamplingParams sampling(Shapes sh, int maxTokens, long seed) {
        return new SamplingParams(sh.samples(), 1f, 1f, 0, maxTokens, Set.of(), seed);
    }

    static E2eReport.Row rollout(Rig rig, Shapes sh, Settings st, Task t, double copyGbs, Progress pr) {
        int newTokens = t.newTokens();
        boolean graphs = t.graphs();
        Backend be = rig.be;
        LlamaModel model = rig.model;
        Generator.Config gc = generatorConfig(sh, newTokens, graphs).withPrefixGroups(!t.noPrefixGroups());
        if (t.serial()) gc = gc.withPipelined(false); // (the others: pipelined where the backend queues its ops)
        long kvBytes = model.kvBytesPerToken() * BLOCK_SIZE * (gc.numBlocks() + 1L);
        Memory.require(be, kvBytes, "the KV cache of " + sh.rolloutShape(newTokens), "pick a smaller --preset");
        List<int[]> prompts = randomSequences(new SplittableRandom(st.seed() * 31 + 2), sh.prompts(), sh.promptLen(), rig.cfg.vocabSize());
        Generator g = new Generator(model, gc);
        g.generate(prompts, sampling(sh, Math.min(newTokens, 4), st.seed())); // warm-up: plans, scratch, the graph capture
        g.generate(prompts, sampling(sh, 1, st.seed()));                       // prefill + first token only
        double prefillOnly = g.lastStats().seconds();
        pr.say(String.format(Locale.ROOT, "%s rollout %d new, graphs %s%s: warm-up done, prefill-only call %.3f s", rig.preset, newTokens,
                graphs ? "on" : "off", t.noPrefixGroups() ? ", no prefix groups" : t.serial() ? ", serial steps" : "", prefillOnly));
        int b = sh.prompts() * sh.samples();
        double[] ms = new double[st.rolloutReps()];
        List<Generator.Stats> stats = new ArrayList<>();
        for (int i = 0; i < st.rolloutReps(); i++) {
            g.generate(prompts, sampling(sh, newTokens, st.seed() + i));
            Generator.Stats s = g.lastStats();
            if (s.generatedTokens() != (long) b * newTokens)
                throw new IllegalStateException("generated " + s.generatedTokens() + " tokens, expected " + (long) b * newTokens + " (no stop token)");
            stats.add(s);
            ms[i] = s.seconds() * 1e3;
        }
        // graphs hide their ops from the profile: the eager row's
        String profileNote = graphs ? "" : profiled(be, st, t, sh, () -> g.generate(prompts, sampling(sh, newTokens, st.seed())));
        return rolloutRow(t, rig, sh, st, newTokens, copyGbs, prefillOnly, ms, stats.get(indexOfMedian(ms)), Map.of(), profileNote);
    }

    /**
     * A rollout row's figures from its timed calls: tokens/s, the roofline and bound shares, whole and steady (whole
     * minus the prefill-only call), and the host time per decode step of the median call.
     */
    private static E2eReport.Row rolloutRow(Task t, Rig rig, Shapes sh, Settings st, int newTokens, double copyGbs, double prefillOnly,
                                            double[] ms, Generator.Stats mid, Map<String, Double> extraFigs, String extraNote) {
        Backend be = rig.be;
        LlamaModel model = rig.model;
        boolean graphs = t.graphs();
        int b = sh.prompts() * sh.samples();
        double sec = median(ms) / 1e3;
        int dtBytes = model.activationDType().bytes();
        double bytes = E2eWork.rooflineBytes(rig.cfg, dtBytes, b, sh.promptLen(), newTokens), roofSec = bytes / (copyGbs * 1e9);
        Map<String, Double> f = new LinkedHashMap<>();
        double tokens = (double) b * newTokens;
        f.put("tokens", tokens);
        f.put("tokens_per_s", tokens / sec);
        f.put("roofline_bytes", bytes);
        f.put("roofline_pct", 100 * roofSec / sec);
        // with prefix groups the decoder reads each prompt's KV once a group: the bytes it reads, and the bound they
        // allow, are the judged figures (read_*); the per-sample ones stay for comparison with rows without groups
        boolean grouped = mid.prefixGroupRows() > 0 && newTokens > 1;
        double readBytes = grouped ? E2eWork.rooflineBytesShared(rig.cfg, dtBytes, sh.prompts(), b, sh.promptLen(), newTokens) : bytes;
        double readSec = readBytes / (copyGbs * 1e9);
        if (grouped) {
            f.put("roofline_read_bytes", readBytes);
            f.put("roofline_read_pct", 100 * readSec / sec);
        }
        double boundSec = E2eWork.boundSeconds(rig.cfg, dtBytes, b, newTokens, readBytes, copyGbs, E2eWork.PEAK_TFLOPS);
        f.put("bound_pct", 100 * boundSec / sec);
        String note = "whole generate call incl. prefill; steady = (whole - prefill-only " + String.format(Locale.ROOT, "%.3f", prefillOnly) + " s)"
                + (grouped ? "; roofline_read and bound count each prompt's KV once per group of " + sh.samples() + " (prefix groups)" : "");
        if (sec > prefillOnly && newTokens > 1) {
            f.put("steady_tokens_per_s", (double) b * (newTokens - 1) / (sec - prefillOnly));
            f.put("steady_roofline_pct", 100 * roofSec / (sec - prefillOnly));
            if (grouped) f.put("steady_roofline_read_pct", 100 * readSec / (sec - prefillOnly));
            f.put("steady_bound_pct", 100 * boundSec / (sec - prefillOnly));
        } else {
            note += "; no steady-state figure (the whole call was not longer than the prefill-only one)";
        }
        // (absent when every decode step of the call set a graph up: nothing left to measure)
        if (Double.isFinite(mid.hostMillisPerDecodeStep())) f.put("host_ms_per_step", mid.hostMillisPerDecodeStep());
        // the graphs' set-up inside the timed call (each generate call captures its buckets again): in the steady rate,
        // not in host_ms_per_step
        f.put("graph_setup_steps", (double) mid.graphSetupSteps());
        f.put("graph_setup_ms", 1e3 * mid.graphSetupSeconds());
        f.put("bookkeeping_ms_per_step", mid.bookkeepingMillisPerDecodeStep());
        f.put("decode_steps", (double) mid.decodeSteps());
        f.put("overlapped_steps", (double) mid.overlappedSteps());
        f.put("graph_replays", (double) mid.graphReplays());
        f.put("prefix_group_rows", (double) mid.prefixGroupRows());
        if (graphs && mid.graphReplays() == 0) note += "; " + be.name() + " has no graphs: ran eagerly";
        f.putAll(extraFigs);
        return row(t, sh, st, E2eReport.OK, note + extraNote, ms, f);
    }

    /**
     * The rollout with the batch in two halves that run at once: the prompts' first half on the rig's backend, the
     * second on a second backend of the same device (its own stream, cuBLAS handle and scratch) holding a copy of the
     * compute weights, each driven by a thread of its own with decode graphs. Whether the device overlaps one half's
     * attention (memory-bound) with the other's GEMMs (compute-bound), which one stream serializes (docs/benchmarks.md,
     * "Rollout"): tokens/s against the one-stream row says. The weights are read twice per step, once per half; the
     * roofline counts them once, as for the other rows. Skipped where the backend cannot be duplicated.
     */
    static E2eReport.Row rolloutStreams(Rig rig, Shapes sh, Settings st, int newTokens, double copyGbs, Progress pr) {
        Task t = new Task(rig.preset, E2eReport.ROLLOUT, newTokens, true, false, 2);
        if (sh.prompts() < 2) return skipped(t, sh, st, "two halves need at least 2 prompts");
        int half = sh.prompts() / 2;
        Generator.Config c1 = generatorConfig(half, sh.samples(), sh.promptLen(), newTokens, true),
                c2 = generatorConfig(sh.prompts() - half, sh.samples(), sh.promptLen(), newTokens, true);
        // one device's memory for both: the second half's copy of the weights and the two halves' KV caches
        long kv = rig.model.kvBytesPerToken() * BLOCK_SIZE * (c1.numBlocks() + c2.numBlocks() + 2L);
        Memory.require(rig.be, rig.compute.flat().numel() * rig.compute.dtype().bytes() + kv + SIBLING_BYTES,
                "two halves of " + sh.rolloutShape(newTokens) + " (a copy of the compute weights and two KV caches)", "pick a smaller --preset");
        Backend be2 = sibling(rig.be);
        if (be2 == null) return skipped(t, sh, st, "no second " + rig.be.name() + " backend to run the other half on");
        try (be2; LlamaWeights w2 = copyTo(rig.compute, be2)) {
            LlamaModel m2 = new LlamaModel(w2);
            List<int[]> prompts = randomSequences(new SplittableRandom(st.seed() * 31 + 2), sh.prompts(), sh.promptLen(), rig.cfg.vocabSize());
            List<int[]> p1 = prompts.subList(0, half), p2 = prompts.subList(half, prompts.size());
            Generator g1 = new Generator(rig.model, c1), g2 = new Generator(m2, c2);
            java.util.concurrent.ExecutorService ex = java.util.concurrent.Executors.newFixedThreadPool(2, r -> {
                Thread th = new Thread(r, "e2e-rollout-half");
                th.setDaemon(true);
                return th;
            });
            try {
                Generator[] gs = {g1, g2};
                List<List<int[]>> ps = List.of(p1, p2);
                Backend[] bes = {rig.be, be2};
                // warm-up (plans, scratch, each half's graph capture), then prefill + first token only, both halves at once
                concurrently(ex, bes, gs, ps, sampling(sh, Math.min(newTokens, 4), st.seed()));
                double prefillOnly = concurrently(ex, bes, gs, ps, sampling(sh, 1, st.seed())).seconds;
                pr.say(String.format(Locale.ROOT, "%s rollout %d new, graphs on, 2 streams: warm-up done, prefill-only call %.3f s", rig.preset,
                        newTokens, prefillOnly));
                int b = sh.prompts() * sh.samples();
                double[] ms = new double[st.rolloutReps()];
                List<Both> runs = new ArrayList<>();
                for (int i = 0; i < st.rolloutReps(); i++) {
                    Both r = concurrently(ex, bes, gs, ps, sampling(sh, newTokens, st.seed() + i));
                    long got = r.stats[0].generatedTokens() + r.stats[1].generatedTokens();
                    if (got != (long) b * newTokens)
                        throw new IllegalStateException("generated " + got + " tokens, expected " + (long) b * newTokens + " (no stop token)");
                    runs.add(r);
                    ms[i] = r.seconds * 1e3;
                }
                Both mid = runs.get(indexOfMedian(ms));
                return rolloutRow(t, rig, sh, st, newTokens, copyGbs, prefillOnly, ms, mid.stats[0],
                        Map.of("graph_replays_second_half", (double) mid.stats[1].graphReplays()),
                        String.format(Locale.ROOT, "; two halves of %d and %d prompts at once, each on its own backend (a second %s with a copy of the weights);"
                                + " times are wall clock from both halves' start to the later one's end; host ms/step, decode steps and graph"
                                + " replays are the first half's", p1.size(), p2.size(), be2.name()));
            } finally {
                ex.shutdownNow();
                try {
                    ex.awaitTermination(60, java.util.concurrent.TimeUnit.SECONDS);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }
        }
    }

    /** The second backend's own allocations, beyond weights and KV cache: its 32 MiB cuBLAS workspace and scratch. */
    static final long SIBLING_BYTES = 64L << 20;

    /** Wall seconds from the start of both halves' generate calls to the end of the later one, and each half's stats. */
    record Both(double seconds, Generator.Stats[] stats) {}

    private static Both concurrently(java.util.concurrent.ExecutorService ex, Backend[] bes, Generator[] gs, List<List<int[]>> ps, SamplingParams sp) {
        java.util.concurrent.CountDownLatch go = new java.util.concurrent.CountDownLatch(1);
        List<java.util.concurrent.Future<Generator.Stats>> fs = new ArrayList<>();
        for (int i = 0; i < 2; i++) {
            int k = i;
            fs.add(ex.submit(() -> {
                if (bes[k] instanceof CudaBackend cb) cb.useOnThisThread();
                go.await();
                gs[k].generate(ps.get(k), sp);
                bes[k].synchronize();
                return gs[k].lastStats();
            }));
        }
        long t0 = System.nanoTime();
        go.countDown();
        // both halves end before anything is thrown: a failed half must not let the caller close the other half's
        // backend while its thread still issues work on it
        Generator.Stats[] s = new Generator.Stats[2];
        Throwable failure = null;
        boolean interrupted = false;
        for (int i = 0; i < 2; i++) {
            while (true) {
                try {
                    s[i] = fs.get(i).get();
                    break;
                } catch (InterruptedException e) {
                    interrupted = true; // keep waiting: the half's thread does not stop for an interrupt
                } catch (java.util.concurrent.ExecutionException e) {
                    Throwable c = e.getCause() == null ? e : e.getCause();
                    if (failure == null) failure = c;
                    else failure.addSuppressed(c);
                    break;
                }
            }
        }
        if (interrupted) Thread.currentThread().interrupt();
        if (failure instanceof RuntimeException re) throw re;
        if (failure instanceof Error err) throw err;
        if (failure != null) throw new IllegalStateException("a half of the two-stream rollout failed", failure);
        return new Both((System.nanoTime() - t0) / 1e9, s);
    }

    /** A second backend of the same kind and device (its own stream, handles and scratch), or null. */
    static Backend sibling(Backend be) {
        if (be instanceof CudaBackend cb) return new CudaBackend(cb.device());
        if (be instanceof org.grpo4j.internal.backend.CpuBackend) return new org.grpo4j.internal.backend.CpuBackend();
        return null;
    }

    /** Pieces of the host copy in {@link #copyTo}: 64 Mi elements (128 MB of bf16) at a time. */
    static final int COPY_PIECE = 1 << 26;

    /** {@code src}'s weights on backend {@code dst}, copied through the host in pieces (nothing of src is changed). */
    static LlamaWeights copyTo(LlamaWeights src, Backend dst) {
        LlamaWeights w = LlamaWeights.zeros(dst, src.config(), src.dtype());
        try {
            Tensor from = src.flat(), to = w.flat();
            long n = from.numel();
            for (long off = 0; off < n; off += COPY_PIECE) {
                int len = (int) Math.min(COPY_PIECE, n - off);
                Tensor view = from.view(off, len);
                try (Tensor piece = from.dtype() == DType.BF16 ? dst.uploadBf16(view.toBf16Bits(), len) : dst.upload(view.toFloats(), len)) {
                    dst.copy(to.view(off, len), piece);
                }
            }
            return w;
        } catch (RuntimeException e) {
            w.close();
            throw e;
        }
    }

    private static int indexOfMedian(double[] ms) {
        double m = median(ms);
        int best = 0;
        for (int i = 1; i < ms.length; i++) if (Math.abs(ms[i] - m) < Math.abs(ms[best] - m)) best = i;
        return best;
    }

    // ---- one GRPO step --------------------------------------------------------------------------------------------

    /** Words the synthetic responses are made of, indexed by token id, so that every completion reads differently. */
    private static final String[] WORDS = {"so", "we", "add", "the", "apples", "and", "12", "then", "subtract", "3", "from", "it",
            "which", "gives", "9", "pears", "each", "box", "holds", "4", "total", "is", "=", "+", "-", "*", "1,000", "cost"};

    /**
     * A GSM8K-style response made from a completion's token ids (random weights emit random ids; the verifier needs
     * text): about 5 characters per token, ending in "The answer is D." with D = the last id mod 10, so that about one
     * sample in ten matches its prompt's answer and the group advantages are not all zero.
     */
    static String syntheticResponse(int[] tokens) {
        StringBuilder s = new StringBuilder(tokens.length * 6 + 24);
        for (int id : tokens) s.append(WORDS[Math.floorMod(id, WORDS.length)]).append(' ');
        return s.append("The answer is ").append(Math.floorMod(tokens[tokens.length - 1], 10)).append('.').toString();
    }

    /** The trainer's default bound on the LM head's row blocks (lm_head_scratch_mib). */
    static final long TRAINER_LM_ROWS_BYTES = new org.grpo4j.train.GrpoConfig().lmHeadScratchBytes();

    /**
     * One GRPO step, with the LM head's dz and blocks in the trainer's default modes (lm_head_grad bf16: dz rounded to
     * bf16 once; lm_head_scratch_mib).
     */
    static E2eReport.Row grpo(Rig rig, Shapes sh, Settings st, Progress pr) {
        if (!(rig.be instanceof CudaBackend cb)) return grpoStep(rig, sh, st, pr);
        return cb.withLmHeadBf16GradSplit(false, () -> cb.withLmHeadRowsBytes(TRAINER_LM_ROWS_BYTES, () -> grpoStep(rig, sh, st, pr)));
    }

    private static E2eReport.Row grpoStep(Rig rig, Shapes sh, Settings st, Progress pr) {
        Task t = new Task(rig.preset, E2eReport.GRPO, sh.grpoNewTokens(), true);
        Backend be = rig.be;
        LlamaModel policy = rig.model;
        int nP = sh.prompts(), nS = sh.samples(), seqs = nP * nS, vocab = rig.cfg.vocabSize();
        List<int[]> prompts = randomSequences(new SplittableRandom(st.seed() * 31 + 3), nP, sh.promptLen(), vocab);
        Generator.Config gc = generatorConfig(sh, sh.grpoNewTokens(), true);
        Memory.require(be, policy.kvBytesPerToken() * BLOCK_SIZE * (gc.numBlocks() + 1L) + 2L * new ParameterLayout(rig.cfg).totalElements(),
                "the GRPO step's KV cache and reference model", "pick a smaller --preset");
        try (LlamaWeights ref = rig.compute == rig.master ? rig.master.copy() : rig.master.castTo(rig.compute.dtype());
             Rewards rw = new Rewards(Compat.DEFAULT, 10, 5, Runtime.getRuntime().availableProcessors())) {
            LlamaModel refModel = new LlamaModel(ref);
            // the verifier warmed first, as a trainer's is after its first step: the first run's 0.30 s for 768 responses
            // was mostly the JIT compiling the regex paths (about 70 us a response single-threaded once compiled)
            SplittableRandom wr = new SplittableRandom(st.seed() * 31 + 5);
            List<Rewards.Item> warm = new ArrayList<>();
            for (int i = 0; i < 256; i++)
                warm.add(new Rewards.Item(syntheticResponse(wr.ints(sh.grpoNewTokens(), 0, vocab).toArray()), String.valueOf(i % 10), "gsm8k", null));
            rw.scoreAll(warm);
            be.synchronize();
            long t0 = System.nanoTime();
            // 1. generation
            List<List<Completion>> comps = new Generator(policy, gc).generate(prompts, sampling(sh, sh.grpoNewTokens(), st.seed() + 100));
            long t1 = System.nanoTime();
            pr.say(String.format(Locale.ROOT, "%s grpo: generation %.2f s", rig.preset, (t1 - t0) / 1e9));
            // 2. rewards (GSM8K verifier) and group advantages
            List<int[]> seqTokens = new ArrayList<>(), completions = new ArrayList<>();
            List<Rewards.Item> items = new ArrayList<>();
            for (int i = 0; i < nP; i++)
                for (Completion c : comps.get(i)) {
                    int[] full = Arrays.copyOf(prompts.get(i), sh.promptLen() + c.tokens().length);
                    System.arraycopy(c.tokens(), 0, full, sh.promptLen(), c.tokens().length);
                    seqTokens.add(full);
                    completions.add(c.tokens());
                    items.add(new Rewards.Item(syntheticResponse(c.tokens()), String.valueOf(i % 10), "gsm8k", null));
                }
            double[] rewards = rw.scoreAll(items).stream().mapToDouble(Rewards.Result::reward).toArray();
            double[] adv = Advantages.compute(rewards, nS);
            long t2 = System.nanoTime();
            pr.say(String.format(Locale.ROOT, "%s grpo: reward %.3f s (%d of %d correct)", rig.preset, (t2 - t1) / 1e9,
                    Arrays.stream(rewards).filter(x -> x > 0).count(), seqs));
            // 3. reference log-probs of the completion tokens, and old ones for the rollouts past the first mini-batch
            // (the trainer's old_logprobs auto: the first mini-batch's are its training forward's own), no gradients
            // As the trainer's LogprobPhase: chunks of consecutive rollouts (a prompt's samples next to each other), each
            // prompt's tokens run once per chunk through the layers (LlamaModel.tokenLogprobsSharedPrefix)
            int perMini = seqs / sh.miniBatches(), gas = perMini / sh.microSeqs();
            int[] perm = permutation(seqs, new SplittableRandom(st.seed() * 31 + 4));
            float[][] old = new float[seqs][], refLp = new float[seqs][];
            for (int from = 0; from < seqs; from += sh.microSeqs()) {
                Packed pk = Packed.of(seqTokens, completions, sh.promptLen(), from, sh.microSeqs());
                pk.split(pk.logprobs(refModel, nS), refLp, from);
            }
            int[] later = Arrays.copyOfRange(perm, perMini, seqs); // the second mini-batch's rollouts, in rollout order
            Arrays.sort(later);
            for (int from = 0; from < later.length; from += sh.microSeqs()) {
                int[] idx = Arrays.copyOfRange(later, from, Math.min(later.length, from + sh.microSeqs()));
                Packed pk = Packed.of(seqTokens, completions, sh.promptLen(), idx);
                pk.split(pk.logprobs(policy, nS), old, idx);
            }
            long t3 = System.nanoTime();
            pr.say(String.format(Locale.ROOT, "%s grpo: log-probs %.2f s", rig.preset, (t3 - t2) / 1e9));
            // 4. training: mini-batches of micro-batches through the fused GRPO loss, one optimizer step per mini-batch; as
            // the trainer's train_prefix_sharing, each mini-batch's passes take its rollouts in prompt order (a prompt's
            // tokens once per pass through the layers), each token weighted by its micro-batch of the permutation
            GrpoLossParams lp = new GrpoLossParams(1f, 0.2f, 0.2f, 0.01f, KlEstimator.KL3);
            long trained = 0, trainRows = 0;
            int optSteps = 0;
            double[] weight = new double[seqs];
            for (int mb = 0; mb < sh.miniBatches(); mb++) {
                for (int mc = 0; mc < gas; mc++) {
                    int from = mb * perMini + mc * sh.microSeqs(), to = from + sh.microSeqs();
                    long tokens = 0;
                    for (int q = from; q < to; q++) tokens += completions.get(perm[q]).length;
                    for (int q = from; q < to; q++) weight[perm[q]] = 1.0 / ((double) tokens * gas);
                }
                int[] order = Arrays.stream(Arrays.copyOfRange(perm, mb * perMini, (mb + 1) * perMini)).boxed()
                        .sorted(java.util.Comparator.comparingInt(i -> i / nS)).mapToInt(Integer::intValue).toArray();
                for (int mc = 0; mc < gas; mc++) {
                    int[] idx = Arrays.copyOfRange(order, mc * sh.microSeqs(), (mc + 1) * sh.microSeqs());
                    long[] run = grpoMicroStep(rig, idx, seqTokens, completions, sh.promptLen(), nS, adv, old, refLp, weight, lp, st.checkpointing());
                    trained += run[0];
                    trainRows += run[1];
                }
                rig.optimizerStep();
                optSteps++;
            }
            be.synchronize();
            long t4 = System.nanoTime();
            Map<String, Double> f = new LinkedHashMap<>();
            f.put("generation_s", (t1 - t0) / 1e9);
            f.put("reward_s", (t2 - t1) / 1e9);
            f.put("logprobs_s", (t3 - t2) / 1e9);
            f.put("training_s", (t4 - t3) / 1e9);
            f.put("total_s", (t4 - t0) / 1e9);
            f.put("generated_tokens", (double) completions.stream().mapToLong(c -> c.length).sum());
            f.put("trained_tokens", (double) trained);
            f.put("training_token_rows", (double) trainRows);
            f.put("optimizer_steps", (double) optSteps);
            boolean warmed = st.sections().contains(E2eReport.TRAIN) && st.sections().contains(E2eReport.ROLLOUT);
            return row(t, sh, st, E2eReport.OK, "one step" + (warmed ? " (the training and rollout rows warmed the same kernels)"
                    : " without warm-up (first-call costs included)") + "; decode graphs on", new double[] {(t4 - t0) / 1e6}, f);
        }
    }

    /** Sequences packed for a forward pass with, for each completion token, its row (the position before it) and id. */
    record Packed(List<int[]> seqs, int[] rows, int[] targets, int[] counts, int[] index, int promptLen) {
        static Packed of(List<int[]> seqTokens, List<int[]> completions, int promptLen, int from, int count) {
            int[] idx = new int[Math.min(count, seqTokens.size() - from)];
            for (int i = 0; i < idx.length; i++) idx[i] = from + i;
            return of(seqTokens, completions, promptLen, idx);
        }

        static Packed of(List<int[]> seqTokens, List<int[]> completions, int promptLen, int[] idx) {
            List<int[]> seqs = new ArrayList<>();
            int n = 0;
            for (int i : idx) n += completions.get(i).length;
            int[] rows = new int[n], tgt = new int[n], counts = new int[idx.length];
            int k = 0, start = 0;
            for (int j = 0; j < idx.length; j++) {
                int[] c = completions.get(idx[j]);
                seqs.add(seqTokens.get(idx[j]));
                for (int q = 0; q < c.length; q++, k++) {
                    rows[k] = start + promptLen - 1 + q;
                    tgt[k] = c[q];
                }
                counts[j] = c.length;
                start += seqTokens.get(idx[j]).length;
            }
            return new Packed(seqs, rows, tgt, counts, idx.clone(), promptLen);
        }

        /**
         * The loss tokens' log-probs under {@code m}, no gradients; sequences of one prompt (index / samples) next to
         * each other share its tokens' pass (LlamaModel.tokenLogprobsSharedPrefix), as the trainer's log-prob passes.
         */
        float[] logprobs(LlamaModel m, int samples) {
            return m.tokenLogprobs(seqs, shared(samples), rows, targets, 1f, new long[1]);
        }

        /** Per sequence, the prompt length when it follows a sequence of the same prompt (index / samples), else 0. */
        int[] shared(int samples) {
            int[] shared = new int[index.length];
            for (int j = 1; j < index.length; j++)
                if (index[j] / samples == index[j - 1] / samples) shared[j] = promptLen;
            return shared;
        }

        /** Splits concatenated per-token values back per sequence (sequences from..from+counts.length-1). */
        void split(float[] all, float[][] into, int from) {
            int[] idx = new int[counts.length];
            for (int j = 0; j < idx.length; j++) idx[j] = from + j;
            split(all, into, idx);
        }

        /** Splits concatenated per-token values back per sequence (the sequences idx, in order). */
        void split(float[] all, float[][] into, int[] idx) {
            int k = 0;
            for (int j = 0; j < counts.length; j++) {
                into[idx[j]] = Arrays.copyOfRange(all, k, k + counts[j]);
                k += counts[j];
            }
        }
    }

    /**
     * One training pass as the trainer runs it: forward (the sequences of one prompt next to each other share its
     * tokens' pass through the layers), the fused GRPO loss on the completion tokens' hidden states (each sequence's
     * tokens with its weight: the token-masked mean over its micro-batch, divided by the accumulation steps), its
     * gradient scattered back to the rows, the model's backward. Reads the loss once (the host's one look per pass).
     * Returns {packed tokens, rows run through the layers}. Sequences without old log-probs (the first mini-batch's)
     * train on-policy: grpoLoss without them.
     */
    static long[] grpoMicroStep(Rig rig, int[] idx, List<int[]> seqTokens, List<int[]> completions, int promptLen, int samples, double[] adv,
                                float[][] old, float[][] ref, double[] weight, GrpoLossParams lp, boolean checkpointing) {
        Backend be = rig.be;
        Packed pk = Packed.of(seqTokens, completions, promptLen, idx);
        int n = pk.rows().length, d = rig.cfg.hiddenSize();
        float[] w = new float[n], a = new float[n], o = new float[n], r = new float[n];
        boolean onPolicy = old[idx[0]] == null;
        int k = 0;
        for (int j = 0; j < idx.length; j++)
            for (int q = 0; q < pk.counts()[j]; q++, k++) {
                w[k] = (float) weight[idx[j]];
                a[k] = (float) adv[idx[j]];
                if (!onPolicy) o[k] = old[idx[j]][q];
                r[k] = ref[idx[j]][q];
            }
        DType adt = rig.model.activationDType();
        try (PrefixPacking pp = PrefixPacking.of(be, pk.seqs(), pk.shared(samples), rig.cfg.vocabSize());
             LlamaModel.Activations act = rig.model.forward(pp, checkpointing);
             Tensor rowsT = be.upload(pp.compactRows(pk.rows(), "rows"), n); Tensor tgtT = be.upload(pk.targets(), n); Tensor wT = be.upload(w, n);
             Tensor advT = be.upload(a, n); Tensor oldT = onPolicy ? null : be.upload(o, n); Tensor refT = be.upload(r, n);
             Tensor sel = be.empty(adt, n, d); Tensor loss = be.empty(DType.FP32, 1); Tensor logp = be.empty(DType.FP32, n);
             Tensor ratio = be.empty(DType.FP32, n); Tensor clipped = be.empty(DType.FP32, n); Tensor kl = be.empty(DType.FP32, n);
             Tensor dSel = be.empty(adt, n, d); Tensor dHidden = be.zeros(DType.FP32, pp.compactRows(), d)) {
            be.embedding(sel, act.hidden(), rowsT);
            be.grpoLoss(new GrpoLossOutputs(loss, logp, ratio, clipped, kl, dSel, rig.grads.get("lm_head.weight")),
                    sel, rig.compute.get("lm_head.weight"), tgtT, wT, advT, oldT, refT, lp);
            be.embeddingBackward(dHidden, dSel, rowsT);
            rig.model.backward(act, dHidden, rig.grads);
            float l = loss.item();
            if (!Float.isFinite(l)) throw new IllegalStateException("non-finite GRPO loss (" + l + ") on " + rig.preset);
            return new long[] {pp.fullRows(), pp.compactRows()};
        }
    }

    static int[] permutation(int n, SplittableRandom r) {
        int[] p = new int[n];
        for (int i = 0; i < n; i++) p[i] = i;
        for (int i = n - 1; i > 0; i--) {
            int j = r.nextInt(i + 1), x = p[i];
            p[i] = p[j];
            p[j] = x;
        }
        return p;
    }

    /** The planned rows of a run without measuring anything (ids, shapes and work), for the peers' cross-check. */
    public record Planned(String id, String section, String preset, String shape, double tokens, Double flops, Double rooflineBytes) {}

    public static List<Planned> plannedRows(List<String> presets, List<String> sections, DType precision) {
        Settings st = new Settings(presets, sections, precision, 1, 5, 1, false, 0, 1, 1);
        List<Planned> out = new ArrayList<>();
        Set<String> seen = new LinkedHashSet<>();
        for (Task t : plan(st)) {
            Shapes sh = shapes(t.preset());
            LlamaConfig c = config(t.preset());
            String id = t.section() + "/" + t.preset() + "/" + key(t, sh);
            if (!seen.add(id)) continue;
            switch (t.section()) {
                case E2eReport.TRAIN -> {
                    int[] lens = new int[sh.trainSeqs()];
                    Arrays.fill(lens, sh.trainLen());
                    out.add(new Planned(id, t.section(), t.preset(), shape(t, sh), (double) sh.trainSeqs() * sh.trainLen(), E2eWork.trainFlops(c, lens), null));
                }
                case E2eReport.ROLLOUT -> {
                    int b = sh.prompts() * sh.samples();
                    out.add(new Planned(id, t.section(), t.preset(), shape(t, sh), (double) b * t.newTokens(), null,
                            E2eWork.rooflineBytes(c, precision.bytes(), b, sh.promptLen(), t.newTokens())));
                }
                default -> out.add(new Planned(id, t.section(), t.preset(), shape(t, sh), 0, null, null));
            }
        }
        return out;
    }
}
