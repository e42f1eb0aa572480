"""``/embeddings`` (under ``/v1`` and ``/openai/v1``), OpenAI's shape: the loaded model's embeddings.

An input's embedding is the mean of its tokens' final hidden states (after the model's final norm),
L2-normalised (:meth:`~cpullm.runtime.engine.Engine.embed`). Mean pooling, not the last token: a chat
model was not trained to sum a text up in its last position (embedding-tuned decoders are, and pool the
last token), and the mean uses every token. ``input`` is a string, a list of strings, a list of token
ids or a list of such lists (at most ``MAX_INPUTS``, each within the context; texts are tokenized with
the BOS token the model asks for, and control-token text is not parsed). ``encoding_format`` is
``float`` (a list of numbers) or ``base64`` (the float32 little-endian bytes, what the openai client
asks for by default). ``dimensions`` may only name the model's own width. Each input runs between two
engine steps, so generations go on while a batch is embedded.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, field_validator

from cpullm.runtime.kv_blocks import OutOfBlocks

from .auth import require_api_key
from .errors import APIError, bad_request
from .openai_api import ModelContext, _check_token_ids, _ready_context, _state
from .schemas import CompletionRequest

MAX_INPUTS = 256

router = APIRouter(dependencies=[Depends(require_api_key)])


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)

    model: str | None = None
    input: Any  # a string, strings, token ids or lists of token ids (checked as a completion's prompt)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None

    @field_validator("input", mode="plain")
    @classmethod
    def _input_of_one_form(cls, value: Any) -> Any:
        if isinstance(value, list) and value and not isinstance(value[0], int) and len(value) > MAX_INPUTS:
            raise ValueError(f"at most {MAX_INPUTS} inputs are allowed in one request, got {len(value)}")
        return CompletionRequest._prompt_of_one_form(value)


def _encode(ctx: ModelContext, inputs: list[str | list[int]]) -> list[list[int]]:
    tokenizer = ctx.prompt_tokenizer("input")
    out = []
    for item in inputs:
        ids = tokenizer.encode(item, add_special=True) if isinstance(item, str) and item else item
        if not ids:
            raise bad_request("An input is empty; send some text.", param="input")
        out.append(_check_token_ids(list(ids), ctx.vocab_size))
    return out


def _inputs(body: EmbeddingRequest) -> list[str | list[int]]:
    value = body.input
    if isinstance(value, str):
        return [value]
    if not value:
        raise bad_request("input is empty; send a text or a list of texts.", param="input")
    return [value] if isinstance(value[0], int) else list(value)


@router.post("/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request) -> dict[str, Any]:
    state = _state(request)
    ctx = _ready_context(state, body.model)
    engine = state.engine.engine
    width = engine.config.d_model if engine is not None else 0
    if body.dimensions is not None and body.dimensions != width:
        raise bad_request(
            f"This model's embeddings have {width} dimensions; leave out dimensions or send {width}.",
            param="dimensions",
        )
    prompts = await asyncio.to_thread(_encode, ctx, _inputs(body))
    data = []
    for i, ids in enumerate(prompts):
        if await request.is_disconnected():
            raise APIError(499, "The client closed the connection.")
        try:
            vector = await state.engine.call(lambda e, ids=ids: e.embed(ids))
        except ValueError as e:
            raise bad_request(f"Input {i} cannot be embedded: {e}.", param="input") from e
        except OutOfBlocks:
            raise APIError(
                503, "The KV cache is full with running requests; retry in a moment.", code="server_busy"
            ) from None
        vector = np.asarray(vector, dtype="<f4")
        encoded: Any = vector.tolist()
        if body.encoding_format == "base64":
            encoded = base64.b64encode(vector.tobytes()).decode("ascii")
        data.append({"object": "embedding", "index": i, "embedding": encoded})
    tokens = sum(len(p) for p in prompts)
    return {
        "object": "list",
        "data": data,
        "model": state.served_model_name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
