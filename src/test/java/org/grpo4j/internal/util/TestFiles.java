package org.grpo4j.internal.util;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.Stream;

/** File helpers of the tests. */
public final class TestFiles {
    private TestFiles() {}

    /** Copies the directory tree {@code from} to {@code to} (which must not hold any of its files yet). */
    public static void copyTree(Path from, Path to) throws IOException {
        try (Stream<Path> s = Files.walk(from)) {
            for (Path p : s.toList()) {
                Path q = to.resolve(from.relativize(p).toString());
                if (Files.isDirectory(p)) Files.createDirectories(q);
                else Files.copy(p, q);
            }
        }
    }

    /** Every path under {@code root} (relative, sorted) with each regular file's size and modification time. */
    public static java.util.List<String> listTree(Path root) throws IOException {
        try (Stream<Path> s = Files.walk(root)) {
            java.util.List<String> out = new java.util.ArrayList<>();
            for (Path p : s.sorted().toList())
                out.add(root.relativize(p) + (Files.isRegularFile(p) ? " " + Files.size(p) + " " + Files.getLastModifiedTime(p).toMillis() : ""));
            return out;
        }
    }
}
