package org.grpo4j.internal.dist;

import static org.junit.jupiter.api.Assertions.*;

import org.grpo4j.internal.backend.CudaBackend;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.Tensor;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * NCCL's formation of a communicator that a rank never joins, in a class of its own: the path relies on a real NCCL's
 * non-blocking ncclCommAbort interrupting a bootstrap that waits for the missing rank, which only the emulated NCCL
 * has run; if it does not return, tools/gpu-check's class timeout costs this test alone, not NcclCommunicatorTest's
 * world-1 collectives and ZeRO-2 step (a review of 2026-12-03).
 */
@Tag("gpu")
class NcclFormationTimeoutTest {
    /**
     * A communicator of two ranks that only rank 0 joins (rank 1's process died before NCCL) stops at nccl_timeout_s
     * (2 s here) with a message that says so, instead of waiting inside NCCL for ever: the communicator is non-blocking,
     * so its formation is polled and aborted. Needs one device only (rank 1 never comes).
     */
    @Test
    void aCommunicatorARankNeverJoinsStopsAtTheTimeout() {
        CudaBackend be = NcclCommunicatorTest.cuda();
        long t0 = System.nanoTime();
        CommunicatorException e = assertThrows(CommunicatorException.class, () -> NcclCommunicator.create(NcclCommunicator.newUniqueId(), 2, 0, be, 2).close());
        double s = (System.nanoTime() - t0) / 1e9;
        System.out.println("rank 1 never joins (" + String.format("%.1f", s) + " s): " + e.getMessage());
        assertTrue(e.getMessage().contains("did not form within 2 s (nccl_timeout_s)") && e.getMessage().contains("rank 0 of 2"), e.getMessage());
        assertTrue(s >= 2 && s < 30, "stopped after " + s + " s");
        // the device is still usable: a communicator of one rank forms and works
        try (NcclCommunicator c = NcclCommunicatorTest.worldOne(be); Tensor t = be.zeros(DType.FP32, 4)) {
            c.allReduce(t, ReduceOp.SUM).await();
            be.synchronize();
        }
    }
}
