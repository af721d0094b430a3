package org.grpo4j.internal.cli;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.CharacterCodingException;
import java.nio.file.AccessDeniedException;
import java.nio.file.DirectoryNotEmptyException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.FileSystemException;
import java.nio.file.NoSuchFileException;
import java.nio.file.NotDirectoryException;
import org.grpo4j.internal.backend.CudaException;
import org.grpo4j.train.TrainingAbortedException;

/** Turns a failure into the one line a user reads: what and where, never a Java class name for expected failures. */
final class Errors {
    private Errors() {}

    static String describe(Throwable t) {
        if (t instanceof UncheckedIOException && t.getCause() != null) return describe(t.getCause());
        if (t instanceof NoSuchFileException e)
            return e.getFile() + ": not found" + (e.getReason() == null ? "" : " (" + e.getReason() + ")");
        if (t instanceof FileSystemException e) {
            String what = e.getReason() != null ? e.getReason()
                    : e instanceof AccessDeniedException ? "permission denied"
                    : e instanceof FileAlreadyExistsException ? "already exists"
                    : e instanceof NotDirectoryException ? "not a directory"
                    : e instanceof DirectoryNotEmptyException ? "directory not empty" : "file system error";
            if (e instanceof AccessDeniedException && e.getReason() != null) what = "permission denied (" + e.getReason() + ")";
            return (e.getFile() == null ? "" : e.getFile() + (e.getOtherFile() == null ? "" : " -> " + e.getOtherFile()) + ": ") + what;
        }
        if (t instanceof CharacterCodingException) return "a file is not valid UTF-8 text";
        if (t instanceof org.grpo4j.internal.train.EarlierRunException e) return e.cliMessage(); // (--resume, not GrpoTrainer.resume)
        if (t instanceof OutOfMemoryError)
            return "out of memory (Java heap limit " + (Runtime.getRuntime().maxMemory() >> 20) + " MiB): raise it with -Xmx"
                    + " (GRPO4J_JAVA_OPTS for tools/grpo4j) or ask for less (kv_cache_mib, --kv-blocks, batch sizes)";
        if (t instanceof StackOverflowError) return "internal error: stack overflow";
        if (t instanceof CudaException e && (e.getMessage().contains("cudaErrorMemoryAllocation") || e.getMessage().contains("CUBLAS_STATUS_ALLOC_FAILED")))
            // the estimate before the run missed (or another process took the memory)
            return Main.firstLine(e.getMessage()) + "; the device is out of memory: ask for less (train: fewer samples in flight, i.e."
                    + " per_device_train_batch_size, local_rollout_forward_batch_size, local_rollout_batch_size x number_samples_per_prompt; a smaller"
                    + " kv_cache_fraction or kv_cache_mib; gradient_checkpointing true; generate: fewer --kv-blocks or -n) or use more GPUs";
        String m = Main.firstLine(t.getMessage());
        if (isInternal(t)) return "internal error: " + t.getClass().getSimpleName() + (m.isEmpty() ? "" : ": " + m);
        if (m.isEmpty() && t.getCause() != null && t.getCause() != t) return describe(t.getCause());
        return m.isEmpty() ? "I/O error" : m;
    }

    /** Failures caused by what the user gave (exit code 2). */
    static boolean isBadInput(Throwable t) {
        if (t instanceof TrainingAbortedException || t instanceof CudaException || t instanceof org.grpo4j.internal.dist.CommunicatorException) return false;
        if (storageFailed(t)) return false; // a full disk mid-run is the work failing (exit 1), not what the user gave
        // a refusal names what was wrong; one with no message and no cause is a bug (an immutable list changed, a
        // bare IllegalStateException), not something the user gave
        if (t instanceof RuntimeException && (t.getMessage() == null || t.getMessage().isBlank()) && t.getCause() == null) return false;
        return t instanceof IllegalArgumentException || t instanceof IllegalStateException || t instanceof IOException
                || t instanceof UncheckedIOException || t instanceof UnsupportedOperationException;
    }

    /** What the operating system says when the storage itself fails, whatever file the work was writing. */
    private static final java.util.List<String> STORAGE_FAILURES = java.util.List.of("No space left on device", "Disk quota exceeded",
            "Input/output error", "Read-only file system", "Stale file handle");

    /**
     * An I/O failure of the storage (full, over quota, remounted read-only, failing) rather than of a path the user
     * named: the message of the exception or of one of its causes says so.
     */
    static boolean storageFailed(Throwable t) {
        int depth = 0;
        for (Throwable c = t; c != null && depth < 16; c = c.getCause(), depth++) {
            if (!(c instanceof IOException || c instanceof UncheckedIOException)) continue;
            String m = c.getMessage();
            if (m != null) for (String f : STORAGE_FAILURES) if (m.contains(f)) return true;
        }
        return false;
    }

    /** Failures that mean a bug in grpo4j (anything not anticipated). */
    static boolean isInternal(Throwable t) {
        return !(isBadInput(t) || storageFailed(t) || t instanceof TrainingAbortedException || t instanceof CudaException || t instanceof OutOfMemoryError
                || t instanceof org.grpo4j.internal.dist.CommunicatorException); // a peer died, hung or aborted the run
    }
}
