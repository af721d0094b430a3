package org.grpo4j.tools;

import static org.junit.platform.engine.discovery.DiscoverySelectors.selectPackage;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.grpo4j.backend.Backend;
import org.grpo4j.backend.Backends;
import org.grpo4j.backend.CudaBackend;
import org.grpo4j.backend.CudaRuntime;
import org.grpo4j.backend.DType;
import org.grpo4j.backend.Tensor;
import org.junit.platform.engine.TestExecutionResult;
import org.junit.platform.engine.discovery.ClassNameFilter;
import org.junit.platform.launcher.Launcher;
import org.junit.platform.launcher.LauncherDiscoveryRequest;
import org.junit.platform.launcher.TagFilter;
import org.junit.platform.launcher.TestExecutionListener;
import org.junit.platform.launcher.TestIdentifier;
import org.junit.platform.launcher.core.LauncherDiscoveryRequestBuilder;
import org.junit.platform.launcher.core.LauncherFactory;

/**
 * {@code tools/gpu-check}: runs every test tagged "gpu", then a smoke benchmark of the kernels, and prints one
 * summary table. Exit status 0 when no test failed. Without a GPU the tests are reported as skipped.
 */
public final class GpuCheck {

    public static void main(String[] args) {
        CudaRuntime.Availability a = CudaRuntime.probe();
        System.out.println("gpu-check: cuda " + (a.available() ? a.deviceCount() + " device(s)" : "unavailable: " + a.reason()));
        for (CudaRuntime.Device d : CudaRuntime.devices())
            System.out.printf("gpu-check: device %d %s, %.1f GiB, %d SMs, cc %s, driver CUDA %s, runtime %s%n", d.index(), d.name(),
                    d.totalMemory() / (double) (1L << 30), d.smCount(), d.computeCapability(), CudaRuntime.driverVersion(),
                    CudaRuntime.runtimeVersion());
        for (CudaRuntime.LibraryStatus l : CudaRuntime.libraries())
            System.out.println("gpu-check: " + l.name() + (l.loads() ? " loads: " : " does not load: ") + l.detail());

        Map<String, int[]> perClass = new TreeMap<>(); // passed, failed, skipped
        List<String> failures = new ArrayList<>();
        LauncherDiscoveryRequest req = LauncherDiscoveryRequestBuilder.request()
                .selectors(selectPackage("org.grpo4j"))
                .filters(TagFilter.includeTags("gpu"), ClassNameFilter.includeClassNamePatterns(".*Test.*"))
                .build();
        Launcher launcher = LauncherFactory.create();
        launcher.execute(req, new TestExecutionListener() {
            @Override
            public void executionSkipped(TestIdentifier id, String reason) {
                if (id.isTest() || id.isContainer()) count(id, 2, reason);
            }

            @Override
            public void executionFinished(TestIdentifier id, TestExecutionResult r) {
                if (!id.isTest()) return;
                switch (r.getStatus()) {
                    case SUCCESSFUL -> count(id, 0, null);
                    case ABORTED -> count(id, 2, r.getThrowable().map(Throwable::getMessage).orElse(""));
                    case FAILED -> {
                        count(id, 1, null);
                        failures.add(id.getDisplayName() + " [" + id.getUniqueId() + "]: "
                                + r.getThrowable().map(Throwable::toString).orElse("?"));
                    }
                }
            }

            private void count(TestIdentifier id, int slot, String reason) {
                String key = shortName(id.getUniqueId());
                perClass.computeIfAbsent(key, k -> new int[3])[slot]++;
                if (reason != null && slot == 2 && !reasons.containsKey(key)) reasons.put(key, reason);
            }
        });

        List<String[]> bench = a.available() ? benchmark() : List.of();

        System.out.println();
        System.out.println("| check | passed | failed | skipped | note |");
        System.out.println("|---|---|---|---|---|");
        int failed = 0;
        for (var e : perClass.entrySet()) {
            int[] c = e.getValue();
            failed += c[1];
            System.out.printf("| %s | %d | %d | %d | %s |%n", e.getKey(), c[0], c[1], c[2], reasons.getOrDefault(e.getKey(), ""));
        }
        if (!bench.isEmpty()) {
            System.out.println();
            System.out.println("| kernel | elements | time (ms) | GB/s |");
            System.out.println("|---|---|---|---|");
            for (String[] row : bench) System.out.println("| " + String.join(" | ", row) + " |");
        } else {
            System.out.println();
            System.out.println("kernel benchmark: skipped (no CUDA device)");
        }
        for (String f : failures) System.out.println("FAILED " + f);
        System.exit(failed == 0 ? 0 : 1);
    }

    static final Map<String, String> reasons = new TreeMap<>();

    static String shortName(String uniqueId) {
        StringBuilder sb = new StringBuilder();
        java.util.regex.Matcher m = java.util.regex.Pattern.compile("\\[(class|nested-class):([\\w.$]+)\\]").matcher(uniqueId);
        while (m.find()) {
            String n = m.group(2);
            sb.append(sb.length() > 0 ? "." : "").append(n.substring(n.lastIndexOf('.') + 1));
        }
        return sb.length() == 0 ? uniqueId : sb.toString();
    }

    /** Memory-bound smoke benchmark: bytes moved / event time, median of 20 launches after 3 warm-ups. */
    static List<String[]> benchmark() {
        List<String[]> rows = new ArrayList<>();
        try (Backend be0 = Backends.open("cuda:0")) {
            CudaBackend be = (CudaBackend) be0;
            int n = 1 << 28; // 256 Mi elements = 1 GiB fp32
            try (Tensor f = be.empty(DType.FP32, n); Tensor h = be.empty(DType.BF16, n)) {
                rows.add(time(be, "fill fp32", n, 4L * n, () -> be.fill(f, 1.5)));
                rows.add(time(be, "scale fp32", n, 8L * n, () -> be.scale(f, 0.999f)));
                rows.add(time(be, "cast fp32->bf16", n, 6L * n, () -> be.cast(h, f)));
                rows.add(time(be, "cast bf16->fp32", n, 6L * n, () -> be.cast(f, h)));
                rows.add(time(be, "copy fp32 (cudaMemcpy d2d)", n, 8L * n, () -> be.copy(f.view(0, n / 2), f.view(n / 2, n / 2))));
            }
        }
        return rows;
    }

    static String[] time(CudaBackend be, String name, int n, long bytes, Runnable op) {
        for (int i = 0; i < 3; i++) op.run();
        double[] ms = new double[20];
        try (CudaBackend.Event a = be.newEvent(); CudaBackend.Event b = be.newEvent()) {
            for (int i = 0; i < ms.length; i++) {
                a.record();
                op.run();
                b.record();
                b.synchronize();
                ms[i] = b.elapsedSince(a);
            }
        }
        java.util.Arrays.sort(ms);
        double med = ms[ms.length / 2];
        return new String[] {name, String.valueOf(n), String.format("%.3f", med), String.format("%.0f", bytes / (med * 1e6))};
    }
}
