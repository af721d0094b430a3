package org.grpo4j.tools;

import static org.junit.platform.engine.discovery.DiscoverySelectors.selectClass;
import static org.junit.platform.engine.discovery.DiscoverySelectors.selectPackage;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;
import org.grpo4j.internal.backend.CudaRuntime;
import org.junit.platform.engine.TestExecutionResult;
import org.junit.platform.engine.discovery.ClassNameFilter;
import org.junit.platform.launcher.Launcher;
import org.junit.platform.launcher.LauncherDiscoveryRequest;
import org.junit.platform.launcher.TagFilter;
import org.junit.platform.launcher.TestExecutionListener;
import org.junit.platform.launcher.TestIdentifier;
import org.junit.platform.launcher.TestPlan;
import org.junit.platform.launcher.core.LauncherDiscoveryRequestBuilder;
import org.junit.platform.launcher.core.LauncherFactory;

/**
 * {@code tools/gpu-check}: everything a GPU loan should learn, in one command and under five minutes.
 * <ol>
 *   <li>the device, driver, runtime and whether cuBLAS/cuBLASLt/NCCL load;</li>
 *   <li>every test class with gpu-tagged tests, each in its own JVM (a kernel that faults poisons the CUDA context for
 *       the rest of its process, so one bad kernel must not take the other families down with it);</li>
 *   <li>the kernel benchmark ({@code grpo4j bench --family all}) and, where PyTorch is installed, the peers script and
 *       the comparison table;</li>
 *   <li>the same classes once more under {@code compute-sanitizer --tool memcheck} (when the toolkit has it), which
 *       reports out-of-bounds and misaligned accesses, at the conformance suites' small sizes.</li>
 * </ol>
 * One summary table goes to stdout and, with {@code --out DIR}, to {@code DIR/gpu-check.md} with every log beside it.
 * Exit status 0 when nothing failed. Without a GPU, the tests report as skipped and the rest says why it did not run.
 *
 * <p>Order: the tests, then the benchmark (the figures the issues ask for; at most {@code --bench-budget} seconds,
 * default 180: three fifths for ours, two for the peers), then the sanitizer pass with whatever time is left (a
 * diagnostic: a kernel that corrupts memory usually fails its tests too).
 *
 * <p>Options: {@code --out DIR}, {@code --no-sanitizer}, {@code --no-bench}, {@code --only CLASS} (simple name; may
 * repeat), {@code --budget SECONDS} (default 290: steps that would start after it are skipped and say so),
 * {@code --bench-budget SECONDS}, {@code --class-timeout SECONDS} (default 150: one class's JVM; tools/kernel-emu
 * --jvm, whose device is an emulator on the CPU, raises it).
 * Internal: {@code --run-class FQCN --result FILE} runs one class in this JVM (what the children do).
 */
public final class GpuCheck {
    private static final long CHILD_TIMEOUT_S = 150;
    /** A step that starts inside the budget gets at least this long, whatever is left (the budget can overrun by it). */
    private static final long MIN_STEP_S = 30;

    public static void main(String[] args) throws Exception {
        Map<String, List<String>> opt = parse(args);
        if (opt.containsKey("--run-class")) {
            System.exit(runClass(opt.get("--run-class").get(0), Path.of(opt.get("--result").get(0))));
        }
        long start = System.nanoTime();
        long budgetNs = TimeUnit.SECONDS.toNanos(Long.parseLong(first(opt, "--budget", "290")));
        long benchBudgetS = Long.parseLong(first(opt, "--bench-budget", "180"));
        long classTimeoutS = Long.parseLong(first(opt, "--class-timeout", String.valueOf(CHILD_TIMEOUT_S)));
        Path out = Path.of(first(opt, "--out", "target/gpu-check"));
        Files.createDirectories(out);
        errorFiles = out.toAbsolutePath(); // a child JVM's crash log (hs_err) beside the logs that travel back, not in the project root
        StringBuilder report = new StringBuilder();

        CudaRuntime.Availability a = CudaRuntime.probe();
        line(report, "gpu-check: cuda " + (a.available() ? a.deviceCount() + " device(s)" : "unavailable: " + a.reason()));
        for (CudaRuntime.Device d : CudaRuntime.devices())
            line(report, String.format("gpu-check: device %d %s, %.1f GiB, %d SMs, cc %s, driver CUDA %s, runtime %s", d.index(), d.name(),
                    d.totalMemory() / (double) (1L << 30), d.smCount(), d.computeCapability(), CudaRuntime.driverVersion(),
                    CudaRuntime.runtimeVersion()));
        for (CudaRuntime.LibraryStatus l : CudaRuntime.libraries())
            line(report, "gpu-check: " + l.name() + (l.loads() ? " loads: " : " does not load: ") + l.detail());

        List<String> classes = gpuTestClasses(opt.get("--only"));
        List<String[]> rows = new ArrayList<>(); // check, passed, failed, skipped, note
        List<String[]> sanRows = new ArrayList<>();
        List<String> benchNotes = new ArrayList<>();
        // gpu-check.md again after every row: a loan's command stopped at its limit still brings back what ran
        Report progress = () -> writeReport(out, report, rows, sanRows, benchNotes, "gpu-check: in progress, " + Math.round((System.nanoTime() - start) / 1e9) + " s");
        int failed = 0;
        progress.write();
        List<String> late = classes.stream().filter(c -> LATE.contains(simple(c))).toList();
        failed += runClasses(classes.stream().filter(c -> !late.contains(c)).toList(), out, classTimeoutS, start, budgetNs, rows, progress);

        if (!a.available()) benchNotes.add("kernel benchmark: skipped (no CUDA device)");
        else if (opt.containsKey("--no-bench")) benchNotes.add("kernel benchmark: skipped (--no-bench)");
        else if (System.nanoTime() - start > budgetNs) benchNotes.add("kernel benchmark: not run (time budget spent)");
        else failed += bench(out, benchNotes, Math.min(budgetNs - (System.nanoTime() - start), TimeUnit.SECONDS.toNanos(benchBudgetS)), progress);
        progress.write();
        failed += runClasses(late, out, Math.min(classTimeoutS, LATE_TIMEOUT_S), start, budgetNs, rows, progress);

        String sanitizer = a.available() && !opt.containsKey("--no-sanitizer") ? findSanitizer() : null;
        if (a.available() && !opt.containsKey("--no-sanitizer") && sanitizer == null)
            sanRows.add(new String[] {"memcheck", "-", "-", "-", "compute-sanitizer not found (PATH, $CUDA_HOME/bin, /usr/local/cuda/bin)"});
        if (sanitizer != null) {
            for (String c : memcheckOrder(classes)) {
                if (System.nanoTime() - start > budgetNs) { sanRows.add(new String[] {"memcheck " + simple(c), "-", "-", "-", "not run: time budget spent"}); continue; }
                Result r = child(c, out, sanitizer, stepTimeout(2 * classTimeoutS, start, budgetNs));
                sanRows.add(r.row("memcheck " + simple(c)));
                failed += r.failed + (r.sanitizerErrors > 0 ? 1 : 0);
                progress.write();
            }
        }

        String end = String.format("gpu-check: %.0f s, %s", (System.nanoTime() - start) / 1e9, failed == 0 ? "no failures" : failed + " failure(s)");
        writeReport(out, report, rows, sanRows, benchNotes, end);
        System.out.print(Files.readString(out.resolve("gpu-check.md")).substring(report.length()));
        System.exit(failed == 0 ? 0 : 1);
    }

    /**
     * The gpu-tagged tests of {@code classes}, each in its own JVM with at most {@code capS} (less where the budget has
     * less left), a row each ("not run" once the budget is spent), the report rewritten after each. Returns failures.
     */
    static int runClasses(List<String> classes, Path out, long capS, long start, long budgetNs, List<String[]> rows, Report progress)
            throws IOException, InterruptedException {
        int failed = 0;
        for (String c : classes) {
            if (System.nanoTime() - start > budgetNs) { rows.add(new String[] {simple(c), "-", "-", "-", "not run: time budget spent"}); continue; }
            Result r = child(c, out, null, stepTimeout(capS, start, budgetNs));
            rows.add(r.row(simple(c)));
            failed += r.failed;
            progress.write();
        }
        return failed;
    }

    /** A write of the report so far. */
    interface Report {
        void write() throws IOException;
    }

    /** The report so far (the device lines, the table, the benchmark's notes, {@code last}) to gpu-check.md, whole or not at all. */
    static void writeReport(Path out, StringBuilder head, List<String[]> rows, List<String[]> sanRows, List<String> benchNotes, String last)
            throws IOException {
        StringBuilder b = new StringBuilder(head);
        b.append('\n').append("| check | passed | failed | skipped | note |\n").append("|---|---|---|---|---|\n");
        for (String[] r : rows) b.append("| ").append(String.join(" | ", r)).append(" |\n");
        for (String[] r : sanRows) b.append("| ").append(String.join(" | ", r)).append(" |\n");
        b.append('\n');
        for (String n : benchNotes) b.append(n).append('\n');
        b.append(last).append('\n');
        Path tmp = out.resolve("gpu-check.md.tmp");
        Files.writeString(tmp, b.toString(), StandardCharsets.UTF_8);
        Files.move(tmp, out.resolve("gpu-check.md"), java.nio.file.StandardCopyOption.REPLACE_EXISTING, java.nio.file.StandardCopyOption.ATOMIC_MOVE);
    }

    /**
     * The classes in the order memcheck takes them: the kernels most likely to hold a memory error first (the Hopper
     * TMA/wgmma/bulk-copy code, attention, sampling and the LM head), since memcheck runs on the time left and the last
     * ones are often not reached.
     */
    static List<String> memcheckOrder(List<String> classes) {
        List<String> first = List.of("CudaHopperForwardTest", "CudaAttentionTest", "CudaSamplingLmHeadTest");
        List<String> out = new ArrayList<>();
        for (String f : first) for (String c : classes) if (simple(c).equals(f)) out.add(c);
        for (String c : classes) if (!out.contains(c) && !LATE.contains(simple(c))) out.add(c);
        for (String c : classes) if (!out.contains(c)) out.add(c); // the late ones last here too
        return out;
    }

    /**
     * Classes run after the benchmark, with at most {@link #LATE_TIMEOUT_S}: ones that may hang on a real device for a
     * reason only a GPU can show (NcclFormationTimeoutTest relies on a real NCCL's ncclCommAbort interrupting a
     * bootstrap that waits for a rank that never comes, which only the emulated NCCL has run), so that a hang costs
     * neither the other classes nor the benchmark their time.
     */
    static final java.util.Set<String> LATE = java.util.Set.of("NcclFormationTimeoutTest");
    static final long LATE_TIMEOUT_S = 60;

    // ---- the children ---------------------------------------------------------------------------------------------

    /** What one child reported. */
    static final class Result {
        int passed, failed, skipped, sanitizerErrors = -1;
        String note = "";

        String[] row(String name) {
            return new String[] {name, String.valueOf(passed), String.valueOf(failed), String.valueOf(skipped), note};
        }
    }

    /**
     * A step's time limit: its own cap, but no more than the budget has left (at least {@link #MIN_STEP_S}), so that
     * the whole check ends near its budget, not a full child timeout after it (a device loan's command limit).
     */
    static long stepTimeout(long capS, long startNs, long budgetNs) {
        long leftS = TimeUnit.NANOSECONDS.toSeconds(budgetNs - (System.nanoTime() - startNs));
        return Math.min(capS, Math.max(MIN_STEP_S, leftS));
    }

    /** Runs one class in a fresh JVM (under compute-sanitizer when given) and reads what it wrote. */
    static Result child(String cls, Path out, String sanitizer, long timeoutS) throws IOException, InterruptedException {
        String tag = simple(cls) + (sanitizer != null ? ".memcheck" : "");
        Path result = out.resolve(tag + ".result"), log = out.resolve(tag + ".log"), sanLog = out.resolve(tag + ".sanitizer.log");
        Files.deleteIfExists(result);
        List<String> cmd = new ArrayList<>();
        if (sanitizer != null) cmd.addAll(sanitizerCommand(sanitizer, sanLog));
        cmd.addAll(javaCommand());
        cmd.addAll(List.of(GpuCheck.class.getName(), "--run-class", cls, "--result", result.toString()));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
        Result r = new Result();
        if (!p.waitFor(timeoutS, TimeUnit.SECONDS)) {
            killTree(p);
            r.failed = 1;
            r.note = "timed out after " + timeoutS + " s" + lastTest(log) + "; log " + log.getFileName();
            return r;
        }
        if (Files.exists(result)) {
            for (String l : Files.readAllLines(result)) {
                String[] f = l.split(" ", 2);
                switch (f[0]) {
                    case "counts" -> {
                        String[] c = f[1].split(" ");
                        r.passed = Integer.parseInt(c[0]);
                        r.failed = Integer.parseInt(c[1]);
                        r.skipped = Integer.parseInt(c[2]);
                    }
                    case "skip" -> { if (r.note.isEmpty()) r.note = f[1]; }
                    case "fail" -> r.note = (r.note.isEmpty() ? "" : r.note + "; ") + f[1];
                    default -> {}
                }
            }
        } else {
            r.failed = 1;
            r.note = "the JVM ended without a result (exit " + p.exitValue() + "; a fault or crash?)" + lastTest(log) + " — log "
                    + log.getFileName() + ": " + lastLines(log, 3);
        }
        if (sanitizer != null) {
            String s = Files.exists(sanLog) ? Files.readString(sanLog) : "";
            java.util.regex.Matcher m = java.util.regex.Pattern.compile("ERROR SUMMARY: (\\d+) error").matcher(s);
            r.sanitizerErrors = m.find() ? Integer.parseInt(m.group(1)) : -1;
            String san = r.sanitizerErrors < 0 ? "no sanitizer summary (see " + sanLog.getFileName() + ")"
                    : r.sanitizerErrors == 0 ? "memcheck: 0 errors" : "memcheck: " + r.sanitizerErrors + " error(s), see " + sanLog.getFileName();
            r.note = r.note.isEmpty() ? san : san + "; " + r.note;
        }
        return r;
    }

    /**
     * memcheck on a JVM. {@code --report-api-errors no}: the tests provoke CUDA API errors on purpose (a 512 GiB
     * cudaMalloc that must fail cleanly) and check them themselves; reported, each would count in the ERROR SUMMARY
     * as if a kernel had gone out of bounds. What remains counted is what memcheck is run for: device-side accesses
     * (out of bounds, misaligned, freed memory) and API calls touching invalid memory ({@code --check-api-memory-access},
     * on by default). The JVM itself does no CUDA work, so it cannot cause a report; processes that a test starts are
     * tracked too (the default {@code --target-processes all} of current toolkits).
     */
    static List<String> sanitizerCommand(String sanitizer, Path log) {
        return List.of(sanitizer, "--tool", "memcheck", "--report-api-errors", "no", "--print-limit", "20", "--log-file", log.toString());
    }

    /** Kills a timed-out step with everything it started (compute-sanitizer's target JVM is its child, not itself). */
    static void killTree(Process p) throws InterruptedException {
        p.descendants().forEach(ProcessHandle::destroyForcibly);
        p.destroyForcibly().waitFor();
    }

    /** Where the child JVMs write a crash log (-XX:ErrorFile), or null: the JVM's default, its working directory. */
    static Path errorFiles;

    static List<String> javaCommand() {
        String java = ProcessHandle.current().info().command().orElse("java");
        List<String> cmd = new ArrayList<>(List.of(java, "-Xmx16g", "--add-modules", "jdk.incubator.vector"));
        if (errorFiles != null) cmd.add("-XX:ErrorFile=" + errorFiles.resolve("hs_err_pid%p.log"));
        cmd.addAll(List.of("-cp", System.getProperty("java.class.path")));
        return cmd;
    }

    /** Child mode: runs the gpu-tagged tests of one class and writes "counts P F S", "skip REASON", "fail NAME: MSG". */
    static int runClass(String cls, Path result) throws IOException {
        int[] counts = new int[3];
        List<String> lines = new ArrayList<>();
        int hash = cls.indexOf('#');
        String method = hash < 0 ? null : cls.substring(hash + 1);
        LauncherDiscoveryRequestBuilder rb = LauncherDiscoveryRequestBuilder.request()
                .selectors(selectClass(hash < 0 ? cls : cls.substring(0, hash))).filters(TagFilter.includeTags("gpu"));
        if (method != null) // keep the tests of that method name (in the class and its nested classes)
            rb.filters((org.junit.platform.launcher.PostDiscoveryFilter) d -> org.junit.platform.engine.FilterResult.includedIf(
                    !d.isTest() || d.getUniqueId().toString().contains("[method:" + method + "(")));
        LauncherDiscoveryRequest req = rb.build();
        Launcher launcher = LauncherFactory.create();
        launcher.execute(req, new TestExecutionListener() {
            @Override
            public void executionStarted(TestIdentifier id) {
                // each test named in the class's log as it starts: a JVM that crashes or hangs in native code then
                // names the test it was in (the log's last lines go into gpu-check.md's note)
                if (id.isTest()) {
                    System.out.println("gpu-check: test " + id.getLegacyReportingName());
                    System.out.flush();
                }
            }

            @Override
            public void executionSkipped(TestIdentifier id, String reason) {
                counts[2]++;
                lines.add("skip " + oneLine(reason));
            }

            @Override
            public void executionFinished(TestIdentifier id, TestExecutionResult r) {
                if (!id.isTest()) {
                    if (r.getStatus() == TestExecutionResult.Status.FAILED) {
                        counts[1]++;
                        lines.add("fail " + id.getDisplayName() + ": " + r.getThrowable().map(t -> oneLine(String.valueOf(t))).orElse("?"));
                        r.getThrowable().ifPresent(Throwable::printStackTrace); // the class's log: all of it (discovery issues list each)
                    }
                    return;
                }
                switch (r.getStatus()) {
                    case SUCCESSFUL -> counts[0]++;
                    case ABORTED -> {
                        counts[2]++;
                        lines.add("skip " + r.getThrowable().map(t -> oneLine(t.getMessage()).replaceFirst("^Assumption failed: ", "")).orElse(""));
                    }
                    case FAILED -> {
                        counts[1]++;
                        lines.add("fail " + id.getDisplayName() + ": " + r.getThrowable().map(t -> oneLine(String.valueOf(t))).orElse("?"));
                        r.getThrowable().ifPresent(Throwable::printStackTrace);
                    }
                }
            }
        });
        lines.add(0, "counts " + counts[0] + " " + counts[1] + " " + counts[2]);
        Files.write(result, lines);
        return counts[1] == 0 ? 0 : 1;
    }

    /** Top-level test classes that contain at least one gpu-tagged test, by discovery (nothing runs). */
    static List<String> gpuTestClasses(List<String> only) {
        LauncherDiscoveryRequest req = LauncherDiscoveryRequestBuilder.request()
                .selectors(selectPackage("org.grpo4j"))
                .filters(TagFilter.includeTags("gpu"), ClassNameFilter.includeClassNamePatterns(".*Test.*"))
                .build();
        TestPlan plan = LauncherFactory.create().discover(req);
        TreeSet<String> classes = new TreeSet<>();
        java.util.regex.Pattern p = java.util.regex.Pattern.compile("\\[class:([\\w.]+)\\]");
        for (TestIdentifier root : plan.getRoots())
            for (TestIdentifier id : plan.getDescendants(root)) {
                if (!id.isTest()) continue;
                java.util.regex.Matcher m = p.matcher(id.getUniqueId());
                if (m.find()) classes.add(m.group(1));
            }
        List<String> out = new ArrayList<>();
        for (String c : classes) {
            if (only == null || only.contains(simple(c))) out.add(c);
            else for (String o : only) // CLASS#METHOD: that class's gpu-tagged tests of that name only (nested classes too)
                if (o.startsWith(simple(c) + "#") && o.length() > simple(c).length() + 1) out.add(c + o.substring(simple(c).length()));
        }
        if (only != null)
            for (String o : only)
                if (out.stream().noneMatch(c -> simple(c).equals(o)))
                    throw new IllegalArgumentException("--only " + o + ": no gpu-tagged test class of that name (CLASS or CLASS#METHOD)");
        return out;
    }

    // ---- benchmark ------------------------------------------------------------------------------------------------

    /**
     * Our kernel benchmark, then the PyTorch peers and the comparison where torch is installed, each step capped by
     * what is left of {@code budgetNs} (the comparison keeps 15 s of it) and {@code progress} written after each.
     * Returns failures.
     */
    static int bench(Path out, List<String> notes, long budgetNs, Report progress) throws IOException, InterruptedException {
        Path ours = out.resolve("bench-ours.json"), peers = out.resolve("bench-peers.json");
        long end = System.nanoTime() + budgetNs;
        java.util.function.LongUnaryOperator left = floor -> Math.max(floor, TimeUnit.NANOSECONDS.toSeconds(end - System.nanoTime()));
        long budgetS = Math.max(30, TimeUnit.NANOSECONDS.toSeconds(budgetNs) * 3 / 5), peersS = Math.max(30, TimeUnit.NANOSECONDS.toSeconds(budgetNs) * 2 / 5);
        Files.deleteIfExists(peers); // (an earlier check's peers, compared with this run's rows, would look like this run's)
        List<String> cmd = new ArrayList<>(javaCommand());
        // (a row's limit well inside the run's, so that a hung kernel is named as that row's error, the rows before it kept)
        cmd.addAll(List.of("org.grpo4j.internal.cli.Main", "bench", "--family", "all", "--json", ours.toString(), "--row-timeout",
                String.valueOf(Math.max(10, Math.min(60, budgetS / 2)))));
        int failures = 0;
        int code = withRestarts(cmd, ours, out, budgetS, notes, GpuCheck::run);
        notes.add("kernel benchmark: " + (code == 0 ? "ok" : "exit " + code) + " — " + out.resolve("bench-ours.log").getFileName()
                + ", " + ours.getFileName());
        if (code != 0) failures++;
        progress.write();
        Path script = Path.of("tools/bench-peers.py");
        if (!Files.exists(script)) {
            notes.add("peers: tools/bench-peers.py not found (run from the project root)");
            return failures;
        }
        int torch = run(List.of("python3", "-c", "import torch; assert torch.cuda.is_available()"), out.resolve("torch-probe.log"), Math.min(60, left.applyAsLong(10)));
        if (torch != 0) {
            notes.add("peers: skipped (no python3 with CUDA torch here; see torch-probe.log)");
            return failures;
        }
        // --no-compile: torch.compile's cold compiles (six functions, fwd and bwd) alone can take the peers' share of the
        // budget, and the script writes its JSON only at the end; the compiled rows are a separate, longer run
        code = run(List.of("python3", script.toString(), "--no-compile", "--json", peers.toString()), out.resolve("bench-peers.log"),
                Math.min(peersS, left.applyAsLong(35) - 15));
        // (a peers run stopped at its share has written the rows it measured, "complete": false: compared all the same)
        notes.add("peers: " + (code == 0 ? "ok" : "exit " + code + (Files.exists(peers) ? " (the rows it measured are in " + peers.getFileName() + ")" : ""))
                + " — bench-peers.log, " + peers.getFileName());
        progress.write();
        if (Files.exists(peers) && Files.exists(ours)) {
            cmd = new ArrayList<>(javaCommand());
            cmd.addAll(List.of("org.grpo4j.internal.cli.Main", "bench", "--compare", ours.toString(), peers.toString(), "--out", out.toString()));
            code = run(cmd, out.resolve("bench-compare.log"), Math.min(60, left.applyAsLong(15)));
            notes.add("comparison: " + (code == 0 ? "ok" : "exit " + code) + " — bench-compare.log");
            if (code != 0) failures++;
            System.out.print(Files.exists(out.resolve("bench-compare.log")) ? Files.readString(out.resolve("bench-compare.log")) : "");
        }
        return failures;
    }

    /** A command run with its log and time limit (seconds), giving its exit status: {@link #run}, or a test's fake. */
    interface Runner {
        int run(List<String> cmd, Path log, long timeoutS) throws IOException, InterruptedException;
    }

    /**
     * Our benchmark, {@code cmd} (writing {@code ours}), within {@code budgetS} seconds. A row that hung (exit 3) or left
     * the device unusable (4: a fault ends the CUDA context) stops a run with the rows before it in the JSON, that row
     * an error: the others then run in a new process ({@code --resume ours}, which keeps those rows and does not run
     * them again), at most 8 times, while 20 s or more of the budget are left. A run killed (137) with its JSON marked
     * incomplete goes on the same way: the JVM's halt after a hung row runs the C library's exit, whose CUDA runtime
     * teardown can wait for the hung kernel, and the halt's fallback SIGKILL ends it 20 s later (JvmHalt). Returns the
     * last run's exit status.
     */
    static int withRestarts(List<String> cmd, Path ours, Path out, long budgetS, List<String> notes, Runner runner)
            throws IOException, InterruptedException {
        long start = System.nanoTime();
        int code = runner.run(cmd, out.resolve("bench-ours.log"), budgetS);
        for (int restart = 1; (code == 3 || code == 4 || code == 137 && incomplete(ours)) && Files.exists(ours) && restart <= 8; restart++) {
            long left = budgetS - TimeUnit.NANOSECONDS.toSeconds(System.nanoTime() - start);
            if (left < 20) break;
            notes.add("kernel benchmark: exit " + code + " (" + (code == 3 ? "a row past --row-timeout" : code == 4 ? "the device lost after a row's error"
                    : "killed before its last row: a hung row's exit blocked in the CUDA runtime") + "): the remaining rows in a new process, bench-ours-"
                    + restart + ".log");
            List<String> again = new ArrayList<>(cmd);
            again.addAll(List.of("--resume", ours.toString()));
            code = runner.run(again, out.resolve("bench-ours-" + restart + ".log"), left);
        }
        return code;
    }

    /** Whether a report file says its run stopped before its last row ("complete": false); false if it cannot be read. */
    static boolean incomplete(Path json) {
        try {
            com.fasterxml.jackson.databind.JsonNode c = org.grpo4j.internal.util.JsonFiles.MAPPER.readTree(json.toFile()).get("complete");
            return c != null && c.isBoolean() && !c.asBoolean();
        } catch (IOException | RuntimeException e) {
            return false;
        }
    }

    static int run(List<String> cmd, Path log, long timeoutS) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
        if (!p.waitFor(timeoutS, TimeUnit.SECONDS)) {
            killTree(p);
            return 124;
        }
        return p.exitValue();
    }

    // ---- small helpers ----------------------------------------------------------------------------------------------

    static String findSanitizer() {
        List<String> dirs = new ArrayList<>(List.of(System.getenv().getOrDefault("PATH", "").split(":")));
        String home = System.getenv("CUDA_HOME");
        if (home != null) dirs.add(home + "/bin");
        dirs.add("/usr/local/cuda/bin");
        for (String d : dirs) {
            Path p = Path.of(d.isEmpty() ? "." : d, "compute-sanitizer");
            if (Files.isExecutable(p)) return p.toString();
        }
        return null;
    }

    static String simple(String cls) { return cls.substring(cls.lastIndexOf('.') + 1); }

    static String oneLine(String s) {
        if (s == null) return "";
        String t = s.lines().findFirst().orElse("").trim();
        return t.length() > 300 ? t.substring(0, 300) + "..." : t;
    }

    /** " in TEST": the last test a child's log says it started (runClass prints each), or empty. */
    static String lastTest(Path log) {
        try {
            List<String> l = Files.readAllLines(log);
            for (int i = l.size() - 1; i >= 0; i--)
                if (l.get(i).startsWith("gpu-check: test ")) return " in " + l.get(i).substring("gpu-check: test ".length());
        } catch (IOException | java.io.UncheckedIOException e) {
            // (an unreadable log: the note says what it can)
        }
        return "";
    }

    static String lastLines(Path f, int n) {
        try {
            List<String> l = Files.readAllLines(f);
            return String.join(" / ", l.subList(Math.max(0, l.size() - n), l.size()));
        } catch (IOException e) {
            return "";
        }
    }

    static void line(StringBuilder report, String s) {
        System.out.println(s);
        report.append(s).append('\n');
    }

    static String first(Map<String, List<String>> opt, String key, String dflt) {
        List<String> v = opt.get(key);
        return v == null || v.isEmpty() ? dflt : v.get(0);
    }

    static Map<String, List<String>> parse(String[] args) {
        Map<String, List<String>> m = new LinkedHashMap<>();
        for (int i = 0; i < args.length; i++) {
            String k = args[i];
            boolean flag = k.equals("--no-sanitizer") || k.equals("--no-bench");
            if (!k.startsWith("--")) throw new IllegalArgumentException("gpu-check: unexpected argument " + k);
            if (flag) m.put(k, List.of());
            else {
                if (i + 1 >= args.length) throw new IllegalArgumentException("gpu-check: " + k + " needs a value");
                m.computeIfAbsent(k, x -> new ArrayList<>()).add(args[++i]);
            }
        }
        return m;
    }
}
