package org.grpo4j.internal.dist;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.Iterator;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.function.Consumer;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.CudaBackend;

/**
 * This JVM's {@link Cluster} membership through a {@link TcpStore}: the process hosting rank 0 serves the store at
 * MASTER_ADDR:MASTER_PORT; every process connects (retrying until the timeout), registers, and waits until all have
 * joined. Then the config is compared, rank 0's process publishes the NCCL unique id and each local rank creates its
 * {@link NcclCommunicator}. A process that dies, a config that differs, or an abort anywhere reaches every process's
 * {@link #onAbort} listeners with the reason.
 */
public final class Rendezvous implements Cluster {
    /** The secret's environment variable. */
    public static final String SECRET_ENV = "GRPO4J_RDZV_SECRET";

    private static final ObjectMapper JSON = new ObjectMapper();

    private final DistEnv env;
    private final long timeoutMillis;
    private final TcpStore.Server server;
    private final TcpStore.Client client;
    private final List<Consumer<String>> listeners = new CopyOnWriteArrayList<>();
    private volatile String abortReason;
    private byte[] ncclId;

    /**
     * Joins the run described by {@code env}: serves the store when this process hosts rank 0, connects, and returns
     * once every process has joined (or fails after {@code timeoutMillis}). Heartbeats every {@code heartbeatMillis};
     * a process silent for 10 heartbeats is dead.
     */
    public Rendezvous(DistEnv env, String secret, long timeoutMillis, long heartbeatMillis) throws IOException {
        this.env = env;
        this.timeoutMillis = timeoutMillis;
        secret = effectiveSecret(env.processes(), secret);
        long dead = 10 * heartbeatMillis;
        TcpStore.Server s = null;
        if (env.hostsRankZero()) {
            InetAddress resolved;
            try {
                resolved = InetAddress.getByName(env.masterAddr());
            } catch (java.net.UnknownHostException e) {
                throw new IllegalArgumentException("MASTER_ADDR (--master-addr) " + env.masterAddr() + " does not resolve on this node (" + host()
                        + "), which hosts rank 0 and serves the rendezvous store there: " + e.getMessage());
            }
            InetAddress bind = bindAddress(env.masterAddr(), resolved, env.processes());
            if (bind.isAnyLocalAddress() && (secret == null || secret.isEmpty()))
                throw new IllegalArgumentException("MASTER_ADDR " + env.masterAddr() + " resolves to the loopback address "
                        + resolved.getHostAddress() + " here (as /etc/hosts maps a machine's own name), which the "
                        + "other processes' nodes cannot reach, so the rendezvous store listens on every interface: set " + SECRET_ENV
                        + " to the same random value on every node (e.g. export " + SECRET_ENV + "=$(openssl rand -hex 16)), or, when every"
                        + " process runs on this node, MASTER_ADDR=127.0.0.1");
            s = new TcpStore.Server(bind, env.masterPort(), secret, env.processes(), heartbeatMillis, dead);
        }
        this.server = s;
        String info = host() + " pid " + ProcessHandle.current().pid() + ", rank" + (env.localRanks().length == 1 ? " " + env.localRanks()[0]
                : "s " + env.localRanks()[0] + "-" + env.localRanks()[env.localRanks().length - 1]);
        try {
            int port = server != null ? server.port() : env.masterPort();
            this.client = new TcpStore.Client(env.masterAddr(), port, secret, env.processIndex(), info, timeoutMillis, heartbeatMillis, dead, this::aborted);
        } catch (IOException | RuntimeException e) {
            if (server != null) server.close();
            throw e;
        }
        try {
            checkLayout(info);
            client.barrier(TcpStore.JOIN_BARRIER, env.processes(), timeoutMillis);
        } catch (IOException | RuntimeException e) {
            // no goodbyes to wait for: the processes that never joined would hold this error back up to 30 s; the
            // store is aborted with the reason first, so that the processes that did join report it, not a lost store
            if (server != null) server.abort(e.getMessage() == null ? e.getClass().getSimpleName() : e.getMessage());
            client.close();
            if (server != null) server.close();
            throw e;
        }
    }

    /**
     * Before the join barrier (which a miscounted layout would leave waiting until the timeout): this process's index
     * is not taken yet (two nodes started with the same node rank), and its view of the run (world size, processes,
     * ranks per process) is rank 0's process's. Either failure stops every process with the reason.
     */
    private void checkLayout(String info) throws IOException {
        String mine = layout(env);
        if (client.add("member/" + env.processIndex(), 1) > 1)
            stop("process " + env.processIndex() + " (" + info + ") joined a run that already has a process " + env.processIndex()
                    + ": two nodes were started with the same node rank (--node-rank, NODE_RANK or SLURM_NODEID; RANK in a process per GPU)");
        if (env.processIndex() == 0) client.set("layout", mine.getBytes(StandardCharsets.UTF_8));
        else {
            String theirs = new String(client.get("layout", timeoutMillis), StandardCharsets.UTF_8);
            if (!theirs.equals(mine))
                stop("process " + env.processIndex() + " (" + info + ") was started for " + mine + ", rank 0's process for " + theirs
                        + ": start every node with the same --nnodes and --gpus (WORLD_SIZE, LOCAL_WORLD_SIZE, NNODES)");
        }
    }

    /** How a process sees the run, compared between processes at join. */
    static String layout(DistEnv env) {
        return "world size " + env.worldSize() + " in " + env.processes() + (env.processes() == 1 ? " process" : " processes") + " of "
                + env.localRanks().length + (env.localRanks().length == 1 ? " rank" : " ranks");
    }

    private void stop(String msg) {
        abort(msg);
        throw new IllegalArgumentException(msg);
    }

    /**
     * The secret the store runs with: {@code secret} when set; for a run of one process (every rank in this JVM, the
     * store's only client), a random one of its own when none is set, so that no other local user (or, beyond
     * loopback, no one) can join or abort its store; otherwise empty (the store then refuses to listen beyond loopback).
     */
    static String effectiveSecret(int processes, String secret) {
        if (secret != null && !secret.isEmpty()) return secret;
        if (processes != 1) return "";
        byte[] b = new byte[16];
        new java.security.SecureRandom().nextBytes(b);
        return java.util.HexFormat.of().formatHex(b);
    }

    /** Whether the store of a run of {@code processes} processes at {@code masterAddr} listens beyond loopback (the secret is then required). */
    public static boolean listensBeyondLoopback(String masterAddr, int processes) throws java.net.UnknownHostException {
        return !bindAddress(masterAddr, InetAddress.getByName(masterAddr), processes).isLoopbackAddress();
    }

    /**
     * Where the store listens: the address MASTER_ADDR names. A host name that resolves here to a loopback address
     * (Debian's /etc/hosts maps the machine's own name to 127.0.1.1) while other processes connect to it, possibly
     * from other nodes where it resolves to this node's real address, makes the store listen on every interface
     * instead (the secret is then required); "localhost" and loopback literals stay on loopback.
     */
    static InetAddress bindAddress(String masterAddr, InetAddress resolved, int processes) {
        if (processes == 1 || !resolved.isLoopbackAddress()) return resolved;
        String a = masterAddr.trim();
        boolean literal = a.equalsIgnoreCase("localhost") || a.matches("[0-9.]+") || a.contains(":");
        return literal ? resolved : new InetSocketAddress(0).getAddress();
    }

    /** The port the store listens on (the process hosting rank 0; MASTER_PORT elsewhere). */
    public int port() { return server != null ? server.port() : env.masterPort(); }

    /** This machine's host name (for messages). */
    public static String hostName() { return host(); }

    private static String host() {
        try {
            return InetAddress.getLocalHost().getHostName();
        } catch (IOException e) {
            return "unknown host";
        }
    }

    private void aborted(String reason) {
        if (abortReason != null) return;
        abortReason = reason;
        for (Consumer<String> l : listeners) l.accept(reason);
    }

    @Override
    public void onAbort(Consumer<String> listener) {
        listeners.add(listener);
        String r = abortReason;
        if (r != null) listener.accept(r);
    }

    @Override
    public void abort(String reason) {
        try {
            client.abort(reason);
        } catch (IOException | RuntimeException e) {
            aborted(reason);
        }
    }

    @Override
    public int worldSize() { return env.worldSize(); }

    @Override
    public int[] localRanks() { return env.localRanks().clone(); }

    @Override
    public int[] localDevices() { return env.localDevices().clone(); }

    @Override
    public void agreeOnConfig(String json) {
        try {
            if (env.processIndex() == 0) {
                client.set("config", json.getBytes(StandardCharsets.UTF_8));
            } else {
                String theirs = new String(client.get("config", timeoutMillis), StandardCharsets.UTF_8);
                String diff = firstDifference(JSON.readTree(theirs), JSON.readTree(json), "");
                if (diff != null) {
                    String msg = "config mismatch between the nodes: " + diff + " (process " + env.processIndex() + " vs rank 0's); every node must"
                            + " start the same config with the same --set overrides";
                    abort(msg);
                    throw new IllegalArgumentException(msg);
                }
            }
            client.barrier("config", env.processes(), timeoutMillis);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** The first key (as a.b[2]) whose values differ, with both values; null when the trees are equal. */
    static String firstDifference(JsonNode rank0, JsonNode mine, String path) {
        if (rank0.equals(mine)) return null;
        if (rank0.isObject() && mine.isObject()) {
            java.util.TreeSet<String> keys = new java.util.TreeSet<>();
            rank0.fieldNames().forEachRemaining(keys::add);
            mine.fieldNames().forEachRemaining(keys::add);
            for (String k : keys) {
                JsonNode a = rank0.get(k), b = mine.get(k);
                String p = path.isEmpty() ? k : path + "." + k;
                if (a == null || b == null) return p + " is " + (b == null ? "missing" : b) + " here but " + (a == null ? "missing" : a) + " on rank 0";
                String d = firstDifference(a, b, p);
                if (d != null) return d;
            }
        }
        if (rank0.isArray() && mine.isArray() && rank0.size() == mine.size()) {
            Iterator<JsonNode> a = rank0.elements(), b = mine.elements();
            for (int i = 0; a.hasNext(); i++) {
                String d = firstDifference(a.next(), b.next(), path + "[" + i + "]");
                if (d != null) return d;
            }
        }
        return (path.isEmpty() ? "the config" : path) + " is " + mine + " here but " + rank0 + " on rank 0";
    }

    @Override
    public Communicator communicator(int localIndex, Backend backend, int timeoutSeconds) {
        return communicator(localIndex, backend, timeoutSeconds, c -> {});
    }

    @Override
    public Communicator communicator(int localIndex, Backend backend, int timeoutSeconds, java.util.function.Consumer<? super Communicator> forming) {
        if (!(backend instanceof CudaBackend cb))
            throw new IllegalArgumentException("rank " + env.localRanks()[localIndex] + ": NCCL ranks run on CUDA, not " + backend.name());
        return NcclCommunicator.create(ncclId(), env.worldSize(), env.localRanks()[localIndex], cb, timeoutSeconds, forming);
    }

    /** The NCCL unique id: made once by rank 0's process (ncclGetUniqueId) and read by every process. */
    private synchronized byte[] ncclId() {
        if (ncclId == null) {
            try {
                if (env.processIndex() == 0) {
                    ncclId = NcclCommunicator.newUniqueId();
                    client.set("nccl/unique_id", ncclId);
                } else {
                    ncclId = client.get("nccl/unique_id", timeoutMillis);
                }
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
        return ncclId;
    }

    @Override
    public String share(String key, String value) {
        try {
            if (env.processIndex() == 0) {
                client.set("share/" + key, value.getBytes(StandardCharsets.UTF_8));
                return value;
            }
            return new String(client.get("share/" + key, timeoutMillis), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** Publishes raw bytes (rank 0's process) or reads them (the others). */
    public byte[] shareBytes(String key, byte[] value) throws IOException {
        if (env.processIndex() == 0) {
            client.set("bytes/" + key, value);
            return value;
        }
        return client.get("bytes/" + key, timeoutMillis);
    }

    @Override
    public void barrier(String name) { barrier(name, 0); }

    @Override
    public void barrier(String name, int minSeconds) {
        try {
            client.barrier(name, env.processes(), Math.max(timeoutMillis, minSeconds * 1000L));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** Why the run failed, or null. */
    public String abortReason() { return abortReason; }

    /** Tests: drops the store's connections without goodbyes, as a killed JVM would. */
    void abandonForTests() {
        if (server != null) server.close();
        else client.dropForTests();
    }

    @Override
    public void close() {
        if (server != null && abortReason == null) {
            client.close();
            server.awaitGoodbyes(Math.min(timeoutMillis, 30_000));
        } else {
            client.close();
        }
        if (server != null) server.close();
    }
}
