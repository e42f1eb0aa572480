"""Sampler knobs, parameter validation, stop strings and the per-sequence text stream."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from cpullm.model.gguf_file import GGUFFile
from cpullm.model.tokenizer import Tokenizer
from cpullm.runtime.sampling import Sampler, SamplingParams, StopStringMatcher, TextStream

PROBS = np.array([0.5, 0.3, 0.15, 0.05])
LOGITS = np.log(PROBS).astype(np.float32)


def _draws(params: SamplingParams, logits: np.ndarray = LOGITS, n: int = 4000) -> np.ndarray:
    sampler = Sampler(params, logits.shape[0])
    return np.array([sampler.sample(logits).token_id for _ in range(n)])


def _freq(draws: np.ndarray, vocab: int) -> np.ndarray:
    return np.bincount(draws, minlength=vocab) / len(draws)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 2.5}, "max_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"min_p": 1.1}, "min_p"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"frequency_penalty": -3}, "frequency_penalty"),
        ({"stop": ["ok", ""]}, "stop strings"),
        ({"stop": ["x"] * 17}, "stop strings"),
        ({"stop_token_ids": [-1]}, "stop_token_ids"),
        ({"seed": "42"}, "seed"),
        ({"logprobs": 21}, "logprobs"),
        ({"max_tokens": True}, "max_tokens"),
    ],
)
def test_invalid_params_raise_value_error_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kwargs)


def test_params_normalize_stop_and_know_greedy() -> None:
    p = SamplingParams(stop="END", stop_token_ids=[5, 6], temperature=0)
    assert p.stop == ("END",) and p.stop_token_ids == (5, 6) and p.greedy
    assert SamplingParams(top_k=1).greedy and not SamplingParams().greedy


def test_greedy_is_argmax() -> None:
    logits = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    assert set(_draws(SamplingParams(temperature=0), logits, n=20)) == {int(np.argmax(logits))}


@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
def test_temperature_matches_softmax(temperature: float) -> None:
    freq = _freq(_draws(SamplingParams(temperature=temperature, seed=1), n=20000), 4)
    expected = PROBS ** (1 / temperature) / (PROBS ** (1 / temperature)).sum()
    np.testing.assert_allclose(freq, expected, atol=0.015)


def test_top_k_keeps_only_the_k_best() -> None:
    logits = np.random.default_rng(3).standard_normal(49152).astype(np.float32)
    best3 = set(np.argsort(-logits)[:3].tolist())
    draws = set(_draws(SamplingParams(top_k=3, temperature=5.0, seed=2), logits, n=600).tolist())
    assert draws == best3


@pytest.mark.parametrize(
    ("top_p", "allowed"), [(0.5, {0}), (0.79, {0, 1}), (0.81, {0, 1, 2}), (0.99, {0, 1, 2, 3})]
)
def test_top_p_keeps_the_smallest_prefix_reaching_p(top_p: float, allowed: set[int]) -> None:
    draws = _draws(SamplingParams(top_p=top_p, seed=4))
    assert set(draws.tolist()) == allowed
    freq = _freq(draws, 4)
    kept = sorted(allowed)
    np.testing.assert_allclose(freq[kept], PROBS[kept] / PROBS[kept].sum(), atol=0.03)


def test_top_p_with_top_k() -> None:
    draws = _draws(SamplingParams(top_k=3, top_p=0.8, seed=5))
    assert set(draws.tolist()) == {0, 1}


@pytest.mark.parametrize(("min_p", "allowed"), [(0.2, {0, 1, 2}), (0.5, {0, 1}), (0.05, {0, 1, 2, 3})])
def test_min_p_drops_tokens_below_fraction_of_best(min_p: float, allowed: set[int]) -> None:
    assert set(_draws(SamplingParams(min_p=min_p, seed=6)).tolist()) == allowed


def test_repetition_penalty_covers_prompt_and_output() -> None:
    logits = np.array([2.0, 1.9, -0.5, -0.45], dtype=np.float32)
    params = SamplingParams(temperature=0, repetition_penalty=1.2)
    assert Sampler(params, 4).sample(logits).token_id == 0
    assert Sampler(params, 4, prompt_ids=[0]).sample(logits).token_id == 1  # 2.0 / 1.2 < 1.9
    # negative logits are multiplied: -0.45 * 1.2 = -0.54 < -0.5
    neg = np.array([-0.45, -0.5, -9, -9], dtype=np.float32)
    assert Sampler(params, 4, prompt_ids=[0]).sample(neg).token_id == 1
    sampler = Sampler(params, 4)
    assert [sampler.sample(logits).token_id for _ in range(3)] == [0, 1, 0]  # output counts too


def test_presence_and_frequency_penalties_use_output_counts() -> None:
    logits = np.array([1.0, 0.9, 0.8], dtype=np.float32)
    plain = Sampler(SamplingParams(temperature=0), 3)
    assert [plain.sample(logits).token_id for _ in range(4)] == [0, 0, 0, 0]
    presence = Sampler(SamplingParams(temperature=0, presence_penalty=0.15), 3, prompt_ids=[1])
    # 0 -> (0.85, 0.9, 0.8) -> 1 -> (0.85, 0.75, 0.8) -> 0 -> 0 (presence does not grow)
    assert [presence.sample(logits).token_id for _ in range(4)] == [0, 1, 0, 0]
    frequency = Sampler(SamplingParams(temperature=0, frequency_penalty=0.15), 3)
    # 0 -> (0.85, .9, .8) -> 1 -> (.85, .75, .8) -> 0 -> (.7, .75, .8) -> 2
    assert [frequency.sample(logits).token_id for _ in range(4)] == [0, 1, 0, 2]


def test_same_seed_same_tokens_different_seed_differs() -> None:
    logits = np.random.default_rng(7).standard_normal(5000).astype(np.float32)
    params = SamplingParams(temperature=1.5, top_p=0.95, seed=1234)
    a = _draws(params, logits, n=50)
    b = _draws(params, logits, n=50)
    c = _draws(SamplingParams(temperature=1.5, top_p=0.95, seed=99), logits, n=50)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_logprobs_are_model_log_softmax() -> None:
    logits = np.random.default_rng(8).standard_normal(100).astype(np.float32)
    ref = logits.astype(np.float64) - np.log(np.exp(logits.astype(np.float64)).sum())
    result = Sampler(SamplingParams(temperature=0.7, logprobs=5, seed=0, repetition_penalty=1.3), 100).sample(
        logits
    )
    assert result.logprob == pytest.approx(ref[result.token_id], abs=1e-5)
    assert [i for i, _ in result.top_logprobs] == np.argsort(-ref)[:5].tolist()
    assert [v for _, v in result.top_logprobs] == pytest.approx(np.sort(ref)[::-1][:5].tolist(), abs=1e-5)
    assert Sampler(SamplingParams(logprobs=0), 100).sample(logits).top_logprobs == []
    assert Sampler(SamplingParams(), 100).sample(logits).logprob is None


def test_wrong_logits_shape_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"expected logits of shape \(10,\)"):
        Sampler(SamplingParams(), 10).sample(np.zeros(11, dtype=np.float32))


def test_sampler_is_fast_on_a_real_vocabulary() -> None:
    logits = np.random.default_rng(9).standard_normal(49152).astype(np.float32)

    def median_ms(params: SamplingParams) -> float:
        sampler = Sampler(params, logits.shape[0])
        times = []
        for _ in range(50):
            start = time.perf_counter()
            sampler.sample(logits)
            times.append(time.perf_counter() - start)
        return 1000 * float(np.median(times))

    greedy = median_ms(SamplingParams(temperature=0))
    top_k = median_ms(SamplingParams(top_k=40, top_p=0.9, seed=0))
    print(f"sampler median: greedy {greedy:.3f} ms, top_k=40+top_p {top_k:.3f} ms")
    # Generous bounds for a shared 2-core machine; the typical values are far below them.
    assert greedy < 2.0 and top_k < 5.0


@pytest.mark.parametrize(
    ("chunks", "stops", "emitted", "stopped"),
    [
        (["Hello", " wor", "ld"], ["STOP"], ["Hello", " wor", "ld"], False),
        (["Hello ST", "OP more"], ["STOP"], ["Hello ", ""], True),
        (["a<", "|e", "nd|>b"], ["<|end|>"], ["a", "", ""], True),
        (["ab", "c", "x"], ["abd"], ["", "abc", "x"], False),
        (["one two three"], ["three", "two"], ["one "], True),
        (["xx", "yy"], ["xyyz"], ["x", ""], False),
    ],
)
def test_stop_string_matcher(chunks: list[str], stops: list[str], emitted: list[str], stopped: bool) -> None:
    matcher = StopStringMatcher(stops)
    out = [matcher.push(c) for c in chunks[: len(emitted)]]
    assert [text for text, _ in out] == emitted
    assert out[-1][1] is stopped
    if not stopped:
        total = "".join(emitted) + matcher.flush()
        assert total == "".join(chunks[: len(emitted)])


def _tiny_tok(path: Path) -> Tokenizer:
    return Tokenizer.from_gguf(GGUFFile.open(path))


def test_text_stream_stops_on_eos_and_stop_ids(tiny_llama: Path) -> None:
    tok = _tiny_tok(tiny_llama)
    ids = tok.encode("hello world")
    stream = TextStream(tok, SamplingParams())
    assert [stream.push(i) for i in ids] == [("hello", None), (" world", None)]
    assert stream.push(2) == ("", "stop")  # <|im_end|> is end-of-generation; its text is not emitted
    custom = TextStream(tok, SamplingParams(stop_token_ids=[ids[1]], ignore_eos=True))
    assert custom.push(2) == ("", None)  # ignore_eos: <|im_end|> is skipped as special text
    assert custom.push(ids[1]) == ("", "stop")


def test_text_stream_stop_string_and_max_tokens(tiny_llama: Path) -> None:
    tok = _tiny_tok(tiny_llama)
    ids = tok.encode("hello the world capital")
    stream = TextStream(tok, SamplingParams(stop=["world"]))
    outs = [stream.push(i) for i in ids]
    assert "".join(t for t, _ in outs) == "hello the "
    assert outs[2][1] == "stop" and stream.finish_reason == "stop"
    limited = TextStream(tok, SamplingParams(max_tokens=2, stop=["the worx"]))
    # the held-back " the" (could start "the worx") is released when max_tokens ends the sequence
    assert [limited.push(i) for i in ids[:2]] == [("hello", None), (" the", "length")]


def test_blockwise_inverse_cdf_matches_cumsum() -> None:
    from cpullm.runtime.sampling import _inverse_cdf

    rng = np.random.default_rng(10)
    for n in (4, 255, 256, 257, 1000, 49152):
        probs = rng.random(n).astype(np.float32)
        probs[rng.random(n) < 0.3] = 0
        cdf = np.cumsum(probs, dtype=np.float64)
        for u in rng.random(200):
            got = _inverse_cdf(probs, float(u))
            want = min(int(np.searchsorted(cdf, u * cdf[-1], side="right")), n - 1)
            assert probs[got] > 0
            assert got == want or abs(cdf[got] - cdf[want]) < 1e-6 * cdf[-1]


def test_partial_nucleus_equals_full_sort() -> None:
    from cpullm.runtime.sampling import _nucleus_candidates

    rng = np.random.default_rng(11)
    for scale in (0.5, 3.0, 10.0):
        logits = rng.standard_normal(49152) * scale
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        for top_p in (0.1, 0.5, 0.9, 0.999):
            head = _nucleus_candidates(probs, top_p)
            full = np.argsort(-probs, kind="stable")
            keep = int(np.searchsorted(np.cumsum(probs[full]), top_p)) + 1
            assert head[:keep].tolist() == full[:keep].tolist()


def test_top_p_with_top_k_larger_than_vocab() -> None:
    logits = np.log(PROBS[::-1]).astype(np.float32)  # best token last: unsorted input
    draws = _draws(SamplingParams(top_k=100, top_p=0.79, seed=12), logits)
    assert set(draws.tolist()) == {3, 2}
