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
        var loc = e.getLocation();
        return loc == null || loc.getLineNr() < 1 ? m : m + " (line " + loc.getLineNr() + ", column " + loc.getColumnNr() + ")";
    }
}
