"""Defect 6 of issue 6: the holdout is the newest data by event time, not by ingestion order.

A backlog is ingested partition by partition, so ingestion order interleaves event-time
ranges; the newest fifth by ingestion order was samples 858..1995 of the first 2,000."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from contracts.events import RecordValidated, TrainingReason, TrainingRequested
from services.training import handlers
from services.training.handlers import Trainer
from shared.artifacts import ArtifactStore
from shared.datasets import DatasetStore
from tests.unit.factories import T0, TRAINING_KEY, agrawal, demo_project

RECORDS = 500


def interleaved_store(root: Path) -> DatasetStore:
    """Records observed one a second; ingested as two partitions would be: the even ones
    first, then the odd ones, in batches of 50 (sequence follows ingestion)."""
    rows = agrawal(RECORDS, seed=11)
    order = list(range(0, RECORDS, 2)) + list(range(1, RECORDS, 2))
    store = DatasetStore(root)
    for batch_start in range(0, RECORDS, 50):
        at = T0 + timedelta(hours=1, seconds=batch_start)
        batch = [RecordValidated(dataset="loans", record_id=f"obs-{i:04d}", features=rows[i][0],
                                 label=rows[i][1], event_time=T0 + timedelta(seconds=i),
                                 ingested_at=at, sequence=batch_start + n)
                 for n, i in enumerate(order[batch_start:batch_start + 50])]
        store.append("loans", batch, at)
    return store


def observed(records: Sequence[RecordValidated]) -> list[int]:
    return sorted(int(r.record_id.removeprefix("obs-")) for r in records)


def test_the_holdout_is_exactly_the_newest_records_by_event_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = interleaved_store(tmp_path / "datasets")
    trainer = Trainer(demo_project(), datasets,
                      ArtifactStore(tmp_path / "artifacts", signer=TRAINING_KEY),
                      tmp_path / "state", TRAINING_KEY)
    scored: list[list[int]] = []
    real_score = handlers.score

    def spy(model: Any, holdout: Sequence[RecordValidated], task: str) -> dict[str, float]:
        scored.append(observed(holdout))
        return real_score(model, holdout, task)

    monkeypatch.setattr(handlers, "score", spy)
    run = trainer.train(TrainingRequested(request_id="r", model="loans-tree",
                                          reason=TrainingReason.MANUAL, requested_by="test"),
                        None)
    assert scored == [list(range(400, 500))]
    # The lineage names that slice: the snapshot in event-time order, from holdout.start.
    snapshot = sorted(datasets.read(datasets.open_snapshot("loans", run.holdout.snapshot_id)),
                      key=lambda r: (r.event_time, r.sequence))
    holdout = snapshot[run.holdout.start:run.holdout.start + run.holdout.size]
    assert observed(holdout) == list(range(400, 500))


def test_the_last_n_of_a_window_are_the_newest_by_event_time(tmp_path: Path) -> None:
    datasets = interleaved_store(tmp_path / "datasets")
    newest = datasets.snapshot("loans", last=150)
    assert observed(list(datasets.read(newest))) == list(range(350, 500))
    # within a window: the newest 60 of the records ingested since the fifth batch
    since = T0 + timedelta(hours=1, seconds=200)
    window = datasets.snapshot("loans", since=since, last=60)
    # (ingested since then: the even 400..498 and every odd one)
    assert observed(list(datasets.read(window))) == list(range(440, 500))
