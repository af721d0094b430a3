package usage;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.grpo4j.Backend;
import org.grpo4j.ChatMessage;
import org.grpo4j.Completion;
import org.grpo4j.Model;
import org.grpo4j.Sampling;
import org.grpo4j.train.GrpoTrainer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Generation through the public API from a checkpoint the public API trained. */
class ModelUsageTest {
    @TempDir static Path tmp;
    static Backend backend;
    static Model model;
    static final List<Path> checkpoints = new ArrayList<>();

    @BeforeAll
    static void trainAndLoad() throws Exception {
        try (GrpoTrainer t = GrpoTrainer.builder(ApiExampleTest.tiny(1)).outputDir(tmp.resolve("run")).log(null).build()) {
            t.run(new GrpoTrainer.Listener() {
                @Override
                public void onCheckpoint(int step, Path dir) { checkpoints.add(dir); }
            });
        }
        backend = Backend.open("cpu");
        model = Model.load(checkpoints.get(checkpoints.size() - 1).resolve("model"), backend);
    }

    @AfterAll
    static void close() {
        if (backend != null) backend.close();
    }

    @Test
    void checkpointsAreModelDirectories() {
        assertEquals(List.of(tmp.resolve("run/checkpoints/step_0"), tmp.resolve("run/checkpoints/step_1")), checkpoints);
        assertTrue(Files.isRegularFile(checkpoints.get(1).resolve("model/tokenizer.json")), "the tokenizer travels with the model");
        assertEquals("cpu", backend.name());
        assertFalse(backend.isCuda());
        assertTrue(model.parameters() > 100_000, "the tiny preset has about 164k parameters: " + model.parameters());
    }

    @Test
    void generateRawPrompts() {
        Sampling s = Sampling.defaults().samples(3).maxTokens(6).seed(7);
        List<List<Completion>> out = model.generate(List.of("3 + 4 =", "Mia has 2 pens"), s);
        assertEquals(2, out.size());
        for (List<Completion> group : out) {
            assertEquals(3, group.size());
            for (Completion c : group) {
                assertTrue(c.length() >= 1 && c.length() <= 6, c.toString());
                assertEquals(c.tokenIds().length, c.logprobs().length);
                double sum = 0;
                for (float lp : c.logprobs()) {
                    assertTrue(Float.isFinite(lp) && lp <= 0, "a log-probability: " + lp);
                    sum += lp;
                }
                assertEquals(sum, c.sumLogprob(), 1e-9);
                assertEquals(model.decode(c.tokenIds()), c.text());
                if (c.finishReason() == Completion.FinishReason.LENGTH) assertEquals(6, c.length());
            }
        }
        // sample j of prompt i draws from stream (seed, i, j): the first prompt alone gets the same tokens
        List<List<Completion>> again = model.generate(List.of("3 + 4 ="), s);
        for (int j = 0; j < 3; j++) assertArrayEquals(out.get(0).get(j).tokenIds(), again.get(0).get(j).tokenIds());
        assertFalse(Arrays.equals(out.get(0).get(0).tokenIds(), out.get(0).get(1).tokenIds()) && Arrays.equals(out.get(0).get(1).tokenIds(), out.get(0).get(2).tokenIds()),
                "three samples at temperature 1 are not all the same");
        int[] copy = out.get(0).get(0).tokenIds();
        copy[0] = -5;
        assertNotEquals(-5, out.get(0).get(0).tokenIds()[0], "completions are immutable");
    }

    @Test
    void greedyIsDeterministic() {
        List<Completion> g = model.generate(List.of("5 + 1 ="), Sampling.defaults().samples(3).temperature(0).maxTokens(5)).get(0);
        assertArrayEquals(g.get(0).tokenIds(), g.get(1).tokenIds());
        assertArrayEquals(g.get(0).tokenIds(), g.get(2).tokenIds());
    }

    @Test
    void chatsRenderWithTheModelsTemplate() {
        List<ChatMessage> chat = List.of(new ChatMessage("user", "Zoe has 5 pens and gets 1 more. How many pens now?"));
        String prompt = model.renderChat(chat);
        assertEquals("<|user|>\nZoe has 5 pens and gets 1 more. How many pens now?\n<|assistant|>\n", prompt, "the tokenizer's Tulu template");
        Sampling s = Sampling.defaults().samples(2).maxTokens(8).seed(3);
        List<Completion> viaChat = model.generateChats(List.of(chat), s).get(0);
        List<Completion> viaText = model.generate(List.of(prompt), s).get(0);
        for (int j = 0; j < 2; j++) assertArrayEquals(viaText.get(j).tokenIds(), viaChat.get(j).tokenIds());
    }

    @Test
    void stopStringsEndACompletion() {
        Sampling greedy = Sampling.defaults().temperature(0).maxTokens(8);
        int[] full = model.generate(List.of("2 + 2 ="), greedy).get(0).get(0).tokenIds();
        int k = 1;
        while (k < full.length && model.decode(Arrays.copyOf(full, k)).isEmpty()) k++;
        assertTrue(k < full.length, "the greedy completion has a non-empty prefix shorter than itself: " + Arrays.toString(full));
        String stop = model.decode(Arrays.copyOf(full, k));
        Completion c = model.generate(List.of("2 + 2 ="), greedy.stopStrings(List.of(stop))).get(0).get(0);
        assertEquals(Completion.FinishReason.STOP_STRING, c.finishReason());
        assertArrayEquals(Arrays.copyOf(full, c.length()), c.tokenIds(), "the same greedy tokens up to the stop");
        assertTrue(c.length() <= k && c.text().contains(stop), c.toString());
    }

    /**
     * A sampling per prompt: each prompt gets its own sample count, length limit, temperature and seed in one call;
     * equal samplings give the one-sampling call's completions; a prompt's completions depend on the prompts before it
     * only through their sample counts (their random streams come first).
     */
    @Test
    void eachPromptWithItsOwnSampling() {
        List<String> prompts = List.of("3 + 4 =", "Mia has 2 pens", "9 - 5 =");
        Sampling hot = Sampling.defaults().samples(2).maxTokens(8).temperature(1.5).seed(3);
        Sampling greedy = Sampling.defaults().samples(3).maxTokens(4).temperature(0);
        Sampling nucleus = Sampling.defaults().samples(2).maxTokens(6).topP(0.5).topK(4).seed(11);
        List<List<Completion>> out = model.generate(prompts, List.of(hot, greedy, nucleus));
        int[] samples = {2, 3, 2}, max = {8, 4, 6};
        for (int i = 0; i < 3; i++) {
            assertEquals(samples[i], out.get(i).size(), "prompt " + i);
            for (Completion c : out.get(i)) assertTrue(c.tokenIds().length >= 1 && c.tokenIds().length <= max[i], "prompt " + i + ": " + c);
        }
        for (Completion c : out.get(1)) assertArrayEquals(out.get(1).get(0).tokenIds(), c.tokenIds(), "greedy samples are alike");
        // each prompt alone, or with other settings before it (same sample counts), gives the same completions
        assertEquals(out.get(0), model.generate(prompts.subList(0, 1), hot).get(0));
        Sampling otherHot = hot.temperature(0.3).maxTokens(2).seed(99);
        assertEquals(out.subList(1, 3), model.generate(prompts, List.of(otherHot, greedy, nucleus)).subList(1, 3));
        // equal samplings: the one-sampling call
        assertEquals(model.generate(prompts, nucleus), model.generate(prompts, List.of(nucleus, nucleus, nucleus)));
        assertEquals(model.generateChats(List.of(List.of(new ChatMessage("user", "2 + 2 ="))), greedy),
                model.generateChats(List.of(List.of(new ChatMessage("user", "2 + 2 ="))), List.of(greedy)));
    }

    @Test
    void tokenizerRoundTrip() {
        String text = "Mia has 3 pens and gets 4 more. 3 + 4 = 7";
        assertEquals(text, model.decode(model.encode(text)));
        assertEquals(List.of(), model.generate(List.of(), Sampling.defaults()));
    }

    @Test
    void requestsBeyondTheContextAreRefused() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> model.generate(List.of("1 + 1 ="), Sampling.defaults().maxTokens(model.maxPositions())));
        assertTrue(e.getMessage().startsWith("prompts[0] (") && e.getMessage().contains("exceeds the model's context of " + model.maxPositions()), e.getMessage());
    }
}
