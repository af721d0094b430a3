package org.grpo4j.train;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import org.grpo4j.Backend;
import org.grpo4j.internal.ApiAccess;
import org.grpo4j.internal.train.Trainer;
import org.grpo4j.reward.Rewards;

/**
 * GRPO post-training on verifiable rewards: the Tulu 3.1 RLVR step (sampling with the current policy, rewards,
 * group advantages, PPO-clip with a KL penalty, AdamW), with metrics, plots, samples, atomic checkpoints and exact
 * resume, as {@code tools/grpo4j train} runs it (docs/trainer.md).
 *
 * <pre>{@code
 * GrpoConfig cfg = GrpoConfig.load(Path.of("examples/tiny-arith.json"), List.of("num_training_steps=20"));
 * try (Rewards rewards = new Rewards()) {
 *     rewards.register("gsm8k", (response, truth, row) -> RewardFunction.Score.of(response.contains(truth) ? 1 : 0));
 *     try (GrpoTrainer trainer = GrpoTrainer.builder(cfg).outputDir(Path.of("runs/mine")).rewards(rewards).build()) {
 *         GrpoTrainer.Result r = trainer.run(new GrpoTrainer.Listener() {
 *             public void onStep(int step, Map<String, Double> m) { System.out.println(step + " " + m.get("objective/scores")); }
 *         });
 *     }
 * }
 * }</pre>
 *
 * <p>The output directory receives {@code config.json}, {@code metrics.jsonl} (one line per step), {@code
 * samples.jsonl} (eval samples), {@code plots/} and {@code checkpoints/step_N/}, whose {@code model/} directory is an
 * HF model that {@link org.grpo4j.Model#load Model.load} reads. {@code step_0} is the initial policy (after the
 * optional supervised warm-up); one is written every {@code save_freq} steps and at the end.
 *
 * <p>A reward function that throws, times out or returns NaN or infinity scores 0 for that row; the run goes on.
 * Such rows are counted in the step's {@code rewards/errors} (and {@code rewards/timeouts}) metric and reported once
 * per step: one log line and {@link Listener#onRewardErrors}.
 *
 * <p><b>Thread safety:</b> {@link #cancel()} and {@link #completedSteps()} may be called from any thread (a
 * listener, a signal handler, a UI). {@link #run} runs on the calling thread, holding the {@link Backend}'s lock
 * when one was given to the builder. {@link #close()} from another thread cancels a run in progress and waits for it
 * to stop at the next step boundary (with its checkpoint) before freeing anything. Builders are not thread-safe.
 */
public final class GrpoTrainer implements AutoCloseable {

    /**
     * Progress callbacks, all optional, called on the thread that runs {@link GrpoTrainer#run} between steps
     * ({@link #onSftStep} at {@code world_size} &gt; 1: on the first rank's own thread, while the other ranks wait for
     * it). An exception thrown by a callback ends the run (after what was already written). {@link GrpoTrainer#close}
     * from a callback cancels the run, which frees everything as it returns.
     */
    public interface Listener {
        /**
         * After each step of the supervised warm-up ({@code sft_warmup.steps} &gt; 0).
         *
         * @param step  1-based warm-up step
         * @param steps warm-up steps in all
         * @param loss  the step's mean next-token loss
         */
        default void onSftStep(int step, int steps, double loss) {}

        /**
         * After each GRPO step, with the line written to {@code metrics.jsonl}.
         *
         * @param step    1-based training step
         * @param metrics metric name to value (e.g. {@code objective/scores}, the mean reward; {@code
         *                objective/verifiable_correct_rate}; {@code objective/kl}; {@code rewards/errors});
         *                docs/trainer.md lists them all; unmodifiable
         */
        default void onStep(int step, Map<String, Double> metrics) {}

        /**
         * When a step had rows whose reward function threw, timed out or returned a non-finite reward (each scored
         * 0): once per such step, before {@link #onStep}.
         *
         * @param step    1-based training step
         * @param errors  how many rows (over every rank)
         * @param example one of the errors, e.g. {@code dataset "even": reward function returned NaN}
         */
        default void onRewardErrors(int step, int errors, String example) {}

        /**
         * After a checkpoint was written (step 0 is the initial policy).
         *
         * @param step the training step it holds
         * @param dir  {@code OUTPUT/checkpoints/step_N}; its {@code model/} subdirectory is an HF model
         */
        default void onCheckpoint(int step, Path dir) {}
    }

    /**
     * How a run ended.
     *
     * @param lastStep  the last completed training step
     * @param cancelled true when {@link GrpoTrainer#cancel()} stopped it before the last step
     * @param outputDir the run's output directory
     * @param metrics   every step's metrics, in step order (a resumed run includes the earlier steps)
     */
    public record Result(int lastStep, boolean cancelled, Path outputDir, List<Map<String, Double>> metrics) {
        /**
         * Copies the metrics list.
         *
         * @param lastStep  the last completed training step
         * @param cancelled whether the run was cancelled
         * @param outputDir the output directory
         * @param metrics   per-step metrics
         */
        public Result {
            Objects.requireNonNull(outputDir, "outputDir");
            metrics = List.copyOf(metrics);
        }
    }

    /**
     * A new run with this configuration (copied at {@link Builder#build()}, so later changes to {@code config} do not
     * reach the run).
     *
     * @param config the run's configuration
     * @return a builder
     * @throws NullPointerException if {@code config} is null (to continue a run, use {@link #resume})
     */
    public static Builder builder(GrpoConfig config) {
        Objects.requireNonNull(config, "config (to continue a run, use GrpoTrainer.resume(runDirectory))");
        return new Builder(config, null);
    }

    /**
     * Continues an earlier run from its newest checkpoint, with the configuration saved there; the run goes on in
     * its own directory and, on the CPU backend at its own world size, repeats an uninterrupted run bit for bit.
     *
     * @param runDirectory the run's output directory (or its {@code checkpoints/} or newest {@code step_N})
     * @return a builder
     * @throws NullPointerException if {@code runDirectory} is null
     */
    public static Builder resume(Path runDirectory) {
        Objects.requireNonNull(runDirectory, "runDirectory");
        return new Builder(null, runDirectory);
    }

    /** Options of a trainer; {@link #build()} checks everything that does not need the weights, then loads them. */
    public static final class Builder {
        private final GrpoConfig config;
        private final Path resume;
        private Path outputDir;
        private boolean overwrite;
        private Backend backend;
        private Rewards rewards;
        private PrintStream log = System.out;
        private int worldSize;
        private List<String> overrides = List.of();
        private boolean allowChanges;

        private Builder(GrpoConfig config, Path resume) {
            this.config = config;
            this.resume = resume;
        }

        /**
         * Where the run writes (default: the configuration's {@code output_dir}). It must be missing or empty, unless
         * {@link #overwrite} is set.
         *
         * @param dir the output directory
         * @return this builder
         * @throws NullPointerException if {@code dir} is null
         */
        public Builder outputDir(Path dir) {
            outputDir = Objects.requireNonNull(dir, "dir");
            return this;
        }

        /**
         * Start even when the output directory holds an earlier run, whose outputs are deleted when this run starts
         * (default: refuse a non-empty directory). A directory holding other files is refused either way.
         *
         * @param overwrite whether to replace an earlier run
         * @return this builder
         */
        public Builder overwrite(boolean overwrite) {
            this.overwrite = overwrite;
            return this;
        }

        /**
         * Run on this backend (default: open the configuration's {@code backend}, and close it with the trainer).
         * The trainer does not close a backend given here. Only for {@code world_size} 1: {@link #build} refuses it
         * with a larger one (in-process ranks run on CPU backends of their own).
         *
         * @param backend an open backend
         * @return this builder
         * @throws NullPointerException if {@code backend} is null
         */
        public Builder backend(Backend backend) {
            this.backend = Objects.requireNonNull(backend, "backend");
            return this;
        }

        /**
         * Score with these reward functions (default: the built-in verifiers with the configuration's {@code
         * verifier_compat}, {@code verification_reward} and {@code verifier_timeout}). The trainer does not close
         * rewards given here. Every row's {@code dataset} must be registered.
         *
         * @param rewards the reward registry
         * @return this builder
         * @throws NullPointerException if {@code rewards} is null
         */
        public Builder rewards(Rewards rewards) {
            this.rewards = Objects.requireNonNull(rewards, "rewards");
            return this;
        }

        /**
         * Resumes the run at {@code worldSize} in-process ranks instead of its own number (a resharded resume): the same
         * global batch, its per-rank batch sizes rescaled, the optimizer state resharded; the run goes on with the same
         * data, samples and schedule: with one mini-batch a step equal to an uninterrupted run up to floating-point
         * summation order, with several as a run of {@code worldSize} ranks would draw its mini-batches.
         *
         * @param worldSize the ranks to go on with
         * @return this builder
         * @throws IllegalStateException if this builder does not resume a run
         * @throws IllegalArgumentException if {@code worldSize} is below 1
         */
        public Builder worldSize(int worldSize) {
            if (resume == null) throw new IllegalStateException("worldSize: only a resumed run is resharded (a new run takes world_size from its configuration)");
            if (worldSize < 1) throw new IllegalArgumentException("worldSize must be >= 1, got " + worldSize);
            this.worldSize = worldSize;
            return this;
        }

        /**
         * Changes the resumed run's saved configuration, as {@code tools/grpo4j train --resume DIR --set key=value}
         * does: keys that change how the run runs (memory and speed settings, checkpoint and eval cadence, timeouts;
         * the horizon where every step still planned keeps its learning rate) always; keys that change what it trains
         * from its step on (learning rate, beta, sampling, rewards, ...) only with {@link #allowChanges}; the model,
         * data, seed, batch of a step, precision, warm-up, world size and output directory never (docs/trainer.md,
         * "Changing a resumed run"). Checked by {@link #build()}.
         *
         * @param overrides "key=value" strings (the value parsed as JSON, else taken as a string)
         * @return this builder
         * @throws IllegalStateException if this builder does not resume a run
         * @throws NullPointerException  if {@code overrides} or one of them is null
         */
        public Builder overrides(List<String> overrides) {
            if (resume == null) throw new IllegalStateException("overrides: only a resumed run's saved configuration is overridden (change a new run's GrpoConfig)");
            Objects.requireNonNull(overrides, "overrides");
            for (int i = 0; i < overrides.size(); i++) Objects.requireNonNull(overrides.get(i), "overrides[" + i + "]");
            this.overrides = List.copyOf(overrides);
            return this;
        }

        /**
         * Lets {@link #overrides} change what the resumed run trains from its step on; trainer_state.json records each
         * change with its step (default: such a change is refused).
         *
         * @param allow whether to allow it
         * @return this builder
         */
        public Builder allowChanges(boolean allow) {
            this.allowChanges = allow;
            return this;
        }

        /**
         * Where progress lines go (default {@link System#out}).
         *
         * @param log the stream, or null for none
         * @return this builder
         */
        public Builder log(PrintStream log) {
            this.log = log;
            return this;
        }

        /**
         * Checks the configuration, the model's config, tokenizer, chat template, data, verifiers, sizes and memory,
         * then loads the weights.
         *
         * @return the trainer; close it when done
         * @throws IllegalArgumentException if anything is wrong with the configuration, the data or the sizes (one
         *                                  line naming the key, file or value)
         * @throws IllegalStateException    if the backend or the rewards are closed
         * @throws IOException              if a file cannot be read, or the output directory cannot be used
         */
        public GrpoTrainer build() throws IOException {
            if (rewards != null && rewards.isClosed()) throw new IllegalStateException("rewards are closed (Rewards.close() was called)");
            Trainer.Builder b = Trainer.builder(config == null ? null : config.copy()).overwrite(overwrite).log(log);
            if (resume != null) b.resume(resume).reshard(worldSize).overrides(overrides).allowChanges(allowChanges);
            if (outputDir != null) b.outputDir(outputDir);
            if (rewards != null) b.rewards(rewards);
            if (backend == null) return new GrpoTrainer(b.build(), null);
            synchronized (backend) {
                b.backend(ApiAccess.backend(backend));
                return new GrpoTrainer(b.build(), backend);
            }
        }
    }

    private final Trainer impl;
    private final Backend backend;
    private final Object runLock = new Object();
    private volatile boolean closed;
    /** close() was called by a listener of the running run: it takes effect when run returns. */
    private volatile boolean closeAfterRun; // (set by close() from a callback, which may run on a rank's thread)

    private GrpoTrainer(Trainer impl, Backend backend) {
        this.impl = impl;
        this.backend = backend;
    }

    /**
     * Runs the remaining warm-up and training steps, or until {@link #cancel()}. A second call after a cancel returns
     * at once; after a completed run it returns the same result.
     *
     * @param listener progress callbacks
     * @return how the run ended
     * @throws NullPointerException      if {@code listener} is null (use {@link #run()} for none)
     * @throws IllegalStateException     if the trainer or its backend is closed, or an earlier run failed inside a
     *                                   step or was interrupted (the model states may be partly updated: close the
     *                                   trainer and {@link #resume} the run; a listener's exception between steps
     *                                   does not count, and run() again goes on)
     * @throws TrainingAbortedException  if too many consecutive optimizer steps were non-finite (the last good
     *                                   checkpoint stays the newest)
     * @throws IOException               if an output cannot be written
     */
    public Result run(Listener listener) throws IOException {
        Objects.requireNonNull(listener, "listener (use run() for none)");
        Listener marked = new InCallback(listener);
        synchronized (runLock) {
            if (closed || closeAfterRun) throw new IllegalStateException("trainer is closed");
            try {
                if (backend == null) return impl.run(marked);
                synchronized (backend) {
                    ApiAccess.backend(backend); // fails once the backend is closed
                    ApiAccess.runStarted(backend); // (a model on it called from a reward function fails at once)
                    try {
                        return impl.run(marked);
                    } finally {
                        ApiAccess.runEnded(backend);
                    }
                }
            } finally {
                if (closeAfterRun) {
                    closed = true;
                    impl.close();
                }
            }
        }
    }

    /**
     * Runs without callbacks.
     *
     * @return how the run ended
     * @throws IllegalStateException     if the trainer or its backend is closed
     * @throws TrainingAbortedException  if too many consecutive optimizer steps were non-finite
     * @throws IOException               if an output cannot be written
     */
    public Result run() throws IOException { return run(new Listener() {}); }

    /**
     * Stops a run at the next step boundary (after writing a checkpoint). Safe from any thread. (Interrupting the
     * thread that runs {@link #run} is not a way to stop it: the run then fails where the interrupt is noticed, with an
     * exception such as {@link java.util.concurrent.CancellationException} from the reward scoring, never training on
     * a partly scored batch; the last checkpoint stays the newest, and this trainer's {@link #run} is refused after:
     * {@link #close()} it, which waits for its rank threads, and {@link #resume} the run.)
     */
    public void cancel() { impl.cancel(); }

    /**
     * The last completed training step (0 before the first).
     *
     * @return the step
     */
    public int completedSteps() { return impl.completedSteps(); }

    /**
     * Whether this thread is inside one of this trainer's listener callbacks (any thread: rank 0's for onSftStep at
     * world > 1); per trainer, so that closing another trainer from a callback closes it.
     */
    private final ThreadLocal<Boolean> inCallback = ThreadLocal.withInitial(() -> false);

    /** The caller's listener, each callback marked as such on its thread ({@link #close} from one must not wait). */
    private final class InCallback implements Listener {
        private final Listener l;

        InCallback(Listener l) { this.l = l; }

        private void marked(Runnable r) {
            boolean outer = inCallback.get();
            inCallback.set(true);
            try {
                r.run();
            } finally {
                inCallback.set(outer);
            }
        }

        @Override public void onSftStep(int step, int steps, double loss) { marked(() -> l.onSftStep(step, steps, loss)); }
        @Override public void onStep(int step, Map<String, Double> metrics) { marked(() -> l.onStep(step, metrics)); }
        @Override public void onRewardErrors(int step, int errors, String example) { marked(() -> l.onRewardErrors(step, errors, example)); }
        @Override public void onCheckpoint(int step, Path dir) { marked(() -> l.onCheckpoint(step, dir)); }
    }

    /**
     * Frees the model states and what the trainer opened. From another thread while {@link #run} is running, cancels
     * it and waits for it to stop; from a {@link Listener} callback, cancels the run, which then frees everything as
     * it returns. Idempotent.
     */
    @Override
    public void close() {
        if (closed) return;
        impl.cancel();
        // a listener of the run in progress (on the run's thread, or a rank's): the run frees everything as it returns
        if (Thread.holdsLock(runLock) || inCallback.get()) {
            closeAfterRun = true;
            return;
        }
        synchronized (runLock) {
            if (closed) return;
            closed = true;
            impl.close();
        }
    }
}
