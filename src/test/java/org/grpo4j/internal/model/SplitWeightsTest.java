package org.grpo4j.internal.model;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.TestBackends;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Weight sets over 2^31 elements (Llama 3.1 8B: 8.03B) are one 2-D allocation instead of a 1-D flat tensor. The CPU
 * cannot allocate that much, so the split layout is forced on a micro model with {@link LlamaWeights#SPLIT_PROPERTY}
 * and checked against the flat layout: same views, copies, casts, saved files, loads and logits, bit for bit.
 */
class SplitWeightsTest {
    static final Backend be = TestBackends.cpu();

    /** Runs {@code body} with weight sets over {@code limit} elements split. */
    public static <T> T split(long limit, Callable<T> body) throws Exception {
        String old = System.getProperty(LlamaWeights.SPLIT_PROPERTY);
        System.setProperty(LlamaWeights.SPLIT_PROPERTY, Long.toString(limit));
        try {
            return body.call();
        } finally {
            if (old == null) System.clearProperty(LlamaWeights.SPLIT_PROPERTY);
            else System.setProperty(LlamaWeights.SPLIT_PROPERTY, old);
        }
    }

    static void assertSameTensors(LlamaWeights a, LlamaWeights b) {
        for (ParameterLayout.Entry e : a.layout().entries()) {
            if (a.dtype() == DType.FP32) assertArrayEquals(a.get(e.name()).toFloats(), b.get(e.name()).toFloats(), e.name());
            else assertArrayEquals(a.get(e.name()).toBf16Bits(), b.get(e.name()).toBf16Bits(), e.name());
        }
    }

    static void assertSameFiles(Path a, Path b) throws Exception {
        List<Path> fa, fb;
        try (var s = Files.list(a)) { fa = s.map(Path::getFileName).sorted().toList(); }
        try (var s = Files.list(b)) { fb = s.map(Path::getFileName).sorted().toList(); }
        assertEquals(fa, fb);
        for (Path f : fa) assertArrayEquals(Files.readAllBytes(a.resolve(f)), Files.readAllBytes(b.resolve(f)), f.toString());
    }

    @Test
    void splitWeightsBehaveLikeFlatOnes(@TempDir Path tmp) throws Exception {
        for (boolean tied : new boolean[] {false, true}) {
            LlamaConfig c = LlamaModelTest.micro(tied);
            long params = new ParameterLayout(c).totalElements();
            try (LlamaWeights w = LlamaModelTest.randomWeights(be, c, 3); LlamaWeights wh = w.castTo(DType.BF16)) {
                Path flatDir = tmp.resolve("flat" + tied), flatShards = tmp.resolve("flatShards" + tied);
                w.save(flatDir, "F32", 1L << 40, null);
                wh.save(flatShards, "BF16", 1000, null);
                float[] logits;
                try (PackedBatch pb = PackedBatch.of(be, List.of(new int[] {1, 5, 9, 2, 16}), 17)) { logits = new LlamaModel(wh).logits(pb); }
                split(params / 3, () -> {
                    try (LlamaWeights s = LlamaWeights.zeros(be, c); LlamaWeights padded = LlamaWeights.zeros(be, c, DType.BF16, params + 1000)) {
                        assertFalse(s.hasFlat());
                        IllegalStateException e = assertThrows(IllegalStateException.class, s::flat);
                        assertTrue(e.getMessage().contains("not one 1-D tensor"), e.getMessage());
                        assertEquals(2, s.padded().rank(), "one 2-D allocation");
                        assertEquals(params, s.padded().numel());
                        assertEquals(params + 1000, padded.padded().numel(), "padded() is exactly the capacity");
                        assertEquals(params + 1000, padded.capacity());
                        s.copyFrom(w);
                        assertSameTensors(w, s);
                        for (long from = 0; from < params; from += 100) // ranges cross the rows of the allocation
                            assertArrayEquals(w.range(from, (int) Math.min(100, params - from)).toFloats(), s.range(from, (int) Math.min(100, params - from)).toFloats());
                        try (LlamaWeights copy = s.copy(); LlamaWeights half = s.castTo(DType.BF16)) {
                            assertFalse(copy.hasFlat());
                            assertSameTensors(w, copy);
                            assertSameTensors(wh, half);
                            Path d = tmp.resolve("split" + tied), ds = tmp.resolve("splitShards" + tied);
                            s.save(d, "F32", 1L << 40, null);
                            half.save(ds, "BF16", 1000, null);
                            assertSameFiles(flatDir, d);
                            assertSameFiles(flatShards, ds);
                            try (PackedBatch pb = PackedBatch.of(be, List.of(new int[] {1, 5, 9, 2, 16}), 17)) {
                                assertArrayEquals(logits, new LlamaModel(half).logits(pb), "the same forward");
                            }
                        }
                        try (LlamaWeights back = LlamaWeights.load(be, flatDir); LlamaWeights back16 = LlamaWeights.load(be, flatDir, DType.BF16)) {
                            assertFalse(back.hasFlat());
                            assertSameTensors(w, back);
                            assertEquals(DType.BF16, back16.dtype());
                            assertSameTensors(wh, back16);
                        }
                        s.zero();
                        for (ParameterLayout.Entry en : s.layout().entries())
                            for (float x : s.get(en.name()).toFloats()) assertEquals(0f, x, en.name());
                    }
                    return null;
                });
            }
        }
    }

    /**
     * Loading in pieces (ranged reads of the safetensors, uploaded piece by piece, rounded to bf16 per piece) gives
     * what one whole read gives; a NaN in bf16 weights is found (it was a crash: a bf16 tensor downloaded as fp32).
     */
    @Test
    void piecewiseLoadsAndNonFiniteBf16Weights(@TempDir Path tmp) throws Exception {
        LlamaConfig c = LlamaModelTest.micro(false);
        try (LlamaWeights w = LlamaModelTest.randomWeights(be, c, 5); LlamaWeights wh = w.castTo(DType.BF16)) {
            w.save(tmp.resolve("m"), "F32", 1L << 40, null);
            try (SafeTensors st = SafeTensors.open(tmp.resolve("m/model.safetensors"))) {
                String name = "model.embed_tokens.weight";
                float[] whole = st.readFloats(name), part = new float[50];
                st.readFloats(name, 100, 50, part, 0);
                assertArrayEquals(java.util.Arrays.copyOfRange(whole, 100, 150), part);
                assertThrows(IllegalArgumentException.class, () -> st.readFloats(name, whole.length - 10, 11, new float[11], 0));
                for (DType dt : new DType[] {DType.FP32, DType.BF16})
                    try (LlamaWeights into = LlamaWeights.zeros(be, c, dt)) {
                        for (ParameterLayout.Entry e : into.layout().entries()) LlamaWeights.upload(be, st, e.name(), into.get(e.name()), 7);
                        assertSameTensors(dt == DType.FP32 ? w : wh, into);
                    }
            }
            assertNull(wh.firstNonFiniteTensor());
            try (var nan = be.upload(new float[] {1, Float.NaN}, 2)) {
                be.cast(wh.get("model.layers.1.input_layernorm.weight").reshape(c.hiddenSize()).view(3, 2), nan);
            }
            assertEquals("model.layers.1.input_layernorm.weight", wh.firstNonFiniteTensor());
        }
    }

    /**
     * On a GPU, a real weight set over 2^31 elements (Llama 3.1 8B cut to 6 layers: 2.36B parameters, 4.7 GB in bf16),
     * where the CUDA kernels index the whole 2-D allocation with 64 bits: zeroing it, writing through views past element
     * 2^31 (the last parameter, the tensor that straddles 2^31), a cast of the whole set to fp32.
     */
    @Test
    @org.junit.jupiter.api.Tag("gpu")
    void cudaWeightSetsOver2To31Elements() {
        Backend cu = TestBackends.cuda();
        LlamaConfig c = LlamaConfig.llama31_8b().withLayers(6);
        long p = new ParameterLayout(c).totalElements();
        assertTrue(p > LlamaWeights.MAX_ELEMENTS, p + " parameters");
        try (LlamaWeights w = LlamaWeights.zeros(cu, c, DType.BF16)) {
            assertFalse(w.hasFlat());
            ParameterLayout.Entry straddle = w.layout().entries().stream().filter(e -> e.offset() <= 1L << 31 && e.offset() + e.numel() > 1L << 31)
                    .findFirst().orElseThrow();
            cu.fill(w.range(p - 5, 5), 3);
            cu.fill(w.range((1L << 31) - 2, 4), 1.5);
            try (LlamaWeights f = w.castTo(DType.FP32)) {
                float[] tail = f.range(p - 8, 8).toFloats(), mid = f.range((1L << 31) - 4, 8).toFloats();
                assertArrayEquals(new float[] {0, 0, 0, 3, 3, 3, 3, 3}, tail, "the last parameters, through the cast of the whole set");
                assertArrayEquals(new float[] {0, 0, 1.5f, 1.5f, 1.5f, 1.5f, 0, 0}, mid, "around element 2^31, inside " + straddle.name());
                float[] viaView = f.get(straddle.name()).reshape((int) straddle.numel()).view((1L << 31) - straddle.offset() - 2, 4).toFloats();
                assertArrayEquals(new float[] {1.5f, 1.5f, 1.5f, 1.5f}, viaView, "the parameter view sees the same elements");
            }
            w.zero();
            assertArrayEquals(new short[5], w.range(p - 5, 5).toBf16Bits(), "zero() reaches the last element");
        }
    }

    /** Loading in bf16 rounds each weight once, as castTo does, without the fp32 model beside it. */
    @Test
    void loadingInBf16RoundsOnce(@TempDir Path tmp) throws Exception {
        LlamaConfig c = LlamaModelTest.micro(false);
        try (LlamaWeights w = LlamaModelTest.randomWeights(be, c, 4); LlamaWeights wh = w.castTo(DType.BF16)) {
            w.save(tmp.resolve("m"), "F32", 1L << 40, null);
            try (LlamaWeights back = LlamaWeights.load(be, tmp.resolve("m"), DType.BF16)) {
                assertSameTensors(wh, back);
            }
        }
    }
}
