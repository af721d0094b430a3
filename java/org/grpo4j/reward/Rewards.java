package org.grpo4j.reward;

import org.grpo4j.internal.reward.Deadline;
import org.grpo4j.internal.reward.VerifierRegistry;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
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
 * Routes each response to the reward function registered for its row's {@code dataset} (case-insensitive) and scores
 * batches in parallel, every verification under a time limit. gsm8k, math and ifeval are registered by default with
 * reward = verification_reward (10) on success. Unknown datasets, null ground truths, exceptions and timeouts score 0
 * and are counted; nothing here ever fails a training step.
 */
public final class Rewards implements AutoCloseable {

    /** One response to score. */
    public record Item(String response, String groundTruth, String dataset, RlvrRow row) {}

    /** The outcome for one item: reward, verifier used ("none" when unrouted), and what went wrong if anything. */
    public record Result(double reward, String verifier, String detail, String error, boolean timedOut) {}

    private final Map<String, RewardFunction> functions = new ConcurrentHashMap<>();
    private final long timeoutNanos;
    private final ExecutorService pool;
    private final Map<String, AtomicLong> counts = new ConcurrentHashMap<>();
    private final AtomicLong errors = new AtomicLong(), timeouts = new AtomicLong(), unrouted = new AtomicLong(), nullTruth = new AtomicLong();

    /** The built-in verifiers with the given semantics, reward and per-verification time limit. */
    public Rewards(Compat compat, double verificationReward, double timeoutSeconds, int threads) {
        if (!(timeoutSeconds > 0)) throw new IllegalArgumentException("verifier timeout must be > 0 s, got " + timeoutSeconds);
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

    public Rewards() { this(Compat.DEFAULT, 10.0, 5.0, Runtime.getRuntime().availableProcessors()); }

    /** Registers (or replaces) the function for a dataset name (matched case-insensitively). */
    public Rewards register(String dataset, RewardFunction f) {
        functions.put(dataset.toLowerCase(Locale.ROOT), f);
        return this;
    }

    /** The registered dataset names (lower case, sorted). */
    public java.util.SortedSet<String> names() { return new java.util.TreeSet<>(functions.keySet()); }

    public boolean handles(String dataset) { return dataset != null && functions.containsKey(dataset.toLowerCase(Locale.ROOT)); }

    /** Scores one item on the calling thread's pool, under the time limit. */
    public Result score(Item it) {
        return scoreAll(List.of(it)).get(0);
    }

    /** Scores items in parallel; results in input order. */
    public List<Result> scoreAll(List<Item> items) {
        List<Future<Result>> fs = new ArrayList<>(items.size());
        for (int i = 0; i < items.size(); i++) {
            Item it = items.get(i);
            fs.add(pool.submit(() -> run(it)));
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

    /** Counters since construction: per verifier, errors, timeouts, unrouted, null ground truths. */
    public Map<String, Long> counters() {
        Map<String, Long> m = new TreeMap<>();
        counts.forEach((k, v) -> m.put("verifier/" + k, v.get()));
        m.put("errors", errors.get());
        m.put("timeouts", timeouts.get());
        m.put("unrouted", unrouted.get());
        m.put("null_ground_truth", nullTruth.get());
        return m;
    }

    @Override
    public void close() { pool.shutdownNow(); }
}
