package org.grpo4j.internal.dist;

import static org.junit.jupiter.api.Assertions.*;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * The rendezvous store: two JVMs on loopback (the unique id, a barrier, and a killed peer ending the other's wait with
 * an error instead of a hang), and in-process cases for the secret, an unreachable MASTER_ADDR, a config that differs
 * between nodes and the loss of rank 0's process; the environment conventions.
 */
class RendezvousTest {
    static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            return s.getLocalPort();
        }
    }

    /** Process 0 of 2 joining on {@code port} in the background (its constructor waits for process 1). */
    static CompletableFuture<Rendezvous> rankZero(int port) {
        return CompletableFuture.supplyAsync(() -> {
            try {
                return new Rendezvous(env(2, 0, port), "", 20_000, 100);
            } catch (IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        });
    }

    static DistEnv env(int processes, int index, int port) {
        return new DistEnv(processes, processes, index, new int[] {index}, new int[] {0}, "127.0.0.1", port);
    }

    @Test
    void twoJvmsShareTheIdPassABarrierAndAKilledPeerEndsTheWait() throws Exception {
        int port = freePort();
        List<String> cmd = List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(), "-cp", System.getProperty("java.class.path"),
                RendezvousChild.class.getName(), String.valueOf(port), "s3cret");
        Process child = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        BlockingQueue<String> lines = new ArrayBlockingQueue<>(100);
        Thread reader = new Thread(() -> {
            try (BufferedReader r = new BufferedReader(new InputStreamReader(child.getInputStream(), StandardCharsets.UTF_8))) {
                for (String l; (l = r.readLine()) != null; ) lines.add(l);
            } catch (IOException e) {
                // the child is gone
            }
        });
        reader.setDaemon(true);
        reader.start();
        List<String> aborts = new ArrayList<>();
        try (Rendezvous r = new Rendezvous(env(2, 0, port), "s3cret", 60_000, 100)) {
            r.onAbort(aborts::add);
            byte[] id = new byte[128];
            new SecureRandom().nextBytes(id);
            r.shareBytes("nccl/unique_id", id);
            assertEquals("id " + HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(id)), next(lines), "the child read the id");
            r.barrier("b1");
            assertEquals("passed b1", next(lines));
            child.destroyForcibly().waitFor(); // kill -9 while it waits at b2
            // a barrier the child never reaches: it ends with the child's death ("disconnected"), not at the 60 s
            // timeout (which says so in other words)
            CommunicatorException e = assertThrows(CommunicatorException.class, () -> r.barrier("after the kill"));
            assertTrue(e.getMessage().contains("process 1") && e.getMessage().contains("disconnected"), e.getMessage());
            assertEquals(1, aborts.size(), "the abort listener heard it once: " + aborts);
        } finally {
            child.destroyForcibly();
        }
    }

    /**
     * Between two JVMs, as a node started with another GRPO4J_RDZV_SECRET meets rank 0's store: the child is refused
     * at its handshake, naming the secret, and exits with an error; the store goes on serving a process that has it.
     */
    @Test
    void aSecondJvmWithAnotherSecretIsRefused() throws Exception {
        int port = freePort();
        try (TcpStore.Server s = new TcpStore.Server(InetAddress.getLoopbackAddress(), port, "s3cret", 2, 100, 1000)) {
            List<String> cmd = List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(), "-cp", System.getProperty("java.class.path"),
                    RendezvousChild.class.getName(), String.valueOf(port), "another");
            Process child = new ProcessBuilder(cmd).redirectErrorStream(true).start();
            String out;
            try {
                out = new String(child.getInputStream().readAllBytes(), StandardCharsets.UTF_8); // (to its exit)
                assertTrue(child.waitFor(60, TimeUnit.SECONDS), "the refused child did not exit");
            } finally {
                child.destroyForcibly();
            }
            assertNotEquals(0, child.exitValue(), out);
            assertTrue(out.contains("wrong rendezvous secret (GRPO4J_RDZV_SECRET differs from rank 0's node"), out);
            try (TcpStore.Client ok = new TcpStore.Client("127.0.0.1", port, "s3cret", 1, "test", 5000, 100, 1000, r -> {})) {
                ok.set("k", new byte[] {7});
                assertArrayEquals(new byte[] {7}, ok.get("k", 1000));
            }
        }
    }

    static String next(BlockingQueue<String> q) throws InterruptedException {
        String l = q.poll(60, TimeUnit.SECONDS);
        assertNotNull(l, "the child printed nothing within 60 s");
        return l;
    }

    @Test
    void aWrongSecretIsRefusedAndTheSecretIsRequiredBeyondLoopback() throws Exception {
        int port = freePort();
        try (TcpStore.Server s = new TcpStore.Server(InetAddress.getLoopbackAddress(), port, "right", 2, 100, 1000)) {
            IllegalStateException e = assertThrows(IllegalStateException.class,
                    () -> new TcpStore.Client("127.0.0.1", port, "wrong", 1, "test", 5000, 100, 1000, r -> {}));
            assertTrue(e.getMessage().contains("wrong rendezvous secret"), e.getMessage());
            assertThrows(IllegalStateException.class, () -> new TcpStore.Client("127.0.0.1", port, "", 1, "test", 5000, 100, 1000, r -> {}));
            try (TcpStore.Client ok = new TcpStore.Client("127.0.0.1", port, "right", 1, "test", 5000, 100, 1000, r -> {})) {
                ok.set("k", new byte[] {1, 2});
                assertArrayEquals(new byte[] {1, 2}, ok.get("k", 1000));
                IOException big = assertThrows(IOException.class, () -> ok.get("never", 200));
                assertTrue(big.getMessage().contains("not published within 0.2 s"), big.getMessage());
                assertThrows(IllegalArgumentException.class, () -> ok.set("v", new byte[TcpStore.MAX_VALUE + 1]));
                // a process waiting at a barrier hears why the store turned connections away: they may be the ones it waits for
                IOException late = assertThrows(IOException.class, () -> ok.barrier("join", 2, 200));
                assertTrue(late.getMessage().contains("1 of 2 processes arrived within 0.2 s") && late.getMessage().contains(
                        "; the store refused 2 connections, the last: wrong rendezvous secret (GRPO4J_RDZV_SECRET differs from rank 0's node; without one"
                        + " there, rank 0's node was started as a run of one process, whose store has a secret of its own: start every node with"
                        + " the same --nnodes), from /127.0.0.1:"),
                        late.getMessage());
            }
        }
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> TcpStore.requireSecret(InetAddress.getByName("10.1.2.3"), ""));
        assertTrue(e.getMessage().contains("beyond loopback: set GRPO4J_RDZV_SECRET"), e.getMessage());
        TcpStore.requireSecret(InetAddress.getByName("10.1.2.3"), "x");
        TcpStore.requireSecret(InetAddress.getLoopbackAddress(), "");
    }

    /**
     * A run of one process (every rank in one JVM, the store's only client) runs its store with a random secret of its
     * own when none is set: another local user's client without the secret is refused, and the run goes on. A set
     * secret is kept; a run of several processes without one keeps the empty secret (loopback only).
     */
    @Test
    void aOneProcessRunsStoreHasASecretOfItsOwn() throws Exception {
        try (Rendezvous r = new Rendezvous(env(1, 0, freePort()), "", 20_000, 100)) {
            IllegalStateException e = assertThrows(IllegalStateException.class,
                    () -> new TcpStore.Client("127.0.0.1", r.port(), "", 1, "stranger", 5000, 100, 1000, x -> {}));
            // (what a node started with --nnodes 2 meets when node 0 was started alone: the message says that case too)
            assertTrue(e.getMessage().contains("wrong rendezvous secret") && e.getMessage().contains("start every node with the same --nnodes"),
                    e.getMessage());
            r.agreeOnConfig("{\"a\": 1}"); // the run's own client still talks to its store
        }
        assertEquals("given", Rendezvous.effectiveSecret(1, "given"));
        assertEquals("", Rendezvous.effectiveSecret(2, ""));
        String a = Rendezvous.effectiveSecret(1, ""), b = Rendezvous.effectiveSecret(1, null);
        assertEquals(32, a.length());
        assertNotEquals(a, b);
    }

    /**
     * Whoever reaches the port without the secret can neither stop the run nor the store: garbage, a handshake that
     * names process 0's watch connection and hangs up before finishing it (this used to abort the run), a wrong answer;
     * and an authenticated connection that announces a value over the limit is cut off alone. A real process is served
     * throughout and nothing is aborted.
     */
    @Test
    void strangersNeitherAbortTheRunNorStopTheStore() throws Exception {
        int port = freePort();
        try (TcpStore.Server s = new TcpStore.Server(InetAddress.getLoopbackAddress(), port, "right", 2, 100, 1000);
             TcpStore.Client ok = new TcpStore.Client("127.0.0.1", port, "right", 1, "test", 5000, 100, 1000, r -> {})) {
            java.util.Set<Thread> runs = TcpStoreTest.threads(TcpStoreTest.CONN_THREAD); // (the process's two connections)
            try (java.net.Socket g = new java.net.Socket("127.0.0.1", port)) { // garbage instead of the handshake
                byte[] junk = new byte[4096];
                new SecureRandom().nextBytes(junk);
                g.getOutputStream().write(junk);
            }
            for (boolean finishHandshake : new boolean[] {false, true})
                try (java.net.Socket w = new java.net.Socket("127.0.0.1", port)) { // "process 0, watch", with a wrong answer
                    java.io.DataInputStream in = new java.io.DataInputStream(w.getInputStream());
                    java.io.DataOutputStream out = new java.io.DataOutputStream(w.getOutputStream());
                    assertEquals(TcpStore.MAGIC, in.readUTF());
                    in.readFully(new byte[32]);
                    out.writeUTF(TcpStore.MAGIC);
                    out.write(new byte[32]);
                    out.write(new byte[32]); // (the client's nonce)
                    out.writeInt(0);
                    out.writeUTF("watch");
                    if (finishHandshake) {
                        out.writeUTF("stranger");
                        out.flush();
                        assertTrue(TcpStore.Msg.read(in).key().contains("wrong rendezvous secret"));
                    }
                    out.flush(); // and hang up
                }
            try (java.net.Socket big = new java.net.Socket("127.0.0.1", port)) { // authenticated, then a 2 GiB value announced
                big.setSoTimeout(10_000);
                java.io.DataInputStream in = new java.io.DataInputStream(big.getInputStream());
                java.io.DataOutputStream out = new java.io.DataOutputStream(big.getOutputStream());
                assertEquals(TcpStore.MAGIC, in.readUTF());
                byte[] nonce = new byte[32];
                in.readFully(nonce);
                out.writeUTF(TcpStore.MAGIC);
                out.write(TcpStore.hmac("right", nonce));
                out.write(new byte[32]); // (the client's nonce)
                out.writeInt(0);
                out.writeUTF("ctl");
                out.writeUTF("big");
                out.flush();
                assertEquals("OK", TcpStore.Msg.read(in).op());
                out.writeUTF("SET");
                out.writeUTF("k");
                out.writeLong(0);
                out.writeLong(0);
                out.writeInt(Integer.MAX_VALUE);
                out.flush();
                assertEquals(-1, in.read(), "the store ends that connection without reading 2 GiB");
            }
            // the store accepts in order and answered the last stranger, so every stranger's thread has started; once
            // they have ended every stranger's connection is handled, and a departure wrongly counted has aborted
            TcpStoreTest.awaitNewThreadsEnded(TcpStoreTest.CONN_THREAD, runs);
            assertNull(s.abortReason(), "no stranger stops the run");
            ok.set("k", new byte[] {7});
            assertArrayEquals(new byte[] {7}, ok.get("k", 1000), "the store still serves the run's processes");
        }
    }

    @Test
    void anUnreachableMasterTimesOutWithAMessage() throws Exception {
        int port = freePort(); // nothing listens there
        IOException e = assertThrows(IOException.class, () -> new Rendezvous(env(2, 1, port), "", 1000, 100));
        assertTrue(e.getMessage().startsWith("could not reach the rendezvous store at 127.0.0.1:" + port + " within 1.0 s (MASTER_ADDR/MASTER_PORT"), e.getMessage());
    }

    @Test
    void aConfigThatDiffersStopsEveryProcessNamingTheKey() throws Exception {
        int port = freePort();
        CompletableFuture<Rendezvous> zero = rankZero(port);
        try (Rendezvous one = new Rendezvous(env(2, 1, port), "", 20_000, 100); Rendezvous r0 = zero.get(30, TimeUnit.SECONDS)) {
            List<String> heard = new ArrayList<>();
            r0.onAbort(heard::add);
            CompletableFuture<Void> rank0 = CompletableFuture.runAsync(() -> r0.agreeOnConfig("{\"learning_rate\": 2e-6, \"sft_warmup\": {\"steps\": 0}}"));
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> one.agreeOnConfig("{\"learning_rate\": 2e-6, \"sft_warmup\": {\"steps\": 5}}"));
            assertTrue(e.getMessage().startsWith("config mismatch between the nodes: sft_warmup.steps is 5 here but 0 on rank 0"), e.getMessage());
            Exception x = assertThrows(Exception.class, () -> rank0.get(30, TimeUnit.SECONDS));
            assertTrue(String.valueOf(x.getCause().getMessage()).contains("sft_warmup.steps is 5 here but 0 on rank 0"), String.valueOf(x.getCause()));
        }
    }

    /** Joining in the background; the future fails with what the constructor threw. */
    static CompletableFuture<Rendezvous> join(DistEnv env) {
        return CompletableFuture.supplyAsync(() -> {
            try {
                return new Rendezvous(env, "", 20_000, 100);
            } catch (IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        });
    }

    static String failure(CompletableFuture<Rendezvous> f) {
        Exception x = assertThrows(Exception.class, () -> f.get(30, TimeUnit.SECONDS).close(), "joined a run that should have stopped");
        return String.valueOf(x.getCause() == null ? x.getMessage() : x.getCause().getMessage());
    }

    /** Two nodes started with the same node rank: the second to join stops the run, and every process hears why. */
    @Test
    void twoProcessesWithOneIndexStopTheRunAtJoin() throws Exception {
        int port = freePort();
        CompletableFuture<Rendezvous> zero = join(env(3, 0, port));
        CompletableFuture<Rendezvous> a = join(env(3, 1, port)), b = join(env(3, 1, port));
        String why = "joined a run that already has a process 1: two nodes were started with the same node rank";
        List<String> messages = List.of(failure(a), failure(b), failure(zero));
        assertEquals(3, messages.stream().filter(m -> m.contains(why)).count(), messages.toString());
        assertTrue(messages.stream().anyMatch(m -> m.startsWith("process 1 (")), "the duplicate names itself: " + messages);
    }

    /**
     * A second copy of a process that starts after the run has formed (a node's command run again, a requeued task)
     * is refused by the store and stops; the running job goes on: its processes hear no abort and still pass a
     * barrier, and a process's death is still noticed afterwards.
     */
    @Test
    void aLateSecondCopyOfAProcessStopsAloneAndTheRunGoesOn() throws Exception {
        int port = freePort();
        CompletableFuture<Rendezvous> zero = rankZero(port);
        try (Rendezvous one = new Rendezvous(env(2, 1, port), "", 20_000, 100)) {
            Rendezvous r0 = zero.get(30, TimeUnit.SECONDS);
            BlockingQueue<String> heard = new ArrayBlockingQueue<>(4);
            r0.onAbort(heard::add);
            one.onAbort(heard::add);
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> new Rendezvous(env(2, 1, port), "", 20_000, 100).close());
            assertTrue(e.getMessage().contains("process 1 is already in the running job (") && e.getMessage().contains("it stops here, and the job goes on"),
                    e.getMessage());
            CompletableFuture<Void> b0 = CompletableFuture.runAsync(() -> r0.barrier("after"));
            one.barrier("after");
            b0.get(30, TimeUnit.SECONDS);
            assertNull(heard.poll(1, TimeUnit.SECONDS), "the running job heard no abort");
            one.abandonForTests(); // the real process 1 dies: still noticed
            String why = heard.poll(30, TimeUnit.SECONDS);
            assertNotNull(why, "rank 0 never heard that process 1 died");
            assertTrue(why.contains("process 1 ("), why);
            r0.close();
        }
    }

    /** A node started with other --nnodes or --gpus than rank 0's: stopped at join, not left waiting at the barrier. */
    @Test
    void aNodeStartedForAnotherLayoutStopsTheRunAtJoin() throws Exception {
        int port = freePort();
        CompletableFuture<Rendezvous> zero = join(env(2, 0, port));
        DistEnv other = new DistEnv(4, 2, 1, new int[] {2, 3}, new int[] {0, 1}, "127.0.0.1", port);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> new Rendezvous(other, "", 20_000, 100).close());
        assertTrue(e.getMessage().contains("was started for world size 4 in 2 processes of 2 ranks, rank 0's process for world size 2 in 2 processes"
                + " of 1 rank: start every node with the same --nnodes and --gpus"), e.getMessage());
        assertTrue(failure(zero).contains("world size 4 in 2 processes of 2 ranks"));
    }

    @Test
    void losingRankZerosProcessReachesTheOthers() throws Exception {
        int port = freePort();
        CompletableFuture<Rendezvous> zero = rankZero(port);
        try (Rendezvous one = new Rendezvous(env(2, 1, port), "", 20_000, 100)) {
            Rendezvous r0 = zero.get(30, TimeUnit.SECONDS);
            BlockingQueue<String> heard = new ArrayBlockingQueue<>(4);
            one.onAbort(heard::add);
            r0.abandonForTests(); // as if its JVM died: no goodbye, the store's sockets closed
            String why = heard.poll(30, TimeUnit.SECONDS);
            assertNotNull(why, "process 1 never heard that rank 0's process is gone");
            assertTrue(why.contains("lost the rendezvous store at 127.0.0.1:" + port), why);
            assertThrows(CommunicatorException.class, () -> one.barrier("after"));
        }
    }

    @Test
    void environmentConventions() {
        DistEnv torchrun = DistEnv.fromEnvironment(Map.of("RANK", "5", "LOCAL_RANK", "1", "WORLD_SIZE", "8", "MASTER_ADDR", "n0", "MASTER_PORT", "1234"), 1);
        assertArrayEquals(new int[] {5}, torchrun.localRanks());
        assertArrayEquals(new int[] {1}, torchrun.localDevices());
        assertEquals(8, torchrun.processes());
        assertEquals("n0:1234", torchrun.masterAddr() + ":" + torchrun.masterPort());
        DistEnv node = DistEnv.fromEnvironment(Map.of("NODE_RANK", "1", "NNODES", "2", "LOCAL_WORLD_SIZE", "8", "MASTER_ADDR", "10.0.0.1"), 1);
        assertEquals(16, node.worldSize());
        assertEquals(8, node.localRanks()[0]);
        assertEquals(15, node.localRanks()[7]);
        assertEquals(7, node.localDevices()[7]);
        assertEquals(DistEnv.DEFAULT_PORT, node.masterPort());
        DistEnv slurm = DistEnv.fromEnvironment(Map.of("SLURM_NODEID", "2", "SLURM_NNODES", "4", "SLURM_JOB_NODELIST", "gpu[07-09,12]",
                "SLURM_NTASKS_PER_NODE", "1", "SLURM_PROCID", "2"), 8);
        assertEquals(32, slurm.worldSize());
        assertEquals(16, slurm.localRanks()[0]);
        assertEquals("gpu07", slurm.masterAddr());
        DistEnv slurmPerGpu = DistEnv.fromEnvironment(Map.of("SLURM_PROCID", "9", "SLURM_LOCALID", "1", "SLURM_NTASKS", "16",
                "SLURM_TASKS_PER_NODE", "8(x2)", "SLURM_JOB_NODELIST", "a1,b2", "SLURM_STEP_ID", "0"), 1);
        assertArrayEquals(new int[] {9}, slurmPerGpu.localRanks());
        assertEquals("a1", slurmPerGpu.masterAddr());
        assertEquals(List.of("gpu01", "gpu02", "gpu03", "gpu10", "login1"), DistEnv.hosts("gpu[01-03,10],login1"));
        assertEquals(List.of("r1-g08", "r1-g09", "r2-g08", "r2-g09"), DistEnv.hosts("r[1-2]-g[08-09]"));
        // malformed lists name the list and the part (an unclosed bracket was an internal error, "gpu[3-1]" nothing)
        for (String[] bad : new String[][] {{"gpu[01-03", "unmatched or empty brackets"}, {"gpu[]", "unmatched or empty brackets"},
                {"gpu[a-b]", "\"a-b\" in gpu[a-b] is not N or N-M"}, {"gpu[3-1],x", "the range 3-1 in gpu[3-1] is empty"},
                {"gpu]1[", "unmatched"}}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> DistEnv.hosts(bad[0]), bad[0]);
            assertTrue(e.getMessage().startsWith("Slurm node list \"" + bad[0] + "\"") && e.getMessage().contains(bad[1]), e.getMessage());
        }
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> DistEnv.fromEnvironment(Map.of("NNODES", "2", "NODE_RANK", "1"), 8));
        assertTrue(e.getMessage().contains("MASTER_ADDR is not set"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> DistEnv.fromEnvironment(Map.of("NNODES", "2", "LOCAL_WORLD_SIZE", "8", "WORLD_SIZE", "8",
                "MASTER_ADDR", "x"), 1));
        assertTrue(e.getMessage().contains("WORLD_SIZE 8 but 2 nodes x 8 GPUs = 16"), e.getMessage());
        // a MASTER_ADDR with its port, or white space, names no host: refused naming it (rank 0 failed in the resolver,
        // the others retried it until the rendezvous timeout)
        for (String[] bad : new String[][] {{"10.0.0.1:29500", "looks like host:port"}, {"node0:29500", "looks like host:port"},
                {"node 0", "is not a host name or address"}}) {
            IllegalArgumentException x = assertThrows(IllegalArgumentException.class, () -> DistEnv.fromEnvironment(Map.of("NNODES", "2", "NODE_RANK", "1",
                    "MASTER_ADDR", bad[0]), 8), bad[0]);
            assertTrue(x.getMessage().startsWith("MASTER_ADDR (--master-addr) ") && x.getMessage().contains(bad[1]), x.getMessage());
        }
        assertEquals("fe80::1", DistEnv.fromEnvironment(Map.of("NNODES", "2", "NODE_RANK", "1", "MASTER_ADDR", "fe80::1"), 8).masterAddr());
        // one process a rank: the variables' own names in what is wrong (a bad local rank failed only at cuda:L)
        for (String[] bad : new String[][] {{"RANK=5", "RANK", "5", "WORLD_SIZE", "2"}, {"WORLD_SIZE=0", "RANK", "0", "WORLD_SIZE", "0"},
                {"LOCAL_RANK=-3 is negative", "RANK", "0", "LOCAL_RANK", "-3"},
                {"LOCAL_RANK=5 is outside [0, LOCAL_WORLD_SIZE=2)", "RANK", "0", "LOCAL_RANK", "5", "LOCAL_WORLD_SIZE", "2"}}) {
            Map<String, String> env = new java.util.HashMap<>(Map.of("MASTER_ADDR", "127.0.0.1"));
            for (int i = 1; i < bad.length; i += 2) env.put(bad[i], bad[i + 1]);
            IllegalArgumentException x = assertThrows(IllegalArgumentException.class, () -> DistEnv.fromEnvironment(env, 1), bad[0]);
            assertTrue(x.getMessage().contains(bad[0]), x.getMessage());
        }
    }

    /**
     * A node name that resolves on node 0 to a loopback address (Debian's 127.0.1.1) must not confine the store to
     * loopback when other processes connect, possibly from other nodes; loopback literals and "localhost" stay there.
     */
    @Test
    void theStoreListensBeyondLoopbackWhenTheMasterNameResolvesToLoopbackHere() throws Exception {
        InetAddress debian = InetAddress.getByAddress("node0", new byte[] {127, 0, 1, 1});
        assertTrue(Rendezvous.bindAddress("node0", debian, 2).isAnyLocalAddress(), "node0 -> 127.0.1.1 with 2 processes: every interface");
        assertEquals(debian, Rendezvous.bindAddress("node0", debian, 1), "one process: nobody else connects");
        InetAddress lo = InetAddress.getByAddress("localhost", new byte[] {127, 0, 0, 1});
        assertEquals(lo, Rendezvous.bindAddress("127.0.0.1", lo, 8));
        assertEquals(lo, Rendezvous.bindAddress("localhost", lo, 8));
        InetAddress real = InetAddress.getByAddress("node0", new byte[] {10, 0, 0, 5});
        assertEquals(real, Rendezvous.bindAddress("node0", real, 2), "a real address is listened on as named");
        assertFalse(Rendezvous.bindAddress("::1", InetAddress.getByName("::1"), 2).isAnyLocalAddress());
    }
}
