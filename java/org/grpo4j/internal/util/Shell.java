package org.grpo4j.internal.util;

import java.util.List;
import java.util.regex.Pattern;

/** Command lines printed for a user to paste into a POSIX shell. */
public final class Shell {
    private Shell() {}

    // (no '^': zsh's extendedglob and the Bourne shell read it; a leading '=' is zsh's command expansion)
    private static final Pattern PLAIN = Pattern.compile("[A-Za-z0-9_./:,@+%-][A-Za-z0-9_./=:,@+%-]*");

    /** {@code arg} as one shell word: as it is when it holds nothing a shell reads specially, else in single quotes. */
    public static String quote(String arg) {
        if (PLAIN.matcher(arg).matches()) return arg;
        return "'" + arg.replace("'", "'\\''") + "'";
    }

    /** The words quoted ({@link #quote}) and joined by spaces. */
    public static String join(List<String> args) {
        StringBuilder b = new StringBuilder();
        for (String a : args) {
            if (b.length() > 0) b.append(' ');
            b.append(quote(a));
        }
        return b.toString();
    }
}
