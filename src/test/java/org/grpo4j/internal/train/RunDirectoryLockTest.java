package org.grpo4j.internal.train;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A run directory's lock against runs of the same JVM (an embedding application starting two trainers): the second
 * is refused, and the refusal must not drop the first run's OS lock (a POSIX record lock is the process's, and
 * closing any descriptor of the file releases it), which another process then could take.
 */
class RunDirectoryLockTest {

    /** What another process gets when it tries the lock file now: "LOCKED" or "REFUSED". */
    private static String otherProcessTries(Path lockFile) throws Exception {
        Process p = new ProcessBuilder(Path.of(System.getProperty("java.home"), "bin", "java").toString(), "-cp", System.getProperty("java.class.path"),
                LockProbeChild.class.getName(), lockFile.toString()).redirectErrorStream(true).start();
        assertTrue(p.waitFor(2, TimeUnit.MINUTES), "the probe ends");
        return new String(p.getInputStream().readAllBytes()).trim();
    }

    /**
     * A run that has not written its first checkpoint: looked at while it runs (eval --model RUN), it is said to be in
     * progress, not to have stopped (whose advice, start it again with --overwrite, would destroy the live run); the
     * look keeps the run's lock; once the run is gone, the advice for a stopped run.
     */
    @Test
    void aRunBeforeItsFirstCheckpointIsInProgressWhileItHoldsItsLock(@TempDir Path tmp) throws Exception {
        Path dir = tmp.resolve("run"), lock = dir.resolve(RunDirectory.LOCK);
        try (RunDirectory held = RunDirectory.lock(dir)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Checkpoints.latestCheckpoint(dir));
            assertTrue(e.getMessage().contains("the run is in progress and has not written its first checkpoint yet"), e.getMessage());
            assertEquals("REFUSED", otherProcessTries(lock), "the look left the run its lock");
        }
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Checkpoints.latestCheckpoint(dir));
        assertTrue(e.getMessage().endsWith("the run stopped before its first checkpoint: start it again with --overwrite"), e.getMessage());
    }

    @Test
    void aSecondRunInTheSameJvmIsRefusedAndTheFirstKeepsItsLock(@TempDir Path tmp) throws Exception {
        Path dir = tmp.resolve("run"), lock = dir.resolve(RunDirectory.LOCK);
        try (RunDirectory first = RunDirectory.lock(dir)) {
            String pid = "pid " + ProcessHandle.current().pid();
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> RunDirectory.lock(dir));
            assertTrue(e.getMessage().startsWith(dir + ": in use by another grpo4j run (" + pid + ", started "), e.getMessage());
            // the same directory by another name
            Path other = tmp.resolve("./run/../run");
            assertThrows(IllegalStateException.class, () -> RunDirectory.lock(other));
            // a resume's dry run: refused the same way
            e = assertThrows(IllegalStateException.class, () -> RunDirectory.checkResumable(dir));
            assertTrue(e.getMessage().contains("in use by another grpo4j run (" + pid), e.getMessage());
            assertEquals("REFUSED", otherProcessTries(lock), "after three refusals the first run still holds its lock");
        }
        assertEquals("LOCKED", otherProcessTries(lock), "closed, the lock is free");
        RunDirectory.checkResumable(dir); // free again: the dry run passes and writes nothing
        assertEquals(List.of(RunDirectory.LOCK), Files.list(dir).map(p -> p.getFileName().toString()).toList());
        try (RunDirectory again = RunDirectory.lock(dir)) {
            assertEquals("REFUSED", otherProcessTries(lock));
        }
    }

    @Test
    void aResumesDryRunRefusesADirectoryItCannotWriteTo(@TempDir Path tmp) throws Exception {
        Path dir = Files.createDirectories(tmp.resolve("run"));
        Files.writeString(dir.resolve("checkpoints"), "not a directory"); // skipped: only existing directories are probed
        RunDirectory.checkResumable(dir);
        // /proc/self is a directory in which nothing can be made (root included)
        Path proc = Path.of("/proc/self");
        if (Files.isDirectory(proc)) {
            java.io.IOException e = assertThrows(java.io.IOException.class, () -> RunDirectory.checkResumable(proc));
            assertTrue(e.getMessage().startsWith("/proc/self: the resumed run cannot write here: "), e.getMessage());
        }
    }
}
