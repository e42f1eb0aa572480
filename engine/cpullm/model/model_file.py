"""Open a GGUF model file and check that cpullm can run it.

Public API
----------
``ModelFile.open(path, quantization=None)`` -> ``ModelFile`` with ``.gguf`` (:class:`GGUFFile`), ``.config``
(:class:`ModelConfig`), ``.tensor(name)`` and ``.tokenizer()``. ``path`` is a GGUF file or a Hugging Face
model folder (``config.json`` + safetensors, opened by :mod:`cpullm.model.hf_folder` as the GGUF it
converts to, its 2-D weights quantized at load to ``quantization``; ``.folder`` is then its path).
It raises :class:`GGUFError` (a ``ValueError``) when the file is not GGUF v2/v3, is truncated or corrupt,
has an unsupported architecture, inconsistent or out-of-range hyperparameters, or lacks a required tensor or
has one with the wrong shape; every message names the file and the culprit. Tensor types are checked
against the native library that will run the file (its own table) when ``NativeModel`` loads it.
Validation is O(metadata + tensors): weights are never read, except the few values of ``rope_freqs.weight``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import quants

from cpullm.model.config import LONGROPE_TENSORS, OPTIONAL_TENSORS, ModelConfig
from cpullm.model.gguf_file import GGUFError, GGUFFile, GGUFTensor
from cpullm.model.hf_folder import folder_as_gguf, is_model_folder
from cpullm.model.hf_tokenizer import tokenizer_from_folder
from cpullm.model.tokenizer import Tokenizer


@dataclass(frozen=True)
class ModelFile:
    gguf: GGUFFile
    config: ModelConfig
    folder: Path | None = None  # a Hugging Face folder's path; None for a GGUF file

    @classmethod
    def open(cls, path: str | os.PathLike[str], quantization: str | None = None) -> ModelFile:
        folder = Path(path) if is_model_folder(path) else None
        if folder is not None:
            gguf = folder_as_gguf(folder, quantization)
        elif quantization is not None:
            raise GGUFError(
                f"{path}: quantization applies to Hugging Face model folders; a GGUF file runs in the types "
                "it is stored in. Drop the option, or quantize the file with llama.cpp's llama-quantize."
            )
        else:
            gguf = GGUFFile.open(path)
        config = ModelConfig.from_gguf(gguf)  # checks the architecture first
        check_tensor_shapes(gguf, config)
        check_rope_freqs(gguf)
        return cls(gguf, config, folder)

    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer: from the GGUF metadata, or a folder's tokenizer.json."""
        if self.folder is None:
            return Tokenizer.from_gguf(self.gguf)
        return tokenizer_from_folder(self.folder, self.config.vocab_size)

    def tensor(self, name: str) -> GGUFTensor:
        try:
            return self.gguf.tensors[name]
        except KeyError:
            raise GGUFError(f"{self.gguf.path}: tensor {name!r} is not in the file.") from None


def check_tensor_shapes(gguf: GGUFFile, config: ModelConfig) -> None:
    """Raise GGUFError for the first required tensor that is missing or has an unexpected shape."""
    for name, ne in config.expected_tensor_shapes().items():
        tensor = gguf.tensors.get(name)
        if tensor is None:
            if name in OPTIONAL_TENSORS:
                continue
            raise GGUFError(
                f"{gguf.path}: required tensor {name!r} is missing; the file is incomplete or not a "
                f"{config.arch} model."
            )
        if tensor.ne != ne:
            raise GGUFError(
                f"{gguf.path}: tensor {name!r} has shape {list(tensor.ne)} (GGUF order), expected {list(ne)} "
                "from the model's metadata. The file is inconsistent."
            )


def check_rope_freqs(gguf: GGUFFile) -> None:
    """Raise GGUFError unless every RoPE frequency factor (``rope_freqs.weight``, LongRoPE's two tensors:
    they divide RoPE frequencies) is finite and positive. Call after :func:`check_tensor_shapes`: each
    tensor is one short vector."""
    for name in ("rope_freqs.weight", *LONGROPE_TENSORS):
        tensor = gguf.tensors.get(name)
        if tensor is None:
            continue
        factors = np.asarray(quants.dequantize(tensor.data, tensor.type), dtype=np.float64).ravel()
        bad = np.flatnonzero(~(np.isfinite(factors) & (factors > 0)))
        if bad.size:
            raise GGUFError(
                f"{gguf.path}: {name!r} holds {factors[bad[0]]} at index {bad[0]}; RoPE frequency "
                "factors must be finite and positive. The file is corrupt."
            )
