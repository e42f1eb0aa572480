"""Model hyperparameters read from GGUF metadata.

Public API
----------
``ModelConfig.from_gguf(gguf_file)``
    Reads ``general.architecture`` and the ``{arch}.*`` keys into a frozen :class:`ModelConfig`.
    Unsupported architectures and missing or inconsistent keys raise :class:`GGUFError`.
``ModelConfig.expected_tensor_shapes()``
    ``{name: ne}`` (GGUF order) of every tensor the model needs; optional ones are listed in
    :data:`OPTIONAL_TENSORS`.
``SUPPORTED_ARCHITECTURES``, ``RopeLayout``.

RoPE layout (the subtle part)
-----------------------------
HF Llama checkpoints rotate the two *halves* of each head (``rotate_half``). llama.cpp's converter
(``convert_hf_to_gguf.py``, ``LlamaModel.permute``) permutes the rows of ``attn_q``/``attn_k`` for
``llama`` (and ``mistral``) so that, in the GGUF file, RoPE rotates *adjacent pairs*
``(x[2i], x[2i+1])`` by angle ``pos * theta^(-2i/rope_dim)`` — llama.cpp's ``LLAMA_ROPE_TYPE_NORM``
(here ``RopeLayout.NORMAL``). ``qwen2`` weights are stored unpermuted and llama.cpp applies
``LLAMA_ROPE_TYPE_NEOX``: pairs ``(x[i], x[i + rope_dim/2])`` (here ``RopeLayout.NEOX``). The frequency
index ``i`` is the same in both layouts; only which two lanes form a pair differs.

RoPE scaling: ``rope_scaling`` is ``"none"`` or ``"linear"`` (positions divided by ``rope_scale``).
Llama 3.x "llama3" scaling is not a metadata field in GGUF: the converter bakes it into an optional
``rope_freqs.weight`` tensor (``float32[rope_dim/2]``) whose entries divide each frequency; consumers
apply it when the tensor is present. ``yarn`` and ``longrope`` are refused with a clear error.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from .gguf_file import GGUFError, GGUFFile

SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "mistral")
SUPPORTED_ROPE_SCALING = ("none", "linear")

# Tensors a model may lack: no `output.weight` means the output projection is tied to
# `token_embd.weight`; `rope_freqs.weight` carries llama3-style per-frequency factors.
OPTIONAL_TENSORS = ("output.weight", "rope_freqs.weight")


class RopeLayout(str, enum.Enum):
    NORMAL = "normal"  # rotate adjacent pairs (x[2i], x[2i+1]); llama, mistral
    NEOX = "neox"  # rotate (x[i], x[i + rope_dim/2]); qwen2


_ROPE_LAYOUTS = {"llama": RopeLayout.NORMAL, "mistral": RopeLayout.NORMAL, "qwen2": RopeLayout.NEOX}


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    vocab_size: int
    context_length: int
    rms_eps: float
    rope_theta: float
    rope_dim: int  # leading lanes of each head that RoPE rotates (== head_dim for these archs)
    rope_layout: RopeLayout
    rope_scaling: str  # "none" | "linear"
    rope_scale: float  # linear scaling factor (positions are divided by it); 1.0 when none
    rope_orig_context: int  # training context before scaling (0 when unknown)
    has_rope_freqs: bool  # llama3-style frequency factors in tensor `rope_freqs.weight`
    tied_embeddings: bool  # no `output.weight`: logits = token_embd @ h
    has_qkv_bias: bool
    bos_id: int | None
    eos_id: int | None

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> ModelConfig:
        """Build the config of ``gguf``; raise GGUFError for an unsupported or inconsistent model."""
        arch = gguf.architecture
        if arch not in SUPPORTED_ARCHITECTURES:
            raise GGUFError(
                f"{gguf.path}: architecture {arch!r} is not supported (supported: "
                f"{', '.join(SUPPORTED_ARCHITECTURES)})."
            )
        md = _Metadata(gguf, arch)
        d_model = md.integer("embedding_length")
        n_heads = md.integer("attention.head_count")
        n_kv_heads = md.integer("attention.head_count_kv", default=n_heads)
        if n_heads <= 0 or n_kv_heads <= 0 or n_heads % n_kv_heads:
            raise GGUFError(
                f"{gguf.path}: {n_heads} attention heads cannot share {n_kv_heads} key/value heads evenly."
            )
        head_dim = md.integer("attention.key_length", default=d_model // n_heads)
        scaling, scale = _rope_scaling(md)
        return cls(
            arch=arch,
            n_layers=md.integer("block_count"),
            d_model=d_model,
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            head_dim=head_dim,
            d_ff=md.integer("feed_forward_length"),
            vocab_size=_vocab_size(gguf, md),
            context_length=md.integer("context_length"),
            rms_eps=md.number("attention.layer_norm_rms_epsilon"),
            rope_theta=md.number("rope.freq_base", default=10000.0),
            rope_dim=md.integer("rope.dimension_count", default=head_dim),
            rope_layout=_ROPE_LAYOUTS[arch],
            rope_scaling=scaling,
            rope_scale=scale,
            rope_orig_context=md.integer("rope.scaling.original_context_length", default=0),
            has_rope_freqs="rope_freqs.weight" in gguf.tensors,
            tied_embeddings="output.weight" not in gguf.tensors,
            has_qkv_bias="blk.0.attn_q.bias" in gguf.tensors,
            bos_id=_optional_int(gguf.metadata.get("tokenizer.ggml.bos_token_id")),
            eos_id=_optional_int(gguf.metadata.get("tokenizer.ggml.eos_token_id")),
        )

    def expected_tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """``{name: ne}`` (GGUF order, innermost first) of the tensors this model uses."""
        d, q, kv, ff = self.d_model, self.q_dim, self.kv_dim, self.d_ff
        shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (d, self.vocab_size)}
        for i in range(self.n_layers):
            p = f"blk.{i}."
            shapes[p + "attn_norm.weight"] = (d,)
            shapes[p + "attn_q.weight"] = (d, q)
            shapes[p + "attn_k.weight"] = (d, kv)
            shapes[p + "attn_v.weight"] = (d, kv)
            shapes[p + "attn_output.weight"] = (q, d)
            shapes[p + "ffn_norm.weight"] = (d,)
            shapes[p + "ffn_gate.weight"] = (d, ff)
            shapes[p + "ffn_up.weight"] = (d, ff)
            shapes[p + "ffn_down.weight"] = (ff, d)
            if self.has_qkv_bias:
                shapes[p + "attn_q.bias"] = (q,)
                shapes[p + "attn_k.bias"] = (kv,)
                shapes[p + "attn_v.bias"] = (kv,)
        shapes["output_norm.weight"] = (d,)
        if not self.tied_embeddings:
            shapes["output.weight"] = (d, self.vocab_size)
        if self.has_rope_freqs:
            shapes["rope_freqs.weight"] = (self.rope_dim // 2,)
        return shapes


class _Metadata:
    """Typed access to ``{arch}.*`` keys with errors that name the file and the key."""

    def __init__(self, gguf: GGUFFile, arch: str) -> None:
        self.gguf = gguf
        self.arch = arch

    def _get(self, key: str, default: Any) -> Any:
        full = f"{self.arch}.{key}"
        value = self.gguf.metadata.get(full, default)
        if value is None:
            raise GGUFError(
                f"{self.gguf.path}: required metadata {full!r} is missing; the file is incomplete."
            )
        return value

    def integer(self, key: str, default: int | None = None) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise GGUFError(
                f"{self.gguf.path}: metadata '{self.arch}.{key}' is {value!r}, expected an integer."
            )
        return value

    def number(self, key: str, default: float | None = None) -> float:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise GGUFError(
                f"{self.gguf.path}: metadata '{self.arch}.{key}' is {value!r}, expected a number."
            )
        return float(value)

    def text(self, key: str, default: str | None = None) -> str:
        return str(self._get(key, default))


def _rope_scaling(md: _Metadata) -> tuple[str, float]:
    scaling = md.text("rope.scaling.type", default="none")
    factor = md.number("rope.scaling.factor", default=0.0)
    if scaling == "none":
        # Older files carry a bare linear factor instead of the type/factor pair.
        legacy = md.number("rope.scale_linear", default=1.0)
        return ("linear", legacy) if legacy != 1.0 else ("none", 1.0)
    if scaling not in SUPPORTED_ROPE_SCALING:
        raise GGUFError(
            f"{md.gguf.path}: RoPE scaling {scaling!r} is not supported (supported: "
            f"{', '.join(SUPPORTED_ROPE_SCALING)}; llama3 scaling via the 'rope_freqs.weight' tensor)."
        )
    if factor <= 0:
        raise GGUFError(
            f"{md.gguf.path}: RoPE scaling 'linear' needs a positive '{md.arch}.rope.scaling.factor'."
        )
    return scaling, factor


def _vocab_size(gguf: GGUFFile, md: _Metadata) -> int:
    embd = gguf.tensors.get("token_embd.weight")
    if embd is not None and len(embd.ne) == 2:
        default: int | None = embd.ne[1]
    else:
        tokens = gguf.metadata.get("tokenizer.ggml.tokens")
        default = len(tokens) if isinstance(tokens, list) else None
    return md.integer("vocab_size", default=default)


def _optional_int(value: object) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None
