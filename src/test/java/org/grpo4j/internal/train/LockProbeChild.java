package org.grpo4j.internal.train;

import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

/** A child process for {@link RunDirectoryLockTest}: prints whether another process can take a lock file now. */
public final class LockProbeChild {
    public static void main(String[] args) throws Exception {
        try (FileChannel ch = FileChannel.open(Path.of(args[0]), StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            FileLock l = ch.tryLock();
            System.out.println(l == null ? "REFUSED" : "LOCKED");
        }
    }
}
