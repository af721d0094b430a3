package org.grpo4j.internal.backend;

import static org.junit.jupiter.api.Assertions.*;

import java.util.SplittableRandom;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/** embedding (exact: a gather) and its scatter-add backward (FD, atol 1e-5, rtol 1e-5; deterministic bitwise). */
class EmbeddingConformanceTest {

    abstract static class Suite extends Conformance {
        @Test
        void gatherIsExact() {
            Backend be = be(Ops.EMBEDDING);
            SplittableRandom r = new SplittableRandom(1);
            for (int[] s : new int[][] {{1, 1, 3}, {7, 5, 13}, {300, 97, 64}}) {
                int n = s[0], vocab = s[1], d = s[2];
                double[] table = randn(r, vocab * d, 1);
                int[] ids = r.ints(n, 0, vocab).toArray();
                double[] want = new double[n * d];
                for (int t = 0; t < n; t++) System.arraycopy(table, ids[t] * d, want, t * d, d);
                Tensor out = poisoned(n, d);
                be.embedding(out, up(table, vocab, d), up(ids, n));
                assertClose("embedding " + n + "x" + vocab + "x" + d, want, out.toFloats(), 0, 0);
            }
        }

        @Test
        void backwardMatchesFiniteDifferencesAndIsDeterministic() {
            Backend be = be(Ops.EMBEDDING_BACKWARD);
            SplittableRandom r = new SplittableRandom(2);
            for (int[] s : new int[][] {{1, 3, 2}, {29, 5, 7}, {200, 33, 16}}) {
                int n = s[0], vocab = s[1], d = s[2];
                double[] table = randn(r, vocab * d, 1), dy = randn(r, n * d, 1), init = randn(r, vocab * d, 1);
                int[] ids = r.ints(n, 0, vocab).toArray(); // repeated ids exercise the accumulation
                double[] fd = fdGrad(tb -> {
                    double acc = 0;
                    for (int t = 0; t < n; t++) for (int j = 0; j < d; j++) acc += dy[t * d + j] * tb[ids[t] * d + j];
                    return acc;
                }, table, null);
                for (int i = 0; i < fd.length; i++) fd[i] += init[i]; // backward accumulates into dTable
                Tensor g1 = up(init, vocab, d), g2 = up(init, vocab, d), tdy = up(dy, n, d), tid = up(ids, n);
                be.embeddingBackward(g1, tdy, tid);
                be.embeddingBackward(g2, tdy, tid);
                assertGradClose("embeddingBackward", fd, g1.toFloats(), null, 1e-5, 1e-5);
                assertArrayEquals(g1.toFloats(), g2.toFloats(), "bitwise deterministic");
            }
        }

        @Test
        void bf16GatherIsExact() {
            be(Ops.EMBEDDING);
            SplittableRandom r = new SplittableRandom(3);
            for (int[] s : new int[][] {{1, 1, 3}, {7, 5, 13}, {300, 97, 64}}) {
                int n = s[0], vocab = s[1], d = s[2];
                double[] table = randnBf16(r, vocab * d, 1);
                int[] ids = r.ints(n, 0, vocab).toArray();
                double[] want = new double[n * d];
                for (int t = 0; t < n; t++) System.arraycopy(table, ids[t] * d, want, t * d, d);
                mixed("embedding " + n + "x" + vocab + "x" + d).bf16("table", table, vocab, d).ints("ids", ids, n)
                        .out(DType.BF16, "out", n, d).run((be, t) -> be.embedding(t.get("out"), t.get("table"), t.get("ids")))
                        .expect("out", want, 0, 0);
            }
        }

        @Test
        void backwardAccumulatesBf16GradientsInFp32() {
            be(Ops.EMBEDDING_BACKWARD);
            SplittableRandom r = new SplittableRandom(4);
            for (int[] s : new int[][] {{1, 3, 2}, {29, 5, 7}, {200, 33, 16}}) {
                int n = s[0], vocab = s[1], d = s[2];
                double[] dy = randnBf16(r, n * d, 1), init = randn(r, vocab * d, 1);
                int[] ids = r.ints(n, 0, vocab).toArray();
                double[] want = init.clone(); // the gradient of sum dy . table[ids] w.r.t. table, plus the initial values
                for (int t = 0; t < n; t++) for (int j = 0; j < d; j++) want[ids[t] * d + j] += dy[t * d + j];
                mixed("embeddingBackward " + n + "x" + vocab + "x" + d).fp32("dTable", init, vocab, d).bf16("dOut", dy, n, d)
                        .ints("ids", ids, n).run((be, t) -> be.embeddingBackward(t.get("dTable"), t.get("dOut"), t.get("ids")))
                        .expect("dTable", want, 1e-5, 1e-5);
            }
        }

        /** gatherTokens: rows with an index take src[index], the rest keep their value; a step's host upload and snapshot. */
        @Test
        void gatherTokensTakesIndexedRowsAndKeepsTheRest() {
            Backend be = be(Ops.GATHER_TOKENS);
            SplittableRandom r = new SplittableRandom(5);
            for (int[] s : new int[][] {{1, 1}, {7, 3}, {300, 257}, {1000, 1000}}) {
                int n = s[0], m = s[1];
                int[] src = r.ints(m, 0, 128256).toArray(), ids = r.ints(n, 0, 128256).toArray(), index = new int[n];
                int[] want = ids.clone();
                for (int i = 0; i < n; i++) {
                    index[i] = r.nextInt(3) == 0 ? -1 - r.nextInt(5) : r.nextInt(m);
                    if (index[i] >= 0) want[i] = src[index[i]];
                }
                Tensor out = up(ids, n);
                be.gatherTokens(out, up(src, m), up(index, n));
                assertArrayEquals(want, out.toInts(), "gatherTokens " + n + " from " + m);
                // the same through the stream-ordered upload and snapshot a pipelined decode step uses
                Tensor again = zerosInt(n), lp = zeros(n);
                be.copyFromHostAsync(again, ids);
                be.gatherTokens(again, up(src, m), up(index, n));
                Backend.Fetched f = be.fetch(again, lp);
                be.fill(again, 0); // after the snapshot: not in it
                assertArrayEquals(want, f.ints(), "snapshot " + n);
                assertEquals(n, f.floats().length);
            }
        }

        @Test
        void gatherTokensBadCalls() {
            Backend be = be(Ops.GATHER_TOKENS);
            assertBadCall(Ops.GATHER_TOKENS, () -> be.gatherTokens(zerosInt(3), zerosInt(4), zerosInt(2)), "index", "[2]");
            assertBadCall(Ops.GATHER_TOKENS, () -> be.gatherTokens(zerosInt(3), zeros(4), zerosInt(3)), "src", "fp32");
            Tensor both = zerosInt(8);
            assertBadCall(Ops.GATHER_TOKENS, () -> be.gatherTokens(both.view(0, 4), both.view(2, 4), zerosInt(4)), "share memory");
            assertBadCall(Ops.GATHER_TOKENS, () -> be.gatherTokens(both.view(0, 4), zerosInt(4), both.view(2, 4)), "ids", "index", "share memory");
            Tensor ids = zerosInt(2);
            if (be instanceof CpuBackend) // index data: the CPU checks it while reading, CUDA reports it through its flag
                assertBadCall(Ops.GATHER_TOKENS, () -> be.gatherTokens(ids, zerosInt(4), up(new int[] {-1, 4}, 2)), "index[1] = 4", "[0, 4)");
        }

        @Test
        void badCalls() {
            Backend be = be(Ops.EMBEDDING);
            assertBadCall(Ops.EMBEDDING, () -> be.embedding(zeros(3, 4), zeros(10, 5), up(new int[] {1, 2, 3}, 3)), "[3, 4]", "[3, 5]");
            assertBadCall(Ops.EMBEDDING, () -> be.embedding(zeros(3, 4), zeros(10, 4), zeros(3)), "ids", "fp32");
            if (be instanceof CpuBackend) // ids are device data: the CPU checks them while reading, CUDA kernels skip them
                assertBadCall(Ops.EMBEDDING, () -> be.embedding(zeros(2, 4), zeros(10, 4), up(new int[] {1, 10}, 2)), "ids[1] = 10", "[0, 10)");
            Backend bb = be(Ops.EMBEDDING_BACKWARD);
            Tensor ids = up(new int[] {1, 2, 3}, 3);
            assertBadCall(Ops.EMBEDDING_BACKWARD, () -> bb.embeddingBackward(zeros(10, 4), zeros(3, 5), ids), "dOut has shape [3, 5]", "[3, 4]");
            assertBadCall(Ops.EMBEDDING_BACKWARD, () -> bb.embeddingBackward(zeros(10, 4), zeros(2, 4), ids), "dOut has shape [2, 4]", "[3, 4]");
            assertBadCall(Ops.EMBEDDING_BACKWARD, () -> bb.embeddingBackward(zeros(40), zeros(3, 4), ids), "dTable [40] has rank 1");
            assertBadCall(Ops.EMBEDDING_BACKWARD, () -> bb.embeddingBackward(zeros(10, 4), zeros(3, 4), up(new int[] {1, 2, 3}, 3, 1)),
                    "ids [3, 1] has rank 2");
            if (bb instanceof CpuBackend) // CUDA reports it through its flag (CudaBackendTest)
                assertBadCall(Ops.EMBEDDING_BACKWARD, () -> bb.embeddingBackward(zeros(10, 4), zeros(2, 4), up(new int[] {1, -2}, 2)),
                        "ids[1] = -2", "[0, 10)");
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
    }
}
