"""The "llama" (SentencePiece-style) tokenizer against the real sentencepiece library.

A tiny BPE SentencePiece model is trained in memory with Llama's settings (byte fallback, dummy
prefix, no whitespace folding, split digits), converted to GGUF metadata the way llama.cpp's
converter does (pieces, scores, token types), and our encoding must equal ``sp.encode``.
"""

from __future__ import annotations

import io
from pathlib import Path

import gguf
import pytest
import sentencepiece as spm
from test_engine_tokenizer import TRICKY
from tiny_gguf import TinySpec, write_tiny_gguf

from cpullm.model.gguf_file import GGUFFile
from cpullm.model.tokenizer import IncrementalDecoder, Tokenizer

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world! Hello there, general Kenobi.",
    "What is the capital of France? Paris is the capital of France.",
    "Numbers like 12345 and 3.14 appear here.",
    "naïve café résumé über straße",
    "tabs\tand  double  spaces   here",
    "the theory of everything is there then",
]
EXTRA = [*CORPUS, "Hello", " Hello", "Paris, France", "overthere", "thethethe", "x" * 40]


def _gguf_vocab(sp: spm.SentencePieceProcessor) -> tuple[list[str], list[int], list[float]]:
    """As llama.cpp's convert_hf_to_gguf `_create_vocab_sentencepiece`."""
    tokens, types, scores = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            types.append(gguf.TokenType.UNKNOWN)
        elif sp.is_control(i):
            types.append(gguf.TokenType.CONTROL)
        elif sp.is_unused(i):
            types.append(gguf.TokenType.UNUSED)
        elif sp.is_byte(i):
            types.append(gguf.TokenType.BYTE)
        else:
            types.append(gguf.TokenType.NORMAL)
    return tokens, [int(t) for t in types], scores


@pytest.fixture(scope="module")
def trained(tiny_dir: Path) -> tuple[spm.SentencePieceProcessor, Tokenizer]:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 20),
        model_writer=model,
        vocab_size=420,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        add_dummy_prefix=True,
        normalization_rule_name="identity",
        split_digits=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    spec = TinySpec(tokenizer="llama", spm_vocab=_gguf_vocab(sp), add_bos=True, chat_template=None)
    path = write_tiny_gguf(tiny_dir / "trained_spm.gguf", spec)
    return sp, Tokenizer.from_gguf(GGUFFile.open(path))


@pytest.mark.parametrize("text", [*TRICKY, *EXTRA])
def test_encode_matches_sentencepiece(
    trained: tuple[spm.SentencePieceProcessor, Tokenizer], text: str
) -> None:
    sp, tok = trained
    ids = tok.encode(text, add_special=False)
    assert ids == sp.encode(text), [tok.piece(i) for i in ids]
    assert tok.encode(text) == [sp.bos_id(), *sp.encode(text)]


@pytest.mark.parametrize("text", [*TRICKY, *EXTRA])
def test_decode_matches_sentencepiece(
    trained: tuple[spm.SentencePieceProcessor, Tokenizer], text: str
) -> None:
    sp, tok = trained
    ids = sp.encode(text)
    assert tok.decode(ids) == sp.decode(ids)
    dec = IncrementalDecoder(tok)
    assert "".join([*(dec.push(i) for i in ids), dec.flush()]) == sp.decode(ids)
