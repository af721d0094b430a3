package org.grpo4j.internal.backend;

import static org.junit.jupiter.api.Assertions.*;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * The mixed-precision dtype contract (docs/ops.md, Backend's javadoc), transcribed here as rules independently of
 * AbstractBackend: for every op, every assignment of fp32 / bf16 to its float tensors (for grpoLoss's 13, every one
 * within 3 flips of all-fp32 or all-bf16) is either accepted and run (on
 * tiny shapes) or rejected with an IllegalArgumentException that names the op, the tensors of a broken rule and their
 * dtypes. An int32 tensor in any float slot is rejected naming that slot. A bf16 call that fails the CPU's index checks
 * leaves every bf16 output untouched. Validation is shared code, so this runs on the CPU only.
 */
class DtypeContractConformanceTest {
    enum Kind { SAME, FP32, BF16, FLOAT, MATMUL_C }

    /** SAME: all fp32 or all bf16; FP32 / BF16 / FLOAT: each named tensor; MATMUL_C (c, a, b): fp32 a and b need an fp32 c. */
    record Rule(Kind kind, String... names) {
        boolean holds(Map<String, DType> d) {
            return switch (kind) {
                case SAME -> {
                    DType first = d.get(names[0]);
                    boolean ok = first == DType.FP32 || first == DType.BF16;
                    for (String n : names) ok &= d.get(n) == first;
                    yield ok;
                }
                case FP32 -> d.get(names[0]) == DType.FP32;
                case BF16 -> d.get(names[0]) == DType.BF16;
                case FLOAT -> d.get(names[0]) == DType.FP32 || d.get(names[0]) == DType.BF16;
                case MATMUL_C -> d.get(names[1]) != DType.FP32 || d.get(names[2]) != DType.FP32 || d.get(names[0]) == DType.FP32;
            };
        }
    }

    interface Invoke {
        void call(Backend be, Map<String, Tensor> t);
    }

    private final CpuBackend be = TestBackends.cpu();
    private final List<Tensor> made = new ArrayList<>();

    @AfterEach
    void free() {
        for (Tensor t : made) t.close();
        made.clear();
    }

    private Tensor make(Tensor t) {
        made.add(t);
        return t;
    }

    private final class OpCase {
        final String op;
        final Map<String, int[]> floats = new LinkedHashMap<>();
        final Map<String, Tensor> fixed = new LinkedHashMap<>();
        final List<Rule> rules = new ArrayList<>();
        Invoke call;

        OpCase(String op) { this.op = op; }

        OpCase f(String name, int... shape) {
            floats.put(name, shape);
            return this;
        }

        OpCase ints(String name, int[] values, int... shape) {
            fixed.put(name, make(be.upload(values, shape)));
            return this;
        }

        OpCase rule(Kind k, String... names) {
            rules.add(new Rule(k, names));
            return this;
        }

        OpCase call(Invoke c) {
            call = c;
            return this;
        }
    }

    private List<OpCase> cases() {
        List<OpCase> c = new ArrayList<>();
        Rope rope = new Rope(4, 10000, null);
        c.add(new OpCase(Ops.SCALE).f("x", 3).rule(Kind.FLOAT, "x").call((b, t) -> b.scale(t.get("x"), 2f)));
        c.add(new OpCase(Ops.COPY).f("dst", 3).f("src", 3).rule(Kind.SAME, "dst", "src").call((b, t) -> b.copy(t.get("dst"), t.get("src"))));
        c.add(new OpCase(Ops.CAST).f("dst", 3).f("src", 3).rule(Kind.FLOAT, "dst").rule(Kind.FLOAT, "src")
                .call((b, t) -> b.cast(t.get("dst"), t.get("src"))));
        c.add(new OpCase(Ops.ADD).f("out", 3).f("a", 3).f("b", 3).rule(Kind.SAME, "out", "a", "b")
                .call((b, t) -> b.add(t.get("out"), t.get("a"), t.get("b"))));
        c.add(new OpCase(Ops.AXPY).f("y", 3).f("x", 3).rule(Kind.FP32, "y").rule(Kind.FLOAT, "x")
                .call((b, t) -> b.axpy(t.get("y"), 0.5f, t.get("x"))));
        c.add(new OpCase(Ops.EMBEDDING).f("out", 2, 4).f("table", 5, 4).ints("ids", new int[] {0, 3}, 2).rule(Kind.SAME, "table", "out")
                .call((b, t) -> b.embedding(t.get("out"), t.get("table"), t.get("ids"))));
        c.add(new OpCase(Ops.EMBEDDING_BACKWARD).f("dTable", 5, 4).f("dOut", 2, 4).ints("ids", new int[] {0, 3}, 2)
                .rule(Kind.FP32, "dTable").rule(Kind.FLOAT, "dOut")
                .call((b, t) -> b.embeddingBackward(t.get("dTable"), t.get("dOut"), t.get("ids"))));
        c.add(new OpCase(Ops.RMS_NORM).f("out", 2, 4).f("rstd", 2).f("x", 2, 4).f("weight", 4)
                .rule(Kind.SAME, "x", "out").rule(Kind.FLOAT, "weight").rule(Kind.FP32, "rstd")
                .call((b, t) -> b.rmsNorm(t.get("out"), t.get("rstd"), t.get("x"), t.get("weight"), 1e-5f)));
        c.add(new OpCase(Ops.RMS_NORM_BACKWARD).f("dx", 2, 4).f("dWeight", 4).f("dOut", 2, 4).f("x", 2, 4).f("weight", 4).f("rstd", 2)
                .rule(Kind.SAME, "dx", "dOut", "x").rule(Kind.FLOAT, "weight").rule(Kind.FP32, "dWeight").rule(Kind.FP32, "rstd")
                .call((b, t) -> b.rmsNormBackward(t.get("dx"), t.get("dWeight"), t.get("dOut"), t.get("x"), t.get("weight"), t.get("rstd"))));
        c.add(new OpCase(Ops.MATMUL).f("c", 2, 3).f("a", 2, 4).f("b", 4, 3).rule(Kind.SAME, "a", "b").rule(Kind.MATMUL_C, "c", "a", "b")
                .call((b, t) -> b.matmul(t.get("c"), t.get("a"), false, t.get("b"), false, 1f, 0.5f)));
        c.add(new OpCase(Ops.ROPE).f("out", 2, 1, 4).f("x", 2, 1, 4).ints("pos", new int[] {0, 1}, 2).rule(Kind.SAME, "out", "x")
                .call((b, t) -> b.rope(t.get("out"), t.get("x"), t.get("pos"), rope)));
        c.add(new OpCase(Ops.ROPE_BACKWARD).f("dx", 2, 1, 4).f("dOut", 2, 1, 4).ints("pos", new int[] {0, 1}, 2).rule(Kind.SAME, "dx", "dOut")
                .call((b, t) -> b.ropeBackward(t.get("dx"), t.get("dOut"), t.get("pos"), rope)));
        c.add(new OpCase(Ops.ATTENTION).f("out", 3, 2, 4).f("lse", 3, 2).f("q", 3, 2, 4).f("k", 3, 1, 4).f("v", 3, 1, 4)
                .ints("cu", new int[] {0, 3}, 2).rule(Kind.SAME, "q", "k", "v", "out").rule(Kind.FP32, "lse")
                .call((b, t) -> b.attention(t.get("out"), t.get("lse"), t.get("q"), t.get("k"), t.get("v"), t.get("cu"), 0.5f)));
        c.add(new OpCase(Ops.ATTENTION_BACKWARD).f("dq", 3, 2, 4).f("dk", 3, 1, 4).f("dv", 3, 1, 4).f("dOut", 3, 2, 4).f("q", 3, 2, 4)
                .f("k", 3, 1, 4).f("v", 3, 1, 4).f("out", 3, 2, 4).f("lse", 3, 2).ints("cu", new int[] {0, 3}, 2)
                .rule(Kind.SAME, "dq", "dk", "dv", "dOut", "q", "k", "v", "out").rule(Kind.FP32, "lse")
                .call((b, t) -> b.attentionBackward(t.get("dq"), t.get("dk"), t.get("dv"), t.get("dOut"), t.get("q"), t.get("k"), t.get("v"),
                        t.get("out"), t.get("lse"), t.get("cu"), 0.5f)));
        c.add(new OpCase(Ops.KV_APPEND).f("kCache", 2, 2, 1, 4).f("vCache", 2, 2, 1, 4).f("k", 3, 1, 4).f("v", 3, 1, 4)
                .ints("slots", new int[] {0, 1, 3}, 3).rule(Kind.SAME, "kCache", "vCache", "k", "v")
                .call((b, t) -> b.kvAppend(t.get("kCache"), t.get("vCache"), t.get("k"), t.get("v"), t.get("slots"))));
        c.add(new OpCase(Ops.DECODE_ATTENTION).f("out", 1, 2, 4).f("q", 1, 2, 4).f("kCache", 2, 2, 1, 4).f("vCache", 2, 2, 1, 4)
                .ints("tables", new int[] {1, 0}, 1, 2).ints("lens", new int[] {3}, 1).rule(Kind.SAME, "out", "q", "kCache", "vCache")
                .call((b, t) -> b.decodeAttention(t.get("out"), t.get("q"), t.get("kCache"), t.get("vCache"), t.get("tables"), t.get("lens"), 0.5f)));
        c.add(new OpCase(Ops.SWIGLU).f("out", 3).f("gate", 3).f("up", 3).rule(Kind.SAME, "out", "gate", "up")
                .call((b, t) -> b.swiglu(t.get("out"), t.get("gate"), t.get("up"))));
        c.add(new OpCase(Ops.SWIGLU_BACKWARD).f("dGate", 3).f("dUp", 3).f("dOut", 3).f("gate", 3).f("up", 3)
                .rule(Kind.SAME, "dGate", "dUp", "dOut", "gate", "up")
                .call((b, t) -> b.swigluBackward(t.get("dGate"), t.get("dUp"), t.get("dOut"), t.get("gate"), t.get("up"))));
        c.add(new OpCase(Ops.TOKEN_LOGPROBS).f("out", 2).f("hidden", 2, 4).f("lmHead", 5, 4).ints("targets", new int[] {1, 4}, 2)
                .rule(Kind.SAME, "hidden", "lmHead").rule(Kind.FP32, "out")
                .call((b, t) -> b.tokenLogprobs(t.get("out"), t.get("hidden"), t.get("lmHead"), t.get("targets"), 1f)));
        c.add(new OpCase(Ops.TOKEN_LOGPROBS_BACKWARD).f("dHidden", 2, 4).f("dLmHead", 5, 4).f("dLogprobs", 2).f("hidden", 2, 4)
                .f("lmHead", 5, 4).ints("targets", new int[] {1, 4}, 2)
                .rule(Kind.SAME, "hidden", "lmHead", "dHidden").rule(Kind.FP32, "dLmHead").rule(Kind.FP32, "dLogprobs")
                .call((b, t) -> b.tokenLogprobsBackward(t.get("dHidden"), t.get("dLmHead"), t.get("dLogprobs"), t.get("hidden"),
                        t.get("lmHead"), t.get("targets"), 1f)));
        OpCase g = new OpCase(Ops.GRPO_LOSS).f("hidden", 2, 4).f("lmHead", 5, 4).f("out.dHidden", 2, 4).f("out.dLmHead", 5, 4)
                .ints("targets", new int[] {1, 4}, 2).rule(Kind.SAME, "hidden", "lmHead", "out.dHidden").rule(Kind.FP32, "out.dLmHead");
        for (String n : new String[] {"weights", "advantages", "oldLogprobs", "refLogprobs", "out.logprobs", "out.ratio", "out.clipped", "out.kl"})
            g.f(n, 2).rule(Kind.FP32, n);
        g.f("out.loss", 1).rule(Kind.FP32, "out.loss");
        GrpoLossParams p = new GrpoLossParams(1f, 0.2f, 0.2f, 0.01f, KlEstimator.KL3);
        c.add(g.call((b, t) -> b.grpoLoss(new GrpoLossOutputs(t.get("out.loss"), t.get("out.logprobs"), t.get("out.ratio"),
                t.get("out.clipped"), t.get("out.kl"), t.get("out.dHidden"), t.get("out.dLmHead")), t.get("hidden"), t.get("lmHead"),
                t.get("targets"), t.get("weights"), t.get("advantages"), t.get("oldLogprobs"), t.get("refLogprobs"), p)));
        c.add(new OpCase(Ops.SAMPLE).f("logprobs", 2).f("logits", 2, 5).ints("tokens", new int[2], 2).ints("ctr", new int[4], 2, 2)
                .rule(Kind.FP32, "logprobs").rule(Kind.FLOAT, "logits")
                .call((b, t) -> b.sample(t.get("tokens"), t.get("logprobs"), t.get("logits"), t.get("ctr"), new SamplingSpec(1f, 0, 1f, 1))));
        c.add(new OpCase(Ops.ADAMW).f("param", 3).f("grad", 3).f("m", 3).f("v", 3).f("bf16Out", 3)
                .rule(Kind.FP32, "param").rule(Kind.FP32, "grad").rule(Kind.FP32, "m").rule(Kind.FP32, "v").rule(Kind.BF16, "bf16Out")
                .call((b, t) -> b.adamW(t.get("param"), t.get("grad"), t.get("m"), t.get("v"), new AdamWStep(1e-3f, 0.9f, 0.999f, 1e-8f, 0f, 1),
                        t.get("bf16Out"))));
        c.add(new OpCase(Ops.SUM_SQUARES).f("out", 1).f("x", 3).rule(Kind.FP32, "out").rule(Kind.FLOAT, "x")
                .call((b, t) -> b.sumSquares(t.get("out"), t.get("x"))));
        return c;
    }

    @Test
    void everyOpOfTheContractIsCovered() {
        List<String> covered = cases().stream().map(o -> o.op).toList();
        for (String op : Ops.ALL) // fill and gatherTokens take no float tensor (EmbeddingConformanceTest checks gatherTokens' int32 rule)
            if (!op.equals(Ops.FILL) && !op.equals(Ops.GATHER_TOKENS)) assertTrue(covered.contains(op), op + " has no dtype case");
    }

    @Test
    void everyAssignmentIsAcceptedOrRejectedAsTheTableSays() {
        for (OpCase oc : cases()) {
            List<String> names = new ArrayList<>(oc.floats.keySet());
            Map<String, Tensor> fp32 = new LinkedHashMap<>(), bf16 = new LinkedHashMap<>();
            for (String n : names) {
                fp32.put(n, make(be.zeros(DType.FP32, oc.floats.get(n))));
                bf16.put(n, make(be.zeros(DType.BF16, oc.floats.get(n))));
            }
            int accepted = 0, rejected = 0;
            int k = names.size();
            for (int mask = 0; mask < 1 << k; mask++) {
                // all 2^k assignments up to 10 float tensors; for grpoLoss (13), those within 3 flips of all-fp32 or all-bf16
                if (k > 10 && Integer.bitCount(mask) > 3 && Integer.bitCount(mask) < k - 3) continue;
                Map<String, DType> d = new LinkedHashMap<>();
                Map<String, Tensor> t = new LinkedHashMap<>(oc.fixed);
                for (int i = 0; i < names.size(); i++) {
                    boolean isBf16 = (mask >> i & 1) != 0;
                    d.put(names.get(i), isBf16 ? DType.BF16 : DType.FP32);
                    t.put(names.get(i), (isBf16 ? bf16 : fp32).get(names.get(i)));
                }
                List<Rule> broken = oc.rules.stream().filter(r -> !r.holds(d)).toList();
                String combo = oc.op + " " + d;
                if (broken.isEmpty()) {
                    assertDoesNotThrow(() -> oc.call.call(be, t), combo + " is allowed by the contract");
                    accepted++;
                    continue;
                }
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> oc.call.call(be, t), combo + " breaks " + broken);
                String msg = e.getMessage();
                assertTrue(msg.startsWith(oc.op + ": "), combo + ": message should name the op: " + msg);
                boolean explained = broken.stream().anyMatch(r -> {
                    for (String n : r.names) if (!mentions(msg, n) || !mentions(msg, d.get(n).label())) return false;
                    return msg.contains("expected");
                });
                assertTrue(explained, combo + ": message should name the tensors of a broken rule " + broken + ", their dtypes and what is expected: " + msg);
                rejected++;
            }
            assertTrue(accepted >= 1, oc.op + ": no assignment accepted");
            if (oc.rules.stream().anyMatch(r -> r.kind != Kind.FLOAT)) assertTrue(rejected >= 1, oc.op + ": no assignment rejected");
        }
    }

    @Test
    void int32InAFloatSlotIsRejectedNamingIt() {
        for (OpCase oc : cases()) {
            for (String slot : oc.floats.keySet()) {
                Map<String, Tensor> t = new LinkedHashMap<>(oc.fixed);
                for (Map.Entry<String, int[]> e : oc.floats.entrySet()) {
                    boolean bf = oc.rules.stream().anyMatch(r -> r.kind == Kind.BF16 && r.names[0].equals(e.getKey()));
                    DType dt = e.getKey().equals(slot) ? DType.INT32 : bf ? DType.BF16 : DType.FP32;
                    t.put(e.getKey(), make(be.zeros(dt, e.getValue())));
                }
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> oc.call.call(be, t), oc.op + " with int32 " + slot);
                assertTrue(e.getMessage().startsWith(oc.op + ": ") && mentions(e.getMessage(), slot) && e.getMessage().contains("int32"),
                        oc.op + " with int32 " + slot + ": " + e.getMessage());
            }
        }
    }

    /** Index errors the CPU finds while computing a bf16 variant leave the caller's bf16 tensors as they were. */
    @Test
    void failedBf16CallsWriteNothing() {
        short[] bits = new short[16];
        for (int i = 0; i < bits.length; i++) bits[i] = Bf16.fromFloat(i + 0.5f);
        Tensor x = make(be.uploadBf16(bits, 2, 2, 4));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> be.rope(x, x, make(be.upload(new int[] {0, -1}, 2)), new Rope(4, 10000, null)));
        assertTrue(e.getMessage().contains("positions[1] = -1"), e.getMessage());
        assertArrayEquals(bits, x.toBf16Bits(), "rope in place");

        Tensor out = make(be.empty(DType.BF16, 2, 2, 4));
        be.fill(out, Double.NaN);
        short[] before = out.toBf16Bits();
        assertThrows(IllegalArgumentException.class, () -> be.attention(out, make(be.zeros(DType.FP32, 2, 2)), x, x, x,
                make(be.upload(new int[] {0, 1}, 2)), 0.5f));
        assertArrayEquals(before, out.toBf16Bits(), "attention with bad cuSeqlens");
        Tensor dec = make(be.empty(DType.BF16, 1, 2, 4));
        be.fill(dec, 3);
        Tensor cache = make(be.uploadBf16(bits, 2, 2, 1, 4));
        assertThrows(IllegalArgumentException.class, () -> be.decodeAttention(dec, make(be.uploadBf16(new short[8], 1, 2, 4)), cache, cache,
                make(be.upload(new int[] {0, 1}, 1, 2)), make(be.upload(new int[] {5}, 1)), 0.5f));
        for (short h : dec.toBf16Bits()) assertEquals(3f, Bf16.toFloat(h), "decodeAttention with bad contextLens");
        Tensor emb = make(be.empty(DType.BF16, 2, 4));
        be.fill(emb, 3);
        assertThrows(IllegalArgumentException.class, () -> be.embedding(emb, make(be.uploadBf16(bits, 4, 4)), make(be.upload(new int[] {1, 4}, 2))));
        for (short h : emb.toBf16Bits()) assertEquals(3f, Bf16.toFloat(h), "embedding with an id out of range");
    }

    /** Partly overlapping bf16 arguments would make the CPU's widened copies disagree with the caller's memory. */
    @Test
    void partlyOverlappingBf16ArgumentsAreRefused() {
        Tensor buf = make(be.zeros(DType.BF16, 8));
        Tensor b = make(be.zeros(DType.BF16, 4));
        Conformance.assertBadCall(Ops.ADD, () -> be.add(buf.view(0, 4), buf.view(2, 4), b), "overlap partly");
        be.add(buf.view(0, 4), buf.view(0, 4), b); // the same elements: fine (in place)
        be.add(buf.view(0, 4), buf.view(4, 4), b); // disjoint: fine
        // a same-dtype cast is a copy: partly overlapping ranges are undefined for a device copy, refused as copy refuses them
        Conformance.assertBadCall(Ops.CAST, () -> be.cast(buf.view(0, 4), buf.view(2, 4)), "overlap partly");
        Conformance.assertBadCall(Ops.COPY, () -> be.copy(buf.view(0, 4), buf.view(2, 4)), "overlap partly");
        be.cast(buf.view(0, 4), buf.view(4, 4));
    }

    /** Each op's outputs (the tensors it writes), as the cases name them. */
    private static final Map<String, List<String>> OUTPUTS = Map.ofEntries(Map.entry(Ops.SCALE, List.of()),
            Map.entry(Ops.COPY, List.of("dst")), Map.entry(Ops.CAST, List.of("dst")), Map.entry(Ops.ADD, List.of("out")),
            Map.entry(Ops.AXPY, List.of("y")), Map.entry(Ops.EMBEDDING, List.of("out")), Map.entry(Ops.EMBEDDING_BACKWARD, List.of("dTable")),
            Map.entry(Ops.RMS_NORM, List.of("out", "rstd")), Map.entry(Ops.RMS_NORM_BACKWARD, List.of("dx", "dWeight")),
            Map.entry(Ops.MATMUL, List.of("c")), Map.entry(Ops.ROPE, List.of("out")), Map.entry(Ops.ROPE_BACKWARD, List.of("dx")),
            Map.entry(Ops.ATTENTION, List.of("out", "lse")), Map.entry(Ops.ATTENTION_BACKWARD, List.of("dq", "dk", "dv")),
            Map.entry(Ops.KV_APPEND, List.of("kCache", "vCache")), Map.entry(Ops.DECODE_ATTENTION, List.of("out")),
            Map.entry(Ops.SWIGLU, List.of("out")), Map.entry(Ops.SWIGLU_BACKWARD, List.of("dGate", "dUp")),
            Map.entry(Ops.TOKEN_LOGPROBS, List.of("out")), Map.entry(Ops.TOKEN_LOGPROBS_BACKWARD, List.of("dHidden", "dLmHead")),
            Map.entry(Ops.GRPO_LOSS, List.of("out.logprobs", "out.ratio", "out.clipped", "out.kl", "out.loss", "out.dHidden", "out.dLmHead")),
            Map.entry(Ops.SAMPLE, List.of("tokens", "logprobs")), Map.entry(Ops.ADAMW, List.of("param", "m", "v", "bf16Out")),
            Map.entry(Ops.SUM_SQUARES, List.of("out")));

    /** The outputs that may be an input element for element (the op runs in place), as "op out=input" (docs/ops.md). */
    private static final java.util.Set<String> IN_PLACE = java.util.Set.of(Ops.COPY + " dst=src", Ops.CAST + " dst=src",
            Ops.ADD + " out=a", Ops.ADD + " out=b", Ops.ROPE + " out=x", Ops.ROPE_BACKWARD + " dx=dOut", Ops.RMS_NORM_BACKWARD + " dx=dOut");

    /** The API's names of the index tensors the cases name for short. */
    private static final Map<String, String> API_NAMES = Map.of("ctr", "rngCounters", "cu", "cuSeqlens", "pos", "positions",
            "tables", "blockTables", "lens", "contextLens");

    /**
     * An output that shares memory with another argument is refused before anything runs, naming the op and both
     * tensors, on every backend (the check is AbstractBackend's): a kernel's threads would read elements that others
     * have already overwritten. The in-place pairs accept the same elements and refuse a partial overlap.
     */
    @Test
    void anOutputSharingMemoryWithAnotherArgumentIsRefused() {
        int pairs = 0;
        for (OpCase oc : cases()) {
            List<String> outs = OUTPUTS.get(oc.op);
            assertNotNull(outs, oc.op + " has no outputs listed");
            Map<String, DType> dt = new LinkedHashMap<>();
            Map<String, int[]> shapes = new LinkedHashMap<>(oc.floats);
            for (String n : oc.floats.keySet())
                dt.put(n, oc.rules.stream().anyMatch(r -> r.kind == Kind.BF16 && r.names[0].equals(n)) ? DType.BF16 : DType.FP32);
            for (Map.Entry<String, Tensor> e : oc.fixed.entrySet()) {
                dt.put(e.getKey(), DType.INT32);
                shapes.put(e.getKey(), e.getValue().shape());
            }
            for (String o : outs) {
                for (String x : shapes.keySet()) {
                    if (x.equals(o) || dt.get(x) != dt.get(o)) continue; // (tensors of two dtypes never share a storage)
                    long nx = Tensor.numel(shapes.get(x)), no = Tensor.numel(shapes.get(o));
                    boolean inPlace = IN_PLACE.contains(oc.op + " " + o + "=" + x);
                    for (boolean same : inPlace ? new boolean[] {true, false} : new boolean[] {false}) {
                        Tensor buf = make(be.zeros(dt.get(o), (int) (nx + no)));
                        Map<String, Tensor> t = new LinkedHashMap<>(oc.fixed);
                        for (String n : oc.floats.keySet()) t.put(n, make(be.zeros(dt.get(n), oc.floats.get(n))));
                        if (dt.get(x) == DType.INT32) t.put(x, make(be.zeros(DType.INT32, shapes.get(x)))); // zeros: a valid index everywhere here
                        Tensor xs = buf.view(0, shapes.get(x));
                        be.copy(xs, t.get(x));
                        t.put(x, xs);
                        t.put(o, buf.view(same ? 0 : nx > 1 ? 1 : 0, shapes.get(o)));
                        String what = oc.op + " with " + o + (same ? " the same elements as " : " overlapping ") + x;
                        if (same) {
                            assertDoesNotThrow(() -> oc.call.call(be, t), what + " runs in place");
                            continue;
                        }
                        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> oc.call.call(be, t), what);
                        String msg = e.getMessage();
                        String xApi = API_NAMES.getOrDefault(x, x);
                        assertTrue(msg.startsWith(oc.op + ": ") && mentions(msg, o) && mentions(msg, xApi)
                                && msg.contains(inPlace ? "overlap partly" : "share memory"), what + ": " + msg);
                        pairs++;
                    }
                }
            }
        }
        assertTrue(pairs >= 150, pairs + " overlapping pairs refused"); // (184 when written)
    }

    private static boolean mentions(String msg, String word) {
        return Pattern.compile("(?<![\\w.])" + Pattern.quote(word) + "(?![\\w])").matcher(msg).find();
    }
}
