package org.grpo4j.tools;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.grpo4j.internal.backend.CudaRuntime;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** tools/gpu-check's driver on a machine without a GPU: discovery, one child JVM per class, the summary it writes. */
class GpuCheckTest {

    @Test
    void discoversTheGpuTestClasses() {
        List<String> classes = GpuCheck.gpuTestClasses(null);
        assertTrue(classes.contains("org.grpo4j.internal.backend.CudaBackendTest"), classes.toString());
        assertTrue(classes.stream().anyMatch(c -> c.endsWith("MatmulConformanceTest")), classes.toString());
        assertFalse(classes.contains("org.grpo4j.tools.GpuCheckTest"), "a class without gpu tests is not a family");
    }

    /** --only takes a class or CLASS#METHOD (one test of it, nested classes included); a name that is neither is refused. */
    @Test
    void onlySelectsAClassOrOneMethod() throws Exception {
        assertEquals(List.of("org.grpo4j.internal.rollout.DecodeGraphTest#cudaGraphsGiveTheEagerTokens"),
                GpuCheck.gpuTestClasses(List.of("DecodeGraphTest#cudaGraphsGiveTheEagerTokens")));
        assertEquals(List.of("org.grpo4j.internal.rollout.DecodeGraphTest"), GpuCheck.gpuTestClasses(List.of("DecodeGraphTest")));
        var e = assertThrows(IllegalArgumentException.class, () -> GpuCheck.gpuTestClasses(List.of("NoSuchTest")));
        assertEquals("--only NoSuchTest: no gpu-tagged test class of that name (CLASS or CLASS#METHOD)", e.getMessage());
        org.junit.jupiter.api.Assumptions.assumeFalse(CudaRuntime.probe().available(), "the child run below: skipped where a GPU is present");
        Path dir = Files.createTempDirectory("gpu-check-only");
        Path result = dir.resolve("r");
        // the one method runs (skipped here, no device) and nothing else of the class
        assertEquals(0, GpuCheck.runClass("org.grpo4j.internal.rollout.DecodeGraphTest#cudaGraphsGiveTheEagerTokens", result));
        assertTrue(Files.readString(result).startsWith("counts 0 0 1"), Files.readString(result));
        assertEquals(0, GpuCheck.runClass("org.grpo4j.internal.backend.SampleConformanceTest#perRowSpecsDrawWhatEachRowsOwnSpecDraws", result));
        assertTrue(Files.readString(result).startsWith("counts 0 0 1"), "the nested CUDA suite's one method: " + Files.readString(result));
    }

    /**
     * A benchmark stopped by a hung row (exit 3) or a lost device (4) goes on in a new process with --resume of its
     * JSON, until a run ends otherwise, as does one killed (137) whose JSON is incomplete; a run that fails otherwise
     * (1: a FAILED row) is not rerun, nor one whose JSON is missing or complete.
     */
    @Test
    void aStoppedBenchmarkGoesOnWithResume(@TempDir Path dir) throws Exception {
        Path ours = dir.resolve("bench-ours.json");
        Files.writeString(ours, "{}");
        List<String> cmd = List.of("java", "Main", "bench", "--json", ours.toString());
        List<List<String>> calls = new ArrayList<>();
        List<Path> logs = new ArrayList<>();
        int[] codes = {4, 3, 0};
        List<String> notes = new ArrayList<>();
        int code = GpuCheck.withRestarts(cmd, ours, dir, 300, notes, (c, log, t) -> {
            calls.add(c);
            logs.add(log);
            assertTrue(t > 0 && t <= 300, "the time left: " + t);
            return codes[calls.size() - 1];
        });
        assertEquals(0, code);
        assertEquals(3, calls.size());
        assertEquals(cmd, calls.get(0));
        List<String> resumed = new ArrayList<>(cmd);
        resumed.addAll(List.of("--resume", ours.toString()));
        assertEquals(resumed, calls.get(1));
        assertEquals(resumed, calls.get(2));
        assertEquals(List.of(dir.resolve("bench-ours.log"), dir.resolve("bench-ours-1.log"), dir.resolve("bench-ours-2.log")), logs);
        assertEquals(2, notes.size(), notes.toString());
        assertTrue(notes.get(0).contains("exit 4 (the device lost") && notes.get(1).contains("exit 3 (a row past --row-timeout"), notes.toString());

        calls.clear();
        assertEquals(1, GpuCheck.withRestarts(cmd, ours, dir, 300, new ArrayList<>(), (c, log, t) -> { calls.add(c); return 1; }));
        assertEquals(1, calls.size(), "a FAILED row is not a stop");
        Files.delete(ours);
        calls.clear();
        assertEquals(4, GpuCheck.withRestarts(cmd, ours, dir, 300, new ArrayList<>(), (c, log, t) -> { calls.add(c); return 4; }));
        assertEquals(1, calls.size(), "no JSON to resume from");
        Files.writeString(ours, "{}");
        calls.clear();
        assertEquals(4, GpuCheck.withRestarts(cmd, ours, dir, 300, new ArrayList<>(), (c, log, t) -> { calls.add(c); return 4; }));
        assertEquals(9, calls.size(), "at most 8 restarts");
        // killed (137: a hung row's halt blocked in the CUDA runtime's exit, then its fallback SIGKILL): resumed only
        // where the JSON says its run stopped before its last row
        Files.writeString(ours, "{\"complete\": false}");
        calls.clear();
        List<String> notes137 = new ArrayList<>();
        assertEquals(0, GpuCheck.withRestarts(cmd, ours, dir, 300, notes137, (c, log, t) -> { calls.add(c); return calls.size() == 1 ? 137 : 0; }));
        assertEquals(List.of(cmd, resumed), calls);
        assertTrue(notes137.get(0).contains("exit 137 (killed before its last row"), notes137.toString());
        Files.writeString(ours, "{\"complete\": true}");
        calls.clear();
        assertEquals(137, GpuCheck.withRestarts(cmd, ours, dir, 300, new ArrayList<>(), (c, log, t) -> { calls.add(c); return 137; }));
        assertEquals(1, calls.size(), "a complete report is not resumed");
    }

    /** A step never runs past the budget by more than the minimum step (a device loan limits a command's time). */
    @Test
    void stepTimeoutsShrinkWithTheBudgetLeft() {
        long now = System.nanoTime(), s = TimeUnit.SECONDS.toNanos(1);
        assertEquals(150, GpuCheck.stepTimeout(150, now, 290 * s), "plenty left: the step's own cap");
        long left = GpuCheck.stepTimeout(150, now - 200 * s, 290 * s);
        assertTrue(left <= 90 && left >= 88, "90 s left: " + left);
        assertEquals(30, GpuCheck.stepTimeout(150, now - 289 * s, 290 * s), "almost spent: the minimum");
        assertEquals(30, GpuCheck.stepTimeout(300, now - 400 * s, 290 * s), "overspent: the minimum");
    }

    @Test
    void runsAFamilyInItsOwnJvmAndWritesTheSummary(@TempDir Path dir) throws Exception {
        org.junit.jupiter.api.Assumptions.assumeFalse(CudaRuntime.probe().available(), "skipped: a GPU is present (the real run is tools/gpu-check)");
        List<String> cmd = new ArrayList<>(GpuCheck.javaCommand());
        cmd.addAll(List.of(GpuCheck.class.getName(), "--only", "CudaBackendTest", "--no-bench", "--out", dir.toString()));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        assertTrue(p.waitFor(120, TimeUnit.SECONDS));
        assertEquals(0, p.exitValue(), out);
        String md = Files.readString(dir.resolve("gpu-check.md"));
        long tests = java.util.Arrays.stream(Class.forName("org.grpo4j.internal.backend.CudaBackendTest").getDeclaredMethods())
                .filter(m -> m.isAnnotationPresent(org.junit.jupiter.api.Test.class)).count();
        assertTrue(md.contains("| CudaBackendTest | 0 | 0 | " + tests + " | skipped: no CUDA device"), "every one of its " + tests + " tests skipped:\n" + md);
        assertTrue(md.contains("kernel benchmark: skipped (no CUDA device)"), md);
        assertTrue(Files.exists(dir.resolve("CudaBackendTest.result")));
        assertTrue(md.strip().matches("(?s).*\ngpu-check: \\d+ s, no failures"), "the finished report, not a progress one:\n" + md);
    }

    /** memcheck takes the classes most likely to hold a memory error first: it runs on the time left. */
    /**
     * A child JVM that crashes or hangs is named with the test it was in: runClass prints each test as it starts, and
     * the note takes the last one (an emulated run's "unknown stream" abort named no test, 2026-12-03).
     */
    @Test
    void aCrashedChildIsNamedWithTheTestItWasIn(@TempDir Path dir) throws Exception {
        Path log = dir.resolve("x.log");
        Files.write(log, List.of("WARNING: ...", "gpu-check: test first()", "output", "gpu-check: test second(Path)", "kernel-emu: an unknown stream"));
        assertEquals(" in second(Path)", GpuCheck.lastTest(log));
        Files.write(log, List.of("WARNING: ..."));
        assertEquals("", GpuCheck.lastTest(log));
        assertEquals("", GpuCheck.lastTest(dir.resolve("none.log")));
    }

    @Test
    void memcheckTakesTheRiskiestKernelsFirst() {
        List<String> all = List.of("a.BasicOpsTest", "a.CudaAttentionTest", "a.MatmulConformanceTest", "a.CudaHopperForwardTest", "a.CudaSamplingLmHeadTest");
        assertEquals(List.of("a.CudaHopperForwardTest", "a.CudaAttentionTest", "a.CudaSamplingLmHeadTest", "a.BasicOpsTest", "a.MatmulConformanceTest"),
                GpuCheck.memcheckOrder(all));
        assertEquals(List.of("a.BasicOpsTest"), GpuCheck.memcheckOrder(List.of("a.BasicOpsTest")));
        // a class that may hang on a real device (GpuCheck.LATE) comes last
        assertEquals(List.of("a.CudaAttentionTest", "a.BasicOpsTest", "b.ZTest", "a.NcclFormationTimeoutTest"),
                GpuCheck.memcheckOrder(List.of("a.BasicOpsTest", "a.CudaAttentionTest", "a.NcclFormationTimeoutTest", "b.ZTest")));
        assertTrue(GpuCheck.gpuTestClasses(null).stream().anyMatch(c -> GpuCheck.LATE.contains(GpuCheck.simple(c))),
                "GpuCheck.LATE names a gpu-tagged class that exists");
    }
}
