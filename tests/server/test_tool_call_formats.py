"""The tool-call formats without a server: which one a template picks, parsing whole outputs, streamed
deltas that add up to the whole, and how tools reach templates that do or do not render them."""

from __future__ import annotations

import json

import pytest

from cpullm.model.chat_template import ChatTemplate
from cpullm.server.tool_calls import (
    FORMATS,
    CallStream,
    ToolFormat,
    fallback_messages,
    template_messages,
    template_renders_tools,
)

OUTPUTS = {
    "hermes": 'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "u": {"c": 1}}}'
    '\n</tool_call>\n<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>',
    "llama3_json": '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris", "u": {"c": 1}}}; '
    '{"name": "now", "parameters": {}}',
    "mistral": '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris", "u": {"c": 1}}}, '
    '{"name": "now", "arguments": {}}]',
}
CALLS = [("get_weather", '{"city": "Paris", "u": {"c": 1}}'), ("now", "{}")]


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("{% for m in messages %}{{ '<tool_call>' }}{% endfor %}{{ tools }}", "hermes"),
        ("{{ '<|python_tag|>' }}{{ tools }}", "llama3_json"),
        ("{{ '[TOOL_CALLS]' }}{{ tools }}", "mistral"),
        ("{{ tools | tojson }}", "hermes"),
    ],
)
def test_the_template_picks_the_format(source, name):
    assert ToolFormat.for_template(source).name == name and template_renders_tools(source)


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_whole_outputs_parse(name):
    content, calls = FORMATS[name].parse_output(OUTPUTS[name])
    assert [(c.name, c.arguments) for c in calls] == CALLS
    assert content == ("Checking.\n" if name == "hermes" else None)
    assert FORMATS[name].parse_output('{"name": "x", "argu') == ('{"name": "x", "argu', [])  # unfinished


def test_mistral_v11_form():
    _, calls = FORMATS["mistral"].parse_output('[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}')
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", '{"city": "Paris"}')]


@pytest.mark.parametrize("name", sorted(OUTPUTS))
@pytest.mark.parametrize("step", [1, 2, 5, 1000])
def test_streamed_deltas_add_up_to_the_whole(name, step):
    text, stream, deltas = OUTPUTS[name], CallStream(FORMATS[name], parallel=True), []
    for i in range(0, len(text), step):
        deltas += stream.feed(text[i : i + step], final=i + step >= len(text))
    content = "".join(d.get("content", "") for d in deltas)
    calls: dict[int, list[str]] = {}
    for d in deltas:
        for tc in d.get("tool_calls", []):
            if tc["index"] not in calls:
                assert tc["function"]["arguments"] == ""
                short = name == "mistral"  # Mistral's templates take 9 letters and digits only
                assert (len(tc["id"]) == 9 and tc["id"].isalnum()) if short else tc["id"].startswith("call_")
                calls[tc["index"]] = [tc["function"]["name"], ""]
            else:
                calls[tc["index"]][1] += tc["function"]["arguments"]
    assert [tuple(calls[i]) for i in sorted(calls)] == CALLS
    assert content == ("Checking.\n" if name == "hermes" else "")


def test_plain_text_streams_as_content():
    stream = CallStream(FORMATS["hermes"], parallel=True)
    deltas = stream.feed("a <tool", False) + stream.feed(" is not a call", True)
    assert "".join(d["content"] for d in deltas) == "a <tool is not a call" and not stream.called
    llama = CallStream(FORMATS["llama3_json"], parallel=True)
    assert llama.feed('{"answer": 4', False) == []  # may be a call: held
    assert llama.feed("2}", True) == [{"content": '{"answer": 42}'}]  # was not


QWEN_LIKE = (
    "{% if tools %}<tools>{% for t in tools %}{{ t.function.name }};{% endfor %}</tools>\n{% endif %}"
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}"
    "{% for c in m.tool_calls or [] %}<tool_call>{{ c.function.arguments.city }}</tool_call>{% endfor %}"
    "\n{% endfor %}"
)
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
HISTORY = [
    {"role": "user", "content": "Weather?"},
    {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "rain"},
]  # fmt: skip


def test_a_template_that_renders_tools_gets_them():
    text = ChatTemplate(QWEN_LIKE).render(template_messages(HISTORY), tools=[TOOL])
    assert text.startswith("<tools>get_weather;</tools>")
    assert "<tool_call>Oslo</tool_call>" in text  # the arguments reach the template as an object
    assert "<tool>rain" in text


def test_a_template_that_cannot_gets_text():
    messages = fallback_messages(HISTORY, [TOOL])
    text = ChatTemplate(None).render(messages)  # ChatML
    assert text.startswith("<|im_start|>system\n# Tools") and json.dumps(TOOL) in text
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>' in text
    assert "<|im_start|>user\n<tool_response>\nrain\n</tool_response>" in text
    assert "tool_calls" not in messages[2] and all(m["role"] != "tool" for m in messages)
