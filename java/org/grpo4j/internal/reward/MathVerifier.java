package org.grpo4j.internal.reward;

import org.grpo4j.reward.Compat;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * MATH "flex" (grpo-reference.md section 6.2): candidate answers from the last \boxed{} (brace matched), the Minerva
 * "Final Answer: The final answer is X. I hope it is correct." form, then the text between the last two '$', then
 * the whole output; a candidate matches if it is symbolically equal to the ground truth ({@link LatexExpr}, our
 * replacement for sympy) or equal after Hendrycks' strip_string. Extraction and normalization follow the reference
 * function by function, exceptions included (a failing strip_string falls back to exact string equality).
 *
 * <p>Default semantics additionally accept \fbox{} answers (the reference finds them but then fails to unwrap them) and
 * compare tuples element-wise.
 */
final class MathVerifier {
    private MathVerifier() {}

    /** Python's "raise" inside a normalization step. */
    static final class PyError extends RuntimeException {
        PyError(String m) { super(m, null, false, false); }
    }

    static String lastBoxedOnlyString(String s) {
        int idx = s.lastIndexOf("\\boxed");
        if (s.contains("\\boxed ")) {
            String[] parts = s.split(Pattern.quote("\\boxed "), -1);
            String last = parts[parts.length - 1];
            int d = last.indexOf('$');
            return "\\boxed " + (d >= 0 ? last.substring(0, d) : last);
        }
        if (idx < 0) {
            idx = s.lastIndexOf("\\fbox");
            if (idx < 0) return null;
        }
        int open = 0;
        for (int i = idx; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c == '{') open++;
            if (c == '}') {
                open--;
                if (open == 0) return s.substring(idx, i + 1);
            }
        }
        return null;
    }

    /** remove_boxed; null where the reference's assertions fail. \fbox is unwrapped only when allowFbox. */
    static String removeBoxed(String s, boolean allowFbox) {
        if (s.contains("\\boxed ")) return s.startsWith("\\boxed ") ? s.substring(7) : null;
        String left = "\\boxed{";
        if (allowFbox && s.startsWith("\\fbox{") && s.endsWith("}")) return s.substring(6, s.length() - 1);
        if (!s.startsWith(left) || !s.endsWith("}") || s.length() < left.length() + 1) return null;
        return s.substring(left.length(), s.length() - 1);
    }

    private static final Pattern MINERVA = Pattern.compile("Final Answer: The final answer is(.*?). I hope it is correct.", Pattern.UNIX_LINES);

    static String getUnnormalizedAnswer(String text) {
        Matcher m = MINERVA.matcher(Deadline.wrap(text + "I hope it is correct."));
        return m.find() ? PyStr.strip(m.group(1)) : "[invalidanswer]";
    }

    private static final String[][] SUBSTITUTIONS = {{"an ", ""}, {"a ", ""}, {".$", "$"}, {"\\$", ""}, {"\\ ", ""}, {" ", ""},
            {"mbox", "text"}, {",\\text{and}", ","}, {"\\text{and}", ","}, {"\\text{m}", "\\text{}"}};
    private static final String[] REMOVED = {"square", "ways", "integers", "dollars", "mph", "inches", "ft", "hours", "km", "units",
            "\\ldots", "sue", "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters", "meals",
            "edges", "students", "childrentickets", "multiples", "\\text{s}", "\\text{.}", "\\text{\ns}", "\\text{}^2", "\\text{}^3",
            "\\text{\n}", "\\text{}", "\\mathrm{th}", "^\\circ", "^{\\circ}", "\\;", ",\\!", "{,}", "\"", "\\dots"};
    private static final Pattern P_DOLLARS = Pattern.compile("(.*?)(\\$)(.*?)(\\$)(.*)", Pattern.UNIX_LINES);
    private static final Pattern P_TEXT = Pattern.compile("(\\\\text\\{)(.*?)(\\})", Pattern.UNIX_LINES);
    private static final Pattern P_TEXTBF = Pattern.compile("(\\\\textbf\\{)(.*?)(\\})", Pattern.UNIX_LINES);
    private static final Pattern P_OVERLINE = Pattern.compile("(\\\\overline\\{)(.*?)(\\})", Pattern.UNIX_LINES);
    private static final Pattern P_BOXED = Pattern.compile("(\\\\boxed\\{)(.*)(\\})", Pattern.UNIX_LINES);
    private static final Pattern P_FRAC = Pattern.compile("(frac)([^{])(.)", Pattern.UNIX_LINES);
    private static final Pattern P_SQRT = Pattern.compile("(sqrt)([^{])");

    /**
     * {@code re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", s)} in one pass: '.' stops at '\n' (only there: UNIX_LINES,
     * as Python), so each line holding two '$' or more becomes '$' + the text between its first two + '$', and the
     * others stay. The regex (P_DOLLARS, which tests compare with this) rescans a line from every start when it has
     * fewer than two, quadratic in its length: on a long answer it took minutes (Python's re as well).
     */
    static String keepFirstDollarPair(String s) {
        StringBuilder out = null;
        int start = 0, n = s.length();
        while (start <= n) {
            int end = start, a = -1, b = -1; // the line's end, its first two '$' (each character looked at once)
            for (; end < n && s.charAt(end) != '\n'; end++)
                if (s.charAt(end) == '$' && b < 0) {
                    if (a < 0) a = end;
                    else b = end;
                }
            if (b >= 0) {
                if (out == null) out = new StringBuilder(n).append(s, 0, start);
                out.append('$').append(s, a + 1, b).append('$');
            } else if (out != null) out.append(s, start, end);
            if (end == n) break;
            if (out != null) out.append('\n');
            start = end + 1;
        }
        return out == null ? s : out.toString();
    }

    /** The regex {@link #keepFirstDollarPair} replaces (for the tests that compare them). */
    static String keepFirstDollarPairByRegex(String s) { return P_DOLLARS.matcher(s).replaceAll("\\$$3\\$"); }

    /** Minerva's normalize_final_answer (Lewkowycz et al. 2022, appendix D). */
    static String normalizeFinalAnswer(String a) {
        String s = a.substring(a.lastIndexOf('=') + 1);
        for (String[] r : SUBSTITUTIONS) s = s.replace(r[0], r[1]);
        for (String r : REMOVED) s = s.replace(r, "");
        s = keepFirstDollarPair(s);
        s = P_TEXT.matcher(Deadline.wrap(s)).replaceAll("$2");
        s = P_TEXTBF.matcher(Deadline.wrap(s)).replaceAll("$2");
        s = P_OVERLINE.matcher(Deadline.wrap(s)).replaceAll("$2");
        s = P_BOXED.matcher(Deadline.wrap(s)).replaceAll("$2");
        s = P_FRAC.matcher(Deadline.wrap(s)).replaceAll("frac{$2}{$3}");
        s = P_SQRT.matcher(Deadline.wrap(s)).replaceAll("sqrt{$2}");
        s = s.replace("$", "");
        if (PyStr.isDigits(s.replace(",", ""))) s = s.replace(",", "");
        return s;
    }

    // ---- Hendrycks strip_string ---------------------------------------------------------------------------------

    static String fixFracs(String string) {
        String[] substrs = string.split(Pattern.quote("\\frac"), -1);
        StringBuilder sb = new StringBuilder(substrs[0]);
        for (int k = 1; k < substrs.length; k++) {
            String sub = substrs[k];
            sb.append("\\frac");
            if (sub.isEmpty()) throw new PyError("IndexError in fix_fracs");
            if (sub.charAt(0) == '{') sb.append(sub);
            else {
                if (sub.length() < 2) return string;
                char a = sub.charAt(0), b = sub.charAt(1);
                if (b != '{') sb.append('{').append(a).append("}{").append(b).append('}').append(sub.substring(2));
                else sb.append('{').append(a).append('}').append(b).append(sub.substring(2));
            }
        }
        return sb.toString();
    }

    static String fixASlashB(String string) {
        String[] p = string.split("/", -1);
        if (p.length != 2) return string;
        long a = pyInt(p[0]), b = pyInt(p[1]);
        if (!string.equals(a + "/" + b)) return string; // the reference's assertion
        return "\\frac{" + a + "}{" + b + "}";
    }

    /** Python int(str): optional whitespace and sign, digits (underscores between digits); else ValueError. */
    static long pyInt(String s) {
        String t = PyStr.strip(s);
        if (!t.matches("[+-]?\\d+(_\\d+)*")) throw new PyError("ValueError: invalid literal for int(): '" + s + "'");
        try {
            return Long.parseLong(t.replace("_", "").replace("+", ""));
        } catch (NumberFormatException e) {
            throw new PyError("ValueError: " + s);
        }
    }

    static String removeRightUnits(String string) {
        if (string.contains("\\text{ ")) {
            String[] splits = string.split(Pattern.quote("\\text{ "), -1);
            if (splits.length != 2) throw new PyError("AssertionError in remove_right_units");
            return splits[0];
        }
        return string;
    }

    static String fixSqrt(String string) {
        if (!string.contains("\\sqrt")) return string;
        String[] splits = string.split(Pattern.quote("\\sqrt"), -1);
        StringBuilder sb = new StringBuilder(splits[0]);
        for (int k = 1; k < splits.length; k++) {
            String sp = splits[k];
            if (sp.isEmpty()) throw new PyError("IndexError in fix_sqrt");
            if (sp.charAt(0) != '{') sb.append("\\sqrt{").append(sp.charAt(0)).append('}').append(sp.substring(1));
            else sb.append("\\sqrt").append(sp);
        }
        return sb.toString();
    }

    static String stripString(String string) {
        String s = string.replace("\n", "");
        s = s.replace("\\!", "");
        s = s.replace("\\\\", "\\");
        s = s.replace("tfrac", "frac");
        s = s.replace("dfrac", "frac");
        s = s.replace("\\left", "");
        s = s.replace("\\right", "");
        s = s.replace("^{\\circ}", "");
        s = s.replace("^\\circ", "");
        s = s.replace("\\$", "");
        s = removeRightUnits(s);
        s = s.replace("\\%", "");
        s = s.replace(" .", " 0.");
        s = s.replace("{.", "{0.");
        if (s.isEmpty()) return s;
        if (s.charAt(0) == '.') s = "0" + s;
        String[] eq = s.split("=", -1);
        if (eq.length == 2 && PyStr.len(eq[0]) <= 2) s = eq[1];
        s = fixSqrt(s);
        s = s.replace(" ", "");
        s = fixFracs(s);
        if (s.equals("0.5")) s = "\\frac{1}{2}";
        s = fixASlashB(s);
        return s;
    }

    static boolean hendrycksIsEquiv(String a, String b) {
        try {
            return stripString(a).equals(stripString(b));
        } catch (PyError e) {
            return a.equals(b);
        }
    }

    /** The candidate answers, in the reference's order. */
    static List<String> candidates(String out, Compat compat) {
        List<String> all = new ArrayList<>();
        String boxed = lastBoxedOnlyString(out);
        if (boxed != null) {
            String b = removeBoxed(boxed, compat == Compat.DEFAULT);
            if (b != null) all.add(b);
        }
        String minerva = normalizeFinalAnswer(getUnnormalizedAnswer(out));
        if (!minerva.equals("[invalidanswer]")) all.add(minerva);
        if (all.isEmpty()) {
            int last = out.lastIndexOf('$');
            int prev = last > 0 ? out.lastIndexOf('$', last - 1) : -1;
            if (prev >= 0) all.add(normalizeFinalAnswer(out.substring(prev + 1, last)));
        }
        if (all.isEmpty()) all.add(normalizeFinalAnswer(out));
        return all;
    }

    static boolean verify(String response, String groundTruth, Compat compat) {
        for (String c : candidates(response, compat)) {
            Deadline.check();
            if (LatexExpr.equivalent(c, groundTruth, compat == Compat.DEFAULT)) return true;
            if (hendrycksIsEquiv(c, groundTruth)) return true;
        }
        return false;
    }
}
