package org.grpo4j.internal.util;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.ThreadLocalRandom;
import java.util.stream.Stream;

/**
 * Directories that appear whole or not at all: the content is written into a temporary sibling
 * (".NAME.tmp-...") that is then renamed to NAME. A reader never sees a half-written directory; on failure the
 * temporary directory is removed and the target is untouched.
 *
 * <p>Before the rename every file and directory in it is fsynced, and after it the parent directory, so that after a
 * power loss the directory is either absent or complete (a rename alone can reach the disk before the data). The
 * temporary directory is created like any other (permissions from the umask), so a finished directory is as readable
 * as the user's other outputs; a leftover from a killed process is removed by its owner's next start.
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
        Path abs = absolute(target); // (not "dir/.", which no rename can take)
        Path tmp;
        try {
            Files.createDirectories(abs.getParent());
            tmp = createTemporarySibling(abs, true);
        } catch (IOException e) {
            throw cannotCreate(target, e);
        }
        try {
            filler.fill(tmp);
            syncTree(tmp);
            if (Files.exists(abs, java.nio.file.LinkOption.NOFOLLOW_LINKS)) // (a rename onto it would name the temporary)
                throw new WriteFailed(target + ": cannot write: it already exists", null);
            try {
                Files.move(tmp, abs, StandardCopyOption.ATOMIC_MOVE);
            } catch (AtomicMoveNotSupportedException e) {
                Files.move(tmp, abs);
            }
            syncDirectory(abs.getParent());
        } catch (WriteFailed e) { // an inner AtomicDir already named its target
            deleteTree(tmp);
            throw e;
        } catch (IOException e) {
            deleteTree(tmp);
            throw new WriteFailed(target + ": cannot write: " + reason(e), e);
        } catch (RuntimeException e) {
            deleteTree(tmp);
            throw e;
        }
    }

    /** A write that failed; the message names the target directory and the reason. */
    private static final class WriteFailed extends IOException {
        WriteFailed(String message, IOException cause) { super(message, cause); }
    }

    /**
     * The failure to create {@code target} (or the hidden temporary beside it that becomes it) as the user reads it:
     * naming the target, not the temporary, and the reason ("/proc/x: cannot write: no such file or directory in
     * /proc", where /proc takes no new files).
     */
    public static IOException cannotCreate(Path target, IOException e) {
        if (e instanceof WriteFailed) return e;
        Path parent = target.toAbsolutePath().getParent();
        return new WriteFailed(target + ": cannot write: " + creationFailure(e) + (parent == null ? "" : " in " + parent), e);
    }

    /**
     * Why creating a file or directory failed, without the path (the caller names what it meant to create):
     * "permission denied", "no such file or directory" (also a pseudo file system such as /proc), the file system's
     * reason ("Read-only file system"), or the message.
     */
    public static String creationFailure(IOException e) {
        return e instanceof java.nio.file.AccessDeniedException ? "permission denied"
                : e instanceof java.nio.file.NoSuchFileException ? "no such file or directory"
                : e instanceof java.nio.file.FileSystemException f && f.getReason() != null ? f.getReason()
                : e.getMessage() == null ? "I/O error" : e.getMessage();
    }

    /**
     * An empty hidden temporary file beside {@code target} (".NAME.tmp-...", its directory created), for a file
     * written whole and then renamed over {@code target}; a failure names {@code target} ({@link #cannotCreate}).
     */
    public static Path temporaryFileFor(Path target) throws IOException {
        Path abs = target.toAbsolutePath();
        try {
            Files.createDirectories(abs.getParent());
            return createTemporarySibling(abs, false);
        } catch (IOException e) {
            throw cannotCreate(target, e);
        }
    }

    /**
     * A new hidden ".NAME.tmp-RANDOM" directory or empty file beside {@code abs}, with the umask's permissions as the
     * other outputs (unlike Files.createTempDirectory's 0700).
     */
    private static Path createTemporarySibling(Path abs, boolean directory) throws IOException {
        for (int attempt = 0; ; attempt++) {
            Path tmp = abs.resolveSibling("." + abs.getFileName() + ".tmp-" + Long.toUnsignedString(ThreadLocalRandom.current().nextLong(), 36));
            try {
                return directory ? Files.createDirectory(tmp) : Files.createFile(tmp);
            } catch (FileAlreadyExistsException e) {
                if (attempt > 100) throw e;
            }
        }
    }

    /** fsync of every regular file and directory under {@code root} (children before parents). */
    static void syncTree(Path root) throws IOException {
        List<Path> all;
        try (Stream<Path> s = Files.walk(root)) {
            all = s.sorted(Comparator.reverseOrder()).toList();
        }
        for (Path p : all) {
            if (Files.isRegularFile(p)) {
                syncFile(p);
            } else if (Files.isDirectory(p)) {
                syncDirectory(p);
            }
        }
    }

    /**
     * {@code p} made absolute without its trailing "." components ("new/." names new, and a rename onto "new/." fails).
     * Nothing else is normalized: a ".." after a link is the OS's to resolve, through the link.
     */
    public static Path absolute(Path p) {
        Path a = p.toAbsolutePath();
        while (a.getParent() != null && a.getFileName().toString().equals(".")) a = a.getParent();
        return a;
    }

    /**
     * Moves the complete file {@code tmp} (a {@link #temporaryFileFor} sibling) to {@code target}: replacing what is
     * there when {@code replace}, otherwise only where nothing is, so that a file made meanwhile (by another command, a
     * run) is kept. The directory is synced after.
     *
     * @throws java.nio.file.FileAlreadyExistsException when {@code target} exists and {@code replace} is false ({@code
     *         tmp} is left for the caller to delete)
     */
    public static void moveIntoPlace(Path tmp, Path target, boolean replace) throws IOException {
        Path abs = target.toAbsolutePath();
        if (replace) Files.move(tmp, abs, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        else {
            try {
                Files.createLink(abs, tmp); // (fails if anything is there: no check-then-move race)
                Files.delete(tmp);
            } catch (java.nio.file.FileAlreadyExistsException e) {
                throw e;
            } catch (UnsupportedOperationException | java.nio.file.FileSystemException e) { // no hard links here: a plain move
                Files.move(tmp, abs);
            }
        }
        syncDirectory(abs.getParent());
    }

    /**
     * fsync of a regular file, opened read-only: that is enough for fsync, and a file copied from a write-protected
     * source keeps its 0444 mode.
     */
    public static void syncFile(Path file) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            ch.force(true);
        }
    }

    /** fsync of a directory (its entries); a no-op where the platform cannot open directories. */
    public static void syncDirectory(Path dir) {
        try (FileChannel ch = FileChannel.open(dir, StandardOpenOption.READ)) {
            ch.force(true);
        } catch (IOException e) {
            // not supported on every OS/file system; the data files themselves are synced
        }
    }

    /** Writes a file through a temporary sibling that is synced and renamed over it: readers see old or new. */
    public static void writeFile(Path file, String content) throws IOException {
        Path tmp = file.resolveSibling(file.getFileName() + ".tmp");
        try (java.nio.channels.FileChannel ch = java.nio.channels.FileChannel.open(tmp, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                StandardOpenOption.TRUNCATE_EXISTING)) {
            java.nio.ByteBuffer buf = java.nio.ByteBuffer.wrap(content.getBytes(java.nio.charset.StandardCharsets.UTF_8));
            while (buf.hasRemaining()) ch.write(buf);
            ch.force(true);
        } catch (IOException e) {
            Files.deleteIfExists(tmp);
            throw new IOException(file + ": cannot write: " + describe(e), e);
        }
        Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }

    /** The reason of an I/O failure without the Java class name ("No space left on device"). */
    public static String describe(IOException e) {
        if (e instanceof java.nio.file.FileSystemException f && f.getReason() != null) return f.getReason();
        return e.getMessage() == null ? "I/O error" : e.getMessage();
    }

    private static String reason(IOException e) {
        if (e instanceof java.nio.file.FileSystemException f && f.getReason() != null)
            return (f.getFile() == null ? "" : f.getFile() + ": ") + f.getReason();
        return e.getMessage() == null ? "I/O error" : e.getMessage();
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
