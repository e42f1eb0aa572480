"""The asyncio face of the synchronous :class:`~cpullm.runtime.engine.Engine`.

One background thread owns the engine: it loads the model (so the HTTP server listens, and answers
``/health`` with 503, while the weights load), then loops ``engine.step()`` while there is work and
sleeps on a condition when idle. Handlers never touch the engine: ``submit`` and ``abort`` put
commands on a thread-safe list that the thread applies between steps (continuous batching: new
requests join the running batch at the next step). Each step's outputs go back to the event loop in
one ``loop.call_soon_threadsafe`` call, which puts them on the requests' ``asyncio.Queue``s.

``submit`` returns a future that resolves once the engine accepted the request, or raises the
engine's ``ValueError`` (e.g. a prompt longer than the context), so a handler can answer 400 before it
starts streaming. ``call(fn)`` runs ``fn(engine)`` on the engine thread between two steps (one call per
step, so a batch of embeddings does not stall the running generations) and returns its result.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from cpullm.runtime.engine import Engine, StepOutput
from cpullm.runtime.sampling import SamplingParams

from .metrics import Metrics

log = logging.getLogger("cpullm.server")

State = Literal["loading", "ready", "failed", "stopped"]


@dataclass
class _Request:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    queue: asyncio.Queue[tuple[int, StepOutput]]
    index: int  # the choice this request fills in its HTTP response
    accepted: asyncio.Future[None]


@dataclass
class _Commands:
    adds: list[_Request] = field(default_factory=list)
    aborts: list[str] = field(default_factory=list)
    calls: list[tuple[Callable[[Engine], Any], asyncio.Future[Any]]] = field(default_factory=list)


class AsyncEngine:
    def __init__(
        self,
        engine_factory: Callable[[], Engine],
        metrics: Metrics,
        on_load_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._factory = engine_factory
        self.metrics = metrics
        self._on_load_failure = on_load_failure
        self.engine: Engine | None = None
        self.state: State = "loading"
        self.load_error: BaseException | None = None
        self.load_seconds: float | None = None
        self._cond = threading.Condition()
        self._commands = _Commands()
        self._stop = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._requests: dict[str, _Request] = {}  # engine thread only
        self._thread: threading.Thread | None = None
        self._ready_callbacks: list[Callable[[Engine], None]] = []

    # ---- lifecycle (event loop side) ----
    def start(self, on_ready: Callable[[Engine], None] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        if on_ready is not None:
            self._ready_callbacks.append(on_ready)
        self._thread = threading.Thread(target=self._run, name="cpullm-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def ready(self) -> bool:
        return self.state == "ready" and self.alive

    @property
    def alive(self) -> bool:
        """False once the engine thread has ended (failed load, or stopped): the process is no use."""
        return self._thread is None or self._thread.is_alive()

    # ---- requests (event loop side) ----
    def submit(
        self,
        request_id: str,
        prompt_ids: list[int],
        params: SamplingParams,
        queue: asyncio.Queue[tuple[int, StepOutput]],
        index: int = 0,
    ) -> asyncio.Future[None]:
        assert self._loop is not None, "start() the engine first"
        accepted: asyncio.Future[None] = self._loop.create_future()
        request = _Request(request_id, prompt_ids, params, queue, index, accepted)
        with self._cond:
            self._commands.adds.append(request)
            self._cond.notify()
        return accepted

    def call(self, fn: Callable[[Engine], Any]) -> asyncio.Future[Any]:
        """A future of ``fn(engine)``, run on the engine thread between steps."""
        assert self._loop is not None, "start() the engine first"
        done: asyncio.Future[Any] = self._loop.create_future()
        with self._cond:
            self._commands.calls.append((fn, done))
            self._cond.notify()
        return done

    def abort(self, request_id: str) -> None:
        """Cancel a request (a client went away); its KV blocks are freed before the next step."""
        with self._cond:
            self._commands.aborts.append(request_id)
            self._cond.notify()

    # ---- the engine thread ----
    def _run(self) -> None:
        started = time.monotonic()
        try:
            self.engine = self._factory()
        except BaseException as e:
            self.load_error, self.state = e, "failed"
            log.error("loading the model failed: %s", e)
            if self._on_load_failure is not None:
                self._on_load_failure(e)
            return
        self.load_seconds = time.monotonic() - started
        for callback in self._ready_callbacks:
            callback(self.engine)
        self.state = "ready"
        log.info("model loaded in %.1f s; ready", self.load_seconds)
        self._publish_stats()
        while True:
            with self._cond:
                while not self._stop and not self._has_commands() and not self.engine.has_work():
                    self._cond.wait()
                if self._stop:
                    break
                commands, self._commands = self._commands, _Commands()
            try:
                self._apply(commands)
                if self.engine.has_work():
                    self._step()
                else:
                    self._publish_stats()
            except Exception as e:  # a bug must not kill the thread silently: fail what is running
                log.exception("the engine loop failed")
                self._fail_all(e)
        self.state = "stopped"

    def _has_commands(self) -> bool:
        return bool(self._commands.adds or self._commands.aborts or self._commands.calls)

    def _apply(self, commands: _Commands) -> None:
        engine = self.engine
        assert engine is not None
        results: list[tuple[asyncio.Future[None], BaseException | None]] = []
        for request in commands.adds:
            try:
                engine.add_request(request.request_id, request.prompt_ids, request.params)
            except Exception as e:  # ValueError: bad input (a 400); anything else: a bug (a 500)
                results.append((request.accepted, e))
                continue
            self._requests[request.request_id] = request
            self.metrics.prompt_tokens.inc(len(request.prompt_ids))
            results.append((request.accepted, None))
        # Aborts after adds: a client may give up before its request was even added.
        for request_id in commands.aborts:
            if self._requests.pop(request_id, None) is not None:
                engine.abort(request_id)
                self.metrics.finished("abort")
        if results:
            self._call_in_loop(_resolve, results)
        if commands.calls:
            (fn, done), rest = commands.calls[0], commands.calls[1:]
            with self._cond:  # the others wait for the next round, after a step
                self._commands.calls[:0] = rest
            try:
                outcome: tuple[Any, BaseException | None] = (fn(engine), None)
            except Exception as e:
                outcome = (None, e)
            self._call_in_loop(_settle, (done, *outcome))

    def _step(self) -> None:
        """One engine step; the metrics are published before the outputs go out, so a client that
        has its answer reads metrics that already count it."""
        engine = self.engine
        assert engine is not None
        try:
            outputs = engine.step()
        except Exception as e:  # a native failure: fail the running requests, keep serving others
            log.exception("engine step failed")
            self._fail_all(e)
            self._publish_stats()
            return
        deliveries = []
        for out in outputs:
            request = self._requests.get(out.request_id)
            if request is None:  # aborted meanwhile
                continue
            self.metrics.generation_tokens.inc(len(out.token_ids))
            if out.finished:
                del self._requests[out.request_id]
                self.metrics.finished(str(out.finish_reason))
            deliveries.append((request.queue, (request.index, out)))
        self._publish_stats(after_step=True)
        if deliveries:
            self._call_in_loop(_deliver, deliveries)

    def _fail_all(self, error: Exception) -> None:
        engine = self.engine
        assert engine is not None
        failed = []
        for request_id, request in list(self._requests.items()):
            engine.abort(request_id)
            failed.append((request.queue, (request.index, error)))
        self._requests.clear()
        self._call_in_loop(_deliver, failed)

    def _publish_stats(self, after_step: bool = False) -> None:
        assert self.engine is not None
        stats = self.engine.stats()
        self.metrics.publish(stats)
        if after_step:
            self.metrics.observe_step(stats)

    def _call_in_loop(self, fn: Callable[..., None], arg: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(fn, arg)
        except RuntimeError:  # the loop is closed: the server is shutting down
            pass


def _resolve(results: list[tuple[asyncio.Future[None], BaseException | None]]) -> None:
    for future, error in results:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


def _settle(item: tuple[asyncio.Future[Any], Any, BaseException | None]) -> None:
    future, value, error = item
    if future.done():  # its handler gave up
        return
    if error is None:
        future.set_result(value)
    else:
        future.set_exception(error)


def _deliver(deliveries: list[tuple[asyncio.Queue[Any], Any]]) -> None:
    for queue, item in deliveries:
        queue.put_nowait(item)
