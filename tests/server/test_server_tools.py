"""Tools (function calling) through the official openai client against a real server on loopback.

The tiny model's template (ChatML) does not render tools, so they reach it as a Hermes-style system
message and its calls are parsed as ``<tool_call>`` blocks. It is random: ``required`` and named choices
(enforced by a grammar) are what make it call; their calls must parse and validate, streamed or not.
"""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

pytest.importorskip("llguidance")

MODEL = "tiny-chat"
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {
    "type": "object",
    "properties": {"city": {"enum": ["Paris", "Rome"]}, "celsius": {"type": "boolean"}},
    "required": ["city", "celsius"],
    "additionalProperties": False,
}
TIME = {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"],
        "additionalProperties": False}  # fmt: skip
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather now", "parameters": WEATHER},
    },
    {"type": "function", "function": {"name": "get_time", "parameters": TIME}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=60)


def _check_calls(calls, names=("get_weather", "get_time")) -> None:
    assert calls
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name in names
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_required_tool_calls_parse_and_validate(client):
    out = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice="required", max_tokens=120, n=3,
        temperature=1.0, seed=3,
    )  # fmt: skip
    for choice in out.choices:
        assert choice.finish_reason == "tool_calls", choice
        _check_calls(choice.message.tool_calls)


def test_named_choice_and_no_parallel_calls(client):
    named = {"type": "function", "function": {"name": "get_time"}}
    out = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        tools=TOOLS,
        tool_choice=named,
        max_tokens=120,
        temperature=1.0,
        seed=1,
    )
    (call,) = out.choices[0].message.tool_calls
    _check_calls([call], names=("get_time",))
    single = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
        max_tokens=120, n=3, temperature=1.0, seed=4,
    )  # fmt: skip
    for choice in single.choices:
        assert len(choice.message.tool_calls) == 1


def test_streamed_tool_call_deltas_add_up(client):
    kwargs = {"model": MODEL, "messages": MESSAGES, "tools": TOOLS, "tool_choice": "required",
              "max_tokens": 120, "seed": 7}  # fmt: skip
    whole = client.chat.completions.create(**kwargs).choices[0]
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    calls: dict[int, dict] = {}
    for chunk in chunks:
        for delta in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            if delta.index not in calls:  # the first delta of a call: id, type, name, no arguments yet
                assert delta.id.startswith("call_") and delta.type == "function" and delta.function.name
                assert delta.function.arguments == ""
                calls[delta.index] = {"name": delta.function.name, "arguments": ""}
            else:
                assert delta.id is None and delta.function.name is None
                calls[delta.index]["arguments"] += delta.function.arguments
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    expected = [
        {"name": c.function.name, "arguments": c.function.arguments} for c in whole.message.tool_calls
    ]
    assert [calls[i] for i in sorted(calls)] == expected
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.tool_calls) > len(calls)  # in pieces


def test_tool_messages_round_trip(client):
    """An assistant's call and the tool's answer go back into the prompt (as text the template
    renders)."""
    arguments = '{"city": "Paris", "celsius": true}'
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}

    def prompt_tokens(answer: str) -> int:
        history = [*MESSAGES, {"role": "assistant", "content": None, "tool_calls": [call]},
                   {"role": "tool", "tool_call_id": "call_1", "content": answer}]  # fmt: skip
        out = client.chat.completions.create(model=MODEL, messages=history, tools=TOOLS, max_tokens=1)
        return out.usage.prompt_tokens

    short, long = prompt_tokens("sunny"), prompt_tokens("sunny " * 40)
    assert long - short >= 40
    no_tools = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1)
    with_tools = client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=TOOLS, max_tokens=1)
    assert with_tools.usage.prompt_tokens > no_tools.usage.prompt_tokens + 100  # the tools are in the prompt
    none = client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice="none",
                                          max_tokens=1)  # fmt: skip
    assert none.usage.prompt_tokens == no_tools.usage.prompt_tokens
    # the client's own answer object goes back as it is (README's example)
    first = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice="required", max_tokens=120, seed=2
    ).choices[0]
    answer = {"role": "tool", "tool_call_id": first.message.tool_calls[0].id, "content": "sunny"}
    history = [*MESSAGES, first.message, answer]
    again = client.chat.completions.create(model=MODEL, messages=history, tools=TOOLS, max_tokens=2)
    assert again.usage.prompt_tokens > with_tools.usage.prompt_tokens + 10


def _fn(name: str, parameters: object = None) -> dict:
    fn: dict = {"name": name}
    if parameters is not None:
        fn["parameters"] = parameters
    return {"type": "function", "function": fn}


@pytest.mark.parametrize(
    ("extra", "param", "words"),
    [
        ({"tools": [_fn("bad name!")]}, "tools.0.function.name", "pattern"),
        ({"tools": [_fn("a"), _fn("a")]}, "tools", "named 'a'"),
        ({"tools": [_fn("a", {"type": "string"})]}, "tools.0.function.parameters", "object"),
        ({"tools": [_fn(f"f{i}") for i in range(129)]}, "tools", "128"),
        ({"tools": [_fn("a")], "tool_choice": {"type": "function", "function": {"name": "b"}}}, "tool_choice",
         "not among"),
        ({"tools": [_fn("a")], "tool_choice": "sometimes"}, "tool_choice", "must be"),
        ({"tool_choice": "required"}, "tool_choice", "needs tools"),
        ({"tools": [_fn("a")], "response_format": {"type": "json_object"}}, "tool_choice", "cannot both"),
        ({"tools": [_fn("a", {"type": "object", "properties": {"x": {"type": "string", "pattern": "("}}})],
          "tool_choice": "required"}, "tools", "cannot be used"),
        ({"tools": [_fn("a", json.loads('{"items":' * 70 + "{}" + "}" * 70))]}, "tools", "levels"),
    ],
)  # fmt: skip
def test_bad_tools_are_400(client, extra, param, words):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4, **extra)
    error = caught.value.body
    assert error["param"] == param and words in error["message"], error
