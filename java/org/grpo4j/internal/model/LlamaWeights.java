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
    private static final ObjectMapper JSON = org.grpo4j.internal.util.JsonFiles.MAPPER;
    /** Tokenizer files copied into saved model directories when present. */
    static final List<String> TOKENIZER_FILES = List.of("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json");

    private final LlamaConfig config;
    private final ParameterLayout layout;
    private final Backend backend;
    private final Tensor storage; // flat, plus zero padding up to the capacity (ZeRO-2 slices); 2-D when split
    private final long capacity;
    private final Tensor flat;
    private final Map<String, Tensor> views = new HashMap<>();
    /** A gradient window ({@link #gradientWindow}): each backward group's first offset, descending; null otherwise. */
    private final long[] groupFrom;
    private final long slab; // elements of each of a window's two slabs
    private final long[] groupBase; // a window: where each group's first element lies in the storage

    private LlamaWeights(Backend be, LlamaConfig config) { this(be, config, DType.FP32, 0); }

    /**
     * A window: two slabs holding {@code slab} elements each, and after them the groups marked {@code resident}, whole;
     * a windowed group g's tensors lie in slab g % 2. Every group starts at the same offset modulo {@link #ALIGN} as in
     * the flat buffer, so each tensor is as aligned as it is there (cuBLASLt chooses its algorithms by the operands'
     * alignment, up to 256 bytes: the same alignment, the same algorithm and the same bits as the flat weights').
     */
    private LlamaWeights(Backend be, LlamaConfig config, DType dtype, long[] groupFrom, long slab, boolean[] resident) {
        if (dtype != DType.FP32 && dtype != DType.BF16) throw new IllegalArgumentException("gradients are fp32 or bf16, not " + dtype);
        this.config = config;
        this.layout = new ParameterLayout(config);
        this.backend = be;
        this.capacity = layout.totalElements();
        this.groupFrom = groupFrom;
        this.slab = slab;
        this.groupBase = new long[groupFrom.length + 1];
        long elements = windowBases(groupFrom, capacity, slab, resident, groupBase);
        this.storage = allocate(be, dtype, elements);
        this.flat = null;
        for (ParameterLayout.Entry e : layout.entries()) {
            int g = groupOf(e.offset());
            views.put(e.name(), storage.view(groupBase[g] + e.offset() - groupFrom[g], e.shape()));
        }
    }

    /** The alignment, in elements, that a window's groups keep from the flat buffer (256 bytes of bf16). */
    static final int ALIGN = 128;

    /**
     * A window's layout: each group's first element's place in the storage into {@code base} (windowed groups in slab
     * g % 2, each slab {@code slab} elements from the largest offset a group can start at, resident ones after both
     * slabs), every group at its flat offset's residue modulo {@link #ALIGN}; {@code base[groups]} = where the resident
     * groups begin. Returns the storage's elements.
     */
    private static long windowBases(long[] groupFrom, long total, long slab, boolean[] resident, long[] base) {
        long stride = (slab + ALIGN - 1 + ALIGN - 1) / ALIGN * ALIGN; // a slab's room: the content after a residue of up to ALIGN - 1
        long next = 2 * stride;
        base[groupFrom.length] = next;
        for (int g = 0; g < groupFrom.length; g++) {
            long residue = groupFrom[g] % ALIGN;
            if (resident[g]) {
                base[g] = next + residue;
                long end = g == 0 ? total : groupFrom[g - 1];
                next = (base[g] + end - groupFrom[g] + ALIGN - 1) / ALIGN * ALIGN;
            } else {
                base[g] = (g % 2) * stride + residue;
            }
        }
        return next;
    }

    private LlamaWeights(Backend be, LlamaConfig config, DType dtype, long capacity) {
        if (dtype != DType.FP32 && dtype != DType.BF16) throw new IllegalArgumentException("weights are fp32 or bf16, not " + dtype);
        this.config = config;
        this.layout = new ParameterLayout(config);
        this.backend = be;
        long total = layout.totalElements();
        this.capacity = Math.max(capacity, total);
        this.storage = allocate(be, dtype, this.capacity);
        this.flat = storage.rank() != 1 ? null : this.capacity == total ? storage : storage.view(0, (int) total);
        this.groupFrom = null;
        this.slab = 0;
        this.groupBase = null;
        for (ParameterLayout.Entry e : layout.entries()) views.put(e.name(), storage.view(e.offset(), e.shape()));
    }

    /**
     * The gradients ZeRO-2's backward writes, in a window of two slabs instead of one buffer of every parameter: the
     * backward pass completes its gradients group by group ({@link ParameterLayout#backwardGroups()}: the final norm
     * and LM head, each layer, the embeddings), and group g lives in slab g % 2, so a group's buckets are reduced while
     * the next group is written into the other slab, and the slab is zeroed again for group g + 2 once they are
     * ({@code ShardedAdamW}). Two slabs of the largest group (the [V, D] embeddings or LM head) instead of every
     * parameter: 2.1 GB instead of 16 GB in bf16 for Llama 3.1 8B. {@link #get} views alias across groups g and g + 2;
     * {@link #range} takes ranges within one group; whole-buffer operations ({@link #flat}, {@link #padded},
     * {@link #copy}, {@link #castTo}, {@link #copyFrom}, saving) are refused.
     */
    public static LlamaWeights gradientWindow(Backend be, LlamaConfig config, DType dtype) {
        ParameterLayout lay = new ParameterLayout(config);
        long[] groups = lay.backwardGroups();
        return new LlamaWeights(be, config, dtype, groups, lay.largestBackwardGroup(), new boolean[groups.length]);
    }

    /**
     * A frozen model's weights with its layers in a window ({@code ShardedReference}, ZeRO-3 style): the embeddings,
     * the final norm and an untied LM head held whole, consecutive layers' tensors taking turns in two slabs of
     * {@code slab} elements (at least one layer's, at most 2^31 - 9), which the caller fills before the layer runs (an
     * all-gather of the ranks' pieces, through {@link #layerSlab}). {@link #get} views of layers l and l + 2 alias;
     * whole-buffer operations are refused, as for a gradient window.
     */
    public static LlamaWeights layerWindow(Backend be, LlamaConfig config, DType dtype, long slab) {
        ParameterLayout lay = new ParameterLayout(config);
        long[] groups = lay.backwardGroups();
        if (slab < layerElements(config)) throw new IllegalArgumentException("a layer window's slab of " + slab + " elements is smaller than a layer's " + layerElements(config));
        if (slab > MAX_ELEMENTS)
            throw new IllegalArgumentException(String.format(java.util.Locale.ROOT, "a layer window's slab of %,d elements is over 2^31 - 9 (one layer of this"
                    + " model); keep such a model's reference whole (reference_sharding none)", slab));
        return new LlamaWeights(be, config, dtype, groups, slab, layerResidents(groups.length));
    }

    /** A layer window's resident groups: the final norm with an untied LM head (group 0) and the embeddings (the last). */
    private static boolean[] layerResidents(int groups) {
        boolean[] resident = new boolean[groups];
        resident[0] = true;
        resident[groups - 1] = true;
        return resident;
    }

    /** Elements a {@link #layerWindow} with slabs of {@code slab} elements allocates. */
    public static long layerWindowElements(LlamaConfig config, long slab) {
        ParameterLayout lay = new ParameterLayout(config);
        long[] groups = lay.backwardGroups();
        return allocatedElements(windowBases(groups, lay.totalElements(), slab, layerResidents(groups.length), new long[groups.length + 1]));
    }

    /**
     * A rank's piece of one layer when the layers are sharded over {@code world} ranks: a layer's elements over the
     * ranks, rounded up to 8 (16 bytes of bf16); world pieces make one {@link #layerWindow} slab.
     */
    public static long layerPieceElements(LlamaConfig config, int world) {
        long n = (layerElements(config) + world - 1) / world;
        return (n + 7) / 8 * 8;
    }

    /** The elements of one decoder layer (every layer has as many). */
    public static long layerElements(LlamaConfig config) {
        long[] groups = new ParameterLayout(config).backwardGroups();
        return groups.length > 2 ? groups[groups.length - 3] - groups[groups.length - 2] : 0;
    }

    /** Layer {@code layer}'s first flat offset. */
    public long layerStart(int layer) {
        if (layer < 0 || layer >= config.numLayers()) throw new IllegalArgumentException("layer " + layer + " not in [0, " + config.numLayers() + ")");
        return layout.get("model.layers." + layer + ".input_layernorm.weight").offset();
    }

    /**
     * The whole slab that layer {@code layer} of a {@link #layerWindow} lives in ({@code slab} elements, the layer's
     * tensors from its start, in flat order): where a gather of the layer writes.
     */
    public Tensor layerSlab(int layer) {
        requireWindow();
        int g = groupOf(layerStart(layer));
        if (groupBase[g] >= groupBase[groupFrom.length]) throw new IllegalStateException("layer " + layer + " is held whole, not in a slab");
        return storage.view(groupBase[g], Math.toIntExact(slab));
    }

    /** Elements a {@link #gradientWindow} of {@code config} allocates. */
    public static long gradientWindowElements(LlamaConfig config) {
        ParameterLayout lay = new ParameterLayout(config);
        long[] groups = lay.backwardGroups();
        return allocatedElements(windowBases(groups, lay.totalElements(), lay.largestBackwardGroup(), new boolean[groups.length], new long[groups.length + 1]));
    }

    /** Whether this is a {@link #gradientWindow}. */
    public boolean windowed() { return groupFrom != null; }

    /** A window's backward groups: each group's first flat offset, descending (see {@link ParameterLayout#backwardGroups()}). */
    public long[] groupStarts() {
        requireWindow();
        return groupFrom.clone();
    }

    /** The backward group holding flat offset {@code offset} (a window). */
    public int groupOf(long offset) {
        requireWindow();
        if (offset < 0 || offset >= layout.totalElements()) throw new IllegalArgumentException("flat offset " + offset + " outside [0, " + layout.totalElements() + ")");
        int g = 0;
        while (groupFrom[g] > offset) g++;
        return g;
    }

    /** Zeroes group g's part of its slab (a window). */
    public void zeroGroup(int g) {
        requireWindow();
        backend.fill(storage.view(groupBase[g], (int) (groupEnd(g) - groupFrom[g])), 0);
    }

    /** "layer window" or "gradient window". */
    private String windowKind() { return groupBase[0] >= groupBase[groupFrom.length] ? "layer window" : "gradient window"; }

    /** Where group g of a window ends: the start of group g - 1, or (group 0) the parameter count. */
    private long groupEnd(int g) { return g == 0 ? layout.totalElements() : groupFrom[g - 1]; }

    private void requireWindow() {
        if (groupFrom == null) throw new IllegalStateException("not a window");
    }

    private void requireWhole(String op) {
        if (groupFrom != null) throw new IllegalStateException(op + " of a " + windowKind() + " (two slabs, not every parameter at once)");
    }

    /**
     * Zeros of {@code elements} elements: one 1-D tensor up to {@link #maxFlatElements()}, else one allocation of rows x
     * row elements (a tensor's dimensions are ints, its element count is not), whose flat views work the same.
     */
    private static Tensor allocate(Backend be, DType dtype, long elements) {
        long limit = maxFlatElements();
        if (elements <= limit) return be.zeros(dtype, (int) elements);
        int row = splitRow(limit);
        long rows = (elements + row - 1) / row;
        if (rows > Integer.MAX_VALUE - 8) throw new IllegalArgumentException(String.format(java.util.Locale.ROOT, "%,d elements is too large a buffer", elements));
        return be.zeros(dtype, (int) rows, row);
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
    public static LlamaWeights init(Backend be, LlamaConfig config, long seed) { return init(be, config, seed, DType.FP32, 0); }

    /**
     * {@link #init(Backend, LlamaConfig, long)} in {@code dtype} (bf16: each fp32 value rounded once, as a cast of the
     * fp32 init) into a buffer of {@code capacity} elements, never holding the fp32 weights whole.
     */
    public static LlamaWeights init(Backend be, LlamaConfig config, long seed, DType dtype, long capacity) {
        LlamaWeights w = new LlamaWeights(be, config, dtype, capacity);
        try (Tensor tmp = dtype == DType.FP32 ? null : be.empty(DType.FP32, (int) Math.min(largestTensor(w.layout), LOAD_PIECE))) {
            initPieces(config, seed, (off, a) -> put(be, w.range(off, a.length), a, tmp));
        } catch (RuntimeException e) {
            w.close();
            throw e;
        }
        return w;
    }

    /** Flat elements [from, from + dst.numel()) of {@link #init(Backend, LlamaConfig, long)}'s fp32 values into {@code dst} (fp32). */
    public static void initRange(Backend be, LlamaConfig config, long seed, long from, Tensor dst) {
        if (dst.dtype() != DType.FP32) throw new IllegalArgumentException("initRange: dst must be fp32, got " + dst.dtype());
        long to = from + dst.numel();
        Tensor flatDst = dst.reshape(Math.toIntExact(dst.numel()));
        initPieces(config, seed, (off, a) -> {
            long x = Math.max(from, off), y = Math.min(to, off + a.length);
            if (x < y) be.copyFromHost(flatDst.view(x - from, (int) (y - x)), java.util.Arrays.copyOfRange(a, (int) (x - off), (int) (y - off)));
        });
    }

    /** The init's values in flat order, in pieces of at most 2^24 (every piece generated: the stream is sequential). */
    private static void initPieces(LlamaConfig config, long seed, java.util.function.BiConsumer<Long, float[]> sink) {
        SplittableRandom r = new SplittableRandom(seed);
        for (ParameterLayout.Entry e : new ParameterLayout(config).entries()) {
            for (long from = 0; from < e.numel(); from += LOAD_PIECE) { // pieces, in order: the same values as one array
                float[] a = new float[(int) Math.min(LOAD_PIECE, e.numel() - from)];
                if (e.name().endsWith("norm.weight")) java.util.Arrays.fill(a, 1f);
                else for (int i = 0; i < a.length; i++) a[i] = (float) (r.nextGaussian() * 0.02);
                sink.accept(e.offset() + from, a);
            }
        }
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
        requireWhole("flat()");
        if (flat == null)
            throw new IllegalStateException(String.format(java.util.Locale.ROOT, "%,d parameters are not one 1-D tensor (at most 2^31 - 9 elements);"
                    + " this operation works on models below that size only", layout.totalElements()));
        return flat;
    }

    /** Whether {@link #flat()} exists (the buffer is at most {@link #MAX_ELEMENTS} elements). */
    public boolean hasFlat() { return flat != null; }

    /** Sets every element (padding included) to zero. */
    public void zero() { backend.fill(storage, 0); }

    /** Flat elements [from, from + length) as a 1-D view (any buffer size; in a window, within one backward group). */
    public Tensor range(long from, int length) {
        if (groupFrom == null) return storage.view(from, length);
        int g = groupOf(from);
        long end = groupEnd(g);
        if (length < 0 || from + length > end)
            throw new IllegalArgumentException("range [" + from + ", " + (from + length) + ") straddles backward groups of a " + windowKind() + " (group " + g
                    + " is [" + groupFrom[g] + ", " + end + "))");
        return storage.view(groupBase[g] + from - groupFrom[g], length);
    }

    /** Elements held, padding included (at least the parameter count). */
    public long capacity() { return capacity; }

    /**
     * The flat buffer with its padding, exactly {@link #capacity()} elements: 1-D, or 2-D [capacity / c, c] (c a power
     * of two of at most 2^20 dividing the capacity) for buffers over 2^31 elements. Whole-buffer ops (fill, the
     * in-place all-gather) take it.
     */
    public Tensor padded() {
        requireWhole("padded()");
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
        requireWhole("copy()");
        LlamaWeights w = new LlamaWeights(backend, config, dtype(), 0);
        forChunks(layout.totalElements(), (from, n) -> backend.copy(w.range(from, n), range(from, n)));
        return w;
    }

    /** A copy in {@code dtype} on the same backend: fp32 to bf16 rounds each weight to nearest even once. */
    public LlamaWeights castTo(DType dtype) {
        requireWhole("castTo()");
        LlamaWeights w = new LlamaWeights(backend, config, dtype, 0);
        forChunks(layout.totalElements(), (from, n) -> backend.cast(w.range(from, n), range(from, n)));
        return w;
    }

    /** Overwrites these weights with {@code src}'s (same config; cast when the dtypes differ). */
    public void copyFrom(LlamaWeights src) {
        requireWhole("copyFrom()");
        src.requireWhole("copyFrom()");
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
        long bytes = allocatedElements(layout.totalElements()) * dtype.bytes();
        return dtype == DType.FP32 ? bytes : bytes + Math.min(largestTensor(layout), LOAD_PIECE) * DType.FP32.bytes();
    }

    /** Loads config.json and the safetensors weights of an HF model directory. */
    public static LlamaWeights load(Backend be, Path dir) throws IOException { return load(be, dir, DType.FP32); }

    /**
     * {@link #load(Backend, Path)} into {@code dtype} weights (bf16: each tensor read in fp32 through a temporary
     * tensor and rounded once, so a bf16 copy never needs the fp32 model beside it).
     */
    public static LlamaWeights load(Backend be, Path dir, DType dtype) throws IOException { return load(be, dir, dtype, 0); }

    /**
     * {@link #load(Backend, Path, DType)} into a buffer of {@code capacity} elements (the parameters, then zero
     * padding: {@link #zeros(Backend, LlamaConfig, DType, long)}).
     */
    public static LlamaWeights load(Backend be, Path dir, DType dtype, long capacity) throws IOException {
        LlamaConfig cfg = LlamaConfig.read(dir);
        // every weight file's header against config.json before any memory is taken: a config of another model (an 8B
        // config.json beside 1B weights) is a shape mismatch, not a memory shortfall
        Map<String, Path> where = tensorFiles(dir, cfg, new ParameterLayout(cfg));
        LlamaWeights w = new LlamaWeights(be, cfg, dtype, capacity);
        try {
            w.loadTensors(where);
        } catch (IOException | RuntimeException e) {
            w.close();
            throw e;
        }
        return w;
    }

    /**
     * Flat elements [from, from + dst.numel()) of the {@code config} model saved in HF directory {@code dir}, read in
     * fp32 into {@code dst} (fp32, or bf16 rounded once), piece by piece: a ZeRO-2 rank's fp32 master slice straight
     * from the checkpoint, or its pieces of the sharded reference, never the whole fp32 model. The directory's tensors
     * are expected to be checked already (a {@link #load} of it).
     */
    public static void readRange(Backend be, Path dir, LlamaConfig config, long from, Tensor dst) throws IOException {
        if (dst.dtype() != DType.FP32 && dst.dtype() != DType.BF16) throw new IllegalArgumentException("readRange: dst must be fp32 or bf16, got " + dst.dtype());
        long n = dst.numel(), to = from + n;
        ParameterLayout layout = new ParameterLayout(config);
        if (from < 0 || to > layout.totalElements())
            throw new IllegalArgumentException("readRange: [" + from + ", " + to + ") outside the " + layout.totalElements() + " parameters");
        Tensor flatDst = dst.reshape(Math.toIntExact(n));
        long[] done = {0};
        try (Tensor tmp = dst.dtype() == DType.FP32 ? null : be.empty(DType.FP32, (int) Math.min(n, LOAD_PIECE))) {
            for (Path f : weightFiles(dir).keySet()) {
                try (SafeTensors st = SafeTensors.open(f)) {
                    for (SafeTensors.Info t : st.tensors().values()) {
                        if (!layout.has(t.name())) continue;
                        ParameterLayout.Entry e = layout.get(t.name());
                        long a = Math.max(from, e.offset()), b = Math.min(to, e.offset() + e.numel());
                        for (long p = a; p < b; p += LOAD_PIECE) {
                            int len = (int) Math.min(LOAD_PIECE, b - p);
                            float[] buf = new float[len];
                            st.readFloats(t.name(), p - e.offset(), len, buf, 0);
                            put(be, flatDst.view(p - from, len), buf, tmp);
                            done[0] += len;
                        }
                    }
                }
            }
        }
        if (done[0] != n) throw new IOException(dir + ": the checkpoint holds " + done[0] + " of the " + n + " elements of flat range [" + from + ", " + to + ")");
    }

    /**
     * The weight files of an HF directory, each with the tensors the index puts there (null: a single
     * model.safetensors). A directory holding both model.safetensors and model.safetensors.index.json loads the single
     * file, as transformers' from_pretrained does (it looks for model.safetensors first): the two must not load
     * different weights.
     */
    private static Map<Path, Set<String>> weightFiles(Path dir) throws IOException {
        Path single = dir.resolve("model.safetensors"), index = dir.resolve("model.safetensors.index.json");
        Map<Path, Set<String>> files = new java.util.TreeMap<>();
        if (Files.isRegularFile(single)) {
            files.put(single, null);
        } else if (Files.isRegularFile(index)) {
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
                if (!e.getValue().isTextual() || e.getValue().asText().isBlank())
                    throw new IOException(index + ": weight_map[\"" + e.getKey() + "\"] must name a shard file, got " + e.getValue());
                Path f = dir.resolve(e.getValue().asText());
                if (!f.normalize().startsWith(dir.normalize()) || f.normalize().equals(dir.normalize()))
                    throw new IOException(index + ": shard " + e.getValue() + " is outside the model directory");
                if (Files.isDirectory(f)) throw new IOException(index + ": shard " + e.getValue() + " of " + e.getKey() + " is a directory, not a file");
                files.computeIfAbsent(f, k -> new HashSet<>()).add(e.getKey());
            }
        } else {
            throw new NoSuchFileException(dir.toString(), null, "no model.safetensors or model.safetensors.index.json");
        }
        return files;
    }

    private void loadTensors(Map<String, Path> where) throws IOException {
        Map<Path, List<String>> byFile = new java.util.TreeMap<>();
        for (var e : where.entrySet()) byFile.computeIfAbsent(e.getValue(), k -> new ArrayList<>()).add(e.getKey());
        // every weight file open before the first upload, as export does: a checkpoint a running trainer prunes
        // meanwhile (keep_last_n_checkpoints; an 8B load takes minutes) stays readable through the open channels
        List<AutoCloseable> open = new ArrayList<>();
        try {
            Map<Path, SafeTensors> st = new java.util.HashMap<>();
            for (Path f : byFile.keySet()) {
                SafeTensors t = SafeTensors.open(f);
                open.add(t);
                st.put(f, t);
            }
            for (var f : byFile.entrySet())
                for (String name : f.getValue()) upload(backend, st.get(f.getKey()), name, views.get(name));
        } catch (IOException | RuntimeException | Error e) {
            try {
                org.grpo4j.internal.util.Closing.closeAll("the weight files", open);
            } catch (RuntimeException | Error c) {
                e.addSuppressed(c); // (the load's failure is the one to report)
            }
            throw e;
        }
        org.grpo4j.internal.util.Closing.closeAll("the weight files", open);
    }

    /**
     * Each parameter tensor of the {@code config} model in HF directory {@code dir} with the file holding it, checked:
     * every tensor present once, with its shape, in the file the index names, and no other tensor. Reads headers only.
     */
    static Map<String, Path> tensorFiles(Path dir, LlamaConfig config, ParameterLayout layout) throws IOException {
        Map<Path, Set<String>> byFile = weightFiles(dir);
        Map<String, Path> where = null; // with an index: each tensor's file
        for (var e : byFile.entrySet())
            if (e.getValue() != null) {
                if (where == null) where = new LinkedHashMap<>();
                for (String name : e.getValue()) where.put(name, e.getKey());
            }
        Set<String> expected = new HashSet<>();
        for (ParameterLayout.Entry e : layout.entries()) expected.add(e.name());
        Map<String, Path> found = new LinkedHashMap<>();
        for (Path f : byFile.keySet()) {
            try (SafeTensors st = SafeTensors.open(f)) {
                for (SafeTensors.Info t : st.tensors().values()) {
                    if (!expected.contains(t.name()))
                        throw new IOException(f + ": unexpected tensor " + t.name() + (t.name().equals("lm_head.weight") && config.tieWordEmbeddings()
                                ? " (config.json says tie_word_embeddings)" : " (not a parameter of this Llama config)"));
                    if (where != null && !f.equals(where.get(t.name())))
                        throw new IOException(f + ": tensor " + t.name() + (where.get(t.name()) == null
                                ? " is not listed in model.safetensors.index.json's weight_map"
                                : " is listed in the index under " + where.get(t.name())));
                    if (found.put(t.name(), f) != null) throw new IOException(f + ": tensor " + t.name() + " appears in two shards");
                    ParameterLayout.Entry e = layout.get(t.name());
                    if (!java.util.Arrays.equals(e.shape(), t.shape()))
                        throw new IOException(f + ": tensor " + t.name() + " has shape " + java.util.Arrays.toString(t.shape())
                                + " but config.json implies " + java.util.Arrays.toString(e.shape()));
                }
            }
        }
        for (String name : expected)
            if (!found.containsKey(name))
                throw new IOException(dir + ": tensor " + name + " is missing from the checkpoint" + (where != null && where.containsKey(name)
                        ? " (model.safetensors.index.json puts it in " + dir.relativize(where.get(name)) + ", which does not hold it)" : ""));
        return found;
    }

    /**
     * Writes the model of HF directory {@code from} (a checkpoint's model/, or any Llama directory grpo4j reads) to
     * {@code out} as {@code dtype} ("BF16": each fp32 value rounded once to nearest even; or "F32"), tensor by tensor in
     * pieces (never the whole model in memory), with config.json's dtype (both keys), generation_config.json and the tokenizer
     * files; tokenizer_config.json's chat_template replaced by {@code chatTemplate} unless it is null. Every tensor is
     * checked first (names, shapes) and every value on the way (a NaN or infinity refuses the export, naming the
     * tensor). Atomic: nothing appears at {@code out} unless all of it was written. Returns the bytes of weights written.
     */
    public static long export(Path from, Path out, String dtype, long maxShardBytes, String chatTemplate) throws IOException {
        LlamaConfig cfg = LlamaConfig.read(from);
        // (an exported model without its tokenizer loads nowhere: refused before anything is written)
        if (!Files.isRegularFile(from.resolve("tokenizer.json")))
            throw new java.nio.file.NoSuchFileException(from.resolve("tokenizer.json").toString(), null,
                    "the model's tokenizer, which an exported model carries");
        ParameterLayout layout = new ParameterLayout(cfg);
        Map<String, Path> where = tensorFiles(from, cfg, layout);
        boolean bf16 = dtype.equals("BF16");
        Map<Path, SafeTensors> open = new java.util.HashMap<>();
        try {
            // every weight file open before anything is written: a file a running trainer prunes meanwhile (renamed and
            // deleted) stays readable through its open channel
            for (Path f : new java.util.TreeSet<>(where.values())) open.put(f, SafeTensors.open(f));
            saveAtomically(out, tmp -> writeInto(cfg, layout, e -> {
                SafeTensors st = open.get(where.get(e.name()));
                return (off, into, len) -> {
                    st.readFloats(e.name(), off, len, into, 0);
                    for (int i = 0; i < len; i++) {
                        float x = into[i];
                        if (!Float.isFinite(x) || bf16 && !Float.isFinite(org.grpo4j.internal.backend.Bf16.toFloat(org.grpo4j.internal.backend.Bf16.fromFloat(x))))
                            // (not an IOException: the output is fine, the model is not; AtomicDir would blame the output)
                            throw new IllegalArgumentException(st.file() + ": tensor " + e.name() + " holds " + x + " at element " + (off + i) + (Float.isFinite(x)
                                    ? ", beyond bf16's range" : "") + ": a model with NaN or infinite weights is not exported");
                    }
                };
            }, tmp, dtype, maxShardBytes, from, chatTemplate));
        } finally {
            for (SafeTensors st : open.values()) st.close();
        }
        return layout.totalElements() * (bf16 ? 2 : 4);
    }

    /** The most elements a load moves through the Java heap at once (64 MiB of fp32). */
    static final int LOAD_PIECE = 1 << 24;

    /**
     * Tensor {@code name} of {@code st} into {@code dst} (fp32, or bf16 rounded once), in pieces of at most 2^24
     * elements: the ranks of one process load at the same time, and an 8B model's embeddings are 2.1 GB in fp32.
     */
    public static void upload(Backend be, SafeTensors st, String name, Tensor dst) throws IOException { upload(be, st, name, dst, LOAD_PIECE); }

    /** {@link #upload(Backend, SafeTensors, String, Tensor)} in pieces of {@code pieceSize} elements (tests: small pieces). */
    static void upload(Backend be, SafeTensors st, String name, Tensor dst, int pieceSize) throws IOException { upload(be, st, name, 0, dst, pieceSize); }

    /**
     * Elements [from, from + dst.numel()) of tensor {@code name} of {@code st}, in its flat order, into {@code dst}
     * (fp32, or bf16 rounded once), in pieces of at most 2^24 elements.
     */
    public static void upload(Backend be, SafeTensors st, String name, long from, Tensor dst) throws IOException { upload(be, st, name, from, dst, LOAD_PIECE); }

    private static void upload(Backend be, SafeTensors st, String name, long offset, Tensor dst, int pieceSize) throws IOException {
        upload(be, st, name, offset, dst, pieceSize, null, false);
    }

    /**
     * {@link #upload(Backend, SafeTensors, String, long, Tensor)} that refuses a NaN or infinite value, or with
     * {@code nonNegative} a negative one, naming {@code file}, the tensor and the element (optimizer moments: a damaged
     * one would surface steps later as non-finite updates blamed on the learning rate).
     */
    public static void uploadFinite(Backend be, SafeTensors st, Path file, String name, long from, Tensor dst, boolean nonNegative)
            throws IOException {
        upload(be, st, name, from, dst, LOAD_PIECE, file, nonNegative);
    }

    private static void upload(Backend be, SafeTensors st, String name, long offset, Tensor dst, int pieceSize, Path checkedFile,
                               boolean nonNegative) throws IOException {
        long n = dst.numel();
        float[] piece = new float[(int) Math.min(n, pieceSize)];
        try (Tensor tmp = dst.dtype() == DType.FP32 ? null : be.empty(DType.FP32, piece.length)) {
            for (long from = 0; from < n; from += pieceSize) {
                int len = (int) Math.min(pieceSize, n - from);
                float[] buf = len == piece.length ? piece : new float[len];
                st.readFloats(name, offset + from, len, buf, 0);
                if (checkedFile != null)
                    for (int i = 0; i < len; i++)
                        if (!Float.isFinite(buf[i]) || nonNegative && buf[i] < 0)
                            throw new IOException(checkedFile + ": tensor " + name + " element " + (offset + from + i) + " is " + buf[i]
                                    + (Float.isFinite(buf[i]) ? " (it cannot be negative)" : "") + ": the file is damaged");
                put(be, dst.reshape(Math.toIntExact(n)).view(from, len), buf, tmp);
            }
        }
    }

    /** fp32 values {@code a} into {@code d}: copied, or (bf16) through the fp32 scratch {@code tmp} and rounded once. */
    private static void put(Backend be, Tensor d, float[] a, Tensor tmp) {
        if (tmp == null) {
            be.copyFromHost(d, a);
            return;
        }
        Tensor t = tmp.view(0, a.length);
        be.copyFromHost(t, a);
        be.cast(d, t);
    }

    /** The elements of the layout's largest tensor. */
    private static long largestTensor(ParameterLayout layout) {
        long largest = 0;
        for (ParameterLayout.Entry e : layout.entries()) largest = Math.max(largest, e.numel());
        return largest;
    }

    // ---- saving -------------------------------------------------------------------------------------------------

    /**
     * Saves an HF model directory at {@code out} (which must not exist, or be empty): config.json,
     * generation_config.json, weights as {@code dtype} ("F32" or "BF16") in shards of at most {@code maxShardBytes},
     * and the tokenizer files from {@code tokenizerDir} (may be null). Atomic: written under a temporary sibling
     * directory, then renamed into place.
     */
    public void save(Path out, String dtype, long maxShardBytes, Path tokenizerDir) throws IOException {
        requireWhole("save()");
        saveAtomically(out, tmp -> writeInto(config, layout, e -> download(views.get(e.name())), tmp, dtype, maxShardBytes, tokenizerDir, null));
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
                dtype, maxShardBytes, tokenizerDir, null));
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
        saveAtomically(out, tmp -> writeInto(config, layout, values, tmp, dtype, maxShardBytes, tokenizerDir, null));
    }

    private static void saveAtomically(Path out, AtomicDir.Filler body) throws IOException {
        // (without a trailing ".": "out/." named a directory "." to rename onto; a link to an empty directory is written through,
        // where deleting the link and renaming onto its name left the directory it pointed at empty)
        Path abs = AtomicDir.absolute(out);
        if (Files.isSymbolicLink(abs) && Files.isDirectory(abs)) abs = abs.toRealPath();
        if (Path.of("").toAbsolutePath().startsWith(abs))
            throw new IllegalArgumentException(out + ": is the current directory (or holds it); name a new directory to write the model into");
        boolean existed = Files.exists(abs);
        if (existed) {
            try (var s = Files.list(abs)) {
                if (s.findAny().isPresent()) throw new FileAlreadyExistsException(abs.toString(), null, "output directory exists and is not empty");
            }
            Files.delete(abs);
        }
        try {
            AtomicDir.write(abs, body);
        } catch (IOException | RuntimeException e) {
            if (existed && !Files.exists(abs)) Files.createDirectories(abs); // the empty directory the caller made, as it was
            throw e;
        }
    }

    /**
     * A copy its owner may write (Files.copy keeps a write-protected source's 0444 mode, and tokenizer_config.json is
     * rewritten with the chat template; a checkpoint's files are the run's own).
     */
    private static void copyWritable(Path src, Path dst) throws IOException {
        Files.copy(src, dst);
        if (!dst.toFile().setWritable(true, true)) throw new IOException(dst + ": cannot make the copy of " + src + " writable");
    }

    /** A generation_config.json from config.json's BOS and EOS ids, with HF's sampling defaults (temperature and top-p 1). */
    private static void writeGenerationConfig(LlamaConfig config, Path dir) throws IOException {
        ObjectNode gen = JSON.createObjectNode();
        if (config.bosTokenId() >= 0) gen.put("bos_token_id", config.bosTokenId()); // (-1: the source had none)
        if (config.eosTokenIds().size() == 1) gen.put("eos_token_id", config.eosTokenIds().get(0));
        else {
            var a = gen.putArray("eos_token_id");
            config.eosTokenIds().forEach(a::add);
        }
        gen.put("do_sample", true);
        gen.put("temperature", 1.0);
        gen.put("top_p", 1.0);
        JSON.writerWithDefaultPrettyPrinter().writeValue(dir.resolve("generation_config.json").toFile(), gen);
    }

    /**
     * Fills {@code dir}: the tokenizer files first (so a source directory that changes while the weights are written,
     * e.g. a checkpoint being pruned, cannot leave them out), tokenizer_config.json's chat_template set to
     * {@code chatTemplate} unless it is null, then config.json, generation_config.json and the weights.
     */
    private static void writeInto(LlamaConfig config, ParameterLayout layout, Values values, Path dir, String dtype, long maxShardBytes,
                                  Path tokenizerDir, String chatTemplate) throws IOException {
        if (tokenizerDir != null) {
            for (String f : TOKENIZER_FILES)
                if (Files.isRegularFile(tokenizerDir.resolve(f))) copyWritable(tokenizerDir.resolve(f), dir.resolve(f));
            // the template file wins over tokenizer_config.json's chat_template in transformers (and in Tokenizer): kept
            // with the source's template, left out where another one is written into the config below
            Path jinja = tokenizerDir.resolve(org.grpo4j.internal.tokenizer.Tokenizer.CHAT_TEMPLATE_FILE);
            if (chatTemplate == null && Files.isRegularFile(jinja)) copyWritable(jinja, dir.resolve(jinja.getFileName()));
        }
        if (chatTemplate != null) {
            Path tc = dir.resolve("tokenizer_config.json");
            ObjectNode conf;
            try {
                conf = Files.isRegularFile(tc) ? (ObjectNode) JSON.readTree(tc.toFile()) : JSON.createObjectNode();
            } catch (com.fasterxml.jackson.core.JsonProcessingException | ClassCastException e) {
                throw new IOException(tokenizerDir.resolve("tokenizer_config.json") + ": not a JSON object", e);
            }
            if (conf == null) throw new IOException(tokenizerDir.resolve("tokenizer_config.json") + ": not a JSON object");
            conf.put("chat_template", chatTemplate);
            JSON.writerWithDefaultPrettyPrinter().writeValue(tc.toFile(), conf);
        }
        String torchDtype = dtype.equals("BF16") ? "bfloat16" : "float32";
        JSON.writerWithDefaultPrettyPrinter().writeValue(dir.resolve("config.json").toFile(), config.toJson(torchDtype));
        Path genSource = tokenizerDir == null ? null : tokenizerDir.resolve("generation_config.json");
        // the source model's generation config as it is (its eos_token_id is where generation stops: GenerationStops),
        // as save_pretrained keeps a model's; one made from config.json for a model without
        if (genSource != null && Files.isRegularFile(genSource)) copyWritable(genSource, dir.resolve("generation_config.json"));
        else writeGenerationConfig(config, dir);

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
    }
}
