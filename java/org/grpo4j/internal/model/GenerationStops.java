package org.grpo4j.internal.model;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;

/**
 * The token ids generation stops at, as vLLM (the reference's sampler) and HF {@code generate} choose them: the
 * tokenizer's EOS, and the model's generation config's {@code eos_token_id} (an int or a list) — read from
 * {@code generation_config.json}, or, when the model has none, from config.json's {@code eos_token_id}, as
 * transformers' {@code GenerationConfig.from_model_config} derives it. Llama 3.x Instruct lists 128001, 128008 and
 * 128009 there: without them a response that ends its turn with {@code <|eot_id|>} ran on to the length limit.
 */
public final class GenerationStops {
    private GenerationStops() {}

    /**
     * The stop ids of the model in {@code dir} (null: a model without a directory, such as the tiny built-in one,
     * whose config {@code lc} gives its ids) with the tokenizer's EOS {@code eos} (negative: none), in order: the EOS
     * first, then the generation config's.
     *
     * @throws IllegalArgumentException naming generation_config.json and its field when the file is not JSON or its
     *                                  eos_token_id is neither an int nor a list of ints >= 0 (an id past the vocabulary is kept: it is never sampled)
     */
    public static Set<Integer> of(Path dir, LlamaConfig lc, int eos) throws IOException {
        Set<Integer> ids = new LinkedHashSet<>();
        if (eos >= 0) ids.add(eos);
        ids.addAll(generationConfigIds(dir, lc));
        return ids;
    }

    /** The eos_token_id of the model's generation config (generation_config.json, else config.json's), as read. */
    public static List<Integer> generationConfigIds(Path dir, LlamaConfig lc) throws IOException {
        Path f = dir == null ? null : dir.resolve("generation_config.json");
        if (f == null || !Files.isRegularFile(f)) return lc.eosTokenIds();
        JsonNode n;
        try {
            n = org.grpo4j.internal.util.JsonFiles.MAPPER.readTree(f.toFile());
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IllegalArgumentException(f + ": not valid JSON (" + org.grpo4j.internal.util.JsonErrors.describe(e)
                    + "); generation stops at its eos_token_id, so it must be readable", e);
        }
        if (n == null || !n.isObject()) throw new IllegalArgumentException(f + ": expected a JSON object (the model's generation config)");
        try {
            return LlamaConfig.eosTokenIds(n.get("eos_token_id"));
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(f + ": " + e.getMessage(), e);
        }
    }
}
