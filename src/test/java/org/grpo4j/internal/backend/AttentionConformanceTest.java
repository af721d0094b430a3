package org.grpo4j.internal.backend;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.SplittableRandom;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * Causal GQA attention over packed sequences (head dims 64, 128, 96 and odd), its backward (FD in float64 on sampled
 * coordinates), kvAppend and paged decode attention. Forward: atol 2e-6, rtol 1e-5 (out and lse); backward vs FD:
 * atol 2e-5, rtol 2e-4; decode vs full attention: atol 2e-6, rtol 1e-5. Lengths 0, 1, 3, 33, 65, 1001 and many short
 * sequences packed together (1001 in the forward and the bf16 backward at head dims 64 and 128); GQA 32/8, 8/2, 4/1
 * and MHA. bf16 outputs of a backend that rounds P and dS to bf16 inside the kernels (CUDA's tensor-core path) get the
 * per-element slack of {@link AttentionBounds} on top (docs/ops.md).
 */
class AttentionConformanceTest {

    /** The analytic backward used for the bf16 cases equals finite differences when given the exact output. */
    @Test
    void referenceBackwardMatchesFiniteDifferences() {
        SplittableRandom r = new SplittableRandom(9);
        int hq = 4, hkv = 2, d = 3;
        int[] cu = Suite.cu(3, 1, 4);
        int n = 8, nq = n * hq * d, nk = n * hkv * d;
        double scale = 0.6;
        double[] q = Conformance.randn(r, nq, 1), k = Conformance.randn(r, nk, 1), v = Conformance.randn(r, nk, 1);
        double[] dy = Conformance.randn(r, nq, 1);
        double[] out = java.util.Arrays.copyOf(Ref.attention(q, k, v, cu, n, hq, hkv, d, scale), nq);
        double[] g = Ref.attentionBackward(q, k, v, out, dy, cu, n, hq, hkv, d, scale);
        double[] fq = Conformance.fdGrad(x -> Conformance.dot(dy, java.util.Arrays.copyOf(Ref.attention(x, k, v, cu, n, hq, hkv, d, scale), nq)), q, null);
        double[] fk = Conformance.fdGrad(x -> Conformance.dot(dy, java.util.Arrays.copyOf(Ref.attention(q, x, v, cu, n, hq, hkv, d, scale), nq)), k, null);
        double[] fv = Conformance.fdGrad(x -> Conformance.dot(dy, java.util.Arrays.copyOf(Ref.attention(q, k, x, cu, n, hq, hkv, d, scale), nq)), v, null);
        for (int i = 0; i < nq; i++) assertEquals(fq[i], g[i], 1e-7, "dq " + i);
        for (int i = 0; i < nk; i++) assertEquals(fk[i], g[nq + i], 1e-7, "dk " + i);
        for (int i = 0; i < nk; i++) assertEquals(fv[i], g[nq + nk + i], 1e-7, "dv " + i);
    }

    abstract static class Suite extends Conformance {

        /**
         * 1 where the backend rounds P (and dS) to bf16 before the second products of its bf16 kernels (CUDA), so its
         * bf16 outputs get {@link AttentionBounds}' slack; 0 for the CPU, which computes the fp32 op exactly.
         */
        protected double bf16IntermediateSlack() { return 0; }

        /** atol + bf16IntermediateSlack() * slack, per element. */
        double[] atol(double atol, double[] slack) {
            double[] r = new double[slack.length];
            for (int i = 0; i < r.length; i++) r[i] = atol + bf16IntermediateSlack() * slack[i];
            return r;
        }

        /** {hq, hkv, d, lengths...} of 60 short sequences (0..9 tokens) packed together. */
        static int[] manyShort(int hq, int hkv, int d) {
            SplittableRandom r = new SplittableRandom(77);
            int[] c = new int[63];
            c[0] = hq;
            c[1] = hkv;
            c[2] = d;
            for (int i = 3; i < c.length; i++) c[i] = r.nextInt(10);
            return c;
        }

        /**
         * Long packed cases {hq, hkv, d, lengths...} at GQA 4 on both tensor-core head dims: a sequence of 1001 tokens
         * (16 key tiles of 64, 8 forward query tiles of 128) after short and empty ones, so that it starts at token 37,
         * off every tile boundary. Forward and bf16 backward both run them. Few heads keep the float64 references cheap.
         */
        static int[][] longCases() {
            return new int[][] {{4, 1, 128, 1, 3, 33, 0, 1001}, {4, 1, 64, 1, 3, 33, 0, 1001}};
        }

        /** Forward cases {hq, hkv, d, lengths...}: odd lengths, tile edges, empty sequences, GQA, hd 64, 128, 96, 5. */
        static int[][] forwardCases() {
            int[][] c = {{8, 2, 64, 37, 1, 20}, {4, 1, 128, 45}, {3, 3, 5, 1, 0, 9}, {32, 8, 128, 7}, {2, 1, 64, 1001},
                    {4, 1, 128, 1, 3, 33, 0, 65}, {32, 8, 64, 3, 33, 0, 1}, {8, 2, 96, 33, 1, 70}, manyShort(4, 2, 64)};
            return concat(c, longCases());
        }

        static int[][] concat(int[][] a, int[][] b) {
            int[][] r = java.util.Arrays.copyOf(a, a.length + b.length);
            System.arraycopy(b, 0, r, a.length, b.length);
            return r;
        }

        /** cu_seqlens for the given lengths (zero-length sequences allowed). */
        static int[] cu(int... lens) {
            int[] c = new int[lens.length + 1];
            for (int i = 0; i < lens.length; i++) c[i + 1] = c[i] + lens[i];
            return c;
        }

        @Test
        void forwardMatchesReference() {
            Backend be = be(Ops.ATTENTION);
            SplittableRandom r = new SplittableRandom(1);
            // {hq, hkv, d, lengths...}
            for (int[] c : forwardCases()) {
                int hq = c[0], hkv = c[1], d = c[2];
                int[] cu = cu(java.util.Arrays.copyOfRange(c, 3, c.length));
                int n = cu[cu.length - 1];
                double scale = 1 / Math.sqrt(d);
                double[] q = randn(r, n * hq * d, 1), k = randn(r, n * hkv * d, 1), v = randn(r, n * hkv * d, 1);
                double[] ref = Ref.attention(q, k, v, cu, n, hq, hkv, d, scale);
                Tensor out = poisoned(n, hq, d), lse = poisoned(n, hq);
                be.attention(out, lse, up(q, n, hq, d), up(k, n, hkv, d), up(v, n, hkv, d), up(cu, cu.length), (float) scale);
                String what = "attention hq=" + hq + " hkv=" + hkv + " d=" + d + " cu=" + java.util.Arrays.toString(cu);
                assertClose(what + " out", java.util.Arrays.copyOf(ref, n * hq * d), out.toFloats(), 2e-6, 1e-5);
                assertClose(what + " lse", java.util.Arrays.copyOfRange(ref, n * hq * d, ref.length), lse.toFloats(), 2e-6, 1e-5);
            }
        }

        @Test
        void backwardMatchesFiniteDifferences() {
            Backend be = be(Ops.ATTENTION_BACKWARD);
            SplittableRandom r = new SplittableRandom(2);
            for (int[] c : new int[][] {{4, 2, 8, 6, 1, 5}, {2, 1, 64, 9}, {3, 3, 3, 4, 2}, {4, 1, 128, 1, 33, 0}}) {
                int hq = c[0], hkv = c[1], d = c[2];
                int[] cu = cu(java.util.Arrays.copyOfRange(c, 3, c.length));
                int n = cu[cu.length - 1];
                double scale = 1 / Math.sqrt(d);
                double[] q = randn(r, n * hq * d, 1), k = randn(r, n * hkv * d, 1), v = randn(r, n * hkv * d, 1);
                double[] dy = randn(r, n * hq * d, 1);
                Tensor tq = up(q, n, hq, d), tk = up(k, n, hkv, d), tv = up(v, n, hkv, d), tcu = up(cu, cu.length);
                Tensor out = zeros(n, hq, d), lse = zeros(n, hq);
                be.attention(out, lse, tq, tk, tv, tcu, (float) scale);
                Tensor dq = poisoned(n, hq, d), dk = poisoned(n, hkv, d), dv = poisoned(n, hkv, d);
                be.attentionBackward(dq, dk, dv, up(dy, n, hq, d), tq, tk, tv, out, lse, tcu, (float) scale);
                int nOut = n * hq * d;
                int[] iq = someIndices(r, q.length, 150), ik = someIndices(r, k.length, 150), iv = someIndices(r, v.length, 150);
                double[] fq = fdGrad(x -> dot(dy, java.util.Arrays.copyOf(Ref.attention(x, k, v, cu, n, hq, hkv, d, scale), nOut)), q, iq);
                double[] fk = fdGrad(x -> dot(dy, java.util.Arrays.copyOf(Ref.attention(q, x, v, cu, n, hq, hkv, d, scale), nOut)), k, ik);
                double[] fv = fdGrad(x -> dot(dy, java.util.Arrays.copyOf(Ref.attention(q, k, x, cu, n, hq, hkv, d, scale), nOut)), v, iv);
                String what = "attention backward hq=" + hq + " hkv=" + hkv + " d=" + d;
                assertGradClose(what + " dq", fq, dq.toFloats(), iq, 2e-5, 2e-4);
                assertGradClose(what + " dk", fk, dk.toFloats(), ik, 2e-5, 2e-4);
                assertGradClose(what + " dv", fv, dv.toFloats(), iv, 2e-5, 2e-4);
                // every element written (poison gone) even where FD was not sampled
                for (float x : dq.toFloats()) org.junit.jupiter.api.Assertions.assertTrue(Float.isFinite(x));
                for (float x : dk.toFloats()) org.junit.jupiter.api.Assertions.assertTrue(Float.isFinite(x));
                for (float x : dv.toFloats()) org.junit.jupiter.api.Assertions.assertTrue(Float.isFinite(x));
            }
        }

        /** A batch of no sequences is a call that does nothing (CUDA's split plan divided by the batch: SIGFPE). */
        @Test
        void anEmptyDecodeBatchDoesNothing() {
            Backend be = be(Ops.DECODE_ATTENTION);
            Tensor kc = zeros(3, 4, 2, 8), vc = zeros(3, 4, 2, 8), out = zeros(0, 4, 8);
            be.decodeAttention(out, zeros(0, 4, 8), kc, vc, up(new int[0], 0, 2), up(new int[0], 0), 0.3f);
            be.synchronize();
            org.junit.jupiter.api.Assertions.assertEquals(0, out.toFloats().length);
        }

        /**
         * A NaN key, or one that gives an infinite score, makes every output of its sequence's heads NaN and leaves the
         * other sequences finite, in fp32 and bf16 (on CUDA: the tensor-core kernel with one split and with several, and
         * the generic path). The CUDA kernel's merges dropped a NaN partial state as empty, giving finite rows without
         * those keys: a diverged model's decode looked healthy to the sampler's non-finite rule.
         */
        @Test
        void aNonFiniteKeyGivesNanRowsOfItsSequenceOnly() {
            Backend be = be(Ops.DECODE_ATTENTION);
            SplittableRandom r = new SplittableRandom(17);
            int hq = 4, hkv = 1, bs = 16;
            for (int d : new int[] {64, 128})
                for (boolean bf16 : new boolean[] {false, true})
                    for (double bad : new double[] {Double.NaN, Double.POSITIVE_INFINITY}) {
                        int[] lens = {d == 64 ? 64 : 1000, 40};
                        int b = lens.length, maxBlocks = (lens[0] + bs - 1) / bs, numBlocks = b * maxBlocks;
                        int[] tables = new int[b * maxBlocks];
                        for (int i = 0; i < tables.length; i++) tables[i] = i;
                        double[] kc = randn(r, numBlocks * bs * hkv * d, 1), vc = randn(r, numBlocks * bs * hkv * d, 1), q = randn(r, b * hq * d, 1);
                        kc[5 * hkv * d] = bad; // sequence 0, key 5, element 0
                        if (Double.isInfinite(bad)) for (int h = 0; h < b * hq; h++) q[h * d] = 1; // an infinite score
                        Tensor out = bf16 ? track(be.zeros(DType.BF16, b, hq, d)) : zeros(b, hq, d);
                        if (bf16) be.decodeAttention(out, track(uploadBf16(be, q, b, hq, d)), track(uploadBf16(be, kc, numBlocks, bs, hkv, d)),
                                track(uploadBf16(be, vc, numBlocks, bs, hkv, d)), up(tables, b, maxBlocks), up(lens, b), 0.125f);
                        else be.decodeAttention(out, up(q, b, hq, d), up(kc, numBlocks, bs, hkv, d), up(vc, numBlocks, bs, hkv, d),
                                up(tables, b, maxBlocks), up(lens, b), 0.125f);
                        float[] got = out.toFloatsWidened();
                        String what = (bf16 ? "bf16" : "fp32") + " d " + d + " ctx " + lens[0] + " key " + bad;
                        for (int i = 0; i < hq * d; i++) org.junit.jupiter.api.Assertions.assertTrue(Float.isNaN(got[i]), what + ": sequence 0 element " + i + " = " + got[i]);
                        for (int i = hq * d; i < b * hq * d; i++)
                            org.junit.jupiter.api.Assertions.assertTrue(Float.isFinite(got[i]), what + ": sequence 1 element " + (i - hq * d) + " = " + got[i]);
                    }
        }

        @Test
        void pagedDecodeEqualsFullAttention() {
            Backend be = be(Ops.DECODE_ATTENTION);
            TestBackends.assumeOp(be, Ops.KV_APPEND);
            SplittableRandom r = new SplittableRandom(3);
            int hq = 8, hkv = 2, d = 64, bs = 5, numBlocks = 20, maxBlocks = 6;
            int[] lens = {1, 13, 27};
            int b = lens.length;
            Tensor kc = poisoned(numBlocks, bs, hkv, d), vc = poisoned(numBlocks, bs, hkv, d);
            // scattered, non-contiguous block tables
            int[] tables = new int[b * maxBlocks];
            int[] perm = {17, 3, 9, 0, 12, 5, 19, 7, 1, 14, 2, 8, 11, 6, 4, 10, 13, 15, 16, 18};
            int next = 0;
            for (int s = 0; s < b; s++) for (int j = 0; j < maxBlocks; j++) tables[s * maxBlocks + j] = j < (lens[s] + bs - 1) / bs ? perm[next++] : 0;
            double[][] ks = new double[b][], vs = new double[b][], qs = new double[b][];
            for (int s = 0; s < b; s++) {
                int len = lens[s];
                ks[s] = randn(r, len * hkv * d, 1);
                vs[s] = randn(r, len * hkv * d, 1);
                qs[s] = randn(r, hq * d, 1);
                int[] slots = new int[len];
                for (int t = 0; t < len; t++) slots[t] = tables[s * maxBlocks + t / bs] * bs + t % bs;
                be.kvAppend(kc, vc, up(ks[s], len, hkv, d), up(vs[s], len, hkv, d), up(slots, len));
            }
            double[] q = new double[b * hq * d];
            for (int s = 0; s < b; s++) System.arraycopy(qs[s], 0, q, s * hq * d, hq * d);
            Tensor out = poisoned(b, hq, d);
            double scale = 1 / Math.sqrt(d);
            be.decodeAttention(out, up(q, b, hq, d), kc, vc, up(tables, b, maxBlocks), up(lens, b), (float) scale);
            float[] got = out.toFloats();
            for (int s = 0; s < b; s++) {
                int len = lens[s];
                // the last query of a full causal pass over the sequence = decode of its last token
                double[] qFull = new double[len * hq * d];
                System.arraycopy(qs[s], 0, qFull, (len - 1) * hq * d, hq * d);
                double[] ref = Ref.attention(qFull, ks[s], vs[s], new int[] {0, len}, len, hq, hkv, d, scale);
                double[] want = java.util.Arrays.copyOfRange(ref, (len - 1) * hq * d, len * hq * d);
                float[] g = java.util.Arrays.copyOfRange(got, s * hq * d, (s + 1) * hq * d);
                assertClose("decode seq " + s + " len " + len, want, g, 2e-6, 1e-5);
            }
        }

        @Test
        void forwardBf16() {
            be(Ops.ATTENTION);
            SplittableRandom r = new SplittableRandom(4);
            for (int[] c : forwardCases()) {
                int hq = c[0], hkv = c[1], d = c[2];
                int[] cu = cu(java.util.Arrays.copyOfRange(c, 3, c.length));
                int n = cu[cu.length - 1];
                double scale = 1 / Math.sqrt(d);
                double[] q = randnBf16(r, n * hq * d, 1), k = randnBf16(r, n * hkv * d, 1), v = randnBf16(r, n * hkv * d, 1);
                double[] ref = Ref.attention(q, k, v, cu, n, hq, hkv, d, scale);
                Mixed m = mixed("attention hq=" + hq + " hkv=" + hkv + " d=" + d + " cu=" + java.util.Arrays.toString(cu))
                        .bf16("q", q, n, hq, d).bf16("k", k, n, hkv, d).bf16("v", v, n, hkv, d).ints("cu", cu, cu.length)
                        .out(DType.BF16, "out", n, hq, d).out(DType.FP32, "lse", n, hq)
                        .run((be, t) -> be.attention(t.get("out"), t.get("lse"), t.get("q"), t.get("k"), t.get("v"), t.get("cu"), (float) scale));
                m.expect("out", java.util.Arrays.copyOf(ref, n * hq * d), atol(2e-6, AttentionBounds.forward(q, k, v, cu, n, hq, hkv, d, scale)), 1e-5);
                m.expect("lse", java.util.Arrays.copyOfRange(ref, n * hq * d, ref.length), 2e-6, 1e-5);
            }
        }

        /**
         * The backward reads the bf16-rounded forward output (D_i = dOut_i . out_i), so the reference is the analytic
         * float64 gradient given that same out (Ref.attentionBackward), with the fp32 backward tolerance.
         */
        @Test
        void backwardBf16MatchesTheReferenceOnTheSameRoundedOutput() {
            be(Ops.ATTENTION_BACKWARD);
            SplittableRandom r = new SplittableRandom(5);
            int[][] cases = {{4, 2, 8, 6, 1, 5}, {2, 1, 64, 9}, {3, 3, 3, 4, 2}, {8, 2, 64, 1, 3, 33, 0, 70},
                    {4, 1, 128, 65, 2}, {32, 8, 128, 33}, {8, 2, 96, 20, 3}, manyShort(2, 1, 128)};
            for (int[] c : concat(cases, longCases())) {
                int hq = c[0], hkv = c[1], d = c[2];
                int[] cu = cu(java.util.Arrays.copyOfRange(c, 3, c.length));
                int n = cu[cu.length - 1], nq = n * hq * d, nk = n * hkv * d;
                double scale = 1 / Math.sqrt(d);
                double[] q = randnBf16(r, nq, 1), k = randnBf16(r, nk, 1), v = randnBf16(r, nk, 1), dy = randnBf16(r, nq, 1);
                // the forward once, on the backend under test; both backends' backward then read this same out and lse
                // (each backend's own forward would give the CPU a different out, and D_i = dOut . out with it: a
                // difference the backward's tolerance does not cover)
                Mixed fwd = mixed("attention forward hq=" + hq + " hkv=" + hkv + " d=" + d + " cu=" + java.util.Arrays.toString(cu))
                        .bf16("q", q, n, hq, d).bf16("k", k, n, hkv, d).bf16("v", v, n, hkv, d).ints("cu", cu, cu.length)
                        .out(DType.BF16, "out", n, hq, d).out(DType.FP32, "lse", n, hq)
                        .run((be, t) -> be.attention(t.get("out"), t.get("lse"), t.get("q"), t.get("k"), t.get("v"), t.get("cu"), (float) scale));
                double[] out = f64(fwd.get("out")), lse = f64(fwd.get("lse"));
                Mixed m = mixed("attention backward hq=" + hq + " hkv=" + hkv + " d=" + d + " cu=" + java.util.Arrays.toString(cu))
                        .bf16("q", q, n, hq, d).bf16("k", k, n, hkv, d).bf16("v", v, n, hkv, d).bf16("dOut", dy, n, hq, d)
                        .ints("cu", cu, cu.length).bf16("out", out, n, hq, d).fp32("lse", lse, n, hq)
                        .out(DType.BF16, "dq", n, hq, d).out(DType.BF16, "dk", n, hkv, d).out(DType.BF16, "dv", n, hkv, d)
                        .run((be, t) -> be.attentionBackward(t.get("dq"), t.get("dk"), t.get("dv"), t.get("dOut"), t.get("q"), t.get("k"),
                                t.get("v"), t.get("out"), t.get("lse"), t.get("cu"), (float) scale));
                double[] g = Ref.attentionBackward(q, k, v, out, dy, cu, n, hq, hkv, d, scale);
                double[] sl = AttentionBounds.backward(q, k, v, out, dy, cu, n, hq, hkv, d, scale);
                m.expect("dq", java.util.Arrays.copyOfRange(g, 0, nq), atol(2e-5, java.util.Arrays.copyOfRange(sl, 0, nq)), 2e-4);
                m.expect("dk", java.util.Arrays.copyOfRange(g, nq, nq + nk), atol(2e-5, java.util.Arrays.copyOfRange(sl, nq, nq + nk)), 2e-4);
                m.expect("dv", java.util.Arrays.copyOfRange(g, nq + nk, nq + 2 * nk),
                        atol(2e-5, java.util.Arrays.copyOfRange(sl, nq + nk, nq + 2 * nk)), 2e-4);
            }
        }

        @Test
        void pagedDecodeBf16() {
            be(Ops.DECODE_ATTENTION);
            TestBackends.assumeOp(be(), Ops.KV_APPEND);
            SplittableRandom r = new SplittableRandom(6);
            int hq = 4, hkv = 2, d = 64, bs = 3, numBlocks = 9, maxBlocks = 4;
            int[] lens = {1, 10, 7};
            int[] tables = {4, 0, 0, 0, 8, 1, 6, 2, 3, 7, 5, 0};
            int b = lens.length, row = hkv * d;
            double[] kc0 = randnBf16(r, numBlocks * bs * row, 1), vc0 = randnBf16(r, numBlocks * bs * row, 1);
            double[] kWant = kc0.clone(), vWant = vc0.clone(), q = randnBf16(r, b * hq * d, 1);
            Mixed m = mixed("decode bf16").bf16("kCache", kc0, numBlocks, bs, hkv, d).bf16("vCache", vc0, numBlocks, bs, hkv, d)
                    .bf16("q", q, b, hq, d).ints("tables", tables, b, maxBlocks).ints("lens", lens, b).out(DType.BF16, "out", b, hq, d);
            double[][] ks = new double[b][], vs = new double[b][];
            for (int s = 0; s < b; s++) {
                int len = lens[s];
                ks[s] = randnBf16(r, len * row, 1);
                vs[s] = randnBf16(r, len * row, 1);
                int[] slots = new int[len];
                for (int t = 0; t < len; t++) {
                    slots[t] = tables[s * maxBlocks + t / bs] * bs + t % bs;
                    System.arraycopy(ks[s], t * row, kWant, slots[t] * row, row);
                    System.arraycopy(vs[s], t * row, vWant, slots[t] * row, row);
                }
                m.bf16("k" + s, ks[s], len, hkv, d).bf16("v" + s, vs[s], len, hkv, d).ints("slots" + s, slots, len);
            }
            double scale = 1 / Math.sqrt(d);
            m.run((be, t) -> {
                for (int s = 0; s < b; s++) be.kvAppend(t.get("kCache"), t.get("vCache"), t.get("k" + s), t.get("v" + s), t.get("slots" + s));
            }, (be, t) -> be.decodeAttention(t.get("out"), t.get("q"), t.get("kCache"), t.get("vCache"), t.get("tables"), t.get("lens"), (float) scale));
            m.expect("kCache", kWant, 0, 0); // appended rows copied exactly, every other row untouched
            m.expect("vCache", vWant, 0, 0);
            double[] want = new double[b * hq * d], slack = new double[b * hq * d];
            for (int s = 0; s < b; s++) {
                int len = lens[s];
                double[] qFull = new double[len * hq * d];
                System.arraycopy(q, s * hq * d, qFull, (len - 1) * hq * d, hq * d);
                double[] ref = Ref.attention(qFull, ks[s], vs[s], new int[] {0, len}, len, hq, hkv, d, scale);
                System.arraycopy(ref, (len - 1) * hq * d, want, s * hq * d, hq * d);
                double[] sl = AttentionBounds.forward(qFull, ks[s], vs[s], new int[] {0, len}, len, hq, hkv, d, scale);
                System.arraycopy(sl, (len - 1) * hq * d, slack, s * hq * d, hq * d);
            }
            m.expect("out", want, atol(2e-6, slack), 1e-5);
        }

        /**
         * bf16 decode over long and uneven contexts (split-KV on a GPU with many SMs and few sequences), scattered
         * pages of 16 and 5: GQA 32/8 at hd 128 (tensor cores), MQA 32/1 and hd 96 (generic path).
         */
        @Test
        void pagedDecodeBf16LongContexts() {
            be(Ops.DECODE_ATTENTION);
            SplittableRandom r = new SplittableRandom(8);
            // {hq, hkv, d, bs, contexts...}
            for (int[] c : new int[][] {{32, 8, 128, 16, 1, 100, 1001}, {32, 1, 64, 5, 3, 700}, {8, 2, 96, 16, 33, 130}}) {
                int hq = c[0], hkv = c[1], d = c[2], bs = c[3];
                int[] ctx = java.util.Arrays.copyOfRange(c, 4, c.length);
                int b = ctx.length;
                AttentionDeviceMathTest.Paged p = AttentionDeviceMathTest.paged(r, ctx, bs, 4);
                int rows = p.numBlocks() * bs * hkv * d;
                double[] kc = randnBf16(r, rows, 1), vc = randnBf16(r, rows, 1), q = randnBf16(r, b * hq * d, 1);
                int[] tables = p.tables().clone();
                for (int i = 0; i < tables.length; i++) if (tables[i] < 0) tables[i] = 0; // unused entries: any valid id
                double scale = 1 / Math.sqrt(d);
                Mixed m = mixed("decode bf16 " + java.util.Arrays.toString(c)).bf16("kCache", kc, p.numBlocks(), bs, hkv, d)
                        .bf16("vCache", vc, p.numBlocks(), bs, hkv, d).bf16("q", q, b, hq, d).ints("tables", tables, b, p.maxBlocks())
                        .ints("lens", ctx, b).out(DType.BF16, "out", b, hq, d)
                        .run((be, t) -> be.decodeAttention(t.get("out"), t.get("q"), t.get("kCache"), t.get("vCache"), t.get("tables"),
                                t.get("lens"), (float) scale));
                double[] want = AttentionDeviceMathTest.decodeRef(q, kc, vc, tables, ctx, b, hq, hkv, d, bs, p.maxBlocks(), scale, false);
                double[] a = AttentionDeviceMathTest.decodeRef(q, kc, vc, tables, ctx, b, hq, hkv, d, bs, p.maxBlocks(), scale, true);
                for (int i = 0; i < a.length; i++) a[i] *= AttentionBounds.U * AttentionBounds.MARGIN;
                m.expect("out", want, atol(2e-6, a), 1e-5);
            }
        }

        /**
         * Prefix groups (cascade decoding): members read their first `shared` keys through the group's first row. Their
         * own rows point below `shared` to a poisoned block (keys 1024, values 2^20): a backend that reads it fails.
         * The reference is plain decode over the rows the contract says are read. A group of 16 at GQA 32/8, hd 128 (CUDA's prefix kernel:
         * 64 rows of one pass), one of a single member, an empty row, a sequence in no group; and hd 96 (the generic
         * path) with a shared count off the page boundary.
         */
        @Test
        void pagedDecodeWithPrefixGroups() {
            be(Ops.DECODE_ATTENTION);
            SplittableRandom r = new SplittableRandom(11);
            // {hq, hkv, d, bs}, contexts, groups (first, count, shared)
            int[][][] cases = {
                    {{32, 8, 128, 16}, {40, 47, 54, 61, 68, 75, 82, 89, 96, 103, 110, 117, 124, 131, 138, 145, 33, 25},
                            {0, 16, 32, 16, 1, 16, 0, 0, 0}},
                    {{8, 2, 96, 5}, {40, 37, 100, 16, 64, 9}, {0, 3, 17, 3, 2, 10}}};
            for (int[][] c : cases) {
                int hq = c[0][0], hkv = c[0][1], d = c[0][2], bs = c[0][3];
                int[] ctx = c[1], groups = c[2];
                int b = ctx.length;
                AttentionDeviceMathTest.Paged p = AttentionDeviceMathTest.paged(r, ctx, bs, 2);
                int poison = p.numBlocks(), numBlocks = poison + 1, row = hkv * d, mb = p.maxBlocks();
                int[] own = p.tables().clone(), read = own.clone();
                for (int i = 0; i < own.length; i++) if (own[i] < 0) own[i] = read[i] = 0;
                for (int gi = 0; gi < groups.length; gi += 3)
                    for (int s = groups[gi] + 1; s < groups[gi] + groups[gi + 1]; s++)
                        for (int j = 0; j < (groups[gi + 2] + bs - 1) / bs; j++) {
                            // keys below `shared` of page j come from the first member's page j
                            read[s * mb + j] = own[groups[gi] * mb + j];
                            if ((j + 1) * bs <= groups[gi + 2]) own[s * mb + j] = poison;
                        }
                double[] kc = randnBf16(r, numBlocks * bs * row, 1), vc = randnBf16(r, numBlocks * bs * row, 1);
                // large keys (the weights of any read would count) and values that would swamp the output
                java.util.Arrays.fill(kc, poison * bs * row, numBlocks * bs * row, 1024);
                java.util.Arrays.fill(vc, poison * bs * row, numBlocks * bs * row, 1 << 20);
                double[] q = randnBf16(r, b * hq * d, 1);
                // pages that straddle `shared`: a member's own page holds the keys from `shared` on; below it the
                // reference reads the first member's page, so copy those keys' rows there from the member's
                double scale = 1 / Math.sqrt(d);
                for (int gi = 0; gi < groups.length; gi += 3) {
                    int sh = groups[gi + 2];
                    if (sh % bs == 0) continue;
                    for (int s = groups[gi] + 1; s < groups[gi] + groups[gi + 1]; s++) {
                        int j = sh / bs, mine = own[s * mb + j], lead = own[groups[gi] * mb + j];
                        System.arraycopy(kc, (lead * bs) * row, kc, (mine * bs) * row, (sh % bs) * row);
                        System.arraycopy(vc, (lead * bs) * row, vc, (mine * bs) * row, (sh % bs) * row);
                    }
                }
                // the reference reads, per key, what the contract names: through `read` below `shared` and `own` from it
                int[] refTables = own.clone();
                for (int gi = 0; gi < groups.length; gi += 3)
                    for (int s = groups[gi] + 1; s < groups[gi] + groups[gi + 1]; s++)
                        for (int j = 0; j < groups[gi + 2] / bs; j++) refTables[s * mb + j] = read[s * mb + j];
                Mixed m = mixed("decode with prefix groups " + java.util.Arrays.toString(c[0]) + " groups " + java.util.Arrays.toString(groups))
                        .bf16("kCache", kc, numBlocks, bs, hkv, d).bf16("vCache", vc, numBlocks, bs, hkv, d).bf16("q", q, b, hq, d)
                        .ints("tables", own, b, mb).ints("lens", ctx, b).ints("groups", groups, groups.length / 3, 3)
                        .out(DType.BF16, "out", b, hq, d)
                        .run((be, t) -> be.decodeAttention(t.get("out"), t.get("q"), t.get("kCache"), t.get("vCache"), t.get("tables"),
                                t.get("lens"), t.get("groups"), (float) scale));
                double[] want = AttentionDeviceMathTest.decodeRef(q, kc, vc, refTables, ctx, b, hq, hkv, d, bs, mb, scale, false);
                double[] a = AttentionDeviceMathTest.decodeRef(q, kc, vc, refTables, ctx, b, hq, hkv, d, bs, mb, scale, true);
                for (int i = 0; i < a.length; i++) a[i] *= AttentionBounds.U * AttentionBounds.MARGIN;
                m.expect("out", want, atol(2e-6, a), 1e-5);
            }
        }

        /**
         * No query heads (Hq = 0 is a multiple of any Hkv): nothing to attend, and the backward's dk and dv are zero (no
         * query reads k or v), in bf16 (CUDA's tensor-core path when there are heads) and fp32.
         */
        @Test
        void zeroQueryHeadsGiveZeroKeyGradients() {
            be(Ops.ATTENTION_BACKWARD);
            SplittableRandom r = new SplittableRandom(10);
            int n = 70, hkv = 2, d = 64;
            int[] cu = cu(3, 0, 67);
            for (DType dt : new DType[] {DType.BF16, DType.FP32}) {
                double[] k = randnBf16(r, n * hkv * d, 1), v = randnBf16(r, n * hkv * d, 1), none = new double[0];
                Mixed m = mixed("attention with no query heads (" + dt.label() + ")").in(dt, "q", none, n, 0, d)
                        .in(dt, "k", k, n, hkv, d).in(dt, "v", v, n, hkv, d).in(dt, "dOut", none, n, 0, d).ints("cu", cu, cu.length)
                        .out(dt, "out", n, 0, d).out(DType.FP32, "lse", n, 0).out(dt, "dq", n, 0, d).out(dt, "dk", n, hkv, d)
                        .out(dt, "dv", n, hkv, d)
                        .run((be, t) -> be.attention(t.get("out"), t.get("lse"), t.get("q"), t.get("k"), t.get("v"), t.get("cu"), 0.125f),
                                (be, t) -> be.attentionBackward(t.get("dq"), t.get("dk"), t.get("dv"), t.get("dOut"), t.get("q"),
                                        t.get("k"), t.get("v"), t.get("out"), t.get("lse"), t.get("cu"), 0.125f));
                m.expect("dk", new double[n * hkv * d], 0, 0);
                m.expect("dv", new double[n * hkv * d], 0, 0);
            }
        }

        @Test
        void badCalls() {
            Backend be = be(Ops.ATTENTION);
            Tensor cu = up(new int[] {0, 4}, 2);
            assertBadCall(Ops.ATTENTION, () -> be.attention(zeros(4, 6, 8), zeros(4, 6), zeros(4, 6, 8), zeros(4, 4, 8), zeros(4, 4, 8), cu, 0.3f),
                    "query heads 6", "kv heads 4");
            assertBadCall(Ops.ATTENTION, () -> be.attention(zeros(4, 4, 8), zeros(4, 4), zeros(4, 4, 8), zeros(4, 2, 7), zeros(4, 2, 7), cu, 0.3f),
                    "k has shape [4, 2, 7]");
            if (be instanceof CpuBackend) {
                assertBadCall(Ops.ATTENTION, () -> be.attention(zeros(4, 2, 8), zeros(4, 2), zeros(4, 2, 8), zeros(4, 2, 8), zeros(4, 2, 8),
                        up(new int[] {0, 3}, 2), 0.3f), "token count 4");
                assertBadCall(Ops.ATTENTION, () -> be.attention(zeros(4, 2, 8), zeros(4, 2), zeros(4, 2, 8), zeros(4, 2, 8), zeros(4, 2, 8),
                        up(new int[] {0, 3, 2, 4}, 4), 0.3f), "non-decreasing");
                // an entry above the token count, then the count: the order check comes first (it used to index past N)
                assertBadCall(Ops.ATTENTION, () -> be.attention(zeros(4, 2, 8), zeros(4, 2), zeros(4, 2, 8), zeros(4, 2, 8), zeros(4, 2, 8),
                        up(new int[] {0, 5, 4}, 3), 0.3f), "cuSeqlens[2] = 4 < cuSeqlens[1] = 5");
            }
            Backend bb = be(Ops.ATTENTION_BACKWARD);
            String bw = Ops.ATTENTION_BACKWARD;
            // (dq, dk, dv, dOut, q, k, v, out, lse) with q [4, 4, 8] and k, v [4, 2, 8]: one argument off at a time
            Tensor q = zeros(4, 4, 8), kv = zeros(4, 2, 8);
            assertBadCall(bw, () -> bb.attentionBackward(zeros(4, 2, 8), zeros(4, 2, 8), zeros(4, 2, 8), zeros(4, 4, 8), q, kv, kv,
                    zeros(4, 4, 8), zeros(4, 4), cu, 0.3f), "dq has shape [4, 2, 8]", "[4, 4, 8]");
            assertBadCall(bw, () -> bb.attentionBackward(zeros(4, 4, 8), zeros(4, 4, 8), zeros(4, 2, 8), zeros(4, 4, 8), q, kv, kv,
                    zeros(4, 4, 8), zeros(4, 4), cu, 0.3f), "dk has shape [4, 4, 8]", "[4, 2, 8]");
            assertBadCall(bw, () -> bb.attentionBackward(zeros(4, 4, 8), zeros(4, 2, 8), zeros(3, 2, 8), zeros(4, 4, 8), q, kv, kv,
                    zeros(4, 4, 8), zeros(4, 4), cu, 0.3f), "dv has shape [3, 2, 8]", "[4, 2, 8]");
            assertBadCall(bw, () -> bb.attentionBackward(zeros(4, 4, 8), zeros(4, 2, 8), zeros(4, 2, 8), zeros(4, 4, 7), q, kv, kv,
                    zeros(4, 4, 8), zeros(4, 4), cu, 0.3f), "dOut has shape [4, 4, 7]", "[4, 4, 8]");
            assertBadCall(bw, () -> bb.attentionBackward(zeros(4, 4, 8), zeros(4, 2, 8), zeros(4, 2, 8), zeros(4, 4, 8), q, kv, kv,
                    zeros(4, 2, 8), zeros(4, 4), cu, 0.3f), "out has shape [4, 2, 8]", "[4, 4, 8]");
            assertBadCall(bw, () -> bb.attentionBackward(zeros(4, 4, 8), zeros(4, 2, 8), zeros(4, 2, 8), zeros(4, 4, 8), q, kv, kv,
                    zeros(4, 4, 8), zeros(4, 2), cu, 0.3f), "lse has shape [4, 2]", "[4, 4]");
            assertBadCall(bw, () -> bb.attentionBackward(zeros(4, 4, 8), zeros(4, 2, 8), zeros(4, 2, 8), zeros(4, 4, 8), q, kv,
                    zeros(4, 2, 7), zeros(4, 4, 8), zeros(4, 4), cu, 0.3f), "v has shape [4, 2, 7]", "[4, 2, 8]");
            Backend b3 = be(Ops.KV_APPEND);
            Tensor kc = zeros(2, 4, 1, 8), vc = zeros(2, 4, 1, 8), one = up(new int[] {0}, 1), two = up(new int[] {0, 1}, 2);
            // caches [numBlocks 2, blockSize 4, kv heads 1, head dim 8]: 8 slots
            assertBadCall(Ops.KV_APPEND, () -> b3.kvAppend(kc, vc, zeros(1, 1, 7), zeros(1, 1, 7), one), "k has shape [1, 1, 7]", "[*, 1, 8]");
            assertBadCall(Ops.KV_APPEND, () -> b3.kvAppend(kc, zeros(2, 4, 2, 8), zeros(1, 1, 8), zeros(1, 1, 8), one),
                    "vCache has shape [2, 4, 2, 8]", "[2, 4, 1, 8]");
            assertBadCall(Ops.KV_APPEND, () -> b3.kvAppend(kc, vc, zeros(2, 1, 8), zeros(1, 1, 8), two), "v has shape [1, 1, 8]", "[2, 1, 8]");
            assertBadCall(Ops.KV_APPEND, () -> b3.kvAppend(kc, vc, zeros(2, 1, 8), zeros(2, 1, 8), one), "slots has shape [1]", "[2]");
            assertBadCall(Ops.KV_APPEND, () -> b3.kvAppend(zeros(8, 1, 8), zeros(8, 1, 8), zeros(1, 1, 8), zeros(1, 1, 8), one),
                    "kCache [8, 1, 8] has rank 3");
            if (b3 instanceof CpuBackend) // CUDA reports it through its flag (CudaBackendTest)
                assertBadCall(Ops.KV_APPEND, () -> b3.kvAppend(kc, vc, zeros(2, 1, 8), zeros(2, 1, 8), up(new int[] {7, 8}, 2)),
                        "slots[1] = 8 is outside [0, 8)");
            Backend b2 = be(Ops.DECODE_ATTENTION);
            assertBadCall(Ops.DECODE_ATTENTION, () -> b2.decodeAttention(zeros(2, 4, 8), zeros(2, 4, 8), zeros(3, 4, 2, 8), zeros(3, 4, 2, 8),
                    up(new int[] {0, 1, 2}, 3, 1), up(new int[] {1, 1}, 2), 0.3f), "blockTables", "[3, 1]");
            assertBadCall(Ops.DECODE_ATTENTION, () -> b2.decodeAttention(zeros(2, 4, 8), zeros(2, 4, 8), zeros(3, 4, 2, 8), zeros(3, 4, 2, 8),
                    up(new int[] {0, 1}, 2, 1), up(new int[] {1, 1}, 2), up(new int[] {0, 2}, 1, 2), 0.3f), "prefixGroups", "[1, 2]");
            if (b2 instanceof CpuBackend) {
                assertBadCall(Ops.DECODE_ATTENTION, () -> b2.decodeAttention(zeros(1, 4, 8), zeros(1, 4, 8), zeros(3, 4, 2, 8), zeros(3, 4, 2, 8),
                        up(new int[] {0, 1}, 1, 2), up(new int[] {9}, 1), 0.3f), "contextLens[0] = 9");
                Tensor t3 = up(new int[] {0, 1, 2}, 3, 1), l3 = up(new int[] {3, 3, 2}, 3);
                assertBadCall(Ops.DECODE_ATTENTION, () -> b2.decodeAttention(zeros(3, 4, 8), zeros(3, 4, 8), zeros(3, 4, 2, 8),
                        zeros(3, 4, 2, 8), t3, l3, up(new int[] {0, 2, 2, 1, 2, 2}, 2, 3), 0.3f), "sequence 1 is in more than one prefix group");
                assertBadCall(Ops.DECODE_ATTENTION, () -> b2.decodeAttention(zeros(3, 4, 8), zeros(3, 4, 8), zeros(3, 4, 2, 8),
                        zeros(3, 4, 2, 8), t3, l3, up(new int[] {0, 3, 3}, 1, 3), 0.3f),
                        "prefixGroups[0, 2] (shared keys) = 3 exceeds the context length 2 of its sequence #2");
                assertBadCall(Ops.DECODE_ATTENTION, () -> b2.decodeAttention(zeros(3, 4, 8), zeros(3, 4, 8), zeros(3, 4, 2, 8),
                        zeros(3, 4, 2, 8), t3, l3, up(new int[] {2, 2, 1}, 1, 3), 0.3f), "prefixGroups[0, 1] (count) = 2 runs past the batch");
            }
            // a block size near 2^31 (empty pools [0, blockSize, 1, 8]: no memory). A sequence's page count was ctx + bs - 1
            // over bs, which wrapped negative: no table entry was checked, and the kernels read the unchecked page. The CPU
            // finds the entry outside the empty pool; CUDA refuses a table row past 2^31 - 1025 keys before any launch (its
            // kernels count keys in an int) and, below that, its kernel finds the entry as the CPU does
            Tensor one1 = up(new int[] {0}, 1, 1);
            if (b2 instanceof CpuBackend) {
                assertBadCall(Ops.DECODE_ATTENTION, () -> b2.decodeAttention(zeros(1, 1, 8), zeros(1, 1, 8), zeros(0, Integer.MAX_VALUE, 1, 8),
                        zeros(0, Integer.MAX_VALUE, 1, 8), one1, up(new int[] {2}, 1), 0.3f), "blockTables[0, 0] = 0 is outside [0, 0)");
            } else {
                assertBadCall(Ops.DECODE_ATTENTION, () -> b2.decodeAttention(zeros(1, 1, 8), zeros(1, 1, 8), zeros(0, Integer.MAX_VALUE, 1, 8),
                        zeros(0, Integer.MAX_VALUE, 1, 8), one1, up(new int[] {2}, 1), 0.3f),
                        "blockTables.dim(1) 1 x blockSize 2147483647 = 2147483647 exceeds 2^31 - 1025");
            }
            int bs = Integer.MAX_VALUE - 1024; // the most CUDA takes; a context of bs keys: ctx + bs - 1 wraps
            Tensor out = zeros(1, 1, 8);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> {
                b2.decodeAttention(out, zeros(1, 1, 8), zeros(0, bs, 1, 8), zeros(0, bs, 1, 8), one1, up(new int[] {bs}, 1), 0.3f);
                b2.synchronize(); // (CUDA reports its kernel's finding here)
            });
            assertTrue(e.getMessage().startsWith(Ops.DECODE_ATTENTION + ": blockTables[0, 0] = 0 is outside [0, 0)"), e.getMessage());
        }
    }

    @Nested
    class Cpu extends Suite {
        @Override
        protected Backend be() { return TestBackends.cpu(); }
    }

    @Nested
    @Tag("gpu")
    class Cuda extends Suite {
        @Override
        protected Backend be() { return TestBackends.cuda(); }

        @Override
        protected double bf16IntermediateSlack() { return 1; }
    }
}
