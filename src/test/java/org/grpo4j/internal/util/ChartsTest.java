package org.grpo4j.internal.util;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import org.junit.jupiter.api.Test;

class ChartsTest {
    @Test
    void aChartThatCannotBeDrawnIsReportedNotThrown() {
        // this JDK has java.desktop, so the body runs and what it throws comes back as the reason
        assertNull(Charts.unavailable());
        assertNull(Charts.tryWrite(() -> {}));
        assertEquals("a class of the Java runtime is missing or broken: java/awt/Color",
                Charts.tryWrite(() -> { throw new NoClassDefFoundError("java/awt/Color"); }));
        assertEquals("disk full", Charts.tryWrite(() -> { throw new IOException("disk full"); }));
        assertEquals("Probable fatal error:No fonts found.",
                Charts.tryWrite(() -> { throw new Error("Probable fatal error:No fonts found."); }));
        assertTrue(Charts.tryWrite(() -> { throw new InternalError("fontconfig"); }).contains("fontconfig"));
    }

    @Test
    void theJvmsOwnExhaustionIsRethrown() {
        assertThrows(OutOfMemoryError.class, () -> Charts.tryWrite(() -> { throw new OutOfMemoryError("heap"); }));
        assertThrows(StackOverflowError.class, () -> Charts.tryWrite(() -> { throw new StackOverflowError(); }));
    }
}
