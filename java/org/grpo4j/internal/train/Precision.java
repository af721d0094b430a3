package org.grpo4j.internal.train;

import java.util.List;
import org.grpo4j.internal.backend.AdamWStep;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.CpuBackend;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.GrpoLossOutputs;
import org.grpo4j.internal.backend.GrpoLossParams;
import org.grpo4j.internal.backend.KlEstimator;
import org.grpo4j.internal.backend.SamplingSpec;
import org.grpo4j.internal.backend.Tensor;
import org.grpo4j.internal.model.LlamaConfig;
import org.grpo4j.internal.model.LlamaModel;
import org.grpo4j.internal.model.LlamaWeights;
import org.grpo4j.internal.model.PackedBatch;

/**
 * The {@code precision} of a run: the dtype of the policy's compute weights (and so of activations, their gradients
 * and the KV cache), of the frozen reference and of the gradient traffic between ranks. fp32 master weights, AdamW
 * moments, the gradient accumulation buffer, log-probs, losses and advantages are fp32 in both modes. Generation
 * ({@code grpo4j generate}, {@code org.grpo4j.Model}) takes the same choice for its weights and KV cache.
 */
public final class Precision {
    private Precision() {}

    /** The values a precision is given as: the trainer's {@code precision}, generate's {@code --precision}, the API's. */
    public static final List<String> SPECS = List.of("auto", "fp32", "bf16");

    /**
     * fp32 or bf16 for {@code spec} ("auto": bf16 on CUDA, fp32 on the CPU) on backend {@code be}; another value is
     * refused (callers name their option first: {@link #check}).
     */
    public static DType resolve(String spec, Backend be) {
        check(spec, "precision");
        return switch (spec) {
            case "fp32" -> DType.FP32;
            case "bf16" -> DType.BF16;
            default -> be instanceof CpuBackend ? DType.FP32 : DType.BF16; // auto
        };
    }

    /** Fails with {@code what + " must be auto, fp32 or bf16, got " + spec} unless {@code spec} is one of {@link #SPECS}. */
    public static void check(String spec, String what) {
        if (!SPECS.contains(spec)) throw new IllegalArgumentException(what + " must be auto, fp32 or bf16, got " + spec);
    }

    public static String label(DType d) { return d == DType.BF16 ? "bf16" : "fp32"; }

    /**
     * Fails, naming the op, unless {@code be} runs every op of a bf16 run on bf16 tensors: a micro Llama (2 layers,
     * hidden 8, vocabulary 11) in bf16 does a training forward and backward (into fp32 and into bf16 gradients) with
     * the fused GRPO loss, a no-grad log-prob pass, a prefill and a decode step with sampling, and an AdamW step with
     * the bf16 copy-out. A backend
     * whose bf16 variant of an op throws {@link UnsupportedOperationException} is refused here, before any weights
     * load, rather than minutes into the run.
     */
    public static void requireBf16(Backend be) {
        probe(be, true, "precision bf16", "set precision fp32, or backend cpu (whose bf16 twins run every op)");
    }

    /**
     * Fails, naming the op, unless {@code be} runs every op that generation calls on bf16 weights: the micro Llama's
     * load (fp32 read, cast to bf16), the weights' finiteness check, a prefill and a decode step with sampling.
     * {@code what} names the choice ({@code "--precision bf16"}), {@code fix} says what to do instead.
     */
    public static void requireBf16Generation(Backend be, String what, String fix) { probe(be, false, what, fix); }

    private static void probe(Backend be, boolean training, String what, String fix) {
        LlamaConfig c = new LlamaConfig(8, 12, 2, 2, 1, 4, 11, 1e-5, 10000, null, 32, false, 0, List.of(1));
        try (LlamaWeights master = LlamaWeights.init(be, c, 1); LlamaWeights w = master.castTo(DType.BF16)) {
            LlamaModel m = new LlamaModel(w);
            if (training) trainingStep(be, c, master, w, m);
            else w.firstNonFiniteTensor(); // what generate and Model.load ask of the weights they load
            generationStep(be, m, c);
            be.synchronize();
        } catch (UnsupportedOperationException e) {
            throw new IllegalArgumentException(what + ": " + be.name() + " lacks a bf16 op (" + e.getMessage() + "); " + fix);
        }
    }

    /** A training forward and backward (fp32 and bf16 gradients) with the fused loss, a log-prob pass, an AdamW step. */
    private static void trainingStep(Backend be, LlamaConfig c, LlamaWeights master, LlamaWeights w, LlamaModel m) {
        try (LlamaWeights g = LlamaWeights.zeros(be, c)) {
            List<int[]> seqs = List.of(new int[] {1, 2, 3, 4}, new int[] {5, 6, 7});
            int[] rows = {1, 2, 5}, tgt = {3, 4, 7};
            int n = rows.length, d = c.hiddenSize();
            try (PackedBatch pb = PackedBatch.of(be, seqs, c.vocabSize()); LlamaModel.Activations act = m.forward(pb, false);
                 Tensor rowsT = be.upload(rows, n); Tensor tgtT = be.upload(tgt, n); Tensor ones = be.upload(new float[] {1, 1, 1}, n);
                 Tensor zeros = be.zeros(DType.FP32, n); Tensor sel = be.empty(DType.BF16, n, d); Tensor dSel = be.empty(DType.BF16, n, d);
                 Tensor loss = be.empty(DType.FP32, 1); Tensor lp = be.empty(DType.FP32, n); Tensor ratio = be.empty(DType.FP32, n);
                 Tensor clip = be.empty(DType.FP32, n); Tensor kl = be.empty(DType.FP32, n); Tensor dHidden = be.zeros(DType.FP32, pb.tokens(), d)) {
                be.embedding(sel, act.hidden(), rowsT);
                be.grpoLoss(new GrpoLossOutputs(loss, lp, ratio, clip, kl, dSel, g.get("lm_head.weight")), sel, w.get("lm_head.weight"), tgtT,
                        ones, zeros, zeros, zeros, new GrpoLossParams(1f, 0.2f, 0.2f, 0.01f, KlEstimator.KL3));
                be.tokenLogprobsBackward(dSel, g.get("lm_head.weight"), ones, sel, w.get("lm_head.weight"), tgtT, 1f);
                be.embeddingBackward(dHidden, dSel, rowsT);
                m.backward(act, dHidden, g);
                try (LlamaWeights g16 = LlamaWeights.zeros(be, c, DType.BF16); Tensor table32 = be.zeros(DType.FP32, c.vocabSize(), d)) {
                    m.backward(act, dHidden, g16, null, table32); // ZeRO-2's bf16 gradient buffer (world > 1)
                }
                m.tokenLogprobs(pb, rows, tgt, 1f);
            }
            try (Tensor mm = be.zeros(DType.FP32, (int) g.flat().numel()); Tensor vv = be.zeros(DType.FP32, (int) g.flat().numel());
                 Tensor acc = be.zeros(DType.FP32, 1)) {
                be.sumSquares(acc, w.flat());
                be.adamW(master.flat(), g.flat(), mm, vv, new AdamWStep(1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 1), w.flat());
            }
        }
    }

    /** A prefill of three tokens into a paged KV cache and one decode step with sampling. */
    private static void generationStep(Backend be, LlamaModel m, LlamaConfig c) {
        try (LlamaModel.KvCache cache = m.newKvCache(2, 4); PackedBatch p = PackedBatch.of(be, List.of(new int[] {1, 2, 3}), c.vocabSize());
             Tensor logits = m.prefillLogits(cache, p, new int[] {0, 1, 2});
             LlamaModel.DecodeSession s = m.newDecodeSession(cache, 1, 2, false)) {
            s.run(new int[] {4}, new int[] {3}, new int[] {3}, new int[] {0}, 1, new int[] {0, 1}, new SamplingSpec(1f, 0, 1f, 1));
        }
    }
}
