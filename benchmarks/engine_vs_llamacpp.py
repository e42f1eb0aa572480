"""cpullm against llama.cpp (llama-cpp-python) on the same GGUF, same threads, interleaved in one run.

    .venv/bin/python benchmarks/engine_vs_llamacpp.py [--model M.gguf] [--threads 1,2] [--reps 7]
        [--random-1b Q4_0,Q4_K_M]

``--random-1b MIXES`` adds, after the model, a random-weight ~1.1B Llama (TinyLlama's shape: hidden 2048,
22 layers, FFN 5632, GQA 32/4; see ``random_llama.py``) quantized by llama.cpp to each mix, written once
under build/random-llama: the same comparison at a realistic size.

Each engine runs in its own worker subprocess (so each one's peak RSS is its own): cpullm with this
Python and the source tree's engine (native libraries from ``--lib-dir``, default: built now into
build/test-<arch>), llama.cpp with ``--llama-python`` (default ``.bench-venv/bin/python``, made by
``make bench``). For each thread count both workers load the model, run one warm-up of each test, then
alternate per repetition (cpullm first on even repetitions, llama.cpp first on odd ones):

- ppN: N prompt tokens in one call into an empty KV cache (llama.cpp: ``llm.reset(); llm.eval(tokens)``;
  cpullm: one ``NativeModel.step``), logits of the last position only;
- tgN: N single-token calls after an untimed 8-token prompt (``llm.eval([tok])`` / one-token steps).

Both engines see the same pseudo-random token ids. llama.cpp runs with flash attention, n_ctx 1024,
n_batch 512. The report (Markdown on stdout, optionally JSON) gives medians, min..max, the ratio of
the medians cpullm/llama.cpp against the issue's targets, the median of the per-repetition ratios
(both engines ran back to back, under the same load), and each engine's peak RSS.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DECODE_PROMPT_TOKENS = 8
N_CTX = 1024
ENGINES = ("cpullm", "llama.cpp")
# issue 5's targets: minimum ratio cpullm/llama.cpp per (threads, test kind)
TARGETS = {(2, "pp"): 1.5, (2, "tg"): 1.5, (1, "pp"): 1.2, (1, "tg"): 1.2}


# ---------------------------------------------------------------- workers (run in subprocesses)
def _peak_rss() -> int:
    # VmHWM is this process's own high-water mark. ru_maxrss is not: after fork + exec it starts from
    # the parent's RSS at the fork (this orchestrator, ~40 MiB), which hid a tiny model's own peak.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _reply(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


class _CpullmWorker:
    def __init__(self, model: str, threads: int, tokens: list[int], depth: int) -> None:
        sys.path.insert(0, str(REPO / "engine"))
        from cpullm.model.model_file import ModelFile
        from cpullm.native import loader
        from cpullm.native.runner import NativeModel
        from cpullm.runtime.bench import ModelBench

        self.model = NativeModel(ModelFile.open(model))
        self.model.set_threads(threads)
        self.bench = ModelBench(self.model, len(tokens), depth, tokens)
        self.about = {"variant": loader.native()[1].variant.name}

    def pp(self, n: int) -> float:
        return self.bench.prefill(n)

    def tg(self, n: int) -> float:
        return self.bench.decode(n)


class _LlamaWorker:
    def __init__(self, model: str, threads: int, tokens: list[int], depth: int) -> None:
        import llama_cpp

        self.llm = llama_cpp.Llama(
            model_path=model,
            n_threads=threads,
            n_threads_batch=threads,
            flash_attn=True,
            n_ctx=len(tokens),
            n_batch=512,
            verbose=False,
        )
        self.tokens = tokens
        self.depth = depth
        if depth:  # the shared context, once; eval() drops the cache past n_tokens before each test
            self.llm.eval(tokens[:depth])
        system = llama_cpp.llama_print_system_info().decode().strip(" |")
        self.about = {"llama_cpp_python": llama_cpp.__version__, "llama_cpp_system": system}

    def pp(self, n: int) -> float:
        d = self.depth
        self.llm.n_tokens = d
        start = time.perf_counter()
        self.llm.eval(self.tokens[d : d + n])
        return time.perf_counter() - start

    def tg(self, n: int) -> float:
        p = self.depth
        self.llm.n_tokens = p
        if p == 0:
            p = DECODE_PROMPT_TOKENS
            self.llm.eval(self.tokens[:p])
        start = time.perf_counter()
        for tok in self.tokens[p : p + n]:
            self.llm.eval([tok])
        return time.perf_counter() - start


def _import_engine(engine: str) -> float:
    """Import the engine's modules (timed apart from the model load); returns the seconds it took."""
    start = time.perf_counter()
    if engine == "cpullm":
        sys.path.insert(0, str(REPO / "engine"))
        import cpullm.model.model_file
        import cpullm.native.runner
        import cpullm.runtime.bench  # noqa: F401
    else:
        import llama_cpp  # noqa: F401
    return time.perf_counter() - start


def worker_main(engine: str, model: str, threads: int) -> int:
    """Serve `pp N` / `tg N` / `done` lines on stdin with one JSON line each on stdout."""
    setup = json.loads(sys.stdin.readline())
    tokens, depth = setup["tokens"], setup["depth"]
    import_s = _import_engine(engine)
    rss_before = _peak_rss()
    start = time.perf_counter()
    worker = (_CpullmWorker if engine == "cpullm" else _LlamaWorker)(model, threads, tokens, depth)
    load_s = time.perf_counter() - start
    _reply(ready=True, load_s=load_s, import_s=import_s, rss_before_load=rss_before, **worker.about)
    for line in sys.stdin:
        test, _, n = line.strip().partition(" ")
        if test == "done":
            break
        _reply(seconds=getattr(worker, test)(int(n)))
    _reply(peak_rss_bytes=_peak_rss())
    return 0


# ---------------------------------------------------------------- the orchestrator
class Worker:
    """One engine at one thread count, in its own process."""

    def __init__(
        self, engine: str, python: str, model: Path, threads: int, tokens: list[int], depth: int, env: dict
    ) -> None:
        cmd = [python, __file__, "--worker", engine, "--model", str(model), "--threads", str(threads)]
        self.engine = engine
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self._send(json.dumps({"tokens": tokens, "depth": depth}))
        self.ready = self._receive()

    def _send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def _receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise RuntimeError(
                f"the {self.engine} worker stopped (exit {self.proc.returncode}):\n{self.proc.stderr.read()}"
            )
        return json.loads(line)

    def run(self, test: str, n: int) -> float:
        self._send(f"{test} {n}")
        return float(self._receive()["seconds"])

    def finish(self) -> int:
        self._send("done")
        peak = int(self._receive()["peak_rss_bytes"])
        self.proc.wait(timeout=60)
        return peak


def _tokens(n: int, vocab_size: int) -> list[int]:
    import numpy as np

    return [int(t) for t in np.random.default_rng(0).integers(0, vocab_size, size=n)]


def _machine() -> str:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    return f"{model}, {len(os.sched_getaffinity(0))} usable CPUs, {platform.system()} {platform.release()}"


def _commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--", "csrc", "engine", "CMakeLists.txt")
    return git("rev-parse", "--short=12", "HEAD") + (" + uncommitted changes in csrc/engine" if dirty else "")


def measure(args: argparse.Namespace, model: Path, env: dict[str, str]) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "engine"))
    from cpullm.model.model_file import ModelFile

    load_before = os.getloadavg()[0]  # the machine is shared: the report says how busy it was
    commit = _commit()  # now: the tree may move on while this runs
    vocab = ModelFile.open(model).config.vocab_size
    tokens = _tokens(N_CTX + args.depth, vocab)
    tests = [("pp", args.n_prompt), ("tg", args.n_gen)]
    pythons = {"cpullm": sys.executable, "llama.cpp": args.llama_python}
    samples: dict[tuple[str, int, str], list[float]] = {}
    about: dict[str, dict[str, Any]] = {}
    peak: dict[tuple[str, int], int] = {}
    for threads in args.threads:
        workers = {e: Worker(e, pythons[e], model, threads, tokens, args.depth, env) for e in ENGINES}
        for engine, w in workers.items():
            about.setdefault(engine, {}).update(w.ready)
            for test, n in tests:
                w.run(test, n)  # warm-up, discarded
        for rep in range(args.reps):
            order = ENGINES if rep % 2 == 0 else ENGINES[::-1]
            for engine in order:
                for test, n in tests:
                    seconds = workers[engine].run(test, n)
                    samples.setdefault((engine, threads, test), []).append(n / seconds)
            print(f"threads {threads}: {rep + 1}/{args.reps} done", file=sys.stderr)
        for engine, w in workers.items():
            peak[(engine, threads)] = w.finish()
    # Load time: the model load alone (imports timed apart) in fresh processes, alternating engines.
    loads = {e: [float(about[e]["load_s"])] for e in ENGINES}
    for rep in range(args.load_reps):
        for engine in ENGINES[::-1] if rep % 2 == 0 else ENGINES:
            w = Worker(engine, pythons[engine], model, max(args.threads), tokens, args.depth, env)
            loads[engine].append(float(w.ready["load_s"]))
            w.finish()
    rows = []
    for threads in args.threads:
        for test, n in tests:
            med = {e: statistics.median(samples[(e, threads, test)]) for e in ENGINES}
            rows.append(
                {
                    "threads": threads,
                    "test": f"{test}{n}" + (f" @ d{args.depth}" if args.depth else ""),
                    "tokens_per_second": {
                        e: {"median": med[e], "min": min(s), "max": max(s), "samples": s}
                        for e in ENGINES
                        for s in [samples[(e, threads, test)]]
                    },
                    "ratio": med["cpullm"] / med["llama.cpp"],
                    # each repetition ran both engines back to back, under the same machine load
                    "paired_ratio": statistics.median(
                        a / b
                        for a, b in zip(
                            samples[("cpullm", threads, test)],
                            samples[("llama.cpp", threads, test)],
                            strict=True,
                        )
                    ),
                    "target": None if args.depth else TARGETS.get((threads, test)),
                }
            )
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": _machine(),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # 1-min, before/after
        "commit": commit,
        "cpullm_lib_dir": env["CPULLM_LIB_DIR"],
        "cpullm_built_here": args.built_here,  # False: --lib-dir given, built apart from `commit`
        "model": str(model),
        "model_bytes": model.stat().st_size,
        "repetitions": args.reps,
        "depth": args.depth,
        "cpullm_variant": about["cpullm"].get("variant"),
        "llama_cpp_python": about["llama.cpp"].get("llama_cpp_python"),
        "llama_cpp_system": about["llama.cpp"].get("llama_cpp_system"),
        "load_s": {e: statistics.median(loads[e]) for e in ENGINES},  # model load, imports excluded
        "load_samples_s": loads,
        "import_s": {e: about[e]["import_s"] for e in ENGINES},
        "rows": rows,
        "peak_rss_bytes": {e: max(peak[(e, t)] for t in args.threads) for e in ENGINES},
        "rss_before_load_bytes": {e: about[e]["rss_before_load"] for e in ENGINES},
    }


def markdown(r: dict[str, Any]) -> str:
    mib = 1 << 20
    lines = [
        f"{r['date']}; {r['machine']}; commit {r['commit']}; "
        f"1-min load average {r['load_average'][0]} before, {r['load_average'][1]} after",
        f"model {Path(r['model']).name} ({r['model_bytes'] / 1e6:.1f} MB); "
        f"cpullm variant {r['cpullm_variant']} from {r['cpullm_lib_dir']}"
        f"{' (built from this tree now)' if r['cpullm_built_here'] else ' (given, built separately)'}; "
        f"llama-cpp-python {r['llama_cpp_python']} (flash attention); median of {r['repetitions']} "
        "interleaved repetitions after a warm-up, tokens/s (min .. max); ratio of the medians, and "
        "the median of the per-repetition ratios (paired)",
        f"llama.cpp build: {r['llama_cpp_system']}",
        "",
        "| threads | test | cpullm | llama.cpp | cpullm / llama.cpp | paired | target |",
        "| ------: | :--- | -----: | --------: | -----------------: | -----: | :----- |",
    ]
    for row in r["rows"]:
        c, g = row["tokens_per_second"]["cpullm"], row["tokens_per_second"]["llama.cpp"]
        target = row["target"]
        verdict = "" if target is None else f"≥ {target}× {'met' if row['ratio'] >= target else 'missed'}"
        lines.append(
            f"| {row['threads']} | {row['test']} | {c['median']:.1f} ({c['min']:.0f} .. {c['max']:.0f}) "
            f"| {g['median']:.1f} ({g['min']:.0f} .. {g['max']:.0f}) | {row['ratio']:.2f}× "
            f"| {row['paired_ratio']:.2f}× | {verdict} |"
        )
    rss, base = r["peak_rss_bytes"], r["rss_before_load_bytes"]
    met = "met" if rss["cpullm"] <= rss["llama.cpp"] else "missed"
    of_file = {e: (rss[e] - base[e]) / r["model_bytes"] for e in ENGINES}
    lines += [
        "",
        f"peak RSS: cpullm {rss['cpullm'] / mib:.1f} MiB, llama.cpp {rss['llama.cpp'] / mib:.1f} MiB "
        f"(target cpullm ≤ llama.cpp: {met}); before loading the model (Python + imports): "
        f"cpullm {base['cpullm'] / mib:.1f} MiB, llama.cpp {base['llama.cpp'] / mib:.1f} MiB; the growth "
        f"from loading and running is {of_file['cpullm']:.2f}× the file for cpullm, "
        f"{of_file['llama.cpp']:.2f}× for llama.cpp. "
        f"Load (the model alone, median of {len(r['load_samples_s']['cpullm'])} fresh processes; imports "
        f"{r['import_s']['cpullm']:.2f} s / {r['import_s']['llama.cpp']:.2f} s apart): "
        f"cpullm {r['load_s']['cpullm']:.2f} s, llama.cpp {r['load_s']['llama.cpp']:.2f} s.",
    ]
    return "\n".join(lines)


def _thread_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("thread counts are positive integers, e.g. 1,2")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="GGUF file (default: SmolLM2-135M Q4_1)")
    parser.add_argument("--threads", type=_thread_list, default=[1, 2], help="thread counts (default 1,2)")
    parser.add_argument("--reps", type=int, default=7, help="repetitions per engine (default 7, at least 5)")
    parser.add_argument("-p", "--n-prompt", type=int, default=512)
    parser.add_argument("-n", "--n-gen", type=int, default=128)
    parser.add_argument("-d", "--depth", type=int, default=0, help="tokens of context before each test")
    parser.add_argument("--llama-python", default=str(REPO / ".bench-venv" / "bin" / "python"))
    parser.add_argument("--lib-dir", type=Path, default=None, help="cpullm native libraries (default: build)")
    parser.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    parser.add_argument(
        "--load-reps", type=int, default=4, help="extra fresh-process loads per engine to time (default 4)"
    )
    parser.add_argument(
        "--random-1b",
        default="",
        metavar="MIXES",
        help="also a random-weight 1.1B Llama quantized by llama.cpp to these mixes, e.g. Q4_0,Q4_K_M",
    )
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args.worker, str(args.model), args.threads[0])
    if args.reps < 5:
        parser.error("--reps must be at least 5 (the medians need them)")
    if not 0 < args.n_prompt <= N_CTX or not 0 < args.n_gen <= N_CTX - DECODE_PROMPT_TOKENS:
        parser.error(f"-p and -n must be between 1 and the context of {N_CTX} tokens")
    if args.depth < 0:
        parser.error("-d must be 0 or more")
    if not Path(args.llama_python).is_file():
        parser.error(f"{args.llama_python} not found: run `make bench`, or pass --llama-python")
    env = dict(os.environ)
    args.built_here = args.lib_dir is None
    if args.lib_dir is None:
        sys.path.insert(0, str(REPO / "tests"))
        from support.native_build import build_native

        args.lib_dir = build_native()
    env["CPULLM_LIB_DIR"] = str(args.lib_dir)
    os.environ["CPULLM_LIB_DIR"] = env["CPULLM_LIB_DIR"]
    if args.model is None:
        sys.path.insert(0, str(REPO / "engine"))
        from cpullm.model.default_model import default_model_path

        args.model = default_model_path()
    models = [args.model]
    if args.random_1b:
        from random_llama import ensure

        mixes = args.random_1b.split(",")
        models += ensure(REPO / "build" / "random-llama", mixes, args.llama_python).values()
    reports = []
    for model in models:
        reports.append(measure(args, model, env))
        print(markdown(reports[-1]) + "\n", flush=True)
    if args.json:
        args.json.write_text(json.dumps(reports if len(reports) > 1 else reports[0], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
