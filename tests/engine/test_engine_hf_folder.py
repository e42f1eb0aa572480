"""Hugging Face model folders: the same random weights as a GGUF (tiny_hf.py writes them in HF layout)
give the same tensors, the same logits as the NumPy float64 reference, the same greedy output and the
same tokenizer; bad folders are refused with errors naming the culprit."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT
from tiny_gguf import TinySpec, tiny_weights, write_tiny_gguf
from tiny_hf import hf_weights, write_safetensors, write_tiny_hf_folder

from cpullm.model.config import RopeLayout
from cpullm.model.gguf_file import GGUFError
from cpullm.model.hf_folder import ModelFolderError
from cpullm.model.model_file import ModelFile
from cpullm.native.runner import NativeModel, SeqChunk
from cpullm.testing import reference

TOKENS = [1, 5, 9, 33, 100, 7, 8, 200, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 250, 17]
# max |native - reference| / max |reference| over the logits; F32 weights run in float32 (as the GGUF tests)
F32_TOLERANCE = 1e-4
CASES = {
    "llama-untied": TinySpec(tied=False),
    "llama-gqa-tied": TinySpec(n_heads=8, n_kv_heads=2),
    "mistral": TinySpec(arch="mistral", tied=False),
    "qwen2-bias": TinySpec(arch="qwen2"),
    "qwen3": TinySpec(arch="qwen3", head_dim=128),
    "gemma2": TinySpec(arch="gemma2", n_heads=8, n_kv_heads=4),
    "gemma3": TinySpec(arch="gemma3", rope_theta=1e6),  # five local layers (base 10000), one global
    "qwen3moe": TinySpec(arch="qwen3moe", n_experts=4, n_experts_used=2),
    "qwen2moe": TinySpec(arch="qwen2moe"),  # routes not renormalized, a gated shared expert, biases
    "mixtral": TinySpec(tied=False, n_experts=4, n_experts_used=2, d_ff_expert=512),
    "qwen3-yarn": TinySpec(
        arch="qwen3",
        extra_metadata={
            "qwen3.rope.scaling.type": "yarn",
            "qwen3.rope.scaling.factor": 4.0,
            "qwen3.rope.scaling.original_context_length": 4096,
        },
    ),
    # LongRoPE over a 64-token original context of the tiny model's 128: cos/sin times sqrt(1 + ln 2 / ln 64)
    "phi3-longrope": TinySpec(
        arch="phi3",
        tied=False,
        extra_metadata={
            "phi3.rope.scaling.original_context_length": 64,
            "phi3.rope.scaling.attn_factor": float(np.float32(math.sqrt(1 + math.log(2) / math.log(64)))),
        },
        extra_tensors={
            "rope_factors_short.weight": (1.0 + 0.05 * np.arange(32)).astype(np.float32),
            "rope_factors_long.weight": (1.0 + 0.9 * np.arange(32)).astype(np.float32),
        },
    ),
    "phi3": TinySpec(arch="phi3", tied=False),
}


@pytest.fixture(scope="module")
def lib(native_lib_dir: Path):
    from cpullm.native import loader

    os.environ.setdefault("CPULLM_LIB_DIR", str(native_lib_dir))
    return loader.load_variant(loader.select(native_lib_dir))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hf")


def _bytes(t) -> np.ndarray:
    return np.ascontiguousarray(t.data).view(np.uint8)


def _logits(model: ModelFile, lib) -> np.ndarray:
    nm = NativeModel(model, lib)
    cache = nm.new_cache(8, 16, "f32")
    return nm.step(cache, [SeqChunk(TOKENS, 0, list(range(8)), len(TOKENS))]).astype(np.float64)


@pytest.mark.parametrize("name", list(CASES))
def test_folder_is_the_gguf_and_matches_the_reference(name, work, lib):
    spec = CASES[name]
    gguf = ModelFile.open(write_tiny_gguf(work / f"{name}.gguf", spec))
    folder = ModelFile.open(write_tiny_hf_folder(work / name, spec), quantization="f32")
    assert folder.folder == work / name and gguf.folder is None
    assert folder.config == gguf.config
    assert folder.gguf.tensors.keys() == gguf.gguf.tensors.keys()
    for tname, t in gguf.gguf.tensors.items():  # names, permuted Q/K rows, Gemma's 1 + w: all exact
        converted = folder.gguf.tensors[tname]
        assert (converted.type, converted.ne) == (t.type, t.ne), tname
        assert np.array_equal(_bytes(converted), _bytes(t)), tname
    expected = reference.ReferenceModel(gguf).logits(TOKENS)
    got = _logits(folder, lib)
    err = float(np.abs(got - expected).max() / np.abs(expected).max())
    assert err < F32_TOLERANCE, f"{name}: relative error {err:.2e}"


@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_rotate_half_weights_under_hf_rope_are_the_permuted_gguf(arch, work):
    """The HF layout the helper writes is right by HF's own rule, independently of the loader: the
    reference run on the HF arrays with rotate-half RoPE (NEOX pairs (i, i + half)) gives the logits of
    the GGUF arrays with interleaved pairs."""
    spec = TinySpec(arch=arch, tied=False, n_layers=1, n_heads=8, n_kv_heads=2)
    config = ModelFile.open(write_tiny_gguf(work / f"rope-{arch}.gguf", spec)).config
    rename = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
        "input_layernorm.weight": "attn_norm.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "self_attn.o_proj.weight": "attn_output.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
        **{f"self_attn.{x}_proj.weight": f"attn_{x}.weight" for x in "qkv"},
    }
    hf = {}
    for name, w in hf_weights(spec).items():
        parts = name.split(".", 3)
        key = f"blk.{parts[2]}.{rename[parts[3]]}" if name.startswith("model.layers.") else rename[name]
        hf[key] = w.astype(np.float64)
    gguf_weights = {k: v.astype(np.float64) for k, v in tiny_weights(spec).items()}
    interleaved = reference.forward(config, gguf_weights, TOKENS)
    rotate_half = reference.forward(dataclasses.replace(config, rope_layout=RopeLayout.NEOX), hf, TOKENS)
    np.testing.assert_allclose(rotate_half, interleaved, rtol=1e-9, atol=1e-9)
    # the layouts really differ: read with the GGUF's pairing, the HF arrays give other logits
    assert not np.allclose(reference.forward(config, hf, TOKENS), interleaved, atol=1e-3)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_greedy_output_is_the_same_from_the_gguf_and_the_folder(arch, work, lib):
    """The GGUF quantized to Q8_0 by the gguf package and the folder quantized at load (the default,
    q8_0) hold the same bytes, so greedy decoding and the chat prompt are the same."""
    from cpullm.llm import LLM
    from cpullm.runtime.sampling import SamplingParams

    spec = TinySpec(arch=arch, tied=False, weight_type=QT.Q8_0, context_length=512)
    from_gguf = LLM(write_tiny_gguf(work / f"greedy-{arch}.gguf", spec), threads=1)
    from_folder = LLM(write_tiny_hf_folder(work / f"greedy-{arch}", spec), threads=1)
    t = from_folder.engine.model_file.gguf.tensors["blk.1.attn_q.weight"]
    assert t.type == QT.Q8_0
    assert np.array_equal(_bytes(t), _bytes(from_gguf.engine.model_file.gguf.tensors["blk.1.attn_q.weight"]))
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
    a, b = from_gguf.generate("hello world", params)[0], from_folder.generate("hello world", params)[0]
    assert len(a.token_ids) == 16
    assert (b.token_ids, b.text) == (a.token_ids, a.text)
    messages = [{"role": "user", "content": "the capital"}]
    assert from_folder.encode_chat(messages) == from_gguf.encode_chat(messages)
    assert from_folder.chat(messages, params)[0].token_ids == from_gguf.chat(messages, params)[0].token_ids


@pytest.mark.parametrize(("dtype", "tolerance"), [("F16", 1e-3), ("BF16", 1e-2)])
def test_16_bit_folder_kept_as_stored(dtype, tolerance, work, lib):
    """quantization="none": matrices stay in the stored 16-bit type, memory-mapped without a copy where
    no row moves; they equal the gguf package's conversion of the same arrays; logits match the reference."""
    spec = TinySpec(tied=False, weight_type=QT[dtype])
    gguf = ModelFile.open(write_tiny_gguf(work / f"keep-{dtype}.gguf", spec))
    folder = ModelFile.open(
        write_tiny_hf_folder(work / f"keep-{dtype}", spec, dtype=dtype), quantization="none"
    )
    for name, t in gguf.gguf.tensors.items():
        converted = folder.gguf.tensors[name]
        if len(t.ne) == 2:
            assert converted.type == QT[dtype]
            assert np.array_equal(_bytes(converted), _bytes(t)), name
        else:  # norms: F32 from the 16-bit values (the GGUF kept the float32 originals)
            assert converted.type == QT.F32
            np.testing.assert_allclose(converted.data, t.data, rtol=1e-2)
    down = folder.gguf.tensors["blk.0.ffn_down.weight"].data
    assert not down.flags["OWNDATA"] and not down.flags["WRITEABLE"]  # a view of the read-only mapping
    expected = reference.ReferenceModel(folder).logits(TOKENS)
    got = _logits(folder, lib)
    assert float(np.abs(got - expected).max() / np.abs(expected).max()) < tolerance


def test_tokenizer_and_chat_template_match_the_gguf(work):
    spec = TinySpec(add_bos=True)
    gguf = ModelFile.open(write_tiny_gguf(work / "tok.gguf", spec))
    folder = ModelFile.open(write_tiny_hf_folder(work / "tok", spec))
    a, b = gguf.tokenizer(), folder.tokenizer()
    assert b.kind == "gpt2" and (b.bos_id, b.eos_id, b.add_bos, b.add_eos) == (
        a.bos_id,
        a.eos_id,
        True,
        False,
    )
    assert b.eog_ids == a.eog_ids and b.vocab_size == a.vocab_size
    for text in ["hello world", "the capital of\nFrance? 123 ünïcode", "<|im_start|>user\nhi<|im_end|>"]:
        for special in (True, False):
            assert b.encode(text, parse_special=special) == a.encode(text, parse_special=special)
        ids = a.encode(text, parse_special=True)
        assert b.decode(ids) == a.decode(ids)
        assert [b.token_bytes(i) for i in ids] == [a.token_bytes(i) for i in ids]
    assert folder.gguf.metadata["tokenizer.chat_template"] == gguf.gguf.metadata["tokenizer.chat_template"]


def test_llama3_rope_scaling_becomes_rope_freqs(work, lib):
    """Llama 3.x "rope_scaling" is the converter's rope_freqs.weight: factor 1 for the high frequencies,
    ``factor`` for the low ones, smooth between; the native model applies it as the reference does."""
    scaling = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    }
    spec = TinySpec(tied=False, rope_theta=500000.0)
    folder = write_tiny_hf_folder(work / "llama3", spec, config_overrides={"rope_scaling": scaling})
    model = ModelFile.open(folder, quantization="f32")
    factors = np.asarray(model.gguf.tensors["rope_freqs.weight"].data)
    assert model.config.has_rope_freqs and factors.shape == (32,)
    assert factors[0] == 1.0 and factors[-1] == 8.0 and np.all(np.diff(factors) >= 0)
    assert np.any((factors > 1.0) & (factors < 8.0))  # the smooth band
    expected = reference.ReferenceModel(model).logits(TOKENS)
    assert float(np.abs(_logits(model, lib) - expected).max() / np.abs(expected).max()) < F32_TOLERANCE


# ---- bad folders ----


@pytest.fixture(scope="module")
def good_folder(work: Path) -> Path:
    return write_tiny_hf_folder(work / "good", TinySpec(n_layers=1), n_shards=2)


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _shard(folder: Path) -> Path:
    return sorted(folder.glob("*.safetensors"))[0]


def _rewrite_shard(folder: Path, extra: dict | None = None, drop: str | None = None) -> None:
    """Rewrite the first shard (F32) with ``extra`` tensors {name: (array, dtype)} and without ``drop``."""
    from cpullm.model.safetensors_file import SafetensorsFile

    shard = _shard(folder)
    arrays = {n: np.array(t.data) for n, t in SafetensorsFile.open(shard).tensors.items() if n != drop}
    dtypes = dict.fromkeys(arrays, "F32")
    for name, (array, dtype) in (extra or {}).items():
        arrays[name], dtypes[name] = array, dtype
    write_safetensors(shard, arrays, dtypes)
    index = folder / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"] = {n: s for n, s in data["weight_map"].items() if n != drop}
    data["weight_map"].update(dict.fromkeys(extra or {}, shard.name))
    index.write_text(json.dumps(data))


def _header_length(folder: Path, n: int) -> None:
    shard = _shard(folder)
    raw = shard.read_bytes()
    shard.write_bytes(struct.pack("<Q", n) + raw[8:])


def _index_shard_name(folder: Path, name: str) -> None:
    index = folder / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    first = next(iter(data["weight_map"]))
    data["weight_map"][first] = name
    index.write_text(json.dumps(data))


BAD_FOLDERS = {
    "architecture": (
        lambda f: _edit_json(f / "config.json", architectures=["GPTNeoXForCausalLM"]),
        "architecture 'GPTNeoXForCausalLM' is not supported (supported: LlamaForCausalLM",
    ),
    "rope-scaling": (
        lambda f: _edit_json(f / "config.json", rope_scaling={"rope_type": "yarn", "factor": 4.0}),
        "'rope_scaling' is {'rope_type': 'yarn'",
    ),
    "pre-quantized": (
        lambda f: _edit_json(f / "config.json", quantization_config={"quant_method": "gptq"}),
        "pre-quantized ('quantization_config', method 'gptq')",
    ),
    "sliding-window": (
        lambda f: _edit_json(f / "config.json", use_sliding_window=True),
        "'use_sliding_window'",
    ),
    "activation": (lambda f: _edit_json(f / "config.json", hidden_act="relu"), "'hidden_act' is 'relu'"),
    "wrong-type": (
        lambda f: _edit_json(f / "config.json", num_hidden_layers="1"),
        "'num_hidden_layers' is '1'",
    ),
    "shape": (
        lambda f: _edit_json(f / "config.json", intermediate_size=1024),
        "'model.layers.0.mlp.gate_proj.weight' (cpullm's 'blk.0.ffn_gate.weight') has shape",
    ),
    "too-many-layers": (
        lambda f: _edit_json(f / "config.json", num_hidden_layers=2),
        "config.json's 'num_hidden_layers' is 2",
    ),
    "huge-eps": (
        lambda f: _edit_json(f / "config.json", rms_norm_eps=1e300),
        "config.json's 'rms_norm_eps' is 1e+300; expected the RMSNorm epsilon",
    ),
    "config-not-json": (
        lambda f: (f / "config.json").write_text("{not json"),
        "config.json is not valid JSON",
    ),
    "traversal": (
        lambda f: _index_shard_name(f, "../good/model.safetensors"),
        "not a plain .safetensors file",
    ),
    "subfolder": (lambda f: _index_shard_name(f, "sub/x.safetensors"), "not a plain .safetensors file"),
    "shard-missing-tensor": (
        lambda f: _index_shard_name(f, sorted(f.glob("*.safetensors"))[1].name),
        "is not in its shard",
    ),
    "no-weights": (
        lambda f: [p.unlink() for p in [*f.glob("*.safetensors"), f / "model.safetensors.index.json"]],
        "no model.safetensors or model.safetensors.index.json",
    ),
    "int-dtype": (
        lambda f: _rewrite_shard(f, {"model.layers.0.extra": (np.zeros(4, np.int8), "I8")}),
        "dtype 'I8'; cpullm reads F32, F16, BF16",
    ),
    "missing-tensor": (
        lambda f: _rewrite_shard(f, drop="model.norm.weight"),
        "required tensor 'model.norm.weight' (cpullm's 'output_norm.weight') is missing",
    ),
    "output-bias": (
        lambda f: _rewrite_shard(
            f, {"model.layers.0.self_attn.o_proj.bias": (np.zeros(256, np.float32), "F32")}
        ),
        "'model.layers.0.self_attn.o_proj.bias' has no counterpart",
    ),
    "header-length": (lambda f: _header_length(f, 1 << 40), "the header claims 1099511627776 bytes"),
    "truncated": (
        lambda f: _shard(f).write_bytes(_shard(f).read_bytes()[:-100]),
        "data section of",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FOLDERS))
def test_bad_folder_is_refused_naming_the_culprit(case, good_folder, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(good_folder, folder)
    edit, message = BAD_FOLDERS[case]
    edit(folder)
    with pytest.raises(ModelFolderError) as e:
        ModelFile.open(folder)
    assert message in str(e.value)


def test_the_unchanged_good_folder_opens(good_folder):  # the edits above are what break it
    assert ModelFile.open(good_folder).config.n_layers == 1


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t["model"].update(type="Unigram"), "tokenizer model 'Unigram' is not supported"),
        (lambda t: t["added_tokens"][0].update(id=100000), "has id 100000, outside the model's vocabulary"),
        (lambda t: t["model"].update(byte_fallback=False) or t.update(decoder=None), "neither byte fallback"),
    ],
)
def test_bad_tokenizer_is_refused(edit, message, good_folder, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(good_folder, folder)
    data = json.loads((folder / "tokenizer.json").read_text())
    edit(data)
    (folder / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ModelFolderError, match=r"tokenizer\.json") as e:
        ModelFile.open(folder).tokenizer()
    assert message in str(e.value)


def test_quantization_names_are_checked(good_folder, tiny_llama):
    with pytest.raises(ModelFolderError, match=r"quantization 'q3_k' is not supported .*q8_0"):
        ModelFile.open(good_folder, quantization="q3_k")
    with pytest.raises(ValueError, match="quantization applies to Hugging Face model folders"):
        ModelFile.open(tiny_llama, quantization="q8_0")


def test_gemma2_attention_scale_must_be_the_one_cpullm_uses(work):
    spec = TinySpec(arch="gemma2", n_layers=1)
    folder = write_tiny_hf_folder(work / "gemma-scale", spec, config_overrides={"query_pre_attn_scalar": 7})
    with pytest.raises(ModelFolderError, match="'query_pre_attn_scalar' is 7; expected 64"):
        ModelFile.open(folder)


def test_sentencepiece_style_tokenizer_json(work):
    """A tokenizer.json with byte fallback (Llama 2, Mistral, Gemma): byte, unknown and control token
    types, the space prefix decoding drops, and streaming, as from the GGUF of the same vocabulary."""
    from cpullm.model.tokenizer import IncrementalDecoder

    spec = TinySpec(tied=False, tokenizer="llama", add_bos=True, chat_template=None)
    gguf = ModelFile.open(write_tiny_gguf(work / "spm.gguf", spec))
    a = gguf.tokenizer()
    folder = write_tiny_hf_folder(work / "spm", spec)
    a._hf.save(str(folder / "tokenizer.json"))  # the same pieces, merges, normalizer and decoder as a file
    model = json.loads((folder / "tokenizer.json").read_text())["model"]
    _edit_json(folder / "tokenizer.json", model={**model, "unk_token": "<unk>"})  # as Llama 2's file
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))
    b = ModelFile.open(folder).tokenizer()
    assert b.kind == "llama" and b.token_types == a.token_types and b.add_space_prefix
    assert (b.bos_id, b.eos_id, b.eog_ids) == (a.bos_id, a.eos_id, a.eog_ids)
    assert not b.add_bos  # nothing says to add BOS: not tokenizer_config.json, not a post-processor
    for text in ["hello world", "the capital of Ünïcode 42!", "  two spaces"]:
        ids = a.encode(text, add_special=False)
        assert b.encode(text) == ids and b.decode(ids) == a.decode(ids)
        stream = IncrementalDecoder(b)
        assert "".join(stream.push(i) for i in ids) + stream.flush() == a.decode(ids)


def test_normalizers_that_shorten_text_loosen_the_prompt_bound(good_folder, tmp_path):
    from cpullm.server.prompt_limits import NFC_SHRINK, max_bytes_per_token

    base = ModelFile.open(good_folder).tokenizer()
    assert base.normalization == "none"
    bounds = {}
    for name, normalizer in {
        "nfc": {"type": "NFC"},
        "other": {"type": "Strip", "strip_left": True, "strip_right": True},
    }.items():
        folder = tmp_path / name
        shutil.copytree(good_folder, folder)
        _edit_json(folder / "tokenizer.json", normalizer=normalizer)
        tokenizer = ModelFile.open(folder).tokenizer()
        assert tokenizer.normalization == name
        bounds[name] = max_bytes_per_token(tokenizer, None)
    assert bounds == {"nfc": NFC_SHRINK * max_bytes_per_token(base, None), "other": None}


def test_untied_config_needs_lm_head(good_folder, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(good_folder, folder)  # good_folder is tied: no lm_head.weight
    _edit_json(folder / "config.json", tie_word_embeddings=False)
    with pytest.raises(ModelFolderError, match=r"no shard holds 'lm_head\.weight'"):
        ModelFile.open(folder)


def test_corrupt_safetensors_headers_are_refused_not_crashed(good_folder, tmp_path):
    """Bytes of a shard's header (and its first data) changed at random, a deeply nested header: each
    either opens or raises ModelFolderError, never anything else."""
    shard = _shard(good_folder)
    raw = shard.read_bytes()
    (n,) = struct.unpack_from("<Q", raw)
    rng = np.random.default_rng(1)
    folder = tmp_path / "model"
    shutil.copytree(good_folder, folder)
    target = folder / shard.name
    refused = 0
    for _ in range(150):
        mutated = bytearray(raw)
        for pos in rng.integers(0, 8 + n + 64, size=int(rng.integers(1, 4))):
            mutated[pos] = int(rng.integers(0, 256))
        target.write_bytes(mutated)
        try:
            ModelFile.open(folder)
        except ModelFolderError:
            refused += 1
    assert refused > 50  # most header edits break it (a changed digit in a shape, a quote, the length)
    nested = b"[" * 100_000 + b"]" * 100_000
    target.write_bytes(struct.pack("<Q", len(nested)) + nested)
    with pytest.raises(ModelFolderError, match="not valid JSON"):
        ModelFile.open(folder)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("rope_local_base_freq", 5000.0, "'rope_local_base_freq' is 5000.0; expected 10000"),
        ("sliding_window_pattern", 4, "'sliding_window_pattern' is 4; expected 6"),
    ],
)
def test_gemma3_local_layer_options_are_checked(work, key, value, message):
    """Gemma 3's local RoPE base and local/global pattern are llama.cpp's fixed ones; a folder that says
    otherwise is refused by name rather than run wrong."""
    folder = write_tiny_hf_folder(work / f"gemma3-{key}", TinySpec(arch="gemma3"))
    _edit_json(folder / "config.json", **{key: value})
    with pytest.raises(ModelFolderError, match=re.escape(message)):
        ModelFile.open(folder)


LONGROPE = {"type": "longrope", "short_factor": [1.0] * 32, "long_factor": [1.0] * 32}


@pytest.mark.parametrize(
    ("scaling", "message"),
    [
        (
            {"type": "longrope", "short_factor": [1.0] * 31, "long_factor": [1.0] * 32},
            "'short_factor' to be a list of 32",
        ),
        ({"type": "longrope", "short_factor": [0.0] * 32, "long_factor": [1.0] * 32}, "holds 0.0 at index 0"),
        ({"rope_type": "yarn", "factor": 4.0}, "'original_max_position_embeddings' to be a positive integer"),
        (
            {
                "rope_type": "yarn",
                "factor": 4.0,
                "original_max_position_embeddings": 64,
                "attention_factor": 2.0,
            },
            "no 'attention_factor'",
        ),
        ({"rope_type": "dynamic", "factor": 2.0}, "other RoPE scaling types are not supported"),
    ],
)
def test_bad_rope_scaling_is_refused(work, scaling, message):
    folder = write_tiny_hf_folder(work / "bad-scaling", CASES["phi3-longrope"])
    _edit_json(folder / "config.json", rope_scaling=scaling)
    with pytest.raises(GGUFError, match=re.escape(message)):
        ModelFile.open(folder)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"norm_topk_prob": False}, "'norm_topk_prob' is False; expected true for this architecture"),
        ({"decoder_sparse_step": 2}, "'decoder_sparse_step' is 2; expected 1"),
        ({"mlp_only_layers": [0]}, "'mlp_only_layers' is [0]; expected empty"),
        ({"num_experts": 5}, "has shape"),
    ],
)
def test_bad_moe_folder_is_refused(work, change, message):
    folder = write_tiny_hf_folder(work / "bad-moe", CASES["qwen3moe"])
    _edit_json(folder / "config.json", **change)
    with pytest.raises(ModelFolderError, match=re.escape(message)):
        ModelFile.open(folder)


def test_missing_expert_is_refused(work):
    """Experts must be numbered 0..n-1 in every layer: a folder missing one is refused before any weight
    is read."""
    folder = write_tiny_hf_folder(work / "moe-gap", CASES["qwen3moe"], n_shards=1)
    weights = dict(hf_weights(CASES["qwen3moe"]))
    del weights["model.layers.1.mlp.experts.2.up_proj.weight"]
    for shard in folder.glob("model*.safetensors*"):  # one unindexed file instead
        shard.unlink()
    write_safetensors(folder / "model.safetensors", weights, dict.fromkeys(weights, "F32"))
    with pytest.raises(ModelFolderError, match=r"experts of 'model.layers.1.mlp.experts.<n>.up.weight'"):
        ModelFile.open(folder)
