package org.grpo4j.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;
import org.grpo4j.data.DatasetReader;
import org.grpo4j.tokenizer.ChatMessage;
import org.grpo4j.tokenizer.ChatTemplate;
import org.grpo4j.tokenizer.Tokenizer;
import picocli.CommandLine.ArgGroup;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code grpo4j tokenize}: ids of a text, or of a chat rendered with a template (with the rendered prompt). */
@Command(name = "tokenize", mixinStandardHelpOptions = true,
        description = "Tokenize a text or a chat (rendered with a chat template) and print the ids as JSON.")
final class TokenizeCommand implements Callable<Integer> {
    @Option(names = "--model", required = true, description = "Model or tokenizer directory (tokenizer.json, tokenizer_config.json).")
    Path model;

    static final class Input {
        @Option(names = "--text", description = "Text to tokenize (no special tokens are added).")
        String text;

        @Option(names = "--chat-json", description = "Messages as JSON, e.g. '[{\"role\":\"user\",\"content\":\"Hi\"}]', or @file.json.")
        String chatJson;
    }

    @ArgGroup(exclusive = true, multiplicity = "1")
    Input input;

    @Option(names = "--template", defaultValue = "tokenizer", description = "Chat template: tulu, llama3, r1_simple_chat, r1_simple_chat_postpend_think or tokenizer (default: ${DEFAULT-VALUE}).")
    String template;

    @Option(names = "--no-generation-prompt", description = "Do not append the assistant generation prompt.")
    boolean noGenerationPrompt;

    @Option(names = "--decode", description = "Also decode the ids back to text (with special tokens).")
    boolean decode;

    @Override
    public Integer call() throws Exception {
        ObjectMapper json = new ObjectMapper();
        try (Tokenizer tok = Tokenizer.load(model)) {
            ObjectNode out = json.createObjectNode();
            String text;
            if (input.text != null) {
                text = input.text;
                out.put("text", text);
            } else {
                String src = input.chatJson.startsWith("@") ? Files.readString(Path.of(input.chatJson.substring(1))) : input.chatJson;
                JsonNode node;
                try {
                    node = json.readTree(src);
                } catch (Exception e) {
                    throw new IllegalArgumentException("--chat-json is not valid JSON: " + e.getMessage().lines().findFirst().orElse(""));
                }
                List<ChatMessage> messages;
                try {
                    messages = DatasetReaderAccess.messages(node);
                } catch (java.io.IOException e) {
                    throw new IllegalArgumentException(e.getMessage());
                }
                ChatTemplate t = ChatTemplate.named(template, tok);
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

    /** Parses a messages array with the dataset reader's rules. */
    static final class DatasetReaderAccess {
        static List<ChatMessage> messages(JsonNode node) throws java.io.IOException {
            ObjectNode o = new ObjectMapper().createObjectNode();
            o.set("messages", node);
            o.put("dataset", "cli");
            return DatasetReader.fromJson(o, "--chat-json").messages();
        }
    }
}
