"""Fixtures for the engine's Python tests: tiny GGUF files and (slow) the real default model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ENGINE_DIR = Path(__file__).resolve().parents[2] / "engine"
HERE = Path(__file__).resolve().parent
# The engine package is built by scikit-build-core; tests import its Python sources in place.
for _p in (str(ENGINE_DIR), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from tiny_gguf import TinySpec, write_tiny_gguf  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny_gguf")


@pytest.fixture(scope="session")
def tiny_llama(tiny_dir: Path) -> Path:
    """Tied llama, F32 weights, gpt2 byte-level vocab with ChatML template."""
    return write_tiny_gguf(tiny_dir / "llama_f32.gguf", TinySpec())


@pytest.fixture(scope="session")
def tiny_spm(tiny_dir: Path) -> Path:
    """Untied llama with a SentencePiece-style vocabulary and no chat template."""
    return write_tiny_gguf(
        tiny_dir / "llama_spm.gguf", TinySpec(tied=False, tokenizer="llama", chat_template=None, add_bos=True)
    )


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The real default model (SmolLM2-135M-Instruct Q4_1), fetched once into the user cache."""
    from cpullm.model.default_model import default_model_path

    return default_model_path()
