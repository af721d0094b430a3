package org.grpo4j.internal.bench;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.grpo4j.internal.backend.DType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * tools/e2e-peers.py with --fake-timer (no torch, transformers or GPU needed): its JSON passes the Java reader, and it
 * describes the same problems as E2eBench: each peer row is one of our planned rows with the same token count and
 * the same work (training FLOPs, roofline bytes), which the script computes independently of {@link E2eWork}; and
 * every problem the issue compares (training on both presets, the first rollout shape) has a peer. Skipped when
 * python3 is absent.
 */
class E2ePeersScriptTest {

    static Process script(Path log, String... extra) throws Exception {
        List<String> cmd = new java.util.ArrayList<>(List.of("python3", "tools/e2e-peers.py"));
        cmd.addAll(List.of(extra));
        return new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
    }

    @Test
    void fakeTimerJsonMatchesTheJavaPlan(@TempDir Path tmp) throws Exception {
        assumeTrue(BenchPeersScriptTest.python(), "python3 not found");
        Path json = tmp.resolve("peers.json"), log = tmp.resolve("log.txt");
        Process p = script(log, "--fake-timer", "--json", json.toString());
        assertTrue(p.waitFor(60, TimeUnit.SECONDS), "e2e-peers.py did not finish");
        assertEquals(0, p.exitValue(), Files.readString(log));
        E2eReport peers = E2eReport.read(json);
        assertTrue(peers.fake());
        assertEquals("transformers", peers.tool());
        assertEquals("bf16", peers.precision());
        assertEquals(E2eWork.PEAK_TFLOPS, peers.peakTflops());
        assertNotNull(peers.copyGbs());

        Map<String, E2eBench.Planned> ours = new HashMap<>();
        for (E2eBench.Planned x : E2eBench.plannedRows(E2eBench.GPU_PRESETS, E2eReport.SECTIONS, DType.BF16)) ours.put(x.id(), x);
        Set<String> seen = new HashSet<>();
        for (E2eReport.Row r : peers.rows()) {
            E2eBench.Planned c = ours.get(r.id());
            assertNotNull(c, "peer row " + r.id() + " is not an E2eBench problem");
            assertTrue(seen.add(r.id()), "two peer rows for " + r.id());
            assertEquals(c.shape(), r.shape(), r.id());
            assertEquals(E2eReport.OK, r.status(), r.id());
            assertEquals(c.tokens(), r.fig("tokens"), r.id());
            if (c.flops() != null) assertEquals(c.flops(), r.fig("flops"), 1e-12 * c.flops(), r.id());
            if (c.rooflineBytes() != null) assertEquals(c.rooflineBytes(), r.fig("roofline_bytes"), 1e-12 * c.rooflineBytes(), r.id());
            assertNotEquals("grpo4j", r.impl());
        }
        for (String want : List.of("train/llama-3.2-1b/4x2048", "train/llama-3.1-8b-4l/4x2048", "rollout/llama-3.2-1b/new256",
                "rollout/llama-3.1-8b-4l/new256", "rollout/llama-3.2-1b/new512", "rollout/llama-3.1-8b-4l/new512"))
            assertTrue(seen.contains(want), "no peer for " + want);
        // a fake peer file is refused against a real run (its card is not a card) and warned about on its own card
        E2eReport ours1 = new E2eReport("grpo4j", peers.card(), "d", "r", null, null, "cuda:0", "bf16", "x", false, 1.0, 989, List.of());
        assertTrue(E2eCompare.merge(ours1, peers, "a", "b").markdown().contains("placeholder timings"));
    }

    @ParameterizedTest
    @ValueSource(strings = {"--preset=llama-3.1-8b", "--sections=grpo", "--reps=3"})
    void badOptionsAreRefused(String opt, @TempDir Path tmp) throws Exception {
        assumeTrue(BenchPeersScriptTest.python(), "python3 not found");
        Path log = tmp.resolve("log.txt");
        Process p = script(log, "--fake-timer", opt);
        assertTrue(p.waitFor(60, TimeUnit.SECONDS));
        assertEquals(2, p.exitValue());
        String err = Files.readString(log);
        assertTrue(err.contains(opt.startsWith("--reps") ? "--reps must be >= 5" : "(valid: "), err);
    }

    @Test
    void withoutTorchTheRealRunSaysWhatIsMissing(@TempDir Path tmp) throws Exception {
        assumeTrue(BenchPeersScriptTest.python(), "python3 not found");
        Process probe = new ProcessBuilder("python3", "-c", "import torch, transformers").redirectErrorStream(true).start();
        probe.getInputStream().readAllBytes();
        assumeTrue(probe.waitFor(60, TimeUnit.SECONDS) && probe.exitValue() != 0, "torch and transformers are installed here");
        Path log = tmp.resolve("log.txt"), json = tmp.resolve("p.json");
        Process p = script(log, "--json", json.toString());
        assertTrue(p.waitFor(60, TimeUnit.SECONDS));
        assertEquals(1, p.exitValue());
        assertTrue(Files.readString(log).contains("is not installed (use --fake-timer"), Files.readString(log));
        assertFalse(Files.exists(json));
    }
}
