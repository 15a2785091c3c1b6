"""Issue 7, point 2: monitoring's state survives its process. What a checkpoint writes, fed
to a new monitor, lets it go on exactly: pending joins still join, a firing alert still
resolves, a retrain in flight is not requested again; and the changelog loads only whole
checkpoints that carry monitoring's own tag."""

from __future__ import annotations

import pickle
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

from contracts.events import AlertStatus, Feedback, LabeledRecord, LifecycleAction
from contracts.topics import Topic
from services.monitoring.consumers import MonitorWorker
from services.monitoring.data_drift import SlidingHistogram
from services.monitoring.handlers import Monitor
from shared.changelog import MARKER, Restored, fold, seal
from shared.consumer import Delivery
from shared.envelope import read_envelope
from tests.unit.factories import REGISTRY_KEY, demo_project, label_for, prediction
from tests.unit.test_consumer_delivery import FakeBus, message
from tests.unit.test_monitoring_logic import MODEL, Clock, alerts, lifecycle, requests
from tests.unit.test_monitoring_resolution import Rated

SECRET = b"s" * 32


def restarted(monitor: Monitor, clock: Clock) -> Monitor:
    """A new monitor that takes up everything the old one would checkpoint now."""
    saved = {key: value for key, value in monitor.changes(everything=True).items()
             if value is not None}
    fresh = Monitor(demo_project(), clock=clock)
    fresh.restore(saved)
    return fresh


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def monitor(clock: Clock) -> Monitor:
    watching = Monitor(demo_project(), clock=clock)
    watching.on_lifecycle(lifecycle(1, LifecycleAction.PROMOTED, 1, accuracy=0.9))
    return watching


def test_a_firing_alert_resolves_after_a_restart(monitor: Monitor, clock: Clock) -> None:
    stream = Rated(monitor)
    stream.feed(400, 1, 0.10)
    drifted = stream.feed(800, 1, 0.3)
    [fired] = alerts(drifted)
    [request] = requests(drifted)

    stream.monitor = monitor = restarted(monitor, clock)
    assert monitor.watches[MODEL].retrain_in_flight == request.request_id
    assert requests(stream.feed(300, 1, 0.4)) == []  # in flight: not requested again
    monitor.on_lifecycle(lifecycle(2, LifecycleAction.PROMOTED, 2, accuracy=0.87,
                                   request_id=request.request_id))
    [resolved] = alerts(stream.feed(400, 2, 0.13))
    assert (resolved.alert_id, resolved.status) == (fired.alert_id, AlertStatus.RESOLVED)
    assert [a.alert_id for a in monitor.alerts] == [fired.alert_id, fired.alert_id]


def test_the_detector_goes_on_where_it_was(monitor: Monitor, clock: Clock) -> None:
    """The same errors after a restart as without one: the same alert at the same sample."""
    twin = restarted(monitor, clock)
    for watching in (monitor, twin):
        Rated(watching).feed(400, 1, 0.10)
    halfway = restarted(twin, clock)
    once, twice = Rated(monitor), Rated(halfway)
    once.index = twice.index = 400
    [alert_once] = alerts(once.feed(800, 1, 0.3))
    [alert_twice] = alerts(twice.feed(800, 1, 0.3))
    assert alert_once.evidence["samples"] == alert_twice.evidence["samples"]
    assert alert_once.evidence["drift_since"] == alert_twice.evidence["drift_since"]


def test_pending_joins_still_join_after_a_restart(monitor: Monitor, clock: Clock) -> None:
    for i in range(5):
        monitor.on_prediction(prediction(i, 1))
    monitor.on_feedback(Feedback(prediction_id="pred-9", label=0))  # before its prediction
    monitor = restarted(monitor, clock)
    assert monitor.join.pending() == 6
    joined = [monitor.on_label(label_for(i, 1)) for i in range(5)]
    assert joined and monitor.watches[MODEL].labeled == 5
    [completed] = monitor.on_prediction(prediction(9, 1))
    assert isinstance(completed, LabeledRecord) and completed.record_id == "feedback-pred-9"
    assert monitor.join.pending() == 0


def test_a_checkpoint_writes_only_what_changed(monitor: Monitor) -> None:
    monitor.changes()
    monitor.on_prediction(prediction(1, 1))
    monitor.on_label(label_for(1, 1))  # met within one checkpoint: nothing to keep
    assert [k for k in monitor.changes() if k.startswith(b"join/")] == []
    monitor.on_prediction(prediction(2, 1))
    assert list(monitor.changes()) == [b"join/pred-2", b"model/" + MODEL.encode()]
    assert monitor.changes() == {}  # nothing new
    monitor.on_label(label_for(2, 1))
    assert monitor.changes()[b"join/pred-2"] is None  # it left the join: a tombstone


def test_a_window_is_saved_without_its_tables() -> None:
    window = SlidingHistogram([0.25, 0.25, 0.5], 1_000)
    for i in range(1_500):
        window.push(i % 3)
    saved = pickle.dumps(window)
    back = pickle.loads(saved)
    assert len(saved) < 10_000  # the tables alone would be ~60 KB
    assert (back.psi(), back.g(), back.counts) == (window.psi(), window.g(), window.counts)
    back.push(0)
    window.push(0)
    assert (back.psi(), back.g()) == (window.psi(), window.g())


def test_only_whole_checkpoints_of_our_own_are_restored() -> None:
    def record(key: bytes, value: bytes | None) -> tuple[bytes, bytes | None]:
        return key, None if value is None else seal(SECRET, key, value)

    marker = b'{"offsets": {"predictions/0": 7}}'
    log = [record(b"a", b"1"), record(b"b", b"2"), record(MARKER, marker),
           record(b"a", None),  # deleted in the next checkpoint
           (b"c", seal(b"x" * 32, b"c", b"forged")),  # another key's tag: never loaded
           record(MARKER, b'{"offsets": {"predictions/0": 9}}'),
           record(b"b", b"torn")]  # its marker never came
    restored = fold(log, SECRET)
    assert restored.state == {b"b": b"2"}
    assert restored.offsets == {"predictions/0": 9}
    assert restored.torn == {b"b"}
    moved = [(b"b", seal(SECRET, b"a", b"1")), record(MARKER, marker)]  # a tag bound to "a"
    assert fold(moved, SECRET).state == {}


# -- the worker: checkpoints, commits, replays ----------------------------------------------


class MemoryChangelog:
    """The changelog's contract in memory: sealed records appended, folded on restore."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes | None]] = []

    async def ensure_topic(self) -> None:
        return None

    async def restore(self, partitions: set[int]) -> Restored:
        assert partitions == {0}
        return fold(self.records, SECRET)

    async def checkpoint(self, changes: dict[bytes, bytes | None],
                         offsets: dict[str, int], partition: int) -> None:
        assert partition == 0
        self.records += [(k, None if v is None else seal(SECRET, k, v))
                         for k, v in changes.items()]
        marker = orjson.dumps({"offsets": offsets})
        self.records.append((MARKER, seal(SECRET, MARKER, marker)))


class Outside(FakeBus):
    """What monitoring publishes, in order, as the broker acknowledged it."""

    async def publish_many(self, events: list[Any]) -> list[Any]:
        self.published += [event for _, event, *_ in events]
        return []


def worker_with(changelog: MemoryChangelog, bus: Outside, clock: Clock) -> MonitorWorker:
    monitor = Monitor(demo_project(), clock=clock)
    return MonitorWorker(bus, monitor, REGISTRY_KEY.verifier(), changelog,  # type: ignore[arg-type]
                         checkpoint_seconds=2.0, clock=clock)


def deliveries(events: list[tuple[Topic, Any]], first: int) -> list[Delivery]:
    batch = []
    for offset, (topic, event) in enumerate(events, start=first):
        record = message(offset, event.model_dump_json().encode(), topic=topic)
        batch.append(Delivery(topic, event, read_envelope(record.headers, topic.value, 0,
                                                          offset), record))
    return batch


async def test_a_worker_commits_only_what_a_checkpoint_holds_and_resumes_there(
        clock: Clock) -> None:
    log, bus = MemoryChangelog(), Outside()
    worker = worker_with(log, bus, clock)
    await worker.restore()
    worker.monitor.on_lifecycle(lifecycle(1, LifecycleAction.PROMOTED, 1, accuracy=0.9))
    await worker(deliveries([(Topic.PREDICTIONS, prediction(i, 1)) for i in range(10)], 0))
    assert worker.committable() == {}  # not checkpointed yet: nothing may be committed
    clock.now += 2.5
    await worker(deliveries([(Topic.PREDICTIONS, prediction(i, 1)) for i in range(10, 20)], 10))
    assert worker.committable() == {TopicPartition("predictions", 0): 20}
    await worker(deliveries([(Topic.PREDICTIONS, prediction(i, 1)) for i in range(20, 25)], 20))

    # killed here: predictions 20..24 were fed but not checkpointed
    again = worker_with(log, Outside(), clock)
    await again.restore()
    assert again.monitor.join.pending() == 20
    # the consumer reads from the committed offset (20) or earlier: each is fed once
    await again(deliveries([(Topic.PREDICTIONS, prediction(i, 1)) for i in range(15, 25)], 15))
    assert again.monitor.join.pending() == 25
    assert again.monitor.watches[MODEL].predicted == 25


async def test_a_decision_is_in_the_outbox_before_it_is_published(clock: Clock) -> None:
    """A worker killed after its checkpoint but before publishing: the next one publishes
    the very same alert and retrain request, and decides nothing again."""
    log, bus = MemoryChangelog(), Outside()
    worker = worker_with(log, bus, clock)
    await worker.restore()
    worker.monitor.on_lifecycle(lifecycle(1, LifecycleAction.PROMOTED, 1, accuracy=0.9))
    published_before_crash: list[Any] = []

    async def crash(*_: Any, **__: Any) -> None:
        published_before_crash.append("x")
        raise ConnectionError("killed")

    events: list[tuple[Topic, Any]] = []
    for i in range(1_200):
        events.append((Topic.PREDICTIONS, prediction(i, 1, predicted=1)))
        wrong = i >= 400 and i % 3 == 0
        events.append((Topic.DATA_VALIDATED, label_for(i, 0 if wrong else 1)))
    bus.publish = crash  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await worker(deliveries(events, 0))
    assert published_before_crash  # it got as far as publishing the first decision

    quiet = Outside()
    again = worker_with(log, quiet, clock)
    await again.restore()
    kinds = [type(event).__name__ for event in quiet.published]
    assert kinds[:2] == ["AlertRaised", "TrainingRequested"], kinds
    alert, request = quiet.published[:2]
    assert again.monitor.watches[MODEL].retrain_in_flight == request.request_id
    assert again.monitor.watches[MODEL].incident().alert.alert_id == alert.alert_id
    await again(deliveries(events, 0))  # the same input read again: already fed
    assert [type(e).__name__ for e in quiet.published].count("TrainingRequested") == 1
