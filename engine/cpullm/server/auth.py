"""API-key check for the OpenAI and tokenizer routes (health, metrics and /version stay open for
probes and scrapers).

With keys set (``--api-key``, several times, ``--api-key-file``, ``CPULLM_API_KEY``), a request must
send ``Authorization: Bearer <key>`` with one of them; a missing or wrong key gets a 401 in OpenAI's
error format. The SHA-256 digests of the keys are compared in constant time, every key every time,
so the answer's timing tells neither a key's length nor which key came close.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from fastapi import Request

from .errors import APIError


def key_digests(keys: Iterable[str]) -> tuple[bytes, ...]:
    return tuple(hashlib.sha256(k.encode()).digest() for k in keys)


async def require_api_key(request: Request) -> None:
    expected: tuple[bytes, ...] = request.app.state.api_key_digests
    if not expected:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if not header:
        raise APIError(
            401,
            "No API key was sent; send it as the header 'Authorization: Bearer <key>'.",
            code="invalid_api_key",
        )
    digest = hashlib.sha256(given.strip().encode()).digest()
    matched = False
    for key in expected:
        matched |= hmac.compare_digest(digest, key)
    if scheme.lower() != "bearer" or not matched:
        raise APIError(401, "The API key is not valid for this server.", code="invalid_api_key")
