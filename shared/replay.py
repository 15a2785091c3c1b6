"""Learning what the dataset log holds after a model's training data.

Two services need the model "as it serves" when a model learns in serving
(`[models.X.serving] learn`): serving brings a swapped-in version up to date before it
answers, and training scores the champion that way before gating a challenger against it.
Both learn the same records in the same (log) order, so both reach the same model.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from contracts.events import RecordValidated
from shared.datasets import DatasetStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Replayed:
    learned: int
    """Records learned."""
    through: int
    """The first log position not learned (the end of what was replayed)."""
    dropped: int
    """Records after `start` left out by the `newest` bound."""


def learn_record(estimator: Any, record: RecordValidated, model: str) -> bool:
    """`learn_one`, or False for a record the estimator cannot take (skipped, as the online
    learner skips it, rather than stopping everything behind it)."""
    try:
        estimator.learn_one(record.features, record.label)
    except Exception:
        logger.exception("could not learn record %s into %s; skipped", record.record_id, model)
        return False
    return True


def learn_logged(estimator: Any, model: str, datasets: DatasetStore, dataset: str,
                 start: int | None, newest: int, end: int | None = None,
                 skip: Collection[str] = ()) -> Replayed:
    """Learn into `estimator` the records at log positions `start`.. `end` (None: the log's
    end now), at most the `newest` of them, but those whose record id is in `skip`. A
    `start` of None (where the model's data ends is unknown) learns nothing."""
    segments = datasets.segments(dataset)
    logged = sum(segment.count for segment in segments)
    stop = logged if end is None else min(end, logged)
    begin = stop if start is None else max(start, stop - newest)
    learned = 0
    for position, record in datasets.records_from(dataset, begin, segments):
        if position >= stop:
            break
        if record.record_id not in skip and learn_record(estimator, record, model):
            learned += 1
    return Replayed(learned=learned, through=stop,
                    dropped=0 if start is None else max(0, begin - start))
