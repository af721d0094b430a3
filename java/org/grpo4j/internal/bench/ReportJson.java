package org.grpo4j.internal.bench;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;

/**
 * The JSON plumbing the benchmark reports share ({@link BenchReport}, {@link E2eReport}): writing atomically, reading
 * with errors that name the file, and typed field access whose errors name the field ("peers.json: rows[3].median_ms:
 * expected a positive number, got -1.0").
 */
final class ReportJson {
    private ReportJson() {}

    static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    static String text(ObjectNode o) {
        try {
            return JSON.writeValueAsString(o) + "\n";
        } catch (JsonProcessingException e) {
            throw new IllegalStateException(e);
        }
    }

    /** Puts a finite number; null and non-finite values are left out. */
    static void putNum(ObjectNode o, String k, Double v) {
        if (v != null && Double.isFinite(v)) o.put(k, v);
    }

    /** Writes through a temporary file and a rename, so an interrupted write never leaves half a file. */
    static void write(Path file, String text) throws IOException {
        Path abs = file.toAbsolutePath();
        if (abs.getParent() != null) Files.createDirectories(abs.getParent());
        Path tmp = abs.resolveSibling("." + abs.getFileName() + ".tmp");
        Files.writeString(tmp, text);
        Files.move(tmp, abs, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }

    static JsonNode read(Path file) throws IOException {
        String text = Files.readString(file);
        try {
            return JSON.readTree(text);
        } catch (JsonProcessingException e) {
            throw new IllegalArgumentException(file + ": not valid JSON (" + e.getOriginalMessage() + " at line "
                    + e.getLocation().getLineNr() + ")");
        }
    }

    static String at(String where, String k) { return where + (where.endsWith("]") ? "." : ": ") + k; }

    static String str(JsonNode o, String k, String where, boolean required) {
        JsonNode v = o.get(k);
        if (v == null || v.isNull()) {
            if (required) throw new IllegalArgumentException(at(where, k) + ": missing");
            return null;
        }
        if (!v.isTextual()) throw new IllegalArgumentException(at(where, k) + ": expected a string, got " + v);
        return v.asText();
    }

    static Double num(JsonNode o, String k, String where, boolean required, boolean positive) {
        JsonNode v = o.get(k);
        if (v == null || v.isNull()) {
            if (required) throw new IllegalArgumentException(at(where, k) + ": missing");
            return null;
        }
        if (!v.isNumber()) throw new IllegalArgumentException(at(where, k) + ": expected a number, got " + v);
        double d = v.asDouble();
        if (!Double.isFinite(d) || (positive ? d <= 0 : d < 0))
            throw new IllegalArgumentException(at(where, k) + ": expected a " + (positive ? "positive" : "non-negative") + " number, got " + d);
        return d;
    }
}
