package org.grpo4j.internal.cli;

import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import org.grpo4j.train.GrpoConfig;
import org.grpo4j.internal.train.Trainer;

/**
 * A child process for {@link SignalsAndLockTest}: trains with the CLI's signal handling and blocks inside step 1's
 * listener (before that step's checkpoint) for ever, holding the run directory's lock. Args: config, output dir.
 */
public final class BlockingTrainChild {
    public static void main(String[] args) throws Exception {
        GrpoConfig cfg = GrpoConfig.load(Path.of(args[0]), List.of());
        try (Trainer t = Trainer.builder(cfg).outputDir(Path.of(args[1])).log(null).build();
             StopSignals s = StopSignals.install(t::cancel, System.out)) {
            t.run(new org.grpo4j.train.GrpoTrainer.Listener() {
                @Override
                public void onStep(int step, Map<String, Double> m) {
                    System.out.println("BLOCKED at step " + step);
                    System.out.flush();
                    try {
                        new CountDownLatch(1).await(); // only a second signal ends this process
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                }
            });
        }
    }
}
