package org.grpo4j.internal.train;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.util.SplittableRandom;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.CpuBackend;
import org.grpo4j.internal.backend.CudaBackend;
import org.grpo4j.internal.backend.CudaRuntime;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.TestBackends;
import org.grpo4j.internal.dist.Communicator;
import org.grpo4j.internal.dist.LocalCommunicator;
import org.grpo4j.internal.dist.NcclCommunicator;
import org.grpo4j.internal.model.LlamaConfig;
import org.grpo4j.internal.model.LlamaWeights;
import org.grpo4j.internal.model.ShardLayout;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * One ZeRO-2 optimizer step of the tiny model on the GPU through {@link NcclCommunicator} (world 1: the hosts' NCCL
 * refuses two ranks on one GPU), against the same step on the CPU through {@link LocalCommunicator}: the gradient
 * norm goes through NCCL's all-gather, AdamW runs on the slice and the master weights are gathered through NCCL. The
 * adamW kernel is bit-identical to the CPU's (DeviceMathTest) and max_grad_norm is above the norm (the GPU's squared
 * sums add in another order), so the weights agree bit for bit.
 */
@Tag("gpu")
class ShardedAdamWNcclTest {
    static final LlamaConfig C = LlamaConfig.tiny(300, 1, 2);

    static float[][] step(Backend be, Communicator comm, DType dt, float[] grad) {
        try (LlamaWeights init = LlamaWeights.init(be, C, 3)) {
            ShardLayout lay = new ShardLayout(init.layout().totalElements(), 1, 1 << 16);
            try (LlamaWeights compute = LlamaWeights.zeros(be, C, dt, lay.padded()); LlamaWeights g = LlamaWeights.zeros(be, C);
                 ShardedAdamW opt = new ShardedAdamW(be, comm, lay, compute, g, 0.9, 0.999, 1e-8, 0.01)) {
                compute.copyFrom(init);
                opt.setMaster(init);
                for (int t = 0; t < 2; t++) {
                    opt.startStep();
                    opt.startMicroBatch();
                    be.copyFromHost(g.flat(), grad);
                    opt.gradientsReady(0);
                    opt.endMicroBatch();
                    ShardedAdamW.Norm n = opt.gradNorm(true);
                    assertTrue(n.finite());
                    opt.step(n.norm(), 1e9, 1e-3);
                }
                float[] w = dt == DType.FP32 ? compute.flat().toFloats() : ShardedAdamWTest.bf16(compute.flat().toBf16Bits());
                return new float[][] {opt.gatherMaster(), w};
            }
        }
    }

    @Test
    void aZeroTwoStepThroughNcclMatchesTheCpu() {
        CudaBackend be = TestBackends.cuda();
        assumeTrue(CudaRuntime.libraries().stream().anyMatch(l -> l.name().equals("NCCL") && l.loads()), "skipped: NCCL does not load here");
        int n = (int) new org.grpo4j.internal.model.ParameterLayout(C).totalElements();
        float[] grad = new float[n];
        SplittableRandom r = new SplittableRandom(4);
        for (int i = 0; i < n; i++) grad[i] = (float) (r.nextGaussian() * 1e-3);
        for (DType dt : new DType[] {DType.FP32, DType.BF16}) {
            float[][] cpu, gpu;
            try (CpuBackend c = new CpuBackend(); LocalCommunicator lc = LocalCommunicator.group(1, 10_000).get(0)) {
                cpu = step(c, lc, dt, grad);
            }
            try (NcclCommunicator nc = NcclCommunicator.create(NcclCommunicator.newUniqueId(), 1, 0, be, 60)) {
                gpu = step(be, nc, dt, grad);
            }
            assertArrayEquals(cpu[0], gpu[0], 0f, dt.label() + ": fp32 master weights after two steps");
            assertArrayEquals(cpu[1], gpu[1], 0f, dt.label() + ": compute weights after two steps");
        }
    }
}
