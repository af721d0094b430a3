package org.grpo4j.internal.bench;

import static org.junit.jupiter.api.Assertions.*;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class DemoCompareTest {
    /** A run directory whose metrics rise from {@code start} to {@code end} over {@code steps} steps. */
    static Path run(Path dir, int steps, double start, double end) throws IOException {
        Files.createDirectories(dir);
        List<String> lines = new ArrayList<>();
        for (int s = 1; s <= steps; s++)
            lines.add("{\"training_step\":" + s + ".0,\"objective/verifiable_correct_rate\":" + (start + (end - start) * (s - 1) / (steps - 1.0)) + ",\"lr\":0.001}");
        Files.write(dir.resolve("metrics.jsonl"), lines);
        return dir;
    }

    @Test
    void aRunThatEndsWhereTheReferenceEndsLearnsLikeIt(@TempDir Path tmp) throws IOException {
        DemoCompare.Curve ref = DemoCompare.read(run(tmp.resolve("cpu"), 160, 0.25, 0.92), "cpu", 150);
        DemoCompare.writeReference(ref, tmp.resolve("ref.json"));
        DemoCompare.Curve back = DemoCompare.readReference(tmp.resolve("ref.json"));
        assertArrayEquals(ref.rates(), back.rates());
        assertEquals(150, back.seconds());

        DemoCompare.Result close = DemoCompare.compare(back, DemoCompare.read(run(tmp.resolve("gpu"), 160, 0.3, 0.88), "cuda", 30));
        assertTrue(close.learns() && close.likeReference(), close.markdown());
        assertTrue(close.markdown().contains("cuda is 5.00x the cpu run's speed"), close.markdown());
        assertTrue(close.markdown().contains("| mean of steps 151-160 |"), close.markdown());

        DemoCompare.Result flat = DemoCompare.compare(back, DemoCompare.read(run(tmp.resolve("flat"), 160, 0.3, 0.35), "cuda", 30));
        assertFalse(flat.learns(), flat.markdown());
        assertFalse(flat.likeReference());
        assertTrue(flat.markdown().contains("does NOT learn like the cpu run"), flat.markdown());

        DemoCompare.Result low = DemoCompare.compare(back, DemoCompare.read(run(tmp.resolve("low"), 160, 0.25, 0.70), "cuda", 30));
        assertTrue(low.learns(), "it learns, but ends 0.2 below the reference");
        assertFalse(low.likeReference(), low.markdown());

        DemoCompare.Result cut = DemoCompare.compare(back, DemoCompare.read(run(tmp.resolve("cut"), 80, 0.25, 0.92), "cuda", 30));
        assertFalse(cut.likeReference(), "a run that stopped early is not the same run");
        assertTrue(cut.markdown().contains("| mean of steps 151-160 | 0.901 | - |"), cut.markdown());
        assertFalse(cut.markdown().contains("speed"), "no speed ratio between runs of different lengths");
        assertTrue(cut.markdown().contains("the same 160 steps: no, "), "the verdict names its failed criterion: " + cut.markdown());
        assertTrue(close.markdown().contains("needs +0.30: yes") && close.markdown().contains("the same 160 steps: yes"), close.markdown());
    }

    @Test
    void badMetricsAreNamedByFileAndLine(@TempDir Path tmp) throws IOException {
        Path d = Files.createDirectories(tmp.resolve("r"));
        Files.write(d.resolve("metrics.jsonl"), List.of("{\"training_step\":1,\"objective/verifiable_correct_rate\":0.5}", "{\"training_step\":3,\"objective/verifiable_correct_rate\":0.5}"));
        IOException e = assertThrows(IOException.class, () -> DemoCompare.read(d, "cuda", 1));
        assertTrue(e.getMessage().endsWith("metrics.jsonl:2: training_step 3, expected 2"), e.getMessage());
        Files.write(d.resolve("metrics.jsonl"), List.of("{\"training_step\":1}"));
        e = assertThrows(IOException.class, () -> DemoCompare.read(d, "cuda", 1));
        assertTrue(e.getMessage().contains("metrics.jsonl:1: no objective/verifiable_correct_rate"), e.getMessage());
        e = assertThrows(IOException.class, () -> DemoCompare.read(tmp.resolve("none"), "cuda", 1));
        assertTrue(e.getMessage().contains("no metrics"), e.getMessage());
        Files.writeString(tmp.resolve("ref.json"), "{\"seconds\": 3}");
        e = assertThrows(IOException.class, () -> DemoCompare.readReference(tmp.resolve("ref.json")));
        assertTrue(e.getMessage().contains("needs verifiable_correct_rate"), e.getMessage());
    }
}
