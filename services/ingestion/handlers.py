"""Validation and de-duplication of labeled records; no Kafka or HTTP types here."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from contracts.events import LabeledRecord, RecordValidated
from shared.datasets import DatasetStore
from shared.errors import InvalidRecord, UnknownDataset
from shared.project import Project
from shared.records import check_features, check_value, describe

logger = logging.getLogger(__name__)


def validate(record: LabeledRecord, project: Project, sequence: int,
             ingested_at: datetime) -> RecordValidated:
    """The record normalised to its dataset's contract, or InvalidRecord naming each field."""
    spec = project.datasets.get(record.dataset)
    if spec is None:
        raise UnknownDataset(dataset=record.dataset, known=", ".join(sorted(project.datasets)),
                             errors=[("dataset", f"unknown dataset {record.dataset!r}")])
    problems: list[tuple[str, str]] = []
    features = check_features(record.features, spec, problems)
    label = check_value("label", record.label, spec.label, problems)
    if problems:
        raise InvalidRecord(dataset=record.dataset, detail=describe(problems), errors=problems)
    return RecordValidated(
        dataset=record.dataset, record_id=record.record_id, features=features, label=label,
        event_time=record.event_time or ingested_at, ingested_at=ingested_at, sequence=sequence,
        prediction_id=record.prediction_id)


@dataclass
class Outcome:
    """What became of a batch: records accepted per dataset, rejects by batch index."""

    accepted: dict[str, list[RecordValidated]] = field(default_factory=dict)
    rejected: dict[int, InvalidRecord | UnknownDataset] = field(default_factory=dict)
    duplicates: int = 0


class Ingestor:
    """Sorts batches into accepted, rejected and duplicate, and stores what was accepted."""

    def __init__(self, project: Project, store: DatasetStore) -> None:
        self.project = project
        self.store = store
        self._ids: dict[str, set[str]] = {}
        self._sizes: dict[str, int] = {}

    def _known(self, dataset: str) -> set[str]:
        if dataset not in self._ids:
            self._ids[dataset] = self.store.record_ids(dataset)
            self._sizes[dataset] = self.store.size(dataset)
        return self._ids[dataset]

    def sort(self, records: Sequence[LabeledRecord], ingested_at: datetime) -> Outcome:
        """Validate and de-duplicate against the store and within the batch.

        Nothing is remembered until `store_accepted`: a batch retried after a
        failed publish is sorted the same way again.
        """
        outcome = Outcome()
        in_batch: set[tuple[str, str]] = set()
        for index, record in enumerate(records):
            key = (record.dataset, record.record_id)
            declared = record.dataset in self.project.datasets
            if key in in_batch or (declared and record.record_id in self._known(record.dataset)):
                outcome.duplicates += 1
                continue
            batch = outcome.accepted.setdefault(record.dataset, [])
            sequence = self._sizes.get(record.dataset, 0) + len(batch)
            try:
                validated = validate(record, self.project, sequence, ingested_at)
            except (InvalidRecord, UnknownDataset) as exc:
                outcome.rejected[index] = exc
                continue
            batch.append(validated)
            in_batch.add(key)
        outcome.accepted = {name: rows for name, rows in outcome.accepted.items() if rows}
        return outcome

    def store_accepted(self, outcome: Outcome, ingested_at: datetime) -> None:
        """Append accepted records to the dataset store (durable on return)."""
        for dataset, rows in outcome.accepted.items():
            self.store.append(dataset, rows, ingested_at)
            self._known(dataset).update(r.record_id for r in rows)
            self._sizes[dataset] += len(rows)
