package org.grpo4j.internal.backend;

import static org.junit.jupiter.api.Assertions.*;

import java.util.LinkedHashMap;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.function.ToDoubleFunction;

/**
 * Shared machinery of the conformance suite: random inputs (never zeros), poisoned outputs, tolerance checks where NaN
 * never passes, and central finite differences in float64.
 */
public abstract class Conformance {

    /** The backend under test (CPU, or CUDA under the gpu tag). */
    protected abstract Backend be();

    /** Skips the test (with a reason naming the op) when the backend does not implement it yet. */
    protected Backend be(String op) {
        Backend b = be();
        TestBackends.assumeOp(b, op);
        return b;
    }

    // ---- inputs -------------------------------------------------------------------------------------------------

    /** Gaussian values scaled by {@code scale}, with magnitude at least 1e-3 (never zero). */
    public static double[] randn(SplittableRandom r, int n, double scale) {
        double[] a = new double[n];
        for (int i = 0; i < n; i++) {
            double x = r.nextGaussian() * scale;
            if (Math.abs(x) < 1e-3 * scale) x = Math.copySign(1e-3 * scale, x == 0 ? 1 : x);
            a[i] = (float) x; // exactly representable in fp32, so the float64 reference sees the same inputs
        }
        return a;
    }

    public static float[] f32(double[] a) {
        float[] f = new float[a.length];
        for (int i = 0; i < a.length; i++) f[i] = (float) a[i];
        return f;
    }

    public static double[] f64(float[] a) {
        double[] d = new double[a.length];
        for (int i = 0; i < a.length; i++) d[i] = a[i];
        return d;
    }

    private final java.util.List<Tensor> allocated = new java.util.ArrayList<>();

    /** Tensors made through these helpers are freed after each test. */
    protected Tensor track(Tensor t) {
        allocated.add(t);
        return t;
    }

    @org.junit.jupiter.api.AfterEach
    void freeTensors() {
        for (Tensor t : allocated) t.close();
        allocated.clear();
    }

    protected Tensor up(double[] a, int... shape) { return track(be().upload(f32(a), shape)); }

    protected Tensor up(int[] a, int... shape) { return track(be().upload(a, shape)); }

    /** bf16-representable values (randnBf16) as a bf16 tensor of {@code b}. */
    static Tensor uploadBf16(Backend b, double[] values, int... shape) {
        short[] bits = new short[values.length];
        for (int i = 0; i < bits.length; i++) bits[i] = Bf16.fromFloat((float) values[i]);
        return b.uploadBf16(bits, shape);
    }

    protected Tensor zeros(int... shape) { return track(be().zeros(DType.FP32, shape)); }

    protected Tensor zerosInt(int... shape) { return track(be().zeros(DType.INT32, shape)); }

    /** An fp32 tensor filled with NaN, to prove the op writes every element. */
    protected Tensor poisoned(int... shape) {
        Tensor t = track(be().empty(DType.FP32, shape));
        be().fill(t, Double.NaN);
        return t;
    }

    protected Tensor poisonedInt(int... shape) {
        Tensor t = track(be().empty(DType.INT32, shape));
        be().fill(t, -7);
        return t;
    }

    // ---- checks -------------------------------------------------------------------------------------------------

    /**
     * |got - want| <= atol + rtol * |want| elementwise; NaN or infinity in got always fails, and so does one in want
     * (a broken reference: every comparison with NaN is false, so it passed unseen).
     */
    public static void assertClose(String what, double[] want, float[] got, double atol, double rtol) {
        assertEquals(want.length, got.length, what + ": length");
        double worst = 0;
        int worstAt = -1;
        for (int i = 0; i < want.length; i++) {
            if (!Float.isFinite(got[i]))
                fail(what + ": element " + i + " is " + got[i] + " (want " + want[i] + ")");
            if (!Double.isFinite(want[i]))
                fail(what + ": element " + i + ": the expected value is " + want[i] + " (got " + got[i] + ")");
            double err = Math.abs(got[i] - want[i]) - (atol + rtol * Math.abs(want[i]));
            if (!(err <= worst)) { // (a NaN tolerance fails too)
                worst = err;
                worstAt = i;
            }
        }
        if (worstAt >= 0) {
            int i = worstAt;
            fail(what + ": element " + i + " got " + got[i] + " want " + want[i] + " (|diff| " + Math.abs(got[i] - want[i])
                    + " > atol " + atol + " + rtol " + rtol + " * |want|)");
        }
    }

    /**
     * Central finite differences of a float64 scalar function at x, for the coordinates in {@code idx}
     * (all when null): (f(x + h) - f(x - h)) / 2h with h = 1e-5 * max(1, |x_i|).
     */
    public static double[] fdGrad(ToDoubleFunction<double[]> f, double[] x, int[] idx) {
        double[] g = new double[x.length];
        double[] xx = x.clone();
        int count = idx == null ? x.length : idx.length;
        for (int c = 0; c < count; c++) {
            int i = idx == null ? c : idx[c];
            double h = 1e-5 * Math.max(1, Math.abs(x[i]));
            xx[i] = x[i] + h;
            double fp = f.applyAsDouble(xx);
            xx[i] = x[i] - h;
            double fm = f.applyAsDouble(xx);
            xx[i] = x[i];
            g[i] = (fp - fm) / (2 * h);
        }
        return g;
    }

    /** Compares a backend gradient to finite differences on the given coordinates (all when null). */
    public static void assertGradClose(String what, double[] fd, float[] got, int[] idx, double atol, double rtol) {
        if (idx == null) {
            assertClose(what, fd, got, atol, rtol);
            return;
        }
        double[] w = new double[idx.length];
        float[] g = new float[idx.length];
        for (int c = 0; c < idx.length; c++) {
            w[c] = fd[idx[c]];
            g[c] = got[idx[c]];
        }
        assertClose(what, w, g, atol, rtol);
    }

    /** Up to {@code k} distinct coordinates of [0, n) (all of them when n <= k). */
    public static int[] someIndices(SplittableRandom r, int n, int k) {
        if (n <= k) return null;
        return r.ints(0, n).distinct().limit(k).sorted().toArray();
    }

    public static double dot(double[] a, double[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) s += a[i] * b[i];
        return s;
    }

    // ---- bf16 (mixed-precision) cases -----------------------------------------------------------------------------

    /** 2^-8: half a bf16 ulp relative to the value (bf16 keeps 8 significant bits). */
    public static final double BF16_HALF_ULP = 0x1p-8;

    /** Each value rounded to the nearest bf16 (values are fp32 already, as {@link #randn} makes them). */
    public static double[] roundBf16(double[] a) {
        double[] r = new double[a.length];
        for (int i = 0; i < a.length; i++) r[i] = Bf16.round((float) a[i]);
        return r;
    }

    /** {@link #randn} rounded to bf16: generated in fp32, so a float64 reference sees exactly the bf16 values. */
    public static double[] randnBf16(SplittableRandom r, int n, double scale) { return roundBf16(randn(r, n, scale)); }

    /** The spacing of bf16 values around |x|: 2^(e - 7) for |x| in [2^e, 2^(e+1)) (2^-133 below the normal range). */
    public static double bf16Ulp(double x) {
        return Math.scalb(1.0, Math.max(Math.getExponent((float) x), -126) - 7);
    }

    /**
     * Tolerance {atol, rtol} of a bf16 output against float64, from the op's fp32 tolerance: the backend computes y
     * with |y - want| <= atol + rtol |want| and rounds it once, |RNE(y) - y| <= 2^-8 |y| <= 2^-8 (|want| + atol +
     * rtol |want|), so |RNE(y) - want| <= atol (1 + 2^-8) + (rtol (1 + 2^-8) + 2^-8) |want|.
     */
    public static double[] bf16Tolerance(double atol, double rtol) {
        return new double[] {atol * (1 + BF16_HALF_ULP), rtol * (1 + BF16_HALF_ULP) + BF16_HALF_ULP};
    }

    /**
     * Another backend's result against the CPU's on the same inputs, where the op's fp32 tolerance (atol, rtol)
     * bounds each backend's error against the exact value y. fp32 outputs: |got - cpu| <= 2 (atol + rtol |y|).
     * bf16 outputs, each the RNE of that backend's fp32 value: two half-ulps more, 1/2 ulp(v) + 1/2 ulp(v') <=
     * ulp_bf16(max(|got|, |cpu|)) since ulp(v) <= ulp(RNE(v)); the two may legitimately round an fp32 value that
     * straddles a rounding boundary to neighbours. |y| is bounded by (M (1 + 2^-8) + atol) / (1 - rtol) with
     * M = max(|got|, |cpu|). An exact op (atol = rtol = 0) rounds the same value on both: equality is required.
     * NaN or infinity in got never passes, nor in cpu (an infinite one made the tolerance infinite or NaN).
     */
    public static void assertCloseToCpu(String what, float[] cpu, float[] got, boolean bf16, double atol, double rtol) {
        assertEquals(cpu.length, got.length, what + ": length");
        boolean exact = atol == 0 && rtol == 0;
        for (int i = 0; i < got.length; i++) {
            if (!Float.isFinite(got[i])) fail(what + ": element " + i + " is " + got[i] + " (cpu " + cpu[i] + ")");
            if (!Float.isFinite(cpu[i])) fail(what + ": element " + i + ": the cpu's value is " + cpu[i] + " (got " + got[i] + ")");
            double m = Math.max(Math.abs(got[i]), Math.abs(cpu[i]));
            double y = (m * (bf16 ? 1 + BF16_HALF_ULP : 1) + atol) / (1 - rtol);
            double tol = exact ? 0 : 2 * (atol + rtol * y) + (bf16 ? bf16Ulp(m) : 0);
            if (!(Math.abs(got[i] - cpu[i]) <= tol))
                fail(what + ": element " + i + " got " + got[i] + ", cpu " + cpu[i] + " (|diff| " + Math.abs(got[i] - cpu[i])
                        + " > " + tol + (bf16 ? " = 2 (atol + rtol |y|) + 1 bf16 ulp)" : " = 2 (atol + rtol |y|))"));
        }
    }

    /** Named tensors of a {@link Mixed} case, as created on one backend. */
    @FunctionalInterface
    public interface Args {
        Tensor get(String name);
    }

    /** An op call (or a short sequence of calls) on named tensors. */
    @FunctionalInterface
    public interface Call {
        void on(Backend be, Args t);
    }

    /** A mixed-precision case on the backend under test; see {@link Mixed}. */
    protected Mixed mixed(String what) { return new Mixed(what); }

    /**
     * One mixed-precision case: named inputs (bf16 values are exact bf16, so references see what the backend sees),
     * NaN-poisoned outputs, and a {@link Call} run on the backend under test. Then:
     * <ul>
     * <li>on the CPU, {@link #run} checks bitwise that every bf16 tensor equals RNE of the same call on fp32 twins
     * (bf16 tensors replaced by fp32 ones holding the widened values) and every fp32 / int32 tensor equals the twin's:
     * that is the contract;</li>
     * <li>{@link #expect} checks an output against a float64 reference with the op's fp32 tolerance, widened by
     * {@link #bf16Tolerance} for a bf16 output; on any backend other than {@link TestBackends#cpu()} it also compares
     * the output with that CPU backend's result of the same call on the same (bf16) inputs
     * ({@link #assertCloseToCpu}).</li>
     * </ul>
     * A backend that throws UnsupportedOperationException (bf16 variant not ported yet) skips the test.
     */
    protected final class Mixed {
        private record Spec(DType dtype, int[] shape, double[] values, int[] ints) {}

        private final String what;
        private final Map<String, Spec> specs = new LinkedHashMap<>();
        private Map<String, Object> got, cpuSame;

        private Mixed(String what) { this.what = what; }

        /** A bf16 tensor holding {@code values}, which must be bf16 values already (see {@link #randnBf16}). */
        public Mixed bf16(String name, double[] values, int... shape) {
            for (int i = 0; i < values.length; i++)
                if (Bf16.round((float) values[i]) != values[i])
                    throw new IllegalArgumentException(name + "[" + i + "] = " + values[i] + " is not a bf16 value");
            return add(name, new Spec(DType.BF16, shape, values, null));
        }

        public Mixed fp32(String name, double[] values, int... shape) {
            return add(name, new Spec(DType.FP32, shape, f64(f32(values)), null));
        }

        /** fp32 when {@code dtype} is FP32, bf16 when BF16 (values must then be bf16 values). */
        public Mixed in(DType dtype, String name, double[] values, int... shape) {
            return dtype == DType.BF16 ? bf16(name, values, shape) : fp32(name, values, shape);
        }

        public Mixed ints(String name, int[] values, int... shape) {
            return add(name, new Spec(DType.INT32, shape, null, values.clone()));
        }

        /** An output, poisoned first: NaN for fp32 and bf16, -7 for int32. */
        public Mixed out(DType dtype, String name, int... shape) {
            return add(name, new Spec(dtype, shape, null, null));
        }

        private Mixed add(String name, Spec s) {
            if (specs.putIfAbsent(name, s) != null) throw new IllegalArgumentException("duplicate tensor " + name);
            if (s.values != null || s.ints != null) {
                long n = Tensor.numel(s.shape);
                long len = s.values != null ? s.values.length : s.ints.length;
                if (n != len) throw new IllegalArgumentException(name + ": " + len + " values for shape " + java.util.Arrays.toString(s.shape));
            }
            return this;
        }

        /**
         * Runs the steps in order, each normally one op call (see the class comment for what is checked here). On the
         * fp32 twins, every tensor declared bf16 is rounded to bf16 after each step, as storing it in bf16 does: the
         * contract is per op (a backward reads the rounded output of its forward).
         */
        public Mixed run(Call... steps) {
            Backend b = be();
            Map<String, Tensor> mine = build(b, false);
            try {
                for (Call c : steps) c.on(b, name -> lookup(mine, name));
            } catch (UnsupportedOperationException e) {
                org.junit.jupiter.api.Assumptions.abort("skipped: " + e.getMessage());
            }
            got = download(mine);
            Backend cpu = TestBackends.cpu();
            if (b instanceof CpuBackend) {
                Map<String, Tensor> twins = build(b, true);
                for (Call c : steps) {
                    c.on(b, name -> lookup(twins, name));
                    for (Map.Entry<String, Spec> e : specs.entrySet()) {
                        if (e.getValue().dtype != DType.BF16) continue;
                        Tensor t = twins.get(e.getKey());
                        float[] f = t.toFloats();
                        for (int i = 0; i < f.length; i++) f[i] = Bf16.round(f[i]);
                        b.copyFromHost(t, f);
                    }
                }
                Map<String, Object> want = download(twins);
                for (Map.Entry<String, Spec> e : specs.entrySet()) checkTwin(e.getKey(), e.getValue().dtype, got.get(e.getKey()), want.get(e.getKey()));
            }
            if (b != cpu) {
                Map<String, Tensor> same = build(cpu, false);
                for (Call c : steps) c.on(cpu, name -> lookup(same, name));
                cpuSame = download(same);
            }
            return this;
        }

        /** A tensor's contents after {@link #run} (bf16 widened exactly). */
        public float[] get(String name) { return floats(got, name); }

        public int[] ints(String name) { return (int[]) got.get(name); }

        /** The output's dtype as declared. */
        public DType dtype(String name) { return specs.get(name).dtype; }

        public void expect(String name, double[] want, double atol, double rtol) { expect(name, want, null, atol, rtol); }

        /** Checks output {@code name} (only at {@code idx} when not null) against float64; see the class comment. */
        public void expect(String name, double[] want, int[] idx, double atol, double rtol) {
            boolean bf = dtype(name) == DType.BF16;
            double[] tol = bf ? bf16Tolerance(atol, rtol) : new double[] {atol, rtol};
            String label = what + " " + name + " (" + dtype(name).label() + ")";
            assertGradClose(label, want, get(name), idx, tol[0], tol[1]);
            if (cpuSame != null) assertCloseToCpu(label + " vs cpu", floats(cpuSame, name), get(name), bf, atol, rtol);
        }

        /**
         * As {@link #expect(String, double[], double, double)} with a per-element atol (attention, issue 12: the
         * backend's documented extra error of bf16 intermediates, {@code AttentionBounds}): against float64 with
         * bf16(atol[i], rtol) or (atol[i], rtol), and against the CPU with 2 (atol[i] + rtol |y|) (+ 1 bf16 ulp).
         */
        public void expect(String name, double[] want, double[] atol, double rtol) {
            boolean bf = dtype(name) == DType.BF16;
            String label = what + " " + name + " (" + dtype(name).label() + ")";
            float[] g = get(name);
            assertEquals(want.length, g.length, label + ": length");
            for (int i = 0; i < want.length; i++) {
                double[] tol = bf ? bf16Tolerance(atol[i], rtol) : new double[] {atol[i], rtol};
                if (!Float.isFinite(g[i])) fail(label + ": element " + i + " is " + g[i] + " (want " + want[i] + ")");
                if (!Double.isFinite(want[i])) fail(label + ": element " + i + ": the expected value is " + want[i] + " (got " + g[i] + ")");
                if (!(Math.abs(g[i] - want[i]) <= tol[0] + tol[1] * Math.abs(want[i])))
                    fail(label + ": element " + i + " got " + g[i] + " want " + want[i] + " (|diff| " + Math.abs(g[i] - want[i])
                            + " > atol " + tol[0] + " + rtol " + tol[1] + " * |want|)");
            }
            if (cpuSame == null) return;
            float[] c = floats(cpuSame, name);
            for (int i = 0; i < g.length; i++)
                assertCloseToCpu(label + " vs cpu, element " + i, new float[] {c[i]}, new float[] {g[i]}, bf, atol[i], rtol);
        }

        private Tensor lookup(Map<String, Tensor> m, String name) {
            Tensor t = m.get(name);
            if (t == null) throw new IllegalArgumentException("no tensor named " + name + " in " + what);
            return t;
        }

        private Map<String, Tensor> build(Backend b, boolean fp32Twins) {
            Map<String, Tensor> m = new LinkedHashMap<>();
            for (Map.Entry<String, Spec> e : specs.entrySet()) {
                Spec s = e.getValue();
                DType d = fp32Twins && s.dtype == DType.BF16 ? DType.FP32 : s.dtype;
                Tensor t;
                if (s.ints != null) t = b.upload(s.ints, s.shape);
                else if (s.values == null) {
                    t = b.empty(d, s.shape);
                    b.fill(t, d == DType.INT32 ? -7 : Double.NaN);
                } else if (d == DType.BF16) {
                    t = uploadBf16(b, s.values, s.shape);
                } else t = b.upload(f32(s.values), s.shape);
                m.put(e.getKey(), track(t));
            }
            return m;
        }

        private Map<String, Object> download(Map<String, Tensor> m) {
            Map<String, Object> r = new LinkedHashMap<>();
            for (Map.Entry<String, Tensor> e : m.entrySet()) {
                Tensor t = e.getValue();
                r.put(e.getKey(), switch (t.dtype()) {
                    case FP32 -> t.toFloats();
                    case BF16 -> t.toBf16Bits();
                    case INT32 -> t.toInts();
                    default -> throw new IllegalStateException(t.toString());
                });
            }
            return r;
        }

        private float[] floats(Map<String, Object> m, String name) {
            Object o = m.get(name);
            if (o instanceof float[] f) return f;
            if (o instanceof short[] h) {
                float[] f = new float[h.length];
                for (int i = 0; i < h.length; i++) f[i] = Bf16.toFloat(h[i]);
                return f;
            }
            throw new IllegalArgumentException(name + " is not a float tensor in " + what);
        }

        private void checkTwin(String name, DType dtype, Object mine, Object twin) {
            String label = what + " " + name + " (" + dtype.label() + ") vs RNE(cpu fp32 twin)";
            if (dtype == DType.INT32) {
                assertArrayEquals((int[]) twin, (int[]) mine, label);
            } else if (dtype == DType.FP32) {
                float[] a = (float[]) mine, b = (float[]) twin;
                for (int i = 0; i < a.length; i++)
                    if (Float.floatToIntBits(a[i]) != Float.floatToIntBits(b[i]))
                        fail(label + ": element " + i + " is " + a[i] + ", the fp32 twin gives " + b[i]);
            } else {
                short[] a = (short[]) mine;
                float[] b = (float[]) twin;
                for (int i = 0; i < a.length; i++)
                    if (a[i] != Bf16.fromFloat(b[i]))
                        fail(label + ": element " + i + " is " + Bf16.toFloat(a[i]) + " (bits 0x" + Integer.toHexString(a[i] & 0xFFFF)
                                + "), RNE of the fp32 twin's " + b[i] + " is " + Bf16.round(b[i]));
            }
        }
    }

    /** Asserts an IllegalArgumentException whose message starts with "op: " and contains every fragment. */
    public static void assertBadCall(String op, Runnable call, String... fragments) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, call::run);
        assertTrue(e.getMessage().startsWith(op + ": "), "message should name " + op + ": " + e.getMessage());
        for (String f : fragments) assertTrue(e.getMessage().contains(f), "message should contain " + f + ": " + e.getMessage());
    }
}
