"""uvicorn's h11 protocol with a deadline on the request head, and the uvicorn configuration.

uvicorn has a keep-alive timeout, but any byte received cancels it and nothing bounds the time a
client takes to send a request head: a client sending one header byte every few seconds holds its
connection (and a slot of ``limit_concurrency``) forever. ``HeadDeadlineProtocol`` closes a
connection whose next request head is not complete ``header_timeout`` seconds after the connection
was made or the previous answer was sent. Once the head is in, the body has its own deadline
(:mod:`.request_guard`) and the answer none: a stream may run for minutes.

``uvicorn_config(app, settings)`` builds the ``uvicorn.Config`` of ``cpullm serve`` from the settings.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .settings import ServerSettings


class HeadDeadlineProtocol(H11Protocol):
    """``H11Protocol`` plus the request-head deadline; ``header_timeout`` is set per server by
    :func:`protocol_with_deadline` (uvicorn builds protocols from the class alone)."""

    header_timeout: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_deadline: asyncio.TimerHandle | None = None
        self._cycle_at_arm: Any = None
        super().connection_made(transport)
        self._arm_head_deadline(None)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._disarm_if_new_request()

    def on_response_complete(self) -> None:
        answered = self.cycle
        super().on_response_complete()  # may start a pipelined request: its head has arrived
        if not self.transport.is_closing():
            self._arm_head_deadline(answered)
            self._disarm_if_new_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self, current_cycle: Any) -> None:
        self._cancel_head_deadline()
        # uvicorn makes a new cycle for every request head it parses: a new cycle = the head arrived.
        self._cycle_at_arm = current_cycle
        self._head_deadline = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm_if_new_request(self) -> None:
        if self._head_deadline is not None and self.cycle is not self._cycle_at_arm:
            self._cancel_head_deadline()

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.logger.debug("closing a connection whose request head did not arrive in time")
            self.transport.close()


def protocol_with_deadline(header_timeout: float) -> type[HeadDeadlineProtocol]:
    return type("HeadDeadlineProtocol", (HeadDeadlineProtocol,), {"header_timeout": header_timeout})


def uvicorn_config(app: Any, settings: ServerSettings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=5,
        http=protocol_with_deadline(settings.header_timeout),  # h11 even where httptools is installed
        timeout_keep_alive=settings.keep_alive_timeout,  # type: ignore[arg-type]
        limit_concurrency=settings.max_connections,
        ssl_certfile=settings.ssl_certfile,  # checked by ServerSettings.check_tls
        ssl_keyfile=settings.ssl_keyfile,
    )
