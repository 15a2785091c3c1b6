"""The outbox against a fake batch producer: a burst ships in a few record batches, a full
outbox refuses (counted, logged, alerted), an unacknowledged batch is counted, logged and
alerted, and stop() drains everything (or says how much it lost)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from prometheus_client import REGISTRY

from contracts.events import AlertRaised
from contracts.topics import Topic
from shared.errors import DependencyUnavailable
from shared.outbox import Outbox, OutboxFull

TOPIC = "test.predictions"
HEADERS = [("ce_type", b"io.driftloop.PredictionMade.v1")]


class FakeProducer:
    """Records every batch; acknowledges at once, never, or with an error."""

    def __init__(self, partitions: int = 3, ack: str = "now") -> None:
        self.partitions = set(range(partitions))
        self.ack = ack
        self.batches: list[tuple[int, BatchBuilder]] = []
        self.unacked: list[asyncio.Future[Any]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return self.partitions

    async def send_batch(self, batch: BatchBuilder, topic: str, *,
                         partition: int) -> asyncio.Future[Any]:
        assert topic == TOPIC and batch.closed()
        self.batches.append((partition, batch))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.ack == "now":
            future.set_result(None)
        elif self.ack == "error":
            future.set_exception(KafkaTimeoutError())
        else:
            self.unacked.append(future)
        await asyncio.sleep(0)  # the real producer yields too: the next batch fills meanwhile
        return future

    def ack_all(self) -> None:
        for future in self.unacked:
            future.set_result(None)
        self.unacked.clear()

    def records(self) -> list[tuple[int, bytes, bytes]]:
        """(partition, key, value) of every record shipped, in order."""
        found = []
        for partition, batch in self.batches:
            records = MemoryRecords(bytes(batch._build()))
            while (record_batch := records.next_batch()) is not None:
                found += [(partition, r.key, r.value) for r in record_batch]
        return found


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"topic": "predictions", **labels}) or 0.0


async def started(producer: FakeProducer, capacity: int = 100_000,
                  alerts: list[AlertRaised] | None = None) -> Outbox:
    async def alert(event: AlertRaised) -> None:
        if alerts is not None:
            alerts.append(event)

    outbox = Outbox(Topic.PREDICTIONS, capacity, batch_bytes=64 * 1024, alert=alert)
    await outbox.start(producer, TOPIC)
    return outbox


async def settle(outbox: Outbox) -> None:
    while outbox.pending:
        await asyncio.sleep(0)


def put(outbox: Outbox, i: int) -> None:
    outbox.put(f"id-{i}".encode(), b'{"n": %d}' % i, HEADERS)


async def test_a_burst_ships_in_a_few_record_batches_not_one_send_per_event() -> None:
    producer = FakeProducer()
    outbox = await started(producer)
    published = sample("driftloop_events_published_total")
    n = 10_000
    for i in range(n):  # as many requests answered within one event-loop turn
        put(outbox, i)
    await settle(outbox)
    # ~10 bytes a record: every batch is full (64 KiB) or the partition's last one.
    assert len(producer.batches) <= n // 500
    records = producer.records()
    assert sorted(key for _, key, _ in records) == sorted(f"id-{i}".encode() for i in range(n))
    by_key = {key: (partition, value) for partition, key, value in records}
    assert by_key[b"id-42"][1] == b'{"n": 42}'
    assert {partition for partition, _, _ in records} == {0, 1, 2}
    # A key always lands on the same partition.
    outbox.put(b"id-42", b"again", HEADERS)
    await settle(outbox)
    assert producer.records()[-1][:2] == (by_key[b"id-42"][0], b"id-42")
    assert sample("driftloop_events_published_total") - published == n + 1
    assert await outbox.stop(1.0) == 0


async def test_events_put_while_a_batch_is_in_flight_go_out_together() -> None:
    producer = FakeProducer(partitions=1, ack="never")
    outbox = await started(producer)
    put(outbox, 0)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(producer.batches) == 1
    for i in range(1, 1_001):
        put(outbox, i)
    for _ in range(5):
        await asyncio.sleep(0)
    assert [b.record_count() for _, b in producer.batches] == [1, 1_000]
    assert outbox.pending == 1_001
    producer.ack_all()
    await settle(outbox)


async def test_a_full_outbox_refuses_counts_logs_and_alerts_once_per_interval(
        caplog: pytest.LogCaptureFixture) -> None:
    producer = FakeProducer(ack="never")
    alerts: list[AlertRaised] = []
    outbox = await started(producer, capacity=10, alerts=alerts)
    refused = sample("driftloop_outbox_refused_requests_total")
    for i in range(10):
        put(outbox, i)
    assert not outbox.has_room()
    with caplog.at_level(logging.ERROR, logger="shared.outbox"):
        for _ in range(3):
            with pytest.raises(OutboxFull) as raised:
                await outbox.wait_for_room(0.01)
    assert isinstance(raised.value, DependencyUnavailable)  # an HTTP 503
    assert sample("driftloop_outbox_refused_requests_total") - refused == 3
    assert any("refused with 503" in r.getMessage() for r in caplog.records)
    await asyncio.sleep(0)  # the alert is published by a task
    [alert] = alerts  # rate-limited: one alert for the three refusals
    assert (alert.kind, alert.severity, alert.status) == ("outbox_full", "warning", "firing")
    assert alert.evidence["pending"] == 10 and alert.evidence["capacity"] == 10
    # The broker catches up: room again, and a waiting request goes on.
    waiting = asyncio.create_task(outbox.wait_for_room(5.0))
    await asyncio.sleep(0)
    producer.ack_all()
    await waiting
    assert outbox.has_room()


async def test_a_batch_the_broker_never_acknowledged_is_counted_logged_and_alerted(
        caplog: pytest.LogCaptureFixture) -> None:
    producer = FakeProducer(ack="error")
    alerts: list[AlertRaised] = []
    outbox = await started(producer, alerts=alerts)
    dropped = sample("driftloop_events_dropped_total", why="not_acknowledged")
    with caplog.at_level(logging.ERROR, logger="shared.outbox"):
        batches = {outbox.put(f"id-{i}".encode(), b"{}", HEADERS) for i in range(5)}
        with pytest.raises(DependencyUnavailable):
            await outbox.acknowledged(batches)
        await settle(outbox)
    assert sample("driftloop_events_dropped_total", why="not_acknowledged") - dropped == 5
    assert any("did not acknowledge" in r.getMessage() for r in caplog.records)
    await asyncio.sleep(0)
    assert [a.kind for a in alerts] == ["events_lost"] and alerts[0].severity == "critical"


async def test_acknowledged_waits_for_the_broker() -> None:
    producer = FakeProducer(ack="never")
    outbox = await started(producer)
    batch = outbox.put(b"k", b"{}", HEADERS)
    waiting = asyncio.create_task(outbox.acknowledged([batch]))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()
    producer.ack_all()
    await waiting


async def test_stop_drains_everything_put_before_it() -> None:
    producer = FakeProducer(ack="never")
    outbox = await started(producer)
    for i in range(2_500):
        put(outbox, i)
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, producer.ack_all)  # the broker answers a little later
    assert await outbox.stop(30.0) == 0
    assert len(producer.records()) == 2_500 and outbox.pending == 0


async def test_stop_says_how_many_were_lost_when_the_broker_never_answers(
        caplog: pytest.LogCaptureFixture) -> None:
    producer = FakeProducer(ack="never")
    outbox = await started(producer)
    lost_before = sample("driftloop_events_dropped_total", why="shutdown")
    for i in range(7):
        put(outbox, i)
    with caplog.at_level(logging.ERROR, logger="shared.outbox"):
        assert await outbox.stop(0.05) == 7
    assert sample("driftloop_events_dropped_total", why="shutdown") - lost_before == 7
    assert any("7 predictions events not acknowledged" in r.getMessage()
               for r in caplog.records)


async def test_nothing_is_accepted_after_stop() -> None:
    outbox = await started(FakeProducer())
    assert await outbox.stop(1.0) == 0
    with pytest.raises(DependencyUnavailable):
        put(outbox, 1)
