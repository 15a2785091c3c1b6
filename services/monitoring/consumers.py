"""Kafka edge of monitoring: predictions, labels and lifecycle in; alerts and retrains out."""

from __future__ import annotations

import asyncio
import logging

from contracts.events import (
    AlertRaised,
    Feedback,
    LabeledRecord,
    ModelLifecycleChanged,
    PredictionMade,
    RecordRejected,
    RecordValidated,
)
from contracts.topics import Topic
from services.monitoring.handlers import Action, Monitor
from services.monitoring.incident import alert_event_id
from shared.bus import Bus, Outgoing
from shared.consumer import BatchHandler, Delivery, Rejection, feed_each
from shared.errors import PublishRefused, UndeclaredModel
from shared.registry_client import fetch_champions_when_reachable
from shared.signing import Verifier

logger = logging.getLogger(__name__)


def outgoing(action: Action, trace_id: str) -> Outgoing:
    """Where and how a decision is published, in the trace of the event that caused it."""
    if isinstance(action, AlertRaised):
        return Topic.ALERTS, action, action.model, alert_event_id(action), trace_id
    if isinstance(action, LabeledRecord):  # feedback completed by its prediction
        return Topic.DATA_LABELED, action, action.message_key, action.record_id, trace_id
    if isinstance(action, RecordRejected):  # feedback whose prediction never came
        return Topic.DATA_REJECTED, action, action.key or "", None, trace_id
    return Topic.TRAINING_REQUESTS, action, action.model, action.request_id, trace_id


async def publish_action(bus: Bus, action: Action, trace_id: str) -> None:
    """Publish a decision in the trace of the event that caused it."""
    topic, event, key, ce_id, trace = outgoing(action, trace_id)
    await bus.publish(topic, event, key=key, ce_id=ce_id, trace_id=trace)


def monitor_handler(bus: Bus, monitor: Monitor, registry: Verifier) -> BatchHandler:
    """Feed each batch to the monitor once, then publish what it decided.

    The monitor's state moves as it is fed, so a batch retried after a failed publish is
    not fed again (it would decide nothing the second time): its undelivered actions stay
    pending and are published first, before the offset is committed. A batch is known by
    its coordinates, which no sender can forge (ids can be), and the hash of its bytes (the
    memory broker reuses coordinates after a restart); an event the monitor cannot take is
    rejected alone (`feed_each`): a lifecycle decision the registry did not sign, or about an
    undeclared model, is never fed but dead-lettered with the reason. Run it with
    `stateful=True`.
    """
    pending: list[tuple[Action, str]] = []
    fed: set[tuple[str, int, int, int]] = set()
    rejected: list[Rejection] = []

    def feed(delivery: Delivery) -> None:
        event = delivery.event
        actions: list[Action] = []
        if isinstance(event, PredictionMade):
            actions = monitor.on_prediction(event)
        elif isinstance(event, RecordValidated):
            actions = monitor.on_label(event)
        elif isinstance(event, Feedback):
            actions = monitor.on_feedback(event)
        elif isinstance(event, ModelLifecycleChanged):
            verify_decision(monitor, registry, event)
            actions = monitor.on_lifecycle(event)
        pending.extend((action, delivery.envelope.trace_id) for action in actions)

    async def handle(batch: list[Delivery]) -> list[Rejection]:
        nonlocal fed, rejected
        identity = {(d.record.topic, d.record.partition, d.record.offset, hash(d.record.value))
                    for d in batch}
        if identity != fed:
            rejected = feed_each(batch, feed)
            fed = identity
        while pending:
            group = _next_group(pending)
            if len(group) == 1:
                await _publish_or_drop(bus, *group[0])
            else:
                for refusal in await bus.publish_many([outgoing(*item) for item in group]):
                    logger.error("dropped a decision the broker refuses: %s", refusal)
            del pending[:len(group)]
        return list(rejected)

    return handle


BULK_GROUP = 500
"""Completed feedback records and dead letters sent together, at most this many at once."""


def _next_group(pending: list[tuple[Action, str]]) -> list[tuple[Action, str]]:
    """What to send next: alerts and retrain requests one at a time, in order (an alert's
    revisions must not overtake each other); a run of completed feedback records and dead
    letters together, which are independent of each other (one per prediction id), so a
    batch of feedback costs one broker round trip rather than one each."""
    bulk = (LabeledRecord, RecordRejected)
    if not isinstance(pending[0][0], bulk):
        return pending[:1]
    group = []
    for item in pending[:BULK_GROUP]:
        if not isinstance(item[0], bulk):
            break
        group.append(item)
    return group


async def _publish_or_drop(bus: Bus, action: Action, trace_id: str) -> None:
    try:
        await publish_action(bus, action, trace_id)
    except PublishRefused:  # our own event, refused as such: retrying cannot help
        logger.exception("dropped a decision the broker refuses: %r", action)


def verify_decision(monitor: Monitor, registry: Verifier, event: ModelLifecycleChanged) -> None:
    """Raise an `InvalidInput` unless the decision is about a declared model and signed by
    the registry."""
    if event.model not in monitor.watches:
        raise UndeclaredModel(model=event.model)
    registry.verify_decision(event)


async def load_champions(monitor: Monitor, registry_url: str, stopping: asyncio.Event) -> None:
    """At start-up, learn which version serves each model and its data reference."""
    async for model, champion in fetch_champions_when_reachable(registry_url, monitor.watches,
                                                                stopping):
        if champion is not None and monitor.watches[model].concept.version is None:
            monitor.on_champion(model, champion.version, champion.reference_profile,
                                champion.metrics, champion.decision_sequence)
