package org.grpo4j.internal.backend;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;

/**
 * The CUDA kernels of cuda/, their own source, on the CPU (tools/kernel-emu; docs/kernels.md "Without a GPU: the
 * kernel emulator"): every family through the real launchers against float64 references under AddressSanitizer, then
 * the families with shared-memory protocols under ThreadSanitizer with CUDA's happens-before edges (a missing barrier
 * is a data race), the memory profile's own check, and the hot kernels' memory profile at the benchmark's sizes. Needs
 * g++ with C++20 and the CUDA headers (both on the build machines); skipped with -Dgrpo4j.noCuda, like the nvcc build.
 */
@Order(Integer.MAX_VALUE)  // last of the test classes (src/test/resources/junit-platform.properties): see start()
class KernelEmulatorTest {
    private static final Path ROOT = Path.of(System.getProperty("user.dir"));

    /** The emulator runs of the tests below, each a tools/kernel-emu process: the arguments, and their results. */
    private static final List<List<String>> RUNS = new ArrayList<>();
    private static final Map<List<String>, CompletableFuture<Run>> RESULTS = new HashMap<>();
    private static final Map<String, String> BUILD_FAILED = new ConcurrentHashMap<>();  // a build's sanitizer flag -> its log
    /** The three builds' outcome: null, or why the class is skipped (no CUDA headers or no compiler). */
    private static CompletableFuture<String> builds;
    private static ExecutorService buildPool, pool;
    /** The builds' and runs' processes still alive and their logs, which a JVM that exits kills and deletes (start's hook). */
    private static final Map<Process, Path> LIVE = new HashMap<>();  // (guarded by itself)
    private static boolean exiting;  // (guarded by LIVE) the hook has run: no process starts
    private static Thread killOnExit;

    /**
     * How long a test waits for its run, and awaitBuilds for the builds, once this class's turn has come: the limit is
     * the test's, not the process's, as a process started early may have waited at nice 19 behind the other classes.
     * The processes themselves get {@link #PROCESS_LIMIT_MINUTES}, a bound for a hung one only.
     */
    private static final int TEST_LIMIT_MINUTES = 20, PROCESS_LIMIT_MINUTES = 90;

    /**
     * Starts the emulator's work in the background, once: the three builds (AddressSanitizer, ThreadSanitizer,
     * profile) at once, and each run as soon as its own build is done, as many at a time as there are cores (each run
     * is one thread of the CPU). Every process runs at the lowest CPU priority ({@code nice -n 19}): started when the
     * test plan starts ({@link KernelEmulatorEarlyStart}, this class ordered last), it takes only what the other test
     * classes leave idle of the build machine's 2 cores (a third of them, on average, in CI: its waits on child JVMs,
     * its single-threaded stretches), instead of ~7 minutes of both cores of its own (CI's time limit). A run of this
     * class alone starts it here, from {@link #awaitBuilds}. The tests then wait for their own runs. The three builds
     * run at once, each {@code make -j$(nproc)}: six compilers on 2 cores, at most ~330 MB each (measured: the largest
     * resident set of a ThreadSanitizer build), under 2 GB beside the 6 GB surefire JVM; one build at a time left
     * this class ~65 s more to wait for at its turn in CI (its runs started later).
     * A JVM that exits while processes are left kills them (a shutdown hook); one killed outright (SIGKILL) leaves them
     * to finish on their own, within minutes, each bounded by its own work. {@link #stop} forgets everything, so that a
     * second test plan in the same JVM builds and runs afresh.
     */
    static synchronized void start() {
        if (builds != null) return;
        if (System.getProperty("grpo4j.noCuda") != null || !Files.isExecutable(ROOT.resolve("tools/kernel-emu"))) {
            builds = CompletableFuture.completedFuture(null);  // (awaitBuilds' assumptions say why)
            return;
        }
        RUNS.add(List.of("--blocks", "2026"));
        List<String> race = new ArrayList<>(List.of("--race"));
        race.addAll(RACE_CASES);
        RUNS.add(race);
        RUNS.add(List.of("--profile", "shapes-attention"));
        RUNS.add(List.of("--profile", "shapes"));
        RUNS.add(List.of("--profile", "profile", "fwd_bwd_tensor_core_d64"));
        RUNS.add(ORDER_REVERSE);
        RUNS.add(ORDER_SHUFFLED);
        ThreadFactory daemons = r -> {
            Thread t = new Thread(r, "kernel-emu");
            t.setDaemon(true);  // (a JVM that ends with runs left does not wait for them; the listener's stop kills them)
            return t;
        };
        List<String> sans = List.of("", "--race", "--profile");  // AddressSanitizer (the default), ThreadSanitizer, profile
        buildPool = Executors.newFixedThreadPool(sans.size(), daemons);
        pool = Executors.newFixedThreadPool(Math.max(1, Runtime.getRuntime().availableProcessors()), daemons);
        Map<String, CompletableFuture<String>> built = new HashMap<>();  // sanitizer -> null, or why everything is skipped
        for (String san : sans) built.put(san, CompletableFuture.supplyAsync(() -> build(san), buildPool));
        killOnExit = new Thread(() -> {
            synchronized (LIVE) {
                exiting = true;
                LIVE.forEach((p, log) -> {
                    destroyTree(p);
                    deleteLog(log);  // (the daemon thread that waits for it is not waited for)
                });
            }
        }, "kernel-emu-exit");
        Runtime.getRuntime().addShutdownHook(killOnExit);
        builds = CompletableFuture.allOf(built.values().toArray(CompletableFuture[]::new))
                .thenApply(v -> built.values().stream().map(CompletableFuture::join).filter(x -> x != null).findFirst().orElse(null));
        for (List<String> args : RUNS)
            RESULTS.put(args, built.get(sanitizer(args)).thenApplyAsync(skip -> {
                if (skip != null || BUILD_FAILED.containsKey(sanitizer(args))) return null;  // (result() says why)
                try {
                    return run(args);
                } catch (IOException e) {
                    throw new java.io.UncheckedIOException(e);
                } catch (InterruptedException e) {
                    throw new IllegalStateException("tools/kernel-emu " + args + " was stopped", e);
                }
            }, pool));
    }

    /** Builds the emulator with one sanitizer flag: null, or why every test is skipped; a failed build's log is kept. */
    private static String build(String san) {
        List<String> cmd = new ArrayList<>(List.of("nice", "-n", "19", "bash", ROOT.resolve("tools/kernel-emu").toString(), "--build-only"));
        if (!san.isEmpty()) cmd.add(san);
        try {
            Finished f = execute(cmd, "kernel-emu-build");
            if (!f.done) BUILD_FAILED.put(san, "did not finish in " + PROCESS_LIMIT_MINUTES + " minutes:\n" + f.out);
            // (the script's own checks: the CUDA headers, and $CXX or g++, as its Makefile compiles with)
            else if (f.exit == 2 && (f.out.contains("kernel-emu: no CUDA headers") || f.out.contains("kernel-emu: no C++ compiler")))
                return f.out.strip();
            else if (f.exit != 0) BUILD_FAILED.put(san, f.out);  // each of its runs' tests fails with this log
            return null;
        } catch (IOException e) {
            BUILD_FAILED.put(san, e.toString());
            return null;
        } catch (InterruptedException e) {
            BUILD_FAILED.put(san, "stopped");
            Thread.currentThread().interrupt();
            return null;
        }
    }

    private static void deleteLog(Path log) {
        try {
            if (log != null) Files.deleteIfExists(log);
        } catch (IOException ignored) {
            // (a temporary file left behind)
        }
    }

    /** A finished (or, {@code done} false, killed after {@link #PROCESS_LIMIT_MINUTES}) process: its exit and output. */
    private record Finished(boolean done, int exit, String out) {}

    /**
     * Runs a process (a build or a run) with its output to a temporary log, tracked in {@link #LIVE} while alive (none
     * starts once the JVM exits; the hook kills those left and deletes their logs), waits for it at most
     * {@link #PROCESS_LIMIT_MINUTES}, kills what is left of it (interrupted too), and deletes the log.
     */
    private static Finished execute(List<String> cmd, String logPrefix) throws IOException, InterruptedException {
        Process p;
        Path log;
        synchronized (LIVE) {
            if (exiting) throw new IOException("the JVM is exiting: " + cmd + " not started");
            log = Files.createTempFile(logPrefix, ".log");
            try {
                p = new ProcessBuilder(cmd).directory(ROOT.toFile()).redirectErrorStream(true).redirectOutput(log.toFile()).start();
            } catch (IOException | RuntimeException e) {
                deleteLog(log);
                throw e;
            }
            LIVE.put(p, log);
        }
        try {
            boolean done;
            try {
                done = p.waitFor(PROCESS_LIMIT_MINUTES, TimeUnit.MINUTES);
            } finally {
                kill(p);
            }
            return new Finished(done, done ? p.exitValue() : -1, Files.readString(log, StandardCharsets.UTF_8));
        } finally {
            deleteLog(log);
        }
    }

    @BeforeAll
    static void awaitBuilds() throws Exception {
        Assumptions.assumeTrue(System.getProperty("grpo4j.noCuda") == null, "-Dgrpo4j.noCuda: the CUDA sources are not built");
        Assumptions.assumeTrue(Files.isExecutable(ROOT.resolve("tools/kernel-emu")), "tools/kernel-emu not found from " + ROOT);
        start();
        String skip;
        try {
            skip = builds.get(TEST_LIMIT_MINUTES, TimeUnit.MINUTES);
        } catch (TimeoutException e) {
            throw new AssertionError("the emulator's builds did not finish within " + TEST_LIMIT_MINUTES + " minutes of this class's turn", e);
        }
        Assumptions.assumeTrue(skip == null, skip);
    }

    @AfterAll
    static void stopRuns() throws InterruptedException { stop(); }

    /**
     * Stops every build and run still going (a test selected alone leaves no emulator running) and forgets them: a
     * later {@link #start} begins again.
     */
    static synchronized void stop() throws InterruptedException {
        if (builds == null) return;
        try {
            if (pool != null) {
                buildPool.shutdownNow();  // (a build or run interrupted kills its process)
                pool.shutdownNow();
                buildPool.awaitTermination(1, TimeUnit.MINUTES);
                pool.awaitTermination(1, TimeUnit.MINUTES);
                synchronized (LIVE) {
                    LIVE.keySet().forEach(KernelEmulatorTest::destroyTree);  // (any that the pools' minute did not reach)
                }
                try {
                    Runtime.getRuntime().removeShutdownHook(killOnExit);
                } catch (IllegalStateException exiting) {
                    // (the JVM is exiting: the hook runs anyway)
                }
            }
        } finally {
            builds = null;
            buildPool = pool = null;
            killOnExit = null;
            RUNS.clear();
            RESULTS.clear();
            BUILD_FAILED.clear();
        }
    }

    /** The sanitizer flag of a run's arguments, as the builds are keyed. */
    private static String sanitizer(List<String> args) {
        return args.contains("--race") ? "--race" : args.contains("--profile") ? "--profile" : "";
    }

    private static String tail(String out) { return out.length() > 6000 ? out.substring(out.length() - 6000) : out; }

    /** Kills a process and what it started (make's compilers; a build or run stopped half way leaves nothing running). */
    private static void kill(Process p) throws InterruptedException {
        try {
            if (!p.isAlive()) return;
            destroyTree(p);
            p.waitFor(30, TimeUnit.SECONDS);
        } finally {
            synchronized (LIVE) {
                LIVE.remove(p);
            }
        }
    }

    private static void destroyTree(Process p) {
        p.descendants().forEach(ProcessHandle::destroyForcibly);
        p.destroyForcibly();
    }

    /** Families (or cases) that the race check runs: the kernels with shared-memory tiles, scans and barriers. */
    private static final List<String> RACE_CASES = List.of("fwd_bwd_tensor_core_d64", "fwd_bwd_tensor_core_d128", "wgmma_small",
            "fwd_tma_small", "fwd_tma_next_sequence_infinite",
            "fwd_bwd_generic_fp32", "tensor_core_d64_gqa4_pages16", "generic_bf16_d96_gqa4_pages5", "prefix_groups_tensor_core_d128",
            "every_kind_both_dtypes",
            "lse_over_chunks", "rmsnorm_fwd_bwd", "sum_squares", "embedding_fwd_bwd");

    /**
     * Blocks run in a fixed shuffled order (--blocks 2026), not block 0 first: a GPU runs them concurrently in no
     * guaranteed order, so a result that depends on which block goes first fails here (tools/kernel-emu --blocks).
     */
    @Test
    void everyKernelFamilyPassesOnTheEmulatorUnderAddressSanitizer() throws Exception {
        Run r = result(List.of("--blocks", "2026"));
        assertEquals(0, r.exit, r.tail());
        assertTrue(r.cases >= 30, "every family's cases ran: " + r.tail());
        assertEquals(0, r.failed, r.tail());
    }

    /**
     * The warp-specialized forward (a producer warpgroup, mbarriers, named barriers) with its threads run in other
     * orders between waits: the consumers' warpgroups in reverse (the last first, the producer before them) and
     * shuffled at every pass, so that each warpgroup's waits and releases meet the others' at other points than in the
     * forward order, where warpgroup 0 runs first.
     */
    @Test
    void theWarpSpecializedForwardPassesInOtherThreadOrders() throws Exception {
        for (List<String> args : List.of(ORDER_REVERSE, ORDER_SHUFFLED)) {
            Run r = result(args);
            assertEquals(0, r.exit, r.tail());
            assertEquals(args.size() - 2, r.cases, r.tail());
            assertEquals(0, r.failed, r.tail());
        }
    }

    private static final List<String> ORDER_REVERSE = List.of("--order", "reverse", "fwd_tma_small", "fwd_tma_next_sequence_infinite");
    private static final List<String> ORDER_SHUFFLED = List.of("--order", "2026", "fwd_tma_small");

    @Test
    void sharedMemoryProtocolsHaveNoDataRaces() throws Exception {
        List<String> args = new ArrayList<>(List.of("--race"));
        args.addAll(RACE_CASES);
        Run r = result(args);
        assertEquals(0, r.exit, r.tail());
        assertEquals(RACE_CASES.size(), r.cases, r.tail());
        assertEquals(0, r.failed, r.tail());
        assertTrue(!r.out.contains("ThreadSanitizer"), r.tail());
    }

    /**
     * The memory profile (--profile) counts what the hardware's rules say on kernels with a known pattern (coalesced,
     * strided, read twice; shared stores with 1, 2 and 32 lanes per bank, a broadcast), and profiles a real family.
     */
    @Test
    void memoryProfileCountsSectorsAndBankConflictsAsTheHardwareDoes() throws Exception {
        Run r = result(List.of("--profile", "profile", "fwd_bwd_tensor_core_d64"));
        assertEquals(0, r.exit, r.tail());
        assertEquals(2, r.cases, r.tail());
        assertEquals(0, r.failed, r.tail());
        assertTrue(r.out.contains("profile fwd_bwd_tensor_core_d64") && r.out.contains("fwd_kernel<64>"), r.tail());
    }

    /**
     * The hot kernels at llama-3.1-8b's inner sizes (family shapes, docs/benchmarks.md "Before the first GPU run")
     * keep their memory profile: every warp request within 5% of the fewest 32-byte sectors (global) or wavefronts
     * (shared) its bytes need, and the single-pass kernels read their input once. Counts, not times: a kernel that
     * loses coalescing (the casts' 8 elements a thread were 1.67x) or gains a bank conflict (decode's merge buffer was
     * 4-way) fails here. The allowances are the profile's known, documented exceptions.
     */
    @Test
    void hotKernelsAtTheBenchmarkSizesKeepTheirMemoryProfile() throws Exception {
        assertProfileHolds("shapes", 20);
    }

    /**
     * The tensor-core attention kernels at 1024 tokens (family shapes-attention): their swizzled shared tiles (Q, K, V,
     * the P^T / dS^T tiles the wide backward kernels pass between warps) without bank conflicts, their global loads
     * coalesced; the fast and fixed-point backward's dQ atomics (two values a lane, 2x the fewest sectors) and the loads
     * they imply excepted.
     */
    @Test
    void attentionKernelsAtLengthKeepTheirMemoryProfile() throws Exception {
        assertProfileHolds("shapes-attention", 4);
    }

    /** Runs --profile on {@code family} and checks every kernel row against the limits (at least {@code minRows} rows). */
    private static void assertProfileHolds(String family, int minRows) throws Exception {
        List<String> bad = new ArrayList<>();
        int rows = profileRows(result(List.of("--profile", family)), bad);
        assertTrue(rows >= minRows, "the profile tables of " + family + " were read (" + rows + " rows)");
        assertTrue(bad.isEmpty(), String.join("\n", bad));
    }

    /** Checks every kernel row of a --profile run against the limits (adding to {@code bad}); the rows read. */
    private static int profileRows(Run r, List<String> bad) {
        assertEquals(0, r.exit, r.tail());
        assertEquals(0, r.failed, r.tail());
        Pattern row = Pattern.compile("^  (\\S+(?: \\S+)*?) +(\\d+) \\| +(\\d+) +([\\d.]+) \\| +(\\d+) +([\\d.]+) \\| +(\\d+) +([\\d.]+) \\| "
                + "+([\\d.]+)K +([\\d.]+)K +([\\d.]+) \\| +(\\d+) +([\\d.]+) \\| +(\\d+) +([\\d.]+)$");
        String[] spaces = {"global load", "global store", "global atomic", "shared load", "shared store"};
        int[] ratioGroup = {4, 6, 8, 13, 15};
        String kase = null;
        int rows = 0;
        for (String line : r.out.lines().toList()) {
            if (line.startsWith("  profile ")) kase = line.substring(10, line.indexOf(' ', 10));
            Matcher m = row.matcher(line);
            if (!m.matches()) continue;
            rows++;
            String k = m.group(1);
            for (int i = 0; i < spaces.length; i++) {
                double x = Double.parseDouble(m.group(ratioGroup[i]));
                double limit = 1.05;
                if (k.startsWith("sample_kernel") && i == 3) limit = 2.5;               // the top-p histogram's bin atomics
                if (k.startsWith("backward_fused_vec_kernel") && i == 1) limit = 1.25;  // the once-a-block dWeight partials
                if (k.startsWith("dkdv_wide_kernel<") && (k.endsWith(", 1>") || k.endsWith(", 2>")) && (i == 0 || i == 2))
                    limit = 2.05;  // dQ's atomics (fp32 or 64-bit fixed point: two values a lane, 2x the fewest sectors either way)
                if (x > limit) bad.add(kase + " " + k + " " + spaces[i] + " " + x + " > " + limit);
            }
            double reread = Double.parseDouble(m.group(11));
            boolean onePass = k.startsWith("cast_kernel") || k.contains("map_kernel") || k.startsWith("axpy_kernel") || k.startsWith("adamw_kernel")
                    || k.startsWith("decode_kernel") || k.startsWith("append_kernel") || k.startsWith("gather_kernel")
                    || k.startsWith("partial_kernel") || (k.startsWith("sample_kernel") && "shapes_sample_plain".equals(kase));
            if (onePass && reread > 1.1) bad.add(kase + " " + k + " reads its input " + reread + " times");
            // top-p alone: pass A keeps the candidates (group 0's read again after it), and its list serves the search
            // and the draw: 1 + 16384 / 128256 reads
            if (k.startsWith("sample_kernel") && "shapes_sample_top_p".equals(kase) && reread > 1.2)
                bad.add(kase + " " + k + " reads its input " + reread + " times, not once and group 0's tiles again");
        }
        return rows;
    }

    private record Run(int exit, int cases, int failed, String out) {
        String tail() { return KernelEmulatorTest.tail(out); }
    }

    /** The result of a run that {@link #start} started, waited for at most {@link #TEST_LIMIT_MINUTES}. */
    private static Run result(List<String> args) throws Exception {
        String build = BUILD_FAILED.get(sanitizer(args));
        if (build != null)
            throw new AssertionError("tools/kernel-emu --build-only " + sanitizer(args) + " failed:\n" + tail(build));
        CompletableFuture<Run> f = RESULTS.get(args);
        assertTrue(f != null, "no run was started for " + args);
        try {
            return f.get(TEST_LIMIT_MINUTES, TimeUnit.MINUTES);
        } catch (TimeoutException e) {
            throw new AssertionError("tools/kernel-emu " + args + " did not finish within " + TEST_LIMIT_MINUTES + " minutes of its test's turn", e);
        } catch (ExecutionException e) {
            if (e.getCause() instanceof Exception x) throw x;
            if (e.getCause() instanceof Error x) throw x;  // (an AssertionError of the run: a failure, not an error)
            throw e;
        }
    }

    private static Run run(List<String> args) throws IOException, InterruptedException {
        Path script = ROOT.resolve("tools/kernel-emu");
        List<String> cmd = new ArrayList<>(List.of("nice", "-n", "19", "bash", script.toString()));
        cmd.addAll(args);
        Finished f = execute(cmd, "kernel-emu");
        if (!f.done) throw new AssertionError("tools/kernel-emu " + args + " did not finish in " + PROCESS_LIMIT_MINUTES + " minutes");
        Matcher m = Pattern.compile("kernel-emu: (\\d+) cases, (\\d+) failed").matcher(f.out);
        int cases = -1, failed = -1;
        while (m.find()) {
            cases = Integer.parseInt(m.group(1));
            failed = Integer.parseInt(m.group(2));
        }
        return new Run(f.exit, cases, failed, f.out);
    }
}
