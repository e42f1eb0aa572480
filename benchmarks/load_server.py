"""Load benchmark of `cpullm serve`: 1, 4 and 16 concurrent streaming clients against the real default
model (SmolLM2-135M-Instruct Q4_1), aggregate generated tokens/s and time to first token (p50, p99).

    CPULLM_LIB_DIR=build/test-x86_64 .venv/bin/python benchmarks/load_server.py [--clients 1,4,16]
        [--requests 4] [--max-tokens 128] [--repeats 3] [--threads N] [--url http://HOST:PORT]
        [--json out.json]

Without ``--url`` it starts the server itself (loopback, a free port, ``--max-num-seqs 16``) on the
default model and stops it at the end. Every client streams chat completions one after another
(``--requests`` each; distinct prompts; ``ignore_eos`` so each request generates exactly
``--max-tokens`` tokens); the clients of one round start together. Per round:

- aggregate tokens/s: all generated tokens / the round's wall time;
- TTFT p50/p99: request sent -> first content chunk, over all requests of the round;
- per-stream decode tokens/s: (tokens - 1) / (last token - first token), median over requests;
- CPU cores busy over the round: the clients' (this process) and the server's (from /proc; Linux, and
  only for the server this script starts), so what the clients take from a small machine is in the table.

``--engine-baseline`` also times the bare engine in this process (no HTTP, no server): the same
batch sizes decoding together, tokens/s per batch size: the ceiling the server can reach.

The levels run interleaved (1, 4, 16, 1, 4, 16, ...) ``--repeats`` times and every figure is the
median over the repeats, so the machine's other load spreads over all levels alike.
The target: 16 clients together reach at least 4x the single client's decode rate. The clients run
on the same machine as the server (they parse SSE in one asyncio process), so on a small machine
they take some of its CPU: the numbers are a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
TOPICS = (
    "the water cycle", "how bridges carry weight", "why the sky is blue", "the history of paper",
    "how vaccines train the immune system", "the rules of chess", "how a bicycle stays upright",
    "what a compiler does", "the life of a star", "how bees make honey", "the causes of tides",
    "how solar panels work", "what DNA stores", "how airplanes fly", "the invention of printing",
    "how volcanoes form", "why leaves change colour", "how the internet routes packets",
)  # fmt: skip


@dataclass
class RequestResult:
    ttft_s: float
    tokens: int
    decode_s: float  # first content chunk -> last content chunk


@dataclass
class RoundResult:
    clients: int
    requests: int
    tokens: int
    wall_s: float
    tokens_per_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    stream_decode_tps_median: float
    client_cpu_cores: float  # this process's CPU seconds over the round's wall time
    server_cpu_cores: float | None  # the server's, where /proc gives it


def process_cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of process `pid` so far (Linux /proc), None where unavailable."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100])."""
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def chat_body(model: str, prompt: str, max_tokens: int) -> dict:
    """A streamed chat request that generates exactly ``max_tokens`` tokens (``ignore_eos``)."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0.7,
        "seed": zlib.crc32(prompt.encode()),  # reproducible sampling per prompt
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def prompt_for(client: int, request: int, requests_per_client: int) -> str:
    topic = TOPICS[(client * requests_per_client + request) % len(TOPICS)]
    return f"Client {client}, request {request}: explain {topic} to a curious twelve-year-old."


async def one_request(http: httpx.AsyncClient, model: str, prompt: str, max_tokens: int) -> RequestResult:
    body = chat_body(model, prompt, max_tokens)
    sent = time.perf_counter()
    first = last = None
    tokens = 0
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {(await response.aread()).decode()}")
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
                continue
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                last = time.perf_counter()
                first = first or last
    if first is None or last is None:
        raise RuntimeError("the stream carried no content")
    return RequestResult(first - sent, tokens, last - first)


async def run_round(
    url: str, model: str, clients: int, requests: int, max_tokens: int, server_pid: int | None = None
) -> RoundResult:
    limits = httpx.Limits(max_connections=clients + 2)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:

        async def client(c: int) -> list[RequestResult]:
            out = []
            for r in range(requests):
                out.append(await one_request(http, model, prompt_for(c, r, requests), max_tokens))
            return out

        start, cpu, server_cpu = time.perf_counter(), time.process_time(), process_cpu_s(server_pid)
        per_client = await asyncio.gather(*(client(c) for c in range(clients)))
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu
        server_end = process_cpu_s(server_pid)
    results = [r for rs in per_client for r in rs]
    tokens = sum(r.tokens for r in results)
    ttfts = [r.ttft_s * 1000 for r in results]
    decode = [(r.tokens - 1) / r.decode_s for r in results if r.decode_s > 0 and r.tokens > 1]
    return RoundResult(
        clients=clients,
        requests=len(results),
        tokens=tokens,
        wall_s=wall,
        tokens_per_s=tokens / wall,
        ttft_p50_ms=percentile(ttfts, 50),
        ttft_p99_ms=percentile(ttfts, 99),
        stream_decode_tps_median=statistics.median(decode),
        client_cpu_cores=cpu / wall,
        server_cpu_cores=None
        if server_cpu is None or server_end is None
        else (server_end - server_cpu) / wall,
    )


def engine_baseline(
    levels: list[int], threads: int | None, max_tokens: int, repeats: int
) -> dict[int, float]:
    """Decode tokens/s of the bare engine with ``n`` sequences decoding together, per level (median)."""
    sys.path.insert(0, str(REPO / "engine"))
    from cpullm.runtime.engine import Engine
    from cpullm.runtime.sampling import SamplingParams

    engine = Engine(None, threads=threads, max_num_seqs=max(levels))
    params = SamplingParams(temperature=0.7, max_tokens=max_tokens, ignore_eos=True, seed=1)
    rates: dict[int, list[float]] = {n: [] for n in levels}
    for rep in range(repeats):
        for n in levels:
            for i in range(n):
                prompt = engine.tokenizer.encode(f"Request {rep}-{n}-{i}: explain {TOPICS[i % len(TOPICS)]}.")
                engine.add_request(f"{rep}-{n}-{i}", prompt, params)
            while len(engine.running) < n:  # prefill everything first: time decoding only
                engine.step()
            start, tokens = time.perf_counter(), 0
            while engine.has_work():
                tokens += sum(len(o.token_ids) for o in engine.step())
            rates[n].append(tokens / (time.perf_counter() - start))
    return {n: statistics.median(r) for n, r in rates.items()}


def median_round(rounds: list[RoundResult]) -> RoundResult:
    """Each figure's median over repeated rounds of one concurrency level."""
    first = rounds[0]
    med = {
        k: statistics.median(getattr(r, k) for r in rounds)
        for k in asdict(first)
        if k not in ("clients", "server_cpu_cores")
    }
    server = [r.server_cpu_cores for r in rounds if r.server_cpu_cores is not None]
    return RoundResult(
        clients=first.clients,
        server_cpu_cores=statistics.median(server) if server else None,
        **med,  # type: ignore[arg-type]
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def started_server(
    threads: int | None, max_num_seqs: int, extra_args: Sequence[str] = ()
) -> Iterator[tuple[str, str, int]]:
    """Start `cpullm serve` on the default model; yield (base URL, served model name, its pid)."""
    port = _free_port()
    cmd = [sys.executable, "-m", "cpullm", "serve", "--port", str(port), "--max-num-seqs", str(max_num_seqs)]
    cmd += ["--log-level", "warning", *(["--threads", str(threads)] if threads else []), *extra_args]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "engine") + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited with status {proc.returncode}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server was not ready within 300 s")
            time.sleep(0.2)
        yield url, httpx.get(url + "/v1/models", timeout=10).json()["data"][0]["id"], proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def markdown(rounds: list[RoundResult]) -> str:
    single = rounds[0].stream_decode_tps_median if rounds and rounds[0].clients == 1 else None
    lines = [
        "| clients | requests | tokens | wall s | aggregate tok/s | × single-client decode | TTFT p50 ms "
        "| TTFT p99 ms | per-stream decode tok/s (median) | CPU cores: clients | CPU cores: server |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rounds:
        ratio = f"{r.tokens_per_s / single:.2f}" if single else "n/a"
        lines.append(
            f"| {r.clients} | {r.requests:g} | {r.tokens:g} | {r.wall_s:.1f} | {r.tokens_per_s:.1f} "
            f"| {ratio} | {r.ttft_p50_ms:.0f} | {r.ttft_p99_ms:.0f} | {r.stream_decode_tps_median:.1f} "
            f"| {r.client_cpu_cores:.2f} | "
            + (f"{r.server_cpu_cores:.2f} |" if r.server_cpu_cores is not None else "— |")
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="an already running server (default: start one on the default model)")
    parser.add_argument("--clients", default="1,4,16", help="comma-separated concurrency levels")
    parser.add_argument("--requests", type=int, default=4, help="requests per client per round")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="server compute threads")
    parser.add_argument("--max-num-seqs", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1, help="rounds per level, interleaved; medians kept")
    parser.add_argument("--engine-baseline", action="store_true", help="also time the bare engine (no HTTP)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]

    def run(url: str, model: str, pid: int | None = None) -> list[RoundResult]:
        asyncio.run(run_round(url, model, 1, 1, 16))  # warm-up: first-use costs out of the numbers
        runs: dict[int, list[RoundResult]] = {c: [] for c in levels}
        for _ in range(args.repeats):
            for clients in levels:
                runs[clients].append(
                    asyncio.run(run_round(url, model, clients, args.requests, args.max_tokens, pid))
                )
                print(f"{clients:>3} clients: {runs[clients][-1].tokens_per_s:.1f} tok/s", file=sys.stderr)
        return [median_round(runs[c]) for c in levels]

    if args.url:
        model = httpx.get(args.url + "/v1/models", timeout=10).json()["data"][0]["id"]
        rounds = run(args.url, model)
    else:
        with started_server(args.threads, args.max_num_seqs) as (url, model, pid):
            rounds = run(url, model, pid)
    print(markdown(rounds))
    baseline = {}
    if args.engine_baseline:
        baseline = engine_baseline(levels, args.threads, args.max_tokens, args.repeats)
        print(
            "\n| sequences decoding together (bare engine) | tok/s | × one sequence |\n| ---: | ---: | ---: |"
        )
        for n, rate in baseline.items():
            print(f"| {n} | {rate:.1f} | {rate / baseline[levels[0]]:.2f} |")
    if args.json:
        meta = {"model": model, "max_tokens": args.max_tokens, "requests_per_client": args.requests,
                "repeats": args.repeats, "threads": args.threads, "load_average": os.getloadavg(),
                "cpu": platform.processor() or platform.machine()}  # fmt: skip
        doc = {"meta": meta, "rounds": [asdict(r) for r in rounds], "engine_baseline_tps": baseline}
        args.json.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
