"""A chat request's ``tools``, ``tool_choice`` and ``parallel_tool_calls``, checked (OpenAI's shapes).

``tools``: at most ``MAX_TOOLS`` (OpenAI's 128) ``{"type": "function", "function": {"name", "description",
"parameters", "strict"}}`` with distinct names of letters, digits, ``_``, ``.`` and ``-`` (1 to 64, as
OpenAI), descriptions of at most ``MAX_DESCRIPTION_CHARS``, and parameters a JSON schema of an object,
all the tools' schemas together within the structured-output bounds (they may be compiled into a
grammar). ``tool_choice``: ``none`` (the tools are not shown to the model and nothing is parsed),
``auto`` (the default with tools: the model decides, its output is parsed), ``required`` (one call or
more, enforced by a grammar), or ``{"type": "function", "function": {"name": ...}}`` (that function,
enforced). ``parallel_tool_calls`` false: at most one call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import bad_request
from .structured_request import MAX_SCHEMA_DEPTH, MAX_SCHEMA_VALUES, shape

MAX_TOOLS = 128
MAX_DESCRIPTION_CHARS = 16 * 1024
_STRICT = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore")


class FunctionSpec(BaseModel):
    model_config = _STRICT

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
    description: Annotated[str, Field(max_length=MAX_DESCRIPTION_CHARS)] | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolSpec(BaseModel):
    model_config = _STRICT

    type: Literal["function"]
    function: FunctionSpec


class CalledFunction(BaseModel):
    model_config = _STRICT

    name: Annotated[str, Field(max_length=64)]
    arguments: str


class MessageToolCall(BaseModel):
    """An earlier call, in an assistant message of the history."""

    model_config = _STRICT

    id: Annotated[str, Field(max_length=256)] | None = None
    type: Literal["function"] = "function"
    function: CalledFunction


Tools = Annotated[list[ToolSpec], Field(max_length=MAX_TOOLS)]


@dataclass(frozen=True)
class ToolPlan:
    tools: list[dict[str, Any]]  # as the template receives them (OpenAI's form, nulls left out)
    choice: str  # auto, required or named
    forced: list[dict[str, Any]]  # the tools a required/named choice allows
    parallel: bool


def tool_plan(tools: list[ToolSpec] | None, tool_choice: Any, parallel: bool | None) -> ToolPlan | None:
    """The checked plan, or None when no tool may be called (no tools, or ``tool_choice`` none)."""
    if not tools:
        if tool_choice not in (None, "none"):
            raise bad_request("tool_choice needs tools; send the functions in 'tools'.", param="tool_choice")
        return None
    names = [t.function.name for t in tools]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise bad_request(f"Two tools are named {dup!r}; give each function its own name.", param="tools")
    for i, t in enumerate(tools):
        params = t.function.parameters
        if params is not None and params.get("type", "object") != "object":
            raise bad_request(
                f"tools[{i}].function.parameters must be a JSON schema of an object "
                '({"type": "object", "properties": {...}}).',
                param=f"tools.{i}.function.parameters",
            )
    depth, values = shape([t.function.parameters for t in tools])
    if values > MAX_SCHEMA_VALUES or depth > MAX_SCHEMA_DEPTH + 1:
        raise bad_request(
            f"The tools' parameter schemas hold {values} values nested {depth - 1} deep; at most "
            f"{MAX_SCHEMA_VALUES} values and {MAX_SCHEMA_DEPTH} levels are allowed. "
            "Send fewer or smaller tools.",
            param="tools",
        )
    dumped = [t.model_dump(exclude_none=True) for t in tools]
    if tool_choice is None or tool_choice == "auto":
        return ToolPlan(dumped, "auto", [], parallel is not False)
    if tool_choice == "none":
        return None
    if tool_choice == "required":
        return ToolPlan(dumped, "required", dumped, parallel is not False)
    fn = tool_choice.get("function") if isinstance(tool_choice, dict) else None
    name = fn.get("name") if isinstance(fn, dict) else None
    if (
        not isinstance(tool_choice, dict)
        or tool_choice.get("type") != "function"
        or not isinstance(name, str)
    ):
        raise bad_request(
            'tool_choice must be "none", "auto", "required" or '
            '{"type": "function", "function": {"name": ...}}.',
            param="tool_choice",
        )
    if name not in names:
        raise bad_request(
            f"tool_choice names {name[:64]!r}, which is not among the tools.", param="tool_choice"
        )
    return ToolPlan(dumped, "named", [dumped[names.index(name)]], False)
