package org.grpo4j.internal.cli;

import static org.junit.jupiter.api.Assertions.*;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.util.List;
import java.util.Map;
import org.grpo4j.internal.backend.CudaRuntime;
import org.junit.jupiter.api.Test;

/** tools/launch: the plan it prints (1 node x 8 GPUs, 2 nodes x 8 GPUs, Slurm), and what it refuses. */
class LaunchCommandTest {
    static final CudaRuntime.Availability NO_GPU = new CudaRuntime.Availability(false, false, 0, "libcuda.so.1 not found (no NVIDIA driver)");
    static final CudaRuntime.Availability ONE_GPU = new CudaRuntime.Availability(true, true, 1, "");

    static CliTest.Run launch(Map<String, String> env, CudaRuntime.Availability devices, String... args) {
        PrintStream oldOut = System.out, oldErr = System.err;
        ByteArrayOutputStream out = new ByteArrayOutputStream(), err = new ByteArrayOutputStream();
        try {
            System.setOut(new PrintStream(out, true));
            System.setErr(new PrintStream(err, true));
            var cl = Main.newCommandLine(LaunchCommand.with(env, devices));
            cl.setOut(new java.io.PrintWriter(out, true));
            cl.setErr(new java.io.PrintWriter(err, true));
            int code = cl.execute(args);
            return new CliTest.Run(code, out.toString(), err.toString());
        } finally {
            System.setOut(oldOut);
            System.setErr(oldErr);
        }
    }

    @Test
    void dryRunsPlanOneAndTwoNodesOfEightGpus() {
        CliTest.Run one = launch(Map.of(), NO_GPU, "--gpus", "8", "--dry-run", "--", "train", "--config", "configs/tulu-3.1-8b-grpo.json");
        assertEquals(0, one.code(), one.err());
        assertTrue(one.out().contains("world size         8 = 1 node x 8 GPUs"), one.out());
        assertTrue(one.out().contains("this node          node 0 of 1: ranks 0-7 on cuda:0-7"), one.out());
        assertTrue(one.out().contains("rendezvous         127.0.0.1:29500, served by node 0; one process: a random secret of its own"), one.out());
        assertTrue(one.out().contains("config world_size  8 (matches)"), one.out());
        CliTest.Run two = launch(Map.of(), NO_GPU, "--nnodes", "2", "--node-rank", "1", "--master-addr", "10.0.0.1", "--gpus", "8", "--dry-run", "--",
                "train", "--config", "configs/tulu-3.1-8b-grpo.json");
        // (as given, it would fail: the config's world_size and the secret; the plan is printed all the same)
        assertEquals(2, two.code(), two.err());
        assertEquals("grpo4j launch: --dry-run: this launch would fail: GRPO4J_RDZV_SECRET is not set, and the rendezvous at 10.0.0.1 is"
                + " beyond loopback; the config's world_size 8 is not the plan's 16 ranks", two.err().strip());
        assertTrue(two.out().contains("world size         16 = 2 nodes x 8 GPUs"), two.out());
        assertTrue(two.out().contains("this node          node 1 of 2: ranks 8-15 on cuda:0-7"), two.out());
        // torchrun's GROUP_RANK names the node as NODE_RANK does
        CliTest.Run group = launch(Map.of("NNODES", "2", "GROUP_RANK", "1", "MASTER_ADDR", "10.0.0.1"), NO_GPU, "--gpus", "8", "--dry-run", "--",
                "train", "--config", "configs/tulu-3.1-8b-grpo.json");
        assertTrue(group.out().contains("this node          node 1 of 2: ranks 8-15 on cuda:0-7"), group.out());
        assertTrue(two.out().contains("10.0.0.1:29500, served by node 0; GRPO4J_RDZV_SECRET NOT set: required beyond loopback"), two.out());
        assertTrue(two.out().contains("config world_size  8 -- does not match: add --set world_size=16"), two.out());
        assertTrue(two.out().contains("tools/launch --nnodes 2 --node-rank <0..1> --master-addr 10.0.0.1 --master-port 29500 --gpus 8 -- train --config"), two.out());
        CliTest.Run fixed = launch(Map.of("GRPO4J_RDZV_SECRET", "x"), NO_GPU, "--nnodes", "2", "--node-rank", "1", "--master-addr", "10.0.0.1",
                "--gpus", "8", "--dry-run", "--", "train", "--config", "configs/tulu-3.1-8b-grpo.json", "--set", "world_size=16");
        assertEquals(0, fixed.code(), fixed.err());
        assertTrue(fixed.out().contains("config world_size  16 (matches)"), fixed.out());
        CliTest.Run missing = launch(Map.of(), NO_GPU, "--gpus", "8", "--dry-run", "--", "train", "--config", "no-such-config.json");
        assertEquals(2, missing.code(), missing.err());
        assertTrue(missing.out().contains("config             not checked: ") && missing.err().contains("this launch would fail: the config: "),
                missing.out() + missing.err());
        // under Slurm: nodes, node rank and master from SLURM_*, the port from MASTER_PORT
        CliTest.Run slurm = launch(Map.of("SLURM_NNODES", "2", "SLURM_NODEID", "0", "SLURM_JOB_NODELIST", "gpu[03-04]", "MASTER_PORT", "6000",
                "GRPO4J_RDZV_SECRET", "x"), NO_GPU, "--gpus", "8", "--dry-run", "--", "train", "--config", "configs/tulu-3.1-8b-grpo.json",
                "--set", "world_size=16");
        assertEquals(0, slurm.code(), slurm.err());
        assertTrue(slurm.out().contains("node 0 of 2: ranks 0-7") && slurm.out().contains("gpu03:6000, served by node 0; GRPO4J_RDZV_SECRET set"), slurm.out());
    }

    /**
     * What a careless environment gives the launcher: a blank MASTER_ADDR is unset (it was taken as the address ""),
     * a one-node host name that maps to loopback needs no secret in the dry run as in the launch (the dry run compared
     * strings), a zero --rdzv-timeout and a world size past int are refused naming the flags.
     */
    @Test
    void dryRunsReadTheEnvironmentAsTheLaunchDoes() {
        String[] train = {"--", "train", "--config", "configs/tulu-3.1-8b-grpo.json"};
        CliTest.Run blank = launch(Map.of("MASTER_ADDR", " "), NO_GPU, cat(new String[] {"--gpus", "8", "--dry-run"}, train));
        assertEquals(0, blank.code(), blank.err());
        assertTrue(blank.out().contains("rendezvous         127.0.0.1:29500, served by node 0; one process: a random secret of its own"), blank.out());
        CliTest.Run local = launch(Map.of("MASTER_ADDR", "LOCALHOST"), NO_GPU, cat(new String[] {"--gpus", "8", "--dry-run"}, train));
        assertEquals(0, local.code(), local.err());
        assertTrue(local.out().contains("LOCALHOST:29500, served by node 0; one process: a random secret of its own"), local.out());
        CliTest.Run timeout = launch(Map.of(), NO_GPU, cat(new String[] {"--gpus", "8", "--rdzv-timeout", "0", "--dry-run"}, train));
        assertEquals(2, timeout.code());
        assertTrue(timeout.err().contains("--rdzv-timeout must be >= 1 s, got 0"), timeout.err());
        CliTest.Run huge = launch(Map.of(), NO_GPU, cat(new String[] {"--gpus", "70000", "--nnodes", "40000", "--node-rank", "1", "--master-addr",
                "10.0.0.1", "--dry-run"}, train));
        assertEquals(2, huge.code());
        assertTrue(huge.err().contains("--nnodes 40000 x --gpus 70000 = 2800000000 ranks"), huge.err());
    }

    static String[] cat(String[] a, String... b) {
        String[] c = java.util.Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, c, a.length, b.length);
        return c;
    }

    /**
     * A resume's plan: the run's world size (resharded by --world-size, with --set applied) against the ranks the launch
     * starts. Only the checkpoint's config and trainer state are read (the checkpoint here has no weights).
     */
    @Test
    void dryRunsCompareAResumedRunsWorldSize(@org.junit.jupiter.api.io.TempDir java.nio.file.Path tmp) throws Exception {
        java.nio.file.Path ck = java.nio.file.Files.createDirectories(tmp.resolve("run/checkpoints/step_5"));
        java.nio.file.Files.createDirectories(tmp.resolve("run/checkpoints/step_0/model")); // the reference policy a resume reads (its presence is checked)
        java.nio.file.Files.writeString(ck.resolve("config.json"), org.grpo4j.train.GrpoConfig.load(java.nio.file.Path.of("configs/tulu-3.1-8b-grpo.json")).toJson());
        java.nio.file.Files.writeString(ck.resolve("trainer_state.json"), "{\"training_step\": 5, \"optimizer_steps\": 10, \"consecutive_nonfinite\": 0,"
                + " \"skipped_steps\": 0, \"iterator\": {\"epoch\": 0, \"offset\": 240}, \"reference_checksum\": 7, \"world_size\": 8}");
        String run = tmp.resolve("run").toString();
        java.util.function.BiFunction<String, String[], String> plan = (gpus, train) -> {
            String[] args = new String[4 + train.length];
            System.arraycopy(new String[] {"--gpus", gpus, "--dry-run", "--"}, 0, args, 0, 4);
            System.arraycopy(train, 0, args, 4, train.length);
            CliTest.Run r = launch(Map.of(), NO_GPU, args);
            // exit 0 where the plan matches; 2, saying why, where the launch would fail
            boolean fine = r.out().contains("(matches)");
            assertEquals(fine ? 0 : 2, r.code(), r.out() + r.err());
            assertEquals(fine, r.err().isEmpty(), r.err());
            if (!fine) assertTrue(r.err().startsWith("grpo4j launch: --dry-run: this launch would fail: the res"), r.err());
            return r.out();
        };
        String eight = plan.apply("8", new String[] {"train", "--resume", run});
        assertTrue(eight.contains("run's world_size   8 (matches)"), eight);
        String four = plan.apply("4", new String[] {"train", "--resume", run});
        assertTrue(four.contains("run's world_size   8 -- does not match: add --world-size 4 to reshard the run for 4 ranks"), four);
        assertTrue(plan.apply("4", new String[] {"train", "--resume", run, "--world-size", "4", "--set", "save_freq=5"})
                .contains("run's world_size   4 (matches)"));
        String given = plan.apply("8", new String[] {"train", "--resume", run, "--world-size", "4"});
        assertTrue(given.contains("run's world_size   4 -- does not match: give --world-size 8 or launch 4 ranks"), given);
        String five = plan.apply("5", new String[] {"train", "--resume", run, "--world-size", "5"});
        assertTrue(five.contains("resume             not checked: ") && five.contains("do not split over 5 ranks"), five);
        String lr = plan.apply("8", new String[] {"train", "--resume", run, "--set", "learning_rate=1e-6"});
        assertTrue(lr.contains("not checked: ") && lr.contains("--allow-changes"), lr);
    }

    @Test
    void withoutGpusItSaysSoAndPointsToInProcessRanks() {
        CliTest.Run r = launch(Map.of(), NO_GPU, "--", "train", "--config", "examples/tiny-arith.json");
        assertEquals(2, r.code());
        assertTrue(r.err().startsWith("grpo4j launch: no CUDA device visible here (libcuda.so.1 not found (no NVIDIA driver)): launch runs one NCCL rank per GPU"),
                r.err());
        // (no --gpus: the tiny config's world_size is 1, so the count is left to the user)
        assertTrue(r.err().endsWith("tools/grpo4j train --config examples/tiny-arith.json --set world_size=N\n"), r.err());
        CliTest.Run eight = launch(Map.of(), NO_GPU, "--", "train", "--config", "configs/tulu-3.1-8b-grpo.json");
        assertTrue(eight.err().endsWith("--set world_size=8\n"), "the config's world_size: " + eight.err());
        // a resume: the run's own ranks, resharded to the planned ones where --gpus says how many
        CliTest.Run resume = launch(Map.of(), NO_GPU, "--gpus", "2", "--", "train", "--resume", "runs/x");
        assertTrue(resume.err().endsWith("tools/grpo4j train --resume runs/x --world-size 2\n"), resume.err());
        CliTest.Run resumeAll = launch(Map.of(), NO_GPU, "--", "train", "--resume", "runs/x");
        assertTrue(resumeAll.err().endsWith("tools/grpo4j train --resume runs/x\n"), resumeAll.err());
        CliTest.Run k = launch(Map.of(), NO_GPU, "--gpus", "4", "--", "train", "--config", "examples/tiny-arith.json");
        assertEquals(2, k.code());
        assertTrue(k.out().startsWith("grpo4j launch plan:"), "the plan comes first: " + k.out());
        assertTrue(k.err().contains("--set world_size=4"), k.err());
        // the user's other options are kept, a world_size of theirs replaced, and words a shell would split quoted
        CliTest.Run kept = launch(Map.of(), NO_GPU, "--gpus", "2", "--", "train", "--config", "examples/tiny-arith.json", "--set",
                "num_training_steps=3", "--set", "world_size=5", "--set", "output_dir=runs/a b");
        assertTrue(kept.err().endsWith("tools/grpo4j train --config examples/tiny-arith.json --set num_training_steps=3 --set 'output_dir=runs/a b'"
                + " --set world_size=2\n"), kept.err());
        CliTest.Run reshard = launch(Map.of(), NO_GPU, "--gpus", "2", "--", "train", "--resume", "runs/x", "--world-size", "4", "--set", "save_freq=5");
        assertTrue(reshard.err().endsWith("tools/grpo4j train --resume runs/x --set save_freq=5 --world-size 2\n"), reshard.err());
    }

    @Test
    void thePlansCommandLinesPasteIntoAShell() {
        CliTest.Run r = launch(Map.of(), NO_GPU, "--nnodes", "2", "--node-rank", "0", "--master-addr", "10.0.0.1", "--gpus", "8", "--rdzv-timeout", "900",
                "--dry-run", "--", "train", "--config", "configs/tulu-3.1-8b-grpo.json", "--set", "world_size=16", "--set",
                "dataset_mixer_list=[\"examples/data/x y.jsonl\", \"1.0\"]", "--set", "run_name=it's");
        String words = "train --config configs/tulu-3.1-8b-grpo.json --set world_size=16 --set 'dataset_mixer_list=[\"examples/data/x y.jsonl\", \"1.0\"]'"
                + " --set 'run_name=it'\\''s'";
        assertTrue(r.out().contains("every rank runs    " + words + "\n"), r.out());
        assertTrue(r.out().contains("start on each node tools/launch --nnodes 2 --node-rank <0..1> --master-addr 10.0.0.1 --master-port 29500 --gpus 8"
                + " --rdzv-timeout 900 -- " + words + "\n"), r.out());
        assertEquals("''", org.grpo4j.internal.util.Shell.quote(""));
        assertEquals("a=b/c.d:1,2@h+x-y", org.grpo4j.internal.util.Shell.quote("a=b/c.d:1,2@h+x-y"));
        assertEquals("'$HOME'", org.grpo4j.internal.util.Shell.quote("$HOME"));
        assertEquals("'=x'", org.grpo4j.internal.util.Shell.quote("=x"), "zsh expands a leading =");
        assertEquals("'a^b'", org.grpo4j.internal.util.Shell.quote("a^b"));
    }

    @Test
    void badLaunchesAreRefused() {
        CliTest.Run tasks = launch(Map.of("SLURM_NNODES", "1", "SLURM_NODEID", "0", "SLURM_STEP_ID", "0", "SLURM_STEP_TASKS_PER_NODE", "8",
                "SLURM_NTASKS_PER_NODE", "1", "SLURM_JOB_NODELIST", "gpu03"), NO_GPU, "--gpus", "8", "--dry-run", "--", "train", "--config",
                "configs/tulu-3.1-8b-grpo.json");
        assertEquals(2, tasks.code(), tasks.err());
        assertTrue(tasks.err().contains("run it as one Slurm task per node (srun --ntasks-per-node=1 tools/launch ...), not 8 tasks a node"), tasks.err());
        // the job's 8 tasks a node do not matter outside an srun step (a batch script is one process), nor in a step of one
        for (Map<String, String> env : List.of(Map.of("SLURM_NNODES", "1", "SLURM_NODEID", "0", "SLURM_NTASKS_PER_NODE", "8", "SLURM_JOB_NODELIST", "gpu03"),
                Map.of("SLURM_NNODES", "1", "SLURM_NODEID", "0", "SLURM_NTASKS_PER_NODE", "8", "SLURM_STEP_ID", "1", "SLURM_STEP_TASKS_PER_NODE", "1",
                        "SLURM_JOB_NODELIST", "gpu03"))) {
            CliTest.Run ok = launch(env, NO_GPU, "--gpus", "8", "--dry-run", "--", "train", "--config", "configs/tulu-3.1-8b-grpo.json");
            assertEquals(0, ok.code(), env + ": " + ok.err());
            // one node is one process: the rendezvous stays on loopback with a secret of its own, not on the node list's host
            assertTrue(ok.out().contains("rendezvous         127.0.0.1:29500, served by node 0; one process: a random secret of its own"), ok.out());
        }
        CliTest.Run missing = launch(Map.of(), ONE_GPU, "--gpus", "8", "--", "train", "--config", "examples/tiny-arith.json", "--set", "world_size=8");
        assertEquals(2, missing.code(), missing.err());
        assertTrue(missing.err().contains("--gpus 8: rank 1 needs cuda:1, but only 1 CUDA device is visible"), missing.err());
        CliTest.Run master = launch(Map.of(), NO_GPU, "--nnodes", "2", "--gpus", "8", "--dry-run", "--", "train", "--config", "x.json");
        assertEquals(2, master.code());
        assertTrue(master.err().contains("--master-addr is required with --nnodes 2"), master.err());
        CliTest.Run noDashes = launch(Map.of(), NO_GPU, "--gpus", "2", "train", "--config", "x.json");
        assertEquals(2, noDashes.code());
        assertTrue(noDashes.err().contains("The train command and its options follow a \"--\""), noDashes.err());
        CliTest.Run notTrain = launch(Map.of(), NO_GPU, "--gpus", "2", "--", "generate", "--model", "m");
        assertTrue(notTrain.err().contains("launch runs \"train\" on every rank"), notTrain.err());
        CliTest.Run rank = launch(Map.of(), NO_GPU, "--nnodes", "2", "--node-rank", "2", "--master-addr", "h", "--gpus", "8", "--dry-run", "--", "train");
        assertTrue(rank.err().contains("--node-rank 2 is outside [0, 2) (--nnodes 2)"), rank.err());
        // values from the environment are named as the environment gave them, a missing node count said so
        CliTest.Run late = launch(Map.of(), NO_GPU, "--gpus", "8", "--dry-run", "--", "train", "--config", "configs/tulu-3.1-8b-grpo.json",
                "--rdzv-timeout", "900");
        assertEquals(2, late.code());
        assertTrue(late.err().contains("--rdzv-timeout after -- is train's"), late.err());
        CliTest.Run slurm = launch(Map.of("SLURM_NODEID", "1"), NO_GPU, "--gpus", "8", "--dry-run", "--", "train");
        assertTrue(slurm.err().contains("SLURM_NODEID=1 is outside [0, 1) (no --nnodes, NNODES or SLURM_NNODES: 1 node)"), slurm.err());
        CliTest.Run zero = launch(Map.of("NNODES", "0"), NO_GPU, "--gpus", "8", "--dry-run", "--", "train");
        assertTrue(zero.err().contains("NNODES=0: the number of nodes must be >= 1"), zero.err());
        // SLURM_NODELIST names node 0 when SLURM_JOB_NODELIST is not set, as on the ranks
        CliTest.Run list = launch(Map.of("SLURM_NNODES", "2", "SLURM_NODEID", "1", "SLURM_NODELIST", "gpu[1-2]"), NO_GPU, "--gpus", "8", "--dry-run",
                "--", "train", "--config", "examples/tiny-arith.json");
        assertTrue(list.out().contains("gpu1:29500"), list.out() + list.err());
        CliTest.Run all = launch(Map.of(), NO_GPU, "--dry-run", "--", "train", "--config", "x.json");
        assertTrue(all.err().contains("--gpus all: no CUDA device visible here"), all.err());
    }
}
