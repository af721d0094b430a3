package org.grpo4j.internal.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;

/**
 * A benchmark run as written to {@code --json} by {@code grpo4j bench} and by tools/bench-peers.py (schema
 * {@value #SCHEMA}, described in docs/benchmarks.md): where it ran, the ceilings it measured, and its rows.
 *
 * @param tool     "grpo4j" or "pytorch"
 * @param sizes    the size preset ({@link BenchSizes#name()})
 * @param card     the GPU's name as the driver reports it (compare refuses to mix cards)
 * @param torch    torch version (peers only)
 * @param fake     true when the timings are placeholders (bench-peers.py --fake-timer): the structure is real, the
 *                 figures are not
 * @param copyGbs  device-to-device copy bandwidth measured in this run, or null
 * @param gemmTflops bf16 GEMM rate at the ceiling shape measured in this run, or null
 */
public record BenchReport(String tool, String sizes, String card, String driver, String runtime, String torch, String date,
                          boolean fake, Double copyGbs, Double gemmTflops, List<BenchRow> rows, boolean complete) {

    /** A whole report ("complete": true): every row of its run. */
    public BenchReport(String tool, String sizes, String card, String driver, String runtime, String torch, String date,
                       boolean fake, Double copyGbs, Double gemmTflops, List<BenchRow> rows) {
        this(tool, sizes, card, driver, runtime, torch, date, fake, copyGbs, gemmTflops, rows, true);
    }

    public static final String SCHEMA = "grpo4j-bench/1";

    static final Set<String> STATUSES = Set.of(BenchRow.OK, BenchRow.FAILED, BenchRow.NOT_IMPLEMENTED, BenchRow.ERROR);

    public boolean anyFailed() {
        return rows.stream().anyMatch(r -> BenchRow.FAILED.equals(r.status()) || BenchRow.ERROR.equals(r.status()));
    }

    // ---- writing --------------------------------------------------------------------------------------------------

    public String toJson() { return toJson(true); }

    /** With {@code complete} false: the rows so far of a run that goes on (or was stopped), as bench-peers.py writes. */
    public String toJson(boolean complete) {
        ObjectNode o = ReportJson.JSON.createObjectNode();
        o.put("schema", SCHEMA);
        o.put("tool", tool);
        o.put("sizes", sizes);
        o.put("card", card);
        o.put("driver", driver);
        o.put("runtime", runtime);
        if (torch != null) o.put("torch", torch);
        o.put("date", date);
        o.put("fake", fake);
        o.put("complete", complete);
        ReportJson.putNum(o, "copy_gbs", copyGbs);
        ReportJson.putNum(o, "gemm_tflops", gemmTflops);
        ArrayNode a = o.putArray("rows");
        for (BenchRow r : rows) {
            ObjectNode n = a.addObject();
            n.put("id", r.id());
            n.put("family", r.family());
            n.put("name", r.name());
            n.put("shape", r.shape());
            n.put("dtype", r.dtype());
            n.put("impl", r.impl());
            n.put("status", r.status());
            if (r.note() != null) n.put("note", r.note());
            ReportJson.putNum(n, "median_ms", r.medianMs());
            ReportJson.putNum(n, "min_ms", r.minMs());
            ReportJson.putNum(n, "max_ms", r.maxMs());
            n.put("reps", r.reps());
            n.put("work", r.work());
            n.put("work_unit", r.workUnit());
            if (r.formula() != null) n.put("formula", r.formula());
            ReportJson.putNum(n, "rate", r.rate());
            n.put("rate_unit", r.rateUnit());
            ReportJson.putNum(n, "ceiling_pct", r.ceilingPct());
            ReportJson.putNum(n, "max_error", r.maxError());
            if (r.extraBytes() != null) n.put("extra_bytes", r.extraBytes());
            ReportJson.putNum(n, "size_copy_gbs", r.sizeCopyGbs());
        }
        return ReportJson.text(o);
    }

    /** Writes the JSON through a temporary file and a rename, so an interrupted write never leaves half a file. */
    public void write(Path file) throws IOException { ReportJson.write(file, toJson()); }

    /** As {@link #write(Path)}, marked complete or not. */
    public void write(Path file, boolean complete) throws IOException { ReportJson.write(file, toJson(complete)); }

    /** This report with one more row at the end. */
    public BenchReport withRow(BenchRow r) {
        List<BenchRow> more = new ArrayList<>(rows);
        more.add(r);
        return new BenchReport(tool, sizes, card, driver, runtime, torch, date, fake, copyGbs, gemmTflops, more, complete);
    }

    // ---- reading --------------------------------------------------------------------------------------------------

    /**
     * Reads and validates a report; anything missing or malformed is an IllegalArgumentException naming the file and
     * the field ("peers.json: rows[3].median_ms: expected a positive number, got -1.0").
     */
    public static BenchReport read(Path file) throws IOException {
        return parse(ReportJson.read(file), file.toString());
    }

    static BenchReport parse(JsonNode root, String where) {
        if (root == null || !root.isObject()) throw new IllegalArgumentException(where + ": expected a JSON object");
        String schema = ReportJson.str(root, "schema", where, true);
        if (!SCHEMA.equals(schema))
            throw new IllegalArgumentException(where + ": schema is \"" + schema + "\", expected \"" + SCHEMA + "\"");
        JsonNode rowsNode = root.get("rows");
        if (rowsNode == null || !rowsNode.isArray()) throw new IllegalArgumentException(where + ": rows: expected an array");
        List<BenchRow> rows = new ArrayList<>();
        for (int i = 0; i < rowsNode.size(); i++) rows.add(parseRow(rowsNode.get(i), where + ": rows[" + i + "]"));
        JsonNode fake = root.get("fake");
        if (fake != null && !fake.isBoolean()) throw new IllegalArgumentException(where + ": fake: expected true or false");
        // (absent: complete, as files written before the field; false: a run stopped before its last row)
        JsonNode complete = root.get("complete");
        if (complete != null && !complete.isBoolean()) throw new IllegalArgumentException(where + ": complete: expected true or false");
        return new BenchReport(ReportJson.str(root, "tool", where, true), ReportJson.str(root, "sizes", where, true), ReportJson.str(root, "card", where, true),
                ReportJson.str(root, "driver", where, false), ReportJson.str(root, "runtime", where, false), ReportJson.str(root, "torch", where, false),
                ReportJson.str(root, "date", where, false), fake != null && fake.asBoolean(), ReportJson.num(root, "copy_gbs", where, false, true),
                ReportJson.num(root, "gemm_tflops", where, false, true), rows, complete == null || complete.asBoolean());
    }

    private static BenchRow parseRow(JsonNode n, String where) {
        if (n == null || !n.isObject()) throw new IllegalArgumentException(where + ": expected an object");
        String id = ReportJson.str(n, "id", where, true), family = ReportJson.str(n, "family", where, true), name = ReportJson.str(n, "name", where, true);
        if (!id.equals(family + "/" + name))
            throw new IllegalArgumentException(where + ".id: \"" + id + "\" should be family/name = \"" + family + "/" + name + "\"");
        String status = ReportJson.str(n, "status", where, true);
        if (!STATUSES.contains(status))
            throw new IllegalArgumentException(where + ".status: \"" + status + "\" is not one of " + STATUSES);
        String unit = ReportJson.str(n, "work_unit", where, true);
        if (!Set.of("flop", "byte", "call").contains(unit))
            throw new IllegalArgumentException(where + ".work_unit: \"" + unit + "\" is not one of flop, byte, call");
        boolean ok = BenchRow.OK.equals(status);
        Double median = ReportJson.num(n, "median_ms", where, ok, true), min = ReportJson.num(n, "min_ms", where, ok, true), max = ReportJson.num(n, "max_ms", where, ok, true);
        if (ok && !(min <= median && median <= max))
            throw new IllegalArgumentException(where + ": expected min_ms <= median_ms <= max_ms, got " + min + ", " + median + ", " + max);
        JsonNode reps = n.get("reps");
        if (reps == null || !reps.canConvertToInt() || (ok && reps.asInt() < 1))
            throw new IllegalArgumentException(where + ".reps: expected a positive integer");
        Double work = ReportJson.num(n, "work", where, true, false);
        JsonNode extra = n.get("extra_bytes");
        if (extra != null && !extra.canConvertToLong()) throw new IllegalArgumentException(where + ".extra_bytes: expected an integer");
        Double rate = ReportJson.num(n, "rate", where, ok, true);
        return new BenchRow(id, family, name, ReportJson.str(n, "shape", where, false), ReportJson.str(n, "dtype", where, false),
                ReportJson.str(n, "impl", where, true), status, ReportJson.str(n, "note", where, false), median, min, max, reps.asInt(), work, unit,
                ReportJson.str(n, "formula", where, false), rate, ReportJson.str(n, "rate_unit", where, false), ReportJson.num(n, "ceiling_pct", where, false, false),
                ReportJson.num(n, "max_error", where, false, false), extra == null ? null : extra.asLong(),
                ReportJson.num(n, "size_copy_gbs", where, false, false));
    }

}
