"""Kafka edge of monitoring: predictions, labels and lifecycle in; alerts and retrains out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiokafka import ConsumerRebalanceListener, TopicPartition

from contracts.events import (
    AlertRaised,
    Feedback,
    LabeledRecord,
    ModelLifecycleChanged,
    PredictionMade,
    RecordRejected,
    RecordValidated,
    TrainingRequested,
)
from contracts.topics import Topic
from services.monitoring import state
from services.monitoring.handlers import Action, Monitor
from services.monitoring.incident import alert_event_id
from shared.bus import Bus, Outgoing
from shared.changelog import Changelog
from shared.consumer import Delivery, Rejection, feed_each
from shared.dead_letters import send_dead_letter
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


def monitor_handler(bus: Bus, monitor: Monitor, registry: Verifier,
                    changelog: Changelog | None = None,
                    checkpoint_seconds: float = 2.0) -> MonitorWorker:
    """The batch handler of monitoring's consumer (see `MonitorWorker`)."""
    return MonitorWorker(bus, monitor, registry, changelog, checkpoint_seconds)


class MonitorWorker:
    """Feeds each batch to the monitor once, checkpoints its state, publishes its decisions.

    The monitor's state moves as it is fed, so a batch retried after a failed publish is
    not fed again (it would decide nothing the second time): its undelivered actions stay
    pending and are published first. A batch is known by its coordinates, which no sender
    can forge (ids can be), and the hash of its bytes (the memory broker reuses coordinates
    after a restart); an event the monitor cannot take is rejected alone (`feed_each`): a
    lifecycle decision the registry did not sign, or about an undeclared model, is never fed
    but dead-lettered with the reason. Run it with `stateful=True`.

    With a `changelog` the state survives the process (`shared/changelog.py`) and the
    workers of one group split it by partition: everything about a model — its predictions
    and their feedback (serving names each prediction on its model's partition), its
    registry decisions (keyed by its name) — arrives on one partition number, and that
    partition's state is checkpointed to the same partition of the changelog. On assignment
    a worker restores its partitions; on revocation it checkpoints and forgets them.
    Every `checkpoint_seconds`, and before any alert or retrain request is published, the
    state that changed is written with the input offsets it reflects, and the consumer
    commits only those offsets (`committable`). A worker that takes a partition over skips
    what the restored state already reflects, so each input is fed exactly once to the
    state that survives. Completed feedback records and dead letters are published before
    the checkpoint that covers their input (a replay makes the same ones again, under the
    same ids); alerts and retrain requests, whose ids are drawn at random, are written in
    the checkpoint first (its outbox) and published after, so a worker killed in between
    publishes the very same events again at restart and never a second decision.
    """

    def __init__(self, bus: Bus, monitor: Monitor, registry: Verifier,
                 changelog: Changelog | None, checkpoint_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.bus = bus
        self.monitor = monitor
        self.registry = registry
        self.changelog = changelog
        self.checkpoint_seconds = checkpoint_seconds
        self.clock = clock
        self.pending: list[tuple[Action, str]] = []
        self.applied: dict[str, int] = {}
        """Input position fed, as "topic/partition" → next offset."""
        self.durable: dict[str, int] = {}
        """Input position the last checkpoint reflects: what may be committed."""
        self.owned: set[int] = set()
        """Partition numbers this worker holds the state of."""
        self.ready = asyncio.Event()
        """Set once the first assignment's state is restored."""
        self._lock = asyncio.Lock()
        self._fed: set[tuple[str, int, int, int]] = set()
        self._rejected: list[Rejection] = []
        self._epoch = bus.epoch if changelog is not None else 0
        self._everything = False
        self._outboxes: set[int] = set()
        self._last_checkpoint = clock()

    async def restore(self) -> None:
        """Take up every partition (one worker alone: the bench, a test)."""
        await self.assigned(set(range(self.monitor.partitions)))

    async def assigned(self, partitions: set[int]) -> None:
        """Restore the state of newly assigned `partitions`, and publish what their outboxes
        still hold."""
        async with self._lock:
            new = partitions - self.owned
            self.owned |= partitions
            if self.changelog is not None and new:
                restored = await self.changelog.restore(new)
                self.monitor.restore(restored.state)
                self.applied.update(restored.offsets)
                self.durable.update(restored.offsets)
                self._everything = self._everything or bool(restored.torn)
                for partition in new:
                    outbox = restored.state.get(state.OUTBOX + str(partition).encode())
                    if outbox is not None:
                        self._outboxes.add(partition)
                        self.pending += state.load(outbox)
                if self.pending:
                    logger.info("publishing %d decisions the last owner of partitions %s "
                                "checkpointed", len(self.pending), sorted(new))
                    await self._publish(self.pending)
                await self._checkpoint()
            self.ready.set()

    async def revoked(self, partitions: set[int]) -> None:
        """Checkpoint, then forget `partitions`: their next owner restores them."""
        async with self._lock:
            if self.changelog is not None:
                await self._checkpoint()
            gone = partitions & self.owned
            self.owned -= gone
            self.monitor.forget(gone)
            for where in [w for w in self.applied if _partition(w) in gone]:
                self.applied.pop(where, None)
                self.durable.pop(where, None)

    def committable(self) -> dict[TopicPartition, int]:
        """The offsets the consumer may commit: those the last checkpoint reflects."""
        positions = {}
        for where, offset in self.durable.items():
            topic, _, partition = where.rpartition("/")
            positions[TopicPartition(topic, int(partition))] = offset
        return positions

    async def __call__(self, batch: list[Delivery]) -> list[Rejection]:
        async with self._lock:
            return await self._handle(batch)

    async def _handle(self, batch: list[Delivery]) -> list[Rejection]:
        if self.changelog is not None and self.bus.epoch != self._epoch:
            # the broker lost its topics (and this log): start it again
            self._epoch = self.bus.epoch
            self.applied.clear()
            self.durable.clear()
            self._everything = True
            await self.changelog.ensure_topic()
        identity = {(d.record.topic, d.record.partition, d.record.offset, hash(d.record.value))
                    for d in batch}
        if identity != self._fed:
            fresh: list[Delivery] = []
            reached: dict[str, int] = {}
            for delivery in batch:  # skip what the restored state already holds
                where, offset = _where(delivery), delivery.record.offset
                if offset >= self.applied.get(where, 0):
                    fresh.append(delivery)
                reached[where] = max(reached.get(where, 0), offset + 1)
            self._rejected = feed_each(fresh, self._feed)
            self._fed = identity
            for where, offset in reached.items():
                self.applied[where] = max(self.applied.get(where, 0), offset)
        if self.changelog is None:
            await self._publish(self.pending)
            return list(self._rejected)
        # The letters and what is safe to re-make go out before the checkpoint that makes
        # their input count as fed; decisions go into it first.
        for rejection in self._rejected:
            await send_dead_letter(self.bus, rejection.delivery.topic, rejection.delivery.record,
                                   rejection.reason, list(rejection.errors))
        self._rejected = []
        bulk = [item for item in self.pending if isinstance(item[0], BULK)]
        decisions = [item for item in self.pending if not isinstance(item[0], BULK)]
        await self._publish(bulk)
        self.pending = decisions
        if decisions or self.clock() - self._last_checkpoint >= self.checkpoint_seconds:
            await self._checkpoint()
        if decisions:
            await self._publish(self.pending)
            await self._checkpoint()  # the outbox is delivered
        return []

    async def checkpoint(self) -> None:
        """Write what changed, the outboxes, and the input position they reflect."""
        async with self._lock:
            await self._checkpoint()

    async def _checkpoint(self) -> None:
        if self.changelog is None:
            return
        by_partition: dict[int, dict[bytes, bytes | None]] = {p: {} for p in self.owned}
        for key, value in self.monitor.changes(everything=self._everything).items():
            partition = self.monitor.partition_of(key.split(b"/", 1)[1].decode())
            if partition in by_partition:  # a model of another worker's, touched at start
                by_partition[partition][key] = value
        outboxes: dict[int, list[tuple[Action, str]]] = {}
        for action, trace in self.pending:
            if isinstance(action, AlertRaised | TrainingRequested):  # decisions only
                outboxes.setdefault(self.monitor.partition_of(action.model), []).append(
                    (action, trace))
        writes = []
        for partition, changes in by_partition.items():
            key = state.OUTBOX + str(partition).encode()
            if partition in outboxes:
                changes[key] = state.dump(outboxes[partition])
                self._outboxes.add(partition)
            elif partition in self._outboxes:
                changes[key] = None
                self._outboxes.discard(partition)
            offsets = {w: o for w, o in self.applied.items() if _partition(w) == partition}
            writes.append(self.changelog.checkpoint(changes, offsets, partition))
        await asyncio.gather(*writes)  # partitions are independent: one wait for all
        self._everything = False
        self.durable = dict(self.applied)
        self._last_checkpoint = self.clock()

    def _feed(self, delivery: Delivery) -> None:
        event = delivery.event
        actions: list[Action] = []
        if isinstance(event, PredictionMade):
            actions = self.monitor.on_prediction(event)
        elif isinstance(event, RecordValidated):
            actions = self.monitor.on_label(event)
        elif isinstance(event, Feedback):
            actions = self.monitor.on_feedback(event)
        elif isinstance(event, ModelLifecycleChanged):
            verify_decision(self.monitor, self.registry, event)
            actions = self.monitor.on_lifecycle(event)
        self.pending.extend((action, delivery.envelope.trace_id) for action in actions)

    async def _publish(self, items: list[tuple[Action, str]]) -> None:
        """Publish `items` in order, removing each from it once the broker has it."""
        while items:
            group = _next_group(items)
            if len(group) == 1:
                await _publish_or_drop(self.bus, *group[0])
            else:
                for refusal in await self.bus.publish_many([outgoing(*item) for item in group]):
                    logger.error("dropped a decision the broker refuses: %s", refusal)
            del items[:len(group)]


class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Hands a worker the partitions it gains and loses (numbers: every input topic has the
    same count, and the range assignor gives a member the same numbers of each)."""

    def __init__(self, worker: MonitorWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.worker.revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.worker.assigned({tp.partition for tp in assigned})


def _partition(where: str) -> int:
    return int(where.rpartition("/")[2])


def _where(delivery: Delivery) -> str:
    return f"{delivery.record.topic}/{delivery.record.partition}"


BULK = (LabeledRecord, RecordRejected)
"""Actions a replay makes again identically (one per prediction id): published before the
checkpoint, not kept in its outbox."""

BULK_GROUP = 500
"""Completed feedback records and dead letters sent together, at most this many at once."""


def _next_group(pending: list[tuple[Action, str]]) -> list[tuple[Action, str]]:
    """What to send next: alerts and retrain requests one at a time, in order (an alert's
    revisions must not overtake each other); a run of completed feedback records and dead
    letters together, which are independent of each other (one per prediction id), so a
    batch of feedback costs one broker round trip rather than one each."""
    if not isinstance(pending[0][0], BULK):
        return pending[:1]
    group = []
    for item in pending[:BULK_GROUP]:
        if not isinstance(item[0], BULK):
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
