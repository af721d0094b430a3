#!/usr/bin/env python3
"""Reference verdicts from open-instruct's own verifiers at commit 3f37c29.

Runs each case through the unmodified verifier code of allenai/open-instruct at commit
3f37c29ddc97d2c108a7658692d2d2c3708ef182 ("quick add", 2025-02-06), the code of the Tulu 3.1 RLVR (GRPO) run:

    open_instruct/ground_truth_utils.py  git blob f89ceb00c13c335a8d67cfc926669666032d6bb6
    open_instruct/math_utils.py          git blob 56a0a8cc4a6e27e987be7cfde447f778b1385e44
    open_instruct/if_functions.py        git blob 367bdfda944a895ad8c697e8d164a0330e8267c7

taken with `git show 3f37c29:open_instruct/<file>` and checked here against those blob ids (the script refuses
other files). Routing is that of open_instruct/model_utils.py `apply_verifiable_reward` at 3f37c29, the function
grpo_vllm_thread_ray_gtrl.py calls; it is restated below (`route`) rather than imported, because model_utils pulls
in torch/transformers. A None ground truth scores 0; dataset.lower() == "gsm8k" -> verify_gsm8k_sample, "math" ->
verify_math_sample, "ifeval" -> verify_ifeval_sample, anything else -> 0; the reward is given when the verifier's
return value is truthy, so reference_verdict = bool(return value) (validate_placeholders returns a tuple, always
truthy). The verifiers and the run do not catch exceptions (except inside is_equiv/hendrycks_is_equiv): a case
that raises is reported as reference_verdict "error", with reference_error "<Type>: <message>". In the real run
such an exception would crash the training step; grpo4j scores it 0.

Dependencies, as pinned by 3f37c29's uv.lock / requirements.txt (the script checks them, --allow-other-versions
to skip):
    sympy 1.13.1, antlr4-python3-runtime 4.11.0 (sympy's parse_latex refuses any other antlr runtime: it raises
    ImportError, which is_equiv re-raises), mpmath 1.3.0. Python 3.10/3.11 (pyproject: >=3.10,<3.12).
  How they were satisfied when this was written: a venv (/tmp/oi-3f37c29/venv, Python 3.11.7) with
    sympy 1.13.1 installed from the source of tag sympy-1.13.1 (commit 2e489cf4b1438ae134ba98a44a80cc9add1306b0 of
    sympy/sympy, pure Python, its generated LaTeX parser included), antlr4-python3-runtime 4.11.0 from
    runtime/Python3 of tag 4.11.0 (commit d23f010a3642a650076caea5a03b586cba37d7a0 of antlr/antlr4), mpmath 1.3.0
    from a local wheel: `pip install --no-index --no-build-isolation --no-deps <source dir>`.
  langdetect is NOT installed, on purpose: it is in neither requirements.txt nor uv.lock at 3f37c29, so
    validate_response_language's `from langdetect import detect` raises ModuleNotFoundError in the run's
    environment. The script refuses to run if langdetect is importable, unless --allow-langdetect is given
    (for interest only; it would no longer be the run's behaviour).
  nltk (pinned) is not imported by these three files. No stubs are used.

Usage (from the repository root; ChatTemplate-style: the test writes the cases, this script their verdicts):
    mvn -q test -Dtest=VerifierReferenceTest      # writes target/verifier-cases.json (fails while the fixture is stale)
    python tools/reference/verifier_fixture.py --open-instruct-git GITDIR target/verifier-cases.json \
        src/test/resources/fixtures/verifiers/open-instruct-3f37c29.json
GITDIR: a clone of allenai/open-instruct holding 3f37c29 (the three files are extracted from it into a temp dir), or
--open-instruct-dir DIR holding open_instruct/{ground_truth_utils,math_utils,if_functions}.py. The cases:
[{"dataset", "ground_truth", "response", "constraint_type", "constraint", ...}, ...]; other keys are kept. The output
is the same list with "reference_verdict" (true / false / "error"), "reference_error" (only for errors) and
"reference_return" (repr of the verifier's return value) added to each case.
src/test/java/org/grpo4j/internal/reward/VerifierReferenceTest.java compares grpo4j's compat mode with it.
"""
import argparse
import contextlib
import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import traceback

COMMIT = "3f37c29ddc97d2c108a7658692d2d2c3708ef182"
BLOBS = {
    "ground_truth_utils.py": "f89ceb00c13c335a8d67cfc926669666032d6bb6",
    "math_utils.py": "56a0a8cc4a6e27e987be7cfde447f778b1385e44",
    "if_functions.py": "367bdfda944a895ad8c697e8d164a0330e8267c7",
}
PINNED = {"sympy": "1.13.1", "antlr4-python3-runtime": "4.11.0", "mpmath": "1.3.0"}


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def prepare_sources(args) -> str:
    if args.open_instruct_git:
        root = tempfile.mkdtemp(prefix="oi-3f37c29-")
        os.makedirs(os.path.join(root, "open_instruct"))
        for name in BLOBS:
            data = subprocess.run(["git", "-C", args.open_instruct_git, "show", f"{COMMIT}:open_instruct/{name}"],
                                  check=True, capture_output=True).stdout
            with open(os.path.join(root, "open_instruct", name), "wb") as f:
                f.write(data)
    else:
        root = args.open_instruct_dir
    for name, blob in BLOBS.items():
        with open(os.path.join(root, "open_instruct", name), "rb") as f:
            got = git_blob_id(f.read())
        if got != blob:
            sys.exit(f"{name}: git blob {got}, expected {blob} (the file at {COMMIT[:7]})")
    return root


def check_deps(args):
    problems = []
    for dist, want in PINNED.items():
        try:
            have = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            have = None
        if have != want:
            problems.append(f"{dist} {have} (3f37c29 pins {want})")
    if problems and not args.allow_other_versions:
        sys.exit("dependency versions differ: " + "; ".join(problems) + " (--allow-other-versions to go on)")
    for p in problems:
        print("warning:", p, file=sys.stderr)
    try:
        import langdetect  # noqa: F401
        present = True
    except ImportError:
        present = False
    if present and not args.allow_langdetect:
        sys.exit("langdetect is importable, but the 3f37c29 environment lacks it (--allow-langdetect to go on)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cases")
    ap.add_argument("out")
    ap.add_argument("--open-instruct-dir", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--open-instruct-git")
    ap.add_argument("--allow-other-versions", action="store_true")
    ap.add_argument("--allow-langdetect", action="store_true")
    args = ap.parse_args()

    root = prepare_sources(args)
    check_deps(args)
    sys.path.insert(0, root)
    from open_instruct.ground_truth_utils import verify_gsm8k_sample, verify_ifeval_sample, verify_math_sample

    def route(prediction, ground_truth, dataset):
        # model_utils.apply_verifiable_reward at 3f37c29, one sample
        verified = False
        if ground_truth is None:
            return 0
        if dataset.lower() == "gsm8k":
            verified = verify_gsm8k_sample(prediction, ground_truth)
        elif dataset.lower() == "math":
            verified = verify_math_sample(prediction, ground_truth)
        elif dataset.lower() == "ifeval":
            verified = verify_ifeval_sample(prediction, ground_truth)
        return verified

    with open(args.cases, encoding="utf-8") as f:
        cases = json.load(f)
    out = []
    counts = {True: 0, False: 0, "error": 0}
    for case in cases:
        r = dict(case)
        try:
            # the verifiers print warnings to stdout; keep them off our stdout
            with contextlib.redirect_stdout(sys.stderr):
                ret = route(case["response"], case["ground_truth"], case["dataset"])
            r["reference_verdict"] = bool(ret)
            r["reference_return"] = repr(ret)
        except Exception as e:  # noqa: BLE001 - the run would crash here; we record it
            r["reference_verdict"] = "error"
            r["reference_error"] = f"{type(e).__name__}: {e}"
            r["reference_return"] = None
            if os.environ.get("RUN_CASES_TRACEBACK"):
                traceback.print_exc()
        counts[r["reference_verdict"]] += 1
        out.append(r)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{len(out)} cases: {counts[True]} true, {counts[False]} false, {counts['error']} error "
          f"(open-instruct {COMMIT[:7]}, sympy {importlib.metadata.version('sympy')}, "
          f"antlr4 {importlib.metadata.version('antlr4-python3-runtime')}, Python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
