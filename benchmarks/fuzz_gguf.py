"""Fuzz cpullm's model loading with mutated GGUF files (long runs; see benchmarks/README.md).

    flock /tmp/cpubuild-bench.lock .venv/bin/python benchmarks/fuzz_gguf.py --cases 10000 --seed 1 \
        --json out.json

Prints the counts of each outcome (ok / refused with a project error / signal / hang / memory / other
exception) and, for every failure, the case id that ``--repro SEED:INDEX`` reruns in-process. Exits 1
if any case failed. The fuzzer itself is ``tests/support/gguf_fuzz.py``, shared with the test suite.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.gguf_fuzz import main

if __name__ == "__main__":
    sys.exit(main())
