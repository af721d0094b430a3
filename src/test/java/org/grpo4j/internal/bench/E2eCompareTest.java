package org.grpo4j.internal.bench;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Merging our end-to-end report with the peers': ratios, the goals (training >= 1.0x / 1.2x HF tokens/s;
 * rollout >= 60% of the roofline at steady state), refusals, and the reader's validation. The reports are canned,
 * with round made-up figures on a "Canned Test GPU": not measurements.
 */
class E2eCompareTest {
    static final String CARD = "Canned Test GPU";

    static E2eReport.Row train(String impl, String preset, double ms, double tokens) {
        Map<String, Double> f = new LinkedHashMap<>();
        f.put("tokens", tokens);
        f.put("tokens_per_s", tokens / (ms / 1e3));
        f.put("flops", 64e12);
        f.put("mfu_pct", 100 * 64e12 / (ms / 1e3) / 1e12 / 989);
        return new E2eReport.Row("train/" + preset + "/4x2048", "train", preset, "4 x 2048 tokens, packed", null, impl, "ok", null, ms, ms, ms, 5, f);
    }

    static E2eReport.Row rollout(String impl, String variant, double seconds, Double steadyPct) {
        Map<String, Double> f = new LinkedHashMap<>();
        f.put("tokens", 196608.0);
        f.put("tokens_per_s", 196608 / seconds);
        f.put("roofline_bytes", 3e12);
        f.put("roofline_pct", 100 * 0.75 / seconds);
        if (steadyPct != null) {
            f.put("steady_tokens_per_s", 200000.0);
            f.put("steady_roofline_pct", steadyPct);
            if (impl.equals("grpo4j")) f.put("steady_bound_pct", 1.25 * steadyPct);
            f.put("host_ms_per_step", 0.05);
        }
        return new E2eReport.Row("rollout/llama-3.2-1b/new256", "rollout", "llama-3.2-1b", "48 prompts x 16 samples, prompt 256, 256 new",
                variant, impl, "ok", null, seconds * 1e3, seconds * 1e3, seconds * 1e3, 1, f);
    }

    static E2eReport report(String tool, String card, String backend, boolean fake, List<E2eReport.Row> rows) {
        return new E2eReport(tool, card, "575.00", "13.0", tool.equals("grpo4j") ? null : "2.9.0", tool.equals("grpo4j") ? null : "4.57.0",
                backend, "bf16", "2026-01-01T00:00:00Z", fake, 4000.0, 989, rows);
    }

    static E2eReport ours(List<E2eReport.Row> rows) { return report("grpo4j", CARD, "cuda:0", false, rows); }

    static E2eReport peers(List<E2eReport.Row> rows) { return report("transformers", CARD, "torch cuda", false, rows); }

    /**
     * With prefix groups a rollout is judged on the bytes its decoder reads (its prompts' KV once a group), not the
     * per-sample roofline it beats by reading less; both shown.
     */
    @Test
    void aGroupedRolloutIsJudgedOnTheBytesItReads() {
        Map<String, Double> f = new LinkedHashMap<>(rollout("grpo4j", "graphs", 1.0, 65.0).figures());
        f.put("roofline_read_pct", 38.0);
        f.put("steady_roofline_read_pct", 41.0);
        E2eReport.Row grouped = new E2eReport.Row("rollout/llama-3.2-1b/new256", "rollout", "llama-3.2-1b", "48 prompts x 16 samples, prompt 256, 256 new",
                "graphs", "grpo4j", "ok", null, 1e3, 1e3, 1e3, 1, f);
        E2eCompare.Result res = E2eCompare.merge(ours(List.of(grouped)), peers(List.of(rollout("hf", null, 16.0, null))), "o", "p");
        assertEquals(List.of(">= 60% of roofline (bytes read): MISSED"), res.lines().get(0).goals());
        assertTrue(res.markdown().contains("| 65.0% (read 41.0%) |"), res.markdown());
        // the shared count: weights every step, each group's prompt once a step, every sample's own tokens
        org.grpo4j.internal.model.LlamaConfig c = org.grpo4j.internal.model.LlamaConfig.preset("llama-3.2-1b");
        double perSample = E2eWork.rooflineBytes(c, 2, 768, 256, 256), shared = E2eWork.rooflineBytesShared(c, 2, 48, 768, 256, 256);
        assertEquals(perSample, E2eWork.rooflineBytesShared(c, 2, 768, 768, 256, 256), 1e-6 * perSample, "a group a sample reads as many bytes");
        assertEquals(255.0 * 720 * 256 * E2eWork.kvBytesPerToken(c, 2), perSample - shared, 1e-6 * perSample, "720 prompts' KV fewer a step");
    }

    /**
     * Training ratios are not judged against placeholder timings, a peer at another precision, or rows with gradient
     * checkpointing (the peer runs without); a ratio within the rows' spread says so.
     */
    @Test
    void trainingRatiosAreJudgedOnlyWhereThePeerDidTheSameWork() {
        E2eReport.Row ck = new E2eReport.Row("train/llama-3.2-1b/4x2048", "train", "llama-3.2-1b", "4 x 2048 tokens, packed", "checkpointing", "grpo4j",
                "ok", null, 125.0, 120.0, 130.0, 5, train("grpo4j", "llama-3.2-1b", 125, 8192).figures());
        E2eCompare.Result r = E2eCompare.merge(ours(List.of(ck)), peers(List.of(train("hf", "llama-3.2-1b", 160, 8192))), "o", "p");
        assertEquals(List.of(">= 1x HF: not judged (the peer runs without gradient checkpointing)",
                "stretch >= 1.2x: not judged (the peer runs without gradient checkpointing)"), r.lines().get(0).goals());
        assertEquals(0, r.goalsJudged());
        E2eReport fake = report("transformers", CARD, "torch cuda", true, List.of(train("hf", "llama-3.2-1b", 160, 8192)));
        assertTrue(E2eCompare.merge(ours(List.of(train("grpo4j", "llama-3.2-1b", 125, 8192))), fake, "o", "p").lines().get(0).goals().get(0)
                .endsWith("not judged (the peer's timings are placeholders)"));
        E2eReport fp32 = new E2eReport("transformers", CARD, "575.00", "13.0", "2.9.0", "4.57.0", "torch cuda", "fp32", "2026-01-01T00:00:00Z", false,
                4000.0, 989, List.of(train("hf", "llama-3.2-1b", 160, 8192)));
        assertEquals(">= 1x HF: not judged (the peer ran at fp32, ours at bf16)",
                E2eCompare.merge(ours(List.of(train("grpo4j", "llama-3.2-1b", 125, 8192))), fp32, "o", "p").lines().get(0).goals().get(0));
        // 1.016x with our steps spread over 10% of the median: met, within the spread
        E2eReport.Row spread = new E2eReport.Row("train/llama-3.2-1b/4x2048", "train", "llama-3.2-1b", "4 x 2048 tokens, packed", null, "grpo4j",
                "ok", null, 125.0, 120.0, 132.5, 5, train("grpo4j", "llama-3.2-1b", 125, 8192).figures());
        assertEquals(">= 1x HF: met (within the rows' spread)",
                E2eCompare.merge(ours(List.of(spread)), peers(List.of(train("hf", "llama-3.2-1b", 127, 8192))), "o", "p").lines().get(0).goals().get(0));
    }

    @Test
    void ratiosAndGoals() {
        E2eReport o = ours(List.of(train("grpo4j", "llama-3.2-1b", 125, 8192), train("grpo4j", "llama-3.1-8b-4l", 160, 8192),
                rollout("grpo4j", "graphs", 1.0, 65.0), rollout("grpo4j", "eager", 2.0, 40.0)));
        E2eReport p = peers(List.of(train("hf", "llama-3.2-1b", 160, 8192), train("hf", "llama-3.1-8b-4l", 150, 8192), rollout("hf", null, 16.0, null)));
        E2eCompare.Result res = E2eCompare.merge(o, p, "ours.json", "peers.json");
        List<E2eCompare.Line> l = res.lines();
        assertEquals(4, l.size());
        // training: 160/125 = 1.28x (goal and stretch met); 150/160 = 0.94x (both missed)
        assertEquals(1.28, l.get(0).ratio(), 1e-12);
        assertEquals(List.of(">= 1x HF: met", "stretch >= 1.2x: met"), l.get(0).goals());
        assertEquals(0.9375, l.get(1).ratio(), 1e-12);
        assertEquals(List.of(">= 1x HF: MISSED", "stretch >= 1.2x: MISSED"), l.get(1).goals());
        // rollout: both variants against the one HF row; the goal on the steady-state roofline share
        assertEquals(16.0, l.get(2).ratio(), 1e-12);
        assertEquals(8.0, l.get(3).ratio(), 1e-12);
        assertEquals(List.of(">= 60% of roofline: met"), l.get(2).goals());
        assertEquals(List.of(">= 60% of roofline: MISSED"), l.get(3).goals());
        assertEquals(2, res.goalsMet());
        assertEquals(4, res.goalsJudged());
        assertFalse(res.failed());
        String md = res.markdown();
        assertTrue(md.contains("card: Canned Test GPU") && md.contains("torch 2.9.0") && md.contains("transformers 4.57.0"), md);
        assertTrue(md.contains("| 1.28x |") && md.contains("| 16.00x |"), md);
        assertTrue(md.contains("4000 / 4000 GB/s"), md);
        assertTrue(md.contains("goals met: 2 of 4 judged"), md);
        assertTablesAreRectangular(md);
        assertTrue(md.contains("steady % bound") && md.contains("Bound = per decode step the longer of"), md);
        // how the peer's rollout ran (prefilled once with a shared cache, or its fallback) is shown under the table
        E2eReport.Row hf = rollout("hf", null, 16.0, null);
        E2eReport.Row noted = new E2eReport.Row(hf.id(), hf.section(), hf.preset(), hf.shape(), null, "hf", "ok",
                "whole generate call incl. prefill; num_return_sequences 16: each prompt prefilled 16x (the shared prefill failed: TypeError)",
                hf.medianMs(), hf.minMs(), hf.maxMs(), hf.reps(), hf.figures());
        String withNote = E2eCompare.merge(o, peers(List.of(noted)), "ours.json", "peers.json").markdown();
        assertTrue(withNote.contains(" rows, how they ran:\n- llama-3.2-1b 48 prompts x 16 samples, prompt 256, 256 new: whole generate call incl. prefill;"
                + " num_return_sequences 16: each prompt prefilled 16x (the shared prefill failed: TypeError)"), withNote);
        assertTablesAreRectangular(withNote);
    }

    /** Every row of every markdown table has its header's number of cells. */
    static void assertTablesAreRectangular(String md) {
        int cells = -1;
        for (String line : md.lines().toList()) {
            if (!line.startsWith("|")) {
                cells = -1;
                continue;
            }
            int n = line.split("\\|", -1).length;
            if (cells < 0) cells = n;
            assertEquals(cells, n, "a table row with another number of cells than its header: " + line + "\n" + md);
        }
    }

    @Test
    void missingFiguresAreShownNotJudged() {
        E2eReport.Row noSteady = rollout("grpo4j", "graphs", 0.5, null); // whole call: 150% of roofline
        E2eReport.Row err = new E2eReport.Row("train/llama-3.2-1b/4x2048", "train", "llama-3.2-1b", "4 x 2048 tokens, packed", null, "grpo4j",
                "error", "CudaException: out of memory", null, null, null, 0, null);
        E2eReport.Row otherTokens = train("grpo4j", "llama-3.1-8b-4l", 100, 4096);
        E2eReport o = ours(List.of(err, otherTokens, noSteady));
        E2eReport.Row peerOnly = new E2eReport.Row("rollout/llama-3.1-8b-4l/new256", "rollout", "llama-3.1-8b-4l", "x", null, "hf", "ok", null,
                1000.0, 1000.0, 1000.0, 1, rollout("hf", null, 1, null).figures());
        E2eReport p = peers(List.of(train("hf", "llama-3.2-1b", 160, 8192), train("hf", "llama-3.1-8b-4l", 150, 8192), peerOnly));
        E2eCompare.Result res = E2eCompare.merge(o, p, "a", "b");
        assertTrue(res.failed(), "an errored row of ours fails the comparison");
        assertNull(res.lines().get(0).ratio());
        assertEquals(List.of(">= 1x HF: not measured", "stretch >= 1.2x: not measured"), res.lines().get(0).goals());
        assertNull(res.lines().get(1).ratio(), "different token counts are not compared");
        assertTrue(res.lines().get(1).goals().get(0).startsWith("not compared: ours counts 4096 tokens, the peer 8192"), res.lines().get(1).goals().toString());
        assertEquals(List.of(">= 60% of roofline (whole call): met"), res.lines().get(2).goals());
        assertEquals(1, res.goalsJudged());
        String md = res.markdown();
        assertTrue(md.contains("**error**: CudaException: out of memory"), md);
        assertTrue(md.contains("(not run by ours)"), md);
        assertTrue(md.contains("3 rows: 1 errors, 0 skipped"), md);
        assertTablesAreRectangular(md);
    }

    @Test
    void refusesOtherCardsAndWarnsAboutFakePeers() {
        E2eReport o = ours(List.of(train("grpo4j", "llama-3.2-1b", 125, 8192)));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> E2eCompare.merge(o, report("transformers", "Other GPU", "torch cuda", false, List.of()), "ours.json", "peers.json"));
        assertTrue(e.getMessage().contains("different cards") && e.getMessage().contains("\"Other GPU\""), e.getMessage());
        String md = E2eCompare.merge(o, report("transformers", CARD, "torch cuda", true, List.of()), "a", "b").markdown();
        assertTrue(md.contains("placeholder timings"), md);
        // a CPU run shows figures and judges nothing
        E2eReport cpu = report("grpo4j", CARD, "cpu", false, List.of(rollout("grpo4j", "graphs", 1, 90.0)));
        E2eCompare.Result t = E2eCompare.table(cpu);
        assertEquals(0, t.goalsJudged());
        assertEquals(List.of(">= 60% of roofline: not judged (not a GPU run)"), t.lines().get(0).goals());
    }

    @Test
    void theReportsGivenTheOtherWayRoundAreRefused() {
        E2eReport o = ours(List.of(train("grpo4j", "llama-3.2-1b", 125, 8192)));
        E2eReport p = peers(List.of(train("hf", "llama-3.2-1b", 160, 8192)));
        var e = assertThrows(IllegalArgumentException.class, () -> E2eCompare.merge(p, o, "peers.json", "ours.json"));
        assertTrue(e.getMessage().startsWith("peers.json was written by \"transformers\", not by grpo4j"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> E2eCompare.merge(o, o, "ours.json", "ours2.json"));
        assertTrue(e.getMessage().startsWith("ours2.json was written by grpo4j"), e.getMessage());
    }

    @Test
    void jsonRoundTripsAndTheReaderNamesWhatIsWrong(@TempDir Path tmp) throws Exception {
        E2eReport o = ours(List.of(train("grpo4j", "llama-3.2-1b", 125, 8192), rollout("grpo4j", "graphs", 1.0, 65.0)));
        Path f = tmp.resolve("ours.json");
        o.write(f);
        assertEquals(o, E2eReport.read(f));
        String good = Files.readString(f);
        List<String[]> bad = new ArrayList<>();
        bad.add(new String[] {good.replace("\"grpo4j-e2e/1\"", "\"grpo4j-bench/1\""), "schema is \"grpo4j-bench/1\"", "grpo4j bench --compare"});
        bad.add(new String[] {good.replace("\"status\" : \"ok\"", "\"status\" : \"done\""), "rows[0].status: \"done\" is not one of error, ok, skipped"});
        bad.add(new String[] {good.replace("\"section\" : \"train\"", "\"section\" : \"eval\""), "rows[0].section: \"eval\""});
        bad.add(new String[] {good.replace("\"id\" : \"train/llama-3.2-1b/4x2048\"", "\"id\" : \"train/other/4x2048\""), "rows[0].id", "train/llama-3.2-1b/..."});
        bad.add(new String[] {good.replaceFirst("\"mfu_pct\" : [0-9.E-]+", "\"mfu_pct\" : -1"), "rows[0].mfu_pct: expected a positive number, got -1.0"});
        bad.add(new String[] {good.replaceFirst("\"tokens_per_s\" : [0-9.E-]+,", ""), "rows[0].tokens_per_s: missing"});
        bad.add(new String[] {good.replaceFirst("\"min_ms\" : [0-9.E-]+", "\"min_ms\" : 1e9"), "rows[0]: expected min_ms <= median_ms <= max_ms"});
        bad.add(new String[] {good.replace("\"peak_tflops\" : 989.0,", ""), "peak_tflops: missing"});
        bad.add(new String[] {good.replace("\"fake\" : false", "\"fake\" : \"no\""), "fake: expected true or false"});
        bad.add(new String[] {good.substring(0, good.length() / 2), "not valid JSON"});
        for (String[] b : bad) {
            Files.writeString(f, b[0]);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> E2eReport.read(f), b[1]);
            assertTrue(e.getMessage().startsWith(f.toString()), e.getMessage());
            for (int i = 1; i < b.length; i++) assertTrue(e.getMessage().contains(b[i]), e.getMessage());
        }
    }

    @Test
    void compareCommandWritesTheDocument(@TempDir Path tmp) throws Exception {
        Path a = tmp.resolve("ours.json"), b = tmp.resolve("peers.json"), out = tmp.resolve("out");
        ours(List.of(train("grpo4j", "llama-3.2-1b", 125, 8192))).write(a);
        peers(List.of(train("hf", "llama-3.2-1b", 160, 8192))).write(b);
        E2eBenchTest.Run r = E2eBenchTest.run("--compare", a.toString(), b.toString(), "--out", out.toString());
        assertEquals(0, r.code(), r.err());
        String md = Files.readString(out.resolve("e2e-compare.md"));
        assertTrue(r.out().startsWith(md), r.out());
        assertTrue(md.contains("| 1.28x |"), md);
        // a peer file from another card: exit 2, one line
        report("transformers", "Other GPU", "torch cuda", false, List.of()).write(b);
        r = E2eBenchTest.run("--compare", a.toString(), b.toString());
        assertEquals(2, r.code());
        assertTrue(r.err().contains("different cards"), r.err());
    }
}
