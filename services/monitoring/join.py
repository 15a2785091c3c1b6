"""Joining predictions with their late labels in bounded memory.

Either side may arrive first (they travel on different topics), so each waits
for the other in an insertion-ordered map bounded by count and by age. Only
what scoring and completing feedback need is kept (model, version, output, the
features as compact JSON and when; label and its time), and ids are kept at a
bounded length: a few hundred bytes per waiting prediction plus its features'
JSON (serving validated them against the dataset's declared features, so their
count is the dataset's).
Feedback that waits longer than the TTL for its prediction is handed back by
`expired()`, to be dead-lettered with that reason rather than dropped unseen.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

import orjson

from contracts.base import FeatureValue
from contracts.events import Feedback
from services.monitoring.metrics import JOIN_DROPPED
from shared.partitioning import id_on_partition, key_index

T = TypeVar("T")

MAX_KEY_CHARS = 64
"""Longer prediction ids are kept as their sha256: a sender cannot grow memory by them."""


@dataclass(frozen=True, slots=True)
class Predicted:
    """What the join keeps of a prediction."""

    model: str
    version: int
    prediction: FeatureValue | None
    features_json: bytes = b"{}"
    """The features as compact JSON: a third of a dict's bytes, read back only when feedback
    that came alone needs them."""
    at: datetime | None = None

    @property
    def features(self) -> dict[str, FeatureValue]:
        loaded: dict[str, FeatureValue] = orjson.loads(self.features_json)
        return loaded


@dataclass(frozen=True, slots=True)
class LabeledPair:
    """What the join keeps of a label; `feedback` when it came alone (the prediction then
    completes it into a record for the dataset)."""

    label: FeatureValue
    ingested_at: datetime
    feedback: Feedback | None = None


def compact_json(features: Mapping[str, FeatureValue]) -> bytes:
    """Features as the join keeps them: compact JSON in an exact-size copy (orjson's own
    output keeps a 4 KB buffer per object, ten times what the JSON needs; the copy costs
    less than encoding with the json module)."""
    return memoryview(orjson.dumps(features)).tobytes()


def join_key(prediction_id: str, partitions: int = 1) -> str:
    """The id as kept in memory: itself, or its digest when longer than `MAX_KEY_CHARS`,
    suffixed to land on the id's own partition (where its state is checkpointed)."""
    if len(prediction_id) <= MAX_KEY_CHARS:
        return prediction_id
    digest = "sha256:" + hashlib.sha256(prediction_id.encode("utf-8", "replace")).hexdigest()
    return id_on_partition(digest, key_index(prediction_id, partitions), partitions)


class _Waiting(Generic[T]):
    def __init__(self, side: str, max_size: int, ttl: float,
                 clock: Callable[[], float], changed: set[str]) -> None:
        self.items: OrderedDict[str, tuple[float, T]] = OrderedDict()
        self.changed = changed
        """Keys added or removed since the checkpoint last took them (shared by both sides)."""
        self.max_size = max_size
        self.ttl = ttl
        self.clock = clock
        self.dropped = 0
        """Entries evicted (bound reached) or expired (ttl passed) before their pair came."""
        self.gone: list[tuple[T, str]] = []
        """Those entries with why (for a caller that must account for each), until taken."""
        self.keep_gone = False
        self._full = JOIN_DROPPED.labels(side, "full")
        self._expired = JOIN_DROPPED.labels(side, "expired")

    def add(self, key: str, item: T) -> None:
        self.changed.add(key)
        self.items[key] = (self.clock(), item)
        self.items.move_to_end(key)
        self.sweep()

    def sweep(self) -> None:
        """Drop from the oldest end what is over the bound or past the ttl."""
        now = self.clock()
        while self.items:
            oldest_key, (added, oldest) = next(iter(self.items.items()))
            if len(self.items) > self.max_size:
                self._full.inc()
                why = f"more than {self.max_size} waiting"
            elif now - added > self.ttl:
                self._expired.inc()
                why = f"waited longer than {self.ttl:g}s"
            else:
                break
            del self.items[oldest_key]
            self.changed.add(oldest_key)
            self.dropped += 1
            if self.keep_gone:
                self.gone.append((oldest, why))

    def pop(self, key: str) -> T | None:
        found = self.items.pop(key, None)
        if found is not None:
            self.changed.add(key)
        if found is None or self.clock() - found[0] > self.ttl:
            return None
        return found[1]


class LabelJoin:
    """Pairs each prediction with the label of the same prediction id.

    The clock is wall time: a restarted worker restores what waited, and how long it has
    waited must mean the same in the new process."""

    def __init__(self, max_predictions: int, ttl_seconds: float,
                 clock: Callable[[], float] = time.time,
                 max_labels: int | None = None, partitions: int = 1) -> None:
        self.partitions = partitions
        self.changed: set[str] = set()
        """Keys whose entry changed since `take_changed` was last called."""
        self.predictions: _Waiting[Predicted] = _Waiting("prediction", max_predictions,
                                                         ttl_seconds, clock, self.changed)
        self.labels: _Waiting[LabeledPair] = _Waiting("label", max_labels or max_predictions,
                                                  ttl_seconds, clock, self.changed)
        self.labels.keep_gone = True

    def prediction(self, prediction_id: str, made: Predicted) -> LabeledPair | None:
        """The label already waiting for this prediction, or None (the prediction waits)."""
        key = join_key(prediction_id, self.partitions)
        label = self.labels.pop(key)
        if label is None:
            self.predictions.add(key, made)
        return label

    def label(self, prediction_id: str, label: LabeledPair) -> Predicted | None:
        """The prediction this label belongs to, or None (the label waits)."""
        key = join_key(prediction_id, self.partitions)
        made = self.predictions.pop(key)
        if made is None:
            self.labels.add(key, label)
        return made

    def take_changed(self) -> set[str]:
        """The keys changed since the last call (what a checkpoint must write)."""
        changed = set(self.changed)
        self.changed.clear()
        return changed

    def forget(self, dropped: Callable[[str], bool]) -> None:
        """Drop the entries whose key `dropped` names, as if never seen (another worker owns
        them now: nothing is counted or written)."""
        for waiting in (self.predictions, self.labels):
            for key in [k for k in waiting.items if dropped(k)]:
                del waiting.items[key]
                self.changed.discard(key)

    def pending(self) -> int:
        return len(self.predictions.items) + len(self.labels.items)

    def expired_feedback(self) -> list[tuple[Feedback, str]]:
        """Feedback that left the join without meeting its prediction since the last call
        (what waited past the ttl is swept first)."""
        self.labels.sweep()
        gone, self.labels.gone = self.labels.gone, []
        return [(pair.feedback, why) for pair, why in gone if pair.feedback is not None]
