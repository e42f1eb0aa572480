"""`cpullm bench`: the --json schema and the table, on a tiny model."""

from __future__ import annotations

import json

from cpullm.cli import main as cli
from cpullm.native import loader


def test_json_schema(tiny_model, capsys):
    args = ["bench", str(tiny_model), "-p", "32", "-n", "8", "-r", "2", "-t", "1,2", "--json"]
    assert cli.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["schema_version"] == 1
    assert report["model"] == str(tiny_model)
    assert report["model_bytes"] == tiny_model.stat().st_size
    assert report["architecture"] == "llama"
    assert report["variant"] == loader.native()[1].variant.name
    assert report["repetitions"] == 2 and report["pinned"] is False
    assert report["peak_rss_bytes"] > 10 * (1 << 20)  # at least the interpreter and numpy
    assert report["n_params"] > 0 and report["load_s"] > 0
    assert [(r["threads"], r["test"], r["n_tokens"]) for r in report["results"]] == [
        (1, "pp32", 32),
        (1, "tg8", 8),
        (2, "pp32", 32),
        (2, "tg8", 8),
    ]
    for r in report["results"]:
        s = r["tokens_per_second"]
        assert len(s["samples"]) == 2 and all(x > 0 for x in s["samples"])
        assert s["min"] <= s["median"] <= s["max"]
        assert s["min"] == min(s["samples"]) and s["max"] == max(s["samples"])
        assert s["stddev"] >= 0


def test_table_and_skipped_test(tiny_model, capsys):
    assert cli.main(["bench", str(tiny_model), "-p", "0", "-n", "4", "-r", "1", "-t", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("|") and "tg4" in line]
    assert len(rows) == 1 and rows[0].split("|")[1].strip() == "1"
    assert "pp" not in out.split("variant")[1].split("median")[0].replace("pinned", "")
    assert "peak RSS" in out


def test_pinned_threads_in_a_subprocess(tiny_model, run_cli):
    result = run_cli("bench", str(tiny_model), "-p", "16", "-n", "4", "-r", "1", "-t", "2", "--pin", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["pinned"] is True


def test_refusals(tiny_model, capsys, run_cli):
    assert cli.main(["bench", str(tiny_model), "-p", "0", "-n", "0"]) == 1
    assert "nothing to measure" in capsys.readouterr().err
    result = run_cli("bench", str(tiny_model), "-t", "1,0")
    assert result.returncode == 2 and "at least 1" in result.stderr
    # more tokens than the model's context: a clear error, not a native failure
    assert cli.main(["bench", str(tiny_model), "-p", "4096", "-n", "0", "-r", "1", "-t", "1"]) == 1
    assert "context" in capsys.readouterr().err


def test_depth_runs_each_test_after_that_context(tiny_model, capsys):
    args = ["bench", str(tiny_model), "-p", "16", "-n", "4", "-d", "40", "-r", "1", "-t", "1", "--json"]
    assert cli.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(r["test"], r["n_tokens"], r["depth"]) for r in report["results"]] == [
        ("pp16 @ d40", 16, 40),
        ("tg4 @ d40", 4, 40),
    ]
    assert cli.main(["bench", str(tiny_model), "-p", "0", "-n", "4", "-d", "40", "-r", "1", "-t", "1"]) == 0
    assert "tg4 @ d40" in capsys.readouterr().out
    # a depth past the model's context is refused before any work
    assert cli.main(["bench", str(tiny_model), "-n", "4", "-d", "100000", "-r", "1", "-t", "1"]) == 1
    assert "-d" in capsys.readouterr().err


def test_depth_context_is_really_in_the_cache(tiny_model):
    """A decode step at position `depth` sees the filled context: its logits equal those of the same
    tokens run as one prompt in a fresh cache."""
    import numpy as np

    from cpullm.model.model_file import ModelFile
    from cpullm.native.runner import NativeModel, SeqChunk
    from cpullm.runtime.bench import ModelBench

    model = NativeModel(ModelFile.open(tiny_model))
    depth = 37
    bench = ModelBench(model, depth + 8, depth)
    got = model.step(bench.cache, [SeqChunk(bench.tokens[depth : depth + 1], depth, bench.table, 1)]).copy()
    fresh = model.new_cache(len(bench.table), 16)
    want = model.step(fresh, [SeqChunk(bench.tokens[: depth + 1], 0, bench.table, 1)]).copy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # and it differs from a step that did not see the context
    empty = model.step(
        model.new_cache(len(bench.table), 16), [SeqChunk(bench.tokens[depth : depth + 1], 0, bench.table, 1)]
    )
    assert not np.allclose(got, empty, rtol=1e-4, atol=1e-4)
