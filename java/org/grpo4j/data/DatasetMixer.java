package org.grpo4j.data;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * The reference's {@code dataset_mixer_list}: pairs of (dataset, amount). The amount is a fraction when it contains a
 * '.' (e.g. "1.0" = all rows, "0.5" = the first half) and a row count otherwise ("16" = the first 16 rows). A dataset is
 * a local file or directory, or a hub name ("allenai/RLVR-GSM-MATH-IF-Mixed-Constraints") found in a local HF cache
 * ($HF_HOME/hub or ~/.cache/huggingface/hub) or under $GRPO4J_DATA/name. grpo4j never downloads.
 */
public final class DatasetMixer {
    private DatasetMixer() {}

    /** One parsed entry. */
    public record Entry(String dataset, double fraction, int count) {
        public boolean isFraction() { return count < 0; }
    }

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
        for (int i = 0; i < mixer.size(); i += 2) {
            String ds = mixer.get(i), amt = mixer.get(i + 1).trim();
            try {
                if (amt.contains(".") || amt.contains("e") || amt.contains("E")) {
                    double f = Double.parseDouble(amt);
                    if (!(f > 0 && f <= 1)) throw new IllegalArgumentException(field + ": fraction for " + ds + " must be in (0, 1], got " + amt);
                    out.add(new Entry(ds, f, -1));
                } else {
                    int n = Integer.parseInt(amt);
                    if (n < 1) throw new IllegalArgumentException(field + ": row count for " + ds + " must be >= 1, got " + amt);
                    out.add(new Entry(ds, 0, n));
                }
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException(field + ": amount for " + ds + " must be a fraction like 1.0 or a row count like 16, got \"" + amt + "\"");
            }
        }
        return out;
    }

    /** Loads and concatenates the selected rows, in list order. */
    public static List<RlvrRow> load(List<String> mixer, Path baseDir) throws IOException { return load(mixer, baseDir, "dataset_mixer_list"); }

    /** Like {@link #load(List, Path)}; {@code field} names the list in errors. */
    public static List<RlvrRow> load(List<String> mixer, Path baseDir, String field) throws IOException {
        List<RlvrRow> all = new ArrayList<>();
        for (Entry e : parse(mixer, field)) {
            List<RlvrRow> rows = DatasetReader.read(resolve(e.dataset(), baseDir));
            int take = e.isFraction() ? (int) (rows.size() * e.fraction()) : e.count();
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
        Path snaps = hub.resolve("datasets--" + dataset.replace("/", "--")).resolve("snapshots");
        if (Files.isDirectory(snaps)) {
            try (var s = Files.list(snaps)) {
                var snap = s.sorted().reduce((x, y) -> y);
                if (snap.isPresent()) return snap.get();
            }
        }
        throw new NoSuchFileException(dataset, null, "dataset not found locally (tried " + String.join(", ", where) + ", " + snaps
                + "); grpo4j never downloads: fetch it first, e.g. huggingface-cli download --repo-type dataset " + dataset + ", or pass a local path");
    }

    /** "owner/name" with no file extension: a hub dataset id rather than a local path. */
    static boolean looksLikeHubName(String dataset) {
        if (!dataset.matches("[\\w.-]+/[\\w.-]+") || dataset.startsWith(".")) return false;
        String n = dataset.toLowerCase(java.util.Locale.ROOT);
        return !(n.endsWith(".jsonl") || n.endsWith(".json") || n.endsWith(".parquet"));
    }
}
