"""Kafka edge of the registry: models.trained in, models.lifecycle out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from sqlalchemy.exc import OperationalError

from contracts.events import ModelTrained
from services.registry.handlers import Registry
from shared.consumer import BatchHandler, Delivery, per_event
from shared.errors import DependencyUnavailable


def trained_handler(registry: Registry, notify: Callable[[], None]) -> BatchHandler:
    """Record the candidate and its decision (the decision's events are written to the outbox
    in the same transaction), then wake the outbox publisher. The offset is committed once the
    decision is durable; publishing it is the outbox's job, at-least-once. A run that training
    did not sign, or of an undeclared model, is dead-lettered by `per_event` (an `InvalidInput`)
    and changes nothing."""

    async def handle(delivery: Delivery) -> None:
        event = cast(ModelTrained, delivery.event)
        try:
            decisions = await asyncio.to_thread(registry.record, event)
        except (OperationalError, OSError) as exc:  # database down or locked: retry, not poison
            raise DependencyUnavailable(dependency="registry database", detail=str(exc)) from exc
        if decisions:
            notify()

    return per_event(handle)
