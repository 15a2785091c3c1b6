"""Kafka edge of the registry: models.trained in, models.lifecycle out."""

from __future__ import annotations

import asyncio
from typing import cast

from contracts.events import ModelTrained
from contracts.topics import Topic
from services.registry.handlers import Registry
from shared.bus import Bus
from shared.consumer import BatchHandler, Delivery, per_event


def trained_handler(bus: Bus, registry: Registry) -> BatchHandler:
    """Record the candidate, then publish the decision with a deterministic ce_id so a replay
    after a crash (decision stored, not yet published) is de-duplicated downstream."""

    async def handle(delivery: Delivery) -> None:
        event = cast(ModelTrained, delivery.event)
        decisions = await asyncio.to_thread(registry.record, event)
        for decision in decisions:
            await bus.publish(Topic.MODELS_LIFECYCLE, decision, key=decision.model,
                              ce_id=f"{decision.model}/v{decision.version}/{decision.action}"
                                    f"/{event.run_id}")

    return per_event(handle)
