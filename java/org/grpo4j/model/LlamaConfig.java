package org.grpo4j.model;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.grpo4j.backend.Rope;

/**
 * A Llama 3.x architecture, read from and written to HF {@code config.json} (LlamaForCausalLM: RMSNorm, RoPE with
 * optional llama3 scaling, grouped-query attention without biases, SwiGLU MLP).
 */
public record LlamaConfig(int hiddenSize, int intermediateSize, int numLayers, int numHeads, int numKvHeads, int headDim,
                          int vocabSize, double rmsNormEps, double ropeTheta, Rope.Llama3Scaling ropeScaling,
                          int maxPositionEmbeddings, boolean tieWordEmbeddings, int bosTokenId, List<Integer> eosTokenIds) {

    private static final ObjectMapper JSON = new ObjectMapper();

    public LlamaConfig {
        eosTokenIds = List.copyOf(eosTokenIds);
        String where = "config";
        positive(where, "hidden_size", hiddenSize);
        positive(where, "intermediate_size", intermediateSize);
        positive(where, "num_hidden_layers", numLayers);
        positive(where, "num_attention_heads", numHeads);
        positive(where, "num_key_value_heads", numKvHeads);
        positive(where, "head_dim", headDim);
        positive(where, "vocab_size", vocabSize);
        positive(where, "max_position_embeddings", maxPositionEmbeddings);
        if (numHeads % numKvHeads != 0)
            throw new IllegalArgumentException("config: num_attention_heads " + numHeads + " is not a multiple of num_key_value_heads " + numKvHeads);
        if (headDim % 2 != 0) throw new IllegalArgumentException("config: head_dim must be even for RoPE, got " + headDim);
        if (!(rmsNormEps > 0)) throw new IllegalArgumentException("config: rms_norm_eps must be > 0, got " + rmsNormEps);
        new Rope(headDim, ropeTheta, ropeScaling); // validates theta and scaling
    }

    private static void positive(String where, String name, int v) {
        if (v <= 0) throw new IllegalArgumentException(where + ": " + name + " must be positive, got " + v);
    }

    public Rope rope() { return new Rope(headDim, ropeTheta, ropeScaling); }

    public int qDim() { return numHeads * headDim; }

    public int kvDim() { return numKvHeads * headDim; }

    // ---- presets ------------------------------------------------------------------------------------------------

    /** The tiny demo model: 2 layers, hidden 64, 4 query / 2 kv heads of 16, SwiGLU 192. */
    public static LlamaConfig tiny(int vocabSize, int bos, int eos) {
        return new LlamaConfig(64, 192, 2, 4, 2, 16, vocabSize, 1e-5, 10000, null, 2048, false, bos, List.of(eos));
    }

    /** Llama 3.1 8B shapes (for memory estimates). */
    public static LlamaConfig llama31_8b() {
        return new LlamaConfig(4096, 14336, 32, 32, 8, 128, 128256, 1e-5, 500000, new Rope.Llama3Scaling(8, 1, 4, 8192),
                131072, false, 128000, List.of(128001, 128008, 128009));
    }

    // ---- config.json --------------------------------------------------------------------------------------------

    public static LlamaConfig read(Path modelDir) throws IOException {
        Path f = Files.isDirectory(modelDir) ? modelDir.resolve("config.json") : modelDir;
        if (!Files.isRegularFile(f)) throw new NoSuchFileException(f.toString(), null, "no config.json");
        JsonNode n;
        try {
            n = JSON.readTree(f.toFile());
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IOException(f + ": not valid JSON: " + org.grpo4j.util.JsonErrors.describe(e), e);
        }
        if (n == null || n.isMissingNode()) throw new IOException(f + ": empty (expected the model's config as a JSON object)");
        try {
            return fromJson(n);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(f + ": " + e.getMessage(), e);
        }
    }

    public static LlamaConfig fromJson(JsonNode n) {
        if (!n.isObject()) throw new IllegalArgumentException("config must be a JSON object");
        String type = n.path("model_type").asText("");
        boolean llamaArch = false;
        for (JsonNode a : n.path("architectures")) llamaArch |= a.asText().equals("LlamaForCausalLM");
        if (!type.equals("llama") && !llamaArch)
            throw new IllegalArgumentException("unsupported architecture (model_type \"" + type + "\", architectures "
                    + n.path("architectures") + "); grpo4j supports Llama (LlamaForCausalLM)");
        if (n.path("attention_bias").asBoolean(false) || n.path("mlp_bias").asBoolean(false))
            throw new IllegalArgumentException("attention_bias/mlp_bias are not supported (Llama 3 has none)");
        String act = n.path("hidden_act").asText("silu");
        if (!act.equals("silu")) throw new IllegalArgumentException("hidden_act \"" + act + "\" is not supported (expected silu)");
        int hidden = req(n, "hidden_size"), heads = req(n, "num_attention_heads");
        int kv = n.has("num_key_value_heads") && !n.get("num_key_value_heads").isNull() ? req(n, "num_key_value_heads") : heads;
        int headDim = n.has("head_dim") && !n.get("head_dim").isNull() ? req(n, "head_dim") : hidden / heads;
        Rope.Llama3Scaling scaling = null;
        JsonNode rs = n.get("rope_scaling");
        if (rs != null && !rs.isNull()) {
            String rt = rs.path("rope_type").asText(rs.path("type").asText(""));
            if (!rt.equals("llama3")) throw new IllegalArgumentException("rope_scaling type \"" + rt + "\" is not supported (expected llama3 or null)");
            scaling = new Rope.Llama3Scaling(reqD(rs, "factor", "rope_scaling.factor"), reqD(rs, "low_freq_factor", "rope_scaling.low_freq_factor"),
                    reqD(rs, "high_freq_factor", "rope_scaling.high_freq_factor"),
                    (int) reqD(rs, "original_max_position_embeddings", "rope_scaling.original_max_position_embeddings"));
        }
        List<Integer> eos = new ArrayList<>();
        JsonNode e = n.get("eos_token_id");
        if (e != null && e.isArray()) for (JsonNode x : e) eos.add(x.asInt());
        else if (e != null && e.isInt()) eos.add(e.asInt());
        else if (e != null && !e.isNull()) throw new IllegalArgumentException("eos_token_id must be an int or a list of ints, got " + e);
        return new LlamaConfig(hidden, req(n, "intermediate_size"), req(n, "num_hidden_layers"), heads, kv, headDim,
                req(n, "vocab_size"), n.path("rms_norm_eps").asDouble(1e-6), n.path("rope_theta").asDouble(10000), scaling,
                n.path("max_position_embeddings").asInt(2048), n.path("tie_word_embeddings").asBoolean(false),
                n.path("bos_token_id").asInt(-1), eos);
    }

    private static int req(JsonNode n, String key) {
        JsonNode v = n.get(key);
        if (v == null || v.isNull()) throw new IllegalArgumentException("field " + key + " is missing");
        if (!v.isIntegralNumber()) throw new IllegalArgumentException("field " + key + " must be an integer, got " + v);
        return v.asInt();
    }

    private static double reqD(JsonNode n, String key, String name) {
        JsonNode v = n.get(key);
        if (v == null || !v.isNumber()) throw new IllegalArgumentException("field " + name + " must be a number, got " + v);
        return v.asDouble();
    }

    public ObjectNode toJson(String torchDtype) {
        ObjectNode o = JSON.createObjectNode();
        o.putArray("architectures").add("LlamaForCausalLM");
        o.put("model_type", "llama");
        o.put("attention_bias", false);
        o.put("attention_dropout", 0.0);
        o.put("bos_token_id", bosTokenId);
        if (eosTokenIds.size() == 1) o.put("eos_token_id", eosTokenIds.get(0));
        else {
            ArrayNode a = o.putArray("eos_token_id");
            eosTokenIds.forEach(a::add);
        }
        o.put("head_dim", headDim);
        o.put("hidden_act", "silu");
        o.put("hidden_size", hiddenSize);
        o.put("initializer_range", 0.02);
        o.put("intermediate_size", intermediateSize);
        o.put("max_position_embeddings", maxPositionEmbeddings);
        o.put("mlp_bias", false);
        o.put("num_attention_heads", numHeads);
        o.put("num_hidden_layers", numLayers);
        o.put("num_key_value_heads", numKvHeads);
        o.put("pretraining_tp", 1);
        o.put("rms_norm_eps", rmsNormEps);
        if (ropeScaling == null) o.putNull("rope_scaling");
        else {
            ObjectNode r = o.putObject("rope_scaling");
            r.put("factor", ropeScaling.factor());
            r.put("high_freq_factor", ropeScaling.highFreqFactor());
            r.put("low_freq_factor", ropeScaling.lowFreqFactor());
            r.put("original_max_position_embeddings", ropeScaling.originalMaxPositionEmbeddings());
            r.put("rope_type", "llama3");
        }
        o.put("rope_theta", ropeTheta);
        o.put("tie_word_embeddings", tieWordEmbeddings);
        o.put("torch_dtype", torchDtype);
        o.put("use_cache", true);
        o.put("vocab_size", vocabSize);
        return o;
    }
}
