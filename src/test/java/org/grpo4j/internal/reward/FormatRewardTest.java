package org.grpo4j.internal.reward;

import static org.junit.jupiter.api.Assertions.*;

import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;

/** The R1 format reward (open-instruct ground_truth_utils.soft_format_reward_func at 3f37c29) on tagged and untagged responses. */
class FormatRewardTest {
    /** The reference's pattern, run by java.util.regex with re.match semantics (anchored at the start only) and DOTALL. */
    static final Pattern REFERENCE = Pattern.compile(".*?</think>\\s*<answer>.*?</answer>", Pattern.DOTALL);

    static final String[] TAGGED = {
            "<think>2 + 2 is 4</think><answer>4</answer>",
            "2 + 2 is 4</think>\n\n  <answer>4</answer>",                 // r1_simple_chat_postpend_think puts <think> in the prompt
            "<think>a\nb\n</think> <answer>\n4\n</answer><|end_of_text|>", // decoded with special tokens, as the reference does
            "<think>x</think><answer>4</answer> and more text after",
            "<think>x</think> oops </think>\t<answer>4</answer>",           // a later </think> can carry the match
            "</think><answer></answer>",
    };

    static final String[] UNTAGGED = {
            "The answer is 4.",
            "<think>x</think> so <answer>4</answer>",  // text between </think> and <answer>
            "<think>x</think><answer>4",               // no closing tag
            "<answer>4</answer><think>x</think>",      // wrong order
            "<think>x</think><Answer>4</Answer>",      // case matters
            "<think>x<think><answer>4</answer>",       // no </think>
            "",
    };

    @Test
    void taggedResponsesEarnTheReward() {
        for (String r : TAGGED) {
            assertTrue(REFERENCE.matcher(r).lookingAt(), "the reference's regex should match: " + r);
            assertTrue(FormatReward.matches(r), r);
            assertEquals(1.0, FormatReward.score(r, 1.0), r);
            assertEquals(0.25, FormatReward.score(r, 0.25), r);
        }
    }

    @Test
    void untaggedResponsesEarnNothing() {
        for (String r : UNTAGGED) {
            assertFalse(REFERENCE.matcher(r).lookingAt(), "the reference's regex should not match: " + r);
            assertFalse(FormatReward.matches(r), r);
            assertEquals(0.0, FormatReward.score(r, 1.0), r);
        }
        assertFalse(FormatReward.matches(null));
    }

    @Test
    void whitespaceIsPythonsUnicodeWhitespace() {
        // Python's \s on str matches str.isspace() characters: U+3000, U+00A0, U+001C..U+001F, U+0085; not U+200B
        for (char c : new char[] {'\u3000', '\u00a0', '\u001c', '\u001f', '\u0085', '\u2028', '\u000b'})
            assertTrue(FormatReward.matches("x</think>" + c + "<answer>1</answer>"), "U+" + Integer.toHexString(c));
        assertFalse(FormatReward.matches("x</think>\u200b<answer>1</answer>"), "U+200B is not whitespace in Python");
    }
}
