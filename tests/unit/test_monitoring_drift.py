"""Issue 6, defect 5: data drift is a per-feature streaming check, not a look every 500
predictions: it warns within ~100 samples of a clear shift, and almost never otherwise."""

from __future__ import annotations

import random

import pytest

from contracts.events import AlertRaised, AlertStatus, BinnedDistribution, LifecycleAction
from services.monitoring.data_drift import DataDriftWatch, chi2_sf, psi
from services.monitoring.handlers import Monitor
from shared.project import DataDriftMonitor
from tests.unit.factories import demo_project, label_for, prediction
from tests.unit.test_monitoring_logic import MODEL, Clock, alerts, lifecycle, reference_of

FEATURES = ("salary", "age", "loan")  # what the demo project watches
LOW, HIGH = 20.0, 70.0


@pytest.fixture(scope="module")
def reference() -> dict[str, BinnedDistribution]:
    """Decile profiles of 2,000 training values (as training builds them): the reference
    carries its own sampling noise, as in production."""
    rng = random.Random(1)
    return {name: reference_of([rng.uniform(LOW, HIGH) for _ in range(2_000)])
            for name in FEATURES}


def monitor_with(reference: dict[str, BinnedDistribution]) -> Monitor:
    monitor = Monitor(demo_project(), clock=Clock())
    monitor.on_lifecycle(lifecycle(1, LifecycleAction.PROMOTED, 1, reference=reference))
    return monitor


def test_a_clear_shift_warns_within_about_a_hundred_samples(
        reference: dict[str, BinnedDistribution]) -> None:
    monitor = monitor_with(reference)
    rng = random.Random(2)
    for i in range(1_000):
        row = {name: rng.uniform(LOW, HIGH) for name in FEATURES}
        assert monitor.on_prediction(prediction(i, 1, features=row)) == []
    warned: list[tuple[int, AlertRaised]] = []
    for i in range(300):  # age × 1.5 from here on; the others unchanged
        row = {name: rng.uniform(LOW, HIGH) for name in FEATURES}
        row["age"] *= 1.5
        warned += [(i, a) for a in alerts(monitor.on_prediction(
            prediction(1_000 + i, 1, features=row)))]
    [(after, alert)] = warned
    assert after <= 100, f"warned {after} samples after the shift"
    assert (alert.kind, alert.status, alert.evidence["feature"]) == (
        "data_drift", AlertStatus.FIRING, "age")
    assert alert.evidence["psi"] > alert.evidence["threshold"]
    assert alert.evidence["p_value"] < alert.evidence["alpha"]


def test_no_false_alarm_in_100k_stationary_predictions(
        reference: dict[str, BinnedDistribution]) -> None:
    """≤ 1 false alarm per 100k stationary predictions, checked on every one (3 features,
    drawn from the distribution the reference was profiled from)."""
    watch = DataDriftWatch(DataDriftMonitor(features=list(FEATURES)))
    watch.set_reference(reference)
    rng = random.Random(3)
    uniform = rng.uniform
    shifts = []
    for _ in range(100_000):
        shifts += watch.update({"salary": uniform(LOW, HIGH), "age": uniform(LOW, HIGH),
                                "loan": uniform(LOW, HIGH)}, firing=())
    assert shifts == []


def test_a_concept_only_change_raises_no_data_drift(
        reference: dict[str, BinnedDistribution]) -> None:
    monitor = monitor_with(reference)
    rng = random.Random(4)
    seen = []
    for i in range(3_000):
        row = {name: rng.uniform(LOW, HIGH) for name in FEATURES}
        truth = int(row["age"] > 45)
        label = truth if i < 1_000 else 1 - truth  # the labels flip, the inputs do not
        seen += monitor.on_prediction(prediction(i, 1, predicted=truth, features=row))
        seen += monitor.on_label(label_for(i, label))
    assert alerts(seen, "concept_drift")
    assert alerts(seen, "data_drift") == []


def test_the_warning_resolves_with_hysteresis(
        reference: dict[str, BinnedDistribution]) -> None:
    monitor = monitor_with(reference)
    rng = random.Random(5)
    seen = []
    for i in range(2_500):
        row = {name: rng.uniform(LOW, HIGH) for name in FEATURES}
        if 500 <= i < 1_500:
            row["age"] *= 1.5
        seen += monitor.on_prediction(prediction(i, 1, features=row))
    fired, resolved = alerts(seen, "data_drift")
    assert (fired.status, resolved.status) == (AlertStatus.FIRING, AlertStatus.RESOLVED)
    assert resolved.alert_id == fired.alert_id
    assert resolved.evidence["psi_now"] < fired.evidence["threshold"] / 2
    assert "data_drift:age" not in monitor.watches[MODEL].firing


def test_streaming_scores_match_a_full_recount(
        reference: dict[str, BinnedDistribution]) -> None:
    """The counts move by one per prediction; the scores they give are those of the window."""
    spec = DataDriftMonitor(features=["age"], window=200, min_samples=50)
    watch = DataDriftWatch(spec)
    watch.set_reference(reference)
    rng = random.Random(6)
    values = [rng.uniform(LOW, HIGH) * (1.3 if i > 700 else 1.0) for i in range(1_000)]
    for value in values:
        watch.update({"age": value}, firing=())
    [long, short] = sorted(watch.windows["age"], key=lambda w: -w.size)
    assert long.psi() == pytest.approx(psi(reference["age"], values[-200:]), rel=1e-9)
    assert short.psi() == pytest.approx(psi(reference["age"], values[-50:]), rel=1e-9)


def test_chi2_survival_function() -> None:
    # Tabulated upper-tail points of the chi-square distribution.
    assert chi2_sf(16.919, 9) == pytest.approx(0.05, rel=1e-3)
    assert chi2_sf(3.841, 1) == pytest.approx(0.05, rel=1e-3)
    assert chi2_sf(9.488, 4) == pytest.approx(0.05, rel=1e-3)
    assert chi2_sf(0.0, 5) == pytest.approx(1.0)
