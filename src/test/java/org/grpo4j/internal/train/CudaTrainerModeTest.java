package org.grpo4j.internal.train;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.grpo4j.internal.backend.CudaBackend;
import org.grpo4j.internal.backend.TestBackends;
import org.grpo4j.train.GrpoTrainer;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * lm_head_grad on CUDA (docs/trainer.md, "Precision"): the trainer's LM-head losses run in the mode the config names,
 * whatever mode the backend was in, and leave the backend's own mode as they found it. One supervised warm-up step
 * (then one GRPO step) of the tiny model in bf16 per mode: the warm-up step's gradients (the hook's first call) differ
 * between the modes (the switch takes effect) and stay within 2^-6 of each other in error norm (dz to 8 bits
 * against ~16). The LM head's buffers, held while the losses run, are given back when a training phase ends.
 */
@Tag("gpu")
class CudaTrainerModeTest {
    @Test
    void lmHeadGradSetsTheDzModeOfTheTrainersLossCalls(@TempDir Path tmp) throws Exception {
        CudaBackend be = TestBackends.cuda();
        boolean before = be.lmHeadBf16GradSplit();
        long bound = be.lmHeadRowsBytes();
        List<float[]> grads = new ArrayList<>();
        try {
            for (String mode : new String[] {"split", "bf16"}) {
                be.setLmHeadBf16GradSplit(!mode.equals("split")); // the opposite of what the run asks for
                boolean set = be.lmHeadBf16GradSplit();
                List<String> sets = GrpoTrainerTest.small(tmp.resolve("run-" + mode), 1);
                // one supervised warm-up step first: its loss (tokenLogprobsBackward) has a gradient whatever the rollouts' rewards
                sets.addAll(List.of("backend=\"cuda\"", "precision=bf16", "lm_head_grad=\"" + mode + "\"", "sft_warmup.steps=1", "sft_warmup.batch_size=4"));
                List<float[]> seen = new ArrayList<>();
                List<Long> held = new ArrayList<>();
                try (Trainer t = Trainer.builder(GrpoTrainerTest.config(sets)).backend(be).log(null)
                        .gradientHook(g -> {
                            seen.add(g.flat().toFloats());
                            held.add(be.lmHeadBufferBytes());
                        }).build()) {
                    t.run(new GrpoTrainer.Listener() {});
                    assertEquals(0, be.lmHeadBufferBytes(), "lm_head_grad " + mode + ": the LM head's buffers are given back after training");
                }
                assertTrue(held.get(0) > 0, "the loss held its buffers while it trained");
                assertEquals(set, be.lmHeadBf16GradSplit(), "lm_head_grad " + mode + ": the backend's own mode is put back");
                assertEquals(bound, be.lmHeadRowsBytes(), "lm_head_scratch_mib: the backend's own bound is put back");
                assertFalse(seen.isEmpty(), "the gradient hook ran");
                grads.add(seen.get(0));
            }
        } finally {
            be.setLmHeadBf16GradSplit(before);
        }
        float[] split = grads.get(0), single = grads.get(1);
        assertFalse(java.util.Arrays.equals(split, single), "the two modes give different gradients: the mode reached the loss");
        double err = 0, norm = 0;
        for (int i = 0; i < split.length; i++) {
            err += Math.pow((double) single[i] - split[i], 2);
            norm += Math.pow(split[i], 2);
        }
        assertTrue(norm > 0, "a non-zero gradient");
        assertTrue(Math.sqrt(err / norm) < 1.0 / 64, "error norm " + Math.sqrt(err / norm) + " of the gradient's");
    }

    /**
     * attention_dq and attention_kernels on CUDA (docs/trainer.md, "Randomness and exact resume"): the warm-up's and
     * the step's passes run in the modes the config names, whatever the backend was set to, and the backend's own
     * settings are put back after the run. (The gradient hook runs inside those passes.)
     */
    @Test
    void attentionKeysSetTheModesOfTheTrainersPasses(@TempDir Path tmp) throws Exception {
        CudaBackend be = TestBackends.cuda();
        CudaBackend.AttentionDq dqBefore = be.attentionDq();
        boolean wgmmaBefore = be.wgmmaAttention();
        try {
            for (String[] mode : new String[][] {{"fixed", "wgmma"}, {"atomic", "mma"}}) {
                be.setAttentionDq(CudaBackend.AttentionDq.PASS);  // not what the run asks for
                be.setWgmmaAttention(mode[1].equals("mma"));
                List<String> sets = GrpoTrainerTest.small(tmp.resolve("run-" + mode[0]), 1);
                sets.addAll(List.of("backend=\"cuda\"", "precision=bf16", "attention_dq=\"" + mode[0] + "\"",
                        "attention_kernels=\"" + mode[1] + "\"", "sft_warmup.steps=1", "sft_warmup.batch_size=4", "save_freq=0", "num_evals=0"));
                List<String> seen = new ArrayList<>();
                try (Trainer t = Trainer.builder(GrpoTrainerTest.config(sets)).backend(be).log(null)
                        .gradientHook(g -> seen.add(be.attentionDq() + " " + be.wgmmaAttention())).build()) {
                    t.run(new GrpoTrainer.Listener() {});
                }
                assertTrue(seen.size() >= 2, "the hook ran in the warm-up and in the step: " + seen);
                String want = mode[0].toUpperCase(java.util.Locale.ROOT) + " " + mode[1].equals("wgmma");
                for (String s : seen) assertEquals(want, s, "attention_dq " + mode[0] + ", attention_kernels " + mode[1]);
                assertEquals(CudaBackend.AttentionDq.PASS, be.attentionDq(), "the backend's own dQ mode is put back");
                assertEquals(mode[1].equals("mma"), be.wgmmaAttention(), "the backend's own kernel choice is put back");
            }
        } finally {
            be.setAttentionDq(dqBefore);
            be.setWgmmaAttention(wgmmaBefore);
        }
    }

    /**
     * recompute_layers on CUDA: one GRPO step of the tiny model in bf16 (after one warm-up step, whose loss has a
     * gradient whatever the rewards) with none, one and both of its layers recomputed in the backward: the same
     * gradients bit for bit at every call of the hook (a layer run again from its input on the same kernels computes
     * the same values), so the count is a pure memory and time trade.
     */
    @Test
    void recomputedLayersGiveTheSameGradientsOnCuda(@TempDir Path tmp) throws Exception {
        CudaBackend be = TestBackends.cuda();
        List<List<float[]>> runs = new ArrayList<>();
        for (String k : new String[] {"0", "1", "all"}) {
            List<String> sets = GrpoTrainerTest.small(tmp.resolve("recompute-" + k), 1);
            sets.addAll(List.of("backend=\"cuda\"", "precision=bf16", "gradient_checkpointing=true", "recompute_layers=" + k, "sft_warmup.steps=1",
                    "sft_warmup.batch_size=4", "save_freq=0", "num_evals=0"));
            List<float[]> seen = new ArrayList<>();
            try (Trainer t = Trainer.builder(GrpoTrainerTest.config(sets)).backend(be).log(null).gradientHook(g -> seen.add(g.flat().toFloats())).build()) {
                t.run(new GrpoTrainer.Listener() {});
            }
            assertFalse(seen.isEmpty(), "recompute_layers " + k + ": the gradient hook ran");
            runs.add(seen);
        }
        for (int r = 1; r < runs.size(); r++) {
            assertEquals(runs.get(0).size(), runs.get(r).size(), "as many gradient calls");
            for (int i = 0; i < runs.get(0).size(); i++)
                assertArrayEquals(runs.get(0).get(i), runs.get(r).get(i), "run " + r + ", gradient call " + i + ": the same bits as with no layer recomputed");
        }
    }
}
