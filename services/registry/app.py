"""The registry service's app: REST API plus the models.trained consumer."""

from __future__ import annotations

from fastapi import FastAPI

from contracts.topics import Topic
from services.registry.consumers import trained_handler
from services.registry.handlers import Registry
from services.registry.routes import build_router
from services.registry.settings import RegistrySettings
from services.registry.store import RegistryStore
from shared.consumer import Consumer
from shared.project import load_project
from shared.service import Runtime, build_app


def create_app(settings: RegistrySettings) -> FastAPI:
    """Build the app; the database is migrated here, the consumer starts in the lifespan."""
    # The registry's private key lives here alone; training's public key checks runs.
    registry = Registry(load_project(settings.config),
                        RegistryStore(settings.resolved_database_url()),
                        settings.signer("registry"), settings.verifier("training"))

    async def on_start(runtime: Runtime) -> None:
        consumer = Consumer(runtime.bus, settings.group_id, [Topic.MODELS_TRAINED],
                            trained_handler(runtime.bus, registry))
        runtime.spawn("models.trained", consumer.run)
        runtime.checks["consumer_assigned"] = consumer.assigned.is_set

    async def on_stop(runtime: Runtime) -> None:
        registry.store.close()

    app, runtime = build_app("registry", settings, on_start, on_stop, "driftloop registry")
    app.include_router(build_router(registry, runtime))
    return app
