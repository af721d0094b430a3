package org.grpo4j.tools;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * tools/e2e-bench's plumbing around a stub of our benchmark and the peers (a copy of the script beside a fake
 * tools/bench and tools/e2e-peers.py): a run killed (137) with its JSON incomplete, as a hung row's exit blocked in
 * the CUDA runtime ends, goes on with --resume; inside a --box, ours' deadline leaves the peers their budget and the
 * comparison its time, and the peers' limit ends 20 s before the box (a review found the peers' and ours' limits
 * adding up past gpu-loan's box, which lost the comparison).
 */
class E2eBenchScriptTest {

    private record Run(int code, String out) {}

    private static Run run(Path root, String... args) throws Exception {
        List<String> cmd = new java.util.ArrayList<>(List.of("bash", root.resolve("tools/e2e-bench").toString()));
        cmd.addAll(List.of(args));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.waitFor(2, TimeUnit.MINUTES), "e2e-bench ends: " + out);
        return new Run(p.exitValue(), out);
    }

    /** A copy of the script whose tools/bench stub writes its arguments to calls.txt and acts as {@code firstRun} says. */
    private static Path rig(Path tmp, String firstRun) throws Exception {
        Path root = tmp.resolve("rig"), tools = Files.createDirectories(root.resolve("tools"));
        Files.copy(Path.of("tools/e2e-bench"), tools.resolve("e2e-bench"));
        Files.writeString(tools.resolve("bench"), String.join("\n",
                "#!/usr/bin/env bash",
                "echo \"$*\" >> \"$(dirname \"$0\")/../calls.txt\"",
                "json=; cmp=; outd=; resume=",
                "while [ $# -gt 0 ]; do case \"$1\" in --json) json=$2; shift 2;; --resume) resume=1; shift 2;; --compare) cmp=1; shift 3;;"
                        + " --out) outd=$2; shift 2;; *) shift;; esac; done",
                "if [ -n \"$cmp\" ]; then echo table > \"$outd/e2e-compare.md\"; exit 0; fi",
                "if [ -n \"$resume\" ]; then echo '{\"complete\": true}' > \"$json\"; exit 0; fi",
                firstRun, ""));
        tools.resolve("bench").toFile().setExecutable(true);
        Files.writeString(tools.resolve("e2e-peers.py"), "import sys, json\nprint('peers', sys.argv)\n"
                + "json.dump({}, open(sys.argv[sys.argv.index('--json') + 1], 'w'))\n");
        return root;
    }

    @Test
    void aKilledRunWithAnIncompleteReportGoesOnWithResume(@TempDir Path tmp) throws Exception {
        Path root = rig(tmp, "echo '{\"complete\": false}' > \"$json\"; kill -9 $$");
        Path out = tmp.resolve("e2e");
        Run r = run(root, "--out", out.toString(), "--budget", "40", "--peers-budget", "20", "--box", "100");
        List<String> calls = Files.readAllLines(root.resolve("calls.txt"));
        assertEquals(3, calls.size(), r.out() + "\n" + calls);
        assertTrue(r.out().contains("ours exit 137 (killed before its last row"), r.out());
        assertTrue(calls.get(1).contains("--resume " + out.resolve("ours.json")), calls.get(1));
        // ours' deadline: 40 x 1.25 + 10 = 60, capped by the box less the peers' 20 + 35 = 45, and its budget to match
        assertTrue((" " + calls.get(0) + " ").contains(" --deadline 45 ") && (" " + calls.get(0) + " ").contains(" --budget 28 "), calls.get(0));
        assertTrue(calls.get(2).startsWith("E2eBench --compare"), calls.get(2));
        assertEquals(0, r.code(), r.out());
        java.util.regex.Matcher m = java.util.regex.Pattern.compile("stopped at (\\d+) s").matcher(r.out());
        assertTrue(m.find(), r.out());
        assertTrue(Integer.parseInt(m.group(1)) <= 100 - 20, "the peers end 20 s before the box: " + m.group());
        assertTrue(Files.isRegularFile(out.resolve("e2e-compare.md")));

        // a killed run whose report is complete is not run again; no box: ours' deadline is its own
        Files.delete(root.resolve("calls.txt"));
        Path whole = rig(tmp.resolve("b"), "echo '{\"complete\": true}' > \"$json\"; kill -9 $$");
        r = run(whole, "--out", tmp.resolve("e2e-b").toString(), "--budget", "40", "--peers-budget", "20");
        calls = Files.readAllLines(whole.resolve("calls.txt"));
        assertEquals(2, calls.size(), r.out() + "\n" + calls);
        assertTrue((" " + calls.get(0) + " ").contains(" --deadline 60 "), calls.get(0));
        assertFalse(r.out().contains("new process"), r.out());
        assertTrue(r.out().contains("stopped at 65 s"), r.out());

        r = run(whole, "--out", tmp.resolve("e2e-c").toString(), "--box", "1m");
        assertEquals(2, r.code(), r.out());
        assertTrue(r.out().contains("--box needs whole seconds, got 1m"), r.out());
    }
}
