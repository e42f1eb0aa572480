"""The OpenAI routes: ``/models``, ``/completions``, ``/chat/completions`` (mounted under ``/v1`` and
``/openai/v1``), plain JSON or Server-Sent Events.

Tokenization and chat-template rendering run here, in a worker thread of the handler, never on the
event loop nor the engine thread. A prompt that does not fit the context, or a ``max_tokens`` that
would overflow it, is a 400 with the numbers; a text far too long for the context is refused from its
length before it is tokenized (:mod:`.prompt_limits`). Streams end with ``data: [DONE]``; with
``stream_options.include_usage`` a last chunk carries the usage and no choices, as OpenAI sends it.

Several choices (``n``, ``best_of``, several prompts) are one engine sequence each; choice ``i * n + j``
is prompt ``i``'s ``j``-th, and the engine's prefix cache shares the prompt's full KV blocks among
them. ``best_of`` ranks its candidates by the sum of their tokens' logprobs and returns the best
``n``. ``echo`` puts the prompt before the completion (in a stream: in each choice's first chunk);
with ``logprobs`` it brings the prompt tokens' logprobs too (the first token's is null), computed
at prefill by every choice's sequence (such prompts do not use the prefix cache).

Output constraints (``response_format``, ``structured_outputs``, ``guided_*``) become one llguidance
grammar per request, a state per sequence. With ``tools`` (:mod:`.tool_request`), the chat template gets
them (:mod:`.tool_calls`), a ``required`` or named ``tool_choice`` becomes a grammar in the model's
tool-call format, and each choice's text is parsed into ``tool_calls`` (streamed: :class:`CallStream`).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from cpullm.model.chat_template import ChatTemplate, ChatTemplateError
from cpullm.model.tokenizer import Tokenizer
from cpullm.runtime.engine import Engine, StepOutput
from cpullm.runtime.sampling import SamplingParams
from cpullm.runtime.structured import Constraint, Grammar, GrammarError, Grammars

from .async_engine import AsyncEngine
from .auth import require_api_key
from .errors import APIError, bad_request
from .generation import ChoiceResult, Generation
from .prompt_limits import ContextBoundTokenizer, max_bytes_per_token
from .schemas import COMPLETIONS_DEFAULT_MAX_TOKENS, MAX_CHOICES, ChatCompletionRequest, CompletionRequest
from .structured_request import StructuredSpec
from .tool_calls import (
    FORMATS,
    CallStream,
    ToolFormat,
    fallback_messages,
    openai_calls,
    template_messages,
    template_renders_tools,
)
from .tool_request import ToolPlan

DISCONNECT_POLL_S = 0.25  # how often a non-streaming request checks that its client is still there


@dataclass
class ModelContext:
    """What the handlers need once the model is loaded."""

    tokenizer: Tokenizer
    chat_template: ChatTemplate | None
    chat_template_error: str | None
    max_model_len: int
    vocab_size: int
    bytes_per_token: int | None  # the most text bytes one token covers (None: unbounded)
    grammars: Grammars
    tool_format: ToolFormat = FORMATS["hermes"]
    template_renders_tools: bool = False  # else tools reach it as text (tool_calls.fallback_messages)

    @classmethod
    def from_engine(cls, engine: Engine) -> ModelContext:
        template, error = None, None
        metadata = engine.model_file.gguf.metadata
        try:
            template = ChatTemplate.from_gguf(engine.model_file.gguf, engine.tokenizer)
        except ChatTemplateError as e:
            error = str(e)
        bound = max_bytes_per_token(engine.tokenizer, metadata.get("tokenizer.ggml.pre"))
        vocab = engine.config.vocab_size
        grammars = Grammars(engine.tokenizer, vocab)
        source = template.source if template is not None and not template.is_fallback else None
        renders = template_renders_tools(source)
        fmt = ToolFormat.for_template(source) if renders else FORMATS["hermes"]
        return cls(
            engine.tokenizer, template, error, engine.max_model_len, vocab, bound, grammars, fmt, renders
        )

    def prompt_tokenizer(self, param: str) -> ContextBoundTokenizer:
        return ContextBoundTokenizer(self.tokenizer, self.max_model_len, self.bytes_per_token, param)


@dataclass
class ServerState:
    served_model_name: str
    engine: AsyncEngine
    context: ModelContext | None = None


router = APIRouter(dependencies=[Depends(require_api_key)])


def _state(request: Request) -> ServerState:
    return request.app.state.server  # type: ignore[no-any-return]


def _ready_context(state: ServerState, model: str | None) -> ModelContext:
    if model is not None and model != state.served_model_name:
        raise APIError(
            404,
            f"The model '{model}' does not exist; this server serves '{state.served_model_name}'.",
            param="model",
            code="model_not_found",
        )
    if state.engine.state == "failed":
        raise APIError(503, f"The model failed to load: {state.engine.load_error}", code="model_load_failed")
    if state.context is None:
        raise APIError(
            503, "The model is still loading; retry when /health answers 200.", code="model_loading"
        )
    return state.context


def _model_card(state: ServerState) -> dict[str, Any]:
    card: dict[str, Any] = {
        "id": state.served_model_name,
        "object": "model",
        "created": 0,
        "owned_by": "cpullm",
    }
    if state.context is not None:
        card["max_model_len"] = state.context.max_model_len
    return card


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": [_model_card(_state(request))]}


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    state = _state(request)
    if model_id != state.served_model_name:
        raise APIError(404, f"The model '{model_id}' does not exist.", param="model", code="model_not_found")
    return _model_card(state)


# ---- prompts and limits ----
def _max_tokens(requested: int | None, prompt_len: int, max_model_len: int, default: int | None) -> int:
    room = max_model_len - prompt_len
    if room < 1:
        raise bad_request(
            f"This model's maximum context length is {max_model_len} tokens, but the prompt has "
            f"{prompt_len} token{'' if prompt_len == 1 else 's'}; shorten the prompt.",
            param="prompt",
            code="context_length_exceeded",
        )
    if requested is None:
        return min(default, room) if default is not None else room
    if requested >= 1 and prompt_len + requested > max_model_len:
        raise bad_request(
            f"This model's maximum context length is {max_model_len} tokens; you asked for "
            f"{prompt_len + requested} ({prompt_len} in the prompt, {requested} for the completion). "
            "Lower max_tokens or shorten the prompt.",
            param="max_tokens",
            code="context_length_exceeded",
        )
    return requested


def _check_token_ids(ids: list[int], vocab_size: int) -> list[int]:
    bad = [t for t in ids if not 0 <= t < vocab_size]
    if bad:
        raise bad_request(f"Token id {bad[0]} in the prompt is outside the vocabulary (0..{vocab_size - 1}).")
    if not ids:
        raise bad_request("The prompt is empty; send some text.", param="prompt")
    return ids


def _encode_completion_prompts(
    ctx: ModelContext, prompts: list[str | list[int]], echo: bool
) -> tuple[list[list[int]], list[str]]:
    """The prompts' token ids and, with ``echo``, their texts (token-id prompts decoded)."""
    out, texts = [], []
    tokenizer = ctx.prompt_tokenizer("prompt")
    for p in prompts:
        if isinstance(p, str):
            ids = tokenizer.encode(p, add_special=True, parse_special=True) if p else []
            out.append(_check_token_ids(ids, ctx.vocab_size))
        else:
            out.append(_check_token_ids(list(p), ctx.vocab_size))
        if echo:
            texts.append(p if isinstance(p, str) else ctx.tokenizer.decode(out[-1]))
    return out, texts


def _encode_chat(ctx: ModelContext, body: ChatCompletionRequest) -> list[int]:
    if ctx.chat_template is None:
        raise bad_request(
            f"This model's chat template cannot be used ({ctx.chat_template_error}); "
            "use /v1/completions instead."
        )
    messages = [m.as_template_message(i) for i, m in enumerate(body.messages)]
    plan = body.tool_plan()
    extra: dict[str, Any] = {}
    if ctx.template_renders_tools:
        messages = template_messages(messages)
        if plan is not None:
            extra["tools"] = plan.tools
    else:
        messages = fallback_messages(messages, plan.tools if plan is not None else None)
    tokenizer: Any = ctx.prompt_tokenizer("messages")  # duck-types Tokenizer
    try:
        ids = ctx.chat_template.encode(tokenizer, messages, body.add_generation_prompt is not False, **extra)
    except ChatTemplateError as e:
        raise bad_request(str(e), param="messages") from e
    return _check_token_ids(ids, ctx.vocab_size)


def _compile(ctx: ModelContext, spec: StructuredSpec) -> Grammar:
    g = ctx.grammars
    if spec.kind == "json":
        return g.compile_json_schema(spec.value)
    if spec.kind == "regex":
        return g.compile_regex(spec.value)
    if spec.kind == "choice":
        return g.compile_choice(spec.value)
    return g.compile_lark(spec.value)


def _constraints(ctx: ModelContext, spec: StructuredSpec | None, n: int) -> list[Constraint | None]:
    """One grammar state per sequence (compiled here, in a worker thread)."""
    if spec is None:
        return [None] * n
    try:
        grammar = _compile(ctx, spec)
    except GrammarError as e:
        raise bad_request(f"The {spec.param} cannot be used: {e}", param=spec.param) from e
    return [grammar.constraint() for _ in range(n)]


def _tool_constraint(ctx: ModelContext, plan: ToolPlan | None) -> StructuredSpec | None:
    """A required or named tool choice as a grammar in the model's own tool-call format."""
    if plan is None or not plan.forced:
        return None
    return StructuredSpec("grammar", ctx.tool_format.call_grammar(plan.forced, plan.parallel), "tools")


# ---- logprobs in OpenAI's two formats ----
def _token_text(tok: Tokenizer, token_id: int) -> str:
    return tok.token_bytes(token_id).decode("utf-8", errors="replace")


def _completion_logprobs(tok: Tokenizer, entries: list[dict], text_offset: int) -> dict[str, Any]:
    tokens, lps, tops, offsets = [], [], [], []
    for e in entries:
        text = _token_text(tok, e["token"])
        tokens.append(text)
        lps.append(e["logprob"])
        tops.append(None if e["top"] is None else {_token_text(tok, t): lp for t, lp in e["top"]})
        offsets.append(text_offset)
        text_offset += len(text)
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}


def _prompt_entries(prompt: list[int], prompt_logprobs: list[dict | None] | None) -> list[dict]:
    """The echoed prompt's logprob entries: the first token has none (nothing predicts it)."""
    first = {"token": prompt[0], "logprob": None, "top": None}
    return [first, *(e for e in (prompt_logprobs or [])[1:] if e is not None)]


def _chat_logprobs(tok: Tokenizer, entries: list[dict]) -> dict[str, Any]:
    def item(token_id: int, logprob: float) -> dict[str, Any]:
        raw = tok.token_bytes(token_id)
        return {"token": raw.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(raw)}

    return {
        "content": [
            {**item(e["token"], e["logprob"]), "top_logprobs": [item(t, lp) for t, lp in e["top"]]}
            for e in entries
        ]
    }


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


# ---- running a generation ----
async def _start(
    state: ServerState, request: Request, prompts: list[list[int]], params: list[SamplingParams]
) -> Generation:
    if await request.is_disconnected():  # it left while its prompt was tokenized: start nothing
        raise APIError(499, "The client closed the connection.")
    gen = Generation(state.engine, prompts, params)
    await gen.start()
    return gen


async def _collect_unless_disconnected(gen: Generation, request: Request) -> list[ChoiceResult]:
    """Wait for the whole answer; if the client goes away first, abort (frees its KV blocks)."""
    task = asyncio.ensure_future(gen.collect())
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise APIError(499, "The client closed the connection.")
    finally:
        if not task.done():
            task.cancel()
        gen.close()


class SSEResponse(StreamingResponse):
    """A stream that aborts its requests however it ends: finished, failed, or the client left
    (even before the first byte, when the generator never started and its own cleanup cannot run)."""

    def __init__(self, content: AsyncIterator[str], gen: Generation) -> None:
        super().__init__(content, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self._content = content
        self._gen = gen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._gen.close()
            aclose: Callable[[], Any] | None = getattr(self._content, "aclose", None)
            if aclose is not None:
                await aclose()


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


def _stream_error(e: Exception) -> str:
    return _sse(APIError(500, f"Generation failed: {e}", type="server_error").body())


# ---- /completions ----
@router.post("/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request) -> JSONResponse | SSEResponse:
    state = _state(request)
    ctx = _ready_context(state, body.model)
    body.check_supported()
    texts, k, n = body.prompts(), body.candidates, body.choices
    if len(texts) * k > MAX_CHOICES:
        raise bad_request(
            f"{len(texts)} prompts times {k} choices each is {len(texts) * k} sequences; at most "
            f"{MAX_CHOICES} are allowed in one request. Send fewer prompts or a smaller n/best_of.",
            param="best_of" if k > n else "n",
        )
    prompts, echoes = await asyncio.to_thread(_encode_completion_prompts, ctx, texts, bool(body.echo))
    ranked = k > n
    want_logprobs = body.logprobs is not None
    logprobs = 0 if ranked and not want_logprobs else body.logprobs  # best_of ranks by logprobs
    prompt_logprobs = body.logprobs if body.echo else None
    constraints = await asyncio.to_thread(_constraints, ctx, body.structured(), len(prompts) * k)
    seq_prompts, params = [], []
    for p in prompts:
        max_tokens = _max_tokens(body.max_tokens, len(p), ctx.max_model_len, COMPLETIONS_DEFAULT_MAX_TOKENS)
        for j in range(k):
            constraint = constraints[len(params)]
            seq_prompts.append(p)
            params.append(
                body.sampling_params(max_tokens, logprobs, ctx.vocab_size, j, prompt_logprobs, constraint)
            )
    gen = await _start(state, request, seq_prompts, params)
    response_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    head = {
        "id": response_id,
        "object": "text_completion",
        "created": created,
        "model": state.served_model_name,
    }
    prompt_tokens = sum(len(p) for p in prompts)
    if body.stream:
        stream = _completion_stream(gen, ctx, head, want_logprobs, body.include_usage, prompt_tokens, echoes)
        return SSEResponse(stream, gen)
    results = await _collect_unless_disconnected(gen, request)
    choices = []
    for i, p in enumerate(prompts):
        group = results[i * k : (i + 1) * k]
        if ranked:
            group = sorted(group, key=lambda r: r.cumulative_logprob, reverse=True)[:n]
        for j, r in enumerate(group):
            text, entries = r.text, r.logprobs
            if echoes:
                text = echoes[i] + text
                entries = _prompt_entries(p, r.prompt_logprobs) + entries if want_logprobs else entries
            choices.append(
                {
                    "index": i * n + j,
                    "text": text,
                    "logprobs": _completion_logprobs(ctx.tokenizer, entries, 0) if want_logprobs else None,
                    "finish_reason": r.finish_reason,
                }
            )
    usage = _usage(prompt_tokens, sum(len(r.token_ids) for r in results))
    return JSONResponse({**head, "choices": choices, "usage": usage})


async def _completion_stream(
    gen: Generation,
    ctx: ModelContext,
    head: dict[str, Any],
    want_logprobs: bool,
    include_usage: bool,
    prompt_tokens: int,
    echoes: list[str],
) -> AsyncIterator[str]:
    """Streamed completions are never ranked (best_of > n is refused), so sequence = choice index."""
    offsets = [0] * len(gen.prompts)
    per_prompt = len(gen.prompts) // max(len(echoes), 1)
    echoed: set[int] = set()
    completion_tokens = 0
    try:
        async for index, out in gen.outputs():
            completion_tokens += len(out.token_ids)
            text, entries = out.text, out.logprobs
            if echoes and index not in echoed:  # the choice's first chunk carries the prompt
                echoed.add(index)
                text = echoes[index // per_prompt] + text
                if want_logprobs:
                    entries = _prompt_entries(gen.prompts[index], out.prompt_logprobs) + entries
            logprobs = None
            if want_logprobs:
                logprobs = _completion_logprobs(ctx.tokenizer, entries, offsets[index])
            offsets[index] += len(text)
            if text or out.finished or logprobs:
                choice = {"index": index, "text": text, "logprobs": logprobs,
                          "finish_reason": str(out.finish_reason) if out.finished else None}  # fmt: skip
                yield _sse({**head, "choices": [choice]})
        if include_usage:
            yield _sse({**head, "choices": [], "usage": _usage(prompt_tokens, completion_tokens)})
        yield "data: [DONE]\n\n"
    except Exception as e:
        yield _stream_error(e)
    finally:
        gen.close()


# ---- /chat/completions ----
@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> JSONResponse | SSEResponse:
    state = _state(request)
    ctx = _ready_context(state, body.model)
    body.check_supported()
    prompt = await asyncio.to_thread(_encode_chat, ctx, body)
    max_tokens = _max_tokens(body.requested_max_tokens(), len(prompt), ctx.max_model_len, None)
    n = body.choices
    logprobs = body.requested_logprobs()
    plan = body.tool_plan()
    if plan is not None and ctx.tool_format.keep_special_tokens:
        body.skip_special_tokens = False  # the calls' marker is a control token
    spec = _tool_constraint(ctx, plan) or body.structured()
    constraints = await asyncio.to_thread(_constraints, ctx, spec, n)
    params = [
        body.sampling_params(max_tokens, logprobs, ctx.vocab_size, j, constraint=c)
        for j, c in enumerate(constraints)
    ]
    gen = await _start(state, request, [prompt] * n, params)
    response_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    want_logprobs = bool(body.logprobs)
    if body.stream:
        head = {"id": response_id, "object": "chat.completion.chunk", "created": created,
                "model": state.served_model_name}  # fmt: skip
        return SSEResponse(_chat_stream(gen, ctx, head, want_logprobs, body.include_usage, plan), gen)
    results = await _collect_unless_disconnected(gen, request)
    choices = []
    for j, r in enumerate(results):
        message: dict[str, Any] = {"role": "assistant", "content": r.text}
        finish = r.finish_reason
        if plan is not None:
            content, calls = ctx.tool_format.parse_output(r.text)
            if calls:
                calls = calls if plan.parallel else calls[:1]
                message = {
                    "role": "assistant",
                    "content": content,
                    "tool_calls": openai_calls(ctx.tool_format, calls),
                }
                finish = "tool_calls"
        choices.append(
            {
                "index": j,
                "message": message,
                "logprobs": _chat_logprobs(ctx.tokenizer, r.logprobs) if want_logprobs else None,
                "finish_reason": finish,
            }
        )
    return JSONResponse(
        {
            "id": response_id,
            "object": "chat.completion",
            "created": created,
            "model": state.served_model_name,
            "choices": choices,
            "usage": _usage(len(prompt), sum(len(r.token_ids) for r in results)),
        }
    )


async def _chat_stream(
    gen: Generation,
    ctx: ModelContext,
    head: dict[str, Any],
    want_logprobs: bool,
    include_usage: bool,
    plan: ToolPlan | None,
) -> AsyncIterator[str]:
    def chunk(index: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> str:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return _sse({**head, "choices": [choice]})

    completion_tokens = 0
    calls = None if plan is None else [CallStream(ctx.tool_format, plan.parallel) for _ in gen.prompts]
    try:
        for index in range(len(gen.prompts)):
            yield chunk(index, {"role": "assistant", "content": ""})
        out: StepOutput
        async for index, out in gen.outputs():
            completion_tokens += len(out.token_ids)
            logprobs = _chat_logprobs(ctx.tokenizer, out.logprobs) if want_logprobs else None
            if calls is None:
                deltas = [{"content": out.text}] if out.text else []
            else:
                deltas = calls[index].feed(out.text, out.finished)
            if logprobs and not deltas:
                deltas = [{"content": ""}]
            for d, delta in enumerate(deltas):
                yield chunk(index, delta, logprobs=logprobs if d == 0 else None)
            if out.finished:
                called = calls is not None and calls[index].called
                yield chunk(index, {}, finish="tool_calls" if called else str(out.finish_reason))
        if include_usage:
            yield _sse({**head, "choices": [], "usage": _usage(len(gen.prompts[0]), completion_tokens)})
        yield "data: [DONE]\n\n"
    except Exception as e:
        yield _stream_error(e)
    finally:
        gen.close()
