package org.grpo4j.internal.train;

import org.grpo4j.train.GrpoConfig;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.function.Consumer;
import org.grpo4j.internal.backend.DType;
import org.grpo4j.internal.data.PromptDataset;
import org.grpo4j.internal.model.LlamaConfig;
import org.grpo4j.internal.model.LlamaWeights;
import org.grpo4j.reward.Rewards;
import org.grpo4j.internal.rollout.StopStrings;
import org.grpo4j.internal.tokenizer.Tokenizer;

/**
 * What every rank of a run reads and nobody changes: the config, the tokenizer and data, the verifiers, the model's
 * config and the precision. {@code stopIds}: the token ids generation stops at (the EOS among them). {@code log} is null except on the rank that prints.
 */
record Setup(GrpoConfig cfg, Tokenizer tok, PromptDataset train, PromptDataset eval, Rewards rewards, StopStrings stopStrings, int eos, java.util.Set<Integer> stopIds,
             LlamaConfig model, Path tokenizerDir, DType dtype, LrSchedule schedule, boolean metricsCompat, PrintStream log,
             Consumer<LlamaWeights> gradientHook) {}
