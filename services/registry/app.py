"""The registry service's app: REST API plus the models.trained consumer."""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from sqlalchemy.exc import OperationalError

from contracts.topics import Topic
from services.registry.consumers import trained_handler
from services.registry.handlers import Registry
from services.registry.outbox import OutboxPublisher
from services.registry.routes import build_router
from services.registry.settings import RegistrySettings
from services.registry.store import RegistryStore
from shared.consumer import Consumer
from shared.http_errors import error_response
from shared.project import load_project
from shared.service import Runtime, build_app


def create_app(settings: RegistrySettings) -> FastAPI:
    """Build the app; the database is migrated here, the consumer starts in the lifespan."""
    # The registry's private key lives here alone; training's public key checks runs.
    registry = Registry(load_project(settings.config),
                        RegistryStore(settings.resolved_database_url()),
                        settings.signer("registry"), settings.verifier("training"))

    async def on_start(runtime: Runtime) -> None:
        runtime.spawn("outbox", publisher.run)  # first sends what an earlier run left pending
        consumer = Consumer(runtime.bus, settings.group_id, [Topic.MODELS_TRAINED],
                            trained_handler(registry, publisher.notify))
        runtime.spawn("models.trained", consumer.run)
        runtime.checks["consumer_assigned"] = consumer.assigned.is_set

    async def on_stop(runtime: Runtime) -> None:
        registry.store.close()

    app, runtime = build_app("registry", settings, on_start, on_stop, "driftloop registry")
    publisher = OutboxPublisher(registry.store, runtime.bus)
    app.include_router(build_router(registry, runtime, publisher.notify))

    async def database_unavailable(request: Request, exc: Exception) -> Response:
        # Locked (SQLite) or unreachable (PostgreSQL): retryable, and the SQL stays private.
        return error_response(503, "DependencyUnavailable",
                              "registry database unavailable; retry later")

    app.add_exception_handler(OperationalError, database_unavailable)
    return app
