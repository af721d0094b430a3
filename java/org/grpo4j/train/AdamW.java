package org.grpo4j.train;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.grpo4j.backend.AdamWStep;
import org.grpo4j.backend.Backend;
import org.grpo4j.backend.DType;
import org.grpo4j.backend.Tensor;
import org.grpo4j.model.SafeTensors;

/**
 * AdamW over one flat fp32 parameter buffer and its flat gradient buffer, with global-norm clipping — the one place
 * where gradients become an update. A ZeRO-2 optimizer replaces it by reduce-scattering the gradient into a shard,
 * all-reducing the squared norm, stepping the shard and all-gathering the parameters.
 */
public final class AdamW implements AutoCloseable {
    private final Backend be;
    private final Tensor m, v;
    private final double beta1, beta2, eps, weightDecay;
    private int step; // optimizer steps taken (bias correction)

    public AdamW(Backend be, long elements, double beta1, double beta2, double eps, double weightDecay) {
        this.be = be;
        this.m = be.zeros(DType.FP32, Math.toIntExact(elements));
        this.v = be.zeros(DType.FP32, Math.toIntExact(elements));
        this.beta1 = beta1;
        this.beta2 = beta2;
        this.eps = eps;
        this.weightDecay = weightDecay;
    }

    public int steps() { return step; }

    /** L2 norm of the gradient buffer. */
    public double gradNorm(Tensor grads) {
        try (Tensor acc = be.zeros(DType.FP32, 1)) {
            be.sumSquares(acc, grads);
            return Math.sqrt(acc.item());
        }
    }

    /**
     * Clips grads to maxNorm (torch clip_grad_norm_: coefficient maxNorm / (norm + 1e-6), capped at 1) and applies
     * one AdamW step with learning rate lr. The caller has checked that norm is finite.
     */
    public void step(Tensor params, Tensor grads, double norm, double maxNorm, double lr) {
        double coef = maxNorm / (norm + 1e-6);
        if (coef < 1) be.scale(grads, (float) coef);
        step++;
        be.adamW(params, grads, m, v, new AdamWStep((float) lr, (float) beta1, (float) beta2, (float) eps, (float) weightDecay, step), null);
    }

    public void save(Path file) throws IOException {
        float[] mm = m.toFloats(), vv = v.toFloats();
        SafeTensors.write(file, List.of(new SafeTensors.Out("exp_avg", new int[] {mm.length}, mm, 0),
                new SafeTensors.Out("exp_avg_sq", new int[] {vv.length}, vv, 0)), "F32", Map.of("step", String.valueOf(step)));
    }

    public void load(Path file) throws IOException {
        try (SafeTensors st = SafeTensors.open(file)) {
            for (String k : new String[] {"exp_avg", "exp_avg_sq"}) {
                if (!st.tensors().containsKey(k)) throw new IOException(file + ": tensor " + k + " is missing");
                if (st.tensors().get(k).numel() != m.numel())
                    throw new IOException(file + ": tensor " + k + " has " + st.tensors().get(k).numel() + " elements, the model " + m.numel());
            }
            be.copyFromHost(m, st.readFloats("exp_avg"));
            be.copyFromHost(v, st.readFloats("exp_avg_sq"));
            String s = st.metadata().get("step");
            if (s == null) throw new IOException(file + ": metadata step is missing");
            step = Integer.parseInt(s);
        }
    }

    @Override
    public void close() {
        m.close();
        v.close();
    }
}
