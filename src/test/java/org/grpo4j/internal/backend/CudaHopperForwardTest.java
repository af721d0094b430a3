package org.grpo4j.internal.backend;

import static org.junit.jupiter.api.Assertions.*;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * The Hopper forwards with a producer warpgroup (CudaBackend.setHopperForward TMA, TMA_PING_PONG and their persistent
 * forms: fwd_tma_kernel's TMA loads, mbarriers, setmaxnreg and named barriers, docs/kernels.md "The forward with a
 * producer warpgroup") give
 * the wgmma forward's bits: out and lse, and the backward's dq, dk and dv from them, at both fast head dims, on lengths
 * around the 64-row warpgroups and 128-row tiles (a sequence's last tile past its end, a warpgroup past it, 1129 tokens
 * in all: the tensor's end inside the last box). Where the device is not Hopper the settings change nothing.
 *
 * <p>A class of its own (tag gpu): tools/gpu-check runs each class in its own JVM under a time limit, and these
 * kernels are the first of ours to wait on mbarriers, whose misuse on a GPU hangs rather than fails; a hang here then
 * costs no other class's results.
 */
@Tag("gpu")
class CudaHopperForwardTest {
    @Test
    void theTmaForwardsGiveTheWgmmaForwardsBits() {
        CudaBackend be = TestBackends.cuda();
        org.junit.jupiter.api.Assumptions.assumeTrue(be.hasWgmmaAttention(), "not a Hopper device: the settings change nothing");
        int[] cu = AttentionConformanceTest.Suite.cu(1, 65, 127, 129, 0, 200, 607);
        boolean was = be.wgmmaAttention();
        CudaBackend.HopperForward wasForward = be.hopperForward();
        CudaBackend.AttentionDq wasDq = be.attentionDq();
        String[] names = {"out", "dq", "dk", "dv"};
        List<String> fails = new ArrayList<>();
        try {
            be.setWgmmaAttention(true);
            be.setAttentionDq(CudaBackend.AttentionDq.PASS);  // (dq bitwise repeatable)
            // (32 heads at both head dims: 384 work items, about three for each persistent block of a 132-SM device)
            for (int[] h : new int[][] {{32, 8, 128}, {32, 8, 64}}) {
                be.setHopperForward(CudaBackend.HopperForward.WGMMA);
                Object[] want = CudaAttentionTest.run(be, cu, h[0], h[1], h[2], 23);
                int[] heads = {h[0], h[0], h[1], h[1]};
                for (CudaBackend.HopperForward f : CudaBackend.HopperForward.values()) {
                    if (f == CudaBackend.HopperForward.WGMMA) continue;
                    be.setHopperForward(f);
                    Object[] got = CudaAttentionTest.run(be, cu, h[0], h[1], h[2], 23);
                    String where = f + " " + Arrays.toString(h);
                    for (int i = 0; i < 4; i++)
                        if (!CudaAttentionTest.bitwiseEqual((short[]) want[i], (short[]) got[i])) {
                            String r = CudaAttentionTest.nearBf16Report((short[]) want[i], (short[]) got[i], heads[i], h[2]);
                            fails.add(names[i] + " is not the wgmma forward's, " + where + ": "
                                    + (r == null ? "within bf16 rounding, other bits" : r));
                        }
                    if (!Arrays.equals((float[]) want[4], (float[]) got[4])) fails.add("lse is not the wgmma forward's, " + where);
                }
            }
        } finally {
            be.setWgmmaAttention(was);
            be.setHopperForward(wasForward);
            be.setAttentionDq(wasDq);
        }
        assertTrue(fails.isEmpty(), fails.size() + " comparisons failed:\n" + String.join("\n", fails));
    }
}
