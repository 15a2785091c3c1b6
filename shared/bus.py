"""The Kafka bus: one producer per process and topic creation.

Control events are published with `publish` (acks=all, awaited: the caller's
effect is durable before it commits its own input). Predictions go through
`shared.outbox.Outbox`, which ships them in record batches on this producer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTimestampError,
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    UnsupportedForMessageFormatError,
)

from contracts.base import Contract
from contracts.topics import Topic
from shared.envelope import build_headers
from shared.errors import DependencyUnavailable, PublishRefused
from shared.metrics import EVENTS_PUBLISHED
from shared.partitioning import key_partitioner
from shared.settings import CommonSettings, require_bootstrap

logger = logging.getLogger(__name__)

_TOPIC_EXISTS = 36

Outgoing = tuple[Topic, Contract, str, str | None, str | None]
"""An event to publish: topic, event, key, ce_id (None: a fresh one), trace id (None: the
current trace)."""

REFUSED_MESSAGE_ERRORS: tuple[type[KafkaError], ...] = (
    MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError,
    CorruptRecordException, InvalidTopicError, InvalidTimestampError,
    UnsupportedForMessageFormatError)
"""Produce errors about the message itself: the same bytes are refused however often they
are sent. Every other KafkaError (timeouts, lost leaders, closed connections, missing
authorisation an operator can grant) is about the broker, and is worth waiting out."""


class Bus:
    """Producer and admin for one service; `start` waits for the broker up to `connect_timeout`."""

    def __init__(self, settings: CommonSettings, source: str, connect_timeout: float = 60.0):
        self.settings = settings
        self.source = source
        self.connect_timeout = connect_timeout
        self._producer: AIOKafkaProducer | None = None
        self.epoch = 0
        """Bumped when topics had to be re-created (the broker lost its state): consumers
        started in an older epoch restart, since their group and partitions are gone."""

    def topic(self, topic: Topic) -> str:
        """The broker-side name of a topic."""
        return topic.qualified(self.settings.kafka_topic_prefix)

    async def start(self) -> None:
        """Connect the producer and make sure every topic exists."""
        await self.ensure_topics()
        producer = AIOKafkaProducer(
            bootstrap_servers=require_bootstrap(self.settings),
            acks="all",
            linger_ms=5,
            partitioner=key_partitioner,  # the outbox's too: predictions and feedback co-partition
            client_id=f"driftloop-{self.source}",
            **self.settings.kafka_client_options(),
        )
        await _retry_start(producer.start, self.connect_timeout, "producer")
        self._producer = producer

    async def stop(self) -> None:
        """Flush and close the producer."""
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def ensure_topics(self) -> list[str]:
        """Create every catalogue topic that does not exist yet; returns the names created."""
        admin = AIOKafkaAdminClient(bootstrap_servers=require_bootstrap(self.settings),
                                    **self.settings.kafka_client_options())
        await _retry_start(admin.start, self.connect_timeout, "admin client")
        try:
            existing = set(await admin.list_topics())
            missing = [
                NewTopic(self.topic(t), self.settings.kafka_partitions,
                         self.settings.kafka_replication_factor)
                for t in Topic if self.topic(t) not in existing
            ]
            if missing:
                response = await admin.create_topics(missing)
                for name, code, message in getattr(response, "topic_errors", []):
                    if code not in (0, _TOPIC_EXISTS):
                        raise DependencyUnavailable(dependency="kafka",
                                                    detail=f"creating {name}: {message}")
            return [topic.name for topic in missing]
        finally:
            await admin.close()

    async def guard_topics(self, stopping: asyncio.Event, interval: float = 1.0) -> None:
        """Watch the broker; after it was unreachable or lost topics, re-create them and bump
        the epoch. Each service judges for itself: another service may have re-created the
        topics first, but this one's consumers still belong to a group the broker forgot."""
        unreachable = False
        while not stopping.is_set():
            try:
                await asyncio.wait_for(stopping.wait(), interval)
                return
            except TimeoutError:
                pass
            try:
                created = await asyncio.wait_for(self.ensure_topics(), max(interval * 3, 3.0))
            except (KafkaError, DependencyUnavailable, TimeoutError) as exc:
                if not unreachable:
                    logger.warning("broker unreachable (%r); consumers will rejoin when it is "
                                   "back", exc)
                unreachable = True
                continue
            if created or unreachable:
                self.epoch += 1
                logger.warning("broker back (re-created %d topics); consumers rejoin",
                               len(created), extra={"topics": created})
            unreachable = False

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("Bus.start() was not awaited")
        return self._producer

    async def publish(self, topic: Topic, event: Contract, key: str, ce_id: str | None = None,
                      trace_id: str | None = None) -> None:
        """Publish and wait for the broker's acknowledgement (acks=all).

        `trace_id` names the trace explicitly, for callers that publish for several inputs at
        once (the ContextVar holds one trace at a time); otherwise the current trace is used.
        """
        await self.publish_raw(topic, event.model_dump_json().encode(), key.encode(),
                               build_headers(event, self.source, ce_id, trace_id))

    async def publish_many(self, events: Sequence[Outgoing]) -> list[PublishRefused]:
        """Publish independent events and wait until the broker acknowledged every one: one
        round trip for the lot, not one each (`publish` waits per event). Returns those the
        broker refused as such (poison: retrying cannot help); raises `DependencyUnavailable`
        when the broker itself failed (send them all again: each keeps its ce_id, and
        consumers de-duplicate). No order is promised between them."""
        sent: list[tuple[Topic, asyncio.Future[object]]] = []
        refused: list[PublishRefused] = []
        for topic, event, key, ce_id, trace_id in events:
            try:
                future = await self.producer.send(
                    self.topic(topic), event.model_dump_json().encode(), key=key.encode(),
                    headers=build_headers(event, self.source, ce_id, trace_id))
            except REFUSED_MESSAGE_ERRORS as exc:
                refused.append(_refused(topic, exc))
                continue
            except KafkaError as exc:
                raise DependencyUnavailable(dependency="kafka", detail=str(exc)) from exc
            sent.append((topic, future))
        results = await asyncio.gather(*(future for _, future in sent), return_exceptions=True)
        for (topic, _), result in zip(sent, results, strict=True):
            if isinstance(result, REFUSED_MESSAGE_ERRORS):
                refused.append(_refused(topic, result))
            elif isinstance(result, KafkaError):
                raise DependencyUnavailable(dependency="kafka", detail=str(result)) from result
            elif isinstance(result, BaseException):
                raise result
            else:
                EVENTS_PUBLISHED.labels(topic.value).inc()
        return refused

    async def publish_raw(self, topic: Topic, value: bytes, key: bytes | None,
                          headers: list[tuple[str, bytes]]) -> None:
        """Publish bytes that are already encoded (dead letters carry original bytes inside).

        Raises `PublishRefused` (poison) when the broker or the producer refuses the message
        itself, `DependencyUnavailable` (retry) for anything about the broker.
        """
        try:
            await self.producer.send_and_wait(self.topic(topic), value, key=key, headers=headers)
        except REFUSED_MESSAGE_ERRORS as exc:
            raise _refused(topic, exc) from exc
        except KafkaError as exc:
            raise DependencyUnavailable(dependency="kafka", detail=str(exc)) from exc
        EVENTS_PUBLISHED.labels(topic.value).inc()


def _refused(topic: Topic, exc: BaseException) -> PublishRefused:
    return PublishRefused(topic=topic.value, detail=f"{type(exc).__name__}: {str(exc)[:300]}")


async def _retry_start(start: object, timeout: float, what: str) -> None:
    """Call an aiokafka client's start() until the broker answers or `timeout` passes."""
    deadline = time.monotonic() + timeout
    delay = 0.2
    while True:
        try:
            await start()  # type: ignore[operator]
            return
        except KafkaError as exc:
            if time.monotonic() >= deadline:
                raise DependencyUnavailable(dependency="kafka",
                                            detail=f"{what} could not connect: {exc}") from exc
            logger.warning("kafka not reachable yet for the %s (%s); retrying", what, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
