package org.grpo4j.internal.data;

import org.grpo4j.reward.RlvrRow;
import static org.junit.jupiter.api.Assertions.*;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.grpo4j.internal.tokenizer.ChatTemplate;
import org.grpo4j.internal.tokenizer.Tokenizer;
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
        // the answers under another name: refused, not read as null ground truths (every reward 0)
        Path answers = tmp.resolve("answers.parquet");
        try (var c = java.sql.DriverManager.getConnection("jdbc:duckdb:"); var st = c.createStatement()) {
            st.execute("COPY (SELECT [{'role': 'user', 'content': 'x'}] AS messages, 'gsm8k' AS dataset, '1' AS answer) TO '" + answers
                    + "' (FORMAT parquet)");
        }
        e = assertThrows(IOException.class, () -> DatasetReader.read(answers));
        assertTrue(e.getMessage().contains("answers.parquet") && e.getMessage().contains("column \"ground_truth\" is missing"), e.getMessage());
        // a file named .parquet that is not one: DuckDB's reason, not its first line's "unsuccessful or closed pending query result"
        Path notParquet = tmp.resolve("rows.parquet");
        Files.writeString(notParquet, "{\"messages\": []}\n");
        e = assertThrows(IOException.class, () -> DatasetReader.read(notParquet));
        assertTrue(e.getMessage().startsWith(notParquet + ": cannot read as Parquet: ") && e.getMessage().contains("magic bytes"), e.getMessage());
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
                {good + "\n{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"dataset\":\"gsm8k\",\"answer\":\"1\"}\n", ":2",
                        "field \"ground_truth\" is missing"},
                {"[1,2]\n", ":1", "expected a JSON object"}};
        int k = 0;
        for (Object[] c : cases) {
            Path f = tmp.resolve("case" + k++ + ".jsonl");
            Files.writeString(f, (String) c[0]);
            IOException e = assertThrows(IOException.class, () -> DatasetReader.read(f));
            assertTrue(e.getMessage().startsWith(f + (String) c[1]) && e.getMessage().contains((String) c[2]), e.getMessage());
        }
        // a Latin-1 byte on line 8 (past the first read-ahead of a decoder): named at its line, not at line 1
        Path latin = tmp.resolve("latin.jsonl");
        byte[] head = (good + "\r\n").repeat(7).getBytes(java.nio.charset.StandardCharsets.UTF_8);
        byte[] bad = good.replace("hi", "h\u00e4").getBytes(java.nio.charset.StandardCharsets.ISO_8859_1);
        Files.write(latin, java.nio.ByteBuffer.allocate(head.length + bad.length).put(head).put(bad).array());
        IOException u = assertThrows(IOException.class, () -> DatasetReader.read(latin));
        assertEquals(latin + ":8: not valid UTF-8", u.getMessage());
        Files.write(latin, head); // the same lines without it (CRLF endings): 7 rows
        assertEquals(7, DatasetReader.read(latin).size());
        Path f = tmp.resolve("gt.jsonl");
        Files.writeString(f, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"dataset\":\"gsm8k\",\"ground_truth\":[1,2]}\n"
                + "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"assistant\",\"content\":\"y\"}],\"dataset\":\"x\",\"ground_truth\":null}\n");
        List<RlvrRow> rows = DatasetReader.read(f);
        assertEquals("[1,2]", rows.get(0).groundTruth());
        assertNull(rows.get(1).groundTruth());
        assertEquals(1, rows.get(1).promptMessages().size(), "prompt = messages[:-1] when there are several");
    }

    /** A hub cache's dataset resolves to the snapshot refs/main names (snapshot names are commits: their order is no age). */
    @Test
    void aCachedHubDatasetIsItsMainRevision(@TempDir Path tmp) throws IOException {
        Path repo = tmp.resolve("datasets--allenai--X");
        Files.createDirectories(repo.resolve("snapshots/aaaa1111"));
        assertEquals(repo.resolve("snapshots/aaaa1111"), DatasetMixer.cachedSnapshot("allenai/X", repo), "one snapshot, no ref");
        Files.createDirectories(repo.resolve("snapshots/ffff0000"));
        IllegalArgumentException several = assertThrows(IllegalArgumentException.class, () -> DatasetMixer.cachedSnapshot("allenai/X", repo));
        assertTrue(several.getMessage().contains("2 snapshots (aaaa1111, ffff0000") && several.getMessage().contains("no refs/main"),
                several.getMessage());
        Files.createDirectories(repo.resolve("refs"));
        Files.writeString(repo.resolve("refs/main"), "aaaa1111");
        assertEquals(repo.resolve("snapshots/aaaa1111"), DatasetMixer.cachedSnapshot("allenai/X", repo));
        Files.writeString(repo.resolve("refs/main"), "bbbb2222\n");
        java.nio.file.NoSuchFileException gone = assertThrows(java.nio.file.NoSuchFileException.class,
                () -> DatasetMixer.cachedSnapshot("allenai/X", repo));
        assertTrue(gone.getMessage().contains("names revision \"bbbb2222\", which is not among the cached snapshots"), gone.getMessage());
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
        assertThrows(IllegalArgumentException.class, () -> DatasetMixer.load(List.of(MIXED.toString(), "29"), null));
        java.nio.file.NoSuchFileException nf = assertThrows(java.nio.file.NoSuchFileException.class,
                () -> DatasetMixer.load(List.of("allenai/Not-A-Local-Dataset", "1.0"), tmp));
        assertTrue(nf.getMessage().contains("never downloads"), nf.getMessage());
    }

    /**
     * The reference's rule (dataset_transformation.py 879-901): '.' -> float, else int; then > 1.0 -> that many rows,
     * else that fraction of the rows. Examples from the reference's own commands: "1.0" (Tulu 3.1 train list),
     * "16" (its eval list), "100" (docs/tulu3.md SFT/DPO debug lists); and from issue 20: "1" = all rows, "2.0" = 2 rows.
     */
    @Test
    void mixerAmountsFollowTheReference() throws IOException {
        int all = DatasetReader.read(ARITH).size();
        String[] amounts = {"1.0", "16", "100", "1", "2.0", "0.5", "2.5", "16.0", ".25", "1.5e2"};
        for (String a : amounts) {
            // Python: float(a) if "." in a else int(a); then int(v) if v > 1.0 else int(v * len(dataset))
            double v = a.contains(".") ? Double.parseDouble(a) : Integer.parseInt(a);
            int expected = v > 1.0 ? (int) v : (int) (v * all);
            assertEquals(expected, DatasetMixer.load(List.of(ARITH.toString(), a), null).size(), "amount " + a);
        }
        assertEquals(all, DatasetMixer.load(List.of(ARITH.toString(), "1"), null).size(), "\"1\" is an int, not > 1.0: the fraction 1 = all rows");
        assertEquals(2, DatasetMixer.load(List.of(ARITH.toString(), "2.0"), null).size(), "\"2.0\" is a float > 1.0: a row count");
        assertEquals(DatasetReader.read(ARITH).subList(0, 2).get(1).messages(), DatasetMixer.load(List.of(ARITH.toString(), "2.0"), null).get(1).messages());
        // the command line: --set dataset_mixer_list='["data/tiny-arith.jsonl","1"]' on the demo config
        var cfg = org.grpo4j.train.GrpoConfig.load(Path.of("examples/tiny-arith.json"), List.of("dataset_mixer_list=[\"data/tiny-arith.jsonl\",\"1\"]"));
        assertEquals(all, DatasetMixer.load(cfg.datasetMixerList, cfg.baseDir).size());
        // what Python would crash on or silently turn into an empty dataset is one clear error here
        for (String bad : new String[] {"1e3", "0", "0.0", "-1", "all", "1_000", "1.0f"}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> DatasetMixer.parse(List.of("ds", bad)), bad);
            assertTrue(e.getMessage().contains("\"" + bad + "\"") && e.getMessage().contains("ds"), e.getMessage());
        }
        IllegalArgumentException empty = assertThrows(IllegalArgumentException.class, () -> DatasetMixer.parse(List.of("ds", "")));
        assertEquals("dataset_mixer_list[1] is empty (expected an amount)", empty.getMessage());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> DatasetMixer.load(List.of(ARITH.toString(), String.valueOf(all + 1)), null));
        assertTrue(e.getMessage().contains("asks for " + (all + 1)), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> org.grpo4j.train.GrpoConfig.load(Path.of("examples/tiny-arith.json"), List.of("dataset_mixer_list=[\"data/tiny-arith.jsonl\",\"1e3\"]")));
        assertTrue(e.getMessage().startsWith("--set dataset_mixer_list=[\"data/tiny-arith.jsonl\",\"1e3\"]: dataset_mixer_list: amount for"
                + " data/tiny-arith.jsonl"), e.getMessage());
    }

    @Test
    void splitsSelectFilesOfADirectory(@TempDir Path tmp) throws IOException {
        String row = "{\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}],\"ground_truth\":\"1\",\"dataset\":\"gsm8k\"}\n";
        Files.createDirectories(tmp.resolve("data/train"));
        Files.writeString(tmp.resolve("train-00000-of-00001.jsonl"), row.formatted("a"));
        Files.writeString(tmp.resolve("test-00000-of-00001.jsonl"), row.formatted("t"));
        Files.writeString(tmp.resolve("data/train/part.jsonl"), row.formatted("b"));
        Files.writeString(tmp.resolve("data/validation.jsonl"), row.formatted("v"));
        Files.writeString(tmp.resolve("trainer.jsonl"), row.formatted("not a train file"));
        List<RlvrRow> train = DatasetMixer.load(List.of(tmp.toString(), "1.0"), List.of("train"), null);
        assertEquals(List.of("b", "a"), train.stream().map(r -> r.messages().get(0).content()).toList());
        assertEquals(1, DatasetMixer.load(List.of(tmp.toString(), "1.0"), List.of("validation"), null).size());
        // no split: a directory of train and test files is refused (its test rows would be trained on); one split's
        // directory, or a directory of other files, is read whole
        IllegalArgumentException two = assertThrows(IllegalArgumentException.class, () -> DatasetMixer.load(List.of(tmp.toString(), "1.0"), List.of(), null));
        assertTrue(two.getMessage().contains("holds the splits train, test, validation; name the one to read"), two.getMessage());
        assertThrows(IllegalArgumentException.class, () -> DatasetMixer.load(List.of(tmp.resolve("data").toString(), "1.0"), List.of(), null),
                "data/: train/part.jsonl and validation.jsonl");
        assertEquals(1, DatasetMixer.load(List.of(tmp.resolve("data/train").toString(), "1.0"), List.of(), null).size());
        Files.createDirectories(tmp.resolve("other"));
        Files.writeString(tmp.resolve("other/a.jsonl"), row.formatted("a"));
        Files.writeString(tmp.resolve("other/b.jsonl"), row.formatted("b"));
        assertEquals(2, DatasetMixer.load(List.of(tmp.resolve("other").toString(), "1.0"), List.of(), null).size());
        var nf = assertThrows(java.nio.file.NoSuchFileException.class, () -> DatasetMixer.load(List.of(tmp.toString(), "1.0"), List.of("dev"), null));
        assertTrue(nf.getMessage().contains("split \"dev\""), nf.getMessage());
        assertEquals(1, DatasetMixer.load(List.of(tmp.resolve("test-00000-of-00001.jsonl").toString(), "1.0"), List.of("train"), null).size(),
                "a single file is read whole");
        assertThrows(IllegalArgumentException.class, () -> DatasetMixer.load(List.of(tmp.toString(), "1.0", tmp.toString(), "1"), List.of("train", "test", "x"), null));
    }

    /** A JSONL file that starts with a UTF-8 byte order mark (Windows editors write one) reads as without it. */
    @Test
    void aByteOrderMarkIsSkipped(@org.junit.jupiter.api.io.TempDir Path tmp) throws IOException {
        Path plain = Path.of("examples/data/tiny-arith.jsonl"), bom = tmp.resolve("bom.jsonl");
        byte[] body = Files.readAllBytes(plain), with = new byte[body.length + 3];
        with[0] = (byte) 0xEF;
        with[1] = (byte) 0xBB;
        with[2] = (byte) 0xBF;
        System.arraycopy(body, 0, with, 3, body.length);
        Files.write(bom, with);
        List<RlvrRow> a = DatasetReader.readJsonl(plain), b = DatasetReader.readJsonl(bom);
        assertEquals(a.size(), b.size());
        for (int i = 0; i < a.size(); i++) assertEquals(a.get(i).messages(), b.get(i).messages());
    }

    /** A row built in code (the embedding API) with no messages is refused by name, not at its first promptMessages(). */
    @Test
    void aRowWithNoMessagesIsRefusedWhereItIsBuilt() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new RlvrRow(List.of(), "5", "gsm8k", null, null, "mine.jsonl:3"));
        assertEquals("mine.jsonl:3: an RLVR row needs at least one message (its prompt)", e.getMessage());
        org.grpo4j.ChatMessage q = new org.grpo4j.ChatMessage("user", "2 + 3?"), a = new org.grpo4j.ChatMessage("assistant", "5");
        // the last message is left out whatever its role (grpo-reference.md section 7), the only one kept
        assertEquals(List.of(q), new RlvrRow(List.of(q, a), "5", "gsm8k", null, null, null).promptMessages());
        assertEquals(List.of(q), new RlvrRow(List.of(q, q), "5", "gsm8k", null, null, null).promptMessages());
        assertEquals(List.of(q), new RlvrRow(List.of(q), "5", "gsm8k", null, null, null).promptMessages());
    }

    /** rlvr_filter_v1 (dataset_transformation.py 596-612): the prompt against max_prompt_token_length, the whole chat against max_token_length. */
    @Test
    void rowsWhoseWholeChatIsTooLongAreDropped() throws IOException {
        try (Tokenizer tok = Tokenizer.load(Path.of("examples/tiny-tokenizer"))) {
            ChatTemplate tulu = ChatTemplate.named("tulu", tok);
            String longText = "one two three four five six seven eight nine ten ".repeat(8);
            List<org.grpo4j.ChatMessage> shortQ = List.of(new org.grpo4j.ChatMessage("user", "What is 2 + 3?"));
            RlvrRow single = new RlvrRow(shortQ, "5", "gsm8k", null, null, "single");
            RlvrRow longAnswer = new RlvrRow(List.of(shortQ.get(0), new org.grpo4j.ChatMessage("assistant", longText)), "5", "gsm8k", null, null, "answer");
            RlvrRow longPrompt = new RlvrRow(List.of(new org.grpo4j.ChatMessage("user", longText)), "5", "gsm8k", null, null, "prompt");
            int promptOfAnswerRow = tok.encode(tulu.render(longAnswer.promptMessages(), true, tok)).length;
            int chatOfAnswerRow = tok.encode(tulu.render(longAnswer.messages(), false, tok)).length;
            int promptOfLongRow = tok.encode(tulu.render(longPrompt.promptMessages(), true, tok)).length;
            int limit = promptOfAnswerRow + 5;
            assertTrue(chatOfAnswerRow > limit && promptOfLongRow > limit, chatOfAnswerRow + " / " + promptOfLongRow + " vs " + limit);
            PromptDataset ds = new PromptDataset(List.of(single, longAnswer, longPrompt), tok, tulu, limit, limit);
            assertEquals(1, ds.size());
            assertEquals("single", ds.row(0).source());
            assertEquals(1, ds.droppedPrompt());
            assertEquals(1, ds.droppedChat(), "the row with a short prompt but a long assistant turn is dropped by max_token_length");
            PromptDataset promptOnly = new PromptDataset(List.of(single, longAnswer, longPrompt), tok, tulu, limit, chatOfAnswerRow);
            assertEquals(2, promptOnly.size(), "a chat of exactly max_token_length tokens is kept (<=)");
        }
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
