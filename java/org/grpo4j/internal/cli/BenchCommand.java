package org.grpo4j.internal.cli;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import org.grpo4j.internal.backend.CpuBackend;
import org.grpo4j.internal.backend.CudaBackend;
import org.grpo4j.internal.backend.CudaRuntime;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.Tensor;
import org.grpo4j.internal.bench.BenchReport;
import org.grpo4j.internal.bench.BenchRow;
import org.grpo4j.internal.bench.BenchSizes;
import org.grpo4j.internal.bench.Compare;
import org.grpo4j.internal.bench.CompareChart;
import org.grpo4j.internal.bench.CudaEventTimer;
import org.grpo4j.internal.bench.KernelBench;
import org.grpo4j.internal.util.Charts;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code grpo4j bench}: the kernel microbenchmark on the GPU (see {@link KernelBench}, docs/benchmarks.md), and
 * {@code --compare} to merge its JSON with tools/bench-peers.py's into one table and chart.
 */
@Command(name = "bench", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Kernel microbenchmarks on the GPU: each kernel checked against the CPU at a small size, then timed with "
                + "CUDA events (median of --reps after warm-up, inputs rotated past L2) next to the copy-bandwidth and "
                + "bf16-GEMM ceilings measured in the same run. Exit status 1 when a check FAILED or a row errored.",
                "With --compare OURS.json PEERS.json: one markdown table (and with --out, a PNG chart) of ours against "
                + "tools/bench-peers.py's figures from the same card."})
final class BenchCommand implements Callable<Integer> {

    @Option(names = "--family", split = ",", paramLabel = "NAME",
            description = "gemm, norm, rope, swiglu, embedding, elementwise, adamw, reduce, kvcache, attention, decode, sampling, lmhead or all (default: all); repeatable or comma-separated")
    List<String> families;

    @Option(names = "--sizes", defaultValue = "llama-3.1-8b", description = "llama-3.1-8b or small (default: ${DEFAULT-VALUE})")
    String sizes;

    @Option(names = "--json", paramLabel = "FILE", description = "Also write the results as JSON (schema in docs/benchmarks.md).")
    Path json;

    @Option(names = "--dtype", defaultValue = "bf16", description = "Activations, their gradients and GEMM operands: bf16 or fp32 (default: ${DEFAULT-VALUE}).")
    String dtype;

    @Option(names = "--reps", defaultValue = "30", description = "Timed repetitions per row, >= 20 (default: ${DEFAULT-VALUE}).")
    int reps;

    @Option(names = "--warmup", defaultValue = "5", description = "Untimed repetitions before timing (default: ${DEFAULT-VALUE}).")
    int warmup;

    @Option(names = "--device", defaultValue = "0", description = "CUDA device index (default: ${DEFAULT-VALUE}).")
    int device;

    @Option(names = "--compare", arity = "2", paramLabel = "FILE", description = "Merge OURS.json and PEERS.json (from bench-peers.py) instead of measuring.")
    List<Path> compare;

    @Option(names = "--out", paramLabel = "DIR", description = "With --compare: also write DIR/bench-compare.md and DIR/bench-ratios.png.")
    Path out;

    @Option(names = "--row-timeout", defaultValue = "120", paramLabel = "SECONDS",
            description = "Seconds one row (check, warm-up and timing) may take; past them the run stops with exit code 3, that row "
                    + "an error and the rows before it in --json (written after every row): a hung kernel cannot be "
                    + "interrupted. 0: no limit (default: ${DEFAULT-VALUE}).")
    long rowTimeout;

    @Option(names = "--resume", paramLabel = "FILE",
            description = "Keep the rows of FILE (the --json of an earlier run of the same sizes on the same card, stopped by "
                    + "--row-timeout or by a lost device) that this run's plan has, and run only the others; --json gets "
                    + "them all (rows of families this run does not measure are left out).")
    Path resume;

    @Override
    public Integer call() throws IOException {
        PrintStream o = System.out;
        if (compare != null) return compare(o);
        if (out != null) throw new IllegalArgumentException("--out goes with --compare (bench writes its results with --json)");
        List<String> fams = KernelBench.families(families);
        BenchSizes s = BenchSizes.named(sizes);
        DType act = switch (dtype.toLowerCase(Locale.ROOT)) {
            case "bf16" -> DType.BF16;
            case "fp32" -> DType.FP32;
            default -> throw new IllegalArgumentException("unknown --dtype \"" + dtype + "\" (valid: bf16, fp32)");
        };
        if (reps < 20) throw new IllegalArgumentException("--reps must be >= 20 (a median of fewer is noise), got " + reps);
        if (warmup < 1) throw new IllegalArgumentException("--warmup must be >= 1, got " + warmup);
        if (rowTimeout < 0) throw new IllegalArgumentException("--row-timeout must be >= 0 seconds, got " + rowTimeout);

        BenchReport prior = null;
        if (resume != null) {
            if (!Files.isRegularFile(resume)) throw new IllegalArgumentException("--resume " + resume + ": no such file");
            prior = BenchReport.read(resume);
            if (!"grpo4j".equals(prior.tool()))
                throw new IllegalArgumentException("--resume " + resume + ": a report of \"" + prior.tool() + "\", not of grpo4j bench");
            if (!s.name().equals(prior.sizes()))
                throw new IllegalArgumentException("--resume " + resume + ": its rows are of sizes \"" + prior.sizes() + "\", this run's are \""
                        + s.name() + "\"");
        }
        CudaRuntime.Availability a = CudaRuntime.probe();
        if (!a.available()) {
            o.println("grpo4j bench: no GPU (" + a.reason() + "); nothing measured: this benchmark is GPU-only");
            return 0;
        }
        try (CudaBackend be = new CudaBackend(device); CpuBackend ref = new CpuBackend()) {
            CudaRuntime.Device dev = CudaRuntime.devices().get(device);
            KernelBench.Card card = new KernelBench.Card(dev.name(), CudaRuntime.driverLabel(), CudaRuntime.runtimeVersion());
            if (prior != null && !card.name().equals(prior.card()))
                throw new IllegalArgumentException("--resume " + resume + ": measured on \"" + prior.card() + "\", this device is \""
                        + card.name() + "\"");
            System.err.println("bench: " + be.description() + ", CUDA runtime " + card.runtime() + ", driver " + card.driver()
                    + "; sizes " + s.name() + ", " + act.label() + " activations, " + reps + " reps after " + warmup + " warm-up");
            // ~2 ms of device copies before each timed run (CudaEventTimer's head start)
            try (Tensor hs1 = be.empty(DType.FP32, 1 << 26); Tensor hs2 = be.empty(DType.FP32, 1 << 26)) {
                be.fill(hs1, 0);
                Runnable headStart = () -> {
                    for (int i = 0; i < 16; i++) be.copy(i % 2 == 0 ? hs2 : hs1, i % 2 == 0 ? hs1 : hs2);
                };
                long budget = (long) ((dev.totalMemory() - be.liveBytes()) * 0.6);
                KernelBench.Config cfg = new KernelBench.Config(s, fams, act, warmup, reps, KernelBench.ROTATE_BYTES, budget);
                RowWatch watch = new RowWatch(json, rowTimeout * 1000, 1000, RowWatch::halt);
                BenchReport rep;
                try {
                    rep = KernelBench.run(cfg, be, ref, new CudaEventTimer(be, headStart), card,
                            r -> System.err.println("bench: " + r.id() + ": " + summary(r)), watch, prior);
                } catch (KernelBench.DeviceLost e) {
                    if (json != null) e.soFar().write(json, false);
                    System.err.println("bench: " + e.getMessage() + ": stopping" + (json == null ? "" : "; the rows so far are in " + json
                            + " (--resume " + json + " runs the others in a new process)"));
                    // the exit now, status 4: closing the buffers and the backend on a lost context would throw (every
                    // CUDA call fails), and an exception from a close replaces the return value (exit 1: no --resume)
                    watch.stop();
                    RowWatch.halt(4);
                    return 4;  // (not reached)
                } finally {
                    watch.stop();
                }
                if (json != null) rep.write(json);
                Compare.Result t = Compare.table(rep);
                o.print(t.markdown());
                if (json != null) o.println("wrote " + json);
                return t.failed() ? 1 : 0;
            }
        }
    }

    /**
     * Writes the report so far to {@code json} after every row (complete: false), and stops the JVM (exit code 3) when a
     * row runs past {@code timeoutMs}, after writing that row as an error: a kernel that never finishes blocks its
     * CUDA call for good, and a run killed from outside would lose every row (gpu-check's comparison then takes the
     * rows measured).
     */
    static final class RowWatch implements KernelBench.Watch {
        /** The row running (null between rows) since {@code startedNs}, its error row, and the rows before it. */
        private record Running(String id, BenchRow ifHung, long startedNs, BenchReport soFar) {}

        private final Path json;
        private final long timeoutMs, pollMs;
        private final Runnable stop;
        private volatile Running running;  // one field: the watcher sees a row's id, start and rows together
        private final Thread thread;

        /** {@code timeoutMs} 0: no watch; past it (looked at every {@code pollMs}), the report is written and stop runs. */
        RowWatch(Path json, long timeoutMs, long pollMs, Runnable stop) {
            this.json = json;
            this.timeoutMs = timeoutMs;
            this.pollMs = pollMs;
            this.stop = stop;
            thread = timeoutMs <= 0 ? null : new Thread(this::watch, "bench-row-timeout");
            if (thread != null) {
                thread.setDaemon(true);
                thread.start();
            }
        }

        @Override
        public void starting(String id, BenchRow hung, BenchReport rows) {
            running = new Running(id, hung, System.nanoTime(), rows);
        }

        @Override
        public void finished(BenchReport rows) {
            running = null;
            write(rows);
        }

        /** (synchronized: the run's thread and the watcher write through one temporary file) */
        private synchronized void write(BenchReport rows) {
            if (json == null) return;
            try {
                rows.write(json, false);
            } catch (IOException e) {
                throw new java.io.UncheckedIOException(json + ": " + e.getMessage(), e);
            }
        }

        private void watch() {
            try {
                for (;;) {
                    Thread.sleep(pollMs);
                    Running r = running;
                    if (r == null || System.nanoTime() - r.startedNs() < timeoutMs * 1_000_000L) continue;
                    String where = "";
                    if (json != null) {
                        try {
                            write(r.soFar().withRow(r.ifHung()));
                            where = "; the rows before it are in " + json;
                        } catch (RuntimeException e) {
                            where = "; " + json + " could not be written: " + e.getMessage();
                        }
                    }
                    System.err.println("bench: " + r.id() + " did not finish in " + timeoutMs / 1000.0 + " s (a hung kernel?): stopping"
                            + where);
                    System.err.flush();
                    System.out.flush();
                    stop.run();
                    return;
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();  // stop(): the run ended
            }
        }

        void stop() { if (thread != null) thread.interrupt(); }

        /**
         * The JVM's end with exit status 3, where a kernel still spins: a SIGKILL 20 s later too, in case the exit
         * blocks in the CUDA runtime's teardown (its atexit handlers), which waits for the device.
         */
        static void halt() { halt(3); }

        /** As {@link #halt()}, with exit status {@code status}. */
        static void halt(int status) { org.grpo4j.internal.bench.JvmHalt.halt(status, "bench"); }
    }

    static String summary(BenchRow r) {
        if (!r.timed()) return r.status() + (r.note() == null ? "" : " (" + r.note() + ")");
        return String.format(Locale.ROOT, "%.4f ms, %.1f %s", r.medianMs(), r.rate(), r.rateUnit())
                + (r.ceilingPct() == null ? "" : String.format(Locale.ROOT, ", %.0f%% of ceiling", r.ceilingPct()));
    }

    private int compare(PrintStream o) throws IOException {
        Path ours = compare.get(0), peers = compare.get(1);
        Compare.Result res = Compare.merge(BenchReport.read(ours), BenchReport.read(peers), ours.toString(), peers.toString());
        o.print(res.markdown());
        if (out != null) {
            Files.createDirectories(out);
            Path md = out.resolve("bench-compare.md"), tmp = out.resolve(".bench-compare.md.tmp");
            Files.writeString(tmp, res.markdown());
            Files.move(tmp, md, java.nio.file.StandardCopyOption.REPLACE_EXISTING, java.nio.file.StandardCopyOption.ATOMIC_MOVE);
            Path png = out.resolve("bench-ratios.png");
            String why = Charts.tryWrite(() -> CompareChart.write(res, "grpo4j kernels vs PyTorch, same GPU, same run", png));
            if (why != null) Files.deleteIfExists(png); // not an older run's chart beside this table
            o.println(why == null ? "wrote " + md + " and " + png : "wrote " + md + "; " + png.getFileName() + " not written: " + why);
        }
        return res.failed() ? 1 : 0;
    }
}
