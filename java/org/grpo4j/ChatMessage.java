package org.grpo4j;

/**
 * One chat turn.
 *
 * <p><b>Thread safety:</b> immutable, so thread-safe.
 *
 * @param role    "system", "user" or "assistant" (the chat templates render only these)
 * @param content the text
 */
public record ChatMessage(String role, String content) {
    /**
     * A turn.
     *
     * @param role    the role
     * @param content the text
     * @throws IllegalArgumentException if {@code role} is null or empty, or {@code content} is null
     */
    public ChatMessage {
        if (role == null || role.isEmpty()) throw new IllegalArgumentException("chat message without a role");
        if (content == null) throw new IllegalArgumentException("chat message (" + role + ") without content");
    }
}
