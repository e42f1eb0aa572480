"""The load benchmark's own code, run briefly against the tiny test server (so it cannot rot)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def load_server():
    spec = importlib.util.spec_from_file_location("load_server", REPO / "benchmarks" / "load_server.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["load_server"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_percentile_interpolates(load_server):
    assert load_server.percentile([5.0], 99) == 5.0
    assert load_server.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert load_server.percentile([0.0, 10.0], 99) == pytest.approx(9.9)


def test_a_round_counts_every_token(load_server, server):
    result = asyncio.run(
        load_server.run_round(server.base_url, "tiny-chat", clients=3, requests=2, max_tokens=6)
    )
    assert result.clients == 3 and result.requests == 6
    assert result.tokens == 6 * 6  # ignore_eos: every request generates max_tokens
    assert result.tokens_per_s == pytest.approx(result.tokens / result.wall_s)
    assert 0 < result.ttft_p50_ms <= result.ttft_p99_ms
    table = load_server.markdown([result])
    assert table.count("\n") == 2 and "| 3 | 6 | 36 |" in table


def test_repeated_rounds_are_summarised_by_their_medians(load_server):
    make = load_server.RoundResult
    rounds = [
        make(4, 8, 80, wall, 80 / wall, ttft, ttft * 2, 10.0, ttft / 100, server)
        for wall, ttft, server in ((2.0, 30.0, 1.5), (4.0, 10.0, None), (1.0, 20.0, 1.9))
    ]
    med = load_server.median_round(rounds)
    assert (med.clients, med.requests, med.tokens, med.wall_s) == (4, 8, 80, 2.0)
    assert med.tokens_per_s == 40.0 and med.ttft_p50_ms == 20.0 and med.ttft_p99_ms == 40.0
    # CPU: the clients' median; the server's over the rounds that could read it
    assert med.client_cpu_cores == 0.2 and med.server_cpu_cores == 1.7


def test_process_cpu_seconds_come_from_proc(load_server):
    own = load_server.process_cpu_s(os.getpid())
    if own is None:
        pytest.skip("no /proc here")
    assert own > 0
    assert load_server.process_cpu_s(None) is None
