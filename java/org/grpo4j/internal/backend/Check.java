package org.grpo4j.internal.backend;

import java.util.Arrays;

/** Argument validation shared by every backend: each failure names the op, the argument and the shapes. */
final class Check {
    private Check() {}

    static IllegalArgumentException fail(String op, String message) {
        return new IllegalArgumentException(op + ": " + message);
    }

    static void notNull(String op, String name, Object o) {
        if (o == null) throw fail(op, name + " is null");
    }

    /** Live, belongs to this backend. */
    static void tensor(String op, AbstractBackend be, String name, Tensor t) {
        be.checkOpen();
        notNull(op, name, t);
        if (t.backend() != be)
            throw fail(op, name + " " + t + " lives on " + (t.backend().name().equals(be.name())
                    ? "another " + be.name() + " backend instance" : t.backend().name() + ", not on " + be.name()));
        if (!t.isLive()) throw new IllegalStateException(op + ": " + name + " " + t + " was already freed");
    }

    static void dtype(String op, String name, Tensor t, DType... allowed) {
        for (DType d : allowed) if (t.dtype() == d) return;
        throw fail(op, name + " has dtype " + t.dtype().label() + ", expected " + labels(allowed));
    }

    /**
     * Tensors that must share one floating dtype (all fp32 or all bf16); {@code names} lists them as in messages
     * ("out, a, b"). Returns the shared dtype.
     */
    static DType sameFloat(String op, String names, Tensor... ts) {
        DType d = ts[0].dtype();
        boolean ok = d == DType.FP32 || d == DType.BF16;
        for (Tensor t : ts) ok &= t.dtype() == d;
        if (!ok) throw fail(op, names + " have dtypes " + dtypes(ts) + "; expected all fp32 or all bf16");
        return d;
    }

    static String dtypes(Tensor... ts) {
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < ts.length; i++) sb.append(i > 0 ? ", " : "").append(ts[i].dtype().label());
        return sb.toString();
    }

    /** Exact shape; -1 in expected matches any size. */
    static void shape(String op, String name, Tensor t, int... expected) {
        int[] s = t.shape();
        boolean ok = s.length == expected.length;
        for (int i = 0; ok && i < s.length; i++) ok = expected[i] < 0 || expected[i] == s[i];
        if (!ok) throw fail(op, name + " has shape " + Arrays.toString(s) + ", expected " + pattern(expected));
    }

    static void rank(String op, String name, Tensor t, int... ranks) {
        for (int r : ranks) if (t.rank() == r) return;
        throw fail(op, name + " " + t.shapeString() + " has rank " + t.rank() + ", expected rank " + Arrays.toString(ranks));
    }

    static void sameNumel(String op, String a, Tensor ta, String b, Tensor tb) {
        if (ta.numel() != tb.numel())
            throw fail(op, a + " " + ta.shapeString() + " and " + b + " " + tb.shapeString() + " differ in element count");
    }

    /**
     * Each output disjoint from every other output and from every input (inputs may share memory among themselves):
     * a kernel's threads would read elements that others have already overwritten, in an order that varies from run
     * to run. {@code outNames} and {@code inNames} list the names as in messages ("out, lse"); null tensors (an
     * optional argument) are skipped.
     */
    static void apart(String op, String outNames, Tensor[] outs, String inNames, Tensor... ins) {
        for (int i = 0; i < outs.length; i++) {
            if (outs[i] == null) continue;
            for (int j = i + 1; j < outs.length; j++)
                if (outs[j] != null && outs[i].overlaps(outs[j]))
                    throw shared(op, nameAt(outNames, i), outs[i], nameAt(outNames, j), outs[j]);
            for (int j = 0; j < ins.length; j++)
                if (ins[j] != null && outs[i].overlaps(ins[j])) throw shared(op, nameAt(outNames, i), outs[i], nameAt(inNames, j), ins[j]);
        }
    }

    /**
     * The i-th of a list of names ("out, a, b"), for a message: split only when one is needed (an op checks its
     * arguments on every call, and String.split on ", " compiles a regex each time: ~0.1 us of an op's host cost).
     */
    static String nameAt(String names, int i) {
        return names.split(", ")[i];
    }

    /** An output that may be its input element for element (the op runs in place) but must not overlap it otherwise. */
    static void sameOrApart(String op, String outName, Tensor out, String inName, Tensor in) {
        if (out.overlaps(in) && !(out.offset == in.offset && out.numel() == in.numel()))
            throw fail(op, outName + " " + out + " and " + inName + " " + in + " overlap partly; " + op
                    + " needs them to be the same elements (in place) or disjoint");
    }

    private static IllegalArgumentException shared(String op, String a, Tensor ta, String b, Tensor tb) {
        return fail(op, a + " " + ta + " and " + b + " " + tb + " share memory; " + op + " needs them disjoint");
    }

    static void finite(String op, String name, double v) {
        if (!Double.isFinite(v)) throw fail(op, name + " must be finite, got " + v);
    }

    static void positive(String op, String name, double v) {
        if (!(v > 0) || !Double.isFinite(v)) throw fail(op, name + " must be positive and finite, got " + v);
    }

    static void check(boolean cond, String op, String message) {
        if (!cond) throw fail(op, message);
    }

    private static String pattern(int[] e) {
        StringBuilder sb = new StringBuilder("[");
        for (int i = 0; i < e.length; i++) sb.append(i > 0 ? ", " : "").append(e[i] < 0 ? "*" : String.valueOf(e[i]));
        return sb.append(']').toString();
    }

    private static String labels(DType[] ds) {
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < ds.length; i++) sb.append(i > 0 ? " or " : "").append(ds[i].label());
        return sb.toString();
    }
}
