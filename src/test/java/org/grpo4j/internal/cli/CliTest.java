package org.grpo4j.internal.cli;

import static org.junit.jupiter.api.Assertions.*;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.grpo4j.internal.backend.CudaRuntime;
import org.grpo4j.internal.backend.TestBackends;
import org.grpo4j.internal.model.LlamaWeights;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The CLI in-process: exit codes, output, and one-line errors for bad input. */
class CliTest {
    record Run(int code, String out, String err) {}

    static Run run(String... args) {
        PrintStream oldOut = System.out, oldErr = System.err;
        ByteArrayOutputStream out = new ByteArrayOutputStream(), err = new ByteArrayOutputStream();
        try {
            System.setOut(new PrintStream(out, true));
            System.setErr(new PrintStream(err, true));
            var cl = Main.newCommandLine();
            cl.setOut(new java.io.PrintWriter(out, true));
            cl.setErr(new java.io.PrintWriter(err, true));
            int code = cl.execute(args);
            return new Run(code, out.toString(), err.toString());
        } finally {
            System.setOut(oldOut);
            System.setErr(oldErr);
        }
    }

    @Test
    void infoPrintsTheBackendLine() {
        Run r = run("info", "--ops");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("backend   "), r.out());
        assertTrue(r.out().contains("grpoLoss"), r.out());
        // the CUDA column (no device on the build machines): matmul is cuBLASLt's, in every build that has kernels
        String matmul = r.out().lines().filter(l -> l.strip().startsWith("matmul ")).findFirst().orElseThrow();
        if (CudaRuntime.probe().available()) return;
        if (CudaRuntime.libraryBuilt()) {
            assertTrue(r.out().contains("(x) = in this build"), r.out());
            assertTrue(matmul.contains("(x) cuBLASLt"), matmul);
        } else {
            assertTrue(r.out().contains("cuda (not built"), r.out());
            assertFalse(r.out().contains("(x)"), r.out());
        }
    }

    @Test
    void initModelInfoAndLoadRoundTrip(@TempDir Path tmp) throws Exception {
        Path m = tmp.resolve("tiny");
        Run r = run("init-model", "--preset", "tiny", "--out", m.toString(), "--seed", "5");
        assertEquals(0, r.code(), r.err());
        r = run("info", "--backend", "cpu", "--model", m.toString(), "--world", "8");
        assertEquals(0, r.code(), r.err());
        try (LlamaWeights w = LlamaWeights.load(TestBackends.cpu(), m)) {
            // the count the command prints is the model's: the elements of its loaded weights
            assertTrue(r.out().contains(String.format("params    %,d (", w.flat().numel())), w.flat().numel() + " parameters:\n" + r.out());
            Path again = tmp.resolve("again");
            w.save(again, "F32", 1L << 40, m);
            try (LlamaWeights w2 = LlamaWeights.load(TestBackends.cpu(), again)) {
                assertArrayEquals(w.flat().toFloats(), w2.flat().toFloats());
            }
        }
        r = run("init-model", "--preset", "tiny", "--out", m.toString());
        assertEquals(2, r.code());
        assertTrue(r.err().contains("not empty"), r.err());
    }

    @Test
    void generateRepeatsExactlyWithTheSameSeed(@TempDir Path tmp) {
        Path m = tmp.resolve("tiny");
        assertEquals(0, run("init-model", "--preset", "tiny", "--out", m.toString()).code());
        String[] args = {"generate", "--model", m.toString(), "--backend", "cpu", "--prompt", "Tom has 2 pens.", "-n", "4",
                "--max-tokens", "6", "--seed", "9", "--json"};
        Run a = run(args), b = run(args);
        assertEquals(0, a.code(), a.err());
        assertEquals(a.out(), b.out());
        assertTrue(a.out().contains("\"finish_reason\""), a.out());
        args[args.length - 2] = "10";
        assertNotEquals(a.out(), run(args).out());
    }

    /**
     * --kv-admission: in a pool too small for every completion's worst case, on_demand and worst_case print the same
     * completions (bit for bit on the CPU); on_demand decodes them in fewer steps (it preempts and recomputes where the
     * pool runs out, and says so), worst_case never preempts.
     */
    @Test
    void generateKvAdmissionChangesOnlyTheSchedule(@TempDir Path tmp) {
        Path m = tmp.resolve("tiny");
        assertEquals(0, run("init-model", "--preset", "tiny", "--out", m.toString()).code());
        Map<String, Run> runs = new java.util.LinkedHashMap<>();
        for (String a : List.of("on_demand", "worst_case")) {
            Run r = run("generate", "--model", m.toString(), "--backend", "cpu", "--prompt", "Tom has 2 pens.", "-n", "8", "--max-tokens", "60",
                    "--seed", "3", "--json", "--kv-blocks", "12", "--kv-admission", a);
            assertEquals(0, r.code(), r.err());
            runs.put(a, r);
        }
        assertEquals(runs.get("worst_case").out(), runs.get("on_demand").out());
        java.util.regex.Pattern steps = java.util.regex.Pattern.compile("(\\d+) decode steps");
        long[] n = new long[2];
        int i = 0;
        for (Run r : runs.values()) {
            var mt = steps.matcher(r.err());
            assertTrue(mt.find(), r.err());
            n[i++] = Long.parseLong(mt.group(1));
        }
        System.out.println("generate -n 8 --max-tokens 60 --kv-blocks 12: " + n[0] + " decode steps on_demand (" + runs.get("on_demand").err().trim()
                + "), " + n[1] + " worst_case");
        assertTrue(n[0] < n[1], "on_demand " + n[0] + " decode steps, worst_case " + n[1]);
        assertFalse(runs.get("worst_case").err().contains("preemptions"), runs.get("worst_case").err());
    }

    @Test
    void tokenizeShowsTheTuluPrompt() {
        Run r = run("tokenize", "--model", "examples/tiny-tokenizer", "--chat-json", "[{\"role\":\"user\",\"content\":\"Hi\"}]", "--template", "tulu");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("\"prompt\" : \"<|user|>\\nHi\\n<|assistant|>\\n\""), r.out());
        r = run("tokenize", "--model", "examples/tiny-tokenizer", "--text", "x", "--chat-json", "[]");
        assertNotEquals(0, r.code());
        r = run("tokenize", "--model", "examples/tiny-tokenizer", "--chat-json", "[{\"role\":\"user\",\"content\":\"Hi\"}]", "--template", "nope");
        assertEquals(2, r.code());
        assertTrue(r.err().contains("unknown chat template \"nope\""), r.err());
    }
}
