"""Kafka edge of serving: follow models.lifecycle and load every new champion."""

from __future__ import annotations

import asyncio
from typing import cast

from contracts.events import LifecycleAction, ModelLifecycleChanged
from services.serving.models import ModelManager
from shared.consumer import Consumer, Delivery, EventHandler
from shared.project import Project
from shared.registry_client import fetch_champions_when_reachable


def lifecycle_handler(models: ModelManager) -> EventHandler:
    async def handle(delivery: Delivery) -> None:
        event = cast(ModelLifecycleChanged, delivery.event)
        if (event.action in (LifecycleAction.PROMOTED, LifecycleAction.ROLLED_BACK)
                and event.champion_version == event.version):
            await models.load(event.model, event.version, event.artifact)

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
                if champion is not None:
                    await models.load(model, champion.version, champion.artifact,
                                      unless_swapped_since=marks[model])
            synced.set()
        await asyncio.sleep(0.5)
