package org.grpo4j.tools;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * tools/gpu-loan's plumbing, which a GPU loan depends on and no other test runs: with a total too small for any step
 * (every step "not run"), it still probes the environment, writes its summary and puts the archive and the tables
 * into --bundle; it refuses an --out it must not empty.
 */
class GpuLoanScriptTest {

    private record Run(int code, String out) {}

    private static Run run(String... args) throws Exception {
        List<String> cmd = new java.util.ArrayList<>(List.of("bash", "tools/gpu-loan"));
        cmd.addAll(List.of(args));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.waitFor(3, TimeUnit.MINUTES), "gpu-loan ends: " + out);
        return new Run(p.exitValue(), out);
    }

    @Test
    void aLoanWithNoTimeForAnyStepStillBringsBackItsSummary(@TempDir Path tmp) throws Exception {
        Path out = tmp.resolve("loan"), bundle = tmp.resolve("OUT");
        Files.createDirectories(out);
        Files.writeString(out.resolve("gpu-loan.md"), "an earlier loan's summary\n"); // emptied first (a warm machine keeps /tmp)
        Files.writeString(out.resolve("stale.json"), "{}");
        Run r = run("--out", out.toString(), "--bundle", bundle.toString(), "--total", "20");
        assertEquals(0, r.code(), r.out());
        String summary = Files.readString(bundle.resolve("gpu-loan.md"));
        for (String step : List.of("gpu-check", "e2e-bench", "demo-check", "peers-compile"))
            assertTrue(summary.contains("| " + step + " | - | - | not run: "), step + " in:\n" + summary);
        assertTrue(Files.size(bundle.resolve("loan.tgz")) > 0);
        assertTrue(Files.readString(bundle.resolve("env.txt")).contains("LD_LIBRARY_PATH="), "the environment probe");
        assertTrue(summary.lines().anyMatch(l -> l.matches("\\**sources: .*")), "the packed classes against the carried sources:\n" + summary);
        assertFalse(Files.exists(out.resolve("stale.json")), "the earlier loan's files are gone");
        assertTrue(Files.isRegularFile(out.resolve("console.log")));
        assertFalse(Files.exists(tmp.resolve("OUT.partial")), "no staging folder left");
        try (var s = Files.list(bundle)) {
            assertTrue(s.count() <= 8, "a device call brings back at most 8 files");
        }
    }

    /**
     * tools/bundle stages each file beside the bundle folder and renames it in; where that sibling cannot be made (a
     * device call's $OUT in a folder it may not write; here a name one past the file system's longest) it stages
     * inside the bundle folder, and leaves no staging folder behind either way.
     */
    @Test
    void theBundleStagesInsideItsFolderWhereItsSiblingCannotBeMade(@TempDir Path tmp) throws Exception {
        Path src = Files.createDirectories(tmp.resolve("run")), bundle = Files.createDirectories(tmp.resolve("b".repeat(250)));
        Files.writeString(src.resolve("table.md"), "| a |\n");
        Process p = new ProcessBuilder("bash", "tools/bundle", src.toString(), bundle.toString(), "run.tgz", "table.md").redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.waitFor(1, TimeUnit.MINUTES));
        assertEquals(0, p.exitValue(), out);
        try (var s = Files.list(bundle)) {
            assertEquals(List.of("run.tgz", "table.md"), s.map(f -> f.getFileName().toString()).sorted().toList());
        }
        assertEquals("| a |\n", Files.readString(bundle.resolve("table.md")));
    }

    /**
     * tools/gpu-diag with no time for any step (its 15 s reserve is all of --total 20): every step "not run", its
     * summary and console in --bundle's archive, an earlier diagnosis's files gone.
     */
    @Test
    void aDiagnosisWithNoTimeForAnyStepStillBringsBackItsSummary(@TempDir Path tmp) throws Exception {
        Path out = Files.createDirectories(tmp.resolve("diag")), bundle = tmp.resolve("OUT");
        Files.writeString(out.resolve("gpu-diag.md"), "an earlier summary\n");
        Files.writeString(out.resolve("ncu-old.csv"), "stale");
        Process p = new ProcessBuilder("bash", "tools/gpu-diag", "--out", out.toString(), "--bundle", bundle.toString(), "--total", "20", "--demo")
                .redirectErrorStream(true).start();
        String log = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.waitFor(2, TimeUnit.MINUTES), log);
        assertEquals(0, p.exitValue(), log);
        String summary = Files.readString(bundle.resolve("gpu-diag.md"));
        for (String step : List.of("| demo | - | - | not run: ", "| lmhead-default | - | - | not run: ", "| ncu fwd_kernel | - | - | not run: "))
            assertTrue(summary.contains(step), step + " in:\n" + summary);
        assertFalse(summary.contains("ncu-bench"), "the whole-run timings are gone");
        assertFalse(Files.exists(out.resolve("ncu-old.csv")), "the earlier diagnosis's files are gone");
        assertTrue(Files.readString(out.resolve("console.log")).contains("gpu-diag: demo not run"), "the console is kept");
        Files.writeString(out.resolve("mine.txt"), "x");
        Files.delete(out.resolve("gpu-diag.md"));
        p = new ProcessBuilder("bash", "tools/gpu-diag", "--out", out.toString(), "--total", "20").redirectErrorStream(true).start();
        log = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.waitFor(1, TimeUnit.MINUTES));
        assertEquals(2, p.exitValue(), log);
        assertTrue(log.contains("holds files that are not an earlier diagnosis's (no gpu-diag.md)"), log);
    }

    /**
     * tools/loan-lib.sh's loan_timed: at its limit, what the command leaves of its process group is killed too. Here
     * the command is a shell that SIGTERM ends at once and its child ignores SIGTERM (as the trainer's JVM catches it to
     * write a checkpoint): timeout alone returned with that child still running (a review of 2026-12-03).
     */
    @Test
    void aTimedStepLeavesNothingOfItsProcessGroupRunning(@TempDir Path tmp) throws Exception {
        Path pid = tmp.resolve("pid");
        // (the child's output away from the test's pipe: reading it would wait for the child's own end)
        String script = ". tools/loan-lib.sh; loan_timed 1 bash -c '(trap \"\" TERM; exec sleep 60 > /dev/null 2>&1) & echo $! > " + pid
                + "; wait'; echo rc=$?";
        Process p = new ProcessBuilder("bash", "-c", script).redirectErrorStream(true).start();
        String log = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.waitFor(1, TimeUnit.MINUTES), log);
        assertTrue(log.contains("rc=124"), log);
        long child = Long.parseLong(Files.readString(pid).trim());
        java.util.Optional<ProcessHandle> h = ProcessHandle.of(child);
        for (int i = 0; i < 50 && h.isPresent() && h.get().isAlive(); i++) Thread.sleep(100); // (the SIGKILL's delivery)
        assertFalse(h.isPresent() && h.get().isAlive(), "the child that ignored SIGTERM is gone: " + log);
    }

    @Test
    void anOutputFolderWithOtherFilesOrTheProjectIsRefused(@TempDir Path tmp) throws Exception {
        Path foreign = Files.createDirectories(tmp.resolve("mine"));
        Files.writeString(foreign.resolve("precious.txt"), "keep");
        Run r = run("--out", foreign.toString(), "--total", "20");
        assertEquals(2, r.code(), r.out());
        assertTrue(r.out().contains("holds files that are not an earlier loan's"), r.out());
        assertEquals("keep", Files.readString(foreign.resolve("precious.txt")));
        Path project = Path.of("").toAbsolutePath();
        Run p = run("--out", project.getParent().toString(), "--total", "20");
        assertEquals(2, p.code(), p.out());
        assertTrue(p.out().contains("holds the project"), p.out());
    }
}
