package org.grpo4j.internal.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;
import org.grpo4j.internal.data.DatasetReader;
import org.grpo4j.ChatMessage;
import org.grpo4j.internal.tokenizer.ChatTemplate;
import org.grpo4j.internal.tokenizer.Tokenizer;
import picocli.CommandLine.ArgGroup;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code grpo4j tokenize}: ids of a text, or of a chat rendered with a template (with the rendered prompt). */
@Command(name = "tokenize", mixinStandardHelpOptions = true,
        description = "Tokenize a text or a chat (rendered with a chat template) and print the ids as JSON.")
final class TokenizeCommand implements Callable<Integer> {
    @Option(names = "--model", required = true, description = "Model or tokenizer directory (tokenizer.json, tokenizer_config.json), or a run or checkpoint (its model's).")
    Path model;

    static final class Input {
        @Option(names = "--text", description = "Text to tokenize (no special tokens are added).")
        String text;

        @Option(names = "--chat-json", description = "Messages as JSON, e.g. '[{\"role\":\"user\",\"content\":\"Hi\"}]', or @file.json (roles: system, user, assistant).")
        String chatJson;
    }

    @ArgGroup(exclusive = true, multiplicity = "1")
    Input input;

    @Option(names = {"--template", "--chat-template"}, defaultValue = "tokenizer", description = "Chat template: tulu, llama3, r1_simple_chat, r1_simple_chat_postpend_think or tokenizer (default: ${DEFAULT-VALUE}).")
    String template;

    @Option(names = "--no-generation-prompt", description = "Do not append the assistant generation prompt.")
    boolean noGenerationPrompt;

    @Option(names = "--decode", description = "Also decode the ids back to text (with special tokens).")
    boolean decode;

    @Override
    public Integer call() throws Exception {
        ObjectMapper json = RewardCommand.exactJson();
        if (model.toString().isBlank()) throw new IllegalArgumentException("--model is empty");
        if (Files.isDirectory(model)) model = ModelSource.modelDirOf(model); // (a run or a checkpoint: its model's tokenizer)
        try (Tokenizer tok = Tokenizer.load(model)) {
            ObjectNode out = json.createObjectNode();
            String text;
            if (input.text != null) {
                text = input.text;
                out.put("text", text);
            } else {
                String where = "--chat-json";
                String src = input.chatJson;
                if (src.startsWith("@")) {
                    Path f = Path.of(src.substring(1));
                    where = f.toString();
                    if (Files.isDirectory(f)) throw new IllegalArgumentException(where + ": is a directory (--chat-json @FILE takes a JSON file)");
                    if (!Files.isRegularFile(f)) throw new java.nio.file.NoSuchFileException(where, null, "--chat-json @file");
                    try {
                        src = Files.readString(f, java.nio.charset.StandardCharsets.UTF_8);
                    } catch (java.nio.charset.MalformedInputException e) {
                        throw new IllegalArgumentException(f + ": not valid UTF-8");
                    }
                }
                JsonNode node;
                try {
                    node = json.readTree(src);
                } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
                    throw new IllegalArgumentException(where + ": not valid JSON: " + org.grpo4j.internal.util.JsonErrors.describe(e));
                }
                if (node == null || node.isMissingNode()) throw new IllegalArgumentException(where + ": empty (expected a JSON list of {role, content})");
                List<ChatMessage> messages;
                try {
                    messages = org.grpo4j.internal.data.DatasetReader.parseMessages(node, where, "the chat", "chat");
                } catch (java.io.IOException e) {
                    throw new IllegalArgumentException(e.getMessage());
                }
                ChatTemplate t = ChatTemplate.named(ChatTemplate.requireKnown("--template", template), tok);
                text = t.render(messages, !noGenerationPrompt, tok);
                out.put("template", t.name());
                out.put("prompt", text);
            }
            int[] ids = tok.encode(text);
            out.putPOJO("ids", ids);
            out.put("count", ids.length);
            if (decode) out.put("decoded", tok.decode(ids, false));
            System.out.println(json.writerWithDefaultPrettyPrinter().writeValueAsString(out));
        }
        return 0;
    }
}
