"""The FastAPI application: OpenAI routes, KServe/Kubernetes health routes, Prometheus metrics.

``create_app(settings, engine_factory=None, on_load_failure=None)`` returns the app; the model loads
in the engine thread once the app starts, so the server listens (``/health`` answers 503) while the
weights load. ``engine_factory`` replaces the default ``Engine(...)`` built from the settings (tests).

Routes
------
- ``/v1/...`` and ``/openai/v1/...`` (KServe's prefix): ``models``, ``completions``, ``chat/completions``
- ``/tokenize``, ``/detokenize`` (vLLM's; also under both prefixes) and ``/version``
- ``/health``: 200 when ready, 503 while loading or after a failed load
- ``/v2/health/live`` (always 200 while the process serves), ``/v2/health/ready``,
  ``/v2/models/{name}/ready`` (KServe's open inference protocol health routes)
- ``/metrics``: Prometheus text format

CORS headers are sent only for the origins in ``settings.allowed_origins`` (none by default).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cpullm.model.default_model import DEFAULT_MODEL_FILE
from cpullm.model.hub import is_hub_ref
from cpullm.runtime.engine import Engine

from .async_engine import AsyncEngine
from .auth import key_digests
from .embeddings_api import router as embeddings_router
from .errors import APIError, install_error_handlers
from .metrics import CONTENT_TYPE, Metrics
from .openai_api import ModelContext, ServerState, router
from .request_guard import RequestGuard
from .settings import ServerSettings, default_served_name, resolve_model_path
from .tokenize_api import open_router as version_router
from .tokenize_api import router as tokenize_router

log = logging.getLogger("cpullm.server")
API_PREFIXES = ("/v1", "/openai/v1")


def default_engine_factory(settings: ServerSettings, model_path: Path | str | None) -> Callable[[], Engine]:
    def build() -> Engine:
        return Engine(
            model_path,
            threads=settings.threads,
            kv_cache_gb=settings.kv_cache_gb,
            kv_dtype=settings.kv_cache_dtype,
            max_num_seqs=settings.max_num_seqs,
            max_model_len=settings.max_model_len,
            quantization=settings.quantization,
        )

    return build


def create_app(
    settings: ServerSettings,
    engine_factory: Callable[[], Engine] | None = None,
    on_load_failure: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    model_path: Path | str | None = None
    if settings.model and is_hub_ref(settings.model):
        model_path = settings.model  # fetched by the engine, off the event loop, while /health says loading
        served = settings.served_model_name or settings.model
    else:
        model_path = resolve_model_path(settings.model) if settings.model else None
        served = settings.served_model_name or default_served_name(model_path or Path(DEFAULT_MODEL_FILE))
    metrics = Metrics()
    engine = AsyncEngine(
        engine_factory or default_engine_factory(settings, model_path), metrics, on_load_failure
    )
    state = ServerState(served, engine)

    def on_ready(loaded: Engine) -> None:
        state.context = ModelContext.from_engine(loaded)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        engine.start(on_ready)
        try:
            yield
        finally:
            engine.stop()

    app = FastAPI(title="cpullm", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = state
    app.state.api_key_digests = key_digests(settings.api_keys())
    app.state.metrics = metrics
    install_error_handlers(app)
    for prefix in API_PREFIXES:
        app.include_router(router, prefix=prefix)
        app.include_router(embeddings_router, prefix=prefix)
    for prefix in ("", *API_PREFIXES):
        app.include_router(tokenize_router, prefix=prefix)
    app.include_router(version_router)
    _add_health_routes(app, state)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    app.add_middleware(RequestGuard, max_bytes=settings.max_request_bytes, timeout=settings.body_timeout)
    app.add_middleware(_CountRequests, metrics=metrics)  # counts the guard's answers too
    if settings.allowed_origins:  # outermost: answers browsers' preflight requests, which carry no key
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.allowed_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app


def _add_health_routes(app: FastAPI, state: ServerState) -> None:
    def not_ready() -> dict[str, Any]:
        if state.engine.state == "failed":
            return {"status": "failed", "error": str(state.engine.load_error)}
        return {"status": state.engine.state}

    def is_ready() -> bool:
        return state.context is not None and state.engine.ready

    @app.get("/health")
    async def health() -> JSONResponse:
        if is_ready():
            return JSONResponse({"status": "ok"})
        return JSONResponse(not_ready(), status_code=503)

    @app.get("/v2/health/live")
    async def live() -> JSONResponse:
        alive = state.engine.alive
        return JSONResponse({"live": alive}, status_code=200 if alive else 503)

    @app.get("/v2/health/ready")
    async def ready() -> JSONResponse:
        return JSONResponse({"ready": is_ready()}, status_code=200 if is_ready() else 503)

    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str) -> JSONResponse:
        if name != state.served_model_name:
            raise APIError(404, f"The model '{name}' does not exist; this server serves "
                                f"'{state.served_model_name}'.", code="model_not_found")  # fmt: skip
        return JSONResponse({"name": name, "ready": is_ready()}, status_code=200 if is_ready() else 503)

    @app.get("/v2/models/{name}")
    async def model_metadata(name: str, request: Request) -> dict[str, Any]:
        if name != state.served_model_name:
            raise APIError(404, f"The model '{name}' does not exist.", code="model_not_found")
        return {"name": name, "versions": [], "platform": "cpullm", "inputs": [], "outputs": []}


class _CountRequests:
    """Counts the API routes' answers by route and status (pure ASGI: streaming stays untouched)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith(API_PREFIXES):
            await self.app(scope, receive, send)
            return
        route = path.removeprefix("/openai").removeprefix("/v1")
        route = route if route in ("/completions", "/chat/completions", "/models") else "other"
        status = {"code": 500}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            self.metrics.requests.labels(route=route, status=str(status["code"])).inc()
