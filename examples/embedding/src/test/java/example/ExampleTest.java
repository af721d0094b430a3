package example;

import static org.junit.jupiter.api.Assertions.*;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Runs both applications as a user would, with short settings: a few seconds on a CPU. */
class ExampleTest {

    @Test
    void theRewardLooksAtTheLastNumber() throws Exception {
        assertEquals(1.0, EvenAnswers.EVEN.score("3 + 5 = 8", "8", null).reward());
        assertEquals(0.0, EvenAnswers.EVEN.score("3 + 4 = 7", "7", null).reward());
        assertEquals(0.0, EvenAnswers.EVEN.score("many", "7", null).reward());
        assertEquals(1.0, EvenAnswers.EVEN.score("-12", "7", null).reward());
    }

    @Test
    void trainThenGenerateFromTheCheckpoint(@TempDir Path tmp) throws Exception {
        Path run = tmp.resolve("run");
        String out = captured(() -> EvenAnswers.main(new String[] {"--out", run.toString(), "--steps", "3", "--warmup", "30", "--backend", "cpu"}));
        assertTrue(out.contains("step   3  even answers "), out);
        assertTrue(out.lines().anyMatch(l -> l.startsWith("reward curve: [") && l.split(",").length == 3), out);
        Path model = run.resolve("checkpoints/step_3/model");
        assertTrue(Files.isRegularFile(model.resolve("model.safetensors")), model.toString());

        String gen = captured(() -> GenerateFromCheckpoint.main(new String[] {model.toString(), "-n", "3", "--backend", "cpu"}));
        long answers = gen.lines().filter(l -> l.matches("  .* logp +-?\\d+\\.\\d{3}  \\(\\d+ tokens, (stop|length|stop_string)\\)")).count();
        assertEquals(3, answers, gen);
    }

    interface Main {
        void run() throws Exception;
    }

    /** What {@code main} printed (also echoed, for the build log). */
    private static String captured(Main m) throws Exception {
        PrintStream old = System.out;
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        System.setOut(new PrintStream(buf, true, StandardCharsets.UTF_8));
        try {
            m.run();
        } finally {
            System.setOut(old);
        }
        String s = buf.toString(StandardCharsets.UTF_8);
        old.print(s);
        return s;
    }
}
