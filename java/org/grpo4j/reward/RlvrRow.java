package org.grpo4j.reward;

import java.util.List;
import java.util.Objects;
import org.grpo4j.ChatMessage;

/**
 * One RLVR row, as in allenai/RLVR-GSM-MATH-IF-Mixed-Constraints: the conversation, the verifier's ground truth and
 * the verifier's name ({@code dataset}), with IFEval's constraint fields.
 *
 * <p><b>Thread safety:</b> immutable (the message list is copied), so thread-safe.
 *
 * @param messages       the conversation, at least one message; the prompt is every message but the last (the reference
 *                       answer, whatever its role), or the one message when there is only one ({@link #promptMessages})
 * @param groundTruth    what the verifier checks the response against (may be null)
 * @param dataset        the name of the reward function that scores the row
 * @param constraintType IFEval's constraint type, or null
 * @param constraint     IFEval's constraint, or null
 * @param source         where the row came from ("file:line"), for messages; may be null
 */
public record RlvrRow(List<ChatMessage> messages, String groundTruth, String dataset, String constraintType,
                      String constraint, String source) {

    /**
     * A row.
     *
     * @param messages       the conversation (copied)
     * @param groundTruth    the ground truth
     * @param dataset        the reward function's name
     * @param constraintType IFEval's constraint type
     * @param constraint     IFEval's constraint
     * @param source         where it came from
     * @throws NullPointerException     if {@code messages} or one of them is null
     * @throws IllegalArgumentException if {@code messages} is empty (a row with no prompt)
     */
    public RlvrRow {
        Objects.requireNonNull(messages, "messages");
        messages = List.copyOf(messages);
        if (messages.isEmpty())
            throw new IllegalArgumentException((source == null ? "" : source + ": ") + "an RLVR row needs at least one message (its prompt)");
    }

    /**
     * The prompt turns: all messages when there is one, else all but the last (grpo-reference.md section 7).
     *
     * @return the prompt's messages
     */
    public List<ChatMessage> promptMessages() {
        return messages.size() == 1 ? messages : messages.subList(0, messages.size() - 1);
    }
}
