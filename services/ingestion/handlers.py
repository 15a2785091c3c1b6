"""Validation and de-duplication of labeled records; no Kafka or HTTP types here."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from contracts.events import LabeledRecord, RecordValidated
from shared.datasets import DatasetStore
from shared.errors import ConflictingRecord, InvalidInput, InvalidRecord, UnknownDataset
from shared.project import Project
from shared.records import check_features, check_value, describe, shown

logger = logging.getLogger(__name__)


def validate(record: LabeledRecord, project: Project, sequence: int,
             ingested_at: datetime) -> RecordValidated:
    """The record normalised to its dataset's contract, or InvalidRecord naming each field."""
    if record.dataset is None or record.record_id is None or record.features is None:
        raise InvalidRecord(dataset=str(record.dataset), detail="feedback alone is not a record",
                            errors=[("features", "a record needs dataset, record_id and "
                                     "features")])
    spec = project.datasets.get(record.dataset)
    if spec is None:
        raise UnknownDataset(dataset=record.dataset[:100],
                             known=", ".join(sorted(project.datasets)),
                             errors=[("dataset", f"unknown dataset {shown(record.dataset)}")])
    problems: list[tuple[str, str]] = []
    features = check_features(record.features, spec, problems)
    label = check_value("label", record.label, spec.label, problems)
    if problems:
        raise InvalidRecord(dataset=record.dataset, detail=describe(problems), errors=problems)
    return RecordValidated(
        dataset=record.dataset, record_id=record.record_id, features=features, label=label,
        event_time=record.event_time or ingested_at, ingested_at=ingested_at, sequence=sequence,
        prediction_id=record.prediction_id)


def content_digest(row: RecordValidated) -> bytes:
    """What a record says, hashed: normalised features and label, prediction id, and the
    event time when the producer gave one (else it defaulted to `ingested_at`). Ingestion's
    own fields are left out, so a redelivered record matches its stored copy."""
    given_time = None if row.event_time == row.ingested_at else row.event_time.timestamp()
    canonical = json.dumps([row.features, row.label, row.prediction_id, given_time],
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest()[:16]


@dataclass
class Outcome:
    """What became of a batch: records accepted per dataset, rejects by batch index."""

    accepted: dict[str, list[RecordValidated]] = field(default_factory=dict)
    rejected: dict[int, InvalidInput] = field(default_factory=dict)
    duplicates: int = 0


class Ingestor:
    """Sorts batches into accepted, rejected and duplicate, and stores what was accepted."""

    def __init__(self, project: Project, store: DatasetStore) -> None:
        self.project = project
        self.store = store
        self._ids: dict[str, dict[str, bytes]] = {}
        """Per dataset: record id → content digest of the stored record."""
        self._sizes: dict[str, int] = {}
        self._read: dict[str, int] = {}
        """Per dataset: segments of the log already in `_ids` (ours and other replicas')."""
        self._mine: set[str] = set()
        """Digests of the segments this process appended (known without reading them back)."""

    def _known(self, dataset: str) -> dict[str, bytes]:
        if dataset not in self._ids:
            self._ids[dataset], self._read[dataset] = {}, 0
            self._refresh(dataset)
        return self._ids[dataset]

    def _refresh(self, dataset: str) -> None:
        """Take in what other replicas appended since we last looked: their record ids (for
        de-duplication) and the log's size (our next sequence number)."""
        segments = self.store.segments(dataset)
        known = self._ids[dataset]
        for segment in segments[self._read[dataset]:]:
            if segment.digest in self._mine:
                continue
            known.update((r.record_id, content_digest(r)) for r in
                         self.store.read_segment(dataset, segment.digest)[:segment.count])
        self._read[dataset] = len(segments)
        self._sizes[dataset] = sum(segment.count for segment in segments)

    @contextmanager
    def writing(self, datasets: Iterable[str]) -> Iterator[None]:
        """Hold the writer lock of each declared dataset (in name order: no deadlock between
        replicas) and bring what is known of it up to date: sort, publish and store a batch
        inside, and two replicas never clash on a sequence number or store a record twice."""
        with ExitStack() as locks:
            for dataset in sorted(set(datasets) & set(self.project.datasets)):
                locks.enter_context(self.store.writer_lock(dataset))
                if dataset in self._ids:
                    self._refresh(dataset)
            yield

    def sort(self, records: Sequence[LabeledRecord], ingested_at: datetime) -> Outcome:
        """Validate and de-duplicate against the store and within the batch.

        A record is a duplicate only when its dataset, record id AND content match one
        already accepted: the same id with other content is rejected (`ConflictingRecord`),
        so no sender can erase another's record by reusing its id. Nothing is remembered
        until `store_accepted`: a batch retried after a failed publish is sorted the same.
        """
        outcome = Outcome()
        in_batch: dict[tuple[str, str], bytes] = {}
        for index, record in enumerate(records):
            dataset = record.dataset or ""  # feedback alone has none, and `validate` refuses it
            known = self._known(dataset) if dataset in self.project.datasets else {}
            batch = outcome.accepted.setdefault(dataset, [])
            sequence = self._sizes.get(dataset, 0) + len(batch)
            try:
                validated = validate(record, self.project, sequence, ingested_at)
            except (InvalidRecord, UnknownDataset) as exc:
                outcome.rejected[index] = exc
                continue
            digest = content_digest(validated)
            key = (validated.dataset, validated.record_id)
            earlier = in_batch.get(key, known.get(validated.record_id))
            if earlier == digest:
                outcome.duplicates += 1
            elif earlier is not None:
                outcome.rejected[index] = ConflictingRecord(
                    dataset=dataset, record_id=shown(validated.record_id),
                    errors=[("record_id", "already ingested with different content")])
            else:
                batch.append(validated)
                in_batch[key] = digest
        outcome.accepted = {name: rows for name, rows in outcome.accepted.items() if rows}
        return outcome

    def store_accepted(self, outcome: Outcome, ingested_at: datetime) -> None:
        """Append accepted records to the dataset store (durable on return)."""
        for dataset, rows in outcome.accepted.items():
            segment = self.store.append(dataset, rows, ingested_at)
            self._mine.add(segment.digest)
            self._known(dataset).update((r.record_id, content_digest(r)) for r in rows)
            self._sizes[dataset] += len(rows)
