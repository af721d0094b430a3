package org.grpo4j.internal.model;

import static org.junit.jupiter.api.Assertions.*;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.TestBackends;
import org.grpo4j.internal.data.DatasetReader;
import org.grpo4j.train.GrpoConfig;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * User files that were read wrong or refused without naming what was wrong (a review of 2026-12-01; each case failed
 * before its fix): a JSONL line holding two rows, absurd sizes in config.json, safetensors shapes whose byte count
 * overflows or is fractional, an index entry that names no file, --set keys that are empty or out of an int's range,
 * token ids in config.json that are not whole numbers.
 */
class UserFileBadInputTest {
    // two JSON objects on one line (a.jsonl without its last newline, then `cat a.jsonl b.jsonl`): the second row vanishes
    @Test
    void jsonlLineWithTwoObjectsIsRefused(@TempDir Path tmp) throws IOException {
        String row = "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"dataset\":\"gsm8k\",\"ground_truth\":\"1\"}";
        Path f = tmp.resolve("d.jsonl");
        Files.writeString(f, row + row + "\n");
        IOException e = assertThrows(IOException.class, () -> DatasetReader.read(f));
        assertTrue(e.getMessage().contains(f + ":1"), e.getMessage());
    }

    // a config.json typo in num_hidden_layers: ParameterLayout builds 9 entries a layer (OOM after ~40 s at 2e7 with -Xmx1g)
    /**
     * Content after the JSON value of config.json, generation_config.json or trainer_state.json (two objects
     * concatenated, a paste gone wrong) is refused naming the file, as Python's json.load (and so HF) refuses it: the
     * second object's values were silently ignored.
     */
    @Test
    void trailingContentAfterAJsonFileIsRefused(@TempDir Path tmp) throws IOException {
        String cfg = "{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":192,\"num_hidden_layers\":2,"
                + "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"vocab_size\":512,\"eos_token_id\":1}";
        Path m = Files.createDirectories(tmp.resolve("m"));
        Files.writeString(m.resolve("config.json"), cfg);
        LlamaConfig lc = LlamaConfig.read(m); // one object: fine
        Files.writeString(m.resolve("config.json"), cfg + "\n{\"hidden_size\":128}\n");
        IOException e = assertThrows(IOException.class, () -> LlamaConfig.read(m));
        assertTrue(e.getMessage().startsWith(m.resolve("config.json") + ": not valid JSON"), e.getMessage());
        Files.writeString(m.resolve("generation_config.json"), "{\"eos_token_id\": 1} {\"eos_token_id\": 2}");
        IllegalArgumentException g = assertThrows(IllegalArgumentException.class, () -> GenerationStops.generationConfigIds(m, lc));
        assertTrue(g.getMessage().startsWith(m.resolve("generation_config.json") + ": not valid JSON"), g.getMessage());
        Path ck = Files.createDirectories(tmp.resolve("step_3"));
        Files.writeString(ck.resolve("trainer_state.json"), "{\"training_step\": 3} x");
        IllegalArgumentException s = assertThrows(IllegalArgumentException.class,
                () -> org.grpo4j.internal.train.GrpoTrainerTestAccess.readTrainerState(ck.resolve("trainer_state.json"), ck));
        assertTrue(s.getMessage().startsWith(ck.resolve("trainer_state.json") + ": not valid JSON"), s.getMessage());
        // the run's config: a second object after it, a key given twice (the last one won), a --set value with more
        // after the number (read as its first number: "20 00" ran 20 steps), and a checkpoint's saved config
        String run = Files.readString(Path.of("examples/tiny-arith.json"));
        Path rc = tmp.resolve("run.json");
        Files.writeString(rc, run + "\n{\"learning_rate\": 5.0}\n");
        IllegalArgumentException c = assertThrows(IllegalArgumentException.class, () -> org.grpo4j.train.GrpoConfig.load(rc, List.of()));
        assertTrue(c.getMessage().startsWith(rc + ": not valid JSON"), c.getMessage());
        // in words, not Jackson's (its class and setting names: "bound as `com.fasterxml...`", FAIL_ON_TRAILING_TOKENS)
        assertTrue(c.getMessage().contains("more than one JSON value") && !c.getMessage().contains("`") && !c.getMessage().contains("jackson"),
                c.getMessage());
        Files.writeString(rc, run.substring(0, run.lastIndexOf('}')) + ", \"learning_rate\": 50.0}\n");
        c = assertThrows(IllegalArgumentException.class, () -> org.grpo4j.train.GrpoConfig.load(rc, List.of()));
        assertTrue(c.getMessage().startsWith(rc + ": not valid JSON") && c.getMessage().contains("learning_rate"), c.getMessage());
        Files.writeString(rc, run);
        c = assertThrows(IllegalArgumentException.class, () -> org.grpo4j.train.GrpoConfig.load(rc, List.of("num_training_steps=20 00")));
        assertTrue(c.getMessage().startsWith("--set num_training_steps=20 00: key \"num_training_steps\" has the wrong type"), c.getMessage());
        assertEquals(20, org.grpo4j.train.GrpoConfig.load(rc, List.of("num_training_steps= 20 ")).numTrainingSteps);
        org.grpo4j.train.GrpoConfig ok = org.grpo4j.train.GrpoConfig.load(rc, List.of());
        c = assertThrows(IllegalArgumentException.class, () -> org.grpo4j.train.GrpoConfig.fromJsonString(ok.toJson() + "{\"learning_rate\": 9}", "saved"));
        assertTrue(c.getMessage().startsWith("saved: not valid JSON"), c.getMessage());
    }

    @Test
    void absurdLayerCountIsRefusedByConfig() {
        String j = "{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":192,\"num_hidden_layers\":2000000000,"
                + "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"vocab_size\":512}";
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> LlamaConfig.fromJson(new ObjectMapper().readTree(j)));
        assertTrue(e.getMessage().contains("num_hidden_layers 2000000000"), e.getMessage());
    }

    // num_attention_heads x head_dim overflows int: qDim() is negative, loadBytes negative
    @Test
    void headsTimesHeadDimOverflowIsRefused() {
        String j = "{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":192,\"num_hidden_layers\":2,"
                + "\"num_attention_heads\":65536,\"num_key_value_heads\":65536,\"head_dim\":32768,\"vocab_size\":512}";
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> LlamaConfig.fromJson(new ObjectMapper().readTree(j)));
        assertTrue(e.getMessage().contains("num_attention_heads 65536 x head_dim 32768"), e.getMessage());
    }

    // numel x dtype bytes wraps to 0: a 2^62-element tensor in 0 bytes passes "dtype x shape = byte length"
    @Test
    void safetensorsByteLengthOverflowIsRefused(@TempDir Path tmp) throws IOException {
        Path f = CheckpointIoTest.rawFile(tmp, "wrap.safetensors",
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[1073741824,1073741824,4],\"data_offsets\":[0,0]}}", 0, -1);
        CheckpointIoTest.assertBad(f, "tensor w");
        Path g = CheckpointIoTest.rawFile(tmp, "long.safetensors",
                "{\"w\":{\"dtype\":\"F32\",\"shape\":[2147483647,2147483647,2147483647],\"data_offsets\":[0,4]}}", 4, -1);
        CheckpointIoTest.assertBad(g, "tensor w"); // today: ArithmeticException "long overflow", no file
        Path h = CheckpointIoTest.rawFile(tmp, "frac.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2.7],\"data_offsets\":[0,8]}}", 8, -1);
        CheckpointIoTest.assertBad(h, "tensor w"); // today: read as shape [2]
    }

    // an index whose weight_map value is not a file name: "java.io.IOException: Is a directory", no file named
    @Test
    void indexPointingAtADirectoryNamesTheIndex(@TempDir Path tmp) throws IOException {
        Backend be = TestBackends.cpu();
        Path m = tmp.resolve("m");
        try (LlamaWeights w = LlamaWeights.init(be, LlamaConfig.tiny(512, 506, 507), 1)) {
            w.save(m, "F32", 200_000, null);
        }
        Path idx = m.resolve("model.safetensors.index.json");
        Files.writeString(idx, Files.readString(idx).replaceFirst("\"model-00001-of-0000\\d.safetensors\"", "{}"));
        IOException e = assertThrows(IOException.class, () -> LlamaWeights.load(be, m));
        assertTrue(e.getMessage().contains(m.toString()), e.getMessage());
    }

    // --set with an empty key path, and an int key given a value past int's range
    @Test
    void badOverridesNameTheKey() {
        Path cfg = Path.of("examples/tiny-arith.json");
        IllegalArgumentException a = assertThrows(IllegalArgumentException.class, () -> GrpoConfig.load(cfg, List.of(".=1"))); // today: ArrayIndexOutOfBounds
        assertTrue(a.getMessage().contains("."), a.getMessage());
        IllegalArgumentException b = assertThrows(IllegalArgumentException.class, () -> GrpoConfig.load(cfg, List.of("num_training_steps=99999999999")));
        assertTrue(b.getMessage().contains("num_training_steps"), b.getMessage());
    }

    // eos_token_id list elements and bos_token_id are coerced: ["x", null] -> [0, 0] stop tokens, "abc" -> -1
    @Test
    void tokenIdsOfConfigMustBeInts() throws Exception {
        String base = "{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":192,\"num_hidden_layers\":2,"
                + "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"vocab_size\":512";
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> LlamaConfig.fromJson(new ObjectMapper().readTree(base + ",\"eos_token_id\":[\"x\",null]}")));
        assertTrue(e.getMessage().startsWith("eos_token_id must be"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> LlamaConfig.fromJson(new ObjectMapper().readTree(base + ",\"eos_token_id\":[128001, 1.9]}")));
        assertTrue(e.getMessage().startsWith("eos_token_id must be"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> LlamaConfig.fromJson(new ObjectMapper().readTree(base + ",\"bos_token_id\":\"abc\"}")));
        assertTrue(e.getMessage().startsWith("bos_token_id must be"), e.getMessage());
        // what HF writes still reads: an int, a list of ints, a null bos
        LlamaConfig ok = LlamaConfig.fromJson(new ObjectMapper().readTree(base + ",\"bos_token_id\":null,\"eos_token_id\":[128001,128009]}"));
        assertEquals(-1, ok.bosTokenId());
        assertEquals(List.of(128001, 128009), ok.eosTokenIds());
    }

    // config.json of another model beside the weights (an 8B config over tiny weights): a shape mismatch named before
    // any memory is taken, not a memory shortfall for 8 billion parameters
    @Test
    void aConfigOfAnotherModelIsAShapeMismatchNotAMemoryShortfall(@TempDir Path tmp) throws IOException {
        Backend be = TestBackends.cpu();
        Path m = tmp.resolve("m");
        try (LlamaWeights w = LlamaWeights.init(be, LlamaConfig.tiny(512, 506, 507), 1)) {
            w.save(m, "F32", 1L << 30, null);
        }
        new ObjectMapper().writeValue(m.resolve("config.json").toFile(), LlamaConfig.llama31_8b().toJson("float32"));
        long live = be.liveBytes();
        IOException e = assertThrows(IOException.class, () -> LlamaWeights.load(be, m));
        assertTrue(e.getMessage().contains("but config.json implies"), e.getMessage());
        assertEquals(live, be.liveBytes(), "nothing allocated");
    }
}
