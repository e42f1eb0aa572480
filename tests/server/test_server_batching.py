"""Continuous batching through the HTTP server: concurrent clients, greedy output identical alone or
batched, a client that leaves mid-stream (or mid-request) is aborted and its KV blocks are freed."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

MODEL = "tiny-chat"
N_CLIENTS = 10
PROMPTS = [f"hello world {' the' * i} capital" for i in range(N_CLIENTS)]
PARAMS = {"temperature": 0, "max_tokens": 24, "extra_body": {"ignore_eos": True}}


def _wait_for(server, condition, timeout: float = 20.0) -> dict[str, float]:
    """Poll /metrics until ``condition(samples)`` holds; bounded."""
    deadline = time.monotonic() + timeout
    while True:
        samples = server.metrics()
        if condition(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def _steps_with_more_than(samples: dict[str, float], histogram: str, n: int) -> float:
    """How many engine steps recorded a value above ``n`` in a per-step histogram."""
    return samples[f"{histogram}_count"] - samples[f'{histogram}_bucket{{le="{float(n)}"}}']


def test_concurrent_requests_batch_and_match_their_solo_answers(server):
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0, timeout=120)
    alone = [client.completions.create(model=MODEL, prompt=p, **PARAMS).choices[0].text for p in PROMPTS]
    before = server.metrics()

    async def together() -> list[str]:
        aclient = openai.AsyncOpenAI(
            base_url=server.base_url + "/v1", api_key="x", max_retries=0, timeout=120
        )

        async def one(prompt: str, stream: bool) -> str:
            if not stream:
                return (
                    (await aclient.completions.create(model=MODEL, prompt=prompt, **PARAMS)).choices[0].text
                )
            chunks = await aclient.completions.create(model=MODEL, prompt=prompt, stream=True, **PARAMS)
            return "".join([c.choices[0].text async for c in chunks])

        try:
            return await asyncio.gather(*(one(p, i % 2 == 0) for i, p in enumerate(PROMPTS)))
        finally:
            await aclient.close()

    batched = asyncio.run(together())
    after = server.metrics()
    assert batched == alone
    batch = "cpullm_step_batch_size"
    assert _steps_with_more_than(after, batch, 1) > _steps_with_more_than(before, batch, 1), (
        "the concurrent requests never ran in one batch"
    )


def test_concurrent_chat_streams_all_finish(server):
    async def run() -> list[tuple[str, str | None]]:
        aclient = openai.AsyncOpenAI(
            base_url=server.base_url + "/v1", api_key="x", max_retries=0, timeout=120
        )

        async def one(i: int) -> tuple[str, str | None]:
            stream = await aclient.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": PROMPTS[i]}], stream=True, **PARAMS
            )
            text, reason = "", None
            async for c in stream:
                text += c.choices[0].delta.content or ""
                reason = c.choices[0].finish_reason or reason
            return text, reason

        try:
            return await asyncio.gather(*(one(i) for i in range(N_CLIENTS)))
        finally:
            await aclient.close()

    results = asyncio.run(run())
    assert len(results) == N_CLIENTS and all(text and reason == "length" for text, reason in results)


def _aborts(samples: dict[str, float]) -> float:
    return samples.get('cpullm_request_finished_total{finish_reason="abort"}', 0.0)


def test_client_leaving_mid_stream_frees_its_blocks(server):
    before = _wait_for(server, lambda m: m["cpullm_kv_cache_blocks_used"] == 0)
    assert before["cpullm_kv_cache_blocks_used"] == 0
    body = {"model": MODEL, "prompt": "hello world", "max_tokens": 2000, "ignore_eos": True, "stream": True}
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        with http.stream("POST", "/v1/completions", json=body) as response:
            assert response.status_code == 200
            events = (line for line in response.iter_lines() if line.startswith("data: {"))
            first_two = [next(events), next(events)]
            assert all('"text"' in event for event in first_two)
            during = server.metrics()
            assert during["cpullm_kv_cache_blocks_used"] > 0 and during["cpullm_num_requests_running"] == 1
        # leaving the block closes the connection mid-stream
    after = _wait_for(
        server, lambda m: m["cpullm_kv_cache_blocks_used"] == 0 and _aborts(m) > _aborts(before)
    )
    assert after["cpullm_kv_cache_blocks_used"] == 0
    assert after["cpullm_num_requests_running"] == 0
    assert _aborts(after) == _aborts(before) + 1  # cancelled, not finished on its own


def test_client_leaving_a_plain_request_aborts_it(server):
    body = {"model": MODEL, "prompt": "hello world", "max_tokens": 2000, "ignore_eos": True}
    # Time the whole request first, then leave after a quarter of that: a fixed timeout let a fast,
    # quiet machine finish all 2000 tokens before the client left.
    start = time.monotonic()
    httpx.post(server.base_url + "/v1/completions", json=body, timeout=120).raise_for_status()
    full = time.monotonic() - start
    before = _wait_for(server, lambda m: m["cpullm_kv_cache_blocks_used"] == 0)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.base_url + "/v1/completions", json=body, timeout=max(full / 4, 0.05))
    after = _wait_for(
        server, lambda m: m["cpullm_kv_cache_blocks_used"] == 0 and _aborts(m) > _aborts(before)
    )
    assert _aborts(after) == _aborts(before) + 1
    assert after["cpullm_kv_cache_blocks_used"] == 0 and after["cpullm_num_requests_running"] == 0
