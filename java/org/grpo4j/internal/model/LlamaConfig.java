package org.grpo4j.internal.model;

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
import java.util.Objects;
import java.util.Set;
import org.grpo4j.internal.backend.Rope;

/**
 * A Llama 3.x architecture, read from and written to HF {@code config.json} (LlamaForCausalLM: RMSNorm, RoPE with
 * optional llama3 scaling, grouped-query attention without biases, SwiGLU MLP).
 */
public record LlamaConfig(int hiddenSize, int intermediateSize, int numLayers, int numHeads, int numKvHeads, int headDim,
                          int vocabSize, double rmsNormEps, double ropeTheta, Rope.Llama3Scaling ropeScaling,
                          int maxPositionEmbeddings, boolean tieWordEmbeddings, int bosTokenId, List<Integer> eosTokenIds) {

    private static final ObjectMapper JSON = org.grpo4j.internal.util.JsonFiles.MAPPER;

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
        if ((long) numHeads * headDim > Integer.MAX_VALUE)
            throw new IllegalArgumentException("config: num_attention_heads " + numHeads + " x head_dim " + headDim + " is more than 2^31 - 1");
        // (a typo such as num_hidden_layers 20000000 built a layout of 9 entries a layer until the heap ran out)
        double params = parameterCount(hiddenSize, intermediateSize, numLayers, numHeads, numKvHeads, headDim, vocabSize, tieWordEmbeddings);
        if (params > MAX_PARAMETERS)
            throw new IllegalArgumentException(String.format(java.util.Locale.ROOT, "config: %.3g parameters (hidden_size %d, intermediate_size %d, "
                    + "num_hidden_layers %d, vocab_size %d, ...) is more than the %.3g grpo4j accepts: a wrong number in config.json?", params,
                    hiddenSize, intermediateSize, numLayers, vocabSize, MAX_PARAMETERS));
        if (!(rmsNormEps > 0)) throw new IllegalArgumentException("config: rms_norm_eps must be > 0, got " + rmsNormEps);
        // (a model written with a negative id is one grpo4j itself refuses to read back)
        if (bosTokenId < -1) throw new IllegalArgumentException("config: bos_token_id must be >= 0 (or -1: none), got " + bosTokenId);
        for (int e : eosTokenIds)
            if (e < 0) throw new IllegalArgumentException("config: eos_token_id must be token ids >= 0, got " + eosTokenIds);
        new Rope(headDim, ropeTheta, ropeScaling); // validates theta and scaling
    }

    /** 2^40 (1.1 trillion): far above any Llama, far below what would overflow a layout's offsets. */
    static final double MAX_PARAMETERS = 0x1p40;

    /** The parameter count of these shapes, in double (no overflow whatever the numbers). */
    static double parameterCount(int h, int ffn, int layers, int heads, int kvHeads, int headDim, int vocab, boolean tied) {
        double q = (double) heads * headDim, kv = (double) kvHeads * headDim;
        double layer = h * (q + 2 * kv) + q * h + 3.0 * h * ffn + 2.0 * h;
        return (double) vocab * h * (tied ? 1 : 2) + layers * layer + h;
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

    /**
     * Llama 3.2 1B shapes (meta-llama/Llama-3.2-1B-Instruct's config.json): 16 layers, hidden 2048, 32 query / 8 kv
     * heads of 64, SwiGLU 8192, tied embeddings, RoPE theta 500000 with llama3 scaling (factor 32, low 1, high 4,
     * original 8192).
     */
    public static LlamaConfig llama32_1b() {
        return new LlamaConfig(2048, 8192, 16, 32, 8, 64, 128256, 1e-5, 500000, new Rope.Llama3Scaling(32, 1, 4, 8192),
                131072, true, 128000, List.of(128001, 128008, 128009));
    }

    /**
     * The same architecture with its first {@code layers} layers only (e.g. Llama 3.1 8B cut to 4 layers, which fits
     * one GPU for benchmarks: per-layer figures extrapolate, the embeddings and LM head stay whole).
     */
    public LlamaConfig withLayers(int layers) {
        if (layers < 1 || layers > numLayers)
            throw new IllegalArgumentException("config: cannot truncate " + numLayers + " layers to " + layers + " (expected 1.." + numLayers + ")");
        return new LlamaConfig(hiddenSize, intermediateSize, layers, numHeads, numKvHeads, headDim, vocabSize, rmsNormEps, ropeTheta,
                ropeScaling, maxPositionEmbeddings, tieWordEmbeddings, bosTokenId, eosTokenIds);
    }

    /** The named presets that need no tokenizer, in usage order (the tiny one takes its vocabulary from a tokenizer). */
    public static final List<String> NAMED_PRESETS = List.of("llama-3.2-1b", "llama-3.1-8b", "llama-3.1-8b-4l");

    /**
     * A named preset: {@code llama-3.2-1b}, {@code llama-3.1-8b} or {@code llama-3.1-8b-4l} (8B truncated to 4 layers).
     * An unknown name is an IllegalArgumentException listing the valid ones.
     */
    public static LlamaConfig preset(String name) {
        return switch (name) {
            case "llama-3.2-1b" -> llama32_1b();
            case "llama-3.1-8b" -> llama31_8b();
            case "llama-3.1-8b-4l" -> llama31_8b().withLayers(4);
            default -> throw new IllegalArgumentException("unknown preset \"" + name + "\" (expected " + String.join(", ", NAMED_PRESETS) + ")");
        };
    }

    // ---- config.json --------------------------------------------------------------------------------------------

    public static LlamaConfig read(Path modelDir) throws IOException {
        Path f = Files.isDirectory(modelDir) ? modelDir.resolve("config.json") : modelDir;
        if (!Files.isRegularFile(f)) throw new NoSuchFileException(f.toString(), null, "no config.json");
        JsonNode n;
        try {
            n = JSON.readTree(f.toFile());
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IOException(f + ": not valid JSON: " + org.grpo4j.internal.util.JsonErrors.describe(e), e);
        }
        if (n == null || n.isMissingNode()) throw new IOException(f + ": empty (expected the model's config as a JSON object)");
        try {
            return fromJson(n);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(f + ": " + e.getMessage(), e);
        }
    }

    /**
     * Parses an HF {@code config.json} object. Both RoPE layouts are read: the transformers 4 one (top-level
     * {@code rope_theta} + {@code rope_scaling}) and the transformers 5 one ({@code rope_parameters} with
     * {@code rope_theta} inside); rope_type default and llama3 only. Every key that would make HF's
     * LlamaForCausalLM compute something grpo4j does not (biases, another activation, another RoPE, partial rotary,
     * dropout, quantized weights, two layouts that disagree) is refused with a one-line message naming the key and
     * its value; keys that only affect initialisation, caching or generation are ignored.
     */
    public static LlamaConfig fromJson(JsonNode n) {
        if (!n.isObject()) throw new IllegalArgumentException("config must be a JSON object");
        String type = n.path("model_type").asText("");
        boolean llamaArch = false;
        for (JsonNode a : n.path("architectures")) llamaArch |= a.asText().equals("LlamaForCausalLM");
        if (!type.equals("llama") && !llamaArch)
            throw new IllegalArgumentException("unsupported architecture (model_type \"" + type + "\", architectures "
                    + n.path("architectures") + "); grpo4j supports Llama (LlamaForCausalLM)");
        refuseUnsupportedMath(n);
        int hidden = req(n, "hidden_size"), heads = req(n, "num_attention_heads");
        int kv = present(n, "num_key_value_heads") ? req(n, "num_key_value_heads") : heads;
        int headDim;
        if (present(n, "head_dim")) headDim = req(n, "head_dim");
        else if (heads > 0 && hidden % heads != 0)
            throw new IllegalArgumentException("head_dim is missing and hidden_size " + hidden + " is not a multiple of num_attention_heads " + heads);
        else headDim = heads > 0 ? hidden / heads : 0;
        RopeSettings rope = readRope(n);
        List<Integer> eos = eosTokenIds(n.get("eos_token_id"));
        JsonNode b = n.get("bos_token_id");
        if (b != null && !b.isNull() && !tokenId(b)) throw new IllegalArgumentException("bos_token_id must be an int >= 0 (or null), got " + b);
        return new LlamaConfig(hidden, req(n, "intermediate_size"), req(n, "num_hidden_layers"), heads, kv, headDim,
                req(n, "vocab_size"), optD(n, "rms_norm_eps", 1e-6), rope.theta(), rope.scaling(),
                present(n, "max_position_embeddings") ? req(n, "max_position_embeddings") : 2048, optBool(n, "tie_word_embeddings", false),
                b == null || b.isNull() ? -1 : b.asInt(), eos);
    }

    /**
     * An {@code eos_token_id} value (config.json's, generation_config.json's): an int or a list of ints >= 0; absent or
     * null, none.
     */
    static List<Integer> eosTokenIds(JsonNode e) {
        List<Integer> eos = new ArrayList<>();
        if (e == null || e.isNull()) return eos;
        for (JsonNode x : e.isArray() ? e : List.of(e)) {
            if (!tokenId(x)) throw new IllegalArgumentException("eos_token_id must be an int or a list of ints >= 0, got " + e);
            eos.add(x.asInt());
        }
        return eos;
    }

    /** A token id in config.json: a whole number in [0, 2^31) (not "x", null or 1.9, which asInt made 0, 0 and 1). */
    private static boolean tokenId(JsonNode x) {
        return x.isIntegralNumber() && x.canConvertToInt() && x.asInt() >= 0;
    }

    /**
     * The LlamaConfig keys of transformers 4.43+ and 5 that change LlamaForCausalLM's function, other than shapes and
     * RoPE. pretraining_tp is accepted: with tp > 1, transformers 4 only slices each matmul and concatenates or sums the
     * slices, the same function up to fp32 rounding.
     */
    private static void refuseUnsupportedMath(JsonNode n) {
        if (optBool(n, "attention_bias", false))
            throw new IllegalArgumentException("attention_bias true is not supported (grpo4j's Llama has no q/k/v/o_proj biases)");
        if (optBool(n, "mlp_bias", false))
            throw new IllegalArgumentException("mlp_bias true is not supported (grpo4j's Llama has no gate/up/down_proj biases)");
        JsonNode act = n.get("hidden_act");
        if (act != null && !act.isNull() && !(act.isTextual() && (act.asText().equals("silu") || act.asText().equals("swish"))))
            throw new IllegalArgumentException("hidden_act " + act + " is not supported (grpo4j's MLP is SwiGLU: silu)");
        // HF applies attention dropout in training mode, so a nonzero value changes the policy gradient.
        if (optD(n, "attention_dropout", 0) != 0)
            throw new IllegalArgumentException("attention_dropout " + n.get("attention_dropout") + " is not supported (grpo4j has no dropout; expected 0)");
        if (present(n, "pretraining_tp") && req(n, "pretraining_tp") <= 0)
            throw new IllegalArgumentException("pretraining_tp must be positive, got " + n.get("pretraining_tp"));
        if (optD(n, "partial_rotary_factor", 1) != 1)
            throw new IllegalArgumentException("partial_rotary_factor " + n.get("partial_rotary_factor") + " is not supported (grpo4j rotates the whole head; expected 1)");
        if (present(n, "quantization_config"))
            throw new IllegalArgumentException("quantization_config (quant_method " + n.get("quantization_config").path("quant_method")
                    + ") is not supported (grpo4j reads unquantized float weights)");
    }

    // ---- RoPE: both layouts ---------------------------------------------------------------------------------------

    private record RopeSettings(double theta, Rope.Llama3Scaling scaling) {}

    /** One RoPE dictionary (rope_parameters or rope_scaling): its type, its own rope_theta if any, its llama3 scaling. */
    private record RopeDict(String key, String type, Double theta, Rope.Llama3Scaling scaling) {}

    private static final double DEFAULT_ROPE_THETA = 10000; // LlamaConfig's default in transformers 4 and 5

    /**
     * transformers 5 reads legacy configs by popping rope_scaling (used instead of rope_parameters when non-empty) and
     * rope_theta (used when the dictionary has none); transformers 4 ignores rope_parameters. grpo4j accepts a config
     * that has either layout or both, and refuses one where the two say different things, since then the two
     * transformers majors would run different models.
     */
    private static RopeSettings readRope(JsonNode n) {
        RopeDict params = present(n, "rope_parameters") ? ropeDict("rope_parameters", n.get("rope_parameters")) : null;
        RopeDict legacy = present(n, "rope_scaling") ? ropeDict("rope_scaling", n.get("rope_scaling")) : null;
        String thetaKey = null;
        Double theta = null;
        if (present(n, "rope_theta")) {
            thetaKey = "rope_theta";
            theta = optD(n, "rope_theta", 0);
        }
        for (RopeDict d : new RopeDict[] {params, legacy}) {
            if (d == null || d.theta() == null) continue;
            if (theta != null && !theta.equals(d.theta()))
                throw new IllegalArgumentException(thetaKey + " " + theta + " disagrees with " + d.key() + ".rope_theta " + d.theta());
            thetaKey = d.key() + ".rope_theta";
            theta = d.theta();
        }
        if (params != null && legacy != null && !(params.type().equals(legacy.type()) && Objects.equals(params.scaling(), legacy.scaling())))
            throw new IllegalArgumentException("rope_scaling " + n.get("rope_scaling") + " disagrees with rope_parameters " + n.get("rope_parameters"));
        RopeDict d = params != null ? params : legacy;
        return new RopeSettings(theta != null ? theta : DEFAULT_ROPE_THETA, d == null ? null : d.scaling());
    }

    private static final Set<String> ROPE_COMMON_KEYS = Set.of("rope_type", "type", "rope_theta", "partial_rotary_factor");
    private static final Set<String> LLAMA3_KEYS = Set.of("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings");

    private static RopeDict ropeDict(String key, JsonNode d) {
        if (!d.isObject()) throw new IllegalArgumentException(key + " must be an object or null, got " + d);
        String type = ropeText(key, d, "rope_type"), legacyType = ropeText(key, d, "type");
        if (type != null && legacyType != null && !type.equals(legacyType))
            throw new IllegalArgumentException(key + ".rope_type \"" + type + "\" disagrees with " + key + ".type \"" + legacyType + "\"");
        String typeKey = key + (type == null && legacyType != null ? ".type" : ".rope_type");
        if (type == null) type = legacyType != null ? legacyType : "default"; // transformers 5's standardisation
        if (!type.equals("default") && !type.equals("llama3"))
            throw new IllegalArgumentException(typeKey + " \"" + type + "\" is not supported (grpo4j implements default and llama3)");
        for (var it = d.fieldNames(); it.hasNext(); ) {
            String f = it.next();
            if (ROPE_COMMON_KEYS.contains(f) || (type.equals("llama3") && LLAMA3_KEYS.contains(f))) continue;
            throw new IllegalArgumentException(key + "." + f + " " + d.get(f) + " is not supported with rope_type " + type);
        }
        if (optD(d, "partial_rotary_factor", 1, key + ".partial_rotary_factor") != 1)
            throw new IllegalArgumentException(key + ".partial_rotary_factor " + d.get("partial_rotary_factor") + " is not supported (grpo4j rotates the whole head; expected 1)");
        Double theta = present(d, "rope_theta") ? optD(d, "rope_theta", 0, key + ".rope_theta") : null;
        Rope.Llama3Scaling scaling = null;
        if (type.equals("llama3")) {
            double omp = reqD(d, "original_max_position_embeddings", key + ".original_max_position_embeddings");
            if (omp != Math.rint(omp) || omp > Integer.MAX_VALUE)
                throw new IllegalArgumentException(key + ".original_max_position_embeddings must be an integer, got " + d.get("original_max_position_embeddings"));
            scaling = new Rope.Llama3Scaling(reqD(d, "factor", key + ".factor"), reqD(d, "low_freq_factor", key + ".low_freq_factor"),
                    reqD(d, "high_freq_factor", key + ".high_freq_factor"), (int) omp);
        }
        return new RopeDict(key, type, theta, scaling);
    }

    private static String ropeText(String key, JsonNode d, String f) {
        JsonNode v = d.get(f);
        if (v == null || v.isNull()) return null;
        if (!v.isTextual()) throw new IllegalArgumentException(key + "." + f + " must be a string, got " + v);
        return v.asText();
    }

    // ---- field helpers ----------------------------------------------------------------------------------------------

    private static boolean present(JsonNode n, String key) {
        JsonNode v = n.get(key);
        return v != null && !v.isNull();
    }

    private static int req(JsonNode n, String key) {
        JsonNode v = n.get(key);
        if (v == null || v.isNull()) throw new IllegalArgumentException("field " + key + " is missing");
        if (!v.isIntegralNumber() || !v.canConvertToInt()) throw new IllegalArgumentException("field " + key + " must be an integer, got " + v);
        return v.asInt();
    }

    private static double reqD(JsonNode n, String key, String name) {
        JsonNode v = n.get(key);
        if (v == null || !v.isNumber()) throw new IllegalArgumentException("field " + name + " must be a number, got " + v);
        return v.asDouble();
    }

    private static double optD(JsonNode n, String key, double dflt) { return optD(n, key, dflt, key); }

    private static double optD(JsonNode n, String key, double dflt, String name) {
        return present(n, key) ? reqD(n, key, name) : dflt;
    }

    private static boolean optBool(JsonNode n, String key, boolean dflt) {
        JsonNode v = n.get(key);
        if (v == null || v.isNull()) return dflt;
        if (!v.isBoolean()) throw new IllegalArgumentException("field " + key + " must be true or false, got " + v);
        return v.asBoolean();
    }

    /**
     * The HF config.json for this architecture. The RoPE settings are written in both layouts, with the same values:
     * top-level {@code rope_theta} + {@code rope_scaling} (read by transformers 4.43+, and by transformers 5, which
     * converts them) and {@code rope_parameters} (the transformers 5 layout, for readers that know only it).
     */
    public ObjectNode toJson(String torchDtype) {
        ObjectNode o = JSON.createObjectNode();
        o.putArray("architectures").add("LlamaForCausalLM");
        o.put("model_type", "llama");
        o.put("attention_bias", false);
        o.put("attention_dropout", 0.0);
        if (bosTokenId >= 0) o.put("bos_token_id", bosTokenId); // (-1: the source had none; HF reads a missing key as None)
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
        ObjectNode p = o.putObject("rope_parameters");
        if (ropeScaling != null) {
            p.put("factor", ropeScaling.factor());
            p.put("high_freq_factor", ropeScaling.highFreqFactor());
            p.put("low_freq_factor", ropeScaling.lowFreqFactor());
            p.put("original_max_position_embeddings", ropeScaling.originalMaxPositionEmbeddings());
        }
        p.put("rope_theta", ropeTheta);
        p.put("rope_type", ropeScaling == null ? "default" : "llama3");
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
        o.put("torch_dtype", torchDtype); // transformers < 4.56 and other readers
        o.put("dtype", torchDtype); // transformers >= 4.56 (5.x writes only this key)
        o.put("use_cache", true);
        o.put("vocab_size", vocabSize);
        return o;
    }
}
