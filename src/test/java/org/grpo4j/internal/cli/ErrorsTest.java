package org.grpo4j.internal.cli;

import static org.junit.jupiter.api.Assertions.*;

import org.grpo4j.internal.backend.CudaException;
import org.junit.jupiter.api.Test;

/** The one line a user reads for a device failure, and the exit code it gets. */
class ErrorsTest {
    @Test
    void aDeviceOutOfMemorySaysWhatToAskForLessOf() {
        CudaException oom = new CudaException("cudaMallocAsync(1073741824 bytes; 312 MiB free of 81559 MiB on cuda:0 (H100))", 2, "cudaErrorMemoryAllocation",
                "out of memory");
        String s = Errors.describe(oom);
        assertTrue(s.startsWith("cudaMallocAsync(1073741824 bytes; 312 MiB free"), s);
        assertTrue(s.contains("the device is out of memory: ask for less") && s.contains("kv_cache_fraction") && s.contains("gradient_checkpointing true")
                && s.contains("--kv-blocks") && s.contains("more GPUs"), s);
        assertFalse(Errors.isBadInput(oom));
        assertFalse(Errors.isInternal(oom));
        // the same with where it happened (the trainer's step), and cuBLAS's allocation failure
        assertTrue(Errors.describe(oom.at("training step 3", "")).startsWith("training step 3: cudaMallocAsync("));
        assertTrue(Errors.describe(new CudaException("cublasLtMatmul", 3, "CUBLAS_STATUS_ALLOC_FAILED", "resource allocation failed")).contains("ask for less"));
        // other device errors pass through as they are
        CudaException illegal = new CudaException("cudaStreamSynchronize", 700, "cudaErrorIllegalAddress", "an illegal memory access was encountered");
        assertEquals("cudaStreamSynchronize failed: an illegal memory access was encountered (cudaErrorIllegalAddress, error 700)", Errors.describe(illegal));
    }

    @Test
    void aFullDiskIsTheWorkFailingNotBadInput() {
        // the shapes the JDK throws: FileOutputStream/FileChannel.write (a plain IOException), Files.* (a
        // FileSystemException with the reason), and the trainer's wrapping of either
        java.io.IOException write = new java.io.IOException("No space left on device");
        java.nio.file.FileSystemException mkdir = new java.nio.file.FileSystemException("runs/a/step_3.tmp", null, "Disk quota exceeded");
        java.io.IOException wrapped = new java.io.IOException("runs/a/metrics.jsonl: cannot append", write);
        java.io.UncheckedIOException unchecked = new java.io.UncheckedIOException(new java.nio.file.FileSystemException("runs/a/x", null, "Read-only file system"));
        for (Throwable t : new Throwable[] {write, mkdir, wrapped, unchecked}) {
            assertFalse(Errors.isBadInput(t), t.toString());
            assertFalse(Errors.isInternal(t), t.toString());
        }
        assertEquals("runs/a/step_3.tmp: Disk quota exceeded", Errors.describe(mkdir));
        // a path the user named that does not work stays bad input
        assertTrue(Errors.isBadInput(new java.nio.file.NoSuchFileException("configs/missing.yaml")));
        assertTrue(Errors.isBadInput(new java.nio.file.AccessDeniedException("runs/locked")));
        assertTrue(Errors.isBadInput(new java.io.IOException("data.jsonl line 3: not JSON")));
    }

    /** An exception that names nothing (an immutable list changed, a bare IllegalStateException) is a bug, not bad input. */
    @Test
    void aRefusalWithoutAMessageIsABug() {
        for (RuntimeException e : new RuntimeException[] {new UnsupportedOperationException(), new IllegalStateException(), new IllegalArgumentException(" ")}) {
            assertFalse(Errors.isBadInput(e), e.toString());
            assertTrue(Errors.isInternal(e), e.toString());
            assertTrue(Errors.describe(e).startsWith("internal error: " + e.getClass().getSimpleName()), Errors.describe(e));
        }
        assertTrue(Errors.isBadInput(new IllegalStateException("model m is closed")));
        assertTrue(Errors.isBadInput(new IllegalStateException(null, new java.io.IOException("x: not found"))), "a cause that says what");
    }
}
