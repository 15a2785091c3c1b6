"""Concept drift: a River detector on the error stream of the serving version.

The error of a labeled prediction is 0/1 for a classifier and the absolute residual
|y − ŷ| for a regressor (ADWIN takes real values); "normal" is a level plus
`min_error_increase` for the first, a level times 1 + `min_relative_increase` for the
second, whose residuals carry the target's unit."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any

from contracts.base import FeatureValue
from shared.pipelines import build_detector
from shared.project import ConceptDriftMonitor


@dataclass(frozen=True, slots=True)
class DriftSignal:
    """The detector fired and the error rate rose."""

    version: int
    baseline_error: float
    recent_error: float
    samples: int
    change_width: int
    since: datetime


def error_of(task: str, predicted: FeatureValue | None, label: FeatureValue) -> float | None:
    """The error of one labeled prediction; None when a regressor's pair is not two numbers
    (no opinion yet, or a label of another type): nothing to learn from it."""
    if task != "regression":
        return float(predicted != label)
    if not (_number(predicted) and _number(label)):
        return None
    return abs(float(label) - float(predicted))  # type: ignore[arg-type]


def expected_error(task: str, metrics: Mapping[str, float]) -> float | None:
    """What a version's holdout promised: 1 − accuracy, or its MAE for a regressor."""
    if task == "regression":
        return metrics.get("mae")
    accuracy = metrics.get("accuracy")
    return None if accuracy is None else 1.0 - accuracy


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class ConceptWatch:
    """Error statistics and detector of one model's current version."""

    def __init__(self, spec: ConceptDriftMonitor, task: str = "classification") -> None:
        self.spec = spec
        self.task = task
        self.measure = "mae" if task == "regression" else "error_rate"
        """What the error statistics are, for alerts."""
        self.version: int | None = None
        self.reset(None)

    def reset(self, version: int | None) -> None:
        """Start over for a new version (its errors are a new stream)."""
        self.version = version
        self.detector: Any = build_detector(self.spec.detector, self.spec.params)
        self.samples = 0
        self.errors = 0.0
        self.baseline_error: float | None = None
        self.recent: deque[float] = deque(maxlen=self.spec.min_samples)
        self.history: deque[tuple[float, datetime]] = deque(maxlen=5_000)

    @property
    def error_rate(self) -> float:
        return self.errors / self.samples if self.samples else 0.0

    def update(self, error: float, at: datetime) -> DriftSignal | None:
        """Feed one labeled prediction's error; a signal only when the detector fires on a
        rise.

        ADWIN also fires when the error falls; that is good news, not drift.
        """
        self.samples += 1
        self.errors += error
        self.recent.append(error)
        self.history.append((error, at))
        self.detector.update(error)
        if self.samples == self.spec.min_samples:
            self.baseline_error = self.error_rate
        if not self.detector.drift_detected or not self.still_high():
            return None
        assert self.baseline_error is not None and self.version is not None
        index = change_point([e for e, _ in self.history])
        return DriftSignal(self.version, self.baseline_error, self.recent_error, self.samples,
                           len(self.history) - index, self.history[index][1])

    def ceiling(self, normal: float) -> float:
        """The highest error that still counts as `normal`: above it, errors "rose"."""
        if self.task == "regression":
            return normal * (1 + self.spec.min_relative_increase)
        return normal + self.spec.min_error_increase

    @property
    def recent_error(self) -> float:
        return sum(self.recent) / len(self.recent) if self.recent else 0.0

    def still_high(self) -> bool:
        """The error is above the version's baseline by `min_error_increase`, over the recent
        window *and* its newest quarter. The detector fires on a fall as well as on a rise,
        and right after a fall the recent window still holds the high errors before it: the
        newest quarter tells the two apart. Also asked while an alert fires, since after
        one alarm a detector does not fire again on a stationary high error."""
        if self.baseline_error is None or not self.recent:
            return False
        threshold = self.ceiling(self.baseline_error)
        if self.recent_error < threshold:
            return False
        quarter = max(1, len(self.recent) // 4)  # asked on every label while an alert fires
        return sum(islice(reversed(self.recent), quarter)) / quarter >= threshold


def change_point(errors: list[float], min_segment: int = 10) -> int:
    """Index where the error rate rose most: argmax of mean(after) − mean(before).

    The detector says *that* the stream changed; this says *where*, so a retrain
    window starts at the change instead of at a detector's (wider) memory.
    """
    n = len(errors)
    if n < 2 * min_segment:
        return 0
    total = sum(errors)
    best_index, best_rise, before = 0, float("-inf"), 0.0
    for index in range(1, n):
        before += errors[index - 1]
        if index < min_segment or n - index < min_segment:
            continue
        rise = (total - before) / (n - index) - before / index
        if rise > best_rise:
            best_index, best_rise = index, rise
    return best_index
