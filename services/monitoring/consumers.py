"""Kafka edge of monitoring: predictions, labels and lifecycle in; alerts and retrains out."""

from __future__ import annotations

import asyncio

from contracts.events import (
    AlertRaised,
    ModelLifecycleChanged,
    PredictionMade,
    RecordValidated,
)
from contracts.topics import Topic
from services.monitoring.handlers import Action, Monitor
from shared.bus import Bus
from shared.consumer import BatchHandler, Delivery, Rejection
from shared.registry_client import fetch_champions_when_reachable


async def publish_actions(bus: Bus, actions: list[Action]) -> None:
    for action in actions:
        if isinstance(action, AlertRaised):
            await bus.publish(Topic.ALERTS, action, key=action.model,
                              ce_id=f"{action.alert_id}/{action.status}")
        else:
            await bus.publish(Topic.TRAINING_REQUESTS, action, key=action.model,
                              ce_id=action.request_id)


def monitor_handler(bus: Bus, monitor: Monitor) -> BatchHandler:
    """Feed every event to the monitor in order; publish what it decides before committing."""

    async def handle(batch: list[Delivery]) -> list[Rejection]:
        actions: list[Action] = []
        for delivery in batch:
            event = delivery.event
            if isinstance(event, PredictionMade):
                actions += monitor.on_prediction(event)
            elif isinstance(event, RecordValidated):
                actions += monitor.on_label(event)
            elif isinstance(event, ModelLifecycleChanged):
                actions += monitor.on_lifecycle(event)
        await publish_actions(bus, actions)
        return []

    return handle


async def load_champions(monitor: Monitor, registry_url: str, stopping: asyncio.Event) -> None:
    """At start-up, learn which version serves each model and its data reference."""
    async for model, champion in fetch_champions_when_reachable(registry_url, monitor.watches,
                                                                stopping):
        if champion is not None and monitor.watches[model].concept.version is None:
            monitor.on_champion(model, champion.version, champion.reference_profile,
                                champion.metrics)
