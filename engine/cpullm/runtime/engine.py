"""The engine core: requests in, tokens out, one batched native step at a time (continuous batching).

Public API
----------
``Engine(model_path=None, threads=None, kv_cache_gb=None, max_num_seqs=16, max_model_len=None, ...)``
    Loads the model (default: the SmolLM2 GGUF, see :mod:`cpullm.model.default_model`; or a Hugging Face
    folder, quantized at load to ``quantization``), its tokenizer and chat template, and a paged KV cache
    capped at ``kv_cache_gb``.
``Engine.add_request(request_id, prompt_ids, params) -> None``
    Queue a request; raises ``ValueError`` for an empty prompt or one that does not fit the context.
``Engine.step() -> list[StepOutput]``
    One scheduling round: running sequences decode one token each, waiting prompts are prefilled in
    chunks within a token budget, and all of it is one native call. New requests join between steps;
    when the KV cache is full new work waits (and, if a running sequence cannot grow, the newest one is
    preempted and recomputed later) instead of failing. A waiting prompt whose first block is being
    prefilled by another sequence in this step waits one step, then takes those blocks from the prefix
    cache: the n choices of one request (or any burst of requests sharing a system prompt) compute
    their common prefix once. A request with ``params.prompt_logprobs`` is prefilled in full (no
    prefix cache: its logits are needed), in chunks of at most ``PROMPT_LOGPROBS_CHUNK`` tokens so
    the step's logits stay small, and its first output carries ``prompt_logprobs``.
``Engine.embed(prompt_ids) -> float32[d_model]``
    The mean of the prompt tokens' final hidden states (after the final norm), L2-normalised: an
    embedding. Runs the prompt through the model in chunks of ``step_tokens`` in blocks of its own
    (freed at once, never shared through the prefix cache); call it between steps. Raises ``ValueError``
    for a prompt that does not fit, ``OutOfBlocks`` when the running sequences hold the whole cache.
``Engine.abort(request_id)``
    Cancel a request (e.g. a client that disconnected); its KV blocks are freed at once.
``Engine.stats()``
    Running/waiting counts, KV cache use, prefix-cache hits.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cpullm.model.hub import resolve_model
from cpullm.model.model_file import ModelFile
from cpullm.native.runner import NativeModel, SeqChunk
from cpullm.native.threads import default_threads, usable_cores
from cpullm.runtime.kv_blocks import BlockManager, BlockTable, OutOfBlocks
from cpullm.runtime.kv_dtypes import DEFAULT_KV_DTYPE, KV_DTYPES
from cpullm.runtime.sampling import FinishReason, Sampler, SamplingParams, TextStream, token_logprobs

__all__ = ["Engine", "StepOutput", "usable_cores"]

DEFAULT_BLOCK_SIZE = 16
DEFAULT_KV_CACHE_GB = 1.0
DEFAULT_STEP_TOKENS = 512  # prompt tokens prefilled per step, shared by the batch
# Prompt tokens per step of a request that wants prompt logprobs: each costs a logits row (vocab x 4
# bytes, 600 KB at a 152K vocabulary), so 64 bound the step's logits to about 40 MB.
PROMPT_LOGPROBS_CHUNK = 64


@dataclass
class StepOutput:
    request_id: str
    text: str  # new text since the last output of this request
    token_ids: list[int]  # new tokens since the last output
    finished: bool
    finish_reason: FinishReason | str | None
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[dict] = field(default_factory=list)  # per new token: token, logprob, top
    first_token: bool = False  # this output carries the request's first generated token
    # with params.prompt_logprobs, in the first output: None for the first prompt token, then one
    # entry (token, logprob, top) per prompt token
    prompt_logprobs: list[dict | None] | None = None


@dataclass
class _Sequence:
    request_id: str
    prompt: list[int]
    params: SamplingParams
    sampler: Sampler
    stream: TextStream
    arrival: float
    table: BlockTable = field(default_factory=BlockTable)
    output: list[int] = field(default_factory=list)
    computed: int = 0  # tokens whose KV is in the cache
    prompt_logprobs: list[dict | None] = field(default_factory=lambda: [None])

    @property
    def wants_prompt_logprobs(self) -> bool:
        """Prompt logprobs asked for and not all computed yet (they are complete before decoding)."""
        return self.params.prompt_logprobs is not None and len(self.prompt_logprobs) < len(self.prompt)

    @property
    def tokens(self) -> list[int]:
        return self.prompt + self.output

    @property
    def n_prompt_left(self) -> int:
        return len(self.tokens) - self.computed


class Engine:
    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        threads: int | None = None,
        kv_cache_gb: float | None = None,
        max_num_seqs: int = 16,
        max_model_len: int | None = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
        step_tokens: int = DEFAULT_STEP_TOKENS,
        kv_dtype: str = DEFAULT_KV_DTYPE,
        quantization: str | None = None,
    ) -> None:
        # A path, None (the default model) or a Hub reference (org/repo[:QUANT], fetched here).
        self.model_file = ModelFile.open(resolve_model(model_path), quantization)
        self.config = self.model_file.config
        self.tokenizer = self.model_file.tokenizer()
        self.threads = threads or default_threads()
        self.max_model_len = min(max_model_len or self.config.context_length, self.config.context_length)
        self.model = NativeModel(self.model_file, threads=self.threads, context=self.max_model_len)
        if max_num_seqs < 1 or step_tokens < 1:
            raise ValueError("max_num_seqs and step_tokens must be at least 1")
        self.max_num_seqs, self.step_tokens = max_num_seqs, step_tokens
        c = self.config
        if kv_dtype not in KV_DTYPES:
            raise ValueError(f"kv_dtype must be one of {', '.join(KV_DTYPES)}, not {kv_dtype!r}")
        bytes_per_block = 2 * c.n_layers * block_size * c.kv_dim * KV_DTYPES[kv_dtype].bytes_per_value
        gb = DEFAULT_KV_CACHE_GB if kv_cache_gb is None else kv_cache_gb
        n_blocks = int(gb * (1 << 30) // bytes_per_block)
        if n_blocks < -(-self.max_model_len // block_size):
            raise ValueError(
                f"a KV cache of {gb} GB holds {n_blocks * block_size} tokens, less than one sequence of "
                f"max_model_len={self.max_model_len}; raise kv_cache_gb or lower max_model_len"
            )
        self.cache = self.model.new_cache(n_blocks, block_size, kv_dtype)
        self.blocks = BlockManager(n_blocks, block_size)
        self.waiting: deque[_Sequence] = deque()
        self.running: list[_Sequence] = []
        self._by_id: dict[str, _Sequence] = {}

    # ---- requests ----
    def add_request(self, request_id: str, prompt_ids: Sequence[int], params: SamplingParams) -> None:
        if request_id in self._by_id:
            raise ValueError(f"request id {request_id!r} is already in use")
        prompt = self._checked_prompt(prompt_ids)
        seq = _Sequence(
            request_id,
            prompt,
            params,
            Sampler(params, self.config.vocab_size, prompt),
            TextStream(self.tokenizer, params),
            time.monotonic(),
        )
        self._by_id[request_id] = seq
        self.waiting.append(seq)

    def _checked_prompt(self, prompt_ids: Sequence[int]) -> list[int]:
        prompt = [int(t) for t in prompt_ids]
        if not prompt:
            raise ValueError("the prompt is empty; send at least one token")
        bad = [t for t in prompt if not 0 <= t < self.config.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the vocabulary of {self.config.vocab_size}")
        if len(prompt) >= self.max_model_len:
            raise ValueError(
                f"the prompt has {_count(len(prompt), 'token')}, but this model's context is "
                f"{_count(self.max_model_len, 'token')}; shorten the prompt"
            )
        return prompt

    def embed(self, prompt_ids: Sequence[int]) -> np.ndarray:
        prompt = self._checked_prompt(prompt_ids)
        table = BlockTable()
        try:
            self.blocks.ensure(table, len(prompt))
            total = np.zeros(self.config.d_model, dtype=np.float64)
            for pos in range(0, len(prompt), self.step_tokens):
                chunk = prompt[pos : pos + self.step_tokens]
                rows = self.model.hidden(self.cache, [SeqChunk(chunk, pos, table.blocks, len(chunk))])
                total += rows.sum(axis=0, dtype=np.float64)
        finally:
            self.blocks.release(table)
        norm = np.linalg.norm(total)
        return (total / norm if norm > 0 else total).astype(np.float32)

    def abort(self, request_id: str) -> bool:
        """Cancel a request now; its blocks go back at once. False if it is unknown or already done."""
        seq = self._by_id.pop(request_id, None)
        if seq is None:
            return False
        self.blocks.release(seq.table)
        if seq in self.running:
            self.running.remove(seq)
        else:
            self.waiting.remove(seq)
        return True

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def stats(self) -> dict[str, float]:
        return {
            "running": len(self.running),
            "waiting": len(self.waiting),
            "kv_blocks_used": self.blocks.n_used,
            "kv_blocks_total": self.blocks.n_blocks,
            "kv_usage": self.blocks.n_used / self.blocks.n_blocks,
            "prefix_cache_hit_tokens": self.blocks.prefix_hits,
        }

    # ---- scheduling ----
    def _preempt_newest(self) -> None:
        """Free the newest running sequence's blocks; it is recomputed from its tokens later."""
        victim = max(self.running, key=lambda s: s.arrival)
        self.running.remove(victim)
        self.blocks.release(victim.table)
        victim.computed = 0
        self.waiting.appendleft(victim)

    def _schedule(self) -> list[tuple[_Sequence, int]]:
        """Pick (sequence, new tokens) for this step: every running decode first, then prefill chunks."""
        for seq in sorted(self.running, key=lambda s: s.arrival):
            while seq in self.running:
                try:
                    self.blocks.ensure(seq.table, seq.computed + 1)
                    break
                except OutOfBlocks:
                    if len(self.running) == 1:
                        raise RuntimeError(
                            "the KV cache cannot hold a single sequence; raise kv_cache_gb"
                        ) from None
                    self._preempt_newest()
        plan: list[tuple[_Sequence, int]] = [(seq, 1) for seq in self.running]
        budget = self.step_tokens
        heads: set[tuple[int, ...]] = set()  # first blocks of the prompts prefilled from scratch this step
        bs = self.blocks.block_size
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            if seq.computed == 0 and not seq.table.blocks:
                head = tuple(seq.tokens[:bs]) if len(seq.tokens) > bs else None
                if not seq.wants_prompt_logprobs:
                    if head in heads:
                        break  # its prefix is being computed right now: share it from the next step
                    seq.computed = self.blocks.match_prefix(seq.table, seq.tokens)
                if head is not None and seq.computed < (len(seq.tokens) - 1) // bs * bs:
                    heads.add(head)  # it computes full blocks that the next prompts may share
            n = min(seq.n_prompt_left, budget)
            if seq.wants_prompt_logprobs:
                n = min(n, PROMPT_LOGPROBS_CHUNK)
            try:
                self.blocks.ensure(seq.table, seq.computed + n)
            except OutOfBlocks:
                # The cache is full: this prompt waits, and holds no blocks while it waits (not even
                # the shared prefix blocks match_prefix just took), so running sequences can grow.
                self.blocks.release(seq.table)
                seq.computed = 0
                break
            plan.append((seq, n))
            budget -= n
            if n == seq.n_prompt_left:  # whole prompt scheduled: decoding from the next step
                self.waiting.popleft()
                self.running.append(seq)
            else:
                break  # the budget ran out inside this prompt; continue it next step
        return plan

    def step(self) -> list[StepOutput]:
        plan = self._schedule()
        if not plan:
            return []
        batch = []
        for seq, n in plan:
            toks = seq.tokens[seq.computed : seq.computed + n]
            wants = 1 if seq.computed + n == len(seq.tokens) else 0
            if seq.wants_prompt_logprobs:
                wants = n  # every position: each predicts the next prompt token (the last, the first output)
            batch.append(SeqChunk(toks, seq.computed, seq.table.blocks, wants))
        logits = self.model.step(self.cache, batch)
        outputs, row = [], 0
        for (seq, n), chunk in zip(plan, batch, strict=True):
            if seq.wants_prompt_logprobs:
                row += self._record_prompt_logprobs(seq, seq.computed, logits[row : row + chunk.n_logits])
            seq.computed += n
            self.blocks.register_full(seq.table, seq.tokens[: seq.computed])
            if seq.computed == len(seq.tokens):
                outputs.append(self._emit(seq, logits[row]))
                row += 1
        return outputs

    def _record_prompt_logprobs(self, seq: _Sequence, pos0: int, rows: np.ndarray) -> int:
        """Log-probabilities of the prompt tokens that the rows of a chunk starting at ``pos0``
        predict (row i predicts token pos0 + i + 1); returns the rows that were not the last
        position's. Tokens already recorded (a chunk recomputed after it had to wait) are skipped."""
        n = min(len(rows), len(seq.prompt) - pos0 - 1)
        top = seq.params.prompt_logprobs or 0
        for i in range(n):
            index = pos0 + i + 1
            if index == len(seq.prompt_logprobs):
                r = token_logprobs(seq.prompt[index], rows[i], top)
                seq.prompt_logprobs.append({"token": r.token_id, "logprob": r.logprob, "top": r.top_logprobs})
        return n

    def _emit(self, seq: _Sequence, logits: np.ndarray) -> StepOutput:
        result = seq.sampler.sample(logits)
        seq.output.append(result.token_id)
        text, reason = seq.stream.push(result.token_id)
        if reason is None and len(seq.tokens) >= self.max_model_len:
            reason = "length"
        logprobs = []
        if result.logprob is not None:
            logprobs.append({"token": result.token_id, "logprob": result.logprob, "top": result.top_logprobs})
        finished = reason is not None
        if finished:
            self._finish(seq)
        first = len(seq.output) == 1
        return StepOutput(
            seq.request_id,
            text,
            [result.token_id],
            finished,
            reason,
            len(seq.prompt),
            len(seq.output),
            logprobs,
            first_token=first,
            prompt_logprobs=seq.prompt_logprobs if first and seq.params.prompt_logprobs is not None else None,
        )

    def _finish(self, seq: _Sequence) -> None:
        self.running.remove(seq)
        self.blocks.release(seq.table)
        self._by_id.pop(seq.request_id, None)


def _count(n: int, noun: str) -> str:
    """'1 token', '2 tokens'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
