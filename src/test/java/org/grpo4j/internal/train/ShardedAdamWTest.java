package org.grpo4j.internal.train;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.grpo4j.internal.backend.Bf16;
import org.grpo4j.internal.backend.CpuBackend;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.dist.LocalCommunicator;
import org.grpo4j.internal.model.LlamaConfig;
import org.grpo4j.internal.model.LlamaWeights;
import org.grpo4j.internal.model.ParameterLayout;
import org.grpo4j.internal.model.SafeTensors;
import org.grpo4j.internal.model.ShardLayout;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * ZeRO-2 over in-process ranks against plain AdamW on one rank: with the ranks' gradients summed in rank order (and, in
 * bf16, each rank's gradient rounded to bf16 and the sum rounded once, as the bf16 reduction does) the sharded steps
 * give the unsharded steps' weights and moments bit for bit, at world sizes that do not divide the parameter count and
 * with buckets that straddle tensors and slices. The gradient norm is the same bits at every world size, so clipping
 * takes part.
 */
class ShardedAdamWTest {
    /** Hidden 13, vocabulary 10: 3,133 = 13 x 241 parameters, divisible by none of the world sizes tried. */
    static final LlamaConfig C = new LlamaConfig(13, 20, 2, 4, 2, 4, 10, 1e-5, 10000, null, 64, false, 0, List.of(1));
    static final ExecutorService POOL = Executors.newCachedThreadPool();

    @AfterAll
    static void stop() { POOL.shutdownNow(); }

    @Test
    void theLayoutPadsAlignsAndCutsBucketsAcrossTensorsAndSlices() {
        long p = new ParameterLayout(C).totalElements();
        for (int w = 1; w <= 6; w++) {
            ShardLayout s = new ShardLayout(p, w, 100);
            assertEquals(0, s.slice() % s.normChunk(), "slices are whole norm chunks");
            assertEquals(0, s.slice() % 8, "slices start 16-byte aligned in bf16");
            assertTrue(s.padded() >= p && s.padded() - p < (long) w * s.normChunk(), "padding below one norm chunk per rank");
            long real = 0;
            for (int r = 0; r < w; r++) real += s.realLength(r);
            assertEquals(p, real, "the slices' parameters cover the model once");
            long covered = 0, top = p;
            for (ShardLayout.Bucket b : s.buckets()) {
                assertEquals(top, b.to(), "buckets run from the top of the buffer down, without gaps");
                top = b.from();
                assertTrue(b.to() - b.from() <= 96, "at most reduce_bucket_size (rounded to 8) elements");
                long at = b.from();
                for (ShardLayout.Piece q : b.pieces()) {
                    assertEquals(at, q.from());
                    assertEquals(q.owner(), (int) (q.from() / s.slice()), "a piece lies in its owner's slice");
                    assertEquals(q.owner(), (int) ((q.from() + q.length() - 1) / s.slice()));
                    at += q.length();
                    covered += q.length();
                }
                assertEquals(b.to(), at);
            }
            assertEquals(0, top);
            assertEquals(p, covered);
        }
        // a bucket that straddles two tensors, and (world 3) one split between two owners
        ShardLayout s = new ShardLayout(p, 3, 100);
        ParameterLayout lay = new ParameterLayout(C);
        assertTrue(s.buckets().stream().anyMatch(b -> lay.entries().stream().anyMatch(e -> e.offset() > b.from() && e.offset() < b.to())));
        assertTrue(s.buckets().stream().anyMatch(b -> b.pieces().size() == 2) || s.slice() >= p, "some bucket spans a slice boundary");
        assertEquals(3133, p);
        assertEquals(1 << 10, ShardLayout.normChunk(p));
        assertEquals(1 << 21, ShardLayout.normChunk(8_030_261_248L), "Llama 3.1 8B: 2^21-element norm chunks");
    }

    /** Rank r's gradient of micro-batch k of step t. */
    static float[] grad(int t, int k, int r, int n) {
        SplittableRandom rnd = new SplittableRandom(1000L * t + 10L * k + r);
        float[] g = new float[n];
        for (int i = 0; i < n; i++) g[i] = (float) (rnd.nextGaussian() * (i % 7 == 0 ? 3 : 0.01)); // a norm well above max_grad_norm
        return g;
    }

    /** What the reduction of micro-batch k delivers: the ranks' gradients (bf16-rounded in bf16) summed in rank order, rounded once. */
    static float[] reduced(int t, int k, int world, int n, DType dt) {
        float[] acc = new float[n];
        for (int r = 0; r < world; r++) {
            float[] g = grad(t, k, r, n);
            for (int i = 0; i < n; i++) acc[i] += dt == DType.BF16 ? Bf16.round(g[i]) : g[i];
        }
        if (dt == DType.BF16) for (int i = 0; i < n; i++) acc[i] = Bf16.round(acc[i]);
        return acc;
    }

    /** Weights, then moments (from the saved slices, in rank order) after {@code steps} steps of {@code micro} micro-batches. */
    static float[][] train(int world, int worldOfGrads, DType dt, int steps, int micro, Path dir) throws Exception {
        return train(world, worldOfGrads, dt, steps, micro, dir, false);
    }

    /** {@code force}: the ZeRO-2 path even at world 1 (bucket reductions into the fp32 accumulator, in-place all-gather). */
    static float[][] train(int world, int worldOfGrads, DType dt, int steps, int micro, Path dir, boolean force) throws Exception {
        return train(world, worldOfGrads, dt, steps, micro, dir, force, false);
    }

    /**
     * {@code bf16Grads}: the gradient buffer in bf16 (the trainer's choice at world > 1 in bf16: reduced straight from
     * the buffer), else fp32 (cast to a bf16 staging buffer per bucket in bf16).
     */
    static float[][] train(int world, int worldOfGrads, DType dt, int steps, int micro, Path dir, boolean force, boolean bf16Grads) throws Exception {
        return train(world, worldOfGrads, dt, steps, micro, dir, force, bf16Grads, false);
    }

    /**
     * {@code window}: the trainer's gradient window ({@link LlamaWeights#gradientWindow}) with the buckets cut at its
     * groups, written group by group in the backward pass's order, each group's completion reported before the next is
     * written (the slabs alternate, so a group overwrites the one two before it).
     */
    static float[][] train(int world, int worldOfGrads, DType dt, int steps, int micro, Path dir, boolean force, boolean bf16Grads, boolean window)
            throws Exception {
        List<LocalCommunicator> comms = LocalCommunicator.group(world, 30_000);
        List<Future<float[]>> fs = new ArrayList<>();
        for (LocalCommunicator comm : comms)
            fs.add(POOL.submit(() -> {
                try (CpuBackend be = new CpuBackend(1); LlamaWeights init = LlamaWeights.init(be, C, 7)) {
                    ShardLayout lay = window ? new ShardLayout(init.layout().totalElements(), world, 100, init.layout().backwardGroups())
                            : new ShardLayout(init.layout().totalElements(), world, 100);
                    int n = (int) init.layout().totalElements();
                    DType gt = bf16Grads ? DType.BF16 : DType.FP32;
                    try (LlamaWeights compute = LlamaWeights.zeros(be, C, dt, lay.padded());
                         LlamaWeights g = window ? LlamaWeights.gradientWindow(be, C, gt) : LlamaWeights.zeros(be, C, gt);
                         ShardedAdamW opt = new ShardedAdamW(be, comm, lay, compute, g, 0.9, 0.999, 1e-8, 0.1, force)) {
                        compute.copyFrom(init);
                        opt.setMaster(init);
                        boolean plain = world == 1 && !force;
                        for (int t = 1; t <= steps; t++) {
                            opt.startStep();
                            for (int k = 0; k < micro; k++) {
                                opt.startMicroBatch();
                                // world 1 stands for the ranks of worldOfGrads: it gets their reduced gradients
                                float[] mine = plain ? reduced(t, k, worldOfGrads, n, dt) : grad(t, k, comm.rank(), n);
                                if (plain) {
                                    float[] acc = g.flat().toFloats();
                                    for (int i = 0; i < n; i++) acc[i] += mine[i];
                                    mine = acc;
                                }
                                if (window) writeByGroups(be, opt, g, mine);
                                else {
                                    if (!bf16Grads) be.copyFromHost(g.flat(), mine);
                                    else try (var tmp = be.upload(mine, n)) {
                                        be.cast(g.flat(), tmp);
                                    }
                                    long[] frontiers = {3000, 2100, 1999, 400, 0};
                                    for (long f : frontiers) opt.gradientsReady(f);
                                }
                                opt.endMicroBatch();
                            }
                            ShardedAdamW.Norm norm = opt.gradNorm(true);
                            assertTrue(norm.norm() > 1, "clipping is active: norm " + norm.norm());
                            opt.step(norm.norm(), 1.0, 1e-2);
                        }
                        float[] master = opt.gatherMaster();
                        opt.save(dir);
                        float[] w = dt == DType.BF16 ? bf16(compute.flat().toBf16Bits()) : compute.flat().toFloats();
                        if (comm.rank() == 0) {
                            float[] both = new float[2 * n];
                            System.arraycopy(master, 0, both, 0, n);
                            System.arraycopy(w, 0, both, n, n);
                            return both;
                        }
                        return w;
                    }
                }
            }));
        List<float[]> res = new ArrayList<>();
        for (Future<float[]> f : fs) res.add(f.get());
        int n = res.get(0).length / 2;
        for (int r = 1; r < world; r++)
            assertArrayEquals(java.util.Arrays.copyOfRange(res.get(0), n, 2 * n), res.get(r), 0f, "every rank holds the same compute weights after the all-gather");
        return new float[][] {res.get(0), readMoments(dir, world, n, steps)};
    }

    /** The flat moments [m | v] of {@code n} parameters saved by {@code world} ranks in {@code dir}, each file at {@code step}. */
    static float[] readMoments(Path dir, int world, int n, int step) throws java.io.IOException {
        float[] moments = new float[2 * n];
        int at = 0;
        for (int r = 0; r < world; r++)
            try (SafeTensors st = SafeTensors.open(dir.resolve(ShardedAdamW.fileName(r, world)))) {
                float[] m = st.readFloats("exp_avg"), v = st.readFloats("exp_avg_sq");
                System.arraycopy(m, 0, moments, at, m.length);
                System.arraycopy(v, 0, moments, n + at, v.length);
                at += m.length;
                assertEquals(String.valueOf(step), st.metadata().get("step"), "world " + world + " rank " + r + ": the step");
            }
        assertEquals(n, at);
        return moments;
    }

    /**
     * Writes {@code grad} into gradient window {@code g} group by group in the backward pass's order (cast to bf16 for
     * a bf16 window), reporting each group's completion to {@code opt} before the next group is written.
     */
    static void writeByGroups(org.grpo4j.internal.backend.Backend be, ShardedAdamW opt, LlamaWeights g, float[] grad) {
        long[] groups = g.groupStarts();
        for (int j = 0; j < groups.length; j++) {
            int from = (int) groups[j], len = (int) ((j == 0 ? grad.length : groups[j - 1]) - from);
            float[] part = java.util.Arrays.copyOfRange(grad, from, from + len);
            if (g.dtype() == DType.FP32) be.copyFromHost(g.range(from, len), part);
            else try (var tmp = be.upload(part, len)) {
                be.cast(g.range(from, len), tmp);
            }
            opt.gradientsReady(from);
        }
    }

    static float[] bf16(short[] b) {
        float[] f = new float[b.length];
        for (int i = 0; i < b.length; i++) f[i] = Bf16.toFloat(b[i]);
        return f;
    }

    /**
     * Moments saved by 3 ranks, loaded at 1, 2 and 5 (a resharded resume: each rank's range put together from the
     * slices it overlaps) and saved again: the same flat moments bit for bit, and the same step. A missing slice, slices
     * that disagree on the step, or one that does not follow the slice before it, are refused naming the file.
     */
    @Test
    void momentsReshardBitForBit(@TempDir Path tmp) throws Exception {
        Path saved = Files.createDirectories(tmp.resolve("w3"));
        float[] moments = train(3, 3, DType.FP32, 2, 1, saved)[1];
        int n = moments.length / 2;
        for (int world : new int[] {1, 2, 5}) {
            Path again = Files.createDirectories(tmp.resolve("w" + world));
            List<LocalCommunicator> comms = LocalCommunicator.group(world, 30_000);
            List<Future<Object>> fs = new ArrayList<>();
            for (LocalCommunicator comm : comms)
                fs.add(POOL.submit(() -> {
                    try (CpuBackend be = new CpuBackend(1); LlamaWeights compute = LlamaWeights.zeros(be, C, DType.FP32,
                            new ShardLayout(n, world, 100).padded());
                         ShardedAdamW opt = new ShardedAdamW(be, comm, new ShardLayout(n, world, 100), compute, DType.FP32, 0.9, 0.999, 1e-8, 0.1, false)) {
                        opt.load(saved, 3);
                        opt.save(again);
                        return null;
                    } finally {
                        comm.close();
                    }
                }));
            for (Future<Object> f : fs) f.get();
            assertArrayEquals(moments, readMoments(again, world, n, 2), 0f, "world " + world + ": the moments resharded from world 3");
        }
        // a checkpoint missing a slice, and one whose slices disagree on the step
        Files.delete(saved.resolve(ShardedAdamW.fileName(1, 3)));
        try (CpuBackend be = new CpuBackend(1); LlamaWeights compute = LlamaWeights.zeros(be, C, DType.FP32, new ShardLayout(n, 1, 100).padded());
             ShardedAdamW opt = new ShardedAdamW(be, LocalCommunicator.group(1, 1000).get(0), new ShardLayout(n, 1, 100), compute, DType.FP32, 0.9, 0.999,
                     1e-8, 0.1, false)) {
            java.nio.file.NoSuchFileException e = assertThrows(java.nio.file.NoSuchFileException.class, () -> opt.load(saved, 3));
            assertTrue(e.getMessage().contains(ShardedAdamW.fileName(1, 3)), e.getMessage());
            Path w2 = tmp.resolve("w2");
            rewriteMetadata(w2.resolve(ShardedAdamW.fileName(1, 2)), "step", "7");
            java.io.IOException e2 = assertThrows(java.io.IOException.class, () -> opt.load(w2, 2));
            assertTrue(e2.getMessage().contains("step 7, but rank 0's file says 2"), e2.getMessage());
            // a slice moved over its neighbour's parameters (an overlap that a gap elsewhere would balance)
            Path w5 = tmp.resolve("w5");
            rewriteMetadata(w5.resolve(ShardedAdamW.fileName(1, 5)), "first_parameter", "0");
            java.io.IOException e3 = assertThrows(java.io.IOException.class, () -> opt.load(w5, 5));
            assertTrue(e3.getMessage().contains("its slice starts at parameter 0, but the slices before it end at"), e3.getMessage());
        }
    }

    /** Rewrites optimizer file {@code file} with metadata {@code key} set to {@code value}. */
    static void rewriteMetadata(Path file, String key, String value) throws java.io.IOException {
        float[] m, v;
        java.util.Map<String, String> meta;
        try (SafeTensors st = SafeTensors.open(file)) {
            m = st.readFloats("exp_avg");
            v = st.readFloats("exp_avg_sq");
            meta = new java.util.HashMap<>(st.metadata());
        }
        meta.put(key, value);
        SafeTensors.write(file, List.of(new SafeTensors.Out("exp_avg", new int[] {m.length}, m, 0), new SafeTensors.Out("exp_avg_sq", new int[] {v.length}, v, 0)),
                "F32", meta);
    }

    @Test
    void shardedStepsEqualUnshardedStepsBitForBit(@TempDir Path tmp) throws Exception {
        for (DType dt : new DType[] {DType.FP32, DType.BF16})
            for (int world : new int[] {2, 3, 5}) {
                Path a = Files.createDirectories(tmp.resolve(dt.label() + world + "a")), b = Files.createDirectories(tmp.resolve(dt.label() + world + "b"));
                // world 1 accumulates every micro-batch's reduced gradient in fp32, as the ranks' slices do
                float[][] one = train(1, world, dt, 3, 2, a), many = train(world, world, dt, 3, 2, b);
                assertArrayEquals(one[0], many[0], 0f, dt.label() + " world " + world + ": master and compute weights");
                assertArrayEquals(one[1], many[1], 0f, dt.label() + " world " + world + ": AdamW moments");
                if (dt == DType.BF16) { // the trainer's layout: bf16 gradients reduced straight from the buffer
                    Path c = Files.createDirectories(tmp.resolve(dt.label() + world + "c"));
                    float[][] half = train(world, world, dt, 3, 2, c, false, true);
                    assertArrayEquals(one[0], half[0], 0f, "bf16 gradient buffer, world " + world + ": master and compute weights");
                    assertArrayEquals(one[1], half[1], 0f, "bf16 gradient buffer, world " + world + ": AdamW moments");
                }
            }
    }

    /**
     * The trainer's gradient window (two slabs, the backward's groups taking turns; buckets cut at the groups) gives
     * the full buffer's weights and moments bit for bit, in fp32 and bf16 gradients, at world sizes whose slices cut
     * through groups; and its layout and views: each bucket inside one group, group g aliasing group g + 2.
     */
    @Test
    void theGradientWindowTrainsLikeTheFullBuffer(@TempDir Path tmp) throws Exception {
        for (int world : new int[] {2, 3})
            for (boolean bf16Grads : new boolean[] {false, true}) {
                Path a = Files.createDirectories(tmp.resolve(world + "full" + bf16Grads)), b = Files.createDirectories(tmp.resolve(world + "window" + bf16Grads));
                float[][] full = train(world, world, DType.BF16, 3, 2, a, false, bf16Grads, false), win = train(world, world, DType.BF16, 3, 2, b, false, bf16Grads, true);
                assertArrayEquals(full[0], win[0], 0f, "world " + world + (bf16Grads ? ", bf16" : ", fp32") + " gradients: master and compute weights");
                assertArrayEquals(full[1], win[1], 0f, "world " + world + (bf16Grads ? ", bf16" : ", fp32") + " gradients: AdamW moments");
            }
        ParameterLayout lay = new ParameterLayout(C);
        long[] groups = lay.backwardGroups();
        assertEquals(C.numLayers() + 2, groups.length);
        assertEquals(lay.get("model.norm.weight").offset(), groups[0]);
        assertEquals(lay.get("model.layers.0.input_layernorm.weight").offset(), groups[groups.length - 2]);
        assertEquals(0, groups[groups.length - 1]);
        ShardLayout cut = new ShardLayout(lay.totalElements(), 3, 100, groups);
        long top = lay.totalElements();
        for (ShardLayout.Bucket bk : cut.buckets()) {
            assertEquals(top, bk.to(), "no gaps");
            top = bk.from();
            for (long gStart : groups) assertFalse(gStart > bk.from() && gStart < bk.to(), "bucket [" + bk.from() + ", " + bk.to() + ") straddles a group");
        }
        assertEquals(0, top);
        try (CpuBackend be = new CpuBackend(1); LlamaWeights w = LlamaWeights.gradientWindow(be, C, DType.BF16)) {
            long layer = groups[1] - groups[2]; // here a layer is the largest group (a vocabulary of 10)
            assertEquals(layer, lay.largestBackwardGroup());
            // each slab holds the largest group after an offset of up to 127 elements (a group keeps its flat offset's
            // residue modulo 128 elements, 256 bytes of bf16: its tensors as aligned as in the flat buffer)
            assertEquals(2 * ((layer + 127 + 127) / 128 * 128), LlamaWeights.gradientWindowElements(C), "two slabs of the largest group and an alignment");
            // group 0 (the norm, then the LM head) and group 2 (layer 0, from its input norm) share slab 0; group 1 (layer 1) is slab 1
            be.fill(w.range(groups[2], (int) (groups[1] - groups[2])), 1f); // all of layer 0 (each group keeps its own alignment in the slab)
            assertEquals(1f, w.get("model.norm.weight").toFloatsWidened()[0], 0f, "group 0 aliases group 2's slab");
            assertEquals(0f, w.get("model.layers.1.input_layernorm.weight").toFloatsWidened()[0], 0f, "group 1: the other slab");
            w.zeroGroup(2);
            assertEquals(0f, w.get("model.norm.weight").toFloatsWidened()[0], 0f, "zeroing group 2 zeroes what group 0 saw");
            assertEquals(w.groupOf(groups[1]), 1);
            var e = assertThrows(IllegalArgumentException.class, () -> w.range(groups[1] - 1, 2));
            assertTrue(e.getMessage().contains("straddles backward groups"), e.getMessage());
            var f = assertThrows(IllegalStateException.class, w::flat);
            assertEquals("flat() of a gradient window (two slabs, not every parameter at once)", f.getMessage());
            assertThrows(IllegalStateException.class, w::copy);
        }
    }

    /**
     * The ZeRO-2 path forced at world 1 (what ShardedAdamWNcclTest runs through NCCL on one GPU: each bucket reduced to
     * its one owner, accumulated in the fp32 slice, the compute weights all-gathered in place) gives plain AdamW's
     * weights and moments bit for bit.
     */
    @Test
    void theShardedPathForcedAtWorldOneEqualsPlainAdamW(@TempDir Path tmp) throws Exception {
        for (DType dt : new DType[] {DType.FP32, DType.BF16}) {
            Path a = Files.createDirectories(tmp.resolve(dt.label() + "plain")), b = Files.createDirectories(tmp.resolve(dt.label() + "forced"));
            float[][] plain = train(1, 1, dt, 3, 2, a, false), forced = train(1, 1, dt, 3, 2, b, true);
            assertArrayEquals(plain[0], forced[0], 0f, dt.label() + ": master and compute weights");
            assertArrayEquals(plain[1], forced[1], 0f, dt.label() + ": AdamW moments");
        }
    }
}
