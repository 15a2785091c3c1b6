"""Monitoring logic: label join, concept and data drift, alerts and retrain requests."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta

import pytest

from contracts.events import (
    AlertRaised,
    AlertStatus,
    ArtifactRef,
    BinnedDistribution,
    LifecycleAction,
    ModelLifecycleChanged,
    TrainingReason,
    TrainingRequested,
)
from services.monitoring.concept import ConceptWatch, DriftSignal, change_point
from services.monitoring.data_drift import psi
from services.monitoring.handlers import Action, Monitor
from services.monitoring.join import LabeledPair, LabelJoin, Predicted
from services.training.evaluation import profile
from shared.project import ConceptDriftMonitor, Project
from tests.unit.factories import T0, demo_project, digest, label_for, prediction, validated_rows

MODEL = "loans-tree"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def alerts(actions: list[Action], kind: str | None = None) -> list[AlertRaised]:
    return [a for a in actions if isinstance(a, AlertRaised) and kind in (None, a.kind)]


def requests(actions: list[Action]) -> list[TrainingRequested]:
    return [a for a in actions if isinstance(a, TrainingRequested)]


def lifecycle(version: int, action: LifecycleAction, champion: int | None,
              accuracy: float = 0.9,
              reference: dict[str, BinnedDistribution] | None = None,
              request_id: str | None = None) -> ModelLifecycleChanged:
    return ModelLifecycleChanged(
        model=MODEL, version=version, action=action, reason="test", run_id=f"run-{version}",
        artifact=ArtifactRef(digest=digest(f"a{version}"), signature="00" * 32, size_bytes=1),
        champion_version=champion, metrics={"accuracy": accuracy},
        reference_profile=reference or {}, request_id=request_id)


class Stream:
    """Labeled predictions of one model with a fixed, evenly spread error rate per phase."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.index = 0

    def feed(self, n: int, version: int, errors_in_ten: int,
             label_first: bool = False) -> list[Action]:
        actions: list[Action] = []
        for _ in range(n):
            i = self.index
            wrong = i % 10 < errors_in_ten
            made, label = prediction(i, version, predicted=1), label_for(i, 0 if wrong else 1)
            if label_first:
                actions += self.monitor.on_label(label)
                actions += self.monitor.on_prediction(made)
            else:
                actions += self.monitor.on_prediction(made)
                actions += self.monitor.on_label(label)
            self.index += 1
        return actions


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def project() -> Project:
    return demo_project()


@pytest.fixture
def monitor(project: Project, clock: Clock) -> Monitor:
    watching = Monitor(project, clock=clock)
    watching.on_lifecycle(lifecycle(1, LifecycleAction.PROMOTED, 1, accuracy=0.9))
    return watching


@pytest.fixture
def signals(monitor: Monitor) -> list[DriftSignal]:
    """Every drift signal the concept watch emits (spied, not changed)."""
    seen: list[DriftSignal] = []
    watch = monitor.watches[MODEL].concept
    update = watch.update

    def spy(error: bool, at: datetime) -> DriftSignal | None:
        signal = update(error, at)
        if signal is not None:
            seen.append(signal)
        return signal

    watch.update = spy  # type: ignore[method-assign]
    return seen


# -- LabelJoin ------------------------------------------------------------------------------


def made(i: int, version: int = 1) -> Predicted:
    return Predicted(MODEL, version, 1)


def label_of(i: int) -> LabeledPair:
    return LabeledPair(1, T0 + timedelta(seconds=i))


def test_join_label_after_prediction() -> None:
    join = LabelJoin(10, 60)
    assert join.prediction("pred-1", made(1)) is None
    assert join.pending() == 1
    assert join.label("pred-1", label_of(1)) == made(1)
    assert join.pending() == 0


def test_join_label_before_prediction() -> None:
    join = LabelJoin(10, 60)
    assert join.label("pred-1", label_of(1)) is None
    assert join.prediction("pred-1", made(1)) == label_of(1)
    assert join.pending() == 0


def test_join_does_not_pair_other_ids() -> None:
    join = LabelJoin(10, 60)
    join.prediction("pred-1", made(1))
    assert join.label("pred-2", label_of(2)) is None
    assert join.pending() == 2


def test_join_expires_after_the_ttl(clock: Clock) -> None:
    join = LabelJoin(10, 60, clock)
    join.prediction("pred-1", made(1))
    clock.now = 59
    join.prediction("pred-2", made(2))
    clock.now = 61
    assert join.label("pred-1", label_of(1)) is None  # expired: too late to pair
    assert join.label("pred-2", label_of(2)) is not None
    assert list(join.labels.items) == ["pred-1"]  # the unpaired label waits in turn
    clock.now = 200
    assert join.prediction("pred-1", made(1)) is None  # ...and expires too


def test_join_sweeps_expired_entries_when_adding(clock: Clock) -> None:
    join = LabelJoin(10, 60, clock)
    join.prediction("pred-1", made(1))
    join.prediction("pred-2", made(2))
    clock.now = 100
    join.prediction("pred-3", made(3))
    assert list(join.predictions.items) == ["pred-3"]
    assert join.predictions.dropped == 2


def test_join_is_bounded_in_size(clock: Clock) -> None:
    join = LabelJoin(3, 3600, clock)
    for i in range(5):
        join.prediction(f"pred-{i}", made(i))
    assert list(join.predictions.items) == ["pred-2", "pred-3", "pred-4"]
    assert join.predictions.dropped == 2
    assert join.label("pred-0", label_of(0)) is None  # the oldest were dropped first
    assert join.label("pred-4", label_of(4)) is not None


# -- ConceptWatch and change_point ----------------------------------------------------------


def test_change_point_finds_the_rise() -> None:
    assert change_point([0] * 300 + [1] * 100) == 300
    rng = random.Random(5)
    noisy = [int(rng.random() < 0.1) for _ in range(300)]
    noisy += [int(rng.random() < 0.7) for _ in range(200)]
    assert abs(change_point(noisy) - 300) <= 15


def test_change_point_of_a_short_stream_is_the_start() -> None:
    assert change_point([0, 1, 1]) == 0


def feed_watch(watch: ConceptWatch, errors: list[int]) -> tuple[list[DriftSignal], int]:
    """The signals emitted, and how many times the detector itself fired."""
    signals, fired = [], 0
    for i, error in enumerate(errors):
        signal = watch.update(bool(error), T0 + timedelta(seconds=i))
        fired += int(watch.detector.drift_detected)
        if signal is not None:
            signals.append(signal)
    return signals, fired


def test_concept_watch_signals_a_rise_with_where_it_started() -> None:
    watch = ConceptWatch(ConceptDriftMonitor())
    watch.reset(3)
    errors = [int(i % 10 == 0) for i in range(400)] + [int(i % 10 < 6) for i in range(400)]
    found, _ = feed_watch(watch, errors)
    assert found
    first = found[0]
    assert first.version == 3
    assert first.baseline_error == pytest.approx(0.1)
    assert first.recent_error >= 0.15
    assert 400 < first.samples < 500
    assert T0 + timedelta(seconds=380) <= first.since <= T0 + timedelta(seconds=first.samples)


def test_concept_watch_ignores_a_fall_in_error() -> None:
    watch = ConceptWatch(ConceptDriftMonitor())
    watch.reset(1)
    errors = [int(i % 10 < 6) for i in range(400)] + [int(i % 10 == 0) for i in range(400)]
    found, fired = feed_watch(watch, errors)
    assert found == []
    assert fired > 0  # ADWIN did fire, on good news


def test_concept_watch_reset_starts_a_new_stream() -> None:
    watch = ConceptWatch(ConceptDriftMonitor())
    watch.reset(1)
    feed_watch(watch, [1, 0, 1])
    watch.reset(2)
    assert (watch.version, watch.samples, watch.error_rate, watch.baseline_error) == (
        2, 0, 0.0, None)


# -- data drift -----------------------------------------------------------------------------


def reference_of(values: list[float]) -> BinnedDistribution:
    rows = validated_rows(len(values))
    rows = [r.model_copy(update={"features": {"age": v}}) for r, v in zip(rows, values,
                                                                          strict=True)]
    return profile(rows, ["age"])["age"]


def test_psi_same_distribution_is_about_zero() -> None:
    rng = random.Random(1)
    reference = reference_of([rng.uniform(20, 70) for _ in range(2000)])
    assert psi(reference, [rng.uniform(20, 70) for _ in range(2000)]) < 0.05


def test_psi_of_a_shifted_distribution_is_large() -> None:
    rng = random.Random(1)
    reference = reference_of([rng.uniform(20, 70) for _ in range(2000)])
    assert psi(reference, [rng.uniform(40, 90) for _ in range(2000)]) > 0.25


def test_psi_hand_computed() -> None:
    reference = BinnedDistribution(edges=[10.0], fractions=[0.5, 0.5])
    assert psi(reference, [1.0, 2.0, 20.0, 30.0]) == pytest.approx(0.0)
    assert psi(reference, [1.0, 2.0, 3.0, 20.0]) == pytest.approx(
        (0.75 - 0.5) * math.log(0.75 / 0.5) + (0.25 - 0.5) * math.log(0.25 / 0.5))


# -- Monitor end to end ---------------------------------------------------------------------


def test_prediction_before_a_champion_is_not_scored(project: Project, clock: Clock) -> None:
    fresh = Monitor(project, clock=clock)
    assert Stream(fresh).feed(800, 1, 9) == []
    assert fresh.watches[MODEL].concept.samples == 0


def test_steady_errors_raise_nothing(monitor: Monitor) -> None:
    assert Stream(monitor).feed(1000, 1, 1) == []
    assert monitor.watches[MODEL].concept.error_rate == pytest.approx(0.1)


def test_error_jump_fires_one_alert_and_one_retrain(monitor: Monitor, project: Project,
                                                    signals: list[DriftSignal]) -> None:
    stream = Stream(monitor)
    assert stream.feed(400, 1, 1) == []
    actions = stream.feed(400, 1, 6)
    actions += stream.feed(300, 1, 10)  # drifts further: more signals, nothing new to say
    assert len(signals) >= 2

    [alert] = alerts(actions)
    assert (alert.status, alert.kind, alert.model) == (AlertStatus.FIRING, "concept_drift", MODEL)
    assert alert.evidence["version"] == 1
    assert alert.evidence["baseline_error"] == pytest.approx(0.1)

    [request] = requests(actions)
    policy = project.model(MODEL).policy
    assert request.model == MODEL and request.reason is TrainingReason.DRIFT
    assert request.evidence["alert_id"] == alert.alert_id
    assert request.window.min_records == policy.retrain_min_records
    assert request.window.last == policy.retrain_max_records
    assert request.window.since is not None
    # The window starts near the change (record 400), not at the start of the stream.
    assert T0 + timedelta(seconds=380) <= request.window.since <= T0 + timedelta(
        seconds=signals[0].samples)
    assert actions.index(alert) < actions.index(request)


def test_labels_arriving_first_are_scored_too(monitor: Monitor) -> None:
    stream = Stream(monitor)
    stream.feed(400, 1, 1, label_first=True)
    actions = stream.feed(400, 1, 6, label_first=True)
    assert len(alerts(actions, "concept_drift")) == 1
    assert len(requests(actions)) == 1


def test_no_second_request_while_one_is_in_flight(monitor: Monitor, clock: Clock,
                                                  signals: list[DriftSignal]) -> None:
    stream = Stream(monitor)
    stream.feed(400, 1, 1)
    assert len(requests(stream.feed(400, 1, 6))) == 1
    clock.now += 600  # past the cooldown, within the timeout: the request in flight holds
    seen = len(signals)
    later = stream.feed(300, 1, 1) + stream.feed(300, 1, 10)
    assert len(signals) > seen
    assert requests(later) == []
    assert alerts(later) == []


def test_a_decision_on_another_request_does_not_release_the_one_in_flight(
        monitor: Monitor, clock: Clock) -> None:
    stream = Stream(monitor)
    stream.feed(400, 1, 1)
    [request] = requests(stream.feed(400, 1, 6))
    monitor.on_lifecycle(lifecycle(2, LifecycleAction.REJECTED, 1, request_id="manual-1"))
    assert monitor.watches[MODEL].retrain_in_flight == request.request_id
    monitor.on_lifecycle(lifecycle(3, LifecycleAction.REJECTED, 1,
                                   request_id=request.request_id))
    assert monitor.watches[MODEL].retrain_in_flight is None


def test_a_retrain_with_no_decision_is_presumed_lost_after_the_timeout(
        monitor: Monitor, clock: Clock, project: Project) -> None:
    stream = Stream(monitor)
    stream.feed(400, 1, 1)
    [first] = requests(stream.feed(400, 1, 6))  # e.g. dead-lettered: no decision ever comes
    clock.now += project.model(MODEL).policy.retrain_timeout_seconds + 1
    [second] = requests(stream.feed(300, 1, 1) + stream.feed(300, 1, 10))
    assert second.request_id != first.request_id


def test_cooldown_after_a_rejected_candidate(monitor: Monitor, clock: Clock,
                                             signals: list[DriftSignal]) -> None:
    stream = Stream(monitor)
    stream.feed(400, 1, 1)
    [first] = requests(stream.feed(400, 1, 6))
    monitor.on_lifecycle(lifecycle(2, LifecycleAction.REJECTED, 1, request_id=first.request_id))
    assert monitor.watches[MODEL].retrain_in_flight is None

    clock.now += 10  # inside the 30 s cooldown
    seen = len(signals)
    assert requests(stream.feed(300, 1, 1) + stream.feed(300, 1, 10)) == []
    assert len(signals) > seen

    clock.now += 60  # past it
    seen = len(signals)
    [second] = requests(stream.feed(300, 1, 1) + stream.feed(300, 1, 10))
    assert len(signals) > seen
    assert second.request_id != first.request_id
    assert second.evidence["alert_id"] == first.evidence["alert_id"]  # same incident


def test_no_retrain_when_the_policy_says_so(clock: Clock) -> None:
    raw = demo_project().model_dump(mode="json")
    raw["models"][MODEL]["policy"]["retrain_on_drift"] = False
    monitor = Monitor(Project.model_validate(raw), clock=clock)
    monitor.on_lifecycle(lifecycle(1, LifecycleAction.PROMOTED, 1))
    stream = Stream(monitor)
    stream.feed(400, 1, 1)
    actions = stream.feed(400, 1, 6)
    assert len(alerts(actions, "concept_drift")) == 1
    assert requests(actions) == []


def test_promoted_retrain_resolves_the_alert(monitor: Monitor, project: Project) -> None:
    stream = Stream(monitor)
    stream.feed(400, 1, 1)
    drifted = stream.feed(400, 1, 6)
    [fired] = alerts(drifted)
    [request] = requests(drifted)

    assert monitor.on_lifecycle(lifecycle(2, LifecycleAction.PROMOTED, 2, accuracy=0.88,
                                          request_id=request.request_id)) == []
    assert monitor.watches[MODEL].retrain_in_flight is None
    assert stream.feed(50, 1, 6) == []  # late labels of v1 do not count for v2

    recovery = project.model(MODEL).monitor.recovery_samples
    before = stream.feed(recovery - 1, 2, 1)
    assert before == []  # too few samples of v2 yet
    after = stream.feed(100, 2, 1)
    [resolved] = alerts(after)
    assert resolved.status is AlertStatus.RESOLVED
    assert resolved.alert_id == fired.alert_id
    assert resolved.kind == "concept_drift"
    assert resolved.evidence["resolved_by_version"] == 2
    assert resolved.evidence["error_after"] == pytest.approx(0.1, abs=0.01)
    assert requests(after) == []
    assert "concept_drift" not in monitor.watches[MODEL].firing
    assert [a.status for a in monitor.alerts] == [AlertStatus.FIRING, AlertStatus.RESOLVED]


def test_a_new_version_that_errs_as_much_does_not_resolve(monitor: Monitor) -> None:
    stream = Stream(monitor)
    stream.feed(400, 1, 1)
    stream.feed(400, 1, 6)
    monitor.on_lifecycle(lifecycle(2, LifecycleAction.PROMOTED, 2, accuracy=0.88))
    assert alerts(stream.feed(400, 2, 6)) == []
    assert "concept_drift" in monitor.watches[MODEL].firing


def test_lifecycle_of_a_non_champion_changes_nothing(monitor: Monitor) -> None:
    stream = Stream(monitor)
    stream.feed(200, 1, 1)
    monitor.on_lifecycle(lifecycle(2, LifecycleAction.ARCHIVED, 3))
    assert monitor.watches[MODEL].concept.version == 1
    assert monitor.watches[MODEL].concept.samples == 200


def ages(n: int, low: float, high: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(low, high) for _ in range(n)]


def test_covariate_shift_alerts_without_retraining(project: Project, clock: Clock) -> None:
    window = project.model(MODEL).monitor.data.window
    reference = {"age": reference_of(ages(2000, 20, 70, seed=1))}
    monitor = Monitor(project, clock=clock)
    monitor.on_lifecycle(lifecycle(1, LifecycleAction.PROMOTED, 1, reference=reference))

    def serve(values: list[float], offset: int) -> list[Action]:
        actions: list[Action] = []
        for i, age in enumerate(values):
            actions += monitor.on_prediction(prediction(offset + i, 1, features={"age": age}))
        return actions

    assert serve(ages(window, 20, 70, seed=2), 0) == []
    shifted = serve(ages(window, 50, 100, seed=3), window)
    [alert] = alerts(shifted)
    assert (alert.status, alert.kind, alert.severity.value) == (
        AlertStatus.FIRING, "data_drift", "warning")
    assert alert.evidence["feature"] == "age"
    assert alert.evidence["psi"] > project.model(MODEL).monitor.data.psi_threshold
    assert requests(shifted) == []

    assert serve(ages(window, 50, 100, seed=4), 2 * window) == []  # still firing: not repeated
    back = serve(ages(window, 20, 70, seed=5), 3 * window)
    [resolved] = alerts(back)
    assert resolved.status is AlertStatus.RESOLVED and resolved.alert_id == alert.alert_id
    assert requests(back) == []


# -- issue 6, defects 1 and 2: the retrain decision is re-evaluated while the alert fires ------


def test_a_retrain_blocked_by_the_cooldown_is_requested_once_it_passes(
        monitor: Monitor, clock: Clock, signals: list[DriftSignal]) -> None:
    """After one alarm ADWIN does not fire again on a stationary high error: the request must
    not wait for a new detector signal (Sine at ~330/s served 29% for 10k samples)."""
    stream = Stream(monitor)
    stream.feed(400, 1, 1)
    [first] = requests(stream.feed(400, 1, 6))
    monitor.on_lifecycle(lifecycle(2, LifecycleAction.REJECTED, 1, request_id=first.request_id))
    clock.now += 60  # past the 30 s cooldown
    seen = len(signals)
    [second] = requests(stream.feed(300, 1, 6))  # the error stays high, stationary
    assert len(signals) == seen, "this test is about no new detector signal"
    assert second.request_id != first.request_id
    assert second.evidence["alert_id"] == first.evidence["alert_id"]


def test_no_retry_once_the_error_is_back_to_normal(monitor: Monitor, clock: Clock) -> None:
    stream = Stream(monitor)
    stream.feed(400, 1, 1)
    [first] = requests(stream.feed(400, 1, 6))
    monitor.on_lifecycle(lifecycle(2, LifecycleAction.REJECTED, 1, request_id=first.request_id))
    clock.now += 10  # inside the cooldown the world goes back to what v1 knows
    assert requests(stream.feed(200, 1, 1)) == []
    clock.now += 60  # past it: the error is normal, nothing to retrain
    assert requests(stream.feed(300, 1, 1)) == []


def test_after_a_rejected_candidate_the_next_try_takes_a_larger_window_and_says_so(
        monitor: Monitor, clock: Clock, project: Project) -> None:
    stream = Stream(monitor)
    stream.feed(400, 1, 1)
    [first] = requests(stream.feed(400, 1, 6))
    assert first.evidence["attempt"] == 1
    monitor.on_lifecycle(lifecycle(2, LifecycleAction.REJECTED, 1, request_id=first.request_id))
    clock.now += 60
    [second] = requests(stream.feed(300, 1, 6))
    policy = project.model(MODEL).policy
    assert second.evidence["attempt"] == 2
    assert second.evidence["previous"] == {"request_id": first.request_id, "outcome": "rejected"}
    assert second.window.last == 2 * policy.retrain_max_records
    assert second.window.since == first.window.since  # the same drift, more of its data
