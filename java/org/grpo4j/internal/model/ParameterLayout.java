package org.grpo4j.internal.model;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Where every parameter tensor lives inside one flat buffer, in HF order and with HF names. One flat buffer per
 * model makes gradients, optimizer state and (later) ZeRO-2 shards simple contiguous ranges.
 */
public final class ParameterLayout {
    /** One tensor: HF name, shape, element offset in the flat buffer. */
    public record Entry(String name, int[] shape, long offset, long numel) {}

    private final List<Entry> entries = new ArrayList<>();
    private final Map<String, Entry> byName = new LinkedHashMap<>();
    private final long total;

    public ParameterLayout(LlamaConfig c) {
        long off = 0;
        off = add("model.embed_tokens.weight", off, c.vocabSize(), c.hiddenSize());
        for (int l = 0; l < c.numLayers(); l++) {
            String p = "model.layers." + l + ".";
            off = add(p + "input_layernorm.weight", off, c.hiddenSize());
            off = add(p + "self_attn.q_proj.weight", off, c.qDim(), c.hiddenSize());
            off = add(p + "self_attn.k_proj.weight", off, c.kvDim(), c.hiddenSize());
            off = add(p + "self_attn.v_proj.weight", off, c.kvDim(), c.hiddenSize());
            off = add(p + "self_attn.o_proj.weight", off, c.hiddenSize(), c.qDim());
            off = add(p + "post_attention_layernorm.weight", off, c.hiddenSize());
            off = add(p + "mlp.gate_proj.weight", off, c.intermediateSize(), c.hiddenSize());
            off = add(p + "mlp.up_proj.weight", off, c.intermediateSize(), c.hiddenSize());
            off = add(p + "mlp.down_proj.weight", off, c.hiddenSize(), c.intermediateSize());
        }
        off = add("model.norm.weight", off, c.hiddenSize());
        if (!c.tieWordEmbeddings()) off = add("lm_head.weight", off, c.vocabSize(), c.hiddenSize());
        this.total = off;
    }

    private long add(String name, long off, int... shape) {
        long n = 1;
        for (int d : shape) n *= d;
        Entry e = new Entry(name, shape, off, n);
        entries.add(e);
        byName.put(name, e);
        return off + n;
    }

    public List<Entry> entries() { return Collections.unmodifiableList(entries); }

    public Entry get(String name) {
        Entry e = byName.get(name);
        if (e == null) throw new IllegalArgumentException("no parameter named " + name);
        return e;
    }

    public boolean has(String name) { return byName.containsKey(name); }

    /** Total number of parameters (elements of the flat buffer). */
    public long totalElements() { return total; }

    /**
     * The backward pass's gradient groups, in the order it completes them ({@link LlamaModel#backward}'s progress
     * reports): group 0 is the final norm and an untied LM head [norm, total), group 1 + j is layer L - 1 - j from its
     * input_layernorm up, the last group the embeddings [0, layer 0). Returns each group's first flat offset, so
     * descending, the last one 0; group g ends where group g - 1 begins (group 0 at the total).
     */
    public long[] backwardGroups() {
        int layers = 0;
        while (byName.containsKey("model.layers." + layers + ".input_layernorm.weight")) layers++;
        long[] from = new long[layers + 2];
        from[0] = get("model.norm.weight").offset();
        for (int j = 0; j < layers; j++) from[1 + j] = get("model.layers." + (layers - 1 - j) + ".input_layernorm.weight").offset();
        from[layers + 1] = 0;
        return from;
    }

    /** The most elements of one {@link #backwardGroups()} group. */
    public long largestBackwardGroup() {
        long[] from = backwardGroups();
        long m = 0;
        for (int g = 0; g < from.length; g++) m = Math.max(m, (g == 0 ? total : from[g - 1]) - from[g]);
        return m;
    }
}
