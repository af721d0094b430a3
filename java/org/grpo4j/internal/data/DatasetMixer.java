package org.grpo4j.internal.data;

import org.grpo4j.reward.RlvrRow;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * The reference's {@code dataset_mixer_list}: pairs of (dataset, amount), read as open-instruct 3f37c29 reads them
 * (dataset_transformation.py 879-901): an amount containing a '.' is a float, any other an int; then an amount
 * {@code > 1.0} is a row count (int(amount): the first rows) and any other a fraction of the rows
 * (int(amount x rows)). So "1.0" and "1" both mean all rows, "0.5" the first half, "16" and "16.0" the first 16 rows,
 * "2.5" the first 2. A dataset is a local file or directory, or a hub name
 * ("allenai/RLVR-GSM-MATH-IF-Mixed-Constraints") found in a local HF cache ($HF_HOME/hub or
 * ~/.cache/huggingface/hub) or under $GRPO4J_DATA/name. grpo4j never downloads.
 *
 * <p>Where the reference would misbehave grpo4j stops with an error instead: amounts that are not plain decimal
 * numbers (Python's int() and float() also take "1_000" and "1e3." forms, which grpo4j rejects), amounts {@code <= 0}
 * (the reference silently selects no rows), and a row count larger than the dataset (the reference raises
 * "Dataset range exceeds dataset length").
 */
public final class DatasetMixer {
    private DatasetMixer() {}

    /** One parsed entry: either a fraction of the rows ({@code count < 0}) or a row count. */
    public record Entry(String dataset, double fraction, int count) {
        public boolean isFraction() { return count < 0; }

        /** Rows taken from a dataset of {@code size} rows: the count, or int(fraction x size) (truncated, as Python's int()). */
        public int rowsOf(int size) { return isFraction() ? (int) (fraction * size) : count; }
    }

    private static final java.util.regex.Pattern INT = java.util.regex.Pattern.compile("[+-]?\\d+");
    private static final java.util.regex.Pattern FLOAT = java.util.regex.Pattern.compile("[+-]?(\\d+\\.\\d*|\\.\\d+)([eE][+-]?\\d+)?");

    public static List<Entry> parse(List<String> mixer) { return parse(mixer, "dataset_mixer_list"); }

    /** Parses a mixer list; {@code field} names it in errors (dataset_mixer_list or dataset_mixer_eval_list). */
    public static List<Entry> parse(List<String> mixer, String field) {
        if (mixer == null || mixer.isEmpty()) throw new IllegalArgumentException(field + " is empty");
        if (mixer.size() % 2 != 0)
            throw new IllegalArgumentException(field + " must alternate dataset and amount, got " + mixer.size() + " items: " + mixer);
        for (int i = 0; i < mixer.size(); i++)
            if (mixer.get(i) == null || mixer.get(i).isBlank())
                throw new IllegalArgumentException(field + "[" + i + "] is " + (mixer.get(i) == null ? "null" : "empty") + " (expected "
                        + (i % 2 == 0 ? "a dataset" : "an amount") + ")");
        List<Entry> out = new ArrayList<>();
        for (int i = 0; i < mixer.size(); i += 2) out.add(parseAmount(mixer.get(i), mixer.get(i + 1), field));
        return out;
    }

    /** The reference's rule: '.' -> float, else int; then > 1.0 -> row count, else fraction. */
    static Entry parseAmount(String ds, String raw, String field) {
        String amt = raw == null ? "" : raw.trim();
        double v;
        if (amt.contains(".") && FLOAT.matcher(amt).matches()) v = Double.parseDouble(amt);
        else if (!amt.contains(".") && INT.matcher(amt).matches()) {
            try {
                v = Long.parseLong(amt);
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException(field + ": row count for " + ds + " is too large: \"" + raw + "\"");
            }
        } else
            throw new IllegalArgumentException(field + ": amount for " + ds + " must be a number such as 1.0 (all rows), 0.5 (a fraction) or 16 (a row count), got \"" + raw + "\"");
        if (!(v > 0))
            throw new IllegalArgumentException(field + ": amount for " + ds + " must be > 0 (a fraction <= 1 or a row count > 1), got \"" + raw + "\"");
        if (v > 1.0) {
            if (!(v < Integer.MAX_VALUE)) throw new IllegalArgumentException(field + ": row count for " + ds + " is too large: \"" + raw + "\"");
            return new Entry(ds, 0, (int) v);
        }
        return new Entry(ds, v, -1);
    }

    /** Loads and concatenates the selected rows, in list order. */
    public static List<RlvrRow> load(List<String> mixer, Path baseDir) throws IOException {
        return load(mixer, List.of(), baseDir, "dataset_mixer_list");
    }

    /** Like {@link #load(List, Path)}; {@code field} names the list in errors. */
    public static List<RlvrRow> load(List<String> mixer, Path baseDir, String field) throws IOException {
        return load(mixer, List.of(), baseDir, field);
    }

    public static List<RlvrRow> load(List<String> mixer, List<String> splits, Path baseDir) throws IOException {
        return load(mixer, splits, baseDir, "dataset_mixer_list");
    }

    /**
     * Loads and concatenates the selected rows, in list order. {@code splits} is the reference's
     * dataset_mixer_list_splits: empty (every data file of a directory), one split for every dataset, or one per
     * dataset. A split selects, inside a dataset directory, the data files of that split in the HF hub layouts
     * ({@code train.jsonl}, {@code train-00000-of-00001.parquet}, {@code data/train-*.parquet}, {@code train/...});
     * a dataset given as a single file is taken whole. {@code field} names the list in errors.
     */
    public static List<RlvrRow> load(List<String> mixer, List<String> splits, Path baseDir, String field) throws IOException {
        List<Entry> entries = parse(mixer, field);
        List<String> sp = splits == null ? List.of() : splits;
        if (!(sp.isEmpty() || sp.size() == 1 || sp.size() == entries.size()))
            throw new IllegalArgumentException(field + " has " + entries.size() + " datasets but its splits list has " + sp.size()
                    + " entries " + sp + " (give one split for all, or one per dataset)");
        List<RlvrRow> all = new ArrayList<>();
        for (int k = 0; k < entries.size(); k++) {
            Entry e = entries.get(k);
            String split = sp.isEmpty() ? null : sp.get(sp.size() == 1 ? 0 : k);
            List<RlvrRow> rows = DatasetReader.read(resolve(e.dataset(), baseDir), split);
            int take = e.rowsOf(rows.size());
            if (take > rows.size())
                throw new IllegalArgumentException(field + " asks for " + take + " rows of " + e.dataset() + ", which has " + rows.size());
            all.addAll(rows.subList(0, take));
        }
        return all;
    }

    /** A local path (relative to baseDir if not absolute), or a hub name found in a local cache. */
    public static Path resolve(String dataset, Path baseDir) throws IOException {
        Path p = Path.of(dataset);
        if (!p.isAbsolute() && baseDir != null && Files.exists(baseDir.resolve(p))) return baseDir.resolve(p);
        if (Files.exists(p)) return p;
        List<Path> tried = new ArrayList<>();
        if (!p.isAbsolute() && baseDir != null) tried.add(baseDir.resolve(p).normalize());
        tried.add(p.toAbsolutePath().normalize());
        String env = System.getenv("GRPO4J_DATA");
        if (env != null && !p.isAbsolute()) {
            Path q = Path.of(env).resolve(dataset);
            if (Files.exists(q)) return q;
            tried.add(q);
        }
        List<String> where = tried.stream().map(Path::toString).distinct().toList();
        // a path (not "owner/name") gets no download hint: it is a local file that is not there
        if (!looksLikeHubName(dataset)) throw new NoSuchFileException(dataset, null, "looked for " + String.join(", ", where));
        String hf = System.getenv("HF_HOME");
        Path hub = hf != null ? Path.of(hf, "hub") : Path.of(System.getProperty("user.home"), ".cache", "huggingface", "hub");
        Path repo = hub.resolve("datasets--" + dataset.replace("/", "--")), snaps = repo.resolve("snapshots");
        if (Files.isDirectory(snaps)) {
            Path snap = cachedSnapshot(dataset, repo);
            if (snap != null) return snap;
        }
        throw new NoSuchFileException(dataset, null, "dataset not found locally (tried " + String.join(", ", where) + ", " + snaps
                + "); grpo4j never downloads: fetch it first, e.g. huggingface-cli download --repo-type dataset " + dataset + ", or pass a local path");
    }

    /**
     * The snapshot of a hub cache's dataset repository that revision "main" names (refs/main, as the reference's
     * dataset_revision="main" loads; snapshot directories are named by commit, so their order says nothing), or the one
     * snapshot there is; null when there is none. Several snapshots and no refs/main are refused, naming them.
     */
    static Path cachedSnapshot(String dataset, Path repo) throws IOException {
        Path snaps = repo.resolve("snapshots"), ref = repo.resolve("refs").resolve("main");
        List<Path> all;
        try (var s = Files.list(snaps)) {
            all = s.filter(Files::isDirectory).sorted().toList();
        }
        if (Files.isRegularFile(ref)) {
            String commit = Files.readString(ref).trim();
            Path snap = snaps.resolve(commit);
            if (!commit.isEmpty() && !commit.contains("/") && Files.isDirectory(snap)) return snap;
            throw new NoSuchFileException(dataset, null, ref + " names revision \"" + commit + "\", which is not among the cached snapshots ("
                    + String.join(", ", all.stream().map(x -> x.getFileName().toString()).toList()) + " in " + snaps
                    + "); fetch it again, or pass a snapshot's path");
        }
        if (all.size() <= 1) return all.isEmpty() ? null : all.get(0);
        throw new IllegalArgumentException(dataset + ": the cache holds " + all.size() + " snapshots (" + String.join(", ",
                all.stream().map(x -> x.getFileName().toString()).toList()) + " in " + snaps + ") and no refs/main to say which is revision"
                + " main; pass the path of the one to use");
    }

    /** "owner/name" with no file extension: a hub dataset id rather than a local path. */
    static boolean looksLikeHubName(String dataset) {
        if (!dataset.matches("[\\w.-]+/[\\w.-]+") || dataset.startsWith(".")) return false;
        String n = dataset.toLowerCase(java.util.Locale.ROOT);
        return !(n.endsWith(".jsonl") || n.endsWith(".json") || n.endsWith(".parquet"));
    }
}
