package org.grpo4j.internal.model;

import static org.junit.jupiter.api.Assertions.*;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.function.Consumer;
import org.grpo4j.internal.backend.Rope;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * config.json parsing: both RoPE layouts, and a one-line refusal naming the key and value for everything that would
 * change LlamaForCausalLM's math and that grpo4j does not implement. Every case starts from the transformers 5 config
 * of the HF fixture (see HfFixtureTest) and changes one thing.
 */
class LlamaConfigTest {
    static final ObjectMapper JSON = new ObjectMapper();

    static ObjectNode fixture() throws IOException {
        return (ObjectNode) JSON.readTree(HfFixtureTest.DIR.resolve("model/config.json").toFile());
    }

    /** The fixture's config.json in the transformers 4 layout: rope_theta + rope_scaling, no rope_parameters. */
    static ObjectNode fixtureV4() throws IOException {
        ObjectNode c = fixture();
        ObjectNode rope = (ObjectNode) c.remove("rope_parameters");
        c.set("rope_theta", rope.remove("rope_theta"));
        c.set("rope_scaling", rope);
        return c;
    }

    static ObjectNode with(ObjectNode c, Consumer<ObjectNode> edit) {
        edit.accept(c);
        return c;
    }

    static ObjectNode rope(ObjectNode c) { return (ObjectNode) c.get("rope_parameters"); }

    /** Asserts a one-line refusal that contains each of {@code mustName}. */
    static void refused(JsonNode cfg, String... mustName) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> LlamaConfig.fromJson(cfg), cfg::toString);
        String m = e.getMessage();
        assertFalse(m.contains("\n"), "one line: " + m);
        for (String s : mustName) assertTrue(m.contains(s), "'" + s + "' named in: " + m);
    }

    @Test
    void bothLayoutsGiveTheSameLlama3Rope() throws IOException {
        LlamaConfig v5 = LlamaConfig.fromJson(fixture()), v4 = LlamaConfig.fromJson(fixtureV4());
        assertEquals(v5, v4);
        JsonNode r = fixture().get("rope_parameters");
        assertEquals(r.get("rope_theta").asDouble(), v5.ropeTheta());
        assertEquals(new Rope.Llama3Scaling(r.get("factor").asDouble(), r.get("low_freq_factor").asDouble(),
                r.get("high_freq_factor").asDouble(), r.get("original_max_position_embeddings").asInt()), v5.ropeScaling());
        // both layouts at once, agreeing (what grpo4j writes)
        ObjectNode both = fixture();
        fixtureV4().fields().forEachRemaining(f -> both.set(f.getKey(), f.getValue()));
        assertEquals(v5, LlamaConfig.fromJson(both));
    }

    @Test
    void transformers5DefaultsAndMixedLayoutsAreReadAsTransformers5Does() throws IOException {
        LlamaConfig ref = LlamaConfig.fromJson(fixture());
        // rope_parameters without rope_theta takes the top-level rope_theta (transformers 5 setdefault)
        ObjectNode split = with(fixture(), c -> c.set("rope_theta", rope(c).remove("rope_theta")));
        assertEquals(ref, LlamaConfig.fromJson(split));
        // legacy "type" instead of "rope_type"
        ObjectNode legacyType = with(fixtureV4(), c -> ((ObjectNode) c.get("rope_scaling")).set("type", ((ObjectNode) c.get("rope_scaling")).remove("rope_type")));
        assertEquals(ref, LlamaConfig.fromJson(legacyType));
        // no scaling: rope_type default, in either layout, or no rope keys at all (LlamaConfig's default theta 10000)
        ObjectNode plain5 = with(fixture(), c -> c.putObject("rope_parameters").put("rope_type", "default").put("rope_theta", 500000.0));
        ObjectNode plain4 = with(fixture(), c -> {
            c.remove("rope_parameters");
            c.putNull("rope_scaling").put("rope_theta", 500000);
        });
        assertNull(LlamaConfig.fromJson(plain5).ropeScaling());
        assertEquals(500000.0, LlamaConfig.fromJson(plain5).ropeTheta());
        assertEquals(LlamaConfig.fromJson(plain5), LlamaConfig.fromJson(plain4));
        LlamaConfig none = LlamaConfig.fromJson(with(fixture(), c -> c.remove("rope_parameters")));
        assertNull(none.ropeScaling());
        assertEquals(10000.0, none.ropeTheta());
        // keys that do not change the function: pretraining_tp > 1 (sliced matmuls), swish (= silu in HF's ACT2FN)
        assertEquals(ref, LlamaConfig.fromJson(with(fixture(), c -> c.put("pretraining_tp", 2).put("hidden_act", "swish"))));
        assertEquals(ref, LlamaConfig.fromJson(with(fixture(), c -> c.put("partial_rotary_factor", 1.0).put("attention_dropout", 0))));
    }

    @Test
    void otherRopeTypesAreRefusedNamingKeyAndValue() throws IOException {
        for (String t : List.of("linear", "dynamic", "yarn", "longrope", "proportional"))
            refused(with(fixture(), c -> rope(c).put("rope_type", t)), "rope_parameters.rope_type", "\"" + t + "\"");
        refused(with(fixtureV4(), c -> c.putObject("rope_scaling").put("type", "linear").put("factor", 2.0)), "rope_scaling.type", "\"linear\"");
        refused(with(fixtureV4(), c -> ((ObjectNode) c.get("rope_scaling")).put("rope_type", "yarn")), "rope_scaling.rope_type", "\"yarn\"");
        refused(with(fixture(), c -> rope(c).put("type", "linear")), "rope_parameters.rope_type", "rope_parameters.type", "\"linear\"");
    }

    @Test
    void ropeKeysThatWouldBeIgnoredAreRefused() throws IOException {
        refused(with(fixture(), c -> rope(c).put("attention_factor", 1.2)), "rope_parameters.attention_factor", "1.2");
        refused(with(fixture(), c -> rope(c).put("rope_type", "default")), "rope_parameters.factor", "8.0", "default");
        refused(with(fixture(), c -> rope(c).put("partial_rotary_factor", 0.5)), "rope_parameters.partial_rotary_factor", "0.5");
        refused(with(fixture(), c -> rope(c).remove("low_freq_factor")), "rope_parameters.low_freq_factor");
        refused(with(fixture(), c -> rope(c).put("original_max_position_embeddings", 16.5)), "rope_parameters.original_max_position_embeddings", "16.5");
        refused(with(fixture(), c -> rope(c).put("rope_theta", "10000")), "rope_parameters.rope_theta", "\"10000\"");
        refused(with(fixture(), c -> c.put("rope_parameters", 10000)), "rope_parameters", "10000");
        // a transformers 5 per-layer-type dictionary (Gemma-style): not a Llama layout
        refused(with(fixture(), c -> c.putObject("rope_parameters").putObject("full_attention").put("rope_type", "default")), "rope_parameters.full_attention");
    }

    @Test
    void layoutsThatDisagreeAreRefusedNamingBoth() throws IOException {
        refused(with(fixture(), c -> c.put("rope_theta", 500000.0)), "rope_theta 500000.0", "rope_parameters.rope_theta 10000.0");
        ObjectNode scaled = with(fixture(), c -> c.set("rope_scaling", ((ObjectNode) rope(c).deepCopy().without("rope_theta")).put("factor", 32.0)));
        refused(scaled, "rope_scaling", "32.0", "rope_parameters", "8.0");
        ObjectNode unscaled = with(fixture(), c -> c.set("rope_scaling", JSON.createObjectNode().put("rope_type", "default")));
        refused(unscaled, "rope_scaling", "rope_parameters", "llama3");
        ObjectNode innerTheta = with(fixtureV4(), c -> ((ObjectNode) c.get("rope_scaling")).put("rope_theta", 500000.0));
        refused(innerTheta, "rope_theta 10000.0", "rope_scaling.rope_theta 500000.0");
    }

    @Test
    void otherMathChangingKeysAreRefusedNamingKeyAndValue() throws IOException {
        refused(with(fixture(), c -> c.put("attention_bias", true)), "attention_bias true");
        refused(with(fixture(), c -> c.put("mlp_bias", true)), "mlp_bias true");
        refused(with(fixture(), c -> c.put("attention_bias", "false")), "attention_bias", "\"false\"");
        for (String a : List.of("gelu", "relu", "gelu_pytorch_tanh"))
            refused(with(fixture(), c -> c.put("hidden_act", a)), "hidden_act", "\"" + a + "\"");
        refused(with(fixture(), c -> c.put("attention_dropout", 0.1)), "attention_dropout 0.1");
        refused(with(fixture(), c -> c.put("partial_rotary_factor", 0.5)), "partial_rotary_factor 0.5");
        refused(with(fixture(), c -> c.putObject("quantization_config").put("quant_method", "gptq")), "quantization_config", "gptq");
        refused(with(fixture(), c -> c.put("pretraining_tp", 0)), "pretraining_tp", "0");
        refused(with(fixture(), c -> c.put("tie_word_embeddings", 1)), "tie_word_embeddings", "1");
        refused(with(fixture(), c -> c.put("rms_norm_eps", "1e-5")), "rms_norm_eps", "\"1e-5\"");
        refused(with(fixture(), c -> {
            c.remove("head_dim");
            c.put("hidden_size", 66);
        }), "head_dim", "hidden_size 66", "num_attention_heads 4");
    }

    @Test
    void readNamesTheFile(@TempDir Path tmp) throws IOException {
        Path f = tmp.resolve("config.json");
        Files.writeString(f, with(fixture(), c -> rope(c).put("rope_type", "yarn")).toString());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> LlamaConfig.read(tmp));
        assertTrue(e.getMessage().startsWith(f + ": rope_parameters.rope_type \"yarn\""), e.getMessage());
    }

    /** meta-llama/Llama-3.2-1B-Instruct's config.json (the fields that define the model), as published on the HF hub. */
    static final String LLAMA_32_1B_CONFIG = """
            {"architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 128000,
             "eos_token_id": [128001, 128008, 128009], "head_dim": 64, "hidden_act": "silu", "hidden_size": 2048,
             "initializer_range": 0.02, "intermediate_size": 8192, "max_position_embeddings": 131072, "mlp_bias": false,
             "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8,
             "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0,
             "low_freq_factor": 1.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"},
             "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16", "use_cache": true,
             "vocab_size": 128256}""";

    @Test
    void presetsMatchThePublishedConfigsAndParameterCounts() throws IOException {
        assertEquals(LlamaConfig.fromJson(JSON.readTree(LLAMA_32_1B_CONFIG)), LlamaConfig.llama32_1b());
        // HF's parameter counts of the two models (model cards / safetensors metadata)
        assertEquals(1_235_814_400L, new ParameterLayout(LlamaConfig.llama32_1b()).totalElements());
        assertEquals(8_030_261_248L, new ParameterLayout(LlamaConfig.llama31_8b()).totalElements());
        // what grpo4j writes reads back as the same preset
        for (String name : LlamaConfig.NAMED_PRESETS) {
            LlamaConfig c = LlamaConfig.preset(name);
            assertEquals(c, LlamaConfig.fromJson(c.toJson("bfloat16")), name);
        }
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> LlamaConfig.preset("llama-70b"));
        assertTrue(e.getMessage().contains("\"llama-70b\"") && e.getMessage().contains("llama-3.1-8b-4l"), e.getMessage());
    }

    @Test
    void truncationKeepsEverythingButTheLayerCount() {
        LlamaConfig full = LlamaConfig.llama31_8b(), four = LlamaConfig.preset("llama-3.1-8b-4l");
        assertEquals(full.withLayers(4), four);
        assertEquals(4, four.numLayers());
        assertEquals(full, full.withLayers(32));
        // 4 of the 8B's 32 layers plus its whole embeddings, LM head and final norm
        long layer = (new ParameterLayout(full).totalElements() - 2L * 128256 * 4096 - 4096) / 32;
        assertEquals(2L * 128256 * 4096 + 4096 + 4 * layer, new ParameterLayout(four).totalElements());
        for (int bad : new int[] {0, 33}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> full.withLayers(bad));
            assertTrue(e.getMessage().contains("to " + bad), e.getMessage());
        }
    }
}
