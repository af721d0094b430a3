package org.grpo4j.internal.cli;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeFalse;

import java.nio.file.Files;
import java.nio.file.Path;
import org.grpo4j.internal.backend.CudaRuntime;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code grpo4j bench} in-process: the no-GPU line, bad options, and --compare's files and exit codes. */
class BenchCommandTest {
    record Run(int code, String out, String err) {}

    /** The CLI in-process (CliTest's harness). */
    static Run run(String... args) {
        CliTest.Run r = CliTest.run(args);
        return new Run(r.code(), r.out(), r.err());
    }

    static final String OURS = "src/test/resources/bench/ours.json", PEERS = "src/test/resources/bench/peers.json";

    @Test
    void withoutAGpuItSaysSoInOneLineAndExitsZero(@TempDir Path tmp) {
        CudaRuntime.Availability a = CudaRuntime.probe();
        assumeFalse(a.available(), "a GPU is present: the no-GPU path cannot be taken here");
        Path json = tmp.resolve("ours.json");
        Run r = run("bench", "--family", "all", "--json", json.toString());
        assertEquals(0, r.code(), r.err());
        assertEquals(1, r.out().lines().count(), r.out());
        assertEquals("grpo4j bench: no GPU (" + a.reason() + "); nothing measured: this benchmark is GPU-only", r.out().strip());
        assertFalse(Files.exists(json), "nothing measured, nothing written");
    }

    @Test
    void unknownFamilySizeOrDtypeListsTheValidOnes() {
        Run r = run("bench", "--family", "norm,flashattn");
        assertEquals(2, r.code());
        assertEquals("grpo4j bench: unknown --family \"flashattn\" (valid: gemm, norm, rope, swiglu, embedding, elementwise, "
                + "adamw, reduce, kvcache, attention, decode, sampling, lmhead, all)", r.err().strip());
        r = run("bench", "--sizes", "70b");
        assertEquals(2, r.code());
        assertEquals("grpo4j bench: unknown --sizes \"70b\" (valid: llama-3.1-8b, small)", r.err().strip());
        r = run("bench", "--dtype", "fp16");
        assertEquals(2, r.code());
        assertEquals("grpo4j bench: unknown --dtype \"fp16\" (valid: bf16, fp32)", r.err().strip());
        r = run("bench", "--reps", "5");
        assertEquals(2, r.code());
        assertTrue(r.err().contains("--reps must be >= 20"), r.err());
        r = run("bench", "--row-timeout", "-1");
        assertEquals(2, r.code());
        assertEquals("grpo4j bench: --row-timeout must be >= 0 seconds, got -1", r.err().strip());
    }

    /** --resume takes an earlier report of the same sizes (checked before any device is looked at). */
    @Test
    void resumeNeedsAReportOfTheSameSizes(@TempDir Path tmp) {
        Path missing = tmp.resolve("none.json");
        Run r = run("bench", "--resume", missing.toString());
        assertEquals(2, r.code());
        assertEquals("grpo4j bench: --resume " + missing + ": no such file", r.err().strip());
        r = run("bench", "--resume", PEERS);
        assertEquals(2, r.code());
        assertTrue(r.err().strip().matches("grpo4j bench: --resume .*peers\\.json: a report of \"[^\"]+\", not of grpo4j bench"), r.err());
        r = run("bench", "--sizes", "small", "--resume", OURS);
        assertEquals(2, r.code());
        assertTrue(r.err().strip().matches("grpo4j bench: --resume .*: its rows are of sizes \"llama-3\\.1-8b\", this run's are \"small\""), r.err());
    }

    @Test
    void compareWritesTheTableAndTheChart(@TempDir Path tmp) {
        Path dir = tmp.resolve("cmp");
        Run r = run("bench", "--compare", OURS, PEERS, "--out", dir.toString());
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("| gemm | matmul 8192x4096x14336 |"), r.out());
        assertTrue(Files.isRegularFile(dir.resolve("bench-compare.md")));
        assertTrue(Files.isRegularFile(dir.resolve("bench-ratios.png")));
        assertTrue(r.out().startsWith(assertDoesNotThrow(() -> Files.readString(dir.resolve("bench-compare.md")))));
    }

    @Test
    void compareRefusesAnotherCardAndFailsOnAFailedRow(@TempDir Path tmp) throws Exception {
        Path other = tmp.resolve("peers.json");
        Files.writeString(other, Files.readString(Path.of(PEERS)).replace("\"Canned Test GPU\"", "\"NVIDIA A100-SXM4-80GB\""));
        Run r = run("bench", "--compare", OURS, other.toString());
        assertEquals(2, r.code());
        assertTrue(r.err().startsWith("grpo4j bench: cannot compare runs on different cards: " + OURS + " ran on \"Canned Test GPU\", "
                + other + " on \"NVIDIA A100-SXM4-80GB\""), r.err());
        assertEquals("", r.out());

        Path failed = tmp.resolve("ours.json");
        Files.writeString(failed, Files.readString(Path.of(OURS)).replaceFirst("\"status\": \"ok\"", "\"status\": \"FAILED\""));
        r = run("bench", "--compare", failed.toString(), PEERS);
        assertEquals(1, r.code(), r.err());
        assertTrue(r.out().contains("**FAILED**"), r.out());

        r = run("bench", "--compare", OURS, tmp.resolve("missing.json").toString());
        assertEquals(2, r.code());
        assertTrue(r.err().contains("missing.json: not found"), r.err());
    }

    /**
     * --row-timeout's watch: the rows so far written after every row (complete: false); a row that runs past the limit
     * is written as its error row after them, and the run is stopped (here a latch in place of halting the JVM).
     */
    @Test
    void aRowPastItsTimeoutIsWrittenAsAnErrorAndTheRunStops(@TempDir Path tmp) throws Exception {
        org.grpo4j.internal.bench.BenchReport all = org.grpo4j.internal.bench.BenchReport.read(Path.of(OURS));
        int n = all.rows().size();
        var first = new org.grpo4j.internal.bench.BenchReport(all.tool(), all.sizes(), all.card(), all.driver(), all.runtime(),
                all.torch(), all.date(), all.fake(), all.copyGbs(), all.gemmTflops(), all.rows().subList(0, n - 1));
        Path json = tmp.resolve("ours.json");
        java.util.concurrent.CountDownLatch stopped = new java.util.concurrent.CountDownLatch(1);
        BenchCommand.RowWatch w = new BenchCommand.RowWatch(json, 300, 10, stopped::countDown);
        try {
            w.starting("x/one", all.rows().get(0), first);
            w.finished(first);
            String written = Files.readString(json);
            assertTrue(written.contains("\"complete\" : false") || written.contains("\"complete\": false"), written);
            assertEquals(n - 1, org.grpo4j.internal.bench.BenchReport.read(json).rows().size());
            org.grpo4j.internal.bench.BenchRow hung = all.rows().get(n - 1);
            w.starting(hung.id(), hung, first);
            assertTrue(stopped.await(10, java.util.concurrent.TimeUnit.SECONDS), "the run stopped");
            var after = org.grpo4j.internal.bench.BenchReport.read(json);
            assertEquals(n, after.rows().size());
            assertEquals(hung.id(), after.rows().get(n - 1).id());
        } finally {
            w.stop();
        }
    }

    /** A row within its timeout: no stop. */
    @Test
    void rowsWithinTheTimeoutDoNotStopTheRun(@TempDir Path tmp) throws Exception {
        org.grpo4j.internal.bench.BenchReport all = org.grpo4j.internal.bench.BenchReport.read(Path.of(OURS));
        java.util.concurrent.CountDownLatch stopped = new java.util.concurrent.CountDownLatch(1);
        BenchCommand.RowWatch w = new BenchCommand.RowWatch(tmp.resolve("ours.json"), 60_000, 10, stopped::countDown);
        try {
            w.starting("x/one", all.rows().get(0), all);
            assertFalse(stopped.await(200, java.util.concurrent.TimeUnit.MILLISECONDS));
            w.finished(all);
        } finally {
            w.stop();
        }
        assertEquals(1, stopped.getCount());
    }
}
