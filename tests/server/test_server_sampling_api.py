"""OpenAI sampling parameters through the official openai client against a real server on loopback:
logit_bias, n > 1 (sharing the prompt's KV blocks), best_of, echo with prompt logprobs, top_logprobs
up to 20, streamed and not."""

from __future__ import annotations

import openai
import pytest

MODEL = "tiny-chat"
MESSAGES = [{"role": "user", "content": "hello world"}]
NO_EOS = {"extra_body": {"ignore_eos": True}}


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=60)


def _token_of(client: openai.OpenAI, text: str) -> int:
    (token,) = client.post("/tokenize", body={"prompt": text, "add_special_tokens": False}, cast_to=object)[
        "tokens"
    ]
    return token


# ---- logit_bias ----
# The tiny random model is sure of itself: its first choice leads the next by about 100 logits.
PROMPT_IDS = [40, 41, 42, 43]


def test_logit_bias_is_added_to_the_logits(client):
    kwargs = {"model": MODEL, "prompt": PROMPT_IDS, "max_tokens": 1, "temperature": 0}
    top = client.completions.create(logprobs=5, **kwargs).choices[0].logprobs.top_logprobs[0]
    (best, _), *others = sorted(top.items(), key=lambda kv: -kv[1])
    second, lp = next((t, v) for t, v in others if "\ufffd" not in t and -200 < v < -100)
    ids = {t: _token_of(client, t) for t in (best, second)}
    # +100 for the runner-up, and just enough (or just too little) against the first choice
    for margin, winner in ((0.5, second), (-0.5, best)):
        bias = {str(ids[second]): 100, str(ids[best]): -(-lp - 100 + margin)}
        out = client.completions.create(logit_bias=bias, **kwargs).choices[0].text
        assert out == winner, (margin, bias, top)


def test_logit_bias_forces_a_token_when_sampling(client):
    z, hello = _token_of(client, "z"), _token_of(client, "hello")
    bias = {str(z): 100, str(hello): -100}
    out = client.completions.create(
        model=MODEL, prompt="hello", max_tokens=6, temperature=1, logit_bias=bias, **NO_EOS
    )
    assert out.choices[0].text == "z" * 6
    plain = client.completions.create(model=MODEL, prompt="hello", max_tokens=6, temperature=1, **NO_EOS)
    assert plain.choices[0].text != "z" * 6
    first = (
        client.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=1, temperature=0, logprobs=True
        )
        .choices[0]
        .logprobs.content[0]
        .token
    )
    chat = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=1, temperature=0,
        logit_bias={str(z): 100, str(_token_of(client, first)): -100},
    )  # fmt: skip
    assert chat.choices[0].message.content == "z"


# ---- n > 1 ----
def test_n_choices_are_the_seeded_single_requests(client):
    kwargs = {"model": MODEL, "max_tokens": 6, "temperature": 1.0, **NO_EOS}
    out = client.completions.create(prompt=["hello", "the world"], n=3, seed=7, **kwargs)
    assert [c.index for c in out.choices] == list(range(6))
    for i, prompt in enumerate(["hello", "the world"]):
        for j in range(3):
            single = client.completions.create(prompt=prompt, seed=7 + j, **kwargs).choices[0].text
            assert out.choices[i * 3 + j].text == single
    assert out.usage.completion_tokens == 6 * 6
    assert out.usage.prompt_tokens == sum(
        client.completions.create(model=MODEL, prompt=p, max_tokens=1).usage.prompt_tokens
        for p in ["hello", "the world"]
    )
    chat = client.chat.completions.create(messages=MESSAGES, n=2, seed=3, **kwargs)
    singles = [
        client.chat.completions.create(messages=MESSAGES, seed=3 + j, **kwargs).choices[0].message.content
        for j in range(2)
    ]
    assert [c.message.content for c in chat.choices] == singles
    assert [c.index for c in chat.choices] == [0, 1]


def test_n_choices_stream_with_an_index_each(client):
    kwargs = {"model": MODEL, "max_tokens": 6, "temperature": 1.0, "seed": 11, "n": 3, **NO_EOS}
    plain = client.chat.completions.create(messages=MESSAGES, **kwargs)
    chunks = list(client.chat.completions.create(messages=MESSAGES, stream=True, **kwargs))
    texts, finish, roles = ["", "", ""], [None] * 3, [None] * 3
    for c in chunks:
        (choice,) = c.choices
        texts[choice.index] += choice.delta.content or ""
        roles[choice.index] = roles[choice.index] or choice.delta.role
        finish[choice.index] = choice.finish_reason or finish[choice.index]
    assert texts == [c.message.content for c in plain.choices]
    assert roles == ["assistant"] * 3 and finish == ["length"] * 3
    plain_c = client.completions.create(prompt="hello", **kwargs)
    streamed = ["", "", ""]
    for c in client.completions.create(prompt="hello", stream=True, **kwargs):
        streamed[c.choices[0].index] += c.choices[0].text
    assert streamed == [c.text for c in plain_c.choices]


def test_n_choices_share_the_prompt_blocks(server, client):
    prompt = list(range(200, 200 + 3 * 16 + 5))  # three full KV blocks of 16 and a bit, new to the cache
    before = server.metrics()["cpullm_prefix_cache_hit_tokens"]
    out = client.completions.create(model=MODEL, prompt=prompt, n=4, max_tokens=2, temperature=0)
    assert len(out.choices) == 4
    # the first choice computes the three blocks; the other three take them from the cache
    assert server.metrics()["cpullm_prefix_cache_hit_tokens"] - before == 3 * 3 * 16


# ---- best_of ----
def test_best_of_returns_the_most_likely_candidates(client):
    kwargs = {"model": MODEL, "prompt": "hello", "max_tokens": 5, "temperature": 1.0, **NO_EOS}
    candidates = [client.completions.create(seed=21 + j, logprobs=0, **kwargs).choices[0] for j in range(4)]
    ranked = sorted(candidates, key=lambda c: sum(c.logprobs.token_logprobs), reverse=True)
    out = client.completions.create(seed=21, best_of=4, n=2, **kwargs)
    assert [c.text for c in out.choices] == [c.text for c in ranked[:2]]
    assert [c.index for c in out.choices] == [0, 1] and out.choices[0].logprobs is None
    assert out.usage.completion_tokens == 4 * 5  # every candidate counts


# ---- echo and prompt logprobs ----
def test_echo_puts_the_prompt_first(client):
    out = client.completions.create(model=MODEL, prompt="hello", echo=True, max_tokens=3, temperature=0)
    plain = client.completions.create(model=MODEL, prompt="hello", max_tokens=3, temperature=0)
    assert out.choices[0].text == "hello" + plain.choices[0].text
    ids = client.post("/tokenize", body={"prompt": "hello"}, cast_to=object)["tokens"]
    by_ids = client.completions.create(model=MODEL, prompt=ids, echo=True, max_tokens=3, temperature=0)
    text = client.post("/detokenize", body={"tokens": ids}, cast_to=object)["prompt"]
    assert by_ids.choices[0].text == text + plain.choices[0].text
    streamed = client.completions.create(
        model=MODEL, prompt=["hello", "world"], echo=True, max_tokens=3, temperature=0, stream=True
    )
    texts = ["", ""]
    for c in streamed:
        texts[c.choices[0].index] += c.choices[0].text
    assert texts[0] == out.choices[0].text and texts[1].startswith("world")


def test_prompt_logprobs_match_the_generated_ones(client):
    """A prompt longer than one prefill chunk of prompt logprobs (64 tokens): the logprobs the
    prompt's last tokens get at prefill are the ones they had when they were generated."""
    prompt = [40 + i % 150 for i in range(99)] + [50]  # the tiny model repeats its last token, "P"
    gen = client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=3, temperature=0, logprobs=2, **NO_EOS
    ).choices[0]
    generated = [_token_of(client, t) for t in gen.logprobs.tokens]
    echo = client.completions.create(
        model=MODEL, prompt=prompt + generated[:2], max_tokens=1, temperature=0, logprobs=2, echo=True
    ).choices[0]
    lp = echo.logprobs
    assert len(lp.tokens) == len(prompt) + 3
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(x <= 0 for x in lp.token_logprobs[1:])
    assert all(len(top) <= 2 for top in lp.top_logprobs[1:])
    assert lp.token_logprobs[-3:] == pytest.approx(gen.logprobs.token_logprobs, abs=1e-3)
    assert lp.tokens[-3:] == gen.logprobs.tokens
    assert lp.text_offset[0] == 0 and lp.text_offset[-1] == len(echo.text) - len(lp.tokens[-1])
    streamed = client.completions.create(
        model=MODEL, prompt=prompt + generated[:2], max_tokens=1, temperature=0, logprobs=2, echo=True,
        stream=True,
    )  # fmt: skip
    tokens = [t for c in streamed for t in (c.choices[0].logprobs.tokens if c.choices[0].logprobs else [])]
    assert tokens == lp.tokens


def test_top_logprobs_up_to_20(client):
    kwargs = {"model": MODEL, "messages": MESSAGES, "max_tokens": 3, "logprobs": True, "temperature": 0}
    out = client.chat.completions.create(top_logprobs=20, **kwargs)
    content = out.choices[0].logprobs.content
    assert len(content) == 3 and all(len(t.top_logprobs) == 20 for t in content)
    stream = client.chat.completions.create(top_logprobs=20, stream=True, **kwargs)
    chunks = [c.choices[0].logprobs for c in stream if c.choices and c.choices[0].logprobs]
    streamed = [t for lp in chunks for t in lp.content]
    assert [t.top_logprobs for t in streamed] == [t.top_logprobs for t in content]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=MESSAGES, logprobs=True, top_logprobs=21)
