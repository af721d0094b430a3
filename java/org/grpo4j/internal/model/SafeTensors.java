package org.grpo4j.internal.model;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.grpo4j.internal.backend.Bf16;

/**
 * The safetensors format: an 8-byte little-endian header length, a JSON header mapping tensor names to
 * {dtype, shape, data_offsets}, then the data. Reading memory-maps each tensor's bytes in chunks of at most 1 GiB,
 * so files and tensors past 2 GiB work. The header is validated before any data is touched: bounded size, a JSON
 * object, known dtypes, dtype x shape = byte length, offsets inside the file, tensors tiling the data section with
 * no overlap and no hole. Every error names the file and the tensor.
 */
public final class SafeTensors implements AutoCloseable {
    /** Largest header accepted (the real Llama 3.1 8B shards have headers of a few tens of KB). */
    public static final long MAX_HEADER_BYTES = 100L << 20;

    private static final ObjectMapper JSON = org.grpo4j.internal.util.JsonFiles.MAPPER.copy()
            .enable(com.fasterxml.jackson.core.JsonParser.Feature.STRICT_DUPLICATE_DETECTION); // (a name given twice: the last one won)

    /** A tensor's header entry. */
    public record Info(String name, String dtype, int[] shape, long begin, long end) {
        public long numel() {
            long n = 1;
            for (int d : shape) n *= d;
            return n;
        }
    }

    private final Path file;
    private final FileChannel ch;
    private final long dataStart;
    private final Map<String, Info> tensors = new LinkedHashMap<>();
    private final Map<String, String> metadata = new LinkedHashMap<>();

    private SafeTensors(Path file) throws IOException {
        this.file = file;
        if (Files.isDirectory(file)) throw new IOException(file + ": a directory, not a safetensors file");
        this.ch = FileChannel.open(file, StandardOpenOption.READ);
        try {
            long size = ch.size();
            if (size < 8) throw err("file of " + size + " bytes is too short for a safetensors header");
            ByteBuffer lenBuf = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
            readFully(lenBuf, 0);
            long n = lenBuf.getLong(0);
            if (n <= 0 || n > MAX_HEADER_BYTES)
                throw err("header length " + n + " bytes is outside (0, " + MAX_HEADER_BYTES + "] (not a safetensors file?)");
            if (8 + n > size) throw err("header claims " + n + " bytes but the file has only " + (size - 8) + " after the length");
            ByteBuffer hb = ByteBuffer.allocate((int) n);
            readFully(hb, 8);
            JsonNode h;
            try {
                h = JSON.readTree(org.grpo4j.internal.util.Utf8Lines.decode(hb.array()));
            } catch (java.nio.charset.CharacterCodingException e) {
                throw err("header is not valid UTF-8 (not a safetensors file?)");
            } catch (IOException e) {
                throw err("header is not valid JSON: " + e.getMessage().lines().findFirst().orElse(""));
            }
            if (h == null || !h.isObject()) throw err("header is not a JSON object");
            this.dataStart = 8 + n;
            long dataSize = size - dataStart;
            for (Iterator<Map.Entry<String, JsonNode>> it = h.fields(); it.hasNext(); ) {
                Map.Entry<String, JsonNode> e = it.next();
                if (e.getKey().equals("__metadata__")) {
                    if (e.getValue().isObject()) e.getValue().fields().forEachRemaining(m -> metadata.put(m.getKey(), m.getValue().asText()));
                    continue;
                }
                tensors.put(e.getKey(), parseInfo(e.getKey(), e.getValue(), dataSize));
            }
            List<Info> sorted = new ArrayList<>(tensors.values());
            // (by end too: an empty tensor at an offset where another one starts comes first, in any order of the header)
            sorted.sort((a, b) -> a.begin() != b.begin() ? Long.compare(a.begin(), b.begin()) : Long.compare(a.end(), b.end()));
            long expect = 0;
            Info prev = null;
            for (Info t : sorted) {
                if (t.begin() < expect)
                    throw err("tensor " + t.name() + " data_offsets [" + t.begin() + ", " + t.end() + ") overlap tensor " + prev.name());
                if (t.begin() > expect)
                    throw err("hole of " + (t.begin() - expect) + " bytes before tensor " + t.name() + " (offset " + expect + ")");
                expect = t.end();
                prev = t;
            }
            if (expect != dataSize)
                throw err("tensors cover " + expect + " bytes of data but the file has " + dataSize + " after the header"
                        + (expect > dataSize ? " (truncated file?)" : ""));
        } catch (IOException | RuntimeException | Error e) { // (an OutOfMemoryError on a huge header too: the file is closed)
            ch.close();
            throw e;
        }
    }

    private Info parseInfo(String name, JsonNode v, long dataSize) throws IOException {
        if (!v.isObject()) throw err("tensor " + name + ": header entry is not an object");
        String dtype = v.path("dtype").asText("");
        int bytes = dtypeBytes(dtype);
        if (bytes <= 0) throw err("tensor " + name + ": unknown dtype \"" + dtype + "\"");
        JsonNode s = v.path("shape"), o = v.path("data_offsets");
        if (!s.isArray()) throw err("tensor " + name + ": shape is missing");
        int[] shape = new int[s.size()];
        long numel = 1, byteLength;
        try {
            for (int i = 0; i < shape.length; i++) {
                if (!s.get(i).isIntegralNumber() || !s.get(i).canConvertToInt() || s.get(i).asInt() < 0) throw err("tensor " + name + ": bad shape " + s);
                shape[i] = s.get(i).asInt();
                numel = Math.multiplyExact(numel, shape[i]);
            }
            byteLength = Math.multiplyExact(numel, (long) bytes);  // (wrapped, a 2^62-element shape "needed" 0 bytes)
        } catch (ArithmeticException x) {
            throw err("tensor " + name + ": shape " + s + " of " + dtype + " is too large (its byte count overflows a long)");
        }
        if (!o.isArray() || o.size() != 2 || !o.get(0).isIntegralNumber() || !o.get(1).isIntegralNumber()
                || !o.get(0).canConvertToLong() || !o.get(1).canConvertToLong())
            throw err("tensor " + name + ": data_offsets must be [begin, end], got " + o);
        long b = o.get(0).asLong(), e = o.get(1).asLong();
        if (b < 0 || e < b) throw err("tensor " + name + ": data_offsets [" + b + ", " + e + ") are invalid");
        if (e > dataSize)
            throw err("tensor " + name + ": data_offsets end " + e + " is past the data section of " + dataSize + " bytes (truncated file?)");
        if (e - b != byteLength)
            throw err("tensor " + name + ": " + dtype + " " + s + " needs " + byteLength + " bytes but data_offsets span " + (e - b));
        return new Info(name, dtype, shape, b, e);
    }

    /** Bytes per element of a safetensors dtype, or -1. */
    static int dtypeBytes(String dtype) {
        return switch (dtype) {
            case "F64", "I64", "U64" -> 8;
            case "F32", "I32", "U32" -> 4;
            case "F16", "BF16", "I16", "U16" -> 2;
            case "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2" -> 1;
            default -> -1;
        };
    }

    private IOException err(String msg) { return new IOException(file + ": " + msg); }

    private void readFully(ByteBuffer b, long pos) throws IOException {
        while (b.hasRemaining()) {
            int r = ch.read(b, pos + b.position());
            if (r < 0) throw err("unexpected end of file");
        }
    }

    public static SafeTensors open(Path file) throws IOException { return new SafeTensors(file); }

    public Path file() { return file; }

    public Map<String, Info> tensors() { return tensors; }

    public Map<String, String> metadata() { return metadata; }

    /** Reads a F32, BF16 or F16 tensor as fp32 into dst[dstOffset ..]. */
    public void readFloats(String name, float[] dst, int dstOffset) throws IOException {
        Info t = tensors.get(name);
        if (t == null) throw err("no tensor " + name);
        readFloats(name, 0, t.numel(), dst, dstOffset);
    }

    /**
     * Reads elements [from, from + count) of a F32, BF16 or F16 tensor as fp32 into dst[dstOffset ..]: loading a
     * large tensor piece by piece needs no Java array of its size.
     */
    public void readFloats(String name, long from, long count, float[] dst, int dstOffset) throws IOException {
        Info t = tensors.get(name);
        if (t == null) throw err("no tensor " + name);
        int bytes = dtypeBytes(t.dtype());
        if (!t.dtype().equals("F32") && !t.dtype().equals("BF16") && !t.dtype().equals("F16"))
            throw err("tensor " + name + " has dtype " + t.dtype() + "; grpo4j reads F32, BF16 and F16");
        if (from < 0 || count < 0 || from + count > t.numel())
            throw new IllegalArgumentException("elements [" + from + ", " + (from + count) + ") of " + name + " (" + t.numel() + " elements)");
        long n = count;
        if (dstOffset < 0 || dstOffset + n > dst.length) throw new IllegalArgumentException("destination too small for " + name);
        long chunkElems = (1L << 30) / bytes;
        for (long done = 0; done < n; done += chunkElems) {
            long cnt = Math.min(chunkElems, n - done);
            MappedByteBuffer m = ch.map(FileChannel.MapMode.READ_ONLY, dataStart + t.begin() + (from + done) * bytes, cnt * bytes);
            m.order(ByteOrder.LITTLE_ENDIAN);
            int base = (int) (dstOffset + done);
            switch (t.dtype()) {
                case "F32" -> m.asFloatBuffer().get(dst, base, (int) cnt);
                case "BF16" -> { for (int i = 0; i < cnt; i++) dst[base + i] = Bf16.toFloat(m.getShort(2 * i)); }
                default -> { for (int i = 0; i < cnt; i++) dst[base + i] = halfToFloat(m.getShort(2 * i)); }
            }
        }
    }

    /** IEEE fp16 to fp32 (exact; subnormals, infinities and NaN included). */
    static float halfToFloat(short h) {
        int bits = h & 0xFFFF, sign = (bits >>> 15) << 31, exp = (bits >>> 10) & 0x1F, mant = bits & 0x3FF;
        if (exp == 0x1F) return Float.intBitsToFloat(sign | 0x7F800000 | (mant << 13));
        if (exp == 0) {
            float f = mant * 0x1.0p-24f;
            return sign != 0 ? -f : f;
        }
        return Float.intBitsToFloat(sign | ((exp + 112) << 23) | (mant << 13));
    }

    public float[] readFloats(String name) throws IOException {
        Info t = tensors.get(name);
        if (t == null) throw err("no tensor " + name);
        if (t.numel() > Integer.MAX_VALUE - 8) throw err("tensor " + name + " has " + t.numel() + " elements, more than one Java array holds");
        float[] out = new float[(int) t.numel()];
        readFloats(name, out, 0);
        return out;
    }

    @Override
    public void close() throws IOException { ch.close(); }

    // ---- writing ------------------------------------------------------------------------------------------------

    /**
     * Where a tensor's fp32 values come from when it is written: {@code read(from, into, length)} fills
     * {@code into[0, length)} with elements [from, from + length). Called in order, from element 0, in pieces of at
     * most 2^20 elements, so a tensor is never held whole by the writer (a device tensor is downloaded piece by piece).
     */
    @FunctionalInterface
    public interface Source {
        void read(long from, float[] into, int length) throws IOException;
    }

    /** A tensor to write: fp32 values, stored as F32 or BF16. */
    public record Out(String name, int[] shape, Source source) {
        /** Values from {@code data}, starting at {@code offset}. */
        public Out(String name, int[] shape, float[] data, int offset) {
            this(name, shape, (from, into, length) -> System.arraycopy(data, Math.toIntExact(offset + from), into, 0, length));
        }
    }

    /** The pieces {@link Source#read} is called with: at most this many elements. */
    public static final int WRITE_PIECE = 1 << 20;

    /** Writes one safetensors file (header padded to 8 bytes, as the Rust writer does). */
    public static void write(Path file, List<Out> tensors, String dtype, Map<String, String> meta) throws IOException {
        if (!dtype.equals("F32") && !dtype.equals("BF16")) throw new IllegalArgumentException("write dtype must be F32 or BF16, got " + dtype);
        int eb = dtypeBytes(dtype);
        ObjectNode h = JSON.createObjectNode();
        if (meta != null && !meta.isEmpty()) {
            ObjectNode m = h.putObject("__metadata__");
            new java.util.TreeMap<>(meta).forEach(m::put); // sorted: the same bytes whatever the map's order (Map.of's varies from run to run)
        }
        long off = 0;
        for (Out t : tensors) {
            long n = 1;
            for (int d : t.shape()) n *= d;
            ObjectNode e = h.putObject(t.name());
            e.put("dtype", dtype);
            var s = e.putArray("shape");
            for (int d : t.shape()) s.add(d);
            var o = e.putArray("data_offsets");
            o.add(off);
            o.add(off + n * eb);
            off += n * eb;
        }
        byte[] hdr = JSON.writeValueAsBytes(h);
        int padded = (hdr.length + 7) / 8 * 8;
        byte[] hp = new byte[padded];
        java.util.Arrays.fill(hp, (byte) ' ');
        System.arraycopy(hdr, 0, hp, 0, hdr.length);
        try (OutputStream os = new java.io.BufferedOutputStream(Files.newOutputStream(file), 1 << 20)) {
            ByteBuffer lb = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(padded);
            os.write(lb.array());
            os.write(hp);
            float[] piece = new float[WRITE_PIECE];
            ByteBuffer buf = ByteBuffer.allocate(WRITE_PIECE * eb).order(ByteOrder.LITTLE_ENDIAN);
            for (Out t : tensors) {
                long n = 1;
                for (int d : t.shape()) n *= d;
                for (long from = 0; from < n; from += WRITE_PIECE) {
                    int len = (int) Math.min(WRITE_PIECE, n - from);
                    t.source().read(from, piece, len);
                    buf.clear();
                    if (eb == 4) for (int i = 0; i < len; i++) buf.putFloat(piece[i]);
                    else for (int i = 0; i < len; i++) buf.putShort(Bf16.fromFloat(piece[i]));
                    os.write(buf.array(), 0, buf.position());
                }
            }
        }
    }
}
