"""The serving service's app: inference API, lifecycle follower, prediction outbox."""

from __future__ import annotations

import asyncio
import uuid

from fastapi import FastAPI

from contracts.topics import Topic
from services.serving.consumers import follow_champions, lifecycle_handler
from services.serving.feedback import build_router as feedback_router
from services.serving.handlers import Predictor
from services.serving.learning import ServingLearner, registry_lineage
from services.serving.models import ModelManager
from services.serving.publishing import deliver_to, prediction_outbox
from services.serving.routes import build_router
from services.serving.settings import ServingSettings
from services.serving.v2 import build_v2_router
from shared.artifacts import ArtifactStore
from shared.consumer import Consumer, per_event
from shared.datasets import DatasetStore
from shared.project import load_project
from shared.service import Runtime, build_app


def create_app(settings: ServingSettings) -> FastAPI:
    project = load_project(settings.config)
    learner = ServingLearner(project, DatasetStore(settings.data_dir / "datasets"),
                             registry_lineage(settings.registry_url))
    # Public keys only: training's checks each artifact, the registry's each decision.
    models = ModelManager(ArtifactStore(settings.data_dir / "artifacts",
                                        verifier=settings.verifier("training")),
                          declared=project.models,
                          prepare=learner.prepare if learner.models else None)
    registry = settings.verifier("registry")

    async def on_start(runtime: Runtime) -> None:
        await outbox.start(runtime.bus.producer, runtime.bus.topic(Topic.PREDICTIONS))
        # Every replica must see every decision: a group of its own, from now on.
        lifecycle = Consumer(runtime.bus, f"serving-{uuid.uuid4().hex[:8]}",
                             [Topic.MODELS_LIFECYCLE],
                             per_event(lifecycle_handler(models, registry)),
                             from_beginning=False)
        runtime.spawn("models.lifecycle", lifecycle.run)
        synced = asyncio.Event()

        async def follow(stopping: asyncio.Event) -> None:
            await follow_champions(project, models, settings.registry_url, lifecycle, synced,
                                   stopping)

        runtime.spawn("follow-champions", follow)
        if learner.models:
            async def learn(stopping: asyncio.Event) -> None:
                await learner.run(models, stopping)

            runtime.spawn("learn-while-serving", learn)
        runtime.checks["champions_fetched"] = synced.is_set

    async def on_stop(runtime: Runtime) -> None:
        # uvicorn has finished every request by now: drain what they answered for.
        await outbox.stop(settings.outbox_drain_seconds)

    app, runtime = build_app("serving", settings, on_start, on_stop, "driftloop serving")
    outbox = prediction_outbox(settings, runtime.bus)
    predictor = Predictor(project, models, deliver_to(outbox, settings),
                          settings.max_batch_instances, settings.inline_body_bytes,
                          settings.kafka_partitions)
    app.include_router(build_router(predictor, runtime.auth))
    app.include_router(build_v2_router(predictor, runtime.auth,
                                       lambda: runtime.is_ready()[0]))
    app.include_router(feedback_router(runtime.bus, project, runtime.auth))
    return app
