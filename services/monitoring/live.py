"""Live metrics per model version in tumbling windows: what a dashboard, a canary decision
and on-call read while the model serves.

Each prediction counts in the window of the time serving made it (`PredictionMade.at`), and
so does its label when it joins, however late: a window's accuracy is that of the answers
given in it. Per (window size, version) the newest `retain` windows are kept, and only the
newest `versions` versions of a model: state and Prometheus label sets stay bounded however
many versions an online learner publishes. A window holds counts only (outputs, latency
buckets, each watched feature's counts in its reference bins), so its size does not grow
with traffic and every figure is derived when read.
"""

from __future__ import annotations

import bisect
import math
import weakref
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import REGISTRY, GaugeMetricFamily, Metric

from contracts.base import FeatureValue
from contracts.events import BinnedDistribution
from services.monitoring.data_drift import psi_of_counts
from shared.project import LiveSpec

LATENCY_BOUNDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                  0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Upper bounds (seconds) of the model-latency buckets a window counts in; a quantile
beyond the last is shown as null."""


@dataclass
class Window:
    """One tumbling window of one version: counts only."""

    start: float
    size: float
    version: int
    predictions: int = 0
    labeled: int = 0
    errors: float = 0.0
    """Wrong answers (classification) or the sum of absolute errors (regression)."""
    outputs: dict[str, int] = field(default_factory=dict)
    output_sum: float = 0.0
    output_squares: float = 0.0
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS) + 1))
    latency_sum: float = 0.0
    features: dict[str, list[int]] = field(default_factory=dict)

    def view(self, task: str, reference: Mapping[str, BinnedDistribution]) -> dict[str, Any]:
        """The window as the API shows it."""
        shown: dict[str, Any] = {
            "version": self.version, "start": _iso(self.start),
            "end": _iso(self.start + self.size), "predictions": self.predictions,
            "labeled": self.labeled}
        if task == "classification":
            shown["accuracy"] = (1 - self.errors / self.labeled) if self.labeled else None
            shown["outputs"] = dict(sorted(self.outputs.items()))
        else:
            shown["mae"] = self.errors / self.labeled if self.labeled else None
            mean = self.output_sum / self.predictions if self.predictions else None
            spread = (math.sqrt(max(self.output_squares / self.predictions - mean ** 2, 0.0))
                      if mean is not None else None)
            shown["outputs"] = {"mean": mean, "std": spread}
        shown["latency_seconds"] = {
            "mean": self.latency_sum / self.predictions if self.predictions else None,
            "p50": self.latency_quantile(0.5), "p99": self.latency_quantile(0.99)}
        shown["drift_psi"] = self.drift(reference)
        return shown

    def latency_quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding quantile `q` (Prometheus' estimate too)."""
        if not self.predictions:
            return None
        rank, seen = q * self.predictions, 0
        for index, count in enumerate(self.latency):
            seen += count
            if seen >= rank:
                return LATENCY_BOUNDS[index] if index < len(LATENCY_BOUNDS) else None
        return None

    def drift(self, reference: Mapping[str, BinnedDistribution]) -> dict[str, float]:
        """PSI of each watched feature's counts against its reference bins."""
        return {name: round(psi_of_counts(reference[name], counts), 6)
                for name, counts in sorted(self.features.items())
                if name in reference and any(counts)}


class LiveMetrics:
    """The windows of one model."""

    def __init__(self, model: str, task: str, spec: LiveSpec,
                 features: Iterable[str] = ()) -> None:
        self.model = model
        self.task = task
        self.spec = spec
        self.watched = list(features)
        self.reference: dict[str, BinnedDistribution] = {}
        self.windows: dict[int, dict[int, deque[Window]]] = {
            size: {} for size in spec.windows_seconds}
        _ALL.add(self)

    def set_reference(self, reference: Mapping[str, BinnedDistribution]) -> None:
        """The serving version's training profile: the bins feature counts fall in (kept when
        a version brings none)."""
        if reference:
            watched = self.watched or list(reference)
            self.reference = {n: reference[n] for n in watched if n in reference}

    def predicted(self, version: int, at: datetime, output: FeatureValue | None,
                  latency: float, features: Mapping[str, FeatureValue]) -> None:
        """One prediction, in the window of `at` of every size (bins looked up once)."""
        bins = [(name, len(profile.edges) + 1, bisect.bisect_right(profile.edges, value))
                for name, profile in self.reference.items()
                if isinstance(value := features.get(name), int | float)
                and not isinstance(value, bool)]
        bucket = bisect.bisect_left(LATENCY_BOUNDS, latency)
        key = str(output) if self.task == "classification" else None
        number = (output if key is None and isinstance(output, int | float)
                  and not isinstance(output, bool) else None)
        for window in self._windows(version, at):
            window.predictions += 1
            if key is not None:
                window.outputs[key] = window.outputs.get(key, 0) + 1
            elif number is not None:
                window.output_sum += number
                window.output_squares += number * number
            window.latency[bucket] += 1
            window.latency_sum += latency
            for name, size, index in bins:
                counts = window.features.get(name)
                if counts is None:
                    counts = window.features[name] = [0] * size
                if len(counts) == size:
                    counts[index] += 1

    def labeled(self, version: int, at: datetime | None, error: float) -> None:
        """The outcome of a prediction made at `at`: 0/1 or the absolute error."""
        if at is None:
            return
        for window in self._windows(version, at, create=False):
            window.labeled += 1
            window.errors += error

    def view(self, size: int, version: int | None = None) -> list[dict[str, Any]]:
        """The kept windows of `size` (of one version or all), oldest first."""
        found = [w for v, kept in self.windows[size].items() if version in (None, v)
                 for w in kept]
        found.sort(key=lambda w: (w.start, w.version))
        return [w.view(self.task, self.reference) for w in found]

    def latest(self) -> Iterator[tuple[int, Window]]:
        """The newest window of each (size, version): what Prometheus shows."""
        for size, versions in self.windows.items():
            for kept in versions.values():
                if kept:
                    yield size, kept[-1]

    def _windows(self, version: int, at: datetime, create: bool = True) -> Iterator[Window]:
        moment = at.timestamp()
        for size, versions in self.windows.items():
            start = math.floor(moment / size) * size
            kept = versions.get(version)
            if kept is None:
                if not create:
                    continue
                kept = versions[version] = deque(maxlen=self.spec.retain)
                self._bound_versions(versions)
            window = _find(kept, start)
            if window is None and create and (not kept or start > kept[-1].start):
                window = Window(start, size, version)
                kept.append(window)
            if window is not None:
                yield window

    def _bound_versions(self, versions: dict[int, deque[Window]]) -> None:
        for old in sorted(versions)[:-self.spec.versions]:
            del versions[old]


def _find(kept: deque[Window], start: float) -> Window | None:
    """The kept window starting at `start` (late events: searched from the newest)."""
    for window in reversed(kept):
        if window.start == start:
            return window
        if window.start < start:
            return None
    return None


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat()


_ALL: weakref.WeakSet[LiveMetrics] = weakref.WeakSet()
"""Every live store of this process, read at each Prometheus scrape."""


class LiveCollector:
    """Exports the newest window of each model, version and window size on each scrape:
    labels are bounded by the project (models, window sizes, watched features) and by
    `versions` per model."""

    def collect(self) -> Iterator[Metric]:
        labels = ["model", "version", "window"]
        predictions = GaugeMetricFamily(
            "driftloop_live_predictions", "Predictions in the newest window.", labels=labels)
        error = GaugeMetricFamily(
            "driftloop_live_error", "Error rate (classification) or mean absolute error "
            "(regression) of the newest window's labeled predictions.", labels=labels)
        labeled = GaugeMetricFamily(
            "driftloop_live_labeled", "Labeled predictions in the newest window.",
            labels=labels)
        latency = GaugeMetricFamily(
            "driftloop_live_latency_p99_seconds", "Model latency p99 (bucket bound) in the "
            "newest window.", labels=labels)
        drift = GaugeMetricFamily(
            "driftloop_live_feature_psi", "PSI of a feature's inputs in the newest window "
            "against the serving version's training profile.", labels=[*labels, "feature"])
        for live in list(_ALL):
            for size, window in live.latest():
                key = [live.model, str(window.version), f"{size}s"]
                predictions.add_metric(key, window.predictions)
                labeled.add_metric(key, window.labeled)
                if window.labeled:
                    error.add_metric(key, window.errors / window.labeled)
                p99 = window.latency_quantile(0.99)
                if p99 is not None:
                    latency.add_metric(key, p99)
                for feature, score in window.drift(live.reference).items():
                    drift.add_metric([*key, feature], score)
        yield from (predictions, labeled, error, latency, drift)


REGISTRY.register(LiveCollector())
