package org.grpo4j.internal.cli;

import static org.junit.jupiter.api.Assertions.*;

import com.fasterxml.jackson.databind.JsonNode;
import java.nio.file.Path;
import java.util.List;
import org.grpo4j.Backend;
import org.grpo4j.ChatMessage;
import org.grpo4j.Completion;
import org.grpo4j.Model;
import org.grpo4j.Sampling;
import org.grpo4j.internal.backend.TestBackends;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Generation on CUDA in its default precision, bf16 (issue 14): {@code grpo4j generate} and {@code Model.load} on the
 * GPU resolve "auto" to bf16, and their greedy completions of the tiny model track the CPU's fp32 ones as
 * {@link GeneratePrecisionTest#assertTracksFp32} states (bf16's rounding dominates the GPU's other differences: fp32
 * accumulation in another order).
 */
@Tag("gpu")
class CudaGeneratePrecisionTest {
    @Test
    void generateAndTheApiRunBf16OnCudaByDefault(@TempDir Path tmp) throws Exception {
        TestBackends.cuda(); // skips without a GPU (and loads the CUDA runtime the way the other CUDA tests do)
        Path model = tmp.resolve("tiny");
        assertEquals(0, CliTest.run("init-model", "--preset", "tiny", "--out", model.toString(), "--seed", "0").code());
        for (String prompt : List.of("Tom has 2 pens.", "What is 3 + 4?")) {
            String[] args = {"generate", "--model", model.toString(), "--json", "--prompt", prompt, "--max-tokens", "16", "--temperature", "0", "--backend", "cpu"};
            CliTest.Run cpu = CliTest.run(args);
            args[args.length - 1] = "cuda";
            CliTest.Run gpu = CliTest.run(args);
            assertEquals(0, cpu.code(), cpu.err());
            assertEquals(0, gpu.code(), gpu.err());
            assertTrue(cpu.err().contains("grpo4j generate: fp32,"), cpu.err());
            assertTrue(gpu.err().contains("grpo4j generate: bf16,"), gpu.err());
            GeneratePrecisionTest.assertTracksFp32(model, GeneratePrecisionTest.JSON.readTree(cpu.out()), GeneratePrecisionTest.JSON.readTree(gpu.out()),
                    "cuda, \"" + prompt + "\"");
        }

        Sampling greedy = Sampling.defaults().temperature(0).maxTokens(16);
        try (Backend cpu = Backend.open("cpu"); Backend gpu = Backend.open("cuda"); Model m32 = Model.load(model, cpu, "tulu");
             Model m16 = Model.load(model, gpu, "tulu"); Model f32 = Model.load(model, gpu, "tulu", "fp32")) {
            assertEquals("fp32", m32.precision());
            assertEquals("bf16", m16.precision());
            assertEquals("fp32", f32.precision());
            List<ChatMessage> chat = List.of(new ChatMessage("user", "Tom has 2 pens."));
            int[] prompt = m32.encode(m32.renderChat(chat));
            Completion a = m32.generateChats(List.of(chat), greedy).get(0).get(0), b = m16.generateChats(List.of(chat), greedy).get(0).get(0);
            GeneratePrecisionTest.assertTracksFp32(model, asJson(prompt, a), asJson(prompt, b), "cuda Model");
            assertTrue(f32.generateChats(List.of(chat), greedy).get(0).get(0).length() >= 1);
        }
    }

    /** A completion in generate --json's shape. */
    static JsonNode asJson(int[] prompt, Completion c) {
        var o = GeneratePrecisionTest.JSON.createObjectNode();
        o.putPOJO("prompt_ids", prompt);
        var e = o.putArray("completions").addObject();
        e.putPOJO("ids", c.tokenIds());
        e.putPOJO("logprobs", c.logprobs());
        return GeneratePrecisionTest.JSON.valueToTree(o);
    }
}
