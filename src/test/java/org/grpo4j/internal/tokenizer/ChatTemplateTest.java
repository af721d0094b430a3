package org.grpo4j.internal.tokenizer;

import org.grpo4j.ChatMessage;
import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * Expected strings are written from grpo-reference.md section 8 (the Tulu format) and Meta's Llama 3 format, as readable
 * examples; ChatTemplateFixtureTest checks every named template against jinja2's rendering (the reference's).
 */
class ChatTemplateTest {
    static final String EOS = "<|end_of_text|>";

    @Test
    void tuluSingleUserTurnWithGenerationPrompt() {
        String out = ChatTemplate.named("tulu", null).render(List.of(new ChatMessage("user", "What is 2+2?")), true, null, EOS);
        assertEquals("<|user|>\nWhat is 2+2?\n<|assistant|>\n", out);
    }

    @Test
    void tuluMultiTurn() {
        List<ChatMessage> ms = List.of(new ChatMessage("system", "Be brief."), new ChatMessage("user", "Hi"),
                new ChatMessage("assistant", "Hello!"), new ChatMessage("user", "Bye"), new ChatMessage("assistant", "Bye!"));
        String out = ChatTemplate.named("tulu", null).render(ms, false, null, EOS);
        assertEquals("<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello!" + EOS + "\n<|user|>\nBye\n<|assistant|>\nBye!" + EOS, out);
        // no BOS anywhere, even when the tokenizer has one
        assertFalse(ChatTemplate.named("tulu", null).render(ms, true, "<|begin_of_text|>", EOS).contains("<|begin_of_text|>"));
    }

    @Test
    void tokenizerTemplateOfTheTinyTokenizerIsTulu() throws Exception {
        try (Tokenizer t = Tokenizer.load(Path.of("examples/tiny-tokenizer"))) {
            List<ChatMessage> ms = List.of(new ChatMessage("user", "Q?"), new ChatMessage("assistant", "A."), new ChatMessage("user", "Q2?"));
            assertEquals(ChatTemplate.named("tulu", t).render(ms, true, t), ChatTemplate.named("tokenizer", t).render(ms, true, t));
        }
    }

    @Test
    void llama3Format() {
        String out = ChatTemplate.named("llama3", null).render(List.of(new ChatMessage("system", " sys "), new ChatMessage("user", "Hi")),
                true, "<|begin_of_text|>", "<|eot_id|>");
        assertEquals("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nsys<|eot_id|>"
                + "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", out);
    }

    /** open-instruct CHAT_TEMPLATES["r1_simple_chat"] / ["r1_simple_chat_postpend_think"] at 3f37c29, rendered by hand. */
    @Test
    void r1Templates() {
        String preamble = "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
                + "The assistant first thinks about the reasoning process in the mind and then provides the user with the answer. "
                + "The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, respectively, "
                + "i.e., <think> reasoning process here </think> <answer> answer here </answer>.\n\n";
        List<ChatMessage> one = List.of(new ChatMessage("user", "What is 2+2?"));
        assertEquals(preamble + "User: What is 2+2?\nAssistant:", ChatTemplate.named("r1_simple_chat", null).render(one, true, null, EOS));
        assertEquals(preamble + "User: What is 2+2?\nAssistant: <think>", ChatTemplate.named("r1_simple_chat_postpend_think", null).render(one, true, null, EOS));
        List<ChatMessage> two = List.of(new ChatMessage("system", "Be brief."), new ChatMessage("user", "Hi"));
        assertEquals(preamble + "System: Be brief.\n\n\nUser: Hi\n", ChatTemplate.named("r1_simple_chat", null).render(two, false, null, EOS));
    }

    /** Message text is data, never template code (jinja2 with transformers' settings renders it as written). */
    @Test
    void templateSyntaxInsideAMessageIsKeptAsWritten() {
        for (String name : List.of("tulu", "llama3", "r1_simple_chat")) {
            for (String text : List.of("What is {{ 7*6 }}?", "Fix: int a[2][2] = {{1,2},{3,4}};", "Vue: <p>{{ message }}</p>",
                    "{% if true %}yes{% endif %}", "{{ '<|assistant|>' }}")) {
                String out = ChatTemplate.named(name, null).render(List.of(new ChatMessage("user", text)), true, null, EOS);
                assertTrue(out.contains(text), name + ": " + text + " -> " + out);
            }
        }
        assertEquals("<|user|>\nWhat is {{ 7*6 }}?\n<|assistant|>\n",
                ChatTemplate.named("tulu", null).render(List.of(new ChatMessage("user", "What is {{ 7*6 }}?")), true, null, EOS));
    }

    @Test
    void everyListedNameResolvesToItself() throws Exception {
        try (Tokenizer t = Tokenizer.load(Path.of("examples/tiny-tokenizer"))) {
            for (String n : ChatTemplate.NAMES) {
                assertEquals(n, ChatTemplate.named(n, t).name());
                assertEquals(n, ChatTemplate.named(" " + n.toUpperCase(java.util.Locale.ROOT) + " ", t).name(), "names are trimmed and case-blind");
            }
        }
        assertEquals("a", ChatTemplate.choices(List.of("a")));
        assertEquals("a, b or c", ChatTemplate.choices(List.of("a", "b", "c")));
    }

    @Test
    void errorsAreFatalAndNamed() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> ChatTemplate.named("chatml3", null));
        assertTrue(e.getMessage().contains("chatml3"), e.getMessage());
        for (String n : ChatTemplate.NAMES) assertTrue(e.getMessage().contains(n), e.getMessage()); // every choice is listed
        ChatTemplate bad = ChatTemplate.of("bad", "{{ messages[0]['content'].startswith('x') }}{{ undefined_fn(1) }}");
        e = assertThrows(IllegalArgumentException.class, () -> bad.render(List.of(new ChatMessage("user", "x")), true, null, EOS));
        assertTrue(e.getMessage().startsWith("chat template bad failed to render"), e.getMessage());
        ChatTemplate raising = ChatTemplate.of("raising", "{{ raise_exception('only user turns') }}");
        e = assertThrows(IllegalArgumentException.class, () -> raising.render(List.of(new ChatMessage("user", "x")), true, null, EOS));
        // the template's own reason, not only Jinjava's "Error invoking function 'raise_exception'"
        assertTrue(e.getMessage().startsWith("chat template raising failed to render: the template raised: only user turns (template line 1)"),
                e.getMessage());
        ChatTemplate filter = ChatTemplate.of("filter", "{{ messages[0]['content'] | no_such_filter }}");
        e = assertThrows(IllegalArgumentException.class, () -> filter.render(List.of(new ChatMessage("user", "x")), true, null, EOS));
        assertTrue(e.getMessage().startsWith("chat template filter failed to render:") && !e.getMessage().contains("Exception:"), e.getMessage());
    }
}
