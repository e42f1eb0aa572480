"""Open a Hugging Face model folder (config.json + *.safetensors) as the GGUF model it converts to.

Public API
----------
``is_model_folder(path)``
    True for a directory holding ``config.json``.
``folder_as_gguf(path, quantization=None) -> GGUFFile``
    An in-memory :class:`GGUFFile` with the metadata and tensors llama.cpp's converter
    (``convert_hf_to_gguf.py``) would write for the folder, so that everything downstream (config, shape
    checks, the native model, the chat template) is the GGUF path. Weights are memory-mapped
    (:mod:`cpullm.model.safetensors_file`) and converted one tensor at a time: 2-D matrices to
    ``quantization`` (see :data:`QUANTIZATIONS`; default :data:`DEFAULT_QUANTIZATION`) with
    ``gguf.quants.quantize``; norms and biases to F32.
``read_text``, ``read_json(path, what, max_bytes)``, ``ModelFolderError`` (a :class:`GGUFError`).

The mapping follows llama.cpp's converter: config.json's ``architectures`` name picks the row of
:data:`cpullm.model.config.ARCHITECTURES` (its ``hf_names``); HF hyperparameters become ``{arch}.*``
keys; HF tensor names become GGUF names; Llama and Mistral Q/K rows are permuted from HF's rotate-half
RoPE to the interleaved pairs of ``RopeLayout.NORMAL`` (the same permutation as the converter's
``LlamaModel.permute``); Gemma's RMSNorm weights get their ``1 +`` folded in; Llama 3 ``rope_scaling``
becomes the ``rope_freqs.weight`` factors. Anything the folder holds that cpullm cannot run (another
architecture, a RoPE scaling type, sliding-window options, pre-quantized weights, a tensor with no GGUF
counterpart) is an error naming it.

The folder is untrusted: JSON files are size-bounded, shard names in ``model.safetensors.index.json``
must be plain file names in the folder (no path traversal), every safetensors header is validated
(:mod:`cpullm.model.safetensors_file`), and every tensor's shape is checked against config.json before
any weight is read.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, quants
from gguf import GGMLQuantizationType as QT

from cpullm.model.config import ARCHITECTURES, ArchSpec, ModelConfig, RopeLayout
from cpullm.model.gguf_file import GGUFError, GGUFFile, GGUFTensor
from cpullm.model.quantizations import DEFAULT_QUANTIZATION, QUANTIZATION_TYPES
from cpullm.model.safetensors_file import SafeTensor, SafetensorsError, SafetensorsFile

CONFIG_FILE = "config.json"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
MAX_CONFIG_BYTES = 16 << 20  # config.json, the index, tokenizer_config.json (real ones are kilobytes)
MAX_SHARDS = 4096
_SHARD_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}\.safetensors")
_LAYER = re.compile(r"model\.layers\.(\d{1,9})\.(.+)")

# --quantization: the type of the 2-D weight matrices after loading (see cpullm.model.quantizations).
QUANTIZATIONS: dict[str, QT | None] = {
    name: QT[t] if t is not None else None for name, t in QUANTIZATION_TYPES.items()
}
_STORED_TYPES = {"F32": QT.F32, "F16": QT.F16, "BF16": QT.BF16}
# The activation names config.json uses for each of ARCHITECTURES' activations.
_HF_ACTIVATIONS = {"silu": ("silu", "swish"), "gelu_tanh": ("gelu_pytorch_tanh", "gelu_tanh")}
_IGNORED_SUFFIX = ".rotary_emb.inv_freq"  # a buffer some older checkpoints saved; recomputed from config


class ModelFolderError(GGUFError):
    """A Hugging Face model folder cannot be used; the message names the file and what is wrong."""


def is_model_folder(path: str | os.PathLike[str]) -> bool:
    return Path(path).is_dir() and (Path(path) / CONFIG_FILE).is_file()


def read_text(path: Path, what: str, max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """The UTF-8 text of ``path``; ModelFolderError if it is missing, unreadable or over ``max_bytes``."""
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise ModelFolderError(f"{path}: no such file; the model folder needs its {what}.") from None
    except OSError as e:
        raise ModelFolderError(f"{path}: cannot be read ({e.strerror}).") from None
    if len(raw) > max_bytes:
        raise ModelFolderError(f"{path}: the {what} is over {max_bytes} bytes; it is not a real one.")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ModelFolderError(f"{path}: the {what} is not UTF-8 text ({e}).") from None


def read_json(
    path: Path, what: str, max_bytes: int = MAX_CONFIG_BYTES, text: str | None = None
) -> dict[str, Any]:
    """The JSON object in ``path`` (or in ``text``, read from it); ModelFolderError if it is missing, too
    big or not an object."""
    try:
        value = json.loads(read_text(path, what, max_bytes) if text is None else text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ModelFolderError(f"{path}: the {what} is not valid JSON ({e}).") from None
    if not isinstance(value, dict):
        raise ModelFolderError(f"{path}: the {what} must be a JSON object.")
    return value


def folder_as_gguf(path: str | os.PathLike[str], quantization: str | None = None) -> GGUFFile:
    """The folder as the GGUF model llama.cpp would convert it to; see the module docstring."""
    folder = Path(path)
    qname = DEFAULT_QUANTIZATION if quantization is None else quantization.lower()
    if qname not in QUANTIZATIONS:
        raise ModelFolderError(
            f"quantization {quantization!r} is not supported for Hugging Face folders (supported: "
            f"{', '.join(QUANTIZATIONS)})."
        )
    hf = _HFConfig(folder / CONFIG_FILE, read_json(folder / CONFIG_FILE, "config.json"))
    arch = hf.architecture()
    spec = ARCHITECTURES[arch]
    metadata = hf.metadata(arch, spec)
    metadata.update(_chat_template_metadata(folder))
    stored = _stack_experts(_read_shards(folder), hf)
    names = _gguf_names(stored, spec, hf)
    # Check every name and shape against config.json before reading any weight.
    placeholders = {g: _placeholder(g, stored[h]) for g, h in names.items()}
    config = _checked_config(GGUFFile(folder, 3, metadata, placeholders, 32, 0), spec, hf)
    tensors = {}
    factors = hf.rope_freqs(config)
    extra = {"rope_freqs.weight": factors} if factors is not None else hf.longrope_factors(config)
    if extra:  # the config again, now with the factor tensors (they set has_rope_freqs or longrope)
        for name, values in extra.items():
            tensors[name] = placeholders[name] = _encoded(name, values, QT.F32)
        config = _checked_config(GGUFFile(folder, 3, metadata, placeholders, 32, 0), spec, hf)
    for gname, hname in names.items():
        tensors[gname] = _convert(gname, stored[hname], config, spec, QUANTIZATIONS[qname])
    return GGUFFile(folder, 3, metadata, tensors, 32, 0)


# (GGUF key under {arch}., config.json key, kind, required)
_CONFIG_KEYS: tuple[tuple[str, str, str, bool], ...] = (
    ("block_count", "num_hidden_layers", "int", True),
    ("embedding_length", "hidden_size", "int", True),
    ("feed_forward_length", "intermediate_size", "int", True),
    ("attention.head_count", "num_attention_heads", "int", True),
    ("attention.head_count_kv", "num_key_value_heads", "int", False),
    ("attention.key_length", "head_dim", "int", False),
    ("attention.value_length", "head_dim", "int", False),
    ("context_length", "max_position_embeddings", "int", True),
    ("attention.layer_norm_rms_epsilon", "rms_norm_eps", "number", True),
    ("rope.freq_base", "rope_theta", "number", False),
    ("vocab_size", "vocab_size", "int", False),
)
_SWA_KEYS = (("attention.sliding_window", "sliding_window", "int", True),)
# Mixture of experts (Qwen2/3-MoE, Mixtral: the first present of each config key's names)
_MOE_KEYS = (
    ("expert_count", ("num_experts", "num_local_experts")),
    ("expert_used_count", ("num_experts_per_tok",)),
    ("expert_feed_forward_length", ("moe_intermediate_size",)),
    ("expert_shared_feed_forward_length", ("shared_expert_intermediate_size",)),
)
# One expert's tensors under model.layers.N: {HF suffix pattern (expert index, part): stacked GGUF-side
# suffix}; the stack is a made-up HF name, model.layers.N.<prefix>.experts.<part>, that _name_maps maps.
_EXPERT = re.compile(
    r"(mlp|block_sparse_moe)\.experts\.(\d{1,6})\.(gate_proj|up_proj|down_proj|w1|w2|w3)\.weight"
)
_EXPERT_PARTS = {
    "gate_proj": "gate",
    "w1": "gate",
    "up_proj": "up",
    "w3": "up",
    "down_proj": "down",
    "w2": "down",
}
_SOFTCAP_KEYS = ("attn_logit_softcapping", "final_logit_softcapping")  # the same name in both


class _HFConfig:
    """Typed access to config.json; errors name the file and the key."""

    def __init__(self, path: Path, values: dict[str, Any]) -> None:
        self.path = path
        self.values = values

    def error(self, key: str, expected: str) -> ModelFolderError:
        value = repr(self.values.get(key))
        value = value if len(value) <= 80 else value[:77] + "..."
        return ModelFolderError(f"{self.path}: '{key}' is {value}; expected {expected}.")

    def get(self, key: str, kind: str, required: bool = True) -> Any:
        """``kind``: "int", "number", "bool" or "str"; None when optional and absent or null."""
        value = self.values.get(key)
        if value is None:
            if required:
                raise ModelFolderError(f"{self.path}: required key '{key}' is missing.")
            return None
        ok = {
            "int": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, (int, float)) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "str": isinstance(value, str),
        }[kind]
        if not ok:
            raise self.error(
                key, {"int": "an integer", "number": "a number", "bool": "true or false"}.get(kind, kind)
            )
        return value

    def architecture(self) -> str:
        names = self.values.get("architectures")
        if not (isinstance(names, list) and len(names) == 1 and isinstance(names[0], str)):
            raise self.error("architectures", 'a list of one architecture name, e.g. ["LlamaForCausalLM"]')
        for arch, spec in ARCHITECTURES.items():
            if names[0] in spec.hf_names:
                return arch
        supported = ", ".join(n for spec in ARCHITECTURES.values() for n in spec.hf_names)
        raise ModelFolderError(
            f"{self.path}: architecture {names[0]!r} is not supported (supported: {supported})."
        )

    def metadata(self, arch: str, spec: ArchSpec) -> dict[str, Any]:
        """The ``{arch}.*`` GGUF metadata of this config (ranges are checked by ModelConfig)."""
        self._refuse_options(spec)
        md: dict[str, Any] = {"general.architecture": arch}
        keys = _CONFIG_KEYS
        keys += _SWA_KEYS if spec.swa_pattern else ()
        # Soft-caps the architecture reads: required in config.json where the GGUF has a non-zero default.
        defaults = (spec.attn_softcap_default, spec.final_softcap_default)
        keys += tuple(
            (k, k, "number", bool(d)) for k, d in zip(_SOFTCAP_KEYS, defaults, strict=True) if d is not None
        )
        for gguf_key, key, kind, required in keys:
            value = self.get(key, kind, required)
            if value is not None:
                md[f"{arch}.{gguf_key}"] = _as_float32(value) if kind == "number" else value
        for gguf_key, names in _MOE_KEYS:
            value = next((self.get(k, "int") for k in names if self.values.get(k) is not None), None)
            if value is not None:
                md[f"{arch}.{gguf_key}"] = value
        scaling = self._rope_scaling()
        if scaling is not None and scaling[0] in ("linear", "yarn"):
            md[f"{arch}.rope.scaling.type"] = scaling[0]
            md[f"{arch}.rope.scaling.factor"] = _as_float32(scaling[1]["factor"])
        if scaling is not None and scaling[0] == "yarn":
            md[f"{arch}.rope.scaling.original_context_length"] = scaling[1][
                "original_max_position_embeddings"
            ]
            for key in ("beta_fast", "beta_slow"):
                if scaling[1].get(key) is not None:
                    md[f"{arch}.rope.scaling.yarn_{key}"] = _as_float32(self._number_in(scaling[1], key))
        if scaling is not None and scaling[0] == "longrope":
            # Phi-3: the original context sits beside rope_scaling; cos/sin get sqrt(1 + ln s / ln n0), s the
            # extension (transformers' Phi3 LongRoPE and llama.cpp's converter).
            orig = self.get("original_max_position_embeddings", "int")
            longest = self.get("max_position_embeddings", "int")
            if not 0 < orig <= longest:
                raise self.error(
                    "original_max_position_embeddings", f"from 1 to max_position_embeddings ({longest})"
                )
            scale = longest / orig
            md[f"{arch}.rope.scaling.original_context_length"] = orig
            md[f"{arch}.rope.scaling.attn_factor"] = _as_float32(
                math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1 and orig > 1 else 1.0
            )
        for name in ("bos", "eos"):
            token = self.values.get(f"{name}_token_id")
            token = token[0] if isinstance(token, list) and token else token
            if isinstance(token, int) and not isinstance(token, bool):
                md[f"tokenizer.ggml.{name}_token_id"] = token
        return md

    def _refuse_options(self, spec: ArchSpec) -> None:
        if self.values.get("quantization_config") is not None:
            method = self.values["quantization_config"]
            method = method.get("quant_method") if isinstance(method, dict) else None
            raise ModelFolderError(
                f"{self.path}: the weights are pre-quantized ('quantization_config', method {method!r}), "
                "which cpullm does not read. Use the model's 16-bit checkpoint; cpullm quantizes it at load "
                "(--quantization)."
            )
        act_key = "hidden_activation" if "hidden_activation" in self.values else "hidden_act"
        act = self.get(act_key, "str", required=False)
        if act is not None and act not in _HF_ACTIVATIONS[spec.activation]:
            raise self.error(
                act_key, f"{' or '.join(map(repr, _HF_ACTIVATIONS[spec.activation]))} for this architecture"
            )
        factor = self.get("partial_rotary_factor", "number", required=False)
        if factor is not None and factor != 1:
            raise self.error(
                "partial_rotary_factor", "1 (RoPE over whole heads; partial RoPE is not supported)"
            )
        for key in ("use_sliding_window", "mlp_bias"):
            if self.get(key, "bool", required=False):
                raise self.error(key, "false (cpullm does not support this option for this architecture)")
        # Experts: every layer sparse, with the routes' normalisation of the architecture
        norm = self.get("norm_topk_prob", "bool", required=False)
        if norm is not None and norm != spec.moe_norm_topk:
            raise self.error("norm_topk_prob", f"{str(spec.moe_norm_topk).lower()} for this architecture")
        step = self.get("decoder_sparse_step", "int", required=False)
        if step not in (None, 1):
            raise self.error("decoder_sparse_step", "1 (cpullm runs models whose every layer has experts)")
        if self.values.get("mlp_only_layers"):
            raise self.error("mlp_only_layers", "empty (cpullm runs models whose every layer has experts)")

    def _rope_scaling(self) -> tuple[str, dict[str, Any]] | None:
        scaling = self.values.get("rope_scaling")
        if scaling is None:
            return None
        if not isinstance(scaling, dict):
            raise self.error("rope_scaling", "null or an object")
        kind = scaling.get("rope_type", scaling.get("type"))
        if kind == "default":
            return None
        kind = "longrope" if kind == "su" else kind  # Phi-3's first name for it
        if kind not in ("linear", "llama3", "yarn", "longrope"):
            raise self.error(
                "rope_scaling",
                "null, or of type 'linear', 'llama3', 'yarn' or 'longrope' (other RoPE scaling types are not "
                "supported)",
            )
        if kind == "longrope":
            return kind, scaling  # its factor lists are checked where they become tensors
        keys = {"linear": ("factor",), "yarn": ("factor",)}.get(
            kind, ("factor", "low_freq_factor", "high_freq_factor")
        )
        if kind == "yarn" and scaling.get("attention_factor") is not None:
            raise self.error(
                "rope_scaling", "no 'attention_factor' (YaRN's default, 1 + 0.1 ln factor, is used)"
            )
        for key in keys:
            value = scaling.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e6:
                raise self.error("rope_scaling", f"'{key}' to be a positive number")
        if kind in ("llama3", "yarn"):
            orig = scaling.get("original_max_position_embeddings")
            if isinstance(orig, bool) or not isinstance(orig, int) or not 0 < orig < 1 << 24:
                raise self.error(
                    "rope_scaling", "'original_max_position_embeddings' to be a positive integer"
                )
        return kind, scaling

    def _number_in(self, scaling: dict[str, Any], key: str) -> float:
        value = scaling.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e6:
            raise self.error("rope_scaling", f"'{key}' to be a positive number")
        return float(value)

    def longrope_factors(self, config: ModelConfig) -> dict[str, np.ndarray]:
        """LongRoPE's ``short_factor``/``long_factor`` lists as the two GGUF tensors ({} without LongRoPE)."""
        scaling = self._rope_scaling()
        if scaling is None or scaling[0] != "longrope":
            return {}
        out = {}
        for key, name in (
            ("short_factor", "rope_factors_short.weight"),
            ("long_factor", "rope_factors_long.weight"),
        ):
            values = scaling[1].get(key)
            ok = isinstance(values, list) and len(values) == config.rope_dim // 2
            ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            if not ok:
                raise self.error("rope_scaling", f"'{key}' to be a list of {config.rope_dim // 2} numbers")
            out[name] = np.asarray(values, dtype=np.float32)  # finite and positive: ModelFile.open checks
        return out

    def rope_freqs(self, config: ModelConfig) -> np.ndarray | None:
        """Llama 3 RoPE scaling as the per-frequency divisors of ``rope_freqs.weight`` (as the converter
        and transformers' ``_compute_llama3_parameters`` compute them), or None."""
        scaling = self._rope_scaling()
        if scaling is None or scaling[0] != "llama3":
            return None
        s = scaling[1]
        dim = config.rope_dim
        freqs = config.rope_theta ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)
        wavelen = 2 * math.pi / freqs
        orig, factor = s["original_max_position_embeddings"], s["factor"]
        low, high = s["low_freq_factor"], s["high_freq_factor"]
        if not high > low:
            raise self.error("rope_scaling", "'high_freq_factor' greater than 'low_freq_factor'")
        smooth = (orig / wavelen - low) / (high - low)
        factors = np.where(
            wavelen < orig / high,
            1.0,
            np.where(wavelen > orig / low, factor, 1 / ((1 - smooth) / factor + smooth)),
        )
        return factors.astype(np.float32)


def _as_float32(value: float) -> float:
    """``value`` rounded to float32, as GGUF stores it (the same model either way); one outside float32's
    range is kept as it is, for ModelConfig's range check to name."""
    value = float(value)
    return float(np.float32(value)) if abs(value) <= float(np.finfo(np.float32).max) else value


def _chat_template_metadata(folder: Path) -> dict[str, Any]:
    """``tokenizer.chat_template`` from tokenizer_config.json (a string, or a list of named templates of
    which cpullm takes "default"), or from chat_template.jinja, which newer folders use."""
    path = folder / "tokenizer_config.json"
    template: object = None
    if path.is_file():
        template = read_json(path, "tokenizer_config.json").get("chat_template")
        if isinstance(template, list):
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default")
        if template is not None and not isinstance(template, str):
            raise ModelFolderError(f"{path}: 'chat_template' must be a string or a list of named templates.")
    jinja = folder / "chat_template.jinja"
    if template is None and jinja.is_file():
        raw = jinja.read_bytes()[: MAX_CONFIG_BYTES + 1]
        if len(raw) > MAX_CONFIG_BYTES:
            raise ModelFolderError(f"{jinja}: the chat template is over {MAX_CONFIG_BYTES} bytes.")
        template = raw.decode("utf-8", errors="replace")
    return {"tokenizer.chat_template": template} if template else {}


def _read_shards(folder: Path) -> dict[str, SafeTensor]:
    """Every tensor of the folder's safetensors files, by HF name."""
    index_path = folder / INDEX_FILE
    if index_path.is_file():
        weight_map = read_json(index_path, "safetensors index").get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ModelFolderError(f"{index_path}: 'weight_map' must map tensor names to shard file names.")
        shards = sorted(set(weight_map.values()))
        if len(shards) > MAX_SHARDS:
            raise ModelFolderError(
                f"{index_path}: {len(shards)} shards is more than the {MAX_SHARDS} allowed."
            )
        for name in shards:
            if not _SHARD_NAME.fullmatch(name) or ".." in name:
                raise ModelFolderError(
                    f"{index_path}: shard {name[:80]!r} is not a plain .safetensors file name in the folder."
                )
    elif (folder / SINGLE_FILE).is_file():
        weight_map, shards = None, [SINGLE_FILE]
    else:
        raise ModelFolderError(
            f"{folder}: no {SINGLE_FILE} or {INDEX_FILE}; cpullm reads safetensors weights (not "
            "pytorch_model.bin). Download the folder's .safetensors files."
        )
    tensors: dict[str, SafeTensor] = {}
    shard_of: dict[str, str] = {}
    for shard in shards:
        try:
            opened = SafetensorsFile.open(folder / shard)
        except SafetensorsError as e:
            raise ModelFolderError(str(e)) from None
        for name, tensor in opened.tensors.items():
            if name in tensors:
                raise ModelFolderError(f"{folder}: tensor {name!r} is in more than one shard.")
            tensors[name] = tensor
            shard_of[name] = shard
    if weight_map is not None:
        for name, shard in weight_map.items():
            if shard_of.get(name) != shard:
                raise ModelFolderError(f"{index_path}: tensor {name!r} is not in its shard {shard!r}.")
    return tensors


def _name_maps(spec: ArchSpec, hf: _HFConfig) -> tuple[dict[str, str], dict[str, str]]:
    """({HF suffix in model.layers.N: GGUF suffix in blk.N}, {HF name: GGUF name} outside the layers)."""
    layer_map = {
        "input_layernorm.weight": "attn_norm.weight",
        "self_attn.o_proj.weight": "attn_output.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }
    if spec.fused_qkv:
        layer_map["self_attn.qkv_proj.weight"] = "attn_qkv.weight"
    else:
        for x in "qkv":
            layer_map[f"self_attn.{x}_proj.weight"] = f"attn_{x}.weight"
            layer_map[f"self_attn.{x}_proj.bias"] = f"attn_{x}.bias"
    if spec.fused_gate_up:
        layer_map["mlp.gate_up_proj.weight"] = "ffn_up.weight"
    else:
        layer_map["mlp.gate_proj.weight"] = "ffn_gate.weight"
        layer_map["mlp.up_proj.weight"] = "ffn_up.weight"
    if spec.qk_norm:
        layer_map["self_attn.q_norm.weight"] = "attn_q_norm.weight"
        layer_map["self_attn.k_norm.weight"] = "attn_k_norm.weight"
    if spec.post_norms:  # Gemma 2 and 3: four norms per block
        layer_map["post_attention_layernorm.weight"] = "post_attention_norm.weight"
        layer_map["pre_feedforward_layernorm.weight"] = "ffn_norm.weight"
        layer_map["post_feedforward_layernorm.weight"] = "post_ffw_norm.weight"
    else:
        layer_map["post_attention_layernorm.weight"] = "ffn_norm.weight"
    # Experts (stacked by _stack_experts), their router, and Qwen2-MoE's shared expert
    for prefix in ("mlp", "block_sparse_moe"):
        layer_map[f"{prefix}.gate.weight"] = "ffn_gate_inp.weight"
        for part in ("gate", "up", "down"):
            layer_map[f"{prefix}.experts.{part}.weight"] = f"ffn_{part}_exps.weight"
    for part in ("gate", "up", "down"):
        layer_map[f"mlp.shared_expert.{part}_proj.weight"] = f"ffn_{part}_shexp.weight"
    layer_map["mlp.shared_expert_gate.weight"] = "ffn_gate_inp_shexp.weight"
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    if hf.values.get("tie_word_embeddings") is not True:
        top["lm_head.weight"] = "output.weight"
    return layer_map, top


def _gguf_names(stored: dict[str, SafeTensor], spec: ArchSpec, hf: _HFConfig) -> dict[str, str]:
    """{GGUF name: HF name} for every stored tensor; ModelFolderError for one with no GGUF counterpart."""
    layer_map, top = _name_maps(spec, hf)
    if hf.values.get("tie_word_embeddings") is False and "lm_head.weight" not in stored:
        raise ModelFolderError(
            f"{hf.path.parent}: config.json says the output projection is not tied to the embeddings "
            "('tie_word_embeddings': false), but no shard holds 'lm_head.weight'. The folder is incomplete."
        )
    names: dict[str, str] = {}
    for hname in stored:
        match = _LAYER.fullmatch(hname)
        gname = f"blk.{int(match[1])}.{layer_map.get(match[2], '')}" if match else top.get(hname)
        if hname == "lm_head.weight" and gname is None:
            continue  # tied embeddings: the converter drops the copy too
        if hname.endswith(_IGNORED_SUFFIX):
            continue
        if gname is None or gname.endswith("."):
            raise ModelFolderError(
                f"{hf.path.parent}: tensor {hname!r} has no counterpart in cpullm's "
                f"{hf.values['architectures'][0]} model (an unsupported option, such as an output bias). "
                "Use a checkpoint without it."
            )
        names[gname] = hname
    return names


def _hf_name(gname: str, spec: ArchSpec, hf: _HFConfig) -> str | None:
    """The HF name of GGUF tensor ``gname`` (for error messages), or None."""
    layer_map, top = _name_maps(spec, hf)
    for hname, g in top.items():
        if g == gname:
            return hname
    match = re.fullmatch(r"blk\.(\d+)\.(.+)", gname)
    for suffix, g in layer_map.items() if match else ():
        if g == match[2]:
            return f"model.layers.{match[1]}.{suffix}"
    return None


def _placeholder(gname: str, t: SafeTensor) -> GGUFTensor:
    """A GGUFTensor with the stored tensor's shape, for checks only (its data is not converted)."""
    data = t.parts[0].data if isinstance(t, _StackedTensor) else t.data  # a stack is not read for checks
    return GGUFTensor(gname, _STORED_TYPES[t.dtype], tuple(reversed(t.shape)), 0, data)


@dataclass(frozen=True)
class _StackedTensor:
    """Experts 0..E-1 of one layer's projection as one [E, rows, cols] tensor (GGUF's ``ffn_*_exps``),
    read only when converted."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    parts: tuple[SafeTensor, ...]

    @property
    def data(self) -> np.ndarray:
        return np.stack([p.data for p in self.parts])


def _stack_experts(stored: dict[str, SafeTensor], hf: _HFConfig) -> dict[str, SafeTensor]:
    """``stored`` with each layer's per-expert tensors replaced by one stack per projection (as the
    converter writes them), and Qwen2-MoE's [1, d] shared-expert gate as the [d] vector GGUF holds."""
    out: dict[str, Any] = {}
    groups: dict[str, dict[int, SafeTensor]] = {}
    for name, t in stored.items():
        layer = _LAYER.fullmatch(name)
        expert = _EXPERT.fullmatch(layer[2]) if layer else None
        if expert is None:
            if name.endswith("mlp.shared_expert_gate.weight") and len(t.shape) == 2 and t.shape[0] == 1:
                t = SafeTensor(t.name, t.dtype, t.shape[1:], t.data.reshape(t.shape[1:]))
            out[name] = t
            continue
        stack = f"model.layers.{layer[1]}.{expert[1]}.experts.{_EXPERT_PARTS[expert[3]]}.weight"
        groups.setdefault(stack, {})[int(expert[2])] = t
    for stack, parts in groups.items():
        first = parts[min(parts)]
        if sorted(parts) != list(range(len(parts))) or any(
            (p.dtype, p.shape) != (first.dtype, first.shape) for p in parts.values()
        ):
            raise ModelFolderError(
                f"{hf.path.parent}: the experts of {stack.replace('.experts.', '.experts.<n>.')!r} are not "
                "numbered 0 to n-1 with one shape and type; the folder is inconsistent."
            )
        ordered = tuple(parts[e] for e in range(len(parts)))
        out[stack] = _StackedTensor(stack, first.dtype, (len(parts), *first.shape), ordered)
    return out


def _checked_config(draft: GGUFFile, spec: ArchSpec, hf: _HFConfig) -> ModelConfig:
    """The ModelConfig of the folder, with every tensor checked against it (errors name HF tensors)."""
    from cpullm.model.model_file import check_tensor_shapes

    try:
        config = ModelConfig.from_gguf(draft)
        check_tensor_shapes(draft, config)
    except ModelFolderError:
        raise
    except GGUFError as e:
        message = str(e)
        for gname in re.findall(r"'([a-z_.0-9]+\.(?:weight|bias))'", message):
            hname = _hf_name(gname, spec, hf)
            if hname is not None:
                message = message.replace(f"'{gname}'", f"'{hname}' (cpullm's '{gname}')")
        names = [(g, k) for g, k, _, _ in _CONFIG_KEYS + _SWA_KEYS] + [(k, k) for k in _SOFTCAP_KEYS]
        for gguf_key, key in names:  # name config.json's keys
            message = message.replace(f"metadata '{draft.architecture}.{gguf_key}'", f"config.json's '{key}'")
        raise ModelFolderError(message) from None
    expected = config.expected_tensor_shapes()
    unused = [g for g in draft.tensors if g not in expected]
    if unused:
        culprit = _hf_name(unused[0], spec, hf) or unused[0]
        raise ModelFolderError(
            f"{hf.path.parent}: tensor {culprit!r} is not used by a {config.arch} model of this config "
            "(an unsupported option). Use a checkpoint without it."
        )
    if config.arch in ("gemma2", "gemma3"):
        scalar = hf.get("query_pre_attn_scalar", "number", required=False)
        if scalar is not None and not (
            scalar > 0 and math.isclose(scalar**-0.5, config.attn_scale, rel_tol=1e-6)
        ):
            raise hf.error(
                "query_pre_attn_scalar",
                f"{round(config.attn_scale**-2)} for this Gemma model (the attention scale llama.cpp and "
                "cpullm use)",
            )
    if config.rope_theta_local:  # Gemma 3: the local layers' RoPE base and the local/global pattern
        local = hf.get("rope_local_base_freq", "number", required=False)
        if local is not None and local != config.rope_theta_local:
            raise hf.error("rope_local_base_freq", f"{config.rope_theta_local:g} (llama.cpp's and cpullm's)")
        pattern = hf.get("sliding_window_pattern", "int", required=False)
        if pattern is not None and pattern != config.swa_pattern:
            raise hf.error(
                "sliding_window_pattern", f"{config.swa_pattern} (five local layers to one global)"
            )
    return config


def _convert(
    gname: str, t: SafeTensor | _StackedTensor, config: ModelConfig, spec: ArchSpec, qtype: QT | None
) -> GGUFTensor:
    """One stored tensor in GGUF layout and the chosen type (norms and biases F32)."""
    heads = _permuted_heads(gname, config)
    if len(t.shape) == 1:
        values = _float32(t)
        if spec.hf_norm_plus_one and gname.endswith("norm.weight"):
            values = values + np.float32(1.0)
        return _encoded(gname, _permute(values, heads) if heads else values, QT.F32)
    stored_type = _STORED_TYPES[t.dtype]
    target = qtype if qtype is not None else stored_type
    if gname.endswith("ffn_gate_inp.weight"):
        target = QT.F32  # routers stay F32, as llama.cpp's quantizer leaves them: routing is not rounded
    if t.shape[-1] % GGML_QUANT_SIZES[target][0]:
        target = QT.F16  # as the converter does for a matrix whose rows the block size does not divide
    if target == stored_type:  # kept as stored: no copy unless rows move (or the view is misaligned)
        data = np.require(_permute(t.data, heads) if heads else t.data, requirements=["C", "A"])
        ne = tuple(reversed(t.shape))
        return GGUFTensor(gname, target, ne, 0, data.view(np.uint8) if target == QT.BF16 else data)
    values = _float32(t)
    return _encoded(gname, _permute(values, heads) if heads else values, target)


def _permuted_heads(gname: str, config: ModelConfig) -> int:
    """The head count to permute ``gname``'s rows by (0: not permuted). HF stores every model's Q/K for
    rotate-half RoPE; GGUF ``llama``/``mistral`` files hold them for RoPE over adjacent pairs."""
    if config.rope_layout is not RopeLayout.NORMAL or not gname.startswith("blk."):
        return 0
    suffix = gname.split(".", 2)[2]
    if suffix in ("attn_q.weight", "attn_q.bias"):
        return config.n_heads
    if suffix in ("attn_k.weight", "attn_k.bias"):
        return config.n_kv_heads
    return 0


def _encoded(gname: str, values: np.ndarray, qtype: QT) -> GGUFTensor:
    """A GGUFTensor of ``qtype`` from float32 ``values`` (``gguf.quants.quantize``)."""
    data = values if qtype == QT.F32 else quants.quantize(values, qtype)
    return GGUFTensor(gname, qtype, tuple(reversed(values.shape)), 0, data)


def _float32(t: SafeTensor | _StackedTensor) -> np.ndarray:
    if t.dtype == "BF16":
        return (t.data.astype(np.uint32) << 16).view(np.float32)
    return np.asarray(t.data, dtype=np.float32)


def _permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """HF rotate-half rows -> interleaved pairs: within each head, rows (i, i + half) become (2i, 2i + 1)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
