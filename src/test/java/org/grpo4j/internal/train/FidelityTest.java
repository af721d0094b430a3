package org.grpo4j.internal.train;

import org.grpo4j.train.GrpoConfig;
import org.grpo4j.internal.backend.KlEstimator;
import static org.junit.jupiter.api.Assertions.*;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Fidelity to open-instruct 3f37c29 (issue 20): metrics_compat, min_response_length, the two Tulu configs, refused options. */
class FidelityTest {

    /**
     * A known batch: one epoch of M = 2 mini-batches x GAS = 3 micro-batches of 2 sequences, nspp = 16, response
     * length 10. The reference's numbers come from its own procedure, transcribed here: a zero (E, nspp, GAS) tensor
     * with stats[e, mb, ga] written, then .mean() and torch.var (unbiased) over the whole tensor (G:939-956, 1270-1315).
     */
    @Test
    void metricsCompatDilutesAsTheReferenceOnAKnownBatch() {
        int E = 1, nspp = 16, gas = 3, L = 10, seqs = 2;
        double beta = 0.05;
        TrainStats st = new TrainStats();
        // (mini, ga) -> loss tokens, loss, pg, sum ratio, sum clipped, sum 0.5 d^2, sum kl
        double[][] v = {
                {12, 0.5, 0.4, 12.0, 0, 0.0, 0.0}, {7, -0.25, -0.3, 7.0, 0, 0.0, 0.0}, {15, 0.1, 0.05, 15.0, 0, 0.0, 0.0},
                {9, 0.3, 0.2, 9.9, 2, 0.045, 0.4}, {20, -0.6, -0.7, 19.0, 5, 0.09, 1.6}, {4, 0.05, 0.01, 4.4, 1, 0.02, 0.08}};
        for (int i = 0; i < v.length; i++)
            st.add(new TrainStats.Micro(0, i / gas, i % gas, seqs, (long) v[i][0], v[i][1], v[i][2], v[i][3], v[i][4], v[i][5], v[i][6]));

        Map<String, Double> correct = new HashMap<>(), compat = new HashMap<>();
        assertTrue(Double.isNaN(st.put(correct, false, E, nspp, gas, L, beta)));
        double nonScore = st.put(compat, true, E, nspp, gas, L, beta);

        // correct values: per micro-batch token means, averaged; unbiased variance of the ratio means
        double[] ratio = new double[6], loss = new double[6], clip = new double[6], akl = new double[6];
        for (int i = 0; i < 6; i++) {
            ratio[i] = v[i][3] / v[i][0];
            loss[i] = v[i][1];
            clip[i] = v[i][4] / v[i][0];
            akl[i] = v[i][5] / v[i][0];
        }
        assertEquals(avg(ratio), correct.get("val/ratio"), 1e-15);
        assertEquals(var(ratio), correct.get("val/ratio_var"), 1e-15);
        assertEquals(avg(loss), correct.get("loss/policy_avg"), 1e-15);
        assertEquals(avg(clip), correct.get("policy/clipfrac_avg"), 1e-15);
        assertEquals(avg(akl), correct.get("policy/approxkl_avg"), 1e-15);

        // the reference's tensors
        double[][][] ratioT = new double[E][nspp][gas], lossT = new double[E][nspp][gas], clipT = new double[E][nspp][gas],
                aklT = new double[E][nspp][gas], nsT = new double[E][nspp][gas];
        for (int i = 0; i < 6; i++) {
            int mb = i / gas, ga = i % gas;
            double all = seqs * L; // ratio.mean() and (0.5 * diff^2).mean() run over the padded (2, L) tensor: ratio 1, diff 0 at padding
            ratioT[0][mb][ga] = (v[i][3] + (all - v[i][0])) / all;
            aklT[0][mb][ga] = v[i][5] / all;
            lossT[0][mb][ga] = v[i][1];
            clipT[0][mb][ga] = v[i][4] / v[i][0];
            nsT[0][mb][ga] = -beta * v[i][6] / seqs; // (-beta * kl).sum(1).mean()
        }
        assertEquals(tmean(ratioT), compat.get("val/ratio"), 1e-15);
        assertEquals(tvar(ratioT), compat.get("val/ratio_var"), 1e-15);
        assertEquals(tmean(lossT), compat.get("loss/policy_avg"), 1e-15);
        assertEquals(tmean(clipT), compat.get("policy/clipfrac_avg"), 1e-15);
        assertEquals(tmean(aklT), compat.get("policy/approxkl_avg"), 1e-15);
        assertEquals(tmean(nsT), nonScore, 1e-15);
        assertEquals(nonScore, compat.get("objective/non_score_reward"));
        // the 1/8 of the Tulu command: 2 of the 16 rows are written
        assertEquals(correct.get("loss/policy_avg") / 8, compat.get("loss/policy_avg"), 1e-15);
        assertEquals(correct.get("policy/clipfrac_avg") / 8, compat.get("policy/clipfrac_avg"), 1e-15);
        assertEquals(correct.get("loss/pg_avg"), compat.get("loss/pg_avg"), "grpo4j's own key is never diluted");
        // with every ratio 1 the reference logs 1/8 and a variance of (48/47) (1/8)(7/8) = 0.1117
        TrainStats ones = new TrainStats();
        for (int i = 0; i < 6; i++) ones.add(new TrainStats.Micro(0, i / gas, i % gas, seqs, 5, 0, 0, 5, 0, 0, 0));
        Map<String, Double> m = new HashMap<>();
        ones.put(m, true, E, nspp, gas, L, beta);
        assertEquals(0.125, m.get("val/ratio"), 1e-15);
        assertEquals(48.0 / 47 * 0.125 * 0.875, m.get("val/ratio_var"), 1e-15);
    }

    static double avg(double[] x) {
        double s = 0;
        for (double a : x) s += a;
        return s / x.length;
    }

    static double var(double[] x) {
        double mu = avg(x), s = 0;
        for (double a : x) s += (a - mu) * (a - mu);
        return s / (x.length - 1);
    }

    static double tmean(double[][][] t) {
        double s = 0;
        int n = 0;
        for (double[][] a : t) for (double[] b : a) for (double c : b) { s += c; n++; }
        return s / n;
    }

    static double tvar(double[][][] t) {
        double mu = tmean(t), s = 0;
        int n = 0;
        for (double[][] a : t) for (double[] b : a) for (double c : b) { s += (c - mu) * (c - mu); n++; }
        return s / (n - 1);
    }

    /** 2 prompts x 16 samples, mini-batch 16 (M = 2, so the Tulu command's 1/8), GAS 4, two PPO epochs, linear LR. */
    static List<String> tiny(Path out, String... more) {
        List<String> s = new ArrayList<>(List.of("output_dir=" + out, "num_training_steps=2", "sft_warmup.steps=0", "local_rollout_batch_size=2",
                "number_samples_per_prompt=16", "local_mini_batch_size=16", "per_device_train_batch_size=4", "local_rollout_forward_batch_size=16",
                "response_length=8", "save_freq=0", "num_evals=0", "backend=\"cpu\"", "temperature=1.0", "num_epochs=2", "lr_scheduler_type=linear"));
        s.addAll(List.of(more));
        return s;
    }

    static List<Map<String, Double>> run(List<String> sets) throws Exception {
        try (Trainer t = Trainer.builder(GrpoConfig.load(Path.of("examples/tiny-arith.json"), sets)).log(null).build()) {
            return t.run(null).metrics();
        }
    }

    @Test
    void metricsCompatReproducesTheReferencesNumbersOfARun(@TempDir Path tmp) throws Exception {
        List<Map<String, Double>> a = run(tiny(tmp.resolve("a")));
        List<Map<String, Double>> b = run(tiny(tmp.resolve("b"), "metrics_compat=open-instruct-3f37c29"));
        GrpoConfig conf = GrpoConfig.load(Path.of("examples/tiny-arith.json"), tiny(tmp.resolve("c")));
        int k = 32, L = 8, rows = 3000;
        double lr = 1e-3, horizon = 2 * 2 * 2; // steps x epochs x mini-batches
        for (int i = 0; i < 2; i++) {
            Map<String, Double> c = a.get(i), r = b.get(i);
            int step = i + 1;
            // training is the same run: only the logging differs
            for (String key : List.of("objective/scores", "val/sequence_lengths", "val/response_length", "loss/pg_avg", "optim/grad_norm"))
                assertEquals(c.get(key), r.get(key), key);
            // the means over all micro-batches of both epochs, diluted by M / nspp = 2 / 16
            assertEquals(c.get("loss/policy_avg") / 8, r.get("loss/policy_avg"), 1e-12);
            assertEquals(c.get("policy/clipfrac_avg") / 8, r.get("policy/clipfrac_avg"), 1e-12);
            assertEquals(0.125, r.get("val/ratio"), 2e-3, "the reference's val/ratio is about 1/8");
            assertEquals(128.0 / 127 * 0.125 * 0.875, r.get("val/ratio_var"), 2e-3, "and its ratio_var about 0.11");
            assertEquals(1.0, c.get("val/ratio"), 0.05);
            assertTrue(c.get("val/ratio_var") >= 0 && c.get("val/ratio_var") < 1e-2, "unbiased variance of 16 micro-batch ratio means");
            assertEquals(r.get("objective/scores") + r.get("objective/non_score_reward"), r.get("objective/rlhf_reward"), 1e-12);
            // grpo4j's non-score reward is -beta times the selected estimator's KL per response (the metrics' objective/kl*)
            KlEstimator sel = KlEstimator.parse(conf.klEstimator);
            String klKey = sel == KlEstimator.KL1 ? "objective/kl" : "objective/" + sel.label();
            assertEquals(-conf.beta * c.get(klKey), c.get("objective/non_score_reward"), 1e-12 * Math.abs(c.get(klKey)) + 1e-15, klKey);
            // padding: the reference counts the stop tokens it pads with, and subtracts one "entropy" per padded slot
            double pad = k * (L - c.get("val/response_length"));
            assertEquals(c.get("val/num_stop_token_ids") + pad, r.get("val/num_stop_token_ids"), 1e-9);
            assertEquals(c.get("objective/entropy") - pad / k, r.get("objective/entropy"), 1e-6);
            // epoch counts completions in the reference; lr is the rate of the last update vs the reference's next one
            assertEquals((double) step * 2 / rows, c.get("epoch"), 1e-15);
            assertEquals((double) step * k / rows, r.get("epoch"), 1e-15);
            long updates = 4L * step;
            assertEquals(lr * (horizon - (updates - 1)) / horizon, c.get("lr"), 1e-15);
            assertEquals(lr * (horizon - updates) / horizon, r.get("lr"), 1e-15);
            assertEquals(0.0, r.get("policy/entropy_avg"));
            assertFalse(c.containsKey("policy/entropy_avg"));
        }
        // step 1, first epoch: the first mini-batch trains at the reference weights, so its KL terms vanish; the
        // reference's objective/kl uses the training forward, grpo4j's the pre-update policy (exactly 0 at step 1)
        assertEquals(0.0, a.get(0).get("objective/kl"), 1e-6);
        assertNotEquals(0.0, b.get(0).get("objective/kl"));
    }

    @Test
    void minResponseLengthAndStopCounts(@TempDir Path tmp) throws Exception {
        // sequence lengths are at most response_length - 1 = 7, so min_response_length 8 withholds every stop
        List<Map<String, Double>> m = run(tiny(tmp.resolve("m"), "num_training_steps=1", "num_epochs=1", "min_response_length=8", "penalty_reward_value=-1.0"));
        assertEquals(0.0, m.get(0).get("val/stop_token_rate"));
        assertEquals(-1.0, m.get(0).get("objective/scores"), "every response takes the non-stop penalty");
        List<Map<String, Double>> n = run(tiny(tmp.resolve("n"), "num_training_steps=1", "num_epochs=1"));
        double stopped = n.get(0).get("val/stop_token_rate") * 32;
        assertEquals(stopped, n.get(0).get("val/num_stop_token_ids"), 1e-9, "one generated stop token per stopped response");
    }

    /**
     * A rollout stops at a stop_token_ids id (vLLM's stop_token_ids, filled from the generation config by default) and
     * is padded with the EOS, as the reference pads it: with every id but the EOS a stop id, each response is one
     * token, and one that is not the EOS trains on it and the padding EOS (sequence length 1, the EOS's index).
     */
    @Test
    void stopTokenIdsEndRolloutsAndThePaddingEosFollows(@TempDir Path tmp) throws Exception {
        int eos;
        try (org.grpo4j.internal.tokenizer.Tokenizer tok = org.grpo4j.internal.tokenizer.Tokenizer.load(Path.of("examples/tiny-tokenizer"))) {
            eos = tok.eosId();
            List<Integer> ids = new ArrayList<>();
            for (int i = 0; i < tok.vocabSize(); i++) if (i != eos) ids.add(i);
            List<Map<String, Double>> m = run(tiny(tmp.resolve("m"), "num_training_steps=1", "num_epochs=1", "stop_token_ids=" + ids));
            Map<String, Double> s = m.get(0);
            assertEquals(1.0, s.get("val/stop_token_rate"), "every response stopped");
            assertTrue(s.get("val/sequence_lengths_max") <= 1.0, "one generated token, then the padding EOS: " + s);
            assertTrue(s.get("val/sequence_lengths") > 0.5, "most responses end at a stop id other than the EOS: " + s);
            // loss tokens: [x, EOS] for a stop id x, [EOS] for the EOS; the sequence length is the EOS's index
            assertEquals(s.get("val/sequence_lengths") + 1, s.get("val/response_length"), 1e-12);
        }
        List<Map<String, Double>> n = run(tiny(tmp.resolve("n"), "num_training_steps=1", "num_epochs=1"));
        assertTrue(n.get(0).get("val/sequence_lengths_max") > 1.0, "without them responses run longer: " + n.get(0));
    }

    /**
     * A run saves the stop ids its model's generation config gave (config.json's stop_token_ids), so its resumes stop
     * there whatever that file says later; a run saved before the key existed stopped at the EOS alone, and its
     * resume still does. The counted stop ids include the other ids.
     */
    @Test
    void aRunSavesTheStopIdsItResolvedAndAnOlderRunKeepsTheEosAlone(@TempDir Path tmp) throws Exception {
        Path model = tmp.resolve("model"), tokDir = Path.of("examples/tiny-tokenizer");
        int eos;
        try (org.grpo4j.internal.tokenizer.Tokenizer tok = org.grpo4j.internal.tokenizer.Tokenizer.load(tokDir)) {
            eos = tok.eosId();
            org.grpo4j.internal.model.LlamaConfig lc = org.grpo4j.internal.model.LlamaConfig.tiny(tok.vocabSize(), tok.bosId(), eos);
            try (org.grpo4j.internal.model.LlamaWeights w = org.grpo4j.internal.model.LlamaWeights.init(org.grpo4j.internal.backend.TestBackends.cpu(), lc, 3)) {
                w.save(model, "F32", 1L << 40, tokDir);
            }
        }
        Files.writeString(model.resolve("generation_config.json"), "{\"eos_token_id\": [" + eos + ", 5, 9]}");
        Path run = tmp.resolve("r");
        run(tiny(run, "model_name_or_path=\"" + model + "\"", "num_training_steps=1", "num_epochs=1", "save_freq=1"));
        ObjectMapper json = new ObjectMapper();
        assertEquals("[5,9]", json.readTree(run.resolve("config.json").toFile()).get("stop_token_ids").toString());
        Path ck = run.resolve("checkpoints/step_1");
        assertEquals(List.of(5, 9), Checkpoints.savedConfig(ck).stopTokenIds);
        // the same checkpoint as an older run wrote it: no stop_token_ids key
        com.fasterxml.jackson.databind.node.ObjectNode old = (com.fasterxml.jackson.databind.node.ObjectNode) json.readTree(ck.resolve("config.json").toFile());
        old.remove("stop_token_ids");
        json.writeValue(ck.resolve("config.json").toFile(), old);
        assertEquals(List.of(), Checkpoints.savedConfig(ck).stopTokenIds, "an older run stopped at the EOS alone");
    }

    /**
     * A config that omits a key gets the Tulu command's value (grpo-reference.md section 0; docs/trainer.md, fidelity
     * row 17), but for the per-rank batch keys: the single-node variant's at world_size 1.
     */
    @Test
    void theDefaultsAreTheCommandsValues() {
        GrpoConfig d = new GrpoConfig();
        assertEquals(2048, d.maxTokenLength, "max_token_length (was 4096)");
        assertEquals(2048, d.maxPromptTokenLength);
        assertEquals(2048, d.responseLength);
        assertEquals(16, d.numberSamplesPerPrompt);
        assertEquals(0.01, d.beta);
        assertEquals("kl3", d.klEstimator);
        assertEquals(5e-7, d.learningRate);
        assertEquals("constant", d.lrSchedulerType);
        assertEquals(1.0, d.temperature);
        assertEquals("tulu", d.chatTemplateName);
        assertEquals(1, d.numEpochs);
        assertEquals(2, d.perDeviceTrainBatchSize);
        assertEquals(2, d.localRolloutForwardBatchSize);
        assertEquals(10_000_000L, d.totalEpisodes);
        assertTrue(d.nonStopPenalty);
        assertEquals(0.0, d.penaltyRewardValue);
        assertEquals(1L, d.seed);
        assertEquals(30, d.numEvals);
        assertEquals(40, d.saveFreq);
        // the single-node variant's per-rank batch: 6 such ranks make the command's 48 prompts a step
        assertEquals(List.of(1, 8, 64), List.of(d.worldSize, d.localRolloutBatchSize, d.localMiniBatchSize));
    }

    @Test
    void theTwoTuluConfigsDifferOnlyInTheCompatKeys() throws Exception {
        ObjectMapper json = new ObjectMapper();
        JsonNode seed = json.readTree(Path.of("configs/tulu-3.1-8b-grpo.json").toFile());
        JsonNode fixed = json.readTree(Path.of("configs/tulu-3.1-8b-grpo-fixed.json").toFile());
        Set<String> keys = new TreeSet<>();
        seed.fieldNames().forEachRemaining(keys::add);
        fixed.fieldNames().forEachRemaining(keys::add);
        Set<String> differ = new TreeSet<>();
        for (String k : keys) if (!seed.path(k).equals(fixed.path(k))) differ.add(k);
        assertEquals(Set.of("notes", "output_dir", "verifier_compat", "metrics_compat", "lr_scheduler_compat"), differ);
        GrpoConfig s = GrpoConfig.load(Path.of("configs/tulu-3.1-8b-grpo.json"), List.of());
        GrpoConfig f = GrpoConfig.load(Path.of("configs/tulu-3.1-8b-grpo-fixed.json"), List.of());
        assertEquals(org.grpo4j.reward.Compat.OPEN_INSTRUCT_3F37C29, s.compat());
        assertTrue(ReferenceOptions.metricsCompat(s) && ReferenceOptions.lrCompat(s));
        assertEquals(org.grpo4j.reward.Compat.DEFAULT, f.compat());
        assertFalse(ReferenceOptions.metricsCompat(f) || ReferenceOptions.lrCompat(f));
        for (GrpoConfig c : List.of(s, f)) {
            // the command's values (grpo-reference.md section 0)
            assertEquals(List.of("allenai/RLVR-GSM-MATH-IF-Mixed-Constraints", "1.0"), c.datasetMixerList);
            assertEquals(List.of("train"), c.datasetMixerListSplits);
            assertEquals(List.of("allenai/RLVR-GSM-MATH-IF-Mixed-Constraints", "16"), c.datasetMixerEvalList);
            assertEquals(2048, c.maxTokenLength);
            assertEquals(2048, c.maxPromptTokenLength);
            assertEquals(2048, c.responseLength);
            assertEquals(48, c.rolloutBatchSize());
            assertEquals(16, c.numberSamplesPerPrompt);
            assertEquals(384, c.miniBatchSize());
            assertEquals(5e-7, c.learningRate);
            assertEquals("constant", c.lrSchedulerType);
            assertEquals(0.01, c.beta);
            assertEquals("kl3", c.klEstimator);
            assertEquals(1.0, c.temperature);
            assertTrue(c.nonStopPenalty);
            assertEquals(0.0, c.penaltyRewardValue);
            assertEquals(13020, c.trainingSteps());
            assertEquals(1L, c.seed);
            assertEquals(30, c.numEvals);
            assertEquals(40, c.saveFreq);
            assertEquals(new LrSchedule("constant", 5e-7, 0, c == s ? 13020 : 26040), LrSchedule.of(c));
            assertFalse(c.addR1StyleFormatReward);
            assertFalse(c.notes.isEmpty());
        }
    }

    @Test
    void referenceOptionsAreAcceptedOrRefusedWithAReason() throws Exception {
        Path f = Path.of("examples/tiny-arith.json");
        GrpoConfig c = GrpoConfig.load(f, List.of("add_r1_style_format_reward=true", "r1_style_format_reward=0.5", "stop_strings=[\"</answer>\"]",
                "min_response_length=3", "chat_template_name=r1_simple_chat_postpend_think", "dataset_mixer_list_splits=[\"train\"]"));
        assertTrue(c.addR1StyleFormatReward);
        assertEquals(List.of("</answer>"), c.stopStrings);
        Map<String, String> refused = new LinkedHashMap<>();
        refused.put("reward_model_path=\"EleutherAI/pythia-160m\"", "RLVR only");
        refused.put("reward_model_revision=main", "RLVR only");
        refused.put("reward_model_multiplier=1.0", "RLVR only");
        refused.put("apply_verifiable_reward=false", "RLVR only");
        refused.put("async_mode=true", "synchronously");
        refused.put("vllm_num_engines=1", "launcher flag");
        refused.put("stop_token=\"period\"", "stop_token");
        refused.put("stop_strings=[\"\"]", "stop_strings");
        refused.put("min_response_length=-1", "min_response_length");
        refused.put("metrics_compat=\"3f37c29\"", "metrics_compat");
        refused.put("dataset_mixer_list_splits=[\"train\",\"test\"]", "dataset_mixer_list_splits has 2 entries for 1 datasets");
        for (var e : refused.entrySet()) {
            IllegalArgumentException ex = assertThrows(IllegalArgumentException.class, () -> GrpoConfig.load(f, List.of(e.getKey())), e.getKey());
            // (named by the --set that gave the value: the file's own value was fine)
            assertTrue(ex.getMessage().startsWith("--set " + e.getKey() + ": ") && ex.getMessage().contains(e.getValue()), ex.getMessage());
        }
        // 128 completions in mini-batches of 8 are 16 mini-batches: more than the reference's nspp = 8 stats rows
        List<String> layout = List.of("local_mini_batch_size=8", "per_device_train_batch_size=4");
        GrpoConfig.load(f, layout);
        List<String> compat = new ArrayList<>(layout);
        compat.add("metrics_compat=open-instruct-3f37c29");
        IllegalArgumentException ex = assertThrows(IllegalArgumentException.class, () -> GrpoConfig.load(f, compat));
        assertTrue(ex.getMessage().contains("IndexError"), ex.getMessage());
    }
}
