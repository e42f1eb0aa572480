"""`cpullm bench [MODEL] -p 512 -n 128 -t 1,2 -r 5`: prefill and decode tokens/s, like llama-bench.

For each thread count: one warm-up of each test (discarded), then ``-r`` repetitions of ppP (one step of
P prompt tokens into an empty cache) and tgN (N single-token steps after a short prompt); the table shows
the median tokens/s and the spread. The native model is driven directly (see :mod:`cpullm.runtime.bench`), so
this measures the engine, not the scheduler or sampler. ``-p 0`` or ``-n 0`` skips that test.

``--json`` schema, version 1 (fields may be added, never renamed or removed):
``schema_version``, ``cpullm_version``, ``model`` (path), ``model_bytes``, ``architecture``,
``n_params``, ``variant``, ``load_s``, ``repetitions``, ``peak_rss_bytes``, ``pinned``, ``kv_cache_dtype``,
and ``results``:
one object per (threads, test) with ``threads``, ``test`` ("pp512"/"tg128"), ``n_tokens`` and
``tokens_per_second`` = {median, mean, stddev, min, max, samples}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from cpullm import __version__
from cpullm.cli.common import (
    add_model_argument,
    model_path,
    pin_native_pool,
    plural,
    positive_int,
    user_errors_exit_1,
    variant_name,
)
from cpullm.runtime.kv_dtypes import DEFAULT_KV_DTYPE, KV_DTYPES

HELP = "measure prefill and decode tokens/s (like llama-bench)"
SCHEMA_VERSION = 1


def _thread_list(text: str) -> list[int]:
    try:
        values = [positive_int(part) for part in text.split(",") if part.strip()]
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"thread counts: {error}") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one thread count, e.g. 1,2")
    return values


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (skip) or more, not {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument("-p", "--n-prompt", type=_count, default=512, help="prefill test tokens (0: skip)")
    parser.add_argument("-n", "--n-gen", type=_count, default=128, help="decode test tokens (0: skip)")
    parser.add_argument(
        "-d",
        "--depth",
        type=_count,
        default=0,
        help="tokens already in the context before each test (default 0)",
    )
    parser.add_argument(
        "-t",
        "--threads",
        type=_thread_list,
        default=None,
        metavar="N[,N...]",
        help="thread counts to test (default: the usable cores)",
    )
    parser.add_argument("-r", "--repetitions", type=positive_int, default=5, help="repetitions (default 5)")
    parser.add_argument("--pin", action="store_true", help="pin the kernel threads to distinct CPUs")
    parser.add_argument(
        "--kv-cache-dtype",
        choices=tuple(KV_DTYPES),
        default=DEFAULT_KV_DTYPE,
        help=f"KV cache element type (default {DEFAULT_KV_DTYPE})",
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from cpullm.model.model_file import ModelFile
    from cpullm.native.runner import NativeModel
    from cpullm.native.threads import default_threads
    from cpullm.runtime.bench import DECODE_PROMPT_TOKENS, ModelBench, peak_rss_bytes, summarize

    path = model_path(args.model)
    depth = args.depth
    n_ctx = depth + max(args.n_prompt, args.n_gen + (0 if depth else DECODE_PROMPT_TOKENS))
    start = time.perf_counter()
    model = NativeModel(
        ModelFile.open(path, args.quantization),
        threads=max(args.threads or [default_threads()]),
        context=n_ctx,
    )
    load_s = time.perf_counter() - start
    if n_ctx > model.config.context_length:
        raise ValueError(
            f"the tests need {n_ctx} positions, but this model's context is {model.config.context_length} "
            "tokens; lower -p, -n or -d"
        )
    bench = ModelBench(model, n_ctx, depth, kv_dtype=args.kv_cache_dtype)
    at = f" @ d{depth}" if depth else ""
    tests = [(f"pp{args.n_prompt}{at}", args.n_prompt, bench.prefill)] if args.n_prompt else []
    tests += [(f"tg{args.n_gen}{at}", args.n_gen, bench.decode)] if args.n_gen else []
    results = []
    for threads in args.threads or [default_threads()]:
        model.set_threads(threads)
        if args.pin:
            pin_native_pool(model, threads)
        for _, n, run in tests:
            run(n)  # warm-up: page in the weights, start the pool, fill the caches
        samples: dict[str, list[float]] = {name: [] for name, _, _ in tests}
        for _ in range(args.repetitions):
            for name, n, run in tests:
                samples[name].append(n / run(n))
        for name, n, _ in tests:
            results.append(
                {
                    "threads": threads,
                    "test": name,
                    "n_tokens": n,
                    "depth": depth,
                    "tokens_per_second": summarize(samples[name]),
                }
            )
    file = model.file
    return {
        "schema_version": SCHEMA_VERSION,
        "cpullm_version": __version__,
        "model": str(file.gguf.path),
        # a folder: the weights as loaded (quantized); a GGUF: the file
        "model_bytes": sum(t.n_bytes for t in file.gguf.tensors.values())
        if file.folder
        else file.gguf.path.stat().st_size,
        "architecture": file.gguf.architecture,
        "n_params": sum(t.n_elements for t in file.gguf.tensors.values()),
        "variant": variant_name(),
        "load_s": round(load_s, 4),
        "repetitions": args.repetitions,
        "pinned": bool(args.pin),
        "kv_cache_dtype": args.kv_cache_dtype,
        "peak_rss_bytes": peak_rss_bytes(),
        "results": results,
    }


def render(report: dict[str, Any]) -> str:
    """The llama-bench-like table of a ``measure`` report."""
    mib = report["model_bytes"] / (1 << 20)
    width = max([6] + [len(r["test"]) for r in report["results"]])
    lines = [
        f"model: {report['model']} ({report['architecture']}, {report['n_params'] / 1e6:.1f} M params, "
        f"{mib:.1f} MiB); variant {report['variant']}; cpullm {report['cpullm_version']}",
        "",
        f"| threads | {'test':<{width}} |        t/s |   ± stddev |        min .. max        |",
        f"| ------: | :{'-' * (width - 1)} | ---------: | ---------: | :----------------------: |",
    ]
    for r in report["results"]:
        s = r["tokens_per_second"]
        lines.append(
            f"| {r['threads']:>7} | {r['test']:<{width}} | {s['median']:>10.2f} | {s['stddev']:>10.2f} "
            f"| {s['min']:>10.1f} .. {s['max']:<10.1f} |"
        )
    lines.append("")
    lines.append(
        f"median of {plural(report['repetitions'], 'repetition')} after a warm-up; "
        f"KV cache {report['kv_cache_dtype']}; "
        f"load {report['load_s']:.2f} s; peak RSS {report['peak_rss_bytes'] / (1 << 20):.1f} MiB"
        + ("; threads pinned" if report["pinned"] else "")
    )
    return "\n".join(lines)


@user_errors_exit_1
def run(args: argparse.Namespace) -> int:
    if not args.n_prompt and not args.n_gen:
        raise ValueError("both tests are skipped (-p 0 -n 0); nothing to measure")
    report = measure(args)
    print(json.dumps(report, indent=2) if args.json else render(report))
    sys.stdout.flush()
    return 0


COMMAND = ("bench", HELP, add_arguments, run)
