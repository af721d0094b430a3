package org.grpo4j.internal.bench;

import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Objects;
import java.util.Set;

/**
 * Merges an end-to-end run of ours ({@link E2eBench}) with the HF transformers peers' (tools/e2e-peers.py, same card,
 * same session) into one markdown document: a table per section, ours next to the peer, the ratio and issue 14's
 * goals. ours/peer = our tokens/s ÷ the peer's (both sides process the same tokens).
 *
 * <p>Goals (issue 14): training ≥ 1.0× HF transformers tokens/s (stretch ≥ 1.2×) on each preset; rollout ≥ 60% of the
 * memory roofline at steady state (judged on our decode-only rate; the whole-call figure is shown too). With prefix
 * groups the rollout is judged on the bytes its decoder reads (each prompt's KV once a group of samples), the share of
 * the per-sample roofline shown beside it. Training ratios are not judged against a peer's placeholder timings, at
 * another precision, or for rows with gradient checkpointing (the peer runs without); a ratio within either side's
 * spread of steps says so.
 */
public final class E2eCompare {
    private E2eCompare() {}

    public static final double TRAIN_GOAL = 1.0, TRAIN_STRETCH = 1.2, ROLLOUT_ROOFLINE_GOAL_PCT = 60;

    /** One line: our row with the peer's row for the same problem (or none). */
    public record Line(E2eReport.Row ours, E2eReport.Row peer, Double ratio, List<String> goals) {}

    /** The merged document; {@code failed} when one of our rows errored (exit status 1). */
    public record Result(String markdown, List<Line> lines, boolean failed, int goalsMet, int goalsJudged) {}

    /** Our report alone. */
    public static Result table(E2eReport ours) { return merge(ours, null, "ours", null); }

    /** Merges the reports; a peer report from another card is an IllegalArgumentException (a ratio across cards means nothing). */
    public static Result merge(E2eReport ours, E2eReport peers, String oursName, String peersName) {
        Compare.checkTools(ours.tool(), peers == null ? null : peers.tool(), oursName, peersName);
        if (peers != null && !Objects.equals(ours.card(), peers.card()))
            throw new IllegalArgumentException("cannot compare runs on different cards: " + oursName + " ran on \"" + ours.card() + "\", "
                    + peersName + " on \"" + peers.card() + "\"; run both on the same GPU in the same session");
        List<Line> lines = new ArrayList<>();
        int met = 0, judged = 0;
        // the goals are about the GPU: a CPU run (the harness check) shows its figures, judges nothing; nor
        // are ratios judged against placeholder timings or a peer at another precision
        boolean gpu = ours.backend() != null && ours.backend().startsWith("cuda");
        String peerWhy = peers == null ? null : peers.fake() ? "the peer's timings are placeholders"
                : !Objects.equals(ours.precision(), peers.precision()) ? "the peer ran at " + peers.precision() + ", ours at " + ours.precision() : null;
        Set<String> ourIds = new LinkedHashSet<>();
        for (E2eReport.Row r : ours.rows()) {
            ourIds.add(r.id());
            E2eReport.Row p = peers == null ? null : peers.rows().stream().filter(x -> x.id().equals(r.id())).findFirst().orElse(null);
            Double ratio = null;
            String mismatch = null;
            if (p != null && r.ok() && p.ok() && r.fig("tokens_per_s") != null && p.fig("tokens_per_s") != null) {
                if (Objects.equals(r.fig("tokens"), p.fig("tokens"))) ratio = r.fig("tokens_per_s") / p.fig("tokens_per_s");
                else mismatch = "not compared: ours counts " + fmt(r.fig("tokens")) + " tokens, the peer " + fmt(p.fig("tokens"));
            }
            List<String> goals = new ArrayList<>();
            if (mismatch != null) goals.add(mismatch);
            switch (r.section()) {
                case E2eReport.TRAIN -> {
                    // a row with gradient checkpointing recomputes the forward the peer (no checkpointing) does not
                    String why = !gpu ? "not a GPU run" : peerWhy != null ? peerWhy
                            : r.variant() != null && r.variant().contains("checkpointing") ? "the peer runs without gradient checkpointing" : null;
                    boolean judge = why == null;
                    Boolean g = ratio == null ? null : ratio >= TRAIN_GOAL, s = ratio == null ? null : ratio >= TRAIN_STRETCH;
                    String noise = g != null && withinSpread(ratio, r, p) ? " (within the rows' spread)" : "";
                    goals.add(">= " + num(TRAIN_GOAL) + "x HF: " + verdict(g, why) + noise);
                    goals.add("stretch >= " + num(TRAIN_STRETCH) + "x: " + verdict(s, why));
                    if (g != null && judge) {
                        judged++;
                        if (g) met++;
                    }
                }
                case E2eReport.ROLLOUT -> {
                    // with prefix groups, judged on the bytes the decoder reads (each prompt's KV once a group); a row
                    // without a steady figure, on its whole call
                    Double pct = null;
                    String how = "";
                    if (r.ok())
                        for (String[] k : ROLLOUT_SHARES)
                            if (r.fig(k[0]) != null) {
                                pct = r.fig(k[0]);
                                how = k[1];
                                break;
                            }
                    boolean judge = gpu;
                    Boolean g = pct == null ? null : pct >= ROLLOUT_ROOFLINE_GOAL_PCT;
                    goals.add(">= " + num(ROLLOUT_ROOFLINE_GOAL_PCT) + "% of roofline" + how + ": " + verdict(g, gpu ? null : "not a GPU run"));
                    if (g != null && judge) {
                        judged++;
                        if (g) met++;
                    }
                }
                default -> { }
            }
            lines.add(new Line(r, p, ratio, goals));
        }
        List<E2eReport.Row> peerOnly = peers == null ? List.of() : peers.rows().stream().filter(p -> !ourIds.contains(p.id())).toList();
        return new Result(markdown(ours, peers, lines, peerOnly, met, judged), lines, ours.anyError(), met, judged);
    }

    /** The rollout goal's figure, the first a row has of these, and how its verdict says which it is. */
    private static final String[][] ROLLOUT_SHARES = {{"steady_roofline_read_pct", " (bytes read)"}, {"steady_roofline_pct", ""},
            {"roofline_read_pct", " (bytes read, whole call)"}, {"roofline_pct", " (whole call)"}};

    /** {@code why} null: judged; else "not judged (why)". */
    private static String verdict(Boolean b, String why) {
        if (b == null) return "not measured";
        if (why != null) return "not judged (" + why + ")";
        return b ? "met" : "MISSED";
    }

    /**
     * Whether a ratio's distance from 1 is within either side's spread, (max - min) / median of its timed steps: the
     * verdict then says so (a run's drift can move it).
     */
    static boolean withinSpread(double ratio, E2eReport.Row ours, E2eReport.Row peer) {
        double spread = 0;
        for (E2eReport.Row r : new E2eReport.Row[] {ours, peer})
            if (r != null && r.medianMs() != null && r.minMs() != null && r.maxMs() != null && r.medianMs() > 0)
                spread = Math.max(spread, (r.maxMs() - r.minMs()) / r.medianMs());
        return Math.abs(ratio - 1) < spread;
    }

    // ---- rendering ------------------------------------------------------------------------------------------------

    static String num(double v) { return Compare.num(v); }

    static String fmt(Double v) {
        if (v == null) return "-";
        return Compare.fig(v);
    }

    static String count(Double v) { return v == null ? "-" : String.format(Locale.ROOT, "%,.0f", v); }

    static String pct(Double v) { return v == null ? "-" : String.format(Locale.ROOT, "%.1f%%", v); }

    /** A roofline share per sample, and of the bytes read where prefix groups read less: "38.2% (read 66.0%)". */
    static String roof(E2eReport.Row r, String perSample, String read) {
        return pct(r.fig(perSample)) + (r.fig(read) == null ? "" : " (read " + pct(r.fig(read)) + ")");
    }

    /** median (min-max) in the given unit: 1 = milliseconds, 1000 = seconds. */
    static String time(E2eReport.Row r, double per) {
        if (r == null || !r.ok() || r.medianMs() == null) return "-";
        return String.format(Locale.ROOT, "%s (%s-%s)", Compare.sig(r.medianMs() / per), Compare.sig(r.minMs() / per), Compare.sig(r.maxMs() / per));
    }

    /** What a row that did not run says in place of its figures. */
    static String status(E2eReport.Row r) {
        return (E2eReport.ERROR.equals(r.status()) ? "**error**" : r.status()) + (r.note() == null ? "" : ": " + Compare.esc(r.note()));
    }

    private static String header(E2eReport ours, E2eReport peers) {
        StringBuilder b = new StringBuilder();
        b.append("card: ").append(ours.card()).append("; driver ").append(ours.driver()).append("; CUDA runtime ").append(ours.runtime());
        if (peers != null) b.append(Compare.peersDriver(ours.driver(), peers.driver()));
        if (peers != null) {
            if (peers.torch() != null) b.append("; torch ").append(peers.torch());
            if (peers.transformers() != null) b.append("; transformers ").append(peers.transformers());
        }
        b.append("; ours ").append(ours.backend()).append(", ").append(ours.precision()).append(", ").append(ours.date());
        if (peers != null) b.append("; peers ").append(peers.date());
        b.append("\n\n");
        b.append("copy bandwidth measured in the same run").append(peers == null ? "" : " (ours / peer)").append(": ")
                .append(fmt(ours.copyGbs())).append(peers == null ? "" : " / " + fmt(peers.copyGbs())).append(" GB/s. ")
                .append("MFU = (6 · P_mm · tokens + causal attention 12·L·H·D·S²/2 per sequence) / step time / ")
                .append(num(ours.peakTflops())).append(" TFLOP/s. Roofline = (weights + KV read per decode step) / copy bandwidth. Bound = per decode step the longer of ")
                .append("its weights' read and its GEMMs at that peak, then its KV read: the least time a decoder running GEMMs and ")
                .append("attention one after the other can take (at hundreds of sequences the GEMMs are compute-bound).\n\n");
        if (peers != null && peers.fake())
            b.append("**The peer file has placeholder timings (e2e-peers.py --fake-timer): its figures and the ratios mean nothing.**\n\n");
        return b.toString();
    }

    private static String markdown(E2eReport ours, E2eReport peers, List<Line> lines, List<E2eReport.Row> peerOnly, int met, int judged) {
        StringBuilder b = new StringBuilder(header(ours, peers));
        String peerName = peers == null ? "peer" : "HF";
        List<Line> train = lines.stream().filter(l -> l.ours().section().equals(E2eReport.TRAIN)).toList();
        List<E2eReport.Row> trainPeers = peerOnly.stream().filter(p -> p.section().equals(E2eReport.TRAIN)).toList();
        if (!train.isEmpty() || !trainPeers.isEmpty()) {
            b.append("**Training step** (forward + backward + AdamW, sequences packed; ms per step, median (min-max))\n\n");
            b.append("| preset | shape | variant | ours ms/step | ours tok/s | ours MFU | ").append(peerName).append(" ms/step | ")
                    .append(peerName).append(" tok/s | ").append(peerName).append(" MFU | ours/").append(peerName).append(" | goals |\n");
            b.append("|---|---|---|---|---|---|---|---|---|---|---|\n");
            for (Line l : train) {
                E2eReport.Row r = l.ours(), p = l.peer();
                b.append("| ").append(r.preset()).append(" | ").append(Compare.esc(r.shape())).append(" | ").append(r.variant() == null ? "" : r.variant())
                        .append(" | ").append(r.ok() ? time(r, 1) : status(r)).append(" | ").append(r.ok() ? fmt(r.fig("tokens_per_s")) : "-")
                        .append(" | ").append(r.ok() ? pct(r.fig("mfu_pct")) : "-").append(" | ");
                peerCells(b, p, "mfu_pct", 1);
                b.append(ratio(l)).append(" | ").append(Compare.esc(String.join("; ", l.goals()))).append(" |\n");
            }
            for (E2eReport.Row p : trainPeers) {
                b.append("| ").append(p.preset()).append(" | ").append(Compare.esc(p.shape())).append(" | | (not run by ours) | | | ");
                peerCells(b, p, "mfu_pct", 1);
                b.append("- | |\n");
            }
            b.append("\n");
        }
        List<Line> roll = lines.stream().filter(l -> l.ours().section().equals(E2eReport.ROLLOUT)).toList();
        List<E2eReport.Row> rollPeers = peerOnly.stream().filter(p -> p.section().equals(E2eReport.ROLLOUT)).toList();
        if (!roll.isEmpty() || !rollPeers.isEmpty()) {
            b.append("**Rollout** (temperature 1, no stop token: every sequence runs to the new-token count; seconds per generate call, "
                    + "median (min-max); steady = decode steps only: (whole call - prefill-only call); host ms/step = time to issue one "
                    + "decode step, (+ the generator's own bookkeeping around it))\n\n");
            b.append("| preset | shape | decode graphs | ours s | ours tok/s | ours % roofline | steady tok/s | steady % roofline | steady % bound | host ms/step | ")
                    .append(peerName).append(" s | ").append(peerName).append(" tok/s | ").append(peerName).append(" % roofline | ours/")
                    .append(peerName).append(" | goals |\n");
            b.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
            for (Line l : roll) {
                E2eReport.Row r = l.ours(), p = l.peer();
                b.append("| ").append(r.preset()).append(" | ").append(Compare.esc(r.shape())).append(" | ").append(r.variant() == null ? "" : r.variant())
                        .append(" | ").append(r.ok() ? time(r, 1000) : status(r)).append(" | ").append(r.ok() ? fmt(r.fig("tokens_per_s")) : "-")
                        .append(" | ").append(r.ok() ? roof(r, "roofline_pct", "roofline_read_pct") : "-").append(" | ")
                        .append(r.ok() ? fmt(r.fig("steady_tokens_per_s")) : "-")
                        .append(" | ").append(r.ok() ? roof(r, "steady_roofline_pct", "steady_roofline_read_pct") : "-").append(" | ")
                        .append(r.ok() && r.fig("steady_bound_pct") != null ? pct(r.fig("steady_bound_pct")) : "-").append(" | ")
                        .append(r.ok() && r.fig("host_ms_per_step") != null ? Compare.sig(r.fig("host_ms_per_step")) : "-")
                        .append(r.ok() && r.fig("bookkeeping_ms_per_step") != null ? " (+" + Compare.sig(r.fig("bookkeeping_ms_per_step")) + ")" : "")
                        .append(" | ");
                peerCells(b, p, "roofline_pct", 1000);
                b.append(ratio(l)).append(" | ").append(Compare.esc(String.join("; ", l.goals()))).append(" |\n");
            }
            for (E2eReport.Row p : rollPeers) {
                b.append("| ").append(p.preset()).append(" | ").append(Compare.esc(p.shape())).append(" | | (not run by ours) | | | | | | | ");
                peerCells(b, p, "roofline_pct", 1000);
                b.append("- | |\n");
            }
            // how the peer generated (each prompt prefilled once and its cache shared, or generate's own expansion when
            // that failed): its rows' notes under the table, since the ratios depend on it
            java.util.LinkedHashSet<String> notes = new java.util.LinkedHashSet<>();
            for (Line l : roll)
                if (l.peer() != null && l.peer().ok() && l.peer().note() != null) notes.add(l.peer().preset() + " " + l.peer().shape() + ": " + l.peer().note());
            for (E2eReport.Row p : rollPeers) if (p.ok() && p.note() != null) notes.add(p.preset() + " " + p.shape() + ": " + p.note());
            if (!notes.isEmpty()) {
                b.append("\n").append(peerName).append(" rows, how they ran:\n");
                for (String n : notes) b.append("- ").append(Compare.esc(n)).append("\n");
            }
            b.append("\n");
        }
        List<Line> grpo = lines.stream().filter(l -> l.ours().section().equals(E2eReport.GRPO)).toList();
        if (!grpo.isEmpty()) {
            b.append("**One GRPO step** (seconds; generation / reward / log-probs (reference, and old for the second mini-batch; no grad) / training)\n\n");
            b.append("| preset | shape | generation | reward | log-probs | training | total | generated tokens | trained tokens | optimizer steps |\n");
            b.append("|---|---|---|---|---|---|---|---|---|---|\n");
            for (Line l : grpo) {
                E2eReport.Row r = l.ours();
                b.append("| ").append(r.preset()).append(" | ").append(Compare.esc(r.shape())).append(" | ");
                if (!r.ok()) {
                    b.append(status(r)).append(" | | | | | | | |\n");
                    continue;
                }
                for (String f : List.of("generation_s", "reward_s", "logprobs_s", "training_s", "total_s"))
                    b.append(Compare.sig(r.fig(f))).append(" | ");
                b.append(count(r.fig("generated_tokens"))).append(" | ").append(count(r.fig("trained_tokens"))).append(" | ")
                        .append(count(r.fig("optimizer_steps"))).append(" |\n");
            }
            b.append("\n");
        }
        long errors = ours.rows().stream().filter(r -> r.status().equals(E2eReport.ERROR)).count();
        long skipped = ours.rows().stream().filter(r -> r.status().equals(E2eReport.SKIPPED)).count();
        b.append(ours.rows().size()).append(" rows: ").append(errors).append(" errors, ").append(skipped).append(" skipped; goals met: ")
                .append(met).append(" of ").append(judged).append(" judged.\n");
        return b.toString();
    }

    private static void peerCells(StringBuilder b, E2eReport.Row p, String pctFigure, double per) {
        if (p == null) {
            b.append("- | - | - | ");
            return;
        }
        if (!p.ok()) {
            b.append(status(p)).append(" | - | - | ");
            return;
        }
        b.append(time(p, per)).append(" | ").append(fmt(p.fig("tokens_per_s"))).append(" | ").append(pct(p.fig(pctFigure))).append(" | ");
    }

    private static String ratio(Line l) { return l.ratio() == null ? "-" : String.format(Locale.ROOT, "%.2fx", l.ratio()); }
}
