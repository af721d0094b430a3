package org.grpo4j.internal.cli;

import java.io.PrintStream;
import java.util.List;
import java.util.concurrent.Callable;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.Backends;
import org.grpo4j.internal.backend.CpuBackend;
import org.grpo4j.internal.backend.CudaBackend;
import org.grpo4j.internal.backend.CudaRuntime;
import org.grpo4j.internal.backend.Ops;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code grpo4j info}: Java, backend choice, CUDA versions, devices, and whether cuBLAS/cuBLASLt/NCCL load. */
@Command(name = "info", mixinStandardHelpOptions = true,
        description = "Print the Java version, the chosen backend, CUDA driver/runtime versions, devices and libraries.")
final class InfoCommand implements Callable<Integer> {

    @Option(names = "--backend", defaultValue = "auto", description = "auto, cpu, cuda or cuda:N (default: ${DEFAULT-VALUE})")
    String backend;

    @Option(names = "--ops", description = "List, per backend, which ops are implemented.")
    boolean ops;

    @Option(names = "--model", description = "Model directory (config.json), or a run or checkpoint (its model): parameter count and memory per rank.")
    java.nio.file.Path model;

    @Option(names = "--world", description = "Ranks for --model's ZeRO-2 memory estimate (default: 1).")
    Integer worldOption;
    private int world;

    @Option(names = "--precision", defaultValue = "bf16", description = "Compute precision of the estimate: bf16 or fp32 (default: ${DEFAULT-VALUE}).")
    String precision;

    @Option(names = "--reference-sharding", defaultValue = "auto",
            description = "How the estimate holds the reference: auto, layers or none (the config key reference_sharding; default: ${DEFAULT-VALUE}).")
    String referenceSharding;

    @Override
    public Integer call() throws java.io.IOException {
        world = worldOption == null ? 1 : worldOption;
        if (world < 1) throw new IllegalArgumentException("--world must be >= 1, got " + world);
        if (worldOption != null && model == null)
            throw new IllegalArgumentException("--world " + world + " sizes --model's memory estimate: give --model DIR too (a model directory, or a config.json's)");
        if (!List.of("auto", "layers", "none").contains(referenceSharding))
            throw new IllegalArgumentException("--reference-sharding must be auto, layers or none, got " + referenceSharding);
        if (!precision.equals("bf16") && !precision.equals("fp32")) throw new IllegalArgumentException("--precision must be bf16 or fp32, got " + precision);
        if (model != null && model.toString().isBlank()) throw new IllegalArgumentException("--model is empty");
        if (model != null) model = ModelSource.modelDirOf(model); // (a run or a checkpoint: its model, as generate, eval and export take them)
        org.grpo4j.internal.model.LlamaConfig cfg = model == null ? null : org.grpo4j.internal.model.LlamaConfig.read(model); // before printing anything
        PrintStream out = System.out;
        out.printf("java      %s (%s, %s)%n", System.getProperty("java.version"), System.getProperty("java.vm.name"),
                System.getProperty("java.home"));
        Backends.Choice choice = Backends.choose(backend);
        try (Backend be = choice.backend()) {
            out.printf("backend   %s%s%n", be.description(), choice.reason() == null ? "" : "  [" + choice.reason() + "]");
            String rt = CudaRuntime.runtimeVersion(), drv = CudaRuntime.driverVersion();
            out.printf("cuda      runtime %s, driver %s%n", rt == null ? "not loaded" : rt,
                    drv == null ? "none" : CudaRuntime.driverLabel());
            CudaRuntime.Availability a = CudaRuntime.probe();
            List<CudaRuntime.Device> devs = CudaRuntime.devices();
            if (devs.isEmpty()) out.printf("devices   none (%s)%n", a.reason());
            for (CudaRuntime.Device d : devs)
                out.printf("device %d  %s, %.1f GiB, %d SMs, compute capability %s%n", d.index(), d.name(),
                        d.totalMemory() / (double) (1L << 30), d.smCount(), d.computeCapability());
            for (CudaRuntime.LibraryStatus l : CudaRuntime.libraries())
                out.printf("%-9s %s%n", l.name(), (l.loads() ? "loads: " : "does not load: ") + l.detail());
            if (ops) printOps(out, be);
            if (cfg != null) printModel(out, cfg);
        }
        return 0;
    }

    private void printModel(PrintStream out, org.grpo4j.internal.model.LlamaConfig cfg) {
        org.grpo4j.internal.backend.DType dt = precision.equals("fp32") ? org.grpo4j.internal.backend.DType.FP32 : org.grpo4j.internal.backend.DType.BF16;
        var est = new org.grpo4j.internal.model.MemoryEstimate(cfg, world, dt, new org.grpo4j.train.GrpoConfig().reduceBucketSize,
                org.grpo4j.internal.model.MemoryEstimate.shardsReference(referenceSharding, cfg, world));
        long p = est.parameters();
        out.println();
        out.printf("model     %s: %d layers, hidden %d, heads %d/%d x %d, ffn %d, vocab %d%s%n", model, cfg.numLayers(), cfg.hiddenSize(),
                cfg.numHeads(), cfg.numKvHeads(), cfg.headDim(), cfg.intermediateSize(), cfg.vocabSize(), cfg.tieWordEmbeddings() ? ", tied head" : "");
        out.printf("params    %,d (%s in bf16, %s in fp32)%n", p, org.grpo4j.internal.model.MemoryEstimate.human(2.0 * p), org.grpo4j.internal.model.MemoryEstimate.human(4.0 * p));
        out.printf("per rank, precision %s, ZeRO-2 over %d rank%s (reduce_bucket_size %,d; grpo4j's allocations):%n", precision, world, world == 1 ? "" : "s",
                est.bucketElements());
        for (var l : est.perRank()) if (!l.update()) out.printf("  %-52s %12s%n", l.what(), org.grpo4j.internal.model.MemoryEstimate.human(l.bytes()));
        out.printf("  %-52s %12s%n", "model states (+ activations and KV cache)", org.grpo4j.internal.model.MemoryEstimate.human(est.statesBytes()));
        for (var l : est.perRank()) if (l.update()) out.printf("  %-52s %12s%n", l.what(), org.grpo4j.internal.model.MemoryEstimate.human(l.bytes()));
        out.printf("  %-52s %12s%n", "update phases only (+ a training pass's activations)", org.grpo4j.internal.model.MemoryEstimate.human(est.updateBytes()));
        out.printf("  %-52s %12s%n", "ZeRO-2 formula 2P + 2P + 12P/N (no reference, bf16 grads)", org.grpo4j.internal.model.MemoryEstimate.human(est.zeroFormulaBytes()));
        long a0 = est.activationElementsPerToken(false), a1 = est.activationElementsPerToken(true);
        int b = dt.bytes();
        out.printf("activations per token: %s without checkpointing, %s with (%s)%n", org.grpo4j.internal.model.MemoryEstimate.human((double) b * a0),
                org.grpo4j.internal.model.MemoryEstimate.human((double) b * a1), precision);
        out.printf("KV cache per token: %s (%s)%n", org.grpo4j.internal.model.MemoryEstimate.human(est.kvBytesPerToken()), precision);
        String big = org.grpo4j.internal.train.Preflight.tooLarge(p, world, false);
        if (big != null) out.println("note: " + big);
        else if (p > org.grpo4j.internal.model.LlamaWeights.MAX_ELEMENTS) out.println("note: over 2^31 parameters: trains on GPUs (the CPU backend refuses it)");
    }

    private static void printOps(PrintStream out, Backend chosen) {
        out.println();
        out.println("ops (x = implemented)");
        Backend cpu = chosen instanceof CpuBackend ? chosen : new CpuBackend(1);
        Backend cuda = chosen instanceof CudaBackend ? chosen : null;
        // without a device: what the build holds, "(x)"; a build without nvcc holds no kernel. matmul is cuBLASLt's,
        // not a kernel of ours: on CUDA it needs the cuBLAS libraries at run time
        boolean built = cuda != null || CudaRuntime.libraryBuilt();
        out.printf("  %-24s %-5s %s%n", "op", "cpu", cuda != null ? "cuda"
                : built ? "cuda (not usable here: " + CudaRuntime.probe().reason() + "; (x) = in this build)"
                : "cuda (not built: no nvcc when this jar was built)");
        for (String op : Ops.ALL) {
            String c = cuda != null ? (cuda.implementsOp(op) ? "x" : "-")
                    : built && (Ops.CUDA_KERNELS.contains(op) || op.equals(Ops.MATMUL)) ? "(x)" : "-";
            if (op.equals(Ops.MATMUL) && built) c += " cuBLASLt" + (CudaRuntime.cublasLoads() ? "" : " (its library does not load here)");
            out.printf("  %-24s %-5s %s%n", op, cpu.implementsOp(op) ? "x" : "-", c);
        }
        if (cpu != chosen) cpu.close();
    }
}
