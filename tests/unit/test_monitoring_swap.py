"""Issue 6: swap latency, from the alarm to the first prediction of a newer version, in
seconds and in predictions served meanwhile, per model."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from contracts.events import AlertStatus, LifecycleAction
from services.monitoring.handlers import Monitor
from tests.unit.factories import demo_project, prediction
from tests.unit.test_monitoring_logic import MODEL, Clock, alerts, lifecycle, requests
from tests.unit.test_monitoring_resolution import Rated


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"model": MODEL})


def test_swap_latency_is_measured_in_seconds_and_samples() -> None:
    clock = Clock()
    monitor = Monitor(demo_project(), clock=clock)
    monitor.on_lifecycle(lifecycle(1, LifecycleAction.PROMOTED, 1))
    stream = Rated(monitor)
    stream.feed(400, 1, 0.1)
    clock.now = 100.0
    drifted = []
    while not drifted:  # one labeled prediction at a time (60% wrong), until the alarm
        drifted = stream.feed(1, 1, float(stream.index % 10 < 6))
    [request] = requests(drifted)
    for _ in range(250):  # v1 serves on for 2.5 s...
        clock.now += 0.01
        monitor.on_prediction(prediction(stream.index, 1))
        stream.index += 1
    clock.now += 0.5
    monitor.on_lifecycle(lifecycle(2, LifecycleAction.PROMOTED, 2, accuracy=0.9,
                                   request_id=request.request_id))
    assert gauge("driftloop_swap_latency_samples") != 250  # not before v2 answers
    monitor.on_prediction(prediction(stream.index, 2))  # ...then v2 answers
    stream.index += 1
    monitor.on_prediction(prediction(stream.index, 3))  # a later one changes nothing
    stream.index += 1
    assert gauge("driftloop_swap_latency_seconds") == pytest.approx(3.0)
    assert gauge("driftloop_swap_latency_samples") == 250
    [resolved] = alerts(stream.feed(300, 2, 0.1))
    assert resolved.status is AlertStatus.RESOLVED
    assert resolved.evidence["swap_latency_seconds"] == pytest.approx(3.0)
    assert resolved.evidence["swap_latency_samples"] == 250
    assert resolved.evidence["swapped_to_version"] == 2


def test_predictions_of_the_drifted_version_are_not_a_swap() -> None:
    clock = Clock()
    monitor = Monitor(demo_project(), clock=clock)
    monitor.on_lifecycle(lifecycle(1, LifecycleAction.PROMOTED, 1))
    stream = Rated(monitor)
    stream.feed(400, 1, 0.1)
    stream.feed(800, 1, 0.6)
    incident = monitor.watches[MODEL].firing["concept_drift"]
    assert "swap_latency_samples" not in incident.alert.evidence
