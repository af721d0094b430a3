#!/usr/bin/env python3
"""HF transformers + PyTorch peers of grpo4j's end-to-end benchmark (E2eBench), on the same GPU, as the same JSON.

    python3 tools/e2e-peers.py [--preset llama-3.2-1b|llama-3.1-8b-4l ...] [--sections train,rollout] [--json FILE]
                               [--reps N] [--warmup N] [--rollout-reps N] [--budget SECONDS] [--seed N] [--fake-timer]

What TRL runs without vLLM: LlamaForCausalLM built from the preset's config with random init, bf16 parameters, SDPA
attention, no gradient checkpointing.
- train: 4 x 2048 random tokens (a [4, 2048] batch: equal lengths, so no padding and the same attention as packing),
  logits upcast to fp32 and cross-entropy on every token against random targets (what HF's loss does),
  backward, clip_grad_norm_(1.0), torch.optim.AdamW(fused=True), zero_grad(set_to_none=True). Median of --reps steps
  after --warmup, wall time with torch.cuda.synchronize(). Tokens/s and MFU with grpo4j's formula.
- rollout: 48 random 256-token prompts x 16 samples, do_sample, temperature 1, top_p 1, top_k 0: each prompt is
  prefilled once (all but its last token), its DynamicCache repeated 16 times (batch_repeat_interleave), and
  model.generate runs the 768 rows from that cache (num_return_sequences 16, which prefills each prompt 16 times, if
  this transformers refuses the shared cache: the row's note says which ran); 256 and then 512 new tokens
  (min_new_tokens = max_new_tokens: no stop), after a 4-token warm-up (the 256 rows of every preset before the 512 rows, so a --budget keeps the issue's main rows). Tokens/s and %
  of the memory roofline with grpo4j's formula and the copy bandwidth this script measures (torch copy_ of 2^28 fp32,
  CUDA events, median of 20).

Formulas (java/org/grpo4j/internal/bench/E2eWork.java; the test E2ePeersScriptTest checks both sides agree):
  train FLOPs = 6 * P_mm * tokens + sum over sequences of 12 * L * Hq * D * S^2 / 2, MFU = FLOPs / time / 989 TFLOP/s
  roofline bytes = (N - 1) * W + B * kv * ((N - 1) * P + N * (N - 1) / 2)

--fake-timer writes the JSON with placeholder timings ("fake": true) without torch, transformers or a GPU: it checks
the script's structure and schema, never a figure.
"""
import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time

SCHEMA = "grpo4j-e2e/1"
PEAK_TFLOPS = 989.0
IMPL = "HF transformers (SDPA, bf16 params, AdamW fused)"
IMPL_GEN = "HF transformers generate (SDPA, bf16)"
SECTIONS = ["train", "rollout"]

# the same architectures as org.grpo4j.internal.model.LlamaConfig.llama32_1b() / llama31_8b().withLayers(4)
PRESETS = {
    "llama-3.2-1b": dict(hidden=2048, ffn=8192, layers=16, heads=32, kv_heads=8, head_dim=64, vocab=128256, tie=True,
                         rope_theta=500000.0, rope_factor=32.0, max_pos=131072, eps=1e-5),
    "llama-3.1-8b-4l": dict(hidden=4096, ffn=14336, layers=4, heads=32, kv_heads=8, head_dim=128, vocab=128256, tie=False,
                            rope_theta=500000.0, rope_factor=8.0, max_pos=131072, eps=1e-5),
}
# the shapes (org.grpo4j.internal.bench.E2eBench.ISSUE)
SHAPES = dict(train_seqs=4, train_len=2048, prompts=48, samples=16, prompt_len=256, new_tokens=[256, 512])
BF16 = 2


# ---- work (independent of the Java implementation on purpose: the test compares the two) ------------------------------

def total_params(p):
    h, v = p["hidden"], p["vocab"]
    q, kv = p["heads"] * p["head_dim"], p["kv_heads"] * p["head_dim"]
    layer = h * q + 2 * h * kv + q * h + 3 * h * p["ffn"] + 2 * h  # q, k, v, o, gate/up/down, two norms
    return v * h + p["layers"] * layer + h + (0 if p["tie"] else v * h)


def matmul_params(p):
    h = p["hidden"]
    q, kv = p["heads"] * p["head_dim"], p["kv_heads"] * p["head_dim"]
    return p["layers"] * (2 * h * q + 2 * h * kv + 3 * h * p["ffn"]) + p["vocab"] * h


def train_flops(p, seqs, seq_len):
    attn = 12 * p["layers"] * p["heads"] * p["head_dim"] * seq_len * seq_len / 2
    return 6 * matmul_params(p) * seqs * seq_len + seqs * attn


def roofline_bytes(p, sequences, prompt_len, new_tokens):
    weights = BF16 * (total_params(p) - (0 if p["tie"] else p["vocab"] * p["hidden"]))
    kv = 2 * p["layers"] * p["kv_heads"] * p["head_dim"] * BF16
    steps = new_tokens - 1
    return steps * weights + sequences * kv * (steps * prompt_len + new_tokens * (new_tokens - 1) / 2)


class Row:
    def __init__(self, section, preset, key, shape, tokens, impl, work, new_tokens=None):
        self.section, self.preset, self.key, self.shape = section, preset, key, shape
        self.tokens, self.impl, self.work, self.new_tokens = tokens, impl, work, new_tokens

    @property
    def id(self):
        return f"{self.section}/{self.preset}/{self.key}"


def plan(presets, sections):
    s = SHAPES
    rows = []
    if "train" in sections:
        for name in presets:
            n = s["train_seqs"] * s["train_len"]
            rows.append(Row("train", name, f"{s['train_seqs']}x{s['train_len']}", f"{s['train_seqs']} x {s['train_len']} tokens, packed",
                            n, IMPL, train_flops(PRESETS[name], s["train_seqs"], s["train_len"])))
    if "rollout" in sections:
        for nn in s["new_tokens"]:
            for name in presets:
                b = s["prompts"] * s["samples"]
                rows.append(Row("rollout", name, f"new{nn}",
                                f"{s['prompts']} prompts x {s['samples']} samples, prompt {s['prompt_len']}, {nn} new",
                                b * nn, IMPL_GEN, roofline_bytes(PRESETS[name], b, s["prompt_len"], nn), new_tokens=nn))
    return rows


def median(v):
    s = sorted(v)
    k = len(s)
    return s[k // 2] if k % 2 else (s[k // 2 - 1] + s[k // 2]) / 2


def row_json(r, status, ms=None, note=None, copy_gbs=None):
    o = dict(id=r.id, section=r.section, preset=r.preset, shape=r.shape, impl=r.impl, status=status)
    if note:
        o["note"] = note
    o["reps"] = len(ms) if ms else 0
    if ms:
        med = median(ms)
        o.update(median_ms=med, min_ms=min(ms), max_ms=max(ms))
        sec = med / 1e3
        o.update(tokens=float(r.tokens), tokens_per_s=r.tokens / sec)
        if r.section == "train":
            o.update(flops=float(r.work), tflops=r.work / sec / 1e12, mfu_pct=100 * r.work / sec / 1e12 / PEAK_TFLOPS)
        else:
            o.update(roofline_bytes=float(r.work), roofline_pct=100 * (r.work / (copy_gbs * 1e9)) / sec)
    return o


# ---- torch ------------------------------------------------------------------------------------------------------------

def llama_config(tf, p):
    return tf.LlamaConfig(
        vocab_size=p["vocab"], hidden_size=p["hidden"], intermediate_size=p["ffn"], num_hidden_layers=p["layers"],
        num_attention_heads=p["heads"], num_key_value_heads=p["kv_heads"], head_dim=p["head_dim"], hidden_act="silu",
        max_position_embeddings=p["max_pos"], rms_norm_eps=p["eps"], tie_word_embeddings=p["tie"],
        rope_theta=p["rope_theta"],
        rope_scaling=dict(rope_type="llama3", factor=p["rope_factor"], low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=8192),
        attention_bias=False, mlp_bias=False, bos_token_id=128000, eos_token_id=[128001, 128008, 128009],
        attn_implementation="sdpa")


def build_model(torch, tf, p, seed):
    """Random init directly on the GPU in bf16 (HF's init: N(0, 0.02), norms 1)."""
    torch.manual_seed(seed)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            model = tf.LlamaForCausalLM(llama_config(tf, p))
    finally:
        torch.set_default_dtype(old)
    model.to(torch.bfloat16)
    n = sum(x.numel() for x in model.parameters())
    if n != total_params(p):
        raise RuntimeError(f"the HF model has {n} parameters, the preset {total_params(p)}")
    attn = getattr(model.config, "_attn_implementation", "?")
    if attn != "sdpa":
        raise RuntimeError(f"attention implementation is {attn}, not sdpa")
    return model


def copy_bandwidth(torch):
    n = 1 << 28
    a = torch.zeros(n, device="cuda")
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(21)]
    ev[0].record()
    for i in range(20):
        (b if i % 2 == 0 else a).copy_(a if i % 2 == 0 else b)
        ev[i + 1].record()
    ev[20].synchronize()
    ms = median([ev[i].elapsed_time(ev[i + 1]) for i in range(20)])
    del a, b
    torch.cuda.empty_cache()
    return 8 * n / (ms * 1e6)


def run_train(torch, tf, r, args, log):
    p = PRESETS[r.preset]
    F = torch.nn.functional
    model = build_model(torch, tf, p, args.seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.01, fused=True)
    g = torch.Generator(device="cuda").manual_seed(args.seed)
    s, ln, v = SHAPES["train_seqs"], SHAPES["train_len"], p["vocab"]
    ids = torch.randint(0, v, (s, ln), device="cuda", generator=g)
    tgt = torch.randint(0, v, (s, ln), device="cuda", generator=g)

    def step():
        logits = model(input_ids=ids, use_cache=False).logits
        loss = F.cross_entropy(logits.float().view(-1, v), tgt.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    try:
        for i in range(args.warmup):
            step()
            torch.cuda.synchronize()
            log(f"{r.id}: warm-up step {i + 1}/{args.warmup}")
        ms = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            step()
            torch.cuda.synchronize()
            ms.append((time.perf_counter() - t0) * 1e3)
        return ms, f"median of {args.reps} steps after {args.warmup}; wall time, synchronized; [4, 2048] batch (no padding)"
    finally:
        del opt, model
        torch.cuda.empty_cache()


def run_rollout(torch, tf, r, args, log):
    p = PRESETS[r.preset]
    model = build_model(torch, tf, p, args.seed)
    model.eval()
    g = torch.Generator(device="cuda").manual_seed(args.seed + 1)
    prompts = torch.randint(0, p["vocab"], (SHAPES["prompts"], SHAPES["prompt_len"]), device="cuda", generator=g)
    mask = torch.ones_like(prompts)
    n, b, k = r.new_tokens, SHAPES["prompts"] * SHAPES["samples"], SHAPES["samples"]
    sampling = dict(do_sample=True, temperature=1.0, top_p=1.0, top_k=0, pad_token_id=0)

    def gen_repeated(tokens):
        # generate's own expansion: each prompt repeated 16 times, then prefilled 16 times
        return model.generate(input_ids=prompts, attention_mask=mask, num_return_sequences=k, max_new_tokens=tokens,
                              min_new_tokens=tokens, **sampling)

    def gen_shared(tokens):
        # each prompt prefilled once (all but its last token), its cache repeated for the 16 samples, then generate on
        # the 768 rows from that cache (it feeds the prompts' last tokens first): what a prefix-caching server does,
        # as grpo4j's rollout shares a prompt's KV blocks among its samples
        cache = model(input_ids=prompts[:, :-1], attention_mask=mask[:, :-1], use_cache=True).past_key_values
        cache.batch_repeat_interleave(k)
        ids = prompts.repeat_interleave(k, dim=0)
        return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), past_key_values=cache,
                              max_new_tokens=tokens, min_new_tokens=tokens, **sampling)

    try:
        with torch.inference_mode():
            gen, how = gen_shared, "each prompt prefilled once, its DynamicCache repeated 16x (batch_repeat_interleave)"
            try:
                out = gen(4)
                torch.cuda.synchronize()
                if tuple(out.shape) != (b, SHAPES["prompt_len"] + 4):
                    raise ValueError(f"generate returned {tuple(out.shape)}")
            # an API this transformers lacks or takes otherwise: generate's own expansion, said in the note (and under
            # e2e-compare's rollout table). Not an out-of-memory or CUDA error (RuntimeErrors): those end the row as an
            # error rather than quietly measuring 16 prefills per prompt instead of one
            except (AttributeError, TypeError, ValueError, NotImplementedError, KeyError, IndexError) as e:
                log(f"{r.id}: shared prefill failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                    "num_return_sequences instead")
                torch.cuda.empty_cache()
                gen = gen_repeated
                how = (f"num_return_sequences 16: each prompt prefilled 16x (the shared prefill failed: "
                       f"{type(e).__name__})")
                gen(4)
                torch.cuda.synchronize()
            log(f"{r.id}: warm-up done")
            ms = []
            for _ in range(args.rollout_reps):
                t0 = time.perf_counter()
                out = gen(n)
                torch.cuda.synchronize()
                ms.append((time.perf_counter() - t0) * 1e3)
                if tuple(out.shape) != (b, SHAPES["prompt_len"] + n):
                    raise RuntimeError(f"generate returned {tuple(out.shape)}, expected {(b, SHAPES['prompt_len'] + n)}")
        # the caching allocator's settings: HF's cache grows by torch.cat every step, which its defaults serve with fresh
        # allocations (ours preallocates its KV pool), so a reader of the ratio can tell how the peer's memory ran
        alloc = os.environ.get("PYTORCH_CUDA_ALLOC_CONF") or "default"
        return ms, f"whole generate call incl. prefill; {how}; top_k 0, top_p 1; PYTORCH_CUDA_ALLOC_CONF {alloc}"
    finally:
        del model
        torch.cuda.empty_cache()


def driver_version(torch):
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            v = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                               text=True, timeout=20).stdout.strip().splitlines()
            if v:
                return v[0].strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return None


def measure(args, rows, log, emit=lambda out, copy, meta: None):
    """The rows on the GPU; emit(rows so far, copy, meta) after each (the JSON then holds them: a run stopped at a
    device call's limit keeps its rows)."""
    import torch
    import transformers as tf
    if not torch.cuda.is_available():
        sys.exit("e2e-peers: torch sees no CUDA device (use --fake-timer to check the JSON structure)")
    torch.backends.cuda.matmul.allow_tf32 = False
    t_start = time.perf_counter()
    meta = dict(card=torch.cuda.get_device_name(0), driver=driver_version(torch), runtime=torch.version.cuda,
                torch=torch.__version__, transformers=tf.__version__)
    copy = copy_bandwidth(torch)
    log(f"copy bandwidth {copy:.1f} GB/s")
    out = []
    for r in rows:
        elapsed = time.perf_counter() - t_start
        if args.budget and elapsed > args.budget:
            out.append(row_json(r, "skipped", note=f"--budget {args.budget:.0f} s: {elapsed:.0f} s elapsed"))
            log(f"{r.id}: skipped (budget)")
            continue
        try:
            ms, note = (run_train if r.section == "train" else run_rollout)(torch, tf, r, args, log)
            o = row_json(r, "ok", ms, note, copy)
            extra = f"{o['mfu_pct']:.1f}% MFU" if r.section == "train" else f"{o['roofline_pct']:.1f}% of roofline"
            log(f"{r.id}: {o['median_ms']:.1f} ms, {o['tokens_per_s']:.0f} tokens/s, {extra}")
        except Exception as e:  # noqa: BLE001 - one failing row must not stop the others
            o = row_json(r, "error", note=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            log(f"{r.id}: error ({o['note']})")
            torch.cuda.empty_cache()
        out.append(o)
        emit(out, copy, meta)
    return out, copy, meta


def fake(args, rows):
    out = []
    for r in rows:
        ms = [1000.0] * args.reps if r.section == "train" else [10000.0] * args.rollout_reps
        out.append(row_json(r, "ok", ms, "fake timer: placeholder timings", 1000.0))
    versions = {}
    for mod in ("torch", "transformers"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None
    return out, 1000.0, dict(card="fake (no GPU timing)", driver="fake", runtime="fake", **versions)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", action="append", default=None,
                    help="llama-3.2-1b or llama-3.1-8b-4l (repeatable, comma-separated; default both)")
    ap.add_argument("--sections", default="train,rollout", help="train, rollout (comma-separated; default both)")
    ap.add_argument("--json", help="write the results here (default: stdout)")
    ap.add_argument("--reps", type=int, default=5, help="timed training steps, >= 5 (default 5)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed training steps first, >= 1 (default 2)")
    ap.add_argument("--rollout-reps", type=int, default=1, help="timed generate calls (default 1)")
    ap.add_argument("--budget", type=float, default=0, help="skip rows that would start after this many seconds (0: no limit)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--fake-timer", action="store_true",
                    help="placeholder timings, no torch, transformers or GPU needed: checks the JSON structure only")
    args = ap.parse_args(argv)
    presets = []
    for p in args.preset or [",".join(PRESETS)]:
        for x in p.split(","):
            x = x.strip()
            if x not in PRESETS:
                ap.error(f'unknown --preset "{x}" (valid: {", ".join(PRESETS)})')
            if x not in presets:
                presets.append(x)
    sections = []
    for x in args.sections.split(","):
        x = x.strip().lower()
        if x not in SECTIONS:
            ap.error(f'unknown --sections "{x}" (valid: {", ".join(SECTIONS)}; the GRPO step has no peer)')
        if x not in sections:
            sections.append(x)
    if args.reps < 5:
        ap.error(f"--reps must be >= 5, got {args.reps}")
    if args.warmup < 1:
        ap.error(f"--warmup must be >= 1, got {args.warmup}")
    if args.rollout_reps < 1:
        ap.error(f"--rollout-reps must be >= 1, got {args.rollout_reps}")
    rows = plan(presets, sections)
    t0 = time.perf_counter()

    def log(msg):
        print(f"e2e-peers [{time.perf_counter() - t0:6.1f} s] {msg}", file=sys.stderr, flush=True)

    def text(out, copy, meta, complete):
        report = dict(schema=SCHEMA, tool="transformers", card=meta["card"], driver=meta["driver"], runtime=meta["runtime"],
                      torch=meta["torch"], transformers=meta["transformers"], backend="torch cuda", precision="bf16",
                      date=datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
                      fake=bool(args.fake_timer), copy_gbs=copy, peak_tflops=PEAK_TFLOPS, rows=out)
        if not complete:
            report["complete"] = False  # the rows so far (as ours.json while E2eBench runs)
        report = {k: v for k, v in report.items() if v is not None}
        return json.dumps(report, indent=2) + "\n"

    def write(out, copy, meta, complete):
        d = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(d, exist_ok=True)
        tmp = os.path.join(d, "." + os.path.basename(args.json) + ".tmp")
        with open(tmp, "w") as fh:
            fh.write(text(out, copy, meta, complete))
        os.replace(tmp, args.json)

    if args.fake_timer:
        out, copy, meta = fake(args, rows)
    else:
        for mod in ("torch", "transformers"):
            try:
                __import__(mod)
            except ImportError:
                sys.exit(f"e2e-peers: {mod} is not installed (use --fake-timer to check the JSON structure)")
        out, copy, meta = measure(args, rows, log, (lambda o, c, m: write(o, c, m, False)) if args.json else (lambda o, c, m: None))
    if args.json:
        write(out, copy, meta, True)
        log(f"wrote {args.json}")
    else:
        sys.stdout.write(text(out, copy, meta, True))


if __name__ == "__main__":
    main()
