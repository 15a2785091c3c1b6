"""Kafka edge of serving: follow models.lifecycle and load every new champion the registry
signed."""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from contracts.events import LifecycleAction, ModelLifecycleChanged
from services.serving.models import ModelManager
from shared.consumer import Consumer, Delivery, EventHandler
from shared.errors import StaleDecision, UndeclaredModel
from shared.project import Project
from shared.registry_client import fetch_champions_when_reachable
from shared.signing import Verifier

logger = logging.getLogger(__name__)


def lifecycle_handler(models: ModelManager, registry: Verifier) -> EventHandler:
    """Act on a decision only if the registry signed it, about a declared model, and it is
    not older than one applied. Otherwise raise an `InvalidInput`: `per_event` dead-letters
    the event with the reason, and nothing changes."""

    async def handle(delivery: Delivery) -> None:
        event = cast(ModelLifecycleChanged, delivery.event)
        if event.model not in models.declared:
            raise UndeclaredModel(model=event.model)
        registry.verify_decision(event)
        if (event.action in (LifecycleAction.PROMOTED, LifecycleAction.ROLLED_BACK)
                and event.champion_version == event.version):
            await models.load(event.model, event.version, event.artifact,
                              sequence=event.sequence or 0)

    return handle


async def follow_champions(project: Project, models: ModelManager, registry_url: str,
                           lifecycle: Consumer, synced: asyncio.Event,
                           stopping: asyncio.Event) -> None:
    """Load each model's champion from the registry whenever the lifecycle consumer has
    (re)joined: at start-up, and after a restart that may have missed promotions.

    A registry answer never overwrites a model a lifecycle event swapped meanwhile (that
    event is newer); `synced` is set after the first full pass.
    """
    done_for = 0
    while not stopping.is_set():
        if lifecycle.assigned.is_set() and lifecycle.generation != done_for:
            done_for = lifecycle.generation
            marks = {model: models.swaps(model) for model in project.models}
            async for model, champion in fetch_champions_when_reachable(
                    registry_url, project.models, stopping):
                if champion is None:
                    continue
                try:
                    await models.load(model, champion.version, champion.artifact,
                                      unless_swapped_since=marks[model],
                                      sequence=champion.decision_sequence)
                except StaleDecision as exc:  # a newer decision arrived meanwhile
                    logger.info("registry answer for %s skipped: %s", model, exc)
            synced.set()
        await asyncio.sleep(0.5)
