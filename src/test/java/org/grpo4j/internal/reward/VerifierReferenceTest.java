package org.grpo4j.internal.reward;

import static org.junit.jupiter.api.Assertions.*;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Files;
import java.nio.file.Path;
import org.grpo4j.reward.Compat;
import org.grpo4j.reward.Rewards;
import org.junit.jupiter.api.Test;

/**
 * The open-instruct-3f37c29 semantics against open-instruct's own verifiers at that commit: every case of
 * {@link VerifierCasesTest} run through grpo4j's compat mode must get the verdict open-instruct's code gave it
 * (src/test/resources/fixtures/verifiers/open-instruct-3f37c29.json, written by tools/reference/verifier_fixture.py
 * from the cases this test writes to target/verifier-cases.json; a fixture for other cases is reported as stale with
 * the commands that remake it). An open-instruct verifier that raised (validate_response_language: no langdetect in
 * that run's environment) counts as no reward, as grpo4j scores it. This also checks VerifierCasesTest's own compat
 * column, which was written from the rules, against the reference.
 */
class VerifierReferenceTest {
    static final Path FIXTURE = Path.of("src/test/resources/fixtures/verifiers/open-instruct-3f37c29.json");
    static final Path INPUT = Path.of("target/verifier-cases.json");
    static final ObjectMapper JSON = new ObjectMapper();

    @Test
    void compatVerdictsAreOpenInstructsOwn() throws Exception {
        ArrayNode in = JSON.createArrayNode();
        for (int i = 0; i < VerifierCasesTest.CASES.size(); i++) {
            VerifierCasesTest.Case k = VerifierCasesTest.CASES.get(i);
            ObjectNode o = in.addObject().put("index", i).put("dataset", k.dataset()).put("ground_truth", k.gt()).put("response", k.response());
            o.putNull("constraint_type");
            o.putNull("constraint");
            o.put("note", k.note());
        }
        Files.createDirectories(INPUT.getParent());
        Files.writeString(INPUT, JSON.writerWithDefaultPrettyPrinter().writeValueAsString(in));
        String remake = "; remake it on a machine with open-instruct's pinned sympy/antlr (tools/reference/verifier_fixture.py's header):"
                + " python3 tools/reference/verifier_fixture.py --open-instruct-git GITDIR " + INPUT + " " + FIXTURE;
        assertTrue(Files.isRegularFile(FIXTURE), FIXTURE + " is missing" + remake);
        JsonNode fx = JSON.readTree(FIXTURE.toFile());
        assertEquals(in.size(), fx.size(), FIXTURE + " holds another number of cases" + remake);
        int errors = 0, passes = 0;
        try (Rewards compat = new Rewards(Compat.OPEN_INSTRUCT_3F37C29, 10, 30, 2)) {
            for (int i = 0; i < in.size(); i++) {
                JsonNode want = in.get(i), got = fx.get(i);
                for (String key : new String[] {"dataset", "ground_truth", "response"})
                    assertEquals(want.get(key), got.get(key), FIXTURE + " case " + i + " has another " + key + remake);
                JsonNode verdict = got.get("reference_verdict");
                assertTrue(verdict != null && (verdict.isBoolean() || verdict.asText().equals("error")), "case " + i + ": reference_verdict " + verdict);
                boolean ref = verdict.isBoolean() && verdict.booleanValue();
                if (!verdict.isBoolean()) errors++;
                if (ref) passes++;
                VerifierCasesTest.Case k = VerifierCasesTest.CASES.get(i);
                Rewards.Result r = compat.score(new Rewards.Item(k.response(), k.gt(), k.dataset(), null));
                String what = "case " + i + " (" + k.dataset() + ", " + k.note() + "): open-instruct at 3f37c29 says " + verdict
                        + (got.has("reference_error") ? " (" + got.get("reference_error").asText() + ")" : "");
                assertEquals(ref ? 10.0 : 0.0, r.reward(), what + "; grpo4j's compat mode: " + r);
                assertEquals(ref, k.compatOk(), what + "; VerifierCasesTest's compat column says " + k.compatOk());
            }
        }
        assertTrue(passes > 0 && passes < in.size(), "both verdicts occur: " + passes + " of " + in.size());
        assertTrue(errors <= 5, errors + " cases raised in open-instruct: the fixture was made in another environment?");
    }
}
