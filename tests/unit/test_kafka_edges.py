"""The Kafka edges' retry behaviour, with a bus whose publish fails on demand."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from aiokafka import ConsumerRecord

from contracts.base import Contract
from contracts.events import AlertRaised, LifecycleAction, TrainingRequested
from contracts.topics import Topic
from services.ingestion.consumers import labeled_handler
from services.ingestion.handlers import Ingestor
from services.monitoring.consumers import monitor_handler
from services.monitoring.handlers import Monitor
from shared.consumer import Delivery
from shared.datasets import DatasetStore
from shared.envelope import Envelope
from shared.errors import DependencyUnavailable
from shared.tracing import trace_id_var
from tests.unit.factories import REGISTRY_KEY, demo_project, label_for, labeled, prediction
from tests.unit.test_monitoring_logic import MODEL, lifecycle


class FlakyBus:
    """Records what is published; the first `failures` publishes raise."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.published: list[tuple[Topic, Contract]] = []
        self.traces: list[str | None] = []

    async def publish(self, topic: Topic, event: Contract, key: str,
                      ce_id: str | None = None, trace_id: str | None = None) -> None:
        if self.failures:
            self.failures -= 1
            raise DependencyUnavailable(dependency="kafka", detail="broker restarting")
        self.published.append((topic, event))
        self.traces.append(trace_id or trace_id_var.get())  # what build_headers would use


def _trace(ce_id: str) -> str:
    return ce_id.encode().hex().rjust(32, "0")  # a distinct trace per input


_offsets = itertools.count()


def _delivery(event: Any, ce_id: str, topic: Topic | None = None) -> Delivery:
    if topic is None:
        topic = Topic.PREDICTIONS if hasattr(event, "latency_seconds") else Topic.DATA_VALIDATED
    value = event.model_dump_json().encode()
    record = ConsumerRecord(topic.value, 0, next(_offsets), 0, 0, None, value, None, 0,
                            len(value), ())
    return Delivery(topic, event, Envelope(ce_id, "", "test", "", _trace(ce_id)), record)


def _drifting_batch() -> list[Delivery]:
    batch = []
    for i in range(800):
        wrong = i >= 400 and i % 10 < 6  # error 0% then 60%
        batch.append(_delivery(prediction(i, 1, predicted=1), f"p{i}"))
        batch.append(_delivery(label_for(i, 0 if wrong else 1), f"l{i}"))
    return batch


async def test_a_batch_retried_after_a_failed_publish_still_publishes_its_decisions() -> None:
    monitor = Monitor(demo_project())
    monitor.on_lifecycle(lifecycle(1, LifecycleAction.PROMOTED, 1))
    bus = FlakyBus(failures=1)
    handle = monitor_handler(bus, monitor, REGISTRY_KEY.verifier())  # type: ignore[arg-type]
    batch = _drifting_batch()

    try:
        await handle(batch)
        raise AssertionError("the first publish should have failed")
    except DependencyUnavailable:
        pass
    assert bus.published == []
    await handle(batch)  # the consumer retries the same batch

    kinds = [type(event) for _, event in bus.published]
    assert kinds == [AlertRaised, TrainingRequested]
    request = bus.published[1][1]
    assert isinstance(request, TrainingRequested)
    assert monitor.watches[MODEL].retrain_in_flight == request.request_id

    # Both carry the trace of the label that tipped the detector, not the batch's first event.
    assert bus.traces[0] == bus.traces[1]
    assert bus.traces[0] in {_trace(f"l{i}") for i in range(400, 800)}

    await handle(batch)  # replaying the same batch again decides nothing new
    assert len(bus.published) == 2


async def test_ingestion_publishes_each_record_in_its_own_trace(tmp_path: Path) -> None:
    bus = FlakyBus(failures=0)
    ingestor = Ingestor(demo_project(), DatasetStore(tmp_path))
    handle = labeled_handler(bus, ingestor)  # type: ignore[arg-type]
    batch = [_delivery(labeled(i), f"in-{i}", Topic.DATA_LABELED) for i in range(3)]
    assert await handle(batch) == []
    by_record = {event.record_id: trace  # type: ignore[attr-defined]
                 for (_, event), trace in zip(bus.published, bus.traces, strict=True)}
    assert by_record == {labeled(i).record_id: _trace(f"in-{i}") for i in range(3)}


def test_alerts_go_one_at_a_time_and_completed_feedback_together() -> None:
    from contracts.events import LabeledRecord
    from services.monitoring.consumers import BULK_GROUP, _next_group

    record = LabeledRecord(dataset="loans", record_id="feedback-p", features={}, label=1)
    alert = AlertRaised.model_validate({
        "alert_id": "a", "status": "firing", "severity": "warning", "kind": "concept_drift",
        "model": MODEL, "summary": "s", "evidence": {}, "runbook": "r"})
    pending: list[Any] = [(record, "t")] * 3 + [(alert, "t"), (alert, "t"), (record, "t")]
    assert len(_next_group(pending)) == 3  # the run of records, not past the alert
    assert _next_group(pending[3:]) == [(alert, "t")]  # alerts keep their order, one by one
    assert len(_next_group([(record, "t")] * (BULK_GROUP + 7))) == BULK_GROUP
