"""Feedback by prediction id: the label-only record, POST /v1/feedback, ingestion forwarding
it, monitoring joining it with the prediction (scored once, completed into a record for the
dataset, dead-lettered when its prediction never comes) and `driftloop produce` reading it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from pydantic import ValidationError

from cli.produce import read_records
from contracts.base import Contract
from contracts.events import (
    Feedback,
    LabeledRecord,
    LifecycleAction,
    RecordRejected,
    RecordValidated,
)
from contracts.topics import Topic
from services.ingestion.consumers import labeled_handler
from services.ingestion.handlers import Ingestor
from services.monitoring.handlers import Monitor, feedback_record_id
from services.serving.feedback import MAX_ITEMS, build_router, feedback_id
from shared.datasets import DatasetStore
from shared.errors import UnreadableInput
from shared.http_errors import install_error_handlers
from tests.unit.factories import T0, demo_project, labeled, prediction
from tests.unit.test_kafka_edges import FlakyBus, _delivery
from tests.unit.test_monitoring_logic import MODEL, Clock, lifecycle

# -- the contract ---------------------------------------------------------------------------


def test_a_label_only_record_is_feedback() -> None:
    record = LabeledRecord.model_validate({"prediction_id": "p-1", "label": 1})
    assert record.is_feedback and record.message_key == "p-1"
    whole = labeled(3)
    assert not whole.is_feedback and whole.message_key == whole.record_id


@pytest.mark.parametrize("payload", [
    {"label": 1},  # nothing to join or store
    {"prediction_id": "p-1", "features": {"age": 40}, "label": 1},  # half a record
    {"dataset": "loans", "record_id": "r", "label": 1},  # no features
])
def test_half_a_record_is_refused_with_what_is_missing(payload: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="missing"):
        LabeledRecord.model_validate(payload)


# -- monitoring's join ----------------------------------------------------------------------


@pytest.fixture
def monitor() -> Monitor:
    watching = Monitor(demo_project(), clock=Clock())
    watching.on_lifecycle(lifecycle(1, LifecycleAction.PROMOTED, 1, accuracy=0.9))
    return watching


def feedback(i: int, label: Any = 1) -> Feedback:
    return Feedback(prediction_id=f"pred-{i}", label=label, at=T0 + timedelta(seconds=i + 5))


def completed(actions: list[Any]) -> list[LabeledRecord]:
    return [a for a in actions if isinstance(a, LabeledRecord)]


@pytest.mark.parametrize("feedback_first", [False, True])
def test_feedback_is_scored_and_completed_by_its_prediction(monitor: Monitor,
                                                            feedback_first: bool) -> None:
    features = {"salary": 50_000.0, "age": 41}
    made = prediction(7, 1, predicted=1, features=features)
    watch = monitor.watches[MODEL]
    if feedback_first:
        assert monitor.on_feedback(feedback(7, label=0)) == []
        actions = monitor.on_prediction(made)
    else:
        monitor.on_prediction(made)
        actions = monitor.on_feedback(feedback(7, label=0))

    assert watch.labeled == 1  # the detectors saw one outcome (an error: 1 answered, 0 true)
    assert fed("joined") >= 1
    [record] = completed(actions)
    assert record.dataset == "loans" and record.record_id == feedback_record_id("pred-7")
    assert record.features == features and record.label == 0
    assert record.prediction_id == "pred-7" and record.event_time == made.at


def test_the_completed_record_is_not_scored_again(monitor: Monitor) -> None:
    monitor.on_prediction(prediction(7, 1))
    [record] = completed(monitor.on_feedback(feedback(7)))
    back = RecordValidated(dataset="loans", record_id=record.record_id or "",
                           features=record.features or {}, label=record.label,
                           event_time=T0, ingested_at=T0, sequence=0,
                           prediction_id=record.prediction_id)
    assert monitor.on_label(back) == []
    assert monitor.watches[MODEL].labeled == 1
    assert monitor.join.pending() == 0  # nothing left waiting for a pair that came already


def test_a_label_of_the_wrong_type_is_completed_but_not_scored(monitor: Monitor) -> None:
    monitor.on_prediction(prediction(7, 1))
    [record] = completed(monitor.on_feedback(feedback(7, label="approved")))
    assert record.label == "approved"  # ingestion will dead-letter it with the reason
    assert monitor.watches[MODEL].labeled == 0


def fed(outcome: str) -> float:
    return REGISTRY.get_sample_value("driftloop_feedback_total", {"outcome": outcome}) or 0.0


def test_feedback_whose_prediction_never_comes_is_dead_lettered() -> None:
    before = fed("dead_lettered")
    clock = Clock()
    watching = Monitor(demo_project(), clock=clock)
    ttl = watching.join.labels.ttl
    assert watching.on_feedback(feedback(1)) == []
    clock.now += ttl + 1
    actions = watching.on_feedback(feedback(2))
    [letter] = [a for a in actions if isinstance(a, RecordRejected)]
    assert letter.key == "pred-1" and "no prediction 'pred-1' seen" in letter.reason
    assert letter.source_topic == Topic.FEEDBACK.value and letter.rejected_by == "monitoring"
    assert Feedback.model_validate_json(letter.value_text or "").prediction_id == "pred-1"
    assert fed("dead_lettered") - before == 1
    assert watching.on_feedback(feedback(3)) == []
    # a prediction is traffic too: the next orphan is reported when one comes after its ttl
    clock.now += ttl + 1
    letters = [a for a in watching.on_prediction(prediction(99, 1)) if
               isinstance(a, RecordRejected)]
    assert [letter.key for letter in letters] == ["pred-2", "pred-3"]


# -- ingestion ------------------------------------------------------------------------------


async def test_ingestion_forwards_feedback_and_stores_whole_records(tmp_path: Path) -> None:
    bus = FlakyBus(failures=0)
    store = DatasetStore(tmp_path)
    handle = labeled_handler(bus, Ingestor(demo_project(), store))  # type: ignore[arg-type]
    alone = LabeledRecord(prediction_id="pred-9", label=1)
    rejected = await handle([_delivery(labeled(1), "a", Topic.DATA_LABELED),
                             _delivery(alone, "b", Topic.DATA_LABELED)])

    assert rejected == []
    topics = [(topic, type(event)) for topic, event in bus.published]
    assert (Topic.FEEDBACK, Feedback) in topics
    forwarded = next(e for t, e in bus.published if t is Topic.FEEDBACK)
    assert isinstance(forwarded, Feedback)
    assert (forwarded.prediction_id, forwarded.label, forwarded.source) == (
        "pred-9", 1, "data.labeled")
    assert [r.record_id for r in store.records("loans")] == [labeled(1).record_id]


# -- POST /v1/feedback ----------------------------------------------------------------------


class RecordingBus:
    def __init__(self) -> None:
        self.sent: list[tuple[Topic, Contract, str, str | None]] = []

    async def publish(self, topic: Topic, event: Contract, key: str,
                      ce_id: str | None = None, trace_id: str | None = None) -> None:
        self.sent.append((topic, event, key, ce_id))


@pytest.fixture
def bus() -> RecordingBus:
    return RecordingBus()


@pytest.fixture
async def client(bus: RecordingBus) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(build_router(bus, demo_project()))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://serving") as client:
        yield client


async def test_feedback_over_http_is_published_keyed_by_prediction_id(
        client: httpx.AsyncClient, bus: RecordingBus) -> None:
    answer = await client.post("/v1/feedback", json={"prediction_id": "p-1", "label": 1})
    assert answer.status_code == 202 and answer.json() == {"accepted": 1}
    [(topic, event, key, ce_id)] = bus.sent
    assert topic is Topic.FEEDBACK and key == "p-1"
    assert isinstance(event, Feedback) and (event.label, event.source) == (1, "http")

    many = [{"prediction_id": f"p-{i}", "label": i % 2} for i in range(5)]
    assert (await client.post("/v1/feedback", json=many)).json() == {"accepted": 5}
    assert len(bus.sent) == 6
    # a client's retry is the same event (same id): consumers drop it as a duplicate
    again = await client.post("/v1/feedback", json={"prediction_id": "p-1", "label": 1})
    assert again.status_code == 202 and bus.sent[-1][3] == ce_id


@pytest.mark.parametrize(("body", "field"), [
    ({"label": 1}, "prediction_id"),
    ({"prediction_id": "p", "label": 1, "extra": 2}, "extra"),
    ({"prediction_id": "p", "label": "approved"}, "label"),  # no declared model takes it
    ({"prediction_id": "p" * 201, "label": 1}, "prediction_id"),
    ([], "body"),
    ([{"prediction_id": "p", "label": 1}] * (MAX_ITEMS + 1), "body"),
])
async def test_bad_feedback_is_refused_with_the_field(client: httpx.AsyncClient,
                                                     bus: RecordingBus, body: Any,
                                                     field: str) -> None:
    answer = await client.post("/v1/feedback", json=body)
    assert answer.status_code == 422, answer.text
    assert any(field in f["field"] for f in answer.json()["fields"]), answer.json()
    assert bus.sent == []


async def test_invalid_json_is_refused(client: httpx.AsyncClient) -> None:
    answer = await client.post("/v1/feedback", content=b"{not json",
                               headers={"content-type": "application/json"})
    assert answer.status_code == 422 and "not valid JSON" in answer.text


def test_feedback_ids_name_the_item() -> None:
    from contracts.http import FeedbackItem
    one = FeedbackItem(prediction_id="p", label=1)
    assert feedback_id(one) == feedback_id(FeedbackItem(prediction_id="p", label=1))
    assert feedback_id(one) != feedback_id(FeedbackItem(prediction_id="p", label=0))


# -- driftloop produce ----------------------------------------------------------------------


def test_produce_reads_a_prediction_id_column(tmp_path: Path) -> None:
    whole = tmp_path / "labels.csv"
    whole.write_text("age,salary,prediction_id,label\n41,50000,p-1,1\n", encoding="utf-8")
    [record] = read_records(whole, "loans")
    assert record.features == {"age": 41, "salary": 50000} and record.prediction_id == "p-1"

    alone = tmp_path / "feedback.csv"
    alone.write_text("prediction_id,label\np-1,1\np-2,0\n", encoding="utf-8")
    records = list(read_records(alone, "loans"))
    assert [(r.is_feedback, r.prediction_id, r.label) for r in records] == [
        (True, "p-1", 1), (True, "p-2", 0)]

    lines = tmp_path / "feedback.jsonl"
    lines.write_text('{"prediction_id": "p-3", "label": 1}\n', encoding="utf-8")
    [record] = read_records(lines, "loans")
    assert record.is_feedback and record.dataset is None


def test_produce_names_the_line_of_a_bad_record(tmp_path: Path) -> None:
    lines = tmp_path / "bad.jsonl"
    lines.write_text('{"prediction_id": "p-3", "label": 1}\n{"label": 1, "features": 3}\n',
                     encoding="utf-8")
    with pytest.raises(UnreadableInput, match="bad.jsonl:2: features"):
        list(read_records(lines, "loans"))
