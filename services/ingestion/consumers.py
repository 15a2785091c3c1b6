"""Kafka edge of ingestion: decode data.labeled batches, publish, store, reject."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from datetime import datetime
from typing import cast

from contracts.base import utcnow
from contracts.events import Feedback, LabeledRecord, RecordValidated
from contracts.topics import Topic
from services.ingestion.handlers import Ingestor
from services.ingestion.metrics import RECORDS
from shared.bus import Bus
from shared.consumer import BatchHandler, Delivery, Rejection
from shared.errors import DependencyUnavailable

logger = logging.getLogger(__name__)


def labeled_handler(bus: Bus, ingestor: Ingestor) -> BatchHandler:
    """The batch handler for data.labeled.

    Accepted records are published (acks=all) before they are appended to the
    store, and the offset is committed after both: a crash in between replays
    the batch, and the records, not yet in the store, are published again with
    the same ce_id, which consumers de-duplicate. Sorting, publishing and storing happen
    under the dataset's writer lock (`Ingestor.writing`): replicas in one group take turns
    per dataset, each first reading what the others appended, so a record redelivered to
    another replica after a rebalance is still a duplicate and sequence numbers never clash.
    """

    async def handle(everything: list[Delivery]) -> list[Rejection]:
        now = utcnow()
        batch = [d for d in everything if not cast(LabeledRecord, d.event).is_feedback]
        await asyncio.gather(*(_forward_feedback(bus, d, now) for d in everything
                               if cast(LabeledRecord, d.event).is_feedback))
        records = [cast(LabeledRecord, d.event) for d in batch]
        with ingestor.writing(r.dataset or "" for r in records):  # one replica at a time
            outcome = ingestor.sort(records, now)
            by_id: dict[tuple[str | None, str | None], Delivery] = {}
            for record, delivery in zip(records, batch, strict=True):
                by_id.setdefault((record.dataset, record.record_id), delivery)
            await asyncio.gather(*(
                bus.publish(Topic.DATA_VALIDATED, row, key=row.record_id,
                            ce_id=f"{dataset}/{row.record_id}",
                            trace_id=by_id[(dataset, row.record_id)].envelope.trace_id)
                for dataset, rows in outcome.accepted.items() for row in rows), *(
                _forward_label(bus, row, by_id[(dataset, row.record_id)].envelope.trace_id)
                for dataset, rows in outcome.accepted.items() for row in rows
                if row.prediction_id is not None))
            try:
                ingestor.store_accepted(outcome, now)
            except OSError as exc:  # disk full or unwritable: retry the batch, never drop it
                raise DependencyUnavailable(dependency="dataset store",
                                            detail=str(exc)) from exc
        accepted = sum(len(rows) for rows in outcome.accepted.values())
        RECORDS.labels("feedback").inc(len(everything) - len(batch))
        RECORDS.labels("accepted").inc(accepted)
        RECORDS.labels("duplicate").inc(outcome.duplicates)
        RECORDS.labels("rejected").inc(len(outcome.rejected))
        return [Rejection(batch[index], str(exc), tuple(exc.errors))
                for index, exc in outcome.rejected.items()]

    return handle


def _forward_label(bus: Bus, row: RecordValidated, trace_id: str) -> Awaitable[None]:
    """A whole record that names its prediction also goes to the feedback topic, keyed by
    the prediction id: there it meets its prediction in the partition monitoring's worker
    for that model owns (data.validated is keyed by record id). `stored`: monitoring scores
    it and does not complete it again."""
    assert row.prediction_id is not None
    return bus.publish(Topic.FEEDBACK,
                       Feedback(prediction_id=row.prediction_id, label=row.label,
                                at=row.ingested_at, source=Topic.DATA_LABELED.value,
                                stored=True),
                       key=row.prediction_id, ce_id=f"validated/{row.dataset}/{row.record_id}",
                       trace_id=trace_id)


def _forward_feedback(bus: Bus, delivery: Delivery, now: datetime) -> Awaitable[None]:
    """A label-only record goes to the feedback topic, keyed by its prediction id (so it
    meets the prediction in the same partition); the prediction will supply its dataset and
    features, and monitoring sends the completed record back here. Its id is the record's
    place in data.labeled: a redelivered batch forwards it again under the same id."""
    record = cast(LabeledRecord, delivery.event)
    assert record.prediction_id is not None  # is_feedback
    where = delivery.record
    return bus.publish(Topic.FEEDBACK,
                       Feedback(prediction_id=record.prediction_id, label=record.label, at=now,
                                source=Topic.DATA_LABELED.value),
                       key=record.prediction_id,
                       ce_id=f"labeled/{where.partition}/{where.offset}",
                       trace_id=delivery.envelope.trace_id)
