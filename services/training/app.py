"""The training service's app: health and metrics, plus its two consumers."""

from __future__ import annotations

from fastapi import FastAPI

from contracts.topics import Topic
from services.training.consumers import request_handler, validated_handler
from services.training.handlers import Trainer
from services.training.routes import build_router
from services.training.settings import TrainingSettings
from shared.artifacts import ArtifactStore
from shared.consumer import Consumer
from shared.datasets import DatasetStore
from shared.project import load_project
from shared.service import Runtime, build_app


def create_app(settings: TrainingSettings) -> FastAPI:
    trainer = Trainer(load_project(settings.config), DatasetStore(settings.data_dir / "datasets"),
                      ArtifactStore(settings.data_dir / "artifacts",
                                    settings.signing_key_bytes()),
                      settings.data_dir / "training", settings.min_training_records)

    async def on_start(runtime: Runtime) -> None:
        requests = Consumer(runtime.bus, settings.group_id, [Topic.TRAINING_REQUESTS],
                            request_handler(runtime.bus, trainer, settings), max_records=1)
        validated = Consumer(runtime.bus, f"{settings.group_id}-trigger", [Topic.DATA_VALIDATED],
                             validated_handler(runtime.bus, trainer))
        runtime.spawn("training.requests", requests.run)
        runtime.spawn("data.validated", validated.run)
        runtime.checks["consumers_assigned"] = lambda: (requests.assigned.is_set()
                                                        and validated.assigned.is_set())

    app, runtime = build_app("training", settings, on_start)
    app.include_router(build_router(trainer.project, runtime))
    return app
