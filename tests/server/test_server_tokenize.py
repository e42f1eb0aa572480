"""vLLM's /tokenize and /detokenize, /version, and max_model_len in /v1/models, through the official
openai client (its generic ``post``/``get``) against a real server on loopback."""

from __future__ import annotations

import httpx
import openai
import pytest
from server_process import TINY_CONTEXT

import cpullm

MODEL = "tiny-chat"
MESSAGES = [{"role": "user", "content": "hello world"}]


def _client(server, prefix: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + prefix, api_key="unused", max_retries=0, timeout=60)


@pytest.mark.parametrize("prefix", ["", "/v1", "/openai/v1"])
def test_tokenize_and_detokenize_round_trip(server, prefix):
    client = _client(server, prefix)
    out = client.post("/tokenize", body={"model": MODEL, "prompt": "hello world"}, cast_to=object)
    assert set(out) == {"count", "max_model_len", "tokens"}
    assert out["count"] == len(out["tokens"]) > 0 and out["max_model_len"] == TINY_CONTEXT
    back = client.post("/detokenize", body={"model": MODEL, "tokens": out["tokens"]}, cast_to=object)
    assert set(back) == {"prompt"} and back["prompt"].endswith("hello world")


def test_tokenize_counts_what_completions_count(server):
    client = _client(server, "/v1")
    ids = client.post("/tokenize", body={"prompt": "the capital"}, cast_to=object)["tokens"]
    usage = client.completions.create(model=MODEL, prompt="the capital", max_tokens=1).usage
    assert len(ids) == usage.prompt_tokens
    chat_ids = client.post("/tokenize", body={"messages": MESSAGES}, cast_to=object)["tokens"]
    chat_usage = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1).usage
    assert len(chat_ids) == chat_usage.prompt_tokens
    # the same ids as a completion prompt give the same answer
    greedy = {"model": MODEL, "max_tokens": 4, "temperature": 0}
    assert (
        client.completions.create(prompt=chat_ids, **greedy).choices[0].text
        == client.chat.completions.create(messages=MESSAGES, **greedy).choices[0].message.content
    )


def test_tokenize_options(server):
    client = _client(server, "")
    plain = client.post("/tokenize", body={"prompt": "hello", "add_special_tokens": False}, cast_to=object)
    with_strs = client.post("/tokenize", body={"prompt": "hello", "return_token_strs": True}, cast_to=object)
    assert len(with_strs["token_strs"]) == with_strs["count"]
    assert with_strs["tokens"][-plain["count"] :] == plain["tokens"]
    no_prompt = client.post(
        "/tokenize", body={"messages": MESSAGES, "add_generation_prompt": False}, cast_to=object
    )
    prompted = client.post("/tokenize", body={"messages": MESSAGES}, cast_to=object)
    assert prompted["tokens"][: no_prompt["count"]] == no_prompt["tokens"]
    assert prompted["count"] > no_prompt["count"]


@pytest.mark.parametrize(
    ("route", "body", "param", "words"),
    [
        ("/tokenize", {}, None, "either"),
        ("/tokenize", {"prompt": "x", "messages": MESSAGES}, None, "not both"),
        ("/tokenize", {"messages": []}, "messages", "empty"),
        ("/tokenize", {"prompt": 5}, "prompt", "string"),
        ("/tokenize", {"prompt": "word " * (TINY_CONTEXT * 20)}, "prompt", "context length"),
        ("/detokenize", {"tokens": [1, 10**9]}, "tokens", "outside the vocabulary"),
        ("/detokenize", {"tokens": [-1]}, "tokens", "outside the vocabulary"),
        ("/detokenize", {"tokens": ["a"]}, "tokens.0", "integer"),
        ("/detokenize", {}, "tokens", "required"),
    ],
)
def test_bad_tokenizer_requests_are_400(server, route, body, param, words):
    with pytest.raises(openai.BadRequestError) as caught:
        _client(server, "").post(route, body=body, cast_to=object)
    error = caught.value.body
    assert error["param"] == param and words in error["message"], error


def test_unknown_model_is_404(server):
    with pytest.raises(openai.NotFoundError):
        _client(server, "").post("/detokenize", body={"model": "other", "tokens": [1]}, cast_to=object)


def test_version_and_max_model_len(server):
    assert _client(server, "").get("/version", cast_to=object) == {"version": cpullm.__version__}
    for prefix in ("/v1", "/openai/v1"):
        client = _client(server, prefix)
        (card,) = client.models.list().data
        assert card.id == MODEL and card.max_model_len == TINY_CONTEXT
        assert client.models.retrieve(MODEL).max_model_len == TINY_CONTEXT
    assert httpx.get(server.base_url + "/version", timeout=10).status_code == 200
