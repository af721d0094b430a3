package org.grpo4j.internal.bench;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.function.Consumer;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.Tensor;

/**
 * The kernel microbenchmark behind {@code grpo4j bench}: measures the two ceilings (device-to-device copy bandwidth,
 * bf16 GEMM rate), then for each problem of the chosen families checks the device against the CPU reference at a small
 * size and, when the check passes, times it at full size. A problem whose ops the device lacks gives a "not
 * implemented" row; a failed check gives a FAILED row that is never timed.
 *
 * <p>Timing: {@code warmup} untimed repetitions, then {@code reps} timed ones (median, min, max). Inputs rotate over
 * as many independent buffer sets as it takes for one pass over them to touch at least {@code rotateBytes} (several
 * times the GPU's 50-60 MB L2), so no repetition reads what the previous one left in cache.
 */
public final class KernelBench {
    private KernelBench() {}

    /** Bytes one pass over the rotated buffer sets touches at least: about 5x the L2 of an H100/H200. */
    public static final long ROTATE_BYTES = 256L << 20;

    /** At most this many buffer sets per problem. */
    static final int MAX_SETS = 64;

    /**
     * @param activations   the dtype of activations, their gradients and GEMM operands (bf16 in the mixed-precision
     *                      contract; fp32 benchmarks the fp32 kernels); weights of norms, optimizer state and
     *                      reductions are fp32 either way, as the contract says
     * @param memoryBudget  bytes the rotated buffer sets of one problem may take (fewer sets when they would not fit)
     */
    public record Config(BenchSizes sizes, List<String> families, DType activations, int warmup, int reps,
                         long rotateBytes, long memoryBudget) {
        public Config {
            if (reps < 1) throw new IllegalArgumentException("reps must be >= 1, got " + reps);
            if (warmup < 0) throw new IllegalArgumentException("warmup must be >= 0, got " + warmup);
            if (activations != DType.BF16 && activations != DType.FP32)
                throw new IllegalArgumentException("activations must be bf16 or fp32, got " + activations.label());
            families = List.copyOf(families);
        }
    }

    /** The device the run measured: name, driver and CUDA runtime versions. */
    public record Card(String name, String driver, String runtime) {}

    /** The family names one can pick, in usage order. */
    public static List<String> familyNames() { return Cases.FAMILIES; }

    /**
     * Resolves {@code --family} values ("all" or names, each possibly comma-separated); an unknown name is an
     * IllegalArgumentException listing the valid ones.
     */
    public static List<String> families(List<String> requested) {
        Set<String> out = new LinkedHashSet<>();
        for (String r : requested == null || requested.isEmpty() ? List.of("all") : requested)
            for (String f : r.split(",")) {
                String n = f.trim().toLowerCase(Locale.ROOT);
                if (n.equals("all")) out.addAll(Cases.FAMILIES);
                else if (Cases.FAMILIES.contains(n)) out.add(n);
                else throw new IllegalArgumentException("unknown --family \"" + f.trim() + "\" (valid: "
                            + String.join(", ", Cases.FAMILIES) + ", all)");
            }
        List<String> ordered = new ArrayList<>();
        for (String f : Cases.FAMILIES) if (out.contains(f)) ordered.add(f);
        return ordered;
    }

    /** Runs the benchmark; {@code progress} gets each row as soon as it is measured. */
    public static BenchReport run(Config cfg, Backend device, Backend reference, Timer timer, Card card, Consumer<BenchRow> progress) {
        return run(cfg, device, reference, timer, card, progress, null);
    }

    /**
     * What a caller is told as the run goes: the row about to run (its id, and the error row that stands for it if it
     * never finishes) with the report so far (rows in the plan's order; not complete), then the report with its row.
     * {@code grpo4j bench} writes each to --json and stops a row that does not finish (a hung kernel cannot be
     * interrupted).
     */
    public interface Watch {
        void starting(String id, BenchRow ifHung, BenchReport soFar);

        void finished(BenchReport soFar);
    }

    /**
     * When a case runs: 0 in the plan's order; 1 after those, the variants whose kernels no GPU has run yet (the Hopper
     * attention kernels, {@code [wgmma...]}), so that a hang or a fault in one of them costs no other row; 2 last, those
     * of them with the TMA forward ({@code [wgmma, tma...]}: TMA, mbarriers, setmaxnreg, the riskiest), so that a fault
     * there, which ends the CUDA context, or a wait that traps or hangs, costs none of the plain wgmma rows of either
     * shape (the fixed-dQ backward among them, the candidate default). The report keeps the plan's order.
     */
    static int deferral(Cases.Case c) {
        return c.name().contains("[wgmma, tma") ? 2 : c.name().contains("[wgmma") ? 1 : 0;
    }

    /** As above, telling {@code watch} (or null) of each row's start and end. */
    public static BenchReport run(Config cfg, Backend device, Backend reference, Timer timer, Card card, Consumer<BenchRow> progress,
                                  Watch watch) {
        return run(cfg, device, reference, timer, card, progress, watch, null);
    }

    /**
     * A run stopped because a row's error left the device unusable (on CUDA a fault, an illegal address or a trap ends
     * the context: every later call would fail too): {@link #soFar()} has the rows measured, that row last as an error.
     * {@code grpo4j bench} writes them and exits with status 4; {@code --resume} runs the others in a fresh process.
     */
    public static final class DeviceLost extends RuntimeException {
        private final transient BenchReport soFar;

        DeviceLost(String row, BenchReport soFar) {
            super("the device was unusable after " + row + "'s error");
            this.soFar = soFar;
        }

        public BenchReport soFar() { return soFar; }
    }

    /**
     * As above, keeping the rows of {@code prior} (an earlier run's report, or null) whose ids are in the plan, with its
     * ceilings, and running only the others: how a run stopped by a hung row or a lost device goes on in a new process.
     *
     * @throws DeviceLost when a row's error leaves the device unusable
     */
    public static BenchReport run(Config cfg, Backend device, Backend reference, Timer timer, Card card, Consumer<BenchRow> progress,
                                  Watch watch, BenchReport prior) {
        List<Cases.Case> plan = Cases.plan(cfg.sizes(), cfg.activations(), cfg.families());
        List<Cases.Case> order = new ArrayList<>(plan);
        order.sort(java.util.Comparator.comparingInt(KernelBench::deferral));  // (stable: the plan's order within a tier)
        java.util.Map<String, BenchRow> done = new java.util.HashMap<>();
        Double copyGbs = null, gemmTflops = null;
        if (prior != null) {
            java.util.Map<String, Cases.Case> byId = new java.util.HashMap<>();
            for (Cases.Case c : plan) byId.put(c.id(), c);
            for (BenchRow r : prior.rows()) {
                Cases.Case c = byId.get(r.id());
                if (c == null) continue;  // (a family this run does not measure)
                if (!c.dtype().equals(r.dtype()) || !c.shape().equals(r.shape()))
                    throw new IllegalArgumentException("--resume: " + r.id() + " was measured at " + r.shape() + ", " + r.dtype()
                            + "; this run's is " + c.shape() + ", " + c.dtype() + " (another --dtype?)");
                done.put(r.id(), r);
            }
            copyGbs = prior.copyGbs();
            gemmTflops = prior.gemmTflops();
        }
        try (Data data = new Data(device, false, 42)) {
            for (Cases.Case c : order) {
                if (done.containsKey(c.id())) continue;
                if (watch != null)
                    watch.starting(c.id(), row(c, BenchRow.ERROR, "did not finish within --row-timeout (a hung kernel?): the run "
                            + "stopped here", null, 0, null, null, null), report(cfg, card, copyGbs, gemmTflops, plan, done));
                BenchRow row = measure(c, cfg, device, reference, timer, data, copyGbs, gemmTflops);
                if (row.timed() && c.kind() == Cases.Kind.CEILING_COPY) copyGbs = row.rate();
                if (row.timed() && c.kind() == Cases.Kind.CEILING_GEMM) gemmTflops = row.rate();
                done.put(c.id(), row);
                if (progress != null) progress.accept(row);
                if (watch != null) watch.finished(report(cfg, card, copyGbs, gemmTflops, plan, done));
                if (BenchRow.ERROR.equals(row.status()) && !usable(device))
                    throw new DeviceLost(c.id(), report(cfg, card, copyGbs, gemmTflops, plan, done));
            }
        }
        return report(cfg, card, copyGbs, gemmTflops, plan, done);
    }

    /**
     * Whether the device still runs a fill and gives the value back (after a row's error: was the context lost?). A
     * device error flag the failed row's kernels left (an IllegalArgumentException at the read-back, which clears it)
     * is not a lost device: the fill is tried once more.
     */
    static boolean usable(Backend device) {
        for (int attempt = 0; attempt < 2; attempt++) {
            try (Tensor t = device.empty(DType.FP32, 1)) {
                device.fill(t, 1f);
                return t.toFloats()[0] == 1f;
            } catch (IllegalArgumentException e) {
                // (the flag's report, read and cleared: once more)
            } catch (RuntimeException e) {
                return false;
            }
        }
        return false;
    }

    /** The rows measured so far ({@code done} by case id), in the plan's order. */
    private static BenchReport report(Config cfg, Card card, Double copyGbs, Double gemmTflops, List<Cases.Case> plan,
                                      java.util.Map<String, BenchRow> done) {
        List<BenchRow> rows = new ArrayList<>();
        for (Cases.Case c : plan) if (done.containsKey(c.id())) rows.add(done.get(c.id()));
        return new BenchReport("grpo4j", cfg.sizes().name(), card.name(), card.driver(), card.runtime(), null,
                java.time.Instant.now().truncatedTo(java.time.temporal.ChronoUnit.SECONDS).toString(), false, copyGbs, gemmTflops, rows);
    }

    private static BenchRow row(Cases.Case c, String status, String note, double[] ms, int reps, Double ceilingPct,
                                Double maxError, Long extra) {
        Double med = null, min = null, max = null, rate = null;
        if (ms != null) {
            double[] s = ms.clone();
            Arrays.sort(s);
            int n = s.length;
            med = n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
            min = s[0];
            max = s[n - 1];
            rate = BenchRow.rate(c.workUnit(), c.work(), med);
        }
        return new BenchRow(c.id(), c.family(), c.name(), c.shape(), c.dtype(), "grpo4j", status, note, med, min, max,
                ms == null ? 0 : reps, c.work(), c.workUnit(), c.formula(), rate, BenchRow.rateUnit(c.workUnit()), ceilingPct,
                maxError, extra, null);
    }

    static BenchRow measure(Cases.Case c, Config cfg, Backend device, Backend reference, Timer timer, Data data,
                            Double copyGbs, Double gemmTflops) {
        List<String> missing = c.ops().stream().filter(op -> !device.implementsOp(op)).toList();
        if (!missing.isEmpty())
            return row(c, BenchRow.NOT_IMPLEMENTED, String.join(", ", missing) + " not implemented on " + device.name() + " yet",
                    null, 0, null, null, null);
        Double maxError = null;
        try {
            if (c.small() != null) {
                Checks.Result r = check(c, device, reference);
                maxError = r.maxError();
                if (!r.ok())
                    return row(c, BenchRow.FAILED, "check against the CPU failed: " + r.detail(), null, 0, null, maxError, null);
            }
            List<Instance> sets = new ArrayList<>();
            BenchRow r;
            try {
                Instance first = c.big().build(data);
                sets.add(first);
                long setBytes = Math.max(1, first.bytes());
                double touched = c.workUnit().equals("byte") ? c.work() : setBytes;
                // the host cost runs one set: it measures the host, the GPU's caches do not matter
                int n = c.kind() == Cases.Kind.HOST_COST ? 1 : (int) Math.max(1, Math.min(MAX_SETS, Math.ceil(cfg.rotateBytes() / touched)));
                while (n > 1 && (double) n * setBytes > cfg.memoryBudget()) n--;
                while (sets.size() < n) sets.add(c.big().build(data));
                Long extra = null;
                if (c.extraMemory()) {
                    // from nothing: buffers an earlier row grew would hide this row's (the LM head keeps its own)
                    if (device instanceof org.grpo4j.internal.backend.CudaBackend cb) cb.releaseLmHeadBuffers();
                    device.synchronize();
                    long before = device.liveBytes();
                    first.run();
                    device.synchronize();
                    extra = device.liveBytes() - before;
                }
                int k = sets.size();
                double[] ms = c.kind() == Cases.Kind.HOST_COST ? hostCost(device, first, cfg.warmup(), cfg.reps())
                        : timer.time(i -> sets.get(i % k).run(), cfg.warmup(), cfg.reps());
                r = row(c, BenchRow.OK, k > 1 ? k + " buffer sets rotated" : null, ms, cfg.reps(), null, maxError, extra);
                Double ceiling = c.workUnit().equals("byte") ? copyGbs : c.workUnit().equals("flop") ? gemmTflops : null;
                if (c.kind() == Cases.Kind.CEILING_COPY || c.kind() == Cases.Kind.CEILING_GEMM) ceiling = r.rate();
                if (ceiling != null) r = r.withCeilingPct(100 * r.rate() / ceiling);
            } finally {
                for (Instance i : sets) i.close();
                data.closeInstances();
            }
            // after the row's buffers are freed, from inputs of its own (the rows' inputs stay where they were)
            if (c.kind() == Cases.Kind.KERNEL && c.workUnit().equals("byte") && copyGbs != null && c.work() < SIZE_COPY_MAX_BYTES)
                r = r.withSizeCopyGbs(sizeCopy(c.work(), cfg, device, timer));
            return r;
        } catch (RuntimeException e) {
            String m = e.getMessage() == null ? e.getClass().getSimpleName() : e.getMessage().lines().findFirst().orElse("");
            return row(c, BenchRow.ERROR, e.getClass().getSimpleName() + ": " + m, null, 0, null, maxError, null);
        }
    }

    /**
     * Rows that move this many bytes or more get no copy of their own size: the ceiling's copy (2 GiB moved) is that
     * figure already, and a copy as large as AdamW's 32 GB would need as much device memory again.
     */
    static final double SIZE_COPY_MAX_BYTES = 1L << 30;

    /**
     * The rate of a device copy that moves {@code bytes} (read half, write half: the copy ceiling's accounting), timed
     * like the rows (rotated buffer sets, the same warm-up and repetitions): the bandwidth a memory-bound kernel of
     * this size can reach, its launch and the ramp of its first and last loads included, which the large copy of the
     * ceiling amortizes. Null when it cannot be measured (the row keeps its own figures).
     */
    static Double sizeCopy(double bytes, Config cfg, Backend device, Timer timer) {
        int n = (int) Math.max(1, Math.min(Integer.MAX_VALUE, Math.round(bytes / 8)));
        List<Instance> sets = new ArrayList<>();
        try (Data data = new Data(device, false, 43)) {
            int k = (int) Math.max(1, Math.min(MAX_SETS, Math.ceil(cfg.rotateBytes() / (8.0 * n))));
            while (k > 1 && 8.0 * n * k > cfg.memoryBudget()) k--;
            while (sets.size() < k) sets.add(Cases.copy(data, n));
            int m = sets.size();
            double[] ms = timer.time(i -> sets.get(i % m).run(), cfg.warmup(), cfg.reps());
            Arrays.sort(ms);
            double med = ms.length % 2 == 1 ? ms[ms.length / 2] : (ms[ms.length / 2 - 1] + ms[ms.length / 2]) / 2;
            return BenchRow.rate("byte", 8.0 * n, med);
        } catch (RuntimeException e) {
            return null;
        } finally {
            for (Instance i : sets) i.close();
        }
    }

    /** The same problem at its small size on both backends from bit-identical inputs, outputs compared. */
    static Checks.Result check(Cases.Case c, Backend device, Backend reference) {
        try (Data dd = new Data(device, true, 7); Data rd = new Data(reference, true, 7)) {
            try {
                Instance di = c.small().build(dd), ri = c.small().build(rd);
                di.run();
                ri.run();
                device.synchronize();
                return Checks.compare(di, ri);
            } finally {
                dd.closeInstances();
                rd.closeInstances();
            }
        }
    }

    /**
     * Host cost per call: the host's wall time of {@link Cases#HOST_CALLS} back-to-back calls, divided by their number,
     * measured while the GPU is still busy with them (each repetition starts on an idle stream and ends before
     * synchronizing), so it is the enqueue cost and not the GPU's.
     */
    static double[] hostCost(Backend device, Instance inst, int warmup, int reps) {
        // the JIT first: HotSpot compiles the call path fully (C2) after some thousands of calls, and a training step
        // makes millions; the first GPU run timed it after 5 calls, mostly in C1's profiling code (median 12.3 us,
        // min 10.4). Batches of HOST_CALLS, synchronized, so the launch queue never fills.
        for (int done = 0; done < Math.max(warmup, Cases.HOST_WARMUP_CALLS); done += Cases.HOST_CALLS) {
            for (int i = 0; i < Cases.HOST_CALLS; i++) inst.run();
            device.synchronize();
        }
        double[] ms = new double[reps];
        for (int r = 0; r < reps; r++) {
            long t0 = System.nanoTime();
            for (int i = 0; i < Cases.HOST_CALLS; i++) inst.run();
            ms[r] = (System.nanoTime() - t0) / 1e6 / Cases.HOST_CALLS;
            device.synchronize();
        }
        return ms;
    }
}
