"""The README's "Supported models" table lists exactly what the code's tables say: every architecture of
``ARCHITECTURES`` with its Hugging Face classes, and every tensor type of ``csrc/kernels/dtypes.def``, and
nothing else."""

from __future__ import annotations

import re
from pathlib import Path

from cpullm.model.config import ARCHITECTURES

ROOT = Path(__file__).resolve().parents[1]


def _supported_models_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("**Supported models.**")
    return text[start : text.index("\n\n**", start + 1)]


def test_readme_lists_every_architecture_and_its_hugging_face_classes() -> None:
    rows = [line for line in _supported_models_section().splitlines() if line.startswith("| `")]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    listed = {c[0].strip("`"): tuple(re.findall(r"`(\w+)`", c[1])) for c in cells}
    assert listed == {name: spec.hf_names for name, spec in ARCHITECTURES.items()}


def test_readme_lists_every_tensor_type() -> None:
    table = (ROOT / "csrc" / "kernels" / "dtypes.def").read_text(encoding="utf-8")
    types = re.findall(r"^CPULLM_DTYPE\((\w+),", table, flags=re.MULTILINE)
    line = next(x for x in _supported_models_section().splitlines() if x.startswith("- **Tensor types:**"))
    listed = [name.strip(" .") for name in line.removeprefix("- **Tensor types:**").split(",")]
    assert sorted(listed) == sorted(types)
