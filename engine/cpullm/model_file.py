"""Open a GGUF model file and check that cpullm can run it.

Public API
----------
``ModelFile.open(path)`` -> ``ModelFile`` with ``.gguf`` (:class:`GGUFFile`), ``.config``
(:class:`ModelConfig`) and ``.tensor(name)``. It raises :class:`GGUFError` (a ``ValueError``) when the
file is not GGUF v2/v3, is truncated, has an unsupported architecture or tensor type, or lacks a
required tensor or has one with the wrong shape; every message names the file and the culprit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .config import OPTIONAL_TENSORS, ModelConfig
from .gguf_file import GGUFError, GGUFFile, GGUFTensor


@dataclass(frozen=True)
class ModelFile:
    gguf: GGUFFile
    config: ModelConfig

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ModelFile:
        gguf = GGUFFile.open(path)
        config = ModelConfig.from_gguf(gguf)  # checks the architecture first
        gguf.check_tensor_types()
        check_tensor_shapes(gguf, config)
        return cls(gguf, config)

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
