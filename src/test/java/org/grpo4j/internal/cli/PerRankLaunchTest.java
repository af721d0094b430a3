package org.grpo4j.internal.cli;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.grpo4j.internal.dist.DistEnv;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code grpo4j train} started once per rank (torchrun-style RANK/WORLD_SIZE, or srun with several tasks a node): which
 * environments join a run, and a process that fails before training stops the others at once with its reason.
 */
class PerRankLaunchTest {

    @Test
    void torchrunAndSlurmTasksJoinARunAsOneRankEach() {
        DistEnv t = TrainCommand.perRankEnv(Map.of("RANK", "3", "LOCAL_RANK", "1", "WORLD_SIZE", "4", "MASTER_ADDR", "10.0.0.1", "MASTER_PORT", "6000"));
        assertNotNull(t);
        assertEquals(4, t.worldSize());
        assertArrayEquals(new int[] {3}, t.localRanks());
        assertArrayEquals(new int[] {1}, t.localDevices());
        assertEquals("10.0.0.1:6000", t.masterAddr() + ":" + t.masterPort());
        // srun --nodes 2 --ntasks-per-node 8 tools/grpo4j train ...: no RANK, Slurm's variables instead
        DistEnv s = TrainCommand.perRankEnv(Map.of("SLURM_PROCID", "11", "SLURM_LOCALID", "3", "SLURM_NTASKS", "32", "SLURM_NTASKS_PER_NODE", "16",
                "SLURM_STEP_ID", "0", "SLURM_STEP_NUM_TASKS", "16", "SLURM_STEP_TASKS_PER_NODE", "8(x2)", "SLURM_NNODES", "2", "SLURM_NODEID", "1",
                "SLURM_JOB_NODELIST", "gpu[07-08]"));
        assertNotNull(s, "srun with 8 tasks a node runs one rank per process");
        assertEquals(16, s.worldSize());
        assertArrayEquals(new int[] {11}, s.localRanks());
        assertArrayEquals(new int[] {3}, s.localDevices());
        assertEquals("gpu07:29500", s.masterAddr() + ":" + s.masterPort());
        // a run of its own: no launcher, world 1, or one Slurm task a node (that is tools/launch's layout)
        assertNull(TrainCommand.perRankEnv(Map.of()));
        assertNull(TrainCommand.perRankEnv(Map.of("RANK", "0", "WORLD_SIZE", "1")));
        assertNull(TrainCommand.perRankEnv(Map.of("SLURM_PROCID", "0", "SLURM_NTASKS", "2", "SLURM_STEP_ID", "0", "SLURM_STEP_TASKS_PER_NODE", "1",
                "SLURM_NNODES", "2", "SLURM_JOB_NODELIST", "gpu[07-08]")));
        // WORLD_SIZE > 1 or LOCAL_RANK > 0 without RANK (a launcher that forgot it, a typo): refused, not N runs of their own
        for (Map<String, String> e : List.of(Map.of("WORLD_SIZE", "2", "LOCAL_RANK", "1", "MASTER_ADDR", "127.0.0.1"), Map.of("RANKS", "1", "LOCAL_RANK", "1"))) {
            IllegalArgumentException x = assertThrows(IllegalArgumentException.class, () -> TrainCommand.perRankEnv(e));
            assertTrue(x.getMessage().matches("(WORLD_SIZE=2|LOCAL_RANK=1) is set but RANK is not: .*"), x.getMessage());
        }
        assertNull(TrainCommand.perRankEnv(Map.of("WORLD_SIZE", "1", "LOCAL_RANK", "0")));
        // a batch script of a job with 8 tasks a node is one process (no srun step): a run of its own
        assertNull(TrainCommand.perRankEnv(Map.of("SLURM_PROCID", "0", "SLURM_NTASKS", "8", "SLURM_NTASKS_PER_NODE", "8", "SLURM_NNODES", "1",
                "SLURM_JOB_NODELIST", "gpu07")));
    }

    @Test
    void aProcessStoppedByAnothersSignalDoesNotExitZero() {
        assertEquals(0, TrainCommand.exitCode(false, -1), "trained to the horizon");
        assertEquals(0, TrainCommand.exitCode(false, 143), "a signal after the last step: the run is done");
        assertEquals(143, TrainCommand.exitCode(true, 143), "stopped by its own SIGTERM");
        assertEquals(130, TrainCommand.exitCode(true, 130), "stopped by its own Ctrl-C");
        assertEquals(TrainCommand.STOPPED_BY_ANOTHER_PROCESS, TrainCommand.exitCode(true, -1), "stopped because another node's process was signalled");
        assertEquals(5, TrainCommand.STOPPED_BY_ANOTHER_PROCESS, "docs/cli.md's code, apart from bench's 3 and 4");
    }

    /**
     * Two JVMs of one rank each on loopback; rank 1 is given another world size (a mistyped --set on one node). Rank 1
     * fails at its checks; before, it closed its end of the rendezvous as a clean exit, and rank 0 waited at the config
     * barrier for the rendezvous timeout (120 s here) and then named no reason. Now rank 1 aborts the rendezvous, and
     * rank 0 stops within seconds naming rank 1's error.
     */
    @Test
    void aProcessThatFailsBeforeTrainingStopsTheOthersWithItsReason(@TempDir Path tmp) throws Exception {
        int port;
        try (java.net.ServerSocket ss = new java.net.ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            port = ss.getLocalPort();
        }
        Process zero = rank(tmp, 0, port, "2");
        Process one = rank(tmp, 1, port, "1");
        try {
            long t0 = System.nanoTime();
            assertTrue(one.waitFor(100, TimeUnit.SECONDS), "rank 1 still runs");
            // (within 100 s, before the rendezvous timeout of 120 s, and naming rank 1's reason below: a timeout names none)
            assertTrue(zero.waitFor(100, TimeUnit.SECONDS), "rank 0 still waits after rank 1 failed");
            double s = (System.nanoTime() - t0) / 1e9;
            String log0 = Files.readString(tmp.resolve("rank0.log")), log1 = Files.readString(tmp.resolve("rank1.log"));
            System.out.println("rank 0 stopped after " + String.format("%.1f", s) + " s:\n" + log0);
            assertNotEquals(0, one.exitValue(), log1);
            assertNotEquals(0, zero.exitValue(), log0);
            assertTrue(log1.contains("the config says world_size 1 but 2 ranks were launched"), log1);
            assertTrue(log0.contains("the config says world_size 1 but 2 ranks were launched"), "rank 0 names rank 1's reason:\n" + log0);
        } finally {
            zero.destroyForcibly();
            one.destroyForcibly();
        }
    }

    private static Process rank(Path tmp, int rank, int port, String worldSize) throws Exception {
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(), "-cp",
                System.getProperty("java.class.path"), Main.class.getName(), "train", "--config", "examples/tiny-arith.json", "--set",
                "world_size=" + worldSize, "--output", tmp.resolve("run").toString(), "--rdzv-timeout", "120"));
        ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(tmp.resolve("rank" + rank + ".log").toFile());
        pb.environment().putAll(Map.of("RANK", String.valueOf(rank), "LOCAL_RANK", "0", "WORLD_SIZE", "2", "MASTER_ADDR", "127.0.0.1",
                "MASTER_PORT", String.valueOf(port)));
        return pb.start();
    }
}
