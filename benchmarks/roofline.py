"""The machine's limits, per thread count: DRAM read bandwidth and the int8 dot-product peak of every
variant this host runs. Kernel and engine figures are quoted as a share of these (decode against the
read bandwidth, prefill against the int8 peak).

    .venv/bin/python benchmarks/roofline.py [--threads 1,2] [--rounds 5] [--json out.json]

DRAM read: a 1 GiB buffer read with the library's own streaming loop over its thread pool (best of the
rounds' medians). int8 peak: the variant's widest int8 dot instruction in registers on every thread
(cpullm_bench_int8_peak), in GOPS = 2 × multiply-adds per second, the convention prefill figures use
(2 · parameters · tokens). Block-scaled int8 peaks: the same instruction with what a quantized product adds
around it in registers (cpullm_bench_int8_block_peak, AVX-512 VNNI only): for 32-weight blocks (Q4_0) the
block's integer correction, then per block and row a float conversion, scale and sum; for super-blocks
(Q4_K) the sub-block scale's integer multiply and the minimum's second sum. They are the ceilings the
quantized products can reach, below the plain peak by what the per-block scaling costs. f32 FMA peak:
the best variant's widest float FMA in registers (cpullm_bench_f32_peak), the ceiling of the f32/f16
products and of bf16 ones on hosts without a bf16 dot.
Take them on an idle machine: other load lowers them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "engine"))
sys.path.insert(0, str(REPO / "tests"))

from cpullm.native import loader  # noqa: E402
from cpullm.testing.kernels import Kernels  # noqa: E402
from support.native_build import build_native  # noqa: E402

STREAM_BYTES = 1 << 30
PEAK_ITERS = 2_000_000


def best_gops(bench: Callable[[int, int], tuple[np.ndarray, int] | None], rounds: int) -> float | None:
    """The best of `rounds` medians of an int8 peak loop, in GOPS; None where the variant does not run it."""
    rates = []
    for _ in range(rounds):
        result = bench(PEAK_ITERS, 3)
        if result is None:
            return None
        seconds, macs = result
        rates.append(2 * macs / float(np.median(seconds)) / 1e9)
    return round(max(rates), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2", help="thread counts, comma separated")
    ap.add_argument("--rounds", type=int, default=5, help="rounds per figure (the best median is kept)")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    lib_dir = build_native("x86_64")
    sel = loader.select(lib_dir)
    variants = sorted((n for n, s in sel.candidates.items() if s > 0), key=lambda n: sel.candidates[n])
    kern = {v: Kernels(loader.load_variant(loader.select(lib_dir, forced=v))) for v in variants}
    buf = np.ones(STREAM_BYTES // 8, dtype=np.float64)
    out: dict[str, object] = {
        "dram_read_gbs": {},
        "int8_peak_gops": {v: {} for v in variants},
        "int8_block_peak_gops": {v: {} for v in variants},
        "int8_superblock_peak_gops": {v: {} for v in variants},
        "f32_fma_peak_gflops": {},  # the best variant's: f32/f16 (and bf16 without a bf16 dot) ceiling
    }
    best = kern[variants[-1]]
    for t in threads:
        best.set_num_threads(t)
        best.bench_stream_read(buf, 1)  # page the buffer in
        gbs = (
            max(float(buf.nbytes / np.median(best.bench_stream_read(buf, 3))) for _ in range(args.rounds))
            / 1e9
        )
        out["dram_read_gbs"][t] = round(gbs, 2)  # type: ignore[index]
        for v in variants:
            k = kern[v]
            k.set_num_threads(t)
            benches: dict[str, Callable[[int, int], tuple[np.ndarray, int] | None]] = {
                "int8_peak_gops": k.bench_int8_peak,
                "int8_block_peak_gops": k.bench_int8_block_peak,
                "int8_superblock_peak_gops": lambda i, r, k=k: k.bench_int8_block_peak(
                    i, r, super_block=True
                ),
            }
            for key, bench in benches.items():
                out[key][v][t] = best_gops(bench, args.rounds)  # type: ignore[index]
        flops = []
        for _ in range(args.rounds):
            seconds, macs = best.bench_f32_peak(PEAK_ITERS, 3)
            flops.append(2 * macs / float(np.median(seconds)) / 1e9)
        out["f32_fma_peak_gflops"][t] = round(max(flops), 1)  # type: ignore[index]
    blocked = [v for v in variants if any(out["int8_block_peak_gops"][v].values())]  # type: ignore[index]
    head = " | ".join(
        [f"int8 peak GOPS ({v})" for v in variants]
        + [f"block-scaled: 32-weight blocks ({v})" for v in blocked]
        + [f"block-scaled: super-blocks ({v})" for v in blocked]
    )
    print(f"| threads | DRAM read GB/s | {head} | f32 FMA peak GFLOPS ({variants[-1]}) |")
    print("| ---: | ---: |" + " ---: |" * (len(variants) + 2 * len(blocked) + 1))
    for t in threads:
        peaks = [out["int8_peak_gops"][v][t] for v in variants]  # type: ignore[index]
        peaks += [out["int8_block_peak_gops"][v][t] for v in blocked]  # type: ignore[index]
        peaks += [out["int8_superblock_peak_gops"][v][t] for v in blocked]  # type: ignore[index]
        cells = [f"{p:.1f}" if p is not None else "—" for p in peaks]
        cells.append(f"{out['f32_fma_peak_gflops'][t]:.1f}")  # type: ignore[index]
        print(f"| {t} | {out['dram_read_gbs'][t]:.1f} | " + " | ".join(cells) + " |")  # type: ignore[index]
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
