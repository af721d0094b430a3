package org.grpo4j.internal.train;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Path;
import java.util.List;
import org.grpo4j.ChatMessage;
import org.grpo4j.internal.data.PromptDataset;
import org.grpo4j.internal.tokenizer.ChatTemplate;
import org.grpo4j.internal.tokenizer.Tokenizer;
import org.grpo4j.reward.RlvrRow;
import org.junit.jupiter.api.Test;

/** What the start of a run warns of: data the run reads as the reference does, though a user may not expect it. */
class PreflightWarningsTest {
    /** A [system, user] row's prompt is the system turn alone (messages[:-1], as the reference): its question is dropped. */
    @Test
    void rowsWhoseLastTurnIsNotTheAnswerAreNamed() throws Exception {
        try (Tokenizer tok = Tokenizer.load(Path.of("examples/tiny-tokenizer"))) {
            ChatTemplate tulu = ChatTemplate.named("tulu", tok);
            ChatMessage sys = new ChatMessage("system", "You are helpful."), q = new ChatMessage("user", "What is 2 + 2?"),
                    a = new ChatMessage("assistant", "4");
            RlvrRow one = new RlvrRow(List.of(q), "4", "gsm8k", null, null, "d.jsonl:1");
            RlvrRow answered = new RlvrRow(List.of(sys, q, a), "4", "gsm8k", null, null, "d.jsonl:2");
            RlvrRow questionLast = new RlvrRow(List.of(sys, q), "4", "gsm8k", null, null, "d.jsonl:3");
            assertNull(Preflight.lastTurnNotAnswer(new PromptDataset(List.of(one, answered), tok, tulu, 1000)));
            String w = Preflight.lastTurnNotAnswer(new PromptDataset(List.of(one, questionLast, answered, questionLast), tok, tulu, 1000));
            assertNotNull(w);
            assertTrue(w.startsWith("2 training rows of several messages end with a turn other than assistant, first d.jsonl:3 (its last turn is user)"), w);
            assertFalse(tok.decode(tok.encode(tulu.render(questionLast.promptMessages(), true, tok)), false).contains("2 + 2"),
                    "the warning's claim: the question is not in the prompt");
        }
    }

    /**
     * The run's stop ids: with stop_token_ids unset, the tokenizer's EOS and the generation config's eos_token_id (vLLM
     * stops at each: Llama 3.x Instruct's generation_config.json lists 128001, 128008 and 128009); set, the EOS and
     * the list; an id past the vocabulary is refused by name.
     */
    @Test
    void stopTokenIdsComeFromTheGenerationConfigUnlessSet(@org.junit.jupiter.api.io.TempDir Path tmp) throws Exception {
        try (Tokenizer tok = Tokenizer.load(Path.of("examples/tiny-tokenizer"))) {
            int eos = tok.eosId(), other = tok.bosId(), third = 7;
            org.grpo4j.internal.model.LlamaConfig lc = org.grpo4j.internal.model.LlamaConfig.tiny(tok.vocabSize(), tok.bosId(), eos);
            org.grpo4j.train.GrpoConfig cfg = new org.grpo4j.train.GrpoConfig();
            cfg.modelNameOrPath = tmp.toString();
            assertEquals(List.of(eos), List.copyOf(Preflight.stopTokenIds(cfg, tmp, lc, tok)), "no generation_config.json: config.json's, the EOS");
            java.nio.file.Files.writeString(tmp.resolve("generation_config.json"), "{\"eos_token_id\": [" + eos + ", " + other + ", " + third + "]}");
            assertEquals(List.of(eos, other, third), List.copyOf(Preflight.stopTokenIds(cfg, tmp, lc, tok)));
            cfg.stopTokenIds = List.of();
            assertEquals(List.of(eos), List.copyOf(Preflight.stopTokenIds(cfg, tmp, lc, tok)), "[]: the EOS alone");
            cfg.stopTokenIds = List.of(third);
            assertEquals(List.of(eos, third), List.copyOf(Preflight.stopTokenIds(cfg, tmp, lc, tok)));
            cfg.stopTokenIds = List.of(tok.vocabSize() + 5);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Preflight.stopTokenIds(cfg, tmp, lc, tok));
            assertEquals("stop_token_ids: " + (tok.vocabSize() + 5) + " is not a token id of model_name_or_path " + tmp + " (vocab_size " + tok.vocabSize() + ")",
                    e.getMessage());
        }
    }

    /** A pad token that is the EOS: the reference would leave the EOS out of the loss; named. */
    @Test
    void aPadTokenThatIsTheEosIsNamed(@org.junit.jupiter.api.io.TempDir Path tmp) throws Exception {
        try (Tokenizer tok = Tokenizer.load(Path.of("examples/tiny-tokenizer"))) {
            assertNull(Preflight.padIsEos(tok), "the tiny tokenizer's <pad> is its own token");
        }
        java.nio.file.Files.copy(Path.of("examples/tiny-tokenizer/tokenizer.json"), tmp.resolve("tokenizer.json"));
        String cfg = java.nio.file.Files.readString(Path.of("examples/tiny-tokenizer/tokenizer_config.json"))
                .replace("\"pad_token\": \"<pad>\"", "\"pad_token\": \"<|end_of_text|>\"");
        assertTrue(cfg.contains("\"pad_token\": \"<|end_of_text|>\""), "the test's edit applied");
        java.nio.file.Files.writeString(tmp.resolve("tokenizer_config.json"), cfg);
        try (Tokenizer tok = Tokenizer.load(tmp)) {
            String w = Preflight.padIsEos(tok);
            assertNotNull(w);
            assertTrue(w.startsWith("the tokenizer's pad token is its EOS (<|end_of_text|>)"), w);
        }
    }
}
