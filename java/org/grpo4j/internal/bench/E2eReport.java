package org.grpo4j.internal.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * An end-to-end benchmark run (schema {@value #SCHEMA}, docs/benchmarks.md "End to end"), as written by
 * {@link E2eBench} and by tools/e2e-peers.py: where it ran, the copy bandwidth it measured, and one row per
 * (problem, implementation, variant). Problems are named {@code section/preset/shape}: {@code train/llama-3.2-1b/4x2048},
 * {@code rollout/llama-3.2-1b/new256}, {@code grpo/llama-3.2-1b/48x16}.
 *
 * @param tool         "grpo4j" or "transformers"
 * @param card         the GPU's name (or "cpu ..."); compare refuses to mix cards
 * @param torch        torch version (peers), transformers the transformers version (peers)
 * @param backend      the backend that ran it ("cuda:0", "cpu", "torch cuda")
 * @param precision    "bf16" or "fp32" (compute weights, activations, KV cache)
 * @param fake         true when the timings are placeholders (e2e-peers.py --fake-timer)
 * @param copyGbs      device-to-device copy bandwidth measured in this run (bytes read + written per second / 1e9)
 * @param peakTflops   the dense bf16 peak MFU is counted against
 */
public record E2eReport(String tool, String card, String driver, String runtime, String torch, String transformers, String backend,
                        String precision, String date, boolean fake, Double copyGbs, double peakTflops, List<Row> rows) {

    public static final String SCHEMA = "grpo4j-e2e/1";

    public static final String TRAIN = "train", ROLLOUT = "rollout", GRPO = "grpo";
    public static final List<String> SECTIONS = List.of(TRAIN, ROLLOUT, GRPO);

    public static final String OK = "ok", ERROR = "error", SKIPPED = "skipped";
    static final Set<String> STATUSES = Set.of(OK, ERROR, SKIPPED);

    /** The figures an {@code ok} row of each section must have (positive, finite). */
    static final Map<String, List<String>> REQUIRED = Map.of(
            TRAIN, List.of("tokens", "tokens_per_s", "flops", "mfu_pct"),
            ROLLOUT, List.of("tokens", "tokens_per_s", "roofline_bytes", "roofline_pct"),
            GRPO, List.of("generation_s", "reward_s", "logprobs_s", "training_s", "total_s"));

    /** Every figure a row may carry, in the order they are written. */
    public static final List<String> FIGURES = List.of("tokens", "tokens_per_s", "flops", "tflops", "mfu_pct", "roofline_bytes",
            "roofline_pct", "bound_pct", "steady_tokens_per_s", "steady_roofline_pct", "steady_bound_pct", "host_ms_per_step",
            "bookkeeping_ms_per_step", "graph_setup_steps", "graph_setup_ms",
            "decode_steps", "overlapped_steps", "graph_replays", "graph_replays_second_half", "prefix_group_rows",
            "generation_s", "reward_s", "logprobs_s", "training_s", "total_s", "generated_tokens", "trained_tokens", "training_token_rows",
            "optimizer_steps");

    /**
     * One measured problem.
     *
     * @param variant  what distinguishes several of our rows for one problem ("graphs", "eager", "checkpointing"), or null
     * @param impl     "grpo4j" or the peer's implementation
     * @param medianMs median (min, max) wall time of one repetition: a training step, a whole generate call, a GRPO step
     * @param figures  the section's figures (see {@link #FIGURES}): tokens per repetition, tokens/s, FLOPs, MFU %, ...
     */
    public record Row(String id, String section, String preset, String shape, String variant, String impl, String status, String note,
                      Double medianMs, Double minMs, Double maxMs, int reps, Map<String, Double> figures) {
        public Row {
            figures = figures == null ? Map.of() : java.util.Collections.unmodifiableMap(new LinkedHashMap<>(figures));
        }

        public boolean ok() { return OK.equals(status); }

        /** A figure, or null when absent. */
        public Double fig(String name) { return figures.get(name); }

        /** The problem's key without the section and preset ("4x2048", "new256"). */
        public String shapeKey() { return id.substring(section.length() + preset.length() + 2); }
    }

    public boolean anyError() { return rows.stream().anyMatch(r -> ERROR.equals(r.status())); }

    // ---- writing --------------------------------------------------------------------------------------------------

    public String toJson() { return toJson(true); }

    /**
     * With {@code complete} false ("complete": false in the file): the rows so far of a run that goes on, or that was
     * stopped or died before its last row (read back like any report: the rows are the rows measured).
     */
    public String toJson(boolean complete) {
        ObjectNode o = ReportJson.JSON.createObjectNode();
        o.put("schema", SCHEMA);
        o.put("tool", tool);
        o.put("card", card);
        o.put("driver", driver);
        o.put("runtime", runtime);
        if (torch != null) o.put("torch", torch);
        if (transformers != null) o.put("transformers", transformers);
        o.put("backend", backend);
        o.put("precision", precision);
        o.put("date", date);
        o.put("fake", fake);
        if (!complete) o.put("complete", false);
        if (copyGbs != null && Double.isFinite(copyGbs)) o.put("copy_gbs", copyGbs);
        o.put("peak_tflops", peakTflops);
        ArrayNode a = o.putArray("rows");
        for (Row r : rows) {
            ObjectNode n = a.addObject();
            n.put("id", r.id());
            n.put("section", r.section());
            n.put("preset", r.preset());
            n.put("shape", r.shape());
            if (r.variant() != null) n.put("variant", r.variant());
            n.put("impl", r.impl());
            n.put("status", r.status());
            if (r.note() != null) n.put("note", r.note());
            ReportJson.putNum(n, "median_ms", r.medianMs());
            ReportJson.putNum(n, "min_ms", r.minMs());
            ReportJson.putNum(n, "max_ms", r.maxMs());
            n.put("reps", r.reps());
            for (String f : FIGURES) ReportJson.putNum(n, f, r.fig(f));
        }
        return ReportJson.text(o);
    }

    /** Writes the JSON through a temporary file and a rename, so an interrupted write never leaves half a file. */
    public void write(Path file) throws IOException { ReportJson.write(file, toJson()); }

    /** As {@link #write(Path)}, marked complete or not. */
    public void write(Path file, boolean complete) throws IOException { ReportJson.write(file, toJson(complete)); }

    // ---- reading --------------------------------------------------------------------------------------------------

    /**
     * Reads and validates a report; anything missing or malformed is an IllegalArgumentException naming the file and
     * the field ("peers.json: rows[1].tokens_per_s: expected a positive number, got -1.0").
     */
    public static E2eReport read(Path file) throws IOException {
        return parse(ReportJson.read(file), file.toString());
    }

    static E2eReport parse(JsonNode root, String where) {
        if (root == null || !root.isObject()) throw new IllegalArgumentException(where + ": expected a JSON object");
        String schema = ReportJson.str(root, "schema", where, true);
        if (!SCHEMA.equals(schema)) {
            String hint = BenchReport.SCHEMA.equals(schema) ? " (a kernel benchmark file: compare it with grpo4j bench --compare)" : "";
            throw new IllegalArgumentException(where + ": schema is \"" + schema + "\", expected \"" + SCHEMA + "\"" + hint);
        }
        JsonNode rowsNode = root.get("rows");
        if (rowsNode == null || !rowsNode.isArray()) throw new IllegalArgumentException(where + ": rows: expected an array");
        List<Row> rows = new ArrayList<>();
        for (int i = 0; i < rowsNode.size(); i++) rows.add(parseRow(rowsNode.get(i), where + ": rows[" + i + "]"));
        JsonNode fake = root.get("fake");
        if (fake != null && !fake.isBoolean()) throw new IllegalArgumentException(where + ": fake: expected true or false");
        Double peak = ReportJson.num(root, "peak_tflops", where, true, true);
        return new E2eReport(ReportJson.str(root, "tool", where, true), ReportJson.str(root, "card", where, true), ReportJson.str(root, "driver", where, false),
                ReportJson.str(root, "runtime", where, false), ReportJson.str(root, "torch", where, false), ReportJson.str(root, "transformers", where, false),
                ReportJson.str(root, "backend", where, false), ReportJson.str(root, "precision", where, false), ReportJson.str(root, "date", where, false),
                fake != null && fake.asBoolean(), ReportJson.num(root, "copy_gbs", where, false, true), peak, rows);
    }

    private static Row parseRow(JsonNode n, String where) {
        if (n == null || !n.isObject()) throw new IllegalArgumentException(where + ": expected an object");
        String id = ReportJson.str(n, "id", where, true), section = ReportJson.str(n, "section", where, true), preset = ReportJson.str(n, "preset", where, true);
        if (!SECTIONS.contains(section))
            throw new IllegalArgumentException(where + ".section: \"" + section + "\" is not one of " + String.join(", ", SECTIONS));
        String prefix = section + "/" + preset + "/";
        if (!id.startsWith(prefix) || id.length() == prefix.length())
            throw new IllegalArgumentException(where + ".id: \"" + id + "\" should be section/preset/shape = \"" + prefix + "...\"");
        String status = ReportJson.str(n, "status", where, true);
        if (!STATUSES.contains(status))
            throw new IllegalArgumentException(where + ".status: \"" + status + "\" is not one of " + String.join(", ", new java.util.TreeSet<>(STATUSES)));
        boolean ok = OK.equals(status);
        Double median = ReportJson.num(n, "median_ms", where, ok, true), min = ReportJson.num(n, "min_ms", where, ok, true), max = ReportJson.num(n, "max_ms", where, ok, true);
        if (ok && !(min <= median && median <= max))
            throw new IllegalArgumentException(where + ": expected min_ms <= median_ms <= max_ms, got " + min + ", " + median + ", " + max);
        JsonNode reps = n.get("reps");
        if (reps == null || !reps.canConvertToInt() || (ok && reps.asInt() < 1))
            throw new IllegalArgumentException(where + ".reps: expected a positive integer");
        Map<String, Double> figs = new LinkedHashMap<>();
        List<String> required = ok ? REQUIRED.get(section) : List.of();
        for (String f : FIGURES) {
            Double v = ReportJson.num(n, f, where, required.contains(f), required.contains(f));
            if (v != null) figs.put(f, v);
        }
        return new Row(id, section, preset, ReportJson.str(n, "shape", where, false), ReportJson.str(n, "variant", where, false), ReportJson.str(n, "impl", where, true),
                status, ReportJson.str(n, "note", where, false), median, min, max, reps.asInt(), figs);
    }

}
