package org.grpo4j.util;

import java.io.IOException;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Comparator;

/**
 * Directories that appear whole or not at all: the content is written into a temporary sibling
 * (".NAME.tmp-...") that is then renamed to NAME. A reader never sees a half-written directory; on failure the
 * temporary directory is removed and the target is untouched.
 */
public final class AtomicDir {
    private AtomicDir() {}

    /** Fills a directory. */
    @FunctionalInterface
    public interface Filler {
        void fill(Path dir) throws IOException;
    }

    /** Creates {@code target} (which must not exist) with the content {@code filler} writes. */
    public static void write(Path target, Filler filler) throws IOException {
        Path abs = target.toAbsolutePath();
        Files.createDirectories(abs.getParent());
        Path tmp = Files.createTempDirectory(abs.getParent(), "." + abs.getFileName() + ".tmp-");
        try {
            filler.fill(tmp);
            try {
                Files.move(tmp, abs, StandardCopyOption.ATOMIC_MOVE);
            } catch (AtomicMoveNotSupportedException e) {
                Files.move(tmp, abs);
            }
        } catch (IOException | RuntimeException e) {
            deleteTree(tmp);
            throw e;
        }
    }

    /** Best-effort recursive delete (temporary directories). */
    public static void deleteTree(Path p) {
        if (!Files.exists(p)) return;
        try (var s = Files.walk(p)) {
            s.sorted(Comparator.reverseOrder()).forEach(q -> q.toFile().delete());
        } catch (IOException ignored) {
            // best effort
        }
    }
}
