package org.grpo4j.internal.util;

import com.fasterxml.jackson.core.JsonProcessingException;

/** Jackson parse errors as one readable clause: what is wrong and where ("line 3, column 7"), without Jackson's source dump. */
public final class JsonErrors {
    private JsonErrors() {}

    /** e.g. "Unexpected end-of-input: expected close marker for Object (line 1, column 24)". */
    public static String describe(JsonProcessingException e) {
        String m = e.getOriginalMessage() == null ? "unreadable" : e.getOriginalMessage().lines().findFirst().orElse("");
        // "(start marker at [Source: REDACTED (...); line: 1, column: 2])" -> "(start marker at line 1, column 2)"
        m = m.replaceAll("\\[Source: [^;]*; line: (\\d+), column: (\\d+)]", "line $1, column $2");
        // FAIL_ON_TRAILING_TOKENS' words name Jackson's classes and settings: "Trailing token (of type START_OBJECT)
        // found after value (bound as `com.fasterxml.jackson.databind.JsonNode`): not allowed as per `DeserializationFeature...`"
        if (m.startsWith("Trailing token")) m = "more than one JSON value: something follows the first one";
        m = m.replaceAll(" ?\\(bound as `[^`]*`\\)", "").replaceAll(":? ?not allowed as per `[^`]*`", "");
        var loc = e.getLocation();
        return loc == null || loc.getLineNr() < 1 ? m : m + " (line " + loc.getLineNr() + ", column " + loc.getColumnNr() + ")";
    }

    /**
     * {@link #describe} for a document of one line whose caller names the file's line itself ("rows.jsonl:7: ..."):
     * positions within it are columns ("column 14"), not "line 1, column 14", which would contradict the line named.
     */
    public static String describeLine(JsonProcessingException e) {
        return describe(e).replaceAll("line 1, column (\\d+)", "column $1");
    }
}
