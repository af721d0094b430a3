package org.grpo4j;

/** One chat turn: role ("system", "user", "assistant") and content. */
public record ChatMessage(String role, String content) {
    public ChatMessage {
        if (role == null || role.isEmpty()) throw new IllegalArgumentException("chat message without a role");
        if (content == null) throw new IllegalArgumentException("chat message (" + role + ") without content");
    }
}
