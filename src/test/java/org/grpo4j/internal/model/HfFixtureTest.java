package org.grpo4j.internal.model;

import static org.junit.jupiter.api.Assertions.*;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.Conformance;
import org.grpo4j.internal.backend.TestBackends;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * grpo4j's Llama against HF transformers: logits, loss and gradients of a tiny random LlamaForCausalLM (llama3 RoPE
 * scaling, GQA, untied head) written by tools/reference/hf_llama_fixture.py with transformers 5, whose config.json
 * carries the RoPE settings as {@code rope_parameters}. The same weights are also read with the config rewritten to
 * the transformers 4 layout ({@code rope_theta} + {@code rope_scaling}).
 *
 * <p>Tolerances (fp32 against fp32): logits atol 2e-4 rtol 1e-4; loss 1e-5 relative; for each parameter, the L2 norm of
 * its whole gradient 3e-5 relative, and its first 16 elements |got - want| <= 2e-4 * rms(g) + 1e-4 * |want|, where
 * rms(g) = ||g||_2 / sqrt(n) is the reference gradient tensor's root-mean-square element. The absolute part scales
 * with the tensor because a gradient element is a sum over tokens (and rows) of terms about as large as the tensor's
 * typical element: fp32 accumulation error is relative to those terms, not to the sum, so an element that is small
 * by cancellation carries an error of the same size as its neighbours. Element 9 of layers.0.input_layernorm is the
 * case in point: 8.06e-4 in a tensor of rms 0.53, off by 1.1e-5 (1.4% of itself, 2e-5 of the rms). A fixed atol is
 * either too tight for tensors with large gradients or blind for tensors with small ones. Measured with transformers
 * 5.17 / torch 2.11 against the CPU backend: worst element error 3.3e-5 * rms, worst norm error 3.8e-6 relative, so
 * the bounds leave a margin of about 6-8 while a wrong RoPE or a missing term is off by O(rms).
 */
class HfFixtureTest {
    static final Path DIR = Path.of("src/test/resources/fixtures/hf-llama");
    static final ObjectMapper JSON = new ObjectMapper();

    static JsonNode expected() throws IOException { return JSON.readTree(DIR.resolve("expected.json").toFile()); }

    @Test
    void transformers5LayoutMatchesTransformers() throws Exception {
        JsonNode cfg = JSON.readTree(DIR.resolve("model/config.json").toFile());
        assertTrue(cfg.has("rope_parameters") && !cfg.has("rope_scaling") && !cfg.has("rope_theta"),
                "the committed fixture is the transformers 5 layout: " + cfg);
        assertMatchesTransformers(DIR.resolve("model"));
    }

    @Test
    void transformers4LayoutMatchesTransformers(@TempDir Path tmp) throws Exception {
        Path dir = transformers4Copy(tmp.resolve("model-v4"));
        assertMatchesTransformers(dir);
        assertEquals(LlamaConfig.read(DIR.resolve("model")), LlamaConfig.read(dir), "both layouts give the same config");
    }

    /**
     * grpo4j saves the fixture model and reads it back: the logits are bitwise the same, and the saved config.json
     * keeps the RoPE settings so that a reader of either layout alone gets them: with only the transformers 4 keys
     * left, and with only the transformers 5 key left, it parses to the fixture's config.
     */
    @Test
    void saveAndReloadKeepsTheModelAndBothRopeLayouts(@TempDir Path tmp) throws Exception {
        Backend be = TestBackends.cpu();
        JsonNode exp = expected();
        int[] tokens = tokens(exp);
        Path out = tmp.resolve("saved");
        try (LlamaWeights w = LlamaWeights.load(be, DIR.resolve("model"))) {
            LlamaConfig c = w.config();
            assertNotNull(c.ropeScaling(), "the fixture uses llama3 scaling");
            w.save(out, "F32", 1L << 30, null);
            float[] before = logits(w, tokens);
            try (LlamaWeights r = LlamaWeights.load(be, out)) {
                assertEquals(c, r.config());
                assertArrayEquals(before, logits(r, tokens), "logits after save + reload");
            }
            ObjectNode saved = (ObjectNode) JSON.readTree(out.resolve("config.json").toFile());
            ObjectNode v4only = saved.deepCopy();
            v4only.remove("rope_parameters");
            assertTrue(v4only.has("rope_theta") && v4only.get("rope_scaling").isObject(), "transformers 4 keys written: " + saved);
            assertEquals(c, LlamaConfig.fromJson(v4only), "the saved config read through rope_theta + rope_scaling only");
            ObjectNode v5only = saved.deepCopy();
            v5only.remove(List.of("rope_theta", "rope_scaling"));
            assertTrue(v5only.path("rope_parameters").isObject(), "transformers 5 key written: " + saved);
            assertEquals(c, LlamaConfig.fromJson(v5only), "the saved config read through rope_parameters only");
        }
    }

    /**
     * Rewrites the fixture's config.json into the transformers 4 layout, by hand (independently of LlamaConfig):
     * rope_parameters.rope_theta becomes top-level rope_theta, the rest of rope_parameters becomes rope_scaling. The
     * weights are copied into the temporary directory, so the repository holds them once.
     */
    static Path transformers4Copy(Path dir) throws IOException {
        Files.createDirectories(dir);
        ObjectNode cfg = (ObjectNode) JSON.readTree(DIR.resolve("model/config.json").toFile());
        ObjectNode rope = (ObjectNode) cfg.remove("rope_parameters");
        cfg.set("rope_theta", rope.remove("rope_theta"));
        cfg.set("rope_scaling", rope);
        JSON.writerWithDefaultPrettyPrinter().writeValue(dir.resolve("config.json").toFile(), cfg);
        Files.copy(DIR.resolve("model/model.safetensors"), dir.resolve("model.safetensors"));
        return dir;
    }

    static void assertMatchesTransformers(Path modelDir) throws Exception {
        JsonNode exp = expected();
        Backend be = TestBackends.cpu();
        try (LlamaWeights w = LlamaWeights.load(be, modelDir); LlamaWeights grads = LlamaWeights.zeros(be, w.config())) {
            LlamaModel m = new LlamaModel(w);
            int[] tokens = tokens(exp);
            int v = w.config().vocabSize();
            double[] want = new double[tokens.length * v];
            for (int t = 0; t < tokens.length; t++) for (int j = 0; j < v; j++) want[t * v + j] = exp.get("logits").get(t).get(j).asDouble();
            Conformance.assertClose("logits vs transformers", want, logits(w, tokens), 2e-4, 1e-4);
            double[][] coef = {new double[tokens.length]};
            Arrays.fill(coef[0], -1.0 / (tokens.length - 1)); // mean cross-entropy = -mean logp
            LlamaModelTest.lossAndGrads(m, List.of(tokens), coef, grads, true); // grads of the mean cross-entropy
            assertEquals(exp.get("loss").asDouble(), -LlamaModelTest.lossAndGradsValueOnly(m, List.of(tokens)), 1e-5 * exp.get("loss").asDouble());
            assertEquals(w.layout().entries().size(), exp.get("grads").size(), "a reference gradient for every parameter");
            for (var it = exp.get("grads").fields(); it.hasNext(); ) {
                var e = it.next();
                ParameterLayout.Entry en = w.layout().get(e.getKey());
                float[] all = grads.get(e.getKey()).toFloats();
                double norm = 0;
                for (float x : all) norm += (double) x * x;
                norm = Math.sqrt(norm);
                double wantNorm = e.getValue().get("norm").asDouble();
                assertEquals(wantNorm, norm, 3e-5 * wantNorm, "grad " + en.name() + ": L2 norm");
                double rms = wantNorm / Math.sqrt(all.length);
                double[] first = new double[16];
                float[] got = new float[16];
                for (int i = 0; i < 16; i++) {
                    first[i] = e.getValue().get("first16").get(i).asDouble();
                    got[i] = all[i];
                }
                Conformance.assertClose("grad " + en.name() + " (atol = 2e-4 * rms " + rms + ")", first, got, 2e-4 * rms, 1e-4);
            }
        }
    }

    static int[] tokens(JsonNode exp) {
        int[] tokens = new int[exp.get("tokens").size()];
        for (int i = 0; i < tokens.length; i++) tokens[i] = exp.get("tokens").get(i).asInt();
        return tokens;
    }

    static float[] logits(LlamaWeights w, int[] tokens) {
        try (PackedBatch b = PackedBatch.of(w.backend(), List.of(tokens), w.config().vocabSize())) {
            return new LlamaModel(w).logits(b);
        }
    }
}
