package org.grpo4j.tools;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * tools/grpo4j's build step, with a fake mvn and java on PATH in a copy of the wrapper (no real build): two wrappers
 * started at once over a stale jar run one build between them (tools/launch on several nodes of a shared checkout
 * ran one Maven build per node into one target/), and a lock that cannot be taken does not stop the command.
 */
class GrpoWrapperScriptTest {

    /** A checkout holding only what the wrapper looks at, and a bin/ with a fake mvn (2 s, logged) and java. */
    private static Path fakeCheckout(Path tmp) throws Exception {
        Path root = Files.createDirectories(tmp.resolve("root"));
        Files.createDirectories(root.resolve("tools"));
        Files.copy(Path.of("tools/grpo4j"), root.resolve("tools/grpo4j"));
        Files.createDirectories(root.resolve("java"));
        Files.writeString(root.resolve("pom.xml"), "<project/>\n");
        Files.writeString(root.resolve("java/A.java"), "class A {}\n");
        Path bin = Files.createDirectories(tmp.resolve("bin"));
        script(bin.resolve("mvn"), "#!/bin/bash\necho \"start $$\" >> \"" + tmp.resolve("mvn.log") + "\"\nsleep 2\n"
                + "mkdir -p target/lib && touch target/grpo4j-0.jar\necho \"end $$\" >> \"" + tmp.resolve("mvn.log") + "\"\n");
        script(bin.resolve("java"), "#!/bin/bash\necho java-ran\n");
        return root;
    }

    private static void script(Path p, String text) throws Exception {
        Files.writeString(p, text);
        Files.setPosixFilePermissions(p, PosixFilePermissions.fromString("rwxr-xr-x"));
    }

    private static Process start(Path root, Path bin) throws Exception {
        ProcessBuilder pb = new ProcessBuilder("bash", root.resolve("tools/grpo4j").toString(), "version").redirectErrorStream(true);
        pb.environment().put("PATH", bin + ":" + System.getenv("PATH"));
        pb.environment().remove("CLASSPATH");
        return pb.start();
    }

    private static String finish(Process p) throws Exception {
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.waitFor(1, TimeUnit.MINUTES), out);
        assertEquals(0, p.exitValue(), out);
        return out;
    }

    @Test
    void twoWrappersAtOnceRunOneBuildAndBothRun(@TempDir Path tmp) throws Exception {
        assumeTrue(new ProcessBuilder("bash", "-c", "command -v flock").start().waitFor() == 0, "no flock here");
        Path root = fakeCheckout(tmp), bin = tmp.resolve("bin");
        Process a = start(root, bin), b = start(root, bin);
        String outA = finish(a), outB = finish(b);
        assertTrue(outA.contains("java-ran") && outB.contains("java-ran"), outA + outB);
        List<String> log = Files.readAllLines(tmp.resolve("mvn.log"));
        assertEquals(1, log.stream().filter(l -> l.startsWith("start")).count(), "one build: " + log);
    }

    @Test
    void aLockThatCannotBeTakenDoesNotStopTheCommand(@TempDir Path tmp) throws Exception {
        Path root = fakeCheckout(tmp);
        Files.createDirectories(root.resolve("target/.grpo4j-build.lock")); // (a directory: the lock file cannot be opened)
        String out = finish(start(root, tmp.resolve("bin")));
        assertTrue(out.contains("building with Maven") && out.contains("java-ran"), out);
        out = finish(start(root, tmp.resolve("bin"))); // up to date now: no lock needed at all
        assertTrue(out.contains("java-ran") && !out.contains("building"), out);
    }
}
