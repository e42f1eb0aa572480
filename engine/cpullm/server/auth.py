"""API-key check for the OpenAI routes (health and metrics stay open for probes and scrapers).

With ``--api-key`` / ``CPULLM_API_KEY`` set, a request must send ``Authorization: Bearer <key>``;
a missing or wrong key gets a 401 in OpenAI's error format. Keys are compared in constant time.
"""

from __future__ import annotations

import hmac

from fastapi import Request

from .errors import APIError


async def require_api_key(request: Request) -> None:
    expected: str | None = request.app.state.api_key
    if expected is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if not header:
        raise APIError(
            401,
            "No API key was sent; send it as the header 'Authorization: Bearer <key>'.",
            code="invalid_api_key",
        )
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise APIError(401, "The API key is not valid for this server.", code="invalid_api_key")
