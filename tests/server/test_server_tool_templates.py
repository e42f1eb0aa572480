"""Tools through real chat templates (Qwen 2.5, Llama 3.1, Mistral) on tiny models served on loopback:
the template shows the tools, the format it names is the one enforced and parsed, streamed or not, and
an assistant's call with the tool's answer renders back through it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import jsonschema
import openai
import pytest
from gguf import GGMLQuantizationType as QT
from real_chat_templates import LLAMA31, MISTRAL_TOOLS, QWEN25
from server_process import TINY_CONTEXT, running_server
from tiny_gguf import TinySpec, write_tiny_gguf

pytest.importorskip("llguidance")

WEATHER = {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}}, "required": ["city"],
           "additionalProperties": False}  # fmt: skip
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                                           "parameters": WEATHER}}]  # fmt: skip
MESSAGES = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture(scope="module", params=[("qwen25", QWEN25), ("llama31", LLAMA31), ("mistral", MISTRAL_TOOLS)],
                ids=lambda p: p[0])  # fmt: skip
def served(request, native_lib_dir, tmp_path_factory) -> Iterator[tuple[str, openai.OpenAI]]:
    name, template = request.param
    folder = tmp_path_factory.mktemp(name)
    spec = TinySpec(weight_type=QT.Q8_0, context_length=TINY_CONTEXT, chat_template=template)
    model = write_tiny_gguf(folder / f"{name}.gguf", spec)
    with running_server(native_lib_dir, [str(model), "--threads", "2"], folder / "server.log") as s:
        yield name, openai.OpenAI(base_url=s.base_url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_the_template_shows_the_tools_and_its_format_is_parsed(served):
    name, client = served
    model = client.models.list().data[0].id
    rendered = client.post("/tokenize", body={"messages": MESSAGES, "tools": TOOLS}, cast_to=object)
    text = client.post("/detokenize", body={"tokens": rendered["tokens"]}, cast_to=object)["prompt"]
    assert "get_weather" in text and "Weather now" in text
    assert ("# Tools" in text) == (name == "qwen25")  # Qwen's own words; the others' are not the fallback's
    kwargs = {"model": model, "messages": MESSAGES, "tools": TOOLS, "tool_choice": "required",
              "max_tokens": 120, "seed": 2, "parallel_tool_calls": False}  # fmt: skip
    whole = client.chat.completions.create(**kwargs).choices[0]
    assert whole.finish_reason == "tool_calls"
    (call,) = whole.message.tool_calls
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER)
    streamed = ""
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            streamed += delta.function.arguments or ""
    assert streamed == call.function.arguments
    # the call and the tool's answer go back through the template
    history = [*MESSAGES, whole.message,
               {"role": "tool", "tool_call_id": "abcdefghi", "content": "sunny and 18 degrees"}]  # fmt: skip
    again = client.chat.completions.create(model=model, messages=history, tools=TOOLS, max_tokens=2)
    assert again.usage.prompt_tokens > len(rendered["tokens"]) + 5
