package org.grpo4j.internal.bench;

import java.util.ArrayList;
import java.util.List;
import java.util.function.IntConsumer;
import org.grpo4j.internal.backend.CudaBackend;

/**
 * CUDA-event timing on the backend's stream. Repetition r is the interval between events r and r+1, recorded back to
 * back around it, so each time is GPU time only. Before the first timed launch, {@code headStart} enqueues a couple
 * of milliseconds of GPU work (device copies): the host then enqueues every timed launch while the GPU is still busy,
 * so a kernel shorter than its own host launch cost is timed back to back with its neighbours instead of waiting for
 * the host (bench-peers.py does the same).
 *
 * <p>Between the warm-up and the timed repetitions the operation runs back to back for {@link #PRELOAD_MS} of GPU
 * time (batches of 1, 2, 4, ... timed by events; at most 8191 calls or 1 s of host time): every row starts its timing
 * from the same loaded state of the clocks, whatever idle came before it (our correctness check runs on the CPU while
 * the GPU waits; the peers run their rows back to back). bench-peers.py does the same.
 */
public final class CudaEventTimer implements Timer {
    /** GPU time of back-to-back calls before the timed repetitions (see the class comment). */
    public static final double PRELOAD_MS = 100;

    private final CudaBackend be;
    private final Runnable headStart;

    public CudaEventTimer(CudaBackend be, Runnable headStart) {
        this.be = be;
        this.headStart = headStart;
    }

    @Override
    public double[] time(IntConsumer op, int warmup, int reps) {
        for (int i = 0; i < warmup; i++) op.accept(i);
        preload(op, warmup);
        be.synchronize();
        List<CudaBackend.Event> ev = new ArrayList<>(reps + 1);
        try {
            for (int r = 0; r <= reps; r++) ev.add(be.newEvent());
            if (headStart != null) headStart.run();
            ev.get(0).record();
            for (int r = 0; r < reps; r++) {
                op.accept(warmup + r);
                ev.get(r + 1).record();
            }
            ev.get(reps).synchronize();
            double[] ms = new double[reps];
            for (int r = 0; r < reps; r++) ms[r] = ev.get(r + 1).elapsedSince(ev.get(r));
            be.synchronize(); // reports a kernel's device-side error flag (bad index) for this row
            return ms;
        } finally {
            for (CudaBackend.Event e : ev) e.close();
        }
    }

    /** Runs {@code op} back to back, from index {@code from} on, until {@link #PRELOAD_MS} of GPU time has passed. */
    private void preload(IntConsumer op, int from) {
        long wallEnd = System.nanoTime() + 1_000_000_000L;
        double done = 0;
        int i = from;
        for (int n = 1; done < PRELOAD_MS && n <= 4096 && System.nanoTime() < wallEnd; n *= 2) {
            CudaBackend.Event a = be.newEvent(), b = null;
            try {
                b = be.newEvent();
                a.record();
                for (int j = 0; j < n; j++) op.accept(i++);
                b.record();
                b.synchronize();
                done += b.elapsedSince(a);
            } finally {
                a.close();
                if (b != null) b.close();
            }
        }
    }
}
