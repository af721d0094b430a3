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
                default -> Double.NaN;
            };
        }
    }

    static double factorial(double x) {
        if (x < 0 || x != Math.rint(x) || x > 170) return Double.NaN;
        double r = 1;
        for (int i = 2; i <= (int) x; i++) r *= i;
        return r;
    }

    // ---- preprocessing and tokens -----------------------------------------------------------------------------------

    static String clean(String s) {
        String t = s;
        for (String[] r : new String[][] {{"\\left", ""}, {"\\right", ""}, {"\\!", ""}, {"\\,", ""}, {"\\;", ""}, {"\\:", ""},
                {"\\ ", ""}, {"\\displaystyle", ""}, {"$", ""}, {"\\dfrac", "\\frac"}, {"\\tfrac", "\\frac"}, {"\\cdot", "*"},
                {"\\times", "*"}, {"\\div", "/"}, {"^\\circ", ""}, {"^{\\circ}", ""}, {"\\%", ""}, {"\\{", "("}, {"\\}", ")"},
                {"\\lfloor", ""}, {"\\rfloor", ""}, {"\\mathrm", ""}, {"\\mathbf", ""}}) t = t.replace(r[0], r[1]);
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
        int depth;

        Parser(String s) { lx = new Lexer(s); }

        Node parseAll() throws ParseError {
            Node n = expr();
            if (!lx.eof()) throw new ParseError("unexpected '" + lx.peek() + "' at " + lx.i);
            return n;
        }

        Node expr() throws ParseError {
            if (++depth > 200) throw new ParseError("nesting too deep");
            Deadline.check();
            Node n = term();
            while (true) {
                char c = lx.peek();
                if (c == '+' || c == '-') {
                    lx.i++;
                    n = new Bin(c, n, term());
                } else break;
            }
            depth--;
            return n;
        }

        Node term() throws ParseError {
            Node n = unary();
            while (true) {
                char c = lx.peek();
                if (c == '*' || c == '/') {
                    lx.i++;
                    n = new Bin(c, n, unary());
                } else if (startsPrimary(c)) {
                    n = new Bin('*', n, power()); // implicit product (as sympy reads "2x" or "2\frac13")
                } else break;
            }
            return n;
        }

        boolean startsPrimary(char c) {
            if (Character.isDigit(c) || Character.isLetter(c) || c == '(' || c == '{' || c == '[' || c == '.') return true;
            if (c == '\\') {
                String cmd = lx.command();
                return !cmd.isEmpty() && !cmd.equals("le") && !cmd.equals("ge") && !cmd.equals("ne") && !cmd.equals("leq")
                        && !cmd.equals("geq") && !cmd.equals("neq") && !cmd.equals("in") && !cmd.equals("cup") && !cmd.equals("pm");
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

        /** After '^': a braced group, a signed factor, or a single character (TeX: x^23 is x^2 times 3). */
        Node exponent() throws ParseError {
            char c = lx.peek();
            if (c == '{') return group('{', '}');
            if (c == '-' || c == '+') return unary();
            if (Character.isDigit(c)) {
                lx.i++;
                return new Num(c - '0');
            }
            return postfix();
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
            if (Character.isDigit(c) || c == '.') {
                int j = lx.i;
                while (j < lx.s.length() && (Character.isDigit(lx.s.charAt(j)) || lx.s.charAt(j) == '.')) j++;
                String num = lx.s.substring(lx.i, j);
                lx.i = j;
                try {
                    return new Num(Double.parseDouble(num));
                } catch (NumberFormatException e) {
                    throw new ParseError("bad number " + num);
                }
            }
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
                    case "pi" -> { return new Num(Math.PI); }
                    case "sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "ln", "log", "exp" -> {
                        if (lx.peek() == '^') { // \sin^2 x = (\sin x)^2
                            lx.i++;
                            Node ex = exponent();
                            return new Bin('^', new Fn(cmd, power()), ex);
                        }
                        return new Fn(cmd, power());
                    }
                    case "text", "textbf", "mbox", "operatorname" -> { return arg(); }
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

    static Node parse(String s) throws ParseError {
        String c = clean(s);
        if (c.isEmpty()) throw new ParseError("empty");
        for (String bad : new String[] {"=", "<", ">", "\\le", "\\ge", "\\ne", "\\infty", "\\in", "\\cup", "\\pm"})
            if (c.contains(bad)) throw new ParseError("not an expression: " + bad);
        return new Parser(c).parseAll();
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

    /**
     * Whether two answers are equivalent. With {@code tuples}, "(1, 2)" or "1, 2" compares element-wise (outer
     * parentheses/brackets dropped); without, commas make the answer unparseable (as in the reference).
     */
    static boolean equivalent(String a, String b, boolean tuples) {
        try {
            if (tuples) {
                List<String> xa = topLevelCommas(unwrap(clean(a))), xb = topLevelCommas(unwrap(clean(b)));
                if (xa.size() > 1 || xb.size() > 1) {
                    if (xa.size() != xb.size()) return false;
                    for (int i = 0; i < xa.size(); i++) if (!equivalent(parse(xa.get(i)), parse(xb.get(i)))) return false;
                    return true;
                }
            }
            if (a.contains(",") || b.contains(",")) return false;
            return equivalent(parse(a), parse(b));
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
