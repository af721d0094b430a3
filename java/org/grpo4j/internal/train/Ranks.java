package org.grpo4j.internal.train;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.function.Consumer;
import org.grpo4j.internal.dist.CommunicatorException;

/**
 * The ranks this JVM hosts, each on its own thread for its whole life (a GPU rank's CUDA device is per thread). One
 * rank runs on the caller's thread. {@link #run} runs a function on every rank at once and waits; when one throws,
 * {@code abort} fails the communicators so that the others' collectives throw instead of waiting, and the first
 * exception that is not such a consequence is rethrown.
 */
final class Ranks implements AutoCloseable {
    /** Work for rank i (the local index) that may throw. */
    interface Task<T> {
        T run(int i) throws Exception;
    }

    private final int count;
    private final List<ExecutorService> threads = new ArrayList<>();
    /** The executors' threads, which close() joins. */
    private final List<Thread> started = java.util.Collections.synchronizedList(new ArrayList<>());
    private Consumer<Throwable> abort = t -> {};
    /** The first failure of a {@link #run} (a rank's exception, or the caller interrupted while they ran); null: none. */
    private volatile Throwable failure;
    /** How long {@link #close} waits for the rank threads to finish the work in progress. */
    static final long CLOSE_WAIT_SECONDS = 300;

    Ranks(int count, String name) {
        this.count = count;
        if (count > 1)
            for (int i = 0; i < count; i++) {
                int k = i;
                threads.add(Executors.newSingleThreadExecutor(r -> {
                    Thread t = new Thread(r, name + "-rank-" + k);
                    t.setDaemon(true);
                    started.add(t);
                    return t;
                }));
            }
    }

    int count() { return count; }

    /** What to do when a rank fails (abort the communicators); set once they exist. */
    void onFailure(Consumer<Throwable> abort) { this.abort = abort; }

    /**
     * The first failure of a {@link #run}: a rank's work threw, or the caller was interrupted while the ranks ran (their
     * work may still be going on, the communicators aborted). The model states may be partly updated after one.
     */
    Throwable failure() { return failure; }

    private void failed(Throwable t) {
        if (failure == null) failure = t;
    }

    /** {@code task} on every rank at once; its results in rank order. */
    <T> List<T> run(Task<T> task) throws IOException {
        if (count == 1) { // on the caller's thread; a failure aborts as on the pool's (one rank a process: the others are elsewhere)
            try {
                return java.util.Collections.singletonList(task.run(0));
            } catch (IOException | RuntimeException | Error e) {
                failed(e);
                abort.accept(e);
                throw e;
            } catch (Exception e) {
                failed(e);
                abort.accept(e);
                throw new IllegalStateException(e);
            }
        }
        List<Future<T>> fs = new ArrayList<>();
        for (int i = 0; i < count; i++) {
            int k = i;
            fs.add(threads.get(i).submit(() -> {
                try {
                    return task.run(k);
                } catch (Throwable t) {
                    abort.accept(t);
                    throw t;
                }
            }));
        }
        List<T> out = new ArrayList<>();
        Throwable first = null, consequence = null;
        for (Future<T> f : fs) {
            try {
                out.add(f.get());
            } catch (ExecutionException e) {
                Throwable c = e.getCause();
                if (c instanceof CommunicatorException) consequence = consequence == null ? c : consequence;
                else if (first == null) first = c;
                out.add(null);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                IllegalStateException stop = new IllegalStateException("interrupted while the ranks were running", e);
                failed(stop);
                abort.accept(e);
                for (Future<T> g : fs) g.cancel(true); // the ranks stop at their next wait (close() waits for them)
                throw stop;
            }
        }
        Throwable t = first != null ? first : consequence;
        if (t == null) return out;
        failed(t);
        if (t instanceof IOException io) throw io;
        if (t instanceof RuntimeException re) throw re;
        if (t instanceof Error er) throw er;
        throw new IllegalStateException(t);
    }

    /**
     * Stops the rank threads and waits for them to end, which is the end of the work in progress (after an interrupted
     * {@link #run} it may still be going on: freeing the model states under it would fail it, or on a GPU fault). The
     * wait ignores interrupts (the status is set again after) and gives up after {@link #CLOSE_WAIT_SECONDS}, then
     * throws: the caller must not free what the ranks use. From a rank's own thread it does not wait (for itself).
     */
    @Override
    public void close() {
        for (ExecutorService e : threads) e.shutdownNow();
        if (started.contains(Thread.currentThread())) return;
        long deadline = System.nanoTime() + java.util.concurrent.TimeUnit.SECONDS.toNanos(CLOSE_WAIT_SECONDS);
        boolean interrupted = false;
        try {
            // (a worker thread ends only after its task: joining the threads waits for the executors' work too)
            for (Thread t : List.copyOf(started))
                while (t.isAlive()) {
                    long left = deadline - System.nanoTime();
                    if (left <= 0)
                        throw new IllegalStateException("the rank threads did not stop within " + CLOSE_WAIT_SECONDS + " s of close(): the"
                                + " memory they use is left allocated");
                    try {
                        t.join(Math.max(1, left / 1_000_000L));
                    } catch (InterruptedException ie) {
                        interrupted = true;
                    }
                }
        } finally {
            if (interrupted) Thread.currentThread().interrupt();
        }
    }
}
