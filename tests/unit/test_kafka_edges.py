"""The Kafka edges' retry behaviour, with a bus whose publish fails on demand."""

from __future__ import annotations

from typing import Any

from contracts.base import Contract
from contracts.events import AlertRaised, LifecycleAction, TrainingRequested
from contracts.topics import Topic
from services.monitoring.consumers import monitor_handler
from services.monitoring.handlers import Monitor
from shared.consumer import Delivery
from shared.envelope import Envelope
from shared.errors import DependencyUnavailable
from tests.unit.factories import demo_project, label_for, prediction
from tests.unit.test_monitoring_logic import MODEL, lifecycle


class FlakyBus:
    """Records what is published; the first `failures` publishes raise."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.published: list[tuple[Topic, Contract]] = []

    async def publish(self, topic: Topic, event: Contract, key: str,
                      ce_id: str | None = None) -> None:
        if self.failures:
            self.failures -= 1
            raise DependencyUnavailable(dependency="kafka", detail="broker restarting")
        self.published.append((topic, event))


def _delivery(event: Any, ce_id: str) -> Delivery:
    topic = Topic.PREDICTIONS if hasattr(event, "latency_seconds") else Topic.DATA_VALIDATED
    return Delivery(topic, event, Envelope(ce_id, "", "test", "", "0" * 32), None)  # type: ignore[arg-type]


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
    handle = monitor_handler(bus, monitor)  # type: ignore[arg-type]
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

    await handle(batch)  # replaying the same batch again decides nothing new
    assert len(bus.published) == 2
