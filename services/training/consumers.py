"""Kafka edge of training: requests in, candidates out; data.validated counts toward the
first training of each model."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import cast

from contracts.events import RecordValidated, TrainingRequested
from contracts.topics import Topic
from services.training.handlers import Trainer
from services.training.settings import TrainingSettings
from shared.bus import Bus
from shared.consumer import BatchHandler, Delivery, Rejection, per_event
from shared.errors import DependencyUnavailable
from shared.registry_client import fetch_champion

logger = logging.getLogger(__name__)


def request_handler(bus: Bus, trainer: Trainer, settings: TrainingSettings) -> BatchHandler:
    """Run each request once: wait for its window to fill, train off the event loop, publish."""

    async def handle(delivery: Delivery) -> None:
        request = cast(TrainingRequested, delivery.event)
        done = trainer.completed(request.request_id)
        if done is None:
            await _wait_for_window(trainer, request, settings.window_wait_seconds)
            champion = await fetch_champion(settings.registry_url, request.model)
            try:
                done = await asyncio.to_thread(trainer.train, request, champion)
            except OSError as exc:  # a store unwritable or full: retry, never drop the request
                raise DependencyUnavailable(dependency="stores", detail=str(exc)) from exc
        else:
            logger.info("request %s already trained as %s; re-publishing", request.request_id,
                        done.run_id)
        await bus.publish(Topic.MODELS_TRAINED, done, key=done.model, ce_id=done.run_id)

    return per_event(handle)


async def _wait_for_window(trainer: Trainer, request: TrainingRequested, limit: float) -> None:
    deadline = time.monotonic() + limit
    needed = request.window.min_records
    while (have := trainer.window_records(request)) < needed:
        if time.monotonic() >= deadline:
            logger.warning("window of %s has %d of %d records after %.0fs; training on those",
                           request.request_id, have, needed, limit)
            return
        await asyncio.sleep(0.5)


def validated_handler(bus: Bus, trainer: Trainer) -> BatchHandler:
    """Publish each model's first training request once its dataset has enough records."""

    async def handle(batch: list[Delivery]) -> list[Rejection]:
        highest: dict[str, int] = {}
        for delivery in batch:
            record = cast(RecordValidated, delivery.event)
            highest[record.dataset] = max(highest.get(record.dataset, 0), record.sequence + 1)
        for dataset, seen in highest.items():
            for request in trainer.initial_requests(dataset, seen):
                await bus.publish(Topic.TRAINING_REQUESTS, request, key=request.model,
                                  ce_id=request.request_id)
                trainer.mark_requested(request.model)
                logger.info("requested the first training of %s after %d records",
                            request.model, seen)
        return []

    return handle
