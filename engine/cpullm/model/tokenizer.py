"""Tokenizer built from GGUF metadata on top of the ``tokenizers`` library.

Public API
----------
``Tokenizer.from_gguf(gguf_file)``
    Supports ``tokenizer.ggml.model``:

    * ``"gpt2"``: byte-level BPE with the file's merges and the pre-tokenizer named by
      ``tokenizer.ggml.pre`` (see :data:`PRE_TOKENIZERS`; the regexes are llama.cpp's / the original
      ``tokenizer.json`` ones).
    * ``"llama"``: SentencePiece-style BPE: merges derived from the piece scores (as transformers'
      ``LlamaConverter`` does), ``<0xNN>`` byte-fallback tokens, ``▁`` for spaces, and a ``▁`` prefix
      before text that starts the input or follows a special token when ``add_space_prefix`` is set
      (llama.cpp and transformers' legacy behaviour).

``encode(text, add_special=True, parse_special=False) -> list[int]``
    ``add_special`` adds BOS/EOS as ``tokenizer.ggml.add_bos_token``/``add_eos_token`` say.
    ``parse_special`` matches control tokens (``token_type`` CONTROL, e.g. ``<|im_start|>``) atomically
    in the text; otherwise their text is tokenized like any other. User-defined tokens always match.
``decode(ids, skip_special=False) -> str``
``IncrementalDecoder(tokenizer)``
    For streaming: ``push(token_id)`` returns the text that became complete (never half a UTF-8
    character, byte-fallback pieces included); ``flush()`` returns what is left. The concatenation of
    its outputs equals ``decode(ids)``.
``eog_ids``
    Token ids that end generation: EOS, EOT/EOM when the file names them, and control tokens whose
    text is a known end-of-turn marker (``<|im_end|>``, ``<|eot_id|>``, ...), as llama.cpp does.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from cpullm.model.gguf_file import GGUFError, GGUFFile

# gguf TokenType values
UNDEFINED, NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 0, 1, 2, 3, 4, 5, 6
# The special token ids cpullm reads (tokenizer.ggml.<name>_token_id); each must name a token.
SPECIAL_TOKENS = ("bos", "eos", "eot", "eom", "unknown")
MAX_SPM_PIECE = 1024  # characters; real SentencePiece pieces are a few dozen at most

SPM_SPACE = "▁"
_LLAMA3_REGEX = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_REGEX = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_END_OF_TURN_TEXTS = frozenset(
    {
        "<|im_end|>",
        "<|eot_id|>",
        "<|end_of_text|>",
        "<|endoftext|>",
        "<|end|>",
        "<end_of_turn>",
        "</s>",
        "<|eom_id|>",
    }
)


def _gpt2_pre() -> Any:
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _digits_gpt2_pre() -> Any:  # smollm / starcoder: split digits, then the GPT-2 regex
    return pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )


def _regex_pre(regex: str) -> Any:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


# tokenizer.ggml.pre -> pre-tokenizer factory.
PRE_TOKENIZERS = {
    "default": _gpt2_pre,
    "gpt-2": _gpt2_pre,
    "gpt2": _gpt2_pre,
    "smollm": _digits_gpt2_pre,
    "starcoder": _digits_gpt2_pre,
    "refact": _digits_gpt2_pre,
    "codeshell": _digits_gpt2_pre,
    "llama-bpe": lambda: _regex_pre(_LLAMA3_REGEX),
    "llama3": lambda: _regex_pre(_LLAMA3_REGEX),
    "qwen2": lambda: _regex_pre(_QWEN2_REGEX),
    "deepseek-r1-qwen": lambda: _regex_pre(_QWEN2_REGEX),
}
_IGNORE_MERGES_PRE = frozenset({"llama-bpe", "llama3"})  # whole words in the vocab skip merging
_NFC_PRE = frozenset({"qwen2", "deepseek-r1-qwen"})


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable-character table of byte-level BPE vocabularies."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@dataclass(frozen=True)
class SpecialTokens:
    """What a tokenizer adds around a text and what ends generation."""

    bos_id: int | None
    eos_id: int | None
    add_bos: bool
    add_eos: bool
    # SentencePiece-style: a space was put before the text, which decoding drops again
    add_space_prefix: bool
    eog_ids: frozenset[int]  # token ids that end generation


class Tokenizer:
    """Encode/decode text for one GGUF model; see the module docstring."""

    def __init__(
        self,
        hf: HFTokenizer,
        build_plain: Callable[[], HFTokenizer],
        tokens: Sequence[str],
        token_types: Sequence[int],
        kind: str,
        specials: SpecialTokens,
        normalization: str = "none",
    ) -> None:
        self._hf = hf  # control tokens matched atomically
        self._build_plain = build_plain
        # control tokens' text tokenized as text; built on first use
        self._hf_plain: HFTokenizer | None = None
        self.tokens = list(tokens)
        self.token_types = list(token_types)
        self.kind = kind  # "gpt2" (byte-level BPE) or "llama" (SentencePiece-style pieces and byte tokens)
        self.bos_id, self.eos_id = specials.bos_id, specials.eos_id
        self.add_bos, self.add_eos = specials.add_bos, specials.add_eos
        self.add_space_prefix = specials.add_space_prefix
        self.eog_ids = specials.eog_ids
        # What the text goes through before it is split, for bounds on its token count: "none" (nothing
        # that shortens it), "nfc" (Unicode NFC), or "other" (a normalizer that may shorten it by any amount)
        self.normalization = normalization
        self._token_bytes: list[bytes] | None = None

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> Tokenizer:
        """Build the tokenizer of ``gguf``; raise GGUFError when its tokenizer metadata is inconsistent.

        Checked before anything is built: the token, type and score arrays have one entry per token,
        token types are known, scores finite, special token ids name tokens, and every BPE merge joins
        two vocabulary tokens into a third.
        """
        kind = gguf.get_str("tokenizer.ggml.model", None)
        tokens = gguf.get_strings("tokenizer.ggml.tokens", None)
        if not tokens:
            raise GGUFError(f"{gguf.path}: the file has no vocabulary ('tokenizer.ggml.tokens').")
        types = _token_types(gguf, len(tokens))
        scores = _scores(gguf, len(tokens))
        special = {name: gguf.get_token_id(name, len(tokens)) for name in SPECIAL_TOKENS}
        if kind == "gpt2":
            pre = gguf.get_str("tokenizer.ggml.pre", "default")
            if pre not in PRE_TOKENIZERS:
                raise GGUFError(
                    f"{gguf.path}: pre-tokenizer {pre!r} is not supported (supported: "
                    f"{', '.join(sorted(PRE_TOKENIZERS))})."
                )
            merges = gguf.get_strings("tokenizer.ggml.merges", None)
            if merges is None:
                raise GGUFError(f"{gguf.path}: a gpt2 tokenizer needs 'tokenizer.ggml.merges'.")
            pairs = _merge_pairs(gguf, merges)
            build = lambda control: _build_bpe(gguf, tokens, types, pairs, pre, control)  # noqa: E731
        elif kind == "llama":
            if scores is None:
                raise GGUFError(f"{gguf.path}: a llama tokenizer needs one score per token.")
            if max(map(len, tokens)) > MAX_SPM_PIECE:  # deriving merges tries every cut of every piece
                longest = next(i for i, t in enumerate(tokens) if len(t) > MAX_SPM_PIECE)
                raise GGUFError(
                    f"{gguf.path}: token {longest} of the llama vocabulary is {len(tokens[longest])} "
                    f"characters long; SentencePiece pieces are at most {MAX_SPM_PIECE}. The file is corrupt."
                )
            space_prefix = gguf.get_bool("tokenizer.ggml.add_space_prefix", True)
            unk = special["unknown"]
            build = lambda control: _build_spm(tokens, types, scores, space_prefix, unk, control)  # noqa: E731
        else:
            raise GGUFError(
                f"{gguf.path}: tokenizer model {kind!r} is not supported (supported: gpt2, llama)."
            )
        n = len(tokens)
        specials = SpecialTokens(
            bos_id=special["bos"],
            eos_id=special["eos"],
            add_bos=gguf.get_bool("tokenizer.ggml.add_bos_token", kind == "llama"),
            add_eos=gguf.get_bool("tokenizer.ggml.add_eos_token", False),
            add_space_prefix=kind == "llama" and gguf.get_bool("tokenizer.ggml.add_space_prefix", True),
            eog_ids=end_of_generation_ids(
                tokens, types, {gguf.get_token_id(name, n) for name in ("eos", "eot", "eom")}
            ),
        )
        nfc = kind == "gpt2" and gguf.get_str("tokenizer.ggml.pre", "default") in _NFC_PRE
        normalization = "nfc" if nfc else "none"
        return cls(build(True), lambda: build(False), tokens, types, kind, specials, normalization)

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def encode(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        hf = self._hf if parse_special else self._plain()
        # encode_batch releases the GIL while it runs (encode holds it): a long prompt tokenized in a
        # worker thread must not stall the server's event loop.
        ids: list[int] = hf.encode_batch([text], add_special_tokens=False)[0].ids
        if add_special and self.add_bos and self.bos_id is not None:
            ids.insert(0, self.bos_id)
        if add_special and self.add_eos and self.eos_id is not None:
            ids.append(self.eos_id)
        return ids

    def _plain(self) -> HFTokenizer:
        if self._hf_plain is None:
            self._hf_plain = self._build_plain()
        return self._hf_plain

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        return self._hf.decode(list(ids), skip_special_tokens=skip_special)

    def is_control(self, token_id: int) -> bool:
        return self.token_types[token_id] in (CONTROL, UNKNOWN)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes this token stands for (control tokens: their UTF-8 text)."""
        if self._token_bytes is None:
            self._token_bytes = _token_byte_table(self.tokens, self.token_types, self.kind)
        return self._token_bytes[token_id]

    def piece(self, token_id: int) -> str:
        return self.tokens[token_id]


class IncrementalDecoder:
    """Streaming detokenizer: emits text only once its UTF-8 bytes are complete."""

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = False) -> None:
        self.tokenizer = tokenizer
        self.skip_special = skip_special
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # SentencePiece decoding drops the space that add_space_prefix put before the first word.
        self._strip_space = tokenizer.add_space_prefix
        self._started = False

    def push(self, token_id: int) -> str:
        if self.skip_special and self.tokenizer.is_control(token_id):
            return ""
        text = self._utf8.decode(self.tokenizer.token_bytes(token_id))
        return self._strip_first_space(text)

    def flush(self) -> str:
        return self._strip_first_space(self._utf8.decode(b"", final=True))

    def _strip_first_space(self, text: str) -> str:
        if not text or self._started:
            return text
        self._started = True
        return text[1:] if self._strip_space and text.startswith(" ") else text


def _build_bpe(
    gguf: GGUFFile, tokens: list[str], types: list[int], pairs: list[tuple[str, str]], pre: str, control: bool
) -> HFTokenizer:
    vocab = _vocab_dict(tokens)
    try:
        model = models.BPE(vocab=vocab, merges=pairs, ignore_merges=pre in _IGNORE_MERGES_PRE)
    except Exception as e:  # tokenizers raises a bare Exception for a merge over unknown tokens
        raise _merge_error(gguf, pairs, vocab, e) from None
    hf = HFTokenizer(model)
    if pre in _NFC_PRE:
        hf.normalizer = normalizers.NFC()
    hf.pre_tokenizer = PRE_TOKENIZERS[pre]()
    hf.decoder = decoders.ByteLevel()
    _add_special_tokens(hf, tokens, types, control)
    return hf


def _build_spm(
    tokens: list[str], types: list[int], scores: Any, space_prefix: bool, unk: int | None, control: bool
) -> HFTokenizer:
    vocab = _vocab_dict(tokens)
    merges = spm_merges(tokens, types, np.asarray(scores, dtype=np.float64))
    unk_token = tokens[unk] if unk is not None else None
    hf = HFTokenizer(
        models.BPE(vocab=vocab, merges=merges, unk_token=unk_token, byte_fallback=True, fuse_unk=True)
    )
    steps = [normalizers.Prepend(SPM_SPACE)] if space_prefix else []
    hf.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", SPM_SPACE)])
    strip = [decoders.Strip(content=" ", left=1, right=0)] if space_prefix else []
    hf.decoder = decoders.Sequence(
        [decoders.Replace(SPM_SPACE, " "), decoders.ByteFallback(), decoders.Fuse(), *strip]
    )
    _add_special_tokens(hf, tokens, types, control)
    return hf


def spm_merges(tokens: Sequence[str], types: Sequence[int], scores: np.ndarray) -> list[tuple[str, str]]:
    """BPE merges equivalent to SentencePiece's score-driven merging (transformers' extraction).

    Every normal piece that splits into two normal pieces yields a merge; merges are ordered by the
    merged piece's score, highest first (ties: by the ids of the two parts).
    """
    ids = {t: i for i, t in enumerate(tokens) if types[i] in (NORMAL, USER_DEFINED)}
    found: list[tuple[float, int, int, str, str]] = []
    for piece, pid in ids.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in ids and right in ids:
                found.append((-float(scores[pid]), ids[left], ids[right], left, right))
    found.sort()
    return [(left, right) for _, _, _, left, right in found]


def _vocab_dict(tokens: list[str]) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for i, tok in enumerate(tokens):
        vocab.setdefault(tok, i)  # a duplicated piece keeps its first id
    return vocab


def _add_special_tokens(hf: HFTokenizer, tokens: list[str], types: list[int], control: bool) -> None:
    user = [
        AddedToken(t, special=False, normalized=False)
        for t, k in zip(tokens, types, strict=True)
        if k == USER_DEFINED
    ]
    if user:
        hf.add_tokens(user)
    if control:
        special = [
            AddedToken(t, special=True, normalized=False)
            for t, k in zip(tokens, types, strict=True)
            if k in (CONTROL, UNKNOWN)
        ]
        hf.add_special_tokens(special)


def _token_types(gguf: GGUFFile, n: int) -> list[int]:
    raw = gguf.get_numbers("tokenizer.ggml.token_type", None)
    if raw is None:
        return [NORMAL] * n
    if len(raw) != n or raw.dtype.kind not in "iu":
        raise GGUFError(
            f"{gguf.path}: 'tokenizer.ggml.token_type' has {len(raw)} {raw.dtype} entries; expected one "
            f"integer per token ({n})."
        )
    bad = np.flatnonzero((raw < UNDEFINED) | (raw > BYTE))
    if bad.size:
        raise GGUFError(
            f"{gguf.path}: token {bad[0]} has type {raw[bad[0]]} in 'tokenizer.ggml.token_type'; token "
            f"types are {UNDEFINED} to {BYTE}. The file is corrupt."
        )
    return raw.tolist()


def _scores(gguf: GGUFFile, n: int) -> np.ndarray | None:
    raw = gguf.get_numbers("tokenizer.ggml.scores", None)
    if raw is None:
        return None
    if len(raw) != n or raw.dtype.kind not in "iuf":
        raise GGUFError(
            f"{gguf.path}: 'tokenizer.ggml.scores' has {len(raw)} {raw.dtype} entries; expected one number "
            f"per token ({n})."
        )
    scores = raw.astype(np.float64)
    if not np.isfinite(scores).all():
        bad = int(np.flatnonzero(~np.isfinite(scores))[0])
        raise GGUFError(
            f"{gguf.path}: token {bad} has score {scores[bad]} in 'tokenizer.ggml.scores'; scores must be "
            "finite. The file is corrupt."
        )
    return scores


def _merge_pairs(gguf: GGUFFile, merges: list[str]) -> list[tuple[str, str]]:
    """``'left right'`` merges as pairs; GGUFError for one without the space."""
    parts = [m.partition(" ") for m in merges]
    if not all([space for _, space, _ in parts]):  # a list: several times faster than a generator here
        i = next(i for i, (_, space, _) in enumerate(parts) if not space)
        raise _bad_merge(gguf, i, merges[i], "has no space between its two parts")
    return [(left, right) for left, _, right in parts]


def _merge_error(
    gguf: GGUFFile, pairs: list[tuple[str, str]], vocab: dict[str, int], error: Exception
) -> GGUFError:
    """The error for merges the tokenizers library refused: the first merge over an unknown token.

    Found only after the library refused them, so loading a good file costs no extra pass.
    """
    for i, (left, right) in enumerate(pairs):
        unknown = next((t for t in (left, right, left + right) if t not in vocab), None)
        if unknown is not None:
            return _bad_merge(gguf, i, f"{left} {right}", f"names {unknown!r}, not a token")
    return GGUFError(f"{gguf.path}: the BPE tokenizer cannot be built from the file's vocabulary: {error}")


def _bad_merge(gguf: GGUFFile, index: int, merge: str, why: str) -> GGUFError:
    return GGUFError(
        f"{gguf.path}: BPE merge #{index} {merge!r} in 'tokenizer.ggml.merges' {why}; each merge must be two "
        "vocabulary tokens separated by a space whose concatenation is also a token. The file is corrupt."
    )


def _token_byte_table(tokens: list[str], types: list[int], kind: str) -> list[bytes]:
    if kind == "llama":
        return [_spm_token_bytes(t, k) for t, k in zip(tokens, types, strict=True)]
    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    table = []
    for tok, k in zip(tokens, types, strict=True):
        if k in (CONTROL, UNKNOWN, USER_DEFINED) or any(c not in byte_of for c in tok):
            table.append(tok.encode("utf-8"))
        else:
            table.append(bytes(byte_of[c] for c in tok))
    return table


def _spm_token_bytes(tok: str, kind: int) -> bytes:
    # A malformed byte piece (not <0xNN>) stands for its text, as the ByteFallback decoder reads it.
    if kind == BYTE and len(tok) == 6 and tok.startswith("<0x") and tok.endswith(">") and _is_hex(tok[3:5]):
        return bytes([int(tok[3:5], 16)])
    if kind in (CONTROL, UNKNOWN):
        return tok.encode("utf-8")
    return tok.replace(SPM_SPACE, " ").encode("utf-8")


def end_of_generation_ids(tokens: list[str], types: list[int], named: Iterable[int | None]) -> frozenset[int]:
    """The ``named`` ids (EOS, EOT, EOM: None when absent) and the control tokens whose text is a known
    end-of-turn marker, as llama.cpp does."""
    ids = {i for i in named if i is not None}
    ids |= {
        i
        for i, (t, k) in enumerate(zip(tokens, types, strict=True))
        if k == CONTROL and t in _END_OF_TURN_TEXTS
    }
    return frozenset(ids)


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)
