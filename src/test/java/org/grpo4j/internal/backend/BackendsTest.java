package org.grpo4j.internal.backend;

import static org.junit.jupiter.api.Assertions.*;

import org.junit.jupiter.api.Test;

class BackendsTest {

    @Test
    void cpuOpensByName() {
        try (Backend be = Backends.open("cpu")) {
            assertEquals("cpu", be.name());
            assertTrue(be.implementedOps().containsAll(Ops.ALL));
        }
    }

    @Test
    void autoFallsBackToCpuWithAReasonWhenNoGpu() {
        CudaRuntime.Availability a = CudaRuntime.probe();
        Backends.Choice c = Backends.choose("auto");
        try (Backend be = c.backend()) {
            if (a.available()) {
                assertEquals("cuda:0", be.name());
                assertNull(c.reason());
            } else {
                assertEquals("cpu", be.name());
                assertTrue(c.reason().startsWith("cuda unavailable: "), c.reason());
                assertTrue(c.reason().endsWith("; using cpu"), c.reason());
                assertFalse(c.reason().contains("Exception"), c.reason());
            }
        }
    }

    @Test
    void explicitCudaWithoutGpuIsAClearError() {
        CudaRuntime.Availability a = CudaRuntime.probe();
        if (a.available()) {
            assertThrows(IllegalArgumentException.class, () -> Backends.open("cuda:" + a.deviceCount()));
        } else {
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> Backends.open("cuda"));
            assertTrue(e.getMessage().startsWith("cuda unavailable: "), e.getMessage());
        }
    }

    @Test
    void workNeedingMissingOpsFallsBackOrFailsClearly() {
        // the CPU implements everything, so requiring every op never fails on "cpu"
        try (Backend be = Backends.choose("cpu", Ops.ALL).backend()) {
            assertEquals("cpu", be.name());
        }
        Backends.Choice c = Backends.choose("auto", Ops.ALL);
        try (Backend be = c.backend()) {
            assertEquals(be.implementedOps().containsAll(Ops.ALL), true, "auto never returns a backend lacking a required op");
        }
        if (CudaRuntime.probe().available() && !Ops.CUDA_KERNELS.containsAll(Ops.ALL)) {
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> Backends.choose("cuda", Ops.ALL));
            assertTrue(e.getMessage().contains("does not implement"), e.getMessage());
        }
    }

    @Test
    void badSpecsAreRejected() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Backends.open("tpu"));
        assertTrue(e.getMessage().contains("\"tpu\""), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> Backends.open("cuda:x"));
    }

    /** The Hopper forward's names (-Dgrpo4j.attentionHopperForward) round-trip; an unknown one names the valid ones. */
    @Test
    void hopperForwardNames() {
        for (CudaBackend.HopperForward f : CudaBackend.HopperForward.values())
            assertSame(f, CudaBackend.HopperForward.parse(f.label(), "x"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> CudaBackend.HopperForward.parse("tma-pingpong", "-Dgrpo4j.attentionHopperForward"));
        assertEquals("-Dgrpo4j.attentionHopperForward: unknown Hopper forward \"tma-pingpong\" (valid: wgmma, tma, tma-ping-pong, tma-persistent, tma-ping-pong-persistent)",
                e.getMessage());
    }
}
