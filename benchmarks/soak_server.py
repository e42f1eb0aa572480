"""Soak run of `cpullm serve`: N streaming clients for T seconds; errors, latency, memory over time,
and the server's queues and KV cache back to empty at the end.

    flock /tmp/cpubuild-bench.lock .venv/bin/python benchmarks/soak_server.py [--clients 16]
        [--duration 600] [--max-tokens 128] [--cancel-every 5] [--warmup 60] [--sample 5]
        [--threads N] [--kv-cache-gb 0.25] [--url http://HOST:PORT --pid PID] [--json out.json]

Without ``--url`` it starts the server itself on the default model (as ``load_server.py`` does) and
stops it at the end, with a KV cache of ``--kv-cache-gb`` (default 0.25 GiB, 4x what 16 streams
of 128 tokens hold at once): the cache hands out never-used blocks first, so RSS grows as its pages are
first touched, up to its whole size, and only once all are touched does a rising RSS mean a leak. A
small cache is touched within the warm-up.

Every client streams chat completions back to back until the time is up
(distinct prompts; ``ignore_eos`` so each request generates ``--max-tokens`` tokens); every
``--cancel-every``-th request of a client is dropped after its first content chunk, as a client that
goes away would (0: none), so the abort path runs all along. Reported:

- requests completed and cancelled, errors (by kind, with the first messages), generated tokens/s;
- per request: end-to-end latency and time to first token, p50/p99 (completed requests);
- the server's RSS (``/proc/PID/status`` VmRSS) every ``--sample`` seconds; after the warm-up
  (``--warmup`` seconds): the first and last samples, the maximum, and the least-squares slope in
  MiB per minute, also over the run's second half alone (a leak keeps its slope, memory that
  settles flattens out); the whole curve goes into ``--json``;
- ``/health`` latency, sampled at the same times (p50, max);
- once every client has finished, ``/metrics``: ``cpullm_num_requests_running``,
  ``cpullm_num_requests_waiting`` and ``cpullm_kv_cache_blocks_used`` must all be back to 0
  (polled for up to 10 s); the run fails (exit status 1) if they are not, or on any error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_server import chat_body, one_request, percentile, prompt_for, started_server

IDLE_METRICS = ("cpullm_num_requests_running", "cpullm_num_requests_waiting", "cpullm_kv_cache_blocks_used")
MIB = 1 << 20


@dataclass
class Sample:
    t_s: float  # since the start of the run
    rss_mib: float | None
    health_ms: float


@dataclass
class SoakResult:
    clients: int
    duration_s: float
    completed: int = 0
    cancelled: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    first_errors: list[str] = field(default_factory=list)
    tokens: int = 0
    tokens_per_s: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    ttft_p50_ms: float = 0.0
    ttft_p99_ms: float = 0.0
    health_p50_ms: float = 0.0
    health_max_ms: float = 0.0
    health_failures: int = 0
    rss_start_mib: float | None = None  # first sample after the warm-up
    rss_end_mib: float | None = None
    rss_max_mib: float | None = None  # after the warm-up
    rss_slope_mib_per_min: float | None = None
    rss_slope_last_half_mib_per_min: float | None = None  # a leak keeps its slope; settling does not
    metrics_at_end: dict[str, float] = field(default_factory=dict)
    idle_at_end: bool = False
    samples: list[Sample] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.errors == 0 and self.health_failures == 0 and self.idle_at_end and self.completed > 0


def rss_mib(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(m.group(1)) / 1024 if m else None


def read_metrics(text: str) -> dict[str, float]:
    """Prometheus samples without labels, by name."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*) (\S+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def slope_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MiB) points, in MiB per minute."""
    if len(points) < 2:
        return None
    ts, ys = [p[0] for p in points], [p[1] for p in points]
    t_mean, y_mean = statistics.fmean(ts), statistics.fmean(ys)
    var = sum((t - t_mean) ** 2 for t in ts)
    if var == 0:
        return None
    return 60 * sum((t - t_mean) * (y - y_mean) for t, y in zip(ts, ys, strict=True)) / var


async def cancelled_request(http: httpx.AsyncClient, model: str, prompt: str, max_tokens: int) -> None:
    """Start a stream and leave after its first content chunk, as a client that goes away."""
    async with http.stream("POST", "/v1/chat/completions", json=chat_body(model, prompt, max_tokens)) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread()).decode(errors='replace')}")
        async for line in r.aiter_lines():
            if line.startswith("data: {") and '"content":"' in line and '"content":""' not in line:
                return
    raise RuntimeError("the stream ended before its first content chunk")


async def soak(
    url: str,
    model: str,
    pid: int | None,
    clients: int,
    duration_s: float,
    max_tokens: int,
    cancel_every: int = 10,
    warmup_s: float = 60.0,
    sample_s: float = 5.0,
) -> SoakResult:
    result = SoakResult(clients=clients, duration_s=duration_s)
    latencies: list[float] = []
    ttfts: list[float] = []
    errors: Counter[str] = Counter()
    start = time.perf_counter()
    deadline = start + duration_s
    limits = httpx.Limits(max_connections=clients + 2)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:

        async def client(c: int) -> None:
            r = 0
            while time.perf_counter() < deadline:
                prompt = prompt_for(c, r, 1)
                r += 1
                sent = time.perf_counter()
                try:
                    if cancel_every and r % cancel_every == 0:
                        await cancelled_request(http, model, prompt, max_tokens)
                        result.cancelled += 1
                        continue
                    one = await one_request(http, model, prompt, max_tokens)
                except Exception as e:  # every failure is counted, the soak goes on
                    errors[type(e).__name__] += 1
                    if len(result.first_errors) < 5:
                        result.first_errors.append(f"{type(e).__name__}: {e}"[:300])
                    await asyncio.sleep(0.5)
                    continue
                latencies.append(time.perf_counter() - sent)
                ttfts.append(one.ttft_s)
                result.tokens += one.tokens
                result.completed += 1

        async def sampler() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=30) as probe:
                while True:
                    t0 = time.perf_counter()
                    try:
                        healthy = (await probe.get("/health")).status_code == 200
                    except httpx.HTTPError:
                        healthy = False
                    health_ms = (time.perf_counter() - t0) * 1000
                    result.health_failures += not healthy
                    rss = rss_mib(pid) if pid is not None else None
                    result.samples.append(Sample(round(t0 - start, 2), rss, round(health_ms, 2)))
                    await asyncio.sleep(sample_s)

        sampling = asyncio.ensure_future(sampler())
        try:
            await asyncio.gather(*(client(c) for c in range(clients)))
        finally:
            sampling.cancel()
        wall = time.perf_counter() - start
        result.metrics_at_end, result.idle_at_end = await _wait_idle(http)
        final_rss = rss_mib(pid) if pid is not None else None
        result.samples.append(Sample(round(time.perf_counter() - start, 2), final_rss, 0.0))
    result.errors = sum(errors.values())
    result.error_kinds = dict(errors)
    result.tokens_per_s = result.tokens / wall
    if latencies:
        result.latency_p50_ms, result.latency_p99_ms = (percentile(latencies, q) * 1000 for q in (50, 99))
        result.ttft_p50_ms, result.ttft_p99_ms = (percentile(ttfts, q) * 1000 for q in (50, 99))
    health = [s.health_ms for s in result.samples[:-1]]
    if health:
        result.health_p50_ms, result.health_max_ms = percentile(health, 50), max(health)
    _summarise_rss(result, warmup_s)
    return result


async def _wait_idle(http: httpx.AsyncClient, timeout_s: float = 10.0) -> tuple[dict[str, float], bool]:
    """Poll /metrics until running, waiting and KV blocks in use are all 0 (or the time is up)."""
    give_up = time.perf_counter() + timeout_s
    while True:
        metrics = read_metrics((await http.get("/metrics")).text)
        shown = {name: metrics.get(name, float("nan")) for name in IDLE_METRICS}
        if all(v == 0 for v in shown.values()):
            return shown, True
        if time.perf_counter() > give_up:
            return shown, False
        await asyncio.sleep(0.2)


def _summarise_rss(result: SoakResult, warmup_s: float) -> None:
    warm = [(s.t_s, s.rss_mib) for s in result.samples if s.rss_mib is not None and s.t_s >= warmup_s]
    if not warm:  # a run shorter than its warm-up: use what there is
        warm = [(s.t_s, s.rss_mib) for s in result.samples if s.rss_mib is not None]
    if not warm:
        return
    rss = [y for _, y in warm]
    result.rss_start_mib, result.rss_end_mib, result.rss_max_mib = rss[0], rss[-1], max(rss)
    result.rss_slope_mib_per_min = slope_per_min(warm)  # type: ignore[arg-type]
    half = result.duration_s / 2
    result.rss_slope_last_half_mib_per_min = slope_per_min([p for p in warm if p[0] >= half])  # type: ignore[misc]


def report(r: SoakResult) -> str:
    def mib(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1f} MiB"

    def per_min(v: float | None) -> str:
        return "n/a" if v is None else f"{v:+.2f} MiB/min"

    slope = f"{per_min(r.rss_slope_mib_per_min)} (last half {per_min(r.rss_slope_last_half_mib_per_min)})"
    lines = [
        f"{r.clients} streaming clients for {r.duration_s:g} s: {r.completed} requests completed, "
        f"{r.cancelled} cancelled by their client, {r.errors} errors {r.error_kinds or ''}",
        f"generated {r.tokens} tokens, {r.tokens_per_s:.1f} tok/s",
        f"latency per request p50 {r.latency_p50_ms:.0f} ms, p99 {r.latency_p99_ms:.0f} ms; "
        f"time to first token p50 {r.ttft_p50_ms:.0f} ms, p99 {r.ttft_p99_ms:.0f} ms",
        f"/health p50 {r.health_p50_ms:.1f} ms, max {r.health_max_ms:.1f} ms, {r.health_failures} failed",
        f"server RSS after warm-up: start {mib(r.rss_start_mib)}, end {mib(r.rss_end_mib)}, "
        f"max {mib(r.rss_max_mib)}, slope {slope}",
        f"metrics at the end: {r.metrics_at_end} -> {'idle' if r.idle_at_end else 'NOT IDLE'}",
    ]
    lines += [f"  error: {e}" for e in r.first_errors]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="an already running server (default: start one on the default model)")
    parser.add_argument("--pid", type=int, help="with --url: the server's process id, for its RSS")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--cancel-every", type=int, default=5, help="drop every Nth stream early (0: never)")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before the RSS baseline")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between RSS and /health samples")
    parser.add_argument("--threads", type=int, default=None, help="server compute threads")
    parser.add_argument("--max-num-seqs", type=int, default=16)
    parser.add_argument("--kv-cache-gb", type=float, default=0.25, help="the started server's KV cache")
    parser.add_argument("--json", type=Path, help="also write the results (and the RSS curve) here")
    args = parser.parse_args()

    def run(url: str, model: str, pid: int | None) -> SoakResult:
        return asyncio.run(
            soak(url, model, pid, args.clients, args.duration, args.max_tokens, args.cancel_every,
                 args.warmup, args.sample)
        )  # fmt: skip

    if args.url:
        model = httpx.get(args.url + "/v1/models", timeout=10).json()["data"][0]["id"]
        result = run(args.url, model, args.pid)
    else:
        kv = ["--kv-cache-gb", str(args.kv_cache_gb)]
        with started_server(args.threads, args.max_num_seqs, kv) as (url, model, pid):
            result = run(url, model, pid)
    print(report(result))
    if args.json:
        doc = {"model": model, "max_tokens": args.max_tokens, "threads": args.threads,
               "kv_cache_gb": None if args.url else args.kv_cache_gb, "load_average": os.getloadavg(),
               **asdict(result)}  # fmt: skip
        args.json.write_text(json.dumps(doc, indent=2))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
