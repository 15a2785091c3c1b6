"""At-least-once consumption: decode, de-duplicate, handle, dead-letter, then commit.

A batch from `getmany` is decoded against the topic's contract; messages that
do not decode go to the dead-letter topic. The handler gets the decoded batch
and returns the deliveries it rejects (poison), which are dead-lettered too.
Offsets are committed only after the handler returned, i.e. after its effect
is durable. A handler that raises is retried with backoff: forever for
`DependencyUnavailable` (skipping would lose data), `max_attempts` times for
anything else; then the culprit is isolated by bisecting the batch, so only the
records the handler cannot take are dead-lettered and the rest go on. A
`stateful` handler (one whose state moves as it is fed) is never fed parts of a
batch again: it must reject bad records itself (see `feed_each`).

De-duplication drops a message only when the sender's ce_id AND the message
bytes match one already handled: an id alone, which any writer of the topic
can set, never makes another message vanish; messages without a ce_id are left
to the handler's natural-key idempotency.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiokafka import (
    AIOKafkaConsumer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from contracts.base import Contract
from contracts.catalogue import CATALOGUE
from contracts.topics import Topic
from shared.bus import Bus, _retry_start
from shared.dead_letters import DEAD_LETTER_MAX_BYTES, send_dead_letter
from shared.envelope import Envelope, read_envelope
from shared.errors import DependencyUnavailable, InvalidInput
from shared.metrics import EVENTS_CONSUMED, HANDLER_RETRIES
from shared.tracing import event_id_var, trace_id_var
from shared.validation import field_errors

logger = logging.getLogger(__name__)


class ConsumerReset(Exception):
    """The consumer must be rebuilt (its group or partitions no longer exist)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """A decoded message with its envelope and coordinates."""

    topic: Topic
    event: Contract
    envelope: Envelope
    record: ConsumerRecord


@dataclass(frozen=True, slots=True)
class Rejection:
    """A delivery the handler refuses, with the reason a person will read."""

    delivery: Delivery
    reason: str
    errors: tuple[tuple[str, str], ...] = ()


BatchHandler = Callable[[list[Delivery]], Awaitable[list[Rejection]]]
EventHandler = Callable[[Delivery], Awaitable[None]]


def per_event(handler: EventHandler) -> BatchHandler:
    """Adapt a one-event handler: `InvalidInput` from it rejects that event only."""

    async def handle(batch: list[Delivery]) -> list[Rejection]:
        rejected: list[Rejection] = []
        for delivery in batch:
            trace_id_var.set(delivery.envelope.trace_id)
            event_id_var.set(delivery.envelope.ce_id)
            try:
                await handler(delivery)
            except InvalidInput as exc:
                rejected.append(Rejection(delivery, str(exc), tuple(exc.errors)))
        return rejected

    return handle


def feed_each(batch: list[Delivery], feed: Callable[[Delivery], None]) -> list[Rejection]:
    """Feed each delivery once to a stateful handler's synchronous step; a record it cannot
    take is rejected alone — `InvalidInput` with its reason, any other error as a fault of
    that record — and the rest of the batch goes on. The consumer never re-feeds a
    `stateful` handler, so this is where its culprits are isolated."""
    rejected: list[Rejection] = []
    for delivery in batch:
        trace_id_var.set(delivery.envelope.trace_id)
        event_id_var.set(delivery.envelope.ce_id)
        try:
            feed(delivery)
        except InvalidInput as exc:
            rejected.append(Rejection(delivery, str(exc), tuple(exc.errors)))
        except DependencyUnavailable:
            raise
        except Exception as exc:  # a bug or an input no check foresaw: this record only
            logger.exception("could not handle %s[%d]@%d; rejecting it alone",
                             delivery.record.topic, delivery.record.partition,
                             delivery.record.offset)
            rejected.append(Rejection(delivery, f"handler failed on this record: {exc!r}"))
    return rejected


class Consumer:
    """One consumer group member reading `topics` and feeding `handler`."""

    def __init__(self, bus: Bus, group_id: str | None, topics: list[Topic],
                 handler: BatchHandler, *, from_beginning: bool = True,
                 max_records: int = 500, max_attempts: int = 5, dedup_size: int = 100_000,
                 commit_timeout: float = 15.0, stateful: bool = False,
                 max_letter_bytes: int = DEAD_LETTER_MAX_BYTES,
                 committable: Callable[[], Mapping[TopicPartition, int]] | None = None,
                 listener: ConsumerRebalanceListener | None = None,
                 aligned: bool = False):
        self.bus = bus
        self.group_id = group_id
        self.topics = topics
        self.handler = handler
        self.from_beginning = from_beginning
        self.max_records = max_records
        self.max_attempts = max_attempts
        self.commit_timeout = commit_timeout
        self.stateful = stateful
        """The handler's state moves as it is fed: never re-feed parts of a batch."""
        self.max_letter_bytes = max_letter_bytes
        self.committable = committable
        """For a handler that checkpoints its state now and then: the offsets its last
        checkpoint reflects, committed instead of each batch's end (what was handled after
        it is read again after a restart, and the handler skips what it already holds)."""
        self.listener = listener
        """Told of each partition gained and lost (a handler whose state is per partition)."""
        self.aligned = aligned
        """Range assignment: a member gets the same partition numbers of every topic, so
        co-partitioned topics (keyed alike, same partition count) meet in one member."""
        self._committed: dict[TopicPartition, int] = {}
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._dedup_size = dedup_size
        self._by_name = {bus.topic(t): t for t in topics}
        self.assigned = asyncio.Event()
        self.generation = 0
        """Incremented each time the consumer (re)starts; followers re-sync on a change."""

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume until `stopping` is set; then commit what was handled and leave the group.

        Raises `ConsumerReset` when the broker lost its state (the bus epoch moved) or a
        commit cannot complete; the runtime then starts a fresh consumer, and what was
        handled but not committed is delivered again (at-least-once).
        """
        epoch = self.bus.epoch
        # Only this process's memory of what it handled; handlers stay idempotent by natural
        # keys across a restart.
        self._seen.clear()
        self._committed.clear()
        self.assigned.clear()
        self.generation += 1
        strategy = ((RangePartitionAssignor,) if self.aligned
                    else (RoundRobinPartitionAssignor,))
        consumer = AIOKafkaConsumer(
            *(() if self.listener else self._by_name),
            bootstrap_servers=self.bus.settings.kafka_bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if self.from_beginning else "latest",
            client_id=f"driftloop-{self.bus.source}",
            partition_assignment_strategy=strategy,
            **self.bus.settings.kafka_client_options(),
        )
        if self.listener is not None:
            consumer.subscribe(list(self._by_name), listener=self.listener)
        await _retry_start(consumer.start, self.bus.connect_timeout, "consumer")
        try:
            while not stopping.is_set():
                if self.bus.epoch != epoch:
                    raise ConsumerReset("the broker lost its topics and groups")
                batches = await consumer.getmany(timeout_ms=200, max_records=self.max_records)
                if consumer.assignment():
                    self.assigned.set()
                for tp, records in batches.items():
                    await self._handle_partition_batch(tp, records)
                    if self.group_id is None:
                        continue
                    if self.committable is None:
                        await self._commit(consumer, {tp: records[-1].offset + 1})
                    else:
                        await self._commit_checkpointed(consumer)
        finally:
            await consumer.stop()

    async def _commit_checkpointed(self, consumer: AIOKafkaConsumer) -> None:
        assert self.committable is not None
        assigned = consumer.assignment()
        moved = {tp: offset for tp, offset in self.committable().items()
                 if tp in assigned and self._committed.get(tp) != offset}
        if moved:  # one request for every partition a checkpoint moved
            await self._commit(consumer, moved)
            self._committed.update(moved)

    async def _commit(self, consumer: AIOKafkaConsumer,
                      offsets: dict[TopicPartition, int]) -> None:
        # aiokafka retries a commit to a partition the broker no longer knows forever.
        try:
            await asyncio.wait_for(consumer.commit(offsets), self.commit_timeout)
        except (TimeoutError, KafkaError) as exc:
            where = ", ".join(f"{tp.topic}[{tp.partition}]@{o}" for tp, o in offsets.items())
            raise ConsumerReset(f"commit of {where} failed: {exc!r}") from exc

    async def _handle_partition_batch(self, tp: TopicPartition,
                                      records: list[ConsumerRecord]) -> None:
        topic = self._by_name[tp.topic]
        deliveries: list[Delivery] = []
        keys: dict[int, bytes] = {}
        in_batch: set[bytes] = set()
        for record in records:
            envelope = read_envelope(record.headers, tp.topic, tp.partition, record.offset)
            if envelope.id_given:
                key = _dedup_key(envelope.ce_id, record.value)
                if key in self._seen or key in in_batch:
                    EVENTS_CONSUMED.labels(topic.value, "duplicate").inc()
                    continue
                in_batch.add(key)
                keys[record.offset] = key
            try:
                if record.value is None:
                    raise ValueError("message has no value")
                event = CATALOGUE[topic].model.model_validate_json(record.value)
            except ValidationError as exc:
                errors = field_errors(exc)
                await self._dead_letter(topic, record, "; ".join(f"{f or 'value'}: {m}"
                                                                 for f, m in errors), errors)
                continue
            except ValueError as exc:
                await self._dead_letter(topic, record, str(exc), [])
                continue
            deliveries.append(Delivery(topic, event, envelope, record))
        if not deliveries:
            return
        rejections = await self._run_handler(topic, deliveries)
        for rejection in rejections:
            await self._dead_letter(topic, rejection.delivery.record, rejection.reason,
                                    list(rejection.errors))
        rejected = {r.delivery.record.offset for r in rejections}
        for delivery in deliveries:
            if delivery.record.offset in keys:
                self._remember(keys[delivery.record.offset])
            outcome = "rejected" if delivery.record.offset in rejected else "ok"
            EVENTS_CONSUMED.labels(topic.value, outcome).inc()

    async def _run_handler(self, topic: Topic, deliveries: list[Delivery]) -> list[Rejection]:
        """The handler's rejections; when it keeps failing, those of `_isolate`."""
        try:
            return await self._attempt(topic, deliveries, self.max_attempts)
        except Exception as exc:  # a bug or a bad event the handler did not classify
            if self.stateful or len(deliveries) == 1:
                logger.error("handler for %s failed %d times; dead-lettering %d events (%r)",
                             topic.value, self.max_attempts, len(deliveries), exc)
                return [Rejection(d, f"handler failed after {self.max_attempts} attempts: "
                                     f"{exc!r}") for d in deliveries]
            logger.warning("handler for %s failed %d times on %d events (%r); isolating the "
                           "culprit", topic.value, self.max_attempts, len(deliveries), exc)
            return await self._isolate(topic, deliveries)

    async def _isolate(self, topic: Topic, deliveries: list[Delivery]) -> list[Rejection]:
        """Bisect: a half that succeeds is done, a half that fails is split again, and a
        single record that fails is rejected alone. Each part is tried once (the whole batch
        already failed `max_attempts` times); dependency failures are still waited out."""
        rejected: list[Rejection] = []
        middle = len(deliveries) // 2
        for part in (deliveries[:middle], deliveries[middle:]):
            try:
                rejected += await self._attempt(topic, part, 1)
            except Exception as exc:  # the culprit is in this part
                if len(part) > 1:
                    rejected += await self._isolate(topic, part)
                else:
                    logger.warning("handler for %s fails on %s[%d]@%d alone: %r", topic.value,
                                   part[0].record.topic, part[0].record.partition,
                                   part[0].record.offset, exc)
                    rejected.append(Rejection(part[0], f"handler failed on this record: "
                                                       f"{exc!r}"))
        return rejected

    async def _attempt(self, topic: Topic, deliveries: list[Delivery],
                       attempts: int) -> list[Rejection]:
        """Call the handler until it returns; `DependencyUnavailable` is retried forever,
        anything else `attempts` times and then raised."""
        attempt = 0
        delay = 0.5
        while True:
            attempt += 1
            trace_id_var.set(deliveries[0].envelope.trace_id)
            event_id_var.set(deliveries[0].envelope.ce_id)
            try:
                return await self.handler(deliveries)
            except DependencyUnavailable as exc:
                logger.warning("handler for %s waits on a dependency (%s); retrying in %.1fs",
                               topic.value, exc, delay)
            except InvalidInput:
                raise  # about a record itself (e.g. refused by the broker): isolate it now
            except Exception as exc:
                if attempt >= attempts:
                    raise
                logger.warning("handler for %s failed (%r); attempt %d of %d", topic.value,
                               exc, attempt, attempts)
            HANDLER_RETRIES.labels(topic.value).inc()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    def _remember(self, key: bytes) -> None:
        self._seen[key] = None
        if len(self._seen) > self._dedup_size:
            self._seen.popitem(last=False)

    async def _dead_letter(self, topic: Topic, record: ConsumerRecord, reason: str,
                           errors: list[tuple[str, str]]) -> None:
        await send_dead_letter(self.bus, topic, record, reason, errors, self.max_letter_bytes)


def _dedup_key(ce_id: str, value: bytes | None) -> bytes:
    """The sender's id and the exact bytes, hashed: a fixed 32 bytes however long the id."""
    digest = hashlib.sha256(ce_id.encode("utf-8", "replace"))
    digest.update(b"\0")
    digest.update(value or b"")
    return digest.digest()
