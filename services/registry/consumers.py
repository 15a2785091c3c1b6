"""Kafka edge of the registry: models.trained in, models.lifecycle out."""

from __future__ import annotations

import asyncio
from typing import cast

from sqlalchemy.exc import OperationalError

from contracts.events import ModelTrained
from contracts.topics import Topic
from services.registry.handlers import Registry
from shared.bus import Bus
from shared.consumer import BatchHandler, Delivery, per_event
from shared.errors import DependencyUnavailable


def trained_handler(bus: Bus, registry: Registry) -> BatchHandler:
    """Record the candidate, then publish the decision with a deterministic ce_id so a replay
    after a crash (decision stored, not yet published) is de-duplicated downstream. A run
    that training did not sign, or of an undeclared model, is dead-lettered by `per_event`
    (an `InvalidInput`) and changes nothing."""

    async def handle(delivery: Delivery) -> None:
        event = cast(ModelTrained, delivery.event)
        try:
            decisions = await asyncio.to_thread(registry.record, event)
        except (OperationalError, OSError) as exc:  # database down or locked: retry, not poison
            raise DependencyUnavailable(dependency="registry database", detail=str(exc)) from exc
        for decision in decisions:
            await bus.publish(Topic.MODELS_LIFECYCLE, decision, key=decision.model,
                              ce_id=f"{decision.model}/v{decision.version}/{decision.action}"
                                    f"/{event.run_id}")

    return per_event(handle)
