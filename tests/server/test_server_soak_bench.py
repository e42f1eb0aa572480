"""The soak benchmark's own code, run for a few seconds against the tiny test server (so it cannot rot)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def soak_server():
    spec = importlib.util.spec_from_file_location("soak_server", REPO / "benchmarks" / "soak_server.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak_server"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_rss_slope_is_mib_per_minute(soak_server):
    assert soak_server.slope_per_min([(0.0, 100.0), (30.0, 101.0), (60.0, 102.0)]) == pytest.approx(2.0)
    assert soak_server.slope_per_min([(5.0, 100.0)]) is None


def test_a_short_soak_ends_idle_and_reports_everything(soak_server, server):
    result = asyncio.run(
        soak_server.soak(server.base_url, "tiny-chat", server.proc.pid, clients=2, duration_s=3.0,
                         max_tokens=8, cancel_every=3, warmup_s=1.0, sample_s=0.5)
    )  # fmt: skip
    assert result.ok, soak_server.report(result)
    assert result.errors == 0 and result.health_failures == 0 and result.idle_at_end
    assert result.completed >= 2 and result.cancelled >= 1
    assert result.tokens == 8 * result.completed  # ignore_eos: every completed request makes max_tokens
    assert 0 < result.ttft_p50_ms <= result.ttft_p99_ms <= result.latency_p99_ms
    assert set(result.metrics_at_end) == set(soak_server.IDLE_METRICS)
    assert all(v == 0 for v in result.metrics_at_end.values())
    assert len(result.samples) >= 4 and all(s.rss_mib and s.rss_mib > 10 for s in result.samples)
    assert result.rss_start_mib and result.rss_max_mib >= max(result.rss_start_mib, result.rss_end_mib)
    assert result.health_max_ms > 0
    text = soak_server.report(result)
    assert "requests completed" in text and "idle" in text
    json.dumps(asdict(result))  # the --json document serialises
