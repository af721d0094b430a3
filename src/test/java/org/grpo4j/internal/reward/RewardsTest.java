package org.grpo4j.internal.reward;

import org.grpo4j.reward.Compat;
import org.grpo4j.reward.RewardFunction;
import org.grpo4j.reward.Rewards;
import static org.junit.jupiter.api.Assertions.*;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/** Routing, the RewardFunction seam, counters, and robustness against hostile responses. */
class RewardsTest {

    @Test
    void routingIsCaseInsensitiveAndUnknownsScoreZero() {
        try (Rewards r = new Rewards()) {
            assertEquals(10.0, r.score(new Rewards.Item("42", "42", "GSM8K", null)).reward());
            assertEquals(10.0, r.score(new Rewards.Item("\\boxed{2}", "2", "Math", null)).reward());
            Rewards.Result x = r.score(new Rewards.Item("42", "42", "flan", null));
            assertEquals(0.0, x.reward());
            assertEquals("none", x.verifier());
            Rewards.Result y = r.score(new Rewards.Item("42", null, "gsm8k", null));
            assertEquals(0.0, y.reward());
            assertEquals(1L, r.counters().get("unrouted"));
            assertEquals(1L, r.counters().get("null_ground_truth"));
        }
    }

    @Test
    void usersPlugInTheirOwnFunctionsAndExceptionsScoreZero() {
        try (Rewards r = new Rewards()) {
            r.register("MyTask", (resp, truth, row) -> RewardFunction.Score.of(resp.length() == Integer.parseInt(truth) ? 1.5 : 0));
            r.register("broken", (resp, truth, row) -> { throw new IllegalStateException("boom"); });
            assertEquals(1.5, r.score(new Rewards.Item("abc", "3", "mytask", null)).reward());
            Rewards.Result b = r.score(new Rewards.Item("abc", "3", "broken", null));
            assertEquals(0.0, b.reward());
            assertTrue(b.error().contains("boom"), b.error());
            Rewards.Result nf = r.score(new Rewards.Item("abc", "x", "mytask", null)); // NumberFormatException inside
            assertEquals(0.0, nf.reward());
            assertNotNull(nf.error());
            assertEquals(2L, r.counters().get("errors"));
            // an unknown IFEval function or a bad argument is an error, not a crash
            Rewards.Result e = r.score(new Rewards.Item("x", "{\"func_name\": \"no_such_check\"}", "ifeval", null));
            assertTrue(e.error().contains("no_such_check"), String.valueOf(e));
            e = r.score(new Rewards.Item("x", "{\"func_name\": \"verify_letter_frequency\", \"letter\": \"ab\", \"N\": 1}", "ifeval", null));
            assertTrue(e.error().contains("single character"), String.valueOf(e));
        }
    }

    @Test
    void parallelScoringKeepsInputOrder() {
        try (Rewards r = new Rewards(Compat.DEFAULT, 10, 5, 4)) {
            List<Rewards.Item> items = new ArrayList<>();
            for (int i = 0; i < 500; i++) items.add(new Rewards.Item("answer " + i, String.valueOf(i % 3 == 0 ? i : -1), "gsm8k", null));
            List<Rewards.Result> res = r.scoreAll(items);
            for (int i = 0; i < 500; i++) assertEquals(i % 3 == 0 ? 10.0 : 0.0, res.get(i).reward(), "item " + i);
        }
    }

    /**
     * Scores one hostile item and checks that it returns with reward 0. 120 s guards against a hang; it is not a timing.
     */
    static Rewards.Result hostile(Rewards r, String response, String truth, String dataset) {
        Rewards.Result x = assertTimeoutPreemptively(Duration.ofSeconds(120), () -> r.score(new Rewards.Item(response, truth, dataset, null)),
                dataset + ": the score did not return");
        assertEquals(0.0, x.reward(), String.valueOf(x));
        return x;
    }

    /** Minerva's '$' substitution in one pass gives what the regex gives, on every short string of its characters. */
    @Test
    void theDollarPairPassEqualsTheRegex() {
        java.util.SplittableRandom rnd = new java.util.SplittableRandom(3);
        char[] alphabet = {'a', '$', '$', '\n', '\r', 'x', '\\'};
        for (int t = 0; t < 50_000; t++) {
            StringBuilder b = new StringBuilder();
            for (int i = 0, len = rnd.nextInt(25); i < len; i++) b.append(alphabet[rnd.nextInt(alphabet.length)]);
            String s = b.toString();
            assertEquals(MathVerifier.keepFirstDollarPairByRegex(s), MathVerifier.keepFirstDollarPair(s), () -> "on " + s.replace("\n", "\\n"));
        }
    }

    /**
     * The verifiers' own work on hostile responses is bounded: each one finishes, its verdict reached, under a time
     * limit of 60 s that a linear pass over a megabyte never comes near (milliseconds) and that catastrophic regex
     * backtracking on these inputs would not leave (a verifier that only the time limit stops scores 0 too, so the
     * score alone could not tell: the timeout flag does).
     */
    @Test
    void adversarialResponsesFinishWithinTheLimit() {
        try (Rewards r = new Rewards(Compat.DEFAULT, 10, 60.0, 2)) {
            java.util.function.Consumer<Rewards.Result> finished = x -> assertFalse(x.timedOut(), "cut off by the time limit: " + x);
            String braces = "\\boxed{" + "{".repeat(500_000) + "}".repeat(500_000) + "}";
            finished.accept(hostile(r, braces, "1", "math"));
            // catastrophic backtracking bait for the Minerva regex: many starts, no end
            finished.accept(hostile(r, "Final Answer: The final answer is ".repeat(30_000), "1", "math"));
            finished.accept(hostile(r, "1,".repeat(400_000), "7", "gsm8k"));
            finished.accept(hostile(r, "The answer is $1$ and\n$" + "x".repeat(1 << 20) + "\n$", "1", "math")); // ('$'s on other lines)
            finished.accept(hostile(r, "a. ".repeat(300_000), "{\"func_name\": \"verify_sentence_constraint\", \"N\": 2, \"quantifier\": \"at most\"}", "ifeval"));
            finished.accept(hostile(r, "word ".repeat(300_000), "{\"func_name\": \"verify_keyword_frequency\", \"word\": \"x\", \"N\": 1}", "ifeval"));
            finished.accept(hostile(r, "[" .repeat(500_000), "{\"func_name\": \"validate_json_format\"}", "ifeval"));
            // invalid UTF-16: lone surrogates
            finished.accept(hostile(r, "\uD800\uDBFF abc \uDC00 12", "13", "gsm8k"));
            finished.accept(hostile(r, "\\boxed{\uD800}", "1", "math"));
            finished.accept(hostile(r, "\uDFFF", "{\"func_name\": \"validate_title\"}", "ifeval"));
        }
        try (Rewards r = new Rewards(Compat.DEFAULT, 10, 0.5, 2)) {
            // a genuinely slow user function is cut off and counted as a timeout
            r.register("slow", (resp, truth, row) -> {
                long end = System.nanoTime() + 10_000_000_000L;
                while (System.nanoTime() < end) if (Thread.currentThread().isInterrupted()) throw new InterruptedException();
                return RewardFunction.Score.of(1);
            });
            Rewards.Result x = hostile(r, "x", "y", "slow");
            assertTrue(x.timedOut(), String.valueOf(x));
            assertEquals(1L, r.counters().get("timeouts"));
        }
    }

    /**
     * The time limit holds for any reward function (API review): a call that returns past it scores 0 (it scored 1),
     * and a call that ignores the interrupt keeps its worker, which is replaced so that the items behind it still run
     * (with one worker they all timed out unscored). The waits use latches, not sleeps, where the order matters.
     */
    @Test
    void aJavaRewardFunctionPastItsTimeLimitScoresZeroAndAStuckOneDoesNotBlockTheOthers() throws Exception {
        try (Rewards r = new Rewards(Compat.DEFAULT, 10, 0.2, 1)) {
            r.register("late", (resp, truth, row) -> {
                long end = System.nanoTime() + 400_000_000L; // returns, but after its 0.2 s
                while (System.nanoTime() < end) Thread.onSpinWait();
                return RewardFunction.Score.of(1);
            });
            Rewards.Result late = r.score(new Rewards.Item("x", "y", "late", null));
            assertTrue(late.timedOut() && late.reward() == 0, String.valueOf(late));
            assertEquals(1L, r.counters().get("timeouts"));
            assertEquals(0L, r.counters().get("errors"));

            java.util.concurrent.CountDownLatch release = new java.util.concurrent.CountDownLatch(1);
            r.register("stuck", (resp, truth, row) -> {
                while (true) {
                    try {
                        release.await(); // ignores interrupts until released
                        return RewardFunction.Score.of(1);
                    } catch (InterruptedException e) {
                        // (a function that does not stop when cancelled)
                    }
                }
            });
            r.register("quick", (resp, truth, row) -> RewardFunction.Score.of(2));
            List<Rewards.Result> res = r.scoreAll(List.of(new Rewards.Item("x", "y", "stuck", null), new Rewards.Item("x", "y", "quick", null),
                    new Rewards.Item("x", "y", "quick", null)));
            release.countDown();
            assertTrue(res.get(0).timedOut(), String.valueOf(res.get(0)));
            assertEquals(2.0, res.get(1).reward(), String.valueOf(res.get(1)));
            assertEquals(2.0, res.get(2).reward(), String.valueOf(res.get(2)));
        }
        assertThrows(IllegalArgumentException.class, () -> new Rewards(Compat.DEFAULT, 10, 1e10, 1), "a limit past a day would overflow the deadlines");
    }

    /**
     * A caller's thread scoring two items of a function that waits for {@code release} (with one worker: the second
     * queued), started once the first call is in; what it threw and whether its interrupt status was set after.
     */
    record BlockedCaller(Thread thread, java.util.concurrent.CountDownLatch release, java.util.concurrent.atomic.AtomicReference<Throwable> thrown,
                         java.util.concurrent.atomic.AtomicBoolean interruptedAfter) {
        static BlockedCaller start(Rewards r) throws InterruptedException {
            java.util.concurrent.CountDownLatch entered = new java.util.concurrent.CountDownLatch(1), release = new java.util.concurrent.CountDownLatch(1);
            r.register("wait", (resp, truth, row) -> {
                entered.countDown();
                release.await();
                return RewardFunction.Score.of(1);
            });
            java.util.concurrent.atomic.AtomicReference<Throwable> thrown = new java.util.concurrent.atomic.AtomicReference<>();
            java.util.concurrent.atomic.AtomicBoolean interruptedAfter = new java.util.concurrent.atomic.AtomicBoolean();
            Thread caller = new Thread(() -> {
                try {
                    r.scoreAll(List.of(new Rewards.Item("x", "y", "wait", null), new Rewards.Item("x", "y", "wait", null)));
                } catch (Throwable t) {
                    thrown.set(t);
                }
                interruptedAfter.set(Thread.currentThread().isInterrupted());
            });
            caller.start();
            entered.await();
            return new BlockedCaller(caller, release, thrown, interruptedAfter);
        }
    }

    /** close() while a batch is scoring: the waiting caller gets "rewards are closed", it does not wait for good. */
    @Test
    void closingWhileScoringFailsTheWaitingCaller() throws Exception {
        Rewards r = new Rewards(Compat.DEFAULT, 10, 5, 1);
        BlockedCaller c = BlockedCaller.start(r);
        r.close();
        assertTimeoutPreemptively(java.time.Duration.ofMinutes(1), () -> c.thread().join());
        c.release().countDown();
        Throwable thrown = c.thrown().get();
        assertTrue(thrown instanceof IllegalStateException && thrown.getMessage().contains("rewards are closed"), String.valueOf(thrown));
    }

    /** An interrupted caller gets no partial batch (it was scored 0 as "interrupted" and trained on). */
    @Test
    void anInterruptedCallerGetsNoPartialBatch() throws Exception {
        try (Rewards r = new Rewards(Compat.DEFAULT, 10, 5, 1)) {
            BlockedCaller c = BlockedCaller.start(r);
            c.thread().interrupt();
            c.thread().join();
            c.release().countDown();
            assertTrue(c.thrown().get() instanceof java.util.concurrent.CancellationException, String.valueOf(c.thrown().get()));
            assertTrue(c.interruptedAfter().get(), "the caller's interrupt status is kept");
        }
    }

    @Test
    void latexEquivalenceBasics() {
        assertTrue(LatexExpr.equivalent("\\frac{x^2-1}{x-1}", "x+1", true));
        assertTrue(LatexExpr.equivalent("2^{10}", "1024", true));
        assertTrue(LatexExpr.equivalent("3!", "6", true));
        assertTrue(LatexExpr.equivalent("|{-4}|", "4", true));
        assertFalse(LatexExpr.equivalent("x = 3", "3", true));
        assertFalse(LatexExpr.equivalent("\\infty", "\\infty", true));
        assertFalse(LatexExpr.equivalent("(1,2)", "(2,1)", true));
        assertTrue(LatexExpr.equivalent("[1, \\frac{1}{2}]", "(1, 0.5)", true));
        // the reference's sympy reads the longest parsable prefix: a list compares by its first element (3f37c29)
        assertTrue(LatexExpr.equivalent("1, 2", "1, 5", false), "sympy's prefix: the first elements");
        assertFalse(LatexExpr.equivalent("(1, 2)", "(1, 2)", false), "a comma inside parentheses ends no prefix: unparsable");
        assertTrue(LatexExpr.equivalent("40,320", "40320", false), "sympy's NUMBER takes thousands separators");
        assertTrue(LatexExpr.equivalent("\\frac{1}{2}.", "0.5", false), "trailing junk after the prefix");
        assertFalse(LatexExpr.equivalent("\\frac{1}{2}.", "0.5", true), "the default reads the whole answer");
        assertTrue(LatexExpr.equivalent("2+(1,2)", "2", false), "an operand that cannot parse ends the prefix before its operator");
        assertTrue(LatexExpr.equivalent("3+", "3", false));
        assertTrue(LatexExpr.equivalent("1,000,000", "10^6", true), "thousands separators, default dialect");
        assertFalse(LatexExpr.equivalent("0,125", "125", true), "a leading 0 is no thousands group: a list (0, 125)");
        assertFalse(LatexExpr.equivalent("3+", "3", true));
    }
}
