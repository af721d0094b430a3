package org.grpo4j.internal.train;

import static org.junit.jupiter.api.Assertions.*;

import java.util.List;
import org.grpo4j.internal.backend.CudaBackend;
import org.grpo4j.train.GrpoConfig;
import org.junit.jupiter.api.Test;

/**
 * attention_dq and attention_kernels (docs/trainer.md, "Randomness and exact resume"): the backend's modes they name,
 * and the notes a CUDA run prints when the JVM's own attention properties ask for something else. On a GPU (or the
 * emulated one) CudaTrainerModeTest checks that the trainer's passes run in these modes.
 */
class AttentionConfigTest {
    private static GrpoConfig config(String dq, String kernels) {
        GrpoConfig c = new GrpoConfig();
        c.attentionDq = dq;
        c.attentionKernels = kernels;
        return c;
    }

    @Test
    void theDefaultsAreTheBackendsDeterministicMmaKernels() {
        GrpoConfig c = new GrpoConfig();
        assertEquals("pass", c.attentionDq);
        assertEquals("mma", c.attentionKernels);
        assertEquals(CudaBackend.AttentionDq.PASS, RankState.attentionDq(c));
        assertEquals(CudaBackend.AttentionDq.FIXED, RankState.attentionDq(config("fixed", "mma")));
        assertEquals(CudaBackend.AttentionDq.ATOMIC, RankState.attentionDq(config("atomic", "mma")));
    }

    @Test
    void propertiesThatDisagreeWithTheConfigGetANoteNamingTheKey() {
        GrpoConfig c = config("pass", "mma");
        assertEquals(List.of(), RankState.attentionNotes(c, null, null, null), "no properties: nothing to say");
        assertEquals(List.of(), RankState.attentionNotes(c, "PASS", "true", "false"), "properties that agree (any case)");
        List<String> notes = RankState.attentionNotes(c, "fixed", null, "true");
        assertEquals(2, notes.size(), notes.toString());
        assertTrue(notes.get(0).startsWith("-Dgrpo4j.attentionDq=fixed is not what this run uses")
                && notes.get(0).contains("attention_dq (pass; --set attention_dq=fixed"), notes.get(0));
        assertTrue(notes.get(1).startsWith("-Dgrpo4j.attentionWgmma=true is not what this run uses")
                && notes.get(1).contains("attention_kernels (mma; --set attention_kernels=wgmma"), notes.get(1));
        List<String> fast = RankState.attentionNotes(c, null, "false", null);
        assertEquals(1, fast.size(), fast.toString());
        assertTrue(fast.get(0).startsWith("-Dgrpo4j.deterministicAttention=false") && fast.get(0).contains("--set attention_dq=atomic"), fast.get(0));
        assertEquals(List.of(), RankState.attentionNotes(config("atomic", "wgmma"), null, "false", "true"), "the config asks for the same");
    }
}
