package org.grpo4j.internal.cli;

import org.grpo4j.internal.util.Shell;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import org.grpo4j.internal.backend.CudaRuntime;
import org.grpo4j.internal.dist.DistEnv;
import org.grpo4j.internal.dist.Rendezvous;
import org.grpo4j.train.GrpoConfig;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/**
 * {@code tools/launch}: starts this node's ranks of a multi-GPU run in this JVM (one rank per GPU, each on its own
 * thread with its own NCCL communicator), after printing the plan. Node 0 serves the rendezvous store. Flags win over
 * the environment (NNODES, NODE_RANK or GROUP_RANK, MASTER_ADDR, MASTER_PORT), which wins over Slurm's (SLURM_NNODES, SLURM_NODEID,
 * the first host of SLURM_JOB_NODELIST). See docs/distributed.md.
 */
@Command(name = "launch", mixinStandardHelpOptions = true,
        description = {"Run this node's share of a multi-GPU training run: one JVM per node, one rank per GPU (ZeRO-2 over NCCL).",
                "Usage: launch [--nnodes N --node-rank R --master-addr A --master-port P] [--gpus K|all] [--rdzv-timeout S] [--dry-run] -- train --config F ..."})
final class LaunchCommand implements Callable<Integer> {
    @Option(names = "--nnodes", description = "Nodes in the run (default: NNODES, SLURM_NNODES, else 1).") Integer nnodes;
    @Option(names = "--node-rank", description = "This node's index, 0 .. nnodes-1 (default: NODE_RANK, GROUP_RANK, SLURM_NODEID, else 0).") Integer nodeRank;
    @Option(names = "--master-addr", description = "Address of node 0, which serves the rendezvous (default: MASTER_ADDR, the first Slurm host, else 127.0.0.1 for one node).") String masterAddr;
    @Option(names = "--master-port", description = "Rendezvous port on node 0 (default: MASTER_PORT, else 29500).") Integer masterPort;
    @Option(names = "--gpus", defaultValue = "all", description = "GPUs (ranks) per node: a number, or all visible ones (default: ${DEFAULT-VALUE}).") String gpus;
    static final int DEFAULT_RDZV_TIMEOUT = 300;
    @Option(names = "--rdzv-timeout", defaultValue = "" + DEFAULT_RDZV_TIMEOUT, description = "Seconds to wait for every node to join (default: ${DEFAULT-VALUE}).") int rdzvTimeout;
    @Option(names = "--dry-run", description = "Print the plan (and check the config's world_size) without starting anything.") boolean dryRun;
    @Parameters(arity = "1..*", paramLabel = "COMMAND", description = "The command to run on every rank: train --config F [--set k=v ...].") List<String> command = new ArrayList<>();

    /** The environment (tests replace it). */
    Map<String, String> env = System.getenv();
    /** Visible CUDA devices, or a reason why none (tests replace it). */
    java.util.function.Supplier<CudaRuntime.Availability> devices = CudaRuntime::probe;

    @Override
    public Integer call() throws Exception {
        if (command.isEmpty() || !command.get(0).equals("train"))
            throw new IllegalArgumentException("launch runs \"train\" on every rank: launch [options] -- train --config F ..., got " + String.join(" ", command));
        if (nnodes == null && nodeRank == null && env.containsKey("SLURM_NODEID") && DistEnv.tasksPerNode(env) > 1)
            throw new IllegalArgumentException("launch starts every GPU's rank of its node itself: run it as one Slurm task per node"
                    + " (srun --ntasks-per-node=1 tools/launch ...), not " + DistEnv.tasksPerNode(env) + " tasks a node (for one process per GPU,"
                    + " run tools/grpo4j train under srun instead: it joins the run by RANK/SLURM_PROCID)");
        if (rdzvTimeout < 1) throw new IllegalArgumentException("--rdzv-timeout must be >= 1 s, got " + rdzvTimeout);
        int n = nnodes != null ? nnodes : intEnv("NNODES", intEnv("SLURM_NNODES", 1));
        int node = nodeRank != null ? nodeRank : intEnv("NODE_RANK", intEnv("GROUP_RANK", intEnv("SLURM_NODEID", 0))); // (GROUP_RANK: torchrun's name)
        // (each value named where it came from: an environment's SLURM_NODEID=1 was reported as "--node-rank 1")
        String nFrom = nnodes != null ? "--nnodes " + n : from("NNODES", "SLURM_NNODES"), nodeFrom = nodeRank != null ? "--node-rank " + node
                : from("NODE_RANK", "GROUP_RANK", "SLURM_NODEID");
        if (n < 1) throw new IllegalArgumentException(nFrom + ": the number of nodes must be >= 1");
        if (node < 0 || node >= n)
            throw new IllegalArgumentException((nodeFrom != null ? nodeFrom : "node rank " + node) + " is outside [0, " + n + ") ("
                    + (nFrom != null ? nFrom : "no --nnodes, NNODES or SLURM_NNODES: 1 node") + ")");
        // (one node is one process: its rendezvous stays on loopback, needing no secret, unless an address is given)
        // (a blank variable is unset, as DistEnv reads them)
        String envMaster = blankless(env.get("MASTER_ADDR")), nodelist = blankless(env.get("SLURM_JOB_NODELIST"));
        if (nodelist == null) nodelist = blankless(env.get("SLURM_NODELIST")); // (as DistEnv reads it on the ranks)
        if (masterAddr != null && masterAddr.isBlank()) throw new IllegalArgumentException("--master-addr is empty");
        String master = masterAddr != null ? masterAddr.trim() : envMaster != null ? envMaster
                : n > 1 && nodelist != null ? DistEnv.hosts(nodelist).get(0) : null;
        if (master == null) {
            if (n > 1) throw new IllegalArgumentException("--master-addr is required with --nnodes " + n + " (the address of node 0; or set MASTER_ADDR)");
            master = "127.0.0.1";
        }
        int port = masterPort != null ? masterPort : intEnv("MASTER_PORT", DistEnv.DEFAULT_PORT);
        CudaRuntime.Availability a = devices.get();
        String[] train = command.subList(1, command.size()).toArray(String[]::new);
        TrainCommand tc = new TrainCommand();
        if (new CommandLine(tc).parseArgs(train).hasMatchedOption("--rdzv-timeout")) // (train's, for one process per rank: unused here)
            throw new IllegalArgumentException("--rdzv-timeout after -- is train's (one process per rank); give launch's before --:"
                    + " launch --rdzv-timeout S ... -- train ...");
        int k;
        if (gpus.equals("all")) {
            if (!a.available()) {
                if (dryRun) throw new IllegalArgumentException("--gpus all: no CUDA device visible here (" + a.reason() + "); give --gpus K to plan a run for other machines");
                throw noGpus(a, tc, 0);
            }
            k = a.deviceCount();
        } else {
            try {
                k = Integer.parseInt(gpus);
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("--gpus must be a number or \"all\", got \"" + gpus + "\"");
            }
            if (k < 1) throw new IllegalArgumentException("--gpus must be >= 1, got " + k);
        }
        DistEnv plan = DistEnv.perNode(n, node, k, master, port);
        List<String> problems = printPlan(plan, n, node, k, tc);
        if (dryRun) {
            if (problems.isEmpty()) return 0;
            // (a dry run answers "would this start?": the real launch stops on each of these, on some node, later)
            System.err.println("grpo4j launch: --dry-run: this launch would fail: " + String.join("; ", problems));
            return Main.BAD_INPUT;
        }
        if (!a.available()) throw noGpus(a, tc, plan.worldSize());
        if (k > a.deviceCount())
            throw new IllegalArgumentException("--gpus " + k + ": rank " + plan.localRanks()[a.deviceCount()] + " needs cuda:" + a.deviceCount() + ", but only "
                    + a.deviceCount() + " CUDA device" + (a.deviceCount() == 1 ? " is" : "s are") + " visible (CUDA_VISIBLE_DEVICES)");
        String secret = env.getOrDefault(Rendezvous.SECRET_ENV, "");
        try (Rendezvous r = new Rendezvous(plan, secret, rdzvTimeout * 1000L, 3000)) {
            r.onAbort(reason -> {
                System.err.println("grpo4j launch: the run was aborted: " + reason);
                haltIfStillRunning("grpo4j launch", 60_000);
            });
            tc.cluster = r;
            return tc.call();
        }
    }

    /**
     * After an abort the trainer stops its ranks; should anything still hang (a rank inside NCCL despite its
     * non-blocking mode, or elsewhere), the process ends after {@code millis} (a daemon timer: a process that finishes
     * earlier exits as usual).
     */
    static void haltIfStillRunning(String who, long millis) {
        Thread t = new Thread(() -> {
            try {
                Thread.sleep(millis);
            } catch (InterruptedException e) {
                return;
            }
            System.err.println(who + ": still running " + millis / 1000 + " s after the abort; exiting");
            Runtime.getRuntime().halt(Main.FAILED);
        }, "grpo4j-abort-halt");
        t.setDaemon(true);
        t.start();
    }

    /**
     * No GPU here: the same run's ranks in one process on the CPU. {@code world} is the plan's world size, or 0 where
     * none was planned (--gpus all): then the config's world_size, or N.
     */
    private IllegalStateException noGpus(CudaRuntime.Availability a, TrainCommand tc, int world) {
        String n = null;
        if (world > 0) n = String.valueOf(world);
        else if (tc.resume == null) { // a resume keeps the run's world size unless --world-size reshards it
            n = "N";
            if (tc.config != null) {
                try {
                    int w = GrpoConfig.load(tc.config, tc.set).worldSize;
                    if (w > 1) n = String.valueOf(w);
                } catch (Exception e) {
                    // the config's own errors come when train reads it
                }
            }
        }
        List<String> cpu = new ArrayList<>(List.of("tools/grpo4j"));
        cpu.addAll(n == null ? command : withWorldSize(command, tc.resume != null, n));
        return new IllegalStateException("no CUDA device visible here (" + a.reason() + "): launch runs one NCCL rank per GPU. Without GPUs, train runs the ranks"
                + " in one process on the CPU with the same ZeRO-2 code: " + Shell.join(cpu));
    }

    /**
     * The train command {@code cmd} with its world size set to {@code n}, every other argument as given: a new run's
     * {@code --set world_size=N}, a resume's {@code --world-size N} (either replacing one already there).
     */
    static List<String> withWorldSize(List<String> cmd, boolean resume, String n) {
        List<String> out = new ArrayList<>();
        for (int i = 0; i < cmd.size(); i++) {
            String a = cmd.get(i);
            if (!resume && a.equals("--set") && i + 1 < cmd.size() && cmd.get(i + 1).trim().startsWith("world_size=")) i++;
            else if (!resume && a.startsWith("--set=") && a.substring(6).trim().startsWith("world_size=")) continue;
            else if (resume && a.equals("--world-size") && i + 1 < cmd.size()) i++;
            else if (resume && a.startsWith("--world-size=")) continue;
            else out.add(a);
        }
        out.addAll(resume ? List.of("--world-size", n) : List.of("--set", "world_size=" + n));
        return out;
    }

    /** Prints the plan; returns what it found that would stop the launch (empty: nothing). */
    private List<String> printPlan(DistEnv plan, int n, int node, int k, TrainCommand tc) {
        List<String> problems = new ArrayList<>();
        System.out.println("grpo4j launch plan:");
        System.out.printf("  %-18s %d = %d node%s x %d GPU%s (ZeRO-2 over NCCL, one rank per GPU)%n", "world size", plan.worldSize(), n, n == 1 ? "" : "s", k,
                k == 1 ? "" : "s");
        System.out.printf("  %-18s node %d of %d: rank%s %s on cuda:%s%n", "this node", node, n, k == 1 ? "" : "s",
                k == 1 ? String.valueOf(plan.localRanks()[0]) : plan.localRanks()[0] + "-" + plan.localRanks()[k - 1], k == 1 ? "0" : "0-" + (k - 1));
        boolean secret = !env.getOrDefault(Rendezvous.SECRET_ENV, "").isEmpty();
        boolean loopback; // decided as the rendezvous decides where it listens (a name this host maps to loopback included)
        try {
            loopback = !Rendezvous.listensBeyondLoopback(plan.masterAddr(), plan.processes());
        } catch (java.net.UnknownHostException e) {
            loopback = false; // (a dry run on a login node need not resolve the compute nodes' names)
        }
        System.out.printf("  %-18s %s:%d, served by node 0; %s%n", "rendezvous", plan.masterAddr(), plan.masterPort(),
                secret ? Rendezvous.SECRET_ENV + " set" : plan.processes() == 1 ? "one process: a random secret of its own"
                        : loopback ? "loopback only, no secret (any local user can join or abort it: set " + Rendezvous.SECRET_ENV + " on shared machines)"
                        : Rendezvous.SECRET_ENV + " NOT set: required beyond loopback");
        if (!secret && !loopback && plan.processes() > 1) problems.add(Rendezvous.SECRET_ENV + " is not set, and the rendezvous at " + plan.masterAddr() + " is beyond loopback");
        System.out.printf("  %-18s %s%n", "every rank runs", Shell.join(command));
        if (tc.config != null) {
            try {
                GrpoConfig c = GrpoConfig.load(tc.config, tc.set);
                System.out.printf("  %-18s %s%n", "config world_size", c.worldSize + (c.worldSize == plan.worldSize() ? " (matches)"
                        : " -- does not match: add --set world_size=" + plan.worldSize() + " (local_* batch sizes are per rank)"));
                if (c.worldSize != plan.worldSize())
                    problems.add("the config's world_size " + c.worldSize + " is not the plan's " + plan.worldSize() + " ranks");
            } catch (Exception e) {
                System.out.printf("  %-18s %s%n", "config", "not checked: " + Errors.describe(e));
                problems.add("the config: " + Errors.describe(e));
            }
        }
        if (tc.resume != null) {
            try {
                int reshard = tc.worldSize != null ? tc.worldSize : 0;
                GrpoConfig c = org.grpo4j.internal.train.Checkpoints.plan(tc.resume, reshard, tc.set, tc.allowChanges).config();
                System.out.printf("  %-18s %s%n", "run's world_size", c.worldSize + (c.worldSize == plan.worldSize() ? " (matches)"
                        : " -- does not match: " + (tc.worldSize != null ? "give --world-size " + plan.worldSize() + " or launch " + c.worldSize + " ranks"
                        : "add --world-size " + plan.worldSize() + " to reshard the run for " + plan.worldSize() + " ranks (the same global batch)"
                        + ", or launch " + c.worldSize + " ranks")));
                if (c.worldSize != plan.worldSize())
                    problems.add("the resumed run's world_size " + c.worldSize + " is not the plan's " + plan.worldSize() + " ranks");
            } catch (Exception e) {
                System.out.printf("  %-18s %s%n", "resume", "not checked: " + Errors.describe(e));
                problems.add("the resume: " + Errors.describe(e));
            }
        }
        if (n > 1)
            System.out.printf("  %-18s tools/launch --nnodes %d --node-rank <0..%d> --master-addr %s --master-port %d --gpus %d%s -- %s%n", "start on each node",
                    n, n - 1, Shell.quote(plan.masterAddr()), plan.masterPort(), k, rdzvTimeout != DEFAULT_RDZV_TIMEOUT ? " --rdzv-timeout " + rdzvTimeout : "",
                    Shell.join(command));
        System.out.flush();
        return problems;
    }

    /** "KEY=value" of the first of {@code keys} set (not blank) in the environment, or null. */
    private String from(String... keys) {
        for (String k : keys) if (blankless(env.get(k)) != null) return k + "=" + env.get(k).trim();
        return null;
    }

    private int intEnv(String key, int dflt) {
        String v = env.get(key);
        if (v == null || v.isBlank()) return dflt;
        try {
            return Integer.parseInt(v.trim());
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(key + "=" + v + " is not an integer");
        }
    }

    /** For tests: a launch with a given environment and devices. */
    static LaunchCommand with(Map<String, String> env, CudaRuntime.Availability devices) {
        LaunchCommand l = new LaunchCommand();
        l.env = env;
        l.devices = () -> devices;
        return l;
    }

    private static String blankless(String v) {
        return v == null || v.isBlank() ? null : v.trim();
    }
}
