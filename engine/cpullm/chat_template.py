"""Render chat messages into a prompt with the model's Jinja chat template, as transformers does.

Public API
----------
``ChatTemplate.from_gguf(gguf_file, tokenizer)``
    Uses ``tokenizer.chat_template`` from the file, or :data:`CHATML_TEMPLATE` when there is none.
``ChatTemplate(source, bos_token="", eos_token="")``
``.render(messages, add_generation_prompt=True, **extra) -> str``
    ``messages`` is a list of ``{"role": str, "content": str}`` dicts (extra keys are passed through,
    e.g. ``tool_calls``). ``extra`` adds template variables (``tools``, ``documents``, ...).
``.encode(tokenizer, messages, add_generation_prompt=True) -> list[int]``
    Renders and tokenizes with special tokens parsed; BOS is added only when the tokenizer asks for
    it and the rendered text does not already start with it.
``ChatTemplateError``
    A ``ValueError``: bad messages, a template that does not compile, or one that raised
    (``raise_exception`` in the template) — the message says which.

The environment matches transformers' ``_compile_jinja_template``: ``ImmutableSandboxedEnvironment``
with ``trim_blocks`` and ``lstrip_blocks``, the ``loopcontrols`` extension, ``{% generation %}`` blocks
(rendered as plain text), a ``tojson`` filter that keeps non-ASCII text (``ensure_ascii=False``), and
the globals ``raise_exception`` and ``strftime_now``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .gguf_file import GGUFFile

if TYPE_CHECKING:
    from .tokenizer import Tokenizer

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class ChatTemplateError(ValueError):
    """The chat messages or the chat template cannot be rendered."""


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _GenerationTag(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` (transformers' AssistantTracker): render the body as is."""

    tags = frozenset({"generation"})

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Any) -> str:
        return caller()


@lru_cache(maxsize=16)
def _compile(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols, _GenerationTag]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ChatTemplateError(
            f"the model's chat template does not compile: {e.message} (line {e.lineno})."
        ) from e


class ChatTemplate:
    def __init__(self, source: str | None, bos_token: str = "", eos_token: str = "") -> None:
        self.source = source if source else CHATML_TEMPLATE
        self.is_fallback = not source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self._template = _compile(self.source)

    @classmethod
    def from_gguf(cls, gguf: GGUFFile, tokenizer: Tokenizer) -> ChatTemplate:
        source = gguf.metadata.get("tokenizer.chat_template")
        bos = tokenizer.piece(tokenizer.bos_id) if tokenizer.bos_id is not None else ""
        eos = tokenizer.piece(tokenizer.eos_id) if tokenizer.eos_id is not None else ""
        return cls(source if isinstance(source, str) else None, bos, eos)

    def render(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True, **extra: Any
    ) -> str:
        checked = _check_messages(messages)
        try:
            return self._template.render(
                messages=checked,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                **extra,
            )
        except jinja2.exceptions.TemplateError as e:
            raise ChatTemplateError(f"the chat template rejected the messages: {e}") from e

    def encode(
        self, tokenizer: Tokenizer, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True
    ) -> list[int]:
        text = self.render(messages, add_generation_prompt)
        add_bos = not (self.bos_token and text.startswith(self.bos_token))
        ids = tokenizer.encode(text, add_special=False, parse_special=True)
        if add_bos and tokenizer.add_bos and tokenizer.bos_id is not None:
            ids.insert(0, tokenizer.bos_id)
        return ids


def _check_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise ChatTemplateError("messages must be a list of {'role': ..., 'content': ...} objects.")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ChatTemplateError(
                f"message {i} is {type(message).__name__}, expected an object with role and content."
            )
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not role:
            raise ChatTemplateError(f"message {i} has no 'role' string (e.g. 'system', 'user', 'assistant').")
        if content is not None and not isinstance(content, str):
            raise ChatTemplateError(f"message {i} ('{role}') has non-text 'content'; only text is supported.")
        checked.append({**message, "content": content if content is not None else ""})
    return checked
