"""Structured outputs (response_format json_object / json_schema, llguidance's token masks) through
the official openai client against a real server on loopback, streamed and not: every finished
output parses and validates, and bad schemas are 400s."""

from __future__ import annotations

import json
import re

import jsonschema
import openai
import pytest

pytest.importorskip("llguidance")

MODEL = "tiny-chat"
MESSAGES = [{"role": "user", "content": "Where is the Colosseum?"}]
# A finite language: the tiny random model must close it, so every output is complete.
SCHEMA = {
    "type": "object",
    "properties": {"city": {"enum": ["Paris", "Rome", "Oslo"]}, "open": {"type": "boolean"}},
    "required": ["city", "open"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "place", "schema": SCHEMA, "strict": True}}


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=60)


def _valid(text: str) -> dict:
    value = json.loads(text)
    jsonschema.validate(value, SCHEMA)
    return value


def test_chat_json_schema_parses_and_validates(client):
    out = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, response_format=FORMAT, max_tokens=60, n=4, temperature=1.0, seed=5
    )
    for choice in out.choices:
        assert choice.finish_reason == "stop"
        _valid(choice.message.content)
    plain = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=20, temperature=0)
    with pytest.raises(json.JSONDecodeError):  # the mask is what makes it JSON
        json.loads(plain.choices[0].message.content)


def test_streamed_json_schema_is_the_same(client):
    kwargs = {"model": MODEL, "messages": MESSAGES, "response_format": FORMAT, "max_tokens": 60, "seed": 9}
    plain = client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == plain
    _valid(plain)


def test_completions_json_schema_and_json_object(client):
    out = client.completions.create(
        model=MODEL, prompt=["hello", "the world"], max_tokens=60, temperature=0,
        extra_body={"response_format": FORMAT},  # a vLLM extension on completions
    )  # fmt: skip
    assert [_valid(c.text) is not None for c in out.choices] == [True, True]
    # json_object: "}" pushed as hard as logit_bias allows: the grammar allows it right after "{"
    # and nothing but the end after that
    close = client.post("/tokenize", body={"prompt": "}", "add_special_tokens": False}, cast_to=object)
    (brace,) = close["tokens"]
    obj = client.completions.create(
        model=MODEL, prompt="hello", max_tokens=20, temperature=0, logit_bias={str(brace): 100},
        extra_body={"response_format": {"type": "json_object"}},
    )  # fmt: skip
    assert obj.choices[0].text == "{}" and obj.choices[0].finish_reason == "stop"
    unconstrained = client.completions.create(
        model=MODEL, prompt="hello", max_tokens=4, temperature=0, logit_bias={str(brace): 100}
    )
    assert not unconstrained.choices[0].text.startswith("{")  # the grammar put the "{" there


@pytest.mark.parametrize(
    ("response_format", "param", "words"),
    [
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}}, "response_format",
         "cannot be used"),
        ({"type": "json_schema", "json_schema": {"name": "x"}}, "response_format.json_schema", "schema"),
        ({"type": "json_schema", "json_schema": "x"}, "response_format.json_schema", "schema"),
        ({"type": "json_schema", "json_schema": {"schema": json.loads('{"items":' * 70 + "{}" + "}" * 70)}},
         "response_format.json_schema", "64 levels"),
        ({"type": "grammar"}, "response_format.type", "not supported"),
        # refused from its size before it is compiled (compiling it took seconds and held the GIL)
        ({"type": "json_schema", "json_schema": {"schema": {"enum": [f"v{i}" for i in range(120_000)]}}},
         "response_format.json_schema", "more than 10000"),
    ],
)  # fmt: skip
def test_bad_response_formats_are_400(client, response_format, param, words):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, response_format=response_format)
    error = caught.value.body
    assert error["param"] == param and words in error["message"], error


# ---- regex, choice and grammar, in vLLM's shapes (structured_outputs, and the older guided_*) ----
def test_regex_on_completions_and_chat(client):
    pattern = r"[a-c]{3}-[0-9]{2}"
    out = client.completions.create(
        model=MODEL, prompt="code:", max_tokens=20, n=3, temperature=1.0, seed=2,
        extra_body={"structured_outputs": {"regex": pattern}},
    )  # fmt: skip
    for choice in out.choices:
        assert re.fullmatch(pattern, choice.text) and choice.finish_reason == "stop", choice
    chat = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=20, extra_body={"guided_regex": pattern}
    )
    assert re.fullmatch(pattern, chat.choices[0].message.content)
    plain = client.completions.create(model=MODEL, prompt="code:", max_tokens=6, temperature=0)
    assert not re.fullmatch(pattern, plain.choices[0].text)  # the mask is what makes it match


def test_choice_streamed_and_not(client):
    choices = ["yes", "no", "maybe so"]
    out = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=10, n=4, temperature=1.0, seed=8,
        extra_body={"structured_outputs": {"choice": choices}},
    )  # fmt: skip
    assert all(c.message.content in choices for c in out.choices)
    stream = client.completions.create(
        model=MODEL, prompt="ok?", max_tokens=10, stream=True, extra_body={"guided_choice": choices}
    )
    assert "".join(c.choices[0].text for c in stream if c.choices) in choices


def test_lark_grammar_streamed(client):
    grammar = 'start: "(" num ("," num)? ")"\nnum: /[0-9]{1,3}/'
    kwargs = {"model": MODEL, "messages": MESSAGES, "max_tokens": 20, "seed": 3,
              "extra_body": {"structured_outputs": {"grammar": grammar}}}  # fmt: skip
    chunks = client.chat.completions.create(stream=True, **kwargs)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert re.fullmatch(r"\([0-9]{1,3}(,[0-9]{1,3})?\)", text), text
    assert client.chat.completions.create(**kwargs).choices[0].message.content == text


@pytest.mark.parametrize(
    ("extra", "param", "words"),
    [
        ({"structured_outputs": {"regex": "a", "choice": ["b"]}}, "structured_outputs.choice", "one output"),
        ({"response_format": {"type": "json_object"}, "guided_regex": "a"}, "guided_regex", "one output"),
        ({"structured_outputs": {"regex": "(a"}}, "structured_outputs.regex", "cannot be used"),
        ({"structured_outputs": {"grammar": "start: nothing_here"}}, "structured_outputs.grammar",
         "cannot be used"),
        ({"structured_outputs": {"grammar": "x" * 40_000}}, "structured_outputs.grammar", "characters long"),
        ({"structured_outputs": {"choice": []}}, "structured_outputs.choice", "non-empty list"),
        ({"structured_outputs": {"choice": ["a"] * 2000}}, "structured_outputs.choice", "at most 1024"),
        ({"structured_outputs": {"json": "{not json"}}, "structured_outputs.json", "not valid JSON"),
        ({"structured_outputs": {"xml": "<a/>"}}, "structured_outputs", "not supported"),
    ],
)  # fmt: skip
def test_bad_structured_outputs_are_400(client, extra, param, words):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="x", max_tokens=4, extra_body=extra)
    error = caught.value.body
    assert error["param"] == param and words in error["message"], error
