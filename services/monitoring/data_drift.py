"""Data drift: each watched feature's recent inputs against its training profile, on every
prediction.

Per feature, sliding windows of bin indices (bins = the reference's edges) keep their
counts, moved by one per prediction, and the per-bin terms of two scores, so a check is a
sum over ~10 bins whatever the window: the Population Stability Index (how large the
shift is) and the G statistic of a goodness-of-fit test against the reference fractions
(how sure it is not noise). A feature drifts when, on a full window, both hold:
PSI > `psi_threshold` *and* G beyond the chi-square quantile at `alpha`. `alpha` is tiny
because the test is repeated on every prediction; PSI alone false-alarms on a short window
(its noise is ~ bins / n). Two windows run per feature: `min_samples` (fast on a clear
shift) and `window` (sensitive to a small one, and the one that says a drift is over: PSI
below half the threshold).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import cache

from contracts.base import FeatureValue
from contracts.events import BinnedDistribution
from shared.project import DataDriftMonitor

_EPSILON = 1e-4
"""Floor of a fraction, so an empty bin scores a large but finite term."""


def psi(reference: BinnedDistribution, values: list[float]) -> float:
    """PSI = Σ (actual − expected) · ln(actual / expected) over the reference bins."""
    counts = [0] * (len(reference.edges) + 1)
    for value in values:
        counts[bisect.bisect_right(reference.edges, value)] += 1
    return psi_of_counts(reference, counts)


def psi_of_counts(reference: BinnedDistribution, counts: list[int]) -> float:
    """PSI of values already counted in the reference's bins."""
    total = sum(counts) or 1
    score = 0.0
    for expected, count in zip(reference.fractions, counts, strict=True):
        actual = max(count / total, _EPSILON)
        expected = max(expected, _EPSILON)
        score += (actual - expected) * math.log(actual / expected)
    return score


def chi2_sf(x: float, dof: int) -> float:
    """P(χ²(dof) > x), in closed form (integer and half-integer gamma), without scipy."""
    if x <= 0:
        return 1.0
    y = x / 2
    if dof % 2 == 0:
        term, total = 1.0, 1.0
        for i in range(1, dof // 2):
            term *= y / i
            total += term
        return min(1.0, math.exp(-y) * total)
    total, term = math.erfc(math.sqrt(y)), math.sqrt(y) / math.gamma(1.5)
    for i in range(1, (dof + 1) // 2):
        total += math.exp(-y) * term
        term *= y / (i + 0.5)
    return min(1.0, total)


@cache
def chi2_isf(alpha: float, dof: int) -> float:
    """The x with P(χ²(dof) > x) = alpha (bisection; computed once per pair)."""
    low, high = 0.0, 10.0 * dof + 200.0
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if chi2_sf(middle, dof) > alpha else (low, middle)
    return high


class SlidingHistogram:
    """The last `size` bin indices of one feature and their PSI and G terms per bin.

    A bin's terms depend only on its count (0..size), so they are tabulated once and a push
    is a few lookups; the two sums are kept running (re-added exactly every few windows, so
    rounding never accumulates) and a check reads them in O(1)."""

    def __init__(self, expected: list[float], size: int) -> None:
        self.size = size
        self.expected = expected
        self.bins: deque[int] = deque()
        self.counts = [0] * len(expected)
        self._psi_table = [[self._psi_term(count, e) for count in range(size + 1)]
                           for e in expected]
        self._g_table = [[2 * count * math.log(count / (size * e)) if count else 0.0
                          for count in range(size + 1)] for e in expected]
        self.psi_terms = [table[0] for table in self._psi_table]
        self.g_terms = [0.0] * len(expected)
        self._psi = sum(self.psi_terms)
        self._g = 0.0
        self._moves = 0

    def __getstate__(self) -> dict[str, object]:
        """Without the term tables (they follow from `expected` and `size` and are ~40× the
        window's bytes): what a checkpoint writes."""
        return {name: value for name, value in self.__dict__.items()
                if name not in ("_psi_table", "_g_table")}

    def __setstate__(self, saved: dict[str, object]) -> None:
        fresh = SlidingHistogram(saved["expected"], saved["size"])  # type: ignore[arg-type]
        self.__dict__.update(fresh.__dict__)
        self.__dict__.update(saved)

    @property
    def full(self) -> bool:
        return len(self.bins) == self.size

    def push(self, index: int) -> None:
        self.bins.append(index)
        self._move(index, 1)
        if len(self.bins) > self.size:
            self._move(self.bins.popleft(), -1)

    def psi(self) -> float:
        return self._psi

    def g(self) -> float:
        """G = 2 Σ O · ln(O / E): the log-likelihood ratio against the reference."""
        return self._g

    def _move(self, index: int, by: int) -> None:
        count = self.counts[index] = self.counts[index] + by
        psi_term, g_term = self._psi_table[index][count], self._g_table[index][count]
        self._psi += psi_term - self.psi_terms[index]
        self._g += g_term - self.g_terms[index]
        self.psi_terms[index], self.g_terms[index] = psi_term, g_term
        self._moves += 1
        if self._moves >= 4 * self.size:  # re-add exactly now and then
            self._psi, self._g, self._moves = sum(self.psi_terms), sum(self.g_terms), 0

    def _psi_term(self, count: int, expected: float) -> float:
        actual = max(count / self.size, _EPSILON)
        return (actual - expected) * math.log(actual / expected)


@dataclass(frozen=True, slots=True)
class FeatureShift:
    """A watched feature that drifted, or settled back."""

    feature: str
    drifted: bool
    psi: float
    g: float
    p_value: float
    samples: int


class DataDriftWatch:
    """Per watched feature, sliding windows of recent inputs scored against the reference."""

    def __init__(self, spec: DataDriftMonitor) -> None:
        self.spec = spec
        self.reference: dict[str, BinnedDistribution] = {}
        self.windows: dict[str, tuple[SlidingHistogram, SlidingHistogram]] = {}

    def set_reference(self, reference: Mapping[str, BinnedDistribution]) -> None:
        """A new version's training profile. A feature whose profile is unchanged keeps its
        windows, and a version with no profile keeps the last one: an online learner's
        snapshots come every few hundred predictions, and restarting each time would keep
        the long window from ever filling."""
        if not reference:
            return
        watched = self.spec.features or list(reference)
        previous, windows = self.reference, self.windows
        self.reference = {name: reference[name] for name in watched if name in reference}
        self.windows = {}
        for name, profile in self.reference.items():
            if len(profile.fractions) < 2:
                continue  # one bin: nothing can move
            if previous.get(name) == profile and name in windows:
                self.windows[name] = windows[name]
                continue
            expected = [max(f, _EPSILON) for f in profile.fractions]
            self.windows[name] = (SlidingHistogram(expected, self.spec.min_samples),
                                  SlidingHistogram(expected, self.spec.window))

    def update(self, features: Mapping[str, FeatureValue],
               firing: Collection[str]) -> list[FeatureShift]:
        """Take one prediction's inputs; report each feature that drifted (not in `firing`)
        or whose drift is over (in `firing`)."""
        shifts: list[FeatureShift] = []
        for name, (short, long) in self.windows.items():
            value = features.get(name)
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            index = bisect.bisect_right(self.reference[name].edges, value)
            short.push(index)
            long.push(index)
            if name in firing:
                if long.full and long.psi() < self.spec.psi_threshold / 2 and not (
                        self._drifted(short)):
                    shifts.append(self._shift(name, long, drifted=False))
                continue
            for histogram in (short, long):
                if self._drifted(histogram):
                    shifts.append(self._shift(name, histogram, drifted=True))
                    break
        return shifts

    def _drifted(self, histogram: SlidingHistogram) -> bool:
        return (histogram.full and histogram.psi() > self.spec.psi_threshold
                and histogram.g() > chi2_isf(self.spec.alpha, len(histogram.expected) - 1))

    @staticmethod
    def _shift(name: str, histogram: SlidingHistogram, drifted: bool) -> FeatureShift:
        g = histogram.g()
        return FeatureShift(name, drifted, histogram.psi(), g,
                            chi2_sf(g, len(histogram.expected) - 1), histogram.size)
