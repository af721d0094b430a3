package org.grpo4j.internal.train;

import static org.junit.jupiter.api.Assertions.*;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.grpo4j.internal.backend.AbstractBackend;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.model.LlamaConfig;
import org.grpo4j.internal.model.MemoryEstimate;
import org.grpo4j.train.GrpoConfig;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * recompute_layers: gradient checkpointing of the first layers only, as many as the memory left after the model
 * states requires (auto), or a given number. The training is the same bits whichever is chosen.
 */
class RecomputeLayersTest {
    private static final double GIB = 1L << 30;

    static GrpoConfig tulu(String... sets) throws Exception {
        return GrpoConfig.load(Path.of("configs/tulu-3.1-8b-grpo.json"), List.of(sets));
    }

    /**
     * auto takes the fewest layers whose largest training pass fits 90% of the free memory: every count's bound is
     * larger than the next one's (keeping a layer costs memory), a budget of exactly a count's bound chooses that
     * count and a byte less the next; unknown free memory or too little recomputes every layer. Explicit counts are
     * taken as given, a count above the model's layers refused; without gradient_checkpointing nothing is recomputed.
     * Prints what auto chooses for the Tulu config's 8 ranks on an 80 GB H100 and a 141 GB H200.
     */
    @Test
    void autoRecomputesTheFewestLayersThatFit() throws Exception {
        LlamaConfig m = LlamaConfig.llama31_8b();
        int layers = m.numLayers(), longest = 2048;
        GrpoConfig c = tulu();
        MemoryEstimate est = new MemoryEstimate(m, c.worldSize, DType.BF16, c.reduceBucketSize);
        long lm = Preflight.lmRowsBytes(c, DType.BF16);
        double[] bound = new double[layers + 1];
        for (int k = 0; k <= layers; k++) bound[k] = RankState.largestPassBytes(c, est, layers, k, longest, lm);
        // one layer recomputed holds as much as none: it is stored again while it runs, beside every kept layer
        assertTrue(bound[1] >= bound[0], "one recomputed layer saves nothing");
        for (int k = 1; k < layers; k++) assertTrue(bound[k] > bound[k + 1], "bound of " + k + " recomputed layers over that of " + (k + 1));
        assertEquals(PassPacking.trainingCap(c, est, lm, longest), bound[layers], "all recomputed: the packing's own cap");
        for (int k : new int[] {0, 2, 7, 20, layers - 1}) {
            // a training pass runs beside the update phase's buffers, which the free memory (measured outside one) must hold too
            long exact = (long) Math.ceil(bound[k] / RankState.RECOMPUTE_BUDGET + est.updateBytes());
            assertEquals(k, RankState.recomputeLayers(c, est, layers, exact, 1, longest, lm), "free memory for exactly " + k);
            assertEquals(k == 0 ? 2 : k + 1, RankState.recomputeLayers(c, est, layers, (long) Math.floor(bound[k] / RankState.RECOMPUTE_BUDGET + est.updateBytes()) - 1,
                    1, longest, lm), "a byte less than " + k + " needs");
            assertEquals(k, RankState.recomputeLayers(c, est, layers, 2 * exact, 2, longest, lm), "two ranks sharing twice that");
        }
        assertEquals(layers, RankState.recomputeLayers(c, est, layers, -1, 1, longest, lm), "unknown free memory");
        assertEquals(layers, RankState.recomputeLayers(c, est, layers, 1L << 20, 1, longest, lm), "too little for any");
        assertEquals(0, RankState.recomputeLayers(c, est, layers, 1L << 50, 1, longest, lm), "plenty");
        assertEquals(layers, RankState.recomputeLayers(tulu("recompute_layers=all"), est, layers, 1L << 50, 1, longest, lm));
        assertEquals(5, RankState.recomputeLayers(tulu("recompute_layers=5"), est, layers, 1L << 50, 1, longest, lm));
        assertEquals(0, RankState.recomputeLayers(tulu("gradient_checkpointing=false"), est, layers, 1L << 20, 1, longest, lm));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> RankState.recomputeLayers(tulu("recompute_layers=33"), est, layers, 1L << 50, 1, longest, lm));
        assertEquals("recompute_layers 33 is more than the model's 32 layers", e.getMessage());

        // The Tulu config at world 8: what auto would choose on the loan cards, with about 1 GiB of the free memory
        // taken by the CUDA context and NCCL's buffers beside the model states
        System.out.printf("Tulu 3.1 8B at world 8 (bf16, prompts up to %d tokens): model states %.2f GiB, update phases' buffers %.2f GiB; a training"
                + " pass's activations %.2f GiB with every layer recomputed, %.2f GiB with none (%.3f GiB a layer kept)%n", longest, est.statesBytes() / GIB,
                est.updateBytes() / GIB, bound[layers] / GIB, bound[0] / GIB, (bound[2] - bound[3]) / GIB);
        for (Object[] card : new Object[][] {{"H100 80 GB", 79.1}, {"H200 141 GB", 139.8}}) {
            double free = (double) card[1] * GIB - est.statesBytes() - GIB;
            int k = RankState.recomputeLayers(c, est, layers, (long) free, 1, longest, lm);
            System.out.printf("  %s: %.1f GiB free after the states -> %d of %d layers recomputed (activations %.2f GiB): %.0f%% of the layers' recomputed"
                    + " forwards saved%n", card[0], free / GIB, k, layers, bound[k] / GIB, 100.0 * (layers - k) / layers);
        }
    }

    /**
     * Two steps of the tiny model with gradient checkpointing of none, one and both of its two layers, and without
     * gradient checkpointing: every metric equal (but times), and each run's memory peak within the model states plus
     * the largest of its pass bound and generation. The memory report names the count.
     */
    @Test
    void everyCountTrainsTheSameBits(@TempDir Path tmp) throws Exception {
        Map<String, List<Map<String, Double>>> runs = new LinkedHashMap<>();
        Map<String, Long> peaks = new LinkedHashMap<>();
        for (String v : List.of("checkpointing off", "0", "1", "all")) {
            List<String> sets = GrpoTrainerTest.small(tmp.resolve(v.replace(' ', '-')), 2);
            sets.addAll(List.of("save_freq=0", "num_evals=0"));
            if (v.startsWith("checkpointing")) sets.add("gradient_checkpointing=false");
            else sets.addAll(List.of("gradient_checkpointing=true", "recompute_layers=" + v));
            GrpoConfig cfg = GrpoTrainerTest.config(sets);
            ByteArrayOutputStream log = new ByteArrayOutputStream();
            List<Map<String, Double>> seen = new ArrayList<>();
            try (Trainer t = Trainer.builder(cfg).log(new PrintStream(log, true, StandardCharsets.UTF_8)).build()) {
                t.run(new org.grpo4j.train.GrpoTrainer.Listener() {
                    @Override
                    public void onStep(int step, Map<String, Double> m) { seen.add(m); }
                });
                AbstractBackend be = (AbstractBackend) t.rankBackends().get(0);
                MemoryEstimate e = t.rankEstimates().get(0);
                int k = v.startsWith("checkpointing") || v.equals("0") ? 0 : v.equals("1") ? 1 : 2;
                long seq = 64 + cfg.responseLength; // max_prompt_token_length bounds the longest prompt
                double acts = Math.max(RankState.largestPassBytes(cfg, e, 2, k, 64, Preflight.lmRowsBytes(cfg, DType.FP32)) + e.updateBytes(),
                        e.noGradActivationBytes(cfg.localRolloutForwardBatchSize * seq, (long) cfg.localRolloutForwardBatchSize * cfg.responseLength));
                double gen = e.generationBytes(cfg.localCompletions(), (long) cfg.localRolloutBatchSize * 64)
                        + (double) cfg.localCompletions() * ((seq + 15) / 16 + 1) * 16 * e.kvBytesPerToken();
                double bound = e.statesBytes() + Math.max(acts, gen);
                System.out.printf("%s: peak %,d B, bound %,.0f B%n", v, be.peakBytes(), bound);
                assertTrue(be.peakBytes() <= bound, v + ": peak " + be.peakBytes() + " > " + bound);
                peaks.put(v, be.peakBytes());
                String text = log.toString(StandardCharsets.UTF_8);
                String want = v.startsWith("checkpointing") ? "gradient checkpointing: off" : "gradient checkpointing: " + k + " of 2 layers recomputed";
                assertTrue(text.contains(want), "the memory report says \"" + want + "\":\n" + text);
            }
            runs.put(v, seen);
        }
        // recomputing every layer holds less than keeping them (the training passes set the peak here); one of two
        // recomputed holds as much as none or more (it is stored again while it runs)
        assertTrue(peaks.get("all") < peaks.get("0"), "peaks " + peaks);
        assertTrue(peaks.get("1") >= peaks.get("0"), "peaks " + peaks);
        assertEquals(peaks.get("0"), peaks.get("checkpointing off"), "peaks " + peaks);
        List<Map<String, Double>> base = runs.get("checkpointing off");
        assertEquals(2, base.size());
        for (var run : runs.entrySet())
            for (int s = 0; s < 2; s++)
                for (String key : base.get(s).keySet()) {
                    if (key.startsWith("time/") || key.startsWith("throughput/")) continue;
                    assertEquals(base.get(s).get(key), run.getValue().get(s).get(key), run.getKey() + ", step " + (s + 1) + ": " + key);
                }
    }

    /** A count above the model's layers is refused before any work, naming the model and what is allowed. */
    @Test
    void aCountAboveTheLayersIsRefused(@TempDir Path tmp) throws Exception {
        List<String> sets = GrpoTrainerTest.small(tmp.resolve("run"), 1);
        sets.addAll(List.of("gradient_checkpointing=true", "recompute_layers=3"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Trainer.builder(GrpoTrainerTest.config(sets)).log(null).build().close());
        assertTrue(e.getMessage().contains("recompute_layers 3 is more than the 2 layers of model_name_or_path init:tiny (auto, all or 0 to 2)"), e.getMessage());
        assertFalse(java.nio.file.Files.exists(tmp.resolve("run/checkpoints")), "nothing written");
    }
}
