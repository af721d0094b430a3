package org.grpo4j.internal.backend;

/**
 * Rotary position embedding as in HF Llama (rotate_half layout: element i pairs with i + headDim/2), with optional
 * Llama 3.1 frequency scaling.
 *
 * <p>inv_freq[i] = theta^(-2i/headDim). With llama3 scaling (HF {@code _compute_llama3_parameters}): wavelengths
 * longer than original_max_position_embeddings / low_freq_factor are divided by {@code factor}; shorter than
 * original / high_freq_factor are kept; in between they are interpolated with
 * smooth = (original / wavelen - low) / (high - low). The angle for position p is p * inv_freq[i] in fp32, as HF.
 */
public record Rope(int headDim, double theta, Llama3Scaling scaling) {

    /** rope_scaling {"rope_type": "llama3", ...}. */
    public record Llama3Scaling(double factor, double lowFreqFactor, double highFreqFactor, int originalMaxPositionEmbeddings) {}

    public Rope {
        if (headDim <= 0 || headDim % 2 != 0) throw new IllegalArgumentException("rope: head_dim must be positive and even, got " + headDim);
        if (!(theta > 1)) throw new IllegalArgumentException("rope: rope_theta must be > 1, got " + theta);
        if (scaling != null && (!(scaling.factor() > 0) || !(scaling.highFreqFactor() > scaling.lowFreqFactor())
                || scaling.originalMaxPositionEmbeddings() <= 0))
            throw new IllegalArgumentException("rope: invalid llama3 rope_scaling " + scaling);
    }

    /** The headDim/2 inverse frequencies, computed in fp32 like HF (so the kernels and HF agree). */
    public float[] invFreq() {
        int half = headDim / 2;
        float[] inv = new float[half];
        for (int i = 0; i < half; i++) {
            float expo = (float) (2 * i) / (float) headDim;
            inv[i] = (float) (1.0 / Math.pow(theta, expo));
        }
        if (scaling == null) return inv;
        double old = scaling.originalMaxPositionEmbeddings();
        double lowWavelen = old / scaling.lowFreqFactor();
        double highWavelen = old / scaling.highFreqFactor();
        for (int i = 0; i < half; i++) {
            double f = inv[i];
            double wavelen = 2 * Math.PI / f;
            double out;
            if (wavelen > lowWavelen) out = f / scaling.factor();
            else if (wavelen < highWavelen) out = f;
            else {
                double smooth = (old / wavelen - scaling.lowFreqFactor()) / (scaling.highFreqFactor() - scaling.lowFreqFactor());
                out = (1 - smooth) * f / scaling.factor() + smooth * f;
            }
            inv[i] = (float) out;
        }
        return inv;
    }
}
