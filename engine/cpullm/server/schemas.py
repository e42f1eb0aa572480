"""OpenAI request bodies (pydantic) and their translation into engine :class:`SamplingParams`.

Unknown fields are ignored, as OpenAI-compatible servers do; fields we cannot honour (``suffix``,
images) are refused with a 400 that names them. ``response_format``, vLLM's ``structured_outputs``
and its older ``guided_*`` fields constrain the output with a grammar (:mod:`.structured_request`);
``tools`` and ``tool_choice`` are checked in :mod:`.tool_request`. Besides OpenAI's
fields, the engine's extra sampling knobs (``top_k``, ``min_p``, ``repetition_penalty``, ``ignore_eos``,
``stop_token_ids``, ``skip_special_tokens``) can be sent, e.g. with the openai client's ``extra_body``.

Types are strict, as in OpenAI's API: a boolean is ``true``/``false`` (not ``"yes"`` or ``1``), a
number is a JSON number (not ``"0.5"``), and infinities/NaN are refused. Ranges are OpenAI's:
``temperature`` 0..2, ``top_p`` (0, 1], ``presence_penalty``/``frequency_penalty`` -2..2,
``max_tokens``/``max_completion_tokens`` >= 1, ``top_logprobs`` 0..20, ``seed`` a 64-bit integer,
``n`` and ``best_of`` 1..128 (``best_of >= n``, not streamed; all prompts times choices at most 128),
``logit_bias`` token ids of the vocabulary (as strings, OpenAI's form) with values -100..100;
the engine checks the rest (``stop``: non-empty strings, as one string or a list, at most 16).
With a ``seed`` and several choices, choice ``j`` is sampled with ``seed + j`` (same seed, same
answers; different choices, different draws).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from cpullm.runtime.sampling import MAX_LOGIT_BIAS, MAX_LOGPROBS, SamplingParams

from .errors import bad_request
from .structured_request import GUIDED, StructuredSpec, structured_spec
from .tool_request import MAX_TOOLS, MessageToolCall, ToolPlan, Tools, tool_plan

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's legacy completions default
MAX_CHOICES = 128  # choices (prompts, or n) in one request: OpenAI's limit on n
# Messages in one chat request: each costs validation time on the event loop, about 4 us (8192 took
# 27 ms here), and at a few tokens each of template alone 8192 messages fill most contexts.
MAX_MESSAGES = 8192
_STRICT = ConfigDict(strict=True, allow_inf_nan=False)

Count = Annotated[int, Field(ge=1, le=2**31 - 1)]
Penalty = Annotated[float, Field(ge=-2, le=2)]
Choices = Annotated[int, Field(ge=1, le=MAX_CHOICES)]
Bias = Annotated[float, Field(ge=-MAX_LOGIT_BIAS, le=MAX_LOGIT_BIAS)]


class StreamOptions(BaseModel):
    model_config = _STRICT

    include_usage: bool = False


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore", **_STRICT)

    model: str | None = None
    max_tokens: Count | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    n: Choices | None = 1
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    seed: Annotated[int, Field(ge=-(2**63), lt=2**63)] | None = None
    logit_bias: dict[str, Bias] | None = None
    user: str | None = None
    # engine extras
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    ignore_eos: bool | None = False
    stop_token_ids: list[int] | None = None
    skip_special_tokens: bool | None = True
    response_format: dict[str, Any] | None = None
    structured_outputs: dict[str, Any] | None = None  # vLLM's, and its older names:
    guided_json: Any = None
    guided_regex: Any = None
    guided_choice: Any = None
    guided_grammar: Any = None

    def check_supported(self) -> None:
        if self.stream_options is not None and not self.stream:
            raise bad_request("stream_options is only allowed with stream=true.", param="stream_options")
        self.structured()  # refuses a malformed constraint before any work

    def structured(self) -> StructuredSpec | None:
        """The output constraint the request asks for (None for plain text)."""
        guided = {k: getattr(self, k) for k in GUIDED}
        return structured_spec(self.response_format, self.structured_outputs, guided)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    @property
    def choices(self) -> int:
        return self.n or 1

    def logit_bias_pairs(self, vocab_size: int) -> tuple[tuple[int, float], ...]:
        """``logit_bias`` as (token id, bias) pairs; a key that is not a token id of the model is a 400."""
        pairs = []
        for key, bias in (self.logit_bias or {}).items():
            token = int(key) if key.isascii() and key.isdigit() and len(key) <= 10 else -1
            if not 0 <= token < vocab_size:
                raise bad_request(
                    f"logit_bias key {key[:40]!r} is not a token id of this model; keys are token ids "
                    f"from 0 to {vocab_size - 1}, written as strings.",
                    param="logit_bias",
                )
            pairs.append((token, bias))
        return tuple(pairs)

    def sampling_params(
        self,
        max_tokens: int,
        logprobs: int | None,
        vocab_size: int,
        choice: int = 0,
        prompt_logprobs: int | None = None,
        constraint: Any = None,
    ) -> SamplingParams:
        """Engine parameters of one choice; ``ValueError`` from their validation becomes a 400 naming
        the field."""
        seed = None if self.seed is None else self.seed + choice
        options: dict[str, Any] = {
            "max_tokens": max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "repetition_penalty": self.repetition_penalty,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "seed": seed,
            # "" and [""] alike reach the engine, which refuses empty stop strings
            "stop": tuple(self.stop) if isinstance(self.stop, list) else self.stop,
            "stop_token_ids": tuple(self.stop_token_ids or ()),
            "ignore_eos": self.ignore_eos,
            "skip_special_tokens": self.skip_special_tokens,
            "logprobs": logprobs,
            "logit_bias": self.logit_bias_pairs(vocab_size),
            "prompt_logprobs": prompt_logprobs,
            "constraint": constraint,
        }
        try:
            return SamplingParams(**{k: v for k, v in options.items() if v is not None})
        except ValueError as e:
            message = str(e)
            named = [name for name in options if name in message]  # the field the message is about
            raise bad_request(message, param=max(named, key=len) if named else None) from e


Prompt = str | list[str] | list[int] | list[list[int]]


# A prompt list's form, by the type of its first element.
_PROMPT_LISTS: dict[type, TypeAdapter[Any]] = {
    str: TypeAdapter(list[str], config=_STRICT),
    int: TypeAdapter(list[int], config=_STRICT),
    list: TypeAdapter(list[list[int]], config=_STRICT),
}


class CompletionRequest(_Sampling):
    prompt: Any  # a Prompt: see _prompt_of_one_form
    logprobs: int | None = None
    echo: bool | None = False
    suffix: str | None = None
    best_of: Choices | None = None

    def check_supported(self) -> None:
        super().check_supported()
        if self.suffix:
            raise bad_request("suffix (insertion) is not supported by this server.", param="suffix")
        if self.best_of is not None and self.best_of < self.choices:
            raise bad_request(
                f"best_of ({self.best_of}) must be at least n ({self.choices}).", param="best_of"
            )
        if self.stream and self.candidates > self.choices:
            raise bad_request("best_of cannot be streamed; send stream=false, or best_of=n.", param="best_of")

    @property
    def candidates(self) -> int:
        """Sequences generated per prompt: best_of, of which the n most likely are returned."""
        return max(self.best_of or 1, self.choices)

    @field_validator("prompt", mode="plain")
    @classmethod
    def _prompt_of_one_form(cls, value: Any) -> Prompt:
        """Validate the form the first element names. (Validating the union tries every form on every
        element: a second of the event loop for a long list of token ids.)"""
        if isinstance(value, str) or value == []:
            return value  # type: ignore[no-any-return]
        form = _PROMPT_LISTS.get(type(value[0])) if isinstance(value, list) else None
        if form is None:
            raise PydanticCustomError(
                "prompt_type", "send a string, a list of strings, token ids, or a list of lists of token ids"
            )
        if type(value[0]) is not int and len(value) > MAX_CHOICES:
            raise PydanticCustomError(
                "too_many_prompts",
                "at most {limit} prompts are allowed in one request, got {n}; send them in several",
                {"limit": MAX_CHOICES, "n": len(value)},
            )
        try:
            return form.validate_python(value)  # type: ignore[no-any-return]
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise PydanticCustomError(
                "prompt_item", "item {where}: {msg}", {"where": where, "msg": first["msg"]}
            ) from None

    def prompts(self) -> list[str | list[int]]:
        """The prompt(s) as a list: texts or token-id lists (one choice each)."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if not p:
            raise bad_request("The prompt is empty; send some text.", param="prompt")
        if isinstance(p[0], int):
            return [p]  # type: ignore[list-item]
        return list(p)


def _few_enough_messages(value: Any) -> Any:
    # before the messages are validated one by one (Field(max_length) counts after that)
    if isinstance(value, list) and len(value) > MAX_MESSAGES:
        raise PydanticCustomError(
            "too_many_messages",
            "at most {limit} messages are allowed, got {n}",
            {"limit": MAX_MESSAGES, "n": len(value)},
        )
    return value


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", **_STRICT)

    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: Annotated[list[MessageToolCall], Field(max_length=MAX_TOOLS)] | None = None
    tool_call_id: str | None = None

    def as_template_message(self, index: int) -> dict[str, Any]:
        content = self.content
        if isinstance(content, list):
            texts = []
            for part in content:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise bad_request(
                        f"messages[{index}] has a '{part.get('type')}' content part; only text is supported.",
                        param=f"messages.{index}.content",
                    )
                texts.append(part["text"])
            content = "".join(texts)
        message = self.model_dump(exclude_none=True)
        message["content"] = content if content is not None else ""
        return message


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Count | None = None
    logprobs: bool | None = False
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS)] | None = None
    tools: Tools | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    add_generation_prompt: bool | None = True

    @field_validator("messages", mode="before")
    @classmethod
    def _few_enough_messages(cls, value: Any) -> Any:
        return _few_enough_messages(value)

    def check_supported(self) -> None:
        super().check_supported()
        plan = self.tool_plan()
        if plan is not None and self.structured() is not None:
            raise bad_request(
                "A request cannot both call tools and constrain its text (response_format or "
                'structured_outputs); send tool_choice "none", or leave the constraint out.',
                param="tool_choice",
            )
        if self.top_logprobs is not None and not self.logprobs:
            raise bad_request("top_logprobs needs logprobs=true.", param="top_logprobs")

    def tool_plan(self) -> ToolPlan | None:
        return tool_plan(self.tools, self.tool_choice, self.parallel_tool_calls)

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def requested_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


class TokenizeRequest(BaseModel):
    """vLLM's ``/tokenize`` body: a ``prompt`` text, or chat ``messages`` rendered by the chat template."""

    model_config = ConfigDict(extra="ignore", **_STRICT)

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool | None = None  # prompt: default true; messages: see tokenize_api
    add_generation_prompt: bool | None = True
    return_token_strs: bool | None = False
    tools: Tools | None = None  # rendered with the messages, as in a chat request

    def tool_plan(self) -> ToolPlan | None:
        return tool_plan(self.tools, None, None)

    @field_validator("messages", mode="before")
    @classmethod
    def _few_enough_messages(cls, value: Any) -> Any:
        return _few_enough_messages(value)

    def check_supported(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise bad_request("Send either 'prompt' (a text) or 'messages' (a chat) to tokenize, not both.")
        if self.messages == []:
            raise bad_request("messages is empty; send at least one message.", param="messages")


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", **_STRICT)

    model: str | None = None
    tokens: list[int]
