"""The ingestion service's app: health and metrics over HTTP, the data.labeled consumer."""

from __future__ import annotations

from fastapi import FastAPI

from contracts.topics import Topic
from services.ingestion.consumers import labeled_handler
from services.ingestion.handlers import Ingestor
from services.ingestion.settings import IngestionSettings
from shared.consumer import Consumer
from shared.datasets import DatasetStore
from shared.project import load_project
from shared.service import Runtime, build_app


def create_app(settings: IngestionSettings) -> FastAPI:
    """Build the app; the consumer starts with the app's lifespan."""
    project = load_project(settings.config)
    ingestor = Ingestor(project, DatasetStore(settings.data_dir / "datasets"))

    async def on_start(runtime: Runtime) -> None:
        consumer = Consumer(runtime.bus, settings.group_id, [Topic.DATA_LABELED],
                            labeled_handler(runtime.bus, ingestor))
        runtime.spawn("data.labeled", consumer.run)
        runtime.checks["consumer_assigned"] = consumer.assigned.is_set

    app, _ = build_app("ingestion", settings, on_start)
    return app
