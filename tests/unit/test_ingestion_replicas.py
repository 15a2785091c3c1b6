"""Two ingestion replicas on one dataset store (issue 7, point 5): whatever each is handed —
the same records redelivered after a rebalance included — every record is stored exactly
once, and sequence numbers stay unique and contiguous."""

from __future__ import annotations

import multiprocessing
from datetime import timedelta
from pathlib import Path

from contracts.events import LabeledRecord
from services.ingestion.handlers import Ingestor
from shared.datasets import DatasetStore
from tests.unit.factories import T0, agrawal, demo_project

ROWS = agrawal(400, seed=5)


def records(indices: range) -> list[LabeledRecord]:
    return [LabeledRecord(dataset="loans", record_id=f"r{i}", features=ROWS[i][0],
                          label=ROWS[i][1]) for i in indices]


def ingest(ingestor: Ingestor, batch: list[LabeledRecord], minute: int) -> None:
    """What the data.labeled handler does with a batch, under the dataset's writer lock."""
    at = T0 + timedelta(minutes=minute)
    with ingestor.writing({r.dataset or "" for r in batch}):
        ingestor.store_accepted(ingestor.sort(batch, at), at)


def stored(root: Path) -> list[tuple[str, int]]:
    return [(r.record_id, r.sequence) for r in DatasetStore(root).records("loans")]


def test_two_replicas_store_each_record_once_with_unique_sequences(tmp_path: Path) -> None:
    root = tmp_path / "datasets"
    first = Ingestor(demo_project(), DatasetStore(root))
    second = Ingestor(demo_project(), DatasetStore(root))
    ingest(first, records(range(0, 100)), 0)
    ingest(second, records(range(50, 150)), 1)  # 50..99 again: redelivered after a rebalance
    ingest(first, records(range(100, 200)), 2)  # 100..149 again, and the first never saw them
    ingest(second, records(range(0, 10)), 3)

    found = stored(root)
    assert sorted(i for i, _ in found) == sorted(f"r{i}" for i in range(200))
    assert [s for _, s in found] == list(range(200))


def _replica(root: str, start: int, rounds: int) -> None:
    ingestor = Ingestor(demo_project(), DatasetStore(Path(root)))
    for round_ in range(rounds):
        low = (start + 37 * round_) % 300
        ingest(ingestor, records(range(low, min(low + 60, 400))), round_)


def test_two_replica_processes_at_once(tmp_path: Path) -> None:
    root = tmp_path / "datasets"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_replica, args=(str(root), start, 12))
               for start in (0, 20)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    found = stored(root)
    ids = [i for i, _ in found]
    assert len(ids) == len(set(ids))  # each record once
    assert [s for _, s in found] == list(range(len(found)))  # one sequence, no clash
