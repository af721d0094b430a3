package org.grpo4j.internal.cli;

import static org.junit.jupiter.api.Assertions.*;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import org.grpo4j.internal.backend.Bf16;
import org.grpo4j.internal.model.SafeTensors;
import org.grpo4j.internal.tokenizer.ChatTemplate;
import org.grpo4j.internal.tokenizer.Tokenizer;
import org.grpo4j.internal.util.TestFiles;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code grpo4j export}: a run's policy as an HF directory (bf16 or fp32), its chat template, shards, bad input. */
class ExportCommandTest {
    @TempDir
    static Path root;
    static Path run;

    /** A finished 1-step run of the tiny model (its step_1 checkpoint is exported). */
    @BeforeAll
    static void train() throws Exception {
        run = root.resolve("run");
        List<String> args = new ArrayList<>(List.of("train", "--config", "examples/tiny-arith.json"));
        for (String s : org.grpo4j.internal.train.GrpoTrainerTestAccess.small(run, 1)) {
            args.add("--set");
            args.add(s);
        }
        CliTest.Run r = CliTest.run(args.toArray(String[]::new));
        assertEquals(0, r.code(), r.err());
    }

    /** Every tensor of an HF directory's weight files, widened to fp32, in name order. */
    static java.util.TreeMap<String, float[]> tensors(Path dir) throws Exception {
        java.util.TreeMap<String, float[]> all = new java.util.TreeMap<>();
        try (var s = Files.list(dir)) {
            for (Path f : s.filter(p -> p.toString().endsWith(".safetensors")).toList())
                try (SafeTensors st = SafeTensors.open(f)) {
                    for (String name : st.tensors().keySet()) assertNull(all.put(name, st.readFloats(name)), name + " twice");
                }
        }
        return all;
    }

    static String dtypes(Path dir) throws Exception {
        java.util.TreeSet<String> d = new java.util.TreeSet<>();
        try (var s = Files.list(dir)) {
            for (Path f : s.filter(p -> p.toString().endsWith(".safetensors")).toList())
                try (SafeTensors st = SafeTensors.open(f)) {
                    st.tensors().values().forEach(t -> d.add(t.dtype()));
                }
        }
        return String.join(",", d);
    }

    @Test
    void bf16IsEachWeightRoundedOnceWithTheRunsChatTemplate() throws Exception {
        Path out = root.resolve("bf16");
        CliTest.Run r = CliTest.run("export", "--from", run.toString(), "--out", out.toString());
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("exported step_1 of " + run) && r.out().contains("bf16 weights") && r.out().contains("chat template tulu"), r.out());
        var src = tensors(run.resolve("checkpoints/step_1/model")); // fp32, as the run saved its policy
        var bf = tensors(out);
        assertEquals(src.keySet(), bf.keySet());
        assertEquals("BF16", dtypes(out));
        assertEquals("F32", dtypes(run.resolve("checkpoints/step_1/model")));
        long n = 0;
        for (String name : src.keySet()) {
            float[] a = src.get(name), b = bf.get(name);
            assertEquals(a.length, b.length, name);
            for (int i = 0; i < a.length; i++, n++)
                assertEquals(Float.floatToRawIntBits(Bf16.toFloat(Bf16.fromFloat(a[i]))), Float.floatToRawIntBits(b[i]), name + "[" + i + "]");
        }
        assertTrue(n > 100_000, "every weight compared: " + n);
        JsonNode cfg = new ObjectMapper().readTree(out.resolve("config.json").toFile());
        assertEquals("bfloat16", cfg.get("torch_dtype").asText());
        assertEquals("bfloat16", cfg.get("dtype").asText(), "the key transformers 5 reads");
        assertTrue(Files.isRegularFile(out.resolve("generation_config.json")));
        try (Tokenizer t = Tokenizer.load(out)) {
            assertEquals(ChatTemplate.TULU, t.chatTemplate(), "the template the run trained with");
        }
        // the exported directory is a model grpo4j (and transformers) loads
        CliTest.Run info = CliTest.run("info", "--backend", "cpu", "--model", out.toString());
        assertEquals(0, info.code(), info.err());
    }

    @Test
    void fp32IsTheCheckpointBitForBitAndShardsSplitTheWeights() throws Exception {
        Path out = root.resolve("fp32");
        Path killed = Files.createDirectories(root.resolve(".fp32.tmp-k1ll3d")); // what an export killed half-way left
        Files.writeString(killed.resolve("model-00001-of-00009.safetensors"), "half written");
        // written long ago (an export to the same --out written to in the last 2 minutes is left alone)
        java.nio.file.attribute.FileTime old = java.nio.file.attribute.FileTime.fromMillis(System.currentTimeMillis() - 3_600_000);
        Files.setLastModifiedTime(killed.resolve("model-00001-of-00009.safetensors"), old);
        Files.setLastModifiedTime(killed, old);
        Path running = Files.createDirectories(root.resolve(".fp32.tmp-runn1ng"));
        Files.writeString(running.resolve("model-00001-of-00009.safetensors"), "being written");
        CliTest.Run r = CliTest.run("export", "--from", run.resolve("checkpoints/step_1").toString(), "--out", out.toString(), "--dtype", "fp32",
                "--max-shard-gib", "0.0002", "--chat-template", "keep");
        assertEquals(0, r.code(), r.err());
        assertFalse(Files.exists(killed), "the killed export's temporary is gone");
        assertTrue(Files.exists(running.resolve("model-00001-of-00009.safetensors")), "a temporary written just now is another export's");
        org.grpo4j.internal.util.AtomicDir.deleteTree(running);
        assertTrue(r.err().contains("removed " + killed.toAbsolutePath() + ", left by an export to " + out + " that did not finish"), r.err());
        var src = tensors(run.resolve("checkpoints/step_1/model"));
        var got = tensors(out);
        assertEquals(src.keySet(), got.keySet());
        for (String name : src.keySet()) assertArrayEquals(src.get(name), got.get(name), name);
        JsonNode idx = new ObjectMapper().readTree(out.resolve("model.safetensors.index.json").toFile());
        java.util.Set<String> files = new java.util.TreeSet<>();
        idx.get("weight_map").forEach(f -> files.add(f.asText()));
        assertTrue(files.size() > 1, "shards of at most ~210 KB: " + files);
        assertEquals(Files.readString(run.resolve("checkpoints/step_1/model/tokenizer_config.json")), Files.readString(out.resolve("tokenizer_config.json")),
                "keep: the tokenizer files as they were");
        // a model directory as the source: its own template kept, another one set on request
        Path again = root.resolve("from-model");
        CliTest.Run m = CliTest.run("export", "--from", out.toString(), "--out", again.toString(), "--chat-template", "llama3");
        assertEquals(0, m.code(), m.err());
        assertTrue(m.out().contains("exported the model in " + out), m.out());
        try (Tokenizer t = Tokenizer.load(again)) {
            assertEquals(ChatTemplate.LLAMA3, t.chatTemplate());
        }
    }

    /** The run's template name is read as the trainer reads it (case and spaces aside); "tokenizer" keeps the tokenizer's own. */
    @Test
    void theRunsTemplateNameInAnyCase() throws Exception {
        Path ck = root.resolve("ck-tokenizer");
        TestFiles.copyTree(run.resolve("checkpoints/step_1"), ck);
        Path cfg = ck.resolve("config.json");
        Files.writeString(cfg, Files.readString(cfg).replace("\"chat_template_name\" : \"tulu\"", "\"chat_template_name\" : \" Tokenizer\""));
        assertTrue(Files.readString(cfg).contains("\" Tokenizer\""));
        Path out = root.resolve("kept-template");
        CliTest.Run r = CliTest.run("export", "--from", ck.toString(), "--out", out.toString());
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("chat template as the tokenizer had it"), r.out());
        assertEquals(Files.readString(ck.resolve("model/tokenizer_config.json")), Files.readString(out.resolve("tokenizer_config.json")));
    }

    /**
     * A model directory whose template is in chat_template.jinja (transformers 4.47+ writes it there; it wins over
     * tokenizer_config.json's): kept, the file copied, when the export keeps the template; left out when another
     * template is written into tokenizer_config.json, which it would otherwise override in transformers.
     */
    @Test
    void aTemplateFileIsKeptOrReplaced() throws Exception {
        Path model = root.resolve("jinja-model");
        TestFiles.copyTree(run.resolve("checkpoints/step_1/model"), model);
        Files.writeString(model.resolve(Tokenizer.CHAT_TEMPLATE_FILE), "{{ messages[0]['content'] }}");
        Path kept = root.resolve("jinja-kept"), replaced = root.resolve("jinja-tulu");
        CliTest.Run r = CliTest.run("export", "--from", model.toString(), "--out", kept.toString());
        assertEquals(0, r.code(), r.err());
        assertEquals("{{ messages[0]['content'] }}", Files.readString(kept.resolve(Tokenizer.CHAT_TEMPLATE_FILE)));
        try (Tokenizer t = Tokenizer.load(kept)) {
            assertEquals("{{ messages[0]['content'] }}", t.chatTemplate());
        }
        r = CliTest.run("export", "--from", model.toString(), "--out", replaced.toString(), "--chat-template", "tulu");
        assertEquals(0, r.code(), r.err());
        assertFalse(Files.exists(replaced.resolve(Tokenizer.CHAT_TEMPLATE_FILE)), "the file would override the template written");
        try (Tokenizer t = Tokenizer.load(replaced)) {
            assertEquals(ChatTemplate.TULU, t.chatTemplate());
        }
    }

    @Test
    void badInputIsRefusedAndWritesNothing() throws Exception {
        Path nan = poisoned("nan-model", Float.NaN);
        Path big = poisoned("big-model", 3.4e38f); // finite in fp32, beyond bf16's largest (3.39e38): rounds to infinity
        List<String[]> cases = List.of(
                new String[] {"--from", nan.toString(), "--out", root.resolve("x1").toString(), "mlp.down_proj.weight", "NaN at element 7"},
                new String[] {"--from", big.toString(), "--out", root.resolve("x6").toString(), "holds 3.4E38 at element 7, beyond bf16's range"},
                new String[] {"--from", nan.toString(), "--out", Files.createDirectories(root.resolve("x7")).toString(), "NaN at element 7"},
                new String[] {"--from", run.toString(), "--out", run.toString(), run.toString(), "not empty"},
                new String[] {"--from", run.toString(), "--out", root.resolve("x2").toString(), "--dtype", "fp16", "--dtype must be bf16 or fp32", "fp16"},
                new String[] {"--from", run.toString(), "--out", root.resolve("x3").toString(), "--chat-template", "chatml", "unknown chat template \"chatml\""},
                new String[] {"--from", root.resolve("nonexist").toString(), "--out", root.resolve("x4").toString(), "nonexist", "no such run directory"},
                new String[] {"--from", run.toString(), "--out", root.resolve("x5").toString(), "--max-shard-gib", "0", "--max-shard-gib must be in"});
        for (String[] c : cases) {
            List<String> args = new ArrayList<>(List.of("export"));
            List<String> says = new ArrayList<>();
            for (int i = 0; i < c.length; i++) (i < argsCount(c) ? args : says).add(c[i]);
            CliTest.Run r = CliTest.run(args.toArray(String[]::new));
            assertEquals(2, r.code(), String.join(" ", args) + ": " + r.out() + r.err());
            for (String s : says) assertTrue(r.err().contains(s), "\"" + s + "\" in: " + r.err());
            assertFalse(r.err().contains("cannot write"), "the model is bad, not the output: " + r.err());
        }
        for (String x : List.of("x1", "x2", "x3", "x4", "x5", "x6")) assertFalse(Files.exists(root.resolve(x)), x + " written");
        try (var s = Files.list(root.resolve("x7"))) {
            assertEquals(0, s.count(), "the empty --out the user made is still there, empty");
        }
        try (var s = Files.list(root)) {
            assertEquals(List.of(), s.map(p -> p.getFileName().toString()).filter(n -> n.contains("x1")).toList(), "no temporary left behind");
        }
    }

    /** A copy of the run's step_1 model with {@code value} at element 7 of the last layer's down projection. */
    private static Path poisoned(String name, float value) throws Exception {
        Path dir = root.resolve(name);
        TestFiles.copyTree(run.resolve("checkpoints/step_1/model"), dir);
        Path f = dir.resolve("model.safetensors");
        try (SafeTensors st = SafeTensors.open(f)) {
            String tensor = st.tensors().keySet().stream().filter(k -> k.endsWith("mlp.down_proj.weight")).sorted().reduce((a, b) -> b).orElseThrow();
            SafeTensors.Info t = st.tensors().get(tensor);
            long headerBytes;
            try (FileChannel ch = FileChannel.open(f)) {
                ByteBuffer b = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
                ch.read(b, 0);
                headerBytes = b.getLong(0);
            }
            try (FileChannel ch = FileChannel.open(f, StandardOpenOption.WRITE)) {
                ch.write(ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN).putFloat(0, value), 8 + headerBytes + t.begin() + 4 * 7);
            }
        }
        return dir;
    }

    /** The option words and values of a case: pairs of "--name value" from the start. */
    private static int argsCount(String[] c) {
        int i = 0;
        while (i + 1 < c.length && c[i].startsWith("--")) i += 2;
        return i;
    }
}
