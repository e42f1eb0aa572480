"""Model hyperparameters read from GGUF metadata.

Public API
----------
``ModelConfig.from_gguf(gguf_file)``
    Reads ``general.architecture`` and the ``{arch}.*`` keys into a frozen :class:`ModelConfig`.
    Unsupported architectures and missing or inconsistent keys raise :class:`GGUFError`.
``ModelConfig.expected_tensor_shapes()``
    ``{name: ne}`` (GGUF order) of every tensor the model needs; optional ones are listed in
    :data:`OPTIONAL_TENSORS`.
``ARCHITECTURES``, ``SUPPORTED_ARCHITECTURES``, ``ArchSpec``, ``RopeLayout``.

Architectures
-------------
:data:`ARCHITECTURES` is the one table of the architectures cpullm runs: each row names the GGUF
``general.architecture`` value (which is also the prefix of its ``{arch}.*`` metadata keys) and sets the
options of the one transformer block (RoPE layout, per-head Q/K RMSNorm, ...). A new family is a row
here plus its reference test; anything a row does not set is refused with an error naming it.

RoPE layout (the subtle part)
-----------------------------
HF Llama checkpoints rotate the two *halves* of each head (``rotate_half``). llama.cpp's converter
(``convert_hf_to_gguf.py``, ``LlamaModel.permute``) permutes the rows of ``attn_q``/``attn_k`` for
``llama`` (and ``mistral``) so that, in the GGUF file, RoPE rotates *adjacent pairs*
``(x[2i], x[2i+1])`` by angle ``pos * theta^(-2i/rope_dim)`` — llama.cpp's ``LLAMA_ROPE_TYPE_NORM``
(here ``RopeLayout.NORMAL``). ``qwen2`` weights are stored unpermuted and llama.cpp applies
``LLAMA_ROPE_TYPE_NEOX``: pairs ``(x[i], x[i + rope_dim/2])`` (here ``RopeLayout.NEOX``). The frequency
index ``i`` is the same in both layouts; only which two lanes form a pair differs.

RoPE scaling: ``rope_scaling`` is ``"none"``, ``"linear"`` (positions divided by ``rope_scale``) or
``"yarn"`` (Qwen2.5/Qwen3 long context: see :class:`Yarn`).
Llama 3.x "llama3" scaling is not a metadata field in GGUF: the converter bakes it into an optional
``rope_freqs.weight`` tensor (``float32[rope_dim/2]``) whose entries divide each frequency; consumers
apply it when the tensor is present. LongRoPE (Phi-3 128k, Phi-3.5, Phi-4-mini) is the same with two
tensors, ``rope_factors_short.weight`` and ``rope_factors_long.weight``: the long ones when the context
in use exceeds the original context (llama.cpp's rule; see :meth:`ModelConfig.rope_factors_tensor`). The
metadata ``rope.scaling.attn_factor`` multiplies cos and sin (LongRoPE's sqrt(1 + ln s / ln n0)).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

from cpullm.model.gguf_file import MISSING, GGUFError, GGUFFile, Missing

SUPPORTED_ROPE_SCALING = ("none", "linear", "yarn")

# Tensors a model may lack: no `output.weight` means the output projection is tied to
# `token_embd.weight`; `rope_freqs.weight` carries llama3-style per-frequency factors.
OPTIONAL_TENSORS = ("output.weight", "rope_freqs.weight")
LONGROPE_TENSORS = ("rope_factors_short.weight", "rope_factors_long.weight")  # both or none

# Bounds on hyperparameters (the file is untrusted). Sizes are also checked against the tensors
# (model_file.check_tensor_shapes); these bounds catch what no tensor pins down and keep every value
# inside the native config's int32 and float32 fields.
_INT32_MAX = (1 << 31) - 1
_FLOAT32_MAX = 3.4028234663852886e38
MAX_HEAD_DIM = 1024
MAX_CONTEXT_LENGTH = 1 << 24
MAX_EXPERTS = 1024
# (low, high, what): a value must be finite, > low and <= high.
_RMS_EPS_RANGE = (0.0, 1.0, "the RMSNorm epsilon")
_ROPE_BASE_RANGE = (1.0, _FLOAT32_MAX, "the RoPE frequency base")
_ROPE_SCALE_RANGE = (1e-6, 1e6, "the RoPE linear scaling factor")
_SOFTCAP_RANGE = (0.0, _FLOAT32_MAX, "a soft-capping value")


class RopeLayout(str, enum.Enum):
    NORMAL = "normal"  # rotate adjacent pairs (x[2i], x[2i+1]); llama, mistral
    NEOX = "neox"  # rotate (x[i], x[i + rope_dim/2]); qwen2, qwen3


ACTIVATIONS = ("silu", "gelu_tanh")  # the FFN's gate activation: SwiGLU, or GeGLU with tanh-approximated GELU


@dataclass(frozen=True)
class Yarn:
    """YaRN RoPE scaling, as llama.cpp applies it (ext_factor 0 = off). Pair i's angle is the scaled angle
    (position / rope_scale) for i above ``corr_high``, the unscaled one below ``corr_low``, a linear blend
    between; cos and sin are multiplied by ``1 + 0.1 ln(rope_scale)`` (and the model's rope_attn_factor).
    The correction range holds the pairs whose wavelength fits between ``beta_fast`` and ``beta_slow`` turns
    of the original context."""

    ext_factor: float = 0.0
    corr_low: float = 0.0
    corr_high: float = 0.0

    @classmethod
    def for_model(
        cls, rope_dim: int, base: float, orig_context: int, beta_fast: float, beta_slow: float
    ) -> Yarn:
        def corr_dim(turns: float) -> float:  # the pair index whose wavelength is orig_context / turns
            return rope_dim * math.log(orig_context / (turns * 2 * math.pi)) / (2 * math.log(base))

        low = max(0.0, math.floor(corr_dim(beta_fast)))
        high = min(rope_dim - 1.0, math.ceil(corr_dim(beta_slow)))
        return cls(1.0, low, high)


@dataclass(frozen=True)
class ArchSpec:
    """The block options of one architecture (see the module docstring)."""

    rope_layout: RopeLayout
    # RMSNorm of each query and key head (weights `attn_q_norm`/`attn_k_norm`, [head_dim]) before RoPE.
    qk_norm: bool = False
    activation: str = "silu"  # one of ACTIVATIONS
    # RMSNorm of each sub-layer's output before its residual add (`post_attention_norm`, `post_ffw_norm`).
    post_norms: bool = False
    embed_scale_sqrt_d: bool = False  # token embeddings multiplied by sqrt(d_model)
    # Soft-capping, cap * tanh(x / cap), of the attention scores and of the final logits: the caps are the
    # metadata `{arch}.attn_logit_softcapping` / `final_logit_softcapping`, with these defaults when absent
    # (0 = off unless the file sets it); None = never soft-capped, whatever the file says (as llama.cpp).
    attn_softcap_default: float | None = None
    final_softcap_default: float | None = None
    # Sliding-window attention (window `{arch}.attention.sliding_window`) in layer i when
    # i % swa_pattern < swa_pattern - 1, as llama.cpp's swa pattern; 0 = no sliding window.
    swa_pattern: int = 0
    swa_default: int = 0  # the window when the file has none; 0 = then no layer has a sliding window
    # RoPE base of the sliding-window layers, which rotate without linear scaling; 0 = the model's base.
    local_rope_base: float = 0.0
    # Gemma's attention scale is 1/sqrt(d_model / n_heads) instead of 1/sqrt(head_dim) in the model whose
    # block count this is (the 27B: llama.cpp tells it apart by its layers; the GGUF has no
    # query_pre_attn_scalar).
    d_over_heads_scale_layers: int = 0
    # Mixture of experts (any row whose file sets `{arch}.expert_count`): each token's FFN is the sum of its
    # router's top `expert_used_count` experts, weighted by their softmax probabilities, renormalized over
    # the chosen ones when this is set (Mixtral, Qwen3-MoE; OLMoE's are not), as they are when not.
    moe_norm_topk: bool = True
    # One `attn_qkv` matrix ([q | k | v] rows) instead of attn_q/k/v, one `ffn_up` ([gate | up] rows, 2 d_ff)
    # instead of ffn_gate and ffn_up.
    fused_qkv: bool = False
    fused_gate_up: bool = False
    # Hugging Face folders: the `architectures` names of config.json that are this row (model/hf_folder.py),
    # and whether its RMSNorm weights are stored as w with the norm computing (1 + w) (Gemma), which the
    # loader folds in as llama.cpp's converter does.
    hf_names: tuple[str, ...] = ()
    hf_norm_plus_one: bool = False


# The architectures cpullm runs, by their GGUF name (also their metadata prefix). QKV biases are read
# from the file for any of them (qwen2 has them).
ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": ArchSpec(RopeLayout.NORMAL, hf_names=("LlamaForCausalLM", "MixtralForCausalLM")),
    "qwen2": ArchSpec(RopeLayout.NEOX, hf_names=("Qwen2ForCausalLM",)),
    "mistral": ArchSpec(RopeLayout.NORMAL, hf_names=("MistralForCausalLM",)),
    "qwen3": ArchSpec(RopeLayout.NEOX, qk_norm=True, hf_names=("Qwen3ForCausalLM",)),
    # Qwen3's block with an MoE feed-forward
    "qwen3moe": ArchSpec(RopeLayout.NEOX, qk_norm=True, hf_names=("Qwen3MoeForCausalLM",)),
    # Qwen1.5/2-MoE: QKV biases, unrenormalized routes plus a shared expert behind a sigmoid gate
    "qwen2moe": ArchSpec(RopeLayout.NEOX, moe_norm_topk=False, hf_names=("Qwen2MoeForCausalLM",)),
    # Gemma 2: its converter stores RMSNorm weights with Gemma's (1 + w) already folded in (plain RMSNorm
    # here); even layers are local (sliding window), odd ones global.
    "gemma2": ArchSpec(
        RopeLayout.NEOX,
        hf_names=("Gemma2ForCausalLM",),
        hf_norm_plus_one=True,
        activation="gelu_tanh",
        post_norms=True,
        embed_scale_sqrt_d=True,
        attn_softcap_default=50.0,
        final_softcap_default=30.0,
        swa_pattern=2,
        swa_default=4096,
        d_over_heads_scale_layers=46,
    ),
    # Gemma 3 (text): Gemma 2's block with per-head Q/K norms instead of score soft-capping; five local
    # (sliding-window, RoPE base 10000, unscaled) layers to one global (the file's base and scaling).
    "gemma3": ArchSpec(
        RopeLayout.NEOX,
        hf_names=("Gemma3ForCausalLM",),  # the text-only checkpoints (1B; the rest are multimodal)
        hf_norm_plus_one=True,
        qk_norm=True,
        activation="gelu_tanh",
        post_norms=True,
        embed_scale_sqrt_d=True,
        final_softcap_default=0.0,
        swa_pattern=6,
        local_rope_base=10000.0,
        d_over_heads_scale_layers=62,
    ),
    # Phi-3: llama.cpp ignores its sliding_window metadata (Phi SWA disabled there), and so does cpullm.
    # Its 128k models (and Phi-3.5, Phi-4-mini) carry LongRoPE factors: see rope_factors_tensor.
    "phi3": ArchSpec(RopeLayout.NEOX, fused_qkv=True, fused_gate_up=True, hf_names=("Phi3ForCausalLM",)),
}
# Tensors a file of a supported architecture may hold that cpullm cannot use yet: refused by name.
UNSUPPORTED_TENSORS = {
    "blk.0.attn_qkv.bias": "a fused Q/K/V bias",
    "blk.0.ffn_gate.0.weight": "one expert's weights as its own tensor (an old Mixtral conversion: convert "
    "it again with a current llama.cpp, which stacks the experts)",
}
SUPPORTED_ARCHITECTURES = tuple(ARCHITECTURES)


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
    yarn: Yarn  # YaRN's parameters (Yarn() when rope_scaling is not "yarn")
    has_rope_freqs: bool  # llama3-style frequency factors in tensor `rope_freqs.weight`
    longrope: bool  # LongRoPE: short and long frequency factors (LONGROPE_TENSORS)
    rope_attn_factor: float  # cos and sin are multiplied by it (LongRoPE's magnitude correction); usually 1
    tied_embeddings: bool  # no `output.weight`: logits = token_embd @ h
    has_qkv_bias: bool
    qk_norm: bool  # per-head RMSNorm of queries and keys before RoPE (qwen3)
    activation: str  # one of ACTIVATIONS
    post_norms: bool  # RMSNorm of the attention and FFN outputs before each residual add (gemma2)
    embed_scale: float  # token embeddings are multiplied by it (1.0, or sqrt(d_model) for gemma2)
    attn_scale: float  # attention scores are q·k times it (usually 1 / sqrt(head_dim))
    attn_softcap: float  # scores become cap * tanh(score / cap) before the softmax; 0 = not
    final_softcap: float  # the same for the output logits; 0 = not
    sliding_window: int  # keys a query of a sliding-window layer sees, its own included; 0 = no such layers
    swa_pattern: int  # layer i has the sliding window when i % swa_pattern < swa_pattern - 1 (0: none)
    rope_theta_local: float  # RoPE base of sliding-window layers, unscaled (gemma3); 0 = rope_theta
    fused_qkv: bool  # attn_qkv instead of attn_q/k/v (phi3)
    fused_gate_up: bool  # ffn_up holds [gate | up], no ffn_gate (phi3)
    n_experts: int  # experts of each layer's mixture-of-experts FFN; 0 = a dense FFN
    n_experts_used: int  # experts each token is routed to (top-k); 0 when dense
    d_ff_expert: int  # one expert's FFN width; 0 when dense
    moe_norm_topk: bool  # the chosen experts' weights are renormalized to sum to 1
    # A shared expert every token also runs (`ffn_{gate,up,down}_shexp`), this wide; 0 = none. Its output is
    # scaled by sigmoid(x · ffn_gate_inp_shexp) when the file has that gate (Qwen2-MoE).
    d_ff_shared: int
    shared_expert_gate: bool
    bos_id: int | None
    eos_id: int | None

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    def rope_factors_tensor(self, context: int) -> str | None:
        """The tensor of RoPE frequency factors a model run with ``context`` positions uses, if any:
        LongRoPE's long factors only past the original context, as llama.cpp chooses."""
        if self.longrope:
            return LONGROPE_TENSORS[1] if context > self.rope_orig_context else LONGROPE_TENSORS[0]
        return "rope_freqs.weight" if self.has_rope_freqs else None

    def layer_window(self, layer: int) -> int:
        """The sliding window of ``layer`` (0: the layer attends to every earlier position)."""
        local = self.swa_pattern > 0 and layer % self.swa_pattern < self.swa_pattern - 1
        return self.sliding_window if local else 0

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> ModelConfig:
        """Build the config of ``gguf``; raise GGUFError for an unsupported or inconsistent model.

        Every value is checked before it sizes anything (see the bounds above): the block count must
        match the ``blk.N`` tensors present, the vocabulary the token list and the embedding rows.
        """
        arch = gguf.architecture
        if arch not in SUPPORTED_ARCHITECTURES:
            raise GGUFError(
                f"{gguf.path}: architecture {arch!r} is not supported (supported: "
                f"{', '.join(SUPPORTED_ARCHITECTURES)})."
            )
        spec = ARCHITECTURES[arch]
        for name, what in UNSUPPORTED_TENSORS.items():
            if name in gguf.tensors:
                raise GGUFError(
                    f"{gguf.path}: tensor {name!r} holds {what}, which cpullm does not support yet."
                )
        md = _Metadata(gguf, arch)
        n_layers = md.count("block_count")
        _check_block_count(md, n_layers)
        d_model = md.count("embedding_length")
        n_heads = md.count("attention.head_count")
        n_kv_heads = md.count("attention.head_count_kv", default=n_heads)
        if n_heads % n_kv_heads:
            raise md.error(
                "attention.head_count",
                n_heads,
                f"a multiple of '{arch}.attention.head_count_kv' ({n_kv_heads}) so that query heads share "
                "key/value heads evenly",
            )
        head_dim = _head_dim(md, d_model, n_heads)
        rope_dim = md.count("rope.dimension_count", default=head_dim, maximum=head_dim)
        if rope_dim % 2:
            raise md.error("rope.dimension_count", rope_dim, "an even number (RoPE rotates pairs of lanes)")
        context_length = md.count("context_length", maximum=MAX_CONTEXT_LENGTH)
        scaling, scale = _rope_scaling(md)
        rope_theta = md.number("rope.freq_base", *_ROPE_BASE_RANGE, default=10000.0)
        orig_context = md.count(
            "rope.scaling.original_context_length", default=0, minimum=0, maximum=MAX_CONTEXT_LENGTH
        )
        yarn = Yarn()
        if scaling == "yarn":
            if orig_context == 0:
                raise md.error(
                    "rope.scaling.original_context_length", "absent or 0", "the context before YaRN scaling"
                )
            yarn = Yarn.for_model(
                rope_dim,
                rope_theta,
                orig_context,
                md.number("rope.scaling.yarn_beta_fast", *_ROPE_SCALE_RANGE, default=32.0),
                md.number("rope.scaling.yarn_beta_slow", *_ROPE_SCALE_RANGE, default=1.0),
            )
        vocab_size = _vocab_size(md)
        attn_cap = _softcap(md, "attn_logit_softcapping", spec.attn_softcap_default)
        final_cap = _softcap(md, "final_logit_softcapping", spec.final_softcap_default)
        window = 0
        if spec.swa_pattern and (spec.swa_default or f"{arch}.attention.sliding_window" in gguf.metadata):
            window = md.count(
                "attention.sliding_window", default=spec.swa_default, maximum=MAX_CONTEXT_LENGTH
            )
        return cls(
            arch=arch,
            n_layers=n_layers,
            d_model=d_model,
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            head_dim=head_dim,
            d_ff=md.count("feed_forward_length"),
            **_experts(md, spec),
            vocab_size=vocab_size,
            context_length=context_length,
            rms_eps=md.number("attention.layer_norm_rms_epsilon", *_RMS_EPS_RANGE),
            rope_theta=rope_theta,
            rope_dim=rope_dim,
            rope_layout=spec.rope_layout,
            rope_scaling=scaling,
            rope_scale=scale,
            rope_orig_context=orig_context,
            yarn=yarn,
            has_rope_freqs="rope_freqs.weight" in gguf.tensors,
            longrope=_longrope(md),
            rope_attn_factor=md.number("rope.scaling.attn_factor", *_ROPE_SCALE_RANGE, default=1.0),
            tied_embeddings="output.weight" not in gguf.tensors,
            has_qkv_bias="blk.0.attn_q.bias" in gguf.tensors,
            qk_norm=spec.qk_norm,
            activation=spec.activation,
            post_norms=spec.post_norms,
            embed_scale=math.sqrt(d_model) if spec.embed_scale_sqrt_d else 1.0,
            attn_scale=(
                1.0 / math.sqrt(d_model / n_heads)
                if n_layers == spec.d_over_heads_scale_layers
                else 1.0 / math.sqrt(head_dim)
            ),
            attn_softcap=attn_cap,
            final_softcap=final_cap,
            sliding_window=window,
            swa_pattern=spec.swa_pattern if window else 0,
            rope_theta_local=spec.local_rope_base if window else 0.0,
            fused_qkv=spec.fused_qkv,
            fused_gate_up=spec.fused_gate_up,
            bos_id=gguf.get_token_id("bos", vocab_size),
            eos_id=gguf.get_token_id("eos", vocab_size),
        )

    def expected_tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """``{name: ne}`` (GGUF order, innermost first) of the tensors this model uses."""
        d, q, kv, ff = self.d_model, self.q_dim, self.kv_dim, self.d_ff
        shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (d, self.vocab_size)}
        for i in range(self.n_layers):
            p = f"blk.{i}."
            shapes[p + "attn_norm.weight"] = (d,)
            if self.fused_qkv:
                shapes[p + "attn_qkv.weight"] = (d, q + 2 * kv)
            else:
                shapes[p + "attn_q.weight"] = (d, q)
                shapes[p + "attn_k.weight"] = (d, kv)
                shapes[p + "attn_v.weight"] = (d, kv)
            shapes[p + "attn_output.weight"] = (q, d)
            shapes[p + "ffn_norm.weight"] = (d,)
            if self.n_experts:  # stacked experts: ne = (in, out, expert)
                e, fe = self.n_experts, self.d_ff_expert
                shapes[p + "ffn_gate_inp.weight"] = (d, e)
                shapes[p + "ffn_gate_exps.weight"] = (d, fe, e)
                shapes[p + "ffn_up_exps.weight"] = (d, fe, e)
                shapes[p + "ffn_down_exps.weight"] = (fe, d, e)
                if self.d_ff_shared:
                    fs = self.d_ff_shared
                    shapes[p + "ffn_gate_shexp.weight"] = (d, fs)
                    shapes[p + "ffn_up_shexp.weight"] = (d, fs)
                    shapes[p + "ffn_down_shexp.weight"] = (fs, d)
                if self.shared_expert_gate:
                    shapes[p + "ffn_gate_inp_shexp.weight"] = (d,)
            elif self.fused_gate_up:
                shapes[p + "ffn_up.weight"] = (d, 2 * ff)
            else:
                shapes[p + "ffn_gate.weight"] = (d, ff)
                shapes[p + "ffn_up.weight"] = (d, ff)
            if not self.n_experts:
                shapes[p + "ffn_down.weight"] = (ff, d)
            if self.has_qkv_bias:
                shapes[p + "attn_q.bias"] = (q,)
                shapes[p + "attn_k.bias"] = (kv,)
                shapes[p + "attn_v.bias"] = (kv,)
            if self.qk_norm:
                shapes[p + "attn_q_norm.weight"] = (self.head_dim,)
                shapes[p + "attn_k_norm.weight"] = (self.head_dim,)
            if self.post_norms:
                shapes[p + "post_attention_norm.weight"] = (d,)
                shapes[p + "post_ffw_norm.weight"] = (d,)
        shapes["output_norm.weight"] = (d,)
        if not self.tied_embeddings:
            shapes["output.weight"] = (d, self.vocab_size)
        if self.has_rope_freqs:
            shapes["rope_freqs.weight"] = (self.rope_dim // 2,)
        if self.longrope:
            for name in LONGROPE_TENSORS:
                shapes[name] = (self.rope_dim // 2,)
        return shapes


class _Metadata:
    """Range-checked access to ``{arch}.*`` keys; errors name the file, the key and what is expected."""

    def __init__(self, gguf: GGUFFile, arch: str) -> None:
        self.gguf = gguf
        self.arch = arch

    def error(self, key: str, value: object, expected: str) -> GGUFError:
        return GGUFError(f"{self.gguf.path}: metadata '{self.arch}.{key}' is {value!r}; expected {expected}.")

    def count(
        self, key: str, default: int | Missing = MISSING, minimum: int = 1, maximum: int = _INT32_MAX
    ) -> int:
        """An integer from ``minimum`` to ``maximum`` (a size, a count: it must fit the native int32)."""
        value = self.gguf.get_int(f"{self.arch}.{key}", default)
        if not minimum <= value <= maximum:
            raise self.error(key, value, f"an integer from {minimum} to {maximum}")
        return value

    def number(
        self, key: str, low: float, high: float, what: str, default: float | Missing = MISSING
    ) -> float:
        """A finite number in ``(low, high]`` (``what`` says what it is, for the error)."""
        value = self.gguf.get_float(f"{self.arch}.{key}", default)
        if not (math.isfinite(value) and low < value <= high):
            raise self.error(key, value, f"{what}: a finite number greater than {low:g} and at most {high:g}")
        return value

    def text(self, key: str, default: str | Missing = MISSING) -> str:
        return self.gguf.get_str(f"{self.arch}.{key}", default)


def _check_block_count(md: _Metadata, n_layers: int) -> None:
    """``block_count`` must match the ``blk.N.*`` tensors present (it sizes the list of expected tensors)."""
    top = -1
    for name in md.gguf.tensors:
        index = name[4:].partition(".")[0] if name.startswith("blk.") else ""
        if 0 < len(index) <= 9 and index.isascii() and index.isdigit():
            top = max(top, int(index))
    if n_layers != top + 1:
        present = f"blocks blk.0 to blk.{top}" if top >= 0 else "no blk.N tensors"
        raise md.error(
            "block_count", n_layers, f"the number of transformer blocks in the file, which has {present}"
        )


def _head_dim(md: _Metadata, d_model: int, n_heads: int) -> int:
    if f"{md.arch}.attention.key_length" in md.gguf.metadata:
        head_dim = md.count("attention.key_length", maximum=MAX_HEAD_DIM)
    elif d_model % n_heads or not 1 <= d_model // n_heads <= MAX_HEAD_DIM:
        raise md.error(
            "embedding_length",
            d_model,
            f"a multiple of '{md.arch}.attention.head_count' ({n_heads}) giving a head size from 1 to "
            f"{MAX_HEAD_DIM}, since the file has no '{md.arch}.attention.key_length'",
        )
    else:
        head_dim = d_model // n_heads
    value_length = md.count("attention.value_length", default=head_dim, maximum=MAX_HEAD_DIM)
    if value_length != head_dim:
        raise md.error(
            "attention.value_length", value_length, f"the key length {head_dim} (cpullm needs both equal)"
        )
    return head_dim


def _experts(md: _Metadata, spec: ArchSpec) -> dict[str, Any]:
    """The mixture-of-experts fields of ModelConfig (all 0 for a dense model)."""
    n_experts = md.count("expert_count", default=0, minimum=0, maximum=MAX_EXPERTS)
    shared = "blk.0.ffn_up_shexp.weight" in md.gguf.tensors
    if n_experts == 0:
        return {
            "n_experts": 0,
            "n_experts_used": 0,
            "d_ff_expert": 0,
            "moe_norm_topk": False,
            "d_ff_shared": 0,
            "shared_expert_gate": False,
        }
    if spec.fused_gate_up:
        raise md.error("expert_count", n_experts, "0: cpullm runs no mixture of experts in this architecture")
    return {
        "n_experts": n_experts,
        "n_experts_used": md.count("expert_used_count", maximum=n_experts),
        # Mixtral's converter writes no separate expert width: its experts are feed_forward_length wide.
        "d_ff_expert": md.count("expert_feed_forward_length", default=md.count("feed_forward_length")),
        "moe_norm_topk": spec.moe_norm_topk,
        "d_ff_shared": md.count("expert_shared_feed_forward_length") if shared else 0,
        "shared_expert_gate": shared and "blk.0.ffn_gate_inp_shexp.weight" in md.gguf.tensors,
    }


def _longrope(md: _Metadata) -> bool:
    """Whether the file has LongRoPE's two factor tensors (one without the other is refused), which need the
    original context to choose between them."""
    present = [name in md.gguf.tensors for name in LONGROPE_TENSORS]
    if any(present) and not all(present):
        have, lack = LONGROPE_TENSORS if present[0] else LONGROPE_TENSORS[::-1]
        raise GGUFError(f"{md.gguf.path}: tensor {have!r} is present without {lack!r}; LongRoPE needs both.")
    if all(present) and md.count("rope.scaling.original_context_length", default=0, minimum=0) == 0:
        raise md.error(
            "rope.scaling.original_context_length",
            "absent or 0",
            "the context LongRoPE's short factors cover",
        )
    return all(present)


def _softcap(md: _Metadata, key: str, default: float | None) -> float:
    """The soft-cap ``key`` for an architecture whose default is ``default`` (see ArchSpec); 0 = none."""
    if default is None:
        return 0.0
    if default == 0.0 and f"{md.arch}.{key}" not in md.gguf.metadata:
        return 0.0
    return md.number(key, *_SOFTCAP_RANGE, default=default)


def _rope_scaling(md: _Metadata) -> tuple[str, float]:
    scaling = md.text("rope.scaling.type", default="none")
    if scaling == "none":
        # Older files carry a bare linear factor instead of the type/factor pair.
        legacy = md.number("rope.scale_linear", *_ROPE_SCALE_RANGE, default=1.0)
        return ("linear", legacy) if legacy != 1.0 else ("none", 1.0)
    if scaling not in SUPPORTED_ROPE_SCALING:
        raise GGUFError(
            f"{md.gguf.path}: RoPE scaling {scaling!r} is not supported (supported: "
            f"{', '.join(SUPPORTED_ROPE_SCALING)}; llama3 scaling via the 'rope_freqs.weight' tensor)."
        )
    return scaling, md.number("rope.scaling.factor", *_ROPE_SCALE_RANGE)


def _vocab_size(md: _Metadata) -> int:
    """The vocabulary size: the embedding's rows, which must match the token list (and the key, if any)."""
    gguf = md.gguf
    embd = gguf.tensors.get("token_embd.weight")
    rows = embd.ne[1] if embd is not None and len(embd.ne) == 2 else None
    tokens = gguf.get_strings("tokenizer.ggml.tokens", None)
    fallback = rows if rows is not None else len(tokens) if tokens is not None else MISSING
    vocab = md.count("vocab_size", default=fallback)
    if rows is not None and vocab != rows:
        raise md.error("vocab_size", vocab, f"the {rows} rows of 'token_embd.weight' (one per token)")
    if tokens is not None and len(tokens) != vocab:
        raise GGUFError(
            f"{gguf.path}: the vocabulary 'tokenizer.ggml.tokens' has {len(tokens)} tokens, but the model's "
            f"embedding has {vocab} rows (one per token); the file is inconsistent."
        )
    return vocab
