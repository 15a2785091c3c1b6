"""Joining predictions with their late labels in bounded memory.

Either side may arrive first (they travel on different topics), so each waits
for the other in an insertion-ordered map bounded by size and by age.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from contracts.events import PredictionMade, RecordValidated

T = TypeVar("T")


class _Waiting(Generic[T]):
    def __init__(self, max_size: int, ttl: float, clock: Callable[[], float]) -> None:
        self.items: OrderedDict[str, tuple[float, T]] = OrderedDict()
        self.max_size = max_size
        self.ttl = ttl
        self.clock = clock
        self.expired = 0

    def add(self, key: str, item: T) -> None:
        now = self.clock()
        self.items[key] = (now, item)
        while self.items:
            oldest_key, (added, _) = next(iter(self.items.items()))
            if len(self.items) <= self.max_size and now - added <= self.ttl:
                break
            del self.items[oldest_key]
            self.expired += 1

    def pop(self, key: str) -> T | None:
        found = self.items.pop(key, None)
        if found is None or self.clock() - found[0] > self.ttl:
            return None
        return found[1]


class LabelJoin:
    """Pairs each PredictionMade with the RecordValidated that labels it."""

    def __init__(self, max_size: int, ttl_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.predictions: _Waiting[PredictionMade] = _Waiting(max_size, ttl_seconds, clock)
        self.labels: _Waiting[RecordValidated] = _Waiting(max_size, ttl_seconds, clock)

    def prediction(self, event: PredictionMade) -> RecordValidated | None:
        """The label already waiting for this prediction, or None (the prediction waits)."""
        label = self.labels.pop(event.prediction_id)
        if label is None:
            self.predictions.add(event.prediction_id, event)
        return label

    def label(self, record: RecordValidated) -> PredictionMade | None:
        """The prediction this label belongs to, or None (the label waits)."""
        assert record.prediction_id is not None
        prediction = self.predictions.pop(record.prediction_id)
        if prediction is None:
            self.labels.add(record.prediction_id, record)
        return prediction

    def pending(self) -> int:
        return len(self.predictions.items) + len(self.labels.items)
