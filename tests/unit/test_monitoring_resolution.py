"""Issue 6, defect 4: an alert resolves when the model is back to what its own holdout
promised, and each distinct drift is an alert of its own."""

from __future__ import annotations

import pytest

from contracts.events import AlertStatus, LifecycleAction
from services.monitoring.handlers import Action, Monitor
from tests.unit.factories import demo_project, label_for, prediction
from tests.unit.test_monitoring_logic import MODEL, Clock, alerts, lifecycle, requests


class Rated:
    """Labeled predictions whose errors are spread evenly at a rate given per phase."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.index = 0

    def feed(self, n: int, version: int, error_rate: float) -> list[Action]:
        actions: list[Action] = []
        for k in range(n):
            wrong = int((k + 1) * error_rate) > int(k * error_rate)
            i = self.index
            actions += self.monitor.on_prediction(prediction(i, version, predicted=1))
            actions += self.monitor.on_label(label_for(i, 0 if wrong else 1))
            self.index += 1
        return actions


@pytest.fixture
def monitor() -> Monitor:
    watching = Monitor(demo_project(), clock=Clock())
    watching.on_lifecycle(lifecycle(1, LifecycleAction.PROMOTED, 1, accuracy=0.9))
    return watching


def test_a_version_that_keeps_its_holdout_promise_resolves_the_alert(monitor: Monitor) -> None:
    """SEA, seeds 42 and 200: v2 erred 0.13 where v1 erred 0.17 when it was replaced, and
    its holdout promised 0.13. It was not 0.05 better than v1, so the alert never resolved."""
    stream = Rated(monitor)
    stream.feed(400, 1, 0.10)
    drifted = stream.feed(800, 1, 0.3)
    [fired] = alerts(drifted)
    [request] = requests(drifted)
    assert alerts(stream.feed(300, 1, 0.17)) == []  # v1's recent error when replaced
    monitor.on_lifecycle(lifecycle(2, LifecycleAction.PROMOTED, 2, accuracy=0.87,
                                   request_id=request.request_id))
    [resolved] = alerts(stream.feed(400, 2, 0.13))
    assert (resolved.alert_id, resolved.status) == (fired.alert_id, AlertStatus.RESOLVED)
    assert resolved.evidence["resolved_by_version"] == 2
    assert resolved.evidence["expected_error"] == pytest.approx(0.13)


def test_a_version_that_misses_its_promise_does_not_resolve(monitor: Monitor) -> None:
    stream = Rated(monitor)
    stream.feed(400, 1, 0.10)
    stream.feed(800, 1, 0.6)
    monitor.on_lifecycle(lifecycle(2, LifecycleAction.PROMOTED, 2, accuracy=0.95))
    assert alerts(stream.feed(600, 2, 0.2)) == []  # promised 0.05, serves 0.2
    assert "concept_drift" in monitor.watches[MODEL].firing


def test_two_drifts_are_two_alerts(monitor: Monitor) -> None:
    """SEA and Agrawal with a linear model: the second drift came while the first alert still
    fired; it produced a training request but no alert — on-call saw one alert for two."""
    stream = Rated(monitor)
    stream.feed(400, 1, 0.10)
    first = stream.feed(800, 1, 0.6)
    [alert_1] = alerts(first)
    [request_1] = requests(first)
    monitor.on_lifecycle(lifecycle(2, LifecycleAction.PROMOTED, 2, accuracy=0.95,
                                   request_id=request_1.request_id))
    assert alerts(stream.feed(400, 2, 0.2)) == []  # better, short of its promise: firing
    monitor.clock.now += 60  # type: ignore[attr-defined]  # past the cooldown
    second = stream.feed(800, 2, 0.6)  # v2's own detector fires: another drift
    superseded, alert_2 = alerts(second)
    assert (superseded.alert_id, superseded.status) == (alert_1.alert_id, AlertStatus.RESOLVED)
    assert superseded.evidence["superseded_by"] == alert_2.alert_id
    assert "superseded" in superseded.summary
    assert (alert_2.status, alert_2.evidence["version"]) == (AlertStatus.FIRING, 2)
    assert alert_2.alert_id != alert_1.alert_id
    [request_2] = requests(second)
    assert request_2.evidence["alert_id"] == alert_2.alert_id
    assert monitor.watches[MODEL].firing["concept_drift"].alert.alert_id == alert_2.alert_id


def test_frequent_new_versions_neither_alert_nor_lose_the_firing_alert(
        monitor: Monitor) -> None:
    """An online learner's snapshots: a new version every 150 labeled predictions, fewer
    than `recovery_samples` each. The alert resolves on the recent errors of the versions
    newer than the one that drifted, once they are back to what they promised."""
    stream = Rated(monitor)
    stream.feed(400, 1, 0.10)
    [fired] = alerts(stream.feed(800, 1, 0.6))
    seen: list[Action] = []
    for version in range(2, 5):  # still adapting: erring more than promised
        seen += monitor.on_lifecycle(lifecycle(version, LifecycleAction.PROMOTED, version,
                                               accuracy=0.9))
        seen += stream.feed(150, version, 0.3)
    assert alerts(seen) == []
    assert monitor.watches[MODEL].firing["concept_drift"].alert.alert_id == fired.alert_id
    for version in range(5, 9):  # adapted
        seen += monitor.on_lifecycle(lifecycle(version, LifecycleAction.PROMOTED, version,
                                               accuracy=0.9))
        seen += stream.feed(150, version, 0.1)
    [resolved] = alerts(seen)
    assert (resolved.alert_id, resolved.status) == (fired.alert_id, AlertStatus.RESOLVED)
    assert resolved.evidence["resolved_by_version"] >= 6
