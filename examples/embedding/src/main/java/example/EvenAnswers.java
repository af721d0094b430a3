package example;

import java.io.IOException;
import java.io.PrintStream;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.grpo4j.Backend;
import org.grpo4j.reward.RewardFunction;
import org.grpo4j.reward.Rewards;
import org.grpo4j.train.GrpoConfig;
import org.grpo4j.train.GrpoTrainer;

/**
 * Trains grpo4j's tiny demo model with a reward written in Java: 1 when the last number of the answer is even, 0
 * otherwise. A short supervised warm-up teaches the answer format on generated word problems ("Mia has 3 pens and
 * gets 4 more. How many pens now?" / "3 + 4 = 7"); GRPO then pushes the answers towards even numbers, right or not.
 * Prints the reward curve.
 *
 * <pre>
 *   java -cp "target/*:target/lib/*" example.EvenAnswers [--out runs/even] [--steps 40] [--warmup 250] [--backend auto] [--overwrite]
 * </pre>
 */
public final class EvenAnswers {
    private EvenAnswers() {}

    /** The dataset name the rows carry, and under which the reward is registered. */
    static final String DATASET = "even";

    private static final Pattern NUMBER = Pattern.compile("-?\\d+");

    /** 1 when the last integer in the response is even; 0 when it is odd or there is none. Thread-safe (pure). */
    static final RewardFunction EVEN = (response, groundTruth, row) -> {
        Matcher m = NUMBER.matcher(response);
        String last = null;
        while (m.find()) last = m.group();
        if (last == null) return new RewardFunction.Score(0, "no number");
        return new RewardFunction.Score(new BigInteger(last).testBit(0) ? 0 : 1, "last number " + last);
    };

    public static void main(String[] args) throws Exception {
        Path out = Path.of("runs/even");
        int steps = 40, warmup = 250;
        String backend = "auto";
        boolean overwrite = false;
        try {
            for (int i = 0; i < args.length; i++) {
                String a = args[i];
                if (a.equals("--overwrite")) {
                    overwrite = true;
                    continue;
                }
                if (i + 1 >= args.length) throw new IllegalArgumentException(a + " needs a value");
                switch (a) {
                    case "--out" -> out = Path.of(args[++i]);
                    case "--steps" -> steps = Integer.parseInt(args[++i]);
                    case "--warmup" -> warmup = Integer.parseInt(args[++i]);
                    case "--backend" -> backend = args[++i];
                    default -> throw new IllegalArgumentException("unknown option " + a + " (expected --out DIR, --steps N, --warmup N, --backend B, --overwrite)");
                }
            }
            train(out, steps, warmup, backend, overwrite, System.out);
        } catch (IllegalArgumentException | IllegalStateException | IOException e) { // grpo4j's messages are one line naming what is wrong
            System.err.println("EvenAnswers: " + e.getMessage());
            System.exit(2);
        }
    }

    /**
     * Trains for {@code steps} GRPO steps after {@code warmup} supervised steps, writing the run to {@code out} (which
     * must be new or empty, unless {@code overwrite}).
     *
     * @return the mean reward of each step
     */
    static List<Double> train(Path out, int steps, int warmup, String backendSpec, boolean overwrite, PrintStream print) throws IOException {
        Path data = Files.createTempFile("even-problems", ".jsonl");
        try (Backend backend = Backend.open(backendSpec); Rewards rewards = new Rewards()) {
            writeProblems(data, 256, 1);
            rewards.register(DATASET, EVEN);

            GrpoConfig cfg = new GrpoConfig();
            cfg.modelNameOrPath = "init:tiny"; // a random tiny Llama with the tokenizer bundled in grpo4j's jar
            cfg.chatTemplateName = "tulu";
            cfg.datasetMixerList = List.of(data.toString(), "1.0");
            cfg.maxPromptTokenLength = 64;
            cfg.responseLength = 12;
            cfg.localRolloutBatchSize = 16;
            cfg.numberSamplesPerPrompt = 8;
            cfg.localMiniBatchSize = 64;
            cfg.perDeviceTrainBatchSize = 16;
            cfg.localRolloutForwardBatchSize = 32;
            cfg.numTrainingSteps = steps;
            cfg.learningRate = 1e-3;
            cfg.temperature = 1.0;
            cfg.gradientCheckpointing = false;
            cfg.numEvals = 0;
            cfg.saveFreq = 0; // checkpoints at step 0 and at the end
            cfg.sftWarmup.steps = warmup;
            cfg.sftWarmup.learningRate = 3e-3;

            List<Double> curve = new ArrayList<>();
            try (GrpoTrainer trainer = GrpoTrainer.builder(cfg).outputDir(out).overwrite(overwrite).backend(backend).rewards(rewards).log(null).build()) {
                print.printf("training %d GRPO steps on %s after %d warm-up steps; run in %s%n", steps, backend.description(), warmup, out);
                GrpoTrainer.Result r = trainer.run(new GrpoTrainer.Listener() {
                    @Override
                    public void onSftStep(int step, int total, double loss) {
                        if (step % 50 == 0 || step == total) print.printf("warm-up %d/%d  loss %.3f%n", step, total, loss);
                    }

                    @Override
                    public void onStep(int step, Map<String, Double> m) {
                        double reward = m.get("objective/scores");
                        curve.add(reward);
                        print.printf("step %3d  even answers %.3f  %s%n", step, reward, "#".repeat((int) Math.round(40 * reward)));
                    }

                    @Override
                    public void onRewardErrors(int step, int errors, String example) {
                        print.printf("step %3d  %d rewards failed (%s)%n", step, errors, example);
                    }
                });
                print.printf("reward curve: %s%nlast checkpoint: %s%n", curve, r.outputDir().resolve("checkpoints/step_" + r.lastStep() + "/model"));
            }
            return curve;
        } finally {
            Files.deleteIfExists(data);
        }
    }

    /** One-step word problems in grpo4j's RLVR row format (the demo's kind), with the reward's dataset name. */
    static void writeProblems(Path file, int rows, long seed) throws IOException {
        Random rnd = new Random(seed);
        String[] names = {"Mia", "Zoe", "Sam", "Ali", "Eva", "Tom"}, things = {"pens", "cups", "cards", "shells"};
        List<String> lines = new ArrayList<>();
        for (int i = 0; i < rows; i++) {
            int a = 1 + rnd.nextInt(6), b = 1 + rnd.nextInt(6);
            String q = names[rnd.nextInt(names.length)] + " has " + a + " " + things[rnd.nextInt(things.length)] + " and gets " + b + " more. How many now?";
            lines.add("{\"messages\": [{\"role\": \"user\", \"content\": \"" + q + "\"}, {\"role\": \"assistant\", \"content\": \"" + a + " + " + b + " = " + (a + b)
                    + "\"}], \"ground_truth\": \"" + (a + b) + "\", \"dataset\": \"" + DATASET + "\"}");
        }
        Files.write(file, lines, StandardCharsets.UTF_8);
    }
}
