package org.grpo4j.reward;

import org.grpo4j.internal.reward.Deadline;
import org.grpo4j.internal.reward.VerifierRegistry;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The reward functions of a run, by dataset name: routes each response to the function registered for its row's
 * {@code dataset} (case-insensitive) and scores batches in parallel, every call under a time limit. The built-in
 * verifiers {@code gsm8k}, {@code math} and {@code ifeval} are registered from the start (docs/verifiers.md), with
 * reward = verification_reward (10) on success and 0 otherwise; {@link #register} adds or replaces one.
 *
 * <pre>{@code
 * try (Rewards rewards = new Rewards()) {
 *     rewards.register("even", (response, truth, row) -> RewardFunction.Score.of(endsWithEvenNumber(response) ? 1 : 0));
 *     Rewards.Result r = rewards.score(new Rewards.Item("4 + 2 = 6", "6", "even", null));
 * }
 * }</pre>
 *
 * <p>A call that throws, runs past the time limit or returns null, NaN or infinity scores 0 with the reason in
 * {@link Result#error()}, and is counted ({@link #counters()}); so are unknown datasets and null ground truths
 * (scored 0 without an error). Nothing here ever fails a training step.
 *
 * <p><b>Thread safety:</b> thread-safe: registration and scoring may happen from any thread (a registration applies
 * to the items scored after it). Reward functions are called concurrently on the registry's worker threads, so they
 * must be thread-safe themselves. {@link #close()} stops the workers; any later call throws
 * {@link IllegalStateException}.
 */
public final class Rewards implements AutoCloseable {

    /**
     * One response to score.
     *
     * @param response    the response text
     * @param groundTruth the row's ground truth (null: scored 0)
     * @param dataset     the name the function is registered under
     * @param row         the whole row, passed to the function (may be null)
     */
    public record Item(String response, String groundTruth, String dataset, RlvrRow row) {}

    /**
     * The outcome for one item.
     *
     * @param reward   the reward (0 on any failure)
     * @param verifier the function's dataset name, or "none" when no function is registered for the item's dataset
     * @param detail   the function's optional detail, or why the item was not scored (unrouted, null ground truth)
     * @param error    what went wrong (the exception's message, a timeout, a non-finite reward), or null
     * @param timedOut whether the call ran past the time limit
     */
    public record Result(double reward, String verifier, String detail, String error, boolean timedOut) {}

    private final Map<String, RewardFunction> functions = new ConcurrentHashMap<>();
    private final long timeoutNanos;
    private final ExecutorService pool;
    private final Map<String, AtomicLong> counts = new ConcurrentHashMap<>();
    private final AtomicLong errors = new AtomicLong(), timeouts = new AtomicLong(), unrouted = new AtomicLong(), nullTruth = new AtomicLong();

    private volatile boolean closed;

    /**
     * The built-in verifiers with the given semantics and reward, and a time limit per call.
     *
     * @param compat             the verifiers' semantics
     * @param verificationReward the reward of a response a built-in verifier accepts
     * @param timeoutSeconds     the time limit of one call, in seconds
     * @param threads            worker threads (at least 1 is used)
     * @throws NullPointerException     if {@code compat} is null
     * @throws IllegalArgumentException if the reward or the time limit is not a finite number &gt; 0
     */
    public Rewards(Compat compat, double verificationReward, double timeoutSeconds, int threads) {
        Objects.requireNonNull(compat, "compat");
        if (!(timeoutSeconds > 0) || Double.isInfinite(timeoutSeconds)) throw new IllegalArgumentException("verifier timeout must be a finite number > 0 s, got " + timeoutSeconds);
        if (!(verificationReward > 0) || Double.isInfinite(verificationReward))
            throw new IllegalArgumentException("verificationReward must be a finite number > 0, got " + verificationReward);
        this.timeoutNanos = (long) (timeoutSeconds * 1e9);
        AtomicInteger k = new AtomicInteger();
        ThreadFactory tf = r -> {
            Thread t = new Thread(r, "grpo4j-verifier-" + k.incrementAndGet());
            t.setDaemon(true);
            return t;
        };
        this.pool = Executors.newFixedThreadPool(Math.max(1, threads), tf);
        VerifierRegistry.registerBuiltins(this, compat, verificationReward);
    }

    /** The built-in verifiers with their intended semantics, reward 10, 5 s per call, one worker per core. */
    public Rewards() { this(Compat.DEFAULT, 10.0, 5.0, Runtime.getRuntime().availableProcessors()); }

    /**
     * Registers (or replaces) the function for a dataset name.
     *
     * @param dataset  the name, matched case-insensitively against each row's {@code dataset}
     * @param function the reward function (thread-safe: it is called concurrently)
     * @return this registry
     * @throws NullPointerException     if an argument is null
     * @throws IllegalArgumentException if {@code dataset} is blank
     * @throws IllegalStateException    if the registry is closed
     */
    public Rewards register(String dataset, RewardFunction function) {
        Objects.requireNonNull(dataset, "dataset");
        Objects.requireNonNull(function, "function");
        if (dataset.isBlank()) throw new IllegalArgumentException("dataset is blank");
        requireOpen();
        functions.put(dataset.toLowerCase(Locale.ROOT), function);
        return this;
    }

    /**
     * The registered dataset names.
     *
     * @return lower case, sorted
     */
    public java.util.SortedSet<String> names() { return new java.util.TreeSet<>(functions.keySet()); }

    /**
     * Whether a function is registered for a dataset.
     *
     * @param dataset a dataset name (null: false)
     * @return true when {@link #score} would route it
     */
    public boolean handles(String dataset) { return dataset != null && functions.containsKey(dataset.toLowerCase(Locale.ROOT)); }

    /**
     * Scores one item under the time limit.
     *
     * @param item the item
     * @return its result
     * @throws NullPointerException  if {@code item} is null
     * @throws IllegalStateException if the registry is closed
     */
    public Result score(Item item) {
        Objects.requireNonNull(item, "item");
        return scoreAll(List.of(item)).get(0);
    }

    /**
     * Scores items in parallel, each under the time limit.
     *
     * @param items the items
     * @return their results, in input order
     * @throws NullPointerException  if {@code items} or one of them is null
     * @throws IllegalStateException if the registry is closed
     */
    public List<Result> scoreAll(List<Item> items) {
        Objects.requireNonNull(items, "items");
        for (int i = 0; i < items.size(); i++) Objects.requireNonNull(items.get(i), "items[" + i + "]");
        requireOpen();
        List<Future<Result>> fs = new ArrayList<>(items.size());
        for (int i = 0; i < items.size(); i++) {
            Item it = items.get(i);
            try {
                fs.add(pool.submit(() -> run(it)));
            } catch (java.util.concurrent.RejectedExecutionException e) { // closed by another thread meanwhile
                for (Future<Result> f : fs) f.cancel(true);
                requireOpen();
                throw e;
            }
        }
        List<Result> out = new ArrayList<>(items.size());
        for (int i = 0; i < items.size(); i++) {
            Item it = items.get(i);
            String name = name(it.dataset());
            try {
                // run() enforces the deadline itself; the outer wait adds a margin for a verifier stuck outside regexes
                out.add(fs.get(i).get(timeoutNanos + 1_000_000_000L, TimeUnit.NANOSECONDS));
            } catch (TimeoutException e) {
                fs.get(i).cancel(true);
                timeouts.incrementAndGet();
                out.add(new Result(0, name, null, "timed out after " + timeoutNanos / 1e9 + " s", true));
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                out.add(new Result(0, name, null, "interrupted", false));
            } catch (java.util.concurrent.ExecutionException e) {
                errors.incrementAndGet();
                out.add(new Result(0, name, null, failure(e.getCause()), false));
            }
        }
        return out;
    }

    private String name(String dataset) {
        return dataset == null ? "none" : handles(dataset) ? dataset.toLowerCase(Locale.ROOT) : "none";
    }

    private Result run(Item it) {
        String name = name(it.dataset());
        if (name.equals("none")) {
            unrouted.incrementAndGet();
            return new Result(0, "none", "no verifier for dataset " + it.dataset(), null, false);
        }
        counts.computeIfAbsent(name, k -> new AtomicLong()).incrementAndGet();
        if (it.groundTruth() == null) {
            nullTruth.incrementAndGet();
            return new Result(0, name, "ground truth is null", null, false);
        }
        if (it.response() == null) {
            errors.incrementAndGet();
            return new Result(0, name, null, "response is null", false);
        }
        Deadline.set(System.nanoTime() + timeoutNanos);
        try {
            RewardFunction.Score s = functions.get(name).score(it.response(), it.groundTruth(), it.row());
            if (s == null || !Double.isFinite(s.reward())) {
                errors.incrementAndGet();
                return new Result(0, name, null, "reward function returned " + (s == null ? "null" : s.reward()), false);
            }
            return new Result(s.reward(), name, s.detail(), null, false);
        } catch (Deadline.Expired e) {
            timeouts.incrementAndGet();
            return new Result(0, name, null, "timed out after " + timeoutNanos / 1e9 + " s", true);
        } catch (Exception | StackOverflowError e) {
            errors.incrementAndGet();
            return new Result(0, name, null, failure(e), false);
        } finally {
            Deadline.clear();
        }
    }

    /** What a failing reward function reports: its message; the exception's kind only when it has none (a bug). */
    private static String failure(Throwable e) {
        String m = e == null ? null : e.getMessage();
        if (m != null && !m.isBlank()) return "verifier failed: " + m.lines().findFirst().orElse(m);
        return "verifier failed: internal error (" + (e == null ? "unknown" : e.getClass().getSimpleName()) + ")";
    }

    /**
     * Counters since construction.
     *
     * @return {@code verifier/NAME} (calls per function), {@code errors}, {@code timeouts}, {@code unrouted} and
     *         {@code null_ground_truth}, sorted by name
     */
    public Map<String, Long> counters() {
        Map<String, Long> m = new TreeMap<>();
        counts.forEach((k, v) -> m.put("verifier/" + k, v.get()));
        m.put("errors", errors.get());
        m.put("timeouts", timeouts.get());
        m.put("unrouted", unrouted.get());
        m.put("null_ground_truth", nullTruth.get());
        return m;
    }

    /**
     * Whether {@link #close()} has been called.
     *
     * @return true once closed
     */
    public boolean isClosed() { return closed; }

    /** Stops the worker threads (interrupting calls in progress). Idempotent. */
    @Override
    public void close() {
        closed = true;
        pool.shutdownNow();
    }

    private void requireOpen() {
        if (closed) throw new IllegalStateException("rewards are closed (Rewards.close() was called)");
    }
}
