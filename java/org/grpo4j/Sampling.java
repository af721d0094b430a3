package org.grpo4j;

import java.util.List;
import java.util.Objects;

/**
 * How {@link Model#generate} samples: completions per prompt, their length limit, temperature, nucleus (top-p) and
 * top-k filtering, the seed, and optional stop strings. Immutable: each {@code withX}-style method returns a copy.
 *
 * <pre>{@code
 * Sampling s = Sampling.defaults().samples(4).maxTokens(32).temperature(0.7).seed(42);
 * }</pre>
 *
 * <p>Generation always stops at the model's end-of-sequence tokens (kept as the completion's last token): the
 * tokenizer's EOS and its generation config's {@code eos_token_id} (generation_config.json, else config.json), as HF
 * {@code generate} and vLLM stop. Sample j of
 * prompt i draws from the random stream (seed, k + j), k being the samples of the prompts before it in the call: the
 * same call gives the same tokens, and a prompt's completions do not depend on the prompts after it (those before it
 * count only through their sample counts; docs/api.md).
 *
 * <p><b>Thread safety:</b> immutable, so thread-safe.
 */
public final class Sampling {
    private static final Sampling DEFAULTS = new Sampling(1, 64, 1.0, 1.0, 0, 0L, List.of());

    private final int samples, maxTokens, topK;
    private final double temperature, topP;
    private final long seed;
    private final List<String> stopStrings;

    private Sampling(int samples, int maxTokens, double temperature, double topP, int topK, long seed, List<String> stopStrings) {
        this.samples = samples;
        this.maxTokens = maxTokens;
        this.temperature = temperature;
        this.topP = topP;
        this.topK = topK;
        this.seed = seed;
        this.stopStrings = stopStrings;
    }

    /**
     * One completion of at most 64 tokens per prompt, temperature 1, no top-p or top-k filtering, seed 0, no stop
     * strings.
     *
     * @return the default settings
     */
    public static Sampling defaults() { return DEFAULTS; }

    /**
     * Completions per prompt.
     *
     * @param n at least 1
     * @return a copy with {@code n} samples per prompt
     * @throws IllegalArgumentException if {@code n} is below 1
     */
    public Sampling samples(int n) {
        if (n < 1) throw new IllegalArgumentException("samples must be >= 1, got " + n);
        return new Sampling(n, maxTokens, temperature, topP, topK, seed, stopStrings);
    }

    /**
     * The longest completion, in tokens.
     *
     * @param n at least 1
     * @return a copy with this limit
     * @throws IllegalArgumentException if {@code n} is below 1
     */
    public Sampling maxTokens(int n) {
        if (n < 1) throw new IllegalArgumentException("maxTokens must be >= 1, got " + n);
        return new Sampling(samples, n, temperature, topP, topK, seed, stopStrings);
    }

    /**
     * The softmax temperature; 0 samples greedily (the most likely token).
     *
     * @param t a finite number &gt;= 0
     * @return a copy with this temperature
     * @throws IllegalArgumentException if {@code t} is negative, NaN or infinite
     */
    public Sampling temperature(double t) {
        if (!(t >= 0) || !Double.isFinite(t)) throw new IllegalArgumentException("temperature must be a finite number >= 0, got " + t);
        // (sampling runs in float: 1e39 would be infinite, 1e-46 zero, which is greedy)
        if (Float.isInfinite((float) t) || (t > 0 && (float) t == 0))
            throw new IllegalArgumentException("temperature " + t + " is outside float's range (0, or " + Float.MIN_VALUE + " to " + Float.MAX_VALUE + ")");
        return new Sampling(samples, maxTokens, t, topP, topK, seed, stopStrings);
    }

    /**
     * Nucleus sampling: draw from the smallest set of most likely tokens whose probabilities sum to at least
     * {@code p}.
     *
     * @param p in (0, 1]; 1 turns it off
     * @return a copy with this top-p
     * @throws IllegalArgumentException if {@code p} is outside (0, 1]
     */
    public Sampling topP(double p) {
        if (!(p > 0 && p <= 1) || (float) p == 0) throw new IllegalArgumentException("topP must be in (0, 1] (as a float), got " + p);
        return new Sampling(samples, maxTokens, temperature, p, topK, seed, stopStrings);
    }

    /**
     * Draw from the {@code k} most likely tokens only.
     *
     * @param k at least 0; 0 turns it off
     * @return a copy with this top-k
     * @throws IllegalArgumentException if {@code k} is negative
     */
    public Sampling topK(int k) {
        if (k < 0) throw new IllegalArgumentException("topK must be >= 0 (0 = off), got " + k);
        return new Sampling(samples, maxTokens, temperature, topP, k, seed, stopStrings);
    }

    /**
     * The random seed.
     *
     * @param s any value
     * @return a copy with this seed
     */
    public Sampling seed(long s) { return new Sampling(samples, maxTokens, temperature, topP, topK, s, stopStrings); }

    /**
     * Stop strings (vLLM's {@code stop}): a completion ends as soon as its text as vLLM decodes it contains one of
     * them; every token generated so far is kept, including the one that completed the string. That text skips only
     * the tokenizer's bos, eos, pad, unk and additional special tokens and keeps other added tokens as their text
     * (Llama 3's {@code <|eot_id|>}, {@code <|start_header_id|>}), where {@link Completion#text} skips every special
     * token: a stop string can hold such a token, and one that the completion's text shows across a skipped token does
     * not match.
     *
     * @param strings non-empty strings; an empty list turns it off
     * @return a copy with these stop strings
     * @throws NullPointerException     if {@code strings} or one of its elements is null
     * @throws IllegalArgumentException if one of them is empty
     */
    public Sampling stopStrings(List<String> strings) {
        Objects.requireNonNull(strings, "strings");
        for (int i = 0; i < strings.size(); i++) {
            Objects.requireNonNull(strings.get(i), "strings[" + i + "]");
            if (strings.get(i).isEmpty()) throw new IllegalArgumentException("strings[" + i + "] is empty: stop strings must be non-empty");
        }
        return new Sampling(samples, maxTokens, temperature, topP, topK, seed, List.copyOf(strings));
    }

    /**
     * Completions per prompt.
     *
     * @return at least 1
     */
    public int samples() { return samples; }

    /**
     * The longest completion, in tokens.
     *
     * @return at least 1
     */
    public int maxTokens() { return maxTokens; }

    /**
     * The temperature.
     *
     * @return 0 for greedy
     */
    public double temperature() { return temperature; }

    /**
     * The top-p.
     *
     * @return 1 when off
     */
    public double topP() { return topP; }

    /**
     * The top-k.
     *
     * @return 0 when off
     */
    public int topK() { return topK; }

    /**
     * The seed.
     *
     * @return the seed
     */
    public long seed() { return seed; }

    /**
     * The stop strings.
     *
     * @return an unmodifiable list, empty when off
     */
    public List<String> stopStrings() { return stopStrings; }

    /** Every setting, for logs. */
    @Override
    public String toString() {
        return "Sampling[samples=" + samples + ", maxTokens=" + maxTokens + ", temperature=" + temperature + ", topP=" + topP + ", topK=" + topK
                + ", seed=" + seed + ", stopStrings=" + stopStrings + "]";
    }
}
