"""The Python API users know: ``LLM(path).generate(prompts, params)``, ``.chat(...)`` and streaming.

Example::

    from cpullm import LLM, SamplingParams
    llm = LLM()  # the default SmolLM2-135M-Instruct model
    out = llm.chat([{"role": "user", "content": "What is the capital of France?"}],
                   SamplingParams(temperature=0, max_tokens=32))
    print(out[0].text)
    for piece in llm.stream_chat([{"role": "user", "content": "Tell me a joke"}]):
        print(piece, end="", flush=True)

Several prompts passed to ``generate`` run together in one continuous batch.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cpullm.model.chat_template import ChatTemplate
from cpullm.runtime.engine import Engine
from cpullm.runtime.sampling import SamplingParams

Messages = Sequence[Mapping[str, Any]]
Prompt = str | Sequence[int]


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    finish_reason: str | None
    prompt_tokens: int
    logprobs: list[dict] = field(default_factory=list)

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)


class LLM:
    def __init__(self, model: str | os.PathLike[str] | None = None, **engine_options: Any) -> None:
        """Load ``model`` (a GGUF path, or a Hugging Face folder; default SmolLM2-135M-Instruct). Options go
        to :class:`Engine`, e.g. ``quantization="q4_0"`` for a folder's weights (default q8_0)."""
        self.engine = Engine(model, **engine_options)
        self.tokenizer = self.engine.tokenizer
        self._ids = itertools.count()

    @functools.cached_property
    def chat_template(self) -> ChatTemplate:
        """The model's chat template, compiled on first chat use: a file whose template is broken still
        serves plain completions, and its chat calls raise the ChatTemplateError naming the fault."""
        return ChatTemplate.from_gguf(self.engine.model_file.gguf, self.tokenizer)

    # ---- prompts ----
    def encode(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt, add_special=True, parse_special=True)
        return [int(t) for t in prompt]

    def encode_chat(self, messages: Messages) -> list[int]:
        return self.chat_template.encode(self.tokenizer, messages, add_generation_prompt=True)

    # ---- batch generation ----
    def generate(
        self, prompts: Prompt | Sequence[Prompt], params: SamplingParams | None = None
    ) -> list[Completion]:
        """Complete each prompt (text, or token ids); all run in one continuous batch."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]  # type: ignore[list-item]
        return self._run([self.encode(p) for p in prompts], params or SamplingParams())  # type: ignore[union-attr]

    def chat(
        self, messages: Messages | Sequence[Messages], params: SamplingParams | None = None
    ) -> list[Completion]:
        """Answer one conversation (a list of messages) or several (a list of such lists)."""
        conversations = [messages] if messages and isinstance(messages[0], Mapping) else messages
        return self._run([self.encode_chat(m) for m in conversations], params or SamplingParams())  # type: ignore[arg-type]

    def _run(self, prompt_ids: list[list[int]], params: SamplingParams) -> list[Completion]:
        ids = [f"llm-{next(self._ids)}" for _ in prompt_ids]
        results = {i: Completion("", [], None, len(p)) for i, p in zip(ids, prompt_ids, strict=True)}
        try:
            for request_id, prompt in zip(ids, prompt_ids, strict=True):
                self.engine.add_request(request_id, prompt, params)
            while self.engine.has_work():
                for out in self.engine.step():
                    done = results[out.request_id]
                    done.text += out.text
                    done.token_ids += out.token_ids
                    done.logprobs += out.logprobs
                    done.finish_reason = out.finish_reason
        finally:
            for request_id in ids:
                self.engine.abort(request_id)  # no-op for finished requests; frees blocks on error
        return [results[i] for i in ids]

    # ---- streaming ----
    def stream(self, prompt: Prompt, params: SamplingParams | None = None) -> Iterator[str]:
        """Yield the completion's text as it is produced."""
        yield from self._stream(self.encode(prompt), params or SamplingParams())

    def stream_chat(self, messages: Messages, params: SamplingParams | None = None) -> Iterator[str]:
        yield from self._stream(self.encode_chat(messages), params or SamplingParams())

    def _stream(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[str]:
        request_id = f"llm-{next(self._ids)}"
        self.engine.add_request(request_id, prompt_ids, params)
        try:
            while self.engine.has_work():
                for out in self.engine.step():
                    if out.request_id != request_id:
                        continue
                    if out.text:
                        yield out.text
                    if out.finished:
                        return
        finally:
            self.engine.abort(request_id)  # the caller stopped iterating early: free the blocks
