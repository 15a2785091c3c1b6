"""The outbox: events the caller has answered for, shipped to Kafka in record batches.

Why not one `producer.send` per event: that costs a coroutine, a partitioner call and a
future per event, and the publisher fell behind serving (~1,200 events/s against ~3,700
requests/s) until its queue filled and events were dropped. Here `put` appends the
already-encoded event straight into an open Kafka record batch (bytes: nothing the garbage
collector has to walk), and one drainer task per partition ships whole batches with
`send_batch` — as many events per broker request as arrived meanwhile.

The outbox counts events that are *pending*: handed to it and not yet acknowledged by the
broker. That count is the most a kill -9 can lose, and it is bounded: `has_room` is false
at `capacity`, and callers wait for room (`wait_for_room`) or refuse their request
(`OutboxFull`, an HTTP 503) instead of answering and dropping. Refusals and events the
broker never acknowledged are counted, logged and raised as a (rate-limited) alert.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import Any, Protocol

from aiokafka.producer.message_accumulator import BatchBuilder

from contracts.events import AlertRaised, AlertStatus, Severity
from contracts.topics import Topic
from shared.errors import DependencyUnavailable
from shared.metrics import (
    EVENTS_DROPPED,
    EVENTS_PUBLISHED,
    OUTBOX_BATCH_EVENTS,
    OUTBOX_PENDING,
    OUTBOX_REFUSED,
)
from shared.partitioning import partition_index

logger = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
AlertFn = Callable[[AlertRaised], Awaitable[None]]


class BatchProducer(Protocol):
    """What the outbox needs of aiokafka's producer (a fake in unit tests)."""

    async def partitions_for(self, topic: str) -> Any: ...

    async def send_batch(self, batch: BatchBuilder, topic: str, *,
                         partition: int) -> asyncio.Future[Any]: ...


class OutboxFull(DependencyUnavailable):
    """The broker has not acknowledged `capacity` events yet: try again shortly (HTTP 503)."""


class Batch:
    """One record batch for one partition: filled by `put`, then shipped whole.

    `acked` resolves when the broker acknowledged it (result None) or gave up on it
    (result: the error), so a waiter never meets an unretrieved-exception warning."""

    __slots__ = ("index", "builder", "count", "acked")

    def __init__(self, index: int, size: int, loop: asyncio.AbstractEventLoop) -> None:
        self.index = index
        self.builder = BatchBuilder(size, 0)
        self.count = 0
        self.acked: asyncio.Future[BaseException | None] = loop.create_future()


class Outbox:
    """Bounded, batched, acknowledged delivery of one topic's events."""

    def __init__(self, topic: Topic, capacity: int, *, batch_bytes: int = 512 * 1024,
                 alert: AlertFn | None = None, alert_interval: float = 60.0) -> None:
        self.topic = topic
        self.capacity = capacity
        self.batch_bytes = batch_bytes
        self.alert_interval = alert_interval
        self._alert = alert
        self._producer: BatchProducer | None = None
        self._name = ""
        self._partitions: list[int] = []
        self._open: list[Batch | None] = []
        self._sealed: list[deque[Batch]] = []
        self._wake: list[asyncio.Event] = []
        self._drainers: list[asyncio.Task[None]] = []
        self._pending = 0
        self._stopped = False
        self._room = asyncio.Event()
        self._settled = asyncio.Event()
        self._last_alert: dict[str, float] = {}
        self._unreported: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        OUTBOX_PENDING.labels(topic.value).set_function(lambda: self._pending)

    @property
    def pending(self) -> int:
        """Events handed to the outbox and not yet acknowledged (or given up) by the broker."""
        return self._pending

    async def start(self, producer: BatchProducer, name: str) -> None:
        """Ship into `producer`'s topic `name`, one drainer per partition."""
        self._producer = producer
        self._name = name
        self._partitions = sorted(await producer.partitions_for(name))
        count = len(self._partitions)
        self._open = [None] * count
        self._sealed = [deque() for _ in range(count)]
        self._wake = [asyncio.Event() for _ in range(count)]
        self._drainers = [asyncio.create_task(self._drain(i), name=f"outbox-{name}-{i}")
                          for i in range(count)]

    def has_room(self) -> bool:
        return self._pending < self.capacity

    async def wait_for_room(self, timeout: float) -> None:
        """Return when there is room; raise `OutboxFull` (counted, logged, alerted) after
        `timeout` seconds without any."""
        if self._pending < self.capacity:
            return
        deadline = time.monotonic() + timeout
        while self._pending >= self.capacity:
            self._room.clear()
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                await asyncio.wait_for(self._room.wait(), remaining)
            except TimeoutError:
                OUTBOX_REFUSED.labels(self.topic.value).inc()
                self._report("outbox_full", Severity.WARNING,
                             f"{self.topic.value}: {self._pending} events wait for the broker's "
                             "acknowledgement; requests are refused with 503 until it catches up")
                raise OutboxFull(dependency="kafka", detail=(
                    f"{self._pending} {self.topic.value} events are waiting for the broker; "
                    "retry shortly")) from None

    def put(self, key: bytes, value: bytes, headers: Headers) -> Batch:
        """Append one encoded event to its partition's open batch (never waits).

        The partition is `shared.partitioning.partition_index`: the same key always lands on
        the same partition, the one every other driftloop producer picks for it."""
        if self._producer is None:
            raise RuntimeError("Outbox.start() was not awaited")
        if self._stopped:
            raise DependencyUnavailable(dependency="kafka",
                                        detail=f"the {self.topic.value} outbox has stopped")
        index = partition_index(key, len(self._partitions))
        batch = self._open[index]
        if batch is None:
            batch = self._open[index] = Batch(index, self.batch_bytes,
                                               asyncio.get_running_loop())
        if batch.builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
            if batch.count == 0:
                raise ValueError(f"one {self.topic.value} event is larger than the "
                                 f"{self.batch_bytes}-byte batch limit")
            self._sealed[index].append(batch)
            batch = self._open[index] = Batch(index, self.batch_bytes,
                                               asyncio.get_running_loop())
            batch.builder.append(timestamp=None, key=key, value=value, headers=headers)
        batch.count += 1
        self._pending += 1
        self._wake[index].set()
        return batch

    async def acknowledged(self, batches: Iterable[Batch]) -> None:
        """Wait until the broker acknowledged every batch; `DependencyUnavailable` if it gave
        up on one (the caller has not answered yet, so nothing it answered is lost)."""
        for batch in set(batches):
            error = await asyncio.shield(batch.acked)
            if error is not None:
                raise DependencyUnavailable(dependency="kafka", detail=f"the broker did not "
                                            f"acknowledge {self.topic.value} events: {error}")

    async def stop(self, timeout: float) -> int:
        """Ship and wait for every pending event, up to `timeout` seconds; returns (and logs
        as an error, and counts as dropped) how many were still unacknowledged then."""
        self._stopped = True
        for wake in self._wake:
            wake.set()
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            self._settled.clear()
            try:
                await asyncio.wait_for(self._settled.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
        lost = self._pending
        if lost:
            EVENTS_DROPPED.labels(self.topic.value, "shutdown").inc(lost)
            logger.error("outbox stopped after %.0fs with %d %s events not acknowledged by the "
                         "broker: they are lost", timeout, lost, self.topic.value)
        else:
            logger.info("outbox drained: every %s event acknowledged", self.topic.value)
        for task in [*self._drainers, *self._tasks]:  # an alert still unsent: its log stands
            task.cancel()
        await asyncio.gather(*self._drainers, *self._tasks, return_exceptions=True)
        self._drainers = []
        return lost

    def _next(self, index: int) -> Batch | None:
        if self._sealed[index]:
            return self._sealed[index].popleft()
        batch = self._open[index]
        if batch is not None and batch.count:
            self._open[index] = None
            return batch
        return None

    async def _drain(self, index: int) -> None:
        """Ship this partition's batches; while one waits for the producer to take it, the
        next one fills — so a batch holds whatever arrived during one broker round trip."""
        assert self._producer is not None
        wake = self._wake[index]
        while True:
            await wake.wait()
            wake.clear()
            while (batch := self._next(index)) is not None:
                batch.builder.close()  # closed: the producer sends it without lingering
                OUTBOX_BATCH_EVENTS.labels(self.topic.value).observe(batch.count)
                try:
                    future = await self._producer.send_batch(
                        batch.builder, self._name, partition=self._partitions[index])
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # any failure loses this batch
                    self._settle(batch, exc)
                    continue
                future.add_done_callback(partial(self._on_ack, batch))

    def _on_ack(self, batch: Batch, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            self._settle(batch, asyncio.CancelledError())
        else:
            self._settle(batch, future.exception())

    def _settle(self, batch: Batch, error: BaseException | None) -> None:
        self._pending -= batch.count
        if error is None:
            EVENTS_PUBLISHED.labels(self.topic.value).inc(batch.count)
        else:
            EVENTS_DROPPED.labels(self.topic.value, "not_acknowledged").inc(batch.count)
            self._report("events_lost", Severity.CRITICAL,
                         f"{self.topic.value}: the broker did not acknowledge answered events; "
                         f"they are lost ({error!r})", batch.count)
        if not batch.acked.done():
            batch.acked.set_result(error)
        if self._pending < self.capacity:
            self._room.set()
        self._settled.set()

    def _report(self, kind: str, severity: Severity, summary: str, count: int = 1) -> None:
        """Log and alert, at most once per `alert_interval` per kind (the count carries what
        happened in between)."""
        self._unreported[kind] = self._unreported.get(kind, 0) + count
        now = time.monotonic()
        if now - self._last_alert.get(kind, -self.alert_interval) < self.alert_interval:
            return
        self._last_alert[kind] = now
        total, self._unreported[kind] = self._unreported[kind], 0
        logger.error("%s (%d since the last report)", summary, total,
                     extra={"kind": kind, "events": total})
        if self._alert is None:
            return
        alert = AlertRaised(
            alert_id=f"al-{uuid.uuid4().hex[:12]}", status=AlertStatus.FIRING,
            severity=severity, kind=kind, model="*", summary=summary,
            evidence={"topic": self.topic.value, "events": total, "pending": self._pending,
                      "capacity": self.capacity},
            runbook="Check the broker and the outbox metrics (driftloop_outbox_pending_events, "
                    "driftloop_events_dropped_total, driftloop_outbox_refused_requests_total).")
        task = asyncio.get_running_loop().create_task(self._publish_alert(alert))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish_alert(self, alert: AlertRaised) -> None:
        assert self._alert is not None
        try:
            await self._alert(alert)
        except Exception:  # best effort: the log line stands
            logger.exception("could not publish the %s alert", alert.kind)
