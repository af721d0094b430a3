package org.grpo4j.internal.bench;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.Tensor;

/**
 * One benchmark problem built on one backend: the tensors it owns, the body that runs it once, and the outputs the
 * correctness check compares (each with its tolerance).
 */
final class Instance implements AutoCloseable {

    /**
     * |device - reference| <= abs + relMax * max|reference| + rel * |reference|, per element. relMax scales with the
     * output's largest magnitude, for outputs whose small elements come from cancelling sums.
     */
    record Tol(double abs, double relMax, double rel) {
        /** Bit-identical (ops that move elements, casts: the CPU twin rounds exactly as the GPU). */
        static final Tol EXACT = new Tol(0, 0, 0);
        /** An fp32 result of an fp32 computation that may run in another order on the GPU. */
        static final Tol FP32 = new Tol(1e-6, 1e-5, 1e-4);
        /**
         * A bf16 result: both sides round an fp32 value once (RNE), so they differ by at most one bf16 ulp, which is
         * at most 2^-7 of the value, plus the fp32 difference before rounding.
         */
        static final Tol BF16 = new Tol(1e-6, 1e-4, 0x1p-7 + 1e-4);

        static Tol of(DType dt) { return dt == DType.BF16 ? BF16 : FP32; }
    }

    /** A custom comparison of a device instance with its reference (sampling: tokens are random, not equal). */
    interface Checker {
        Checks.Result check(Instance device, Instance reference);
    }

    record Out(Tensor tensor, Tol tol) {}

    final Data data;
    private final List<Tensor> owned = new ArrayList<>();
    final Map<String, Out> outs = new LinkedHashMap<>();
    private Runnable body;
    Checker checker;

    Instance(Data data) {
        this.data = data;
        data.register(this);
    }

    Backend be() { return data.backend(); }

    Tensor own(Tensor t) {
        owned.add(t);
        return t;
    }

    Tensor gauss(DType dt, double scale, int... shape) { return own(data.gauss(dt, scale, shape)); }

    Tensor positive(DType dt, double scale, int... shape) { return own(data.positive(dt, scale, shape)); }

    Tensor zeros(DType dt, int... shape) { return own(data.zeros(dt, shape)); }

    Tensor empty(DType dt, int... shape) { return own(data.empty(dt, shape)); }

    Tensor ints(int[] values, int... shape) { return own(data.ints(values, shape)); }

    /** Marks {@code t} as an output compared by the check. */
    Tensor out(String name, Tensor t, Tol tol) {
        outs.put(name, new Out(t, tol));
        return t;
    }

    Instance body(Runnable r) {
        this.body = r;
        return this;
    }

    /** Replaces the body by {@code f} of it (a body run in a backend mode, say). */
    Instance wrap(java.util.function.UnaryOperator<Runnable> f) {
        this.body = f.apply(body);
        return this;
    }

    void run() { body.run(); }

    /** Bytes of every tensor this instance owns. */
    long bytes() {
        long b = 0;
        for (Tensor t : owned) b += t.bytes();
        return b;
    }

    @Override
    public void close() {
        for (int i = owned.size() - 1; i >= 0; i--) owned.get(i).close();
        owned.clear();
    }
}
