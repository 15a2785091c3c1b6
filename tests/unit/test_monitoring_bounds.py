"""Monitoring's memory is bounded by settings, in entries and so in bytes: the label join
keeps only what scoring needs, evicts the oldest beyond the bound and counts it."""

from __future__ import annotations

import tracemalloc

import pytest
from prometheus_client import REGISTRY

from contracts.events import LifecycleAction
from services.monitoring.handlers import Monitor
from services.monitoring.join import Predicted, compact_json
from services.monitoring.settings import MonitoringSettings
from tests.unit.factories import demo_project, label_for, prediction
from tests.unit.test_monitoring_logic import MODEL, lifecycle

FEATURES = {"salary": 50_000.0, "commission": 0.0, "age": 40, "elevel": 2, "car": 3,
            "zipcode": 4, "hvalue": 200_000.0, "hyears": 10, "loan": 100_000.0}


def dropped(side: str, why: str) -> float:
    value = REGISTRY.get_sample_value("driftloop_monitoring_join_dropped_total",
                                      {"side": side, "why": why})
    return value or 0.0


def watching(max_pending_predictions: int = 100_000,
             max_pending_labels: int = 100_000) -> Monitor:
    monitor = Monitor(demo_project(), max_pending_predictions=max_pending_predictions,
                      max_pending_labels=max_pending_labels)
    monitor.on_lifecycle(lifecycle(1, LifecycleAction.PROMOTED, 1))
    return monitor


def test_unlabeled_predictions_are_bounded_and_evictions_counted() -> None:
    monitor = watching(max_pending_predictions=100)
    before = dropped("prediction", "full")
    for i in range(1_000):
        monitor.on_prediction(prediction(i, 1, features=FEATURES))
    assert len(monitor.join.predictions.items) == 100
    assert dropped("prediction", "full") - before == 900
    assert list(monitor.join.predictions.items)[0] == "pred-900"  # the oldest went first


def test_unmatched_labels_are_bounded_too() -> None:
    monitor = watching(max_pending_labels=50)
    before = dropped("label", "full")
    for i in range(500):
        monitor.on_label(label_for(i, 1))
    assert len(monitor.join.labels.items) == 50
    assert dropped("label", "full") - before == 450


def test_the_project_can_only_lower_the_setting() -> None:
    assert Monitor(demo_project(), max_pending_predictions=10).join.predictions.max_size == 10
    project_bound = demo_project().models[MODEL].monitor.max_pending_predictions
    unbounded = Monitor(demo_project(), max_pending_predictions=10 ** 9)
    assert unbounded.join.predictions.max_size == project_bound


def test_a_pending_prediction_keeps_only_what_scoring_and_feedback_need() -> None:
    monitor = watching()
    made = prediction(1, 1, predicted=0, features=FEATURES)
    monitor.on_prediction(made)
    kept = monitor.join.predictions.items["pred-1"][1]
    assert kept == Predicted(MODEL, 1, 0, compact_json(FEATURES), made.at)
    assert kept.features == FEATURES  # what completes feedback that came alone


def test_pending_predictions_cost_a_few_hundred_bytes_whatever_they_carry() -> None:
    """Counted in bytes allocated, not time: 10k unlabeled predictions with 100 KB ids, each
    with its own copy of the demo's 9 features (as decoding gives every event)."""
    monitor = watching(max_pending_predictions=10_000)
    events = [prediction(i, 1, features=dict(FEATURES)).model_copy(
        update={"prediction_id": f"{i:08d}" + "x" * 100_000,
                "probabilities": {"0": 0.25, "1": 0.75}}) for i in range(200)]
    tracemalloc.start()
    try:
        for i in range(10_000):
            event = events[i % 200].model_copy(update={"prediction_id": f"p-{i:08d}-" * 4,
                                                       "features": dict(FEATURES)})
            monitor.on_prediction(event)
        for event in events:
            monitor.on_prediction(event)  # a 100 KB id is kept as its digest
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(monitor.join.predictions.items) == 10_000
    assert held / 10_000 < 800, f"{held / 10_000:.0f} bytes per pending prediction"
    long_id = events[-1].prediction_id
    assert monitor.on_label(label_for(0, 1).model_copy(update={"prediction_id": long_id})) == []
    assert len(monitor.join.predictions.items) == 9_999  # ...and still pairs with its label


def test_the_bounds_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = MonitoringSettings()
    assert (defaults.max_pending_predictions, defaults.max_pending_labels) == (100_000, 100_000)
    monkeypatch.setenv("DRIFTLOOP_MONITORING_MAX_PENDING_PREDICTIONS", "5000")
    monkeypatch.setenv("DRIFTLOOP_MONITORING_MAX_PENDING_LABELS", "700")
    configured = MonitoringSettings()
    assert (configured.max_pending_predictions, configured.max_pending_labels) == (5000, 700)
