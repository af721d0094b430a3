package org.grpo4j.internal.dist;

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

/**
 * A small key-value store over TCP for the rendezvous of a multi-process run (what torch's TCPStore does for
 * torchrun): the process hosting rank 0 serves it at MASTER_ADDR:MASTER_PORT; every process (that one included)
 * connects. It carries the NCCL unique id, the run's config, checkpoint paths and barriers, and it notices a process
 * that dies.
 *
 * <ul>
 *   <li>Authentication, both ways: the server sends a random nonce, the client answers HMAC-SHA256(secret, nonce)
 *       with a nonce of its own; a wrong answer is refused ("wrong rendezvous secret") and the connection closed, and
 *       the server's OK carries HMAC-SHA256(secret, "store" + the client's nonce), without which the client refuses
 *       the server (something else listening at MASTER_ADDR:MASTER_PORT would otherwise hand out the run's config,
 *       NCCL id and checkpoint paths). The traffic is neither encrypted nor integrity-protected: the network between
 *       the nodes must be trusted. The secret (GRPO4J_RDZV_SECRET) is required when the server listens beyond
 *       loopback.</li>
 *   <li>Bounded: keys up to {@value #MAX_KEY} bytes, values up to {@value #MAX_VALUE} bytes; anything larger ends the
 *       connection with an error. Every wait has a timeout.</li>
 *   <li>Liveness: each process keeps a second ("watch") connection on which both sides send a heartbeat; a process
 *       whose connection ends without a goodbye, or that is silent for the dead time, fails the run: the store
 *       aborts, every waiting call returns the reason and every watch connection gets it, so every process stops with
 *       a message instead of hanging. A client that loses the server (rank 0's process died) reports that too.</li>
 * </ul>
 */
public final class TcpStore {
    private TcpStore() {}

    public static final int MAX_KEY = 512, MAX_VALUE = 1 << 20;

    /** The barrier every process passes when it joins (Rendezvous): past it, the run has formed. */
    public static final String JOIN_BARRIER = "join";

    /**
     * An abort's reason cut to what a message's key carries ({@value #MAX_KEY} UTF-8 bytes, ending in "..."): a longer
     * one ended the sender's connection unheard, and the other processes waited out their timeouts or blamed a lost store.
     */
    static String clip(String reason) {
        if (reason == null) return "";
        if (reason.getBytes(StandardCharsets.UTF_8).length <= MAX_KEY) return reason;
        StringBuilder b = new StringBuilder();
        int bytes = 0;
        for (int i = 0; i < reason.length(); ) {
            int cp = reason.codePointAt(i), n = new String(Character.toChars(cp)).getBytes(StandardCharsets.UTF_8).length;
            if (bytes + n > MAX_KEY - 3) break;
            b.appendCodePoint(cp);
            bytes += n;
            i += Character.charCount(cp);
        }
        return b.append("...").toString();
    }
    /** Connections in their handshake at once, and the time one may take from its accept (a process answers the nonce at once). */
    static final int MAX_HANDSHAKES = 128, HANDSHAKE_MILLIS = 10_000;
    static final String MAGIC = "grpo4j-rendezvous-2"; // (2: the server proves the secret too)

    /** Fails unless {@code secret} is set when {@code bind} is not a loopback address. */
    public static void requireSecret(InetAddress bind, String secret) {
        if (!bind.isLoopbackAddress() && (secret == null || secret.isEmpty()))
            throw new IllegalArgumentException("the rendezvous store would listen on " + bind.getHostAddress() + ", beyond loopback: set GRPO4J_RDZV_SECRET"
                    + " to the same random value on every node (e.g. export GRPO4J_RDZV_SECRET=$(openssl rand -hex 16))");
    }

    static byte[] hmac(String secret, byte[] nonce) { return hmac(secret, "", nonce); }

    /** The server's proof that it knows the secret: HMAC over "store" and the client's nonce (never a client's answer). */
    static byte[] storeProof(String secret, byte[] clientNonce) { return hmac(secret, "store", clientNonce); }

    private static byte[] hmac(String secret, String label, byte[] nonce) {
        try {
            Mac mac = Mac.getInstance("HmacSHA256");
            byte[] key = (secret == null ? "" : secret).getBytes(StandardCharsets.UTF_8);
            mac.init(new SecretKeySpec(key.length == 0 ? new byte[1] : key, "HmacSHA256"));
            mac.update(MAGIC.getBytes(StandardCharsets.UTF_8));
            mac.update(label.getBytes(StandardCharsets.UTF_8));
            return mac.doFinal(nonce);
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException(e); // every JDK has HmacSHA256
        }
    }

    /** One message: an op or status, a key, two numbers and a value. */
    record Msg(String op, String key, long a, long b, byte[] value) {
        Msg(String op) { this(op, "", 0, 0, new byte[0]); }

        void write(DataOutputStream out) throws IOException {
            int kb = key.getBytes(StandardCharsets.UTF_8).length;
            if (kb > MAX_KEY) // (the store ended the connection over it, and every later call failed with "null")
                throw new IllegalArgumentException("rendezvous: key \"" + key.substring(0, 40) + "...\" of " + kb + " bytes exceeds " + MAX_KEY);
            out.writeUTF(op);
            out.writeUTF(key);
            out.writeLong(a);
            out.writeLong(b);
            out.writeInt(value.length);
            out.write(value);
            out.flush();
        }

        static Msg read(DataInputStream in) throws IOException {
            String op = in.readUTF(), key = in.readUTF();
            if (key.getBytes(StandardCharsets.UTF_8).length > MAX_KEY) throw new IOException("key of more than " + MAX_KEY + " bytes");
            long a = in.readLong(), b = in.readLong();
            int n = in.readInt();
            if (n < 0 || n > MAX_VALUE) throw new IOException("value of " + n + " bytes exceeds the " + MAX_VALUE + "-byte limit");
            byte[] v = new byte[n];
            in.readFully(v);
            return new Msg(op, key, a, b, v);
        }
    }

    // ---- server -------------------------------------------------------------------------------------------------

    /** The store, served by the process hosting rank 0. */
    public static final class Server implements AutoCloseable {
        private final ServerSocket socket;
        private final String secret;
        private final int processes;
        private final long heartbeatMillis, deadMillis;
        private final Map<String, byte[]> values = new HashMap<>();
        private final Map<String, Long> counters = new HashMap<>();
        private final Map<Integer, String> who = new HashMap<>();
        private final List<Socket> open = new ArrayList<>();
        private final java.util.Set<Integer> finished = new java.util.HashSet<>();
        /** The processes with a live watch connection (a second copy of one, once the run has formed, is refused). */
        private final java.util.Set<Integer> watching = new java.util.HashSet<>();
        private final List<DataOutputStream> watchOuts = new ArrayList<>(); // every process's watch connection
        /** The watch streams that got the abort already (under each stream's own lock). */
        private final java.util.Set<DataOutputStream> abortSent = java.util.concurrent.ConcurrentHashMap.newKeySet();
        /** Connections not yet past the handshake: bounded, so that strangers cannot use up threads or descriptors. */
        private final java.util.concurrent.Semaphore handshakes = new java.util.concurrent.Semaphore(MAX_HANDSHAKES);
        /** The connections in their handshake, oldest first (the first to go when every slot is taken). */
        private final java.util.concurrent.ConcurrentLinkedDeque<Pending> pending = new java.util.concurrent.ConcurrentLinkedDeque<>();

        private record Pending(Socket socket, java.util.concurrent.atomic.AtomicBoolean past, long since) {}

        /** A handshake younger than this is not closed to make room (a process answers within milliseconds). */
        private static final long EVICTABLE_NANOS = 1_000_000_000L;
        /** Closes a connection still in its handshake {@value #HANDSHAKE_MILLIS} ms after its accept (a read timeout restarts at each byte). */
        private final java.util.concurrent.ScheduledExecutorService handshakeDeadlines = java.util.concurrent.Executors.newSingleThreadScheduledExecutor(r -> {
            Thread t = new Thread(r, "grpo4j-rdzv-handshake-deadline");
            t.setDaemon(true);
            return t;
        });
        private final SecureRandom random = new SecureRandom();
        private String aborted;
        private volatile boolean closed;

        /**
         * Listens on {@code bind}:{@code port} for {@code processes} processes; heartbeats every
         * {@code heartbeatMillis}, a process silent for {@code deadMillis} is dead.
         */
        public Server(InetAddress bind, int port, String secret, int processes, long heartbeatMillis, long deadMillis) throws IOException {
            requireSecret(bind, secret);
            this.secret = secret;
            this.processes = processes;
            this.heartbeatMillis = heartbeatMillis;
            this.deadMillis = deadMillis;
            ServerSocket s = new ServerSocket();
            s.setReuseAddress(true);
            try {
                s.bind(new InetSocketAddress(bind, port), 64);
            } catch (IOException e) {
                s.close();
                throw new IOException("the rendezvous store cannot listen on " + bind.getHostAddress() + ":" + port + ": " + e.getMessage()
                        + " (MASTER_PORT in use? another run on this node? Or is this node not MASTER_ADDR, and was it started as node 0?"
                        + " Only the node with rank 0 serves the store)", e);
            }
            this.socket = s;
            daemon("grpo4j-rdzv-accept", this::acceptLoop).start();
        }

        /** The port it listens on (useful with port 0). */
        public int port() { return socket.getLocalPort(); }

        /** Why the run was aborted, or null. */
        public synchronized String abortReason() { return aborted; }

        /**
         * Accepts connections for good: an accept that fails (descriptors or threads run out, as a flood of connections
         * that never authenticate would cause) is retried after a pause, not the run's end, since only a process that
         * proved the secret may fail the run; and while {@value #MAX_HANDSHAKES} connections are in their handshake, the
         * oldest of them is closed to make room for a new one (a process retries its connection until its timeout).
         */
        private void acceptLoop() {
            while (!closed) {
                Socket c;
                try {
                    c = socket.accept();
                } catch (IOException e) {
                    if (closed || socket.isClosed()) return;
                    pause(100);
                    continue;
                }
                if (!handshakes.tryAcquire()) {
                    // full: the oldest handshake goes (a process answers within milliseconds, so only connections that
                    // dawdle are closed; refusing the newcomer let a flood of strangers keep every process out)
                    // (only one past its first second: a process in the middle of its answer is not cut off)
                    for (Pending old; (old = pending.peekFirst()) != null && System.nanoTime() - old.since() > EVICTABLE_NANOS; ) {
                        pending.remove(old);
                        if (old.past().compareAndSet(false, true)) {
                            closeQuietly(old.socket()); // its serving thread's read fails and releases the permit
                            break;
                        }
                    }
                    boolean got = false;
                    try {
                        got = handshakes.tryAcquire(200, java.util.concurrent.TimeUnit.MILLISECONDS);
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                    if (!got) {
                        closeQuietly(c);
                        continue;
                    }
                }
                synchronized (this) {
                    open.add(c);
                }
                java.util.concurrent.atomic.AtomicBoolean past = new java.util.concurrent.atomic.AtomicBoolean();
                pending.addLast(new Pending(c, past, System.nanoTime()));
                try {
                    handshakeDeadlines.schedule(() -> {
                        // (one compare-and-set on both sides: the handshake finishes or its deadline closes it, never both;
                        // the serving thread's read then fails and releases the permit)
                        if (past.compareAndSet(false, true)) closeQuietly(c);
                    }, HANDSHAKE_MILLIS, java.util.concurrent.TimeUnit.MILLISECONDS);
                    daemon("grpo4j-rdzv-conn", () -> serve(c, past)).start();
                } catch (Throwable t) {  // (no thread to be had: an OutOfMemoryError here ended the loop silently)
                    synchronized (this) {
                        open.remove(c);
                    }
                    pending.removeIf(x -> x.socket() == c);
                    handshakes.release();
                    closeQuietly(c);
                    pause(100);
                }
            }
        }

        private static void closeQuietly(Socket c) {
            try {
                c.close();
            } catch (IOException e) {
                // closing
            }
        }

        private static void pause(long millis) {
            try {
                Thread.sleep(millis);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }

        /** One connection: its handshake (within {@value #HANDSHAKE_MILLIS} ms of its accept: {@code past} set after it), then its role. */
        private void serve(Socket c, java.util.concurrent.atomic.AtomicBoolean past) {
            int process = -1;
            String role = "";
            boolean authenticated = false; // only a process that proved the secret can fail the run by leaving
            boolean handshaking = true;
            try (c) {
                c.setTcpNoDelay(true);
                c.setSoTimeout(HANDSHAKE_MILLIS); // a process sends its answer as soon as it has the nonce
                DataInputStream in = new DataInputStream(new BufferedInputStream(c.getInputStream()));
                DataOutputStream out = new DataOutputStream(new BufferedOutputStream(c.getOutputStream()));
                byte[] nonce = new byte[32];
                random.nextBytes(nonce);
                out.writeUTF(MAGIC);
                out.write(nonce);
                out.flush();
                String magic = in.readUTF();
                byte[] answer = new byte[32], clientNonce = new byte[32];
                in.readFully(answer);
                in.readFully(clientNonce);
                process = in.readInt();
                role = in.readUTF();
                String info = in.readUTF();
                if (!MAGIC.equals(magic)) {
                    refuse(out, c, "not a grpo4j rendezvous client");
                    return;
                }
                if (!MessageDigest.isEqual(answer, hmac(secret, nonce))) {
                    refuse(out, c, "wrong rendezvous secret (GRPO4J_RDZV_SECRET differs from rank 0's node; without one there, rank 0's node"
                            + " was started as a run of one process, whose store has a secret of its own: start every node with the same --nnodes)");
                    return;
                }
                if (process < 0 || process >= processes) {
                    refuse(out, c, "process " + process + " outside [0, " + processes + ")");
                    return;
                }
                String copy = secondCopy(process);
                if (copy != null) {
                    refuse(out, c, copy);
                    return;
                }
                if (!past.compareAndSet(false, true)) return; // (its deadline closed it meanwhile)
                authenticated = true;
                handshaking = false;
                handshakes.release();
                pending.removeIf(x -> x.socket() == c);
                synchronized (this) {
                    who.put(process, info);
                }
                new Msg("OK", "", 0, 0, storeProof(secret, clientNonce)).write(out);
                if (role.equals("watch")) watch(process, info, in, out, c);
                else control(in, out, c);
            } catch (IOException | RuntimeException e) {
                if (authenticated && role.equals("watch") && !closed) {
                    boolean bye;
                    synchronized (this) {
                        bye = finished.contains(process);
                    }
                    if (!bye) abort("process " + process + " (" + describe(process) + ") " + (e instanceof SocketTimeoutException
                            ? "stopped answering (no heartbeat for " + deadMillis / 1000.0 + " s)" : "disconnected (its JVM died or was killed)"));
                }
            } finally {
                if (handshaking) handshakes.release();
                synchronized (this) {
                    open.remove(c);
                }
                pending.removeIf(x -> x.socket() == c);
            }
        }

        /**
         * Why a connection of {@code process} is refused as a second copy of a process already in the formed run (a
         * node's command run twice, a task requeued while the run lives), or null. Before the join barrier completes
         * it is let in, and the rendezvous stops the run at join naming it (two nodes started with one node rank);
         * after it, only the newcomer is turned away: the run goes on, and its process's description is kept.
         */
        private synchronized String secondCopy(int process) {
            if (!watching.contains(process) || counters.getOrDefault("barrier/" + JOIN_BARRIER, 0L) < processes) return null;
            return "process " + process + " is already in the running job (" + describe(process) + "): this is a second copy of it (the same node"
                    + " rank started twice, or a task requeued while the job runs); it stops here, and the job goes on";
        }

        /** Connections refused at their handshake, and the last one's reason and address (for a barrier's timeout). */
        private int refusals;
        private String lastRefusal;

        /** Refuses a connection at its handshake with {@code why}, noted for the processes waiting at a barrier. */
        private void refuse(DataOutputStream out, Socket c, String why) throws IOException {
            synchronized (this) {
                refusals++;
                lastRefusal = why + ", from " + c.getRemoteSocketAddress();
            }
            new Msg("ERR", why, 0, 0, new byte[0]).write(out);
        }

        /** What a barrier's timeout adds: the refused connections, which may be the processes it waits for. */
        private String refusalNote() {
            return refusals == 0 ? "" : "; the store refused " + refusals + (refusals == 1 ? " connection: " : " connections, the last: ") + lastRefusal;
        }

        private synchronized String describe(int process) {
            String i = who.get(process);
            return i == null ? "unknown" : i;
        }

        /** The heartbeat connection of a process: pings both ways, the abort pushed, a goodbye at the end. */
        private void watch(int process, String info, DataInputStream in, DataOutputStream out, Socket c) throws IOException {
            c.setSoTimeout((int) deadMillis);
            synchronized (this) {
                watchOuts.add(out);
                watching.add(process);
            }
            Thread pinger = daemon("grpo4j-rdzv-ping", () -> {
                try {
                    while (!c.isClosed()) {
                        String a;
                        synchronized (this) {
                            if (aborted == null) wait(heartbeatMillis);
                            a = aborted;
                        }
                        synchronized (out) {
                            if (a == null) {
                                new Msg("PING").write(out);
                                continue;
                            }
                            if (abortSent.add(out)) new Msg("ABORT", a, 0, 0, new byte[0]).write(out);
                        }
                        // the abort is the last message: the process stops reading after it, and pings written on
                        // would fill its socket's buffer until a write blocked holding the stream (close() takes it)
                        return;
                    }
                } catch (IOException | InterruptedException e) {
                    // the connection ended: the reader reports it
                }
            });
            pinger.start();
            try {
                while (true) {
                    Msg m = Msg.read(in);
                    if (m.op().equals("ABORT")) { // a process whose control connection is busy with a waiting request
                        abort(m.key());
                        continue;
                    }
                    if (m.op().equals("BYE")) {
                        synchronized (this) {
                            finished.add(process);
                            notifyAll();
                        }
                        return;
                    }
                }
            } finally {
                pinger.interrupt();
                synchronized (this) {
                    watching.remove(process);
                }
            }
        }

        private void control(DataInputStream in, DataOutputStream out, Socket c) throws IOException {
            c.setSoTimeout(0); // requests come when the process needs them; its death is seen on its watch connection
            while (true) {
                Msg m;
                try {
                    m = Msg.read(in);
                } catch (EOFException e) {
                    return;
                }
                handle(m).write(out);
            }
        }

        private synchronized Msg handle(Msg m) {
            long deadline = System.nanoTime() + m.b() * 1_000_000L;
            switch (m.op()) {
                case "SET" -> {
                    values.put(m.key(), m.value());
                    notifyAll();
                    return new Msg("OK");
                }
                case "ADD" -> {
                    long v = counters.getOrDefault(m.key(), 0L) + m.a();
                    counters.put(m.key(), v);
                    notifyAll();
                    return new Msg("NUM", "", v, 0, new byte[0]);
                }
                case "ABORT" -> {
                    abortLocked(m.key());
                    return new Msg("OK");
                }
                case "GET", "WAIT" -> {
                    while (true) {
                        if (aborted != null) return new Msg("ABORT", aborted, 0, 0, new byte[0]);
                        if (m.op().equals("GET") && values.containsKey(m.key())) return new Msg("VAL", "", 0, 0, values.get(m.key()));
                        long have = counters.getOrDefault(m.key(), 0L);
                        if (m.op().equals("WAIT") && have >= m.a()) return new Msg("OK", "", have, 0, new byte[0]);
                        long left = deadline - System.nanoTime();
                        if (left <= 0 || closed) return new Msg("TIMEOUT", clip(refusalNote()), have, 0, new byte[0]);
                        try {
                            wait(Math.max(1, left / 1_000_000L));
                        } catch (InterruptedException e) {
                            Thread.currentThread().interrupt();
                            return new Msg("TIMEOUT", "", have, 0, new byte[0]);
                        }
                    }
                }
                default -> {
                    return new Msg("ERR", "unknown request " + m.op(), 0, 0, new byte[0]);
                }
            }
        }

        /** Fails the run: waiting requests return {@code reason}, every watch connection gets it. */
        public void abort(String reason) {
            synchronized (this) {
                abortLocked(reason);
            }
        }

        private void abortLocked(String reason) {
            if (aborted == null) aborted = clip(reason);
            notifyAll();
        }

        /** Waits up to {@code millis} for every process's goodbye (so that none mistakes the closing for a death). */
        public synchronized void awaitGoodbyes(long millis) {
            long deadline = System.nanoTime() + millis * 1_000_000L;
            while (finished.size() < processes && aborted == null) {
                long left = deadline - System.nanoTime();
                if (left <= 0) return;
                try {
                    wait(Math.max(1, left / 1_000_000L));
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return;
                }
            }
        }

        @Override
        public void close() {
            closed = true;
            try {
                socket.close();
            } catch (IOException e) {
                // closing
            }
            handshakeDeadlines.shutdownNow();
            List<Socket> all;
            List<DataOutputStream> outs;
            String reason;
            synchronized (this) {
                all = new ArrayList<>(open);
                outs = new ArrayList<>(watchOuts);
                reason = aborted;
                notifyAll();
            }
            // an aborted run's reason reaches every process before its connections end (its pinger may not have sent it
            // yet), so that none reports a lost store instead of why the run stopped
            if (reason != null)
                for (DataOutputStream o : outs) {
                    synchronized (o) {
                        try {
                            if (abortSent.add(o)) new Msg("ABORT", reason, 0, 0, new byte[0]).write(o);
                        } catch (IOException e) {
                            // that process is gone already
                        }
                    }
                }
            for (Socket s : all) {
                try {
                    s.close();
                } catch (IOException e) {
                    // closing
                }
            }
        }
    }

    // ---- client -------------------------------------------------------------------------------------------------

    /** A process's connections to the store. */
    public static final class Client implements AutoCloseable {
        private final String where;
        private final Socket ctl, watch;
        private final DataInputStream ctlIn;
        private final DataOutputStream ctlOut, watchOut;
        private final Consumer<String> onAbort;
        private volatile boolean closing;
        private volatile String aborted;
        private final Object abortLock = new Object();

        /**
         * Connects process {@code process} to the store at {@code host}:{@code port}, retrying until
         * {@code timeoutMillis}; {@code onAbort} gets the reason when the run fails (from the watch thread).
         */
        public Client(String host, int port, String secret, int process, String info, long timeoutMillis, long heartbeatMillis, long deadMillis,
                      Consumer<String> onAbort) throws IOException {
            this.where = host + ":" + port;
            this.onAbort = onAbort;
            long deadline = System.nanoTime() + timeoutMillis * 1_000_000L;
            this.ctl = open(host, port, deadline, timeoutMillis, secret, process, "ctl", info);
            Socket w = null;
            try {
                this.ctlIn = new DataInputStream(new BufferedInputStream(ctl.getInputStream()));
                this.ctlOut = new DataOutputStream(new BufferedOutputStream(ctl.getOutputStream()));
                w = open(host, port, deadline, timeoutMillis, secret, process, "watch", info);
                this.watchOut = new DataOutputStream(new BufferedOutputStream(w.getOutputStream()));
            } catch (IOException | RuntimeException e) {
                ctl.close();
                if (w != null) w.close();
                throw e;
            }
            this.watch = w;
            watch.setSoTimeout((int) deadMillis);
            DataInputStream watchIn = new DataInputStream(new BufferedInputStream(watch.getInputStream()));
            daemon("grpo4j-rdzv-watch", () -> {
                try {
                    while (true) {
                        Msg m = Msg.read(watchIn);
                        if (m.op().equals("ABORT")) {
                            fail(m.key());
                            return;
                        }
                    }
                } catch (IOException e) {
                    if (!closing) fail("lost the rendezvous store at " + where + " (rank 0's process): " + (e instanceof SocketTimeoutException
                            ? "no heartbeat for " + deadMillis / 1000.0 + " s" : "the connection ended (its JVM died or was killed)"));
                }
            }).start();
            daemon("grpo4j-rdzv-heartbeat", () -> {
                try {
                    while (!closing) {
                        synchronized (watchOut) {
                            new Msg("PING").write(watchOut);
                        }
                        Thread.sleep(heartbeatMillis);
                    }
                } catch (IOException | InterruptedException e) {
                    // the watch thread reports a lost connection
                }
            }).start();
        }

        private void fail(String reason) {
            synchronized (abortLock) {
                if (aborted != null) return;
                aborted = reason;
            }
            try {
                ctl.close(); // a request waiting on the store returns at once
            } catch (IOException e) {
                // closing
            }
            onAbort.accept(reason);
        }

        private static Socket connect(String host, int port, long deadline, long timeoutMillis) throws IOException {
            IOException last = null;
            while (true) {
                Socket s = new Socket();
                try {
                    long left = Math.max(1, (deadline - System.nanoTime()) / 1_000_000L);
                    s.connect(new InetSocketAddress(host, port), (int) Math.min(left, 5000));
                    s.setTcpNoDelay(true);
                    return s;
                } catch (IOException e) {
                    s.close();
                    last = e;
                }
                if (System.nanoTime() > deadline)
                    throw new IOException("could not reach the rendezvous store at " + host + ":" + port + " within " + timeoutMillis / 1000.0
                            + " s (MASTER_ADDR/MASTER_PORT; is the node with rank 0 running, and is the port open?): " + (last.getMessage() != null ? last.getMessage()
                            : last instanceof java.net.SocketTimeoutException ? "connect timed out" : "no reason given"), last);
                try {
                    Thread.sleep(200);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new IOException("interrupted while connecting to the rendezvous store at " + host + ":" + port);
                }
            }
        }

        /** The store closed a connection before its greeting: it had {@value #MAX_HANDSHAKES} others in their handshake. */
        static final class Busy extends IOException {
            Busy(String m) { super(m); }
        }

        /**
         * {@link #connect} and {@link #handshake}, again while the store turns the connection away before its
         * greeting (connections from elsewhere fill its handshake slots for a moment), until the deadline.
         */
        private static Socket open(String host, int port, long deadline, long timeoutMillis, String secret, int process, String role,
                                   String info) throws IOException {
            while (true) {
                Socket s = connect(host, port, deadline, timeoutMillis);
                try {
                    handshake(s, secret, process, role, info, deadline);
                    return s;
                } catch (Busy e) {
                    s.close();
                    if (System.nanoTime() > deadline)
                        throw new IOException(host + ":" + port + " closed every connection before a rendezvous greeting for " + timeoutMillis / 1000.0
                                + " s: either the store's " + MAX_HANDSHAKES + " handshake slots were full (something else is connecting to MASTER_PORT),"
                                + " or MASTER_ADDR:MASTER_PORT is not a grpo4j rendezvous store", e);
                    try {
                        Thread.sleep(200);
                    } catch (InterruptedException x) {
                        Thread.currentThread().interrupt();
                        throw new IOException("interrupted while connecting to the rendezvous store at " + host + ":" + port);
                    }
                } catch (IOException | RuntimeException e) {
                    s.close();
                    throw e;
                }
            }
        }

        private static final SecureRandom CLIENT_NONCES = new SecureRandom();

        private static void handshake(Socket s, String secret, int process, String role, String info, long deadline) throws IOException {
            byte[] mine = new byte[32];
            // a store greets at once: wait at most 30 s, and not past the caller's deadline (at least 1 s)
            int wait = (int) Math.max(1_000, Math.min(30_000, (deadline - System.nanoTime()) / 1_000_000L));
            s.setSoTimeout(wait);
            DataInputStream in = new DataInputStream(new BufferedInputStream(s.getInputStream()));
            DataOutputStream out = new DataOutputStream(new BufferedOutputStream(s.getOutputStream()));
            String magic;
            try {
                magic = in.readUTF();
            } catch (SocketTimeoutException e) {
                throw new IOException("the server at " + s.getRemoteSocketAddress() + " accepted the connection but sent no rendezvous greeting within "
                        + wait / 1000.0 + " s (do MASTER_ADDR and MASTER_PORT point at something else?)", e);
            } catch (EOFException | java.net.SocketException e) {
                throw new Busy("the rendezvous store at " + s.getRemoteSocketAddress() + " closed the connection before its greeting");
            } catch (IOException e) { // (malformed text: "malformed input around byte 0" reached the user as it was)
                throw new IOException("the server at " + s.getRemoteSocketAddress() + " is not a grpo4j rendezvous store (its greeting: "
                        + e.getMessage() + "; do MASTER_ADDR and MASTER_PORT point at the node with rank 0?)", e);
            }
            if (!MAGIC.equals(magic)) throw new IOException("the server at " + s.getRemoteSocketAddress() + " is not a grpo4j rendezvous store");
            Msg r;
            try {
                byte[] nonce = new byte[32];
                in.readFully(nonce);
                out.writeUTF(MAGIC);
                out.write(hmac(secret, nonce));
                CLIENT_NONCES.nextBytes(mine);
                out.write(mine);
                out.writeInt(process);
                out.writeUTF(role);
                out.writeUTF(info.length() > 200 ? info.substring(0, 200) : info);
                out.flush();
                r = Msg.read(in);
            } catch (EOFException | java.net.SocketException e) {
                // a store with every handshake slot taken closes its oldest handshake: tried again (a refusal is an ERR)
                throw new Busy("the rendezvous store at " + s.getRemoteSocketAddress() + " closed the connection during the handshake");
            } catch (IOException e) { // (a stall after the greeting: "Read timed out", alone)
                throw new IOException("the server at " + s.getRemoteSocketAddress() + " broke off the rendezvous handshake (" + e.getMessage()
                        + "): is it this run's grpo4j store (MASTER_ADDR, MASTER_PORT)?", e);
            }
            if (!r.op().equals("OK")) throw new IllegalStateException("the rendezvous store refused this process: " + r.key());
            if (!MessageDigest.isEqual(r.value(), storeProof(secret, mine)))
                throw new IllegalStateException("the server at " + s.getRemoteSocketAddress() + " does not know this run's rendezvous secret ("
                        + "GRPO4J_RDZV_SECRET differs from rank 0's node, or something else listens at MASTER_ADDR:MASTER_PORT): not trusted with the run");
            s.setSoTimeout(0);
        }

        /** Held by a request on the control connection (one at a time: each waits for its answer). */
        private final java.util.concurrent.locks.ReentrantLock callLock = new java.util.concurrent.locks.ReentrantLock();

        private Msg call(Msg m) throws IOException {
            callLock.lock();
            try {
                return callLocked(m);
            } finally {
                callLock.unlock();
            }
        }

        private Msg callLocked(Msg m) throws IOException {
            if (aborted != null) throw new CommunicatorException("rendezvous: the run was aborted: " + aborted);
            try {
                m.write(ctlOut);
                Msg r = Msg.read(ctlIn);
                if (r.op().equals("ABORT")) { // heard here before (or instead of) the watch connection: the listeners hear it now
                    fail(r.key());
                    throw new CommunicatorException("rendezvous: the run was aborted: " + r.key());
                }
                if (r.op().equals("ERR")) throw new IOException("rendezvous store: " + r.key());
                return r;
            } catch (IOException e) {
                // the store may have ended this connection because the run was aborted: its reason arrives on the watch
                // connection, perhaps a moment later
                for (int i = 0; i < 100 && aborted == null && !closing; i++) {
                    try {
                        Thread.sleep(10);
                    } catch (InterruptedException ie) {
                        Thread.currentThread().interrupt();
                        break;
                    }
                }
                if (aborted != null) throw new CommunicatorException("rendezvous: the run was aborted: " + aborted);
                throw new IOException("rendezvous store at " + where + ": " + (e.getMessage() != null ? e.getMessage()
                        : e.getClass().getSimpleName() + " (the store ended the connection)"), e);
            }
        }

        public void set(String key, byte[] value) throws IOException {
            if (value.length > MAX_VALUE) throw new IllegalArgumentException("rendezvous: value of " + value.length + " bytes exceeds " + MAX_VALUE);
            call(new Msg("SET", key, 0, 0, value));
        }

        /** The value under {@code key}, waiting up to {@code timeoutMillis} for it to be set. */
        public byte[] get(String key, long timeoutMillis) throws IOException {
            Msg r = call(new Msg("GET", key, 0, timeoutMillis, new byte[0]));
            if (r.op().equals("TIMEOUT")) throw new IOException("rendezvous: " + key + " was not published within " + timeoutMillis / 1000.0 + " s");
            return r.value();
        }

        public long add(String key, long delta) throws IOException { return call(new Msg("ADD", key, delta, 0, new byte[0])).a(); }

        /** Returns when every one of {@code processes} processes has called it with {@code name}. */
        public void barrier(String name, int processes, long timeoutMillis) throws IOException {
            String key = "barrier/" + name;
            add(key, 1);
            Msg r = call(new Msg("WAIT", key, processes, timeoutMillis, new byte[0]));
            if (r.op().equals("TIMEOUT"))
                throw new IOException("rendezvous barrier \"" + name + "\": " + r.a() + " of " + processes + " processes arrived within " + timeoutMillis / 1000.0
                        + " s (a node not started, or stuck?)" + r.key());
        }

        /**
         * Fails the run for every process with {@code reason}. On the control connection when it is free (the store
         * answers); while another thread's request waits there (a GET or a barrier, for minutes), on the watch
         * connection instead, then waiting up to 5 s for the store's abort to come back on it: it queued behind the
         * waiting request, so the other processes heard of the failure only when that request timed out.
         */
        public void abort(String reason) throws IOException {
            Msg m = new Msg("ABORT", clip(reason), 0, 0, new byte[0]);
            if (callLock.tryLock()) {
                try {
                    callLocked(m);
                    return;
                } finally {
                    callLock.unlock();
                }
            }
            if (aborted != null) throw new CommunicatorException("rendezvous: the run was aborted: " + aborted);
            synchronized (watchOut) {
                m.write(watchOut);
            }
            long until = System.nanoTime() + 5_000_000_000L;
            while (aborted == null && !closing && System.nanoTime() < until) {
                try {
                    Thread.sleep(10);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return;
                }
            }
        }

        /** Why the run failed, or null. */
        public String abortReason() { return aborted; }

        /** Tests: closes both connections without a goodbye, as a killed JVM's would end. */
        void dropForTests() {
            closing = true;
            for (Socket c : new Socket[] {ctl, watch}) {
                try {
                    c.close();
                } catch (IOException e) {
                    // dropping
                }
            }
        }

        @Override
        public void close() {
            closing = true;
            try {
                synchronized (watchOut) {
                    new Msg("BYE").write(watchOut);
                }
            } catch (IOException e) {
                // the server is gone already
            }
            for (Socket s : new Socket[] {ctl, watch}) {
                try {
                    s.close();
                } catch (IOException e) {
                    // closing
                }
            }
        }
    }

    static Thread daemon(String name, Runnable r) {
        Thread t = new Thread(r, name);
        t.setDaemon(true);
        return t;
    }
}
