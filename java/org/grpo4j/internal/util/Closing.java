package org.grpo4j.internal.util;

/** Closing several resources so that one failure does not leak the others. */
public final class Closing {
    private Closing() {}

    /**
     * Closes every resource in order, also those after one that fails; then rethrows the first failure (the later ones
     * suppressed in it): a RuntimeException or Error as it is, a checked exception in an IllegalStateException
     * "closing WHAT: ...".
     */
    public static void closeAll(String what, Iterable<? extends AutoCloseable> resources) {
        Throwable first = null;
        for (AutoCloseable c : resources) {
            try {
                c.close();
            } catch (Exception | Error e) {
                if (first == null) first = e;
                else first.addSuppressed(e);
            }
        }
        if (first instanceof RuntimeException re) throw re;
        if (first instanceof Error er) throw er;
        if (first != null) throw new IllegalStateException("closing " + what + ": " + first.getMessage(), first);
    }
}
