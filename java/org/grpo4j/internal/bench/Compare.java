package org.grpo4j.internal.bench;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Objects;
import java.util.Set;

/**
 * Merges our benchmark report with the peers' (tools/bench-peers.py, same card, same run) into one markdown table and
 * a bar chart of the ratios. ours/peer = the peer's median time / ours (above 1: ours is faster); both sides count the
 * same work for a problem, so it is also our rate / the peer's rate.
 *
 * <p>Goals are the CUDA issues' (11: GEMM, memory-bound kernels, AdamW; 12: attention, decode; 13: sampling, LM head),
 * each judged on figures of this one run.
 */
public final class Compare {
    private Compare() {}

    // the peers' implementation names (tools/bench-peers.py writes exactly these)
    public static final String TORCH_MATMUL = "torch.matmul";
    public static final String TORCH_ADAMW_FUSED = "torch AdamW(fused)";
    public static final String SDPA_FLASH = "SDPA flash";
    public static final String SDPA_GQA = "SDPA gqa";
    public static final String SORT_TOP_P = "sort top-p";
    public static final String EXPONENTIAL_RACE = "exponential race";
    public static final String LOG_SOFTMAX_GATHER = "log_softmax gather";

    enum GoalType { RATIO, CEILING_PCT, MAX_US_PER_CALL, WITHIN_LOGITS_READ, MAX_EXTRA_BYTES }

    /** A goal on one of our rows; RATIO goals name the peer implementation they are measured against. */
    record Goal(GoalType type, double threshold, String peerImpl) {
        String label() {
            return switch (type) {
                case RATIO -> ">= " + num(threshold) + "x " + peerImpl;
                case CEILING_PCT -> ">= " + num(threshold) + "% of ceiling";
                case MAX_US_PER_CALL -> "< " + num(threshold) + " us/call";
                case WITHIN_LOGITS_READ -> "<= " + num(threshold) + "x one logits read at copy bandwidth";
                case MAX_EXTRA_BYTES -> "<= " + (long) threshold / (1 << 20) + " MiB extra";
            };
        }
    }

    private static final Set<String> MEMORY_BOUND = Set.of("norm", "rope", "swiglu", "embedding", "elementwise", "reduce",
            "kvcache", "adamw");

    /** The goals the issues set for a row, by family and name. */
    static List<Goal> goals(BenchRow r) {
        List<Goal> g = new ArrayList<>();
        String n = problemId(r.name());  // a variant has its problem's goals
        if (MEMORY_BOUND.contains(r.family())) g.add(new Goal(GoalType.CEILING_PCT, 80, null));
        switch (r.family()) {
            case "gemm" -> {
                if (n.startsWith("matmul ")) g.add(new Goal(GoalType.RATIO, 0.95, TORCH_MATMUL));
                if (n.startsWith("host cost")) g.add(new Goal(GoalType.MAX_US_PER_CALL, 10, null));
            }
            case "adamw" -> g.add(new Goal(GoalType.RATIO, 1.0, TORCH_ADAMW_FUSED));
            case "attention" -> {
                if (n.startsWith("fwd ") || n.startsWith("fwd+bwd ")) g.add(new Goal(GoalType.RATIO, 1.0, SDPA_FLASH));
            }
            case "decode" -> {
                // the problem only: not the prefix-group rows (no peer) nor the head-dim-64 diagnostic row
                if (n.matches("decode b\\d+ ctx\\d+")) g.add(new Goal(GoalType.RATIO, 1.0, SDPA_GQA));
            }
            case "sampling" -> {
                if (n.startsWith("top-p")) {
                    g.add(new Goal(GoalType.RATIO, 20, SORT_TOP_P));
                    g.add(new Goal(GoalType.WITHIN_LOGITS_READ, 2, null));
                } else {
                    g.add(new Goal(GoalType.RATIO, 1.0, EXPONENTIAL_RACE));
                }
            }
            case "lmhead" -> {
                if (n.equals("logprob fwd")) g.add(new Goal(GoalType.CEILING_PCT, 60, null));
                if (n.equals("logprob fwd+bwd")) {
                    g.add(new Goal(GoalType.RATIO, 1.0, LOG_SOFTMAX_GATHER));
                    // the trainer's larger blocks trade the bound for fewer dLmHead passes (lm_head_scratch_mib)
                    if (!r.name().endsWith(Cases.GRPO_LOSS_TRAINER)) g.add(new Goal(GoalType.MAX_EXTRA_BYTES, 256L << 20, null));
                }
            }
            default -> { }
        }
        return g;
    }

    /** One line of the merged table: our row with one of the peer's rows for the same problem (or none). */
    public record Line(BenchRow ours, BenchRow peer, Double ratio, List<String> goals) {}

    /** The merged table; {@code failed} when one of our rows FAILED its check or errored (exit code 1). */
    public record Result(String markdown, List<Line> lines, boolean failed, int goalsMet, int goalsJudged) {}

    /** Our report alone (the table {@code grpo4j bench} prints). */
    public static Result table(BenchReport ours) { return merge(ours, null, "ours", null); }

    /**
     * Merges the two reports. A peer report from another card, or at other sizes, is an IllegalArgumentException:
     * ratios across cards or problem sizes mean nothing.
     */
    public static Result merge(BenchReport ours, BenchReport peers, String oursName, String peersName) {
        checkTools(ours.tool(), peers == null ? null : peers.tool(), oursName, peersName);
        if (peers != null) {
            if (!Objects.equals(ours.card(), peers.card()))
                throw new IllegalArgumentException("cannot compare runs on different cards: " + oursName + " ran on \"" + ours.card()
                        + "\", " + peersName + " on \"" + peers.card() + "\"; run both on the same GPU in the same session");
            if (!Objects.equals(ours.sizes(), peers.sizes()))
                throw new IllegalArgumentException("cannot compare runs at different sizes: " + oursName + " used --sizes "
                        + ours.sizes() + ", " + peersName + " " + peers.sizes());
        }
        List<Line> lines = new ArrayList<>();
        int met = 0, judged = 0;
        Set<String> ourIds = new LinkedHashSet<>();
        for (BenchRow r : ours.rows()) {
            String problem = problemId(r.id());
            ourIds.add(problem);
            List<Goal> goals = goals(r).stream().filter(g -> peers != null || g.type() != GoalType.RATIO).toList();
            // the same problem in the same dtype (a run at another --dtype has the same ids; notes in brackets aside)
            List<BenchRow> ps = peers == null ? List.of()
                    : peers.rows().stream().filter(p -> p.id().equals(problem) && leadingDType(p.dtype()).equals(leadingDType(r.dtype()))).toList();
            List<Goal> unplaced = new ArrayList<>(goals);
            List<Line> mine = new ArrayList<>();
            for (BenchRow p : ps.isEmpty() ? java.util.Collections.<BenchRow>singletonList(null) : ps) {
                Double ratio = p != null && r.timed() && p.timed() ? p.medianMs() / r.medianMs() : null;
                List<String> gl = new ArrayList<>();
                for (Goal g : goals) {
                    boolean here = g.type() == GoalType.RATIO ? p != null && g.peerImpl().equals(p.impl()) : mine.isEmpty();
                    if (!here) continue;
                    unplaced.remove(g);
                    Boolean ok = judge(g, r, ratio, ours);
                    if (ok != null) {
                        judged++;
                        if (ok) met++;
                    }
                    gl.add(g.label() + ": " + (ok == null ? "not measured" : ok ? "met" : "MISSED"));
                }
                mine.add(new Line(r, p, ratio, gl));
            }
            // a ratio goal whose peer is absent from the peer file (or no peer file): shown, not judged
            if (!unplaced.isEmpty()) {
                Line first = mine.get(0);
                List<String> gl = new ArrayList<>(first.goals());
                for (Goal g : unplaced) gl.add(g.label() + ": not measured");
                mine.set(0, new Line(first.ours(), first.peer(), first.ratio(), gl));
            }
            lines.addAll(mine);
        }
        List<BenchRow> peerOnly = peers == null ? List.of() : peers.rows().stream().filter(p -> !ourIds.contains(p.id())).toList();
        boolean failed = ours.anyFailed();
        return new Result(markdown(ours, peers, lines, peerOnly, met, judged), lines, failed, met, judged);
    }

    /**
     * The problem a row is compared on: its id without a trailing variant tag in square brackets. A variant runs the
     * same problem in another mode of ours ("attention/fwd+bwd b8 s2048 [fast dQ]", "lmhead/logprob fwd+bwd [dz bf16]")
     * and is compared with the peers' rows of the problem itself.
     */
    static String problemId(String id) {
        if (!id.endsWith("]")) return id;
        int open = id.lastIndexOf(" [");
        return open < 0 ? id : id.substring(0, open);
    }

    /** A row's dtype without what follows it ("bf16 (lse fp32)" is bf16): ours and the peers' notes differ. */
    static String leadingDType(String dtype) {
        if (dtype == null) return "";
        String t = dtype.strip();
        int end = 0;
        while (end < t.length() && " (,".indexOf(t.charAt(end)) < 0) end++;
        return t.substring(0, end);
    }

    static Boolean judge(Goal g, BenchRow r, Double ratio, BenchReport ours) {
        if (!r.timed()) return null;
        return switch (g.type()) {
            case RATIO -> ratio == null ? null : ratio >= g.threshold();
            case CEILING_PCT -> r.ceilingPct() == null ? null : r.ceilingPct() >= g.threshold();
            case MAX_US_PER_CALL -> r.rate() < g.threshold();
            case WITHIN_LOGITS_READ -> ours.copyGbs() == null ? null : r.medianMs() <= g.threshold() * r.work() / (ours.copyGbs() * 1e6);
            case MAX_EXTRA_BYTES -> r.extraBytes() == null ? null : r.extraBytes() <= g.threshold();
        };
    }

    // ---- rendering ------------------------------------------------------------------------------------------------

    static String num(double v) {
        return new java.math.BigDecimal(String.valueOf(v)).stripTrailingZeros().toPlainString();
    }

    static String ms(BenchRow r) {
        if (r == null || !r.timed()) return "-";
        return String.format(Locale.ROOT, "%s (%s-%s)", sig(r.medianMs()), sig(r.minMs()), sig(r.maxMs()));
    }

    /** 4 significant digits, no exponent for the magnitudes a benchmark prints. */
    static String sig(double v) {
        if (v == 0) return "0";
        int digits = Math.max(0, 3 - (int) Math.floor(Math.log10(Math.abs(v))));
        return new java.math.BigDecimal(v).setScale(Math.min(digits, 6), java.math.RoundingMode.HALF_EVEN).toPlainString();
    }

    /** A rate: whole numbers from 100 up (4280 GB/s), else 4 significant digits (7.312 us/call). */
    static String fig(double v) {
        return Math.abs(v) >= 100 ? String.format(Locale.ROOT, "%.0f", v) : sig(v);
    }

    static String rate(BenchRow r) {
        if (r == null || !r.timed() || r.rate() == null) return "-";
        String extra = r.extraBytes() == null ? "" : String.format(Locale.ROOT, ", %s MiB extra", sig(r.extraBytes() / 1048576.0));
        return fig(r.rate()) + " " + r.rateUnit() + extra;
    }

    /** The row's % of the ceiling, and for byte rows of ours what a copy of the same bytes reached in the same run. */
    static String pct(BenchRow r) {
        if (r == null || !r.timed() || r.ceilingPct() == null) return "-";
        String s = String.format(Locale.ROOT, "%.0f%%", r.ceilingPct());
        if (r.sizeCopyGbs() != null && r.rate() != null && r.rate() > 0)
            s += String.format(Locale.ROOT, " (a copy of its bytes: %.0f%%)", r.ceilingPct() * r.sizeCopyGbs() / r.rate());
        return s;
    }

    static String check(BenchRow r) {
        return switch (r.status()) {
            case BenchRow.OK -> r.maxError() == null ? "ok" : "ok (max err " + String.format(Locale.ROOT, "%.1e", r.maxError()) + ")";
            case BenchRow.FAILED -> "**FAILED** (max err " + (r.maxError() == null ? "?" : String.format(Locale.ROOT, "%.1e", r.maxError()))
                    + "): " + esc(r.note());
            case BenchRow.NOT_IMPLEMENTED -> "not implemented on cuda yet";
            default -> "**error**: " + esc(r.note());
        };
    }

    /**
     * The first report must be grpo4j's and the second a peer's (each file's "tool"): files given the other way round
     * would print every ratio inverted.
     */
    static void checkTools(String oursTool, String peersTool, String oursName, String peersName) {
        if (!"grpo4j".equals(oursTool))
            throw new IllegalArgumentException(oursName + " was written by " + (oursTool == null ? "an unnamed tool" : "\"" + oursTool + "\"")
                    + ", not by grpo4j: --compare takes our report first, then the peers'");
        if ("grpo4j".equals(peersTool))
            throw new IllegalArgumentException(peersName + " was written by grpo4j, not by a peer script: --compare takes our report "
                    + "first, then the peers' (tools/bench-peers.py, tools/e2e-peers.py)");
    }

    /**
     * "; the peers' driver X" where the peers' file names another driver than ours (the peer scripts write
     * nvidia-smi's release, ours its release and the CUDA version it supports); empty where it is the same or unknown.
     */
    static String peersDriver(String ours, String peers) {
        if (peers == null || peers.isBlank() || peers.equals("fake") || peers.equals("unknown")) return "";
        if (ours != null && (ours.equals(peers) || ours.startsWith(peers + " "))) return "";
        return "; the peers' driver " + peers;
    }

    static String esc(String s) { return s == null ? "" : s.replace("|", "\\|").replace("\n", " "); }

    private static String markdown(BenchReport ours, BenchReport peers, List<Line> lines, List<BenchRow> peerOnly, int met, int judged) {
        StringBuilder b = new StringBuilder();
        b.append("card: ").append(ours.card()).append("; driver ").append(ours.driver()).append("; CUDA runtime ").append(ours.runtime());
        if (peers != null) b.append(Compare.peersDriver(ours.driver(), peers.driver()));
        if (peers != null && peers.torch() != null) b.append("; torch ").append(peers.torch());
        b.append("; sizes ").append(ours.sizes()).append("; ours ").append(ours.date());
        if (peers != null) b.append(", peers ").append(peers.date());
        b.append("\n\n");
        b.append("ceilings measured in the same run").append(peers == null ? "" : " (ours / peer)").append(": device copy ")
                .append(ceil(ours.copyGbs(), peers == null ? null : peers.copyGbs(), peers != null)).append(" GB/s, GEMM ")
                .append(ours.rows().stream().filter(r -> r.family().equals("ceiling") && r.workUnit().equals("flop"))
                        .map(r -> r.name().substring(r.name().indexOf(' ') + 1) + " ").findFirst().orElse(""))
                .append(ceil(ours.gemmTflops(), peers == null ? null : peers.gemmTflops(), peers != null)).append(" TFLOP/s\n\n");
        if (peers != null && peers.fake())
            b.append("**The peer file has placeholder timings (bench-peers.py --fake-timer): its figures and the ratios mean nothing.**\n\n");
        if (!ours.complete())
            b.append("**Our report is partial (\"complete\": false): its run stopped before its last row; the problems it did not reach")
                    .append(peers == null ? " are missing" : " are missing, and the peers' rows it has none for say \"not in ours (ours partial)\"")
                    .append("; the counts below are of the rows it has.**\n\n");
        if (peers != null && !peers.complete())
            b.append("**The peers' report is partial (\"complete\": false): its run stopped before its last row; a problem whose peer it did not")
                    .append(" reach has no peer figure.**\n\n");
        if (peers != null && !"llama-3.1-8b".equals(ours.sizes()))
            b.append("The issues set their goals at llama-3.1-8b sizes; at ").append(ours.sizes()).append(" they are indicative only.\n\n");
        if (peers == null) {
            b.append("| family | problem | shape | dtype | median ms (min-max) | rate | % of ceiling | check | goals |\n");
            b.append("|---|---|---|---|---|---|---|---|---|\n");
            for (Line l : lines) {
                BenchRow r = l.ours();
                b.append("| ").append(r.family()).append(" | ").append(r.name()).append(" | ").append(esc(r.shape())).append(" | ")
                        .append(esc(r.dtype())).append(" | ").append(ms(r)).append(" | ").append(rate(r)).append(" | ").append(pct(r))
                        .append(" | ").append(check(r)).append(" | ").append(esc(String.join("; ", l.goals()))).append(" |\n");
            }
        } else {
            b.append("| family | problem | shape | ours: median ms (min-max) | ours | % of ceiling | check | peer | peer: median ms (min-max) | peer | ours/peer | goals |\n");
            b.append("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
            BenchRow prev = null;
            for (Line l : lines) {
                BenchRow r = l.ours();
                boolean first = r != prev;
                prev = r;
                b.append("| ").append(first ? r.family() : "").append(" | ").append(first ? r.name() : "\"").append(" | ")
                        .append(first ? esc(r.shape()) : "").append(" | ").append(first ? ms(r) : "").append(" | ")
                        .append(first ? rate(r) : "").append(" | ").append(first ? pct(r) : "").append(" | ")
                        .append(first ? check(r) : "").append(" | ");
                BenchRow p = l.peer();
                if (p == null) b.append("- | - | - | ");
                else b.append(esc(p.impl())).append(" | ").append(p.timed() ? ms(p) : p.status() + (p.note() == null ? "" : ": " + esc(p.note())))
                        .append(" | ").append(rate(p)).append(" | ");
                b.append(l.ratio() == null ? "-" : String.format(Locale.ROOT, "%.2fx", l.ratio())).append(" | ")
                        .append(esc(String.join("; ", l.goals()))).append(" |\n");
            }
            for (BenchRow p : peerOnly)
                b.append("| ").append(p.family()).append(" | ").append(p.name()).append(" | ").append(esc(p.shape()))
                        .append(ours.complete() ? " | (no such problem in ours) | | | | " : " | not in ours (ours partial) | | | | ").append(esc(p.impl())).append(" | ").append(ms(p)).append(" | ")
                        .append(rate(p)).append(" | - | |\n");
        }
        long failed = ours.rows().stream().filter(r -> r.status().equals(BenchRow.FAILED)).count();
        long errors = ours.rows().stream().filter(r -> r.status().equals(BenchRow.ERROR)).count();
        long missing = ours.rows().stream().filter(r -> r.status().equals(BenchRow.NOT_IMPLEMENTED)).count();
        b.append("\n").append(ours.rows().size()).append(ours.complete() ? " problems: " : " problems (ours partial): ").append(failed).append(" FAILED, ").append(errors)
                .append(" errors, ").append(missing).append(" not implemented on cuda yet");
        b.append("; goals met: ").append(met).append(" of ").append(judged).append(" judged");
        b.append(".\n");
        return b.toString();
    }

    private static String ceil(Double a, Double b, boolean two) {
        String x = a == null ? "-" : fig(a);
        if (!two) return x;
        return x + " / " + (b == null ? "-" : fig(b));
    }

}
