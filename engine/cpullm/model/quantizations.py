"""The ``--quantization`` choices for Hugging Face folders: the type each 2-D weight matrix is converted to
at load, by name. Kept free of numpy and gguf so that the CLI can list them without loading either
(``cpullm info`` runs in an environment without the engine's dependencies)."""

from __future__ import annotations

# name -> the GGUF tensor type's name; "none" keeps each matrix in its stored type (F32, F16 or BF16),
# memory-mapped without a copy where no conversion is needed.
QUANTIZATION_TYPES: dict[str, str | None] = {
    "q8_0": "Q8_0",
    "q5_1": "Q5_1",
    "q5_0": "Q5_0",
    "q4_1": "Q4_1",
    "q4_0": "Q4_0",
    "bf16": "BF16",
    "f16": "F16",
    "f32": "F32",
    "none": None,
}
DEFAULT_QUANTIZATION = "q8_0"  # near-lossless, a quarter of F32's bytes, and fast on every kernel set
