"""At-least-once consumption: decode, de-duplicate, handle, dead-letter, then commit.

A batch from `getmany` is decoded against the topic's contract; messages that
do not decode go to the dead-letter topic. The handler gets the decoded batch
and returns the deliveries it rejects (poison), which are dead-lettered too.
Offsets are committed only after the handler returned, i.e. after its effect
is durable. A handler that raises is retried with backoff: forever for
`DependencyUnavailable` (skipping would lose data), `max_attempts` times for
anything else, after which the batch's messages are dead-lettered with the
error so the consumer never crash-loops.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from contracts.base import Contract
from contracts.catalogue import CATALOGUE
from contracts.events import FieldError, RecordRejected
from contracts.topics import Topic
from shared.bus import Bus, _retry_start
from shared.envelope import Envelope, build_headers, read_envelope
from shared.errors import DependencyUnavailable, InvalidInput
from shared.metrics import DEAD_LETTERS, EVENTS_CONSUMED, HANDLER_RETRIES
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


MAX_DEAD_LETTER_BYTES = 256 * 1024
"""Original bytes kept in a dead letter (base64 grows them by a third)."""
MAX_TEXT_BYTES = 64 * 1024
"""Up to this size the original is also given as text, for people reading the topic."""

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


class Consumer:
    """One consumer group member reading `topics` and feeding `handler`."""

    def __init__(self, bus: Bus, group_id: str | None, topics: list[Topic],
                 handler: BatchHandler, *, from_beginning: bool = True,
                 max_records: int = 500, max_attempts: int = 5, dedup_size: int = 100_000,
                 commit_timeout: float = 15.0):
        self.bus = bus
        self.group_id = group_id
        self.topics = topics
        self.handler = handler
        self.from_beginning = from_beginning
        self.max_records = max_records
        self.max_attempts = max_attempts
        self.commit_timeout = commit_timeout
        self._seen: OrderedDict[str, None] = OrderedDict()
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
        # Ids built from coordinates (topic/partition/offset) mean something else after the
        # broker lost its log; handlers stay idempotent by natural keys across the gap.
        self._seen.clear()
        self.assigned.clear()
        self.generation += 1
        consumer = AIOKafkaConsumer(
            *self._by_name,
            bootstrap_servers=self.bus.settings.kafka_bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if self.from_beginning else "latest",
            client_id=f"driftloop-{self.bus.source}",
            **self.bus.settings.kafka_client_options(),
        )
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
                    if self.group_id is not None:
                        await self._commit(consumer, tp, records[-1].offset + 1)
        finally:
            await consumer.stop()

    async def _commit(self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
        # aiokafka retries a commit to a partition the broker no longer knows forever.
        try:
            await asyncio.wait_for(consumer.commit({tp: offset}), self.commit_timeout)
        except (TimeoutError, KafkaError) as exc:
            raise ConsumerReset(f"commit of {tp.topic}[{tp.partition}]@{offset} failed: "
                                f"{exc!r}") from exc

    async def _handle_partition_batch(self, tp: TopicPartition,
                                      records: list[ConsumerRecord]) -> None:
        topic = self._by_name[tp.topic]
        deliveries: list[Delivery] = []
        for record in records:
            envelope = read_envelope(record.headers, tp.topic, tp.partition, record.offset)
            if envelope.ce_id in self._seen:
                EVENTS_CONSUMED.labels(topic.value, "duplicate").inc()
                continue
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
        rejections = await self._call_handler(topic, deliveries)
        for rejection in rejections:
            await self._dead_letter(topic, rejection.delivery.record, rejection.reason,
                                    list(rejection.errors))
        rejected_ids = {r.delivery.envelope.ce_id for r in rejections}
        for delivery in deliveries:
            self._remember(delivery.envelope.ce_id)
            outcome = "rejected" if delivery.envelope.ce_id in rejected_ids else "ok"
            EVENTS_CONSUMED.labels(topic.value, outcome).inc()

    async def _call_handler(self, topic: Topic, deliveries: list[Delivery]) -> list[Rejection]:
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
            except Exception as exc:  # a bug or a bad event the handler did not classify
                if attempt >= self.max_attempts:
                    logger.exception("handler for %s failed %d times; dead-lettering %d events",
                                     topic.value, attempt, len(deliveries))
                    return [Rejection(d, f"handler failed after {attempt} attempts: {exc!r}")
                            for d in deliveries]
                logger.warning("handler for %s failed (%r); attempt %d of %d", topic.value,
                               exc, attempt, self.max_attempts)
            HANDLER_RETRIES.labels(topic.value).inc()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    def _remember(self, ce_id: str) -> None:
        self._seen[ce_id] = None
        if len(self._seen) > self._dedup_size:
            self._seen.popitem(last=False)

    async def _dead_letter(self, topic: Topic, record: ConsumerRecord, reason: str,
                           errors: list[tuple[str, str]]) -> None:
        original: bytes = record.value or b""
        value = original[:MAX_DEAD_LETTER_BYTES]
        if len(original) > len(value):
            # base64 and text would make the letter too big for the broker to accept
            reason = f"{reason} [payload truncated: {len(original)} bytes, first {len(value)} kept]"
        try:
            text: str | None = value.decode("utf-8") if len(value) <= MAX_TEXT_BYTES else None
        except UnicodeDecodeError:
            text = None
        letter = RecordRejected(
            source_topic=record.topic, partition=record.partition, offset=record.offset,
            key=record.key.decode("utf-8", "replace") if record.key else None,
            value_base64=base64.b64encode(value).decode(), value_text=text, reason=reason,
            errors=[FieldError(field=f, message=m) for f, m in errors],
            rejected_by=self.bus.source)
        logger.warning("dead-lettered %s[%d]@%d: %s", record.topic, record.partition,
                       record.offset, reason)
        while True:
            try:
                await self.bus.publish_raw(
                    Topic.DATA_REJECTED, letter.model_dump_json().encode(), record.key,
                    build_headers(letter, self.bus.source))
                break
            except DependencyUnavailable:
                logger.warning("dead-letter topic unreachable; retrying")
                await asyncio.sleep(1.0)
        DEAD_LETTERS.labels(topic.value).inc()
