"""A real `cpullm serve` on loopback, driven by the official openai client: completions and chat,
plain and streaming, usage, finish reasons, logprobs, both route prefixes, and prefix caching."""

from __future__ import annotations

import httpx
import openai
import pytest

MODEL = "tiny-chat"  # the served name defaults to the file name without .gguf
GREEDY = {"temperature": 0, "max_tokens": 8}
MESSAGES = [{"role": "user", "content": "hello world"}]


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_lists_the_served_model(client):
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_completion_reports_text_usage_and_finish_reason(client):
    out = client.completions.create(
        model=MODEL, prompt="the capital", extra_body={"ignore_eos": True}, **GREEDY
    )
    choice = out.choices[0]
    assert choice.text and choice.finish_reason == "length"
    assert out.usage.completion_tokens == GREEDY["max_tokens"]
    assert out.usage.prompt_tokens > 0
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    assert out.id.startswith("cmpl-") and out.model == MODEL


def test_streamed_completion_equals_the_plain_one(client):
    kwargs = {"model": MODEL, "prompt": "hello world", "extra_body": {"ignore_eos": True}, **GREEDY}
    plain = client.completions.create(**kwargs)
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == plain.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == plain.usage.model_dump()
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_include_usage_has_no_usage_chunk(client):
    chunks = list(client.completions.create(model=MODEL, prompt="hello", stream=True, **GREEDY))
    assert chunks and all(c.choices and c.usage is None for c in chunks)


def test_chat_plain_and_streaming_agree(client):
    kwargs = {"model": MODEL, "messages": MESSAGES, "extra_body": {"ignore_eos": True}, **GREEDY}
    plain = client.chat.completions.create(**kwargs)
    assert plain.choices[0].message.role == "assistant"
    assert plain.choices[0].finish_reason == "length"
    assert plain.usage.completion_tokens == GREEDY["max_tokens"]
    chunks = list(
        client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs)
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.prompt_tokens == plain.usage.prompt_tokens


def test_stop_string_ends_with_finish_reason_stop(client):
    base = client.completions.create(model=MODEL, prompt="hello", extra_body={"ignore_eos": True}, **GREEDY)
    text = base.choices[0].text
    stop = text[len(text) // 2 :][:3]
    assert stop.strip(), f"need a non-blank stop string from {text!r}"
    out = client.completions.create(
        model=MODEL, prompt="hello", stop=[stop], extra_body={"ignore_eos": True}, **GREEDY
    )
    assert out.choices[0].finish_reason == "stop"
    assert out.choices[0].text == text[: text.find(stop)]


def test_completion_logprobs(client):
    out = client.completions.create(
        model=MODEL, prompt="hello", logprobs=3, extra_body={"ignore_eos": True}, **GREEDY
    )
    lp = out.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == GREEDY["max_tokens"]
    assert "".join(lp.tokens) == out.choices[0].text
    for chosen, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert logprob <= 0 and 1 <= len(top) <= 3
        assert max(top.values()) == pytest.approx(logprob, abs=1e-5)  # greedy picks the most likely
        assert chosen in top


def test_chat_logprobs(client):
    out = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        logprobs=True,
        top_logprobs=2,
        extra_body={"ignore_eos": True},
        **GREEDY,
    )
    content = out.choices[0].logprobs.content
    assert len(content) == GREEDY["max_tokens"]
    for t in content:
        assert len(t.top_logprobs) == 2 and t.logprob <= 0
        assert bytes(t.bytes).decode(errors="replace") == t.token
    plain = client.chat.completions.create(model=MODEL, messages=MESSAGES, **GREEDY)
    assert plain.choices[0].logprobs is None


def test_kserve_prefix_serves_the_same_api(server, client):
    kserve = openai.OpenAI(base_url=server.base_url + "/openai/v1", api_key="unused", max_retries=0)
    a = kserve.completions.create(model=MODEL, prompt="hello", **GREEDY)
    b = client.completions.create(model=MODEL, prompt="hello", **GREEDY)
    assert a.choices[0].text == b.choices[0].text
    assert [m.id for m in kserve.models.list().data] == [MODEL]


def test_several_prompts_in_one_completion_request(client):
    prompts = ["hello", "the world"]
    batch = client.completions.create(model=MODEL, prompt=prompts, **GREEDY)
    singles = [client.completions.create(model=MODEL, prompt=p, **GREEDY).choices[0].text for p in prompts]
    assert [c.index for c in batch.choices] == [0, 1]
    assert [c.text for c in batch.choices] == singles


def test_health_routes(server):
    get = lambda path: httpx.get(server.base_url + path, timeout=10)  # noqa: E731
    assert get("/health").status_code == 200
    assert get("/v2/health/live").json() == {"live": True}
    assert get("/v2/health/ready").json() == {"ready": True}
    assert get(f"/v2/models/{MODEL}/ready").json() == {"name": MODEL, "ready": True}
    assert get("/v2/models/other/ready").status_code == 404


def test_prefix_cache_hits_show_in_metrics(server, client):
    prompt = list(range(40, 40 + 3 * 16 + 5))  # token ids: three full blocks of 16 and a bit
    before = server.metrics()["cpullm_prefix_cache_hit_tokens"]
    client.completions.create(model=MODEL, prompt=prompt, **GREEDY)
    client.completions.create(model=MODEL, prompt=prompt, **GREEDY)
    assert server.metrics()["cpullm_prefix_cache_hit_tokens"] - before >= 3 * 16


def test_metrics_count_requests_tokens_and_latency(server, client):
    before = server.metrics()
    out = client.completions.create(model=MODEL, prompt="hello", extra_body={"ignore_eos": True}, **GREEDY)
    after = server.metrics()
    key = 'cpullm_requests_total{route="/completions",status="200"}'
    assert after[key] - before.get(key, 0) == 1
    assert after["cpullm_generation_tokens_total"] - before["cpullm_generation_tokens_total"] == 8
    assert (
        after["cpullm_prompt_tokens_total"] - before["cpullm_prompt_tokens_total"] == out.usage.prompt_tokens
    )
    assert (
        after["cpullm_time_to_first_token_seconds_count"] - before["cpullm_time_to_first_token_seconds_count"]
        == 1
    )
    assert (
        after["cpullm_inter_token_latency_seconds_count"] - before["cpullm_inter_token_latency_seconds_count"]
        == 7
    )
    assert after["cpullm_kv_cache_blocks_total"] > 0
    for gauge in (
        "cpullm_num_requests_running",
        "cpullm_num_requests_waiting",
        "cpullm_kv_cache_usage_ratio",
    ):
        assert after[gauge] == 0
