package org.grpo4j.internal.bench;

import static org.junit.jupiter.api.Assertions.*;

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Proxy;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.BiConsumer;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.CpuBackend;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.Ops;
import org.grpo4j.internal.backend.Tensor;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The harness on the CPU: the CPU backend stands in for the device (fp32 activations: on this branch the contract's
 * bf16 variants may not be accepted yet), a host wall-clock timer stands in for CUDA events, and a proxy around the
 * CPU backend plays a device with a wrong kernel, a missing op, or an op that throws.
 */
class KernelBenchTest {
    /** Every family at toy sizes (heads 4/2 of 8, vocab 64), so that a whole run takes well under a second. */
    static final BenchSizes TINY = new BenchSizes("tiny", 16, 32, 48, 64, 4, 2, 8,
            List.of(new int[] {16, 32, 48}, new int[] {8, 16, 24}), 32, 4096, 4096, 4096, List.of(new int[] {2, 16}),
            4, 24, 4, 4, 8);

    static final KernelBench.Card CARD = new KernelBench.Card("test card", "test driver", "test runtime");

    static CpuBackend cpu, ref;

    @BeforeAll
    static void open() {
        cpu = new CpuBackend(1);
        ref = new CpuBackend(1);
    }

    @AfterAll
    static void close() {
        cpu.close();
        ref.close();
    }

    /** Host wall-clock time per repetition (the CPU backend is synchronous). */
    static final Timer HOST = (op, warmup, reps) -> {
        for (int i = 0; i < warmup; i++) op.accept(i);
        double[] ms = new double[reps];
        for (int r = 0; r < reps; r++) {
            long t0 = System.nanoTime();
            op.accept(warmup + r);
            ms[r] = Math.max(1e-6, (System.nanoTime() - t0) / 1e6);
        }
        return ms;
    };

    static KernelBench.Config config(List<String> families) {
        return new KernelBench.Config(TINY, families, DType.FP32, 1, 3, 1 << 16, 1L << 28);
    }

    static BenchReport run(Backend device, List<String> families) {
        return KernelBench.run(config(families), device, ref, HOST, CARD, null);
    }

    /**
     * A device that forwards every call to the CPU backend except those {@code override} handles (by method name):
     * the override gets the delegate and the arguments and replaces the call.
     */
    static Backend proxy(Backend inner, Set<String> dropOps, Map<String, BiConsumer<Backend, Object[]>> override) {
        return (Backend) Proxy.newProxyInstance(Backend.class.getClassLoader(), new Class<?>[] {Backend.class}, (p, m, args) -> {
            String n = m.getName();
            if (n.equals("implementedOps")) {
                Set<String> ops = new LinkedHashSet<>(inner.implementedOps());
                ops.removeAll(dropOps);
                return ops;
            }
            if (n.equals("implementsOp")) return !dropOps.contains((String) args[0]) && inner.implementsOp((String) args[0]);
            if (n.equals("name")) return "fake-cuda:0";
            if (n.equals("close")) return null;
            if (override.containsKey(n)) {
                override.get(n).accept(inner, args);
                return null;
            }
            return invoke(m, inner, args);
        });
    }

    static Object invoke(Method m, Object target, Object[] args) throws Throwable {
        try {
            return m.invoke(target, args);
        } catch (InvocationTargetException e) {
            throw e.getCause();
        }
    }

    static BenchRow row(BenchReport r, String id) {
        return r.rows().stream().filter(x -> x.id().equals(id)).findFirst().orElseThrow(() -> new AssertionError("no row " + id));
    }

    @Test
    void everyFamilyIsCheckedAndTimedWithItsCeilings(@TempDir Path tmp) throws Exception {
        BenchReport r = run(cpu, KernelBench.families(List.of("all")));
        List<Cases.Case> plan = Cases.plan(TINY, DType.FP32, Cases.FAMILIES);
        assertEquals(plan.stream().map(Cases.Case::id).toList(), r.rows().stream().map(BenchRow::id).toList());
        for (BenchRow row : r.rows()) {
            assertEquals(BenchRow.OK, row.status(), row.id() + ": " + row.note());
            assertEquals(3, row.reps(), row.id());
            assertTrue(row.minMs() <= row.medianMs() && row.medianMs() <= row.maxMs(), row.id());
            // the rate of the median time, in TFLOP/s, GB/s or µs a call
            double want = switch (row.workUnit()) {
                case "flop" -> row.work() / (row.medianMs() / 1e3) / 1e12;
                case "byte" -> row.work() / (row.medianMs() / 1e3) / 1e9;
                case "call" -> row.medianMs() * 1e3;
                default -> throw new AssertionError(row.id() + ": work unit " + row.workUnit());
            };
            assertEquals(want, row.rate(), 1e-9 * want, row.id());
            // the CPU checked against itself: bit-identical (host cost has no check of its own; sampling's log-probs
            // are checked against float64)
            if (row.family().equals("sampling")) assertTrue(row.maxError() < 1e-5, row.id() + " " + row.maxError());
            else if (!row.name().startsWith("host cost")) assertEquals(0.0, row.maxError(), row.id());
        }
        BenchRow copy = row(r, "ceiling/copy fp32"), gemm = row(r, "ceiling/matmul fp32 32^3");
        assertEquals(copy.rate(), r.copyGbs());
        assertEquals(gemm.rate(), r.gemmTflops());
        BenchRow swiglu = row(r, "swiglu/swiglu fwd");
        assertEquals(100 * swiglu.rate() / r.copyGbs(), swiglu.ceilingPct(), 1e-9);
        BenchRow mm = row(r, "gemm/matmul 16x32x48");
        assertEquals(2.0 * 16 * 32 * 48, mm.work());
        assertEquals(100 * mm.rate() / r.gemmTflops(), mm.ceilingPct(), 1e-9);
        assertEquals("us/call", row(r, "gemm/host cost 8x16x24").rateUnit());
        assertNotNull(row(r, "lmhead/logprob fwd+bwd").extraBytes());
        assertFalse(r.anyFailed());
        // each byte row of a kernel carries a copy of its own bytes timed beside it; the ceilings and FLOP rows do not
        for (BenchRow row : r.rows()) {
            boolean bytes = row.workUnit().equals("byte") && !row.family().equals("ceiling") && row.work() < KernelBench.SIZE_COPY_MAX_BYTES;
            assertEquals(bytes, row.sizeCopyGbs() != null, row.id() + " size copy " + row.sizeCopyGbs());
            if (bytes) assertTrue(row.sizeCopyGbs() > 0 && Double.isFinite(row.sizeCopyGbs()), row.id());
        }
        assertTrue(Compare.pct(swiglu).matches("\\d+% \\(a copy of its bytes: \\d+%\\)"), Compare.pct(swiglu));
        assertEquals(String.format(java.util.Locale.ROOT, "%.0f%%", mm.ceilingPct()), Compare.pct(mm));

        // the JSON round trip keeps every field
        Path f = tmp.resolve("ours.json");
        r.write(f);
        BenchReport back = BenchReport.read(f);
        assertEquals(r.rows(), back.rows());
        assertEquals(r.card(), back.card());
        assertEquals(r.copyGbs(), back.copyGbs());
    }

    /** A copy of the row's own bytes is timed for rows under 1 GiB only (a larger one would double AdamW's memory). */
    @Test
    void onlyRowsUnderAGibibyteGetACopyOfTheirSize() {
        KernelBench.Config cfg = config(List.of("elementwise"));
        try (Data data = new Data(cpu, false, 42)) {
            // the declared work sets the copy's size; the timed body is a small copy either way
            for (double work : new double[] {8.0 * 1000, KernelBench.SIZE_COPY_MAX_BYTES, 32e9}) {
                Cases.Case c = new Cases.Case("elementwise", "copy probe", "[1000]", "fp32", List.of(), work, "byte", "8*n",
                        Cases.Kind.KERNEL, d -> Cases.copy(d, 1000), null, false);
                boolean small = work < KernelBench.SIZE_COPY_MAX_BYTES;
                BenchRow r = KernelBench.measure(c, cfg, cpu, ref, HOST, data, 1.0, null);
                assertEquals(BenchRow.OK, r.status(), r.note());
                assertEquals(small, r.sizeCopyGbs() != null, "work " + work + ": " + r.sizeCopyGbs());
            }
        }
    }

    /** The default run's bf16 activations, on the CPU (which implements the bf16 contract of issue 11). */
    @Test
    void everyFamilyRunsWithBf16Activations() {
        BenchReport r = KernelBench.run(new KernelBench.Config(TINY, Cases.FAMILIES, DType.BF16, 1, 3, 1 << 16, 1L << 28),
                cpu, ref, HOST, CARD, null);
        for (BenchRow row : r.rows()) assertEquals(BenchRow.OK, row.status(), row.id() + ": " + row.note());
        assertEquals("bf16", row(r, "swiglu/swiglu fwd").dtype());
        assertEquals(3.0 * 2 * 16 * 48, row(r, "swiglu/swiglu fwd").work());
    }

    /**
     * The Hopper variants ([wgmma...]: kernels no GPU has run yet) run after every other row, so that a hang there costs
     * no other row, while the report keeps the plan's order; the watch hears of each row before and after it, with the
     * rows so far.
     */
    @Test
    void untriedHopperRowsRunLastAndTheReportKeepsThePlansOrder() {
        KernelBench.Config cfg = config(List.of("attention", "decode"));
        List<String> started = new ArrayList<>();
        List<Integer> sizes = new ArrayList<>();
        BenchReport r = KernelBench.run(cfg, cpu, ref, HOST, CARD, null, new KernelBench.Watch() {
            @Override
            public void starting(String id, BenchRow ifHung, BenchReport soFar) {
                started.add(id);
                assertEquals(id, ifHung.id());
                assertEquals(BenchRow.ERROR, ifHung.status());
                assertEquals(started.size() - 1, soFar.rows().size(), "the rows before it");
            }

            @Override
            public void finished(BenchReport soFar) { sizes.add(soFar.rows().size()); }
        });
        List<String> plan = Cases.plan(cfg.sizes(), cfg.activations(), cfg.families()).stream().map(Cases.Case::id).toList();
        assertEquals(plan, r.rows().stream().map(BenchRow::id).toList(), "the report in the plan's order");
        int firstHopper = -1;
        for (int i = 0; i < started.size(); i++) if (started.get(i).contains("[wgmma") && firstHopper < 0) firstHopper = i;
        assertTrue(firstHopper > 0, "there are Hopper rows: " + started);
        for (int i = firstHopper; i < started.size(); i++) assertTrue(started.get(i).contains("[wgmma"), "run last: " + started);
        assertTrue(plan.indexOf(started.get(firstHopper)) < plan.indexOf(started.get(firstHopper - 1)), "not the plan's order");
        // the TMA forward's rows after every other Hopper row, of both shapes, each tier in the plan's order
        int firstTma = -1;
        for (int i = 0; i < started.size(); i++) if (started.get(i).contains("[wgmma, tma") && firstTma < 0) firstTma = i;
        assertTrue(firstTma > firstHopper, "there are TMA rows after plain wgmma rows: " + started);
        for (int i = firstTma; i < started.size(); i++) assertTrue(started.get(i).contains("[wgmma, tma"), "TMA rows last: " + started);
        assertTrue(started.subList(firstHopper, firstTma).stream().anyMatch(id -> id.contains("[wgmma, fixed dQ]")),
                "the fixed-dQ rows before the TMA rows: " + started);
        for (int i = 1; i < started.size(); i++)
            if (i != firstHopper && i != firstTma)
                assertTrue(plan.indexOf(started.get(i - 1)) < plan.indexOf(started.get(i)), "a tier out of the plan's order: " + started);
        assertEquals(plan.size(), started.size());
        for (int i = 0; i < sizes.size(); i++) assertEquals(i + 1, sizes.get(i));
    }

    @Test
    void rotationUsesEnoughBufferSetsToPassTheRotationBytes() {
        // the tiny add touches 3*4*512 = 6144 bytes: 64 KiB of rotation needs 11 sets
        BenchReport r = run(cpu, List.of("elementwise"));
        assertEquals("11 buffer sets rotated", row(r, "elementwise/add").note());
    }

    @Test
    void aWrongKernelIsFailedAndNeverTimed() {
        List<String> calls = new ArrayList<>();
        Map<String, BiConsumer<Backend, Object[]>> o = new HashMap<>();
        // swiglu 1% off
        o.put("swiglu", (be, a) -> {
            calls.add("swiglu");
            be.swiglu((Tensor) a[0], (Tensor) a[1], (Tensor) a[2]);
            be.scale((Tensor) a[0], 1.01f);
        });
        // adamW that forgets to update the parameters (the moments are updated)
        o.put("adamW", (be, a) -> {
            Tensor p = (Tensor) a[0];
            float[] keep = p.toFloats();
            be.adamW(p, (Tensor) a[1], (Tensor) a[2], (Tensor) a[3], (org.grpo4j.internal.backend.AdamWStep) a[4], (Tensor) a[5]);
            be.copyFromHost(p, keep);
        });
        // a sampler that returns the least likely token
        o.put("sample", (be, a) -> {
            be.sample((Tensor) a[0], (Tensor) a[1], (Tensor) a[2], (Tensor) a[3], (org.grpo4j.internal.backend.SamplingSpec) a[4]);
            Tensor logits = (Tensor) a[2];
            float[] z = logits.toFloats();
            int b = logits.dim(0), v = logits.dim(1);
            int[] worst = new int[b];
            for (int r = 0; r < b; r++)
                for (int i = 0; i < v; i++) if (z[r * v + i] < z[r * v + worst[r]]) worst[r] = i;
            be.copyFromHost((Tensor) a[0], worst);
        });
        BenchReport r = run(proxy(cpu, Set.of(), o), List.of("swiglu", "adamw", "sampling"));
        for (String id : List.of("swiglu/swiglu fwd", "swiglu/swiglu fwd+bwd", "adamw/adamw", "sampling/top-p 0.9", "sampling/plain")) {
            BenchRow row = row(r, id);
            assertEquals(BenchRow.FAILED, row.status(), id);
            assertNull(row.medianMs(), id);
            assertTrue(row.note().startsWith("check against the CPU failed: "), row.note());
        }
        assertTrue(row(r, "swiglu/swiglu fwd").maxError() > 0);
        assertTrue(row(r, "adamw/adamw").note().contains("param["), row(r, "adamw/adamw").note());
        assertTrue(row(r, "sampling/top-p 0.9").note().contains("outside the top-p"), row(r, "sampling/top-p 0.9").note());
        // the backward alone is right, so it is timed
        assertEquals(BenchRow.OK, row(r, "swiglu/swiglu bwd").status());
        // a FAILED kernel ran once per backend-side check and never in a timing loop
        assertEquals(2, calls.size(), calls.toString());
        assertTrue(r.anyFailed());
        Compare.Result t = Compare.table(r);
        assertTrue(t.failed());
        assertTrue(t.markdown().contains("**FAILED**"), t.markdown());
    }

    @Test
    void opsTheDeviceLacksGiveNotImplementedRows() {
        Backend dev = proxy(cpu, Set.of(Ops.ATTENTION, Ops.ATTENTION_BACKWARD, Ops.DECODE_ATTENTION, Ops.SAMPLE,
                Ops.TOKEN_LOGPROBS, Ops.TOKEN_LOGPROBS_BACKWARD, Ops.GRPO_LOSS), Map.of());
        BenchReport r = run(dev, List.of("rope", "attention", "decode", "sampling", "lmhead"));
        for (BenchRow row : r.rows()) {
            boolean later = Set.of("attention", "decode", "sampling", "lmhead").contains(row.family());
            assertEquals(later ? BenchRow.NOT_IMPLEMENTED : BenchRow.OK, row.status(), row.id());
            if (later) assertTrue(row.note().endsWith("not implemented on fake-cuda:0 yet"), row.note());
        }
        assertEquals("attention not implemented on fake-cuda:0 yet", row(r, "attention/fwd b2 s16").note());
        assertFalse(r.anyFailed());
        assertTrue(Compare.table(r).markdown().contains("not implemented on cuda yet"));
    }

    @Test
    void anOpThatThrowsGivesAnErrorRowAndTheRunGoesOn() {
        Map<String, BiConsumer<Backend, Object[]>> o = Map.of("kvAppend", (be, a) -> {
            throw new IllegalStateException("kvAppend kernel failed: an illegal memory access\nsecond line");
        });
        BenchReport r = run(proxy(cpu, Set.of(), o), List.of("kvcache", "reduce"));
        BenchRow kv = row(r, "kvcache/kvappend");
        assertEquals(BenchRow.ERROR, kv.status());
        assertEquals("IllegalStateException: kvAppend kernel failed: an illegal memory access", kv.note());
        assertEquals(BenchRow.OK, row(r, "reduce/sumsquares").status());
        assertTrue(r.anyFailed());
    }

    /**
     * A row whose error leaves the device unusable (a fault ends a CUDA context: every later call fails) stops the run
     * with the rows so far, that row last; a new run with them as its prior keeps them as they are and runs the others.
     */
    @Test
    void aLostDeviceStopsTheRunAndResumeRunsTheRest() {
        java.util.concurrent.atomic.AtomicBoolean lost = new java.util.concurrent.atomic.AtomicBoolean();
        Backend dev = (Backend) Proxy.newProxyInstance(Backend.class.getClassLoader(), new Class<?>[] {Backend.class}, (p, m, args) -> {
            String n = m.getName();
            if (n.equals("name")) return "fake-cuda:0";
            if (n.equals("close")) return null;
            if (!n.equals("implementedOps") && !n.equals("implementsOp")) {
                if (n.equals("kvAppend")) lost.set(true);
                if (lost.get()) throw new IllegalStateException(n + ": an illegal memory access was encountered");
            }
            return invoke(m, cpu, args);
        });
        List<String> fams = List.of("kvcache", "attention");  // (the plan's order: kvcache's rows first)
        KernelBench.DeviceLost e = assertThrows(KernelBench.DeviceLost.class, () -> run(dev, fams));
        BenchReport soFar = e.soFar();
        List<String> ids = soFar.rows().stream().map(BenchRow::id).toList();
        assertEquals("kvcache/kvappend", ids.get(ids.size() - 1), ids.toString());
        assertEquals(BenchRow.ERROR, row(soFar, "kvcache/kvappend").status());
        assertTrue(ids.stream().noneMatch(id -> id.startsWith("attention/")), "nothing after it ran: " + ids);
        assertTrue(ids.stream().anyMatch(id -> id.startsWith("ceiling/")) && soFar.copyGbs() != null, ids.toString());

        // (as grpo4j bench passes them on: written to --json, read back by --resume)
        try {
            Path f = java.nio.file.Files.createTempFile("bench-so-far", ".json");
            soFar.write(f, false);
            BenchReport back = BenchReport.read(f);
            java.nio.file.Files.delete(f);
            assertEquals(soFar.rows(), back.rows(), "the rows survive the JSON");
            assertEquals(soFar.copyGbs(), back.copyGbs());
            assertEquals(soFar.gemmTflops(), back.gemmTflops());
            soFar = back;
        } catch (java.io.IOException x) {
            throw new java.io.UncheckedIOException(x);
        }
        List<String> ran = new ArrayList<>();
        BenchReport r = KernelBench.run(config(fams), cpu, ref, HOST, CARD, x -> ran.add(x.id()), null, soFar);
        List<String> plan = Cases.plan(TINY, DType.FP32, fams).stream().map(Cases.Case::id).toList();
        assertEquals(plan, r.rows().stream().map(BenchRow::id).toList(), "every row, in the plan's order");
        for (BenchRow b : soFar.rows()) assertEquals(b, row(r, b.id()), "kept as it was: " + b.id());
        assertTrue(ran.stream().noneMatch(ids::contains), "none of them run again: " + ran);
        assertEquals(BenchRow.OK, row(r, "attention/fwd b2 s16").status());
        assertEquals(soFar.copyGbs(), r.copyGbs());
        assertTrue(KernelBench.usable(cpu));
        assertFalse(KernelBench.usable(dev));
        // rows of another dtype are refused (their names carry none)
        KernelBench.Config bf16 = new KernelBench.Config(TINY, fams, DType.BF16, 1, 3, 1 << 16, 1L << 28);
        BenchReport prior = soFar;
        var x = assertThrows(IllegalArgumentException.class, () -> KernelBench.run(bf16, cpu, ref, HOST, CARD, null, null, prior));
        assertTrue(x.getMessage().startsWith("--resume: ceiling/copy fp32 was measured at") || x.getMessage().contains("another --dtype"),
                x.getMessage());
    }

    /** A device error flag left pending by a failed row is read (and cleared) by the probe: not a lost device. */
    @Test
    void aPendingErrorFlagIsNotALostDevice() {
        int[] reads = {0};
        Backend dev = proxy(cpu, Set.of(), Map.of());
        Backend flagOnce = (Backend) Proxy.newProxyInstance(Backend.class.getClassLoader(), new Class<?>[] {Backend.class}, (p, m, args) -> {
            if (m.getName().equals("fill") && reads[0]++ == 0) throw new IllegalArgumentException("embedding: ids[3] = 99 is outside [0, 64)");
            return invoke(m, dev, args);
        });
        assertTrue(KernelBench.usable(flagOnce));
        assertEquals(2, reads[0], "tried once more");
    }

    @Test
    void familiesAndSizesAreValidatedWithTheValidList() {
        assertEquals(Cases.FAMILIES, KernelBench.families(List.of("all")));
        assertEquals(Cases.FAMILIES, KernelBench.families(List.of()));
        assertEquals(List.of("gemm", "norm", "lmhead"), KernelBench.families(List.of("lmhead,norm", "GEMM")));
        var e = assertThrows(IllegalArgumentException.class, () -> KernelBench.families(List.of("gemm,flash")));
        assertEquals("unknown --family \"flash\" (valid: gemm, norm, rope, swiglu, embedding, elementwise, adamw, reduce, "
                + "kvcache, attention, decode, sampling, lmhead, all)", e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> BenchSizes.named("llama-70b"));
        assertEquals("unknown --sizes \"llama-70b\" (valid: llama-3.1-8b, small)", e.getMessage());
        assertSame(BenchSizes.LLAMA_3_1_8B, BenchSizes.named("llama-3.1-8b"));
    }

    @Test
    void variantRowsAreTheSameProblemAndOnTheCpuTheSameBody() {
        Map<String, Cases.Case> byId = new HashMap<>();
        for (Cases.Case c : Cases.plan(BenchSizes.LLAMA_3_1_8B, DType.BF16, Cases.FAMILIES)) byId.put(c.id(), c);
        for (String id : List.of("attention/bwd b8 s2048 [fast dQ]", "attention/fwd+bwd b2 s8192 [fast dQ]",
                "attention/bwd b8 s2048 [fixed dQ]", "attention/fwd+bwd b2 s8192 [fixed dQ]", "attention/fwd b8 s2048 [wgmma]",
                "attention/bwd b8 s2048 [wgmma]", "attention/fwd+bwd b2 s8192 [wgmma]", "attention/fwd+bwd b8 s2048 [wgmma, fast dQ]",
                "attention/fwd+bwd b2 s8192 [wgmma, fixed dQ]", "attention/fwd b8 s2048 [wgmma, tma]",
                "attention/fwd b2 s8192 [wgmma, tma-ping-pong]", "attention/fwd+bwd b2 s8192 [wgmma, tma-ping-pong, fixed dQ]",
                "attention/fwd b8 s2048 [wgmma, tma-persistent]", "attention/fwd b2 s8192 [wgmma, tma-ping-pong-persistent]",
                "lmhead/logprob fwd+bwd [dz bf16]")) {
            Cases.Case v = byId.get(id), p = byId.get(Compare.problemId(id));
            assertNotNull(v, id);
            assertEquals(p.work(), v.work(), id);
            assertEquals(p.shape(), v.shape(), id);
            assertEquals(p.ops(), v.ops(), id);
        }
        Data d = new Data(cpu, true, 1);
        Instance in = new Instance(d).body(() -> { });
        assertSame(in, Cases.fastDq(in), "the CPU has one attention backward");
        assertSame(in, Cases.fixedDq(in), "the CPU has one attention backward");
        assertSame(in, Cases.wgmma(in), "the CPU has one set of attention kernels");
        assertSame(in, Cases.hopperForward(in, org.grpo4j.internal.backend.CudaBackend.HopperForward.TMA),
                "the CPU has one set of attention kernels");
        assertSame(in, Cases.singleDz(in), "the CPU has one LM-head backward");
        d.closeInstances();
    }

    /** A variant row's body runs in its CUDA mode, and the backend's own setting is back afterwards, also on a throw. */
    @Test
    @org.junit.jupiter.api.Tag("gpu")
    void variantRowsRunInTheirCudaModeAndRestoreIt() {
        org.grpo4j.internal.backend.CudaBackend cb = org.grpo4j.internal.backend.TestBackends.cuda();
        Data d = new Data(cb, false, 1);
        boolean[] seen = new boolean[2];
        Instance in = Cases.singleDz(Cases.fastDq(new Instance(d).body(() -> {
            seen[0] = cb.deterministicAttention();
            seen[1] = cb.lmHeadBf16GradSplit();
        })));
        assertTrue(cb.deterministicAttention() && cb.lmHeadBf16GradSplit(), "the defaults");
        in.run();
        assertFalse(seen[0], "attention's fast dQ during the body");
        assertFalse(seen[1], "the LM head's single bf16 dz during the body");
        assertTrue(cb.deterministicAttention() && cb.lmHeadBf16GradSplit(), "restored");
        Object[] mode = new Object[1];
        var found = cb.attentionDq();
        Cases.fixedDq(new Instance(d).body(() -> mode[0] = cb.attentionDq())).run();
        assertEquals(org.grpo4j.internal.backend.CudaBackend.AttentionDq.FIXED, mode[0], "fixed-point dQ during the body");
        assertEquals(found, cb.attentionDq(), "restored");
        boolean[] wg = new boolean[1];
        boolean wgBefore = cb.wgmmaAttention();
        Cases.wgmma(new Instance(d).body(() -> wg[0] = cb.wgmmaAttention())).run();
        assertTrue(wg[0], "the Hopper kernels during the body");
        assertEquals(wgBefore, cb.wgmmaAttention(), "restored");
        Object[] fw = new Object[2];
        var forwardBefore = cb.hopperForward();
        Cases.wgmma(Cases.hopperForward(new Instance(d).body(() -> {
            fw[0] = cb.wgmmaAttention();
            fw[1] = cb.hopperForward();
        }), org.grpo4j.internal.backend.CudaBackend.HopperForward.TMA_PING_PONG)).run();
        assertEquals(true, fw[0], "the Hopper kernels during the body");
        assertEquals(org.grpo4j.internal.backend.CudaBackend.HopperForward.TMA_PING_PONG, fw[1], "the ping-pong forward during the body");
        assertEquals(forwardBefore, cb.hopperForward(), "restored");
        Instance bad = Cases.fastDq(new Instance(d).body(() -> { throw new IllegalStateException("boom"); }));
        assertThrows(IllegalStateException.class, bad::run);
        assertTrue(cb.deterministicAttention(), "restored after a throw");
        d.closeInstances();
    }

    @Test
    void theLlamaPlanHasTheIssueShapesAndWork() {
        List<Cases.Case> plan = Cases.plan(BenchSizes.LLAMA_3_1_8B, DType.BF16, Cases.FAMILIES);
        Map<String, Cases.Case> byId = new HashMap<>();
        for (Cases.Case c : plan) assertNull(byId.put(c.id(), c), "duplicate id " + c.id());
        // FLOPs = 2*M*N*K for the issue's four GEMMs
        assertEquals(2.0 * 8192 * 14336 * 4096, byId.get("gemm/matmul 8192x4096x14336").work());
        assertEquals(2.0 * 768 * 4096 * 4096, byId.get("gemm/matmul 768x4096x4096").work());
        assertEquals(2.0 * 8192 * 8192 * 8192, byId.get("ceiling/matmul bf16 8192^3").work());
        // causal attention as FlashAttention counts it: 4*B*S^2*H*D / 2
        assertEquals(4.0 * 8 * 2048 * 2048 * 32 * 128 / 2, byId.get("attention/fwd b8 s2048").work());
        // the LM head's fwd+bwd: 6*N*H*V
        assertEquals(6.0 * 8192 * 4096 * 128256, byId.get("lmhead/logprob fwd+bwd").work());
        // adamW on 2^30 params: 30 bytes each
        assertEquals(30.0 * (1L << 30), byId.get("adamw/adamw").work());
        // the embedding ids are distinct, so the backward touches T table rows
        assertEquals(2 * 4096 * 4096 + 4 * 4096 + 8.0 * 4096 * 4096, byId.get("embedding/embedding bwd").work());
        assertEquals("[4096, 32, 128]", byId.get("rope/rope fwd").shape());
    }
}
