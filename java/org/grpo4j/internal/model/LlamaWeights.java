package org.grpo4j.internal.model;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.SplittableRandom;
import org.grpo4j.internal.backend.Backend;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.backend.Tensor;
import org.grpo4j.internal.util.AtomicDir;

/**
 * A Llama model's parameters in one flat buffer on a backend (views per HF tensor), with HF-directory I/O:
 * config.json, generation_config.json, safetensors (single file, or shards + model.safetensors.index.json) and the
 * tokenizer files. Saving is atomic: everything is written to a temporary sibling directory that is then renamed.
 *
 * <p>The buffer is fp32 (master weights, gradients, the CPU's default) or bf16 (the compute copy of precision bf16:
 * {@link #castTo}, refreshed from the master by AdamW's bf16 copy-out).
 *
 * <p>Buffers over 2^31 elements (models over 2.1B parameters) are one 2-D allocation: every parameter view, {@link
 * #range} and {@link #padded()} work at any size; {@link #flat()} exists only below it.
 */
public final class LlamaWeights implements AutoCloseable {
    private static final ObjectMapper JSON = new ObjectMapper();
    /** Tokenizer files copied into saved model directories when present. */
    static final List<String> TOKENIZER_FILES = List.of("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json");

    private final LlamaConfig config;
    private final ParameterLayout layout;
    private final Backend backend;
    private final Tensor storage; // flat, plus zero padding up to the capacity (ZeRO-2 slices); 2-D when split
    private final long capacity;
    private final Tensor flat;
    private final Map<String, Tensor> views = new HashMap<>();

    private LlamaWeights(Backend be, LlamaConfig config) { this(be, config, DType.FP32, 0); }

    private LlamaWeights(Backend be, LlamaConfig config, DType dtype, long capacity) {
        if (dtype != DType.FP32 && dtype != DType.BF16) throw new IllegalArgumentException("weights are fp32 or bf16, not " + dtype);
        this.config = config;
        this.layout = new ParameterLayout(config);
        this.backend = be;
        long total = layout.totalElements();
        this.capacity = Math.max(capacity, total);
        long limit = maxFlatElements();
        if (this.capacity <= limit) {
            this.storage = be.zeros(dtype, (int) this.capacity);
            this.flat = this.capacity == total ? storage : storage.view(0, (int) total);
        } else {
            // one allocation of rows x row elements (a tensor's dimensions are ints, its element count is not)
            int row = splitRow(limit);
            long rows = (this.capacity + row - 1) / row;
            if (rows > Integer.MAX_VALUE - 8) throw new IllegalArgumentException(String.format(java.util.Locale.ROOT, "%,d elements is too large a buffer", this.capacity));
            this.storage = be.zeros(dtype, (int) rows, row);
            this.flat = null;
        }
        for (ParameterLayout.Entry e : layout.entries()) views.put(e.name(), storage.view(e.offset(), e.shape()));
    }

    /** The most elements a flat buffer holds as one 1-D tensor (a tensor dimension is an int). */
    public static final long MAX_ELEMENTS = Integer.MAX_VALUE - 8;

    /**
     * Tests only: flat buffers over this many elements are held as a 2-D allocation, as those of models over 2^31
     * parameters are (so that the split layout runs on the CPU with a tiny model). Leaking it into other tests changes
     * nothing they can observe: the layout is invisible through this class's methods except {@link #hasFlat()}.
     */
    public static final String SPLIT_PROPERTY = "grpo4j.test.maxFlatElements";

    static long maxFlatElements() {
        String p = System.getProperty(SPLIT_PROPERTY);
        return p == null ? MAX_ELEMENTS : Math.min(MAX_ELEMENTS, Long.parseLong(p));
    }

    /** Elements a weight set of {@code capacity} elements allocates (split buffers round up to whole rows). */
    public static long allocatedElements(long capacity) {
        long limit = maxFlatElements();
        if (capacity <= limit) return capacity;
        int row = splitRow(limit);
        return (capacity + row - 1) / row * row;
    }

    /** The row length of a split buffer: 2^20 elements (smaller under a test limit). */
    static int splitRow(long limit) {
        long r = Math.max(8, Math.min(1L << 20, limit / 2));
        return Integer.highestOneBit((int) r);
    }

    /** The largest range {@link #forChunks} hands out (2^30 elements: 4 GiB of fp32). */
    static final int CHUNK = 1 << 30;

    /** Calls {@code body(from, length)} over [0, total) in ranges of at most 2^30 elements, in order. */
    public static void forChunks(long total, java.util.function.BiConsumer<Long, Integer> body) {
        for (long from = 0; from < total; from += CHUNK) body.accept(from, (int) Math.min(CHUNK, total - from));
    }

    public static LlamaWeights zeros(Backend be, LlamaConfig config) { return new LlamaWeights(be, config); }

    /** Zeros of the given dtype (fp32 or bf16). */
    public static LlamaWeights zeros(Backend be, LlamaConfig config, DType dtype) { return new LlamaWeights(be, config, dtype, 0); }

    /**
     * Zeros of the given dtype whose buffer holds {@code capacity} elements (at least the parameter count): the
     * parameters, then zero padding, as ZeRO-2's equal rank slices need ({@link #padded()}).
     */
    public static LlamaWeights zeros(Backend be, LlamaConfig config, DType dtype, long capacity) { return new LlamaWeights(be, config, dtype, capacity); }

    /** HF's LlamaForCausalLM init: N(0, 0.02) for embeddings and projections, 1 for RMSNorm weights. */
    public static LlamaWeights init(Backend be, LlamaConfig config, long seed) {
        LlamaWeights w = new LlamaWeights(be, config);
        SplittableRandom r = new SplittableRandom(seed);
        for (ParameterLayout.Entry e : w.layout.entries()) {
            Tensor t = w.views.get(e.name()).reshape(Math.toIntExact(e.numel()));
            for (long from = 0; from < e.numel(); from += LOAD_PIECE) { // pieces, in order: the same values as one array
                float[] a = new float[(int) Math.min(LOAD_PIECE, e.numel() - from)];
                if (e.name().endsWith("norm.weight")) java.util.Arrays.fill(a, 1f);
                else for (int i = 0; i < a.length; i++) a[i] = (float) (r.nextGaussian() * 0.02);
                be.copyFromHost(t.view(from, a.length), a);
            }
        }
        return w;
    }

    public LlamaConfig config() { return config; }
    public ParameterLayout layout() { return layout; }
    public Backend backend() { return backend; }

    /** fp32 or bf16. */
    public DType dtype() { return storage.dtype(); }

    /**
     * The whole flat parameter buffer [total] as one 1-D tensor: only for buffers of at most {@link #MAX_ELEMENTS}
     * elements (a model over 2^31 parameters has none: use {@link #range}, {@link #padded()} or {@link #get}).
     */
    public Tensor flat() {
        if (flat == null)
            throw new IllegalStateException(String.format(java.util.Locale.ROOT, "%,d parameters are not one 1-D tensor (at most 2^31 - 9 elements);"
                    + " this operation works on models below that size only", layout.totalElements()));
        return flat;
    }

    /** Whether {@link #flat()} exists (the buffer is at most {@link #MAX_ELEMENTS} elements). */
    public boolean hasFlat() { return flat != null; }

    /** Sets every element (padding included) to zero. */
    public void zero() { backend.fill(storage, 0); }

    /** Flat elements [from, from + length) as a 1-D view (any buffer size). */
    public Tensor range(long from, int length) { return storage.view(from, length); }

    /** Elements held, padding included (at least the parameter count). */
    public long capacity() { return capacity; }

    /**
     * The flat buffer with its padding, exactly {@link #capacity()} elements: 1-D, or 2-D [capacity / c, c] (c a power
     * of two of at most 2^20 dividing the capacity) for buffers over 2^31 elements. Whole-buffer ops (fill, the
     * in-place all-gather) take it.
     */
    public Tensor padded() {
        if (flat != null || storage.numel() == capacity) return storage;
        int c = 1 << 20;
        while (capacity % c != 0) c >>= 1;
        if (capacity / c > Integer.MAX_VALUE - 8)
            throw new IllegalStateException(String.format(java.util.Locale.ROOT, "a buffer of %,d elements is not a multiple of a power of two large enough"
                    + " to view as one tensor", capacity));
        return storage.view(0, (int) (capacity / c), c);
    }

    /** A parameter by HF name ("lm_head.weight" resolves to the embeddings when they are tied). */
    public Tensor get(String name) {
        if (name.equals("lm_head.weight") && config.tieWordEmbeddings()) name = "model.embed_tokens.weight";
        Tensor t = views.get(name);
        if (t == null) throw new IllegalArgumentException("no parameter named " + name);
        return t;
    }

    /**
     * The name of the first tensor holding a NaN or infinite value, or null when every value is finite (a damaged
     * or diverged checkpoint is refused before it is trained or sampled from).
     */
    public String firstNonFiniteTensor() {
        try (Tensor acc = backend.empty(org.grpo4j.internal.backend.DType.FP32, 1)) {
            for (ParameterLayout.Entry e : layout.entries()) {
                backend.fill(acc, 0);
                backend.sumSquares(acc, get(e.name()));
                if (Float.isFinite(acc.toFloats()[0])) continue;
                // the sum of squares also overflows for huge finite values: look at the values themselves (in pieces; bf16 widened)
                Tensor t = views.get(e.name());
                for (long from = 0; from < e.numel(); from += LOAD_PIECE) {
                    float[] x = new float[(int) Math.min(LOAD_PIECE, e.numel() - from)];
                    readInto(t.reshape(Math.toIntExact(e.numel())).view(from, x.length), x);
                    for (float v : x) if (!Float.isFinite(v)) return e.name();
                }
            }
        }
        return null;
    }

    /** A copy on the same backend (e.g. the frozen reference policy). */
    public LlamaWeights copy() {
        LlamaWeights w = new LlamaWeights(backend, config, dtype(), 0);
        forChunks(layout.totalElements(), (from, n) -> backend.copy(w.range(from, n), range(from, n)));
        return w;
    }

    /** A copy in {@code dtype} on the same backend: fp32 to bf16 rounds each weight to nearest even once. */
    public LlamaWeights castTo(DType dtype) {
        LlamaWeights w = new LlamaWeights(backend, config, dtype, 0);
        forChunks(layout.totalElements(), (from, n) -> backend.cast(w.range(from, n), range(from, n)));
        return w;
    }

    /** Overwrites these weights with {@code src}'s (same config; cast when the dtypes differ). */
    public void copyFrom(LlamaWeights src) {
        if (!src.config.equals(config))
            throw new IllegalArgumentException("copyFrom: the two weight sets have different configs");
        forChunks(layout.totalElements(), (from, n) -> backend.cast(range(from, n), src.range(from, n)));
    }

    @Override
    public void close() { storage.close(); }

    // ---- loading ------------------------------------------------------------------------------------------------

    /**
     * Bytes that {@link #load(Backend, Path, DType)} allocates on the backend for a {@code config} model at its peak:
     * the weights in {@code dtype}, and beside them, for bf16, the fp32 tensor each piece is read through.
     */
    public static long loadBytes(LlamaConfig config, DType dtype) {
        ParameterLayout layout = new ParameterLayout(config);
        long bytes = allocatedElements(layout.totalElements()) * dtype.bytes(), largest = 0;
        for (ParameterLayout.Entry e : layout.entries()) largest = Math.max(largest, e.numel());
        return dtype == DType.FP32 ? bytes : bytes + Math.min(largest, LOAD_PIECE) * DType.FP32.bytes();
    }

    /** Loads config.json and the safetensors weights of an HF model directory. */
    public static LlamaWeights load(Backend be, Path dir) throws IOException { return load(be, dir, DType.FP32); }

    /**
     * {@link #load(Backend, Path)} into {@code dtype} weights (bf16: each tensor read in fp32 through a temporary
     * tensor and rounded once, so a bf16 copy never needs the fp32 model beside it).
     */
    public static LlamaWeights load(Backend be, Path dir, DType dtype) throws IOException {
        LlamaConfig cfg = LlamaConfig.read(dir);
        LlamaWeights w = new LlamaWeights(be, cfg, dtype, 0);
        try {
            w.loadTensors(dir);
        } catch (IOException | RuntimeException e) {
            w.close();
            throw e;
        }
        return w;
    }

    private void loadTensors(Path dir) throws IOException {
        Path single = dir.resolve("model.safetensors"), index = dir.resolve("model.safetensors.index.json");
        Map<String, Path> where = new LinkedHashMap<>();
        if (Files.isRegularFile(index)) {
            com.fasterxml.jackson.databind.JsonNode root;
            try {
                root = JSON.readTree(index.toFile());
            } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
                throw new IOException(index + ": not valid JSON: " + org.grpo4j.internal.util.JsonErrors.describe(e), e);
            }
            if (root == null) throw new IOException(index + ": empty");
            var map = root.path("weight_map");
            if (!map.isObject()) throw new IOException(index + ": weight_map is missing");
            for (var it = map.fields(); it.hasNext(); ) {
                var e = it.next();
                Path f = dir.resolve(e.getValue().asText());
                if (!f.normalize().startsWith(dir.normalize())) throw new IOException(index + ": shard " + e.getValue() + " is outside the model directory");
                where.put(e.getKey(), f);
            }
        } else if (Files.isRegularFile(single)) {
            where = null;
        } else {
            throw new NoSuchFileException(dir.toString(), null, "no model.safetensors or model.safetensors.index.json");
        }
        Set<Path> files = new java.util.TreeSet<>();
        if (where == null) files.add(single);
        else files.addAll(where.values());
        Set<String> expected = new HashSet<>();
        for (ParameterLayout.Entry e : layout.entries()) expected.add(e.name());
        Set<String> found = new HashSet<>();
        for (Path f : files) {
            try (SafeTensors st = SafeTensors.open(f)) {
                for (SafeTensors.Info t : st.tensors().values()) {
                    if (!expected.contains(t.name()))
                        throw new IOException(f + ": unexpected tensor " + t.name() + (t.name().equals("lm_head.weight") && config.tieWordEmbeddings()
                                ? " (config.json says tie_word_embeddings)" : " (not a parameter of this Llama config)"));
                    if (where != null && !f.equals(where.get(t.name())))
                        throw new IOException(f + ": tensor " + t.name() + " is listed in the index under " + where.get(t.name()));
                    if (!found.add(t.name())) throw new IOException(f + ": tensor " + t.name() + " appears in two shards");
                    ParameterLayout.Entry e = layout.get(t.name());
                    if (!java.util.Arrays.equals(e.shape(), t.shape()))
                        throw new IOException(f + ": tensor " + t.name() + " has shape " + java.util.Arrays.toString(t.shape())
                                + " but config.json implies " + java.util.Arrays.toString(e.shape()));
                    upload(backend, st, t.name(), views.get(t.name()));
                }
            }
        }
        for (String name : expected)
            if (!found.contains(name)) throw new IOException(dir + ": tensor " + name + " is missing from the checkpoint");
    }

    /** The most elements a load moves through the Java heap at once (64 MiB of fp32). */
    static final int LOAD_PIECE = 1 << 24;

    /**
     * Tensor {@code name} of {@code st} into {@code dst} (fp32, or bf16 rounded once), in pieces of at most 2^24
     * elements: the ranks of one process load at the same time, and an 8B model's embeddings are 2.1 GB in fp32.
     */
    public static void upload(Backend be, SafeTensors st, String name, Tensor dst) throws IOException { upload(be, st, name, dst, LOAD_PIECE); }

    /** {@link #upload(Backend, SafeTensors, String, Tensor)} in pieces of {@code pieceSize} elements (tests: small pieces). */
    static void upload(Backend be, SafeTensors st, String name, Tensor dst, int pieceSize) throws IOException {
        long n = dst.numel();
        float[] piece = new float[(int) Math.min(n, pieceSize)];
        try (Tensor tmp = dst.dtype() == DType.FP32 ? null : be.empty(DType.FP32, piece.length)) {
            for (long from = 0; from < n; from += pieceSize) {
                int len = (int) Math.min(pieceSize, n - from);
                float[] buf = len == piece.length ? piece : new float[len];
                st.readFloats(name, from, len, buf, 0);
                Tensor d = dst.reshape(Math.toIntExact(n)).view(from, len);
                if (tmp == null) be.copyFromHost(d, buf);
                else {
                    Tensor t = tmp.view(0, len);
                    be.copyFromHost(t, buf);
                    be.cast(d, t);
                }
            }
        }
    }

    // ---- saving -------------------------------------------------------------------------------------------------

    /**
     * Saves an HF model directory at {@code out} (which must not exist, or be empty): config.json,
     * generation_config.json, weights as {@code dtype} ("F32" or "BF16") in shards of at most {@code maxShardBytes},
     * and the tokenizer files from {@code tokenizerDir} (may be null). Atomic: written under a temporary sibling
     * directory, then renamed into place.
     */
    public void save(Path out, String dtype, long maxShardBytes, Path tokenizerDir) throws IOException {
        saveAtomically(out, tmp -> writeInto(config, layout, e -> download(views.get(e.name())), tmp, dtype, maxShardBytes, tokenizerDir));
    }

    /** A tensor's values downloaded piece by piece as they are written (bf16 widened exactly). */
    public static SafeTensors.Source download(Tensor t) {
        return (from, into, length) -> readInto(t.view(from, length), into);
    }

    /** Downloads {@code t} (fp32, or bf16 widened exactly) into {@code into}[0, numel). */
    public static void readInto(Tensor t, float[] into) {
        int n = Math.toIntExact(t.numel());
        if (t.dtype() == DType.FP32) System.arraycopy(t.toFloats(), 0, into, 0, n);
        else {
            short[] bits = t.toBf16Bits();
            for (int i = 0; i < n; i++) into[i] = org.grpo4j.internal.backend.Bf16.toFloat(bits[i]);
        }
    }

    /**
     * {@link #save} of weights held on the host: {@code host} is the flat buffer in {@link ParameterLayout} order (at
     * least its parameters; padding after them is ignored). Writes from the array itself.
     */
    public static void saveHost(LlamaConfig config, float[] host, Path out, String dtype, long maxShardBytes, Path tokenizerDir) throws IOException {
        ParameterLayout layout = new ParameterLayout(config);
        if (host.length < layout.totalElements())
            throw new IllegalArgumentException("host weights of " + host.length + " elements, the model has " + layout.totalElements());
        saveAtomically(out, tmp -> writeInto(config, layout, e -> new SafeTensors.Out(e.name(), e.shape(), host, (int) e.offset()).source(), tmp,
                dtype, maxShardBytes, tokenizerDir));
    }

    /** Where each parameter tensor's values come from when a model is saved. */
    @FunctionalInterface
    public interface Values {
        SafeTensors.Source of(ParameterLayout.Entry e);
    }

    /**
     * {@link #save} from any source of values: the sources are read tensor by tensor in {@link ParameterLayout} order,
     * each from its first element on (so a source may gather a tensor from the ranks' slices when its first piece is
     * asked for, a collective the other ranks mirror by walking the same entries in the same order).
     */
    public static void saveFrom(LlamaConfig config, Values values, Path out, String dtype, long maxShardBytes, Path tokenizerDir) throws IOException {
        ParameterLayout layout = new ParameterLayout(config);
        saveAtomically(out, tmp -> writeInto(config, layout, values, tmp, dtype, maxShardBytes, tokenizerDir));
    }

    private static void saveAtomically(Path out, AtomicDir.Filler body) throws IOException {
        Path abs = out.toAbsolutePath();
        if (Files.exists(abs)) {
            try (var s = Files.list(abs)) {
                if (s.findAny().isPresent()) throw new FileAlreadyExistsException(abs.toString(), null, "output directory exists and is not empty");
            }
            Files.delete(abs);
        }
        AtomicDir.write(abs, body);
    }

    private static void writeInto(LlamaConfig config, ParameterLayout layout, Values values, Path dir, String dtype, long maxShardBytes,
                                  Path tokenizerDir) throws IOException {
        String torchDtype = dtype.equals("BF16") ? "bfloat16" : "float32";
        JSON.writerWithDefaultPrettyPrinter().writeValue(dir.resolve("config.json").toFile(), config.toJson(torchDtype));
        ObjectNode gen = JSON.createObjectNode();
        gen.put("bos_token_id", config.bosTokenId());
        if (config.eosTokenIds().size() == 1) gen.put("eos_token_id", config.eosTokenIds().get(0));
        else {
            var a = gen.putArray("eos_token_id");
            config.eosTokenIds().forEach(a::add);
        }
        gen.put("do_sample", true);
        gen.put("temperature", 1.0);
        gen.put("top_p", 1.0);
        JSON.writerWithDefaultPrettyPrinter().writeValue(dir.resolve("generation_config.json").toFile(), gen);

        int eb = dtype.equals("BF16") ? 2 : 4;
        List<List<SafeTensors.Out>> shards = new ArrayList<>();
        List<SafeTensors.Out> cur = new ArrayList<>();
        long curBytes = 0, total = 0;
        for (ParameterLayout.Entry e : layout.entries()) {
            long b = e.numel() * eb;
            if (!cur.isEmpty() && curBytes + b > maxShardBytes) {
                shards.add(cur);
                cur = new ArrayList<>();
                curBytes = 0;
            }
            cur.add(new SafeTensors.Out(e.name(), e.shape(), values.of(e)));
            curBytes += b;
            total += b;
        }
        shards.add(cur);
        Map<String, String> meta = Map.of("format", "pt");
        if (shards.size() == 1) {
            SafeTensors.write(dir.resolve("model.safetensors"), shards.get(0), dtype, meta);
        } else {
            ObjectNode idx = JSON.createObjectNode();
            idx.putObject("metadata").put("total_size", total);
            ObjectNode map = idx.putObject("weight_map");
            for (int i = 0; i < shards.size(); i++) {
                String name = String.format("model-%05d-of-%05d.safetensors", i + 1, shards.size());
                SafeTensors.write(dir.resolve(name), shards.get(i), dtype, meta);
                for (SafeTensors.Out o : shards.get(i)) map.put(o.name(), name);
            }
            JSON.writerWithDefaultPrettyPrinter().writeValue(dir.resolve("model.safetensors.index.json").toFile(), idx);
        }
        if (tokenizerDir != null)
            for (String f : TOKENIZER_FILES)
                if (Files.isRegularFile(tokenizerDir.resolve(f))) Files.copy(tokenizerDir.resolve(f), dir.resolve(f));
    }
}
