"""What a request asks its output to follow, in OpenAI's and vLLM's shapes, checked before any work.

- OpenAI: ``response_format`` ``{"type": "json_object"}`` or ``{"type": "json_schema", "json_schema":
  {"name": ..., "schema": {...}}}`` (``text``: no constraint).
- vLLM (0.12 and later): ``structured_outputs`` with one of ``json`` (a schema, as an object or its JSON
  text), ``regex``, ``choice`` (a list of strings: the output is exactly one) or ``grammar`` (llguidance's
  Lark-like syntax, which vLLM's guidance backend takes too; a JSON schema can be embedded as
  ``%json {...}``).
- vLLM before 0.12: ``guided_json``, ``guided_regex``, ``guided_choice``, ``guided_grammar``, the same
  four by their old names.

One kind per request; two is a 400. Sizes are bounded before llguidance compiles anything (it holds the
GIL while it works): schemas by nesting and values (a 120,000-value enum took 2.6 s to refuse and stalled
/health 0.44 s), regexes and grammars by characters, choices by count and characters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import bad_request

MAX_SCHEMA_DEPTH = 64
MAX_SCHEMA_VALUES = 10_000
MAX_PATTERN_CHARS = 32 * 1024  # a regex or a grammar (real ones are a few hundred characters)
MAX_CHOICES = 1024
GUIDED = {
    "guided_json": "json",
    "guided_regex": "regex",
    "guided_choice": "choice",
    "guided_grammar": "grammar",
}
KINDS = ("json", "regex", "choice", "grammar")


@dataclass(frozen=True)
class StructuredSpec:
    kind: str  # json, regex, choice, grammar
    value: Any  # a schema (dict), a pattern or grammar (str), or choices (list[str])
    param: str  # the request field it came from, for error messages


def shape(value: Any) -> tuple[int, int]:
    """(how deeply lists and objects nest in ``value``, how many values it holds); iterative, so no
    recursion on hostile input."""
    deepest, count, stack = 0, 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        count += 1
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest, count


def check_schema(schema: Any, param: str) -> dict[str, Any]:
    if not isinstance(schema, dict):
        raise bad_request(f"{param} must be a JSON schema (an object).", param=param)
    depth, values = shape(schema)
    if values > MAX_SCHEMA_VALUES:
        raise bad_request(
            f"The JSON schema holds {values} values, more than {MAX_SCHEMA_VALUES}; "
            "send a smaller schema (a long enum is better as a pattern or a plain string).",
            param=param,
        )
    if depth > MAX_SCHEMA_DEPTH:
        raise bad_request(
            f"The JSON schema nests more than {MAX_SCHEMA_DEPTH} levels deep; flatten it.", param=param
        )
    return schema


def _response_format(rf: dict[str, Any]) -> StructuredSpec | None:
    kind = rf.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return StructuredSpec("json", {"type": "object"}, "response_format")
    if kind != "json_schema":
        raise bad_request(
            f"response_format type {str(kind)[:40]!r} is not supported; use text, json_object or "
            "json_schema.",
            param="response_format.type",
        )
    spec = rf.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise bad_request(
            'response_format json_schema needs {"json_schema": {"name": ..., "schema": {...}}}, '
            "the schema a JSON object.",
            param="response_format.json_schema",
        )
    return StructuredSpec("json", check_schema(schema, "response_format.json_schema"), "response_format")


def _checked(kind: str, value: Any, param: str) -> StructuredSpec:
    if kind == "json":
        if isinstance(value, str):
            if len(value) > MAX_PATTERN_CHARS * 32:
                raise bad_request("The JSON schema text is too long; send a smaller schema.", param=param)
            try:
                value = json.loads(value)
            except ValueError as e:
                raise bad_request(f"{param} is not valid JSON: {e}.", param=param) from e
        return StructuredSpec("json", check_schema(value, param), param)
    if kind in ("regex", "grammar"):
        if not isinstance(value, str) or not value:
            raise bad_request(f"{param} must be a non-empty string.", param=param)
        if len(value) > MAX_PATTERN_CHARS:
            raise bad_request(
                f"{param} is {len(value)} characters long, more than {MAX_PATTERN_CHARS}; "
                "send a shorter one.",
                param=param,
            )
        return StructuredSpec(kind, value, param)
    # choice
    if not isinstance(value, list) or not value or not all(isinstance(c, str) and c for c in value):
        raise bad_request(f"{param} must be a non-empty list of non-empty strings.", param=param)
    if len(value) > MAX_CHOICES or sum(len(c) for c in value) > MAX_PATTERN_CHARS:
        raise bad_request(
            f"{param} may hold at most {MAX_CHOICES} choices of {MAX_PATTERN_CHARS} characters in all.",
            param=param,
        )
    return StructuredSpec("choice", value, param)


def structured_spec(
    response_format: dict[str, Any] | None, structured_outputs: dict[str, Any] | None, extra: dict[str, Any]
) -> StructuredSpec | None:
    """The request's one output constraint (or None); ``extra`` holds the ``guided_*`` fields."""
    found: list[StructuredSpec] = []
    if response_format:
        spec = _response_format(response_format)
        if spec is not None:
            found.append(spec)
    for key, value in (structured_outputs or {}).items():
        if key in KINDS and value is not None:
            found.append(_checked(key, value, f"structured_outputs.{key}"))
        elif key not in ("whitespace_pattern", "disable_any_whitespace", "disable_fallback", "backend"):
            raise bad_request(
                f"structured_outputs.{str(key)[:40]} is not supported; use one of {', '.join(KINDS)}.",
                param="structured_outputs",
            )
    for old, kind in GUIDED.items():
        if extra.get(old) is not None:
            found.append(_checked(kind, extra[old], old))
    if len(found) > 1:
        raise bad_request(
            f"Ask for one output constraint, not {len(found)} ({', '.join(s.param for s in found)}).",
            param=found[1].param,
        )
    return found[0] if found else None
