"""The NumPy float64 reference forward pass: against a naive token-by-token loop, RoPE layouts, tied
output, every tensor type, and the real SmolLM2 answering the issue's question."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT
from tiny_gguf import TinySpec, model_matrix, write_tiny_gguf

from cpullm.model.config import ModelConfig, RopeLayout
from cpullm.model.model_file import ModelFile
from cpullm.model.tokenizer import Tokenizer
from cpullm.testing.reference import ReferenceModel, dequantize_weights, forward, rope_angles

TOKENS = [5, 77, 200, 3, 150, 42, 9, 260, 1, 100]
# Qwen3's long-context setting (factor 4 over the original context), with a context small enough that the
# blend covers pairs 10..23 of the tiny model's 32.
# Phi-3.5-style LongRoPE: short and long frequency divisors, a magnitude factor, a 64-token original context
# (the tiny model's is 128, so the long factors are the default).
_HALF = np.arange(32)
LONGROPE_PHI3 = TinySpec(
    arch="phi3",
    tied=False,
    extra_metadata={"phi3.rope.scaling.original_context_length": 64, "phi3.rope.scaling.attn_factor": 1.19},
    extra_tensors={
        "rope_factors_short.weight": (1.0 + 0.05 * _HALF).astype(np.float32),
        "rope_factors_long.weight": (1.0 + 0.9 * _HALF).astype(np.float32),
    },
)
YARN_4X = {
    "qwen3.rope.scaling.type": "yarn",
    "qwen3.rope.scaling.factor": 4.0,
    "qwen3.rope.scaling.original_context_length": 4096,
}


def naive_logits(config: ModelConfig, w: dict[str, np.ndarray], tokens: list[int]) -> np.ndarray:
    """Token-by-token with a KV cache and explicit loops over heads and rotation pairs (and, for gemma2,
    keys and scalars written out as the definitions say)."""
    hd, group = config.head_dim, config.n_heads // config.n_kv_heads
    cache: list[tuple[list[np.ndarray], list[np.ndarray]]] = [([], []) for _ in range(config.n_layers)]

    def norm(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        return x / math.sqrt(float(np.dot(x, x)) / x.size + config.rms_eps) * weight

    factors_name = config.rope_factors_tensor(config.context_length)
    factors = w[factors_name] if factors_name else None  # frequency divisors (llama3, LongRoPE)

    def rotate(vec: np.ndarray, pos: int, layer: int) -> np.ndarray:
        # gemma3's sliding-window layers rotate with their own base and no linear scaling
        local = config.rope_theta_local and config.layer_window(layer)
        base, scale = (config.rope_theta_local, 1.0) if local else (config.rope_theta, config.rope_scale)
        yarn = config.yarn.ext_factor and not local
        # YaRN, written out: pair i keeps its unscaled angle below corr_low, takes the scaled one above
        # corr_high, a straight line between; both lanes are scaled by attn_factor (1 + ln(scale) / 10).
        magnitude = (1 + 0.1 * math.log(scale)) if yarn else 1.0
        magnitude *= 1.0 if local else config.rope_attn_factor  # LongRoPE's, on global layers
        out = vec.copy()
        for i in range(config.rope_dim // 2):
            angle = (
                pos
                / scale
                * base ** (-2 * i / config.rope_dim)
                / (factors[i] if factors is not None else 1.0)
            )
            if yarn:
                low, high = config.yarn.corr_low, config.yarn.corr_high
                unscaled_share = 1.0 if i <= low else 0.0 if i >= high else (high - i) / (high - low)
                angle = angle * (1 - unscaled_share) + angle * scale * unscaled_share
            a, b = (
                (2 * i, 2 * i + 1)
                if config.rope_layout is RopeLayout.NORMAL
                else (i, i + config.rope_dim // 2)
            )
            cos, sin = magnitude * math.cos(angle), magnitude * math.sin(angle)
            out[a] = vec[a] * cos - vec[b] * sin
            out[b] = vec[a] * sin + vec[b] * cos
        return out

    def cap(value: float, limit: float) -> float:
        return limit * math.tanh(value / limit) if limit else value

    def gelu(g: float) -> float:
        return 0.5 * g * (1 + math.tanh(math.sqrt(2 / math.pi) * (g + 0.044715 * g**3)))

    rows = []
    for pos, token in enumerate(tokens):
        x = w["token_embd.weight"][token] * config.embed_scale
        for layer in range(config.n_layers):
            p = f"blk.{layer}."
            h = norm(x, w[p + "attn_norm.weight"])
            if config.fused_qkv:  # one matrix, rows [q | k | v]
                qkv = w[p + "attn_qkv.weight"] @ h
                q, k, v = qkv[: config.q_dim], qkv[config.q_dim : -config.kv_dim], qkv[-config.kv_dim :]
            else:
                q, k, v = (w[p + f"attn_{n}.weight"] @ h for n in "qkv")
            if config.has_qkv_bias:
                q, k, v = q + w[p + "attn_q.bias"], k + w[p + "attn_k.bias"], v + w[p + "attn_v.bias"]
            if config.qk_norm:  # one weight vector for every head, each head normalized alone
                q = np.concatenate(
                    [norm(qh, w[p + "attn_q_norm.weight"]) for qh in np.split(q, config.n_heads)]
                )
                k = np.concatenate(
                    [norm(kh, w[p + "attn_k_norm.weight"]) for kh in np.split(k, config.n_kv_heads)]
                )
            keys, values = cache[layer]
            keys.append(
                np.concatenate(
                    [rotate(k[j * hd : (j + 1) * hd], pos, layer) for j in range(config.n_kv_heads)]
                )
            )
            values.append(v)
            heads = []
            for head in range(config.n_heads):
                qh = rotate(q[head * hd : (head + 1) * hd], pos, layer)
                kv = slice((head // group) * hd, (head // group + 1) * hd)
                window = config.layer_window(layer) or pos + 1
                seen = range(max(0, pos - window + 1), pos + 1)  # key positions this query attends to
                scores = np.array(
                    [cap(np.dot(qh, keys[j][kv]) * config.attn_scale, config.attn_softcap) for j in seen]
                )
                probs = np.exp(scores - scores.max())
                probs /= probs.sum()
                heads.append(sum(pr * values[j][kv] for pr, j in zip(probs, seen, strict=True)))
            att = w[p + "attn_output.weight"] @ np.concatenate(heads)
            x = x + (norm(att, w[p + "post_attention_norm.weight"]) if config.post_norms else att)
            h = norm(x, w[p + "ffn_norm.weight"])

            def expert(gate: np.ndarray, up: np.ndarray, down: np.ndarray, h: np.ndarray = h) -> np.ndarray:
                g = gate @ h
                act = (
                    np.array([gelu(v) for v in g])
                    if config.activation == "gelu_tanh"
                    else g / (1 + np.exp(-g))
                )
                return down @ (act * (up @ h))

            if config.n_experts:  # routed: the top experts by router score, softmax-weighted
                scores = [float(np.dot(row, h)) for row in w[p + "ffn_gate_inp.weight"]]
                exps = [math.exp(s - max(scores)) for s in scores]
                probs = [e / sum(exps) for e in exps]
                top = sorted(range(config.n_experts), key=lambda e: (-probs[e], e))[: config.n_experts_used]
                total = sum(probs[e] for e in top) if config.moe_norm_topk else 1.0
                ffn = sum(
                    probs[e]
                    / total
                    * expert(*(w[p + f"ffn_{n}_exps.weight"][e] for n in ("gate", "up", "down")))
                    for e in top
                )
                if config.d_ff_shared:
                    shared = expert(*(w[p + f"ffn_{n}_shexp.weight"] for n in ("gate", "up", "down")))
                    z = (
                        float(np.dot(w[p + "ffn_gate_inp_shexp.weight"], h))
                        if config.shared_expert_gate
                        else math.inf
                    )
                    ffn = ffn + shared / (1 + math.exp(-z))
            elif config.fused_gate_up:  # ffn_up's rows are [gate | up]
                gate_up = w[p + "ffn_up.weight"]
                ffn = expert(gate_up[: config.d_ff], gate_up[config.d_ff :], w[p + "ffn_down.weight"])
            else:
                ffn = expert(w[p + "ffn_gate.weight"], w[p + "ffn_up.weight"], w[p + "ffn_down.weight"])
            x = x + (norm(ffn, w[p + "post_ffw_norm.weight"]) if config.post_norms else ffn)
        out = w["token_embd.weight"] if config.tied_embeddings else w["output.weight"]
        rows.append([cap(z, config.final_softcap) for z in out @ norm(x, w["output_norm.weight"])])
    return np.array(rows)


@pytest.mark.parametrize(
    "spec",
    [
        TinySpec(),
        TinySpec(tied=False, arch="mistral"),
        TinySpec(arch="qwen2", n_heads=8, n_kv_heads=2),
        TinySpec(arch="qwen3", head_dim=128),
        TinySpec(arch="gemma2", n_heads=8, n_kv_heads=4, sliding_window=4),
        TinySpec(arch="phi3", tied=False),
        # six local layers (base 10000) around a global one (base 1e6, linear scaling 4)
        TinySpec(
            arch="gemma3",
            n_layers=7,
            sliding_window=4,
            rope_theta=1e6,
            final_softcap=5.0,
            extra_metadata={"gemma3.rope.scaling.type": "linear", "gemma3.rope.scaling.factor": 4.0},
        ),
        TinySpec(arch="qwen3moe", n_experts=6, n_experts_used=3),
        TinySpec(arch="qwen2moe"),  # unrenormalized routes, a gated shared expert, QKV biases
        TinySpec(arch="qwen3", extra_metadata=YARN_4X),
        LONGROPE_PHI3,
        # Mixtral: experts under llama
        TinySpec(arch="llama", tied=False, n_experts=4, n_experts_used=2, d_ff_expert=512),
    ],
    ids=[
        "llama-tied",
        "mistral-untied",
        "qwen2-bias",
        "qwen3-qk-norm",
        "gemma2",
        "phi3-fused",
        "gemma3",
        "qwen3moe",
        "qwen2moe",
        "qwen3-yarn",
        "phi3-longrope",
        "mixtral",
    ],
)
def test_forward_matches_naive_loop(tiny_dir: Path, spec: TinySpec) -> None:
    model = ModelFile.open(write_tiny_gguf(tiny_dir / f"naive_{spec.arch}_{spec.tied}.gguf", spec))
    assert model.config.qk_norm is (spec.arch in ("qwen3", "gemma3", "qwen3moe"))
    assert model.config.n_experts == spec.n_experts
    ref = ReferenceModel(model)
    got = ref.logits(TOKENS)
    want = naive_logits(model.config, ref.weights, TOKENS)
    assert got.shape == (len(TOKENS), model.config.vocab_size)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ref.logits(TOKENS, last_only=True)[0], want[-1], rtol=1e-9, atol=1e-9)
    assert got.std() > 0.1  # not a degenerate model


def test_forward_is_causal(tiny_llama: Path) -> None:
    ref = ReferenceModel(ModelFile.open(tiny_llama))
    full = ref.logits(TOKENS)
    for t in (0, 3, len(TOKENS) - 1):
        np.testing.assert_allclose(
            full[t], ref.logits(TOKENS[: t + 1], last_only=True)[0], rtol=1e-10, atol=1e-10
        )
    changed = ref.logits([*TOKENS[:-1], 11])
    np.testing.assert_allclose(changed[:-1], full[:-1], rtol=1e-10, atol=1e-10)
    assert not np.allclose(changed[-1], full[-1])


def test_tied_output_uses_token_embeddings(tiny_llama: Path) -> None:
    model = ModelFile.open(tiny_llama)
    assert model.config.tied_embeddings and "output.weight" not in model.gguf.tensors
    w = dequantize_weights(model)
    tied = forward(model.config, w, TOKENS)
    untied_config = dataclasses.replace(model.config, tied_embeddings=False)
    same = forward(untied_config, {**w, "output.weight": w["token_embd.weight"]}, TOKENS)
    np.testing.assert_array_equal(tied, same)
    other = forward(untied_config, {**w, "output.weight": w["token_embd.weight"][::-1].copy()}, TOKENS)
    assert not np.allclose(other, tied)


def _unpermute_llama_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Inverse of llama.cpp's convert permute: GGUF interleaved-pair rows -> HF half-split rows."""
    rows, cols = weight.shape
    return weight.reshape(n_heads, rows // n_heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def test_normal_rope_on_permuted_weights_equals_neox_on_hf_weights(tiny_llama: Path) -> None:
    """The converter permutes llama Q/K rows so NORMAL RoPE in GGUF equals HF's rotate_half (NEOX)."""
    model = ModelFile.open(tiny_llama)
    c = model.config
    w = dequantize_weights(model)
    hf = dict(w)
    for i in range(c.n_layers):
        hf[f"blk.{i}.attn_q.weight"] = _unpermute_llama_rows(w[f"blk.{i}.attn_q.weight"], c.n_heads)
        hf[f"blk.{i}.attn_k.weight"] = _unpermute_llama_rows(w[f"blk.{i}.attn_k.weight"], c.n_kv_heads)
    neox = dataclasses.replace(c, rope_layout=RopeLayout.NEOX)
    np.testing.assert_allclose(forward(neox, hf, TOKENS), forward(c, w, TOKENS), rtol=1e-9, atol=1e-9)
    assert not np.allclose(forward(neox, w, TOKENS), forward(c, w, TOKENS), atol=1e-3)


def test_rope_scaling_and_frequency_factors(tiny_llama: Path) -> None:
    c = ModelFile.open(tiny_llama).config
    positions = np.arange(8)
    base = rope_angles(c, positions, None)
    scaled = rope_angles(dataclasses.replace(c, rope_scaling="linear", rope_scale=2.0), positions * 2, None)
    np.testing.assert_allclose(scaled, base)
    factors = np.linspace(1.0, 8.0, c.rope_dim // 2)
    np.testing.assert_allclose(rope_angles(c, positions, factors), base / factors)
    assert base[1, 0] == 1.0 and base[1, -1] == pytest.approx(
        c.rope_theta ** (-(c.rope_dim - 2) / c.rope_dim)
    )


@pytest.mark.parametrize(
    "qtype", [QT.F16, QT.BF16, QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1], ids=lambda t: t.name
)
def test_quantized_models_track_the_f32_model(tiny_dir: Path, qtype: QT) -> None:
    """Same float weights quantized: logits stay highly correlated with the F32 file's."""
    spec = TinySpec(tied=False, seed=11)
    f32 = ReferenceModel(ModelFile.open(write_tiny_gguf(tiny_dir / "track_f32.gguf", spec)))
    quant_spec = dataclasses.replace(spec, weight_type=qtype)
    quant = ReferenceModel(ModelFile.open(write_tiny_gguf(tiny_dir / f"track_{qtype.name}.gguf", quant_spec)))
    a, b = f32.logits(TOKENS).ravel(), quant.logits(TOKENS).ravel()
    corr = float(np.corrcoef(a, b)[0, 1])
    assert corr > {QT.F16: 0.99999, QT.BF16: 0.9999, QT.Q8_0: 0.9999}.get(qtype, 0.98), corr
    assert not np.array_equal(a, b)


@pytest.mark.parametrize(
    "qtype", [QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K, QT.IQ4_NL, QT.IQ4_XS], ids=lambda t: t.name
)
def test_k_quant_models_run(tiny_dir: Path, qtype: QT) -> None:
    model = ModelFile.open(write_tiny_gguf(tiny_dir / f"run_{qtype.name}.gguf", TinySpec(weight_type=qtype)))
    logits = ReferenceModel(model).logits(TOKENS)
    assert np.isfinite(logits).all() and logits.std() > 0.01


def test_bad_tokens_are_rejected(tiny_llama: Path) -> None:
    ref = ReferenceModel(ModelFile.open(tiny_llama))
    with pytest.raises(ValueError, match="token ids must be in"):
        ref.logits([1, 100000])
    with pytest.raises(ValueError, match="non-empty"):
        ref.logits([])


@pytest.mark.slow
def test_smollm2_answers_paris(smollm2_path: Path) -> None:
    model = ModelFile.open(smollm2_path)
    tok = Tokenizer.from_gguf(model.gguf)
    prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    ids = tok.encode(prompt, parse_special=True)
    ref = ReferenceModel(model)
    out = ref.greedy(ids, max_new=10, stop_ids=tok.eog_ids)
    assert tok.decode(out, skip_special=True).startswith("The capital of France is Paris.")


def test_rope_freqs_tensor_is_used(tiny_dir: Path) -> None:
    factors = np.linspace(1.0, 4.0, 32).astype(np.float32)
    spec = TinySpec(extra_tensors={"rope_freqs.weight": factors})
    model = ModelFile.open(write_tiny_gguf(tiny_dir / "rope_freqs.gguf", spec))
    assert model.config.has_rope_freqs
    ref = ReferenceModel(model)
    plain = dataclasses.replace(model.config, has_rope_freqs=False)
    with_factors = ref.logits(TOKENS)
    assert not np.allclose(with_factors, forward(plain, ref.weights, TOKENS), atol=1e-6)
    angles = rope_angles(model.config, np.arange(4), ref.weights["rope_freqs.weight"])
    np.testing.assert_allclose(angles, rope_angles(model.config, np.arange(4), None) / factors)


@pytest.mark.parametrize(("name", "spec"), model_matrix(), ids=[name for name, _ in model_matrix()])
def test_every_architecture_and_type_runs(tiny_dir: Path, name: str, spec: TinySpec) -> None:
    model = ModelFile.open(write_tiny_gguf(tiny_dir / f"matrix_{name}.gguf", spec))
    assert model.config.arch == spec.arch and model.config.tied_embeddings is spec.tied
    down = "blk.1.ffn_down_exps.weight" if spec.n_experts else "blk.1.ffn_down.weight"
    assert model.tensor(down).type == spec.weight_type
    logits = ReferenceModel(model).logits(TOKENS[:4])
    assert logits.shape == (4, model.config.vocab_size)
    assert np.isfinite(logits).all() and logits.std() > 0.01
