package org.grpo4j.internal.bench;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.Backends;
import org.grpo4j.internal.data.DatasetReader;
import org.grpo4j.reward.RlvrRow;
import org.grpo4j.internal.model.LlamaModel;
import org.grpo4j.internal.model.LlamaWeights;
import org.grpo4j.reward.Rewards;
import org.grpo4j.internal.rollout.Completion;
import org.grpo4j.internal.rollout.Generator;
import org.grpo4j.internal.rollout.SamplingParams;
import org.grpo4j.internal.tokenizer.ChatTemplate;
import org.grpo4j.internal.tokenizer.Tokenizer;

/**
 * Accuracy of a model directory on the first 300 tiny-arith rows at the given temperatures (4 samples each), as used to
 * tune the demo: tools/bench AccuracyProbe runs/tiny-arith/checkpoints/step_0/model 0 1 2
 */
public final class AccuracyProbe {
    public static void main(String[] a) throws Exception {
        Path dir = Path.of(a[0]);
        try (Backend be = Backends.open("cpu"); Tokenizer tok = Tokenizer.load(dir); LlamaWeights w = LlamaWeights.load(be, dir); Rewards r = new Rewards()) {
            List<RlvrRow> rows = DatasetReader.read(Path.of("examples/data/tiny-arith.jsonl")).subList(0, 300);
            List<int[]> ps = new ArrayList<>();
            for (RlvrRow row : rows) ps.add(tok.encode(ChatTemplate.named("tulu", tok).render(row.promptMessages(), true, tok)));
            Generator g = new Generator(new LlamaModel(w), new Generator.Config(16, 4096, 512, true));
            for (int ti = 1; ti < a.length; ti++) {
                float t = Float.parseFloat(a[ti]);
                List<List<Completion>> cs = g.generate(ps, new SamplingParams(4, t, 1f, 0, 12, Set.of(tok.eosId()), 1));
                List<Rewards.Item> items = new ArrayList<>();
                for (int i = 0; i < rows.size(); i++) for (Completion c : cs.get(i)) items.add(new Rewards.Item(tok.decodeLenient(c.tokens(), true), rows.get(i).groundTruth(), "gsm8k", rows.get(i)));
                double ok = r.scoreAll(items).stream().mapToDouble(x -> x.reward() > 0 ? 1 : 0).average().orElse(0);
                System.out.printf("T=%.2f accuracy %.3f%n", t, ok);
            }
        }
    }
}
