"""Prefill and decode speed of the native model, measured the way llama-bench does.

Public API
----------
``ModelBench(model, n_ctx, depth=0, tokens=None, kv_dtype="f16")``
    Owns one KV cache of ``n_ctx`` tokens for ``model`` (a :class:`NativeModel`; no scheduler, no sampler:
    it measures the engine's forward pass and its Python binding only). With ``depth`` > 0 the first
    ``depth`` positions are filled once, untimed, and every test runs after them (llama-bench's ``-d``):
    attention then reads that context as in a long conversation.
``ModelBench.prefill(n) -> seconds``
    ppN: one native step of ``n`` prompt tokens at positions ``depth ..``, logits of the last.
``ModelBench.decode(n) -> seconds``
    tgN: ``n`` single-token steps from position ``depth`` (at depth 0, after an untimed prompt of
    ``DECODE_PROMPT_TOKENS`` tokens).
``summarize(samples) -> dict``
    ``median``, ``mean``, ``stddev`` (sample), ``min``, ``max`` and the ``samples`` themselves.
``peak_rss_bytes() -> int``
    This process's peak resident set size so far.

Tokens are fixed pseudo-random ids (seed 0), so every run and every engine sees the same input. Tests
overwrite only positions from ``depth`` on, and attention reads only positions written before it, so
reusing the cache repeats the same work every repetition.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from typing import Any

import numpy as np

from cpullm.native.runner import NativeModel, SeqChunk
from cpullm.runtime.kv_dtypes import DEFAULT_KV_DTYPE

DECODE_PROMPT_TOKENS = 8
BLOCK_SIZE = 16


def bench_tokens(n: int, vocab_size: int, seed: int = 0) -> list[int]:
    """``n`` token ids drawn uniformly from the vocabulary, the same for a given seed."""
    return [int(t) for t in np.random.default_rng(seed).integers(0, vocab_size, size=n)]


def summarize(samples: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(samples),
        "mean": statistics.fmean(samples),
        "stddev": statistics.stdev(samples) if len(samples) > 1 else 0.0,
        "min": min(samples),
        "max": max(samples),
        "samples": list(samples),
    }


def peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB


class ModelBench:
    def __init__(
        self,
        model: NativeModel,
        n_ctx: int,
        depth: int = 0,
        tokens: list[int] | None = None,
        kv_dtype: str = DEFAULT_KV_DTYPE,
    ) -> None:
        self.model = model
        self.n_ctx = n_ctx
        self.depth = depth
        n_blocks = -(-n_ctx // BLOCK_SIZE)
        self.cache = model.new_cache(n_blocks, BLOCK_SIZE, kv_dtype)
        self.table = list(range(n_blocks))
        self.tokens = tokens if tokens is not None else bench_tokens(n_ctx, model.config.vocab_size)
        self._check_fits(depth)
        if depth:  # the shared context, once (the native step runs a long prompt as passes itself)
            self.model.step(self.cache, [SeqChunk(self.tokens[:depth], 0, self.table, 1)])

    def _check_fits(self, n: int) -> None:
        if n > self.n_ctx:
            raise ValueError(f"{n} tokens do not fit the benchmark's context of {self.n_ctx}")

    def prefill(self, n: int) -> float:
        d = self.depth
        self._check_fits(d + n)
        start = time.perf_counter()
        self.model.step(self.cache, [SeqChunk(self.tokens[d : d + n], d, self.table, 1)])
        return time.perf_counter() - start

    def decode(self, n: int) -> float:
        p = self.depth
        if p == 0:
            p = DECODE_PROMPT_TOKENS
            self.model.step(self.cache, [SeqChunk(self.tokens[:p], 0, self.table, 1)])
        self._check_fits(p + n)
        start = time.perf_counter()
        for pos in range(p, p + n):
            self.model.step(self.cache, [SeqChunk(self.tokens[pos : pos + 1], pos, self.table, 1)])
        return time.perf_counter() - start
