package org.grpo4j.internal.dist;

import static org.junit.jupiter.api.Assertions.*;

import java.io.BufferedInputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.EOFException;
import java.net.InetAddress;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/** The store's behaviour after an abort and under connections that never authenticate (in one JVM, on loopback). */
class TcpStoreTest {
    /** An authenticated "watch" connection of process {@code p}, made by hand as TcpStore.Client makes it. */
    static Socket watch(int port, String secret, int p) throws Exception {
        Socket s = new Socket("127.0.0.1", port);
        DataInputStream in = new DataInputStream(s.getInputStream());
        DataOutputStream out = new DataOutputStream(s.getOutputStream());
        assertEquals(TcpStore.MAGIC, in.readUTF());
        byte[] nonce = new byte[32];
        in.readFully(nonce);
        out.writeUTF(TcpStore.MAGIC);
        out.write(TcpStore.hmac(secret, nonce));
        out.write(new byte[32]); // (the client's nonce: the store's proof in its OK is not checked here)
        out.writeInt(p);
        out.writeUTF("watch");
        out.writeUTF("test");
        out.flush();
        assertEquals("OK", TcpStore.Msg.read(in).op());
        return s;
    }

    /** The store's thread names: one thread per connection, and one pinger per watch connection. */
    static final String CONN_THREAD = "grpo4j-rdzv-conn", PING_THREAD = "grpo4j-rdzv-ping";

    /** The live threads named {@code name}. */
    static Set<Thread> threads(String name) {
        Set<Thread> s = new HashSet<>();
        for (Thread t : Thread.getAllStackTraces().keySet()) if (t.getName().equals(name)) s.add(t);
        return s;
    }

    /**
     * Waits for every live thread named {@code name} that is not in {@code before} to end (at most 60 s, a guard
     * against a hang, not a timing); returns how many it waited for.
     */
    static int awaitNewThreadsEnded(String name, Set<Thread> before) throws InterruptedException {
        long deadline = System.nanoTime() + 60_000_000_000L;
        int n = 0;
        for (Thread t : threads(name)) {
            if (before.contains(t)) continue;
            n++;
            t.join(Math.max(1, (deadline - System.nanoTime()) / 1_000_000L));
            assertFalse(t.isAlive(), t.getName() + " still running after 60 s");
        }
        return n;
    }

    /**
     * A client trusts a store only when it proves the secret: a server that greets as the store does and answers OK
     * without the proof (something else bound MASTER_PORT first, a man in the middle) is refused before any request,
     * as is a store with another secret; the real store with the same secret is accepted.
     */
    @Test
    void aClientRefusesAStoreThatDoesNotProveTheSecret() throws Exception {
        try (java.net.ServerSocket fake = new java.net.ServerSocket(0, 50, InetAddress.getLoopbackAddress())) {
            Thread t = new Thread(() -> {
                try (Socket c = fake.accept()) {
                    DataOutputStream out = new DataOutputStream(c.getOutputStream());
                    DataInputStream in = new DataInputStream(c.getInputStream());
                    out.writeUTF(TcpStore.MAGIC);
                    out.write(new byte[32]);
                    out.flush();
                    in.readUTF();
                    in.readFully(new byte[64]); // the answer and the client's nonce, ignored
                    in.readInt();
                    in.readUTF();
                    in.readUTF();
                    new TcpStore.Msg("OK", "", 0, 0, new byte[32]).write(out);
                    out.flush();
                    in.read(); // until the client hangs up
                } catch (java.io.IOException e) {
                    // the client hung up
                }
            });
            t.start();
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> new TcpStore.Client("127.0.0.1", fake.getLocalPort(), "the-secret", 1,
                    "test", 5_000, 100, 1_000, r -> {}).close());
            assertTrue(e.getMessage().contains("does not know this run's rendezvous secret"), e.getMessage());
            t.join(5_000);
        }
        int port = RendezvousTest.freePort();
        try (TcpStore.Server s = new TcpStore.Server(InetAddress.getLoopbackAddress(), port, "the-secret", 2, 100, 60_000)) {
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> new TcpStore.Client("127.0.0.1", port, "other", 1, "test", 5_000,
                    100, 1_000, r -> {}).close());
            assertTrue(e.getMessage().contains("wrong rendezvous secret"), e.getMessage()); // (the store refuses first)
            TcpStore.Client ok = new TcpStore.Client("127.0.0.1", port, "the-secret", 1, "test", 5_000, 100, 1_000, r -> {});
            ok.close();
        }
    }

    /**
     * A broken peer's failures reach the user with the address and a hint, not raw ("Read timed out", "malformed input
     * around byte 0"): a server that stalls after its greeting, and one whose greeting is not text. A key past the
     * limit is refused on the client before it is sent (the store ended the connection, and later calls said "null").
     */
    @Test
    void aBrokenPeersFailuresNameTheAddress() throws Exception {
        for (boolean stall : new boolean[] {true, false})
            try (java.net.ServerSocket fake = new java.net.ServerSocket(0, 50, InetAddress.getLoopbackAddress())) {
                Thread t = new Thread(() -> {
                    try (Socket c = fake.accept()) {
                        DataOutputStream out = new DataOutputStream(c.getOutputStream());
                        if (stall) {
                            out.writeUTF(TcpStore.MAGIC);
                            out.write(new byte[32]);
                        } else out.write(new byte[] {0, 2, (byte) 0xff, (byte) 0xfe});
                        out.flush();
                        c.getInputStream().read(new byte[1 << 16]); // the client's answer, then nothing until it hangs up
                        c.getInputStream().read();
                    } catch (java.io.IOException e) {
                        // the client hung up
                    }
                });
                t.start();
                java.io.IOException e = assertThrows(java.io.IOException.class, () -> new TcpStore.Client("127.0.0.1", fake.getLocalPort(), "s", 1,
                        "test", 1_000, 100, 1_000, r -> {}).close());
                String where = "the server at /127.0.0.1:" + fake.getLocalPort();
                assertTrue(e.getMessage().startsWith(where) && e.getMessage().contains(stall ? "broke off the rendezvous handshake"
                        : "is not a grpo4j rendezvous store"), e.getMessage());
                t.join(5_000);
            }
        int port = RendezvousTest.freePort();
        try (TcpStore.Server s = new TcpStore.Server(InetAddress.getLoopbackAddress(), port, "s", 2, 100, 60_000);
             TcpStore.Client c = new TcpStore.Client("127.0.0.1", port, "s", 1, "test", 5_000, 100, 60_000, r -> {})) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> c.add("k".repeat(600), 1));
            assertTrue(e.getMessage().contains("of 600 bytes exceeds 512"), e.getMessage());
            assertEquals(1, c.add("k", 1), "the connection is still good");
        }
    }

    /**
     * After an abort a watch connection gets the reason once and then nothing: the server's pinger looped without a
     * pause once the abort was set (84,889 messages in 0.5 s), which filled the socket of a process that had stopped
     * reading and then blocked holding the stream.
     */
    @Test
    void afterAnAbortAWatchGetsTheReasonOnceAndThenNothing() throws Exception {
        int port = RendezvousTest.freePort();
        try (TcpStore.Server s = new TcpStore.Server(InetAddress.getLoopbackAddress(), port, "k", 2, 100, 60_000);
             Socket w = watch(port, "k", 1)) {
            w.setSoTimeout(200);
            DataInputStream in = new DataInputStream(new BufferedInputStream(w.getInputStream()));
            Thread.sleep(300); // a few heartbeats first
            s.abort("test abort");
            List<String> ops = new ArrayList<>();
            long end = System.nanoTime() + 1_000_000_000L;
            while (System.nanoTime() < end) {
                try {
                    TcpStore.Msg m = TcpStore.Msg.read(in);
                    ops.add(m.op() + (m.op().equals("ABORT") ? ":" + m.key() : ""));
                } catch (SocketTimeoutException e) {
                    // silence
                }
            }
            int at = ops.indexOf("ABORT:test abort");
            assertTrue(at >= 0, "the abort arrived: " + ops);
            assertEquals(ops.size() - 1, at, "nothing after it in 1 s (heartbeat 0.1 s): " + ops.subList(at, Math.min(ops.size(), at + 5)));
            assertTrue(ops.subList(0, at).stream().allMatch("PING"::equals), ops.toString());
        }
    }

    /** Closing the store after an abort does not wait for a process that stopped reading (as a client does after ABORT). */
    @Test
    void closeAfterAnAbortDoesNotWaitForAPeerThatStoppedReading() throws Exception {
        int port = RendezvousTest.freePort();
        TcpStore.Server s = new TcpStore.Server(InetAddress.getLoopbackAddress(), port, "k", 2, 10, 60_000);
        Set<Thread> pingers = threads(PING_THREAD);
        try (Socket w = watch(port, "k", 1)) {
            assertEquals("PING", TcpStore.Msg.read(new DataInputStream(w.getInputStream())).op()); // its pinger runs; no more reads
            // (taken before the abort: the pinger loops until then, and may have ended by the time it is looked for after)
            Set<Thread> mine = threads(PING_THREAD);
            mine.removeAll(pingers);
            assertEquals(1, mine.size(), "the watch connection's pinger");
            s.abort("test abort");
            // the pinger writes the abort and ends (the old one wrote on until the unread socket's buffer was full, then
            // blocked holding the stream that close() takes)
            for (Thread t : mine) {
                t.join(60_000); // (a guard against a hang, not a timing)
                assertFalse(t.isAlive(), "the pinger still writes after the abort");
            }
            CompletableFuture<Void> closing = CompletableFuture.runAsync(s::close);
            closing.get(5, TimeUnit.SECONDS);
        }
    }

    /**
     * Connections that never authenticate (a port scanner, a health check, a flood) cannot stop the store or keep a
     * process out: beyond {@value TcpStore#MAX_HANDSHAKES} in their handshake the store closes the oldest to make room
     * (it closed the newcomers before, so strangers that kept reconnecting kept every process out), and a process gets
     * in while the strangers stay; the run is not aborted (an accept error ended the store's accept loop with an abort
     * before).
     */
    @Test
    void strangersNeitherStopTheStoreNorKeepAProcessOut() throws Exception {
        int port = RendezvousTest.freePort();
        List<Socket> strangers = new ArrayList<>();
        try (TcpStore.Server s = new TcpStore.Server(InetAddress.getLoopbackAddress(), port, "k", 1, 100, 60_000)) {
            for (int i = 0; i < TcpStore.MAX_HANDSHAKES + 20; i++) {
                strangers.add(new Socket("127.0.0.1", port));
                Thread.sleep(i == TcpStore.MAX_HANDSHAKES - 1 ? 1200 : 2); // (in order; only a handshake past its first second goes)
            }
            // the newest stranger is greeted; the oldest was closed after its greeting to make room
            Socket last = strangers.get(strangers.size() - 1), first = strangers.get(0);
            last.setSoTimeout(5000);
            assertEquals(TcpStore.MAGIC, new DataInputStream(last.getInputStream()).readUTF(), "the newest is served");
            first.setSoTimeout(5000);
            DataInputStream in = new DataInputStream(first.getInputStream());
            assertEquals(TcpStore.MAGIC, in.readUTF());
            in.readFully(new byte[32]);
            assertThrows(EOFException.class, in::readByte, "the oldest was closed");
            // it gets in while the strangers stay (kept out, the client would fail at its 20 s connect timeout)
            try (TcpStore.Client c = new TcpStore.Client("127.0.0.1", port, "k", 0, "test", 20_000, 100, 60_000, why -> {})) {
                c.set("key", new byte[] {7});
                assertArrayEquals(new byte[] {7}, c.get("key", 5_000));
            }
            assertNull(s.abortReason(), "strangers do not fail the run");
        } finally {
            for (Socket x : strangers) x.close();
        }
    }

    /**
     * An abort while another thread's request waits on the store (a GET for a key nobody sets, for two minutes) reaches
     * the store at once and ends that request: it queued behind it, and the other processes heard of the failure only
     * when the request timed out.
     */
    @Test
    void anAbortDoesNotWaitBehindAPendingRequest() throws Exception {
        int port = RendezvousTest.freePort();
        java.util.concurrent.atomic.AtomicReference<String> heard = new java.util.concurrent.atomic.AtomicReference<>();
        try (TcpStore.Server s = new TcpStore.Server(InetAddress.getLoopbackAddress(), port, "k", 2, 100, 60_000);
             TcpStore.Client c = new TcpStore.Client("127.0.0.1", port, "k", 1, "test", 20_000, 100, 60_000, heard::set)) {
            java.util.concurrent.atomic.AtomicReference<Throwable> got = new java.util.concurrent.atomic.AtomicReference<>();
            Thread waiter = new Thread(() -> {
                try {
                    c.get("never/set", 120_000);
                } catch (Throwable t) {
                    got.set(t);
                }
            }, "waiter");
            waiter.start();
            while (waiter.getState() != Thread.State.RUNNABLE || !waiterInRead(waiter)) Thread.onSpinWait(); // its GET is on the wire
            assertTimeoutPreemptively(java.time.Duration.ofSeconds(60), () -> c.abort("rank 3 failed"), "the abort waited for the GET");
            assertEquals("rank 3 failed", s.abortReason());
            waiter.join(60_000);
            assertFalse(waiter.isAlive(), "the waiting GET ended with the abort");
            assertTrue(got.get() instanceof CommunicatorException && got.get().getMessage().contains("the run was aborted: rank 3 failed"),
                    String.valueOf(got.get()));
            // (the listener hears it on the watch thread just after the reason is recorded: wait for that thread)
            long until = System.nanoTime() + java.util.concurrent.TimeUnit.SECONDS.toNanos(60);
            while (heard.get() == null && System.nanoTime() < until) Thread.onSpinWait();
            assertEquals("rank 3 failed", heard.get());
        }
    }

    /** Whether t is reading a socket (its request written, waiting for the answer). */
    private static boolean waiterInRead(Thread t) {
        for (StackTraceElement e : t.getStackTrace()) if (e.getMethodName().equals("read") && e.getClassName().equals("org.grpo4j.internal.dist.TcpStore$Msg")) return true;
        return false;
    }

    /**
     * A reason longer than a message's key reaches the store cut to fit (a long path in a config mismatch ended the
     * aborting process's connection unheard: the others waited out a barrier's timeout or blamed a lost store).
     */
    @Test
    void aLongAbortReasonReachesTheStoreCutToFit() throws Exception {
        int port = RendezvousTest.freePort();
        String reason = "config mismatch at /" + "d\u00e9".repeat(400) + "/data.jsonl";
        try (TcpStore.Server s = new TcpStore.Server(InetAddress.getLoopbackAddress(), port, "k", 2, 100, 60_000);
             TcpStore.Client c = new TcpStore.Client("127.0.0.1", port, "k", 1, "test", 20_000, 100, 60_000, why -> {})) {
            try {
                c.abort(reason);
            } catch (CommunicatorException heard) { // (the store's answer may come after its watch connection told it)
                assertTrue(heard.getMessage().contains("the run was aborted: config mismatch"), heard.getMessage());
            }
            String got = s.abortReason();
            assertNotNull(got, "the store heard the abort");
            assertTrue(got.endsWith("...") && reason.startsWith(got.substring(0, got.length() - 3)), got);
            assertTrue(got.getBytes(java.nio.charset.StandardCharsets.UTF_8).length <= TcpStore.MAX_KEY, got);
            assertTrue(got.length() > 200, "most of it is kept: " + got.length());
        }
    }
}
