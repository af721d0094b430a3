package org.grpo4j.internal.train;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.OverlappingFileLockException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Stream;
import org.grpo4j.internal.util.AtomicDir;

/**
 * The rules of a run directory (docs/trainer.md, "The run directory"):
 * <ul>
 *   <li>a new run starts only in a missing or empty directory, or with {@code overwrite} in a directory that holds
 *       nothing but an earlier run's outputs (which are then deleted when the new run starts);</li>
 *   <li>one run at a time: {@value #LOCK} is locked (an OS file lock, released even when the process is killed)
 *       for the run's whole life, so two runs into one directory cannot mix their files;</li>
 *   <li>temporaries a killed run left behind ({@code checkpoints/.step_N.tmp-*}, {@code *.jsonl.tmp}) are removed
 *       when the next run takes the lock.</li>
 * </ul>
 */
final class RunDirectory implements AutoCloseable {
    /** The lock file; it stays after the run (a directory holding only it counts as empty). */
    static final String LOCK = ".grpo4j.lock";

    /** What a run writes at the top of its directory. */
    static final Set<String> OUTPUTS = Set.of("config.json", "metrics.jsonl", "samples.jsonl", "plots", "checkpoints", LOCK,
            "metrics.jsonl.tmp", "samples.jsonl.tmp", "metrics.jsonl.dropped", "samples.jsonl.dropped", "config.json.tmp");

    private static final ObjectMapper JSON = new ObjectMapper();

    /**
     * The lock files this JVM holds, by file identity, and who holds each. No second channel may be opened on one of
     * them: the OS lock (a POSIX record lock) belongs to the process, and closing any descriptor of the file releases
     * it, so a refused second run in the same JVM (an embedding application, a test) would have let a third process
     * into the first run's directory. Guarded by itself.
     */
    private static final Map<Object, String> HELD = new java.util.HashMap<>();

    private final Path dir;
    private final FileChannel channel;
    private final FileLock lock;
    private final Object key;

    private RunDirectory(Path dir, FileChannel channel, FileLock lock, Object key) {
        this.dir = dir;
        this.channel = channel;
        this.lock = lock;
        this.key = key;
    }

    /** The identity of an existing file: its device and inode where the file system has them, else its real path. */
    private static Object identity(Path f) throws IOException {
        Object k = Files.readAttributes(f, java.nio.file.attribute.BasicFileAttributes.class).fileKey();
        return k != null ? k : f.toRealPath();
    }

    private static IllegalStateException inUse(Path dir, String holder) {
        return new IllegalStateException(dir + ": in use by another grpo4j run" + (holder.isEmpty() ? "" : " (" + holder + ")")
                + "; two runs cannot share a directory: wait for it to end, or choose another output directory");
    }

    /** Who the lock file says holds it ("pid N, started T"), or "" (only for a file this JVM does not hold). */
    private static String holderOf(Path f) {
        try {
            return Files.readString(f).trim();
        } catch (IOException e) {
            return "";
        }
    }

    /**
     * Whether a run (of any process) holds {@code dir} now; false where that cannot be told (no lock file, one this
     * process may not open). Never closes a descriptor of a lock this JVM holds (that would drop its POSIX lock).
     */
    static boolean heldByARun(Path dir) {
        Path f = dir.resolve(LOCK);
        synchronized (HELD) {
            try {
                if (!Files.exists(f)) return false;
                if (HELD.get(identity(f)) != null) return true;
                // read-only, a shared lock (which a run's exclusive one refuses): a run directory this process may not
                // write (another user's, a read-only mount) is still told apart
                try (FileChannel ch = FileChannel.open(f, StandardOpenOption.READ)) {
                    FileLock l;
                    try {
                        l = ch.tryLock(0, Long.MAX_VALUE, true);
                    } catch (OverlappingFileLockException e) {
                        return true; // a channel of this JVM outside this class holds it
                    }
                    if (l == null) return true;
                    l.release();
                    return false;
                }
            } catch (IOException e) {
                return false;
            }
        }
    }

    /**
     * What a resumed run needs of its directory, checked without writing anything (a dry run): no run holds it, and
     * a directory can be made in it and in its checkpoints (tried with a hidden one, removed at once).
     */
    static void checkResumable(Path dir) throws IOException {
        Path f = dir.resolve(LOCK);
        synchronized (HELD) {
            if (Files.exists(f)) {
                String mine = HELD.get(identity(f));
                if (mine != null) throw inUse(dir, mine);
                try (FileChannel ch = FileChannel.open(f, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
                    FileLock l;
                    try {
                        l = ch.tryLock();
                    } catch (OverlappingFileLockException e) {
                        l = null; // a channel of this JVM outside this class holds it
                    }
                    if (l == null) throw inUse(dir, holderOf(f));
                    l.release();
                } catch (IOException e) {
                    throw new IOException(f + ": cannot lock the run directory: " + AtomicDir.describe(e), e);
                }
            }
        }
        for (Path in : List.of(dir, dir.resolve("checkpoints"))) {
            if (!Files.isDirectory(in)) continue;
            Path probe = in.resolve(".grpo4j-probe-" + ProcessHandle.current().pid() + "-" + System.nanoTime());
            try {
                Files.createDirectory(probe);
            } catch (IOException e) {
                throw new IOException(in + ": the resumed run cannot write here: " + AtomicDir.creationFailure(e), e);
            }
            Files.deleteIfExists(probe);
        }
    }

    /** Refuses a directory a new run must not write into; returns normally when it may start there. */
    static void checkNewRun(Path dir, boolean overwrite) throws IOException {
        if (dir.toString().isBlank())
            throw new IllegalArgumentException("the output directory is empty (\"\"); name one, e.g. --output runs/NAME");
        if (!Files.exists(dir)) {
            checkCreatable(dir);
            return;
        }
        if (!Files.isDirectory(dir)) throw new IllegalArgumentException(dir + ": exists and is not a directory; choose another output directory");
        List<String> entries = entries(dir);
        if (entries.isEmpty()) return;
        List<String> foreign = entries.stream().filter(n -> !OUTPUTS.contains(n)).toList();
        if (!foreign.isEmpty())
            throw new IllegalArgumentException(dir + ": not empty and not a grpo4j run directory (it holds " + sample(foreign)
                    + "); grpo4j writes runs only into a new or empty directory: choose another output directory");
        if (!overwrite) {
            String holds = dir + ": holds an earlier run (" + sample(entries) + "); ";
            throw new EarlierRunException(holds + "continue it with GrpoTrainer.resume(" + dir + "), replace it with Builder.overwrite(true),"
                    + " or choose another output directory (output_dir)",
                    holds + "continue it with --resume " + dir + ", replace it with --overwrite, or choose another output directory (output_dir)");
        }
    }

    /**
     * Refuses {@code --overwrite} of {@code dir} when an input of the new run lies inside it (the model, e.g. an
     * earlier checkpoint's {@code checkpoints/step_N/model}, or a dataset file such as its samples.jsonl): deleting the
     * earlier outputs would delete what the run reads. {@code inputs} are (config key, path) pairs; paths that do not
     * exist (an init: preset, a hub name) are skipped.
     */
    static void checkOverwriteSparesInputs(Path dir, List<String[]> inputs) throws IOException {
        if (!Files.isDirectory(dir)) return;
        Path real = dir.toRealPath();
        for (String[] in : inputs) {
            Path p;
            try {
                p = Path.of(in[1]);
            } catch (java.nio.file.InvalidPathException e) {
                continue;
            }
            if (!Files.exists(p)) continue;
            if (p.toRealPath().startsWith(real))
                throw new IllegalArgumentException(in[0] + " " + in[1] + " lies inside " + dir + ", whose earlier outputs --overwrite deletes: the run"
                        + " would delete what it reads. Copy it out of " + dir + " first (a checkpoint's model: grpo4j export --model "
                        + in[1] + " --out DIR), or choose another output directory");
        }
    }

    /**
     * Refuses an output directory that cannot be created, naming it: its nearest existing ancestor must be a
     * directory in which a directory can be made (tried with a hidden one, removed at once: a read-only file system,
     * a missing permission or a pseudo file system such as /proc fail here, before any work).
     */
    static void checkCreatable(Path dir) throws IOException {
        Path abs = dir.toAbsolutePath().normalize(), up = abs.getParent();
        while (up != null && !Files.exists(up)) up = up.getParent();
        if (up == null) return; // (no existing ancestor: not even the root; the lock's creation reports it)
        if (!Files.isDirectory(up))
            throw new IllegalArgumentException("the output directory " + dir + " cannot be created: " + up + " is not a directory");
        Path probe = up.resolve(".grpo4j-probe-" + ProcessHandle.current().pid() + "-" + System.nanoTime());
        try {
            Files.createDirectory(probe);
        } catch (IOException e) {
            throw cannotCreate(dir, up, e);
        }
        Files.deleteIfExists(probe);
    }

    private static IOException cannotCreate(Path dir, Path in, IOException e) {
        return new IOException("the output directory " + dir + " cannot be created: " + AtomicDir.creationFailure(e) + " (in " + in + ")", e);
    }

    /**
     * The outermost directory {@link #lock} created (the run directory itself, or the first of its parents that did
     * not exist), or null where the run directory existed: a failed start removes what it created again
     * ({@link #discardIfUnused}).
     */
    private Path createdFrom;

    /** Takes the directory's lock (creating the directory), or fails naming the run that holds it. */
    static RunDirectory lock(Path dir) throws IOException {
        Path createdFrom = null;
        for (Path p = dir.toAbsolutePath().normalize(); p != null && !Files.exists(p); p = p.getParent()) createdFrom = p;
        try {
            Files.createDirectories(dir);
        } catch (java.nio.file.FileAlreadyExistsException e) {
            throw new IllegalArgumentException(dir + ": exists and is not a directory; choose another output directory");
        } catch (IOException e) {
            throw cannotCreate(dir, dir.toAbsolutePath().getParent(), e);
        }
        RunDirectory r = lockExisting(dir);
        r.createdFrom = createdFrom;
        return r;
    }

    private static RunDirectory lockExisting(Path dir) throws IOException {
        Path f = dir.resolve(LOCK);
        synchronized (HELD) {
            if (Files.exists(f)) { // held here: refused without opening the file (closing it would drop the lock)
                String mine = HELD.get(identity(f));
                if (mine != null) throw inUse(dir, mine);
            }
            FileChannel ch = FileChannel.open(f, StandardOpenOption.CREATE, StandardOpenOption.READ, StandardOpenOption.WRITE);
            FileLock l;
            try {
                l = ch.tryLock();
            } catch (OverlappingFileLockException e) {
                l = null; // a channel of this JVM outside this class holds it
            } catch (IOException e) {
                ch.close();
                throw new IOException(f + ": cannot lock the run directory: " + e.getMessage(), e);
            }
            if (l == null) {
                String holder = holderOf(f);
                ch.close();
                throw inUse(dir, holder);
            }
            try {
                String me = "pid " + ProcessHandle.current().pid() + ", started "
                        + java.time.Instant.now().truncatedTo(java.time.temporal.ChronoUnit.SECONDS);
                ch.truncate(0);
                ch.write(ByteBuffer.wrap((me + "\n").getBytes(StandardCharsets.UTF_8)), 0);
                Object key = identity(f);
                HELD.put(key, me);
                return new RunDirectory(dir, ch, l, key);
            } catch (IOException | RuntimeException e) {
                ch.close(); // (releases the lock)
                throw e;
            }
        }
    }

    /** Deletes an earlier run's outputs (not the lock); only under the lock, after {@link #checkNewRun} allowed it. */
    void clearOutputs() throws IOException {
        for (String n : entries(dir)) {
            if (!OUTPUTS.contains(n)) throw new IllegalStateException(dir + ": " + n + " is not a run output; not deleting anything");
        }
        for (String n : entries(dir)) {
            Path p = dir.resolve(n);
            if (Files.isDirectory(p)) deleteTree(p);
            else Files.delete(p);
        }
    }

    /** Removes what a killed run left half-written: temporary checkpoint directories and JSONL rewrites. */
    List<Path> removeStaleTemporaries() throws IOException {
        List<Path> removed = new ArrayList<>();
        Path ck = dir.resolve("checkpoints");
        if (Files.isDirectory(ck)) {
            try (Stream<Path> s = Files.list(ck)) {
                for (Path p : s.filter(q -> q.getFileName().toString().matches("\\.step_\\d+\\.(tmp|deleting)-.*")).toList()) {
                    deleteTree(p);
                    removed.add(p);
                }
            }
        }
        // a checkpoint whose pruning to its model (older_checkpoints model) a kill interrupted: it lost trainer_state.json
        // first, so no resume picks it; the rest of what pruning removes goes now. Pruning takes only checkpoints older
        // than the newest complete one, never step_0: another one without its state is damage, left as it is
        // (Checkpoints.latestCheckpoint refuses a newer one)
        Path newest = Checkpoints.newestComplete(ck);
        if (newest != null) {
            int last = Checkpoints.stepOf(newest);
            try (Stream<Path> s = Files.list(ck)) {
                for (Path p : s.filter(q -> q.getFileName().toString().matches("step_\\d{1,9}") && Files.isDirectory(q.resolve("model"))
                        && !Files.exists(q.resolve("trainer_state.json")) && Checkpoints.stepOf(q) > 0 && Checkpoints.stepOf(q) < last).toList())
                    try (Stream<Path> inner = Files.list(p)) {
                        for (Path f : inner.toList()) {
                            String n = f.getFileName().toString();
                            if (!n.equals("model") && !n.equals("config.json")) {
                                deleteTree(f);
                                removed.add(f);
                            }
                        }
                    }
            }
        }
        for (String n : List.of("metrics.jsonl.tmp", "samples.jsonl.tmp", "config.json.tmp")) {
            if (Files.deleteIfExists(dir.resolve(n))) removed.add(dir.resolve(n));
        }
        return removed;
    }

    /**
     * Prunes the checkpoints of run directory {@code dir} older than its newest {@code keep} (whole checkpoints: with a
     * trainer_state.json), step_0 (the reference policy) aside; returns their names, oldest first. With {@code
     * keepModels} each keeps its model/ and config.json: its trainer_state.json goes first (from then on no resume can
     * pick it), then the rest. Otherwise each is renamed to a hidden {@code .step_N.deleting-*} (atomic: no half-deleted
     * directory ever looks like a checkpoint; a start removes what a kill left), then deleted.
     */
    static List<String> pruneCheckpoints(Path dir, int keep, boolean keepModels) throws IOException {
        Path ck = dir.resolve("checkpoints");
        List<Integer> steps;
        try (Stream<Path> s = Files.list(ck)) {
            steps = s.filter(p -> p.getFileName().toString().matches("step_\\d{1,9}") && Files.isRegularFile(p.resolve("trainer_state.json")))
                    .map(p -> Integer.parseInt(p.getFileName().toString().substring(5))).filter(n -> n > 0).sorted().toList();
        }
        List<String> pruned = new ArrayList<>();
        for (int step : steps.subList(0, Math.max(0, steps.size() - keep))) {
            Path p = ck.resolve("step_" + step);
            if (keepModels) {
                Files.delete(p.resolve("trainer_state.json"));
                try (Stream<Path> s = Files.list(p)) {
                    for (Path f : s.toList()) {
                        String n = f.getFileName().toString();
                        if (!n.equals("model") && !n.equals("config.json")) deleteTree(f);
                    }
                }
            } else {
                Path gone = ck.resolve(".step_" + step + ".deleting-" + Long.toHexString(System.nanoTime()));
                Files.move(p, gone, java.nio.file.StandardCopyOption.ATOMIC_MOVE);
                deleteTree(gone);
            }
            pruned.add(p.getFileName().toString());
        }
        return pruned;
    }

    private static void deleteTree(Path p) throws IOException {
        AtomicDir.deleteTree(p);
        if (Files.exists(p)) throw new IOException(p + ": could not be deleted");
    }

    private static List<String> entries(Path dir) throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            return s.map(p -> p.getFileName().toString()).filter(n -> !n.equals(LOCK)).sorted().toList();
        }
    }

    private static String sample(List<String> names) {
        return String.join(", ", names.subList(0, Math.min(4, names.size()))) + (names.size() > 4 ? ", ..." : "");
    }

    @Override
    public void close() {
        synchronized (HELD) {
            try {
                if (lock.isValid()) lock.release();
                channel.close();
            } catch (IOException ignored) {
                // the OS releases the lock with the process anyway
            } finally {
                HELD.remove(key);
            }
        }
    }

    /**
     * After a start that failed before writing anything: removes the directory again where this run created it and
     * it holds only the lock, and then the parents created with it that are still empty (a later run into it is not
     * blocked either way). Called under the lock, before {@link #close}.
     */
    void discardIfUnused() {
        if (createdFrom == null) return;
        try {
            if (!entries(dir).isEmpty()) return; // (entries leaves the lock out)
            Files.deleteIfExists(dir.resolve(LOCK));
            close();
            Path stop = createdFrom.getParent();
            for (Path p = dir.toAbsolutePath().normalize(); p != null && !p.equals(stop); p = p.getParent())
                Files.deleteIfExists(p); // a parent that something else filled meanwhile stays (DirectoryNotEmptyException)
        } catch (IOException ignored) {
            // best effort: what is left is empty directories, which a new run accepts
        }
    }

    /**
     * Keeps the lines of a run's JSONL whose training_step is at most {@code lastStep} (later ones came from the
     * interrupted run). A line that is not a JSON object with an integer training_step (a torn write, or damage) is
     * moved to FILE.dropped with a note, wherever it is; the lines around it are kept.
     */
    static List<Map<String, Double>> truncateJsonl(Path file, int lastStep, PrintStream log) throws IOException {
        List<Map<String, Double>> kept = new ArrayList<>();
        if (!Files.exists(file)) return kept;
        String text = new String(Files.readAllBytes(file), StandardCharsets.UTF_8); // a torn multi-byte character becomes U+FFFD
        List<String> keep = new ArrayList<>(), dropped = new ArrayList<>();
        List<Integer> droppedNo = new ArrayList<>();
        int no = 0;
        for (String line : text.split("\n", -1)) {
            no++;
            if (line.isBlank()) continue;
            JsonNode n;
            try {
                n = JSON.readTree(line);
            } catch (IOException e) {
                n = null;
            }
            if (n == null || !n.isObject() || !n.path("training_step").canConvertToExactIntegral()) {
                dropped.add(line);
                droppedNo.add(no);
                continue;
            }
            if (n.path("training_step").asLong() > lastStep) continue;
            keep.add(line);
            if (file.getFileName().toString().equals("metrics.jsonl")) {
                Map<String, Double> m = new LinkedHashMap<>();
                n.fields().forEachRemaining(e -> m.put(e.getKey(), e.getValue().isNumber() ? e.getValue().asDouble() : Double.NaN));
                kept.add(m);
            }
        }
        if (!dropped.isEmpty()) {
            Path side = file.resolveSibling(file.getFileName() + ".dropped");
            Files.write(side, dropped, StandardCharsets.UTF_8, StandardOpenOption.CREATE, StandardOpenOption.APPEND);
            if (log != null) log.println("grpo4j: " + file + ": line" + (dropped.size() > 1 ? "s " : " ") + droppedNo
                    + " not a JSON object with a training_step (a torn write?); moved to " + side);
        }
        AtomicDir.writeFile(file, keep.isEmpty() ? "" : String.join("\n", keep) + "\n");
        return kept;
    }

}
