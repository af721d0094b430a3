package org.grpo4j.data;

import static org.junit.jupiter.api.Assertions.*;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.grpo4j.tokenizer.ChatTemplate;
import org.grpo4j.tokenizer.Tokenizer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class DatasetTest {
    static final Path MIXED = Path.of("examples/data/rlvr-mixed.jsonl");
    static final Path ARITH = Path.of("examples/data/tiny-arith.jsonl");

    @Test
    void bundledJsonlLoads() throws IOException {
        List<RlvrRow> rows = DatasetReader.read(MIXED);
        assertEquals(28, rows.size());
        Set<String> kinds = new HashSet<>();
        for (RlvrRow r : rows) kinds.add(r.dataset());
        assertEquals(Set.of("gsm8k", "MATH", "ifeval"), kinds);
        RlvrRow ifRow = rows.stream().filter(r -> r.dataset().equals("ifeval")).findFirst().orElseThrow();
        assertTrue(ifRow.groundTruth().contains("\"func_name\""));
        assertNotNull(ifRow.constraintType());
        assertTrue(rows.get(0).source().startsWith(MIXED + ":1"));
        assertEquals(3000, DatasetReader.read(ARITH).size());
    }

    @Test
    void parquetCopyReadsBackIdentically(@TempDir Path tmp) throws IOException {
        List<RlvrRow> rows = DatasetReader.read(MIXED);
        Path pq = tmp.resolve("train-00000-of-00001.parquet");
        DatasetReader.writeParquet(rows, pq);
        List<RlvrRow> back = DatasetReader.read(pq);
        assertEquals(rows.size(), back.size());
        for (int i = 0; i < rows.size(); i++) {
            RlvrRow a = rows.get(i), b = back.get(i);
            assertEquals(a.messages(), b.messages(), "row " + i);
            assertEquals(a.groundTruth(), b.groundTruth(), "row " + i);
            assertEquals(a.dataset(), b.dataset());
            assertEquals(a.constraintType(), b.constraintType());
            assertEquals(a.constraint(), b.constraint());
        }
        assertEquals(rows.size(), DatasetReader.read(tmp).size(), "a directory reads every data file in it");
        Files.writeString(tmp.resolve("bad.parquet"), "not parquet");
        IOException e = assertThrows(IOException.class, () -> DatasetReader.read(tmp.resolve("bad.parquet")));
        assertTrue(e.getMessage().contains("bad.parquet"), e.getMessage());
    }

    @Test
    void parquetWithoutMessagesColumnIsNamed(@TempDir Path tmp) throws Exception {
        Path pq = tmp.resolve("x.parquet");
        try (var c = java.sql.DriverManager.getConnection("jdbc:duckdb:"); var st = c.createStatement()) {
            st.execute("COPY (SELECT 'gsm8k' AS dataset, '1' AS ground_truth) TO '" + pq + "' (FORMAT parquet)");
        }
        IOException e = assertThrows(IOException.class, () -> DatasetReader.read(pq));
        assertTrue(e.getMessage().contains("x.parquet") && e.getMessage().contains("\"messages\""), e.getMessage());
    }

    @Test
    void badJsonlLinesNameFileAndLine(@TempDir Path tmp) throws IOException {
        String good = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"ground_truth\":\"1\",\"dataset\":\"gsm8k\"}";
        Object[][] cases = {
                {good + "\n\n{oops\n", ":3", "not valid JSON"},
                {good + "\n{\"messages\":[],\"dataset\":\"gsm8k\"}\n", ":2", "messages"},
                {"{\"messages\":[{\"role\":\"user\"}],\"dataset\":\"gsm8k\"}\n", ":1", "messages[0].content"},
                {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}\n", ":1", "\"dataset\" is missing"},
                {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"dataset\":3}\n", ":1", "must be a string"},
                {"[1,2]\n", ":1", "expected a JSON object"}};
        int k = 0;
        for (Object[] c : cases) {
            Path f = tmp.resolve("case" + k++ + ".jsonl");
            Files.writeString(f, (String) c[0]);
            IOException e = assertThrows(IOException.class, () -> DatasetReader.read(f));
            assertTrue(e.getMessage().startsWith(f + (String) c[1]) && e.getMessage().contains((String) c[2]), e.getMessage());
        }
        Path f = tmp.resolve("gt.jsonl");
        Files.writeString(f, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"dataset\":\"gsm8k\",\"ground_truth\":[1,2]}\n"
                + "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"assistant\",\"content\":\"y\"}],\"dataset\":\"x\",\"ground_truth\":null}\n");
        List<RlvrRow> rows = DatasetReader.read(f);
        assertEquals("[1,2]", rows.get(0).groundTruth());
        assertNull(rows.get(1).groundTruth());
        assertEquals(1, rows.get(1).promptMessages().size(), "prompt = messages[:-1] when there are several");
    }

    @Test
    void mixerFractionsAndCounts(@TempDir Path tmp) throws IOException {
        assertEquals(3000, DatasetMixer.load(List.of(ARITH.toString(), "1.0"), null).size());
        assertEquals(1500, DatasetMixer.load(List.of(ARITH.toString(), "0.5"), null).size());
        List<RlvrRow> mix = DatasetMixer.load(List.of(ARITH.toString(), "16", MIXED.toString(), "1.0"), null);
        assertEquals(16 + 28, mix.size());
        assertEquals(DatasetReader.read(ARITH).get(15).messages(), mix.get(15).messages(), "a count takes the first rows");
        assertThrows(IllegalArgumentException.class, () -> DatasetMixer.parse(List.of("a")));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> DatasetMixer.parse(List.of("a", "all")));
        assertTrue(e.getMessage().contains("\"all\""), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> DatasetMixer.parse(List.of("a", "1.5")));
        assertThrows(IllegalArgumentException.class, () -> DatasetMixer.load(List.of(MIXED.toString(), "29"), null));
        java.nio.file.NoSuchFileException nf = assertThrows(java.nio.file.NoSuchFileException.class,
                () -> DatasetMixer.load(List.of("allenai/Not-A-Local-Dataset", "1.0"), tmp));
        assertTrue(nf.getMessage().contains("never downloads"), nf.getMessage());
    }

    @Test
    void promptsAreTuluRenderedAndLongOnesDropped() throws IOException {
        try (Tokenizer tok = Tokenizer.load(Path.of("examples/tiny-tokenizer"))) {
            List<RlvrRow> rows = DatasetReader.read(MIXED);
            PromptDataset all = new PromptDataset(rows, tok, ChatTemplate.named("tulu", tok), 100_000);
            assertEquals(rows.size(), all.size());
            assertEquals(0, all.dropped());
            String text = tok.decode(all.prompt(0), false);
            assertEquals("<|user|>\n" + rows.get(0).messages().get(0).content() + "\n<|assistant|>\n", text);
            int limit = 40;
            long longer = rows.stream().filter(r -> tok.encode(ChatTemplate.named("tulu", tok).render(r.promptMessages(), true, tok)).length > limit).count();
            assertTrue(longer > 0 && longer < rows.size());
            PromptDataset cut = new PromptDataset(rows, tok, ChatTemplate.named("tulu", tok), limit);
            assertEquals(longer, cut.dropped());
            assertEquals(rows.size() - longer, cut.size());
        }
    }
}
