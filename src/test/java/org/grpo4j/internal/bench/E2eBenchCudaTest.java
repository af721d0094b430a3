package org.grpo4j.internal.bench;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Path;
import java.util.List;
import org.grpo4j.internal.backend.TestBackends;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The e2e benchmark's rollout rows on CUDA at the tiny preset, before a loan's real run relies on them: the one-stream
 * rows, and the two-streams row (two backends on one device, each half of the batch driven by its own thread, with
 * decode graphs captured and replayed on both) generate every token.
 */
@Tag("gpu")
class E2eBenchCudaTest {
    @Test
    void tinyRolloutRowsRunOnCudaIncludingTwoStreams(@TempDir Path tmp) throws Exception {
        TestBackends.cuda(); // skips without a device
        Path json = tmp.resolve("ours.json");
        E2eBenchTest.Run r = E2eBenchTest.run("cuda", "--preset", "tiny", "--sections", "rollout", "--json", json.toString());
        assertEquals(0, r.code(), r.err() + r.out());
        List<E2eReport.Row> rows = E2eReport.read(json).rows();
        assertEquals(List.of("graphs", "graphs, no prefix groups", "graphs, serial steps", "graphs, 2 streams", "eager", "graphs"),
                rows.stream().map(E2eReport.Row::variant).toList());
        for (E2eReport.Row row : rows) {
            assertEquals(E2eReport.OK, row.status(), row.id() + " " + row.variant() + ": " + row.note());
            int n = row.id().endsWith("new8") ? 8 : 16;
            assertEquals(16.0 * n, row.fig("tokens"), row.id()); // every sequence to the end: no stop token
            if (row.variant().startsWith("graphs")) assertTrue(row.fig("graph_replays") > 0, row.id() + " " + row.variant() + ": replays the decode graph");
            // pipelined decode (the default on CUDA): every decode step but the first issued before the one before was taken in
            assertEquals(row.variant().equals(E2eBench.SERIAL) ? 0 : n - 2, row.fig("overlapped_steps"), row.id() + " " + row.variant());
            if (row.variant().endsWith("2 streams"))
                assertTrue(row.fig("graph_replays_second_half") > 0, row.id() + ": the second half replays its decode graph too");
        }
    }

    /** --profile-ops writes a table per training row and per eager rollout row, and puts the largest shares in the note. */
    @Test
    void opProfilesOfTheTrainingAndEagerRolloutRows(@TempDir Path tmp) throws Exception {
        TestBackends.cuda();
        Path json = tmp.resolve("ours.json"), dir = tmp.resolve("ops");
        E2eBenchTest.Run r = E2eBenchTest.run("cuda", "--preset", "tiny", "--sections", "train,rollout", "--json", json.toString(),
                "--profile-ops", dir.toString());
        assertEquals(0, r.code(), r.err() + r.out());
        List<String> files;
        try (var s = java.nio.file.Files.list(dir)) {
            files = s.map(p -> p.getFileName().toString()).sorted().toList();
        }
        assertEquals(List.of("rollout_tiny_new8-eager.md", "train_tiny_4x64.md"), files);
        String train = java.nio.file.Files.readString(dir.resolve("train_tiny_4x64.md"));
        assertTrue(train.contains("| matmul |") && train.contains("| tokenLogprobsBackward |") && train.contains("| adamW |"), train);
        for (E2eReport.Row row : E2eReport.read(json).rows())
            assertEquals(row.section().equals("train") || "eager".equals(row.variant()), row.note().contains("; ops ("), row.id() + " " + row.variant() + ": " + row.note());
    }
}
