package org.grpo4j.internal.data;

import org.grpo4j.reward.RlvrRow;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import org.grpo4j.ChatMessage;

/**
 * Reads RLVR rows from JSONL (one JSON object per line) or Parquet (the HF hub layout, where {@code messages} is a
 * list of structs; read through DuckDB's JDBC driver, whose parquet and json support is built in).
 *
 * <p>Required per row: {@code messages} (non-empty list of {role, content}, role one of system, user, assistant) and {@code dataset}; {@code ground_truth}
 * may be null (the reward is then 0) and may be a string or any JSON value (kept as JSON text). Errors name the
 * file and the line (JSONL) or row (Parquet).
 */
public final class DatasetReader {
    private DatasetReader() {}

    /** Refuses anything after a line's value: two rows on one line (a file without its last newline, then another) lost the second. */
    private static final ObjectMapper JSON = org.grpo4j.internal.util.JsonFiles.MAPPER;

    /** The hub's usual split names: a directory with files of two of them is not read whole (see {@link #read(Path)}). */
    static final List<String> SPLITS = List.of("train", "test", "validation", "valid", "dev", "eval");

    /** The roles the chat templates render (the Tulu template silently drops any other). */
    public static final Set<String> ROLES = Set.of("system", "user", "assistant");

    /**
     * Reads a .jsonl/.json or .parquet file, or every such file in a directory (sorted by name); a directory whose files
     * belong to two of the usual splits ({@link #SPLITS}, as {@link #read(Path, String)} tells them) is refused.
     */
    public static List<RlvrRow> read(Path path) throws IOException {
        if (Files.isDirectory(path)) {
            List<Path> files;
            try (var s = Files.walk(path)) {
                files = s.filter(Files::isRegularFile).filter(DatasetReader::isDataFile).sorted().toList();
            }
            if (files.isEmpty()) throw new NoSuchFileException(path.toString(), null, "no .jsonl or .parquet files in this directory");
            // a hub dataset's directory holds its train and test files side by side: read whole, the test rows would be
            // trained on (the reference has no default split: it asks for one)
            List<String> splits = SPLITS.stream().filter(sp -> files.stream().anyMatch(f -> inSplit(path.relativize(f), sp))).toList();
            if (splits.size() > 1)
                throw new IllegalArgumentException(path + ": holds the splits " + String.join(", ", splits) + "; name the one to read"
                        + " (the config's dataset_mixer_list_splits, eval's --split), or point at a file");
            List<RlvrRow> all = new ArrayList<>();
            for (Path f : files) all.addAll(read(f));
            return all;
        }
        if (!Files.isRegularFile(path)) throw new NoSuchFileException(path.toString(), null, "dataset file not found");
        String n = path.getFileName().toString().toLowerCase(Locale.ROOT);
        if (n.endsWith(".parquet")) return readParquet(path);
        if (n.endsWith(".jsonl") || n.endsWith(".json")) return readJsonl(path);
        throw new IOException(path + ": unknown dataset format (expected .jsonl, .json or .parquet)");
    }

    /**
     * Like {@link #read(Path)}, but for a directory only the data files of {@code split} (null: all of them): a file
     * belongs to split s when a folder between the directory and the file is named s (train/..., data/train/...), or
     * its name is s.jsonl / s.parquet or starts with "s-" (train-00000-of-00001.parquet). A single file is read whole.
     */
    public static List<RlvrRow> read(Path path, String split) throws IOException {
        if (split == null || split.isBlank() || !Files.isDirectory(path)) return read(path);
        List<Path> files;
        try (var s = Files.walk(path)) {
            files = s.filter(Files::isRegularFile).filter(DatasetReader::isDataFile).filter(f -> inSplit(path.relativize(f), split)).sorted().toList();
        }
        if (files.isEmpty()) throw new NoSuchFileException(path.toString(), null, "no .jsonl or .parquet files of split \"" + split + "\" in this directory");
        List<RlvrRow> all = new ArrayList<>();
        for (Path f : files) all.addAll(read(f));
        return all;
    }

    static boolean inSplit(Path rel, String split) {
        for (int i = 0; i < rel.getNameCount() - 1; i++) if (rel.getName(i).toString().equals(split)) return true;
        String n = rel.getFileName().toString();
        int dot = n.indexOf('.');
        String stem = dot < 0 ? n : n.substring(0, dot);
        return stem.equals(split) || n.startsWith(split + "-");
    }

    static boolean isDataFile(Path p) {
        String n = p.getFileName().toString().toLowerCase(Locale.ROOT);
        return n.endsWith(".jsonl") || n.endsWith(".parquet");
    }

    public static List<RlvrRow> readJsonl(Path path) throws IOException {
        List<RlvrRow> rows = new ArrayList<>();
        try (java.io.InputStream in = Files.newInputStream(path)) {
            org.grpo4j.internal.util.Utf8Lines lines = new org.grpo4j.internal.util.Utf8Lines(in); // (bad UTF-8 named at its line)
            String line;
            while (true) {
                try {
                    line = lines.next(); // (a byte order mark dropped: Jackson refuses it)
                } catch (java.nio.charset.CharacterCodingException e) {
                    throw new IOException(path + ":" + lines.number() + ": not valid UTF-8", e);
                }
                if (line == null) break;
                if (line.isBlank()) continue;
                String where = path + ":" + lines.number();
                JsonNode node;
                try {
                    node = JSON.readTree(line);
                } catch (JsonProcessingException e) {
                    throw new IOException(where + ": not valid JSON: " + org.grpo4j.internal.util.JsonErrors.describeLine(e));
                }
                rows.add(fromJson(node, where));
            }
        }
        return rows;
    }

    /** Builds a row from a JSON object; {@code where} names the source in errors. */
    public static RlvrRow fromJson(JsonNode node, String where) throws IOException {
        if (!node.isObject()) throw new IOException(where + ": expected a JSON object, got " + node.getNodeType().toString().toLowerCase(Locale.ROOT));
        List<ChatMessage> messages = parseMessages(node.get("messages"), where);
        JsonNode ds = node.get("dataset");
        if (ds == null || ds.isNull()) throw new IOException(where + ": field \"dataset\" is missing");
        if (!ds.isTextual()) throw new IOException(where + ": field \"dataset\" must be a string, got " + ds);
        // absent is not null: the reference reads row["ground_truth"] (a KeyError at start-up), where a row with null
        // scores 0; a dataset whose answers are under another key would otherwise train on all-zero rewards
        if (!node.has("ground_truth"))
            throw new IOException(where + ": field \"ground_truth\" is missing (the verifier's answer; null scores the row 0)");
        return new RlvrRow(messages, textOrJson(node.get("ground_truth")), ds.asText(),
                optText(node.get("constraint_type"), "constraint_type", where), optText(node.get("constraint"), "constraint", where), where);
    }

    static List<ChatMessage> parseMessages(JsonNode m, String where) throws IOException { return parseMessages(m, where, "field \"messages\"", "messages"); }

    /**
     * A chat: a non-empty JSON list of {role, content} with the roles the templates render. Errors name {@code where},
     * then {@code what} for the whole list (a dataset's "field \"messages\"") or {@code item}[i] for an entry.
     */
    public static List<ChatMessage> parseMessages(JsonNode m, String where, String what, String item) throws IOException {
        if (m == null || m.isNull()) throw new IOException(where + ": " + what + " is missing");
        if (!m.isArray() || m.isEmpty()) throw new IOException(where + ": " + what + " must be a non-empty list of {role, content}");
        List<ChatMessage> out = new ArrayList<>();
        for (int i = 0; i < m.size(); i++) {
            JsonNode e = m.get(i);
            JsonNode role = e.get("role"), content = e.get("content");
            if (role == null || !role.isTextual()) throw new IOException(where + ": " + item + "[" + i + "].role must be a string");
            if (content == null || !content.isTextual()) throw new IOException(where + ": " + item + "[" + i + "].content must be a string");
            if (!ROLES.contains(role.asText()))
                throw new IOException(where + ": " + item + "[" + i + "].role \"" + role.asText() + "\" is not one of system, user, assistant"
                        + (ROLES.contains(role.asText().trim().toLowerCase(Locale.ROOT)) ? " (roles are lower case, without spaces)" : "")
                        + "; the chat templates render only these roles");
            out.add(new ChatMessage(role.asText(), content.asText()));
        }
        return out;
    }

    private static String textOrJson(JsonNode n) {
        if (n == null || n.isNull()) return null;
        return n.isTextual() ? n.asText() : n.toString();
    }

    private static String optText(JsonNode n, String field, String where) throws IOException {
        if (n == null || n.isNull()) return null;
        if (!n.isTextual()) throw new IOException(where + ": field \"" + field + "\" must be a string or null, got " + n);
        return n.asText();
    }

    public static List<RlvrRow> readParquet(Path path) throws IOException {
        String file = path.toAbsolutePath().toString().replace("'", "''");
        try (Connection c = DriverManager.getConnection("jdbc:duckdb:"); Statement st = c.createStatement()) {
            Set<String> cols = new HashSet<>();
            try (ResultSet rs = st.executeQuery("DESCRIBE SELECT * FROM read_parquet('" + file + "')")) {
                while (rs.next()) cols.add(rs.getString(1));
            }
            for (String req : List.of("messages", "dataset", "ground_truth"))
                if (!cols.contains(req)) throw new IOException(path + ": column \"" + req + "\" is missing (columns: " + cols + ")");
            String gt = "to_json(ground_truth)";
            String ct = cols.contains("constraint_type") ? "constraint_type" : "NULL";
            String cn = cols.contains("constraint") ? "\"constraint\"" : "NULL";
            String sql = "SELECT to_json(messages), " + gt + ", dataset, " + ct + ", " + cn + " FROM read_parquet('" + file + "')";
            List<RlvrRow> rows = new ArrayList<>();
            try (ResultSet rs = st.executeQuery(sql)) {
                ResultSetMetaData md = rs.getMetaData();
                if (md.getColumnCount() != 5) throw new IOException(path + ": unexpected result shape");
                int no = 0;
                while (rs.next()) {
                    String where = path + ": row " + no++;
                    JsonNode messages = JSON.readTree(rs.getString(1) == null ? "null" : rs.getString(1));
                    String gtJson = rs.getString(2);
                    JsonNode gtNode = gtJson == null ? null : JSON.readTree(gtJson);
                    com.fasterxml.jackson.databind.node.ObjectNode o = JSON.createObjectNode();
                    o.set("messages", messages);
                    o.set("ground_truth", gtNode);
                    o.put("dataset", rs.getString(3));
                    o.put("constraint_type", rs.getString(4) == null ? null : String.valueOf(rs.getObject(4)));
                    o.put("constraint", rs.getString(5) == null ? null : String.valueOf(rs.getObject(5)));
                    rows.add(fromJson(o, where));
                }
            }
            return rows;
        } catch (SQLException e) {
            throw new IOException(path + ": cannot read as Parquet: " + duckDbReason(e.getMessage()), e);
        }
    }

    /**
     * The reason in a DuckDB error message: its last line that names an error (a failed read of a file that is not
     * Parquet begins "Invalid Input Error: Attempting to execute an unsuccessful or closed pending query result" and
     * says "No magic bytes found at end of file" only on a later line), else its first line.
     */
    static String duckDbReason(String message) {
        if (message == null) return "";
        List<String> lines = message.lines().map(String::strip).filter(l -> !l.isEmpty()).toList();
        if (lines.isEmpty()) return "";
        for (int i = lines.size() - 1; i > 0; i--)
            if (lines.get(i).contains("Error")) return lines.get(i);
        return lines.get(0);
    }

    /** Writes rows as Parquet (messages as list of structs, like the HF hub files), through DuckDB. */
    public static void writeParquet(List<RlvrRow> rows, Path out) throws IOException {
        Path tmp = Files.createTempFile("grpo4j-rows", ".jsonl");
        try {
            writeJsonl(rows, tmp);
            String in = tmp.toAbsolutePath().toString().replace("'", "''"), o = out.toAbsolutePath().toString().replace("'", "''");
            try (Connection c = DriverManager.getConnection("jdbc:duckdb:"); Statement st = c.createStatement()) {
                st.execute("COPY (SELECT * FROM read_json('" + in + "', format='newline_delimited', columns={"
                        + "messages: 'STRUCT(role VARCHAR, content VARCHAR)[]', ground_truth: 'VARCHAR', dataset: 'VARCHAR', "
                        + "constraint_type: 'VARCHAR', \"constraint\": 'VARCHAR'})) TO '" + o + "' (FORMAT parquet)");
            } catch (SQLException e) {
                throw new IOException(out + ": cannot write Parquet: " + e.getMessage(), e);
            }
        } finally {
            Files.deleteIfExists(tmp);
        }
    }

    public static void writeJsonl(List<RlvrRow> rows, Path out) throws IOException {
        try (var w = Files.newBufferedWriter(out, StandardCharsets.UTF_8)) {
            for (RlvrRow r : rows) {
                var o = JSON.createObjectNode();
                var ms = o.putArray("messages");
                for (ChatMessage m : r.messages()) ms.addObject().put("role", m.role()).put("content", m.content());
                o.put("ground_truth", r.groundTruth());
                o.put("dataset", r.dataset());
                o.put("constraint_type", r.constraintType());
                o.put("constraint", r.constraint());
                w.write(JSON.writeValueAsString(o));
                w.write('\n');
            }
        }
    }
}
