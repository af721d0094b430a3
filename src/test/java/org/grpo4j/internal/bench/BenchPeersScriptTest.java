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
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.io.TempDir;

/**
 * tools/bench-peers.py with --fake-timer (no torch, no GPU needed): its JSON passes the Java reader's validation, and
 * it describes the same problems as the Java harness: every peer row's id is one of ours with the same shape and
 * work, and every peer our goals compare against is there. Skipped when python3 is absent.
 */
class BenchPeersScriptTest {

    static boolean python() {
        try {
            Process p = new ProcessBuilder("python3", "--version").redirectErrorStream(true).start();
            p.getInputStream().readAllBytes();
            return p.waitFor(20, TimeUnit.SECONDS) && p.exitValue() == 0;
        } catch (Exception e) {
            return false;
        }
    }

    static Process script(Path out, String... extra) throws Exception {
        List<String> cmd = new java.util.ArrayList<>(List.of("python3", "tools/bench-peers.py"));
        cmd.addAll(List.of(extra));
        return new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(out.toFile()).start();
    }

    @ParameterizedTest
    @ValueSource(strings = {"llama-3.1-8b", "small"})
    void fakeTimerJsonMatchesTheJavaHarness(String sizes, @TempDir Path tmp) throws Exception {
        assumeTrue(python(), "python3 not found");
        Path json = tmp.resolve("peers.json"), log = tmp.resolve("log.txt");
        Process p = script(log, "--fake-timer", "--sizes", sizes, "--json", json.toString());
        assertTrue(p.waitFor(120, TimeUnit.SECONDS), "bench-peers.py did not finish");
        assertEquals(0, p.exitValue(), Files.readString(log));
        BenchReport peers = BenchReport.read(json);
        assertTrue(peers.fake());
        assertEquals("pytorch", peers.tool());
        assertEquals(sizes, peers.sizes());
        assertNotNull(peers.copyGbs());
        assertNotNull(peers.gemmTflops());

        Map<String, Cases.Case> ours = new HashMap<>();
        for (Cases.Case c : Cases.plan(BenchSizes.named(sizes), DType.BF16, Cases.FAMILIES)) ours.put(c.id(), c);
        Set<String> seen = new HashSet<>();
        for (BenchRow r : peers.rows()) {
            Cases.Case c = ours.get(r.id());
            assertNotNull(c, "peer row " + r.id() + " is not a grpo4j problem");
            assertEquals(c.shape(), r.shape(), r.id());
            assertEquals(c.workUnit(), r.workUnit(), r.id());
            assertEquals(c.work(), r.work(), 1e-12 * c.work(), r.id());
            assertEquals(BenchRow.OK, r.status(), r.id());
            assertFalse(r.impl().equals("grpo4j"), r.id());
            seen.add(r.id() + " @ " + r.impl());
        }
        // every peer a goal is judged against exists for that problem (a variant's: for its problem)
        for (Cases.Case c : ours.values()) {
            BenchRow probe = new BenchRow(c.id(), c.family(), c.name(), c.shape(), c.dtype(), "grpo4j", BenchRow.OK, null,
                    1.0, 1.0, 1.0, 1, c.work(), c.workUnit(), c.formula(), 1.0, "", null, null, null, null);
            for (Compare.Goal g : Compare.goals(probe))
                if (g.peerImpl() != null)
                    assertTrue(seen.contains(Compare.problemId(c.id()) + " @ " + g.peerImpl()), c.id() + " needs peer " + g.peerImpl());
        }
        // both ceilings and every family are covered by the peers
        for (String f : Cases.FAMILIES) assertTrue(peers.rows().stream().anyMatch(r -> r.family().equals(f)), "no peer for " + f);
    }

    @ParameterizedTest
    @ValueSource(strings = {"--family=flash", "--sizes=70b", "--reps=3"})
    void badOptionsAreRefusedWithTheValidList(String opt, @TempDir Path tmp) throws Exception {
        assumeTrue(python(), "python3 not found");
        Path log = tmp.resolve("log.txt");
        Process p = script(log, "--fake-timer", opt);
        assertTrue(p.waitFor(60, TimeUnit.SECONDS));
        assertEquals(2, p.exitValue());
        String err = Files.readString(log);
        assertTrue(err.contains(opt.startsWith("--reps") ? "--reps must be >= 20" : "(valid: "), err);
    }
}
