"""The consumer's delivery rules with a fake bus: a record that breaks its handler is
dead-lettered alone (the rest of its batch goes on, a stateful handler sees each record
once), and de-duplication never lets one message make another vanish."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition

from contracts.events import LabeledRecord, LifecycleAction, PredictionMade, RecordRejected
from contracts.topics import Topic
from services.ingestion.consumers import labeled_handler
from services.ingestion.handlers import Ingestor
from services.monitoring.consumers import monitor_handler
from services.monitoring.handlers import Monitor
from shared.consumer import Consumer, Delivery, Rejection, feed_each
from shared.datasets import DatasetStore
from shared.errors import DependencyUnavailable
from tests.unit.factories import REGISTRY_KEY, agrawal, demo_project, prediction
from tests.unit.test_monitoring_logic import lifecycle

TOPIC = Topic.DATA_LABELED
ROWS = agrawal(60, seed=11)


class FakeBus:
    """What the consumer needs of a Bus: names, a source, and a dead-letter sink."""

    source = "test"
    epoch = 0

    def __init__(self) -> None:
        self.letters: list[RecordRejected] = []
        self.published: list[Any] = []

    def topic(self, topic: Topic) -> str:
        return topic.value

    async def publish_raw(self, topic: Topic, value: bytes, key: bytes | None,
                          headers: list[tuple[str, bytes]]) -> None:
        assert topic is Topic.DATA_REJECTED
        self.letters.append(RecordRejected.model_validate_json(value))

    async def publish(self, topic: Topic, event: Any, key: str, ce_id: str | None = None,
                      trace_id: str | None = None) -> None:
        self.published.append(event)


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries back off with real sleeps; here they return at once (counts, not time).
    Only the consumer's own backoff awaits a sleep in these tests."""

    async def instant(_: float) -> None:
        return None

    monkeypatch.setattr(asyncio, "sleep", instant)


def message(offset: int, value: bytes, ce_id: str | None = None,
            topic: Topic = TOPIC) -> ConsumerRecord[bytes, bytes]:
    headers = ((("ce_id", ce_id.encode()),) if ce_id is not None else ())
    return ConsumerRecord(topic.value, 0, offset, 0, 0, None, value, None, 0, len(value),
                          headers)


def good(index: int) -> bytes:
    features, label = ROWS[index]
    return LabeledRecord(dataset="loans", record_id=f"ok-{index}", features=features,
                         label=label).model_dump_json().encode()


def with_age(record_id: str, age: str) -> bytes:
    """A record whose `age` is raw JSON (e.g. a 400-digit integer)."""
    features, label = ROWS[0]
    body = json.dumps({"dataset": "loans", "record_id": record_id,
                       "features": {**features, "age": "AGE"}, "label": label})
    return body.replace('"AGE"', age).encode()


async def consume(consumer: Consumer, records: list[ConsumerRecord[bytes, bytes]],
                  topic: Topic = TOPIC) -> None:
    await consumer._handle_partition_batch(TopicPartition(topic.value, 0), records)


# -- a record that breaks its handler -------------------------------------------------------


class Picky:
    """A handler that raises (as a bug would) whenever the batch holds the bad record."""

    def __init__(self, bad: str) -> None:
        self.bad = bad
        self.handled: Counter[str] = Counter()

    async def __call__(self, batch: list[Delivery]) -> list[Rejection]:
        ids = [d.event.record_id for d in batch]  # type: ignore[attr-defined]
        if self.bad in ids:
            raise OverflowError("int too large to convert to float")
        self.handled.update(ids)
        return []


async def test_one_bad_record_is_dead_lettered_alone_and_its_batch_goes_on() -> None:
    bus = FakeBus()
    handler = Picky(bad="ok-17")
    consumer = Consumer(bus, "g", [TOPIC], handler)  # type: ignore[arg-type]
    await consume(consumer, [message(i, good(i)) for i in range(41)])

    assert [(letter.offset, letter.source_topic) for letter in bus.letters] == [(17, TOPIC.value)]
    assert "OverflowError" in bus.letters[0].reason
    assert set(handler.handled) == {f"ok-{i}" for i in range(41)} - {"ok-17"}


class Stateful:
    """A handler whose state moves as it is fed: it counts every record it ever saw."""

    def __init__(self, bad: str) -> None:
        self.bad = bad
        self.fed: Counter[str] = Counter()

    def step(self, delivery: Delivery) -> None:
        record_id = delivery.event.record_id  # type: ignore[attr-defined]
        if record_id == self.bad:
            raise OverflowError("int too large to convert to float")
        self.fed[record_id] += 1

    async def __call__(self, batch: list[Delivery]) -> list[Rejection]:
        return feed_each(batch, self.step)


async def test_a_stateful_handler_sees_each_valid_record_exactly_once() -> None:
    bus = FakeBus()
    handler = Stateful(bad="ok-3")
    consumer = Consumer(bus, "g", [TOPIC], handler, stateful=True)  # type: ignore[arg-type]
    await consume(consumer, [message(i, good(i)) for i in range(41)])

    assert [letter.offset for letter in bus.letters] == [3]
    assert handler.fed == Counter({f"ok-{i}": 1 for i in range(41) if i != 3})


async def test_a_stateful_handler_is_never_bisected() -> None:
    """Even when it raises, the consumer retries the whole batch and never feeds halves."""
    bus = FakeBus()
    calls: list[int] = []

    async def broken(batch: list[Delivery]) -> list[Rejection]:
        calls.append(len(batch))
        raise RuntimeError("bug")

    consumer = Consumer(bus, "g", [TOPIC], broken, stateful=True,  # type: ignore[arg-type]
                        max_attempts=3)
    await consume(consumer, [message(i, good(i)) for i in range(8)])
    assert calls == [8, 8, 8]
    assert len(bus.letters) == 8


async def test_dependency_failures_are_waited_out_during_isolation() -> None:
    bus = FakeBus()
    handler = Picky(bad="ok-5")
    outages = iter([False, True, True, False])  # the broker blinks while the culprit is sought

    async def flaky(batch: list[Delivery]) -> list[Rejection]:
        if next(outages, False):
            raise DependencyUnavailable(dependency="kafka", detail="restarting")
        return await handler(batch)

    consumer = Consumer(bus, "g", [TOPIC], flaky, max_attempts=1)  # type: ignore[arg-type]
    await consume(consumer, [message(i, good(i)) for i in range(10)])
    assert [letter.offset for letter in bus.letters] == [5]
    assert set(handler.handled) == {f"ok-{i}" for i in range(10)} - {"ok-5"}


async def test_ingestion_with_a_400_digit_integer_rejects_that_record_only(
        tmp_path: Path) -> None:
    bus = FakeBus()
    ingestor = Ingestor(demo_project(), DatasetStore(tmp_path))
    consumer = Consumer(bus, "g", [TOPIC], labeled_handler(bus, ingestor))  # type: ignore[arg-type]
    records = [message(i, good(i)) for i in range(40)]
    records.insert(20, message(40, with_age("huge", "9" * 400)))
    await consume(consumer, records)

    [letter] = bus.letters
    assert letter.offset == 40
    assert [e.field for e in letter.errors] == ["features.age"]
    assert "400 digits" in letter.reason
    assert len(bus.published) == 40


async def test_monitoring_rejects_a_forged_prediction_alone_and_feeds_the_rest_once() -> None:
    bus = FakeBus()
    monitor = Monitor(demo_project())
    profile = {"age": {"edges": [30.0, 50.0], "fractions": [0.3, 0.4, 0.3]}}
    monitor.on_lifecycle(lifecycle(1, LifecycleAction.PROMOTED, 1,
                                   reference=profile))  # type: ignore[arg-type]
    handler = monitor_handler(bus, monitor, REGISTRY_KEY.verifier())  # type: ignore[arg-type]
    consumer = Consumer(bus, "g", [Topic.PREDICTIONS], handler,  # type: ignore[arg-type]
                        stateful=True)
    fed: Counter[str] = Counter()
    on_prediction = monitor.on_prediction

    def spy(event: PredictionMade) -> list[Any]:
        actions = on_prediction(event)
        fed[event.prediction_id] += 1
        return actions

    monitor.on_prediction = spy  # type: ignore[method-assign]
    forged = (prediction(999, 1).model_dump_json()
              .replace('"age":40', '"age":' + "9" * 400).encode())
    nan = prediction(998, 1).model_dump_json().replace('"age":40', '"age":NaN').encode()
    records = [message(i, prediction(i, 1).model_dump_json().encode(),
                       topic=Topic.PREDICTIONS) for i in range(40)]
    records[10:10] = [message(40, forged, topic=Topic.PREDICTIONS),
                      message(41, nan, topic=Topic.PREDICTIONS)]
    await consume(consumer, records, Topic.PREDICTIONS)

    assert sorted(letter.offset for letter in bus.letters) == [40, 41]
    assert {e.field for letter in bus.letters for e in letter.errors} == {"features.age"}
    assert fed == Counter({f"pred-{i}": 1 for i in range(40)})
    assert monitor.join.pending() == 40


# -- de-duplication -------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, batch: list[Delivery]) -> list[Rejection]:
        self.seen += [d.event.record_id for d in batch]  # type: ignore[attr-defined]
        return []


async def test_a_forged_ce_id_cannot_erase_the_next_headerless_record() -> None:
    handler = Recorder()
    consumer = Consumer(FakeBus(), "g", [TOPIC], handler)  # type: ignore[arg-type]
    # The forger names the coordinates the next (header-less) record will get.
    await consume(consumer, [message(7, good(1), ce_id=f"{TOPIC.value}/0/8")])
    await consume(consumer, [message(8, good(2))])
    assert handler.seen == ["ok-1", "ok-2"]


async def test_a_reused_ce_id_with_other_content_still_reaches_the_handler() -> None:
    handler = Recorder()
    consumer = Consumer(FakeBus(), "g", [TOPIC], handler)  # type: ignore[arg-type]
    await consume(consumer, [message(1, good(1), ce_id="e-1")])
    await consume(consumer, [message(2, good(2), ce_id="e-1")])
    assert handler.seen == ["ok-1", "ok-2"]


async def test_a_true_duplicate_is_dropped_across_and_within_batches() -> None:
    handler = Recorder()
    consumer = Consumer(FakeBus(), "g", [TOPIC], handler)  # type: ignore[arg-type]
    await consume(consumer, [message(1, good(1), ce_id="e-1"), message(2, good(1), ce_id="e-1")])
    await consume(consumer, [message(3, good(1), ce_id="e-1")])
    assert handler.seen == ["ok-1"]


async def test_headerless_records_are_never_dropped_by_the_consumer() -> None:
    """Their only id is their coordinates; idempotency is the handler's (natural key)."""
    handler = Recorder()
    consumer = Consumer(FakeBus(), "g", [TOPIC], handler)  # type: ignore[arg-type]
    await consume(consumer, [message(1, good(1)), message(2, good(1))])
    assert handler.seen == ["ok-1", "ok-1"]
