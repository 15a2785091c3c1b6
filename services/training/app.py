"""The training service's app: health and metrics, its two consumers, the worker that
trains parked requests, and one online learner per model that declares one."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from contracts.topics import Topic
from services.training.consumers import (
    Intake,
    request_handler,
    train_parked,
    validated_handler,
)
from services.training.handlers import Trainer
from services.training.online_runner import online_workers
from services.training.routes import build_router
from services.training.settings import TrainingSettings
from shared.artifacts import ArtifactStore
from shared.consumer import Consumer
from shared.datasets import DatasetStore
from shared.project import load_project
from shared.service import Runtime, build_app


def create_app(settings: TrainingSettings) -> FastAPI:
    signer = settings.signer("training")  # training's private key lives here and nowhere else
    trainer = Trainer(load_project(settings.config), DatasetStore(settings.data_dir / "datasets"),
                      ArtifactStore(settings.data_dir / "artifacts", signer=signer),
                      settings.data_dir / "training", signer, settings.min_training_records)
    intake = Intake(trainer, settings)

    async def on_start(runtime: Runtime) -> None:
        requests = Consumer(runtime.bus, settings.group_id, [Topic.TRAINING_REQUESTS],
                            request_handler(runtime.bus, intake), max_records=100)
        validated = Consumer(runtime.bus, f"{settings.group_id}-trigger", [Topic.DATA_VALIDATED],
                             validated_handler(runtime.bus, trainer, intake))

        async def worker(stopping: asyncio.Event) -> None:
            await train_parked(runtime.bus, intake, stopping)

        runtime.spawn("training.requests", requests.run)
        runtime.spawn("data.validated", validated.run)
        runtime.spawn("train-parked", worker)
        for name, learner in online_workers(runtime.bus, trainer, settings).items():
            runtime.spawn(name, learner)
        runtime.checks["consumers_assigned"] = lambda: (requests.assigned.is_set()
                                                        and validated.assigned.is_set())

    app, runtime = build_app("training", settings, on_start)
    app.include_router(build_router(trainer.project, runtime))
    return app
