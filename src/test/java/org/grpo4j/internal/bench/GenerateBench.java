package org.grpo4j.internal.bench;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.Backends;
import org.grpo4j.internal.data.DatasetReader;
import org.grpo4j.reward.RlvrRow;
import org.grpo4j.internal.model.LlamaConfig;
import org.grpo4j.internal.model.LlamaModel;
import org.grpo4j.internal.model.LlamaWeights;
import org.grpo4j.internal.rollout.Generator;
import org.grpo4j.internal.rollout.SamplingParams;
import org.grpo4j.internal.tokenizer.ChatTemplate;
import org.grpo4j.internal.tokenizer.Tokenizer;

/**
 * Rollout benchmark (printed figures, not a test): the tiny model, 16 tiny-arith prompts x n = 16 samples at
 * temperature 1, 32 new tokens, no stop token (every sequence runs to max_tokens), 3 repetitions after a warm-up,
 * without and with decode graphs (CUDA graphs where the backend has them; the CPU runs both eagerly). "host ms/step"
 * is the time to issue a decode step (upload, kernel launches or one graph replay) before waiting for the device.
 * Run: tools/bench GenerateBench [backend]
 */
public final class GenerateBench {
    public static void main(String[] args) throws Exception {
        String backend = args.length > 0 ? args[0] : "auto";
        try (Backend be = Backends.choose(backend, org.grpo4j.internal.backend.Ops.ALL).backend(); Tokenizer tok = Tokenizer.load(Path.of("examples/tiny-tokenizer"))) {
            LlamaConfig cfg = LlamaConfig.tiny(tok.vocabSize(), tok.bosId(), tok.eosId());
            List<RlvrRow> rows = DatasetReader.read(Path.of("examples/data/tiny-arith.jsonl"));
            List<int[]> prompts = new ArrayList<>();
            ChatTemplate t = ChatTemplate.named("tulu", tok);
            for (int i = 0; i < 16; i++) prompts.add(tok.encode(t.render(rows.get(i).promptMessages(), true, tok)));
            try (LlamaWeights w = LlamaWeights.init(be, cfg, 1)) {
                LlamaModel m = new LlamaModel(w);
                SamplingParams p = new SamplingParams(16, 1f, 1f, 0, 32, Set.of(), 1);
                System.out.printf("backend %s, tiny model (%,d params), 16 prompts x 16 samples, 32 new tokens%n", be.description(), w.layout().totalElements());
                for (boolean graphs : new boolean[] {false, true}) {
                    Generator g = new Generator(m, new Generator.Config(16, 1024, 256, true, graphs));
                    g.generate(prompts, p); // warm-up (JIT, GEMM plans, graph capture)
                    for (int rep = 0; rep < 3; rep++) {
                        g.generate(prompts, p);
                        Generator.Stats s = g.lastStats();
                        System.out.printf("graphs %s, run %d: %d tokens in %.3f s = %.0f tokens/s; %d decode steps, host %.3f ms/step to issue "
                                        + "+ %.3f ms/step of bookkeeping (%d graph replays); prefill %d tokens; KV pool %d blocks x 16 (%.1f KiB): peak %d (%.0f%%), mean %.1f (%.0f%%)%n",
                                graphs ? "on" : "off", rep, s.generatedTokens(), s.seconds(), s.tokensPerSecond(), s.decodeSteps(),
                                s.hostMillisPerDecodeStep(), s.bookkeepingMillisPerDecodeStep(), s.graphReplays(), s.prefillTokens(), s.poolBlocks(),
                                s.poolBytes() / 1024.0, s.peakBlocksUsed(), 100 * s.peakUtilization(), s.meanBlocksUsed(), 100 * s.meanUtilization());
                    }
                }
            }
            bookkeepingAtTheRolloutsBatch(be);
        }
    }

    /**
     * The generator's host bookkeeping per decode step at the e2e rollout's batch (48 prompts of 256 tokens x 16
     * samples, 64 new tokens) on a one-layer model of hidden 16, so that the model's own time stays small: what the
     * host adds to each step beside issuing it (Generator.Stats.bookkeepingMillisPerDecodeStep).
     */
    static void bookkeepingAtTheRolloutsBatch(Backend be) {
        LlamaConfig c = new LlamaConfig(16, 32, 1, 2, 1, 8, 61, 1e-5, 10000, null, 1024, false, 0, List.of(60));
        try (LlamaWeights w = LlamaWeights.init(be, c, 3)) {
            LlamaModel m = new LlamaModel(w);
            java.util.SplittableRandom r = new java.util.SplittableRandom(1);
            List<int[]> prompts = new ArrayList<>();
            for (int i = 0; i < 48; i++) prompts.add(r.ints(256, 0, 59).toArray());
            SamplingParams p = new SamplingParams(16, 1f, 1f, 0, 64, Set.of(), 3);
            for (int rep = 0; rep < 3; rep++) {
                Generator g = new Generator(m, new Generator.Config(16, 48 * 16 + 768 * 5, 768, true, true));
                g.generate(prompts, p);
                Generator.Stats st = g.lastStats();
                System.out.printf("48 x 16 sequences, 64 new tokens, run %d: bookkeeping %.3f ms/step, issue %.3f ms/step (%d decode steps)%n", rep,
                        st.bookkeepingMillisPerDecodeStep(), st.hostMillisPerDecodeStep(), st.decodeSteps());
            }
        }
    }
}
