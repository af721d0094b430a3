package org.grpo4j.internal.reward;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.TreeMap;

/**
 * A small LaTeX math parser and evaluator for answer equivalence: our replacement for the reference's
 * sympy {@code simplify(parse_latex(a) - parse_latex(b)) == 0}.
 *
 * <p>Both answers are parsed (numbers, letters as variables, + - * / ^ and implicit products, \frac, \sqrt, \sqrt[n],
 * \pi, trig/log/exp functions, factorials, groups) and compared numerically: constants to 1e-9 relative, expressions
 * with variables at 6 random points (identity testing — two different rational functions agree at random points only
 * with negligible probability). Equations, inequalities, sets, infinity and anything unparsed are "not equivalent",
 * as sympy's failures are in the reference. Optionally, comma-separated tuples compare element-wise.
 * Everything runs under the verification deadline.
 *
 * <p>Two dialects. The default reads answers as a mathematician would (TeX exponents, \pi the number, \log base 10).
 * {@code sympy} (the open-instruct-3f37c29 compatibility mode) reads them as sympy 1.13's {@code parse_latex(s,
 * strict=False)} does, which the reference calls: numbers may carry thousands separators ("40,320"), the longest
 * parsable prefix is the expression ("-2, 3" is -2, "5)" is 5), a digit run is one exponent (2^10 = 1024), \pi is a
 * symbol (so sin(\pi/3) is not sqrt(3)/2), \log is the natural log, and \text{x}, \mathrm{x} are the symbol "text"
 * (or "mathrm") times x.
 */
final class LatexExpr {
    private LatexExpr() {}

    /** Parse failure: the answer is not comparable. */
    static final class ParseError extends Exception {
        ParseError(String m) { super(m, null, false, false); }
    }

    interface Node {
        double eval(Map<String, Double> vars);
    }

    private record Num(double v) implements Node {
        public double eval(Map<String, Double> vars) { return v; }
    }

    private record Var(String name) implements Node {
        public double eval(Map<String, Double> vars) { return vars.get(name); }
    }

    private record Bin(char op, Node a, Node b) implements Node {
        public double eval(Map<String, Double> vars) {
            double x = a.eval(vars), y = b.eval(vars);
            return switch (op) {
                case '+' -> x + y;
                case '-' -> x - y;
                case '*' -> x * y;
                case '/' -> x / y;
                default -> Math.pow(x, y);
            };
        }
    }

    private record Fn(String name, Node a) implements Node {
        public double eval(Map<String, Double> vars) {
            double x = a.eval(vars);
            return switch (name) {
                case "neg" -> -x;
                case "sqrt" -> Math.sqrt(x);
                case "sin" -> Math.sin(x);
                case "cos" -> Math.cos(x);
                case "tan" -> Math.tan(x);
                case "cot" -> 1 / Math.tan(x);
                case "sec" -> 1 / Math.cos(x);
                case "csc" -> 1 / Math.sin(x);
                case "arcsin" -> Math.asin(x);
                case "arccos" -> Math.acos(x);
                case "arctan" -> Math.atan(x);
                case "ln" -> Math.log(x);
                case "log" -> Math.log10(x);
                case "exp" -> Math.exp(x);
                case "abs" -> Math.abs(x);
                case "fact" -> factorial(x);
                case "floor" -> Math.floor(snap(x)); // (\\lfloor \\log_{10} 1000 \\rfloor: ln 1000 / ln 10 is 2.9999999999999996)
                case "ceil" -> Math.ceil(snap(x));
                default -> Double.NaN;
            };
        }
    }

    /** x, or the nearest integer when x is within float rounding of it (so floor and ceil see sympy's exact values). */
    static double snap(double x) {
        double r = Math.rint(x);
        return Math.abs(x - r) <= 1e-9 * Math.max(1, Math.abs(x)) ? r : x;
    }

    static double factorial(double x) {
        if (x < 0 || x != Math.rint(x) || x > 170) return Double.NaN;
        double r = 1;
        for (int i = 2; i <= (int) x; i++) r *= i;
        return r;
    }

    // ---- preprocessing and tokens -----------------------------------------------------------------------------------

    static String clean(String s) { return clean(s, false); }

    /** Spacing and sizing commands out, synonyms unified; the default dialect also drops \mathrm and \mathbf. */
    static String clean(String s, boolean sympy) {
        String t = s;
        for (String[] r : new String[][] {{"\\left", ""}, {"\\right", ""}, {"\\!", ""}, {"\\,", ""}, {"\\;", ""}, {"\\:", ""},
                {"\\ ", ""}, {"\\displaystyle", ""}, {"$", ""}, {"\\dfrac", "\\frac"}, {"\\tfrac", "\\frac"}, {"\\cdot", "*"},
                {"\\times", "*"}, {"\\div", "/"}, {"^\\circ", ""}, {"^{\\circ}", ""}, {"\\%", ""}, {"\\{", "("}, {"\\}", ")"}})
            t = t.replace(r[0], r[1]);
        if (!sympy) t = t.replace("\\mathrm", "").replace("\\mathbf", "");
        return t.strip();
    }

    private static final class Lexer {
        final String s;
        int i;

        Lexer(String s) { this.s = s; }

        void skipSpace() {
            while (i < s.length() && Character.isWhitespace(s.charAt(i))) i++;
        }

        boolean eof() {
            skipSpace();
            return i >= s.length();
        }

        char peek() {
            skipSpace();
            return i < s.length() ? s.charAt(i) : '\0';
        }

        String command() { // after a backslash: letters
            int j = i + 1;
            while (j < s.length() && Character.isLetter(s.charAt(j))) j++;
            return s.substring(i + 1, j);
        }
    }

    // ---- parser -----------------------------------------------------------------------------------------------------

    private static final class Parser {
        final Lexer lx;
        final boolean sympy;
        int depth;

        Parser(String s, boolean sympy) {
            lx = new Lexer(s);
            this.sympy = sympy;
        }

        /** The whole string as one expression; in the sympy dialect its longest parsable prefix (parse_latex, strict=False). */
        Node parseAll() throws ParseError {
            Node n = expr();
            if (!sympy && !lx.eof()) throw new ParseError("unexpected '" + lx.peek() + "' at " + lx.i);
            return n;
        }

        Node expr() throws ParseError {
            if (++depth > 200) throw new ParseError("nesting too deep");
            try {
                Deadline.check();
                Node n = term();
                while (true) {
                    char c = lx.peek();
                    if (c == '+' || c == '-') {
                        int at = lx.i;
                        lx.i++;
                        Node right = orPrefixEnd(at, this::term);
                        if (right == null) break;
                        n = new Bin(c, n, right);
                    } else break;
                }
                return n;
            } finally {
                depth--;
            }
        }

        /** A grammar rule of this parser. */
        interface Rule {
            Node parse() throws ParseError;
        }

        /**
         * {@code rule} for what continues the expression from {@code at} (an operator's right operand, or an implicit
         * product's factor): in the sympy dialect, what cannot be parsed ends the prefix at {@code at} (ANTLR's
         * prediction leaves the loop: "3+" is 3, "2+(1,2)" is 2, "\frac{1}{2}." is 1/2), null then.
         */
        Node orPrefixEnd(int at, Rule rule) throws ParseError {
            try {
                return rule.parse();
            } catch (ParseError e) {
                if (!sympy) throw e;
                lx.i = at;
                return null;
            }
        }

        Node term() throws ParseError {
            Node n = unary();
            while (true) {
                char c = lx.peek();
                if (c == '*' || c == '/') {
                    int at = lx.i;
                    lx.i++;
                    Node right = orPrefixEnd(at, this::unary);
                    if (right == null) break;
                    n = new Bin(c, n, right);
                } else if (startsPrimary(c)) {
                    Node next = orPrefixEnd(lx.i, this::power); // implicit product (as sympy reads "2x" or "2\frac13")
                    if (next == null) break;
                    n = new Bin('*', n, next);
                } else break;
            }
            return n;
        }

        boolean startsPrimary(char c) {
            if (Character.isDigit(c) || Character.isLetter(c) || c == '(' || c == '{' || c == '[' || c == '.') return true;
            if (c == '\\') {
                String cmd = lx.command();
                return !cmd.isEmpty() && !cmd.equals("le") && !cmd.equals("ge") && !cmd.equals("ne") && !cmd.equals("leq")
                        && !cmd.equals("geq") && !cmd.equals("neq") && !cmd.equals("in") && !cmd.equals("cup") && !cmd.equals("pm")
                        && !cmd.equals("rfloor") && !cmd.equals("rceil");
            }
            return false;
        }

        Node unary() throws ParseError {
            char c = lx.peek();
            if (c == '-') {
                lx.i++;
                return new Fn("neg", unary());
            }
            if (c == '+') {
                lx.i++;
                return unary();
            }
            return power();
        }

        Node power() throws ParseError {
            Node base = postfix();
            if (lx.peek() == '^') {
                lx.i++;
                return new Bin('^', base, exponent());
            }
            return base;
        }

        /**
         * After '^': a braced group, a signed factor, or a single character (TeX: x^23 is x^2 times 3); in the sympy
         * dialect a whole number (sympy lexes 2^10 as 2 ** 10).
         */
        Node exponent() throws ParseError {
            char c = lx.peek();
            if (c == '{') return group('{', '}');
            if (c == '-' || c == '+') return unary();
            if (Character.isDigit(c)) {
                if (sympy) return number();
                lx.i++;
                return new Num(c - '0');
            }
            return postfix();
        }

        /**
         * A number at the cursor: digits with at most one '.'; in the sympy dialect also thousands separators
         * (sympy's NUMBER: DIGIT+ (',' DIGIT DIGIT DIGIT)* ('.' DIGIT+)?, so "40,320" is 40320 and "2, 3" is 2).
         */
        Node number() throws ParseError {
            String s = lx.s;
            int j = lx.i;
            StringBuilder num = new StringBuilder();
            while (j < s.length() && Character.isDigit(s.charAt(j))) num.append(s.charAt(j++));
            while (sympy && num.length() > 0 && j < s.length() && s.charAt(j) == ',' && digits(s, j + 1, 3)) {
                num.append(s, j + 1, j + 4);
                j += 4;
            }
            if (j < s.length() && s.charAt(j) == '.') {
                num.append('.');
                j++;
                while (j < s.length() && Character.isDigit(s.charAt(j))) num.append(s.charAt(j++));
            }
            if (!sympy) // (the default reads "1.2.3" whole, and fails on it)
                while (j < s.length() && (Character.isDigit(s.charAt(j)) || s.charAt(j) == '.')) num.append(s.charAt(j++));
            lx.i = j;
            try {
                return new Num(Double.parseDouble(num.toString()));
            } catch (NumberFormatException e) {
                throw new ParseError("bad number " + num);
            }
        }

        private static boolean digits(String s, int from, int n) {
            if (from + n > s.length()) return false;
            for (int k = from; k < from + n; k++) if (!Character.isDigit(s.charAt(k))) return false;
            return true;
        }

        Node postfix() throws ParseError {
            Node n = primary();
            while (lx.peek() == '!') {
                lx.i++;
                n = new Fn("fact", n);
            }
            return n;
        }

        Node group(char open, char close) throws ParseError {
            if (lx.peek() != open) throw new ParseError("expected " + open);
            lx.i++;
            Node n = expr();
            if (lx.peek() != close) throw new ParseError("expected " + close);
            lx.i++;
            return n;
        }

        Node primary() throws ParseError {
            char c = lx.peek();
            if (c == '\0') throw new ParseError("unexpected end");
            if (Character.isDigit(c) || c == '.') return number();
            if (c == '(') return group('(', ')');
            if (c == '{') return group('{', '}');
            if (c == '[') return group('[', ']');
            if (Character.isLetter(c)) {
                lx.i++;
                String name = String.valueOf(c);
                if (lx.peek() == '_') { // subscripted variable x_1, x_{12}
                    lx.i++;
                    if (lx.peek() == '{') {
                        int j = lx.s.indexOf('}', lx.i);
                        if (j < 0) throw new ParseError("unclosed subscript");
                        name += "_" + lx.s.substring(lx.i + 1, j);
                        lx.i = j + 1;
                    } else if (!lx.eof()) name += "_" + lx.s.charAt(lx.i++);
                }
                return new Var(name);
            }
            if (c == '\\') {
                String cmd = lx.command();
                lx.i += 1 + cmd.length();
                switch (cmd) {
                    case "frac", "cfrac" -> {
                        Node a = arg(), b = arg();
                        return new Bin('/', a, b);
                    }
                    case "sqrt" -> {
                        Node index = null;
                        if (lx.peek() == '[') index = group('[', ']');
                        Node x = arg();
                        return index == null ? new Fn("sqrt", x) : new Bin('^', x, new Bin('/', new Num(1), index));
                    }
                    case "pi" -> { return sympy ? new Var("pi") : new Num(Math.PI); } // (sympy's parser: Symbol('pi'))
                    case "sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "ln", "log", "exp" -> {
                        Node base = null;
                        if (cmd.equals("log") && lx.peek() == '_') { // \log_b x = ln x / ln b
                            lx.i++;
                            base = arg();
                        }
                        // (sympy's \log is the natural log)
                        String fn = base != null || (cmd.equals("log") && sympy) ? "ln" : cmd;
                        Node f;
                        if (lx.peek() == '^') { // \sin^2 x = (\sin x)^2
                            lx.i++;
                            Node ex = exponent();
                            f = new Bin('^', new Fn(fn, power()), ex);
                        } else f = new Fn(fn, power());
                        return base == null ? f : new Bin('/', f, new Fn("ln", base));
                    }
                    case "lfloor", "lceil" -> {
                        Node x = expr();
                        String close = cmd.equals("lfloor") ? "rfloor" : "rceil";
                        if (lx.peek() != '\\' || !lx.command().equals(close)) throw new ParseError("unclosed \\" + cmd);
                        lx.i += 1 + close.length();
                        return new Fn(cmd.equals("lfloor") ? "floor" : "ceil", x);
                    }
                    case "text", "textbf", "mbox", "operatorname", "mathrm", "mathbf" -> {
                        // sympy reads \text{(C)} as the product of a symbol "text" and C; the default, as its content
                        return sympy ? new Bin('*', new Var(cmd), arg()) : arg();
                    }
                    case "binom", "dbinom", "tbinom" -> {
                        Node n = arg(), k = arg();
                        return new Binom(n, k);
                    }
                    default -> throw new ParseError("unsupported \\" + cmd);
                }
            }
            if (c == '|') {
                lx.i++;
                Node n = expr();
                if (lx.peek() != '|') throw new ParseError("unclosed |");
                lx.i++;
                return new Fn("abs", n);
            }
            throw new ParseError("unexpected '" + c + "'");
        }

        /** A TeX argument: a braced group or a single character (\frac12). */
        Node arg() throws ParseError {
            char c = lx.peek();
            if (c == '{') return group('{', '}');
            if (Character.isDigit(c)) {
                lx.i++;
                return new Num(c - '0');
            }
            if (Character.isLetter(c)) {
                lx.i++;
                return new Var(String.valueOf(c));
            }
            return primary();
        }
    }

    private record Binom(Node n, Node k) implements Node {
        public double eval(Map<String, Double> vars) {
            double a = n.eval(vars), b = k.eval(vars);
            if (a != Math.rint(a) || b != Math.rint(b) || b < 0 || a < b) return Double.NaN;
            double r = 1;
            for (int i = 1; i <= (int) b; i++) r = r * (a - b + i) / i;
            return Math.rint(r);
        }
    }

    static Node parse(String s) throws ParseError { return parse(s, false); }

    static Node parse(String s, boolean sympy) throws ParseError {
        String c = clean(s, sympy);
        if (c.isEmpty()) throw new ParseError("empty");
        for (String bad : new String[] {"=", "<", ">", "\\le", "\\ge", "\\ne", "\\infty", "\\in", "\\cup", "\\pm"})
            if (c.contains(bad)) throw new ParseError("not an expression: " + bad);
        return new Parser(c, sympy).parseAll();
    }

    static void vars(Node n, java.util.Set<String> out) {
        if (n instanceof Var v) out.add(v.name());
        else if (n instanceof Bin b) {
            vars(b.a(), out);
            vars(b.b(), out);
        } else if (n instanceof Fn f) vars(f.a(), out);
        else if (n instanceof Binom bn) {
            vars(bn.n(), out);
            vars(bn.k(), out);
        }
    }

    /** Numeric equivalence of two parsed expressions. */
    static boolean equivalent(Node a, Node b) {
        java.util.Set<String> names = new java.util.TreeSet<>();
        vars(a, names);
        vars(b, names);
        if (names.isEmpty()) return close(a.eval(Map.of()), b.eval(Map.of()));
        SplittableRandom r = new SplittableRandom(names.hashCode());
        int valid = 0;
        for (int t = 0; t < 12 && valid < 6; t++) {
            Map<String, Double> v = new TreeMap<>();
            for (String n : names) v.put(n, 0.3 + 2.2 * r.nextDouble());
            double x = a.eval(v), y = b.eval(v);
            if (!Double.isFinite(x) && !Double.isFinite(y)) continue;
            if (!close(x, y)) return false;
            valid++;
        }
        return valid > 0;
    }

    static boolean close(double x, double y) {
        if (!Double.isFinite(x) || !Double.isFinite(y)) return false;
        return Math.abs(x - y) <= 1e-9 * Math.max(1, Math.max(Math.abs(x), Math.abs(y)));
    }

    /** Splits on top-level commas (outside brackets/braces). */
    static List<String> topLevelCommas(String s) {
        List<String> out = new ArrayList<>();
        int depth = 0, start = 0;
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c == '(' || c == '[' || c == '{') depth++;
            else if (c == ')' || c == ']' || c == '}') depth--;
            else if (c == ',' && depth == 0) {
                out.add(s.substring(start, i));
                start = i + 1;
            }
        }
        out.add(s.substring(start));
        return out;
    }

    /** A number written with thousands separators, e.g. "40,320" or "1,000.5" (after {@link #clean}; "0,125" is not one). */
    private static final java.util.regex.Pattern THOUSANDS = java.util.regex.Pattern.compile("[-+]?[1-9]\\d{0,2}(,\\d{3})+(\\.\\d+)?");

    /**
     * Whether two answers are equivalent. With {@code tuples} (the default dialect), "(1, 2)" or "1, 2" compares
     * element-wise (outer parentheses/brackets dropped), a number with thousands separators ("40,\\!320") being one
     * number; without (the sympy dialect of the reference), each answer is read as sympy's parse_latex reads it (see
     * the class comment): a comma ends the expression unless it separates thousands.
     */
    static boolean equivalent(String a, String b, boolean tuples) {
        try {
            if (tuples) {
                String ca = clean(a), cb = clean(b);
                if (THOUSANDS.matcher(ca).matches()) ca = ca.replace(",", "");
                if (THOUSANDS.matcher(cb).matches()) cb = cb.replace(",", "");
                List<String> xa = topLevelCommas(unwrap(ca)), xb = topLevelCommas(unwrap(cb));
                if (xa.size() > 1 || xb.size() > 1) {
                    if (xa.size() != xb.size()) return false;
                    for (int i = 0; i < xa.size(); i++) if (!equivalent(parse(xa.get(i)), parse(xb.get(i)))) return false;
                    return true;
                }
                return equivalent(parse(ca), parse(cb));
            }
            return equivalent(parse(a, true), parse(b, true));
        } catch (ParseError e) {
            return false;
        }
    }

    private static String unwrap(String s) {
        String t = s.strip();
        if (t.length() >= 2 && (t.charAt(0) == '(' || t.charAt(0) == '[') && (t.endsWith(")") || t.endsWith("]"))) {
            // only when the outer pair encloses everything
            int depth = 0;
            for (int i = 0; i < t.length(); i++) {
                char c = t.charAt(i);
                if (c == '(' || c == '[') depth++;
                else if (c == ')' || c == ']') depth--;
                if (depth == 0 && i < t.length() - 1) return t;
            }
            return t.substring(1, t.length() - 1);
        }
        return t;
    }
}
