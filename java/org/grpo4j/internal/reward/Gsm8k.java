package org.grpo4j.internal.reward;

import org.grpo4j.reward.Compat;
import java.util.Locale;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * GSM8K (grpo-reference.md section 6.1): drop thousands separators between digits, take the last number (the whole
 * response if there is none) and compare it as a string, case-insensitively, with the ground truth.
 *
 * <p>Default semantics fix the reference's sign bug: an integer keeps its minus sign ("-5" extracts "-5"), where no
 * letter, digit, '_' or '.' comes right before it ("5-10" extracts "10"); a plus sign is dropped ("+7" extracts "7"). In
 * {@link Compat#OPEN_INSTRUCT_3F37C29} the reference's regex {@code [-+]?\d*\.\d+|\d+} is used, so integers lose
 * their sign. Python's \d matches any Unicode digit; both modes do the same.
 */
final class Gsm8k {
    private Gsm8k() {}

    private static final Pattern THOUSANDS = Pattern.compile("(\\d),(\\d)", Pattern.UNICODE_CHARACTER_CLASS);
    private static final Pattern NUMBER_REF = Pattern.compile("[-+]?\\d*\\.\\d+|\\d+", Pattern.UNICODE_CHARACTER_CLASS);
    /**
     * A minus sign only where no word character or '.' comes before it ("5-10" is a range ending in 10, not -10) and
     * never a plus ("+7" is 7); the unsigned alternatives take the rest.
     */
    private static final Pattern NUMBER_FIXED = Pattern.compile("(?<![\\p{L}\\p{N}_.])-?\\d*\\.\\d+|(?<![\\p{L}\\p{N}_.])-?\\d+|\\d*\\.\\d+|\\d+",
            Pattern.UNICODE_CHARACTER_CLASS);

    static String extract(String response, Compat compat) {
        String r = THOUSANDS.matcher(Deadline.wrap(response)).replaceAll("$1$2");
        Matcher m = (compat == Compat.OPEN_INSTRUCT_3F37C29 ? NUMBER_REF : NUMBER_FIXED).matcher(Deadline.wrap(r));
        String last = null;
        while (m.find()) last = m.group();
        return last != null ? last : r;
    }

    static boolean verify(String response, String groundTruth, Compat compat) {
        return extract(response, compat).toLowerCase(Locale.ROOT).equals(groundTruth.toLowerCase(Locale.ROOT));
    }
}
