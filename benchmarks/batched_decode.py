"""Batched decode of the bare native model: n sequences decoding together, against one, and against the
compute ceiling of a step of that many rows.

    python benchmarks/batched_decode.py [--model M.gguf] [--batch 1,4,16] [--steps 32] [--rounds 5] [-t 2]

Each round, for each batch size n (interleaved: 1 4 16 1 4 16 ...): n sequences of a distinct 32-token prompt
are prefilled (untimed), then `--steps` decode steps each feed one token per sequence (n rows in one native
step: what the engine's scheduler sends when n requests decode). Reported: the median aggregate tokens/s,
its multiple of one sequence's, and the ceiling a step of n rows can reach here: the prefill rate of n
tokens of one sequence (the same products with M = n rows, one attention context), measured in the same
rounds. A decode step of n rows cannot beat that prefill (it does the same matrix work plus n separate
attention reads), so ``n-row decode / n-token prefill`` is how close batching gets to what the hardware
allows, and ``prefill(n) / decode(1)`` bounds the multiple any engine could reach on this machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROMPT = 32


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="GGUF file (default: the default model)")
    ap.add_argument("--batch", default="1,4,16", help="batch sizes (default 1,4,16)")
    ap.add_argument("--steps", type=int, default=32, help="decode steps timed per round (default 32)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO / "engine"))
    import numpy as np

    from cpullm.model.default_model import default_model_path
    from cpullm.model.model_file import ModelFile
    from cpullm.native.runner import NativeModel, SeqChunk

    batches = [int(b) for b in args.batch.split(",")]
    n_max = max(batches)
    per_seq = -(-(PROMPT + args.steps + n_max) // 16)  # blocks of 16 a sequence may need
    mf = ModelFile.open(args.model or default_model_path())
    model = NativeModel(mf, threads=args.threads, context=PROMPT + args.steps + n_max)
    cache = model.new_cache(per_seq * (n_max + 1), 16)
    tables = [list(range(i * per_seq, (i + 1) * per_seq)) for i in range(n_max + 1)]
    rng = np.random.default_rng(0)
    vocab = model.config.vocab_size
    prompts = [[int(t) for t in rng.integers(0, vocab, PROMPT)] for _ in range(n_max + 1)]
    decode: dict[int, list[float]] = {n: [] for n in batches}
    prefill: dict[int, list[float]] = {n: [] for n in batches}

    def run_decode(n: int) -> float:
        model.step(cache, [SeqChunk(prompts[i], 0, tables[i], 1) for i in range(n)])
        toks = [int(t) for t in rng.integers(0, vocab, n)]
        start = time.perf_counter()
        for s in range(args.steps):
            model.step(cache, [SeqChunk([toks[i]], PROMPT + s, tables[i], 1) for i in range(n)])
        return n * args.steps / (time.perf_counter() - start)

    def run_prefill(n: int) -> float:  # n new tokens of one sequence after its prompt: M = n rows
        seq = n_max  # its own blocks
        model.step(cache, [SeqChunk(prompts[seq], 0, tables[seq], 1)])
        toks = [int(t) for t in rng.integers(0, vocab, n)]
        reps = max(1, args.steps // 4)
        start = time.perf_counter()
        for _ in range(reps):
            model.step(cache, [SeqChunk(toks, PROMPT, tables[seq], 1)])
        return n * reps / (time.perf_counter() - start)

    for n in batches:  # warm-up
        run_decode(n)
        run_prefill(n)
    for r in range(args.rounds):
        for n in batches:
            decode[n].append(run_decode(n))
            prefill[n].append(run_prefill(n))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    one = statistics.median(decode[batches[0]]) if batches[0] == 1 else None
    rows = []
    print(f"{mf.gguf.path.name}, {args.threads} threads, median of {args.rounds} interleaved rounds\n")
    print(
        "| sequences n | decode tok/s | × one sequence | prefill of n tokens, tok/s | decode / prefill(n) |"
    )
    print("| ---: | ---: | ---: | ---: | ---: |")
    for n in batches:
        d, p = statistics.median(decode[n]), statistics.median(prefill[n])
        times = d / one if one else float("nan")
        rows.append({"n": n, "decode": d, "prefill": p, "x_one": times, "decode_over_prefill": d / p})
        print(f"| {n} | {d:.1f} | {times:.2f}× | {p:.1f} | {d / p:.2f} |")
    if one:
        print(f"\nceiling of the multiple at n = {n_max} on this machine: prefill({n_max}) / decode(1) = "
              f"{statistics.median(prefill[n_max]) / one:.2f}×")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"model": str(mf.gguf.path), "threads": args.threads, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
