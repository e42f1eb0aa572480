"""The GGUF mutation fuzzer (tests/support/gguf_fuzz.py): its parser and cases, and a 500-case campaign.

The campaign is the promise of issue 10: no edit of a model file makes cpullm crash, hang, run out of
memory or raise anything but its own errors. Long runs: benchmarks/fuzz_gguf.py.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from cpullm.model.gguf_file import GGUFFile
from support.gguf_fuzz import FAILURES, HARNESS_CHECKS, MUTATORS, make_case, scan, write_bases

TESTS = Path(__file__).resolve().parents[1]
CASES = 500


def test_layout_agrees_with_the_reader(tiny_llama: Path, tiny_spm: Path) -> None:
    for path in (tiny_llama, tiny_spm):
        data = path.read_bytes()
        layout, gguf = scan(data), GGUFFile.open(path)
        assert layout.data_offset == gguf.data_offset
        assert list(layout.tensor_offsets) == list(gguf.tensors)
        for name, field in layout.tensor_offsets.items():
            (rel,) = struct.unpack_from("<Q", data, field.offset)
            assert gguf.data_offset + rel == gguf.tensors[name].offset
        scalars = [f for f in layout.fields if f.role == "meta"]
        assert {f.owner for f in scalars} <= set(gguf.metadata) and len(scalars) > 10
        for f in scalars:
            (value,) = struct.unpack_from("<" + f.fmt, data, f.offset)
            assert value == pytest.approx(gguf.metadata[f.owner]), f.owner


def test_cases_are_reproducible_and_use_every_mutation(tmp_path: Path) -> None:
    bases = {name: path.read_bytes() for name, path in write_bases(tmp_path).items()}
    layouts = {name: scan(data) for name, data in bases.items()}
    ids = [f"7:{i}" for i in range(300)]
    cases = [make_case(bases, layouts, case_id) for case_id in ids]
    assert cases == [make_case(bases, layouts, case_id) for case_id in ids]  # a case is its id
    changed = sum(data != bases[name] for name, data, _ in cases)
    assert changed >= 0.95 * len(cases)  # a patch may rewrite a value with itself, rarely
    used = Counter(m.split(":")[0] for _, _, done in cases for m in done)
    assert set(used) == {m.__name__ for m, _ in MUTATORS}


@pytest.mark.slow
def test_mutated_model_files_load_or_are_refused(native_lib_dir: Path, tmp_path: Path) -> None:
    """500 mutants of the tiny models, each in a forked child with memory and time limits."""
    report_path = tmp_path / "report.json"
    command = [sys.executable, "-m", "support.gguf_fuzz", "--cases", str(CASES), "--seed", "0"]
    command += ["--lib-dir", str(native_lib_dir), "--json", str(report_path), "--quiet"]
    proc = subprocess.run(command, cwd=TESTS, capture_output=True, text=True, timeout=900)
    assert report_path.exists(), proc.stdout + proc.stderr
    report = json.loads(report_path.read_text())
    # The harness first proves it sees each kind of failure; otherwise "no failures" would mean nothing.
    assert report["harness_check"] == {name: name for name in HARNESS_CHECKS}
    assert report["cases"] == CASES
    failures = [f"{f['case']} ({f['base']}): {f['outcome']}: {f['detail']}" for f in report["failures"]]
    assert not failures, "reproduce with benchmarks/fuzz_gguf.py --repro CASE:\n" + "\n".join(failures)
    counts = report["counts"]
    assert sum(counts[k] for k in FAILURES) == 0 and proc.returncode == 0, proc.stdout
    # Both sides are exercised: mutants that still load and generate, and mutants refused clearly.
    assert counts["ok"] >= CASES // 20 and counts["refused"] >= CASES // 4, counts
