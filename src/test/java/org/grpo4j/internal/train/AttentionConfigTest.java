package org.grpo4j.internal.train;

import static org.junit.jupiter.api.Assertions.*;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.grpo4j.internal.backend.CudaBackend;
import org.grpo4j.train.GrpoConfig;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * attention_dq and attention_kernels (docs/trainer.md, "Randomness and exact resume"): the backend's modes they name,
 * the notes a CUDA run prints when its backend was set to something else, and checkpoints written before the keys. On a GPU (or the
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
    void theBackendSetToAnotherAttentionThanTheConfigsGetsANoteNamingTheKey() {
        GrpoConfig c = config("pass", "mma");
        assertEquals(List.of(), RankState.attentionNotes(c, CudaBackend.AttentionDq.PASS, false), "the backend's defaults: nothing to say");
        assertEquals(List.of(), RankState.attentionNotes(config("fixed", "wgmma"), CudaBackend.AttentionDq.PASS, false),
                "the config asks for more than the backend's defaults: the config is the run's choice");
        List<String> notes = RankState.attentionNotes(c, CudaBackend.AttentionDq.FIXED, true);
        assertEquals(2, notes.size(), notes.toString());
        assertTrue(notes.get(0).startsWith("the CUDA backend was set to attention dQ mode fixed")
                && notes.get(0).contains("attention_dq (pass; --set attention_dq=fixed for that mode, on a resume with --allow-changes)"), notes.get(0));
        assertTrue(notes.get(1).startsWith("the CUDA backend was set to the Hopper attention kernels")
                && notes.get(1).contains("attention_kernels (mma; --set attention_kernels=wgmma for those"), notes.get(1));
        assertEquals(List.of(), RankState.attentionNotes(config("atomic", "wgmma"), CudaBackend.AttentionDq.ATOMIC, true), "the config asks for the same");
        assertEquals(1, RankState.attentionNotes(config("fixed", "mma"), CudaBackend.AttentionDq.ATOMIC, false).size());
    }

    /**
     * A checkpoint written before these keys ran what the backend's JVM properties chose (the documentation asked a run
     * and its resumes to keep them): its resume takes them from this JVM's properties; a checkpoint with the keys keeps
     * its values whatever the properties say.
     */
    @Test
    void aCheckpointWithoutTheKeysResumesWithThePropertiesItRanWith(@TempDir Path tmp) throws Exception {
        String[] props = {"grpo4j.attentionDq", "grpo4j.deterministicAttention", "grpo4j.attentionWgmma"};
        String[] before = new String[props.length];
        for (int i = 0; i < props.length; i++) before[i] = System.getProperty(props[i]);
        try {
            for (String p : props) System.clearProperty(p);
            ObjectNode json = (ObjectNode) new ObjectMapper().readTree(GrpoTrainerTest.config(GrpoTrainerTest.small(tmp.resolve("run"), 1)).toJson());
            json.put("attention_dq", "atomic");
            json.put("attention_kernels", "wgmma");
            Path with = Files.createDirectories(tmp.resolve("with"));
            Files.writeString(with.resolve("config.json"), json.toString());
            json.remove("attention_dq");
            json.remove("attention_kernels");
            Path without = Files.createDirectories(tmp.resolve("without"));
            Files.writeString(without.resolve("config.json"), json.toString());
            GrpoConfig old = Checkpoints.savedConfig(without);
            assertEquals(List.of("pass", "mma"), List.of(old.attentionDq, old.attentionKernels), "no properties: what the backend ran by default");
            List<String> note = Checkpoints.attentionFromProperties(without, old);
            assertEquals(1, note.size(), "a resume of a checkpoint without the keys says what it runs");
            assertTrue(note.get(0).contains("written before attention_dq and attention_kernels existed: this resume runs attention_dq pass,"
                    + " attention_kernels mma"), note.get(0));
            System.setProperty("grpo4j.attentionDq", "Fixed");
            System.setProperty("grpo4j.attentionWgmma", "true");
            old = Checkpoints.savedConfig(without);
            assertEquals(List.of("fixed", "wgmma"), List.of(old.attentionDq, old.attentionKernels), "the properties the run was told to keep");
            System.clearProperty("grpo4j.attentionDq");
            System.setProperty("grpo4j.deterministicAttention", "false");
            assertEquals("atomic", Checkpoints.savedConfig(without).attentionDq);
            GrpoConfig saved = Checkpoints.savedConfig(with);
            assertEquals(List.of("atomic", "wgmma"), List.of(saved.attentionDq, saved.attentionKernels), "recorded: kept");
            assertEquals(List.of(), Checkpoints.attentionFromProperties(with, saved), "recorded: nothing to say");
            System.setProperty("grpo4j.attentionDq", "pass");
            System.setProperty("grpo4j.attentionWgmma", "false");
            saved = Checkpoints.savedConfig(with);
            assertEquals(List.of("atomic", "wgmma"), List.of(saved.attentionDq, saved.attentionKernels), "recorded: the properties do not matter");
        } finally {
            for (int i = 0; i < props.length; i++) {
                if (before[i] == null) System.clearProperty(props[i]);
                else System.setProperty(props[i], before[i]);
            }
        }
    }
}
