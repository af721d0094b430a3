package org.grpo4j.internal.rollout;

import java.util.List;
import java.util.function.Function;

/**
 * vLLM's {@code SamplingParams(stop=[...], include_stop_str_in_output=True)} as the reference uses it
 * ({@code stop_strings}, G:854-861): a sequence finishes as soon as its decoded text contains one of the strings, the
 * text as vLLM's (skip_special_tokens, its default: the ids of transformers' all_special_ids skipped, other added
 * tokens such as Llama 3's {@code <|eot_id|>} kept as their text; Tokenizer#decodeAsVllm). As in vLLM, every token id generated so far is kept, including the one that
 * completed the string (only vLLM's text is cut); a stop token still ends a sequence first.
 *
 * <p>Only the tail is decoded at each step: a string of m characters is at most 4m UTF-8 bytes, so it lies within
 * the last 4m tokens (every token not skipped decodes to at least one byte), and the window of 4m + 8 tokens finds
 * it at the step that completes it. (vLLM would also match a string interrupted by skipped tokens across a longer
 * stretch; grpo4j does not.)
 */
public final class StopStrings {
    private final List<String> strings;
    private final Function<int[], String> decode;
    private final int window;

    /** {@code decode} turns token ids into text as vLLM does (Tokenizer::decodeAsVllm). */
    public StopStrings(List<String> strings, Function<int[], String> decode) {
        this.strings = List.copyOf(strings);
        for (String s : this.strings)
            if (s == null || s.isEmpty()) throw new IllegalArgumentException("stop strings must be non-empty");
        this.decode = decode;
        this.window = 4 * this.strings.stream().mapToInt(String::length).max().orElse(0) + 8;
    }

    public List<String> strings() { return strings; }

    public boolean isEmpty() { return strings.isEmpty(); }

    /** Does the text of {@code tokens} contain a stop string (checked on its last tokens, see above)? */
    public boolean completedBy(List<Integer> tokens) {
        int[] all = new int[tokens.size()];
        for (int i = 0; i < all.length; i++) all[i] = tokens.get(i);
        return completedBy(all, all.length);
    }

    /** {@link #completedBy(List)} of the first {@code n} of {@code tokens}. */
    public boolean completedBy(int[] tokens, int n) {
        if (strings.isEmpty() || n == 0) return false;
        int from = Math.max(0, n - window);
        String text = decode.apply(java.util.Arrays.copyOfRange(tokens, from, n));
        for (String s : strings) if (text.contains(s)) return true;
        return false;
    }
}
