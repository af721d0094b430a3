package org.grpo4j.internal.bench;

import static org.junit.jupiter.api.Assertions.*;

import java.awt.image.BufferedImage;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import javax.imageio.ImageIO;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The compare step on canned reports (src/test/resources/bench: made-up round timings on a "Canned Test GPU", not
 * measurements): the merged table's ratios and goals, peers that are missing or errored, card and size mismatches,
 * FAILED rows, malformed files, and the chart.
 */
class CompareTest {
    static final Path OURS = Path.of("src/test/resources/bench/ours.json"), PEERS = Path.of("src/test/resources/bench/peers.json");

    static Compare.Result merge() throws Exception {
        return Compare.merge(BenchReport.read(OURS), BenchReport.read(PEERS), "ours.json", "peers.json");
    }

    static Compare.Line line(Compare.Result r, String id, String impl) {
        return r.lines().stream().filter(l -> l.ours().id().equals(id) && (impl == null ? l.peer() == null : l.peer() != null && l.peer().impl().equals(impl)))
                .findFirst().orElseThrow(() -> new AssertionError("no line " + id + " vs " + impl));
    }

    /** The markdown line of the table that mentions all the given fragments. */
    static String row(String md, String... parts) {
        return md.lines().filter(l -> l.startsWith("|") && java.util.Arrays.stream(parts).allMatch(l::contains)).findFirst()
                .orElseThrow(() -> new AssertionError("no table line with " + List.of(parts) + " in\n" + md));
    }

    @Test
    void ratiosArePeerTimeOverOurTimeWithTheIssuesGoals() throws Exception {
        BenchReport ours = BenchReport.read(OURS), peers = BenchReport.read(PEERS);
        Compare.Result r = merge();
        String md = r.markdown();
        // gemm: ratio peer/ours against the 0.95x goal, one met and one missed
        for (String id : List.of("gemm/matmul 8192x4096x14336", "gemm/matmul 768x4096x4096")) {
            double want = peerRow(peers, id, "torch.matmul").medianMs() / ourRow(ours, id).medianMs();
            Compare.Line l = line(r, id, "torch.matmul");
            assertEquals(want, l.ratio(), 1e-12);
            assertEquals(List.of(">= 0.95x torch.matmul: " + (want >= 0.95 ? "met" : "MISSED")), l.goals());
            assertTrue(row(md, id.substring(5), "torch.matmul").contains(String.format(Locale.ROOT, "| %.2fx |", want)), md);
        }
        // rmsnorm has two peers (eager, compile): two lines, our figures on the first only; the 80%-of-copy goal once
        Compare.Line eager = line(r, "norm/rmsnorm fwd", "torch eager"), comp = line(r, "norm/rmsnorm fwd", "torch.compile");
        BenchRow norm = ourRow(ours, "norm/rmsnorm fwd");
        assertEquals(List.of(">= 80% of ceiling: " + (norm.ceilingPct() >= 80 ? "met" : "MISSED")), eager.goals());
        assertEquals(List.of(), comp.goals());
        assertTrue(row(md, "torch.compile").startsWith("|  | \" |"), row(md, "torch.compile"));
        // adamW: 80% of copy and >= 1.0x fused AdamW, each judged
        Compare.Line adam = line(r, "adamw/adamw", Compare.TORCH_ADAMW_FUSED);
        assertEquals(8.7 / 9.0, adam.ratio(), 1e-12);
        assertTrue(adam.goals().contains(">= 1x torch AdamW(fused): MISSED"), adam.goals().toString());
        // sampling: 20x sort top-p and <= 2x one logits read at our copy bandwidth; plain vs exponential race
        BenchRow topP = ourRow(ours, "sampling/top-p 0.9");
        boolean within = topP.medianMs() <= 2 * topP.work() / (ours.copyGbs() * 1e6);
        assertEquals(List.of(">= 20x sort top-p: met", "<= 2x one logits read at copy bandwidth: " + (within ? "met" : "MISSED")),
                line(r, "sampling/top-p 0.9", Compare.SORT_TOP_P).goals());
        assertEquals(List.of(), line(r, "sampling/plain", "softmax+multinomial").goals());
        assertEquals(List.of(">= 1x exponential race: MISSED"), line(r, "sampling/plain", Compare.EXPONENTIAL_RACE).goals());
        // LM head: ratio and extra memory (ours 100 MiB <= 256 MiB)
        assertEquals(List.of(">= 1x log_softmax gather: met", "<= 256 MiB extra: met"),
                line(r, "lmhead/logprob fwd+bwd", Compare.LOG_SOFTMAX_GATHER).goals());
        // host cost: 6 us per call < 10
        assertEquals(List.of("< 10 us/call: met"), line(r, "gemm/host cost 768x4096x4096", "torch.matmul").goals());
        // not implemented on our side: the peers' figures are shown, no ratio, the goal not judged
        Compare.Line att = line(r, "attention/fwd b8 s2048", Compare.SDPA_FLASH);
        assertNull(att.ratio());
        assertEquals(List.of(">= 1x SDPA flash: not measured"), att.goals());
        assertTrue(row(md, "SDPA cudnn").contains("error: RuntimeError: No available kernel"), md);
        // a peer problem we do not have is listed, not dropped
        assertTrue(row(md, "sumsquares").contains("(no such problem in ours)"), md);
        // the ceilings are compared too, and carry no goal
        assertEquals(0.48 / 0.5, line(r, "ceiling/copy fp32", "torch copy_").ratio(), 1e-12);
        assertEquals(List.of(), line(r, "ceiling/copy fp32", "torch copy_").goals());
        assertFalse(r.failed());
        long met = r.lines().stream().flatMap(l -> l.goals().stream()).filter(g -> g.endsWith(": met")).count();
        long judged = r.lines().stream().flatMap(l -> l.goals().stream()).filter(g -> g.endsWith(": met") || g.endsWith(": MISSED")).count();
        assertEquals(met, r.goalsMet());
        assertEquals(judged, r.goalsJudged());
        assertTrue(md.contains("goals met: " + met + " of " + judged + " judged"), md);
        assertTrue(md.startsWith("card: Canned Test GPU;"), md);
        assertTrue(md.contains("torch 2.11 (canned)"), md);
    }

    @Test
    void aVariantRowIsComparedWithItsProblemsPeersAndHasItsGoals() throws Exception {
        Compare.Result r = merge();
        Compare.Line v = line(r, "lmhead/logprob fwd+bwd [dz bf16]", Compare.LOG_SOFTMAX_GATHER);
        assertEquals(48.5 / 60.0, v.ratio(), 1e-12);
        assertEquals(List.of(">= 1x log_softmax gather: MISSED", "<= 256 MiB extra: met"), v.goals());
        // the default row keeps its own comparison, and the peer's problem is not listed as one we lack
        assertEquals(48.5 / 45.0, line(r, "lmhead/logprob fwd+bwd", Compare.LOG_SOFTMAX_GATHER).ratio(), 1e-12);
        assertTrue(row(r.markdown(), "logprob fwd+bwd [dz bf16]").contains("| 0.81x |"), r.markdown());
        assertFalse(r.markdown().lines().anyMatch(l -> l.contains("logprob fwd+bwd") && l.contains("no such problem")), r.markdown());
        // the trainer's 1 GiB blocks: the ratio goal, not the 256 MiB bound
        BenchRow wide = new BenchRow("lmhead/logprob fwd+bwd " + Cases.GRPO_LOSS_TRAINER, "lmhead", "logprob fwd+bwd " + Cases.GRPO_LOSS_TRAINER,
                "N=8192", "bf16", "ours", BenchRow.OK, "", 1.0, 1.0, 1.0, 20, 1.0, "flop", "", 1.0, "TFLOP/s", 1.0, 0.0, 1L << 30, null);
        assertEquals(List.of(">= 1x log_softmax gather"), Compare.goals(wide).stream().map(Compare.Goal::label).toList());
        assertEquals("attention/fwd+bwd b8 s2048", Compare.problemId("attention/fwd+bwd b8 s2048 [fast dQ]"));
        assertEquals("gemm/matmul 8192x8192x8192", Compare.problemId("gemm/matmul 8192x8192x8192"));
    }

    /** The issue's decode goal is for its problem alone, not the head-dim-64 diagnostic nor the prefix-group rows. */
    @Test
    void onlyTheIssuesDecodeProblemHasTheDecodeGoal() {
        for (String name : List.of("decode b768 ctx1024", "decode b768 ctx384 d64", "decode b768 ctx384 d64 share16x256"))
            assertEquals(name.equals("decode b768 ctx1024") ? List.of(">= 1x SDPA gqa") : List.of(),
                    Compare.goals(new BenchRow("decode/" + name, "decode", name, "B=768", "bf16", "ours", BenchRow.OK, "", 1.0, 1.0, 1.0,
                            20, 1.0, "byte", "", 1.0, "GB/s", 1.0, 0.0, null, null)).stream().map(Compare.Goal::label).toList(), name);
    }

    /** A row measured in another dtype (a run at --dtype fp32 has the same ids) is not compared with the peers' bf16 row. */
    @Test
    void aRowOfAnotherDTypeIsNotComparedWithThePeer() throws Exception {
        BenchReport ours = BenchReport.read(OURS), peers = BenchReport.read(PEERS);
        BenchRow bf16 = ourRow(ours, "gemm/matmul 8192x4096x14336");
        assertEquals("bf16", Compare.leadingDType(peerRow(peers, bf16.id(), "torch.matmul").dtype()));
        BenchRow fp32 = new BenchRow(bf16.id(), bf16.family(), bf16.name(), bf16.shape(), "fp32", bf16.impl(), bf16.status(), bf16.note(),
                bf16.medianMs(), bf16.minMs(), bf16.maxMs(), bf16.reps(), bf16.work(), bf16.workUnit(), bf16.formula(), bf16.rate(),
                bf16.rateUnit(), bf16.ceilingPct(), bf16.maxError(), bf16.extraBytes(), bf16.sizeCopyGbs());
        BenchReport fp32Run = new BenchReport(ours.tool(), ours.sizes(), ours.card(), ours.driver(), ours.runtime(), ours.torch(), ours.date(),
                ours.fake(), ours.copyGbs(), ours.gemmTflops(), List.of(fp32));
        Compare.Line l = Compare.merge(fp32Run, peers, "ours", "peers").lines().get(0);
        assertNull(l.peer());
        assertEquals(List.of(">= 0.95x torch.matmul: not measured"), l.goals());
        assertEquals("bf16", Compare.leadingDType("bf16 (lse fp32)"));
        assertEquals("fp32", Compare.leadingDType("fp32, bf16 copy-out"));
    }

    static BenchRow ourRow(BenchReport r, String id) {
        return r.rows().stream().filter(x -> x.id().equals(id)).findFirst().orElseThrow();
    }

    static BenchRow peerRow(BenchReport r, String id, String impl) {
        return r.rows().stream().filter(x -> x.id().equals(id) && x.impl().equals(impl)).findFirst().orElseThrow();
    }

    @Test
    void reportsFromDifferentCardsOrSizesAreNotMixed(@TempDir Path tmp) throws Exception {
        Path other = tmp.resolve("peers-h100.json");
        Files.writeString(other, Files.readString(PEERS).replace("\"Canned Test GPU\"", "\"NVIDIA H100 80GB HBM3\""));
        var e = assertThrows(IllegalArgumentException.class,
                () -> Compare.merge(BenchReport.read(OURS), BenchReport.read(other), "ours.json", "peers-h100.json"));
        assertEquals("cannot compare runs on different cards: ours.json ran on \"Canned Test GPU\", peers-h100.json on "
                + "\"NVIDIA H100 80GB HBM3\"; run both on the same GPU in the same session", e.getMessage());
        Path small = tmp.resolve("peers-small.json");
        Files.writeString(small, Files.readString(PEERS).replace("\"sizes\": \"llama-3.1-8b\"", "\"sizes\": \"small\""));
        e = assertThrows(IllegalArgumentException.class,
                () -> Compare.merge(BenchReport.read(OURS), BenchReport.read(small), "ours.json", "peers-small.json"));
        assertTrue(e.getMessage().startsWith("cannot compare runs at different sizes"), e.getMessage());
    }

    /** Files given the other way round would invert every ratio: each report's "tool" says which side it is. */
    @Test
    void theReportsGivenTheOtherWayRoundAreRefused() throws Exception {
        var e = assertThrows(IllegalArgumentException.class,
                () -> Compare.merge(BenchReport.read(PEERS), BenchReport.read(OURS), "peers.json", "ours.json"));
        assertEquals("peers.json was written by \"pytorch\", not by grpo4j: --compare takes our report first, then the peers'", e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> Compare.merge(BenchReport.read(OURS), BenchReport.read(OURS), "ours.json", "ours2.json"));
        assertTrue(e.getMessage().startsWith("ours2.json was written by grpo4j, not by a peer script"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> Compare.table(BenchReport.read(PEERS)));
        assertTrue(e.getMessage().contains("not by grpo4j"), e.getMessage());
    }

    @Test
    void aFailedRowSaysFailedAndFailsTheComparison(@TempDir Path tmp) throws Exception {
        Path bad = tmp.resolve("ours-failed.json");
        BenchReport ours = BenchReport.read(OURS);
        List<BenchRow> rows = ours.rows().stream().map(r -> !r.id().equals("swiglu/swiglu fwd") ? r
                : new BenchRow(r.id(), r.family(), r.name(), r.shape(), r.dtype(), r.impl(), BenchRow.FAILED,
                        "check against the CPU failed: out[3] = 1.5, CPU 1.25 (tolerance 0.0049)", null, null, null, 0,
                        r.work(), r.workUnit(), r.formula(), null, r.rateUnit(), null, 0.25, null, null)).toList();
        new BenchReport(ours.tool(), ours.sizes(), ours.card(), ours.driver(), ours.runtime(), null, ours.date(), false,
                ours.copyGbs(), ours.gemmTflops(), rows).write(bad);
        Compare.Result r = Compare.merge(BenchReport.read(bad), BenchReport.read(PEERS), "a", "b");
        assertTrue(r.failed());
        String line = row(r.markdown(), "swiglu fwd");
        assertTrue(line.contains("**FAILED** (max err 2.5e-01): check against the CPU failed: out[3] = 1.5"), line);
        assertNull(line(r, "swiglu/swiglu fwd", "torch eager").ratio());
        assertTrue(r.markdown().contains("1 FAILED"), r.markdown());
    }

    @Test
    void fakePeerTimingsAreFlagged(@TempDir Path tmp) throws Exception {
        Path fake = tmp.resolve("fake.json");
        Files.writeString(fake, Files.readString(PEERS).replace("\"fake\": false", "\"fake\": true"));
        String md = Compare.merge(BenchReport.read(OURS), BenchReport.read(fake), "a", "b").markdown();
        assertTrue(md.contains("**The peer file has placeholder timings"), md);
        assertFalse(merge().markdown().contains("placeholder"));
    }

    /**
     * A report whose run stopped before its last row ("complete": false: a time box or an unrecovered hang on a loan)
     * says so above the table; the peers' problems that ours does not have are "not in ours (ours partial)", not "no
     * such problem in ours", and the footer's counts are marked partial (a review found such a table indistinguishable from a whole one).
     */
    @Test
    void aPartialReportSaysSo(@TempDir Path tmp) throws Exception {
        BenchReport ours = BenchReport.read(OURS), peers = BenchReport.read(PEERS);
        assertTrue(ours.complete() && peers.complete(), "no field: complete");
        Path cut = tmp.resolve("cut.json");
        BenchReport part = new BenchReport(ours.tool(), ours.sizes(), ours.card(), ours.driver(), ours.runtime(), ours.torch(), ours.date(),
                false, ours.copyGbs(), ours.gemmTflops(), ours.rows().subList(0, 3));
        Files.writeString(cut, part.toJson(false));
        BenchReport read = BenchReport.read(cut);
        assertFalse(read.complete());
        String md = Compare.merge(read, peers, "a", "b").markdown();
        assertTrue(md.contains("**Our report is partial (\"complete\": false)"), md);
        assertFalse(md.contains("no such problem in ours"), md);
        String unreached = ours.rows().get(5).name();
        assertTrue(row(md, unreached).contains("not in ours (ours partial)"), row(md, unreached));
        assertTrue(md.contains("\n3 problems (ours partial): "), md);
        String whole = merge().markdown();
        assertFalse(whole.contains("partial"), whole);
        // the peers' side
        Files.writeString(cut, Files.readString(PEERS).replace("\"fake\": false", "\"fake\": false, \"complete\": false"));
        assertTrue(Compare.merge(ours, BenchReport.read(cut), "a", "b").markdown().contains("**The peers' report is partial"));
        Files.writeString(cut, Files.readString(PEERS).replace("\"fake\": false", "\"fake\": false, \"complete\": \"no\""));
        var e = assertThrows(IllegalArgumentException.class, () -> BenchReport.read(cut));
        assertEquals(cut + ": complete: expected true or false", e.getMessage());
    }

    @Test
    void malformedReportsNameTheFileAndTheField(@TempDir Path tmp) throws Exception {
        String text = Files.readString(PEERS);
        Path f = tmp.resolve("p.json");
        Files.writeString(f, text.replaceFirst("\"median_ms\": [0-9.]+,", ""));
        var e = assertThrows(IllegalArgumentException.class, () -> BenchReport.read(f));
        assertEquals(f + ": rows[0].median_ms: missing", e.getMessage());
        Files.writeString(f, text.replace("grpo4j-bench/1", "grpo4j-bench/0"));
        e = assertThrows(IllegalArgumentException.class, () -> BenchReport.read(f));
        assertEquals(f + ": schema is \"grpo4j-bench/0\", expected \"grpo4j-bench/1\"", e.getMessage());
        Files.writeString(f, text.replaceFirst("\"status\": \"ok\"", "\"status\": \"fine\""));
        e = assertThrows(IllegalArgumentException.class, () -> BenchReport.read(f));
        assertTrue(e.getMessage().startsWith(f + ": rows[0].status: \"fine\" is not one of"), e.getMessage());
        Files.writeString(f, text.replaceFirst("\"id\": \"ceiling/copy fp32\"", "\"id\": \"copy\""));
        e = assertThrows(IllegalArgumentException.class, () -> BenchReport.read(f));
        assertEquals(f + ": rows[0].id: \"copy\" should be family/name = \"ceiling/copy fp32\"", e.getMessage());
        Files.writeString(f, text.substring(0, 200));
        e = assertThrows(IllegalArgumentException.class, () -> BenchReport.read(f));
        assertTrue(e.getMessage().startsWith(f + ": not valid JSON"), e.getMessage());
    }

    @Test
    void theChartHasOneBarPerRatio(@TempDir Path tmp) throws Exception {
        Compare.Result r = merge();
        Path png = tmp.resolve("out/ratios.png");
        CompareChart.write(r, "test", png);
        BufferedImage img = ImageIO.read(png.toFile());
        long bars = r.lines().stream().filter(l -> l.ratio() != null).count();
        assertTrue(bars >= 10, "bars " + bars);
        assertEquals(1000, img.getWidth());
        assertEquals(Math.max(300, 120 + 24 * bars), img.getHeight());
        assertFalse(Files.exists(tmp.resolve("out/.ratios.png.tmp")));
    }

    @Test
    void oursAloneShowsCeilingGoalsButNoRatioGoals() throws Exception {
        Compare.Result r = Compare.table(BenchReport.read(OURS));
        assertTrue(r.lines().stream().allMatch(l -> l.peer() == null && l.ratio() == null));
        assertTrue(r.lines().stream().flatMap(l -> l.goals().stream()).noneMatch(g -> g.contains("x torch") || g.contains("x SDPA")));
        assertTrue(row(r.markdown(), "host cost").contains("< 10 us/call: met"), r.markdown());
    }

    /** The header names the peers' driver where it is not ours (nvidia-smi's release against ours with its CUDA). */
    @Test
    void theHeaderNamesThePeersDriverOnlyWhereItDiffers() {
        assertEquals("", Compare.peersDriver("580.159.04 (supports CUDA 13.0)", "580.159.04"));
        assertEquals("", Compare.peersDriver("580.159.04", "580.159.04"));
        assertEquals("", Compare.peersDriver("supports CUDA 13.0", "fake"));
        assertEquals("", Compare.peersDriver("supports CUDA 13.0", null));
        assertEquals("; the peers' driver 580.159.04", Compare.peersDriver("supports CUDA 13.0", "580.159.04"));
        assertEquals("; the peers' driver 575.51.03", Compare.peersDriver("580.159.04 (supports CUDA 13.0)", "575.51.03"));
        assertEquals("; the peers' driver 580.159.04", Compare.peersDriver("580.159.040 (supports CUDA 13.0)", "580.159.04"));
    }
}
