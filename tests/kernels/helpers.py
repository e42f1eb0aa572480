"""Shared helpers for the kernel tests: the recipes, variants this host can run, random GGUF data,
tolerances."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType
from gguf import quants as gq

from cpubuild.recipes import Recipe, load_recipes
from cpullm.native import loader
from cpullm.testing.kernels import DType, Kernels, block

REPO = Path(__file__).resolve().parents[2]

QUANT_TYPES = [
    DType.Q4_0,
    DType.Q4_1,
    DType.Q5_0,
    DType.Q5_1,
    DType.Q8_0,
    DType.IQ4_NL,
    DType.IQ4_XS,
    DType.Q2_K,
    DType.Q3_K,
    DType.Q4_K,
    DType.Q5_K,
    DType.Q6_K,
]
FLOAT_TYPES = [DType.F32, DType.F16, DType.BF16]
ALL_TYPES = QUANT_TYPES + FLOAT_TYPES  # test_kernel_dequant checks it is the library's whole table

# |fast - ref| <= TOL[type] · Σ_c |W[r,c]|·|x̂[c]| (x̂: the activations as the kernel sees them).
# Quantized types: block dots are exact integers, only the float sum over blocks is reordered.
# F32/F16: reordered f32 sums. BF16: activations may be split into two bf16 parts (vdpbf16ps).
TOL = {DType.F32: 2e-5, DType.F16: 2e-5, DType.BF16: 1e-4} | {t: 2e-5 for t in QUANT_TYPES}


def recipes(arch: str) -> tuple[Recipe, ...]:
    """The recipes the native build of `arch` reads (the repository's recipes/), lowest priority first."""
    return load_recipes(REPO / "recipes").for_arch(arch)


def sets_with_code(kernels: Iterable[str]) -> set[str]:
    """The sets of a recipe's `kernels` that have source files (csrc/kernels/<kernel>/<kernel>_<set>.cc)."""
    return {k for k in kernels if any((REPO / "csrc" / "kernels").glob(f"*/*_{k}.cc"))}


@cache
def host_variants(lib_dir: Path) -> list[str]:
    """Names of the variants in lib_dir this host can run, best last."""
    sel = loader.select(lib_dir)
    return sorted((n for n, s in sel.candidates.items() if s > 0), key=lambda n: sel.candidates[n])


@cache
def load(lib_dir: Path, variant: str) -> Kernels:
    return Kernels(loader.load_variant(loader.select(lib_dir, forced=variant)))


def _put_f16(raw: np.ndarray, offset: int, values: np.ndarray) -> None:
    raw[:, offset : offset + 2] = values.astype(np.float16).reshape(-1, 1).view(np.uint8)


def random_weights(dtype: DType, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Raw GGUF bytes [rows, row_bytes] of a random matrix, realistic scales, every bit pattern allowed."""
    if dtype == DType.F32:
        return rng.standard_normal((rows, cols), dtype=np.float32).view(np.uint8)
    if dtype == DType.F16:
        return rng.standard_normal((rows, cols)).astype(np.float16).view(np.uint8)
    if dtype in (DType.BF16, DType.Q4_0, DType.Q4_1, DType.Q5_0, DType.Q5_1, DType.Q8_0):
        # The independent quantizer of the gguf package (the way real model files are made).
        w = rng.standard_normal((rows, cols), dtype=np.float32)
        return gq.quantize(w, GGMLQuantizationType(int(dtype)))
    per, size = block(dtype)
    raw = rng.integers(0, 256, size=(rows * cols // per, size), dtype=np.uint8)
    n = raw.shape[0]
    if dtype == DType.IQ4_NL:  # gguf cannot quantize it: random nibbles (every codebook entry), realistic d
        _put_f16(raw, 0, rng.uniform(1e-4, 2e-4, n))
    elif dtype == DType.IQ4_XS:  # d first; every 6-bit scale and codebook entry occurs
        _put_f16(raw, 0, rng.uniform(1e-5, 2e-4, n))
    elif dtype in (DType.Q4_K, DType.Q5_K):
        _put_f16(raw, 0, rng.uniform(1e-4, 2e-3, n))
        _put_f16(raw, 2, rng.uniform(1e-4, 2e-3, n))
    elif dtype == DType.Q2_K:  # d, dmin after scales[16] and qs[64]
        _put_f16(raw, 80, rng.uniform(1e-4, 2e-3, n))
        _put_f16(raw, 82, rng.uniform(1e-4, 2e-3, n))
    elif dtype == DType.Q3_K:  # d is the last field
        _put_f16(raw, 108, rng.uniform(1e-4, 2e-3, n))
    else:  # Q6_K: d is the last field
        _put_f16(raw, 208, rng.uniform(1e-4, 2e-3, n))
    return raw.reshape(rows, -1)


def gguf_dequantize(dtype: DType, raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """The gguf package's dequantization, f32 [rows, cols]."""
    if dtype == DType.F32:
        return raw.view(np.float32).reshape(rows, cols)
    if dtype == DType.F16:
        return raw.view(np.float16).astype(np.float32).reshape(rows, cols)
    return gq.dequantize(raw.reshape(rows, -1), GGMLQuantizationType(int(dtype))).reshape(rows, cols)


def act_values(blocks: np.ndarray) -> np.ndarray:
    """The f32 values quantized activation blocks stand for: d · q."""
    return (blocks["d"][:, None] * blocks["q"].astype(np.float32)).ravel()


def block_multiple(dtype: DType) -> int:
    return block(dtype)[0]
