"""Render chat messages into a prompt with the model's Jinja chat template, as transformers does.

Public API
----------
``ChatTemplate.from_gguf(gguf_file, tokenizer)``
    Uses ``tokenizer.chat_template`` from the file, or :data:`CHATML_TEMPLATE` when there is none.
``ChatTemplate(source, bos_token="", eos_token="")``
``.render(messages, add_generation_prompt=True, *, should_stop=None, **extra) -> str``
    ``messages`` is a list of ``{"role": str, "content": str}`` dicts (extra keys are passed through,
    e.g. ``tool_calls``). ``extra`` adds template variables (``tools``, ``documents``, ...).
    ``should_stop`` is an optional ``() -> bool`` asked every few dozen steps of the render (e.g.
    "has the client gone?"); when it returns true the render ends with :class:`ChatTemplateCancelled`.
``.encode(tokenizer, messages, add_generation_prompt=True, *, should_stop=None, **extra) -> list[int]``
    Renders and tokenizes with special tokens parsed; BOS is added only when the tokenizer asks for
    it and the rendered text does not already start with it.
``ChatTemplateError``
    A ``ValueError``: bad messages, a template that does not compile, one that raised
    (``raise_exception``, ``1 // 0``, a type error, ...), or one stopped at a limit — the message says
    which. ``ChatTemplateCancelled`` (a subclass) when ``should_stop`` fired.

The template comes from the model file, so it is untrusted code: its source is at most
``SOURCE_MAX_CHARS`` (128 K) characters, and it renders in
:class:`~cpullm.model.template_sandbox.BoundedSandbox`, which stops it after ``RENDER_MAX_SECONDS`` (2 s) or
``RENDER_MAX_STEPS`` steps, and keeps its output and every value it builds within ``RENDER_MAX_CHARS``
(4 M) characters; the limits are in :mod:`cpullm.model.template_budget`.

Otherwise the environment matches transformers' ``_compile_jinja_template``: an immutable sandbox
with ``trim_blocks`` and ``lstrip_blocks``, the ``loopcontrols`` extension, ``{% generation %}`` blocks
(rendered as plain text), a ``tojson`` filter that keeps non-ASCII text (``ensure_ascii=False``), and
the globals ``raise_exception`` and ``strftime_now`` (Jinja's ``lipsum`` is left out).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import jinja2
import jinja2.ext
import jinja2.nodes

from cpullm.model import template_sandbox
from cpullm.model.gguf_file import GGUFFile
from cpullm.model.template_budget import RenderCancelled, RenderStopped, collect

if TYPE_CHECKING:
    from cpullm.model.tokenizer import Tokenizer

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


# Compiling costs time in proportion to the source (~50 us a character here): a bound on the source is
# a bound on the model load. Real chat templates are a few thousand characters.
SOURCE_MAX_CHARS = 128 * 1024
ERROR_DETAIL_CHARS = 300  # of a message the template raised, quoted in ChatTemplateError
STRFTIME_MAX_CHARS = 200  # strftime_now's format ("%d %b %Y" in real templates)


class ChatTemplateError(ValueError):
    """The chat messages or the chat template cannot be rendered."""


class ChatTemplateCancelled(ChatTemplateError):
    """The caller's ``should_stop`` ended the render."""


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    encoder = json.JSONEncoder(
        ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )
    # piece by piece: an indent repeats on every line, so the text can far outgrow the value
    return collect(encoder.iterencode(value), "JSON text")


def _strftime_now(fmt: str) -> str:
    if len(fmt) > STRFTIME_MAX_CHARS:
        raise jinja2.exceptions.TemplateError(f"strftime_now's format is longer than {STRFTIME_MAX_CHARS}")
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


def _short(text: object) -> str:
    text = str(text)
    return text if len(text) <= ERROR_DETAIL_CHARS else text[:ERROR_DETAIL_CHARS] + "..."


@lru_cache(maxsize=16)
def _compile(source: str) -> jinja2.Template:
    if len(source) > SOURCE_MAX_CHARS:
        raise ChatTemplateError(
            f"the model's chat template is {len(source):,} characters long, more than the "
            f"{SOURCE_MAX_CHARS:,} a template may have; use another model file, or send plain prompts."
        )
    env = template_sandbox.BoundedSandbox(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols, _GenerationTag]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ChatTemplateError(
            f"the model's chat template does not compile: {_short(e.message)} (line {e.lineno})."
        ) from e
    except Exception as e:  # e.g. RecursionError on absurdly nested source
        raise ChatTemplateError(
            f"the model's chat template does not compile: {type(e).__name__}: {_short(e)}."
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
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        *,
        should_stop: Callable[[], bool] | None = None,
        **extra: Any,
    ) -> str:
        checked = _check_messages(messages)
        variables = {
            **extra,
            "messages": checked,
            "add_generation_prompt": add_generation_prompt,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
        }
        try:
            return template_sandbox.render(self._template, variables, should_stop)
        except RenderCancelled as e:
            raise ChatTemplateCancelled("rendering the chat template was cancelled.") from e
        except RenderStopped as e:
            raise ChatTemplateError(
                f"the model's chat template was stopped: it {e}. The template is broken or hostile; "
                "use another model file, or send a plain prompt instead of chat messages."
            ) from e
        except jinja2.exceptions.TemplateError as e:
            raise ChatTemplateError(f"the chat template rejected the messages: {_short(e)}") from e
        except Exception as e:  # the template is code: 1 // 0, a type error, recursion, memory, ...
            raise ChatTemplateError(
                f"the model's chat template failed: {type(e).__name__}: {_short(e)}. The template is broken; "
                "use another model file, or send a plain prompt instead of chat messages."
            ) from e

    def encode(
        self,
        tokenizer: Tokenizer,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        *,
        should_stop: Callable[[], bool] | None = None,
        **extra: Any,
    ) -> list[int]:
        text = self.render(messages, add_generation_prompt, should_stop=should_stop, **extra)
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
