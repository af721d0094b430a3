package usage;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Path;
import java.util.List;
import org.grpo4j.Backend;
import org.grpo4j.Completion;
import org.grpo4j.Model;
import org.grpo4j.Sampling;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code Model.load(dir, backend, chatTemplate, precision)}: bf16 generation through the public API on the CPU. */
class ModelPrecisionTest {
    @TempDir static Path tmp;
    static Path modelDir;

    @BeforeAll
    static void train() throws Exception {
        modelDir = ApiExampleTest.trainedModel(tmp);
    }

    @Test
    void theDefaultIsAutoWhichIsFp32OnTheCpu() throws Exception {
        Sampling s = Sampling.defaults().samples(2).maxTokens(6).seed(3);
        try (Backend be = Backend.open("cpu"); Model byDefault = Model.load(modelDir, be); Model auto = Model.load(modelDir, be, null, "auto");
             Model fp32 = Model.load(modelDir, be, null, "fp32"); Model tulu = Model.load(modelDir, be, "tulu")) {
            assertEquals("fp32", byDefault.precision());
            assertEquals("fp32", auto.precision());
            assertEquals("fp32", tulu.precision());
            List<List<Completion>> a = byDefault.generate(List.of("3 + 4 ="), s), b = fp32.generate(List.of("3 + 4 ="), s);
            for (int j = 0; j < 2; j++) {
                assertArrayEquals(b.get(0).get(j).tokenIds(), a.get(0).get(j).tokenIds());
                assertArrayEquals(b.get(0).get(j).logprobs(), a.get(0).get(j).logprobs());
            }
        }
    }

    /**
     * Greedy completions in bf16 against fp32: the same tokens for the first few, log-probs within 0.015 each, and
     * not equal bit for bit (the bf16 model ran in bf16). The tolerance is GeneratePrecisionTest's 10 sigma for this
     * model's shapes (sigma = sqrt(2) sqrt(21 / 3) 2^-9 |h| |w_v| / sqrt(64) with |h| ~ 8 after the final norm and
     * |w_v| ~ 0.2, about 1.5e-3); one training step at learning rate 1e-3 leaves those norms where they were. Greedy
     * tokens could swap only at a near-tie of the two largest logits (within 0.015); the first tokens of these prompts
     * have none (the CPU's arithmetic is deterministic, so this does not flake).
     */
    @Test
    void bf16GreedyCompletionsTrackFp32() throws Exception {
        Sampling greedy = Sampling.defaults().temperature(0).maxTokens(8);
        List<String> prompts = List.of("3 + 4 =", "Mia has 2 pens and gets 5 more. How many pens now?");
        try (Backend be = Backend.open("cpu"); Model fp32 = Model.load(modelDir, be, null, "fp32"); Model bf16 = Model.load(modelDir, be, null, "bf16")) {
            assertEquals("bf16", bf16.precision());
            assertTrue(bf16.toString().endsWith(", bf16]"), bf16.toString());
            assertEquals(fp32.parameters(), bf16.parameters());
            List<List<Completion>> a = fp32.generate(prompts, greedy), b = bf16.generate(prompts, greedy);
            assertEquals(b.toString(), bf16.generate(prompts, greedy).toString(), "bf16 greedy decoding repeats exactly");
            double worst = 0;
            for (int i = 0; i < prompts.size(); i++) {
                Completion x = a.get(i).get(0), y = b.get(i).get(0);
                assertTrue(y.length() >= 1 && y.length() <= 8, y.toString());
                assertEquals(bf16.decode(y.tokenIds()), y.text());
                int[] tx = x.tokenIds(), ty = y.tokenIds();
                float[] lx = x.logprobs(), ly = y.logprobs();
                for (float lp : ly) assertTrue(Float.isFinite(lp) && lp <= 0, "a log-probability: " + lp);
                int same = 0;
                while (same < Math.min(tx.length, ty.length) && tx[same] == ty[same]) {
                    worst = Math.max(worst, Math.abs(lx[same] - ly[same]));
                    same++;
                }
                System.out.printf("prompt %d: %d of %d greedy tokens the same in bf16 as in fp32%n", i, same, tx.length);
                assertTrue(same >= Math.min(4, tx.length), "the first greedy tokens: fp32 " + x + ", bf16 " + y);
            }
            System.out.printf("worst log-prob difference bf16 vs fp32: %.2e%n", worst);
            assertTrue(worst <= 0.015, "log-prob difference " + worst);
            assertTrue(worst > 0, "bf16 log-probs equal fp32's bit for bit: the model did not run in bf16");
        }
    }

    @Test
    void anUnknownPrecisionIsRefusedNamingTheValidOnes() throws Exception {
        try (Backend be = Backend.open("cpu")) {
            for (String bad : List.of("fp16", "BF16", "float32")) {
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Model.load(modelDir, be, null, bad));
                assertEquals("precision must be auto, fp32 or bf16, got " + bad, e.getMessage());
            }
            // checked first: before the directory is looked at
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Model.load(tmp.resolve("nowhere"), be, null, "fp16"));
            assertTrue(e.getMessage().contains("auto, fp32 or bf16"), e.getMessage());
            NullPointerException npe = assertThrows(NullPointerException.class, () -> Model.load(modelDir, be, null, null));
            assertEquals("precision", npe.getMessage());
        }
    }
}
