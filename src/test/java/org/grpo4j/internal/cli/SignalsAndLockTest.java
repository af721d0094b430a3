package org.grpo4j.internal.cli;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * What needs a second process: SIGTERM stops training at a step boundary with a checkpoint (exit 143), a second
 * signal exits at once, and a run directory's lock keeps a second run out while the first lives (and not after).
 * The first signal is SIGTERM in these tests because a background JVM may inherit an ignored SIGINT; the CLI treats
 * both alike.
 */
class SignalsAndLockTest {

    static Process child(Path log, String mainClass, String... args) throws Exception {
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-cp", System.getProperty("java.class.path"), mainClass));
        cmd.addAll(List.of(args));
        return new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
    }

    /** Polls (every 20 ms, for at most 2 minutes) until the file's text satisfies the condition or the process ends. */
    static String awaitText(Path f, Process p, Predicate<String> cond) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.MINUTES.toNanos(2);
        String s = "";
        while (System.nanoTime() < deadline) {
            s = Files.exists(f) ? Files.readString(f) : "";
            if (cond.test(s) || !p.isAlive()) return s;
            Thread.sleep(20);
        }
        return s;
    }

    static Path config(Path dir, int steps, int saveFreq) throws Exception {
        Path data = Files.createDirectories(dir.resolve("data"));
        Files.write(data.resolve("tiny.jsonl"), Files.readAllLines(Path.of("examples/data/tiny-arith.jsonl")).subList(0, 64));
        Path c = dir.resolve("t.json");
        Files.writeString(c, BadInputTest.CONFIG.replace("\"num_training_steps\": 2", "\"num_training_steps\": " + steps)
                .replace("\"save_freq\": 1", "\"save_freq\": " + saveFreq));
        return c;
    }

    static List<String> names(Path dir) throws Exception {
        try (Stream<Path> s = Files.list(dir)) {
            return s.map(p -> p.getFileName().toString()).sorted().toList();
        }
    }

    @Test
    void sigtermCheckpointsAtTheStepBoundary(@TempDir Path tmp) throws Exception {
        Path cfg = config(tmp, 200, 0), out = tmp.resolve("run"), log = tmp.resolve("child.log");
        Process p = child(log, "org.grpo4j.internal.cli.Main", "train", "--config", cfg.toString(), "--output", out.toString());
        Path metrics = out.resolve("metrics.jsonl");
        awaitText(metrics, p, s -> s.lines().count() >= 2);
        assertTrue(p.isAlive(), () -> "the child ended early: " + BadInputTest.readQuietly(log));
        p.destroy(); // SIGTERM
        assertTrue(p.waitFor(2, TimeUnit.MINUTES), "the child stops");
        String text = Files.readString(log);
        assertEquals(143, p.exitValue(), text);
        int steps = Files.readAllLines(metrics).size();
        assertTrue(steps >= 2 && steps < 200, "stopped early, after " + steps + " steps");
        assertTrue(text.contains("SIGTERM: stopping at the end of this step with a checkpoint"), text);
        assertTrue(text.contains("grpo4j: stopped at step " + steps), text);
        assertEquals(List.of("step_0", "step_" + steps), names(out.resolve("checkpoints")), "a checkpoint of the last step, nothing half-written");
        assertTrue(Files.isRegularFile(out.resolve("checkpoints/step_" + steps + "/trainer_state.json")));
    }

    @Test
    void theLockKeepsASecondRunOutAndASecondSignalExitsAtOnce(@TempDir Path tmp) throws Exception {
        Path cfg = config(tmp, 2, 1), out = tmp.resolve("run"), log = tmp.resolve("child.log");
        Process p = child(log, "org.grpo4j.internal.cli.BlockingTrainChild", cfg.toString(), out.toString());
        try {
            String text = awaitText(log, p, s -> s.contains("BLOCKED at step 1"));
            assertTrue(p.isAlive() && text.contains("BLOCKED at step 1"), "the child holds the run: " + text);
            Map<String, String> before = BadInputTest.snapshot(tmp, List.of("child.log"));

            // a second run into the same directory, in this JVM: refused, nothing touched
            for (String[] args : List.of(
                    new String[] {"train", "--config", cfg.toString(), "--output", out.toString(), "--overwrite"},
                    new String[] {"train", "--resume", out.toString()})) {
                CliTest.Run r = CliTest.run(args);
                assertEquals(2, r.code(), r.err());
                assertTrue(r.err().contains(out + ": in use by another grpo4j run (pid " + p.pid()), r.err());
            }
            assertEquals(before, BadInputTest.snapshot(tmp, List.of("child.log")), "the running run's files are untouched");

            p.destroy(); // SIGTERM: the child is inside step 1, so it would checkpoint step 1 ...
            text = awaitText(log, p, s -> s.contains("stopping at the end of this step"));
            assertTrue(text.contains("SIGTERM: stopping at the end of this step"), text);
            p.destroy(); // ... but the second signal ends it at once
            assertTrue(p.waitFor(2, TimeUnit.MINUTES), "the second signal ends the child");
            text = Files.readString(log);
            assertEquals(143, p.exitValue(), text);
            assertTrue(text.contains("second signal (SIGTERM): exiting at once"), text);
            assertEquals(List.of("step_0"), names(out.resolve("checkpoints")), "no checkpoint of the unfinished step, no temporary left");
        } finally {
            p.destroyForcibly();
        }
        // the lock died with the process: the run resumes from step 0 and finishes
        CliTest.Run r = CliTest.run("train", "--resume", out.toString());
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("finished at step 2"), r.out());
    }
}
