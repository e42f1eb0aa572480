"""The tokenizer of a Hugging Face model folder: ``tokenizer.json`` run by the ``tokenizers`` library.

Public API
----------
``tokenizer_from_folder(folder, vocab_size) -> Tokenizer``
    The folder's ``tokenizer.json`` as a :class:`cpullm.model.tokenizer.Tokenizer`: encoding and decoding
    are the ``tokenizers`` library's on the file itself (already a dependency, so the folder's own
    normalizer, pre-tokenizer and decoder are used, not a re-derivation of them). The rest of what the
    Tokenizer needs is read from the files:

    * token texts and types: the model's vocabulary (NORMAL; ``<0xNN>`` pieces BYTE when the model has
      ``byte_fallback``; its ``unk_token`` UNKNOWN) and ``added_tokens`` (CONTROL when ``special``, else
      USER_DEFINED); ids up to the model's ``vocab_size`` that no token names are UNUSED padding, as
      llama.cpp's converter writes them;
    * the kind: SentencePiece-style ("llama") when the BPE model has ``byte_fallback``, byte-level ("gpt2")
      when its decoder is ByteLevel; anything else (WordPiece, Unigram, ...) is refused;
    * BOS/EOS: ``tokenizer_config.json``'s ``bos_token``/``eos_token`` (else config.json's ids);
      whether BOS/EOS are added: its ``add_bos_token``/``add_eos_token``, else what the file's
      post-processor does; generation also ends at the ids of ``generation_config.json``'s
      ``eos_token_id`` and at known end-of-turn control tokens.

Load time (measured on this 2-core host, median of 7): SmolLM2-135M's vocabulary (49152 tokens, 48900
merges) as a 3.5 MB tokenizer.json opens in 0.26 s, against 0.13 s for the same vocabulary from GGUF
metadata; about 0.2 s of it is the library parsing the file, once per model. Nothing lighter is worth a
second tokenizer implementation, and ``tokenizers`` is already the engine's dependency.

``tokenizer.json`` is untrusted: it is size-bounded (:data:`MAX_TOKENIZER_BYTES`), every id must be
inside the model's vocabulary, and errors the library raises become a :class:`ModelFolderError`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

from cpullm.model.hf_folder import ModelFolderError, read_json, read_text
from cpullm.model.tokenizer import (
    BYTE,
    CONTROL,
    NORMAL,
    SPM_SPACE,
    UNKNOWN,
    UNUSED,
    USER_DEFINED,
    SpecialTokens,
    Tokenizer,
    end_of_generation_ids,
)

TOKENIZER_FILE = "tokenizer.json"
MAX_TOKENIZER_BYTES = 128 << 20  # Gemma 3's, among the largest, is 33 MB


def tokenizer_from_folder(folder: str | Path, vocab_size: int) -> Tokenizer:
    """The folder's tokenizer for a model of ``vocab_size`` embedding rows; see the module docstring."""
    folder = Path(folder)
    path = folder / TOKENIZER_FILE
    text = read_text(path, "tokenizer (tokenizer.json)", MAX_TOKENIZER_BYTES)
    data = read_json(path, "tokenizer (tokenizer.json)", text=text)
    model = data.get("model")
    if not isinstance(model, dict) or model.get("type") != "BPE":
        kind = model.get("type") if isinstance(model, dict) else None
        raise ModelFolderError(
            f"{path}: tokenizer model {kind!r} is not supported (supported: BPE, byte-level or with byte "
            "fallback, as Llama, Qwen, Mistral, Gemma and Phi models use)."
        )
    byte_fallback = model.get("byte_fallback") is True
    if not byte_fallback and not _has_type(data.get("decoder"), "ByteLevel"):
        raise ModelFolderError(
            f"{path}: the BPE tokenizer has neither byte fallback nor a ByteLevel decoder; cpullm supports "
            "byte-level BPE and SentencePiece-style BPE with byte fallback."
        )
    tokens, types = _token_table(path, model, data.get("added_tokens"), vocab_size, byte_fallback)
    hf = _build(path, text)
    plain = copy.copy(data)  # control tokens tokenized as text: built on first use
    plain["added_tokens"] = [t for t in data.get("added_tokens") or [] if not t.get("special")]
    tokenizer_config = folder / "tokenizer_config.json"
    tconf = read_json(tokenizer_config, "tokenizer_config.json") if tokenizer_config.is_file() else {}
    config = read_json(folder / "config.json", "config.json")
    bos = _special_id(hf, tconf.get("bos_token"), config.get("bos_token_id"), vocab_size)
    eos = _special_id(hf, tconf.get("eos_token"), config.get("eos_token_id"), vocab_size)
    with_special = hf.encode("a", add_special_tokens=True).ids
    add_bos = tconf.get("add_bos_token")
    add_eos = tconf.get("add_eos_token")
    generation = folder / "generation_config.json"
    stop = (
        _ids(read_json(generation, "generation_config.json").get("eos_token_id"))
        if generation.is_file()
        else []
    )
    specials = SpecialTokens(
        bos_id=bos,
        eos_id=eos,
        add_bos=add_bos if isinstance(add_bos, bool) else bos is not None and with_special[:1] == [bos],
        add_eos=add_eos if isinstance(add_eos, bool) else eos is not None and with_special[-1:] == [eos],
        add_space_prefix=byte_fallback and _strips_first_space(hf, tokens, types),
        eog_ids=end_of_generation_ids(
            tokens, types, [eos, *_ids(config.get("eos_token_id")), *(i for i in stop if i < vocab_size)]
        ),
    )
    kind = "llama" if byte_fallback else "gpt2"
    build_plain = lambda: _build(path, json.dumps(plain))  # noqa: E731
    return Tokenizer(hf, build_plain, tokens, types, kind, specials, _normalization(data.get("normalizer")))


def _build(path: Path, text: str) -> HFTokenizer:
    try:
        return HFTokenizer.from_str(text)
    except Exception as e:  # the library raises a bare Exception for a malformed file
        raise ModelFolderError(f"{path}: the tokenizers library cannot load it: {str(e)[:300]}") from None


def _token_table(
    path: Path, model: dict[str, Any], added: Any, vocab_size: int, byte_fallback: bool
) -> tuple[list[str], list[int]]:
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not isinstance(added if added is not None else [], list):
        raise ModelFolderError(f"{path}: 'model.vocab' must be an object and 'added_tokens' a list.")
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [UNUSED] * vocab_size
    entries = [(text, i, NORMAL) for text, i in vocab.items()]
    for a in added or []:
        if not isinstance(a, dict) or not isinstance(a.get("content"), str):
            raise ModelFolderError(f"{path}: an entry of 'added_tokens' has no 'content' text.")
        entries.append((a["content"], a.get("id"), CONTROL if a.get("special") else USER_DEFINED))
    unk = model.get("unk_token")
    for text, i, kind in entries:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < vocab_size:
            raise ModelFolderError(
                f"{path}: token {text[:40]!r} has id {i!r}, outside the model's vocabulary of {vocab_size} "
                "(config.json's vocab_size, the embedding's rows)."
            )
        if text == unk:  # an added special token too, in Llama 2's file
            kind = UNKNOWN
        elif (
            kind == NORMAL and byte_fallback and len(text) == 6 and text.startswith("<0x") and text[-1] == ">"
        ):
            kind = BYTE
        tokens[i], types[i] = text, kind
    return tokens, types


def _special_id(hf: HFTokenizer, token: Any, fallback: Any, vocab_size: int) -> int | None:
    """The id of tokenizer_config.json's ``bos_token``/``eos_token`` (a string or {"content": ...}),
    else config.json's id (an integer or the first of a list)."""
    text = token.get("content") if isinstance(token, dict) else token
    found = hf.token_to_id(text) if isinstance(text, str) else None
    if found is None:
        found = next(iter(_ids(fallback)), None)
    return found if found is not None and 0 <= found < vocab_size else None


def _ids(value: Any) -> list[int]:
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool) and v >= 0]


def _normalization(normalizer: Any) -> str:
    """What the normalizer does to a text's length (see ``Tokenizer.normalization``): "none" for nothing
    that shortens it (SentencePiece's space-to-▁ replacement, a prepended ▁), "nfc", or "other"."""
    if normalizer is None:
        return "none"
    if not isinstance(normalizer, dict):
        return "other"
    kind = normalizer.get("type")
    if kind == "Sequence":
        parts = [_normalization(n) for n in normalizer.get("normalizers") or []]
        return "other" if "other" in parts else "nfc" if "nfc" in parts else "none"
    if kind == "NFC":
        return "nfc"
    if kind == "Prepend" or (
        kind == "Replace"
        and normalizer.get("pattern") == {"String": " "}
        and normalizer.get("content") == SPM_SPACE
    ):
        return "none"
    return "other"


def _has_type(component: Any, kind: str) -> bool:
    """Whether a tokenizer.json component (or a Sequence of them) is of ``kind``."""
    if not isinstance(component, dict):
        return False
    parts = component.get("decoders") or component.get("pretokenizers") or []
    return component.get("type") == kind or any(_has_type(p, kind) for p in parts if isinstance(p, dict))


def _strips_first_space(hf: HFTokenizer, tokens: list[str], types: list[int]) -> bool:
    """Whether decoding drops the space a SentencePiece-style tokenizer put before the text (so the
    streaming decoder must too): decode one ``▁word`` piece and look."""
    piece = next(
        (
            i
            for i, (t, k) in enumerate(zip(tokens, types, strict=True))
            if k == NORMAL and t.startswith(SPM_SPACE) and len(t) > 1
        ),
        None,
    )
    return piece is not None and not hf.decode([piece]).startswith(" ")
