"""/v1/embeddings (and /openai/v1) through the official openai client against a real server on loopback:
normalised vectors of the model's width, float and base64 alike, strings and token ids alike."""

from __future__ import annotations

import base64

import numpy as np
import openai
import pytest

MODEL = "tiny-chat"


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_a_batch_of_texts_float_and_base64(client, server):
    texts = ["the cat sat", "on the mat", "the cat sat"]
    out = client.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    vectors = np.array([d.embedding for d in out.data])
    assert [d.index for d in out.data] == [0, 1, 2] and vectors.shape[1] >= 8
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert np.array_equal(vectors[0], vectors[2]) and not np.allclose(vectors[0], vectors[1], atol=1e-3)
    counts = [len(client.post("/tokenize", body={"prompt": t}, cast_to=object)["tokens"]) for t in texts]
    assert out.usage.prompt_tokens == out.usage.total_tokens == sum(counts)
    raw = client.post("/embeddings", body={"input": texts[0], "encoding_format": "base64"}, cast_to=object)
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.array_equal(decoded, vectors[0].astype(np.float32))
    default = client.embeddings.create(model=MODEL, input=texts[1])  # the client asks for base64 itself
    assert np.allclose(default.data[0].embedding, vectors[1], atol=1e-7)
    kserve = openai.OpenAI(base_url=server.base_url + "/openai/v1", api_key="unused", max_retries=0)
    assert np.allclose(kserve.embeddings.create(model=MODEL, input=texts[1]).data[0].embedding, vectors[1])


def test_token_ids_are_the_same_as_their_text(client):
    ids = client.post("/tokenize", body={"prompt": "hello world"}, cast_to=object)["tokens"]
    by_text = client.embeddings.create(model=MODEL, input="hello world").data[0].embedding
    by_ids = client.embeddings.create(model=MODEL, input=[ids, ids[:2]])
    assert np.allclose(by_ids.data[0].embedding, by_text, atol=1e-6)
    assert by_ids.usage.prompt_tokens == len(ids) + 2


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"input": ""}, "input", "empty"),
        ({"input": []}, "input", "empty"),
        ({"input": [1, 10**9]}, None, "outside the vocabulary"),
        ({"input": ["a"] * 300}, "input", "at most 256"),
        ({"input": "a", "dimensions": 3}, "dimensions", "dimensions"),
        ({"input": "a", "encoding_format": "int8"}, "encoding_format", ""),
        ({"input": "word " * 20_000}, "input", "context"),
    ],
)
def test_bad_embedding_requests_are_400(client, body, param, words):
    with pytest.raises(openai.BadRequestError) as caught:
        client.post("/embeddings", body={"model": MODEL, **body}, cast_to=object)
    error = caught.value.body
    assert error["param"] == param and words in error["message"], error
