"""Issue 6, defect 3: the guard between two drift retrains can be counted in labeled
predictions, so the loop behaves the same at any traffic rate."""

from __future__ import annotations

from contracts.events import LifecycleAction
from services.monitoring.handlers import Monitor
from tests.unit.factories import label_for, prediction, project_with
from tests.unit.test_monitoring_logic import Clock, lifecycle, requests


def request_positions(rate: float, samples: int = 3_000, **policy: float) -> list[int]:
    """Feed 400 labeled predictions at a 10% error rate, then `samples` at 60%, `rate` per
    second of a fake clock; every retrain is rejected at once, so only the cooldown spaces
    the next try. Returns the sample index of each training request."""
    clock = Clock()
    monitor = Monitor(project_with(**policy), clock=clock)
    monitor.on_lifecycle(lifecycle(1, LifecycleAction.PROMOTED, 1))
    positions: list[int] = []
    for i in range(400 + samples):
        clock.now += 1 / rate
        wrong = i % 10 < (1 if i < 400 else 6)
        actions = monitor.on_prediction(prediction(i, 1)) + monitor.on_label(
            label_for(i, 0 if wrong else 1))
        for request in requests(actions):
            positions.append(i)
            monitor.on_lifecycle(lifecycle(len(positions) + 1, LifecycleAction.REJECTED, 1,
                                           request_id=request.request_id))
    return positions


def gaps(positions: list[int]) -> list[int]:
    return [b - a for a, b in zip(positions, positions[1:], strict=False)]


def test_a_cooldown_in_samples_spaces_retrains_by_labeled_predictions() -> None:
    positions = request_positions(200, retrain_cooldown_seconds=0, retrain_cooldown_samples=300)
    assert len(positions) >= 5
    assert min(gaps(positions)) >= 300
    assert max(gaps(positions)) <= 310  # the error stays high: each try comes when allowed


def test_a_cooldown_in_samples_is_the_same_at_any_rate() -> None:
    slow = request_positions(200, retrain_cooldown_seconds=0, retrain_cooldown_samples=300)
    fast = request_positions(1_000, retrain_cooldown_seconds=0, retrain_cooldown_samples=300)
    assert slow == fast
    # ...where a cooldown in seconds is not: the same stream, other retrain points.
    assert (request_positions(200, retrain_cooldown_seconds=1.5)
            != request_positions(1_000, retrain_cooldown_seconds=1.5))


def test_with_both_cooldowns_both_must_pass() -> None:
    # 1 s is 1,000 samples at 1,000/s: the seconds bind; at 100/s it is 100, the samples do.
    by_time = request_positions(1_000, retrain_cooldown_seconds=1, retrain_cooldown_samples=300)
    by_samples = request_positions(100, retrain_cooldown_seconds=1,
                                   retrain_cooldown_samples=300)
    assert min(gaps(by_time)) >= 1_000
    assert min(gaps(by_samples)) >= 300 and max(gaps(by_samples)) < 1_000
