"""Sampling parameters, a NumPy sampler over one logits row, and stop handling for streamed text.

Public API
----------
``SamplingParams``
    Frozen dataclass; invalid values raise ``ValueError`` with a sentence naming the field (the server
    turns these into HTTP 400s). ``temperature == 0`` means greedy. ``top_k`` 0 or -1 means off.
    ``logit_bias`` is (token id, bias in [-100, 100]) pairs added to the logits (ids past the
    vocabulary are the engine's to refuse). ``prompt_logprobs`` asks for the log-probability of every
    prompt token after the first, with that many alternatives (the engine computes them at prefill).
    ``constraint`` (a :class:`~cpullm.runtime.structured.Constraint`, one per sequence: it holds the grammar's
    state) masks every token the grammar does not allow next.
``Sampler(params, vocab_size, prompt_ids=())``
    ``sample(logits: float32[vocab]) -> SampleResult`` picks the next token and records it for the
    penalties. Order (as transformers' logits processors): repetition/presence/frequency penalties ->
    logit bias -> grammar mask -> temperature -> top-k -> top-p -> min-p -> draw. Greedy is one
    ``argmax`` (after penalties, bias and mask, if any); top-k uses ``argpartition`` so the
    49152-token vocabulary is never fully sorted when it is set.
    Each sampler owns a ``numpy.random.Generator`` seeded from ``params.seed``: same seed, same tokens.
    Penalties follow vLLM/OpenAI: repetition over prompt + output (divide positive logits, multiply
    negative ones), presence and frequency over output tokens only.
    Log-probabilities are those of the model (log-softmax of the raw logits), as OpenAI reports them.
``StopStringMatcher(stops)``
    ``push(text) -> (emit, stopped)`` holds back any tail that could still become a stop string and
    cuts the text before the first stop string; ``flush()`` releases the held tail at the end.
``TextStream(tokenizer, params, eog_ids)``
    Glue for one sequence: ``push(token_id) -> (text, finish_reason | None)`` applies stop token ids /
    end-of-generation tokens, incremental detokenization, stop strings and ``max_tokens``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from cpullm.model.tokenizer import Tokenizer

FinishReason = Literal["stop", "length"]
MAX_LOGPROBS = 20
MAX_STOP_STRINGS = 16
MAX_LOGIT_BIAS = 100.0  # OpenAI's range for a logit_bias value: -100 bans a token, 100 forces it


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] | str = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    seed: int | None = None
    logprobs: int | None = None  # also return this many most likely alternatives per token
    skip_special_tokens: bool = True
    logit_bias: tuple[tuple[int, float], ...] = ()
    prompt_logprobs: int | None = None
    constraint: Any = field(default=None, compare=False, repr=False)  # structured.Constraint

    def __post_init__(self) -> None:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        object.__setattr__(self, "stop", stop)
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))
        object.__setattr__(self, "logit_bias", tuple((t, b) for t, b in self.logit_bias))
        for check in _CHECKS:
            check(self)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (_is_int(value) or isinstance(value, float | np.floating)) and math.isfinite(float(value))  # type: ignore[arg-type]


def _check_counts(p: SamplingParams) -> None:
    if not _is_int(p.max_tokens) or p.max_tokens < 1:
        raise ValueError(f"max_tokens must be an integer of at least 1, got {p.max_tokens!r}.")
    if not _is_int(p.top_k) or p.top_k < -1:
        raise ValueError(f"top_k must be an integer: -1 or 0 to disable, or at least 1; got {p.top_k!r}.")
    for name in ("logprobs", "prompt_logprobs"):
        n = getattr(p, name)
        if n is not None and (not _is_int(n) or not 0 <= n <= MAX_LOGPROBS):
            raise ValueError(f"{name} must be an integer from 0 to {MAX_LOGPROBS}, got {n!r}.")
    if p.seed is not None and not _is_int(p.seed):
        raise ValueError(f"seed must be an integer, got {p.seed!r}.")


def _check_probabilities(p: SamplingParams) -> None:
    if not _is_number(p.temperature) or p.temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {p.temperature!r}.")
    if not _is_number(p.top_p) or not 0 < p.top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {p.top_p!r}.")
    if not _is_number(p.min_p) or not 0 <= p.min_p <= 1:
        raise ValueError(f"min_p must be in [0, 1], got {p.min_p!r}.")


def _check_penalties(p: SamplingParams) -> None:
    if not _is_number(p.repetition_penalty) or p.repetition_penalty <= 0:
        raise ValueError(f"repetition_penalty must be > 0 (1 = off), got {p.repetition_penalty!r}.")
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(p, name)
        if not _is_number(value) or not -2 <= value <= 2:
            raise ValueError(f"{name} must be in [-2, 2], got {value!r}.")


def _check_stops(p: SamplingParams) -> None:
    if len(p.stop) > MAX_STOP_STRINGS:
        raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings are allowed, got {len(p.stop)}.")
    for s in p.stop:
        if not isinstance(s, str) or not s:
            raise ValueError(f"stop strings must be non-empty strings, got {s!r}.")
    for t in p.stop_token_ids:
        if not _is_int(t) or t < 0:
            raise ValueError(f"stop_token_ids must be non-negative integers, got {t!r}.")


def _check_logit_bias(p: SamplingParams) -> None:
    for token, bias in p.logit_bias:
        if not _is_int(token) or token < 0:
            raise ValueError(f"logit_bias keys must be token ids (integers >= 0), got {token!r}.")
        if not _is_number(bias) or not -MAX_LOGIT_BIAS <= bias <= MAX_LOGIT_BIAS:
            raise ValueError(
                f"logit_bias values must be numbers from -{MAX_LOGIT_BIAS:g} to {MAX_LOGIT_BIAS:g}, "
                f"got {bias!r} for token {token}."
            )


_CHECKS = (_check_counts, _check_probabilities, _check_penalties, _check_stops, _check_logit_bias)


@dataclass(frozen=True)
class SampleResult:
    token_id: int
    logprob: float | None = None  # model log-probability of token_id, when logprobs were asked for
    top_logprobs: list[tuple[int, float]] = field(default_factory=list)  # most likely first


class Sampler:
    """Picks tokens for one sequence; see the module docstring for the order of operations."""

    def __init__(self, params: SamplingParams, vocab_size: int, prompt_ids: Iterable[int] = ()) -> None:
        self.params = params
        self.vocab_size = vocab_size
        seed = None if params.seed is None else int(params.seed) % (1 << 64)
        self.rng = np.random.default_rng(seed)
        self._counts = np.zeros(vocab_size, dtype=np.int32)  # output occurrences, for presence/frequency
        self._seen = np.zeros(vocab_size, dtype=bool)  # prompt + output, for the repetition penalty
        prompt = np.fromiter(prompt_ids, dtype=np.int64)
        self._seen[prompt[(prompt >= 0) & (prompt < vocab_size)]] = True
        self._penalized = (
            params.repetition_penalty != 1.0
            or params.presence_penalty != 0.0
            or params.frequency_penalty != 0.0
        )
        self._bias: np.ndarray | None = None  # dense: one vector add per token, however many entries
        if params.logit_bias:
            ids = np.array([t for t, _ in params.logit_bias], dtype=np.int64)
            if ids.max() >= vocab_size:
                raise ValueError(
                    f"logit_bias names token {ids.max()}, outside the vocabulary of {vocab_size}."
                )
            self._bias = np.zeros(vocab_size, dtype=np.float32)
            np.add.at(self._bias, ids, np.array([b for _, b in params.logit_bias], dtype=np.float32))

    def sample(self, logits: np.ndarray) -> SampleResult:
        """logits: float[vocab] for the next position -> the chosen token (recorded for penalties)."""
        if logits.shape != (self.vocab_size,):
            raise ValueError(f"expected logits of shape ({self.vocab_size},), got {logits.shape}.")
        scores = self._apply_penalties(logits) if self._penalized else logits
        if self._bias is not None:
            scores = scores + self._bias  # a new array: logits may be the engine's buffer
        constraint = self.params.constraint
        if constraint is not None:
            scores = np.where(constraint.allowed(), scores, np.float32(-np.inf))
        token = int(np.argmax(scores)) if self.params.greedy else self._draw(scores)
        if constraint is not None:
            constraint.accept(token)
        self._counts[token] += 1
        self._seen[token] = True
        if self.params.logprobs is None:
            return SampleResult(token)
        return _with_logprobs(token, logits, self.params.logprobs)

    def _apply_penalties(self, logits: np.ndarray) -> np.ndarray:
        p = self.params
        out = logits.astype(np.float32, copy=True)
        if p.repetition_penalty != 1.0:
            seen = np.flatnonzero(self._seen)
            vals = out[seen]
            out[seen] = np.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
        if p.presence_penalty != 0.0 or p.frequency_penalty != 0.0:
            used = np.flatnonzero(self._counts)
            out[used] -= p.frequency_penalty * self._counts[used] + p.presence_penalty
        return out

    def _draw(self, scores: np.ndarray) -> int:
        p = self.params
        ids, vals = _top_k(scores, p.top_k)
        is_sorted = 0 < p.top_k < scores.shape[0]  # _top_k sorts only when it actually cuts
        vals = vals.astype(np.float32) * np.float32(1.0 / p.temperature)
        probs = np.exp(vals - vals.max())  # float32 exp is several times faster; sums are float64
        probs /= probs.sum(dtype=np.float64)
        if p.top_p < 1.0:
            if not is_sorted:  # sort only the head of the distribution, not the whole vocabulary
                order = _nucleus_candidates(probs, p.top_p)
                ids, probs = ids[order], probs[order]
            # smallest prefix whose mass reaches top_p (the most likely token always stays)
            keep = int(np.searchsorted(np.cumsum(probs, dtype=np.float64), p.top_p, side="left")) + 1
            ids, probs = ids[:keep], probs[:keep]
        if p.min_p > 0.0:
            mask = probs >= p.min_p * probs.max()
            ids, probs = ids[mask], probs[mask]
        return int(ids[_inverse_cdf(probs, self.rng.random())])


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, scores) of the k best tokens, best first; all tokens (unsorted) when k is off."""
    n = scores.shape[0]
    if k <= 0 or k >= n:
        return np.arange(n), scores
    part = np.argpartition(-scores, k - 1)[:k]
    order = np.argsort(-scores[part], kind="stable")
    ids = part[order]
    return ids, scores[ids]


_CDF_BLOCK = 256


def _inverse_cdf(probs: np.ndarray, u: float) -> int:
    """Index i where the cumulative mass first exceeds ``u`` times the total (u in [0, 1)).

    numpy's cumsum over a 49152-token vocabulary costs about 1 ms, so the search runs over block
    sums first, then within one block of 256.
    """
    n = probs.shape[0]
    pad = (-n) % _CDF_BLOCK
    padded = np.concatenate([probs, np.zeros(pad, dtype=probs.dtype)]) if pad else probs
    block_cdf = np.cumsum(padded.reshape(-1, _CDF_BLOCK).sum(axis=1, dtype=np.float64))
    target = u * block_cdf[-1]
    b = min(int(np.searchsorted(block_cdf, target, side="right")), block_cdf.shape[0] - 1)
    inner = np.cumsum(padded[b * _CDF_BLOCK : (b + 1) * _CDF_BLOCK], dtype=np.float64)
    offset = block_cdf[b - 1] if b else 0.0
    i = min(b * _CDF_BLOCK + int(np.searchsorted(inner, target - offset, side="right")), n - 1)
    if probs[i] == 0:  # rounding landed on an impossible token: take the last possible one before it
        i = int(np.flatnonzero(probs[: i + 1])[-1]) if probs[: i + 1].any() else int(np.argmax(probs))
    return i


def _nucleus_candidates(probs: np.ndarray, top_p: float) -> np.ndarray:
    """Indices of the most likely tokens, best first, holding at least ``top_p`` of the mass.

    Grows a partial selection (argpartition) instead of sorting the whole vocabulary.
    """
    n = probs.shape[0]
    m = 64
    while m < n:
        head = np.argpartition(-probs, m - 1)[:m]
        if probs[head].sum() >= top_p:
            return head[np.argsort(-probs[head], kind="stable")]
        m *= 4
    return np.argsort(-probs, kind="stable")


def token_logprobs(token: int, logits: np.ndarray, n: int) -> SampleResult:
    """``token`` with its model log-probability under ``logits`` and the ``n`` most likely tokens'."""
    return _with_logprobs(token, logits, n)


def _with_logprobs(token: int, logits: np.ndarray, n: int) -> SampleResult:
    x = logits.astype(np.float32)
    logz = float(x.max()) + math.log(float(np.exp(x - x.max()).sum(dtype=np.float64)))
    top: list[tuple[int, float]] = []
    if n > 0:
        ids, vals = _top_k(x, n)
        top = [(int(i), float(v) - logz) for i, v in zip(ids, vals, strict=True)]
    return SampleResult(token, float(x[token]) - logz, top)


class StopStringMatcher:
    """Cuts streamed text at the first stop string, holding back tails that may start one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False

    def push(self, text: str) -> tuple[str, bool]:
        """Return (text safe to emit now, whether a stop string was reached)."""
        if self.stopped:
            return "", True
        buf = self._held + text
        hits = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            self._held = ""
            self.stopped = True
            return buf[: min(hits)], True
        hold = self._longest_partial_stop(buf)
        self._held = buf[len(buf) - hold :] if hold else ""
        return buf[: len(buf) - hold], False

    def flush(self) -> str:
        """Release the held-back tail (call when the sequence ends for another reason)."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _longest_partial_stop(self, buf: str) -> int:
        best = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(buf)), best, -1):
                if buf.endswith(s[:n]):
                    best = n
                    break
        return best


class TextStream:
    """Turns one sequence's sampled tokens into streamed text and a finish reason."""

    def __init__(
        self, tokenizer: Tokenizer, params: SamplingParams, eog_ids: Iterable[int] | None = None
    ) -> None:
        from cpullm.model.tokenizer import IncrementalDecoder

        self.params = params
        self.decoder = IncrementalDecoder(tokenizer, skip_special=params.skip_special_tokens)
        self.stops = StopStringMatcher(params.stop)
        eog = set(tokenizer.eog_ids if eog_ids is None else eog_ids)
        self.stop_ids = frozenset(set(params.stop_token_ids) | (set() if params.ignore_eos else eog))
        self.n_tokens = 0
        self.finish_reason: FinishReason | None = None

    def push(self, token_id: int) -> tuple[str, FinishReason | None]:
        if self.finish_reason is not None:
            return "", self.finish_reason
        self.n_tokens += 1
        if token_id in self.stop_ids:
            return self._finish("stop", "", self.decoder.flush())
        text, stopped = self.stops.push(self.decoder.push(token_id))
        if stopped:
            self.finish_reason = "stop"
            return text, "stop"
        if self.n_tokens >= self.params.max_tokens:
            return self._finish("length", text, self.decoder.flush())
        return text, None

    def _finish(self, reason: FinishReason, emitted: str, pending: str) -> tuple[str, FinishReason]:
        """End the sequence: ``emitted`` already passed the stop matcher, ``pending`` has not."""
        more, stopped = self.stops.push(pending)
        self.finish_reason = "stop" if stopped else reason
        return emitted + more + self.stops.flush(), self.finish_reason
