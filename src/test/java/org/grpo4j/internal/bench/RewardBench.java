package org.grpo4j.internal.bench;

import java.util.ArrayList;
import java.util.List;
import org.grpo4j.reward.Compat;
import org.grpo4j.reward.Rewards;

/**
 * Verifier throughput (printed, not a test): typical GSM8K chain-of-thought, MATH boxed solutions and IFEval
 * responses (about 120-200 words each), one third each, scored in parallel on every core.
 * Run: tools/bench RewardBench
 */
public final class RewardBench {
    public static void main(String[] args) {
        String gsm = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                + "In May she sold 48 / 2 = 24 clips. Altogether she sold 48 + 24 = 72 clips in April and May. ".repeat(3)
                + "Let me double check the arithmetic: 48 plus 24 equals 72, and 1,000 minus 928 is also 72. So the answer is 72.";
        String math = "We need to add the fractions. The common denominator of 2 and 4 is 4, so $\\frac{1}{2} = \\frac{2}{4}$. "
                + "Adding, $\\frac{2}{4} + \\frac{1}{4} = \\frac{3}{4}$. We can verify numerically: $0.5 + 0.25 = 0.75$. ".repeat(3)
                + "Therefore the sum is $\\boxed{\\dfrac{3}{4}}$.";
        String[] ifResp = {
            "* First point about cooking at home\n* Second point about saving money\n* Third point about health",
            "<<Ode to the Sea>>\nThe sea is wide and the sea is deep, " + "the waves roll on while the sailors sleep. ".repeat(8),
            "dear neighbor, i wanted to thank you for the help with the garden last week. " + "it was very kind. ".repeat(10)
                    + "P.S. the tomatoes are ready",
            "A compiler translates source code into machine code in several phases: lexing, parsing, analysis, optimization and code generation. "
                    + "Each phase transforms a representation. " + "Is there anything else I can help with?"};
        String[] ifGt = {
            "{\"func_name\": \"verify_bullet_points\", \"N\": 3, \"quantifier\": null, \"end_phrase\": null, \"keyword_list\": null, \"word\": null}",
            "{\"func_name\": \"validate_title\", \"N\": null, \"quantifier\": null}",
            "{\"func_name\": \"verify_postscript\", \"postscript_marker\": \"P.S.\", \"N\": null}",
            "{\"func_name\": \"validate_end\", \"end_phrase\": \"Is there anything else I can help with?\", \"N\": null}"};
        List<Rewards.Item> items = new ArrayList<>();
        for (int i = 0; i < 30_000; i++) {
            switch (i % 3) {
                case 0 -> items.add(new Rewards.Item(gsm, i % 2 == 0 ? "72" : "73", "gsm8k", null));
                case 1 -> items.add(new Rewards.Item(math, i % 2 == 0 ? "\\frac{3}{4}" : "0.75", "MATH", null));
                default -> items.add(new Rewards.Item(ifResp[i % 4], ifGt[i % 4], "ifeval", null));
            }
        }
        int threads = Runtime.getRuntime().availableProcessors();
        for (Compat c : Compat.values()) {
            try (Rewards r = new Rewards(c, 10, 5, threads)) {
                r.scoreAll(items.subList(0, 3000)); // warm-up
                long t0 = System.nanoTime();
                List<Rewards.Result> res = r.scoreAll(items);
                double s = (System.nanoTime() - t0) / 1e9;
                long ok = res.stream().filter(x -> x.reward() > 0).count();
                System.out.printf("%s: %d responses in %.2f s = %.0f responses/s on %d threads (%d passed)%n", c, items.size(), s,
                        items.size() / s, threads, ok);
            }
        }
    }
}
