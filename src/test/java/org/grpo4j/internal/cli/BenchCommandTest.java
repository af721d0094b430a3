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
}
