package org.grpo4j.data;

import java.util.ArrayList;
import java.util.List;
import org.grpo4j.tokenizer.ChatTemplate;
import org.grpo4j.tokenizer.Tokenizer;

/**
 * Rows with their tokenized prompts: prompt = messages (or messages[:-1]) rendered with the chat template and the
 * generation prompt, tokenized without added special tokens. Rows whose prompt exceeds {@code maxPromptTokens} are
 * dropped and counted.
 */
public final class PromptDataset {
    private final List<RlvrRow> rows = new ArrayList<>();
    private final List<int[]> prompts = new ArrayList<>();
    private final int dropped;

    public PromptDataset(List<RlvrRow> source, Tokenizer tok, ChatTemplate template, int maxPromptTokens) {
        int d = 0;
        for (RlvrRow r : source) {
            String text;
            try {
                text = template.render(r.promptMessages(), true, tok);
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException(r.source() + ": " + e.getMessage(), e);
            }
            int[] ids = tok.encode(text);
            if (ids.length > maxPromptTokens) {
                d++;
                continue;
            }
            rows.add(r);
            prompts.add(ids);
        }
        this.dropped = d;
    }

    public int size() { return rows.size(); }
    public RlvrRow row(int i) { return rows.get(i); }
    public int[] prompt(int i) { return prompts.get(i).clone(); }
    /** Rows dropped because their prompt was longer than the limit. */
    public int dropped() { return dropped; }
}
