"""What every service process shares: lifespan, background workers, health, metrics.

`build_app` returns a FastAPI app whose lifespan starts the bus, runs the
service's `on_start` (which spawns its consumers as supervised workers), and
on shutdown stops workers, then the bus. Workers that crash are logged and
restarted with backoff, never silently lost.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from contracts.http import Health, Readiness
from shared.auth import Authenticator
from shared.broker import EmbeddedBroker
from shared.bus import Bus
from shared.consumer import ConsumerReset
from shared.errors import ConfigError
from shared.http_errors import (
    EDGE_ERRORS,
    RequestRefused,
    error_body,
    error_responses,
    install_error_handlers,
    json_response,
)
from shared.logs import configure_logging
from shared.registry_client import present_token
from shared.settings import CONFIG_EXIT, CommonSettings, settings_problem
from shared.tokens import auth_headers
from shared.tracing import new_trace_id, parse_traceparent, trace_id_var

logger = logging.getLogger(__name__)

S = TypeVar("S", bound=CommonSettings)

Worker = Callable[[asyncio.Event], Awaitable[None]]


class Runtime:
    """A service's bus, stop signal, workers and readiness checks."""

    def __init__(self, name: str, settings: CommonSettings) -> None:
        self.name = name
        self.settings = settings
        self.bus = Bus(settings, name)
        self.auth = Authenticator.from_settings(settings)  # the HTTP door's tokens and roles
        self.stopping = asyncio.Event()
        self.ready = False
        self.checks: dict[str, Callable[[], bool]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def spawn(self, name: str, worker: Worker) -> None:
        """Run `worker(stopping)` until stopping is set, restarting it if it crashes."""
        self._tasks.append(asyncio.create_task(self._supervise(name, worker), name=name))

    async def _supervise(self, name: str, worker: Worker) -> None:
        delay = 1.0
        while not self.stopping.is_set():
            try:
                await worker(self.stopping)
                return
            except asyncio.CancelledError:
                raise
            except ConsumerReset as exc:
                logger.warning("worker %s restarts: %s", name, exc)
                await asyncio.sleep(0.5)
            except Exception:
                logger.exception("worker %s crashed; restarting in %.0fs", name, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def stop(self, timeout: float = 15.0) -> None:
        self.stopping.set()
        if self._tasks:
            done, pending = await asyncio.wait(self._tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def is_ready(self) -> tuple[bool, dict[str, bool]]:
        results = {name: check() for name, check in self.checks.items()}
        return self.ready and all(results.values()), results


class TraceMiddleware:
    """Pure ASGI (cheap on the hot path): set the trace id from traceparent, echo it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for key, value in scope["headers"]:
            if key == b"traceparent":
                incoming = parse_traceparent(value.decode("latin-1"))
                break
        trace_id = incoming or new_trace_id()
        trace_id_var.set(trace_id)

        async def send_with_trace(message: Any) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-trace-id", trace_id.encode()))
            await send(message)

        await self.app(scope, receive, send_with_trace)


class BodyLimitMiddleware:
    """Pure ASGI: refuse a request body larger than `max_bytes` with 413, before reading it
    when Content-Length says so, else as soon as the bytes received pass the limit (a chunked
    body). Without it one request can make a service hold, parse and answer about any size."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope["headers"]:
            if key == b"content-length":
                if not value.strip().isdigit():
                    await self._refuse(send, 400, "InvalidRequest",
                                       "Content-Length is not a number of bytes")
                    return
                if int(value) > self.max_bytes:
                    await self._refuse(send, 413, *self._too_large())
                    return
                # The server frames the body by Content-Length: nothing more can arrive, so
                # the hot path (every predict call) pays for this header check only.
                await self.app(scope, receive, send)
                return
        received = 0

        async def counted() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise RequestRefused(413, *self._too_large())
            return message

        started = False

        async def tracked(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except RequestRefused as exc:  # raised outside a route's exception handlers
            if started:
                raise
            await self._refuse(send, exc.status_code, exc.error, str(exc.detail))

    def _too_large(self) -> tuple[str, str]:
        return ("RequestTooLarge", f"the request body is larger than this service accepts "
                f"({self.max_bytes} bytes)")

    @staticmethod
    async def _refuse(send: Send, status: int, error: str, detail: str) -> None:
        body = json_response(error_body(error, detail)).body
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def build_app(name: str, settings: CommonSettings,
              on_start: Callable[[Runtime], Awaitable[None]],
              on_stop: Callable[[Runtime], Awaitable[None]] | None = None,
              title: str | None = None) -> tuple[FastAPI, Runtime]:
    """The service's FastAPI app (with /healthz, /readyz, /metrics) and its runtime."""
    runtime = Runtime(name, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        present_token(auth_headers(settings))  # for the registry's reads, when closed
        await runtime.bus.start()
        runtime.spawn("topic-guard", runtime.bus.guard_topics)
        await on_start(runtime)
        runtime.ready = True
        logger.info("%s ready", name)
        try:
            yield
        finally:
            runtime.ready = False
            await runtime.stop()
            if on_stop is not None:
                await on_stop(runtime)
            await runtime.bus.stop()
            logger.info("%s stopped", name)

    app = FastAPI(title=title or f"driftloop {name}", lifespan=lifespan,
                  responses=error_responses(*EDGE_ERRORS))
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(TraceMiddleware)
    install_error_handlers(app)

    @app.get("/healthz", tags=["ops"], response_model=Health)
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok", "service": name}

    @app.get("/readyz", tags=["ops"], response_model=Readiness,
             responses={503: {"model": Readiness, "description": "Not ready (yet)."}})
    async def readyz() -> Response:
        """Readiness: connected, workers started, and the service's own checks pass."""
        ok, checks = runtime.is_ready()
        return json_response({"ready": ok, "checks": checks}, 200 if ok else 503)

    @app.get("/metrics", tags=["ops"], dependencies=runtime.auth.reads, response_class=Response,
             responses={200: {"description": "Prometheus text exposition.",
                              "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
                        **(error_responses(401, 403) if runtime.auth.reads else {})})
    async def metrics() -> Response:
        """Prometheus exposition."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app, runtime


def serve(app: FastAPI, settings: CommonSettings, port: int, service: str) -> None:
    """Run the app under uvicorn until SIGTERM/SIGINT (uvicorn then runs the lifespan exit).

    With no DRIFTLOOP_KAFKA_BOOTSTRAP, an embedded broker is started first and
    stopped last, so one service can run alone.
    """
    configure_logging(service, settings.log_level)
    broker = None
    if not settings.kafka_bootstrap:
        broker = EmbeddedBroker(settings.embedded_broker_host, settings.embedded_broker_port,
                                settings.data_dir / "logs" / "broker.log")
        broker.start()
        settings.kafka_bootstrap = broker.bootstrap
    try:
        config = uvicorn.Config(app, host=settings.host, port=port, log_config=None,
                                access_log=False, lifespan="on")
        uvicorn.Server(config).run()
    finally:
        if broker is not None:
            broker.stop()


def run_service(name: str, settings_class: Callable[[], S], run: Callable[[S], None]) -> None:
    """`python -m services.<name>`: build the settings and run; a setting to fix (a missing
    key, an invalid value) is one line on stderr and exit code `CONFIG_EXIT`, not a
    traceback — and `driftloop up` then gives the child up instead of restarting it."""
    try:
        run(settings_class())
    except (ConfigError, ValidationError) as exc:
        sys.stderr.write(f"driftloop {name}: {settings_problem(exc)}\n")
        raise SystemExit(CONFIG_EXIT) from None
