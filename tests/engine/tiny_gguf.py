"""Write tiny random-weight GGUF models for tests (reusable by any test suite).

``write_tiny_gguf(path, TinySpec(...))`` writes a complete model for ``llama``, ``mistral``, ``qwen2``,
``qwen3``, ``gemma2``, ``gemma3`` or ``phi3`` (tied or untied output, QKV biases for qwen2, per-head Q/K
norms for qwen3 and gemma3, post-norms, soft-capping and a sliding window for gemma2, gemma3's six-layer
local/global pattern, fused QKV and gate-up matrices for phi3) whose 2-D weight matrices use
``spec.weight_type`` (norms and biases stay F32, as in real files). Dimensions are multiples of 256 so
every supported type, K-quants included, can hold every matrix.

Quantization: F32/F16 are plain casts; BF16, Q8_0, Q4_0 and Q4_1 use ``gguf.quants.quantize``.
The gguf package cannot quantize Q4_K or Q6_K (only dequantize), so for those this module builds
valid random blocks by hand (random scales and quants with a chosen super-block scale). Either way
the file holds legal blocks; tests dequantize them with ``gguf.quants.dequantize``.

``model_matrix()`` lists (id, spec) for every architecture variant (llama tied/untied, mistral, qwen2
with biases, qwen3, gemma2, gemma3, phi3) times every supported weight type, for suites that must cover
them all.

Tokenizers: ``"gpt2"`` writes a byte-level BPE vocabulary (3 control tokens, the 256 byte symbols,
then the merges in ``GPT2_MERGES``); ``"llama"`` writes a SentencePiece-style vocabulary (<unk>, <s>,
</s>, 256 <0xNN> byte tokens, then scored pieces with ▁ for spaces).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT

ALL_TENSOR_TYPES = (
    QT.F32, QT.F16, QT.BF16, QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.IQ4_NL, QT.IQ4_XS,
    QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K,
)  # fmt: skip
ARCH_VARIANTS = {  # name -> (arch, tied): every architecture and output layout
    "llama-tied": ("llama", True),
    "llama-untied": ("llama", False),
    "mistral": ("mistral", False),
    "qwen2-bias": ("qwen2", True),
    "qwen3": ("qwen3", True),
    "gemma2": ("gemma2", True),
    "gemma3": ("gemma3", True),
    "qwen3moe": ("qwen3moe", True),
    "qwen2moe": ("qwen2moe", False),
    "phi3": ("phi3", False),
}


CHATML_WITH_SYSTEM = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a tiny test model.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

GPT2_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# Merges in byte-level symbols (Ġ is a space); each result is a vocabulary token.
GPT2_MERGES = (
    "Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "l l", "o r", "Ġ w", "Ġw or", "Ġwor l", "Ġworl d",
    "he ll", "hell o", "Ġ hello", "a n", "Ġ c", "Ġc a", "p i", "Ġca pi", "t a", "Ġcapi ta", "Ġcapita l",
)  # fmt: skip
SPM_PIECES = (
    "▁the", "▁a", "▁hello", "▁world", "he", "ll", "▁t", "▁h", "▁w", "or", "in", "er", "an",
    "▁he", "▁hell", "▁wor", "▁worl", "▁th",
)  # fmt: skip
SPM_CHARS = "▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'-"


@dataclass
class TinySpec:
    arch: str = "llama"
    tied: bool = True
    weight_type: QT = QT.F32
    embed_type: QT | None = None  # token_embd / output type; None = weight_type
    tokenizer: str = "gpt2"  # "gpt2" | "llama"
    pre: str = "default"  # tokenizer.ggml.pre for gpt2
    chat_template: str | None = CHATML_WITH_SYSTEM
    n_layers: int = 0  # 0 = 2, or 6 for gemma3 (five sliding-window layers, then a global one)
    d_model: int = 256
    n_heads: int = 4
    n_kv_heads: int = 2
    head_dim: int | None = None  # None = d_model / n_heads; else written as attention.key/value_length
    # gemma2/gemma3: small enough that the window and the caps change a tiny model's logits. gemma3 has
    # no score cap, and its final cap is written only when set (Gemma 3 files have none): None = 3.0 for
    # gemma2, none for gemma3.
    sliding_window: int = 8
    attn_softcap: float = 3.0
    final_softcap: float | None = None
    d_ff: int = 512
    context_length: int = 128
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5
    seed: int = 0
    add_bos: bool = False
    drop_tensors: Sequence[str] = ()
    tensor_types: dict[str, QT] = field(default_factory=dict)  # per-name overrides
    extra_metadata: dict[str, object] = field(default_factory=dict)
    # written as F32, e.g. rope_freqs.weight
    extra_tensors: dict[str, np.ndarray] = field(default_factory=dict)
    # (tokens, types, scores) replacing the built-in SentencePiece-style vocabulary
    spm_vocab: tuple[list[str], list[int], list[float]] | None = None
    # rows of token_embd / output; None = one per token (a different number makes an inconsistent file)
    embedding_rows: int | None = None
    # Mixture of experts (qwen3moe: 0 = 4 experts; llama with experts is Mixtral): stacked expert FFNs
    # d_ff_expert wide and an F32 router, as llama.cpp's converter writes them.
    n_experts: int = 0
    n_experts_used: int = 2
    d_ff_expert: int = 256
    d_ff_shared: int = 0  # a shared expert (qwen2moe: 0 = 512, with its sigmoid gate)

    def __post_init__(self) -> None:
        if self.n_layers == 0:
            self.n_layers = 6 if self.arch == "gemma3" else 2
        if self.arch in ("qwen3moe", "qwen2moe") and self.n_experts == 0:
            self.n_experts = 4
        if self.arch == "qwen2moe" and self.d_ff_shared == 0:
            self.d_ff_shared = 512
        if self.final_softcap is None:
            self.final_softcap = 0.0 if self.arch == "gemma3" else 3.0


def model_matrix() -> list[tuple[str, TinySpec]]:
    """(test id, spec) for every architecture variant x every supported weight type."""
    return [
        (f"{name}-{qtype.name}", TinySpec(arch=arch, tied=tied, weight_type=qtype))
        for name, (arch, tied) in ARCH_VARIANTS.items()
        for qtype in ALL_TENSOR_TYPES
    ]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable-symbol table used by byte-level BPE vocabularies."""
    bs = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def gpt2_vocab() -> tuple[list[str], list[int], list[str]]:
    tokens = list(GPT2_SPECIALS) + list(bytes_to_unicode().values())
    types = [gguf.TokenType.CONTROL] * len(GPT2_SPECIALS) + [gguf.TokenType.NORMAL] * 256
    merges: list[str] = []
    for merge in GPT2_MERGES:
        joined = merge.replace(" ", "")
        if merge in merges:
            continue
        merges.append(merge)
        if joined not in tokens:
            tokens.append(joined)
            types.append(gguf.TokenType.NORMAL)
    return tokens, [int(t) for t in types], merges


def spm_vocab() -> tuple[list[str], list[int], list[float]]:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [
        gguf.TokenType.BYTE
    ] * 256
    scores = [0.0, 0.0, 0.0] + [0.0] * 256
    pieces = list(SPM_PIECES) + [c for c in SPM_CHARS if c not in SPM_PIECES]
    for rank, piece in enumerate(pieces):
        tokens.append(piece)
        types.append(gguf.TokenType.NORMAL)
        scores.append(-float(rank))  # earlier pieces merge first
    return tokens, [int(t) for t in types], scores


def _random_k_blocks(rows: int, cols: int, qtype: QT, std: float, rng: np.random.Generator) -> np.ndarray:
    """Valid random Q2_K / Q3_K / Q4_K / Q5_K / Q6_K / IQ4_NL / IQ4_XS blocks, uint8[rows, bytes_per_row]
    (gguf cannot quantize these)."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = rows * cols // block_size
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    if qtype == QT.Q4_K:  # d f16 | dmin f16 | scales[12] | qs[128]; x = d*sc*q - dmin*m, sc,m in 0..63
        d = np.float16(4 * std / (63 * 15))
        raw[:, 0:2] = np.frombuffer(d.tobytes(), dtype=np.uint8)
        raw[:, 2:4] = np.frombuffer(np.float16(float(d) * 7.5).tobytes(), dtype=np.uint8)
    elif qtype == QT.Q5_K:  # as Q4_K with 5-bit q (0..31): d f16 | dmin f16 | scales[12] | qh[32] | qs[128]
        d = np.float16(4 * std / (63 * 31))
        raw[:, 0:2] = np.frombuffer(d.tobytes(), dtype=np.uint8)
        raw[:, 2:4] = np.frombuffer(np.float16(float(d) * 15.5).tobytes(), dtype=np.uint8)
    elif qtype == QT.Q2_K:  # scales[16] | qs[64] | d f16 | dmin f16; x = d*sc*q - dmin*m, sc,m 0..15, q 0..3
        d = np.float16(std / 12)
        raw[:, 80:82] = np.frombuffer(d.tobytes(), dtype=np.uint8)
        raw[:, 82:84] = np.frombuffer(np.float16(float(d) * 1.5).tobytes(), dtype=np.uint8)
    elif qtype == QT.Q3_K:  # hmask[32] | qs[64] | scales[12] | d f16; x = d*(sc-32)*q, q -4..3
        raw[:, 108:110] = np.frombuffer(np.float16(std / 42).tobytes(), dtype=np.uint8)
    elif qtype == QT.Q6_K:  # ql[128] | qh[64] | scales int8[16] | d f16; x = d*scale*(q-32)
        raw[:, 192:208] = rng.integers(-64, 64, size=(n_blocks, 16), dtype=np.int8).view(np.uint8)
        raw[:, 208:210] = np.frombuffer(np.float16(std / (32 * 18)).tobytes(), dtype=np.uint8)
    elif qtype == QT.IQ4_NL:  # d f16 | qs[16]; x = d*kvalues[q], |kvalues| <= 127
        raw[:, 0:2] = np.frombuffer(np.float16(std / 70).tobytes(), dtype=np.uint8)
    elif qtype == QT.IQ4_XS:  # d f16 | scales_h u16 | scales_l[4] | qs[128]; x = d*(scale-32)*kvalues[q]
        raw[:, 0:2] = np.frombuffer(np.float16(std / (18 * 70)).tobytes(), dtype=np.uint8)
    else:
        raise ValueError(f"no hand-made blocks for {qtype.name}")
    return raw.reshape(rows, -1)


def encode_tensor(values: np.ndarray, qtype: QT, rng: np.random.Generator) -> np.ndarray:
    """float32[rows, cols] -> the stored array for ``qtype`` (K-quants: random valid blocks)."""
    if values.ndim == 3:  # stacked experts: encoded as one matrix of all their rows
        return encode_tensor(values.reshape(-1, values.shape[-1]), qtype, rng).reshape(*values.shape[:2], -1)
    if qtype in (QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K, QT.IQ4_NL, QT.IQ4_XS):
        return _random_k_blocks(values.shape[0], values.shape[-1], qtype, float(values.std()), rng)
    return gguf.quants.quantize(values.astype(np.float32), qtype)


def _weights(spec: TinySpec, vocab_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """float32 weights, row-major (out_features, in_features)."""
    d, ff, hd = spec.d_model, spec.d_ff, _head_dim(spec)
    q, kv = spec.n_heads * hd, spec.n_kv_heads * hd

    def mat(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def norm(n: int) -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    gemma = spec.arch in ("gemma2", "gemma3")
    # gemma scales embeddings by sqrt(d) on the way in: keep the residual stream near unit size
    embd_std = 1.0 / np.sqrt(d) if gemma else 1.0
    w = {"token_embd.weight": (embd_std * rng.standard_normal((vocab_size, d))).astype(np.float32)}
    for i in range(spec.n_layers):
        p = f"blk.{i}."
        w[p + "attn_norm.weight"] = norm(d)
        w[p + "attn_q.weight"] = mat(q, d)
        w[p + "attn_k.weight"] = mat(kv, d)
        w[p + "attn_v.weight"] = mat(kv, d)
        if spec.arch in ("qwen2", "qwen2moe"):
            for name, n in (("attn_q.bias", q), ("attn_k.bias", kv), ("attn_v.bias", kv)):
                w[p + name] = (0.1 * rng.standard_normal(n)).astype(np.float32)
        if spec.arch in ("qwen3", "gemma3", "qwen3moe"):
            # Raw queries and keys far from unit RMS (as in real Qwen3), so that leaving out the per-head
            # norms changes the logits well beyond any test's tolerance.
            w[p + "attn_q.weight"] *= 4.0
            w[p + "attn_k.weight"] *= 4.0
            w[p + "attn_q_norm.weight"] = norm(hd)
            w[p + "attn_k_norm.weight"] = norm(hd)
        w[p + "attn_output.weight"] = mat(d, q)
        w[p + "ffn_norm.weight"] = norm(d)
        w[p + "ffn_gate.weight"] = mat(ff, d)
        w[p + "ffn_up.weight"] = mat(ff, d)
        w[p + "ffn_down.weight"] = mat(d, ff)
        if spec.n_experts:  # stacked [expert, out, in], and the router
            e, fe = spec.n_experts, spec.d_ff_expert
            del w[p + "ffn_gate.weight"], w[p + "ffn_up.weight"], w[p + "ffn_down.weight"]
            w[p + "ffn_gate_inp.weight"] = 4.0 * mat(e, d)  # decisive routing, not a near-uniform mix
            w[p + "ffn_gate_exps.weight"] = np.stack([mat(fe, d) for _ in range(e)])
            w[p + "ffn_up_exps.weight"] = np.stack([mat(fe, d) for _ in range(e)])
            w[p + "ffn_down_exps.weight"] = np.stack([mat(d, fe) for _ in range(e)])
        if spec.d_ff_shared:
            fs = spec.d_ff_shared
            w[p + "ffn_gate_shexp.weight"], w[p + "ffn_up_shexp.weight"] = mat(fs, d), mat(fs, d)
            w[p + "ffn_down_shexp.weight"] = mat(d, fs)
            w[p + "ffn_gate_inp_shexp.weight"] = (rng.standard_normal(d) / np.sqrt(d)).astype(np.float32)
        if gemma:
            w[p + "post_attention_norm.weight"] = norm(d)
            w[p + "post_ffw_norm.weight"] = norm(d)
        if spec.arch == "phi3":  # fused as Phi-3's converter writes them: rows [q | k | v], [gate | up]
            w[p + "attn_qkv.weight"] = np.concatenate([w.pop(p + f"attn_{n}.weight") for n in "qkv"])
            w[p + "ffn_up.weight"] = np.concatenate(
                [w.pop(p + "ffn_gate.weight"), w.pop(p + "ffn_up.weight")]
            )
    w["output_norm.weight"] = norm(d)
    if not spec.tied:
        w["output.weight"] = mat(vocab_size, d)
    return w


def tiny_weights(spec: TinySpec) -> dict[str, np.ndarray]:
    """The float32 weights (GGUF names and layout) ``write_tiny_gguf(path, spec)`` writes, before any
    quantization: the same arrays, from the same seed."""
    tokens = gpt2_vocab()[0] if spec.tokenizer == "gpt2" else (spec.spm_vocab or spm_vocab())[0]
    rng = np.random.default_rng(spec.seed)
    weights = {**_weights(spec, spec.embedding_rows or len(tokens), rng), **spec.extra_tensors}
    return {name: w for name, w in weights.items() if name not in spec.drop_tensors}


def _head_dim(spec: TinySpec) -> int:
    return spec.head_dim if spec.head_dim is not None else spec.d_model // spec.n_heads


def _tensor_type(spec: TinySpec, name: str, values: np.ndarray) -> QT:
    if name in spec.tensor_types:
        return spec.tensor_types[name]
    if values.ndim == 1 or name.endswith("ffn_gate_inp.weight"):  # llama.cpp keeps routers F32 too
        return QT.F32
    if name in ("token_embd.weight", "output.weight") and spec.embed_type is not None:
        return spec.embed_type
    return spec.weight_type


def _add_tokenizer(writer: gguf.GGUFWriter, spec: TinySpec) -> int:
    if spec.tokenizer == "gpt2":
        tokens, types, merges = gpt2_vocab()
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(spec.pre)
        writer.add_token_merges(merges)
        bos, eos = 1, 2  # <|im_start|>, <|im_end|> (as SmolLM2)
    elif spec.tokenizer == "llama":
        tokens, types, scores = spec.spm_vocab or spm_vocab()
        writer.add_tokenizer_model("llama")
        writer.add_token_scores(scores)
        writer.add_add_space_prefix(True)
        bos, eos = 1, 2
    else:
        raise ValueError(f"unknown tiny tokenizer {spec.tokenizer!r}")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_bos_token_id(bos)
    writer.add_eos_token_id(eos)
    writer.add_add_bos_token(spec.add_bos)
    if spec.chat_template is not None:
        writer.add_chat_template(spec.chat_template)
    return len(tokens)


def write_tiny_gguf(path: str | Path, spec: TinySpec | None = None) -> Path:
    """Write a tiny model described by ``spec`` to ``path`` and return the path."""
    spec = spec or TinySpec()
    path = Path(path)
    rng = np.random.default_rng(spec.seed)
    writer = gguf.GGUFWriter(str(path), spec.arch)
    writer.add_block_count(spec.n_layers)
    writer.add_context_length(spec.context_length)
    writer.add_embedding_length(spec.d_model)
    writer.add_feed_forward_length(spec.d_ff)
    writer.add_head_count(spec.n_heads)
    writer.add_head_count_kv(spec.n_kv_heads)
    writer.add_rope_freq_base(spec.rope_theta)
    writer.add_layer_norm_rms_eps(spec.rms_eps)
    writer.add_rope_dimension_count(_head_dim(spec))
    if spec.head_dim is not None:
        writer.add_key_length(spec.head_dim)
        writer.add_value_length(spec.head_dim)
    if spec.arch == "gemma2":
        writer.add_sliding_window(spec.sliding_window)
        writer.add_attn_logit_softcapping(spec.attn_softcap)
        writer.add_final_logit_softcapping(spec.final_softcap)
    if spec.arch == "gemma3":
        if spec.sliding_window:
            writer.add_sliding_window(spec.sliding_window)
        if spec.final_softcap:
            writer.add_final_logit_softcapping(spec.final_softcap)
    if spec.n_experts:
        writer.add_expert_count(spec.n_experts)
        writer.add_expert_used_count(spec.n_experts_used)
        writer.add_expert_feed_forward_length(spec.d_ff_expert)
    if spec.d_ff_shared:
        writer.add_expert_shared_feed_forward_length(spec.d_ff_shared)
    vocab_size = _add_tokenizer(writer, spec)
    for key, value in spec.extra_metadata.items():
        _add_metadata(writer, key, value)
    weights = {**_weights(spec, spec.embedding_rows or vocab_size, rng), **spec.extra_tensors}
    for name, values in weights.items():
        if name in spec.drop_tensors:
            continue
        qtype = _tensor_type(spec, name, values)
        stored = values if values.ndim == 1 else encode_tensor(values, qtype, rng)
        writer.add_tensor(name, stored, raw_dtype=None if qtype in (QT.F32, QT.F16) else qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _add_metadata(writer: gguf.GGUFWriter, key: str, value: object) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    else:
        raise TypeError(f"unsupported metadata value for {key}: {value!r}")
