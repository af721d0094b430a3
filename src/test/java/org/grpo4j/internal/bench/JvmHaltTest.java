package org.grpo4j.internal.bench;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.grpo4j.internal.backend.CudaRuntime;
import org.junit.jupiter.api.Test;

/**
 * JvmHalt in a child JVM that has loaded the JNI library (it loads without a driver: libcudart alone): the process ends
 * with the status asked, through the library's {@code _exit} (no "no immediate exit" fallback line), its output
 * flushed first. Where the library was not built (-Dgrpo4j.noCuda) the test is skipped: JvmHalt then halts the JVM.
 */
class JvmHaltTest {

    /** The child: loads the library, prints, halts with args[0]. */
    public static void main(String[] args) {
        CudaRuntime.probe();
        System.out.print("loaded=" + CudaRuntime.libraryLoaded() + " before the halt");
        JvmHalt.halt(Integer.parseInt(args[0]), "JvmHaltTest");
        System.out.print(" (not reached)");
    }

    @Test
    void aHaltEndsTheProcessWithItsStatusThroughTheLibrary() throws Exception {
        assumeTrue(CudaRuntime.libraryBuilt(), "the JNI library was not built (-Dgrpo4j.noCuda)");
        String java = ProcessHandle.current().info().command().orElse("java");
        Process p = new ProcessBuilder(List.of(java, "-cp", System.getProperty("java.class.path"), JvmHaltTest.class.getName(), "3"))
                .redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.waitFor(1, TimeUnit.MINUTES), out);
        assertEquals(3, p.exitValue(), out);
        assumeTrue(out.contains("loaded=true"), "the library did not load here: " + out);
        assertTrue(out.contains("before the halt") && !out.contains("not reached"), out);
        assertFalse(out.contains("no immediate exit"), "the library's exit, not the JVM's halt: " + out);
    }
}
