package org.grpo4j.internal.tokenizer;

import org.grpo4j.ChatMessage;
import com.hubspot.jinjava.Jinjava;
import com.hubspot.jinjava.JinjavaConfig;
import com.hubspot.jinjava.LegacyOverrides;
import com.hubspot.jinjava.interpret.RenderResult;
import com.hubspot.jinjava.interpret.TemplateError;
import com.hubspot.jinjava.lib.fn.ELFunctionDefinition;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * Chat templates: Jinja text rendered with jinjava in strict mode, configured like transformers' jinja2 environment
 * (trim_blocks, lstrip_blocks, strict whitespace control; see java-deps.md b), with every render error fatal.
 *
 * <p>Built-in names: {@code tulu} (open-instruct's CHAT_TEMPLATES["tulu"]: no BOS, generation prompt
 * "&lt;|assistant|&gt;\n", assistant turns end with eos_token), {@code llama3} (Meta Llama 3 Instruct), and
 * {@code r1_simple_chat} / {@code r1_simple_chat_postpend_think} (open-instruct's R1 prompts, used with the format reward).
 * {@code tokenizer} means the tokenizer's own chat_template.
 */
public final class ChatTemplate {
    /** open-instruct dataset_transformation.CHAT_TEMPLATES["tulu"]. */
    public static final String TULU = "{% for message in messages %}{% if message['role'] == 'system' %}{{ '<|system|>\\n' + message['content'] + '\\n' }}"
            + "{% elif message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + '\\n' }}"
            + "{% elif message['role'] == 'assistant' %}{% if not loop.last %}{{ '<|assistant|>\\n'  + message['content'] + eos_token + '\\n' }}"
            + "{% else %}{{ '<|assistant|>\\n'  + message['content'] + eos_token }}{% endif %}{% endif %}"
            + "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}{% endfor %}";

    /** The R1 system text of open-instruct's r1_simple_chat templates (from arXiv 2501.12948). */
    private static final String R1_PREAMBLE = "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
            + "The assistant first thinks about the reasoning process in the mind and then provides the user with the answer. "
            + "The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, respectively, "
            + "i.e., <think> reasoning process here </think> <answer> answer here </answer>.\n\n";

    /**
     * open-instruct CHAT_TEMPLATES["r1_simple_chat"] (3f37c29): the R1 preamble, then "Role: content\n" per message
     * ("\n\n" between messages), generation prompt "Assistant:". The reference's {@code message['role'].capitalize()}
     * is written as jinjava's capitalize filter (it upper-cases the first letter; roles are lower-case words).
     */
    public static final String R1_SIMPLE_CHAT = R1_PREAMBLE + "{% for message in messages %}{{ '\n\n' if not loop.first else '' }}"
            + "{{ (message['role'] | capitalize) + ': ' + message['content'] + '\n' }}"
            + "{% if loop.last and add_generation_prompt %}{{ 'Assistant:' }}{% endif %}{% endfor %}";

    /** open-instruct CHAT_TEMPLATES["r1_simple_chat_postpend_think"]: as r1_simple_chat, generation prompt "Assistant: &lt;think&gt;". */
    public static final String R1_SIMPLE_CHAT_POSTPEND_THINK = R1_SIMPLE_CHAT.replace("{{ 'Assistant:' }}", "{{ 'Assistant: <think>' }}");

    /** Meta Llama 3 Instruct. */
    public static final String LLAMA3 = "{% set loop_messages = messages %}{% for message in loop_messages %}"
            + "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}"
            + "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
            + "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

    private static final Jinjava JINJAVA = newJinjava();

    private final String name;
    private final String source;
    private final String label; // the name in errors: the tokenizer's template with its directory

    private ChatTemplate(String name, String source) { this(name, source, name); }

    private ChatTemplate(String name, String source, String label) {
        this.name = name;
        this.source = source;
        this.label = label;
    }

    public static ChatTemplate of(String name, String source) { return new ChatTemplate(name, source); }

    /** The names {@link #named} resolves, in the order errors list them. */
    public static final List<String> NAMES = List.of("tulu", "llama3", "r1_simple_chat", "r1_simple_chat_postpend_think", "tokenizer");

    /**
     * {@code name} trimmed and in lower case, when it is one of {@link #NAMES} or of {@code extra} (a command's own
     * choices: "run", "keep", "none"); else an error naming {@code what} (the option) and every choice.
     */
    public static String requireKnown(String what, String name, String... extra) {
        String n = name.trim().toLowerCase(Locale.ROOT);
        List<String> all = new ArrayList<>(NAMES);
        all.addAll(List.of(extra));
        if (!all.contains(n)) throw new IllegalArgumentException(what + ": unknown chat template \"" + name + "\" (expected " + choices(all) + ")");
        return n;
    }

    /** "a, b, ... or z": a list of choices for an error message. */
    public static String choices(List<String> names) {
        int n = names.size();
        return n == 1 ? names.get(0) : String.join(", ", names.subList(0, n - 1)) + " or " + names.get(n - 1);
    }

    /**
     * Resolves a template name: "tulu", "llama3", or "tokenizer" / null (the tokenizer's chat_template).
     */
    public static ChatTemplate named(String name, Tokenizer tok) {
        String n = name == null ? "tokenizer" : name.trim().toLowerCase(Locale.ROOT);
        return switch (n) {
            case "tulu" -> new ChatTemplate("tulu", TULU);
            case "llama3" -> new ChatTemplate("llama3", LLAMA3);
            case "r1_simple_chat" -> new ChatTemplate("r1_simple_chat", R1_SIMPLE_CHAT);
            case "r1_simple_chat_postpend_think" -> new ChatTemplate("r1_simple_chat_postpend_think", R1_SIMPLE_CHAT_POSTPEND_THINK);
            case "tokenizer" -> {
                if (tok == null || tok.chatTemplate() == null)
                    throw new IllegalArgumentException("chat template \"tokenizer\": "
                            + (tok == null ? "no tokenizer" : tok.directory().resolve("tokenizer_config.json") + " has no chat_template (and there is no "
                                    + Tokenizer.CHAT_TEMPLATE_FILE + ")"));
                yield new ChatTemplate("tokenizer", tok.chatTemplate(), "tokenizer (" + tok.directory() + ")");
            }
            default -> throw new IllegalArgumentException("unknown chat template \"" + name + "\" (expected " + choices(NAMES) + ")");
        };
    }

    public String name() { return name; }

    public String source() { return source; }

    /** Renders with bos/eos tokens from the tokenizer (may be null for templates that do not use them). */
    public String render(List<ChatMessage> messages, boolean addGenerationPrompt, Tokenizer tok) {
        return render(messages, addGenerationPrompt, tok == null ? null : tok.bosToken(), tok == null ? null : tok.eosToken());
    }

    public String render(List<ChatMessage> messages, boolean addGenerationPrompt, String bosToken, String eosToken) {
        if (messages == null || messages.isEmpty()) throw new IllegalArgumentException("chat template " + name + ": no messages");
        List<Map<String, Object>> ms = new ArrayList<>();
        for (ChatMessage m : messages) {
            Map<String, Object> mm = new LinkedHashMap<>();
            mm.put("role", m.role());
            mm.put("content", m.content());
            ms.add(mm);
        }
        Map<String, Object> ctx = new HashMap<>();
        ctx.put("messages", ms);
        ctx.put("add_generation_prompt", addGenerationPrompt);
        ctx.put("bos_token", bosToken == null ? "" : bosToken);
        ctx.put("eos_token", eosToken == null ? "" : eosToken);
        RenderResult r = JINJAVA.renderForResult(source, ctx);
        if (!r.getErrors().isEmpty()) {
            StringBuilder sb = new StringBuilder("chat template " + label + " failed to render:");
            for (TemplateError e : r.getErrors()) sb.append(' ').append(describe(e)).append(e.getLineno() > 0 ? " (template line " + e.getLineno() + ")" : "").append(';');
            throw new IllegalArgumentException(sb.toString());
        }
        return r.getOutput();
    }

    /**
     * One render error in the template author's words: the text a raise_exception('...') gave (Jinjava reports only
     * "Error invoking function 'raise_exception'", the reason in its cause), else Jinjava's message without a Java
     * exception's class name in front ("UnknownTokenException: ...").
     */
    static String describe(TemplateError e) {
        for (Throwable t = e.getException(); t != null; t = t.getCause() == t ? null : t.getCause()) {
            String m = t.getMessage();
            if (m != null && m.startsWith(RAISED)) return "the template raised: " + m.substring(RAISED.length());
        }
        String m = e.getMessage() == null ? "unknown error" : e.getMessage();
        return m.replaceFirst("^(?:[A-Za-z_$][\\w$]*\\.)*[A-Z][\\w$]*(?:Exception|Error): ", "");
    }

    private static final String RAISED = "template raised: ";

    /** Called by templates as raise_exception('...'): renders fail with that message. */
    public static Object raiseException(String message) {
        throw new IllegalArgumentException(RAISED + message);
    }

    private static Jinjava newJinjava() {
        JinjavaConfig cfg = JinjavaConfig.newBuilder()
                .withTrimBlocks(true)
                .withLstripBlocks(true)
                .withFailOnUnknownTokens(true)
                // message text is data, as jinja2 renders it: Jinjava's default evaluates a {{ }} or {% %} that an
                // expression's value contains ("What is {{ 7*6 }}?" became "What is 42?", C++'s "{{1,2},{3,4}}" failed)
                .withNestedInterpretationEnabled(false)
                .withLegacyOverrides(LegacyOverrides.newBuilder()
                        .withParseWhitespaceControlStrictly(true)
                        .withUseTrimmingForNotesAndExpressions(true)
                        .withUseSnakeCasePropertyNaming(true)
                        .withKeepNullableLoopValues(true)
                        .build())
                .build();
        Jinjava j = new Jinjava(cfg);
        j.getGlobalContext().registerFunction(new ELFunctionDefinition("", "raise_exception", ChatTemplate.class, "raiseException", String.class));
        return j;
    }
}
