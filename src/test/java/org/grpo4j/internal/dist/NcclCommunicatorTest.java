package org.grpo4j.internal.dist;

import static org.junit.jupiter.api.Assertions.*;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.grpo4j.internal.backend.CudaBackend;
import org.grpo4j.internal.backend.CudaRuntime;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.Ops;
import org.grpo4j.internal.backend.Tensor;
import org.grpo4j.internal.backend.TestBackends;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * NCCL on a one-GPU loan: the hosts' NCCL refuses two ranks on one GPU ("Duplicate GPU detected"), so only world 1
 * runs here. Every collective of {@link NcclCommunicator} in fp32 and bf16 (the world-1 results are the inputs, AVG
 * included), the host gather, and a ZeRO-2 step through it (and {@code ShardedAdamWNcclTest}: the optimizer step through it against the CPU's).
 */
@Tag("gpu")
class NcclCommunicatorTest {
    static CudaBackend cuda() {
        CudaBackend be = TestBackends.cuda();
        assumeTrue(CudaRuntime.libraries().stream().anyMatch(l -> l.name().equals("NCCL") && l.loads()), "skipped: NCCL does not load here");
        return be;
    }

    static NcclCommunicator worldOne(CudaBackend be) {
        return NcclCommunicator.create(NcclCommunicator.newUniqueId(), 1, 0, be, 60);
    }

    static Tensor up(org.grpo4j.internal.backend.Backend be, float[] a, DType dt) {
        try (Tensor f = be.upload(a, a.length)) {
            Tensor t = be.empty(dt, a.length);
            be.cast(t, f);
            return t;
        }
    }

    @Test
    void everyCollectiveAtWorldOneInFp32AndBf16() {
        CudaBackend be = cuda();
        System.out.println("NCCL " + NcclCommunicator.version());
        float[] x = new float[1001];
        for (int i = 0; i < x.length; i++) x[i] = (float) Math.sin(i) * 3;
        try (NcclCommunicator c = worldOne(be)) {
            c.setContext("gpu test");
            for (DType dt : new DType[] {DType.FP32, DType.BF16}) {
                float[] want;
                try (Tensor w = up(be, x, dt)) {
                    want = w.toFloatsWidened();
                }
                for (ReduceOp op : ReduceOp.values()) {
                    try (Tensor t = up(be, x, dt)) {
                        c.allReduce(t, op).await();
                        assertArrayEquals(want, t.toFloatsWidened(), 0f, "allReduce " + op + " " + dt.label());
                    }
                    try (Tensor in = up(be, x, dt); Tensor out = be.empty(dt, x.length)) {
                        c.reduceScatter(out, in, op).await();
                        assertArrayEquals(want, out.toFloatsWidened(), 0f, "reduceScatter " + op + " " + dt.label());
                        be.fill(out, 0);
                        c.reduce(out, in, 0, op).await();
                        assertArrayEquals(want, out.toFloatsWidened(), 0f, "reduce " + op + " " + dt.label());
                    }
                }
                try (Tensor in = up(be, x, dt); Tensor out = be.zeros(dt, x.length); Tensor b = up(be, x, dt)) {
                    c.allGather(out, in).await();
                    assertArrayEquals(want, out.toFloatsWidened(), 0f, "allGather " + dt.label());
                    c.allGatherInPlace(b).await();
                    assertArrayEquals(want, b.toFloatsWidened(), 0f, "allGatherInPlace " + dt.label());
                    c.broadcast(b, 0).await();
                    assertArrayEquals(want, b.toFloatsWidened(), 0f, "broadcast " + dt.label());
                }
            }
            c.barrier();
            double[][] d = c.allGatherDoubles(new double[] {Math.PI, -0.0, Double.NaN});
            assertEquals(Math.PI, d[0][0], 0.0);
            assertEquals(Double.doubleToRawLongBits(-0.0), Double.doubleToRawLongBits(d[0][1]));
            assertTrue(Double.isNaN(d[0][2]));
            assertEquals(0, c.allGatherDoubles(new double[0])[0].length, "an empty gather");
        }
    }

    /**
     * The ordering contract on a busy device: the collective (a copy on NCCL's stream at world 1) reads what the compute
     * stream wrote last, although that stream is still working when the collective is queued, and compute issued after
     * {@code await()} sees the collective's output. Each broken direction leaves values other than 2 x rep.
     */
    @Test
    void collectivesAreOrderedAgainstTheComputeStream() {
        CudaBackend be = cuda();
        int n = 1 << 24;
        try (NcclCommunicator c = worldOne(be); Tensor in = be.zeros(DType.FP32, n); Tensor out = be.zeros(DType.FP32, n)) {
            for (int rep = 1; rep <= 3; rep++) {
                for (int k = 0; k < 16; k++) be.fill(in, k == 15 ? rep : -1); // about a millisecond of queued writes
                c.reduceScatter(out, in, ReduceOp.SUM).await();
                be.scale(out, 2f);
                float[] o = out.toFloats();
                for (int i = 0; i < n; i++)
                    if (o[i] != 2f * rep) fail("rep " + rep + ": out[" + i + "] = " + o[i] + ", expected " + 2 * rep);
            }
        }
    }

    /**
     * Collectives are issued back to back: with the watchdog held before it watches the first, every later one is
     * still issued (its await returns: it waits for the issue, not for the end), all of them in flight at once; once
     * the watchdog goes on, it sees each end, and the results are right.
     */
    @Test
    void collectivesAreIssuedWithoutWaitingForTheOnesBeforeToEnd() throws Exception {
        CudaBackend be = cuda();
        int n = 1 << 20, k = 6;
        try (NcclCommunicator c = worldOne(be)) {
            java.util.concurrent.CountDownLatch gate = new java.util.concurrent.CountDownLatch(1);
            c.watchGate = gate;
            Tensor[] bufs = new Tensor[k];
            try {
                for (int i = 0; i < k; i++) {
                    bufs[i] = be.zeros(DType.FP32, n);
                    be.fill(bufs[i], i + 1);
                }
                // awaited on another thread, so that a regression (issuing waits for the watch) fails instead of hanging
                java.util.concurrent.ExecutorService caller = daemons(1);
                try {
                    caller.submit(() -> {
                        for (int i = 0; i < k; i++) c.allReduce(bufs[i], ReduceOp.SUM).await();
                        return null;
                    }).get(60, java.util.concurrent.TimeUnit.SECONDS);
                    assertEquals(k, c.inFlight(), "every collective issued, none watched yet");
                } catch (java.util.concurrent.TimeoutException e) {
                    fail("the awaits did not return while the watchdog was held: issuing waits for the collectives before to end");
                } finally {
                    gate.countDown();
                    caller.shutdownNow();
                }
                long until = System.nanoTime() + 60_000_000_000L;
                while (c.inFlight() > 0 && System.nanoTime() < until) Thread.onSpinWait();
                assertEquals(0, c.inFlight(), "the watchdog saw every collective end");
                be.synchronize();
                for (int i = 0; i < k; i++)
                    for (float v : bufs[i].toFloats()) assertEquals(i + 1f, v, "collective " + i);
            } finally {
                gate.countDown();
                for (Tensor t : bufs) if (t != null) t.close();
            }
        }
    }

    /**
     * A tensor closed before its collective is awaited is freed only once the collective is done with it (its free
     * waits; the memory would otherwise go to the next allocation while NCCL uses it), and the collective's result is
     * still right in a tensor that stays; after await the hold is gone.
     */
    @Test
    void aTensorFreedBeforeItsCollectiveIsAwaitedWaitsForIt() {
        CudaBackend be = cuda();
        int n = 1 << 22;
        try (NcclCommunicator c = worldOne(be); Tensor keep = be.zeros(DType.FP32, n)) {
            Tensor gone = be.zeros(DType.FP32, n);
            be.fill(gone, 3);
            be.fill(keep, 2);
            Communicator.Work a = c.allReduce(gone, ReduceOp.SUM), b = c.allReduce(keep, ReduceOp.SUM);
            gone.close(); // waits for a's done event
            try (Tensor reuse = be.zeros(DType.FP32, n)) { // likely the memory gone had, handed out again
                be.fill(reuse, 7);
                a.await();
                b.await();
                be.synchronize();
                for (float v : reuse.toFloats()) assertEquals(7f, v);
                for (float v : keep.toFloats()) assertEquals(2f, v);
            }
        }
    }

    /** Bad collectives are refused on the calling thread, naming the problem, before anything reaches NCCL. */
    @Test
    void badCollectivesAreRefusedBeforeNccl() {
        CudaBackend be = cuda();
        try (NcclCommunicator c = worldOne(be); Tensor i64 = be.empty(DType.INT64, 8); Tensor buf = be.zeros(DType.FP32, 16)) {
            IllegalArgumentException t = assertThrows(IllegalArgumentException.class, () -> c.broadcast(i64, 0));
            assertTrue(t.getMessage().contains("NCCL collectives take fp32, bf16 or int32 tensors, not int64"), t.getMessage());
            // at world 1 allGather's in-place form is in = out; a shifted view overlaps, not in place
            IllegalArgumentException o = assertThrows(IllegalArgumentException.class, () -> c.allGather(buf.view(0, 8), buf.view(4, 8)));
            assertTrue(o.getMessage().contains("allGather") && o.getMessage().contains("overlap, but not in NCCL's in-place form"), o.getMessage());
            c.allGather(buf.view(0, 8), buf.view(0, 8)).await(); // the in-place form
        }
        CudaBackend closed = new CudaBackend(be.device());
        closed.close();
        IllegalStateException e = assertThrows(IllegalStateException.class,
                () -> NcclCommunicator.create(NcclCommunicator.newUniqueId(), 1, 0, closed, 10));
        assertTrue(e.getMessage().contains("is closed"), e.getMessage());
    }

    /** abort() from another thread fails the next collective with the cause, and close() afterwards is safe. */
    @Test
    void anAbortedCommunicatorFailsItsNextCollective() throws Exception {
        CudaBackend be = cuda();
        NcclCommunicator c = worldOne(be);
        try (Tensor t = be.zeros(DType.FP32, 8)) {
            c.allReduce(t, ReduceOp.SUM).await();
            t.toFloats();
            c.check("the read of t"); // healthy: nothing thrown
            Thread other = new Thread(() -> c.abort(new IllegalStateException("rank 3 threw")));
            other.start();
            other.join();
            c.setContext("step 7, update");
            CommunicatorException e = assertThrows(CommunicatorException.class, () -> c.allReduce(t, ReduceOp.SUM).await());
            assertEquals("allReduce (step 7, update) stopped: rank 3 threw", e.getMessage());
            // a host read after the abort is not taken for the collective's result
            CommunicatorException read = assertThrows(CommunicatorException.class, () -> c.check("the read of t"));
            assertEquals("the read of t (step 7, update) stopped: rank 3 threw", read.getMessage());
            assertThrows(CommunicatorException.class, () -> c.allGatherDoubles(new double[] {1}));
            be.synchronize();
        } finally {
            c.close();
        }
    }

    /**
     * A collective issued before the communicator failed is not taken as done: its await throws with the cause (the
     * watchdog's abort came on the worker after the issue, so the await saw the issue succeed and returned; an
     * all-gather's caller then read a buffer the collective never wrote). Collective a is issued and finished (the
     * worker took b after it), then the communicator is aborted, then a is awaited.
     */
    @Test
    void aCollectiveIssuedBeforeAnAbortFailsItsAwait() throws Exception {
        CudaBackend be = cuda();
        NcclCommunicator c = worldOne(be);
        try (Tensor t = be.zeros(DType.FP32, 8); Tensor u = be.zeros(DType.FP32, 8)) {
            Communicator.Work a = c.allReduce(t, ReduceOp.SUM);
            c.allReduce(u, ReduceOp.SUM).await(); // (one worker: a was issued and watched to its end before b)
            Thread other = new Thread(() -> c.abort(new IllegalStateException("the watchdog: rank 5 hung")));
            other.start();
            other.join();
            CommunicatorException e = assertThrows(CommunicatorException.class, a::await);
            assertEquals("allReduce stopped: the watchdog: rank 5 hung", e.getMessage());
            be.synchronize();
        } finally {
            c.close();
        }
    }

    /**
     * A whole training step of the tiny model at world 1 through tools/launch's path (rendezvous on loopback, the NCCL
     * communicator, the ZeRO-2 optimizer), where the CUDA backend implements every op the trainer needs.
     */
    @Test
    void aZeroTwoTrainingStepThroughNccl(@TempDir Path tmp) throws Exception {
        CudaBackend be = cuda();
        List<String> missing = Ops.ALL.stream().filter(op -> !be.implementsOp(op)).toList();
        assumeTrue(missing.isEmpty(), "skipped: the CUDA backend lacks " + missing + " (the trainer's step needs every op)");
        int port;
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            port = s.getLocalPort();
        }
        DistEnv env = DistEnv.perNode(1, 0, 1, "127.0.0.1", port);
        List<String> sets = new java.util.ArrayList<>(org.grpo4j.internal.train.GrpoTrainerTestAccess.small(tmp.resolve("run"), 1));
        sets.addAll(List.of("backend=\"cuda\"", "precision=bf16"));
        try (Rendezvous r = new Rendezvous(env, "", 60_000, 1000)) {
            Map<String, Double> m = org.grpo4j.internal.train.GrpoTrainerTestAccess.trainOneStep(sets, r);
            assertTrue(Double.isFinite(m.get("optim/grad_norm")), "a finite gradient norm: " + m);
        }
        assertTrue(Files.isRegularFile(tmp.resolve("run/checkpoints/step_1/optimizer.safetensors")));
    }

    /**
     * Two GRPO steps of the tiny model at world 2 through tools/launch's path on one node of two GPUs (one JVM, a rank a
     * device and thread: rendezvous on loopback, NCCL, ZeRO-2 with bf16 gradients, rank balancing's exchanges, the
     * checkpoint's gathers, the sharded reference's layer gathers on NCCL's stream): a finite gradient norm, the
     * rank-balancing figure, and a checkpoint of each step with one optimizer slice a rank; then, with step 2's
     * checkpoint deleted from a copy, a resume from step 1 (each rank reading its pieces of the reference, their
     * checksum gathered) runs step 2 again with the same metrics (but times) and the same files, bit for bit. Skips
     * without two devices.
     */
    @Test
    void aZeroTwoRunAtWorldTwoThroughNccl(@TempDir Path tmp) throws Exception {
        assumeTwoDevices();
        CudaBackend be = cuda();
        List<String> missing = Ops.ALL.stream().filter(op -> !be.implementsOp(op)).toList();
        assumeTrue(missing.isEmpty(), "skipped: the CUDA backend lacks " + missing);
        int port;
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            port = s.getLocalPort();
        }
        DistEnv env = DistEnv.perNode(1, 0, 2, "127.0.0.1", port);
        List<String> sets = new java.util.ArrayList<>(org.grpo4j.internal.train.GrpoTrainerTestAccess.small(tmp.resolve("run"), 2));
        sets.addAll(List.of("backend=\"cuda\"", "precision=bf16", "world_size=2", "save_freq=1", "num_evals=0", "reference_sharding=\"layers\""));
        Map<String, Double> m;
        try (Rendezvous r = new Rendezvous(env, "", 60_000, 1000)) {
            m = org.grpo4j.internal.train.GrpoTrainerTestAccess.trainOneStep(sets, r);
        }
        Path copy = tmp.resolve("copy");
        org.grpo4j.internal.util.TestFiles.copyTree(tmp.resolve("run"), copy);
        org.grpo4j.internal.util.AtomicDir.deleteTree(copy.resolve("checkpoints/step_2"));
        List<Map<String, Double>> again;
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            port = s.getLocalPort();
        }
        try (Rendezvous r = new Rendezvous(DistEnv.perNode(1, 0, 2, "127.0.0.1", port), "", 60_000, 1000)) {
            again = org.grpo4j.internal.train.GrpoTrainerTestAccess.resume(copy, r);
        }
        assertEquals(1, again.size(), "the resumed run ran step 2 alone");
        for (String k : m.keySet())
            if (!k.startsWith("time/") && !k.startsWith("throughput/")) assertEquals(m.get(k), again.get(0).get(k), "resumed step 2: " + k);
        try (var files = Files.walk(tmp.resolve("run/checkpoints/step_2"))) {
            for (Path f : files.filter(Files::isRegularFile).toList()) {
                Path g = copy.resolve("checkpoints/step_2").resolve(tmp.resolve("run/checkpoints/step_2").relativize(f));
                if (f.equals(tmp.resolve("run/checkpoints/step_2/config.json"))) { // the run's config: output_dir names each run's own directory
                    com.fasterxml.jackson.databind.ObjectMapper json = new com.fasterxml.jackson.databind.ObjectMapper();
                    var want = (com.fasterxml.jackson.databind.node.ObjectNode) json.readTree(f.toFile());
                    var got = (com.fasterxml.jackson.databind.node.ObjectNode) json.readTree(g.toFile());
                    assertEquals(copy.toString(), got.remove("output_dir").asText(), "the copy's config names the copy");
                    assertEquals(tmp.resolve("run").toString(), want.remove("output_dir").asText());
                    assertEquals(want, got, "resumed step 2's config.json");
                    continue;
                }
                assertArrayEquals(Files.readAllBytes(f), Files.readAllBytes(g), "resumed step 2's " + f.getFileName());
            }
        }
        System.out.println("world 2 through NCCL, step 2: " + m);
        assertTrue(Double.isFinite(m.get("optim/grad_norm")), "a finite gradient norm: " + m);
        assertTrue(m.get("training/rank_tokens_max_over_mean") >= 1.0, "the ranks' token counts were gathered: " + m);
        assertTrue(Files.isRegularFile(tmp.resolve("run/checkpoints/step_1/model/model.safetensors")), "step 1's model");
        long slices;
        try (var files = Files.list(tmp.resolve("run/checkpoints/step_2"))) {
            slices = files.filter(f -> f.getFileName().toString().startsWith("optimizer")).count();
        }
        assertEquals(2, slices, "one optimizer slice a rank");
    }

    /**
     * The watchdog at world 2: rank 1 never joins rank 0's all-reduce, so rank 0's communicator is aborted after
     * nccl_timeout_s (3 s here) and its collectives fail naming the timeout, the collective and the context, within
     * seconds rather than never. (On a GPU the watchdog times the collective on the stream once NCCL has issued it; the
     * emulated NCCL issues a collective when its last rank calls it, so the communicator's state stays in progress and
     * the issue is what times out. With NCCL_COMM_BLOCKING=1 the call itself waits inside NCCL, which awaitIssued times.)
     */
    @Test
    void aCollectiveAPeerNeverJoinsTimesOutAtWorldTwo() throws Exception {
        assumeTwoDevices();
        byte[] id = NcclCommunicator.newUniqueId();
        java.util.concurrent.ExecutorService pool = daemons(2);
        java.util.concurrent.CountDownLatch done = new java.util.concurrent.CountDownLatch(1);
        try {
            java.util.concurrent.Future<?> idle = pool.submit(() -> {
                try (CudaBackend be = new CudaBackend(1); NcclCommunicator c = NcclCommunicator.create(id, 2, 1, be, 3)) {
                    done.await(); // joins the communicator, then never calls the collective
                }
                return null;
            });
            java.util.concurrent.Future<String> failing = pool.submit(() -> {
                try (CudaBackend be = new CudaBackend(0); NcclCommunicator c = NcclCommunicator.create(id, 2, 0, be, 3); Tensor t = be.zeros(DType.FP32, 16)) {
                    c.setContext("step 7, training");
                    long t0 = System.nanoTime();
                    CommunicatorException e = assertThrows(CommunicatorException.class, () -> {
                        c.allReduce(t, ReduceOp.SUM).await();
                        be.synchronize();
                        c.allReduce(t, ReduceOp.SUM).await(); // (the abort shows at the first await, or at the next call)
                    });
                    double s = (System.nanoTime() - t0) / 1e9;
                    assertTrue(s < 30, "failed after " + s + " s");
                    return e.getMessage();
                } finally {
                    done.countDown();
                }
            });
            String msg = failing.get(120, java.util.concurrent.TimeUnit.SECONDS);
            System.out.println("a collective rank 1 never joins: " + msg);
            assertTrue(msg.contains("nccl_timeout_s") && msg.contains("allReduce") && msg.contains("step 7, training"), msg);
            idle.get(60, java.util.concurrent.TimeUnit.SECONDS);
        } finally {
            done.countDown();
            pool.shutdownNow();
        }
    }

    /**
     * A collective of rank 0 (device 0) on a tensor of device 1 is refused in Java before NCCL sees it (on a GPU it would
     * be an illegal memory access), naming both devices. (The emulated NCCL and cuBLAS refuse another device's pointer
     * too, a second line for calls that do not go through these checks.)
     */
    @Test
    void aBufferOfAnotherDeviceIsRefusedBeforeNccl() throws Exception {
        assumeTwoDevices();
        byte[] id = NcclCommunicator.newUniqueId();
        java.util.concurrent.ExecutorService pool = daemons(2);
        try (CudaBackend other = new CudaBackend(1); Tensor foreign = other.zeros(DType.FP32, 8)) {
            java.util.concurrent.Future<String> f0 = pool.submit(() -> {
                try (CudaBackend be = new CudaBackend(0); NcclCommunicator c = NcclCommunicator.create(id, 2, 0, be, 10)) {
                    return assertThrows(IllegalArgumentException.class, () -> c.allReduce(foreign, ReduceOp.SUM).await()).getMessage();
                }
            });
            java.util.concurrent.Future<Object> f1 = pool.submit(() -> {
                try (CudaBackend be = new CudaBackend(1); NcclCommunicator c = NcclCommunicator.create(id, 2, 1, be, 10); Tensor t = be.zeros(DType.FP32, 8)) {
                    try {
                        c.allReduce(t, ReduceOp.SUM).await(); // never completes: rank 0's call was refused
                    } catch (CommunicatorException e) {
                        // rank 0's abort reaches this rank
                    }
                }
                return null;
            });
            String msg = f0.get(120, java.util.concurrent.TimeUnit.SECONDS);
            assertTrue(msg.contains("lives on cuda:1, not on cuda:0"), msg);
            // rank 1 too has closed its communicator and backend before the next test starts (left running, its close
            // met the next test's calls: the emulated device's "unknown stream" abort of 2026-12-03, 2 runs in 11)
            f1.get(120, java.util.concurrent.TimeUnit.SECONDS);
        } finally {
            pool.shutdownNow();
        }
    }

    /** Skips unless this host has two devices (the GPU hosts of the loans have one; tools/kernel-emu --jvm --devices 2 emulates two). */
    static void assumeTwoDevices() {
        cuda();
        int n = CudaRuntime.probe().deviceCount();
        assumeTrue(n >= 2, "skipped: " + n + " CUDA device(s); world 2 needs two (NCCL refuses two ranks on one GPU)");
    }

    /**
     * Every collective at world 2 through NCCL, each rank with its own device and thread, against the same calls
     * through {@link LocalCommunicator} on the CPU: fp32 bit for bit (x_0 + x_1 in either order is the same sum), bf16
     * within 2^-8 relative (rounded once from fp32 by the emulator and LocalCommunicator, at each ring hop by NCCL,
     * which at two ranks is once too, but its AVG may scale before rounding). Each rank's inputs differ.
     */
    @Test
    void everyCollectiveAtWorldTwoMatchesTheLocalCommunicator() throws Exception {
        assumeTwoDevices();
        int world = 2;
        List<List<float[]>> cpu = new java.util.ArrayList<>(), gpu = new java.util.ArrayList<>();
        List<LocalCommunicator> locals = LocalCommunicator.group(world, 60_000);
        byte[] id = NcclCommunicator.newUniqueId();
        List<java.util.concurrent.Future<List<float[]>>> cf = new java.util.ArrayList<>(), gf = new java.util.ArrayList<>();
        java.util.concurrent.ExecutorService pool = daemons(2 * world);
        try {
            for (int r = 0; r < world; r++) {
                int rank = r;
                cf.add(pool.submit(() -> {
                    try (org.grpo4j.internal.backend.CpuBackend be = new org.grpo4j.internal.backend.CpuBackend(); LocalCommunicator c = locals.get(rank)) {
                        return script(be, c, rank);
                    }
                }));
                gf.add(pool.submit(() -> {
                    try (CudaBackend be = new CudaBackend(rank); NcclCommunicator c = NcclCommunicator.create(id, world, rank, be, 60)) {
                        return script(be, c, rank);
                    }
                }));
            }
            for (int r = 0; r < world; r++) {
                cpu.add(cf.get(r).get(120, java.util.concurrent.TimeUnit.SECONDS));
                gpu.add(gf.get(r).get(120, java.util.concurrent.TimeUnit.SECONDS));
            }
        } finally {
            pool.shutdownNow();
        }
        for (int r = 0; r < world; r++) {
            assertEquals(cpu.get(r).size(), gpu.get(r).size());
            for (int k = 0; k < cpu.get(r).size(); k++) {
                float[] a = cpu.get(r).get(k), b = gpu.get(r).get(k);
                assertEquals(a.length, b.length, "rank " + r + ", result " + k);
                for (int i = 0; i < a.length; i++)
                    assertEquals(a[i], b[i], SCRIPT[k].contains("fp32") ? 0f : Math.abs(a[i]) * 0x1p-8f, "rank " + r + ", result " + k + " (" + SCRIPT[k] + "), element " + i);
            }
        }
    }

    /**
     * Threads for the ranks of a test that do not keep the test JVM alive: a rank stuck in native NCCL after a failed
     * assertion leaves the test failed, not the run hung.
     */
    static java.util.concurrent.ExecutorService daemons(int n) {
        return java.util.concurrent.Executors.newFixedThreadPool(n, r -> {
            Thread t = new Thread(r, "world-2-rank");
            t.setDaemon(true);
            return t;
        });
    }

    static final String[] SCRIPT = new String[32];

    /** Collectives of every kind in fp32 and bf16 on rank-dependent inputs; their results in order (names in SCRIPT). */
    static List<float[]> script(org.grpo4j.internal.backend.Backend be, Communicator c, int rank) {
        if (be instanceof CudaBackend cb) cb.useOnThisThread();
        c.setContext("world-2 test");
        int world = c.worldSize(), n = 1002;
        float[] x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float) Math.sin(i + 7 * rank) * 3;
        List<float[]> out = new java.util.ArrayList<>();
        int k = 0;
        for (DType dt : new DType[] {DType.FP32, DType.BF16}) {
            for (ReduceOp op : ReduceOp.values()) {
                try (Tensor t = up(be, x, dt)) {
                    c.allReduce(t, op).await();
                    out.add(t.toFloatsWidened());
                    SCRIPT[k++] = "allReduce " + op + " " + dt.label();
                }
                try (Tensor in = up(be, x, dt); Tensor o = be.zeros(dt, n / world)) {
                    c.reduceScatter(o, in, op).await();
                    out.add(o.toFloatsWidened());
                    SCRIPT[k++] = "reduceScatter " + op + " " + dt.label();
                }
                try (Tensor in = up(be, x, dt); Tensor o = be.zeros(dt, n)) {
                    c.reduce(o, in, 1, op).await();
                    if (rank == 1) out.add(o.toFloatsWidened());
                    if (rank == 1) SCRIPT[k++] = "reduce to 1 " + op + " " + dt.label();
                }
            }
            float[] part = java.util.Arrays.copyOf(x, n / world);
            try (Tensor in = up(be, part, dt); Tensor o = be.zeros(dt, n); Tensor b = up(be, x, dt)) {
                c.allGather(o, in).await();
                out.add(o.toFloatsWidened());
                SCRIPT[k++] = "allGather " + dt.label();
                c.allGatherInPlace(b).await();
                out.add(b.toFloatsWidened());
                SCRIPT[k++] = "allGatherInPlace " + dt.label();
            }
            try (Tensor b = up(be, x, dt)) {
                c.broadcast(b, 1).await();
                out.add(b.toFloatsWidened());
                SCRIPT[k++] = "broadcast from 1 " + dt.label();
            }
        }
        c.barrier();
        double[][] d = c.allGatherDoubles(new double[] {rank + 0.5, -rank});
        float[] flat = new float[world * 2];
        for (int r = 0; r < world; r++) {
            flat[2 * r] = (float) d[r][0];
            flat[2 * r + 1] = (float) d[r][1];
        }
        out.add(flat);
        SCRIPT[k] = "allGatherDoubles";
        return out;
    }

}
