package org.grpo4j.internal.dist;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * Where this JVM sits in a multi-process run, from torchrun-style environment variables with Slurm fallbacks
 * (docs/distributed.md, "Launching"):
 *
 * <ul>
 *   <li><b>One JVM per node</b> (what tools/launch starts): NODE_RANK (or GROUP_RANK, SLURM_NODEID), NNODES (or
 *       SLURM_NNODES), LOCAL_WORLD_SIZE (GPUs per node; tools/launch sets it from --gpus); the node hosts ranks
 *       NODE_RANK x LOCAL_WORLD_SIZE + i on cuda:i. WORLD_SIZE, when set, must equal NNODES x LOCAL_WORLD_SIZE.</li>
 *   <li><b>One JVM per rank</b> (torchrun, or srun with one task per GPU): RANK and LOCAL_RANK set (or
 *       SLURM_PROCID and SLURM_LOCALID with more than one task per node); WORLD_SIZE (or SLURM_NTASKS); the rank
 *       runs on cuda:LOCAL_RANK.</li>
 * </ul>
 * MASTER_ADDR (else the first host of SLURM_JOB_NODELIST, else 127.0.0.1 for a single node) and MASTER_PORT (else
 * 29500) locate the rendezvous store, which the process hosting rank 0 serves.
 */
public record DistEnv(int worldSize, int processes, int processIndex, int[] localRanks, int[] localDevices, String masterAddr, int masterPort) {

    public static final int DEFAULT_PORT = 29500;

    public DistEnv {
        if (worldSize < 1) throw new IllegalArgumentException("world size must be >= 1, got " + worldSize);
        if (processes < 1 || processIndex < 0 || processIndex >= processes)
            throw new IllegalArgumentException("process " + processIndex + " outside [0, " + processes + ")");
        if (localRanks.length == 0 || localRanks.length != localDevices.length) throw new IllegalArgumentException("no local ranks");
        for (int r : localRanks) if (r < 0 || r >= worldSize) throw new IllegalArgumentException("rank " + r + " outside world " + worldSize);
        if (masterPort < 1 || masterPort > 65535) throw new IllegalArgumentException("MASTER_PORT " + masterPort + " is outside [1, 65535] (tools/launch: --master-port)");
        checkMasterAddr(masterAddr);
    }

    /**
     * Refuses a MASTER_ADDR (--master-addr) that names no host: blank, with white space, or host:port (one colon; an
     * IPv6 literal has two or more), whose port belongs in MASTER_PORT. Such a value failed at rank 0 with a resolver
     * message naming neither variable, while the other processes retried it until the rendezvous timeout.
     */
    static void checkMasterAddr(String a) {
        if (a == null || a.isBlank() || a.chars().anyMatch(Character::isWhitespace))
            throw new IllegalArgumentException("MASTER_ADDR (--master-addr) \"" + a + "\" is not a host name or address");
        if (a.chars().filter(ch -> ch == ':').count() == 1)
            throw new IllegalArgumentException("MASTER_ADDR (--master-addr) " + a + " looks like host:port; give the host alone and the port as"
                    + " MASTER_PORT (--master-port)");
    }

    /** One JVM per node: node {@code nodeRank} of {@code nnodes}, {@code gpus} ranks each. */
    public static DistEnv perNode(int nnodes, int nodeRank, int gpus, String masterAddr, int masterPort) {
        if (nnodes < 1) throw new IllegalArgumentException("--nnodes must be >= 1, got " + nnodes);
        if (nodeRank < 0 || nodeRank >= nnodes) throw new IllegalArgumentException("--node-rank " + nodeRank + " outside [0, " + nnodes + ")");
        if (gpus < 1) throw new IllegalArgumentException("--gpus must be >= 1, got " + gpus);
        if ((long) nnodes * gpus > 1 << 20) // (a product past 2^31 wrapped to a negative or wrong world size)
            throw new IllegalArgumentException("--nnodes " + nnodes + " x --gpus " + gpus + " = " + (long) nnodes * gpus + " ranks: more than 1048576");
        int[] ranks = new int[gpus], devs = new int[gpus];
        for (int i = 0; i < gpus; i++) {
            ranks[i] = nodeRank * gpus + i;
            devs[i] = i;
        }
        return new DistEnv(nnodes * gpus, nnodes, nodeRank, ranks, devs, masterAddr, masterPort);
    }

    /**
     * Whether {@code env} describes one JVM per rank: RANK set (torchrun), or a task of an srun step with more than one
     * task a node (srun --ntasks-per-node=8; a batch script, which is one process whatever the job's tasks, is not).
     */
    public static boolean perRankLaunch(Map<String, String> env) {
        return first(env, "RANK") != null || env.containsKey("SLURM_PROCID") && tasksPerNode(env) > 1;
    }

    /** The process's place from {@code env} (System.getenv()); {@code gpusPerNode} is used in per-node mode when LOCAL_WORLD_SIZE is unset. */
    public static DistEnv fromEnvironment(Map<String, String> env, int gpusPerNode) {
        String rank = first(env, "RANK"), local = first(env, "LOCAL_RANK");
        boolean slurmPerRank = rank == null && perRankLaunch(env);
        String master = masterAddr(env);
        int port = integer(env, "MASTER_PORT", DEFAULT_PORT);
        if (rank != null || slurmPerRank) {
            int r = slurmPerRank ? integer(env, "SLURM_PROCID", 0) : integer(env, "RANK", 0);
            String worldKey = env.containsKey("WORLD_SIZE") ? "WORLD_SIZE" : env.containsKey("SLURM_STEP_NUM_TASKS") ? "SLURM_STEP_NUM_TASKS" : "SLURM_NTASKS";
            int w = integer(env, worldKey, 1);
            int l = local != null ? integer(env, "LOCAL_RANK", 0) : integer(env, "SLURM_LOCALID", 0);
            String localKey = local != null ? "LOCAL_RANK" : "SLURM_LOCALID";
            // (a bad local rank surfaced only at cuda:L, after every other process had started)
            if (w < 1) throw new IllegalArgumentException(worldKey + "=" + w + ": must be >= 1");
            if (r < 0 || r >= w)
                throw new IllegalArgumentException((slurmPerRank ? "SLURM_PROCID=" : "RANK=") + r + " is outside [0, " + w + ") (" + worldKey + " " + w + ")");
            if (l < 0) throw new IllegalArgumentException(localKey + "=" + l + " is negative");
            if (first(env, "LOCAL_WORLD_SIZE") != null && l >= integer(env, "LOCAL_WORLD_SIZE", 1))
                throw new IllegalArgumentException(localKey + "=" + l + " is outside [0, LOCAL_WORLD_SIZE=" + integer(env, "LOCAL_WORLD_SIZE", 1) + ")");
            if (master == null) {
                if (w > 1 && !env.containsKey("SLURM_JOB_NODELIST"))
                    throw new IllegalArgumentException("MASTER_ADDR is not set (the address of the node hosting rank 0)");
                master = "127.0.0.1";
            }
            return new DistEnv(w, w, r, new int[] {r}, new int[] {l}, master, port);
        }
        int nnodes = env.containsKey("NNODES") ? integer(env, "NNODES", 1) : integer(env, "SLURM_NNODES", 1);
        String nodeKey = env.containsKey("NODE_RANK") ? "NODE_RANK" : env.containsKey("GROUP_RANK") ? "GROUP_RANK" : "SLURM_NODEID";
        int node = integer(env, nodeKey, 0);
        int gpus = env.containsKey("LOCAL_WORLD_SIZE") ? integer(env, "LOCAL_WORLD_SIZE", 1) : gpusPerNode;
        if (master == null) {
            if (nnodes > 1) throw new IllegalArgumentException("MASTER_ADDR is not set: with " + nnodes + " nodes it must name node 0 (--master-addr)");
            master = "127.0.0.1";
        }
        DistEnv e = perNode(nnodes, node, gpus, master, port);
        if (env.containsKey("WORLD_SIZE") && integer(env, "WORLD_SIZE", 1) != e.worldSize())
            throw new IllegalArgumentException("WORLD_SIZE " + env.get("WORLD_SIZE") + " but " + nnodes + " nodes x " + gpus + " GPUs = " + e.worldSize());
        return e;
    }

    private static String first(Map<String, String> env, String key) {
        String v = env.get(key);
        return v == null || v.isBlank() ? null : v.trim();
    }

    private static int integer(Map<String, String> env, String key, int dflt) {
        String v = first(env, key);
        if (v == null) return dflt;
        try {
            return Integer.parseInt(v);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(key + "=" + v + " is not an integer");
        }
    }

    /**
     * The tasks a node of this srun step starts: SLURM_STEP_TASKS_PER_NODE (its first count: "8(x2)"), else the job's
     * SLURM_NTASKS_PER_NODE or SLURM_TASKS_PER_NODE; 1 outside an srun step (no SLURM_STEP_ID: a batch script, one
     * process whatever the job asked for) and when unknown.
     */
    public static int tasksPerNode(Map<String, String> env) {
        if (first(env, "SLURM_STEP_ID") == null && first(env, "SLURM_STEPID") == null) return 1;
        String v = first(env, "SLURM_STEP_TASKS_PER_NODE");
        if (v == null) v = first(env, "SLURM_NTASKS_PER_NODE");
        if (v == null) v = first(env, "SLURM_TASKS_PER_NODE");
        if (v == null) return 1;
        java.util.regex.Matcher m = java.util.regex.Pattern.compile("^(\\d+)").matcher(v);
        return m.find() ? Integer.parseInt(m.group(1)) : 1;
    }

    /** MASTER_ADDR, else the first host of SLURM_JOB_NODELIST (SLURM_NODELIST), else null. */
    static String masterAddr(Map<String, String> env) {
        String m = first(env, "MASTER_ADDR");
        if (m != null) return m;
        String list = first(env, "SLURM_JOB_NODELIST");
        if (list == null) list = first(env, "SLURM_NODELIST");
        return list == null ? null : hosts(list).get(0);
    }

    /**
     * The hosts of a Slurm node list ("gpu[01-03,07],login1" -> gpu01, gpu02, gpu03, gpu07, login1), what
     * {@code scontrol show hostnames} prints; zero padding is kept.
     */
    public static List<String> hosts(String nodelist) {
        List<String> out = new ArrayList<>();
        int i = 0;
        while (i < nodelist.length()) {
            int j = i, depth = 0;
            while (j < nodelist.length() && (depth > 0 || nodelist.charAt(j) != ',')) {
                if (nodelist.charAt(j) == '[') depth++;
                if (nodelist.charAt(j) == ']') depth--;
                j++;
            }
            String item = nodelist.substring(i, Math.min(j, nodelist.length())).trim();
            if (!item.isEmpty()) expand(nodelist, item, item, out);
            i = j + 1;
        }
        if (out.isEmpty()) throw new IllegalArgumentException("empty Slurm node list \"" + nodelist + "\"");
        return out;
    }

    private static final java.util.regex.Pattern RANGE = java.util.regex.Pattern.compile("(\\d{1,9})(?:-(\\d{1,9}))?");

    /** Adds the hosts of {@code rest}, one item of the list ({@code item}), bracket group by bracket group. */
    private static void expand(String nodelist, String item, String rest, List<String> out) {
        int lb = rest.indexOf('['), rb = rest.indexOf(']');
        if (lb < 0 && rb < 0) {
            if (out.size() >= 1 << 16) throw badNodeList(nodelist, "more than 65536 hosts");
            out.add(rest);
            return;
        }
        if (lb < 0 || rb < lb || rest.indexOf('[', lb + 1) >= 0 && rest.indexOf('[', lb + 1) < rb || rb == lb + 1)
            throw badNodeList(nodelist, "\"" + item + "\" is not HOST[RANGES]...: unmatched or empty brackets");
        String prefix = rest.substring(0, lb), tail = rest.substring(rb + 1);
        for (String part : rest.substring(lb + 1, rb).split(",", -1)) {
            java.util.regex.Matcher r = RANGE.matcher(part.trim());
            if (!r.matches()) throw badNodeList(nodelist, "\"" + part + "\" in " + item + " is not N or N-M");
            if (r.group(2) == null) expand(nodelist, item, prefix + r.group(1) + tail, out);
            else {
                long x = Long.parseLong(r.group(1)), y = Long.parseLong(r.group(2));
                if (x > y || y - x >= 1 << 16) throw badNodeList(nodelist, "the range " + part + " in " + item + " is empty or too large");
                int width = r.group(1).length();
                for (long k = x; k <= y; k++) expand(nodelist, item, prefix + String.format("%0" + width + "d", k) + tail, out);
            }
        }
    }

    private static IllegalArgumentException badNodeList(String nodelist, String why) {
        return new IllegalArgumentException("Slurm node list \"" + nodelist + "\" (SLURM_JOB_NODELIST): " + why);
    }

    /** Whether this process hosts rank 0 (and serves the rendezvous store). */
    public boolean hostsRankZero() { return localRanks[0] == 0; }
}
