package org.grpo4j.internal.train;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Path;
import java.util.List;
import org.grpo4j.internal.backend.CudaBackend;
import org.grpo4j.internal.backend.TestBackends;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The trainer sets its CUDA backend's LM-head dz mode from lm_head_grad (docs/trainer.md, "Precision"). */
@Tag("gpu")
class CudaTrainerModeTest {
    @Test
    void lmHeadGradSetsTheBackendsDzMode(@TempDir Path tmp) throws Exception {
        CudaBackend be = TestBackends.cuda();
        boolean before = be.lmHeadBf16GradSplit();
        try {
            for (String mode : new String[] {null, "split", "bf16"}) {
                be.setLmHeadBf16GradSplit(!"split".equals(mode)); // the opposite of what the run asks for
                List<String> sets = GrpoTrainerTest.small(tmp.resolve("run-" + mode), 1);
                sets.addAll(List.of("backend=\"cuda\"", "precision=bf16"));
                if (mode != null) sets.add("lm_head_grad=\"" + mode + "\"");
                try (Trainer t = Trainer.builder(GrpoTrainerTest.config(sets)).backend(be).build()) {
                    assertEquals("split".equals(mode), be.lmHeadBf16GradSplit(), "lm_head_grad " + mode + " (default bf16)");
                }
            }
        } finally {
            be.setLmHeadBf16GradSplit(before);
        }
    }
}
