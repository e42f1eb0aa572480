"""GGUF reading and model validation: agreement with gguf.GGUFReader, and clear errors."""

from __future__ import annotations

import re
import time
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT
from tiny_gguf import ALL_TENSOR_TYPES, TinySpec, write_tiny_gguf

from cpullm.model.config import SUPPORTED_ARCHITECTURES, ModelConfig, RopeLayout
from cpullm.model.gguf_file import GGUFError, GGUFFile
from cpullm.model.model_file import ModelFile, check_tensor_shapes

ALL_TYPES = ALL_TENSOR_TYPES


def _assert_matches_reference_reader(path: Path) -> None:
    mine = GGUFFile.open(path)
    ref = gguf.GGUFReader(path)
    assert mine.data_offset == ref.data_offset
    assert [t.name for t in ref.tensors] == list(mine.tensors)
    for t in ref.tensors:
        ours = mine.tensors[t.name]
        assert ours.type == t.tensor_type
        assert ours.ne == tuple(int(x) for x in t.shape)
        assert ours.offset == t.data_offset
        assert ours.data.dtype == t.data.dtype and ours.data.shape == t.data.shape
        assert np.array_equal(ours.data.view(np.uint8), t.data.view(np.uint8)), t.name
    for key, field in ref.fields.items():
        if key.startswith("GGUF."):
            continue
        value = field.contents()
        ours_value = mine.metadata[key]
        if isinstance(ours_value, np.ndarray):
            assert ours_value.tolist() == list(value), key
        elif isinstance(ours_value, float):
            assert ours_value == pytest.approx(value), key
        else:
            assert ours_value == value, key


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
def test_reader_agrees_with_gguf_package(tiny_dir: Path, qtype: QT) -> None:
    path = write_tiny_gguf(tiny_dir / f"agree_{qtype.name}.gguf", TinySpec(weight_type=qtype, tied=False))
    _assert_matches_reference_reader(path)
    model = ModelFile.open(path)
    w = model.tensor("blk.0.ffn_down.weight")
    assert w.type == qtype
    assert w.ne == (512, 256) and w.shape == (256, 512) and (w.rows, w.cols) == (256, 512)
    dense = gguf.quants.dequantize(w.data, w.type)
    assert dense.shape == (256, 512)
    assert np.isfinite(dense).all() and dense.std() > 0


@pytest.mark.parametrize(
    ("arch", "tied", "layout", "bias"),
    [
        ("llama", True, RopeLayout.NORMAL, False),
        ("llama", False, RopeLayout.NORMAL, False),
        ("mistral", False, RopeLayout.NORMAL, False),
        ("qwen2", True, RopeLayout.NEOX, True),
        ("qwen3", True, RopeLayout.NEOX, False),
    ],
)
def test_config_fields(tiny_dir: Path, arch: str, tied: bool, layout: RopeLayout, bias: bool) -> None:
    spec = TinySpec(arch=arch, tied=tied, n_layers=3, n_heads=8, n_kv_heads=2, d_ff=768, rope_theta=5e5)
    config = ModelFile.open(write_tiny_gguf(tiny_dir / f"cfg_{arch}_{tied}.gguf", spec)).config
    assert (config.arch, config.n_layers, config.d_model, config.d_ff) == (arch, 3, 256, 768)
    assert (config.n_heads, config.n_kv_heads, config.head_dim) == (8, 2, 32)
    assert config.vocab_size == 282 and config.context_length == 128
    assert config.rope_theta == 5e5 and config.rope_dim == 32
    assert config.rms_eps == pytest.approx(1e-5)
    assert config.rope_layout is layout
    assert config.tied_embeddings is tied
    assert config.has_qkv_bias is bias
    assert config.qk_norm is (arch == "qwen3")
    assert (config.bos_id, config.eos_id) == (1, 2)
    assert config.rope_scaling == "none" and config.rope_scale == 1.0


def test_linear_rope_scaling_is_read(tiny_dir: Path) -> None:
    spec = TinySpec(
        extra_metadata={
            "llama.rope.scaling.type": "linear",
            "llama.rope.scaling.factor": 4.0,
            "llama.rope.scaling.original_context_length": 32,
        }
    )
    config = ModelFile.open(write_tiny_gguf(tiny_dir / "rope_linear.gguf", spec)).config
    assert (config.rope_scaling, config.rope_scale, config.rope_orig_context) == ("linear", 4.0, 32)


def test_yarn_rope_scaling_is_read(tiny_dir: Path) -> None:
    yarn = {"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0}
    with pytest.raises(GGUFError, match="original_context_length' is 'absent or 0'; expected the context"):
        ModelFile.open(write_tiny_gguf(tiny_dir / "rope_yarn0.gguf", TinySpec(extra_metadata=yarn)))
    spec = TinySpec(extra_metadata={**yarn, "llama.rope.scaling.original_context_length": 4096})
    c = ModelFile.open(write_tiny_gguf(tiny_dir / "rope_yarn.gguf", spec)).config
    assert (c.rope_scaling, c.rope_scale, c.rope_orig_context) == ("yarn", 4.0, 4096)
    # head_dim 64, base 10000: the pairs whose wavelength is 4096 / 32 and 4096 / 1 positions are
    # 64 ln(4096 / (32 · 2π)) / (2 ln 10000) = 10.47 and 22.51, floored and ceiled.
    assert (c.yarn.ext_factor, c.yarn.corr_low, c.yarn.corr_high, c.rope_attn_factor) == (
        1.0,
        10.0,
        23.0,
        1.0,
    )
    plain = ModelFile.open(write_tiny_gguf(tiny_dir / "rope_plain.gguf", TinySpec())).config
    assert plain.yarn.ext_factor == 0.0


def test_longrope_factors_are_read(tiny_dir: Path) -> None:
    factors = {
        name: np.ones(32, dtype=np.float32)
        for name in ("rope_factors_short.weight", "rope_factors_long.weight")
    }
    meta = {"phi3.rope.scaling.original_context_length": 64, "phi3.rope.scaling.attn_factor": 1.19}
    spec = TinySpec(arch="phi3", extra_metadata=meta, extra_tensors=factors)
    c = ModelFile.open(write_tiny_gguf(tiny_dir / "longrope.gguf", spec)).config
    assert c.longrope and c.rope_attn_factor == pytest.approx(1.19)
    assert c.rope_factors_tensor(64) == "rope_factors_short.weight"
    assert c.rope_factors_tensor(65) == "rope_factors_long.weight"
    one = TinySpec(
        arch="phi3", extra_metadata=meta, extra_tensors={"rope_factors_long.weight": np.ones(32, np.float32)}
    )
    with pytest.raises(
        GGUFError,
        match=re.escape("'rope_factors_long.weight' is present without 'rope_factors_short.weight'"),
    ):
        ModelFile.open(write_tiny_gguf(tiny_dir / "longrope_one.gguf", one))
    no_ctx = TinySpec(arch="phi3", extra_tensors=factors)
    with pytest.raises(GGUFError, match="original_context_length' is 'absent or 0'"):
        ModelFile.open(write_tiny_gguf(tiny_dir / "longrope_noctx.gguf", no_ctx))
    bad = TinySpec(
        arch="phi3",
        extra_metadata=meta,
        extra_tensors={**factors, "rope_factors_short.weight": np.zeros(32, np.float32)},
    )
    with pytest.raises(GGUFError, match=re.escape("'rope_factors_short.weight' holds 0.0 at index 0")):
        ModelFile.open(write_tiny_gguf(tiny_dir / "longrope_bad.gguf", bad))


def test_longrope_scaling_is_refused(tiny_dir: Path) -> None:
    spec = TinySpec(extra_metadata={"llama.rope.scaling.type": "longrope", "llama.rope.scaling.factor": 4.0})
    with pytest.raises(GGUFError, match="RoPE scaling 'longrope' is not supported"):
        ModelFile.open(write_tiny_gguf(tiny_dir / "rope_longrope.gguf", spec))


def test_unknown_architecture_is_named(tiny_dir: Path) -> None:
    path = write_tiny_gguf(tiny_dir / "falcon.gguf", TinySpec(arch="falcon"))
    with pytest.raises(
        GGUFError,
        match=re.escape(
            f"architecture 'falcon' is not supported (supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        ),
    ):
        ModelFile.open(path)


def test_gemma2_options_are_read(tiny_dir: Path) -> None:
    spec = TinySpec(arch="gemma2", n_layers=3, sliding_window=5, attn_softcap=50.0, final_softcap=30.0)
    c = ModelFile.open(write_tiny_gguf(tiny_dir / "gemma2_cfg.gguf", spec)).config
    assert c.rope_layout is RopeLayout.NEOX and c.activation == "gelu_tanh" and c.post_norms
    assert not c.qk_norm and not c.has_qkv_bias and c.tied_embeddings
    assert c.embed_scale == 16.0 and c.attn_scale == pytest.approx(1 / 8)  # sqrt(256); head_dim 64
    assert (c.attn_softcap, c.final_softcap) == (50.0, 30.0)
    assert [c.layer_window(i) for i in range(3)] == [5, 0, 5]  # even layers local, odd ones global
    llama = ModelFile.open(write_tiny_gguf(tiny_dir / "llama_cfg.gguf", TinySpec(n_layers=3))).config
    assert (llama.activation, llama.post_norms, llama.embed_scale) == ("silu", False, 1.0)
    assert (llama.attn_softcap, llama.final_softcap, llama.sliding_window) == (0.0, 0.0, 0)


def test_gemma3_options_are_read(tiny_dir: Path) -> None:
    # A 4B-style file: global RoPE base 1e6 scaled 8x; the local layers keep base 10000, unscaled.
    spec = TinySpec(
        arch="gemma3",
        n_layers=7,
        sliding_window=5,
        rope_theta=1e6,
        extra_metadata={"gemma3.rope.scaling.type": "linear", "gemma3.rope.scaling.factor": 8.0},
    )
    c = ModelFile.open(write_tiny_gguf(tiny_dir / "gemma3_cfg.gguf", spec)).config
    assert c.qk_norm and c.post_norms and c.activation == "gelu_tanh" and c.embed_scale == 16.0
    assert (c.attn_softcap, c.final_softcap) == (0.0, 0.0)
    assert [c.layer_window(i) for i in range(7)] == [5, 5, 5, 5, 5, 0, 5]  # five local, one global
    assert (c.rope_theta, c.rope_scale, c.rope_theta_local) == (1e6, 8.0, 10000.0)
    # A final cap in the file is read; score caps are not Gemma 3's and stay off whatever the file says.
    capped = TinySpec(
        arch="gemma3", final_softcap=30.0, extra_metadata={"gemma3.attn_logit_softcapping": 50.0}
    )
    c = ModelFile.open(write_tiny_gguf(tiny_dir / "gemma3_cap.gguf", capped)).config
    assert (c.attn_softcap, c.final_softcap) == (0.0, 30.0)
    # Without a window every layer is global, with the file's RoPE base.
    c = ModelFile.open(
        write_tiny_gguf(tiny_dir / "gemma3_nowin.gguf", TinySpec(arch="gemma3", sliding_window=0))
    ).config
    assert (c.sliding_window, c.rope_theta_local) == (0, 0.0)
    assert not any(c.layer_window(i) for i in range(c.n_layers))


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("gemma2.attn_logit_softcapping", 0.0, "a soft-capping value: a finite number greater than 0"),
        ("gemma2.final_logit_softcapping", float("nan"), "a soft-capping value"),
        ("gemma2.attention.sliding_window", 0, "an integer from 1 to"),
    ],
)
def test_bad_gemma2_options_are_refused(tiny_dir: Path, key: str, value: object, expected: str) -> None:
    path = write_tiny_gguf(tiny_dir / "gemma2_bad.gguf", TinySpec(arch="gemma2"))
    gguf_file = GGUFFile.open(path)
    gguf_file.metadata[key] = value
    with pytest.raises(GGUFError, match=f"metadata '{key}' is .*; expected {expected}"):
        ModelConfig.from_gguf(gguf_file)


def test_moe_options_are_read(tiny_dir: Path) -> None:
    spec = TinySpec(arch="qwen3moe", n_experts=6, n_experts_used=2, d_ff_expert=512)
    c = ModelFile.open(write_tiny_gguf(tiny_dir / "moe_cfg.gguf", spec)).config
    assert (c.n_experts, c.n_experts_used, c.d_ff_expert, c.moe_norm_topk) == (6, 2, 512, True)
    shapes = c.expected_tensor_shapes()
    assert shapes["blk.0.ffn_gate_exps.weight"] == (256, 512, 6) and "blk.0.ffn_gate.weight" not in shapes
    assert shapes["blk.0.ffn_down_exps.weight"] == (512, 256, 6) and shapes["blk.1.ffn_gate_inp.weight"] == (
        256,
        6,
    )
    # Mixtral: experts under llama, as wide as feed_forward_length when no expert width is written
    mixtral = TinySpec(n_experts=4, d_ff_expert=512)
    path = write_tiny_gguf(tiny_dir / "mixtral_cfg.gguf", mixtral)
    gguf_file = GGUFFile.open(path)
    del gguf_file.metadata["llama.expert_feed_forward_length"]
    assert ModelConfig.from_gguf(gguf_file).d_ff_expert == 512  # TinySpec's d_ff
    assert ModelFile.open(write_tiny_gguf(tiny_dir / "dense_cfg.gguf", TinySpec())).config.n_experts == 0
    c = ModelFile.open(write_tiny_gguf(tiny_dir / "qwen2moe_cfg.gguf", TinySpec(arch="qwen2moe"))).config
    assert (c.moe_norm_topk, c.d_ff_shared, c.shared_expert_gate, c.has_qkv_bias) == (False, 512, True, True)
    assert c.expected_tensor_shapes()["blk.1.ffn_down_shexp.weight"] == (512, 256)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("qwen3moe.expert_used_count", 5, "an integer from 1 to 4"),
        ("qwen3moe.expert_used_count", 0, "an integer from 1 to 4"),
        ("qwen3moe.expert_count", 5000, "an integer from 0 to 1024"),
        ("qwen3moe.expert_feed_forward_length", -1, "an integer from 1 to"),
    ],
)
def test_bad_moe_options_are_refused(tiny_dir: Path, key: str, value: object, expected: str) -> None:
    gguf_file = GGUFFile.open(write_tiny_gguf(tiny_dir / "moe_bad.gguf", TinySpec(arch="qwen3moe")))
    gguf_file.metadata[key] = value
    with pytest.raises(GGUFError, match=f"metadata '{key}' is .*; expected {expected}"):
        ModelConfig.from_gguf(gguf_file)


def test_moe_expert_shapes_are_checked(tiny_dir: Path) -> None:
    """Metadata that disagrees with the stacked experts (3 experts claimed, 4 stored) is refused by name."""
    gguf_file = GGUFFile.open(write_tiny_gguf(tiny_dir / "moe_shape.gguf", TinySpec(arch="qwen3moe")))
    gguf_file.metadata["qwen3moe.expert_count"] = 3
    config = ModelConfig.from_gguf(gguf_file)
    with pytest.raises(GGUFError, match=r"tensor 'blk.0.ffn_gate_inp.weight' has shape \[256, 4\]"):
        check_tensor_shapes(gguf_file, config)


def test_old_mixtral_layout_is_refused(tiny_dir: Path) -> None:
    extra = {"blk.0.ffn_gate.0.weight": np.zeros(256, dtype=np.float32)}
    path = write_tiny_gguf(tiny_dir / "old_mixtral.gguf", TinySpec(extra_tensors=extra))
    with pytest.raises(GGUFError, match="old Mixtral conversion"):
        ModelFile.open(path)


def test_phi3_reads_fused_matrices(tiny_dir: Path) -> None:
    c = ModelFile.open(write_tiny_gguf(tiny_dir / "phi3.gguf", TinySpec(arch="phi3", tied=False))).config
    assert c.fused_qkv and c.fused_gate_up and c.rope_layout is RopeLayout.NEOX
    shapes = c.expected_tensor_shapes()
    assert shapes["blk.0.attn_qkv.weight"] == (256, 512) and "blk.0.attn_q.weight" not in shapes
    assert shapes["blk.0.ffn_up.weight"] == (256, 1024) and "blk.0.ffn_gate.weight" not in shapes
    unfused = TinySpec(arch="phi3", drop_tensors=["blk.0.attn_qkv.weight"])
    with pytest.raises(GGUFError, match=r"required tensor 'blk.0.attn_qkv.weight' is missing.*phi3 model"):
        ModelFile.open(write_tiny_gguf(tiny_dir / "phi3_no_qkv.gguf", unfused))


def test_gemma2_needs_its_post_norms(tiny_dir: Path) -> None:
    spec = TinySpec(arch="gemma2", drop_tensors=["blk.1.post_ffw_norm.weight"])
    with pytest.raises(
        GGUFError, match=r"required tensor 'blk.1.post_ffw_norm.weight' is missing.*gemma2 model"
    ):
        ModelFile.open(write_tiny_gguf(tiny_dir / "gemma2_no_post_norm.gguf", spec))


def test_qwen3_needs_its_qk_norm_tensors(tiny_dir: Path) -> None:
    spec = TinySpec(arch="qwen3", drop_tensors=["blk.1.attn_k_norm.weight"])
    with pytest.raises(
        GGUFError, match=r"required tensor 'blk.1.attn_k_norm.weight' is missing.*qwen3 model"
    ):
        ModelFile.open(write_tiny_gguf(tiny_dir / "qwen3_no_k_norm.gguf", spec))
    # head_dim is 256 / 8 = 32: a 64-value norm vector is the wrong shape
    wrong = TinySpec(
        arch="qwen3", n_heads=8, extra_tensors={"blk.0.attn_q_norm.weight": np.ones(64, np.float32)}
    )
    with pytest.raises(
        GGUFError, match=r"tensor 'blk.0.attn_q_norm.weight' has shape \[64\].*expected \[32\]"
    ):
        ModelFile.open(write_tiny_gguf(tiny_dir / "qwen3_bad_q_norm.gguf", wrong))


def test_missing_tensor_is_named(tiny_dir: Path) -> None:
    path = write_tiny_gguf(tiny_dir / "missing.gguf", TinySpec(drop_tensors=["blk.1.ffn_up.weight"]))
    with pytest.raises(GGUFError, match=r"required tensor 'blk.1.ffn_up.weight' is missing"):
        ModelFile.open(path)


def test_missing_qwen2_bias_is_named(tiny_dir: Path) -> None:
    path = write_tiny_gguf(
        tiny_dir / "nobias.gguf", TinySpec(arch="qwen2", drop_tensors=["blk.1.attn_v.bias"])
    )
    with pytest.raises(GGUFError, match=r"required tensor 'blk.1.attn_v.bias' is missing"):
        ModelFile.open(path)


def test_wrong_shape_is_named(tiny_dir: Path) -> None:
    # Metadata claims 4 kv heads while the tensors were written for 2.
    path = write_tiny_gguf(tiny_dir / "shape.gguf", TinySpec(n_kv_heads=2))
    data = bytearray(path.read_bytes())
    key = b"llama.attention.head_count_kv"
    at = data.index(key) + len(key) + 4  # skip the value type
    data[at : at + 4] = (4).to_bytes(4, "little")
    bad = tiny_dir / "shape_bad.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(
        GGUFError, match=r"tensor 'blk.0.attn_k.weight' has shape \[256, 128\].*expected \[256, 256\]"
    ):
        ModelFile.open(bad)


@pytest.mark.parametrize("keep", [0, 3, 7, 20, 200, 3000, -1000, -1])
def test_truncated_file_is_a_clear_error(tiny_llama: Path, tiny_dir: Path, keep: int) -> None:
    data = tiny_llama.read_bytes()
    cut = tiny_dir / f"cut_{keep}.gguf"
    cut.write_bytes(data[:keep] if keep >= 0 else data[: len(data) + keep])
    with pytest.raises(GGUFError, match=str(cut)) as info:
        ModelFile.open(cut)
    assert isinstance(info.value, ValueError)
    assert any(word in str(info.value) for word in ("truncated", "empty", "not a GGUF"))


def test_random_corruption_never_crashes(tiny_llama: Path, tiny_dir: Path) -> None:
    data = tiny_llama.read_bytes()
    rng = np.random.default_rng(1)
    header_end = GGUFFile.open(tiny_llama).data_offset
    for i in range(40):
        corrupt = bytearray(data)
        for at in rng.integers(0, header_end, size=4):
            corrupt[at] = int(rng.integers(0, 256))
        path = tiny_dir / f"corrupt_{i}.gguf"
        path.write_bytes(bytes(corrupt))
        try:
            ModelFile.open(path)
        except GGUFError as e:
            assert str(path) in str(e)


def test_bad_magic_and_version(tiny_llama: Path, tiny_dir: Path) -> None:
    data = tiny_llama.read_bytes()
    (tiny_dir / "magic.gguf").write_bytes(b"GGML" + data[4:])
    with pytest.raises(GGUFError, match="not a GGUF file"):
        GGUFFile.open(tiny_dir / "magic.gguf")
    (tiny_dir / "v1.gguf").write_bytes(data[:4] + (1).to_bytes(4, "little") + data[8:])
    with pytest.raises(GGUFError, match=r"GGUF version 1 is not supported \(supported: 2, 3\)"):
        GGUFFile.open(tiny_dir / "v1.gguf")
    with pytest.raises(GGUFError, match="no such file"):
        GGUFFile.open(tiny_dir / "absent.gguf")


def test_version_2_is_read(tiny_llama: Path, tiny_dir: Path) -> None:
    data = tiny_llama.read_bytes()
    v2 = tiny_dir / "v2.gguf"
    v2.write_bytes(data[:4] + (2).to_bytes(4, "little") + data[8:])  # v2 and v3 share the layout
    assert GGUFFile.open(v2).version == 2
    assert ModelFile.open(v2).config.n_layers == 2


def test_tensor_views_are_zero_copy(tiny_llama: Path) -> None:
    w = GGUFFile.open(tiny_llama).tensors["blk.0.attn_q.weight"]
    assert not w.data.flags.owndata and not w.data.flags.writeable


@pytest.mark.slow
def test_smollm2_opens_fast_and_config(smollm2_path: Path) -> None:
    times = []
    for _ in range(5):
        start = time.perf_counter()
        model = ModelFile.open(smollm2_path)
        times.append(time.perf_counter() - start)
    assert sorted(times)[2] < 0.5, f"median open time {sorted(times)[2]:.3f} s"
    c: ModelConfig = model.config
    assert (c.arch, c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.head_dim, c.d_ff) == (
        "llama", 30, 576, 9, 3, 64, 1536,
    )  # fmt: skip
    assert (c.vocab_size, c.context_length, c.rope_theta) == (49152, 8192, 100000.0)
    assert c.tied_embeddings and not c.has_qkv_bias and c.rope_layout is RopeLayout.NORMAL
    assert (c.bos_id, c.eos_id) == (1, 2)
    _assert_matches_reference_reader(smollm2_path)


def test_absurd_tensor_shape_is_a_clear_error(tiny_llama: Path, tiny_dir: Path) -> None:
    data = bytearray(tiny_llama.read_bytes())
    name = b"token_embd.weight"
    at = data.index(name + (2).to_bytes(4, "little")) + len(name) + 4 + 8  # -> ne[1]
    data[at : at + 8] = (1 << 62).to_bytes(8, "little")
    bad = tiny_dir / "absurd_shape.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(GGUFError, match=r"truncated: tensor 'token_embd.weight' ends at byte"):
        GGUFFile.open(bad)
