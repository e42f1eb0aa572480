"""OpenAI-style error answers: ``{"error": {"message", "type", "param", "code"}}``.

Bad input of any kind (malformed JSON, a wrong field, a prompt over the context) is a 4xx with a
sentence the client can act on; only a bug in the server itself is a 500.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("cpullm.server")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    503: "service_unavailable",
}


class APIError(Exception):
    """An answer other than success; raised anywhere in a handler, turned into OpenAI error JSON."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None, str]:
    """One sentence for the first problem pydantic found, the field path, and an error code."""
    errors = exc.errors()
    if not errors:
        return "The request body is invalid.", None, "invalid_request"
    first = errors[0]
    if first.get("type") == "json_invalid":
        detail = first.get("ctx", {}).get("error", "")
        return f"The request body is not valid JSON ({detail}); send a JSON object.", None, "invalid_json"
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    msg = str(first.get("msg", "is invalid"))
    if first.get("type") == "missing" and param is None:
        return "The request body is missing; send a JSON object.", None, "invalid_json"
    if first.get("type") == "missing":
        text = f"The field '{param}' is required."
    elif param:
        text = f"The field '{param}' is invalid: {msg}."
    else:
        text = f"The request body is invalid: {msg}; send a JSON object."
    more = len(errors) - 1
    if more:
        text += f" ({more} more problem{'s' if more > 1 else ''} in the request.)"
    return text, param, "invalid_request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param, code = _validation_message(exc)
        content_type = request.headers.get("content-type", "")
        if param is None and "json" not in content_type:
            message = (
                f"The request body must be JSON, sent with 'Content-Type: application/json' "
                f"(got {content_type or 'no content type'!r})."
            )
        return APIError(400, message, param=param, code=code).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = "There is no such route; the API is under /v1 (or /openai/v1)."
        elif isinstance(exc.__cause__, RecursionError):  # FastAPI's "error parsing the body"
            message = "The request body's JSON nests arrays or objects too deeply to be parsed; flatten it."
        else:
            message = str(exc.detail)
        return APIError(exc.status_code, message).response()

    @app.exception_handler(json.JSONDecodeError)
    async def _json(_: Request, exc: json.JSONDecodeError) -> JSONResponse:
        return bad_request(f"The request body is not valid JSON ({exc.msg}).", code="invalid_json").response()

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error while serving a request")
        return APIError(500, f"Internal server error ({type(exc).__name__}); see the server log.").response()
