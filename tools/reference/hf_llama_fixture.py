#!/usr/bin/env python3
"""Independent reference for grpo4j's Llama: builds a tiny random LlamaForCausalLM with HF transformers, saves it,
and writes its logits, loss and some gradients for fixed tokens.

Needs torch + transformers (present on the GPU hosts; CPU is enough). From the repository root:

    python3 tools/reference/hf_llama_fixture.py src/test/resources/fixtures/hf-llama

Writes <out>/model/ (config.json + model.safetensors, float32) and <out>/expected.json:
  tokens, logits [T x V] (float32 forward), loss (mean next-token cross-entropy), and for each parameter the
  gradient of that loss at its first 16 elements (row-major) plus the full gradient's L2 norm.
src/test/java/org/grpo4j/internal/model/HfFixtureTest.java compares grpo4j against these files.

The config is given in the transformers 4 spelling (rope_theta + rope_scaling); transformers 5 converts it and saves
config.json with `rope_parameters` instead (the committed fixture was made with transformers 5.17, torch 2.11).
HfFixtureTest also rewrites that config.json into the transformers 4 layout in a temporary directory, next to a copy
of the same weights, so both layouts are checked against one set of reference numbers.
"""
import json
import os
import sys

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM


def main(out):
    torch.manual_seed(1234)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, vocab_size=512, rms_norm_eps=1e-5, rope_theta=10000.0,
                      rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
                      max_position_embeddings=2048, tie_word_embeddings=False, bos_token_id=506, eos_token_id=507,
                      attention_bias=False, mlp_bias=False, torch_dtype="float32")
    cfg._attn_implementation = "eager"
    model = LlamaForCausalLM(cfg).float()
    with torch.no_grad():  # larger weights than the default init so that every path carries signal
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.4 * torch.randn_like(p))
    model.eval()
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(os.path.join(out, "model"), safe_serialization=True)

    g = torch.Generator().manual_seed(7)
    tokens = torch.randint(0, 512, (1, 37), generator=g)
    res = model(input_ids=tokens, labels=tokens)
    res.loss.backward()
    grads = {}
    for name, p in model.named_parameters():
        grads[name] = {"first16": p.grad.flatten()[:16].tolist(), "norm": p.grad.norm().item()}
    expected = {"transformers": transformers.__version__, "torch": torch.__version__,
                "tokens": tokens[0].tolist(), "logits": res.logits[0].detach().tolist(), "loss": res.loss.item(),
                "grads": grads}
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f)
    print(f"wrote {out}: loss {res.loss.item():.6f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "src/test/resources/fixtures/hf-llama")
