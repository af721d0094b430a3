package org.grpo4j.model;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.grpo4j.backend.Backend;
import org.grpo4j.backend.Conformance;
import org.grpo4j.backend.TestBackends;
import org.junit.jupiter.api.Test;

/**
 * grpo4j's Llama against HF transformers: logits, loss and gradients of a tiny random LlamaForCausalLM written by
 * tools/reference/hf_llama_fixture.py. Pending until that script has run on a host with torch + transformers
 * (the GPU hosts); it then compares automatically. Tolerances: logits atol 2e-4 rtol 1e-4 (fp32 vs fp32),
 * loss 1e-5 relative, gradients atol 1e-5 rtol 1e-3.
 */
class HfFixtureTest {
    static final Path DIR = Path.of("src/test/resources/fixtures/hf-llama");

    @Test
    void matchesTransformers() throws Exception {
        assumeTrue(Files.isRegularFile(DIR.resolve("expected.json")),
                "pending: fixtures not generated yet; run python3 tools/reference/hf_llama_fixture.py on a host with torch + transformers");
        JsonNode exp = new ObjectMapper().readTree(DIR.resolve("expected.json").toFile());
        Backend be = TestBackends.cpu();
        try (LlamaWeights w = LlamaWeights.load(be, DIR.resolve("model")); LlamaWeights grads = LlamaWeights.zeros(be, w.config())) {
            LlamaModel m = new LlamaModel(w);
            int[] tokens = new int[exp.get("tokens").size()];
            for (int i = 0; i < tokens.length; i++) tokens[i] = exp.get("tokens").get(i).asInt();
            int v = w.config().vocabSize();
            double[] want = new double[tokens.length * v];
            for (int t = 0; t < tokens.length; t++) for (int j = 0; j < v; j++) want[t * v + j] = exp.get("logits").get(t).get(j).asDouble();
            try (PackedBatch b = PackedBatch.of(be, List.of(tokens), v)) {
                Conformance.assertClose("logits vs transformers", want, m.logits(b), 2e-4, 1e-4);
            }
            double[][] coef = {new double[tokens.length]};
            java.util.Arrays.fill(coef[0], -1.0 / (tokens.length - 1)); // mean cross-entropy = -mean logp
            LlamaModelTest.lossAndGrads(m, List.of(tokens), coef, grads, true); // grads of the mean cross-entropy
            assertEquals(exp.get("loss").asDouble(), -LlamaModelTest.lossAndGradsValueOnly(m, List.of(tokens)), 1e-5 * exp.get("loss").asDouble());
            for (var it = exp.get("grads").fields(); it.hasNext(); ) {
                var e = it.next();
                ParameterLayout.Entry en = w.layout().get(e.getKey());
                float[] all = grads.get(e.getKey()).toFloats();
                double[] first = new double[16];
                float[] got = new float[16];
                for (int i = 0; i < 16; i++) {
                    first[i] = e.getValue().get("first16").get(i).asDouble();
                    got[i] = all[i];
                }
                Conformance.assertClose("grad " + en.name(), first, got, 1e-5, 1e-3);
            }
        }
    }
}
