"""Refuse a prompt that cannot fit the context before tokenizing it.

Tokenizing is linear in the text but not free (about 1.5 s per MB here), so a text that cannot fit
is refused from its length alone: no token stands for more than ``L`` bytes of input text, ``L``
the longest token of the vocabulary in bytes, so a text of ``B`` UTF-8 bytes has at least
``ceil(B / L)`` tokens. Two cases need care:

- tokenizers that normalize with NFC first (``tokenizer.ggml.pre`` qwen2, deepseek-r1-qwen, or a
  Hugging Face tokenizer.json whose normalizer is NFC: ``Tokenizer.normalization``) may
  shrink the text before it is split: one character's canonical decomposition is at most 3x its
  composed UTF-8 length (U+0390), a little more when singletons spell its parts, so ``L`` is taken
  ``NFC_SHRINK`` times;
- a tokenizer.json normalizer that may shorten text by any amount (``normalization`` "other", e.g.
  Strip or NFKC): no bound;
- a SentencePiece vocabulary without byte tokens fuses unknown characters into one ``<unk>`` of any
  length: no bound, every text is tokenized (the request body limit still bounds it).
"""

from __future__ import annotations

from typing import Any

from cpullm.model.tokenizer import _NFC_PRE, BYTE, Tokenizer

from .errors import bad_request

NFC_SHRINK = 4


def max_bytes_per_token(tokenizer: Tokenizer, pre_tokenizer: object) -> int | None:
    """The most bytes of input text one token can stand for; ``None`` when nothing bounds it."""
    if (
        tokenizer.kind == "llama" and BYTE not in tokenizer.token_types
    ) or tokenizer.normalization == "other":
        return None
    longest = max(len(tokenizer.token_bytes(i)) for i in range(tokenizer.vocab_size))
    nfc = pre_tokenizer in _NFC_PRE or tokenizer.normalization == "nfc"
    return max(longest, 1) * (NFC_SHRINK if nfc else 1)


class ContextBoundTokenizer:
    """The model's tokenizer for prompts: ``encode`` first refuses (400) a text that cannot fit in
    ``max_model_len`` tokens with room for one more. Everything else is the wrapped tokenizer's."""

    def __init__(
        self, tokenizer: Tokenizer, max_model_len: int, bytes_per_token: int | None, param: str = "prompt"
    ) -> None:
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.bytes_per_token = bytes_per_token
        self.param = param  # the request field an error names

    def encode(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        self.check(text)
        return self.tokenizer.encode(text, add_special=add_special, parse_special=parse_special)

    def check(self, text: str) -> None:
        if self.bytes_per_token is None or len(text) * 4 < self.max_model_len * self.bytes_per_token:
            return  # even at 4 bytes per character it could fit
        n_bytes = len(text.encode("utf-8", "surrogatepass"))
        at_least = -(-n_bytes // self.bytes_per_token)
        if at_least >= self.max_model_len:
            raise bad_request(
                f"This model's maximum context length is {self.max_model_len} tokens, but the prompt has "
                f"at least {at_least} tokens ({n_bytes} bytes of text, at most {self.bytes_per_token} "
                "bytes per token); shorten the prompt.",
                param=self.param,
                code="context_length_exceeded",
            )

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tokenizer, name)
