package org.grpo4j.internal.bench;

/**
 * One row of a benchmark report (ours or a peer's): a problem ({@code id}), the implementation that ran it and what it
 * measured. Both sides describe a problem by the same id, shape and work, so that their times compare directly:
 * ours/peer ratio = peer median time / our median time (= our rate / the peer's rate).
 *
 * @param id         family + "/" + name, the key that matches our row with the peer's rows
 * @param impl       "grpo4j", or the peer's implementation ("torch.matmul", "torch.compile", ...)
 * @param status     {@link #OK}, {@link #FAILED} (the correctness check failed; not timed), {@link #NOT_IMPLEMENTED}
 *                   or {@link #ERROR} (the run threw; the note says what)
 * @param medianMs   median time of one repetition in milliseconds (null unless timed)
 * @param work       FLOPs, bytes or calls of one repetition, as {@code workUnit} says; {@code formula} states it
 * @param rate       TFLOP/s, GB/s or microseconds per call ({@code rateUnit})
 * @param ceilingPct rate as a percentage of the ceiling measured in the same run (GEMM rate for FLOP rows, copy
 *                   bandwidth for byte rows), or null
 * @param maxError   the correctness check's largest |device - CPU| over the outputs, or null when not checked
 * @param extraBytes device memory the implementation needed beyond its inputs and outputs, where measured
 * @param sizeCopyGbs the rate of a device copy moving the same bytes, timed in the same run right after the row (byte
 *                   rows of ours under 1 GiB): what a kernel of this size can reach, launch and ramp included, or null
 */
public record BenchRow(String id, String family, String name, String shape, String dtype, String impl, String status,
                       String note, Double medianMs, Double minMs, Double maxMs, int reps, double work, String workUnit,
                       String formula, Double rate, String rateUnit, Double ceilingPct, Double maxError, Long extraBytes,
                       Double sizeCopyGbs) {

    public static final String OK = "ok";
    public static final String FAILED = "FAILED";
    public static final String NOT_IMPLEMENTED = "not implemented";
    public static final String ERROR = "error";

    public boolean timed() { return OK.equals(status) && medianMs != null; }

    /** The rate of {@code work} done in {@code ms}: TFLOP/s for "flop", GB/s for "byte", microseconds for "call". */
    public static double rate(String workUnit, double work, double ms) {
        return switch (workUnit) {
            case "flop" -> work / (ms * 1e9);
            case "byte" -> work / (ms * 1e6);
            case "call" -> ms * 1e3;
            default -> throw new IllegalArgumentException("unknown work unit \"" + workUnit + "\" (flop, byte, call)");
        };
    }

    public static String rateUnit(String workUnit) {
        return switch (workUnit) {
            case "flop" -> "TFLOP/s";
            case "byte" -> "GB/s";
            case "call" -> "us/call";
            default -> throw new IllegalArgumentException("unknown work unit \"" + workUnit + "\" (flop, byte, call)");
        };
    }

    BenchRow withCeilingPct(Double pct) {
        return new BenchRow(id, family, name, shape, dtype, impl, status, note, medianMs, minMs, maxMs, reps, work, workUnit,
                formula, rate, rateUnit, pct, maxError, extraBytes, sizeCopyGbs);
    }

    BenchRow withSizeCopyGbs(Double gbs) {
        return new BenchRow(id, family, name, shape, dtype, impl, status, note, medianMs, minMs, maxMs, reps, work, workUnit,
                formula, rate, rateUnit, ceilingPct, maxError, extraBytes, gbs);
    }
}
