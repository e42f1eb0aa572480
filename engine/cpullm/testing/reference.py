"""An independent NumPy float64 forward pass for the architectures of
:data:`cpullm.model.config.ARCHITECTURES`: the oracle for the native engine.

Public API
----------
``dequantize_weights(model_file) -> dict[str, float64 ndarray]``
    Every tensor dequantized with ``gguf.quants.dequantize`` (the gguf package, not our kernels),
    row-major: a matrix is ``(out_features, in_features)``.
``forward(config, weights, tokens, last_only=False) -> float64[T, vocab]``
    Logits for every position of ``tokens`` (or only the last, as ``[1, vocab]``), computed with a full
    causal pass: embeddings (times ``embed_scale``) -> per layer (RMSNorm, Q/K/V (+bias), per-head Q/K
    RMSNorm (qwen3), RoPE, grouped-query causal attention (soft-capped scores and a sliding window where
    the config has them), output projection (+ post-norm), residual, RMSNorm, SwiGLU or GeGLU FFN
    (+ post-norm), residual) -> final RMSNorm -> output projection (``token_embd`` when the embeddings are
    tied) -> final soft-capping.
``ReferenceModel(model_file)``
    Holds the dequantized weights; ``logits(tokens)`` and ``greedy(tokens, n, stop_ids)``.

RoPE follows llama.cpp (see :mod:`cpullm.model.config`): ``RopeLayout.NORMAL`` rotates adjacent lanes
``(2i, 2i+1)``, ``RopeLayout.NEOX`` rotates ``(i, i + rope_dim/2)``; the angle of pair ``i`` at position
``p`` is ``p / rope_scale * rope_theta ** (-2i / rope_dim) / rope_freqs[i]`` (``rope_freqs`` only when
the file has that tensor). A model with a local RoPE base (gemma3) rotates its sliding-window layers with
``rope_theta_local`` and no ``rope_scale``. Nothing here is fast; it is written to be obviously right.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from gguf.quants import dequantize

from cpullm.model.config import ModelConfig, RopeLayout
from cpullm.model.model_file import ModelFile

Weights = Mapping[str, np.ndarray]


def dequantize_weights(model: ModelFile) -> dict[str, np.ndarray]:
    out = {}
    for name, tensor in model.gguf.tensors.items():
        dense = dequantize(np.asarray(tensor.data), tensor.type)
        out[name] = np.asarray(dense, dtype=np.float64).reshape(tensor.shape)
    return out


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x: [T, d], weight: [d] -> [T, d]."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def soft_cap(x: np.ndarray, cap: float) -> np.ndarray:
    """cap * tanh(x / cap); cap 0 leaves x as it is."""
    return cap * np.tanh(x / cap) if cap else x


def rope_angles(
    config: ModelConfig, positions: np.ndarray, freq_factors: np.ndarray | None, local: bool = False
) -> np.ndarray:
    """positions: [T] -> angles [T, rope_dim/2]. ``local``: a sliding-window layer of a model with a local
    RoPE base (``rope_theta_local``, no linear scaling)."""
    half = config.rope_dim // 2
    base, scale = (config.rope_theta_local, 1.0) if local else (config.rope_theta, config.rope_scale)
    inv_freq = base ** (-2.0 * np.arange(half, dtype=np.float64) / config.rope_dim)
    if freq_factors is not None:
        inv_freq = inv_freq / freq_factors
    extrap = np.outer(positions.astype(np.float64), inv_freq)  # [T, half] unscaled angles
    yarn = config.yarn
    if local or not yarn.ext_factor:
        return extrap / scale
    # YaRN: unscaled below corr_low, scaled above corr_high, linear between
    ramp = 1.0 - np.clip((np.arange(half) - yarn.corr_low) / max(0.001, yarn.corr_high - yarn.corr_low), 0, 1)
    mix = ramp * yarn.ext_factor
    return extrap / scale * (1.0 - mix) + extrap * mix


def rope_magnitude(config: ModelConfig, local: bool = False) -> float:
    """The factor on cos and sin: the model's rope_attn_factor, times YaRN's correction."""
    if local:
        return 1.0
    yarn = 1.0 + 0.1 * float(np.log(config.rope_scale)) if config.yarn.ext_factor else 1.0
    return config.rope_attn_factor * yarn


def apply_rope(
    x: np.ndarray, angles: np.ndarray, layout: RopeLayout, rope_dim: int, magnitude: float = 1.0
) -> np.ndarray:
    """x: [T, heads, head_dim], angles: [T, rope_dim/2] -> rotated copy of x (rotated lanes times
    ``magnitude``, YaRN's correction)."""
    out = x.copy()
    cos = magnitude * np.cos(angles)[:, None, :]  # [T, 1, rope_dim/2]
    sin = magnitude * np.sin(angles)[:, None, :]
    if layout is RopeLayout.NORMAL:
        a, b = x[..., 0:rope_dim:2], x[..., 1:rope_dim:2]
        out[..., 0:rope_dim:2] = a * cos - b * sin
        out[..., 1:rope_dim:2] = a * sin + b * cos
    else:
        half = rope_dim // 2
        a, b = x[..., :half], x[..., half:rope_dim]
        out[..., :half] = a * cos - b * sin
        out[..., half:rope_dim] = a * sin + b * cos
    return out


def causal_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    scale: float | None = None,
    softcap: float = 0.0,
    window: int = 0,
) -> np.ndarray:
    """q: [T, n_heads, hd], k/v: [T, n_kv_heads, hd] -> [T, n_heads * hd].

    Query head h reads key/value head h // (n_heads / n_kv_heads), as llama.cpp and transformers do.
    Scores are q·k * scale (default 1/sqrt(hd)), then soft-capped (``softcap`` > 0); with ``window`` > 0
    query i sees keys i - window + 1 .. i only.
    """
    t, n_heads, hd = q.shape
    group = n_heads // k.shape[1]
    k = np.repeat(k, group, axis=1)  # [T, n_heads, hd]
    v = np.repeat(v, group, axis=1)
    scores = np.einsum("qhd,khd->hqk", q, k) * (scale if scale is not None else 1.0 / np.sqrt(hd))
    scores = soft_cap(scores, softcap)  # [heads, T, T]
    i, j = np.indices((t, t))
    visible = (j <= i) & ((j > i - window) if window > 0 else True)
    scores = np.where(visible, scores, -np.inf)
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    probs = scores / scores.sum(axis=-1, keepdims=True)
    return np.einsum("hqk,khd->qhd", probs, v).reshape(t, n_heads * hd)


def _layer(
    config: ModelConfig, w: Weights, i: int, x: np.ndarray, angles: np.ndarray, magnitude: float
) -> np.ndarray:
    """One transformer block. x: [T, d_model] -> [T, d_model]; angles: this layer's RoPE [T, rope_dim/2]."""
    p = f"blk.{i}."
    t = x.shape[0]
    h = rms_norm(x, w[p + "attn_norm.weight"], config.rms_eps)
    if config.fused_qkv:  # rows [q | k | v]
        q, k, v = np.split(
            h @ w[p + "attn_qkv.weight"].T, [config.q_dim, config.q_dim + config.kv_dim], axis=1
        )
    else:
        q = h @ w[p + "attn_q.weight"].T  # [T, n_heads * hd]
        k = h @ w[p + "attn_k.weight"].T  # [T, n_kv_heads * hd]
        v = h @ w[p + "attn_v.weight"].T
    if config.has_qkv_bias:
        q, k, v = q + w[p + "attn_q.bias"], k + w[p + "attn_k.bias"], v + w[p + "attn_v.bias"]
    q = q.reshape(t, config.n_heads, config.head_dim)
    k = k.reshape(t, config.n_kv_heads, config.head_dim)
    if config.qk_norm:  # each head normalized over its head_dim lanes, one weight vector for all heads
        q = rms_norm(q, w[p + "attn_q_norm.weight"], config.rms_eps)
        k = rms_norm(k, w[p + "attn_k_norm.weight"], config.rms_eps)
    q = apply_rope(q, angles, config.rope_layout, config.rope_dim, magnitude)
    k = apply_rope(k, angles, config.rope_layout, config.rope_dim, magnitude)
    v = v.reshape(t, config.n_kv_heads, config.head_dim)
    att = causal_attention(q, k, v, config.attn_scale, config.attn_softcap, config.layer_window(i))
    att = att @ w[p + "attn_output.weight"].T
    if config.post_norms:
        att = rms_norm(att, w[p + "post_attention_norm.weight"], config.rms_eps)
    x = x + att
    h = rms_norm(x, w[p + "ffn_norm.weight"], config.rms_eps)
    ffn = _moe(config, w, p, h) if config.n_experts else _gated_ffn(config, w, p, h)
    if config.post_norms:
        ffn = rms_norm(ffn, w[p + "post_ffw_norm.weight"], config.rms_eps)
    return x + ffn


def _gated_ffn(config: ModelConfig, w: Weights, p: str, h: np.ndarray) -> np.ndarray:
    """The dense FFN of layer prefix ``p``: h [T, d] -> [T, d]."""
    act = gelu_tanh if config.activation == "gelu_tanh" else silu
    if config.fused_gate_up:  # rows [gate | up]
        gate, up = np.split(h @ w[p + "ffn_up.weight"].T, 2, axis=1)
    else:
        gate, up = h @ w[p + "ffn_gate.weight"].T, h @ w[p + "ffn_up.weight"].T
    return (act(gate) * up) @ w[p + "ffn_down.weight"].T  # [T, d_ff] -> [T, d]


def _moe(config: ModelConfig, w: Weights, p: str, h: np.ndarray) -> np.ndarray:
    """Mixture of experts: each row through its router's top-k experts, weighted by their softmax
    probabilities (renormalized over the chosen ones with ``moe_norm_topk``). h [T, d] -> [T, d]."""
    act = gelu_tanh if config.activation == "gelu_tanh" else silu
    logits = h @ w[p + "ffn_gate_inp.weight"].T  # [T, n_experts]
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    gate, up, down = (w[p + f"ffn_{n}_exps.weight"] for n in ("gate", "up", "down"))  # [E, out, in]
    out = np.zeros_like(h)
    for t in range(h.shape[0]):
        top = np.argsort(-probs[t], kind="stable")[: config.n_experts_used]  # ties: the lower index
        weights = probs[t, top] / (probs[t, top].sum() if config.moe_norm_topk else 1.0)
        for e, weight in zip(top, weights, strict=True):
            out[t] += weight * ((act(gate[e] @ h[t]) * (up[e] @ h[t])) @ down[e].T)
    if config.d_ff_shared:  # the shared expert, on every row, behind its sigmoid gate if any
        shared = (act(h @ w[p + "ffn_gate_shexp.weight"].T) * (h @ w[p + "ffn_up_shexp.weight"].T)) @ w[
            p + "ffn_down_shexp.weight"
        ].T
        if config.shared_expert_gate:
            shared *= 1.0 / (1.0 + np.exp(-(h @ w[p + "ffn_gate_inp_shexp.weight"])))[:, None]
        out += shared
    return out


def hidden_states(config: ModelConfig, weights: Weights, tokens: Sequence[int]) -> np.ndarray:
    """The final hidden states float64[T, d_model] (after the final norm) of ``tokens`` at 0..T-1."""
    return forward(config, weights, tokens, hidden=True)


def forward(
    config: ModelConfig,
    weights: Weights,
    tokens: Sequence[int],
    last_only: bool = False,
    context: int | None = None,
    hidden: bool = False,
) -> np.ndarray:
    """Logits float64[T, vocab] (``[1, vocab]`` with ``last_only``) for ``tokens`` at positions 0..T-1, in
    a run of ``context`` positions (default: the model's; it picks LongRoPE's factors); with ``hidden``, the
    final hidden states instead."""
    ids = np.asarray(tokens, dtype=np.int64)
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError("forward needs a non-empty 1-D list of token ids.")
    if ids.min() < 0 or ids.max() >= config.vocab_size:
        raise ValueError(f"token ids must be in [0, {config.vocab_size}), got {ids.min()}..{ids.max()}.")
    x = weights["token_embd.weight"][ids] * config.embed_scale  # [T, d_model]
    factors_name = config.rope_factors_tensor(context if context is not None else config.context_length)
    positions, factors = np.arange(ids.size), weights[factors_name] if factors_name else None
    angles = rope_angles(config, positions, factors)
    local_angles = rope_angles(config, positions, factors, local=True) if config.rope_theta_local else angles
    magnitudes = rope_magnitude(config), rope_magnitude(config, local=True)
    for i in range(config.n_layers):
        local = bool(config.rope_theta_local and config.layer_window(i))
        x = _layer(config, weights, i, x, local_angles if local else angles, magnitudes[local])
    if last_only:
        x = x[-1:]
    x = rms_norm(x, weights["output_norm.weight"], config.rms_eps)
    if hidden:
        return x
    out = weights["token_embd.weight"] if config.tied_embeddings else weights["output.weight"]
    return soft_cap(x @ out.T, config.final_softcap)  # [T, vocab]


class ReferenceModel:
    """A model file dequantized to float64, with the reference forward pass."""

    def __init__(self, model: ModelFile, context: int | None = None) -> None:
        self.config = model.config
        self.weights = dequantize_weights(model)
        self.context = context

    def logits(self, tokens: Sequence[int], last_only: bool = False) -> np.ndarray:
        return forward(self.config, self.weights, tokens, last_only, self.context)

    def greedy(self, tokens: Sequence[int], max_new: int, stop_ids: Iterable[int] = ()) -> list[int]:
        """Greedy continuation (recomputes the whole sequence each step; fine for a few tokens)."""
        seq, stops, new = list(tokens), set(stop_ids), []
        for _ in range(max_new):
            token = int(np.argmax(self.logits(seq, last_only=True)[0]))
            new.append(token)
            if token in stops:
                break
            seq.append(token)
        return new
