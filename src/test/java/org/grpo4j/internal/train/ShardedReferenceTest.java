package org.grpo4j.internal.train;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.grpo4j.internal.backend.CpuBackend;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.Tensor;
import org.grpo4j.internal.dist.LocalCommunicator;
import org.grpo4j.internal.model.LlamaConfig;
import org.grpo4j.internal.model.LlamaModel;
import org.grpo4j.internal.model.LlamaWeights;
import org.grpo4j.internal.model.PackedBatch;
import org.grpo4j.internal.model.ParameterLayout;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The reference sharded over in-process ranks (reference_sharding layers): its passes give the whole model's log-probs
 * bit for bit, whether the pieces come from the policy or from a checkpoint, each pass gathering every layer once, a
 * rank without tokens taking part in the others' gathers; its checksum is the replica's.
 */
class ShardedReferenceTest {
    /**
     * 3 layers of 2,720 elements (norms 2 x 16, q and o 2 x 256, k and v 2 x 128, the MLP 3 x 640): a piece of 907
     * rounded to 912 at world 3 (rank 2's holds 896 of the layer and 16 of padding), 680 at world 4.
     */
    static final LlamaConfig C = new LlamaConfig(16, 40, 3, 4, 2, 4, 37, 1e-5, 10000, null, 64, false, 1, List.of(2));
    static final ExecutorService POOL = Executors.newCachedThreadPool();

    @AfterAll
    static void shutdown() { POOL.shutdownNow(); }

    static final List<int[]> SEQS = List.of(new int[] {1, 5, 9, 3, 3, 7}, new int[] {1, 12, 30, 36}, new int[] {1, 2});
    static final int[] ROWS = {0, 2, 4, 6, 8, 9}, TARGETS = {5, 3, 7, 30, 36, 2};

    /** Log-probs of {@link #SEQS} under the whole model: the oracle. */
    static float[] whole(LlamaWeights w) {
        try (PackedBatch pb = PackedBatch.of(w.backend(), SEQS, C.vocabSize())) {
            return new LlamaModel(w).tokenLogprobs(pb, ROWS, TARGETS, 0.7f);
        }
    }

    interface RankBody { Object run(int rank, CpuBackend be, LocalCommunicator comm) throws Exception; }

    static List<Object> ranks(int world, RankBody body) throws Exception {
        List<LocalCommunicator> comms = LocalCommunicator.group(world, 30_000);
        List<Future<Object>> fs = new ArrayList<>();
        for (LocalCommunicator comm : comms)
            fs.add(POOL.submit(() -> {
                try (CpuBackend be = new CpuBackend(1)) {
                    return body.run(comm.rank(), be, comm);
                } finally {
                    comm.close();
                }
            }));
        List<Object> out = new ArrayList<>();
        for (Future<Object> f : fs) out.add(f.get());
        return out;
    }

    @Test
    void layerPiecesCoverEveryLayerOnce() {
        assertEquals(2720, LlamaWeights.layerElements(C));
        assertEquals(912, LlamaWeights.layerPieceElements(C, 3));
        assertEquals(680, LlamaWeights.layerPieceElements(C, 4));
        for (int world = 2; world <= 400; world++) {
            long piece = LlamaWeights.layerPieceElements(C, world);
            assertTrue(piece % 8 == 0 && piece * world >= 2720 && (piece - 8) * world < 2720, "world " + world + ": piece " + piece);
        }
    }

    /**
     * At world 3 in fp32 and bf16: each rank's passes give the whole model's log-probs bit for bit, from pieces of the
     * policy and from pieces read from a checkpoint; every pass gathers each of the 3 layers once (rank 2 runs an
     * empty pass, no loss tokens, and an idle one, and still gathers as many); the checksum is the replica's.
     */
    @Test
    void passesGiveTheWholeModelsLogprobsBitForBit(@TempDir Path tmp) throws Exception {
        Path dir = tmp.resolve("model");
        try (CpuBackend be = new CpuBackend(1); LlamaWeights w = LlamaWeights.init(be, C, 11)) {
            w.save(dir, "F32", 1L << 40, null);
        }
        for (DType dt : List.of(DType.FP32, DType.BF16)) {
            float[] expected;
            long sum;
            try (CpuBackend be = new CpuBackend(1); LlamaWeights w = LlamaWeights.load(be, dir, dt)) {
                expected = whole(w);
                sum = checksum(w);
            }
            List<Object> got = ranks(3, (rank, be, comm) -> {
                List<Object> mine = new ArrayList<>();
                try (LlamaWeights policy = LlamaWeights.load(be, dir, dt);
                     ShardedReference a = ShardedReference.of(comm, policy);
                     ShardedReference b = ShardedReference.load(be, comm, dir, C, dt)) {
                    for (ShardedReference s : List.of(a, b)) {
                        if (rank < 2) {
                            try (PackedBatch pb = PackedBatch.of(be, SEQS, C.vocabSize())) {
                                mine.add(s.model().tokenLogprobs(pb, ROWS, TARGETS, 0.7f));
                            }
                            s.endPass();
                            s.idlePass(); // rank 2's second pass, below
                        } else {
                            try (PackedBatch pb = PackedBatch.of(be, SEQS, C.vocabSize())) {
                                mine.add(s.model().tokenLogprobs(pb, new int[0], new int[0], 0.7f)); // no loss tokens: no forward
                            }
                            s.endPass();
                            try (PackedBatch pb = PackedBatch.of(be, SEQS, C.vocabSize())) {
                                mine.add(s.model().tokenLogprobs(pb, ROWS, TARGETS, 0.7f));
                            }
                            s.endPass();
                        }
                        mine.add(s.gathers());
                        mine.add(s.checksum(rank == 1, 1125899906842597L));
                        mine.add(s.gathers());
                    }
                }
                return mine;
            });
            for (int r = 0; r < 3; r++) {
                @SuppressWarnings("unchecked") List<Object> m = (List<Object>) got.get(r);
                int k = 0;
                for (String source : List.of("policy", "checkpoint")) {
                    String at = dt + " rank " + r + " from the " + source;
                    if (r == 2) assertEquals(0, ((float[]) m.get(k++)).length, at);
                    assertArrayEquals(expected, (float[]) m.get(k++), at + ": log-probs");
                    assertEquals(6L, m.get(k++), at + ": two passes of 3 layer gathers");
                    assertEquals(r == 1 ? sum : 0L, m.get(k++), at + ": checksum (taken by rank 1)");
                    assertEquals(9L, m.get(k++), at + ": the checksum gathers each layer once");
                }
            }
        }
    }

    /** RankState's checksum of whole weights (padding excluded), the value checkpoints record. */
    static long checksum(LlamaWeights w) {
        long h = 1125899906842597L;
        for (ParameterLayout.Entry e : w.layout().entries()) h = RankState.checksum(h, w.get(e.name()).reshape((int) e.numel()));
        return h;
    }

    /**
     * The ranks' gathers interleave with their passes as each layer's turn comes (the next layer's gather issued before
     * the current one runs): a pass that stops after layer 0 and one that asks for a layer out of order are caught;
     * a training forward and generation are refused.
     */
    @Test
    void layersComeInOrderAndOnlyNoGradPassesRun() throws Exception {
        List<Object> got = ranks(2, (rank, be, comm) -> {
            List<String> errors = new ArrayList<>();
            try (LlamaWeights policy = LlamaWeights.init(be, C, 3); ShardedReference s = ShardedReference.of(comm, policy)) {
                s.acquire(0);
                try {
                    s.acquire(2);
                } catch (IllegalStateException e) {
                    errors.add(e.getMessage());
                }
                s.endPass(); // gathers layers 1 (already issued) and 2
                long afterOne = s.gathers();
                try (PackedBatch pb = PackedBatch.of(be, SEQS, C.vocabSize())) {
                    try {
                        s.model().forward(pb, false);
                    } catch (IllegalStateException e) {
                        errors.add(e.getMessage());
                    }
                }
                try {
                    s.model().newDecodeSession(null, 1, 1, false);
                } catch (IllegalStateException e) {
                    errors.add(e.getMessage());
                }
                // the layer window's views are the gathered layer's: layer 0 again after the pass above is layer 0's values
                s.acquire(0);
                float[] l0 = s.model().weights().get("model.layers.0.mlp.down_proj.weight").toFloats();
                float[] want = policy.get("model.layers.0.mlp.down_proj.weight").toFloats();
                s.endPass();
                errors.add(afterOne + " " + s.gathers() + " " + java.util.Arrays.equals(l0, want));
            }
            return errors;
        });
        for (Object o : got) {
            @SuppressWarnings("unchecked") List<String> e = (List<String>) o;
            assertEquals(4, e.size(), e.toString());
            assertEquals("layer 2 requested after layer 0: a pass runs its layers in order, once", e.get(0));
            assertTrue(e.get(1).startsWith("a training forward needs every layer's weights"), e.get(1));
            assertTrue(e.get(2).startsWith("a decode session needs every layer's weights"), e.get(2));
            assertEquals("3 6 true", e.get(3));
        }
    }

    /** A layer window refuses whole-buffer operations and ranges across layers, naming itself. */
    @Test
    void aLayerWindowIsNotAWholeBuffer() {
        try (CpuBackend be = new CpuBackend(1); LlamaWeights w = LlamaWeights.layerWindow(be, C, DType.FP32, 2720)) {
            assertEquals("flat() of a layer window (two slabs, not every parameter at once)", assertThrows(IllegalStateException.class, w::flat).getMessage());
            long l1 = w.layerStart(1);
            assertTrue(assertThrows(IllegalArgumentException.class, () -> w.range(l1 - 1, 2)).getMessage().contains("straddles backward groups of a layer window"));
            assertThrows(IllegalArgumentException.class, () -> w.layerSlab(3));
            assertEquals(2720, w.layerSlab(2).numel());
            assertTrue(w.layerSlab(0).overlaps(w.layerSlab(2)) && !w.layerSlab(0).overlaps(w.layerSlab(1)));
            assertThrows(IllegalArgumentException.class, () -> LlamaWeights.layerWindow(be, C, DType.FP32, 2719));
        }
    }
}
