package org.grpo4j.reward;

import java.util.List;
import org.grpo4j.ChatMessage;

/**
 * One RLVR row: the conversation, the verifier's ground truth and the verifier's name ({@code dataset}), as in
 * allenai/RLVR-GSM-MATH-IF-Mixed-Constraints. {@code source} says where it came from ("file:line") for errors.
 */
public record RlvrRow(List<ChatMessage> messages, String groundTruth, String dataset, String constraintType,
                      String constraint, String source) {

    public RlvrRow {
        messages = List.copyOf(messages);
    }

    /** The prompt turns: all messages when there is one, else all but the last (grpo-reference.md section 7). */
    public List<ChatMessage> promptMessages() {
        return messages.size() == 1 ? messages : messages.subList(0, messages.size() - 1);
    }
}
