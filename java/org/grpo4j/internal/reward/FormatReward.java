package org.grpo4j.internal.reward;

/**
 * The R1-style format reward of open-instruct #551 (ground_truth_utils.soft_format_reward_func, enabled by
 * {@code add_r1_style_format_reward}): {@code scale} when
 * {@code re.match(r".*?</think>\s*<answer>.*?</answer>", response, re.DOTALL)} succeeds, else 0.
 *
 * <p>re.match anchors only at the start and {@code .*?} spans anything (DOTALL), so the rule is: somewhere in the
 * response a "</think>" is followed by optional whitespace (Python's \s on str: Unicode whitespace, str.isspace), then
 * "<answer>", and later by "</answer>". No opening "&lt;think&gt;" is needed (the r1_simple_chat_postpend_think
 * template puts it in the prompt) and text after "</answer>" does not matter. The reference scores the response
 * decoded <em>with</em> its special tokens (tokenizer.batch_decode without skip_special_tokens, G:1082-1086).
 */
public final class FormatReward {
    private FormatReward() {}

    private static final String THINK_END = "</think>", ANSWER = "<answer>", ANSWER_END = "</answer>";

    /** Does the response have the R1 format? */
    public static boolean matches(String response) {
        if (response == null) return false;
        for (int i = response.indexOf(THINK_END); i >= 0; i = response.indexOf(THINK_END, i + 1)) {
            int j = i + THINK_END.length();
            while (j < response.length() && PyStr.isSpace(response.charAt(j))) j++;
            if (response.startsWith(ANSWER, j) && response.indexOf(ANSWER_END, j + ANSWER.length()) >= 0) return true;
        }
        return false;
    }

    /** {@code scale} when the response has the format, else 0 (the reference's reward_scale is r1_style_format_reward). */
    public static double score(String response, double scale) { return matches(response) ? scale : 0.0; }
}
