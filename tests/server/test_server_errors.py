"""Bad requests get OpenAI-style 4xx errors with a message a user can act on, never a 500."""

from __future__ import annotations

import httpx
import openai
import pytest
from server_process import TINY_CONTEXT

MODEL = "tiny-chat"


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        yield c


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and len(error["message"]) > 10
    return error


BAD_BODIES = [
    # (route, body, param the error names or None, words the message must contain)
    ("/v1/completions", {"model": MODEL}, "prompt", "required"),
    ("/v1/completions", {"prompt": "x", "temperature": -1}, "temperature", "temperature"),
    ("/v1/completions", {"prompt": "x", "top_p": 0}, "top_p", "top_p"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 0}, "max_tokens", "max_tokens"),
    ("/v1/completions", {"prompt": "x", "max_tokens": "many"}, "max_tokens", "integer"),
    ("/v1/completions", {"prompt": "x", "logprobs": 50}, "logprobs", "logprobs"),
    ("/v1/completions", {"prompt": "x", "n": 3, "best_of": 2}, "best_of", "at least n"),
    ("/v1/completions", {"prompt": ["x"] * 5, "n": 26}, "n", "at most 128"),
    ("/v1/completions", {"prompt": "x", "best_of": 2, "stream": True}, "best_of", "streamed"),
    ("/v1/completions", {"prompt": "x", "logit_bias": {"x1": 5}}, "logit_bias", "token id"),
    ("/v1/completions", {"prompt": "x", "logit_bias": {"1000000": 5}}, "logit_bias", "token id"),
    ("/v1/completions", {"prompt": "x", "logit_bias": {"1": 101}}, "logit_bias.1", "100"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "logit_bias": {"-1": 1}},
     "logit_bias", "token id"),
    ("/v1/completions", {"prompt": ""}, "prompt", "empty"),
    ("/v1/completions", {"prompt": [5, 10**9]}, None, "vocabulary"),
    ("/v1/completions", {"prompt": "x", "stream_options": {"include_usage": True}},
     "stream_options", "stream"),
    ("/v1/completions", {"prompt": "x", "presence_penalty": 5}, "presence_penalty", "presence_penalty"),
    ("/v1/chat/completions", {"model": MODEL, "messages": []}, "messages", "messages"),
    ("/v1/chat/completions", {"messages": [{"content": "hi"}]}, "messages.0.role", "required"),
    ("/v1/chat/completions", {"messages": "hello"}, "messages", "list"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
     "messages.0.content", "only text"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2},
     "top_logprobs", "logprobs"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "stop": ["a"] * 20},
     "stop", "stop"),
]  # fmt: skip


@pytest.mark.parametrize(("route", "body", "param", "words"), BAD_BODIES)
def test_invalid_parameters_are_400_naming_the_field(http, route, body, param, words):
    error = _error(http.post(route, json=body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert words.lower() in error["message"].lower()


@pytest.mark.parametrize(
    "raw", [b'{"prompt": "x",', b"not json at all", b"", b"[1, 2]", b'"just a string"', b"\xff\xfe"]
)
def test_malformed_json_is_400(http, raw):
    response = http.post("/v1/completions", content=raw, headers={"content-type": "application/json"})
    error = _error(response, 400)
    assert "json" in error["message"].lower() or "object" in error["message"].lower()


def test_prompt_longer_than_the_context_is_400_with_the_numbers(http):
    too_long = [7] * (TINY_CONTEXT + 5)
    error = _error(http.post("/v1/completions", json={"prompt": too_long}), 400)
    assert error["code"] == "context_length_exceeded"
    assert str(TINY_CONTEXT) in error["message"] and str(len(too_long)) in error["message"]


def test_max_tokens_past_the_context_is_400(http):
    error = _error(http.post("/v1/completions", json={"prompt": [7] * 100, "max_tokens": TINY_CONTEXT}), 400)
    assert error["code"] == "context_length_exceeded" and error["param"] == "max_tokens"


def test_unknown_model_is_404(http):
    error = _error(http.post("/v1/completions", json={"model": "gpt-9", "prompt": "x"}), 404)
    assert error["code"] == "model_not_found" and MODEL in error["message"]


def test_unknown_route_and_wrong_method_are_json_errors(http):
    _error(http.get("/v1/nothing-here"), 404)
    _error(http.get("/v1/completions"), 405)


def test_openai_client_sees_bad_request_errors(server):
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=MODEL, prompt="x", temperature=-2)
    assert "temperature" in str(info.value)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])


def test_the_server_survives_bad_input(server, http):
    metrics = server.metrics()
    assert not any(k.startswith("cpullm_requests_total") and 'status="5' in k for k in metrics), metrics
    ok = http.post("/v1/completions", json={"prompt": "hello", "max_tokens": 2})
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 2


def test_body_without_json_content_type_says_so(http):
    response = http.post(
        "/v1/completions", content=b'{"prompt": "x"}', headers={"content-type": "text/plain"}
    )
    error = _error(response, 400)
    assert "Content-Type: application/json" in error["message"]


def test_explicit_nulls_from_clients_mean_the_defaults(http):
    body = {"prompt": "hello", "max_tokens": 2, "n": None, "stream": None, "echo": None, "ignore_eos": None,
            "temperature": None, "stop": None, "logprobs": None}  # fmt: skip
    response = http.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "logprobs": None, "n": None}
    assert http.post("/v1/chat/completions", json=chat).status_code == 200


def test_unknown_response_format_is_refused_not_ignored(http):
    body = {"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "xml"}}
    error = _error(http.post("/v1/chat/completions", json=body), 400)
    assert error["param"] == "response_format.type"
    plain = {**body, "response_format": {"type": "text"}, "max_tokens": 2}
    assert http.post("/v1/chat/completions", json=plain).status_code == 200


def test_unknown_model_routes_are_404(http):
    assert _error(http.get("/v1/models/other"), 404)["code"] == "model_not_found"
    assert _error(http.get("/v2/models/other"), 404)["code"] == "model_not_found"
    assert http.get(f"/v2/models/{MODEL}").json()["name"] == MODEL
