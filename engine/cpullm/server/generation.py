"""One HTTP request's generation: its prompts (one per choice) submitted to the engine, outputs back.

``Generation.start()`` submits every prompt and waits until the engine accepted them all (a
``ValueError`` from the engine becomes a 400 before any byte of the answer is sent).
``outputs()`` yields ``(choice index, StepOutput)`` until every choice finished, and records time to
first token and inter-token latency. ``close()`` aborts whatever has not finished: call it in a
``finally`` so a client that disconnects frees its KV blocks at once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from cpullm.runtime.engine import StepOutput
from cpullm.runtime.sampling import SamplingParams

from .async_engine import AsyncEngine
from .errors import bad_request


@dataclass
class ChoiceResult:
    """A finished choice, for non-streaming answers."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[dict] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    prompt_logprobs: list[dict | None] | None = None

    @property
    def cumulative_logprob(self) -> float:
        """Sum of the generated tokens' logprobs (needs logprobs asked for), to rank best_of choices."""
        return sum(e["logprob"] for e in self.logprobs)


class Generation:
    def __init__(self, engine: AsyncEngine, prompts: list[list[int]], params: list[SamplingParams]) -> None:
        self.engine = engine
        self.metrics = engine.metrics
        self.prompts = prompts
        self.params = params
        self.request_ids = [f"req-{uuid.uuid4().hex}" for _ in prompts]
        self.queue: asyncio.Queue[tuple[int, StepOutput | Exception]] = asyncio.Queue()
        self.arrival = time.monotonic()
        self._open = set(range(len(prompts)))
        self._last_token_at: dict[int, float] = {}

    async def start(self) -> None:
        accepted = [
            self.engine.submit(rid, prompt, p, self.queue, index)  # type: ignore[arg-type]
            for index, (rid, prompt, p) in enumerate(
                zip(self.request_ids, self.prompts, self.params, strict=True)
            )
        ]
        try:
            outcomes = await asyncio.gather(*accepted, return_exceptions=True)
        except BaseException:  # cancelled: the client left while waiting
            self.close()
            raise
        errors = [e for e in outcomes if isinstance(e, BaseException)]
        if errors:
            self.close()
            if isinstance(errors[0], ValueError):
                raise bad_request(str(errors[0]), param="prompt", code="invalid_prompt") from errors[0]
            raise errors[0]

    async def outputs(self) -> AsyncIterator[tuple[int, StepOutput]]:
        while self._open:
            index, out = await self.queue.get()
            if isinstance(out, Exception):
                self._open.discard(index)
                raise out
            now = time.monotonic()
            if out.token_ids:
                last = self._last_token_at.get(index)
                if last is None:
                    self.metrics.ttft.observe(now - self.arrival)
                else:
                    self.metrics.itl.observe((now - last) / len(out.token_ids))
                self._last_token_at[index] = now
            if out.finished:
                self._open.discard(index)
                self.metrics.e2e.observe(now - self.arrival)
            yield index, out

    async def collect(self) -> list[ChoiceResult]:
        results = [ChoiceResult() for _ in self.prompts]
        async for index, out in self.outputs():
            r = results[index]
            r.text += out.text
            r.token_ids += out.token_ids
            r.logprobs += out.logprobs
            r.prompt_tokens = out.prompt_tokens
            if out.prompt_logprobs is not None:
                r.prompt_logprobs = out.prompt_logprobs
            if out.finished:
                r.finish_reason = str(out.finish_reason)
        return results

    def close(self) -> None:
        """Abort every choice that has not finished (no-op for finished ones)."""
        for index in sorted(self._open):
            self.engine.abort(self.request_ids[index])
        self._open.clear()
