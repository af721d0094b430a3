package org.grpo4j.internal.train;

import static org.junit.jupiter.api.Assertions.*;

import java.lang.reflect.Proxy;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.CpuBackend;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.GrpoLossOutputs;
import org.grpo4j.internal.backend.GrpoLossParams;
import org.grpo4j.internal.backend.KlEstimator;
import org.grpo4j.internal.backend.Tensor;
import org.grpo4j.internal.dist.LocalCommunicator;
import org.grpo4j.internal.model.LlamaConfig;
import org.grpo4j.internal.model.LlamaModel;
import org.grpo4j.internal.model.LlamaWeights;
import org.grpo4j.internal.model.PackedBatch;
import org.grpo4j.internal.model.ShardLayout;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * precision bf16 against fp32 on the tiny model (its shapes, HF's N(0, 0.02) init, bf16-exact weights so that both
 * start from the same values), and the bf16 trainer end to end on the CPU.
 *
 * <p>Tolerances. Every bf16 rounding is a relative error of at most 2^-9; a token's hidden state is rounded some 20
 * times between the embedding and the LM head (two layers of norm, projections, attention, SwiGLU and residual adds),
 * so the final hidden states carry a relative error of at most about 20 x 2^-9 = 4%, and in RMS (the roundings are
 * independent) sqrt(20) x 2^-9 / sqrt(3) = 0.5%. A logit's error is at most that relative error times the largest
 * |logit| the row could reach, |h| |w| (Cauchy-Schwarz), and a log-prob moves by at most twice the largest logit
 * error. The loss is a weighted mean of such log-prob terms. The update of AdamW's first step is lr g / (|g| + eps) =
 * lr sign(g) wherever |g| >> eps: it differs between the two runs only where the gradient's sign flips, i.e. for
 * gradients within their bf16 error of zero; those get checked as a fraction and the rest elementwise.
 */
class PrecisionTest {
    static final CpuBackend be = new CpuBackend();
    static final LlamaConfig C = LlamaConfig.tiny(300, 1, 2);

    static LlamaWeights bf16Exact(long seed) {
        try (LlamaWeights w = LlamaWeights.init(be, C, seed); LlamaWeights h = w.castTo(DType.BF16)) {
            return h.castTo(DType.FP32);
        }
    }

    record Pass(float[] logp, double loss, float[] grad) {}

    /** Log-probs, the fused GRPO loss and its gradient for the given weights (fp32 or bf16). */
    static Pass pass(LlamaWeights w, List<int[]> seqs, int[] rows, int[] tgt, float[] adv, float[] old) {
        LlamaModel m = new LlamaModel(w);
        DType adt = w.dtype();
        int n = rows.length, d = C.hiddenSize();
        float[] wt = new float[n];
        java.util.Arrays.fill(wt, 1f / n);
        try (PackedBatch pb = PackedBatch.of(be, seqs, C.vocabSize()); LlamaModel.Activations act = m.forward(pb, false);
             LlamaWeights g = LlamaWeights.zeros(be, C); Tensor rowsT = be.upload(rows, n); Tensor tgtT = be.upload(tgt, n);
             Tensor wT = be.upload(wt, n); Tensor advT = be.upload(adv, n); Tensor oldT = be.upload(old, n);
             Tensor sel = be.empty(adt, n, d); Tensor dSel = be.empty(adt, n, d); Tensor loss = be.empty(DType.FP32, 1);
             Tensor lp = be.empty(DType.FP32, n); Tensor ratio = be.empty(DType.FP32, n); Tensor clip = be.empty(DType.FP32, n);
             Tensor kl = be.empty(DType.FP32, n); Tensor dHidden = be.zeros(DType.FP32, pb.tokens(), d)) {
            be.embedding(sel, act.hidden(), rowsT);
            be.grpoLoss(new GrpoLossOutputs(loss, lp, ratio, clip, kl, dSel, g.get("lm_head.weight")), sel, w.get("lm_head.weight"), tgtT, wT, advT,
                    oldT, oldT, new GrpoLossParams(1f, 0.2f, 0.2f, 0.01f, KlEstimator.KL3));
            be.embeddingBackward(dHidden, dSel, rowsT);
            m.backward(act, dHidden, g);
            return new Pass(m.tokenLogprobs(pb, rows, tgt, 1f), loss.item(), g.flat().toFloats());
        }
    }

    /** One AdamW step (world 1) from {@code w0} with gradient {@code grad} in precision {@code dt}; the fp32 master after it. */
    static float[] step(LlamaWeights w0, float[] grad, DType dt) {
        ShardLayout lay = new ShardLayout(w0.layout().totalElements(), 1, 1 << 20);
        try (LocalCommunicator comm = LocalCommunicator.group(1, 1000).get(0);
             LlamaWeights compute = LlamaWeights.zeros(be, C, dt, lay.padded()); LlamaWeights g = LlamaWeights.zeros(be, C);
             ShardedAdamW opt = new ShardedAdamW(be, comm, lay, compute, g, 0.9, 0.999, 1e-8, 0.01)) {
            compute.copyFrom(w0);
            opt.setMaster(w0);
            opt.startStep();
            be.copyFromHost(g.flat(), grad);
            ShardedAdamW.Norm n = opt.gradNorm(true);
            opt.step(n.norm(), 1.0, 1e-3);
            float[] master = opt.gatherMaster();
            if (dt == DType.BF16) { // the compute copy is the master rounded once
                short[] bits = compute.flat().toBf16Bits();
                for (int i = 0; i < bits.length; i += 997) assertEquals(org.grpo4j.internal.backend.Bf16.fromFloat(master[i]), bits[i], "bf16 copy-out at " + i);
            }
            return master;
        }
    }

    @Test
    void bf16LogProbsLossAndOneOptimizerStepTrackFp32() {
        SplittableRandom r = new SplittableRandom(5);
        List<int[]> seqs = List.of(r.ints(40, 3, 300).toArray(), r.ints(33, 3, 300).toArray(), r.ints(25, 3, 300).toArray());
        List<Integer> rowList = new ArrayList<>(), tgtList = new ArrayList<>();
        int start = 0;
        for (int[] s : seqs) {
            for (int t = s.length / 2; t < s.length; t++) {
                rowList.add(start + t - 1);
                tgtList.add(s[t]);
            }
            start += s.length;
        }
        int n = rowList.size();
        int[] rows = rowList.stream().mapToInt(Integer::intValue).toArray(), tgt = tgtList.stream().mapToInt(Integer::intValue).toArray();
        float[] adv = new float[n];
        for (int i = 0; i < n; i++) adv[i] = (float) r.nextDouble(-1, 1);
        try (LlamaWeights w32 = bf16Exact(3); LlamaWeights w16 = w32.castTo(DType.BF16)) {
            float[] old = new LlamaModel(w32).tokenLogprobs(PackedBatch.of(be, seqs, C.vocabSize()), rows, tgt, 1f);
            Pass a = pass(w32, seqs, rows, tgt, adv, old), b = pass(w16, seqs, rows, tgt, adv, old);

            // log-probs: at most twice the largest logit error, 20 x 2^-9 x max |h| |w_v| (bounded here by the rows' norms)
            double maxHW = 0;
            try (PackedBatch pb = PackedBatch.of(be, seqs, C.vocabSize()); LlamaModel.Activations act = new LlamaModel(w32).forwardNoGrad(pb)) {
                float[] h = act.hidden().toFloats(), lm = w32.get("lm_head.weight").toFloats();
                int d = C.hiddenSize();
                double maxH = 0, maxW = 0;
                for (int t = 0; t < h.length / d; t++) maxH = Math.max(maxH, norm(h, t * d, d));
                for (int v = 0; v < C.vocabSize(); v++) maxW = Math.max(maxW, norm(lm, v * d, d));
                maxHW = maxH * maxW;
            }
            double lpTol = 2 * 20 * Math.pow(2, -9) * maxHW, worst = 0;
            for (int i = 0; i < n; i++) worst = Math.max(worst, Math.abs(a.logp()[i] - b.logp()[i]));
            System.out.printf("bf16 vs fp32: worst log-prob error %.2e (bound %.2e), loss %.6f vs %.6f%n", worst, lpTol, a.loss(), b.loss());
            assertTrue(worst <= lpTol, "log-prob error " + worst + " > " + lpTol);
            assertTrue(worst > 0, "bf16 log-probs equal fp32 ones bit for bit: the bf16 model did not run in bf16");
            // the loss: a weighted mean of terms each moved by at most ~|A| x ratio x the log-prob bound (ratio ~ 1 here)
            double advMax = 0;
            for (float x : adv) advMax = Math.max(advMax, Math.abs(x));
            assertEquals(a.loss(), b.loss(), 1.3 * advMax * lpTol + 0.01 * 2 * lpTol, "GRPO loss");

            // one optimizer step from the same fp32 master: lr x sign(g) wherever the gradient is well above its bf16 error
            float[] m32 = step(w32, a.grad(), DType.FP32), m16 = step(w32, b.grad(), DType.BF16), w0 = w32.flat().toFloats();
            double gRms = 0, errRms = 0;
            for (int i = 0; i < w0.length; i++) {
                gRms += (double) a.grad()[i] * a.grad()[i];
                errRms += (double) (a.grad()[i] - b.grad()[i]) * (a.grad()[i] - b.grad()[i]);
            }
            gRms = Math.sqrt(gRms / w0.length);
            errRms = Math.sqrt(errRms / w0.length);
            int flips = 0, strong = 0;
            for (int i = 0; i < w0.length; i++) {
                boolean clear = Math.abs(a.grad()[i]) > 10 * errRms;
                if (clear) {
                    strong++;
                    assertEquals(m32[i], m16[i], 1e-3 * 1e-3 + 1e-6 * Math.abs(w0[i]), "weight " + i + " after the step (gradient " + a.grad()[i] + ")");
                } else if (Math.signum(a.grad()[i]) != Math.signum(b.grad()[i])) flips++;
            }
            System.out.printf("gradients: rms %.3e, bf16 error rms %.3e (%.2f%%); %d weights with a clear gradient agree, %d sign flips among %d small ones%n",
                    gRms, errRms, 100 * errRms / gRms, strong, flips, w0.length - strong);
            assertTrue(errRms <= 0.05 * gRms, "bf16 gradient error " + errRms + " vs gradient rms " + gRms);
            assertTrue(strong > w0.length / 4, "most weights have a clear gradient: " + strong + " of " + w0.length);
            assertTrue(flips <= 0.1 * (w0.length - strong), flips + " sign flips among " + (w0.length - strong) + " small gradients");
        }
    }

    static double norm(float[] a, int from, int n) {
        double s = 0;
        for (int i = from; i < from + n; i++) s += (double) a[i] * a[i];
        return Math.sqrt(s);
    }

    /** A trainer run of the tiny model on an easy reward (the share of digits in the response), its metrics per step. */
    static List<Map<String, Double>> easyRun(Path dir, String precision, int seed, int steps) throws Exception {
        List<String> sets = GrpoTrainerTest.small(dir, steps);
        sets.addAll(List.of("learning_rate=3e-3", "num_evals=0", "save_freq=0", "beta=0.0", "non_stop_penalty=false",
                "precision=" + precision, "seed=" + seed));
        List<Map<String, Double>> out = new ArrayList<>();
        try (org.grpo4j.reward.Rewards rw = new org.grpo4j.reward.Rewards()) {
            rw.register("gsm8k", (resp, gt, row) -> org.grpo4j.reward.RewardFunction.Score.of(
                    10.0 * resp.chars().filter(Character::isDigit).count() / Math.max(1, resp.length())));
            try (Trainer t = Trainer.builder(GrpoTrainerTest.config(sets)).rewards(rw).log(null).build()) {
                t.run(new org.grpo4j.train.GrpoTrainer.Listener() {
                    @Override
                    public void onStep(int step, Map<String, Double> m) { out.add(m); }
                });
            }
        }
        return out;
    }

    static double mean(List<Map<String, Double>> run, String key, int fromStep, int toStep) {
        return run.subList(fromStep - 1, toStep).stream().mapToDouble(m -> m.get(key)).average().orElseThrow();
    }

    /**
     * The bf16 trainer against the fp32 trainer on the tiny model (issue 14: "the bf16 run's metrics close to the
     * fp32 run's"), 24 steps on an easy reward at a learning rate that moves the policy a lot per step.
     *
     * <p>Step 1 starts from the same weights (the bf16 run's compute copy is their rounding) and the same Philox
     * counters, so it samples the same responses (its scores and lengths equal the fp32 run's), and its entropy and
     * gradient norm differ by at most the relative error the class comment bounds for the hidden states, 20 x 2^-9:
     * both are sums over the same tokens of terms carrying that error (the backward rounds about as often again, so
     * this is the bound of one direction, which the figures meet with room: 0.04% and 0.5% when written).
     *
     * <p>From step 2 a token drawn near a boundary of the inverse CDF can differ, and each run then follows its own
     * samples: the runs are two draws of the same training process, not one computed twice. "Close" then means close
     * within that process's own noise: the bf16 run's mean reward over the last 6 steps differs from the fp32 run of
     * the same seed by no more than the fp32 runs of three seeds differ among themselves, and the bf16 run learns
     * (the reward of steps 19-24 above that of steps 1-6 by more than 1, as every fp32 seed's).
     */
    @Test
    void theBf16TrainerLearnsLikeTheFp32TrainerWithinTheNoiseOfSeeds(@TempDir Path tmp) throws Exception {
        int steps = 24;
        List<List<Map<String, Double>>> fp32 = new ArrayList<>();
        for (int seed = 1; seed <= 3; seed++) fp32.add(easyRun(tmp.resolve("fp32-" + seed), "fp32", seed, steps));
        List<Map<String, Double>> bf16 = easyRun(tmp.resolve("bf16-1"), "bf16", 1, steps);
        List<Map<String, Double>> same = fp32.get(0);

        Map<String, Double> a = same.get(0), b = bf16.get(0);
        assertEquals(a.get("objective/scores"), b.get("objective/scores"), "step 1 samples the same responses");
        assertEquals(a.get("val/sequence_lengths"), b.get("val/sequence_lengths"), "step 1 samples the same responses");
        assertNotEquals(a.get("optim/grad_norm"), b.get("optim/grad_norm"), "the bf16 run computes in bf16, not the fp32 run again");
        double eps = 20 * Math.scalb(1.0, -9);
        for (String key : List.of("objective/entropy", "optim/grad_norm")) {
            double rel = Math.abs(b.get(key) - a.get(key)) / Math.abs(a.get(key));
            assertTrue(rel <= eps, "step 1 " + key + ": fp32 " + a.get(key) + ", bf16 " + b.get(key) + " (relative " + rel + " > " + eps + ")");
        }

        double[] last = new double[3];
        for (int i = 0; i < 3; i++) {
            last[i] = mean(fp32.get(i), "objective/scores", 19, 24);
            double first = mean(fp32.get(i), "objective/scores", 1, 6);
            assertTrue(last[i] > first + 1.0, "fp32 seed " + (i + 1) + ": steps 1-6 " + first + ", 19-24 " + last[i]);
        }
        double spread = java.util.Arrays.stream(last).max().orElseThrow() - java.util.Arrays.stream(last).min().orElseThrow();
        double bfFirst = mean(bf16, "objective/scores", 1, 6), bfLast = mean(bf16, "objective/scores", 19, 24);
        System.out.printf("easy reward, steps 19-24: fp32 seeds %.3f %.3f %.3f (spread %.3f), bf16 seed 1 %.3f (steps 1-6 %.3f)%n",
                last[0], last[1], last[2], spread, bfLast, bfFirst);
        assertTrue(bfLast > bfFirst + 1.0, "the bf16 run learns: steps 1-6 " + bfFirst + ", 19-24 " + bfLast);
        assertTrue(Math.abs(bfLast - last[0]) <= spread, "bf16 " + bfLast + " against fp32 " + last[0] + " of the same seed: "
                + Math.abs(bfLast - last[0]) + " apart, more than the fp32 seeds' spread " + spread);
        String state = Files.readString(tmp.resolve("bf16-1/checkpoints/step_" + steps + "/trainer_state.json"));
        assertTrue(state.contains("\"precision\" : \"bf16\""), state);
    }

    @Test
    void aBf16RunResumesBitForBit(@TempDir Path tmp) throws Exception {
        int steps = 4;
        Path full = tmp.resolve("full"), cut = tmp.resolve("cut");
        List<String> a = GrpoTrainerTest.small(full, steps), b = GrpoTrainerTest.small(cut, steps);
        a.addAll(List.of("precision=bf16", "save_freq=0"));
        b.addAll(List.of("precision=bf16", "save_freq=0"));
        try (Trainer t = Trainer.builder(GrpoTrainerTest.config(a)).log(null).build()) {
            t.run(null);
        }
        try (Trainer t = Trainer.builder(GrpoTrainerTest.config(b)).log(null).build()) {
            t.run(new org.grpo4j.train.GrpoTrainer.Listener() {
                @Override
                public void onStep(int step, Map<String, Double> m) { if (step == 2) t.cancel(); }
            });
        }
        assertTrue(Files.isDirectory(cut.resolve("checkpoints/step_2")));
        assertFalse(Files.exists(cut.resolve("checkpoints/step_3")));
        try (Trainer t = Trainer.builder(null).resume(cut).log(null).build()) {
            t.run(null);
        }
        assertEquals(GrpoTrainerTest.comparable(full.resolve("metrics.jsonl")), GrpoTrainerTest.comparable(cut.resolve("metrics.jsonl")),
                "resumed metrics equal the uninterrupted run's");
        assertArrayEquals(Files.readAllBytes(full.resolve("checkpoints/step_" + steps + "/model/model.safetensors")),
                Files.readAllBytes(cut.resolve("checkpoints/step_" + steps + "/model/model.safetensors")), "final fp32 master weights bitwise equal");
        assertArrayEquals(Files.readAllBytes(full.resolve("checkpoints/step_" + steps + "/optimizer.safetensors")),
                Files.readAllBytes(cut.resolve("checkpoints/step_" + steps + "/optimizer.safetensors")), "final AdamW moments bitwise equal");
    }

    @Test
    void bf16OnABackendWithoutABf16OpIsRefusedNamingIt() {
        Backend noBf16Matmul = (Backend) Proxy.newProxyInstance(Backend.class.getClassLoader(), new Class<?>[] {Backend.class}, (p, m, args) -> {
            if (m.getName().equals("matmul") && ((Tensor) args[1]).dtype() == DType.BF16)
                throw new UnsupportedOperationException("matmul (bf16) is not implemented on test yet");
            if (m.getName().equals("name")) return "test";
            try {
                return m.invoke(be, args);
            } catch (java.lang.reflect.InvocationTargetException e) {
                throw e.getCause();
            }
        });
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Precision.requireBf16(noBf16Matmul));
        assertTrue(e.getMessage().startsWith("precision bf16: test lacks a bf16 op (matmul (bf16) is not implemented"), e.getMessage());
        assertTrue(e.getMessage().contains("set precision fp32"), e.getMessage());
        Precision.requireBf16(be); // the CPU's bf16 twins run every op
        assertEquals(DType.FP32, Precision.resolve("auto", be));
        assertEquals(DType.BF16, Precision.resolve("bf16", be));
    }
}
