"""Real-file check of the quantization mixes: the default model requantized by llama.cpp, run by both.

    flock /tmp/cpubuild-bench.lock .venv/bin/python benchmarks/quant_vs_llamacpp.py [--mixes Q4_K_M]

For each mix (a llama.cpp ``llama_ftype``, e.g. Q4_K_M):
1. ``llama_model_quantize`` (llama-cpp-python in ``--llama-python``, default ``.bench-venv/bin/python``,
   made by ``make bench``) requantizes the default model (SmolLM2-135M-Instruct Q4_1; requantizing is
   allowed) into build/quant/<model>.<mix>.gguf, and the tensor types llama.cpp chose are counted;
2. both engines decode greedily from the same token ids (a fixed prompt tokenized by llama.cpp), 32
   tokens each, with their own argmax over their own logits; the report gives how many leading tokens
   agree (a near-tie can legitimately flip once the activations are quantized differently);
   at the first difference the NumPy float64 reference's logits of both tokens are printed;
3. ``benchmarks/engine_vs_llamacpp.py`` times both on the file, interleaved, at ``--threads`` (default 2).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROMPT = "The three primary colors are red, yellow and blue. Explain how to mix them to get green:"
N_TOKENS = 32


# ---------------------------------------------------------------- llama.cpp side (runs in --llama-python)
def llama_quantize(src: str, dst: str, mix: str) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{mix}", None)  # llama.cpp's own names
    if ftype is None:
        raise SystemExit(f"llama.cpp has no quantization mix {mix!r} (llama_cpp.LLAMA_FTYPE_MOSTLY_*)")
    params.ftype = ftype
    params.allow_requantize = True
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params)
    if rc != 0:
        raise SystemExit(f"llama_model_quantize({mix}) failed with {rc}")


def llama_greedy(model: str, prompt: str, n: int) -> dict:
    import llama_cpp
    import numpy as np

    llm = llama_cpp.Llama(model_path=model, n_threads=2, n_ctx=256, verbose=False)
    ids = llm.tokenize(prompt.encode(), add_bos=True, special=True)
    llm.eval(ids)
    out = []
    for _ in range(n):
        # The last position's logits straight from the context (Llama.scores is only filled with logits_all).
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
        tok = int(np.argmax(logits))
        out.append(tok)
        llm.eval([tok])
    return {
        "prompt_ids": [int(t) for t in ids],
        "tokens": out,
        "text": llm.detokenize(out).decode(errors="replace"),
    }


# ---------------------------------------------------------------- cpullm side (this Python)
def cpullm_greedy(model: Path, ids: list[int], n: int) -> list[int]:
    import numpy as np

    from cpullm.model.model_file import ModelFile
    from cpullm.native.runner import NativeModel, SeqChunk

    nm = NativeModel(ModelFile.open(model))
    nm.set_threads(2)
    block = 16
    table = list(range((len(ids) + n) // block + 1))
    cache = nm.new_cache(len(table), block, "f16")
    logits = nm.step(cache, [SeqChunk(ids, 0, table, 1)])
    out = []
    for _ in range(n):
        tok = int(np.argmax(logits[-1]))
        out.append(tok)
        logits = nm.step(cache, [SeqChunk([tok], len(ids) + len(out) - 1, table, 1)])
    return out


def reference_at(model: Path, ids: list[int], a: int, b: int) -> str:
    """Where the engines first disagree: the NumPy float64 reference's logits for tokens a and b after ids
    (a near-tie flips with activation quantization; this says which engine the exact model sides with)."""
    from cpullm.model.model_file import ModelFile
    from cpullm.testing.reference import ReferenceModel

    logits = ReferenceModel(ModelFile.open(model)).logits(ids)[-1]
    pick = int(logits.argmax())
    return (
        f"float64 reference there: cpullm's {a}: {logits[a]:.3f}, llama.cpp's {b}: {logits[b]:.3f} "
        f"(its argmax {pick}: {logits[pick]:.3f})"
    )


def tensor_types(path: Path) -> dict[str, int]:
    from cpullm.model.gguf_file import GGUFFile

    return dict(Counter(t.type.name for t in GGUFFile.open(path).tensors.values()).most_common())


def _llama(python: str, *args: str) -> str:
    cmd = [python, __file__, "--llama-worker", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mixes", default="Q4_K_M", help="comma separated llama.cpp mixes, e.g. Q4_K_M,Q5_0")
    ap.add_argument("--threads", default="2")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--llama-python", default=str(REPO / ".bench-venv" / "bin" / "python"))
    ap.add_argument("--no-speed", action="store_true", help="only requantize and compare tokens")
    ap.add_argument("--llama-worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.llama_worker:
        what, *rest = args.llama_worker
        if what == "quantize":
            llama_quantize(*rest)
        else:
            print(json.dumps(llama_greedy(rest[0], PROMPT, N_TOKENS)))
        return 0

    sys.path.insert(0, str(REPO / "engine"))
    sys.path.insert(0, str(REPO / "tests"))
    from cpullm.model.default_model import default_model_path
    from support.native_build import build_native

    os.environ.setdefault("CPULLM_LIB_DIR", str(build_native("x86_64")))
    src = default_model_path()
    out_dir = REPO / "build" / "quant"
    out_dir.mkdir(parents=True, exist_ok=True)
    for mix in [m for m in args.mixes.split(",") if m]:
        dst = out_dir / f"{src.stem}.{mix}.gguf"
        if not dst.exists():
            _llama(args.llama_python, "quantize", str(src), str(dst), mix)
        print(f"## {mix}: {dst.name}, {dst.stat().st_size / 1e6:.1f} MB")
        print(f"tensor types chosen by llama.cpp: {tensor_types(dst)}")
        ref = json.loads(_llama(args.llama_python, "greedy", str(dst)))
        mine = cpullm_greedy(dst, ref["prompt_ids"], N_TOKENS)
        agree = next(
            (i for i, (a, b) in enumerate(zip(mine, ref["tokens"], strict=True)) if a != b), N_TOKENS
        )
        print(f"greedy tokens: {agree}/{N_TOKENS} leading tokens agree with llama.cpp's")
        if agree < N_TOKENS:
            ctx = ref["prompt_ids"] + mine[:agree]
            print(
                f"  first difference at token {agree}; "
                + reference_at(dst, ctx, mine[agree], ref["tokens"][agree])
            )
        print(f"  llama.cpp: {ref['tokens']}\n  cpullm:    {mine}\n  llama.cpp text: {ref['text']!r}")
        if not args.no_speed:
            subprocess.run(
                [sys.executable, str(REPO / "benchmarks" / "engine_vs_llamacpp.py"), "--model", str(dst),
                 "--threads", args.threads, "--reps", str(args.reps), "-p", "128", "-n", "64",
                 "--llama-python", args.llama_python, "--lib-dir", os.environ["CPULLM_LIB_DIR"]],
                check=True,
            )  # fmt: skip
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
