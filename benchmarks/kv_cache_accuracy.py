"""How much the KV cache's element type changes the model's predictions (``--kv-cache-dtype``).

    python benchmarks/kv_cache_accuracy.py [--model M.gguf] [--tokens 2048]

Teacher-forced over the repository's README (English and code, so no download): the text is run through
the native model in 256-token chunks, once per KV cache type, keeping every position's next-token
log-probabilities. Against the f32 cache it reports each type's perplexity on the text, the mean and largest
KL(f32 || type) per position, and how often the top-1 token is the same. The weights and everything else
are the same in every run: only the cache's rounding differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cpullm.native.runner import NativeModel

REPO = Path(__file__).resolve().parents[1]
CHUNK = 256
BLOCK = 16


def log_probs(model: NativeModel, ids: list[int], kv_dtype: str) -> np.ndarray:  # -> [n, vocab] float64
    from cpullm.native.runner import SeqChunk

    n_blocks = -(-len(ids) // BLOCK)
    table = list(range(n_blocks))
    cache = model.new_cache(n_blocks, BLOCK, kv_dtype)
    out = []
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        logits = model.step(cache, [SeqChunk(chunk, start, table, len(chunk))]).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        logits -= np.log(np.exp(logits).sum(axis=1, keepdims=True))
        out.append(logits)
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="GGUF file (default: the default model)")
    ap.add_argument("--tokens", type=int, default=2048, help="positions to score (default 2048)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO / "engine"))
    from cpullm.model.default_model import default_model_path
    from cpullm.model.model_file import ModelFile
    from cpullm.native.runner import NativeModel
    from cpullm.runtime.kv_dtypes import KV_DTYPES

    mf = ModelFile.open(args.model or default_model_path())
    model = NativeModel(mf, context=args.tokens)
    ids = mf.tokenizer().encode((REPO / "README.md").read_text(), add_special=False)[: args.tokens]
    n = len(ids)
    target = np.asarray(ids[1:])

    def perplexity(lp: np.ndarray) -> float:
        return float(np.exp(-lp[np.arange(n - 1), target].mean()))

    base = log_probs(model, ids, "f32")
    print(f"{mf.gguf.path.name}: {n} tokens of README.md, teacher-forced in {CHUNK}-token chunks\n")
    print("| KV cache | bytes / value | perplexity | mean KL(f32 ‖ it) | max KL | top-1 same as f32 |")
    print("| :------- | ------------: | ---------: | ----------------: | -----: | ----------------: |")
    for name, kind in sorted(KV_DTYPES.items(), key=lambda kv: -kv[1].bytes_per_value):
        lp = base if name == "f32" else log_probs(model, ids, name)
        kl = (np.exp(base) * (base - lp)).sum(axis=1)
        same = float((lp.argmax(axis=1) == base.argmax(axis=1)).mean())
        cells = [name, f"{kind.bytes_per_value:.4g}", f"{perplexity(lp):.4f}", f"{kl.mean():.2e}"]
        cells += [f"{kl.max():.2e}", f"{same * 100:.2f} %"]
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
