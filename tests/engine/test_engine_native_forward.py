"""The native forward pass (csrc/model/) against the independent NumPy float64 reference."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT
from tiny_gguf import TinySpec, write_tiny_gguf

from cpullm.model.gguf_file import GGUFError
from cpullm.model.model_file import ModelFile
from cpullm.native.runner import NativeError, NativeModel, SeqChunk
from cpullm.testing import reference

# Activations are quantized to 8 bits for quantized weights, so those agree less tightly than floats.
TOLERANCE = {QT.F32: 1e-4, QT.F16: 1e-3, QT.BF16: 1e-2}
QUANT_TOLERANCE = 5e-2
TOKENS = [1, 5, 9, 33, 100, 7, 8, 200, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 250, 17]


@pytest.fixture(scope="module")
def lib(native_lib_dir: Path):
    from cpullm.native import loader

    os.environ.setdefault("CPULLM_LIB_DIR", str(native_lib_dir))
    return loader.load_variant(loader.select(native_lib_dir))


def _model(path: Path, lib) -> tuple[ModelFile, NativeModel]:
    mf = ModelFile.open(path)
    return mf, NativeModel(mf, lib)


def _prefill(nm: NativeModel, tokens: list[int], n_logits: int | None = None) -> np.ndarray:
    cache = nm.new_cache(8, 16, "f32")
    return nm.step(cache, [SeqChunk(tokens, 0, list(range(8)), n_logits or len(tokens))]).copy()


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


CASES = [
    TinySpec(),
    TinySpec(tied=False),
    TinySpec(arch="qwen2"),
    TinySpec(arch="mistral"),
    TinySpec(arch="qwen3", head_dim=128),  # per-head Q/K norm; q_dim (512) != d_model (256), as Qwen3-0.6B
    TinySpec(arch="qwen3", head_dim=128, weight_type=QT.Q8_0, tied=False),
    # YaRN 4x over a 4096-token original context: pairs 10..23 of 32 blend the scaled and unscaled angles
    TinySpec(
        arch="qwen3",
        extra_metadata={
            "qwen3.rope.scaling.type": "yarn",
            "qwen3.rope.scaling.factor": 4.0,
            "qwen3.rope.scaling.original_context_length": 4096,
        },
    ),
    # Post-norms, GeGLU, soft-capped scores and logits; layer 0 sees an 8-token (13-token) window whose
    # keys cross a 16-key tile, layer 1 all.
    TinySpec(arch="gemma2", n_heads=8, n_kv_heads=4),
    TinySpec(arch="gemma2", weight_type=QT.Q8_0, sliding_window=13),
    TinySpec(arch="phi3", tied=False),  # fused QKV and gate-up: one-part projections
    # Q/K norms; five 8-token-window layers with RoPE base 10000, then a global one with base 1e6 scaled 4x
    TinySpec(
        arch="gemma3",
        rope_theta=1e6,
        extra_metadata={"gemma3.rope.scaling.type": "linear", "gemma3.rope.scaling.factor": 4.0},
    ),
    TinySpec(arch="gemma3", weight_type=QT.Q4_K, sliding_window=13),
    # Mixture of experts: 4 experts, top 2 (Qwen3-MoE), and a Mixtral-style llama with 8 quantized experts
    TinySpec(arch="qwen3moe"),
    TinySpec(arch="qwen3moe", weight_type=QT.Q8_0, tensor_types={"blk.1.ffn_down_exps.weight": QT.Q6_K}),
    TinySpec(arch="llama", n_experts=8, n_experts_used=2, weight_type=QT.Q4_K, tied=False),
    TinySpec(arch="qwen2moe"),  # routes not renormalized, and a shared expert behind a sigmoid gate
    TinySpec(arch="qwen2moe", weight_type=QT.Q4_0),
    TinySpec(arch="phi3", weight_type=QT.Q4_0),
    TinySpec(weight_type=QT.F16),
    TinySpec(weight_type=QT.BF16),
    TinySpec(weight_type=QT.Q8_0),
    TinySpec(weight_type=QT.Q4_0),
    TinySpec(weight_type=QT.Q4_1, embed_type=QT.Q8_0),
    TinySpec(weight_type=QT.Q4_K, tied=False),
    TinySpec(weight_type=QT.Q6_K, arch="qwen2"),
    # Q/K/V of different types cannot be fused: the projection runs part by part.
    TinySpec(
        weight_type=QT.Q4_0, tensor_types={"blk.0.attn_v.weight": QT.Q8_0, "blk.1.ffn_up.weight": QT.F16}
    ),
    TinySpec(weight_type=QT.Q5_0),
    TinySpec(weight_type=QT.Q5_1, arch="mistral", tied=False),
    TinySpec(weight_type=QT.IQ4_NL, arch="qwen2", embed_type=QT.Q8_0),
    TinySpec(weight_type=QT.Q5_K, tied=False, tensor_types={"blk.1.ffn_down.weight": QT.Q6_K}),
    TinySpec(weight_type=QT.IQ4_XS, arch="qwen2"),
    # llama.cpp's Q3_K_M / Q2_K mixes: Q3_K / Q2_K with Q4_K / Q5_K / Q6_K tensors.
    TinySpec(
        weight_type=QT.Q3_K,
        tied=False,
        tensor_types={
            "blk.0.attn_v.weight": QT.Q5_K,
            "blk.1.ffn_down.weight": QT.Q4_K,
            "output.weight": QT.Q6_K,
        },
    ),
    TinySpec(
        weight_type=QT.Q2_K,
        tensor_types={
            "blk.0.attn_v.weight": QT.Q3_K,
            "blk.1.ffn_down.weight": QT.Q3_K,
            "token_embd.weight": QT.Q4_K,
        },
    ),
    # llama.cpp's IQ4_NL file: IQ4_NL with Q5_K / IQ4_XS tensors and a Q8_0 output.
    TinySpec(
        weight_type=QT.IQ4_NL,
        tied=False,
        tensor_types={
            "output.weight": QT.Q8_0,
            "blk.0.ffn_down.weight": QT.Q5_K,
            "blk.1.attn_v.weight": QT.IQ4_XS,
            "blk.1.ffn_down.weight": QT.IQ4_XS,
        },
    ),
    # A llama.cpp-style _K_M mix: K-quants with Q5_0 / Q5_1 / Q6_K / Q8_0 tensors, in the embedding and
    # the output matrix too.
    TinySpec(
        weight_type=QT.Q4_K,
        tied=False,
        tensor_types={
            "token_embd.weight": QT.Q5_1,
            "output.weight": QT.Q5_0,
            "blk.0.attn_k.weight": QT.Q5_0,
            "blk.0.attn_v.weight": QT.Q6_K,
            "blk.1.attn_q.weight": QT.Q5_1,
            "blk.0.ffn_down.weight": QT.Q6_K,
            "blk.1.ffn_gate.weight": QT.Q8_0,
        },
    ),
]


@pytest.mark.parametrize(
    "spec", CASES, ids=lambda s: f"{s.arch}-{s.weight_type.name}-{'tied' if s.tied else 'untied'}"
)
def test_logits_match_reference(tmp_path, lib, spec):
    path = write_tiny_gguf(tmp_path / "m.gguf", spec)
    mf, nm = _model(path, lib)
    got = _prefill(nm, TOKENS)
    want = reference.ReferenceModel(mf).logits(TOKENS)
    tol = TOLERANCE.get(spec.weight_type, QUANT_TOLERANCE)
    assert got.shape == want.shape
    assert _rel_err(got, want) < tol
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.999


# gemma2 with Gemma 2's own caps: with the tiny ones (3) the two attention paths' tanh, a few 1e-7 apart,
# move 8-bit activation roundings and logits saturate near the cap (measured 1.1e-2 at block size 4);
# test_reference_attention_matches holds the tiny caps to float rounding instead.
DECODE_SPECS = {
    "llama": TinySpec(weight_type=QT.Q4_1),
    "qwen3": TinySpec(arch="qwen3", weight_type=QT.Q4_1),
    "gemma2": TinySpec(arch="gemma2", weight_type=QT.Q4_1, attn_softcap=50.0, final_softcap=30.0),
    "phi3": TinySpec(arch="phi3", weight_type=QT.Q4_1),
    # Q8_0: at Q4_1 the six layers carry a flipped activation rounding to 5.3e-3 at block size 4 (gemma2
    # made six layers deep: 7.1e-3; two-layer gemma3: 1.9e-7), past the tolerance for depth, not gemma3.
    "gemma3": TinySpec(arch="gemma3", weight_type=QT.Q8_0, rope_theta=1e6),
    "qwen3moe": TinySpec(arch="qwen3moe", weight_type=QT.Q8_0),
    "qwen2moe": TinySpec(arch="qwen2moe", weight_type=QT.Q8_0),
}


@pytest.mark.parametrize("arch", list(DECODE_SPECS))
@pytest.mark.parametrize(("block_size", "tol"), [(16, 1e-4), (4, 5e-3)])
def test_decode_steps_match_prefill(tmp_path, lib, block_size, tol, arch):
    # Block size 16 takes the SIMD attention, 4 the reference (f64 sums): the same path as the one-shot
    # prefill must agree to float rounding, the other to what 8-bit activations make of rounding (an
    # activation whose rounding flips moves the logits by up to 3e-3 here: measured on phi3; llama's seed
    # happens to flip none). test_reference_attention_matches holds the reference path to 1e-4.
    path = write_tiny_gguf(tmp_path / "m.gguf", DECODE_SPECS[arch])
    _, nm = _model(path, lib)
    full = _prefill(nm, TOKENS)
    cache = nm.new_cache(8, block_size, "f32")
    table = [7, 2, 5, 0, 1, 3]  # any physical order; positions cross blocks
    rows = [nm.step(cache, [SeqChunk(TOKENS[:5], 0, table, 5)]).copy()]
    for i in range(5, len(TOKENS), 3):  # chunked prefill, then single tokens
        chunk = TOKENS[i : i + 3]
        rows.append(nm.step(cache, [SeqChunk(chunk, i, table, len(chunk))]).copy())
    stepped = np.concatenate(rows)
    assert _rel_err(stepped, full) < tol


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma2", "gemma3", "phi3", "qwen3moe", "qwen2moe"])
def test_reference_attention_matches(tmp_path, lib, arch):
    """Blocks of 4 tokens take the reference attention (kernels/attention/attention_ref.cc): with float
    weights it matches the float64 forward pass too, sliding window and soft-capping included."""
    path = write_tiny_gguf(tmp_path / "m.gguf", TinySpec(arch=arch))
    mf, nm = _model(path, lib)
    got = nm.step(nm.new_cache(8, 4, "f32"), [SeqChunk(TOKENS, 0, list(range(8)), len(TOKENS))]).copy()
    assert _rel_err(got, reference.ReferenceModel(mf).logits(TOKENS)) < TOLERANCE[QT.F32]


def test_longrope_factors_follow_the_context(tmp_path, lib):
    """LongRoPE (Phi-3.5/Phi-4-mini): a run of up to the original context (64 here) uses the short factors,
    a longer one the long factors, in the native pass as in the reference; the two differ."""
    half = np.arange(32)
    spec = TinySpec(
        arch="phi3",
        tied=False,
        extra_metadata={
            "phi3.rope.scaling.original_context_length": 64,
            "phi3.rope.scaling.attn_factor": 1.19,
        },
        extra_tensors={
            "rope_factors_short.weight": (1.0 + 0.05 * half).astype(np.float32),
            "rope_factors_long.weight": (1.0 + 0.9 * half).astype(np.float32),
        },
    )
    mf = ModelFile.open(write_tiny_gguf(tmp_path / "m.gguf", spec))
    outs = []
    for context in (64, 128):
        got = _prefill(NativeModel(mf, lib, context=context), TOKENS)
        assert _rel_err(got, reference.ReferenceModel(mf, context=context).logits(TOKENS)) < TOLERANCE[QT.F32]
        outs.append(got)
    assert _rel_err(outs[0], outs[1]) > 1e-2


def test_moe_routing_without_renormalization(tmp_path, lib):
    """Routes weighted by their plain softmax probabilities (OLMoE-style, moe_norm_topk off) and routes
    renormalized over the chosen experts differ, and each matches the reference computed the same way."""
    path = write_tiny_gguf(tmp_path / "m.gguf", TinySpec(arch="qwen3moe", n_experts=8, n_experts_used=3))
    base = ModelFile.open(path)
    outs = []
    for norm in (True, False):
        mf = dataclasses.replace(base, config=dataclasses.replace(base.config, moe_norm_topk=norm))
        got = _prefill(NativeModel(mf, lib), TOKENS)
        assert _rel_err(got, reference.ReferenceModel(mf).logits(TOKENS)) < TOLERANCE[QT.F32]
        outs.append(got)
    assert _rel_err(outs[0], outs[1]) > 1e-2


def test_f16_cache_is_close_to_f32(tmp_path, lib):
    path = write_tiny_gguf(tmp_path / "m.gguf", TinySpec())
    _, nm = _model(path, lib)
    f32 = _prefill(nm, TOKENS)
    f16 = nm.step(nm.new_cache(8, 16, "f16"), [SeqChunk(TOKENS, 0, list(range(8)), len(TOKENS))]).copy()
    assert 0 < _rel_err(f16, f32) < 1e-2


def test_q8_0_cache_is_close_to_f32_and_refuses_other_head_dims(tmp_path, lib):
    path = write_tiny_gguf(tmp_path / "m.gguf", TinySpec())  # head_dim 64
    _, nm = _model(path, lib)
    f32 = _prefill(nm, TOKENS)
    q8 = nm.step(nm.new_cache(8, 16, "q8_0"), [SeqChunk(TOKENS, 0, list(range(8)), len(TOKENS))]).copy()
    assert 0 < _rel_err(q8, f32) < 2e-2
    odd = write_tiny_gguf(tmp_path / "odd.gguf", TinySpec(head_dim=48))
    _, nm = _model(odd, lib)
    with pytest.raises(RuntimeError, match="Q8_0 KV cache needs a head dimension that is a multiple of 32"):
        nm.new_cache(8, 16, "q8_0")


def test_same_result_at_any_thread_count(tmp_path, lib):
    path = write_tiny_gguf(tmp_path / "m.gguf", TinySpec(weight_type=QT.Q4_1, d_model=512, d_ff=1024))
    _, nm = _model(path, lib)
    outs = []
    for n in (1, 2, 3):
        nm.set_threads(n)
        outs.append(_prefill(nm, TOKENS))
    nm.set_threads(1)
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma2", "gemma3", "phi3", "qwen3moe", "qwen2moe"])
def test_batched_sequences_match_alone(tmp_path, lib, arch):
    path = write_tiny_gguf(tmp_path / "m.gguf", TinySpec(arch=arch, weight_type=QT.Q8_0))
    _, nm = _model(path, lib)
    a, b = TOKENS[:9], TOKENS[4:]
    alone_a = _prefill(nm, a, 1)
    alone_b = _prefill(nm, b, 1)
    cache = nm.new_cache(8, 16, "f32")
    both = nm.step(cache, [SeqChunk(a, 0, [0, 1], 1), SeqChunk(b, 0, [2, 3], 1)]).copy()
    assert _rel_err(both[0:1], alone_a) < 1e-5 and _rel_err(both[1:2], alone_b) < 1e-5
    assert int(np.argmax(both[0])) == int(np.argmax(alone_a[0]))
    # Next step: one decode token for a, a prefill chunk for b, in the same call.
    nxt = nm.step(cache, [SeqChunk([3], len(a), [0, 1], 1), SeqChunk([4, 5], len(b), [2, 3], 2)])
    assert nxt.shape == (3, nm.config.vocab_size)


def test_bad_batches_are_refused_with_a_reason(tmp_path, lib):
    path = write_tiny_gguf(tmp_path / "m.gguf", TinySpec())
    _, nm = _model(path, lib)
    cache = nm.new_cache(4, 4, "f32")
    with pytest.raises(NativeError, match="token id 99999 is outside the vocabulary"):
        nm.step(cache, [SeqChunk([1, 99999], 0, [0])])
    with pytest.raises(NativeError, match="block table has 1 blocks, positions up to 6 need 2"):
        nm.step(cache, [SeqChunk([1] * 6, 0, [0])])
    with pytest.raises(NativeError, match="block id 9 is outside the cache"):
        nm.step(cache, [SeqChunk([1], 0, [9])])
    with pytest.raises(ValueError, match="KV cache dtype"):
        nm.new_cache(4, 4, "q8")
    # The model still works after refusals.
    assert nm.step(cache, [SeqChunk([1, 2], 0, [0])]).shape == (1, nm.config.vocab_size)


@pytest.mark.slow
def test_unsupported_tensor_type_names_tensor_and_type(tmp_path, lib):
    # The library's own table decides (MXFP4 is a type the gguf package can write and cpullm cannot run).
    path = write_tiny_gguf(tmp_path / "mxfp4.gguf", TinySpec(tensor_types={"blk.1.attn_k.weight": QT.MXFP4}))
    mf = ModelFile.open(path)  # the file itself is valid
    msg = r"tensor 'blk.1.attn_k.weight' has type MXFP4, which cpullm does not support \(supported: .*Q4_K"
    with pytest.raises(GGUFError, match=msg):
        NativeModel(mf, lib)


def test_smollm2_answers_paris_and_tracks_the_float_reference(smollm2_path, lib):
    from cpullm.model.tokenizer import Tokenizer

    mf, nm = _model(smollm2_path, lib)
    tok = Tokenizer.from_gguf(mf.gguf)
    prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    ids = tok.encode(prompt, add_special=False, parse_special=True)
    table = list(range(16))
    want = reference.ReferenceModel(mf).logits(ids, last_only=True)
    # Against the float64 reference with an f32 KV cache (measured 0.9993 here); the engine's default f16
    # cache adds its own rounding (0.9990 measured), so that one is held to a slightly looser bound.
    exact_kv = nm.step(nm.new_cache(16, 16, "f32"), [SeqChunk(ids, 0, table)]).copy()
    assert np.corrcoef(exact_kv[0], want[0])[0, 1] >= 0.999
    # The optional Q8_0 cache: 0.99885 measured (f16: 0.99896), the same answer.
    for kv_dtype in ("f16", "q8_0"):
        cache = nm.new_cache(16, 16, kv_dtype)
        logits = nm.step(cache, [SeqChunk(ids, 0, table)]).copy()
        assert np.corrcoef(logits[0], want[0])[0, 1] >= 0.998, kv_dtype
        out, pos = [], len(ids)
        for _ in range(8):
            out.append(int(np.argmax(logits[0])))
            logits = nm.step(cache, [SeqChunk([out[-1]], pos, table)])
            pos += 1
        assert tok.decode(out).startswith("The capital of France is Paris."), kv_dtype


def test_products_run_from_packed_weights_and_results_do_not_change(tmp_path, lib, native_lib_dir):
    from cpullm.native import loader

    path = write_tiny_gguf(tmp_path / "m.gguf", TinySpec(weight_type=QT.Q4_1, embed_type=QT.Q8_0))
    mf, nm = _model(path, lib)
    if nm.repacked_bytes == 0:
        pytest.skip(f"the {lib.cpullm_variant_name().decode()} variant has no packed layout")
    names = set(nm.packed_names())
    assert {"blk.0.attn_q.weight", "blk.1.ffn_down.weight", "token_embd.weight"} <= names
    assert "blk.0.attn_norm.weight" not in names
    generic = NativeModel(mf, loader.load_variant(loader.select(native_lib_dir, forced="generic")))
    assert _rel_err(_prefill(nm, TOKENS), _prefill(generic, TOKENS)) < 1e-4


def test_long_steps_run_as_passes_with_logits_in_order(tmp_path, lib):
    from cpullm.native.runner import NativeModel as NM

    # 150 + 100 tokens: more than one native pass (128 tokens), cut inside the first sequence and again
    # inside the second; every position of the first sequence and the last 3 of the second want logits.
    path = write_tiny_gguf(tmp_path / "m.gguf", TinySpec(context_length=256))
    mf = ModelFile.open(path)
    nm = NM(mf, lib)
    rng = np.random.default_rng(3)
    a = [int(t) for t in rng.integers(0, nm.config.vocab_size, 150)]
    b = [int(t) for t in rng.integers(0, nm.config.vocab_size, 100)]
    cache = nm.new_cache(20, 16, "f32")
    out = nm.step(
        cache, [SeqChunk(a, 0, list(range(10)), 150), SeqChunk(b, 0, list(range(10, 17)), 3)]
    ).copy()
    assert out.shape == (153, nm.config.vocab_size)
    ref = reference.ReferenceModel(mf)
    assert _rel_err(out[:150], ref.logits(a)) < 1e-4
    assert _rel_err(out[150:], ref.logits(b)[-3:]) < 1e-4


@pytest.mark.parametrize(
    "spec",
    [
        TinySpec(weight_type=QT.Q8_0, context_length=2048),
        # a 600-key window: the decode's first segment lies wholly outside it, the second partly
        TinySpec(arch="gemma2", weight_type=QT.Q8_0, context_length=2048, sliding_window=600),
    ],
    ids=["llama", "gemma2-window"],
)
def test_long_context_decode_is_split_and_agrees_with_prefill(tmp_path, lib, spec):
    """A decode token past kDecodeSplitKeys (512) keys runs split into segments merged afterwards
    (attention_decode): it agrees with the same position computed by a one-shot prefill, and it is
    identical at any thread count and alone or batched with another sequence."""
    path = write_tiny_gguf(tmp_path / "m.gguf", spec)
    _, nm = _model(path, lib)
    rng = np.random.default_rng(3)
    depth = 1300  # keys 0..1300: three segments, the last one partial
    tokens = [int(t) for t in rng.integers(0, nm.config.vocab_size, size=depth + 1)]
    n_blocks = -(-(depth + 1) // 16)
    table = list(range(n_blocks))
    cache = nm.new_cache(2 * n_blocks, 16, "f32")
    nm.step(cache, [SeqChunk(tokens[:depth], 0, table, 1)])

    def decode(threads: int) -> np.ndarray:
        nm.set_threads(threads)
        return nm.step(cache, [SeqChunk(tokens[depth:], depth, table, 1)]).copy()

    try:
        one, two = decode(1), decode(2)
        other = list(range(n_blocks, 2 * n_blocks))
        nm.step(cache, [SeqChunk(tokens[:depth], 0, other, 1)])  # a second sequence with the same context
        batched = nm.step(cache, [SeqChunk(tokens[depth:], depth, table, 1), SeqChunk([5], depth, other, 1)])
    finally:
        nm.set_threads(1)
    assert np.array_equal(one, two)
    assert np.array_equal(batched[0:1], one)
    prefill = nm.step(nm.new_cache(n_blocks, 16, "f32"), [SeqChunk(tokens, 0, table, 1)]).copy()
    assert _rel_err(one, prefill) < 1e-4
