package org.grpo4j.internal.model;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.grpo4j.internal.backend.TestBackends;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Where generation stops, as transformers' GenerationConfig and vLLM read it: generation_config.json's eos_token_id
 * (an int or a list), or config.json's for a model without that file, besides the tokenizer's EOS.
 */
class GenerationStopsTest {
    private static final LlamaConfig TWO_EOS = new LlamaConfig(64, 192, 2, 4, 2, 16, 512, 1e-5, 10000, null, 2048, false, 506, List.of(507, 3));

    @Test
    void theGenerationConfigsEosIdsOrConfigJsonsWithout(@TempDir Path tmp) throws Exception {
        assertEquals(List.of(507, 3), List.copyOf(GenerationStops.of(tmp, TWO_EOS, 507)), "no generation_config.json: config.json's ids");
        assertEquals(List.of(9, 507, 3), List.copyOf(GenerationStops.of(tmp, TWO_EOS, 9)), "the tokenizer's EOS first");
        assertEquals(List.of(507, 3), List.copyOf(GenerationStops.of(null, TWO_EOS, -1)), "no directory, no tokenizer EOS");
        Path gen = tmp.resolve("generation_config.json");
        Files.writeString(gen, "{\"eos_token_id\": 12}");
        assertEquals(List.of(507, 12), List.copyOf(GenerationStops.of(tmp, TWO_EOS, 507)), "the file wins over config.json");
        Files.writeString(gen, "{\"eos_token_id\": [507, 128, 129], \"temperature\": 0.6}");
        assertEquals(List.of(507, 128, 129), List.copyOf(GenerationStops.of(tmp, TWO_EOS, 507)));
        Files.writeString(gen, "{\"bos_token_id\": 506}");
        assertEquals(List.of(507), List.copyOf(GenerationStops.of(tmp, TWO_EOS, 507)), "a file without eos_token_id adds none");
        Files.writeString(gen, "{\"eos_token_id\": null}");
        assertEquals(List.of(507), List.copyOf(GenerationStops.of(tmp, TWO_EOS, 507)));
    }

    @Test
    void aBrokenGenerationConfigIsNamed(@TempDir Path tmp) throws Exception {
        Path gen = tmp.resolve("generation_config.json");
        for (String[] c : new String[][] {
                {"{\"eos_token_id\": [1, 2", gen + ": not valid JSON"},
                {"[1, 2]", gen + ": expected a JSON object"},
                {"{\"eos_token_id\": \"</s>\"}", gen + ": eos_token_id must be an int or a list of ints >= 0, got \"</s>\""},
                {"{\"eos_token_id\": [1, -2]}", gen + ": eos_token_id must be an int or a list of ints >= 0, got [1,-2]"},
                {"{\"eos_token_id\": 1.5}", gen + ": eos_token_id must be an int or a list of ints >= 0, got 1.5"}}) {
            Files.writeString(gen, c[0]);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> GenerationStops.of(tmp, TWO_EOS, 507), c[0]);
            assertTrue(e.getMessage().startsWith(c[1]), c[0] + " -> " + e.getMessage());
        }
    }

    /**
     * A saved model (a checkpoint's model/, an export) keeps its source's generation_config.json as it is, so that
     * what it generates stops where the source's did; a source without one gets one made from config.json.
     */
    @Test
    void aSavedModelKeepsItsSourcesGenerationConfig(@TempDir Path tmp) throws Exception {
        Path src = tmp.resolve("src");
        Files.createDirectories(src);
        for (String f : List.of("tokenizer.json", "tokenizer_config.json"))
            Files.copy(CheckpointIoTest.TOK.resolve(f), src.resolve(f));
        String gen = "{\n  \"eos_token_id\": [507, 128, 129],\n  \"temperature\": 0.6\n}\n";
        Files.writeString(src.resolve("generation_config.json"), gen);
        try (LlamaWeights w = LlamaWeights.init(TestBackends.cpu(), TWO_EOS, 1)) {
            w.save(tmp.resolve("kept"), "F32", 1L << 40, src);
            assertEquals(gen, Files.readString(tmp.resolve("kept/generation_config.json")));
            assertEquals(List.of(507, 128, 129), List.copyOf(GenerationStops.of(tmp.resolve("kept"), TWO_EOS, 507)));
            w.save(tmp.resolve("made"), "F32", 1L << 40, CheckpointIoTest.TOK);
            assertEquals(List.of(507, 3), GenerationStops.generationConfigIds(tmp.resolve("made"), TWO_EOS), "made from config.json's ids");
        }
    }
}
