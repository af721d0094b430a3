package org.grpo4j.internal.reward;

/** The few Python str semantics the verifiers depend on (strip, splitlines, count, isdigit). */
final class PyStr {
    private PyStr() {}

    /** Python str.isspace for one char. */
    static boolean isSpace(int c) {
        return Character.isWhitespace(c) || Character.isSpaceChar(c) || c == 0x1c || c == 0x1d || c == 0x1e || c == 0x1f || c == 0x85;
    }

    static String strip(String s) {
        int a = 0, b = s.length();
        while (a < b && isSpace(s.charAt(a))) a++;
        while (b > a && isSpace(s.charAt(b - 1))) b--;
        return s.substring(a, b);
    }

    /** str.split() without arguments: runs of whitespace, no empty pieces. */
    static int countWhitespaceWords(String s) {
        int n = 0;
        boolean in = false;
        for (int i = 0; i < s.length(); i++) {
            if (isSpace(s.charAt(i))) in = false;
            else if (!in) {
                in = true;
                n++;
            }
        }
        return n;
    }

    /** str.splitlines(): \n, \r, \r\n, \x0b, \x0c, \x1c-\x1e, \x85, \u2028, \u2029; no trailing empty line. */
    static java.util.List<String> splitlines(String s) {
        java.util.List<String> out = new java.util.ArrayList<>();
        int start = 0, i = 0;
        while (i < s.length()) {
            char c = s.charAt(i);
            boolean br = c == '\n' || c == '\r' || c == 0x0b || c == 0x0c || c == 0x1c || c == 0x1d || c == 0x1e || c == 0x85
                    || c == 0x2028 || c == 0x2029;
            if (br) {
                out.add(s.substring(start, i));
                if (c == '\r' && i + 1 < s.length() && s.charAt(i + 1) == '\n') i++;
                start = i + 1;
            }
            i++;
        }
        if (start < s.length()) out.add(s.substring(start));
        return out;
    }

    /** str.count(sub): non-overlapping occurrences. */
    static int count(String s, String sub) {
        if (sub.isEmpty()) return s.codePointCount(0, s.length()) + 1;
        int n = 0, i = 0;
        while ((i = s.indexOf(sub, i)) >= 0) {
            n++;
            i += sub.length();
        }
        return n;
    }

    /** str.isdigit(): non-empty and every code point a decimal or digit character. */
    static boolean isDigits(String s) {
        if (s.isEmpty()) return false;
        return s.codePoints().allMatch(c -> Character.isDigit(c)
                || (Character.getType(c) == Character.OTHER_NUMBER && Character.getNumericValue(c) >= 0 && Character.getNumericValue(c) <= 9));
    }

    /** len() in code points. */
    static int len(String s) { return s.codePointCount(0, s.length()); }

    /** Python's round() (half to even) of a double, as an int. */
    static long round(double x) { return (long) Math.rint(x); }
}
