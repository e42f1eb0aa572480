"""Model files are untrusted: each inconsistent or out-of-range value is refused with a clear GGUFError.

Regression tests for issue 10's defects (D3: a huge block count grew memory without bound; D5: inconsistent
tokenizer data raised IndexError or a bare Exception; D6: NaN/negative hyperparameters, unaligned or
overlapping tensors loaded silently), plus the other checks of the header, metadata and tensors.
Each builds a tiny model, edits a few bytes at a known field, and asserts the error's sentence.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from tiny_gguf import TinySpec, write_tiny_gguf

from cpullm.model.gguf_file import GGUFError, GGUFFile
from cpullm.model.model_file import ModelFile
from cpullm.model.tokenizer import Tokenizer
from support.gguf_fuzz import Layout, patch, scan

Edit = Callable[[bytearray, Layout], None]
N_TOKENS = 282  # the tiny gpt2 vocabulary (tiny_gguf.gpt2_vocab)


def _edited(src: Path, dst: Path, *edits: Edit) -> Path:
    data = bytearray(src.read_bytes())
    layout = scan(bytes(data))
    for edit in edits:
        edit(data, layout)
    dst.write_bytes(bytes(data))
    return dst


def _meta(key: str, value: float) -> Edit:
    def edit(buf: bytearray, lay: Layout) -> None:
        field = lay.meta(key)
        assert field is not None, key
        patch(buf, field, value)

    return edit


def _string(old: str, new: str) -> Edit:
    """Overwrite the first string stored as ``old`` with ``new`` (same length in bytes)."""
    assert len(old.encode()) == len(new.encode())

    def edit(buf: bytearray, lay: Layout) -> None:
        raw = old.encode()
        at = next(o for o, n, _ in lay.strings if n == len(raw) and buf[o : o + n] == raw)
        buf[at : at + len(raw)] = new.encode()

    return edit


def _tensor_offset(name: str, to: Callable[[int, dict[str, int]], int]) -> Edit:
    """Set tensor ``name``'s data offset to ``to(old, {tensor: offset})``."""

    def edit(buf: bytearray, lay: Layout) -> None:
        offsets = {
            n: int.from_bytes(buf[f.offset : f.offset + 8], "little") for n, f in lay.tensor_offsets.items()
        }
        patch(buf, lay.tensor_offsets[name], to(offsets[name], offsets))

    return edit


def _refused(path: Path, pattern: str) -> GGUFError:
    with pytest.raises(GGUFError, match=pattern) as info:
        ModelFile.open(path)
    assert str(path) in str(info.value)
    return info.value


# ---- D3: the block count sizes the list of expected tensors ----


def test_d3_huge_block_count_is_refused_at_once(tiny_llama: Path, tmp_path: Path) -> None:
    bad = _edited(tiny_llama, tmp_path / "blocks.gguf", _meta("llama.block_count", 2**31 - 1))
    start = time.perf_counter()
    _refused(
        bad,
        r"metadata 'llama.block_count' is 2147483647; expected the number of transformer blocks in the "
        r"file, which has blocks blk.0 to blk.1\.",
    )
    assert time.perf_counter() - start < 5.0  # before: memory grew ~180 MB/s without bound


def test_block_count_below_the_blocks_present_is_refused(tiny_llama: Path, tmp_path: Path) -> None:
    bad = _edited(tiny_llama, tmp_path / "blocks1.gguf", _meta("llama.block_count", 1))
    _refused(bad, r"'llama.block_count' is 1; expected the number of transformer blocks.*blk.0 to blk.1")


# ---- D5: tokenizer data that disagrees with itself or with the model ----


@pytest.mark.parametrize("name", ["bos", "eos"])
@pytest.mark.parametrize("value", [N_TOKENS, N_TOKENS + 1000, 2**32 - 1])
def test_d5_special_token_id_past_the_vocabulary(
    tiny_llama: Path, tmp_path: Path, name: str, value: int
) -> None:
    key = f"tokenizer.ggml.{name}_token_id"
    bad = _edited(tiny_llama, tmp_path / f"{name}.gguf", _meta(key, value))
    pattern = (
        rf"metadata '{key}' is {value}, but the vocabulary has {N_TOKENS} tokens \(ids 0 to {N_TOKENS - 1}\)"
    )
    _refused(bad, pattern)
    with pytest.raises(GGUFError, match=pattern):  # the tokenizer alone checks it too
        Tokenizer.from_gguf(GGUFFile.open(bad))


@pytest.mark.parametrize("rows", [N_TOKENS + 8, N_TOKENS - 1])
def test_d5_embedding_rows_must_match_the_tokens(tmp_path: Path, rows: int) -> None:
    path = write_tiny_gguf(tmp_path / "rows.gguf", TinySpec(tied=False, embedding_rows=rows))
    _refused(
        path,
        rf"the vocabulary 'tokenizer.ggml.tokens' has {N_TOKENS} tokens, but the model's embedding has "
        rf"{rows} rows \(one per token\)",
    )


def test_vocab_size_key_must_match_the_embedding(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "vocab.gguf", TinySpec(extra_metadata={"llama.vocab_size": 300}))
    _refused(
        path, rf"metadata 'llama.vocab_size' is 300; expected the {N_TOKENS} rows of 'token_embd.weight'"
    )


@pytest.mark.parametrize(
    ("merge", "why"),
    [
        ("o Z", r"names 'oZ', not a token"),  # both parts are tokens, their concatenation is not
        ("o  ", r"names ' ', not a token"),  # a part is not a token
        ("oxr", r"has no space between its two parts"),
    ],
)
def test_d5_bpe_merge_over_unknown_tokens(tiny_llama: Path, tmp_path: Path, merge: str, why: str) -> None:
    bad = _edited(tiny_llama, tmp_path / "merge.gguf", _string("o r", merge))
    gguf = GGUFFile.open(bad)
    with pytest.raises(GGUFError, match=rf"BPE merge #\d+ '{merge}' in 'tokenizer.ggml.merges' {why}"):
        Tokenizer.from_gguf(gguf)  # before: a bare Exception from the tokenizers library


def test_token_types_and_scores_are_checked(tiny_spm: Path, tmp_path: Path) -> None:
    def element(key: str, index: int, value: float) -> Edit:
        return lambda buf, lay: patch(buf, next(f for f in lay.fields if f.owner == f"{key}[{index}]"), value)

    bad_type = _edited(tiny_spm, tmp_path / "type.gguf", element("tokenizer.ggml.token_type", 7, 9))
    with pytest.raises(
        GGUFError, match=r"token 7 has type 9 in 'tokenizer.ggml.token_type'; token types are 0 to 6"
    ):
        Tokenizer.from_gguf(GGUFFile.open(bad_type))
    bad_score = _edited(tiny_spm, tmp_path / "score.gguf", element("tokenizer.ggml.scores", 300, math.nan))
    with pytest.raises(
        GGUFError, match=r"token 300 has score nan in 'tokenizer.ggml.scores'; scores must be finite"
    ):
        Tokenizer.from_gguf(GGUFFile.open(bad_score))


def test_overlong_sentencepiece_piece_is_refused(tmp_path: Path) -> None:
    tokens = ["<unk>", "<s>", "</s>", "a", "b", "ab" * 600]
    spec = TinySpec(tokenizer="llama", chat_template=None, spm_vocab=(tokens, [2, 3, 3, 1, 1, 1], [0.0] * 6))
    gguf = GGUFFile.open(write_tiny_gguf(tmp_path / "long.gguf", spec))
    with pytest.raises(GGUFError, match=r"token 5 of the llama vocabulary is 1200 characters long"):
        Tokenizer.from_gguf(gguf)


def test_malformed_byte_piece_decodes_as_its_text(tmp_path: Path) -> None:
    tokens = ["<unk>", "<s>", "</s>", "<0xZZ>", "<0x41>", "a"]
    spec = TinySpec(tokenizer="llama", chat_template=None, spm_vocab=(tokens, [2, 3, 3, 6, 6, 1], [0.0] * 6))
    tok = Tokenizer.from_gguf(GGUFFile.open(write_tiny_gguf(tmp_path / "bytes.gguf", spec)))
    assert tok.token_bytes(3) == b"<0xZZ>" and tok.token_bytes(4) == b"A"  # before: ValueError from int()


# ---- D6: hyperparameters and tensor placement that used to load silently ----


@pytest.mark.parametrize("value", [math.nan, math.inf, -1 / 1024, 0.0, 2.0])
def test_d6_rms_norm_epsilon_must_be_a_small_positive_number(
    tiny_llama: Path, tmp_path: Path, value: float
) -> None:
    bad = _edited(tiny_llama, tmp_path / "eps.gguf", _meta("llama.attention.layer_norm_rms_epsilon", value))
    _refused(
        bad,
        rf"metadata 'llama.attention.layer_norm_rms_epsilon' is {value!r}; expected the RMSNorm epsilon: a "
        r"finite number greater than 0 and at most 1\.",
    )


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, -10000.0, 0.0, 1.0])
def test_d6_rope_base_must_be_finite_and_above_one(tiny_llama: Path, tmp_path: Path, value: float) -> None:
    bad = _edited(tiny_llama, tmp_path / "theta.gguf", _meta("llama.rope.freq_base", value))
    _refused(
        bad,
        rf"metadata 'llama.rope.freq_base' is {value!r}; expected the RoPE frequency base: a finite number",
    )


@pytest.mark.parametrize("value", [math.nan, -2.0, 0.0, math.inf])
def test_rope_scaling_factor_must_be_finite_and_positive(tmp_path: Path, value: float) -> None:
    scaled = TinySpec(extra_metadata={"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 4.0})
    path = write_tiny_gguf(tmp_path / "scaled.gguf", scaled)
    bad = _edited(path, tmp_path / "factor.gguf", _meta("llama.rope.scaling.factor", value))
    _refused(
        bad, rf"metadata 'llama.rope.scaling.factor' is {value!r}; expected the RoPE linear scaling factor"
    )


def test_rope_frequency_factors_must_be_finite_and_positive(tmp_path: Path) -> None:
    factors = np.array([1, math.nan, 2, 2, 2, 2, 2, 2] * 4, dtype=np.float32)  # rope_dim / 2 = 32
    path = write_tiny_gguf(tmp_path / "freqs.gguf", TinySpec(extra_tensors={"rope_freqs.weight": factors}))
    _refused(
        path, r"'rope_freqs.weight' holds nan at index 1; RoPE frequency factors must be finite and positive"
    )


def test_d6_unaligned_tensor_offset(tiny_llama: Path, tmp_path: Path) -> None:
    bad = _edited(
        tiny_llama, tmp_path / "unaligned.gguf", _tensor_offset("blk.0.attn_q.weight", lambda o, _: o + 1)
    )
    _refused(
        bad,
        r"tensor 'blk.0.attn_q.weight' starts at offset \d+ of the data section, not a multiple of "
        r"'general.alignment' \(32\)",
    )


def test_d6_overlapping_tensors(tiny_llama: Path, tmp_path: Path) -> None:
    onto_q = _tensor_offset("blk.0.attn_k.weight", lambda _, offsets: offsets["blk.0.attn_q.weight"])
    error = _refused(
        _edited(tiny_llama, tmp_path / "overlap.gguf", onto_q), r"the data of tensors .* overlap"
    )
    assert "'blk.0.attn_q.weight'" in str(error) and "'blk.0.attn_k.weight'" in str(error)


# ---- the header and the other hyperparameters ----


HYPERPARAMETERS = {  # key: (value, what the error says is expected)
    "attention.head_count_kv": (3, r"is 4; expected a multiple of 'llama.attention.head_count_kv' \(3\)"),
    "attention.head_count": (0, r"is 0; expected an integer from 1"),
    "embedding_length": (102, r"is 102; expected a multiple of 'llama.attention.head_count' \(4\)"),
    "rope.dimension_count": (63, r"is 63; expected an even number"),
    "context_length": (2**31 - 1, r"is 2147483647; expected an integer from 1 to 16777216"),
    "feed_forward_length": (0, r"is 0; expected an integer from 1"),
    "block_count": (0, r"is 0; expected an integer from 1"),
}


@pytest.mark.parametrize("key", HYPERPARAMETERS)
def test_hyperparameters_are_range_checked(tiny_llama: Path, tmp_path: Path, key: str) -> None:
    value, expected = HYPERPARAMETERS[key]
    # head_count_kv=3 is reported on head_count, which must be a multiple of it
    named = "attention.head_count" if key == "attention.head_count_kv" else key
    bad = _edited(tiny_llama, tmp_path / "hp.gguf", _meta(f"llama.{key}", value))
    _refused(bad, rf"metadata 'llama.{named}' {expected}")


def test_rope_dimension_above_the_head_size_is_refused(tiny_llama: Path, tmp_path: Path) -> None:
    bad = _edited(tiny_llama, tmp_path / "rope.gguf", _meta("llama.rope.dimension_count", 128))
    _refused(bad, r"metadata 'llama.rope.dimension_count' is 128; expected an integer from 1 to 64")


def test_value_length_must_equal_key_length(tmp_path: Path) -> None:
    path = write_tiny_gguf(
        tmp_path / "vlen.gguf", TinySpec(extra_metadata={"llama.attention.value_length": 32})
    )
    _refused(path, r"'llama.attention.value_length' is 32; expected the key length 64")


def test_metadata_of_the_wrong_type_is_named(tiny_llama: Path, tmp_path: Path) -> None:
    def as_float(buf: bytearray, lay: Layout) -> None:  # same width: the file still parses
        vtype = next(f for f in lay.fields if f.role == "vtype" and f.owner == "llama.block_count")
        patch(buf, vtype, 6)  # FLOAT32

    _refused(
        _edited(tiny_llama, tmp_path / "type.gguf", as_float),
        r"metadata 'llama.block_count' is .*, expected an integer",
    )


def _first(role: str, owner: str | None = None) -> Callable[[Layout], object]:
    return lambda lay: next(f for f in lay.fields if f.role == role and owner in (None, f.owner))


def _set(where: Callable[[Layout], object], value: int) -> Edit:
    return lambda buf, lay: patch(buf, where(lay), value)  # type: ignore[arg-type]


STRUCTURE = {  # id: (edit, the error)
    "tensor-count": (
        _set(lambda lay: lay.fields[1], 2**40),
        r"the header announces \d+ metadata entries and 1099511627776 tensors, more than the \d+ bytes left",
    ),
    "string-array-length": (
        _set(_first("arrlen", "tokenizer.ggml.tokens"), 2**40),
        r"reading the 1099511627776 string lengths of metadata array 'tokenizer.ggml.tokens' needs",
    ),
    "nested-array": (_set(_first("etype"), 9), r"is an array of arrays, which GGUF model files do not use"),
    "zero-dimension": (
        _set(_first("ne"), 0),
        r"tensor 'token_embd.weight' has shape \[0, 282\]; every dimension must be from 1",
    ),
    "tensor-type": (
        _set(_first("ttype"), 2**31),
        r"tensor 'token_embd.weight' has unknown tensor type 2147483648",
    ),
    "duplicate-key": (
        _string("llama.rope.freq_base", "llama.context_length"),
        r"metadata key 'llama.context_length' appears twice",
    ),
}


@pytest.mark.parametrize("case", STRUCTURE)
def test_header_counts_and_structure_are_checked(tiny_llama: Path, tmp_path: Path, case: str) -> None:
    edit, pattern = STRUCTURE[case]
    _refused(_edited(tiny_llama, tmp_path / "header.gguf", edit), pattern)
