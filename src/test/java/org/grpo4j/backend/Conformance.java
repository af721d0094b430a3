package org.grpo4j.backend;

import static org.junit.jupiter.api.Assertions.*;

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

    protected Tensor zeros(int... shape) { return track(be().zeros(DType.FP32, shape)); }

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

    /** |got - want| <= atol + rtol * |want| elementwise; NaN or infinity in got always fails. */
    public static void assertClose(String what, double[] want, float[] got, double atol, double rtol) {
        assertEquals(want.length, got.length, what + ": length");
        double worst = 0;
        int worstAt = -1;
        for (int i = 0; i < want.length; i++) {
            if (!Float.isFinite(got[i]))
                fail(what + ": element " + i + " is " + got[i] + " (want " + want[i] + ")");
            double err = Math.abs(got[i] - want[i]) - (atol + rtol * Math.abs(want[i]));
            if (err > worst) {
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

    /** Asserts an IllegalArgumentException whose message starts with "op: " and contains every fragment. */
    public static void assertBadCall(String op, Runnable call, String... fragments) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, call::run);
        assertTrue(e.getMessage().startsWith(op + ": "), "message should name " + op + ": " + e.getMessage());
        for (String f : fragments) assertTrue(e.getMessage().contains(f), "message should contain " + f + ": " + e.getMessage());
    }
}
