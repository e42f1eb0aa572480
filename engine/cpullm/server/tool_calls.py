"""Tool calls: how the tools reach the model, which output format it answers in, and parsing that output
(whole, or as a stream of OpenAI tool-call deltas).

Formats (``FORMATS``), chosen from the chat template's source by ``ToolFormat.for_template``:

- ``hermes`` (Qwen 2.5/3, Hermes, SmolLM3, ...): ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``,
  one block per call; text before the first block is the message's content. Picked when the template
  mentions ``<tool_call>``, and for every template that does not render ``tools`` at all (see below).
- ``llama3_json`` (Llama 3.1/3.2/3.3): the whole answer is ``{"name": ..., "parameters": {...}}``,
  several joined by ``; ``, optionally after ``<|python_tag|>``. Picked when the template mentions
  ``<|python_tag|>`` or ``ipython``.
- ``mistral``: ``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`` (also the v11 form
  ``[TOOL_CALLS]name[ARGS]{...}``). Picked when the template mentions ``[TOOL_CALLS]``; a control token,
  so such requests detokenize with special tokens kept.

A template that never names ``tools`` (ChatML, SmolLM2, the tiny test models) cannot show the model its
tools; for those, ``fallback_messages`` adds a system message listing them in Hermes' words and
rewrites the tool messages and the assistant's earlier tool calls into text the template can render
(``<tool_response>`` in a user message, ``<tool_call>`` blocks in the assistant's content), so the
``hermes`` format applies. Templates that do name ``tools`` get them as HF's ``apply_chat_template``
passes them (the request's ``tools`` list), with earlier tool calls' arguments as objects (vLLM's habit:
templates write ``arguments | tojson``).

``tool_choice`` ``required`` or a named function is enforced with a grammar (``call_grammar``): the
format's own markers around a JSON schema that allows exactly the offered functions' names with their
parameters' schemas, in that key order (``name`` first, so a stream can name the function early).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# {"name": "<name>", "arguments": <- the arguments' text starts here (or "parameters")
_CALL_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"(?:arguments|parameters)"\s*:\s*')
_DECODER = json.JSONDecoder()
_TOOLS_NAMED = re.compile(r"\btools\b")


@dataclass
class Call:
    """A tool call as parsed so far: ``arguments`` is the JSON text of its arguments (a prefix of the
    final text while ``complete`` is false)."""

    name: str | None
    arguments: str
    complete: bool


@dataclass
class Parsed:
    content: str  # the text that is surely content (a possible start of a marker held back)
    calls: list[Call] = field(default_factory=list)


def _held(text: str, marker: str) -> int:
    """How many characters at the end of ``text`` could be the start of ``marker``."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0


def _call(body: str, complete: bool) -> Call:
    """One call object's text (``{"name": ..., "arguments": ...}``), complete or still growing."""
    head = _CALL_HEAD.match(body)
    if complete:
        try:
            value = json.loads(body)
        except ValueError:
            return Call(None, "", False)
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            return Call(None, "", False)
        args = value.get("arguments", value.get("parameters"))
        if args is None:
            return Call(value["name"], "{}", True)
        if head is not None:  # the arguments' own text, so a stream's chunks add up to it
            _, end = _DECODER.raw_decode(body, head.end())
            return Call(value["name"], body[head.end() : end], True)
        return Call(value["name"], json.dumps(args, ensure_ascii=False), True)
    if head is None:
        return Call(None, "", False)
    name = json.loads(f'"{head.group(1)}"')
    # what follows may end with the object's own "}" and whitespace: hold those back
    return Call(name, body[head.end() :].rstrip().rstrip("}").rstrip(), False)


def _json_values(text: str, pos: int, separators: str, final: bool) -> tuple[list[Call], int]:
    """Call objects one after another from ``pos`` (skipping ``separators``); the last may be partial.
    Returns the calls and where parsing stopped."""
    calls: list[Call] = []
    while True:
        while pos < len(text) and (text[pos].isspace() or text[pos] in separators):
            pos += 1
        if pos >= len(text) or text[pos] != "{":
            return calls, pos
        try:
            _, end = _DECODER.raw_decode(text, pos)
        except ValueError:
            calls.append(_call(text[pos:], False) if not final else Call(None, "", False))
            return calls, len(text)
        calls.append(_call(text[pos:end], True))
        pos = end


def _parse_hermes(text: str, final: bool) -> Parsed:
    start, end = "<tool_call>", "</tool_call>"
    i = text.find(start)
    if i < 0:
        return Parsed(text if final else text[: len(text) - _held(text, start)])
    parsed = Parsed(text[:i])
    while i >= 0:
        j = text.find(end, i + len(start))
        if j < 0:
            body = text[i + len(start) :]
            body = body[: len(body) - _held(body, end)]
            parsed.calls.append(_call(body, False) if not final else Call(None, "", False))
            break
        parsed.calls.append(_call(text[i + len(start) : j].strip(), True))
        i = text.find(start, j + len(end))
    return parsed


def _parse_llama3(text: str, final: bool) -> Parsed:
    tag = "<|python_tag|>"
    body = text.lstrip()
    if not final and tag.startswith(body):  # nothing yet, or the start of the tag
        return Parsed("")
    if body.startswith(tag):
        body = body[len(tag) :]
    if not body.lstrip().startswith("{"):
        return Parsed(text)
    calls, _ = _json_values(body, 0, ";", final)
    return Parsed("", calls)


def _parse_mistral(text: str, final: bool) -> Parsed:
    marker = "[TOOL_CALLS]"
    i = text.find(marker)
    if i < 0:
        return Parsed(text if final else text[: len(text) - _held(text, marker)])
    parsed = Parsed(text[:i])
    rest = text[i + len(marker) :]
    if rest.lstrip().startswith("["):  # [{"name": ..., "arguments": ...}, ...]
        parsed.calls, _ = _json_values(rest, rest.index("[") + 1, ",", final)
        return parsed
    for piece in rest.split(marker):  # v11: name[ARGS]{...}, each call after its own marker
        name, sep, args = piece.partition("[ARGS]")
        if not sep:
            if final or name.strip():
                parsed.calls.append(Call(None, "", False))
            break
        try:
            _, end = _DECODER.raw_decode(args.lstrip())
            parsed.calls.append(Call(name.strip(), args.lstrip()[:end], True))
        except ValueError:
            incomplete = args.lstrip().rstrip().rstrip("}")
            parsed.calls.append(Call(name.strip(), incomplete, False) if not final else Call(None, "", False))
    return parsed


@dataclass(frozen=True)
class ToolFormat:
    name: str
    parse: Callable[[str, bool], Parsed]  # (text so far, is it the whole output) -> Parsed
    arguments_key: str  # the key the call object names the arguments with
    open: str  # the grammar's text before the calls, between two calls, and after them
    between: str
    close: str
    keep_special_tokens: bool = False  # the format's marker is a control token
    short_ids: bool = False  # call ids of 9 letters and digits (Mistral's templates refuse others)

    def call_id(self) -> str:
        return uuid.uuid4().hex[:9] if self.short_ids else f"call_{uuid.uuid4().hex[:24]}"

    @staticmethod
    def for_template(source: str | None) -> ToolFormat:
        text = source or ""
        if "[TOOL_CALLS]" in text:
            return FORMATS["mistral"]
        if "<|python_tag|>" in text or "ipython" in text:
            return FORMATS["llama3_json"]
        return FORMATS["hermes"]

    def parse_output(self, text: str) -> tuple[str | None, list[Call]]:
        """The finished output's (content, calls); no calls (and all text as content) unless every
        call parsed."""
        parsed = self.parse(text, True)
        if not parsed.calls or not all(c.complete and c.name is not None for c in parsed.calls):
            return text, []
        return parsed.content if parsed.content.strip() else None, parsed.calls

    def call_grammar(self, tools: list[dict[str, Any]], parallel: bool) -> str:
        """A Lark grammar (llguidance's) for one call, or one or more, of the given functions."""
        options = []
        for tool in tools:
            fn = tool["function"]
            params = fn.get("parameters") or {"type": "object"}
            options.append(
                {
                    "type": "object",
                    "properties": {"name": {"const": fn["name"]}, self.arguments_key: params},
                    "required": ["name", self.arguments_key],
                    "additionalProperties": False,
                }
            )
        schema = options[0] if len(options) == 1 else {"anyOf": options}
        schema = {**schema, "x-guidance": {"whitespace_flexible": False}}
        more = f" ({json.dumps(self.between)} call)*" if parallel else ""
        return (
            f"start: {json.dumps(self.open)} call{more} {json.dumps(self.close)}\n"
            f"call: %json {json.dumps(schema, ensure_ascii=False)}\n"
        )


FORMATS = {
    "hermes": ToolFormat(
        "hermes",
        _parse_hermes,
        "arguments",
        "<tool_call>\n",
        "\n</tool_call>\n<tool_call>\n",
        "\n</tool_call>",
    ),
    "llama3_json": ToolFormat("llama3_json", _parse_llama3, "parameters", "", "; ", ""),
    "mistral": ToolFormat("mistral", _parse_mistral, "arguments", "[TOOL_CALLS][", ", ", "]", True, True),
}


def template_renders_tools(source: str | None) -> bool:
    """Whether a chat template can show the model its tools (it names the ``tools`` variable)."""
    return bool(source) and _TOOLS_NAMED.search(source or "") is not None


def openai_calls(fmt: ToolFormat, calls: list[Call]) -> list[dict[str, Any]]:
    return [
        {"id": fmt.call_id(), "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in calls
    ]


class CallStream:
    """Turns a choice's text deltas into OpenAI chat deltas: content as it is surely content, each call's
    ``id``, ``type`` and ``function.name`` once the name is known, then its ``arguments`` in chunks."""

    def __init__(self, fmt: ToolFormat, parallel: bool) -> None:
        self._fmt = fmt
        self._parallel = parallel
        self._text = ""
        self._content_sent = 0
        self._args_sent: list[int] = []  # per call started: characters of arguments sent

    @property
    def called(self) -> bool:
        return bool(self._args_sent)

    def feed(self, delta: str, final: bool) -> list[dict[str, Any]]:
        """The deltas (``{"content": ...}`` or ``{"tool_calls": [...]}``) this text adds."""
        self._text += delta
        parsed = self._fmt.parse(self._text, final)
        if final and not self.called and not all(c.complete and c.name for c in parsed.calls):
            parsed = Parsed(self._text)  # not a call after all: everything is content
        out: list[dict[str, Any]] = []
        if not self.called and len(parsed.content) > self._content_sent:
            out.append({"content": parsed.content[self._content_sent :]})
            self._content_sent = len(parsed.content)
        calls = parsed.calls if self._parallel else parsed.calls[:1]
        for i, call in enumerate(calls):
            if call.name is None:
                break
            if i == len(self._args_sent):
                self._args_sent.append(0)
                fn = {"name": call.name, "arguments": ""}
                out.append(
                    {
                        "tool_calls": [
                            {"index": i, "id": self._fmt.call_id(), "type": "function", "function": fn}
                        ]
                    }
                )
            sent = self._args_sent[i]
            if len(call.arguments) > sent:
                out.append({"tool_calls": [{"index": i, "function": {"arguments": call.arguments[sent:]}}]})
                self._args_sent[i] = len(call.arguments)
        return out


def _arguments_object(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages for a template that renders tools: earlier calls' arguments as objects."""
    out = []
    for m in messages:
        if m.get("tool_calls"):
            calls = [
                {
                    **c,
                    "function": {**c["function"], "arguments": _arguments_object(c["function"]["arguments"])},
                }
                for c in m["tool_calls"]
            ]
            m = {**m, "tool_calls": calls}
        out.append(m)
    return out


def fallback_messages(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """Messages for a template that cannot render tools: the tools in a system message, tool calls and
    tool results as Hermes-style text."""
    out = []
    for m in messages:
        if m.get("tool_calls"):
            blocks = [
                "<tool_call>\n"
                + json.dumps(
                    {
                        "name": c["function"]["name"],
                        "arguments": _arguments_object(c["function"]["arguments"]),
                    },
                    ensure_ascii=False,
                )
                + "\n</tool_call>"
                for c in m["tool_calls"]
            ]
            text = "\n".join([m["content"], *blocks] if m.get("content") else blocks)
            m = {k: v for k, v in m.items() if k != "tool_calls"} | {"content": text}
        elif m.get("role") == "tool":
            m = {"role": "user", "content": f"<tool_response>\n{m.get('content') or ''}\n</tool_response>"}
        out.append(m)
    if tools:
        listing = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
        system = (
            "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
            "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
            f"{listing}\n</tools>\n\nFor each function call, return a json object with function name and "
            "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
            '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
        )
        if out and out[0].get("role") == "system":
            out[0] = {**out[0], "content": f"{out[0].get('content') or ''}\n\n{system}".lstrip()}
        else:
            out.insert(0, {"role": "system", "content": system})
    return out
