package org.grpo4j.internal.tokenizer;

import ai.djl.huggingface.tokenizers.HuggingFaceTokenizer;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * An HF tokenizer loaded from a model directory ({@code tokenizer.json} + {@code tokenizer_config.json}).
 *
 * <p>Encoding and decoding go through HF tokenizers itself (the Rust library, bound by DJL, which ships its native
 * library in its jar and never downloads), so ids are exactly HF's. {@link #encode} never adds special tokens (the
 * chat template decides about BOS, as {@code apply_chat_template(..., add_special_tokens=False)} does); special tokens
 * written in the text are recognized. Thread-safe.
 */
public final class Tokenizer implements AutoCloseable {
    private static final ObjectMapper JSON = org.grpo4j.internal.util.JsonFiles.MAPPER;

    /** DJL's choice of native-library build: RUST_FLAVOR (DJL 0.38), TOKENIZERS_FLAVOR (earlier versions). */
    static final String[] FLAVORS = {"RUST_FLAVOR", "TOKENIZERS_FLAVOR"};

    static {
        // Where DJL sees a GPU it picks a CUDA build of its native tokenizers library, which its jar does not hold,
        // and downloads it: the first GPU runs failed so ("Cannot download jni files: .../cu122-90/libtokenizers.so").
        // The tokenizer needs no GPU and nothing is downloaded at run time here: the jar's CPU build, unless the user
        // chose a flavor (environment or property; DJL reads the environment first). Only this choice is made, not DJL's
        // global offline mode, so an application that downloads DJL models itself is unaffected.
        for (String f : FLAVORS)
            if (System.getenv(f) == null && System.getProperty(f) == null) System.setProperty(f, "cpu");
        String lib = NativeLibrary.install();
        if (lib != null) System.setProperty(NativeLibrary.OVERRIDE, lib);
    }

    /**
     * The jar's CPU build of the tokenizers library, extracted where DJL's own extraction cannot break it. DJL
     * extracts into {@code <cache>/tokenizers/<version>-cpu-<platform>/}, one level deeper ({@code .../90/}) when it sees
     * a GPU of that compute capability, by moving a temporary directory onto that path, quietly doing nothing when the
     * path exists: after a JVM that saw a GPU had made {@code .../cpu-linux-x86_64/90/}, every JVM without one
     * (tests, eval or export on the CPU) failed with "Can't load library: .../cpu-linux-x86_64/libtokenizers.so".
     * Here the file is written under a name of its own and renamed atomically (concurrent processes each rename an
     * identical copy), then handed to DJL as {@code RUST_LIBRARY_PATH}, which DJL loads as given. Not done when the
     * user set RUST_LIBRARY_PATH or a flavor other than cpu, when the jar has no build for this platform, or when
     * the cache cannot be written (DJL's own extraction then runs).
     */
    static final class NativeLibrary {
        static final String OVERRIDE = "RUST_LIBRARY_PATH";

        private NativeLibrary() {}

        /** The extracted library's path, or null to leave the choice to DJL. */
        static String install() {
            if (System.getenv(OVERRIDE) != null || System.getProperty(OVERRIDE) != null) return null;
            for (String f : FLAVORS) {
                String v = System.getenv(f) != null ? System.getenv(f) : System.getProperty(f);
                if (v != null && !v.equals("cpu")) return null;
            }
            String platform = platform();
            if (platform == null) return null;
            String name = System.mapLibraryName("tokenizers");
            ClassLoader cl = HuggingFaceTokenizer.class.getClassLoader();
            String version;
            try (InputStream in = cl.getResourceAsStream("native/lib/tokenizers.properties")) {
                if (in == null) return null;
                java.util.Properties p = new java.util.Properties();
                p.load(in);
                version = p.getProperty("version");
            } catch (IOException e) {
                return null;
            }
            if (version == null || !version.matches("[0-9A-Za-z._-]+")) return null;
            String resource = "native/lib/" + platform + "/cpu/" + name;
            java.net.URL url = cl.getResource(resource);
            if (url == null) return null;
            try {
                Path dir = ai.djl.util.Utils.getEngineCacheDir("tokenizers").resolve("grpo4j-" + version + "-cpu-" + platform);
                Path target = dir.resolve(name);
                long size = url.openConnection().getContentLengthLong();
                if (Files.isRegularFile(target) && size >= 0 && Files.size(target) == size) return target.toString();
                Files.createDirectories(dir);
                Path tmp = Files.createTempFile(dir, name, ".part");
                try {
                    try (InputStream in = url.openStream()) {
                        Files.copy(in, tmp, java.nio.file.StandardCopyOption.REPLACE_EXISTING);
                    }
                    Files.move(tmp, target, java.nio.file.StandardCopyOption.ATOMIC_MOVE, java.nio.file.StandardCopyOption.REPLACE_EXISTING);
                } finally {
                    Files.deleteIfExists(tmp);
                }
                return target.toString();
            } catch (IOException | RuntimeException e) {
                return null; // (a cache that cannot be written: DJL's own extraction)
            }
        }

        /** DJL's platform directory in its jar ("linux-x86_64", "osx-aarch64", ...), null for one it has none for. */
        static String platform() {
            String os = System.getProperty("os.name", "").toLowerCase(java.util.Locale.ROOT);
            String arch = System.getProperty("os.arch", "").toLowerCase(java.util.Locale.ROOT);
            String o = os.startsWith("linux") ? "linux" : os.startsWith("mac") ? "osx" : os.startsWith("windows") ? "win" : null;
            String a = arch.equals("amd64") || arch.equals("x86_64") ? "x86_64" : arch.equals("aarch64") || arch.equals("arm64") ? "aarch64" : null;
            return o == null || a == null ? null : o + "-" + a;
        }
    }

    private final Path dir;
    private final HuggingFaceTokenizer hf;
    private final Map<String, Integer> added = new HashMap<>();
    private final Set<Integer> specialIds = new HashSet<>();
    private final int vocabSize;
    private final String bosToken, eosToken, padToken, chatTemplate;
    /** tokenizer_config.json's clean_up_tokenization_spaces (absent: false, transformers' default since 4.45). */
    private final boolean cleanUpSpaces;
    /** transformers' all_special_ids: the ids vLLM's output text skips ({@link #decodeAsVllm}). */
    private final Set<Integer> allSpecialIds = new HashSet<>();

    private Tokenizer(Path dir) throws IOException {
        this.dir = dir;
        Path tj = dir.resolve("tokenizer.json");
        Path tc = dir.resolve("tokenizer_config.json");
        if (!Files.isRegularFile(tj)) throw new NoSuchFileException(tj.toString(), null, "no tokenizer.json in " + dir);
        JsonNode root = optionalObject(tj); // (there: checked above)
        JsonNode model = root.path("model");
        if (!model.path("vocab").isObject())
            throw new IOException(tj + ": model.vocab is missing (grpo4j supports BPE tokenizers, e.g. Llama 3)");
        int maxId = -1;
        Map<Integer, String> vocabById = new HashMap<>(); // (the first token of each id, for the added tokens' check)
        for (var it = model.path("vocab").fields(); it.hasNext(); ) {
            var e = it.next();
            int id = tokenIdOf(e.getValue(), "model.vocab[\"" + e.getKey() + "\"]", tj);
            vocabById.putIfAbsent(id, e.getKey());
            maxId = Math.max(maxId, id);
        }
        for (JsonNode t : root.path("added_tokens")) {
            String content = t.path("content").asText(null);
            if (!t.path("id").isIntegralNumber() || content == null) throw new IOException(tj + ": added_tokens entry without id/content: " + t);
            int id = tokenIdOf(t.path("id"), "added_tokens \"" + content + "\"", tj);
            added.put(content, id);
            if (t.path("special").asBoolean(false)) specialIds.add(id);
            maxId = Math.max(maxId, id);
        }
        this.vocabSize = maxId + 1;
        checkAddedIds(root, model.path("vocab"), vocabById, tj);

        JsonNode cfg = optionalObject(tc);
        this.bosToken = tokenString(cfg, "bos_token", tc);
        this.eosToken = tokenString(cfg, "eos_token", tc);
        this.padToken = tokenString(cfg, "pad_token", tc);
        this.chatTemplate = chatTemplateOf(dir, cfg, tc);
        JsonNode clean = cfg.path("clean_up_tokenization_spaces");
        if (!clean.isMissingNode() && !clean.isNull() && !clean.isBoolean())
            throw new IOException(tc + ": clean_up_tokenization_spaces must be true or false, got " + clean);
        this.cleanUpSpaces = clean.asBoolean(false);
        for (String s : new String[] {bosToken, eosToken, padToken})
            if (s != null && !added.containsKey(s) && !model.path("vocab").has(s))
                throw new IOException(tc + ": special token \"" + s + "\" is not in " + tj);

        Map<String, String> opts = Map.of("addSpecialTokens", "false", "truncation", "false", "padding", "false",
                "modelMaxLength", String.valueOf(Integer.MAX_VALUE / 2));
        try (InputStream in = Files.newInputStream(tj)) {
            this.hf = HuggingFaceTokenizer.newInstance(in, opts);
        } catch (RuntimeException e) {
            throw new IOException(tj + ": HF tokenizers could not load it: " + causes(e), e);
        }
        readAllSpecialIds(cfg, tc, dir.resolve("special_tokens_map.json"));
    }

    /**
     * transformers' all_special_ids: the ids of the special-token attributes (bos, eos, unk, sep, pad, cls, mask) and of
     * additional_special_tokens, as tokenizer_config.json names them, except where it has no added_tokens_decoder (a
     * file written before transformers 4.34): then special_tokens_map.json's values win where it has them, as in
     * transformers' legacy loading. Names that are no single token of this tokenizer are left out (transformers would
     * map them to the unk id, which such a tokenizer does not have either).
     */
    private void readAllSpecialIds(JsonNode cfg, Path tc, Path map) throws IOException {
        JsonNode stm = optionalObject(map);
        for (String key : List.of("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token",
                "additional_special_tokens")) {
            boolean fromMap = !cfg.has("added_tokens_decoder") && stm.has(key) && !stm.get(key).isNull();
            JsonNode src = fromMap ? stm : cfg;
            Path file = fromMap ? map : tc;
            if (!key.equals("additional_special_tokens")) {
                int id = tokenId(tokenString(src, key, file));
                if (id >= 0) allSpecialIds.add(id);
                continue;
            }
            JsonNode list = src.path(key);
            if (list.isMissingNode() || list.isNull()) continue;
            if (!list.isArray()) throw new IOException(file + ": field " + key + " must be a list, got " + list);
            for (JsonNode t : list) {
                String text = tokenText(t);
                if (text == null) throw new IOException(file + ": " + key + " entries must be strings or {\"content\": ...}, got " + t);
                int id = tokenId(text);
                if (id >= 0) allSpecialIds.add(id);
            }
        }
    }

    /**
     * The ids grpo4j takes from the JSON (bos, eos, pad, the vocabulary's size) must be the ids HF tokenizers gives: an
     * added token listed under an id that another token already has (in the vocabulary or among the added tokens) is
     * refused, as is one whose text the vocabulary lists under another id (HF would give it that one). Checked on the
     * file, not by encoding the token's text: a normalizer (Llama 2's Prepend "▁") may turn that text into other tokens
     * for a tokenizer HF loads without complaint.
     */
    private static void checkAddedIds(JsonNode root, JsonNode vocab, Map<Integer, String> byId, Path tj) throws IOException {
        Map<Integer, String> addedById = new HashMap<>();
        for (JsonNode t : root.path("added_tokens")) {
            String content = t.path("content").asText();
            int id = t.path("id").asInt();
            String other = addedById.put(id, content);
            if (other != null && !other.equals(content))
                throw new IOException(tj + ": added tokens \"" + other + "\" and \"" + content + "\" are both listed with id " + id);
            String inVocab = byId.get(id);
            if (inVocab != null && !inVocab.equals(content))
                throw new IOException(tj + ": added token \"" + content + "\" is listed with id " + id + ", which model.vocab gives to \"" + inVocab
                        + "\" (HF tokenizers would not encode \"" + content + "\" as " + id + ")");
            JsonNode v = vocab.get(content);
            if (v != null && v.asInt() != id)
                throw new IOException(tj + ": added token \"" + content + "\" is listed with id " + id + " but model.vocab has it as " + v.asInt());
        }
    }

    /** A JSON object file that may be absent (then an empty object); one that is not a JSON object is refused, named. */
    private static JsonNode optionalObject(Path f) throws IOException {
        if (!Files.isRegularFile(f)) return JSON.createObjectNode();
        JsonNode n;
        try {
            n = JSON.readTree(f.toFile());
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IOException(f + ": not valid JSON: " + org.grpo4j.internal.util.JsonErrors.describe(e), e);
        }
        if (n == null || !n.isObject()) throw new IOException(f + ": expected a JSON object");
        return n;
    }

    /** A token id in tokenizer.json: a whole number in [0, 2^31 - 1) (so that the vocabulary's size is an int). */
    private static int tokenIdOf(JsonNode v, String what, Path file) throws IOException {
        if (!v.isIntegralNumber() || !v.canConvertToInt() || v.asInt() < 0 || v.asInt() == Integer.MAX_VALUE)
            throw new IOException(file + ": " + what + " has id " + v + ", not a whole number in [0, 2147483647)");
        return v.asInt();
    }

    /** The separate template file that transformers writes beside tokenizer_config.json since 4.47 (it wins over the config's). */
    public static final String CHAT_TEMPLATE_FILE = "chat_template.jinja";

    /**
     * The tokenizer's chat template as transformers finds it: chat_template.jinja when present, else
     * tokenizer_config.json's chat_template, a string or transformers' list of named templates (the one named
     * "default"); null when there is none.
     */
    private static String chatTemplateOf(Path dir, JsonNode cfg, Path tc) throws IOException {
        Path file = dir.resolve(CHAT_TEMPLATE_FILE);
        if (Files.isRegularFile(file)) {
            try {
                return Files.readString(file);
            } catch (java.nio.charset.MalformedInputException e) {
                throw new IOException(file + ": not valid UTF-8", e);
            }
        }
        JsonNode t = cfg.path("chat_template");
        if (t.isMissingNode() || t.isNull()) return null;
        if (t.isTextual()) return t.asText();
        if (t.isArray()) {
            List<String> names = new java.util.ArrayList<>();
            for (JsonNode e : t) {
                String name = e.path("name").asText(null);
                if (name == null || !e.path("template").isTextual())
                    throw new IOException(tc + ": chat_template list entries must be {\"name\": ..., \"template\": ...}, got " + e);
                if (name.equals("default")) return e.path("template").asText();
                names.add(name);
            }
            return null; // (no "default" among its named templates: none for grpo4j, whose chat_template_name says so when asked)
        }
        throw new IOException(tc + ": chat_template must be a string or a list of {name, template}, got a " + t.getNodeType().toString().toLowerCase(java.util.Locale.ROOT));
    }

    /** The messages of a throwable and its causes (at most 8 deep), each once: DJL's wrappers hide the cause's. */
    static String causes(Throwable e) {
        java.util.List<String> seen = new java.util.ArrayList<>();
        for (Throwable c = e; c != null && seen.size() < 8; c = c.getCause()) {
            String m = c.getMessage();
            if (m != null && seen.stream().noneMatch(x -> x.contains(m))) seen.add(m);
            if (c.getCause() == c) break;
        }
        return seen.isEmpty() ? e.getClass().getSimpleName() : String.join(": ", seen);
    }

    /** Values may be a string or an object with "content" (AddedToken). */
    private static String tokenString(JsonNode cfg, String key, Path file) throws IOException {
        JsonNode n = cfg.path(key);
        if (n.isMissingNode() || n.isNull()) return null;
        String text = tokenText(n);
        if (text == null) throw new IOException(file + ": field " + key + " must be a string or {\"content\": ...}, got " + n);
        return text;
    }

    /** A token as tokenizer_config.json writes it: a string, or an AddedToken object's content; null for anything else. */
    private static String tokenText(JsonNode n) {
        if (n.isTextual()) return n.asText();
        return n.isObject() && n.path("content").isTextual() ? n.path("content").asText() : null;
    }

    /** Loads the tokenizer of an HF model directory. */
    public static Tokenizer load(Path modelDir) throws IOException {
        if (!Files.isDirectory(modelDir)) throw new NoSuchFileException(modelDir.toString(), null, "not a directory");
        return new Tokenizer(modelDir);
    }

    public Path directory() { return dir; }

    /**
     * The tiny byte-level BPE tokenizer bundled in grpo4j's jar (the demo's; from examples/tiny-tokenizer), as a
     * directory: one per JVM, reused by every later call while its files are there (a long-lived application that
     * starts many init:tiny trainers gathered a directory each). The directory is shared by this user's JVMs and
     * named after its content ({@code grpo4j-tiny-tokenizer-USER-HASH} in java.io.tmpdir), so a JVM that is killed
     * leaves nothing new behind; where that name cannot be used (another user's, or not a plain directory) the files
     * go to a temporary directory of this JVM, deleted when it exits.
     */
    public static synchronized Path extractBundledTiny() throws IOException {
        if (bundledTiny != null && Files.isRegularFile(bundledTiny.resolve("tokenizer.json"))
                && Files.isRegularFile(bundledTiny.resolve("tokenizer_config.json"))) return bundledTiny;
        bundledTiny = extractTiny(Path.of(System.getProperty("java.io.tmpdir")));
        return bundledTiny;
    }

    private static Path bundledTiny;

    private static final String[] TINY_FILES = {"tokenizer.json", "tokenizer_config.json"};

    /** The bundled tiny tokenizer's files under {@code root}: in the shared directory of its content where possible. */
    static Path extractTiny(Path root) throws IOException {
        Map<String, byte[]> files = new java.util.LinkedHashMap<>();
        java.security.MessageDigest md;
        try {
            md = java.security.MessageDigest.getInstance("SHA-256");
        } catch (java.security.NoSuchAlgorithmException e) {
            throw new IllegalStateException(e); // every JVM has SHA-256
        }
        for (String f : TINY_FILES) {
            try (InputStream in = Tokenizer.class.getResourceAsStream("/org/grpo4j/examples/tiny-tokenizer/" + f)) {
                if (in == null) throw new IOException("the bundled tiny tokenizer is missing from the classpath (" + f + ")");
                byte[] b = in.readAllBytes();
                files.put(f, b);
                md.update((f + "\0" + b.length + "\0").getBytes(java.nio.charset.StandardCharsets.UTF_8));
                md.update(b);
            }
        }
        String user = System.getProperty("user.name", "").replaceAll("[^A-Za-z0-9._-]", "_");
        Path shared = root.resolve("grpo4j-tiny-tokenizer-" + user + "-" + java.util.HexFormat.of().formatHex(md.digest(), 0, 6));
        if (holds(shared, files)) return shared;
        Path fresh = Files.createTempDirectory(root, "grpo4j-tiny-tokenizer");
        for (var e : files.entrySet()) Files.write(fresh.resolve(e.getKey()), e.getValue());
        for (int attempt = 0; attempt < 2; attempt++) {
            try {
                Files.move(fresh, shared, java.nio.file.StandardCopyOption.ATOMIC_MOVE);
                return shared;
            } catch (IOException e) {
                if (holds(shared, files)) { // another JVM was first
                    deleteTiny(fresh);
                    return shared;
                }
                if (attempt == 0 && ownDirectory(shared)) deleteTiny(shared); // damaged: replaced once
            }
        }
        fresh.toFile().deleteOnExit(); // the name is not usable: this JVM's own copy
        for (String f : TINY_FILES) fresh.resolve(f).toFile().deleteOnExit();
        return fresh;
    }

    /** Whether {@code dir} is this user's directory, writable by no one else, holding exactly these files. */
    private static boolean holds(Path dir, Map<String, byte[]> files) {
        if (!ownDirectory(dir)) return false;
        try {
            for (var e : files.entrySet()) {
                Path f = dir.resolve(e.getKey());
                if (!Files.isRegularFile(f, java.nio.file.LinkOption.NOFOLLOW_LINKS) || Files.size(f) != e.getValue().length
                        || !java.util.Arrays.equals(Files.readAllBytes(f), e.getValue())) return false;
            }
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    private static boolean ownDirectory(Path dir) {
        try {
            if (!Files.isDirectory(dir, java.nio.file.LinkOption.NOFOLLOW_LINKS)) return false;
            if (!Files.getOwner(dir, java.nio.file.LinkOption.NOFOLLOW_LINKS).getName().equals(System.getProperty("user.name"))) return false;
            if (dir.getFileSystem().supportedFileAttributeViews().contains("posix")) {
                Set<java.nio.file.attribute.PosixFilePermission> p = Files.getPosixFilePermissions(dir, java.nio.file.LinkOption.NOFOLLOW_LINKS);
                if (p.contains(java.nio.file.attribute.PosixFilePermission.GROUP_WRITE)
                        || p.contains(java.nio.file.attribute.PosixFilePermission.OTHERS_WRITE)) return false;
            }
            return true;
        } catch (IOException | UnsupportedOperationException e) {
            return false;
        }
    }

    /** Deletes a tiny-tokenizer directory: its own files, then the directory (a stranger's file in it keeps it). */
    private static void deleteTiny(Path dir) {
        try {
            for (String f : TINY_FILES) Files.deleteIfExists(dir.resolve(f));
            Files.deleteIfExists(dir);
        } catch (IOException ignored) {
            // (a directory left behind is not used: holds() checks every file)
        }
    }

    /** Token ids of {@code text}; no special tokens are added. */
    public int[] encode(String text) {
        long[] ids = hf.encode(text, false, false).getIds();
        int[] out = new int[ids.length];
        for (int i = 0; i < ids.length; i++) out[i] = (int) ids[i];
        return out;
    }

    /** Text of {@code ids}; special tokens are dropped when {@code skipSpecialTokens}. */
    public String decode(int[] ids, boolean skipSpecialTokens) {
        long[] l = new long[ids.length];
        for (int i = 0; i < ids.length; i++) {
            if (ids[i] < 0 || ids[i] >= vocabSize)
                throw new IllegalArgumentException("decode: id " + ids[i] + " at position " + i + " is outside the vocabulary [0, " + vocabSize + ")");
            l[i] = ids[i];
        }
        return hf.decode(l, skipSpecialTokens);
    }

    /**
     * Like {@link #decode} but ids outside the tokenizer (e.g. the padded rows of a model whose vocab_size is larger)
     * are dropped, as HF tokenizers does, instead of failing: for text produced by sampling.
     */
    public String decodeLenient(int[] ids, boolean skipSpecialTokens) {
        int n = 0;
        for (int id : ids) if (id >= 0 && id < vocabSize) n++;
        int[] keep = new int[n];
        int k = 0;
        for (int id : ids) if (id >= 0 && id < vocabSize) keep[k++] = id;
        return decode(keep, skipSpecialTokens);
    }

    /**
     * What transformers' {@code tokenizer.decode(ids, skip_special_tokens=...)} returns, ids outside the tokenizer
     * dropped as {@link #decodeLenient}: HF tokenizers' text, then, when tokenizer_config.json sets
     * clean_up_tokenization_spaces (Llama 3's and 3.1's files do), transformers' clean_up_tokenization (" ." to ".",
     * " ," to ",", " n't" to "n't", ...). The reference trainer scores responses decoded this way (batch_decode), so the
     * verifiers see this text; generated text elsewhere (samples, generate) is the tokenizer's own, special tokens
     * skipped, and stop strings are matched on vLLM's text ({@link #decodeAsVllm}).
     */
    public String decodeAsTransformers(int[] ids, boolean skipSpecialTokens) {
        String text = decodeLenient(ids, skipSpecialTokens);
        return cleanUpSpaces ? cleanUpTokenization(text) : text;
    }

    /** transformers' PreTrainedTokenizerBase.clean_up_tokenization (4.47), the same replacements in the same order. */
    static String cleanUpTokenization(String s) {
        return s.replace(" .", ".").replace(" ?", "?").replace(" !", "!").replace(" ,", ",").replace(" ' ", "'")
                .replace(" n't", "n't").replace(" 'm", "'m").replace(" 's", "'s").replace(" 've", "'ve").replace(" 're", "'re");
    }

    /**
     * The text vLLM gives for {@code ids} with its default skip_special_tokens (0.6, a fast tokenizer): ids outside
     * the tokenizer dropped, then the ids of transformers' all_special_ids (bos, eos, pad, unk, ...,
     * additional_special_tokens: {@code convert_ids_to_tokens(skip_special_tokens=True)}), and the rest decoded as
     * they are. Added tokens that tokenizer.json marks special but that are none of those (Llama 3's
     * {@code <|eot_id|>}, {@code <|start_header_id|>}, its reserved tokens) stay in this text, where
     * {@link #decode decode(ids, true)} drops every token marked special. Stop strings are matched on this text.
     */
    public String decodeAsVllm(int[] ids) {
        int n = 0;
        for (int id : ids) if (id >= 0 && id < vocabSize && !allSpecialIds.contains(id)) n++;
        int[] keep = new int[n];
        int k = 0;
        for (int id : ids) if (id >= 0 && id < vocabSize && !allSpecialIds.contains(id)) keep[k++] = id;
        return decode(keep, false);
    }

    /** tokenizer_config.json's clean_up_tokenization_spaces. */
    public boolean cleansUpTokenizationSpaces() { return cleanUpSpaces; }

    /** Number of ids (model vocabulary plus added tokens). */
    public int vocabSize() { return vocabSize; }

    public String bosToken() { return bosToken; }
    public String eosToken() { return eosToken; }
    public String padToken() { return padToken; }

    /** Id of a single-token string (special/added or vocabulary), or -1. */
    public int tokenId(String token) {
        if (token == null) return -1;
        Integer id = added.get(token);
        if (id != null) return id;
        int[] ids = encode(token);
        return ids.length == 1 ? ids[0] : -1;
    }

    public int bosId() { return tokenId(bosToken); }
    public int eosId() { return tokenId(eosToken); }

    /** The pad id; falls back to the EOS id when the tokenizer has no pad token (Llama 3 base). */
    public int padId() {
        int p = tokenId(padToken);
        return p >= 0 ? p : eosId();
    }

    public boolean isSpecial(int id) { return specialIds.contains(id); }

    /** The chat template (chat_template.jinja, else tokenizer_config.json's chat_template), or null. */
    public String chatTemplate() { return chatTemplate; }

    @Override
    public void close() { hf.close(); }
}
