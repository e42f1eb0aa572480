"""Write tiny random-weight Hugging Face model folders holding the same weights as a tiny GGUF.

``write_tiny_hf_folder(folder, spec, dtype="F32", n_shards=2)`` writes ``config.json``, sharded
``*.safetensors`` with ``model.safetensors.index.json``, ``tokenizer.json`` and ``tokenizer_config.json`` for
the model ``write_tiny_gguf(path, spec)`` writes: the same random arrays (``tiny_gguf.tiny_weights``), laid
out as transformers stores them. That layout is written here independently of the loader: HF tensor
names, Q/K rows of llama/mistral in rotate-half order (the inverse of the GGUF pair interleaving), Gemma's
norm weights minus one. The byte-level BPE vocabulary is tiny_gguf's, built with the ``tokenizers``
library as transformers would save it. F32 and F16 shards are written with the ``safetensors`` package;
BF16 (which its numpy API cannot hold) with :func:`write_safetensors`, a plain writer of the format.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
from tiny_gguf import GPT2_SPECIALS, TinySpec, gpt2_vocab, tiny_weights
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

HF_NAMES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3": "Gemma3ForCausalLM",
    "qwen3moe": "Qwen3MoeForCausalLM",
    "qwen2moe": "Qwen2MoeForCausalLM",
    "phi3": "Phi3ForCausalLM",
}
_LAYER_NAMES = {  # GGUF suffix -> HF suffix (Gemma 2's norms differ, see below)
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_qkv.weight": "self_attn.qkv_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_EXPERT_STACKS = {"ffn_gate_exps.weight": "gate", "ffn_up_exps.weight": "up", "ffn_down_exps.weight": "down"}
_MOE_NAMES = {  # GGUF suffix -> HF suffix ({moe}: mlp, or Mixtral's block_sparse_moe)
    "ffn_gate_inp.weight": "{moe}.gate.weight",
    "ffn_gate_shexp.weight": "mlp.shared_expert.gate_proj.weight",
    "ffn_up_shexp.weight": "mlp.shared_expert.up_proj.weight",
    "ffn_down_shexp.weight": "mlp.shared_expert.down_proj.weight",
    "ffn_gate_inp_shexp.weight": "mlp.shared_expert_gate.weight",  # [1, d] in HF, [d] in GGUF
}
_GEMMA2_NORMS = {
    "post_attention_norm.weight": "post_attention_layernorm.weight",
    "ffn_norm.weight": "pre_feedforward_layernorm.weight",
    "post_ffw_norm.weight": "post_feedforward_layernorm.weight",
}


def head_dim(spec: TinySpec) -> int:
    return spec.head_dim if spec.head_dim is not None else spec.d_model // spec.n_heads


def to_rotate_half(w: np.ndarray, n_heads: int) -> np.ndarray:
    """GGUF rows (2i, 2i+1) of each head -> HF rows (i, i + half)."""
    hd = w.shape[0] // n_heads
    return w.reshape(n_heads, hd // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_weights(spec: TinySpec) -> dict[str, np.ndarray]:
    """The tiny model's float32 weights under HF names and in HF layout."""
    out: dict[str, np.ndarray] = {}
    mixtral = spec.arch == "llama" and spec.n_experts > 0
    moe = "block_sparse_moe" if mixtral else "mlp"
    for name, w in tiny_weights(spec).items():
        if name.startswith("rope_factors_"):
            continue  # LongRoPE's factors live in config.json (hf_config)
        layer_part = name.split(".", 2)
        if name.startswith("blk.") and layer_part[2] in _EXPERT_STACKS:  # one tensor per expert in HF
            part = _EXPERT_STACKS[layer_part[2]]
            part = {"gate": "w1", "up": "w3", "down": "w2"}[part] if mixtral else f"{part}_proj"
            for e, we in enumerate(w):
                out[f"model.layers.{layer_part[1]}.{moe}.experts.{e}.{part}.weight"] = we
            continue
        if name.startswith("blk.") and layer_part[2] in _MOE_NAMES:
            suffix = _MOE_NAMES[layer_part[2]].format(moe=moe)
            out[f"model.layers.{layer_part[1]}.{suffix}"] = w.reshape(1, -1) if w.ndim == 1 else w
            continue
        if name.startswith("blk."):
            _, layer, suffix = name.split(".", 2)
            if spec.arch == "phi3" and suffix == "ffn_up.weight":
                hname = "mlp.gate_up_proj.weight"  # fused [gate | up]
            elif spec.arch in ("gemma2", "gemma3") and suffix in _GEMMA2_NORMS:
                hname = _GEMMA2_NORMS[suffix]
            else:
                hname = _LAYER_NAMES[suffix]
            if spec.arch in ("llama", "mistral") and suffix.startswith(("attn_q.", "attn_k.")):
                w = to_rotate_half(w, spec.n_heads if suffix.startswith("attn_q") else spec.n_kv_heads)
            name = f"model.layers.{layer}.{hname}"
        else:
            name = {
                "token_embd.weight": "model.embed_tokens.weight",
                "output_norm.weight": "model.norm.weight",
                "output.weight": "lm_head.weight",
            }[name]
        if spec.arch in ("gemma2", "gemma3") and name.endswith("norm.weight"):
            w = w - np.float32(1.0)  # Gemma's RMSNorm multiplies by (1 + w)
        out[name] = w
    return out


def hf_config(spec: TinySpec, vocab_size: int) -> dict[str, Any]:
    mixtral = spec.arch == "llama" and spec.n_experts > 0
    config: dict[str, Any] = {
        "architectures": ["MixtralForCausalLM" if mixtral else HF_NAMES[spec.arch]],
        "hidden_size": spec.d_model,
        "intermediate_size": spec.d_ff,
        "num_hidden_layers": spec.n_layers,
        "num_attention_heads": spec.n_heads,
        "num_key_value_heads": spec.n_kv_heads,
        "max_position_embeddings": spec.context_length,
        "rms_norm_eps": spec.rms_eps,
        "rope_theta": spec.rope_theta,
        "vocab_size": vocab_size,
        "tie_word_embeddings": spec.tied,
        "hidden_act": "gelu_pytorch_tanh" if spec.arch in ("gemma2", "gemma3") else "silu",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
    }
    if spec.head_dim is not None:
        config["head_dim"] = spec.head_dim
    if spec.arch == "gemma2":
        config.update(
            sliding_window=spec.sliding_window,
            attn_logit_softcapping=spec.attn_softcap,
            final_logit_softcapping=spec.final_softcap,
            query_pre_attn_scalar=head_dim(spec),
        )
    if mixtral:  # the experts are intermediate_size wide
        config.update(num_local_experts=spec.n_experts, num_experts_per_tok=spec.n_experts_used)
        config["intermediate_size"] = spec.d_ff_expert
    elif spec.n_experts:
        config.update(
            num_experts=spec.n_experts,
            num_experts_per_tok=spec.n_experts_used,
            moe_intermediate_size=spec.d_ff_expert,
            norm_topk_prob=spec.arch == "qwen3moe",
            decoder_sparse_step=1,
            mlp_only_layers=[],
        )
        if spec.d_ff_shared:
            config["shared_expert_intermediate_size"] = spec.d_ff_shared
    md, a = spec.extra_metadata, spec.arch
    if md.get(f"{a}.rope.scaling.type") == "yarn":
        config["rope_scaling"] = {
            "rope_type": "yarn",
            "factor": md[f"{a}.rope.scaling.factor"],
            "original_max_position_embeddings": md[f"{a}.rope.scaling.original_context_length"],
        }
    if "rope_factors_long.weight" in spec.extra_tensors:  # Phi-3 LongRoPE
        config["rope_scaling"] = {
            "type": "longrope",
            "short_factor": spec.extra_tensors["rope_factors_short.weight"].tolist(),
            "long_factor": spec.extra_tensors["rope_factors_long.weight"].tolist(),
        }
        config["original_max_position_embeddings"] = md[f"{a}.rope.scaling.original_context_length"]
    if spec.arch == "gemma3":
        config.update(
            sliding_window=spec.sliding_window,
            sliding_window_pattern=6,
            rope_local_base_freq=10000.0,
            attn_logit_softcapping=None,
            final_logit_softcapping=spec.final_softcap or None,
            query_pre_attn_scalar=head_dim(spec),
        )
    return config


def hf_tokenizer() -> Tokenizer:
    """tiny_gguf's byte-level BPE vocabulary (GPT-2 pre-tokenizer) as a tokenizers.Tokenizer."""
    tokens, _, merges = gpt2_vocab()
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in GPT2_SPECIALS])
    return tok


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], dtypes: dict[str, str]) -> None:
    """A safetensors file of raw arrays (``dtypes`` names each one's safetensors dtype)."""
    header: dict[str, Any] = {}
    offset = 0
    for name, a in tensors.items():
        header[name] = {
            "dtype": dtypes[name],
            "shape": list(a.shape),
            "data_offsets": [offset, offset + a.nbytes],
        }
        offset += a.nbytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for a in tensors.values():
            f.write(np.ascontiguousarray(a).tobytes())


def to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), rounded to nearest even."""
    bits = a.astype(np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def write_tiny_hf_folder(
    folder: Path,
    spec: TinySpec | None = None,
    dtype: str = "F32",
    n_shards: int = 2,
    config_overrides: dict[str, Any] | None = None,
) -> Path:
    """Write the folder (see the module docstring) and return it."""
    from safetensors.numpy import save_file

    spec = spec or TinySpec()
    folder.mkdir(parents=True, exist_ok=True)
    tok = hf_tokenizer()
    weights = hf_weights(spec)
    vocab_size = len(weights["model.embed_tokens.weight"])  # the tokenizer's, or spec.embedding_rows
    names = list(weights)
    weight_map = {}
    for s in range(n_shards):
        shard = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {n: weights[n] for n in names[s::n_shards]}
        if dtype == "BF16":
            write_safetensors(
                folder / shard, {n: to_bf16_bits(a) for n, a in part.items()}, dict.fromkeys(part, "BF16")
            )
        else:
            save_file(
                {n: a.astype(np.float16 if dtype == "F16" else np.float32) for n, a in part.items()},
                folder / shard,
            )
        weight_map.update(dict.fromkeys(part, shard))
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    config = {**hf_config(spec, vocab_size), **(config_overrides or {})}
    (folder / "config.json").write_text(json.dumps(config))
    tok.save(str(folder / "tokenizer.json"))
    tokenizer_config = {
        "bos_token": GPT2_SPECIALS[1],
        "eos_token": GPT2_SPECIALS[2],
        "add_bos_token": spec.add_bos,
        "chat_template": spec.chat_template,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return folder
