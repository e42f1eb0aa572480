"""vLLM's tokenizer routes, ``/tokenize`` and ``/detokenize`` (at the root, as vLLM serves them, and
under ``/v1`` and ``/openai/v1``), and ``/version``.

``/tokenize`` takes ``{"prompt": text, "add_special_tokens": true}`` or ``{"messages": [...],
"add_generation_prompt": true, "tools": [...]}`` and answers ``{"count", "max_model_len", "tokens"}`` (plus
``token_strs``, the vocabulary's pieces, with ``return_token_strs``). The messages form gives the very
ids ``/chat/completions`` feeds the model (the chat template and the model's BOS setting decide the
special tokens; ``add_special_tokens: true`` makes sure the BOS token leads). A text that cannot fit
the context is refused from its length, as on the generation routes, so no request tokenizes
megabytes. ``/detokenize`` takes ``{"tokens": [ids]}`` and answers ``{"prompt": text}``; ids outside
the vocabulary are a 400. Both need the API key when one is set; ``/version`` does not.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request

from cpullm import __version__

from .auth import require_api_key
from .errors import bad_request
from .openai_api import ModelContext, _encode_chat, _ready_context, _state
from .schemas import DetokenizeRequest, TokenizeRequest

router = APIRouter(dependencies=[Depends(require_api_key)])
open_router = APIRouter()


def _tokenize(ctx: ModelContext, body: TokenizeRequest) -> list[int]:
    if body.prompt is not None:
        add_special = body.add_special_tokens is not False
        tokenizer = ctx.prompt_tokenizer("prompt")
        return tokenizer.encode(body.prompt, add_special=add_special, parse_special=True)
    ids = _encode_chat(ctx, body)  # type: ignore[arg-type]  # the same fields as a chat request
    bos = ctx.tokenizer.bos_id
    if body.add_special_tokens and bos is not None and ids[:1] != [bos]:
        ids.insert(0, bos)
    return ids


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, request: Request) -> dict[str, Any]:
    ctx = _ready_context(_state(request), body.model)
    body.check_supported()
    ids = await asyncio.to_thread(_tokenize, ctx, body)
    answer: dict[str, Any] = {"count": len(ids), "max_model_len": ctx.max_model_len, "tokens": ids}
    if body.return_token_strs:
        answer["token_strs"] = [ctx.tokenizer.piece(t) for t in ids]
    return answer


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, request: Request) -> dict[str, Any]:
    ctx = _ready_context(_state(request), body.model)
    bad = next((t for t in body.tokens if not 0 <= t < ctx.vocab_size), None)
    if bad is not None:
        raise bad_request(
            f"Token id {bad} is outside the vocabulary (0..{ctx.vocab_size - 1}); send ids of this model.",
            param="tokens",
        )
    text = await asyncio.to_thread(ctx.tokenizer.decode, body.tokens)
    return {"prompt": text}


@open_router.get("/version")
async def version() -> dict[str, str]:
    return {"version": __version__}
