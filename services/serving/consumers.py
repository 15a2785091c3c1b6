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


async def load_champions(project: Project, models: ModelManager, registry_url: str,
                         lifecycle: Consumer, stopping: asyncio.Event) -> None:
    """At start-up, once following models.lifecycle, load each model's current champion.

    Models that a lifecycle event already loaded are left alone (that event is newer).
    """
    await lifecycle.assigned.wait()
    async for model, champion in fetch_champions_when_reachable(registry_url, project.models,
                                                                stopping):
        if champion is not None and not models.has(model):
            await models.load(model, champion.version, champion.artifact)
