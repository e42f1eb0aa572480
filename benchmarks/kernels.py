"""Kernel benchmark: GB/s and GFLOP/s per kernel per variant at SmolLM2-135M shapes, plus DRAM read
bandwidth measured in the same run.

    .venv/bin/python benchmarks/kernels.py [--threads 1,2] [--variants avx512_vnni,generic] [--quick]
    .venv/bin/python benchmarks/kernels.py --types Q8_0,Q4_K --cold-only --rounds 5   # the done-when cells

Decode (matvec, m = 1) is timed twice: "hot" (one matrix, as cached as it gets) and "cold" (copies of the
matrix laid end to end, >= 256 MiB in all, cycled so every call streams its weights from DRAM). Prefill
is m = 512 activation rows. Times are medians of native timing loops (no ctypes cost per call);
GB/s counts weight bytes read, GFLOP/s counts 2·rows·cols·m. The machine's other load makes single
numbers noisy: every configuration is timed in rounds interleaved with the others and the median kept.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "engine"))
sys.path.insert(0, str(REPO / "tests"))

from cpullm.native import loader  # noqa: E402
from cpullm.testing.kernels import BEST, DType, Kernels, block, row_bytes  # noqa: E402
from support.native_build import build_native  # noqa: E402

# (rows, cols): attention q/o, ffn down, ffn gate/up, output/embedding of SmolLM2-135M.
DECODE_SHAPES = [(576, 576), (576, 1536), (1536, 576), (49152, 576)]
PREFILL_M = 512
COLD_BYTES = 256 << 20
STREAM_BYTES = 1 << 30


@dataclass
class Row:
    kernel: str
    dtype: str
    shape: str
    variant: str
    threads: int
    gbs: float
    gflops: float
    stream_gbs: float = 0.0  # cold decode: a plain read of the same bytes, timed in the same rounds


def _weights(dtype: DType, rows: int, cols: int, copies: int, rng: np.random.Generator) -> np.ndarray:
    # Random bytes with tame f16 scales: speed does not depend on the values.
    per_row = row_bytes(dtype, cols)
    raw = rng.integers(0, 256, size=rows * per_row, dtype=np.uint8).reshape(rows, per_row)
    if dtype in (DType.Q4_0, DType.Q4_1, DType.Q5_0, DType.Q5_1, DType.Q8_0, DType.IQ4_NL):
        blocks = raw.reshape(-1, block(dtype)[1])
        blocks[:, 0:2] = np.array([0.01], np.float16).view(np.uint8)
        if dtype in (DType.Q4_1, DType.Q5_1):
            blocks[:, 2:4] = np.array([-0.05], np.float16).view(np.uint8)
    return np.tile(raw.ravel(), copies)


def _time_rounds(k: Kernels, dtype: DType, w: np.ndarray, rows: int, cols: int, copies: int, m: int,
                 reps: int, rounds: int, reader: Kernels | None) -> tuple[float, float]:  # fmt: skip
    """(median seconds per call, median seconds per plain read of all of w or 0); rounds interleave both."""
    calls, reads = [], []
    for _ in range(rounds):
        calls.append(np.median(k.bench_matmul(dtype, w, rows, cols, copies, m, reps + 1, BEST)[1:]))
        if reader is not None:
            reads.append(np.median(reader.bench_stream_read(w, 3)))
    return float(np.median(calls)), float(np.median(reads)) if reads else 0.0


def _stream(k: Kernels, buf: np.ndarray, rounds: int) -> float:
    """Best-of-rounds median read bandwidth, GB/s (the machine's capability, not its noise)."""
    return max(float(buf.nbytes / np.median(k.bench_stream_read(buf, 5))) for _ in range(rounds)) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2", help="thread counts, comma separated")
    ap.add_argument("--variants", default="", help="variants to run (default: every one this host can run)")
    ap.add_argument("--types", default="", help="weight types to run, e.g. Q8_0,Q4_K (default: all)")
    ap.add_argument("--cold-only", action="store_true", help="only the cold decode cells (done-when)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per cell (median kept)")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (for a smoke test)")
    ap.add_argument("--markdown", type=Path, help="also write the tables as markdown to this file")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    lib_dir = build_native("x86_64")
    sel = loader.select(lib_dir)
    runnable = sorted((n for n, s in sel.candidates.items() if s > 0), key=lambda n: sel.candidates[n])
    # Least capable first, whatever order --variants gave: the last is the best, `generic` the baseline.
    variants = sorted([v for v in args.variants.split(",") if v] or runnable, key=lambda v: sel.candidates[v])
    kern = {v: Kernels(loader.load_variant(loader.select(lib_dir, forced=v))) for v in variants}
    rounds = 1 if args.quick else args.rounds
    types = {t.upper() for t in args.types.split(",") if t}
    unknown = types - {t.name for t in kern[variants[-1]].tensor_types}
    if unknown:
        ap.error(f"unknown weight type(s): {', '.join(sorted(unknown))}")
    rng = np.random.default_rng(0)
    rows_out: list[Row] = []
    lines: list[str] = []

    def emit(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    best = variants[-1]
    buf = np.ones(STREAM_BYTES // 8, dtype=np.float64)
    dram = {t: 0.0 for t in threads}
    emit(f"host: {sel.host.arch}, variants {', '.join(variants)}; best here: {best} "
         f"(fast path {kern[best].best_kernel_set})")  # fmt: skip

    def measure(kernel: str, dtype: DType, rows: int, cols: int, m: int, cold: bool) -> None:
        if (types and dtype.name not in types) or (args.cold_only and not cold):
            return
        nbytes = rows * row_bytes(dtype, cols)
        copies = max(1, COLD_BYTES // nbytes) if cold else 1
        w = _weights(dtype, rows, cols, copies, rng)
        for t in threads:
            for v in variants:
                if v == "generic" and m > 1 and rows * cols > 1_000_000:
                    continue  # the scalar reference would take minutes here
                kern[v].set_num_threads(t)
                reps = 3 if v == "generic" else (10 if m > 1 else 30)
                if args.quick:
                    reps = max(2, reps // 5)
                if cold:
                    kern[best].set_num_threads(t)
                sec, read = _time_rounds(kern[v], dtype, w, rows, cols, copies, m, reps, rounds,
                                         kern[best] if cold else None)  # fmt: skip
                # Back to one thread: an idle pool's workers would otherwise spin beside the next measurement.
                kern[v].set_num_threads(1)
                kern[best].set_num_threads(1)
                stream = w.nbytes / read / 1e9 if read else 0.0
                rows_out.append(Row(kernel, dtype.name, f"{rows}x{cols}" + (f" m={m}" if m > 1 else ""), v, t,
                                    nbytes / sec / 1e9, 2 * rows * cols * m / sec / 1e9, stream))  # fmt: skip
        del w

    for t in threads:
        kern[best].set_num_threads(t)
        dram[t] = _stream(kern[best], buf, rounds)
    del buf
    kern[best].set_num_threads(1)
    for dtype in (DType.Q4_1, DType.Q8_0):
        for rows, cols in DECODE_SHAPES:
            measure("matvec hot", dtype, rows, cols, 1, cold=False)
            measure("matvec cold", dtype, rows, cols, 1, cold=True)
    # Other formats at one shape (K-quants need cols % 256 == 0: 576 is not).
    for dtype, (rows, cols) in [
        (DType.Q4_0, (1536, 576)),
        (DType.Q5_0, (1536, 576)),
        (DType.Q5_1, (1536, 576)),
        (DType.IQ4_NL, (1536, 576)),
        (DType.Q2_K, (576, 1536)),
        (DType.Q3_K, (576, 1536)),
        (DType.Q4_K, (576, 1536)),
        (DType.Q5_K, (576, 1536)),
        (DType.IQ4_XS, (576, 1536)),
        (DType.Q6_K, (576, 1536)),
        (DType.F16, (1536, 576)),
    ]:
        measure("matvec cold", dtype, rows, cols, 1, cold=True)
    for dtype in (DType.Q4_1, DType.Q8_0):
        for rows, cols in DECODE_SHAPES:
            measure("matmul prefill", dtype, rows, cols, PREFILL_M, cold=False)

    emit("")
    emit("DRAM read bandwidth (native streaming read of 1 GiB, best of the rounds): "
         + ", ".join(f"{dram[t]:.1f} GB/s at {t} thread(s)" for t in threads))  # fmt: skip
    emit("")
    header = ["kernel", "type", "shape (rows x cols)", "variant", "threads", "GB/s", "GFLOP/s"]
    emit("| " + " | ".join([*header, "plain read of the same bytes, GB/s"]) + " |")
    emit("| --- | --- | --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows_out:
        cells = [r.kernel, r.dtype, r.shape, r.variant, str(r.threads), f"{r.gbs:.1f}", f"{r.gflops:.1f}"]
        cells.append(f"{r.stream_gbs:.1f}" if r.stream_gbs else "")
        emit("| " + " | ".join(cells) + " |")
    emit("")
    emit("Done-when check (cold decode, best variant): weight streaming rate vs a plain read of the same")
    emit("bytes timed in the same rounds (and vs the 1 GiB read above), and vs the generic variant:")
    for r in rows_out:
        if r.kernel != "matvec cold" or r.variant != best:
            continue
        gen = next((g for g in rows_out if g.variant == "generic" and (g.kernel, g.dtype, g.shape, g.threads)
                    == (r.kernel, r.dtype, r.shape, r.threads)), None)  # fmt: skip
        speedup = f"{r.gbs / gen.gbs:.1f}x generic" if gen else "generic not run"
        emit(f"- {r.dtype} {r.shape}, {r.threads} thread(s): {r.gbs:.1f} GB/s = "
             f"{100 * r.gbs / r.stream_gbs:.0f}% of the plain read ({r.stream_gbs:.1f} GB/s), "
             f"{100 * r.gbs / dram[r.threads]:.0f}% of the 1 GiB read; {speedup}")  # fmt: skip
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
