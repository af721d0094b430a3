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
import java.util.concurrent.CancellationException;
import java.util.concurrent.Future;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicLongArray;

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
 * (scored 0 without an error). Nothing a reward function does fails a training step (an interrupt of the thread that
 * waits for the scores, or closing the registry while it scores, does: {@link #scoreAll}).
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
    /** The longest time limit of a call (a day): beyond it the deadlines' nanosecond arithmetic would overflow. */
    public static final double MAX_TIMEOUT_SECONDS = 86_400;

    /**
     * Workers that may be added to replace those stuck in calls past their time limit (a function that ignores the
     * interrupt): beyond them, an item that finds no free worker within its time limit times out unstarted.
     */
    static final int MAX_REPLACEMENTS = 64;

    private final long timeoutNanos;
    private final int threads;
    private final ThreadPoolExecutor pool;
    private final AtomicInteger replacements = new AtomicInteger();
    /** The calls in progress: each worker's start time (a worker still here past the limit is stuck in its call). */
    private final Map<Thread, Long> running = new ConcurrentHashMap<>();
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
     * @throws IllegalArgumentException if the reward is not a finite number &gt; 0, or the time limit not in (0,
     *                                  {@link #MAX_TIMEOUT_SECONDS}]
     */
    public Rewards(Compat compat, double verificationReward, double timeoutSeconds, int threads) {
        Objects.requireNonNull(compat, "compat");
        if (!(timeoutSeconds > 0) || !(timeoutSeconds <= MAX_TIMEOUT_SECONDS))
            throw new IllegalArgumentException("verifier timeout must be in (0, " + (long) MAX_TIMEOUT_SECONDS + "] s, got " + timeoutSeconds);
        if (!(verificationReward > 0) || Double.isInfinite(verificationReward))
            throw new IllegalArgumentException("verificationReward must be a finite number > 0, got " + verificationReward);
        this.timeoutNanos = (long) (timeoutSeconds * 1e9);
        AtomicInteger k = new AtomicInteger();
        ThreadFactory tf = r -> {
            Thread t = new Thread(r, "grpo4j-verifier-" + k.incrementAndGet());
            t.setDaemon(true);
            return t;
        };
        this.threads = Math.max(1, threads);
        this.pool = new ThreadPoolExecutor(this.threads, this.threads, 60, TimeUnit.SECONDS, new LinkedBlockingQueue<>(), tf);
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
     * @throws IllegalStateException if the registry is closed, also while it scores (the batch's calls cancelled)
     * @throws CancellationException if the calling thread is interrupted while it waits (its interrupt status is
     *                               set again and the calls in progress are cancelled): no partial batch is returned
     */
    public List<Result> scoreAll(List<Item> items) {
        Objects.requireNonNull(items, "items");
        for (int i = 0; i < items.size(); i++) Objects.requireNonNull(items.get(i), "items[" + i + "]");
        requireOpen();
        List<Future<Result>> fs = new ArrayList<>(items.size());
        AtomicLongArray started = new AtomicLongArray(items.size()); // when each call began (0: not yet)
        for (int i = 0; i < items.size(); i++) {
            Item it = items.get(i);
            int k = i;
            try {
                fs.add(pool.submit(() -> org.grpo4j.internal.reward.Scoring.call(() -> run(it, started, k))));
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
                Result r = await(fs.get(i), started, i, name);
                // each item's error or timeout counted here, once, whoever noticed it (the call, or this wait)
                if (r.timedOut()) timeouts.incrementAndGet();
                else if (r.error() != null) errors.incrementAndGet();
                out.add(r);
            } catch (InterruptedException e) { // nothing is scored for the caller that stopped waiting: no partial batch
                for (Future<Result> f : fs) f.cancel(true);
                Thread.currentThread().interrupt();
                throw new CancellationException("scoring interrupted (the caller's thread was interrupted); " + i + " of " + items.size()
                        + " items were scored");
            } catch (CancellationException e) { // close() cancelled the calls not yet run
                for (Future<Result> f : fs) f.cancel(true);
                requireOpen();
                throw e;
            } catch (java.util.concurrent.ExecutionException e) {
                errors.incrementAndGet();
                out.add(new Result(0, name, null, failure(e.getCause()), false));
            }
        }
        return out;
    }

    /**
     * Item i's result: run() enforces the time limit itself (the built-in verifiers stop at their deadline; any call
     * that returns past it scores 0); this wait, measured from the call's start, adds a second for a function stuck
     * elsewhere, then cancels (interrupts) it. A worker that stays stuck is replaced (up to {@link #MAX_REPLACEMENTS}),
     * so that the items queued behind it still run; an item that has not started within the time limit while no
     * worker can be added times out unstarted.
     */
    private Result await(Future<Result> f, AtomicLongArray started, int i, String name) throws InterruptedException, java.util.concurrent.ExecutionException {
        long margin = timeoutNanos + 1_000_000_000L;
        long queuedSince = System.nanoTime();
        while (true) {
            long st = started.get(i), now = System.nanoTime();
            long wait = st != 0 ? st + margin - now : queuedSince + margin - now;
            try {
                return f.get(Math.max(0, wait), TimeUnit.NANOSECONDS);
            } catch (TimeoutException e) {
                st = started.get(i);
                now = System.nanoTime();
                if (st != 0 && now - st < margin) continue; // it started meanwhile: its own time limit applies
                if (pool.isShutdown()) { // closed meanwhile: nothing more will run
                    f.cancel(true);
                    requireOpen();
                }
                if (st == 0) {
                    long at = now;
                    long stuck = running.values().stream().filter(t -> at - t >= margin).count();
                    // the queue moves while every stuck worker has a replacement; else one more worker (while allowed)
                    if (replaceStuckWorker(stuck)) {
                        queuedSince = now;
                        continue;
                    }
                }
                f.cancel(true);
                if (st == 0) return new Result(0, name, null, "not started within " + timeoutNanos / 1e9 + " s: every verifier worker is"
                        + " in a call past its time limit", true);
                return new Result(0, name, null, "timed out after " + timeoutNanos / 1e9 + " s", true);
            }
        }
    }

    /**
     * Whether the queue moves: each of the {@code stuck} workers (in a call past its limit, interrupted, not returning)
     * has a replacement, or one more is added now; false once the allowance is spent.
     */
    private synchronized boolean replaceStuckWorker(long stuck) {
        if (stuck <= replacements.get()) return true; // every stuck worker already has its replacement: the queue moves
        if (replacements.get() >= MAX_REPLACEMENTS) return false;
        int n = threads + replacements.incrementAndGet();
        pool.setMaximumPoolSize(n);
        pool.setCorePoolSize(n);
        return true;
    }

    private String name(String dataset) {
        return dataset == null ? "none" : handles(dataset) ? dataset.toLowerCase(Locale.ROOT) : "none";
    }

    private Result run(Item it, AtomicLongArray started, int i) {
        long t0 = System.nanoTime();
        started.set(i, t0);
        Result r;
        running.put(Thread.currentThread(), t0);
        try {
            r = run(it);
        } finally {
            running.remove(Thread.currentThread());
        }
        if (!r.timedOut() && System.nanoTime() - started.get(i) > timeoutNanos) // returned, but past its time limit
            return new Result(0, r.verifier(), null, "timed out after " + timeoutNanos / 1e9 + " s", true);
        return r;
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
            return new Result(0, name, null, "response is null", false);
        }
        Deadline.set(System.nanoTime() + timeoutNanos);
        try {
            RewardFunction.Score s = functions.get(name).score(it.response(), it.groundTruth(), it.row());
            if (s == null || !Double.isFinite(s.reward())) {
                return new Result(0, name, null, "reward function returned " + (s == null ? "null" : s.reward()), false);
            }
            return new Result(s.reward(), name, s.detail(), null, false);
        } catch (Deadline.Expired e) {
            return new Result(0, name, null, "timed out after " + timeoutNanos / 1e9 + " s", true);
        } catch (Exception | StackOverflowError e) {
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
        // the queued calls are cancelled, so that a scoreAll waiting for them fails at once (closed) instead of waiting
        for (Runnable r : pool.shutdownNow()) if (r instanceof Future<?> f) f.cancel(true);
    }

    private void requireOpen() {
        if (closed) throw new IllegalStateException("rewards are closed (Rewards.close() was called)");
    }
}
