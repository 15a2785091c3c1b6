"""The benchmark's figures, computed from what the client saw: pure functions of per-sample
outcomes and of the served trace (versions and answer times), so they are unit-tested
without services (tests/unit/test_bench_loop.py).

An outcome is 1.0/0.0 (correct or not) for a classifier and the absolute error for a
regressor, so the mean of a segment is its accuracy or its MAE alike.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Outcomes:
    """Per-sample outcomes of one model from sample `first` on (the served range)."""

    first: int
    values: Sequence[float]

    @property
    def end(self) -> int:
        return self.first + len(self.values)

    def mean(self, start: int | None = None, stop: int | None = None) -> float | None:
        """Mean outcome over samples [start, stop) clipped to the range (None if empty)."""
        lo = max(self.first, self.first if start is None else start) - self.first
        hi = min(self.end, self.end if stop is None else stop) - self.first
        if hi <= lo:
            return None
        return sum(self.values[lo:hi]) / (hi - lo)


def outcomes(task: str, truth: Sequence[float | int], predicted: Sequence[object],
             first: int) -> Outcomes:
    """Outcomes of `predicted` (aligned with truth[first:]) against the truth."""
    served = truth[first:first + len(predicted)]
    if task == "classification":
        values = [1.0 if p == y else 0.0 for p, y in zip(predicted, served, strict=True)]
    else:
        values = [abs(float(p) - float(y)) if isinstance(p, int | float) else float("nan")
                  for p, y in zip(predicted, served, strict=True)]
    return Outcomes(first, values)


def drift_segments(drifts: Sequence[int], end: int) -> list[tuple[int, int]]:
    """[drift, next drift or end) for each drift (none for a stream without drifts)."""
    return [(d, nxt) for d, nxt in zip(drifts, [*drifts[1:], end], strict=False)]


def after_drift(drifts: Sequence[int], end: int, window: int = 2000) -> list[tuple[int, int]]:
    """[start, stop) of the `window` samples after each drift, cut at the next drift or end."""
    return [(d, min(d + window, nxt)) for d, nxt in drift_segments(drifts, end)]


def recovery(result: Outcomes, drift: int, stop: int, *, before: int = 2000, window: int = 500,
             tolerance: float = 0.02, step: int = 50) -> int | None:
    """Samples after `drift` until accuracy over the next `window` samples is back within
    `tolerance` of the `before` samples preceding it (the goal: ≤ 500). None if it is not
    back before `stop` (the next drift or the end) or there is no pre-drift level."""
    level = result.mean(drift - before, drift)
    if level is None:
        return None
    for offset in range(0, max(0, stop - drift - window) + 1, step):
        score = result.mean(drift + offset, drift + offset + window)
        if score is not None and score >= level - tolerance:
            return offset
    return None


@dataclass(frozen=True)
class Swap:
    """From an alarm to the first prediction answered by a newer version."""

    seconds: float
    samples: int
    """Predictions still answered by the older version after the alarm."""
    version: int


def swap_after(alarm_at: float, versions: Sequence[int],
               answered_at: Sequence[float]) -> Swap | None:
    """The swap that answers an alarm raised at `alarm_at` (wall-clock seconds): the first
    answer after it by a version newer than any answered up to it. None: it never came."""
    order = sorted(range(len(answered_at)), key=answered_at.__getitem__)
    times = [answered_at[i] for i in order]
    cut = bisect.bisect_right(times, alarm_at)
    before = [versions[i] for i in order[:cut]]
    stale = max(before) if before else (versions[order[0]] if order else 0)
    for position in range(cut, len(order)):
        version = versions[order[position]]
        if version > stale:
            return Swap(times[position] - alarm_at, position - cut, version)
    return None


def drift_to_swap(drift: int, versions: Sequence[int], first: int) -> int | None:
    """Samples after `drift` answered by the version(s) serving before it; None: no newer
    version answered afterwards."""
    index = drift - first
    if index <= 0 or index >= len(versions):
        return None
    stale = max(versions[:index])
    for position in range(index, len(versions)):
        if versions[position] > stale:
            return position - index
    return None


def by_version(result: Outcomes, versions: Sequence[int]) -> dict[int, tuple[int, float]]:
    """Per version that answered: (samples it answered, their mean outcome)."""
    sums: dict[int, list[float]] = {}
    for version, value in zip(versions, result.values, strict=True):
        sums.setdefault(version, []).append(value)
    return {v: (len(values), sum(values) / len(values)) for v, values in sorted(sums.items())}


def achieved_rate(sent_at: Sequence[float], answered_at: Sequence[float]) -> float:
    """Predictions answered per second from the first request to the last answer."""
    if len(answered_at) < 2:
        return 0.0
    return len(answered_at) / (max(answered_at) - min(sent_at))


def latency_ms(sent_at: Sequence[float], answered_at: Sequence[float]) -> dict[str, float]:
    """p50 and p99 of the client's request latency, in milliseconds."""
    spans = sorted(1000 * (b - a) for a, b in zip(sent_at, answered_at, strict=True))
    if not spans:
        return {"p50": float("nan"), "p99": float("nan")}
    return {"p50": spans[len(spans) // 2],
            "p99": spans[min(len(spans) - 1, len(spans) * 99 // 100)]}
