package org.grpo4j.internal.backend;

import java.util.ArrayList;
import java.util.List;

/**
 * How the CPU runs an op's bf16 variant: each bf16 tensor of the call is replaced by an fp32 temporary holding its
 * exact widening ({@link #in}), or by a temporary the op writes ({@link #out}); the fp32 implementation runs on the
 * temporaries; {@link #commit()} then rounds every output temporary once, to nearest even ({@link Bf16#fromFloat}),
 * into the caller's tensor. So a bf16 result is, bit for bit, RNE(the fp32 op on the widened inputs): the contract
 * that the GPU kernels are checked against.
 *
 * <p>Tensors over the same elements (the same storage, offset and length) share one temporary, so aliasing behaves
 * as in fp32 (add's out == a, rope in place, rmsNormBackward's dx == dOut). Tensors that overlap only partly are
 * refused. fp32 and integer tensors pass through untouched. Closing without {@link #commit()} (the op threw, e.g. on
 * an out-of-range index) frees the temporaries and writes nothing into the caller's tensors.
 */
final class Bf16Scope implements AutoCloseable {
    private static final class Entry {
        final Tensor src, tmp;
        boolean filled, output;

        Entry(Tensor src, Tensor tmp) {
            this.src = src;
            this.tmp = tmp;
        }
    }

    private final CpuBackend be;
    private final String op;
    private final List<Entry> entries = new ArrayList<>();

    Bf16Scope(CpuBackend be, String op) {
        this.be = be;
        this.op = op;
    }

    /** True when any of the (non-null) tensors is bf16. */
    static boolean any(Tensor... ts) {
        for (Tensor t : ts) if (t != null && t.dtype() == DType.BF16) return true;
        return false;
    }

    /** An input: its exact fp32 widening (t itself unless bf16). */
    Tensor in(Tensor t) {
        if (t == null || t.dtype() != DType.BF16) return t;
        Entry e = entry(t);
        if (!e.filled) {
            widen(t, e.tmp);
            e.filled = true;
        }
        return e.tmp;
    }

    /** An output the op overwrites entirely: an fp32 temporary rounded back by {@link #commit()}. */
    Tensor out(Tensor t) {
        if (t == null || t.dtype() != DType.BF16) return t;
        Entry e = entry(t);
        e.output = true;
        return e.tmp;
    }

    /** An output the op reads or only partly writes (matmul's C with beta != 0): widened first, rounded back. */
    Tensor inOut(Tensor t) {
        in(t);
        return out(t);
    }

    /** Rounds every output temporary into its bf16 tensor. Call once, after the op has succeeded. */
    void commit() {
        for (Entry e : entries) {
            if (!e.output) continue;
            float[] s = CpuBackend.f(e.tmp);
            short[] d = CpuBackend.h(e.src);
            int os = CpuBackend.off(e.tmp), od = CpuBackend.off(e.src);
            be.parallel().forRange((int) e.src.numel(), 1 << 16, (a, b) -> {
                for (int k = a; k < b; k++) d[od + k] = Bf16.fromFloat(s[os + k]);
            });
        }
    }

    @Override
    public void close() {
        for (Entry e : entries) e.tmp.close();
        entries.clear();
    }

    private Entry entry(Tensor t) {
        long lo = t.offset, hi = t.offset + t.numel();
        for (Entry e : entries) {
            if (e.src.storage != t.storage) continue;
            long elo = e.src.offset, ehi = elo + e.src.numel();
            if (elo == lo && ehi == hi) return e;
            if (lo < ehi && elo < hi)
                throw Check.fail(op, "bf16 tensors " + e.src + " and " + t + " overlap partly; the CPU backend needs"
                        + " bf16 arguments that are either the same elements or disjoint");
        }
        Entry e = new Entry(t, be.empty(DType.FP32, t.shape()));
        entries.add(e);
        return e;
    }

    private void widen(Tensor src, Tensor dst) {
        short[] s = CpuBackend.h(src);
        float[] d = CpuBackend.f(dst);
        int os = CpuBackend.off(src), od = CpuBackend.off(dst);
        be.parallel().forRange((int) src.numel(), 1 << 16, (a, b) -> {
            for (int k = a; k < b; k++) d[od + k] = Bf16.toFloat(s[os + k]);
        });
    }
}
