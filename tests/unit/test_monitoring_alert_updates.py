"""Issue 6, defect 2: when the loop tries again for a firing alert, the alert itself says so
(re-published, same alert_id, still firing), under an event id of its own."""

from __future__ import annotations

import asyncio
from typing import Any

from contracts.events import AlertRaised, AlertStatus, LifecycleAction
from contracts.topics import Topic
from services.monitoring.consumers import publish_action
from services.monitoring.handlers import Action, Monitor
from tests.unit.factories import demo_project
from tests.unit.test_monitoring_logic import MODEL, Clock, Stream, alerts, lifecycle, requests


class Bus:
    """Records what would be published."""

    def __init__(self) -> None:
        self.sent: list[tuple[Topic, Any, str | None]] = []

    async def publish(self, topic: Topic, event: Any, key: str, ce_id: str | None = None,
                      trace_id: str | None = None) -> None:
        self.sent.append((topic, event, ce_id))


def drift_then_retry(monitor: Monitor, clock: Clock) -> tuple[list[Action], list[Action]]:
    """A drift, its first candidate rejected, a second try past the cooldown."""
    stream = Stream(monitor)
    stream.feed(400, 1, 1)
    first = stream.feed(400, 1, 6)
    [request] = requests(first)
    monitor.on_lifecycle(lifecycle(2, LifecycleAction.REJECTED, 1,
                                   request_id=request.request_id))
    clock.now += 60
    return first, stream.feed(300, 1, 6)


def test_a_further_try_republishes_the_alert_with_what_the_loop_did() -> None:
    clock = Clock()
    monitor = Monitor(demo_project(), clock=clock)
    monitor.on_lifecycle(lifecycle(1, LifecycleAction.PROMOTED, 1))
    first, retry = drift_then_retry(monitor, clock)
    [fired], [first_request] = alerts(first), requests(first)
    [second_request] = requests(retry)
    [update] = alerts(retry)
    assert (update.alert_id, update.status, update.kind) == (
        fired.alert_id, AlertStatus.FIRING, "concept_drift")
    assert update.evidence["attempts"] == 2
    assert update.evidence["last_request_id"] == second_request.request_id
    assert update.evidence["previous"] == {"request_id": first_request.request_id,
                                           "outcome": "rejected"}
    assert update.evidence["baseline_error"] == fired.evidence["baseline_error"]  # kept
    assert update.at >= fired.at
    assert monitor.watches[MODEL].firing["concept_drift"].alert == update  # the latest word


def test_each_update_of_an_alert_has_its_own_event_id_and_a_retry_keeps_it() -> None:
    clock = Clock()
    monitor = Monitor(demo_project(), clock=clock)
    monitor.on_lifecycle(lifecycle(1, LifecycleAction.PROMOTED, 1))
    first, retry = drift_then_retry(monitor, clock)
    [fired], [update] = alerts(first), alerts(retry)
    resolved = update.model_copy(update={"status": AlertStatus.RESOLVED})
    bus = Bus()
    for action in (fired, update, update, resolved):  # the update published twice: a retry
        asyncio.run(publish_action(bus, action, "0" * 32))  # type: ignore[arg-type]
    ids = [ce_id for topic, _, ce_id in bus.sent if topic is Topic.ALERTS]
    assert len(set(ids)) == 3 and ids[1] == ids[2]
    assert all(isinstance(event, AlertRaised) for _, event, _ in bus.sent)
