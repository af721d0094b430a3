package usage;

import static org.junit.jupiter.api.Assertions.*;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentLinkedQueue;
import org.grpo4j.Backend;
import org.grpo4j.ChatMessage;
import org.grpo4j.Completion;
import org.grpo4j.Model;
import org.grpo4j.Sampling;
import org.grpo4j.reward.RewardFunction;
import org.grpo4j.reward.Rewards;
import org.grpo4j.train.GrpoConfig;
import org.grpo4j.train.GrpoTrainer;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;
import org.junit.jupiter.api.io.TempDir;

/**
 * Bad input through the public API: null arguments name the parameter, closed objects name themselves, and a reward
 * function that throws or returns NaN costs its row (scored 0, counted, reported once per step) but not the run.
 */
class ApiBadInputTest {
    @TempDir static Path tmp;
    static Path modelDir;

    @BeforeAll
    static void train() throws Exception {
        modelDir = ApiExampleTest.trainedModel(tmp);
    }

    /** {@code call} throws {@code type} whose message contains each fragment. */
    private static void refused(Class<? extends Throwable> type, Executable call, String... fragments) {
        Throwable e = assertThrows(type, call);
        for (String f : fragments) assertTrue(e.getMessage() != null && e.getMessage().contains(f), "\"" + f + "\" in: " + e.getMessage());
    }

    @Test
    void nullArgumentsNameTheParameter() throws Exception {
        try (Backend be = Backend.open("cpu"); Model m = Model.load(modelDir, be); Rewards rewards = new Rewards()) {
            Sampling s = Sampling.defaults();
            List<String> withNull = new ArrayList<>(Arrays.asList("1 + 1 =", null));
            refused(NullPointerException.class, () -> Backend.open(null), "spec");
            refused(NullPointerException.class, () -> Model.load(null, be), "dir");
            refused(NullPointerException.class, () -> Model.load(modelDir, null), "backend");
            refused(NullPointerException.class, () -> m.generate(null, s), "prompts");
            refused(NullPointerException.class, () -> m.generate(withNull, s), "prompts[1]");
            refused(NullPointerException.class, () -> m.generate(List.of("x"), (Sampling) null), "sampling");
            refused(NullPointerException.class, () -> m.generateChats(null, s), "chats");
            refused(NullPointerException.class, () -> m.generateChats(Collections.singletonList(null), s), "chats[0]");
            refused(NullPointerException.class, () -> m.generateChats(List.of(Arrays.asList(new ChatMessage("user", "hi"), null)), s), "chats[0][1]");
            refused(NullPointerException.class, () -> m.generateChats(List.of(List.of(new ChatMessage("user", "hi"))), (Sampling) null), "sampling");
            refused(NullPointerException.class, () -> m.generate(List.of("x"), (List<Sampling>) null), "samplings");
            refused(NullPointerException.class, () -> m.generate(List.of("x", "y"), Arrays.asList(s, null)), "samplings[1]");
            refused(NullPointerException.class, () -> m.generateChats(List.of(List.of(new ChatMessage("user", "hi"))), (List<Sampling>) null), "samplings");
            refused(NullPointerException.class, () -> m.renderChat(null), "chat");
            refused(NullPointerException.class, () -> m.encode(null), "text");
            refused(NullPointerException.class, () -> m.decode(null), "ids");
            refused(NullPointerException.class, () -> s.stopStrings(null), "strings");
            refused(NullPointerException.class, () -> s.stopStrings(Arrays.asList("a", null)), "strings[1]");
            refused(NullPointerException.class, () -> rewards.register(null, (r, t, row) -> RewardFunction.Score.of(1)), "dataset");
            refused(NullPointerException.class, () -> rewards.register("x", null), "function");
            refused(NullPointerException.class, () -> rewards.score(null), "item");
            refused(NullPointerException.class, () -> rewards.scoreAll(null), "items");
            refused(NullPointerException.class, () -> rewards.scoreAll(Collections.singletonList(null)), "items[0]");
            refused(NullPointerException.class, () -> new Rewards(null, 10, 5, 1), "compat");
            refused(NullPointerException.class, () -> RewardFunction.fromVerifier(null, 10), "verifier");
            refused(NullPointerException.class, () -> GrpoTrainer.builder(null), "config", "GrpoTrainer.resume");
            refused(NullPointerException.class, () -> GrpoTrainer.resume(null), "runDirectory");
            GrpoTrainer.Builder b = GrpoTrainer.builder(ApiExampleTest.tiny(1));
            refused(NullPointerException.class, () -> b.outputDir(null), "dir");
            refused(NullPointerException.class, () -> b.backend(null), "backend");
            refused(NullPointerException.class, () -> b.rewards(null), "rewards");
            refused(IllegalStateException.class, () -> b.overrides(List.of("save_freq=1")), "only a resumed run", "GrpoConfig");
            refused(NullPointerException.class, () -> GrpoTrainer.resume(Path.of("r")).overrides(null), "overrides");
            refused(NullPointerException.class, () -> GrpoTrainer.resume(Path.of("r")).overrides(Arrays.asList("save_freq=1", null)), "overrides[1]");
            refused(NullPointerException.class, () -> new GrpoConfig().withOverrides(Arrays.asList("seed=2", null), "x"), "overrides[1]");
            refused(NullPointerException.class, () -> GrpoConfig.load(null), "file");
            refused(NullPointerException.class, () -> GrpoConfig.load(Path.of("examples/tiny-arith.json"), null), "overrides");
            refused(NullPointerException.class, () -> GrpoConfig.fromJsonString(null), "json");
            refused(NullPointerException.class, () -> new Completion(null, new int[0], new float[0], Completion.FinishReason.STOP), "text");
            refused(IllegalArgumentException.class, () -> new ChatMessage(null, "x"), "without a role");
            refused(IllegalArgumentException.class, () -> new ChatMessage("user", null), "(user) without content");
            GrpoConfig noModel = new GrpoConfig();
            noModel.datasetMixerList = List.of("examples/data/tiny-arith.jsonl", "8");
            refused(IllegalArgumentException.class, () -> GrpoTrainer.builder(noModel).log(null).build(), "model_name_or_path is required");
            GrpoConfig nullField = ApiExampleTest.tiny(1);
            nullField.chatTemplateName = null;
            refused(IllegalArgumentException.class, () -> GrpoTrainer.builder(nullField).log(null).build(), "chat_template_name must not be null");
            // lists set to null, in code or as JSON null, are refused by name (they were NullPointerExceptions)
            GrpoConfig nullStops = ApiExampleTest.tiny(1);
            nullStops.stopStrings = null;
            refused(IllegalArgumentException.class, () -> GrpoTrainer.builder(nullStops).log(null).build(), "stop_strings must not be null");
            refused(IllegalArgumentException.class, () -> GrpoConfig.fromJsonString("{\"model_name_or_path\": \"init:tiny\", \"dataset_mixer_list\":"
                    + " [\"d.jsonl\", \"1.0\"], \"stop_strings\": null}"), "stop_strings must not be null");
            refused(IllegalArgumentException.class, () -> GrpoConfig.fromJsonString("{\"model_name_or_path\": \"init:tiny\", \"dataset_mixer_list\":"
                    + " [\"d.jsonl\", \"1.0\"], \"dataset_mixer_list_splits\": [null]}"), "dataset_mixer_list_splits must not hold null");
        }
    }

    @Test
    void badValuesAreRefusedByName() throws Exception {
        try (Backend be = Backend.open("cpu"); Model m = Model.load(modelDir, be)) {
            refused(IllegalArgumentException.class, () -> Backend.open("tpu"), "unknown backend \"tpu\"");
            // an earlier run's directory: how to go on, in the API's words (the CLI says --resume, --overwrite)
            Path earlier = java.nio.file.Files.createDirectories(tmp.resolve("earlier-run"));
            java.nio.file.Files.writeString(earlier.resolve("metrics.jsonl"), "{}\n");
            refused(IllegalArgumentException.class, () -> GrpoTrainer.builder(ApiExampleTest.tiny(1)).backend(be).outputDir(earlier).log(null).build(),
                    "holds an earlier run", "continue it with GrpoTrainer.resume(" + earlier + "), replace it with Builder.overwrite(true)");
            refused(NoSuchFileException.class, () -> Model.load(tmp.resolve("nowhere"), be), "nowhere", "no such model directory");
            refused(IllegalArgumentException.class, () -> Model.load(modelDir, be, "chatml"), "unknown chat template \"chatml\"");
            refused(IllegalArgumentException.class, () -> m.generate(List.of(""), Sampling.defaults()), "prompts[0] is empty");
            refused(IllegalArgumentException.class, () -> m.generateChats(List.of(List.of()), Sampling.defaults()), "chats[0] is empty");
            refused(IllegalArgumentException.class, () -> m.generateChats(List.of(List.of(new ChatMessage("User", "hi"))), Sampling.defaults()),
                    "chats[0][0].role \"User\" is not one of system, user, assistant");
            refused(IllegalArgumentException.class, () -> m.generate(List.of("x", "y"), List.of(Sampling.defaults())), "1 samplings for 2 prompts: give one per prompt");
            refused(IllegalArgumentException.class, () -> m.generateChats(List.of(List.of(new ChatMessage("user", "hi"))), List.of()), "0 samplings for 1 chats: give one per chat");
            refused(IllegalArgumentException.class, () -> m.generate(List.of("x", "y"), List.of(Sampling.defaults(), Sampling.defaults().maxTokens(1 << 20))),
                    "prompts[1]", "maxTokens 1048576 exceeds the model's context");
            refused(IllegalArgumentException.class, () -> m.decode(new int[] {3, -1}), "ids[1] = -1 is outside the vocabulary");
            refused(IllegalArgumentException.class, () -> Sampling.defaults().samples(0), "samples must be >= 1, got 0");
            refused(IllegalArgumentException.class, () -> Sampling.defaults().maxTokens(0), "maxTokens must be >= 1");
            refused(IllegalArgumentException.class, () -> Sampling.defaults().temperature(Double.NaN), "temperature must be a finite number >= 0, got NaN");
            refused(IllegalArgumentException.class, () -> Sampling.defaults().topP(0), "topP must be in (0, 1]");
            refused(IllegalArgumentException.class, () -> Sampling.defaults().topK(-1), "topK must be >= 0");
            // values that float sampling would change (1e39 infinite, 1e-46 zero: greedy), and a topK past the vocabulary
            refused(IllegalArgumentException.class, () -> Sampling.defaults().temperature(1e39), "temperature 1.0E39 is outside float's range");
            refused(IllegalArgumentException.class, () -> Sampling.defaults().temperature(1e-46), "temperature 1.0E-46 is outside float's range");
            refused(IllegalArgumentException.class, () -> Sampling.defaults().topP(1e-46), "topP must be in (0, 1] (as a float)");
            refused(IllegalArgumentException.class, () -> m.generate(List.of("x"), Sampling.defaults().topK(1 << 20)),
                    "samplings[0].topK 1048576 exceeds the vocabulary of");
            refused(IllegalArgumentException.class, () -> Sampling.defaults().stopStrings(List.of("")), "strings[0] is empty");
            refused(IllegalArgumentException.class, () -> new Rewards().register(" ", (r, t, row) -> RewardFunction.Score.of(1)), "dataset is blank");
            refused(IllegalArgumentException.class, () -> new Rewards(org.grpo4j.reward.Compat.DEFAULT, 10, Double.NaN, 1), "verifier timeout");
        }
    }

    @Test
    void closedObjectsSayWhatIsClosed() throws Exception {
        Backend be = Backend.open("cpu");
        Model m = Model.load(modelDir, be);
        m.close();
        m.close(); // idempotent
        refused(IllegalStateException.class, () -> m.generate(List.of("1 + 1 ="), Sampling.defaults()), "model " + modelDir + " is closed");
        refused(IllegalStateException.class, () -> m.encode("x"), "model " + modelDir + " is closed");

        Model m2 = Model.load(modelDir, be);
        be.close(); // closes the models loaded on it
        assertTrue(be.isClosed());
        refused(IllegalStateException.class, () -> m2.generate(List.of("1 + 1 ="), Sampling.defaults()), "model " + modelDir + " is closed");
        refused(IllegalStateException.class, () -> Model.load(modelDir, be), "backend cpu is closed");
        refused(IllegalStateException.class, () -> GrpoTrainer.builder(ApiExampleTest.tiny(1)).backend(be).outputDir(tmp.resolve("never1")).log(null).build(),
                "backend cpu is closed");
        be.close(); // idempotent

        Rewards rewards = new Rewards();
        rewards.close();
        assertTrue(rewards.isClosed());
        refused(IllegalStateException.class, () -> rewards.score(new Rewards.Item("4", "4", "gsm8k", null)), "rewards are closed");
        refused(IllegalStateException.class, () -> rewards.register("x", (r, t, row) -> RewardFunction.Score.of(1)), "rewards are closed");
        refused(IllegalStateException.class, () -> GrpoTrainer.builder(ApiExampleTest.tiny(1)).rewards(rewards).outputDir(tmp.resolve("never2")).log(null).build(),
                "rewards are closed");

        GrpoTrainer t = GrpoTrainer.builder(ApiExampleTest.tiny(1)).outputDir(tmp.resolve("closed-trainer")).log(null).build();
        t.close();
        t.close(); // idempotent
        refused(IllegalStateException.class, t::run, "trainer is closed");
    }

    /** A listener may close the trainer: the run stops at that step boundary (checkpointed) and frees everything. */
    @Test
    void closingFromAListenerStopsTheRun() throws Exception {
        GrpoTrainer t = GrpoTrainer.builder(ApiExampleTest.tiny(3)).outputDir(tmp.resolve("close-in-listener")).log(null).build();
        GrpoTrainer.Result r = t.run(new GrpoTrainer.Listener() {
            @Override
            public void onStep(int step, Map<String, Double> m) { t.close(); }
        });
        assertTrue(r.cancelled());
        assertEquals(1, r.lastStep());
        assertTrue(java.nio.file.Files.isDirectory(r.outputDir().resolve("checkpoints/step_1/model")), "the stop wrote its checkpoint");
        refused(IllegalStateException.class, t::run, "trainer is closed");
        t.close();
    }

    /**
     * At world_size 2 the warm-up's progress comes from the first rank's thread: close() there must not wait for the
     * run (which waits for that rank), but cancel it like a close from any callback (it hung before).
     */
    @Test
    void closingFromTheWarmUpListenerOfTwoRanksStopsTheRun() throws Exception {
        GrpoConfig cfg = ApiExampleTest.tiny(3);
        cfg.worldSize = 2;
        cfg.sftWarmup.steps = 3;
        GrpoTrainer t = GrpoTrainer.builder(cfg).outputDir(tmp.resolve("close-in-warm-up")).log(null).build();
        java.util.List<Integer> seen = new java.util.ArrayList<>();
        GrpoTrainer.Result r = assertTimeoutPreemptively(java.time.Duration.ofMinutes(5), () -> t.run(new GrpoTrainer.Listener() {
            @Override
            public void onSftStep(int step, int steps, double loss) {
                seen.add(step);
                t.close();
            }
        }), "run() returns after close() from the warm-up's callback");
        assertTrue(r.cancelled());
        assertEquals(java.util.List.of(1), seen, "the warm-up stopped at its first step");
        refused(IllegalStateException.class, t::run, "trainer is closed");
    }

    /**
     * A listener that throws on the last step ends run() before that step's checkpoint; run() again writes it (it
     * returned at once and the trained policy was never saved), and the metrics a Result holds cannot be changed.
     */
    @Test
    void aListenerFailingOnTheLastStepLeavesItsCheckpointToTheNextRun() throws Exception {
        GrpoTrainer t = GrpoTrainer.builder(ApiExampleTest.tiny(2)).outputDir(tmp.resolve("listener-throws")).log(null).build();
        refused(IllegalStateException.class, () -> t.run(new GrpoTrainer.Listener() {
            @Override
            public void onStep(int step, Map<String, Double> m) { if (step == 2) throw new IllegalStateException("the application's listener failed"); }
        }), "the application's listener failed");
        Path step2 = tmp.resolve("listener-throws/checkpoints/step_2/model");
        assertFalse(java.nio.file.Files.exists(step2));
        GrpoTrainer.Result r = t.run();
        assertEquals(2, r.lastStep());
        assertTrue(java.nio.file.Files.isDirectory(step2), "the second run() wrote step 2's checkpoint");
        assertThrows(UnsupportedOperationException.class, () -> r.metrics().get(0).put("injected", 42.0));
        t.close();
    }

    /** The same at a save_freq step before the last: the next run() writes the missing checkpoint before going on. */
    @Test
    void aListenerFailingOnASaveStepLeavesItsCheckpointToTheNextRun() throws Exception {
        GrpoConfig cfg = ApiExampleTest.tiny(2);
        cfg.saveFreq = 1;
        java.util.List<Integer> saved = new java.util.ArrayList<>();
        try (GrpoTrainer t = GrpoTrainer.builder(cfg).outputDir(tmp.resolve("listener-throws-at-save")).log(null).build()) {
            refused(IllegalStateException.class, () -> t.run(new GrpoTrainer.Listener() {
                @Override
                public void onStep(int step, Map<String, Double> m) { if (step == 1) throw new IllegalStateException("the application's listener failed"); }
            }), "the application's listener failed");
            Path step1 = tmp.resolve("listener-throws-at-save/checkpoints/step_1/model");
            assertFalse(java.nio.file.Files.exists(step1));
            GrpoTrainer.Result r = t.run(new GrpoTrainer.Listener() {
                @Override
                public void onCheckpoint(int step, Path dir) { saved.add(step); }
            });
            assertEquals(2, r.lastStep());
            assertTrue(java.nio.file.Files.isDirectory(step1), "the second run() wrote step 1's checkpoint");
            assertEquals(List.of(1, 2), saved);
        }
    }

    /**
     * Interrupting the thread in run() while a reward function blocks: run() fails, and a second run() is refused with a
     * message saying how to go on (it trained on from a step whose rewards were never scored, or failed on an aborted
     * communicator); at world_size 2, close() returns only once the rank threads have stopped (they ran on, daemon
     * threads, while close freed their states).
     */
    @Test
    void anInterruptedRunIsNotContinuedAndCloseWaitsForItsRanks() throws Exception {
        for (int world : new int[] {1, 2}) {
            GrpoConfig cfg = ApiExampleTest.tiny(2);
            cfg.worldSize = world;
            java.util.concurrent.CountDownLatch entered = new java.util.concurrent.CountDownLatch(1), never = new java.util.concurrent.CountDownLatch(1);
            try (Rewards rewards = new Rewards()) {
                rewards.register("gsm8k", (response, truth, row) -> {
                    entered.countDown();
                    never.await();
                    return RewardFunction.Score.of(1);
                });
                java.util.Set<Thread> earlier = Thread.getAllStackTraces().keySet(); // (other tests' threads)
                GrpoTrainer t = GrpoTrainer.builder(cfg).rewards(rewards).outputDir(tmp.resolve("interrupted-" + world)).log(null).build();
                java.util.concurrent.atomic.AtomicReference<Throwable> failure = new java.util.concurrent.atomic.AtomicReference<>();
                Thread runner = new Thread(() -> {
                    try {
                        t.run();
                    } catch (Throwable e) {
                        failure.set(e);
                    }
                }, "runner-" + world);
                runner.start();
                entered.await();
                List<Thread> ranks = new ArrayList<>();
                for (Thread th : Thread.getAllStackTraces().keySet()) if (th.getName().startsWith("grpo4j-rank-") && !earlier.contains(th)) ranks.add(th);
                assertEquals(world == 1 ? 0 : 2, ranks.size(), "the rank threads: " + ranks);
                runner.interrupt();
                runner.join();
                assertNotNull(failure.get(), "run() failed at the interrupt");
                refused(IllegalStateException.class, t::run, "an earlier run() failed in the ranks' work after step 0",
                        "close it and resume the run from its last checkpoint", "checkpoints" + java.io.File.separator + "step_0");
                t.close();
                for (Thread th : ranks) assertFalse(th.isAlive(), th.getName() + " still runs after close()");
            }
        }
    }

    /**
     * A warm-up listener that throws leaves the warm-up half done, before the first checkpoint: run() again is refused
     * and says to start the run again (there is nothing to resume).
     */
    @Test
    void aWarmUpListenerFailingLeavesNothingToResumeAndSaysSo() throws Exception {
        GrpoConfig cfg = ApiExampleTest.tiny(1);
        cfg.sftWarmup.steps = 2;
        try (GrpoTrainer t = GrpoTrainer.builder(cfg).outputDir(tmp.resolve("warm-up-listener-throws")).log(null).build()) {
            refused(IllegalStateException.class, () -> t.run(new GrpoTrainer.Listener() {
                @Override
                public void onSftStep(int step, int steps, double loss) { throw new IllegalStateException("the application's listener failed"); }
            }), "the application's listener failed");
            refused(IllegalStateException.class, t::run, "an earlier run() failed in the ranks' work after step 0 (the application's listener failed)",
                    "start the run again (no checkpoint was written yet");
        }
    }

    /** Closing another, idle trainer from a callback closes it now (the callback marker is per trainer). */
    @Test
    void closingAnotherTrainerFromACallbackClosesIt() throws Exception {
        GrpoTrainer b = GrpoTrainer.builder(ApiExampleTest.tiny(1)).outputDir(tmp.resolve("idle-b")).log(null).build();
        try (GrpoTrainer a = GrpoTrainer.builder(ApiExampleTest.tiny(1)).outputDir(tmp.resolve("running-a")).log(null).build()) {
            a.run(new GrpoTrainer.Listener() {
                @Override
                public void onStep(int step, Map<String, Double> m) { b.close(); }
            });
        }
        refused(IllegalStateException.class, b::run, "trainer is closed");
        // its run directory's lock was released: a new trainer may use the directory (the lock was held for good before)
        GrpoTrainer again = GrpoTrainer.builder(ApiExampleTest.tiny(1)).outputDir(tmp.resolve("idle-b")).overwrite(true).log(null).build();
        again.close();
    }

    /** isClosed() answers while another thread holds the backend (a run holds its lock throughout; it blocked). */
    @Test
    void isClosedDoesNotWaitForTheBackendsLock() throws Exception {
        try (Backend be = Backend.open("cpu")) {
            java.util.concurrent.atomic.AtomicReference<Boolean> seen = new java.util.concurrent.atomic.AtomicReference<>();
            synchronized (be) {
                Thread t = new Thread(() -> seen.set(be.isClosed()));
                t.start();
                assertTimeoutPreemptively(java.time.Duration.ofMinutes(1), () -> t.join());
            }
            assertEquals(Boolean.FALSE, seen.get());
        }
    }

    /** A backend given to the builder serves world_size 1; at 2 it was ignored without a word. */
    @Test
    void aGivenBackendWithTwoRanksIsRefused() throws Exception {
        GrpoConfig cfg = ApiExampleTest.tiny(1);
        cfg.worldSize = 2;
        try (Backend be = Backend.open("cpu")) {
            refused(IllegalArgumentException.class, () -> GrpoTrainer.builder(cfg).backend(be).outputDir(tmp.resolve("never3")).log(null).build(),
                    "world_size 2 with a backend given to the builder");
        }
    }

    /** close() from another thread during a run cancels it, waits for the step boundary, then frees everything. */
    @Test
    void closingFromAnotherThreadWaitsForTheRun() throws Exception {
        GrpoTrainer t = GrpoTrainer.builder(ApiExampleTest.tiny(3)).outputDir(tmp.resolve("close-from-thread")).log(null).build();
        java.util.concurrent.CountDownLatch inStep = new java.util.concurrent.CountDownLatch(1), release = new java.util.concurrent.CountDownLatch(1);
        Thread closer = new Thread(t::close, "closer");
        java.util.concurrent.atomic.AtomicReference<GrpoTrainer.Result> result = new java.util.concurrent.atomic.AtomicReference<>();
        Thread runner = new Thread(() -> {
            try {
                result.set(t.run(new GrpoTrainer.Listener() {
                    @Override
                    public void onStep(int step, Map<String, Double> m) {
                        inStep.countDown();
                        try {
                            release.await();
                        } catch (InterruptedException e) {
                            Thread.currentThread().interrupt();
                        }
                    }
                }));
            } catch (java.io.IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        }, "runner");
        runner.start();
        inStep.await();
        closer.start();
        while (closer.getState() != Thread.State.BLOCKED) Thread.onSpinWait(); // cancelled, now waiting for the run
        release.countDown();
        runner.join();
        closer.join();
        assertTrue(result.get().cancelled());
        assertEquals(1, result.get().lastStep(), "the run stopped at the boundary after the close");
        refused(IllegalStateException.class, t::run, "trainer is closed");
    }

    /** A backend given to the trainer is shared with a model: both work, in turns, and the trainer leaves it open. */
    @Test
    void aBackendSharedByATrainerAndAModel() throws Exception {
        try (Backend be = Backend.open("cpu"); Model m = Model.load(modelDir, be)) {
            try (GrpoTrainer t = GrpoTrainer.builder(ApiExampleTest.tiny(1)).backend(be).outputDir(tmp.resolve("shared")).log(null).build()) {
                assertEquals(1, t.run().lastStep());
            }
            assertFalse(be.isClosed());
            assertEquals(1, m.generate(List.of("1 + 1 ="), Sampling.defaults().maxTokens(2)).get(0).size());
        }
    }

    /**
     * A reward function that generates with a model on the backend its run holds fails at once (the run waits for the
     * reward, so the call waited for the lock until the reward's 5 s limit, every row); the tokenizer calls work there,
     * and outside a run the same function generates.
     */
    @Test
    void aRewardFunctionCannotGenerateOnTheBackendItsRunHoldsButCanEncode() throws Exception {
        java.util.concurrent.atomic.AtomicInteger encoded = new java.util.concurrent.atomic.AtomicInteger();
        ConcurrentLinkedQueue<String> refusals = new ConcurrentLinkedQueue<>();
        try (Backend be = Backend.open("cpu"); Model m = Model.load(modelDir, be); Rewards rewards = new Rewards()) {
            rewards.register("gsm8k", (response, truth, row) -> {
                if (m.encode(response + "!").length > 0 && !m.decode(m.encode("2")).isEmpty()) encoded.incrementAndGet();
                try {
                    m.generate(List.of("1 + 1 ="), Sampling.defaults().maxTokens(1));
                } catch (IllegalStateException e) {
                    refusals.add(e.getMessage());
                }
                return RewardFunction.Score.of(1);
            });
            try (GrpoTrainer t = GrpoTrainer.builder(ApiExampleTest.tiny(1)).backend(be).rewards(rewards).outputDir(tmp.resolve("reward-model"))
                    .log(null).build()) {
                GrpoTrainer.Result r = t.run();
                assertEquals(0.0, r.metrics().get(0).get("rewards/timeouts"), "no reward waited for the backend");
                assertEquals(0.0, r.metrics().get(0).get("rewards/errors"));
            }
            assertEquals(16, encoded.get(), "every row's reward encoded and decoded");
            assertEquals(16, refusals.size());
            assertTrue(refusals.peek().startsWith("generate on backend cpu from a reward function while a GrpoTrainer run holds that backend"),
                    refusals.peek());
            refusals.clear();
            assertEquals(1.0, rewards.score(new Rewards.Item("2", "2", "gsm8k", null)).reward());
            assertEquals(List.of(), List.copyOf(refusals), "with no run holding the backend the reward function generates");
        }
    }

    @Test
    void rewardsThatThrowOrReturnNaNScoreZero() {
        try (Rewards rewards = new Rewards()) {
            rewards.register("boom", (r, t, row) -> { throw new IllegalStateException("no oracle for " + t); });
            rewards.register("nan", (r, t, row) -> RewardFunction.Score.of(Double.NaN));
            rewards.register("inf", (r, t, row) -> RewardFunction.Score.of(Double.POSITIVE_INFINITY));
            rewards.register("null", (r, t, row) -> null);
            rewards.register("ok", (r, t, row) -> RewardFunction.Score.of(2.5));
            List<Rewards.Result> res = rewards.scoreAll(List.of(new Rewards.Item("a", "7", "boom", null), new Rewards.Item("a", "7", "nan", null),
                    new Rewards.Item("a", "7", "inf", null), new Rewards.Item("a", "7", "null", null), new Rewards.Item("a", "7", "ok", null)));
            assertEquals(List.of(0.0, 0.0, 0.0, 0.0, 2.5), res.stream().map(Rewards.Result::reward).toList());
            assertEquals("verifier failed: no oracle for 7", res.get(0).error());
            assertEquals("reward function returned NaN", res.get(1).error());
            assertEquals("reward function returned Infinity", res.get(2).error());
            assertEquals("reward function returned null", res.get(3).error());
            assertNull(res.get(4).error());
            assertEquals(4L, rewards.counters().get("errors"));
        }
    }

    /**
     * During training a reward that throws for some rows and returns NaN for others: those rows score 0 (the step's
     * mean score counts only the rows that returned 1), the errors are counted in the metrics, reported once per step
     * to the log and the listener, and every step runs.
     */
    @Test
    void failingRewardsDuringTrainingCostTheirRowsOnly() throws Exception {
        GrpoConfig cfg = ApiExampleTest.tiny(3);
        cfg.nonStopPenalty = false; // so that every row's score is the reward function's
        ConcurrentLinkedQueue<Integer> outcomes = new ConcurrentLinkedQueue<>(); // 0 threw, 1 NaN, 2 scored 1
        List<int[]> perStep = new ArrayList<>(); // {threw + NaN, scored 1, rows}
        List<Object[]> reported = new ArrayList<>();
        List<Map<String, Double>> metrics = new ArrayList<>();
        ByteArrayOutputStream log = new ByteArrayOutputStream();
        try (Rewards rewards = new Rewards()) {
            rewards.register("gsm8k", (response, truth, row) -> {
                int kind = Math.floorMod(response.hashCode(), 3);
                outcomes.add(kind);
                if (kind == 0) throw new ArithmeticException("cannot parse \"" + response + "\"");
                return RewardFunction.Score.of(kind == 1 ? Double.NaN : 1.0);
            });
            try (GrpoTrainer t = GrpoTrainer.builder(cfg).outputDir(tmp.resolve("failing")).rewards(rewards)
                    .log(new PrintStream(log, true, StandardCharsets.UTF_8)).build()) {
                GrpoTrainer.Result r = t.run(new GrpoTrainer.Listener() {
                    @Override
                    public void onRewardErrors(int step, int errors, String example) { reported.add(new Object[] {step, errors, example}); }

                    @Override
                    public void onStep(int step, Map<String, Double> m) {
                        int failed = 0, ok = 0, n = 0;
                        for (Integer k; (k = outcomes.poll()) != null; n++) {
                            if (k == 2) ok++;
                            else failed++;
                        }
                        perStep.add(new int[] {failed, ok, n});
                        metrics.add(m);
                    }
                });
                assertEquals(3, r.lastStep(), "every step ran");
                assertFalse(r.cancelled());
            }
        }
        String text = log.toString(StandardCharsets.UTF_8);
        int failedSteps = 0;
        for (int s = 0; s < 3; s++) {
            int[] c = perStep.get(s);
            assertEquals(16, c[2], "16 rows scored in step " + (s + 1));
            assertEquals(c[0], metrics.get(s).get("rewards/errors"), 0, "step " + (s + 1) + " counts its failed rows");
            assertEquals((double) c[1] / c[2], metrics.get(s).get("objective/scores"), 1e-9, "failed rows score 0 in step " + (s + 1));
            String line = "grpo4j: step " + (s + 1) + ": " + c[0] + " reward";
            long lines = text.lines().filter(l -> l.startsWith(line)).count();
            if (c[0] > 0) {
                failedSteps++;
                assertEquals(1, lines, "one report for step " + (s + 1) + " in:\n" + text);
            } else {
                assertEquals(0, lines);
            }
        }
        assertTrue(failedSteps > 0, "some rows failed: " + perStep.stream().map(Arrays::toString).toList());
        assertEquals(failedSteps, reported.size(), "the listener hears once per step with failures");
        for (Object[] rep : reported) {
            int step = (Integer) rep[0];
            assertEquals(perStep.get(step - 1)[0], rep[1]);
            String example = (String) rep[2];
            assertTrue(example.equals("dataset \"gsm8k\": reward function returned NaN") || example.startsWith("dataset \"gsm8k\": verifier failed: cannot parse \""), example);
            assertTrue(text.contains("(" + example + ")"), text);
        }
    }
}
