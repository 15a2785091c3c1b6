"""Issue 6, defect 7: regression models are monitored on their absolute residuals, with the
same alerts and retrain path as classifiers."""

from __future__ import annotations

import math
from typing import Any

import pytest
from river.datasets import synth

from contracts.events import AlertStatus, LifecycleAction, ModelLifecycleChanged
from services.monitoring.handlers import Action, Monitor
from shared.project import Project
from tests.unit.factories import demo_project, label_for, prediction
from tests.unit.test_monitoring_logic import MODEL, Clock, alerts, lifecycle, requests


def friedman(x: dict[int, float]) -> float:
    """Friedman #1 before any drift: what a perfect v1 learned (the stream adds N(0, 1))."""
    return (10 * math.sin(math.pi * x[0] * x[1]) + 20 * (x[2] - 0.5) ** 2 + 10 * x[3]
            + 5 * x[4])


def regression_project() -> Project:
    raw = demo_project().model_dump(mode="json")
    raw["models"][MODEL]["task"] = "regression"
    raw["models"][MODEL]["policy"]["metric"] = "mae"
    return Project.model_validate(raw)


def promoted(version: int, mae: float, **kw: Any) -> ModelLifecycleChanged:
    return lifecycle(version, LifecycleAction.PROMOTED, version, **kw).model_copy(
        update={"metrics": {"mae": mae, "rmse": mae * 1.25, "r2": 0.9}})


def serve(monitor: Monitor, stream: list[tuple[dict[int, float], float]], version: int,
          offset: int, model: Any = friedman) -> list[Action]:
    actions: list[Action] = []
    for i, (x, y) in enumerate(stream):
        actions += monitor.on_prediction(prediction(offset + i, version, predicted=model(x)))
        actions += monitor.on_label(label_for(offset + i, y))
    return actions


@pytest.fixture
def monitor() -> Monitor:
    watching = Monitor(regression_project(), clock=Clock())
    watching.on_lifecycle(promoted(1, mae=0.8))
    return watching


def test_a_regression_drift_raises_an_alert_and_a_retrain(monitor: Monitor) -> None:
    """River's Friedman stream, global abrupt drift at 2,000: v1 keeps the old function."""
    data = list(synth.FriedmanDrift(drift_type="gra", position=(2_000, 10_000),
                                    seed=42).take(3_000))
    assert serve(monitor, data[:2_000], 1, 0) == []
    drifted = serve(monitor, data[2_000:], 1, 2_000)
    [alert] = alerts(drifted)
    [request] = requests(drifted)
    assert (alert.kind, alert.status) == ("concept_drift", AlertStatus.FIRING)
    assert alert.evidence["baseline_error"] == pytest.approx(0.8, abs=0.25)  # MAE of N(0,1)
    assert alert.evidence["recent_error"] > 1.5 * alert.evidence["baseline_error"]
    assert alert.evidence["measure"] == "mae"
    assert request.evidence["alert_id"] == alert.alert_id
    assert drifted.index(alert) < drifted.index(request)


def test_a_stationary_regression_stream_raises_nothing(monitor: Monitor) -> None:
    data = list(synth.FriedmanDrift(drift_type="gra", position=(100_000, 200_000),
                                    seed=7).take(20_000))
    assert serve(monitor, data, 1, 0) == []


def test_a_regression_alert_resolves_on_the_holdout_mae(monitor: Monitor) -> None:
    data = list(synth.FriedmanDrift(drift_type="gra", position=(1_000, 10_000),
                                    seed=3).take(3_000))
    serve(monitor, data[:1_000], 1, 0)
    [request] = requests(serve(monitor, data[1_000:2_000], 1, 1_000))
    monitor.on_lifecycle(promoted(2, mae=0.85, request_id=request.request_id))

    def oracle(x: dict[int, float]) -> float:  # v2 learned the new concept
        return next(y for x2, y in data[2_000:] if x2 is x)

    [resolved] = alerts(serve(monitor, data[2_000:2_400], 2, 2_000,
                              model=lambda x: oracle(x) + 0.8))
    assert resolved.status is AlertStatus.RESOLVED
    assert resolved.evidence["expected_error"] == pytest.approx(0.85)


def test_a_non_numeric_residual_is_skipped(monitor: Monitor) -> None:
    monitor.on_prediction(prediction(1, 1, predicted=None))
    assert monitor.on_label(label_for(1, 3.5)) == []
    assert monitor.watches[MODEL].concept.samples == 0
