package org.grpo4j.internal.train;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.grpo4j.internal.dist.Cluster;

/** Trainer helpers for tests in other packages. */
public final class GrpoTrainerTestAccess {
    private GrpoTrainerTestAccess() {}

    public static List<String> small(Path out, int steps) { return GrpoTrainerTest.small(out, steps); }

    /** Reads a checkpoint's trainer_state.json ({@code ck}: its step_N directory). */
    public static void readTrainerState(Path file, Path ck) throws java.io.IOException { TrainerState.read(file, ck); }

    /** Trains the steps of {@code sets} (on examples/tiny-arith.json) as this JVM's ranks of {@code cluster}; the last step's metrics. */
    public static Map<String, Double> trainOneStep(List<String> sets, Cluster cluster) throws Exception {
        List<Map<String, Double>> seen = new ArrayList<>();
        try (Trainer t = Trainer.builder(GrpoTrainerTest.config(sets)).cluster(cluster).log(System.out).build()) {
            t.run(new org.grpo4j.train.GrpoTrainer.Listener() {
                @Override
                public void onStep(int step, Map<String, Double> m) { seen.add(m); }
            });
        }
        return seen.get(seen.size() - 1);
    }

    /** Resumes the run in {@code dir} as this JVM's ranks of {@code cluster}; the metrics of each step it runs. */
    public static List<Map<String, Double>> resume(Path dir, Cluster cluster) throws Exception {
        List<Map<String, Double>> seen = new ArrayList<>();
        try (Trainer t = Trainer.builder(null).resume(dir).cluster(cluster).log(System.out).build()) {
            t.run(new org.grpo4j.train.GrpoTrainer.Listener() {
                @Override
                public void onStep(int step, Map<String, Double> m) { seen.add(m); }
            });
        }
        return seen;
    }
}
