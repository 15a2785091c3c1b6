"""What monitoring keeps in its changelog, and how each part is encoded.

Keys:
- `join/<prediction id>`: a prediction waiting for its label, or a label (or feedback)
  waiting for its prediction, with when it started waiting;
- `model/<name>`: one model's watch — its River detector and error history, data-drift
  windows, live windows, firing alerts, the retrain in flight and the policy counters;
- `alerts/<name>`: the model's recent alerts, which `GET /v1/alerts` lists;
- `outbox/<partition>`: alerts and retrain requests decided but perhaps not yet published.

Each key is written to the changelog partition of its model (by name) or prediction (by id):
the worker that owns an input partition owns exactly that state.

Values are pickles (a River detector has no other faithful form); the changelog only loads
those that carry monitoring's own tag. The join is written as it changes (only the keys
that changed since the last checkpoint: most predictions meet their label within one and
cost nothing); a model is written at a checkpoint when something fed it.
"""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

from services.monitoring.join import LabeledPair, LabelJoin, Predicted
from services.monitoring.watch import ModelWatch

JOIN = b"join/"
MODEL = b"model/"
ALERTS = b"alerts/"
OUTBOX = b"outbox/"

WATCH_FIELDS = ("concept", "data", "firing", "data_firing", "expected_error",
                "retrain_in_flight", "last_retrain_at", "predicted", "labeled",
                "last_retrain_labeled", "decision_sequence")
"""What a model's watch keeps (its spec comes from the project file; its live windows are
kept apart because their collector must keep the same object)."""


def dump(value: object) -> bytes:
    """A pickle, compressed: a model's error history (5,000 errors and times) pickles to
    ~160 KB and compresses to ~17 KB in ~0.4 ms."""
    return zlib.compress(pickle.dumps(value, protocol=5), 1)


def load(data: bytes) -> Any:
    """Only ever called on bytes the changelog authenticated as monitoring's own."""
    return pickle.loads(zlib.decompress(data))  # noqa: S301 - authenticated by its HMAC tag


DETECTORS = ("concept", "data", "live")
"""Built from the project's monitor section: restored only if that section is unchanged."""


def watch_state(watch: ModelWatch) -> bytes:
    fields: dict[str, Any] = {name: getattr(watch, name) for name in WATCH_FIELDS}
    fields["live"] = (watch.live.reference, watch.live.windows)
    fields["monitor_spec"] = watch.spec.monitor.model_dump_json()
    return dump(fields)


def restore_watch(watch: ModelWatch, data: bytes) -> bool:
    """Take up a model's saved watch; False when the project's monitor section changed since
    (its detectors and windows then start afresh; alerts, retrains and counters are kept)."""
    fields = load(data)
    same: bool = fields.pop("monitor_spec", None) == watch.spec.monitor.model_dump_json()
    live = fields.pop("live")
    if same:
        watch.live.reference, watch.live.windows = live
    for name, value in fields.items():
        if name in WATCH_FIELDS and (same or name not in DETECTORS):
            setattr(watch, name, value)
    return same


def join_changes(join: LabelJoin, keys: Iterable[str],
                 durable: set[str]) -> dict[bytes, bytes | None]:
    """The changelog records of join entries that changed: the entry now, or a tombstone for
    one that left the join (only if the changelog holds it). `durable` is kept up to date."""
    changes: dict[bytes, bytes | None] = {}
    for key in keys:
        entry: tuple[str, float, Predicted | LabeledPair] | None = None
        if key in join.predictions.items:
            added, made = join.predictions.items[key]
            entry = ("p", added, made)
        elif key in join.labels.items:
            added, label = join.labels.items[key]
            entry = ("l", added, label)
        if entry is not None:
            changes[JOIN + key.encode()] = dump(entry)
            durable.add(key)
        elif key in durable:
            changes[JOIN + key.encode()] = None
            durable.discard(key)
    return changes


def restore_join(join: LabelJoin, state: Mapping[bytes, bytes]) -> set[str]:
    """Put the waiting entries back in the order they started waiting; returns their keys."""
    entries: list[tuple[float, str, str, Any]] = []
    for record, value in state.items():
        if record.startswith(JOIN):
            side, added, item = load(value)
            entries.append((added, side, record[len(JOIN):].decode(), item))
    entries.sort(key=lambda entry: entry[0])
    for added, side, key, item in entries:
        if side == "p":
            join.predictions.items[key] = (added, item)
        else:
            join.labels.items[key] = (added, item)
    return {key for _, _, key, _ in entries}
