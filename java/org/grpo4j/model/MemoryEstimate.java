package org.grpo4j.model;

import java.util.ArrayList;
import java.util.List;

/**
 * Memory arithmetic for a Llama config on GPUs under grpo4j's design: bf16 parameters (one full replica per rank),
 * a frozen bf16 reference replica, fp32 gradient accumulation, fp32 master weights and AdamW moments; with ZeRO-2 the
 * fp32 gradient, master and moment buffers are sharded over the {@code world} ranks.
 */
public record MemoryEstimate(LlamaConfig config, int world) {

    public long parameters() { return new ParameterLayout(config).totalElements(); }

    /** Bytes of one row, by name. */
    public record Line(String what, double bytes) {}

    public List<Line> perRank() {
        long p = parameters();
        List<Line> l = new ArrayList<>();
        l.add(new Line("policy parameters, bf16 (full replica)", 2.0 * p));
        l.add(new Line("reference policy, bf16 (frozen replica)", 2.0 * p));
        l.add(new Line("gradients, fp32 accumulation (ZeRO-2 shard)", 4.0 * p / world));
        l.add(new Line("fp32 master weights (ZeRO-2 shard)", 4.0 * p / world));
        l.add(new Line("AdamW moments m + v, fp32 (ZeRO-2 shard)", 8.0 * p / world));
        return l;
    }

    /** Elements one layer saves per token for its backward (see LlamaModel.LayerActs) plus its input. */
    public long savedPerTokenPerLayer() {
        LlamaConfig c = config;
        return c.hiddenSize() /* input */ + c.hiddenSize() /* h */ + 1 /* rstd1 */ + c.qDim() /* q */ + 2L * c.kvDim() /* k, v */
                + c.qDim() /* att */ + c.numHeads() /* lse */ + c.hiddenSize() /* mid */ + c.hiddenSize() /* h2 */ + 1 /* rstd2 */
                + 3L * c.intermediateSize() /* gate, up, act */;
    }

    /** Activation elements per token: all layers saved, or (checkpointing) layer inputs plus one layer recomputed. */
    public long activationElementsPerToken(boolean checkpointing) {
        long layer = savedPerTokenPerLayer();
        long fin = 2L * config.hiddenSize() + 1; // final norm input/output + rstd
        return checkpointing ? (long) config.numLayers() * config.hiddenSize() + layer + fin : config.numLayers() * layer + fin;
    }

    public static String human(double bytes) {
        String[] u = {"B", "KiB", "MiB", "GiB", "TiB"};
        int i = 0;
        while (bytes >= 1024 && i < u.length - 1) {
            bytes /= 1024;
            i++;
        }
        return String.format(java.util.Locale.ROOT, "%.2f %s", bytes, u[i]);
    }
}
