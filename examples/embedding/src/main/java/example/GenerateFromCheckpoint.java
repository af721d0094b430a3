package example;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.List;
import org.grpo4j.Backend;
import org.grpo4j.ChatMessage;
import org.grpo4j.Completion;
import org.grpo4j.Model;
import org.grpo4j.Sampling;

/**
 * Samples answers from a saved checkpoint (any HF model directory with its tokenizer) and prints each with its
 * log-probability.
 *
 * <pre>
 *   java -cp "target/*:target/lib/*" example.GenerateFromCheckpoint runs/even/checkpoints/step_40/model [--prompt TEXT] [-n 4] [--backend auto]
 * </pre>
 */
public final class GenerateFromCheckpoint {
    private GenerateFromCheckpoint() {}

    public static void main(String[] args) throws Exception {
        try {
            if (args.length == 0) throw new IllegalArgumentException("usage: GenerateFromCheckpoint MODEL_DIR [--prompt TEXT] [-n N] [--backend B]");
            Path model = Path.of(args[0]);
            String prompt = "Zoe has 5 cups and gets 2 more. How many now?", backend = "auto";
            int n = 4;
            for (int i = 1; i < args.length; i++) {
                String a = args[i];
                if (i + 1 >= args.length) throw new IllegalArgumentException(a + " needs a value");
                switch (a) {
                    case "--prompt" -> prompt = args[++i];
                    case "-n" -> n = Integer.parseInt(args[++i]);
                    case "--backend" -> backend = args[++i];
                    default -> throw new IllegalArgumentException("unknown option " + a + " (expected --prompt TEXT, -n N, --backend B)");
                }
            }
            generate(model, prompt, n, backend, System.out);
        } catch (IllegalArgumentException | IllegalStateException | IOException e) { // grpo4j's messages are one line naming what is wrong
            System.err.println("GenerateFromCheckpoint: " + e.getMessage());
            System.exit(2);
        }
    }

    /** {@code n} answers to {@code prompt} as a user turn, rendered with the model's chat template. */
    static List<Completion> generate(Path modelDir, String prompt, int n, String backendSpec, PrintStream print) throws IOException {
        try (Backend backend = Backend.open(backendSpec); Model model = Model.load(modelDir, backend)) {
            Sampling sampling = Sampling.defaults().samples(n).maxTokens(12).temperature(0.7).seed(1);
            List<Completion> out = model.generateChats(List.of(List.of(new ChatMessage("user", prompt))), sampling).get(0);
            print.printf("%s (%,d parameters, %s)%n%s%n", modelDir, model.parameters(), backend.name(), prompt);
            for (Completion c : out)
                print.printf("  %-24s logp %7.3f  (%d tokens, %s)%n", c.text().strip(), c.sumLogprob(), c.length(), c.finishReason().label());
            return out;
        }
    }
}
