"""Live metrics per model version in tumbling windows (issue 7): counts land in the window of
the prediction's time, late labels too; accuracy, MAE, outputs, latency and drift per feature
are derived from counts; windows and versions are bounded, and so are Prometheus' labels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from contracts.events import BinnedDistribution, LifecycleAction
from services.monitoring.handlers import Monitor
from services.monitoring.live import LiveMetrics
from shared.project import LiveSpec
from tests.unit.factories import demo_project, label_for, prediction
from tests.unit.test_auth_routes import build, call, published  # noqa: F401 (fixtures)
from tests.unit.test_monitoring_logic import MODEL, Clock, lifecycle

T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # on a minute and an hour boundary
SALARY = BinnedDistribution(edges=[100.0, 200.0], fractions=[0.3, 0.4, 0.3])


def store(task: str = "classification", **spec: Any) -> LiveMetrics:
    live = LiveMetrics("m", task, LiveSpec(**{"windows_seconds": [60, 3600], **spec}))
    live.set_reference({"salary": SALARY})
    return live


def test_counts_land_in_the_window_of_the_prediction_even_when_the_label_is_late() -> None:
    live = store()
    for second in range(120):
        live.predicted(1, T + timedelta(seconds=second), second % 2, 0.0004,
                       {"salary": 150.0})
    # every label arrives after both minutes are over; 1 in 4 answers of the first minute
    # and 1 in 2 of the second were wrong
    for second in range(120):
        wrong = second % 4 == 0 if second < 60 else second % 2 == 0
        live.labeled(1, T + timedelta(seconds=second), 1.0 if wrong else 0.0)

    first, second = live.view(60)
    assert (first["start"], first["end"]) == (T.isoformat(), (T + timedelta(minutes=1)).isoformat())
    assert (first["predictions"], first["labeled"]) == (60, 60)
    assert first["accuracy"] == pytest.approx(0.75) and second["accuracy"] == pytest.approx(0.5)
    assert first["outputs"] == {"0": 30, "1": 30}
    assert first["latency_seconds"] == {"mean": pytest.approx(0.0004), "p50": 0.0005,
                                        "p99": 0.0005}
    [hour] = live.view(3600)
    assert (hour["predictions"], hour["labeled"]) == (120, 120)
    assert hour["accuracy"] == pytest.approx(0.625)


def test_a_regressor_shows_its_mae_and_output_spread() -> None:
    live = store("regression")
    for i, (output, truth) in enumerate([(1.0, 2.0), (3.0, 3.5), (5.0, 2.0)]):
        at = T + timedelta(seconds=i)
        live.predicted(2, at, output, 0.001, {})
        live.labeled(2, at, abs(output - truth))
    [window] = live.view(60)
    assert window["mae"] == pytest.approx((1.0 + 0.5 + 3.0) / 3)
    assert window["outputs"]["mean"] == pytest.approx(3.0)
    assert window["outputs"]["std"] == pytest.approx((8 / 3) ** 0.5)
    assert "accuracy" not in window


def test_drift_per_feature_is_psi_against_the_reference_bins() -> None:
    live = store()
    for i in range(100):  # the reference's own fractions: 30 / 40 / 30
        live.predicted(1, T + timedelta(seconds=i % 60), 1, 0.001,
                       {"salary": 50.0 if i < 30 else 150.0 if i < 70 else 250.0})
    for i in range(100):  # the next minute: everything above the top edge
        live.predicted(1, T + timedelta(seconds=60 + i % 60), 1, 0.001, {"salary": 900.0})
    calm, shifted = live.view(60)
    assert calm["drift_psi"]["salary"] == pytest.approx(0.0, abs=1e-9)
    assert shifted["drift_psi"]["salary"] > 2.0


def test_windows_and_versions_are_bounded_and_so_are_the_metric_labels() -> None:
    live = store(retain=3, versions=2)
    for version in (1, 2, 3):
        for minute in range(5):
            live.predicted(version, T + timedelta(minutes=minute), 1, 0.001, {})
    assert {w["version"] for w in live.view(60)} == {2, 3}  # v1 dropped: 2 versions kept
    assert len(live.view(60, version=3)) == 3  # the newest 3 minutes
    assert [w["start"] for w in live.view(60, version=3)] == [
        (T + timedelta(minutes=m)).isoformat() for m in (2, 3, 4)]
    # an event older than every kept window is not counted anywhere
    live.predicted(3, T, 1, 0.001, {})
    assert sum(w["predictions"] for w in live.view(60, version=3)) == 3

    def exported(version: int) -> float | None:
        return REGISTRY.get_sample_value("driftloop_live_predictions",
                                         {"model": "m", "version": str(version),
                                          "window": "60s"})

    assert exported(3) == 1 and exported(1) is None


def test_the_monitor_feeds_the_windows_of_the_version_that_answered() -> None:
    monitor = Monitor(demo_project(), clock=Clock())
    monitor.on_lifecycle(lifecycle(1, LifecycleAction.PROMOTED, 1, accuracy=0.9))
    for i in range(10):
        monitor.on_prediction(prediction(i, 1, predicted=1))
        monitor.on_label(label_for(i, 1 if i < 8 else 0))
    windows = monitor.watches[MODEL].live.view(60)
    assert sum(w["predictions"] for w in windows) == 10
    assert sum(w["labeled"] for w in windows) == 10
    correct = sum(w["accuracy"] * w["labeled"] for w in windows)
    assert correct == pytest.approx(8)


async def test_the_live_route(build: Any) -> None:  # noqa: F811
    app: FastAPI = build("monitoring")
    answer = await call(app, "GET", f"/v1/models/{MODEL}/live")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"model": MODEL, "window_seconds": 60, "windows": []}
    assert (await call(app, "GET", f"/v1/models/{MODEL}/live?window=3600")).status_code == 200
    refused = await call(app, "GET", f"/v1/models/{MODEL}/live?window=7")
    assert refused.status_code == 422 and "configured: 60, 3600" in refused.json()["detail"]
    assert (await call(app, "GET", "/v1/models/nope/live")).status_code == 404


def test_the_project_refuses_bad_window_sizes() -> None:
    with pytest.raises(ValueError, match="distinct positive"):
        LiveSpec(windows_seconds=[60, 60])
    with pytest.raises(ValueError, match="distinct positive"):
        LiveSpec(windows_seconds=[0])
    assert LiveSpec(windows_seconds=[3600, 60]).windows_seconds == [60, 3600]

