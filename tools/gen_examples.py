#!/usr/bin/env python3
"""Generates grpo4j's bundled example data and the tiny byte-level BPE tokenizer (our own data, our own code).

    python3 tools/gen_examples.py        # rewrites examples/data/*.jsonl and examples/tiny-tokenizer/*

Outputs are deterministic (fixed seeds) and committed; CI never runs this script.
- examples/data/tiny-arith.jsonl  GSM8K-style one-step arithmetic word problems (the demo's training data):
    a + b or a - b with single-digit operands, ground truth the numeric answer, dataset "gsm8k".
- examples/data/rlvr-mixed.jsonl  a small RLVR set in the real format: multi-step GSM8K-style problems (few-shot
    "Question/Answer" prompt as in the real set), MATH-style rows with boxed answers, IFEval-style rows whose
    ground truth is the JSON constraint with every key present.
- examples/tiny-tokenizer/  tokenizer.json (HF format: Llama 3 split regex + ByteLevel + BPE, ignore_merges) trained
    here on the example corpus rendered with the Tulu template, and tokenizer_config.json with the Tulu chat template.
"""
import json
import os
import random
import regex

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
TULU_TEMPLATE = ("{% for message in messages %}{% if message['role'] == 'system' %}{{ '<|system|>\\n' + message['content'] + '\\n' }}"
                 "{% elif message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + '\\n' }}"
                 "{% elif message['role'] == 'assistant' %}{% if not loop.last %}{{ '<|assistant|>\\n'  + message['content'] + eos_token + '\\n' }}"
                 "{% else %}{{ '<|assistant|>\\n'  + message['content'] + eos_token }}{% endif %}{% endif %}"
                 "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}{% endfor %}")

NAMES = ["Mia", "Tom", "Ana", "Sam", "Lee", "Ivy", "Max", "Zoe", "Ben", "Eva", "Leo", "Amy"]
THINGS = ["apples", "pens", "books", "cards", "coins", "cups", "eggs", "hats", "toys", "shells"]
ADD = ["{n} has {a} {t} and gets {b} more. How many {t} now?",
       "{n} had {a} {t}. A friend gave {b} more. How many now?",
       "A box has {a} {t} and a bag has {b}. How many {t} in all?",
       "{n} buys {a} {t}, then {b} more. How many {t}?"]
SUB = ["{n} has {a} {t} and gives away {b}. How many are left?",
       "{n} had {a} {t} and lost {b}. How many {t} now?",
       "There were {a} {t}. {n} took {b}. How many remain?"]


def tiny_arith(rng, count):
    rows = []
    for _ in range(count):
        n, t = rng.choice(NAMES), rng.choice(THINGS)
        # operands from 1 (never 0), so that a response cut short ("7 + ") cannot be right by accident
        if rng.random() < 0.5:
            a, b = rng.randint(1, 6), rng.randint(1, 6)
            q, ans, work = rng.choice(ADD).format(n=n, a=a, b=b, t=t), a + b, f"{a} + {b} = {a + b}"
        else:
            a = rng.randint(2, 9); b = rng.randint(1, min(6, a - 1))
            q, ans, work = rng.choice(SUB).format(n=n, a=a, b=b, t=t), a - b, f"{a} - {b} = {a - b}"
        # the assistant turn is the reference solution: the prompt is messages[:-1]; an optional SFT warm-up imitates it
        rows.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": work}],
                     "ground_truth": str(ans), "dataset": "gsm8k", "constraint_type": None, "constraint": None, "_solution": work})
    return rows


GSM_SHOTS = [("There are 15 trees in the grove. Grove workers will plant trees today. After they are done, there will be 21 trees. "
              "How many trees did the grove workers plant today?",
              "There are 15 trees originally. Then there were 21 trees after some more were planted. So there must have been 21 - 15 = 6. So the answer is 6."),
             ("If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
              "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. So the answer is 5.")]


def gsm_multi(rng, count):
    rows = []
    for _ in range(count):
        n, t = rng.choice(NAMES), rng.choice(THINGS)
        a, b, c = rng.randint(10, 99), rng.randint(2, 9), rng.randint(1, 50)
        q = f"{n} packs {a} boxes with {b} {t} each, then gives away {c} {t}. How many {t} does {n} have left?"
        ans = a * b - c
        shots = "".join(f"Question: {sq}\nAnswer: {sa}\n\n" for sq, sa in GSM_SHOTS)
        rows.append({"messages": [{"role": "user", "content": shots + f"Question: {q}"}], "ground_truth": str(ans),
                     "dataset": "gsm8k", "constraint_type": None, "constraint": None})
    return rows


MATH_ROWS = [("What is $\\frac{1}{2} + \\frac{1}{3}$?", "\\frac{5}{6}"),
             ("Simplify $\\sqrt{50}$.", "5\\sqrt{2}"),
             ("Solve for $x$: $2x + 3 = 11$.", "4"),
             ("What is the sum of the interior angles of a hexagon, in degrees?", "720"),
             ("Compute $\\dbinom{6}{2}$.", "15"),
             ("Find the distance between $(0,0)$ and $(3,4)$.", "5"),
             ("What is $0.\\overline{3}$ as a common fraction?", "\\frac{1}{3}"),
             ("Find all $x$ with $x^2 = 9$. Enter the solutions separated by commas.", "-3, 3")]

IF_KEYS = ["N", "quantifier", "end_phrase", "keyword_list", "word", "forbidden_words", "letter", "i", "first_word",
           "postscript_marker", "options", "section_splitter", "original_prompt"]
IF_ROWS = [("verify_bullet_points", {"N": 3}, "Number Bullets",
            "Your answer must contain exactly 3 bullet points. Use the markdown bullet points such as: * This is a point.",
            "List reasons to learn to cook."),
           ("validate_lowercase", {}, "Lowercase",
            "Your entire response should be in English, and in all lowercase letters. No capital letters are allowed.",
            "Describe a rainy afternoon."),
           ("verify_keywords", {"keyword_list": ["river", "bridge"]}, "Include Keywords",
            "Include keywords river, bridge in the response.", "Write a short story about a town."),
           ("validate_title", {}, "Title",
            "Your answer must contain a title, wrapped in double angular brackets, such as <<poem of joy>>.", "Write a poem about the sea."),
           ("verify_postscript", {"postscript_marker": "P.S."}, "Postscript",
            "At the end of your response, please explicitly add a postscript starting with P.S.", "Write a note to a neighbor."),
           ("validate_word_constraint", {"N": 50, "quantifier": "at most"}, "Number Words",
            "Answer with at most 50 words.", "Explain what a compiler does."),
           ("validate_end", {"end_phrase": "Is there anything else I can help with?"}, "End Checker",
            "Finish your response with this exact phrase Is there anything else I can help with?. No other words should follow this phrase.",
            "Give tips for a job interview."),
           ("validate_no_commas", {}, "No Commas",
            "In your entire response, refrain from the use of any commas.", "Describe your favorite meal.")]


def ifeval_rows():
    rows = []
    for func, args, ctype, ctext, task in IF_ROWS:
        gt = {"func_name": func}
        for k in IF_KEYS:
            gt[k] = args.get(k)
        rows.append({"messages": [{"role": "user", "content": f"{task} {ctext}"}], "ground_truth": json.dumps(gt),
                     "dataset": "ifeval", "constraint_type": ctype, "constraint": ctext})
    return rows


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}, ensure_ascii=False) + "\n")


# ---- byte-level BPE ------------------------------------------------------------------------------------------

def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def train_bpe(texts, num_merges):
    b2u = bytes_to_unicode()
    words = {}
    for text in texts:
        for piece in regex.findall(LLAMA3_SPLIT, text):
            w = tuple(b2u[b] for b in piece.encode("utf-8"))
            words[w] = words.get(w, 0) + 1
    vocab = {b2u[b]: i for i, b in enumerate(sorted(b2u, key=lambda b: ord(b2u[b])))}
    merges = []
    for _ in range(num_merges):
        pairs = {}
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] = pairs.get((a, b), 0) + c
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        if pairs[best] < 2:
            break
        merged = best[0] + best[1]
        merges.append(best)
        vocab[merged] = len(vocab)
        new_words = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] = new_words.get(tuple(out), 0) + c
        words = new_words
    return vocab, merges


def tokenizer_json(vocab, merges, specials):
    added = [{"id": len(vocab) + i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, s in enumerate(specials)]
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
            "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                      "vocab": vocab, "merges": [a + " " + b for a, b in merges]}}


def render_tulu(messages, eos):
    out = ""
    for i, m in enumerate(messages):
        if m["role"] == "user":
            out += "<|user|>\n" + m["content"] + "\n"
        elif m["role"] == "assistant":
            out += "<|assistant|>\n" + m["content"] + eos + ("" if i == len(messages) - 1 else "\n")
    return out


def main():
    rng = random.Random(1234)
    arith = tiny_arith(rng, 3000)
    write_jsonl(os.path.join(ROOT, "examples/data/tiny-arith.jsonl"), arith)
    mixed = gsm_multi(rng, 12)
    mixed += [{"messages": [{"role": "user", "content": "Solve the problem and put the final answer in \\boxed{}.\n\nProblem: " + q}],
               "ground_truth": a, "dataset": "MATH", "constraint_type": None, "constraint": None} for q, a in MATH_ROWS]
    mixed += ifeval_rows()
    rng.shuffle(mixed)
    write_jsonl(os.path.join(ROOT, "examples/data/rlvr-mixed.jsonl"), mixed)

    corpus = []
    for r in arith:
        corpus.append(render_tulu(r["messages"], ""))
    for r in mixed:
        corpus.append(render_tulu(r["messages"], ""))
    corpus += ["The answer is 42. So the answer is 7.", "Question: Answer: Final Answer: The final answer is",
               "I hope it is correct.", "Hello, world! This is grpo4j, a GRPO trainer written in Java."]
    vocab, merges = train_bpe(corpus, 250)
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<pad>"]
    tdir = os.path.join(ROOT, "examples/tiny-tokenizer")
    with open(os.path.join(tdir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_json(vocab, merges, specials), f, ensure_ascii=False, indent=1)
    with open(os.path.join(tdir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "pad_token": "<pad>",
                   "add_bos_token": False, "model_max_length": 2048, "tokenizer_class": "PreTrainedTokenizerFast",
                   "chat_template": TULU_TEMPLATE}, f, ensure_ascii=False, indent=1)
    print(f"tiny-arith: {len(arith)} rows; rlvr-mixed: {len(mixed)} rows; vocab {len(vocab)} + {len(specials)} special")


if __name__ == "__main__":
    main()
