package org.grpo4j.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedReader;
import java.io.BufferedWriter;
import java.io.OutputStreamWriter;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import org.grpo4j.reward.Compat;
import org.grpo4j.reward.Rewards;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code grpo4j reward}: scores JSONL rows {dataset, ground_truth, response, ...}; each output line is the input plus
 * "reward" and "verifier" (and "error" for a bad line, which scores 0 while the rest still run).
 */
@Command(name = "reward", mixinStandardHelpOptions = true, description = "Score responses with the GSM8K / MATH / IFEval verifiers.")
final class RewardCommand implements Callable<Integer> {
    @Option(names = "--input", required = true, description = "JSONL with dataset, ground_truth, response per line.") Path input;
    @Option(names = "--output", description = "Output JSONL (default: stdout).") Path output;
    @Option(names = "--verifier-compat", defaultValue = "", description = "open-instruct-3f37c29 for the reference's exact behaviour (default: fixed).") String compat;
    @Option(names = "--verification-reward", defaultValue = "10.0", description = "Reward of a passing verification (default: ${DEFAULT-VALUE}).") double reward;
    @Option(names = "--timeout", defaultValue = "5.0", description = "Seconds per verification (default: ${DEFAULT-VALUE}).") double timeout;

    @Override
    public Integer call() throws Exception {
        ObjectMapper json = new ObjectMapper();
        long t0 = System.nanoTime();
        long rows = 0, bad = 0;
        try (Rewards r = new Rewards(Compat.parse(compat), reward, timeout, Runtime.getRuntime().availableProcessors());
             BufferedReader in = Files.newBufferedReader(input, StandardCharsets.UTF_8);
             Writer w = output == null ? new BufferedWriter(new OutputStreamWriter(System.out, StandardCharsets.UTF_8))
                     : Files.newBufferedWriter(output, StandardCharsets.UTF_8)) {
            List<ObjectNode> batch = new ArrayList<>();
            List<String> errors = new ArrayList<>();
            String line;
            int no = 0;
            while (true) {
                line = in.readLine();
                if (line != null) {
                    no++;
                    if (line.isBlank()) continue;
                    ObjectNode o;
                    String err = null;
                    try {
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
                        err = input + ":" + no + ": " + (e.getMessage() == null ? e.toString() : e.getMessage().lines().findFirst().orElse(""));
                    }
                    batch.add(o);
                    errors.add(err);
                }
                if (batch.size() >= 1024 || (line == null && !batch.isEmpty())) {
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
                        }
                        w.write(json.writeValueAsString(o));
                        w.write('\n');
                        rows++;
                    }
                    batch.clear();
                    errors.clear();
                }
                if (line == null) break;
            }
            w.flush();
            double s = (System.nanoTime() - t0) / 1e9;
            StringBuilder sum = new StringBuilder("grpo4j reward: " + rows + " rows in " + String.format("%.2f", s) + " s ("
                    + String.format("%.0f", rows / Math.max(s, 1e-9)) + " rows/s); bad lines " + bad);
            for (Map.Entry<String, Long> e : r.counters().entrySet()) sum.append("; ").append(e.getKey()).append(' ').append(e.getValue());
            System.err.println(sum);
        }
        return 0;
    }
}
