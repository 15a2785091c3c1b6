"""What every service process shares: lifespan, background workers, health, metrics.

`build_app` returns a FastAPI app whose lifespan starts the bus, runs the
service's `on_start` (which spawns its consumers as supervised workers), and
on shutdown stops workers, then the bus. Workers that crash are logged and
restarted with backoff, never silently lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.auth import Authenticator
from shared.broker import EmbeddedBroker
from shared.bus import Bus
from shared.consumer import ConsumerReset
from shared.http_errors import install_error_handlers, json_response
from shared.logs import configure_logging
from shared.registry_client import present_token
from shared.settings import CommonSettings
from shared.tokens import auth_headers
from shared.tracing import new_trace_id, parse_traceparent, trace_id_var

logger = logging.getLogger(__name__)

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

    app = FastAPI(title=title or f"driftloop {name}", lifespan=lifespan)
    app.add_middleware(TraceMiddleware)
    install_error_handlers(app)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok", "service": name}

    @app.get("/readyz", tags=["ops"])
    async def readyz() -> Response:
        """Readiness: connected, workers started, and the service's own checks pass."""
        ok, checks = runtime.is_ready()
        return json_response({"ready": ok, "checks": checks}, 200 if ok else 503)

    @app.get("/metrics", tags=["ops"], dependencies=runtime.auth.reads)
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
