package org.grpo4j.internal.backend;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import org.junit.jupiter.api.Test;

/** Runs everywhere: the JNI library (when built) loads, and a machine without a GPU reports why, cleanly. */
class CudaRuntimeTest {

    static boolean libraryBuilt() {
        return CudaRuntime.class.getClassLoader().getResource(CudaRuntime.LIBRARY_RESOURCE) != null;
    }

    @Test
    void nativeLibraryLoadsWhenBuilt() {
        assumeTrue(libraryBuilt(), "skipped: the CUDA backend was not built (no nvcc at build time)");
        CudaRuntime.Availability a = CudaRuntime.probe();
        assertTrue(a.libraryLoaded(), () -> "JNI library did not load: " + a.reason());
        assertNotNull(CudaRuntime.runtimeVersion());
        assertTrue(CudaRuntime.runtimeVersion().startsWith("13."), CudaRuntime.runtimeVersion());
    }

    @Test
    void noDeviceIsReportedCleanly() {
        CudaRuntime.Availability a = CudaRuntime.probe();
        assumeTrue(!a.available(), "skipped: a CUDA device is present");
        assertEquals(0, a.deviceCount());
        assertTrue(CudaRuntime.devices().isEmpty());
        assertFalse(a.reason().isBlank());
        assertEquals(1, a.reason().lines().count(), "one line: " + a.reason());
        for (CudaRuntime.LibraryStatus l : CudaRuntime.libraries()) {
            assertNotNull(l.detail());
            assertEquals(1, l.detail().lines().count(), l.name() + ": " + l.detail());
        }
    }

    /** A device older than Ampere makes CUDA unavailable (backend auto falls back with this reason), naming it. */
    @Test
    void devicesBelowComputeCapabilityEightAreRefusedByName() {
        CudaRuntime.Device h100 = new CudaRuntime.Device(0, "NVIDIA H100 80GB HBM3", 85L << 30, 132, 9, 0), a10 = new CudaRuntime.Device(1, "NVIDIA A10", 24L << 30, 72, 8, 6),
                t4 = new CudaRuntime.Device(1, "Tesla T4", 16L << 30, 40, 7, 5);
        assertNull(CudaRuntime.tooOld(java.util.List.of(h100, a10)));
        assertEquals("cuda:1 (Tesla T4) has compute capability 7.5; grpo4j's kernels need 8.0 or newer (Ampere, Ada, Hopper, Blackwell);"
                + " CUDA_VISIBLE_DEVICES can leave it out", CudaRuntime.tooOld(java.util.List.of(h100, t4)));
        assertTrue(CudaRuntime.tooOld(java.util.List.of(t4)).endsWith("(Ampere, Ada, Hopper, Blackwell)"));
    }

    @Test
    void linkErrorsBecomeOneLine() {
        UnsatisfiedLinkError e = new UnsatisfiedLinkError("/tmp/x/libjnicudart.so: libcuda.so.1: cannot open shared object file: No such file or directory");
        assertEquals("libcuda.so.1 not found (no NVIDIA driver)", CudaRuntime.describeLinkError(e));
        e = new UnsatisfiedLinkError("/tmp/x/libjniCudaNative.so: libcudart.so.13: cannot open shared object file: No such file or directory");
        assertTrue(CudaRuntime.describeLinkError(e).startsWith("libcudart.so.13 not found"));
    }

    @Test
    void cudaErrorsNameTheCall() {
        assumeTrue(libraryBuilt() && CudaRuntime.probe().libraryLoaded(), "skipped: JNI library not loaded");
        CudaException e = assertThrows(CudaException.class, () -> CudaRuntime.check(2, "cudaMalloc(8 bytes)"));
        assertTrue(e.getMessage().startsWith("cudaMalloc(8 bytes) failed: "), e.getMessage());
        assertTrue(e.getMessage().contains("cudaErrorMemoryAllocation"), e.getMessage());
    }

    /**
     * The driver's release comes from the NVRM line of /proc/driver/nvidia/version, in the proprietary and the open
     * kernel module's formats (texts as those modules write them), not from the GCC line below it.
     */
    @Test
    void theDriverReleaseIsReadFromTheKernelModulesVersionLine() {
        assertEquals("580.95.05", CudaRuntime.parseDriverRelease(
                "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.95.05  Tue Sep 30 12:10:11 UTC 2025\n"
                        + "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14+deb12u1)\n"));
        assertEquals("580.65.06", CudaRuntime.parseDriverRelease(
                "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build  "
                        + "(dvs-builder@U16-I3-B03-4-3)  Sun Jul 27 07:09:29 UTC 2025\nGCC version:  gcc version 13.3.0\n"));
        assertEquals("470.57", CudaRuntime.parseDriverRelease("NVRM version: NVIDIA UNIX x86_64 Kernel Module  470.57  Tue Jul 13 2021\n"));
        assertNull(CudaRuntime.parseDriverRelease("GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"));
        assertNull(CudaRuntime.parseDriverRelease(""));
        // where the file is absent (this machine has no NVIDIA module) the label falls back, never throws
        String label = CudaRuntime.driverLabel();
        assertFalse(label.isBlank());
        if (CudaRuntime.driverRelease() == null && CudaRuntime.driverVersion() == null) assertEquals("unknown", label);
    }
}
