package org.grpo4j.tools;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.grpo4j.internal.backend.CudaRuntime;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** tools/gpu-check's driver on a machine without a GPU: discovery, one child JVM per class, the summary it writes. */
class GpuCheckTest {

    @Test
    void discoversTheGpuTestClasses() {
        List<String> classes = GpuCheck.gpuTestClasses(null);
        assertTrue(classes.contains("org.grpo4j.internal.backend.CudaBackendTest"), classes.toString());
        assertTrue(classes.stream().anyMatch(c -> c.endsWith("MatmulConformanceTest")), classes.toString());
        assertFalse(classes.contains("org.grpo4j.tools.GpuCheckTest"), "a class without gpu tests is not a family");
    }

    @Test
    void runsAFamilyInItsOwnJvmAndWritesTheSummary(@TempDir Path dir) throws Exception {
        org.junit.jupiter.api.Assumptions.assumeFalse(CudaRuntime.probe().available(), "skipped: a GPU is present (the real run is tools/gpu-check)");
        List<String> cmd = new ArrayList<>(GpuCheck.javaCommand());
        cmd.addAll(List.of(GpuCheck.class.getName(), "--only", "CudaBackendTest", "--no-bench", "--out", dir.toString()));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        assertTrue(p.waitFor(120, TimeUnit.SECONDS));
        assertEquals(0, p.exitValue(), out);
        String md = Files.readString(dir.resolve("gpu-check.md"));
        assertTrue(md.contains("| CudaBackendTest | 0 | 0 | 6 | skipped: no CUDA device"), md);
        assertTrue(md.contains("kernel benchmark: skipped (no CUDA device)"), md);
        assertTrue(Files.exists(dir.resolve("CudaBackendTest.result")));
    }
}
