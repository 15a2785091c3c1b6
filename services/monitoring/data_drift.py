"""Data drift: Population Stability Index of recent inputs against the training profile."""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Mapping

from contracts.base import FeatureValue
from contracts.events import BinnedDistribution
from shared.project import DataDriftMonitor

_EPSILON = 1e-4


def psi(reference: BinnedDistribution, values: list[float]) -> float:
    """PSI = Σ (actual − expected) · ln(actual / expected) over the reference bins."""
    counts = [0] * (len(reference.edges) + 1)
    for value in values:
        counts[bisect.bisect_right(reference.edges, value)] += 1
    total = len(values) or 1
    score = 0.0
    for expected, count in zip(reference.fractions, counts, strict=True):
        actual = max(count / total, _EPSILON)
        expected = max(expected, _EPSILON)
        score += (actual - expected) * math.log(actual / expected)
    return score


class DataDriftWatch:
    """Recent values of watched features, compared with the reference every `window` inputs."""

    def __init__(self, spec: DataDriftMonitor) -> None:
        self.spec = spec
        self.reference: dict[str, BinnedDistribution] = {}
        self.values: dict[str, deque[float]] = {}
        self.seen = 0

    def set_reference(self, reference: Mapping[str, BinnedDistribution]) -> None:
        watched = self.spec.features or list(reference)
        self.reference = {name: reference[name] for name in watched if name in reference}
        self.values = {name: deque(maxlen=self.spec.window) for name in self.reference}
        self.seen = 0

    def update(self, features: Mapping[str, FeatureValue]) -> dict[str, float] | None:
        """PSI per watched feature once a full window has passed since the last check."""
        if not self.reference:
            return None
        for name, window in self.values.items():
            value = features.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                window.append(float(value))
        self.seen += 1
        if self.seen % self.spec.window:
            return None
        return {name: psi(self.reference[name], list(window))
                for name, window in self.values.items() if len(window) == self.spec.window}
