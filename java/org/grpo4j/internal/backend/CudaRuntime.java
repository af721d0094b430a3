package org.grpo4j.internal.backend;

import java.util.ArrayList;
import java.util.List;
import org.grpo4j.bindings.CudaNative;

/**
 * Loads grpo4j's JNI library once and answers "can CUDA run here, and if not, why not" without stack traces.
 * Also reports driver/runtime versions, devices, and whether cuBLAS, cuBLASLt and NCCL load.
 */
public final class CudaRuntime {
    private CudaRuntime() {}

    /** Resource path of the JNI library inside the jar (JavaCPP layout). */
    static final String LIBRARY_RESOURCE = "org/grpo4j/bindings/linux-x86_64/libjniCudaNative.so";

    /** Whether this jar holds the JNI library of the CUDA kernels (built with nvcc), whether or not it loads here. */
    public static boolean libraryBuilt() { return CudaRuntime.class.getClassLoader().getResource(LIBRARY_RESOURCE) != null; }

    /** Outcome of probing for CUDA. */
    public record Availability(boolean libraryLoaded, boolean available, int deviceCount, String reason) {}

    /** One GPU. */
    public record Device(int index, String name, long totalMemory, int smCount, int major, int minor) {
        public String computeCapability() { return major + "." + minor; }
    }

    /** Whether a CUDA library loads, and the reason when it does not. */
    public record LibraryStatus(String name, boolean loads, String detail) {}

    private static volatile Availability cached;
    private static String loadError;
    private static volatile boolean loaded; // (volatile: JvmHalt reads it without the class's lock, which a hung probe may hold)

    /** Loads the JNI library if it was built; never throws. */
    static synchronized boolean loadLibrary() {
        if (loaded) return true;
        if (loadError != null) return false;
        String os = System.getProperty("os.name", "").toLowerCase(java.util.Locale.ROOT);
        String arch = System.getProperty("os.arch", "");
        if (!os.contains("linux") || !(arch.equals("amd64") || arch.equals("x86_64"))) {
            loadError = "no CUDA build for " + os + "/" + arch + " (grpo4j ships linux-x86_64 kernels)";
            return false;
        }
        if (CudaRuntime.class.getClassLoader().getResource(LIBRARY_RESOURCE) == null) {
            loadError = "the CUDA backend was not built into this jar (no nvcc when grpo4j was compiled, or -Dgrpo4j.noCuda)";
            return false;
        }
        try {
            CudaNative.load();
            loaded = true;
            return true;
        } catch (Throwable t) {
            loadError = describeLinkError(t);
            return false;
        }
    }

    /** Whether the JNI library is loaded (by {@link #probe} or a backend). */
    public static boolean libraryLoaded() { return loaded; }

    /**
     * Ends the process with {@code status} at once through the JNI library ({@code _exit}: no atexit handlers, so not
     * the CUDA runtime's teardown, which can wait for a kernel that never ends), where the library is loaded; does
     * nothing where it is not (the caller then halts the JVM its own way).
     */
    public static void exitNow(int status) {
        if (libraryLoaded()) CudaNative.g4_exit_now(status);
    }

    /** Turns a JavaCPP/JNI load failure into one line, e.g. "libcudart.so.13 not found (...)". */
    static String describeLinkError(Throwable t) {
        StringBuilder all = new StringBuilder();
        for (Throwable c = t; c != null; c = c.getCause()) all.append(' ').append(c.getMessage());
        String m = all.toString();
        java.util.regex.Matcher so = java.util.regex.Pattern.compile("(lib[\\w.+-]+\\.so[\\w.]*): cannot open shared object file").matcher(m);
        if (so.find()) {
            String lib = so.group(1);
            if (lib.startsWith("libcuda.so")) return lib + " not found (no NVIDIA driver)";
            return lib + " not found (install the CUDA 13 libraries or add their folder to LD_LIBRARY_PATH)";
        }
        String first = t.getMessage() == null ? t.getClass().getSimpleName() : t.getMessage();
        return first.lines().findFirst().orElse(first).trim();
    }

    /** Probes once (cached): library, driver, devices. */
    public static Availability probe() {
        Availability a = cached;
        if (a == null) {
            synchronized (CudaRuntime.class) {
                if (cached == null) cached = doProbe();
                a = cached;
            }
        }
        return a;
    }

    private static Availability doProbe() {
        if (!loadLibrary()) return new Availability(false, false, 0, loadError);
        byte[] err = new byte[512];
        if (CudaNative.g4_dlopen_probe("libcuda.so.1", err, err.length) != 0)
            return new Availability(true, false, 0, "libcuda.so.1 not found (no NVIDIA driver)");
        int[] n = new int[1];
        int e = CudaNative.g4_device_count(n);
        if (e != 0) {
            String why = CudaNative.g4_error_string(e);
            if (e == 35) why += "; CUDA 13 needs an NVIDIA driver >= R580";
            return new Availability(true, false, 0, "cudaGetDeviceCount: " + why);
        }
        if (n[0] == 0) return new Availability(true, false, 0, "no CUDA device visible");
        List<Device> devs = new ArrayList<>();
        try {
            for (int d = 0; d < n[0]; d++) devs.add(device(d));
        } catch (CudaException ex) {
            return new Availability(true, false, 0, ex.getMessage());
        }
        String old = tooOld(devs);
        if (old != null) return new Availability(true, false, 0, old);
        return new Availability(true, true, n[0], "");
    }

    /** The oldest compute capability grpo4j's kernels run on: they are built for sm_80 and sm_90 (+ compute_90 PTX). */
    static final int MIN_MAJOR = 8;

    /**
     * Why these devices cannot run grpo4j's kernels (one below compute capability 8.0: no kernel image for it, and
     * the bf16 tensor-core MMAs need Ampere), or null when they all can.
     */
    static String tooOld(List<Device> devs) {
        for (Device d : devs)
            if (d.major() < MIN_MAJOR)
                return "cuda:" + d.index() + " (" + d.name() + ") has compute capability " + d.computeCapability() + "; grpo4j's kernels need "
                        + MIN_MAJOR + ".0 or newer (Ampere, Ada, Hopper, Blackwell)" + (devs.size() > 1 ? "; CUDA_VISIBLE_DEVICES can leave it out" : "");
        return null;
    }

    private static Device device(int d) {
        byte[] name = new byte[256];
        long[] mem = new long[1];
        int[] sms = new int[1], major = new int[1], minor = new int[1];
        check(CudaNative.g4_device_props(d, name, name.length, mem, sms, major, minor), "cudaGetDeviceProperties(" + d + ")");
        int len = 0;
        while (len < name.length && name[len] != 0) len++;
        return new Device(d, new String(name, 0, len, java.nio.charset.StandardCharsets.UTF_8), mem[0], sms[0], major[0], minor[0]);
    }

    /** Throws {@link CudaException} when {@code code} is not cudaSuccess. */
    static void check(int code, String call) {
        if (code != 0)
            throw new CudaException(call, code, CudaNative.g4_error_name(code), CudaNative.g4_error_string(code));
    }

    /** CUDA runtime version as "13.0", or null when the library is not loaded. */
    public static String runtimeVersion() {
        if (!loadLibrary()) return null;
        int[] v = new int[1];
        if (CudaNative.g4_runtime_version(v) != 0) return null;
        return formatVersion(v[0]);
    }

    /** Highest CUDA version the installed driver supports, as "13.1", or null without a driver. */
    public static String driverVersion() {
        if (!loadLibrary()) return null;
        byte[] err = new byte[512];
        if (CudaNative.g4_dlopen_probe("libcuda.so.1", err, err.length) != 0) return null;
        int[] v = new int[1];
        if (CudaNative.g4_driver_version(v) != 0 || v[0] == 0) return null;
        return formatVersion(v[0]);
    }

    static String formatVersion(int v) { return (v / 1000) + "." + (v % 1000) / 10; }

    /** Where Linux's NVIDIA kernel module reports its release (nvidia-smi's "Driver Version"). */
    static final java.nio.file.Path NVIDIA_VERSION_FILE = java.nio.file.Path.of("/proc/driver/nvidia/version");

    /**
     * The driver's own release, as nvidia-smi prints it ("580.95.05"), read from {@link #NVIDIA_VERSION_FILE}; null
     * where that file is absent or unreadable (no NVIDIA kernel module, another OS, an emulated device).
     */
    public static String driverRelease() {
        try {
            return parseDriverRelease(java.nio.file.Files.readString(NVIDIA_VERSION_FILE, java.nio.charset.StandardCharsets.ISO_8859_1));
        } catch (java.io.IOException | RuntimeException e) {
            return null;
        }
    }

    private static final java.util.regex.Pattern NVRM = java.util.regex.Pattern.compile(
            "NVRM version:[^\\n]*?\\s(\\d{2,4}\\.\\d{1,3}(?:\\.\\d{1,3})?)(?=\\s|$)");

    /**
     * The release in the text of /proc/driver/nvidia/version: its "NVRM version:" line names the module ("NVIDIA UNIX
     * x86_64 Kernel Module", "NVIDIA UNIX Open Kernel Module for x86_64"), then the release, then the build date.
     */
    static String parseDriverRelease(String text) {
        java.util.regex.Matcher m = NVRM.matcher(text);
        return m.find() ? m.group(1) : null;
    }

    /**
     * The driver as benchmark reports name it: "580.95.05 (supports CUDA 13.0)", the release alone or the CUDA
     * version alone where only one is known, "unknown" where neither is.
     */
    public static String driverLabel() {
        String release = driverRelease(), cuda = driverVersion();
        if (release == null) return cuda == null ? "unknown" : "supports CUDA " + cuda;
        return cuda == null ? release : release + " (supports CUDA " + cuda + ")";
    }

    /** The visible devices (empty when CUDA is unavailable). */
    public static List<Device> devices() {
        List<Device> out = new ArrayList<>();
        Availability a = probe();
        if (!a.available()) return out;
        for (int d = 0; d < a.deviceCount(); d++) out.add(device(d));
        return out;
    }

    /** Whether cuBLAS, cuBLASLt and NCCL load: the shared library itself, then the JavaCPP preset's JNI wrapper. */
    public static List<LibraryStatus> libraries() {
        List<LibraryStatus> out = new ArrayList<>();
        library("cudart", "libcudart.so.13", "org.bytedeco.cuda.global.cudart"); // loaded first by the others; keeps its reason
        out.add(library("cuBLAS", "libcublas.so.13", "org.bytedeco.cuda.global.cublas"));
        out.add(library("cuBLASLt", "libcublasLt.so.13", "org.bytedeco.cuda.global.cublas"));
        out.add(library("NCCL", "libnccl.so.2", "org.bytedeco.cuda.global.nccl"));
        return out;
    }

    private static LibraryStatus library(String name, String soname, String presetClass) {
        if (loadLibrary()) {
            byte[] err = new byte[1024];
            if (CudaNative.g4_dlopen_probe(soname, err, err.length) != 0) {
                int len = 0;
                while (len < err.length && err[len] != 0) len++;
                String msg = new String(err, 0, len, java.nio.charset.StandardCharsets.UTF_8);
                String reason = msg.contains("cannot open shared object file")
                        ? soname + " not found (not installed, or its folder is not on LD_LIBRARY_PATH)" : msg;
                return new LibraryStatus(name, false, reason);
            }
        }
        String failure = PRESET_FAILURES.computeIfAbsent(presetClass, c -> {
            try {
                org.bytedeco.javacpp.Loader.load(Class.forName(c));
                return "";
            } catch (Throwable t) {
                return describeLinkError(t); // the first failure says why; a retry only says "Could not initialize class"
            }
        });
        if (failure.startsWith("Could not initialize class org.bytedeco.cuda.global.")) { // its dependency failed first: say why
            String dep = "org.bytedeco.cuda.global." + failure.substring(failure.lastIndexOf('.') + 1).trim();
            String why = PRESET_FAILURES.get(dep);
            if (why != null && !why.isEmpty()) failure = why;
        }
        if (failure.isEmpty()) return new LibraryStatus(name, true, soname + " and the JavaCPP preset load");
        return new LibraryStatus(name, false, "JavaCPP preset " + presetClass.substring(presetClass.lastIndexOf('.') + 1) + ": " + failure);
    }

    private static volatile Boolean cublas;

    /** Whether cuBLAS and cuBLASLt (the shared libraries and their JavaCPP preset) load here; probed once. */
    public static boolean cublasLoads() {
        Boolean b = cublas;
        if (b == null) {
            boolean ok = probe().available();
            for (LibraryStatus l : ok ? libraries() : List.<LibraryStatus>of())
                if (l.name().startsWith("cuBLAS")) ok &= l.loads();
            cublas = b = ok;
        }
        return b;
    }

    private static final java.util.Map<String, String> PRESET_FAILURES = new java.util.concurrent.ConcurrentHashMap<>();
}
