package org.grpo4j.internal.reward;

/**
 * A CharSequence view that aborts regex matching once a deadline passes or the thread is interrupted:
 * java.util.regex cannot be interrupted, but it reads its input through charAt, so a pathological backtracking
 * pattern stops within microseconds of the deadline instead of running forever.
 */
public final class Deadline implements CharSequence {
    /** Thrown from charAt when time is up. */
    public static final class Expired extends RuntimeException {
        Expired() { super("verification time limit reached", null, false, false); }
    }

    private static final ThreadLocal<Long> DEADLINE = new ThreadLocal<>();

    private final CharSequence s;
    private int counter;

    private Deadline(CharSequence s) { this.s = s; }

    /** Wraps text for regex use under the current thread's deadline (none set: no wrapping). */
    static CharSequence wrap(CharSequence s) {
        return DEADLINE.get() == null ? s : new Deadline(s);
    }

    public static void set(long nanoTime) { DEADLINE.set(nanoTime); }

    public static void clear() { DEADLINE.remove(); }

    /** Throws {@link Expired} when the current thread's deadline has passed (for loops outside regexes). */
    static void check() {
        Long d = DEADLINE.get();
        if (d != null && (System.nanoTime() > d || Thread.currentThread().isInterrupted())) throw new Expired();
    }

    @Override
    public char charAt(int index) {
        if ((++counter & 0x3FF) == 0) check();
        return s.charAt(index);
    }

    @Override
    public int length() { return s.length(); }

    @Override
    public CharSequence subSequence(int start, int end) { return new Deadline(s.subSequence(start, end)); }

    @Override
    public String toString() { return s.toString(); }
}
