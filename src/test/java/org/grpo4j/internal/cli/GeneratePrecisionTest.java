package org.grpo4j.internal.cli;

import static org.junit.jupiter.api.Assertions.*;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.lang.reflect.Proxy;
import java.nio.file.Path;
import java.util.List;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.Tensor;
import org.grpo4j.internal.backend.TestBackends;
import org.grpo4j.internal.model.LlamaConfig;
import org.grpo4j.internal.model.LlamaModel;
import org.grpo4j.internal.model.LlamaWeights;
import org.grpo4j.internal.model.PackedBatch;
import org.grpo4j.internal.train.Precision;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code grpo4j generate --precision}: bf16 weights, activations and KV cache on the CPU backend (its bf16 twins of
 * every op) against fp32 on the tiny model, the option's checks, and the memory hint.
 */
class GeneratePrecisionTest {
    @TempDir static Path tmp;
    static Path model;
    static final ObjectMapper JSON = new ObjectMapper();

    @BeforeAll
    static void tinyModel() {
        model = tmp.resolve("tiny");
        CliTest.Run r = CliTest.run("init-model", "--preset", "tiny", "--out", model.toString(), "--seed", "0");
        assertEquals(0, r.code(), r.err());
    }

    static CliTest.Run generate(String... extra) {
        List<String> args = new java.util.ArrayList<>(List.of("generate", "--model", model.toString(), "--backend", "cpu", "--json"));
        args.addAll(List.of(extra));
        CliTest.Run r = CliTest.run(args.toArray(String[]::new));
        assertEquals(0, r.code(), r.err());
        return r;
    }

    static int[] ints(JsonNode n) { return JSON.convertValue(n, int[].class); }

    static float[] floats(JsonNode n) { return JSON.convertValue(n, float[].class); }

    /**
     * Greedy decoding in bf16 against fp32. The fp32 model's logits for the fp32 completion (one teacher-forced
     * forward) give each position's gap between its two largest logits; the bf16 run may pick another token only
     * where that gap is within its logit error.
     *
     * <p>The logit error. Every bf16 rounding is a relative error of at most u = 2^-9, uniform, so of RMS u / sqrt(3).
     * A token's hidden state is rounded about 21 times on its way to the LM head (PrecisionTest's 20 for two layers,
     * plus the load's rounding of these weights, which are not bf16-exact), independently, so it carries a relative
     * RMS error e = sqrt(21 / 3) u = 0.5%. A logit h . w_v then moves by dh . w_v + h . dw_v: two terms whose error
     * vectors have no preferred direction, each of RMS e |h| |w_v| / sqrt(D) (the component along w_v of a vector of
     * norm e |h| in D dimensions). So sigma = sqrt(2) e max|h| max|w_v| / sqrt(D) is a logit's RMS error at most (about
     * 1.5e-3 here, |h| ~ 8 after the final norm, |w_v| ~ 0.2). At 5 sigma a logit is within 5 sigma of fp32's: two
     * tokens can swap only where fp32's gap is at most 10 sigma, and a log-prob (the token's logit minus the
     * log-sum-exp, a probability-weighted mean of the logits) moves by at most 10 sigma. The worst-case bound
     * PrecisionTest uses (every rounding aligned, 2 x 21 u max|h| max|w_v| = 0.14) exceeds every gap of this random
     * model, so it would check nothing.
     */
    @Test
    void bf16GreedyCompletionsTrackFp32() throws Exception {
        for (String prompt : List.of("Tom has 2 pens.", "What is 3 + 4?")) {
            String[] args = {"--prompt", prompt, "--max-tokens", "16", "--temperature", "0", "--precision", "fp32"};
            CliTest.Run fp32 = generate(args);
            args[args.length - 1] = "bf16";
            CliTest.Run bf16 = generate(args), again = generate(args);
            assertEquals(bf16.out(), again.out(), "bf16 greedy decoding repeats exactly");
            assertTrue(bf16.err().contains("grpo4j generate: bf16, 16 tokens"), bf16.err());
            assertTrue(fp32.err().contains("grpo4j generate: fp32, 16 tokens"), fp32.err());
            assertTracksFp32(model, JSON.readTree(fp32.out()), JSON.readTree(bf16.out()), "\"" + prompt + "\"");
        }
    }

    /**
     * {@code bf16}'s greedy completion (generate --json) of {@code model} against {@code fp32}'s of the same prompt, as
     * {@link #bf16GreedyCompletionsTrackFp32} states: the same tokens up to a swap, which only a near-tie of fp32's
     * two largest logits may cause, and the shared prefix's log-probs within 10 sigma.
     */
    static void assertTracksFp32(Path model, JsonNode a, JsonNode b, String label) throws Exception {
        assertEquals(a.get("prompt_ids"), b.get("prompt_ids"));
        int[] prompt32 = ints(a.get("prompt_ids")), t32 = ints(a.get("completions").get(0).get("ids")), t16 = ints(b.get("completions").get(0).get("ids"));
        float[] lp32 = floats(a.get("completions").get(0).get("logprobs")), lp16 = floats(b.get("completions").get(0).get("logprobs"));
        assertEquals(t16.length, lp16.length);
        for (float lp : lp16) assertTrue(Float.isFinite(lp) && lp <= 0, "a log-probability: " + lp);

        double[] gaps = new double[t32.length];
        double sigma;
        Backend be = TestBackends.cpu();
        try (LlamaWeights w = LlamaWeights.load(be, model)) {
            LlamaConfig c = w.config();
            int d = c.hiddenSize();
            int[] seq = new int[prompt32.length + t32.length];
            System.arraycopy(prompt32, 0, seq, 0, prompt32.length);
            System.arraycopy(t32, 0, seq, prompt32.length, t32.length);
            try (PackedBatch pb = PackedBatch.of(be, List.of(seq), c.vocabSize()); LlamaModel.Activations act = new LlamaModel(w).forwardNoGrad(pb)) {
                float[] h = act.hidden().toFloats(), lm = w.get("lm_head.weight").toFloats();
                double maxH = 0, maxW = 0;
                for (int t = 0; t < seq.length; t++) maxH = Math.max(maxH, norm(h, t * d, d));
                for (int v = 0; v < c.vocabSize(); v++) maxW = Math.max(maxW, norm(lm, v * d, d));
                sigma = Math.sqrt(2) * Math.sqrt(21 / 3.0) * Math.pow(2, -9) * maxH * maxW / Math.sqrt(d);
                for (int i = 0; i < t32.length; i++) { // row prompt + i - 1 predicts completion token i
                    int row = prompt32.length - 1 + i;
                    double first = Double.NEGATIVE_INFINITY, second = Double.NEGATIVE_INFINITY;
                    for (int v = 0; v < c.vocabSize(); v++) {
                        double z = 0;
                        for (int k = 0; k < d; k++) z += (double) h[row * d + k] * lm[v * d + k];
                        if (z > first) {
                            second = first;
                            first = z;
                        } else if (z > second) second = z;
                    }
                    gaps[i] = first - second;
                }
            }
        }
        // the same tokens up to the first swap, which only a near-tie may cause; the log-probs of the shared prefix
        // within 10 sigma
        double tol = 10 * sigma, worst = 0;
        int same = 0, clear = 0, both = Math.min(t32.length, t16.length);
        while (same < both && t32[same] == t16[same]) {
            if (gaps[same] > tol) clear++;
            worst = Math.max(worst, Math.abs(lp32[same] - lp16[same]));
            same++;
        }
        System.out.printf("%s: %d of %d greedy tokens the same in bf16 (%d with a clear fp32 gap over %.4f); worst log-prob difference %.2e (tolerance %.2e)%n",
                label, same, t32.length, clear, tol, worst, tol);
        if (same < both)
            assertTrue(gaps[same] <= tol, label + ": bf16 picks token " + t16[same] + " at position " + same + " where fp32 picks " + t32[same]
                    + " by a gap of " + gaps[same] + " > " + tol);
        // (a swap at an early near-tie, which the check above allows, leaves few positions to count: the swap's own gap
        // is then what is checked; a device whose last bits differ from the emulator's may move it, 2026-12-03 review)
        if (same == both || same >= 8)
            assertTrue(clear >= 4, label + ": at least 4 positions whose fp32 gap exceeds the bf16 error (else this checks nothing): " + clear);
        assertTrue(worst <= tol, label + ": log-prob difference " + worst + " > " + tol);
        assertTrue(worst > 0, label + ": bf16 log-probs equal fp32's bit for bit: the bf16 run did not run in bf16");
    }

    static double norm(float[] x, int off, int n) {
        double s = 0;
        for (int i = 0; i < n; i++) s += (double) x[off + i] * x[off + i];
        return Math.sqrt(s);
    }

    /**
     * Sampling in bf16 through the whole KV path: 8 samples share the prompt's blocks (copy-on-write of the partial
     * one), and a pool too small for every completion preempts and recomputes under on_demand; worst_case never does.
     * The completions are the same either way, bit for bit on the CPU, as in fp32 (CliTest).
     */
    @Test
    void bf16SamplingOnASmallKvPoolGivesTheSameCompletionsWhateverTheAdmission() throws Exception {
        CliTest.Run onDemand = generate("--prompt", "Tom has 2 pens.", "-n", "8", "--max-tokens", "60", "--seed", "3", "--kv-blocks", "12", "--precision", "bf16");
        CliTest.Run worstCase = generate("--prompt", "Tom has 2 pens.", "-n", "8", "--max-tokens", "60", "--seed", "3", "--kv-blocks", "12", "--precision", "bf16",
                "--kv-admission", "worst_case");
        assertTrue(onDemand.err().contains("preemptions"), "the pool is small enough to preempt: " + onDemand.err());
        assertFalse(worstCase.err().contains("preemptions"), worstCase.err());
        assertEquals(worstCase.out(), onDemand.out());
        JsonNode cs = JSON.readTree(onDemand.out()).get("completions");
        assertEquals(8, cs.size());
        java.util.Set<String> distinct = new java.util.HashSet<>();
        for (JsonNode c : cs) {
            int[] ids = ints(c.get("ids"));
            float[] lps = floats(c.get("logprobs"));
            assertTrue(ids.length >= 1 && ids.length <= 60, c.toString());
            assertEquals(ids.length, lps.length);
            for (float lp : lps) assertTrue(Float.isFinite(lp) && lp <= 0, "a log-probability: " + lp);
            distinct.add(java.util.Arrays.toString(ids));
        }
        assertTrue(distinct.size() > 1, "8 samples at temperature 1 are not all the same");
    }

    @Test
    void autoIsFp32OnTheCpu() {
        String[] args = {"--prompt", "Tom has 2 pens.", "-n", "2", "--max-tokens", "6", "--seed", "4"};
        CliTest.Run auto = generate(args);
        List<String> fp32 = new java.util.ArrayList<>(List.of(args));
        fp32.addAll(List.of("--precision", "fp32"));
        assertEquals(generate(fp32.toArray(String[]::new)).out(), auto.out());
        assertTrue(auto.err().contains("grpo4j generate: fp32,"), auto.err());
    }

    @Test
    void anUnknownPrecisionIsRefusedNamingTheValidOnes() {
        for (String bad : List.of("fp16", "BF16", "half")) {
            CliTest.Run r = CliTest.run("generate", "--model", model.toString(), "--backend", "cpu", "--prompt", "x", "--precision", bad);
            assertEquals(2, r.code(), r.err());
            assertEquals("grpo4j generate: --precision must be auto, fp32 or bf16, got " + bad, r.err().lines().findFirst().orElse(""), r.err());
            assertFalse(r.err().contains("Exception"), r.err());
            assertEquals("", r.out());
        }
    }

    /** --kv-blocks must be >= 1: when the weights leave no room for one block, the hint says so instead of "at most --kv-blocks 0". */
    @Test
    void theMemoryHintNeverOffersZeroBlocks() {
        long block = 4096, weights = 1 << 20;
        assertEquals("at most --kv-blocks 3 fits", GenerateCommand.kvBlocksHint(weights + 3 * block + 5, weights, block, DType.FP32, true));
        for (long free : new long[] {0, weights - 1, weights, weights + block - 1}) {
            String cpu32 = GenerateCommand.kvBlocksHint(free, weights, block, DType.FP32, true);
            assertEquals("the weights leave no room for one KV block (16 tokens, 4.0 KiB); --precision bf16 halves the weights and the KV cache;"
                    + " raise -Xmx", cpu32);
            String gpu16 = GenerateCommand.kvBlocksHint(free, weights, block, DType.BF16, false);
            assertEquals("the weights leave no room for one KV block (16 tokens, 4.0 KiB); use a GPU with more free memory", gpu16);
            assertFalse(gpu16.contains("-Xmx"), gpu16);
        }
    }

    /** A backend without a bf16 op that generation calls is refused before the weights load, naming the op and --precision fp32. */
    @Test
    void bf16OnABackendWithoutABf16OpIsRefusedNamingIt() {
        Backend cpu = TestBackends.cpu();
        Backend noBf16Matmul = (Backend) Proxy.newProxyInstance(Backend.class.getClassLoader(), new Class<?>[] {Backend.class}, (p, m, args) -> {
            if (m.getName().equals("matmul") && ((Tensor) args[1]).dtype() == DType.BF16)
                throw new UnsupportedOperationException("matmul (bf16) is not implemented on test yet");
            if (m.getName().equals("name")) return "test";
            try {
                return m.invoke(cpu, args);
            } catch (java.lang.reflect.InvocationTargetException e) {
                throw e.getCause();
            }
        });
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Precision.requireBf16Generation(noBf16Matmul, "--precision bf16", "use --precision fp32"));
        assertEquals("--precision bf16: test lacks a bf16 op (matmul (bf16) is not implemented on test yet); use --precision fp32", e.getMessage());
        Precision.requireBf16Generation(cpu, "--precision bf16", "use --precision fp32"); // the CPU's bf16 twins run every op
    }
}
