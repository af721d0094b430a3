package org.grpo4j.internal.reward;

import org.grpo4j.reward.Compat;
import org.grpo4j.reward.Rewards;
import static org.junit.jupiter.api.Assertions.*;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Verdicts derived from the rules in grpo-reference.md section 6 (and the reference code's documented quirks), in
 * both semantics: the default (bugs fixed) and open-instruct-3f37c29 (bugs kept). One row per case.
 */
class VerifierCasesTest {
    static final boolean T = true, F = false;
    static Rewards fixed, compat;

    @BeforeAll
    static void open() {
        fixed = new Rewards(Compat.DEFAULT, 10, 5, 2);
        compat = new Rewards(Compat.OPEN_INSTRUCT_3F37C29, 10, 5, 2);
    }

    @AfterAll
    static void close() {
        fixed.close();
        compat.close();
    }

    record Case(String dataset, String gt, String response, boolean fixedOk, boolean compatOk, String note) {}

    static final List<Case> CASES = new ArrayList<>();

    static void c(String ds, String gt, String resp, boolean f, boolean co, String note) { CASES.add(new Case(ds, gt, resp, f, co, note)); }

    static void c(String ds, String gt, String resp, boolean both, String note) { c(ds, gt, resp, both, both, note); }

    /** IFEval ground truth with every schema key present (nulls for the unused ones), as in the dataset. */
    static String ifgt(String func, Object... kv) {
        ObjectNode o = new ObjectMapper().createObjectNode();
        o.put("func_name", func);
        for (String k : List.of("N", "quantifier", "end_phrase", "keyword_list", "word", "forbidden_words", "letter", "i", "first_word",
                "postscript_marker", "options", "section_splitter", "original_prompt")) o.putNull(k);
        for (int i = 0; i < kv.length; i += 2) o.putPOJO((String) kv[i], kv[i + 1]);
        return o.toString();
    }

    static void i(String func, String resp, boolean f, boolean co, String note, Object... kv) { c("ifeval", ifgt(func, kv), resp, f, co, note); }

    static void i(String func, String resp, boolean both, String note, Object... kv) { i(func, resp, both, both, note, kv); }

    static {
        // ---- GSM8K ----
        c("gsm8k", "72", "So the answer is 72.", T, "last number");
        c("gsm8k", "1234", "The answer is 1,234 apples", T, "thousands separator");
        c("gsm8k", "1234567", "1,234,567", T, "separators removed pairwise");
        c("gsm8k", "-5", "It drops to -5 degrees.", T, F, "negative integers keep their sign (fixed)");
        c("gsm8k", "5", "It drops to -5 degrees.", F, T, "3f37c29: integers lose the sign");
        c("gsm8k", "-3.5", "x = -3.5", T, "decimals keep the sign in both");
        c("gsm8k", "18", "18.00", F, "string comparison: 18.00 != 18");
        c("gsm8k", "no numbers here", "no numbers here", T, "no number: the whole response is compared");
        c("gsm8k", "42", "The answer is 42. Actually 43.", F, "the last number counts");
        c("gsm8k", "+7", "+7", F, "an explicit plus sign is not kept (3f37c29: an integer's sign never is)");
        c("gsm8k", "7", "So the change is +7", T, "+7 extracts 7 in both");
        c("gsm8k", ".5", "answer: 0.5", F, "0.5 is extracted whole");
        c("gsm8k", "\u0663", "\u0663", T, "Unicode digits are digits (Python \\d)");
        c("gsm8k", "1000", "12 and 1,000", T, "last of several");
        c("gsm8k", "abc", "ANSWER IS ABC", F, "whole response lower-cased");
        c("gsm8k", "ABC", "abc", T, "case-insensitive");
        c("gsm8k", "3", "1,2,3", T, "1,2,3 -> 12,3: last number 3");
        c("gsm8k", "123", "1,2,3", F, "non-overlapping separator removal");
        c("gsm8k", "1000.50", "$1,000.50", T, "decimal after separator removal");
        c("gsm8k", "7", "The result is 007", F, "leading zeros kept");
        c("gsm8k", "-0.5", "-0.5", T, "negative decimal");
        c("gsm8k", "2", "5-3=2", T, "equation: last number");
        c("gsm8k", "-3", "5-3", F, "a minus right after a digit is a subtraction, not a sign (fixed mode too)");
        c("gsm8k", "10", "Each visit lasts 5-10", T, "a range ends in 10, not -10");
        c("gsm8k", "-10", "from 5 to -10", T, F, "a minus after a space is a sign (fixed mode)");
        c("gsm8k", "-2", "x=-2", T, F, "a minus after '=' is a sign (fixed mode)");
        c("gsm8k", "6", "10 - 4 = 6.", T, "trailing period");
        c("gsm8k", "5", "1e5", T, "no exponent syntax: 1 and 5");
        c("gsm8k", "", "", T, "empty equals empty");
        // ---- MATH ----
        c("MATH", "\\frac{1}{2}", "\\boxed{\\frac{1}{2}}", T, "boxed exact");
        c("math", "\\frac{1}{2}", "\\boxed{0.5}", T, "0.5 -> \\frac{1}{2}");
        c("MATH", "\\frac{1}{2}", "\\boxed{\\dfrac{1}{2}}", T, "dfrac");
        c("MATH", "\\frac{1}{2}", "\\boxed{\\frac12}", T, "\\frac12 shorthand");
        c("MATH", "\\frac{5}{6}", "Final Answer: The final answer is $\\frac{5}{6}$. I hope it is correct.", T, "Minerva format");
        c("MATH", "720", "Final Answer: The final answer is 720. I hope it is correct.", T, "Minerva plain");
        c("MATH", "42", "The answer is $42$.", T, "last $...$ pair");
        c("MATH", "42", "The answer is 42", F, "whole output normalized: no match");
        c("MATH", "5\\sqrt{2}", "\\boxed{\\sqrt{50}}", T, "symbolic: sqrt 50 = 5 sqrt 2");
        c("MATH", "\\pi \\cdot 2", "\\boxed{2\\pi}", T, "symbolic: 2 pi");
        c("MATH", "x^2+2x+1", "\\boxed{(x+1)^2}", T, "symbolic: polynomial identity");
        c("MATH", "\\frac{1}{2}", "\\boxed{\\frac{1}{3}}", F, "different values");
        c("MATH", "3,4", "\\boxed{3, 4}", T, "strip_string removes spaces");
        c("MATH", "\\left(3,\\frac\\pi2\\right)", "\\boxed{(3, \\frac{\\pi}{2})}", T, F, "tuples compare element-wise (fixed)");
        c("MATH", "7", "\\fbox{7}", T, F, "\\fbox is found but not unwrapped at 3f37c29");
        c("MATH", "5", "so \\boxed 5$ done", T, "\\boxed followed by a space");
        c("MATH", "\\text{(A)}", "\\boxed{\\text{(A)}}", T, "text answers compare as strings");
        c("MATH", "10", "x = \\boxed{10}", T, "boxed inside an equation");
        c("MATH", "4", "first \\boxed{3} then \\boxed{4}", T, "the last box");
        c("MATH", "3", "first \\boxed{3} then \\boxed{4}", F, "only the last box counts");
        c("MATH", "10", "\\boxed{10\\%}", T, "percent removed");
        c("MATH", "90", "\\boxed{90^\\circ}", T, "degrees removed");
        c("MATH", "5", "\\boxed{\\$5}", T, "dollar removed");
        c("MATH", "5", "\\boxed{x=5}", T, "short x= prefix dropped");
        c("MATH", "\\frac{1}{2}", "\\boxed{1/2}", T, "a/b -> \\frac{a}{b}");
        c("MATH", "\\frac{a}{b}", "\\boxed{a/b}", T, "symbolic a/b (strip_string raises on int('a'))");
        c("MATH", "\\frac{1}{2}", "\\boxed{.5}", T, ".5 -> 0.5 -> 1/2");
        c("MATH", "(1,2)", "\\boxed{\\left( 1, 2 \\right)}", T, "left/right and spaces removed");
        c("MATH", "5", "\\boxed{5 \\text{ cm}}", T, "units on the right removed");
        c("MATH", "\\infty", "\\boxed{\\infty}", T, "string equality");
        c("MATH", "\\infty", "\\boxed{-\\infty}", F, "sign differs");
        c("MATH", "1", "\\boxed{\\sin^2 x + \\cos^2 x}", T, "trig identity");
        c("MATH", "2", "\\boxed{\\sqrt[3]{8}}", T, "cube root");
        c("MATH", "0.01", "\\boxed{10^{-2}}", T, "negative exponent");
        c("MATH", "\\frac{7}{3}", "\\boxed{2\\frac13}", F, "mixed numbers read as products, as sympy does");
        c("MATH", "15", "\\boxed{\\dbinom{6}{2}}", T, "binomial");
        c("MATH", "3", "Final Answer: The final answer is $x=3$. I hope it is correct.", T, "Minerva keeps the text after =");
        c("MATH", "1000", "Final Answer: The final answer is 1,000. I hope it is correct.", T, "digit commas dropped");
        c("MATH", "5", "", F, "empty response");
        c("MATH", "\\frac{1}{\\sqrt{2}}", "so $\\frac{\\sqrt{2}}{2}$", T, "rationalized denominator");
        c("MATH", "0.75", "\\boxed{\\frac{3}{4}}", T, "fraction vs decimal");
        c("MATH", "\\frac{1}{3}", "\\boxed{0.333}", F, "rounded decimal is not equal");
        c("MATH", "1 + x^2", "\\boxed{x^2 + 1}", T, "commuted sum");
        c("MATH", "3", "\\boxed{3", F, "unclosed box");
        c("MATH", "12", "Final Answer: The final answer is 12 dollars. I hope it is correct.", T, "units words removed");
        c("MATH", "-3, 3", "\\boxed{-3,3}", T, "list as strings");
        c("MATH", "x+1", "\\boxed{x+2}", F, "different polynomials");
        c("MATH", "\\frac{\\sqrt{3}}{2}", "\\boxed{\\sin \\frac{\\pi}{3}}", T, F, "sin(pi/3); sympy's parse_latex reads \\pi as a symbol");
        // sympy 1.13's parse_latex(strict=False), which the reference calls (a review of 2026-12-01, run against it)
        c("MATH", "40,\\!320", "\\boxed{40320}", T, "thousands separators: one number (sympy's NUMBER rule)");
        c("MATH", "10000", "\\boxed{10,000}", T, "thousands separators in the response");
        c("MATH", "-2, 3", "\\boxed{-2, 5}", F, T, "3f37c29: sympy reads the prefix -2 of each list");
        c("MATH", "-2, 3", "\\boxed{-2, 3, 4}", F, T, "3f37c29: only the first elements compared");
        c("MATH", "\\text{(C)}", "\\boxed{C}", T, F, "3f37c29: sympy reads \\text{(C)} as text*C");
        c("MATH", "1024", "\\boxed{2^10}", F, T, "TeX reads 2^10 as 2^1 0; sympy lexes the exponent 10");
        c("MATH", "\\ln 2", "\\boxed{\\log 2}", F, T, "\\log is base 10 by default, natural in sympy");
        c("MATH", "3", "\\boxed{\\log_2 8}", T, "\\log with a base");
        c("MATH", "2", "\\boxed{\\lfloor 2.5 \\rfloor}", T, "floor");
        c("MATH", "2.5", "\\boxed{\\lfloor 2.5 \\rfloor}", F, "floor is not dropped");
        c("MATH", "3", "\\boxed{\\lceil 2.5 \\rceil}", T, "ceiling");
        c("MATH", "3", "\\boxed{\\lfloor \\log_{10} 1000 \\rfloor}", T, "floor of a value float rounding puts just under 3");
        // ---- IFEval ----
        i("verify_keywords", "A river under a bridge.", T, "all keywords", "keyword_list", List.of("river", "Bridge"));
        i("verify_keywords", "A river only.", F, "missing keyword", "keyword_list", List.of("river", "bridge"));
        i("verify_keywords", "Categorically", T, "substring match", "keyword_list", List.of("cat"));
        i("verify_keyword_frequency", "The cat saw a cat; CAT!", T, "whole words, case-insensitive", "word", "cat", "N", 3);
        i("verify_keyword_frequency", "category cat", F, "category is not cat", "word", "cat", "N", 2);
        i("verify_keyword_frequency", "dog", T, "zero occurrences", "word", "cat", "N", 0);
        i("verify_keyword_frequency", "x\u00b2 and x", T, "Python's \\w takes No numbers: x\u00b2 is one word, x once", "word", "x", "N", 1);
        i("validate_forbidden_words", "I like dogs.", T, "none present", "forbidden_words", List.of("cat", "bird"));
        i("validate_forbidden_words", "I like my category.", F, "substring counts", "forbidden_words", List.of("cat"));
        i("validate_forbidden_words", "CAT", F, "case-insensitive", "forbidden_words", List.of("cat"));
        i("verify_letter_frequency", "banana", T, "three a", "letter", "a", "N", 3);
        i("verify_letter_frequency", "bAnana", F, "case-sensitive", "letter", "a", "N", 3);
        i("verify_letter_frequency", "", T, "zero of zero", "letter", "z", "N", 0);
        i("validate_response_language", "This is clearly an English sentence about the weather today.", T, F, "langdetect (missing at 3f37c29)", "language", "en");
        i("validate_response_language", "Ceci est une phrase en français sur la météo.", F, F, "wrong language", "language", "en");
        i("validate_response_language", "Das ist ein deutscher Satz über das Wetter heute.", T, F, "German", "language", "de");
        i("verify_paragraph_count", "One\n* * *\nTwo\n* * *\nThree", T, "three paragraphs", "N", 3);
        i("verify_paragraph_count", "One\n* * *\n\n* * *\nThree", F, "an empty paragraph fails", "N", 3);
        i("verify_paragraph_count", "One\n  * * *  \nTwo", T, "lines are stripped first", "N", 2);
        i("verify_paragraph_count", "One", F, "count differs", "N", 2);
        i("validate_word_constraint", "one two three four five", T, "at least", "N", 5, "quantifier", "at least");
        i("validate_word_constraint", "one two three", F, "too few", "N", 5, "quantifier", "at least");
        i("validate_word_constraint", "one two three", T, "at most", "N", 3, "quantifier", "at most");
        i("validate_word_constraint", "a b c d e f g h i j k", T, "around: |11-10| <= 1", "N", 10, "quantifier", "around");
        i("validate_word_constraint", "a b c d e f g h", F, "around: |8-10| > 1", "N", 10, "quantifier", "around");
        i("validate_word_constraint", "a b c", F, "unknown quantifier", "N", 3, "quantifier", "exactly");
        i("verify_sentence_constraint", "One. Two? Three.", T, "three sentences, at least 3", "N", 3, "quantifier", "at least");
        i("verify_sentence_constraint", "Dr. Smith went home. He slept.", T, "Dr. is not a sentence end: 2", "N", 2, "quantifier", "at most");
        i("verify_sentence_constraint", "One. Two. Three. Four.", F, "at most 2", "N", 2, "quantifier", "at most");
        i("verify_sentence_constraint", "One. Two. Three.", T, "around 4 = 3..5", "N", 4, "quantifier", "around");
        i("verify_sentence_constraint", "e.g. this counts. Right.", T, "e.g. look-behind", "N", 2, "quantifier", "at most");
        i("verify_sentence_constraint", "Hello! How are you? I am fine.", T, F, "'!' ends a sentence (fixed, open-instruct #1612): 3", "N", 3, "quantifier", "at least");
        i("verify_sentence_constraint", "Wow! Great! Thanks. Bye.", F, T, "4 sentences with '!' (fixed); 3f37c29 counts 2", "N", 2, "quantifier", "at most");
        i("verify_sentence_constraint", "One.\u001fTwo.", T, "\\x1f is Python white space: 2 sentences", "N", 2, "quantifier", "at least");
        i("validate_paragraphs", "Alpha\n\nBeta starts here\n\nGamma", T, "2nd paragraph starts with Beta", "N", 3, "first_word", "Beta", "i", 2);
        i("validate_paragraphs", "Alpha\n\nBeta", F, "paragraph count differs", "N", 3, "first_word", "Beta", "i", 2);
        i("validate_paragraphs", "Alpha\n\nbeta", F, "case-sensitive", "N", 2, "first_word", "Beta", "i", 2);
        i("validate_paragraphs", "Alpha\n\nBetamax", T, "no word boundary", "N", 2, "first_word", "Beta", "i", 2);
        i("verify_postscript", "Hello.\nP.S. see you", T, "marker with text", "postscript_marker", "P.S.");
        i("verify_postscript", "Hello.\nP.S.   ", F, "marker alone", "postscript_marker", "P.S.");
        i("verify_postscript", "Hello.", F, "no marker", "postscript_marker", "P.S.");
        i("validate_placeholders", "Dear [name], at [address] on [date].", T, "three placeholders", "N", 3);
        i("validate_placeholders", "Dear [name].", F, T, "too few: passes only at 3f37c29 (tuple is truthy)", "N", 3);
        i("validate_placeholders", "No placeholders.", F, T, "none: passes only at 3f37c29", "N", 1);
        i("verify_bullet_points", "* a\n* b\n- c", T, "three bullets", "N", 3);
        i("verify_bullet_points", "* a\n* b", F, "two", "N", 3);
        i("verify_bullet_points", "* a\n---\n**bold**", T, "--- and **bold** lines count too", "N", 3);
        i("validate_title", "<<A Title>>\nText", T, "title");
        i("validate_title", "No title", F, "no title");
        i("validate_title", "<<>>", T, "empty title counts");
        i("validate_title", "<<A Title\r>>", T, "Python's . takes \\r (only \\n ends a line for it)");
        i("validate_title", "<<A\nTitle>>", F, "a newline ends the title");
        i("validate_choice", "My answer is yes.", T, F, "response contains an option (fixed)", "options", List.of("yes", "no"));
        i("validate_choice", "yes", T, T, "exact option", "options", List.of("yes", "no"));
        i("validate_choice", "ye", F, T, "3f37c29: the response is a substring of an option", "options", List.of("yes", "no"));
        i("validate_choice", "maybe", F, F, "neither", "options", List.of("yes", "no"));
        i("validate_choice", "My answer is no.", T, F, "options as a Python tuple's text: its strings (fixed); 3f37c29 iterates characters",
                "options", "('My answer is yes.', 'My answer is no.', 'My answer is maybe.')");
        i("validate_choice", "Sure! Here is my answer about dogs.", F, "options as a tuple's text, none contained", "options",
                "('My answer is yes.', 'My answer is no.', 'My answer is maybe.')");
        i("validate_choice", "I would pick e) since none fit.", F, "options as other text: one option, not its characters (fixed)",
                "options", "a), b), c), d)");
        i("validate_highlighted_sections", "This *is* a *test*", T, "two highlights", "N", 2);
        i("validate_highlighted_sections", "This *is* a test", F, "one", "N", 2);
        i("validate_highlighted_sections", "**", T, "an empty pair counts", "N", 1);
        i("validate_sections", "SECTION 1 a SECTION 2 b", T, "two sections", "N", 2, "section_splitter", "SECTION");
        i("validate_sections", "Intro SECTION 1 a SECTION 2 b", F, "a preamble counts as a section", "N", 2, "section_splitter", "SECTION");
        i("validate_sections", "SECTION 1 a", F, "one", "N", 2, "section_splitter", "SECTION");
        i("validate_json_format", "{\"a\": 1}", T, "object");
        i("validate_json_format", "```json\n{\"a\": 1}\n```", F, "a fence is not JSON");
        i("validate_json_format", "[1, 2, NaN]", T, "Python accepts NaN");
        i("validate_json_format", "[-Infinity, Infinity]", T, "Python accepts Infinity and -Infinity");
        i("validate_json_format", "+Infinity", F, "Python refuses +Infinity (Jackson takes it)");
        i("validate_json_format", "{\"a\": -INF}", F, "Python refuses INF");
        i("validate_json_format", "{\"a\": 1} trailing", F, "trailing data");
        i("validate_repeat_prompt", "Write a poem. Here it is.", T, "starts with the prompt", "original_prompt", "Write a poem.");
        i("validate_repeat_prompt", "Sure! Write a poem.", F, "preamble", "original_prompt", "Write a poem.");
        i("validate_two_responses", "First answer.\n******\nSecond answer.", T, "two different");
        i("validate_two_responses", "Same.\n******\nSame.", F, "identical halves");
        i("validate_two_responses", "A ****** B ****** C", F, "two separators");
        i("validate_uppercase", "ALL CAPS HERE 123", T, "uppercase");
        i("validate_uppercase", "Not caps", F, "mixed");
        i("validate_lowercase", "all lower 123", T, "lowercase");
        i("validate_lowercase", "Not lower", F, "mixed");
        i("validate_frequency_capital_words", "THE CAT and THE DOG", T, "4 capital words, at least 3", "N", 3, "quantifier", "at least");
        i("validate_frequency_capital_words", "THE CAT", F, "2 < 3", "N", 3, "quantifier", "at least");
        i("validate_frequency_capital_words", "CAFE\u0301 is NICE", T, "a combining mark is no word character to Python: CAFE counts", "N", 2, "quantifier", "at least");
        i("validate_frequency_capital_words", "ONE TWO THREE FOUR", T, F, "around 5: 4 is within 1 (fixed); 3f37c29 needs exactly 5", "N", 5, "quantifier", "around");
        i("validate_frequency_capital_words", "ONE TWO THREE FOUR FIVE", T, T, "around 5: exactly 5", "N", 5, "quantifier", "around");
        i("validate_frequency_capital_words", "ONE two", T, "at most", "N", 1, "quantifier", "at most");
        i("validate_end", "Thanks. Is there anything else I can help with?", T, "ends with phrase", "end_phrase", "Is there anything else I can help with?");
        i("validate_end", "Is there anything else I can help with? Bye", F, "words after", "end_phrase", "Is there anything else I can help with?");
        i("validate_quotation", "\"quoted\"", T, "wrapped");
        i("validate_quotation", "\"half", F, "not closed");
        i("validate_quotation", "\"", T, "a single quote mark both starts and ends");
        i("validate_no_commas", "No commas here.", T, "none");
        i("validate_no_commas", "One, two.", F, "comma");
        // answer extraction: everything after the last <|assistant|>\n, stripped
        i("validate_lowercase", "<|user|>\nHELLO\n<|assistant|>\n  hello  ", T, "assistant split and strip");
        // only func_name: the function gets the raw response
        c("ifeval", "{\"func_name\": \"validate_quotation\"}", " \"quoted\" ", F, "no other keys: raw response (not stripped)");
        c("ifeval", "{\"N\": 3}", "anything", F, "missing func_name: false");
    }

    static Stream<Arguments> cases() {
        return CASES.stream().map(k -> Arguments.of(k.dataset() + ": " + k.note(), k));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void verdict(String name, Case k) {
        Rewards.Result a = fixed.score(new Rewards.Item(k.response(), k.gt(), k.dataset(), null));
        Rewards.Result b = compat.score(new Rewards.Item(k.response(), k.gt(), k.dataset(), null));
        assertEquals(k.fixedOk() ? 10.0 : 0.0, a.reward(), () -> "default semantics: " + a);
        assertEquals(k.compatOk() ? 10.0 : 0.0, b.reward(), () -> "open-instruct-3f37c29: " + b);
    }

    @org.junit.jupiter.api.Test
    void coversEveryIfEvalFunctionAndEnoughCases() {
        assertTrue(CASES.size() >= 150, "cases: " + CASES.size());
        Map<String, Integer> per = new LinkedHashMap<>();
        for (Case k : CASES) if (k.dataset().equals("ifeval") && k.gt().contains("func_name\":\""))
            per.merge(k.gt().replaceAll(".*\"func_name\":\"([a-z_]+)\".*", "$1"), 1, Integer::sum);
        for (String f : IfEval.FUNCTIONS) assertTrue(per.getOrDefault(f, 0) >= 2, f + " has " + per.get(f) + " cases");
    }
}
