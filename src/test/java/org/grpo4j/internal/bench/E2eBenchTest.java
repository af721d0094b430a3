package org.grpo4j.internal.bench;

import static org.junit.jupiter.api.Assertions.*;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.grpo4j.internal.backend.CudaRuntime;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * E2eBench on the CPU with the tiny preset (the same code the GPU run takes, at toy shapes): exit status, the JSON
 * passes the reader, every planned row is there with finite positive figures, and the numbers agree with each other
 * (tokens/s = tokens / median, MFU from the FLOPs, roofline % from the copy bandwidth). No timing is asserted.
 */
class E2eBenchTest {
    record Run(int code, String out, String err) {}

    static Run run(String... args) {
        ByteArrayOutputStream out = new ByteArrayOutputStream(), err = new ByteArrayOutputStream();
        int code = E2eBench.run(new PrintStream(out, true), new PrintStream(err, true), args);
        return new Run(code, out.toString(), err.toString());
    }

    static void positive(E2eReport.Row r, String... figs) {
        for (String f : figs) {
            Double v = r.fig(f);
            assertNotNull(v, r.id() + " " + f);
            assertTrue(Double.isFinite(v) && v > 0, r.id() + " " + f + " = " + v);
        }
    }

    @Test
    void tinyRunWritesEveryRowWithConsistentFigures(@TempDir Path tmp) throws Exception {
        Path json = tmp.resolve("ours.json");
        Run r = run("cpu", "--preset", "tiny", "--json", json.toString());
        assertEquals(0, r.code(), r.err() + r.out());
        E2eReport rep = E2eReport.read(json);
        assertEquals("grpo4j", rep.tool());
        assertEquals("cpu", rep.backend());
        assertEquals("bf16", rep.precision());
        assertFalse(rep.fake());
        assertTrue(rep.copyGbs() > 0);
        List<String> ids = rep.rows().stream().map(x -> x.id() + (x.variant() == null ? "" : " " + x.variant())).toList();
        assertEquals(List.of("train/tiny/4x64", "rollout/tiny/new8 graphs", "rollout/tiny/new8 graphs, no prefix groups",
                "rollout/tiny/new8 graphs, serial steps", "rollout/tiny/new8 graphs, 2 streams", "rollout/tiny/new8 eager", "rollout/tiny/new16 graphs",
                "grpo/tiny/4x4"), ids);
        // the two-halves row: the same tokens, each half on its own backend, at once
        E2eReport.Row halves = rep.rows().get(4);
        assertTrue(halves.note().contains("two halves of 2 and 2 prompts at once, each on its own backend"), halves.note());
        for (E2eReport.Row row : rep.rows()) {
            assertEquals(E2eReport.OK, row.status(), row.id() + ": " + row.note());
            assertTrue(row.medianMs() > 0 && row.minMs() <= row.medianMs() && row.medianMs() <= row.maxMs(), row.id());
            switch (row.section()) {
                case E2eReport.TRAIN -> {
                    positive(row, "tokens", "tokens_per_s", "flops", "tflops", "mfu_pct");
                    assertEquals(5, row.reps());
                    assertEquals(256, row.fig("tokens"));
                    assertEquals(row.fig("tokens") / (row.medianMs() / 1e3), row.fig("tokens_per_s"), 1e-9 * row.fig("tokens_per_s"));
                    assertEquals(E2eWork.trainFlops(E2eBench.config("tiny"), new int[] {64, 64, 64, 64}), row.fig("flops"));
                    assertEquals(100 * row.fig("tflops") / 989, row.fig("mfu_pct"), 1e-9 * row.fig("mfu_pct"));
                }
                case E2eReport.ROLLOUT -> {
                    positive(row, "tokens", "tokens_per_s", "roofline_bytes", "roofline_pct", "host_ms_per_step", "decode_steps");
                    int n = row.id().endsWith("new8") ? 8 : 16;
                    assertEquals(16.0 * n, row.fig("tokens"));
                    assertEquals(n - 1, row.fig("decode_steps")); // every sequence decodes in one batch: N - 1 steps
                    assertEquals(0, row.fig("graph_replays")); // the CPU has no graphs
                    assertEquals(0, row.fig("graph_setup_steps"), row.id() + ": no graph set up (written and read back)");
                    double roofSeconds = row.fig("roofline_bytes") / (rep.copyGbs() * 1e9);
                    assertEquals(100 * roofSeconds / (row.medianMs() / 1e3), row.fig("roofline_pct"), 1e-9 * row.fig("roofline_pct"));
                    // the steady state excludes the prefill: faster than the whole call. Its figures need the whole call's
                    // median to outlast the prefill-only call's: on a loaded CPU the tiny model's 7 or 15 decode steps can
                    // drown in the noise of the two medians (a CI run lost new8's), and the row then says so
                    if (row.fig("steady_tokens_per_s") != null) {
                        positive(row, "steady_tokens_per_s", "steady_roofline_pct");
                        assertTrue(row.fig("steady_roofline_pct") > row.fig("roofline_pct"), row.id());
                    } else {
                        assertNull(row.fig("steady_roofline_pct"), row.id());
                        assertTrue(row.note().contains("no steady-state figure (the whole call was not longer than the prefill-only one)"), row.note());
                    }
                    // the prompt's 16 tokens are one full block: each step's 4 samples of a prompt are a prefix group
                    // (the two-halves row reports its first half: 2 prompts)
                    double groups = row.variant().equals(E2eBench.NO_PREFIX_GROUPS) ? 0 : row.variant().endsWith("2 streams") ? 2 : 4;
                    assertEquals(groups * (n - 1), row.fig("prefix_group_rows"), row.id() + " " + row.variant());
                    // the CPU runs each op at once: no row pipelines its decode steps (E2eBenchCudaTest checks CUDA's)
                    assertEquals(0, row.fig("overlapped_steps"), row.id() + " " + row.variant());
                }
                default -> {
                    positive(row, "generation_s", "reward_s", "logprobs_s", "training_s", "total_s", "generated_tokens", "trained_tokens");
                    double parts = row.fig("generation_s") + row.fig("reward_s") + row.fig("logprobs_s") + row.fig("training_s");
                    assertEquals(row.fig("total_s"), parts, 1e-6);
                    assertEquals(16 * 8, row.fig("generated_tokens"));      // 4 prompts x 4 samples x 8 new tokens, no stop
                    assertEquals(16 * (16 + 8), row.fig("trained_tokens")); // each sequence once (one epoch), prompt + completion
                    // the passes take a mini-batch's rollouts in prompt order: each prompt's 16 tokens at least once, not 4 times
                    double rows = row.fig("training_token_rows");
                    assertTrue(rows >= 16 * 8 + 4 * 16 && rows < 16 * (16 + 8), "training_token_rows " + rows);
                    assertEquals(2, row.fig("optimizer_steps"));
                }
            }
        }
        // the printed table is the one compare makes of this report alone
        assertTrue(r.out().contains("**Training step**") && r.out().contains("**Rollout**") && r.out().contains("**One GRPO step**"), r.out());
        assertTrue(r.out().contains("not judged (not a GPU run)"), r.out());
        assertTrue(r.err().contains("e2e [") && r.err().contains("done in"), r.err());
    }

    @Test
    void fp32AndCheckpointingRunToo(@TempDir Path tmp) throws Exception {
        Path json = tmp.resolve("ours.json");
        Path ops = tmp.resolve("ops");
        Run r = run("cpu", "--preset", "tiny", "--sections", "train,grpo", "--precision", "fp32", "--checkpointing", "--json", json.toString(),
                "--profile-ops", ops.toString());
        assertEquals(0, r.code(), r.err() + r.out());
        assertFalse(Files.exists(ops), "--profile-ops is a CUDA profile: the CPU run writes none");
        E2eReport rep = E2eReport.read(json);
        assertEquals("fp32", rep.precision());
        assertEquals(List.of("train", "grpo"), rep.rows().stream().map(E2eReport.Row::section).toList());
        for (E2eReport.Row row : rep.rows()) {
            assertTrue(row.ok(), row.id() + ": " + row.note());
            assertEquals("checkpointing", row.variant());
        }
    }

    /**
     * --lmhead-grad split,single plans a training row per mode, each preset's split row, then its single row (one set
     * of weights for both); on the CPU the single row is skipped with the reason, and the split row runs.
     */
    @Test
    void lmHeadGradModesGiveATrainingRowEach(@TempDir Path tmp) throws Exception {
        E2eBench.Settings st = new E2eBench.Settings(List.of("llama-3.2-1b", "llama-3.1-8b-4l"), List.of("train", "rollout"),
                org.grpo4j.internal.backend.DType.BF16, 1, 5, 1, false, 0, 1, 1, List.of("split", "single"));
        List<E2eBench.Task> plan = E2eBench.plan(st);
        assertEquals(List.of("llama-3.2-1b", "llama-3.2-1b", "llama-3.1-8b-4l", "llama-3.1-8b-4l"),
                plan.stream().filter(t -> t.section().equals("train")).map(E2eBench.Task::preset).toList());
        assertEquals(List.of(false, true, false, true), plan.subList(0, 4).stream().map(E2eBench.Task::singleDz).toList());
        assertTrue(plan.subList(4, plan.size()).stream().allMatch(t -> t.section().equals("rollout") && !t.singleDz()));

        Path json = tmp.resolve("ours.json");
        Run r = run("cpu", "--preset", "tiny", "--sections", "train", "--lmhead-grad", "split,single", "--json", json.toString());
        assertEquals(0, r.code(), r.err() + r.out());
        List<E2eReport.Row> rows = E2eReport.read(json).rows();
        assertEquals(2, rows.size());
        assertTrue(rows.get(0).ok() && rows.get(0).variant() == null, rows.get(0).id() + ": " + rows.get(0).note());
        assertEquals(E2eReport.SKIPPED, rows.get(1).status());
        assertEquals("dz bf16", rows.get(1).variant());
        assertTrue(rows.get(1).note().contains("--lmhead-grad single is a mode of the CUDA backend's bf16 LM head"), rows.get(1).note());
        assertTrue(r.out().contains("| dz bf16 |"), r.out());
    }

    /**
     * --attention-kernels mma,wgmma adds a training row per preset with the Hopper kernels and fixed-point dQ, after the
     * preset's dz rows and in the last one's mode (one set of weights for all); on the CPU it is skipped with the reason;
     * a list without mma, or an unknown name, is refused naming the option.
     */
    @Test
    void wgmmaAttentionGivesATrainingRowPerPreset(@TempDir Path tmp) throws Exception {
        E2eBench.Settings st = new E2eBench.Settings(List.of("llama-3.2-1b", "llama-3.1-8b-4l"), List.of("train", "rollout"),
                org.grpo4j.internal.backend.DType.BF16, 1, 5, 1, false, 0, 1, 1, List.of("split", "single"), null, List.of("mma", "wgmma"));
        List<E2eBench.Task> train = E2eBench.plan(st).stream().filter(t -> t.section().equals("train")).toList();
        assertEquals(List.of("llama-3.2-1b", "llama-3.2-1b", "llama-3.2-1b", "llama-3.1-8b-4l", "llama-3.1-8b-4l", "llama-3.1-8b-4l"),
                train.stream().map(E2eBench.Task::preset).toList());
        assertEquals(List.of(false, false, true, false, false, true), train.stream().map(E2eBench.Task::wgmma).toList());
        assertEquals(List.of(false, true, true, false, true, true), train.stream().map(E2eBench.Task::singleDz).toList());
        assertEquals(6, E2eBench.plan(st).indexOf(E2eBench.plan(st).stream().filter(t -> t.section().equals("rollout")).findFirst().get()));

        Path json = tmp.resolve("ours.json");
        Run r = run("cpu", "--preset", "tiny", "--sections", "train", "--attention-kernels", "mma,wgmma", "--json", json.toString());
        assertEquals(0, r.code(), r.err() + r.out());
        List<E2eReport.Row> rows = E2eReport.read(json).rows();
        assertEquals(2, rows.size());
        assertTrue(rows.get(0).ok() && rows.get(0).variant() == null, rows.get(0).id() + ": " + rows.get(0).note());
        assertEquals(E2eReport.SKIPPED, rows.get(1).status());
        assertEquals(E2eBench.WGMMA, rows.get(1).variant());
        assertTrue(rows.get(1).note().contains("--attention-kernels wgmma is a mode of the CUDA backend"), rows.get(1).note());

        Run noMma = run("cpu", "--preset", "tiny", "--sections", "train", "--attention-kernels", "wgmma");
        assertEquals(2, noMma.code(), noMma.err());
        assertTrue(noMma.err().contains("--attention-kernels must include mma"), noMma.err());
        Run unknown = run("cpu", "--preset", "tiny", "--sections", "train", "--attention-kernels", "mma,fa3");
        assertEquals(2, unknown.code(), unknown.err());
        assertTrue(unknown.err().contains("unknown --attention-kernels \"fa3\" (valid: mma, wgmma)"), unknown.err());
    }

    @Test
    void aSpentBudgetSkipsRowsAndSaysWhy(@TempDir Path tmp) throws Exception {
        Path json = tmp.resolve("ours.json");
        Run r = run("cpu", "--preset", "tiny", "--sections", "train,rollout", "--budget", "1e-6", "--json", json.toString());
        assertEquals(0, r.code(), r.err());
        E2eReport rep = E2eReport.read(json);
        assertEquals(7, rep.rows().size()); // one training row, six rollout rows
        for (E2eReport.Row row : rep.rows()) {
            assertEquals(E2eReport.SKIPPED, row.status());
            assertTrue(row.note().startsWith("--budget 0 s:"), row.note());
        }
        assertTrue(r.out().contains("7 rows: 0 errors, 7 skipped"), r.out());
    }

    /**
     * The watch sees the report grow by one row after each row (so a JVM that dies mid-run leaves the rows so far in
     * --json), and before each task that runs, the rows before it.
     */
    @Test
    void theWatchSeesTheRowsSoFarAfterEachRow() {
        E2eBench.Settings st = new E2eBench.Settings(List.of("tiny"), List.of("train", "grpo"), org.grpo4j.internal.backend.DType.BF16, 1, 5, 1,
                false, 0, 1, 1L << 16, List.of("split", "single"));
        List<Integer> before = new java.util.ArrayList<>(), after = new java.util.ArrayList<>();
        List<String> hung = new java.util.ArrayList<>();
        E2eReport rep;
        try (org.grpo4j.internal.backend.CpuBackend be = new org.grpo4j.internal.backend.CpuBackend()) {
            rep = E2eBench.measure(be, st, E2eBench.card(be), null, new E2eBench.Watch() {
                @Override
                public void starting(E2eReport soFar, E2eReport.Row ifHung) {
                    before.add(soFar.rows().size());
                    hung.add(ifHung.id() + (ifHung.variant() == null ? "" : " [" + ifHung.variant() + "]") + " " + ifHung.status());
                }

                @Override
                public void finished(E2eReport soFar) { after.add(soFar.rows().size()); }
            });
        }
        // train (split), train (single dz: skipped by the CPU backend), grpo
        assertEquals(3, rep.rows().size());
        assertEquals(List.of(1, 2, 3), after);
        assertEquals(List.of(0, 1, 2), before);
        assertEquals(List.of("train/tiny/4x64 error", "train/tiny/4x64 [dz bf16] error", "grpo/tiny/4x4 error"), hung);
    }

    /**
     * --deadline: a row still running at the deadline is written as an error after the rows before it ("complete":
     * false), stop runs once (the JVM's end in a real run; here the run goes on), and nothing overwrites that file.
     */
    /**
     * Measures on the CPU under {@code dl}, each row's start held until {@code stopped} (the watcher's stop) counts
     * down: a CPU row takes far longer than the 5 ms poll, and the latch holds it until the watcher has written.
     */
    static void measureUntilStopped(E2eBench.Settings st, E2eBench.Deadline dl, java.util.concurrent.CountDownLatch stopped) {
        try (org.grpo4j.internal.backend.CpuBackend be = new org.grpo4j.internal.backend.CpuBackend()) {
            E2eBench.measure(be, st, E2eBench.card(be), null, new E2eBench.Watch() {
                @Override
                public void starting(E2eReport soFar, E2eReport.Row ifHung) {
                    dl.starting(soFar, ifHung);
                    try {
                        assertTrue(stopped.await(30, java.util.concurrent.TimeUnit.SECONDS), "the watcher never fired");
                    } catch (InterruptedException e) {
                        throw new AssertionError(e);
                    }
                }

                @Override
                public void finished(E2eReport soFar) { dl.finished(soFar); }
            });
        } finally {
            dl.stop();
        }
    }

    @Test
    void aRowPastTheDeadlineIsWrittenAsAnErrorAfterTheRowsBeforeIt(@TempDir Path tmp) throws Exception {
        E2eBench.Settings st = new E2eBench.Settings(List.of("tiny"), List.of("train", "grpo"), org.grpo4j.internal.backend.DType.BF16, 1, 5, 1,
                false, 0, 1, 1L << 16, List.of("split"));
        Path json = tmp.resolve("ours.json");
        java.util.concurrent.atomic.AtomicInteger stops = new java.util.concurrent.atomic.AtomicInteger();
        ByteArrayOutputStream log = new ByteArrayOutputStream();
        java.util.concurrent.CountDownLatch stopped = new java.util.concurrent.CountDownLatch(1);
        E2eBench.Deadline dl = new E2eBench.Deadline(json, 1e-3, 5, new PrintStream(log, true), () -> {
            stops.incrementAndGet();
            stopped.countDown();
        });
        // the training row first, with the deadline already past: the watcher stops it
        measureUntilStopped(st, dl, stopped);
        assertEquals(1, stops.get());
        assertTrue(dl.fired());
        String text = Files.readString(json);
        assertTrue(text.contains("\"complete\" : false") || text.contains("\"complete\":false"), text);
        E2eReport rep = E2eReport.read(json);
        assertEquals(1, rep.rows().size(), "the first row only: the finished rows after the deadline are not written");
        E2eReport.Row r = rep.rows().get(0);
        assertEquals("train/tiny/4x64", r.id());
        assertEquals(E2eReport.ERROR, r.status());
        assertTrue(r.note().contains("stopped by --deadline"), r.note());
        assertTrue(log.toString().contains("E2eBench: train/tiny/4x64 still running at --deadline: stopping; the rows before it are in " + json),
                log.toString());
    }

    /** --row-timeout stops a row that runs too long, long before the run's deadline (none here), as the deadline does. */
    @Test
    void aRowPastItsTimeoutIsStoppedWithoutADeadline(@TempDir Path tmp) throws Exception {
        E2eBench.Settings st = new E2eBench.Settings(List.of("tiny"), List.of("train", "grpo"), org.grpo4j.internal.backend.DType.BF16, 1, 5, 1,
                false, 0, 1, 1L << 16, List.of("split"));
        Path json = tmp.resolve("ours.json");
        java.util.concurrent.CountDownLatch stopped = new java.util.concurrent.CountDownLatch(1);
        ByteArrayOutputStream log = new ByteArrayOutputStream();
        E2eBench.Deadline dl = new E2eBench.Deadline(json, 0, 0.05, 5, new PrintStream(log, true), stopped::countDown);
        measureUntilStopped(st, dl, stopped);
        assertTrue(dl.fired());
        E2eReport rep = E2eReport.read(json);
        assertEquals(List.of("train/tiny/4x64"), rep.rows().stream().map(E2eReport.Row::id).toList());
        assertEquals(E2eReport.ERROR, rep.rows().get(0).status());
        assertTrue(log.toString().contains("E2eBench: train/tiny/4x64 still running after --row-timeout 0.05 s: stopping"), log.toString());
    }

    /**
     * The command line's watch (--json, no deadline): after each row the file holds the rows so far with "complete":
     * false; the run's last write holds every row without it.
     */
    @Test
    void theJsonHoldsTheRowsSoFarAfterEachRow(@TempDir Path tmp) throws Exception {
        E2eBench.Settings st = new E2eBench.Settings(List.of("tiny"), List.of("train", "grpo"), org.grpo4j.internal.backend.DType.BF16, 1, 5, 1,
                false, 0, 1, 1L << 16, List.of("split"));
        Path json = tmp.resolve("ours.json");
        // (the stop would run on the watcher's thread, where a failure is lost: it is recorded and checked here)
        java.util.concurrent.atomic.AtomicBoolean stopped = new java.util.concurrent.atomic.AtomicBoolean();
        E2eBench.Deadline dl = new E2eBench.Deadline(json, 0, 5, System.err, () -> stopped.set(true));
        List<Integer> seen = new java.util.ArrayList<>();
        E2eReport rep;
        try (org.grpo4j.internal.backend.CpuBackend be = new org.grpo4j.internal.backend.CpuBackend()) {
            rep = E2eBench.measure(be, st, E2eBench.card(be), null, new E2eBench.Watch() {
                @Override
                public void starting(E2eReport soFar, E2eReport.Row ifHung) { dl.starting(soFar, ifHung); }

                @Override
                public void finished(E2eReport soFar) {
                    dl.finished(soFar);
                    try {
                        String text = Files.readString(json);
                        assertTrue(text.contains("\"complete\" : false") || text.contains("\"complete\":false"), text);
                        seen.add(E2eReport.read(json).rows().size());
                    } catch (java.io.IOException e) {
                        throw new AssertionError(e);
                    }
                }
            });
        } finally {
            dl.stop();
        }
        assertEquals(List.of(1, 2), seen);
        assertFalse(stopped.get(), "no deadline: nothing stops");
        dl.complete(rep);
        assertFalse(Files.readString(json).contains("\"complete\""), "the last write is the complete report");
        assertEquals(2, E2eReport.read(json).rows().size());
    }

    /** A deadline that passed between rows: the remaining tasks are skipped with the reason, not started and stopped. */
    @Test
    void aPassedDeadlineSkipsTheRowsNotStarted() throws Exception {
        E2eBench.Settings st = new E2eBench.Settings(List.of("tiny"), List.of("train", "grpo"), org.grpo4j.internal.backend.DType.BF16, 1, 5, 1,
                false, 0, 1, 1L << 16, List.of("split"));
        // the watcher looks only after an hour: the deadline (1 ms) has passed before the first task, which is skipped
        // (the stop would run on the watcher's daemon thread, where a failure is lost: it is recorded and checked here)
        java.util.concurrent.atomic.AtomicBoolean stopped = new java.util.concurrent.atomic.AtomicBoolean();
        E2eBench.Deadline dl = new E2eBench.Deadline(null, 1e-3, 3_600_000, System.err, () -> stopped.set(true));
        Thread.sleep(5);
        E2eReport rep;
        try (org.grpo4j.internal.backend.CpuBackend be = new org.grpo4j.internal.backend.CpuBackend()) {
            rep = E2eBench.measure(be, st, E2eBench.card(be), null, dl);
        } finally {
            dl.stop();
        }
        assertEquals(2, rep.rows().size());
        for (E2eReport.Row r : rep.rows()) {
            assertEquals(E2eReport.SKIPPED, r.status(), r.id());
            assertEquals("--deadline 0 s passed before it could start", r.note());
        }
        assertFalse(dl.fired());
        assertFalse(stopped.get(), "nothing was running: nothing to stop");
    }

    /**
     * A row whose error leaves the device unusable (a fault ends a CUDA context: every later call fails) stops the run
     * with the rows so far, that row last; the command line's --resume of them keeps them as they are (the error row is
     * not run again) with the copy bandwidth, and runs the others, in the plan's order.
     */
    @Test
    void aLostDeviceStopsTheRunAndResumeRunsTheRest(@TempDir Path tmp) throws Exception {
        E2eBench.Settings st = new E2eBench.Settings(List.of("tiny"), List.of("train", "rollout", "grpo"), org.grpo4j.internal.backend.DType.BF16,
                1, 5, 1, false, 0, 1, 1L << 16, List.of("split"));
        java.util.concurrent.atomic.AtomicBoolean lost = new java.util.concurrent.atomic.AtomicBoolean();
        E2eReport soFar;
        try (org.grpo4j.internal.backend.CpuBackend cpu = new org.grpo4j.internal.backend.CpuBackend()) {
            // the first rollout's sampler faults, and every call after it fails (as on a lost CUDA context)
            org.grpo4j.internal.backend.Backend dev = (org.grpo4j.internal.backend.Backend) java.lang.reflect.Proxy.newProxyInstance(
                    org.grpo4j.internal.backend.Backend.class.getClassLoader(), new Class<?>[] {org.grpo4j.internal.backend.Backend.class},
                    (p, m, args) -> {
                        String n = m.getName();
                        if (n.equals("close")) return null;
                        if (n.equals("sample")) lost.set(true);
                        if (lost.get() && !n.equals("name") && !n.equals("description"))
                            throw new IllegalStateException(n + ": an illegal memory access was encountered");
                        return KernelBenchTest.invoke(m, cpu, args);
                    });
            E2eBench.DeviceLost e = assertThrows(E2eBench.DeviceLost.class, () -> E2eBench.measure(dev, st, E2eBench.card(cpu), null, E2eBench.Watch.NONE, null));
            soFar = e.soFar();
        }
        assertEquals(List.of("train/tiny/4x64 null ok", "rollout/tiny/new8 graphs error"),
                soFar.rows().stream().map(x -> x.id() + " " + x.variant() + " " + x.status()).toList(), "the rows so far, the faulting row last");
        assertTrue(soFar.rows().get(1).note().contains("an illegal memory access"), soFar.rows().get(1).note());
        Path prior = tmp.resolve("ours.json"), json = tmp.resolve("resumed.json");
        soFar.write(prior, false);

        Run r = run("cpu", "--preset", "tiny", "--resume", prior.toString(), "--json", json.toString());
        assertEquals(1, r.code(), "the kept error row fails the run: " + r.err());
        assertTrue(r.err().contains("--resume: 2 of the plan's 8 rows kept"), r.err());
        E2eReport rep = E2eReport.read(json);
        assertEquals(soFar.copyGbs(), rep.copyGbs(), "the kept rows' roofline figures were counted with the first run's copy bandwidth");
        List<String> ids = rep.rows().stream().map(x -> x.id() + (x.variant() == null ? "" : " " + x.variant())).toList();
        assertEquals(List.of("train/tiny/4x64", "rollout/tiny/new8 graphs", "rollout/tiny/new8 graphs, no prefix groups",
                "rollout/tiny/new8 graphs, serial steps", "rollout/tiny/new8 graphs, 2 streams", "rollout/tiny/new8 eager", "rollout/tiny/new16 graphs",
                "grpo/tiny/4x4"), ids, "every row, in the plan's order");
        assertEquals(soFar.rows().get(0), rep.rows().get(0), "the measured row kept as it was");
        assertEquals(soFar.rows().get(1), rep.rows().get(1), "the error row kept, not run again");
        for (E2eReport.Row x : rep.rows().subList(2, rep.rows().size())) assertTrue(x.ok(), x.id() + " " + x.variant() + ": " + x.note());
        assertFalse(r.err().contains("e2e [") && r.err().contains("train/tiny/4x64: "), "the kept training row is not measured again: " + r.err());
    }

    /** --resume refuses a report it cannot continue, naming the file and what differs; a skipped row runs again. */
    @Test
    void resumeRefusesAnotherRunsReportAndRunsSkippedRows(@TempDir Path tmp) throws Exception {
        Path prior = tmp.resolve("ours.json");
        E2eReport.Row train = new E2eReport.Row("train/tiny/4x64", "train", "tiny", "4 x 64 tokens, packed", null, "grpo4j", E2eReport.SKIPPED,
                "--budget 1 s: 2 s elapsed", null, null, null, 0, null);
        String card;
        try (org.grpo4j.internal.backend.CpuBackend cpu = new org.grpo4j.internal.backend.CpuBackend()) {
            card = E2eBench.card(cpu).name();
        }
        new E2eReport("grpo4j", card, "n/a", "n/a", null, null, "cpu", "bf16", "2026-12-01T00:00:00Z", false, 7.5, 989, List.of(train)).write(prior, false);
        Path json = tmp.resolve("resumed.json");
        Run ok = run("cpu", "--preset", "tiny", "--sections", "train", "--resume", prior.toString(), "--json", json.toString());
        assertEquals(0, ok.code(), ok.err());
        assertTrue(ok.err().contains("--resume: 0 of the plan's 1 rows kept"), ok.err());
        E2eReport rep = E2eReport.read(json);
        assertEquals(1, rep.rows().size());
        assertTrue(rep.rows().get(0).ok(), "a skipped row is run: " + rep.rows().get(0).note());
        assertEquals(7.5, rep.copyGbs());

        Path other = tmp.resolve("other.json"), shape = tmp.resolve("shape.json"), peer = tmp.resolve("peer.json");
        new E2eReport("grpo4j", "NVIDIA H200", "n/a", "n/a", null, null, "cuda:0", "bf16", "2026-12-01T00:00:00Z", false, 7.5, 989, List.of()).write(other);
        E2eReport.Row wrongShape = new E2eReport.Row("train/tiny/4x64", "train", "tiny", "4 x 32 tokens, packed", null, "grpo4j", E2eReport.ERROR,
                "hung", null, null, null, 0, null);
        new E2eReport("grpo4j", card, "n/a", "n/a", null, null, "cpu", "bf16", "2026-12-01T00:00:00Z", false, 7.5, 989, List.of(wrongShape)).write(shape);
        new E2eReport("transformers", card, "n/a", "n/a", "2.11", "5.17", "torch cuda", "bf16", "2026-12-01T00:00:00Z", false, 7.5, 989, List.of()).write(peer);
        Object[][] cases = {
            {new String[] {"cpu", "--preset", "tiny", "--resume", tmp.resolve("none.json").toString()}, "--resume " + tmp.resolve("none.json") + ": no such file"},
            {new String[] {"cpu", "--preset", "tiny", "--precision", "fp32", "--resume", prior.toString()}, "measured at precision bf16, this run's is fp32"},
            {new String[] {"cpu", "--preset", "tiny", "--resume", other.toString()}, "measured on \"NVIDIA H200\", this device is \"" + card + "\""},
            {new String[] {"cpu", "--preset", "tiny", "--sections", "train", "--resume", shape.toString()},
                "--resume: train/tiny/4x64 was measured at 4 x 32 tokens, packed; this run's is 4 x 64 tokens, packed"},
            {new String[] {"cpu", "--preset", "tiny", "--resume", peer.toString()}, "a report of \"transformers\", not of E2eBench"},
        };
        for (Object[] c : cases) {
            Run r = run((String[]) c[0]);
            assertEquals(2, r.code(), String.join(" ", (String[]) c[0]) + ": " + r.err());
            assertTrue(r.err().contains((String) c[1]), r.err());
        }
    }

    @Test
    void estimatesGrowWithTheWork() {
        E2eBench.Shapes sh = E2eBench.ISSUE;
        Map<String, Double> train = Map.of("p", 50_000.0), roll = Map.of("p", 10.0);
        assertEquals(0, E2eBench.estimate(new E2eBench.Task("p", E2eReport.ROLLOUT, 256, true), sh, Map.of(), Map.of()));
        double r256 = E2eBench.estimate(new E2eBench.Task("p", E2eReport.ROLLOUT, 256, true), sh, train, roll);
        double r512 = E2eBench.estimate(new E2eBench.Task("p", E2eReport.ROLLOUT, 512, true), sh, train, roll);
        assertTrue(r512 > 2 * r256 && r256 >= 10, r256 + " " + r512);
        double g = E2eBench.estimate(new E2eBench.Task("p", E2eReport.GRPO, 256, true), sh, train, roll);
        assertTrue(g > 10 + 768 * 512 / 50_000.0, "grpo estimate " + g);
    }

    @Test
    void badInputIsRefusedWithTheValidChoices(@TempDir Path tmp) {
        Object[][] cases = {
            {new String[] {"cpu", "--preset", "llama-70b"}, "unknown --preset \"llama-70b\" (valid: llama-3.2-1b, llama-3.1-8b-4l, tiny)"},
            {new String[] {"cpu", "--preset", "llama-3.1-8b"}, "llama-3.1-8b-4l is it truncated to 4 layers"},
            {new String[] {"cpu", "--preset", "llama-3.2-1b"}, "--preset llama-3.2-1b on cpu would take hours"},
            {new String[] {"cpu", "--sections", "eval"}, "unknown --sections \"eval\" (valid: train, rollout, grpo)"},
            {new String[] {"cpu", "--precision", "fp16"}, "unknown --precision \"fp16\" (valid: bf16, fp32)"},
            {new String[] {"cpu", "--reps", "3"}, "--reps must be >= 5"},
            {new String[] {"cpu", "--budget", "-1"}, "--budget must be >= 0"},
            {new String[] {"cpu", "--deadline", "-1"}, "--deadline must be >= 0"},
            {new String[] {"cpu", "--deadline", "Infinity"}, "--deadline must be >= 0 seconds and finite"},
            {new String[] {"cpu", "--row-timeout", "-2"}, "--row-timeout must be >= 0 seconds and finite"},
            {new String[] {"cpu", "--lmhead-grad", "fp8"}, "unknown --lmhead-grad \"fp8\" (valid: split, single)"},
            {new String[] {"tpu"}, "unknown backend \"tpu\""},
            {new String[] {"cpu", "--out", tmp.toString()}, "--out goes with --compare"},
            {new String[] {"--compare", tmp.resolve("a.json").toString(), tmp.resolve("b.json").toString()}, "a.json: not found"},
        };
        for (Object[] c : cases) {
            Run r = run((String[]) c[0]);
            assertEquals(2, r.code(), String.join(" ", (String[]) c[0]) + ": " + r.err());
            assertTrue(r.err().contains((String) c[1]), r.err());
            assertEquals(1, r.err().strip().lines().count(), "one line: " + r.err());
        }
        assertFalse(Files.exists(tmp.resolve("e2e-compare.md")));
    }

    @Test
    void cudaWithoutAGpuSaysSoAndWritesNothing(@TempDir Path tmp) {
        org.junit.jupiter.api.Assumptions.assumeFalse(CudaRuntime.probe().available(), "a GPU is present");
        Path json = tmp.resolve("ours.json");
        Run r = run("cuda", "--json", json.toString());
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().startsWith("E2eBench: no GPU ("), r.out());
        assertFalse(Files.exists(json));
    }

    /**
     * The whole benchmark on the GPU at the tiny preset's shapes (seconds): every row runs (the training step in both LM
     * head modes), and the graphs rows really replay decode graphs. A GPU check for tools/gpu-check; the figures are not asserted.
     */
    @Test
    @org.junit.jupiter.api.Tag("gpu")
    void tinyOnCudaRunsEveryRowAndReplaysGraphs() {
        org.grpo4j.internal.backend.Backend be = org.grpo4j.internal.backend.TestBackends.cuda();
        E2eBench.Settings st = new E2eBench.Settings(List.of("tiny"), E2eReport.SECTIONS, org.grpo4j.internal.backend.DType.BF16, 2, 5, 1,
                false, 0, 1, 1L << 22, List.of("split", "single"), null, List.of("mma", "wgmma"));
        E2eReport rep = E2eBench.measure(be, st, E2eBench.card(be), System.err);
        // three training rows (split, single dz, the Hopper kernels' row: skipped off compute capability 9.0), six
        // rollout rows (graphs, without prefix groups, serial steps, 2 streams, eager; graphs at 16 new), the GRPO step
        assertEquals(10, rep.rows().size());
        assertEquals("dz bf16", rep.rows().get(1).variant(), "the single-dz training row");
        assertEquals("dz bf16, " + E2eBench.WGMMA, rep.rows().get(2).variant());
        boolean hopper = ((org.grpo4j.internal.backend.CudaBackend) be).hasWgmmaAttention();
        for (E2eReport.Row row : rep.rows()) {
            if (row == rep.rows().get(2) && !hopper) {
                assertEquals(E2eReport.SKIPPED, row.status(), row.note());
                continue;
            }
            assertTrue(row.ok(), row.id() + ": " + row.note());
            if (row.section().equals(E2eReport.ROLLOUT)) {
                assertEquals(row.variant().startsWith("graphs"), row.fig("graph_replays") > 0, row.id() + " " + row.variant());
                assertEquals(!row.variant().equals(E2eBench.NO_PREFIX_GROUPS), row.fig("prefix_group_rows") > 0, row.id() + " " + row.variant());
                // prefix groups read each prompt once a group: fewer bytes than the per-sample roofline counts
                if (row.fig("prefix_group_rows") > 0) assertTrue(row.fig("roofline_read_pct") < row.fig("roofline_pct"), row.id());
            }
        }
        assertFalse(E2eCompare.table(rep).failed());
    }
}
