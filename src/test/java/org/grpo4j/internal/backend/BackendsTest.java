package org.grpo4j.internal.backend;

import static org.junit.jupiter.api.Assertions.*;

import java.util.List;
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
        // the CPU implements every op of the contract, so requiring them all never fails on "cpu"
        try (Backend be = Backends.choose("cpu", Ops.ALL).backend()) {
            assertEquals("cpu", be.name());
        }
        // ops that no backend implements: an explicit backend is an error naming them before any work starts
        List<String> one = List.of(Ops.ADD, "noSuchOp");
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> Backends.choose("cpu", one));
        assertEquals("cpu does not implement [noSuchOp] yet; use --backend cpu (or backend \"auto\")", e.getMessage());

        // "auto" falls back to the CPU and names, in its reason, the backend it first took and the missing ops
        String first;
        try (Backend be = Backends.choose("auto", List.of(), false).backend()) {
            first = be.name();
        }
        Backends.Choice c = Backends.choose("auto", one, false);
        try (Backend be = c.backend()) {
            assertEquals("cpu", be.name());
            assertEquals(first + " does not implement 1 of the needed ops yet (noSuchOp); using cpu", c.reason());
        }
        // more than four missing: the first four, then "..."
        List<String> six = List.of("op1", Ops.ADD, "op2", "op3", "op4", "op5", "op6");
        c = Backends.choose("auto", six, false);
        try (Backend be = c.backend()) {
            assertEquals("cpu", be.name());
            assertEquals(first + " does not implement 6 of the needed ops yet (op1, op2, op3, op4, ...); using cpu", c.reason());
        }

        if (CudaRuntime.probe().available()) {
            IllegalStateException g = assertThrows(IllegalStateException.class, () -> Backends.choose("cuda", one));
            assertEquals("cuda:0 does not implement [noSuchOp] yet; use --backend cpu (or backend \"auto\")", g.getMessage());
            // what auto takes for the whole contract implements all of it (the CUDA backend when cuBLAS loads, else the CPU)
            try (Backend be = Backends.choose("auto", Ops.ALL, false).backend()) {
                assertTrue(be.implementedOps().containsAll(Ops.ALL), be.name() + " lacks some of " + Ops.ALL);
            }
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
