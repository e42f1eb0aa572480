"""benchmarks/engine_vs_llamacpp.py end to end: real cpullm workers, a stand-in for llama-cpp-python.

The stand-in (a fake ``llama_cpp`` module) takes a fixed time per token, so the report's llama.cpp
numbers are known; the test checks the plumbing: workers, warm-up, interleaving, medians, ratios, RSS.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "engine_vs_llamacpp.py"

FAKE_LLAMA_CPP = """
import os, time
__version__ = "0.0-fake"
LOG = os.environ["FAKE_LLAMA_LOG"]

def llama_print_system_info():
    return b"CPU : FAKE = 1 | "

class Llama:
    def __init__(self, model_path, n_threads, n_threads_batch, flash_attn, n_ctx, n_batch, verbose):
        assert flash_attn and n_ctx == 1024 + int(os.environ.get("FAKE_DEPTH", "0")) and n_batch == 512
        assert n_threads == n_threads_batch
        self.n_threads = n_threads
        self.n_tokens = 0

    def reset(self):
        pass

    def eval(self, tokens):
        with open(LOG, "a") as log:
            log.write(f"{self.n_threads} {len(tokens)} {self.n_tokens}\\n")
        self.n_tokens += len(tokens)
        time.sleep(0.001 * len(tokens))  # 1000 tokens/s
"""


def test_report_from_interleaved_workers(tiny_model, native_lib_dir, tmp_path):
    fake = tmp_path / "fake" / "llama_cpp"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(FAKE_LLAMA_CPP)
    log = tmp_path / "llama_calls.log"
    env = dict(os.environ, PYTHONPATH=str(fake.parent), FAKE_LLAMA_LOG=str(log))
    out_json = tmp_path / "report.json"
    args = ["--model", str(tiny_model), "--lib-dir", str(native_lib_dir), "--llama-python", sys.executable]
    args += ["-p", "32", "-n", "8", "--reps", "5", "--threads", "1,2", "--json", str(out_json)]
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out_json.read_text())
    assert [(r["threads"], r["test"]) for r in report["rows"]] == [
        (1, "pp32"), (1, "tg8"), (2, "pp32"), (2, "tg8"),
    ]  # fmt: skip
    for row in report["rows"]:
        cpullm, llama = row["tokens_per_second"]["cpullm"], row["tokens_per_second"]["llama.cpp"]
        assert len(cpullm["samples"]) == len(llama["samples"]) == 5
        assert 50 < llama["median"] <= 1000  # the stand-in sleeps 1 ms per token: never faster
        assert row["ratio"] == cpullm["median"] / llama["median"]
        pairs = [a / b for a, b in zip(cpullm["samples"], llama["samples"], strict=True)]
        assert row["paired_ratio"] == statistics.median(pairs)
    assert report["rows"][0]["target"] == 1.2 and report["rows"][3]["target"] == 1.5
    # per thread count: one warm-up + 5 repetitions, each a pp (32 tokens) and a tg (8 prompt + 8 x 1)
    calls = [tuple(map(int, line.split())) for line in log.read_text().splitlines()]
    for threads in (1, 2):
        sizes = [n for t, n, _ in calls if t == threads]
        assert sizes.count(32) == 6 and sizes.count(8) == 6 and sizes.count(1) == 6 * 8
    assert report["llama_cpp_python"] == "0.0-fake" and report["llama_cpp_system"] == "CPU : FAKE = 1"
    assert report["peak_rss_bytes"]["cpullm"] > report["rss_before_load_bytes"]["cpullm"] > 0
    assert report["peak_rss_bytes"]["llama.cpp"] > 0
    assert report["cpullm_variant"]
    assert "| 2 | tg8 |" in result.stdout and "peak RSS: cpullm" in result.stdout


def test_depth_runs_after_a_shared_context(tiny_model, native_lib_dir, tmp_path):
    fake = tmp_path / "fake" / "llama_cpp"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(FAKE_LLAMA_CPP)
    log = tmp_path / "llama_calls.log"
    env = dict(os.environ, PYTHONPATH=str(fake.parent), FAKE_LLAMA_LOG=str(log), FAKE_DEPTH="40")
    out_json = tmp_path / "report.json"
    args = ["--model", str(tiny_model), "--lib-dir", str(native_lib_dir), "--llama-python", sys.executable]
    args += ["-p", "16", "-n", "4", "-d", "40", "--reps", "5", "--threads", "1", "--json", str(out_json)]
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out_json.read_text())
    assert report["depth"] == 40
    assert [r["test"] for r in report["rows"]] == ["pp16 @ d40", "tg4 @ d40"]
    assert all(r["target"] is None for r in report["rows"])  # issue 5's targets are for depth 0
    calls = [tuple(map(int, line.split())) for line in log.read_text().splitlines()]
    # the 40-token context once, from position 0; every test after it starts at position 40
    assert calls[0] == (1, 40, 0)
    assert [pos for _, n, pos in calls[1:] if n == 16] == [40] * 6
    tg_starts = [pos for _, n, pos in calls[1:] if n == 1 and pos == 40]
    assert len(tg_starts) == 6
