"""OpenAI request bodies (pydantic) and their translation into engine :class:`SamplingParams`.

Unknown fields are ignored, as OpenAI-compatible servers do; fields we cannot honour (``n > 1``,
``echo``, ``suffix``, ``logit_bias``, images) are refused with a 400 that names them. Besides OpenAI's
fields, the engine's extra sampling knobs (``top_k``, ``min_p``, ``repetition_penalty``, ``ignore_eos``,
``stop_token_ids``, ``skip_special_tokens``) can be sent, e.g. with the openai client's ``extra_body``.

Types are strict, as in OpenAI's API: a boolean is ``true``/``false`` (not ``"yes"`` or ``1``), a
number is a JSON number (not ``"0.5"``), and infinities/NaN are refused. Ranges are OpenAI's:
``temperature`` 0..2, ``top_p`` (0, 1], ``presence_penalty``/``frequency_penalty`` -2..2,
``max_tokens``/``max_completion_tokens`` >= 1, ``top_logprobs`` 0..20, ``seed`` a 64-bit integer;
the engine checks the rest (``stop``: non-empty strings, as one string or a list, at most 16).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from ..sampling import MAX_LOGPROBS, SamplingParams
from .errors import bad_request

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's legacy completions default
MAX_CHOICES = 128  # choices (prompts, or n) in one request: OpenAI's limit on n
# Messages in one chat request: each costs validation time on the event loop, about 4 us (8192 took
# 27 ms here), and at a few tokens each of template alone 8192 messages fill most contexts.
MAX_MESSAGES = 8192
_STRICT = ConfigDict(strict=True, allow_inf_nan=False)

Count = Annotated[int, Field(ge=1, le=2**31 - 1)]
Penalty = Annotated[float, Field(ge=-2, le=2)]


class StreamOptions(BaseModel):
    model_config = _STRICT

    include_usage: bool = False


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore", **_STRICT)

    model: str | None = None
    max_tokens: Count | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    n: Annotated[int, Field(ge=1, le=MAX_CHOICES)] | None = 1
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    seed: Annotated[int, Field(ge=-(2**63), lt=2**63)] | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    # engine extras
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    ignore_eos: bool | None = False
    stop_token_ids: list[int] | None = None
    skip_special_tokens: bool | None = True
    response_format: dict[str, Any] | None = None

    def check_supported(self) -> None:
        if self.n not in (None, 1):
            raise bad_request("Only n=1 is supported; send several requests instead.", param="n")
        if self.logit_bias:
            raise bad_request("logit_bias is not supported by this server.", param="logit_bias")
        if self.stream_options is not None and not self.stream:
            raise bad_request("stream_options is only allowed with stream=true.", param="stream_options")
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise bad_request(
                "response_format other than text (JSON mode, JSON schema) is not supported by this server.",
                param="response_format",
            )

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    def sampling_params(self, max_tokens: int, logprobs: int | None) -> SamplingParams:
        """Engine parameters; ``ValueError`` from their validation becomes a 400 naming the field."""
        options: dict[str, Any] = {
            "max_tokens": max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "repetition_penalty": self.repetition_penalty,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "seed": self.seed,
            # "" and [""] alike reach the engine, which refuses empty stop strings
            "stop": tuple(self.stop) if isinstance(self.stop, list) else self.stop,
            "stop_token_ids": tuple(self.stop_token_ids or ()),
            "ignore_eos": self.ignore_eos,
            "skip_special_tokens": self.skip_special_tokens,
            "logprobs": logprobs,
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
    best_of: Count | None = None

    def check_supported(self) -> None:
        super().check_supported()
        if self.echo:
            raise bad_request("echo is not supported by this server.", param="echo")
        if self.suffix:
            raise bad_request("suffix (insertion) is not supported by this server.", param="suffix")
        if self.best_of not in (None, 1):
            raise bad_request("Only best_of=1 is supported.", param="best_of")

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
    tools: list[Any] | None = None  # refused when present; not validated item by item
    add_generation_prompt: bool | None = True

    @field_validator("messages", mode="before")
    @classmethod
    def _few_enough_messages(cls, value: Any) -> Any:
        return _few_enough_messages(value)

    def check_supported(self) -> None:
        super().check_supported()
        if self.tools:
            raise bad_request("tools (function calling) are not supported by this server.", param="tools")
        if self.top_logprobs is not None and not self.logprobs:
            raise bad_request("top_logprobs needs logprobs=true.", param="top_logprobs")

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
