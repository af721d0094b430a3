package org.grpo4j.internal.util;

import java.io.IOException;

/**
 * Optional PNG charts (JFreeChart over java.awt, headless). A chart is a by-product: a runtime that cannot draw one (a
 * jlink'ed runtime without java.desktop, such as the GPU loan's packed one, or a host without fonts) writes none and
 * says why, and a chart never fails the run, checkpoint or comparison that draws it.
 */
public final class Charts {
    private Charts() {}

    /** Writes one or more charts. */
    @FunctionalInterface
    public interface Body {
        void write() throws IOException;
    }

    /** Why this runtime cannot draw charts, or null when it has what they need. */
    public static String unavailable() {
        return ModuleLayer.boot().findModule("java.desktop").isEmpty()
                ? "this Java runtime has no java.desktop module (AWT); rerun with a full JDK to draw it" : null;
    }

    /**
     * Runs {@code body} where charts can be drawn. Returns null when it completed, otherwise why no chart (or not every
     * chart) was written: the runtime lacks AWT, or drawing failed (an I/O error, a missing class or font). The JVM's
     * own exhaustion (out of memory, stack overflow) is rethrown.
     */
    public static String tryWrite(Body body) {
        String why = unavailable();
        if (why != null) return why;
        try {
            body.write();
            return null;
        } catch (IOException | RuntimeException | LinkageError e) {
            return reason(e);
        } catch (VirtualMachineError e) {
            if (!(e instanceof InternalError)) throw e; // AWT reports a broken font setup as InternalError
            return reason(e);
        } catch (Error e) { // AWT's "Probable fatal error: No fonts found" is a plain Error
            return reason(e);
        }
    }

    /** Why drawing failed, in words (a user sees it: no Java class names). */
    static String reason(Throwable e) {
        Throwable t = e;
        while ((t.getMessage() == null || t.getMessage().isBlank()) && t.getCause() != null && t.getCause() != t) t = t.getCause();
        String m = t.getMessage() == null || t.getMessage().isBlank() ? "no reason given" : t.getMessage().strip();
        return e instanceof LinkageError ? "a class of the Java runtime is missing or broken: " + m : m;
    }
}
