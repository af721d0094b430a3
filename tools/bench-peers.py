#!/usr/bin/env python3
"""PyTorch peers of `grpo4j bench`: the same problems, through PyTorch, on the same GPU, written as the same JSON.

    python3 tools/bench-peers.py [--family NAME ...] [--sizes llama-3.1-8b|small] [--json FILE] [--reps N]
                                 [--warmup N] [--no-compile] [--fake-timer]

Timing as grpo4j's: CUDA events recorded back to back around each repetition, after a ~2 ms head start of device
copies (so the host has enqueued every timed launch before the GPU reaches it), median/min/max of --reps after
--warmup, inputs rotated over enough buffer sets that one pass touches >= 256 MiB (several times L2).

Problem ids, shapes and work (FLOPs or bytes) are the same as grpo4j's (java/org/grpo4j/internal/bench/Cases.java; the test
BenchPeersScriptTest checks it), so the ratio ours/peer = peer time / our time. Formulas: docs/benchmarks.md.

--fake-timer writes the JSON with placeholder timings (1 ms each, "fake": true) without torch or a GPU: it checks the
script's structure and schema, never a figure. Then `grpo4j bench --compare` prints a warning above the table.
"""
import argparse
import datetime
import json
import math
import os
import shutil
import statistics
import subprocess
import sys

SCHEMA = "grpo4j-bench/1"
FAMILIES = ["gemm", "norm", "rope", "swiglu", "embedding", "elementwise", "adamw", "reduce", "kvcache", "attention",
            "decode", "sampling", "lmhead"]
ROTATE_BYTES = 256 << 20
MAX_SETS = 64
HOST_CALLS = 100
P = 1_000_003  # coprime with every size here: (n*P + c) % m is a permutation of range(m)
LOGIT_SCALE = 4.0

# the same presets as java/org/grpo4j/internal/bench/BenchSizes.java
SIZES = {
    "llama-3.1-8b": dict(tokens=4096, hidden=4096, ffn=14336, vocab=128256, q_heads=32, kv_heads=8, head_dim=128,
                         gemms=[(8192, 4096, 14336), (8192, 14336, 4096), (8192, 8192, 8192), (768, 4096, 4096)],
                         gemm_ceiling=8192, copy_elements=1 << 28, adam_params=1 << 30, reduce_elements=1 << 30,
                         attention=[(8, 2048), (2, 8192)], decode_batch=768, decode_context=1024, kv_block_size=16,
                         sample_batch=768, lm_tokens=8192),
    "small": dict(tokens=1024, hidden=2048, ffn=8192, vocab=32768, q_heads=16, kv_heads=4, head_dim=128,
                  gemms=[(2048, 2048, 8192), (2048, 8192, 2048), (4096, 4096, 4096), (256, 2048, 2048)],
                  gemm_ceiling=4096, copy_elements=1 << 26, adam_params=1 << 26, reduce_elements=1 << 26,
                  attention=[(4, 1024), (1, 4096)], decode_batch=128, decode_context=1024, kv_block_size=16,
                  sample_batch=128, lm_tokens=2048),
}

# implementation names; grpo4j's goals name some of them (org.grpo4j.internal.bench.Compare)
TORCH_MATMUL = "torch.matmul"
TORCH_COPY = "torch copy_"
EAGER = "torch eager"
COMPILED = "torch.compile"
F_EMBEDDING = "F.embedding"
ADAMW_FUSED = "torch AdamW(fused)"
VECTOR_NORM = "linalg.vector_norm"
INDEX_COPY = "index_copy_"
SDPA_FLASH = "SDPA flash"
SDPA_CUDNN = "SDPA cudnn"
SDPA_GQA = "SDPA gqa"
SORT_TOP_P = "sort top-p"
SOFTMAX_MULTINOMIAL = "softmax+multinomial"
EXPONENTIAL_RACE = "exponential race"
LOG_SOFTMAX_GATHER = "log_softmax gather"

A = 2  # bf16 activations


def dims(*d):
    return "[" + ", ".join(str(x) for x in d) + "]"


def mkn(m, k, n):
    return f"M={m} K={k} N={n}"


class Row:
    """One (problem, implementation) pair: what grpo4j calls a row, plus how to run it with torch."""

    def __init__(self, family, name, shape, dtype, work, unit, formula, impl, run, **params):
        self.family, self.name, self.shape, self.dtype = family, name, shape, dtype
        self.work, self.unit, self.formula, self.impl = float(work), unit, formula, impl
        self.run, self.params = run, params

    @property
    def id(self):
        return self.family + "/" + self.name


def plan(sz, families, compile_rows=True):
    s = sz
    rows = []
    eagers = [EAGER, COMPILED] if compile_rows else [EAGER]

    # ceilings
    n = s["copy_elements"]
    rows.append(Row("ceiling", "copy fp32", dims(n), "fp32", 8 * n, "byte", "2*4*n: n fp32 read, n written", TORCH_COPY,
                    "copy", n=n))
    g = s["gemm_ceiling"]
    rows.append(Row("ceiling", f"matmul bf16 {g}^3", mkn(g, g, g), "bf16", 2 * g ** 3, "flop", "2*M*N*K", TORCH_MATMUL,
                    "matmul", m=g, k=g, n=g))
    t, h, f, v = s["tokens"], s["hidden"], s["ffn"], s["vocab"]
    hq, hkv, hd, bs = s["q_heads"], s["kv_heads"], s["head_dim"], s["kv_block_size"]

    if "gemm" in families:
        for (m, k, nn) in s["gemms"]:
            rows.append(Row("gemm", f"matmul {m}x{k}x{nn}", mkn(m, k, nn), "bf16", 2 * m * nn * k, "flop", "2*M*N*K",
                            TORCH_MATMUL, "matmul", m=m, k=k, n=nn))
        m, k, nn = s["gemms"][-1]
        rows.append(Row("gemm", f"host cost {m}x{k}x{nn}", mkn(m, k, nn), "bf16", 1, "call",
                        f"host wall time of {HOST_CALLS} back-to-back torch.matmul calls / {HOST_CALLS}", TORCH_MATMUL,
                        "host_cost", m=m, k=k, n=nn))
        # a decode step's GEMMs at the recipe's batch per GPU (48 x 16 over 8), counted in bytes (memory-bound)
        m = max(1, s["decode_batch"] // 8)
        for (k, nn) in [(h, hq * hd), (h, f), (f, h), (h, v)]:
            rows.append(Row("gemm", f"decode matmul {m}x{k}x{nn}", mkn(m, k, nn), "bf16", 2 * (m * k + nn * k + m * nn),
                            "byte", "(M*K + N*K + M*N) x 2: A, the weight B and C once each (memory-bound at this M)",
                            TORCH_MATMUL, "matmul", m=m, k=k, n=nn))
    if "norm" in families:
        fwd, bwd = 2 * A * t * h + A * h + 4 * t, 3 * A * t * h + (A + 8) * h + 4 * t
        for impl in eagers:
            rows.append(Row("norm", "rmsnorm fwd", dims(t, h), "bf16 (HF LlamaRMSNorm, bf16 weight)", fwd, "byte",
                            "2*A*T*H + A*H + 4*T", impl, "rmsnorm", t=t, h=h, bwd=False, compiled=impl == COMPILED))
            rows.append(Row("norm", "rmsnorm fwd+bwd", dims(t, h), "bf16 (HF LlamaRMSNorm, bf16 weight)", fwd + bwd,
                            "byte", "fwd + bwd", impl, "rmsnorm", t=t, h=h, bwd=True, compiled=impl == COMPILED))
    if "rope" in families:
        one = 2 * A * t * hq * hd + 4 * t
        for impl in eagers:
            rows.append(Row("rope", "rope fwd", dims(t, hq, hd), "bf16 (HF rotate_half, cos/sin precomputed)", one,
                            "byte", "2*A*T*Hq*D + 4*T", impl, "rope", t=t, hq=hq, hd=hd, bwd=False,
                            compiled=impl == COMPILED))
            rows.append(Row("rope", "rope fwd+bwd", dims(t, hq, hd), "bf16 (HF rotate_half, cos/sin precomputed)",
                            2 * one, "byte", "fwd + bwd", impl, "rope", t=t, hq=hq, hd=hd, bwd=True,
                            compiled=impl == COMPILED))
    if "swiglu" in families:
        for impl in eagers:
            rows.append(Row("swiglu", "swiglu fwd", dims(t, f), "bf16", 3 * A * t * f, "byte", "3*A*T*F", impl,
                            "swiglu", t=t, f=f, bwd=False, compiled=impl == COMPILED))
            rows.append(Row("swiglu", "swiglu fwd+bwd", dims(t, f), "bf16", 8 * A * t * f, "byte", "fwd + bwd", impl,
                            "swiglu", t=t, f=f, bwd=True, compiled=impl == COMPILED))
    if "embedding" in families:
        ids = [(i * P + 12_345) % v for i in range(t)]
        u = len(set(ids))
        fwd, bwd = 2 * A * t * h + 4 * t, A * t * h + 4 * t + 8 * u * h
        shape = f"V={v} D={h} T={t}"
        rows.append(Row("embedding", "embedding fwd", shape, "bf16", fwd, "byte", "2*A*T*D + 4*T", F_EMBEDDING,
                        "embedding", v=v, h=h, t=t, bwd=False))
        rows.append(Row("embedding", "embedding fwd+bwd", shape, "bf16 (dense bf16 table gradient)", fwd + bwd, "byte",
                        "fwd + bwd", F_EMBEDDING, "embedding", v=v, h=h, t=t, bwd=True))
    if "elementwise" in families:
        n, w = t * h, h * f
        rows.append(Row("elementwise", "add", dims(n), "bf16", 3 * A * n, "byte", "3*A*n", EAGER, "add", n=n))
        rows.append(Row("elementwise", "axpy", dims(w), "y fp32, x bf16", (8 + A) * w, "byte", "(8 + A)*n", EAGER,
                        "axpy", n=w))
        rows.append(Row("elementwise", "cast fp32->bf16", dims(w), "fp32 -> bf16", 6 * w, "byte", "6*n", EAGER, "cast",
                        n=w, src="float32", dst="bfloat16"))
        rows.append(Row("elementwise", "cast bf16->fp32", dims(w), "bf16 -> fp32", 6 * w, "byte", "6*n", EAGER, "cast",
                        n=w, src="bfloat16", dst="float32"))
    if "adamw" in families:
        n = s["adam_params"]
        rows.append(Row("adamw", "adamw", dims(n), "fp32 (no bf16 copy-out)", 30 * n, "byte",
                        "30*n (grpo4j's problem; fused AdamW moves 28*n: it has no bf16 copy-out)", ADAMW_FUSED, "adamw",
                        n=n))
    if "reduce" in families:
        n = s["reduce_elements"]
        rows.append(Row("reduce", "sumsquares", dims(n), "fp32", 4 * n, "byte", "4*n", VECTOR_NORM, "sumsquares", n=n))
    if "kvcache" in families:
        rows.append(Row("kvcache", "kvappend", f"T={t} Hkv={hkv} D={hd}", "bf16", 4 * A * t * hkv * hd + 4 * t, "byte",
                        "4*A*T*Hkv*D + 4*T", INDEX_COPY, "kvappend", t=t, hkv=hkv, hd=hd, bs=bs))
    if "attention" in families:
        for (b, sq) in s["attention"]:
            fwd = 2 * b * hq * sq * sq * hd
            tag, shape = f"b{b} s{sq}", f"B={b} S={sq} Hq={hq} Hkv={hkv} D={hd} causal"
            for impl in (SDPA_FLASH, SDPA_CUDNN):
                rows.append(Row("attention", "fwd " + tag, shape, "bf16", fwd, "flop", "2*B*Hq*S^2*D", impl,
                                "attention", b=b, s=sq, hq=hq, hkv=hkv, hd=hd, bwd=False))
                rows.append(Row("attention", "fwd+bwd " + tag, shape, "bf16", 3.5 * fwd, "flop", "3.5 * fwd", impl,
                                "attention", b=b, s=sq, hq=hq, hkv=hkv, hd=hd, bwd=True))
    if "decode" in families:
        b, ctx = s["decode_batch"], s["decode_context"]
        rows.append(Row("decode", f"decode b{b} ctx{ctx}", f"B={b} ctx={ctx} Hq={hq} Hkv={hkv} D={hd}",
                        "bf16 (contiguous KV)", 2 * A * b * ctx * hkv * hd + 2 * A * b * hq * hd, "byte",
                        "2*A*B*ctx*Hkv*D + 2*A*B*Hq*D", SDPA_GQA, "decode", b=b, ctx=ctx, hq=hq, hkv=hkv, hd=hd))
        c1, d1 = ctx * 3 // 8, 64  # llama-3.2-1b's rollout at steady state (grpo4j's Cases.decode)
        rows.append(Row("decode", f"decode b{b} ctx{c1} d{d1}", f"B={b} ctx={c1} Hq={hq} Hkv={hkv} D={d1}",
                        "bf16 (contiguous KV)", 2 * A * b * c1 * hkv * d1 + 2 * A * b * hq * d1, "byte",
                        "2*A*B*ctx*Hkv*D + 2*A*B*Hq*D", SDPA_GQA, "decode", b=b, ctx=c1, hq=hq, hkv=hkv, hd=d1))
    if "sampling" in families:
        b = s["sample_batch"]
        shape = f"B={b} V={v}"
        rows.append(Row("sampling", "top-p 0.9", shape, "fp32 logits", 4 * b * v, "byte", "4*B*V", SORT_TOP_P,
                        "sampling", b=b, v=v, kind="sort"))
        rows.append(Row("sampling", "plain", shape, "fp32 logits", 4 * b * v, "byte", "4*B*V", SOFTMAX_MULTINOMIAL,
                        "sampling", b=b, v=v, kind="multinomial"))
        rows.append(Row("sampling", "plain", shape, "fp32 logits", 4 * b * v, "byte", "4*B*V", EXPONENTIAL_RACE,
                        "sampling", b=b, v=v, kind="race"))
    if "lmhead" in families:
        n = s["lm_tokens"]
        shape = f"N={n} H={h} V={v}"
        rows.append(Row("lmhead", "logprob fwd", shape, "bf16", 2 * n * h * v, "flop", "2*N*H*V", LOG_SOFTMAX_GATHER,
                        "lmhead", n=n, h=h, v=v, bwd=False))
        rows.append(Row("lmhead", "logprob fwd+bwd", shape, "bf16", 6 * n * h * v, "flop", "6*N*H*V",
                        LOG_SOFTMAX_GATHER, "lmhead", n=n, h=h, v=v, bwd=True))
    return rows


def rate(unit, work, ms):
    return {"flop": work / (ms * 1e9), "byte": work / (ms * 1e6), "call": ms * 1e3}[unit]


RATE_UNIT = {"flop": "TFLOP/s", "byte": "GB/s", "call": "us/call"}


def row_json(r, status, ms=None, reps=0, note=None, ceiling=None, extra=None):
    o = dict(id=r.id, family=r.family, name=r.name, shape=r.shape, dtype=r.dtype, impl=r.impl, status=status)
    if note:
        o["note"] = note
    if ms:
        s = sorted(ms)
        k = len(s)
        med = s[k // 2] if k % 2 else (s[k // 2 - 1] + s[k // 2]) / 2
        o.update(median_ms=med, min_ms=s[0], max_ms=s[-1])
    o.update(reps=reps, work=r.work, work_unit=r.unit, formula=r.formula)
    if ms:
        o["rate"] = rate(r.unit, r.work, o["median_ms"])
        if ceiling:
            o["ceiling_pct"] = 100 * o["rate"] / ceiling
    o["rate_unit"] = RATE_UNIT[r.unit]
    if extra is not None:
        o["extra_bytes"] = int(extra)
    return o


# ---- torch runners ---------------------------------------------------------------------------------------------------
# Each runner builds one buffer set and returns (fn, bytes_allocated); fn runs the problem once.

def runners(torch):
    F = torch.nn.functional
    dev = "cuda"
    bf16, f32 = torch.bfloat16, torch.float32
    compiled_cache = {}

    def nbytes(*ts):
        return sum(x.numel() * x.element_size() for x in ts)

    def maybe_compile(fn, compiled):
        if not compiled:
            return fn
        if fn not in compiled_cache:
            compiled_cache[fn] = torch.compile(fn, dynamic=False)
        return compiled_cache[fn]

    def copy(p):
        src = torch.randn(p["n"], device=dev)
        dst = torch.empty_like(src)
        return (lambda: dst.copy_(src)), nbytes(src, dst)

    def matmul(p):
        a = torch.randn(p["m"], p["k"], device=dev, dtype=bf16)
        b = torch.randn(p["n"], p["k"], device=dev, dtype=bf16)
        c = torch.empty(p["m"], p["n"], device=dev, dtype=bf16)
        bt = b.t()
        return (lambda: torch.matmul(a, bt, out=c)), nbytes(a, b, c)

    def rms_hf(x, w):  # transformers' LlamaRMSNorm.forward
        xf = x.to(torch.float32)
        var = xf.pow(2).mean(-1, keepdim=True)
        xf = xf * torch.rsqrt(var + 1e-5)
        return w * xf.to(x.dtype)

    def rmsnorm(p):
        x = torch.randn(p["t"], p["h"], device=dev, dtype=bf16)
        w = torch.randn(p["h"], device=dev, dtype=bf16)
        fn = maybe_compile(rms_hf, p["compiled"])
        if not p["bwd"]:
            return (lambda: fn(x, w)), nbytes(x, w) * 2
        x.requires_grad_(True)
        w.requires_grad_(True)
        dy = torch.randn_like(x)
        return (lambda: torch.autograd.grad(fn(x, w), (x, w), dy)), nbytes(x, w, dy) * 2

    def rotate_half(x):
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    def rope_hf(q, cos, sin):  # transformers' apply_rotary_pos_emb for one tensor
        return q * cos + rotate_half(q) * sin

    def rope(p):
        t, hq, hd = p["t"], p["hq"], p["hd"]
        q = torch.randn(t, hq, hd, device=dev, dtype=bf16)
        pos = torch.arange(t, device=dev) % 2048
        inv = 1.0 / (500000.0 ** (torch.arange(0, hd, 2, device=dev, dtype=f32) / hd))
        ang = pos[:, None].float() * inv[None, :]
        emb = torch.cat((ang, ang), dim=-1)
        cos, sin = emb.cos().to(bf16)[:, None, :], emb.sin().to(bf16)[:, None, :]
        fn = maybe_compile(rope_hf, p["compiled"])
        if not p["bwd"]:
            return (lambda: fn(q, cos, sin)), nbytes(q) * 2
        q.requires_grad_(True)
        dy = torch.randn_like(q)
        return (lambda: torch.autograd.grad(fn(q, cos, sin), (q,), dy)), nbytes(q) * 3

    def swiglu_fn(g, u):
        return F.silu(g) * u

    def swiglu(p):
        g = torch.randn(p["t"], p["f"], device=dev, dtype=bf16)
        u = torch.randn_like(g)
        fn = maybe_compile(swiglu_fn, p["compiled"])
        if not p["bwd"]:
            return (lambda: fn(g, u)), nbytes(g, u) * 3 // 2
        g.requires_grad_(True)
        u.requires_grad_(True)
        dy = torch.randn_like(g)
        return (lambda: torch.autograd.grad(fn(g, u), (g, u), dy)), nbytes(g, u, dy) * 5 // 3

    def embedding(p):
        v, h, t = p["v"], p["h"], p["t"]
        table = torch.randn(v, h, device=dev, dtype=bf16)
        ids = (torch.arange(t, device=dev, dtype=torch.int64) * P + 12_345) % v
        if not p["bwd"]:
            return (lambda: F.embedding(ids, table)), nbytes(table)
        table.requires_grad_(True)
        dy = torch.randn(t, h, device=dev, dtype=bf16)
        return (lambda: torch.autograd.grad(F.embedding(ids, table), (table,), dy)), nbytes(table) * 2

    def add(p):
        a = torch.randn(p["n"], device=dev, dtype=bf16)
        b, c = torch.randn_like(a), torch.empty_like(a)
        return (lambda: torch.add(a, b, out=c)), nbytes(a, b, c)

    def axpy(p):
        y = torch.randn(p["n"], device=dev)
        x = torch.randn(p["n"], device=dev, dtype=bf16)
        return (lambda: y.add_(x, alpha=0.5)), nbytes(x, y)

    def cast(p):
        src = torch.randn(p["n"], device=dev).to(getattr(torch, p["src"]))
        dst = torch.empty(p["n"], device=dev, dtype=getattr(torch, p["dst"]))
        return (lambda: dst.copy_(src)), nbytes(src, dst)

    def adamw(p):
        w = torch.nn.Parameter(torch.randn(p["n"], device=dev))
        w.grad = torch.randn_like(w) * 1e-2
        opt = torch.optim.AdamW([w], lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01, fused=True)
        return (lambda: opt.step()), nbytes(w) * 4

    def sumsquares(p):
        x = torch.randn(p["n"], device=dev)
        return (lambda: torch.linalg.vector_norm(x)), nbytes(x)

    def kvappend(p):
        t, hkv, hd, bs = p["t"], p["hkv"], p["hd"], p["bs"]
        cap = ((2 * t + bs - 1) // bs) * bs
        kc = torch.zeros(cap, hkv, hd, device=dev, dtype=bf16)
        vc = torch.zeros_like(kc)
        k = torch.randn(t, hkv, hd, device=dev, dtype=bf16)
        v = torch.randn_like(k)
        slots = (torch.arange(t, device=dev, dtype=torch.int64) * P + 7) % cap

        def fn():
            kc.index_copy_(0, slots, k)
            vc.index_copy_(0, slots, v)
        return fn, nbytes(kc, vc, k, v)

    def sdpa_ctx(impl):
        from torch.nn.attention import SDPBackend, sdpa_kernel
        return sdpa_kernel(SDPBackend.FLASH_ATTENTION if impl == SDPA_FLASH else SDPBackend.CUDNN_ATTENTION)

    def attention(p, impl):
        b, s, hq, hkv, hd = p["b"], p["s"], p["hq"], p["hkv"], p["hd"]
        q = torch.randn(b, hq, s, hd, device=dev, dtype=bf16)
        k = torch.randn(b, hkv, s, hd, device=dev, dtype=bf16)
        v = torch.randn_like(k)
        note = None
        try:
            with sdpa_ctx(impl):
                F.scaled_dot_product_attention(q[:1, :, :16], k[:1, :, :16], v[:1, :, :16], is_causal=True, enable_gqa=True)
            gqa = True
        except (RuntimeError, TypeError):
            # this backend has no GQA: expand K/V to the query heads outside the timed region
            k, v = k.repeat_interleave(hq // hkv, dim=1), v.repeat_interleave(hq // hkv, dim=1)
            gqa, note = False, "K/V expanded to the query heads (no GQA in this SDPA backend)"

        def fwd():
            with sdpa_ctx(impl):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        if not p["bwd"]:
            return fwd, nbytes(q, k, v) + nbytes(q), note
        for x in (q, k, v):
            x.requires_grad_(True)
        dy = torch.randn_like(q)
        return (lambda: torch.autograd.grad(fwd(), (q, k, v), dy)), 3 * nbytes(q, k, v), note

    def decode(p):
        from torch.nn.attention import SDPBackend, sdpa_kernel
        b, ctx, hq, hkv, hd = p["b"], p["ctx"], p["hq"], p["hkv"], p["hd"]
        q = torch.randn(b, hq, 1, hd, device=dev, dtype=bf16)
        k = torch.randn(b, hkv, ctx, hd, device=dev, dtype=bf16)
        v = torch.randn_like(k)

        def sdpa(backend):
            def run():
                if backend is None:
                    return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
            return run
        # the fastest of SDPA's own choice and each fused backend (one may refuse this shape): the goal is against
        # the best torch does here (issue 12 quotes 4,441 GB/s; the first run's default choice gave 2,564)
        variants = {"default": sdpa(None), "flash": sdpa(SDPBackend.FLASH_ATTENTION),
                    "efficient": sdpa(SDPBackend.EFFICIENT_ATTENTION), "cudnn": sdpa(SDPBackend.CUDNN_ATTENTION)}
        return variants, nbytes(q, k, v, q)

    def sampling(p):
        logits = torch.randn(p["b"], p["v"], device=dev) * LOGIT_SCALE
        kind = p["kind"]

        def sort_top_p():
            probs = torch.softmax(logits, dim=-1)
            sp, si = torch.sort(probs, dim=-1, descending=True)
            cs = torch.cumsum(sp, dim=-1)
            sp = sp.masked_fill(cs - sp > 0.9, 0.0)
            return si.gather(-1, torch.multinomial(sp, 1))

        def multinomial():
            return torch.multinomial(torch.softmax(logits, dim=-1), 1)

        def race():
            probs = torch.softmax(logits, dim=-1)
            return (probs / torch.empty_like(probs).exponential_()).argmax(dim=-1)

        def gumbel():
            # argmax(logits + Gumbel noise), the noise -log(E) for E ~ Exp(1): the same draw without the softmax
            return (logits - torch.empty_like(logits).exponential_().log_()).argmax(dim=-1)
        if kind == "race":  # the fastest of the two formulations (issue 13 quotes 0.75 ms for "Gumbel")
            return {"softmax / exponential": race, "Gumbel on the logits": gumbel}, nbytes(logits)
        return {"sort": sort_top_p, "multinomial": multinomial}[kind], nbytes(logits)

    def lmhead(p):
        n, h, v = p["n"], p["h"], p["v"]
        hid = torch.randn(n, h, device=dev, dtype=bf16)
        w = torch.randn(v, h, device=dev, dtype=bf16) / math.sqrt(h)
        tgt = ((torch.arange(n, device=dev, dtype=torch.int64) * P + 5) % v)[:, None]

        def fwd():
            return torch.log_softmax((hid @ w.T).float(), dim=-1).gather(-1, tgt)
        if not p["bwd"]:
            return fwd, nbytes(hid, w)
        hid.requires_grad_(True)
        w.requires_grad_(True)
        dy = torch.randn(n, 1, device=dev)
        return (lambda: torch.autograd.grad(fwd(), (hid, w), dy)), 2 * nbytes(hid, w)

    return dict(copy=copy, matmul=matmul, host_cost=matmul, rmsnorm=rmsnorm, rope=rope, swiglu=swiglu,
                embedding=embedding, add=add, axpy=axpy, cast=cast, adamw=adamw, sumsquares=sumsquares,
                kvappend=kvappend, attention=attention, decode=decode, sampling=sampling, lmhead=lmhead)


def build(rn, r):
    """One buffer set: (fn, bytes, note)."""
    if r.run == "attention":
        return rn["attention"](r.params, r.impl)
    fn, b = rn[r.run](r.params)
    return fn, b, None


def fastest(torch, sets, warmup, reps, head_start):
    """A row of several formulations (build gave a dict): each timed over the rotated sets, the fastest median is the
    row's; returns its times and a note naming every formulation's median (or why it did not run)."""
    best, parts = None, []
    for label in sets[0]:
        try:
            ms = time_cuda(torch, [s[label] for s in sets], warmup, reps, head_start)
        except Exception as e:  # noqa: BLE001 - a backend that refuses the shape leaves the others
            parts.append(f"{label} refused ({type(e).__name__})")
            try:
                torch.cuda.synchronize()
            except Exception as lost:  # noqa: BLE001 - a device fault: the context is gone, the row ends here
                raise RuntimeError(f"{label} left the device unusable ({type(lost).__name__}); timed before it: "
                                   + ", ".join(parts)) from e
            continue
        med = statistics.median(ms)
        parts.append(f"{label} {med:.4f} ms")
        if best is None or med < best[0]:
            best = (med, label, ms)
    if best is None:
        raise RuntimeError("every formulation failed: " + ", ".join(parts))
    return best[2], f"the fastest of {', '.join(parts)}: {best[1]}"


PRELOAD_MS = 100  # as grpo4j's CudaEventTimer.PRELOAD_MS


def preload(torch, fns, start):
    """Runs the row back to back for PRELOAD_MS of GPU time (batches of 1, 2, 4, ... timed by events; at most 8191
    calls or 1 s of host time), so that every row's timing starts from the same loaded state of the clocks, as
    grpo4j's CudaEventTimer does after its correctness check left the GPU idle."""
    import time
    wall_end = time.monotonic() + 1.0
    done, i, n = 0.0, start, 1
    while done < PRELOAD_MS and n <= 4096 and time.monotonic() < wall_end:
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(n):
            fns[i % len(fns)]()
            i += 1
        b.record()
        b.synchronize()
        done += a.elapsed_time(b)
        n *= 2


def time_cuda(torch, fns, warmup, reps, head_start):
    for i in range(warmup):
        fns[i % len(fns)]()
    preload(torch, fns, warmup)
    torch.cuda.synchronize()
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(reps + 1)]
    head_start()
    ev[0].record()
    for r in range(reps):
        fns[(warmup + r) % len(fns)]()
        ev[r + 1].record()
    ev[reps].synchronize()
    return [ev[r].elapsed_time(ev[r + 1]) for r in range(reps)]


def host_cost(torch, fn, warmup, reps):
    import time
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        for _ in range(HOST_CALLS):
            fn()
        out.append((time.perf_counter_ns() - t0) / 1e6 / HOST_CALLS)
        torch.cuda.synchronize()
    return out


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
    try:
        d = torch._C._cuda_getDriverVersion()
        return f"supports CUDA {d // 1000}.{d % 1000 // 10}"
    except Exception:  # noqa: BLE001 - best effort
        return None


def measure(args, rows, progress=None):
    """Times the rows; progress(out, copy_gbs, gemm_tflops, meta), when given, sees the rows so far after each one."""
    import torch
    if not torch.cuda.is_available():
        sys.exit("bench-peers: torch sees no CUDA device (use --fake-timer to check the JSON structure)")
    torch.backends.cuda.matmul.allow_tf32 = False
    rn = runners(torch)
    hs1 = torch.zeros(1 << 26, device="cuda")
    hs2 = torch.empty_like(hs1)

    def head_start():
        for i in range(16):
            (hs2 if i % 2 == 0 else hs1).copy_(hs1 if i % 2 == 0 else hs2)

    free, _total = torch.cuda.mem_get_info()
    budget = 0.6 * free
    meta = dict(card=torch.cuda.get_device_name(0), driver=driver_version(torch), runtime=torch.version.cuda,
                torch=torch.__version__)
    out, copy_gbs, gemm_tflops = [], None, None
    for r in rows:
        sets = []
        try:
            fn, b, note = build(rn, r)
            sets.append(fn)
            b = max(1, b)
            touched = r.work if r.unit == "byte" else b
            # the host cost runs one set: it measures the host, the GPU's caches do not matter
            k = 1 if r.run == "host_cost" else max(1, min(MAX_SETS, math.ceil(ROTATE_BYTES / touched)))
            while k > 1 and k * b > budget:
                k -= 1
            while len(sets) < k:
                sets.append(build(rn, r)[0])
            extra = None
            if r.family == "lmhead":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                sets[0]()
                torch.cuda.synchronize()
                extra = torch.cuda.max_memory_allocated() - base
            if r.run == "host_cost":
                ms = host_cost(torch, sets[0], args.warmup, args.reps)
            elif isinstance(sets[0], dict):
                ms, which = fastest(torch, sets, args.warmup, args.reps, head_start)
                note = (note + "; " if note else "") + which
            else:
                ms = time_cuda(torch, sets, args.warmup, args.reps, head_start)
            if k > 1:
                note = (note + "; " if note else "") + f"{k} buffer sets rotated"
            if r.family == "ceiling":
                ceiling = None
            else:
                ceiling = copy_gbs if r.unit == "byte" else gemm_tflops if r.unit == "flop" else None
            o = row_json(r, "ok", ms, args.reps, note, ceiling, extra)
            if r.id == "ceiling/copy fp32":
                copy_gbs = o["rate"]
            elif r.family == "ceiling":
                gemm_tflops = o["rate"]
            if r.family == "ceiling":
                o["ceiling_pct"] = 100.0
        except Exception as e:  # noqa: BLE001 - one failing peer must not stop the others
            o = row_json(r, "error", note=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        finally:
            sets.clear()
            torch.cuda.empty_cache()
        out.append(o)
        summary = f"{o['median_ms']:.4f} ms, {o['rate']:.1f} {o['rate_unit']}" if o["status"] == "ok" else o["note"]
        print(f"bench-peers: {r.id} [{r.impl}]: {summary}", file=sys.stderr)
        if progress:
            progress(out, copy_gbs, gemm_tflops, meta)
    return out, copy_gbs, gemm_tflops, meta


def fake(args, rows):
    out = [row_json(r, "ok", [1.0] * args.reps, args.reps, "fake timer: placeholder 1 ms") for r in rows]
    torch_version = None
    try:
        import torch  # noqa: F401 - only its version is recorded
        torch_version = torch.__version__
    except ImportError:
        pass
    copy = next(o["rate"] for o in out if o["id"] == "ceiling/copy fp32")
    gemm = next(o["rate"] for o in out if o["family"] == "ceiling" and o["work_unit"] == "flop")
    return out, copy, gemm, dict(card="fake (no GPU timing)", driver="fake", runtime="fake", torch=torch_version)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", action="append", default=None,
                    help="one of " + ", ".join(FAMILIES) + " or all (repeatable, comma-separated; default all)")
    ap.add_argument("--sizes", default="llama-3.1-8b", help="llama-3.1-8b or small (default llama-3.1-8b)")
    ap.add_argument("--json", help="write the results here (default: stdout)")
    ap.add_argument("--reps", type=int, default=30, help="timed repetitions, >= 20 (default 30)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed repetitions first (default 5)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows (and the time torch.compile takes to compile)")
    ap.add_argument("--fake-timer", action="store_true",
                    help="placeholder timings, no torch or GPU needed: checks the JSON structure only")
    args = ap.parse_args(argv)
    if args.sizes not in SIZES:
        ap.error(f'unknown --sizes "{args.sizes}" (valid: {", ".join(SIZES)})')
    fams = set()
    for f in args.family or ["all"]:
        for x in f.split(","):
            x = x.strip().lower()
            if x == "all":
                fams.update(FAMILIES)
            elif x in FAMILIES:
                fams.add(x)
            else:
                ap.error(f'unknown --family "{x}" (valid: {", ".join(FAMILIES)}, all)')
    if args.reps < 20:
        ap.error(f"--reps must be >= 20, got {args.reps}")
    rows = plan(SIZES[args.sizes], fams, compile_rows=not args.no_compile)
    date = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")

    def report(out, copy, gemm, meta, complete):
        return json.dumps(dict(schema=SCHEMA, tool="pytorch", sizes=args.sizes, card=meta["card"], driver=meta["driver"],
                               runtime=meta["runtime"], torch=meta["torch"], date=date, fake=bool(args.fake_timer),
                               complete=complete, copy_gbs=copy, gemm_tflops=gemm, rows=out), indent=2) + "\n"

    def save(text):  # through a temporary file and a rename: a reader never sees half a file
        tmp = os.path.join(os.path.dirname(os.path.abspath(args.json)), "." + os.path.basename(args.json) + ".tmp")
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, args.json)

    # with --json the rows so far are written after each one (complete: false), so that a run stopped at its time limit
    # (the loan's torch.compile rows, whose cold compiles take minutes) keeps what it measured
    progress = (lambda out, copy, gemm, meta: save(report(out, copy, gemm, meta, False))) if args.json else None
    if args.fake_timer:
        out, copy, gemm, meta = fake(args, rows)
    else:
        try:
            import torch  # noqa: F401
        except ImportError:
            sys.exit("bench-peers: torch is not installed (use --fake-timer to check the JSON structure)")
        out, copy, gemm, meta = measure(args, rows, progress)
    text = report(out, copy, gemm, meta, True)
    if args.json:
        save(text)
        print(f"bench-peers: wrote {args.json}", file=sys.stderr)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
