package org.grpo4j.internal.reward;

import org.grpo4j.reward.Compat;
import org.grpo4j.reward.Rewards;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.json.JsonMapper;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The 25 IFEval-taxonomy constraint checks of grpo-reference.md section 6.3, called the reference's way: the ground
 * truth is JSON {func_name, args...}; func_name is popped, null arguments dropped, and the function runs on the stripped
 * response (or on the raw response when the JSON had no other key). A missing func_name gives false; an unknown
 * function, a missing or mistyped argument, or a ValueError inside a check is an exception (scored 0 and counted by
 * {@link Rewards}; the reference would crash).
 *
 * <p>Default semantics fix the reference's known bugs: placeholders really need N [..] spans (3f37c29 always passes),
 * the choice check asks that the response contain an option (3f37c29 asks the response to be a substring of one),
 * "around N" capital words allow max(round(0.1 N), 1) (3f37c29: exactly N), and response_language runs langdetect
 * (at 3f37c29 the module is missing, so it raises).
 */
final class IfEval {
    private IfEval() {}

    private static final ObjectMapper JSON = new ObjectMapper();
    /** Python json.loads accepts NaN/Infinity and rejects trailing data. */
    private static final ObjectMapper STRICT_JSON = JsonMapper.builder()
            .enable(com.fasterxml.jackson.core.json.JsonReadFeature.ALLOW_NON_NUMERIC_NUMBERS)
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS).build();

    static boolean verify(String response, String groundTruth, Compat compat) throws Exception {
        JsonNode gt;
        try {
            gt = JSON.readTree(groundTruth);
        } catch (Exception e) {
            throw new IllegalArgumentException("ifeval ground truth is not JSON: " + groundTruth);
        }
        if (gt == null || !gt.isObject()) throw new IllegalArgumentException("ifeval ground truth must be a JSON object: " + groundTruth);
        if (!gt.has("func_name")) return false;
        String func = gt.get("func_name").asText();
        java.util.Map<String, JsonNode> args = new java.util.LinkedHashMap<>();
        int keys = 0;
        for (Iterator<Map.Entry<String, JsonNode>> it = gt.fields(); it.hasNext(); ) {
            var e = it.next();
            if (e.getKey().equals("func_name")) continue;
            keys++;
            if (!e.getValue().isNull()) args.put(e.getKey(), e.getValue());
        }
        String answer = PyStr.strip(lastPiece(response, "<|assistant|>\n"));
        String text = keys == 0 ? response : answer;
        return call(func, text, args, compat);
    }

    private static final Pattern PY_STR_ITEM = Pattern.compile("\\s*('((?:[^'\\\\]|\\\\.)*)'|\"((?:[^\"\\\\]|\\\\.)*)\")\\s*(,|$)", Pattern.DOTALL);

    /**
     * The strings of a Python tuple or list literal of string literals ("('a', \"b\")", "['a']"), escapes \\, \' and
     * \" undone; null when {@code s} is not one.
     */
    static List<String> pyStringSequence(String s) {
        String t = s.strip();
        if (t.length() < 2 || !((t.startsWith("(") && t.endsWith(")")) || (t.startsWith("[") && t.endsWith("]")))) return null;
        String body = t.substring(1, t.length() - 1);
        if (body.isBlank()) return null;
        List<String> out = new ArrayList<>();
        Matcher m = PY_STR_ITEM.matcher(body);
        int at = 0;
        while (at < body.length()) {
            if (!m.find(at) || m.start() != at) return null;
            String raw = m.group(2) != null ? m.group(2) : m.group(3);
            out.add(raw.replaceAll("\\\\(.)", "$1"));
            at = m.end();
            if (m.group(4).isEmpty()) break;
            if (body.substring(at).isBlank()) break;  // a trailing comma: ('a',)
        }
        return out.isEmpty() || !body.substring(at).isBlank() ? null : out;
    }

    /**
     * Whether every non-numeric number in {@code json} (already parsed) is one Python's json.loads reads: NaN, Infinity
     * or -Infinity; Jackson's ALLOW_NON_NUMERIC_NUMBERS also takes +Infinity, +INF and -INF.
     */
    private static boolean pythonNonNumerics(String json) throws java.io.IOException {
        try (com.fasterxml.jackson.core.JsonParser p = STRICT_JSON.getFactory().createParser(json)) {
            for (com.fasterxml.jackson.core.JsonToken t; (t = p.nextToken()) != null; )
                if (t == com.fasterxml.jackson.core.JsonToken.VALUE_NUMBER_FLOAT && p.isNaN()
                        && !List.of("NaN", "Infinity", "-Infinity").contains(p.getText())) return false;
        }
        return true;
    }

    private static String lastPiece(String s, String sep) {
        int i = s.lastIndexOf(sep);
        return i < 0 ? s : s.substring(i + sep.length());
    }

    /** The Python call func(text, **args): every parameter must be given, no unknown keyword allowed. */
    private static final class Args {
        final String func;
        final Map<String, JsonNode> a;
        final java.util.Set<String> used = new java.util.HashSet<>();

        Args(String func, Map<String, JsonNode> a) {
            this.func = func;
            this.a = a;
        }

        JsonNode get(String k) {
            JsonNode v = a.get(k);
            if (v == null) throw new IllegalArgumentException("TypeError: " + func + "() missing required argument '" + k + "'");
            used.add(k);
            return v;
        }

        int integer(String k) {
            JsonNode v = get(k);
            if (!v.isIntegralNumber()) throw new IllegalArgumentException("TypeError: " + func + "() argument " + k + " must be an int, got " + v);
            return v.asInt();
        }

        String str(String k) {
            JsonNode v = get(k);
            if (!v.isTextual()) throw new IllegalArgumentException("TypeError: " + func + "() argument " + k + " must be a str, got " + v);
            return v.asText();
        }

        /** A list argument; a JSON string iterates its characters, as Python does. */
        List<String> list(String k) {
            JsonNode v = get(k);
            List<String> out = new ArrayList<>();
            if (v.isTextual()) v.asText().codePoints().forEach(c -> out.add(new String(Character.toChars(c))));
            else if (v.isArray()) for (JsonNode x : v) out.add(x.isTextual() ? x.asText() : x.toString());
            else throw new IllegalArgumentException("TypeError: " + func + "() argument " + k + " is not iterable: " + v);
            return out;
        }

        /**
         * The options of the choice check, as its intended semantics read them: a list's elements; a string that is a
         * Python tuple or list of string literals ("('My answer is yes.', 'My answer is no.')"), its strings; any other
         * string, one option (iterated, its characters would each be an option: nearly every response would pass).
         */
        List<String> options(String k) {
            JsonNode v = get(k);
            if (!v.isTextual()) return list(k);
            List<String> lit = pyStringSequence(v.asText());
            return lit != null ? lit : List.of(v.asText());
        }

        void noExtra() {
            for (String k : a.keySet())
                if (!used.contains(k)) throw new IllegalArgumentException("TypeError: " + func + "() got an unexpected keyword argument '" + k + "'");
        }
    }

    private static final int U = Pattern.UNICODE_CHARACTER_CLASS;
    /**
     * Python's \w on str: letters, numbers and '_' (str.isalnum). Java's Unicode \w also takes combining marks,
     * joiners and other connector punctuation but not No / Nl numbers (x\u00b2 is one word to Python, "x" to Java).
     */
    static final String PY_W = "[\\p{L}\\p{N}_]";
    /** Python's \s on str: Java's Unicode white space plus the separators \x1c-\x1f (str.isspace). */
    static final String PY_S = "[\\s\\x1c-\\x1f]";
    private static final Pattern WORDS = Pattern.compile("(?<!" + PY_W + ")" + PY_W + "+(?!" + PY_W + ")");
    private static final String SENTENCE_END_REF = "(?<!" + PY_W + "\\." + PY_W + ".)(?<![A-Z][a-z]\\.)(?<=\\.|\\?)" + PY_S;
    private static final Pattern SENTENCE_SPLIT = Pattern.compile(SENTENCE_END_REF, U | Pattern.UNIX_LINES);
    /** The default semantics: '!' ends a sentence too (open-instruct #1612). */
    private static final Pattern SENTENCE_SPLIT_FIXED = Pattern.compile(SENTENCE_END_REF.replace("(?<=\\.|\\?)", "(?<=\\.|\\?|!)"),
            U | Pattern.UNIX_LINES);
    private static final Pattern PLACEHOLDER = Pattern.compile("\\[(.*?)\\]", Pattern.UNIX_LINES);
    private static final Pattern TITLE = Pattern.compile("<<(.*?)>>", Pattern.UNIX_LINES);
    private static final Pattern HIGHLIGHT = Pattern.compile("\\*(.*?)\\*", Pattern.UNIX_LINES);
    private static final Pattern CAPITAL_WORD = Pattern.compile("(?<!" + PY_W + ")[A-Z]+(?!" + PY_W + ")");

    static boolean call(String func, String text, Map<String, JsonNode> raw, Compat compat) throws Exception {
        Args a = new Args(func, raw);
        boolean r = switch (func) {
            case "verify_keywords" -> {
                List<String> kws = a.list("keyword_list");
                String low = text.toLowerCase(Locale.ROOT);
                yield kws.stream().allMatch(k -> low.contains(k.toLowerCase(Locale.ROOT)));
            }
            case "verify_keyword_frequency" -> {
                String word = a.str("word").toLowerCase(Locale.ROOT);
                int n = a.integer("N");
                Matcher m = WORDS.matcher(Deadline.wrap(text.toLowerCase(Locale.ROOT)));
                int c = 0;
                while (m.find()) if (m.group().equals(word)) c++;
                yield c == n;
            }
            case "validate_forbidden_words" -> {
                List<String> ws = a.list("forbidden_words");
                String low = text.toLowerCase(Locale.ROOT);
                yield ws.stream().noneMatch(w -> low.contains(w.toLowerCase(Locale.ROOT)));
            }
            case "verify_letter_frequency" -> {
                String letter = a.str("letter");
                int n = a.integer("N");
                if (PyStr.len(letter) != 1) throw new IllegalArgumentException("ValueError: Letter parameter must be a single character");
                yield PyStr.count(text, letter) == n;
            }
            case "validate_response_language" -> {
                String lang = a.str("language");
                if (compat == Compat.OPEN_INSTRUCT_3F37C29)
                    throw new IllegalStateException("ModuleNotFoundError: langdetect is not installed at open-instruct 3f37c29");
                yield Language.detectIs(text, lang);
            }
            case "verify_paragraph_count" -> {
                int n = a.integer("N");
                StringBuilder sb = new StringBuilder();
                List<String> lines = PyStr.splitlines(text);
                for (int i = 0; i < lines.size(); i++) sb.append(i > 0 ? "\n" : "").append(PyStr.strip(lines.get(i)));
                String t = PyStr.strip(sb.toString());
                String[] ps = t.split(Pattern.quote("* * *"), -1);
                boolean allNonEmpty = true;
                for (String p : ps) allNonEmpty &= !PyStr.strip(p).isEmpty();
                yield allNonEmpty && ps.length == n;
            }
            case "validate_word_constraint" -> {
                int n = a.integer("N");
                String q = a.str("quantifier");
                int c = PyStr.countWhitespaceWords(text);
                long tol = Math.max(PyStr.round(n * 0.1), 1);
                yield switch (q) {
                    case "at least" -> c >= n;
                    case "at most" -> c <= n;
                    case "around" -> Math.abs(c - n) <= tol;
                    default -> false;
                };
            }
            case "verify_sentence_constraint" -> {
                int n = a.integer("N");
                String q = a.str("quantifier");
                int c = (compat == Compat.OPEN_INSTRUCT_3F37C29 ? SENTENCE_SPLIT : SENTENCE_SPLIT_FIXED).split(Deadline.wrap(text), -1).length;
                yield switch (q) {
                    case "at least" -> c >= n;
                    case "around" -> Math.abs(c - n) <= 1;
                    case "at most" -> c <= n;
                    default -> false;
                };
            }
            case "validate_paragraphs" -> {
                int n = a.integer("N");
                String first = a.str("first_word");
                int i = a.integer("i");
                String[] ps = text.split("\n\n", -1);
                if (ps.length != n) yield false;
                int idx = i - 1 < 0 ? ps.length + (i - 1) : i - 1; // Python negative indexing
                if (idx < 0 || idx >= ps.length) throw new IllegalArgumentException("IndexError: list index out of range");
                yield PyStr.strip(ps[idx]).startsWith(first);
            }
            case "verify_postscript" -> {
                String marker = a.str("postscript_marker");
                int idx = text.indexOf(marker);
                yield idx >= 0 && PyStr.len(PyStr.strip(text.substring(idx))) > PyStr.len(marker);
            }
            case "validate_placeholders" -> {
                int n = a.integer("N");
                if (compat == Compat.OPEN_INSTRUCT_3F37C29) yield true; // returns the tuple (has_enough, list): always truthy
                Matcher m = PLACEHOLDER.matcher(Deadline.wrap(text));
                int c = 0;
                while (m.find()) c++;
                yield c >= n;
            }
            case "verify_bullet_points" -> {
                int n = a.integer("N");
                int c = 0;
                for (String line : text.split("\n", -1)) {
                    String s = PyStr.strip(line);
                    if (s.startsWith("*") || s.startsWith("-")) c++;
                }
                yield c == n;
            }
            case "validate_title" -> TITLE.matcher(Deadline.wrap(text)).find();
            case "validate_choice" -> {
                if (compat == Compat.OPEN_INSTRUCT_3F37C29) {
                    List<String> opts = a.list("options");
                    yield opts.stream().anyMatch(o -> o.contains(text));
                }
                yield a.options("options").stream().anyMatch(text::contains);
            }
            case "validate_highlighted_sections" -> {
                int n = a.integer("N");
                Matcher m = HIGHLIGHT.matcher(Deadline.wrap(text));
                int c = 0;
                while (m.find()) c++;
                yield c >= n;
            }
            case "validate_sections" -> {
                int n = a.integer("N");
                String sp = a.str("section_splitter");
                if (sp.isEmpty()) throw new IllegalArgumentException("ValueError: empty separator");
                List<String> secs = new ArrayList<>(List.of(text.split(Pattern.quote(sp), -1)));
                if (secs.get(0).isEmpty()) secs.remove(0);
                yield secs.size() == n;
            }
            case "validate_json_format" -> {
                try {
                    STRICT_JSON.readTree(text);
                    yield !PyStr.strip(text).isEmpty() && pythonNonNumerics(text);
                } catch (Exception e) {
                    yield false;
                }
            }
            case "validate_repeat_prompt" -> text.startsWith(a.str("original_prompt"));
            case "validate_two_responses" -> {
                if (PyStr.count(text, "******") != 1) yield false;
                int k = text.indexOf("******");
                yield !PyStr.strip(text.substring(0, k)).equals(PyStr.strip(text.substring(k + 6)));
            }
            case "validate_uppercase" -> text.equals(text.toUpperCase(Locale.ROOT));
            case "validate_lowercase" -> text.equals(text.toLowerCase(Locale.ROOT));
            case "validate_frequency_capital_words" -> {
                int n = a.integer("N");
                String q = a.str("quantifier");
                Matcher m = CAPITAL_WORD.matcher(Deadline.wrap(text));
                int c = 0;
                while (m.find()) c++;
                yield switch (q) {
                    case "at least" -> c >= n;
                    case "around" -> compat == Compat.OPEN_INSTRUCT_3F37C29 ? c == n : Math.abs(c - n) <= Math.max(PyStr.round(n * 0.1), 1);
                    case "at most" -> c <= n;
                    default -> false;
                };
            }
            case "validate_end" -> text.endsWith(a.str("end_phrase"));
            case "validate_quotation" -> text.startsWith("\"") && text.endsWith("\"");
            case "validate_no_commas" -> !text.contains(",");
            default -> throw new IllegalArgumentException("KeyError: unknown IFEval function '" + func + "'");
        };
        a.noExtra();
        return r;
    }

    /** The 25 function names. */
    static final List<String> FUNCTIONS = List.of("verify_keywords", "verify_keyword_frequency", "validate_forbidden_words",
            "verify_letter_frequency", "validate_response_language", "verify_paragraph_count", "validate_word_constraint",
            "verify_sentence_constraint", "validate_paragraphs", "verify_postscript", "validate_placeholders", "verify_bullet_points",
            "validate_title", "validate_choice", "validate_highlighted_sections", "validate_sections", "validate_json_format",
            "validate_repeat_prompt", "validate_two_responses", "validate_uppercase", "validate_lowercase",
            "validate_frequency_capital_words", "validate_end", "validate_quotation", "validate_no_commas");
}
