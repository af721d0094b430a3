package org.grpo4j.internal.dist;

import org.grpo4j.internal.backend.Backend;

/**
 * This JVM's share of a run over several processes (one JVM per node, or per GPU under torchrun-style launchers):
 * which global ranks it hosts on which devices, their communicators, and small agreements between the processes
 * through the rendezvous store ({@link Rendezvous}). A single-process run has none.
 */
public interface Cluster extends AutoCloseable {

    int worldSize();

    /** Global ranks hosted by this JVM, in local order. */
    int[] localRanks();

    /** CUDA device of each local rank. */
    int[] localDevices();

    default boolean hostsRankZero() { return localRanks()[0] == 0; }

    /**
     * The communicator of local rank {@code localIndex}, whose backend is {@code backend}: called on that rank's own
     * thread, by every local rank at once (communicator creation is collective over the whole world).
     */
    Communicator communicator(int localIndex, Backend backend, int timeoutSeconds);

    /**
     * {@link #communicator(int, Backend, int)}, handing the communicator to {@code forming} as soon as it exists, before
     * every rank has joined, so that a failure elsewhere can abort its wait for them (default: once it has formed).
     */
    default Communicator communicator(int localIndex, Backend backend, int timeoutSeconds, java.util.function.Consumer<? super Communicator> forming) {
        Communicator c = communicator(localIndex, backend, timeoutSeconds);
        forming.accept(c);
        return c;
    }

    /**
     * The process hosting rank 0 publishes the run's config (canonical JSON); every other process compares its own
     * with it. On a difference every process stops, with a message naming the first differing key and both values.
     */
    void agreeOnConfig(String json);

    /** The process hosting rank 0 publishes {@code value} under {@code key}; every process returns it. */
    String share(String key, String value);

    /** Returns when every process has called it with this name. */
    void barrier(String name);

    /**
     * {@link #barrier(String)} for a wait that may outlast the rendezvous timeout (a checkpoint: every process writes
     * its ranks' optimizer slices, gigabytes on a shared filesystem): at least {@code minSeconds}.
     */
    default void barrier(String name, int minSeconds) { barrier(name); }

    /** Fails the run for every process, with {@code reason}. */
    default void abort(String reason) {}

    /** {@code listener} gets the reason (once, from a background thread) when the run fails in any process. */
    default void onAbort(java.util.function.Consumer<String> listener) {}

    @Override
    void close();
}
