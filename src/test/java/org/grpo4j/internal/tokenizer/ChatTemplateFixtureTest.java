package org.grpo4j.internal.tokenizer;

import static org.junit.jupiter.api.Assertions.*;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.grpo4j.ChatMessage;
import org.junit.jupiter.api.Test;

/**
 * grpo4j's rendering of its named chat templates (Jinjava) against jinja2's as transformers' apply_chat_template sets
 * it up, on chats that cover every branch of them: src/test/resources/fixtures/chat-templates/rendered.json, written by
 * tools/reference/chat_template_fixture.py from the input this test writes to target/chat-template-cases.json (the
 * templates' sources and the chats). A fixture made from other sources or other chats is reported as stale, with the
 * commands that remake it.
 */
class ChatTemplateFixtureTest {
    static final Path FIXTURE = Path.of("src/test/resources/fixtures/chat-templates/rendered.json");
    static final Path INPUT = Path.of("target/chat-template-cases.json");
    static final String BOS = "<|begin_of_text|>", EOS = "<|end_of_text|>";
    static final ObjectMapper JSON = new ObjectMapper();

    record Case(List<ChatMessage> messages, boolean addGenerationPrompt) {}

    static final List<Case> CASES = List.of(
            new Case(List.of(user("What is 2+2?")), true),
            new Case(List.of(user("Q?"), new ChatMessage("assistant", "A."), user("Q2?")), true),
            new Case(List.of(user("Q?"), new ChatMessage("assistant", "A.")), false),
            new Case(List.of(new ChatMessage("system", "Be brief."), user("Hi")), true),
            new Case(List.of(new ChatMessage("system", " sys "), user("Hi"), new ChatMessage("assistant", "Hello"), user("Bye")), false),
            new Case(List.of(user("What is {{ 7*6 }}? {% if true %}yes{% endif %} {{ '<|assistant|>' }}")), true),
            new Case(List.of(user("  spaced\n\nlines\t "), new ChatMessage("assistant", "\nok\n")), true),
            new Case(List.of(user("naïve café — 数学 🙂")), false));

    static ChatMessage user(String text) { return new ChatMessage("user", text); }

    static List<String> templates() {
        return ChatTemplate.NAMES.stream().filter(n -> !n.equals("tokenizer")).toList(); // (the tokenizer's: no source of its own)
    }

    /** The templates' sources and the chats, as the fixture script reads them. */
    static ObjectNode input() {
        ObjectNode in = JSON.createObjectNode();
        ObjectNode t = in.putObject("templates");
        for (String n : templates()) t.put(n, ChatTemplate.named(n, null).source());
        ArrayNode cases = in.putArray("cases");
        for (Case c : CASES) {
            ObjectNode o = cases.addObject();
            ArrayNode ms = o.putArray("messages");
            for (ChatMessage m : c.messages()) ms.addObject().put("role", m.role()).put("content", m.content());
            o.put("add_generation_prompt", c.addGenerationPrompt()).put("bos_token", BOS).put("eos_token", EOS);
        }
        return in;
    }

    @Test
    void everyNamedTemplateRendersAsJinja2Does() throws Exception {
        ObjectNode in = input();
        Files.createDirectories(INPUT.getParent());
        Files.writeString(INPUT, JSON.writerWithDefaultPrettyPrinter().writeValueAsString(in));
        String remake = "; remake it: python3 tools/reference/chat_template_fixture.py " + INPUT + " " + FIXTURE;
        assertTrue(Files.isRegularFile(FIXTURE), FIXTURE + " is missing" + remake);
        JsonNode fx = JSON.readTree(FIXTURE.toFile());
        assertEquals(in.get("templates"), fx.get("templates"), FIXTURE + " was made from other template sources" + remake);
        assertEquals(in.get("cases"), fx.get("cases"), FIXTURE + " was made for other chats" + remake);
        List<String> checked = new ArrayList<>();
        for (String n : templates()) {
            ChatTemplate t = ChatTemplate.named(n, null);
            for (int i = 0; i < CASES.size(); i++) {
                Case c = CASES.get(i);
                String want = fx.get("rendered").get(n).get(i).textValue();
                assertEquals(want, t.render(c.messages(), c.addGenerationPrompt(), BOS, EOS), n + ", chat " + i + " " + c);
                checked.add(n + "#" + i);
            }
        }
        assertEquals(templates().size() * CASES.size(), checked.size());
    }
}
