package org.grpo4j.internal.cli;

import com.fasterxml.jackson.core.SerializableString;
import com.fasterxml.jackson.core.io.CharacterEscapes;
import com.fasterxml.jackson.core.io.SerializedString;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedWriter;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStreamWriter;
import java.io.Writer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import org.grpo4j.reward.Compat;
import org.grpo4j.reward.Rewards;
import org.grpo4j.internal.util.AtomicDir;
import org.grpo4j.internal.util.Utf8Lines;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code grpo4j reward}: scores JSONL rows {dataset, ground_truth, response, ...}; each output line is the input plus
 * "reward" and "verifier" (and "error" for a bad line, an unknown dataset or a failed verification, and
 * "timed_out": true when the verification ran out of time; such rows score 0 while the rest still run).
 *
 * <p>The output file appears only when complete (written to a temporary sibling, then renamed), so a failure never
 * leaves it half-written; an existing file is replaced only with --overwrite, and never when it is the input. Text is kept exactly:
 * strings with unpaired UTF-16 surrogates (legal in JSON escapes) are written back as the same escapes.
 */
@Command(name = "reward", mixinStandardHelpOptions = true, description = "Score responses with the GSM8K / MATH / IFEval verifiers.")
final class RewardCommand implements Callable<Integer> {
    @Option(names = "--input", required = true, description = "JSONL with dataset, ground_truth, response per line.") Path input;
    @Option(names = "--output", description = "Output JSONL (default: stdout); written when complete, never the input, never over an existing file"
            + " without --overwrite.") Path output;
    @Option(names = "--overwrite", description = "Replace an existing --output file.") boolean overwrite;
    @Option(names = "--verifier-compat", defaultValue = "", description = "open-instruct-3f37c29 for the reference's exact behaviour (default: fixed).") String compat;
    @Option(names = "--verification-reward", defaultValue = "10.0", description = "Reward of a passing verification (default: ${DEFAULT-VALUE}).") double reward;
    @Option(names = "--timeout", defaultValue = "5.0", description = "Seconds per verification (default: ${DEFAULT-VALUE}).") double timeout;

    /** JSON writing that escapes every UTF-16 surrogate, so an unpaired one survives (an encoder would write "?"). */
    static ObjectMapper exactJson() {
        // (reading: one JSON value per document; a second one after it is an error, not dropped)
        ObjectMapper m = new ObjectMapper().enable(com.fasterxml.jackson.databind.DeserializationFeature.FAIL_ON_TRAILING_TOKENS);
        m.getFactory().setCharacterEscapes(new CharacterEscapes() {
            private final int[] ascii = standardAsciiEscapesForJSON();

            @Override
            public int[] getEscapeCodesForAscii() { return ascii; }

            @Override
            public SerializableString getEscapeSequence(int ch) {
                return Character.isSurrogate((char) ch) ? new SerializedString(String.format("\\u%04x", ch)) : null;
            }
        });
        return m;
    }

    @Override
    public Integer call() throws Exception {
        if (input.toString().isBlank()) throw new IllegalArgumentException("--input is empty");
        if (!(reward > 0) || !Double.isFinite(reward)) throw new IllegalArgumentException("--verification-reward must be a finite number > 0, got " + reward);
        if (!(timeout > 0) || !Double.isFinite(timeout)) throw new IllegalArgumentException("--timeout must be a finite number of seconds > 0, got " + timeout);
        if (!Files.exists(input)) throw new java.nio.file.NoSuchFileException(input.toString(), null, "--input");
        if (Files.isDirectory(input)) throw new IllegalArgumentException(input + ": is a directory (--input takes a JSONL file)");
        Path tmp = null;
        if (output != null) {
            if (output.toString().isBlank()) throw new IllegalArgumentException("--output is empty (leave it out to write to stdout)");
            if (Files.isDirectory(output)) throw new IllegalArgumentException(output + ": is a directory (--output takes a file)");
            if (Files.exists(output) && Files.isSameFile(input, output))
                throw new IllegalArgumentException("--output " + output + " is the --input file: writing it would destroy the input; choose another output file");
            if (Files.exists(output) && !overwrite)
                throw new IllegalArgumentException("--output " + output + " exists (earlier results?): give another file, or --overwrite to replace it");
            Path dir = output.toAbsolutePath().getParent();
            if (!Files.isDirectory(dir)) throw new java.nio.file.NoSuchFileException(dir.toString(), null, "the --output file's directory");
            tmp = AtomicDir.temporaryFileFor(output);
            tmp.toFile().deleteOnExit(); // (stopped by Ctrl-C: no hidden file left; the finally below covers the rest)
        }
        try {
            run(tmp);
            if (tmp != null) {
                try {
                    AtomicDir.moveIntoPlace(tmp, output, overwrite);
                } catch (java.nio.file.FileAlreadyExistsException e) {
                    throw new IllegalArgumentException("--output " + output + " was made while the rows were scored: it is kept, these results are"
                            + " not written (--overwrite replaces it)");
                }
            }
        } finally {
            if (tmp != null) Files.deleteIfExists(tmp);
        }
        return 0;
    }

    private void run(Path tmp) throws IOException {
        ObjectMapper json = exactJson();
        long t0 = System.nanoTime();
        long rows = 0, bad = 0;
        try (Rewards r = new Rewards(Compat.parse(compat, "--verifier-compat"), reward, timeout, Runtime.getRuntime().availableProcessors());
             InputStream in = Files.newInputStream(input);
             Writer w = tmp == null ? new BufferedWriter(new OutputStreamWriter(System.out, StandardCharsets.UTF_8))
                     : Files.newBufferedWriter(tmp, StandardCharsets.UTF_8)) {
            String known = String.join(", ", r.names());
            List<ObjectNode> batch = new ArrayList<>();
            List<String> errors = new ArrayList<>();
            Utf8Lines lines = new Utf8Lines(in);
            while (true) {
                byte[] raw = lines.nextRaw();
                if (raw != null) {
                    int no = lines.number();
                    ObjectNode o;
                    String err = null;
                    String line;
                    try {
                        line = Utf8Lines.decode(raw);
                    } catch (CharacterCodingException e) {
                        line = new String(raw, StandardCharsets.UTF_8);
                        err = input + ":" + no + ": not valid UTF-8";
                    }
                    if (no == 1 && line.startsWith("\uFEFF")) line = line.substring(1); // a byte order mark (Jackson refuses it)
                    if (err == null && line.isBlank()) continue;
                    try {
                        if (err != null) throw new IllegalArgumentException(err);
                        JsonNode n = json.readTree(line);
                        if (n == null || !n.isObject()) throw new IllegalArgumentException("not a JSON object");
                        o = (ObjectNode) n;
                        for (String k : List.of("dataset", "response"))
                            if (!o.path(k).isTextual()) throw new IllegalArgumentException("field \"" + k + "\" must be a string");
                        if (!o.has("ground_truth")) throw new IllegalArgumentException("field \"ground_truth\" is missing");
                    } catch (Exception e) {
                        o = json.createObjectNode();
                        o.put("line", no);
                        o.put("input", line.length() > 200 ? line.substring(0, 200) + "..." : line);
                        if (err == null) {
                            String m = e instanceof com.fasterxml.jackson.core.JsonProcessingException j ? "not valid JSON: " + org.grpo4j.internal.util.JsonErrors.describeLine(j) : e.getMessage();
                            err = input + ":" + no + ": " + (m == null ? "unreadable" : m.lines().findFirst().orElse(""));
                        }
                    }
                    batch.add(o);
                    errors.add(err);
                }
                if (batch.size() >= 1024 || (raw == null && !batch.isEmpty())) {
                    List<Rewards.Item> items = new ArrayList<>();
                    for (int i = 0; i < batch.size(); i++) {
                        ObjectNode o = batch.get(i);
                        JsonNode gt = o.get("ground_truth");
                        items.add(errors.get(i) != null ? null : new Rewards.Item(o.get("response").asText(),
                                gt == null || gt.isNull() ? null : gt.isTextual() ? gt.asText() : gt.toString(), o.get("dataset").asText(), null));
                    }
                    List<Rewards.Item> valid = items.stream().filter(java.util.Objects::nonNull).toList();
                    List<Rewards.Result> res = r.scoreAll(valid);
                    int k = 0;
                    for (int i = 0; i < batch.size(); i++) {
                        ObjectNode o = batch.get(i);
                        if (errors.get(i) != null) {
                            o.put("reward", 0.0);
                            o.put("verifier", "none");
                            o.put("error", errors.get(i));
                            bad++;
                        } else {
                            Rewards.Result x = res.get(k++);
                            o.put("reward", x.reward());
                            o.put("verifier", x.verifier());
                            if (x.error() != null) o.put("error", x.error());
                            else if (x.verifier().equals("none"))
                                o.put("error", "no verifier for dataset \"" + o.get("dataset").asText() + "\" (known: " + known + ")");
                            if (x.timedOut()) o.put("timed_out", true);
                        }
                        w.write(json.writeValueAsString(o));
                        w.write('\n');
                        rows++;
                    }
                    batch.clear();
                    errors.clear();
                }
                if (raw == null) break;
            }
            w.flush();
            double s = (System.nanoTime() - t0) / 1e9;
            StringBuilder sum = new StringBuilder("grpo4j reward: " + rows + " rows in " + String.format("%.2f", s) + " s ("
                    + String.format("%.0f", rows / Math.max(s, 1e-9)) + " rows/s); bad lines " + bad);
            for (Map.Entry<String, Long> e : r.counters().entrySet()) sum.append("; ").append(e.getKey()).append(' ').append(e.getValue());
            if (tmp != null) sum.append("; wrote ").append(output);
            System.err.println(sum);
        }
        if (tmp != null) {
            try (var ch = java.nio.channels.FileChannel.open(tmp, java.nio.file.StandardOpenOption.WRITE)) {
                ch.force(true);
            }
        }
    }
}
