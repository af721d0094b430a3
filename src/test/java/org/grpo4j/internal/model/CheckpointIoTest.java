package org.grpo4j.internal.model;

import static org.junit.jupiter.api.Assertions.*;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.TestBackends;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class CheckpointIoTest {
    static final Path TOK = Path.of("examples/tiny-tokenizer");

    /**
     * A file's bytes do not depend on the order its metadata map iterates in (Map.of's changes from run to run, so an
     * exactly resumed run's optimizer slices differed from the original's in their headers alone).
     */
    @Test
    void metadataIsWrittenInOneOrder(@TempDir Path tmp) throws IOException {
        java.util.LinkedHashMap<String, String> a = new java.util.LinkedHashMap<>(), b = new java.util.LinkedHashMap<>();
        String[] keys = {"step", "rank", "world_size", "first_parameter", "parameters"};
        for (int i = 0; i < keys.length; i++) a.put(keys[i], "v" + i);
        for (int i = keys.length - 1; i >= 0; i--) b.put(keys[i], "v" + i);
        List<SafeTensors.Out> outs = List.of(new SafeTensors.Out("x", new int[] {3}, new float[] {1, 2, 3}, 0));
        SafeTensors.write(tmp.resolve("a.safetensors"), outs, "F32", a);
        SafeTensors.write(tmp.resolve("b.safetensors"), outs, "F32", b);
        assertArrayEquals(Files.readAllBytes(tmp.resolve("a.safetensors")), Files.readAllBytes(tmp.resolve("b.safetensors")));
        try (SafeTensors st = SafeTensors.open(tmp.resolve("b.safetensors"))) {
            assertEquals(a, st.metadata());
        }
    }

    @Test
    void saveLoadIsBitwiseAndShardsWork(@TempDir Path tmp) throws IOException {
        Backend be = TestBackends.cpu();
        LlamaConfig c = LlamaConfig.tiny(512, 506, 507);
        try (LlamaWeights w = LlamaWeights.init(be, c, 42)) {
            w.save(tmp.resolve("single"), "F32", 1L << 40, TOK);
            w.save(tmp.resolve("sharded"), "F32", 100_000, TOK);
            assertTrue(Files.isRegularFile(tmp.resolve("single/model.safetensors")));
            assertTrue(Files.isRegularFile(tmp.resolve("single/tokenizer.json")));
            assertTrue(Files.isRegularFile(tmp.resolve("single/generation_config.json")));
            assertTrue(Files.isRegularFile(tmp.resolve("sharded/model.safetensors.index.json")));
            long shards;
            try (var s = Files.list(tmp.resolve("sharded"))) { shards = s.filter(p -> p.toString().endsWith(".safetensors")).count(); }
            assertTrue(shards > 1, "several shards");
            float[] want = w.flat().toFloats();
            for (String d : List.of("single", "sharded"))
                try (LlamaWeights back = LlamaWeights.load(be, tmp.resolve(d))) {
                    assertEquals(c, back.config());
                    assertArrayEquals(want, back.flat().toFloats(), d);
                }
            // bf16 saves round each value to bf16
            w.save(tmp.resolve("bf16"), "BF16", 1L << 40, null);
            try (LlamaWeights back = LlamaWeights.load(be, tmp.resolve("bf16"))) {
                float[] got = back.flat().toFloats();
                for (int i = 0; i < want.length; i++) assertEquals(org.grpo4j.internal.backend.Bf16.round(want[i]), got[i]);
            }
            // an existing non-empty output is refused and left untouched
            assertThrows(java.nio.file.FileAlreadyExistsException.class, () -> w.save(tmp.resolve("single"), "F32", 1L << 40, TOK));
            assertTrue(Files.isRegularFile(tmp.resolve("single/model.safetensors")));
            try (var s = Files.list(tmp)) { assertTrue(s.noneMatch(p -> p.getFileName().toString().contains(".tmp-")), "no temp dirs left"); }
        }
    }

    /**
     * What a ZeRO-2 rank loads without the fp32 model beside it: a bf16 load (each piece read in fp32, rounded once)
     * into a padded buffer equals the fp32 load cast to bf16; a flat range read from the files (single and sharded,
     * ranges across tensors and shards) equals the fp32 load's range; the HF init made in bf16 equals the fp32 init cast,
     * and a range of it the fp32 init's range.
     */
    @Test
    void ranksReadTheirPiecesWithoutTheWholeFp32Model(@TempDir Path tmp) throws IOException {
        Backend be = TestBackends.cpu();
        LlamaConfig c = LlamaConfig.tiny(512, 506, 507);
        try (LlamaWeights w = LlamaWeights.init(be, c, 42); LlamaWeights cast = w.castTo(DType.BF16)) {
            w.save(tmp.resolve("single"), "F32", 1L << 40, TOK);
            w.save(tmp.resolve("sharded"), "F32", 100_000, TOK);
            float[] all = w.flat().toFloats();
            short[] bits = cast.flat().toBf16Bits();
            long total = all.length;
            for (String d : List.of("single", "sharded")) {
                try (LlamaWeights half = LlamaWeights.load(be, tmp.resolve(d), DType.BF16, total + 100)) {
                    assertArrayEquals(bits, half.range(0, (int) total).toBf16Bits(), d + ": bf16 load = the fp32 load rounded once");
                    assertEquals(total + 100, half.padded().numel(), "the padded capacity");
                }
                for (long[] r : new long[][] {{0, total}, {1, 3}, {total / 3, total / 2}, {total - 7, 7}}) {
                    try (var dst = be.empty(DType.FP32, (int) r[1])) {
                        LlamaWeights.readRange(be, tmp.resolve(d), c, r[0], dst);
                        assertArrayEquals(java.util.Arrays.copyOfRange(all, (int) r[0], (int) (r[0] + r[1])), dst.toFloats(), d + " range " + r[0] + "+" + r[1]);
                    }
                }
            }
            try (LlamaWeights initHalf = LlamaWeights.init(be, c, 42, DType.BF16, total + 8); var dst = be.empty(DType.FP32, 1000)) {
                assertArrayEquals(bits, initHalf.range(0, (int) total).toBf16Bits(), "bf16 init = the fp32 init rounded once");
                LlamaWeights.initRange(be, c, 42, total / 2, dst);
                assertArrayEquals(java.util.Arrays.copyOfRange(all, (int) (total / 2), (int) (total / 2) + 1000), dst.toFloats(), "init range");
            }
            try (var dst = be.empty(DType.FP32, 8)) {
                var e = assertThrows(IllegalArgumentException.class, () -> LlamaWeights.readRange(be, tmp.resolve("single"), c, total - 4, dst));
                assertTrue(e.getMessage().contains("outside the " + total + " parameters"), e.getMessage());
            }
        }
    }

    /**
     * The trainer's checkpoint of gathered master weights: saved from the host array itself (padding after the
     * parameters ignored), byte for byte what saving the same weights from a backend writes, sharded too.
     */
    @Test
    void savingHostWeightsWritesTheSameFilesAsSavingFromABackend(@TempDir Path tmp) throws IOException {
        Backend be = TestBackends.cpu();
        LlamaConfig c = LlamaConfig.tiny(512, 506, 507);
        try (LlamaWeights w = LlamaWeights.init(be, c, 43)) {
            float[] host = java.util.Arrays.copyOf(w.flat().toFloats(), (int) w.flat().numel() + 1000); // a ZeRO-2 padded gather
            for (long shard : new long[] {1L << 40, 100_000}) {
                Path a = tmp.resolve("backend" + shard), b = tmp.resolve("host" + shard);
                w.save(a, "F32", shard, TOK);
                LlamaWeights.saveHost(c, host, b, "F32", shard, TOK);
                List<Path> files;
                try (var st = Files.list(a)) { files = st.sorted().toList(); }
                try (var st = Files.list(b)) { assertEquals(files.stream().map(Path::getFileName).toList(), st.sorted().map(Path::getFileName).toList()); }
                for (Path f : files) assertArrayEquals(Files.readAllBytes(f), Files.readAllBytes(b.resolve(f.getFileName())), f.getFileName().toString());
            }
            assertThrows(IllegalArgumentException.class, () -> LlamaWeights.saveHost(c, new float[10], tmp.resolve("short"), "F32", 1L << 40, null));
        }
    }

    /** A minimal safetensors file with the given raw header and data length. */
    static Path rawFile(Path dir, String name, String header, int dataBytes, long declaredHeaderLen) throws IOException {
        byte[] h = header.getBytes(StandardCharsets.UTF_8);
        ByteBuffer b = ByteBuffer.allocate(8 + h.length + dataBytes).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(declaredHeaderLen < 0 ? h.length : declaredHeaderLen).put(h);
        Path f = dir.resolve(name);
        Files.write(f, b.array());
        return f;
    }

    static void assertBad(Path f, String... fragments) {
        IOException e = assertThrows(IOException.class, () -> { try (SafeTensors s = SafeTensors.open(f)) { s.tensors(); } });
        assertTrue(e.getMessage().startsWith(f.toString()), e.getMessage());
        for (String fr : fragments) assertTrue(e.getMessage().contains(fr), fr + " in: " + e.getMessage());
    }

    @Test
    void corruptedFilesGiveErrorsNamingFileAndTensor(@TempDir Path tmp) throws IOException {
        String ok = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[8,16]}}";
        try (SafeTensors s = SafeTensors.open(rawFile(tmp, "ok.safetensors", ok, 16, -1))) {
            assertEquals(2, s.tensors().size());
            assertEquals(2, s.readFloats("a").length);
        }
        assertBad(rawFile(tmp, "trunc.safetensors", ok, 10, -1), "truncated");
        assertBad(rawFile(tmp, "huge.safetensors", ok, 16, 1L << 40), "header length");
        assertBad(rawFile(tmp, "past.safetensors", ok, 16, 4096), "header claims 4096 bytes");
        assertBad(rawFile(tmp, "json.safetensors", "{\"a\":", 0, -1), "not valid JSON");
        assertBad(rawFile(tmp, "dtype.safetensors", ok.replace("BF16", "Q4"), 16, -1), "tensor b", "unknown dtype");
        assertBad(rawFile(tmp, "len.safetensors", ok.replace("[2,2]", "[2,3]"), 16, -1), "tensor b", "needs 12 bytes");
        assertBad(rawFile(tmp, "overlap.safetensors", ok.replace("[8,16]", "[4,12]"), 16, -1), "overlap");
        assertBad(rawFile(tmp, "hole.safetensors", ok.replace("[8,16]", "[10,18]"), 18, -1), "hole");
        // a name given twice (the last one won: a F32[2] read as BF16[2,2]) is refused as a duplicate
        assertBad(rawFile(tmp, "dup.safetensors", ok.replace("\"b\":", "\"a\":"), 16, -1), "not valid JSON", "Duplicate field 'a'");
        // an empty tensor at the offset where another starts, listed after it or before it: both fine, as in Rust safetensors
        for (String hdr : new String[] {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}",
                "{\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}"})
            try (SafeTensors st = SafeTensors.open(rawFile(tmp, "empty.safetensors", hdr, 8, -1))) {
                assertEquals(2, st.tensors().size(), hdr);
            }
        // a header that is not UTF-8 (a Latin-1 name): said so, not decoded with replacement characters into a tensor name
        byte[] latin = "{\"\u00e4\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}".getBytes(java.nio.charset.StandardCharsets.ISO_8859_1);
        Files.write(tmp.resolve("latin.safetensors"), ByteBuffer.allocate(8 + latin.length).order(ByteOrder.LITTLE_ENDIAN).putLong(latin.length).put(latin).array());
        assertBad(tmp.resolve("latin.safetensors"), "header is not valid UTF-8");
        Files.write(tmp.resolve("tiny.safetensors"), new byte[3]);
        assertBad(tmp.resolve("tiny.safetensors"), "too short");
    }

    @Test
    void modelDirectoryErrorsNameTheTensor(@TempDir Path tmp) throws IOException {
        Backend be = TestBackends.cpu();
        LlamaConfig c = LlamaConfig.tiny(512, 506, 507);
        try (LlamaWeights w = LlamaWeights.init(be, c, 1)) {
            w.save(tmp.resolve("m"), "F32", 1L << 40, null);
        }
        // config claims a different size: shape mismatch names the tensor
        String cfg = Files.readString(tmp.resolve("m/config.json"));
        Files.writeString(tmp.resolve("m/config.json"), cfg.replace("\"intermediate_size\" : 192", "\"intermediate_size\" : 200"));
        IOException e = assertThrows(IOException.class, () -> LlamaWeights.load(be, tmp.resolve("m")));
        assertTrue(e.getMessage().contains("gate_proj") && e.getMessage().contains("shape"), e.getMessage());
        // tied embeddings but lm_head present: unexpected tensor
        Files.writeString(tmp.resolve("m/config.json"), cfg.replace("\"tie_word_embeddings\" : false", "\"tie_word_embeddings\" : true"));
        e = assertThrows(IOException.class, () -> LlamaWeights.load(be, tmp.resolve("m")));
        assertTrue(e.getMessage().contains("unexpected tensor lm_head.weight"), e.getMessage());
        // unknown architecture
        Files.writeString(tmp.resolve("m/config.json"), "{\"model_type\": \"mistral\", \"architectures\": [\"MistralForCausalLM\"]}");
        IllegalArgumentException ia = assertThrows(IllegalArgumentException.class, () -> LlamaWeights.load(be, tmp.resolve("m")));
        assertTrue(ia.getMessage().contains("config.json") && ia.getMessage().contains("mistral"), ia.getMessage());
        // a missing tensor
        Files.writeString(tmp.resolve("m/config.json"), cfg);
        try (LlamaWeights w = LlamaWeights.init(be, c, 1)) {
            List<SafeTensors.Out> outs = new java.util.ArrayList<>();
            float[] host = w.flat().toFloats();
            for (ParameterLayout.Entry en : w.layout().entries())
                if (!en.name().equals("model.norm.weight")) outs.add(new SafeTensors.Out(en.name(), en.shape(), host, (int) en.offset()));
            SafeTensors.write(tmp.resolve("m/model.safetensors"), outs, "F32", Map.of());
        }
        e = assertThrows(IOException.class, () -> LlamaWeights.load(be, tmp.resolve("m")));
        assertTrue(e.getMessage().contains("model.norm.weight is missing"), e.getMessage());
        // sharded: a tensor of a shard that the index leaves out is named so (it said "listed in the index under null")
        try (LlamaWeights w = LlamaWeights.init(be, c, 1)) {
            w.save(tmp.resolve("s"), "F32", 1L << 16, null);
        }
        Path idx = tmp.resolve("s/model.safetensors.index.json");
        Files.writeString(idx, Files.readString(idx).replaceFirst("\"model.norm.weight\" : \"[^\"]+\",?", ""));
        e = assertThrows(IOException.class, () -> LlamaWeights.load(be, tmp.resolve("s")));
        assertTrue(e.getMessage().contains("tensor model.norm.weight is not listed in model.safetensors.index.json's weight_map"), e.getMessage());
        // the index putting a tensor in a shard that does not hold it, no listed shard holding it: the missing tensor's
        // message names the shard the index gave
        Path s2 = Files.createDirectories(tmp.resolve("s2"));
        Files.copy(tmp.resolve("m/config.json"), s2.resolve("config.json"));
        try (LlamaWeights w = LlamaWeights.init(be, c, 1)) {
            List<SafeTensors.Out> rest = new java.util.ArrayList<>(), norm = new java.util.ArrayList<>();
            float[] host = w.flat().toFloats();
            StringBuilder map = new StringBuilder();
            for (ParameterLayout.Entry en : w.layout().entries()) {
                (en.name().equals("model.norm.weight") ? norm : rest).add(new SafeTensors.Out(en.name(), en.shape(), host, (int) en.offset()));
                map.append(map.length() == 0 ? "" : ", ").append('"').append(en.name()).append("\": \"a.safetensors\"");
            }
            SafeTensors.write(s2.resolve("a.safetensors"), rest, "F32", Map.of());
            SafeTensors.write(s2.resolve("b.safetensors"), norm, "F32", Map.of()); // (listed nowhere)
            Files.writeString(s2.resolve("model.safetensors.index.json"), "{\"metadata\": {}, \"weight_map\": {" + map + "}}");
        }
        e = assertThrows(IOException.class, () -> LlamaWeights.load(be, s2));
        assertTrue(e.getMessage().contains("tensor model.norm.weight is missing from the checkpoint (model.safetensors.index.json puts it in a.safetensors,"
                + " which does not hold it)"), e.getMessage());
    }

    /**
     * A directory with both model.safetensors and a sharded set (model.safetensors.index.json) loads the single file,
     * as transformers does (it looks for model.safetensors first); grpo4j loaded the shards, so the same directory gave
     * two programs different weights.
     */
    @Test
    void aSingleFileBesideAnIndexIsTheOneLoaded(@TempDir Path tmp) throws IOException {
        Backend be = TestBackends.cpu();
        LlamaConfig c = LlamaConfig.tiny(512, 506, 507);
        float[] single;
        try (LlamaWeights w = LlamaWeights.init(be, c, 1); LlamaWeights x = LlamaWeights.init(be, c, 2)) {
            w.save(tmp.resolve("m"), "F32", 1L << 16, null);
            x.save(tmp.resolve("one"), "F32", 1L << 40, null);
            single = x.flat().toFloats();
        }
        assertTrue(Files.isRegularFile(tmp.resolve("m/model.safetensors.index.json")));
        Files.copy(tmp.resolve("one/model.safetensors"), tmp.resolve("m/model.safetensors"));
        try (LlamaWeights back = LlamaWeights.load(be, tmp.resolve("m"))) {
            assertArrayEquals(single, back.flat().toFloats());
        }
    }

    @Test
    void tensorsPastTwoGibibytesAreReadThroughTheMapping(@TempDir Path tmp) throws IOException {
        // a sparse file: a 2.5 GB zero tensor, then a small tensor whose bytes start past 2^31
        long big = 2_500_000_000L / 4 * 4;
        String header = "{\"big\":{\"dtype\":\"F32\",\"shape\":[" + big / 4 + "],\"data_offsets\":[0," + big + "]},"
                + "\"small\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[" + big + "," + (big + 12) + "]}}";
        byte[] h = header.getBytes(StandardCharsets.UTF_8);
        Path f = tmp.resolve("big.safetensors");
        try (RandomAccessFile raf = new RandomAccessFile(f.toFile(), "rw")) {
            ByteBuffer lb = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(h.length);
            raf.write(lb.array());
            raf.write(h);
            raf.setLength(8 + h.length + big + 12);
            raf.seek(8 + h.length + big);
            ByteBuffer d = ByteBuffer.allocate(12).order(ByteOrder.LITTLE_ENDIAN).putFloat(1.5f).putFloat(-2f).putFloat(3.25f);
            raf.write(d.array());
        }
        try (SafeTensors s = SafeTensors.open(f)) {
            assertArrayEquals(new float[] {1.5f, -2f, 3.25f}, s.readFloats("small"));
        }
    }

    @Test
    void fp16IsConvertedExactly() {
        assertEquals(1f, SafeTensors.halfToFloat((short) 0x3C00));
        assertEquals(-2f, SafeTensors.halfToFloat((short) 0xC000));
        assertEquals(65504f, SafeTensors.halfToFloat((short) 0x7BFF));
        assertEquals((float) Math.pow(2, -24), SafeTensors.halfToFloat((short) 0x0001));
        assertEquals(Float.POSITIVE_INFINITY, SafeTensors.halfToFloat((short) 0x7C00));
        assertTrue(Float.isNaN(SafeTensors.halfToFloat((short) 0x7E00)));
    }
}
