"""``RequestGuard``: the request body is bounded in size and time, and must be valid Unicode text.

A pure ASGI middleware in front of every route. For a request with a body it

- answers 413 at once when ``Content-Length`` exceeds ``max_bytes``, before reading a byte of it, and
  while reading (chunked bodies) as soon as the count passes ``max_bytes``: nothing over the limit is
  buffered. The connection is not closed: uvicorn discards the rest of the body, so a client that
  writes the whole body before it reads (most HTTP libraries) still gets the 413;
- answers 408 (and closes the connection) when the body is not complete ``timeout`` seconds after the
  request head;
- answers 400 when the body is not valid UTF-8 (JSON is UTF-8, RFC 8259; ``json.loads`` would accept
  UTF-16/32 and encoded surrogates), or when the JSON holds a lone UTF-16 surrogate such as
  ``"\\ud800"``: ``json.loads`` accepts it, but the text cannot be tokenized or sent back as UTF-8.
  The answer names the field;
- answers 400 when the JSON holds more than ``MAX_JSON_VALUES`` values (array items and object
  members). The route parses the body on the event loop, holding the GIL, and parsing costs per value
  built, not per byte: 4 MiB of ``[],[],...`` is 1.4 million lists and blocks every other request
  (``/health`` too) for half a second. 2^17 values are a 128K-token prompt as token ids and parse in
  a few tens of milliseconds; a long text is one value, however long.

Then it hands the body to the app unchanged. Requests without a body pass straight through.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import APIError, bad_request

# A JSON escape of a UTF-16 surrogate (high or low); only bodies with one need the JSON walk.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
MAX_JSON_VALUES = 1 << 17
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'",[{')


class _TooLarge(Exception):
    pass


class RequestGuard:
    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _answer(scope, receive, send, self._too_large(f" (Content-Length {declared})"))
            return
        try:
            body = await asyncio.wait_for(self._read(receive), self.timeout)
        except _TooLarge:
            await _answer(scope, receive, send, self._too_large(""))
            return
        except asyncio.TimeoutError:
            message = (
                f"The request body did not arrive within {self.timeout:g} s of the request head; "
                "send the whole body without pauses (the limit is --body-timeout / CPULLM_BODY_TIMEOUT)."
            )
            await _answer(scope, receive, send, APIError(408, message, code="request_timeout"), close=True)
            return
        if body is None:  # the client left
            return
        problem = check_body(body)
        if problem is not None:
            await _answer(scope, receive, send, problem)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> bytes | None:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self, detail: str) -> APIError:
        return APIError(
            413,
            f"The request body is larger than this server accepts: at most {self.max_bytes} bytes{detail}. "
            "Send a shorter prompt, or raise the limit with --max-request-bytes / CPULLM_MAX_REQUEST_BYTES.",
            code="request_too_large",
        )


def check_body(body: bytes) -> APIError | None:
    """A 400 when ``body`` is not UTF-8, holds too many JSON values or a lone surrogate; ``None`` when
    it is fine (or is not JSON at all: the route reports that)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        return bad_request(
            f"The request body is not valid UTF-8 (byte 0x{body[e.start]:02x} at offset {e.start}); "
            "send the JSON encoded as UTF-8.",
            code="invalid_encoding",
        )
    values = count_json_values(body)
    if values > MAX_JSON_VALUES:
        return bad_request(
            f"The request body holds about {values} JSON values (array items and object members); this "
            f"server takes at most {MAX_JSON_VALUES} in one request. Send long prompts as text rather "
            "than token ids, or split the request.",
            code="too_many_values",
        )
    if not _SURROGATE_ESCAPE.search(body):
        return None
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return None
    found = find_lone_surrogate(doc)
    if found is None:
        return None
    path, position = found
    return bad_request(
        f"The field '{path}' holds a lone UTF-16 surrogate (at character {position}), which is not "
        "valid Unicode text. Escape a character beyond U+FFFF as a surrogate pair (e.g. "
        "\\ud83d\\ude00) or send it as UTF-8.",
        param=path,
        code="invalid_unicode",
    )


def count_json_values(body: bytes) -> int:
    """About how many values (array items, object members) the JSON ``body`` holds: its commas,
    brackets and braces outside strings. Byte counts, replaces and splits only (C speed); strings are
    told apart only when the plain count is over the limit."""
    count = body.count(b",") + body.count(b"[") + body.count(b"{")
    if count <= MAX_JSON_VALUES:
        return count
    text = body.replace(b"\\\\", b"").replace(b'\\"', b"")  # escaped backslashes, then escaped quotes
    strings = text.count(b'"') // 2
    if strings // 2 > MAX_JSON_VALUES:  # every string is a value or the key of one
        return strings // 2
    outside = b"".join(text.translate(None, _NOT_STRUCTURE).split(b'"')[::2])
    return outside.count(b",") + outside.count(b"[") + outside.count(b"{")


def find_lone_surrogate(doc: Any) -> tuple[str, int] | None:
    """The path (``messages.0.content``) and character index of the first string, or object key,
    holding an unpaired surrogate, in document order; walked with a stack, not recursion."""
    stack: list[tuple[Any, str]] = [(doc, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            position = _surrogate_at(value)
            if position is not None:
                return path or "(body)", position
        elif isinstance(value, dict):
            items = []
            for key, item in value.items():
                key_path = f"{path}.{_printable(key)}" if path else _printable(key)
                position = _surrogate_at(key)
                if position is not None:
                    return key_path, position
                items.append((item, key_path))
            stack.extend(reversed(items))
        elif isinstance(value, list):
            indexed = [(item, f"{path}.{i}" if path else str(i)) for i, item in enumerate(value)]
            stack.extend(reversed(indexed))
    return None


def _surrogate_at(text: str) -> int | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.start
    return None


def _printable(key: str) -> str:
    return key.encode("utf-8", "backslashreplace").decode("utf-8")


def _has_body(scope: Scope) -> bool:
    headers = dict(scope.get("headers", ()))
    return b"transfer-encoding" in headers or headers.get(b"content-length", b"0") not in (b"0", b"")


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for the app: the body in one message, then the real channel (disconnects)."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _answer(scope: Scope, receive: Receive, send: Send, error: APIError, close: bool = False) -> None:
    headers = {"Connection": "close"} if close else None
    await JSONResponse(error.body(), status_code=error.status, headers=headers)(scope, receive, send)
