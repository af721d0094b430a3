package org.grpo4j.internal.util;

import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;

/** The Jackson mapper for files that hold one JSON value (configs, indexes, states, dataset lines). */
public final class JsonFiles {
    private JsonFiles() {}

    /**
     * Refuses content after the value (two objects pasted together), as Python's json.load, and so HF, refuses it:
     * the second object's values were silently ignored. Thread-safe; shared, so never reconfigure it ({@code copy()}
     * for a variant).
     */
    public static final ObjectMapper MAPPER = new ObjectMapper().enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);
}
